/* The coordinator's insides without sockets: (a) the drill-down merge
 * (co_merge_rows with co_span_row and co_fetched_row) on synthetic replies,
 * each divergence reported once with the right kind; (b) range bookkeeping:
 * co_next_task's order and cursor, co_requeue_lost after a worker's gen
 * changes, co_dispatch's choice by priority, task count, cap, shunning and share;
 * (c) replies filed by co_route_reply and co_tree_reply; (d) --keys-only,
 * --max-divergences, --chunk-time's pieces and the replica-lag pause. Jobs and workers
 * are built through co_impl.h; frames "sent" are kept by a fake transport. */
#include <stdlib.h>
#include <string.h>

#include "../coordinator/co_impl.h"
#include "tap.h"

/* ---- a fake transport ----------------------------------------------------- */

#define MAX_SENT 64
static struct {
    int wi[MAX_SENT];
    int type[MAX_SENT];
    uint64_t id[MAX_SENT];
    size_t n;
} sent;

static int fake_send(co *c, const co_worker *w, const sl_buf *frame)
{
    msg *m = msg_decode(frame->p, frame->len, NULL);
    if (m && sent.n < MAX_SENT) {
        sent.wi[sent.n] = (int)(w - c->w);
        sent.type[sent.n] = msg_type(m);
        sent.id[sent.n] = msg_id(m);
        sent.n++;
    }
    msg_free(m);
    return 0;
}

static co *fake_co(void)
{
    co *c = calloc(1, sizeof *c);
    c->send = fake_send;
    c->next_id = 1000;
    c->req_timeout_ms = 300000;
    sent.n = 0;
    return c;
}

/* A live worker reaching the databases named (NULL-terminated); its slot. */
static int add_worker(co *c, const char *db1, const char *db2)
{
    co_worker *w = &c->w[c->nw];
    memset(w, 0, sizeof *w);
    w->identlen = (size_t)snprintf((char *)w->ident, sizeof w->ident, "w%zu", c->nw);
    w->dbs = calloc(2, sizeof *w->dbs);
    if (db1)
        w->dbs[w->ndbs++] = strdup(db1);
    if (db2)
        w->dbs[w->ndbs++] = strdup(db2);
    w->alive = 1;
    w->gen = ++c->gens;
    w->last_seen = sl_now();
    return (int)c->nw++;
}

/* ---- a job: key (id int), one more column (v text) ------------------------- */

#define MAX_EV 64
typedef struct evlog {
    int kind[MAX_EV], status[MAX_EV];
    long id[MAX_EV];
    char col[MAX_EV][16], src[MAX_EV][16], tgt[MAX_EV][16];
    size_t ncols[MAX_EV];
    size_t n;
} evlog;

static int log_event(void *ctx, const co_event *ev)
{
    evlog *l = ctx;
    if (l->n == MAX_EV)
        return 0;
    l->kind[l->n] = ev->kind;
    l->status[l->n] = ev->status;
    l->id[l->n] = ev->nkey ? atol(ev->key_vals[0]) : -1;
    l->ncols[l->n] = ev->ncols;
    l->col[l->n][0] = l->src[l->n][0] = l->tgt[l->n][0] = 0;
    if (ev->ncols) {
        snprintf(l->col[l->n], sizeof l->col[0], "%s", ev->cols[0].column);
        snprintf(l->src[l->n], sizeof l->src[0], "%s",
                 ev->cols[0].source ? ev->cols[0].source : "NULL");
        snprintf(l->tgt[l->n], sizeof l->tgt[0], "%s",
                 ev->cols[0].target ? ev->cols[0].target : "NULL");
    }
    l->n++;
    return 0;
}

/* How many events of kind about key id. */
static int count(const evlog *l, int kind, long id)
{
    int n = 0;
    for (size_t i = 0; i < l->n; i++)
        n += l->kind[i] == kind && l->id[i] == id;
    return n;
}

typedef struct fixture {
    co_diff_opts o;
    co_callbacks cb;
    evlog ev;
} fixture;

static job *new_job(co *c, fixture *f, size_t nranges, int prio)
{
    memset(f, 0, sizeof *f);
    f->o = (co_diff_opts){.source_db = "s", .target_db = "t", .table = "x", .priority = prio};
    f->cb = (co_callbacks){.event = log_event, .ctx = &f->ev};
    job *j = calloc(1, sizeof *j);
    j->c = c;
    j->o = &f->o;
    j->cb = &f->cb;
    j->sum = &j->own_sum;
    j->db[0] = "s";
    j->db[1] = "t";
    j->table[0] = j->table[1] = "x";
    j->prio = prio;
    j->cols[0] = "id";
    j->cols[1] = "v";
    j->cls[0] = ENC_INT;
    j->cls[1] = ENC_TEXT;
    j->ncols = 2;
    j->nkey = 1;
    j->phase = JOB_RANGES;
    j->r = calloc(nranges, sizeof *j->r);
    j->nr = nranges;
    for (size_t i = 0; i < nranges; i++)
        j->r[i].worker[0] = j->r[i].worker[1] = -1;
    if (c) {
        job **tail = &c->jobs;
        while (*tail)
            tail = &(*tail)->link;
        *tail = j;
    }
    return j;
}

static void free_job(job *j)
{
    for (size_t i = 0; i < j->nr; i++) {
        sl_buf_free(&j->r[i].lo);
        sl_buf_free(&j->r[i].hi);
        mk_nodelist_free(&j->r[i].root[0]);
        mk_nodelist_free(&j->r[i].root[1]);
        sl_buf_free(&j->r[i].emitted);
    }
    for (size_t i = 0; i < j->nrq; i++)
        free(j->rq[i].key);
    free(j->rq);
    free(j->kset);
    free(j->cset);
    free(j->win.lat);
    free(j->r);
    free(j->order);
    free(j->ready);
    sl_buf_free(&j->scratch);
    sl_buf_free(&j->changed);
    sl_buf_free(&j->pend_lo);
    sl_buf_free(&j->pend_hi);
    free(j);
}

static void key_of(sl_buf *out, int64_t id)
{
    enc_val v = {.kind = ENC_V_INT, .i = id};
    sl_buf_reset(out);
    enc_key(out, ENC_INT, &v, NULL);
}

