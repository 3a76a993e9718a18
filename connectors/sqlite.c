/* SQLite through its C API. Files open read-only (read-write for a repair's
 * target, conn_open_rw), never created, so a wrong path is an error instead
 * of a new empty database. Values come out typed (integer,
 * real, text, blob); the declared column type picks the comparison class,
 * following SQLite's own affinity rules where they apply. */
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "conn_impl.h"

typedef struct sq_conn {
    conn base;
    sqlite3 *db;
    int busy_ms; /* how long a lock held by another process is waited out */
} sq_conn;

static int sq_busy_error(sq_conn *s, sl_err *err)
{
    return sl_err_setc(err, SL_BUSY,
                       "%s: the database stayed locked by another process for %d s; retry when "
                       "its writer is done, or raise --read-timeout",
                       s->base.name, s->busy_ms / 1000);
}

/* The last call's error as an sl_err: an SQL error (a missing column, a
 * syntax error in --where) is SL_INVALID, a missing table SL_NOT_FOUND, a
 * lock SL_BUSY, a refused access SL_AUTH, anything else (I/O, a corrupt
 * file) SL_DATABASE. */
static int sq_error(conn *c, sl_err *err)
{
    sqlite3 *db = ((sq_conn *)c)->db;
    const char *m = sqlite3_errmsg(db);
    int code;
    switch (sqlite3_errcode(db)) {
    case SQLITE_ERROR:
        code = strstr(m, "no such table") ? SL_NOT_FOUND : SL_INVALID;
        break;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        code = SL_BUSY;
        break;
    case SQLITE_AUTH:
    case SQLITE_PERM:
        code = SL_AUTH;
        break;
    default:
        code = SL_DATABASE;
    }
    return sl_err_setc(err, code, "%s: %s", c->name, m);
}

static void sq_free(conn *c)
{
    sq_conn *s = (sq_conn *)c;
    sqlite3_close(s->db);
    free(s);
}

static int sq_quote(conn *c, sl_buf *out, const char *ident)
{
    (void)c;
    char *q = sqlite3_mprintf("\"%w\"", ident);
    if (!q)
        return -1;
    int r = sl_buf_append(out, q, strlen(q));
    sqlite3_free(q);
    return r;
}

static int sq_query(conn *c, const char *sql, const enc_val *params, size_t nparams, size_t ncols,
                    const int *cls, conn_row_fn fn, void *ctx, sl_err *err)
{
    (void)cls;
    sq_conn *s = (sq_conn *)c;
    sqlite3_stmt *st = NULL;
    if (ncols > CONN_MAX_COLS)
        return sl_err_setc(err, SL_INVALID, "too many columns (limit %d)", CONN_MAX_COLS);
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
        return sq_error(c, err);
    /* the row, once a query (not on the stack: up to CONN_MAX_COLS values) */
    enc_val *row = malloc((ncols ? ncols : 1) * sizeof *row);
    int rc = row ? 0 : sl_err_set(err, "out of memory");
    for (size_t i = 0; i < nparams && rc == 0; i++) {
        int b;
        const enc_val *v = &params[i];
        switch (v->kind) {
        case ENC_V_INT:
            b = sqlite3_bind_int64(st, (int)i + 1, v->i);
            break;
        case ENC_V_FLOAT:
            b = sqlite3_bind_double(st, (int)i + 1, v->d);
            break;
        case ENC_V_TEXT:
            b = sqlite3_bind_text(st, (int)i + 1, v->p, (int)v->len, SQLITE_STATIC);
            break;
        case ENC_V_BLOB:
            b = sqlite3_bind_blob(st, (int)i + 1, v->p, (int)v->len, SQLITE_STATIC);
            break;
        default:
            b = sqlite3_bind_null(st, (int)i + 1);
            break;
        }
        if (b != SQLITE_OK)
            rc = sq_error(c, err);
    }
    if (rc == 0 && (size_t)sqlite3_column_count(st) != ncols)
        rc = sl_err_set(err, "%s: query returned %d columns, expected %zu", c->name,
                        sqlite3_column_count(st), ncols);
    while (rc == 0) {
        int step = sqlite3_step(st);
        if (step == SQLITE_DONE)
            break;
        if (step == SQLITE_BUSY) {
            rc = sq_busy_error(s, err);
            break;
        }
        if (step != SQLITE_ROW) {
            rc = sq_error(c, err);
            break;
        }
        for (size_t k = 0; k < ncols; k++) {
            int ik = (int)k;
            switch (sqlite3_column_type(st, ik)) {
            case SQLITE_INTEGER:
                row[k] = (enc_val){.kind = ENC_V_INT, .i = sqlite3_column_int64(st, ik)};
                break;
            case SQLITE_FLOAT:
                row[k] = (enc_val){.kind = ENC_V_FLOAT, .d = sqlite3_column_double(st, ik)};
                break;
            case SQLITE_TEXT:
                row[k].kind = ENC_V_TEXT;
                row[k].p = (const char *)sqlite3_column_text(st, ik);
                row[k].len = (size_t)sqlite3_column_bytes(st, ik);
                break;
            case SQLITE_BLOB:
                row[k].kind = ENC_V_BLOB;
                row[k].p = sqlite3_column_blob(st, ik);
                row[k].len = (size_t)sqlite3_column_bytes(st, ik);
                if (!row[k].p)
                    row[k].p = "";
                break;
            default:
                row[k] = (enc_val){.kind = ENC_V_NULL};
                break;
            }
        }
        rc = fn(ctx, row, ncols, err);
    }
    sqlite3_finalize(st);
    free(row);
    return rc;
}

