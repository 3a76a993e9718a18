#include "conn_impl.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

conn *conn_open(const char *dsn, int read_timeout_ms, sl_err *err)
{
    if (strncmp(dsn, "sqlite:", 7) == 0)
        return conn_sqlite_open(dsn + 7, read_timeout_ms, 0, err);
    if (strncmp(dsn, "mysql://", 8) == 0 || strncmp(dsn, "mariadb://", 10) == 0)
        return conn_mysql_open(dsn, read_timeout_ms, err);
    return conn_pg_open(dsn, read_timeout_ms, err);
}

conn *conn_open_rw(const char *dsn, int read_timeout_ms, sl_err *err)
{
    if (strncmp(dsn, "sqlite:", 7) == 0)
        return conn_sqlite_open(dsn + 7, read_timeout_ms, 1, err);
    return conn_open(dsn, read_timeout_ms, err);
}

static int no_rows(void *ctx, const enc_val *v, size_t n, sl_err *err)
{
    (void)ctx;
    (void)v;
    (void)n;
    return sl_err_set(err, "a statement meant to write returned rows");
}

int conn_exec(conn *c, const char *sql, sl_err *err)
{
    /* every driver's query runs a statement with no result columns */
    return c->ops->query(c, sql, NULL, 0, 0, NULL, no_rows, NULL, err);
}

int conn_query_text(conn *c, const char *sql, size_t ncols, conn_row_fn fn, void *ctx, sl_err *err)
{
    int cls[8];
    if (ncols > 8)
        return sl_err_set(err, "conn_query_text: too many columns");
    for (size_t i = 0; i < ncols; i++)
        cls[i] = ENC_TEXT;
    return c->ops->query(c, sql, NULL, 0, ncols, cls, fn, ctx, err);
}

void conn_free(conn *c)
{
    if (c)
        c->ops->free(c);
}

void conn_set_tick(conn *c, void (*fn)(void *ctx), void *ctx)
{
    c->tick = fn;
    c->tick_ctx = ctx;
}

int conn_is_broken(const conn *c)
{
    return c->ops->is_broken ? c->ops->is_broken(c) : 0;
}

const char *conn_name(const conn *c)
{
    return c->name;
}

int conn_describe(conn *c, const char *table, conn_table **out, sl_err *err)
{
    return c->ops->describe(c, table, out, err);
}

void conn_table_free(conn_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->ncols; i++) {
        free(t->cols[i].name);
        free(t->cols[i].type);
    }
    for (size_t i = 0; i < t->nkey; i++)
        free(t->key[i]);
    free(t->cols);
    free(t->key);
    free(t);
}

int conn_table_add_key(conn_table *t, const char *name, size_t len, sl_err *err)
{
    char **k = realloc(t->key, (t->nkey + 1) * sizeof *k);
    if (!k)
        return sl_err_set(err, "out of memory");
    t->key = k;
    if (!(k[t->nkey] = strndup(name ? name : "", len)))
        return sl_err_set(err, "out of memory");
    t->nkey++;
    return 0;
}

conn_col *conn_table_add_col(conn_table *t, size_t *cap, const char *name, size_t nlen,
                             const char *type, size_t tlen, int cls, sl_err *err)
{
    if (t->ncols == *cap) {
        size_t n = *cap ? *cap * 2 : 16;
        conn_col *c = realloc(t->cols, n * sizeof *c);
        if (!c)
            return sl_err_set(err, "out of memory"), NULL;
        t->cols = c;
        *cap = n;
    }
    conn_col *c = &t->cols[t->ncols];
    c->name = strndup(name ? name : "", nlen);
    c->type = strndup(type ? type : "", tlen);
    c->cls = cls;
    t->ncols++; /* counted either way: conn_table_free frees what there is */
    if (!c->name || !c->type)
        return sl_err_set(err, "out of memory"), NULL;
    return c;
}

/* ---- SQL building ----------------------------------------------------- */

/* "schema.table" -> "schema"."table"; a name without a dot is one part. */
static int put_table(conn *c, sl_buf *sql, const char *table)
{
    const char *dot = strchr(table, '.');
    if (!dot)
        return c->ops->quote(c, sql, table);
    char *schema = strndup(table, (size_t)(dot - table));
    if (!schema)
        return -1;
    int r =
        c->ops->quote(c, sql, schema) || sl_buf_putc(sql, '.') || c->ops->quote(c, sql, dot + 1);
    free(schema);
    return r ? -1 : 0;
}

