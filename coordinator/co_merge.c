/* co_merge: dense ranges merged by one worker. A stream (co_stream.c)
 * ships every row of both sides, all columns and their display text, to
 * the coordinator, which merges them on its one thread: at 10M rows that
 * shipping is most of the time. A merge task gives one worker that reaches
 * both databases a span of a range: it reads both sides, merges them by key
 * and sends back only the rows that differ (a changed row's equal columns
 * as nil). The coordinator checks what it gets, compares it again column by
 * column exactly as a fetched row (tolerances included) and reports it.
 * Merge tasks are range tasks: each idle worker takes one, so ranges are
 * merged in parallel, and a task's reply is kept on its range until the
 * job's fiber takes it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "co_impl.h"

/* Rows a merge task reads a side at most: a task is one query a side
 * (fewer, larger tasks cost the databases less: at 10M rows every row
 * differing, 16,384 ran 8-10% faster than 4,096), while a reply decoded on
 * the coordinator holds up to this many rows a side (at most workers + 1
 * of them at once, co_next_merge), and what a lost worker merged is read
 * again. 65,536 was slower and took 445 MiB at 1M rows. */
#define CO_MERGE_ROWS 16384

int co_merge_allowed(const job *j)
{
    return strcmp(j->db[0], j->db[1]) != 0 && !j->o->keys_only && j->o->max_rows_per_second <= 0 &&
           j->o->share <= 0 && !j->o->changes;
}

int co_merge_possible(const job *j)
{
    if (!j->merge_ok)
        return 0;
    for (size_t i = 0; i < j->c->nw; i++) {
        const co_worker *w = &j->c->w[i];
        if (w->alive && w->can_merge && sl_now() >= w->shunned_until &&
            co_worker_has_db(w, j->db[0]) && co_worker_has_db(w, j->db[1]))
            return 1;
    }
    return 0;
}

size_t co_next_merge(job *j, const co_worker *w)
{
    if (!j->merge_ok || !w->can_merge || !co_worker_has_db(w, j->db[0]) ||
        !co_worker_has_db(w, j->db[1]))
        return SIZE_MAX;
    /* a begun range holds a reply while the fiber has not taken it: at
     * most (live workers + 1) begun at once keeps that memory flat */
    size_t fresh = SIZE_MAX, begun = 0;
    for (size_t i = 0; i < j->nr; i++) {
        const range *r = &j->r[i];
        begun += r->merging && r->state[0] != RS_COMPARED;
        if (r->state[0] != RS_PENDING || r->state[1] != RS_PENDING || r->splitting)
            continue;
        if (r->merging)
            return i; /* a begun one first: its rows are reported in order */
        if (fresh == SIZE_MAX && j->direct)
            fresh = i;
    }
    return begun < co_alive_workers(j->c) + 1 ? fresh : SIZE_MAX;
}

static mk_bound merge_from(const range *r)
{
    return r->mat.len ? (mk_bound){r->mat_kind, r->mat.p, r->mat.len} : range_lo(r);
}

int co_merge_rest(job *j, size_t ri, const mk_bound *from, sl_err *err)
{
    range *r = &j->r[ri];
    sl_buf_reset(&r->mat);
    r->mat_kind = MK_EXCL;
    if (from->kind != MK_UNBOUNDED) {
        if (sl_buf_append(&r->mat, from->key, from->len))
            return sl_err_set(err, "out of memory");
        r->mat_kind = from->kind;
    }
    r->merging = 1;
    r->mtree = 1;
    r->read_at_ms = sl_wall_ms();
    r->mpos = r->mblocks = 0;
    return 0;
}

