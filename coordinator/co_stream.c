/* co_stream: dense divergence. When most of what a range's drill-down
 * looks at differs, a round trip per leaf (nodes, rows, fetch) costs far
 * more than reading: the drill stops, and the rest of the range is read
 * whole from both sides in key order (stream requests) and merged as it
 * comes, each row compared column by column as a fetched one is. Memory is
 * bounded: at most two replies a side, a few thousand rows each. */
#include <stdlib.h>
#include <string.h>

#include "co_impl.h"

/* The drill-down must have listed leaves of this many rows (both sides)
 * and met this many differing spans before it judges (a few differing rows
 * in small nodes are no trend); then a range is dense when its differing
 * spans held at least CO_DENSE_PERCENT of those rows. Measured (1M rows, 2 cores): a
 * differing leaf costs the drill about 1.4 ms (three round trips a side,
 * each a query), a leaf streamed about 0.05 ms; the drill wins below a few
 * percent of leaves differing (1% of rows differing makes about 27%). */
#define CO_DENSE_MIN_ROWS 4096
#define CO_DENSE_MIN_SPANS 16
#define CO_DENSE_PERCENT 10
/* When every span's rows came from the trees' kept rows (no query), a
 * differing span costs little and only differing rows are fetched (by
 * key, a few hundred a query): the range is dense when the rows found
 * differing are this share of the rows listed. Measured (1M rows, 2
 * cores), drilled against streamed: 5% 2.0 s / 3.1 s, 10% 2.5 / 4.5, 20%
 * 4.2 / 4.4, 30% 4.7 / 3.6, 50% 6.0 / 3.9. */
#define CO_DENSE_DIFF_PERCENT 20
/* Rows a stream reply holds at most: small enough that four decoded
 * replies stay a few tens of MiB, large enough that a round trip is
 * spread over thousands of rows. */
#define CO_STREAM_ROWS 4096

int co_is_dense(drill *d)
{
    const job *j = d->j;
    int readers[2];
    if (j->o->keys_only) /* a stream reads values, which --keys-only never does */
        return 0;
    if (j->dense_listed < CO_DENSE_MIN_ROWS || j->dense_nspan < CO_DENSE_MIN_SPANS)
        return 0;
    if (j->dense_db ? j->dense_span * 100 < j->dense_listed * CO_DENSE_PERCENT
                    : j->dense_diff * 100 < j->dense_listed * CO_DENSE_DIFF_PERCENT)
        return 0;
    co_pick_readers(d, readers); /* as co_stream_span will: nothing runs between */
    for (int s = 0; s < 2; s++)
        if (readers[s] < 0 || !j->c->w[readers[s]].can_stream)
            return 0; /* an older worker: it would not know the request */
    return 1;
}

int co_check_stream(const job *j, const msg_obj *rows, uint32_t n, const mk_bound *lo,
                    const mk_bound *hi, sl_err *why)
{
    const uint8_t *prev = NULL;
    size_t plen = 0;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *key;
        size_t klen;
        if (co_check_full_row(j, msg_obj_at(rows, i), i, &key, &klen, why))
            return -1;
        if (co_check_row_key(j, lo, hi, &prev, &plen, key, klen, i, why))
            return -1;
    }
    return 0;
}

/* One side of a stream: the replies taken and not merged yet (q[0] is
 * being merged from row at), whether the worker has rows after the last
 * one, the request out (if any), and the last key received. */
typedef struct side {
    msg *q[2];
    const msg_obj *rows[2];
    uint32_t n[2];
    size_t nq;
    uint32_t at;
    int more, asked, wi;
    uint64_t id, limit; /* the request out, and the most rows it may answer */
    sl_buf last;
} side;

static void side_pop(side *s)
{
    msg_free(s->q[0]);
    s->q[0] = s->q[1];
    s->rows[0] = s->rows[1];
    s->n[0] = s->n[1];
    s->q[1] = NULL;
    s->nq--;
    s->at = 0;
}

/* Asks side s's worker for its next rows: from lo the first time, then
 * after the last key received. */
