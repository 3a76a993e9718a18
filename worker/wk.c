#include "wk.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "../connectors/conn.h"
#include "../merkle/enc.h"
#include "../merkle/mk_tree.h"
#include "../merkle/tol.h"
#include "../proto/curve.h"
#include "../proto/msg.h"
#include "wk_follow.h"
#include "wk_side.h"

#define WK_FETCH_KEYS 64 /* keys a fetch reads between checks of the reply's size */
/* A tree keeps its rows' keys and hashes (a span's rows are then listed
 * from memory, not read again) up to this many bytes, and all trees held
 * together up to WK_ROWS_BUDGET: a range holds at most 200,000 rows, about
 * 6 MiB for short keys, so memory stays flat whatever the table's size. */
#define WK_TREE_ROWS_MAX (16u << 20)
#define WK_ROWS_BUDGET (32u << 20)
#define WK_MAX_SPANS 4096 /* spans one rows request may list */

typedef struct wk_dbconn {
    char *name, *dsn;
    int allow_where;
    conn *c;    /* opened on first use */
    conn *side; /* a second session, for span rows and fetches asked for
                 * while c streams a range (busy_tick) */
} wk_dbconn;

typedef struct wk_tree {
    uint64_t id;
    mk_tree *t;
} wk_tree;

/* A request that arrived while a range was streaming, kept for later. */
typedef struct deferred {
    struct deferred *next;
    size_t len;
    uint8_t data[];
} deferred;

struct wk {
    void *sock;
    deferred *deferred, **deferred_tail;
    int in_busy_tick;
    int heartbeat_ms;
    int read_timeout_ms;
    int relay_where_errors;
    void (*log)(void *ctx, const char *line);
    void *log_ctx;
    volatile sig_atomic_t *stop;
    double last_sent; /* monotonic seconds of the last message sent */
    wk_dbconn *dbs;
    size_t ndbs;
    wk_tree *trees;
    size_t ntrees, captrees;
    /* The tree being built (0: none), and whether a release asked to stop
     * building it: a cancelled job's ranges stop being read at once. */
    uint64_t building;
    int stop_building;
    /* Trees released before their task was taken up (it waited behind
     * another): never built. A ring: tree ids are never reused. */
    uint64_t released[64];
    size_t nreleased;
    /* change streams followed for the coordinator (follow, keys, unfollow),
     * each on a thread of its own */
    wk_follow **follows;
    size_t nfollows;
    sl_buf keys, keys_at; /* a keys reply's keys, and their commit times (int64 each) */
    sl_buf out;
    int inproc; /* the coordinator shares the process: replies go uncompressed */
};

/* A request's query spec, pointing into the message. */
typedef struct spec {
    conn_query q;
    char *table, *where;
    char *cols[CONN_MAX_COLS];
    int cls[CONN_MAX_COLS];
    int flags;
    int64_t max_rps; /* 0: read as fast as the database serves */
    enc_tol *tol;    /* per column (merkle/tol.h); NULL: every column exact */
} spec;

static void spec_free(spec *s)
{
    free(s->tol);
    free(s->table);
    free(s->where);
    for (size_t i = 0; i < s->q.ncols; i++)
        free(s->cols[i]);
}

/* A spec's tolerances, `tol`: [[column, num, eps_m, eps_e, text, ts_digits]]
 * for the columns that are not exact (proto/README.md); each checked against
 * its column's class, never on a key column. */
static int tol_read(const msg *m, spec *s, size_t nkey, sl_err *err)
{
    const msg_obj *o = msg_get(m, "tol"), *items;
    uint32_t n;
    if (!o || msg_obj_is_nil(o))
        return 0;
    if (msg_obj_array(o, &items, &n) || n > s->q.ncols)
        return sl_err_setc(err, SL_INVALID, "malformed request: tol is not a list of tolerances");
    if (n == 0)
        return 0;
    if (!(s->tol = malloc(s->q.ncols * sizeof *s->tol)))
        return sl_err_set(err, "out of memory");
    for (size_t i = 0; i < s->q.ncols; i++)
        s->tol[i] = enc_tol_exact();
    for (uint32_t i = 0; i < n; i++) {
        const msg_obj *f;
        uint32_t nf;
        int64_t v[6];
        int ok = msg_obj_array(msg_obj_at(items, i), &f, &nf) == 0 && nf == 6;
        for (uint32_t k = 0; ok && k < 6; k++)
            ok = msg_obj_int(msg_obj_at(f, k), &v[k]) == 0;
        if (!ok || v[0] < (int64_t)nkey || v[0] >= (int64_t)s->q.ncols || v[1] < 0 || v[1] > 255 ||
            v[2] < 0 || v[3] < INT32_MIN || v[3] > INT32_MAX || v[4] < 0 || v[4] > 255 ||
            v[5] < 0 || v[5] > 255)
            return sl_err_setc(err, SL_INVALID,
                               "malformed request: tolerance %u is not [column, num, eps_m, "
                               "eps_e, text, ts_digits] of a compared column",
                               i);
        enc_tol t = {.num = (uint8_t)v[1],
                     .eps_m = (uint64_t)v[2],
                     .eps_e = (int32_t)v[3],
                     .text = (uint8_t)v[4],
                     .ts_digits = (uint8_t)v[5]};
        if (enc_tol_check(&t, s->cls[v[0]], err))
            return sl_err_wrap(err, "malformed request: column \"%s\"", s->cols[v[0]]);
        s->tol[v[0]] = t;
    }
    return 0;
}

static int spec_read(const msg *m, spec *s, sl_err *err)
{
    const char *p;
    size_t n;
    const msg_obj *cols, *cls;
    uint32_t nc, ncl;
    int64_t nkey, flags = 0;
    memset(s, 0, sizeof *s);
    if (msg_get_str(m, "table", &p, &n, err) || !(s->table = strndup(p, n)))
        return -1;
    if (msg_get_array(m, "cols", &cols, &nc, err) || msg_get_array(m, "cls", &cls, &ncl, err) ||
        msg_get_int(m, "nkey", &nkey, err))
        return -1;
    if (nc == 0 || nc > CONN_MAX_COLS || ncl != nc || nkey < 1 || nkey > (int64_t)nc ||
        nkey > ENC_MAX_KEY_COLS)
        return sl_err_setc(err, SL_INVALID,
                           "malformed request: %u columns, %u classes, %lld key columns", nc, ncl,
                           (long long)nkey);
    const msg_obj *w = msg_get(m, "where");
    if (w && !msg_obj_is_nil(w)) {
        if (msg_obj_str(w, &p, &n) || !(s->where = strndup(p, n)))
            return sl_err_setc(err, SL_INVALID, "malformed request: where is not a string");
    }
    const msg_obj *f = msg_get(m, "flags");
    if (f && msg_obj_int(f, &flags))
        return sl_err_setc(err, SL_INVALID, "malformed request: flags is not an integer");
    f = msg_get(m, "max_rps");
    if (f && (msg_obj_int(f, &s->max_rps) || s->max_rps < 0))
        return sl_err_setc(err, SL_INVALID, "malformed request: max_rps is not a rate");
    for (uint32_t i = 0; i < nc; i++) {
        int64_t c;
        if (msg_obj_str(msg_obj_at(cols, i), &p, &n) || msg_obj_int(msg_obj_at(cls, i), &c) ||
            c <= 0 || c >= ENC_CLASS_END)
            return sl_err_setc(err, SL_INVALID,
                               "malformed request: column %u is not a (name, class)", i);
        if (!(s->cols[i] = strndup(p, n)))
            return sl_err_set(err, "out of memory");
        s->cls[i] = (int)c;
        s->q.ncols = i + 1;
    }
    if (tol_read(m, s, (size_t)nkey, err))
        return -1;
    s->q.table = s->table;
    s->q.cols = (const char *const *)s->cols;
    s->q.cls = s->cls;
    s->q.nkey = (size_t)nkey;
    s->q.where = s->where;
    s->flags = (int)flags & ENC_STRICT;
    return 0;
}

/* [kind, key] into b (key pointing into the message): 0, or -1. */
static int bound_obj(const msg_obj *o, mk_bound *b)
{
    const msg_obj *items;
    uint32_t n;
    int64_t kind;
    if (msg_obj_array(o, &items, &n) || n != 2 || msg_obj_int(msg_obj_at(items, 0), &kind) ||
        kind < MK_UNBOUNDED || kind > MK_EXCL)
        return -1;
    b->kind = (int)kind;
    b->key = NULL;
    b->len = 0;
    return kind != MK_UNBOUNDED && msg_obj_bin(msg_obj_at(items, 1), &b->key, &b->len) ? -1 : 0;
}

static int bound_read(const msg *m, const char *key, mk_bound *b, sl_err *err)
{
    const msg_obj *items;
    uint32_t n;
    int64_t kind;
    if (msg_get_array(m, key, &items, &n, err))
        return -1;
    if (n != 2 || msg_obj_int(msg_obj_at(items, 0), &kind) || kind < MK_UNBOUNDED || kind > MK_EXCL)
        return sl_err_setc(err, SL_INVALID, "malformed request: bound \"%s\" is not [kind, key]",
                           key);
    b->kind = (int)kind;
    b->key = NULL;
    b->len = 0;
    if (kind != MK_UNBOUNDED && msg_obj_bin(msg_obj_at(items, 1), &b->key, &b->len))
        return sl_err_setc(err, SL_INVALID, "malformed request: bound \"%s\" has no key", key);
    return 0;
}

static void tick(wk *w);

static void tick_cb(void *ctx)
{
    tick(ctx);
}

/* The session to the database named name (len bytes), opened on first
 * use: the second one while a range streams (busy_tick). */
static conn *db_get_name(wk *w, const char *name, size_t len, sl_err *err)
{
    for (size_t i = 0; i < w->ndbs; i++) {
        wk_dbconn *d = &w->dbs[i];
        if (strlen(d->name) != len || memcmp(d->name, name, len) != 0)
            continue;
        conn **c = w->in_busy_tick ? &d->side : &d->c;
        if (!*c && !(*c = conn_open(d->dsn, w->read_timeout_ms, err)))
            return sl_err_wrap(err, "%s", d->name), NULL;
        conn_set_tick(*c, tick_cb, w); /* heartbeats while one huge row arrives */
        return *c;
    }
    return sl_err_setc(err, SL_NOT_FOUND, "this worker has no database named \"%.*s\"", (int)len,
                       name),
           NULL;
}

static conn *db_get(wk *w, const msg *m, sl_err *err)
{
    const char *p;
    size_t n;
    if (msg_get_str(m, "db", &p, &n, err))
        return NULL;
    return db_get_name(w, p, n, err);
}

/* Forgets a connection after an error, so the next task reconnects
 * instead of reusing a broken session. */
