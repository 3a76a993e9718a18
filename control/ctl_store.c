/* The control plane's tables in its control database (SQLite): every
 * migration's manifest and state, the audit log, validation results,
 * sealed artifacts. Versioned like the coordinator's store: ctl_schema
 * holds the version, and opening an older file upgrades it in place. */
#include <stdlib.h>
#include <string.h>

#include "ctl_impl.h"

#define CTL_SCHEMA_VERSION 1

static const char *const schema_v1 =
    "CREATE TABLE IF NOT EXISTS ctl_schema(version INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS ctl_migrations(id TEXT PRIMARY KEY, manifest TEXT NOT NULL,"
    " state TEXT NOT NULL, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS ctl_events(seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " migration TEXT NOT NULL, at_ms INTEGER NOT NULL, actor TEXT NOT NULL, kind TEXT NOT NULL,"
    " phase TEXT NOT NULL, detail TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS ctl_events_mig ON ctl_events(migration, seq);"
    "CREATE TABLE IF NOT EXISTS ctl_validations(seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " migration TEXT NOT NULL, at_ms INTEGER NOT NULL, kind TEXT NOT NULL, tbl TEXT NOT NULL,"
    " job INTEGER NOT NULL, equal INTEGER NOT NULL, detail TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS ctl_validations_mig ON ctl_validations(migration, seq);";

static int db_fail(ctl *c, sl_err *err, const char *what)
{
    return sl_err_setc(err, SL_DATABASE, "control database: %s: %s", what, sqlite3_errmsg(c->db));
}

int ctl_store_open(ctl *c, const char *path, sl_err *err)
{
    if (sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                        NULL) != SQLITE_OK)
        return sl_err_setc(err, SL_INVALID, "cannot open control database %s: %s", path,
                           c->db ? sqlite3_errmsg(c->db) : "out of memory");
    sqlite3_busy_timeout(c->db, 5000);
    if (sqlite3_exec(c->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL,
                     NULL) != SQLITE_OK ||
        sqlite3_exec(c->db, schema_v1, NULL, NULL, NULL) != SQLITE_OK)
        return db_fail(c, err, "creating tables");
    sqlite3_stmt *st;
    int version = 0;
    if (sqlite3_prepare_v2(c->db, "SELECT max(version) FROM ctl_schema", -1, &st, NULL) != SQLITE_OK)
        return db_fail(c, err, "reading the schema version");
    if (sqlite3_step(st) == SQLITE_ROW)
        version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (version > CTL_SCHEMA_VERSION)
        return sl_err_setc(err, SL_INVALID,
                           "control database %s has schema version %d, newer than this sluice "
                           "(%d); use a newer sluice",
                           path, version, CTL_SCHEMA_VERSION);
    if (version == 0 &&
        sqlite3_exec(c->db, "INSERT INTO ctl_schema VALUES (1)", NULL, NULL, NULL) != SQLITE_OK)
        return db_fail(c, err, "recording the schema version");
    return 0;
}

int ctl_store_load(ctl *c, sl_err *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(c->db, "SELECT id, manifest, state FROM ctl_migrations ORDER BY created_ms",
                           -1, &st, NULL) != SQLITE_OK)
        return db_fail(c, err, "reading migrations");
    int rc = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        const char *man = (const char *)sqlite3_column_text(st, 1);
        const char *state = (const char *)sqlite3_column_text(st, 2);
        sl_err e = {0};
        ct_manifest *m = ct_manifest_parse(man, strlen(man), &e);
        if (!m) {
            rc = sl_err_setc(err, SL_INTERNAL, "control database: migration %s: stored manifest: %s",
                             id, e.msg);
            break;
        }
        char *mj = strdup(man);
        mig *g = mj ? mig_new(m, mj) : NULL;
        json_t *sj = json_loads(state, 0, NULL);
        if (!g || !sj || mig_state_load(g, sj) != 0) {
            json_decref(sj);
            if (g)
                mig_free(g);
            else {
                ct_manifest_free(m);
                free(mj);
            }
            rc = sl_err_setc(err, SL_INTERNAL, "control database: migration %s: its stored state "
                             "does not load", id);
            break;
        }
        json_decref(sj);
        mig **v = realloc(c->migs, (c->nmigs + 1) * sizeof *v);
        if (!v) {
            mig_free(g);
            rc = sl_err_setc(err, SL_INTERNAL, "out of memory");
            break;
        }
        c->migs = v;
        c->migs[c->nmigs++] = g;
    }
    sqlite3_finalize(st);
    return rc;
}

