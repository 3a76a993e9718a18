#include "co.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "../merkle/enc.h"
#include "../merkle/mk_diff.h"
#include "../proto/curve.h"
#include "../proto/msg.h"
#include "fiber.h"

#define CO_MAX_WORKERS 256 /* connected at once; a lost worker's slot is reused */
#define CO_MAX_REJECTED 64 /* dropped connections remembered (co.rejected_ids) */
/* Columns of a described table: SQLite's hard limit (PostgreSQL's is
 * 1600); only the compared ones count against CO_MAX_COLS (co.h). */
#define CO_MAX_TABLE_COLS 32767
#define CO_ROWS_PER_RANGE 200000 /* caps a tree's memory on the worker */
#define CO_MAX_RETRIES 20

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
    double last_seen;     /* monotonic seconds of its last message */
    uint64_t trees;       /* trees it holds, as its last heartbeat said */
    /* Until when it gets no work: it left a request unanswered (a stuck
     * database, dropped replies), and its heartbeats would register it
     * again at once. Kept across its registrations. */
    double shunned_until;
    int alive;            /* 0 once silent past the heartbeat timeout */
    /* Slots are reused (a lost worker's, or its own identity's on a new
     * hello), so anything that outlives one message names a worker by
     * (slot, gen): gen is new at every registration. */
    uint32_t gen;
} co_worker;

struct co {
    void *sock;
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

/* ---- sockets ---------------------------------------------------------- */

co *co_new(void *zctx, const char *endpoint, const char *curve_secret, sl_err *err)
{
    co *c = calloc(1, sizeof *c);
    if (!c)
        return sl_err_set(err, "out of memory"), NULL;
    /* ids never repeat across coordinator restarts, so a late reply to a
     * previous incarnation's request cannot be taken for a new one */
    c->next_id = (uint64_t)time(NULL) << 32;
    c->req_timeout_ms = 300000;
    c->sock = zmq_socket(zctx, ZMQ_ROUTER);
    if (!c->sock) {
        sl_err_set(err, "cannot create coordinator socket: %s", zmq_strerror(zmq_errno()));
        free(c);
        return NULL;
    }
    int one = 1, linger = 0;
    zmq_setsockopt(c->sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger);
    if (curve_secret && curve_server(c->sock, curve_secret, err)) {
        co_free(c);
        return NULL;
    }
    if (zmq_bind(c->sock, endpoint) != 0) {
        sl_err_set(err, "cannot bind coordinator socket %s: %s", endpoint,
                   zmq_strerror(zmq_errno()));
        co_free(c);
        return NULL;
    }
    return c;
}

static void worker_clear(co_worker *w)
{
    for (size_t i = 0; i < w->ndbs; i++)
        free(w->dbs[i]);
    free(w->dbs);
    w->dbs = NULL;
    w->ndbs = 0;
}

void co_free(co *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->nw; i++)
        worker_clear(&c->w[i]);
    if (c->sock)
        zmq_close(c->sock);
    sl_buf_free(&c->frame);
    free(c);
}

#define CO_LOST (-2) /* a worker went away: redo its work elsewhere */

static void worker_idle(co_worker *w);
static void wake_all(co *c);
static void time_out(co *c, int wi, const char *what);

static void lose_worker(co *c, co_worker *w)
{
    if (!w->alive)
        return;
    w->alive = 0;
    worker_idle(w);
    c->lost++;
    wake_all(c); /* jobs waiting on it re-issue its work */
}

static int is_rejected(const co *c, const void *ident, size_t len)
{
    size_t n = c->nrejected < CO_MAX_REJECTED ? c->nrejected : CO_MAX_REJECTED;
    for (size_t i = 0; i < n; i++)
        if (c->rejected_ids[i].len == len && memcmp(c->rejected_ids[i].ident, ident, len) == 0)
            return 1;
    return 0;
}

/* A worker whose reply breaks the protocol (undecodable, inconsistent
 * counts, keys out of order or not keys of the job) may be broken or
 * hostile: it is dropped for the rest of its connection (a restarted worker
 * connects anew), the reason logged, and CO_LOST returned so its work is
 * re-issued to the others exactly as for a worker that died. Nothing it
 * sent is used. */
static int reject_worker(co *c, int wi, sl_err *err, const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    snprintf(c->rejected, sizeof c->rejected, "worker %d dropped: %s", wi, why);
    if (c->log_fn)
        c->log_fn(c->log_ctx, c->rejected);
    lose_worker(c, &c->w[wi]);
    memcpy(c->rejected_ids[c->nrejected % CO_MAX_REJECTED].ident, c->w[wi].ident,
           c->w[wi].identlen);
    c->rejected_ids[c->nrejected++ % CO_MAX_REJECTED].len = c->w[wi].identlen;
    sl_err_set(err, "%s", c->rejected);
    return CO_LOST;
}

void co_set_log(co *c, void (*fn)(void *ctx, const char *line), void *ctx)
{
    c->log_fn = fn;
    c->log_ctx = ctx;
}

/* Whether slot wi still holds, alive, the registration gen: a reference
 * to a worker that was lost, or whose slot another worker took since,
 * is stale. */
static int worker_is(const co *c, int wi, uint32_t gen)
{
    return wi >= 0 && (size_t)wi < c->nw && c->w[wi].alive && c->w[wi].gen == gen;
}

/* Sends a frame to a worker. A worker that is gone (its connection closed:
 * EHOSTUNREACH under ROUTER_MANDATORY) is lost at once, without waiting for
 * its heartbeats to stop, and CO_LOST returned. */
static int send_to(co *c, int wi, const sl_buf *frame, sl_err *err)
{
    if (wi < 0 || !c->w[wi].alive)
        return sl_err_set(err, "worker %d was lost", wi), CO_LOST;
    co_worker *w = &c->w[wi];
    if (zmq_send(c->sock, w->ident, w->identlen, ZMQ_SNDMORE) < 0 ||
        zmq_send(c->sock, frame->p, frame->len, 0) < 0) {
        int e = zmq_errno();
        sl_err_set(err, "cannot send to worker %d: %s", wi, zmq_strerror(e));
        if (e == EHOSTUNREACH) {
            lose_worker(c, w);
            return CO_LOST;
        }
        return -1;
    }
    return 0;
}

static int find_worker(co *c, const void *ident, size_t len)
{
    for (size_t i = 0; i < c->nw; i++)
        if (c->w[i].identlen == len && memcmp(c->w[i].ident, ident, len) == 0)
            return (int)i;
    return -1;
}

/* A slot for a new identity: a lost worker's (the first one), else a new
 * one; -1 when CO_MAX_WORKERS are connected at once. So a coordinator
 * outlives any number of worker restarts. */
static int free_slot(co *c)
{
    for (size_t i = 0; i < c->nw; i++)
        if (!c->w[i].alive) {
            worker_clear(&c->w[i]);
            return (int)i;
        }
    return c->nw < CO_MAX_WORKERS ? (int)c->nw++ : -1;
}

/* Registers the worker at ident (slot wi, or a free slot when wi < 0).
 * Every registration is a new gen: a known identity saying hello again is
 * a restarted worker, whose trees and task are gone with its previous
 * registration (lost, so the job re-issues them). */
static int register_worker(co *c, int wi, const void *ident, size_t len, const msg *m)
{
    const msgpack_object *dbs;
    uint32_t n;
    if (wi < 0) {
        if (len > sizeof c->w[0].ident || (wi = free_slot(c)) < 0)
            return -1;
        memset(&c->w[wi], 0, sizeof c->w[wi]);
        memcpy(c->w[wi].ident, ident, len);
        c->w[wi].identlen = len;
    }
    co_worker *w = &c->w[wi];
    lose_worker(c, w);
    worker_clear(w);
    w->alive = 1;
    w->gen = ++c->gens;
    w->last_seen = sl_now();
    if (msg_get_array(m, "dbs", &dbs, &n, NULL) != 0)
        return wi;
    w->dbs = calloc(n ? n : 1, sizeof *w->dbs);
    if (!w->dbs)
        return wi;
    for (uint32_t i = 0; i < n; i++) {
        const char *p;
        size_t l;
        if (msg_obj_str(&dbs[i], &p, &l) == 0 && (w->dbs[w->ndbs] = strndup(p, l)))
            w->ndbs++;
    }
    return wi;
}

/* Whether a hello or heartbeat comes from a worker that encodes rows as
 * this coordinator's does (a hello without "enc" is version 1). Workers of
 * two encoding versions in one job would hash some equal values apart, so
 * another version is never registered; its hello is logged. */
static int is_same_encoding(co *c, const msg *m, int type)
{
    int64_t enc = 1;
    if (msg_get(m, "enc"))
        msg_get_int(m, "enc", &enc, NULL);
    if (enc == ENC_VERSION)
        return 1;
    if (type == MSG_HELLO && c->log_fn) {
        char line[160];
        snprintf(line, sizeof line,
                 "a worker encoding rows as version %lld was not registered: this coordinator "
                 "needs version %d; run the same sluice release on both",
                 (long long)enc, ENC_VERSION);
        c->log_fn(c->log_ctx, line);
    }
    return 0;
}

/* Marks workers silent for longer than the heartbeat timeout as lost. */
static void check_workers(co *c)
{
    if (c->hb_timeout_ms <= 0)
        return;
    double now = sl_now();
    for (size_t i = 0; i < c->nw; i++) {
        co_worker *w = &c->w[i];
        if (w->alive && now - w->last_seen > c->hb_timeout_ms / 1000.0)
            lose_worker(c, w);
    }
}

/* Reads one message from the worker socket, registering hellos and
 * heartbeats and answering garbage with an error. Returns 1 with a known
 * worker's reply, 0 when there was nothing for the caller, -1 on failure. */
static int read_worker(co *c, int *wi, msg **out, sl_err *err)
{
    zmq_msg_t id, body;
    zmq_msg_init(&id);
    zmq_msg_init(&body);
    int rc = 0;
    if (zmq_msg_recv(&id, c->sock, ZMQ_DONTWAIT) < 0) {
        if (zmq_errno() != EAGAIN && zmq_errno() != EINTR)
            rc = sl_err_set(err, "receive: %s", zmq_strerror(zmq_errno()));
        goto done;
    }
    if (!zmq_msg_more(&id))
        goto done; /* a bare identity frame: nothing to answer */
    if (zmq_msg_recv(&body, c->sock, 0) < 0) {
        rc = sl_err_set(err, "receive: %s", zmq_strerror(zmq_errno()));
        goto done;
    }
    for (int more = zmq_msg_more(&body); more;) { /* extra frames: not ours, dropped */
        zmq_msg_t x;
        zmq_msg_init(&x);
        zmq_msg_recv(&x, c->sock, 0);
        more = zmq_msg_more(&x);
        zmq_msg_close(&x);
    }
    sl_err e;
    msg *m = msg_decode(zmq_msg_data(&body), zmq_msg_size(&body), &e);
    int w = find_worker(c, zmq_msg_data(&id), zmq_msg_size(&id));
    if (!m) {
        sl_buf f = {0};
        if (msg_error_frame(0, e.msg, &f) == 0) {
            zmq_send(c->sock, zmq_msg_data(&id), zmq_msg_size(&id), ZMQ_SNDMORE | ZMQ_DONTWAIT);
            zmq_send(c->sock, f.p, f.len, ZMQ_DONTWAIT);
        }
        sl_buf_free(&f);
        /* a worker we wait on would otherwise be waited on forever */
        if (w >= 0 && c->w[w].alive)
            reject_worker(c, w, NULL, "sent an undecodable frame (%s)", e.msg);
        goto done;
    }
    if (is_rejected(c, zmq_msg_data(&id), zmq_msg_size(&id))) {
        msg_free(m);
        goto done;
    }
    int t = msg_type(m);
    if (t == MSG_HELLO || t == MSG_HEARTBEAT) {
        /* a hello, or a heartbeat from a worker we do not know (we
         * restarted) or had given up on (it was too slow): (re)register */
        if (!is_same_encoding(c, m, t)) {
            msg_free(m);
            goto done;
        }
        if (t == MSG_HELLO || w < 0 || !c->w[w].alive)
            w = register_worker(c, w, zmq_msg_data(&id), zmq_msg_size(&id), m);
    }
    if (w >= 0 && c->w[w].alive) {
        c->w[w].last_seen = sl_now();
        int64_t trees;
        if ((t == MSG_HELLO || t == MSG_HEARTBEAT) && msg_get(m, "trees") &&
            msg_get_int(m, "trees", &trees, NULL) == 0 && trees >= 0)
            c->w[w].trees = (uint64_t)trees;
    }
    if (w < 0 || !c->w[w].alive || (t != MSG_REPLY && t != MSG_ERROR)) {
        msg_free(m);
        goto done;
    }
    *wi = w;
    *out = m;
    rc = 1;
done:
    zmq_msg_close(&id);
    zmq_msg_close(&body);
    return rc;
}

