/* co_metrics: the drift history as Prometheus metrics, served over HTTP
 * beside the coordinator (`sluice coordinator --metrics HOST:PORT`).
 *
 * It opens a store of its own on the coordinator's --state and answers
 * GET /metrics from libmicrohttpd's one thread: the newest drift row of
 * each table and kind (audit, scrub, changes), read at scrape time. The
 * coordinator's loop is never touched. */
#ifndef CO_METRICS_H
#define CO_METRICS_H

#include "../base/sl.h"
#include "store.h"

typedef struct co_metrics co_metrics;

/* Serves on host (IPv4) and port (0: any free one). NULL with err. */
co_metrics *co_metrics_start(const char *state, const char *host, int port, sl_err *err);
int co_metrics_port(const co_metrics *m);
void co_metrics_stop(co_metrics *m);

/* The exposition text (Prometheus text format 0.0.4) of s's newest drift
 * rows; malloc'd, NULL with err. */
char *co_metrics_text(co_store *s, sl_err *err);

#endif
