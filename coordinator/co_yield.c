/* co_yield: audits that yield to production (issue 15, item 5).
 *
 * --max-replica-lag: the job's fiber asks a worker reaching each watched
 * replica for its lag (a lag request) about every second; while one is
 * over the limit the loop dispatches none of the job's range tasks (those
 * running finish, compares of built ranges go on), and the progress says
 * why. The coordinator never opens a database: a worker measures.
 *
 * --chunk-time: from the range tasks ended (seconds per row read) or, before
 * any, from the throttle, a pending range expected to read for longer than
 * 1.5 times the target is split by a bounded split request into pieces of
 * about the target. A range keeps its first piece and the others are
 * appended to j->r; each piece names its planned range (range.planned), which is
 * recorded done (co_callbacks.range_done, the store's resume unit) only once
 * all its pieces are: a restarted coordinator redoes a partly compared
 * planned range whole, exactly as an unsplit one. Pieces cover the range
 * exactly once: split keys lie strictly inside it and rise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "co_impl.h"

#define LAG_PROBE_S 1.0     /* how often a watched replica is asked */
#define SPLIT_MAX_PIECES 64 /* one split request's pieces at most */
#define SPLIT_SCAN 64       /* ranges looked at per turn of the job's loop */

/* Reports progress with the pause (or its end) to the job's callback. */
static void tell_pause(job *j)
{
    if (!j->cb->progress)
        return;
    co_progress p = {.ranges_done = j->ranges_done,
                     .ranges = j->nr,
                     .rows_done = j->rows_done,
                     .rows_expected = j->rows_expected,
                     .paused = j->lag_paused ? j->pause_msg : NULL};
    j->cb->progress(j->cb->ctx, &p);
}

/* One replica's lag in seconds (-1: unknown) through a worker reaching it:
 * 0, -1 with err (the worker's error: not a replica, no such database), or
 * CO_LOST (ask again later). */
static int probe(job *j, const char *db, double *lag, char *name, size_t cap, sl_err *err)
{
    int wi = co_pick_worker(j->c, db, err);
    if (wi < 0)
        return sl_err_setc(err, SL_INVALID,
                           "--replica %s: no live worker reaches a database of that name", db);
    uint64_t id;
    msg_writer *mw = co_request(j->c, MSG_LAG, &id);
    if (!mw)
        return sl_err_set(err, "out of memory");
    msg_put_cstr(mw, "db", db);
    msg *m;
    int rc = co_rpc(j->c, wi, mw, id, &m, err);
    if (rc)
        return rc;
    int64_t ms;
    if (msg_get_int(m, "lag_ms", &ms, err)) {
        msg_free(m);
        return co_reject_worker(j->c, wi, err, "its lag reply has no lag_ms");
    }
    const char *p;
    size_t n;
    if (msg_get_str(m, "name", &p, &n, NULL) == 0) /* the server, for people: no secret */
        snprintf(name, cap, "%s (%.*s)", db, (int)n, p);
    msg_free(m);
    *lag = ms < 0 ? -1 : (double)ms / 1000.0;
    return 0;
}

int co_lag_check(job *j, int force, sl_err *err)
{
    const co_diff_opts *o = j->o;
    double now = sl_now();
    if (!o->nreplicas || (!force && now < j->lag_next))
        return 0;
    int over = 0;
    char why[sizeof j->pause_msg] = "";
    for (size_t i = 0; i < o->nreplicas; i++) {
        double lag = 0;
        char name[200];
        snprintf(name, sizeof name, "%s", o->replicas[i]);
        int rc = probe(j, o->replicas[i], &lag, name, sizeof name, err);
        if (rc == CO_LOST) /* keep the last state; ask again soon */
            continue;
        if (rc) /* the worker's error names the server */
            return -1;
        if (lag >= 0 && lag <= o->max_replica_lag_s)
            continue;
        if (!over++) {
            if (lag < 0)
                snprintf(why, sizeof why,
                         "replica %s lag unknown (not streaming, or nothing replayed yet) > %gs",
                         name, o->max_replica_lag_s);
            else
                snprintf(why, sizeof why, "replica %s lag %.1fs > %gs", name, lag,
                         o->max_replica_lag_s);
        }
    }
    j->lag_next = sl_now() + LAG_PROBE_S;
    int was = j->lag_paused;
    j->lag_paused = over > 0;
    if (over && strcmp(why, j->pause_msg) != 0) {
        snprintf(j->pause_msg, sizeof j->pause_msg, "%s", why);
        if (!was)
            j->paused_since = sl_now();
        tell_pause(j);
    } else if (!over && was) {
        j->sum->paused_s += sl_now() - j->paused_since;
        j->pause_msg[0] = '\0';
        tell_pause(j);
    }
    return 0;
}

