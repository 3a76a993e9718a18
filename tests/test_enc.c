/* Canonical encoding v2: equal values encode equally across the forms
 * databases hand them out in; different values never do. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../connectors/pg_bin.h"
#include "../merkle/enc.h"
#include "tap.h"

static enc_val T(const char *s)
{
    return (enc_val){.kind = ENC_V_TEXT, .p = s, .len = strlen(s)};
}
static enc_val I(long long i)
{
    return (enc_val){.kind = ENC_V_INT, .i = i};
}
static enc_val F(double d)
{
    return (enc_val){.kind = ENC_V_FLOAT, .d = d};
}
static enc_val B(const char *s, size_t n)
{
    return (enc_val){.kind = ENC_V_BLOB, .p = s, .len = n};
}
static enc_val N(void)
{
    return (enc_val){.kind = ENC_V_NULL};
}

static int same(int ca, enc_val a, int cb, enc_val b, int flags)
{
    sl_buf x = {0}, y = {0};
    enc_value(&x, ca, &a, flags);
    enc_value(&y, cb, &b, flags);
    int r = x.len == y.len && memcmp(x.p, y.p, x.len) == 0;
    sl_buf_free(&x);
    sl_buf_free(&y);
    return r;
}

static int key_cmp(int cls, enc_val a, enc_val b)
{
    sl_buf x = {0}, y = {0};
    sl_err e = {0};
    enc_key(&x, cls, &a, &e);
    enc_key(&y, cls, &b, &e);
    size_t m = x.len < y.len ? x.len : y.len;
    int c = memcmp(x.p, y.p, m);
    if (!c)
        c = x.len < y.len ? -1 : x.len > y.len;
    sl_buf_free(&x);
    sl_buf_free(&y);
    return c;
}

/* A decimal's text: sign, `ip` integer digits, "." and `fp` fraction
 * digits when fp is not empty (caller frees). */
static char *dec_text(int neg, const char *ip, const char *fp)
{
    size_t a = strlen(ip), b = strlen(fp);
    char *s = malloc(a + b + 3), *o = s;
    if (neg)
        *o++ = '-';
    memcpy(o, ip, a);
    o += a;
    if (b) {
        *o++ = '.';
        memcpy(o, fp, b);
        o += b;
    }
    *o = '\0';
    return s;
}

/* PostgreSQL's binary numeric for the same value, as numeric_send makes
 * it: base-10000 groups without leading or trailing zero groups, dscale the
 * fraction's length. pad_groups appends that many zero groups (a sender
 * need not strip them). Returns the length written to out (caller frees). */
static size_t pg_numeric(int neg, const char *ip, const char *fp, int pad_groups, char **out)
{
    size_t a = strlen(ip), b = strlen(fp);
    size_t lead = (4 - a % 4) % 4, tail = (4 - b % 4) % 4;
    size_t nd = lead + a + b + tail;
    char *d = malloc(nd + 1);
    memset(d, '0', lead);
    memcpy(d + lead, ip, a);
    memcpy(d + lead + a, fp, b);
    memset(d + lead + a + b, '0', tail);
    size_t ng = nd / 4, first = 0, last = ng;
    long weight = (long)((lead + a) / 4) - 1;
    while (first < last && memcmp(d + 4 * first, "0000", 4) == 0) {
        first++;
        weight--;
    }
    while (last > first && memcmp(d + 4 * (last - 1), "0000", 4) == 0)
        last--;
    size_t g = last - first + (size_t)pad_groups;
    if (g == (size_t)pad_groups)
        weight = 0;
    char *p = calloc(1, 8 + 2 * g);
    uint16_t h[4] = {(uint16_t)g, (uint16_t)weight, neg ? 0x4000 : 0, (uint16_t)b};
    for (int k = 0; k < 4; k++) {
        p[2 * k] = (char)(h[k] >> 8);
        p[2 * k + 1] = (char)h[k];
    }
    for (size_t k = first; k < last; k++) {
        unsigned x = (unsigned)((d[4 * k] - '0') * 1000 + (d[4 * k + 1] - '0') * 100 +
                                (d[4 * k + 2] - '0') * 10 + (d[4 * k + 3] - '0'));
        p[8 + 2 * (k - first)] = (char)(x >> 8);
        p[8 + 2 * (k - first) + 1] = (char)x;
    }
    free(d);
    *out = p;
    return 8 + 2 * g;
}

