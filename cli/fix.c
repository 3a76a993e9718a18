/* fix: the statements that make a target table equal to its source (fix.h).
 *
 * Files, all private temporary files (tmpfile: gone when closed or when the
 * process dies):
 *   spool[FIX_DEL|FIX_UPD|FIX_INS]  the divergences, as recorded:
 *       u32 klen, key, u16 nnames, then per changed column u16 len, name;
 *   stmts  the statements built: u8 1, u32 len, text (one statement, no
 *       ';'), or u8 2 (a batch ends).
 * So memory holds one chunk of keys and one row at a time, whatever the
 * number of divergences.
 */
#include "fix.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../base/dsn.h"
#include "../connectors/conn.h"
#include "../merkle/enc.h"
#include "../merkle/tol.h"

enum { FIX_DEL, FIX_UPD, FIX_INS }; /* spool order = the order statements run */
enum { D_PG, D_SQLITE, D_MYSQL };

/* The canonical encoding's value tags (merkle/README.md, "Canonical
 * encoding"): a frame is the tag, a 4-byte big-endian length, the payload
 * (flags 0: no class byte); NULL is the tag alone. */
enum {
    T_NULL = 0x00,
    T_NUMBER = 0x01,
    T_NUMSPEC = 0x02,
    T_BOOL = 0x03,
    T_TEXT = 0x04,
    T_BYTES = 0x05,
    T_DATE = 0x06,
    T_TIME = 0x07,
    T_UUID = 0x09,
    T_JSON = 0x0a,
    T_FALLBACK = 0x0b
};

#define CHUNK 256 /* keys fetched at once */
#define NAMES_MAX 4096

struct fix {
    FILE *spool[3];
    uint64_t n[3];
    int failed;
    sl_err err; /* why recording failed (the job is stopped) */

    /* fix_build */
    conn *src, *tgt;
    int sd, td; /* dialects */
    const char *table, *ttable;
    const char **cols; /* key columns first; names point into the descriptions */
    int *cls;          /* class each is read as (non-strict common class) */
    int *tcls;         /* the target column's own class */
    size_t ncols, nkey;
    size_t *cmp; /* the compared columns (indexes into cols), key first */
    int *cmp_cls;
    size_t ncmp;
    int flags;
    enc_tol *tol; /* the diff's tolerances per compared column; NULL: all exact */
    const char *where;
    conn_table *sdesc, *tdesc;
    FILE *stmts;
    long batch;
    uint64_t inbatch;
    fix_result r;
    char src_shown[512], tgt_shown[512];
    const char *db[2];  /* the source's and target's DSNs (SQLite files: not to be overwritten) */
    sqlite3 *mem;       /* put_sqlite_real: SQLite's own reading of a literal */
    sqlite3_stmt *cast; /* SELECT CAST(?1 AS REAL) on mem */
    char nontx[64];     /* a MySQL target table's engine when it cannot roll back (MyISAM) */
    sl_buf scratch, lit, stmt, kb;
};

/* ---- options ---------------------------------------------------------- */

/* Parses a whole positive number up to max into *out; 0 or -1. */
static int parse_count(const char *s, int64_t max, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno || v < 1 || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Whether s ("--name" or "--name=value") is a shortening of one of
 * repair's own options: "--max-row 5" would reach the diff's getopt_long,
 * which completes it to --max-rows-per-second, and the limit the user meant
 * would silently not be there. */
static int abbreviates(const char *s)
{
    static const char *const own[] = {"--max-rows", "--apply", "--batch", "--rows-per-second",
                                      "--fix-sql"};
    size_t n = strcspn(s, "=");
    if (n < 3 || strncmp(s, "--", 2))
        return 0;
    for (size_t k = 0; k < sizeof own / sizeof *own; k++)
        if (n < strlen(own[k]) && !strncmp(s, own[k], n))
            return 1;
    return 0;
}

int fix_take_args(int *argc, char **argv, int repair, fix_args *fa)
{
    memset(fa, 0, sizeof *fa);
    fa->max_rows = FIX_MAX_ROWS_DEFAULT;
    fa->batch = FIX_BATCH_DEFAULT;
    int o = 1;
    for (int i = 1; i < *argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--")) { /* the rest is positional */
            while (i < *argc)
                argv[o++] = argv[i++];
            break;
        }
        static const char *const names[] = {"--fix-sql", "--max-rows", "--rows-per-second",
                                            "--batch"};
        int which = -1;
        const char *val = NULL;
        for (int k = 0; k < 4 && which < 0; k++) {
            size_t n = strlen(names[k]);
            if (k > 0 && !repair)
                break;
            if (!strncmp(s, names[k], n) && (s[n] == '\0' || s[n] == '=')) {
                which = k;
                val = s[n] == '=' ? s + n + 1 : NULL;
            }
        }
        if (repair && !strcmp(s, "--apply")) {
            fa->apply = 1;
            continue;
        }
        if (repair && (!strcmp(s, "--help") || !strcmp(s, "-h"))) {
            fa->help = 1;
            continue;
        }
        if (which < 0 && repair && abbreviates(s)) /* getopt would take it for another option */
            return cli_fail("%s: write the option out in full (--max-rows, --apply, --batch, "
                            "--rows-per-second, --fix-sql)",
                            s);
        if (which < 0) {
            argv[o++] = argv[i];
            continue;
        }
        if (!val) {
            if (i + 1 >= *argc)
                return cli_fail("%s needs a value", names[which]);
            val = argv[++i];
        }
        int64_t v = 0;
        switch (which) {
        case 0:
            if (!*val)
                return cli_fail("--fix-sql needs a file name");
            fa->sql_file = val;
            break;
        case 1:
            if (parse_count(val, INT64_MAX, &v))
                return cli_fail("--max-rows must be a positive number, not \"%s\"", val);
            fa->max_rows = v;
            break;
        case 2:
            if (parse_count(val, 100000000, &v))
                return cli_fail("--rows-per-second must be a number from 1 to 100000000, not "
                                "\"%s\"",
                                val);
            fa->rows_per_second = v;
            break;
        case 3:
            if (parse_count(val, 100000, &v))
                return cli_fail("--batch must be a number from 1 to 100000, not \"%s\"", val);
            fa->batch = (long)v;
            break;
        }
    }
    argv[o] = NULL;
    *argc = o;
    return -1;
}

/* ---- collecting ------------------------------------------------------- */

fix *fix_new(sl_err *err)
{
    fix *f = calloc(1, sizeof *f);
    if (!f)
        return sl_err_set(err, "out of memory"), NULL;
    for (int k = 0; k < 3; k++)
        if (!(f->spool[k] = tmpfile())) {
            sl_err_set(err, "cannot create a temporary file for the fix: %s", strerror(errno));
            fix_free(f);
            return NULL;
        }
    return f;
}

void fix_free(fix *f)
{
    if (!f)
        return;
    for (int k = 0; k < 3; k++)
        if (f->spool[k])
            fclose(f->spool[k]);
    if (f->stmts)
        fclose(f->stmts);
    conn_free(f->src);
    conn_free(f->tgt);
    conn_table_free(f->sdesc);
    conn_table_free(f->tdesc);
    free(f->cols);
    free(f->cls);
    free(f->tcls);
    free(f->cmp);
    free(f->cmp_cls);
    free(f->tol);
    sl_buf_free(&f->scratch);
    sl_buf_free(&f->lit);
    sl_buf_free(&f->stmt);
    sl_buf_free(&f->kb);
    sqlite3_finalize(f->cast);
    sqlite3_close(f->mem);
    free(f);
}

static int put_u32(FILE *fp, uint32_t v)
{
    return fwrite(&v, 4, 1, fp) == 1 ? 0 : -1;
}

static int put_u16(FILE *fp, uint16_t v)
{
    return fwrite(&v, 2, 1, fp) == 1 ? 0 : -1;
}