/* Declared type -> class. Order matters: "BOOLEAN" and "POINT" must not be
 * read as INT first, nor "TIMESTAMPTZ" as "TIMESTAMP". */
static int classify(const char *decl)
{
    char u[128];
    size_t n = 0;
    for (; decl[n] && n < sizeof u - 1; n++)
        u[n] = (char)(decl[n] >= 'a' && decl[n] <= 'z' ? decl[n] - 32 : decl[n]);
    u[n] = '\0';
    if (!n)
        return ENC_OTHER;
    if (strstr(u, "UUID"))
        return ENC_UUID;
    if (strstr(u, "JSON"))
        return ENC_JSON;
    if (strstr(u, "TIMESTAMPTZ") || strstr(u, "WITH TIME ZONE"))
        return ENC_TIMESTAMPTZ;
    if (strstr(u, "TIMESTAMP") || strstr(u, "DATETIME"))
        return ENC_TIMESTAMP;
    if (strstr(u, "DATE"))
        return ENC_DATE;
    if (strstr(u, "BOOL"))
        return ENC_BOOL;
    if (strstr(u, "INT"))
        return ENC_INT;
    if (strstr(u, "CHAR") || strstr(u, "CLOB") || strstr(u, "TEXT"))
        return ENC_TEXT;
    if (strstr(u, "BLOB") || strstr(u, "BYTEA"))
        return ENC_BYTEA;
    if (strstr(u, "REAL") || strstr(u, "FLOA") || strstr(u, "DOUB"))
        return ENC_FLOAT;
    if (strstr(u, "NUMERIC") || strstr(u, "DECIMAL"))
        return ENC_NUMERIC;
    return ENC_OTHER;
}

