/* libFuzzer target: the frame decoder and every field getter. Any input
 * either decodes to a message of a known type, whose every field can be
 * read with every getter, or is refused with a message. */
#include <stdlib.h>
#include <string.h>

#include "../../proto/msg.h"

static const char *const keys[] = {"v",    "t",     "id",   "dbs",    "db",    "table",
                                   "rows", "nodes", "keys", "bounds", "error", "lo",
                                   "hi",   "tree",  "cols", "cls",    "events"};

/* Reads o with every getter, and its items, to a bounded depth. */
static void visit(const msg_obj *o, int depth)
{
    int64_t i;
    const char *s;
    const uint8_t *b;
    size_t n;
    const msg_obj *items;
    uint32_t ni;
    (void)msg_obj_int(o, &i);
    if (msg_obj_str(o, &s, &n) == 0 && n && s[n - 1] == 0x7f)
        i = s[0]; /* touch both ends of the bytes */
    if (msg_obj_bin(o, &b, &n) == 0 && n && b[n - 1] == 0x7f)
        i = b[0];
    (void)msg_obj_is_nil(o);
    if (depth < 8 && msg_obj_array(o, &items, &ni) == 0)
        for (uint32_t k = 0; k < ni; k++)
            visit(msg_obj_at(items, k), depth + 1);
    (void)i;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sl_err err = {0};
    msg *m = msg_decode(data, size, &err);
    if (!m) {
        if (!err.msg[0] || err.code <= SL_OK || err.code > SL_INTERNAL)
            abort(); /* a refusal must say why, and of what kind */
        return 0;
    }
    if (msg_type(m) == MSG_ERROR) {
        sl_err e = {0};
        if (msg_error_read(m, &e) != -1 || !e.msg[0] || e.code <= SL_OK || e.code > SL_INTERNAL)
            abort(); /* any error reply reads as a message and a code */
    }
    if (msg_type(m) <= 0 || msg_type(m) >= MSG_TYPE_END || !strcmp(msg_type_name(msg_type(m)), "?"))
        abort();
    (void)msg_id(m);
    for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
        const char *s;
        const uint8_t *b;
        size_t n;
        int64_t i;
        const msg_obj *items;
        uint32_t ni;
        (void)msg_get_str(m, keys[k], &s, &n, &err);
        (void)msg_get_int(m, keys[k], &i, &err);
        (void)msg_get_bin(m, keys[k], &b, &n, &err);
        if (msg_get_array(m, keys[k], &items, &ni, &err) == 0)
            for (uint32_t x = 0; x < ni; x++)
                visit(msg_obj_at(items, x), 0);
        const msg_obj *o = msg_get(m, keys[k]);
        if (o)
            visit(o, 0);
    }
    msg_free(m);
    return 0;
}