/* Waits for the replies to ids[0..n), n <= 2, just sent to workers
 * from[0..n), in any order of arrival. Called from a job's fiber only: it
 * yields to the loop, which files each reply with the job that waits for it
 * (route_reply). Returns 0; -1 on an ERROR reply or when the job is
 * cancelled; CO_LOST when a worker it waits for is lost or does not answer
 * within the request timeout (the caller redoes the work elsewhere). */
static int wait_replies(co *c, const uint64_t *ids, const int *from, msg **replies, size_t n,
                        sl_err *err);

const char *co_kind_name(int kind)
{
    switch (kind) {
    case CO_MISSING:
        return "missing-in-target";
    case CO_EXTRA:
        return "extra-in-target";
    case CO_CHANGED:
        return "changed";
    default:
        return "schema";
    }
}

size_t co_alive_workers(const co *c)
{
    size_t n = 0;
    for (size_t i = 0; i < c->nw; i++)
        n += c->w[i].alive;
    return n;
}

void co_set_heartbeat_timeout(co *c, int ms)
{
    c->hb_timeout_ms = ms;
}

void co_set_service(co *c, void *sock, void (*fn)(void *ctx), void *ctx)
{
    c->svc_sock = sock;
    c->svc_fn = fn;
    c->svc_ctx = ctx;
}

size_t co_worker_count(const co *c)
{
    return c->nw;
}

int co_worker_info(const co *c, size_t i, co_worker_view *out)
{
    if (i >= c->nw)
        return -1;
    const co_worker *w = &c->w[i];
    out->alive = w->alive;
    out->busy = w->busy_req != 0;
    out->trees = w->trees;
    out->dbs = (const char *const *)w->dbs;
    out->ndbs = w->ndbs;
    out->idle_s = sl_now() - w->last_seen;
    return 0;
}

void co_shutdown_workers(co *c)
{
    sl_buf f = {0};
    msg_writer *w = msg_writer_new(MSG_SHUTDOWN, 0, 0);
    if (w && msg_writer_finish(w, &f, NULL) == 0)
        for (size_t i = 0; i < c->nw; i++)
            send_to(c, (int)i, &f, NULL);
    msg_writer_free(w);
    sl_buf_free(&f);
}

static int worker_has_db(const co_worker *w, const char *db)
{
    for (size_t i = 0; i < w->ndbs; i++)
        if (strcmp(w->dbs[i], db) == 0)
            return 1;
    return 0;
}

/* A live worker that reaches db for describe, split and re-checks: an idle
 * one first (a busy one answers between row batches, but an idle one at
 * once), else the first. */
static int pick_worker(co *c, const char *db, sl_err *err)
{
    int any = -1, shunned = -1;
    double now = sl_now();
    for (size_t i = 0; i < c->nw; i++)
        if (c->w[i].alive && worker_has_db(&c->w[i], db)) {
            if (now < c->w[i].shunned_until) {
                shunned = (int)i;
                continue;
            }
            if (!c->w[i].busy_req)
                return (int)i;
            if (any < 0)
                any = (int)i;
        }
    if (any >= 0 || shunned >= 0)
        return any >= 0 ? any : shunned;
    return sl_err_set(err, "no connected worker can reach database \"%s\"%s%s%s", db,
                      c->rejected[0] ? " (" : "", c->rejected, c->rejected[0] ? ")" : "");
}

/* ---- the job ---------------------------------------------------------- */

typedef struct side_desc {
    char **name, **type; /* n of each, on the heap: a table may be wide */
    int *cls;
    size_t n;
    char *key[ENC_MAX_KEY_COLS];
    size_t nkey;
    int loose; /* declared types are hints (SQLite) */
    char source[256];
} side_desc;

typedef struct range {
    sl_buf lo, hi; /* encoded bounds; empty with the flag off when unbounded */
    int has_lo, has_hi;
    mk_nodelist root[2];
    int worker[2];   /* the slot building or holding each side's tree ... */
    uint32_t gen[2]; /* ... as registered then (co_worker.gen) */
    int state[2]; /* range_state: each side's tree */
    uint64_t tree[2]; /* the tree's id on its worker: new at each issue */
    uint64_t rows[2];
    int attempts;       /* compares cut short by a lost worker */
    int compared;       /* the trees were compared; done once re-checks settle too */
    size_t pending;     /* its keys waiting in the re-check queue */
    int64_t read_at_ms; /* wall clock when both sides' trees were in */
    sl_buf emitted;     /* after such a cut: [kind][u32 len][key] already reported */
} range;

typedef struct recheck {
    uint8_t *key;
    size_t klen;
    int kind, seen, hit;
    size_t range;
    double due;
} recheck;

/* Where the job is: the loop schedules range tasks only for a job in
 * JOB_RANGES; the others are steps of the job's own fiber. */
enum job_phase { JOB_DESCRIBE, JOB_PLAN, JOB_RANGES, JOB_ENDED };

/* The request a job's fiber is suspended on (wait_replies). */
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
    int phase;     /* enum job_phase */
    int outcome;   /* co_job_state once ended */
    int prio;      /* CO_PRIO_* */
    size_t cap;    /* most range tasks at once; 0: no cap */
    size_t tasks;  /* range tasks running now */
    int cancel;    /* co_job_cancel asked */
    int fatal;     /* failed in the loop (a worker's error on a range task): err says why */
    int wake;      /* resume the fiber at the next turn of the loop */
    double wake_at; /* ... or at this time (monotonic) */
    double t0;
    job_wait wait;
    sl_err err; /* why it failed */
    co_summary own_sum;
    size_t *ready; /* ranges with both trees built, to compare: a queue */
    size_t nready, ready_head, capready;
    size_t next;   /* the first task that may still be pending */
    double stranded; /* since when no live worker reaches a side */
    const co_diff_opts *o;
    const co_callbacks *cb;
    co_summary *sum;
    const char *db[2], *table[2];
    /* the compared columns: key first; class each side reads them as */
    const char *cols[CO_MAX_COLS];
    int cls[CO_MAX_COLS];
    size_t ncols, nkey;
    range *r;
    size_t nr;
    size_t ranges_done;
    uint64_t rows_done, rows_expected;
    sl_buf scratch;
    range *cur;     /* the range being compared */
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
    int recheck_mode;         /* fetched_row is resolving a batch of re-checks */
    size_t batch_lo, batch_n; /* the batch: rq[batch_lo .. batch_lo + batch_n) */
    size_t lost_seen;         /* c->lost when the ranges were last checked */
    side_desc sd[2];
};

enum range_state { RS_PENDING, RS_RUNNING, RS_BUILT, RS_COMPARED };

static void side_free(side_desc *d)
{
    for (size_t i = 0; i < d->n; i++) {
        free(d->name[i]);
        free(d->type[i]);
    }
    free(d->name);
    free(d->type);
    free(d->cls);
    for (size_t i = 0; i < d->nkey; i++)
        free(d->key[i]);
}

/* Sends a request (and frees its writer) without waiting for the reply. */
static int call(co *c, int wi, msg_writer *mw, sl_err *err)
{
    int r = msg_writer_finish(mw, &c->frame, err);
    msg_writer_free(mw);
    return r ? -1 : send_to(c, wi, &c->frame, err);
}

static msg_writer *request(co *c, int type, uint32_t nfields, uint64_t *id)
{
    *id = c->next_id++;
    return msg_writer_new(type, *id, nfields);
}

static int rpc(co *c, int wi, msg_writer *mw, uint64_t id, msg **reply, sl_err *err)
{
    if (!mw)
        return sl_err_set(err, "out of memory");
    *reply = NULL;
    int r = call(c, wi, mw, err);
    return r ? r : wait_replies(c, &id, &wi, reply, 1, err);
}

static int describe(job *j, int side, side_desc *d, sl_err *err)
{
    co *c = j->c;
    int wi = pick_worker(c, j->db[side], err);
    if (wi < 0)
        return -1;
    uint64_t id;
    msg_writer *mw = request(c, MSG_DESCRIBE, 2, &id);
    if (!mw)
        return sl_err_set(err, "out of memory");
    msg_put_cstr(mw, "db", j->db[side]);
    msg_put_cstr(mw, "table", j->table[side]);
    msg *m;
    int r = rpc(c, wi, mw, id, &m, err);
    if (r == CO_LOST && ++j->retries < CO_MAX_RETRIES)
        return describe(j, side, d, err);
    if (r)
        return -1;
    const msgpack_object *cols, *keys;
    uint32_t nc, nk;
    const char *s;
    size_t l;
    int rc = -1, bad = 0;
    sl_err why = {0};
    if (msg_get_array(m, "columns", &cols, &nc, &why) ||
        msg_get_array(m, "key", &keys, &nk, &why)) {
        bad = 1;
        goto done;
    }
    if (msg_get_str(m, "source", &s, &l, NULL) == 0)
        snprintf(d->source, sizeof d->source, "%.*s", (int)l, s);
    int64_t loose = 0;
    if (msg_get(m, "loose"))
        msg_get_int(m, "loose", &loose, NULL);
    d->loose = loose != 0;
    if (nc > CO_MAX_TABLE_COLS || nk > ENC_MAX_KEY_COLS) {
        sl_err_set(err, "table \"%s\" has too many columns (%u) or key columns (%u)",
                   j->table[side], nc, nk);
        goto done;
    }
    d->name = calloc(nc + 1, sizeof *d->name);
    d->type = calloc(nc + 1, sizeof *d->type);
    d->cls = calloc(nc + 1, sizeof *d->cls);
    if (!d->name || !d->type || !d->cls) {
        sl_err_set(err, "out of memory");
        goto done;
    }
    for (uint32_t i = 0; i < nc; i++) {
        const msgpack_object *f;
        uint32_t nf;
        const char *ts;
        size_t tl;
        int64_t cls;
        if (msg_obj_array(&cols[i], &f, &nf) || nf != 3 || msg_obj_str(&f[0], &s, &l) ||
            msg_obj_str(&f[1], &ts, &tl) || msg_obj_int(&f[2], &cls) || cls <= 0 ||
            cls >= ENC_CLASS_END) {
            sl_err_set(&why, "column %u is not [name, type, class]", i);
            bad = 1;
            goto done;
        }
        d->name[d->n] = strndup(s, l);
        d->type[d->n] = strndup(ts, tl);
        d->cls[d->n] = (int)cls;
        d->n++;
        if (!d->name[d->n - 1] || !d->type[d->n - 1]) {
            sl_err_set(err, "out of memory");
            goto done;
        }
    }
    for (uint32_t i = 0; i < nk; i++) {
        if (msg_obj_str(&keys[i], &s, &l)) {
            sl_err_set(&why, "key column %u is not a name", i);
            bad = 1;
            goto done;
        }
        if (!(d->key[d->nkey] = strndup(s, l))) {
            sl_err_set(err, "out of memory");
            goto done;
        }
        d->nkey++;
    }
    rc = 0;
done:
    msg_free(m);
    if (bad) {
        side_free(d);
        memset(d, 0, sizeof *d);
        if (reject_worker(c, wi, err, "its describe reply is malformed: %s", why.msg) == CO_LOST &&
            ++j->retries < CO_MAX_RETRIES)
            return describe(j, side, d, err);
    }
    return rc;
}

static int find_col(const side_desc *d, const char *name)
{
    for (size_t i = 0; i < d->n; i++)
        if (strcmp(d->name[i], name) == 0)
            return (int)i;
    return -1;
}

static int in_list(const char *const *list, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], name) == 0)
            return 1;
    return 0;
}

static int emit_schema(job *j, const char *column, const char *detail, const char *st,
                       const char *tt, sl_err *err)
{
    co_event ev = {.kind = CO_SCHEMA,
                   .column = column,
                   .detail = detail,
                   .source_type = st,
                   .target_type = tt};
    j->sum->schema++;
    if (j->cb->event && j->cb->event(j->cb->ctx, &ev))
        return sl_err_set(err, "stopped by the caller");
    return 0;
}

