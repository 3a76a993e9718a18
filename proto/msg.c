#include "msg.h"

#include <lz4.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

enum { WALK_OK = 0, WALK_MALFORMED = -1, WALK_TOO_MANY = -2 };
static int msgpack_walk(const uint8_t *p, size_t len, uint64_t *items_out);

static const struct {
    int num;
    const char *name, *dir, *fields, *required;
} types[] = {
#define MSG_TYPE_ROW(name, num, str, dir, fields, required) {num, str, dir, fields, required},
    MSG_TYPES(MSG_TYPE_ROW)
#undef MSG_TYPE_ROW
};
_Static_assert(sizeof types / sizeof types[0] == MSG_TYPE_END - 1,
               "message types are numbered 1, 2, ... without a gap");

const char *msg_type_name(int type)
{
    return type > 0 && type < MSG_TYPE_END ? types[type - 1].name : "?";
}

int msg_types_markdown(sl_buf *out)
{
    if (sl_buf_printf(out, "| t | name | direction | fields |\n|---|---|---|---|\n"))
        return -1;
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (sl_buf_printf(out, "| %d | %s | %s | %s |\n", types[i].num, types[i].name, types[i].dir,
                          types[i].fields))
            return -1;
    return 0;
}

int msg_check_fields(const msg *m, sl_err *err)
{
    int t = msg_type(m);
    if (t <= 0 || t >= MSG_TYPE_END)
        return sl_err_setc(err, SL_INVALID, "unknown message type %d", t);
    for (const char *p = types[t - 1].required; *p;) {
        size_t n = strcspn(p, ":");
        char key[32], kind = p[n] == ':' ? p[n + 1] : '*';
        snprintf(key, sizeof key, "%.*s", (int)n, p);
        const msgpack_object *o = msg_get(m, key);
        int good = o && (kind == '*' || (kind == 's' && o->type == MSGPACK_OBJECT_STR) ||
                         (kind == 'b' && o->type == MSGPACK_OBJECT_BIN) ||
                         (kind == 'a' && o->type == MSGPACK_OBJECT_ARRAY) ||
                         (kind == 'i' && (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
                                          o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)));
        if (!good) {
            static const char *const names[] = {['s'] = "a string",
                                                ['i'] = "an integer",
                                                ['b'] = "binary",
                                                ['a'] = "an array",
                                                ['*'] = "a value"};
            return sl_err_setc(err, SL_INVALID, "%s message: field \"%s\" must be %s",
                               types[t - 1].name, key, names[(unsigned char)kind]);
        }
        p += n + (p[n] == ':' ? 2 : 0);
        p += strspn(p, " ");
    }
    return 0;
}

/* A growing buffer of packed items. failed: a write did not fit in memory
 * (msgpack-c's packer ignores that and packs on: the bytes are then not
 * what was packed, so whatever carries them must not be sent). */
struct msg_items {
    msgpack_sbuffer sb;
    msgpack_packer pk;
    int failed;
};

static int items_write(void *data, const char *buf, size_t len)
{
    msg_items *it = data;
    if (msgpack_sbuffer_write(&it->sb, buf, len) == 0)
        return 0;
    it->failed = 1;
    return -1;
}

static void items_init(msg_items *it)
{
    msgpack_sbuffer_init(&it->sb);
    msgpack_packer_init(&it->pk, it, items_write);
    it->failed = 0;
}

msg_items *msg_items_new(void)
{
    msg_items *it = malloc(sizeof *it);
    if (it)
        items_init(it);
    return it;
}

void msg_items_free(msg_items *it)
{
    if (!it)
        return;
    msgpack_sbuffer_destroy(&it->sb);
    free(it);
}

void msg_items_reset(msg_items *it)
{
    msgpack_sbuffer_clear(&it->sb);
    it->failed = 0;
}

