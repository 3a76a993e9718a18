/* co_impl.h: the coordinator's insides, shared by its own files (co_*.c)
 * and by tests/test_coordinator.c. NOT a public header: nothing else may
 * include it, and nothing here is a promise to callers; co.h is the API.
 * Files:
 *   co_workers.c  registry and transport: workers come, go, are dropped; requests go out
 *   co_plan.c     describe both tables, reconcile their schemas, split the key space
 *   co_compare.c  compare a range's trees and drill down to spans, rows and columns
 *   co_recheck.c  the re-check queue (--rechecks, --settle)
 *   co_loop.c     the event loop: jobs' fibers, replies filed, range tasks dispatched
 *   co_stream.c   dense divergence: a range's rows streamed from both sides and merged
 *   co_fuzz.c     one reply through a job's checks without sockets, for the fuzzer
 */
#ifndef CO_IMPL_H
#define CO_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "../merkle/enc.h"
#include "../merkle/mk_diff.h"
#include "../merkle/tol.h"
#include "../proto/msg.h"
#include "co.h"
#include "fiber.h"

#define CO_MAX_WORKERS 256 /* connected at once; a lost worker's slot is reused */
#define CO_MAX_REJECTED 64 /* dropped connections remembered (co.rejected_ids) */
/* Columns of a described table: SQLite's hard limit (PostgreSQL's is
 * 1600); only the compared ones count against CO_MAX_COLS (co.h). */
#define CO_MAX_TABLE_COLS 32767
#define CO_ROWS_PER_RANGE 200000 /* caps a tree's memory on the worker */
#define CO_MAX_RETRIES 20
#define CO_LOST (-2) /* a worker went away: redo its work elsewhere */
/* co_dispatch's task number of a merge task (range | CO_MERGE_TASK) */
#define CO_MERGE_TASK ((size_t)1 << (sizeof(size_t) * 8 - 2))
/* 1 in this many rows of a drilled range differing (0.5%) makes it dense
 * for the job when merge tasks can be had (co_compare_range) */
#define CO_MERGE_SHARE 200
#define CO_DENSE (-3) /* a drill-down stops: the rest of the range is streamed */

typedef struct co_job job;

typedef struct co_worker {
    uint8_t ident[256];
    size_t identlen;
    char **dbs;
    size_t ndbs;
    uint64_t busy_req; /* request id of the tree task it runs, 0 if idle */
    long busy_task;
    job *busy_job;        /* ... the job it is for */
    double busy_deadline; /* monotonic seconds by when it must answer */
    double busy_since;    /* ... and when it was sent (a share's busy time) */
    double last_seen;     /* monotonic seconds of its last message */
    uint64_t trees;       /* trees it holds, as its last heartbeat said */
    /* Until when it gets no work: it left a request unanswered (a stuck
     * database, dropped replies), and its heartbeats would register it
     * again at once. Kept across its registrations. */
    double shunned_until;
    int alive; /* 0 once silent past the heartbeat timeout */
    /* Slots are reused (a lost worker's, or its own identity's on a new
     * hello), so anything that outlives one message names a worker by
     * (slot, gen): gen is new at every registration. */
    uint32_t gen;
    int can_stream; /* its hello says it serves stream requests (older ones do not) */
    int can_spans;  /* ... and rows requests listing spans */
    int can_merge;  /* ... and merge requests (both sides read by one worker) */
    int busy_merge; /* its range task is a merge (busy_task: range * 2) */
} co_worker;

/* Sends frame to worker w: 0, or the errno of the failure. co_new sets the
 * ZeroMQ one; tests set their own, to run the loop without sockets. */
typedef int (*co_send_fn)(co *c, const co_worker *w, const sl_buf *frame);