/* Decides the key and the compared columns, and reports schema drift. */
static int reconcile(job *j, side_desc *s, side_desc *t, sl_err *err)
{
    const co_diff_opts *o = j->o;
    const char *key[ENC_MAX_KEY_COLS];
    size_t nkey;
    int flags = o->strict ? ENC_STRICT : 0;
    if (o->nkey) {
        if (o->nkey > ENC_MAX_KEY_COLS)
            return sl_err_set(err, "--key names %zu columns; at most %d", o->nkey,
                              ENC_MAX_KEY_COLS);
        for (size_t i = 0; i < o->nkey; i++)
            key[i] = o->key[i];
        nkey = o->nkey;
    } else {
        if (s->nkey == 0)
            return sl_err_set(err, "table \"%s\" in source has no primary key; pass --key COLUMNS",
                              j->table[0]);
        if (t->nkey == 0)
            return sl_err_set(err, "table \"%s\" in target has no primary key; pass --key COLUMNS",
                              j->table[1]);
        int same = s->nkey == t->nkey;
        for (size_t i = 0; same && i < s->nkey; i++)
            same = strcmp(s->key[i], t->key[i]) == 0;
        if (!same) {
            char a[256] = "", b[256] = "";
            for (size_t i = 0; i < s->nkey; i++)
                snprintf(a + strlen(a), sizeof a - strlen(a), "%s%s", i ? ", " : "", s->key[i]);
            for (size_t i = 0; i < t->nkey; i++)
                snprintf(b + strlen(b), sizeof b - strlen(b), "%s%s", i ? ", " : "", t->key[i]);
            return sl_err_set(err,
                              "key columns differ: source (%s), target (%s); pass --key "
                              "to choose one",
                              a, b);
        }
        for (size_t i = 0; i < s->nkey; i++)
            key[i] = s->key[i];
        nkey = s->nkey;
    }
    j->ncols = 0;
    for (size_t i = 0; i < nkey; i++) {
        int a = find_col(s, key[i]), b = find_col(t, key[i]);
        if (a < 0 || b < 0)
            return sl_err_set(err, "key column \"%s\" does not exist in %s table \"%s\"", key[i],
                              a < 0 ? "source" : "target", a < 0 ? j->table[0] : j->table[1]);
        int cls = enc_class_common(s->cls[a], t->cls[b], flags);
        if (!cls || !enc_key_is_supported(cls))
            return sl_err_set(err,
                              "key column \"%s\" has type %s (source) and %s (target); "
                              "sluice orders keys of integer, text, uuid or bytea type only: "
                              "pass --key with such columns",
                              key[i], s->type[a], t->type[b]);
        /* Each side reads its ranges in its own column type's order: an
         * integer column numerically, a text column bytewise ('10' < '9').
         * Read as one class, such keys would be bounded and merged in an
         * order one side does not keep, so ranges would overlap or leak. */
        if ((s->cls[a] == ENC_INT && t->cls[b] == ENC_TEXT) ||
            (s->cls[a] == ENC_TEXT && t->cls[b] == ENC_INT))
            return sl_err_set(err,
                              "key column \"%s\" is %s in source (%s) but %s in target (%s), "
                              "and the two order keys differently; make the key types agree, or "
                              "compare through a view that casts the key on one side (with --key)",
                              key[i], enc_class_name(s->cls[a]), s->type[a],
                              enc_class_name(t->cls[b]), t->type[b]);
        for (size_t k = 0; k < i; k++)
            if (strcmp(key[k], key[i]) == 0)
                return sl_err_set(err, "--key names \"%s\" twice", key[i]);
        j->cols[j->ncols] = s->name[a];
        j->cls[j->ncols++] = cls;
    }
    j->nkey = nkey;
    for (size_t i = 0; i < o->ncolumns; i++) {
        if (find_col(s, o->columns[i]) < 0)
            return sl_err_set(err, "--columns: column \"%s\" does not exist in source table \"%s\"",
                              o->columns[i], j->table[0]);
        if (find_col(t, o->columns[i]) < 0)
            return sl_err_set(err, "--columns: column \"%s\" does not exist in target table \"%s\"",
                              o->columns[i], j->table[1]);
    }
    for (size_t i = 0; i < s->n; i++) {
        const char *name = s->name[i];
        if (in_list(j->cols, j->nkey, name) || in_list(o->exclude, o->nexclude, name))
            continue;
        if (o->ncolumns && !in_list(o->columns, o->ncolumns, name))
            continue;
        int b = find_col(t, name);
        if (b < 0) {
            if (emit_schema(j, name, "missing in target", s->type[i], NULL, err))
                return -1;
            continue;
        }
        int cls = enc_class_common(s->cls[i], t->cls[b], flags);
        if (!cls) {
            if (emit_schema(j, name, "incompatible types", s->type[i], t->type[b], err))
                return -1;
            continue;
        }
        /* between two strictly typed databases a changed type class is drift
         * worth reporting, even when the values still compare */
        if (s->cls[i] != t->cls[b] && !s->loose && !t->loose &&
            emit_schema(j, name, "type changed", s->type[i], t->type[b], err))
            return -1;
        if (j->ncols == CO_MAX_COLS)
            return sl_err_set(err,
                              "table \"%s\" has more than %d columns to compare; pass --columns "
                              "or --exclude-columns to compare at most %d",
                              j->table[0], CO_MAX_COLS, CO_MAX_COLS);
        j->cols[j->ncols] = name;
        j->cls[j->ncols++] = cls;
    }
    for (size_t i = 0; i < t->n; i++) {
        const char *name = t->name[i];
        if (find_col(s, name) >= 0 || in_list(o->exclude, o->nexclude, name) ||
            (o->ncolumns && !in_list(o->columns, o->ncolumns, name)))
            continue;
        if (emit_schema(j, name, "extra in target", NULL, t->type[i], err))
            return -1;
    }
    return 0;
}

static void pack_spec(job *j, msg_writer *mw, int side)
{
    msg_put_cstr(mw, "db", j->db[side]);
    msg_put_cstr(mw, "table", j->table[side]);
    msg_key(mw, "cols");
    msg_pack_array(mw, (uint32_t)j->ncols);
    for (size_t i = 0; i < j->ncols; i++)
        msg_pack_cstr(mw, j->cols[i]);
    msg_key(mw, "cls");
    msg_pack_array(mw, (uint32_t)j->ncols);
    for (size_t i = 0; i < j->ncols; i++)
        msg_pack_int(mw, j->cls[i]);
    msg_put_uint(mw, "nkey", j->nkey);
    msg_put_cstr(mw, "where", j->o->where);
    msg_put_int(mw, "flags", j->o->strict ? ENC_STRICT : 0);
    /* the job's rate, shared by the streams that run at once (one per
     * worker slot) */
    size_t streams = co_alive_workers(j->c);
    msg_put_int(mw, "max_rps",
                j->o->max_rows_per_second > 0 ? (j->o->max_rows_per_second + (int64_t)streams - 1) /
                                                    (int64_t)(streams ? streams : 1)
                                              : 0);
}
#define SPEC_FIELDS 8

static void pack_bound(msg_writer *mw, const char *key, int kind, const uint8_t *p, size_t n)
{
    msg_key(mw, key);
    msg_pack_array(mw, 2);
    msg_pack_int(mw, kind);
    if (kind == MK_UNBOUNDED)
        msg_pack_nil(mw);
    else
        msg_pack_bin(mw, p, n);
}

/* Whether key is a key of this job (well-formed for its key classes). */
static int is_job_key(const job *j, const uint8_t *key, size_t len, sl_err *why)
{
    return enc_key_check(key, len, j->cls, j->nkey, why) == 0;
}

/* A split reply: a row count, and at most nranges bounds that are keys of
 * the job in strictly rising order (ranges are built between them). 0, or
 * -1 with why saying what is wrong. */
static int check_split(const job *j, const msg *m, size_t nranges, uint64_t *rows, sl_err *why)
{
    int64_t n;
    const msgpack_object *b;
    uint32_t nb;
    if (msg_get_int(m, "rows", &n, why) || msg_get_array(m, "bounds", &b, &nb, why))
        return -1;
    if (n < 0)
        return sl_err_set(why, "claims %lld rows", (long long)n);
    if (nb > nranges)
        return sl_err_set(why, "has %u bounds for %zu ranges", nb, nranges);
    const uint8_t *prev = NULL, *k;
    size_t plen = 0, klen;
    for (uint32_t i = 0; i < nb; i++) {
        if (msg_obj_bin(&b[i], &k, &klen))
            return sl_err_set(why, "has bound %u that is not binary", i);
        if (!is_job_key(j, k, klen, why))
            return sl_err_wrap(why, "bound %u", i);
        if (prev && mk_key_cmp(prev, plen, k, klen) >= 0)
            return sl_err_set(why, "has bound %u not above bound %u", i, i - 1);
        prev = k;
        plen = klen;
    }
    *rows = (uint64_t)n;
    return 0;
}

/* Asks one side for its row count and split keys. */
static int split(job *j, int side, size_t nranges, msg **reply, uint64_t *rows, sl_err *err)
{
    int wi = pick_worker(j->c, j->db[side], err);
    if (wi < 0)
        return -1;
    uint64_t id;
    msg_writer *mw = request(j->c, MSG_SPLIT, SPEC_FIELDS + 1, &id);
    if (!mw)
        return sl_err_set(err, "out of memory");
    pack_spec(j, mw, side);
    msg_put_uint(mw, "ranges", nranges);
    int r = rpc(j->c, wi, mw, id, reply, err);
    sl_err why;
    if (r == 0 && check_split(j, *reply, nranges, rows, &why)) {
        msg_free(*reply);
        *reply = NULL;
        r = reject_worker(j->c, wi, err, "its split reply %s", why.msg);
    }
    if (r == CO_LOST && ++j->retries < CO_MAX_RETRIES)
        return split(j, side, nranges, reply, rows, err);
    return r ? -1 : 0;
}

/* Builds the ranges from n bounds (keys[i], lens[i]); range i is
 * [bound i-1, bound i). */
static int make_ranges(job *j, size_t n, const uint8_t *const *keys, const size_t *lens,
                       sl_err *err)
{
    j->r = calloc(n + 1, sizeof *j->r);
    if (!j->r)
        return sl_err_set(err, "out of memory");
    j->nr = n + 1;
    for (size_t i = 0; i < j->nr; i++) {
        range *r = &j->r[i];
        if (i > 0 && sl_buf_append(&r->lo, keys[i - 1], lens[i - 1]))
            return sl_err_set(err, "out of memory");
        if (i < n && sl_buf_append(&r->hi, keys[i], lens[i]))
            return sl_err_set(err, "out of memory");
        r->has_lo = i > 0;
        r->has_hi = i < n;
        r->worker[0] = r->worker[1] = -1;
    }
    return 0;
}

static int plan(job *j, sl_err *err)
{
    const co_diff_opts *o = j->o;
    if (o->resume_done) { /* a restarted job keeps its ranges */
        if (make_ranges(j, o->resume_nbounds, o->resume_bounds, o->resume_lens, err))
            return -1;
        for (size_t i = 0; i < j->nr; i++)
            if (o->resume_done[i]) {
                j->r[i].state[0] = j->r[i].state[1] = RS_COMPARED;
                j->ranges_done++;
            }
        j->sum->source_rows = o->resume_rows[0];
        j->sum->target_rows = o->resume_rows[1];
        j->rows_done = j->rows_expected = o->resume_rows[0] + o->resume_rows[1];
        return 0;
    }
    size_t want = j->o->ranges ? j->o->ranges : 4 * co_alive_workers(j->c);
    msg *rep[2] = {NULL, NULL};
    uint64_t rows[2];
    int rc = -1;
    for (int s = 0; s < 2; s++)
        if (split(j, s, want, &rep[s], &rows[s], err))
            goto done;
    /* split on the larger side, with enough ranges to keep each small */
    int big = rows[1] > rows[0];
    uint64_t most = rows[big];
    j->rows_expected = rows[0] + rows[1];
    if (!j->o->ranges && most / want > CO_ROWS_PER_RANGE) {
        /* the count is the worker's word: capped as the workers cap it */
        want =
            most / CO_ROWS_PER_RANGE < 1000000 ? (size_t)(most / CO_ROWS_PER_RANGE + 1) : 1000000;
        msg_free(rep[big]);
        rep[big] = NULL;
        if (split(j, big, want, &rep[big], &rows[big], err))
            goto done;
    }
    const msgpack_object *b;
    uint32_t nb;
    if (msg_get_array(rep[big], "bounds", &b, &nb, err))
        goto done;
    const uint8_t **keys = calloc((size_t)nb + 1, sizeof *keys);
    size_t *lens = calloc((size_t)nb + 1, sizeof *lens);
    int bad = 0;
    for (uint32_t i = 0; keys && lens && i < nb; i++)
        bad |= msg_obj_bin(&b[i], &keys[i], &lens[i]);
    if (!keys || !lens)
        sl_err_set(err, "out of memory");
    else if (bad)
        sl_err_set(err, "malformed split reply from a worker");
    else if (make_ranges(j, nb, keys, lens, err) == 0 &&
             (!j->cb->planned || j->cb->planned(j->cb->ctx, nb, keys, lens) == 0))
        rc = 0;
    else if (j->cb->planned)
        sl_err_set(err, "could not record the job's plan");
    free(keys);
    free(lens);
done:
    msg_free(rep[0]);
    msg_free(rep[1]);
    return rc;
}