static void db_drop(wk *w, conn *c)
{
    for (size_t i = 0; i < w->ndbs; i++) {
        if (w->dbs[i].c == c)
            w->dbs[i].c = NULL;
        else if (w->dbs[i].side == c)
            w->dbs[i].side = NULL;
        else
            continue;
        conn_free(c);
        return;
    }
}

/* libpq keeps its input buffer at the size of the largest row it ever
 * read: a session that read a row of hundreds of megabytes would hold that
 * much while idle. Such a session is closed after its task (and reopened
 * on the next), so a worker's memory goes back down after a huge row. */
#define WK_BIG_ROW (16u << 20)

static void db_close_big_name(wk *w, const char *name, size_t len, int big)
{
    for (size_t i = 0; big && i < w->ndbs; i++) {
        wk_dbconn *d = &w->dbs[i];
        if (strlen(d->name) != len || memcmp(d->name, name, len) != 0)
            continue;
        conn **c = w->in_busy_tick ? &d->side : &d->c;
        conn_free(*c);
        *c = NULL;
    }
}

static void db_close_if_big(wk *w, const msg *m, int big)
{
    const char *p;
    size_t n;
    if (big && msg_get_str(m, "db", &p, &n, NULL) == 0)
        db_close_big_name(w, p, n, big);
}

/* ---- row encoding --------------------------------------------------- */

typedef struct rowenc {
    wk *w;
    uint64_t n;
    double t0; /* when the stream started, for the rate limit */
    const spec *s;
    sl_buf key, row;
    sl_buf prev;             /* the previous row's key (swapped with key, not copied) */
    const mk_bound *lo, *hi; /* a range read: every key must lie inside */
    uint8_t hash[16];
    int big; /* a row of WK_BIG_ROW bytes or more was read */
} rowenc;

static void tick(wk *w);
static void busy_tick(wk *w);

/* Holds a stream to its rate: sleeps until the rows read so far are due.
 * Short sleeps (a few ms per 256 rows) keep heartbeats flowing. */
static void throttle(rowenc *r)
{
    double now = sl_now();
    if (r->t0 == 0)
        r->t0 = now - (double)r->n / (double)r->s->max_rps;
    double due = r->t0 + (double)r->n / (double)r->s->max_rps;
    if (due > now) {
        double d = due - now;
        struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};
        nanosleep(&ts, NULL);
    }
}

/* Every stream (a range, a span, a fetch) must hand rows out strictly
 * increasing in canonical key order, and a range only keys inside its
 * bounds: the trees, the bounds of neighbouring ranges and the merge of both
 * sides' rows all assume it, and a database whose order differs (a
 * collation, a key read as another type) would otherwise make rows seem
 * missing on one side and extra on the other. */
static int check_key_order(const rowenc *r, sl_err *err)
{
    const char *why = NULL;
    if (r->n > 1 && mk_key_cmp(r->prev.p, r->prev.len, r->key.p, r->key.len) >= 0)
        why = "out of key order or with a duplicate key";
    if (!why && r->lo && r->hi && !mk_bound_contains(r->lo, r->hi, r->key.p, r->key.len))
        why = "outside the requested key range";
    if (!why)
        return 0;
    return sl_err_setc(err, SL_INVALID,
                       "table \"%s\": the database returned rows %s; its key order must match "
                       "byte order (text keys need a binary collation, and both sides' key "
                       "columns one type)",
                       r->s->q.table, why);
}

/* Encodes the key, and with hash the row's hash (in place: a value of
 * hundreds of megabytes is never copied). */
static int encode_row(rowenc *r, const enc_val *v, int hash, sl_err *err)
{
    if ((++r->n & 255) == 0) {
        if (r->s->max_rps > 0)
            throttle(r);
        busy_tick(r->w); /* heartbeats, and the drill-down's quick requests */
    }
    size_t bytes = 0;
    for (size_t k = 0; k < r->s->q.ncols; k++)
        bytes += v[k].kind == ENC_V_TEXT || v[k].kind == ENC_V_BLOB ? v[k].len : 0;
    r->big |= bytes >= WK_BIG_ROW;
    sl_buf t = r->prev;
    r->prev = r->key;
    r->key = t;
    sl_buf_reset(&r->key);
    for (size_t k = 0; k < r->s->q.nkey; k++)
        if (enc_key(&r->key, r->s->cls[k], &v[k], err))
            return sl_err_wrap(err, "key column \"%s\"", r->s->cols[k]);
    if (check_key_order(r, err))
        return -1;
    if (hash &&
        enc_hash_values_tol(&r->row, r->s->cls, r->s->tol, v, r->s->q.ncols, r->s->flags, r->hash))
        return sl_err_set(err, "out of memory");
    return 0;
}

static void rowenc_free(rowenc *r)
{
    sl_buf_free(&r->prev);
    sl_buf_free(&r->key);
    sl_buf_free(&r->row);
}

/* ---- handlers -------------------------------------------------------- */

static void pack_node(msg_writer *mw, const mk_nodelist *l, size_t i)
{
    const mk_node *n = &l->v[i];
    msg_pack_array(mw, 5);
    msg_pack_uint(mw, n->level);
    msg_pack_uint(mw, n->index);
    msg_pack_bin(mw, n->hash, 16);
    msg_pack_uint(mw, n->rows);
    msg_pack_bin(mw, mk_nodelist_key(l, i), n->klen);
}

static int reply_nodes(wk *w, uint64_t id, uint64_t tree, uint64_t rows, const mk_nodelist *l,
                       sl_err *err)
{
    msg_writer *mw = msg_writer_new(MSG_REPLY, id);
    if (!mw)
        return sl_err_set(err, "out of memory");
    msg_put_uint(mw, "tree", tree);
    msg_put_uint(mw, "rows", rows);
    msg_key(mw, "nodes");
    msg_pack_array(mw, (uint32_t)l->n);
    for (size_t i = 0; i < l->n; i++)
        pack_node(mw, l, i);
    int r = msg_writer_finish(mw, &w->out, err);
    msg_writer_free(mw);
    return r;
}

/* A nodes reply with "grand": each child's own children too, so the
 * coordinator's drill into them needs no round trip each. */
static int reply_grand(wk *w, uint64_t id, const mk_tree *t, uint64_t tree, const mk_nodelist *l,
                       sl_err *err)
{
    mk_nodelist g = {0};
    msg_writer *mw = msg_writer_new(MSG_REPLY, id);
    if (!mw)
        return sl_err_set(err, "out of memory");
    msg_put_uint(mw, "tree", tree);
    msg_put_uint(mw, "rows", 0);
    msg_key(mw, "nodes");
    msg_pack_array(mw, (uint32_t)l->n);
    for (size_t i = 0; i < l->n; i++)
        pack_node(mw, l, i);
    msg_key(mw, "grand");
    msg_pack_array(mw, (uint32_t)l->n);
    int r = 0;
    for (size_t i = 0; i < l->n && r == 0; i++) {
        mk_nodelist_reset(&g);
        r = mk_tree_children(t, l->v[i].level, l->v[i].index, &g, err);
        msg_pack_array(mw, (uint32_t)g.n);
        for (size_t k = 0; k < g.n; k++)
            pack_node(mw, &g, k);
    }
    if (r == 0)
        r = msg_writer_finish(mw, &w->out, err);
    msg_writer_free(mw);
    mk_nodelist_free(&g);
    return r;
}

static int do_describe(wk *w, const msg *m, sl_err *err)
{
    const char *p;
    size_t n;
    conn *c = db_get(w, m, err);
    if (!c || msg_get_str(m, "table", &p, &n, err))
        return -1;
    char *table = strndup(p, n);
    conn_table *t = NULL;
    if (!table)
        return sl_err_set(err, "out of memory");
    int r = conn_describe(c, table, &t, err);
    free(table);
    if (r) { /* the session may be unusable (timed out, broken): the next task reconnects */
        db_drop(w, c);
        return -1;
    }
    msg_writer *mw = msg_writer_new(MSG_REPLY, msg_id(m));
    if (!mw) {
        conn_table_free(t);
        return sl_err_set(err, "out of memory");
    }
    msg_put_cstr(mw, "source", conn_name(c));
    msg_key(mw, "columns");
    msg_pack_array(mw, (uint32_t)t->ncols);
    for (size_t i = 0; i < t->ncols; i++) {
        msg_pack_array(mw, 3);
        msg_pack_cstr(mw, t->cols[i].name);
        msg_pack_cstr(mw, t->cols[i].type);
        msg_pack_int(mw, t->cols[i].cls);
    }
    msg_put_int(mw, "loose", t->is_loosely_typed);
    msg_key(mw, "key");
    msg_pack_array(mw, (uint32_t)t->nkey);
    for (size_t i = 0; i < t->nkey; i++)
        msg_pack_cstr(mw, t->key[i]);
    r = msg_writer_finish(mw, &w->out, err);
    msg_writer_free(mw);
    conn_table_free(t);
    return r;
}

typedef struct split_ctx {
    rowenc re;
    sl_buf keys; /* [u32 len][key] ... */
    sl_buf last;
    uint32_t n;
} split_ctx;

static int take_split(void *ctx, const enc_val *v, size_t n, sl_err *err)
{
    split_ctx *s = ctx;
    (void)n;
    sl_buf_reset(&s->re.key);
    for (size_t k = 0; k < s->re.s->q.nkey; k++)
        if (enc_key(&s->re.key, s->re.s->cls[k], &v[k], err))
            return sl_err_wrap(err, "key column \"%s\"", s->re.s->cols[k]);
    /* quantiles of a small table can repeat: keep bounds strictly rising;
     * one that falls means the database's key order is not canonical */
    if (s->n) {
        int c = mk_key_cmp(s->last.p, s->last.len, s->re.key.p, s->re.key.len);
        if (c == 0)
            return 0;
        if (c > 0)
            return sl_err_setc(err, SL_INVALID,
                               "table \"%s\": the database returned split keys out of key "
                               "order; its key order must match byte order (text keys need a "
                               "binary collation, and both sides' key columns one type)",
                               s->re.s->q.table);
    }
    uint32_t len = (uint32_t)s->re.key.len;
    sl_buf_reset(&s->last);
    if (sl_buf_append(&s->last, s->re.key.p, len) || sl_buf_append(&s->keys, &len, 4) ||
        sl_buf_append(&s->keys, s->re.key.p, len))
        return sl_err_set(err, "out of memory");
    s->n++;
    return 0;
}