struct co {
    void *sock;
    co_send_fn send;
    co_worker w[CO_MAX_WORKERS];
    size_t nw;
    uint64_t next_id;
    sl_buf frame;
    int hb_timeout_ms;  /* 0: never give up on a worker */
    int req_timeout_ms; /* a request unanswered this long loses its worker */
    size_t lost;        /* workers lost so far (for re-issuing their work) */
    uint32_t gens;      /* registrations so far: the next worker's gen */
    void *svc_sock;     /* another socket to serve while jobs run */
    void (*svc_fn)(void *ctx);
    void *svc_ctx;
    job *jobs;   /* every job started and not yet freed, oldest first */
    job *active; /* the job whose fiber runs now; NULL in the loop */
    void (*log_fn)(void *ctx, const char *line);
    void *log_ctx;
    char rejected[320]; /* why the last worker was dropped, for a stranded job's error */
    /* The connections (identities) of the last CO_MAX_REJECTED dropped
     * workers: ignored, even once their slot is another worker's, so a liar
     * is not registered again by its next heartbeat. A ring: bounded. */
    struct {
        uint8_t ident[256];
        size_t len;
    } rejected_ids[CO_MAX_REJECTED];
    size_t nrejected;
};

typedef struct side_desc {
    char **name, **type; /* n of each, on the heap: a table may be wide */
    int *cls;
    size_t n;
    char *key[ENC_MAX_KEY_COLS];
    size_t nkey;
    int loose; /* declared types are hints (SQLite) */
    char source[256];
} side_desc;

/* RS_STREAMING: both sides streamed by the job's fiber, no tree built
 * (co_stream_pending) */
/* RS_MERGED: a merge task's reply is in (range.mrep), for the fiber. */
enum range_state { RS_PENDING, RS_RUNNING, RS_BUILT, RS_COMPARED, RS_STREAMING, RS_MERGED };

typedef struct range {
    sl_buf lo, hi; /* encoded bounds; empty with the flag off when unbounded */
    int has_lo, has_hi;
    mk_nodelist root[2];
    int worker[2];    /* the slot building or holding each side's tree ... */
    uint32_t gen[2];  /* ... as registered then (co_worker.gen) */
    int state[2];     /* range_state: each side's tree */
    uint64_t tree[2]; /* the tree's id on its worker: new at each issue */
    uint64_t rows[2];
    int attempts;       /* compares cut short by a lost worker */
    int compared;       /* the trees were compared; done once re-checks settle too */
    size_t pending;     /* its keys waiting in the re-check queue */
    int64_t read_at_ms; /* wall clock when both sides' trees were in */
    sl_buf emitted;     /* after such a cut: [kind][u32 len][key] already reported */
    /* --chunk-time: a range split while pending becomes pieces (it keeps
     * the first, the others are appended to j->r). The planned range is
     * the one recorded (co_callbacks.range_done) once its last piece is. */
    size_t planned;        /* the planned range it is a piece of (itself if planned) */
    size_t unfinished;     /* a planned range: its pieces not finished yet (1 unsplit) */
    uint64_t root_rows[2]; /* ... and the rows its finished pieces counted */
    uint64_t est_rows;     /* rows expected in it (source side) */
    int splitting;         /* a split request for it is out: it is not dispatched */
    /* co_merge.c: a range merged by one worker reading both sides, in
     * merge tasks. Once begun, only merge tasks go on with it, from after
     * mat (everything up to that key is compared and reported). */
    int merging;            /* its merge has begun */
    sl_buf mat;             /* the last key merged (empty: none yet) */
    int mat_kind;           /* MK_EXCL, or MK_INCL: a drill's rest starts at mat */
    int mtree;              /* the rest of a drilled range: its rows counted by its trees */
    uint64_t mrows[2];      /* rows of each side merged so far */
    uint64_t mpos, mblocks; /* merged rows and differing 32-row blocks (density) */
    msg *mrep;              /* RS_MERGED: the reply the fiber takes next */
} range;

typedef struct recheck {
    uint8_t *key;
    size_t klen;
    int kind, seen, hit;
    int first;     /* a changed key's first look (co_recheck_add_change): equal is checked, not
                      transient */
    int64_t at_ms; /* a changed key: the commit time it came with (ms since 1970; 0: none) */
    uint64_t seq;  /* the order it joined the queue in (acks of a changes job) */
    size_t range;
    double due;
} recheck;

