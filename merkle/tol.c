#include "tol.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* A cell index is written in decimal; a value whose index would need more
 * digits than this is hashed exactly instead (still sound: only equal
 * values share an exact encoding). */
#define CELL_MAX_DIGITS 4096

/* enc_tol_within aligns two numbers digit by digit, gaps without digits
 * narrowed (narrow_gaps); two whose digits still span more than this (a
 * number of millions of digits itself) are reported unequal rather than
 * computed. */
#define WITHIN_MAX_DIGITS (1u << 22)

enc_tol enc_tol_exact(void)
{
    return (enc_tol){.ts_digits = 6};
}

int enc_tol_is_exact(const enc_tol *t)
{
    return !t || (t->num == ENC_TOL_EXACT && t->text == 0 && t->ts_digits >= 6);
}

static int is_number_class(int c)
{
    return c == ENC_INT || c == ENC_NUMERIC || c == ENC_FLOAT;
}
static int is_time_class(int c)
{
    return c == ENC_TIMESTAMP || c == ENC_TIMESTAMPTZ;
}
static int is_text_class(int c)
{
    return c == ENC_TEXT || c == ENC_OTHER;
}

int enc_tol_check(const enc_tol *t, int cls, sl_err *err)
{
    if (t->num > ENC_TOL_REL || t->text > (ENC_TOL_TRIM | ENC_TOL_FOLD) || t->ts_digits > 6)
        return sl_err_setc(err, SL_INVALID, "tolerance has an unknown setting");
    if (t->num != ENC_TOL_EXACT) {
        if (!is_number_class(cls))
            return sl_err_setc(err, SL_INVALID, "tolerance: an epsilon on a %s column",
                               enc_class_name(cls));
        if (t->eps_m < 1 || t->eps_m >= 100000000000000000ULL || t->eps_e < -ENC_TOL_EPS_EXP ||
            t->eps_e > ENC_TOL_EPS_EXP)
            return sl_err_setc(err, SL_INVALID, "tolerance: epsilon out of range");
    }
    if (t->text && !is_text_class(cls))
        return sl_err_setc(err, SL_INVALID, "tolerance: a text setting on a %s column",
                           enc_class_name(cls));
    if (t->ts_digits < 6 && !is_time_class(cls))
        return sl_err_setc(err, SL_INVALID, "tolerance: a timestamp precision on a %s column",
                           enc_class_name(cls));
    return 0;
}

/* ---- rules --------------------------------------------------------------- */

static const struct {
    const char *name; /* as in "name:value" and, with "--", the option */
    int opt;
} opts[] = {{"tolerance", ENC_TOL_OPT_TOLERANCE},
            {"timestamp-precision", ENC_TOL_OPT_TS_PRECISION},
            {"trim-trailing-spaces", ENC_TOL_OPT_TRIM},
            {"case-fold", ENC_TOL_OPT_FOLD}};

static const char *opt_name(int opt)
{
    for (size_t i = 0; i < sizeof opts / sizeof *opts; i++)
        if (opts[i].opt == opt)
            return opts[i].name;
    return "?";
}

/* Reads a positive decimal literal (digits[.digits][e[+-]digits]) of at
 * most ENC_TOL_EPS_DIGITS significant digits into m * 10^e. 0, or -1 with
 * why (a static string). */
