/* libFuzzer target: the value encoder for every class and value kind, and
 * the key encoding's round trip. Properties (abort when broken):
 *  - enc_value succeeds and is deterministic;
 *  - a key enc_key accepts passes enc_key_check, decodes, and re-encodes
 *    to the same bytes;
 *  - any bytes enc_key_check accepts decode and re-encode to themselves
 *    (the check admits exactly the canonical encodings);
 *  - under a tolerance drawn from the payload, enc_value_tol succeeds and is
 *    deterministic (grid or not), a value is within tolerance of itself, and
 *    the payload as a rule text parses or is refused (never crashes).
 * Input: [class][kind|flags][payload...]. */
#include <stdlib.h>
#include <string.h>

#include "../../merkle/enc.h"
#include "../../merkle/tol.h"

static const int key_classes[] = {ENC_INT, ENC_TEXT, ENC_UUID, ENC_BYTEA, ENC_OTHER};

static uint64_t get64(const uint8_t *p, size_t n)
{
    uint64_t x = 0;
    for (size_t k = 0; k < 8 && k < n; k++)
        x = x << 8 | p[k];
    return x;
}

/* Re-encodes the ncols decoded values of key with classes cls; must give key. */
static void roundtrip(const uint8_t *key, size_t len, const int *cls, size_t ncols)
{
    sl_buf scratch = {0}, again = {0};
    enc_val v[4];
    if (enc_key_decode(key, len, ncols, &scratch, v, NULL) != 0)
        abort();
    for (size_t c = 0; c < ncols; c++)
        if (enc_key(&again, cls[c], &v[c], NULL) != 0)
            abort();
    if (again.len != len || memcmp(again.p, key, len) != 0)
        abort();
    sl_buf_reset(&again);
    for (size_t c = 0; c < ncols; c++)
        if (enc_display(&again, &v[c]) != 0)
            abort();
    sl_buf_free(&scratch);
    sl_buf_free(&again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    int cls = 1 + data[0] % (ENC_CLASS_END - 1);
    int kind = data[1] % 7, flags = (data[1] >> 3) & ENC_STRICT;
    const uint8_t *p = data + 2;
    size_t n = size - 2;
    char dec[64 + 24]; /* enc_decimal: nd + 24 bytes, nd <= 64 */
    enc_val v = {0};
    switch (kind) {
    case 0:
        v.kind = ENC_V_NULL;
        break;
    case 1:
        v = (enc_val){.kind = ENC_V_TEXT, .p = (const char *)p, .len = n};
        break;
    case 2:
        v = (enc_val){.kind = ENC_V_BLOB, .p = (const char *)p, .len = n};
        break;
    case 3:
        v = (enc_val){.kind = ENC_V_INT, .i = (int64_t)get64(p, n)};
        break;
    case 4: {
        uint64_t bits = get64(p, n);
        v.kind = ENC_V_FLOAT;
        memcpy(&v.d, &bits, sizeof v.d);
        break;
    }
    case 5: { /* microseconds within years 1..9999 */
        const int64_t lo = -62135596800000000LL, span = 253402300799999999LL - lo;
        v = (enc_val){.kind = ENC_V_TIME, .i = lo + (int64_t)(get64(p, n) % (uint64_t)span)};
        break;
    }
    default: { /* a canonical decimal made from the payload's digits */
        char digits[64];
        size_t nd = n < 1 ? 0 : (n - 1 < sizeof digits ? n - 1 : sizeof digits);
        for (size_t k = 0; k < nd; k++)
            digits[k] = (char)('0' + p[1 + k] % 10);
        long exp = n ? (long)(int8_t)p[0] : 0;
        size_t l = enc_decimal(dec, n && (p[0] & 1), digits, nd, exp);
        if (!l)
            return 0;
        v = (enc_val){.kind = ENC_V_DEC, .p = dec, .len = l};
    }
    }
    sl_buf a = {0}, b = {0};
    if (enc_value(&a, cls, &v, flags) != 0 || enc_value(&b, cls, &v, flags) != 0)
        abort();
    if (a.len != b.len || memcmp(a.p, b.p, a.len) != 0)
        abort(); /* the encoding must be a function of the value */
    sl_buf_reset(&b);
    if (enc_display(&b, &v) != 0)
        abort();
    if (enc_key_is_supported(cls)) {
        sl_buf_reset(&a);
        if (enc_key(&a, cls, &v, NULL) == 0) {
            if (enc_key_check(a.p, a.len, &cls, 1, NULL) != 0)
                abort();
            roundtrip(a.p, a.len, &cls, 1);
        }
    }
    /* the payload as an encoded key of 1..3 columns of classes from data[0] */
    int kc[3];
    size_t ncols = 1 + data[0] % 3;
    for (size_t c = 0; c < ncols; c++)
        kc[c] = key_classes[(data[1] >> (2 * c)) % 5];
    if (enc_key_check(p, n, kc, ncols, NULL) == 0)
        roundtrip(p, n, kc, ncols);
    enc_tol t = enc_tol_exact();
    if (n >= 3) {
        t.num = (uint8_t)(p[0] % 3);
        t.eps_m = 1 + p[1] % 99;
        t.eps_e = (int8_t)p[2];
        t.text = (uint8_t)((p[0] >> 2) % 4);
        t.ts_digits = (uint8_t)((p[0] >> 4) % 7);
    }
    for (int grid = 1; grid >= 0; grid--) { /* the exact one last */
        sl_buf_reset(&a);
        sl_buf_reset(&b);
        int f = flags | (grid ? ENC_GRID : 0);
        if (enc_value_tol(&a, cls, &v, f, &t) != 0 || enc_value_tol(&b, cls, &v, f, &t) != 0)
            abort();
        if (a.len != b.len || memcmp(a.p, b.p, a.len) != 0)
            abort();
    }
    if (enc_tol_within(a.p, a.len, b.p, b.len, flags, &t) != 1)
        abort();
    char *rule = malloc(n + 1);
    if (rule) {
        enc_tol_rule r;
        memcpy(rule, p, n);
        rule[n] = 0;
        enc_tol_rule_parse(rule, &r, NULL);
        free(rule);
    }
    sl_buf_free(&a);
    sl_buf_free(&b);
    return 0;
}
