/* Tolerances: a grid cell shared means within the epsilon (soundness), the
 * exact decimal comparison decides neighbours, exact transforms hash and
 * compare alike, and a malformed tolerance is refused. Randomized parts
 * print their seed and take one as argv[1]. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../merkle/enc.h"
#include "../merkle/tol.h"
#include "tap.h"

static enc_val T(const char *s)
{
    return (enc_val){.kind = ENC_V_TEXT, .p = s, .len = strlen(s)};
}

static enc_tol rule(const char *s)
{
    enc_tol_rule r;
    sl_err e = {0};
    if (enc_tol_rule_parse(s, &r, &e)) {
        printf("# rule %s: %s\n", s, e.msg);
        return enc_tol_exact();
    }
    enc_tol t = enc_tol_exact();
    t.num = r.t.num;
    t.eps_m = r.t.eps_m;
    t.eps_e = r.t.eps_e;
    t.text = r.t.text;
    t.ts_digits = r.t.ts_digits;
    return t;
}

/* The hash-side encoding (grid) of a value of class cls. */
static void grid(sl_buf *b, int cls, const char *v, const enc_tol *t)
{
    enc_val x = T(v);
    sl_buf_reset(b);
    enc_value_tol(b, cls, &x, ENC_GRID, t);
}

static int same_cell(int cls, const char *a, const char *b, const enc_tol *t)
{
    sl_buf x = {0}, y = {0};
    grid(&x, cls, a, t);
    grid(&y, cls, b, t);
    int r = x.len == y.len && memcmp(x.p, y.p, x.len) == 0;
    sl_buf_free(&x);
    sl_buf_free(&y);
    return r;
}

/* Whether the fetched (exact) encodings of a and b are within t. */
static int within(int cls, const char *a, const char *b, const enc_tol *t)
{
    sl_buf x = {0}, y = {0};
    enc_val va = T(a), vb = T(b);
    enc_value_tol(&x, cls, &va, 0, t);
    enc_value_tol(&y, cls, &vb, 0, t);
    int r = enc_tol_within(x.p, x.len, y.p, y.len, 0, t);
    sl_buf_free(&x);
    sl_buf_free(&y);
    return r;
}

static int exact_equal(int cls, const char *a, const char *b, const enc_tol *t)
{
    sl_buf x = {0}, y = {0};
    enc_val va = T(a), vb = T(b);
    enc_value_tol(&x, cls, &va, ENC_GRID, t);
    enc_value_tol(&y, cls, &vb, ENC_GRID, t);
    int r = x.len == y.len && memcmp(x.p, y.p, x.len) == 0;
    sl_buf_free(&x);
    sl_buf_free(&y);
    return r;
}

static uint64_t rng;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

