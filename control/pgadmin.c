/* ct_pg: the control plane's own questions to PostgreSQL and SQLite.
 *
 * Every PostgreSQL statement goes through pg_exec (PQsendQueryParams: the extended
 * protocol runs exactly one statement, so no text can smuggle a second
 * one); values are bound, identifiers quoted by PQescapeIdentifier or
 * taken from the server's own regclass rendering. The one exception is an
 * aggregation audit's `where`: operator-supplied SQL from the manifest,
 * like sluice's --where, run inside a read-only transaction.
 *
 * Errors never carry a password: every libpq message is scrubbed with the
 * session's password and the DSN's (base/dsn.h) before it reaches err.
 */
#include "pgadmin.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <limits.h>
#include <poll.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "../base/dsn.h"

/* the default bound when the caller passes timeout_ms <= 0 */
#define CT_DB_TIMEOUT_MS 30000
/* an aggregation audit sums at most this many columns: one statement
 * with 3 figures each stays well below any server's target list limit */
#define CT_AGG_MAX_COLS 200

struct ct_db {
    PGconn *pg; /* exactly one of pg, sq */
    sqlite3 *sq;
    char name[300];      /* for messages: postgresql://USER@HOST:PORT/DB or sqlite:PATH */
    char path[PATH_MAX]; /* SQLite: the file as given */
    int timeout_ms;      /* as opened: bounds the waits of one call too */
    int stalled;         /* a statement got no answer in time: the session is given up */
};

/* beyond statement_timeout, how long a statement may wait for any answer */
#define CT_ANSWER_GRACE_MS 2000

/* ---- helpers ----------------------------------------------------------------- */

/* libpq's text on one line: newlines (and the indent after them) become
 * "; ", trailing ones go. */