/* ---- synthetic replies ------------------------------------------------------ */

/* A rows reply: [key, 16-byte hash of byte h[i]] for ids[0..n). */
static msg *rows_reply(const int64_t *ids, const char *h, size_t n)
{
    msg_writer *w = msg_writer_new(MSG_REPLY, 1);
    sl_buf k = {0}, f = {0};
    msg_key(w, "rows");
    msg_pack_array(w, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        uint8_t hash[16];
        memset(hash, h[i], sizeof hash);
        key_of(&k, ids[i]);
        msg_pack_array(w, 2);
        msg_pack_bin(w, k.p, k.len);
        msg_pack_bin(w, hash, sizeof hash);
    }
    msg_writer_finish(w, &f, NULL);
    msg_writer_free(w);
    msg *m = msg_decode(f.p, f.len, NULL);
    sl_buf_free(&k);
    sl_buf_free(&f);
    return m;
}

/* A fetch reply: [key, [enc id, enc v], [text id, text v]] for ids[0..n)
 * with v = vals[i]. */
static msg *fetch_reply(const int64_t *ids, const char *const *vals, size_t n)
{
    msg_writer *w = msg_writer_new(MSG_REPLY, 1);
    sl_buf k = {0}, e = {0}, f = {0};
    msg_key(w, "rows");
    msg_pack_array(w, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        char idtext[24];
        snprintf(idtext, sizeof idtext, "%lld", (long long)ids[i]);
        enc_val vi = {.kind = ENC_V_INT, .i = ids[i]};
        enc_val vt = {.kind = ENC_V_TEXT, .p = vals[i], .len = strlen(vals[i])};
        key_of(&k, ids[i]);
        msg_pack_array(w, 3);
        msg_pack_bin(w, k.p, k.len);
        msg_pack_array(w, 2);
        sl_buf_reset(&e);
        enc_value(&e, ENC_INT, &vi, 0);
        msg_pack_bin(w, e.p, e.len);
        sl_buf_reset(&e);
        enc_value(&e, ENC_TEXT, &vt, 0);
        msg_pack_bin(w, e.p, e.len);
        msg_pack_array(w, 2);
        msg_pack_cstr(w, idtext);
        msg_pack_cstr(w, vals[i]);
    }
    msg_writer_finish(w, &f, NULL);
    msg_writer_free(w);
    msg *m = msg_decode(f.p, f.len, NULL);
    sl_buf_free(&k);
    sl_buf_free(&e);
    sl_buf_free(&f);
    return m;
}

static int merge(drill *d, msg *a, msg *b, uint32_t width, merge_fn fn)
{
    const msg_obj *ra, *rb;
    uint32_t na, nb;
    sl_err err;
    if (msg_get_array(a, "rows", &ra, &na, NULL) || msg_get_array(b, "rows", &rb, &nb, NULL))
        return -1;
    return co_merge_rows(d, ra, na, rb, nb, width, fn, &err);
}

/* ---- (a) the drill-down merge ------------------------------------------------ */

static void test_span_merge(void)
{
    fixture f;
    job *j = new_job(NULL, &f, 2, CO_PRIO_NORMAL);
    drill d = {.j = j, .r = &j->r[1]};
    /* source 1 2 3 5 7, target 2 3 4 5 8; 3's hash differs */
    int64_t a[] = {1, 2, 3, 5, 7}, b[] = {2, 3, 4, 5, 8};
    msg *ma = rows_reply(a, "aaaaa", 5), *mb = rows_reply(b, "abaaa", 5);
    ok(merge(&d, ma, mb, 2, co_span_row) == 0, "span merge of interleaved keys succeeds");
    ok(f.ev.n == 4, "span merge: 4 rows on one side only reported (got %zu)", f.ev.n);
    ok(count(&f.ev, CO_MISSING, 1) == 1 && count(&f.ev, CO_MISSING, 7) == 1,
       "span merge: source-only keys 1 and 7 reported missing once each");
    ok(count(&f.ev, CO_EXTRA, 4) == 1 && count(&f.ev, CO_EXTRA, 8) == 1,
       "span merge: target-only keys 4 and 8 reported extra once each");
    ok(count(&f.ev, CO_MISSING, 2) + count(&f.ev, CO_EXTRA, 2) + count(&f.ev, CO_CHANGED, 2) == 0 &&
           count(&f.ev, CO_CHANGED, 5) == 0,
       "span merge: equal rows 2 and 5 not reported");
    sl_buf k3 = {0};
    key_of(&k3, 3);
    uint32_t len = 0;
    if (j->changed.len >= 4)
        memcpy(&len, j->changed.p, 4);
    ok(j->nchanged == 1 && len == k3.len && j->changed.len == 4 + k3.len &&
           memcmp(j->changed.p + 4, k3.p, k3.len) == 0,
       "span merge: the one key whose hashes differ (3) gathered for a fetch (nchanged %u)",
       j->nchanged);
    ok(j->sum->missing == 2 && j->sum->extra == 2, "span merge: summary counts 2 missing, 2 extra");

    /* the same range compared again after a cut: nothing reported twice */
    j->r[1].attempts = 1;
    size_t before = f.ev.n;
    merge(&d, ma, mb, 2, co_span_row);
    ok(f.ev.n == before, "a range compared again after a lost worker reports nothing twice");
    msg_free(ma);
    msg_free(mb);
    sl_buf_free(&k3);

    /* empty sides */
    f.ev.n = 0;
    j->r[1].attempts = 0;
    int64_t two[] = {10, 11};
    msg *empty = rows_reply(NULL, "", 0), *m2 = rows_reply(two, "aa", 2);
    merge(&d, empty, m2, 2, co_span_row);
    ok(f.ev.n == 2 && count(&f.ev, CO_EXTRA, 10) == 1 && count(&f.ev, CO_EXTRA, 11) == 1,
       "empty source: every target row extra, once");
    f.ev.n = 0;
    merge(&d, m2, empty, 2, co_span_row);
    ok(f.ev.n == 2 && count(&f.ev, CO_MISSING, 10) == 1 && count(&f.ev, CO_MISSING, 11) == 1,
       "empty target: every source row missing, once");
    f.ev.n = 0;
    ok(merge(&d, empty, empty, 2, co_span_row) == 0 && f.ev.n == 0, "two empty sides: nothing");
    msg_free(empty);
    msg_free(m2);
    free_job(j);
}

