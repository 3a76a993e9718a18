/* store: the coordinator's control database — jobs, their plans and range
 * progress (so a restarted coordinator resumes without redoing finished
 * ranges), divergence events, drift history per table, and scheduled
 * audits. SQLite file or PostgreSQL, at a schema version it upgrades
 * itself (coordinator/README.md, "Schema versions").
 */
#ifndef STORE_H
#define STORE_H

#include <stddef.h>
#include <stdint.h>

#include "../base/sl.h"
#include "co.h"

typedef struct co_store co_store;

/* Opens (creating if needed) "sqlite:PATH", a plain path, or a
 * "postgresql://" URI, and brings its schema to the latest version in one
 * transaction. A database of a newer schema is refused ("control database
 * PATH has schema version N; this sluice supports up to M: upgrade
 * sluice"). No message holds a password. */
co_store *co_store_open(const char *where, sl_err *err);
void co_store_close(co_store *s);

/* Queues a job; spec is the submit frame, kept verbatim. */
int co_store_add_job(co_store *s, const void *spec, size_t len, const char *table, int priority,
                     int64_t *id, sl_err *err);

/* The job to run next: one left running by a previous coordinator first
 * (*resuming = 1), else the oldest queued. Returns 1 with id and spec, 0 if
 * none, -1 on error. */
int co_store_next_job(co_store *s, int64_t *id, sl_buf *spec, int *resuming, sl_err *err);

/* Up to max jobs waiting to run, in the order to start them: those left
 * running by a previous coordinator (running[i] = 1), then the queue by
 * priority (CO_PRIO_*, given at co_store_add_job), then age. */
int co_store_pending_jobs(co_store *s, int64_t *ids, int *running, size_t max, size_t *n,
                          sl_err *err);
/* The changes jobs running or queued (a follow must not take their slots
 * for orphans), at most max of them, oldest first. */
int co_store_live_changes(co_store *s, int64_t *ids, size_t max, size_t *n, sl_err *err);

/* A job's submit frame, into spec. 1, 0 if there is no such job, -1 on
 * error. */
int co_store_get_spec(co_store *s, int64_t id, sl_buf *spec, sl_err *err);

/* Sets a job's state, with why (message and code) it failed or NULL, and
 * for a finished job its summary (NULL: kept). */
int co_store_set_state(co_store *s, int64_t id, const char *state, const sl_err *why,
                       const co_summary *sum, sl_err *err);

int co_store_save_plan(co_store *s, int64_t id, size_t n, const uint8_t *const *keys,
                       const size_t *lens, sl_err *err);
int co_store_range_done(co_store *s, int64_t id, size_t range, uint64_t src_rows, uint64_t tgt_rows,
                        sl_err *err);

/* A recorded plan: nbounds keys packed in buf as [u32 len][key]..., and
 * done[] (nbounds + 1 flags, malloc'd). Returns 1 if there is one. */
int co_store_load_plan(co_store *s, int64_t id, sl_buf *buf, size_t *nbounds, unsigned char **done,
                       uint64_t rows[2], sl_err *err);

/* How many ranges of the job were compared (for tests and status). */
int co_store_ranges_done(co_store *s, int64_t id, size_t *done, size_t *total, sl_err *err);

/* Stores a divergence event of kind for key k (the encoded key, or the
 * column name for schema drift) unless the job already has it; *added
 * says whether it was new. */
int co_store_add_event(co_store *s, int64_t id, const char *kind, const void *k, size_t klen,
                       const void *frame, size_t len, int *added, sl_err *err);

/* Forgets job id's divergence events of key k (a changes job found the row
 * equal again): a later divergence of it is added anew. */
int co_store_forget_key(co_store *s, int64_t id, const void *k, size_t klen, sl_err *err);

/* Sets sum's divergence counts from the stored events. */
int co_store_count_events(co_store *s, int64_t id, co_summary *sum, sl_err *err);