/* Whether the binary numeric of (neg, ip, fp) encodes as `want` read as
 * text does, and as the value's own text does. */
static int bin_is(int neg, const char *ip, const char *fp, int pad, const char *want)
{
    char *bin, *txt = dec_text(neg, ip, fp);
    size_t n = pg_numeric(neg, ip, fp, pad, &bin);
    sl_buf scratch = {0};
    sl_err e = {0};
    enc_val v;
    int r = pg_bin_decode(1700, bin, n, &scratch, &v, &e) == 0 &&
            same(ENC_NUMERIC, v, ENC_NUMERIC, T(want), 0) &&
            same(ENC_NUMERIC, v, ENC_NUMERIC, T(txt), 0);
    sl_buf_free(&scratch);
    free(bin);
    free(txt);
    return r;
}

/* n copies of c, NUL-terminated (caller frees). */
static char *rep(char c, size_t n)
{
    char *s = malloc(n + 1);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* Numerics across PostgreSQL's whole range (131072 integer digits, 16383
 * fraction digits), as text and as binary: equal values encode alike
 * whatever their scale, and a difference in the last digit is seen. */
static void test_long_numerics(void)
{
    char *z600 = rep('0', 600), *z16383 = rep('0', 16383), *z1000 = rep('0', 1000);
    char *one_scaled = dec_text(0, "1", z600);
    ok(same(ENC_NUMERIC, T(one_scaled), ENC_NUMERIC, T("1"), 0) &&
           same(ENC_NUMERIC, T(one_scaled), ENC_INT, I(1), 0),
       "text 1.(600 zeros) is 1");
    char *one_max = dec_text(1, "1", z16383);
    ok(same(ENC_NUMERIC, T(one_max), ENC_NUMERIC, T("-1"), 0), "text -1.(16383 zeros) is -1");
    char *zero_max = dec_text(0, "0", z16383);
    ok(same(ENC_NUMERIC, T(zero_max), ENC_NUMERIC, T("0"), 0) &&
           same(ENC_NUMERIC, T("-0.000"), ENC_NUMERIC, T("0"), 0),
       "0.(16383 zeros) and -0.000 are 0");
    char *ip = malloc(131073);
    ip[0] = '1';
    memset(ip + 1, '0', 131071);
    ip[131072] = '\0';
    char *huge = dec_text(0, ip, z16383);
    ok(same(ENC_NUMERIC, T(huge), ENC_NUMERIC, T("1e131071"), 0) &&
           same(ENC_NUMERIC, T(ip), ENC_NUMERIC, T("1E+131071"), 0),
       "10^131071 with 16383 fraction zeros is 1e131071");
    /* many significant digits on both sides, differing in the last one */
    char *ip9 = rep('9', 131072), *fp9 = rep('9', 16383), *fp9b = rep('9', 16383);
    fp9b[16382] = '8';
    char *a = dec_text(0, ip9, fp9), *b = dec_text(0, ip9, fp9b);
    char *a0 = malloc(strlen(a) + 1001);
    memcpy(a0, a, strlen(a));
    memcpy(a0 + strlen(a), z1000, 1001); /* 1000 more trailing zeros */
    ok(same(ENC_NUMERIC, T(a), ENC_NUMERIC, T(a0), 0), "147455 digits equal with more zeros");
    ok(!same(ENC_NUMERIC, T(a), ENC_NUMERIC, T(b), 0),
       "147455 digits differing in the 16383rd fraction digit are not equal");
    ok(!same(ENC_NUMERIC, T(one_scaled), ENC_NUMERIC, T("1.0000000001"), 0) &&
           !same(ENC_NUMERIC, T("0.1"), ENC_NUMERIC, T("0.01"), 0) &&
           same(ENC_NUMERIC, T("0.0000001"), ENC_NUMERIC, T("1e-7"), 0) &&
           same(ENC_NUMERIC, T("100.00"), ENC_NUMERIC, T("1e2"), 0) &&
           same(ENC_NUMERIC, T("10.010"), ENC_NUMERIC, T("1001E-2"), 0),
       "zeros inside a number and after the point still count");
    ok(same(ENC_NUMERIC, T("NaN"), ENC_NUMERIC, F(0.0 / 0.0), 0) &&
           same(ENC_NUMERIC, T("-Infinity"), ENC_NUMERIC, F(-1.0 / 0.0), 0),
       "NaN and -Infinity as text and as floats");
    /* binary: PostgreSQL's send format, long and short */
    ok(bin_is(0, "1", z600, 0, "1") && bin_is(0, "1", z600, 3, "1") &&
           bin_is(1, "1", z16383, 0, "-1"),
       "binary 1 with scale 600 or 16383 (stored zero groups or not) is 1");
    ok(bin_is(0, "0", z16383, 0, "0") && bin_is(1, "0", "000", 0, "0"),
       "binary zero with scale is 0");
    char *ip1000 = malloc(1002);
    ip1000[0] = '1';
    memcpy(ip1000 + 1, z1000, 1001);
    ok(bin_is(0, ip1000, "", 0, "1e1000") && bin_is(1, ip1000, "00", 0, "-1e1000"),
       "binary 10^1000 is 1e1000");
    ok(bin_is(0, ip9, fp9, 0, a) && bin_is(0, ip9, fp9b, 0, b) && !bin_is(0, ip9, fp9b, 0, a),
       "binary 147455 digits encode as their text; a last-digit change is seen");
    ok(bin_is(1, "123", "4500", 0, "-123.45") && bin_is(0, "0", "0000001", 0, "1e-7") &&
           bin_is(0, "12345678901234567890", "5", 0, "12345678901234567890.5"),
       "binary short numerics (the fast path and just past it)");
    char *bin;
    sl_buf scratch = {0};
    sl_err e = {0};
    enc_val v;
    size_t n = pg_numeric(0, "1", "5", 0, &bin);
    bin[7] = 0; /* dscale 0: numeric_out would print "1", hiding the .5 */
    ok(pg_bin_decode(1700, bin, n, &scratch, &v, &e) == 0 &&
           same(ENC_NUMERIC, v, ENC_NUMERIC, T("1"), 0),
       "binary digits past dscale are cut, as numeric_out prints them");
    free(bin);
    sl_buf_free(&scratch);
    free(z600), free(z16383), free(z1000), free(one_scaled), free(one_max), free(zero_max);
    free(ip), free(huge), free(ip9), free(fp9), free(fp9b), free(a), free(b), free(a0);
    free(ip1000);
}

