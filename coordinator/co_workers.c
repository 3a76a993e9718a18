/* co_workers: the worker registry (hello, heartbeat, loss, rejection, the
 * slot and gen of each registration) and the transport (frames out through
 * c->send, messages in through co_read_worker, one-off requests). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "../proto/curve.h"
#include "co_impl.h"

co *co_new(void *zctx, const char *endpoint, const char *curve_secret, sl_err *err)
{
    co *c = calloc(1, sizeof *c);
    if (!c)
        return sl_err_set(err, "out of memory"), NULL;
    /* ids never repeat across coordinator restarts, so a late reply to a
     * previous incarnation's request cannot be taken for a new one */
    c->next_id = (uint64_t)time(NULL) << 32;
    c->req_timeout_ms = 300000;
    c->send = co_zmq_send;
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

/* Frees the database names a worker announced. */
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

void co_worker_idle(co_worker *w)
{
    if (w->busy_req && w->busy_job) {
        w->busy_job->tasks--;
        w->busy_job->busy_s += sl_now() - w->busy_since;
    }
    w->busy_req = 0;
    w->busy_job = NULL;
    w->busy_merge = 0;
}

/* Resumes every job at the next turn of the loop. */
static void wake_all(co *c)
{
    for (job *j = c->jobs; j; j = j->link)
        j->wake = 1;
}

void co_lose_worker(co *c, co_worker *w)
{
    if (!w->alive)
        return;
    w->alive = 0;
    co_worker_idle(w);
    c->lost++;
    wake_all(c); /* jobs waiting on it re-issue its work */
}

