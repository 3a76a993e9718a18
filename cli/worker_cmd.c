/* sluice worker: worker slots next to the databases, serving a coordinator. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "cli.h"

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
            st = cli_parse_seconds(optarg, "--heartbeat", &hb);
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
        cli_catch_signals();
        wk_config cfg = {.curve_server_key = cc.on ? cc.server : NULL,
                         .curve_secret = cc.has_secret ? cc.secret : NULL,
                         .zctx = zctx,
                         .endpoint = ep,
                         .dbs = dbs,
                         .ndbs = ndbs,
                         .heartbeat_ms = hb,
                         .read_timeout_ms = read_timeout,
                         .log = worker_log,
                         .stop = cli_stop_flag()};
        wk_threads wt = {0};
        if (wk_threads_start(&wt, slots, &cfg, &err)) {
            *cli_stop_flag() = 1;
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
