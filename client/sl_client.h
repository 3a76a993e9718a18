/* sl_client: a client of a sluice coordinator, in C types.
 *
 * It speaks the client half of the protocol in proto/README.md: requests
 * over a DEALER socket to the coordinator's client endpoint (submit,
 * status, cancel, workers, schedules), and events from its PUB endpoint,
 * decoded into the structs below so that no caller touches the wire format.
 * `sluice submit/status/report/watch/workers/cancel/schedule` use it; so
 * will the control plane.
 *
 * Every call returns 0 (or the count documented) on success, -1 with err
 * set on failure; err says what is wrong in one line. A coordinator that
 * never answers is an error after the request timeout, never a hang. A
 * reply or event that does not decode is an error naming what is wrong.
 * One sl_client is used by one thread at a time.
 */
#ifndef SL_CLIENT_H
#define SL_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "../base/sl.h"

typedef struct sl_client sl_client;

typedef struct sl_client_opts {
    const char *clients_endpoint; /* required: the coordinator's client ROUTER */
    const char *events_endpoint;  /* NULL: no sl_client_watch */
    /* CURVE (optional): the coordinator's public key and this client's
     * key pair, 40-character Z85 each. The public half may be left NULL:
     * it follows from the secret (zmq_curve_public), and when given must
     * match it. Without a secret an ephemeral pair is made, which a
     * coordinator with an allowlist refuses. */
    const char *curve_server_key;
    const char *curve_public_key;
    const char *curve_secret_key;
    int timeout_ms; /* per request; 0: 5000 */
} sl_client_opts;

/* NULL with err set (a malformed key, no ZeroMQ context). Connecting is
 * lazy: an unreachable coordinator shows at the first request. */
sl_client *sl_client_new(const sl_client_opts *o, sl_err *err);
void sl_client_free(sl_client *c); /* NULL is fine */

/* ---- jobs ------------------------------------------------------------------ */

typedef enum sl_priority { SL_PRIO_LOW = -1, SL_PRIO_NORMAL = 0, SL_PRIO_HIGH = 1 } sl_priority;

/* "low", "normal", "high"; NULL for another value. */
const char *sl_priority_name(sl_priority p);
/* The priority named s: 0, or -1 if s is not low, normal or high. */
int sl_priority_parse(const char *s, sl_priority *out);

/* What a job compares, as `sluice submit` takes it. Strings and lists are
 * the caller's; zero-initialised fields mean the coordinator's defaults. */
typedef struct sl_job_spec {
    const char *source, *target;      /* database names the workers announced */
    const char *table, *target_table; /* target_table NULL: the same name */
    const char *const *key;           /* NULL: the source's primary key */
    size_t nkey;
    const char *const *columns; /* NULL: all common columns */
    size_t ncolumns;
    const char *const *exclude;
    size_t nexclude;
    const char *where; /* SQL run on both sides; NULL: none */
    int strict;
    size_t ranges; /* 0: the coordinator chooses */
    int rechecks;
    int settle_ms;
    int64_t max_rows_per_second; /* 0: unthrottled */
    int share;                   /* 1..100: percent of wall-clock time the job's range reads
                                    may keep busy (co_diff_opts.share); 0: none (not sent) */
    sl_priority priority;        /* sent only when not normal */
    int64_t max_tasks;           /* tasks of this job at once; 0: no cap (not sent) */
    int scrub;                   /* a scrub cycle: ranges in a random order (shuffle_seed) */
    int sample_bp;               /* 1..9999: a sample of that many 1/10000 of the ranges */
    uint64_t shuffle_seed;       /* with scrub; its low 63 bits are sent (0 taken as 1) */
    int changes;                 /* change-driven verification (kind "changes"): the keys both
                                    sides change are checked as they change; needs rechecks >= 1 */
    int64_t duration_ms;         /* with changes: how long; 0: until cancelled */
    int64_t window_ms;           /* with changes: a drift row every window_ms; 0: the
                                    coordinator's default (60 s) */
    /* tolerance rules, "OPTION:VALUE" (merkle/tol.h; sluice diff --help):
     * "tolerance:amount=0.005", "timestamp-precision:ms", "case-fold:" ... */
    const char *const *tolerances;
    size_t ntolerances; /* 0: every column exact (not sent) */
    /* issue 15 (co_diff_opts); each sent only when set */
    int keys_only;               /* changed rows by key: columns never read */
    uint64_t max_divergences;    /* stop once this many are confirmed; 0: no limit */
    int64_t chunk_time_ms;       /* split pending ranges longer to read than this; 0: off */
    const char *const *replicas; /* database names whose replication lag pauses range reads */
    size_t nreplicas;
    int64_t max_replica_lag_ms; /* ... above this */
} sl_job_spec;