static int record(fix *f, const co_event *ev)
{
    int k = ev->kind == CO_MISSING ? FIX_INS : ev->kind == CO_EXTRA ? FIX_DEL : FIX_UPD;
    FILE *fp = f->spool[k];
    size_t nn = ev->kind == CO_CHANGED ? ev->ncols : 0;
    if (nn > NAMES_MAX || ev->klen > UINT32_MAX)
        return sl_err_set(&f->err, "a divergence too large to record for the fix");
    if (put_u32(fp, (uint32_t)ev->klen) || fwrite(ev->key, 1, ev->klen, fp) != ev->klen ||
        put_u16(fp, (uint16_t)nn))
        return sl_err_set(&f->err, "cannot write the fix's temporary file: %s", strerror(errno));
    for (size_t i = 0; i < nn; i++) {
        size_t l = strlen(ev->cols[i].column);
        if (l > 65535 || put_u16(fp, (uint16_t)l) || fwrite(ev->cols[i].column, 1, l, fp) != l)
            return sl_err_set(&f->err, "cannot write the fix's temporary file");
    }
    f->n[k]++;
    return 0;
}

int fix_tap_event(void *tap, const co_event *ev)
{
    fix_tap *t = tap;
    if ((ev->kind == CO_MISSING || ev->kind == CO_EXTRA || ev->kind == CO_CHANGED) &&
        ev->status != CO_TRANSIENT && !t->f->failed && record(t->f, ev)) {
        t->f->failed = 1;
        return -1;
    }
    return t->next ? t->next(t->ctx, ev) : 0;
}

void fix_tap_progress(void *tap, const co_progress *p)
{
    fix_tap *t = tap;
    if (t->next_progress)
        t->next_progress(t->ctx, p);
}

int fix_error(const fix *f, sl_err *err)
{
    if (f->failed)
        *err = f->err;
    return f->failed;
}

void fix_counts(const fix *f, uint64_t *ins, uint64_t *upd, uint64_t *del)
{
    *ins = f->n[FIX_INS];
    *upd = f->n[FIX_UPD];
    *del = f->n[FIX_DEL];
}

void fix_result_get(const fix *f, fix_result *r)
{
    *r = f->r;
}

/* ---- reading records back ---------------------------------------------- */

typedef struct rec {
    uint8_t *key;
    size_t klen;
    char **names;
    size_t nnames;
    int found;
    int intarget; /* --where: the key is in the target outside the where */
} rec;

static void recs_free(rec *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].key);
        for (size_t k = 0; k < v[i].nnames; k++)
            free(v[i].names[k]);
        free(v[i].names);
    }
}

/* Reads up to CHUNK records of fp into v; *n of them. 0, or -1. */
static int recs_read(FILE *fp, rec *v, size_t *n, sl_err *err)
{
    *n = 0;
    while (*n < CHUNK) {
        uint32_t kl;
        uint16_t nn;
        if (fread(&kl, 4, 1, fp) != 1)
            return 0;
        rec *r = &v[*n];
        memset(r, 0, sizeof *r);
        if (!(r->key = malloc(kl ? kl : 1)))
            return sl_err_set(err, "out of memory");
        (*n)++;
        r->klen = kl;
        if (fread(r->key, 1, kl, fp) != kl || fread(&nn, 2, 1, fp) != 1)
            return sl_err_set(err, "the fix's temporary file is truncated");
        if (nn && !(r->names = calloc(nn, sizeof *r->names)))
            return sl_err_set(err, "out of memory");
        for (uint16_t i = 0; i < nn; i++) {
            uint16_t l;
            if (fread(&l, 2, 1, fp) != 1 || !(r->names[i] = malloc((size_t)l + 1)))
                return sl_err_set(err, "the fix's temporary file is truncated");
            r->nnames++;
            if (fread(r->names[i], 1, l, fp) != l)
                return sl_err_set(err, "the fix's temporary file is truncated");
            r->names[i][l] = '\0';
        }
    }
    return 0;
}

static int key_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    return c ? c : (al > bl) - (al < bl);
}

static int rec_cmp(const void *x, const void *y)
{
    const rec *a = x, *b = y;
    return key_cmp(a->key, a->klen, b->key, b->klen);
}

static rec *rec_find(rec *v, size_t n, const uint8_t *key, size_t klen)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = key_cmp(v[mid].key, v[mid].klen, key, klen);
        if (c == 0)
            return &v[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ---- literals ----------------------------------------------------------- */

static int dialect_of(const char *dsn)
{
    if (!strncmp(dsn, "sqlite:", 7))
        return D_SQLITE;
    if (!strncmp(dsn, "mysql://", 8) || !strncmp(dsn, "mariadb://", 10))
        return D_MYSQL;
    return D_PG;
}

static const char *dialect_name(int d)
{
    return d == D_SQLITE ? "SQLite" : d == D_MYSQL ? "MySQL/MariaDB" : "PostgreSQL";
}

static int put_ident(sl_buf *o, int d, const char *name)
{
    char q = d == D_MYSQL ? '`' : '"';
    if (sl_buf_putc(o, (uint8_t)q))
        return -1;
    for (const char *p = name; *p; p++)
        if ((*p == q && sl_buf_putc(o, (uint8_t)q)) || sl_buf_putc(o, (uint8_t)*p))
            return -1;
    return sl_buf_putc(o, (uint8_t)q);
}

/* "schema.table" as two quoted parts, as the connectors read it. */
static int put_table(sl_buf *o, int d, const char *table)
{
    const char *dot = strchr(table, '.');
    if (!dot)
        return put_ident(o, d, table);
    char *schema = strndup(table, (size_t)(dot - table));
    int r = !schema || put_ident(o, d, schema) || sl_buf_putc(o, '.') || put_ident(o, d, dot + 1);
    free(schema);
    return r ? -1 : 0;
}

static int put_hex(sl_buf *o, const uint8_t *p, size_t n)
{
    static const char hx[] = "0123456789abcdef";
    if (sl_buf_reserve(o, n * 2))
        return -1;
    for (size_t i = 0; i < n; i++) {
        o->p[o->len++] = (uint8_t)hx[p[i] >> 4];
        o->p[o->len++] = (uint8_t)hx[p[i] & 15];
    }
    return 0;
}

static int put_quoted(sl_buf *o, const char *p, size_t n)
{
    if (sl_buf_reserve(o, n + 2) || sl_buf_putc(o, '\''))
        return -1;
    for (size_t i = 0; i < n; i++)
        if ((p[i] == '\'' && sl_buf_putc(o, '\'')) || sl_buf_putc(o, (uint8_t)p[i]))
            return -1;
    return sl_buf_putc(o, '\'');
}

/* A text literal for the target: quotes doubled; PostgreSQL refuses a NUL
 * (its text cannot hold one); SQLite writes text with a NUL, and MySQL text
 * with a NUL or a backslash (whose meaning depends on the session's
 * sql_mode), as hex cast to text. */
static int put_text(fix *f, sl_buf *o, const char *p, size_t n, const char *col, sl_err *err)
{
    int nul = memchr(p, 0, n) != NULL;
    if (f->td == D_PG && nul)
        return sl_err_setc(err, SL_INVALID,
                           "column \"%s\": a text value holds a NUL byte, which PostgreSQL "
                           "text cannot store; leave the column out (--exclude-columns) or fix "
                           "the value in the source",
                           col);
    if (f->td == D_SQLITE && nul)
        return sl_buf_printf(o, "CAST(X'") || put_hex(o, (const uint8_t *)p, n) ||
                       sl_buf_printf(o, "' AS TEXT)")
                   ? sl_err_set(err, "out of memory")
                   : 0;
    if (f->td == D_MYSQL && (nul || memchr(p, '\\', n)))
        return sl_buf_printf(o, "_utf8mb4 X'") || put_hex(o, (const uint8_t *)p, n) ||
                       sl_buf_putc(o, '\'')
                   ? sl_err_set(err, "out of memory")
                   : 0;
    return put_quoted(o, p, n) ? sl_err_set(err, "out of memory") : 0;
}

static int put_bytes(fix *f, sl_buf *o, const uint8_t *p, size_t n)
{
    if (f->td == D_PG)
        return sl_buf_printf(o, "'\\x") || put_hex(o, p, n) || sl_buf_putc(o, '\'');
    return sl_buf_printf(o, "X'") || put_hex(o, p, n) || sl_buf_putc(o, '\'');
}

/* How long a plain decimal may get before the canonical (scientific) form is
 * written instead: "[-]DIGITSE[-]EXP" is read exactly by all three engines,
 * but MySQL reads it as a double. */
enum {
    NUM_EXACT,       /* PostgreSQL, SQLite: plain up to 200 characters */
    NUM_MYSQL_EXACT, /* MySQL decimal: plain within DECIMAL's 65 digits, 30 after the point */
    NUM_FLOAT        /* a double: plain only when short (a float's digits are 17 at most) */
};

/* A canonical decimal ("0" or "[-]DIGITSE[-]EXP") as a plain decimal literal,
 * or as itself where the policy (NUM_*) says the plain form is too long. */
static int put_number(sl_buf *o, const char *s, size_t n, int policy)
{
    size_t i = 0;
    int neg = n && s[0] == '-';
    i += (size_t)neg;
    size_t d0 = i;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++;
    size_t nd = i - d0;
    long exp = 0;
    if (i < n && s[i] == 'E') {
        int eneg = 0;
        i++;
        if (i < n && s[i] == '-') {
            eneg = 1;
            i++;
        }
        for (; i < n && s[i] >= '0' && s[i] <= '9' && exp < 100000000; i++)
            exp = exp * 10 + (s[i] - '0');
        if (eneg)
            exp = -exp;
    }
    size_t plain = exp >= 0 ? nd + (size_t)exp : (nd > (size_t)-exp ? nd : (size_t)-exp) + 2;
    size_t frac = exp < 0 ? (size_t)-exp : 0;
    /* MySQL: digits before and after the point, the point itself not counted */
    size_t digits = exp >= 0 ? nd + (size_t)exp : (nd > frac ? nd : frac);
    int sci = policy == NUM_EXACT         ? plain > 200
              : policy == NUM_MYSQL_EXACT ? digits > 65 || frac > 30
                                          : plain > 24;
    if (nd == 0 || sci)
        return sl_buf_append(o, s, n);
    if (neg && sl_buf_putc(o, '-'))
        return -1;
    const char *d = s + d0;
    if (exp >= 0) {
        if (sl_buf_append(o, d, nd))
            return -1;
        for (long k = 0; k < exp; k++)
            if (sl_buf_putc(o, '0'))
                return -1;
        return 0;
    }
    if (nd > frac)
        return sl_buf_append(o, d, nd - frac) || sl_buf_putc(o, '.') ||
               sl_buf_append(o, d + nd - frac, frac);
    if (sl_buf_printf(o, "0."))
        return -1;
    for (size_t k = 0; k < frac - nd; k++)
        if (sl_buf_putc(o, '0'))
            return -1;
    return sl_buf_append(o, d, nd);
}

static int64_t be64s(const uint8_t *b)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | b[i];
    return (int64_t)v;
}