/* enc_hash_values and the digests must agree with the plain encoding for
 * every class and form, small and big (the streaming path). */
static int hashes_agree(const int *cls, const enc_val *v, size_t n, int flags)
{
    sl_buf a = {0}, s = {0};
    uint8_t h1[16], h2[16];
    enc_values(&a, cls, v, n, flags);
    enc_hash(a.p, a.len, h1);
    int r = enc_hash_values(&s, cls, v, n, flags, h2) == 0 && memcmp(h1, h2, 16) == 0;
    for (size_t k = 0; r && k < n; k++) {
        enc_digest d1, d2;
        sl_buf_reset(&a);
        enc_value(&a, cls[k], &v[k], flags);
        r = enc_digest_encoded(a.p, a.len, flags, &d1) == 0 &&
            enc_value_digest(&s, cls[k], &v[k], flags, &d2) == 0 && enc_digest_equal(&d1, &d2);
    }
    sl_buf_free(&a);
    sl_buf_free(&s);
    return r;
}

static void big_values(void)
{
    size_t n = 3 * ENC_VALUE_INLINE_MAX + 7;
    char *t = malloc(2 * n + 3);
    for (size_t i = 0; i < n; i++)
        t[i] = (char)('a' + i % 26);
    char *hx = malloc(2 * n + 3); /* PostgreSQL's bytea text of the same bytes */
    hx[0] = '\\';
    hx[1] = 'x';
    for (size_t i = 0; i < n; i++)
        snprintf(hx + 2 + 2 * i, 3, "%02x", (unsigned char)t[i]);
    int cls[] = {ENC_INT, ENC_TEXT, ENC_BYTEA, ENC_BYTEA, ENC_OTHER, ENC_JSON, ENC_BYTEA, ENC_TEXT};
    enc_val v[] = {
        I(7),   B(t, n),         B(t, n), {.kind = ENC_V_TEXT, .p = hx, .len = 2 + 2 * n},
        T("x"), T("{\"a\": 1}"), N(),     {.kind = ENC_V_TEXT, .p = t, .len = n}};
    for (int flags = 0; flags <= ENC_STRICT; flags++) {
        ok(hashes_agree(cls, v, 8, flags), "big text and bytea hash in place as encoded (flags %d)",
           flags);
        ok(hashes_agree(cls, v, 1, flags), "a small row hashes as encoded (flags %d)", flags);
    }
    hx[2 + n] = 'z'; /* not hex: the fallback form, as the encoder does */
    ok(hashes_agree(cls + 3, v + 3, 1, 0), "big bytea text that is not hex hashes as encoded");
    char *js = malloc(n + 16);
    size_t jl = (size_t)snprintf(js, n + 16, "{\"b\": \"%.*s\", \"a\": 1}", (int)(n - 30), t);
    enc_val jv = {.kind = ENC_V_TEXT, .p = js, .len = jl};
    int jc = ENC_JSON;
    ok(hashes_agree(&jc, &jv, 1, 0), "big json is encoded, then hashed");
    enc_digest d1, d2;
    sl_buf s = {0};
    enc_val last = {.kind = ENC_V_TEXT, .p = t, .len = n};
    enc_value_digest(&s, ENC_TEXT, &last, 0, &d1);
    t[n - 1] ^= 1;
    enc_value_digest(&s, ENC_TEXT, &last, 0, &d2);
    ok(d1.len == n && !enc_digest_equal(&d1, &d2), "a change in the last byte changes the digest");
    enc_val nul = N(), empty = T("");
    enc_value_digest(&s, ENC_TEXT, &nul, 0, &d1);
    enc_value_digest(&s, ENC_TEXT, &empty, 0, &d2);
    ok(!enc_digest_equal(&d1, &d2), "NULL and '' have different digests");
    sl_buf_reset(&s);
    enc_val u8 = T("\xc3\xa9\xc3\xa9"); /* two 2-byte characters */
    enc_display_prefix(&s, &u8, 3);
    ok(s.len == 2, "a display prefix ends at a character boundary (%zu bytes)", s.len);
    sl_buf_reset(&s);
    enc_val bl = B("\x01\xff\x02", 3);
    enc_display_prefix(&s, &bl, 6);
    ok(s.len == 6 && memcmp(s.p, "\\x01ff", 6) == 0, "a bytea prefix is its hex: %.*s", (int)s.len,
       (const char *)s.p);
    sl_buf_free(&s);
    free(js);
    free(hx);
    free(t);
}

