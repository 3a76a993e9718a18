/* Shared pieces of the sluice command: the diff-like options that `diff`
 * and `submit` both take, worker threads, and error printing. */
#ifndef CLI_H
#define CLI_H

#include <pthread.h>
#include <signal.h>

#include "../base/sl.h"
#include "../client/sl_client.h"
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

#define CLI_MAX_REPLICAS 8 /* --replica names one job watches */

/* The options of a diff job, as parsed from argv (strings point into argv
 * or into the owned lists). */
typedef struct diff_args {
    co_diff_opts o;
    const char *source, *target; /* DSNs for diff, database names for submit */
    const char *name;            /* schedule add: the audit's name */
    long every_s;                /* schedule add: --every */
    long cycles;                 /* scrub: --cycles (0: until stopped) */
    int64_t duration_ms;         /* verify-changes: --duration (0: until interrupted) */
    int64_t window_ms;           /* verify-changes: --window (default 60 s) */
    sl_priority priority;        /* submit, schedule add: --priority */
    int64_t max_tasks;           /* submit, schedule add: --max-tasks (0: no cap) */
    int share;                   /* submit, scrub, schedule add: --share (0: none) */
    int request_timeout_ms;      /* submit, schedule add: --request-timeout (0: 5 s) */
    const char *format;
    long workers;
    int allow_empty, progress, wait, settle_given;
    const char *coordinator;
    const char *events; /* verify-changes: --events (default: --coordinator's port + 1) */
    const char *curve_server, *curve_key; /* submit: --curve-server-key, --curve-key */
    int read_timeout_ms;                  /* diff: --read-timeout, 0 for the default */
    char *dsn_store[2];                   /* diff: SOURCE and TARGET, copied off argv */
    char *store[3];
    char **lists[3];
    char **tol; /* tolerance rules "OPTION:VALUE" (merkle/tol.h), each malloc'd */
    size_t ntol;
    /* issue 15: --summary-only (the counts, no divergence kept); --replica
     * (diff: DSNs copied off argv, read by workers as "replica1"...; submit:
     * database names, a list split at commas) */
    int summary_only, lag_given;
    size_t nreplicas, nstore_r;
    const char *replicas[CLI_MAX_REPLICAS];     /* the names the job watches */
    const char *replica_dsns[CLI_MAX_REPLICAS]; /* diff: what each name reads */
    char *replica_store[CLI_MAX_REPLICAS];
} diff_args;

/* Parses argv of `diff` (mode DIFF_ARGS_DIFF), `submit` (DIFF_ARGS_SUBMIT)
 * or `schedule add` (DIFF_ARGS_SCHEDULE: NAME SOURCE TARGET and --every).
 * Returns -1 to go on, else the exit status (0 after --help, 2 after a
 * printed error). */
enum {
    DIFF_ARGS_DIFF = 0,
    DIFF_ARGS_SUBMIT = 1,
    DIFF_ARGS_SCHEDULE = 2,
    DIFF_ARGS_SCRUB = 3,
    DIFF_ARGS_CHANGES = 4 /* verify-changes: --duration, re-checks by default */
};
int diff_args_parse(int argc, char **argv, int mode, diff_args *a);
void diff_args_free(diff_args *a);
/* diff_args_parse, then the client its --coordinator and CURVE options
 * name (events: the event endpoint, or NULL). -1 to go on (*c open), else
 * the exit status. */
int diff_args_client(int argc, char **argv, int mode, const char *events, diff_args *a,
                     sl_client **c);

/* The job spec of parsed submit or schedule arguments (pointing into a). */
void diff_args_spec(const diff_args *a, sl_job_spec *spec);

/* "90", "90s", "15m", "2h", "1d" -> seconds; -1 if not one of those. */
long cli_parse_every(const char *s);

/* Parses SECONDS from 0 (exclusive) to 3600 into *ms. -1 to go on, else 2
 * after a printed error naming opt. */
int cli_parse_seconds(const char *s, const char *opt, int *ms);

/* SIGTERM and SIGINT set *cli_stop_flag() instead of killing: a
 * coordinator, worker or watch stops between messages. */
void cli_catch_signals(void);
volatile sig_atomic_t *cli_stop_flag(void);

/* The options every client command (status, report, watch, workers,
 * cancel, schedule) shares, and a few that some take. */
typedef struct client_args {
    const char *coordinator, *events, *format;
    cli_curve cc;
    int64_t job;            /* the JOB argument, or watch --job */
    long count;             /* watch --count */
    int timeout_ms;         /* watch --timeout: stop watching after this long */
    int request_timeout_ms; /* --request-timeout: a coordinator silent this long is an error */
    int allow_empty;        /* report */
    const char *name;       /* CLIENT_NAME_ARG */
} client_args;

/* What a client command takes besides options. */
enum { CLIENT_NO_ARG, CLIENT_JOB_ARG, CLIENT_NAME_ARG };

/* Parses argv of client command cmd (usage: its --help text): options,
 * then per arg nothing, one job id (a->job) or one name (a->name). -1 to
 * go on, else the exit status (0 after --help, 2 after a printed error). */
int client_args_parse(int argc, char **argv, const char *cmd, const char *usage, int arg,
                      client_args *a);

/* An sl_client of the coordinator at clients (and events, may be NULL)
 * with CURVE keys cc. -1 to go on with *out, else 2 after a printed error. */
int cli_client_open(const char *clients, const char *events, const cli_curve *cc, int timeout_ms,
                    sl_client **out);

/* The usual start of a client command: client_args_parse, then
 * cli_client_open on the clients endpoint. -1 to go on with *out, else the
 * exit status. */
int client_command(int argc, char **argv, const char *cmd, const char *usage, int arg,
                   client_args *a, sl_client **out);

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

/* sluice diff's engine: the coordinator and a->workers worker threads in
 * this process over inproc:// (the cluster's code path, run small), the
 * job's events to cb. co_diff's return; err says why. Also sluice repair's. */
int cli_local_diff(const diff_args *a, const co_callbacks *cb, co_summary *sum, sl_err *err);
int cmd_diff(int argc, char **argv);
int cmd_coordinator(int argc, char **argv);
int cmd_control(int argc, char **argv);
int cmd_worker(int argc, char **argv);
int cmd_submit(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_watch(int argc, char **argv);
int cmd_workers(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_keygen(int argc, char **argv);
int cmd_cancel(int argc, char **argv);
int cmd_schedule(int argc, char **argv);
int cmd_drift(int argc, char **argv);
int cmd_scrub(int argc, char **argv);
int cmd_verify_changes(int argc, char **argv);
int cmd_repair(int argc, char **argv);

#endif
