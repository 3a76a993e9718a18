/* wk: the worker. It connects a DEALER socket to a coordinator, says which
 * databases it can reach (by name: credentials never leave the worker), and
 * then serves requests one at a time: describe, split, tree, nodes, rows,
 * fetch, release, until it is told to shut down. Trees it built are kept
 * until the coordinator releases them, so that it can drill into them. */
#ifndef WK_H
#define WK_H

#include <signal.h>
#include <stddef.h>

#include "../base/sl.h"

/* A database the worker can reach: name as the coordinator knows it
 * ("source", "target", ...) and the DSN, which stays here. */
typedef struct wk_db {
    const char *name;
    const char *dsn;
    /* Whether a request may carry a where clause for this database: SQL
     * from whoever reaches the coordinator, run with this worker's role, so
     * off unless the operator allowed it (sluice worker --allow-where). */
    int allow_where;
} wk_db;

typedef struct wk_config {
    void *zctx;           /* ZeroMQ context (shared with inproc peers) */
    const char *endpoint; /* the coordinator's worker socket */
    const wk_db *dbs;
    size_t ndbs;
    int heartbeat_ms;             /* 0: none; else a heartbeat at least this often */
    volatile sig_atomic_t *stop;  /* optional: when set, stop between tasks */
    const char *curve_server_key; /* the coordinator's public key (Z85); NULL: no CURVE */
    const char *curve_secret;     /* this worker's secret key; NULL: ephemeral */
    int read_timeout_ms;          /* database read deadline; 0: CONN_READ_TIMEOUT_MS */
    /* A failed request that carried a where clause is answered with a fixed
     * message, since the database's text can quote data the clause read
     * (a cast error shows the value); the full text goes to log. Non-zero:
     * answer with the full text (sluice diff, whose user holds the DSNs). */
    int relay_where_errors;
    void (*log)(void *ctx, const char *line); /* optional: the worker's own log */
    void *log_ctx;
} wk_config;

typedef struct wk wk;

/* Copies what it needs from cfg. NULL with err set on failure. */
wk *wk_new(const wk_config *cfg, sl_err *err);
void wk_free(wk *w);

/* Serves until a shutdown message arrives (0) or the socket fails (-1). */
int wk_run(wk *w, sl_err *err);

#endif
