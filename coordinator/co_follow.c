/* co_follow: change-driven verification. A changes job has no ranges: a
 * worker beside each database follows that database's changes (follow),
 * the job asks each for the keys changed since (keys, every 100 ms; the ask
 * acks the previous batch, so the worker confirms its slot only past what
 * this job holds), queues every key for a first look after the settle time
 * (co_recheck_add_change) and runs the re-check queue. A side whose worker
 * is lost is followed again by another: the slot resumes from its confirmed
 * position. At the end (duration over, cancel, failure) the workers are
 * told to unfollow: slots and publications are dropped. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "co_impl.h"

#define FOLLOW_POLL_S 0.1
#define FOLLOW_LIVE_MAX 1024 /* more live changes jobs than that: no orphan is dropped */

static void slot_name(const job *j, int side, char *out, size_t cap)
{
    snprintf(out, cap, "%s_%d", j->o->follow_name ? j->o->follow_name : "sluicecv_local", side);
}

/* Has a worker follow side's changes: 0, CO_LOST (none now, or lost on
 * the way: try again later), or -1 with err (the database refused). */
static int start_follow(job *j, int side, sl_err *err)
{
    co *c = j->c;
    int wi = co_pick_worker(c, j->db[side], err);
    if (wi < 0)
        return CO_LOST;
    uint64_t id;
    msg_writer *mw = co_request(c, MSG_FOLLOW, &id);
    if (!mw)
        return sl_err_set(err, "out of memory");
    char slot[160];
    slot_name(j, side, slot, sizeof slot);
    co_pack_spec(j, mw, side);
    msg_put_cstr(mw, "slot", slot);
    /* the jobs whose slots are not orphans, however idle they look (one
     * whose follower is being replaced): without the list none is dropped */
    int64_t live[FOLLOW_LIVE_MAX];
    size_t nlive =
        j->cb->live_follows ? j->cb->live_follows(j->cb->ctx, live, FOLLOW_LIVE_MAX) : SIZE_MAX;
    if (nlive != SIZE_MAX && nlive < FOLLOW_LIVE_MAX) {
        msg_key(mw, "live");
        msg_pack_array(mw, (uint32_t)nlive);
        for (size_t i = 0; i < nlive; i++)
            msg_pack_int(mw, live[i]);
    }
    msg *rep = NULL;
    j->following[side] = 1; /* from the ask on: the worker may have created it */
    int rc = co_rpc(c, wi, mw, id, &rep, err);
    msg_free(rep);
    if (rc == -1)
        return sl_err_wrap(err, "%s", side ? "target" : "source");
    if (rc)
        return rc;
    j->fw[side] = wi;
    j->fgen[side] = c->w[wi].gen;
    return 0;
}

/* One keys reply of side: every key checked and queued, the lsn to ack
 * next kept. 0, CO_LOST (the worker was dropped for a bad reply), or -1
 * with err (the stream stopped on the worker). */
static int take_keys(job *j, int side, const msg *m, uint64_t *nkeys, sl_err *err)
{
    const msg_obj *keys, *at = NULL;
    uint32_t n, nat = 0;
    int64_t lsn = 0, lag = 0;
    sl_err why = {0};
    if (msg_get_array(m, "keys", &keys, &n, &why) || msg_get_int(m, "lsn", &lsn, &why) ||
        msg_get_int(m, "lag", &lag, &why))
        return co_reject_worker(j->c, j->fw[side], err, "its keys reply %s", why.msg);
    /* each key's commit time; an older worker sends none (no latencies) */
    const msg_obj *ao = msg_get(m, "at");
    if (ao && !msg_obj_is_nil(ao) && (msg_get_array(m, "at", &at, &nat, &why) || nat != n))
        return co_reject_worker(j->c, j->fw[side], err,
                                "its keys reply has %u commit times (\"at\") for %u keys%s%s",
                                (unsigned)nat, (unsigned)n, why.msg[0] ? ": " : "", why.msg);
    /* every element checked before any key is queued: a bad reply queues none */
    for (uint32_t i = 0; at && i < n; i++) {
        int64_t t;
        if (msg_obj_int(msg_obj_at(at, i), &t))
            return co_reject_worker(j->c, j->fw[side], err,
                                    "its keys reply holds a commit time (\"at\") that is not an "
                                    "integer");
    }
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *k;
        size_t kl;
        if (msg_obj_bin(msg_obj_at(keys, i), &k, &kl) || !co_is_job_key(j, k, kl, &why))
            return co_reject_worker(j->c, j->fw[side], err, "its keys reply holds a bad key (%s)",
                                    why.msg);
    }
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *k;
        size_t kl;
        int64_t t = 0;
        msg_obj_bin(msg_obj_at(keys, i), &k, &kl);
        if (at)
            msg_obj_int(msg_obj_at(at, i), &t);
        if (co_recheck_add_change(j, k, kl, t, err))
            return -1;
    }
    *nkeys += n;
    if (lsn > 0 && (j->nfbat[side] == 0 || (uint64_t)lsn > j->fbat[side][j->nfbat[side] - 1].lsn)) {
        if (j->nfbat[side] == j->capfbat[side]) {
            size_t cap = j->capfbat[side] ? 2 * j->capfbat[side] : 16;
            struct fbatch *v = realloc(j->fbat[side], cap * sizeof *v);
            if (!v)
                return sl_err_set(err, "out of memory");
            j->fbat[side] = v;
            j->capfbat[side] = cap;
        }
        j->fbat[side][j->nfbat[side]++] = (struct fbatch){(uint64_t)lsn, j->rq_seq};
    }
    j->flag[side] = lag > 0 ? (uint64_t)lag : 0;
    const msg_obj *e = msg_get(m, "error");
    const char *p;
    size_t len;
    if (e && !msg_obj_is_nil(e) && msg_obj_str(e, &p, &len) == 0)
        return sl_err_set(err, "%s: following changes stopped: %.*s", side ? "target" : "source",
                          (int)len, p);
    return 0;
}

