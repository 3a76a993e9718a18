/* The control plane's tables in its control database, on SQLite or
 * PostgreSQL: every migration's manifest and state, the audit log,
 * validation results. Every statement is written once in the SQL both
 * understand ($n parameters, ON CONFLICT); only the table definitions and
 * the driver calls differ. Versioned like the coordinator's store:
 * ctl_schema holds the version, opening an older database upgrades it in
 * place, a newer one is refused. */
#include <libpq-fe.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/dsn.h"
#include "ctl_impl.h"

/* One connection, used by one thread at a time (mu: ctl's mutex is not
 * held on every path that reads the store, so the store keeps its own). */
struct ctl_store {
    pthread_mutex_t mu;
    sqlite3 *lite;
    PGconn *pg;
    int in_tx;      /* inside BEGIN..COMMIT: a lost connection is not retried */
    char name[400]; /* for messages: the path, or the DSN with its password redacted */
};

/* Schema versions, oldest first: steps[v - 1] takes a database from
 * version v - 1 to v (0: empty). Append only: a released step is never
 * edited. Step 1 is the schema of the sluice before PostgreSQL support,
 * which created it with IF NOT EXISTS: a database without a version goes
 * through it again (a no-op on a whole one). */
typedef struct step {
    const char *sqlite, *pg;
} step;

static const step steps[] = {
    {"CREATE TABLE IF NOT EXISTS ctl_migrations(id TEXT PRIMARY KEY, manifest TEXT NOT NULL,"
     " state TEXT NOT NULL, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);"
     "CREATE TABLE IF NOT EXISTS ctl_events(seq INTEGER PRIMARY KEY AUTOINCREMENT,"
     " migration TEXT NOT NULL, at_ms INTEGER NOT NULL, actor TEXT NOT NULL, kind TEXT NOT NULL,"
     " phase TEXT NOT NULL, detail TEXT NOT NULL);"
     "CREATE INDEX IF NOT EXISTS ctl_events_mig ON ctl_events(migration, seq);"
     "CREATE TABLE IF NOT EXISTS ctl_validations(seq INTEGER PRIMARY KEY AUTOINCREMENT,"
     " migration TEXT NOT NULL, at_ms INTEGER NOT NULL, kind TEXT NOT NULL, tbl TEXT NOT NULL,"
     " job INTEGER NOT NULL, equal INTEGER NOT NULL, detail TEXT NOT NULL);"
     "CREATE INDEX IF NOT EXISTS ctl_validations_mig ON ctl_validations(migration, seq);",
     "CREATE TABLE IF NOT EXISTS ctl_migrations(id text PRIMARY KEY, manifest text NOT NULL,"
     " state text NOT NULL, created_ms bigint NOT NULL, updated_ms bigint NOT NULL);"
     "CREATE TABLE IF NOT EXISTS ctl_events(seq bigserial PRIMARY KEY,"
     " migration text NOT NULL, at_ms bigint NOT NULL, actor text NOT NULL, kind text NOT NULL,"
     " phase text NOT NULL, detail text NOT NULL);"
     "CREATE INDEX IF NOT EXISTS ctl_events_mig ON ctl_events(migration, seq);"
     "CREATE TABLE IF NOT EXISTS ctl_validations(seq bigserial PRIMARY KEY,"
     " migration text NOT NULL, at_ms bigint NOT NULL, kind text NOT NULL, tbl text NOT NULL,"
     " job bigint NOT NULL, equal integer NOT NULL, detail text NOT NULL);"
     "CREATE INDEX IF NOT EXISTS ctl_validations_mig ON ctl_validations(migration, seq);"},
};

#define CTL_SCHEMA_LATEST ((int64_t)(sizeof steps / sizeof steps[0]))
#define MAX_PARAMS 8

/* A parameter: text (s, NULL for SQL NULL) or, when is_int, an integer. */
typedef struct pval {
    int is_int;
    int64_t i;
    const char *s;
} pval;

#define PI(x) ((pval){.is_int = 1, .i = (int64_t)(x)})
#define PT(x) ((pval){.s = (x)})