/* Where the job is: the loop schedules range tasks only for a job in
 * JOB_RANGES; the others are steps of the job's own fiber. */
enum job_phase { JOB_DESCRIBE, JOB_PLAN, JOB_RANGES, JOB_ENDED };

/* The request a job's fiber is suspended on (co_wait_replies). */
typedef struct job_wait {
    size_t n;
    uint64_t ids[2];
    int from[2];
    uint32_t gen[2];
    msg *rep[2];
} job_wait;

struct co_job {
    co *c;
    job *link; /* in c->jobs */
    fiber *fb;
    int phase;      /* enum job_phase */
    int outcome;    /* co_job_state once ended */
    int prio;       /* CO_PRIO_* */
    size_t cap;     /* most range tasks at once; 0: no cap */
    size_t tasks;   /* range tasks running now */
    int cancel;     /* co_job_cancel asked */
    int fatal;      /* failed in the loop (a worker's error on a range task): err says why */
    int wake;       /* resume the fiber at the next turn of the loop */
    double wake_at; /* ... or at this time (monotonic) */
    double t0;
    job_wait wait;
    sl_err err; /* why it failed */
    co_summary own_sum;
    size_t *ready; /* ranges with both trees built, to compare: a queue */
    size_t nready, ready_head, capready;
    size_t next;     /* the first task that may still be pending */
    size_t *order;   /* NULL: ranges in key order; else the i-th visited is order[i] */
    size_t sampled;  /* a sample: the ranges compared (the rest left out) */
    double stranded; /* since when no live worker reaches a side */
    /* a share (o->share): the seconds its ended range tasks kept workers
     * busy, summed; when its first task was sent (0: none yet); and when,
     * paused, it may go on at the earliest (the loop wakes for it) */
    double busy_s, first_sent, resume_at;
    const co_diff_opts *o;
    const co_callbacks *cb;
    co_summary *sum;
    const char *db[2], *table[2];
    /* the compared columns: key first; class each side reads them as */
    const char *cols[CO_MAX_COLS];
    int cls[CO_MAX_COLS];
    size_t ncols, nkey;
    enc_tol *tol; /* each column's tolerance (ncols); NULL: every column exact */
    range *r;
    size_t nr;
    size_t ranges_done;
    uint64_t rows_done, rows_expected;
    sl_buf scratch;
    sl_buf changed; /* keys of a span whose hashes differ: [u32 len][key]... */
    /* adjacent differing spans, gathered into one request for their rows:
     * where most leaves differ, one span a leaf would cost a round trip
     * to each database for every 32 rows */
    sl_buf pend_lo, pend_hi;
    int pend_lo_kind, pend_hi_kind, pend_n;
    uint32_t nchanged;
    int retries; /* describe/split redone after a lost worker */
    /* live re-checks (--rechecks N --settle S): differing keys wait here
     * and are fetched again; persisting ones are confirmed, others transient */
    struct recheck *rq;
    size_t nrq, caprq;
    int recheck_mode;         /* co_fetched_row is resolving a batch of re-checks */
    size_t batch_lo, batch_n; /* the batch: rq[batch_lo .. batch_lo + batch_n) */
    size_t lost_seen;         /* c->lost when the ranges were last checked */
    /* a changes job: the XXH3-64 of every key in rq, open addressing
     * (0 empty, 1 removed; hashes below 2 taken as 2), for the dedupe;
     * kset[kcap + i] is slot i's earliest commit time (ms since 1970, 0:
     * none), so a key named again keeps the first of its changes' times */
    uint64_t *kset;
    size_t kcap, kused; /* slots, and slots not empty (tombstones too) */
    /* the (kind, key) hashes a changes job has confirmed: a key replayed by
     * a slot (a follower replaced, a coordinator restarted) and confirmed
     * again counts once in the windows, as its event is stored once */
    uint64_t *cset;
    size_t ccap, cused;
    uint64_t checked; /* changed keys found equal at their first look */
    uint64_t deduped; /* changed keys already waiting when named again */
    /* a changes job's current window (co_window): since when (sl_now()),
     * j->checked then, what was confirmed and transient since, and the
     * detection latencies (seconds) of the confirmed */
    struct {
        double start;
        uint64_t checked0, missing, extra, changed, transient;
        double *lat;
        size_t nlat, caplat;
    } win;
    side_desc sd[2];
    /* a changes job: who follows each side (slot, gen; -1: nobody yet),
     * the lsn to ack next, the slot's lag as last said */
    int fw[2];
    uint32_t fgen[2];
    uint64_t fack[2], flag[2];
    /* each side's keys replies not acked yet, oldest first: its lsn and the
     * newest queue entry (seq) it may have added. A batch is acked once no
     * entry up to that seq waits any more: every key of it was looked at,
     * so a coordinator that dies loses none (the slot replays from the ack) */
    struct fbatch {
        uint64_t lsn, seq;
    } * fbat[2];
    size_t nfbat[2], capfbat[2];
    uint64_t rq_seq;  /* the last seq given to a queue entry */
    int following[2]; /* a follow was started on that side: unfollow at the end */
    int closing;      /* cleanup: waits ignore the cancel (bounded) */
    int freeing;      /* co_job_free drives the fiber without the loop: no waits */
    /* issue 15: row divergences counted for --max-divergences (limit_hit:
     * reached, the job is unwinding to its end); --chunk-time: the seconds
     * and rows of the range tasks ended, where the next split looks;
     * --max-replica-lag: paused (no range task dispatched), the next probe,
     * since when paused, and what the progress says */
    uint64_t ndiv;
    int limit_hit;
    double task_s;
    uint64_t task_rows;
    size_t split_at;
    int lag_paused;
    double lag_next, paused_since;
    char pause_msg[320];
    /* dense divergence (co_stream.c): the rows (both sides) of the leaves
     * this compare's drill-down listed, and of the differing spans it read,
     * and how many spans; once the second is a large share of the first,
     * the drill stops and the rest of the range, from dense_from (a span's
     * lower bound), is streamed from both sides */
    uint64_t dense_listed, dense_span, dense_nspan;
    /* ... and the rows (both sides) those spans showed differing, and
     * whether any span's rows were read from a database rather than from a
     * tree's kept rows (then a differing span costs a query a side) */
    uint64_t dense_diff;
    int dense_db;
    sl_buf dense_from;
    int dense_from_kind;
    /* job-level: ranges compared or streamed so far, and how many of them
     * were dense; once most were, direct is set and the pending ranges are
     * streamed whole by the fiber (co_stream_pending), no tree task sent.
     * A stream's progress: rows taken from each side, the last key merged
     * (a stream cut by a lost worker resumes after it), and the merged rows
     * and differing 32-row blocks, for judging a directly streamed range */
    int direct;
    int merge_ok;     /* its dense ranges may go to merge tasks (co_merge.c) */
    uint64_t found_n; /* divergences found by its compares (before re-checks) */
    size_t judged, judged_dense;
    uint64_t st_rows[2], st_pos, st_blocks, st_lastblk, st_ndiff;
    sl_buf st_at;
    int st_at_kind; /* MK_EXCL; MK_INCL: a begun merge's rest from a drill (co_merge.c) */
    size_t st_ri1;  /* the range streamed directly, + 1 (0: none), until it ends */
    int st_tries;   /* its streams cut short by a lost worker */
};

