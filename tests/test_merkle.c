/* Content-defined Merkle trees: random row sets with random inserts,
 * deletes and updates; the spans mk_diff reports cover exactly the mutated
 * keys, and the tree stays within its memory bound. SEED=n replays a run. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../merkle/enc.h"
#include "../merkle/mk_diff.h"
#include "tap.h"

typedef struct row {
    uint8_t key[9];
    uint8_t hash[16];
} row;

typedef struct side {
    row *rows;
    size_t n;
    mk_tree *tree;
} side;

typedef struct ctx {
    side *s[2];
    int found[200000]; /* key ids reported differing */
    size_t nspans, span_rows;
} ctx;

static void mkkey(uint8_t k[9], int64_t id)
{
    sl_buf b = {0};
    sl_err e = {0};
    enc_val v = {.kind = ENC_V_INT, .i = id};
    enc_key(&b, ENC_INT, &v, &e);
    memcpy(k, b.p, 9);
    sl_buf_free(&b);
}

static int64_t keyid(const uint8_t k[9])
{
    enc_val v;
    sl_buf s = {0};
    sl_err e = {0};
    enc_key_decode(k, 9, 1, &s, &v, &e);
    sl_buf_free(&s);
    return v.i;
}

static void mkhash(uint8_t h[16], int64_t id, int version)
{
    int64_t x[2] = {id, version};
    enc_hash(x, sizeof x, h);
}

static int children(void *c, int sd, const mk_node *parent, mk_nodelist *out, sl_err *err)
{
    ctx *x = c;
    return mk_tree_children(x->s[sd]->tree, parent->level, parent->index, out, err);
}

static int span(void *c, const mk_bound *lo, const mk_bound *hi, sl_err *err)
{
    (void)err;
    ctx *x = c;
    x->nspans++;
    /* merge the two sides' rows inside the span */
    side *a = x->s[0], *b = x->s[1];
    size_t i = 0, j = 0;
    for (;;) {
        while (i < a->n && !mk_bound_contains(lo, hi, a->rows[i].key, 9))
            i++;
        while (j < b->n && !mk_bound_contains(lo, hi, b->rows[j].key, 9))
            j++;
        if (i >= a->n && j >= b->n)
            break;
        x->span_rows++;
        int c = i >= a->n ? 1 : j >= b->n ? -1 : memcmp(a->rows[i].key, b->rows[j].key, 9);
        if (c < 0) {
            x->found[keyid(a->rows[i].key)] = 1;
            i++;
        } else if (c > 0) {
            x->found[keyid(b->rows[j].key)] = 1;
            j++;
        } else {
            if (memcmp(a->rows[i].hash, b->rows[j].hash, 16))
                x->found[keyid(a->rows[i].key)] = 1;
            i++;
            j++;
        }
    }
    return 0;
}

static void build(side *s, unsigned bits)
{
    sl_err e = {0};
    s->tree = mk_tree_new(bits);
    for (size_t i = 0; i < s->n; i++)
        mk_tree_add_row(s->tree, s->rows[i].key, 9, s->rows[i].hash, &e);
    mk_tree_finish(s->tree, &e);
}

