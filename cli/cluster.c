/* The cluster commands: coordinator, worker, and the clients submit,
 * status, watch and workers. */
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "../base/dsn.h"
#include "../coordinator/server.h"
#include "../proto/curve.h"
#include "../proto/msg.h"
#include "cli.h"
#include "report.h"

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

static int parse_seconds(const char *s, const char *opt, int *ms)
{
    char *end;
    double v = strtod(s, &end);
    if (*end || v <= 0 || v > 3600)
        return cli_fail("%s must be a number of seconds from 0 to 3600, not \"%s\"", opt, s);
    *ms = (int)(v * 1000);
    return -1;
}

/* ---- schedules ---------------------------------------------------------------- */

static void pack_list(msg_writer *w, const char *key, const char *const *v, size_t n);
static msg_writer *submit_writer(const char *source, const char *target, const co_diff_opts *o);

/* "90", "90s", "15m", "2h", "1d" -> seconds; -1 if not one of those. */
static long parse_every(json_t *v)
{
    if (json_is_integer(v))
        return json_integer_value(v) > 0 ? (long)json_integer_value(v) : -1;
    if (!json_is_string(v))
        return -1;
    char *end;
    long n = strtol(json_string_value(v), &end, 10);
    long mult = !*end               ? 1
                : !strcmp(end, "s") ? 1
                : !strcmp(end, "m") ? 60
                : !strcmp(end, "h") ? 3600
                : !strcmp(end, "d") ? 86400
                                    : -1;
    return n > 0 && mult > 0 && n < 86400L * 366 / mult ? n * mult : -1;
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
 * "where", "strict", "rechecks", "settle", "ranges"}]}. */
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
        long every = parse_every(json_object_get(a, "every"));
        const char *key[CO_MAX_COLS], *cols[CO_MAX_COLS], *excl[CO_MAX_COLS];
        co_diff_opts o = {0};
        if (!name)
            return cli_fail("schedule %s: audit %zu has no \"name\"", path, i + 1);
        if (every <= 0)
            return cli_fail("schedule %s: audit \"%s\": \"every\" must be like 30s, 15m, 2h, 1d",
                            path, name);
        if (json_names(json_object_get(a, "key"), key, &o.nkey) ||
            json_names(json_object_get(a, "columns"), cols, &o.ncolumns) ||
            json_names(json_object_get(a, "exclude"), excl, &o.nexclude))
            return cli_fail("schedule %s: audit \"%s\": key, columns and exclude are lists "
                            "of names",
                            path, name);
        o.key = key;
        o.columns = cols;
        o.exclude = excl;
        o.table = json_string_value(json_object_get(a, "table"));
        o.target_table = json_string_value(json_object_get(a, "target_table"));
        o.where = json_string_value(json_object_get(a, "where"));
        o.strict = json_is_true(json_object_get(a, "strict"));
        o.ranges = (size_t)json_integer_value(json_object_get(a, "ranges"));
        o.rechecks = (int)json_integer_value(json_object_get(a, "rechecks"));
        o.max_rows_per_second = json_integer_value(json_object_get(a, "max_rows_per_second"));
        json_t *settle = json_object_get(a, "settle");
        o.settle_ms = settle ? (int)(json_number_value(settle) * 1000) : o.rechecks ? 5000 : 0;
        msg_writer *w = submit_writer(json_string_value(json_object_get(a, "source")),
                                      json_string_value(json_object_get(a, "target")), &o);
        sl_err err;
        if (!w || msg_writer_finish(w, &s->frames[i], &err)) {
            msg_writer_free(w);
            return cli_fail("out of memory");
        }
        msg_writer_free(w);
        s->n = i + 1; /* frames[i] is schedule_free's to release from here */
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

/* sluice keygen [PREFIX]: a CURVE key pair, printed, or written to
 * PREFIX.key (secret, mode 0600) and PREFIX.pub. */