static int do_split(wk *w, const msg *m, sl_err *err)
{
    spec s = {0};
    split_ctx sc = {0};
    int64_t nranges;
    int rc = -1;
    conn *c = NULL;
    if (spec_read(m, &s, err) || msg_get_int(m, "ranges", &nranges, err) ||
        !(c = db_get(w, m, err)))
        goto done;
    if (nranges < 1 || nranges > 1000000) {
        sl_err_setc(err, SL_INVALID, "malformed request: %lld ranges", (long long)nranges);
        goto done;
    }
    sc.re.s = &s;
    uint64_t rows = 0;
    /* with "lo" and "hi": one pending range split further (--chunk-time) */
    mk_bound lo, hi;
    int bounded = msg_get(m, "lo") != NULL;
    if (bounded && (bound_read(m, "lo", &lo, err) || bound_read(m, "hi", &hi, err)))
        goto done;
    if (bounded ? conn_split_range(c, &s.q, &lo, &hi, (size_t)nranges, &rows, take_split, &sc, err)
                : conn_split_keys(c, &s.q, (size_t)nranges, &rows, take_split, &sc, err)) {
        db_drop(w, c);
        goto done;
    }
    msg_writer *mw = msg_writer_new(MSG_REPLY, msg_id(m));
    if (!mw)
        goto done;
    msg_put_uint(mw, "rows", rows);
    msg_key(mw, "bounds");
    msg_pack_array(mw, sc.n);
    for (size_t off = 0; off < sc.keys.len;) {
        uint32_t len;
        memcpy(&len, sc.keys.p + off, 4);
        msg_pack_bin(mw, sc.keys.p + off + 4, len);
        off += 4 + len;
    }
    rc = msg_writer_finish(mw, &w->out, err);
    msg_writer_free(mw);
done:
    spec_free(&s);
    rowenc_free(&sc.re);
    sl_buf_free(&sc.keys);
    sl_buf_free(&sc.last);
    return rc;
}

typedef struct tree_ctx {
    rowenc re;
    mk_tree *t;
    size_t keep; /* bytes its kept rows may take (0: none) */
} tree_ctx;

static int take_tree_row(void *ctx, const enc_val *v, size_t n, sl_err *err)
{
    tree_ctx *tc = ctx;
    (void)n;
    if (encode_row(&tc->re, v, 1, err))
        return -1;
    if (tc->re.w->stop_building)
        return sl_err_set(err, "the tree was released while it was built: stopped");
    return mk_tree_add_row(tc->t, tc->re.key.p, tc->re.key.len, tc->re.hash, err);
}

static mk_tree *tree_find(wk *w, uint64_t id)
{
    for (size_t i = 0; i < w->ntrees; i++)
        if (w->trees[i].id == id)
            return w->trees[i].t;
    return NULL;
}

static void tree_release(wk *w, uint64_t id)
{
    for (size_t i = 0; i < w->ntrees; i++)
        if (w->trees[i].id == id) {
            mk_tree_free(w->trees[i].t);
            w->trees[i] = w->trees[--w->ntrees];
            return;
        }
    if (id && id == w->building)
        w->stop_building = 1;
    else
        w->released[w->nreleased++ % 64] = id;
}

static int was_released(const wk *w, uint64_t id)
{
    size_t n = w->nreleased < 64 ? w->nreleased : 64;
    for (size_t i = 0; i < n; i++)
        if (w->released[i] == id)
            return 1;
    return 0;
}

/* One read against a database: 0, or -1 with err set. */
typedef int (*read_fn)(conn *c, void *arg, sl_err *err);

/* Runs a read, reconnecting with backoff when the connection broke (a
 * restarted server, pg_terminate_backend): reset is called before each new
 * attempt so the consumer starts over. SQL errors are not retried. */
static int read_retry(wk *w, const msg *m, read_fn read, void *arg, void (*reset)(void *),
                      void *ctx, sl_err *err)
{
    const int attempts = 5;
    for (int a = 0; a < attempts; a++) {
        if (err) /* each attempt's failure is its own: no code from the last */
            err->code = SL_OK;
        if (a > 0) {
            reset(ctx);
            for (int k = 0; k < (1 << a); k++) { /* 0.2 s, 0.4 s, 0.8 s, 1.6 s */
                struct timespec ts = {0, 100 * 1000000L};
                nanosleep(&ts, NULL);
                tick(w);
            }
        }
        conn *c = db_get(w, m, err);
        if (!c)
            continue; /* the database may be coming back */
        if (read(c, arg, err) == 0)
            return 0;
        int broken = conn_is_broken(c);
        db_drop(w, c);
        if (!broken)
            return -1;
    }
    return sl_err_wrap(err, "gave up after %d attempts", attempts);
}

typedef struct range_read {
    const conn_query *q;
    const mk_bound *lo, *hi;
    conn_row_fn fn;
    void *ctx;
} range_read;

static int read_range(conn *c, void *arg, sl_err *err)
{
    range_read *r = arg;
    return conn_stream_range(c, r->q, r->lo, r->hi, r->fn, r->ctx, err);
}

/* Streams a range through read_retry. */
static int stream_retry(wk *w, const msg *m, const conn_query *q, const mk_bound *lo,
                        const mk_bound *hi, conn_row_fn fn, void (*reset)(void *), void *ctx,
                        sl_err *err)
{
    range_read r = {q, lo, hi, fn, ctx};
    return read_retry(w, m, read_range, &r, reset, ctx, err);
}

static void tree_reset(void *ctx)
{
    tree_ctx *tc = ctx;
    mk_tree_free(tc->t);
    if ((tc->t = mk_tree_new(0)))
        mk_tree_keep_rows(tc->t, tc->keep);
    tc->re.n = 0;
    tc->re.t0 = 0;
}

static int do_tree(wk *w, const msg *m, sl_err *err)
{
    spec s = {0};
    tree_ctx tc = {0};
    mk_bound lo, hi;
    int64_t id;
    mk_nodelist root = {0};
    int rc = -1;
    if (spec_read(m, &s, err) || bound_read(m, "lo", &lo, err) || bound_read(m, "hi", &hi, err) ||
        msg_get_int(m, "tree", &id, err))
        goto done;
    if (was_released(w, (uint64_t)id)) {
        sl_err_set(err, "tree %lld was released before it was built", (long long)id);
        goto done;
    }
    tree_release(w, (uint64_t)id); /* a re-issued task replaces the old tree */
    w->building = (uint64_t)id;
    w->stop_building = 0;
    tc.re.s = &s;
    tc.re.w = w;
    tc.re.lo = &lo;
    tc.re.hi = &hi;
    if (!(tc.t = mk_tree_new(0))) {
        sl_err_set(err, "out of memory");
        goto done;
    }
    size_t used = 0; /* the rows other trees keep */
    for (size_t i = 0; i < w->ntrees; i++)
        used += mk_tree_rows_memory(w->trees[i].t);
    tc.keep = used < WK_ROWS_BUDGET ? WK_ROWS_BUDGET - used : 0;
    if (tc.keep > WK_TREE_ROWS_MAX)
        tc.keep = WK_TREE_ROWS_MAX;
    mk_tree_keep_rows(tc.t, tc.keep);
    if (stream_retry(w, m, &s.q, &lo, &hi, take_tree_row, tree_reset, &tc, err))
        goto done;
    if (!tc.t) {
        sl_err_set(err, "out of memory");
        goto done;
    }
    if (mk_tree_finish(tc.t, err) || mk_tree_root(tc.t, &root, err))
        goto done;
    if (w->ntrees == w->captrees) {
        size_t cap = w->captrees ? w->captrees * 2 : 8;
        wk_tree *t = realloc(w->trees, cap * sizeof *t);
        if (!t) {
            sl_err_set(err, "out of memory");
            goto done;
        }
        w->trees = t;
        w->captrees = cap;
    }
    w->trees[w->ntrees++] = (wk_tree){(uint64_t)id, tc.t};
    mk_tree *t = tc.t;
    tc.t = NULL;
    rc = reply_nodes(w, msg_id(m), (uint64_t)id, mk_tree_rows(t), &root, err);
done:
    w->building = 0;
    w->stop_building = 0;
    db_close_if_big(w, m, tc.re.big);
    mk_tree_free(tc.t);
    mk_nodelist_free(&root);
    rowenc_free(&tc.re);
    spec_free(&s);
    return rc;
}

static int do_nodes(wk *w, const msg *m, sl_err *err)
{
    int64_t id, level, index;
    mk_nodelist l = {0};
    if (msg_get_int(m, "tree", &id, err) || msg_get_int(m, "level", &level, err) ||
        msg_get_int(m, "index", &index, err))
        return -1;
    mk_tree *t = tree_find(w, (uint64_t)id);
    if (!t)
        return sl_err_setc(err, SL_NOT_FOUND, "no tree %lld on this worker", (long long)id);
    if (level < 0 || level > UINT32_MAX || index < 0 || index > UINT32_MAX)
        return sl_err_setc(err, SL_INVALID, "malformed request: node (%lld, %lld)",
                           (long long)level, (long long)index);
    int rc = mk_tree_children(t, (uint32_t)level, (uint32_t)index, &l, err);
    const msg_obj *g = msg_get(m, "grand");
    int64_t grand = 0;
    if (rc == 0 && g && msg_obj_int(g, &grand) == 0 && grand == 1 && level >= 2)
        rc = reply_grand(w, msg_id(m), t, (uint64_t)id, &l, err);
    else if (rc == 0)
        rc = reply_nodes(w, msg_id(m), (uint64_t)id, 0, &l, err);
    mk_nodelist_free(&l);
    return rc;
}

typedef struct rows_ctx {
    rowenc re;
    msg_items *rows; /* the rows, packed as they come */
    uint32_t n;
    int fetch; /* FETCH: also per-column encodings and display text */
    int sizes; /* the coordinator understands digests and partial replies */
    int full;  /* past MSG_REPLY_SOFT_MAX: later rows are left out (re.key
                * keeps the last key sent) */
    int stop;  /* STREAM: a full reply stops the read itself (read_stream) */
    /* ROWS with "spans": only rows inside these [lo, hi] pairs (rising)
     * are sent; sk is the span the read has reached */
    const mk_bound *spans;
    uint32_t nspans, sk;
    sl_buf col, disp;
    uint8_t cut[CONN_MAX_COLS]; /* FETCH: this column travels as a digest */
} rows_ctx;

/* One column as a reply ships it (proto/README.md, "Sizes"): its encoding
 * whole in col (*cut 0) when short enough and the row has not shipped
 * MSG_ROW_WHOLE_MAX (row_bytes so far) already, else its digest in *d
 * (*cut 1), computed without copying a big text or bytea value. The
 * coordinator compares the two forms with each other, so the choice never
 * changes an answer. */