static int put_keycol(conn *c, sl_buf *sql, const conn_query *q, size_t k)
{
    int is_text = q->cls[k] == ENC_TEXT || q->cls[k] == ENC_OTHER;
    if (is_text && c->ops->text_key_prefix && sl_buf_printf(sql, "%s", c->ops->text_key_prefix))
        return -1;
    if (c->ops->quote(c, sql, q->cols[k]))
        return -1;
    if (is_text)
        return sl_buf_printf(sql, "%s", c->ops->text_key_collate);
    return 0;
}

static int put_param(conn *c, sl_buf *sql, size_t n, const char *const *ptext)
{
    if (ptext)
        return sl_buf_printf(sql, "%s", ptext[n - 1]);
    if (c->ops->bare_question) /* parameters are numbered in the order they appear */
        return sl_buf_putc(sql, '?');
    return sl_buf_printf(sql, "%c%zu", c->ops->numbered_dollar ? '$' : '?', n);
}

/* The key columns as a row value "(k1, k2)" (param NULL), or the next nkey
 * parameters "($n, $n+1)"; a single column goes bare. */
static int put_key_tuple(conn *c, sl_buf *sql, const conn_query *q, size_t *param,
                         const char *const *ptext)
{
    int multi = q->nkey > 1;
    if (multi && sl_buf_putc(sql, '('))
        return -1;
    for (size_t k = 0; k < q->nkey; k++)
        if ((k && sl_buf_append(sql, ", ", 2)) ||
            (param ? put_param(c, sql, (*param)++, ptext) : put_keycol(c, sql, q, k)))
            return -1;
    return multi ? sl_buf_putc(sql, ')') : 0;
}

/* (k1, k2) OP ($n, $n+1): row-value comparison, supported by PostgreSQL and
 * SQLite >= 3.15. ptext, when given, replaces parameter n by ptext[n - 1]. */
static int put_key_cmp(conn *c, sl_buf *sql, const conn_query *q, const char *op, size_t *param,
                       const char *const *ptext)
{
    return put_key_tuple(c, sql, q, NULL, ptext) || sl_buf_printf(sql, " %s ", op) ||
                   put_key_tuple(c, sql, q, param, ptext)
               ? -1
               : 0;
}

/* SELECT cols FROM table [sample] WHERE (where) [AND cond] */
static int put_select_sample(conn *c, sl_buf *sql, const conn_query *q, size_t first, size_t ncols,
                             const char *sample, const char *cond)
{
    if (sl_buf_printf(sql, "SELECT "))
        return -1;
    for (size_t k = first; k < first + ncols; k++)
        if ((k > first && sl_buf_append(sql, ", ", 2)) || c->ops->quote(c, sql, q->cols[k]))
            return -1;
    if (sl_buf_printf(sql, " FROM ") || put_table(c, sql, q->table) ||
        sl_buf_printf(sql, "%s", sample))
        return -1;
    if (sl_buf_printf(sql, " WHERE (%s)", q->where && *q->where ? q->where : "1=1"))
        return -1;
    return cond ? sl_buf_printf(sql, " AND %s", cond) : 0;
}

static int put_select(conn *c, sl_buf *sql, const conn_query *q, size_t first, size_t ncols)
{
    return put_select_sample(c, sql, q, first, ncols, "", NULL);
}

typedef struct every_ctx {
    conn_row_fn fn;
    void *ctx;
    uint64_t seen, step, emitted, most;
} every_ctx;

/* Passes on every step-th row, at most `most` of them. */
static int take_every(void *ctx, const enc_val *v, size_t n, sl_err *err)
{
    every_ctx *e = ctx;
    if (++e->seen % e->step || e->emitted == e->most)
        return 0;
    e->emitted++;
    return e->fn(e->ctx, v, n, err);
}

static int put_order(conn *c, sl_buf *sql, const conn_query *q)
{
    if (sl_buf_printf(sql, " ORDER BY "))
        return -1;
    for (size_t k = 0; k < q->nkey; k++)
        if ((k && sl_buf_append(sql, ", ", 2)) || put_keycol(c, sql, q, k))
            return -1;
    return 0;
}

/* Where values carry a storage class (SQLite), a key value stored in
 * another class than its key's (an integer key holding '5' as text, a uuid
 * as a blob) sorts apart from its peers and matches no parameter of the
 * key's class: a range would misplace it and a fetch miss it. Refused. */