static mk_bound range_lo(const range *r)
{
    mk_bound b = {r->has_lo ? MK_INCL : MK_UNBOUNDED, r->lo.p, r->lo.len};
    return b;
}

static mk_bound range_hi(const range *r)
{
    mk_bound b = {r->has_hi ? MK_EXCL : MK_UNBOUNDED, r->hi.p, r->hi.len};
    return b;
}

static uint64_t tree_id(job *j, size_t ri, int side)
{
    return j->r[ri].tree[side];
}

static int send_tree(job *j, size_t ri, int side, int wi, sl_err *err)
{
    range *r = &j->r[ri];
    uint64_t id;
    msg_writer *mw = request(j->c, MSG_TREE, SPEC_FIELDS + 3, &id);
    if (!mw)
        return sl_err_set(err, "out of memory");
    pack_spec(j, mw, side);
    mk_bound lo = range_lo(r), hi = range_hi(r);
    pack_bound(mw, "lo", lo.kind, lo.key, lo.len);
    pack_bound(mw, "hi", hi.kind, hi.key, hi.len);
    /* a tree id is never reused: a worker told to release one it has not
     * built yet refuses to build it later, and a re-issued task must not
     * be taken for that one */
    r->tree[side] = j->c->next_id++;
    msg_put_uint(mw, "tree", r->tree[side]);
    int rc = call(j->c, wi, mw, err);
    if (rc)
        return rc;
    co_worker *w = &j->c->w[wi];
    w->busy_req = id;
    w->busy_task = (long)(ri * 2 + (size_t)side);
    w->busy_job = j;
    /* a throttled job's range takes the time its rows need, on top */
    double need = 0;
    if (j->o->max_rows_per_second > 0 && j->nr)
        need = (double)j->rows_expected / (double)j->nr / (double)j->o->max_rows_per_second;
    w->busy_deadline = sl_now() + j->c->req_timeout_ms / 1000.0 + need;
    j->tasks++;
    r->state[side] = RS_RUNNING;
    r->worker[side] = wi;
    r->gen[side] = w->gen;
    return 0;
}

/* Reads a tree or nodes reply's "nodes", appending them to out, and checks
 * what every honest tree gives: nodes whose last keys are keys of the job,
 * rising strictly and inside range r; for a tree reply (parent NULL) at most
 * the one root, holding all `rows` of the range; for children, at least
 * one, each a level below the parent and numbered consecutively, whose rows
 * (each at least 1) add up to the parent's. Returns 0; 1 with why saying
 * what is wrong (the worker is to be rejected); -1 when memory runs out. */
static int read_nodes(job *j, const range *r, const msg *m, const mk_node *parent, uint64_t rows,
                      mk_nodelist *out, sl_err *why)
{
    const msgpack_object *nodes;
    uint32_t n;
    if (msg_get_array(m, "nodes", &nodes, &n, why))
        return 1;
    if (parent ? n == 0 : n > 1)
        return sl_err_set(why, "has %u nodes", n), 1;
    mk_bound lo = range_lo(r), hi = range_hi(r);
    size_t first = out->n;
    uint64_t sum = 0;
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *f;
        uint32_t nf;
        int64_t level, index, nrows;
        const uint8_t *hash, *key;
        size_t hl, kl;
        if (msg_obj_array(&nodes[i], &f, &nf) || nf != 5 || msg_obj_int(&f[0], &level) ||
            msg_obj_int(&f[1], &index) || msg_obj_bin(&f[2], &hash, &hl) || hl != 16 ||
            msg_obj_int(&f[3], &nrows) || msg_obj_bin(&f[4], &key, &kl) || level < 0 ||
            level > 64 || index < 0 || index > UINT32_MAX || nrows < 1)
            return sl_err_set(why, "has node %u that is not [level, index, hash, rows, key]", i), 1;
        if (parent && (uint64_t)level + 1 != parent->level)
            return sl_err_set(why, "has a child at level %lld under a node at level %u",
                              (long long)level, parent->level),
                   1;
        if (parent && out->n > first && (uint64_t)index != (uint64_t)out->v[out->n - 1].index + 1)
            return sl_err_set(why, "numbers its children out of sequence"), 1;
        if (!is_job_key(j, key, kl, why))
            return sl_err_wrap(why, "node %u", i), 1;
        if (!mk_bound_contains(&lo, &hi, key, kl))
            return sl_err_set(why, "has node %u whose key lies outside the range", i), 1;
        if (out->n > first &&
            mk_key_cmp(mk_nodelist_key(out, out->n - 1), out->v[out->n - 1].klen, key, kl) >= 0)
            return sl_err_set(why, "has node %u whose key is not above the one before", i), 1;
        if ((uint64_t)nrows > rows - sum)
            return sl_err_set(why, "has nodes holding more than the %llu rows claimed",
                              (unsigned long long)rows),
                   1;
        sum += (uint64_t)nrows;
        if (mk_nodelist_add(out, (uint32_t)level, (uint32_t)index, hash, (uint64_t)nrows, key, kl))
            return -1;
    }
    if (sum != rows)
        return sl_err_set(why, "has nodes holding %llu rows, not the %llu claimed",
                          (unsigned long long)sum, (unsigned long long)rows),
               1;
    return 0;
}

static int children_cb(void *ctx, int side, const mk_node *parent, mk_nodelist *out, sl_err *err)
{
    job *j = ctx;
    range *r = j->cur;
    uint64_t id;
    if (!worker_is(j->c, r->worker[side], r->gen[side]))
        return sl_err_set(err, "worker %d was lost", r->worker[side]), CO_LOST;
    msg_writer *mw = request(j->c, MSG_NODES, 3, &id);
    if (!mw)
        return sl_err_set(err, "out of memory");
    msg_put_uint(mw, "tree", tree_id(j, (size_t)(r - j->r), side));
    msg_put_uint(mw, "level", parent->level);
    msg_put_uint(mw, "index", parent->index);
    msg *m;
    int rc = rpc(j->c, r->worker[side], mw, id, &m, err);
    if (rc)
        return rc; /* CO_LOST passes through mk_diff to compare_range */
    sl_err why;
    rc = read_nodes(j, r, m, parent, parent->rows, out, &why);
    msg_free(m);
    if (rc > 0) /* its tree is rebuilt elsewhere, as for a lost worker */
        return reject_worker(j->c, r->worker[side], err, "its nodes reply %s", why.msg);
    return rc ? sl_err_set(err, "out of memory") : 0;
}

/* Turns an encoded key into display strings; vals point into j->scratch and
 * strs. */
static int key_display(job *j, const uint8_t *key, size_t klen, sl_buf *strs, const char **vals,
                       sl_err *err)
{
    enc_val v[ENC_MAX_KEY_COLS];
    if (enc_key_decode(key, klen, j->nkey, &j->scratch, v, err))
        return -1;
    size_t offs[ENC_MAX_KEY_COLS];
    sl_buf_reset(strs);
    for (size_t k = 0; k < j->nkey; k++) {
        offs[k] = strs->len;
        if (enc_display(strs, &v[k]) || sl_buf_putc(strs, 0))
            return sl_err_set(err, "out of memory");
    }
    for (size_t k = 0; k < j->nkey; k++)
        vals[k] = (const char *)strs->p + offs[k];
    return 0;
}

/* Whether this divergence was already reported by an earlier, interrupted
 * compare of the same range; records it otherwise. */
static int already_emitted(range *r, int kind, const uint8_t *key, size_t klen)
{
    uint32_t len = (uint32_t)klen;
    if (r->attempts > 0)
        for (size_t off = 0; off < r->emitted.len;) {
            uint32_t l;
            memcpy(&l, r->emitted.p + off + 1, 4);
            if (r->emitted.p[off] == kind && l == len && !memcmp(r->emitted.p + off + 5, key, l))
                return 1;
            off += 5 + l;
        }
    uint8_t k = (uint8_t)kind;
    if (sl_buf_append(&r->emitted, &k, 1) == 0 && sl_buf_append(&r->emitted, &len, 4) == 0)
        sl_buf_append(&r->emitted, key, klen);
    return 0;
}

static int emit_row(job *j, int kind, int status, const uint8_t *key, size_t klen,
                    const co_coldiff *cols, size_t ncols, sl_err *err)
{
    if (already_emitted(j->cur, kind, key, klen))
        return 0;
    sl_buf strs = {0};
    const char *vals[ENC_MAX_KEY_COLS];
    int rc = key_display(j, key, klen, &strs, vals, err);
    if (rc == 0) {
        co_event ev = {.kind = kind,
                       .key = key,
                       .klen = klen,
                       .key_cols = j->cols,
                       .key_vals = vals,
                       .nkey = j->nkey,
                       .cols = cols,
                       .ncols = ncols,
                       .read_at_ms = j->cur->read_at_ms,
                       .status = status};
        if (status == CO_TRANSIENT)
            j->sum->transient++;
        else if (kind == CO_MISSING)
            j->sum->missing++;
        else if (kind == CO_EXTRA)
            j->sum->extra++;
        else
            j->sum->changed++;
        if (j->cb->event && j->cb->event(j->cb->ctx, &ev))
            rc = sl_err_set(err, "stopped by the caller");
    }
    sl_buf_free(&strs);
    return rc;
}

/* A divergence seen in a compare or a re-check. Without re-checks it is
 * reported at once; with them it waits in the queue until it has persisted
 * through every re-check (confirmed). */
static int found(job *j, int kind, const uint8_t *key, size_t klen, const co_coldiff *cols,
                 size_t ncols, sl_err *err)
{
    const co_diff_opts *o = j->o;
    if (o->rechecks <= 0)
        return emit_row(j, kind, 0, key, klen, cols, ncols, err);
    if (j->recheck_mode) {
        for (size_t i = j->batch_lo; i < j->batch_lo + j->batch_n; i++) {
            recheck *q = &j->rq[i];
            if (q->hit || q->klen != klen || memcmp(q->key, key, klen))
                continue;
            q->hit = 1;
            q->kind = kind;
            if (++q->seen < o->rechecks)
                return 0;
            j->cur = &j->r[q->range];
            q->seen = -1; /* resolved: confirmed */
            return emit_row(j, kind, CO_CONFIRMED, key, klen, cols, ncols, err);
        }
        return 0;
    }
    if (j->nrq == j->caprq) {
        size_t cap = j->caprq ? j->caprq * 2 : 64;
        recheck *v = realloc(j->rq, cap * sizeof *v);
        if (!v)
            return sl_err_set(err, "out of memory");
        j->rq = v;
        j->caprq = cap;
    }
    recheck *q = &j->rq[j->nrq];
    if (!(q->key = malloc(klen ? klen : 1)))
        return sl_err_set(err, "out of memory");
    memcpy(q->key, key, klen);
    q->klen = klen;
    q->kind = kind;
    q->seen = 0;
    q->hit = 0;
    q->range = (size_t)(j->cur - j->r);
    q->due = sl_now() + o->settle_ms / 1000.0;
    j->nrq++;
    j->cur->pending++;
    return 0;
}

/* Walks two key-ordered row lists from the two sides (each row an array of
 * `width` fields whose first is the encoded key) and calls fn once per key:
 * with both rows, or with NULL for the side that lacks it. */
typedef int (*merge_fn)(job *j, const msgpack_object *a, const msgpack_object *b, sl_err *err);

static int merge_rows(job *j, const msgpack_object *ra, uint32_t na, const msgpack_object *rb,
                      uint32_t nb, uint32_t width, merge_fn fn, sl_err *err)
{
    uint32_t i = 0, k = 0;
    while (i < na || k < nb) {
        const msgpack_object *fa = NULL, *fb = NULL;
        uint32_t wa, wb;
        const uint8_t *ka = NULL, *kb = NULL;
        size_t kla = 0, klb = 0;
        if (i < na &&
            (msg_obj_array(&ra[i], &fa, &wa) || wa != width || msg_obj_bin(&fa[0], &ka, &kla)))
            return sl_err_set(err, "malformed row list from a worker");
        if (k < nb &&
            (msg_obj_array(&rb[k], &fb, &wb) || wb != width || msg_obj_bin(&fb[0], &kb, &klb)))
            return sl_err_set(err, "malformed row list from a worker");
        int c = !fa ? 1 : !fb ? -1 : mk_key_cmp(ka, kla, kb, klb);
        if (fn(j, c <= 0 ? fa : NULL, c >= 0 ? fb : NULL, err))
            return -1;
        i += c <= 0;
        k += c >= 0;
    }
    return 0;
}

