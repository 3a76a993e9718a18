/* PostgreSQL through libpq. Rows stream in single-row mode, so memory stays
 * at one row whatever the range size. The session is pinned to UTC, ISO
 * dates, hex bytea and shortest-exact floats, so text output is canonical
 * input for the encoder whatever the server's defaults. */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn_impl.h"

typedef struct pg_conn {
    conn base;
    PGconn *pg;
    sl_buf scratch;
} pg_conn;

/* libpq messages are multi-line ("FATAL: ...\nDETAIL: ..."); keep the
 * first line, without the trailing newline. */
static void first_line(const char *msg, char *out, size_t cap)
{
    size_t n = strcspn(msg, "\n");
    if (n >= cap)
        n = cap - 1;
    memcpy(out, msg, n);
    out[n] = '\0';
}

static void pg_free(conn *c)
{
    pg_conn *p = (pg_conn *)c;
    PQfinish(p->pg);
    sl_buf_free(&p->scratch);
    free(p);
}

static int pg_quote(conn *c, sl_buf *out, const char *ident)
{
    pg_conn *p = (pg_conn *)c;
    char *q = PQescapeIdentifier(p->pg, ident, strlen(ident));
    if (!q)
        return -1;
    int r = sl_buf_append(out, q, strlen(q));
    PQfreemem(q);
    return r;
}

static int pg_error(pg_conn *p, PGresult *res, sl_err *err)
{
    char line[400];
    first_line(res ? PQresultErrorMessage(res) : PQerrorMessage(p->pg), line, sizeof line);
    if (!line[0])
        first_line(PQerrorMessage(p->pg), line, sizeof line);
    return sl_err_set(err, "%s: %s", p->base.name, line);
}

/* Params: INT as decimal text, TEXT as text, BLOB in binary format. */
static int pg_query(conn *c, const char *sql, const enc_val *params, size_t nparams, size_t ncols,
                    const int *cls, conn_row_fn fn, void *ctx, sl_err *err)
{
    (void)cls;
    pg_conn *p = (pg_conn *)c;
    const char *vals[64];
    int lens[64], fmts[64];
    char nums[64][24];
    enc_val row[512];
    if (nparams > 64 || ncols > 512)
        return sl_err_set(err, "too many key columns or columns (limits: 32 and 512)");
    for (size_t i = 0; i < nparams; i++) {
        fmts[i] = 0;
        if (params[i].kind == ENC_V_INT) {
            snprintf(nums[i], sizeof nums[i], "%lld", (long long)params[i].i);
            vals[i] = nums[i];
            lens[i] = 0;
        } else if (params[i].kind == ENC_V_NULL) {
            vals[i] = NULL;
            lens[i] = 0;
        } else {
            vals[i] = params[i].p;
            lens[i] = (int)params[i].len;
            fmts[i] = params[i].kind == ENC_V_BLOB;
        }
    }
    /* text params must be NUL-terminated for libpq: copy them into scratch,
     * reserved once so the pointers stay valid */
    size_t need = 0;
    for (size_t i = 0; i < nparams; i++)
        if (params[i].kind == ENC_V_TEXT)
            need += params[i].len + 1;
    sl_buf_reset(&p->scratch);
    if (sl_buf_reserve(&p->scratch, need + 1))
        return sl_err_set(err, "out of memory");
    for (size_t i = 0; i < nparams; i++) {
        if (params[i].kind != ENC_V_TEXT)
            continue;
        char *d = (char *)p->scratch.p + p->scratch.len;
        memcpy(d, params[i].p, params[i].len);
        d[params[i].len] = '\0';
        p->scratch.len += params[i].len + 1;
        vals[i] = d;
    }
    if (!PQsendQueryParams(p->pg, sql, (int)nparams, NULL, vals, lens, fmts, 0))
        return pg_error(p, NULL, err);
    if (!PQsetSingleRowMode(p->pg)) {
        while (PQgetResult(p->pg) != NULL) {
        }
        return sl_err_set(err, "%s: cannot enter single-row mode", p->base.name);
    }
    int rc = 0;
    PGresult *res;
    while ((res = PQgetResult(p->pg)) != NULL) {
        ExecStatusType st = PQresultStatus(res);
        if (rc == 0 && st == PGRES_SINGLE_TUPLE) {
            if ((size_t)PQnfields(res) != ncols) {
                rc = sl_err_set(err, "%s: query returned %d columns, expected %zu", p->base.name,
                                PQnfields(res), ncols);
            } else {
                for (size_t k = 0; k < ncols; k++) {
                    if (PQgetisnull(res, 0, (int)k)) {
                        row[k] = (enc_val){.kind = ENC_V_NULL};
                    } else {
                        row[k] = (enc_val){.kind = ENC_V_TEXT,
                                           .p = PQgetvalue(res, 0, (int)k),
                                           .len = (size_t)PQgetlength(res, 0, (int)k)};
                    }
                }
                rc = fn(ctx, row, ncols, err);
                if (rc != 0) {
                    PGcancel *cn = PQgetCancel(p->pg);
                    char buf[256];
                    if (cn) {
                        PQcancel(cn, buf, sizeof buf);
                        PQfreeCancel(cn);
                    }
                }
            }
        } else if (rc == 0 && st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK &&
                   st != PGRES_SINGLE_TUPLE) {
            rc = pg_error(p, res, err);
        }
        PQclear(res);
    }
    if (rc == 0 && PQstatus(p->pg) != CONNECTION_OK)
        rc = pg_error(p, NULL, err);
    return rc;
}