/* A result row: every column as text (NULL for SQL NULL). Non-zero stops. */
typedef int (*row_fn)(void *ctx, const char *const *cols, int n);

/* ---- the two drivers ------------------------------------------------------ */

static int q_sqlite(ctl_store *s, const char *sql, const pval *ps, int np, row_fn fn, void *ctx,
                    sl_err *err)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->lite, sql, -1, &st, NULL) != SQLITE_OK)
        return sl_err_setc(err, SL_DATABASE, "control database: %s", sqlite3_errmsg(s->lite));
    for (int k = 0; k < np; k++) {
        char pname[16];
        snprintf(pname, sizeof pname, "$%d", k + 1);
        int idx = sqlite3_bind_parameter_index(st, pname);
        if (!idx)
            continue;
        if (ps[k].is_int)
            sqlite3_bind_int64(st, idx, ps[k].i);
        else if (ps[k].s)
            sqlite3_bind_text(st, idx, ps[k].s, -1, SQLITE_TRANSIENT);
        else
            sqlite3_bind_null(st, idx);
    }
    int r, rc = 0;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        const char *cols[16];
        int n = sqlite3_column_count(st);
        n = n > 16 ? 16 : n;
        for (int c = 0; c < n; c++)
            cols[c] = (const char *)sqlite3_column_text(st, c);
        if (fn && fn(ctx, cols, n)) {
            rc = -1;
            break;
        }
    }
    if (rc == 0 && r != SQLITE_DONE)
        rc = sl_err_setc(err, SL_DATABASE, "control database: %s", sqlite3_errmsg(s->lite));
    sqlite3_finalize(st);
    return rc;
}

/* The first line of libpq's error, the password scrubbed. */
static int pg_fail(ctl_store *s, const PGresult *res, sl_err *err)
{
    char line[400];
    const char *m =
        res && PQresultErrorMessage(res)[0] ? PQresultErrorMessage(res) : PQerrorMessage(s->pg);
    dsn_error_line(line, sizeof line, m, PQpass(s->pg));
    return sl_err_setc(err, SL_DATABASE, "control database: %s", line);
}

/* Runs sql once; a connection found lost outside a transaction is
 * re-established once and the statement run again. */
static PGresult *pg_exec(ctl_store *s, const char *sql, int np, const char *const *vals)
{
    PGresult *res = PQexecParams(s->pg, sql, np, NULL, vals, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK || s->in_tx ||
        PQstatus(s->pg) != CONNECTION_BAD)
        return res;
    PQclear(res);
    PQreset(s->pg);
    if (PQstatus(s->pg) != CONNECTION_OK)
        return NULL; /* pg_fail takes PQerrorMessage: why the reconnect failed */
    return PQexecParams(s->pg, sql, np, NULL, vals, NULL, NULL, 0);
}

static int q_pg(ctl_store *s, const char *sql, const pval *ps, int np, row_fn fn, void *ctx,
                sl_err *err)
{
    const char *vals[MAX_PARAMS];
    char nums[MAX_PARAMS][24];
    for (int k = 0; k < np && k < MAX_PARAMS; k++) {
        vals[k] = ps[k].s;
        if (ps[k].is_int) {
            snprintf(nums[k], sizeof nums[k], "%lld", (long long)ps[k].i);
            vals[k] = nums[k];
        }
    }
    PGresult *res = pg_exec(s, sql, np, vals);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        pg_fail(s, res, err);
        PQclear(res);
        return -1;
    }
    int rc = 0, nr = PQntuples(res), nc = PQnfields(res) > 16 ? 16 : PQnfields(res);
    for (int r = 0; r < nr && rc == 0; r++) {
        const char *cols[16];
        for (int c = 0; c < nc; c++)
            cols[c] = PQgetisnull(res, r, c) ? NULL : PQgetvalue(res, r, c);
        if (fn && fn(ctx, cols, nc))
            rc = -1;
    }
    PQclear(res);
    return rc;
}

/* Runs sql (parameters ps[0..np), at most MAX_PARAMS) on whichever database
 * the store is, calling fn per row: 0, or -1 with err (or fn's own). */