/* Sends the same kind of request to both sides' workers and waits for both
 * replies' "rows". */
static int ask_both(job *j, const int workers[2], msg_writer *mw[2], uint64_t ids[2], msg *rep[2],
                    const msgpack_object *rows[2], uint32_t n[2], sl_err *err)
{
    for (int s = 0; s < 2; s++) {
        int r = call(j->c, workers[s], mw[s], err);
        if (r) {
            if (s == 0)
                msg_writer_free(mw[1]);
            return r;
        }
    }
    int r = wait_replies(j->c, ids, workers, rep, 2, err);
    if (r)
        return r;
    for (int s = 0; s < 2; s++)
        if (msg_get_array(rep[s], "rows", &rows[s], &n[s], err))
            return -1;
    return 0;
}

/* A fetched column: its encoding whole (bin: *whole set) or, for a long
 * value, its digest [head, length, hash] (into d). -1 when it is neither. */
static int fetched_value(const msgpack_object *o, const uint8_t **p, size_t *n, int *whole,
                         enc_digest *d)
{
    const msgpack_object *f;
    uint32_t nf;
    const uint8_t *head, *hash;
    size_t nhead, nhash;
    int64_t len;
    if (msg_obj_bin(o, p, n) == 0) {
        *whole = 1;
        return 0;
    }
    *whole = 0;
    if (msg_obj_array(o, &f, &nf) || nf != 3 || msg_obj_bin(&f[0], &head, &nhead) || nhead < 1 ||
        nhead > sizeof d->head || msg_obj_int(&f[1], &len) || len < 0 ||
        msg_obj_bin(&f[2], &hash, &nhash) || nhash != 16)
        return -1;
    memset(d, 0, sizeof *d);
    memcpy(d->head, head, nhead);
    d->nhead = (uint8_t)nhead;
    d->len = (uint64_t)len;
    memcpy(d->hash, hash, 16);
    return 0;
}

/* One key of a fetch: [key, [column encodings], [display text]]. A row gone
 * from one side since the row scan is reported as missing or extra. A long
 * value comes as a digest and its display text cut short; two values are
 * compared bytewise when both came whole, else by digest. */
static int fetched_row(job *j, const msgpack_object *a, const msgpack_object *b, sl_err *err)
{
    const uint8_t *key;
    size_t klen;
    msg_obj_bin(&(a ? a : b)[0], &key, &klen);
    if (!a || !b)
        return found(j, a ? CO_MISSING : CO_EXTRA, key, klen, NULL, 0, err);
    const msgpack_object *ea, *eb, *da, *db;
    uint32_t nea, neb, nda, ndb;
    if (msg_obj_array(&a[1], &ea, &nea) || msg_obj_array(&b[1], &eb, &neb) ||
        msg_obj_array(&a[2], &da, &nda) || msg_obj_array(&b[2], &db, &ndb) || nea != j->ncols ||
        neb != j->ncols || nda != j->ncols || ndb != j->ncols)
        return sl_err_set(err, "malformed fetch reply from a worker");
    co_coldiff diffs[CO_MAX_COLS];
    char *texts[4 * CO_MAX_COLS];
    size_t nd = 0, nt = 0;
    int rc = 0, flags = j->o->strict ? ENC_STRICT : 0;
    for (size_t col = j->nkey; col < j->ncols && rc == 0; col++) {
        const uint8_t *pa = NULL, *pb = NULL;
        size_t la = 0, lb = 0;
        int wa, wb;
        enc_digest dga, dgb;
        if (fetched_value(&ea[col], &pa, &la, &wa, &dga) ||
            fetched_value(&eb[col], &pb, &lb, &wb, &dgb) ||
            (wa && !wb && enc_digest_encoded(pa, la, flags, &dga)) ||
            (wb && !wa && enc_digest_encoded(pb, lb, flags, &dgb))) {
            rc = sl_err_set(err, "malformed fetch reply from a worker");
            break;
        }
        if (wa && wb ? la == lb && memcmp(pa, pb, la) == 0 : enc_digest_equal(&dga, &dgb))
            continue;
        const char *sp;
        size_t sl;
        co_coldiff *dc = &diffs[nd++];
        *dc = (co_coldiff){.column = j->cols[col]};
        if (msg_obj_str(&da[col], &sp, &sl) == 0)
            dc->source = texts[nt++] = strndup(sp, sl);
        if (msg_obj_str(&db[col], &sp, &sl) == 0)
            dc->target = texts[nt++] = strndup(sp, sl);
        for (int s = 0; s < 2; s++) {
            const enc_digest *d = s ? &dgb : &dga;
            char *hex;
            if (s ? wb : wa)
                continue;
            if (!(hex = texts[nt++] = malloc(33))) {
                rc = sl_err_set(err, "out of memory");
                break;
            }
            for (int i = 0; i < 16; i++)
                snprintf(hex + 2 * i, 3, "%02x", d->hash[i]);
            *(s ? &dc->target_hash : &dc->source_hash) = hex;
            *(s ? &dc->target_len : &dc->source_len) = d->len;
        }
    }
    if (rc == 0 && nd)
        rc = found(j, CO_CHANGED, key, klen, diffs, nd, err);
    else if (rc == 0 && !j->recheck_mode)
        j->sum->matched_on_fetch++;
    for (size_t t = 0; t < nt; t++)
        free(texts[t]);
    return rc;
}

/* Starts the same request for both sides: a writer each, with the side's
 * spec packed and room for `extra` more fields. */
static int both_requests(job *j, int type, uint32_t extra, msg_writer *mw[2], uint64_t ids[2],
                         sl_err *err)
{
    for (int s = 0; s < 2; s++) {
        if (!(mw[s] = request(j->c, type, SPEC_FIELDS + extra, &ids[s]))) {
            msg_writer_free(mw[0]);
            return sl_err_set(err, "out of memory");
        }
        pack_spec(j, mw[s], s);
    }
    return 0;
}

/* Column-level comparison of the rows whose keys are in j->changed, read
 * through workers[0] (source) and workers[1] (target). */
typedef struct keyref {
    const uint8_t *p;
    uint32_t len;
} keyref;

static int keyref_cmp(const void *a, const void *b)
{
    const keyref *x = a, *y = b;
    return mk_key_cmp(x->p, x->len, y->p, y->len);
}

/* A fetch reply's rows: [key, [encoding or digest per column], [text or
 * nil per column]], with keys rising strictly, each one of the nk keys asked for
 * (refs, sorted); a key may be absent (the row is gone). 0, or -1 with why
 * saying what is wrong. */
static int check_fetch(const job *j, const msgpack_object *rows, uint32_t n, const keyref *refs,
                       size_t nk, sl_err *why)
{
    size_t at = 0;
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *f, *enc, *txt;
        uint32_t nf, ne, nt;
        const uint8_t *key, *p;
        size_t klen, l;
        if (msg_obj_array(&rows[i], &f, &nf) || nf != 3 || msg_obj_bin(&f[0], &key, &klen) ||
            msg_obj_array(&f[1], &enc, &ne) || msg_obj_array(&f[2], &txt, &nt))
            return sl_err_set(why, "has row %u that is not [key, [encodings], [texts]]", i);
        if (ne != j->ncols || nt != j->ncols)
            return sl_err_set(why, "has row %u of %u encodings and %u texts for %zu columns", i, ne,
                              nt, j->ncols);
        for (size_t c = 0; c < j->ncols; c++) {
            const char *sp;
            int whole;
            enc_digest d;
            if (fetched_value(&enc[c], &p, &l, &whole, &d) ||
                (!msg_obj_is_nil(&txt[c]) && msg_obj_str(&txt[c], &sp, &l)))
                return sl_err_set(why,
                                  "has row %u whose column %zu is not an encoding (or digest) "
                                  "and text",
                                  i, c);
        }
        while (at < nk && mk_key_cmp(refs[at].p, refs[at].len, key, klen) < 0)
            at++;
        if (at == nk || mk_key_cmp(refs[at].p, refs[at].len, key, klen) != 0)
            return sl_err_set(why,
                              "has row %u under a key that was not asked for (or out of "
                              "order)",
                              i);
        at++; /* each key once, in rising order */
    }
    return 0;
}

/* How many of a reply's key-ordered rows have a key below (or, with
 * or_equal, at most) k; -1 when a row is malformed. */
static int64_t rows_below(const msgpack_object *rows, uint32_t n, const uint8_t *k, size_t kl,
                          int or_equal)
{
    uint32_t i = 0;
    for (; i < n; i++) {
        const msgpack_object *f;
        uint32_t nf;
        const uint8_t *p;
        size_t l;
        if (msg_obj_array(&rows[i], &f, &nf) || nf < 1 || msg_obj_bin(&f[0], &p, &l))
            return -1;
        int c = mk_key_cmp(p, l, k, kl);
        if (c > 0 || (c == 0 && !or_equal))
            break;
    }
    return i;
}

static int compare_changed(job *j, const int workers[2], sl_err *err)
{
    int rc = 0;
    /* asked for in key order: the replies are merged as sorted lists, and a
     * re-check batch comes in due order, not key order */
    keyref *refs = calloc(j->nchanged + 1, sizeof *refs);
    if (!refs)
        return sl_err_set(err, "out of memory");
    size_t nk = 0;
    for (size_t off = 0; off < j->changed.len && nk < j->nchanged; nk++) {
        memcpy(&refs[nk].len, j->changed.p + off, 4);
        refs[nk].p = j->changed.p + off + 4;
        off += 4 + refs[nk].len;
    }
    qsort(refs, nk, sizeof *refs, keyref_cmp);
    /* a reply row is 2 items a column (5 for a digest) and a few more: keys
     * are asked for in batches whose replies stay within half the
     * per-frame item limit; a worker whose reply grew past
     * MSG_REPLY_SOFT_MAX answers the first "done" keys only: rows up to the
     * keys both sides answered are compared, and the rest asked for again */
    size_t batch = MSG_MAX_ITEMS / 2 / (5 * j->ncols + 8);
    for (size_t from = 0; from < nk && rc == 0;) {
        size_t cnt = nk - from < batch ? nk - from : batch;
        msg_writer *mw[2] = {NULL, NULL};
        uint64_t ids[2];
        msg *rep[2] = {NULL, NULL};
        const msgpack_object *rows[2];
        uint32_t n[2];
        if (both_requests(j, MSG_FETCH, 2, mw, ids, err)) {
            rc = -1;
            break;
        }
        for (int s = 0; s < 2; s++) {
            msg_put_int(mw[s], "sizes", 1); /* digests and partial replies welcome */
            msg_key(mw[s], "keys");
            msg_pack_array(mw[s], (uint32_t)cnt);
            for (size_t k = from; k < from + cnt; k++)
                msg_pack_bin(mw[s], refs[k].p, refs[k].len);
        }
        rc = ask_both(j, workers, mw, ids, rep, rows, n, err);
        for (int s = 0; s < 2 && rc == 0; s++) {
            sl_err why;
            if (check_fetch(j, rows[s], n[s], refs + from, cnt, &why))
                rc = reject_worker(j->c, workers[s], err, "its fetch reply %s", why.msg);
        }
        size_t answered = cnt;
        for (int s = 0; rc == 0 && s < 2; s++) {
            const msgpack_object *d = msg_get(rep[s], "done");
            int64_t v;
            if (d && (msg_obj_int(d, &v) || v < 1 || (uint64_t)v > cnt))
                rc = reject_worker(j->c, workers[s], err,
                                   "its fetch reply answers an impossible number of keys");
            else if (d && (size_t)v < answered)
                answered = (size_t)v;
        }
        if (rc == 0 && answered < cnt) {
            const keyref *next = &refs[from + answered];
            for (int s = 0; rc == 0 && s < 2; s++) {
                int64_t m = rows_below(rows[s], n[s], next->p, next->len, 0);
                if (m < 0)
                    rc = sl_err_set(err, "malformed fetch reply from a worker");
                n[s] = (uint32_t)m;
            }
        }
        if (rc == 0)
            rc = merge_rows(j, rows[0], n[0], rows[1], n[1], 3, fetched_row, err);
        msg_free(rep[0]);
        msg_free(rep[1]);
        from += answered;
    }
    free(refs);
    return rc;
}

