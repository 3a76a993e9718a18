/* Canonical encoding v1: equal values encode equally across the forms
 * databases hand them out in; different values never do. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

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
    sl_err e;
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

int main(void)
{
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
        sl_err e;
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
        sl_err e = {{0}};
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
        char big[600];
        memset(big, '7', sizeof big);
        ok(enc_decimal(dst, 0, big, ENC_DEC_MAX + 1, 0) == 0,
           "more than ENC_DEC_MAX digits: no canonical form (the text path keeps such as text)");
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