int co_send_merge(job *j, size_t ri, int wi, sl_err *err)
{
    range *r = &j->r[ri];
    uint64_t id;
    msg_writer *mw = co_request(j->c, MSG_MERGE, &id);
    if (!mw)
        return sl_err_set(err, "out of memory");
    co_pack_spec(j, mw, 0);
    msg_put_cstr(mw, "db2", j->db[1]);
    msg_put_cstr(mw, "table2", j->table[1]);
    msg_put_int(mw, "sizes", 1);
    msg_put_uint(mw, "limit", CO_MERGE_ROWS);
    mk_bound lo = merge_from(r), hi = range_hi(r);
    co_pack_bound(mw, "lo", lo.kind, lo.key, lo.len);
    co_pack_bound(mw, "hi", hi.kind, hi.key, hi.len);
    int rc = co_call(j->c, wi, mw, err);
    if (rc)
        return rc;
    co_worker *w = &j->c->w[wi];
    w->busy_req = id;
    w->busy_task = (long)(ri * 2);
    w->busy_job = j;
    w->busy_merge = 1;
    w->busy_since = sl_now();
    w->busy_deadline = w->busy_since + j->c->req_timeout_ms / 1000.0;
    if (!j->first_sent)
        j->first_sent = w->busy_since;
    j->tasks++;
    if (!r->merging) {
        r->merging = 1;
        r->read_at_ms = sl_wall_ms();
        r->mrows[0] = r->mrows[1] = r->mpos = r->mblocks = 0;
    }
    for (int s = 0; s < 2; s++) {
        r->state[s] = RS_RUNNING;
        r->worker[s] = wi;
        r->gen[s] = w->gen;
        r->tree[s] = 0; /* no tree: nothing to release */
    }
    return 0;
}

void co_merge_reply(co *c, int wi, msg *m)
{
    long task;
    double took;
    job *j = co_task_answered(c, wi, &task, &took);
    size_t ri = (size_t)task / 2;
    if (msg_type(m) == MSG_ERROR) {
        sl_err why = {0};
        msg_error_read(m, &why);
        sl_err_setc(&j->err, why.code, "%s", why.msg);
        j->fatal = 1;
        msg_free(m);
        return;
    }
    range *r = &j->r[ri];
    if (took > j->sum->longest_read_s)
        j->sum->longest_read_s = took;
    r->state[0] = r->state[1] = RS_MERGED;
    r->mrep = m;
    co_ready_push(j, ri);
}

/* A merge reply's row list: [key] (a row on this side only) or [key,
 * [column indexes], [values], [texts]] (a row on both sides: the columns
 * the worker found differing, rising, none a key column; a value an
 * encoding or a digest, a text a string or nil), with keys of the job
 * rising strictly inside [from, through]. */
static int check_rows(const job *j, const msg_obj *rows, uint32_t n, const mk_bound *from,
                      const mk_bound *through, sl_err *why)
{
    const uint8_t *prev = NULL;
    size_t plen = 0;
    for (uint32_t i = 0; i < n; i++) {
        const msg_obj *f, *cols, *vals, *txt;
        uint32_t nf, nc, nv, nt;
        const uint8_t *key;
        size_t klen;
        if (msg_obj_array(msg_obj_at(rows, i), &f, &nf) || (nf != 1 && nf != 4) ||
            msg_obj_bin(msg_obj_at(f, 0), &key, &klen) ||
            (nf == 4 && (msg_obj_array(msg_obj_at(f, 1), &cols, &nc) ||
                         msg_obj_array(msg_obj_at(f, 2), &vals, &nv) ||
                         msg_obj_array(msg_obj_at(f, 3), &txt, &nt) || nc != nv || nc != nt ||
                         nc == 0 || nc > j->ncols)))
            return sl_err_set(why,
                              "has row %u that is not [key] or [key, [columns], [values], "
                              "[texts]]",
                              i);
        int64_t last = -1;
        for (uint32_t c = 0; nf == 4 && c < nc; c++) {
            const msg_obj *t = msg_obj_at(txt, c);
            const char *sp;
            size_t sl;
            int64_t col;
            if (msg_obj_int(msg_obj_at(cols, c), &col) || col <= last || col < (int64_t)j->nkey ||
                col >= (int64_t)j->ncols || co_check_value(msg_obj_at(vals, c)) ||
                (!msg_obj_is_nil(t) && msg_obj_str(t, &sp, &sl)))
                return sl_err_set(why, "has row %u whose column %u is malformed", i, c);
            last = col;
        }
        if (co_check_row_key(j, from, through, &prev, &plen, key, klen, i, why))
            return -1;
    }
    return 0;
}