/* One key of a span: [key, row hash]. Equal keys with different hashes are
 * gathered for one fetch. */
static int span_row(job *j, const msgpack_object *a, const msgpack_object *b, sl_err *err)
{
    const uint8_t *key, *ha, *hb;
    size_t klen, hla, hlb;
    msg_obj_bin(&(a ? a : b)[0], &key, &klen);
    if (!a || !b)
        return found(j, a ? CO_MISSING : CO_EXTRA, key, klen, NULL, 0, err);
    if (msg_obj_bin(&a[1], &ha, &hla) || msg_obj_bin(&b[1], &hb, &hlb))
        return sl_err_set(err, "malformed rows reply from a worker");
    if (hla == hlb && memcmp(ha, hb, hla) == 0)
        return 0;
    uint32_t len = (uint32_t)klen;
    if (sl_buf_append(&j->changed, &len, 4) || sl_buf_append(&j->changed, key, klen))
        return sl_err_set(err, "out of memory");
    j->nchanged++;
    return 0;
}

/* Who reads a span's rows for side s: they come from the database, not
 * from the tree, so any worker reaching it will do. The tree's holder may
 * be busy streaming its next range; an idle worker answers sooner. */
static void pick_readers(job *j, int readers[2])
{
    for (int s = 0; s < 2; s++) /* a holder gone since: -1, lost at send if no one else */
        readers[s] = worker_is(j->c, j->cur->worker[s], j->cur->gen[s]) ? j->cur->worker[s] : -1;
    for (int s = 0; s < 2; s++) {
        int h = readers[s];
        if (h >= 0 && !j->c->w[h].busy_req)
            continue;
        int same = -1; /* an idle worker already reading the other side */
        for (size_t i = 0; i < j->c->nw; i++) {
            co_worker *w = &j->c->w[i];
            if (!w->alive || w->busy_req || sl_now() < w->shunned_until ||
                !worker_has_db(w, j->db[s]))
                continue;
            if ((int)i == readers[1 - s]) {
                same = (int)i;
                continue;
            }
            readers[s] = (int)i;
            same = -1;
            break;
        }
        if (same >= 0) /* reading both sides in turn beats waiting for a busy one */
            readers[s] = same;
    }
}

/* A rows reply: [key, row hash] for keys of the job rising strictly inside
 * the span [lo, hi] asked for. 0, or -1 with why saying what is wrong. */
static int check_rows(const job *j, const msgpack_object *rows, uint32_t n, const mk_bound *lo,
                      const mk_bound *hi, sl_err *why)
{
    const uint8_t *prev = NULL;
    size_t plen = 0;
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *f;
        uint32_t nf;
        const uint8_t *key, *h;
        size_t klen, hl;
        if (msg_obj_array(&rows[i], &f, &nf) || nf != 2 || msg_obj_bin(&f[0], &key, &klen) ||
            msg_obj_bin(&f[1], &h, &hl) || hl != 16)
            return sl_err_set(why, "has row %u that is not [key, hash]", i);
        if (!is_job_key(j, key, klen, why))
            return sl_err_wrap(why, "row %u", i);
        if (!mk_bound_contains(lo, hi, key, klen))
            return sl_err_set(why, "has row %u whose key lies outside the span asked for", i);
        if (prev && mk_key_cmp(prev, plen, key, klen) >= 0)
            return sl_err_set(why, "has row %u whose key is not above the one before", i);
        prev = key;
        plen = klen;
    }
    return 0;
}

/* The last key of a reply that stopped early ("more"), into *k. */
static int last_key(const msgpack_object *rows, uint32_t n, const uint8_t **k, size_t *kl)
{
    const msgpack_object *f;
    uint32_t nf;
    return n < 1 || msg_obj_array(&rows[n - 1], &f, &nf) || nf < 1 || msg_obj_bin(&f[0], k, kl) ? -1
                                                                                                : 0;
}

/* A differing span: both sides' (key, row hash) lists, merged. A reply
 * that grew past MSG_REPLY_SOFT_MAX stops early ("more"): rows up to the
 * smaller of the stopping keys are compared, and the span is read again
 * from there. */
static int span_rows(job *j, const mk_bound *lo, const mk_bound *hi, sl_err *err)
{
    msg_writer *mw[2] = {NULL, NULL};
    uint64_t ids[2];
    msg *rep[2] = {NULL, NULL};
    const msgpack_object *rows[2];
    uint32_t n[2];
    int rc = 0, more = 1;
    mk_bound from = *lo;
    sl_buf stop = {0};
    while (rc == 0 && more) {
        if (both_requests(j, MSG_ROWS, 3, mw, ids, err)) {
            rc = -1;
            break;
        }
        for (int s = 0; s < 2; s++) {
            msg_put_int(mw[s], "sizes", 1);
            pack_bound(mw[s], "lo", from.kind, from.key, from.len);
            pack_bound(mw[s], "hi", hi->kind, hi->key, hi->len);
        }
        sl_buf_reset(&j->changed);
        j->nchanged = 0;
        int readers[2];
        pick_readers(j, readers);
        rc = ask_both(j, readers, mw, ids, rep, rows, n, err);
        for (int s = 0; s < 2 && rc == 0; s++) {
            sl_err why;
            if (check_rows(j, rows[s], n[s], &from, hi, &why))
                rc = reject_worker(j->c, readers[s], err, "its rows reply %s", why.msg);
        }
        const uint8_t *lim = NULL;
        size_t liml = 0;
        more = 0;
        for (int s = 0; rc == 0 && s < 2; s++) {
            const uint8_t *k;
            size_t kl;
            if (!msg_get(rep[s], "more"))
                continue;
            if (last_key(rows[s], n[s], &k, &kl))
                rc = sl_err_set(err, "malformed rows reply from a worker");
            else if (!more || mk_key_cmp(k, kl, lim, liml) < 0)
                lim = k, liml = kl;
            more = 1;
        }
        if (rc == 0 && more) {
            for (int s = 0; rc == 0 && s < 2; s++) {
                int64_t m = rows_below(rows[s], n[s], lim, liml, 1);
                if (m < 0)
                    rc = sl_err_set(err, "malformed rows reply from a worker");
                n[s] = (uint32_t)m;
            }
            sl_buf_reset(&stop);
            if (rc == 0 && sl_buf_append(&stop, lim, liml))
                rc = sl_err_set(err, "out of memory");
            from = (mk_bound){MK_EXCL, stop.p, stop.len};
        }
        if (rc == 0 && (rc = merge_rows(j, rows[0], n[0], rows[1], n[1], 2, span_row, err)) == 0)
            rc = j->nchanged ? compare_changed(j, readers, err) : 0;
        msg_free(rep[0]);
        msg_free(rep[1]);
        rep[0] = rep[1] = NULL;
    }
    sl_buf_free(&stop);
    return rc;
}

/* Reads the gathered spans' rows, if any. */
static int span_flush(job *j, sl_err *err)
{
    if (j->pend_n == 0)
        return 0;
    mk_bound lo = {j->pend_lo_kind, j->pend_lo.p, j->pend_lo.len};
    mk_bound hi = {j->pend_hi_kind, j->pend_hi.p, j->pend_hi.len};
    j->pend_n = 0;
    return span_rows(j, &lo, &hi, err);
}

#define CO_SPANS_GATHERED 64 /* about 2,000 rows a request at most */

/* mk_diff's spans come in key order: one that starts where the gathered
 * ones end joins them; any other first sends them. */
static int span_cb(void *ctx, const mk_bound *lo, const mk_bound *hi, sl_err *err)
{
    job *j = ctx;
    int joins = j->pend_n > 0 && j->pend_hi_kind != MK_UNBOUNDED && lo->kind != MK_UNBOUNDED &&
                j->pend_hi_kind != lo->kind && j->pend_hi.len == lo->len &&
                memcmp(j->pend_hi.p, lo->key, lo->len) == 0;
    if (!joins) {
        int rc = span_flush(j, err);
        if (rc)
            return rc;
        sl_buf_reset(&j->pend_lo);
        if (sl_buf_append(&j->pend_lo, lo->key, lo->len))
            return sl_err_set(err, "out of memory");
        j->pend_lo_kind = lo->kind;
    }
    sl_buf_reset(&j->pend_hi);
    if (sl_buf_append(&j->pend_hi, hi->key, hi->len))
        return sl_err_set(err, "out of memory");
    j->pend_hi_kind = hi->kind;
    return ++j->pend_n >= CO_SPANS_GATHERED ? span_flush(j, err) : 0;
}

/* Tells the worker holding (or building) a side's tree to drop it. */
static int release_side(job *j, size_t ri, int s)
{
    int wi = j->r[ri].worker[s];
    if (!worker_is(j->c, wi, j->r[ri].gen[s]))
        return 0;
    uint64_t id;
    msg_writer *mw = request(j->c, MSG_RELEASE, 1, &id);
    if (!mw)
        return -1;
    msg_put_uint(mw, "tree", tree_id(j, ri, s));
    return call(j->c, wi, mw, NULL) == -1 ? -1 : 0;
}

static int release(job *j, size_t ri)
{
    int rc = 0;
    for (int s = 0; s < 2; s++)
        rc |= release_side(j, ri, s);
    return rc;
}

/* A range is finished when its trees were compared and none of its keys
 * waits for a re-check: only then is it recorded, so a restarted
 * coordinator never skips a divergence that was still being re-checked. */
static int finish_range(job *j, size_t ri, sl_err *err)
{
    range *r = &j->r[ri];
    sl_buf_free(&r->emitted);
    j->sum->source_rows += r->rows[0];
    j->sum->target_rows += r->rows[1];
    j->rows_done += r->rows[0] + r->rows[1];
    j->ranges_done++;
    if (j->cb->range_done && j->cb->range_done(j->cb->ctx, ri, r->rows[0], r->rows[1]))
        return sl_err_set(err, "could not record a finished range");
    if (j->cb->progress) {
        co_progress p = {j->ranges_done, j->nr, j->rows_done, j->rows_expected};
        j->cb->progress(j->cb->ctx, &p);
    }
    return 0;
}

/* Fetches the due keys of the re-check queue again, one batch. Keys still
 * differing stay queued until confirmed; keys now equal are transient. The
 * queue is in due order, since every key waits the same settle time. */
static int run_rechecks(job *j, double now, sl_err *err)
{
    size_t n = 0;
    while (n < j->nrq && n < 1000 && j->rq[n].due <= now)
        n++;
    if (n == 0)
        return 0;
    int workers[2];
    for (int s = 0; s < 2; s++)
        if ((workers[s] = pick_worker(j->c, j->db[s], err)) < 0)
            return CO_LOST;
    sl_buf_reset(&j->changed);
    j->nchanged = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t len = (uint32_t)j->rq[i].klen;
        j->rq[i].hit = 0;
        if (sl_buf_append(&j->changed, &len, 4) || sl_buf_append(&j->changed, j->rq[i].key, len))
            return sl_err_set(err, "out of memory");
        j->nchanged++;
    }
    j->recheck_mode = 1;
    j->batch_lo = 0;
    j->batch_n = n;
    int rc = compare_changed(j, workers, err);
    j->recheck_mode = 0;
    if (rc)
        return rc;
    for (size_t i = 0; i < n && rc == 0; i++) {
        recheck *q = &j->rq[i];
        if (!q->hit) { /* equal again: it was a change in flight */
            j->cur = &j->r[q->range];
            rc = emit_row(j, q->kind, CO_TRANSIENT, q->key, q->klen, NULL, 0, err);
            q->seen = -1;
        } else if (q->seen >= 0) {
            q->due = now + j->o->settle_ms / 1000.0;
        }
    }
    /* the batch leaves the head of the queue: resolved keys are dropped
     * (finishing their range when it has no other), the rest go to the end */
    recheck *later = calloc(n, sizeof *later);
    if (!later)
        return sl_err_set(err, "out of memory");
    size_t nl = 0;
    for (size_t i = 0; i < n; i++) {
        recheck *q = &j->rq[i];
        if (q->seen >= 0) {
            later[nl++] = *q;
            continue;
        }
        range *r = &j->r[q->range];
        free(q->key);
        if (--r->pending == 0 && r->compared && rc == 0)
            rc = finish_range(j, q->range, err);
    }
    memmove(j->rq, j->rq + n, (j->nrq - n) * sizeof *j->rq);
    memcpy(j->rq + (j->nrq - n), later, nl * sizeof *later);
    j->nrq = j->nrq - n + nl;
    free(later);
    return rc;
}