static void test_fetch_merge(void)
{
    fixture f;
    job *j = new_job(NULL, &f, 1, CO_PRIO_NORMAL);
    drill d = {.j = j, .r = &j->r[0]};
    j->r[0].read_at_ms = 12345;
    int64_t a[] = {1, 2, 3, 6}, b[] = {1, 2, 4, 6};
    const char *va[] = {"x", "y", "z", "same"}, *vb[] = {"x", "Y", "w", "same"};
    msg *ma = fetch_reply(a, va, 4), *mb = fetch_reply(b, vb, 4);
    ok(merge(&d, ma, mb, 3, co_fetched_row) == 0, "fetch merge succeeds");
    ok(f.ev.n == 3, "fetch merge: three divergences (got %zu)", f.ev.n);
    ok(count(&f.ev, CO_CHANGED, 2) == 1, "fetch merge: key 2 changed, once");
    int ci = -1;
    for (size_t i = 0; i < f.ev.n; i++)
        if (f.ev.kind[i] == CO_CHANGED)
            ci = (int)i;
    ok(ci >= 0 && f.ev.ncols[ci] == 1 && !strcmp(f.ev.col[ci], "v") && !strcmp(f.ev.src[ci], "y") &&
           !strcmp(f.ev.tgt[ci], "Y"),
       "fetch merge: the changed column is v, y in source, Y in target");
    ok(count(&f.ev, CO_MISSING, 3) == 1 && count(&f.ev, CO_EXTRA, 4) == 1,
       "fetch merge: a row gone from one side since the scan is missing (3) or extra (4)");
    ok(j->sum->matched_on_fetch == 2, "fetch merge: equal rows 1 and 6 matched on fetch (%llu)",
       (unsigned long long)j->sum->matched_on_fetch);
    ok(j->sum->changed == 1 && j->sum->missing == 1 && j->sum->extra == 1,
       "fetch merge: summary counts one of each kind");
    msg_free(ma);
    msg_free(mb);
    free_job(j);
}

/* A stream reply (dense divergence) has fetch's rows: checked for keys
 * rising inside the span, merged as fetched rows but for matched_on_fetch. */
static void test_stream_rows(void)
{
    fixture f;
    job *j = new_job(NULL, &f, 1, CO_PRIO_NORMAL);
    drill d = {.j = j, .r = &j->r[0]};
    sl_buf klo = {0}, khi = {0};
    key_of(&klo, 1);
    key_of(&khi, 9);
    mk_bound lo = {MK_EXCL, klo.p, klo.len}, hi = {MK_EXCL, khi.p, khi.len};
    int64_t good[] = {2, 3, 5}, back[] = {3, 2}, out[] = {4, 9}, low[] = {1, 4};
    const char *v[] = {"p", "q", "r"};
    struct {
        const int64_t *ids;
        size_t n;
        int ok;
        const char *name;
    } cases[] = {{good, 3, 1, "keys rising inside the span: accepted"},
                 {back, 2, 0, "keys out of order: refused"},
                 {out, 2, 0, "a key at the span's excluded upper end: refused"},
                 {low, 2, 0, "a key at the span's excluded lower end: refused"}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        msg *m = fetch_reply(cases[c].ids, v, cases[c].n);
        const msg_obj *rows;
        uint32_t n;
        sl_err why = {0};
        int bad = msg_get_array(m, "rows", &rows, &n, NULL) ||
                  co_check_stream(j, rows, n, &lo, &hi, &why);
        ok((bad == 0) == cases[c].ok, "stream reply: %s%s%s", cases[c].name, bad ? ": " : "",
           bad ? why.msg : "");
        msg_free(m);
    }
    int64_t a[] = {2, 3, 5}, b[] = {2, 4, 5};
    const char *va[] = {"x", "y", "same"}, *vb[] = {"X", "w", "same"};
    msg *ma = fetch_reply(a, va, 3), *mb = fetch_reply(b, vb, 3);
    ok(merge(&d, ma, mb, 3, co_streamed_row) == 0 && f.ev.n == 3 &&
           count(&f.ev, CO_CHANGED, 2) == 1 && count(&f.ev, CO_MISSING, 3) == 1 &&
           count(&f.ev, CO_EXTRA, 4) == 1,
       "stream merge: 2 changed, 3 missing, 4 extra (%zu events)", f.ev.n);
    ok(j->sum->matched_on_fetch == 0, "stream merge: an equal row is not matched on fetch (%llu)",
       (unsigned long long)j->sum->matched_on_fetch);
    msg_free(ma);
    msg_free(mb);
    sl_buf_free(&klo);
    sl_buf_free(&khi);
    free_job(j);
}

/* With re-checks a divergence is queued under its own range, and reported
 * (confirmed) only once a re-check batch sees it again. */
static void test_recheck_range(void)
{
    fixture f;
    job *j = new_job(NULL, &f, 3, CO_PRIO_NORMAL);
    f.o.rechecks = 1;
    drill d = {.j = j, .r = &j->r[2]};
    int64_t a[] = {5};
    msg *ma = rows_reply(a, "a", 1), *none = rows_reply(NULL, "", 0);
    merge(&d, ma, none, 2, co_span_row);
    ok(f.ev.n == 0 && j->nrq == 1 && j->rq[0].range == 2 && j->r[2].pending == 1,
       "with re-checks: a missing row is queued under its range (2), not reported");
    drill batch = {.j = j, .r = NULL};
    j->recheck_mode = 1;
    j->batch_lo = 0;
    j->batch_n = 1;
    merge(&batch, ma, none, 2, co_span_row);
    j->recheck_mode = 0;
    ok(f.ev.n == 1 && f.ev.kind[0] == CO_MISSING && f.ev.status[0] == CO_CONFIRMED &&
           f.ev.id[0] == 5,
       "a re-check that sees it again confirms it, reported once");
    ok(j->r[2].emitted.len > 0 && j->r[0].emitted.len == 0,
       "the confirmed row is recorded as reported in its own range");
    msg_free(ma);
    msg_free(none);
    free_job(j);
}

