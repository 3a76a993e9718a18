/* The control database, on SQLite or PostgreSQL. Every statement is written
 * once, in the SQL both understand ($n parameters, ON CONFLICT, RETURNING);
 * only the table definitions and the driver calls differ. */
#include "store.h"

#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../base/dsn.h"

/* A value going into or coming out of a statement. */
typedef struct sval {
    enum { V_NULL, V_INT, V_REAL, V_TEXT, V_BLOB } t;
    int64_t i;
    double d;
    const void *p;
    size_t n;
} sval;

#define I(x) ((sval){.t = V_INT, .i = (int64_t)(x)})
#define R(x) ((sval){.t = V_REAL, .d = (x)})
#define T(x) ((x) ? (sval){.t = V_TEXT, .p = (x), .n = strlen(x)} : (sval){.t = V_NULL})
#define B(x, len) ((sval){.t = V_BLOB, .p = (x), .n = (len)})

typedef int (*row_fn)(void *ctx, const sval *cols, int n);

struct co_store;
static int pg_fail(struct co_store *s, const PGresult *res, sl_err *err);

struct co_store {
    sqlite3 *lite;
    PGconn *pg;
};

/* Schema versions, oldest first: migrations[v - 1] takes a database from
 * version v - 1 to v (0: empty). Append only: a released step is never
 * edited, since databases out there went through it. Step 1 is the schema
 * of the sluice before versions, which created its tables one statement at
 * a time with IF NOT EXISTS: a database without sluice_schema goes through
 * step 1 again (a no-op on a whole version 1, the missing tables of a half
 * created one). */
typedef struct migration {
    const char *sqlite, *pg;
} migration;

static const migration migrations[] = {
    {"CREATE TABLE IF NOT EXISTS jobs ("
     "  id INTEGER PRIMARY KEY, spec BLOB NOT NULL, tbl TEXT NOT NULL,"
     "  state TEXT NOT NULL DEFAULT 'queued', error TEXT,"
     "  submitted REAL NOT NULL, started REAL, finished REAL,"
     "  source_name TEXT, target_name TEXT, source_rows INTEGER DEFAULT 0,"
     "  target_rows INTEGER DEFAULT 0, ranges INTEGER DEFAULT 0, workers INTEGER DEFAULT 0,"
     "  missing INTEGER DEFAULT 0, extra INTEGER DEFAULT 0, changed INTEGER DEFAULT 0,"
     "  schema_drift INTEGER DEFAULT 0, transient INTEGER DEFAULT 0, elapsed REAL DEFAULT 0);"
     "CREATE TABLE IF NOT EXISTS ranges ("
     "  job INTEGER NOT NULL, idx INTEGER NOT NULL, hi BLOB, done INTEGER NOT NULL DEFAULT 0,"
     "  source_rows INTEGER, target_rows INTEGER, finished REAL, PRIMARY KEY (job, idx));"
     /* (job, kind, k) is unique: a range redone after a restart or a lost
      * worker reports its divergences again, and they are kept once */
     "CREATE TABLE IF NOT EXISTS events ("
     "  id INTEGER PRIMARY KEY, job INTEGER NOT NULL, kind TEXT NOT NULL, k BLOB NOT NULL,"
     "  frame BLOB NOT NULL, at REAL NOT NULL, UNIQUE (job, kind, k));"
     "CREATE INDEX IF NOT EXISTS events_job ON events (job, id);"
     "CREATE TABLE IF NOT EXISTS drift ("
     "  tbl TEXT NOT NULL, job INTEGER NOT NULL, at REAL NOT NULL, source_rows INTEGER,"
     "  target_rows INTEGER, missing INTEGER, extra INTEGER, changed INTEGER,"
     "  schema_drift INTEGER);",
     "CREATE TABLE IF NOT EXISTS jobs ("
     "  id bigserial PRIMARY KEY, spec bytea NOT NULL, tbl text NOT NULL,"
     "  state text NOT NULL DEFAULT 'queued', error text,"
     "  submitted float8 NOT NULL, started float8, finished float8,"
     "  source_name text, target_name text, source_rows bigint DEFAULT 0,"
     "  target_rows bigint DEFAULT 0, ranges bigint DEFAULT 0, workers bigint DEFAULT 0,"
     "  missing bigint DEFAULT 0, extra bigint DEFAULT 0, changed bigint DEFAULT 0,"
     "  schema_drift bigint DEFAULT 0, transient bigint DEFAULT 0, elapsed float8 DEFAULT 0);"
     "CREATE TABLE IF NOT EXISTS ranges ("
     "  job bigint NOT NULL, idx bigint NOT NULL, hi bytea, done int NOT NULL DEFAULT 0,"
     "  source_rows bigint, target_rows bigint, finished float8, PRIMARY KEY (job, idx));"
     "CREATE TABLE IF NOT EXISTS events ("
     "  id bigserial PRIMARY KEY, job bigint NOT NULL, kind text NOT NULL, k bytea NOT NULL,"
     "  frame bytea NOT NULL, at float8 NOT NULL, UNIQUE (job, kind, k));"
     "CREATE INDEX IF NOT EXISTS events_job ON events (job, id);"
     "CREATE TABLE IF NOT EXISTS drift ("
     "  tbl text NOT NULL, job bigint NOT NULL, at float8 NOT NULL, source_rows bigint,"
     "  target_rows bigint, missing bigint, extra bigint, changed bigint, schema_drift bigint);"},
    /* 2: scheduled audits kept here (origin 'file': from --schedule,
     * replaced at each start; 'client': added over the socket), and a
     * job's priority (low, normal, high) and the code of its error
     * (sl_code_name) */
    {"CREATE TABLE schedules ("
     "  name TEXT PRIMARY KEY, interval_s INTEGER NOT NULL, spec BLOB NOT NULL,"
     "  last_job INTEGER, origin TEXT NOT NULL DEFAULT 'client', created REAL NOT NULL);"
     "ALTER TABLE jobs ADD COLUMN priority TEXT NOT NULL DEFAULT 'normal';"
     "ALTER TABLE jobs ADD COLUMN error_code TEXT;",
     "CREATE TABLE schedules ("
     "  name text PRIMARY KEY, interval_s bigint NOT NULL, spec bytea NOT NULL,"
     "  last_job bigint, origin text NOT NULL DEFAULT 'client', created float8 NOT NULL);"
     "ALTER TABLE jobs ADD COLUMN priority text NOT NULL DEFAULT 'normal';"
     "ALTER TABLE jobs ADD COLUMN error_code text;"},
    /* 3: drift history for every kind of evidence (audit, scrub cycle,
     * change-verification window): rows checked, transient differences
     * and the detection latency's percentiles (seconds; NULL: no
     * divergence to time), and jobs.kind (audit or scrub) */
    {"ALTER TABLE drift ADD COLUMN kind TEXT NOT NULL DEFAULT 'audit';"
     "ALTER TABLE drift ADD COLUMN rows_checked INTEGER;"
     "ALTER TABLE drift ADD COLUMN transient INTEGER;"
     "ALTER TABLE drift ADD COLUMN window_s REAL;"
     "ALTER TABLE drift ADD COLUMN latency_p50 REAL;"
     "ALTER TABLE drift ADD COLUMN latency_p99 REAL;"
     "ALTER TABLE drift ADD COLUMN latency_max REAL;"
     "CREATE INDEX drift_tbl ON drift (tbl, at);"
     "ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'audit';",
     "ALTER TABLE drift ADD COLUMN kind text NOT NULL DEFAULT 'audit';"
     "ALTER TABLE drift ADD COLUMN rows_checked bigint;"
     "ALTER TABLE drift ADD COLUMN transient bigint;"
     "ALTER TABLE drift ADD COLUMN window_s float8;"
     "ALTER TABLE drift ADD COLUMN latency_p50 float8;"
     "ALTER TABLE drift ADD COLUMN latency_p99 float8;"
     "ALTER TABLE drift ADD COLUMN latency_max float8;"
     "CREATE INDEX drift_tbl ON drift (tbl, at);"
     "ALTER TABLE jobs ADD COLUMN kind text NOT NULL DEFAULT 'audit';"},
};

