#include "mk_diff.h"

#include <string.h>

/* Orders two upper bounds: unbounded is +inf; EXCL k sits just below INCL k. */
static int ub_cmp(const mk_bound *x, const mk_bound *y)
{
    if (x->kind == MK_UNBOUNDED || y->kind == MK_UNBOUNDED)
        return (x->kind == MK_UNBOUNDED) - (y->kind == MK_UNBOUNDED);
    int c = mk_key_cmp(x->key, x->len, y->key, y->len);
    if (c)
        return c;
    return (x->kind == MK_INCL) - (y->kind == MK_INCL);
}

int mk_bound_contains(const mk_bound *lo, const mk_bound *hi, const uint8_t *key, size_t len)
{
    if (lo->kind != MK_UNBOUNDED) {
        int c = mk_key_cmp(key, len, lo->key, lo->len);
        if (c < 0 || (c == 0 && lo->kind == MK_EXCL))
            return 0;
    }
    if (hi->kind != MK_UNBOUNDED) {
        int c = mk_key_cmp(key, len, hi->key, hi->len);
        if (c > 0 || (c == 0 && hi->kind == MK_EXCL))
            return 0;
    }
    return 1;
}

typedef struct dctx {
    mk_children_fn children;
    mk_span_fn span;
    void *ctx;
    sl_err *err;
} dctx;

/* The upper bound of node i of a list: its last key, except for the list's
 * last node, which reaches the list's own upper bound. */
static mk_bound node_ub(const mk_nodelist *l, size_t i, const mk_bound *hi)
{
    if (i + 1 == l->n)
        return *hi;
    mk_bound b = {MK_INCL, mk_nodelist_key(l, i), l->v[i].klen};
    return b;
}

static int diff_lists(dctx *d, const mk_nodelist *a, const mk_nodelist *b, const mk_bound *lo,
                      const mk_bound *hi);

/* Whether l[first..] are children that cover exactly the span of parent
 * (key pkey), which starts after lo or after l[first - 1]'s key. */
static int children_cover(const mk_nodelist *l, size_t first, const mk_node *parent,
                          const uint8_t *pkey, const mk_bound *lo)
{
    if (l->n == first)
        return 0;
    for (size_t k = first; k < l->n; k++) {
        const uint8_t *key = mk_nodelist_key(l, k);
        size_t len = l->v[k].klen;
        if (l->v[k].level + 1 != parent->level)
            return 0;
        if (k > first) {
            if (mk_key_cmp(mk_nodelist_key(l, k - 1), l->v[k - 1].klen, key, len) >= 0)
                return 0;
        } else if (first > 0) {
            if (mk_key_cmp(mk_nodelist_key(l, first - 1), l->v[first - 1].klen, key, len) >= 0)
                return 0;
        } else if (lo->kind != MK_UNBOUNDED) {
            int c = mk_key_cmp(key, len, lo->key, lo->len);
            if (c < 0 || (c == 0 && lo->kind == MK_EXCL))
                return 0;
        }
    }
    size_t last = l->n - 1;
    return mk_key_cmp(mk_nodelist_key(l, last), l->v[last].klen, pkey, parent->klen) == 0;
}

/* Nodes a[ia..ea] and b[jb..eb] end at the same key and differ: expand the
 * highest of them into their children and compare again, or, if all are
 * leaves, report the span. */
static int diff_segment(dctx *d, const mk_nodelist *a, size_t ia, size_t ea, const mk_nodelist *b,
                        size_t jb, size_t eb, const mk_bound *lo, const mk_bound *hi)
{
    uint32_t top = 0;
    for (size_t k = ia; k <= ea; k++)
        top = a->v[k].level > top ? a->v[k].level : top;
    for (size_t k = jb; k <= eb; k++)
        top = b->v[k].level > top ? b->v[k].level : top;
    if (top == 0)
        return d->span(d->ctx, lo, hi, d->err);
    mk_nodelist na = {0}, nb = {0};
    int rc = -1;
    const mk_nodelist *src[2] = {a, b};
    mk_nodelist *dst[2] = {&na, &nb};
    size_t from[2] = {ia, jb}, to[2] = {ea, eb};
    for (int s = 0; s < 2; s++) {
        for (size_t k = from[s]; k <= to[s]; k++) {
            const mk_node *nd = &src[s]->v[k];
            if (nd->level == top) {
                size_t first = dst[s]->n;
                if ((rc = d->children(d->ctx, s, nd, dst[s], d->err)) != 0)
                    goto done;
                if (!children_cover(dst[s], first, nd, mk_nodelist_key(src[s], k), lo)) {
                    sl_err_set(d->err, "the children of node (%u, %u) do not cover its span",
                               nd->level, nd->index);
                    rc = MK_BAD_CHILDREN + s;
                    goto done;
                }
            } else if (mk_nodelist_add(dst[s], nd->level, nd->index, nd->hash, nd->rows,
                                       mk_nodelist_key(src[s], k), nd->klen) != 0) {
                sl_err_set(d->err, "out of memory");
                goto done;
            }
        }
    }
    rc = diff_lists(d, &na, &nb, lo, hi);
done:
    mk_nodelist_free(&na);
    mk_nodelist_free(&nb);
    return rc;
}

static int diff_lists(dctx *d, const mk_nodelist *a, const mk_nodelist *b, const mk_bound *lo,
                      const mk_bound *hi)
{
    if (a->n == 0 && b->n == 0)
        return 0;
    if (a->n == 0 || b->n == 0)
        return d->span(d->ctx, lo, hi, d->err);
    size_t i = 0, j = 0, ia = 0, jb = 0;
    mk_bound seg_lo = *lo;
    while (i < a->n && j < b->n) {
        mk_bound ua = node_ub(a, i, hi), ub = node_ub(b, j, hi);
        int c = ub_cmp(&ua, &ub);
        if (c < 0) {
            i++;
            continue;
        }
        if (c > 0) {
            j++;
            continue;
        }
        int equal = ia == i && jb == j && memcmp(a->v[i].hash, b->v[j].hash, 16) == 0;
        int rc = equal ? 0 : diff_segment(d, a, ia, i, b, jb, j, &seg_lo, &ua);
        if (rc != 0)
            return rc; /* the callback's own code, so callers can tell causes apart */
        seg_lo.kind = MK_EXCL;
        seg_lo.key = ua.key;
        seg_lo.len = ua.len;
        ia = ++i;
        jb = ++j;
    }
    return 0;
}

int mk_diff(const mk_nodelist *a, const mk_nodelist *b, const mk_bound *lo, const mk_bound *hi,
            mk_children_fn children, mk_span_fn span, void *ctx, sl_err *err)
{
    dctx d = {children, span, ctx, err};
    return diff_lists(&d, a, b, lo, hi);
}