/* Whether two rows [key, [columns], ...] list the same columns. */
static int same_columns(const msg_obj *fa, const msg_obj *fb)
{
    const msg_obj *ca, *cb;
    uint32_t na, nb;
    msg_obj_array(msg_obj_at(fa, 1), &ca, &na);
    msg_obj_array(msg_obj_at(fb, 1), &cb, &nb);
    for (uint32_t i = 0; na == nb && i < na; i++) {
        int64_t x, y;
        msg_obj_int(msg_obj_at(ca, i), &x);
        msg_obj_int(msg_obj_at(cb, i), &y);
        if (x != y)
            return 0;
    }
    return na == nb;
}

/* Lets the loop run between a reply's rows: each reported row may be a
 * write to the coordinator's store (a commit each), and a reply of 16,384
 * changed rows would otherwise keep clients and heartbeats waiting for
 * seconds. The reply is the fiber's alone meanwhile (its range is
 * RS_MERGED: nothing dispatches it). 0, or -1 when the job was cancelled. */
static int pause_for_loop(job *j, sl_err *err)
{
    j->wake = 1;
    fiber_yield(j->fb);
    return (j->cancel && !j->closing) || j->freeing ? sl_err_set(err, "job cancelled") : 0;
}

/* Both sides' lists merged by key: a key in both is a changed row (both
 * listing the same columns), in one only a missing or extra row. With d
 * NULL it only checks that (before anything is reported: a reply is used
 * whole or not at all): 0, or -1 with why; with d, reports each: 0, or -1
 * with err. */
static int take_rows(drill *d, const msg_obj *ra, uint32_t na, const msg_obj *rb, uint32_t nb,
                     sl_err *why, sl_err *err)
{
    uint32_t i = 0, k = 0, taken = 0;
    while (i < na || k < nb) {
        const msg_obj *fa = NULL, *fb = NULL;
        uint32_t wa = 0, wb = 0;
        const uint8_t *ka = NULL, *kb = NULL;
        size_t kla = 0, klb = 0;
        if (i < na) {
            msg_obj_array(msg_obj_at(ra, i), &fa, &wa); /* checked */
            msg_obj_bin(msg_obj_at(fa, 0), &ka, &kla);
        }
        if (k < nb) {
            msg_obj_array(msg_obj_at(rb, k), &fb, &wb);
            msg_obj_bin(msg_obj_at(fb, 0), &kb, &klb);
        }
        int c = !fa ? 1 : !fb ? -1 : mk_key_cmp(ka, kla, kb, klb);
        const msg_obj *a = c <= 0 ? fa : NULL, *b = c >= 0 ? fb : NULL;
        if (!d && (a && b ? wa != 4 || wb != 4 || !same_columns(fa, fb) : (a ? wa : wb) != 1))
            return sl_err_set(why, "has row %u/%u whose columns do not match its sides", i, k);
        if (d && co_merged_row(d, a, b, err))
            return -1;
        if (d && ++taken % 512 == 0 && pause_for_loop(d->j, err))
            return -1;
        i += c <= 0;
        k += c >= 0;
    }
    return 0;
}

/* The reply's counts: rows [na, nb], blocks, through, more. */
static int read_counts(const job *j, const msg *m, const mk_bound *from, const mk_bound *hi,
                       uint64_t rows[2], uint64_t *blocks, mk_bound *through, int *more,
                       sl_err *why)
{
    const msg_obj *o, *v;
    uint32_t n;
    int64_t x;
    if (msg_get_array(m, "rows", &o, &n, why) || n != 2)
        return sl_err_set(why, "has no rows [source, target]");
    for (uint32_t s = 0; s < 2; s++) {
        if (msg_obj_int(msg_obj_at(o, s), &x) || x < 0)
            return sl_err_set(why, "has a malformed row count");
        rows[s] = (uint64_t)x;
    }
    if (msg_get_int(m, "blocks", &x, why) || x < 0)
        return sl_err_set(why, "has a malformed blocks count");
    *blocks = (uint64_t)x;
    *more = 0;
    if ((v = msg_get(m, "more")) && (msg_obj_int(v, &x) || x != 1))
        return sl_err_set(why, "has a malformed \"more\"");
    *more = v != NULL;
    *through = (mk_bound){MK_UNBOUNDED, NULL, 0};
    if ((v = msg_get(m, "through"))) {
        if (msg_obj_bin(v, &through->key, &through->len) ||
            enc_key_check(through->key, through->len, j->cls, j->nkey, why) ||
            !mk_bound_contains(from, hi, through->key, through->len))
            return sl_err_set(why, "has a \"through\" that is no key of the span");
        through->kind = MK_INCL;
    } else if (*more || rows[0] || rows[1]) {
        return sl_err_set(why, "has rows or more, but no \"through\"");
    }
    return 0;
}

