/* co: the coordinator. It binds a ROUTER socket for workers, and runs diff
 * jobs across them, many at once in one event loop: describe both tables (through workers: the
 * coordinator never opens a source or target database), reconcile their schemas, split the key
 * space into ranges, have each range's source and target trees built in parallel, compare them,
 * drill into differing spans down to rows and columns, and report every divergence through a
 * callback as it is found.
 */
#ifndef CO_H
#define CO_H

#include <stddef.h>
#include <stdint.h>

#include "../base/sl.h"
#include "../merkle/enc.h"

/* Most columns one diff compares, key columns included (ENC_MAX_COLS);
 * at most ENC_MAX_KEY_COLS of them form the key. */
#define CO_MAX_COLS ENC_MAX_COLS

enum co_kind {
    CO_MISSING = 1, /* row in source, not in target */
    CO_EXTRA,       /* row in target, not in source */
    CO_CHANGED,     /* same key, different values */
    CO_SCHEMA,      /* column missing on one side, or incompatible types */
};

/* A column that differs: display text of each side, NULL for SQL NULL. A
 * value too long to travel whole (proto/README.md, "Sizes") comes as its
 * first bytes only: then its *_hash is the XXH3-128 of its canonical bytes
 * (32 hex digits) and *_len their length; *_hash is NULL for a whole value. */
typedef struct co_coldiff {
    const char *column;
    const char *source, *target;
    const char *source_hash, *target_hash;
    uint64_t source_len, target_len;
} co_coldiff;

/* One divergence. Pointers are valid during the callback only. For rows:
 * key (encoded, memcmp-ordered) and key_vals (display text per key column);
 * for CO_CHANGED also cols. For CO_SCHEMA: column, detail ("missing in
 * target", ...) and the types on each side (NULL where absent). */
typedef struct co_event {
    int kind;
    const uint8_t *key;
    size_t klen;
    const char *const *key_cols;
    const char *const *key_vals;
    size_t nkey;
    const co_coldiff *cols;
    size_t ncols;
    const char *column, *detail, *source_type, *target_type;
    int64_t read_at_ms; /* wall clock when the range's rows had been read */
    int status;         /* with re-checks: CO_CONFIRMED or CO_TRANSIENT; else 0 */
    /* a row divergence's ordered run: events of one run >= 0 come in key
     * order (the index of the range that found them); -1 when they may come
     * in any order (re-check confirmations). Runs are disjoint key
     * intervals but arrive interleaved. Ignored for CO_SCHEMA. */
    long run;
    /* the callback may set *repeat when it holds this divergence already (a
     * resumed job redoing a range): --max-divergences does not count it twice */
    int *repeat;
} co_event;

enum { CO_CONFIRMED = 1, CO_TRANSIENT = 2 };

/* "missing-in-target", "extra-in-target", "changed", "schema": the names
 * reports and events use. */
const char *co_kind_name(int kind);

typedef struct co_progress {
    size_t ranges_done, ranges;
    uint64_t rows_done, rows_expected;
    /* a changes job: keys received, checked equal, waiting for a look; and
     * each side's slot lag in bytes of WAL */
    int changes;
    uint64_t keys, checked, backlog, lag[2];
    /* non-NULL while the job's range reads are paused for a replica's lag
     * (co_diff_opts.max_replica_lag_s): "replica NAME lag Xs > Ys" */
    const char *paused;
} co_progress;

/* A changes job's window (co_diff_opts.window_ms): what it looked at and
 * found. Pointers are valid during the callback only. */
typedef struct co_window {
    double length_s;  /* the window's length (the last one, at the job's end, partial) */
    uint64_t checked; /* keys looked at: equal at the first look + confirmed + transient */
    uint64_t missing, extra, changed; /* confirmed in the window */
    uint64_t transient;               /* differences gone at a re-check */
    /* the detection latency of each confirmed divergence that had a commit
     * time (seconds from its commit to its confirmation, >= 0), in no
     * order: the callback may sort it */
    double *latency;
    size_t nlatency;
    int last; /* the job is ending: no window follows */
} co_window;

