/* server: the long-running coordinator. It binds three ZeroMQ endpoints —
 * a ROUTER for workers, a ROUTER for clients (submit, status, cancel,
 * workers) and a PUB socket for events (divergence, progress, job state) —
 * and runs the queued jobs, many at once, keeping everything in the
 * control database so that a restarted coordinator resumes where it was.
 */
#ifndef SERVER_H
#define SERVER_H

#include <signal.h>

#include "../base/sl.h"

/* A scheduled audit: a submit frame queued again every interval_s seconds
 * (not while its previous run is still queued or running). */
typedef struct co_schedule {
    const char *name;
    int interval_s;
    const void *spec;
    size_t len;
} co_schedule;

typedef struct co_server_config {
    const char *workers_endpoint;
    const char *clients_endpoint;
    const char *events_endpoint;
    const char *state; /* control database: "sqlite:PATH" or a path */
    int heartbeat_timeout_ms;
    int request_timeout_ms; /* 0: the default (co_set_request_timeout) */
    size_t max_jobs;        /* jobs run at once; 0: 16 (more wait queued) */
    int verbose;            /* log job starts and ends to stderr */
    const co_schedule *schedule;
    size_t nschedule;
    const char *curve_secret;         /* Z85; NULL: no CURVE */
    const char *const *curve_clients; /* Z85 public keys allowed; NULL: any */
    size_t ncurve_clients;
} co_server_config;

/* Checks that a submit frame describes a valid job; 0 or -1 with err. */
int co_server_check_spec(const void *frame, size_t len, sl_err *err);

typedef struct co_server co_server;

co_server *co_server_new(const co_server_config *cfg, sl_err *err);
void co_server_free(co_server *s);

/* Serves until *stop becomes non-zero. A job running then is left
 * "running" in the control database and resumes at the next start. */
int co_server_run(co_server *s, volatile sig_atomic_t *stop, sl_err *err);

#endif