static void one_line(const char *m, char *out, size_t cap)
{
    size_t o = 0;
    for (const char *p = m ? m : ""; *p && o + 1 < cap; p++) {
        if (*p == '\n') {
            if (!p[1])
                break;
            if (o + 3 >= cap)
                break;
            out[o++] = ';';
            out[o++] = ' ';
            while (p[1] == ' ' || p[1] == '\t') /* libpq indents its hints */
                p++;
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
}

/* A query's failure on d: "<what> on <name>: <libpq text>", scrubbed of
 * d's password and of extra_dsn's (a subscription's source DSN). */
static int pg_fail(ct_db *d, const PGresult *r, const char *what, const char *extra_dsn,
                   sl_err *err)
{
    char line[400];
    const char *m = r ? PQresultErrorMessage(r) : "";
    if (!r && d->stalled)
        return sl_err_setc(err, SL_DATABASE,
                           "%s on %s: no answer within %d ms (the network or the server is "
                           "stuck); the session is given up",
                           what, d->name, d->timeout_ms + CT_ANSWER_GRACE_MS);
    if (!m || !m[0])
        m = PQerrorMessage(d->pg);
    one_line(m, line, sizeof line);
    dsn_scrub_secret(line, sizeof line, PQpass(d->pg));
    if (extra_dsn)
        dsn_scrub(line, sizeof line, extra_dsn);
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    int code =
        state && (!strncmp(state, "42501", 5) || !strncmp(state, "28", 2)) ? SL_AUTH : SL_DATABASE;
    return sl_err_setc(err, code, "%s on %s: %s", what, d->name, line);
}

/* PQexecParams with a deadline of our own. statement_timeout bounds the
 * server's work, tcp_user_timeout unacknowledged bytes, but a peer that
 * acknowledges and never answers (a cut network behind a proxy, a
 * frozen server) would block PQexecParams for ever, and the control
 * plane's runner with it. Past the deadline the session is given up:
 * NULL, d->stalled set, and every later statement fails at once (the
 * caller reopens). */
static PGresult *pg_exec(ct_db *d, const char *sql, int np, const char *const *params)
{
    if (d->stalled || !PQsendQueryParams(d->pg, sql, np, NULL, params, NULL, NULL, 0))
        return NULL;
    int64_t deadline = sl_now_ms() + d->timeout_ms + CT_ANSWER_GRACE_MS;
    PGresult *keep = NULL;
    for (;;) {
        int f = PQflush(d->pg); /* 0 all sent, 1 more to send, -1 failed */
        if (f < 0)
            break;
        if (f == 0 && !PQisBusy(d->pg)) {
            PGresult *r = PQgetResult(d->pg);
            if (!r)
                return keep;
            /* as PQexec: the last result, but an error is never hidden */
            if (keep && PQresultStatus(keep) == PGRES_FATAL_ERROR)
                PQclear(r);
            else {
                PQclear(keep);
                keep = r;
            }
            continue;
        }
        int64_t left = deadline - sl_now_ms();
        if (left <= 0) {
            d->stalled = 1;
            break;
        }
        struct pollfd pfd = {PQsocket(d->pg), (short)(POLLIN | (f == 1 ? POLLOUT : 0)), 0};
        int n = poll(&pfd, 1, (int)(left > 1000 ? 1000 : left));
        if (n < 0 && errno != EINTR)
            break;
        if (n > 0 && !PQconsumeInput(d->pg))
            break;
    }
    PQclear(keep);
    return NULL;
}

/* Runs one statement with text parameters; the result when its status is
 * want, else NULL with err set (see pg_fail). */
static PGresult *pg_run(ct_db *d, const char *sql, int np, const char *const *params,
                        ExecStatusType want, const char *what, sl_err *err)
{
    PGresult *r = pg_exec(d, sql, np, params);
    if (r && PQresultStatus(r) == want)
        return r;
    pg_fail(d, r, what, NULL, err);
    PQclear(r);
    return NULL;
}

static int pg_cmd(ct_db *d, const char *sql, int np, const char *const *params, const char *what,
                  sl_err *err)
{
    PGresult *r = pg_run(d, sql, np, params, PGRES_COMMAND_OK, what, err);
    PQclear(r);
    return r ? 0 : -1;
}

/* A quoted identifier in malloc'd memory, or NULL with err set. */
static char *pg_ident(ct_db *d, const char *name, sl_err *err)
{
    char *q = PQescapeIdentifier(d->pg, name, strlen(name));
    if (!q) {
        sl_err_setc(err, SL_INVALID, "cannot quote the name \"%s\" on %s", name, d->name);
        return NULL;
    }
    char *out = strdup(q);
    PQfreemem(q);
    if (!out)
        sl_err_set(err, "out of memory");
    return out;
}

/* table ("name" or "schema.name") as text for to_regclass: each part
 * quoted, so the name is taken as written and an unqualified one is
 * found through the session's search_path. */
static char *pg_regclass_text(ct_db *d, const char *table, sl_err *err)
{
    const char *dot = strchr(table, '.');
    char *schema = NULL, *name = NULL, *out = NULL;
    if (dot) {
        char *s = strndup(table, (size_t)(dot - table));
        if (!s)
            return sl_err_set(err, "out of memory"), NULL;
        schema = pg_ident(d, s, err);
        free(s);
        if (!schema)
            return NULL;
    }
    name = pg_ident(d, dot ? dot + 1 : table, err);
    if (name) {
        size_t len = (schema ? strlen(schema) + 1 : 0) + strlen(name) + 1;
        out = malloc(len);
        if (out)
            snprintf(out, len, "%s%s%s", schema ? schema : "", schema ? "." : "", name);
        else
            sl_err_set(err, "out of memory");
    }
    free(schema);
    free(name);
    return out;
}

/* Resolves table to its oid and the server's quoted rendering of it (fit
 * to paste into SQL). 0, or -1 with err set (SL_NOT_FOUND when missing). */
static int pg_resolve(ct_db *d, const char *table, char *oid, size_t oidcap, char **rendered,
                      sl_err *err)
{
    char *rc = pg_regclass_text(d, table, err);
    if (!rc)
        return -1;
    const char *p[1] = {rc};
    PGresult *r = pg_run(d, "SELECT to_regclass($1)::oid, to_regclass($1)::text", 1, p,
                         PGRES_TUPLES_OK, "looking up a table", err);
    free(rc);
    if (!r)
        return -1;
    if (PQntuples(r) != 1 || PQgetisnull(r, 0, 0)) {
        PQclear(r);
        return sl_err_setc(err, SL_NOT_FOUND, "table %s not found on %s", table, d->name);
    }
    snprintf(oid, oidcap, "%s", PQgetvalue(r, 0, 0));
    if (rendered && !(*rendered = strdup(PQgetvalue(r, 0, 1)))) {
        PQclear(r);
        return sl_err_set(err, "out of memory");
    }
    PQclear(r);
    return 0;
}

/* A decimal number (an LSN as `pg_lsn - '0/0'` prints it) as uint64. */
static uint64_t parse_u64(const char *s)
{
    return s && *s ? strtoull(s, NULL, 10) : 0;
}

static char *sq_quote(const char *ident)
{
    char *q = sqlite3_mprintf("\"%w\"", ident);
    char *out = q ? strdup(q) : NULL;
    sqlite3_free(q);
    return out;
}

static int sq_fail(ct_db *d, const char *what, sl_err *err)
{
    int rc = sqlite3_errcode(d->sq);
    return sl_err_setc(err, rc == SQLITE_NOMEM ? SL_INTERNAL : SL_DATABASE, "%s on %s: %s", what,
                       d->name, sqlite3_errmsg(d->sq));
}

/* ---- open -------------------------------------------------------------------- */

/* The SQLite file a DSN names: "sqlite:PATH", "sqlite://PATH", or a DSN
 * that is neither a postgres URI nor a conninfo string (a bare path, as
 * the worker's own parsing takes them). NULL for PostgreSQL. */
static const char *sqlite_path(const char *dsn)
{
    if (!strncmp(dsn, "sqlite://", 9))
        return dsn + 9;
    if (!strncmp(dsn, "sqlite:", 7))
        return dsn + 7;
    if (!strncmp(dsn, "postgresql://", 13) || !strncmp(dsn, "postgres://", 11) || strchr(dsn, '='))
        return NULL;
    return dsn;
}

static ct_db *open_sqlite(const char *path, int timeout_ms, sl_err *err)
{
    struct stat st;
    if (!path[0])
        return sl_err_setc(err, SL_INVALID, "the SQLite path is empty: write sqlite:PATH"), NULL;
    if (strlen(path) >= PATH_MAX)
        return sl_err_setc(err, SL_INVALID, "the SQLite path is too long"), NULL;
    /* opening a missing file read-only fails anyway; this says why */
    if (stat(path, &st) != 0)
        return sl_err_setc(err, SL_DATABASE, "SQLite database \"%s\" does not exist (%s)", path,
                           strerror(errno)),
               NULL;
    ct_db *d = calloc(1, sizeof *d);
    if (!d)
        return sl_err_set(err, "out of memory"), NULL;
    snprintf(d->path, sizeof d->path, "%s", path);
    snprintf(d->name, sizeof d->name, "sqlite:%s", path);
    if (sqlite3_open_v2(path, &d->sq, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        sl_err_setc(err, SL_DATABASE, "cannot open SQLite database \"%s\": %s", path,
                    d->sq ? sqlite3_errmsg(d->sq) : "out of memory");
        ct_db_free(d);
        return NULL;
    }
    sqlite3_busy_timeout(d->sq, timeout_ms);
    /* a file that is not a database only says so on first read */
    char *msg = NULL;
    if (sqlite3_exec(d->sq, "SELECT count(*) FROM sqlite_schema", NULL, NULL, &msg) != SQLITE_OK) {
        sl_err_setc(err, SL_DATABASE, "cannot read SQLite database \"%s\": %s", path,
                    msg ? msg : "?");
        sqlite3_free(msg);
        ct_db_free(d);
        return NULL;
    }
    return d;
}

static void drop_notice(void *arg, const char *message)
{
    (void)arg, (void)message;
}

ct_db *ct_db_open(const char *dsn, int timeout_ms, sl_err *err)
{
    if (timeout_ms <= 0)
        timeout_ms = CT_DB_TIMEOUT_MS;
    const char *path = sqlite_path(dsn);
    if (path)
        return open_sqlite(path, timeout_ms, err);

    /* libpq's parse errors quote the DSN: our own words instead */
    char *perr = NULL;
    if (dsn_check_uri(dsn, "invalid connection string", err))
        return NULL;
    PQconninfoOption *opts = PQconninfoParse(dsn, &perr);
    if (!opts) {
        sl_err_setc(err, SL_INVALID, "invalid connection string: %s",
                    perr ? dsn_parse_hint(perr) : "out of memory");
        PQfreemem(perr);
        return NULL;
    }
    PQconninfoFree(opts);

    ct_db *d = calloc(1, sizeof *d);
    if (!d)
        return sl_err_set(err, "out of memory"), NULL;
    d->timeout_ms = timeout_ms;
    /* libpq counts connect_timeout in whole seconds (and takes 1 as 2);
     * the DSN's own settings come last and win */
    char ct[16], tcp[16];
    snprintf(ct, sizeof ct, "%d", (timeout_ms + 999) / 1000 < 2 ? 2 : (timeout_ms + 999) / 1000);
    snprintf(tcp, sizeof tcp, "%d", timeout_ms);
    const char *keys[] = {"fallback_application_name", "connect_timeout", "tcp_user_timeout",
                          "dbname", NULL};
    const char *vals[] = {"sluice-control", ct, tcp, dsn, NULL};
    d->pg = PQconnectdbParams(keys, vals, 1);
    if (!d->pg) {
        free(d);
        return sl_err_set(err, "out of memory"), NULL;
    }
    const char *user = PQuser(d->pg), *host = PQhost(d->pg), *port = PQport(d->pg),
               *db = PQdb(d->pg);
    snprintf(d->name, sizeof d->name, "postgresql://%s@%s:%s/%s", user ? user : "",
             host && host[0] ? host : "localhost", port && port[0] ? port : "5432", db ? db : "");
    dsn_scrub_secret(d->name, sizeof d->name, PQpass(d->pg));
    if (PQstatus(d->pg) != CONNECTION_OK) {
        const char *m = PQerrorMessage(d->pg);
        char line[400];
        one_line(m, line, sizeof line);
        dsn_scrub_secret(line, sizeof line, PQpass(d->pg));
        dsn_scrub(line, sizeof line, dsn);
        sl_err_setc(err, dsn_auth_refused(m) ? SL_AUTH : SL_DATABASE, "cannot connect to %s: %s",
                    d->name, line);
        ct_db_free(d);
        return NULL;
    }
    /* libpq prints NOTICEs on stderr by default; the server's log keeps them */
    PQsetNoticeProcessor(d->pg, drop_notice, NULL);
    char ms[24];
    snprintf(ms, sizeof ms, "%d", timeout_ms);
    const char *p[1] = {ms};
    /* synchronous_commit on for the control plane's own writes: a
     * heartbeat's commit then flushes the WAL before it, so a walsender
     * sends it (and everything committed before it) at once, not after
     * the WAL writer's next round (up to 3 x wal_writer_delay) */
    PGresult *r = pg_run(d,
                         "SELECT set_config('statement_timeout', $1, false), "
                         "set_config('synchronous_commit', 'on', false)",
                         1, p, PGRES_TUPLES_OK, "setting statement_timeout", err);
    if (!r) {
        ct_db_free(d);
        return NULL;
    }
    PQclear(r);
    return d;
}

void ct_db_free(ct_db *d)
{
    if (!d)
        return;
    PQfinish(d->pg);
    sqlite3_close(d->sq);
    free(d);
}

int ct_db_is_pg(const ct_db *d)
{
    return d && d->pg;
}

/* ---- facts ------------------------------------------------------------------- */

int ct_db_ping(ct_db *d, sl_err *err)
{
    if (!d->pg)
        return 0;
    PGresult *r = pg_run(d, "SELECT 1", 0, NULL, PGRES_TUPLES_OK, "a round trip", err);
    PQclear(r);
    return r ? 0 : -1;
}

int ct_db_facts(ct_db *d, ct_side_facts *out, sl_err *err)
{
    memset(out, 0, sizeof *out);
    if (d->sq) {
        char real[PATH_MAX];
        snprintf(out->engine, sizeof out->engine, "sqlite");
        out->major = 3;
        const char *id = realpath(d->path, real) ? real : d->path;
        /* a path too long to keep whole keeps its tail, the part that differs */
        size_t len = strlen(id), cap = sizeof out->server_id;
        memcpy(out->server_id, len >= cap ? id + len - (cap - 1) : id, len >= cap ? cap - 1 : len);
        return 0;
    }
    snprintf(out->engine, sizeof out->engine, "postgresql");
    out->major = PQserverVersion(d->pg) / 10000;
    PGresult *r = pg_run(d, "SELECT current_setting('wal_level')", 0, NULL, PGRES_TUPLES_OK,
                         "reading wal_level", err);
    if (!r)
        return -1;
    out->logical = PQntuples(r) == 1 && !strcmp(PQgetvalue(r, 0, 0), "logical");
    PQclear(r);
    /* pg_control_system() may be denied to a plain role: then the address
     * names the server, which is weaker (two names for one server) but
     * never merges two servers */
    r = pg_exec(d, "SELECT system_identifier::text FROM pg_control_system()", 0, NULL);
    if (r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0))
        snprintf(out->server_id, sizeof out->server_id, "%s", PQgetvalue(r, 0, 0));
    else
        snprintf(out->server_id, sizeof out->server_id, "%s:%s", PQhost(d->pg), PQport(d->pg));
    PQclear(r);
    return 0;
}

/* ---- columns ----------------------------------------------------------------- */

void ct_columns_free(ct_column *c, size_t n)
{
    for (size_t i = 0; c && i < n; i++) {
        free(c[i].name);
        free(c[i].type);
    }
    free(c);
}

static int pg_columns(ct_db *d, const char *table, ct_column **out, size_t *n, sl_err *err)
{
    char oid[32];
    if (pg_resolve(d, table, oid, sizeof oid, NULL, err))
        return -1;
    const char *p[1] = {oid};
    PGresult *r = pg_run(d,
                         "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
                         "EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid "
                         "AND i.indisprimary AND a.attnum = ANY (i.indkey)) "
                         "FROM pg_attribute a WHERE a.attrelid = $1::oid AND a.attnum > 0 "
                         "AND NOT a.attisdropped ORDER BY a.attnum",
                         1, p, PGRES_TUPLES_OK, "reading columns", err);
    if (!r)
        return -1;
    size_t rows = (size_t)PQntuples(r);
    ct_column *c = calloc(rows ? rows : 1, sizeof *c);
    if (!c)
        goto oom;
    for (size_t i = 0; i < rows; i++) {
        c[i].name = strdup(PQgetvalue(r, (int)i, 0));
        c[i].type = strdup(PQgetvalue(r, (int)i, 1));
        c[i].not_null = PQgetvalue(r, (int)i, 2)[0] == 't';
        c[i].in_key = PQgetvalue(r, (int)i, 3)[0] == 't';
        if (!c[i].name || !c[i].type) {
            ct_columns_free(c, i + 1);
            goto oom;
        }
    }
    PQclear(r);
    *out = c;
    *n = rows;
    return 0;
oom:
    PQclear(r);
    return sl_err_set(err, "out of memory");
}

static int sq_columns(ct_db *d, const char *table, ct_column **out, size_t *n, sl_err *err)
{
    const char *dot = strchr(table, '.');
    char *schema = dot ? strndup(table, (size_t)(dot - table)) : NULL;
    if (dot && !schema)
        return sl_err_set(err, "out of memory");
    sqlite3_stmt *st = NULL;
    ct_column *c = NULL;
    size_t k = 0, cap = 0;
    int rc = -1, step;
    if (sqlite3_prepare_v2(d->sq,
                           "SELECT name, type, \"notnull\", pk FROM pragma_table_info(?1, ?2)", -1,
                           &st, NULL) != SQLITE_OK) {
        sq_fail(d, "reading columns", err);
        goto done;
    }
    sqlite3_bind_text(st, 1, dot ? dot + 1 : table, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, schema ? schema : "main", -1, SQLITE_STATIC);
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (k == cap) {
            size_t nc = cap ? cap * 2 : 16;
            ct_column *g = realloc(c, nc * sizeof *c);
            if (!g) {
                sl_err_set(err, "out of memory");
                goto done;
            }
            c = g;
            cap = nc;
        }
        const char *name = (const char *)sqlite3_column_text(st, 0);
        const char *type = (const char *)sqlite3_column_text(st, 1);
        c[k] = (ct_column){.name = strdup(name ? name : ""),
                           .type = strdup(type ? type : ""),
                           .not_null = sqlite3_column_int(st, 2) != 0,
                           .in_key = sqlite3_column_int(st, 3) > 0};
        k++;
        if (!c[k - 1].name || !c[k - 1].type) {
            sl_err_set(err, "out of memory");
            goto done;
        }
    }
    if (step != SQLITE_DONE) {
        sq_fail(d, "reading columns", err);
        goto done;
    }
    if (k == 0) {
        sl_err_setc(err, SL_NOT_FOUND, "table %s not found on %s", table, d->name);
        goto done;
    }
    *out = c;
    *n = k;
    c = NULL;
    rc = 0;
done:
    ct_columns_free(c, k);
    sqlite3_finalize(st);
    free(schema);
    return rc;
}

int ct_db_columns(ct_db *d, const char *table, ct_column **out, size_t *n, sl_err *err)
{
    *out = NULL;
    *n = 0;
    return d->pg ? pg_columns(d, table, out, n, err) : sq_columns(d, table, out, n, err);
}

static const ct_column *find_column(const ct_column *c, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(c[i].name, name))
            return &c[i];
    return NULL;
}