static int ask(job *j, side *sd, int s, const mk_bound *lo, const mk_bound *hi, sl_err *err)
{
    msg_writer *mw = co_request(j->c, MSG_STREAM, &sd->id);
    if (!mw)
        return sl_err_set(err, "out of memory");
    co_pack_spec(j, mw, s);
    msg_put_int(mw, "sizes", 1);
    /* a reply's items stay within half the per-frame limit, as a fetch's */
    uint64_t limit = MSG_MAX_ITEMS / 2 / (5 * j->ncols + 8);
    sd->limit = limit < 1 ? 1 : limit < CO_STREAM_ROWS ? limit : CO_STREAM_ROWS;
    msg_put_uint(mw, "limit", sd->limit);
    if (sd->last.len)
        co_pack_bound(mw, "lo", MK_EXCL, sd->last.p, sd->last.len);
    else
        co_pack_bound(mw, "lo", lo->kind, lo->key, lo->len);
    co_pack_bound(mw, "hi", hi->kind, hi->key, hi->len);
    int rc = co_call(j->c, sd->wi, mw, err);
    if (rc == 0)
        sd->asked = 1;
    return rc;
}

/* Takes side s's reply m (owned): checked against what was asked, queued. */
static int take(job *j, side *sd, msg *m, const mk_bound *lo, const mk_bound *hi, sl_err *err)
{
    const msg_obj *rows;
    uint32_t n;
    sl_err why;
    mk_bound from = sd->last.len ? (mk_bound){MK_EXCL, sd->last.p, sd->last.len} : *lo;
    const msg_obj *more = msg_get(m, "more");
    int64_t mv = 0;
    sd->asked = 0;
    int bad = msg_get_array(m, "rows", &rows, &n, &why);
    if (!bad && n > sd->limit) /* the replies a side holds stay bounded */
        bad = 1, sl_err_set(&why, "has %u rows, more than the %llu asked for", n,
                            (unsigned long long)sd->limit);
    bad = bad || co_check_stream(j, rows, n, &from, hi, &why);
    if (!bad && more && (msg_obj_int(more, &mv) || mv != 1))
        bad = 1, sl_err_set(&why, "has a malformed \"more\"");
    else if (!bad && more && n == 0) /* it would be asked the same again, forever */
        bad = 1, sl_err_set(&why, "says more after no rows");
    if (bad) {
        msg_free(m);
        return co_reject_worker(j->c, sd->wi, err, "its stream reply %s", why.msg);
    }
    sd->more = more != NULL;
    if (n) {
        const msg_obj *f;
        uint32_t nf;
        const uint8_t *k;
        size_t kl;
        msg_obj_array(msg_obj_at(rows, n - 1), &f, &nf); /* checked above */
        msg_obj_bin(msg_obj_at(f, 0), &k, &kl);
        sl_buf_reset(&sd->last);
        if (sl_buf_append(&sd->last, k, kl)) {
            msg_free(m);
            return sl_err_set(err, "out of memory");
        }
        sd->q[sd->nq] = m;
        sd->rows[sd->nq] = rows;
        sd->n[sd->nq] = n;
        sd->nq++;
    } else {
        msg_free(m);
    }
    j->sum->streamed_rows += n;
    return 0;
}

/* Side s's next row (its fields, as co_merge_rows hands them) and key, or
 * NULL when it has none at hand. */
static const msg_obj *head(const side *s, const uint8_t **k, size_t *kl)
{
    const msg_obj *f;
    uint32_t nf;
    if (!s->nq)
        return NULL;
    msg_obj_array(msg_obj_at(s->rows[0], s->at), &f, &nf); /* checked on arrival */
    msg_obj_bin(msg_obj_at(f, 0), k, kl);
    return f;
}

/* A row merged (c: which sides it came from, as in the merge; differs: it
 * was a divergence) of the range streamed directly: counted, and its key kept as where a stream cut
 * short resumes (everything up to it is compared on both sides). */
static int merged(drill *d, const uint8_t *k, size_t kl, int c, int differs, sl_err *err)
{
    job *j = d->j;
    if (!j->st_ri1 || d->r != &j->r[j->st_ri1 - 1]) /* a drill's stream: no count kept */
        return 0;
    if (differs && j->st_pos / 32 + 1 != j->st_lastblk) { /* a differing "leaf" */
        j->st_blocks++;
        j->st_lastblk = j->st_pos / 32 + 1;
    }
    j->st_pos++;
    j->st_rows[0] += c <= 0;
    j->st_rows[1] += c >= 0;
    sl_buf_reset(&j->st_at);
    j->st_at_kind = MK_EXCL;
    return sl_buf_append(&j->st_at, k, kl) ? sl_err_set(err, "out of memory") : 0;
}

