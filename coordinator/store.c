#include "store.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct co_store {
    sqlite3 *db;
};

static const char *schema =
    "PRAGMA journal_mode = WAL;"
    "PRAGMA synchronous = NORMAL;"
    "CREATE TABLE IF NOT EXISTS jobs ("
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
    "  schema_drift INTEGER);";

static double wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int fail(co_store *s, sl_err *err, const char *what)
{
    return sl_err_set(err, "control database: %s: %s", what, sqlite3_errmsg(s->db));
}

co_store *co_store_open(const char *where, sl_err *err)
{
    const char *path = strncmp(where, "sqlite:", 7) == 0 ? where + 7 : where;
    if (strncmp(where, "postgresql:", 11) == 0 || strncmp(where, "postgres:", 9) == 0)
        return sl_err_set(err, "a PostgreSQL control database is not supported yet; use "
                               "--state sqlite:PATH"),
               NULL;
    co_store *s = calloc(1, sizeof *s);
    if (!s)
        return sl_err_set(err, "out of memory"), NULL;
    char *msg = NULL;
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
            SQLITE_OK ||
        sqlite3_busy_timeout(s->db, 5000) != SQLITE_OK ||
        sqlite3_exec(s->db, schema, NULL, NULL, &msg) != SQLITE_OK) {
        sl_err_set(err, "cannot open control database \"%s\": %s", path,
                   msg     ? msg
                   : s->db ? sqlite3_errmsg(s->db)
                           : "out of memory");
        sqlite3_free(msg);
        co_store_close(s);
        return NULL;
    }
    return s;
}

void co_store_close(co_store *s)
{
    if (!s)
        return;
    sqlite3_close(s->db);
    free(s);
}

/* Prepares sql; the caller binds, steps and finalizes. */
static sqlite3_stmt *prep(co_store *s, const char *sql, sl_err *err)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
        fail(s, err, "prepare");
        return NULL;
    }
    return st;
}

static int step_done(co_store *s, sqlite3_stmt *st, sl_err *err)
{
    int r = sqlite3_step(st);
    sqlite3_finalize(st);
    return r == SQLITE_DONE ? 0 : fail(s, err, "write");
}

int co_store_add_job(co_store *s, const void *spec, size_t len, const char *table, int64_t *id,
                     sl_err *err)
{
    sqlite3_stmt *st = prep(s, "INSERT INTO jobs (spec, tbl, submitted) VALUES (?1, ?2, ?3)", err);
    if (!st)
        return -1;
    sqlite3_bind_blob(st, 1, spec, (int)len, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, table, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(st, 3, wall());
    if (step_done(s, st, err))
        return -1;
    *id = sqlite3_last_insert_rowid(s->db);
    return 0;
}

int co_store_next_job(co_store *s, int64_t *id, sl_buf *spec, int *resuming, sl_err *err)
{
    sqlite3_stmt *st = prep(s,
                            "SELECT id, spec, state FROM jobs WHERE state IN ('running', 'queued') "
                            "ORDER BY state = 'running' DESC, id LIMIT 1",
                            err);
    if (!st)
        return -1;
    int r = sqlite3_step(st), rc = 0;
    if (r == SQLITE_ROW) {
        *id = sqlite3_column_int64(st, 0);
        *resuming = strcmp((const char *)sqlite3_column_text(st, 2), "running") == 0;
        sl_buf_reset(spec);
        rc = sl_buf_append(spec, sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1))
                 ? sl_err_set(err, "out of memory")
                 : 1;
    } else if (r != SQLITE_DONE) {
        rc = fail(s, err, "read jobs");
    }
    sqlite3_finalize(st);
    return rc;
}

int co_store_set_state(co_store *s, int64_t id, const char *state, const char *error,
                       const co_summary *sum, sl_err *err)
{
    int running = strcmp(state, "running") == 0;
    sqlite3_stmt *st =
        prep(s,
             "UPDATE jobs SET state = ?2, error = ?3, "
             "started = CASE WHEN ?4 THEN coalesce(started, ?5) ELSE started END, "
             "finished = CASE WHEN ?4 THEN NULL ELSE ?5 END, "
             "source_name = coalesce(?6, source_name), target_name = coalesce(?7, target_name), "
             "source_rows = coalesce(?8, source_rows), target_rows = coalesce(?9, target_rows), "
             "ranges = coalesce(?10, ranges), workers = coalesce(?11, workers), "
             "missing = coalesce(?12, missing), extra = coalesce(?13, extra), "
             "changed = coalesce(?14, changed), schema_drift = coalesce(?15, schema_drift), "
             "elapsed = coalesce(?16, elapsed), transient = coalesce(?17, transient) WHERE id = ?1",
             err);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, state, -1, SQLITE_TRANSIENT);
    if (error)
        sqlite3_bind_text(st, 3, error, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 4, running);
    sqlite3_bind_double(st, 5, wall());
    if (sum) {
        sqlite3_bind_text(st, 6, sum->source_name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 7, sum->target_name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 8, (sqlite3_int64)sum->source_rows);
        sqlite3_bind_int64(st, 9, (sqlite3_int64)sum->target_rows);
        sqlite3_bind_int64(st, 10, (sqlite3_int64)sum->ranges);
        sqlite3_bind_int64(st, 11, (sqlite3_int64)sum->workers);
        sqlite3_bind_int64(st, 12, (sqlite3_int64)sum->missing);
        sqlite3_bind_int64(st, 13, (sqlite3_int64)sum->extra);
        sqlite3_bind_int64(st, 14, (sqlite3_int64)sum->changed);
        sqlite3_bind_int64(st, 15, (sqlite3_int64)sum->schema);
        sqlite3_bind_double(st, 16, sum->elapsed);
        sqlite3_bind_int64(st, 17, (sqlite3_int64)sum->transient);
    }
    if (step_done(s, st, err))
        return -1;
    if (strcmp(state, "done") != 0 || !sum)
        return 0;
    st = prep(s,
              "INSERT INTO drift SELECT tbl, id, ?2, source_rows, target_rows, missing, extra, "
              "changed, schema_drift FROM jobs WHERE id = ?1",
              err);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_double(st, 2, wall());
    return step_done(s, st, err);
}