/* A range through a cursor, fetched in batches: one result per batch rather
 * than one per row (single-row mode costs a result allocation per row). The
 * cursor's transaction also gives the whole range one snapshot. Memory: one
 * batch. */
#define PG_BATCH 8192
static int pg_stream(conn *c, const char *sql, const enc_val *params, size_t nparams, size_t ncols,
                     const int *cls, conn_row_fn fn, void *ctx, sl_err *err)
{
    pg_conn *p = (pg_conn *)c;
    sl_buf decl = {0};
    int rc = 0;
    enc_val row[512];
    if (ncols > 512)
        return sl_err_set(err, "too many columns (limit 512)");
    PGresult *r = PQexec(p->pg, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        rc = pg_error(p, r, err);
        PQclear(r);
        return rc;
    }
    PQclear(r);
    if (sl_buf_printf(&decl, "DECLARE sluice_range NO SCROLL CURSOR FOR %s", sql) ||
        sl_buf_putc(&decl, 0)) {
        rc = sl_err_set(err, "out of memory");
        goto end;
    }
    /* DECLARE takes the range's bounds as bound parameters, like any query */
    if ((rc = pg_query(c, (const char *)decl.p, params, nparams, 0, cls, NULL, NULL, err)))
        goto end;
    char fetch[64];
    snprintf(fetch, sizeof fetch, "FETCH FORWARD %d FROM sluice_range", PG_BATCH);
    for (;;) {
        r = PQexecParams(p->pg, fetch, 0, NULL, NULL, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            rc = pg_error(p, r, err);
            PQclear(r);
            break;
        }
        int n = PQntuples(r);
        if ((size_t)PQnfields(r) != ncols) {
            rc = sl_err_set(err, "%s: query returned %d columns, expected %zu", p->base.name,
                            PQnfields(r), ncols);
            n = 0;
        }
        for (int i = 0; i < n && rc == 0; i++) {
            for (size_t k = 0; k < ncols; k++) {
                if (PQgetisnull(r, i, (int)k))
                    row[k] = (enc_val){.kind = ENC_V_NULL};
                else
                    row[k] = (enc_val){.kind = ENC_V_TEXT,
                                       .p = PQgetvalue(r, i, (int)k),
                                       .len = (size_t)PQgetlength(r, i, (int)k)};
            }
            rc = fn(ctx, row, ncols, err);
        }
        PQclear(r);
        if (rc || n < PG_BATCH)
            break;
    }
end:
    sl_buf_free(&decl);
    r = PQexec(p->pg, rc ? "ROLLBACK" : "COMMIT");
    if (rc == 0 && PQresultStatus(r) != PGRES_COMMAND_OK)
        rc = pg_error(p, r, err);
    PQclear(r);
    return rc;
}

