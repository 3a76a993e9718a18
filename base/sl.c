#include "sl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int sl_err_set(sl_err *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        if (err->code <= SL_OK || err->code > SL_INTERNAL)
            err->code = SL_INTERNAL;
    }
    return -1;
}

int sl_err_setc(sl_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code > SL_OK && code <= SL_INTERNAL ? code : SL_INTERNAL;
    }
    return -1;
}

static const char *const code_names[] = {"ok",          "invalid",  "not_found", "busy",
                                         "lost_worker", "database", "auth",      "internal"};

const char *sl_code_name(int code)
{
    return code >= SL_OK && code <= SL_INTERNAL ? code_names[code] : "internal";
}

int sl_code_from_name(const char *s, size_t n)
{
    for (int c = SL_OK; c <= SL_INTERNAL; c++)
        if (s && strlen(code_names[c]) == n && memcmp(code_names[c], s, n) == 0)
            return c;
    return SL_INTERNAL;
}

int sl_err_wrap(sl_err *err, const char *fmt, ...)
{
    if (err) {
        char prefix[256], old[sizeof err->msg];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(prefix, sizeof prefix, fmt, ap);
        va_end(ap);
        memcpy(old, err->msg, sizeof old);
        size_t n = strlen(prefix), m = strlen(old), cap = sizeof err->msg - 1;
        n = n < cap ? n : cap;
        memcpy(err->msg, prefix, n);
        if (n + 2 <= cap) {
            memcpy(err->msg + n, ": ", 2);
            n += 2;
        }
        m = m < cap - n ? m : cap - n;
        memcpy(err->msg + n, old, m);
        err->msg[n + m] = '\0';
        if (err->code <= SL_OK || err->code > SL_INTERNAL)
            err->code = SL_INTERNAL;
    }
    return -1;
}

int sl_buf_grow(sl_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->len < extra) {
        if (cap > SIZE_MAX / 2)
            return -1;
        cap *= 2;
    }
    uint8_t *p = realloc(b->p, cap);
    if (!p)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

int sl_buf_printf(sl_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || sl_buf_reserve(b, (size_t)n + 1) != 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf((char *)b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void sl_buf_free(sl_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

char *sl_buf_strdup(const sl_buf *b)
{
    char *s = malloc(b->len + 1);
    if (!s)
        return NULL;
    if (b->len)
        memcpy(s, b->p, b->len);
    s[b->len] = '\0';
    return s;
}

double sl_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int64_t sl_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