double co_row_seconds(const job *j)
{
    if (j->task_rows >= 100)
        return j->task_s / (double)j->task_rows;
    if (j->o->max_rows_per_second > 0) { /* each stream gets its share of the rate */
        size_t streams = co_alive_workers(j->c);
        return (double)(streams ? streams : 1) / (double)j->o->max_rows_per_second;
    }
    return 0;
}

/* Whether range r may be split now: pending on both sides, not being split,
 * and never compared: a compare cut short by a lost worker left the range
 * the divergences it reported (range.emitted), which pieces would not know,
 * and so would report again. */
static int splittable(const range *r)
{
    return r->state[0] == RS_PENDING && r->state[1] == RS_PENDING && !r->splitting && !r->merging &&
           !r->attempts && !r->emitted.len && r->est_rows >= 4;
}

/* Splits range ri at n keys (strictly inside it, rising; checked): ri keeps
 * [lo, key 0), pieces [key i-1, key i) and [key n-1, hi) are appended. The
 * pieces are built first and the range changed last, so running out of
 * memory leaves the job as it was. 0, or -1 with err. */
static int cut(job *j, size_t ri, const msg_obj *b, uint32_t n, uint64_t rows, sl_err *err)
{
    range *nv = realloc(j->r, (j->nr + n) * sizeof *nv);
    if (!nv)
        return sl_err_set(err, "out of memory");
    j->r = nv;
    memset(&j->r[j->nr], 0, n * sizeof *nv); /* so a failure below frees only what it made */
    range *r = &j->r[ri];
    uint64_t each = rows / (n + 1) + (rows > 0);
    sl_buf first = {0};
    const uint8_t *k;
    size_t kl;
    msg_obj_bin(msg_obj_at(b, 0), &k, &kl);
    int bad = sl_buf_append(&first, k, kl);
    for (uint32_t i = 0; i < n && !bad; i++) {
        range *p = &j->r[j->nr + i];
        p->worker[0] = p->worker[1] = -1;
        p->planned = r->planned;
        p->est_rows = each;
        p->has_lo = p->has_hi = 1;
        msg_obj_bin(msg_obj_at(b, i), &k, &kl);
        bad = sl_buf_append(&p->lo, k, kl);
        if (!bad && i + 1 < n) {
            msg_obj_bin(msg_obj_at(b, i + 1), &k, &kl);
            bad = sl_buf_append(&p->hi, k, kl);
        }
    }
    if (bad) {
        for (uint32_t i = 0; i < n; i++) {
            sl_buf_free(&j->r[j->nr + i].lo);
            sl_buf_free(&j->r[j->nr + i].hi);
        }
        sl_buf_free(&first);
        return sl_err_set(err, "out of memory");
    }
    range *last = &j->r[j->nr + n - 1]; /* ends where the range did */
    last->hi = r->hi;
    last->has_hi = r->has_hi;
    r->hi = first;
    r->has_hi = 1;
    r->est_rows = each;
    j->r[r->planned].unfinished += n;
    j->nr += n;
    j->sum->ranges = j->nr;
    return 0;
}