int cmd_keygen(int argc, char **argv)
{
    char pub[41], sec[41];
    if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: sluice keygen [PREFIX]\n"
               "  prints a CURVE key pair, or writes PREFIX.key (secret, mode 0600) and\n"
               "  PREFIX.pub (public)\n");
        return 0;
    }
    if (argc > 2 || (argc == 2 && argv[1][0] == '-'))
        return cli_fail("usage: sluice keygen [PREFIX]  (writes PREFIX.key and PREFIX.pub)");
    if (zmq_curve_keypair(pub, sec))
        return cli_fail("cannot make a CURVE key pair: %s (libzmq built without CURVE?)",
                        zmq_strerror(zmq_errno()));
    if (argc < 2) {
        printf("public: %s\nsecret: %s\n", pub, sec);
        return 0;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s.key", argv[1]);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f)
        return cli_fail("cannot create %s (it must not exist yet)", path);
    fprintf(f, "# sluice CURVE secret key: keep it private\nsecret: %s\n", sec);
    fclose(f);
    snprintf(path, sizeof path, "%s.pub", argv[1]);
    f = fopen(path, "w");
    if (!f)
        return cli_fail("cannot create %s", path);
    fprintf(f, "public: %s\n", pub);
    fclose(f);
    printf("public: %s\n", pub);
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
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    co_server_config cfg = {.workers_endpoint = CLI_DEFAULT_WORKERS_EP,
                            .clients_endpoint = CLI_DEFAULT_CLIENTS_EP,
                            .events_endpoint = CLI_DEFAULT_EVENTS_EP,
                            .state = "sqlite:sluice-state.db",
                            .heartbeat_timeout_ms = 5000,
                            .verbose = 1};
    const char *schedule_file = NULL, *curve_secret = NULL, *curve_clients = NULL;
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
        case 't':
            if ((st = parse_seconds(optarg, "--heartbeat-timeout", &cfg.heartbeat_timeout_ms)) >= 0)
                return st;
            break;
        case 'R':
            if ((st = parse_seconds(optarg, "--request-timeout", &cfg.request_timeout_ms)) >= 0)
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
    catch_signals();
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
    int r = co_server_run(s, &stop_flag, &err);
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

/* ---- sluice worker ---------------------------------------------------------- */

/* --db NAME=DSN. The DSN is copied and blanked out of argv, so a password
 * in it does not show in ps or /proc/PID/cmdline. */
static int add_db(wk_db *dbs, size_t *n, char *arg, char **owned)
{
    char *eq = strchr(arg, '=');
    if (!eq || eq == arg || !eq[1])
        return cli_fail("--db wants NAME=DSN, e.g. --db source=postgresql://db1/shop");
    if (*n == 64)
        return cli_fail("at most 64 --db options");
    char *copy = strdup(arg);
    if (!copy)
        return cli_fail("out of memory");
    copy[eq - arg] = '\0';
    dbs[*n].name = copy;
    dbs[*n].dsn = copy + (eq - arg) + 1;
    owned[(*n)++] = copy;
    memset(eq + 1, '*', strlen(eq + 1));
    return -1;
}

/* --allow-where NAMES: a comma-separated list of database names, or "*"
 * for all; kept until every --db is known, then checked by allow_where. */
static int add_allow_where(const char **names, size_t *n, const char *arg)
{
    if (*n == 64)
        return cli_fail("at most 64 --allow-where options");
    names[(*n)++] = arg;
    return -1;
}

/* Marks the databases --allow-where named; a name no --db declares is an
 * error (a typo would silently leave --where refused). */
static int allow_where(wk_db *dbs, size_t ndbs, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *p = names[i];
        while (*p) {
            size_t len = strcspn(p, ",");
            int found = 0;
            for (size_t d = 0; d < ndbs; d++)
                if ((len == 1 && *p == '*') ||
                    (strlen(dbs[d].name) == len && !memcmp(dbs[d].name, p, len)))
                    found = dbs[d].allow_where = 1;
            if (!found && len)
                return cli_fail("--allow-where names database \"%.*s\", which no --db declares",
                                (int)len, p);
            p += len + (p[len] == ',');
        }
    }
    return -1;
}

static void worker_log(void *ctx, const char *line)
{
    (void)ctx;
    fprintf(stderr, "sluice worker: %s\n", line);
}

/* Lines NAME=DSN, and "allow-where NAMES" (as --allow-where), whose
 * NAMES are copied into allow[] (the caller frees them). */
static int add_db_file(wk_db *dbs, size_t *n, const char *path, char **owned, char **allow,
                       size_t *nallow)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return cli_fail("cannot read --db-file \"%s\"", path);
    char line[4096];
    int st = -1, lineno = 0;
    while (st < 0 && fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0] || line[0] == '#')
            continue;
        if (!strncmp(line, "allow-where", 11) && (line[11] == ' ' || line[11] == '\t') &&
            !strchr(line, '=')) {
            char *names = line + 11 + strspn(line + 11, " \t");
            names[strcspn(names, " \t")] = '\0';
            if (*nallow == 64 || !*names) {
                st = cli_fail("%s:%d: expected allow-where NAME[,NAME...] (at most 64 lines)", path,
                              lineno);
                break;
            }
            if (!(allow[*nallow] = strdup(names))) {
                st = cli_fail("out of memory");
                break;
            }
            ++*nallow;
            continue;
        }
        if (!strchr(line, '=')) {
            st = cli_fail("%s:%d: expected NAME=DSN or allow-where NAME", path, lineno);
            break;
        }
        st = add_db(dbs, n, line, owned);
    }
    fclose(f);
    return st;
}

