/* PostgreSQL's binary send formats (the *send functions of src/backend/utils/adt) read into
 * enc_val. Rare values whose text form the encoder keeps as text (dates
 * outside years 1..9999, infinities) are spelled here exactly as PostgreSQL prints them, so they
 * encode as the text path would. */
#include "pg_bin.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    OID_BOOL = 16,
    OID_BYTEA = 17,
    OID_NAME = 19,
    OID_INT8 = 20,
    OID_INT2 = 21,
    OID_INT4 = 23,
    OID_TEXT = 25,
    OID_OID = 26,
    OID_JSON = 114,
    OID_FLOAT4 = 700,
    OID_FLOAT8 = 701,
    OID_BPCHAR = 1042,
    OID_VARCHAR = 1043,
    OID_DATE = 1082,
    OID_TIMESTAMP = 1114,
    OID_TIMESTAMPTZ = 1184,
    OID_NUMERIC = 1700,
    OID_UUID = 2950,
    OID_JSONB = 3802,
};

#define US_PER_DAY 86400000000LL
#define PG_EPOCH_DAYS 10957 /* 2000-01-01, PostgreSQL's epoch, in Unix days */
#define DAY_MIN (-719162)   /* 0001-01-01 */
#define DAY_END 2932897     /* 10000-01-01 */

int pg_bin_class(unsigned oid)
{
    switch (oid) {
    case OID_INT2:
    case OID_INT4:
    case OID_INT8:
    case OID_OID:
        return ENC_INT;
    case OID_NUMERIC:
        return ENC_NUMERIC;
    case OID_FLOAT4:
    case OID_FLOAT8:
        return ENC_FLOAT;
    case OID_BOOL:
        return ENC_BOOL;
    case OID_TEXT:
    case OID_VARCHAR:
    case OID_BPCHAR:
    case OID_NAME:
        return ENC_TEXT;
    case OID_BYTEA:
        return ENC_BYTEA;
    case OID_DATE:
        return ENC_DATE;
    case OID_TIMESTAMP:
        return ENC_TIMESTAMP;
    case OID_TIMESTAMPTZ:
        return ENC_TIMESTAMPTZ;
    case OID_UUID:
        return ENC_UUID;
    case OID_JSON:
    case OID_JSONB:
        return ENC_JSON;
    default:
        return 0;
    }
}

static inline uint16_t be16(const char *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return __builtin_bswap16(v);
}

static inline uint32_t be32(const char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return __builtin_bswap32(v);
}

static inline uint64_t be64(const char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return __builtin_bswap64(v);
}

static int text_into(sl_buf *scratch, enc_val *v)
{
    *v = (enc_val){.kind = ENC_V_TEXT, .p = (const char *)scratch->p, .len = scratch->len};
    return 0;
}

/* The ISO text PostgreSQL prints for a date or timestamp (DateStyle ISO,
 * TimeZone UTC): a year of 0 or less is "BC", seconds lose trailing zeros. */