static int classify(const char *typname)
{
    static const struct {
        const char *name;
        int cls;
    } map[] = {
        {"int2", ENC_INT},
        {"int4", ENC_INT},
        {"int8", ENC_INT},
        {"oid", ENC_INT},
        {"numeric", ENC_NUMERIC},
        {"float4", ENC_FLOAT},
        {"float8", ENC_FLOAT},
        {"bool", ENC_BOOL},
        {"text", ENC_TEXT},
        {"varchar", ENC_TEXT},
        {"bpchar", ENC_TEXT},
        {"name", ENC_TEXT},
        {"citext", ENC_TEXT},
        {"bytea", ENC_BYTEA},
        {"date", ENC_DATE},
        {"timestamp", ENC_TIMESTAMP},
        {"timestamptz", ENC_TIMESTAMPTZ},
        {"uuid", ENC_UUID},
        {"json", ENC_JSON},
        {"jsonb", ENC_JSON},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(map[i].name, typname) == 0)
            return map[i].cls;
    return ENC_OTHER;
}

typedef struct desc_ctx {
    conn_table *t;
    size_t cap;
    int keys;
} desc_ctx;

static int take_col(void *ctx, const enc_val *v, size_t n, sl_err *err)
{
    desc_ctx *d = ctx;
    conn_table *t = d->t;
    (void)n;
    if (d->keys) {
        char **k = realloc(t->key, (t->nkey + 1) * sizeof *k);
        if (!k)
            return sl_err_set(err, "out of memory");
        t->key = k;
        if (!(k[t->nkey] = strndup(v[0].p, v[0].len)))
            return sl_err_set(err, "out of memory");
        t->nkey++;
        return 0;
    }
    if (t->ncols == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 16;
        conn_col *c = realloc(t->cols, cap * sizeof *c);
        if (!c)
            return sl_err_set(err, "out of memory");
        t->cols = c;
        d->cap = cap;
    }
    conn_col *c = &t->cols[t->ncols];
    char typname[64];
    snprintf(typname, sizeof typname, "%.*s", (int)v[2].len, v[2].p);
    c->name = strndup(v[0].p, v[0].len);
    c->type = strndup(v[1].p, v[1].len);
    c->cls = classify(typname);
    t->ncols++;
    if (!c->name || !c->type)
        return sl_err_set(err, "out of memory");
    return 0;
}

static int found_rel(void *ctx, const enc_val *v, size_t n, sl_err *err)
{
    (void)n;
    (void)err;
    *(int *)ctx = v[0].kind != ENC_V_NULL;
    return 0;
}