/* Matched by name, so column order may differ. NOT NULL only matters one
 * way: a target that refuses NULLs the source holds would stop the copy. */
int ct_columns_compare(const ct_column *a, size_t na, const ct_column *b, size_t nb, char *why,
                       size_t len)
{
    for (size_t i = 0; i < na; i++) {
        const ct_column *o = find_column(b, nb, a[i].name);
        if (!o) {
            snprintf(why, len, "column %s: on source, missing on target", a[i].name);
            return 1;
        }
        if (strcmp(a[i].type, o->type)) {
            snprintf(why, len, "column %s: %s on source, %s on target", a[i].name, a[i].type,
                     o->type);
            return 1;
        }
        if (!a[i].in_key != !o->in_key) {
            snprintf(why, len, "column %s: %s the primary key on source, %s on target", a[i].name,
                     a[i].in_key ? "in" : "not in", o->in_key ? "in it" : "not in it");
            return 1;
        }
        if (!a[i].not_null && o->not_null && !o->in_key) {
            snprintf(why, len, "column %s: nullable on source, NOT NULL on target", a[i].name);
            return 1;
        }
    }
    for (size_t i = 0; i < nb; i++)
        if (!find_column(a, na, b[i].name)) {
            snprintf(why, len, "column %s: missing on source, on target", b[i].name);
            return 1;
        }
    if (len)
        why[0] = '\0';
    return 0;
}

/* ---- aggregates -------------------------------------------------------------- */

void ct_aggregate_free(ct_aggregate *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->n; i++) {
        free(a->names ? a->names[i] : NULL);
        free(a->values ? a->values[i] : NULL);
    }
    free(a->names);
    free(a->values);
    memset(a, 0, sizeof *a);
}

static int pg_is_numeric(const char *type)
{
    static const char *const exact[] = {"smallint", "integer", "bigint", "real",
                                        "double precision"};
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
        if (!strcmp(type, exact[i]))
            return 1;
    return !strncmp(type, "numeric", 7);
}

/* SQLite's affinity rules (datatype3.html, 3.1): INTEGER, REAL and
 * NUMERIC affinity are numeric; TEXT and BLOB (and no type) are not. */
static int sq_is_numeric(const char *decl)
{
    char up[128];
    size_t i = 0;
    for (; decl[i] && i + 1 < sizeof up; i++)
        up[i] = (char)toupper((unsigned char)decl[i]);
    up[i] = '\0';
    if (strstr(up, "INT"))
        return 1;
    if (strstr(up, "CHAR") || strstr(up, "CLOB") || strstr(up, "TEXT") || strstr(up, "BLOB") ||
        !up[0])
        return 0;
    return 1;
}