typedef struct co_callbacks {
    int (*event)(void *ctx, const co_event *ev); /* non-zero aborts the job */
    void (*progress)(void *ctx, const co_progress *p);
    /* Optional: each window of a changes job as it closes, and a last
     * partial one when the job ends (done, cancelled or failed); non-zero
     * fails the job (ignored for the last). */
    int (*window)(void *ctx, const co_window *w);
    /* Optional, for a changes job: the ids of every changes job alive on
     * this coordinator, running or waiting to resume (at most cap; returns
     * how many, SIZE_MAX when it cannot tell), whose slots a follow must not
     * drop as orphans. Without it a follow drops none. */
    size_t (*live_follows)(void *ctx, int64_t *ids, size_t cap);
    /* Optional, for a changes job: a key confirmed divergent before is
     * equal again (repaired), so its next divergence is a new one, to be
     * stored and told again rather than taken for a repeat. */
    void (*resolved)(void *ctx, const uint8_t *key, size_t klen);
    /* Optional, for a job that must survive a coordinator restart: the split
     * keys once chosen, and each range once compared (non-zero aborts). */
    int (*planned)(void *ctx, size_t n, const uint8_t *const *keys, const size_t *lens);
    int (*range_done)(void *ctx, size_t range, uint64_t source_rows, uint64_t target_rows);
    void *ctx;
} co_callbacks;

typedef struct co_diff_opts {
    const char *source_db, *target_db; /* database names the workers announced */
    const char *table, *target_table;  /* target_table NULL: same as table */
    const char *const *key;            /* NULL: the source's primary key */
    size_t nkey;
    const char *const *columns; /* NULL: all common columns */
    size_t ncolumns;
    const char *const *exclude;
    size_t nexclude;
    const char *where;
    int strict; /* keep type classes in the hash */
    /* Tolerances: rules "OPTION:VALUE" (merkle/tol.h, enc_tol_rule_parse:
     * "tolerance:amount=0.005", "case-fold:", ...), resolved against the
     * compared columns when the job starts; none: every column exact. */
    const char *const *tolerances;
    size_t ntolerances;
    int rechecks;                /* re-fetch a differing key this many times before confirming */
    int settle_ms;               /* ... each time after this long */
    int64_t max_rows_per_second; /* 0: unthrottled; else the job's total read rate */
    int share;                   /* 1..100: the job's range tasks keep at most this percent
                                    of wall-clock time busy, each task's time counted (a
                                    task is one read stream), on average since its first
                                    task; 0: no share */
    int sample_bp;               /* 1..9999: compare only this many ten-thousandths of the
                                    ranges, picked at random from shuffle_seed (a sample);
                                    0: every range */
    uint64_t shuffle_seed;       /* non-zero: ranges visited in a random order drawn from it
                                    (a scrub cycle); 0: in key order */
    size_t ranges;               /* 0: chosen from worker count and table size */
    int priority;                /* CO_PRIO_*: who gets the next free worker */
    size_t max_tasks;            /* most range tasks at once; 0: no cap */
    /* A changes job (change-driven verification): no ranges; the keys
     * both sides change are followed through slots named follow_name
     * ("sluicecv_<job>", "_0"/"_1" added per side), each checked after
     * settle_ms and re-checked rechecks (>= 1) times, for duration_ms
     * (0: until cancelled); a window (callbacks.window) closes every
     * window_ms (0: 60 s). */
    int changes;
    const char *follow_name;
    int64_t duration_ms;
    int64_t window_ms;
    /* Resuming: the recorded split keys, which ranges are done (n + 1
     * flags) and the rows those counted. NULL resume_done: a new job. */
    size_t resume_nbounds;
    const uint8_t *const *resume_bounds;
    const size_t *resume_lens;
    const unsigned char *resume_done;
    uint64_t resume_rows[2];
    /* Quick answers and audits that yield to production (issue 15). */
    int keys_only;               /* a changed row is reported by key: its columns are never
                                    fetched (the drill-down stops at row hashes) */
    uint64_t max_divergences;    /* stop the job once this many row divergences are confirmed
                                    (co_summary.limit_reached); 0: no limit */
    uint64_t resume_divergences; /* resuming: row divergences recorded before the restart,
                                    counted toward max_divergences */
    double chunk_time_s;         /* > 0: a pending range expected to read for longer than
                                    this is split (a split request bounded to it) first */
    const char *const *replicas; /* databases (names the workers announced) whose
                                    replication lag is watched ... */
    size_t nreplicas;
    double max_replica_lag_s; /* ... no range task starts while one is above this */
} co_diff_opts;