/* One batch of the first n queued keys, as co_run_rechecks fetches it:
 * source rows a (values va), target rows b (values vb). */
static void look(job *j, size_t n, const int64_t *a, const char *const *va, size_t na,
                 const int64_t *b, const char *const *vb, size_t nb)
{
    msg *ma = fetch_reply(a, va, na), *mb = fetch_reply(b, vb, nb);
    drill d = {.j = j, .r = NULL};
    for (size_t i = 0; i < n; i++)
        j->rq[i].hit = 0;
    j->recheck_mode = 1;
    j->batch_lo = 0;
    j->batch_n = n;
    merge(&d, ma, mb, 3, co_fetched_row);
    j->recheck_mode = 0;
    sl_err err = {0};
    co_recheck_resolve(j, n, sl_now(), &err);
    msg_free(ma);
    msg_free(mb);
}

/* Change-driven verification: a changed key gets a first look; equal, it
 * is checked (no event); different, it gets the usual re-checks and is
 * confirmed, or transient if it settles. A key named again while it waits
 * is looked at once. */
static void test_first_look(void)
{
    fixture f;
    job *j = new_job(NULL, &f, 1, CO_PRIO_NORMAL);
    f.o.rechecks = 2;
    f.o.settle_ms = 0;
    f.o.changes = 1;
    sl_buf k = {0};
    sl_err err = {0};
    int64_t ids[] = {1, 2, 3, 2};
    for (int i = 0; i < 4; i++) {
        key_of(&k, ids[i]);
        co_recheck_add_change(j, k.p, k.len, 0, &err);
    }
    ok(j->nrq == 3 && j->deduped == 1 && j->r[0].pending == 3,
       "changed keys 1, 2, 3, 2: three queued, the repeat deduped (%zu, %llu)", j->nrq,
       (unsigned long long)j->deduped);
    int64_t s3[] = {1, 2, 3}, t2[] = {1, 2}, t3[] = {1, 2, 3};
    const char *sv[] = {"x", "y", "z"}, *tv[] = {"x", "Y"}, *tv3[] = {"x", "Y", "z"};
    look(j, 3, s3, sv, 3, t2, tv, 2);
    ok(f.ev.n == 0, "first look: nothing reported yet (%zu events)", f.ev.n);
    ok(j->checked == 1 && j->sum->transient == 0,
       "first look: key 1, equal on both sides, is checked, not transient");
    ok(j->nrq == 2 && !j->rq[0].first && !j->rq[1].first && j->rq[0].seen == 0 &&
           j->r[0].pending == 2,
       "first look: keys 2 (changed) and 3 (missing) enter the re-checks, none seen yet");
    int64_t s2[] = {2, 3};
    const char *sv2[] = {"y", "z"};
    int64_t t22[] = {2};
    const char *tv2[] = {"Y"};
    look(j, 2, s2, sv2, 2, t22, tv2, 1);
    ok(f.ev.n == 0 && j->nrq == 2, "re-check 1 of 2: still differing, still queued");
    look(j, 2, s2, sv2, 2, t3 + 1, tv3 + 1, 2);
    ok(f.ev.n == 2 && count(&f.ev, CO_CHANGED, 2) == 1 && count(&f.ev, CO_MISSING, 3) == 1,
       "re-check 2 of 2: key 2 reported changed, key 3 (now equal) reported");
    int st2 = -1, st3 = -1;
    for (size_t i = 0; i < f.ev.n; i++)
        *(f.ev.id[i] == 2 ? &st2 : &st3) = f.ev.status[i];
    ok(st2 == CO_CONFIRMED && st3 == CO_TRANSIENT,
       "key 2 is confirmed after 1 + 2 looks; key 3 settled: transient");
    ok(j->nrq == 0 && j->r[0].pending == 0 && j->checked == 1 && j->sum->changed == 1 &&
           j->sum->transient == 1 && j->ranges_done == 0,
       "the queue is empty; counts: 1 checked, 1 changed, 1 transient; no range finished");
    key_of(&k, 2);
    co_recheck_add_change(j, k.p, k.len, 0, &err);
    ok(j->nrq == 1 && j->rq[0].first, "a key changed again after its check is queued anew");
    for (int round = 0; round < 2; round++)
        for (int64_t id = 100; id < 5100; id++) {
            key_of(&k, id);
            co_recheck_add_change(j, k.p, k.len, 0, &err);
        }
    ok(j->nrq == 5001 && j->deduped == 5001,
       "5,000 keys named twice: each queued once (%zu queued, %llu deduped)", j->nrq,
       (unsigned long long)j->deduped);
    sl_buf_free(&k);
    free_job(j);
}

/* A changed key's commit time: a key named again keeps the earliest; a
 * confirmed divergence's detection latency runs from it (clamped at 0 when
 * the commit is in the future); the window counts what it confirmed and
 * found transient; the set keeps the times when it grows. */