#define SCHEMA_LATEST ((int64_t)(sizeof migrations / sizeof migrations[0]))

/* Wall-clock seconds, as the tables store times. */
static double wall(void)
{
    return (double)sl_wall_ms() / 1000.0;
}

/* ---- the two drivers ------------------------------------------------------ */

/* Runs sql with parameters ps[0..np) on SQLite, calling fn per result row
 * (non-zero stops): 0, or -1 with err. */
static int q_sqlite(co_store *s, const char *sql, const sval *ps, int np, row_fn fn, void *ctx,
                    sl_err *err)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->lite, sql, -1, &st, NULL) != SQLITE_OK)
        return sl_err_set(err, "control database: %s", sqlite3_errmsg(s->lite));
    for (int k = 0; k < np; k++) {
        char name[16];
        snprintf(name, sizeof name, "$%d", k + 1);
        int idx = sqlite3_bind_parameter_index(st, name);
        if (!idx)
            continue;
        const sval *v = &ps[k];
        switch (v->t) {
        case V_INT:
            sqlite3_bind_int64(st, idx, v->i);
            break;
        case V_REAL:
            sqlite3_bind_double(st, idx, v->d);
            break;
        case V_TEXT:
            sqlite3_bind_text(st, idx, v->p, (int)v->n, SQLITE_TRANSIENT);
            break;
        case V_BLOB:
            sqlite3_bind_blob(st, idx, v->p, (int)v->n, SQLITE_TRANSIENT);
            break;
        default:
            sqlite3_bind_null(st, idx);
            break;
        }
    }
    int r, rc = 0;
    sval cols[32];
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        int n = sqlite3_column_count(st);
        n = n > 32 ? 32 : n;
        for (int c = 0; c < n; c++) {
            switch (sqlite3_column_type(st, c)) {
            case SQLITE_INTEGER:
                cols[c] = I(sqlite3_column_int64(st, c));
                break;
            case SQLITE_FLOAT:
                cols[c] = R(sqlite3_column_double(st, c));
                break;
            case SQLITE_NULL:
                cols[c] = (sval){.t = V_NULL};
                break;
            default:
                cols[c] = (sval){.t = sqlite3_column_type(st, c) == SQLITE_BLOB ? V_BLOB : V_TEXT,
                                 .p = sqlite3_column_blob(st, c),
                                 .n = (size_t)sqlite3_column_bytes(st, c)};
            }
        }
        if (fn && fn(ctx, cols, n)) {
            rc = -1;
            break;
        }
    }
    if (rc == 0 && r != SQLITE_DONE)
        rc = sl_err_set(err, "control database: %s", sqlite3_errmsg(s->lite));
    sqlite3_finalize(st);
    return rc;
}

/* The same on PostgreSQL. */
static int q_pg(co_store *s, const char *sql, const sval *ps, int np, row_fn fn, void *ctx,
                sl_err *err)
{
    const char *vals[32];
    int lens[32], fmts[32];
    char nums[32][32];
    for (int k = 0; k < np && k < 32; k++) {
        const sval *v = &ps[k];
        fmts[k] = v->t == V_BLOB;
        lens[k] = (int)v->n;
        vals[k] = v->p;
        if (v->t == V_INT)
            snprintf(nums[k], sizeof nums[k], "%lld", (long long)v->i), vals[k] = nums[k];
        else if (v->t == V_REAL)
            snprintf(nums[k], sizeof nums[k], "%.17g", v->d), vals[k] = nums[k];
        else if (v->t == V_NULL)
            vals[k] = NULL;
    }
    /* text parameters must be NUL-terminated: all ours are C strings */
    PGresult *res = PQexecParams(s->pg, sql, np, NULL, vals, lens, fmts, 0);
    ExecStatusType st = PQresultStatus(res);
    int rc = 0;
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
        rc = pg_fail(s, res, err);
    int nr = rc ? 0 : PQntuples(res), nc = PQnfields(res) > 32 ? 32 : PQnfields(res);
    for (int r = 0; r < nr && rc == 0; r++) {
        sval cols[32];
        unsigned char *freeme[32];
        int nf = 0;
        for (int c = 0; c < nc; c++) {
            const char *txt = PQgetvalue(res, r, c);
            if (PQgetisnull(res, r, c)) {
                cols[c] = (sval){.t = V_NULL};
            } else if (PQftype(res, c) == 17) { /* bytea */
                size_t n;
                unsigned char *b = PQunescapeBytea((const unsigned char *)txt, &n);
                freeme[nf++] = b;
                cols[c] = B(b, n);
            } else if (PQftype(res, c) == 20 || PQftype(res, c) == 23 || PQftype(res, c) == 21) {
                cols[c] = I(strtoll(txt, NULL, 10));
            } else if (PQftype(res, c) == 701 || PQftype(res, c) == 1700) {
                cols[c] = R(strtod(txt, NULL));
            } else {
                cols[c] = T(txt);
            }
        }
        if (fn && fn(ctx, cols, nc))
            rc = -1;
        for (int k = 0; k < nf; k++)
            PQfreemem(freeme[k]);
    }
    PQclear(res);
    return rc;
}

