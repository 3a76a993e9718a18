/* base: the two value types every sluice module shares.
 *
 * sl_err  — an error a library function fills instead of printing; the caller
 *           (only cli/) decides what to show and which exit status to use.
 * sl_buf  — a growable byte buffer, reused across rows so hot paths do not
 *           allocate once it has reached its working size.
 */
#ifndef SL_H
#define SL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct sl_err {
    char msg[512];
} sl_err;

/* Formats msg into err (if err is not NULL) and returns -1, so callers can
 * write `return sl_err_set(err, "...")`. */
int sl_err_set(sl_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefixes err->msg with a context string: "reading source: <old msg>". */
int sl_err_wrap(sl_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

typedef struct sl_buf {
    uint8_t *p;
    size_t len, cap;
} sl_buf;

/* All return 0, or -1 when memory runs out (the buffer is left as it was).
 * reserve, append and putc are inline: they run per value on the hot path,
 * where a call and a generic memcpy cost more than the copy. */
int sl_buf_grow(sl_buf *b, size_t extra);
static inline int sl_buf_reserve(sl_buf *b, size_t extra)
{
    return b->cap - b->len >= extra ? 0 : sl_buf_grow(b, extra);
}
static inline int sl_buf_append(sl_buf *b, const void *p, size_t n)
{
    if (sl_buf_reserve(b, n) != 0)
        return -1;
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}
static inline int sl_buf_putc(sl_buf *b, uint8_t c)
{
    if (sl_buf_reserve(b, 1) != 0)
        return -1;
    b->p[b->len++] = c;
    return 0;
}
int sl_buf_printf(sl_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void sl_buf_reset(sl_buf *b)
{
    b->len = 0;
}
void sl_buf_free(sl_buf *b);

/* Returns a malloc'd NUL-terminated copy of the buffer's contents, or NULL. */
char *sl_buf_strdup(const sl_buf *b);

#endif
