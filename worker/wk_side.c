#include "wk_side.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A batch of copied rows: n rows of ncols values each. While the thread
 * fills it, a value's p is an offset into arena (which may move as it
 * grows); the reader turns offsets into pointers when it takes the batch. */
typedef struct batch {
    struct batch *next;
    sl_buf vals; /* enc_val[n * ncols] */
    sl_buf arena;
    size_t n;
} batch;

/* Invariants: queued batches are full (or the last of the read) and owned
 * by the queue; fill is the thread's alone, cur the reader's alone; the
 * lock guards head, nqueued, spare, done, rc and err. */
struct wk_side {
    conn *c;
    const conn_query *q;
    const mk_bound *lo, *hi;
    pthread_t th;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a batch queued, a batch taken, the end, a stop */
    batch *head, **tail, *spare;
    size_t nqueued;
    batch *fill; /* the thread's */
    batch *cur;  /* the reader's, and its next row */
    size_t ci;
    int done, rc;
    sl_err err;
    atomic_int stop;
    uint64_t rows;
};

static int has_bytes(enc_vkind k)
{
    return k == ENC_V_TEXT || k == ENC_V_BLOB || k == ENC_V_DEC;
}

static void batch_free(batch *b)
{
    if (!b)
        return;
    sl_buf_free(&b->vals);
    sl_buf_free(&b->arena);
    free(b);
}

/* An empty batch: a spare one when there is one (no allocation per batch
 * once the queue has filled), else a new one. */
static batch *batch_get(wk_side *s)
{
    pthread_mutex_lock(&s->mu);
    batch *b = s->spare;
    if (b)
        s->spare = b->next;
    pthread_mutex_unlock(&s->mu);
    if (!b)
        b = calloc(1, sizeof *b);
    if (b) {
        b->next = NULL;
        b->n = 0;
        sl_buf_reset(&b->vals);
        sl_buf_reset(&b->arena);
    }
    return b;
}

/* Hands the thread's batch to the reader, waiting while the queue is
 * full: -1 when the reader stopped the read meanwhile. */