void msg_items_array(msg_items *it, uint32_t n)
{
    msgpack_pack_array(&it->pk, n);
}
void msg_items_bin(msg_items *it, const void *p, size_t n)
{
    msgpack_pack_bin(&it->pk, n);
    msgpack_pack_bin_body(&it->pk, p, n);
}
void msg_items_str(msg_items *it, const char *s, size_t n)
{
    msgpack_pack_str(&it->pk, n);
    msgpack_pack_str_body(&it->pk, s, n);
}
void msg_items_nil(msg_items *it)
{
    msgpack_pack_nil(&it->pk);
}
void msg_items_uint(msg_items *it, uint64_t v)
{
    msgpack_pack_uint64(&it->pk, v);
}
size_t msg_items_size(const msg_items *it)
{
    return it->sb.size;
}

/* A message is a msg_items (the map's header, then keys and values) that
 * knows how many keys it holds. */
struct msg_writer {
    msg_items it;
    uint32_t nkeys; /* msg_key calls: the map's size, written at finish */
    int raw;        /* msg_writer_no_compress: never lz4 */
};

/* The map header is a map32 whose count is filled in by msg_writer_finish:
 * writers never count their fields (a wrong count would make a frame that
 * decodes as something else). */
msg_writer *msg_writer_new(int type, uint64_t id)
{
    msg_writer *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    items_init(&w->it);
    static const char map32[5] = {(char)0xdf, 0, 0, 0, 0};
    items_write(&w->it, map32, sizeof map32);
    msg_key(w, "v");
    msg_pack_int(w, MSG_VERSION);
    msg_key(w, "t");
    msg_pack_int(w, type);
    msg_key(w, "id");
    msg_pack_uint(w, id);
    return w;
}

void msg_writer_free(msg_writer *w)
{
    if (!w)
        return;
    msgpack_sbuffer_destroy(&w->it.sb);
    free(w);
}

void msg_key(msg_writer *w, const char *key)
{
    w->nkeys++;
    msg_items_str(&w->it, key, strlen(key));
}
void msg_put_int(msg_writer *w, const char *key, int64_t v)
{
    msg_key(w, key);
    msg_pack_int(w, v);
}
void msg_put_uint(msg_writer *w, const char *key, uint64_t v)
{
    msg_key(w, key);
    msg_pack_uint(w, v);
}
void msg_put_cstr(msg_writer *w, const char *key, const char *s)
{
    msg_key(w, key);
    msg_pack_cstr(w, s);
}
void msg_pack_int(msg_writer *w, int64_t v)
{
    msgpack_pack_int64(&w->it.pk, v);
}
void msg_pack_uint(msg_writer *w, uint64_t v)
{
    msg_items_uint(&w->it, v);
}
void msg_pack_str(msg_writer *w, const char *s, size_t n)
{
    msg_items_str(&w->it, s, n);
}
void msg_pack_cstr(msg_writer *w, const char *s)
{
    if (s)
        msg_pack_str(w, s, strlen(s));
    else
        msg_pack_nil(w);
}
void msg_pack_bin(msg_writer *w, const void *p, size_t n)
{
    msg_items_bin(&w->it, p, n);
}
void msg_pack_nil(msg_writer *w)
{
    msg_items_nil(&w->it);
}
void msg_pack_array(msg_writer *w, uint32_t n)
{
    msg_items_array(&w->it, n);
}
void msg_pack_raw(msg_writer *w, const void *p, size_t n)
{
    if (n)
        items_write(&w->it, p, n);
}
void msg_pack_items(msg_writer *w, const msg_items *it)
{
    msg_pack_raw(w, it->sb.data, it->sb.size);
    w->it.failed |= it->failed;
}

void msg_writer_no_compress(msg_writer *w)
{
    w->raw = 1;
}

