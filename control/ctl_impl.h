/* ctl's insides, shared by ctl_*.c only. */
#ifndef CTL_IMPL_H
#define CTL_IMPL_H

#include <jansson.h>
#include <pthread.h>

#include "ctl.h"
#include "haproxy.h"
#include "manifest.h"
#include "pgadmin.h"
#include "router.h"
#include "webhook.h"

#define CTL_MAX_GATES 16
#define CTL_MAX_JOBS 64
#define CTL_HISTORY 360

enum mig_state { MS_RUNNING = 0, MS_WAITING, MS_ABORTED, MS_COMPLETED };

typedef struct gate {
    char name[48];
    int ok;
    char detail[384];
} gate;

/* A validation job the runner submitted and still follows. */
enum vkind { VK_GATE = 0, VK_AUDIT, VK_SAMPLE, VK_CHANGES };
typedef struct vjob {
    int64_t job;
    int kind;  /* enum vkind */
    int table; /* index into the manifest's tables */
    int64_t submitted_ms;
    int64_t divergent; /* confirmed divergences seen in its events */
} vjob;

typedef struct hist {
    int64_t at_ms;
    int64_t divergent;
    double lag;
} hist;

typedef struct mig {
    ct_manifest *m;
    char *manifest_json;
    /* where it is */
    int phase_idx;        /* index into m->phases */
    int state;            /* enum mig_state */
    char waiting_for[64]; /* MS_WAITING: "phase backfill", "cutover step 100" */
    int entered;          /* the phase's entry actions are done */
    int64_t phase_started_ms;
    /* classification */
    int classified;
    ct_class cls;
    char cls_reason[640];
    ct_strategy strategy;
    /* traffic */
    int64_t routing_version;
    int read_pct;
    char reads[8], writes[8];
    int step_idx; /* cutover: index of the step applied, -1 none */
    int64_t step_started_ms;
    char router_error[600]; /* the last failure to steer, "" when none */
    /* evidence */
    gate gates[CTL_MAX_GATES]; /* the last pass's, published whole at its end */
    size_t ngates;
    int64_t gates_epoch;          /* the epoch they were evaluated in */
    gate building[CTL_MAX_GATES]; /* the pass under way's */
    size_t nbuilding;
    int64_t evidence_since_ms; /* validations submitted before (another phase, step or
                                  routing) do not count towards validation_green */
    int step_approved;         /* the last cutover step was approved; it runs when the
                                  window is open and the gates are green */
    int64_t writes_moved_ms;   /* writes sent to the target (cutover or cleanup) */
    int hb;                    /* lag from a heartbeat table (ct_pg_heartbeat_*); 0: LSNs */
    int writes_cut;            /* the write cutover ran: reverse replication carries the
                                  target's writes to the source */
    double write_pause_s;      /* the write pause it measured, < 0 none */
    int cut_stage;             /* how far a write cutover in progress got, saved before
                                  each step that cannot simply be left: CUT_* */
    uint64_t flip_lsn;         /* the source's LSN seen after that; dropped once applied */
    uint64_t confirmed_lsn;    /* the subscriber's, as last read */
    int64_t submit_after_ms;   /* after a failed submit, none before this */
    int64_t resumed_ms;        /* when this process loaded it (stale-validation baseline) */
    int64_t gates_ms;
    int64_t divergent;     /* confirmed divergent rows, latest validation per table */
    int64_t *table_div;    /* per table: that figure; -1 not validated yet */
    int64_t *table_div_at; /* ... and when the job that told it was submitted: an older
                              job's end never overwrites a newer job's finding */
    /* per table: divergences the changes job confirmed, and when the last
     * one reached us (our clock): an audit submitted after it tells the
     * table's figure anew, an older one leaves them counted */
    int64_t *table_cdiv, *table_cdiv_at;
    int64_t first_div_read_ms; /* when the first divergence over the threshold was read */
    char div_examples[512];
    double lag_s;
    int lag_known;
    ct_lag_clock lagc;
    int copy_done;
    char schema_problem[640];
    int64_t last_val_job;
    int last_val_kind, last_val_table, last_val_equal;
    int64_t last_val_ms;
    int64_t shadow_compared, shadow_mismatched;
    int64_t shadow_last_ms;  /* when results were last posted */
    json_t *shadow_examples; /* the last few posted */
    /* validation bookkeeping */
    vjob jobs[CTL_MAX_JOBS];
    size_t njobs;
    int64_t last_audit_ms, last_sample_ms;
    /* change-driven verification (metrics.verify_changes): a "changes" job
     * a table while the phase validates continuously; a failed one is
     * submitted again after changes_retry_ms */
    int64_t changes_retry_ms;
    char changes_error[256];
    size_t sample_next;
    int64_t gate_round_ms;  /* the gate audit round of this phase started (0: none) */
    int64_t *gate_job;      /* per table: the job of this round, 0 none, -1 done equal, -2 done
                               unequal/failed */
    int64_t phase_bad_vals; /* validations finished unequal or failed in this phase */
    int64_t phase_good_vals;
    int64_t green_since_ms;
    /* aggregation audit */
    int agg_ok;
    char agg_detail[640];
    int64_t agg_ms;
    /* replication */
    int repl_created, repl_dropped;
    /* abort */
    char abort_reason[1024];
    double detection_s, rollback_s; /* < 0: none */
    int64_t aborted_ms;             /* when the abort was decided */
    int route_pending;              /* the router has not confirmed the abort yet */
    int route_applied;              /* this process has steered the router (then it checks it) */
    int route_owed; /* the route from the store could not be set at start: retried each pass */
    int aborts;
    int sealed;
    /* dry run */
    json_t *dry_report;
    int64_t created_ms, updated_ms;
    hist history[CTL_HISTORY];
    size_t nhist, hhead;
    int dirty;          /* changed since last saved */
    int64_t epoch;      /* +1 at every transition, approval and abort */
    int64_t pass_epoch; /* the runner's pass started at this epoch */
    /* the runner's own (no lock needed: only the runner thread uses them) */
    ct_db *src, *dst;
    int64_t schema_ms, facts_ms;
    /* since when the target, or HAProxy's runtime API, has not answered
     * (0 while they do), and the last look at HAProxy */
    int64_t target_down_ms, router_down_ms, router_check_ms, router_ok_ms;
    char target_down_why[512], router_down_why[512];
    int64_t dry_audit_ms[64]; /* dry run: how long each table's audit took */
} mig;