/* Whether the connection ident was dropped lately (the rejected ring). */
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
int co_reject_worker(co *c, int wi, sl_err *err, const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    snprintf(c->rejected, sizeof c->rejected, "worker %d dropped: %s", wi, why);
    if (c->log_fn)
        c->log_fn(c->log_ctx, c->rejected);
    co_lose_worker(c, &c->w[wi]);
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
int co_worker_is(const co *c, int wi, uint32_t gen)
{
    return wi >= 0 && (size_t)wi < c->nw && c->w[wi].alive && c->w[wi].gen == gen;
}

int co_zmq_send(co *c, const co_worker *w, const sl_buf *frame)
{
    if (zmq_send(c->sock, w->ident, w->identlen, ZMQ_SNDMORE) < 0 ||
        zmq_send(c->sock, frame->p, frame->len, 0) < 0)
        return zmq_errno();
    return 0;
}

/* Sends a frame to a worker. A worker that is gone (its connection closed:
 * EHOSTUNREACH under ROUTER_MANDATORY) is lost at once, without waiting for
 * its heartbeats to stop, and CO_LOST returned. */
static int send_to(co *c, int wi, const sl_buf *frame, sl_err *err)
{
    if (wi < 0 || !c->w[wi].alive)
        return sl_err_set(err, "worker %d was lost", wi), CO_LOST;
    co_worker *w = &c->w[wi];
    int e = c->send(c, w, frame);
    if (e) {
        sl_err_set(err, "cannot send to worker %d: %s", wi, zmq_strerror(e));
        if (e == EHOSTUNREACH) {
            co_lose_worker(c, w);
            return CO_LOST;
        }
        return -1;
    }
    return 0;
}

/* The slot of identity ident, or -1. */
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
    const msg_obj *dbs;
    uint32_t n;
    if (wi < 0) {
        if (len > sizeof c->w[0].ident || (wi = free_slot(c)) < 0)
            return -1;
        memset(&c->w[wi], 0, sizeof c->w[wi]);
        memcpy(c->w[wi].ident, ident, len);
        c->w[wi].identlen = len;
    }
    co_worker *w = &c->w[wi];
    co_lose_worker(c, w);
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
        if (msg_obj_str(msg_obj_at(dbs, i), &p, &l) == 0 && (w->dbs[w->ndbs] = strndup(p, l)))
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
void co_check_workers(co *c)
{
    if (c->hb_timeout_ms <= 0)
        return;
    double now = sl_now();
    for (size_t i = 0; i < c->nw; i++) {
        co_worker *w = &c->w[i];
        if (w->alive && now - w->last_seen > c->hb_timeout_ms / 1000.0)
            co_lose_worker(c, w);
    }
}

/* Reads one message from the worker socket, registering hellos and
 * heartbeats and answering garbage with an error. Returns 1 with a known
 * worker's reply, 0 when there was nothing for the caller, -1 on failure. */
int co_read_worker(co *c, int *wi, msg **out, sl_err *err)
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
            co_reject_worker(c, w, NULL, "sent an undecodable frame (%s)", e.msg);
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
        int64_t stream = 0;
        if ((t == MSG_HELLO || t == MSG_HEARTBEAT) && msg_get(m, "trees") &&
            msg_get_int(m, "trees", &trees, NULL) == 0 && trees >= 0)
            c->w[w].trees = (uint64_t)trees;
        if (t == MSG_HELLO || t == MSG_HEARTBEAT) {
            c->w[w].can_stream =
                msg_get(m, "stream") && msg_get_int(m, "stream", &stream, NULL) == 0 && stream == 1;
            c->w[w].can_spans =
                msg_get(m, "spans") && msg_get_int(m, "spans", &stream, NULL) == 0 && stream == 1;
            c->w[w].can_merge =
                msg_get(m, "merge") && msg_get_int(m, "merge", &stream, NULL) == 0 && stream == 1;
        }
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

/* A request unanswered past its deadline: the worker is alive (it
 * heartbeats) but stuck or dropped the reply. Its work goes elsewhere, and
 * it gets none for a while. */
void co_time_out(co *c, int wi, const char *what)
{
    char line[200];
    snprintf(line, sizeof line,
             "worker %d did not answer a %s within %d s; its work goes to the others", wi, what,
             c->req_timeout_ms / 1000);
    if (c->log_fn)
        c->log_fn(c->log_ctx, line);
    double pause = c->req_timeout_ms / 1000.0;
    c->w[wi].shunned_until = sl_now() + (pause > 10 ? pause : 10);
    co_lose_worker(c, &c->w[wi]);
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

void co_set_request_timeout(co *c, int ms)
{
    c->req_timeout_ms = ms > 0 ? ms : 300000;
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
    msg_writer *w = msg_writer_new(MSG_SHUTDOWN, 0);
    if (w && msg_writer_finish(w, &f, NULL) == 0)
        for (size_t i = 0; i < c->nw; i++)
            send_to(c, (int)i, &f, NULL);
    msg_writer_free(w);
    sl_buf_free(&f);
}

int co_worker_has_db(const co_worker *w, const char *db)
{
    for (size_t i = 0; i < w->ndbs; i++)
        if (strcmp(w->dbs[i], db) == 0)
            return 1;
    return 0;
}

/* Whether some live worker reaches db. */
int co_can_reach(co *c, const char *db)
{
    for (size_t i = 0; i < c->nw; i++)
        if (c->w[i].alive && co_worker_has_db(&c->w[i], db))
            return 1;
    return 0;
}

/* A live worker that reaches db for describe, split and re-checks: an idle
 * one first (a busy one answers between row batches, but an idle one at
 * once), else the first. */
int co_pick_worker(co *c, const char *db, sl_err *err)
{
    int any = -1, shunned = -1;
    double now = sl_now();
    for (size_t i = 0; i < c->nw; i++)
        if (c->w[i].alive && co_worker_has_db(&c->w[i], db)) {
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
    return sl_err_setc(err, SL_LOST_WORKER, "no connected worker can reach database \"%s\"%s%s%s",
                       db, c->rejected[0] ? " (" : "", c->rejected, c->rejected[0] ? ")" : "");
}

msg_writer *co_request(co *c, int type, uint64_t *id)
{
    *id = c->next_id++;
    return msg_writer_new(type, *id);
}

/* Sends a request (and frees its writer) without waiting for the reply. */
int co_call(co *c, int wi, msg_writer *mw, sl_err *err)
{
    int r = msg_writer_finish(mw, &c->frame, err);
    msg_writer_free(mw);
    return r ? -1 : send_to(c, wi, &c->frame, err);
}

int co_rpc(co *c, int wi, msg_writer *mw, uint64_t id, msg **reply, sl_err *err)
{
    if (!mw)
        return sl_err_set(err, "out of memory");
    *reply = NULL;
    int r = co_call(c, wi, mw, err);
    return r ? r : co_wait_replies(c, &id, &wi, reply, 1, err);
}