/* What a drill-down works on: its job, and the range being compared. NULL r
 * while a batch of re-checks is fetched: each queued key names its own. */
typedef struct drill {
    job *j;
    range *r;
    /* runs of differing spans gathered before the current one (j->pend_*)
     * for one rows request listing them all (both readers answering from
     * their trees' kept rows): [kind u8][len u32][key] for lo, then hi */
    sl_buf runs;
    uint32_t nruns, run_spans, nflush; /* nflush: rows requests sent so far */
    /* per side, the children of the level-1 nodes numbered grand_first on,
     * listed with the level-2 node above them (a nodes request's "grand") */
    mk_nodelist *grand[2];
    uint32_t ngrand[2], grand_first[2];
} drill;

/* A key asked for in a fetch, pointing into the caller's buffer. */
typedef struct keyref {
    const uint8_t *p;
    uint32_t len;
} keyref;

/* A range's bounds as mk_bound: [lo, hi), either end maybe unbounded. */
static inline mk_bound range_lo(const range *r)
{
    mk_bound b = {r->has_lo ? MK_INCL : MK_UNBOUNDED, r->lo.p, r->lo.len};
    return b;
}

static inline mk_bound range_hi(const range *r)
{
    mk_bound b = {r->has_hi ? MK_EXCL : MK_UNBOUNDED, r->hi.p, r->hi.len};
    return b;
}