static int column_form(const spec *s, size_t k, const enc_val *v, int sizes, size_t row_bytes,
                       sl_buf *col, int *cut, enc_digest *d, sl_err *err)
{
    int cls = s->cls[k], flags = s->flags;
    const enc_tol *t = s->tol ? &s->tol[k] : NULL; /* exact transforms only */
    size_t raw = v->kind == ENC_V_TEXT || v->kind == ENC_V_BLOB ? v->len : 0;
    int whole = !sizes || (raw <= MSG_VALUE_MAX &&
                           (raw <= MSG_PREFIX_MAX || row_bytes + raw <= MSG_ROW_WHOLE_MAX));
    sl_buf_reset(col);
    *cut = 0;
    if (whole) {
        if (enc_value_tol(col, cls, v, flags, t))
            return sl_err_set(err, "out of memory");
        if (col->len <= MSG_VALUE_MAX || !sizes)
            return 0;
        if (enc_digest_encoded(col->p, col->len, flags, d))
            return sl_err_set(err, "column \"%s\": bad encoding", s->cols[k]);
    } else if (enc_value_digest_tol(col, cls, v, flags, t, d)) {
        return sl_err_set(err, "out of memory");
    }
    *cut = 1;
    return 0;
}

/* A column_form: the encoding (bin), or the digest [head, length, hash]. */
static void pack_form(msg_items *it, const sl_buf *col, int cut, const enc_digest *d)
{
    if (!cut) {
        msg_items_bin(it, col->p, col->len);
        return;
    }
    msg_items_array(it, 3);
    msg_items_bin(it, d->head, d->nhead);
    msg_items_uint(it, d->len);
    msg_items_bin(it, d->hash, 16);
}

/* A column's display text: nil for SQL NULL, a cut value's first
 * MSG_PREFIX_MAX bytes. */
static int pack_text(msg_items *it, sl_buf *disp, const enc_val *v, int cut, sl_err *err)
{
    if (v->kind == ENC_V_NULL) {
        msg_items_nil(it);
        return 0;
    }
    sl_buf_reset(disp);
    if (cut ? enc_display_prefix(disp, v, MSG_PREFIX_MAX) : enc_display(disp, v))
        return sl_err_set(err, "out of memory");
    msg_items_str(it, (const char *)disp->p, disp->len);
    return 0;
}

/* One column of a fetched row, as column_form ships it. */
static int pack_column(rows_ctx *rc, size_t k, const enc_val *v, size_t row_bytes, sl_err *err)
{
    int cut;
    enc_digest d;
    if (column_form(rc->re.s, k, v, rc->sizes, row_bytes, &rc->col, &cut, &d, err))
        return -1;
    rc->cut[k] = (uint8_t)cut;
    pack_form(rc->rows, &rc->col, cut, &d);
    return 0;
}

/* A reply row is packed: past MSG_REPLY_SOFT_MAX the reply is full
 * (the coordinator asks again from its last row). */
static int row_packed(rows_ctx *rc, sl_err *err)
{
    rc->n++;
    size_t size = msg_items_size(rc->rows);
    if (rc->sizes && size >= MSG_REPLY_SOFT_MAX) {
        rc->full = 1;
        if (rc->stop) /* the rest of the span is asked for again */
            return sl_err_set(err, "reply full");
    }
    if (size > MSG_MAX_RAW / 2)
        return sl_err_setc(err, SL_INVALID, "a reply would exceed %u MiB (keys or rows too wide)",
                           MSG_MAX_RAW / 2 >> 20);
    return 0;
}

/* A span's rows from a held tree's kept rows: the same [key, row hash]
 * rows, in the same order, with the same bounds and the same "more" as a
 * read of the database that made the tree gives. */
static int tree_span(rows_ctx *rc, const mk_tree *t, const mk_bound *lo, const mk_bound *hi,
                     sl_err *err)
{
    uint64_t i = 0, n = mk_tree_rows(t);
    if (lo->kind != MK_UNBOUNDED)
        i = mk_tree_row_seek(t, lo->key, lo->len, lo->kind == MK_EXCL);
    for (; i < n && !rc->full; i++) {
        const uint8_t *key, *hash;
        size_t klen;
        mk_tree_row(t, i, &key, &klen, &hash);
        if (!mk_bound_contains(lo, hi, key, klen))
            break;
        msg_items_array(rc->rows, 2);
        msg_items_bin(rc->rows, key, klen);
        msg_items_bin(rc->rows, hash, 16);
        if (row_packed(rc, err))
            return -1;
    }
    return 0;
}

static int rows_from_tree(rows_ctx *rc, const mk_tree *t, const mk_bound *lo, const mk_bound *hi,
                          sl_err *err)
{
    if (!rc->nspans)
        return tree_span(rc, t, lo, hi, err);
    for (uint32_t k = 0; k < rc->nspans && !rc->full; k++)
        if (tree_span(rc, t, &rc->spans[2 * k], &rc->spans[2 * k + 1], err))
            return -1;
    return 0;
}

/* Whether a key read from the database lies in one of the request's spans
 * (all of them when it has none). Keys rise, so the spans are walked once. */
static int in_spans(rows_ctx *rc, const uint8_t *key, size_t klen)
{
    static const mk_bound unb = {MK_UNBOUNDED, NULL, 0};
    if (!rc->nspans)
        return 1;
    while (rc->sk < rc->nspans && !mk_bound_contains(&unb, &rc->spans[2 * rc->sk + 1], key, klen))
        rc->sk++; /* past this span's end */
    return rc->sk < rc->nspans &&
           mk_bound_contains(&rc->spans[2 * rc->sk], &rc->spans[2 * rc->sk + 1], key, klen);
}

static int take_rows_row(void *ctx, const enc_val *v, size_t n, sl_err *err)
{
    rows_ctx *rc = ctx;
    if (rc->full) /* the coordinator asks again from the last row sent */
        return 0;
    if (encode_row(&rc->re, v, !rc->fetch, err))
        return -1;
    if (!in_spans(rc, rc->re.key.p, rc->re.key.len))
        return 0;
    size_t start = msg_items_size(rc->rows);
    msg_items_array(rc->rows, rc->fetch ? 3 : 2);
    msg_items_bin(rc->rows, rc->re.key.p, rc->re.key.len);
    if (!rc->fetch) {
        msg_items_bin(rc->rows, rc->re.hash, 16);
    } else {
        if (n > CONN_MAX_COLS)
            return sl_err_set(err, "a fetched row has %zu columns", n);
        msg_items_array(rc->rows, (uint32_t)n);
        for (size_t k = 0; k < n; k++)
            if (pack_column(rc, k, &v[k], msg_items_size(rc->rows) - start, err))
                return -1;
        msg_items_array(rc->rows, (uint32_t)n);
        for (size_t k = 0; k < n; k++)
            if (pack_text(rc->rows, &rc->disp, &v[k], rc->cut[k], err))
                return -1;
    }
    return row_packed(rc, err);
}

static void rows_reset(void *ctx)
{
    rows_ctx *rc = ctx;
    msg_items_reset(rc->rows);
    rc->n = 0;
    rc->full = 0;
    rc->sk = 0;
    rc->re.n = 0;
    rc->re.t0 = 0;
}

typedef struct fetch_read {
    const conn_query *q;
    const uint8_t **kp;
    const size_t *kl;
    uint32_t nk, done; /* done: keys answered so far */
    rows_ctx *rc;
} fetch_read;

/* A statement's worth of keys at a time; once the reply is full (a row past
 * MSG_REPLY_SOFT_MAX), it stops and the coordinator asks for the rest. */
static int read_fetch(conn *c, void *arg, sl_err *err)
{
    fetch_read *f = arg;
    for (f->done = 0; f->done < f->nk && !f->rc->full;) {
        uint32_t b = f->nk - f->done < WK_FETCH_KEYS ? f->nk - f->done : WK_FETCH_KEYS;
        if (conn_fetch_keys(c, f->q, f->kp + f->done, f->kl + f->done, b, take_rows_row, f->rc,
                            err))
            return -1;
        f->done += b;
    }
    return 0;
}

/* A stream's span: a reply that filled up stops the read (the database
 * is told to cancel it), which is no failure. */
static int read_stream(conn *c, void *arg, sl_err *err)
{
    range_read *r = arg;
    rows_ctx *rc = r->ctx;
    int st = conn_stream_range(c, r->q, r->lo, r->hi, r->fn, r->ctx, err);
    if (st && rc->full && !conn_is_broken(c)) {
        if (err)
            err->code = SL_OK;
        return 0;
    }
    return st;
}

/* The tree a rows request may be answered from: one named by "tree" that
 * this worker holds with its rows kept, and whose root hash is the "root"
 * the coordinator has (the id alone could be another coordinator's). A
 * request without them (a re-check must see the database's current rows)
 * or for a tree gone (released, or a restarted worker) reads the database. */
static const mk_tree *rows_tree(wk *w, const msg *m)
{
    const msg_obj *o = msg_get(m, "tree");
    int64_t id;
    const uint8_t *root;
    size_t rl;
    if (!o || msg_obj_int(o, &id) || msg_get_bin(m, "root", &root, &rl, NULL) || rl != 16)
        return NULL;
    mk_tree *t = tree_find(w, (uint64_t)id);
    mk_nodelist l = {0};
    int same = t && mk_tree_has_rows(t) && mk_tree_root(t, &l, NULL) == 0 && l.n == 1 &&
               memcmp(l.v[0].hash, root, 16) == 0;
    mk_nodelist_free(&l);
    return same ? t : NULL;
}

/* ROWS (fetch 0): a span's [key, row hash]; FETCH (1): the keys asked for,
 * whole; STREAM (2): a span's rows whole, at most "limit" of them. */