typedef struct ctl_store ctl_store; /* opaque: ctl_store.c */

enum { CUT_NONE, CUT_FORWARD_OFF, CUT_REVERSE_ON }; /* mig.cut_stage */

struct ctl {
    pthread_mutex_t mu;
    pthread_cond_t routing_cv; /* broadcast on every routing change */
    ctl_store *store;          /* the control database (ctl_store.c) */
    ctl_db_entry *dbs;
    size_t ndbs;
    ctl_token *tokens;
    size_t ntokens;
    char *strings; /* copies of the option strings */
    sl_client_opts copts;
    sl_client *client; /* the runner's */
    ct_haproxy *haproxy;
    ct_webhook *webhook;
    char *dashboard_dir;
    int tick_ms;
    char crash_at[16]; /* ctl_opts.crash_at, "" none */
    void (*log)(void *ctx, const char *line);
    void *log_ctx;
    mig **migs;
    size_t nmigs;
    struct MHD_Daemon *httpd;
    int http_port;
    int64_t started_ms;
};

/* ---- ctl_store.c ---- */
/* where: "sqlite:PATH", a bare path (SQLite), or a PostgreSQL DSN
 * ("postgresql://...", "postgres://...", "host=... dbname=..."). Creates
 * or upgrades the schema; refuses a newer one. Errors never hold the
 * password. ctl_store_close frees c->store even after a failed open. */