typedef struct co_summary {
    uint64_t source_rows, target_rows;
    size_t ranges, workers;
    size_t sampled_ranges;                    /* a sample: the ranges compared; 0: every one */
    uint64_t missing, extra, changed, schema; /* confirmed (or all, without re-checks) */
    uint64_t transient;                       /* differences gone on a re-check */
    /* rows whose hashes differed but whose values, read again by key,
     * matched: a change in flight; on a quiet database, an alarm */
    uint64_t matched_on_fetch;
    /* rows whose hashes differed and whose values differ only within the
     * job's tolerances (neighbouring grid cells): equal, not divergent */
    uint64_t within_tolerance;
    uint64_t keys_checked; /* a changes job: changed keys found equal at their first look */
    /* dense divergence: ranges whose drill-down stopped and whose rest was
     * streamed from both sides, and the rows streamed (both sides) */
    uint64_t streamed_ranges, streamed_rows;
    /* ... of which streamed whole without trees, once the job found most
     * of its ranges dense (trees_skipped: the range tasks not sent, two a range) */
    uint64_t direct_ranges, trees_skipped;
    /* ... of which merged by one worker reading both sides (co_merge.c) */
    uint64_t merged_ranges;
    /* the drill-down's span rows (both sides) answered from the trees'
     * kept rows instead of a database read */
    uint64_t rows_from_memory;
    double elapsed;
    char source_name[256], target_name[256];
    int limit_reached;     /* stopped at co_diff_opts.max_divergences */
    size_t planned_ranges; /* ranges planned, before --chunk-time split some */
    double longest_read_s; /* the longest range task (one side's read) */
    double paused_s;       /* time the range reads were paused for replica lag */
} co_summary;

enum { CO_PRIO_LOW = 0, CO_PRIO_NORMAL = 1, CO_PRIO_HIGH = 2 };

typedef struct co co;
typedef struct co_job co_job;

/* Binds the worker socket at endpoint on zctx, as a CURVE server when
 * curve_secret (Z85) is given. NULL with err set. */
co *co_new(void *zctx, const char *endpoint, const char *curve_secret, sl_err *err);
void co_free(co *c);

/* Waits until n workers have said hello, or fails after timeout_ms. */
int co_wait_workers(co *c, size_t n, int timeout_ms, sl_err *err);

/* Runs one diff job to its end (co_job_start, then co_run until it ends).
 * 0: done (divergence or not; see summary); -1: the job could not be run
 * or finished, with err saying why. */
int co_diff(co *c, const co_diff_opts *o, const co_callbacks *cb, co_summary *sum, sl_err *err);

/* Starts a job: it runs as co_run turns. o and cb (and what they point to)
 * must outlive the job. NULL when memory runs out. */
co_job *co_job_start(co *c, const co_diff_opts *o, const co_callbacks *cb, sl_err *err);

enum co_job_state { CO_JOB_RUNNING, CO_JOB_DONE, CO_JOB_FAILED, CO_JOB_CANCELLED };

/* CO_JOB_RUNNING until the job ends; then, with sum and err filled (either
 * may be NULL), how it ended. */
int co_job_state(const co_job *j, co_summary *sum, sl_err *err);

/* Asks a job to stop: within a turn or two of the loop its workers are told
 * to release its trees (and to stop building them) and it ends
 * CO_JOB_CANCELLED. */
void co_job_cancel(co_job *j);

/* Frees an ended job (a running one is cancelled and run to its end first). */
void co_job_free(co_job *j);

/* One turn of the event loop: waits up to timeout_ms for messages, files
 * workers' replies with the jobs waiting for them, gives idle workers range
 * tasks (by priority, then fewest running), and resumes the jobs that can
 * go on. 0, or -1 when the socket fails. */
int co_run(co *c, int timeout_ms, sl_err *err);

/* A request unanswered for ms loses its worker (its work is re-issued, as
 * for a worker that died). Default 300 s; a throttled job's range tasks get
 * the time their rows need on top. */
void co_set_request_timeout(co *c, int ms);

/* Tells every known worker to stop. */
void co_shutdown_workers(co *c);

/* A worker silent for longer than ms is lost, and its work re-issued.
 * 0 (the default) never gives up on a worker. */
void co_set_heartbeat_timeout(co *c, int ms);

/* co_run calls fn(ctx) whenever sock is readable (the client socket). */
void co_set_service(co *c, void *sock, void (*fn)(void *ctx), void *ctx);

/* fn(ctx, line) is told, in one line, of each worker dropped for breaking
 * the protocol (its work goes to the others). NULL: nobody is told. */
void co_set_log(co *c, void (*fn)(void *ctx, const char *line), void *ctx);

typedef struct co_worker_view {
    int alive, busy;
    const char *const *dbs;
    size_t ndbs;
    double idle_s;  /* seconds since its last message */
    uint64_t trees; /* trees it holds, as it last said */
} co_worker_view;

/* For tests/fuzz only: takes frame as a worker's reply to a request of
 * type (MSG_SPLIT, MSG_TREE, MSG_NODES, MSG_ROWS or MSG_FETCH) in a job
 * built for the purpose (key (int, text), one more column, one range), and
 * runs it through the checks and, if they pass, the handling a job gives
 * it. 0: accepted; 1: rejected; -1: out of memory. */
int co_fuzz_reply(int type, const uint8_t *frame, size_t len);

size_t co_worker_count(const co *c);
size_t co_alive_workers(const co *c);
int co_worker_info(const co *c, size_t i, co_worker_view *out);

#endif
