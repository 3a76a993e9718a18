/* sluice coordinator: the long-running coordinator of a cluster, and the
 * schedule file it may be given. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/dsn.h"
#include "../coordinator/metrics.h"
#include "../coordinator/server.h"
#include "../proto/curve.h"
#include "cli.h"

/* ---- the schedule file ------------------------------------------------------- */

/* "every": a number of seconds, or a string for cli_parse_every. */
static long json_every(json_t *v)
{
    if (json_is_integer(v))
        return json_integer_value(v) > 0 ? (long)json_integer_value(v) : -1;
    return json_is_string(v) ? cli_parse_every(json_string_value(v)) : -1;
}

/* A list of names: ["a", "b"] or "a,b". Strings point into the JSON. */
static int json_names(json_t *v, const char **out, size_t *n)
{
    *n = 0;
    if (!v || json_is_null(v))
        return 0;
    if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x)
        {
            if (!json_is_string(x) || *n == CO_MAX_COLS)
                return -1;
            out[(*n)++] = json_string_value(x);
        }
        return 0;
    }
    return -1;
}

typedef struct schedule {
    co_schedule *v;
    size_t n;
    sl_buf *frames;
    json_t *doc;
} schedule;

static void schedule_free(schedule *s)
{
    for (size_t i = 0; i < s->n; i++)
        sl_buf_free(&s->frames[i]);
    free(s->frames);
    free(s->v);
    if (s->doc)
        json_decref(s->doc);
}

/* Reads a schedule file: {"audits": [{"name", "every", "source", "target",
 * "table", and any of "target_table", "key", "columns", "exclude",
 * "where", "strict", "rechecks", "settle", "ranges", "max_rows_per_second",
 * "priority", "max_tasks", "share", "keys_only", "max_divergences",
 * "chunk_time", "replicas", "max_replica_lag", "tolerances"}]}; "tolerances"
 * as the submit's, rules "OPTION:VALUE" (merkle/tol.h: "tolerance:amount=0.005"). */
static int schedule_load(const char *path, schedule *s)
{
    json_error_t je;
    memset(s, 0, sizeof *s);
    s->doc = json_load_file(path, 0, &je);
    if (!s->doc)
        return cli_fail("schedule %s:%d: %s", path, je.line, je.text);
    json_t *audits = json_object_get(s->doc, "audits");
    if (!json_is_array(audits) || json_array_size(audits) == 0)
        return cli_fail("schedule %s: expected {\"audits\": [ ... ]} with at least one audit",
                        path);
    size_t n = json_array_size(audits);
    s->v = calloc(n, sizeof *s->v);
    s->frames = calloc(n, sizeof *s->frames);
    if (!s->v || !s->frames)
        return cli_fail("out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *a = json_array_get(audits, i);
        const char *name = json_string_value(json_object_get(a, "name"));
        long every = json_every(json_object_get(a, "every"));
        const char *key[CO_MAX_COLS], *cols[CO_MAX_COLS], *excl[CO_MAX_COLS], *repl[CO_MAX_COLS],
            *tols[CO_MAX_COLS];
        sl_job_spec o = {0};
        if (!name)
            return cli_fail("schedule %s: audit %zu has no \"name\"", path, i + 1);
        if (every <= 0)
            return cli_fail("schedule %s: audit \"%s\": \"every\" must be like 30s, 15m, 2h, 1d",
                            path, name);
        if (json_names(json_object_get(a, "key"), key, &o.nkey) ||
            json_names(json_object_get(a, "columns"), cols, &o.ncolumns) ||
            json_names(json_object_get(a, "exclude"), excl, &o.nexclude) ||
            json_names(json_object_get(a, "tolerances"), tols, &o.ntolerances))
            return cli_fail("schedule %s: audit \"%s\": key, columns, exclude and tolerances "
                            "are lists of strings",
                            path, name);
        json_t *prio = json_object_get(a, "priority");
        if (prio &&
            (!json_is_string(prio) || sl_priority_parse(json_string_value(prio), &o.priority)))
            return cli_fail("schedule %s: audit \"%s\": \"priority\" must be \"high\", "
                            "\"normal\" or \"low\"",
                            path, name);
        o.max_tasks = json_integer_value(json_object_get(a, "max_tasks"));
        if (o.max_tasks < 0)
            return cli_fail("schedule %s: audit \"%s\": \"max_tasks\" must be 1 or more", path,
                            name);
        json_t *share = json_object_get(a, "share");
        if (share && (!json_is_integer(share) || json_integer_value(share) < 1 ||
                      json_integer_value(share) > 100))
            return cli_fail("schedule %s: audit \"%s\": \"share\" must be a percent from 1 to "
                            "100",
                            path, name);
        o.share = (int)json_integer_value(share);
        o.key = key;
        o.columns = cols;
        o.exclude = excl;
        o.tolerances = tols;
        o.source = json_string_value(json_object_get(a, "source"));
        o.target = json_string_value(json_object_get(a, "target"));
        o.table = json_string_value(json_object_get(a, "table"));
        o.target_table = json_string_value(json_object_get(a, "target_table"));
        o.where = json_string_value(json_object_get(a, "where"));
        o.strict = json_is_true(json_object_get(a, "strict"));
        o.ranges = (size_t)json_integer_value(json_object_get(a, "ranges"));
        o.rechecks = (int)json_integer_value(json_object_get(a, "rechecks"));
        o.max_rows_per_second = json_integer_value(json_object_get(a, "max_rows_per_second"));
        json_t *settle = json_object_get(a, "settle");
        o.settle_ms = settle ? (int)(json_number_value(settle) * 1000) : o.rechecks ? 5000 : 0;
        /* issue 15: as sluice schedule add's options (seconds as numbers) */
        o.keys_only = json_is_true(json_object_get(a, "keys_only"));
        json_int_t maxdiv = json_integer_value(json_object_get(a, "max_divergences"));
        o.max_divergences = maxdiv > 0 ? (uint64_t)maxdiv : 0;
        o.chunk_time_ms = (int64_t)(json_number_value(json_object_get(a, "chunk_time")) * 1000);
        if (json_names(json_object_get(a, "replicas"), repl, &o.nreplicas))
            return cli_fail("schedule %s: audit \"%s\": replicas is a list of names", path, name);
        if (o.nreplicas && !json_is_number(json_object_get(a, "max_replica_lag")))
            return cli_fail("schedule %s: audit \"%s\": replicas needs max_replica_lag (seconds)",
                            path, name);
        o.replicas = repl;
        o.max_replica_lag_ms =
            (int64_t)(json_number_value(json_object_get(a, "max_replica_lag")) * 1000);
        sl_err err;
        s->n = i + 1; /* frames[i] is schedule_free's to release from here */
        if (sl_client_spec_frame(&o, &s->frames[i], &err))
            return cli_fail("schedule %s: audit \"%s\": %s", path, name, err.msg);
        if (co_server_check_spec(s->frames[i].p, s->frames[i].len, &err))
            return cli_fail("schedule %s: audit \"%s\": %s", path, name, err.msg);
        s->v[i] = (co_schedule){name, (int)every, s->frames[i].p, s->frames[i].len};
    }
    return -1;
}