int main(void)
{
    test_long_numerics();
    big_values();
    /* numbers */
    ok(same(ENC_NUMERIC, T("10.50"), ENC_NUMERIC, T("10.5"), 0), "numeric 10.50 equals 10.5");
    ok(same(ENC_NUMERIC, T("10.5"), ENC_INT, I(10), 0) == 0, "10.5 differs from integer 10");
    ok(same(ENC_INT, I(10), ENC_FLOAT, F(10.0), 0), "integer 10 equals real 10.0");
    ok(same(ENC_NUMERIC, T("10.00"), ENC_FLOAT, F(10.0), 0), "numeric 10.00 equals real 10.0");
    ok(same(ENC_INT, T("10"), ENC_INT, I(10), 0), "text '10' from PostgreSQL equals int 10");
    ok(same(ENC_NUMERIC, T("0.050"), ENC_NUMERIC, T(".05"), 0), "0.050 equals .05");
    ok(same(ENC_NUMERIC, T("-0.0"), ENC_NUMERIC, T("0"), 0), "-0.0 equals 0");
    ok(same(ENC_NUMERIC, T("100"), ENC_NUMERIC, T("1e2"), 0), "100 equals 1e2");
    ok(!same(ENC_NUMERIC, T("100"), ENC_NUMERIC, T("10"), 0), "100 differs from 10");
    ok(!same(ENC_NUMERIC, T("0.1"), ENC_NUMERIC, T("0.01"), 0), "0.1 differs from 0.01");
    ok(!same(ENC_NUMERIC, T("-5"), ENC_NUMERIC, T("5"), 0), "-5 differs from 5");
    ok(same(ENC_FLOAT, T("0.1"), ENC_FLOAT, F(0.1), 0), "float text 0.1 equals double 0.1");
    ok(same(ENC_FLOAT, T("1.10"), ENC_FLOAT, F(1.1), 0), "float 1.10 equals 1.1");
    ok(!same(ENC_FLOAT, F(0.1), ENC_FLOAT, F(0.1 + 1e-16), 0), "neighbouring doubles differ");
    ok(same(ENC_FLOAT, T("NaN"), ENC_FLOAT, F(0.0 / 0.0), 0), "NaN equals NaN");
    ok(same(ENC_FLOAT, T("-Infinity"), ENC_FLOAT, F(-1.0 / 0.0), 0), "-Infinity read alike");
    ok(!same(ENC_INT, I(10), ENC_FLOAT, F(10.0), ENC_STRICT), "strict mode keeps int vs float");
    ok(!same(ENC_NUMERIC, T("abc"), ENC_TEXT, T("abc"), 0), "unparsable numeric is not text");

    /* NULL, text, bool */
    ok(!same(ENC_TEXT, N(), ENC_TEXT, T(""), 0), "NULL differs from empty string");
    ok(!same(ENC_INT, N(), ENC_INT, I(0), 0), "NULL differs from zero");
    ok(same(ENC_TEXT, T("Zürich ✓"), ENC_TEXT, B("Zürich ✓", strlen("Zürich ✓")), 0),
       "non-ASCII text compares by UTF-8 bytes");
    ok(!same(ENC_TEXT, T("abc"), ENC_TEXT, T("abc "), 0), "trailing space matters");
    ok(same(ENC_TEXT, T("x"), ENC_OTHER, T("x"), 0), "fallback text equals text");
    ok(same(ENC_BOOL, T("t"), ENC_BOOL, I(1), 0), "bool 't' equals 1");
    ok(same(ENC_BOOL, T("false"), ENC_BOOL, I(0), 0), "bool 'false' equals 0");
    ok(!same(ENC_BOOL, T("t"), ENC_BOOL, T("f"), 0), "true differs from false");

    /* bytea, uuid */
    ok(same(ENC_BYTEA, T("\\x00ff41"), ENC_BYTEA,
            B("\0\xff"
              "A",
              3),
            0),
       "bytea hex equals blob");
    ok(!same(ENC_BYTEA, T("\\x00ff"), ENC_BYTEA, T("\\x00fe"), 0), "different bytes differ");
    ok(same(ENC_UUID, T("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"), ENC_UUID,
            T("{a0eebc999c0b4ef8bb6d6bb9bd380a11}"), 0),
       "uuid spellings are one value");
    ok(same(ENC_UUID, T("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), ENC_UUID,
            B("\xa0\xee\xbc\x99\x9c\x0b\x4e\xf8\xbb\x6d\x6b\xb9\xbd\x38\x0a\x11", 16), 0),
       "uuid text equals 16-byte blob");

    /* dates and times */
    ok(same(ENC_TIMESTAMPTZ, T("2024-03-01 12:00:00+00"), ENC_TIMESTAMPTZ,
            T("2024-03-01 14:00:00+02"), 0),
       "timestamptz read under UTC equals the same instant read under +02");
    ok(same(ENC_TIMESTAMPTZ, T("2024-03-01 12:00:00+00"), ENC_TIMESTAMPTZ,
            T("2024-03-01 07:30:00-04:30"), 0),
       "timestamptz with a -04:30 offset");
    ok(same(ENC_TIMESTAMPTZ, T("2024-03-01T12:00:00Z"), ENC_TIMESTAMP, T("2024-03-01 12:00:00"), 0),
       "ISO 'T...Z' equals a naive UTC timestamp");
    ok(same(ENC_TIMESTAMP, T("2024-03-01 12:00:00.5"), ENC_TIMESTAMP,
            T("2024-03-01 12:00:00.500000"), 0),
       "fractional seconds normalize");
    ok(!same(ENC_TIMESTAMP, T("2024-03-01 12:00:00.000001"), ENC_TIMESTAMP,
             T("2024-03-01 12:00:00"), 0),
       "a microsecond matters");
    ok(same(ENC_DATE, T("2024-02-29"), ENC_DATE, T("2024-02-29"), 0), "date equals itself");
    ok(!same(ENC_DATE, T("2024-02-29"), ENC_DATE, T("2024-03-01"), 0), "next day differs");
    ok(!same(ENC_DATE, T("1969-12-31"), ENC_DATE, T("1970-01-01"), 0), "pre-epoch date differs");

    /* json */
    ok(same(ENC_JSON, T("{\"b\": 1, \"a\": [1, 2.0, \"x\"]}"), ENC_JSON,
            T("{\"a\":[1,2,\"x\"],\"b\":1.0}"), 0),
       "json with reordered keys, spacing and 2.0 vs 2 is one value");
    ok(same(ENC_JSON, T("{\"a\":\"\\u00e9\"}"), ENC_JSON, T("{\"a\":\"é\"}"), 0),
       "json \\u escapes equal UTF-8");
    ok(same(ENC_JSON, T("{\"a\":1,\"a\":2}"), ENC_JSON, T("{\"a\":2}"), 0),
       "json duplicate keys: last wins, as jsonb");
    ok(!same(ENC_JSON, T("{\"a\":1}"), ENC_JSON, T("{\"a\":\"1\"}"), 0),
       "json 1 differs from \"1\"");
    ok(!same(ENC_JSON, T("[1,2]"), ENC_JSON, T("[2,1]"), 0), "json array order matters");

    /* keys: order-preserving */
    ok(key_cmp(ENC_INT, I(-5), I(3)) < 0, "int key -5 < 3");
    ok(key_cmp(ENC_INT, I(-1), I(-2)) > 0, "int key -1 > -2");
    ok(key_cmp(ENC_INT, T("42"), I(42)) == 0, "int key text and int agree");
    ok(key_cmp(ENC_TEXT, T("a"), T("ab")) < 0, "text key prefix sorts first");
    ok(key_cmp(ENC_TEXT, T("B"), T("a")) < 0, "text key bytewise (C collation)");
    ok(key_cmp(ENC_TEXT, T("é"), T("z")) > 0, "text key non-ASCII after ASCII");
    {
        enc_val a0 = B("a\0", 2), a = B("a", 1);
        ok(key_cmp(ENC_TEXT, a, a0) < 0, "text key with NUL sorts after its prefix");
    }
    {
        /* composite (text, int): ("a", 9) < ("ab", 1) */
        sl_buf x = {0}, y = {0};
        sl_err e = {0};
        enc_val a = T("a"), b = T("ab"), i9 = I(9), i1 = I(1);
        enc_key(&x, ENC_TEXT, &a, &e);
        enc_key(&x, ENC_INT, &i9, &e);
        enc_key(&y, ENC_TEXT, &b, &e);
        enc_key(&y, ENC_INT, &i1, &e);
        ok(memcmp(x.p, y.p, x.len < y.len ? x.len : y.len) < 0, "composite key order");
        enc_val out[2];
        sl_buf scratch = {0};
        int rc = enc_key_decode(x.p, x.len, 2, &scratch, out, &e);
        ok(rc == 0 && out[0].kind == ENC_V_TEXT && out[0].len == 1 && out[0].p[0] == 'a' &&
               out[1].kind == ENC_V_INT && out[1].i == 9,
           "composite key decodes back to ('a', 9)");
        ok(enc_key_decode(x.p, x.len - 1, 2, &scratch, out, &e) != 0, "truncated key is an error");
        sl_buf_free(&x);
        sl_buf_free(&y);
        sl_buf_free(&scratch);
    }
    {
        sl_buf x = {0};
        sl_err e = {0};
        enc_val n = N();
        ok(enc_key(&x, ENC_INT, &n, &e) != 0 && strstr(e.msg, "NULL"), "NULL key is an error: %s",
           e.msg);
        enc_val up = T("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11");
        ok(enc_key(&x, ENC_UUID, &up, &e) != 0 && strstr(e.msg, "canonical"),
           "uppercase text uuid key is refused (text order would differ): %s", e.msg);
        enc_val low = T("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
        ok(enc_key(&x, ENC_UUID, &low, &e) == 0, "canonical text uuid key is accepted");
        enc_val f = F(1.5);
        ok(enc_key(&x, ENC_FLOAT, &f, &e) != 0, "float key is refused: %s", e.msg);
        sl_buf_free(&x);
    }
    {
        /* the forms a binary reader hands over encode as the text forms do */
        static const long long ints[] = {0,    1,    -1,         10,          -10, 100, 120,
                                         1000, 1001, 1000000000, -9000000000, 7,   -120};
        int all = 1;
        char txt[32];
        for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++) {
            snprintf(txt, sizeof txt, "%lld", ints[k]);
            all &= same(ENC_INT, I(ints[k]), ENC_INT, T(txt), 0) &&
                   same(ENC_NUMERIC, I(ints[k]), ENC_NUMERIC, T(txt), 0);
        }
        all &= same(ENC_INT, I(INT64_MIN), ENC_INT, T("-9223372036854775808"), 0) &&
               same(ENC_INT, I(INT64_MAX), ENC_INT, T("9223372036854775807"), 0) &&
               same(ENC_INT, I(1000000000000000000LL), ENC_INT, T("1000000000000000000"), 0);
        ok(all, "integers encode as their decimal text, trailing zeros and extremes included");
        char dst[64];
        size_t n = enc_decimal(dst, 0, "0012340", 7, -3);
        enc_val d = {.kind = ENC_V_DEC, .p = dst, .len = n};
        ok(same(ENC_NUMERIC, d, ENC_NUMERIC, T("12.340"), 0),
           "digits 0012340 e-3 encode as 12.340");
        n = enc_decimal(dst, 1, "000", 3, 5);
        d.len = n;
        ok(n == 1 && same(ENC_NUMERIC, d, ENC_NUMERIC, T("0"), 0), "all zeros are 0");
        static char big[2000], bigdst[2100];
        memset(big, '7', sizeof big);
        memset(big + 1000, '0', 1000);
        n = enc_decimal(bigdst, 0, big, sizeof big, -3);
        ok(n == 1000 + 4 && memcmp(bigdst + 1000, "E997", 4) == 0,
           "2000 digits, 1000 of them trailing zeros: 1000 digits E997 (no length limit)");
        sl_buf shown = {0};
        n = enc_decimal(dst, 1, "12340", 5, -7);
        d.len = n;
        enc_display(&shown, &d);
        ok(shown.len == 9 && memcmp(shown.p, "-0.001234", 9) == 0,
           "a canonical decimal displays as plain decimal: %.*s", (int)shown.len,
           (const char *)shown.p);
        sl_buf_free(&shown);
        enc_val tm = {.kind = ENC_V_TIME, .i = 1672576496789000LL}; /* 2023-01-01 12:34:56.789 */
        ok(same(ENC_TIMESTAMPTZ, tm, ENC_TIMESTAMPTZ, T("2023-01-01 12:34:56.789+00"), 0) &&
               same(ENC_TIMESTAMP, tm, ENC_TIMESTAMP, T("2023-01-01 12:34:56.789"), 0),
           "microseconds since 1970 encode as the ISO text");
        enc_val before = {.kind = ENC_V_TIME, .i = -1};
        ok(same(ENC_TIMESTAMP, before, ENC_TIMESTAMP, T("1969-12-31 23:59:59.999999"), 0),
           "and before 1970");
        enc_val day = {.kind = ENC_V_TIME, .i = -719162LL * 86400000000LL};
        ok(same(ENC_DATE, day, ENC_DATE, T("0001-01-01"), 0), "a date at midnight encodes as it");
    }
    ok(enc_class_common(ENC_INT, ENC_FLOAT, 0) == ENC_NUMERIC, "int and float compare as numbers");
    ok(enc_class_common(ENC_UUID, ENC_TEXT, 0) == ENC_UUID, "text side is read as uuid");
    ok(enc_class_common(ENC_UUID, ENC_INT, 0) == 0, "uuid and int are incompatible");
    ok(enc_class_common(ENC_INT, ENC_FLOAT, ENC_STRICT) == 0, "strict: int and float differ");
    return done_testing();
}