/* Asks a worker reaching the source to split range ri into about pieces;
 * cuts it by the reply. Splitting only shortens reads: a worker that
 * cannot split (its error, or an older worker ignoring the bounds and
 * answering keys outside them) leaves the range whole, not asked again.
 * 0, -1 with err (cancelled, out of memory), or CO_LOST. */
static int split_range(job *j, size_t ri, size_t pieces, sl_err *err)
{
    int wi = co_pick_worker(j->c, j->db[0], err);
    if (wi < 0)
        return CO_LOST;
    uint64_t id;
    msg_writer *mw = co_request(j->c, MSG_SPLIT, &id);
    if (!mw)
        return sl_err_set(err, "out of memory");
    range *r = &j->r[ri];
    co_pack_spec(j, mw, 0);
    msg_put_uint(mw, "ranges", pieces);
    mk_bound lo = range_lo(r), hi = range_hi(r);
    co_pack_bound(mw, "lo", lo.kind, lo.key, lo.len);
    co_pack_bound(mw, "hi", hi.kind, hi.key, hi.len);
    r->splitting = 1;
    msg *m = NULL;
    int rc = co_rpc(j->c, wi, mw, id, &m, err);
    r = &j->r[ri];
    r->splitting = 0;
    if (rc == -1 && !j->cancel && !j->freeing) { /* the worker's error: left whole */
        r->est_rows = 3;
        return 0;
    }
    if (rc)
        return rc;
    uint64_t rows = 0;
    sl_err why;
    const msg_obj *b = NULL;
    uint32_t nb = 0;
    int ok = co_check_split(j, m, pieces, &rows, &why) == 0 &&
             msg_get_array(m, "bounds", &b, &nb, &why) == 0;
    lo = range_lo(r), hi = range_hi(r);
    for (uint32_t i = 0; ok && i < nb; i++) { /* strictly inside, or a piece is empty */
        const uint8_t *k;
        size_t kl;
        msg_obj_bin(msg_obj_at(b, i), &k, &kl);
        ok = mk_bound_contains(&lo, &hi, k, kl) &&
             (lo.kind == MK_UNBOUNDED || mk_key_cmp(k, kl, lo.key, lo.len) != 0);
    }
    rc = ok && nb ? cut(j, ri, b, nb, rows, err) : 0;
    if (!ok || !nb) /* would not split (a few rows, keys alike, or a reply unfit) */
        r->est_rows = ok && rows < 4 ? rows : 3;
    msg_free(m);
    return rc;
}

int co_split_if_long(job *j, size_t ri, sl_err *err)
{
    double target = j->o->chunk_time_s, spr = co_row_seconds(j);
    if (target <= 0 || spr <= 0 || j->order || ri >= j->nr)
        return 0;
    range *r = &j->r[ri];
    double est = (double)r->est_rows * spr;
    if (!splittable(r) || est <= 1.5 * target)
        return 0;
    double want = est / target + 0.999; /* rounded up */
    size_t pieces = want > SPLIT_MAX_PIECES ? SPLIT_MAX_PIECES : (size_t)want;
    if (pieces > r->est_rows / 2)
        pieces = (size_t)(r->est_rows / 2);
    return pieces < 2 ? 0 : split_range(j, ri, pieces, err);
}

int co_split_pending(job *j, sl_err *err)
{
    /* a split reads the source (a count, a key walk): not while paused */
    if (j->o->chunk_time_s <= 0 || co_row_seconds(j) <= 0 || j->order || !j->nr || j->lag_paused)
        return 0;
    for (size_t k = 0; k < SPLIT_SCAN && k < j->nr; k++) {
        size_t ri = (j->split_at + k) % j->nr, before = j->nr;
        int rc = co_split_if_long(j, ri, err);
        if (rc || j->nr != before) { /* one split request a turn: the loop goes on meanwhile */
            j->split_at = ri;
            return rc;
        }
    }
    j->split_at = (j->split_at + SPLIT_SCAN) % j->nr;
    return 0;
}