static int do_rows(wk *w, const msg *m, int fetch, sl_err *err)
{
    spec s = {0};
    rows_ctx rc = {0};
    int r = -1, more = 0, from_memory = 0;
    mk_bound *spans = NULL;
    uint32_t done_keys = 0;
    if (!(rc.rows = msg_items_new())) {
        sl_err_set(err, "out of memory");
        goto done;
    }
    int stream = fetch == 2;
    rc.fetch = fetch != 0;
    rc.stop = stream;
    /* a coordinator that sends "sizes" takes digests and partial replies
     * (proto/README.md, "Sizes"); an older one gets whole values, as before */
    const msg_obj *sizes = msg_get(m, "sizes");
    int64_t sz = 0;
    rc.sizes = sizes && msg_obj_int(sizes, &sz) == 0 && sz == 1;
    if (spec_read(m, &s, err))
        goto done;
    rc.re.s = &s;
    rc.re.w = w;
    mk_bound lo, hi;
    if (stream) {
        const msg_obj *lim = msg_get(m, "limit");
        int64_t limit = 0;
        if (lim && (msg_obj_int(lim, &limit) || limit < 0)) {
            sl_err_setc(err, SL_INVALID, "malformed request: limit is not a count");
            goto done;
        }
        s.q.limit = (uint64_t)limit;
        rc.re.lo = &lo;
        rc.re.hi = &hi;
        range_read rr = {&s.q, &lo, &hi, take_rows_row, &rc};
        if (bound_read(m, "lo", &lo, err) || bound_read(m, "hi", &hi, err) ||
            read_retry(w, m, read_stream, &rr, rows_reset, &rc, err))
            goto done;
        more = rc.full || (limit > 0 && rc.n >= (uint64_t)limit);
    } else if (!fetch) {
        rc.re.lo = &lo;
        rc.re.hi = &hi;
        if (bound_read(m, "lo", &lo, err) || bound_read(m, "hi", &hi, err))
            goto done;
        /* "spans": only the rows of these spans, inside [lo, hi], are asked
         * for (the drill-down's differing spans, gathered) */
        const msg_obj *so = msg_get(m, "spans"), *items;
        uint32_t ns = 0;
        if (so && (msg_obj_array(so, &items, &ns) || ns > WK_MAX_SPANS)) {
            sl_err_setc(err, SL_INVALID, "malformed request: spans is not a list of spans");
            goto done;
        }
        if (ns && !(spans = calloc(2 * (size_t)ns, sizeof *spans))) {
            sl_err_set(err, "out of memory");
            goto done;
        }
        for (uint32_t k = 0; k < ns; k++) {
            const msg_obj *f;
            uint32_t nf;
            if (msg_obj_array(msg_obj_at(items, k), &f, &nf) || nf != 2 ||
                bound_obj(msg_obj_at(f, 0), &spans[2 * k]) ||
                bound_obj(msg_obj_at(f, 1), &spans[2 * k + 1])) {
                sl_err_setc(err, SL_INVALID, "malformed request: span %u is not [lo, hi]", k);
                goto done;
            }
        }
        rc.spans = spans;
        rc.nspans = ns;
        /* bounds that are no keys of the spec are refused here, whether the
         * tree or the database would answer */
        for (uint32_t k = 0; k < 2 * ns + 2; k++) {
            const mk_bound *b = k == 0 ? &lo : k == 1 ? &hi : &spans[k - 2];
            if (b->kind != MK_UNBOUNDED && enc_key_check(b->key, b->len, s.cls, s.q.nkey, err)) {
                sl_err_wrap(err, "malformed request: a bound");
                goto done;
            }
        }
        const mk_tree *t = rows_tree(w, m);
        if (t ? rows_from_tree(&rc, t, &lo, &hi, err)
              : stream_retry(w, m, &s.q, &lo, &hi, take_rows_row, rows_reset, &rc, err))
            goto done;
        more = rc.full;
        from_memory = t != NULL;
    } else {
        const msg_obj *keys;
        uint32_t nk;
        if (msg_get_array(m, "keys", &keys, &nk, err))
            goto done;
        const uint8_t **kp = calloc(nk + 1, sizeof *kp);
        size_t *kl = calloc(nk + 1, sizeof *kl);
        int bad = !kp || !kl;
        if (bad)
            sl_err_set(err, "out of memory");
        for (uint32_t i = 0; !bad && i < nk; i++)
            if ((bad = msg_obj_bin(msg_obj_at(keys, i), &kp[i], &kl[i]) != 0))
                sl_err_setc(err, SL_INVALID, "malformed request: keys are not binary");
        fetch_read f = {&s.q, kp, kl, nk, 0, &rc};
        if (!bad && read_retry(w, m, read_fetch, &f, rows_reset, &rc, err))
            bad = 1;
        done_keys = f.done;
        if (!bad && rc.full) /* keys are asked for in key order */
            for (done_keys = 0; done_keys < nk && mk_key_cmp(kp[done_keys], kl[done_keys],
                                                             rc.re.key.p, rc.re.key.len) <= 0;)
                done_keys++;
        free(kp);
        free(kl);
        if (bad)
            goto done;
        more = done_keys < nk;
    }
    msg_writer *mw = msg_writer_new(MSG_REPLY, msg_id(m));
    if (!mw) {
        sl_err_set(err, "out of memory");
        goto done;
    }
    if (w->inproc)
        msg_writer_no_compress(mw);
    if (from_memory) /* the coordinator counts these (rows_from_memory) */
        msg_put_uint(mw, "mem", 1);
    if (more && fetch == 1)
        msg_put_uint(mw, "done", done_keys);
    else if (more)
        msg_put_uint(mw, "more", 1);
    msg_key(mw, "rows");
    msg_pack_array(mw, rc.n);
    msg_pack_items(mw, rc.rows); /* rows packed as they came */
    r = msg_writer_finish(mw, &w->out, err);
    msg_writer_free(mw);
done:
    free(spans);
    db_close_if_big(w, m, rc.re.big);
    spec_free(&s);
    rowenc_free(&rc.re);
    sl_buf_free(&rc.col);
    sl_buf_free(&rc.disp);
    msg_items_free(rc.rows);
    return r;
}

/* ---- merge: one worker reads both sides ------------------------------- */

/* A column of a row read on both sides, as each side would ship it. */
typedef struct merge_col {
    sl_buf col;
    int cut;
    enc_digest d;
} merge_col;

/* MERGE: side A (the spec's db and table) is streamed on this thread,
 * side B (db2, table2) on a wk_side thread; rows are merged by key as A's
 * arrive. Every merged key lies at or before "through", and rows past it
 * are never counted: a side that stopped at its limit, or a full reply,
 * ends the merge there (proto/README.md, merge). */
typedef struct merge_ctx {
    wk *w;
    const spec *sa, *sb;
    int sizes;
    uint64_t limit;
    rowenc ra, rb;       /* each side's keys and their order checks */
    wk_side *side;       /* B's read */
    const enc_val *bv;   /* B's head row (key in rb.key); NULL: take the next */
    int b_end, b_failed; /* B's read ended; it failed (b_err) */
    sl_err b_err;
    msg_items *a, *b;     /* the divergent rows of each side */
    uint32_t na, nb;      /* rows listed */
    uint64_t ma, mb;      /* rows merged */
    uint64_t pos, blocks; /* merged keys; 32-key blocks with a divergence */
    uint64_t last_block;  /* the last such block + 1 (0: none) */
    sl_buf through;       /* the last key merged */
    int full;             /* the reply passed MSG_REPLY_SOFT_MAX */
    int stopped;          /* A's read was stopped on purpose */
    int own_failed;       /* the merge failed, not a side's read */
    int more;             /* rows may follow "through" */
    merge_col *cols[2];   /* per column, side A and B */
    uint8_t eq[CONN_MAX_COLS];
    sl_buf disp;
} merge_ctx;

static int b_limited(const merge_ctx *mc)
{
    return mc->b_end && mc->rb.n >= mc->limit;
}

/* Takes B's next row as its head, waiting in slices of 20 ms so
 * heartbeats (and the drill-down's quick requests) go on meanwhile: 0
 * (mc->bv NULL once B ended), or -1 with B's error kept in b_err. */
static int b_advance(merge_ctx *mc, sl_err *err)
{
    mc->bv = NULL;
    while (!mc->b_end) {
        const enc_val *v;
        int r = wk_side_next(mc->side, 20, &v, &mc->b_err);
        if (r == 2) {
            busy_tick(mc->w);
            continue;
        }
        if (r == 0) {
            mc->b_end = 1;
            break;
        }
        if (r < 0 || encode_row(&mc->rb, v, 0, &mc->b_err)) {
            mc->b_failed = 1;
            return sl_err_set(err, "target failed");
        }
        mc->bv = v;
        break;
    }
    return 0;
}

/* A key was merged (divergent or not): its block, "through", and the
 * reply's size (full past MSG_REPLY_SOFT_MAX, refused past half the
 * message limit, as row_packed). */
static int merged(merge_ctx *mc, const sl_buf *key, int divergent, sl_err *err)
{
    uint64_t block = mc->pos++ / 32;
    sl_buf_reset(&mc->through);
    if (sl_buf_append(&mc->through, key->p, key->len))
        return sl_err_set(err, "out of memory");
    if (!divergent)
        return 0;
    if (mc->last_block != block + 1) {
        mc->blocks++;
        mc->last_block = block + 1;
    }
    size_t size = msg_items_size(mc->a) + msg_items_size(mc->b);
    if (mc->sizes && size >= MSG_REPLY_SOFT_MAX)
        mc->full = 1;
    if (size > MSG_MAX_RAW / 2)
        return sl_err_setc(err, SL_INVALID, "a reply would exceed %u MiB (keys or rows too wide)",
                           MSG_MAX_RAW / 2 >> 20);
    return 0;
}

/* A key on one side only: [key, [], []] in that side's list. */
static int merge_one(merge_ctx *mc, int side, sl_err *err)
{
    msg_items *it = side ? mc->b : mc->a;
    const sl_buf *key = side ? &mc->rb.key : &mc->ra.key;
    msg_items_array(it, 1); /* [key]: its side only */
    msg_items_bin(it, key->p, key->len);
    *(side ? &mc->nb : &mc->na) += 1;
    *(side ? &mc->mb : &mc->ma) += 1;
    return merged(mc, key, 1, err);
}

/* Whether two column forms are equal as the coordinator's compare_row
 * sees them before any tolerance: two whole encodings bytewise, any other
 * pair by digest. -1 on a bad encoding. */
static int forms_equal(merge_col *x, merge_col *y, int flags)
{
    if (!x->cut && !y->cut)
        return x->col.len == y->col.len && memcmp(x->col.p, y->col.p, x->col.len) == 0;
    if ((!x->cut && enc_digest_encoded(x->col.p, x->col.len, flags, &x->d)) ||
        (!y->cut && enc_digest_encoded(y->col.p, y->col.len, flags, &y->d)))
        return -1;
    return enc_digest_equal(&x->d, &y->d);
}

/* One side's row of a key on both: [key, [differing column indexes],
 * [their values], [their texts]], each value and text as a stream ships
 * it. Only the differing columns travel: a row of 7 columns of which one
 * differs is 8 wire objects, not 18 (decoding them is most of the
 * coordinator's work when every row differs). */
static int pack_divergent(merge_ctx *mc, int side, const enc_val *v, uint32_t ndiff, sl_err *err)
{
    msg_items *it = side ? mc->b : mc->a;
    const sl_buf *key = side ? &mc->rb.key : &mc->ra.key;
    const merge_col *c = mc->cols[side];
    size_t n = mc->sa->q.ncols, nkey = mc->sa->q.nkey;
    msg_items_array(it, 4);
    msg_items_bin(it, key->p, key->len);
    msg_items_array(it, ndiff);
    for (size_t k = nkey; k < n; k++)
        if (!mc->eq[k])
            msg_items_uint(it, k);
    msg_items_array(it, ndiff);
    for (size_t k = nkey; k < n; k++)
        if (!mc->eq[k])
            pack_form(it, &c[k].col, c[k].cut, &c[k].d);
    msg_items_array(it, ndiff);
    for (size_t k = nkey; k < n; k++)
        if (!mc->eq[k] && pack_text(it, &mc->disp, &v[k], c[k].cut, err))
            return -1;
    *(side ? &mc->nb : &mc->na) += 1;
    return 0;
}

