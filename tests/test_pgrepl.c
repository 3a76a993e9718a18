/* pgrepl's decoder on crafted replication messages: every pgoutput message
 * kind decodes to the right keys and LSNs; every truncation of each, lying
 * lengths and counts, unknown relations and misplaced messages are refused
 * with a message and leave the decoder as it was; random corruption never
 * reads out of bounds (ASan). SEED=n replays the random part. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../connectors/pgrepl_impl.h"
#include "tap.h"

/* A message under construction. */
typedef struct mb {
    uint8_t p[4096];
    size_t n;
} mb;

static void put(mb *m, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--)
        m->p[m->n++] = (uint8_t)(v >> (8 * i));
}

static void puts_(mb *m, const char *s)
{
    size_t k = strlen(s) + 1;
    memcpy(m->p + m->n, s, k);
    m->n += k;
}

/* An XLogData frame: 'w', start, end, time, then the pgoutput message. */
static void xlog(mb *m, char type)
{
    m->n = 0;
    put(m, 'w', 1);
    put(m, 0x1000, 8);
    put(m, 0x2000, 8);
    put(m, 0, 8);
    put(m, (uint8_t)type, 1);
}

static void text_val(mb *m, const char *v)
{
    put(m, 't', 1);
    put(m, strlen(v), 4);
    memcpy(m->p + m->n, v, strlen(v));
    m->n += strlen(v);
}

/* begin of a transaction committing at lsn, xid 77, at 2000-01-01 + 1 s */
static void begin(mb *m, pr_lsn lsn)
{
    xlog(m, 'B');
    put(m, lsn, 8);
    put(m, 1000000, 8);
    put(m, 77, 4);
}

static void commit(mb *m, pr_lsn lsn, pr_lsn end)
{
    xlog(m, 'C');
    put(m, 0, 1);
    put(m, lsn, 8);
    put(m, end, 8);
    put(m, 1000000, 8);
}

/* relation 16384 public.t (a int key, b text, c text key), or, as id
 * 16385, "S"."two words" (id bigint key) */
static void relation(mb *m, int second)
{
    xlog(m, 'R');
    put(m, second ? 16385 : 16384, 4);
    puts_(m, second ? "S" : "public");
    puts_(m, second ? "two words" : "t");
    put(m, 'd', 1);
    if (second) {
        put(m, 1, 2);
        put(m, 1, 1), puts_(m, "id"), put(m, 20, 4), put(m, -1, 4);
        return;
    }
    put(m, 3, 2);
    put(m, 1, 1), puts_(m, "a"), put(m, 23, 4), put(m, -1, 4);
    put(m, 0, 1), puts_(m, "b"), put(m, 25, 4), put(m, -1, 4);
    put(m, 1, 1), puts_(m, "c"), put(m, 25, 4), put(m, -1, 4);
}

/* a TupleData of public.t: a, b, c ('u' for an unchanged TOAST c) */
static void tuple(mb *m, const char *a, const char *b, const char *c)
{
    put(m, 3, 2);
    text_val(m, a);
    if (b)
        text_val(m, b);
    else
        put(m, 'n', 1);
    if (c)
        text_val(m, c);
    else
        put(m, 'u', 1);
}

static void insert(mb *m, const char *a, const char *c)
{
    xlog(m, 'I');
    put(m, 16384, 4);
    put(m, 'N', 1);
    tuple(m, a, "row", c);
}

static int key_is(const pr_change *c, const char *k0, const char *k1)
{
    return c->nkey == 2 && c->key[0] && c->key[1] && !strcmp(c->key[0], k0) &&
           !strcmp(c->key[1], k1) && !strcmp(c->key_names[0], "a") &&
           !strcmp(c->key_names[1], "c") && !strcmp(c->schema, "public") && !strcmp(c->table, "t");
}

static int feed(pr_decoder *d, const mb *m, sl_err *e)
{
    memset(e, 0, sizeof *e);
    return pr_decode(d, m->p, m->n, NULL, e);
}

