/* enc: canonical encoding v2 — the contract that makes cross-database diffs
 * correct. Two rows are equal exactly when their encodings are equal. The
 * value-by-value rules are in merkle/README.md; change them only by bumping
 * ENC_VERSION.
 *
 * Values arrive as an enc_val in whatever form the database handed them out
 * (text from PostgreSQL, typed values from SQLite) together with the column's
 * comparison class, chosen by the coordinator so both sides normalize alike.
 */
#ifndef ENC_H
#define ENC_H

#include <stddef.h>
#include <stdint.h>

#include "../base/sl.h"

#define ENC_VERSION 2

/* Most columns one comparison reads, key columns included: PostgreSQL's own
 * limit per table (wider tables are compared on a --columns selection).
 * CO_MAX_COLS and CONN_MAX_COLS are this limit under their modules' names. */
#define ENC_MAX_COLS 1600

/* Most columns a key may have: workers, coordinator and client size their
 * per-key arrays by it, and a range's bounds bind two parameters each. */
#define ENC_MAX_KEY_COLS 32

enum enc_class {
    ENC_INT = 1,
    ENC_NUMERIC,
    ENC_FLOAT,
    ENC_BOOL,
    ENC_TEXT,
    ENC_BYTEA,
    ENC_DATE,
    ENC_TIMESTAMP,
    ENC_TIMESTAMPTZ,
    ENC_UUID,
    ENC_JSON,
    ENC_OTHER,
    ENC_CLASS_END
};

typedef enum {
    ENC_V_NULL,
    ENC_V_TEXT,
    ENC_V_INT,
    ENC_V_FLOAT,
    ENC_V_BLOB,
    ENC_V_DEC, /* p/len: a decimal already in canonical form (enc_decimal) */
    ENC_V_TIME /* i: microseconds since 1970-01-01 UTC, years 1..9999 */
} enc_vkind;

/* A value as read. p/len hold TEXT, BLOB and DEC bytes (not NUL-terminated).
 * DEC and TIME let a driver that reads binary values skip the text round
 * trip; they encode exactly as the database's text form of the same value. */
typedef struct enc_val {
    enc_vkind kind;
    const char *p;
    size_t len;
    int64_t i;
    double d;
} enc_val;

/* Flags for enc_value. ENC_STRICT keeps the class in the encoding, so an
 * integer 10 and a numeric 10.0 differ. ENC_GRID (the *_tol functions,
 * hashing): a number under an epsilon is encoded as its grid cell
 * (merkle/tol.h); without it, exactly, as a fetch must ship it. */
enum { ENC_STRICT = 1, ENC_GRID = 2 };

struct enc_tol;

/* "int", "numeric", ... ; "?" for an unknown class. */
const char *enc_class_name(int cls);

/* The class both sides of a column are encoded with, or 0 when the two
 * classes cannot be compared (e.g. uuid against integer). */
int enc_class_common(int a, int b, int flags);

/* Appends the canonical encoding of v, read as class cls, to out.
 * Returns 0, or -1 when memory runs out. Values that do not parse as their
 * class (a date column holding "hello") fall back to a tagged text form, so
 * they compare unequal to any well-formed value rather than failing. */
int enc_value(sl_buf *out, int cls, const enc_val *v, int flags);

/* enc_value over a row's n values, read as classes cls[0..n) (one call a
 * row: it runs for every row). */
int enc_values(sl_buf *out, const int *cls, const enc_val *v, size_t n, int flags);

/* enc_value under a column's tolerance t (merkle/tol.h; NULL: exact):
 * a timestamp rounded to its precision, text trimmed or case-folded, and
 * with ENC_GRID a number replaced by its grid cell. */
int enc_value_tol(sl_buf *out, int cls, const enc_val *v, int flags, const struct enc_tol *t);

/* Whether a column of this class can be part of a key (ordered, splittable). */
int enc_key_is_supported(int cls);

/* Appends the order-preserving encoding of one key column: memcmp over the
 * concatenated encodings of a composite key gives the databases' key order
 * (PostgreSQL COLLATE "C", SQLite BINARY). Fails on NULL or unparsable input. */
int enc_key(sl_buf *out, int cls, const enc_val *v, sl_err *err);