int cmd_worker(int argc, char **argv)
{
    static const struct option opts[] = {{"coordinator", required_argument, 0, 'c'},
                                         {"db", required_argument, 0, 'd'},
                                         {"db-file", required_argument, 0, 'f'},
                                         {"slots", required_argument, 0, 's'},
                                         {"heartbeat", required_argument, 0, 'b'},
                                         {"curve-server-key", required_argument, 0, 'K'},
                                         {"curve-key", required_argument, 0, 'k'},
                                         {"read-timeout", required_argument, 0, 'D'},
                                         {"allow-where", required_argument, 0, 'W'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    wk_db dbs[64] = {{0}};
    char *owned[64], *allow_file[64];
    const char *allow_opt[64];
    size_t ndbs = 0, nallow_file = 0, nallow_opt = 0;
    long slots = 2;
    int hb = 1000, read_timeout = 0, st = -1, ch;
    const char *ep = CLI_DEFAULT_WORKERS_EP, *curve_server = NULL, *curve_key = NULL;
    optind = 1;
    opterr = 0;
    while (st < 0 && (ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end;
        switch (ch) {
        case 'c':
            ep = optarg;
            break;
        case 'd':
            st = add_db(dbs, &ndbs, optarg, owned);
            break;
        case 'f':
            st = add_db_file(dbs, &ndbs, optarg, owned, allow_file, &nallow_file);
            break;
        case 'W':
            st = add_allow_where(allow_opt, &nallow_opt, optarg);
            break;
        case 'b':
            st = parse_seconds(optarg, "--heartbeat", &hb);
            break;
        case 'D':
            st = cli_parse_timeout(optarg, "--read-timeout", &read_timeout);
            break;
        case 'K':
            curve_server = optarg;
            break;
        case 'k':
            curve_key = optarg;
            break;
        case 's':
            slots = strtol(optarg, &end, 10);
            if (*end || slots < 1 || slots > 64)
                st = cli_fail("--slots must be a number from 1 to 64, not \"%s\"", optarg);
            break;
        case 'h':
            printf("usage: sluice worker --db NAME=DSN [--db NAME=DSN ...] [--db-file FILE]\n"
                   "         [--coordinator EP] [--slots N] [--heartbeat SECONDS]\n"
                   "         [--read-timeout SECONDS] [--allow-where NAME[,NAME...]|'*']\n"
                   "         [--curve-server-key KEY|FILE [--curve-key FILE]]\n"
                   "  --db-file FILE: lines NAME=DSN (keeps passwords off the command line),\n"
                   "                  and allow-where NAME[,NAME...] lines\n"
                   "  --read-timeout: give up on a database silent this long in a query\n"
                   "    (default 300; connecting gives up after 10 s unless the DSN sets\n"
                   "    connect_timeout or PGCONNECT_TIMEOUT is set)\n"
                   "  --allow-where NAMES: run --where clauses from the cluster on these\n"
                   "                  databases ('*': all); refused by default\n"
                   "defaults: %s, 2 slots, 1 s\n",
                   CLI_DEFAULT_WORKERS_EP);
            st = 0;
            break;
        default:
            st = cli_fail("unknown or incomplete option \"%.*s\" (try: sluice worker --help)",
                          (int)strcspn(argv[optind - 1], "="), argv[optind - 1]);
        }
    }
    if (st < 0 && ndbs == 0)
        st = cli_fail("a worker needs at least one --db NAME=DSN");
    if (st < 0)
        st = allow_where(dbs, ndbs, allow_opt, nallow_opt);
    if (st < 0)
        st = allow_where(dbs, ndbs, (const char *const *)allow_file, nallow_file);
    cli_curve cc;
    if (st < 0)
        st = cli_curve_load(&cc, curve_server, curve_key);
    if (st < 0) {
        sl_err err = {0};
        void *zctx = zmq_ctx_new();
        catch_signals();
        wk_config cfg = {.curve_server_key = cc.on ? cc.server : NULL,
                         .curve_secret = cc.has_secret ? cc.secret : NULL,
                         .zctx = zctx,
                         .endpoint = ep,
                         .dbs = dbs,
                         .ndbs = ndbs,
                         .heartbeat_ms = hb,
                         .read_timeout_ms = read_timeout,
                         .log = worker_log,
                         .stop = &stop_flag};
        wk_threads wt = {0};
        if (wk_threads_start(&wt, slots, &cfg, &err)) {
            stop_flag = 1;
            st = cli_fail("%s", err.msg);
        } else {
            fprintf(stderr, "sluice worker: %ld slots connected to %s\n", slots, ep);
            st = 0;
        }
        wk_threads_join(&wt);
        zmq_ctx_term(zctx);
    }
    for (size_t i = 0; i < ndbs; i++)
        free(owned[i]);
    for (size_t i = 0; i < nallow_file; i++)
        free(allow_file[i]);
    return st;
}

/* ---- clients -------------------------------------------------------------- */

/* One request/reply with the coordinator. Returns the reply, or NULL with
 * err set (an ERROR reply's message, or no answer in time). */
static msg *ask(void *zctx, const char *ep, const cli_curve *cc, msg_writer *w, int timeout_ms,
                sl_err *err)
{
    sl_buf f = {0};
    msg *m = NULL;
    void *sock = zmq_socket(zctx, ZMQ_DEALER);
    int linger = 0;
    if (!sock || msg_writer_finish(w, &f, err))
        goto out;
    if (cc && cc->on && curve_client(sock, cc->server, cc->has_secret ? cc->secret : NULL, err))
        goto out;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(sock, ep) != 0) {
        sl_err_set(err, "cannot connect to coordinator at %s: %s", ep, zmq_strerror(zmq_errno()));
        goto out;
    }
    zmq_send(sock, f.p, f.len, 0);
    zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, timeout_ms) <= 0) {
        sl_err_set(err, "no answer from the coordinator at %s within %d s; is it running%s?", ep,
                   timeout_ms / 1000,
                   cc && cc->on ? ", and does it accept this CURVE key"
                                : " (if it uses CURVE, pass --curve-server-key)");
        goto out;
    }
    zmq_msg_t in;
    zmq_msg_init(&in);
    if (zmq_msg_recv(&in, sock, 0) >= 0)
        m = msg_decode(zmq_msg_data(&in), zmq_msg_size(&in), err);
    zmq_msg_close(&in);
    if (m && msg_type(m) == MSG_ERROR) {
        const char *s;
        size_t n;
        if (msg_get_str(m, "error", &s, &n, NULL) == 0)
            sl_err_set(err, "%.*s", (int)n, s);
        else
            sl_err_set(err, "the coordinator refused the request");
        msg_free(m);
        m = NULL;
    }
out:
    msg_writer_free(w);
    if (sock)
        zmq_close(sock);
    sl_buf_free(&f);
    return m;
}