static void test_commit_times(void)
{
    fixture f;
    job *j = new_job(NULL, &f, 1, CO_PRIO_NORMAL);
    f.o.rechecks = 1;
    f.o.settle_ms = 0;
    f.o.changes = 1;
    sl_buf k = {0};
    sl_err err = {0};
    int64_t now = sl_wall_ms();
    /* key 1 named at now-3000, then now-5000 (the target's change, say,
     * came first), then now-1000; key 2 at now+60000 (a clock ahead);
     * key 3 with no time (an older worker) */
    int64_t ids[] = {1, 1, 1, 2, 3}, at[] = {now - 3000, now - 5000, now - 1000, now + 60000, 0};
    for (int i = 0; i < 5; i++) {
        key_of(&k, ids[i]);
        co_recheck_add_change(j, k.p, k.len, at[i], &err);
    }
    key_of(&k, 1);
    int64_t t1 = co_recheck_change_at(j, k.p, k.len);
    ok(j->nrq == 3 && t1 == now - 5000,
       "a key named three times waits once with the earliest commit time (%lld ms before now)",
       (long long)(now - t1));
    key_of(&k, 3);
    ok(co_recheck_change_at(j, k.p, k.len) == 0, "a key that came without a time has none");
    key_of(&k, 9);
    ok(co_recheck_change_at(j, k.p, k.len) == 0, "a key not waiting has none");
    for (int64_t id = 100; id < 300; id++) { /* the set grows: times kept */
        key_of(&k, id);
        co_recheck_add_change(j, k.p, k.len, now - 2000, &err);
    }
    key_of(&k, 1);
    int64_t t1b = co_recheck_change_at(j, k.p, k.len);
    key_of(&k, 250);
    ok(j->kcap >= 512 && t1b == now - 5000 && co_recheck_change_at(j, k.p, k.len) == now - 2000,
       "after the set grew to %zu slots the times are kept", j->kcap);
    /* first look: keys 1, 2, 3 differ (missing on the target), 100.. equal */
    int64_t src[203], tgt[200];
    const char *sv[203], *tv[200];
    src[0] = 1, src[1] = 2, src[2] = 3;
    sv[0] = sv[1] = sv[2] = "a";
    for (int i = 0; i < 200; i++) {
        src[3 + i] = tgt[i] = 100 + i;
        sv[3 + i] = tv[i] = "b";
    }
    look(j, 203, src, sv, 203, tgt, tv, 200);
    ok(j->checked == 200 && j->nrq == 3 && j->win.nlat == 0,
       "first look: 200 equal keys checked, 3 differing ones await their re-check");
    /* the re-check: 1 and 2 still missing, 3 arrived (transient) */
    int64_t t3[] = {3};
    const char *tv3[] = {"a"};
    look(j, 3, src, sv, 3, t3, tv3, 1);
    ok(j->win.missing == 2 && j->win.transient == 1 && j->win.extra == 0 && j->win.changed == 0,
       "the window: 2 confirmed missing, 1 transient");
    ok(j->win.nlat == 2, "two latencies: the key without a commit time has none (%zu)",
       j->win.nlat);
    double l1 = j->win.nlat == 2 ? j->win.lat[0] : -1, l2 = j->win.nlat == 2 ? j->win.lat[1] : -1;
    ok(l1 >= 5.0 && l1 < 6.0, "key 1: timed from its earliest commit, 5 s ago (%.3f s)", l1);
    ok(l2 == 0, "key 2: a commit time ahead of the clock gives 0, not a negative (%.3f)", l2);
    sl_buf_free(&k);
    free_job(j);
}

/* ---- (b) range bookkeeping ---------------------------------------------------- */

static void test_next_task(void)
{
    co *c = fake_co();
    fixture f;
    job *j = new_job(c, &f, 3, CO_PRIO_NORMAL);
    int both = add_worker(c, "s", "t"), tgt = add_worker(c, "t", NULL),
        none = add_worker(c, "u", NULL);
    ok(co_next_task(j, &c->w[both]) == 0, "first task: range 0, source");
    ok(co_next_task(j, &c->w[tgt]) == 1, "a worker reaching the target only: range 0, target");
    ok(co_next_task(j, &c->w[none]) == SIZE_MAX, "a worker reaching neither: none");
    j->r[0].state[0] = RS_RUNNING;
    ok(co_next_task(j, &c->w[both]) == 1, "then range 0, target");
    j->r[0].state[1] = RS_BUILT;
    j->r[1].state[0] = RS_COMPARED;
    ok(co_next_task(j, &c->w[both]) == 3 && j->next == 3,
       "tasks no longer pending are passed, and the cursor with them (next %zu)", j->next);
    ok(co_next_task(j, &c->w[tgt]) == 3, "target-only worker: range 1, target");
    for (size_t t = 3; t < 6; t++)
        j->r[t / 2].state[t % 2] = RS_RUNNING;
    ok(co_next_task(j, &c->w[both]) == SIZE_MAX && j->next == 6, "nothing pending: none");
    c->jobs = NULL;
    free_job(j);
    co_free(c);
}

/* Trees are built at most (live workers + 1) ranges ahead of the
 * compares: past that only the other side of an open range is given. */
static void test_next_task_ahead(void)
{
    co *c = fake_co();
    fixture f;
    job *j = new_job(c, &f, 6, CO_PRIO_NORMAL);
    int both = add_worker(c, "s", "t");             /* one live worker: two ranges open at most */
    j->r[0].state[0] = j->r[0].state[1] = RS_BUILT; /* waits for its compare */
    j->r[1].state[0] = RS_RUNNING;
    ok(co_next_task(j, &c->w[both]) == 3, "two ranges open: the other side of one (range 1)");
    j->r[1].state[1] = RS_RUNNING;
    ok(co_next_task(j, &c->w[both]) == SIZE_MAX, "two ranges open, both sides out: no third");
    j->r[0].state[0] = j->r[0].state[1] = RS_COMPARED;
    ok(co_next_task(j, &c->w[both]) == 4, "one compared: range 2 is given");
    c->jobs = NULL;
    free_job(j);
    co_free(c);
}

/* A scrub's ranges are visited in its order, each side once. */
static void test_next_task_shuffled(void)
{
    co *c = fake_co();
    fixture f;
    job *j = new_job(c, &f, 4, CO_PRIO_NORMAL);
    int both = add_worker(c, "s", "t");
    j->order = malloc(4 * sizeof *j->order);
    size_t want[4] = {2, 0, 3, 1};
    memcpy(j->order, want, sizeof want);
    size_t seen[8], n = 0, t;
    while (n < 8 && (t = co_next_task(j, &c->w[both])) != SIZE_MAX) {
        seen[n++] = t;
        j->r[t / 2].state[t % 2] = RS_RUNNING;
        if (j->r[t / 2].state[1 - t % 2] == RS_RUNNING) /* compared at once: not open */
            j->r[t / 2].state[0] = j->r[t / 2].state[1] = RS_COMPARED;
    }
    int in_order = n == 8;
    for (size_t i = 0; in_order && i < 8; i++)
        in_order = seen[i] == want[i / 2] * 2 + i % 2;
    ok(in_order, "shuffled: ranges 2, 0, 3, 1, each side once (%zu tasks)", n);
    j->r[3].state[1] = RS_PENDING; /* its worker lost: back in the queue */
    j->next = 0;
    ok(co_next_task(j, &c->w[both]) == 7, "a task requeued is found again in that order");
    c->jobs = NULL;
    free_job(j);
    co_free(c);
}