static int read_eps(const char *s, size_t n, uint64_t *m, int32_t *e, const char **why)
{
    size_t i = 0, sig = 0, zeros = 0, zfrac = 0; /* zeros: after the last other digit */
    long long exp = 0;
    int digits = 0;
    uint64_t v = 0;
    if (i < n && s[i] == '-') {
        *why = "must be greater than 0";
        return -1;
    }
    if (i < n && s[i] == '+')
        i++;
    for (int frac = 0;; i++) {
        if (i < n && s[i] == '.' && !frac) {
            frac = 1;
            continue;
        }
        if (i >= n || !isdigit((unsigned char)s[i]))
            break;
        digits = 1;
        if (v == 0 && s[i] == '0') { /* a leading zero */
            exp -= frac;
            continue;
        }
        if (s[i] == '0') { /* significant only if another digit follows: 1e20 is 1 digit */
            zeros++;
            zfrac += (size_t)frac;
            continue;
        }
        if ((sig += zeros + 1) > ENC_TOL_EPS_DIGITS) {
            *why = "has more than 17 significant digits";
            return -1;
        }
        for (; zeros; zeros--)
            v *= 10;
        exp -= (long long)zfrac + frac;
        zfrac = 0;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    exp += (long long)(zeros - zfrac); /* trailing zeros of the integer part */
    if (!digits) {
        *why = "is not a number";
        return -1;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        int neg = 0;
        long long x = 0;
        size_t st = ++i;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            neg = s[i++] == '-', st++;
        for (; i < n && isdigit((unsigned char)s[i]); i++)
            if ((x = x * 10 + (s[i] - '0')) > 10 * ENC_TOL_EPS_EXP)
                break;
        if (i == st || i != n) {
            *why = "is not a number";
            return -1;
        }
        exp += neg ? -x : x;
    }
    if (i != n) {
        *why = "is not a number";
        return -1;
    }
    if (v == 0) {
        *why = "must be greater than 0";
        return -1;
    }
    while (v % 10 == 0) {
        v /= 10;
        exp++;
    }
    if (exp < -ENC_TOL_EPS_EXP || exp > ENC_TOL_EPS_EXP) {
        *why = "is out of range";
        return -1;
    }
    *m = v;
    *e = (int32_t)exp;
    return 0;
}

int enc_tol_rule_parse(const char *s, enc_tol_rule *r, sl_err *err)
{
    const char *colon = strchr(s, ':');
    memset(r, 0, sizeof *r);
    r->t = enc_tol_exact();
    for (size_t i = 0; colon && i < sizeof opts / sizeof *opts; i++)
        if (strlen(opts[i].name) == (size_t)(colon - s) &&
            memcmp(opts[i].name, s, (size_t)(colon - s)) == 0)
            r->opt = opts[i].opt;
    if (!r->opt)
        return sl_err_setc(err, SL_INVALID,
                           "tolerance rule \"%.40s\" is not tolerance:, timestamp-precision:, "
                           "trim-trailing-spaces: or case-fold:",
                           s);
    const char *v = colon + 1, *eq = strrchr(v, '=');
    const char *o = opt_name(r->opt);
    if (strlen(v) > 1024)
        return sl_err_setc(err, SL_INVALID, "--%s: the value is too long", o);
    switch (r->opt) {
    case ENC_TOL_OPT_TOLERANCE: {
        if (!eq)
            return sl_err_setc(err, SL_INVALID,
                               "--tolerance %s: no epsilon; write COL=EPS (as amount=0.005) or "
                               "COL=EPSr for a relative one (as float=1e-9r)",
                               v);
        if (eq == v)
            return sl_err_setc(err, SL_INVALID,
                               "--tolerance %s: no column; write COL=EPS (a column or a class: "
                               "integer, numeric, float)",
                               v);
        size_t n = strlen(eq + 1);
        int rel = n > 0 && (eq[n] == 'r' || eq[n] == 'R');
        const char *why;
        if (read_eps(eq + 1, n - (size_t)rel, &r->t.eps_m, &r->t.eps_e, &why))
            return sl_err_setc(err, SL_INVALID, "--tolerance %s: the epsilon %s", v, why);
        r->t.num = rel ? ENC_TOL_REL : ENC_TOL_ABS;
        break;
    }
    case ENC_TOL_OPT_TS_PRECISION: {
        const char *p = eq ? eq + 1 : v;
        if (eq == v)
            return sl_err_setc(err, SL_INVALID, "--timestamp-precision %s: no column before =", v);
        if (!strcmp(p, "s"))
            r->t.ts_digits = 0;
        else if (!strcmp(p, "ms"))
            r->t.ts_digits = 3;
        else if (!strcmp(p, "us"))
            r->t.ts_digits = 6;
        else
            return sl_err_setc(err, SL_INVALID,
                               "--timestamp-precision %s: the precision must be s, ms or us "
                               "(optionally COL=ms)",
                               v);
        if (!eq)
            return 0; /* every timestamp column */
        r->name = v;
        r->name_len = (size_t)(eq - v);
        return 0;
    }
    default:
        r->t.text = r->opt == ENC_TOL_OPT_TRIM ? ENC_TOL_TRIM : ENC_TOL_FOLD;
        break;
    }
    r->name = v;
    r->name_len = r->opt == ENC_TOL_OPT_TOLERANCE ? (size_t)(eq - v) : strlen(v);
    return 0;
}

/* The classes a class name stands for in a rule of option opt (a mask of
 * 1 << class), 0 when it is none. */
static unsigned class_mask(int opt, const char *p, size_t n)
{
#define IS(s) (n == strlen(s) && memcmp(p, s, n) == 0)
    switch (opt) {
    case ENC_TOL_OPT_TOLERANCE:
        return IS("integer") || IS("int") ? 1u << ENC_INT
               : IS("numeric")            ? 1u << ENC_NUMERIC
               : IS("float")              ? 1u << ENC_FLOAT
                                          : 0;
    case ENC_TOL_OPT_TS_PRECISION:
        return IS("timestamp")     ? 1u << ENC_TIMESTAMP | 1u << ENC_TIMESTAMPTZ
               : IS("timestamptz") ? 1u << ENC_TIMESTAMPTZ
                                   : 0;
    default:
        return IS("text") ? 1u << ENC_TEXT : 0;
    }
#undef IS
}

static int takes(int opt, int cls)
{
    return opt == ENC_TOL_OPT_TOLERANCE      ? is_number_class(cls)
           : opt == ENC_TOL_OPT_TS_PRECISION ? is_time_class(cls)
                                             : is_text_class(cls);
}

static void merge(enc_tol *dst, const enc_tol_rule *r)
{
    if (r->opt == ENC_TOL_OPT_TOLERANCE) {
        dst->num = r->t.num;
        dst->eps_m = r->t.eps_m;
        dst->eps_e = r->t.eps_e;
    } else if (r->opt == ENC_TOL_OPT_TS_PRECISION) {
        dst->ts_digits = r->t.ts_digits;
    } else {
        dst->text |= r->t.text;
    }
}

int enc_tol_resolve(const char *const *rules, size_t nrules, const char *const *cols,
                    const int *cls, size_t nkey, size_t ncols, enc_tol *out, sl_err *err)
{
    for (size_t i = 0; i < ncols; i++)
        out[i] = enc_tol_exact();
    /* class rules first, then column rules: a column's own rule wins
     * whatever the order they were given in */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t k = 0; k < nrules; k++) {
            enc_tol_rule r;
            if (enc_tol_rule_parse(rules[k], &r, err))
                return -1;
            const char *o = opt_name(r.opt);
            int col = -1;
            for (size_t i = 0; i < ncols && col < 0 && r.name_len; i++)
                if (strlen(cols[i]) == r.name_len && !memcmp(cols[i], r.name, r.name_len))
                    col = (int)i;
            if (col >= 0 && (size_t)col < nkey)
                return sl_err_setc(err, SL_INVALID,
                                   "--%s: \"%s\" is a key column, compared exactly (keys "
                                   "identify rows)",
                                   o, cols[col]);
            if (col >= 0 && !takes(r.opt, cls[col]))
                return sl_err_setc(err, SL_INVALID, "--%s: column \"%s\" is compared as %s; %s", o,
                                   cols[col], enc_class_name(cls[col]),
                                   r.opt == ENC_TOL_OPT_TOLERANCE
                                       ? "a tolerance applies to integer, numeric and float "
                                         "columns"
                                   : r.opt == ENC_TOL_OPT_TS_PRECISION
                                       ? "a precision applies to timestamp columns"
                                       : "it applies to text columns");
            if (col >= 0) {
                if (pass == 1)
                    merge(&out[col], &r);
                continue;
            }
            unsigned mask = r.name_len ? class_mask(r.opt, r.name, r.name_len) : ~0u;
            if (!mask)
                return sl_err_setc(err, SL_INVALID,
                                   "--%s: no compared column or class named \"%.*s\"", o,
                                   (int)r.name_len, r.name);
            for (size_t i = nkey; pass == 0 && i < ncols; i++)
                if (takes(r.opt, cls[i]) && (mask & (1u << cls[i])))
                    merge(&out[i], &r);
        }
    }
    for (size_t i = 0; i < ncols; i++)
        if (!enc_tol_is_exact(&out[i]))
            return 0;
    return 1;
}

