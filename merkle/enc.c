#include "enc.h"
#include "tol.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* Value tags of encoding v1. Never renumber: a stored hash depends on them. */
enum {
    T_NULL = 0x00,
    T_NUMBER = 0x01,  /* canonical decimal "<digits>E<exp>", shared by int/numeric/float */
    T_NUMSPEC = 0x02, /* NaN, Infinity, -Infinity */
    T_BOOL = 0x03,
    T_TEXT = 0x04,
    T_BYTES = 0x05,
    T_DATE = 0x06,
    T_TIME = 0x07, /* timestamp and timestamptz: microseconds since epoch, UTC */
    T_UUID = 0x09,
    T_JSON = 0x0a,
    T_FALLBACK = 0x0b, /* a value that did not parse as its class: its text */
    T_CELL = 0x0c,     /* a number's grid cell under an epsilon (hashing only: merkle/tol.h) */
};

/* Key tags: one per key class, so a composite key's columns stay aligned. */
enum { K_INT = 0x10, K_TEXT = 0x20, K_UUID = 0x30, K_BYTES = 0x40 };

static const char *const class_names[] = {"?",    "int",   "numeric", "float",     "bool",
                                          "text", "bytea", "date",    "timestamp", "timestamptz",
                                          "uuid", "json",  "other"};

const char *enc_class_name(int cls)
{
    return cls > 0 && cls < ENC_CLASS_END ? class_names[cls] : "?";
}

static int is_number_class(int c)
{
    return c == ENC_INT || c == ENC_NUMERIC || c == ENC_FLOAT;
}
static int is_loose_text(int c)
{
    return c == ENC_TEXT || c == ENC_OTHER;
}

int enc_class_common(int a, int b, int flags)
{
    if (a == b)
        return a;
    if (flags & ENC_STRICT)
        return 0;
    if (is_number_class(a) && is_number_class(b))
        return ENC_NUMERIC;
    if ((a == ENC_TIMESTAMP && b == ENC_TIMESTAMPTZ) ||
        (b == ENC_TIMESTAMP && a == ENC_TIMESTAMPTZ))
        return ENC_TIMESTAMPTZ;
    /* A loosely typed side (SQLite TEXT, a PostgreSQL enum) is read as the
     * other side's class. */
    if (is_loose_text(a))
        return is_loose_text(b) ? ENC_TEXT : b;
    if (is_loose_text(b))
        return a;
    if ((a == ENC_INT && b == ENC_BOOL) || (a == ENC_BOOL && b == ENC_INT))
        return ENC_BOOL;
    return 0;
}

/* ---- framing -------------------------------------------------------- */

static inline __attribute__((always_inline)) int put_frame(sl_buf *out, int tag, int cls, int flags,
                                                           const void *p, size_t n)
{
    if (sl_buf_reserve(out, n + 6) != 0)
        return -1;
    uint8_t *o = out->p + out->len;
    *o++ = (uint8_t)tag;
    if (flags & ENC_STRICT)
        *o++ = (uint8_t)cls;
    *o++ = (uint8_t)(n >> 24);
    *o++ = (uint8_t)(n >> 16);
    *o++ = (uint8_t)(n >> 8);
    *o++ = (uint8_t)n;
    const uint8_t *src = p;
    if (n >= 8 && n <= 16) { /* two overlapping words: no call for the common sizes */
        memcpy(o, src, 8);
        memcpy(o + n - 8, src + n - 8, 8);
    } else if (n >= 4 && n < 8) {
        memcpy(o, src, 4);
        memcpy(o + n - 4, src + n - 4, 4);
    } else if (n < 4) {
        for (size_t k = 0; k < n; k++)
            o[k] = src[k];
    } else {
        memcpy(o, src, n);
    }
    out->len = (size_t)(o - out->p) + n;
    return 0;
}

static void put_be64(uint8_t *b, uint64_t v)
{
    v = __builtin_bswap64(v);
    memcpy(b, &v, 8);
}

static uint64_t get_be64(const uint8_t *b)
{
    uint64_t v;
    memcpy(&v, b, 8);
    return __builtin_bswap64(v);
}

/* Writes u in decimal ending just before end, two digits a step; returns
 * where the digits begin. */
static char *put_digits(char *end, uint64_t u)
{
    static const char pairs[] = "00010203040506070809101112131415161718192021222324"
                                "25262728293031323334353637383940414243444546474849"
                                "50515253545556575859606162636465666768697071727374"
                                "75767778798081828384858687888990919293949596979899";
    while (u > UINT32_MAX) {
        end -= 2;
        memcpy(end, pairs + 2 * (u % 100), 2);
        u /= 100;
    }
    uint32_t w = (uint32_t)u; /* 32-bit division is the cheaper one */
    while (w >= 100) {
        end -= 2;
        memcpy(end, pairs + 2 * (w % 100), 2);
        w /= 100;
    }
    u = w;
    if (u >= 10) {
        end -= 2;
        memcpy(end, pairs + 2 * u, 2);
    } else {
        *--end = (char)('0' + u);
    }
    return end;
}

/* ---- numbers --------------------------------------------------------- */

/* How many decimal digits u has. */
static size_t digits_len(uint64_t u)
{
    size_t n = 1;
    for (; u >= 100; u /= 100)
        n += 2;
    return n + (u >= 10);
}

/* Writes v in decimal at dst (no NUL); returns the length (at most 20). */
static size_t put_long(char *dst, long long v)
{
    size_t o = v < 0;
    uint64_t u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    size_t n = digits_len(u);
    dst[0] = '-';
    put_digits(dst + o + n, u);
    return o + n;
}

size_t enc_decimal_u64(char *dst, int neg, uint64_t m, long exp)
{
    if (m == 0) {
        dst[0] = '0';
        return 1;
    }
    while (m <= UINT32_MAX ? (uint32_t)m % 10 == 0 : m % 10 == 0) {
        m /= 10;
        exp++;
    }
    /* digits end mid-buffer so a fixed-size copy (no call) may run past them */
    char tmp[48], *end = tmp + 24, *d = put_digits(end, m);
    size_t o = neg != 0;
    dst[0] = '-';
    memcpy(dst + o, d, 24);
    o += (size_t)(end - d);
    dst[o++] = 'E';
    if (exp >= 0 && exp < 10) {
        dst[o++] = (char)('0' + exp);
        return o;
    }
    return o + put_long(dst + o, exp);
}

/* Largest exponent a decimal literal may carry: far beyond PostgreSQL's
 * numeric range (10^131072 .. 10^-16383), small enough that exponent
 * arithmetic cannot overflow. */
#define EXP_MAX 1000000000LL

/* Appends to out the canonical form of the decimal literal s[0..n)
 * ([+-]digits[.digits][e[+-]digits], surrounding spaces allowed): "[-]D E X"
 * meaning D * 10^X with D free of leading and trailing zeros; zero is "0".
 * Any number of digits: nothing is copied but the significant ones, straight
 * into out (no scratch, no allocation besides out's own growth). Returns 0;
 * 1 for NaN/Infinity (the spelling in *spec, nothing appended); -1 when s is
 * not a number and -2 when memory runs out (out unchanged either way). */
