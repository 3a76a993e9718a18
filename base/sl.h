/* base: the two value types every sluice module shares.
 *
 * sl_err  — an error a library function fills instead of printing: a code
 *           for programs (what kind of failure, enum sl_code) and a one-line
 *           message for people; the caller (only cli/) decides what to show
 *           and which exit status to use.
 * sl_buf  — a growable byte buffer, reused across rows so hot paths do not
 *           allocate once it has reached its working size.
 * And the two clocks every module reads: sl_now, sl_wall_ms.
 */
#ifndef SL_H
#define SL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* What kind of failure an sl_err is, for programs to branch on (error
 * replies carry its name, see sl_code_name; an HTTP API maps it to a
 * status). Set where the cause is known; anything unset is SL_INTERNAL. */
enum sl_code {
    SL_OK = 0,      /* unset: no error recorded yet */
    SL_INVALID,     /* a request, option, DSN or table the caller can fix */
    SL_NOT_FOUND,   /* a named thing is not there (table, database, job, tree) */
    SL_BUSY,        /* try again later (a lock held, no capacity) */
    SL_LOST_WORKER, /* a worker went away mid-task */
    SL_DATABASE,    /* the database failed or could not be reached */
    SL_AUTH,        /* a credential or permission was refused */
    SL_INTERNAL     /* anything else: out of memory, a bug, a peer's garbage */
};

/* code first, so `sl_err e = {0};` starts unset */
typedef struct sl_err {
    int code; /* enum sl_code */
    char msg[512];
} sl_err;

/* Formats msg into err (if err is not NULL) and returns -1, so callers can
 * write `return sl_err_set(err, "...")`. The code is kept when one is set
 * (a message rewritten around an inner error keeps its cause), else
 * becomes SL_INTERNAL: an sl_err reused for an unrelated operation must
 * start again from {0}. */
int sl_err_set(sl_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* As sl_err_set, with the code given (it replaces any code set before). */
int sl_err_setc(sl_err *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Prefixes err->msg with a context string: "reading source: <old msg>".
 * Keeps the code. */
int sl_err_wrap(sl_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The code's name on the wire: "ok", "invalid", "not_found", "busy",
 * "lost_worker", "database", "auth", "internal" ("internal" for a number
 * out of range). */
const char *sl_code_name(int code);

/* The code named by s[0..n), SL_INTERNAL for an unknown name. */
int sl_code_from_name(const char *s, size_t n);

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

/* Monotonic seconds (CLOCK_MONOTONIC): for timeouts and durations, never
 * shown as a date. */
double sl_now(void);

/* The same clock in whole milliseconds. */
static inline int64_t sl_now_ms(void)
{
    return (int64_t)(sl_now() * 1000);
}

/* Wall-clock milliseconds since 1970 (CLOCK_REALTIME): for timestamps that
 * leave the process. */
int64_t sl_wall_ms(void);

#endif
