/* mk_diff: compares two content-defined Merkle trees and yields the key
 * spans that differ.
 *
 * The trees may live anywhere: the caller supplies how to list a node's
 * children (from a local mk_tree, or by asking a worker over the network)
 * and what to do with a differing span (typically: fetch both sides' row
 * hashes in it and merge). Nodes are aligned by their last keys; a run of
 * nodes that ends at the same key on both sides is a segment; a segment of
 * one equal-hash node per side is equal; otherwise its highest nodes are
 * expanded until only leaves remain, and then its key span is reported.
 */
#ifndef MK_DIFF_H
#define MK_DIFF_H

#include "mk_tree.h"

enum { MK_UNBOUNDED = 0, MK_INCL, MK_EXCL };

/* One end of a key span. key points at an encoded key (not owned). */
typedef struct mk_bound {
    int kind;
    const uint8_t *key;
    size_t len;
} mk_bound;

/* Appends the children of parent (of tree side 0 = a, 1 = b) to out. */
typedef int (*mk_children_fn)(void *ctx, int side, const mk_node *parent, mk_nodelist *out,
                              sl_err *err);
/* Called once per differing span, in key order. */
typedef int (*mk_span_fn)(void *ctx, const mk_bound *lo, const mk_bound *hi, sl_err *err);

/* Compares two root lists (as from mk_tree_root) of trees built over the key
 * range [lo, hi). Returns 0, or the first non-zero return of a callback (as
 * it returned it), or -1 when memory runs out, or MK_BAD_CHILDREN + side
 * when the children listed for a node of that side do not cover exactly its
 * span (one level below it, keys rising strictly above the node before it,
 * the last at its own key): trees from elsewhere are checked, since the
 * comparison aligns nodes by key and would otherwise go astray. */
#define MK_BAD_CHILDREN (-100)
int mk_diff(const mk_nodelist *a, const mk_nodelist *b, const mk_bound *lo, const mk_bound *hi,
            mk_children_fn children, mk_span_fn span, void *ctx, sl_err *err);

/* Whether key lies inside [lo, hi] with each end's inclusiveness. */
int mk_bound_contains(const mk_bound *lo, const mk_bound *hi, const uint8_t *key, size_t len);

#endif