static int canon_decimal(sl_buf *out, const char *s, size_t n, const char **spec)
{
    size_t i = 0;
    while (i < n && isspace((unsigned char)s[i]))
        i++;
    while (n > i && isspace((unsigned char)s[n - 1]))
        n--;
    int neg = 0;
    if (i < n && (s[i] == '+' || s[i] == '-'))
        neg = s[i++] == '-';
    size_t rest = n - i;
    if ((rest == 3 && strncasecmp(s + i, "nan", 3) == 0)) {
        *spec = "NaN";
        return 1;
    }
    if ((rest == 3 && strncasecmp(s + i, "inf", 3) == 0) ||
        (rest == 8 && strncasecmp(s + i, "infinity", 8) == 0)) {
        *spec = neg ? "-Infinity" : "Infinity";
        return 1;
    }
    /* the integer digits are s[a..b), the fraction digits s[c..d) */
    size_t a = i;
    while (i < n && isdigit((unsigned char)s[i]))
        i++;
    size_t b = i, c = i, d = i;
    if (i < n && s[i] == '.') {
        c = ++i;
        while (i < n && isdigit((unsigned char)s[i]))
            i++;
        d = i;
    }
    if (a == b && c == d)
        return -1;
    long long e = 0;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        int eneg = 0;
        if (++i < n && (s[i] == '+' || s[i] == '-'))
            eneg = s[i++] == '-';
        size_t st = i;
        for (; i < n && isdigit((unsigned char)s[i]); i++)
            if ((e = e * 10 + (s[i] - '0')) > EXP_MAX)
                return -1;
        if (i == st)
            return -1;
        if (eneg)
            e = -e;
    }
    if (i != n)
        return -1;
    /* significant digits: leading zeros of the integer part, then (when it
     * is all zeros) of the fraction, go; trailing zeros likewise from the
     * other end. What is left is s[a..b) then s[c..d), either maybe empty. */
    while (d > c && s[d - 1] == '0')
        d--;
    long long exp = e - (long long)(d - c); /* the last digit weighs 10^exp */
    while (a < b && s[a] == '0')
        a++;
    if (a == b)
        while (c < d && s[c] == '0')
            c++;
    if (c == d) {
        while (b > a && s[b - 1] == '0') {
            b--;
            exp++;
        }
    }
    size_t nd = (b - a) + (d - c);
    if (nd == 0)
        return sl_buf_putc(out, '0') ? -2 : 0;
    if (sl_buf_reserve(out, nd + 24))
        return -2;
    char *o = (char *)out->p + out->len, *o0 = o;
    if (neg)
        *o++ = '-';
    memcpy(o, s + a, b - a);
    o += b - a;
    memcpy(o, s + c, d - c);
    o += d - c;
    *o++ = 'E';
    o += put_long(o, exp);
    out->len += (size_t)(o - o0);
    return 0;
}

/* Written by hand: this runs for every numeric value of every row. */
size_t enc_decimal(char *dst, int neg, const char *digits, size_t nd, long exp)
{
    while (nd > 0 && digits[0] == '0') {
        digits++;
        nd--;
    }
    while (nd > 0 && digits[nd - 1] == '0') {
        nd--;
        exp++;
    }
    if (nd == 0) {
        dst[0] = '0';
        return 1;
    }
    size_t o = 0;
    if (neg)
        dst[o++] = '-';
    memcpy(dst + o, digits, nd);
    o += nd;
    dst[o++] = 'E';
    return o + put_long(dst + o, exp);
}

/* Shortest text that reads back as exactly d. */
static void float_shortest(double d, char *dst, size_t cap)
{
    for (int prec = 0; prec < 17; prec++) {
        snprintf(dst, cap, "%.*e", prec, d);
        if (strtod(dst, NULL) == d)
            return;
    }
    snprintf(dst, cap, "%.17e", d);
}

/* The canonical decimal goes straight into out behind a frame header whose
 * length is filled in afterwards: a value of any length, no copy. */
static int put_number_text(sl_buf *out, int cls, int flags, const char *s, size_t n)
{
    size_t start = out->len, hdr = (flags & ENC_STRICT) ? 6 : 5;
    const char *spec = NULL;
    if (sl_buf_reserve(out, hdr))
        return -1;
    out->len += hdr;
    int r = canon_decimal(out, s, n, &spec);
    if (r != 0) {
        out->len = start;
        if (r == 1)
            return put_frame(out, T_NUMSPEC, cls, flags, spec, strlen(spec));
        if (r == -1)
            return put_frame(out, T_FALLBACK, cls, flags, s, n);
        return -1;
    }
    size_t len = out->len - start - hdr;
    uint8_t *o = out->p + start;
    *o++ = T_NUMBER;
    if (flags & ENC_STRICT)
        *o++ = (uint8_t)cls;
    o[0] = (uint8_t)(len >> 24);
    o[1] = (uint8_t)(len >> 16);
    o[2] = (uint8_t)(len >> 8);
    o[3] = (uint8_t)len;
    return 0;
}

/* An integer's canonical form, without a text round trip. Inline: value()
 * takes this path for the commonest value there is. */
static inline __attribute__((always_inline)) int put_int(sl_buf *out, int cls, int flags, int64_t i)
{
    char txt[48];
    uint64_t u = i < 0 ? 0ULL - (uint64_t)i : (uint64_t)i;
    return put_frame(out, T_NUMBER, cls, flags, txt, enc_decimal_u64(txt, i < 0, u, 0));
}

static int put_number(sl_buf *out, int cls, const enc_val *v, int flags)
{
    char txt[64];
    switch (v->kind) {
    case ENC_V_INT:
        return put_int(out, cls, flags, v->i);
    case ENC_V_DEC:
        return put_frame(out, T_NUMBER, cls, flags, v->p, v->len);
    case ENC_V_FLOAT:
        if (isnan(v->d) || isinf(v->d)) {
            const char *spec = isnan(v->d) ? "NaN" : v->d > 0 ? "Infinity" : "-Infinity";
            return put_frame(out, T_NUMSPEC, cls, flags, spec, strlen(spec));
        }
        float_shortest(v->d, txt, sizeof txt);
        return put_number_text(out, cls, flags, txt, strlen(txt));
    case ENC_V_TEXT:
        if (cls == ENC_FLOAT) { /* re-read through double: "1.10" and "1.1" are one float */
            char tmp[128];
            if (v->len < sizeof tmp) {
                memcpy(tmp, v->p, v->len);
                tmp[v->len] = '\0';
                char *end;
                double d = strtod(tmp, &end);
                if (end != tmp && *end == '\0') {
                    enc_val f = {.kind = ENC_V_FLOAT, .d = d};
                    return put_number(out, cls, &f, flags);
                }
            }
        }
        return put_number_text(out, cls, flags, v->p, v->len);
    default:
        return put_frame(out, T_FALLBACK, cls, flags, v->p, v->len);
    }
}

/* ---- dates and times ------------------------------------------------- */

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's method). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static int read_digits(const char *s, size_t n, size_t *i, int count, int *out)
{
    int v = 0;
    for (int k = 0; k < count; k++, (*i)++) {
        if (*i >= n || !isdigit((unsigned char)s[*i]))
            return -1;
        v = v * 10 + (s[*i] - '0');
    }
    *out = v;
    return 0;
}

/* Parses "YYYY-MM-DD" (and, if want_time, "[ T]HH:MM[:SS[.ffffff]][Z|±HH[:MM[:SS]]]").
 * Returns 0 with days and micros-of-day (UTC) filled, -1 if it does not parse. */
static int parse_datetime(const char *s, size_t n, int want_time, int64_t *days, int64_t *micros)
{
    size_t i = 0;
    int y, mo, d, h = 0, mi = 0, sec = 0;
    long frac = 0;
    if (read_digits(s, n, &i, 4, &y) || i >= n || s[i++] != '-' || read_digits(s, n, &i, 2, &mo) ||
        i >= n || s[i++] != '-' || read_digits(s, n, &i, 2, &d))
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > 31)
        return -1;
    long off = 0;
    if (i < n && want_time && (s[i] == ' ' || s[i] == 'T')) {
        i++;
        if (read_digits(s, n, &i, 2, &h) || i >= n || s[i++] != ':' ||
            read_digits(s, n, &i, 2, &mi))
            return -1;
        if (i < n && s[i] == ':') {
            i++;
            if (read_digits(s, n, &i, 2, &sec))
                return -1;
            if (i < n && s[i] == '.') {
                i++;
                int nd = 0;
                while (i < n && isdigit((unsigned char)s[i])) {
                    if (nd < 6) {
                        frac = frac * 10 + (s[i] - '0');
                        nd++;
                    }
                    i++;
                }
                if (nd == 0)
                    return -1;
                while (nd++ < 6)
                    frac *= 10;
            }
        }
        if (h > 24 || mi > 59 || sec > 60)
            return -1;
        if (i < n && (s[i] == 'Z' || s[i] == 'z')) {
            i++;
        } else if (i < n && (s[i] == '+' || s[i] == '-')) {
            int sign = s[i++] == '-' ? -1 : 1, oh, om = 0, os = 0;
            if (read_digits(s, n, &i, 2, &oh))
                return -1;
            if (i < n && s[i] == ':') {
                i++;
                if (read_digits(s, n, &i, 2, &om))
                    return -1;
                if (i < n && s[i] == ':') {
                    i++;
                    if (read_digits(s, n, &i, 2, &os))
                        return -1;
                }
            } else if (i + 1 < n && isdigit((unsigned char)s[i])) {
                if (read_digits(s, n, &i, 2, &om))
                    return -1;
            }
            off = sign * ((long)oh * 3600 + om * 60 + os);
        }
    }
    if (i != n)
        return -1;
    *days = days_from_civil(y, (unsigned)mo, (unsigned)d);
    *micros = ((int64_t)h * 3600 + mi * 60 + sec - off) * 1000000 + frac;
    return 0;
}