typedef struct storage_ctx {
    conn_row_fn fn;
    void *ctx;
    const conn_query *q;
} storage_ctx;

static enc_vkind key_storage_kind(int cls)
{
    switch (cls) {
    case ENC_INT:
        return ENC_V_INT;
    case ENC_BYTEA:
        return ENC_V_BLOB;
    default: /* text, uuid (canonical text), other */
        return ENC_V_TEXT;
    }
}

static int check_key_storage(void *ctx, const enc_val *v, size_t n, sl_err *err)
{
    storage_ctx *s = ctx;
    for (size_t k = 0; k < s->q->nkey && k < n; k++) {
        enc_vkind want = key_storage_kind(s->q->cls[k]);
        if (v[k].kind != want && v[k].kind != ENC_V_NULL)
            return sl_err_setc(
                err, SL_INVALID,
                "key column \"%s\" holds a value stored as %s, its key being read as %s; "
                "store every key value of a column in one type (SQLite: e.g. "
                "UPDATE ... SET k = CAST(k AS %s))",
                s->q->cols[k],
                v[k].kind == ENC_V_INT     ? "an integer"
                : v[k].kind == ENC_V_FLOAT ? "a real"
                : v[k].kind == ENC_V_BLOB  ? "a blob"
                                           : "text",
                enc_class_name(s->q->cls[k]),
                want == ENC_V_INT    ? "INTEGER"
                : want == ENC_V_BLOB ? "BLOB"
                                     : "TEXT");
    }
    return s->fn(s->ctx, v, n, err);
}

/* The row callback for a read of q's keys: fn itself, or fn behind the
 * storage check where the driver needs it. */
static conn_row_fn key_reader(conn *c, const conn_query *q, conn_row_fn fn, void *ctx,
                              storage_ctx *s, void **out_ctx)
{
    if (!c->ops->has_storage_classes) {
        *out_ctx = ctx;
        return fn;
    }
    *s = (storage_ctx){fn, ctx, q};
    *out_ctx = s;
    return check_key_storage;
}

/* Decodes a bound's key into params[*np..]. */
static int bound_params(const mk_bound *b, const conn_query *q, sl_buf *scratch, enc_val *params,
                        size_t *np, sl_err *err)
{
    if (enc_key_decode(b->key, b->len, q->nkey, scratch, params + *np, err) != 0)
        return -1;
    *np += q->nkey;
    return 0;
}

int conn_range_sql(conn *c, const conn_query *q, int lo_kind, int hi_kind, const char *const *ptext,
                   sl_buf *sql)
{
    size_t param = 1;
    if (put_select(c, sql, q, 0, q->ncols))
        return -1;
    if (lo_kind != MK_UNBOUNDED &&
        (sl_buf_printf(sql, " AND ") ||
         put_key_cmp(c, sql, q, lo_kind == MK_INCL ? ">=" : ">", &param, ptext)))
        return -1;
    if (hi_kind != MK_UNBOUNDED &&
        (sl_buf_printf(sql, " AND ") ||
         put_key_cmp(c, sql, q, hi_kind == MK_INCL ? "<=" : "<", &param, ptext)))
        return -1;
    if (put_order(c, sql, q) ||
        (q->limit && sl_buf_printf(sql, " LIMIT %llu", (unsigned long long)q->limit)))
        return -1;
    return sl_buf_putc(sql, 0) ? -1 : 0;
}

int conn_stream_range(conn *c, const conn_query *q, const mk_bound *lo, const mk_bound *hi,
                      conn_row_fn fn, void *ctx, sl_err *err)
{
    sl_buf sql = {0}, s1 = {0}, s2 = {0};
    enc_val *params = calloc(2 * q->nkey + 1, sizeof *params);
    size_t np = 0;
    int rc = -1;
    if (!params) {
        sl_err_set(err, "out of memory");
        goto done;
    }
    if ((lo->kind != MK_UNBOUNDED && bound_params(lo, q, &s1, params, &np, err)) ||
        (hi->kind != MK_UNBOUNDED && bound_params(hi, q, &s2, params, &np, err)))
        goto done;
    if (c->ops->stream_range) {
        rc = c->ops->stream_range(c, q, lo->kind, hi->kind, params, np, fn, ctx, err);
        goto done;
    }
    if (conn_range_sql(c, q, lo->kind, hi->kind, NULL, &sql)) {
        sl_err_set(err, "out of memory");
        goto done;
    }
    storage_ctx sc;
    void *rctx;
    conn_row_fn rfn = key_reader(c, q, fn, ctx, &sc, &rctx);
    rc = c->ops->query(c, (const char *)sql.p, params, np, q->ncols, q->cls, rfn, rctx, err);
done:
    free(params);
    sl_buf_free(&sql);
    sl_buf_free(&s1);
    sl_buf_free(&s2);
    return rc;
}