static int pg_describe(conn *c, const char *table, conn_table **out, sl_err *err)
{
    sl_buf qn = {0};
    conn_table *t = calloc(1, sizeof *t);
    int found = 0, rc = -1;
    int cls[3] = {ENC_TEXT, ENC_TEXT, ENC_TEXT};
    const char *dot = strchr(table, '.');
    if (!t)
        return sl_err_set(err, "out of memory");
    /* the quoted name, so "Orders" and orders are told apart as in SQL */
    if (dot) {
        char *schema = strndup(table, (size_t)(dot - table));
        int r = !schema || pg_quote(c, &qn, schema) || sl_buf_putc(&qn, '.') ||
                pg_quote(c, &qn, dot + 1);
        free(schema);
        if (r)
            goto oom;
    } else if (pg_quote(c, &qn, table)) {
        goto oom;
    }
    enc_val p = {.kind = ENC_V_TEXT, .p = (const char *)qn.p, .len = qn.len};
    if (pg_query(c, "SELECT to_regclass($1)::oid", &p, 1, 1, cls, found_rel, &found, err))
        goto done;
    if (!found) {
        sl_err_set(err,
                   "%s: table \"%s\" does not exist (names are case-sensitive; use "
                   "schema.table)",
                   c->name, table);
        goto done;
    }
    desc_ctx d = {t, 0, 0};
    if (pg_query(c,
                 "SELECT a.attname, format_type(a.atttypid, a.atttypmod), "
                 "COALESCE(bt.typname, t.typname) FROM pg_attribute a "
                 "JOIN pg_type t ON t.oid = a.atttypid "
                 "LEFT JOIN pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype "
                 "WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped "
                 "ORDER BY a.attnum",
                 &p, 1, 3, cls, take_col, &d, err))
        goto done;
    d.keys = 1;
    if (pg_query(c,
                 "SELECT a.attname FROM pg_index i "
                 "CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) "
                 "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
                 "WHERE i.indrelid = to_regclass($1) AND i.indisprimary ORDER BY k.ord",
                 &p, 1, 1, cls, take_col, &d, err))
        goto done;
    *out = t;
    t = NULL;
    rc = 0;
    goto done;
oom:
    sl_err_set(err, "out of memory");
done:
    conn_table_free(t);
    sl_buf_free(&qn);
    return rc;
}

static int pg_is_broken(const conn *c)
{
    return PQstatus(((const pg_conn *)c)->pg) != CONNECTION_OK;
}

static const conn_ops pg_ops = {
    .free = pg_free,
    .is_broken = pg_is_broken,
    .stream = pg_stream,
    .describe = pg_describe,
    .query = pg_query,
    .quote = pg_quote,
    .text_key_collate = " COLLATE \"C\"",
    .numbered_dollar = 1,
};

conn *conn_pg_open(const char *dsn, sl_err *err)
{
    pg_conn *p = calloc(1, sizeof *p);
    if (!p)
        return sl_err_set(err, "out of memory"), NULL;
    p->base.ops = &pg_ops;
    /* Parse first: a malformed DSN gets libpq's own explanation, and we can
     * name the server without ever touching the password. */
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(dsn, &perr);
    if (!opts) {
        char line[300];
        first_line(perr ? perr : "out of memory", line, sizeof line);
        PQfreemem(perr);
        free(p);
        return sl_err_set(err,
                          "invalid connection string: %s (expected postgresql://... or "
                          "sqlite:PATH)",
                          line),
               NULL;
    }
    PQconninfoFree(opts);
    /* the DSN's own settings win; a DBA sees "sluice" in pg_stat_activity
     * unless it names itself otherwise */
    const char *const keys[] = {"fallback_application_name", "dbname", NULL};
    const char *const vals[] = {"sluice", dsn, NULL};
    p->pg = PQconnectdbParams(keys, vals, 1);
    if (!p->pg) {
        free(p);
        return sl_err_set(err, "out of memory"), NULL;
    }
    if (PQstatus(p->pg) != CONNECTION_OK) {
        char line[400];
        first_line(PQerrorMessage(p->pg), line, sizeof line);
        sl_err_set(err, "cannot connect to PostgreSQL: %s", line);
        pg_free(&p->base);
        return NULL;
    }
    snprintf(p->base.name, sizeof p->base.name, "postgresql://%s@%s:%s/%s", PQuser(p->pg),
             PQhost(p->pg), PQport(p->pg), PQdb(p->pg));
    PGresult *r = PQexec(p->pg, "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; "
                                "SET extra_float_digits = 3; SET bytea_output = 'hex'; "
                                "SET IntervalStyle = 'postgres'");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        pg_error(p, r, err);
        PQclear(r);
        pg_free(&p->base);
        return NULL;
    }
    PQclear(r);
    return &p->base;
}