static int push(wk_side *s)
{
    pthread_mutex_lock(&s->mu);
    while (s->nqueued >= WK_SIDE_QUEUE && !atomic_load(&s->stop))
        pthread_cond_wait(&s->cv, &s->mu);
    int stopped = atomic_load(&s->stop);
    if (!stopped) {
        *s->tail = s->fill;
        s->tail = &s->fill->next;
        s->nqueued++;
        s->fill = NULL;
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return stopped ? -1 : 0;
}

static int take_row(void *ctx, const enc_val *v, size_t n, sl_err *err)
{
    wk_side *s = ctx;
    if (atomic_load(&s->stop))
        return sl_err_set(err, "stopped");
    size_t bytes = 0;
    for (size_t k = 0; k < n; k++)
        bytes += has_bytes(v[k].kind) ? v[k].len : 0;
    batch *b = s->fill;
    if (b && (b->n >= WK_SIDE_BATCH_ROWS || b->arena.len + bytes > WK_SIDE_BATCH_BYTES)) {
        if (push(s))
            return sl_err_set(err, "stopped");
        b = NULL;
    }
    if (!b && !(b = s->fill = batch_get(s)))
        return sl_err_set(err, "out of memory");
    if (sl_buf_reserve(&b->vals, n * sizeof *v) || sl_buf_reserve(&b->arena, bytes))
        return sl_err_set(err, "out of memory");
    enc_val *out = (enc_val *)(void *)(b->vals.p + b->vals.len);
    for (size_t k = 0; k < n; k++) {
        out[k] = v[k];
        if (!has_bytes(v[k].kind)) {
            out[k].p = NULL;
            continue;
        }
        out[k].p = (const char *)(uintptr_t)b->arena.len;
        sl_buf_append(&b->arena, v[k].p, v[k].len); /* reserved above */
    }
    b->vals.len += n * sizeof *v;
    b->n++;
    return 0;
}

static void *run(void *arg)
{
    wk_side *s = arg;
    sl_err e = {0};
    int rc = conn_stream_range(s->c, s->q, s->lo, s->hi, take_row, s, &e);
    if (rc == 0 && s->fill && s->fill->n)
        push(s); /* fails only when stopped: nobody reads the rest */
    pthread_mutex_lock(&s->mu);
    s->done = 1;
    s->rc = rc;
    s->err = e;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

wk_side *wk_side_start(conn *c, const conn_query *q, const mk_bound *lo, const mk_bound *hi,
                       sl_err *err)
{
    wk_side *s = calloc(1, sizeof *s);
    if (!s)
        return sl_err_set(err, "out of memory"), NULL;
    *s = (wk_side){.c = c, .q = q, .lo = lo, .hi = hi};
    s->tail = &s->head;
    atomic_init(&s->stop, 0);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* timed waits immune to clock steps */
    int bad = pthread_mutex_init(&s->mu, NULL) || pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (bad) {
        free(s);
        return sl_err_set(err, "cannot create a lock"), NULL;
    }
    if (pthread_create(&s->th, NULL, run, s)) {
        wk_side_free(s, NULL, NULL);
        return sl_err_set(err, "cannot start a thread"), NULL;
    }
    s->started = 1;
    return s;
}

/* The reader takes the next queued batch: pointers from offsets. */
static void take_batch(wk_side *s)
{
    batch *b = s->head;
    if (!(s->head = b->next))
        s->tail = &s->head;
    s->nqueued--;
    b->next = NULL;
    enc_val *v = (enc_val *)(void *)b->vals.p;
    for (size_t k = 0; k < b->n * s->q->ncols; k++)
        if (has_bytes(v[k].kind))
            v[k].p = (const char *)b->arena.p + (uintptr_t)v[k].p;
    s->cur = b;
    s->ci = 0;
}

int wk_side_next(wk_side *s, int wait_ms, const enc_val **v, sl_err *err)
{
    if (!s->cur || s->ci >= s->cur->n) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += (long)wait_ms % 1000 * 1000000L;
        until.tv_sec += wait_ms / 1000 + until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        pthread_mutex_lock(&s->mu);
        if (s->cur) { /* done with it: a spare for the thread */
            s->cur->next = s->spare;
            s->spare = s->cur;
            s->cur = NULL;
        }
        int timed_out = 0;
        while (!s->head && !s->done && !timed_out)
            timed_out = pthread_cond_timedwait(&s->cv, &s->mu, &until) == ETIMEDOUT;
        int rc = s->head ? 1 : !s->done ? 2 : s->rc ? -1 : 0;
        if (rc == 1) {
            take_batch(s);
            pthread_cond_broadcast(&s->cv); /* room in the queue */
        } else if (rc == -1 && err) {
            *err = s->err;
        }
        pthread_mutex_unlock(&s->mu);
        if (rc != 1)
            return rc;
    }
    *v = (const enc_val *)(void *)s->cur->vals.p + s->ci++ * s->q->ncols;
    s->rows++;
    return 1;
}

uint64_t wk_side_rows(const wk_side *s)
{
    return s->rows;
}

static void batch_list_free(batch *b)
{
    while (b) {
        batch *n = b->next;
        batch_free(b);
        b = n;
    }
}

void wk_side_free(wk_side *s, void (*tick)(void *ctx), void *ctx)
{
    if (!s)
        return;
    if (s->started) {
        pthread_mutex_lock(&s->mu);
        atomic_store(&s->stop, 1);
        pthread_cond_broadcast(&s->cv);
        /* the thread may sit in a query the server has not answered yet:
         * the caller's heartbeats go on until it returns */
        while (!s->done) {
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_nsec += 20 * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&s->cv, &s->mu, &until);
            if (!s->done && tick) {
                pthread_mutex_unlock(&s->mu);
                tick(ctx);
                pthread_mutex_lock(&s->mu);
            }
        }
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->th, NULL);
    }
    batch_list_free(s->head);
    batch_list_free(s->spare);
    batch_free(s->fill);
    batch_free(s->cur);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}