int co_store_save_plan(co_store *s, int64_t id, size_t n, const uint8_t *const *keys,
                       const size_t *lens, sl_err *err)
{
    if (sqlite3_exec(s->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
        return fail(s, err, "begin");
    sqlite3_stmt *st =
        prep(s, "INSERT OR REPLACE INTO ranges (job, idx, hi) VALUES (?1, ?2, ?3)", err);
    int rc = st ? 0 : -1;
    for (size_t i = 0; rc == 0 && i <= n; i++) {
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)i);
        if (i < n)
            sqlite3_bind_blob(st, 3, keys[i], (int)lens[i], SQLITE_TRANSIENT);
        else
            sqlite3_bind_null(st, 3); /* the last range is unbounded above */
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = fail(s, err, "save plan");
    }
    sqlite3_finalize(st);
    if (sqlite3_exec(s->db, rc ? "ROLLBACK" : "COMMIT", NULL, NULL, NULL) != SQLITE_OK && !rc)
        rc = fail(s, err, "commit");
    return rc;
}

int co_store_range_done(co_store *s, int64_t id, size_t range, uint64_t src_rows, uint64_t tgt_rows,
                        sl_err *err)
{
    sqlite3_stmt *st = prep(s,
                            "UPDATE ranges SET done = 1, source_rows = ?3, target_rows = ?4, "
                            "finished = ?5 WHERE job = ?1 AND idx = ?2",
                            err);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)range);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)src_rows);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)tgt_rows);
    sqlite3_bind_double(st, 5, wall());
    return step_done(s, st, err);
}

int co_store_load_plan(co_store *s, int64_t id, sl_buf *buf, size_t *nbounds, unsigned char **done,
                       uint64_t rows[2], sl_err *err)
{
    sqlite3_stmt *st = prep(s,
                            "SELECT hi, done, coalesce(source_rows, 0), coalesce(target_rows, 0) "
                            "FROM ranges WHERE job = ?1 ORDER BY idx",
                            err);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    size_t n = 0, cap = 0;
    unsigned char *d = NULL;
    int r, rc = 0;
    sl_buf_reset(buf);
    rows[0] = rows[1] = 0;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            unsigned char *nd = realloc(d, cap);
            if (!nd) {
                rc = sl_err_set(err, "out of memory");
                break;
            }
            d = nd;
        }
        d[n] = (unsigned char)sqlite3_column_int(st, 1);
        if (d[n]) {
            rows[0] += (uint64_t)sqlite3_column_int64(st, 2);
            rows[1] += (uint64_t)sqlite3_column_int64(st, 3);
        }
        if (sqlite3_column_type(st, 0) != SQLITE_NULL) {
            uint32_t len = (uint32_t)sqlite3_column_bytes(st, 0);
            if (sl_buf_append(buf, &len, 4) ||
                sl_buf_append(buf, sqlite3_column_blob(st, 0), len)) {
                rc = sl_err_set(err, "out of memory");
                break;
            }
        }
        n++;
    }
    if (rc == 0 && r != SQLITE_DONE)
        rc = fail(s, err, "read plan");
    sqlite3_finalize(st);
    if (rc || n == 0) {
        free(d);
        return rc ? -1 : 0;
    }
    *nbounds = n - 1;
    *done = d;
    return 1;
}

int co_store_ranges_done(co_store *s, int64_t id, size_t *done, size_t *total, sl_err *err)
{
    sqlite3_stmt *st =
        prep(s, "SELECT coalesce(sum(done), 0), count(*) FROM ranges WHERE job = ?1", err);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    int rc = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        *done = (size_t)sqlite3_column_int64(st, 0);
        *total = (size_t)sqlite3_column_int64(st, 1);
    } else {
        rc = fail(s, err, "read ranges");
    }
    sqlite3_finalize(st);
    return rc;
}