/* The audit's SELECT and figure names for the numeric columns of cols:
 * "count(*), sum(c)::text, ..." on PostgreSQL (floating sums through
 * numeric, so the order rows are added in cannot change the text). */
static int build_aggregate(ct_db *d, const ct_column *cols, size_t ncols, ct_aggregate *out,
                           sl_buf *sql)
{
    size_t take = 0;
    for (size_t i = 0; i < ncols; i++)
        take += d->pg ? pg_is_numeric(cols[i].type) : sq_is_numeric(cols[i].type);
    if (take > CT_AGG_MAX_COLS)
        take = CT_AGG_MAX_COLS;
    out->names = calloc(take * 3 + 1, sizeof *out->names);
    out->values = calloc(take * 3 + 1, sizeof *out->values);
    if (!out->names || !out->values)
        return -1;
    if (sl_buf_printf(sql, "SELECT count(*)"))
        return -1;
    static const char *const fn[] = {"sum", "min", "max"};
    for (size_t i = 0, k = 0; i < ncols && k < take; i++) {
        const char *t = cols[i].type;
        if (!(d->pg ? pg_is_numeric(t) : sq_is_numeric(t)))
            continue;
        char *q = d->pg ? PQescapeIdentifier(d->pg, cols[i].name, strlen(cols[i].name))
                        : sqlite3_mprintf("\"%w\"", cols[i].name);
        if (!q)
            return -1;
        int floating = d->pg && (!strcmp(t, "real") || !strcmp(t, "double precision"));
        int bad = 0;
        for (int f = 0; f < 3 && !bad; f++) {
            if (d->pg)
                bad = sl_buf_printf(sql, ", %s(%s%s)::text", fn[f], q,
                                    floating && f == 0 ? "::numeric" : "");
            else
                bad = sl_buf_printf(sql, ", %s(%s)", fn[f], q);
            size_t nl = strlen(cols[i].name) + 6;
            char *name = malloc(nl);
            if (!name)
                bad = 1;
            else
                snprintf(name, nl, "%s(%s)", fn[f], cols[i].name);
            out->names[out->n++] = name;
        }
        if (d->pg)
            PQfreemem(q);
        else
            sqlite3_free(q);
        if (bad)
            return -1;
        k++;
    }
    return 0;
}

static int set_value(ct_aggregate *out, size_t i, const char *v)
{
    if (!v)
        return 0;
    return (out->values[i] = strdup(v)) ? 0 : -1;
}

static int pg_aggregate(ct_db *d, const char *table, const char *where, ct_aggregate *out,
                        sl_err *err)
{
    ct_column *cols = NULL;
    size_t ncols = 0;
    char *rendered = NULL, oid[32];
    sl_buf sql = {0};
    PGresult *r = NULL;
    int rc = -1, in_tx = 0;
    if (pg_resolve(d, table, oid, sizeof oid, &rendered, err) ||
        pg_columns(d, table, &cols, &ncols, err))
        goto done;
    if (build_aggregate(d, cols, ncols, out, &sql) || sl_buf_printf(&sql, " FROM %s", rendered) ||
        (where && where[0] && sl_buf_printf(&sql, " WHERE (%s)", where)) || sl_buf_putc(&sql, 0)) {
        sl_err_set(err, "out of memory");
        goto done;
    }
    /* read-only: `where` is the operator's SQL and may call functions */
    if (pg_cmd(d, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL, "starting an audit",
               err))
        goto done;
    in_tx = 1;
    char what[300];
    snprintf(what, sizeof what, "aggregating %s", table);
    r = pg_run(d, (const char *)sql.p, 0, NULL, PGRES_TUPLES_OK, what, err);
    if (!r)
        goto done;
    if (PQntuples(r) != 1 || (size_t)PQnfields(r) != out->n + 1) {
        sl_err_set(err, "aggregating %s on %s: unexpected result shape", table, d->name);
        goto done;
    }
    out->rows = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    for (size_t i = 0; i < out->n; i++)
        if (set_value(out, i,
                      PQgetisnull(r, 0, (int)i + 1) ? NULL : PQgetvalue(r, 0, (int)i + 1))) {
            sl_err_set(err, "out of memory");
            goto done;
        }
    rc = 0;
done:
    PQclear(r);
    if (in_tx) {
        PGresult *e = pg_exec(d, rc == 0 ? "COMMIT" : "ROLLBACK", 0, NULL);
        PQclear(e);
    }
    ct_columns_free(cols, ncols);
    free(rendered);
    sl_buf_free(&sql);
    return rc;
}

static int sq_aggregate(ct_db *d, const char *table, const char *where, ct_aggregate *out,
                        sl_err *err)
{
    ct_column *cols = NULL;
    size_t ncols = 0;
    sl_buf sql = {0};
    sqlite3_stmt *st = NULL;
    char *qt = NULL, *qs = NULL;
    int rc = -1;
    if (sq_columns(d, table, &cols, &ncols, err))
        goto done;
    const char *dot = strchr(table, '.');
    if (dot) {
        char *s = strndup(table, (size_t)(dot - table));
        qs = s ? sq_quote(s) : NULL;
        free(s);
    }
    qt = sq_quote(dot ? dot + 1 : table);
    if (!qt || (dot && !qs) || build_aggregate(d, cols, ncols, out, &sql) ||
        sl_buf_printf(&sql, " FROM %s%s%s", qs ? qs : "", qs ? "." : "", qt) ||
        (where && where[0] && sl_buf_printf(&sql, " WHERE (%s)", where)) || sl_buf_putc(&sql, 0)) {
        sl_err_set(err, "out of memory");
        goto done;
    }
    const char *tail = NULL;
    char what[300];
    snprintf(what, sizeof what, "aggregating %s", table);
    if (sqlite3_prepare_v2(d->sq, (const char *)sql.p, -1, &st, &tail) != SQLITE_OK) {
        sq_fail(d, what, err);
        goto done;
    }
    /* one statement only: a `where` that closes it and starts another is refused */
    while (tail && isspace((unsigned char)*tail))
        tail++;
    if (tail && *tail) {
        sl_err_setc(err, SL_INVALID, "aggregating %s on %s: the where clause ends the statement",
                    table, d->name);
        goto done;
    }
    if (sqlite3_step(st) != SQLITE_ROW) {
        sq_fail(d, what, err);
        goto done;
    }
    out->rows = sqlite3_column_int64(st, 0);
    for (size_t i = 0; i < out->n; i++) {
        int col = (int)i + 1;
        const char *v = sqlite3_column_type(st, col) == SQLITE_NULL
                            ? NULL
                            : (const char *)sqlite3_column_text(st, col);
        if (set_value(out, i, v)) {
            sl_err_set(err, "out of memory");
            goto done;
        }
    }
    rc = 0;
done:
    sqlite3_finalize(st);
    ct_columns_free(cols, ncols);
    free(qt);
    free(qs);
    sl_buf_free(&sql);
    return rc;
}

int ct_db_aggregate(ct_db *d, const char *table, const char *where, ct_aggregate *out, sl_err *err)
{
    memset(out, 0, sizeof *out);
    int rc =
        d->pg ? pg_aggregate(d, table, where, out, err) : sq_aggregate(d, table, where, out, err);
    if (rc)
        ct_aggregate_free(out);
    return rc;
}

int ct_aggregate_compare(const ct_aggregate *a, const ct_aggregate *b, char *why, size_t len)
{
    if (a->rows != b->rows) {
        snprintf(why, len, "rows: %" PRId64 " on source, %" PRId64 " on target", a->rows, b->rows);
        return 1;
    }
    size_t n = a->n < b->n ? a->n : b->n;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(a->names[i], b->names[i])) {
            snprintf(why, len, "figure %zu: %s on source, %s on target", i + 1, a->names[i],
                     b->names[i]);
            return 1;
        }
        const char *x = a->values[i], *y = b->values[i];
        if (!x != !y || (x && strcmp(x, y))) {
            snprintf(why, len, "%s: %s on source, %s on target", a->names[i], x ? x : "NULL",
                     y ? y : "NULL");
            return 1;
        }
    }
    if (a->n != b->n) {
        snprintf(why, len, "%s: %s on source, %s on target",
                 a->n > b->n ? a->names[n] : b->names[n], a->n > b->n ? "present" : "missing",
                 a->n > b->n ? "missing" : "present");
        return 1;
    }
    if (len)
        why[0] = '\0';
    return 0;
}