int ctl_store_save(ctl *c, mig *g, sl_err *err)
{
    json_t *sj = mig_state_json(g);
    char *state = sj ? json_dumps(sj, JSON_COMPACT) : NULL;
    json_decref(sj);
    if (!state)
        return sl_err_setc(err, SL_INTERNAL, "out of memory");
    sqlite3_stmt *st;
    int rc = -1;
    if (sqlite3_prepare_v2(c->db,
                           "INSERT INTO ctl_migrations(id, manifest, state, created_ms, updated_ms) "
                           "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(id) DO UPDATE SET "
                           "state = excluded.state, updated_ms = excluded.updated_ms",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, g->m->id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, g->manifest_json, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, state, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, g->created_ms);
        sqlite3_bind_int64(st, 5, g->updated_ms);
        rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
        sqlite3_finalize(st);
    }
    free(state);
    if (rc != 0)
        return db_fail(c, err, "saving a migration");
    g->dirty = 0;
    return 0;
}

int ctl_event(ctl *c, mig *g, const char *actor, const char *kind, json_t *detail)
{
    if (!detail)
        detail = json_object();
    int64_t now = sl_wall_ms();
    const char *phase = ct_phase_name(mig_phase(g));
    char *dj = json_dumps(detail, JSON_COMPACT | JSON_SORT_KEYS);
    int rc = -1;
    sqlite3_stmt *st;
    if (dj && sqlite3_prepare_v2(c->db,
                                 "INSERT INTO ctl_events(migration, at_ms, actor, kind, phase, detail) "
                                 "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                                 -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, g->m->id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, now);
        sqlite3_bind_text(st, 3, actor, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, kind, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, phase, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 6, dj, -1, SQLITE_STATIC);
        rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
        sqlite3_finalize(st);
    }
    if (rc != 0)
        ctl_logf(c, "control database: cannot record an event of %s: %s", g->m->id,
                 sqlite3_errmsg(c->db));
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
    sqlite3_stmt *st;
    int rc = -1;
    if (dj && sqlite3_prepare_v2(c->db,
                                 "INSERT INTO ctl_validations(migration, at_ms, kind, tbl, job, equal, "
                                 "detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                                 -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, g->m->id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, sl_wall_ms());
        sqlite3_bind_text(st, 3, kind, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, table, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, job);
        sqlite3_bind_int(st, 6, equal);
        sqlite3_bind_text(st, 7, dj, -1, SQLITE_STATIC);
        rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
        sqlite3_finalize(st);
    }
    free(dj);
    return rc;
}

static json_t *detail_json(sqlite3_stmt *st, int col)
{
    const char *t = (const char *)sqlite3_column_text(st, col);
    json_t *v = t ? json_loads(t, 0, NULL) : NULL;
    return v ? v : json_object();
}

json_t *ctl_store_events(ctl *c, const char *id, int64_t limit)
{
    json_t *out = json_array();
    sqlite3_stmt *st;
    if (!out || sqlite3_prepare_v2(c->db,
                                   "SELECT seq, at_ms, actor, kind, phase, detail FROM ctl_events "
                                   "WHERE migration = ?1 ORDER BY seq LIMIT ?2",
                                   -1, &st, NULL) != SQLITE_OK)
        return out;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, limit > 0 ? limit : -1);
    while (sqlite3_step(st) == SQLITE_ROW) {
        char at[40];
        json_array_append_new(
            out, json_pack("{s:I, s:s, s:s, s:s, s:s, s:o}", "id", (json_int_t)sqlite3_column_int64(st, 0),
                           "at", ctl_iso(sqlite3_column_int64(st, 1), at, sizeof at), "actor",
                           (const char *)sqlite3_column_text(st, 2), "kind",
                           (const char *)sqlite3_column_text(st, 3), "phase",
                           (const char *)sqlite3_column_text(st, 4), "detail", detail_json(st, 5)));
    }
    sqlite3_finalize(st);
    return out;
}

json_t *ctl_store_validations(ctl *c, const char *id)
{
    json_t *out = json_array();
    sqlite3_stmt *st;
    if (!out || sqlite3_prepare_v2(c->db,
                                   "SELECT at_ms, kind, tbl, job, equal, detail FROM ctl_validations "
                                   "WHERE migration = ?1 ORDER BY seq",
                                   -1, &st, NULL) != SQLITE_OK)
        return out;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    while (sqlite3_step(st) == SQLITE_ROW) {
        char at[40];
        json_array_append_new(
            out, json_pack("{s:s, s:s, s:s, s:I, s:b, s:o}", "at",
                           ctl_iso(sqlite3_column_int64(st, 0), at, sizeof at), "kind",
                           (const char *)sqlite3_column_text(st, 1), "table",
                           (const char *)sqlite3_column_text(st, 2), "job",
                           (json_int_t)sqlite3_column_int64(st, 3), "equal",
                           sqlite3_column_int(st, 4), "detail", detail_json(st, 5)));
    }
    sqlite3_finalize(st);
    return out;
}