static void test_requeue_lost(void)
{
    co *c = fake_co();
    fixture f;
    job *j = new_job(c, &f, 3, CO_PRIO_NORMAL);
    int w0 = add_worker(c, "s", "t"), w1 = add_worker(c, "s", "t"), w2 = add_worker(c, "s", "t");
    range *r = j->r;
    r[0].state[0] = RS_RUNNING, r[0].worker[0] = w0, r[0].gen[0] = c->w[w0].gen;
    r[0].state[1] = RS_BUILT, r[0].worker[1] = w1, r[0].gen[1] = c->w[w1].gen;
    r[1].state[0] = r[1].state[1] = RS_COMPARED;
    r[1].worker[0] = r[1].worker[1] = w0, r[1].gen[0] = r[1].gen[1] = c->w[w0].gen;
    r[2].state[0] = RS_BUILT, r[2].worker[0] = w2, r[2].gen[0] = c->w[w2].gen;
    r[2].state[1] = RS_BUILT, r[2].worker[1] = w0, r[2].gen[1] = c->w[w0].gen;
    mk_nodelist_add(&r[2].root[1], 0, 0, (const uint8_t *)"0123456789abcdef", 1,
                    (const uint8_t *)"k", 1);
    j->next = 5;
    c->w[w0].gen = ++c->gens; /* w0 restarted: a new registration */
    c->lost++;
    co_requeue_lost(j);
    ok(r[0].state[0] == RS_PENDING && r[0].worker[0] == -1,
       "a side a restarted worker was building goes back to pending");
    ok(r[2].state[1] == RS_PENDING && r[2].worker[1] == -1 && r[2].root[1].n == 0,
       "a side a restarted worker had built goes back to pending, its root dropped");
    ok(r[0].state[1] == RS_BUILT && r[2].state[0] == RS_BUILT,
       "sides held by workers still registered stay built");
    ok(r[1].state[0] == RS_COMPARED && r[1].state[1] == RS_COMPARED,
       "compared ranges stay compared");
    ok(j->next == 0 && j->lost_seen == c->lost, "the cursor starts over");
    c->w[w1].alive = 0; /* w1 lost */
    co_requeue_lost(j);
    ok(r[0].state[1] == RS_PENDING, "a side a lost worker had built goes back to pending");
    c->jobs = NULL;
    free_job(j);
    co_free(c);
}

static void test_dispatch(void)
{
    co *c = fake_co();
    fixture fl, fh;
    job *low = new_job(c, &fl, 2, CO_PRIO_LOW), *high = new_job(c, &fh, 2, CO_PRIO_HIGH);
    int w0 = add_worker(c, "s", "t");
    co_dispatch(c);
    ok(c->w[w0].busy_job == high && high->tasks == 1 && low->tasks == 0,
       "an idle worker takes the high-priority job's task, though the low one is older");
    ok(high->r[0].state[0] == RS_RUNNING && high->r[0].worker[0] == w0 &&
           high->r[0].gen[0] == c->w[w0].gen,
       "the task's side is running on that worker's registration");
    ok(sent.n == 1 && sent.wi[0] == w0 && sent.type[0] == MSG_TREE &&
           sent.id[0] == c->w[w0].busy_req,
       "one tree request sent, to that worker, under the id it waits for");
    int w1 = add_worker(c, "s", "t");
    co_dispatch(c);
    ok(c->w[w1].busy_job == high && high->tasks == 2 && c->w[w0].busy_job == high,
       "the next idle worker too takes the high job's next task; a busy worker gets none");
    int w2 = add_worker(c, "s", "t");
    high->cap = 2;
    co_dispatch(c);
    ok(c->w[w2].busy_job == low && high->tasks == 2 && low->tasks == 1,
       "a job at its cap gets no more: the low job's task goes out");
    c->jobs = NULL;
    free_job(low);
    free_job(high);
    co_free(c);

    /* equal priority: the job with fewer tasks running; older first on a tie */
    c = fake_co();
    fixture fa, fb;
    job *a = new_job(c, &fa, 2, CO_PRIO_NORMAL), *b = new_job(c, &fb, 2, CO_PRIO_NORMAL);
    int v0 = add_worker(c, "s", "t"), v1 = add_worker(c, "s", "t"), v2 = add_worker(c, "s", "t");
    c->w[v1].shunned_until = sl_now() + 100;
    co_dispatch(c);
    ok(c->w[v0].busy_job == a, "equal priority, equal tasks: the older job");
    ok(c->w[v1].busy_req == 0 && c->w[v1].busy_job == NULL, "a shunned worker gets no task");
    ok(c->w[v2].busy_job == b && a->tasks == 1 && b->tasks == 1,
       "equal priority: the next task goes to the job with fewer running");
    ok(sent.n == 2, "two tree requests sent (%zu)", sent.n);
    b->cancel = 1;
    c->w[v1].shunned_until = 0;
    co_dispatch(c);
    ok(c->w[v1].busy_job == a, "a cancelled job gets no task");
    c->jobs = NULL;
    free_job(a);
    free_job(b);
    co_free(c);
}

/* ---- (c) replies filed ---------------------------------------------------------- */

static msg *reply(int type, uint64_t id, int64_t rows, const sl_buf *rootkey)
{
    sl_buf f = {0};
    if (type == MSG_ERROR) {
        msg_error_frame(id, "boom", &f);
    } else {
        msg_writer *w = msg_writer_new(MSG_REPLY, id);
        if (rows >= 0) {
            msg_put_int(w, "rows", rows);
            msg_key(w, "nodes");
            msg_pack_array(w, rootkey ? 1 : 0);
            if (rootkey) {
                uint8_t hash[16] = {1};
                msg_pack_array(w, 5);
                msg_pack_int(w, 0);
                msg_pack_int(w, 0);
                msg_pack_bin(w, hash, 16);
                msg_pack_int(w, rows);
                msg_pack_bin(w, rootkey->p, rootkey->len);
            }
        }
        msg_writer_finish(w, &f, NULL);
        msg_writer_free(w);
    }
    msg *m = msg_decode(f.p, f.len, NULL);
    sl_buf_free(&f);
    return m;
}