/* ---- co_workers.c: registry and transport ------------------------------ */

/* Sends zmq frames [ident, frame] to w: 0, or zmq's errno (co_new's send). */
int co_zmq_send(co *c, const co_worker *w, const sl_buf *frame);
/* Marks w lost (once): its task is given up, and every job woken to re-issue its work. */
void co_lose_worker(co *c, co_worker *w);
/* Drops worker wi for a protocol breach (logged, its identity ignored from
 * now on); CO_LOST, with err (may be NULL) saying why. */
int co_reject_worker(co *c, int wi, sl_err *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Whether slot wi still holds, alive, the registration gen. */
int co_worker_is(const co *c, int wi, uint32_t gen);
/* Whether w announced database db. */
int co_worker_has_db(const co_worker *w, const char *db);
/* Whether some live worker reaches db. */
int co_can_reach(co *c, const char *db);
/* Frees w from its range task (its job's task count goes down, its busy
 * time up by the task's). */
void co_worker_idle(co_worker *w);
/* A live worker reaching db for a one-off request, idle ones first; -1 with err when none. */
int co_pick_worker(co *c, const char *db, sl_err *err);
/* Loses workers silent past the heartbeat timeout. */
void co_check_workers(co *c);
/* Reads one message: 1 with a known worker's reply (*wi, *out: the caller
 * frees it), 0 when there was nothing for the caller, -1 when the socket fails. */
int co_read_worker(co *c, int *wi, msg **out, sl_err *err);
/* Loses worker wi, which left a `what` unanswered, and gives it no work for a while. */
void co_time_out(co *c, int wi, const char *what);
/* A new request of type with a fresh id (*id); NULL when memory runs out. */
msg_writer *co_request(co *c, int type, uint64_t *id);
/* Sends a request to wi and frees mw, without waiting: 0, -1, or CO_LOST. */
int co_call(co *c, int wi, msg_writer *mw, sl_err *err);
/* co_call, then co_wait_replies for its reply (*reply: the caller frees it). */
int co_rpc(co *c, int wi, msg_writer *mw, uint64_t id, msg **reply, sl_err *err);

/* ---- co_plan.c: describe, reconcile, split ---------------------------- */

/* Frees what a side_desc holds (not d itself). */
void co_side_free(side_desc *d);
/* Describes table side through a worker into d: 0, or -1 with err. */
int co_describe(job *j, int side, side_desc *d, sl_err *err);
/* Chooses the key and compared columns (j->cols, j->cls), reporting schema
 * drift as events: 0, or -1 with err. */
int co_reconcile(job *j, side_desc *s, side_desc *t, sl_err *err);
/* Splits the key space into j->r (or takes a resumed job's split): 0, or -1 with err. */
int co_plan(job *j, sl_err *err);
/* Packs the fields that say what side reads (db, table, columns, ...). */
void co_pack_spec(job *j, msg_writer *mw, int side);
/* Packs a bound as [kind, key or nil] under key. */
void co_pack_bound(msg_writer *mw, const char *key, int kind, const uint8_t *p, size_t n);
/* Whether key is a key of this job (well-formed for its key classes); why says if not. */
int co_is_job_key(const job *j, const uint8_t *key, size_t len, sl_err *why);
/* Checks a split reply (rows, bounds rising, keys of the job, at most
 * nranges): 0 with *rows, or -1 with why. */
int co_check_split(const job *j, const msg *m, size_t nranges, uint64_t *rows, sl_err *why);

/* ---- co_compare.c: trees, spans, rows, columns -------------------------- */

/* A reply's row i: key a key of the job's, inside [lo, hi) and above
 * *prev (then made *prev). 0, or -1 with why saying what is wrong. */
int co_check_row_key(const job *j, const mk_bound *lo, const mk_bound *hi, const uint8_t **prev,
                     size_t *plen, const uint8_t *key, size_t klen, uint32_t i, sl_err *why);
/* Reads and checks a tree or nodes reply's "nodes" into out: 0; 1 with why
 * (the worker is to be rejected); -1 when memory runs out. */
int co_read_nodes(job *j, const range *r, const msg *m, const mk_node *parent, uint64_t rows,
                  mk_nodelist *out, sl_err *why);
/* Reports one row divergence of range r (once per range, across
 * interrupted compares) through the job's callback: 0, or -1 with err. */
int co_emit_row(job *j, range *r, int kind, int status, const uint8_t *key, size_t klen,
                const co_coldiff *cols, size_t ncols, sl_err *err);

/* Called by co_merge_rows per key with both sides' rows, or NULL for the side lacking it. */
typedef int (*merge_fn)(drill *d, const msg_obj *a, const msg_obj *b, sl_err *err);
/* Walks two key-ordered row lists (rows of `width` fields, the key first)
 * and calls fn once per key: 0, or -1 with err. */
int co_merge_rows(drill *d, const msg_obj *ra, uint32_t na, const msg_obj *rb, uint32_t nb,
                  uint32_t width, merge_fn fn, sl_err *err);
/* merge_fn for a rows reply's [key, hash]: one side only is a divergence,
 * differing hashes gather the key in j->changed for a fetch. */
int co_span_row(drill *d, const msg_obj *a, const msg_obj *b, sl_err *err);
/* merge_fn for a fetch reply's [key, [encodings], [texts]]: one side only,
 * or differing columns, is a divergence. */
int co_fetched_row(drill *d, const msg_obj *a, const msg_obj *b, sl_err *err);
/* Who reads range d->r's rows for each side: the tree's holder when idle,
 * else an idle worker reaching that database (rows come from it, not the tree). */
void co_pick_readers(drill *d, int readers[2]);
/* Checks a rows reply (keys of the job rising strictly inside [lo, hi], 16-byte hashes). */
int co_check_rows(const job *j, const msg_obj *rows, uint32_t n, const mk_bound *lo,
                  const mk_bound *hi, sl_err *why);
/* merge_fn for a stream's rows (as fetch's): one side only, or differing
 * columns, is a divergence; equal rows count nothing. */
int co_streamed_row(drill *d, const msg_obj *a, const msg_obj *b, sl_err *err);
/* Checks one [key, [encodings or digests], [texts or nil]] row of a fetch
 * or stream reply (the i-th: for why), a value and text per column; *key
 * points at its key. 0, or -1 with why. */
int co_check_full_row(const job *j, const msg_obj *row, uint32_t i, const uint8_t **key,
                      size_t *klen, sl_err *why);
/* Checks a fetch reply (only keys asked for, in order, a value and text per column). */
int co_check_fetch(const job *j, const msg_obj *rows, uint32_t n, const keyref *refs, size_t nk,
                   sl_err *why);
/* Fetches the rows whose keys are in j->changed from workers[0] and
 * workers[1] and compares their columns: 0, -1 or CO_LOST. */
int co_compare_changed(drill *d, const int workers[2], sl_err *err);
/* --keys-only re-checks: reads the row hash of each key in j->changed
 * from both sides (a rows request [key, key]; no column value): 0, -1 or CO_LOST. */
int co_rehash_changed(drill *d, const int workers[2], sl_err *err);
/* Tells the worker holding (or building) range ri's side s tree to drop it. */
int co_release_side(job *j, size_t ri, int s);
/* Records range ri done (counts, callbacks): 0, or -1 with err. */
int co_finish_range(job *j, size_t ri, sl_err *err);
/* Compares range ri's two built trees down to rows: 0 (compared, or to be
 * rebuilt after a lost holder), or -1 with err. */
int co_compare_range(job *j, size_t ri, sl_err *err);

/* ---- co_merge.c: dense ranges merged by one worker ---------------------- */

/* Whether job j may hand ranges to merge tasks at all: two databases, and
 * nothing a merge task does not do (--keys-only, a rate, a share). */
int co_merge_allowed(const job *j);
/* Whether o is a fetched column: an encoding (bin) or a digest [head,
 * length, hash]; 0 when it is, -1 when not (co_compare.c). */
int co_check_value(const msg_obj *o);
/* One key of a merge reply (co_merge.c checked its form): a or b NULL, a
 * missing or extra row; both, a changed row's listed columns compared as
 * a fetched row's. 0, or -1 with err (co_compare.c). */
int co_merged_row(drill *d, const msg_obj *a, const msg_obj *b, sl_err *err);
/* The range worker w should merge next for job j (a begun one first, else
 * a pending one once the job streams directly), or SIZE_MAX. */
size_t co_next_merge(job *j, const co_worker *w);
/* Whether some live worker could take job j's merge tasks now. */
int co_merge_possible(const job *j);
/* Sends worker wi the merge task of range ri (from after its last key
 * merged): 0, -1 with err, or CO_LOST. */
int co_send_merge(job *j, size_t ri, int wi, sl_err *err);
/* A merge task's reply (owned), in the loop: kept on the range for the
 * fiber, or the worker rejected (an error reply fails the job). */
void co_merge_reply(co *c, int wi, msg *m);
/* On the fiber: reports the divergences of range ri's merge reply, and
 * either finishes the range or leaves it pending for its next task. */
int co_merge_take(job *j, size_t ri, sl_err *err);
/* Range ri's drill-down found it dense from `from` on (everything below
 * is compared and reported): its rest goes to merge tasks. Its trees must
 * be released by the caller; its rows stay those its trees counted. */
int co_merge_rest(job *j, size_t ri, const mk_bound *from, sl_err *err);

/* ---- co_stream.c: dense divergence ------------------------------------- */

/* Whether the drill-down of d->r so far found much of what it looked at
 * differing (j->dense_listed, j->dense_span), so that streaming the rest
 * beats drilling, and the readers co_pick_readers chooses serve streams. */
int co_is_dense(drill *d);
/* Checks a stream reply's rows: full rows (co_check_full_row) whose keys
 * are keys of the job rising strictly inside [lo, hi]. 0, or -1 with why. */
int co_check_stream(const job *j, const msg_obj *rows, uint32_t n, const mk_bound *lo,
                    const mk_bound *hi, sl_err *why);
/* Streams the rows of [lo, hi) of range d->r from both sides (stream
 * requests, a few thousand rows each, the next asked for while the last is
 * merged) and reports every divergence as a fetch would: 0, -1 with err,
 * or CO_LOST. */
int co_stream_span(drill *d, const mk_bound *lo, const mk_bound *hi, sl_err *err);
/* After a range was compared (dense: its rest was streamed) or streamed
 * directly: counts it, and sets j->direct when most ranges judged were
 * dense (and clears it when they no longer are). */
void co_judge_range(job *j, int dense);
/* ... a range streamed or merged whole: judged dense when CO_DENSE_PERCENT
 * of its 32-row blocks (of `merged` rows in key order) held a divergence;
 * not judged under CO_DENSE_MIN_ROWS rows (both sides). */
void co_judge_streamed(job *j, uint64_t rows, uint64_t merged, uint64_t blocks);
/* Whether job j's fiber should stream a pending range now: direct, and
 * nothing holds it back (a share, a pause for replica lag, a job of higher
 * priority with ranges to read). */
int co_direct_ready(job *j);
/* Streams job j's next pending range whole from both sides, no tree
 * built: 1 when one was streamed (and finished, or waiting for re-checks),
 * 0 when none is pending, -1 with err. */
int co_stream_pending(job *j, sl_err *err);

/* ---- co_recheck.c: the re-check queue ----------------------------------- */

/* Queues key (a divergence of kind in range r) to be fetched again after
 * the settle time: 0, or -1 when memory runs out. */
int co_recheck_add(job *j, range *r, int kind, const uint8_t *key, size_t klen, sl_err *err);
/* During a re-check batch: key still differs (as kind); confirms and
 * reports it once it has persisted through every re-check. 0 or -1 with err. */
int co_recheck_hit(job *j, int kind, const uint8_t *key, size_t klen, const co_coldiff *cols,
                   size_t ncols, sl_err *err);
/* Queues a key a change stream named (change-driven verification) for a
 * first look after the settle time, unless it waits already (a key changed
 * again before its check is checked once; it keeps the earlier of the two
 * commit times): equal then, it counts as checked; different, it goes
 * through the re-checks as any divergence, and once confirmed its
 * detection latency (now - at_ms) joins the window's. at_ms: the change's
 * commit time, ms since 1970 (0: unknown). Every such key belongs to
 * range 0. 0, or -1 when memory runs out. */
int co_recheck_add_change(job *j, const uint8_t *key, size_t klen, int64_t at_ms, sl_err *err);
/* The earliest commit time of a changed key waiting in the queue (ms since
 * 1970), 0 when it has none or waits not. */
int64_t co_recheck_change_at(const job *j, const uint8_t *key, size_t klen);
/* After a batch of the first n queued keys was fetched (each hit or not):
 * resolves them (confirmed, transient, checked) or queues them again for
 * their next look. 0, or -1 with err. */
int co_recheck_resolve(job *j, size_t n, double now, sl_err *err);
/* Fetches one batch of due keys again: 0, -1 with err, or CO_LOST. */
int co_run_rechecks(job *j, double now, sl_err *err);

/* ---- co_follow.c: change-driven verification ----------------------------- */

/* A changes job after describe and reconcile: follows both sides' changed
 * keys through workers (follow, keys), checks each after the settle time,
 * until cancelled or o->duration_ms ends; then unfollows (the slots are
 * dropped). 0, or -1 with err. */
int co_follow_run(job *j, sl_err *err);
/* Tells the workers to stop following and drop the slots (from cleanup). */
void co_follow_end(job *j);

/* ---- co_yield.c: audits that yield (issue 15) ---------------------------- */

/* --max-replica-lag: probes each watched replica (a lag request to a
 * worker reaching it) when due, or at once with force, and pauses or
 * resumes the job's range tasks. 0, or -1 with err (not a replica). */
int co_lag_check(job *j, int force, sl_err *err);
/* --chunk-time: splits one pending range expected to read for longer than
 * the target, if any (a bounded split request). 0, -1 with err, or CO_LOST. */
int co_split_pending(job *j, sl_err *err);
/* Splits range ri if it is pending and expected to read for longer than
 * 1.5 times the target: 0 (split or not), -1 with err, or CO_LOST. */
int co_split_if_long(job *j, size_t ri, sl_err *err);
/* Seconds a range task is expected to take per row: measured on the ended
 * ones, else from the throttle; 0 when not known yet. */
double co_row_seconds(const job *j);

/* ---- co_loop.c: the event loop ------------------------------------------ */

/* From a job's fiber: waits for replies ids[0..n) (n <= 2) from workers
 * from[0..n). 0; -1 on an ERROR reply or cancel; CO_LOST when a worker is
 * lost or times out. */
int co_wait_replies(co *c, const uint64_t *ids, const int *from, msg **replies, size_t n,
                    sl_err *err);
/* Exposed for tests/test_coordinator.c; see their definitions. */
size_t co_next_task(job *j, const co_worker *w);
int co_share_paused(job *j, double now);
void co_requeue_lost(job *j);
void co_dispatch(co *c);
void co_tree_reply(co *c, int wi, msg *m);
/* A range task's reply came from wi: the worker made idle, its job woken;
 * the job, its task number (range * 2 + side) and how long it took. */
job *co_task_answered(co *c, int wi, long *task, double *took);
/* Queues range ri for the job's fiber (both trees in, or a merge reply);
 * out of memory fails the job. */
void co_ready_push(job *j, size_t ri);
void co_route_reply(co *c, int wi, msg *m);

#endif