/* Reads one Z85 public key per line ("public: KEY" or "KEY"; '#' lines
 * skipped). Prints the error and returns -1 on failure. */
static int read_keys(const char *path, char (**out)[41], size_t *n)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        cli_fail("cannot read --curve-clients file \"%s\"", path);
        return -1;
    }
    char line[256];
    size_t cap = 0;
    *n = 0;
    *out = NULL;
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0] || line[0] == '#')
            continue;
        char *k = strrchr(line, ' ');
        k = k ? k + 1 : line;
        if (strlen(k) != 40) {
            fclose(f);
            free(*out);
            cli_fail("%s:%d: expected a 40-character Z85 public key", path, lineno);
            return -1;
        }
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            char(*v)[41] = realloc(*out, cap * sizeof *v);
            if (!v) {
                fclose(f);
                free(*out);
                cli_fail("out of memory");
                return -1;
            }
            *out = v;
        }
        memcpy((*out)[(*n)++], k, 41);
    }
    fclose(f);
    return 0;
}

/* ---- sluice coordinator ----------------------------------------------------- */

static int coordinator_main(int argc, char **argv, char **state_copy);

int cmd_coordinator(int argc, char **argv)
{
    char *state_copy = NULL;
    int st = coordinator_main(argc, argv, &state_copy);
    free(state_copy);
    return st;
}

/* Whether a ZeroMQ bind endpoint is reachable from this host only:
 * tcp:// on a loopback address or the lo interface, ipc://, inproc://. */
static int is_local_endpoint(const char *ep)
{
    if (!strncmp(ep, "ipc://", 6) || !strncmp(ep, "inproc://", 9))
        return 1;
    if (strncmp(ep, "tcp://", 6))
        return 0;
    const char *host = ep + 6, *colon = strrchr(host, ':');
    if (!colon)
        return 0;
    size_t n = (size_t)(colon - host);
    char h[256];
    if (n >= sizeof h)
        return 0;
    memcpy(h, host, n);
    h[n] = '\0';
    if (!strcmp(h, "localhost") || !strcmp(h, "lo") || !strcmp(h, "[::1]") || !strcmp(h, "::1"))
        return 1;
    unsigned a, b, c, d;
    char extra;
    return sscanf(h, "%u.%u.%u.%u%c", &a, &b, &c, &d, &extra) == 4 && a == 127 && b < 256 &&
           c < 256 && d < 256;
}