static uint64_t get_u(const msg *m, const char *key)
{
    int64_t v = 0;
    msg_get_int(m, key, &v, NULL);
    return (uint64_t)v;
}

static void get_s(const msg *m, const char *key, char *out, size_t cap)
{
    const char *p;
    size_t n;
    out[0] = '\0';
    if (msg_get_str(m, key, &p, &n, NULL) == 0)
        snprintf(out, cap, "%.*s", (int)n, p);
}

/* Turns a stored divergence event into the report's record. */
static int event_into_report(report *r, const uint8_t *frame, size_t len)
{
    sl_err e;
    msg *m = msg_decode(frame, len, &e);
    if (!m)
        return -1;
    char kind[32], column[256], problem[64];
    get_s(m, "kind", kind, sizeof kind);
    co_event ev = {0};
    const char *vals[ENC_MAX_KEY_COLS], *names[ENC_MAX_KEY_COLS];
    co_coldiff cols[CO_MAX_COLS];
    /* types, key names and values, columns (name, values, cut values' hashes) */
    char *strs[2 + 2 * ENC_MAX_KEY_COLS + 5 * CO_MAX_COLS];
    size_t ns = 0;
    const msgpack_object *items, *f;
    uint32_t n, nf;
    if (!strcmp(kind, "schema")) {
        ev.kind = CO_SCHEMA;
        get_s(m, "column", column, sizeof column);
        get_s(m, "problem", problem, sizeof problem);
        ev.column = column;
        ev.detail = problem;
        if (msg_get_array(m, "types", &items, &n, NULL) == 0 && n == 2) {
            const char *p;
            size_t l;
            if (msg_obj_str(&items[0], &p, &l) == 0)
                ev.source_type = strs[ns++] = strndup(p, l);
            if (msg_obj_str(&items[1], &p, &l) == 0)
                ev.target_type = strs[ns++] = strndup(p, l);
        }
    } else {
        char status[16];
        get_s(m, "status", status, sizeof status);
        ev.status = !strcmp(status, "transient")   ? CO_TRANSIENT
                    : !strcmp(status, "confirmed") ? CO_CONFIRMED
                                                   : 0;
        ev.kind = !strcmp(kind, "changed")             ? CO_CHANGED
                  : !strcmp(kind, "missing-in-target") ? CO_MISSING
                                                       : CO_EXTRA;
        msg_get_bin(m, "k", &ev.key, &ev.klen, NULL);
        if (msg_get_array(m, "key", &items, &n, NULL) == 0 && n <= ENC_MAX_KEY_COLS) {
            for (uint32_t i = 0; i < n; i++) {
                const char *p;
                size_t l;
                if (msg_obj_array(&items[i], &f, &nf) || nf != 2)
                    continue;
                names[ev.nkey] = msg_obj_str(&f[0], &p, &l) ? "" : (strs[ns++] = strndup(p, l));
                vals[ev.nkey] = msg_obj_str(&f[1], &p, &l) ? "" : (strs[ns++] = strndup(p, l));
                ev.nkey++;
            }
        }
        if (msg_get_array(m, "columns", &items, &n, NULL) == 0 && n <= CO_MAX_COLS) {
            for (uint32_t i = 0; i < n; i++) {
                const char *p;
                size_t l;
                if (msg_obj_array(&items[i], &f, &nf) || (nf != 3 && nf != 5))
                    continue;
                co_coldiff *c = &cols[ev.ncols++];
                memset(c, 0, sizeof *c);
                c->column = msg_obj_str(&f[0], &p, &l) ? "" : (strs[ns++] = strndup(p, l));
                c->source = msg_obj_str(&f[1], &p, &l) ? NULL : (strs[ns++] = strndup(p, l));
                c->target = msg_obj_str(&f[2], &p, &l) ? NULL : (strs[ns++] = strndup(p, l));
                for (uint32_t s = 0; nf == 5 && s < 2; s++) { /* a value cut short */
                    const msgpack_object *cut;
                    uint32_t ncut;
                    int64_t len;
                    if (msg_obj_array(&f[3 + s], &cut, &ncut) || ncut != 2 ||
                        msg_obj_int(&cut[0], &len) || msg_obj_str(&cut[1], &p, &l))
                        continue;
                    *(s ? &c->target_hash : &c->source_hash) = strs[ns++] = strndup(p, l);
                    *(s ? &c->target_len : &c->source_len) = (uint64_t)len;
                }
            }
        }
        ev.key_cols = names;
        ev.key_vals = vals;
        ev.cols = cols;
    }
    int rc = report_add(r, &ev);
    for (size_t i = 0; i < ns; i++)
        free(strs[i]);
    msg_free(m);
    return rc;
}