/* A timestamp as microseconds since 1970 UTC; inline, as put_int. */
static inline __attribute__((always_inline)) int put_micros(sl_buf *out, int cls, int flags,
                                                            int64_t us)
{
    uint8_t b[8];
    put_be64(b, (uint64_t)us);
    return put_frame(out, T_TIME, cls, flags, b, 8);
}

static int put_time(sl_buf *out, int cls, const enc_val *v, int flags)
{
    int64_t days, micros;
    uint8_t b[8];
    if (v->kind == ENC_V_TIME && cls != ENC_DATE)
        return put_micros(out, cls, flags, v->i);
    if (v->kind == ENC_V_TIME) {
        days = v->i / 86400000000LL - (v->i % 86400000000LL < 0);
        micros = v->i - days * 86400000000LL;
    } else if (v->kind != ENC_V_TEXT ||
               parse_datetime(v->p, v->len, cls != ENC_DATE, &days, &micros) != 0) {
        goto fallback;
    }
    if (cls == ENC_DATE) {
        if (micros != 0)
            goto fallback;
        put_be64(b, (uint64_t)days);
        return put_frame(out, T_DATE, cls, flags, b, 8);
    }
    put_be64(b, (uint64_t)(days * 86400000000LL + micros));
    return put_frame(out, T_TIME, cls, flags, b, 8);
fallback:;
    sl_buf tmp = {0};
    if (enc_display(&tmp, v) != 0)
        return -1;
    int r = put_frame(out, T_FALLBACK, cls, flags, tmp.p, tmp.len);
    sl_buf_free(&tmp);
    return r;
}

/* ---- uuid, bytes ----------------------------------------------------- */

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Reads a uuid in any of PostgreSQL's accepted spellings into 16 bytes. */
static int parse_uuid(const char *s, size_t n, uint8_t out[16])
{
    int k = 0, hi = -1;
    size_t i = 0;
    if (n && s[0] == '{') {
        if (s[n - 1] != '}')
            return -1;
        i = 1;
        n--;
    }
    for (; i < n; i++) {
        if (s[i] == '-')
            continue;
        int h = hexval((unsigned char)s[i]);
        if (h < 0 || k >= 16)
            return -1;
        if (hi < 0) {
            hi = h;
        } else {
            out[k++] = (uint8_t)(hi << 4 | h);
            hi = -1;
        }
    }
    return k == 16 && hi < 0 ? 0 : -1;
}

/* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" in lowercase hex, as PostgreSQL
 * prints a uuid. */
static int is_canonical_uuid(const char *s, size_t n)
{
    if (n != 36)
        return 0;
    for (size_t i = 0; i < 36; i++) {
        int dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    }
    return 1;
}

static int put_uuid(sl_buf *out, int cls, const enc_val *v, int flags)
{
    uint8_t u[16];
    if (v->kind == ENC_V_BLOB && v->len == 16)
        return put_frame(out, T_UUID, cls, flags, v->p, 16);
    if (v->kind == ENC_V_TEXT && parse_uuid(v->p, v->len, u) == 0)
        return put_frame(out, T_UUID, cls, flags, u, 16);
    sl_buf tmp = {0};
    if (enc_display(&tmp, v) != 0)
        return -1;
    int r = put_frame(out, T_FALLBACK, cls, flags, tmp.p, tmp.len);
    sl_buf_free(&tmp);
    return r;
}

/* PostgreSQL's hex bytea output "\x0a1b..." to bytes; other text is taken as
 * its own bytes (SQLite keeps whatever was stored). */
static int bytea_from_text(const char *s, size_t n, sl_buf *dst)
{
    if (n >= 2 && s[0] == '\\' && s[1] == 'x' && n % 2 == 0) {
        if (sl_buf_reserve(dst, (n - 2) / 2) != 0)
            return -1;
        for (size_t i = 2; i < n; i += 2) {
            int a = hexval((unsigned char)s[i]), b = hexval((unsigned char)s[i + 1]);
            if (a < 0 || b < 0)
                return 1;
            dst->p[dst->len++] = (uint8_t)(a << 4 | b);
        }
        return 0;
    }
    return sl_buf_append(dst, s, n);
}

static int put_bytes(sl_buf *out, int cls, const enc_val *v, int flags)
{
    if (v->kind == ENC_V_BLOB)
        return put_frame(out, T_BYTES, cls, flags, v->p, v->len);
    sl_buf tmp = {0};
    int r;
    if (v->kind == ENC_V_TEXT) {
        r = bytea_from_text(v->p, v->len, &tmp);
        if (r == 0)
            r = put_frame(out, T_BYTES, cls, flags, tmp.p, tmp.len);
        else if (r == 1)
            r = put_frame(out, T_FALLBACK, cls, flags, v->p, v->len);
    } else {
        r = enc_display(&tmp, v);
        if (r == 0)
            r = put_frame(out, T_FALLBACK, cls, flags, tmp.p, tmp.len);
    }
    sl_buf_free(&tmp);
    return r;
}

static int put_bool(sl_buf *out, int cls, const enc_val *v, int flags)
{
    int b = -1;
    if (v->kind == ENC_V_INT && (v->i == 0 || v->i == 1)) {
        b = (int)v->i;
    } else if (v->kind == ENC_V_TEXT) {
        static const char *const t[] = {"t", "true", "1", "yes", "on", "y"};
        static const char *const f[] = {"f", "false", "0", "no", "off", "n"};
        for (size_t k = 0; k < 6; k++) {
            if (v->len == strlen(t[k]) && strncasecmp(v->p, t[k], v->len) == 0)
                b = 1;
            if (v->len == strlen(f[k]) && strncasecmp(v->p, f[k], v->len) == 0)
                b = 0;
        }
    }
    if (b < 0) {
        sl_buf tmp = {0};
        if (enc_display(&tmp, v) != 0)
            return -1;
        int r = put_frame(out, T_FALLBACK, cls, flags, tmp.p, tmp.len);
        sl_buf_free(&tmp);
        return r;
    }
    uint8_t c = (uint8_t)b;
    return put_frame(out, T_BOOL, cls, flags, &c, 1);
}

/* ---- json ------------------------------------------------------------ */

/* Re-serializes JSON with object keys sorted bytewise (duplicates: last
 * wins, as jsonb does), no whitespace, strings unescaped to UTF-8 and
 * re-escaped minimally, numbers in canonical decimal form. */
typedef struct jp {
    const char *s;
    size_t n, i;
    int depth;
} jp;

