/* Private to connectors/: PostgreSQL's binary wire format read into enc_val,
 * for the range stream (the hot path). Every value decodes to what the
 * encoder makes of the same value's text form under the session settings
 * pg.c pins (UTC, ISO dates, hex bytea, shortest floats), so a range read
 * in binary hashes exactly as one read as text. */
#ifndef PG_BIN_H
#define PG_BIN_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../base/sl.h"
#include "../merkle/enc.h"

/* The class a value of this type OID decodes to, or 0 when the type has no
 * binary decoder here (domains, extension types: read those as text). */
int pg_bin_class(unsigned oid);

/* Decodes one binary value of type oid into v. Any bytes v must point to
 * besides p (numerics, rare text forms) go to scratch, which is reset first
 * and must outlive v. Returns 0, or -1 with err set when the bytes are not
 * a well-formed value of that type. */
int pg_bin_decode_any(unsigned oid, const char *p, size_t len, sl_buf *scratch, enc_val *v,
                      sl_err *err);

/* The same, inline for the commonest types: it runs for every value of
 * every row. */
static inline int pg_bin_decode(unsigned oid, const char *p, size_t len, sl_buf *scratch,
                                enc_val *v, sl_err *err)
{
    uint64_t u;
    switch (oid) {
    case 20: /* int8 */
        if (len != 8)
            break;
        memcpy(&u, p, 8);
        *v = (enc_val){.kind = ENC_V_INT, .i = (int64_t)__builtin_bswap64(u)};
        return 0;
    case 23: { /* int4 */
        uint32_t w;
        if (len != 4)
            break;
        memcpy(&w, p, 4);
        *v = (enc_val){.kind = ENC_V_INT, .i = (int32_t)__builtin_bswap32(w)};
        return 0;
    }
    case 25:   /* text */
    case 1043: /* varchar */
        *v = (enc_val){.kind = ENC_V_TEXT, .p = p, .len = len};
        return 0;
    case 1114: /* timestamp */
    case 1184: /* timestamptz: microseconds since 2000-01-01 */
        if (len != 8)
            break;
        memcpy(&u, p, 8);
        int64_t t = (int64_t)__builtin_bswap64(u);
        /* years 1..9999 (-730119 and 2921940 days from 2000-01-01) */
        if (t < -730119LL * 86400000000LL || t >= 2921940LL * 86400000000LL)
            break;
        *v = (enc_val){.kind = ENC_V_TIME, .i = t + 10957LL * 86400000000LL};
        return 0;
    default:
        break;
    }
    return pg_bin_decode_any(oid, p, len, scratch, v, err);
}

#endif
