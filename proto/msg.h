/* msg: the wire messages between coordinator, workers and clients.
 *
 * A frame is one flag byte followed by a body. Flag bit 0 set: the body is
 * a 4-byte big-endian raw length plus an lz4 block (used for bodies over
 * MSG_COMPRESS_MIN bytes); clear: the body is the msgpack bytes themselves.
 * The msgpack is always a map holding "v" (protocol version), "t" (message
 * type) and "id" (request id, echoed by the reply), plus the type's fields
 * documented in proto/README.md.
 *
 * Decoding never trusts the sender: a frame that is truncated, not msgpack,
 * not a map, of another version or of an unknown type yields an error, and
 * every accessor checks the field's type.
 *
 * Only proto/ calls msgpack-c (proto/README.md, "Layering"): the rest of the
 * tree writes through msg_writer and msg_items and reads msg_obj values
 * through the functions below, never their fields.
 */
#ifndef MSG_H
#define MSG_H

#include <stddef.h>
#include <stdint.h>

#include "../base/sl.h"
#include "msg_types.h"

#define MSG_VERSION 1
#define MSG_COMPRESS_MIN 4096
/* Per-frame limits, checked before anything is allocated for a frame (see
 * proto/README.md): the msgpack body at most MSG_MAX_RAW bytes (after lz4),
 * declaring at most MSG_MAX_ITEMS items (array elements, map keys and
 * values), which bounds msgpack-c's objects to 24 bytes each, 96 MiB. */
#define MSG_MAX_RAW (64u << 20)
#define MSG_MAX_ITEMS (4u << 20)

/* Big values and big replies (proto/README.md, "Sizes"). A fetch reply
 * ships a value whole when it is at most MSG_VALUE_MAX bytes and the row
 * has shipped less than MSG_ROW_WHOLE_MAX so far; any other value over
 * MSG_PREFIX_MAX bytes travels as a digest [head, length, XXH3-128] with
 * the first MSG_PREFIX_MAX bytes of its display text. A rows or fetch reply
 * stops taking rows past MSG_REPLY_SOFT_MAX bytes and says where it
 * stopped; the coordinator asks for the rest. */
#define MSG_VALUE_MAX (64u << 10)
#define MSG_PREFIX_MAX 1024u
#define MSG_ROW_WHOLE_MAX (1u << 20)
#define MSG_REPLY_SOFT_MAX (8u << 20)

enum msg_type {
#define MSG_TYPE_ENUM(name, num, str, dir, fields, required) MSG_##name = num,
    MSG_TYPES(MSG_TYPE_ENUM)
#undef MSG_TYPE_ENUM
        MSG_TYPE_END
};

const char *msg_type_name(int type);

/* The type table of proto/README.md, as it follows from MSG_TYPES: the
 * header and one row per type. 0, or -1 when memory runs out. */
int msg_types_markdown(sl_buf *out);

/* ---- writing -------------------------------------------------------- */

typedef struct msg_writer msg_writer;

/* Starts a message of type with request id (v, t and id are added); the
 * writer counts the fields that follow. NULL when memory runs out. */
msg_writer *msg_writer_new(int type, uint64_t id);
void msg_writer_free(msg_writer *w);

/* Writes a field's key; follow it with exactly one value written by the
 * msg_pack_* calls (arrays: msg_pack_array then its items). */
void msg_key(msg_writer *w, const char *key);
void msg_pack_int(msg_writer *w, int64_t v);
void msg_pack_uint(msg_writer *w, uint64_t v);
void msg_pack_str(msg_writer *w, const char *s, size_t n);
void msg_pack_cstr(msg_writer *w, const char *s); /* NULL packs nil */
void msg_pack_bin(msg_writer *w, const void *p, size_t n);
void msg_pack_nil(msg_writer *w);
void msg_pack_array(msg_writer *w, uint32_t n);
/* A whole field: msg_key then the value. */
void msg_put_int(msg_writer *w, const char *key, int64_t v);
void msg_put_uint(msg_writer *w, const char *key, uint64_t v);
void msg_put_cstr(msg_writer *w, const char *key, const char *s);
/* Appends bytes that are already msgpack (items packed elsewhere). */
void msg_pack_raw(msg_writer *w, const void *p, size_t n);

/* Writes the finished frame into out (reset first). Returns 0 or -1 (also
 * when memory ran out while packing, here or in msg_items it carries). */
