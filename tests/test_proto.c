/* Messages: round trips (small and lz4-compressed), and truncated, garbage
 * and wrong-version frames are errors, never crashes. SEED=n replays. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lz4.h>
#include <msgpack.h> /* hostile frames are built byte by byte */

#include "../merkle/enc.h"
#include "../proto/msg.h"
#include "tap.h"

/* A frame whose msgpack is the map {v: 1, t: reply, id: 0, rows: [n nils]},
 * lz4-compressed (compressed: the claimed raw length may be overridden). */
static void nil_bomb(sl_buf *frame, uint32_t n, uint32_t claim)
{
    static const uint8_t head[] = {0x84, 0xa1, 'v',  1,   0xa1, 't', 10,  0xa2, 'i',
                                   'd',  0,    0xa4, 'r', 'o',  'w', 's', 0xdd};
    size_t raw = sizeof head + 4 + n;
    char *b = malloc(raw);
    memcpy(b, head, sizeof head);
    b[sizeof head] = (char)(n >> 24);
    b[sizeof head + 1] = (char)(n >> 16);
    b[sizeof head + 2] = (char)(n >> 8);
    b[sizeof head + 3] = (char)n;
    memset(b + sizeof head + 4, 0xc0, n);
    int bound = LZ4_compressBound((int)raw);
    sl_buf_reset(frame);
    sl_buf_reserve(frame, (size_t)bound + 5);
    uint32_t c = claim ? claim : (uint32_t)raw;
    frame->p[0] = 1;
    frame->p[1] = (uint8_t)(c >> 24);
    frame->p[2] = (uint8_t)(c >> 16);
    frame->p[3] = (uint8_t)(c >> 8);
    frame->p[4] = (uint8_t)c;
    frame->len = 5 + (size_t)LZ4_compress_default(b, (char *)frame->p + 5, (int)raw, bound);
    free(b);
}

/* Per-frame limits: a decompression bomb, headers that declare more items
 * than the frame holds or than the budget allows, nesting, and the writer
 * refusing what readers would refuse. */
static void test_limits(void)
{
    sl_err e = {0};
    sl_buf f = {0};
    msg *m;

    /* the frame: ~1 MB of lz4 claiming 256 MiB of nils */
    nil_bomb(&f, 1u << 20, 256u << 20);
    m = msg_decode(f.p, f.len, &e);
    ok(!m && strstr(e.msg, "out of bounds"),
       "a frame claiming 256 MiB decompressed is refused before decompressing: %s", e.msg);

    /* within the raw cap but over the item budget: refused by the walk,
     * before msgpack-c allocates 24 bytes an item */
    nil_bomb(&f, MSG_MAX_ITEMS + 1, 0);
    double t0 = sl_now();
    m = msg_decode(f.p, f.len, &e);
    double dt = sl_now() - t0;
    ok(!m && strstr(e.msg, "items"), "a %zu-byte frame of %u nils is refused: %s", f.len,
       MSG_MAX_ITEMS + 1, e.msg);
    ok(dt < 2.0, "... in %.3f s", dt);

    /* under the budget: decodes */
    nil_bomb(&f, 100000, 0);
    m = msg_decode(f.p, f.len, &e);
    const msg_obj *items;
    uint32_t ni;
    ok(m && msg_get_array(m, "rows", &items, &ni, &e) == 0 && ni == 100000,
       "a frame of 100000 nils decodes");
    msg_free(m);

    /* a claimed length lz4 cannot reach from the bytes given */
    uint8_t tiny[] = {1, 0x03, 0xff, 0xff, 0xff, 0x1f, 0xc0, 0, 0, 0, 0, 0};
    m = msg_decode(tiny, sizeof tiny, &e);
    ok(!m && strstr(e.msg, "cannot expand"), "7 bytes of lz4 claiming 64 MiB are refused: %s",
       e.msg);

    /* a map header declaring 65535 pairs in an 8-byte body */
    uint8_t map[] = {0, 0xde, 0xff, 0xff, 0xc0, 0xc0, 0xc0, 0xc0};
    m = msg_decode(map, sizeof map, &e);
    ok(!m && strstr(e.msg, "well-formed"), "a map declaring more pairs than bytes is refused: %s",
       e.msg);

    /* deep nesting: msgpack-c's own stack is 32 deep; no crash either way */
    uint8_t deep[2 + 200];
    deep[0] = 0;
    for (int i = 1; i < 201; i++)
        deep[i] = 0x91;
    deep[201] = 0xc0;
    m = msg_decode(deep, sizeof deep, &e);
    ok(!m, "200 nested arrays are refused: %s", e.msg);

    /* the writer refuses what a reader would */
    msg_writer *w = msg_writer_new(MSG_REPLY, 1);
    msg_key(w, "rows");
    msg_pack_array(w, MSG_MAX_ITEMS + 1);
    for (uint32_t i = 0; i < MSG_MAX_ITEMS + 1; i++)
        msg_pack_nil(w);
    ok(msg_writer_finish(w, &f, &e) != 0 && strstr(e.msg, "items"),
       "a message over the item budget is refused by its writer: %s", e.msg);
    msg_writer_free(w);
    sl_buf_free(&f);
}

