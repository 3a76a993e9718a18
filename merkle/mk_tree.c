#include "mk_tree.h"

#include <stdlib.h>
#include <string.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack/inline */
#include <xxhash.h>

#define MK_MAX_LEVELS 13

/* A closed node. Keys live in the tree's arena at koff. */
typedef struct stored {
    uint8_t hash[16];
    uint64_t rows;
    uint64_t koff;
    uint32_t klen, first_child, nchild;
} stored;

/* The node being filled at one level. */
typedef struct open_node {
    XXH3_state_t st;
    uint64_t rows;
    uint32_t first_child, nchild;
} open_node;

typedef struct level {
    stored *v;
    size_t n, cap;
} level;

struct mk_tree {
    unsigned bits;
    int finished;
    int root_level; /* -1: empty */
    level lv[MK_MAX_LEVELS];
    open_node open[MK_MAX_LEVELS];
    sl_buf leaf;    /* the open leaf's bytes, hashed at once when it closes */
    sl_buf arena;   /* node keys */
    sl_buf lastkey; /* key of the previous row */
    uint64_t rows;
    /* kept rows (mk_tree_keep_rows): [key][hash] each, row i at roff[i] */
    int keep;
    size_t keep_max;
    sl_buf kept;
    uint32_t *roff;
    size_t roff_cap;
};

int mk_nodelist_add(mk_nodelist *l, uint32_t level, uint32_t index, const uint8_t hash[16],
                    uint64_t rows, const uint8_t *key, size_t klen)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        mk_node *v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    mk_node *nd = &l->v[l->n];
    nd->level = level;
    nd->index = index;
    memcpy(nd->hash, hash, 16);
    nd->rows = rows;
    nd->koff = l->keys.len;
    nd->klen = klen;
    if (sl_buf_append(&l->keys, key, klen) != 0)
        return -1;
    l->n++;
    return 0;
}

void mk_nodelist_reset(mk_nodelist *l)
{
    l->n = 0;
    sl_buf_reset(&l->keys);
}

void mk_nodelist_free(mk_nodelist *l)
{
    free(l->v);
    sl_buf_free(&l->keys);
    memset(l, 0, sizeof *l);
}

static void open_reset(mk_tree *t, int l)
{
    open_node *o = &t->open[l];
    uint8_t lvl = (uint8_t)l;
    if (l == 0) { /* leaves: rows buffered, one hash call per leaf */
        t->leaf.len = 0;
        sl_buf_putc(&t->leaf, lvl); /* the first reserve: mk_tree_new checks it */
    } else {
        XXH3_128bits_reset(&o->st);
        XXH3_128bits_update(&o->st, &lvl, 1);
    }
    o->rows = 0;
    o->nchild = 0;
    o->first_child = 0;
}

mk_tree *mk_tree_new(unsigned bits)
{
    mk_tree *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->bits = bits ? bits : MK_DEFAULT_BITS;
    t->root_level = -1;
    for (int l = 0; l < MK_MAX_LEVELS; l++)
        open_reset(t, l);
    if (t->leaf.len != 1) {
        mk_tree_free(t);
        return NULL;
    }
    return t;
}

void mk_tree_free(mk_tree *t)
{
    if (!t)
        return;
    for (int l = 0; l < MK_MAX_LEVELS; l++)
        free(t->lv[l].v);
    sl_buf_free(&t->arena);
    sl_buf_free(&t->lastkey);
    sl_buf_free(&t->leaf);
    sl_buf_free(&t->kept);
    free(t->roff);
    free(t);
}

void mk_tree_keep_rows(mk_tree *t, size_t max_bytes)
{
    t->keep = max_bytes > 0 && t->rows == 0;
    t->keep_max = max_bytes;
}

int mk_tree_has_rows(const mk_tree *t)
{
    return t->keep;
}

size_t mk_tree_rows_memory(const mk_tree *t)
{
    return t->kept.cap + t->roff_cap * sizeof *t->roff;
}

static void drop_rows(mk_tree *t)
{
    t->keep = 0;
    sl_buf_free(&t->kept);
    free(t->roff);
    t->roff = NULL;
    t->roff_cap = 0;
}

/* Keeps one row, or drops them all once they outgrow their bound (or
 * memory runs out: they are a shortcut, never needed). */