int msg_writer_finish(msg_writer *w, sl_buf *out, sl_err *err);
/* Sends big bodies uncompressed (flag 0x00) from now on: where sender and
 * reader share a process (inproc://), lz4 is pure cost. */
void msg_writer_no_compress(msg_writer *w);

/* Items packed before the message that carries them is begun: a worker
 * packs reply rows as the database streams them and only then knows the
 * reply's other fields (and how many rows there are). One buffer, grown
 * geometrically and kept across msg_items_reset: packing an item allocates
 * nothing once it has grown, and msg_pack_items copies the bytes once. */
typedef struct msg_items msg_items;

msg_items *msg_items_new(void); /* NULL when memory runs out */
void msg_items_free(msg_items *it);
void msg_items_reset(msg_items *it); /* drops the items, keeps the buffer */
/* One item each, as msg_pack_*; an array is msg_items_array(n) followed by
 * its n items. */
void msg_items_array(msg_items *it, uint32_t n);
void msg_items_bin(msg_items *it, const void *p, size_t n);
void msg_items_str(msg_items *it, const char *s, size_t n);
void msg_items_nil(msg_items *it);
void msg_items_uint(msg_items *it, uint64_t v);
/* Bytes packed so far (what msg_pack_items will add to a message). */
size_t msg_items_size(const msg_items *it);
/* Appends the items of it to w, e.g. after msg_pack_array(w, count of them). A
 * failed allocation while packing it makes msg_writer_finish fail. */
void msg_pack_items(msg_writer *w, const msg_items *it);

/* ---- reading -------------------------------------------------------- */

typedef struct msg msg;

/* Decodes a frame. Returns NULL with err set on any malformation. */
msg *msg_decode(const void *frame, size_t len, sl_err *err);
void msg_free(msg *m);

int msg_type(const msg *m);
/* Whether m has the fields its type requires, of the kinds MSG_TYPES
 * says. 0, or -1 with err (SL_INVALID) naming the first one missing or of
 * another kind. Receivers call it before reading a request's fields. */
int msg_check_fields(const msg *m, sl_err *err);

uint64_t msg_id(const msg *m);

/* A decoded value. Opaque outside proto/ (it is msgpack-c's object, which
 * only msg.c looks into): handle it by pointer, through the msg_obj_*
 * functions; index an array with msg_obj_at. Pointers point into their msg
 * and live as long as it. */
typedef struct msgpack_object msg_obj;

/* The field's value, or NULL when absent. */
const msg_obj *msg_get(const msg *m, const char *key);

/* Typed field getters: 0 on success, -1 (err names the field) when absent
 * or of the wrong type. Pointers point into m. */
int msg_get_str(const msg *m, const char *key, const char **p, size_t *n, sl_err *err);
int msg_get_int(const msg *m, const char *key, int64_t *v, sl_err *err);
int msg_get_bin(const msg *m, const char *key, const uint8_t **p, size_t *n, sl_err *err);
int msg_get_array(const msg *m, const char *key, const msg_obj **items, uint32_t *n, sl_err *err);

/* The same checks on a value inside an array: 0, or -1 when o is of
 * another type. */
int msg_obj_int(const msg_obj *o, int64_t *v);
int msg_obj_str(const msg_obj *o, const char **p, size_t *n);
int msg_obj_bin(const msg_obj *o, const uint8_t **p, size_t *n);
int msg_obj_array(const msg_obj *o, const msg_obj **items, uint32_t *n);
/* Questions on a value's type: 1 or 0. */
int msg_obj_is_nil(const msg_obj *o);
int msg_obj_is_str(const msg_obj *o);
/* Item i of an array's items (from msg_get_array or msg_obj_array); i must
 * be below the array's count. */
const msg_obj *msg_obj_at(const msg_obj *items, uint32_t i);

/* Builds an ERROR reply frame for request id, of code "internal". */
int msg_error_frame(uint64_t id, const char *message, sl_buf *out);

/* Builds an ERROR reply frame for request id: "error" is e->msg, "code"
 * the name of e->code (sl_code_name; unset is "internal"). 0 or -1. */
int msg_error_reply(uint64_t id, const sl_err *e, sl_buf *out);

/* Reads an ERROR reply m into e: e->code from its "code" (absent, unknown
 * or "ok": SL_INTERNAL), e->msg from its "error" (absent or empty: "a peer
 * failed without saying why"). Returns -1, so a caller can write
 * `return msg_error_read(m, err)`. */
int msg_error_read(const msg *m, sl_err *e);

#endif