static int compare_range(job *j, size_t ri, sl_err *err)
{
    range *r = &j->r[ri];
    j->cur = r;
    mk_bound lo = range_lo(r), hi = range_hi(r);
    int rc;
    for (;;) {
        j->pend_n = 0;
        rc = mk_diff(&r->root[0], &r->root[1], &lo, &hi, children_cb, span_cb, j, err);
        if (rc == MK_BAD_CHILDREN || rc == MK_BAD_CHILDREN + 1) {
            sl_err why = *err;
            rc = reject_worker(j->c, r->worker[rc - MK_BAD_CHILDREN], err, "its nodes reply: %s",
                               why.msg);
        }
        if (rc == 0)
            rc = span_flush(j, err);
        if (rc != CO_LOST)
            break;
        r->attempts++;
        /* a lost tree holder: its side is rebuilt elsewhere, then compared
         * again; a lost reader only: compare again now */
        if (!worker_is(j->c, r->worker[0], r->gen[0]) || !worker_is(j->c, r->worker[1], r->gen[1]))
            return 0;
        if (r->attempts > 100)
            return sl_err_set(err, "range %zu: gave up after 100 lost workers", ri);
    }
    release(j, ri);
    mk_nodelist_free(&r->root[0]);
    mk_nodelist_free(&r->root[1]);
    if (rc)
        return rc;
    r->state[0] = r->state[1] = RS_COMPARED;
    r->compared = 1;
    return r->pending ? 0 : finish_range(j, ri, err);
}

/* ---- the job's fiber ---------------------------------------------------- */

static void worker_idle(co_worker *w)
{
    if (w->busy_req && w->busy_job)
        w->busy_job->tasks--;
    w->busy_req = 0;
    w->busy_job = NULL;
}

static void wake_all(co *c)
{
    for (job *j = c->jobs; j; j = j->link)
        j->wake = 1;
}

/* After workers were lost: every tree they were building or holding is
 * built again elsewhere. */
static void requeue_lost(job *j)
{
    j->lost_seen = j->c->lost;
    for (size_t i = 0; i < j->nr; i++)
        for (int s = 0; s < 2; s++) {
            range *r = &j->r[i];
            int wi = r->worker[s];
            if ((r->state[s] == RS_RUNNING || r->state[s] == RS_BUILT) && wi >= 0 &&
                !worker_is(j->c, wi, r->gen[s])) {
                r->state[s] = RS_PENDING;
                r->worker[s] = -1;
                mk_nodelist_free(&r->root[s]);
            }
        }
    j->next = 0;
}

static int wait_replies(co *c, const uint64_t *ids, const int *from, msg **replies, size_t n,
                        sl_err *err)
{
    job *j = c->active;
    if (n > 2 || !j)
        return sl_err_set(err, "internal error: waiting for %zu replies outside a job", n);
    job_wait *w = &j->wait;
    memset(w, 0, sizeof *w);
    w->n = n;
    for (size_t k = 0; k < n; k++) {
        w->ids[k] = ids[k];
        w->from[k] = from[k];
        w->gen[k] = from[k] >= 0 ? c->w[from[k]].gen : 0;
        replies[k] = NULL;
    }
    double deadline = sl_now() + c->req_timeout_ms / 1000.0;
    int rc = 0;
    for (;;) {
        size_t got = 0;
        for (size_t k = 0; k < n; k++)
            got += w->rep[k] != NULL;
        if (got == n)
            break;
        for (size_t k = 0; k < n; k++)
            if (!w->rep[k] && !worker_is(c, from[k], w->gen[k])) {
                rc = CO_LOST;
                sl_err_set(err, "worker %d was lost", from[k]);
                goto out;
            }
        if (j->cancel) {
            rc = sl_err_set(err, "job cancelled");
            goto out;
        }
        if (sl_now() >= deadline) { /* alive, but not answering: as good as lost */
            for (size_t k = 0; k < n; k++)
                if (!w->rep[k])
                    time_out(c, from[k], "request");
            rc = CO_LOST;
            sl_err_set(err, "a worker did not answer within %d s", c->req_timeout_ms / 1000);
            goto out;
        }
        j->wake_at = deadline; /* the loop wakes it sooner for a reply or a loss */
        fiber_yield(j->fb);
    }
    for (size_t k = 0; k < n; k++) {
        replies[k] = w->rep[k];
        w->rep[k] = NULL;
    }
    for (size_t k = 0; k < n && rc == 0; k++) {
        if (msg_type(replies[k]) == MSG_ERROR) {
            const char *s;
            size_t l;
            if (msg_get_str(replies[k], "error", &s, &l, NULL) == 0)
                sl_err_set(err, "%.*s", (int)l, s);
            else
                sl_err_set(err, "a worker failed without saying why");
            rc = -1;
        }
    }
out:
    for (size_t k = 0; k < n; k++) {
        if (rc != 0) { /* the caller gets the error, not the replies */
            msg_free(replies[k]);
            replies[k] = NULL;
        }
        msg_free(w->rep[k]);
        w->rep[k] = NULL;
    }
    w->n = 0;
    return rc;
}

/* Whether some live worker reaches db. */
static int can_reach(co *c, const char *db)
{
    for (size_t i = 0; i < c->nw; i++)
        if (c->w[i].alive && worker_has_db(&c->w[i], db))
            return 1;
    return 0;
}

/* The job's steps, on its fiber: describe, plan, then compare each range
 * whose two trees the loop has collected (ready queue), and the re-checks,
 * until every range is done. 0 or -1 with err. */
static int job_run(job *j, sl_err *err)
{
    co *c = j->c;
    co_summary *sum = j->sum;
    j->phase = JOB_DESCRIBE;
    for (int s = 0; s < 2; s++)
        if (describe(j, s, &j->sd[s], err))
            return -1;
    snprintf(sum->source_name, sizeof sum->source_name, "%s", j->sd[0].source);
    snprintf(sum->target_name, sizeof sum->target_name, "%s", j->sd[1].source);
    j->phase = JOB_PLAN;
    if (reconcile(j, &j->sd[0], &j->sd[1], err) || plan(j, err))
        return -1;
    sum->ranges = j->nr;
    sum->workers = co_alive_workers(c);
    j->lost_seen = c->lost;
    j->phase = JOB_RANGES;
    while (j->ranges_done < j->nr) {
        if (j->cancel)
            return sl_err_set(err, "job cancelled");
        if (j->fatal) {
            *err = j->err;
            return -1;
        }
        if (j->lost_seen != c->lost)
            requeue_lost(j);
        if (!can_reach(c, j->db[0]) || !can_reach(c, j->db[1])) {
            if (!j->stranded)
                j->stranded = sl_now();
            if (sl_now() - j->stranded >
                3.0 * (c->hb_timeout_ms > 0 ? c->hb_timeout_ms : 10000) / 1000)
                return sl_err_set(err, "no live worker can reach database \"%s\"%s%s%s",
                                  can_reach(c, j->db[0]) ? j->db[1] : j->db[0],
                                  c->rejected[0] ? " (" : "", c->rejected,
                                  c->rejected[0] ? ")" : "");
        } else {
            j->stranded = 0;
        }
        if (j->nrq) {
            int rr = run_rechecks(j, sl_now(), err);
            if (rr && rr != CO_LOST)
                return -1;
        }
        if (j->ready_head < j->nready) {
            size_t ri = j->ready[j->ready_head++];
            if (j->ready_head == j->nready)
                j->ready_head = j->nready = 0;
            range *rg = &j->r[ri];
            /* queued twice when rebuilt after a loss: compared once */
            if (rg->state[0] == RS_BUILT && rg->state[1] == RS_BUILT && compare_range(j, ri, err))
                return -1;
            continue;
        }
        j->wake_at = sl_now() + (j->nrq ? 0.05 : 0.2);
        fiber_yield(j->fb);
    }
    return 0;
}

/* Leaves no worker building or holding a tree of the job, and frees what
 * the job built. */
static void job_cleanup(job *j)
{
    co *c = j->c;
    for (size_t wi = 0; wi < c->nw; wi++)
        if (c->w[wi].busy_job == j)
            worker_idle(&c->w[wi]);
    for (size_t i = 0; i < j->nr; i++) {
        for (int s = 0; s < 2; s++)
            if (j->r[i].state[s] == RS_RUNNING || j->r[i].state[s] == RS_BUILT)
                release_side(j, i, s); /* a worker still building it stops */
        sl_buf_free(&j->r[i].lo);
        sl_buf_free(&j->r[i].hi);
        mk_nodelist_free(&j->r[i].root[0]);
        mk_nodelist_free(&j->r[i].root[1]);
        sl_buf_free(&j->r[i].emitted);
    }
    free(j->r);
    j->r = NULL;
    j->nr = 0;
    for (size_t i = 0; i < j->nrq; i++)
        free(j->rq[i].key);
    free(j->rq);
    j->rq = NULL;
    j->nrq = 0;
    free(j->ready);
    j->ready = NULL;
    side_free(&j->sd[0]);
    side_free(&j->sd[1]);
    memset(j->sd, 0, sizeof j->sd);
    sl_buf_free(&j->scratch);
    sl_buf_free(&j->changed);
    sl_buf_free(&j->pend_lo);
    sl_buf_free(&j->pend_hi);
}

static void job_main(void *arg)
{
    job *j = arg;
    sl_err e = {0};
    int rc = job_run(j, &e);
    job_cleanup(j);
    j->sum->elapsed = sl_now() - j->t0;
    if (rc) {
        j->err = e;
        if (!j->err.msg[0])
            sl_err_set(&j->err, "out of memory");
    }
    j->outcome = rc == 0 ? CO_JOB_DONE : j->cancel ? CO_JOB_CANCELLED : CO_JOB_FAILED;
    j->phase = JOB_ENDED;
}

/* ---- the loop ------------------------------------------------------------ */

/* A range task's reply (a tree's root), taken in the loop: the range's side
 * is built, or the worker is dropped for a bad reply (its task goes to
 * another), or the job fails with the worker's error. */
static void tree_reply(co *c, int wi, msg *m)
{
    co_worker *w = &c->w[wi];
    job *j = w->busy_job;
    size_t ri = (size_t)w->busy_task / 2;
    int side = (int)(w->busy_task % 2);
    worker_idle(w);
    j->wake = 1;
    if (msg_type(m) == MSG_ERROR) {
        const char *s;
        size_t l;
        if (msg_get_str(m, "error", &s, &l, NULL) == 0)
            sl_err_set(&j->err, "%s: %.*s", side ? "target" : "source", (int)l, s);
        else
            sl_err_set(&j->err, "a worker failed without saying why");
        j->fatal = 1;
        msg_free(m);
        return;
    }
    int64_t rows;
    range *rg = &j->r[ri];
    mk_nodelist_reset(&rg->root[side]);
    sl_err why;
    int bad = msg_get_int(m, "rows", &rows, &why) ? 1
              : rows < 0 ? (sl_err_set(&why, "claims %lld rows", (long long)rows), 1)
                         : read_nodes(j, rg, m, NULL, (uint64_t)rows, &rg->root[side], &why);
    msg_free(m);
    if (bad < 0) {
        sl_err_set(&j->err, "out of memory");
        j->fatal = 1;
        return;
    }
    if (bad) { /* requeue_lost gives the task to another worker */
        mk_nodelist_reset(&rg->root[side]);
        reject_worker(c, wi, NULL, "its tree reply for range %zu %s", ri, why.msg);
        return;
    }
    rg->rows[side] = (uint64_t)rows;
    rg->state[side] = RS_BUILT;
    if (rg->state[0] != RS_BUILT || rg->state[1] != RS_BUILT)
        return;
    rg->read_at_ms = sl_wall_ms();
    if (j->nready == j->capready) {
        size_t cap = j->capready ? 2 * j->capready : 16;
        size_t *p = realloc(j->ready, cap * sizeof *p);
        if (!p) {
            sl_err_set(&j->err, "out of memory");
            j->fatal = 1;
            return;
        }
        j->ready = p;
        j->capready = cap;
    }
    j->ready[j->nready++] = ri;
}

/* Files a worker's reply with the job waiting for it: a range task's with
 * its job, a request's with the job whose fiber waits for it from that very
 * registration. Anything else answers what was settled or given up on. */