/* 'YYYY-MM-DD[ HH:MM:SS[.ffffff]][offset]' from days (and microseconds of
 * the day when with_time); PostgreSQL years before 1 as "... BC". */
static int put_datetime(fix *f, sl_buf *o, int64_t days, int64_t us, int with_time, int offset)
{
    int64_t y;
    unsigned m, d;
    enc_civil(days, &y, &m, &d);
    int bc = f->td == D_PG && y <= 0;
    if (bc)
        y = 1 - y;
    if (sl_buf_printf(o, "'%04lld-%02u-%02u", (long long)y, m, d))
        return -1;
    if (with_time) {
        int64_t s = us / 1000000, frac = us % 1000000;
        if (sl_buf_printf(o, " %02d:%02d:%02d", (int)(s / 3600), (int)(s / 60 % 60),
                          (int)(s % 60)) ||
            (frac && sl_buf_printf(o, ".%06d", (int)frac)))
            return -1;
        if (offset && sl_buf_printf(o, f->td == D_PG ? "+00" : "+00:00"))
            return -1;
    }
    return sl_buf_printf(o, "%s'", bc ? " BC" : "");
}

/* Whether SQLite reads the literal lit as exactly d (CAST of text to REAL
 * runs the conversion SQL text goes through). -1 when SQLite fails. */
static int sqlite_reads(fix *f, const char *lit, double d)
{
    if (!f->cast && (sqlite3_open_v2(":memory:", &f->mem, SQLITE_OPEN_READWRITE, NULL) ||
                     sqlite3_prepare_v2(f->mem, "SELECT CAST(?1 AS REAL)", -1, &f->cast, NULL)))
        return -1;
    double got = 0;
    int ok = sqlite3_bind_text(f->cast, 1, lit, -1, SQLITE_TRANSIENT) == SQLITE_OK &&
             sqlite3_step(f->cast) == SQLITE_ROW;
    if (ok)
        got = sqlite3_column_double(f->cast, 0);
    sqlite3_reset(f->cast);
    return ok ? memcmp(&got, &d, sizeof d) == 0 : -1;
}

/* A finite double as a SQLite REAL literal. SQLite's text-to-real
 * conversion is not correctly rounded (3.40 reads 8.507476961959075e-301
 * one ulp low), so the shortest decimal is taken only when SQLite reads it
 * back exactly; else the value is written as an exact product: a 53-bit
 * integer times powers of two, each step exact in double arithmetic. */
static int put_sqlite_real(fix *f, sl_buf *o, double d)
{
    char num[40];
    if (d == 0)
        return sl_buf_printf(o, "%s", signbit(d) ? "-0.0" : "0.0");
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(num, sizeof num, "%.*g", prec, d);
        double back = strtod(num, NULL);
        if (memcmp(&back, &d, sizeof d) == 0) {
            int r = sqlite_reads(f, num, d);
            if (r < 0)
                break;
            if (r == 0)
                continue;
            /* a REAL stays a REAL: "10" would be read as an integer */
            return sl_buf_printf(o, "%s%s", num, strpbrk(num, ".e") ? "" : ".0");
        }
    }
    int e;
    long long m = (long long)ldexp(frexp(d, &e), 53); /* d = m * 2^(e - 53) */
    e -= 53;
    if (sl_buf_printf(o, "(CAST(%lld AS REAL)", m))
        return -1;
    for (; e >= 53; e -= 53)
        if (sl_buf_printf(o, " * 9007199254740992"))
            return -1;
    for (; e <= -53; e += 53)
        if (sl_buf_printf(o, " / 9007199254740992"))
            return -1;
    if (e && sl_buf_printf(o, " %c %lld", e > 0 ? '*' : '/', 1LL << (e > 0 ? e : -e)))
        return -1;
    return sl_buf_putc(o, ')');
}

static int is_number_class(int c)
{
    return c == ENC_INT || c == ENC_NUMERIC || c == ENC_FLOAT;
}

/* A literal for the target column col from the canonical encoding of v
 * (class f->cls[col]). */