/* Every message kind, valid. */
static void test_valid(void)
{
    sl_err e = {0};
    mb m;
    pr_frame f;
    pr_decoder *d = pr_decoder_new();

    m.n = 0;
    put(&m, 'k', 1), put(&m, 0x1234567890ULL, 8), put(&m, 0, 8), put(&m, 1, 1);
    ok(pr_decode(d, m.p, m.n, &f, &e) == 0 && f.type == 'k' && f.wal_end == 0x1234567890ULL &&
           f.reply == 1,
       "a keepalive: WAL end and the reply request read, no change");

    relation(&m, 0);
    ok(feed(d, &m, &e) == 0, "a relation outside a transaction: no change %s", e.msg);
    relation(&m, 1);
    ok(feed(d, &m, &e) == 0, "a second relation %s", e.msg);
    begin(&m, 0x500000010ULL);
    ok(pr_decode(d, m.p, m.n, &f, &e) == 0 && pr_decoder_in_txn(d) && f.type == 'w' &&
           f.msg == 'B' && f.wal_start == 0x1000,
       "a begin opens a transaction %s", e.msg);

    insert(&m, "42", "x y");
    const pr_change *c;
    ok(feed(d, &m, &e) == 1 && (c = pr_decoded(d, 0))->kind == PR_INSERT &&
           key_is(c, "42", "x y") && !c->old_key && c->commit_lsn == 0x500000010ULL &&
           c->xid == 77 && c->commit_time_ms == 946684801000LL,
       "an insert: key (a, c) = (42, 'x y'), the begin's commit LSN, xid and time %s", e.msg);

    xlog(&m, 'U'), put(&m, 16384, 4), put(&m, 'N', 1), tuple(&m, "42", "new b", "x y");
    ok(feed(d, &m, &e) == 1 && (c = pr_decoded(d, 0))->kind == PR_UPDATE &&
           key_is(c, "42", "x y") && !c->old_key,
       "an update without an old key: the key, no old key %s", e.msg);

    xlog(&m, 'U'), put(&m, 16384, 4);
    put(&m, 'K', 1), put(&m, 3, 2), text_val(&m, "41"), put(&m, 'n', 1), text_val(&m, "old c");
    put(&m, 'N', 1), tuple(&m, "43", "b", "new c");
    ok(feed(d, &m, &e) == 1 && (c = pr_decoded(d, 0))->kind == PR_UPDATE &&
           key_is(c, "43", "new c") && c->old_key && !strcmp(c->old_key[0], "41") &&
           !strcmp(c->old_key[1], "old c"),
       "an update whose key changed: the new key and the old key %s", e.msg);

    xlog(&m, 'U'), put(&m, 16384, 4);
    put(&m, 'O', 1), tuple(&m, "7", "old b", "big toasted key");
    put(&m, 'N', 1), tuple(&m, "7", "new b", NULL);
    ok(feed(d, &m, &e) == 1 && key_is(pr_decoded(d, 0), "7", "big toasted key") &&
           !pr_decoded(d, 0)->old_key,
       "an unchanged-TOAST key value is taken from the old tuple; the key did not change %s",
       e.msg);

    xlog(&m, 'D'), put(&m, 16384, 4);
    put(&m, 'K', 1), put(&m, 3, 2), text_val(&m, "9"), put(&m, 'n', 1), put(&m, 'n', 1);
    ok(feed(d, &m, &e) == 1 && (c = pr_decoded(d, 0))->kind == PR_DELETE && c->nkey == 2 &&
           !strcmp(c->key[0], "9") && c->key[1] == NULL,
       "a delete: its old key, a NULL key value as a NULL pointer %s", e.msg);

    xlog(&m, 'D'), put(&m, 16385, 4), put(&m, 'K', 1), put(&m, 1, 2), text_val(&m, "-9");
    ok(feed(d, &m, &e) == 1 && (c = pr_decoded(d, 0))->nkey == 1 && !strcmp(c->key[0], "-9") &&
           !strcmp(c->schema, "S") && !strcmp(c->table, "two words") &&
           !strcmp(c->key_names[0], "id"),
       "a delete from the second relation %s", e.msg);

    xlog(&m, 'T'), put(&m, 2, 4), put(&m, 0, 1), put(&m, 16385, 4), put(&m, 16384, 4);
    ok(feed(d, &m, &e) == 2 && pr_decoded(d, 0)->kind == PR_TRUNCATE &&
           !strcmp(pr_decoded(d, 0)->table, "two words") && pr_decoded(d, 1)->kind == PR_TRUNCATE &&
           !strcmp(pr_decoded(d, 1)->table, "t") && pr_decoded(d, 1)->nkey == 0,
       "a truncate of two tables: two changes %s", e.msg);

    xlog(&m, 'Y'), put(&m, 90000, 4), puts_(&m, "public"), puts_(&m, "mood");
    ok(feed(d, &m, &e) == 0, "a type message: no change %s", e.msg);
    xlog(&m, 'O'), put(&m, 0x99, 8), puts_(&m, "origin1");
    ok(feed(d, &m, &e) == 0, "an origin message: no change %s", e.msg);
    xlog(&m, 'M'), put(&m, 1, 1), put(&m, 0x99, 8), puts_(&m, "pfx"), put(&m, 3, 4);
    memcpy(m.p + m.n, "abc", 3), m.n += 3;
    ok(feed(d, &m, &e) == 0, "a logical decoding message: no change %s", e.msg);

    commit(&m, 0x500000010ULL, 0x500000040ULL);
    ok(feed(d, &m, &e) == 1 && (c = pr_decoded(d, 0))->kind == PR_COMMIT &&
           c->commit_lsn == 0x500000010ULL && c->end_lsn == 0x500000040ULL && c->xid == 77 &&
           !pr_decoder_in_txn(d),
       "a commit: its commit and end LSN, the transaction closed %s", e.msg);

    /* a relation announced again (ALTER TABLE) replaces the old one */
    xlog(&m, 'R'), put(&m, 16385, 4), puts_(&m, "S"), puts_(&m, "renamed"), put(&m, 'd', 1);
    put(&m, 2, 2);
    put(&m, 0, 1), puts_(&m, "x"), put(&m, 23, 4), put(&m, -1, 4);
    put(&m, 1, 1), puts_(&m, "k2"), put(&m, 23, 4), put(&m, -1, 4);
    feed(d, &m, &e);
    begin(&m, 0x600000000ULL), feed(d, &m, &e);
    xlog(&m, 'I'), put(&m, 16385, 4), put(&m, 'N', 1), put(&m, 2, 2), text_val(&m, "x");
    text_val(&m, "5");
    ok(feed(d, &m, &e) == 1 && (c = pr_decoded(d, 0))->nkey == 1 && !strcmp(c->table, "renamed") &&
           !strcmp(c->key_names[0], "k2") && !strcmp(c->key[0], "5"),
       "a relation announced again replaces the old one %s", e.msg);
    pr_decoder_free(d);
}

