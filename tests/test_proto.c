/* Messages: round trips (small and lz4-compressed), and truncated, garbage
 * and wrong-version frames are errors, never crashes. SEED=n replays. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../proto/msg.h"
#include "tap.h"

int main(void)
{
    unsigned seed = getenv("SEED") ? (unsigned)atoi(getenv("SEED")) : (unsigned)time(NULL);
    printf("# seed %u\n", seed);
    srand(seed);
    sl_err e = {{0}};
    sl_buf f = {0};

    msg_writer *w = msg_writer_new(MSG_TREE, 42, 3);
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
    const msgpack_object *items;
    uint32_t ni;
    ok(m && msg_type(m) == MSG_TREE && msg_id(m) == 42, "type and id round-trip");
    ok(m && msg_get_str(m, "table", &s, &n, &e) == 0 && n == 13 && !memcmp(s, "public.orders", 13),
       "string field round-trips");
    ok(m && msg_get_int(m, "n", &iv, &e) == 0 && iv == -7, "negative int round-trips");
    ok(m && msg_get_array(m, "keys", &items, &ni, &e) == 0 && ni == 2 &&
           items[0].type == MSGPACK_OBJECT_BIN && msg_obj_is_nil(&items[1]),
       "array of bin and nil round-trips");
    ok(m && msg_get_int(m, "table", &iv, &e) != 0 && strstr(e.msg, "table"),
       "wrong-typed field is an error naming it: %s", e.msg);
    msg_free(m);

    /* large body: compressed */
    w = msg_writer_new(MSG_REPLY, 1, 1);
    msg_key(w, "rows");
    msg_pack_array(w, 5000);
    for (int i = 0; i < 5000; i++)
        msg_pack_int(w, i);
    ok(msg_writer_finish(w, &f, &e) == 0 && f.p[0] == 1, "large message is lz4-compressed");
    msg_writer_free(w);
    m = msg_decode(f.p, f.len, &e);
    ok(m && msg_get_array(m, "rows", &items, &ni, &e) == 0 && ni == 5000 &&
           msg_obj_int(&items[4999], &iv) == 0 && iv == 4999,
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
    return done_testing();
}