static int put_canonical(fix *f, sl_buf *o, size_t col, const enc_val *v, sl_err *err)
{
    int cls = f->cls[col], tcls = f->tcls[col];
    const char *name = f->cols[col];
    sl_buf_reset(&f->scratch);
    if (enc_value(&f->scratch, cls, v, 0))
        return sl_err_set(err, "out of memory");
    const uint8_t *e = f->scratch.p;
    if (e[0] == T_NULL)
        return sl_buf_printf(o, "NULL") ? sl_err_set(err, "out of memory") : 0;
    if (f->scratch.len < 5)
        return sl_err_set(err, "column \"%s\": an encoding too short", name);
    size_t n = (size_t)e[1] << 24 | (size_t)e[2] << 16 | (size_t)e[3] << 8 | e[4];
    const uint8_t *p = e + 5;
    int r = 0;
    switch (e[0]) {
    case T_NUMBER: {
        int quote = !is_number_class(tcls) && tcls != ENC_BOOL;
        if (f->td == D_SQLITE && !quote && cls != ENC_INT &&
            (cls == ENC_FLOAT || tcls == ENC_FLOAT)) {
            /* a double for a SQLite REAL: exactly as SQLite reads it */
            char *num = strndup((const char *)p, n);
            double d = num ? strtod(num, NULL) : 0;
            free(num);
            if (!num)
                return sl_err_set(err, "out of memory");
            if (isfinite(d)) {
                r = put_sqlite_real(f, o, d);
                break;
            }
        }
        r = (quote && sl_buf_putc(o, '\'')) ||
            put_number(o, (const char *)p, n,
                       cls == ENC_FLOAT || tcls == ENC_FLOAT ? NUM_FLOAT
                       : f->td == D_MYSQL                    ? NUM_MYSQL_EXACT
                                                             : NUM_EXACT) ||
            (quote && sl_buf_putc(o, '\''));
        break;
    }
    case T_NUMSPEC:
        if (f->td == D_PG)
            r = put_quoted(o, (const char *)p, n);
        else if (f->td == D_SQLITE && n && p[n - 1] == 'y') /* [-]Infinity */
            r = sl_buf_printf(o, "%s9e999", p[0] == '-' ? "-" : "");
        else
            return sl_err_setc(err, SL_INVALID,
                               "column \"%s\": %.*s cannot be written to %s; fix the value in "
                               "the source or leave the column out (--exclude-columns)",
                               name, (int)n, (const char *)p, dialect_name(f->td));
        break;
    case T_BOOL:
        if (f->td != D_PG || tcls == ENC_INT)
            r = sl_buf_printf(o, "%d", n && p[0] ? 1 : 0);
        else if (tcls == ENC_BOOL)
            r = sl_buf_printf(o, "%s", n && p[0] ? "TRUE" : "FALSE");
        else
            r = sl_buf_printf(o, "'%s'", n && p[0] ? "true" : "false");
        break;
    case T_BYTES:
        r = put_bytes(f, o, p, n);
        break;
    case T_DATE:
        if (n != 8)
            return sl_err_set(err, "column \"%s\": a date encoding of %zu bytes", name, n);
        r = put_datetime(f, o, be64s(p), 0, 0, 0);
        break;
    case T_TIME: {
        if (n != 8)
            return sl_err_set(err, "column \"%s\": a timestamp encoding of %zu bytes", name, n);
        int64_t us = be64s(p), day = 86400000000LL;
        int64_t days = us / day - (us % day < 0), rem = us - days * day;
        r = put_datetime(f, o, days, rem, 1, tcls == ENC_TIMESTAMPTZ && f->td != D_MYSQL);
        break;
    }
    case T_UUID: {
        char u[40];
        static const char hx[] = "0123456789abcdef";
        size_t k = 0;
        if (n != 16)
            return sl_err_set(err, "column \"%s\": a uuid encoding of %zu bytes", name, n);
        for (int i = 0; i < 16; i++) {
            if (i == 4 || i == 6 || i == 8 || i == 10)
                u[k++] = '-';
            u[k++] = hx[p[i] >> 4];
            u[k++] = hx[p[i] & 15];
        }
        r = put_quoted(o, u, k);
        break;
    }
    case T_JSON:
        /* JSON text is the same in every engine: the source's own, if it
         * came as text, else the canonical re-serialization */
        if (v->kind == ENC_V_TEXT)
            return put_text(f, o, v->p, v->len, name, err);
        return put_text(f, o, (const char *)p, n, name, err);
    case T_TEXT:
    case T_FALLBACK:
        return put_text(f, o, (const char *)p, n, name, err);
    default:
        return sl_err_set(err, "column \"%s\": an encoding of unknown tag 0x%02x", name, e[0]);
    }
    return r ? sl_err_set(err, "out of memory") : 0;
}

/* A value as the same engine stores it: SQLite's storage class and bytes,
 * PostgreSQL's text as it printed it. -1 (err set) on failure, 1 when the
 * value has no such form (the caller goes the canonical way). */
static int put_raw(fix *f, sl_buf *o, size_t col, const enc_val *v, sl_err *err)
{
    int r;
    if (v->kind == ENC_V_NULL)
        r = sl_buf_printf(o, "NULL");
    else if (f->td == D_PG && v->kind == ENC_V_TEXT)
        return put_text(f, o, v->p, v->len, f->cols[col], err);
    else if (f->td != D_SQLITE)
        return 1;
    else if (v->kind == ENC_V_INT)
        r = sl_buf_printf(o, "%lld", (long long)v->i);
    else if (v->kind == ENC_V_FLOAT) {
        if (v->d != v->d)
            r = sl_buf_printf(o, "NULL");
        else if (v->d > 1.7976931348623157e308 || v->d < -1.7976931348623157e308)
            r = sl_buf_printf(o, "%s9e999", v->d < 0 ? "-" : "");
        else
            r = put_sqlite_real(f, o, v->d);
    } else if (v->kind == ENC_V_TEXT)
        return put_text(f, o, v->p, v->len, f->cols[col], err);
    else if (v->kind == ENC_V_BLOB)
        r = put_bytes(f, o, (const uint8_t *)v->p, v->len);
    else
        return 1;
    return r ? sl_err_set(err, "out of memory") : 0;
}

static int put_literal(fix *f, sl_buf *o, size_t col, const enc_val *v, int raw_ok, sl_err *err)
{
    if (raw_ok && f->sd == f->td) {
        int r = put_raw(f, o, col, v, err);
        if (r <= 0)
            return r;
    }
    return put_canonical(f, o, col, v, err);
}

/* ---- building ------------------------------------------------------------- */

static int stmt_out(fix *f, sl_err *err)
{
    uint8_t one = 1;
    if (fwrite(&one, 1, 1, f->stmts) != 1 || put_u32(f->stmts, (uint32_t)f->stmt.len) ||
        fwrite(f->stmt.p, 1, f->stmt.len, f->stmts) != f->stmt.len)
        return sl_err_set(err, "cannot write the fix's temporary file: %s", strerror(errno));
    if (f->stmt.len > UINT32_MAX)
        return sl_err_setc(err, SL_INVALID, "a statement of more than 4 GiB");
    if (++f->inbatch == (uint64_t)f->batch) {
        uint8_t two = 2;
        f->inbatch = 0;
        f->r.batches++;
        if (fwrite(&two, 1, 1, f->stmts) != 1)
            return sl_err_set(err, "cannot write the fix's temporary file");
    }
    return 0;
}

/* " WHERE k1 = v1 AND k2 = v2" from the key's values. */
static int put_where(fix *f, const enc_val *kv, int raw_ok, sl_err *err)
{
    for (size_t k = 0; k < f->nkey; k++) {
        if (sl_buf_printf(&f->stmt, k ? " AND " : " WHERE ") ||
            put_ident(&f->stmt, f->td, f->cols[k]) || sl_buf_printf(&f->stmt, " = "))
            return sl_err_set(err, "out of memory");
        if (put_literal(f, &f->stmt, k, &kv[k], raw_ok, err))
            return -1;
    }
    return 0;
}

static int build_delete(fix *f, const rec *r, sl_err *err)
{
    enc_val kv[ENC_MAX_KEY_COLS];
    if (enc_key_decode(r->key, r->klen, f->nkey, &f->kb, kv, err))
        return -1;
    sl_buf_reset(&f->stmt);
    if (sl_buf_printf(&f->stmt, "DELETE FROM ") || put_table(&f->stmt, f->td, f->ttable))
        return sl_err_set(err, "out of memory");
    if (put_where(f, kv, 0, err) || stmt_out(f, err))
        return -1;
    f->r.deletes++;
    return 0;
}