int co_stream_span(drill *d, const mk_bound *lo, const mk_bound *hi, sl_err *err)
{
    job *j = d->j;
    side sd[2] = {{.more = 1}, {.more = 1}};
    int readers[2], rc = 0;
    co_pick_readers(d, readers);
    for (int s = 0; s < 2; s++)
        sd[s].wi = readers[s];
    for (;;) {
        /* keep a request out for each side with more to come, so the
         * workers read while the coordinator merges */
        for (int s = 0; s < 2 && rc == 0; s++)
            if (sd[s].more && !sd[s].asked && sd[s].nq < 2)
                rc = ask(j, &sd[s], s, lo, hi, err);
        if (rc)
            break;
        if ((!sd[0].nq && sd[0].asked) || (!sd[1].nq && sd[1].asked)) {
            /* the loop files only replies a job waits for: wait for all out */
            uint64_t ids[2];
            int from[2], who[2];
            msg *rep[2];
            size_t n = 0;
            for (int s = 0; s < 2; s++)
                if (sd[s].asked) {
                    ids[n] = sd[s].id;
                    from[n] = sd[s].wi;
                    who[n++] = s;
                }
            if ((rc = co_wait_replies(j->c, ids, from, rep, n, err)) != 0)
                break;
            for (size_t k = 0; k < n; k++) {
                if (rc == 0)
                    rc = take(j, &sd[who[k]], rep[k], lo, hi, err);
                else
                    msg_free(rep[k]);
            }
            if (rc)
                break;
            continue;
        }
        if (!sd[0].nq && !sd[1].nq)
            break; /* neither has rows left, nor more to come */
        /* merge while each side has its next row at hand or has no more */
        while (rc == 0 && (sd[0].nq || !sd[0].more) && (sd[1].nq || !sd[1].more) &&
               (sd[0].nq || sd[1].nq)) {
            const uint8_t *ka = NULL, *kb = NULL;
            size_t kla = 0, klb = 0;
            const msg_obj *a = head(&sd[0], &ka, &kla), *b = head(&sd[1], &kb, &klb);
            int c = !a ? 1 : !b ? -1 : mk_key_cmp(ka, kla, kb, klb);
            uint64_t nd = j->st_ndiff;
            rc = co_streamed_row(d, c <= 0 ? a : NULL, c >= 0 ? b : NULL, err);
            if (rc == 0)
                rc = merged(d, c <= 0 ? ka : kb, c <= 0 ? kla : klb, c, j->st_ndiff != nd, err);
            for (int s = 0; s < 2; s++)
                if ((s ? c >= 0 : c <= 0) && ++sd[s].at == sd[s].n[0])
                    side_pop(&sd[s]);
        }
        if (rc)
            break;
    }
    for (int s = 0; s < 2; s++) {
        while (sd[s].nq)
            side_pop(&sd[s]);
        sl_buf_free(&sd[s].last);
    }
    return rc;
}

/* ---- job-level: ranges streamed whole, no tree built -------------------- */

/* A directly streamed range is judged dense, as the drill judges leaves,
 * when at least CO_DENSE_PERCENT of its 32-row blocks (merged rows, in key
 * order) held a divergence; one smaller than CO_DENSE_MIN_ROWS is not
 * judged at all. */
void co_judge_range(job *j, int dense)
{
    j->judged++;
    j->judged_dense += dense != 0;
    /* most ranges dense: each pending one would cost a tree (a read) and a
     * drill before its stream (a second read). --share and --keys-only
     * keep the trees: a share is measured in range tasks, and --keys-only
     * never reads values. */
    j->direct = !j->o->keys_only && j->o->share <= 0 && j->judged_dense * 2 > j->judged;
}

/* A range whose merge has begun, pending, with no live worker left that
 * could merge it (lost, or only workers reaching one side): streamed from
 * where its merge got to, or the job would wait for ever. */
static size_t stranded_merge(const job *j)
{
    if (co_merge_possible(j))
        return SIZE_MAX;
    for (size_t i = 0; i < j->nr; i++)
        if (j->r[i].merging && j->r[i].state[0] == RS_PENDING && j->r[i].state[1] == RS_PENDING &&
            !j->r[i].splitting)
            return i;
    return SIZE_MAX;
}

void co_judge_streamed(job *j, uint64_t rows, uint64_t merged, uint64_t blocks)
{
    if (rows >= CO_DENSE_MIN_ROWS)
        co_judge_range(j, blocks * 100 >= (merged + 31) / 32 * CO_DENSE_PERCENT);
}

int co_direct_ready(job *j)
{
    if (j->st_ri1) /* one cut short: finished first */
        return 1;
    if (j->lag_paused || co_merge_possible(j))
        return 0; /* merge tasks take the pending ranges (co_merge.c) */
    if (!j->direct && stranded_merge(j) == SIZE_MAX)
        return 0;
    for (const job *o = j->c->jobs; o; o = o->link)
        if (o != j && o->phase == JOB_RANGES && !o->cancel && !o->fatal && o->prio > j->prio)
            return 0; /* a job of higher priority reads first, as with range tasks */
    return 1;
}