/* Moves each side's ack past the batches whose keys were all looked at:
 * those whose entries (seq up to the batch's) left the queue. A key named
 * again while it waited has no entry of its own: the older one that
 * serves it holds the ack back, as it should. */
static void advance_acks(job *j)
{
    uint64_t oldest = UINT64_MAX;
    for (size_t i = 0; i < j->nrq; i++)
        if (j->rq[i].seq < oldest)
            oldest = j->rq[i].seq;
    for (int s = 0; s < 2; s++) {
        size_t k = 0;
        while (k < j->nfbat[s] && j->fbat[s][k].seq < oldest)
            j->fack[s] = j->fbat[s][k++].lsn;
        if (k) {
            memmove(j->fbat[s], j->fbat[s] + k, (j->nfbat[s] - k) * sizeof *j->fbat[s]);
            j->nfbat[s] -= k;
        }
    }
}

/* Asks both followers for their keys at once: 0, CO_LOST, or -1 with err. */
static int poll_keys(job *j, uint64_t *nkeys, sl_err *err)
{
    co *c = j->c;
    advance_acks(j);
    uint64_t ids[2];
    int from[2], side[2];
    size_t n = 0;
    for (int s = 0; s < 2; s++) {
        if (j->fw[s] < 0 || !co_worker_is(c, j->fw[s], j->fgen[s]))
            continue;
        char slot[160];
        slot_name(j, s, slot, sizeof slot);
        msg_writer *mw = co_request(c, MSG_KEYS, &ids[n]);
        if (!mw)
            return sl_err_set(err, "out of memory");
        msg_put_cstr(mw, "slot", slot);
        msg_put_uint(mw, "ack", j->fack[s]);
        int rc = co_call(c, j->fw[s], mw, err);
        if (rc)
            return rc;
        from[n] = j->fw[s];
        side[n++] = s;
    }
    if (n == 0)
        return 0;
    msg *rep[2] = {NULL, NULL};
    int rc = co_wait_replies(c, ids, from, rep, n, err);
    for (size_t k = 0; k < n && rc == 0; k++)
        rc = take_keys(j, side[k], rep[k], nkeys, err);
    msg_free(rep[0]);
    msg_free(rep[1]);
    return rc;
}

/* Looks at the due keys, a batch at a time (a few, so the loop breathes). */
static int run_due(job *j, sl_err *err)
{
    for (int b = 0; b < 8 && j->nrq && j->rq[0].due <= sl_now(); b++) {
        j->r[0].read_at_ms = sl_wall_ms();
        int rr = co_run_rechecks(j, sl_now(), err);
        if (rr == CO_LOST)
            return 0; /* a worker went: the keys stay queued */
        if (rr)
            return -1;
    }
    return 0;
}

static void progress(job *j, uint64_t nkeys)
{
    if (!j->cb->progress)
        return;
    co_progress p = {.changes = 1,
                     .keys = nkeys,
                     .checked = j->checked,
                     .backlog = j->nrq,
                     .lag = {j->flag[0], j->flag[1]}};
    j->cb->progress(j->cb->ctx, &p);
}

/* Hands the current window to the callback and starts the next; last: the
 * job ends (then a refusal is only the store's loss, not the job's). 0, or
 * -1 with err. */
static int close_window(job *j, int last, sl_err *err)
{
    double now = sl_now();
    co_window w = {.length_s = now - j->win.start,
                   .checked = j->checked - j->win.checked0 + j->win.missing + j->win.extra +
                              j->win.changed + j->win.transient,
                   .missing = j->win.missing,
                   .extra = j->win.extra,
                   .changed = j->win.changed,
                   .transient = j->win.transient,
                   .latency = j->win.lat,
                   .nlatency = j->win.nlat,
                   .last = last};
    int rc = 0;
    if (j->cb->window && j->cb->window(j->cb->ctx, &w) && !last)
        rc = sl_err_set(err, "the window's drift row could not be recorded");
    double *lat = j->win.lat;
    size_t cap = j->win.caplat;
    memset(&j->win, 0, sizeof j->win);
    j->win.start = now;
    j->win.checked0 = j->checked;
    j->win.lat = lat; /* the array is reused */
    j->win.caplat = cap;
    return rc;
}