/* ---- decimals ------------------------------------------------------------ */

/* A canonical decimal: (neg ? -1 : 1) * d[0..n) * 10^e, d ASCII digits
 * without leading or trailing zeros; n = 0 for zero. */
typedef struct dec {
    int neg;
    const char *d;
    size_t n;
    long long e;
} dec;

static int dec_parse(const char *s, size_t len, dec *x)
{
    memset(x, 0, sizeof *x);
    if (len == 1 && s[0] == '0')
        return 0;
    size_t i = 0;
    if (i < len && s[i] == '-')
        x->neg = 1, i++;
    x->d = s + i;
    while (i < len && isdigit((unsigned char)s[i]))
        i++;
    x->n = (size_t)(s + i - x->d);
    if (x->n == 0 || x->d[0] == '0' || x->d[x->n - 1] == '0' || i >= len || s[i++] != 'E')
        return -1;
    int eneg = i < len && s[i] == '-';
    i += (size_t)eneg;
    size_t st = i;
    for (; i < len && isdigit((unsigned char)s[i]); i++)
        if ((x->e = x->e * 10 + (s[i] - '0')) > 4000000000LL)
            return -1;
    if (i == st || i != len)
        return -1;
    if (eneg)
        x->e = -x->e;
    return 0;
}

/* Appends the cell of |x| on a grid of E * 10^Y: round(|x| / (E * 10^Y)),
 * halves up, in decimal without leading zeros ("0" for the cell at zero).
 * 1 when the cell would have more than CELL_MAX_DIGITS digits. */