int ctl_store_open(ctl *c, const char *where, sl_err *err);
void ctl_store_close(ctl *c);
int ctl_store_load(ctl *c, sl_err *err);
int ctl_store_save(ctl *c, mig *g, sl_err *err); /* manifest + state */
/* An audit event: kind "transition", "gate", "abort", "approve", ...
 * detail a JSON object (stolen). Also sent to the webhook. */
int ctl_event(ctl *c, mig *g, const char *actor, const char *kind, json_t *detail);
/* A validation result (detail stolen). */
int ctl_store_validation(ctl *c, mig *g, const char *kind, const char *table, int64_t job,
                         int equal, json_t *detail);
json_t *ctl_store_events(ctl *c, const char *id, int64_t limit);
json_t *ctl_store_validations(ctl *c, const char *id);

/* ---- ctl_mig.c ---- */
mig *mig_new(ct_manifest *m, char *manifest_json);
void mig_free(mig *g);
mig *ctl_find(ctl *c, const char *id);
ct_phase mig_phase(const mig *g);
void mig_classify(mig *g, const ct_side_facts *src, const ct_side_facts *dst);
const char *mig_state_name(int s);
json_t *mig_state_json(const mig *g);      /* what the store keeps */
int mig_state_load(mig *g, json_t *state); /* and back */
json_t *mig_status(ctl *c, const mig *g);  /* the status document */
json_t *mig_routing(const mig *g);
void mig_sample(mig *g); /* one history point */
/* Points traffic (reads pct/kind, writes) and tells the router; confirms
 * and returns the ms it took, -1 when the router failed (router_error). */
int64_t mig_route(ctl *c, mig *g, const char *reads, int pct, const char *writes);
/* Abort: traffic and writes back to the source. Caller holds mu. */
void mig_abort(ctl *c, mig *g, const char *actor, const char *reason, int64_t detected_from_ms);
/* Repairs s in place for JSON: an invalid or cut UTF-8 byte becomes '?'. */
void ctl_utf8_fix(char *s);
/* ctl_utf8_fix on every text field of g. */
void mig_fix_text(mig *g);
void ctl_logf(ctl *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
char *ctl_iso(int64_t ms, char *buf, size_t len);
const char *ctl_dsn(ctl *c, const char *name);

/* ---- ctl_cutover.c ---- */
/* sluice_<id><suffix> as a slot, subscription and publication name. */
void repl_name_sfx(const mig *g, const char *suffix, char *out, size_t len);
/* The tables a publication of g carries: the manifest's, and the
 * heartbeat's (public.<hb>, written into hb) when g has one. */
size_t pub_tables(const mig *g, const char **out, char *hb, size_t hblen);
/* The write cutover (cdc behind HAProxy), lock held; src and dst are the
 * runner's connections. 0, or -1 with why (everything put back). */
int mig_write_cutover(ctl *c, mig *g, ct_db *src, ct_db *dst, char *why, size_t len);
/* After a write cutover: writes held, the reverse stream drained into the
 * source, traffic back on the source. note says what did not drain. */
int mig_write_rollback(ctl *c, mig *g, char *note, size_t len);
/* A write cutover the process died in (cut_stage saved): undone when it
 * had not started reverse replication, finished (writes to the target)
 * when it had. Called at start, before the router is set from the store;
 * -1 with why set when it could not be undone (the caller aborts). */
int mig_cutover_recover(ctl *c, mig *g, char *why, size_t len);

/* ---- ctl_runner.c ---- */
void runner_pass(ctl *c, mig *g);
/* POST advance: 0 moved, 1 gates failed (*gates_out set), -1 with err (illegal). Holds mu. */
int mig_advance(ctl *c, mig *g, const char *actor, json_t **gates_out, sl_err *err);
int mig_approve(ctl *c, mig *g, const char *actor, sl_err *err);
void mig_shadow(ctl *c, mig *g, int64_t compared, int64_t mismatched, json_t *examples);

/* ---- ctl_http.c ---- */
char *metrics_text(ctl *c);
void ctl_http_stop(ctl *c); /* wakes long polls, stops the daemon */

#endif