typedef struct build_ctx {
    fix *f;
    rec *v;
    size_t n;
    int kind;
    int mark; /* only note which keys came back (r->found or r->intarget) */
} build_ctx;

static size_t col_index(const fix *f, const char *name)
{
    for (size_t i = 0; i < f->ncols; i++)
        if (!strcmp(f->cols[i], name))
            return i;
    return (size_t)-1;
}

/* A source row fetched by key: its INSERT, or the UPDATE of the columns its
 * divergence named. */
static int take_row(void *ctx, const enc_val *v, size_t n, sl_err *err)
{
    build_ctx *b = ctx;
    fix *f = b->f;
    (void)n;
    sl_buf_reset(&f->kb);
    for (size_t k = 0; k < f->nkey; k++)
        if (enc_key(&f->kb, f->cls[k], &v[k], err))
            return -1;
    rec *r = rec_find(b->v, b->n, f->kb.p, f->kb.len);
    if (b->mark == 2) { /* the target's keys, read without the where */
        if (r)
            r->intarget = 1;
        return 0;
    }
    if (!r || r->found)
        return 0;
    r->found = 1;
    if (b->mark)
        return 0;
    sl_buf *s = &f->stmt;
    sl_buf_reset(s);
    if (b->kind == FIX_INS && !r->intarget) {
        if (sl_buf_printf(s, "INSERT INTO ") || put_table(s, f->td, f->ttable) ||
            sl_buf_printf(s, " ("))
            return sl_err_set(err, "out of memory");
        for (size_t i = 0; i < f->ncols; i++)
            if ((i && sl_buf_printf(s, ", ")) || put_ident(s, f->td, f->cols[i]))
                return sl_err_set(err, "out of memory");
        if (sl_buf_printf(s, ") VALUES ("))
            return sl_err_set(err, "out of memory");
        for (size_t i = 0; i < f->ncols; i++) {
            if (i && sl_buf_printf(s, ", "))
                return sl_err_set(err, "out of memory");
            if (put_literal(f, s, i, &v[i], 1, err))
                return sl_err_wrap(err, "table \"%s\"", f->table);
        }
        if (sl_buf_putc(s, ')'))
            return sl_err_set(err, "out of memory");
        f->r.inserts++;
    } else {
        size_t set = 0;
        if (sl_buf_printf(s, "UPDATE ") || put_table(s, f->td, f->ttable) ||
            sl_buf_printf(s, " SET "))
            return sl_err_set(err, "out of memory");
        /* a divergence that named no column (a keys-only diff): every
         * compared column is written; a row the --where hid on one side
         * (missing or extra only within the where): every column */
        int all = b->kind != FIX_UPD;
        size_t nset = all ? f->ncols : r->nnames ? r->nnames : f->ncmp;
        for (size_t i = 0; i < nset; i++) {
            size_t c = all ? i : r->nnames ? col_index(f, r->names[i]) : f->cmp[i];
            if (c == (size_t)-1 || c < f->nkey)
                continue;
            if ((set++ && sl_buf_printf(s, ", ")) || put_ident(s, f->td, f->cols[c]) ||
                sl_buf_printf(s, " = "))
                return sl_err_set(err, "out of memory");
            if (put_literal(f, s, c, &v[c], 1, err))
                return sl_err_wrap(err, "table \"%s\"", f->table);
        }
        if (!set)
            return 0;
        if (put_where(f, v, 1, err))
            return -1;
        f->r.updates++;
    }
    return stmt_out(f, err);
}

static void free_keys(const uint8_t **kp, size_t *kl)
{
    free(kp);
    free(kl);
}

/* The keys of v[0..n) as conn_fetch_keys takes them. */
static int keys_of(const rec *v, size_t n, const uint8_t ***kp, size_t **kl, sl_err *err)
{
    *kp = calloc(n ? n : 1, sizeof **kp);
    *kl = calloc(n ? n : 1, sizeof **kl);
    if (!*kp || !*kl) {
        free_keys(*kp, *kl);
        return sl_err_set(err, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        (*kp)[i] = v[i].key;
        (*kl)[i] = v[i].klen;
    }
    return 0;
}

/* Fetches the keys of b->v (only those whose found is only_found, when it
 * is not -1) from c by q, each row handed to take_row as b says. */
static int fetch_chunk(conn *c, const conn_query *q, build_ctx *b, int only_found, sl_err *err)
{
    const uint8_t **kp;
    size_t *kl, m = 0;
    if (keys_of(b->v, b->n, &kp, &kl, err))
        return -1;
    for (size_t i = 0; i < b->n; i++)
        if (only_found < 0 || b->v[i].found == only_found) {
            kp[m] = b->v[i].key;
            kl[m++] = b->v[i].klen;
        }
    int rc = m ? conn_fetch_keys(c, q, kp, kl, m, take_row, b, err) : 0;
    free_keys(kp, kl);
    return rc;
}

static int build_kind(fix *f, int kind, sl_err *err)
{
    rec v[CHUNK];
    size_t n = 0;
    conn_query q = {.table = f->table,
                    .cols = f->cols,
                    .cls = f->cls,
                    .ncols = f->ncols,
                    .nkey = f->nkey,
                    .where = f->where};
    /* A key the diff saw on one side only may be on the other side after
     * all: outside the --where (a row whose filtered column differs), or
     * written there since the diff. Such a row is updated whole: never
     * deleted from the target (the source has it), nor inserted again (the
     * target has it). */
    conn_query qs = q, qt = q;
    qs.where = NULL;
    qt.table = f->ttable;
    qt.ncols = f->nkey;
    qt.where = NULL;
    rewind(f->spool[kind]);
    for (;;) {
        int rc = recs_read(f->spool[kind], v, &n, err);
        if (rc == 0 && n == 0)
            return 0;
        if (rc == 0)
            qsort(v, n, sizeof *v, rec_cmp);
        build_ctx b = {f, v, n, kind, 0};
        if (rc == 0 && kind == FIX_DEL) {
            b.mark = 1;
            rc = fetch_chunk(f->src, &qs, &b, -1, err);
            b.mark = 0;
            for (size_t i = 0; i < n && rc == 0; i++)
                if (!v[i].found)
                    rc = build_delete(f, &v[i], err);
            if (rc == 0) {
                for (size_t i = 0; i < n; i++)
                    v[i].found = !v[i].found; /* fetch the ones found, build them */
                rc = fetch_chunk(f->src, &qs, &b, 0, err);
            }
        } else if (rc == 0) {
            if (kind == FIX_INS) {
                b.mark = 2;
                rc = fetch_chunk(f->tgt, &qt, &b, -1, err);
                b.mark = 0;
            }
            if (rc == 0 && (rc = fetch_chunk(f->src, &q, &b, -1, err)))
                sl_err_wrap(err, "reading the source rows the fix writes (every column both "
                                 "tables have, --exclude-columns too)");
            for (size_t i = 0; i < n && rc == 0; i++)
                f->r.vanished += !v[i].found;
        }
        recs_free(v, n);
        if (rc)
            return -1;
    }
}

static int find_desc_col(const conn_table *t, const char *name)
{
    for (size_t i = 0; i < t->ncols; i++)
        if (!strcmp(t->cols[i].name, name))
            return (int)i;
    return -1;
}

static int in_list(const char *const *list, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(list[i], name))
            return 1;
    return 0;
}

/* The columns: the key, then every source column the target has too (an
 * INSERT writes them all, as the source holds them); and the subset the
 * diff compared (for the re-check), as co_reconcile picks it. */
