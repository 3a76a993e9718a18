/* co_compare: a range's two trees compared (mk_diff), their differing
 * spans' rows read and merged, differing rows' columns fetched and
 * compared, and every divergence reported once. The range being compared
 * travels as a drill context: mk_diff's callbacks and everything below them
 * take it, so nothing in the job says which range is current. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "co_impl.h"

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

static int read_node_list(job *j, const range *r, const msg_obj *nodes, uint32_t n,
                          const mk_node *parent, uint64_t rows, mk_nodelist *out, sl_err *why);

/* Reads a tree or nodes reply's "nodes", appending them to out, and checks
 * what every honest tree gives: nodes whose last keys are keys of the job,
 * rising strictly and inside range r; for a tree reply (parent NULL) at most
 * the one root, holding all `rows` of the range; for children, at least
 * one, each a level below the parent and numbered consecutively, whose rows
 * (each at least 1) add up to the parent's. Returns 0; 1 with why saying
 * what is wrong (the worker is to be rejected); -1 when memory runs out. */
int co_read_nodes(job *j, const range *r, const msg *m, const mk_node *parent, uint64_t rows,
                  mk_nodelist *out, sl_err *why)
{
    const msg_obj *nodes;
    uint32_t n;
    if (msg_get_array(m, "nodes", &nodes, &n, why))
        return 1;
    return read_node_list(j, r, nodes, n, parent, rows, out, why);
}

