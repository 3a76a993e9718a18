/* co_recheck: live re-checks (--rechecks N --settle S). A differing key
 * waits in j->rq for the settle time and is fetched again, up to N times:
 * still differing every time, it is reported confirmed; equal once, it is
 * reported transient (a change in flight). Its range is recorded done only
 * when none of its keys waits any more. */
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "co_impl.h"

int co_recheck_add(job *j, range *r, int kind, const uint8_t *key, size_t klen, sl_err *err)
{
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
    q->first = 0;
    q->at_ms = 0;
    q->seq = ++j->rq_seq;
    q->range = (size_t)(r - j->r);
    q->due = sl_now() + j->o->settle_ms / 1000.0;
    j->nrq++;
    r->pending++;
    return 0;
}

/* A changed key confirmed divergent: counted in the window, with its
 * detection latency from its (earliest) commit time, clamped at 0 when the
 * clocks disagree. 0, or -1 when memory runs out. */
/* Adds (kind, key) to the job's confirmed set: 1 when new, 0 when it was
 * there, -1 when memory runs out. */
static int confirmed_once(job *j, int kind, const uint8_t *key, size_t klen)
{
    uint64_t h = XXH3_64bits_withSeed(key, klen, (uint64_t)kind + 1);
    h = h < 1 ? 1 : h;
    if ((j->cused + 1) * 2 > j->ccap) {
        size_t cap = j->ccap ? 2 * j->ccap : 64;
        uint64_t *v = calloc(cap, sizeof *v);
        if (!v)
            return -1;
        for (size_t i = 0; i < j->ccap; i++)
            if (j->cset[i]) {
                size_t k = (size_t)j->cset[i] & (cap - 1);
                while (v[k])
                    k = (k + 1) & (cap - 1);
                v[k] = j->cset[i];
            }
        free(j->cset);
        j->cset = v;
        j->ccap = cap;
    }
    size_t k = (size_t)h & (j->ccap - 1);
    while (j->cset[k] && j->cset[k] != h)
        k = (k + 1) & (j->ccap - 1);
    if (j->cset[k])
        return 0;
    j->cset[k] = h;
    j->cused++;
    return 1;
}

/* Forgets a key found equal again (every kind): repaired, its next
 * divergence is a new one and counts. Linear probing: the entries after the
 * hole that belong before it move back. */
static void confirmed_forget(job *j, const uint8_t *key, size_t klen)
{
    for (int kind = CO_MISSING; j->cused && kind <= CO_CHANGED; kind++) {
        uint64_t h = XXH3_64bits_withSeed(key, klen, (uint64_t)kind + 1);
        h = h < 1 ? 1 : h;
        size_t mask = j->ccap - 1, i = (size_t)h & mask;
        while (j->cset[i] && j->cset[i] != h)
            i = (i + 1) & mask;
        if (!j->cset[i])
            continue;
        j->cset[i] = 0;
        j->cused--;
        if (j->cb->resolved)
            j->cb->resolved(j->cb->ctx, key, klen);
        for (size_t k = (i + 1) & mask; j->cset[k]; k = (k + 1) & mask) {
            size_t home = (size_t)j->cset[k] & mask;
            /* moves back unless its home lies cyclically in (i, k] */
            if (i <= k ? (home <= i || home > k) : (home <= i && home > k)) {
                j->cset[i] = j->cset[k];
                j->cset[k] = 0;
                i = k;
            }
        }
    }
}

static int window_confirmed(job *j, const recheck *q, int kind)
{
    int fresh = confirmed_once(j, kind, q->key, q->klen);
    if (fresh <= 0)
        return fresh;
    *(kind == CO_MISSING ? &j->win.missing
      : kind == CO_EXTRA ? &j->win.extra
                         : &j->win.changed) += 1;
    int64_t at = co_recheck_change_at(j, q->key, q->klen);
    if (!at || (q->at_ms && q->at_ms < at))
        at = q->at_ms;
    if (!at)
        return 0;
    if (j->win.nlat == j->win.caplat) {
        size_t cap = j->win.caplat ? 2 * j->win.caplat : 64;
        double *v = realloc(j->win.lat, cap * sizeof *v);
        if (!v)
            return -1;
        j->win.lat = v;
        j->win.caplat = cap;
    }
    int64_t ms = sl_wall_ms() - at;
    j->win.lat[j->win.nlat++] = ms > 0 ? (double)ms / 1000.0 : 0;
    return 0;
}

int co_recheck_hit(job *j, int kind, const uint8_t *key, size_t klen, const co_coldiff *cols,
                   size_t ncols, sl_err *err)
{
    for (size_t i = j->batch_lo; i < j->batch_lo + j->batch_n; i++) {
        recheck *q = &j->rq[i];
        if (q->hit || q->klen != klen || memcmp(q->key, key, klen))
            continue;
        q->hit = 1;
        q->kind = kind;
        if (q->first) /* the first look of a changed key: the re-checks follow */
            return 0;
        if (++q->seen < j->o->rechecks)
            return 0;
        q->seen = -1; /* resolved: confirmed */
        if (j->o->changes && window_confirmed(j, q, kind))
            return sl_err_set(err, "out of memory");
        return co_emit_row(j, &j->r[q->range], kind, CO_CONFIRMED, key, klen, cols, ncols, err);
    }
    return 0;
}