static int pick_columns(fix *f, const diff_args *a, sl_err *err)
{
    const conn_table *s = f->sdesc, *t = f->tdesc;
    const char *const *key = a->o.nkey ? a->o.key : (const char *const *)s->key;
    size_t nkey = a->o.nkey ? a->o.nkey : s->nkey;
    if (!nkey || nkey > ENC_MAX_KEY_COLS)
        return sl_err_setc(err, SL_INVALID, "table \"%s\" has no usable key; pass --key", f->table);
    size_t cap = s->ncols + nkey;
    f->cols = calloc(cap, sizeof *f->cols);
    f->cls = calloc(cap, sizeof *f->cls);
    f->tcls = calloc(cap, sizeof *f->tcls);
    f->cmp = calloc(cap, sizeof *f->cmp);
    f->cmp_cls = calloc(cap, sizeof *f->cmp_cls);
    if (!f->cols || !f->cls || !f->tcls || !f->cmp || !f->cmp_cls)
        return sl_err_set(err, "out of memory");
    for (size_t k = 0; k < nkey; k++) {
        int i = find_desc_col(s, key[k]), j = find_desc_col(t, key[k]);
        if (i < 0 || j < 0)
            return sl_err_setc(err, SL_INVALID, "key column \"%s\" is missing in the %s", key[k],
                               i < 0 ? "source" : "target");
        f->cols[k] = s->cols[i].name;
        f->cls[k] = enc_class_common(s->cols[i].cls, t->cols[j].cls, f->flags);
        f->tcls[k] = t->cols[j].cls;
        f->cmp[k] = k;
        f->cmp_cls[k] = f->cls[k];
    }
    f->nkey = f->ncols = f->ncmp = nkey;
    for (size_t i = 0; i < s->ncols; i++) {
        const char *name = s->cols[i].name;
        int j = find_desc_col(t, name);
        if (j < 0 || in_list(f->cols, nkey, name))
            continue;
        int cls = enc_class_common(s->cols[i].cls, t->cols[j].cls, 0);
        if (!cls) /* reported as schema drift by the diff; nothing to write it as */
            continue;
        int ccls = enc_class_common(s->cols[i].cls, t->cols[j].cls, f->flags);
        if (ccls && !in_list(a->o.exclude, a->o.nexclude, name) &&
            (!a->o.ncolumns || in_list(a->o.columns, a->o.ncolumns, name))) {
            f->cmp[f->ncmp] = f->ncols;
            f->cmp_cls[f->ncmp++] = ccls;
        }
        f->cols[f->ncols] = name;
        f->cls[f->ncols] = cls;
        f->tcls[f->ncols++] = t->cols[j].cls;
    }
    if (f->ncols > CONN_MAX_COLS)
        return sl_err_setc(err, SL_INVALID, "table \"%s\" has more than %d columns", f->table,
                           CONN_MAX_COLS);
    return 0;
}