/* Without CURVE, whoever reaches an endpoint is trusted: clients submit
 * jobs and read results, workers are believed about what the databases
 * hold, subscribers read every divergence's values. So a non-local
 * endpoint needs --curve-secret, or --insecure said out loud. */
static int check_endpoints(const co_server_config *cfg, int insecure)
{
    const struct {
        const char *opt, *ep, *who;
    } eps[] = {{"--clients-endpoint", cfg->clients_endpoint, "submit jobs and read their results"},
               {"--workers-endpoint", cfg->workers_endpoint, "pose as a worker and feed it lies"},
               {"--events-endpoint", cfg->events_endpoint, "read every divergence's values"}};
    if (cfg->curve_secret || insecure)
        return -1;
    for (size_t i = 0; i < sizeof eps / sizeof eps[0]; i++)
        if (!is_local_endpoint(eps[i].ep))
            return cli_fail("%s %s is not loopback, and without CURVE anyone who reaches it can "
                            "%s; pass --curve-secret FILE (from sluice keygen), or --insecure on "
                            "a network you trust",
                            eps[i].opt, eps[i].ep, eps[i].who);
    return -1;
}

static int coordinator_main(int argc, char **argv, char **state_copy)
{
    static const struct option opts[] = {{"workers-endpoint", required_argument, 0, 'w'},
                                         {"clients-endpoint", required_argument, 0, 'c'},
                                         {"events-endpoint", required_argument, 0, 'e'},
                                         {"state", required_argument, 0, 's'},
                                         {"heartbeat-timeout", required_argument, 0, 't'},
                                         {"request-timeout", required_argument, 0, 'R'},
                                         {"max-jobs", required_argument, 0, 'J'},
                                         {"quiet", no_argument, 0, 'q'},
                                         {"schedule", required_argument, 0, 'S'},
                                         {"curve-secret", required_argument, 0, 'K'},
                                         {"curve-clients", required_argument, 0, 'A'},
                                         {"insecure", no_argument, 0, 'I'},
                                         {"metrics", required_argument, 0, 'M'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    co_server_config cfg = {.workers_endpoint = CLI_DEFAULT_WORKERS_EP,
                            .clients_endpoint = CLI_DEFAULT_CLIENTS_EP,
                            .events_endpoint = CLI_DEFAULT_EVENTS_EP,
                            .state = "sqlite:sluice-state.db",
                            .heartbeat_timeout_ms = 5000,
                            .verbose = 1};
    const char *schedule_file = NULL, *curve_secret = NULL, *curve_clients = NULL, *metrics = NULL;
    int ch, st, insecure = 0;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'w':
            cfg.workers_endpoint = optarg;
            break;
        case 'c':
            cfg.clients_endpoint = optarg;
            break;
        case 'e':
            cfg.events_endpoint = optarg;
            break;
        case 's':
            /* a PostgreSQL DSN may hold a password: keep a copy, blank argv
             * so ps and /proc/PID/cmdline do not show it */
            free(*state_copy);
            if (!(*state_copy = strdup(optarg)))
                return cli_fail("out of memory");
            cfg.state = *state_copy;
            if (strncmp(optarg, "postgres", 8) == 0)
                memset(optarg, '*', strlen(optarg));
            break;
        case 'q':
            cfg.verbose = 0;
            break;
        case 'S':
            schedule_file = optarg;
            break;
        case 'K':
            curve_secret = optarg;
            break;
        case 'A':
            curve_clients = optarg;
            break;
        case 'I':
            insecure = 1;
            break;
        case 'M':
            metrics = optarg;
            break;
        case 't':
            if ((st = cli_parse_seconds(optarg, "--heartbeat-timeout",
                                        &cfg.heartbeat_timeout_ms)) >= 0)
                return st;
            break;
        case 'R':
            if ((st = cli_parse_seconds(optarg, "--request-timeout", &cfg.request_timeout_ms)) >= 0)
                return st;
            break;
        case 'J': {
            char *end;
            long n = strtol(optarg, &end, 10);
            if (*end || end == optarg || n < 1 || n > 1000)
                return cli_fail("--max-jobs must be a number from 1 to 1000");
            cfg.max_jobs = (size_t)n;
            break;
        }
        case 'h':
            printf(
                "usage: sluice coordinator [--workers-endpoint EP] [--clients-endpoint EP]\n"
                "         [--events-endpoint EP] [--state sqlite:PATH] "
                "[--heartbeat-timeout SECONDS] [--schedule FILE] [--quiet]\n"
                "         [--request-timeout SECONDS] [--max-jobs N]\n"
                "         [--curve-secret FILE [--curve-clients FILE]] [--insecure]\n"
                "  --curve-secret FILE: serve CURVE-encrypted (keys from sluice keygen)\n"
                "  --curve-clients FILE: public keys allowed to connect, one per line\n"
                "  --insecure: allow endpoints other than loopback without CURVE\n"
                "  --request-timeout SECONDS: a worker that leaves a request unanswered this\n"
                "      long is dropped and its work re-issued (default 300)\n"
                "  --max-jobs N: jobs run at once, by priority then fairly (default 16)\n"
                "  --metrics HOST:PORT: serve the drift history as Prometheus metrics\n"
                "      at http://HOST:PORT/metrics (default: not served)\n"
                "  --schedule FILE: JSON {\"audits\": [{\"name\", \"every\": \"1h\", \"source\", "
                "\"target\", \"table\", ...}]}\n"
                "defaults: %s, %s, %s, sqlite:sluice-state.db, 5 s\n",
                CLI_DEFAULT_WORKERS_EP, CLI_DEFAULT_CLIENTS_EP, CLI_DEFAULT_EVENTS_EP);
            return 0;
        default:
            return cli_fail(
                "unknown or incomplete option \"%.*s\" (try: sluice coordinator --help)",
                (int)strcspn(argv[optind - 1], "="), argv[optind - 1]);
        }
    }
    if (optind != argc)
        return cli_fail("coordinator takes no arguments, only options (try --help)");
    sl_err err = {0};
    char secret[41];
    char(*allowed)[41] = NULL;
    const char **allowed_v = NULL;
    if (curve_clients && !curve_secret)
        return cli_fail("--curve-clients needs --curve-secret");
    if (curve_secret) {
        if (curve_read_key(curve_secret, secret, &err))
            return cli_fail("--curve-secret: %s", err.msg);
        cfg.curve_secret = secret;
    }
    if ((st = check_endpoints(&cfg, insecure)) >= 0)
        return st;
    if (curve_clients) {
        size_t n = 0;
        if (read_keys(curve_clients, &allowed, &n))
            return 2;
        allowed_v = calloc(n + 1, sizeof *allowed_v);
        if (!allowed_v) {
            free(allowed);
            return cli_fail("out of memory");
        }
        for (size_t i = 0; i < n; i++)
            allowed_v[i] = allowed[i];
        cfg.curve_clients = allowed_v;
        cfg.ncurve_clients = n;
    }
    schedule sched = {0};
    if (schedule_file) {
        int st2 = schedule_load(schedule_file, &sched);
        if (st2 >= 0) {
            schedule_free(&sched);
            free(allowed);
            free(allowed_v);
            return st2;
        }
        cfg.schedule = sched.v;
        cfg.nschedule = sched.n;
    }
    cli_catch_signals();
    co_server *s = co_server_new(&cfg, &err);
    if (!s) {
        schedule_free(&sched);
        free(allowed);
        free(allowed_v);
        return cli_fail("%s", err.msg);
    }
    if (cfg.verbose) {
        char state[512];
        dsn_redact(cfg.state, state, sizeof state); /* a PostgreSQL --state may hold a password */
        fprintf(stderr, "sluice coordinator: workers %s, clients %s, events %s, state %s\n",
                cfg.workers_endpoint, cfg.clients_endpoint, cfg.events_endpoint, state);
    }
    co_metrics *mx = NULL;
    if (metrics) { /* after the server: the store exists, at the latest schema */
        char host[64];
        const char *colon = strrchr(metrics, ':');
        char *end = NULL;
        long port = colon ? strtol(colon + 1, &end, 10) : -1;
        if (!colon || colon == metrics || (size_t)(colon - metrics) >= sizeof host || port < 0 ||
            port > 65535 || !end || *end || end == colon + 1) {
            co_server_free(s);
            schedule_free(&sched);
            free(allowed);
            free(allowed_v);
            return cli_fail("--metrics wants HOST:PORT, e.g. 127.0.0.1:9108, not \"%s\"", metrics);
        }
        memcpy(host, metrics, (size_t)(colon - metrics));
        host[colon - metrics] = 0;
        if (!(mx = co_metrics_start(cfg.state, host, (int)port, &err))) {
            co_server_free(s);
            schedule_free(&sched);
            free(allowed);
            free(allowed_v);
            return cli_fail("%s", err.msg);
        }
        if (cfg.verbose)
            fprintf(stderr, "sluice coordinator: metrics on http://%s:%d/metrics\n", host,
                    co_metrics_port(mx));
    }
    int r = co_server_run(s, cli_stop_flag(), &err);
    co_metrics_stop(mx);
    co_server_free(s);
    schedule_free(&sched);
    free(allowed);
    free(allowed_v);
    if (r)
        return cli_fail("%s", err.msg);
    if (cfg.verbose)
        fprintf(stderr, "sluice coordinator: stopped\n");
    return 0;
}