static int put_cell(sl_buf *out, const dec *x, uint64_t E, long long Y)
{
    long long ni = (long long)x->n + (x->e - Y); /* digits of floor(|x| / 10^Y) */
    if (ni > CELL_MAX_DIGITS)
        return 1;
    if (sl_buf_reserve(out, (size_t)(ni > 0 ? ni : 0) + 2))
        return -1;
    char *q = (char *)out->p + out->len + 1, *q0 = q; /* a byte before, for a carry */
    uint64_t r = 0;                                   /* < E <= 10^17: r * 10 + 9 fits */
    for (long long i = 0; i < ni; i++) {
        r = r * 10 + (uint64_t)(i < (long long)x->n ? x->d[i] - '0' : 0);
        *q++ = (char)('0' + r / E);
        r %= E;
    }
    /* the fraction left is (r + f) / E, f in [0, 1) the digits below 10^Y,
     * fd the first of them: it is at least one half when 2r >= E, or when
     * 2r + 1 == E and f >= 1/2 */
    int fd = ni >= 0 && ni < (long long)x->n ? x->d[ni] - '0' : 0;
    int up = 2 * r >= E || (2 * r + 1 == E && fd >= 5);
    char *end = q;
    for (char *c = end - 1; up && c >= q0; c--) {
        if (*c == '9') {
            *c = '0';
        } else {
            (*c)++;
            up = 0;
        }
    }
    if (up)
        *--q0 = '1';
    while (q0 < end && *q0 == '0')
        q0++;
    if (q0 == end)
        return sl_buf_putc(out, '0') ? -1 : 0;
    size_t n = (size_t)(end - q0);
    memmove(out->p + out->len, q0, n);
    out->len += n;
    return 0;
}