/* Closes the window when its time is up: 0, or -1 with err. */
static int tick_window(job *j, sl_err *err)
{
    double len = (j->o->window_ms > 0 ? (double)j->o->window_ms : 60000.0) / 1000.0;
    return sl_now() - j->win.start >= len ? close_window(j, 0, err) : 0;
}

static int follow(job *j, sl_err *err);

int co_follow_run(job *j, sl_err *err)
{
    if (j->o->rechecks < 1)
        return sl_err_setc(err, SL_INVALID, "change-driven verification needs 1 re-check or more");
    memset(&j->win, 0, sizeof j->win);
    j->win.start = sl_now();
    j->win.checked0 = j->checked;
    int rc = follow(j, err);
    /* the last window, partial, however the job ends */
    sl_err we = {0};
    close_window(j, 1, &we);
    free(j->win.lat);
    memset(&j->win, 0, sizeof j->win);
    return rc;
}

static int follow(job *j, sl_err *err)
{
    co *c = j->c;
    if (!(j->r = calloc(1, sizeof *j->r)))
        return sl_err_set(err, "out of memory");
    j->nr = 1;
    j->r[0].worker[0] = j->r[0].worker[1] = -1;
    /* no tree is built: the loop gives a changes job no range task */
    j->r[0].state[0] = j->r[0].state[1] = RS_COMPARED;
    double end = j->o->duration_ms > 0 ? sl_now() + j->o->duration_ms / 1000.0 : 0;
    double next_progress = 0, stranded = 0;
    uint64_t nkeys = 0;
    for (int ending = 0; !ending;) {
        if (j->cancel)
            return sl_err_set(err, "job cancelled");
        ending = end > 0 && sl_now() >= end;
        int missing = 0;
        for (int s = 0; s < 2; s++) {
            if (j->fw[s] >= 0 && co_worker_is(c, j->fw[s], j->fgen[s]))
                continue;
            j->fw[s] = -1;
            sl_err fe = {0};
            int rc = start_follow(j, s, &fe);
            if (rc == -1) {
                *err = fe;
                return -1;
            }
            missing |= rc != 0;
        }
        if (!missing)
            stranded = 0;
        else if (!stranded)
            stranded = sl_now();
        else if (sl_now() - stranded >
                 3.0 * (c->hb_timeout_ms > 0 ? c->hb_timeout_ms : 10000) / 1000)
            return sl_err_setc(err, SL_LOST_WORKER,
                               "no live worker could follow the changes of \"%s\" and \"%s\"",
                               j->db[0], j->db[1]);
        int rc = poll_keys(j, &nkeys, err);
        if (rc == -1)
            return -1;
        if (run_due(j, err) || tick_window(j, err))
            return -1;
        if (sl_now() >= next_progress || ending) {
            progress(j, nkeys);
            next_progress = sl_now() + 1;
        }
        if (!ending) {
            j->wake_at = sl_now() + FOLLOW_POLL_S;
            fiber_yield(j->fb);
        }
    }
    /* the duration is over: the keys taken last get their looks too */
    double drain_end = sl_now() + (j->o->rechecks + 1) * (j->o->settle_ms / 1000.0) + 30;
    while (j->nrq && sl_now() < drain_end) {
        if (j->cancel)
            return sl_err_set(err, "job cancelled");
        if (run_due(j, err) || tick_window(j, err))
            return -1;
        j->wake_at = j->nrq ? j->rq[0].due : sl_now();
        fiber_yield(j->fb);
    }
    progress(j, nkeys);
    j->sum->keys_checked = j->checked;
    return 0;
}

void co_follow_end(job *j)
{
    co *c = j->c;
    j->closing = 1;
    for (int s = 0; s < 2; s++) {
        if (!j->following[s])
            continue;
        int wi = j->fw[s] >= 0 && co_worker_is(c, j->fw[s], j->fgen[s])
                     ? j->fw[s]
                     : co_pick_worker(c, j->db[s], NULL);
        char slot[160];
        slot_name(j, s, slot, sizeof slot);
        uint64_t id;
        msg_writer *mw = wi >= 0 ? co_request(c, MSG_UNFOLLOW, &id) : NULL;
        sl_err e = {0};
        msg *rep = NULL;
        int rc = -1;
        if (mw) {
            msg_put_cstr(mw, "db", j->db[s]);
            msg_put_cstr(mw, "slot", slot);
            /* a coordinator shutting down leaves the job running in its
             * store, to be resumed: the slot stays, and replays from the
             * last ack what this one took and had not looked at */
            if (j->freeing)
                msg_put_int(mw, "keep", 1);
            rc = co_rpc(c, wi, mw, id, &rep, &e);
        } else {
            sl_err_set(&e, "no worker reaches database \"%s\"", j->db[s]);
        }
        msg_free(rep);
        if (rc && c->log_fn) {
            char line[900];
            snprintf(line, sizeof line,
                     "replication slot %s may be left behind (a follow dropped it next time): %s",
                     slot, e.msg);
            c->log_fn(c->log_ctx, line);
        }
        j->following[s] = 0;
    }
    j->closing = 0;
}