int co_store_add_event(co_store *s, int64_t id, const char *kind, const void *k, size_t klen,
                       const void *frame, size_t len, int *added, sl_err *err)
{
    sqlite3_stmt *st = prep(s,
                            "INSERT OR IGNORE INTO events (job, kind, k, frame, at) "
                            "VALUES (?1, ?2, ?3, ?4, ?5)",
                            err);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, kind, -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob(st, 3, k, (int)klen, SQLITE_TRANSIENT);
    sqlite3_bind_blob(st, 4, frame, (int)len, SQLITE_TRANSIENT);
    sqlite3_bind_double(st, 5, wall());
    if (step_done(s, st, err))
        return -1;
    *added = sqlite3_changes(s->db) > 0;
    return 0;
}

int co_store_count_events(co_store *s, int64_t id, co_summary *sum, sl_err *err)
{
    sqlite3_stmt *st =
        prep(s, "SELECT kind, count(*) FROM events WHERE job = ?1 GROUP BY kind", err);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    sum->missing = sum->extra = sum->changed = sum->schema = sum->transient = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *kind = (const char *)sqlite3_column_text(st, 0);
        uint64_t n = (uint64_t)sqlite3_column_int64(st, 1);
        if (!strcmp(kind, "missing-in-target"))
            sum->missing = n;
        else if (!strcmp(kind, "extra-in-target"))
            sum->extra = n;
        else if (!strcmp(kind, "changed"))
            sum->changed = n;
        else if (!strcmp(kind, "transient"))
            sum->transient = n;
        else
            sum->schema = n;
    }
    sqlite3_finalize(st);
    return 0;
}

int co_store_each_event(co_store *s, int64_t id,
                        int (*fn)(void *ctx, const void *frame, size_t len), void *ctx, sl_err *err)
{
    sqlite3_stmt *st = prep(s, "SELECT frame FROM events WHERE job = ?1 ORDER BY id", err);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    int r, rc = 0;
    while ((r = sqlite3_step(st)) == SQLITE_ROW)
        if (fn(ctx, sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0))) {
            rc = -1;
            break;
        }
    if (rc == 0 && r != SQLITE_DONE)
        rc = fail(s, err, "read events");
    sqlite3_finalize(st);
    return rc;
}

int co_store_get_job(co_store *s, int64_t id, co_job_row *out, sl_err *err)
{
    sqlite3_stmt *st = prep(s,
                            "SELECT state, coalesce(error, ''), tbl, coalesce(source_name, ''), "
                            "coalesce(target_name, ''), source_rows, target_rows, ranges, "
                            "workers, missing, extra, changed, schema_drift, elapsed, submitted, "
                            "coalesce(started, 0), coalesce(finished, 0), transient "
                            "FROM jobs WHERE id = ?1",
                            err);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    int r = sqlite3_step(st), rc = 0;
    if (r == SQLITE_ROW) {
        memset(out, 0, sizeof *out);
        out->id = id;
        snprintf(out->state, sizeof out->state, "%s", sqlite3_column_text(st, 0));
        snprintf(out->error, sizeof out->error, "%s", sqlite3_column_text(st, 1));
        snprintf(out->table, sizeof out->table, "%s", sqlite3_column_text(st, 2));
        snprintf(out->sum.source_name, sizeof out->sum.source_name, "%s",
                 sqlite3_column_text(st, 3));
        snprintf(out->sum.target_name, sizeof out->sum.target_name, "%s",
                 sqlite3_column_text(st, 4));
        out->sum.source_rows = (uint64_t)sqlite3_column_int64(st, 5);
        out->sum.target_rows = (uint64_t)sqlite3_column_int64(st, 6);
        out->sum.ranges = (size_t)sqlite3_column_int64(st, 7);
        out->sum.workers = (size_t)sqlite3_column_int64(st, 8);
        out->sum.missing = (uint64_t)sqlite3_column_int64(st, 9);
        out->sum.extra = (uint64_t)sqlite3_column_int64(st, 10);
        out->sum.changed = (uint64_t)sqlite3_column_int64(st, 11);
        out->sum.schema = (uint64_t)sqlite3_column_int64(st, 12);
        out->sum.elapsed = sqlite3_column_double(st, 13);
        out->submitted = sqlite3_column_double(st, 14);
        out->started = sqlite3_column_double(st, 15);
        out->finished = sqlite3_column_double(st, 16);
        out->sum.transient = (uint64_t)sqlite3_column_int64(st, 17);
        rc = 1;
    } else if (r != SQLITE_DONE) {
        rc = fail(s, err, "read job");
    }
    sqlite3_finalize(st);
    return rc;
}

int co_store_cancel_job(co_store *s, int64_t id, sl_err *err)
{
    sqlite3_stmt *st = prep(s,
                            "UPDATE jobs SET state = 'cancelled', finished = ?2 "
                            "WHERE id = ?1 AND state IN ('queued', 'running')",
                            err);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_double(st, 2, wall());
    return step_done(s, st, err);
}