static int q(ctl_store *s, const char *sql, const pval *ps, int np, row_fn fn, void *ctx,
             sl_err *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = s->pg ? q_pg(s, sql, ps, np, fn, ctx, err) : q_sqlite(s, sql, ps, np, fn, ctx, err);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* Runs statements without parameters (the schema, BEGIN/COMMIT). */
static int exec_script(ctl_store *s, const char *sql, sl_err *err)
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
        sl_err_setc(err, SL_DATABASE, "control database: %s", msg ? msg : sqlite3_errmsg(s->lite));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static int64_t col_int(const char *v)
{
    return v ? strtoll(v, NULL, 10) : 0;
}

/* Row callback: column 0 as an integer into *(int64_t *)ctx, -1 when NULL. */
static int take_int(void *ctx, const char *const *cols, int n)
{
    (void)n;
    *(int64_t *)ctx = cols[0] ? col_int(cols[0]) : -1;
    return 0;
}

/* ---- schema versions ------------------------------------------------------ */

/* Brings the schema to CTL_SCHEMA_LATEST in one transaction, or refuses a
 * newer one. The transaction (an advisory lock on PostgreSQL, a write lock
 * on SQLite) is taken before the version is read, so two control planes
 * starting on one database create it once. */
static int migrate(ctl_store *s, sl_err *err)
{
    if (exec_script(
            s, s->pg ? "BEGIN; SELECT pg_advisory_xact_lock(7402339817350752)" : "BEGIN IMMEDIATE",
            err))
        return sl_err_wrap(err, "cannot open control database %s", s->name);
    s->in_tx = 1;
    int64_t has = 0, from = -1;
    pval p[] = {PT("ctl_schema")};
    if (q(s,
          s->pg
              ? "SELECT count(*) FROM (SELECT 1) x WHERE to_regclass(CAST($1 AS text)) IS NOT NULL"
              : "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = $1",
          p, 1, take_int, &has, err) ||
        (has && q(s, "SELECT max(version) FROM ctl_schema", NULL, 0, take_int, &from, err))) {
        sl_err_wrap(err, "cannot read the schema version of control database %s", s->name);
        goto fail;
    }
    if (from < 0) /* no table, or an empty one: steps[0] is idempotent */
        from = 0;
    if (from > CTL_SCHEMA_LATEST) {
        sl_err_setc(err, SL_INVALID,
                    "control database %s has schema version %lld; this sluice supports up to "
                    "%lld: upgrade sluice",
                    s->name, (long long)from, (long long)CTL_SCHEMA_LATEST);
        goto fail;
    }
    if (from < CTL_SCHEMA_LATEST) {
        pval v[] = {PI(CTL_SCHEMA_LATEST)};
        for (int64_t k = from; k < CTL_SCHEMA_LATEST; k++)
            if (exec_script(s, s->pg ? steps[k].pg : steps[k].sqlite, err))
                goto upgrade_failed;
        if (exec_script(s,
                        "CREATE TABLE IF NOT EXISTS ctl_schema(version integer NOT NULL);"
                        "DELETE FROM ctl_schema",
                        err) ||
            q(s, "INSERT INTO ctl_schema(version) VALUES ($1)", v, 1, NULL, NULL, err))
            goto upgrade_failed;
    }
    if (exec_script(s, "COMMIT", err)) {
        sl_err_wrap(err, "control database %s", s->name);
        goto fail;
    }
    s->in_tx = 0;
    return 0;
upgrade_failed:
    sl_err_wrap(err, "cannot bring control database %s from schema version %lld to %lld", s->name,
                (long long)from, (long long)CTL_SCHEMA_LATEST);
fail:
    exec_script(s, "ROLLBACK", NULL);
    s->in_tx = 0;
    return -1;
}

/* ---- open and close ------------------------------------------------------- */

/* A PostgreSQL DSN: a URI, or conninfo keywords (host=... dbname=...). */
static int is_pg(const char *where)
{
    return !strncmp(where, "postgresql:", 11) || !strncmp(where, "postgres:", 9) ||
           (strncmp(where, "sqlite:", 7) != 0 && strchr(where, '='));
}

static void drop_notice(void *arg, const char *message)
{
    (void)arg, (void)message;
}

static int open_pg(ctl_store *s, const char *where, sl_err *err)
{
    /* libpq's parse errors quote the DSN, and its connect errors may show
     * what a mistyped DSN put where: our own words, or scrubbed */
    char *perr = NULL;
    PQconninfoOption *opts = NULL;
    if (!strncmp(where, "postgres", 8) &&
        dsn_check_uri(where, "--state is not a valid PostgreSQL URI", err)) {
        if (err)
            err->code = SL_INVALID;
        return -1;
    }
    if (!(opts = PQconninfoParse(where, &perr))) {
        sl_err_setc(err, SL_INVALID,
                    "--state is not a valid PostgreSQL connection string or URI: %s",
                    perr ? dsn_parse_hint(perr) : "out of memory");
        PQfreemem(perr);
        return -1;
    }
    PQconninfoFree(opts);
    dsn_redact(where, s->name, sizeof s->name);
    /* a name in pg_stat_activity unless the DSN gives one */
    /* bounded: the control plane saves under the lock its API shares */
    const char *const keys[] = {"dbname", "fallback_application_name", "connect_timeout", "options",
                                NULL};
    const char *const vals[] = {where, "sluice control", "5", "-c statement_timeout=10000", NULL};
    s->pg = PQconnectdbParams(keys, vals, 1);
    if (!s->pg || PQstatus(s->pg) != CONNECTION_OK) {
        char line[500];
        const char *m = s->pg ? PQerrorMessage(s->pg) : "out of memory";
        snprintf(line, sizeof line, "cannot open the PostgreSQL control database %s: %.*s", s->name,
                 (int)strcspn(m, "\n"), m);
        if (s->pg)
            dsn_scrub_secret(line, sizeof line, PQpass(s->pg));
        dsn_scrub(line, sizeof line, where);
        return sl_err_setc(err, SL_DATABASE, "%s", line);
    }
    PQsetNoticeProcessor(s->pg, drop_notice, NULL);
    if (migrate(s, err)) {
        /* the password may come from elsewhere than the DSN (PGPASSWORD) */
        if (err)
            dsn_scrub_secret(err->msg, sizeof err->msg, PQpass(s->pg));
        return -1;
    }
    return 0;
}

static int open_sqlite(ctl_store *s, const char *where, sl_err *err)
{
    const char *path = !strncmp(where, "sqlite:", 7) ? where + 7 : where;
    snprintf(s->name, sizeof s->name, "\"%s\"", path);
    if (!path[0])
        return sl_err_setc(err, SL_INVALID, "--state: the SQLite path is empty: write sqlite:PATH");
    if (sqlite3_open_v2(path, &s->lite, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
            SQLITE_OK ||
        sqlite3_busy_timeout(s->lite, 5000) != SQLITE_OK)
        return sl_err_setc(err, SL_INVALID, "cannot open control database %s: %s", s->name,
                           s->lite ? sqlite3_errmsg(s->lite) : "out of memory");
    if (exec_script(s, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL", err))
        return sl_err_wrap(err, "cannot open control database %s", s->name);
    return migrate(s, err);
}

int ctl_store_open(ctl *c, const char *where, sl_err *err)
{
    ctl_store *s = calloc(1, sizeof *s);
    if (!s)
        return sl_err_setc(err, SL_INTERNAL, "out of memory");
    pthread_mutex_init(&s->mu, NULL);
    c->store = s;
    if (!where || !where[0])
        return sl_err_setc(err, SL_INVALID,
                           "no control database: pass --state sqlite:PATH or a "
                           "PostgreSQL DSN");
    return is_pg(where) ? open_pg(s, where, err) : open_sqlite(s, where, err);
}

void ctl_store_close(ctl *c)
{
    ctl_store *s = c->store;
    if (!s)
        return;
    if (s->lite)
        sqlite3_close(s->lite);
    if (s->pg)
        PQfinish(s->pg);
    pthread_mutex_destroy(&s->mu);
    free(s);
    c->store = NULL;
}

/* ---- migrations ----------------------------------------------------------- */

typedef struct load_ctx {
    ctl *c;
    sl_err *err;
} load_ctx;

/* Row callback: id, manifest, state → a mig appended to c->migs. */
static int take_migration(void *ctx, const char *const *cols, int n)
{
    load_ctx *x = ctx;
    ctl *c = x->c;
    (void)n;
    const char *id = cols[0] ? cols[0] : "?", *man = cols[1] ? cols[1] : "",
               *state = cols[2] ? cols[2] : "";
    sl_err e = {0};
    ct_manifest *m = ct_manifest_parse(man, strlen(man), &e);
    if (!m) {
        sl_err_setc(x->err, SL_INTERNAL, "control database: migration %s: stored manifest: %s", id,
                    e.msg);
        return 1;
    }
    char *mj = strdup(man);
    mig *g = mj ? mig_new(m, mj) : NULL;
    json_t *sj = json_loads(state, 0, NULL);
    if (!g || !sj || mig_state_load(g, sj) != 0) {
        json_decref(sj);
        if (g) {
            mig_free(g);
        } else {
            ct_manifest_free(m);
            free(mj);
        }
        sl_err_setc(x->err, SL_INTERNAL,
                    "control database: migration %s: its stored state does not load", id);
        return 1;
    }
    json_decref(sj);
    mig **v = realloc(c->migs, (c->nmigs + 1) * sizeof *v);
    if (!v) {
        mig_free(g);
        sl_err_setc(x->err, SL_INTERNAL, "out of memory");
        return 1;
    }
    c->migs = v;
    c->migs[c->nmigs++] = g;
    return 0;
}

int ctl_store_load(ctl *c, sl_err *err)
{
    load_ctx x = {c, err};
    return q(c->store, "SELECT id, manifest, state FROM ctl_migrations ORDER BY created_ms, id",
             NULL, 0, take_migration, &x, err);
}

int ctl_store_save(ctl *c, mig *g, sl_err *err)
{
    json_t *sj = mig_state_json(g);
    char *state = sj ? json_dumps(sj, JSON_COMPACT) : NULL;
    json_decref(sj);
    if (!state)
        return sl_err_setc(err, SL_INTERNAL, "out of memory");
    pval p[] = {PT(g->m->id), PT(g->manifest_json), PT(state), PI(g->created_ms),
                PI(g->updated_ms)};
    int rc = q(c->store,
               "INSERT INTO ctl_migrations(id, manifest, state, created_ms, updated_ms) "
               "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET "
               "state = excluded.state, updated_ms = excluded.updated_ms",
               p, 5, NULL, NULL, err);
    free(state);
    if (rc != 0)
        return sl_err_wrap(err, "saving migration %s", g->m->id);
    g->dirty = 0;
    return 0;
}

/* ---- events and validations ----------------------------------------------- */

int ctl_event(ctl *c, mig *g, const char *actor, const char *kind, json_t *detail)
{
    if (!detail)
        detail = json_object();
    g->dirty = 1; /* every event marks a change to save */
    int64_t now = sl_wall_ms();
    const char *phase = ct_phase_name(mig_phase(g));
    char *dj = json_dumps(detail, JSON_COMPACT | JSON_SORT_KEYS);
    sl_err e = {0};
    int rc = -1;
    if (dj) {
        pval p[] = {PT(g->m->id), PI(now), PT(actor), PT(kind), PT(phase), PT(dj)};
        rc = q(c->store,
               "INSERT INTO ctl_events(migration, at_ms, actor, kind, phase, detail) "
               "VALUES ($1, $2, $3, $4, $5, $6)",
               p, 6, NULL, NULL, &e);
    }
    if (rc != 0)
        ctl_logf(c, "cannot record an event of %s: %s", g->m->id, dj ? e.msg : "out of memory");
    else if (strcmp(kind, "gate") != 0) /* a refused advance is the caller's answer, not news */
        ctl_logf(c, "%s: %s (%s, %s) %.300s", g->m->id, kind, actor, phase, dj);
    if (c->webhook && dj) {
        char at[40];
        json_t *ev = json_pack("{s:s, s:s, s:s, s:s, s:s, s:O}", "migration_id", g->m->id, "at",
                               ctl_iso(now, at, sizeof at), "actor", actor, "kind", kind, "phase",
                               phase, "detail", detail);
        char *body = ev ? json_dumps(ev, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        if (body)
            ct_webhook_post(c->webhook, body, strlen(body));
        free(body);
        json_decref(ev);
    }
    free(dj);
    json_decref(detail);
    return rc;
}

int ctl_store_validation(ctl *c, mig *g, const char *kind, const char *table, int64_t job,
                         int equal, json_t *detail)
{
    char *dj = detail ? json_dumps(detail, JSON_COMPACT | JSON_SORT_KEYS) : strdup("{}");
    json_decref(detail);
    if (!dj)
        return -1;
    sl_err e = {0};
    pval p[] = {PT(g->m->id), PI(sl_wall_ms()), PT(kind), PT(table),
                PI(job),      PI(equal != 0),   PT(dj)};
    int rc = q(c->store,
               "INSERT INTO ctl_validations(migration, at_ms, kind, tbl, job, equal, detail) "
               "VALUES ($1, $2, $3, $4, $5, $6, $7)",
               p, 7, NULL, NULL, &e);
    if (rc != 0)
        ctl_logf(c, "cannot record a validation of %s: %s", g->m->id, e.msg);
    free(dj);
    return rc;
}

static json_t *detail_json(const char *t)
{
    json_t *v = t ? json_loads(t, 0, NULL) : NULL;
    return v ? v : json_object();
}

static const char *str(const char *v)
{
    return v ? v : "";
}

/* Row callback: seq, at_ms, actor, kind, phase, detail → an event object. */
static int take_event(void *ctx, const char *const *cols, int n)
{
    char at[40];
    (void)n;
    json_array_append_new(
        ctx, json_pack("{s:I, s:s, s:s, s:s, s:s, s:o}", "id", (json_int_t)col_int(cols[0]), "at",
                       ctl_iso(col_int(cols[1]), at, sizeof at), "actor", str(cols[2]), "kind",
                       str(cols[3]), "phase", str(cols[4]), "detail", detail_json(cols[5])));
    return 0;
}

json_t *ctl_store_events(ctl *c, const char *id, int64_t limit)
{
    json_t *out = json_array();
    sl_err e = {0};
    pval p[] = {PT(id), PI(limit > 0 ? limit : INT64_MAX)};
    if (out && q(c->store,
                 "SELECT seq, at_ms, actor, kind, phase, detail FROM ctl_events "
                 "WHERE migration = $1 ORDER BY seq LIMIT $2",
                 p, 2, take_event, out, &e))
        ctl_logf(c, "cannot read the events of %s: %s", id, e.msg);
    return out;
}

/* Row callback: at_ms, kind, tbl, job, equal, detail → a validation object. */
static int take_validation(void *ctx, const char *const *cols, int n)
{
    char at[40];
    (void)n;
    json_array_append_new(ctx, json_pack("{s:s, s:s, s:s, s:I, s:b, s:o}", "at",
                                         ctl_iso(col_int(cols[0]), at, sizeof at), "kind",
                                         str(cols[1]), "table", str(cols[2]), "job",
                                         (json_int_t)col_int(cols[3]), "equal",
                                         (int)col_int(cols[4]), "detail", detail_json(cols[5])));
    return 0;
}

json_t *ctl_store_validations(ctl *c, const char *id)
{
    json_t *out = json_array();
    sl_err e = {0};
    pval p[] = {PT(id)};
    if (out && q(c->store,
                 "SELECT at_ms, kind, tbl, job, equal, detail FROM ctl_validations "
                 "WHERE migration = $1 ORDER BY seq",
                 p, 1, take_validation, out, &e))
        ctl_logf(c, "cannot read the validations of %s: %s", id, e.msg);
    return out;
}