/* Builds the submit frame of spec into out (reset first): the one format
 * `sluice submit` sends and a coordinator's schedule file stores. Checks
 * that source, target and table are given. */
int sl_client_spec_frame(const sl_job_spec *spec, sl_buf *out, sl_err *err);

/* Submits a job; *job gets its id. */
int sl_client_submit(sl_client *c, const sl_job_spec *spec, int64_t *job, sl_err *err);
/* Submits a frame sl_client_spec_frame built (or one stored earlier). */
int sl_client_submit_frame(sl_client *c, const void *frame, size_t len, int64_t *job, sl_err *err);

typedef enum sl_job_state {
    SL_JOB_UNKNOWN = 0, /* a state this client does not know (see state_name) */
    SL_JOB_QUEUED,
    SL_JOB_RUNNING, /* events also say "resumed": running again after a restart */
    SL_JOB_DONE,
    SL_JOB_FAILED,
    SL_JOB_CANCELLED
} sl_job_state;

/* Whether a job in state s will change no more (done, failed, cancelled). */
int sl_job_state_is_final(sl_job_state s);

typedef struct sl_event sl_event;

/* A job's state and summary (the status reply). Counts are the confirmed
 * divergences (all of them without re-checks); transient ones apart. */
typedef struct sl_job_status {
    int64_t job;
    sl_job_state state;
    char state_name[32];
    char error[1024];                   /* "" unless failed */
    int error_code;                     /* its sl_code: map this, not the text */
    char table[256], target_table[256]; /* target_table "" when the same */
    char source[256], target[256];      /* display names of the databases */
    uint64_t source_rows, target_rows;
    uint64_t ranges, ranges_done, workers;
    uint64_t changed, missing, extra, schema, transient;
    int64_t elapsed_ms, submitted_ms, finished_ms;
    sl_priority priority; /* normal when the coordinator does not say */
    /* the job's --keys-only and --max-divergences (0: none), and while its
     * range reads are paused for a replica's lag, why ("" otherwise) */
    int keys_only;
    uint64_t max_divergences;
    char paused[320];
    /* with_events: every divergence stored for the job, in order. */
    sl_event *events;
    size_t nevents;
} sl_job_status;

/* Fills out (free it with sl_job_status_free, also after an error). */
int sl_client_status(sl_client *c, int64_t job, int with_events, sl_job_status *out, sl_err *err);
void sl_job_status_free(sl_job_status *s);

/* Cancels a queued or running job. An unknown job, or one already
 * finished ("job N already finished (done); nothing to cancel"), is an
 * error: the coordinator is asked for the job's state before and after. */
int sl_client_cancel(sl_client *c, int64_t job, sl_err *err);

/* ---- workers and schedules ------------------------------------------------ */

typedef struct sl_worker_info {
    int64_t slot;
    int alive, busy;
    int64_t idle_ms; /* since the coordinator last heard from it */
    char **dbs;      /* the databases it reaches */
    size_t ndbs;
    int64_t trees; /* trees it holds; -1 when the coordinator does not say */
} sl_worker_info;

/* The coordinator's worker slots, into a malloc'd *out of *n. */
int sl_client_workers(sl_client *c, sl_worker_info **out, size_t *n, sl_err *err);
void sl_worker_info_free(sl_worker_info *v, size_t n);

typedef struct sl_schedule_info {
    char *name;
    int64_t interval_s;
    char *table;
    int64_t last_job; /* 0: not run yet */
} sl_schedule_info;

