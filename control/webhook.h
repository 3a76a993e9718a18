/* ct_webhook: audit events POSTed to a URL, never blocking the caller.
 *
 * ct_webhook_post queues a copy of the JSON body and returns at once; a
 * thread of its own sends each in order (HTTP/1.1 POST, Content-Type
 * application/json, http:// URLs on any host) and retries a failure (no
 * connection, a timeout, a status other than 2xx) with backoff (0.5 s,
 * doubling, at most 30 s between tries) up to max_tries, then drops it
 * with one line on the log. The queue is bounded: when full the oldest is
 * dropped and counted.
 */
#ifndef CT_WEBHOOK_H
#define CT_WEBHOOK_H

#include <stddef.h>
#include <stdint.h>

#include "../base/sl.h"

typedef struct ct_webhook ct_webhook;

typedef struct ct_webhook_opts {
    const char *url;  /* http://host[:port]/path */
    int timeout_ms;   /* per try; 0: 5000 */
    int max_tries;    /* 0: 8 */
    size_t max_queue; /* 0: 1000 */
    /* called from the webhook thread for each line worth logging (a
     * delivery given up, drops); may be NULL */
    void (*log)(void *ctx, const char *line);
    void *log_ctx;
} ct_webhook_opts;

/* NULL with err for a URL it cannot send to (not http://, no host). */
ct_webhook *ct_webhook_new(const ct_webhook_opts *o, sl_err *err);
/* Stops the thread after at most one more try in progress; what is still
 * queued is dropped (counted). */
void ct_webhook_free(ct_webhook *w);
/* 0, or -1 when memory runs out. */
int ct_webhook_post(ct_webhook *w, const char *json, size_t len);

typedef struct ct_webhook_stats {
    uint64_t queued, delivered, retried, dropped;
} ct_webhook_stats;
void ct_webhook_stats_get(ct_webhook *w, ct_webhook_stats *out);

#endif