/* A decoder at the start of a transaction, both relations known. */
static pr_decoder *ready(void)
{
    sl_err e = {0};
    mb m;
    pr_decoder *d = pr_decoder_new();
    relation(&m, 0), feed(d, &m, &e);
    relation(&m, 1), feed(d, &m, &e);
    begin(&m, 0x100), feed(d, &m, &e);
    return d;
}

/* Every valid message, cut at every length, is refused with a message and
 * leaves the decoder able to decode the whole one after. */
static void test_truncations(void)
{
    mb msgs[12];
    int n = 0;
    mb *m = msgs;
    m->n = 0, put(m, 'k', 1), put(m, 5, 8), put(m, 0, 8), put(m, 0, 1), m++;
    relation(m++, 0);
    relation(m++, 1);
    insert(m++, "1", "c");
    xlog(m, 'U'), put(m, 16384, 4), put(m, 'K', 1), put(m, 3, 2), text_val(m, "2"), put(m, 'n', 1);
    text_val(m, "c"), put(m, 'N', 1), tuple(m, "3", NULL, "d"), m++;
    xlog(m, 'D'), put(m, 16384, 4), put(m, 'O', 1), tuple(m, "1", "b", "c"), m++;
    xlog(m, 'T'), put(m, 1, 4), put(m, 2, 1), put(m, 16385, 4), m++;
    xlog(m, 'Y'), put(m, 9, 4), puts_(m, "s"), puts_(m, "ty"), m++;
    xlog(m, 'O'), put(m, 9, 8), puts_(m, "o"), m++;
    xlog(m, 'M'), put(m, 0, 1), put(m, 9, 8), puts_(m, "p"), put(m, 2, 4), put(m, 0x4142, 2), m++;
    commit(m++, 0x100, 0x200);
    n = (int)(m - msgs);

    int all_refused = 1, all_said = 1, whole_ok = 1, cuts = 0;
    for (int i = 0; i < n; i++) {
        pr_decoder *d = ready();
        for (size_t len = 0; len < msgs[i].n; len++) {
            sl_err e = {0};
            /* a copy of exactly len bytes, so ASan sees any read past it */
            uint8_t *cut = malloc(len ? len : 1);
            memcpy(cut, msgs[i].p, len);
            int r = pr_decode(d, cut, len, NULL, &e);
            free(cut);
            cuts++;
            if (r != -1) {
                all_refused = 0;
                printf("# message %d cut at %zu decoded: %d\n", i, len, r);
            }
            if (!e.msg[0] || e.code != SL_INTERNAL)
                all_said = 0;
        }
        sl_err e = {0};
        if (feed(d, &msgs[i], &e) < 0) {
            whole_ok = 0;
            printf("# message %d whole: %s\n", i, e.msg);
        }
        pr_decoder_free(d);
    }
    ok(all_refused, "each of %d valid messages cut at every length (%d cuts) is refused", n, cuts);
    ok(all_said, "each refusal says why, as SL_INTERNAL");
    ok(whole_ok, "after its cuts were refused, each whole message still decodes");

    /* and one byte more than the message is refused too */
    pr_decoder *d = ready();
    int extra = 1;
    for (int i = 0; i < n; i++) {
        sl_err e = {0};
        msgs[i].p[msgs[i].n++] = 0;
        extra &= feed(d, &msgs[i], &e) == -1 && strstr(e.msg, "left over") != NULL;
    }
    ok(extra, "a trailing byte after any message is refused");
    pr_decoder_free(d);
}