/* Adds, or replaces, the audit called name: spec submitted every
 * interval_s seconds (not while its previous run is queued or running). */
int sl_client_schedule_add(sl_client *c, const char *name, int64_t interval_s,
                           const sl_job_spec *spec, sl_err *err);
/* Removes it; *removed (may be NULL) says whether there was one. */
int sl_client_schedule_del(sl_client *c, const char *name, int *removed, sl_err *err);
int sl_client_schedules(sl_client *c, sl_schedule_info **out, size_t *n, sl_err *err);
void sl_schedule_info_free(sl_schedule_info *v, size_t n);

/* ---- events ---------------------------------------------------------------- */

typedef enum sl_event_type { SL_EV_DIVERGENCE = 1, SL_EV_PROGRESS, SL_EV_JOB } sl_event_type;

/* The same numbers as the coordinator's co_kind. */
typedef enum sl_div_kind {
    SL_DIV_MISSING = 1, /* "missing-in-target" */
    SL_DIV_EXTRA,       /* "extra-in-target" */
    SL_DIV_CHANGED,     /* "changed" */
    SL_DIV_SCHEMA       /* "schema" */
} sl_div_kind;

typedef enum sl_div_status {
    SL_DIV_UNCHECKED = 0, /* no re-checks asked */
    SL_DIV_CONFIRMED,
    SL_DIV_TRANSIENT
} sl_div_status;

typedef struct sl_key_value {
    char *column, *value; /* value NULL for SQL NULL */
} sl_key_value;

/* A column that differs: display text of each side (NULL for SQL NULL).
 * A value too long to travel whole comes cut: *_hash is then the XXH3-128
 * of its canonical bytes (32 hex digits) and *_len their length; *_hash is
 * NULL for a whole value. */
typedef struct sl_column_diff {
    char *column, *source, *target;
    char *source_hash, *target_hash;
    uint64_t source_len, target_len;
} sl_column_diff;

struct sl_event {
    sl_event_type type;
    int64_t job;
    int64_t at_ms; /* wall clock when published */
    /* SL_EV_DIVERGENCE */
    sl_div_kind kind;
    const char *kind_name; /* "changed", ...: a static string */
    sl_div_status status;
    int64_t read_at_ms; /* when the range's rows had been read */
    uint8_t *k;         /* rows: the encoded key (sorts as the databases do) */
    size_t klen;        /* ... and its length */
    sl_key_value *key;  /* rows: key column = value, in key order */
    size_t nkey;
    sl_column_diff *cols; /* changed rows */
    size_t ncols;
    char *column, *problem;          /* schema: "note", "missing in target" */
    char *source_type, *target_type; /* schema: NULL where absent */
    /* SL_EV_PROGRESS */
    uint64_t ranges_done, ranges, rows_done;
    /* ... of a changes job: keys received, found equal, waiting; slot lags (bytes) */
    uint64_t keys, checked, backlog, lag_source, lag_target;
    /* SL_EV_JOB */
    sl_job_state state;
    char *state_name; /* as sent: "queued", "running", "resumed", ... */
    char *error;      /* NULL unless failed */
    int error_code;   /* its sl_code (SL_OK when none): map this, not the text */
};

/* Decodes one event frame (an `event` message) into ev, which owns what
 * it points to afterwards: free it with sl_event_free (also after an
 * error). A frame that is not a well-formed event is an error saying
 * which field is wrong. */
int sl_event_decode(const void *frame, size_t len, sl_event *ev, sl_err *err);
void sl_event_free(sl_event *ev);

/* Subscribes to the events of job (0: all jobs). Needs events_endpoint. */
int sl_client_watch(sl_client *c, int64_t job, sl_err *err);
/* Waits up to timeout_ms (-1: until one comes or a signal interrupts)
 * for the next event of the watched job(s). 1: *ev holds it (free it with
 * sl_event_free); 0: none in time, or a signal came; -1: err says why (a
 * malformed event among them: the client stays usable, the next call
 * reads on). */
int sl_client_next_event(sl_client *c, int timeout_ms, sl_event *ev, sl_err *err);

#endif
