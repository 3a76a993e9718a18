/* store: a fresh control database is created at the latest schema version,
 * a version 1 one (the tables as the sluice before versions made them) is
 * upgraded with its rows, a newer one is refused in one line; schedules are
 * put, replaced (keeping their last job), listed by name, removed, and the
 * schedule file's are kept in step with the file. SQLite files in a
 * temporary directory. */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../coordinator/store.h"
#include "tap.h"

static char dir[] = "/tmp/sluice-test-store-XXXXXX";

static int sql(const char *path, const char *text)
{
    sqlite3 *db;
    int rc = sqlite3_open(path, &db) == SQLITE_OK &&
             sqlite3_exec(db, text, NULL, NULL, NULL) == SQLITE_OK;
    sqlite3_close(db);
    return rc;
}

static long long one_int(const char *path, const char *text)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    long long v = -1;
    if (sqlite3_open(path, &db) == SQLITE_OK &&
        sqlite3_prepare_v2(db, text, -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return v;
}

typedef struct seen {
    char names[8][64];
    int64_t every[8], last[8];
    size_t n;
} seen;

static int take(void *ctx, const char *name, int64_t interval_s, const void *spec, size_t len,
                int64_t last_job)
{
    seen *s = ctx;
    (void)spec;
    (void)len;
    if (s->n < 8) {
        snprintf(s->names[s->n], sizeof s->names[0], "%s", name);
        s->every[s->n] = interval_s;
        s->last[s->n++] = last_job;
    }
    return 0;
}

static seen list(co_store *s)
{
    seen x;
    memset(&x, 0, sizeof x);
    sl_err e;
    if (co_store_schedule_each(s, take, &x, &e))
        x.n = 99;
    return x;
}

typedef struct drift_seen {
    size_t n;
    double at[8];
    co_drift_row first;
} drift_seen;

static int take_drift_row(void *ctx, const co_drift_row *r)
{
    drift_seen *d = ctx;
    if (d->n == 0)
        d->first = *r;
    if (d->n < 8)
        d->at[d->n] = r->at;
    d->n++;
    return 0;
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    char path[256], where[300];
    sl_err e = {0};
    int latest = co_store_schema_latest();
    ok(latest >= 2, "the latest schema version is %d", latest);

    /* fresh */
    snprintf(path, sizeof path, "%s/fresh.db", dir);
    snprintf(where, sizeof where, "sqlite:%s", path);
    co_store *s = co_store_open(where, &e);
    ok(s != NULL, "a fresh database opens: %s", s ? "" : e.msg);
    co_store_close(s);
    ok(one_int(path, "SELECT version FROM sluice_schema") == latest,
       "a fresh database is created at the latest version");

    /* version 1, with a job */
    snprintf(path, sizeof path, "%s/v1.db", dir);
    snprintf(where, sizeof where, "sqlite:%s", path);
    ok(sql(path, "CREATE TABLE jobs (id INTEGER PRIMARY KEY, spec BLOB NOT NULL, tbl TEXT NOT "
                 "NULL, state TEXT NOT NULL DEFAULT 'queued', error TEXT, submitted REAL NOT "
                 "NULL, started REAL, finished REAL, source_name TEXT, target_name TEXT, "
                 "source_rows INTEGER DEFAULT 0, target_rows INTEGER DEFAULT 0, ranges INTEGER "
                 "DEFAULT 0, workers INTEGER DEFAULT 0, missing INTEGER DEFAULT 0, extra INTEGER "
                 "DEFAULT 0, changed INTEGER DEFAULT 0, schema_drift INTEGER DEFAULT 0, "
                 "transient INTEGER DEFAULT 0, elapsed REAL DEFAULT 0);"
                 "INSERT INTO jobs (id, spec, tbl, state, submitted, changed) "
                 "VALUES (7, x'00', 'orders', 'done', 1.5, 3);"),
       "a version 1 database (with only its jobs table, as a half created one)");
    s = co_store_open(where, &e);
    ok(s != NULL, "it opens: %s", s ? "" : e.msg);
    co_job_row row;
    ok(s && co_store_get_job(s, 7, &row, &e) == 1 && !strcmp(row.state, "done") &&
           row.sum.changed == 3 && !strcmp(row.table, "orders"),
       "its job is still there, with its results");
    co_store_close(s);
    ok(one_int(path, "SELECT version FROM sluice_schema") == latest &&
           one_int(path, "SELECT count(*) FROM sqlite_master WHERE name IN ('ranges', 'events', "
                         "'drift', 'schedules')") == 4 &&
           one_int(path, "SELECT count(*) FROM jobs WHERE priority = 'normal'") == 1,
       "it is upgraded: the missing version 1 tables, schedules, jobs.priority");

    /* newer */
    ok(sql(path, "UPDATE sluice_schema SET version = 99"), "its version set to 99");
    memset(&e, 0, sizeof e);
    s = co_store_open(where, &e);
    char want[512];
    snprintf(want, sizeof want,
             "control database %s has schema version 99; this sluice supports up to %d: "
             "upgrade sluice",
             path, latest);
    ok(!s && !strcmp(e.msg, want), "a newer one is refused: %s", e.msg);
    co_store_close(s);
    ok(one_int(path, "SELECT version FROM sluice_schema") == 99, "and left as it was");

    /* schedules */
    snprintf(where, sizeof where, "sqlite:%s/fresh.db", dir);
    s = co_store_open(where, &e);
    ok(s && co_store_schedule_put(s, "b", 60, "x", 1, &e) == 0 &&
           co_store_schedule_put(s, "a", 5, "y", 1, &e) == 0,
       "two schedules put");
    seen x = list(s);
    ok(x.n == 2 && !strcmp(x.names[0], "a") && !strcmp(x.names[1], "b") && x.every[1] == 60 &&
           x.last[0] == 0,
       "listed by name, with no last job");
    ok(co_store_schedule_set_last(s, "b", 42, &e) == 0 &&
           co_store_schedule_put(s, "b", 30, "z", 1, &e) == 0,
       "b ran as job 42, then was replaced");
    x = list(s);
    ok(x.n == 2 && x.every[1] == 30 && x.last[1] == 42, "a replaced schedule keeps its last job");
    char longname[300];
    memset(longname, 'n', 256);
    longname[256] = 0;
    ok(co_store_schedule_put(s, longname, 5, "y", 1, &e) < 0 && strstr(e.msg, "255"),
       "a name over 255 bytes is refused: %s", e.msg);
    co_store_schedule f1[] = {{"f1", 3600, "s", 1}, {"f2", 3600, "s", 1}};
    ok(co_store_schedule_sync_file(s, f1, 2, &e) == 0 && list(s).n == 4, "the file's two added");
    ok(co_store_schedule_set_last(s, "f1", 9, &e) == 0 &&
           co_store_schedule_sync_file(s, f1, 1, &e) == 0,
       "the file again, without f2");
    x = list(s);
    ok(x.n == 3 && !strcmp(x.names[2], "f1") && x.last[2] == 9,
       "f2 is gone, f1 kept its last job, the clients' stay");
    ok(co_store_schedule_sync_file(s, NULL, 0, &e) == 0 && list(s).n == 2,
       "no file: no file schedules");
    ok(co_store_schedule_del(s, "a", &e) == 1 && co_store_schedule_del(s, "a", &e) == 0,
       "del: 1, then 0");
    x = list(s);
    ok(x.n == 1 && !strcmp(x.names[0], "b"), "one left");
    co_store_close(s);

    /* drift history */
    snprintf(where, sizeof where, "sqlite:%s/drift.db", dir);
    s = co_store_open(where, &e);
    ok(s != NULL, "open a store for drift rows: %s", s ? "" : e.msg);
    double lat[] = {0.9, 0.2, 3.5, 0.4, 0.1};
    co_drift_row r = {.table = "orders",
                      .kind = "audit",
                      .job = 5,
                      .at = 100,
                      .window_s = 2,
                      .source_rows = 1000,
                      .target_rows = 999,
                      .rows_checked = 1000,
                      .missing = 1,
                      .changed = 4,
                      .transient = 2};
    co_drift_latencies(lat, 5, &r);
    ok(r.lat_p50 == 0.4 && r.lat_p99 == 3.5 && r.lat_max == 3.5,
       "latencies by nearest rank: p50 %.1f p99 %.1f max %.1f", r.lat_p50, r.lat_p99, r.lat_max);
    co_drift_row none = {0};
    co_drift_latencies(NULL, 0, &none);
    ok(none.lat_p50 < 0 && none.lat_p99 < 0 && none.lat_max < 0, "no divergence: no latency");
    ok(s && co_store_drift_add(s, &r, &e) == 0, "a drift row is added: %s", e.msg);
    co_drift_row r2 = {.table = "orders",
                       .kind = "scrub",
                       .at = 200,
                       .rows_checked = 50,
                       .lat_p50 = -1,
                       .lat_p99 = -1,
                       .lat_max = -1};
    co_drift_row r3 = {.table = "items",
                       .kind = "audit",
                       .job = 6,
                       .at = 300,
                       .rows_checked = 7,
                       .lat_p50 = -1,
                       .lat_p99 = -1,
                       .lat_max = -1};
    co_drift_row r4 = r;
    r4.at = 400;
    r4.changed = 0;
    ok(s && co_store_drift_add(s, &r2, &e) == 0 && co_store_drift_add(s, &r3, &e) == 0 &&
           co_store_drift_add(s, &r4, &e) == 0,
       "three more: %s", e.msg);
    drift_seen d = {0};
    ok(s && co_store_drift_each(s, "orders", 0, take_drift_row, &d, &e) == 0 && d.n == 3 &&
           d.at[0] == 100 && d.at[1] == 200 && d.at[2] == 400,
       "orders' rows, oldest first (%zu)", d.n);
    ok(d.first.job == 5 && !strcmp(d.first.kind, "audit") && d.first.rows_checked == 1000 &&
           d.first.missing == 1 && d.first.changed == 4 && d.first.transient == 2 &&
           d.first.window_s == 2 && d.first.lat_p50 == 0.4 && d.first.lat_max == 3.5,
       "a row reads back as written");
    memset(&d, 0, sizeof d);
    ok(s && co_store_drift_each(s, "orders", 150, take_drift_row, &d, &e) == 0 && d.n == 2 &&
           d.first.lat_p50 < 0,
       "since a time; a row without latencies reads back without (%zu)", d.n);
    memset(&d, 0, sizeof d);
    ok(s && co_store_drift_each(s, NULL, 0, take_drift_row, &d, &e) == 0 && d.n == 4,
       "every table");
    memset(&d, 0, sizeof d);
    ok(s && co_store_drift_latest(s, take_drift_row, &d, &e) == 0 && d.n == 3 && d.at[0] == 300 &&
           d.at[1] == 400 && d.at[2] == 200,
       "the newest row of each table and kind");

    /* a changes job's repaired key: its divergences of every kind are
     * forgotten, so the next one is stored (added) and counted again */
    static const char *const kinds[] = {"missing-in-target", "extra-in-target", "changed"};
    int added = 0, all = 1;
    for (int i = 0; i < 3; i++)
        all &= s && co_store_add_event(s, 42, kinds[i], "k1", 2, "f", 1, &added, &e) == 0 && added;
    ok(all && co_store_forget_key(s, 42, "k1", 2, &e) == 0, "three kinds stored, then forgotten");
    co_summary had;
    memset(&had, 0, sizeof had);
    ok(co_store_count_events(s, 42, &had, &e) == 0 && had.missing == 0 && had.extra == 0 &&
           had.changed == 0,
       "a forgotten key counts as none of its kinds (%llu missing, %llu extra, %llu changed)",
       (unsigned long long)had.missing, (unsigned long long)had.extra,
       (unsigned long long)had.changed);
    ok(co_store_add_event(s, 42, "missing-in-target", "k1", 2, "f", 1, &added, &e) == 0 && added,
       "its next missing-in-target divergence is stored again");
    co_store_close(s);

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", dir);
    return done_testing();
}