static void jp_ws(jp *p)
{
    while (p->i < p->n &&
           (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

static int put_utf8(sl_buf *b, unsigned cp)
{
    uint8_t u[4];
    size_t k;
    if (cp < 0x80) {
        u[0] = (uint8_t)cp;
        k = 1;
    } else if (cp < 0x800) {
        u[0] = (uint8_t)(0xc0 | cp >> 6);
        u[1] = (uint8_t)(0x80 | (cp & 0x3f));
        k = 2;
    } else if (cp < 0x10000) {
        u[0] = (uint8_t)(0xe0 | cp >> 12);
        u[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (uint8_t)(0x80 | (cp & 0x3f));
        k = 3;
    } else {
        u[0] = (uint8_t)(0xf0 | cp >> 18);
        u[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
        u[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        u[3] = (uint8_t)(0x80 | (cp & 0x3f));
        k = 4;
    }
    return sl_buf_append(b, u, k);
}

static int jp_hex4(jp *p, unsigned *cp)
{
    if (p->i + 4 > p->n)
        return -1;
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexval((unsigned char)p->s[p->i++]);
        if (h < 0)
            return -1;
        v = v << 4 | (unsigned)h;
    }
    *cp = v;
    return 0;
}

/* Reads a JSON string (at the opening quote) as raw UTF-8 into raw. */
static int jp_string(jp *p, sl_buf *raw)
{
    p->i++;
    while (p->i < p->n) {
        unsigned char c = (unsigned char)p->s[p->i++];
        if (c == '"')
            return 0;
        if (c < 0x20)
            return -1;
        if (c != '\\') {
            if (sl_buf_putc(raw, c))
                return -1;
            continue;
        }
        if (p->i >= p->n)
            return -1;
        c = (unsigned char)p->s[p->i++];
        unsigned cp;
        switch (c) {
        case '"':
        case '\\':
        case '/':
            cp = c;
            break;
        case 'b':
            cp = '\b';
            break;
        case 'f':
            cp = '\f';
            break;
        case 'n':
            cp = '\n';
            break;
        case 'r':
            cp = '\r';
            break;
        case 't':
            cp = '\t';
            break;
        case 'u':
            if (jp_hex4(p, &cp))
                return -1;
            if (cp >= 0xd800 && cp < 0xdc00 && p->i + 6 <= p->n && p->s[p->i] == '\\' &&
                p->s[p->i + 1] == 'u') {
                unsigned lo;
                p->i += 2;
                if (jp_hex4(p, &lo) || lo < 0xdc00 || lo > 0xdfff)
                    return -1;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            break;
        default:
            return -1;
        }
        if (put_utf8(raw, cp))
            return -1;
    }
    return -1;
}

static int put_json_string(sl_buf *out, const uint8_t *s, size_t n)
{
    if (sl_buf_putc(out, '"'))
        return -1;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c == '"' || c == '\\') {
            uint8_t e[2] = {'\\', c};
            if (sl_buf_append(out, e, 2))
                return -1;
        } else if (c < 0x20) {
            if (sl_buf_printf(out, "\\u%04x", c))
                return -1;
        } else if (sl_buf_putc(out, c)) {
            return -1;
        }
    }
    return sl_buf_putc(out, '"');
}

typedef struct jmember {
    size_t koff, klen, voff, vlen, order;
} jmember;

static int jp_value(jp *p, sl_buf *out);

static int jmember_cmp(const void *a, const void *b, void *base)
{
    const jmember *x = a, *y = b;
    const uint8_t *s = base;
    size_t m = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(s + x->koff, s + y->koff, m);
    if (c)
        return c;
    if (x->klen != y->klen)
        return x->klen < y->klen ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* Insertion sort keeps this free of qsort_r portability questions; objects
 * are small. */
static void jsort(jmember *m, size_t n, const uint8_t *base)
{
    for (size_t i = 1; i < n; i++) {
        jmember t = m[i];
        size_t j = i;
        while (j > 0 && jmember_cmp(&m[j - 1], &t, (void *)base) > 0) {
            m[j] = m[j - 1];
            j--;
        }
        m[j] = t;
    }
}

static int jp_object(jp *p, sl_buf *out)
{
    sl_buf store = {0}, mem = {0};
    int rc = -1;
    size_t count = 0;
    p->i++;
    jp_ws(p);
    if (p->i < p->n && p->s[p->i] == '}') {
        p->i++;
        return sl_buf_append(out, "{}", 2);
    }
    for (;;) {
        jp_ws(p);
        if (p->i >= p->n || p->s[p->i] != '"')
            goto done;
        jmember m = {.koff = store.len, .order = count};
        if (jp_string(p, &store))
            goto done;
        m.klen = store.len - m.koff;
        jp_ws(p);
        if (p->i >= p->n || p->s[p->i++] != ':')
            goto done;
        m.voff = store.len;
        if (jp_value(p, &store))
            goto done;
        m.vlen = store.len - m.voff;
        if (sl_buf_append(&mem, &m, sizeof m))
            goto done;
        count++;
        jp_ws(p);
        if (p->i < p->n && p->s[p->i] == ',') {
            p->i++;
            continue;
        }
        if (p->i < p->n && p->s[p->i] == '}') {
            p->i++;
            break;
        }
        goto done;
    }
    jmember *ms = (jmember *)mem.p;
    jsort(ms, count, store.p);
    if (sl_buf_putc(out, '{'))
        goto done;
    int first = 1;
    for (size_t k = 0; k < count; k++) {
        /* equal keys sort by order of appearance; keep only the last */
        if (k + 1 < count && ms[k].klen == ms[k + 1].klen &&
            memcmp(store.p + ms[k].koff, store.p + ms[k + 1].koff, ms[k].klen) == 0)
            continue;
        if (!first && sl_buf_putc(out, ','))
            goto done;
        first = 0;
        if (put_json_string(out, store.p + ms[k].koff, ms[k].klen) || sl_buf_putc(out, ':') ||
            sl_buf_append(out, store.p + ms[k].voff, ms[k].vlen))
            goto done;
    }
    rc = sl_buf_putc(out, '}');
done:
    sl_buf_free(&store);
    sl_buf_free(&mem);
    return rc;
}

static int jp_value(jp *p, sl_buf *out)
{
    if (++p->depth > 200)
        return -1;
    jp_ws(p);
    if (p->i >= p->n)
        return -1;
    int rc = -1;
    char c = p->s[p->i];
    if (c == '{') {
        rc = jp_object(p, out);
    } else if (c == '[') {
        p->i++;
        jp_ws(p);
        if (sl_buf_putc(out, '['))
            return -1;
        if (p->i < p->n && p->s[p->i] == ']') {
            p->i++;
            rc = sl_buf_putc(out, ']');
        } else {
            for (;;) {
                if (jp_value(p, out))
                    return -1;
                jp_ws(p);
                if (p->i < p->n && p->s[p->i] == ',') {
                    p->i++;
                    if (sl_buf_putc(out, ','))
                        return -1;
                    continue;
                }
                if (p->i < p->n && p->s[p->i] == ']') {
                    p->i++;
                    rc = sl_buf_putc(out, ']');
                }
                break;
            }
        }
    } else if (c == '"') {
        sl_buf raw = {0};
        rc = jp_string(p, &raw);
        if (rc == 0)
            rc = put_json_string(out, raw.p, raw.len);
        sl_buf_free(&raw);
    } else if (p->n - p->i >= 4 && memcmp(p->s + p->i, "true", 4) == 0) {
        p->i += 4;
        rc = sl_buf_append(out, "true", 4);
    } else if (p->n - p->i >= 5 && memcmp(p->s + p->i, "false", 5) == 0) {
        p->i += 5;
        rc = sl_buf_append(out, "false", 5);
    } else if (p->n - p->i >= 4 && memcmp(p->s + p->i, "null", 4) == 0) {
        p->i += 4;
        rc = sl_buf_append(out, "null", 4);
    } else if (c == '-' || isdigit((unsigned char)c)) {
        size_t st = p->i;
        while (p->i < p->n && strchr("+-.eE0123456789", p->s[p->i]))
            p->i++;
        const char *spec;
        rc = canon_decimal(out, p->s + st, p->i - st, &spec) == 0 ? 0 : -1;
    }
    p->depth--;
    return rc;
}

static int put_json(sl_buf *out, int cls, const enc_val *v, int flags)
{
    if (v->kind == ENC_V_TEXT || v->kind == ENC_V_BLOB) {
        sl_buf tmp = {0};
        jp p = {.s = v->p, .n = v->len};
        int ok = jp_value(&p, &tmp) == 0;
        jp_ws(&p);
        ok = ok && p.i == p.n;
        int r = ok ? put_frame(out, T_JSON, cls, flags, tmp.p, tmp.len)
                   : put_frame(out, T_FALLBACK, cls, flags, v->p, v->len);
        sl_buf_free(&tmp);
        return r;
    }
    return put_number(out, cls, v, flags);
}

/* ---- values ---------------------------------------------------------- */

static inline __attribute__((always_inline)) int value(sl_buf *out, int cls, const enc_val *v,
                                                       int flags)
{
    if (v->kind == ENC_V_NULL) {
        uint8_t t[2] = {T_NULL, (uint8_t)cls};
        return sl_buf_append(out, t, (flags & ENC_STRICT) ? 2 : 1);
    }
    switch (cls) {
    case ENC_INT:
    case ENC_NUMERIC:
    case ENC_FLOAT:
        if (v->kind == ENC_V_INT)
            return put_int(out, cls, flags, v->i);
        if (v->kind == ENC_V_DEC)
            return put_frame(out, T_NUMBER, cls, flags, v->p, v->len);
        return put_number(out, cls, v, flags);
    case ENC_BOOL:
        return put_bool(out, cls, v, flags);
    case ENC_BYTEA:
        return put_bytes(out, cls, v, flags);
    case ENC_TIMESTAMP:
    case ENC_TIMESTAMPTZ:
        if (v->kind == ENC_V_TIME)
            return put_micros(out, cls, flags, v->i);
        return put_time(out, cls, v, flags);
    case ENC_DATE:
        return put_time(out, cls, v, flags);
    case ENC_UUID:
        return put_uuid(out, cls, v, flags);
    case ENC_JSON:
        return put_json(out, cls, v, flags);
    default:
        break;
    }
    /* text, and the fallback for every other type: its text form */
    if (v->kind == ENC_V_TEXT || v->kind == ENC_V_BLOB)
        return put_frame(out, T_TEXT, cls, flags, v->p, v->len);
    sl_buf tmp = {0};
    if (enc_display(&tmp, v) != 0)
        return -1;
    int r = put_frame(out, T_TEXT, cls, flags, tmp.p, tmp.len);
    sl_buf_free(&tmp);
    return r;
}

/* ---- tolerances ------------------------------------------------------ */

/* Microseconds since 2000-01-01 rounded to keep digits fractional digits,
 * halves away from 2000-01-01 as PostgreSQL's timestamp(p) rounds. */
static int64_t round_micros(int64_t t, int digits)
{
    static const int64_t scale[] = {1000000, 100000, 10000, 1000, 100, 10, 1};
    const int64_t q = scale[digits];
    return t >= 0 ? (t + q / 2) / q * q : -((-t + q / 2) / q * q);
}

static void put_len(uint8_t *o, size_t n)
{
    o[0] = (uint8_t)(n >> 24);
    o[1] = (uint8_t)(n >> 16);
    o[2] = (uint8_t)(n >> 8);
    o[3] = (uint8_t)n;
}

#define US_DAY 86400000000LL
#define DAYS_1970_2000 10957LL
#define US_1970_2000 (DAYS_1970_2000 * US_DAY)
/* The days PostgreSQL's connector sends as T_TIME, 0001-01-01 to 9999-12-31
 * (connectors/pg_bin.c, DAY_MIN and DAY_END), since 2000-01-01 */
#define PG_DAY_MIN (-719162LL - DAYS_1970_2000)
#define PG_DAY_END (2932897LL - DAYS_1970_2000)

/* A timestamp as PostgreSQL's connector writes one outside years 1..9999
 * (connectors/pg_bin.c, time_text): "Y-MM-DD HH:MM:SS[.f][+00][ BC]",
 * the fraction without trailing zeros. */
static int put_pg_time(sl_buf *out, int64_t t2000, int tz)
{
    int64_t days = t2000 / US_DAY - (t2000 % US_DAY < 0), y;
    int64_t us = t2000 - days * US_DAY, s = us / 1000000, f = us % 1000000;
    unsigned m, d;
    enc_civil(days + DAYS_1970_2000, &y, &m, &d);
    int bc = y <= 0, n = 6;
    if (sl_buf_printf(out, "%04lld-%02u-%02u %02lld:%02lld:%02lld", (long long)(bc ? 1 - y : y), m,
                      d, (long long)(s / 3600), (long long)(s / 60 % 60), (long long)(s % 60)))
        return -1;
    char frac[8];
    snprintf(frac, sizeof frac, "%06lld", (long long)f);
    while (n > 0 && frac[n - 1] == '0')
        n--;
    if ((n && sl_buf_printf(out, ".%.*s", n, frac)) || (tz && sl_buf_append(out, "+00", 3)))
        return -1;
    return bc ? sl_buf_append(out, " BC", 3) : 0;
}

/* A fallback timestamp (a year PostgreSQL has and T_TIME does not: BC, or
 * past 9999) rounded as tol_transform rounds a T_TIME: parsed, rounded and
 * written back when the text is exactly what put_pg_time writes (any other
 * text stays as it is). 0, or -1 when memory runs out. */
static int put_rounded_time(sl_buf *out, size_t start, int cls, int flags, int64_t t);

static int round_pg_time(sl_buf *out, size_t start, int cls, int flags, int digits)
{
    size_t at = start + ((flags & ENC_STRICT) ? 2 : 1) + 4, n = out->len - at;
    const char *s = (const char *)out->p + at;
    size_t i = 0, yd = 0;
    int64_t y = 0;
    int mo, d, h, mi, sec;
    long frac = 0;
    for (; i < n && yd < 7 && isdigit((unsigned char)s[i]); i++, yd++)
        y = y * 10 + (s[i] - '0');
    if (yd < 4 || i >= n || s[i++] != '-' || read_digits(s, n, &i, 2, &mo) || i >= n ||
        s[i++] != '-' || read_digits(s, n, &i, 2, &d) || i >= n || s[i++] != ' ' ||
        read_digits(s, n, &i, 2, &h) || i >= n || s[i++] != ':' || read_digits(s, n, &i, 2, &mi) ||
        i >= n || s[i++] != ':' || read_digits(s, n, &i, 2, &sec) || mo < 1 || mo > 12 || d < 1 ||
        d > 31 || h > 23 || mi > 59 || sec > 59)
        return 0;
    if (i < n && s[i] == '.') { /* 1 to 6 digits; more, and the text is not canonical */
        size_t st = ++i;
        for (; i < n && i - st < 6 && isdigit((unsigned char)s[i]); i++)
            frac = frac * 10 + (s[i] - '0');
        for (size_t k = i - st; k < 6; k++)
            frac *= 10;
    }
    int tz = n - i >= 3 && !memcmp(s + i, "+00", 3);
    i += tz ? 3 : 0;
    int bc = n - i == 3 && !memcmp(s + i, " BC", 3);
    if (i + (bc ? 3 : 0) != n)
        return 0;
    int64_t days = days_from_civil(bc ? 1 - y : y, (unsigned)mo, (unsigned)d) - DAYS_1970_2000;
    if (days < -106751990 || days > 106751990) /* t2000 stays inside int64 */
        return 0;
    int64_t t = days * US_DAY + ((int64_t)h * 3600 + mi * 60 + sec) * 1000000 + frac;
    /* written back only when the text is this one's canonical form */
    size_t end = out->len;
    if (put_pg_time(out, t, tz))
        return -1;
    int canon = out->len - end == n && !memcmp(out->p + end, out->p + at, n);
    out->len = end;
    if (!canon)
        return 0;
    return put_rounded_time(out, start, cls, flags, round_micros(t, digits));
}

/* Writes at start (dropping what is there) the rounded timestamp t (since
 * 2000) as PostgreSQL's connector would send a value stored rounded: T_TIME
 * within years 1..9999, else its text. A rounding may cross that edge
 * (9999-12-31 23:59:59.5 is 10000-01-01 in timestamp(0)). */
static int put_rounded_time(sl_buf *out, size_t start, int cls, int flags, int64_t t)
{
    out->len = start;
    if (t >= PG_DAY_MIN * US_DAY && t < PG_DAY_END * US_DAY) {
        uint8_t b[8];
        put_be64(b, (uint64_t)(t + US_1970_2000));
        return put_frame(out, T_TIME, cls, flags, b, 8);
    }
    size_t hdr = (flags & ENC_STRICT) ? 6 : 5;
    if (sl_buf_reserve(out, hdr))
        return -1;
    out->p[start] = T_FALLBACK;
    if (flags & ENC_STRICT)
        out->p[start + 1] = (uint8_t)cls;
    out->len = start + hdr;
    if (put_pg_time(out, t, cls == ENC_TIMESTAMPTZ))
        return -1;
    put_len(out->p + start + hdr - 4, out->len - start - hdr);
    return 0;
}

/* Applies t to the one value encoded at out->p + start: a timestamp is
 * rounded (also one PostgreSQL's connector sent as text: BC, or a year
 * past 9999), text folded and trimmed, all in place; with ENC_GRID a number
 * becomes its grid cell (T_CELL), or stays exact when too large for one. */
static int tol_transform(sl_buf *out, size_t start, int cls, int flags, const enc_tol *t)
{
    size_t h = (flags & ENC_STRICT) ? 2 : 1;
    int tag = out->p[start];
    if (tag == T_NULL || out->len < start + h + 4)
        return 0;
    uint8_t *pl = out->p + start + h + 4;
    size_t n = out->len - start - h - 4;
    if (tag == T_TIME && t->ts_digits < 6 && n == 8) {
        int64_t us = (int64_t)get_be64(pl);
        if (us < INT64_MIN + US_1970_2000) /* not a time PostgreSQL or a text could give */
            return 0;
        return put_rounded_time(out, start, cls, flags,
                                round_micros(us - US_1970_2000, t->ts_digits));
    } else if (tag == T_FALLBACK && t->ts_digits < 6 &&
               (cls == ENC_TIMESTAMP || cls == ENC_TIMESTAMPTZ)) {
        return round_pg_time(out, start, cls, flags, t->ts_digits);
    } else if (tag == T_TEXT && t->text) {
        if (t->text & ENC_TOL_FOLD)
            for (size_t i = 0; i < n; i++)
                if (pl[i] >= 'A' && pl[i] <= 'Z')
                    pl[i] = (uint8_t)(pl[i] + 32);
        if (t->text & ENC_TOL_TRIM) {
            while (n > 0 && pl[n - 1] == ' ')
                n--;
            put_len(pl - 4, n);
            out->len = start + h + 4 + n;
        }
    } else if (tag == T_NUMBER && t->num != ENC_TOL_EXACT && (flags & ENC_GRID)) {
        char small[128], *dec = n <= sizeof small ? small : malloc(n);
        if (!dec)
            return -1;
        memcpy(dec, pl, n);
        out->len = start + h + 4;
        int r = enc_tol_cell(out, dec, n, t);
        if (r == 0) {
            out->p[start] = T_CELL;
            put_len(out->p + start + h, out->len - start - h - 4);
        } else if (r == 1) { /* too far from the grid's scale: the exact value */
            out->len = start + h + 4;
            r = sl_buf_append(out, dec, n);
        }
        if (dec != small)
            free(dec);
        return r < 0 ? -1 : 0;
    }
    return 0;
}

static int value_tol(sl_buf *out, int cls, const enc_val *v, int flags, const enc_tol *t)
{
    size_t start = out->len;
    if (value(out, cls, v, flags))
        return -1;
    return t && v->kind != ENC_V_NULL ? tol_transform(out, start, cls, flags, t) : 0;
}

int enc_value_tol(sl_buf *out, int cls, const enc_val *v, int flags, const struct enc_tol *t)
{
    return value_tol(out, cls, v, flags, t);
}

/* ---- keys ------------------------------------------------------------ */

int enc_value(sl_buf *out, int cls, const enc_val *v, int flags)
{
    return value(out, cls, v, flags);
}

int enc_values(sl_buf *out, const int *cls, const enc_val *v, size_t n, int flags)
{
    for (size_t k = 0; k < n; k++)
        if (value(out, cls[k], &v[k], flags))
            return -1;
    return 0;
}

int enc_key_is_supported(int cls)
{
    return cls == ENC_INT || cls == ENC_TEXT || cls == ENC_UUID || cls == ENC_BYTEA ||
           cls == ENC_OTHER;
}

/* Byte strings in keys: 0x00 becomes 0x00 0xff and the end is 0x00 0x00, so
 * a prefix sorts first and composite keys stay in order. */
static int put_escaped(sl_buf *out, const uint8_t *s, size_t n)
{
    if (sl_buf_reserve(out, n + 2) != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == 0) {
            if (sl_buf_putc(out, 0) || sl_buf_putc(out, 0xff))
                return -1;
        } else if (sl_buf_putc(out, s[i])) {
            return -1;
        }
    }
    return sl_buf_append(out, "\0\0", 2);
}

int enc_key(sl_buf *out, int cls, const enc_val *v, sl_err *err)
{
    if (v->kind == ENC_V_NULL)
        return sl_err_setc(err, SL_INVALID,
                           "NULL in a key column; a key must identify each row: pass --key "
                           "with NOT NULL columns");
    switch (cls) {
    case ENC_INT: {
        int64_t x;
        if (v->kind == ENC_V_INT) {
            x = v->i;
        } else if (v->kind == ENC_V_TEXT && v->len < 32) {
            char tmp[32], *end;
            memcpy(tmp, v->p, v->len);
            tmp[v->len] = '\0';
            errno = 0;
            x = strtoll(tmp, &end, 10);
            if (end == tmp || *end || errno)
                return sl_err_setc(err, SL_INVALID,
                                   "integer key value \"%s\" does not parse as an integer", tmp);
        } else {
            return sl_err_setc(err, SL_INVALID, "integer key column holds a non-integer value");
        }
        uint8_t b[9] = {K_INT};
        put_be64(b + 1, (uint64_t)x ^ (1ULL << 63));
        return sl_buf_append(out, b, 9) ? sl_err_set(err, "out of memory") : 0;
    }
    case ENC_UUID: {
        uint8_t b[17] = {K_UUID};
        if (v->kind == ENC_V_BLOB && v->len == 16)
            memcpy(b + 1, v->p, 16);
        else if (v->kind != ENC_V_TEXT || parse_uuid(v->p, v->len, b + 1) != 0)
            return sl_err_setc(err, SL_INVALID, "uuid key value does not parse as a uuid");
        else if (!is_canonical_uuid(v->p, v->len))
            /* a text uuid is ranged and ordered as text by its database:
             * only the canonical spelling orders like the 16 bytes */
            return sl_err_setc(err, SL_INVALID,
                               "uuid key value \"%.*s\" is not in canonical form "
                               "(lowercase, 8-4-4-4-12); store uuid keys that way",
                               (int)(v->len < 40 ? v->len : 40), v->p);
        return sl_buf_append(out, b, 17) ? sl_err_set(err, "out of memory") : 0;
    }
    case ENC_BYTEA: {
        sl_buf tmp = {0};
        int r = -1;
        if (v->kind == ENC_V_BLOB)
            r = sl_buf_append(&tmp, v->p, v->len);
        else if (v->kind == ENC_V_TEXT)
            r = bytea_from_text(v->p, v->len, &tmp);
        if (r == 0)
            r = sl_buf_putc(out, K_BYTES) || put_escaped(out, tmp.p, tmp.len) ? -1 : 0;
        sl_buf_free(&tmp);
        return r ? sl_err_setc(err, SL_INVALID, "bytea key value could not be read") : 0;
    }
    case ENC_TEXT:
    case ENC_OTHER:
        if (v->kind != ENC_V_TEXT && v->kind != ENC_V_BLOB)
            return sl_err_setc(err, SL_INVALID,
                               "text key column holds a non-text value (SQLite: an integer "
                               "stored in a TEXT key); the key order would differ");
        if (sl_buf_putc(out, K_TEXT) || put_escaped(out, (const uint8_t *)v->p, v->len))
            return sl_err_set(err, "out of memory");
        return 0;
    default:
        return sl_err_setc(err, SL_INVALID,
                           "key column of type %s cannot be ordered across databases; pass "
                           "--key with integer, text, uuid or bytea columns",
                           enc_class_name(cls));
    }
}

int enc_key_decode(const uint8_t *key, size_t len, size_t ncols, sl_buf *scratch, enc_val *out,
                   sl_err *err)
{
    sl_buf_reset(scratch);
    /* decoded text never grows beyond 3x the encoding (uuids), so pointers
     * into scratch stay valid once reserved */
    if (sl_buf_reserve(scratch, len * 3 + 64) != 0)
        return sl_err_set(err, "out of memory");
    size_t i = 0;
    for (size_t c = 0; c < ncols; c++) {
        if (i >= len)
            return sl_err_setc(err, SL_INVALID, "encoded key is shorter than its %zu columns",
                               ncols);
        uint8_t tag = key[i++];
        enc_val *v = &out[c];
        memset(v, 0, sizeof *v);
        if (tag == K_INT) {
            if (len - i < 8)
                return sl_err_setc(err, SL_INVALID, "encoded key is truncated");
            v->kind = ENC_V_INT;
            v->i = (int64_t)(get_be64(key + i) ^ (1ULL << 63));
            i += 8;
        } else if (tag == K_UUID) {
            if (len - i < 16)
                return sl_err_setc(err, SL_INVALID, "encoded key is truncated");
            char *d = (char *)scratch->p + scratch->len;
            static const char hx[] = "0123456789abcdef";
            size_t o = 0;
            for (int k = 0; k < 16; k++) {
                if (k == 4 || k == 6 || k == 8 || k == 10)
                    d[o++] = '-';
                d[o++] = hx[key[i + k] >> 4];
                d[o++] = hx[key[i + k] & 15];
            }
            scratch->len += o;
            v->kind = ENC_V_TEXT;
            v->p = d;
            v->len = o;
            i += 16;
        } else if (tag == K_TEXT || tag == K_BYTES) {
            char *d = (char *)scratch->p + scratch->len;
            size_t o = 0;
            for (;;) {
                if (i >= len)
                    return sl_err_setc(err, SL_INVALID, "encoded key is truncated");
                if (key[i] == 0) {
                    if (i + 1 >= len)
                        return sl_err_setc(err, SL_INVALID, "encoded key is truncated");
                    if (key[i + 1] == 0) {
                        i += 2;
                        break;
                    }
                    if (key[i + 1] != 0xff)
                        return sl_err_setc(err, SL_INVALID, "encoded key has a bad escape");
                    d[o++] = 0;
                    i += 2;
                } else {
                    d[o++] = (char)key[i++];
                }
            }
            scratch->len += o;
            v->kind = tag == K_TEXT ? ENC_V_TEXT : ENC_V_BLOB;
            v->p = d;
            v->len = o;
        } else {
            return sl_err_setc(err, SL_INVALID, "encoded key has unknown tag 0x%02x", tag);
        }
    }
    if (i != len)
        return sl_err_setc(err, SL_INVALID, "encoded key is longer than its %zu columns", ncols);
    return 0;
}

/* The tag enc_key writes for a key column of class cls, -1 for none. */
static int key_tag(int cls)
{
    switch (cls) {
    case ENC_INT:
        return K_INT;
    case ENC_UUID:
        return K_UUID;
    case ENC_BYTEA:
        return K_BYTES;
    case ENC_TEXT:
    case ENC_OTHER:
        return K_TEXT;
    default:
        return -1;
    }
}

int enc_key_check(const uint8_t *key, size_t len, const int *cls, size_t ncols, sl_err *err)
{
    size_t i = 0;
    for (size_t c = 0; c < ncols; c++) {
        int want = key_tag(cls[c]);
        if (want < 0)
            return sl_err_setc(err, SL_INVALID,
                               "key column %zu is of class %s, which cannot be a key", c,
                               enc_class_name(cls[c]));
        if (i >= len)
            return sl_err_setc(err, SL_INVALID, "encoded key is shorter than its %zu columns",
                               ncols);
        if (key[i] != want)
            return sl_err_setc(err, SL_INVALID,
                               "encoded key column %zu has tag 0x%02x, not that of %s", c, key[i],
                               enc_class_name(cls[c]));
        i++;
        if (want == K_INT || want == K_UUID) {
            size_t w = want == K_INT ? 8 : 16;
            if (len - i < w)
                return sl_err_setc(err, SL_INVALID, "encoded key is truncated");
            i += w;
            continue;
        }
        for (;;) { /* escaped bytes: 0x00 0xff is a zero byte, 0x00 0x00 the end */
            const uint8_t *z = i < len ? memchr(key + i, 0, len - i) : NULL;
            if (!z || (size_t)(z - key) + 1 >= len)
                return sl_err_setc(err, SL_INVALID, "encoded key is truncated");
            i = (size_t)(z - key) + 2;
            if (z[1] == 0)
                break;
            if (z[1] != 0xff)
                return sl_err_setc(err, SL_INVALID, "encoded key has a bad escape");
        }
    }
    if (i != len)
        return sl_err_setc(err, SL_INVALID, "encoded key is longer than its %zu columns", ncols);
    return 0;
}

void enc_civil(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static int put_zeros(sl_buf *out, long n)
{
    for (; n > 0; n--)
        if (sl_buf_putc(out, '0'))
            return -1;
    return 0;
}

/* A canonical decimal "[-]DIGITS E exp" as plain decimal text. */
static int display_decimal(sl_buf *out, const char *p, size_t n)
{
    const char *e = memchr(p, 'E', n), *end = p + n;
    if (!e)
        return sl_buf_append(out, p, n); /* "0" */
    int neg = p[0] == '-', xneg = e + 1 < end && e[1] == '-';
    const char *d = p + neg;
    long nd = (long)(e - d), x = 0;
    for (const char *q = e + 1 + xneg; q < end; q++)
        x = x * 10 + (*q - '0');
    if (xneg)
        x = -x;
    if (neg && sl_buf_putc(out, '-'))
        return -1;
    if (x >= 0)
        return sl_buf_append(out, d, (size_t)nd) || put_zeros(out, x) ? -1 : 0;
    if (nd + x > 0)
        return sl_buf_append(out, d, (size_t)(nd + x)) || sl_buf_putc(out, '.') ||
                       sl_buf_append(out, d + nd + x, (size_t)-x)
                   ? -1
                   : 0;
    return sl_buf_append(out, "0.", 2) || put_zeros(out, -(nd + x)) ||
                   sl_buf_append(out, d, (size_t)nd)
               ? -1
               : 0;
}

/* put_digits, zero-padded to width digits (as printf's "%0*llu", without
 * printf: a display per value of every streamed row, where printf's
 * parsing was a sixth of the time). */
static char *put_padded(char *end, uint64_t v, int width)
{
    char *p = put_digits(end, v);
    while (end - p < width)
        *--p = '0';
    return p;
}

int enc_display(sl_buf *out, const enc_val *v)
{
    char tmp[64];
    switch (v->kind) {
    case ENC_V_DEC:
        return display_decimal(out, v->p, v->len);
    case ENC_V_TIME: {
        int64_t days = v->i / 86400000000LL - (v->i % 86400000000LL < 0), y;
        int64_t us = v->i - days * 86400000000LL;
        unsigned m, d;
        enc_civil(days, &y, &m, &d);
        if (y < 0 || y > 9999) /* outside what ENC_V_TIME holds: as printf would */
            return sl_buf_printf(out, "%04lld-%02u-%02u %02lld:%02lld:%02lld.%06lld", (long long)y,
                                 m, d, (long long)(us / 3600000000LL),
                                 (long long)(us / 60000000 % 60), (long long)(us / 1000000 % 60),
                                 (long long)(us % 1000000));
        /* YYYY-MM-DD HH:MM:SS.ffffff, written from the end */
        char *e = tmp + 26;
        e = put_padded(e, (uint64_t)(us % 1000000), 6) - 1;
        *e = '.';
        e = put_padded(e, (uint64_t)(us / 1000000 % 60), 2) - 1;
        *e = ':';
        e = put_padded(e, (uint64_t)(us / 60000000 % 60), 2) - 1;
        *e = ':';
        e = put_padded(e, (uint64_t)(us / 3600000000LL), 2) - 1;
        *e = ' ';
        e = put_padded(e, d, 2) - 1;
        *e = '-';
        e = put_padded(e, m, 2) - 1;
        *e = '-';
        e = put_padded(e, (uint64_t)y, 4);
        return sl_buf_append(out, e, (size_t)(tmp + 26 - e));
    }
    case ENC_V_NULL:
        return 0;
    case ENC_V_INT: {
        /* the magnitude as unsigned: -INT64_MIN does not fit an int64 */
        uint64_t mag = v->i < 0 ? (uint64_t)0 - (uint64_t)v->i : (uint64_t)v->i;
        char *e = put_digits(tmp + sizeof tmp, mag);
        if (v->i < 0)
            *--e = '-';
        return sl_buf_append(out, e, (size_t)(tmp + sizeof tmp - e));
    }
    case ENC_V_FLOAT:
        if (isnan(v->d))
            return sl_buf_printf(out, "NaN");
        if (isinf(v->d))
            return sl_buf_printf(out, v->d > 0 ? "Infinity" : "-Infinity");
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(tmp, sizeof tmp, "%.*g", prec, v->d);
            if (strtod(tmp, NULL) == v->d)
                break;
        }
        return sl_buf_append(out, tmp, strlen(tmp));
    case ENC_V_TEXT:
        return sl_buf_append(out, v->p, v->len);
    case ENC_V_BLOB:
        if (sl_buf_append(out, "\\x", 2))
            return -1;
        for (size_t i = 0; i < v->len; i++)
            if (sl_buf_printf(out, "%02x", (unsigned char)v->p[i]))
                return -1;
        return 0;
    }
    return 0;
}

void enc_hash(const void *p, size_t len, uint8_t out[16])
{
    XXH128_hash_t h = XXH3_128bits(p, len);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    memcpy(out, c.digest, 16);
}

/* ---- big values: hashed in place, never copied whole ----------------- */

/* A value whose encoding is one frame over its own bytes, possibly
 * hex-decoded (PostgreSQL's bytea text "\x..."): it can be hashed where it
 * lies. Must agree with value() and put_bytes(). */
typedef struct payload {
    int tag;
    const char *p;
    size_t n; /* payload bytes (decoded length when hex) */
    int hex;
    int fold; /* ASCII letters hashed in lower case (--case-fold) */
} payload;

static int payload_of(int cls, const enc_val *v, const enc_tol *t, payload *pl)
{
    if (v->kind != ENC_V_TEXT && v->kind != ENC_V_BLOB)
        return 0;
    *pl = (payload){T_TEXT, v->p, v->len, 0, 0};
    if (cls == ENC_TEXT || cls == ENC_OTHER) {
        if (t && (t->text & ENC_TOL_TRIM)) /* as tol_transform trims */
            while (pl->n > 0 && pl->p[pl->n - 1] == ' ')
                pl->n--;
        pl->fold = t && (t->text & ENC_TOL_FOLD);
        return 1;
    }
    if (cls != ENC_BYTEA)
        return 0;
    pl->tag = T_BYTES;
    if (v->kind == ENC_V_BLOB)
        return 1;
    if (v->len >= 2 && v->p[0] == '\\' && v->p[1] == 'x' && v->len % 2 == 0) {
        for (size_t i = 2; i < v->len; i++)
            if (hexval((unsigned char)v->p[i]) < 0) {
                pl->tag = T_FALLBACK; /* as bytea_from_text's 1: the text itself */
                return 1;
            }
        pl->p += 2;
        pl->n = (v->len - 2) / 2;
        pl->hex = 1;
    }
    return 1;
}

static size_t put_head(uint8_t *h, int tag, int cls, int flags, size_t n)
{
    size_t k = 0;
    h[k++] = (uint8_t)tag;
    if (flags & ENC_STRICT)
        h[k++] = (uint8_t)cls;
    h[k++] = (uint8_t)(n >> 24);
    h[k++] = (uint8_t)(n >> 16);
    h[k++] = (uint8_t)(n >> 8);
    h[k++] = (uint8_t)n;
    return k;
}

/* Feeds a payload to st, hex-decoding it a chunk at a time. */
static void hash_payload(XXH3_state_t *st, const payload *pl)
{
    if (!pl->hex && !pl->fold) {
        XXH3_128bits_update(st, pl->p, pl->n);
        return;
    }
    uint8_t chunk[8192];
    for (size_t i = 0; i < pl->n;) {
        size_t m = pl->n - i < sizeof chunk ? pl->n - i : sizeof chunk;
        if (pl->fold) {
            for (size_t k = 0; k < m; k++, i++) {
                uint8_t c = (uint8_t)pl->p[i];
                chunk[k] = c >= 'A' && c <= 'Z' ? (uint8_t)(c + 32) : c;
            }
        } else {
            for (size_t k = 0; k < m; k++, i++)
                chunk[k] = (uint8_t)(hexval((unsigned char)pl->p[2 * i]) << 4 |
                                     hexval((unsigned char)pl->p[2 * i + 1]));
        }
        XXH3_128bits_update(st, chunk, m);
    }
}

static void digest_out(XXH3_state_t *st, uint8_t out[16])
{
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits_digest(st));
    memcpy(out, c.digest, 16);
}

int enc_hash_values(sl_buf *scratch, const int *cls, const enc_val *v, size_t n, int flags,
                    uint8_t out[16])
{
    return enc_hash_values_tol(scratch, cls, NULL, v, n, flags, out);
}

int enc_hash_values_tol(sl_buf *scratch, const int *cls, const struct enc_tol *tol,
                        const enc_val *v, size_t n, int flags, uint8_t out[16])
{
    int big = 0;
    if (tol)
        flags |= ENC_GRID;
    for (size_t k = 0; k < n && !big; k++)
        big = v[k].kind != ENC_V_NULL && v[k].len > ENC_VALUE_INLINE_MAX;
    sl_buf_reset(scratch);
    if (!big) { /* the common row: one buffer, one call */
        if (!tol && enc_values(scratch, cls, v, n, flags))
            return -1;
        for (size_t k = 0; tol && k < n; k++)
            if (value_tol(scratch, cls[k], &v[k], flags, &tol[k]))
                return -1;
        enc_hash(scratch->p, scratch->len, out);
        return 0;
    }
    XXH3_state_t *st = XXH3_createState();
    if (!st)
        return -1;
    XXH3_128bits_reset(st);
    for (size_t k = 0; k < n; k++) {
        payload pl;
        const enc_tol *t = tol ? &tol[k] : NULL;
        if (v[k].kind != ENC_V_NULL && v[k].len > ENC_VALUE_INLINE_MAX &&
            payload_of(cls[k], &v[k], t, &pl)) {
            uint8_t h[6];
            XXH3_128bits_update(st, scratch->p, scratch->len);
            sl_buf_reset(scratch);
            XXH3_128bits_update(st, h, put_head(h, pl.tag, cls[k], flags, pl.n));
            hash_payload(st, &pl);
            continue;
        }
        if (value_tol(scratch, cls[k], &v[k], flags, t)) {
            XXH3_freeState(st);
            return -1;
        }
        if (scratch->len >= ENC_VALUE_INLINE_MAX) {
            XXH3_128bits_update(st, scratch->p, scratch->len);
            sl_buf_reset(scratch);
        }
    }
    XXH3_128bits_update(st, scratch->p, scratch->len);
    digest_out(st, out);
    XXH3_freeState(st);
    return 0;
}

int enc_digest_encoded(const uint8_t *e, size_t n, int flags, enc_digest *d)
{
    size_t h = (flags & ENC_STRICT) ? 2 : 1;
    memset(d, 0, sizeof *d);
    if (n < h)
        return -1;
    memcpy(d->head, e, h);
    d->nhead = (uint8_t)h;
    if (e[0] == T_NULL) {
        if (n != h)
            return -1;
    } else {
        if (n < h + 4)
            return -1;
        d->len =
            (uint64_t)e[h] << 24 | (uint64_t)e[h + 1] << 16 | (uint64_t)e[h + 2] << 8 | e[h + 3];
        if (n - h - 4 != d->len)
            return -1;
        e += h + 4;
    }
    enc_hash(d->len ? e : (const uint8_t *)"", (size_t)d->len, d->hash);
    return 0;
}

int enc_value_digest(sl_buf *scratch, int cls, const enc_val *v, int flags, enc_digest *d)
{
    return enc_value_digest_tol(scratch, cls, v, flags, NULL, d);
}

int enc_value_digest_tol(sl_buf *scratch, int cls, const enc_val *v, int flags,
                         const struct enc_tol *t, enc_digest *d)
{
    payload pl;
    if (v->kind == ENC_V_NULL || !payload_of(cls, v, t, &pl)) {
        sl_buf_reset(scratch);
        if (value_tol(scratch, cls, v, flags, t))
            return -1;
        return enc_digest_encoded(scratch->p, scratch->len, flags, d);
    }
    uint8_t h[6];
    memset(d, 0, sizeof *d);
    d->nhead = (uint8_t)(put_head(h, pl.tag, cls, flags, pl.n) - 4);
    memcpy(d->head, h, d->nhead);
    d->len = pl.n;
    XXH3_state_t *st = XXH3_createState();
    if (!st)
        return -1;
    XXH3_128bits_reset(st);
    hash_payload(st, &pl);
    digest_out(st, d->hash);
    XXH3_freeState(st);
    return 0;
}

int enc_digest_equal(const enc_digest *a, const enc_digest *b)
{
    return a->nhead == b->nhead && memcmp(a->head, b->head, a->nhead) == 0 && a->len == b->len &&
           memcmp(a->hash, b->hash, 16) == 0;
}

int enc_display_prefix(sl_buf *out, const enc_val *v, size_t max)
{
    static const char hex[] = "0123456789abcdef";
    if (v->kind == ENC_V_TEXT) {
        size_t n = v->len;
        if (n > max) { /* cut before a UTF-8 continuation byte, never inside a character */
            n = max;
            while (n > 0 && ((unsigned char)v->p[n] & 0xc0) == 0x80)
                n--;
        }
        return sl_buf_append(out, v->p, n);
    }
    if (v->kind == ENC_V_BLOB) {
        size_t n = max < 2 ? 0 : (max - 2) / 2;
        if (n > v->len)
            n = v->len;
        if (sl_buf_append(out, "\\x", 2) || sl_buf_reserve(out, 2 * n))
            return -1;
        for (size_t i = 0; i < n; i++) {
            out->p[out->len++] = (uint8_t)hex[(unsigned char)v->p[i] >> 4];
            out->p[out->len++] = (uint8_t)hex[(unsigned char)v->p[i] & 15];
        }
        return 0;
    }
    return enc_display(out, v);
}