/* A key on both sides: listed only when a column differs. */
static int merge_both(merge_ctx *mc, const enc_val *va, const enc_val *vb, sl_err *err)
{
    const spec *s = mc->sa;
    size_t bytes[2] = {mc->ra.key.len, mc->rb.key.len}; /* what each row ships so far */
    uint32_t divergent = 0;
    for (size_t k = s->q.nkey; k < s->q.ncols; k++) {
        for (int sd = 0; sd < 2; sd++) {
            merge_col *c = &mc->cols[sd][k];
            if (column_form(s, k, sd ? &vb[k] : &va[k], mc->sizes, bytes[sd], &c->col, &c->cut,
                            &c->d, err))
                return -1;
            bytes[sd] += c->cut ? 0 : c->col.len;
        }
        int e = forms_equal(&mc->cols[0][k], &mc->cols[1][k], s->flags);
        if (e < 0)
            return sl_err_set(err, "column \"%s\": bad encoding", s->cols[k]);
        mc->eq[k] = (uint8_t)e;
        divergent += !e;
    }
    mc->ma++;
    mc->mb++;
    if (divergent &&
        (pack_divergent(mc, 0, va, divergent, err) || pack_divergent(mc, 1, vb, divergent, err)))
        return -1;
    return merged(mc, &mc->ra.key, divergent != 0, err);
}

/* Ends A's read on purpose (B stopped at its limit before this key, or
 * the reply is full): the database cancels the query, no failure. */
static int stop_a(merge_ctx *mc, sl_err *err)
{
    mc->stopped = 1;
    return sl_err_set(err, "merge stopped");
}

/* A's row: B's rows before its key go out as B's alone, then the key is
 * merged with B's equal one or goes out as A's alone. */
static int take_merge_row(void *ctx, const enc_val *v, size_t n, sl_err *err)
{
    merge_ctx *mc = ctx;
    (void)n;
    if (encode_row(&mc->ra, v, 0, err))
        return -1;
    for (;;) {
        if (!mc->bv && b_advance(mc, err))
            return -1;
        if (!mc->bv && b_limited(mc)) /* B may have more before this key */
            return stop_a(mc, err);
        int c = mc->bv ? mk_key_cmp(mc->rb.key.p, mc->rb.key.len, mc->ra.key.p, mc->ra.key.len) : 1;
        int r = c < 0    ? merge_one(mc, 1, err)
                : c == 0 ? merge_both(mc, v, mc->bv, err)
                         : merge_one(mc, 0, err);
        if (r)
            return mc->own_failed = 1, -1;
        if (c <= 0)
            mc->bv = NULL; /* taken */
        if (mc->full)
            return stop_a(mc, err);
        if (c >= 0)
            return 0;
    }
}

/* A's read ended by itself: B's rows left go out as B's alone, up to A's
 * last key when A stopped at its limit (A may have more after it). */
static int merge_rest(merge_ctx *mc, sl_err *err)
{
    int a_limited = mc->ra.n >= mc->limit;
    while (!mc->full) {
        if (!mc->bv && b_advance(mc, err))
            return -1;
        if (!mc->bv || (a_limited &&
                        mk_key_cmp(mc->rb.key.p, mc->rb.key.len, mc->ra.key.p, mc->ra.key.len) > 0))
            break;
        if (merge_one(mc, 1, err))
            return mc->own_failed = 1, -1;
        mc->bv = NULL;
    }
    return 0;
}

/* Whether rows may follow "through": a side stopped at its limit, or the
 * merge stopped early. */
static int merge_more(const merge_ctx *mc)
{
    return mc->stopped || mc->full || mc->ra.n >= mc->limit || b_limited(mc) || mc->bv;
}

/* The worker's heartbeats while a merge waits for its side thread. */
static void side_tick(void *w)
{
    busy_tick(w);
}

static void merge_reset(merge_ctx *mc)
{
    wk_side_free(mc->side, side_tick, mc->w);
    mc->side = NULL;
    mc->bv = NULL;
    mc->b_end = mc->b_failed = mc->full = mc->stopped = mc->own_failed = mc->more = 0;
    msg_items_reset(mc->a);
    msg_items_reset(mc->b);
    mc->na = mc->nb = 0;
    mc->ma = mc->mb = mc->pos = mc->blocks = mc->last_block = 0;
    sl_buf_reset(&mc->through);
    mc->ra.n = mc->rb.n = 0;
}

/* One attempt at the merge on sessions ca and cb: 0, or -1 with err
 * naming the side that failed. */
static int merge_once(merge_ctx *mc, conn *ca, conn *cb, const mk_bound *lo, const mk_bound *hi,
                      sl_err *err)
{
    conn_set_tick(cb, NULL, NULL); /* its thread must not touch the socket */
    if (!(mc->side = wk_side_start(cb, &mc->sb->q, lo, hi, err)))
        return -1;
    int st = conn_stream_range(ca, &mc->sa->q, lo, hi, take_merge_row, mc, err);
    if (st && mc->stopped && !conn_is_broken(ca))
        st = 0;
    if (st == 0 && !mc->stopped)
        st = merge_rest(mc, err);
    if (st == 0) {
        mc->more = merge_more(mc);
        return 0;
    }
    if (mc->b_failed) {
        if (err)
            *err = mc->b_err;
        return sl_err_wrap(err, "target");
    }
    return mc->own_failed ? -1 : sl_err_wrap(err, "source");
}

/* The merge, started again from lo when a session broke (a restarted
 * server), as read_retry does; a query's error is not retried. */
static int merge_retry(merge_ctx *mc, const msg *m, const mk_bound *lo, const mk_bound *hi,
                       sl_err *err)
{
    const int attempts = 5;
    const char *da, *db;
    size_t la, lb;
    if (msg_get_str(m, "db", &da, &la, err) || msg_get_str(m, "db2", &db, &lb, err))
        return -1;
    for (int a = 0; a < attempts; a++) {
        if (err)
            err->code = SL_OK;
        if (a > 0) {
            merge_reset(mc);
            for (int k = 0; k < (1 << a); k++) { /* 0.2 s, 0.4 s, 0.8 s, 1.6 s */
                struct timespec ts = {0, 100 * 1000000L};
                nanosleep(&ts, NULL);
                tick(mc->w);
            }
        }
        conn *ca = db_get_name(mc->w, da, la, err), *cb = ca ? db_get_name(mc->w, db, lb, err) : 0;
        if (!ca || !cb) {
            if (err && err->code == SL_NOT_FOUND) /* no such database here: no retry helps */
                return -1;
            continue; /* the database may be coming back */
        }
        int r = merge_once(mc, ca, cb, lo, hi, err);
        wk_side_free(mc->side, side_tick, mc->w); /* joined: cb is this thread's again */
        mc->side = NULL;
        if (r == 0)
            return 0;
        int broken = conn_is_broken(ca) || conn_is_broken(cb);
        db_drop(mc->w, ca);
        db_drop(mc->w, cb);
        if (!broken)
            return -1;
    }
    return sl_err_wrap(err, "gave up after %d attempts", attempts);
}

static void merge_free(merge_ctx *mc, size_t ncols)
{
    wk_side_free(mc->side, side_tick, mc->w);
    for (int sd = 0; sd < 2; sd++) {
        for (size_t k = 0; mc->cols[sd] && k < ncols; k++)
            sl_buf_free(&mc->cols[sd][k].col);
        free(mc->cols[sd]);
    }
    msg_items_free(mc->a);
    msg_items_free(mc->b);
    rowenc_free(&mc->ra);
    rowenc_free(&mc->rb);
    sl_buf_free(&mc->through);
    sl_buf_free(&mc->disp);
}

static int reply_merge(wk *w, const msg *m, const merge_ctx *mc, sl_err *err)
{
    msg_writer *mw = msg_writer_new(MSG_REPLY, msg_id(m));
    if (!mw)
        return sl_err_set(err, "out of memory");
    if (w->inproc)
        msg_writer_no_compress(mw);
    msg_key(mw, "a");
    msg_pack_array(mw, mc->na);
    msg_pack_items(mw, mc->a);
    msg_key(mw, "b");
    msg_pack_array(mw, mc->nb);
    msg_pack_items(mw, mc->b);
    msg_key(mw, "rows");
    msg_pack_array(mw, 2);
    msg_pack_uint(mw, mc->ma);
    msg_pack_uint(mw, mc->mb);
    msg_put_uint(mw, "blocks", mc->blocks);
    if (mc->pos) {
        msg_key(mw, "through");
        msg_pack_bin(mw, mc->through.p, mc->through.len);
    }
    if (mc->more)
        msg_put_uint(mw, "more", 1);
    int r = msg_writer_finish(mw, &w->out, err);
    msg_writer_free(mw);
    return r;
}

/* The request's fields beyond the spec: "limit", and "db2" another
 * database than "db". */
static int merge_args(const msg *m, int64_t *limit, char **table2, sl_err *err)
{
    const char *da, *db, *t2;
    size_t la, lb, l2;
    if (msg_get_int(m, "limit", limit, err) || msg_get_str(m, "db", &da, &la, err) ||
        msg_get_str(m, "db2", &db, &lb, err) || msg_get_str(m, "table2", &t2, &l2, err))
        return -1;
    if (*limit < 1)
        return sl_err_setc(err, SL_INVALID, "malformed request: limit is not a count");
    if (la == lb && memcmp(da, db, la) == 0)
        return sl_err_setc(err, SL_INVALID,
                           "malformed request: db2 names the same database as db (one session "
                           "a side: two databases needed)");
    if (!(*table2 = strndup(t2, l2)))
        return sl_err_set(err, "out of memory");
    return 0;
}

/* MERGE: both sides of a span read here, only their divergent rows sent.
 * Rate limits (max_rps) are ignored: the coordinator sends none. */
static int do_merge(wk *w, const msg *m, sl_err *err)
{
    spec s = {0}, sb;
    merge_ctx mc = {0};
    mk_bound lo, hi;
    int64_t limit = 0;
    char *table2 = NULL;
    int r = -1;
    if (spec_read(m, &s, err) || bound_read(m, "lo", &lo, err) || bound_read(m, "hi", &hi, err) ||
        merge_args(m, &limit, &table2, err))
        goto done;
    s.max_rps = 0;
    s.q.limit = (uint64_t)limit;
    sb = s; /* B's: the same spec on another table (shares s's strings) */
    sb.table = table2;
    sb.q.table = table2;
    const msg_obj *sizes = msg_get(m, "sizes");
    int64_t sz = 0;
    mc.sizes = sizes && msg_obj_int(sizes, &sz) == 0 && sz == 1;
    mc.w = w;
    mc.sa = &s;
    mc.sb = &sb;
    mc.limit = (uint64_t)limit;
    mc.ra = (rowenc){.w = w, .s = &s, .lo = &lo, .hi = &hi};
    mc.rb = (rowenc){.w = w, .s = &sb, .lo = &lo, .hi = &hi};
    if (!(mc.a = msg_items_new()) || !(mc.b = msg_items_new()) ||
        !(mc.cols[0] = calloc(s.q.ncols, sizeof(merge_col))) ||
        !(mc.cols[1] = calloc(s.q.ncols, sizeof(merge_col)))) {
        sl_err_set(err, "out of memory");
        goto done;
    }
    if (merge_retry(&mc, m, &lo, &hi, err) == 0)
        r = reply_merge(w, m, &mc, err);
done:
    if (table2) {
        const char *p;
        size_t n;
        db_close_if_big(w, m, mc.ra.big);
        if (msg_get_str(m, "db2", &p, &n, NULL) == 0)
            db_close_big_name(w, p, n, mc.rb.big);
    }
    merge_free(&mc, s.q.ncols);
    free(table2);
    spec_free(&s);
    return r;
}