/* The first line of libpq's error, never with the password in it. */
static int pg_fail(co_store *s, const PGresult *res, sl_err *err)
{
    char line[300];
    const char *m =
        res && PQresultErrorMessage(res)[0] ? PQresultErrorMessage(res) : PQerrorMessage(s->pg);
    dsn_error_line(line, sizeof line, m, PQpass(s->pg));
    return sl_err_set(err, "control database: %s", line);
}

/* libpq notice processor that drops notices (they would go to stderr). */
static void drop_notice(void *arg, const char *message)
{
    (void)arg, (void)message;
}

/* Runs sql on whichever database the store is (q_sqlite, q_pg). */
static int q(co_store *s, const char *sql, const sval *ps, int np, row_fn fn, void *ctx,
             sl_err *err)
{
    return s->pg ? q_pg(s, sql, ps, np, fn, ctx, err) : q_sqlite(s, sql, ps, np, fn, ctx, err);
}

/* Runs statements without parameters (the schema): 0, or -1 with err. */
static int exec_script(co_store *s, const char *sql, sl_err *err)
{
    if (s->pg) {
        PGresult *r = PQexec(s->pg, sql);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
        if (!ok)
            pg_fail(s, r, err);
        PQclear(r);
        return ok ? 0 : -1;
    }
    char *msg = NULL;
    if (sqlite3_exec(s->lite, sql, NULL, NULL, &msg) != SQLITE_OK) {
        sl_err_set(err, "control database: %s", msg ? msg : sqlite3_errmsg(s->lite));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* Row helpers: take an integer, a real, a text into a buffer. */
static int64_t vi(const sval *v)
{
    return v->t == V_INT ? v->i : v->t == V_REAL ? (int64_t)v->d : 0;
}
static double vd(const sval *v)
{
    return v->t == V_REAL ? v->d : v->t == V_INT ? (double)v->i : 0;
}
static void vs(const sval *v, char *out, size_t cap)
{
    snprintf(out, cap, "%.*s", v->t == V_TEXT ? (int)v->n : 0,
             v->t == V_TEXT ? (const char *)v->p : "");
}

/* Row callback: column 0 as an integer into *(int64_t *)ctx. */
static int take_int(void *ctx, const sval *c, int n)
{
    (void)n;
    *(int64_t *)ctx = vi(&c[0]);
    return 0;
}

/* ---- schema versions -------------------------------------------------------- */

typedef struct version_ctx {
    int64_t v;
    int found;
} version_ctx;

/* Row callback: the schema version, if the row holds one. */
static int take_version(void *ctx, const sval *c, int n)
{
    version_ctx *x = ctx;
    (void)n;
    x->found = c[0].t != V_NULL;
    x->v = vi(&c[0]);
    return 0;
}

/* Whether table name exists, into *has: 0, or -1 with err. */
static int has_table(co_store *s, const char *name, int *has, sl_err *err)
{
    int64_t n = 0;
    sval p[] = {T(name)};
    int rc = q(s,
               s->pg ? "SELECT count(*) FROM (SELECT 1) x "
                       "WHERE to_regclass(CAST($1 AS text)) IS NOT NULL"
                     : "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = $1",
               p, 1, take_int, &n, err);
    *has = n > 0;
    return rc;
}

/* Brings the schema to SCHEMA_LATEST in one transaction (a failed step
 * leaves the database as it was), or refuses a newer one. name is the
 * database as users may see it (a DSN with its password redacted). The
 * transaction is taken before the version is read, so two coordinators
 * starting on one database migrate it once. */
static int migrate(co_store *s, const char *name, sl_err *err)
{
    if (exec_script(
            s, s->pg ? "BEGIN; SELECT pg_advisory_xact_lock(7402339817350751)" : "BEGIN IMMEDIATE",
            err))
        return sl_err_wrap(err, "cannot open control database %s", name);
    int has_schema = 0, has_jobs = 0;
    version_ctx ver = {0, 0};
    int64_t from = 0, shown = 0;
    if (has_table(s, "sluice_schema", &has_schema, err) ||
        (has_schema &&
         q(s, "SELECT max(version) FROM sluice_schema", NULL, 0, take_version, &ver, err)) ||
        (!has_schema && has_table(s, "jobs", &has_jobs, err))) {
        sl_err_wrap(err, "cannot read the schema version of control database %s", name);
        goto fail;
    }
    if (has_schema && !ver.found) {
        sl_err_set(err,
                   "control database %s has an empty sluice_schema table; restore it from a "
                   "backup or put its version back",
                   name);
        goto fail;
    }
    from = has_schema ? ver.v : 0;
    shown = has_schema ? ver.v : has_jobs; /* no version table: 1 with v1's tables */
    if (from > SCHEMA_LATEST) {
        sl_err_set(err,
                   "control database %s has schema version %lld; this sluice supports up to "
                   "%lld: upgrade sluice",
                   name, (long long)from, (long long)SCHEMA_LATEST);
        goto fail;
    }
    if (from < 0) {
        sl_err_set(err, "control database %s has schema version %lld, which no sluice wrote", name,
                   (long long)from);
        goto fail;
    }
    if (from == SCHEMA_LATEST)
        return exec_script(s, "COMMIT", err) ? sl_err_wrap(err, "control database %s", name) : 0;
    for (int64_t v = from; v < SCHEMA_LATEST; v++) {
        if (exec_script(s, s->pg ? migrations[v].pg : migrations[v].sqlite, err)) {
            sl_err_wrap(err, "cannot upgrade control database %s from schema version %lld to %lld",
                        name, (long long)shown, (long long)SCHEMA_LATEST);
            goto fail;
        }
    }
    sval p[] = {I(SCHEMA_LATEST)};
    if (exec_script(s,
                    "CREATE TABLE IF NOT EXISTS sluice_schema (version integer NOT NULL);"
                    "DELETE FROM sluice_schema",
                    err) ||
        q(s, "INSERT INTO sluice_schema (version) VALUES ($1)", p, 1, NULL, NULL, err) ||
        exec_script(s, "COMMIT", err)) {
        sl_err_wrap(err, "cannot upgrade control database %s from schema version %lld to %lld",
                    name, (long long)shown, (long long)SCHEMA_LATEST);
        goto fail;
    }
    return 0;
fail:
    exec_script(s, "ROLLBACK", NULL);
    return -1;
}

int co_store_schema_latest(void)
{
    return (int)SCHEMA_LATEST;
}

/* ---- open ----------------------------------------------------------------- */

co_store *co_store_open(const char *where, sl_err *err)
{
    co_store *s = calloc(1, sizeof *s);
    if (!s)
        return sl_err_set(err, "out of memory"), NULL;
    if (strncmp(where, "postgresql:", 11) == 0 || strncmp(where, "postgres:", 9) == 0) {
        /* libpq's parse errors quote the DSN, and its connect errors may
         * show what a mistyped DSN put where: our own words, or scrubbed */
        char *perr = NULL;
        PQconninfoOption *opts = NULL;
        int bad = dsn_check_uri(where, "--state is not a valid PostgreSQL URI", err);
        if (!bad && !(opts = PQconninfoParse(where, &perr)))
            bad = sl_err_set(err, "--state is not a valid PostgreSQL connection string or URI: %s",
                             perr ? dsn_parse_hint(perr) : "out of memory");
        if (bad) {
            PQfreemem(perr);
            free(s);
            return NULL;
        }
        PQconninfoFree(opts);
        s->pg = PQconnectdb(where);
        if (!s->pg || PQstatus(s->pg) != CONNECTION_OK) {
            char line[400];
            const char *m = s->pg ? PQerrorMessage(s->pg) : "out of memory";
            snprintf(line, sizeof line, "cannot open the PostgreSQL control database: %.*s",
                     (int)strcspn(m, "\n"), m);
            if (s->pg)
                dsn_scrub_secret(line, sizeof line, PQpass(s->pg));
            dsn_scrub(line, sizeof line, where);
            sl_err_set(err, "%s", line);
            co_store_close(s);
            return NULL;
        }
        PQsetNoticeProcessor(s->pg, drop_notice, NULL);
        char name[400];
        dsn_redact(where, name, sizeof name);
        if (exec_script(s, "SET client_min_messages = warning", err) || migrate(s, name, err)) {
            /* the password may come from elsewhere than the DSN (PGPASSWORD) */
            if (err)
                dsn_scrub_secret(err->msg, sizeof err->msg, PQpass(s->pg));
            co_store_close(s);
            return NULL;
        }
        return s;
    }
    const char *path = strncmp(where, "sqlite:", 7) == 0 ? where + 7 : where;
    if (sqlite3_open_v2(path, &s->lite, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
            SQLITE_OK ||
        sqlite3_busy_timeout(s->lite, 5000) != SQLITE_OK) {
        sl_err_set(err, "cannot open control database \"%s\": %s", path,
                   s->lite ? sqlite3_errmsg(s->lite) : "out of memory");
        co_store_close(s);
        return NULL;
    }
    /* a bounded page cache: a long-running coordinator's memory must not
     * follow the size of its job history */
    if (exec_script(s,
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; "
                    "PRAGMA cache_size = -512",
                    err)) {
        sl_err_wrap(err, "cannot open control database \"%s\"", path);
        co_store_close(s);
        return NULL;
    }
    char name[400];
    snprintf(name, sizeof name, "%s", path);
    if (migrate(s, name, err)) {
        co_store_close(s);
        return NULL;
    }
    return s;
}

void co_store_close(co_store *s)
{
    if (!s)
        return;
    if (s->lite)
        sqlite3_close(s->lite);
    if (s->pg)
        PQfinish(s->pg);
    free(s);
}

/* ---- jobs ------------------------------------------------------------------- */

int co_store_add_job(co_store *s, const void *spec, size_t len, const char *table, int priority,
                     int64_t *id, sl_err *err)
{
    static const char *const names[] = {"low", "normal", "high"}; /* CO_PRIO_* */
    const char *prio =
        priority >= CO_PRIO_LOW && priority <= CO_PRIO_HIGH ? names[priority] : "normal";
    sval p[] = {B(spec, len), T(table), R(wall()), T(prio)};
    *id = 0;
    if (q(s,
          "INSERT INTO jobs (spec, tbl, submitted, priority) VALUES ($1, $2, $3, $4) "
          "RETURNING id",
          p, 4, take_int, id, err))
        return -1;
    return *id ? 0 : sl_err_set(err, "control database: the new job got no id");
}

typedef struct next_ctx {
    int64_t *id;
    sl_buf *spec;
    int *resuming, found, oom;
} next_ctx;

/* Row callback: the next job's id, spec and whether it was running. */
static int take_next(void *ctx, const sval *c, int n)
{
    next_ctx *x = ctx;
    (void)n;
    *x->id = vi(&c[0]);
    sl_buf_reset(x->spec);
    x->oom = sl_buf_append(x->spec, c[1].p, c[1].n);
    *x->resuming = c[2].t == V_TEXT && c[2].n == 7 && !memcmp(c[2].p, "running", 7);
    x->found = 1;
    return 0;
}

int co_store_next_job(co_store *s, int64_t *id, sl_buf *spec, int *resuming, sl_err *err)
{
    next_ctx x = {id, spec, resuming, 0, 0};
    if (q(s,
          "SELECT id, spec, state FROM jobs WHERE state IN ('running', 'queued') "
          "ORDER BY state = 'running' DESC, id LIMIT 1",
          NULL, 0, take_next, &x, err))
        return -1;
    if (x.oom)
        return sl_err_set(err, "out of memory");
    return x.found;
}

typedef struct pending_ctx {
    int64_t *ids;
    int *running;
    size_t max, n;
} pending_ctx;

/* Row callback: a pending job's id and whether it was running, up to x->max. */
static int take_pending(void *ctx, const sval *c, int n)
{
    pending_ctx *x = ctx;
    (void)n;
    if (x->n >= x->max)
        return 0;
    x->ids[x->n] = vi(&c[0]);
    if (x->running)
        x->running[x->n] = c[1].t == V_TEXT && c[1].n == 7 && !memcmp(c[1].p, "running", 7);
    x->n++;
    return 0;
}

int co_store_pending_jobs(co_store *s, int64_t *ids, int *running, size_t max, size_t *n,
                          sl_err *err)
{
    pending_ctx x = {ids, running, max, 0};
    sval p[] = {I((int64_t)max)};
    int rc = q(s,
               "SELECT id, state FROM jobs WHERE state IN ('running', 'queued') "
               "ORDER BY state = 'running' DESC, "
               "CASE priority WHEN 'high' THEN 0 WHEN 'normal' THEN 1 ELSE 2 END, id LIMIT $1",
               p, 1, take_pending, &x, err);
    *n = x.n;
    return rc;
}

int co_store_live_changes(co_store *s, int64_t *ids, size_t max, size_t *n, sl_err *err)
{
    pending_ctx x = {ids, NULL, max, 0};
    sval p[] = {I((int64_t)max)};
    int rc = q(s,
               "SELECT id, state FROM jobs WHERE kind = 'changes' AND "
               "state IN ('running', 'queued') ORDER BY id LIMIT $1",
               p, 1, take_pending, &x, err);
    *n = x.n;
    return rc;
}

int co_store_get_spec(co_store *s, int64_t id, sl_buf *spec, sl_err *err)
{
    int64_t got;
    int resuming;
    next_ctx x = {&got, spec, &resuming, 0, 0};
    sval p[] = {I(id)};
    if (q(s, "SELECT id, spec, state FROM jobs WHERE id = $1", p, 1, take_next, &x, err))
        return -1;
    if (x.oom)
        return sl_err_set(err, "out of memory");
    return x.found;
}

/* ---- drift history ----------------------------------------------------- */

/* Row callback: event times into a growing array of doubles. */
typedef struct times {
    double *v;
    size_t n, cap;
    int oom;
} times;

static int take_time(void *ctx, const sval *c, int n)
{
    times *t = ctx;
    (void)n;
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        double *v = realloc(t->v, cap * sizeof *v);
        if (!v)
            return t->oom = 1;
        t->v = v;
        t->cap = cap;
    }
    t->v[t->n++] = vd(&c[0]);
    return 0;
}

/* The value at quantile p of sorted v[0..n) (nearest rank). */
static double rank(const double *v, size_t n, double p)
{
    size_t k = (size_t)(p * (double)n + 0.999999);
    return v[k == 0 ? 0 : k > n ? n - 1 : k - 1];
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void co_drift_latencies(double *v, size_t n, co_drift_row *r)
{
    r->lat_p50 = r->lat_p99 = r->lat_max = -1;
    if (!n)
        return;
    qsort(v, n, sizeof *v, cmp_double);
    r->lat_p50 = rank(v, n, 0.5);
    r->lat_p99 = rank(v, n, 0.99);
    r->lat_max = v[n - 1];
}

static int take_job_drift(void *ctx, const sval *c, int n)
{
    co_drift_row *r = ctx;
    (void)n;
    vs(&c[0], r->table, sizeof r->table);
    r->source_rows = vi(&c[1]);
    r->target_rows = vi(&c[2]);
    r->missing = vi(&c[3]);
    r->extra = vi(&c[4]);
    r->changed = vi(&c[5]);
    r->schema = vi(&c[6]);
    r->transient = vi(&c[7]);
    r->window_s = vd(&c[8]);
    vs(&c[9], r->kind, sizeof r->kind);
    return 0;
}

int co_store_set_kind(co_store *s, int64_t id, const char *kind, sl_err *err)
{
    sval p[] = {I(id), T(kind)};
    return q(s, "UPDATE jobs SET kind = $2 WHERE id = $1", p, 2, NULL, NULL, err);
}

/* An audit's (or scrub cycle's) drift row: its counts, and how long after
 * the job started each confirmed divergence was recorded. */
static int job_drift(co_store *s, int64_t id, sl_err *err)
{
    co_drift_row r = {.job = id, .at = wall()};
    sval p[] = {I(id)};
    if (q(s,
          "SELECT tbl, source_rows, target_rows, missing, extra, changed, schema_drift, "
          "transient, elapsed, kind FROM jobs WHERE id = $1",
          p, 1, take_job_drift, &r, err))
        return -1;
    r.rows_checked = r.source_rows + r.extra; /* every key seen on either side, once */
    /* a changes job wrote a row per window as it ran (the coordinator's
     * window callback), its last one as it ended: none more */
    if (!strcmp(r.kind, "changes"))
        return 0;
    times t = {0};
    int rc = q(s,
               "SELECT e.at - j.started FROM events e JOIN jobs j ON j.id = e.job "
               "WHERE e.job = $1 AND e.kind IN ('missing', 'extra', 'changed')",
               p, 1, take_time, &t, err);
    if (t.oom) /* the walk stopped for want of memory, not a database error */
        rc = sl_err_set(err, "out of memory reading the job's event times");
    if (rc == 0) {
        co_drift_latencies(t.v, t.n, &r);
        rc = co_store_drift_add(s, &r, err);
    }
    free(t.v);
    return rc;
}

int co_store_drift_add(co_store *s, const co_drift_row *r, sl_err *err)
{
    static const sval n = {.t = V_NULL};
    sval p[] = {T(r->table),
                I(r->job),
                R(r->at),
                I(r->source_rows),
                I(r->target_rows),
                I(r->missing),
                I(r->extra),
                I(r->changed),
                I(r->schema),
                T(r->kind),
                I(r->rows_checked),
                I(r->transient),
                R(r->window_s),
                r->lat_p50 >= 0 ? R(r->lat_p50) : n,
                r->lat_p99 >= 0 ? R(r->lat_p99) : n,
                r->lat_max >= 0 ? R(r->lat_max) : n};
    return q(s,
             "INSERT INTO drift (tbl, job, at, source_rows, target_rows, missing, extra, changed, "
             "schema_drift, kind, rows_checked, transient, window_s, latency_p50, latency_p99, "
             "latency_max) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, "
             "$15, $16)",
             p, 16, NULL, NULL, err);
}

typedef struct drift_ctx {
    co_drift_fn fn;
    void *ctx;
} drift_ctx;

static int take_drift(void *ctx, const sval *c, int n)
{
    drift_ctx *x = ctx;
    co_drift_row r;
    (void)n;
    memset(&r, 0, sizeof r);
    vs(&c[0], r.table, sizeof r.table);
    r.job = vi(&c[1]);
    r.at = vd(&c[2]);
    r.source_rows = vi(&c[3]);
    r.target_rows = vi(&c[4]);
    r.missing = vi(&c[5]);
    r.extra = vi(&c[6]);
    r.changed = vi(&c[7]);
    r.schema = vi(&c[8]);
    vs(&c[9], r.kind, sizeof r.kind);
    /* rows written before version 3 have no count of their own */
    r.rows_checked = c[10].t == V_NULL ? r.source_rows + r.extra : vi(&c[10]);
    r.transient = vi(&c[11]);
    r.window_s = vd(&c[12]);
    r.lat_p50 = c[13].t == V_NULL ? -1 : vd(&c[13]);
    r.lat_p99 = c[14].t == V_NULL ? -1 : vd(&c[14]);
    r.lat_max = c[15].t == V_NULL ? -1 : vd(&c[15]);
    return x->fn(x->ctx, &r);
}

#define DRIFT_COLS                                                                                 \
    "tbl, job, at, source_rows, target_rows, missing, extra, changed, schema_drift, kind, "        \
    "rows_checked, transient, window_s, latency_p50, latency_p99, latency_max"

int co_store_drift_each(co_store *s, const char *table, double since, co_drift_fn fn, void *ctx,
                        sl_err *err)
{
    drift_ctx x = {fn, ctx};
    static const sval n = {.t = V_NULL};
    sval p[] = {table ? T(table) : n, R(since)};
    return q(s,
             "SELECT " DRIFT_COLS " FROM drift WHERE ($1 IS NULL OR tbl = $1) AND at >= $2 "
             "ORDER BY at, job",
             p, 2, take_drift, &x, err);
}

int co_store_drift_latest(co_store *s, co_drift_fn fn, void *ctx, sl_err *err)
{
    drift_ctx x = {fn, ctx};
    return q(s,
             "SELECT " DRIFT_COLS " FROM drift d WHERE at = (SELECT max(at) FROM drift d2 "
             "WHERE d2.tbl = d.tbl AND d2.kind = d.kind) ORDER BY tbl, kind",
             NULL, 0, take_drift, &x, err);
}

int co_store_set_state(co_store *s, int64_t id, const char *state, const sl_err *why,
                       const co_summary *sum, sl_err *err)
{
    sval n = {.t = V_NULL};
    sval p[] = {I(id),
                T(state),
                why ? T(why->msg) : n,
                I(strcmp(state, "running") == 0),
                R(wall()),
                sum ? T(sum->source_name) : n,
                sum ? T(sum->target_name) : n,
                sum ? I(sum->source_rows) : n,
                sum ? I(sum->target_rows) : n,
                sum ? I(sum->ranges) : n,
                sum ? I(sum->workers) : n,
                sum ? I(sum->missing) : n,
                sum ? I(sum->extra) : n,
                sum ? I(sum->changed) : n,
                sum ? I(sum->schema) : n,
                sum ? R(sum->elapsed) : n,
                sum ? I(sum->transient) : n,
                why ? T(sl_code_name(why->code)) : n};
    if (q(s,
          "UPDATE jobs SET state = $2, error = $3, "
          "started = CASE WHEN $4 = 1 THEN coalesce(started, $5) ELSE started END, "
          "finished = CASE WHEN $4 = 1 THEN NULL ELSE $5 END, "
          "source_name = coalesce($6, source_name), target_name = coalesce($7, target_name), "
          "source_rows = coalesce($8, source_rows), target_rows = coalesce($9, target_rows), "
          "ranges = coalesce($10, ranges), workers = coalesce($11, workers), "
          "missing = coalesce($12, missing), extra = coalesce($13, extra), "
          "changed = coalesce($14, changed), schema_drift = coalesce($15, schema_drift), "
          "elapsed = coalesce($16, elapsed), transient = coalesce($17, transient), "
          "error_code = $18 WHERE id = $1",
          p, 18, NULL, NULL, err))
        return -1;
    if (strcmp(state, "done") != 0 || !sum)
        return 0;
    return job_drift(s, id, err);
}

int co_store_cancel_job(co_store *s, int64_t id, sl_err *err)
{
    sval p[] = {I(id), R(wall())};
    return q(s,
             "UPDATE jobs SET state = 'cancelled', finished = $2 "
             "WHERE id = $1 AND state IN ('queued', 'running')",
             p, 2, NULL, NULL, err);
}

/* Row callback: a job's row into a co_job_row. */
static int take_job(void *ctx, const sval *c, int n)
{
    co_job_row *o = ctx;
    (void)n;
    vs(&c[0], o->state, sizeof o->state);
    vs(&c[1], o->error, sizeof o->error);
    vs(&c[2], o->table, sizeof o->table);
    vs(&c[3], o->sum.source_name, sizeof o->sum.source_name);
    vs(&c[4], o->sum.target_name, sizeof o->sum.target_name);
    o->sum.source_rows = (uint64_t)vi(&c[5]);
    o->sum.target_rows = (uint64_t)vi(&c[6]);
    o->sum.ranges = (size_t)vi(&c[7]);
    o->sum.workers = (size_t)vi(&c[8]);
    o->sum.missing = (uint64_t)vi(&c[9]);
    o->sum.extra = (uint64_t)vi(&c[10]);
    o->sum.changed = (uint64_t)vi(&c[11]);
    o->sum.schema = (uint64_t)vi(&c[12]);
    o->sum.elapsed = vd(&c[13]);
    o->submitted = vd(&c[14]);
    o->started = vd(&c[15]);
    o->finished = vd(&c[16]);
    o->sum.transient = (uint64_t)vi(&c[17]);
    o->error_code =
        c[18].t == V_TEXT && c[18].n ? sl_code_from_name((const char *)c[18].p, c[18].n) : SL_OK;
    o->id = 1; /* found */
    return 0;
}

int co_store_get_job(co_store *s, int64_t id, co_job_row *out, sl_err *err)
{
    sval p[] = {I(id)};
    memset(out, 0, sizeof *out);
    if (q(s,
          "SELECT state, coalesce(error, ''), tbl, coalesce(source_name, ''), "
          "coalesce(target_name, ''), source_rows, target_rows, ranges, workers, missing, extra, "
          "changed, schema_drift, elapsed, submitted, coalesce(started, 0), "
          "coalesce(finished, 0), transient, error_code FROM jobs WHERE id = $1",
          p, 1, take_job, out, err))
        return -1;
    if (!out->id)
        return 0;
    out->id = id;
    return 1;
}

/* ---- plans and ranges --------------------------------------------------------- */

int co_store_save_plan(co_store *s, int64_t id, size_t n, const uint8_t *const *keys,
                       const size_t *lens, sl_err *err)
{
    if (exec_script(s, "BEGIN", err))
        return -1;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i <= n; i++) {
        /* the last range is unbounded above: NULL */
        sval p[] = {I(id), I(i), i < n ? B(keys[i], lens[i]) : (sval){.t = V_NULL}};
        rc = q(s,
               "INSERT INTO ranges (job, idx, hi) VALUES ($1, $2, $3) "
               "ON CONFLICT (job, idx) DO UPDATE SET hi = excluded.hi, done = 0",
               p, 3, NULL, NULL, err);
    }
    if (exec_script(s, rc ? "ROLLBACK" : "COMMIT", rc ? NULL : err) && rc == 0)
        rc = -1;
    return rc;
}

int co_store_range_done(co_store *s, int64_t id, size_t range, uint64_t src_rows, uint64_t tgt_rows,
                        sl_err *err)
{
    sval p[] = {I(id), I(range), I(src_rows), I(tgt_rows), R(wall())};
    return q(s,
             "UPDATE ranges SET done = 1, source_rows = $3, target_rows = $4, finished = $5 "
             "WHERE job = $1 AND idx = $2",
             p, 5, NULL, NULL, err);
}

typedef struct plan_ctx {
    sl_buf *buf;
    unsigned char *done;
    size_t n, cap;
    uint64_t *rows;
    int oom;
} plan_ctx;

/* Row callback: a range's done flag (and the rows a done one counted) and its upper bound, appended
 * to the plan. */
static int take_range(void *ctx, const sval *c, int nc)
{
    plan_ctx *x = ctx;
    (void)nc;
    if (x->n == x->cap) {
        x->cap = x->cap ? x->cap * 2 : 64;
        unsigned char *d = realloc(x->done, x->cap);
        if (!d)
            return x->oom = 1;
        x->done = d;
    }
    x->done[x->n] = (unsigned char)vi(&c[1]);
    if (x->done[x->n]) {
        x->rows[0] += (uint64_t)vi(&c[2]);
        x->rows[1] += (uint64_t)vi(&c[3]);
    }
    if (c[0].t == V_BLOB) {
        uint32_t len = (uint32_t)c[0].n;
        if (sl_buf_append(x->buf, &len, 4) || sl_buf_append(x->buf, c[0].p, len))
            return x->oom = 1;
    }
    x->n++;
    return 0;
}

int co_store_load_plan(co_store *s, int64_t id, sl_buf *buf, size_t *nbounds, unsigned char **done,
                       uint64_t rows[2], sl_err *err)
{
    plan_ctx x = {.buf = buf, .rows = rows};
    sval p[] = {I(id)};
    sl_buf_reset(buf);
    rows[0] = rows[1] = 0;
    int rc = q(s,
               "SELECT hi, done, coalesce(source_rows, 0), coalesce(target_rows, 0) "
               "FROM ranges WHERE job = $1 ORDER BY idx",
               p, 1, take_range, &x, err);
    if (rc || x.oom || x.n == 0) {
        free(x.done);
        return rc || x.oom ? (x.oom ? sl_err_set(err, "out of memory") : -1) : 0;
    }
    *nbounds = x.n - 1;
    *done = x.done;
    return 1;
}

typedef struct count2 {
    size_t *a, *b;
} count2;

/* Row callback: two counts. */
static int take_counts(void *ctx, const sval *c, int n)
{
    count2 *x = ctx;
    (void)n;
    *x->a = (size_t)vi(&c[0]);
    *x->b = (size_t)vi(&c[1]);
    return 0;
}

int co_store_ranges_done(co_store *s, int64_t id, size_t *done, size_t *total, sl_err *err)
{
    count2 x = {done, total};
    sval p[] = {I(id)};
    *done = *total = 0;
    return q(s, "SELECT coalesce(sum(done), 0), count(*) FROM ranges WHERE job = $1", p, 1,
             take_counts, &x, err);
}

/* ---- events ------------------------------------------------------------------- */

int co_store_add_event(co_store *s, int64_t id, const char *kind, const void *k, size_t klen,
                       const void *frame, size_t len, int *added, sl_err *err)
{
    sval p[] = {I(id), T(kind), B(k, klen), B(frame, len), R(wall())};
    int64_t new_id = 0;
    if (q(s,
          "INSERT INTO events (job, kind, k, frame, at) VALUES ($1, $2, $3, $4, $5) "
          "ON CONFLICT (job, kind, k) DO NOTHING RETURNING id",
          p, 5, take_int, &new_id, err))
        return -1;
    *added = new_id != 0;
    return 0;
}

int co_store_forget_key(co_store *s, int64_t id, const void *k, size_t klen, sl_err *err)
{
    sval p[] = {I(id), B(k, klen)};
    return q(s,
             /* the kinds as events are stored (co_kind_name) */
             "DELETE FROM events WHERE job = $1 AND k = $2 AND "
             "kind IN ('missing-in-target', 'extra-in-target', 'changed')",
             p, 2, NULL, NULL, err);
}

/* Row callback: an event count by kind into the summary. */
static int take_kind_count(void *ctx, const sval *c, int n)
{
    co_summary *sum = ctx;
    char kind[32];
    (void)n;
    vs(&c[0], kind, sizeof kind);
    uint64_t v = (uint64_t)vi(&c[1]);
    if (!strcmp(kind, "missing-in-target"))
        sum->missing = v;
    else if (!strcmp(kind, "extra-in-target"))
        sum->extra = v;
    else if (!strcmp(kind, "changed"))
        sum->changed = v;
    else if (!strcmp(kind, "transient"))
        sum->transient = v;
    else
        sum->schema = v;
    return 0;
}

int co_store_count_events(co_store *s, int64_t id, co_summary *sum, sl_err *err)
{
    sval p[] = {I(id)};
    sum->missing = sum->extra = sum->changed = sum->schema = sum->transient = 0;
    return q(s, "SELECT kind, count(*) FROM events WHERE job = $1 GROUP BY kind", p, 1,
             take_kind_count, sum, err);
}

typedef struct each_ctx {
    int (*fn)(void *ctx, const void *frame, size_t len);
    void *ctx;
} each_ctx;

/* Row callback: an event's frame to the caller's fn. */
static int take_event(void *ctx, const sval *c, int n)
{
    each_ctx *x = ctx;
    (void)n;
    return x->fn(x->ctx, c[0].p, c[0].n);
}

int co_store_each_event(co_store *s, int64_t id,
                        int (*fn)(void *ctx, const void *frame, size_t len), void *ctx, sl_err *err)
{
    each_ctx x = {fn, ctx};
    sval p[] = {I(id)};
    return q(s, "SELECT frame FROM events WHERE job = $1 ORDER BY id", p, 1, take_event, &x, err);
}

/* ---- schedules ---------------------------------------------------------------- */

/* Adds or replaces schedule name (keeping its last job): 0, or -1 with err. */
static int schedule_upsert(co_store *s, const char *name, int64_t interval_s, const void *spec,
                           size_t len, const char *origin, sl_err *err)
{
    size_t n = strlen(name);
    if (n == 0 || n > CO_STORE_NAME_MAX)
        return sl_err_setc(err, SL_INVALID, "a schedule name must be 1 to %d bytes",
                           CO_STORE_NAME_MAX);
    /* a replaced schedule keeps its last job: its next run still waits for it */
    sval p[] = {T(name), I(interval_s), B(spec, len), T(origin), R(wall())};
    return q(s,
             "INSERT INTO schedules (name, interval_s, spec, origin, created) "
             "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO UPDATE SET "
             "interval_s = excluded.interval_s, spec = excluded.spec, origin = excluded.origin",
             p, 5, NULL, NULL, err);
}

int co_store_schedule_put(co_store *s, const char *name, int64_t interval_s, const void *spec,
                          size_t len, sl_err *err)
{
    return schedule_upsert(s, name, interval_s, spec, len, "client", err);
}

int co_store_schedule_sync_file(co_store *s, const co_store_schedule *v, size_t n, sl_err *err)
{
    if (exec_script(s, "BEGIN", err))
        return -1;
    int rc = exec_script(s, "UPDATE schedules SET origin = 'stale' WHERE origin = 'file'", err);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = schedule_upsert(s, v[i].name, v[i].interval_s, v[i].spec, v[i].len, "file", err);
    if (rc == 0)
        rc = exec_script(s, "DELETE FROM schedules WHERE origin = 'stale'", err);
    if (exec_script(s, rc ? "ROLLBACK" : "COMMIT", rc ? NULL : err) && rc == 0)
        rc = -1;
    return rc;
}

int co_store_schedule_del(co_store *s, const char *name, sl_err *err)
{
    sval p[] = {T(name)};
    int64_t n = 0;
    if (q(s, "DELETE FROM schedules WHERE name = $1 RETURNING 1", p, 1, take_int, &n, err))
        return -1;
    return n != 0;
}

int co_store_schedule_set_last(co_store *s, const char *name, int64_t job, sl_err *err)
{
    sval p[] = {T(name), I(job)};
    return q(s, "UPDATE schedules SET last_job = $2 WHERE name = $1", p, 2, NULL, NULL, err);
}

typedef struct sched_ctx {
    co_store_schedule_fn fn;
    void *ctx;
} sched_ctx;

/* Row callback: one schedule to the caller's fn. */
static int take_schedule(void *ctx, const sval *c, int n)
{
    sched_ctx *x = ctx;
    char name[CO_STORE_NAME_MAX + 1];
    (void)n;
    vs(&c[0], name, sizeof name);
    return x->fn(x->ctx, name, vi(&c[1]), c[2].p, c[2].n, vi(&c[3]));
}

int co_store_schedule_each(co_store *s, co_store_schedule_fn fn, void *ctx, sl_err *err)
{
    sched_ctx x = {fn, ctx};
    return q(s, "SELECT name, interval_s, spec, coalesce(last_job, 0) FROM schedules ORDER BY name",
             NULL, 0, take_schedule, &x, err);
}