/* enc_key_check accepts exactly what enc_key writes for the classes. */
static void test_key_check(void)
{
    sl_err e = {0};
    sl_buf k = {0};
    int cls[3] = {ENC_INT, ENC_TEXT, ENC_UUID};
    enc_val v[3] = {{.kind = ENC_V_INT, .i = -5},
                    {.kind = ENC_V_TEXT, .p = "a\0b", .len = 3},
                    {.kind = ENC_V_TEXT, .p = "123e4567-e89b-12d3-a456-426614174000", .len = 36}};
    for (int c = 0; c < 3; c++)
        enc_key(&k, cls[c], &v[c], &e);
    ok(enc_key_check(k.p, k.len, cls, 3, &e) == 0, "an (int, text, uuid) key checks out");
    int wrong[3] = {ENC_INT, ENC_BYTEA, ENC_UUID};
    ok(enc_key_check(k.p, k.len, wrong, 3, &e) != 0 && strstr(e.msg, "tag"),
       "the same key is not a (int, bytea, uuid) key: %s", e.msg);
    ok(enc_key_check(k.p, k.len - 1, cls, 3, &e) != 0, "one byte short: %s", e.msg);
    ok(enc_key_check(k.p, k.len, cls, 2, &e) != 0 && strstr(e.msg, "longer"),
       "a column too many: %s", e.msg);
    int bad = 1;
    for (size_t cut = 0; cut < k.len; cut++)
        bad &= enc_key_check(k.p, cut, cls, 3, NULL) != 0;
    ok(bad, "every truncation is refused");
    k.p[9 + 3] = 0x01; /* after the zero byte of "a\0b": 0x00 0x01 is no escape */
    ok(enc_key_check(k.p, k.len, cls, 3, &e) != 0 && strstr(e.msg, "escape"),
       "a bad escape is refused: %s", e.msg);
    int other[1] = {ENC_FLOAT};
    uint8_t f9[9] = {0x10};
    ok(enc_key_check(f9, 9, other, 1, &e) != 0, "a float key column is refused: %s", e.msg);
    sl_buf_free(&k);
}

/* A raw ERROR frame {v, t: error, id: 7} plus the pairs given (msgpack
 * strings), as another peer could send it. */