int msg_writer_finish(msg_writer *w, sl_buf *out, sl_err *err)
{
    sl_buf_reset(out);
    size_t n = w->it.sb.size;
    if (!w->it.sb.data || n < 5 || w->it.failed)
        return sl_err_set(err, "out of memory while packing a message");
    uint8_t *count = (uint8_t *)w->it.sb.data + 1; /* the map32's, big-endian */
    count[0] = (uint8_t)(w->nkeys >> 24);
    count[1] = (uint8_t)(w->nkeys >> 16);
    count[2] = (uint8_t)(w->nkeys >> 8);
    count[3] = (uint8_t)w->nkeys;
    if (n > MSG_MAX_RAW)
        return sl_err_setc(err, SL_INVALID, "message of %zu bytes exceeds the %u-byte limit", n,
                           MSG_MAX_RAW);
    /* what a reader would refuse is refused here, with a clearer error: a
     * body of n bytes holds at most n items, so only big ones are walked */
    uint64_t items;
    if (n > MSG_MAX_ITEMS &&
        msgpack_walk((const uint8_t *)w->it.sb.data, n, &items) == WALK_TOO_MANY)
        return sl_err_setc(err, SL_INVALID,
                           "message of over %u msgpack items exceeds the per-frame limit",
                           MSG_MAX_ITEMS);
    if (n >= MSG_COMPRESS_MIN && !w->raw) {
        int bound = LZ4_compressBound((int)n);
        if (sl_buf_reserve(out, (size_t)bound + 5) != 0)
            return sl_err_set(err, "out of memory");
        out->p[0] = 1;
        out->p[1] = (uint8_t)(n >> 24);
        out->p[2] = (uint8_t)(n >> 16);
        out->p[3] = (uint8_t)(n >> 8);
        out->p[4] = (uint8_t)n;
        int c = LZ4_compress_default(w->it.sb.data, (char *)out->p + 5, (int)n, bound);
        if (c <= 0)
            return sl_err_set(err, "lz4 compression failed");
        out->len = (size_t)c + 5;
        return 0;
    }
    if (sl_buf_putc(out, 0) || sl_buf_append(out, w->it.sb.data, n))
        return sl_err_set(err, "out of memory");
    return 0;
}

struct msg {
    msgpack_unpacked up;
    char *raw; /* the body, decompressed: msgpack objects point into it */
    int type;
    uint64_t id;
};

void msg_free(msg *m)
{
    if (!m)
        return;
    msgpack_unpacked_destroy(&m->up);
    free(m->raw);
    free(m);
}

static int key_is(const msgpack_object *k, const char *key)
{
    size_t n = strlen(key);
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
           memcmp(k->via.str.ptr, key, n) == 0;
}

const msgpack_object *msg_get(const msg *m, const char *key)
{
    const msgpack_object_map *map = &m->up.data.via.map;
    for (uint32_t i = 0; i < map->size; i++)
        if (key_is(&map->ptr[i].key, key))
            return &map->ptr[i].val;
    return NULL;
}

int msg_obj_int(const msgpack_object *o, int64_t *v)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX) {
        *v = (int64_t)o->via.u64;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *v = o->via.i64;
        return 0;
    }
    return -1;
}

int msg_obj_str(const msgpack_object *o, const char **p, size_t *n)
{
    if (o->type != MSGPACK_OBJECT_STR)
        return -1;
    *p = o->via.str.ptr;
    *n = o->via.str.size;
    return 0;
}

int msg_obj_bin(const msgpack_object *o, const uint8_t **p, size_t *n)
{
    if (o->type != MSGPACK_OBJECT_BIN)
        return -1;
    *p = (const uint8_t *)o->via.bin.ptr;
    *n = o->via.bin.size;
    return 0;
}

int msg_obj_array(const msgpack_object *o, const msgpack_object **items, uint32_t *n)
{
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return -1;
    *items = o->via.array.ptr;
    *n = o->via.array.size;
    return 0;
}

int msg_obj_is_nil(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_NIL;
}

int msg_obj_is_str(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_STR;
}