int main(int argc, char **argv)
{
    enc_tol a5 = rule("tolerance:amount=0.005");
    ok(a5.num == ENC_TOL_ABS && a5.eps_m == 5 && a5.eps_e == -3, "0.005 is 5e-3 absolute");
    enc_tol r9 = rule("tolerance:float=1e-9r");
    ok(r9.num == ENC_TOL_REL && r9.eps_m == 1 && r9.eps_e == -9, "1e-9r is relative");

    /* one step inside and outside, both sides of cell edges */
    ok(within(ENC_NUMERIC, "10", "10.005", &a5) == 1, "10 vs 10.005: within 0.005 (the edge)");
    ok(within(ENC_NUMERIC, "10", "10.0051", &a5) == 0, "10 vs 10.0051: outside");
    ok(within(ENC_NUMERIC, "-10", "-10.005", &a5) == 1, "negative, on the edge: within");
    ok(within(ENC_NUMERIC, "-10", "-10.00500001", &a5) == 0, "negative, past the edge");
    ok(within(ENC_NUMERIC, "-0.002", "0.003", &a5) == 1, "across zero: 0.005 apart");
    ok(within(ENC_NUMERIC, "-0.002", "0.0031", &a5) == 0, "across zero: 0.0051 apart");
    ok(same_cell(ENC_NUMERIC, "0.0049", "0.0051", &a5), "0.0049 and 0.0051: one cell (1)");
    ok(!same_cell(ENC_NUMERIC, "0.0024", "0.0026", &a5) &&
           within(ENC_NUMERIC, "0.0024", "0.0026", &a5) == 1,
       "0.0024 and 0.0026 straddle the edge at 0.0025: two cells, within");
    ok(same_cell(ENC_NUMERIC, "-0.0024", "0.0024", &a5), "the cell at zero has no sign");
    ok(!same_cell(ENC_NUMERIC, "-0.0026", "0.0026", &a5), "-0.0026 and 0.0026: two cells");
    ok(same_cell(ENC_NUMERIC, "0", "-0.0", &a5), "zero and -0");
    ok(same_cell(ENC_NUMERIC, "123.45", "123.4500000001", &a5) &&
           same_cell(ENC_NUMERIC, "123.45", "123.4499999999", &a5),
       "a decimal on the grid sits mid-cell: its float neighbours share its cell");
    ok(within(ENC_NUMERIC, "1e400", "1.00000000001e400", &r9) == 1 &&
           within(ENC_NUMERIC, "1e400", "1.0000000011e400", &r9) == 0,
       "huge values, relative: 1e-11 inside, 1.1e-9 outside");
    ok(within(ENC_NUMERIC, "1e400", "1e400", &a5) == 1 &&
           within(ENC_NUMERIC, "1e400", "1.0000000000000000000000001e400", &a5) == 0,
       "huge values, absolute: exact unless within 0.005");
    {
        /* digits millions of places apart (text a loosely typed column may
         * hold): decided exactly, not reported different */
        enc_tol one = rule("tolerance:x=1"), r1 = rule("tolerance:x=1r");
        ok(within(ENC_NUMERIC, "1", "1e-5000000", &one) == 1 &&
               within(ENC_NUMERIC, "1", "-1e-5000000", &one) == 0 &&
               within(ENC_NUMERIC, "1e-900000000", "-1e-900000000", &one) == 1 &&
               within(ENC_NUMERIC, "1e900000000", "-1e-900000000", &one) == 0,
           "absolute: 1 and 1e-5000000 are within 1, 1 and -1e-5000000 are not");
        ok(within(ENC_NUMERIC, "5", "1e-5000000", &r1) == 1 &&
               within(ENC_NUMERIC, "5", "-1e-5000000", &r1) == 0,
           "relative: 5 and 1e-5000000 within 1r, 5 and -1e-5000000 not");
    }
    {
        sl_buf x = {0};
        grid(&x, ENC_NUMERIC, "1e5000", &a5);
        ok(x.len > 0 && x.p[0] == 0x01, "a value too large for a cell is hashed exactly");
        sl_buf_free(&x);
    }
    ok(within(ENC_FLOAT, "NaN", "NaN", &a5) == 1 && within(ENC_FLOAT, "NaN", "0", &a5) == 0,
       "NaN equals NaN only");
    ok(within(ENC_FLOAT, "Infinity", "Infinity", &r9) == 1 &&
           within(ENC_FLOAT, "Infinity", "1e308", &r9) == 0 &&
           within(ENC_FLOAT, "-Infinity", "Infinity", &r9) == 0,
       "Infinity equals itself only");
    {
        sl_buf x = {0}, y = {0};
        enc_val n = {.kind = ENC_V_NULL}, z = T("0");
        enc_value_tol(&x, ENC_NUMERIC, &n, 0, &a5);
        enc_value_tol(&y, ENC_NUMERIC, &z, 0, &a5);
        ok(enc_tol_within(x.p, x.len, y.p, y.len, 0, &a5) == 0, "NULL vs 0: never within");
        sl_buf_free(&x);
        sl_buf_free(&y);
    }
    enc_tol p2 = rule("tolerance:f=1e-16");
    ok(within(ENC_FLOAT, "0.3", "0.30000000000000004", &p2) == 1 &&
           within(ENC_FLOAT, "0.3", "0.3000000000000003", &p2) == 0,
       "floats compare as their shortest decimal");
    ok(within(ENC_NUMERIC, "0", "0.000000001", &r9) == 0, "relative: only zero is near zero");

    /* exact transforms */
    enc_tol ms = rule("timestamp-precision:ms"), s0 = rule("timestamp-precision:s");
    ok(exact_equal(ENC_TIMESTAMP, "2024-01-01 00:00:00.1234", "2024-01-01 00:00:00.123", &ms),
       "ms: .1234 rounds to .123");
    ok(exact_equal(ENC_TIMESTAMP, "2024-01-01 00:00:00.1235", "2024-01-01 00:00:00.124", &ms),
       "ms: .1235 rounds (half away from 2000) to .124");
    ok(!exact_equal(ENC_TIMESTAMP, "2024-01-01 00:00:00.1235", "2024-01-01 00:00:00.123", &ms),
       "ms: .1235 is not .123");
    ok(exact_equal(ENC_TIMESTAMP, "1999-12-31 23:59:59.5", "1999-12-31 23:59:59", &s0) &&
           exact_equal(ENC_TIMESTAMP, "2000-01-01 00:00:00.5", "2000-01-01 00:00:01", &s0),
       "s: a half rounds away from 2000-01-01, as PostgreSQL's timestamp(0)");
    ok(exact_equal(ENC_TIMESTAMP, "1999-12-31 23:59:59.4", "1999-12-31 23:59:59", &s0),
       "s: 59.4 rounds to 59");
    /* timestamps PostgreSQL's connector sends as text (years it has and
     * T_TIME has not): rounded alike, as PostgreSQL rounds them */
    ok(exact_equal(ENC_TIMESTAMP, "12000-01-01 00:00:00.4", "12000-01-01 00:00:00", &s0) &&
           exact_equal(ENC_TIMESTAMP, "12000-12-31 23:59:59.5", "12001-01-01 00:00:00", &s0) &&
           !exact_equal(ENC_TIMESTAMP, "12000-01-01 00:00:00.5", "12000-01-01 00:00:00", &s0),
       "s: a year past 9999 (text) rounds, halves away from 2000");
    ok(exact_equal(ENC_TIMESTAMP, "0044-03-15 12:00:00.4 BC", "0044-03-15 12:00:00 BC", &s0) &&
           exact_equal(ENC_TIMESTAMP, "0044-03-15 23:59:59.5 BC", "0044-03-15 23:59:59 BC", &s0) &&
           !exact_equal(ENC_TIMESTAMP, "0044-03-15 12:00:00.6 BC", "0044-03-15 12:00:00 BC", &s0),
       "s: a BC timestamp (text) rounds, halves away from 2000");
    ok(exact_equal(ENC_TIMESTAMPTZ, "0001-12-31 23:59:59.9995+00 BC",
                   "0001-12-31 23:59:59.999+00 BC", &ms) &&
           exact_equal(ENC_TIMESTAMPTZ, "294276-12-31 23:59:59.4+00", "294276-12-31 23:59:59+00",
                       &s0),
       "ms, s: timestamptz text, BC and at PostgreSQL's last year");
    ok(exact_equal(ENC_TIMESTAMP, "9999-12-31 23:59:59.5", "10000-01-01 00:00:00", &s0) &&
           exact_equal(ENC_TIMESTAMPTZ, "0001-12-31 23:59:59.6+00 BC", "0001-01-01 00:00:00+00",
                       &s0) &&
           !exact_equal(ENC_TIMESTAMP, "9999-12-31 23:59:59.4", "10000-01-01 00:00:00", &s0),
       "s: a rounding across year 10000 or out of BC meets the form the rounded value has");
    ok(!exact_equal(ENC_TIMESTAMP, "12000-01-01 00:00:00.40", "12000-01-01 00:00:00", &s0) &&
           !exact_equal(ENC_TIMESTAMP, "12000-01-01 00:00:00.4 bc", "12000-01-01 00:00:00 bc", &s0),
       "text not in the connector's form stays exact");
    enc_tol tf = rule("trim-trailing-spaces:");
    tf.text |= ENC_TOL_FOLD;
    ok(exact_equal(ENC_TEXT, "Abc  ", "aBC", &tf), "trim and fold: 'Abc  ' = 'aBC'");
    ok(!exact_equal(ENC_TEXT, " abc", "abc", &tf), "leading spaces count");
    ok(!exact_equal(ENC_TEXT, "abc\t", "abc", &tf), "a trailing tab counts");
    ok(!exact_equal(ENC_TEXT, "\xc3\x89", "\xc3\xa9", &tf), "folding is ASCII only: É is not é");
    {
        /* a big text value hashed in place equals the copied path */
        size_t n = ENC_VALUE_INLINE_MAX + 100;
        char *big = malloc(n), *low = malloc(n);
        for (size_t i = 0; i < n; i++)
            big[i] = (char)('A' + i % 26), low[i] = (char)('a' + i % 26);
        big[n - 1] = big[n - 2] = ' ';
        enc_val va = {.kind = ENC_V_TEXT, .p = big, .len = n},
                vb = {.kind = ENC_V_TEXT, .p = low, .len = n - 2};
        int cls = ENC_TEXT;
        uint8_t ha[16], hb[16];
        sl_buf sc = {0};
        enc_hash_values_tol(&sc, &cls, &tf, &va, 1, 0, ha);
        enc_hash_values_tol(&sc, &cls, &tf, &vb, 1, 0, hb);
        ok(!memcmp(ha, hb, 16), "a big text value: trimmed and folded in place");
        enc_digest da, db;
        enc_value_digest_tol(&sc, cls, &va, 0, &tf, &da);
        enc_value_digest_tol(&sc, cls, &vb, 0, &tf, &db);
        ok(enc_digest_equal(&da, &db), "... and its digest too");
        sl_buf_free(&sc);
        free(big);
        free(low);
    }

    /* rules and their errors */
    enc_tol_rule r;
    sl_err e = {0};
    ok(enc_tol_rule_parse("tolerance:amount", &r, &e) && strstr(e.msg, "no epsilon"),
       "no epsilon: %s", e.msg);
    ok(enc_tol_rule_parse("tolerance:amount=-1", &r, &e) && strstr(e.msg, "greater than 0"),
       "negative: %s", e.msg);
    ok(enc_tol_rule_parse("tolerance:a=1.23456789012345678", &r, &e), "18 digits: %s", e.msg);
    {
        enc_tol big = rule("tolerance:a=100000000000000000000"),
                one = rule("tolerance:a=1.000000000000000000000"), mid = rule("tolerance:a=10.50"),
                lead = rule("tolerance:a=00.00500");
        ok(big.eps_m == 1 && big.eps_e == 20 && one.eps_m == 1 && one.eps_e == 0 &&
               mid.eps_m == 105 && mid.eps_e == -1 && lead.eps_m == 5 && lead.eps_e == -3,
           "trailing zeros are not significant digits: 1e20, 1.000..., 10.50, 00.00500");
        ok(enc_tol_rule_parse("tolerance:a=10000000000000000.1", &r, &e) &&
               strstr(e.msg, "17 significant"),
           "18 digits with inner zeros: %s", e.msg);
    }
    ok(enc_tol_rule_parse("timestamp-precision:ns", &r, &e), "ns: %s", e.msg);
    ok(enc_tol_rule_parse("bogus:x", &r, &e), "unknown option: %s", e.msg);
    const char *cols[] = {"id", "amount", "name", "f", "float"};
    int cls[] = {ENC_INT, ENC_NUMERIC, ENC_TEXT, ENC_FLOAT, ENC_TEXT};
    enc_tol out[5];
    const char *r1[] = {"tolerance:name=1"};
    ok(enc_tol_resolve(r1, 1, cols, cls, 1, 5, out, &e) == -1 && strstr(e.msg, "text"),
       "tolerance on text: %s", e.msg);
    const char *r2[] = {"tolerance:nosuch=1"};
    ok(enc_tol_resolve(r2, 1, cols, cls, 1, 5, out, &e) == -1, "unknown column: %s", e.msg);
    const char *r3[] = {"tolerance:id=1"};
    ok(enc_tol_resolve(r3, 1, cols, cls, 1, 5, out, &e) == -1, "key column: %s", e.msg);
    const char *r4[] = {"tolerance:amount=0.01", "tolerance:numeric=1", "case-fold:"};
    ok(enc_tol_resolve(r4, 3, cols, cls, 1, 5, out, &e) == 0 && out[1].eps_m == 1 &&
           out[1].eps_e == -2 && out[2].text == ENC_TOL_FOLD && out[4].text == ENC_TOL_FOLD &&
           out[3].num == ENC_TOL_EXACT && out[0].num == ENC_TOL_EXACT,
       "a column's rule wins over its class's, given first or not");
    const char *r5[] = {"tolerance:float=1"};
    ok(enc_tol_resolve(r5, 1, cols, cls, 1, 5, out, &e) == -1,
       "a column named like a class is the column (text \"float\"): %s", e.msg);
    enc_tol bad = a5;
    ok(enc_tol_check(&bad, ENC_TEXT, &e) == -1, "check: an epsilon on text refused");
    bad.eps_m = 0;
    ok(enc_tol_check(&bad, ENC_NUMERIC, &e) == -1, "check: a zero epsilon refused");
    bad = enc_tol_exact();
    bad.ts_digits = 7;
    ok(enc_tol_check(&bad, ENC_TIMESTAMP, &e) == -1, "check: 7 digits refused");

    /* soundness, randomized: a shared cell always means within; within is
     * what integer arithmetic says */
    rng = argc > 1 ? strtoull(argv[1], NULL, 10) : (uint64_t)time(NULL);
    printf("# seed %llu\n", (unsigned long long)rng);
    rng |= 1;
    int bad_cell = 0, bad_within = 0, shared = 0;
    for (int i = 0; i < 20000; i++) {
        int k = (int)(next() % 5); /* decimals of a, b */
        long long ia = (long long)(next() % 2000001) - 1000000,
                  ib = ia + (long long)(next() % 41) - 20;
        long long em = 1 + (long long)(next() % 15); /* eps = em * 10^-k */
        int relative = next() % 2;
        char sa[64], sb[64], se[64];
        snprintf(sa, sizeof sa, "%lldE-%d", ia, k);
        snprintf(sb, sizeof sb, "%lldE-%d", ib, k);
        snprintf(se, sizeof se, "tolerance:x=%lldE-%d%s", em, relative ? k + 3 : k,
                 relative ? "r" : "");
        enc_tol t = rule(se);
        long long d = llabs(ia - ib);
        long long mx = llabs(ia) > llabs(ib) ? llabs(ia) : llabs(ib);
        /* relative: d * 10^-k <= em * 10^-(k+3) * mx * 10^-k */
        __int128 scale = 1;
        for (int q = 0; q < k + 3; q++)
            scale *= 10;
        int truth = relative ? (__int128)d * scale <= (__int128)em * mx : d <= em;
        int w = within(ENC_NUMERIC, sa, sb, &t), c = same_cell(ENC_NUMERIC, sa, sb, &t);
        shared += c;
        if (c && !truth && bad_cell++ < 3)
            printf("# same cell, not within: %s %s %s\n", sa, sb, se);
        if (w != truth && bad_within++ < 3)
            printf("# within %d, truth %d: %s %s %s\n", w, truth, sa, sb, se);
    }
    ok(!bad_cell, "20000 random pairs: same cell implies within (%d shared a cell)", shared);
    ok(!bad_within, "20000 random pairs: within agrees with integer arithmetic");
    return done_testing();
}
