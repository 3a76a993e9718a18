/* ctl: the migration control plane (`sluice control`).
 *
 * One ctl holds every migration of a control database. Its runner
 * (ctl_run, in the caller's thread) drives each migration phase by phase:
 * it measures (lag, schemas, validation jobs on the cluster through
 * client/), evaluates the current phase's gates, moves cutover steps,
 * and aborts by itself when a threshold trips. The HTTP API (ctl_http_*,
 * libmicrohttpd's threads) reads and changes migrations under one lock;
 * both write every change to the control database before answering, so a
 * restarted `sluice control` resumes where it was.
 */
#ifndef CTL_H
#define CTL_H

#include <signal.h>
#include <stddef.h>

#include "../base/sl.h"
#include "../client/sl_client.h"

typedef struct ctl ctl;

typedef struct ctl_db_entry {
    const char *name,
        *dsn; /* a database the workers announced, and how the control plane reaches it */
} ctl_db_entry;

typedef struct ctl_token {
    const char *role; /* "operator" or "approver" */
    const char *token;
} ctl_token;

typedef struct ctl_opts {
    const char *store_path;  /* control database: sqlite:PATH, a path or a PostgreSQL DSN */
    const ctl_db_entry *dbs; /* copied */
    size_t ndbs;
    const ctl_token *tokens; /* copied */
    size_t ntokens;
    sl_client_opts coordinator; /* strings copied */
    const char *haproxy_socket; /* NULL: manifests may not name the haproxy router */
    const char *webhook_url;    /* NULL: no webhook */
    const char *dashboard_dir;  /* the dashboard's files; NULL: none served */
    int tick_ms;                /* runner pass; 0: 500 */
    /* tests only: the process kills itself (SIGKILL) when a write cutover
     * has just saved this stage ("forward_off", "reverse_on", "routed");
     * NULL: never */
    const char *crash_at;
    /* one line per event worth logging (stderr in the CLI); may be NULL */
    void (*log)(void *ctx, const char *line);
    void *log_ctx;
} ctl_opts;

/* Opens (or creates, or upgrades) the control database and loads every
 * migration in it. NULL with err. */
ctl *ctl_new(const ctl_opts *o, sl_err *err);
/* Stops the HTTP server if started. */
void ctl_free(ctl *c);

/* Serves the HTTP API on host:port (port 0: any; the port chosen is
 * returned by ctl_http_port). */
int ctl_http_start(ctl *c, const char *host, int port, sl_err *err);
int ctl_http_port(const ctl *c);

/* Runs the phase runner until *stop is set. 0, or -1 with err. */
int ctl_run(ctl *c, volatile sig_atomic_t *stop, sl_err *err);

#endif