static void test_route_reply(void)
{
    co *c = fake_co();
    fixture f1, f2;
    job *j1 = new_job(c, &f1, 1, CO_PRIO_NORMAL), *j2 = new_job(c, &f2, 1, CO_PRIO_NORMAL);
    j1->phase = j2->phase = JOB_DESCRIBE; /* no range tasks: requests only */
    int w0 = add_worker(c, "s", "t"), w1 = add_worker(c, "s", "t");
    j1->wait = (job_wait){.n = 1, .ids = {77}, .from = {w0}, .gen = {c->w[w0].gen}};
    j2->wait = (job_wait){.n = 1, .ids = {78}, .from = {w0}, .gen = {c->w[w0].gen}};
    co_route_reply(c, w1, reply(MSG_REPLY, 77, -1, NULL));
    ok(!j1->wait.rep[0] && !j1->wake, "a reply from a worker not asked is dropped");
    msg *m = reply(MSG_REPLY, 77, -1, NULL);
    co_route_reply(c, w0, m);
    ok(j1->wait.rep[0] == m && j1->wake && !j2->wait.rep[0] && !j2->wake,
       "a reply for the id a job waits on goes to that job only");
    co_route_reply(c, w0, reply(MSG_REPLY, 77, -1, NULL));
    ok(j1->wait.rep[0] == m, "a second reply under the same id is dropped");
    c->w[w0].gen = ++c->gens; /* w0 registered again since j2 asked */
    co_route_reply(c, w0, reply(MSG_REPLY, 78, -1, NULL));
    ok(!j2->wait.rep[0] && !j2->wake, "a reply from a later registration of the worker is dropped");
    msg_free(j1->wait.rep[0]);
    c->jobs = NULL;
    free_job(j1);
    free_job(j2);
    co_free(c);
}

static void test_tree_reply(void)
{
    co *c = fake_co();
    fixture f;
    job *j = new_job(c, &f, 2, CO_PRIO_NORMAL);
    int w0 = add_worker(c, "s", NULL), w1 = add_worker(c, "t", NULL);
    co_dispatch(c); /* w0: range 0 source; w1: range 0 target */
    uint64_t id0 = c->w[w0].busy_req, id1 = c->w[w1].busy_req;
    ok(id0 && id1 && j->r[0].state[0] == RS_RUNNING && j->r[0].state[1] == RS_RUNNING,
       "both sides of range 0 handed out");
    sl_buf k = {0};
    key_of(&k, 42);
    co_route_reply(c, w1, reply(MSG_REPLY, id0, 0, NULL));
    ok(j->r[0].state[0] == RS_RUNNING && c->w[w0].busy_req == id0,
       "a tree reply from a worker other than the one asked is dropped");
    co_route_reply(c, w0, reply(MSG_REPLY, id0, 3, &k));
    ok(j->r[0].state[0] == RS_BUILT && j->r[0].rows[0] == 3 && j->r[0].root[0].n == 1 &&
           c->w[w0].busy_req == 0 && j->tasks == 1,
       "a tree reply builds its side and frees its worker");
    ok(j->nready == 0, "one side built: the range is not ready");
    co_route_reply(c, w1, reply(MSG_REPLY, id1, 0, NULL));
    ok(j->r[0].state[1] == RS_BUILT && j->nready == 1 && j->ready[0] == 0 && j->tasks == 0,
       "both sides built: the range lands in the ready queue");
    ok(j->r[0].read_at_ms > 0, "and its read time is stamped");
    co_route_reply(c, w1, reply(MSG_REPLY, id1, 0, NULL));
    ok(j->nready == 1, "a repeated tree reply is dropped: the range is queued once");

    /* range 1: an error reply fails the job, naming the side */
    co_dispatch(c);
    uint64_t id2 = c->w[w1].busy_req, id3 = c->w[w0].busy_req;
    co_route_reply(c, w1, reply(MSG_ERROR, id2, 0, NULL));
    ok(j->fatal && !strcmp(j->err.msg, "target: boom"),
       "an error reply to a range task fails the job: \"%s\"", j->err.msg);
    /* a tree reply claiming rows it does not hold drops its worker */
    co_route_reply(c, w0, reply(MSG_REPLY, id3, 5, NULL));
    ok(!c->w[w0].alive && j->r[1].state[0] == RS_RUNNING && c->lost == 1,
       "a tree reply whose nodes do not hold the rows claimed drops the worker; its side waits "
       "for co_requeue_lost");
    sl_buf_free(&k);
    c->jobs = NULL;
    free_job(j);
    co_free(c);
}

/* A share: a job whose range tasks (running ones too) took more than share%
 * of the time since its first is passed over until they took less. The
 * clock is moved by moving the job's and worker's stamps back. */