/* Lengths and counts that lie, and messages that do not fit the state. */
static void test_hostile(void)
{
    sl_err e;
    mb m;
    pr_decoder *d = ready();
    const char *s;

#define REFUSED(what, needle)                                                                      \
    ok(feed(d, &m, &e) == -1 && strstr(e.msg, needle) && e.code == SL_INTERNAL, what ": %s", e.msg)

    insert(&m, "1", "c");
    m.p[25 + 1 + 4 + 1 + 2 + 1 + 3] = 0xff; /* a's length: 0x000000ff... past the end */
    REFUSED("a value length past the end", "past the end");
    insert(&m, "1", "c");
    m.p[25 + 1 + 4 + 1 + 2 + 1] = 0xff; /* a's length: 0xff000001 */
    REFUSED("a value length of 4 GB", "past the end");

    xlog(&m, 'I'), put(&m, 16384, 4), put(&m, 'N', 1), put(&m, 4, 2);
    for (int i = 0; i < 4; i++)
        text_val(&m, "v");
    REFUSED("a tuple with more columns than its relation",
            "a tuple of 4 columns for a relation of 3");

    xlog(&m, 'I'), put(&m, 16384, 4), put(&m, 'N', 1), put(&m, 0xffff, 2);
    REFUSED("a tuple claiming 65535 columns", "a tuple of 65535 columns");

    xlog(&m, 'I'), put(&m, 16384, 4), put(&m, 'N', 1), put(&m, 2, 2), text_val(&m, "1");
    text_val(&m, "2");
    REFUSED("a tuple too short to hold the key", "lacks key column 3");

    xlog(&m, 'I'), put(&m, 99, 4), put(&m, 'N', 1), tuple(&m, "1", "b", "c");
    REFUSED("an unknown relation id", "relation id 99 was never announced");

    xlog(&m, 'I'), put(&m, 16384, 4), put(&m, 'N', 1), put(&m, 3, 2), text_val(&m, "1");
    put(&m, 'x', 1);
    REFUSED("an unknown column kind", "kind byte 0x78");

    xlog(&m, 'I'), put(&m, 16384, 4), put(&m, 'N', 1), put(&m, 3, 2), put(&m, 'b', 1);
    put(&m, 1, 4), put(&m, 1, 1), put(&m, 'n', 1), text_val(&m, "c");
    REFUSED("a binary key value", "binary");

    xlog(&m, 'I'), put(&m, 16384, 4), put(&m, 'N', 1), tuple(&m, "1", "b", NULL);
    REFUSED("an unchanged-TOAST key with no old key", "unchanged TOAST");

    xlog(&m, 'I'), put(&m, 16384, 4), put(&m, 'N', 1), put(&m, 3, 2), put(&m, 't', 1);
    put(&m, 3, 4), put(&m, 0x610062, 3), put(&m, 'n', 1), text_val(&m, "c");
    REFUSED("a key value with a NUL byte", "NUL byte");

    xlog(&m, 'I'), put(&m, 16384, 4), put(&m, 'K', 1), tuple(&m, "1", "b", "c");
    REFUSED("an insert without 'N'", "expected a new tuple 'N'");

    xlog(&m, 'D'), put(&m, 16384, 4), put(&m, 'N', 1), tuple(&m, "1", "b", "c");
    REFUSED("a delete without 'K' or 'O'", "without its old key");

    xlog(&m, 'T'), put(&m, 0x40000000, 4), put(&m, 0, 1), put(&m, 16384, 4);
    REFUSED("a truncate claiming 2^30 relations", "1073741824 relations in 4 bytes");

    xlog(&m, 'T'), put(&m, 1, 4), put(&m, 0, 1), put(&m, 5, 4);
    REFUSED("a truncate of an unknown relation", "relation id 5");

    xlog(&m, 'R'), put(&m, 1, 4), puts_(&m, "s"), puts_(&m, "t"), put(&m, 'd', 1);
    put(&m, 5000, 2);
    REFUSED("a relation of 5000 columns", "5000 columns, more than PostgreSQL's 1664");

    xlog(&m, 'R'), put(&m, 1, 4), puts_(&m, "s"), put(&m, 't', 1);
    REFUSED("a relation name without its NUL", "no terminating NUL");

    xlog(&m, 'M'), put(&m, 0, 1), put(&m, 9, 8), puts_(&m, "p"), put(&m, 0xffffffff, 4);
    REFUSED("a logical message content length past the end", "past the end");

    begin(&m, 5);
    REFUSED("a begin inside a transaction", "a Begin inside a transaction");

    commit(&m, 0x101, 0x200);
    REFUSED("a commit whose LSN is not its begin's", "commit LSN 0/101 is not its Begin's 0/100");

    xlog(&m, 'S'), put(&m, 1, 4), put(&m, 1, 1);
    REFUSED("a stream start (never requested)", "unexpected type byte 0x53");

    m.n = 0, put(&m, 'x', 1);
    REFUSED("a CopyData that is neither 'w' nor 'k'", "unexpected type byte 0x78");

    m.n = 0, put(&m, 'w', 1), put(&m, 0, 8), put(&m, 0, 8), put(&m, 0, 8);
    REFUSED("an XLogData with no payload", "no pgoutput message");

    ok(pr_decode(d, NULL, 0, NULL, &e) == -1, "an empty message is refused: %s", e.msg);

    commit(&m, 0x100, 0x200), feed(d, &m, &e);
    insert(&m, "1", "c");
    REFUSED("an insert outside a transaction", "outside a transaction");
    commit(&m, 0x100, 0x200);
    REFUSED("a commit outside a transaction", "outside a transaction");
    xlog(&m, 'T'), put(&m, 0, 4), put(&m, 0, 1);
    REFUSED("a truncate outside a transaction", "outside a transaction");

    /* the message names the kind and size */
    begin(&m, 0x300), feed(d, &m, &e);
    insert(&m, "1", "c");
    m.n -= 2;
    feed(d, &m, &e);
    s = e.msg;
    ok(strstr(s, "pgoutput insert message of 26 bytes: value length at byte 23 needs 4 bytes") !=
           NULL,
       "the refusal names the message, its size and where it broke: %s", s);
#undef REFUSED
    pr_decoder_free(d);
}