int main(void)
{
    unsigned seed = getenv("SEED") ? (unsigned)atoi(getenv("SEED")) : (unsigned)time(NULL);
    printf("# seed %u (SEED=%u replays)\n", seed, seed);
    srand(seed);
    static ctx c;
    int exact_all = 1, tiny_spans = 1;
    for (int round = 0; round < 60; round++) {
        int universe = 1 + rand() % (round < 50 ? 3000 : 100000);
        unsigned bits = round % 3 == 0 ? 2 : round % 3 == 1 ? 3 : 5;
        int *ver_a = calloc((size_t)universe, sizeof(int)),
            *ver_b = calloc((size_t)universe, sizeof(int));
        int pct = rand() % 100;
        for (int k = 0; k < universe; k++)
            ver_a[k] = ver_b[k] = rand() % 100 < pct ? 1 : 0;
        int nmut = round % 7 == 0 ? 0 : rand() % 20;
        memset(c.found, 0, sizeof c.found);
        int *mut = calloc((size_t)universe, sizeof(int));
        for (int m = 0; m < nmut; m++) {
            int k = rand() % universe;
            int kind = rand() % 3;
            if (kind == 0)
                ver_b[k] = ver_b[k] ? 0 : 1; /* delete or insert */
            else if (ver_b[k])
                ver_b[k] = ver_b[k] + 1; /* update */
            else
                ver_b[k] = 1;
            mut[k] = ver_a[k] != ver_b[k];
        }
        side sa = {0}, sb = {0};
        sa.rows = calloc((size_t)universe, sizeof(row));
        sb.rows = calloc((size_t)universe, sizeof(row));
        for (int k = 0; k < universe; k++) {
            if (ver_a[k]) {
                mkkey(sa.rows[sa.n].key, k);
                mkhash(sa.rows[sa.n++].hash, k, ver_a[k]);
            }
            if (ver_b[k]) {
                mkkey(sb.rows[sb.n].key, k);
                mkhash(sb.rows[sb.n++].hash, k, ver_b[k]);
            }
        }
        build(&sa, bits);
        build(&sb, bits);
        c.s[0] = &sa;
        c.s[1] = &sb;
        c.nspans = c.span_rows = 0;
        mk_nodelist ra = {0}, rb = {0};
        sl_err e = {0};
        mk_tree_root(sa.tree, &ra, &e);
        mk_tree_root(sb.tree, &rb, &e);
        mk_bound lo = {MK_UNBOUNDED, 0, 0}, hi = {MK_UNBOUNDED, 0, 0};
        mk_diff(&ra, &rb, &lo, &hi, children, span, &c, &e);
        int exact = 1, nm = 0;
        for (int k = 0; k < universe; k++) {
            nm += mut[k];
            if (mut[k] != c.found[k]) {
                exact = 0;
                printf("# round %d: key %d mutated=%d reported=%d\n", round, k, mut[k], c.found[k]);
            }
        }
        if (!exact)
            exact_all = 0;
        /* the drill-down must read far fewer rows than the table when few differ */
        if (universe > 20000 && nm > 0 && nm < 10 && c.span_rows > (size_t)nm * 64 * 8) {
            tiny_spans = 0;
            printf("# round %d: %zu rows read in spans for %d mutations\n", round, c.span_rows, nm);
        }
        if (nm == 0 && c.nspans != 0) {
            exact_all = 0;
            printf("# round %d: identical trees reported %zu spans\n", round, c.nspans);
        }
        mk_nodelist_free(&ra);
        mk_nodelist_free(&rb);
        mk_tree_free(sa.tree);
        mk_tree_free(sb.tree);
        free(sa.rows);
        free(sb.rows);
        free(ver_a);
        free(ver_b);
        free(mut);
    }
    ok(exact_all, "60 random rounds: reported keys are exactly the mutated keys");
    ok(tiny_spans, "spans stay near the mutated keys (rows read bounded by leaves touched)");

    /* equal data built twice gives equal roots; one changed row changes the root */
    {
        side a = {0}, b = {0};
        a.rows = calloc(1000, sizeof(row));
        b.rows = calloc(1000, sizeof(row));
        for (int k = 0; k < 1000; k++) {
            mkkey(a.rows[k].key, k);
            mkhash(a.rows[k].hash, k, 1);
            b.rows[k] = a.rows[k];
        }
        a.n = b.n = 1000;
        build(&a, 0);
        mkhash(b.rows[500].hash, 500, 2);
        build(&b, 0);
        mk_nodelist ra = {0}, rb = {0};
        sl_err e = {0};
        mk_tree_root(a.tree, &ra, &e);
        mk_tree_root(b.tree, &rb, &e);
        ok(ra.n == 1 && rb.n == 1 && memcmp(ra.v[0].hash, rb.v[0].hash, 16) != 0,
           "one changed row changes the root");
        ok(ra.v[0].rows == 1000, "root counts 1000 rows (got %llu)",
           (unsigned long long)ra.v[0].rows);
        mk_nodelist_free(&ra);
        mk_nodelist_free(&rb);
        /* out-of-order rows are refused */
        mk_tree *t = mk_tree_new(0);
        ok(mk_tree_add_row(t, a.rows[5].key, 9, a.rows[5].hash, &e) == 0 &&
               mk_tree_add_row(t, a.rows[4].key, 9, a.rows[4].hash, &e) != 0,
           "rows out of key order are refused: %s", e.msg);
        mk_tree_free(t);
        mk_tree_free(a.tree);
        mk_tree_free(b.tree);
        free(a.rows);
        free(b.rows);
    }
    /* memory bound: about rows / 2^bits leaf records */
    {
        mk_tree *t = mk_tree_new(0);
        sl_err e = {0};
        uint8_t k[9], h[16];
        for (int i = 0; i < 500000; i++) {
            mkkey(k, i);
            mkhash(h, i, 1);
            mk_tree_add_row(t, k, 9, h, &e);
        }
        mk_tree_finish(t, &e);
        size_t mem = mk_tree_memory(t);
        ok(mem < 500000 / 32 * 2 * 64 + 65536, "500k-row tree holds %zu bytes (< 64 B per 16 rows)",
           mem);
        mk_tree_free(t);
    }
    {
        /* kept rows: every row (key and hash) in order, found by seek with
         * each end's inclusiveness, and the same root as a tree without
         * them; past their bound they are all dropped (memory back down) */
        sl_err e = {0};
        mk_tree *t = mk_tree_new(0), *plain = mk_tree_new(0), *small = mk_tree_new(0);
        mk_tree_keep_rows(t, 16u << 20);
        mk_tree_keep_rows(small, 20000 * 29 - 1);
        uint8_t k[9], h[16];
        for (int i = 0; i < 20000; i++) {
            mkkey(k, 3 * i); /* keys 0, 3, 6, ...: seeks between keys too */
            mkhash(h, i, 1);
            mk_tree_add_row(t, k, 9, h, &e);
            mk_tree_add_row(plain, k, 9, h, &e);
            mk_tree_add_row(small, k, 9, h, &e);
        }
        mk_tree_finish(t, &e);
        mk_tree_finish(plain, &e);
        mk_tree_finish(small, &e);
        int all = mk_tree_has_rows(t) && mk_tree_rows(t) == 20000;
        for (int i = 0; all && i < 20000; i++) {
            const uint8_t *key, *hash;
            size_t kl;
            mk_tree_row(t, (uint64_t)i, &key, &kl, &hash);
            mkkey(k, 3 * i);
            mkhash(h, i, 1);
            all = kl == 9 && !memcmp(key, k, 9) && !memcmp(hash, h, 16);
        }
        ok(all, "a tree keeps its 20,000 rows' keys and hashes in order");
        int seeks = 1;
        for (int q = -1; q < 60003 && seeks; q += 7) {
            mkkey(k, q < 0 ? 0 : q);
            uint64_t at = mk_tree_row_seek(t, k, 9, 0), after = mk_tree_row_seek(t, k, 9, 1);
            int64_t qq = q < 0 ? 0 : q;
            uint64_t want = (uint64_t)((qq + 2) / 3), want_after = (uint64_t)(qq / 3 + 1);
            if (want > 20000)
                want = 20000;
            if (want_after > 20000)
                want_after = 20000;
            seeks = at == want && after == want_after;
        }
        ok(seeks, "seek finds the first row at or above (after: above) a key, between keys too");
        mk_nodelist r1 = {0}, r2 = {0};
        mk_tree_root(t, &r1, &e);
        mk_tree_root(plain, &r2, &e);
        ok(r1.n == 1 && r2.n == 1 && !memcmp(r1.v[0].hash, r2.v[0].hash, 16),
           "keeping rows leaves the tree's hashes as they are");
        size_t rm = mk_tree_rows_memory(t);
        ok(rm >= 20000 * 29 && rm <= 20000 * 29 + 64, "kept rows cut to size: %zu bytes", rm);
        ok(!mk_tree_has_rows(small) && mk_tree_rows_memory(small) == 0 &&
               mk_tree_memory(small) < mk_tree_memory(t),
           "rows past their bound are dropped, all of them");
        ok(!mk_tree_has_rows(plain), "a tree keeps no rows unless asked");
        mk_nodelist_free(&r1);
        mk_nodelist_free(&r2);
        mk_tree_free(t);
        mk_tree_free(plain);
        mk_tree_free(small);
    }
    {
        /* the tree hash is a format: a worker of another build must agree.
         * 5000 rows (every 7th key 70 bytes long), root pinned as of v1. */
        sl_err e = {0};
        mk_tree *t = mk_tree_new(0);
        int okrows = 1;
        for (int i = 0; i < 5000; i++) {
            uint8_t key[80] = {0x10}, h[16];
            for (int b = 0; b < 8; b++)
                key[1 + b] = (uint8_t)(((uint64_t)i >> (8 * (7 - b))) & 0xff);
            for (int b = 0; b < 16; b++)
                h[b] = (uint8_t)(i * 31 + b);
            okrows &= mk_tree_add_row(t, key, i % 7 == 0 ? 70 : 9, h, &e) == 0;
        }
        mk_nodelist l = {0};
        char hex[33];
        okrows &= mk_tree_finish(t, &e) == 0 && mk_tree_root(t, &l, &e) == 0 && l.n == 1;
        for (int b = 0; okrows && b < 16; b++)
            snprintf(hex + 2 * b, 3, "%02x", l.v[0].hash[b]);
        ok(okrows && strcmp(hex, "dbd45f883aa9c951a8e3ee1ad3a79160") == 0,
           "tree hash format unchanged (root %s)", okrows ? hex : "?");
        mk_nodelist_free(&l);
        mk_tree_free(t);
    }
    return done_testing();
}