const msgpack_object *msg_obj_at(const msgpack_object *items, uint32_t i)
{
    return &items[i];
}

static int field_err(const msg *m, const char *key, const char *want, sl_err *err)
{
    return sl_err_setc(err, SL_INVALID, "malformed %s message: field \"%s\" is missing or not %s",
                       msg_type_name(m->type), key, want);
}

int msg_get_str(const msg *m, const char *key, const char **p, size_t *n, sl_err *err)
{
    const msgpack_object *o = msg_get(m, key);
    return o && msg_obj_str(o, p, n) == 0 ? 0 : field_err(m, key, "a string", err);
}

int msg_get_int(const msg *m, const char *key, int64_t *v, sl_err *err)
{
    const msgpack_object *o = msg_get(m, key);
    return o && msg_obj_int(o, v) == 0 ? 0 : field_err(m, key, "an integer", err);
}

int msg_get_bin(const msg *m, const char *key, const uint8_t **p, size_t *n, sl_err *err)
{
    const msgpack_object *o = msg_get(m, key);
    return o && msg_obj_bin(o, p, n) == 0 ? 0 : field_err(m, key, "binary", err);
}

int msg_get_array(const msg *m, const char *key, const msgpack_object **items, uint32_t *n,
                  sl_err *err)
{
    const msgpack_object *o = msg_get(m, key);
    return o && msg_obj_array(o, items, n) == 0 ? 0 : field_err(m, key, "an array", err);
}

/* A big-endian unsigned integer of w bytes (a msgpack length). */
static uint64_t be_uint(const uint8_t *p, size_t w)
{
    uint64_t n = 0;
    for (size_t k = 0; k < w; k++)
        n = n << 8 | p[k];
    return n;
}

/* Walks the msgpack bytes before msgpack-c sees them: its unpacker
 * allocates what a header declares, sizeof(msgpack_object) for every item
 * of an array and two for every pair of a map, so a 5-byte "array of 2^32
 * items", or 1 MB of lz4 that expands to 256 MiB of nils (6 GB of
 * objects), must be refused here. Every declared item needs at least one
 * byte, every declared string or binary must fit (msgpack-c points into
 * the buffer for those), and all the items declared together stay within
 * MSG_MAX_ITEMS. Returns WALK_*; *items gets the count. */
static int msgpack_walk(const uint8_t *p, size_t len, uint64_t *items_out)
{
    size_t pos = 0;
    uint64_t pending = 1, total = 0;
    while (pending > 0) {
        if (pos >= len)
            return WALK_MALFORMED;
        uint8_t c = p[pos++];
        pending--;
        uint64_t skip = 0, items = 0;
        size_t hdr = 0;
        if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) {
            ;
        } else if (c >= 0x80 && c <= 0x8f) {
            items = 2ull * (c & 0x0f);
        } else if (c >= 0x90 && c <= 0x9f) {
            items = c & 0x0f;
        } else if (c >= 0xa0 && c <= 0xbf) {
            skip = c & 0x1f;
        } else {
            switch (c) {
            case 0xc4:
            case 0xd9:
                hdr = 1;
                break; /* bin8, str8 */
            case 0xc5:
            case 0xda:
                hdr = 2;
                break;
            case 0xc6:
            case 0xdb:
                hdr = 4;
                break;
            case 0xc7:
                hdr = 1;
                skip = 1;
                break; /* ext8: len + type */
            case 0xc8:
                hdr = 2;
                skip = 1;
                break;
            case 0xc9:
                hdr = 4;
                skip = 1;
                break;
            case 0xca:
                skip = 4;
                break;
            case 0xcb:
                skip = 8;
                break;
            case 0xcc:
            case 0xd0:
                skip = 1;
                break;
            case 0xcd:
            case 0xd1:
                skip = 2;
                break;
            case 0xce:
            case 0xd2:
                skip = 4;
                break;
            case 0xcf:
            case 0xd3:
                skip = 8;
                break;
            case 0xd4:
                skip = 2;
                break; /* fixext */
            case 0xd5:
                skip = 3;
                break;
            case 0xd6:
                skip = 5;
                break;
            case 0xd7:
                skip = 9;
                break;
            case 0xd8:
                skip = 17;
                break;
            case 0xdc:
            case 0xdd:
            case 0xde:
            case 0xdf: {
                size_t w = (c == 0xdc || c == 0xde) ? 2 : 4;
                if (len - pos < w)
                    return WALK_MALFORMED;
                uint64_t n = be_uint(p + pos, w);
                pos += w;
                items = c >= 0xde ? 2 * n : n;
                break;
            }
            default:
                return WALK_MALFORMED; /* 0xc1: never used */
            }
        }
        if (hdr) {
            if (len - pos < hdr)
                return WALK_MALFORMED;
            skip += be_uint(p + pos, hdr);
            pos += hdr;
        }
        if (skip > len - pos)
            return WALK_MALFORMED;
        pos += skip;
        pending += items;
        if (pending > len - pos)
            return WALK_MALFORMED;
        total += items;
        if (total > MSG_MAX_ITEMS) {
            *items_out = total;
            return WALK_TOO_MANY;
        }
    }
    *items_out = total;
    return WALK_OK;
}