static void route_reply(co *c, int wi, msg *m)
{
    co_worker *w = &c->w[wi];
    uint64_t id = msg_id(m);
    if (w->busy_req && id == w->busy_req)
        return tree_reply(c, wi, m);
    for (job *j = c->jobs; j; j = j->link)
        for (size_t k = 0; k < j->wait.n; k++)
            if (j->wait.ids[k] == id && j->wait.from[k] == wi && j->wait.gen[k] == w->gen &&
                !j->wait.rep[k]) {
                j->wait.rep[k] = m;
                j->wake = 1;
                return;
            }
    msg_free(m);
}

/* The next pending task of job j that worker w can serve, as ri * 2 + side;
 * SIZE_MAX when none. The cursor j->next only moves past tasks no longer
 * pending (requeue_lost resets it). */
static size_t next_task(job *j, const co_worker *w)
{
    while (j->next < 2 * j->nr && j->r[j->next / 2].state[j->next % 2] != RS_PENDING)
        j->next++;
    int has[2] = {worker_has_db(w, j->db[0]), worker_has_db(w, j->db[1])};
    if (!has[0] && !has[1])
        return SIZE_MAX;
    for (size_t t = j->next; t < 2 * j->nr; t++)
        if (j->r[t / 2].state[t % 2] == RS_PENDING && has[t % 2])
            return t;
    return SIZE_MAX;
}

/* Gives each idle worker a range task: the highest priority first, then
 * the job with the fewest tasks running (older first on a tie), never past
 * a job's cap. Tasks are never taken back, so a high job waits for at most
 * the one range task a worker is in the middle of. */
static void dispatch(co *c)
{
    for (size_t wi = 0; wi < c->nw; wi++) {
        co_worker *w = &c->w[wi];
        if (w->busy_req || !w->alive || sl_now() < w->shunned_until)
            continue;
        job *best = NULL;
        size_t best_t = 0;
        for (job *j = c->jobs; j; j = j->link) {
            if (j->phase != JOB_RANGES || j->cancel || j->fatal || (j->cap && j->tasks >= j->cap))
                continue;
            if (best && (j->prio < best->prio || (j->prio == best->prio && j->tasks >= best->tasks)))
                continue;
            size_t t = next_task(j, w);
            if (t == SIZE_MAX)
                continue;
            best = j;
            best_t = t;
        }
        if (!best)
            continue;
        sl_err e = {0};
        int r = send_tree(best, best_t / 2, (int)(best_t % 2), (int)wi, &e);
        if (r && r != CO_LOST) { /* a lost worker's task stays pending */
            best->err = e;
            best->fatal = 1;
            best->wake = 1;
        }
    }
}

/* A request unanswered past its deadline: the worker is alive (it
 * heartbeats) but stuck or dropped the reply. Its work goes elsewhere, and
 * it gets none for a while. */
static void time_out(co *c, int wi, const char *what)
{
    char line[200];
    snprintf(line, sizeof line,
             "worker %d did not answer a %s within %d s; its work goes to the others", wi, what,
             c->req_timeout_ms / 1000);
    if (c->log_fn)
        c->log_fn(c->log_ctx, line);
    double pause = c->req_timeout_ms / 1000.0;
    c->w[wi].shunned_until = sl_now() + (pause > 10 ? pause : 10);
    lose_worker(c, &c->w[wi]);
}

/* A range task unanswered past its deadline (time_out). */
static void check_deadlines(co *c)
{
    double now = sl_now();
    for (size_t i = 0; i < c->nw; i++) {
        co_worker *w = &c->w[i];
        if (!w->alive || !w->busy_req || now < w->busy_deadline)
            continue;
        time_out(c, (int)i, "range task");
    }
}

static void run_jobs(co *c)
{
    double now = sl_now();
    for (job *j = c->jobs; j; j = j->link) {
        if (j->phase == JOB_ENDED || !(j->wake || now >= j->wake_at))
            continue;
        j->wake = 0;
        c->active = j;
        fiber_resume(j->fb);
        c->active = NULL;
    }
}

int co_run(co *c, int timeout_ms, sl_err *err)
{
    dispatch(c);
    run_jobs(c);
    dispatch(c);
    double now = sl_now(), until = now + timeout_ms / 1000.0;
    for (job *j = c->jobs; j; j = j->link)
        if (j->phase != JOB_ENDED && (j->wake || j->wake_at < until))
            until = j->wake ? now : j->wake_at;
    int left = (int)((until - now) * 1000);
    zmq_pollitem_t it[2] = {{c->sock, 0, ZMQ_POLLIN, 0}, {c->svc_sock, 0, ZMQ_POLLIN, 0}};
    int r = zmq_poll(it, c->svc_sock ? 2 : 1, left > 0 ? left : 0);
    if (r < 0 && zmq_errno() != EINTR)
        return sl_err_set(err, "poll: %s", zmq_strerror(zmq_errno()));
    if (r > 0 && c->svc_sock && (it[1].revents & ZMQ_POLLIN))
        c->svc_fn(c->svc_ctx);
    for (int k = 0; k < 4096; k++) { /* bounded: the client socket gets its turn */
        int events = 0;
        size_t sz = sizeof events;
        if (zmq_getsockopt(c->sock, ZMQ_EVENTS, &events, &sz) != 0 || !(events & ZMQ_POLLIN))
            break;
        int wi;
        msg *m;
        int rr = read_worker(c, &wi, &m, err);
        if (rr < 0)
            return -1;
        if (rr > 0)
            route_reply(c, wi, m);
    }
    check_workers(c);
    check_deadlines(c);
    run_jobs(c);
    return 0;
}

co_job *co_job_start(co *c, const co_diff_opts *o, const co_callbacks *cb, sl_err *err)
{
    job *j = calloc(1, sizeof *j);
    if (!j)
        return sl_err_set(err, "out of memory"), NULL;
    j->c = c;
    j->o = o;
    j->cb = cb;
    j->sum = &j->own_sum;
    j->db[0] = o->source_db;
    j->db[1] = o->target_db;
    j->table[0] = o->table;
    j->table[1] = o->target_table ? o->target_table : o->table;
    j->prio = o->priority;
    j->cap = o->max_tasks;
    j->t0 = sl_now();
    j->wake = 1;
    /* deep enough for the drill-down's recursion under the sanitizers;
     * only the pages touched cost memory */
    if (!(j->fb = fiber_new(job_main, j, 8u << 20))) {
        free(j);
        return sl_err_set(err, "out of memory"), NULL;
    }
    job **tail = &c->jobs;
    while (*tail)
        tail = &(*tail)->link;
    *tail = j;
    return j;
}

int co_job_state(const co_job *j, co_summary *sum, sl_err *err)
{
    if (j->phase != JOB_ENDED)
        return CO_JOB_RUNNING;
    if (sum)
        *sum = j->own_sum;
    if (err && j->outcome != CO_JOB_DONE)
        *err = j->err;
    return j->outcome;
}

void co_job_cancel(co_job *j)
{
    j->cancel = 1;
    j->wake = 1;
}

void co_job_free(co_job *j)
{
    if (!j)
        return;
    co *c = j->c;
    /* a cancelled job never waits again: its fiber runs to its end */
    j->cancel = 1;
    for (int turns = 0; j->phase != JOB_ENDED && turns < 1000; turns++) {
        c->active = j;
        fiber_resume(j->fb);
        c->active = NULL;
    }
    for (job **pp = &c->jobs; *pp; pp = &(*pp)->link)
        if (*pp == j) {
            *pp = j->link;
            break;
        }
    if (j->phase == JOB_ENDED) /* else its stack is kept: it holds what only it can free */
        fiber_free(j->fb);
    free(j);
}

int co_diff(co *c, const co_diff_opts *o, const co_callbacks *cb, co_summary *sum, sl_err *err)
{
    co_job *j = co_job_start(c, o, cb, err);
    if (!j)
        return -1;
    while (co_job_state(j, NULL, NULL) == CO_JOB_RUNNING)
        if (co_run(c, 200, err)) {
            co_job_free(j);
            return -1;
        }
    int st = co_job_state(j, sum, err);
    co_job_free(j);
    return st == CO_JOB_DONE ? 0 : -1;
}

int co_wait_workers(co *c, size_t n, int timeout_ms, sl_err *err)
{
    double deadline = sl_now() + timeout_ms / 1000.0;
    while (co_alive_workers(c) < n) {
        double left = deadline - sl_now();
        if (left <= 0)
            return sl_err_set(err, "only %zu of %zu workers connected within %d s",
                              co_alive_workers(c), n, timeout_ms / 1000);
        if (co_run(c, (int)(left * 1000) + 1, err))
            return -1;
    }
    return 0;
}

void co_set_request_timeout(co *c, int ms)
{
    c->req_timeout_ms = ms > 0 ? ms : 300000;
}

/* ---- a job without sockets, for the fuzzer ---------------------------- */

static int fuzz_event(void *ctx, const co_event *ev)
{
    (void)ev;
    ++*(size_t *)ctx;
    return 0;
}

/* The key (int, text) of fuzz_job's table. */
static void fuzz_key(sl_buf *out, int64_t id, const char *name)
{
    enc_val a = {.kind = ENC_V_INT, .i = id},
            b = {.kind = ENC_V_TEXT, .p = name, .len = strlen(name)};
    enc_key(out, ENC_INT, &a, NULL);
    enc_key(out, ENC_TEXT, &b, NULL);
}

int co_fuzz_reply(int type, const uint8_t *frame, size_t len)
{
    static const char *const cols[] = {"id", "name", "v"};
    co_diff_opts o = {.source_db = "s", .target_db = "t", .table = "x"};
    size_t events = 0;
    co_callbacks cb = {.event = fuzz_event, .ctx = &events};
    co_summary sum = {0};
    range r = {.has_lo = 1, .has_hi = 1, .worker = {-1, -1}};
    job j = {.o = &o, .cb = &cb, .sum = &sum, .r = &r, .nr = 1, .cur = &r, .ncols = 3, .nkey = 2};
    for (size_t i = 0; i < 3; i++)
        j.cols[i] = cols[i];
    j.cls[0] = ENC_INT;
    j.cls[1] = j.cls[2] = ENC_TEXT;
    fuzz_key(&r.lo, 1, "a");
    fuzz_key(&r.hi, 9, "z");
    sl_buf asked = {0}; /* keys a fetch asked for: (1, "b") .. (8, "b") */
    keyref refs[8];
    for (int k = 0; k < 8; k++)
        fuzz_key(&asked, k + 1, "b");
    for (size_t k = 0, each = asked.len / 8; k < 8; k++)
        refs[k] = (keyref){asked.p + k * each, (uint32_t)each};
    mk_nodelist out = {0};
    sl_err why, err;
    int rc = 1;
    msg *m = msg_decode(frame, len, &why);
    if (!m || msg_type(m) != MSG_REPLY)
        goto done;
    const msgpack_object *rows;
    uint32_t n;
    uint64_t count;
    int64_t claimed;
    mk_bound lo = range_lo(&r), hi = range_hi(&r);
    switch (type) {
    case MSG_SPLIT:
        rc = check_split(&j, m, 8, &count, &why) ? 1 : 0;
        break;
    case MSG_TREE:
        if (msg_get_int(m, "rows", &claimed, &why) == 0 && claimed >= 0)
            rc = read_nodes(&j, &r, m, NULL, (uint64_t)claimed, &out, &why);
        break;
    case MSG_NODES: {
        mk_node parent = {.level = 2, .index = 3, .rows = 100};
        rc = read_nodes(&j, &r, m, &parent, parent.rows, &out, &why);
        break;
    }
    case MSG_ROWS:
    case MSG_FETCH:
        if (msg_get_array(m, "rows", &rows, &n, &why))
            break;
        if (type == MSG_ROWS ? check_rows(&j, rows, n, &lo, &hi, &why)
                             : check_fetch(&j, rows, n, refs, 8, &why))
            break;
        /* accepted: merged against itself (all equal) and against nothing
         * (every row reported) */
        merge_fn fn = type == MSG_ROWS ? span_row : fetched_row;
        uint32_t width = type == MSG_ROWS ? 2 : 3;
        rc = merge_rows(&j, rows, n, rows, n, width, fn, &err) ||
                     merge_rows(&j, rows, n, NULL, 0, width, fn, &err)
                 ? -1
                 : 0;
        if (rc == 0 && events != n)
            abort(); /* a broken invariant: each row once */
        break;
    }
done:
    msg_free(m);
    mk_nodelist_free(&out);
    sl_buf_free(&asked);
    sl_buf_free(&r.lo);
    sl_buf_free(&r.hi);
    sl_buf_free(&r.emitted);
    sl_buf_free(&j.scratch);
    sl_buf_free(&j.changed);
    return rc;
}