/* ---- logical replication ----------------------------------------------------- */

static int need_pg(ct_db *d, const char *what, sl_err *err)
{
    if (d && d->pg)
        return 0;
    return sl_err_setc(err, SL_INVALID, "%s needs PostgreSQL, not %s", what,
                       d ? d->name : "no database");
}

/* Whether the publication name on src lists exactly the tables given. */
static int publication_covers(ct_db *src, const char *name, const char *const *tables,
                              size_t ntables, int *same, sl_err *err)
{
    const char *p[2] = {name, NULL};
    PGresult *r = pg_run(src, "SELECT count(*) FROM pg_publication_tables WHERE pubname = $1", 1, p,
                         PGRES_TUPLES_OK, "reading a publication", err);
    if (!r)
        return -1;
    *same = (size_t)strtoull(PQgetvalue(r, 0, 0), NULL, 10) == ntables;
    PQclear(r);
    for (size_t i = 0; i < ntables && *same; i++) {
        char oid[32];
        if (pg_resolve(src, tables[i], oid, sizeof oid, NULL, err))
            return -1;
        p[1] = oid;
        r = pg_run(src,
                   "SELECT EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = $1 "
                   "AND format('%I.%I', schemaname, tablename)::regclass = $2::oid)",
                   2, p, PGRES_TUPLES_OK, "reading a publication", err);
        if (!r)
            return -1;
        *same = PQgetvalue(r, 0, 0)[0] == 't';
        PQclear(r);
    }
    return 0;
}

int ct_pg_create_publication(ct_db *src, const char *name, const char *const *tables,
                             size_t ntables, sl_err *err)
{
    if (need_pg(src, "a publication", err))
        return -1;
    if (ntables == 0)
        return sl_err_setc(err, SL_INVALID, "publication %s: no tables", name);
    const char *p[1] = {name};
    PGresult *r = pg_run(src, "SELECT 1 FROM pg_publication WHERE pubname = $1", 1, p,
                         PGRES_TUPLES_OK, "reading publications", err);
    if (!r)
        return -1;
    int exists = PQntuples(r) > 0;
    PQclear(r);
    if (exists) {
        int same = 0;
        if (publication_covers(src, name, tables, ntables, &same, err))
            return -1;
        if (!same)
            return sl_err_setc(err, SL_INVALID,
                               "publication %s exists on %s with other tables; drop it or "
                               "choose another name",
                               name, src->name);
        return 0;
    }
    sl_buf sql = {0};
    char *q = pg_ident(src, name, err);
    int rc = -1;
    if (!q)
        return -1;
    if (sl_buf_printf(&sql, "CREATE PUBLICATION %s FOR TABLE ", q))
        goto oom;
    for (size_t i = 0; i < ntables; i++) {
        char oid[32], *rendered = NULL;
        if (pg_resolve(src, tables[i], oid, sizeof oid, &rendered, err))
            goto done;
        int bad = sl_buf_printf(&sql, "%s%s", i ? ", " : "", rendered);
        free(rendered);
        if (bad)
            goto oom;
    }
    if (sl_buf_putc(&sql, 0))
        goto oom;
    rc = pg_cmd(src, (const char *)sql.p, 0, NULL, "creating a publication", err);
    goto done;
oom:
    sl_err_set(err, "out of memory");
done:
    free(q);
    sl_buf_free(&sql);
    return rc;
}

/* Whether subscription name exists in dst's database (and is enabled). */
static int subscription_exists(ct_db *dst, const char *name, int *exists, int *enabled, sl_err *err)
{
    const char *p[1] = {name};
    PGresult *r = pg_run(dst,
                         "SELECT subenabled FROM pg_subscription WHERE subname = $1 AND subdbid = "
                         "(SELECT oid FROM pg_database WHERE datname = current_database())",
                         1, p, PGRES_TUPLES_OK, "reading subscriptions", err);
    if (!r)
        return -1;
    *exists = PQntuples(r) > 0;
    if (enabled)
        *enabled = *exists && PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    return 0;
}

int ct_pg_create_subscription(ct_db *dst, const char *name, const char *source_dsn,
                              const char *publication, sl_err *err)
{
    return ct_pg_create_subscription_ex(dst, name, source_dsn, publication, 1, err);
}