msg *msg_decode(const void *frame, size_t len, sl_err *err)
{
    const uint8_t *f = frame;
    if (len < 2)
        return sl_err_setc(err, SL_INVALID, "malformed message: frame of %zu bytes is too short",
                           len),
               NULL;
    if (f[0] > 1)
        return sl_err_setc(err, SL_INVALID, "malformed message: unknown frame flags 0x%02x", f[0]),
               NULL;
    msg *m = calloc(1, sizeof *m);
    if (!m)
        return sl_err_set(err, "out of memory"), NULL;
    msgpack_unpacked_init(&m->up);
    const char *body = (const char *)f + 1;
    size_t blen = len - 1;
    if (f[0] & 1) {
        if (len < 6) {
            sl_err_setc(err, SL_INVALID, "malformed message: compressed frame is truncated");
            goto fail;
        }
        uint32_t raw = (uint32_t)f[1] << 24 | (uint32_t)f[2] << 16 | (uint32_t)f[3] << 8 | f[4];
        if (raw == 0 || raw > MSG_MAX_RAW) {
            sl_err_setc(err, SL_INVALID, "malformed message: compressed length %u out of bounds",
                        raw);
            goto fail;
        }
        /* an lz4 block expands at most 255-fold (a length byte of 255 per
         * 255 bytes out): a claim beyond that is a lie, refused before the
         * buffer is allocated */
        if ((uint64_t)raw > (uint64_t)(len - 5) * 255 + 32) {
            sl_err_setc(err, SL_INVALID, "malformed message: %zu bytes of lz4 cannot expand to %u",
                        len - 5, raw);
            goto fail;
        }
        m->raw = malloc(raw);
        if (!m->raw) {
            sl_err_set(err, "out of memory");
            goto fail;
        }
        int d = LZ4_decompress_safe((const char *)f + 5, m->raw, (int)(len - 5), (int)raw);
        if (d != (int)raw) {
            sl_err_setc(err, SL_INVALID, "malformed message: lz4 body does not decompress");
            goto fail;
        }
        body = m->raw;
        blen = raw;
    } else {
        /* msgpack-c's objects point into the buffer they were read from:
         * keep our own copy so the caller may free the frame */
        m->raw = malloc(blen);
        if (!m->raw) {
            sl_err_set(err, "out of memory");
            goto fail;
        }
        memcpy(m->raw, body, blen);
        body = m->raw;
    }
    size_t off = 0;
    uint64_t items;
    int walk = msgpack_walk((const uint8_t *)body, blen, &items);
    if (walk == WALK_TOO_MANY) {
        sl_err_set(err,
                   "malformed message: body declares over %u msgpack items (the per-frame "
                   "limit)",
                   MSG_MAX_ITEMS);
        goto fail;
    }
    if (walk != WALK_OK) {
        sl_err_setc(err, SL_INVALID, "malformed message: body is not well-formed msgpack");
        goto fail;
    }
    if (msgpack_unpack_next(&m->up, body, blen, &off) != MSGPACK_UNPACK_SUCCESS) {
        sl_err_setc(err, SL_INVALID, "malformed message: body is not complete msgpack");
        goto fail;
    }
    if (off != blen) {
        sl_err_setc(err, SL_INVALID, "malformed message: %zu trailing bytes after the body",
                    blen - off);
        goto fail;
    }
    if (m->up.data.type != MSGPACK_OBJECT_MAP) {
        sl_err_setc(err, SL_INVALID, "malformed message: body is not a map");
        goto fail;
    }
    int64_t v, t, id = 0;
    const msgpack_object *o = msg_get(m, "v");
    if (!o || msg_obj_int(o, &v) != 0) {
        sl_err_setc(err, SL_INVALID, "malformed message: no protocol version");
        goto fail;
    }
    if (v != MSG_VERSION) {
        sl_err_setc(err, SL_INVALID,
                    "message of protocol version %lld; this sluice speaks version %d", (long long)v,
                    MSG_VERSION);
        goto fail;
    }
    o = msg_get(m, "t");
    if (!o || msg_obj_int(o, &t) != 0 || t <= 0 || t >= MSG_TYPE_END) {
        sl_err_setc(err, SL_INVALID, "malformed message: missing or unknown type");
        goto fail;
    }
    o = msg_get(m, "id");
    if (o && msg_obj_int(o, &id) != 0) {
        sl_err_setc(err, SL_INVALID, "malformed message: id is not an integer");
        goto fail;
    }
    m->type = (int)t;
    m->id = (uint64_t)id;
    return m;
fail:
    msg_free(m);
    return NULL;
}