static void keep_row(mk_tree *t, const uint8_t *key, size_t klen, const uint8_t hash[16])
{
    if (t->rows == t->roff_cap) {
        size_t cap = t->roff_cap ? t->roff_cap * 2 : 1024;
        uint32_t *v = realloc(t->roff, cap * sizeof *v);
        if (!v) {
            drop_rows(t);
            return;
        }
        t->roff = v;
        t->roff_cap = cap;
    }
    if (t->kept.len + klen + 16 > UINT32_MAX || sl_buf_append(&t->kept, key, klen) ||
        sl_buf_append(&t->kept, hash, 16)) {
        drop_rows(t);
        return;
    }
    t->roff[t->rows] = (uint32_t)(t->kept.len - klen - 16);
    /* the bytes the rows take once cut to size (mk_tree_finish): while the
     * tree grows, its buffers may be up to twice that */
    if (t->kept.len + (t->rows + 1) * sizeof *t->roff > t->keep_max)
        drop_rows(t);
}

void mk_tree_row(const mk_tree *t, uint64_t i, const uint8_t **key, size_t *klen,
                 const uint8_t **hash)
{
    size_t off = t->roff[i], end = i + 1 < t->rows ? t->roff[i + 1] : t->kept.len;
    *key = t->kept.p + off;
    *klen = end - off - 16;
    *hash = t->kept.p + end - 16;
}