static uint32_t next_rand(uint32_t *s)
{
    *s = *s * 1103515245u + 12345u;
    return *s >> 8;
}

/* Random bytes flipped in valid messages: decoded or refused, never a read
 * out of bounds (each input is an exact-size heap copy). */
static void test_random(unsigned seed)
{
    uint32_t st = seed;
    mb base[6];
    relation(&base[0], 0);
    relation(&base[1], 1);
    insert(&base[2], "12", "abc");
    xlog(&base[3], 'U'), put(&base[3], 16384, 4), put(&base[3], 'O', 1);
    tuple(&base[3], "1", "b", "c"), put(&base[3], 'N', 1), tuple(&base[3], "1", NULL, NULL);
    xlog(&base[4], 'T'), put(&base[4], 2, 4), put(&base[4], 0, 1), put(&base[4], 16384, 4);
    put(&base[4], 16385, 4);
    commit(&base[5], 0x100, 0x180);
    int bad_refusal = 0, decoded = 0, refused = 0;
    for (int round = 0; round < 20000; round++) {
        pr_decoder *d = ready();
        const mb *b = &base[next_rand(&st) % 6];
        uint8_t *buf = malloc(b->n);
        memcpy(buf, b->p, b->n);
        int flips = 1 + (int)(next_rand(&st) % 4);
        for (int k = 0; k < flips; k++)
            buf[25 + next_rand(&st) % (b->n - 25)] = (uint8_t)next_rand(&st);
        size_t len = b->n - next_rand(&st) % 3;
        sl_err e = {0};
        int r = pr_decode(d, buf, len, NULL, &e);
        if (r < 0) {
            refused++;
            bad_refusal += !e.msg[0];
        } else {
            decoded++;
            for (int i = 0; i < r; i++) { /* touch every string of every change */
                const pr_change *c = pr_decoded(d, (size_t)i);
                volatile size_t sum = c->schema ? strlen(c->schema) + strlen(c->table) : 0;
                for (size_t k = 0; k < c->nkey; k++)
                    sum += strlen(c->key_names[k]) + (c->key[k] ? strlen(c->key[k]) : 0) +
                           (c->old_key && c->old_key[k] ? strlen(c->old_key[k]) : 0);
                (void)sum;
            }
        }
        free(buf);
        pr_decoder_free(d);
    }
    ok(bad_refusal == 0 && refused > 1000 && decoded > 100,
       "20000 corrupted messages: %d refused (each saying why), %d decoded, none out of bounds",
       refused, decoded);
}

int main(void)
{
    const char *env = getenv("SEED");
    unsigned seed = env ? (unsigned)strtoul(env, NULL, 10) : (unsigned)time(NULL);
    printf("# seed %u (SEED=%u replays)\n", seed, seed);
    test_valid();
    test_truncations();
    test_hostile();
    test_random(seed);
    return done_testing();
}