int msg_type(const msg *m)
{
    return m->type;
}
uint64_t msg_id(const msg *m)
{
    return m->id;
}

static int error_frame(uint64_t id, int code, const char *message, sl_buf *out)
{
    msg_writer *w = msg_writer_new(MSG_ERROR, id);
    if (!w)
        return -1;
    msg_put_cstr(w, "error", message);
    msg_put_cstr(w, "code", sl_code_name(code));
    int r = msg_writer_finish(w, out, NULL);
    msg_writer_free(w);
    return r;
}

int msg_error_frame(uint64_t id, const char *message, sl_buf *out)
{
    return error_frame(id, SL_INTERNAL, message, out);
}

int msg_error_reply(uint64_t id, const sl_err *e, sl_buf *out)
{
    int code = e->code > SL_OK ? e->code : SL_INTERNAL;
    return error_frame(id, code, e->msg, out);
}

int msg_error_read(const msg *m, sl_err *e)
{
    const char *s = NULL;
    size_t n = 0;
    /* a code the sender did not give, or one this version does not know,
     * or "ok" on a failure, is SL_INTERNAL: never mistaken for a cause */
    int code = SL_INTERNAL;
    if (msg_get_str(m, "code", &s, &n, NULL) == 0)
        code = sl_code_from_name(s, n);
    if (code == SL_OK)
        code = SL_INTERNAL;
    if (msg_get_str(m, "error", &s, &n, NULL) != 0)
        n = 0;
    const char *nul = n ? memchr(s, 0, n) : NULL;
    if (nul) /* the message is a C string: it ends there */
        n = (size_t)(nul - s);
    if (n > 0)
        return sl_err_setc(e, code, "%.*s", n > 511 ? 511 : (int)n, s);
    return sl_err_setc(e, code, "a peer failed without saying why");
}