/* Calls fn for each stored event frame of a job, in order. */
int co_store_each_event(co_store *s, int64_t id,
                        int (*fn)(void *ctx, const void *frame, size_t len), void *ctx,
                        sl_err *err);

typedef struct co_job_row {
    int64_t id;
    char state[16];
    char error[512];
    int error_code; /* sl_code of error; SL_OK when none */
    char table[256];
    co_summary sum;
    double submitted, started, finished; /* unix seconds; 0 if not yet */
} co_job_row;

/* Returns 1 with the job, 0 if there is no such job. */
int co_store_get_job(co_store *s, int64_t id, co_job_row *out, sl_err *err);

/* Jobs left "running" or "queued" are set to state (e.g. "cancelled"). */
int co_store_cancel_job(co_store *s, int64_t id, sl_err *err);

/* The schema version this sluice writes (and the newest it opens). */
int co_store_schema_latest(void);

/* ---- drift history: one row per audit, scrub cycle or change-verification
 * window, per table ----------------------------------------------------- */

typedef struct co_drift_row {
    char table[256];
    char kind[16];   /* "audit", "scrub", "changes" */
    int64_t job;     /* 0: none */
    double at;       /* wall-clock seconds when recorded */
    double window_s; /* the time the evidence covers */
    int64_t source_rows, target_rows, rows_checked;
    int64_t missing, extra, changed, schema; /* confirmed */
    int64_t transient;                       /* differences gone at re-check */
    double lat_p50, lat_p99, lat_max;        /* detection latency, seconds; < 0: none */
} co_drift_row;

/* Sorts v[0..n) and sets r's latency percentiles from it (nearest rank);
 * all < 0 when n is 0. */
void co_drift_latencies(double *v, size_t n, co_drift_row *r);
int co_store_drift_add(co_store *s, const co_drift_row *r, sl_err *err);
/* A job's kind ("audit" unless set: "scrub"), the kind of its drift row. */
int co_store_set_kind(co_store *s, int64_t id, const char *kind, sl_err *err);
/* fn for each row of table (NULL: every table) recorded at or after
 * since, oldest first; fn returning non-zero stops (then -1). */
typedef int (*co_drift_fn)(void *ctx, const co_drift_row *r);
int co_store_drift_each(co_store *s, const char *table, double since, co_drift_fn fn, void *ctx,
                        sl_err *err);
/* fn for the newest row of each (table, kind). */
int co_store_drift_latest(co_store *s, co_drift_fn fn, void *ctx, sl_err *err);

/* ---- scheduled audits: a submit frame queued every interval_s seconds --- */

#define CO_STORE_NAME_MAX 255 /* bytes in a schedule's name */

typedef struct co_store_schedule {
    const char *name;
    int64_t interval_s;
    const void *spec; /* a submit frame */
    size_t len;
} co_store_schedule;

/* Inserts schedule name, or replaces its interval and spec (its last job
 * is kept). 0 or -1. */
int co_store_schedule_put(co_store *s, const char *name, int64_t interval_s, const void *spec,
                          size_t len, sl_err *err);

/* The schedule file's audits, at start: puts each of v, and removes the
 * schedules an earlier start put from the file that v no longer names
 * (schedules put by co_store_schedule_put stay). One transaction. */
int co_store_schedule_sync_file(co_store *s, const co_store_schedule *v, size_t n, sl_err *err);

/* 1 if schedule name was removed, 0 if there was none, -1 on error. */
int co_store_schedule_del(co_store *s, const char *name, sl_err *err);

/* Records job as the schedule's last queued run. */
int co_store_schedule_set_last(co_store *s, const char *name, int64_t job, sl_err *err);

/* Calls fn for each schedule, by name; last_job is 0 before its first run.
 * Pointers are valid during the call only. fn returning non-zero stops
 * the walk, and each returns -1. */
typedef int (*co_store_schedule_fn)(void *ctx, const char *name, int64_t interval_s,
                                    const void *spec, size_t len, int64_t last_job);
int co_store_schedule_each(co_store *s, co_store_schedule_fn fn, void *ctx, sl_err *err);

#endif