static msg *status_of(void *zctx, const char *ep, const cli_curve *cc, int64_t job, int events,
                      sl_err *err)
{
    msg_writer *w = msg_writer_new(MSG_STATUS, 1, 2);
    if (!w)
        return sl_err_set(err, "out of memory"), NULL;
    msg_put_int(w, "job", job);
    msg_put_int(w, "events", events);
    return ask(zctx, ep, cc, w, 5000, err);
}

static void summary_of(const msg *m, co_summary *s)
{
    memset(s, 0, sizeof *s);
    get_s(m, "source", s->source_name, sizeof s->source_name);
    get_s(m, "target", s->target_name, sizeof s->target_name);
    s->source_rows = get_u(m, "source_rows");
    s->target_rows = get_u(m, "target_rows");
    s->ranges = get_u(m, "ranges");
    s->workers = get_u(m, "workers");
    s->missing = get_u(m, "missing");
    s->extra = get_u(m, "extra");
    s->changed = get_u(m, "changed");
    s->schema = get_u(m, "schema");
    s->transient = get_u(m, "transient");
    s->elapsed = (double)get_u(m, "elapsed_ms") / 1000;
}

/* Prints a finished job's report like sluice diff and returns the same
 * exit status. wait: follow the job to its end (submit --wait); else a
 * job not finished yet is an error (sluice report). The tables named in
 * the report are a->o's, or the job's own when a->o.table is NULL. */
