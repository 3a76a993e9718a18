/* Shared pieces of the sluice command: the diff-like options that `diff`
 * and `submit` both take, worker threads, and error printing. */
#ifndef CLI_H
#define CLI_H

#include <pthread.h>
#include <signal.h>

#include "../base/sl.h"
#include "../coordinator/co.h"
#include "../worker/wk.h"

#define CLI_DEFAULT_WORKERS_EP "tcp://127.0.0.1:7701"
#define CLI_DEFAULT_CLIENTS_EP "tcp://127.0.0.1:7702"
#define CLI_DEFAULT_EVENTS_EP "tcp://127.0.0.1:7703"

/* CURVE keys of a client (worker, submit, status, watch, workers). */
typedef struct cli_curve {
    int on, has_secret;
    char server[41], secret[41];
} cli_curve;

/* Loads --curve-server-key (a key or key file) and --curve-key (this
 * client's secret key file); either may be NULL. -1 to go on, else 2. */
int cli_curve_load(cli_curve *c, const char *server_arg, const char *key_arg);

/* The options of a diff job, as parsed from argv (strings point into argv
 * or into the owned lists). */
typedef struct diff_args {
    co_diff_opts o;
    const char *source, *target; /* DSNs for diff, database names for submit */
    const char *format;
    long workers;
    int allow_empty, progress, wait, settle_given;
    const char *coordinator;
    const char *curve_server, *curve_key; /* submit: --curve-server-key, --curve-key */
    int read_timeout_ms;                  /* diff: --read-timeout, 0 for the default */
    char *dsn_store[2];                   /* diff: SOURCE and TARGET, copied off argv */
    char *store[3];
    char **lists[3];
} diff_args;

/* Parses argv of `diff` (cluster 0) or `submit` (cluster 1). Returns -1 to
 * go on, else the exit status (0 after --help, 2 after a printed error). */
int diff_args_parse(int argc, char **argv, int cluster, diff_args *a);
void diff_args_free(diff_args *a);

/* Parses --read-timeout SECONDS (1 to 86400) into *ms. -1 to go on, else
 * 2 after a printed error. */
int cli_parse_timeout(const char *s, const char *opt, int *ms);

/* Prints "sluice: <msg>" on stderr and returns 2. */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Worker threads of one process, each with its own socket. */
typedef struct wk_threads {
    pthread_t *t;
    wk **w;
    long n;
} wk_threads;

int wk_threads_start(wk_threads *wt, long n, const wk_config *cfg, sl_err *err);
void wk_threads_join(wk_threads *wt);

int cmd_diff(int argc, char **argv);
int cmd_coordinator(int argc, char **argv);
int cmd_worker(int argc, char **argv);
int cmd_submit(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_watch(int argc, char **argv);
int cmd_workers(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_keygen(int argc, char **argv);

#endif