/* Keys a fetch asks for in one statement: (k1, k2) IN ((..), (..)) with at
 * most about 500 parameters (old SQLite builds allow 999). */
#define FETCH_BATCH_PARAMS 500

int conn_fetch_keys(conn *c, const conn_query *q, const uint8_t *const *keys, const size_t *lens,
                    size_t nkeys, conn_row_fn fn, void *ctx, sl_err *err)
{
    size_t batch = q->nkey ? FETCH_BATCH_PARAMS / q->nkey : 1;
    if (batch < 1)
        batch = 1;
    if (batch > 64)
        batch = 64;
    sl_buf sql = {0}, *scratch = calloc(batch, sizeof *scratch);
    enc_val *params = calloc(batch * q->nkey + 1, sizeof *params);
    int rc = -1;
    if (!params || !scratch) {
        sl_err_set(err, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < nkeys; i += batch) {
        size_t m = nkeys - i < batch ? nkeys - i : batch, param = 1;
        for (size_t k = 0; k < m; k++)
            if (enc_key_decode(keys[i + k], lens[i + k], q->nkey, &scratch[k], params + k * q->nkey,
                               err) != 0)
                goto done;
        /* rows come back in key order whatever the order asked in: the
         * caller merges both sides' replies as sorted lists */
        sl_buf_reset(&sql);
        if (put_select(c, &sql, q, 0, q->ncols) || sl_buf_printf(&sql, " AND ") ||
            put_key_tuple(c, &sql, q, NULL, NULL) || sl_buf_printf(&sql, " IN ("))
            goto oom;
        for (size_t k = 0; k < m; k++)
            if ((k && sl_buf_append(&sql, ", ", 2)) || put_key_tuple(c, &sql, q, &param, NULL))
                goto oom;
        if (sl_buf_putc(&sql, ')') || put_order(c, &sql, q) || sl_buf_putc(&sql, 0))
            goto oom;
        storage_ctx sc;
        void *rctx;
        conn_row_fn rfn = key_reader(c, q, fn, ctx, &sc, &rctx);
        if ((c->ops->fetch ? c->ops->fetch : c->ops->query)(
                c, (const char *)sql.p, params, m * q->nkey, q->ncols, q->cls, rfn, rctx, err) != 0)
            goto done;
    }
    rc = 0;
    goto done;
oom:
    sl_err_set(err, "out of memory");
done:
    free(params);
    for (size_t k = 0; scratch && k < batch; k++)
        sl_buf_free(&scratch[k]);
    free(scratch);
    sl_buf_free(&sql);
    return rc;
}

typedef struct count_ctx {
    uint64_t n;
    enc_val lo, hi;
    int have;
} count_ctx;

static int take_count(void *ctx, const enc_val *v, size_t n, sl_err *err)
{
    count_ctx *cc = ctx;
    (void)n;
    if (v[0].kind == ENC_V_INT)
        cc->n = (uint64_t)v[0].i;
    else if (v[0].kind == ENC_V_TEXT)
        cc->n = strtoull(v[0].p, NULL, 10);
    else
        return sl_err_set(err, "count(*) returned no number");
    return 0;
}

static int take_minmax(void *ctx, const enc_val *v, size_t n, sl_err *err)
{
    count_ctx *cc = ctx;
    (void)n;
    (void)err;
    if (v[0].kind == ENC_V_NULL || v[1].kind == ENC_V_NULL)
        return 0;
    for (int k = 0; k < 2; k++) {
        enc_val *d = k ? &cc->hi : &cc->lo;
        d->kind = ENC_V_INT;
        d->i = v[k].kind == ENC_V_INT ? v[k].i : strtoll(v[k].p, NULL, 10);
    }
    cc->have = 1;
    return 0;
}

/* Hands fn the split keys that cut the integers min..max into nranges
 * even parts, each above min. In unsigned 128-bit arithmetic: the span of
 * -2^63..2^63-1 is 2^64, and span * i overflows 64 bits; offsets stay
 * below span. More ranges than keys: repeats skipped. 0, or -1 with err. */
static int even_splits(int64_t min, int64_t max, size_t nranges, conn_row_fn fn, void *ctx,
                       sl_err *err)
{
    uint64_t lo = (uint64_t)min ^ (1ULL << 63), hi = (uint64_t)max ^ (1ULL << 63);
    if (hi < lo)
        return sl_err_setc(err, SL_DATABASE, "min() of the key is above its max()");
    unsigned __int128 span = (unsigned __int128)(hi - lo) + 1;
    uint64_t prev = lo;
    for (size_t i = 1; i < nranges; i++) {
        uint64_t at = lo + (uint64_t)(span * i / nranges);
        if (at <= prev)
            continue;
        prev = at;
        enc_val v = {.kind = ENC_V_INT, .i = (int64_t)(at ^ (1ULL << 63))};
        if (fn(ctx, &v, 1, err))
            return -1;
    }
    return 0;
}

int conn_split_keys(conn *c, const conn_query *q, size_t nranges, uint64_t *rows, conn_row_fn fn,
                    void *ctx, sl_err *err)
{
    sl_buf sql = {0};
    count_ctx cc = {0};
    int rc = -1;
    int intcls = ENC_INT;
    if (sl_buf_printf(&sql, "SELECT %s FROM ", c->ops->estimate ? "1" : "count(*)") ||
        put_table(c, &sql, q->table) ||
        sl_buf_printf(&sql, " WHERE (%s)", q->where && *q->where ? q->where : "1=1") ||
        sl_buf_putc(&sql, 0))
        goto oom;
    /* the count only shapes the plan: a big table's estimate serves as well
     * as a full scan for count(*), which would cost a read of the table */
    uint64_t guess = 0;
    if (c->ops->estimate && c->ops->estimate(c, (const char *)sql.p, &guess, err))
        goto done;
    if (guess >= CONN_ESTIMATE_MIN) {
        cc.n = guess;
    } else {
        sl_buf_reset(&sql);
        if (sl_buf_printf(&sql, "SELECT count(*) FROM ") || put_table(c, &sql, q->table) ||
            sl_buf_printf(&sql, " WHERE (%s)", q->where && *q->where ? q->where : "1=1") ||
            sl_buf_putc(&sql, 0))
            goto oom;
        if (c->ops->query(c, (const char *)sql.p, NULL, 0, 1, &intcls, take_count, &cc, err))
            goto done;
    }
    *rows = cc.n;
    if (nranges < 2 || cc.n < 2) {
        rc = 0;
        goto done;
    }
    if (q->nkey == 1 && q->cls[0] == ENC_INT) {
        /* integer key: evenly spaced bounds between min and max, no scan */
        int cls2[2] = {ENC_INT, ENC_INT};
        sl_buf_reset(&sql);
        if (sl_buf_printf(&sql, "SELECT min(") || c->ops->quote(c, &sql, q->cols[0]) ||
            sl_buf_printf(&sql, "), max(") || c->ops->quote(c, &sql, q->cols[0]) ||
            sl_buf_printf(&sql, ") FROM ") || put_table(c, &sql, q->table) ||
            sl_buf_printf(&sql, " WHERE (%s)", q->where && *q->where ? q->where : "1=1") ||
            sl_buf_putc(&sql, 0))
            goto oom;
        if (c->ops->query(c, (const char *)sql.p, NULL, 0, 2, cls2, take_minmax, &cc, err))
            goto done;
        if (!cc.have) {
            rc = 0;
            goto done;
        }
        rc = even_splits(cc.lo.i, cc.hi.i, nranges, fn, ctx, err);
        goto done;
    }
    /* other keys on a big table: quantiles of a sample of its pages, sorted
     * (about 200 sampled keys a range); an OFFSET per quantile would walk the
     * key index from its start each time, ranges times over */
    if ((c->ops->tablesample || c->ops->sample_where) && cc.n >= CONN_SAMPLE_MIN) {
        const char *ts = c->ops->tablesample ? c->ops->tablesample : "";
        const char *cond = c->ops->tablesample ? NULL : c->ops->sample_where;
        double pct = 100.0 * 200.0 * (double)nranges / (double)cc.n;
        enc_val p = {.kind = ENC_V_TEXT};
        char pcts[32];
        snprintf(pcts, sizeof pcts, "%.6f", pct < 100 ? pct : 100);
        p.p = pcts;
        p.len = strlen(pcts);
        /* the sample is a random set of pages, its size varies by a third
         * either way: count it first (the same pages: the sample is
         * repeatable) and space the split keys by what it holds */
        sl_buf_reset(&sql);
        if (sl_buf_printf(&sql, "SELECT count(*) FROM ") || put_table(c, &sql, q->table) ||
            sl_buf_printf(&sql, "%s WHERE (%s)", ts, q->where && *q->where ? q->where : "1=1") ||
            (cond && sl_buf_printf(&sql, " AND %s", cond)) || sl_buf_putc(&sql, 0))
            goto oom;
        cc.n = 0;
        if (c->ops->query(c, (const char *)sql.p, &p, 1, 1, &intcls, take_count, &cc, err))
            goto done;
        if (cc.n >= nranges) {
            every_ctx e = {fn, ctx, 0, cc.n / nranges, 0, nranges - 1};
            sl_buf_reset(&sql);
            if (put_select_sample(c, &sql, q, 0, q->nkey, ts, cond) || put_order(c, &sql, q) ||
                sl_buf_putc(&sql, 0))
                goto oom;
            rc = c->ops->query(c, (const char *)sql.p, &p, 1, q->nkey, q->cls, take_every, &e, err);
            goto done;
        }
        /* a sample too small to split (a table of mostly empty pages):
         * the offsets below; cc.n was the row count */
        cc.n = *rows;
    }
    /* other keys: the key at each quantile's offset, read through the key
     * order (an index walk when the key is the primary key) */
    sl_buf_reset(&sql);
    if (put_select(c, &sql, q, 0, q->nkey) || put_order(c, &sql, q) ||
        sl_buf_printf(&sql, " LIMIT 1 OFFSET ") || put_param(c, &sql, 1, NULL) ||
        sl_buf_putc(&sql, 0))
        goto oom;
    for (size_t i = 1; i < nranges; i++) {
        uint64_t at = (uint64_t)((unsigned __int128)cc.n * i / nranges);
        enc_val off = {.kind = ENC_V_INT, .i = at > INT64_MAX ? INT64_MAX : (int64_t)at};
        storage_ctx sc;
        void *rctx;
        conn_row_fn rfn = key_reader(c, q, fn, ctx, &sc, &rctx);
        if (c->ops->query(c, (const char *)sql.p, &off, 1, q->nkey, q->cls, rfn, rctx, err))
            goto done;
    }
    rc = 0;
    goto done;
oom:
    sl_err_set(err, "out of memory");
done:
    sl_buf_free(&sql);
    return rc;
}

/* " AND key >= lo AND key < hi" for the bounds given, their decoded keys
 * into params[*np..] (lo's first, as the placeholders number them). */
static int put_bounds(conn *c, sl_buf *sql, const conn_query *q, const mk_bound *lo,
                      const mk_bound *hi, sl_buf scratch[2], enc_val *params, size_t *np,
                      sl_err *err)
{
    size_t param = 1;
    const mk_bound *b[2] = {lo, hi};
    for (int i = 0; i < 2; i++) {
        if (b[i]->kind == MK_UNBOUNDED)
            continue;
        const char *op =
            i ? (b[i]->kind == MK_INCL ? "<=" : "<") : (b[i]->kind == MK_INCL ? ">=" : ">");
        if (sl_buf_printf(sql, " AND ") || put_key_cmp(c, sql, q, op, &param, NULL))
            return sl_err_set(err, "out of memory");
        if (bound_params(b[i], q, &scratch[i], params, np, err))
            return -1;
    }
    return 0;
}

int conn_split_range(conn *c, const conn_query *q, const mk_bound *lo, const mk_bound *hi,
                     size_t nranges, uint64_t *rows, conn_row_fn fn, void *ctx, sl_err *err)
{
    sl_buf sql = {0}, scratch[2] = {{0}, {0}};
    enc_val *params = calloc(2 * q->nkey + 1, sizeof *params);
    size_t np = 0;
    count_ctx cc = {0};
    int rc = -1, intcls = ENC_INT, cls2[2] = {ENC_INT, ENC_INT};
    int intkey = q->nkey == 1 && q->cls[0] == ENC_INT;
    *rows = 0;
    if (!params)
        return sl_err_set(err, "out of memory");
    if (sl_buf_printf(&sql, "SELECT count(*) FROM ") || put_table(c, &sql, q->table) ||
        sl_buf_printf(&sql, " WHERE (%s)", q->where && *q->where ? q->where : "1=1"))
        goto oom;
    if (put_bounds(c, &sql, q, lo, hi, scratch, params, &np, err))
        goto done;
    if (sl_buf_putc(&sql, 0))
        goto oom;
    if (c->ops->query(c, (const char *)sql.p, params, np, 1, &intcls, take_count, &cc, err))
        goto done;
    *rows = cc.n;
    if (nranges < 2 || cc.n < 4) {
        rc = 0;
        goto done;
    }
    if (intkey) {
        sl_buf_reset(&sql);
        if (sl_buf_printf(&sql, "SELECT min(") || c->ops->quote(c, &sql, q->cols[0]) ||
            sl_buf_printf(&sql, "), max(") || c->ops->quote(c, &sql, q->cols[0]) ||
            sl_buf_printf(&sql, ") FROM ") || put_table(c, &sql, q->table) ||
            sl_buf_printf(&sql, " WHERE (%s)", q->where && *q->where ? q->where : "1=1"))
            goto oom;
        np = 0;
        if (put_bounds(c, &sql, q, lo, hi, scratch, params, &np, err))
            goto done;
        if (sl_buf_putc(&sql, 0))
            goto oom;
        if (c->ops->query(c, (const char *)sql.p, params, np, 2, cls2, take_minmax, &cc, err))
            goto done;
        if (!cc.have) {
            rc = 0;
            goto done;
        }
        /* evenly between min and max: each split key above min (so above
         * lo) and at most max (so below hi) */
        rc = even_splits(cc.lo.i, cc.hi.i, nranges, fn, ctx, err);
        goto done;
    }
    /* other keys: walked in key order, keys only; every step-th kept, the
     * step at least 2 so no split key is the range's first row (an empty
     * piece) */
    uint64_t step = cc.n / nranges < 2 ? 2 : cc.n / nranges;
    every_ctx e = {fn, ctx, 0, step, 0, nranges - 1};
    sl_buf_reset(&sql);
    np = 0;
    if (put_select(c, &sql, q, 0, q->nkey))
        goto oom;
    if (put_bounds(c, &sql, q, lo, hi, scratch, params, &np, err))
        goto done;
    if (put_order(c, &sql, q) || sl_buf_putc(&sql, 0))
        goto oom;
    storage_ctx sc;
    void *rctx;
    conn_row_fn rfn = key_reader(c, q, take_every, &e, &sc, &rctx);
    rc = c->ops->query(c, (const char *)sql.p, params, np, q->nkey, q->cls, rfn, rctx, err);
    goto done;
oom:
    sl_err_set(err, "out of memory");
done:
    free(params);
    sl_buf_free(&sql);
    sl_buf_free(&scratch[0]);
    sl_buf_free(&scratch[1]);
    return rc;
}

typedef struct lag_ctx {
    int known, replica;
    double lag;
} lag_ctx;

static int take_lag(void *ctx, const enc_val *v, size_t n, sl_err *err)
{
    lag_ctx *l = ctx;
    (void)err;
    if (n < 2)
        return 0;
    l->replica = v[0].kind == ENC_V_TEXT && v[0].len == 4 && !memcmp(v[0].p, "true", 4);
    if (v[1].kind == ENC_V_TEXT) {
        char buf[64];
        snprintf(buf, sizeof buf, "%.*s", (int)v[1].len, v[1].p);
        l->lag = strtod(buf, NULL);
        l->known = 1;
    }
    return 0;
}

int conn_replica_lag(conn *c, double *lag_s, sl_err *err)
{
    int cls[2] = {ENC_TEXT, ENC_TEXT};
    lag_ctx l = {0};
    if (!c->ops->replica_lag_sql)
        return sl_err_setc(err, SL_INVALID,
                           "%s: replication lag is measured on PostgreSQL hot standbys only",
                           conn_name(c));
    if (c->ops->query(c, c->ops->replica_lag_sql, NULL, 0, 2, cls, take_lag, &l, err))
        return -1;
    if (!l.replica)
        return sl_err_setc(err, SL_INVALID,
                           "%s is not a replica (pg_is_in_recovery() is false): "
                           "--max-replica-lag watches hot standbys",
                           conn_name(c));
    *lag_s = l.known ? (l.lag < 0 ? 0 : l.lag) : -1;
    return 0;
}