/* ---- the loop --------------------------------------------------------- */

static int send_frame(wk *w, const sl_buf *b)
{
    w->last_sent = sl_now();
    return zmq_send(w->sock, b->p, b->len, 0) < 0 ? -1 : 0;
}

/* Hello and heartbeat carry the same body, so a coordinator that restarted
 * learns about this worker from its next heartbeat. */
static int send_hello(wk *w, int type, sl_err *err)
{
    sl_buf f = {0};
    msg_writer *mw = msg_writer_new(type, 0);
    if (!mw)
        return sl_err_set(err, "out of memory");
    msg_put_int(mw, "enc", ENC_VERSION);
    msg_put_int(mw, "stream", 1);         /* serves stream requests (dense ranges) */
    msg_put_int(mw, "merge", 1);          /* serves merge requests (both sides read here) */
    msg_put_int(mw, "spans", 1);          /* rows requests may list spans */
    msg_put_uint(mw, "trees", w->ntrees); /* shown by sluice workers: 0 once jobs end */
    msg_key(mw, "dbs");
    msg_pack_array(mw, (uint32_t)w->ndbs);
    for (size_t i = 0; i < w->ndbs; i++)
        msg_pack_cstr(mw, w->dbs[i].name);
    int r = msg_writer_finish(mw, &f, err);
    msg_writer_free(mw);
    if (r == 0 && send_frame(w, &f))
        r = sl_err_set(err, "cannot send hello: %s", zmq_strerror(zmq_errno()));
    sl_buf_free(&f);
    return r;
}

static void tick(wk *w)
{
    if (w->heartbeat_ms > 0 && sl_now() - w->last_sent >= w->heartbeat_ms / 1000.0)
        send_hello(w, MSG_HEARTBEAT, NULL);
}