/* Who streams each side of range r: an idle worker that serves streams
 * (one per side if it can), else a busy one (it answers on its second
 * session while it builds a tree). -1 when a side has none. */
static int pick_streamers(job *j, range *r)
{
    co *c = j->c;
    int got[2] = {-1, -1};
    for (int s = 0; s < 2; s++) {
        int best = -1, bscore = -1;
        for (size_t i = 0; i < c->nw; i++) {
            co_worker *w = &c->w[i];
            if (!w->alive || !w->can_stream || sl_now() < w->shunned_until ||
                !co_worker_has_db(w, j->db[s]))
                continue;
            int score = (w->busy_req ? 0 : 2) + ((int)i != got[0]);
            if (score > bscore)
                best = (int)i, bscore = score;
        }
        if (best < 0)
            return -1;
        got[s] = best;
        r->worker[s] = best;
        r->gen[s] = c->w[best].gen;
    }
    return 0;
}

int co_stream_pending(job *j, sl_err *err)
{
    size_t ri;
    if (j->st_ri1) {
        ri = j->st_ri1 - 1;
    } else {
        ri = stranded_merge(j);
        for (size_t i = 0; ri == SIZE_MAX && j->direct && i < j->nr; i++)
            if (j->r[i].state[0] == RS_PENDING && j->r[i].state[1] == RS_PENDING &&
                !j->r[i].splitting && !j->r[i].merging)
                ri = i;
        if (ri == SIZE_MAX)
            return 0;
        j->st_ri1 = ri + 1;
        j->st_tries = 0;
        j->st_rows[0] = j->st_rows[1] = 0;
        j->st_pos = j->st_blocks = j->st_lastblk = j->st_ndiff = 0;
        sl_buf_reset(&j->st_at);
        j->st_at_kind = MK_EXCL;
        if (j->r[ri].merging && j->r[ri].mat.len) { /* after what its merge reported */
            if (sl_buf_append(&j->st_at, j->r[ri].mat.p, j->r[ri].mat.len))
                return sl_err_set(err, "out of memory");
            j->st_at_kind = j->r[ri].mat_kind;
        }
        j->r[ri].state[0] = j->r[ri].state[1] = RS_STREAMING;
        j->r[ri].read_at_ms = sl_wall_ms();
    }
    range *r = &j->r[ri];
    drill d = {.j = j, .r = r}; /* a stream gathers no spans: runs stays empty */
    mk_bound lo = range_lo(r), hi = range_hi(r);
    int rc;
    for (;;) {
        if (j->cancel)
            return sl_err_set(err, "job cancelled");
        if (pick_streamers(j, r)) {
            if (!j->st_pos && !j->st_tries) { /* nothing read yet: trees, as before */
                r->state[0] = r->state[1] = RS_PENDING;
                r->worker[0] = r->worker[1] = -1;
                j->st_ri1 = 0;
                j->direct = j->direct && r->merging; /* a begun merge: no trees for it */
            }
            return 0; /* else the loop waits (or gives up) */
        }
        /* a stream cut short resumes after the last key merged: what lies
         * below was compared on both sides and reported once */
        mk_bound from = j->st_at.len ? (mk_bound){j->st_at_kind, j->st_at.p, j->st_at.len} : lo;
        rc = co_stream_span(&d, &from, &hi, err);
        if (rc != CO_LOST)
            break;
        if (++j->st_tries > 100)
            return sl_err_setc(err, SL_LOST_WORKER, "range %zu: gave up after 100 lost workers",
                               ri);
    }
    if (rc)
        return -1;
    j->st_ri1 = 0;
    if (!r->mtree) { /* a drill's rest keeps the rows its trees counted */
        r->rows[0] = r->mrows[0] + j->st_rows[0];
        r->rows[1] = r->mrows[1] + j->st_rows[1];
        j->sum->direct_ranges++;
        j->sum->trees_skipped += 2;
    }
    r->state[0] = r->state[1] = RS_COMPARED;
    r->worker[0] = r->worker[1] = -1;
    r->compared = 1;
    j->sum->streamed_ranges++;
    co_judge_streamed(j, j->st_rows[0] + j->st_rows[1], j->st_pos, j->st_blocks);
    if (!r->pending && co_finish_range(j, ri, err))
        return -1;
    return 1;
}