/* Shown names: DSN without passwords, on one line. */
static void shown(char *out, size_t cap, const char *dsn)
{
    dsn_redact(dsn, out, cap);
    for (char *p = out; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
}

/* The diff's tolerances, resolved as the coordinator resolves them, so
 * that the re-check after a repair calls equal what the diff called equal
 * (a column within its tolerance is not rewritten by an UPDATE of another). */
static int resolve_tol(fix *f, const diff_args *a, sl_err *err)
{
    if (!a->ntol)
        return 0;
    const char *names[CONN_MAX_COLS];
    for (size_t i = 0; i < f->ncmp; i++)
        names[i] = f->cols[f->cmp[i]];
    if (!(f->tol = calloc(f->ncmp, sizeof *f->tol)))
        return sl_err_set(err, "out of memory");
    int r = enc_tol_resolve((const char *const *)a->tol, a->ntol, names, f->cmp_cls, f->nkey,
                            f->ncmp, f->tol, err);
    if (r == 1) {
        free(f->tol);
        f->tol = NULL;
    }
    return r < 0 ? -1 : 0;
}

static int take_engine(void *ctx, const enc_val *v, size_t n, sl_err *err)
{
    fix *f = ctx;
    (void)n;
    (void)err;
    if (v[0].kind == ENC_V_TEXT && v[0].len == 2 && !memcmp(v[0].p, "NO", 2))
        snprintf(f->nontx, sizeof f->nontx, "%.*s", v[1].kind == ENC_V_TEXT ? (int)v[1].len : 0,
                 v[1].kind == ENC_V_TEXT ? v[1].p : "");
    return 0;
}

/* Whether the MySQL target table's engine can roll back a transaction
 * (MyISAM, MEMORY cannot): a failed batch then leaves its first statements
 * written, and fix_apply has to say so. */
static int mysql_engine(fix *f, sl_err *err)
{
    sl_buf q = {0};
    const char *dot = strchr(f->ttable, '.');
    int r = sl_buf_printf(&q, "SELECT e.TRANSACTIONS, t.ENGINE FROM information_schema.TABLES t "
                              "JOIN information_schema.ENGINES e ON e.ENGINE = t.ENGINE "
                              "WHERE t.TABLE_SCHEMA = ");
    /* the session reads literals with NO_BACKSLASH_ESCAPES: quotes doubled suffice */
    if (!r && dot)
        r = put_quoted(&q, f->ttable, (size_t)(dot - f->ttable));
    else if (!r)
        r = sl_buf_printf(&q, "DATABASE()");
    const char *name = dot ? dot + 1 : f->ttable;
    r = r || sl_buf_printf(&q, " AND t.TABLE_NAME = ") || put_quoted(&q, name, strlen(name)) ||
        sl_buf_putc(&q, 0);
    if (r) {
        sl_buf_free(&q);
        return sl_err_set(err, "out of memory");
    }
    r = conn_query_text(f->tgt, (const char *)q.p, 2, take_engine, f, err);
    sl_buf_free(&q);
    return r;
}

int fix_build(fix *f, const diff_args *a, int writable, long batch, sl_err *err)
{
    f->batch = batch > 0 ? batch : FIX_BATCH_DEFAULT;
    f->sd = dialect_of(a->source);
    f->td = dialect_of(a->target);
    f->table = a->o.table;
    f->ttable = a->o.target_table ? a->o.target_table : a->o.table;
    f->flags = a->o.strict ? ENC_STRICT : 0;
    f->where = a->o.where;
    f->db[0] = a->source;
    f->db[1] = a->target;
    shown(f->src_shown, sizeof f->src_shown, a->source);
    shown(f->tgt_shown, sizeof f->tgt_shown, a->target);
    if (!(f->stmts = tmpfile()))
        return sl_err_set(err, "cannot create a temporary file for the fix: %s", strerror(errno));
    if (!(f->src = conn_open(a->source, a->read_timeout_ms, err)))
        return sl_err_wrap(err, "source");
    /* the source is only read: say so to the database too */
    if ((f->sd == D_PG && conn_exec(f->src, "SET default_transaction_read_only = on", err)) ||
        (f->sd == D_MYSQL && conn_exec(f->src, "SET SESSION TRANSACTION READ ONLY", err)))
        return sl_err_wrap(err, "source");
    if (!(f->tgt = (writable ? conn_open_rw : conn_open)(a->target, a->read_timeout_ms, err)))
        return sl_err_wrap(err, "target");
    if (conn_describe(f->src, f->table, &f->sdesc, err))
        return sl_err_wrap(err, "source");
    if (conn_describe(f->tgt, f->ttable, &f->tdesc, err))
        return sl_err_wrap(err, "target");
    if (pick_columns(f, a, err) || resolve_tol(f, a, err))
        return -1;
    if (writable && f->td == D_MYSQL && mysql_engine(f, err))
        return sl_err_wrap(err, "target");
    for (int k = FIX_DEL; k <= FIX_INS; k++)
        if (build_kind(f, k, err))
            return -1;
    if (f->inbatch) {
        uint8_t two = 2;
        f->inbatch = 0;
        f->r.batches++;
        if (fwrite(&two, 1, 1, f->stmts) != 1)
            return sl_err_set(err, "cannot write the fix's temporary file");
    }
    if (fflush(f->stmts))
        return sl_err_set(err, "cannot write the fix's temporary file: %s", strerror(errno));
    return 0;
}

/* ---- the script --------------------------------------------------------- */

/* Reads the next item of stmts: 1 a statement (in f->stmt), 2 a batch end,
 * 0 the end, -1 an error. */
static int next_item(fix *f, sl_err *err)
{
    uint8_t t;
    uint32_t len;
    if (fread(&t, 1, 1, f->stmts) != 1)
        return 0;
    if (t == 2)
        return 2;
    sl_buf_reset(&f->stmt);
    if (t != 1 || fread(&len, 4, 1, f->stmts) != 1 || sl_buf_reserve(&f->stmt, (size_t)len + 1) ||
        fread(f->stmt.p, 1, len, f->stmts) != len)
        return sl_err_set(err, "the fix's temporary file is truncated");
    f->stmt.len = len;
    f->stmt.p[len] = '\0';
    return 1;
}

static const char *begin_sql(const fix *f)
{
    return f->td == D_MYSQL ? "START TRANSACTION" : "BEGIN";
}

/* name for a comment line: a line break in it would end the comment */
static void put_comment_name(FILE *out, const char *name)
{
    for (const char *p = name; *p; p++)
        fputc(*p == '\n' || *p == '\r' ? ' ' : *p, out);
}

int fix_write(fix *f, FILE *out, sl_err *err)
{
    char when[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    fprintf(out,
            "-- sluice fix: the statements that make the target table equal to the source\n"
            "-- source: %s table ",
            f->src_shown);
    put_comment_name(out, f->table);
    fprintf(out, "\n-- target: %s table ", f->tgt_shown);
    put_comment_name(out, f->ttable);
    fprintf(out,
            " (%s)\n"
            "-- rows: %llu to insert, %llu to update, %llu to delete, in %llu transaction%s\n",
            dialect_name(f->td), (unsigned long long)f->r.inserts, (unsigned long long)f->r.updates,
            (unsigned long long)f->r.deletes, (unsigned long long)f->r.batches,
            f->r.batches == 1 ? "" : "s");
    if (f->r.vanished)
        fprintf(out, "-- %llu divergent key%s no longer in the source: left out\n",
                (unsigned long long)f->r.vanished, f->r.vanished == 1 ? " is" : "s are");
    fprintf(out, "-- generated %s; apply to the target only\n", when);
    if (f->td == D_PG)
        /* as sluice's own sessions: a literal without an offset (a
         * timestamp copied into a timestamptz) reads as UTC */
        fputs("SET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\n"
              "SET TimeZone = 'UTC';\nSET DateStyle = 'ISO, YMD';\nSET IntervalStyle = "
              "'postgres';\n",
              out);
    else if (f->td == D_MYSQL)
        /* strict as --apply's session: a value the column cannot hold is
         * an error, not silently cut or zeroed */
        fputs("SET NAMES utf8mb4;\nSET time_zone = '+00:00';\nSET SESSION sql_mode = "
              "'NO_BACKSLASH_ESCAPES,STRICT_ALL_TABLES';\n",
              out);
    rewind(f->stmts);
    int open = 0, t;
    while ((t = next_item(f, err)) > 0) {
        if (t == 2) {
            fputs("COMMIT;\n", out);
            open = 0;
            continue;
        }
        if (!open) {
            fprintf(out, "%s;\n", begin_sql(f));
            open = 1;
        }
        fwrite(f->stmt.p, 1, f->stmt.len, out);
        fputs(";\n", out);
    }
    if (t < 0)
        return -1;
    if (!f->r.inserts && !f->r.updates && !f->r.deletes)
        fputs("-- nothing to change\n", out);
    if (ferror(out))
        return sl_err_set(err, "cannot write the fix SQL: %s", strerror(errno));
    return 0;
}

/* Whether path names the file of SQLite DSN dsn (sqlite:PATH or
 * sqlite:file:PATH?...). */
static int same_file(const char *path, const char *dsn)
{
    struct stat a, b;
    if (!dsn || strncmp(dsn, "sqlite:", 7) || stat(path, &a))
        return 0;
    const char *p = dsn + 7;
    if (!strncmp(p, "file:", 5))
        p += 5;
    char *db = strndup(p, strcspn(p, "?"));
    int same = db && !stat(db, &b) && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
    free(db);
    return same;
}

int fix_write_file(fix *f, const char *path, sl_err *err)
{
    /* the rename would replace a database with the script */
    for (int k = 0; k < 2; k++)
        if (same_file(path, f->db[k]))
            return sl_err_setc(err, SL_INVALID,
                               "--fix-sql \"%s\" is the %s database's own file; nothing was "
                               "written",
                               path, k ? "target" : "source");
    size_t n = strlen(path) + 32;
    char *tmp = malloc(n);
    if (!tmp)
        return sl_err_set(err, "out of memory");
    snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
    /* a new file only: never through a link or over a file already there */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    FILE *out = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!out) {
        if (fd >= 0) {
            close(fd);
            unlink(tmp);
        }
        sl_err_setc(err, SL_INVALID, "cannot create \"%s\": %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    int rc = fix_write(f, out, err);
    if (fflush(out) || fsync(fileno(out)))
        rc = rc ? rc : sl_err_set(err, "cannot write \"%s\": %s", tmp, strerror(errno));
    if (fclose(out))
        rc = rc ? rc : sl_err_set(err, "cannot write \"%s\": %s", tmp, strerror(errno));
    if (rc == 0 && rename(tmp, path))
        rc = sl_err_setc(err, SL_INVALID, "cannot rename \"%s\" to \"%s\": %s", tmp, path,
                         strerror(errno));
    if (rc)
        unlink(tmp);
    free(tmp);
    return rc;
}

/* ---- applying ------------------------------------------------------------- */

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) && errno == EINTR)
        ;
}

int fix_apply(fix *f, int64_t rows_per_second, sl_err *err)
{
    /* the session: strict about bad values, and literals read as written */
    if ((f->td == D_PG && conn_exec(f->tgt, "SET standard_conforming_strings = on", err)) ||
        (f->td == D_MYSQL &&
         conn_exec(f->tgt,
                   "SET SESSION sql_mode = "
                   "'ANSI_QUOTES,PIPES_AS_CONCAT,NO_BACKSLASH_ESCAPES,STRICT_ALL_TABLES'",
                   err)))
        return sl_err_wrap(err, "target");
    double t0 = sl_now();
    uint64_t done = 0, batch = 0, inbatch = 0;
    int open = 0, t;
    rewind(f->stmts);
    volatile sig_atomic_t *stop = cli_stop_flag();
    while ((t = next_item(f, err)) > 0) {
        if (t == 2) {
            if (open && conn_exec(f->tgt, "COMMIT", err))
                goto failed;
            open = 0;
            f->r.applied += inbatch;
            inbatch = 0;
            batch++;
            if (*stop)
                return sl_err_set(err,
                                  "interrupted after %llu of %llu transactions (%llu "
                                  "statements committed)",
                                  (unsigned long long)batch, (unsigned long long)f->r.batches,
                                  (unsigned long long)f->r.applied);
            continue;
        }
        if (!open) {
            if (conn_exec(f->tgt, begin_sql(f), err))
                goto failed;
            open = 1;
        }
        if (conn_exec(f->tgt, (const char *)f->stmt.p, err))
            goto failed;
        inbatch++;
        done++;
        if (rows_per_second > 0) {
            double due = (double)done / (double)rows_per_second - (sl_now() - t0);
            if (due > 0)
                sleep_s(due);
        }
    }
    return t < 0 ? -1 : 0;
failed:;
    sl_err keep = *err, ignored = {0};
    if (open)
        conn_exec(f->tgt, "ROLLBACK", &ignored);
    *err = keep;
    if (f->nontx[0]) {
        /* nothing was rolled back: what ran of the batch stays */
        f->r.applied += inbatch;
        return sl_err_wrap(err,
                           "statement %llu of transaction %llu of %llu failed; the target "
                           "table's engine (%s) cannot roll back, so the %llu statement%s of "
                           "it before the failing one remain%s written (%llu statements "
                           "written in all)",
                           (unsigned long long)inbatch + 1, (unsigned long long)batch + 1,
                           (unsigned long long)f->r.batches, f->nontx, (unsigned long long)inbatch,
                           inbatch == 1 ? "" : "s", inbatch == 1 ? "s" : "",
                           (unsigned long long)f->r.applied);
    }
    return sl_err_wrap(err,
                       "transaction %llu of %llu failed and was rolled back (%llu statements "
                       "committed before it)",
                       (unsigned long long)batch + 1, (unsigned long long)f->r.batches,
                       (unsigned long long)f->r.applied);
}