int ct_pg_create_subscription_ex(ct_db *dst, const char *name, const char *source_dsn,
                                 const char *publication, int copy_data, sl_err *err)
{
    if (need_pg(dst, "a subscription", err))
        return -1;
    int exists;
    if (subscription_exists(dst, name, &exists, NULL, err))
        return -1;
    if (exists)
        return 0;
    char *qn = pg_ident(dst, name, err);
    char *qp = qn ? pg_ident(dst, publication, err) : NULL;
    char *conn = qp ? PQescapeLiteral(dst->pg, source_dsn, strlen(source_dsn)) : NULL;
    int rc = -1;
    if (qp && !conn)
        sl_err_setc(err, SL_INVALID, "cannot quote the source DSN for a subscription on %s",
                    dst->name);
    if (conn) {
        size_t len = strlen(qn) + strlen(qp) + strlen(conn) + 128;
        char *sql = malloc(len);
        if (!sql) {
            sl_err_set(err, "out of memory");
        } else {
            snprintf(sql, len,
                     "CREATE SUBSCRIPTION %s CONNECTION %s PUBLICATION %s WITH (copy_data = %s)",
                     qn, conn, qp, copy_data ? "true" : "false");
            /* CREATE SUBSCRIPTION connects to the source, whose refusal
             * (and the server's echo of the conninfo) may quote the DSN */
            PGresult *r = pg_exec(dst, sql, 0, NULL);
            if (r && PQresultStatus(r) == PGRES_COMMAND_OK)
                rc = 0;
            else
                pg_fail(dst, r, "creating a subscription", source_dsn, err);
            PQclear(r);
            /* the statement holds the source's password */
            explicit_bzero(sql, len);
            free(sql);
        }
        explicit_bzero(conn, strlen(conn));
        PQfreemem(conn);
    }
    free(qn);
    free(qp);
    return rc;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The subscription's oid in dst's database as text (for pg_stat_subscription,
 * which lists every database's), or SL_NOT_FOUND. */
static int subscription_oid(ct_db *dst, const char *name, char *oid, size_t cap, sl_err *err)
{
    const char *p[1] = {name};
    PGresult *r = pg_run(dst,
                         "SELECT oid FROM pg_subscription WHERE subname = $1 AND subdbid = "
                         "(SELECT oid FROM pg_database WHERE datname = current_database())",
                         1, p, PGRES_TUPLES_OK, "reading subscriptions", err);
    if (!r)
        return -1;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return sl_err_setc(err, SL_NOT_FOUND, "subscription %s not found on %s", name, dst->name);
    }
    snprintf(oid, cap, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return 0;
}

int ct_pg_set_subscription_enabled(ct_db *dst, const char *name, int enabled, sl_err *err)
{
    if (need_pg(dst, "a subscription", err))
        return -1;
    char oid[32];
    if (subscription_oid(dst, name, oid, sizeof oid, err))
        return -1;
    char *q = pg_ident(dst, name, err);
    if (!q)
        return -1;
    char sql[600];
    snprintf(sql, sizeof sql, "ALTER SUBSCRIPTION %s %s", q, enabled ? "ENABLE" : "DISABLE");
    free(q);
    if (pg_cmd(dst, sql, 0, NULL, enabled ? "enabling a subscription" : "disabling a subscription",
               err))
        return -1;
    if (enabled)
        return 0;
    /* DISABLE only asks the workers to stop; one still applying would,
     * with a reverse subscription created next, send changes in a loop */
    const char *p[1] = {oid};
    int64_t deadline = sl_now_ms() + dst->timeout_ms;
    for (;;) {
        PGresult *r = pg_run(dst,
                             "SELECT count(*) FROM pg_stat_subscription WHERE subid = $1::oid "
                             "AND pid IS NOT NULL",
                             1, p, PGRES_TUPLES_OK, "reading a subscription's workers", err);
        if (!r)
            return -1;
        int running = strtol(PQgetvalue(r, 0, 0), NULL, 10) > 0;
        PQclear(r);
        if (!running)
            return 0;
        if (sl_now_ms() >= deadline)
            return sl_err_setc(err, SL_BUSY,
                               "subscription %s on %s is disabled but its workers still run "
                               "after %d ms",
                               name, dst->name, dst->timeout_ms);
        sleep_ms(10);
    }
}

/* Drops the replication slot name on src if it is still there; a slot the
 * walsender of a just-dropped subscription still holds is retried briefly. */
static int drop_slot(ct_db *src, const char *name, sl_err *err)
{
    const char *p[1] = {name};
    for (int attempt = 0;; attempt++) {
        PGresult *r = pg_exec(src,
                              "SELECT pg_drop_replication_slot(slot_name) FROM "
                              "pg_replication_slots WHERE slot_name = $1",
                              1, p);
        if (r && PQresultStatus(r) == PGRES_TUPLES_OK) {
            PQclear(r);
            return 0;
        }
        const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
        /* 55006 object_in_use: "replication slot ... is active" */
        if (attempt < 25 && state && !strcmp(state, "55006")) {
            PQclear(r);
            sleep_ms(200);
            continue;
        }
        pg_fail(src, r, "dropping a replication slot", NULL, err);
        PQclear(r);
        return -1;
    }
}

int ct_pg_drop_replication(ct_db *src, ct_db *dst, const char *subscription,
                           const char *publication, sl_err *err)
{
    if ((src && need_pg(src, "dropping a publication", err)) ||
        (dst && need_pg(dst, "dropping a subscription", err)))
        return -1;
    if (dst) {
        int exists;
        if (subscription_exists(dst, subscription, &exists, NULL, err))
            return -1;
        char *q = exists ? pg_ident(dst, subscription, err) : NULL;
        if (exists && !q)
            return -1;
        if (exists) {
            char sql[1200];
            snprintf(sql, sizeof sql, "DROP SUBSCRIPTION IF EXISTS %s", q);
            PGresult *r = pg_exec(dst, sql, 0, NULL);
            int ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
            PQclear(r);
            if (!ok) {
                /* the source is unreachable (or its slot gone): detach the
                 * subscription from its slot, drop it, and drop the slot
                 * below if the source answers */
                snprintf(sql, sizeof sql, "ALTER SUBSCRIPTION %s DISABLE", q);
                int bad = pg_cmd(dst, sql, 0, NULL, "disabling a subscription", err);
                if (!bad) {
                    snprintf(sql, sizeof sql, "ALTER SUBSCRIPTION %s SET (slot_name = NONE)", q);
                    bad = pg_cmd(dst, sql, 0, NULL, "detaching a subscription", err);
                }
                if (!bad) {
                    snprintf(sql, sizeof sql, "DROP SUBSCRIPTION IF EXISTS %s", q);
                    bad = pg_cmd(dst, sql, 0, NULL, "dropping a subscription", err);
                }
                if (bad) {
                    free(q);
                    return -1;
                }
            }
            free(q);
        }
    }
    if (!src)
        return 0;
    /* looked for either way: a detach, now or in an earlier attempt, leaves the slot */
    if (drop_slot(src, subscription, err))
        return -1;
    char *qp = pg_ident(src, publication, err);
    if (!qp)
        return -1;
    char sql[600];
    snprintf(sql, sizeof sql, "DROP PUBLICATION IF EXISTS %s", qp);
    free(qp);
    return pg_cmd(src, sql, 0, NULL, "dropping a publication", err);
}

/* src's current WAL position, and how far the subscriber behind slot name
 * has applied it (0 when there is no slot, or it confirmed nothing yet);
 * has_slot (may be NULL) says whether the slot exists. */
static int slot_progress(ct_db *src, const char *name, uint64_t *current, uint64_t *applied,
                         int *has_slot, sl_err *err)
{
    const char *p[1] = {name};
    /* pg_lsn minus '0/0' is the LSN as a plain number. Applied is the
     * walsender's replay_lsn (what the subscriber has applied, reported as
     * it goes); the slot's confirmed_flush_lsn waits for the subscriber's
     * own WAL flush, and is all there is while no walsender runs. */
    PGresult *r = pg_run(src,
                         "SELECT (pg_current_wal_lsn() - '0/0')::text, "
                         "(SELECT (GREATEST(confirmed_flush_lsn, (SELECT max(replay_lsn) FROM "
                         "pg_stat_replication WHERE application_name = $1)) - '0/0')::text "
                         "FROM pg_replication_slots WHERE slot_name = $1), "
                         "EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
                         1, p, PGRES_TUPLES_OK, "reading the replication slot", err);
    if (!r)
        return -1;
    *current = parse_u64(PQgetvalue(r, 0, 0));
    *applied = PQgetisnull(r, 0, 1) ? 0 : parse_u64(PQgetvalue(r, 0, 1));
    if (has_slot)
        *has_slot = PQgetvalue(r, 0, 2)[0] == 't';
    PQclear(r);
    return 0;
}

int ct_pg_repl_state(ct_db *src, ct_db *dst, const char *name, ct_repl_state *out, sl_err *err)
{
    memset(out, 0, sizeof *out);
    if (need_pg(src, "replication state", err) || need_pg(dst, "replication state", err))
        return -1;
    const char *p[1] = {name};
    PGresult *r = pg_run(dst,
                         "SELECT s.subenabled, "
                         "(SELECT count(*) FROM pg_subscription_rel r WHERE r.srsubid = s.oid), "
                         "(SELECT count(*) FROM pg_subscription_rel r WHERE r.srsubid = s.oid "
                         "AND r.srsubstate = 'r') "
                         "FROM pg_subscription s WHERE s.subname = $1 AND s.subdbid = "
                         "(SELECT oid FROM pg_database WHERE datname = current_database())",
                         1, p, PGRES_TUPLES_OK, "reading a subscription", err);
    if (!r)
        return -1;
    if (PQntuples(r) == 1) {
        out->exists = 1;
        out->enabled = PQgetvalue(r, 0, 0)[0] == 't';
        out->tables = (size_t)strtoull(PQgetvalue(r, 0, 1), NULL, 10);
        out->tables_ready = (size_t)strtoull(PQgetvalue(r, 0, 2), NULL, 10);
    }
    PQclear(r);
    if (slot_progress(src, name, &out->source_lsn, &out->confirmed_lsn, NULL, err))
        return -1;
    /* no slot (or nothing confirmed yet): all of the source's WAL is owed */
    out->lag_bytes =
        out->source_lsn > out->confirmed_lsn ? (int64_t)(out->source_lsn - out->confirmed_lsn) : 0;
    return 0;
}

int ct_pg_current_lsn(ct_db *d, uint64_t *lsn, sl_err *err)
{
    *lsn = 0;
    if (need_pg(d, "a WAL position", err))
        return -1;
    /* The insert position, not pg_current_wal_lsn() (the write position):
     * under synchronous_commit = off a commit may not be written yet, and
     * the write position would lie before it. */
    PGresult *r = pg_run(d,
                         "SELECT (pg_current_wal_insert_lsn() - '0/0')::text, "
                         "current_setting('wal_block_size'), "
                         "(SELECT setting FROM pg_settings WHERE name = 'wal_segment_size')",
                         0, NULL, PGRES_TUPLES_OK, "reading the WAL position", err);
    if (!r)
        return -1;
    uint64_t at = parse_u64(PQgetvalue(r, 0, 0));
    uint64_t block = parse_u64(PQgetvalue(r, 0, 1)), segment = parse_u64(PQgetvalue(r, 0, 2));
    PQclear(r);
    /* At a page boundary the insert position points past the page header
     * (40 bytes on a segment's first page, 24 on others; 64-bit builds),
     * where no record ends: the end of the last record is the boundary,
     * and the walsender reports no more until the next record comes. */
    if (segment && at % segment == 40)
        at -= 40;
    else if (block && at % block == 24)
        at -= 24;
    *lsn = at;
    return 0;
}

int ct_pg_wait_applied(ct_db *src, ct_db *dst, const char *subscription, uint64_t lsn,
                       int timeout_ms, sl_err *err)
{
    if (need_pg(src, "waiting for replication", err) ||
        (dst && need_pg(dst, "waiting for replication", err)))
        return -1;
    char oid[32];
    if (dst && subscription_oid(dst, subscription, oid, sizeof oid, err))
        return -1;
    int64_t deadline = sl_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        uint64_t current, applied;
        int has_slot;
        if (slot_progress(src, subscription, &current, &applied, &has_slot, err))
            return -1;
        if (!has_slot)
            return sl_err_setc(err, SL_NOT_FOUND, "replication slot %s not found on %s",
                               subscription, src->name);
        if (applied >= lsn)
            return 0;
        if (sl_now_ms() >= deadline)
            return 1;
        sleep_ms(10);
    }
}

/* ---- ending the sessions a router cut ---------------------------------------- */

int ct_pg_end_sessions(ct_db *d, int timeout_ms, size_t *ended, sl_err *err)
{
    if (ended)
        *ended = 0;
    if (need_pg(d, "ending sessions", err))
        return -1;
    /* client backends of this database in a statement or a transaction,
     * but this session and sluice's own (workers, the control plane) */
    static const char *const who =
        "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND backend_type = 'client backend' AND state IS DISTINCT FROM 'idle' "
        "AND application_name NOT IN ('sluice', 'sluice-control')";
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) %s", who);
    PGresult *r = pg_run(d, sql, 0, NULL, PGRES_TUPLES_OK, "ending the sessions left", err);
    if (!r)
        return -1;
    if (ended)
        *ended = (size_t)strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    snprintf(sql, sizeof sql, "SELECT count(*) %s", who);
    int64_t deadline = sl_now_ms() + timeout_ms;
    for (;;) {
        if (!(r = pg_run(d, sql, 0, NULL, PGRES_TUPLES_OK, "ending the sessions left", err)))
            return -1;
        long left = strtol(PQgetvalue(r, 0, 0), NULL, 10);
        PQclear(r);
        if (left == 0)
            return 0;
        if (sl_now_ms() >= deadline)
            return sl_err_setc(err, SL_BUSY,
                               "%ld sessions on %s still in a statement or a transaction %d ms "
                               "after they were told to end",
                               left, d->name, timeout_ms);
        sleep_ms(10);
    }
}

