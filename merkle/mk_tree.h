/* mk_tree: a content-defined Merkle tree over key-ordered rows, built in one
 * streaming pass.
 *
 * Invariants:
 *  - Rows arrive in strictly increasing memcmp order of their encoded keys
 *    (mk_tree_add_row rejects anything else: a database whose order differs
 *    from the encoding's would otherwise give wrong answers silently).
 *  - A key's boundary height h is the number of trailing zero groups of
 *    `bits` bits in XXH3-64(key). A row with h >= 1 ends its leaf; a level-l
 *    node ends at a key with h >= l + 1. Heights nest, so a key that ends a
 *    node at level l ends one at every level below, and two trees over
 *    overlapping data cut at the same keys without talking to each other.
 *  - A node covers the keys after the previous node's last key up to and
 *    including its own last key (ukey). Its hash covers its level and, for
 *    each child (row or node), the child's key, hash and row count.
 *  - Memory is one small record per node: about rows / 2^bits leaves plus a
 *    geometric tail above. Ranges are sized by the coordinator, so this is
 *    bounded by the range size, never by the table size.
 */
#ifndef MK_TREE_H
#define MK_TREE_H

#include <stddef.h>
#include <stdint.h>

#include "../base/sl.h"

#define MK_DEFAULT_BITS 5

typedef struct mk_tree mk_tree;

/* A node as seen from outside a tree. Its key lives in the mk_nodelist that
 * holds it (koff/klen index the list's keys buffer). */
typedef struct mk_node {
    uint32_t level, index;
    uint8_t hash[16];
    uint64_t rows;
    size_t koff, klen;
} mk_node;

/* A list of nodes with their keys; zero-initialise, then mk_nodelist_free. */
typedef struct mk_nodelist {
    mk_node *v;
    size_t n, cap;
    sl_buf keys;
} mk_nodelist;

int mk_nodelist_add(mk_nodelist *l, uint32_t level, uint32_t index, const uint8_t hash[16],
                    uint64_t rows, const uint8_t *key, size_t klen);
static inline const uint8_t *mk_nodelist_key(const mk_nodelist *l, size_t i)
{
    return l->keys.p + l->v[i].koff;
}
void mk_nodelist_reset(mk_nodelist *l);
void mk_nodelist_free(mk_nodelist *l);

/* bits: boundary bits per level (fan-out about 2^bits); 0 means the default.
 * Returns NULL when memory runs out. */
mk_tree *mk_tree_new(unsigned bits);
void mk_tree_free(mk_tree *t);

/* Adds one row: its encoded key and the 16-byte hash of its encoded row. */
/* The order of encoded keys: memcmp, a prefix first. <0, 0 or >0. */
int mk_key_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl);

int mk_tree_add_row(mk_tree *t, const uint8_t *key, size_t klen, const uint8_t rowhash[16],
                    sl_err *err);

/* Closes the open nodes and fixes the root. No rows may be added after. */
int mk_tree_finish(mk_tree *t, sl_err *err);

/* Appends the root to out: nothing for an empty tree, else one node. */
int mk_tree_root(const mk_tree *t, mk_nodelist *out, sl_err *err);

/* Appends the children of node (level, index), level >= 1, to out. */
int mk_tree_children(const mk_tree *t, uint32_t level, uint32_t index, mk_nodelist *out,
                     sl_err *err);

uint64_t mk_tree_rows(const mk_tree *t);

/* Leaf rows kept in memory: with mk_tree_keep_rows (before the first row)
 * the tree also keeps every row's key and hash, so a span's rows can be
 * listed without reading the database again. Bounded: once they would take
 * more than max_bytes (key, hash and a 4-byte offset a row, as held once
 * mk_tree_finish has cut the buffers to size; while the tree is built they
 * grow by doubling, so up to twice that) they are all dropped (and
 * mk_tree_has_rows says 0), so memory stays within the bound whatever the
 * range holds. */
void mk_tree_keep_rows(mk_tree *t, size_t max_bytes);
int mk_tree_has_rows(const mk_tree *t);
/* Bytes the kept rows take (0 when none are kept). */
size_t mk_tree_rows_memory(const mk_tree *t);
/* The index of the first kept row whose key is at least (after: above)
 * key; mk_tree_rows(t) when there is none. */
uint64_t mk_tree_row_seek(const mk_tree *t, const uint8_t *key, size_t klen, int after);
/* Kept row i (i < mk_tree_rows): its key and 16-byte hash, pointing into
 * the tree. */
void mk_tree_row(const mk_tree *t, uint64_t i, const uint8_t **key, size_t *klen,
                 const uint8_t **hash);

/* Bytes held by the tree, for tests and benchmarks of the memory bound. */
size_t mk_tree_memory(const mk_tree *t);

#endif