int enc_tol_cell(sl_buf *out, const char *s, size_t n, const enc_tol *t)
{
    dec x;
    if (dec_parse(s, n, &x) || t->eps_m == 0)
        return -1;
    if (x.n == 0)
        return sl_buf_putc(out, '0') ? -1 : 0;
    size_t start = out->len;
    long long Y = t->eps_e;
    if (t->num == ENC_TOL_REL) {
        /* within one decade [10^k, 10^(k+1)) a grid of eps * 10^k is no
         * wider than eps times either value: the decade goes in the token */
        long long k = (long long)x.n + x.e - 1;
        if (sl_buf_printf(out, "%lld:", k))
            return -1;
        Y += k;
    }
    if (x.neg && sl_buf_putc(out, '-'))
        return -1;
    size_t at = out->len;
    int r = put_cell(out, &x, t->eps_m, Y);
    if (r != 0) {
        out->len = start;
        return r;
    }
    if (x.neg && out->len == at + 1 && out->p[at] == '0') { /* -0: the cell at zero */
        out->p[at - 1] = '0';
        out->len = at;
    }
    return 0;
}

/* ---- exact comparison ---------------------------------------------------- */

/* A magnitude as little-endian digit values: v[0..n) * 10^e. */
typedef struct mag {
    uint8_t *v;
    size_t n;
    long long e;
} mag;

static void mag_trim(mag *m)
{
    while (m->n > 0 && m->v[m->n - 1] == 0)
        m->n--;
}

/* The digit of m weighing 10^p (0 outside it). */
static int mag_digit(const mag *m, long long p)
{
    long long i = p - m->e;
    return i >= 0 && i < (long long)m->n ? m->v[i] : 0;
}

static int mag_cmp(mag *a, mag *b)
{
    mag_trim(a);
    mag_trim(b);
    if (a->n == 0 || b->n == 0)
        return (a->n != 0) - (b->n != 0);
    long long ta = (long long)a->n + a->e, tb = (long long)b->n + b->e;
    if (ta != tb)
        return ta < tb ? -1 : 1;
    long long lo = a->e < b->e ? a->e : b->e;
    for (long long p = ta - 1; p >= lo; p--) {
        int x = mag_digit(a, p), y = mag_digit(b, p);
        if (x != y)
            return x < y ? -1 : 1;
    }
    return 0;
}

static uint8_t *mag_from_dec(const dec *x, mag *m)
{
    m->n = x->n;
    m->e = x->e;
    m->v = malloc(x->n + 1);
    for (size_t i = 0; m->v && i < x->n; i++)
        m->v[i] = (uint8_t)(x->d[x->n - 1 - i] - '0');
    return m->v;
}

/* out = |a| + |b| (sub 0) or |a| - |b| (sub 1, |a| >= |b|). */
static int mag_addsub(const mag *a, const mag *b, int sub, mag *out)
{
    long long lo = a->e < b->e ? a->e : b->e;
    long long ta = (long long)a->n + a->e, tb = (long long)b->n + b->e;
    long long hi = (ta > tb ? ta : tb) + 1;
    if (hi - lo > (long long)WITHIN_MAX_DIGITS)
        return 1;
    out->n = (size_t)(hi - lo);
    out->e = lo;
    if (!(out->v = malloc(out->n)))
        return -1;
    int carry = 0;
    for (size_t i = 0; i < out->n; i++) {
        long long p = lo + (long long)i;
        int d = mag_digit(a, p) + (sub ? -(mag_digit(b, p) + carry) : mag_digit(b, p) + carry);
        carry = sub ? d < 0 : d > 9;
        out->v[i] = (uint8_t)(sub ? (d < 0 ? d + 10 : d) : (d > 9 ? d - 10 : d));
    }
    return 0;
}

/* out = a * k (k < 10^17), exponent kept. */
static int mag_mul(const mag *a, uint64_t k, mag *out)
{
    out->n = a->n + 18;
    out->e = a->e;
    if (!(out->v = malloc(out->n)))
        return -1;
    uint64_t carry = 0;
    for (size_t i = 0; i < out->n; i++) {
        uint64_t c = (i < a->n ? a->v[i] * k : 0) + carry; /* <= 9 * 10^17 + 10^17 */
        out->v[i] = (uint8_t)(c % 10);
        carry = c / 10;
    }
    return 0;
}