static void error_frame_with(sl_buf *out, const char *const *kv, size_t npairs)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3 + npairs);
    const char *keys[3] = {"v", "t", "id"};
    int vals[3] = {MSG_VERSION, MSG_ERROR, 7};
    for (int i = 0; i < 3; i++) {
        msgpack_pack_str(&pk, strlen(keys[i]));
        msgpack_pack_str_body(&pk, keys[i], strlen(keys[i]));
        msgpack_pack_int(&pk, vals[i]);
    }
    for (size_t i = 0; i < 2 * npairs; i++) {
        msgpack_pack_str(&pk, strlen(kv[i]));
        msgpack_pack_str_body(&pk, kv[i], strlen(kv[i]));
    }
    sl_buf_reset(out);
    sl_buf_putc(out, 0);
    sl_buf_append(out, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

/* Error replies carry the code by name: it survives a round trip, and an
 * unknown or absent code reads as internal, never as a cause it is not. */
static void test_error_codes(void)
{
    sl_buf f = {0};
    sl_err in = {0}, out = {0};
    sl_err_setc(&in, SL_AUTH, "cannot connect to PostgreSQL: password authentication failed");
    ok(msg_error_reply(42, &in, &f) == 0, "an error reply is built");
    msg *m = msg_decode(f.p, f.len, &out);
    const char *s;
    size_t n;
    ok(m && msg_type(m) == MSG_ERROR && msg_id(m) == 42 &&
           msg_get_str(m, "code", &s, &n, NULL) == 0 && n == 4 && !memcmp(s, "auth", 4),
       "it is an error frame for request 42 with code \"auth\"");
    ok(m && msg_error_read(m, &out) == -1 && out.code == SL_AUTH && !strcmp(out.msg, in.msg),
       "the code and message come back: %s (%s)", sl_code_name(out.code), out.msg);
    msg_free(m);
    for (int c = SL_INVALID; c <= SL_INTERNAL; c++) {
        sl_err a = {0}, b = {0};
        sl_err_setc(&a, c, "failure %d", c);
        msg_error_reply(1, &a, &f);
        m = msg_decode(f.p, f.len, &b);
        ok(m && msg_error_read(m, &b) == -1 && b.code == c && !strcmp(b.msg, a.msg),
           "code %s round-trips", sl_code_name(c));
        msg_free(m);
    }
    sl_err unset = {0};
    snprintf(unset.msg, sizeof unset.msg, "no code was set");
    msg_error_reply(1, &unset, &f);
    m = msg_decode(f.p, f.len, &out);
    ok(m && msg_error_read(m, &out) == -1 && out.code == SL_INTERNAL,
       "an sl_err without a code is sent as internal");
    msg_free(m);

    msg_error_frame(3, "old-style", &f);
    m = msg_decode(f.p, f.len, &out);
    ok(m && msg_error_read(m, &out) == -1 && out.code == SL_INTERNAL &&
           !strcmp(out.msg, "old-style"),
       "msg_error_frame still works, as code internal: %s", out.msg);
    msg_free(m);

    const char *unknown[] = {"error", "from a newer peer", "code", "teapot"};
    error_frame_with(&f, unknown, 2);
    out = (sl_err){0};
    m = msg_decode(f.p, f.len, &out);
    ok(m && msg_error_read(m, &out) == -1 && out.code == SL_INTERNAL &&
           !strcmp(out.msg, "from a newer peer"),
       "an unknown code name reads as internal");
    msg_free(m);

    const char *nocode[] = {"error", "from an older peer"};
    error_frame_with(&f, nocode, 1);
    out = (sl_err){.code = SL_NOT_FOUND}; /* a stale code must not survive */
    m = msg_decode(f.p, f.len, &out);
    ok(m && msg_error_read(m, &out) == -1 && out.code == SL_INTERNAL &&
           !strcmp(out.msg, "from an older peer"),
       "a reply without a code reads as internal, whatever e held before");
    msg_free(m);

    const char *okcode[] = {"error", "odd", "code", "ok"};
    error_frame_with(&f, okcode, 2);
    m = msg_decode(f.p, f.len, &out);
    ok(m && msg_error_read(m, &out) == -1 && out.code == SL_INTERNAL,
       "a failure that claims code \"ok\" reads as internal");
    msg_free(m);

    error_frame_with(&f, NULL, 0);
    m = msg_decode(f.p, f.len, &out);
    ok(m && msg_error_read(m, &out) == -1 && out.code == SL_INTERNAL &&
           strstr(out.msg, "without saying why"),
       "a reply without message or code: %s", out.msg);
    msg_free(m);

    const char *nulmsg[] = {"error", "X", "code", "not_found"};
    error_frame_with(&f, nulmsg, 2);
    uint8_t *x = memchr(f.p, 'X', f.len);
    if (x)
        *x = 0; /* the message is now one NUL byte */
    m = msg_decode(f.p, f.len, &out);
    ok(m && msg_error_read(m, &out) == -1 && out.code == SL_NOT_FOUND && out.msg[0],
       "a message that is only a NUL still reads as a message: %s", out.msg);
    msg_free(m);

    uint8_t junk[] = {0, 0x92, 1, 2};
    out = (sl_err){0};
    ok(!msg_decode(junk, sizeof junk, &out) && out.code == SL_INVALID,
       "a frame that does not decode is invalid");
    sl_buf_free(&f);
}

/* proto/README.md's type table is the one that follows from MSG_TYPES:
 * on a difference, the table to paste is printed. */
/* Items packed ahead (msg_items, as the worker packs reply rows) make the
 * same frame as the same items packed into the message directly, and a
 * reset drops what was packed before it. */
static void test_items(void)
{
    static uint8_t big[10000];
    memset(big, 'x', sizeof big);
    msg_items *it = msg_items_new();
    msg_writer *direct = msg_writer_new(MSG_REPLY, 9), *ahead = msg_writer_new(MSG_REPLY, 9);
    sl_buf fd = {0}, fa = {0};
    sl_err e = {0};
    if (!it || !direct || !ahead) {
        ok(0, "msg_items_new and msg_writer_new allocate");
        return;
    }
    msg_items_str(it, "dropped by the reset", 20);
    msg_items_reset(it);
    ok(msg_items_size(it) == 0, "a reset msg_items is empty");
    msg_key(direct, "rows");
    msg_pack_array(direct, 3);
    msg_key(ahead, "rows");
    msg_pack_array(ahead, 3);
    for (int small = 1; small >= 0; small--) {
        size_t n = small ? 3 : sizeof big;
        msg_pack_array(direct, 4);
        msg_pack_bin(direct, big, n);
        msg_pack_uint(direct, n);
        msg_pack_str(direct, (const char *)big, n);
        msg_pack_nil(direct);
        msg_items_array(it, 4);
        msg_items_bin(it, big, n);
        msg_items_uint(it, n);
        msg_items_str(it, (const char *)big, n);
        msg_items_nil(it);
    }
    msg_pack_array(direct, 0);
    msg_items_array(it, 0);
    ok(msg_items_size(it) > 2 * sizeof big, "msg_items_size counts the packed bytes (%zu)",
       msg_items_size(it));
    msg_pack_items(ahead, it);
    ok(msg_writer_finish(direct, &fd, &e) == 0 && msg_writer_finish(ahead, &fa, &e) == 0 &&
           fd.len == fa.len && !memcmp(fd.p, fa.p, fd.len),
       "items packed ahead make the same frame as items packed in place (%zu bytes)", fa.len);
    msg *m = msg_decode(fa.p, fa.len, &e);
    const msg_obj *rows, *f;
    uint32_t n = 0, nf = 0;
    const uint8_t *b;
    size_t bn = 0;
    int64_t v = 0;
    ok(m && msg_get_array(m, "rows", &rows, &n, &e) == 0 && n == 3 &&
           msg_obj_array(msg_obj_at(rows, 1), &f, &nf) == 0 && nf == 4 &&
           msg_obj_bin(msg_obj_at(f, 0), &b, &bn) == 0 && bn == sizeof big &&
           msg_obj_int(msg_obj_at(f, 1), &v) == 0 && v == (int64_t)sizeof big &&
           msg_obj_is_str(msg_obj_at(f, 2)) && msg_obj_is_nil(msg_obj_at(f, 3)),
       "the rows decode as packed: %s", e.msg);
    msg_free(m);
    msg_items_free(it);
    msg_writer_free(direct);
    msg_writer_free(ahead);
    sl_buf_free(&fd);
    sl_buf_free(&fa);
}

static void test_types_table(void)
{
    sl_buf want = {0}, doc = {0};
    int made = msg_types_markdown(&want) == 0 && sl_buf_putc(&want, 0) == 0;
    FILE *f = fopen("proto/README.md", "r");
    char chunk[4096];
    size_t n;
    while (f && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        sl_buf_append(&doc, chunk, n);
    if (f)
        fclose(f);
    sl_buf_putc(&doc, 0);
    int found = made && f && strstr((const char *)doc.p, (const char *)want.p) != NULL;
    ok(found, "proto/README.md holds the type table that follows from MSG_TYPES");
    if (!found && made)
        printf("# the table:\n%s", (const char *)want.p);
    ok(strcmp(msg_type_name(MSG_SCHEDULES), "schedules") == 0 &&
           strcmp(msg_type_name(MSG_HELLO), "hello") == 0 && MSG_EVENT == 17 &&
           strcmp(msg_type_name(MSG_TYPE_END), "?") == 0 && strcmp(msg_type_name(0), "?") == 0,
       "type numbers and names follow from the table");
    sl_buf_free(&want);
    sl_buf_free(&doc);
}

/* msg_check_fields demands what MSG_TYPES says of each type. */
static void test_check_fields(void)
{
    sl_buf f = {0};
    sl_err e = {0};
    msg_writer *w = msg_writer_new(MSG_DESCRIBE, 5);
    msg_put_cstr(w, "db", "src");
    msg_writer_finish(w, &f, NULL);
    msg_writer_free(w);
    msg *m = msg_decode(f.p, f.len, NULL);
    ok(m && msg_check_fields(m, &e) == -1 && e.code == SL_INVALID &&
           strstr(e.msg, "describe message: field \"table\" must be a string"),
       "a describe without its table is refused, the field named: %s", e.msg);
    msg_free(m);
    w = msg_writer_new(MSG_NODES, 6);
    msg_put_int(w, "tree", 1);
    msg_put_cstr(w, "level", "two");
    msg_put_int(w, "index", 0);
    msg_writer_finish(w, &f, NULL);
    msg_writer_free(w);
    m = msg_decode(f.p, f.len, NULL);
    ok(m && msg_check_fields(m, &e) == -1 && strstr(e.msg, "\"level\" must be an integer"),
       "a field of another kind is refused: %s", e.msg);
    msg_free(m);
    w = msg_writer_new(MSG_NODES, 7);
    msg_put_int(w, "tree", 1);
    msg_put_int(w, "level", 2);
    msg_put_int(w, "index", 0);
    msg_writer_finish(w, &f, NULL);
    msg_writer_free(w);
    m = msg_decode(f.p, f.len, NULL);
    ok(m && msg_check_fields(m, &e) == 0, "a nodes request with its three integers passes");
    msg_free(m);
    w = msg_writer_new(MSG_WORKERS, 8);
    msg_writer_finish(w, &f, NULL);
    msg_writer_free(w);
    m = msg_decode(f.p, f.len, NULL);
    ok(m && msg_check_fields(m, &e) == 0, "a type that requires nothing passes empty");
    msg_free(m);
    sl_buf_free(&f);
}

int main(void)
{
    test_check_fields();
    test_types_table();
    unsigned seed = getenv("SEED") ? (unsigned)atoi(getenv("SEED")) : (unsigned)time(NULL);
    printf("# seed %u\n", seed);
    srand(seed);
    sl_err e = {0};
    sl_buf f = {0};

    msg_writer *w = msg_writer_new(MSG_TREE, 42);
    msg_key(w, "table");
    msg_pack_cstr(w, "public.orders");
    msg_key(w, "n");
    msg_pack_int(w, -7);
    msg_key(w, "keys");
    msg_pack_array(w, 2);
    msg_pack_bin(w, "\x00\x01", 2);
    msg_pack_nil(w);
    ok(msg_writer_finish(w, &f, &e) == 0 && f.p[0] == 0, "small message is not compressed");
    msg_writer_free(w);
    msg *m = msg_decode(f.p, f.len, &e);
    const char *s;
    size_t n;
    int64_t iv;
    const msg_obj *items;
    uint32_t ni;
    const uint8_t *b;
    size_t bn;
    ok(m && msg_type(m) == MSG_TREE && msg_id(m) == 42, "type and id round-trip");
    ok(m && msg_get_str(m, "table", &s, &n, &e) == 0 && n == 13 && !memcmp(s, "public.orders", 13),
       "string field round-trips");
    ok(m && msg_get_int(m, "n", &iv, &e) == 0 && iv == -7, "negative int round-trips");
    ok(m && msg_get_array(m, "keys", &items, &ni, &e) == 0 && ni == 2 &&
           msg_obj_bin(msg_obj_at(items, 0), &b, &bn) == 0 && msg_obj_is_nil(msg_obj_at(items, 1)),
       "array of bin and nil round-trips");
    ok(m && msg_get_int(m, "table", &iv, &e) != 0 && strstr(e.msg, "table"),
       "wrong-typed field is an error naming it: %s", e.msg);
    msg_free(m);

    /* large body: compressed */
    w = msg_writer_new(MSG_REPLY, 1);
    msg_key(w, "rows");
    msg_pack_array(w, 5000);
    for (int i = 0; i < 5000; i++)
        msg_pack_int(w, i);
    ok(msg_writer_finish(w, &f, &e) == 0 && f.p[0] == 1, "large message is lz4-compressed");
    msg_writer_free(w);
    m = msg_decode(f.p, f.len, &e);
    ok(m && msg_get_array(m, "rows", &items, &ni, &e) == 0 && ni == 5000 &&
           msg_obj_int(msg_obj_at(items, 4999), &iv) == 0 && iv == 4999,
       "compressed message round-trips");
    msg_free(m);

    /* every truncation of both frames fails cleanly */
    sl_buf good = {0};
    sl_buf_append(&good, f.p, f.len);
    int trunc_ok = 1;
    for (size_t cut = 0; cut < good.len; cut += 1 + good.len / 500) {
        m = msg_decode(good.p, cut, &e);
        if (m) {
            trunc_ok = 0;
            msg_free(m);
        }
    }
    ok(trunc_ok, "truncated compressed frames are all rejected");

    /* random garbage and bit flips: decode or reject with a message, never
     * crash; a decoded one must be a well-formed message */
    int survived = 1, rejected = 0;
    for (int i = 0; i < 20000; i++) {
        uint8_t buf[256];
        size_t len = (size_t)(rand() % 256);
        for (size_t k = 0; k < len; k++)
            buf[k] = (uint8_t)rand();
        if (i % 2 && len > 1)
            buf[0] = (uint8_t)(rand() % 2);
        e.msg[0] = '\0';
        m = msg_decode(buf, len, &e);
        if (m && (msg_type(m) <= 0 || msg_type(m) >= MSG_TYPE_END))
            survived = 0;
        if (!m && !e.msg[0])
            survived = 0; /* a rejection must say why */
        rejected += !m;
        msg_free(m);
    }
    for (int i = 0; i < 5000; i++) {
        sl_buf x = {0};
        sl_buf_append(&x, good.p, good.len);
        x.p[rand() % x.len] ^= (uint8_t)(1 + rand() % 255);
        e.msg[0] = '\0';
        m = msg_decode(x.p, x.len, &e);
        if (!m && !e.msg[0])
            survived = 0;
        msg_free(m);
        sl_buf_free(&x);
    }
    ok(survived, "25000 garbage and bit-flipped frames: each decoded to a known type or rejected "
                 "with a message");
    ok(rejected > 19000, "random bytes are (almost) always rejected: %d of 20000", rejected);

    /* wrong version, unknown type, not a map */
    {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 2);
        msgpack_pack_str(&pk, 1);
        msgpack_pack_str_body(&pk, "v", 1);
        msgpack_pack_int(&pk, 99);
        msgpack_pack_str(&pk, 1);
        msgpack_pack_str_body(&pk, "t", 1);
        msgpack_pack_int(&pk, MSG_TREE);
        sl_buf x = {0};
        sl_buf_putc(&x, 0);
        sl_buf_append(&x, sb.data, sb.size);
        m = msg_decode(x.p, x.len, &e);
        ok(!m && strstr(e.msg, "version 99"), "unknown version is refused: %s", e.msg);
        x.p[x.len - 1] = 0x7f; /* type 127 */
        x.p[4] = 1;            /* version 1 */
        m = msg_decode(x.p, x.len, &e);
        ok(!m && strstr(e.msg, "type"), "unknown type is refused: %s", e.msg);
        msgpack_sbuffer_destroy(&sb);
        sl_buf_free(&x);
        uint8_t arr[] = {0, 0x92, 1, 2};
        m = msg_decode(arr, sizeof arr, &e);
        ok(!m && strstr(e.msg, "not a map"), "array body is refused: %s", e.msg);
        uint8_t bomb[] = {1, 0xff, 0xff, 0xff, 0xff, 0, 0};
        m = msg_decode(bomb, sizeof bomb, &e);
        ok(!m, "oversized compressed length is refused: %s", e.msg);
    }
    sl_buf_free(&good);
    sl_buf_free(&f);
    test_limits();
    test_key_check();
    test_error_codes();
    test_items();
    return done_testing();
}