static int read_node_list(job *j, const range *r, const msg_obj *nodes, uint32_t n,
                          const mk_node *parent, uint64_t rows, mk_nodelist *out, sl_err *why)
{
    if (parent ? n == 0 : n > 1)
        return sl_err_set(why, "has %u nodes", n), 1;
    mk_bound lo = range_lo(r), hi = range_hi(r);
    size_t first = out->n;
    uint64_t sum = 0;
    for (uint32_t i = 0; i < n; i++) {
        const msg_obj *f;
        uint32_t nf;
        int64_t level, index, nrows;
        const uint8_t *hash, *key;
        size_t hl, kl;
        if (msg_obj_array(msg_obj_at(nodes, i), &f, &nf) || nf != 5 ||
            msg_obj_int(msg_obj_at(f, 0), &level) || msg_obj_int(msg_obj_at(f, 1), &index) ||
            msg_obj_bin(msg_obj_at(f, 2), &hash, &hl) || hl != 16 ||
            msg_obj_int(msg_obj_at(f, 3), &nrows) || msg_obj_bin(msg_obj_at(f, 4), &key, &kl) ||
            level < 0 || level > 64 || index < 0 || index > UINT32_MAX || nrows < 1)
            return sl_err_set(why, "has node %u that is not [level, index, hash, rows, key]", i), 1;
        if (parent && (uint64_t)level + 1 != parent->level)
            return sl_err_set(why, "has a child at level %lld under a node at level %u",
                              (long long)level, parent->level),
                   1;
        if (parent && out->n > first && (uint64_t)index != (uint64_t)out->v[out->n - 1].index + 1)
            return sl_err_set(why, "numbers its children out of sequence"), 1;
        if (!co_is_job_key(j, key, kl, why))
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

/* The id of range ri's side tree on its worker. */
static uint64_t tree_id(job *j, size_t ri, int side)
{
    return j->r[ri].tree[side];
}

/* Forgets a side's grandchildren (drill.grand). */
static void grand_drop(drill *d, int side)
{
    for (uint32_t k = 0; k < d->ngrand[side]; k++)
        mk_nodelist_free(&d->grand[side][k]);
    free(d->grand[side]);
    d->grand[side] = NULL;
    d->ngrand[side] = 0;
}

/* A level-2 node's reply also lists each child's children ("grand", one
 * list a child, each checked as a nodes reply is): kept, so the drill into
 * those children needs no round trip. 0, 1 with why (a bad list), -1. */
static int grand_take(drill *d, int side, const msg *m, const mk_nodelist *kids, size_t first,
                      sl_err *why)
{
    const msg_obj *g;
    uint32_t n = (uint32_t)(kids->n - first), ng;
    grand_drop(d, side);
    if (!msg_get(m, "grand"))
        return 0; /* an older worker */
    if (msg_get_array(m, "grand", &g, &ng, why) || ng != n)
        return sl_err_set(why, "has grandchildren for %u of %u children", ng, n), 1;
    if (!(d->grand[side] = calloc(n, sizeof *d->grand[side])))
        return -1;
    d->ngrand[side] = n;
    d->grand_first[side] = kids->v[first].index;
    for (uint32_t k = 0; k < n; k++) {
        const msg_obj *items;
        uint32_t ni;
        mk_node c = kids->v[first + k];
        if (msg_obj_array(msg_obj_at(g, k), &items, &ni))
            return sl_err_set(why, "has grandchildren %u that are not a list", k), 1;
        int rc = read_node_list(d->j, d->r, items, ni, &c, c.rows, &d->grand[side][k], why);
        if (rc)
            return rc;
    }
    return 0;
}

/* mk_diff's children: asks the worker holding d->r's side tree for a
 * node's children and checks them (a level-1 node's may be at hand, from
 * its parent's reply). 0, -1, or CO_LOST (the holder is gone or was
 * dropped for a bad reply: the side is rebuilt elsewhere). */
static int children_cb(void *ctx, int side, const mk_node *parent, mk_nodelist *out, sl_err *err)
{
    drill *d = ctx;
    job *j = d->j;
    range *r = d->r;
    uint64_t id;
    if (!co_worker_is(j->c, r->worker[side], r->gen[side]))
        return sl_err_set(err, "worker %d was lost", r->worker[side]), CO_LOST;
    if (parent->level == 1) /* leaves: what the drill looks at */
        j->dense_listed += parent->rows;
    uint32_t gi = parent->index - d->grand_first[side];
    if (parent->level == 1 && parent->index >= d->grand_first[side] && gi < d->ngrand[side]) {
        const mk_nodelist *l = &d->grand[side][gi]; /* listed with its parent's siblings */
        for (size_t k = 0; k < l->n; k++)
            if (mk_nodelist_add(out, l->v[k].level, l->v[k].index, l->v[k].hash, l->v[k].rows,
                                mk_nodelist_key(l, k), l->v[k].klen))
                return sl_err_set(err, "out of memory");
        return 0;
    }
    msg_writer *mw = co_request(j->c, MSG_NODES, &id);
    if (!mw)
        return sl_err_set(err, "out of memory");
    msg_put_uint(mw, "tree", tree_id(j, (size_t)(r - j->r), side));
    msg_put_uint(mw, "level", parent->level);
    msg_put_uint(mw, "index", parent->index);
    if (parent->level == 2) /* the leaves under its children too: one round trip, not 33 */
        msg_put_uint(mw, "grand", 1);
    msg *m;
    int rc = co_rpc(j->c, r->worker[side], mw, id, &m, err);
    if (rc)
        return rc; /* CO_LOST passes through mk_diff to co_compare_range */
    sl_err why;
    size_t first = out->n;
    rc = co_read_nodes(j, r, m, parent, parent->rows, out, &why);
    if (rc == 0 && parent->level == 2)
        rc = grand_take(d, side, m, out, first, &why);
    msg_free(m);
    if (rc > 0) /* its tree is rebuilt elsewhere, as for a lost worker */
        return co_reject_worker(j->c, r->worker[side], err, "its nodes reply %s", why.msg);
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
    /* a range merged (co_merge.c) is never compared again: a merge reply
     * is reported whole or not at all, and a lost task resumes after its
     * last key; recording its keys would only hold every one of them */
    if (r->merging)
        return 0;
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

int co_emit_row(job *j, range *r, int kind, int status, const uint8_t *key, size_t klen,
                const co_coldiff *cols, size_t ncols, sl_err *err)
{
    if (already_emitted(r, kind, key, klen))
        return 0;
    sl_buf strs = {0};
    const char *vals[ENC_MAX_KEY_COLS];
    int rc = key_display(j, key, klen, &strs, vals, err);
    int repeat = 0;
    if (rc == 0) {
        co_event ev = {.repeat = &repeat,
                       .kind = kind,
                       .key = key,
                       .klen = klen,
                       .key_cols = j->cols,
                       .key_vals = vals,
                       .nkey = j->nkey,
                       .cols = cols,
                       .ncols = ncols,
                       .read_at_ms = r->read_at_ms,
                       .status = status,
                       .run = status == 0 ? (long)(r - j->r) : -1};
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
        /* --max-divergences: the job unwinds from here and ends done */
        if (rc == 0 && !repeat && status != CO_TRANSIENT && j->o->max_divergences &&
            ++j->ndiv >= j->o->max_divergences) {
            j->limit_hit = j->sum->limit_reached = 1;
            rc = sl_err_set(err, "stopped after %llu divergences (--max-divergences)",
                            (unsigned long long)j->ndiv);
        }
    }
    sl_buf_free(&strs);
    return rc;
}

/* A divergence seen in range d->r, or in a re-check batch. Without
 * re-checks it is reported at once; with them it is queued, or during a
 * batch counted towards its confirmation. 0, or -1 with err. */
static int found(drill *d, int kind, const uint8_t *key, size_t klen, const co_coldiff *cols,
                 size_t ncols, sl_err *err)
{
    job *j = d->j;
    if (!j->recheck_mode)
        j->found_n++; /* a compare's share of differing rows (co_compare_range) */
    if (j->o->rechecks <= 0)
        return co_emit_row(j, d->r, kind, 0, key, klen, cols, ncols, err);
    if (j->recheck_mode)
        return co_recheck_hit(j, kind, key, klen, cols, ncols, err);
    return co_recheck_add(j, d->r, kind, key, klen, err);
}

int co_merge_rows(drill *d, const msg_obj *ra, uint32_t na, const msg_obj *rb, uint32_t nb,
                  uint32_t width, merge_fn fn, sl_err *err)
{
    uint32_t i = 0, k = 0;
    while (i < na || k < nb) {
        const msg_obj *fa = NULL, *fb = NULL;
        uint32_t wa, wb;
        const uint8_t *ka = NULL, *kb = NULL;
        size_t kla = 0, klb = 0;
        if (i < na && (msg_obj_array(msg_obj_at(ra, i), &fa, &wa) || wa != width ||
                       msg_obj_bin(msg_obj_at(fa, 0), &ka, &kla)))
            return sl_err_set(err, "malformed row list from a worker");
        if (k < nb && (msg_obj_array(msg_obj_at(rb, k), &fb, &wb) || wb != width ||
                       msg_obj_bin(msg_obj_at(fb, 0), &kb, &klb)))
            return sl_err_set(err, "malformed row list from a worker");
        int c = !fa ? 1 : !fb ? -1 : mk_key_cmp(ka, kla, kb, klb);
        if (fn(d, c <= 0 ? fa : NULL, c >= 0 ? fb : NULL, err))
            return -1;
        i += c <= 0;
        k += c >= 0;
    }
    return 0;
}

/* Sends the same kind of request to both sides' workers and waits for both
 * replies' "rows". */
static int ask_both(job *j, const int workers[2], msg_writer *mw[2], uint64_t ids[2], msg *rep[2],
                    const msg_obj *rows[2], uint32_t n[2], sl_err *err)
{
    for (int s = 0; s < 2; s++) {
        int r = co_call(j->c, workers[s], mw[s], err);
        if (r) {
            if (s == 0)
                msg_writer_free(mw[1]);
            return r;
        }
    }
    int r = co_wait_replies(j->c, ids, workers, rep, 2, err);
    if (r)
        return r;
    for (int s = 0; s < 2; s++)
        if (msg_get_array(rep[s], "rows", &rows[s], &n[s], err))
            return -1;
    return 0;
}

/* A fetched column: its encoding whole (bin: *whole set) or, for a long
 * value, its digest [head, length, hash] (into d). -1 when it is neither. */
static int fetched_value(const msg_obj *o, const uint8_t **p, size_t *n, int *whole, enc_digest *d)
{
    const msg_obj *f;
    uint32_t nf;
    const uint8_t *head, *hash;
    size_t nhead, nhash;
    int64_t len;
    if (msg_obj_bin(o, p, n) == 0) {
        *whole = 1;
        return 0;
    }
    *whole = 0;
    if (msg_obj_array(o, &f, &nf) || nf != 3 || msg_obj_bin(msg_obj_at(f, 0), &head, &nhead) ||
        nhead < 1 || nhead > sizeof d->head || msg_obj_int(msg_obj_at(f, 1), &len) || len < 0 ||
        msg_obj_bin(msg_obj_at(f, 2), &hash, &nhash) || nhash != 16)
        return -1;
    memset(d, 0, sizeof *d);
    memcpy(d->head, head, nhead);
    d->nhead = (uint8_t)nhead;
    d->len = (uint64_t)len;
    memcpy(d->hash, hash, 16);
    return 0;
}

int co_check_value(const msg_obj *o)
{
    const uint8_t *p;
    size_t n;
    int whole;
    enc_digest d;
    return fetched_value(o, &p, &n, &whole, &d);
}

/* A row's differing columns, gathered for found(): diffs point into
 * texts, which the row frees once reported. */
typedef struct row_diffs {
    co_coldiff diffs[CO_MAX_COLS];
    char *texts[4 * CO_MAX_COLS];
    size_t nd, nt;
    int tolerated;
} row_diffs;

/* Column col of a row on both sides: its values ea, eb (an encoding whole,
 * or a long value's digest) and display texts da, db (or nil). Two values
 * are compared bytewise when both came whole, else by digest; a number
 * under an epsilon (its hash was its grid cell) is compared exactly
 * against it. A differing one is added to rd. 0, or -1 with err. */
static int compare_col(job *j, size_t col, const msg_obj *ea, const msg_obj *eb, const msg_obj *da,
                       const msg_obj *db, row_diffs *rd, sl_err *err)
{
    int flags = j->o->strict ? ENC_STRICT : 0;
    const uint8_t *pa = NULL, *pb = NULL;
    size_t la = 0, lb = 0;
    int wa, wb;
    enc_digest dga, dgb;
    if (fetched_value(ea, &pa, &la, &wa, &dga) || fetched_value(eb, &pb, &lb, &wb, &dgb) ||
        (wa && !wb && enc_digest_encoded(pa, la, flags, &dga)) ||
        (wb && !wa && enc_digest_encoded(pb, lb, flags, &dgb)))
        return sl_err_set(err, "malformed fetch reply from a worker");
    if (wa && wb ? la == lb && memcmp(pa, pb, la) == 0 : enc_digest_equal(&dga, &dgb))
        return 0;
    if (wa && wb && j->tol && j->tol[col].num != ENC_TOL_EXACT) {
        int w = enc_tol_within(pa, la, pb, lb, flags, &j->tol[col]);
        if (w < 0)
            return sl_err_set(err, "out of memory");
        if (w) {
            rd->tolerated = 1;
            return 0;
        }
    }
    const char *sp;
    size_t sl;
    co_coldiff *dc = &rd->diffs[rd->nd++];
    *dc = (co_coldiff){.column = j->cols[col]};
    if (msg_obj_str(da, &sp, &sl) == 0)
        dc->source = rd->texts[rd->nt++] = strndup(sp, sl);
    if (msg_obj_str(db, &sp, &sl) == 0)
        dc->target = rd->texts[rd->nt++] = strndup(sp, sl);
    for (int s = 0; s < 2; s++) {
        const enc_digest *d = s ? &dgb : &dga;
        char *hex;
        if (s ? wb : wa)
            continue;
        if (!(hex = rd->texts[rd->nt++] = malloc(33)))
            return sl_err_set(err, "out of memory");
        for (int i = 0; i < 16; i++)
            snprintf(hex + 2 * i, 3, "%02x", d->hash[i]);
        *(s ? &dc->target_hash : &dc->source_hash) = hex;
        *(s ? &dc->target_len : &dc->source_len) = d->len;
    }
    return 0;
}

/* After a row's columns were compared (rc: how that went): reported when
 * one differed, else counted; rd's texts freed. */
static int row_done(drill *d, const uint8_t *key, size_t klen, row_diffs *rd, int fetched, int rc,
                    sl_err *err)
{
    job *j = d->j;
    if (rd->nd && !fetched)
        j->st_ndiff++;
    if (rc == 0 && rd->nd)
        rc = found(d, CO_CHANGED, key, klen, rd->diffs, rd->nd, err);
    else if (rc == 0 && !j->recheck_mode && rd->tolerated)
        j->sum->within_tolerance++;
    else if (rc == 0 && !j->recheck_mode && fetched)
        j->sum->matched_on_fetch++;
    for (size_t t = 0; t < rd->nt; t++)
        free(rd->texts[t]);
    return rc;
}

/* One key of a fetch or a stream: [key, [column encodings], [display
 * text]]. A row on one side only is missing or extra. A long value comes as
 * a digest and its display text cut short. fetched: the rows were read
 * again because their hashes differed, so rows found equal count as
 * matched on fetch (a stream's equal rows are just equal). */
static int compare_row(drill *d, const msg_obj *a, const msg_obj *b, int fetched, sl_err *err)
{
    job *j = d->j;
    const uint8_t *key;
    size_t klen;
    msg_obj_bin(msg_obj_at(a ? a : b, 0), &key, &klen);
    if (!fetched && (!a || !b))
        j->st_ndiff++; /* the stream's density (co_stream.c) */
    if (!a || !b)
        return found(d, a ? CO_MISSING : CO_EXTRA, key, klen, NULL, 0, err);
    const msg_obj *ea, *eb, *da, *db;
    uint32_t nea, neb, nda, ndb;
    if (msg_obj_array(msg_obj_at(a, 1), &ea, &nea) || msg_obj_array(msg_obj_at(b, 1), &eb, &neb) ||
        msg_obj_array(msg_obj_at(a, 2), &da, &nda) || msg_obj_array(msg_obj_at(b, 2), &db, &ndb) ||
        nea != j->ncols || neb != j->ncols || nda != j->ncols || ndb != j->ncols)
        return sl_err_set(err, "malformed fetch reply from a worker");
    row_diffs rd;
    rd.nd = rd.nt = 0;
    rd.tolerated = 0;
    int rc = 0;
    for (size_t col = j->nkey; col < j->ncols && rc == 0; col++)
        rc = compare_col(j, col, msg_obj_at(ea, col), msg_obj_at(eb, col), msg_obj_at(da, col),
                         msg_obj_at(db, col), &rd, err);
    return row_done(d, key, klen, &rd, fetched, rc, err);
}

int co_merged_row(drill *d, const msg_obj *a, const msg_obj *b, sl_err *err)
{
    job *j = d->j;
    const uint8_t *key;
    size_t klen;
    msg_obj_bin(msg_obj_at(a ? a : b, 0), &key, &klen);
    if (!a || !b) {
        j->st_ndiff++;
        return found(d, a ? CO_MISSING : CO_EXTRA, key, klen, NULL, 0, err);
    }
    /* [key, [column indexes], [values], [texts]], both sides listing the
     * same columns (co_merge.c checked it) */
    const msg_obj *ca, *va, *vb, *ta, *tb;
    uint32_t n, nx;
    msg_obj_array(msg_obj_at(a, 1), &ca, &n);
    msg_obj_array(msg_obj_at(a, 2), &va, &nx);
    msg_obj_array(msg_obj_at(b, 2), &vb, &nx);
    msg_obj_array(msg_obj_at(a, 3), &ta, &nx);
    msg_obj_array(msg_obj_at(b, 3), &tb, &nx);
    row_diffs rd;
    rd.nd = rd.nt = 0;
    rd.tolerated = 0;
    int rc = 0;
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        int64_t col;
        msg_obj_int(msg_obj_at(ca, i), &col); /* checked: a column of the job's, not a key */
        rc = compare_col(j, (size_t)col, msg_obj_at(va, i), msg_obj_at(vb, i), msg_obj_at(ta, i),
                         msg_obj_at(tb, i), &rd, err);
    }
    return row_done(d, key, klen, &rd, 0, rc, err);
}

int co_fetched_row(drill *d, const msg_obj *a, const msg_obj *b, sl_err *err)
{
    return compare_row(d, a, b, 1, err);
}

int co_streamed_row(drill *d, const msg_obj *a, const msg_obj *b, sl_err *err)
{
    return compare_row(d, a, b, 0, err);
}

/* Starts the same request for both sides: a writer each, with the side's
 * spec packed. */
static int both_requests(job *j, int type, msg_writer *mw[2], uint64_t ids[2], sl_err *err)
{
    for (int s = 0; s < 2; s++) {
        if (!(mw[s] = co_request(j->c, type, &ids[s]))) {
            msg_writer_free(mw[0]);
            return sl_err_set(err, "out of memory");
        }
        co_pack_spec(j, mw[s], s);
    }
    return 0;
}

static int keyref_cmp(const void *a, const void *b)
{
    const keyref *x = a, *y = b;
    return mk_key_cmp(x->p, x->len, y->p, y->len);
}

int co_check_full_row(const job *j, const msg_obj *row, uint32_t i, const uint8_t **key,
                      size_t *klen, sl_err *why)
{
    const msg_obj *f, *enc, *txt;
    uint32_t nf, ne, nt;
    const uint8_t *p;
    size_t l;
    if (msg_obj_array(row, &f, &nf) || nf != 3 || msg_obj_bin(msg_obj_at(f, 0), key, klen) ||
        msg_obj_array(msg_obj_at(f, 1), &enc, &ne) || msg_obj_array(msg_obj_at(f, 2), &txt, &nt))
        return sl_err_set(why, "has row %u that is not [key, [encodings], [texts]]", i);
    if (ne != j->ncols || nt != j->ncols)
        return sl_err_set(why, "has row %u of %u encodings and %u texts for %zu columns", i, ne, nt,
                          j->ncols);
    for (size_t c = 0; c < j->ncols; c++) {
        const char *sp;
        int whole;
        enc_digest d;
        if (fetched_value(msg_obj_at(enc, c), &p, &l, &whole, &d) ||
            (!msg_obj_is_nil(msg_obj_at(txt, c)) && msg_obj_str(msg_obj_at(txt, c), &sp, &l)))
            return sl_err_set(why,
                              "has row %u whose column %zu is not an encoding (or digest) "
                              "and text",
                              i, c);
    }
    return 0;
}

/* A fetch reply's rows: [key, [encoding or digest per column], [text or
 * nil per column]], with keys rising strictly, each one of the nk keys asked for
 * (refs, sorted); a key may be absent (the row is gone). 0, or -1 with why
 * saying what is wrong. */
int co_check_fetch(const job *j, const msg_obj *rows, uint32_t n, const keyref *refs, size_t nk,
                   sl_err *why)
{
    size_t at = 0;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *key;
        size_t klen;
        if (co_check_full_row(j, msg_obj_at(rows, i), i, &key, &klen, why))
            return -1;
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
static int64_t rows_below(const msg_obj *rows, uint32_t n, const uint8_t *k, size_t kl,
                          int or_equal)
{
    uint32_t i = 0;
    for (; i < n; i++) {
        const msg_obj *f;
        uint32_t nf;
        const uint8_t *p;
        size_t l;
        if (msg_obj_array(msg_obj_at(rows, i), &f, &nf) || nf < 1 ||
            msg_obj_bin(msg_obj_at(f, 0), &p, &l))
            return -1;
        int c = mk_key_cmp(p, l, k, kl);
        if (c > 0 || (c == 0 && !or_equal))
            break;
    }
    return i;
}

int co_compare_changed(drill *d, const int workers[2], sl_err *err)
{
    job *j = d->j;
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
        const msg_obj *rows[2];
        uint32_t n[2];
        if (both_requests(j, MSG_FETCH, mw, ids, err)) {
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
            if (co_check_fetch(j, rows[s], n[s], refs + from, cnt, &why))
                rc = co_reject_worker(j->c, workers[s], err, "its fetch reply %s", why.msg);
        }
        size_t answered = cnt;
        for (int s = 0; rc == 0 && s < 2; s++) {
            const msg_obj *d = msg_get(rep[s], "done");
            int64_t v;
            if (d && (msg_obj_int(d, &v) || v < 1 || (uint64_t)v > cnt))
                rc = co_reject_worker(j->c, workers[s], err,
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
            rc = co_merge_rows(d, rows[0], n[0], rows[1], n[1], 3, co_fetched_row, err);
        msg_free(rep[0]);
        msg_free(rep[1]);
        from += answered;
    }
    free(refs);
    return rc;
}

int co_rehash_changed(drill *d, const int workers[2], sl_err *err)
{
    job *j = d->j;
    int rc = 0;
    for (size_t off = 0, i = 0; off < j->changed.len && i < j->nchanged && rc == 0; i++) {
        uint32_t len;
        memcpy(&len, j->changed.p + off, 4);
        const uint8_t *key = j->changed.p + off + 4;
        off += 4 + len;
        mk_bound at = {MK_INCL, key, len};
        msg_writer *mw[2] = {NULL, NULL};
        uint64_t ids[2];
        msg *rep[2] = {NULL, NULL};
        const msg_obj *rows[2];
        uint32_t n[2];
        if (both_requests(j, MSG_ROWS, mw, ids, err))
            return -1;
        for (int s = 0; s < 2; s++) {
            co_pack_bound(mw[s], "lo", MK_INCL, key, len);
            co_pack_bound(mw[s], "hi", MK_INCL, key, len);
        }
        rc = ask_both(j, workers, mw, ids, rep, rows, n, err);
        for (int s = 0; s < 2 && rc == 0; s++) {
            sl_err why;
            if (co_check_rows(j, rows[s], n[s], &at, &at, &why))
                rc = co_reject_worker(j->c, workers[s], err, "its rows reply %s", why.msg);
        }
        if (rc == 0)
            rc = co_merge_rows(d, rows[0], n[0], rows[1], n[1], 2, co_span_row, err);
        msg_free(rep[0]);
        msg_free(rep[1]);
    }
    return rc;
}

/* One key of a span: [key, row hash]. Equal keys with different hashes are
 * gathered for one fetch. */
int co_span_row(drill *d, const msg_obj *a, const msg_obj *b, sl_err *err)
{
    job *j = d->j;
    const uint8_t *key, *ha, *hb;
    size_t klen, hla, hlb;
    msg_obj_bin(msg_obj_at(a ? a : b, 0), &key, &klen);
    if (!a || !b) {
        j->dense_diff++;
        return found(d, a ? CO_MISSING : CO_EXTRA, key, klen, NULL, 0, err);
    }
    if (msg_obj_bin(msg_obj_at(a, 1), &ha, &hla) || msg_obj_bin(msg_obj_at(b, 1), &hb, &hlb))
        return sl_err_set(err, "malformed rows reply from a worker");
    if (hla == hlb && memcmp(ha, hb, hla) == 0)
        return 0;
    j->dense_diff += 2;  /* a row each side, as dense_listed counts them */
    if (j->o->keys_only) /* by row hash: its columns are never fetched */
        return found(d, CO_CHANGED, key, klen, NULL, 0, err);
    uint32_t len = (uint32_t)klen;
    if (sl_buf_append(&j->changed, &len, 4) || sl_buf_append(&j->changed, key, klen))
        return sl_err_set(err, "out of memory");
    j->nchanged++;
    return 0;
}

/* Who reads a span's rows for side s: they come from the database, not
 * from the tree, so any worker reaching it will do. The tree's holder may
 * be busy streaming its next range; an idle worker answers sooner. */
void co_pick_readers(drill *d, int readers[2])
{
    job *j = d->j;
    for (int s = 0; s < 2; s++) /* a holder gone since: -1, lost at send if no one else */
        readers[s] = co_worker_is(j->c, d->r->worker[s], d->r->gen[s]) ? d->r->worker[s] : -1;
    for (int s = 0; s < 2; s++) {
        int h = readers[s];
        if (h >= 0 && !j->c->w[h].busy_req)
            continue;
        int same = -1; /* an idle worker already reading the other side */
        for (size_t i = 0; i < j->c->nw; i++) {
            co_worker *w = &j->c->w[i];
            if (!w->alive || w->busy_req || sl_now() < w->shunned_until ||
                !co_worker_has_db(w, j->db[s]))
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

/* Who lists a span's rows for side s: the tree's holder when it is still
 * the worker that built it, asked with the tree's id and root hash, so it
 * answers from the rows it kept (no database read; busy, it answers between
 * row batches); a worker that no longer keeps them reads the database.
 * Without a holder, co_pick_readers' choice. tree[s]: asked by tree. */
static void pick_span_readers(drill *d, int readers[2], int tree[2])
{
    co_pick_readers(d, readers);
    for (int s = 0; s < 2; s++) {
        tree[s] = co_worker_is(d->j->c, d->r->worker[s], d->r->gen[s]) && d->r->root[s].n == 1;
        if (tree[s])
            readers[s] = d->r->worker[s];
    }
}

/* Fetches the gathered differing keys (j->changed) from the databases and
 * compares their columns. */
static int fetch_gathered(drill *d, sl_err *err)
{
    job *j = d->j;
    int readers[2], rc = 0;
    if (j->nchanged == 0)
        return 0;
    co_pick_readers(d, readers);
    rc = co_compare_changed(d, readers, err);
    sl_buf_reset(&j->changed);
    j->nchanged = 0;
    return rc;
}

/* Differing keys gathered from spans before one fetch: a fetch is a query
 * a side, so a range whose differing rows are spread (1% of rows makes a
 * quarter of the leaves differ) pays one per couple of hundred keys, not
 * one per span. */
#define CO_FETCH_GATHER 512

int co_check_row_key(const job *j, const mk_bound *lo, const mk_bound *hi, const uint8_t **prev,
                     size_t *plen, const uint8_t *key, size_t klen, uint32_t i, sl_err *why)
{
    if (!co_is_job_key(j, key, klen, why))
        return sl_err_wrap(why, "row %u", i);
    if (!mk_bound_contains(lo, hi, key, klen))
        return sl_err_set(why, "has row %u whose key lies outside the span asked for", i);
    if (*prev && mk_key_cmp(*prev, *plen, key, klen) >= 0)
        return sl_err_set(why, "has row %u whose key is not above the one before", i);
    *prev = key;
    *plen = klen;
    return 0;
}

/* A rows reply: [key, row hash] for keys of the job rising strictly inside
 * the span [lo, hi] asked for. 0, or -1 with why saying what is wrong. */
int co_check_rows(const job *j, const msg_obj *rows, uint32_t n, const mk_bound *lo,
                  const mk_bound *hi, sl_err *why)
{
    const uint8_t *prev = NULL;
    size_t plen = 0;
    for (uint32_t i = 0; i < n; i++) {
        const msg_obj *f;
        uint32_t nf;
        const uint8_t *key, *h;
        size_t klen, hl;
        if (msg_obj_array(msg_obj_at(rows, i), &f, &nf) || nf != 2 ||
            msg_obj_bin(msg_obj_at(f, 0), &key, &klen) || msg_obj_bin(msg_obj_at(f, 1), &h, &hl) ||
            hl != 16)
            return sl_err_set(why, "has row %u that is not [key, hash]", i);
        if (co_check_row_key(j, lo, hi, &prev, &plen, key, klen, i, why))
            return -1;
    }
    return 0;
}

/* The last key of a reply that stopped early ("more"), into *k. */
static int last_key(const msg_obj *rows, uint32_t n, const uint8_t **k, size_t *kl)
{
    const msg_obj *f;
    uint32_t nf;
    return n < 1 || msg_obj_array(msg_obj_at(rows, n - 1), &f, &nf) || nf < 1 ||
                   msg_obj_bin(msg_obj_at(f, 0), k, kl)
               ? -1
               : 0;
}

/* A differing span: both sides' (key, row hash) lists, merged. A reply
 * that grew past MSG_REPLY_SOFT_MAX stops early ("more"): rows up to the
 * smaller of the stopping keys are compared, and the span is read again
 * from there. */
/* Whether every row of a rows reply lies in one of the spans asked for
 * (ns [lo, hi] pairs, rising): 0, or -1. */
static int rows_in_spans(const msg_obj *rows, uint32_t n, const mk_bound *spans, size_t ns)
{
    static const mk_bound unb = {MK_UNBOUNDED, NULL, 0};
    size_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        const msg_obj *f;
        uint32_t nf;
        const uint8_t *key;
        size_t kl;
        if (msg_obj_array(msg_obj_at(rows, i), &f, &nf) || nf < 1 ||
            msg_obj_bin(msg_obj_at(f, 0), &key, &kl))
            return -1;
        while (k < ns && !mk_bound_contains(&unb, &spans[2 * k + 1], key, kl))
            k++;
        if (k == ns || !mk_bound_contains(&spans[2 * k], &spans[2 * k + 1], key, kl))
            return -1;
    }
    return 0;
}

/* The rows of [lo, hi], or with spans (ns > 0: [lo, hi] pairs, rising,
 * inside it) of those spans only. */
static int span_rows(drill *d, const mk_bound *lo, const mk_bound *hi, mk_bound *spans, size_t ns,
                     sl_err *err)
{
    static const mk_bound unb = {MK_UNBOUNDED, NULL, 0};
    job *j = d->j;
    msg_writer *mw[2] = {NULL, NULL};
    uint64_t ids[2];
    msg *rep[2] = {NULL, NULL};
    const msg_obj *rows[2];
    uint32_t n[2];
    int rc = 0, more = 1;
    mk_bound from = *lo;
    size_t k0 = 0; /* the first span not read yet (its lo moved up to from) */
    sl_buf stop = {0};
    while (rc == 0 && more) {
        if (both_requests(j, MSG_ROWS, mw, ids, err)) {
            rc = -1;
            break;
        }
        int readers[2], tree[2];
        pick_span_readers(d, readers, tree);
        for (int s = 0; s < 2; s++) {
            msg_put_int(mw[s], "sizes", 1);
            co_pack_bound(mw[s], "lo", from.kind, from.key, from.len);
            co_pack_bound(mw[s], "hi", hi->kind, hi->key, hi->len);
            if (ns) {
                msg_key(mw[s], "spans");
                msg_pack_array(mw[s], (uint32_t)(ns - k0));
                for (size_t k = k0; k < ns; k++) {
                    msg_pack_array(mw[s], 2);
                    for (int e = 0; e < 2; e++) {
                        const mk_bound *b = &spans[2 * k + e];
                        msg_pack_array(mw[s], 2);
                        msg_pack_int(mw[s], b->kind);
                        if (b->kind == MK_UNBOUNDED)
                            msg_pack_nil(mw[s]);
                        else
                            msg_pack_bin(mw[s], b->key, b->len);
                    }
                }
            }
            if (tree[s]) {
                msg_put_uint(mw[s], "tree", tree_id(j, (size_t)(d->r - j->r), s));
                msg_key(mw[s], "root");
                msg_pack_bin(mw[s], d->r->root[s].v[0].hash, 16);
            }
        }
        rc = ask_both(j, readers, mw, ids, rep, rows, n, err);
        for (int s = 0; s < 2 && rc == 0; s++) {
            sl_err why;
            if (co_check_rows(j, rows[s], n[s], &from, hi, &why))
                rc = co_reject_worker(j->c, readers[s], err, "its rows reply %s", why.msg);
            else if (ns && rows_in_spans(rows[s], n[s], spans + 2 * k0, ns - k0))
                rc = co_reject_worker(j->c, readers[s], err,
                                      "its rows reply has a row outside the spans asked for");
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
            /* spans read to their end are done; the next starts after from */
            while (ns && k0 < ns &&
                   !mk_bound_contains(&unb, &spans[2 * k0 + 1], from.key, from.len))
                k0++;
            if (ns && k0 < ns && mk_bound_contains(&spans[2 * k0], &unb, from.key, from.len))
                spans[2 * k0] = from;
            if (ns && k0 < ns)
                from = spans[2 * k0];
            else if (ns)
                more = 0; /* nothing of the spans lies past it */
        }
        j->dense_span += (uint64_t)n[0] + n[1];
        for (int s = 0; rc == 0 && s < 2; s++) {
            if (msg_get(rep[s], "mem"))
                j->sum->rows_from_memory += n[s];
            else
                j->dense_db = 1;
        }
        if (rc == 0 &&
            (rc = co_merge_rows(d, rows[0], n[0], rows[1], n[1], 2, co_span_row, err)) == 0)
            rc = j->nchanged >= CO_FETCH_GATHER ? fetch_gathered(d, err) : 0;
        msg_free(rep[0]);
        msg_free(rep[1]);
        rep[0] = rep[1] = NULL;
    }
    sl_buf_free(&stop);
    return rc;
}

/* A bound into the runs buffer: [kind u8][len u32][key]. */
static int run_put(sl_buf *b, int kind, const sl_buf *key)
{
    uint8_t k = (uint8_t)kind;
    uint32_t len = (uint32_t)key->len;
    return sl_buf_append(b, &k, 1) || sl_buf_append(b, &len, 4) || sl_buf_append(b, key->p, len);
}

static size_t run_get(const sl_buf *b, size_t off, mk_bound *out)
{
    uint32_t len;
    memcpy(&len, b->p + off + 1, 4);
    *out = (mk_bound){b->p[off], b->p + off + 5, len};
    return off + 5 + len;
}

/* Whether both sides' span rows come from their trees' holders, which
 * take rows requests listing spans: then runs of differing spans that do
 * not touch are gathered into one request (listing a span's rows from
 * memory costs little; a round trip, above all to a worker busy building
 * its next tree, costs much more). */
static int can_gather(drill *d)
{
    int readers[2], tree[2];
    pick_span_readers(d, readers, tree);
    for (int s = 0; s < 2; s++)
        if (!tree[s] || !d->j->c->w[readers[s]].can_spans)
            return 0;
    return 1;
}

/* Reads the gathered spans' rows, if any: the runs gathered before and
 * the current one (j->pend_*), in one request when the readers take a list
 * of spans, else a request a run. */
static int span_flush(drill *d, sl_err *err)
{
    job *j = d->j;
    if (j->pend_n == 0)
        return 0;
    j->pend_n = 0;
    d->nflush++;
    if (run_put(&d->runs, j->pend_lo_kind, &j->pend_lo) ||
        run_put(&d->runs, j->pend_hi_kind, &j->pend_hi))
        return sl_err_set(err, "out of memory");
    size_t ns = ++d->nruns;
    mk_bound *spans = calloc(2 * ns, sizeof *spans);
    if (!spans)
        return sl_err_set(err, "out of memory");
    for (size_t k = 0, off = 0; k < 2 * ns; k++)
        off = run_get(&d->runs, off, &spans[k]);
    int rc = 0;
    if (ns == 1)
        rc = span_rows(d, &spans[0], &spans[1], NULL, 0, err);
    else if (can_gather(d))
        rc = span_rows(d, &spans[0], &spans[2 * ns - 1], spans, ns, err);
    else
        for (size_t k = 0; k < ns && rc == 0; k++)
            rc = span_rows(d, &spans[2 * k], &spans[2 * k + 1], NULL, 0, err);
    free(spans);
    sl_buf_reset(&d->runs);
    d->nruns = d->run_spans = 0;
    return rc;
}

#define CO_SPANS_GATHERED 64 /* a run: about 2,000 rows a request at most */
/* Spans gathered in runs: about 2,000 rows a side in the compare's first
 * request, so the dense judgement comes early; then about 8,000. */
#define CO_RUNS_SPANS_FIRST 64
#define CO_RUNS_SPANS 256

/* mk_diff's spans come in key order: one that starts where the gathered
 * ones end joins them; any other first sends them. */
static int span_cb(void *ctx, const mk_bound *lo, const mk_bound *hi, sl_err *err)
{
    drill *d = ctx;
    job *j = d->j;
    j->dense_nspan++;
    int joins = j->pend_n > 0 && j->pend_hi_kind != MK_UNBOUNDED && lo->kind != MK_UNBOUNDED &&
                j->pend_hi_kind != lo->kind && j->pend_hi.len == lo->len &&
                memcmp(j->pend_hi.p, lo->key, lo->len) == 0;
    uint32_t most = d->nflush ? CO_RUNS_SPANS : CO_RUNS_SPANS_FIRST;
    /* a run that does not touch the next span joins the gathered ones */
    if (!joins && j->pend_n > 0 && d->run_spans + (uint32_t)j->pend_n < most && can_gather(d)) {
        if (run_put(&d->runs, j->pend_lo_kind, &j->pend_lo) ||
            run_put(&d->runs, j->pend_hi_kind, &j->pend_hi))
            return sl_err_set(err, "out of memory");
        d->nruns++;
        d->run_spans += (uint32_t)j->pend_n;
        j->pend_n = 0;
        sl_buf_reset(&j->pend_lo);
        if (sl_buf_append(&j->pend_lo, lo->key, lo->len))
            return sl_err_set(err, "out of memory");
        j->pend_lo_kind = lo->kind;
    } else if (!joins) {
        int rc = span_flush(d, err);
        if (rc)
            return rc;
        if (co_is_dense(d)) { /* everything below lo is compared: stream from it */
            sl_buf_reset(&j->dense_from);
            if (sl_buf_append(&j->dense_from, lo->key, lo->len))
                return sl_err_set(err, "out of memory");
            j->dense_from_kind = lo->kind;
            return CO_DENSE;
        }
        sl_buf_reset(&j->pend_lo);
        if (sl_buf_append(&j->pend_lo, lo->key, lo->len))
            return sl_err_set(err, "out of memory");
        j->pend_lo_kind = lo->kind;
    }
    sl_buf_reset(&j->pend_hi);
    if (sl_buf_append(&j->pend_hi, hi->key, hi->len))
        return sl_err_set(err, "out of memory");
    j->pend_hi_kind = hi->kind;
    ++j->pend_n;
    return (d->nruns == 0 && j->pend_n >= CO_SPANS_GATHERED) ||
                   d->run_spans + (uint32_t)j->pend_n >= most
               ? span_flush(d, err)
               : 0;
}

/* Tells the worker holding (or building) a side's tree to drop it. */
int co_release_side(job *j, size_t ri, int s)
{
    int wi = j->r[ri].worker[s];
    if (!co_worker_is(j->c, wi, j->r[ri].gen[s]))
        return 0;
    uint64_t id;
    msg_writer *mw = co_request(j->c, MSG_RELEASE, &id);
    if (!mw)
        return -1;
    msg_put_uint(mw, "tree", tree_id(j, ri, s));
    return co_call(j->c, wi, mw, NULL) == -1 ? -1 : 0;
}

/* Releases both sides' trees of range ri; non-zero when a release could not be sent. */
static int release(job *j, size_t ri)
{
    int rc = 0;
    for (int s = 0; s < 2; s++)
        rc |= co_release_side(j, ri, s);
    return rc;
}

/* A range is finished when its trees were compared and none of its keys
 * waits for a re-check: only then is it recorded, so a restarted
 * coordinator never skips a divergence that was still being re-checked. */
int co_finish_range(job *j, size_t ri, sl_err *err)
{
    range *r = &j->r[ri];
    sl_buf_free(&r->emitted);
    j->sum->source_rows += r->rows[0];
    j->sum->target_rows += r->rows[1];
    j->rows_done += r->rows[0] + r->rows[1];
    j->ranges_done++;
    /* a piece split off by --chunk-time: its planned range is recorded once
     * every piece of it is */
    range *root = &j->r[r->planned];
    root->root_rows[0] += r->rows[0];
    root->root_rows[1] += r->rows[1];
    if (root->unfinished > 0 && --root->unfinished == 0 && j->cb->range_done &&
        j->cb->range_done(j->cb->ctx, r->planned, root->root_rows[0], root->root_rows[1]))
        return sl_err_set(err, "could not record a finished range");
    if (j->cb->progress) {
        co_progress p = {.ranges_done = j->ranges_done,
                         .ranges = j->nr,
                         .rows_done = j->rows_done,
                         .rows_expected = j->rows_expected,
                         .paused = j->lag_paused ? j->pause_msg : NULL};
        j->cb->progress(j->cb->ctx, &p);
    }
    return 0;
}

int co_compare_range(job *j, size_t ri, sl_err *err)
{
    range *r = &j->r[ri];
    drill d = {.j = j, .r = r};
    mk_bound lo = range_lo(r), hi = range_hi(r);
    int rc, dense = 0, handed = 0;
    uint64_t found0 = j->found_n;
    for (;;) {
        j->pend_n = 0;
        grand_drop(&d, 0);
        grand_drop(&d, 1);
        sl_buf_reset(&d.runs);
        d.nruns = d.run_spans = d.nflush = 0;
        j->dense_listed = j->dense_span = j->dense_nspan = j->dense_diff = 0;
        j->dense_db = 0;
        sl_buf_reset(&j->changed); /* an attempt that was cut short finds them again */
        j->nchanged = 0;
        rc = mk_diff(&r->root[0], &r->root[1], &lo, &hi, children_cb, span_cb, &d, err);
        if (rc == MK_BAD_CHILDREN || rc == MK_BAD_CHILDREN + 1) {
            sl_err why = *err;
            rc = co_reject_worker(j->c, r->worker[rc - MK_BAD_CHILDREN], err, "its nodes reply: %s",
                                  why.msg);
        }
        if (rc == CO_DENSE) {
            /* judged now, not after the stream: the loop stops sending
             * tree tasks for the pending ranges at once */
            if (!dense)
                co_judge_range(j, 1);
            dense = 1;
            mk_bound from = {j->dense_from_kind, j->dense_from.p, j->dense_from.len};
            /* the rest to merge tasks when a worker reads both sides (far
             * cheaper than shipping both sides' rows here), unless a cut
             * compare cut short reported some of it already: its keys
             * are in r->emitted, which only a drill checks) */
            handed = co_merge_possible(j) && !r->attempts;
            if ((rc = fetch_gathered(&d, err)) == 0)
                rc =
                    handed ? co_merge_rest(j, ri, &from, err) : co_stream_span(&d, &from, &hi, err);
            if (rc == 0 && !handed)
                j->sum->streamed_ranges++;
        } else if (rc == 0 && (rc = span_flush(&d, err)) == 0) {
            rc = fetch_gathered(&d, err);
        }
        if (rc != CO_LOST)
            break;
        r->attempts++;
        /* a lost tree holder: its side is rebuilt elsewhere, then compared
         * again; a lost reader only: compare again now */
        if (!co_worker_is(j->c, r->worker[0], r->gen[0]) ||
            !co_worker_is(j->c, r->worker[1], r->gen[1])) {
            sl_buf_free(&d.runs);
            grand_drop(&d, 0);
            grand_drop(&d, 1);
            return 0;
        }
        if (r->attempts > 100) {
            sl_buf_free(&d.runs);
            grand_drop(&d, 0);
            grand_drop(&d, 1);
            return sl_err_setc(err, SL_LOST_WORKER, "range %zu: gave up after 100 lost workers",
                               ri);
        }
    }
    sl_buf_free(&d.runs);
    grand_drop(&d, 0);
    grand_drop(&d, 1);
    release(j, ri);
    mk_nodelist_free(&r->root[0]);
    mk_nodelist_free(&r->root[1]);
    if (rc)
        return rc;
    if (handed) { /* its trees released: merge tasks take it, co_merge_take finishes it */
        r->state[0] = r->state[1] = RS_PENDING;
        r->worker[0] = r->worker[1] = -1;
        return 0;
    }
    r->state[0] = r->state[1] = RS_COMPARED;
    r->compared = 1;
    /* Not dense enough to stop the drill, but once merge tasks can be
     * had, a range where CO_MERGE_SHARE or more of the rows differ counts
     * as dense for the job: one worker merging both sides of the pending
     * ranges costs less than trees and a drill there (at 10M rows with 1%
     * differing, 8.6 s against 9.5 s), and a few divergences (or none)
     * keep the trees, cheaper when (nearly) all is equal (7.5 s against
     * 8.2 s for identical tables). */
    if (!dense)
        co_judge_range(j, co_merge_possible(j) &&
                              (j->found_n - found0) * CO_MERGE_SHARE >= r->rows[0] + 1);
    return r->pending ? 0 : co_finish_range(j, ri, err);
}