/* Narrows each run of over 2 digit positions that holds no digit of any
 * of m[0..k) (nonzero magnitudes, trimmed) to 2, moving the digits above
 * it down. |a -+ b| <= bound keeps its answer: a carry or borrow crosses
 * such a gap alike (its digits all 0, a 1 at its foot, or all 9), and so
 * does the comparison with the bound, which has no digit there; a number
 * and its order are the same on either side of it. So 1 against 1e-5000000
 * needs a few digits, not five million. */
static void narrow_gaps(mag **m, size_t k)
{
    for (size_t i = 1; i < k; i++) /* by foot: insertion sort of at most 3 */
        for (size_t j = i; j > 0 && m[j]->e < m[j - 1]->e; j--) {
            mag *x = m[j];
            m[j] = m[j - 1];
            m[j - 1] = x;
        }
    long long shift = 0, reach = k ? m[0]->e : 0; /* the top of the digits below */
    for (size_t i = 0; i < k; i++) {
        long long e = m[i]->e - shift;
        if (e > reach + 2) {
            shift += e - (reach + 2);
            e = reach + 2;
        }
        m[i]->e = e;
        if (e + (long long)m[i]->n > reach)
            reach = e + (long long)m[i]->n;
    }
}

/* The canonical decimal of one encoded number (T_NUMBER) into x. */
static int encoded_number(const uint8_t *e, size_t n, size_t h, dec *x)
{
    if (n < h + 4 || e[0] != 0x01)
        return -1;
    size_t len = (size_t)e[h] << 24 | (size_t)e[h + 1] << 16 | (size_t)e[h + 2] << 8 | e[h + 3];
    if (len != n - h - 4)
        return -1;
    return dec_parse((const char *)e + h + 4, len, x);
}

int enc_tol_within(const uint8_t *a, size_t na, const uint8_t *b, size_t nb, int flags,
                   const enc_tol *t)
{
    size_t h = (flags & ENC_STRICT) ? 2 : 1;
    if (na == nb && memcmp(a, b, na) == 0)
        return 1;
    dec x, y;
    if (!t || t->num == ENC_TOL_EXACT || na < h || nb < h || memcmp(a, b, h) != 0 ||
        encoded_number(a, na, h, &x) || encoded_number(b, nb, h, &y))
        return 0; /* NULL, NaN, Infinity and anything not a number: exact */
    mag ma = {0}, mb = {0}, d = {0}, bound = {0}, eps = {0};
    int rc = -1;
    uint8_t ev[ENC_TOL_EPS_DIGITS + 1];
    if ((x.n && !mag_from_dec(&x, &ma)) || (y.n && !mag_from_dec(&y, &mb)))
        goto out;
    int c = mag_cmp(&ma, &mb); /* a zero (n = 0) is below any other */
    int same = x.neg == y.neg || x.n == 0 || y.n == 0;
    /* the bound: eps, or eps * max(|a|, |b|) */
    mag *lim = &eps;
    eps.v = ev;
    eps.e = t->eps_e;
    for (uint64_t m = t->eps_m; m; m /= 10)
        ev[eps.n++] = (uint8_t)(m % 10);
    if (t->num == ENC_TOL_REL) {
        if (mag_mul(c >= 0 ? &ma : &mb, t->eps_m, &bound))
            goto out;
        bound.e += t->eps_e;
        mag_trim(&bound);
        lim = &bound;
    }
    mag *nz[3];
    size_t k = 0;
    if (ma.n)
        nz[k++] = &ma;
    if (mb.n)
        nz[k++] = &mb;
    if (lim->n)
        nz[k++] = lim;
    narrow_gaps(nz, k);
    if (x.n == 0)
        ma.e = mb.e;
    if (y.n == 0)
        mb.e = ma.e;
    int r = same && c < 0 ? mag_addsub(&mb, &ma, 1, &d) : mag_addsub(&ma, &mb, same, &d);
    if (r != 0) {
        rc = r < 0 ? -1 : 0;
        goto out;
    }
    rc = mag_cmp(&d, lim) <= 0;
out:
    free(ma.v);
    free(mb.v);
    free(d.v);
    free(bound.v);
    return rc;
}