/* ---- the key set of a changes job: which keys wait in rq ---------------- */

static uint64_t key_hash(const uint8_t *key, size_t klen)
{
    uint64_t h = XXH3_64bits(key, klen);
    return h < 2 ? 2 : h;
}

/* The slot of h, or of the first empty one where it would go. */
static size_t kset_find(const job *j, uint64_t h)
{
    size_t mask = j->kcap - 1, i = (size_t)h & mask;
    while (j->kset[i] != 0 && j->kset[i] != h)
        i = (i + 1) & mask;
    return i;
}

/* Rebuilds the set at cap slots (a power of two) from the old one, times
 * kept, tombstones dropped. 0 or -1. */
static int kset_rebuild(job *j, size_t cap)
{
    uint64_t *v = calloc(2 * cap, sizeof *v), *old = j->kset;
    size_t oldcap = j->kcap;
    if (!v)
        return -1;
    j->kset = v;
    j->kcap = cap;
    j->kused = 0;
    for (size_t i = 0; old && i < oldcap; i++) {
        if (old[i] < 2)
            continue;
        size_t k = kset_find(j, old[i]);
        if (!j->kset[k])
            j->kused++;
        j->kset[k] = old[i];
        j->kset[cap + k] = old[oldcap + i];
    }
    free(old);
    return 0;
}

static void kset_remove(job *j, const uint8_t *key, size_t klen)
{
    if (!j->kset)
        return;
    size_t k = kset_find(j, key_hash(key, klen));
    if (j->kset[k])
        j->kset[k] = 1; /* a tombstone: a probe goes on past it */
}

int64_t co_recheck_change_at(const job *j, const uint8_t *key, size_t klen)
{
    if (!j->kset)
        return 0;
    size_t k = kset_find(j, key_hash(key, klen));
    return j->kset[k] >= 2 ? (int64_t)j->kset[j->kcap + k] : 0;
}

int co_recheck_add_change(job *j, const uint8_t *key, size_t klen, int64_t at_ms, sl_err *err)
{
    if (at_ms < 0)
        at_ms = 0;
    /* at most half the slots used (tombstones count): probes stay short */
    if ((j->kused + 1) * 2 > j->kcap) {
        size_t cap = 64;
        while (cap < (j->nrq + 1) * 4)
            cap *= 2;
        if (kset_rebuild(j, cap))
            return sl_err_set(err, "out of memory");
    }
    uint64_t h = key_hash(key, klen);
    size_t k = kset_find(j, h);
    uint64_t *at = &j->kset[j->kcap + k];
    if (j->kset[k] == h) { /* waits already: one look serves both changes */
        j->deduped++;
        if (at_ms && (!*at || (uint64_t)at_ms < *at)) /* timed from the first */
            *at = (uint64_t)at_ms;
        return 0;
    }
    if (co_recheck_add(j, &j->r[0], 0, key, klen, err))
        return -1;
    j->rq[j->nrq - 1].first = 1;
    j->rq[j->nrq - 1].at_ms = at_ms;
    if (!j->kset[k])
        j->kused++;
    j->kset[k] = h;
    *at = (uint64_t)at_ms;
    return 0;
}

/* Fetches the due keys of the re-check queue again, one batch. Keys still
 * differing stay queued until confirmed; keys now equal are transient. The
 * queue is in due order, since every key waits the same settle time. */
int co_run_rechecks(job *j, double now, sl_err *err)
{
    size_t n = 0;
    while (n < j->nrq && n < 1000 && j->rq[n].due <= now)
        n++;
    if (n == 0)
        return 0;
    int workers[2];
    for (int s = 0; s < 2; s++)
        if ((workers[s] = co_pick_worker(j->c, j->db[s], err)) < 0)
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
    drill d = {.j = j}; /* a batch spans ranges: each key names its own */
    int rc = j->o->keys_only ? co_rehash_changed(&d, workers, err)
                             : co_compare_changed(&d, workers, err);
    j->recheck_mode = 0;
    if (rc)
        return rc;
    return co_recheck_resolve(j, n, now, err);
}

int co_recheck_resolve(job *j, size_t n, double now, sl_err *err)
{
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        recheck *q = &j->rq[i];
        if (!q->hit && q->first) { /* a changed key, equal on both sides */
            j->checked++;
            q->seen = -1;
            confirmed_forget(j, q->key, q->klen);
        } else if (q->hit && q->first) { /* different: now the re-checks */
            q->first = 0;
            q->due = now + j->o->settle_ms / 1000.0;
        } else if (!q->hit) { /* equal again: it was a change in flight */
            j->win.transient++;
            rc = co_emit_row(j, &j->r[q->range], q->kind, CO_TRANSIENT, q->key, q->klen, NULL, 0,
                             err);
            q->seen = -1;
            confirmed_forget(j, q->key, q->klen);
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
        kset_remove(j, q->key, q->klen);
        free(q->key);
        if (--r->pending == 0 && r->compared && rc == 0)
            rc = co_finish_range(j, q->range, err);
    }
    memmove(j->rq, j->rq + n, (j->nrq - n) * sizeof *j->rq);
    memcpy(j->rq + (j->nrq - n), later, nl * sizeof *later);
    j->nrq = j->nrq - n + nl;
    free(later);
    return rc;
}