static int wait_job(void *zctx, const diff_args *a, const cli_curve *cc, int64_t job, int wait)
{
    sl_err err = {0};
    char state[32] = "", table[256], ttable[256];
    report rep = {.progress = 0};
    int status = 2;
    msg *m = NULL;
    for (;;) {
        m = status_of(zctx, a->coordinator, cc, job, 0, &err);
        if (!m)
            goto out;
        get_s(m, "state", state, sizeof state);
        if (strcmp(state, "queued") && strcmp(state, "running"))
            break;
        if (!wait) {
            sl_err_set(&err,
                       "job %lld is %s (%llu/%llu ranges), so it has no report yet; try again "
                       "when it is done (sluice status %lld)",
                       (long long)job, state, (unsigned long long)get_u(m, "ranges_done"),
                       (unsigned long long)get_u(m, "ranges"), (long long)job);
            goto out;
        }
        if (a->progress)
            fprintf(stderr, "\rsluice: job %lld %s, %llu/%llu ranges", (long long)job, state,
                    (unsigned long long)get_u(m, "ranges_done"),
                    (unsigned long long)get_u(m, "ranges"));
        msg_free(m);
        m = NULL;
        struct timespec ts = {0, 200 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (a->progress)
        fprintf(stderr, "\r\033[K");
    if (strcmp(state, "done")) {
        char e[512];
        get_s(m, "error", e, sizeof e);
        sl_err_set(&err, "job %lld %s%s%s", (long long)job, state, e[0] ? ": " : "", e);
        goto out;
    }
    msg_free(m);
    if (!(m = status_of(zctx, a->coordinator, cc, job, 1, &err)))
        goto out;
    const msgpack_object *ev;
    uint32_t nev;
    if (msg_get_array(m, "events", &ev, &nev, &err))
        goto out;
    for (uint32_t i = 0; i < nev; i++) {
        const uint8_t *p;
        size_t n;
        if (msg_obj_bin(&ev[i], &p, &n) == 0)
            event_into_report(&rep, p, n);
    }
    co_summary sum;
    summary_of(m, &sum);
    diff_args named = *a;
    if (!named.o.table) {
        get_s(m, "table", table, sizeof table);
        get_s(m, "target_table", ttable, sizeof ttable);
        named.o.table = table;
        named.o.target_table = ttable[0] ? ttable : NULL;
    }
    if ((status = report_finish(&rep, &sum, &named, &err)) < 0)
        status = 2;
out:
    msg_free(m);
    report_free(&rep);
    if (status == 2)
        cli_fail("%s", err.msg);
    return status;
}

static void pack_list(msg_writer *w, const char *key, const char *const *v, size_t n)
{
    msg_key(w, key);
    msg_pack_array(w, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        msg_pack_cstr(w, v[i]);
}

/* The submit message for a job: the one format both `submit` and a
 * coordinator's schedule file produce. */
static msg_writer *submit_writer(const char *source, const char *target, const co_diff_opts *o)
{
    msg_writer *w = msg_writer_new(MSG_SUBMIT, 1, 13);
    if (!w)
        return NULL;
    msg_put_cstr(w, "source", source);
    msg_put_cstr(w, "target", target);
    msg_put_cstr(w, "table", o->table);
    msg_put_cstr(w, "target_table", o->target_table);
    msg_put_cstr(w, "where", o->where);
    pack_list(w, "key", o->key, o->nkey);
    pack_list(w, "columns", o->columns, o->ncolumns);
    pack_list(w, "exclude", o->exclude, o->nexclude);
    msg_put_int(w, "strict", o->strict);
    msg_put_uint(w, "ranges", o->ranges);
    msg_put_int(w, "rechecks", o->rechecks);
    msg_put_int(w, "settle_ms", o->settle_ms);
    msg_put_int(w, "max_rows_per_second", o->max_rows_per_second);
    return w;
}

int cmd_submit(int argc, char **argv)
{
    diff_args a;
    int st = diff_args_parse(argc, argv, 1, &a);
    if (st >= 0) {
        diff_args_free(&a);
        return st;
    }
    sl_err err = {0};
    void *zctx = zmq_ctx_new();
    msg_writer *w = submit_writer(a.source, a.target, &a.o);
    if (!w) {
        diff_args_free(&a);
        return cli_fail("out of memory");
    }
    cli_curve cc;
    if ((st = cli_curve_load(&cc, a.curve_server, a.curve_key)) >= 0) {
        msg_writer_free(w);
        zmq_ctx_term(zctx);
        diff_args_free(&a);
        return st;
    }
    msg *m = ask(zctx, a.coordinator, &cc, w, 5000, &err);
    if (!m) {
        st = cli_fail("%s", err.msg);
    } else {
        int64_t job = (int64_t)get_u(m, "job");
        msg_free(m);
        if (a.wait) {
            fprintf(stderr, "sluice: job %lld submitted\n", (long long)job);
            st = wait_job(zctx, &a, &cc, job, 1);
        } else {
            printf("%lld\n", (long long)job);
            st = 0;
        }
    }
    zmq_ctx_term(zctx);
    diff_args_free(&a);
    return st;
}

/* Options shared by status, watch and workers. */
typedef struct client_args {
    const char *coordinator, *events, *format;
    cli_curve cc;
    int64_t job;
    long count;
    int timeout_ms;
    int allow_empty; /* report */
} client_args;

static int client_parse(int argc, char **argv, const char *cmd, int want_job, client_args *a)
{
    static const struct option opts[] = {{"coordinator", required_argument, 0, 'c'},
                                         {"events", required_argument, 0, 'e'},
                                         {"format", required_argument, 0, 'f'},
                                         {"job", required_argument, 0, 'j'},
                                         {"count", required_argument, 0, 'n'},
                                         {"timeout", required_argument, 0, 't'},
                                         {"curve-server-key", required_argument, 0, 'K'},
                                         {"curve-key", required_argument, 0, 'k'},
                                         {"allow-empty", no_argument, 0, 'E'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    memset(a, 0, sizeof *a);
    a->coordinator = CLI_DEFAULT_CLIENTS_EP;
    a->events = CLI_DEFAULT_EVENTS_EP;
    a->format = "text";
    const char *curve_server = NULL, *curve_key = NULL;
    int ch, st;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end;
        switch (ch) {
        case 'c':
            a->coordinator = optarg;
            break;
        case 'e':
            a->events = optarg;
            break;
        case 'f':
            a->format = optarg;
            break;
        case 'j':
            a->job = strtoll(optarg, &end, 10);
            if (*end || a->job <= 0)
                return cli_fail("--job must be a job id, not \"%s\"", optarg);
            break;
        case 'n':
            a->count = strtol(optarg, &end, 10);
            if (*end || a->count <= 0)
                return cli_fail("--count must be a positive number, not \"%s\"", optarg);
            break;
        case 't':
            if ((st = parse_seconds(optarg, "--timeout", &a->timeout_ms)) >= 0)
                return st;
            break;
        case 'K':
            curve_server = optarg;
            break;
        case 'k':
            curve_key = optarg;
            break;
        case 'E':
            a->allow_empty = 1;
            break;
        case 'h':
            printf("usage: sluice %s%s [--coordinator EP] [--events EP] [--format text|json]\n"
                   "       (watch: [--job JOB] [--count N] [--timeout SECONDS])\n"
                   "       (report: [--allow-empty]; prints a finished job's report as\n"
                   "        submit --wait does; exit 0 equal, 1 different, 2 trouble)\n"
                   "       [--curve-server-key KEY|FILE [--curve-key FILE]]\n",
                   cmd, want_job ? " JOB" : "");
            return 0;
        default:
            return cli_fail("unknown or incomplete option \"%s\" (try: sluice %s --help)",
                            argv[optind - 1], cmd);
        }
    }
    if (strcmp(a->format, "text") && strcmp(a->format, "json"))
        return cli_fail("--format must be text or json, not \"%s\"", a->format);
    if (want_job) {
        char *end;
        if (argc - optind != 1 || (a->job = strtoll(argv[optind], &end, 10)) <= 0 || *end)
            return cli_fail("%s needs one job id (sluice submit prints it)", cmd);
    } else if (optind != argc) {
        return cli_fail("%s takes no arguments, only options (try --help)", cmd);
    }
    return cli_curve_load(&a->cc, curve_server, curve_key);
}

int cmd_status(int argc, char **argv)
{
    client_args a;
    int st = client_parse(argc, argv, "status", 1, &a);
    if (st >= 0)
        return st;
    sl_err err;
    void *zctx = zmq_ctx_new();
    msg *m = status_of(zctx, a.coordinator, &a.cc, a.job, 0, &err);
    if (!m) {
        zmq_ctx_term(zctx);
        return cli_fail("%s", err.msg);
    }
    char state[32], table[256], error[512];
    get_s(m, "state", state, sizeof state);
    get_s(m, "table", table, sizeof table);
    get_s(m, "error", error, sizeof error);
    co_summary s;
    summary_of(m, &s);
    uint64_t done = get_u(m, "ranges_done");
    if (!strcmp(a.format, "json")) {
        json_t *o = json_pack(
            "{s:I, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f}", "job",
            (json_int_t)a.job, "state", state, "table", table, "source", s.source_name, "target",
            s.target_name, "source_rows", (json_int_t)s.source_rows, "target_rows",
            (json_int_t)s.target_rows, "ranges", (json_int_t)s.ranges, "ranges_done",
            (json_int_t)done, "changed", (json_int_t)s.changed, "missing_in_target",
            (json_int_t)s.missing, "extra_in_target", (json_int_t)s.extra, "schema",
            (json_int_t)s.schema, "elapsed_seconds", s.elapsed);
        if (error[0])
            json_object_set_new(o, "error", json_string(error));
        char *txt = json_dumps(o, JSON_PRESERVE_ORDER);
        puts(txt ? txt : "{}");
        free(txt);
        json_decref(o);
    } else {
        printf("job %lld %s: table %s, %llu/%zu ranges, %llu source rows, %llu target rows\n",
               (long long)a.job, state, table, (unsigned long long)done, s.ranges,
               (unsigned long long)s.source_rows, (unsigned long long)s.target_rows);
        printf("divergences: %llu changed, %llu missing-in-target, %llu extra-in-target, %llu "
               "schema\n",
               (unsigned long long)s.changed, (unsigned long long)s.missing,
               (unsigned long long)s.extra, (unsigned long long)s.schema);
        if (error[0])
            printf("error: %s\n", error);
    }
    msg_free(m);
    zmq_ctx_term(zctx);
    return 0;
}

/* sluice report JOB: the report of a job submitted without --wait. */
int cmd_report(int argc, char **argv)
{
    client_args a;
    int st = client_parse(argc, argv, "report", 1, &a);
    if (st >= 0)
        return st;
    diff_args d;
    memset(&d, 0, sizeof d);
    d.coordinator = a.coordinator;
    d.format = a.format;
    d.allow_empty = a.allow_empty;
    void *zctx = zmq_ctx_new();
    st = wait_job(zctx, &d, &a.cc, a.job, 0);
    zmq_ctx_term(zctx);
    fflush(stdout);
    return st;
}

int cmd_workers(int argc, char **argv)
{
    client_args a;
    int st = client_parse(argc, argv, "workers", 0, &a);
    if (st >= 0)
        return st;
    sl_err err;
    void *zctx = zmq_ctx_new();
    msg_writer *w = msg_writer_new(MSG_WORKERS, 1, 0);
    msg *m = w ? ask(zctx, a.coordinator, &a.cc, w, 5000, &err) : NULL;
    const msgpack_object *items, *f, *dbs;
    uint32_t n, nf, nd;
    if (!m || msg_get_array(m, "workers", &items, &n, &err)) {
        msg_free(m);
        zmq_ctx_term(zctx);
        return cli_fail("%s", err.msg);
    }
    for (uint32_t i = 0; i < n; i++) {
        int64_t id, alive, busy, idle;
        if (msg_obj_array(&items[i], &f, &nf) || nf < 5 || msg_obj_int(&f[0], &id) ||
            msg_obj_int(&f[1], &alive) || msg_obj_int(&f[2], &busy) || msg_obj_int(&f[3], &idle) ||
            msg_obj_array(&f[4], &dbs, &nd))
            continue;
        printf("worker %lld  %-5s %-4s last seen %.1f s ago  databases:", (long long)id,
               alive ? "alive" : "lost", busy ? "busy" : "idle", (double)idle / 1000);
        for (uint32_t k = 0; k < nd; k++) {
            const char *p;
            size_t l;
            if (msg_obj_str(&dbs[k], &p, &l) == 0)
                printf(" %.*s", (int)l, p);
        }
        printf("\n");
    }
    printf("%u workers\n", n);
    msg_free(m);
    zmq_ctx_term(zctx);
    return 0;
}

/* Prints one event: JSON lines, or one readable line. */
static void print_event(const msg *m, int json)
{
    char event[32], kind[32], state[32], error[512];
    get_s(m, "event", event, sizeof event);
    get_s(m, "kind", kind, sizeof kind);
    get_s(m, "state", state, sizeof state);
    get_s(m, "error", error, sizeof error);
    int64_t job = (int64_t)get_u(m, "job"), at = (int64_t)get_u(m, "at_ms");
    int64_t read_at = (int64_t)get_u(m, "read_at_ms");
    json_t *o = json_pack("{s:s, s:I, s:I}", "event", event, "job", (json_int_t)job, "at_ms",
                          (json_int_t)at);
    sl_buf line = {0};
    if (!strcmp(event, "divergence")) {
        char status[16];
        get_s(m, "status", status, sizeof status);
        json_object_set_new(o, "kind", json_string(kind));
        if (status[0])
            json_object_set_new(o, "status", json_string(status));
        json_object_set_new(o, "read_at_ms", json_integer(read_at));
        sl_buf_printf(&line, "job %lld %s%s%s", (long long)job, status[0] ? status : "",
                      status[0] ? " " : "", kind);
        const msgpack_object *items, *f;
        uint32_t n, nf;
        const char *p;
        size_t l;
        if (!strcmp(kind, "schema")) {
            char column[256], problem[64];
            get_s(m, "column", column, sizeof column);
            get_s(m, "problem", problem, sizeof problem);
            json_object_set_new(o, "column", json_string(column));
            json_object_set_new(o, "problem", json_string(problem));
            sl_buf_printf(&line, " column \"%s\" %s", column, problem);
        }
        if (msg_get_array(m, "key", &items, &n, NULL) == 0) {
            json_t *key = json_object();
            for (uint32_t i = 0; i < n; i++)
                if (msg_obj_array(&items[i], &f, &nf) == 0 && nf == 2) {
                    char name[256], val[1024] = "";
                    name[0] = '\0';
                    if (msg_obj_str(&f[0], &p, &l) == 0)
                        snprintf(name, sizeof name, "%.*s", (int)l, p);
                    if (msg_obj_str(&f[1], &p, &l) == 0)
                        snprintf(val, sizeof val, "%.*s", (int)l, p);
                    json_object_set_new(key, name, json_string(val));
                    sl_buf_printf(&line, " %s=%s", name, val);
                }
            json_object_set_new(o, "key", key);
        }
        if (msg_get_array(m, "columns", &items, &n, NULL) == 0 && n) {
            json_t *cols = json_array();
            for (uint32_t i = 0; i < n; i++)
                if (msg_obj_array(&items[i], &f, &nf) == 0 && nf >= 3 &&
                    msg_obj_str(&f[0], &p, &l) == 0) {
                    json_array_append_new(cols, json_stringn(p, l));
                    sl_buf_printf(&line, "%s%.*s", i ? "," : " columns ", (int)l, p);
                }
            json_object_set_new(o, "columns", cols);
        }
    } else if (!strcmp(event, "progress")) {
        uint64_t done = get_u(m, "ranges_done"), total = get_u(m, "ranges");
        json_object_set_new(o, "ranges_done", json_integer((json_int_t)done));
        json_object_set_new(o, "ranges", json_integer((json_int_t)total));
        sl_buf_printf(&line, "job %lld progress %llu/%llu ranges", (long long)job,
                      (unsigned long long)done, (unsigned long long)total);
    } else {
        json_object_set_new(o, "state", json_string(state));
        if (error[0])
            json_object_set_new(o, "error", json_string(error));
        sl_buf_printf(&line, "job %lld %s%s%s", (long long)job, state, error[0] ? ": " : "", error);
    }
    if (json) {
        char *txt = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (txt)
            puts(txt);
        free(txt);
    } else if (line.len) {
        printf("%.*s\n", (int)line.len, (const char *)line.p);
    }
    fflush(stdout);
    json_decref(o);
    sl_buf_free(&line);
}

int cmd_watch(int argc, char **argv)
{
    client_args a;
    int st = client_parse(argc, argv, "watch", 0, &a);
    if (st >= 0)
        return st;
    catch_signals();
    void *zctx = zmq_ctx_new();
    void *sub = zmq_socket(zctx, ZMQ_SUB);
    char topic[48];
    int n = a.job ? snprintf(topic, sizeof topic, "job.%lld", (long long)a.job) : 0;
    /* "job.1" would also match "job.12": the topic is matched as a prefix,
     * so the job number is checked again on each event */
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, topic, (size_t)n);
    sl_err cerr;
    if (a.cc.on && curve_client(sub, a.cc.server, a.cc.has_secret ? a.cc.secret : NULL, &cerr)) {
        zmq_close(sub);
        zmq_ctx_term(zctx);
        return cli_fail("%s", cerr.msg);
    }
    if (zmq_connect(sub, a.events) != 0) {
        zmq_close(sub);
        zmq_ctx_term(zctx);
        return cli_fail("cannot connect to events at %s: %s", a.events, zmq_strerror(zmq_errno()));
    }
    long seen = 0;
    double t0 = sl_now();
    while (!stop_flag && (!a.count || seen < a.count)) {
        zmq_pollitem_t it = {sub, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 200) <= 0) {
            if (a.timeout_ms && (sl_now() - t0) * 1000 > a.timeout_ms)
                break;
            continue;
        }
        zmq_msg_t tp, body;
        zmq_msg_init(&tp);
        zmq_msg_init(&body);
        if (zmq_msg_recv(&tp, sub, 0) >= 0 && zmq_msg_more(&tp) &&
            zmq_msg_recv(&body, sub, 0) >= 0) {
            sl_err e;
            msg *m = msg_decode(zmq_msg_data(&body), zmq_msg_size(&body), &e);
            if (m && msg_type(m) == MSG_EVENT && (!a.job || (int64_t)get_u(m, "job") == a.job)) {
                print_event(m, !strcmp(a.format, "json"));
                seen++;
            }
            msg_free(m);
        }
        zmq_msg_close(&tp);
        zmq_msg_close(&body);
    }
    zmq_close(sub);
    zmq_ctx_term(zctx);
    return a.count && seen < a.count
               ? cli_fail("watch ended after %ld of %ld events", seen, a.count)
               : 0;
}