uint64_t mk_tree_row_seek(const mk_tree *t, const uint8_t *key, size_t klen, int after)
{
    uint64_t lo = 0, hi = t->rows;
    while (lo < hi) { /* the first row not below key (after: above it) */
        uint64_t mid = lo + (hi - lo) / 2;
        const uint8_t *k, *h;
        size_t kl;
        mk_tree_row(t, mid, &k, &kl, &h);
        int c = mk_key_cmp(k, kl, key, klen);
        if (c < 0 || (after && c == 0))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* A child as its parent's hash covers it: key length (4 bytes, big-endian),
 * key, hash, rows (8 bytes, big-endian). */
static void put_child(sl_buf *b, const uint8_t *key, size_t klen, const uint8_t hash[16],
                      uint64_t rows)
{
    uint8_t *o = b->p + b->len;
    *o++ = (uint8_t)(klen >> 24);
    *o++ = (uint8_t)(klen >> 16);
    *o++ = (uint8_t)(klen >> 8);
    *o++ = (uint8_t)klen;
    memcpy(o, key, klen);
    o += klen;
    memcpy(o, hash, 16);
    o += 16;
    for (int i = 7; i >= 0; i--, rows >>= 8)
        o[i] = (uint8_t)rows;
    b->len += 28 + klen;
}

static int hash_child(XXH3_state_t *st, const uint8_t *key, size_t klen, const uint8_t hash[16],
                      uint64_t rows)
{
    uint8_t rec[28 + 64];
    if (klen <= 64) { /* one update: each call costs more than the bytes it hashes */
        sl_buf b = {rec, 0, sizeof rec};
        put_child(&b, key, klen, hash, rows);
        XXH3_128bits_update(st, rec, b.len);
        return 0;
    }
    sl_buf b = {0};
    if (sl_buf_reserve(&b, 28 + klen))
        return -1;
    put_child(&b, key, klen, hash, rows);
    XXH3_128bits_update(st, b.p, b.len);
    sl_buf_free(&b);
    return 0;
}

static int boundary_height(const mk_tree *t, const uint8_t *key, size_t klen)
{
    uint64_t h = XXH3_64bits(key, klen);
    uint64_t mask = (1ULL << t->bits) - 1;
    int height = 0;
    while ((h & mask) == 0 && height < MK_MAX_LEVELS - 2) {
        height++;
        h >>= t->bits;
    }
    return height;
}

/* Closes the open node at level l, ending at key, and feeds it to l + 1. */
static int close_level(mk_tree *t, int l, const uint8_t *key, size_t klen)
{
    open_node *o = &t->open[l];
    level *lv = &t->lv[l];
    if (lv->n == lv->cap) {
        size_t cap = lv->cap ? lv->cap * 2 : 16;
        stored *v = realloc(lv->v, cap * sizeof *v);
        if (!v)
            return -1;
        lv->v = v;
        lv->cap = cap;
    }
    stored *s = &lv->v[lv->n];
    XXH128_hash_t h = l == 0 ? XXH3_128bits(t->leaf.p, t->leaf.len) : XXH3_128bits_digest(&o->st);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    memcpy(s->hash, c.digest, 16);
    s->rows = o->rows;
    s->koff = t->arena.len;
    s->klen = (uint32_t)klen;
    s->first_child = o->first_child;
    s->nchild = o->nchild;
    if (sl_buf_append(&t->arena, key, klen) != 0)
        return -1;
    uint32_t idx = (uint32_t)lv->n++;
    open_reset(t, l);
    if (l + 1 < MK_MAX_LEVELS) {
        open_node *up = &t->open[l + 1];
        if (up->nchild == 0)
            up->first_child = idx;
        up->nchild++;
        up->rows += s->rows;
        if (hash_child(&up->st, key, klen, s->hash, s->rows))
            return -1;
    }
    return 0;
}

int mk_key_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    size_t m = al < bl ? al : bl;
    int c = m ? memcmp(a, b, m) : 0;
    return c ? c : (al < bl ? -1 : al > bl);
}

int mk_tree_add_row(mk_tree *t, const uint8_t *key, size_t klen, const uint8_t rowhash[16],
                    sl_err *err)
{
    if (t->finished)
        return sl_err_set(err, "row added to a finished tree");
    if (t->rows > 0 && mk_key_cmp(t->lastkey.p, t->lastkey.len, key, klen) >= 0)
        return sl_err_setc(err, SL_INVALID,
                           "rows arrived out of key order or with a duplicate key; the "
                           "database's key order must match byte order (text keys need "
                           "a binary collation)");
    sl_buf_reset(&t->lastkey);
    if (sl_buf_append(&t->lastkey, key, klen) != 0)
        return sl_err_set(err, "out of memory");
    open_node *o = &t->open[0];
    o->nchild++;
    o->rows++;
    if (sl_buf_reserve(&t->leaf, 28 + klen) != 0)
        return sl_err_set(err, "out of memory");
    put_child(&t->leaf, key, klen, rowhash, 1);
    if (t->keep)
        keep_row(t, key, klen, rowhash);
    t->rows++;
    int h = boundary_height(t, key, klen);
    for (int l = 0; l < h; l++)
        if (close_level(t, l, key, klen) != 0)
            return sl_err_set(err, "out of memory");
    return 0;
}

/* The kept rows' buffers cut to their size: they grew by doubling, and
 * a finished tree is held until the coordinator has compared it. */
static void rows_shrink(mk_tree *t)
{
    if (!t->keep || t->rows == 0)
        return;
    uint8_t *p = realloc(t->kept.p, t->kept.len);
    uint32_t *v = realloc(t->roff, t->rows * sizeof *v);
    if (p) {
        t->kept.p = p;
        t->kept.cap = t->kept.len;
    }
    if (v) {
        t->roff = v;
        t->roff_cap = t->rows;
    }
}

int mk_tree_finish(mk_tree *t, sl_err *err)
{
    if (t->finished)
        return 0;
    t->finished = 1;
    rows_shrink(t);
    if (t->rows == 0)
        return 0;
    for (int l = 0; l < MK_MAX_LEVELS - 1; l++) {
        if (t->open[l].nchild > 0 && close_level(t, l, t->lastkey.p, t->lastkey.len) != 0)
            return sl_err_set(err, "out of memory");
        if (t->lv[l].n == 1) {
            t->root_level = l;
            return 0;
        }
    }
    return sl_err_set(err, "merkle tree grew past %d levels", MK_MAX_LEVELS);
}

static int add_stored(const mk_tree *t, int l, uint32_t i, mk_nodelist *out)
{
    const stored *s = &t->lv[l].v[i];
    return mk_nodelist_add(out, (uint32_t)l, i, s->hash, s->rows, t->arena.p + s->koff, s->klen);
}

int mk_tree_root(const mk_tree *t, mk_nodelist *out, sl_err *err)
{
    if (!t->finished)
        return sl_err_set(err, "tree is not finished");
    if (t->root_level < 0)
        return 0;
    return add_stored(t, t->root_level, 0, out) ? sl_err_set(err, "out of memory") : 0;
}

int mk_tree_children(const mk_tree *t, uint32_t level, uint32_t index, mk_nodelist *out,
                     sl_err *err)
{
    if (!t->finished || t->root_level < 0 || level == 0 || (int)level > t->root_level ||
        index >= t->lv[level].n)
        return sl_err_setc(err, SL_INVALID, "no node at level %u index %u", level, index);
    const stored *s = &t->lv[level].v[index];
    for (uint32_t k = 0; k < s->nchild; k++)
        if (add_stored(t, (int)level - 1, s->first_child + k, out) != 0)
            return sl_err_set(err, "out of memory");
    return 0;
}

uint64_t mk_tree_rows(const mk_tree *t)
{
    return t->rows;
}

size_t mk_tree_memory(const mk_tree *t)
{
    size_t m = sizeof *t + t->arena.cap + t->lastkey.cap + t->leaf.cap + mk_tree_rows_memory(t);
    for (int l = 0; l < MK_MAX_LEVELS; l++)
        m += t->lv[l].cap * sizeof(stored);
    return m;
}