/* ---- sequences --------------------------------------------------------------- */

/* What sync does to one sequence, decided before anything is set. */
typedef struct seq_plan {
    const char *name; /* format('%I.%I'), in the source's result */
    int64_t value;
    int set; /* 0: never used on the source, or the target already past */
} seq_plan;

/* Decides the plan of the source sequence name (last_value, increment) on
 * dst: 0, or -1 with err set. */
static int plan_sequence(ct_db *dst, const char *name, int64_t last, int64_t inc, int64_t margin,
                         seq_plan *plan, sl_err *err)
{
    const char *p[1] = {name};
    PGresult *r =
        pg_run(dst, "SELECT c.relkind = 'S' FROM pg_class c WHERE c.oid = to_regclass($1)", 1, p,
               PGRES_TUPLES_OK, "looking up a sequence", err);
    if (!r)
        return -1;
    int found = PQntuples(r) == 1 && PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    if (!found)
        return sl_err_setc(err, SL_NOT_FOUND, "sequence %s not found on %s", name, dst->name);
    /* name is the server's own quote_ident rendering, checked above to
     * name a sequence: safe to paste as the relation read */
    sl_buf sql = {0};
    if (sl_buf_printf(&sql,
                      "SELECT t.last_value, t.is_called, s.seqmin, s.seqmax FROM %s t, "
                      "pg_sequence s WHERE s.seqrelid = $1::regclass",
                      name) ||
        sl_buf_putc(&sql, 0)) {
        sl_buf_free(&sql);
        return sl_err_set(err, "out of memory");
    }
    r = pg_run(dst, (const char *)sql.p, 1, p, PGRES_TUPLES_OK, "reading a sequence", err);
    sl_buf_free(&sql);
    if (!r)
        return -1;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return sl_err_setc(err, SL_NOT_FOUND, "sequence %s not found on %s", name, dst->name);
    }
    int64_t tlast = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    int called = PQgetvalue(r, 0, 1)[0] == 't';
    int64_t tmin = strtoll(PQgetvalue(r, 0, 2), NULL, 10);
    int64_t tmax = strtoll(PQgetvalue(r, 0, 3), NULL, 10);
    PQclear(r);
    int64_t step, v;
    if (__builtin_mul_overflow(margin, inc, &step) || __builtin_add_overflow(last, step, &v) ||
        v < tmin || v > tmax)
        return sl_err_setc(err, SL_INVALID,
                           "sequence %s: %" PRId64 " on the source plus %" PRId64
                           " steps of %" PRId64 " is outside [%" PRId64 ", %" PRId64 "] on %s",
                           name, last, margin, inc, tmin, tmax, dst->name);
    /* the target is past v when it has handed out v or beyond (called),
     * or will hand out something beyond v next (not called) */
    int past = inc > 0 ? (called ? tlast >= v : tlast > v) : (called ? tlast <= v : tlast < v);
    plan->name = name;
    plan->value = v;
    plan->set = !past;
    return 0;
}

/* tables as a text[] literal of their quoted regclass forms: {"a","b"}
 * with " and \ escaped, the array syntax's own quoting. */
static char *regclass_array(ct_db *d, const char *const *tables, size_t n, sl_err *err)
{
    sl_buf b = {0};
    int bad = sl_buf_append(&b, "{", 1);
    for (size_t i = 0; i < n && !bad; i++) {
        char *rc = pg_regclass_text(d, tables[i], err);
        if (!rc) {
            sl_buf_free(&b);
            return NULL;
        }
        bad |= sl_buf_append(&b, i ? ",\"" : "\"", i ? 2 : 1);
        for (const char *p = rc; *p && !bad; p++) {
            if (*p == '"' || *p == '\\')
                bad |= sl_buf_append(&b, "\\", 1);
            bad |= sl_buf_append(&b, p, 1);
        }
        bad |= sl_buf_append(&b, "\"", 1);
        free(rc);
    }
    bad |= sl_buf_append(&b, "}", 2); /* and the NUL */
    if (bad) {
        sl_buf_free(&b);
        return sl_err_set(err, "out of memory"), NULL;
    }
    return (char *)b.p;
}