static int sq_describe(conn *c, const char *table, conn_table **out, sl_err *err)
{
    sq_conn *s = (sq_conn *)c;
    conn_table *t = calloc(1, sizeof *t);
    sqlite3_stmt *st = NULL;
    const char *dot = strchr(table, '.');
    char *schema = dot ? strndup(table, (size_t)(dot - table)) : NULL;
    const char *name = dot ? dot + 1 : table;
    int rc = -1;
    size_t cap = 0, maxpk = 0;
    int *pkpos = NULL; /* per column: its place in the primary key, 0 if none */
    if (!t || (dot && !schema)) {
        sl_err_set(err, "out of memory");
        goto done;
    }
    if (sqlite3_prepare_v2(s->db, "SELECT name, type, pk FROM pragma_table_info(?1, ?2)", -1, &st,
                           NULL) != SQLITE_OK) {
        sq_error(c, err);
        goto done;
    }
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, schema ? schema : "main", -1, SQLITE_STATIC);
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (t->ncols == cap) {
            cap = cap ? cap * 2 : 16;
            conn_col *cols = realloc(t->cols, cap * sizeof *cols);
            if (cols)
                t->cols = cols;
            int *pk = cols ? realloc(pkpos, cap * sizeof *pk) : NULL;
            if (!pk) {
                sl_err_set(err, "out of memory");
                goto done;
            }
            pkpos = pk;
        }
        conn_col *col = &t->cols[t->ncols];
        const char *decl = (const char *)sqlite3_column_text(st, 1);
        col->name = strdup((const char *)sqlite3_column_text(st, 0));
        col->type = strdup(decl ? decl : "");
        col->cls = classify(decl ? decl : "");
        pkpos[t->ncols] = sqlite3_column_int(st, 2);
        if ((size_t)pkpos[t->ncols] > maxpk)
            maxpk = (size_t)pkpos[t->ncols];
        t->ncols++;
        if (!col->name || !col->type) {
            sl_err_set(err, "out of memory");
            goto done;
        }
    }
    if (step != SQLITE_DONE) {
        sq_error(c, err);
        goto done;
    }
    if (t->ncols == 0) {
        sl_err_setc(err, SL_NOT_FOUND, "%s: table \"%s\" does not exist", c->name, table);
        goto done;
    }
    if (maxpk) {
        t->key = calloc(maxpk, sizeof *t->key);
        if (!t->key) {
            sl_err_set(err, "out of memory");
            goto done;
        }
        for (size_t i = 0; i < t->ncols; i++)
            if (pkpos[i] > 0 && !(t->key[pkpos[i] - 1] = strdup(t->cols[i].name))) {
                sl_err_set(err, "out of memory");
                goto done;
            }
        t->nkey = maxpk;
    }
    t->is_loosely_typed = 1;
    *out = t;
    t = NULL;
    rc = 0;
done:
    sqlite3_finalize(st);
    free(pkpos);
    free(schema);
    conn_table_free(t);
    return rc;
}

static const conn_ops sq_ops = {
    .free = sq_free,
    .describe = sq_describe,
    .query = sq_query,
    .quote = sq_quote,
    .text_key_collate = " COLLATE BINARY",
    .numbered_dollar = 0,
    .has_storage_classes = 1,
};

conn *conn_sqlite_open(const char *path, int read_timeout_ms, int writable, sl_err *err)
{
    struct stat st;
    /* SQLite opens "" as a new empty temporary database, which then has no
     * tables: say what is wrong instead */
    if (!path[0])
        return sl_err_setc(err, SL_INVALID,
                           "the SQLite path is empty: write sqlite:PATH, e.g. sqlite:shop.db"),
               NULL;
    if (strcmp(path, ":memory:") != 0 && stat(path, &st) != 0)
        return sl_err_setc(err, SL_DATABASE,
                           "SQLite database \"%s\" does not exist (%s); check the path", path,
                           strerror(errno)),
               NULL;
    sq_conn *s = calloc(1, sizeof *s);
    if (!s)
        return sl_err_set(err, "out of memory"), NULL;
    s->base.ops = &sq_ops;
    s->busy_ms = read_timeout_ms > 0 ? read_timeout_ms : CONN_READ_TIMEOUT_MS;
    snprintf(s->base.name, sizeof s->base.name, "sqlite:%s", path);
    if (sqlite3_open_v2(path, &s->db, writable ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY,
                        NULL) != SQLITE_OK) {
        sl_err_setc(err, SL_DATABASE, "cannot open SQLite database \"%s\": %s", path,
                    s->db ? sqlite3_errmsg(s->db) : "out of memory");
        sq_free(&s->base);
        return NULL;
    }
    /* a writer's lock is waited out up to the read deadline, then an error */
    sqlite3_busy_timeout(s->db, s->busy_ms);
    /* a file that is not a database only says so on first read */
    char *msg = NULL;
    int rc = sqlite3_exec(s->db, "SELECT count(*) FROM sqlite_schema", NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        if (rc == SQLITE_BUSY)
            sq_busy_error(s, err);
        else
            sl_err_setc(err, SL_DATABASE, "cannot read SQLite database \"%s\": %s", path,
                        msg ? msg : "?");
        sqlite3_free(msg);
        sq_free(&s->base);
        return NULL;
    }
    return &s->base;
}
