/* PostgreSQL through libpq. Ranges stream as binary COPY (pg_copy), one row
 * at a time, decoded by pg_bin; other queries run in single-row mode, as
 * text. Memory stays at one row whatever the range size. The session is
 * pinned to UTC, ISO dates, hex bytea and shortest-exact floats, so text
 * output is canonical input for the encoder whatever the server's defaults
 * (and binary values decode to what that text would encode as). */
#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/dsn.h"
#include "conn_impl.h"
#include "pg_bin.h"

typedef struct pg_conn {
    conn base;
    PGconn *pg;
    sl_buf scratch;
    sl_buf *colbuf; /* per column: bytes a binary value decodes to */
    size_t ncolbuf; /* grown to a range's columns, kept for the next */
    int text_only;  /* sluice.read=text: ranges as text, through a cursor */
    int read_timeout_ms;
    /* Set when the server stayed silent past read_timeout_ms: the session
     * is abandoned mid-query, so nothing more is sent or awaited on it. */
    int timed_out;
    /* the fetch-by-key SELECT prepared as "sluice_fetch" (pg_fetch) */
    sl_buf fetch_sql;
    int fetch_prepared, fetch_binary;
    unsigned *fetch_oids; /* its columns' types, when binary */
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

/* A value of column k of r read as text. A char(n) (bpchar) loses the
 * blanks that pad it, as PostgreSQL's own cast to text drops them: they are
 * not part of the value (char(5) 'ab' = 'ab   '), and other engines
 * (MySQL's CHAR) hand it over without them (pg_bin.c does the same). */
static enc_val text_value(const PGresult *r, int i, int k)
{
    const char *v = PQgetvalue(r, i, k);
    size_t len = (size_t)PQgetlength(r, i, k);
    if (PQftype(r, k) == 1042)
        while (len && v[len - 1] == ' ')
            len--;
    return (enc_val){.kind = ENC_V_TEXT, .p = v, .len = len};
}

static void pg_free(conn *c)
{
    pg_conn *p = (pg_conn *)c;
    PQfinish(p->pg);
    sl_buf_free(&p->scratch);
    sl_buf_free(&p->fetch_sql);
    free(p->fetch_oids);
    for (size_t k = 0; k < p->ncolbuf; k++)
        sl_buf_free(&p->colbuf[k]);
    free(p->colbuf);
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

/* The sl_code of a failed query, from its SQLSTATE: a refused credential or
 * privilege (class 28, 42501) is SL_AUTH, a missing table or schema
 * SL_NOT_FOUND, the rest of class 42 (a missing column, a syntax error in
 * --where) and data exceptions (class 22: a cast in --where) SL_INVALID, a
 * lock not granted, a deadlock or a full server SL_BUSY; anything else, and
 * a connection that broke, SL_DATABASE. */
static int pg_code(const pg_conn *p, const PGresult *res)
{
    const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (p->timed_out || !st || strlen(st) != 5 || PQstatus(p->pg) != CONNECTION_OK)
        return SL_DATABASE;
    if (!strncmp(st, "28", 2) || !strcmp(st, "42501"))
        return SL_AUTH;
    if (!strcmp(st, "42P01") || !strcmp(st, "3F000"))
        return SL_NOT_FOUND;
    if (!strncmp(st, "42", 2) || !strncmp(st, "22", 2))
        return SL_INVALID;
    if (!strcmp(st, "55P03") || !strcmp(st, "53300") || !strncmp(st, "40", 2))
        return SL_BUSY;
    return SL_DATABASE;
}

/* Every libpq message may quote what the server or libpq saw, and a
 * mistyped DSN can put part of a password anywhere: none reaches an error
 * with the password in it. */
static int pg_error(pg_conn *p, PGresult *res, sl_err *err)
{
    char line[400];
    if (p->timed_out)
        return sl_err_setc(err, SL_DATABASE,
                           "%s: no data from the server for %d s (a lock? a stalled server?); "
                           "the session was dropped: find what blocks it, or raise "
                           "--read-timeout",
                           p->base.name, p->read_timeout_ms / 1000);
    first_line(res ? PQresultErrorMessage(res) : PQerrorMessage(p->pg), line, sizeof line);
    if (!line[0])
        first_line(PQerrorMessage(p->pg), line, sizeof line);
    dsn_scrub_secret(line, sizeof line, PQpass(p->pg));
    return sl_err_setc(err, pg_code(p, res), "%s: %s", p->base.name, line);
}

/* Waits for the server to send something, then reads it in: libpq has no
 * read timeout of its own, and a server that accepted a query may never
 * answer (a lock, a hung host behind a live TCP peer). -1 after
 * read_timeout_ms of silence (p->timed_out set), else 0, also when the
 * connection broke (libpq then reports that). */
static int pg_await(pg_conn *p)
{
    struct pollfd pf = {.fd = PQsocket(p->pg), .events = POLLIN};
    if (pf.fd < 0)
        return 0;
    /* with a tick hook (conn_set_tick), waits in slices of 100 ms and calls
     * it between them: one huge row can take seconds to arrive, and a
     * worker must keep sending heartbeats meanwhile */
    int r, waited = 0;
    for (;;) {
        int slice = p->read_timeout_ms > 0 ? p->read_timeout_ms - waited : -1;
        if (p->base.tick && (slice < 0 || slice > 100))
            slice = 100;
        while ((r = poll(&pf, 1, slice)) < 0 && errno == EINTR) {
        }
        if (p->base.tick)
            p->base.tick(p->base.tick_ctx);
        if (r != 0)
            break;
        waited += slice;
        if (p->read_timeout_ms > 0 && waited >= p->read_timeout_ms) {
            p->timed_out = 1;
            return -1;
        }
    }
    PQconsumeInput(p->pg);
    return 0;
}

/* PQgetResult with the read deadline. NULL at the end of the results, or
 * after a timeout (p->timed_out) or a failed send. */
static PGresult *pg_next(pg_conn *p)
{
    if (p->timed_out)
        return NULL;
    while (PQisBusy(p->pg) && PQstatus(p->pg) == CONNECTION_OK)
        if (pg_await(p))
            return NULL;
    return PQgetResult(p->pg);
}

/* What PQexec returns for a query sent with PQsend* (sent: its return):
 * the last result, or the first error, stopping at COPY OUT. NULL when the
 * send failed or the server timed out; pg_error explains either. */
static PGresult *pg_collect(pg_conn *p, int sent)
{
    PGresult *last = NULL, *r;
    if (!sent || p->timed_out)
        return NULL;
    while ((r = pg_next(p)) != NULL) {
        if (last && PQresultStatus(last) == PGRES_FATAL_ERROR) {
            PQclear(r);
            continue;
        }
        PQclear(last);
        last = r;
        if (PQresultStatus(r) == PGRES_COPY_OUT || PQresultStatus(r) == PGRES_COPY_IN)
            break;
    }
    if (p->timed_out) {
        PQclear(last);
        return NULL;
    }
    return last;
}

/* Runs sql, or the prepared statement stmt, in single-row mode; results
 * come in binary when oids (the result's column types) is given, else as
 * text. Params: INT as decimal text, TEXT as text, BLOB in binary format. */
static int pg_run(pg_conn *p, const char *sql, const char *stmt, const unsigned *oids,
                  const enc_val *params, size_t nparams, size_t ncols, conn_row_fn fn, void *ctx,
                  sl_err *err)
{
    const char *vals[512];
    int lens[512], fmts[512];
    char nums[512][24];
    if (nparams > 512 || ncols > CONN_MAX_COLS)
        return sl_err_setc(err, SL_INVALID, "too many parameters or columns (limits: 512 and %d)",
                           CONN_MAX_COLS);
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
    /* the row, once a query (not on the stack: up to CONN_MAX_COLS values) */
    enc_val *row = malloc((ncols ? ncols : 1) * sizeof *row);
    if (!row)
        return sl_err_set(err, "out of memory");
    if (stmt ? !PQsendQueryPrepared(p->pg, stmt, (int)nparams, vals, lens, fmts, oids != NULL)
             : !PQsendQueryParams(p->pg, sql, (int)nparams, NULL, vals, lens, fmts, 0)) {
        free(row);
        return pg_error(p, NULL, err);
    }
    if (!PQsetSingleRowMode(p->pg)) {
        PGresult *r;
        while ((r = pg_next(p)) != NULL)
            PQclear(r);
        free(row);
        return sl_err_setc(err, SL_DATABASE, "%s: cannot enter single-row mode", p->base.name);
    }
    int rc = 0;
    PGresult *res;
    while ((res = pg_next(p)) != NULL) {
        ExecStatusType st = PQresultStatus(res);
        if (rc == 0 && st == PGRES_SINGLE_TUPLE) {
            if ((size_t)PQnfields(res) != ncols) {
                rc = sl_err_set(err, "%s: query returned %d columns, expected %zu", p->base.name,
                                PQnfields(res), ncols);
            } else {
                for (size_t k = 0; k < ncols && rc == 0; k++) {
                    if (PQgetisnull(res, 0, (int)k)) {
                        row[k] = (enc_val){.kind = ENC_V_NULL};
                    } else if (oids) {
                        rc = pg_bin_decode(oids[k], PQgetvalue(res, 0, (int)k),
                                           (size_t)PQgetlength(res, 0, (int)k), &p->colbuf[k],
                                           &row[k], err);
                    } else {
                        row[k] = text_value(res, 0, (int)k);
                    }
                }
                if (rc == 0)
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
    free(row);
    if (rc == 0 && (p->timed_out || PQstatus(p->pg) != CONNECTION_OK))
        rc = pg_error(p, NULL, err);
    return rc;
}

static int pg_exec_ok(pg_conn *p, const char *sql, sl_err *err)
{
    PGresult *r = pg_collect(p, PQsendQuery(p->pg, sql));
    int rc = PQresultStatus(r) == PGRES_COMMAND_OK ? 0 : pg_error(p, r, err);
    PQclear(r);
    return rc;
}

/* Once a connection, as wide as its widest range or fetch. */
static int pg_grow_colbuf(pg_conn *p, size_t ncols, sl_err *err)
{
    if (p->ncolbuf >= ncols)
        return 0;
    sl_buf *b = realloc(p->colbuf, ncols * sizeof *b);
    if (!b)
        return sl_err_set(err, "out of memory");
    memset(b + p->ncolbuf, 0, (ncols - p->ncolbuf) * sizeof *b);
    p->colbuf = b;
    p->ncolbuf = ncols;
    return 0;
}

static int pg_query(conn *c, const char *sql, const enc_val *params, size_t nparams, size_t ncols,
                    const int *cls, conn_row_fn fn, void *ctx, sl_err *err)
{
    (void)cls;
    return pg_run((pg_conn *)c, sql, NULL, NULL, params, nparams, ncols, fn, ctx, err);
}

/* Fetch by key runs one SELECT shape again and again (conn_fetch_keys):
 * it is prepared once, described, and run with binary results when every
 * column has a binary decoder for its class. A bytea of hundreds of
 * megabytes then arrives as itself, not as twice as much hex, and costs
 * libpq twice its size, not four times. */
static int pg_fetch(conn *c, const char *sql, const enc_val *params, size_t nparams, size_t ncols,
                    const int *cls, conn_row_fn fn, void *ctx, sl_err *err)
{
    pg_conn *p = (pg_conn *)c;
    size_t n = strlen(sql) + 1;
    if (p->text_only)
        return pg_query(c, sql, params, nparams, ncols, cls, fn, ctx, err);
    if (pg_grow_colbuf(p, ncols, err))
        return -1;
    if (!p->fetch_prepared || p->fetch_sql.len != n || memcmp(p->fetch_sql.p, sql, n) != 0) {
        PGresult *r;
        if (p->fetch_prepared) {
            p->fetch_prepared = 0;
            if (pg_exec_ok(p, "DEALLOCATE sluice_fetch", err))
                return -1;
        }
        sl_buf_reset(&p->fetch_sql);
        unsigned *o = realloc(p->fetch_oids, (ncols ? ncols : 1) * sizeof *o);
        if (!o)
            return sl_err_set(err, "out of memory");
        p->fetch_oids = o;
        if (sl_buf_append(&p->fetch_sql, sql, n))
            return sl_err_set(err, "out of memory");
        r = pg_collect(p, PQsendPrepare(p->pg, "sluice_fetch", sql, (int)nparams, NULL));
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            int rc = pg_error(p, r, err);
            PQclear(r);
            return rc;
        }
        PQclear(r);
        p->fetch_prepared = 1;
        r = pg_collect(p, PQsendDescribePrepared(p->pg, "sluice_fetch"));
        p->fetch_binary = PQresultStatus(r) == PGRES_COMMAND_OK && (size_t)PQnfields(r) == ncols;
        for (size_t k = 0; k < ncols && p->fetch_binary; k++) {
            p->fetch_oids[k] = (unsigned)PQftype(r, (int)k);
            p->fetch_binary = pg_bin_class(p->fetch_oids[k]) == cls[k];
        }
        PQclear(r);
        if (p->timed_out)
            return pg_error(p, NULL, err);
    }
    return pg_run(p, NULL, "sluice_fetch", p->fetch_binary ? p->fetch_oids : NULL, params, nparams,
                  ncols, fn, ctx, err);
}

/* Ends the range's transaction: COMMIT after success, else ROLLBACK
 * (whose own failure adds nothing to the first error). */
static int pg_end(pg_conn *p, int rc, sl_err *err)
{
    PGresult *r = pg_collect(p, PQsendQuery(p->pg, rc ? "ROLLBACK" : "COMMIT"));
    if (rc == 0 && PQresultStatus(r) != PGRES_COMMAND_OK)
        rc = pg_error(p, r, err);
    PQclear(r);
    return rc;
}

/* A range through a cursor, fetched in batches: one result per batch rather
 * than one per row (single-row mode costs a result allocation per row).
 * Runs inside the caller's transaction; binary when oids (the result's
 * column types) is given. Memory: one batch. */
#define PG_BATCH 8192
static int pg_cursor(pg_conn *p, const char *sql, const enc_val *params, size_t nparams,
                     size_t ncols, const int *cls, const unsigned *oids, conn_row_fn fn, void *ctx,
                     sl_err *err)
{
    sl_buf decl = {0};
    int rc = 0;
    if (ncols > CONN_MAX_COLS)
        return sl_err_setc(err, SL_INVALID, "too many columns (limit %d)", CONN_MAX_COLS);
    if (sl_buf_printf(&decl, "DECLARE sluice_range NO SCROLL CURSOR FOR %s", sql) ||
        sl_buf_putc(&decl, 0)) {
        sl_buf_free(&decl);
        return sl_err_set(err, "out of memory");
    }
    /* DECLARE takes the range's bounds as bound parameters, like any query */
    rc = pg_query(&p->base, (const char *)decl.p, params, nparams, 0, cls, NULL, NULL, err);
    sl_buf_free(&decl);
    if (rc)
        return rc;
    char fetch[64];
    snprintf(fetch, sizeof fetch, "FETCH FORWARD %d FROM sluice_range", PG_BATCH);
    enc_val *row = malloc((ncols ? ncols : 1) * sizeof *row);
    if (!row)
        return sl_err_set(err, "out of memory");
    for (;;) {
        PGresult *r =
            pg_collect(p, PQsendQueryParams(p->pg, fetch, 0, NULL, NULL, NULL, NULL, oids != NULL));
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
            for (size_t k = 0; k < ncols && rc == 0; k++) {
                const char *v = PQgetvalue(r, i, (int)k);
                size_t len = (size_t)PQgetlength(r, i, (int)k);
                if (PQgetisnull(r, i, (int)k))
                    row[k] = (enc_val){.kind = ENC_V_NULL};
                else if (oids)
                    rc = pg_bin_decode(oids[k], v, len, &p->colbuf[k], &row[k], err);
                else
                    row[k] = text_value(r, i, (int)k);
            }
            if (rc == 0)
                rc = fn(ctx, row, ncols, err);
        }
        PQclear(r);
        if (rc || n < PG_BATCH)
            break;
    }
    free(row);
    return rc;
}

/* ---- COPY: the range as PostgreSQL's fastest way out ----------------- */

static uint32_t be32(const uint8_t *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* The type names a range's bounds are cast to in the COPY form, for the
 * parameter types PostgreSQL infers for key columns; others use the cursor. */
static const char *param_type(unsigned oid)
{
    switch (oid) {
    case 20:
        return "bigint";
    case 21:
        return "smallint";
    case 23:
        return "integer";
    case 25:
        return "text";
    case 1043:
        return "character varying";
    case 1042:
        return "bpchar";
    case 19:
        return "name";
    case 2950:
        return "uuid";
    case 17:
        return "bytea";
    default:
        return NULL;
    }
}

/* Reads the rows of one CopyData message: a binary COPY stream's tuples,
 * after its header in the first message. *done is set at the trailer. The
 * server sends whole rows per message; a row cut across two would be
 * refused as malformed, never misread. */
static int copy_rows(pg_conn *p, const uint8_t *b, size_t n, int first, size_t ncols,
                     const unsigned *oids, enc_val *row, int *done, conn_row_fn fn, void *ctx,
                     sl_err *err)
{
    static const uint8_t sig[11] = "PGCOPY\n\377\r\n";
    size_t o = 0;
    if (first) {
        if (n < 19 || memcmp(b, sig, 11) != 0)
            return sl_err_setc(err, SL_DATABASE, "%s: malformed COPY header", p->base.name);
        uint32_t ext = be32(b + 15);
        if (ext > n - 19)
            return sl_err_setc(err, SL_DATABASE, "%s: malformed COPY header", p->base.name);
        o = 19 + ext;
    }
    while (o < n) {
        if (n - o < 2)
            goto bad;
        int16_t nf = (int16_t)(b[o] << 8 | b[o + 1]);
        o += 2;
        if (nf == -1) {
            *done = 1;
            return 0;
        }
        if ((size_t)nf != ncols)
            return sl_err_setc(err, SL_DATABASE, "%s: COPY row of %d columns, expected %zu",
                               p->base.name, nf, ncols);
        for (size_t k = 0; k < ncols; k++) {
            if (n - o < 4)
                goto bad;
            int32_t len = (int32_t)be32(b + o);
            o += 4;
            if (len == -1) {
                row[k] = (enc_val){.kind = ENC_V_NULL};
                continue;
            }
            if (len < 0 || (size_t)len > n - o)
                goto bad;
            if (pg_bin_decode(oids[k], (const char *)b + o, (size_t)len, &p->colbuf[k], &row[k],
                              err))
                return -1;
            o += (size_t)len;
        }
        if (fn(ctx, row, ncols, err))
            return -1;
    }
    return 0;
bad:
    return sl_err_setc(err, SL_DATABASE, "%s: malformed COPY row", p->base.name);
}

static int ignore_row(void *ctx, const enc_val *v, size_t n, sl_err *err)
{
    (void)ctx, (void)v, (void)n, (void)err;
    return 0;
}

/* The range as COPY (SELECT ...) TO STDOUT (FORMAT binary): what a dump
 * costs the server, and no per-row result to build here. COPY takes no
 * parameters, so the bounds are bound to set_config() first and the query
 * reads them back with current_setting(), cast to the key's type. Called by
 * pg_stream_range, which holds np to 2 * ENC_MAX_KEY_COLS and the columns to CONN_MAX_COLS. */
static int pg_copy(pg_conn *p, const conn_query *q, int lo_kind, int hi_kind, const enc_val *params,
                   size_t np, const unsigned *ptypes, const unsigned *oids, conn_row_fn fn,
                   void *ctx, sl_err *err)
{
    sl_buf set = {0}, sql = {0}, hex = {0};
    char ptext[2 * ENC_MAX_KEY_COLS][96];
    const char *pt[2 * ENC_MAX_KEY_COLS];
    enc_val sp[2 * ENC_MAX_KEY_COLS];
    enc_val *row = malloc(q->ncols * sizeof *row);
    int rc = -1;
    if (!row || sl_buf_printf(&set, "SELECT 1"))
        goto oom;
    for (size_t i = 0; i < np; i++) {
        snprintf(ptext[i], sizeof ptext[i], "CAST(current_setting('sluice.p%zu') AS %s)", i + 1,
                 param_type(ptypes[i]));
        pt[i] = ptext[i];
        if (sl_buf_printf(&set, ", set_config('sluice.p%zu', $%zu, true)", i + 1, i + 1))
            goto oom;
        sp[i] = params[i];
        if (params[i].kind == ENC_V_BLOB) /* set_config takes text: bytea's hex form */
            sp[i] = (enc_val){.kind = ENC_V_TEXT, .len = 2 + 2 * params[i].len};
    }
    /* the hex forms, written once the buffer is its final size */
    size_t need = 0;
    for (size_t i = 0; i < np; i++)
        if (params[i].kind == ENC_V_BLOB)
            need += sp[i].len;
    if (sl_buf_putc(&set, 0) || sl_buf_reserve(&hex, need + 1))
        goto oom;
    for (size_t i = 0; i < np; i++) {
        if (params[i].kind != ENC_V_BLOB)
            continue;
        sp[i].p = (const char *)hex.p + hex.len;
        sl_buf_append(&hex, "\\x", 2);
        for (size_t k = 0; k < params[i].len; k++) {
            static const char d[] = "0123456789abcdef";
            uint8_t c = (uint8_t)params[i].p[k];
            sl_buf_putc(&hex, d[c >> 4]);
            sl_buf_putc(&hex, d[c & 15]);
        }
    }
    if (np &&
        pg_query(&p->base, (const char *)set.p, sp, np, np + 1, q->cls, ignore_row, NULL, err))
        goto done;
    if (sl_buf_printf(&sql, "COPY (") ||
        conn_range_sql(&p->base, q, lo_kind, hi_kind, np ? pt : NULL, &sql))
        goto oom;
    sql.len--; /* the builder's NUL */
    if (sl_buf_printf(&sql, ") TO STDOUT (FORMAT binary)") || sl_buf_putc(&sql, 0))
        goto oom;
    PGresult *r = pg_collect(p, PQsendQuery(p->pg, (const char *)sql.p));
    if (PQresultStatus(r) != PGRES_COPY_OUT) {
        rc = pg_error(p, r, err);
        PQclear(r);
        goto done;
    }
    PQclear(r);
    int first = 1, done = 0, n;
    char *buf;
    rc = 0;
    /* async reads (0: nothing complete yet), so a silent server times out */
    while ((n = PQgetCopyData(p->pg, &buf, 1)) >= 0) {
        if (n == 0) {
            if (pg_await(p)) {
                n = -2;
                break;
            }
            continue;
        }
        if (rc == 0 && !done)
            rc = copy_rows(p, (const uint8_t *)buf, (size_t)n, first, q->ncols, oids, row, &done,
                           fn, ctx, err);
        PQfreemem(buf);
        first = 0;
        if (rc && !done) { /* stop the server; the loop drains what is in flight */
            PGcancel *cn = PQgetCancel(p->pg);
            char ebuf[256];
            if (cn) {
                PQcancel(cn, ebuf, sizeof ebuf);
                PQfreeCancel(cn);
            }
            done = 1;
        }
    }
    if (rc == 0 && n == -2)
        rc = pg_error(p, NULL, err);
    while ((r = pg_next(p)) != NULL) {
        if (rc == 0 && PQresultStatus(r) != PGRES_COMMAND_OK)
            rc = pg_error(p, r, err);
        PQclear(r);
    }
    if (rc == 0 && !done && !first)
        rc = sl_err_setc(err, SL_DATABASE, "%s: COPY ended without its trailer", p->base.name);
    goto done;
oom:
    rc = sl_err_set(err, "out of memory");
done:
    free(row);
    sl_buf_free(&set);
    sl_buf_free(&sql);
    sl_buf_free(&hex);
    return rc;
}

/* A range: its SELECT is described first (prepared, not run). When every
 * column has a binary decoder for its class and every bound a known key
 * type, the range streams through COPY; otherwise through a cursor, in
 * binary when the columns allow it, else as text. One REPEATABLE READ
 * transaction either way. */
static int pg_stream_range(conn *c, const conn_query *q, int lo_kind, int hi_kind,
                           const enc_val *params, size_t np, conn_row_fn fn, void *ctx, sl_err *err)
{
    pg_conn *p = (pg_conn *)c;
    sl_buf sql = {0};
    unsigned *oids, ptypes[2 * ENC_MAX_KEY_COLS];
    int rc, binary, copy;
    if (q->ncols > CONN_MAX_COLS || np > 2 * ENC_MAX_KEY_COLS) /* two bounds per key column */
        return sl_err_setc(err, SL_INVALID, "too many key columns or columns (limits: %d and %d)",
                           ENC_MAX_KEY_COLS, CONN_MAX_COLS);
    if (pg_grow_colbuf(p, q->ncols, err))
        return -1;
    if (!(oids = malloc(q->ncols * sizeof *oids)))
        return sl_err_set(err, "out of memory");
    if (conn_range_sql(c, q, lo_kind, hi_kind, NULL, &sql)) {
        free(oids);
        return sl_err_set(err, "out of memory");
    }
    if ((rc = pg_exec_ok(p, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", err)))
        goto done;
    PGresult *r = pg_collect(p, PQsendPrepare(p->pg, "", (const char *)sql.p, (int)np, NULL));
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        rc = pg_error(p, r, err);
        PQclear(r);
        goto end;
    }
    PQclear(r);
    r = pg_collect(p, PQsendDescribePrepared(p->pg, ""));
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        rc = pg_error(p, r, err);
        PQclear(r);
        goto end;
    }
    binary = !p->text_only && (size_t)PQnfields(r) == q->ncols;
    for (size_t k = 0; k < q->ncols && binary; k++) {
        oids[k] = (unsigned)PQftype(r, (int)k);
        binary = pg_bin_class(oids[k]) == q->cls[k];
    }
    copy = binary && (size_t)PQnparams(r) == np;
    for (size_t i = 0; i < np && copy; i++) {
        ptypes[i] = (unsigned)PQparamtype(r, (int)i);
        copy = param_type(ptypes[i]) != NULL;
    }
    PQclear(r);
    if (copy)
        rc = pg_copy(p, q, lo_kind, hi_kind, params, np, ptypes, oids, fn, ctx, err);
    else
        rc = pg_cursor(p, (const char *)sql.p, params, np, q->ncols, q->cls, binary ? oids : NULL,
                       fn, ctx, err);
end:
    rc = pg_end(p, rc, err);
done:
    free(oids);
    sl_buf_free(&sql);
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
    if (d->keys)
        return conn_table_add_key(t, v[0].p, v[0].len, err);
    char typname[64];
    snprintf(typname, sizeof typname, "%.*s", (int)v[2].len, v[2].p);
    return conn_table_add_col(t, &d->cap, v[0].p, v[0].len, v[1].p, v[1].len, classify(typname),
                              err)
               ? 0
               : -1;
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
        sl_err_setc(err, SL_NOT_FOUND,
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

static int take_plan_rows(void *ctx, const enc_val *v, size_t n, sl_err *err)
{
    uint64_t *rows = ctx;
    (void)n, (void)err;
    if (*rows == 0 && v[0].kind == ENC_V_TEXT) { /* the top node: "... rows=N width=M)" */
        char line[512];
        snprintf(line, sizeof line, "%.*s", (int)(v[0].len < 511 ? v[0].len : 511), v[0].p);
        const char *r = strstr(line, " rows=");
        *rows = r ? strtoull(r + 6, NULL, 10) : 0;
        if (*rows == 0)
            *rows = 1; /* read: later lines are not the top node */
    }
    return 0;
}

static int pg_estimate(conn *c, const char *sql, uint64_t *rows, sl_err *err)
{
    sl_buf ex = {0};
    int cls = ENC_TEXT;
    *rows = 0;
    if (sl_buf_printf(&ex, "EXPLAIN %s", sql) || sl_buf_putc(&ex, 0))
        return sl_err_set(err, "out of memory");
    int rc = pg_query(c, (const char *)ex.p, NULL, 0, 1, &cls, take_plan_rows, rows, err);
    sl_buf_free(&ex);
    return rc;
}

static int pg_is_broken(const conn *c)
{
    return PQstatus(((const pg_conn *)c)->pg) != CONNECTION_OK;
}

static const conn_ops pg_ops = {
    .free = pg_free,
    .is_broken = pg_is_broken,
    .stream_range = pg_stream_range,
    .estimate = pg_estimate,
    .describe = pg_describe,
    .query = pg_query,
    .fetch = pg_fetch,
    .quote = pg_quote,
    .text_key_collate = " COLLATE \"C\"",
    .tablesample = " TABLESAMPLE SYSTEM ($1::float4) REPEATABLE (0)",
    .numbered_dollar = 1,
    /* replay caught up with what was received: no lag, however long ago the
     * last transaction was (an idle primary sends none, and now() minus the
     * last replayed commit would grow without end) */
    .replica_lag_sql =
        "SELECT pg_is_in_recovery()::text, CASE WHEN NOT pg_is_in_recovery() THEN NULL "
        /* caught up with what it received, and receiving: a standby cut off
         * from its primary (no WAL receiver) has replayed all it got too.
         * At most, not equal: a restarted standby's receiver starts at the
         * segment's start, below what it replayed from its own pg_wal, and
         * stays there until the primary writes again */
        "WHEN pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() "
        "AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver) THEN 0::float8 "
        "ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END::text",
};

static void drop_notice(void *arg, const char *message)
{
    (void)arg, (void)message;
}

/* The DSN as libpq reads it, refused in our own words when it cannot be:
 * libpq's parse errors quote the DSN. Copies its connect_timeout, if it
 * sets one, into timeout (else ""). */
static int parse_dsn(const char *dsn, char *timeout, size_t cap, sl_err *err)
{
    char *perr = NULL;
    if (dsn_check_uri(dsn, "invalid connection string", err))
        return -1;
    PQconninfoOption *opts = PQconninfoParse(dsn, &perr);
    if (!opts) {
        int r = sl_err_setc(err, SL_INVALID,
                            "invalid connection string: %s (expected postgresql://USER@HOST/DB, "
                            "host=... dbname=..., mysql://USER@HOST/DB or sqlite:PATH)",
                            perr ? dsn_parse_hint(perr) : "out of memory");
        PQfreemem(perr);
        return r;
    }
    timeout[0] = '\0';
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (!strcmp(o->keyword, "connect_timeout") && o->val)
            snprintf(timeout, cap, "%s", o->val);
    PQconninfoFree(opts);
    return 0;
}

/* A failed connection's error: one line, no password, and for a timeout
 * the server and the setting to change. SL_AUTH when the credentials were
 * refused, else SL_DATABASE. */
static void connect_error(PGconn *pg, const char *dsn, const char *timeout, sl_err *err)
{
    char line[400];
    const char *m = pg ? PQerrorMessage(pg) : "out of memory";
    int code = !pg ? SL_INTERNAL : dsn_auth_refused(m) ? SL_AUTH : SL_DATABASE;
    if (strstr(m, "timeout expired")) {
        const char *host = PQhost(pg), *port = PQport(pg);
        snprintf(line, sizeof line,
                 "cannot connect to PostgreSQL at %s:%s: no answer within %s s; check the host "
                 "and port, or set connect_timeout=SECONDS in the DSN (or PGCONNECT_TIMEOUT)",
                 host && host[0] ? host : "localhost", port && port[0] ? port : "5432", timeout);
    } else {
        snprintf(line, sizeof line, "cannot connect to PostgreSQL: ");
        size_t n = strlen(line);
        first_line(m, line + n, sizeof line - n);
    }
    if (pg)
        dsn_scrub_secret(line, sizeof line, PQpass(pg));
    dsn_scrub(line, sizeof line, dsn);
    sl_err_setc(err, code, "%s", line);
}

conn *conn_pg_open(const char *dsn, int read_timeout_ms, sl_err *err)
{
    char timeout[16];
    if (parse_dsn(dsn, timeout, sizeof timeout, err))
        return NULL;
    pg_conn *p = calloc(1, sizeof *p);
    if (!p)
        return sl_err_set(err, "out of memory"), NULL;
    p->base.ops = &pg_ops;
    p->read_timeout_ms = read_timeout_ms > 0 ? read_timeout_ms : CONN_READ_TIMEOUT_MS;
    /* the DSN's own settings win (it comes last); a DBA sees "sluice" in
     * pg_stat_activity unless it names itself otherwise, and a server that
     * never answers is given up after CONN_CONNECT_TIMEOUT_S unless the DSN
     * or PGCONNECT_TIMEOUT says otherwise */
    const char *env = getenv("PGCONNECT_TIMEOUT");
    const char *keys[4] = {"fallback_application_name"}, *vals[4] = {"sluice"};
    int nk = 1;
    if (!timeout[0] && env && env[0]) {
        snprintf(timeout, sizeof timeout, "%s", env);
    } else if (!timeout[0]) {
        snprintf(timeout, sizeof timeout, "%d", CONN_CONNECT_TIMEOUT_S);
        keys[nk] = "connect_timeout";
        vals[nk++] = timeout;
    }
    keys[nk] = "dbname";
    vals[nk++] = dsn;
    keys[nk] = vals[nk] = NULL;
    p->pg = PQconnectdbParams(keys, vals, 1);
    if (!p->pg || PQstatus(p->pg) != CONNECTION_OK) {
        connect_error(p->pg, dsn, timeout, err);
        if (p->pg)
            pg_free(&p->base);
        else
            free(p);
        return NULL;
    }
    /* libpq prints NOTICEs and WARNINGs on stderr by default: raw lines in
     * the middle of our output. The server's log keeps them. */
    PQsetNoticeProcessor(p->pg, drop_notice, NULL);
    snprintf(p->base.name, sizeof p->base.name, "postgresql://%s@%s:%s/%s", PQuser(p->pg),
             PQhost(p->pg), PQport(p->pg), PQdb(p->pg));
    dsn_scrub_secret(p->base.name, sizeof p->base.name, PQpass(p->pg));
    PGresult *r =
        pg_collect(p, PQsendQuery(p->pg, "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; "
                                         "SET extra_float_digits = 3; SET bytea_output = 'hex'; "
                                         "SET IntervalStyle = 'postgres'"));
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        pg_error(p, r, err);
        PQclear(r);
        pg_free(&p->base);
        return NULL;
    }
    PQclear(r);
    /* sluice.read=text (a setting the DSN can carry: options=-csluice.read=text)
     * turns the binary reader off, to rule it out when a result is in doubt */
    r = pg_collect(p, PQsendQuery(p->pg, "SELECT current_setting('sluice.read', true)"));
    p->text_only = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
                   strcmp(PQgetvalue(r, 0, 0), "text") == 0;
    PQclear(r);
    return &p->base;
}