int ct_pg_sync_sequences(ct_db *src, ct_db *dst, const char *const *tables, size_t ntables,
                         int64_t margin, size_t *synced, sl_err *err)
{
    if (synced)
        *synced = 0;
    if (need_pg(src, "syncing sequences", err) || need_pg(dst, "syncing sequences", err))
        return -1;
    if (margin < 0)
        return sl_err_setc(err, SL_INVALID, "sequence margin %" PRId64 " is negative", margin);
    PGresult *r;
    if (!tables)
        r = pg_run(src,
                   "SELECT format('%I.%I', schemaname, sequencename), last_value::text, "
                   "increment_by::text, has_sequence_privilege("
                   "format('%I.%I', schemaname, sequencename), 'SELECT,USAGE') "
                   "FROM pg_sequences ORDER BY schemaname, sequencename",
                   0, NULL, PGRES_TUPLES_OK, "reading sequences", err);
    else {
        /* the tables' own: owned by one of their columns (serial,
         * identity) or named in one of their defaults (nextval) */
        char *arr = regclass_array(src, tables, ntables, err);
        if (!arr)
            return -1;
        const char *p[1] = {arr};
        r = pg_run(src,
                   "WITH t AS (SELECT to_regclass(x) AS oid FROM unnest($1::text[]) x), "
                   "seqs AS (SELECT d.objid AS oid FROM pg_depend d JOIN t ON d.refobjid = t.oid "
                   "  WHERE d.classid = 'pg_class'::regclass AND d.refclassid = "
                   "'pg_class'::regclass AND d.deptype IN ('a', 'i') "
                   "UNION SELECT d.refobjid FROM pg_attrdef ad JOIN t ON ad.adrelid = t.oid "
                   "  JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid "
                   "  AND d.refclassid = 'pg_class'::regclass) "
                   "SELECT format('%I.%I', s.schemaname, s.sequencename), s.last_value::text, "
                   "s.increment_by::text, has_sequence_privilege("
                   "format('%I.%I', s.schemaname, s.sequencename), 'SELECT,USAGE') "
                   "FROM pg_sequences s JOIN pg_namespace n ON n.nspname = s.schemaname "
                   "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.sequencename "
                   "WHERE c.oid IN (SELECT oid FROM seqs) ORDER BY s.schemaname, s.sequencename",
                   1, p, PGRES_TUPLES_OK, "reading the tables' sequences", err);
        free(arr);
    }
    if (!r)
        return -1;
    int n = PQntuples(r), rc = -1;
    seq_plan *plan = calloc(n ? (size_t)n : 1, sizeof *plan);
    if (!plan) {
        sl_err_set(err, "out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        const char *name = PQgetvalue(r, i, 0);
        if (PQgetvalue(r, i, 3)[0] != 't') {
            sl_err_setc(err, SL_AUTH, "sequence %s on %s cannot be read (no SELECT or USAGE)", name,
                        src->name);
            goto done;
        }
        if (PQgetisnull(r, i, 1)) { /* never used: no row holds a value of it */
            plan[i].name = name;
            continue;
        }
        if (plan_sequence(dst, name, strtoll(PQgetvalue(r, i, 1), NULL, 10),
                          strtoll(PQgetvalue(r, i, 2), NULL, 10), margin, &plan[i], err))
            goto done;
    }
    for (int i = 0; i < n; i++) {
        if (!plan[i].set)
            continue;
        char v[24];
        snprintf(v, sizeof v, "%" PRId64, plan[i].value);
        const char *p[2] = {plan[i].name, v};
        PGresult *s = pg_run(dst, "SELECT setval($1::regclass, $2::bigint, true)", 2, p,
                             PGRES_TUPLES_OK, "setting a sequence", err);
        if (!s)
            goto done;
        PQclear(s);
        if (synced)
            (*synced)++;
    }
    rc = 0;
done:
    free(plan);
    PQclear(r);
    return rc;
}

/* ---- lag clock --------------------------------------------------------------- */

/* Invariant: the n samples end at head - 1 (mod 64), oldest first, and
 * hold distinct LSNs: a repeat of the newest LSN is not recorded, so each
 * sample keeps the first time the source was seen at its LSN. */
void ct_lag_record(ct_lag_clock *c, int64_t wall_ms, uint64_t source_lsn)
{
    /* samples in order, oldest first (head unused) */
    size_t cap = sizeof c->lsn / sizeof c->lsn[0];
    if (c->n && c->lsn[c->n - 1] == source_lsn)
        return; /* keeps the first time the source was seen at this LSN */
    if (c->n == cap) {
        /* full: drop the sample whose neighbours are closest in time,
         * never the oldest or the newest. A subscriber stuck behind the
         * oldest shows a lag that keeps growing, and the samples thin out
         * where they are old, so an old lag is read coarsely but never
         * as less than it is */
        size_t drop = 1;
        for (size_t k = 2; k + 1 < cap; k++)
            if (c->at_ms[k + 1] - c->at_ms[k - 1] < c->at_ms[drop + 1] - c->at_ms[drop - 1])
                drop = k;
        memmove(c->at_ms + drop, c->at_ms + drop + 1, (cap - drop - 1) * sizeof c->at_ms[0]);
        memmove(c->lsn + drop, c->lsn + drop + 1, (cap - drop - 1) * sizeof c->lsn[0]);
        c->n--;
    }
    c->at_ms[c->n] = wall_ms;
    c->lsn[c->n] = source_lsn;
    c->n++;
}

double ct_lag_seconds(const ct_lag_clock *c, int64_t now_ms, uint64_t confirmed_lsn)
{
    if (!c->n || confirmed_lsn >= c->lsn[c->n - 1])
        return 0;
    /* the newest sample the subscriber has confirmed; none: the oldest
     * (the lag is at least its age) */
    int64_t at = c->at_ms[0];
    for (size_t k = c->n; k-- > 0;)
        if (c->lsn[k] <= confirmed_lsn) {
            at = c->at_ms[k];
            break;
        }
    double s = (double)(now_ms - at) / 1000.0;
    return s > 0 ? s : 0;
}

/* ---- heartbeat ----------------------------------------------------------------- */

/* public.<table> quoted, malloc'd; NULL with err. */
static char *hb_table(ct_db *d, const char *table, sl_err *err)
{
    if (!d->pg)
        return sl_err_setc(err, SL_INVALID, "a heartbeat needs PostgreSQL"), NULL;
    char *id = pg_ident(d, table, err);
    if (!id)
        return NULL;
    size_t n = strlen(id) + 8;
    char *q = malloc(n);
    if (q)
        snprintf(q, n, "public.%s", id);
    else
        sl_err_setc(err, SL_INTERNAL, "out of memory");
    PQfreemem(id);
    return q;
}

static int hb_exec(ct_db *d, const char *table, const char *fmt, int np, const char *const *params,
                   ExecStatusType want, const char *what, PGresult **out, sl_err *err)
{
    char *t = hb_table(d, table, err);
    if (!t)
        return -1;
    char sql[600];
    snprintf(sql, sizeof sql, fmt, t, t);
    free(t);
    PGresult *r = pg_run(d, sql, np, params, want, what, err);
    if (!r)
        return -1;
    if (out)
        *out = r;
    else
        PQclear(r);
    return 0;
}

int ct_pg_heartbeat_setup(ct_db *d, const char *table, int publisher, sl_err *err)
{
    if (hb_exec(d, table,
                "CREATE TABLE IF NOT EXISTS %s (id int PRIMARY KEY, at_ms bigint NOT NULL)%.0s", 0,
                NULL, PGRES_COMMAND_OK, "creating the heartbeat table", NULL, err) != 0)
        return -1;
    /* the publisher has the row; the subscriber's table starts empty, as
     * the initial copy brings the row (a row there would stop the copy) */
    return publisher
               ? hb_exec(d, table, "INSERT INTO %s VALUES (1, 0) ON CONFLICT (id) DO NOTHING%.0s",
                         0, NULL, PGRES_COMMAND_OK, "creating the heartbeat row", NULL, err)
               : hb_exec(d, table, "DELETE FROM %s%.0s", 0, NULL, PGRES_COMMAND_OK,
                         "emptying the heartbeat table", NULL, err);
}

int ct_pg_heartbeat_beat(ct_db *d, const char *table, int64_t now_ms, sl_err *err)
{
    char v[32];
    snprintf(v, sizeof v, "%lld", (long long)now_ms);
    const char *p[] = {v};
    /* never backwards: a waiter's mark is not undone by an older beat
     * committing after it (the runner beats unlocked) */
    return hb_exec(d, table, "UPDATE %s SET at_ms = GREATEST(at_ms, $1) WHERE id = 1%.0s", 1, p,
                   PGRES_COMMAND_OK, "writing the heartbeat", NULL, err);
}

int ct_pg_heartbeat_read(ct_db *d, const char *table, int64_t *at_ms, sl_err *err)
{
    PGresult *r = NULL;
    if (hb_exec(d, table, "SELECT at_ms FROM %s WHERE id = 1%.0s", 0, NULL, PGRES_TUPLES_OK,
                "reading the heartbeat", &r, err) != 0)
        return -1;
    *at_ms = PQntuples(r) == 1 ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : 0;
    PQclear(r);
    return 0;
}

int ct_pg_heartbeat_drop(ct_db *d, const char *table, sl_err *err)
{
    return hb_exec(d, table, "DROP TABLE IF EXISTS %s%.0s", 0, NULL, PGRES_COMMAND_OK,
                   "dropping the heartbeat table", NULL, err);
}