/* ---- re-checking ---------------------------------------------------------- */

/* One side's rows of a chunk: [u32 klen][key][u32 rlen][row encoding]... */
typedef struct side_rows {
    fix *f;
    sl_buf rows;
} side_rows;

static int take_side(void *ctx, const enc_val *v, size_t n, sl_err *err)
{
    side_rows *s = ctx;
    fix *f = s->f;
    sl_buf_reset(&f->kb);
    for (size_t k = 0; k < f->nkey; k++)
        if (enc_key(&f->kb, f->cmp_cls[k], &v[k], err))
            return -1;
    /* each column's encoding behind its length, under its tolerance's
     * exact transforms (rounding, trimming, folding), as the diff compares */
    sl_buf_reset(&f->scratch);
    for (size_t i = 0; i < n; i++) {
        size_t at = f->scratch.len;
        uint32_t l = 0;
        if (sl_buf_append(&f->scratch, &l, 4) ||
            enc_value_tol(&f->scratch, f->cmp_cls[i], &v[i], f->flags, f->tol ? &f->tol[i] : NULL))
            return sl_err_set(err, "out of memory");
        l = (uint32_t)(f->scratch.len - at - 4);
        memcpy(f->scratch.p + at, &l, 4);
    }
    uint32_t kl = (uint32_t)f->kb.len, rl = (uint32_t)f->scratch.len;
    if (sl_buf_append(&s->rows, &kl, 4) || sl_buf_append(&s->rows, f->kb.p, kl) ||
        sl_buf_append(&s->rows, &rl, 4) || sl_buf_append(&s->rows, f->scratch.p, rl))
        return sl_err_set(err, "out of memory");
    return 0;
}

/* The next (key, row) of b at *off; 0 at the end. */
static int next_row(const sl_buf *b, size_t *off, const uint8_t **k, uint32_t *kl,
                    const uint8_t **r, uint32_t *rl)
{
    if (*off >= b->len)
        return 0;
    memcpy(kl, b->p + *off, 4);
    *k = b->p + *off + 4;
    memcpy(rl, b->p + *off + 4 + *kl, 4);
    *r = b->p + *off + 8 + *kl;
    *off += 8 + (size_t)*kl + *rl;
    return 1;
}

/* Whether two rows as take_side wrote them are equal: each column's
 * encodings equal, or within the column's tolerance. 1 equal, 0 not, -1
 * out of memory. */
static int rows_equal(const fix *f, const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    if (al == bl && memcmp(a, b, al) == 0)
        return 1;
    if (!f->tol)
        return 0;
    size_t ao = 0, bo = 0;
    for (size_t i = 0; i < f->ncmp; i++) {
        uint32_t la, lb;
        if (ao + 4 > al || bo + 4 > bl)
            return 0;
        memcpy(&la, a + ao, 4);
        memcpy(&lb, b + bo, 4);
        ao += 4;
        bo += 4;
        if (la > al - ao || lb > bl - bo)
            return 0;
        if (la != lb || memcmp(a + ao, b + bo, la)) {
            int w = enc_tol_within(a + ao, la, b + bo, lb, f->flags, &f->tol[i]);
            if (w != 1)
                return w;
        }
        ao += la;
        bo += lb;
    }
    return ao == al && bo == bl;
}

static void say_unequal(fix *f, const uint8_t *key, size_t klen, const char *why)
{
    if (++f->r.unequal > 10)
        return;
    enc_val kv[ENC_MAX_KEY_COLS];
    sl_buf shown = {0};
    sl_err e = {0};
    if (enc_key_decode(key, klen, f->nkey, &f->kb, kv, &e) == 0)
        for (size_t k = 0; k < f->nkey; k++)
            if ((k && sl_buf_printf(&shown, ", ")) || sl_buf_printf(&shown, "%s=", f->cols[k]) ||
                enc_display_prefix(&shown, &kv[k], 64))
                break;
    fprintf(stderr, "sluice: after the repair, key (%.*s) still differs: %s\n", (int)shown.len,
            shown.p ? (const char *)shown.p : "", why);
    sl_buf_free(&shown);
}

int fix_recheck(fix *f, sl_err *err)
{
    const char *cols[CONN_MAX_COLS];
    for (size_t i = 0; i < f->ncmp; i++)
        cols[i] = f->cols[f->cmp[i]];
    conn_query qs = {.table = f->table,
                     .cols = cols,
                     .cls = f->cmp_cls,
                     .ncols = f->ncmp,
                     .nkey = f->nkey,
                     .where = f->where};
    conn_query qt = qs;
    qt.table = f->ttable;
    side_rows s = {f, {0}}, t = {f, {0}};
    rec v[CHUNK];
    size_t n = 0;
    int rc = 0;
    for (int kind = FIX_DEL; kind <= FIX_INS && rc == 0; kind++) {
        rewind(f->spool[kind]);
        for (;;) {
            rc = recs_read(f->spool[kind], v, &n, err);
            if (rc || n == 0) {
                recs_free(v, n);
                break;
            }
            const uint8_t **kp;
            size_t *kl;
            qsort(v, n, sizeof *v, rec_cmp);
            sl_buf_reset(&s.rows);
            sl_buf_reset(&t.rows);
            rc = keys_of(v, n, &kp, &kl, err);
            if (rc == 0) {
                rc = conn_fetch_keys(f->src, &qs, kp, kl, n, take_side, &s, err);
                if (rc)
                    sl_err_wrap(err, "re-checking, source");
                else if ((rc = conn_fetch_keys(f->tgt, &qt, kp, kl, n, take_side, &t, err)))
                    sl_err_wrap(err, "re-checking, target");
                free_keys(kp, kl);
            }
            /* both replies are in key order: merge them */
            size_t so = 0, to = 0;
            const uint8_t *sk = NULL, *tk = NULL, *sr = NULL, *tr = NULL;
            uint32_t skl = 0, tkl = 0, srl = 0, trl = 0;
            int hs = rc == 0 && next_row(&s.rows, &so, &sk, &skl, &sr, &srl);
            int ht = rc == 0 && next_row(&t.rows, &to, &tk, &tkl, &tr, &trl);
            while (rc == 0 && (hs || ht)) {
                int eq, c = !hs ? 1 : !ht ? -1 : key_cmp(sk, skl, tk, tkl);
                if (c < 0)
                    say_unequal(f, sk, skl, "missing in the target");
                else if (c > 0)
                    say_unequal(f, tk, tkl, "still in the target, not in the source");
                else if ((eq = rows_equal(f, sr, srl, tr, trl)) < 0)
                    rc = sl_err_set(err, "out of memory");
                else if (!eq)
                    say_unequal(f, sk, skl, "values differ");
                if (c <= 0)
                    hs = next_row(&s.rows, &so, &sk, &skl, &sr, &srl);
                if (c >= 0)
                    ht = next_row(&t.rows, &to, &tk, &tkl, &tr, &trl);
            }
            f->r.checked += rc == 0 ? n : 0;
            recs_free(v, n);
            if (rc)
                break;
        }
    }
    if (f->r.unequal > 10)
        fprintf(stderr, "sluice: ... and %llu more keys that still differ\n",
                (unsigned long long)(f->r.unequal - 10));
    sl_buf_free(&s.rows);
    sl_buf_free(&t.rows);
    return rc;
}