int co_merge_take(job *j, size_t ri, sl_err *err)
{
    range *r = &j->r[ri];
    msg *m = r->mrep;
    int wi = r->worker[0];
    r->mrep = NULL;
    mk_bound from = merge_from(r), hi = range_hi(r), through;
    uint64_t rows[2] = {0, 0}, blocks = 0;
    const msg_obj *ra, *rb;
    uint32_t na, nb;
    int more = 0;
    sl_err why = {0};
    int bad = read_counts(j, m, &from, &hi, rows, &blocks, &through, &more, &why) ||
              msg_get_array(m, "a", &ra, &na, &why) || msg_get_array(m, "b", &rb, &nb, &why);
    if (!bad && (na > rows[0] || nb > rows[1]))
        bad = sl_err_set(&why, "lists more rows than it says it merged");
    if (!bad && through.kind == MK_UNBOUNDED && (na || nb))
        bad = sl_err_set(&why, "has rows but no \"through\"");
    bad = bad || check_rows(j, ra, na, &from, &through, &why) ||
          check_rows(j, rb, nb, &from, &through, &why) ||
          take_rows(NULL, ra, na, rb, nb, &why, err);
    if (bad) { /* nothing of it counts: the span goes to another worker */
        msg_free(m);
        r->state[0] = r->state[1] = RS_PENDING;
        r->worker[0] = r->worker[1] = -1;
        if (co_worker_is(j->c, wi, r->gen[0]))
            co_reject_worker(j->c, wi, NULL, "its merge reply for range %zu %s", ri, why.msg);
        return 0;
    }
    drill d = {.j = j, .r = r};
    if (take_rows(&d, ra, na, rb, nb, &why, err)) {
        msg_free(m);
        return -1;
    }
    if (!r->mtree) { /* a drill's rest: its trees counted every row */
        r->mrows[0] += rows[0];
        r->mrows[1] += rows[1];
    }
    r->mpos += rows[0] > rows[1] ? rows[0] : rows[1];
    r->mblocks += blocks;
    j->sum->streamed_rows += rows[0] + rows[1];
    j->task_rows += rows[0];
    if (through.kind != MK_UNBOUNDED) {
        sl_buf_reset(&r->mat);
        r->mat_kind = MK_EXCL;
        if (sl_buf_append(&r->mat, through.key, through.len)) {
            msg_free(m);
            return sl_err_set(err, "out of memory");
        }
    }
    msg_free(m);
    r->worker[0] = r->worker[1] = -1;
    if (more) { /* its next task goes on after through */
        r->state[0] = r->state[1] = RS_PENDING;
        return 0;
    }
    r->state[0] = r->state[1] = RS_COMPARED;
    r->compared = 1;
    j->sum->streamed_ranges++;
    j->sum->merged_ranges++;
    if (!r->mtree) { /* streamed whole: no tree built, judged here */
        r->rows[0] = r->mrows[0];
        r->rows[1] = r->mrows[1];
        j->sum->direct_ranges++;
        j->sum->trees_skipped += 2;
        co_judge_streamed(j, r->mrows[0] + r->mrows[1], r->mpos, r->mblocks);
    }
    if (!r->pending && co_finish_range(j, ri, err))
        return -1;
    return 0;
}