static int time_text(sl_buf *out, int64_t days, int64_t us, int with_time, int tz)
{
    int64_t y;
    unsigned m, d;
    enc_civil(days, &y, &m, &d);
    int bc = y <= 0;
    if (sl_buf_printf(out, "%04lld-%02u-%02u", (long long)(bc ? 1 - y : y), m, d))
        return -1;
    if (with_time) {
        long long s = us / 1000000, f = us % 1000000;
        if (sl_buf_printf(out, " %02lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60))
            return -1;
        if (f) {
            char frac[8];
            int n = snprintf(frac, sizeof frac, "%06lld", f);
            while (n > 0 && frac[n - 1] == '0')
                n--;
            if (sl_buf_printf(out, ".%.*s", n, frac))
                return -1;
        }
        if (tz && sl_buf_append(out, "+00", 3))
            return -1;
    }
    return bc ? sl_buf_append(out, " BC", 3) : 0;
}

static int dec_time(unsigned oid, const char *p, sl_buf *scratch, enc_val *v)
{
    int64_t days, us = 0;
    if (oid == OID_DATE) {
        int32_t d = (int32_t)be32(p);
        if (d == INT32_MAX || d == INT32_MIN)
            return sl_buf_printf(scratch, d > 0 ? "infinity" : "-infinity") ||
                   text_into(scratch, v);
        days = (int64_t)d + PG_EPOCH_DAYS;
    } else {
        int64_t t = (int64_t)be64(p);
        if (t >= (DAY_MIN - PG_EPOCH_DAYS) * US_PER_DAY &&
            t < (DAY_END - PG_EPOCH_DAYS) * US_PER_DAY) {
            *v = (enc_val){.kind = ENC_V_TIME, .i = t + PG_EPOCH_DAYS * US_PER_DAY};
            return 0; /* the common case, without a division */
        }
        if (t == INT64_MAX || t == INT64_MIN)
            return sl_buf_printf(scratch, t > 0 ? "infinity" : "-infinity") ||
                   text_into(scratch, v);
        days = t / US_PER_DAY - (t % US_PER_DAY < 0) + PG_EPOCH_DAYS;
        us = t - (days - PG_EPOCH_DAYS) * US_PER_DAY;
    }
    if (days >= DAY_MIN && days < DAY_END) {
        *v = (enc_val){.kind = ENC_V_TIME, .i = days * US_PER_DAY + us};
        return 0;
    }
    return time_text(scratch, days, us, oid != OID_DATE, oid == OID_TIMESTAMPTZ) ||
           text_into(scratch, v);
}

/* numeric: ndigits, weight, sign, dscale (int16 each), then ndigits base-10000
 * digits, the first weighing 10000^weight. */
static int dec_numeric(const char *p, size_t len, sl_buf *scratch, enc_val *v, sl_err *err)
{
    if (len < 8)
        return sl_err_setc(err, SL_DATABASE, "malformed numeric from the server");
    /* ndigits and dscale are unsigned on the wire (numeric_recv): a value
     * of PostgreSQL's full range has over 32767 groups */
    long nd = be16(p), weight = (int16_t)be16(p + 2), dscale = be16(p + 6);
    unsigned sign = be16(p + 4);
    if (len != 8 + 2 * (size_t)nd)
        return sl_err_setc(err, SL_DATABASE, "malformed numeric from the server");
    if (sign == 0xC000 || sign == 0xD000 || sign == 0xF000) {
        *v = (enc_val){.kind = ENC_V_FLOAT,
                       .d = sign == 0xC000   ? NAN
                            : sign == 0xD000 ? INFINITY
                                             : -INFINITY};
        return 0;
    }
    if (sign != 0 && sign != 0x4000)
        return sl_err_setc(err, SL_DATABASE, "malformed numeric from the server");
    /* the common case, in integer arithmetic: up to 16 significant digits */
    if (nd <= 4 && weight >= -8 && weight <= 8) {
        uint64_t m = 0;
        for (long k = 0; k < nd; k++) {
            unsigned x = be16(p + 8 + 2 * k);
            if (x > 9999)
                return sl_err_setc(err, SL_DATABASE, "malformed numeric from the server");
            m = m * 10000 + x;
        }
        long exp = 4 * (weight - nd + 1);
        for (; exp < -dscale; exp++) /* the last group's padding (see below) */
            m /= 10;
        sl_buf_reset(scratch);
        if (sl_buf_reserve(scratch, 48))
            return sl_err_set(err, "out of memory");
        size_t n = enc_decimal_u64((char *)scratch->p, sign == 0x4000, m, exp);
        *v = (enc_val){.kind = ENC_V_DEC, .p = (const char *)scratch->p, .len = n};
        return 0;
    }
    /* any other value, of any length: the stored base-10000 digits, four
     * decimal digits a group, the last group weighing 10^(4 * (weight - nd
     * + 1)). Zeros PostgreSQL does not store (those a dscale implies) add
     * nothing to the canonical form. numeric_out prints exactly dscale
     * fraction digits, so digits past dscale (numeric_recv never stores
     * such) are cut as it would. scratch takes 8 bytes a group, reused
     * from row to row. */
    size_t nd4 = 4 * (size_t)nd;
    sl_buf_reset(scratch);
    if (sl_buf_reserve(scratch, 2 * nd4 + 32))
        return sl_err_set(err, "out of memory");
    char *dig = (char *)scratch->p;
    for (long k = 0; k < nd; k++) {
        unsigned x = be16(p + 8 + 2 * k);
        if (x > 9999)
            return sl_err_setc(err, SL_DATABASE, "malformed numeric from the server");
        dig[4 * k] = (char)('0' + x / 1000);
        dig[4 * k + 1] = (char)('0' + x / 100 % 10);
        dig[4 * k + 2] = (char)('0' + x / 10 % 10);
        dig[4 * k + 3] = (char)('0' + x % 10);
    }
    size_t used = nd4;
    long exp = 4 * (weight - nd + 1);
    if (exp < -dscale) {
        size_t cut = (size_t)(-dscale - exp);
        used = cut < used ? used - cut : 0;
        exp = -dscale;
    }
    char *canon = dig + nd4;
    size_t n = enc_decimal(canon, sign == 0x4000, dig, used, exp);
    *v = (enc_val){.kind = ENC_V_DEC, .p = canon, .len = n};
    return 0;
}

/* float4 as PostgreSQL prints it: the shortest digits that read back as the
 * same float (the text path then reads those digits as a double). */
static int dec_float4(const char *p, sl_buf *scratch, enc_val *v)
{
    uint32_t u = be32(p);
    float f;
    memcpy(&f, &u, 4);
    if (isnan(f) || isinf(f)) {
        *v = (enc_val){.kind = ENC_V_FLOAT, .d = f};
        return 0;
    }
    char t[32];
    for (int prec = 0; prec < 9; prec++) {
        snprintf(t, sizeof t, "%.*e", prec, (double)f);
        if (strtof(t, NULL) == f)
            break;
    }
    return sl_buf_append(scratch, t, strlen(t)) || text_into(scratch, v);
}

int pg_bin_decode_any(unsigned oid, const char *p, size_t len, sl_buf *scratch, enc_val *v,
                      sl_err *err)
{
    sl_buf_reset(scratch);
    switch (oid) {
    case OID_INT2:
    case OID_INT4:
    case OID_INT8:
    case OID_OID:
    case OID_BOOL: {
        size_t want = oid == OID_INT8 ? 8 : oid == OID_INT2 ? 2 : oid == OID_BOOL ? 1 : 4;
        if (len != want)
            break;
        int64_t i = oid == OID_INT8   ? (int64_t)be64(p)
                    : oid == OID_INT4 ? (int32_t)be32(p)
                    : oid == OID_INT2 ? (int16_t)be16(p)
                    : oid == OID_OID  ? (int64_t)be32(p) /* unsigned */
                                      : (uint8_t)p[0];    /* bool 0/1 */
        *v = (enc_val){.kind = ENC_V_INT, .i = i};
        return 0;
    }
    case OID_FLOAT8: {
        if (len != 8)
            break;
        uint64_t u = be64(p);
        double d;
        memcpy(&d, &u, 8);
        *v = (enc_val){.kind = ENC_V_FLOAT, .d = d};
        return 0;
    }
    case OID_FLOAT4:
        if (len != 4)
            break;
        return dec_float4(p, scratch, v) ? sl_err_set(err, "out of memory") : 0;
    case OID_NUMERIC:
        return dec_numeric(p, len, scratch, v, err);
    case OID_DATE:
    case OID_TIMESTAMP:
    case OID_TIMESTAMPTZ:
        if (len != (oid == OID_DATE ? 4u : 8u))
            break;
        return dec_time(oid, p, scratch, v) ? sl_err_set(err, "out of memory") : 0;
    case OID_UUID:
        if (len != 16)
            break;
        *v = (enc_val){.kind = ENC_V_BLOB, .p = p, .len = 16};
        return 0;
    case OID_BYTEA:
        *v = (enc_val){.kind = ENC_V_BLOB, .p = p, .len = len};
        return 0;
    case OID_JSONB: /* a version byte (1), then the text */
        if (len < 1 || p[0] != 1)
            break;
        *v = (enc_val){.kind = ENC_V_TEXT, .p = p + 1, .len = len - 1};
        return 0;
    case OID_BPCHAR: /* without the blanks that pad it: pg.c's text_value */
        while (len && p[len - 1] == ' ')
            len--;
        *v = (enc_val){.kind = ENC_V_TEXT, .p = p, .len = len};
        return 0;
    case OID_TEXT:
    case OID_VARCHAR:
    case OID_NAME:
    case OID_JSON:
        *v = (enc_val){.kind = ENC_V_TEXT, .p = p, .len = len};
        return 0;
    default:
        return sl_err_set(err, "no binary decoder for type %u", oid);
    }
    return sl_err_setc(err, SL_DATABASE, "malformed value of type %u from the server", oid);
}