/* Splits an encoded key of ncols columns back into values fit to bind as
 * parameters. Pointers in out[] point into scratch, which is reset first and
 * must outlive out[]. */
int enc_key_decode(const uint8_t *key, size_t len, size_t ncols, sl_buf *scratch, enc_val *out,
                   sl_err *err);

/* Checks that key is exactly what enc_key writes for ncols columns of
 * classes cls[0..ncols): each column's tag is its class's, escapes are
 * intact, nothing is left over. 0, or -1 with err saying what is wrong. For
 * keys that arrive from another process, before they are trusted. */
int enc_key_check(const uint8_t *key, size_t len, const int *cls, size_t ncols, sl_err *err);

/* Writes the canonical form of (neg ? -1 : 1) * digits * 10^exp, digits
 * being nd ASCII digits (leading and trailing zeros allowed, any number of
 * them), to dst, which holds at least nd + 24 bytes. Returns its length. */
size_t enc_decimal(char *dst, int neg, const char *digits, size_t nd, long exp);

/* The same for (neg ? -1 : 1) * m * 10^exp; dst holds at least 48 bytes. */
size_t enc_decimal_u64(char *dst, int neg, uint64_t m, long exp);

/* Year, month and day (proleptic Gregorian; year 0 is 1 BC) of a day
 * count since 1970-01-01 (H. Hinnant's method). */
void enc_civil(int64_t days, int64_t *y, unsigned *m, unsigned *d);

/* Appends a human-readable text form of v (no quoting; NULL appends nothing). */
int enc_display(sl_buf *out, const enc_val *v);

/* XXH3-128 of an encoded row, big-endian bytes. */
void enc_hash(const void *p, size_t len, uint8_t out[16]);

/* ---- big values --------------------------------------------------------
 * A value of hundreds of megabytes is hashed where the driver left it, never
 * copied into an encoding buffer, and travels to the coordinator only as a
 * digest. Text and bytea (read as bytes or as PostgreSQL's hex text) stream;
 * other classes (json, ...) are encoded into scratch first. */

/* Values longer than this (bytes as read) take the streaming path. */
#define ENC_VALUE_INLINE_MAX (64u << 10)

/* The same 16 bytes as enc_hash over enc_values(cls, v, n, flags), without
 * a copy of any text or bytea value longer than ENC_VALUE_INLINE_MAX.
 * scratch is reused (reset first). Returns 0, or -1 when memory runs out. */
int enc_hash_values(sl_buf *scratch, const int *cls, const enc_val *v, size_t n, int flags,
                    uint8_t out[16]);

/* The same under per-column tolerances tol[0..n) (NULL: all exact), each
 * value encoded as enc_value_tol encodes it. */
int enc_hash_values_tol(sl_buf *scratch, const int *cls, const struct enc_tol *tol,
                        const enc_val *v, size_t n, int flags, uint8_t out[16]);

/* A value's encoding in short: the head (tag, and class in strict mode),
 * the payload's length and the XXH3-128 of the payload (canonical
 * big-endian, as xxh128sum prints it; for text its UTF-8 bytes, for bytea
 * its bytes). Two values encode alike exactly when their digests are equal
 * (hash collisions aside). */
typedef struct enc_digest {
    uint8_t head[2];
    uint8_t nhead;
    uint64_t len;
    uint8_t hash[16];
} enc_digest;

/* The digest of v read as cls, hashing text and bytea in place. */
int enc_value_digest(sl_buf *scratch, int cls, const enc_val *v, int flags, enc_digest *d);
/* The same for enc_value_tol's encoding (t NULL: exact). */
int enc_value_digest_tol(sl_buf *scratch, int cls, const enc_val *v, int flags,
                         const struct enc_tol *t, enc_digest *d);

/* The digest of one value's encoding (as enc_value wrote it). -1 when e is
 * not one encoded value. */
int enc_digest_encoded(const uint8_t *e, size_t n, int flags, enc_digest *d);
int enc_digest_equal(const enc_digest *a, const enc_digest *b);

/* enc_display cut to at most about max bytes: text at a UTF-8 character
 * boundary, bytea as "\x" and the hex of its first bytes. */
int enc_display_prefix(sl_buf *out, const enc_val *v, size_t max);

#endif