static void test_share(void)
{
    co *c = fake_co();
    fixture fs, fp;
    job *s = new_job(c, &fs, 4, CO_PRIO_HIGH), *p = new_job(c, &fp, 4, CO_PRIO_LOW);
    fs.o.share = 20;
    int w0 = add_worker(c, "s", "t");
    co_dispatch(c);
    ok(c->w[w0].busy_job == s && s->first_sent > 0 && c->w[w0].busy_since == s->first_sent,
       "a share job's first task goes out at once, its send time kept");
    c->w[w0].busy_since -= 1; /* its task has run 1 s, 1 s since the first */
    s->first_sent -= 1;
    int w1 = add_worker(c, "s", "t");
    co_dispatch(c);
    double now = sl_now();
    ok(c->w[w1].busy_job == p && s->tasks == 1 && p->tasks == 1,
       "its running task took 1 s of 1 s, above 20%%: the idle worker takes the low job's task");
    ok(s->resume_at > now + 3.9 && s->resume_at < now + 4.1,
       "it may go on when 1 s is 20%% of the time since its first: in 4 s (%.2f)",
       s->resume_at - now);
    co_route_reply(c, w0, reply(MSG_REPLY, c->w[w0].busy_req, 0, NULL));
    ok(s->tasks == 0 && s->busy_s >= 1 && s->busy_s < 1.5,
       "the task's reply adds its time to the job's busy time (%.3f s)", s->busy_s);
    co_dispatch(c);
    ok(c->w[w0].busy_job == p && s->tasks == 0,
       "still above its share with no task running: the freed worker goes to the low job");
    s->first_sent -= 4.5; /* 1 s busy in 5.5 s: 18% */
    int w2 = add_worker(c, "s", "t");
    co_dispatch(c);
    ok(c->w[w2].busy_job == s && s->tasks == 1,
       "below its share again: the high job takes the next idle worker");
    c->jobs = NULL;
    free_job(s);
    free_job(p);
    co_free(c);

    /* no share: the same stamps pause nothing */
    c = fake_co();
    fixture fn;
    job *n = new_job(c, &fn, 4, CO_PRIO_NORMAL);
    int v0 = add_worker(c, "s", "t");
    co_dispatch(c);
    c->w[v0].busy_since -= 1;
    n->first_sent -= 1;
    int v1 = add_worker(c, "s", "t");
    co_dispatch(c);
    ok(c->w[v1].busy_job == n && n->tasks == 2, "a job without a share is never paused");
    c->jobs = NULL;
    free_job(n);
    co_free(c);
}

/* ---- (d) quick answers and audits that yield (issue 15) ----------------------- */

static size_t done_calls, done_range;
static uint64_t done_rows[2];

static int note_done(void *ctx, size_t range, uint64_t src, uint64_t tgt)
{
    (void)ctx;
    done_calls++;
    done_range = range;
    done_rows[0] = src;
    done_rows[1] = tgt;
    return 0;
}

static void test_quick(void)
{
    /* --keys-only: a differing row hash is a changed key, no fetch gathered */
    fixture f;
    job *j = new_job(NULL, &f, 1, CO_PRIO_NORMAL);
    f.o.keys_only = 1;
    drill d = {.j = j, .r = &j->r[0]};
    int64_t a[] = {1, 2, 3}, b[] = {1, 2, 3};
    msg *ma = rows_reply(a, "aaa", 3), *mb = rows_reply(b, "aba", 3);
    ok(merge(&d, ma, mb, 2, co_span_row) == 0 && f.ev.n == 1 && count(&f.ev, CO_CHANGED, 2) == 1 &&
           f.ev.ncols[0] == 0 && j->nchanged == 0,
       "--keys-only: the key whose hash differs is reported changed, with no columns, no fetch");
    msg_free(ma);
    msg_free(mb);
    free_job(j);

    /* --max-divergences: the N-th reported divergence stops the job */
    j = new_job(NULL, &f, 1, CO_PRIO_NORMAL);
    f.o.max_divergences = 2;
    sl_buf k = {0};
    sl_err err = {0};
    key_of(&k, 5);
    int r1 = co_emit_row(j, &j->r[0], CO_MISSING, 0, k.p, k.len, NULL, 0, &err);
    key_of(&k, 6);
    int rt = co_emit_row(j, &j->r[0], CO_CHANGED, CO_TRANSIENT, k.p, k.len, NULL, 0, &err);
    ok(r1 == 0 && rt == 0 && !j->limit_hit, "--max-divergences 2: one, and a transient, go on");
    key_of(&k, 7);
    int r2 = co_emit_row(j, &j->r[0], CO_EXTRA, 0, k.p, k.len, NULL, 0, &err);
    ok(r2 != 0 && j->limit_hit && j->sum->limit_reached && f.ev.n == 3 &&
           strstr(err.msg, "stopped after 2 divergences"),
       "--max-divergences 2: the second confirmed one is reported, then the job stops (%s)",
       err.msg);
    sl_buf_free(&k);
    free_job(j);

    /* --chunk-time: pieces of a planned range; it is recorded once, when its last is */
    j = new_job(NULL, &f, 3, CO_PRIO_NORMAL);
    f.cb.range_done = note_done;
    done_calls = 0;
    j->r[0].planned = 0, j->r[0].unfinished = 2; /* range 0 split: pieces 0 and 2 */
    j->r[1].planned = 1, j->r[1].unfinished = 1;
    j->r[2].planned = 0;
    j->r[2].rows[0] = 10, j->r[2].rows[1] = 9;
    j->r[0].rows[0] = 5, j->r[0].rows[1] = 5;
    ok(co_finish_range(j, 2, &err) == 0 && done_calls == 0 && j->ranges_done == 1,
       "a piece finished: counted, its planned range not recorded yet");
    ok(co_finish_range(j, 0, &err) == 0 && done_calls == 1 && done_range == 0 &&
           done_rows[0] == 15 && done_rows[1] == 14,
       "its last piece finished: planned range 0 recorded once, with the pieces' rows");
    free_job(j);

    /* no range task while paused for replica lag, nor for a range being split */
    co *c = fake_co();
    fixture fp;
    job *p = new_job(c, &fp, 2, CO_PRIO_NORMAL);
    int w0 = add_worker(c, "s", "t");
    p->lag_paused = 1;
    co_dispatch(c);
    ok(c->w[w0].busy_req == 0 && p->tasks == 0, "a job paused for replica lag gets no task");
    p->lag_paused = 0;
    p->r[0].splitting = 1;
    co_dispatch(c);
    ok(c->w[w0].busy_job == p && c->w[w0].busy_task == 2,
       "a range being split is skipped: range 1's source goes out first (task %ld)",
       c->w[w0].busy_task);
    c->jobs = NULL;
    free_job(p);
    co_free(c);
}

int main(void)
{
    test_span_merge();
    test_fetch_merge();
    test_stream_rows();
    test_recheck_range();
    test_first_look();
    test_commit_times();
    test_next_task();
    test_next_task_ahead();
    test_next_task_shuffled();
    test_requeue_lost();
    test_dispatch();
    test_share();
    test_route_reply();
    test_tree_reply();
    test_quick();
    return done_testing();
}