wk *wk_new(const wk_config *cfg, sl_err *err)
{
    wk *w = calloc(1, sizeof *w);
    if (!w)
        return sl_err_set(err, "out of memory"), NULL;
    w->dbs = calloc(cfg->ndbs ? cfg->ndbs : 1, sizeof *w->dbs);
    if (!w->dbs)
        goto oom;
    for (size_t i = 0; i < cfg->ndbs; i++) {
        w->dbs[i].name = strdup(cfg->dbs[i].name);
        w->dbs[i].dsn = strdup(cfg->dbs[i].dsn);
        w->dbs[i].allow_where = cfg->dbs[i].allow_where;
        w->ndbs = i + 1;
        if (!w->dbs[i].name || !w->dbs[i].dsn)
            goto oom;
    }
    w->deferred_tail = &w->deferred;
    w->heartbeat_ms = cfg->heartbeat_ms;
    w->read_timeout_ms = cfg->read_timeout_ms;
    w->relay_where_errors = cfg->relay_where_errors;
    w->log = cfg->log;
    w->log_ctx = cfg->log_ctx;
    w->stop = cfg->stop;
    w->sock = zmq_socket(cfg->zctx, ZMQ_DEALER);
    if (!w->sock) {
        sl_err_set(err, "cannot create worker socket: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    int linger = 0;
    zmq_setsockopt(w->sock, ZMQ_LINGER, &linger, sizeof linger);
    if (cfg->curve_server_key &&
        curve_client(w->sock, cfg->curve_server_key, cfg->curve_secret, err))
        goto fail;
    w->inproc = strncmp(cfg->endpoint, "inproc://", 9) == 0;
    if (zmq_connect(w->sock, cfg->endpoint) != 0) {
        sl_err_set(err, "cannot connect to coordinator at %s: %s", cfg->endpoint,
                   zmq_strerror(zmq_errno()));
        goto fail;
    }
    return w;
oom:
    sl_err_set(err, "out of memory");
fail:
    wk_free(w);
    return NULL;
}

void wk_free(wk *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->ndbs; i++) {
        conn_free(w->dbs[i].c);
        conn_free(w->dbs[i].side);
        free(w->dbs[i].name);
        free(w->dbs[i].dsn);
    }
    free(w->dbs);
    for (size_t i = 0; i < w->ntrees; i++)
        mk_tree_free(w->trees[i].t);
    free(w->trees);
    /* closed, not dropped: a follow resumes from its slot after a restart */
    for (size_t i = 0; i < w->nfollows; i++)
        wk_follow_stop(w->follows[i], 0, NULL);
    free(w->follows);
    sl_buf_free(&w->keys);
    sl_buf_free(&w->keys_at);
    while (w->deferred) {
        deferred *d = w->deferred;
        w->deferred = d->next;
        free(d);
    }
    if (w->sock)
        zmq_close(w->sock);
    sl_buf_free(&w->out);
    free(w);
}

/* The database a request names, if this worker has it. */
static wk_dbconn *db_named_by(wk *w, const msg *m, const char *field)
{
    const char *p;
    size_t n;
    if (msg_get_str(m, field, &p, &n, NULL))
        return NULL;
    for (size_t i = 0; i < w->ndbs; i++)
        if (strlen(w->dbs[i].name) == n && memcmp(w->dbs[i].name, p, n) == 0)
            return &w->dbs[i];
    return NULL;
}

static wk_dbconn *db_named(wk *w, const msg *m)
{
    return db_named_by(w, m, "db");
}

/* Whether m carries a where clause (any non-nil value: the handlers refuse
 * one that is not a string). */
static int has_where(const msg *m)
{
    const msg_obj *o = msg_get(m, "where");
    return o && !msg_obj_is_nil(o);
}

/* Refuses a where clause for a database whose operator did not allow
 * one: 0 to go on, -1 with err. */
static int check_where(wk *w, const msg *m, sl_err *err)
{
    wk_dbconn *d = db_named(w, m), *d2 = db_named_by(w, m, "db2"); /* merge: both sides */
    if (d2 && !d2->allow_where && (!d || d->allow_where))
        d = d2;
    if (!has_where(m) || !d || d->allow_where)
        return 0;
    return sl_err_setc(err, SL_AUTH,
                       "worker for database \"%s\" does not accept --where from the cluster; its "
                       "operator can allow it with sluice worker --allow-where %s (or a line "
                       "\"allow-where %s\" in its --db-file)",
                       d->name, d->name, d->name);
}

/* A request with a where clause failed: the database's message may quote
 * what the clause read, so the coordinator (and its clients) get a fixed
 * one, and the worker's log the full text. */
static void redact_where_error(wk *w, const msg *m, sl_err *e)
{
    wk_dbconn *d = db_named(w, m);
    const char *name = d ? d->name : "?";
    if (w->log) {
        char line[700];
        snprintf(line, sizeof line, "a %s request with --where on database \"%s\" failed: %s",
                 msg_type_name(msg_type(m)), name, e->msg);
        w->log(w->log_ctx, line);
    }
    sl_err_set(e,
               "database \"%s\" failed a query with --where; the database's message is in the "
               "worker's log only, since it can quote data the clause read",
               name);
}

/* ---- change streams ----------------------------------------------------- */

#define WK_KEYS_MAX 10000 /* keys a keys reply carries at most */

/* The follow named by m's "slot": its index, or -1 (err set when given). */
static long follow_find(wk *w, const msg *m, sl_err *err)
{
    const char *p;
    size_t n;
    if (msg_get_str(m, "slot", &p, &n, err))
        return -1;
    for (size_t i = 0; i < w->nfollows; i++) {
        const char *sl = wk_follow_slot(w->follows[i]);
        if (strlen(sl) == n && !memcmp(sl, p, n))
            return (long)i;
    }
    return sl_err_setc(err, SL_NOT_FOUND, "this worker follows no stream named \"%.*s\"", (int)n,
                       p),
           -1;
}

static void follow_remove(wk *w, long i)
{
    w->follows[i] = w->follows[--w->nfollows];
}

static int reply_empty(wk *w, uint64_t id, sl_err *err)
{
    msg_writer *mw = msg_writer_new(MSG_REPLY, id);
    if (!mw)
        return sl_err_set(err, "out of memory");
    int r = msg_writer_finish(mw, &w->out, err);
    msg_writer_free(mw);
    return r;
}

/* follow: starts (or restarts: a coordinator that asks again has lost what
 * it was sent) the stream of a table's changed keys. */
static int do_follow(wk *w, const msg *m, sl_err *err)
{
    wk_dbconn *d = db_named(w, m);
    if (!d)
        return sl_err_setc(err, SL_NOT_FOUND, "this worker has no such database");
    spec s;
    if (spec_read(m, &s, err))
        return spec_free(&s), -1;
    char *slot = NULL;
    int64_t *live = NULL;
    const char *p;
    size_t n;
    int r = -1;
    if (msg_get_str(m, "slot", &p, &n, err) || !(slot = strndup(p, n)))
        goto out;
    /* the coordinator's live jobs, when it says: their slots are no orphans */
    const msg_obj *items = NULL;
    uint32_t nlive = 0;
    int has_live = msg_get(m, "live") != NULL;
    if (has_live && msg_get_array(m, "live", &items, &nlive, err))
        goto out;
    if (nlive && !(live = calloc(nlive, sizeof *live))) {
        sl_err_set(err, "out of memory");
        goto out;
    }
    for (uint32_t k = 0; k < nlive; k++)
        if (msg_obj_int(msg_obj_at(items, k), &live[k])) {
            sl_err_setc(err, SL_INVALID, "malformed request: live holds a non-integer");
            goto out;
        }
    sl_err ignore = {0};
    long old = follow_find(w, m, &ignore);
    if (old >= 0) {
        wk_follow_stop(w->follows[old], 0, NULL);
        follow_remove(w, old);
    }
    wk_follow **v = realloc(w->follows, (w->nfollows + 1) * sizeof *v);
    if (!v) {
        sl_err_set(err, "out of memory");
        goto out;
    }
    w->follows = v;
    wk_follow *f = wk_follow_start(d->dsn, slot, s.table, (const char *const *)s.cols, s.cls,
                                   s.q.nkey, live, nlive, has_live, w->log, w->log_ctx, err);
    if (!f) {
        sl_err_wrap(err, "%s", d->name);
        goto out;
    }
    w->follows[w->nfollows++] = f;
    r = reply_empty(w, msg_id(m), err);
out:
    free(live);
    free(slot);
    spec_free(&s);
    return r;
}

/* keys: acks the last batch and sends the next. */
static int do_keys(wk *w, const msg *m, sl_err *err)
{
    int64_t ack;
    long i = follow_find(w, m, err);
    if (i < 0 || msg_get_int(m, "ack", &ack, err))
        return -1;
    size_t n = 0;
    uint64_t lsn = 0, lag = 0;
    sl_err why = {0};
    sl_buf_reset(&w->keys);
    sl_buf_reset(&w->keys_at);
    int stopped = wk_follow_take(w->follows[i], (uint64_t)ack, WK_KEYS_MAX, &w->keys, &w->keys_at,
                                 &n, &lsn, &lag, &why);
    msg_writer *mw = msg_writer_new(MSG_REPLY, msg_id(m));
    if (!mw)
        return sl_err_set(err, "out of memory");
    msg_key(mw, "keys");
    msg_pack_array(mw, (uint32_t)n);
    for (size_t off = 0; off < w->keys.len;) {
        uint32_t len;
        memcpy(&len, w->keys.p + off, 4);
        msg_pack_bin(mw, w->keys.p + off + 4, len);
        off += 4 + len;
    }
    msg_key(mw, "at"); /* each key's commit time, ms since 1970 */
    msg_pack_array(mw, (uint32_t)n);
    for (size_t k = 0; k < n; k++) {
        int64_t t;
        memcpy(&t, w->keys_at.p + 8 * k, 8);
        msg_pack_int(mw, t);
    }
    msg_put_uint(mw, "lsn", lsn);
    msg_put_uint(mw, "lag", lag);
    if (stopped)
        msg_put_cstr(mw, "error", why.msg);
    int r = msg_writer_finish(mw, &w->out, err);
    msg_writer_free(mw);
    return r;
}

/* unfollow: ends a stream and drops its slot and publication, also when
 * another (lost) worker held it: the slot's holder is terminated. */
static int do_unfollow(wk *w, const msg *m, sl_err *err)
{
    wk_dbconn *d = db_named(w, m);
    if (!d)
        return sl_err_setc(err, SL_NOT_FOUND, "this worker has no such database");
    sl_err ignore = {0};
    long i = follow_find(w, m, &ignore);
    int64_t keep = 0;
    const msg_obj *ko = msg_get(m, "keep");
    if (ko && msg_obj_int(ko, &keep))
        return sl_err_setc(err, SL_INVALID, "malformed request: keep");
    int r;
    if (keep) { /* the job resumes on the next coordinator: its slot replays */
        if (i >= 0) {
            wk_follow_stop(w->follows[i], 0, NULL);
            follow_remove(w, i);
        }
        return reply_empty(w, msg_id(m), err);
    }
    if (i >= 0) {
        r = wk_follow_stop(w->follows[i], 1, err);
        follow_remove(w, i);
    } else {
        const char *p;
        size_t n;
        char slot[128];
        if (msg_get_str(m, "slot", &p, &n, err))
            return -1;
        if (n == 0 || n >= sizeof slot)
            return sl_err_setc(err, SL_INVALID, "malformed request: slot name");
        memcpy(slot, p, n);
        slot[n] = 0;
        r = wk_follow_drop(d->dsn, slot, err);
    }
    if (r)
        return sl_err_wrap(err, "%s", d->name);
    if (w->log) {
        char line[300];
        snprintf(line, sizeof line, "dropped replication slot and publication %s",
                 i >= 0 ? "of a follow" : "left by another worker");
        w->log(w->log_ctx, line);
    }
    return reply_empty(w, msg_id(m), err);
}

/* lag: a hot standby's replication lag, for a job that pauses while it is
 * too far behind (--max-replica-lag). */
static int do_lag(wk *w, const msg *m, sl_err *err)
{
    double lag;
    conn *c = db_get(w, m, err);
    if (!c)
        return -1;
    if (conn_replica_lag(c, &lag, err)) {
        if (conn_is_broken(c))
            db_drop(w, c);
        return -1;
    }
    msg_writer *mw = msg_writer_new(MSG_REPLY, msg_id(m));
    if (!mw)
        return sl_err_set(err, "out of memory");
    msg_put_int(mw, "lag_ms", lag < 0 ? -1 : (int64_t)(lag * 1000));
    msg_put_cstr(mw, "name", conn_name(c));
    int rc = msg_writer_finish(mw, &w->out, err);
    msg_writer_free(mw);
    return rc;
}

/* Serves one decoded request. Returns 0, 1 after shutdown, -1 when the
 * socket failed. *m is consumed. */
static int handle(wk *w, msg *m, const sl_err *decode_err, sl_err *err)
{
    sl_err e = {0};
    int r = -1, reply = 1;
    uint64_t id = m ? msg_id(m) : 0;
    if (!m)
        e = *decode_err;
    else if (msg_check_fields(m, &e) == 0 && check_where(w, m, &e) == 0) {
        switch (msg_type(m)) {
        case MSG_DESCRIBE:
            r = do_describe(w, m, &e);
            break;
        case MSG_SPLIT:
            r = do_split(w, m, &e);
            break;
        case MSG_TREE:
            r = do_tree(w, m, &e);
            break;
        case MSG_NODES:
            r = do_nodes(w, m, &e);
            break;
        case MSG_ROWS:
            r = do_rows(w, m, 0, &e);
            break;
        case MSG_FETCH:
            r = do_rows(w, m, 1, &e);
            break;
        case MSG_STREAM:
            r = do_rows(w, m, 2, &e);
            break;
        case MSG_MERGE:
            r = do_merge(w, m, &e);
            break;
        case MSG_RELEASE: {
            int64_t t;
            if (msg_get_int(m, "tree", &t, &e) == 0)
                tree_release(w, (uint64_t)t);
            reply = 0;
            break;
        }
        case MSG_FOLLOW:
            r = do_follow(w, m, &e);
            break;
        case MSG_KEYS:
            r = do_keys(w, m, &e);
            break;
        case MSG_UNFOLLOW:
            r = do_unfollow(w, m, &e);
            break;
        case MSG_LAG:
            r = do_lag(w, m, &e);
            break;
        case MSG_SHUTDOWN:
            msg_free(m);
            return 1;
        default:
            sl_err_setc(&e, SL_INVALID, "a worker does not serve %s messages",
                        msg_type_name(msg_type(m)));
        }
        if (r != 0 && reply && has_where(m) && !w->relay_where_errors)
            redact_where_error(w, m, &e);
        msg_free(m);
    } else {
        msg_free(m);
    }
    if (!reply)
        return 0;
    if (r != 0 && msg_error_reply(id, &e, &w->out) != 0)
        return sl_err_set(err, "out of memory");
    if (send_frame(w, &w->out))
        return sl_err_set(err, "worker socket: %s", zmq_strerror(zmq_errno()));
    return 0;
}

/* While a range streams: requests that need no database (a tree's
 * children, releasing a tree, garbage) are answered at once, so the
 * coordinator's drill-down into an earlier range does not wait for this
 * one; the others wait in w->deferred, in order. */
static void busy_tick(wk *w)
{
    tick(w);
    if (w->in_busy_tick)
        return;
    w->in_busy_tick = 1;
    for (;;) {
        zmq_msg_t in;
        zmq_msg_init(&in);
        if (zmq_msg_recv(&in, w->sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&in);
            break;
        }
        sl_err e = {0};
        msg *m = msg_decode(zmq_msg_data(&in), zmq_msg_size(&in), &e);
        /* the drill-down's requests are answered at once: nodes from the
         * trees held, span rows and fetches on the database's second
         * session, so no divergence waits for a whole range to stream;
         * describe and split too, so a new (high priority) job does not
         * wait for another job's range. A tree or a merge is a range task
         * of its own: it waits its turn */
        int quick =
            !m || msg_type(m) == MSG_NODES || msg_type(m) == MSG_RELEASE ||
            msg_type(m) == MSG_ROWS || msg_type(m) == MSG_FETCH || msg_type(m) == MSG_STREAM ||
            msg_type(m) == MSG_DESCRIBE || msg_type(m) == MSG_SPLIT || msg_type(m) == MSG_FOLLOW ||
            msg_type(m) == MSG_KEYS || msg_type(m) == MSG_UNFOLLOW || msg_type(m) == MSG_LAG;
        if (!quick) {
            msg_free(m);
            deferred *d = malloc(sizeof *d + zmq_msg_size(&in));
            if (d) { /* out of memory: the coordinator re-issues after a timeout */
                d->next = NULL;
                d->len = zmq_msg_size(&in);
                memcpy(d->data, zmq_msg_data(&in), d->len);
                *w->deferred_tail = d;
                w->deferred_tail = &d->next;
            }
            zmq_msg_close(&in);
            continue;
        }
        zmq_msg_close(&in);
        handle(w, m, &e, NULL);
    }
    w->in_busy_tick = 0;
}

int wk_run(wk *w, sl_err *err)
{
    if (send_hello(w, MSG_HELLO, err))
        return -1;
    for (;;) {
        if (w->deferred) {
            deferred *d = w->deferred;
            w->deferred = d->next;
            if (!w->deferred)
                w->deferred_tail = &w->deferred;
            sl_err e = {0};
            msg *m = msg_decode(d->data, d->len, &e);
            free(d);
            int r = handle(w, m, &e, err);
            if (r)
                return r > 0 ? 0 : -1;
            continue;
        }
        zmq_pollitem_t it = {w->sock, 0, ZMQ_POLLIN, 0};
        int wait = w->heartbeat_ms > 0 ? w->heartbeat_ms : -1;
        if (w->stop && (wait < 0 || wait > 200))
            wait = 200;
        int pr = zmq_poll(&it, 1, wait);
        if (w->stop && *w->stop)
            return 0; /* between tasks: the current one was finished and answered */
        if (pr < 0 && zmq_errno() != EINTR)
            return sl_err_set(err, "worker socket: %s", zmq_strerror(zmq_errno()));
        tick(w);
        if (pr <= 0)
            continue;
        zmq_msg_t in;
        zmq_msg_init(&in);
        if (zmq_msg_recv(&in, w->sock, 0) < 0) {
            zmq_msg_close(&in);
            if (zmq_errno() == EINTR)
                continue;
            return sl_err_set(err, "worker socket: %s", zmq_strerror(zmq_errno()));
        }
        sl_err e = {0};
        msg *m = msg_decode(zmq_msg_data(&in), zmq_msg_size(&in), &e);
        zmq_msg_close(&in);
        int r = handle(w, m, &e, err);
        if (r)
            return r > 0 ? 0 : -1;
    }
}
