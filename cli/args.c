#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "../merkle/tol.h"
#include "../proto/curve.h"
#include "cli.h"

static const char *usage_scrub =
    "usage: sluice scrub SOURCE TARGET --table T [--rows-per-second N | --share P]\n"
    "         [--cycles N] [--ranges N] [diff options] [--coordinator EP]\n"
    "  walks every row of a table on a coordinator's cluster, range by range in\n"
    "  a random order, at a steady rate, one cycle after another (each cycle a\n"
    "  fresh order). SOURCE and TARGET name databases the workers announced.\n"
    "  --rows-per-second N  the read rate, both sides together (default: unthrottled)\n"
    "  --share P            the share of the time (1 to 100, as 10 or 10%) the reads\n"
    "                       may take: each range read a worker runs counts, so at 10\n"
    "                       they keep 0.1 read-seconds busy per second on average\n"
    "  --cycles N           stop after N cycles (default 1; 0: until interrupted)\n"
    "  --ranges N           ranges per cycle (default 64; more: finer rotation)\n"
    "  progress on stderr; a line per cycle on stdout with the rows checked, the\n"
    "  divergences and the time by which every row had been checked at least once;\n"
    "  each cycle is a drift row of kind scrub (sluice drift).\n"
    "  exit 0: no divergence in any cycle; 1: divergences; 2: trouble\n";

static const char *usage_changes =
    "usage: sluice verify-changes SOURCE TARGET --table T [--settle SECONDS]\n"
    "         [--rechecks N] [--duration D] [--window D] [diff options]\n"
    "         [--coordinator EP]\n"
    "  change-driven verification: a worker beside each PostgreSQL database\n"
    "  follows its changes (a logical slot sluice creates and drops, wal_level =\n"
    "  logical); every key changed on either side is fetched from both after\n"
    "  --settle seconds (default 2); a difference is fetched again --rechecks\n"
    "  times (default 2) and reported when it persists.\n"
    "  --events EP          the coordinator's event endpoint (default: the port\n"
    "                       after --coordinator's, as the coordinator's defaults)\n"
    "  --duration D         stop after D (90, 90s, 15m, 2h; default: until\n"
    "                       interrupted with Ctrl-C)\n"
    "  --window D           a drift row (sluice drift, kind changes) every D\n"
    "                       (30s, 5m, 1h; default 60s) and a last one at the end:\n"
    "                       keys checked, divergences, detection latency from\n"
    "                       each change's commit\n"
    "  progress (keys checked, backlog, slot lag) on stderr; each confirmed\n"
    "  divergence on stdout as it is found, and a closing line.\n"
    "  exit 0: none confirmed; 1: divergences; 2: trouble\n";

static const char *usage_diff =
    "usage: sluice diff SOURCE TARGET --table TABLE [options]\n"
    "       sluice submit SOURCE TARGET --table TABLE [--coordinator EP] [--wait] [options]\n"
    "  SOURCE, TARGET       diff: postgresql://... (or libpq conninfo), sqlite:PATH, or\n"
    "                       mysql://USER:PASSWORD@HOST:PORT/DB (MySQL 8, MariaDB)\n"
    "                       submit: database names the workers announced (--db NAME=DSN)\n"
    "  --table T            table to compare (schema.table allowed)\n"
    "  --target-table T     table name on the target, if different\n"
    "  --key A,B            key columns (default: the primary key)\n"
    "  --columns A,B        compare only these columns (plus the key)\n"
    "  --exclude-columns A  leave these columns out\n"
    "  --where SQL          filter applied on both sides\n"
    "  --workers N          diff: parallel workers (default 2)\n"
    "  --ranges N           key ranges (default: 4 per worker, more for big tables)\n"
    "  --format text|json   report format (default text)\n"
    "  --strict             integer 10 and numeric 10.0 differ (keep type classes)\n"
    "  --tolerance COL=EPS  numbers of COL within EPS are equal (|a-b| <= EPS, exact\n"
    "                       decimal arithmetic); COL=EPSr: relative, |a-b| <= EPS *\n"
    "                       max(|a|,|b|); COL may be a class: integer, numeric, float\n"
    "                       (every column compared as that class); repeatable\n"
    "  --timestamp-precision [COL=]s|ms|us  timestamps rounded to that precision\n"
    "                       (to nearest, as PostgreSQL's timestamp(p)) before comparing\n"
    "  --trim-trailing-spaces[=COL,...]  text compared without trailing spaces (U+0020)\n"
    "  --case-fold[=COL,...]  text compared with ASCII letters case-folded (A-Z = a-z;\n"
    "                       other characters exactly); without =COL: every text column\n"
    "  --rechecks N         live data: fetch a differing row again N times before\n"
    "                       confirming it; one that comes back equal is transient\n"
    "  --settle SECONDS     wait between re-checks (default 5 with --rechecks)\n"
    "  --sample-percent P   compare P% of the key space only (small ranges picked at\n"
    "                       random) and print the bound it gives on the divergent share\n"
    "  --max-rows-per-second N  throttle reading (both sides together) for a busy\n"
    "                       production database\n"
    "  --allow-empty        two empty tables are equal instead of an error\n"
    "  --no-progress        no progress line on stderr\n"
    "  --fix-sql FILE       diff: also write the SQL that makes the target equal to\n"
    "                       the source to FILE (see sluice repair --help)\n"
    "  --keys-only          report changed rows by key only: their columns are never\n"
    "                       read (a re-check compares row hashes again, by key)\n"
    "  --summary-only       print the counts only (text: the summary lines; JSON:\n"
    "                       the document without \"divergences\"); exit status as usual\n"
    "  --max-divergences N  stop the job once N row divergences are confirmed\n"
    "                       (\"stopped after N divergences\"); exit 1\n"
    "  --chunk-time SECONDS split a pending key range expected to read longer than\n"
    "                       this (measured seconds per row, or the throttle) into\n"
    "                       pieces of about this long (default: off)\n"
    "  --max-replica-lag SECONDS --replica R  no range read starts while replica R\n"
    "                       lags by more than SECONDS; resumes below it (R: diff, the\n"
    "                       replica's DSN, repeatable; submit, database names the\n"
    "                       workers announced, repeatable or A,B). PostgreSQL hot\n"
    "                       standbys only: a server that is not one is an error\n"
    "  --read-timeout SECONDS  diff: give up on a database silent this long in a\n"
    "                       query (a lock, a stalled server; default 300); connecting\n"
    "                       gives up after 10 s (DSN connect_timeout, PGCONNECT_TIMEOUT)\n"
    "  --coordinator EP     submit: the coordinator's client endpoint (" CLI_DEFAULT_CLIENTS_EP
    ")\n"
    "  --wait               submit: follow the job and print its report\n"
    "  --priority high|normal|low  submit: the job's place in the coordinator's queue\n"
    "                       (default normal)\n"
    "  --max-tasks N        submit: at most N of the job's tasks on workers at once\n"
    "                       (default: no cap)\n"
    "  --share P            submit: the job's range reads take at most P% (1 to 100,\n"
    "                       as 10 or 10%) of the time, each worker's read counted\n"
    "  --curve-server-key K submit: the coordinator's CURVE public key (or key file)\n"
    "  --curve-key FILE     submit: this client's CURVE secret key file\n"
    "  --request-timeout SECONDS  submit: a coordinator silent this long is an error\n"
    "                       (default 5)\n"
    "exit status: 0 equal, 1 different, 2 trouble\n";

static const char *usage_schedule_add =
    "usage: sluice schedule add NAME --every INTERVAL SOURCE TARGET --table TABLE [options]\n"
    "  adds (or replaces) the audit NAME: the job sluice submit would run, queued\n"
    "  every INTERVAL (90, 90s, 15m, 2h, 1d), never while its last run is unfinished\n"
    "  options: those of sluice submit (sluice submit --help) but --wait\n";

int cli_curve_load(cli_curve *c, const char *server_arg, const char *key_arg)
{
    sl_err err = {0};
    memset(c, 0, sizeof *c);
    if (!server_arg && !key_arg)
        return -1;
    if (!server_arg)
        return cli_fail("--curve-key needs --curve-server-key (the coordinator's public key)");
    if (curve_read_key(server_arg, c->server, &err))
        return cli_fail("--curve-server-key: %s", err.msg);
    if (key_arg && curve_read_key(key_arg, c->secret, &err))
        return cli_fail("--curve-key: %s", err.msg);
    c->on = 1;
    c->has_secret = key_arg != NULL;
    return -1;
}

int cli_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("sluice: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 2;
}

/* Splits "a,b,c" into n strings pointing into *store (a copy). */
static char **split_list(const char *s, size_t *n, char **store)
{
    *n = 0;
    *store = strdup(s);
    if (!*store)
        return NULL;
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    char **v = calloc(cap, sizeof *v);
    if (!v)
        return NULL;
    for (char *tok = strtok(*store, ","); tok; tok = strtok(NULL, ","))
        v[(*n)++] = tok;
    return v;
}

/* getopt codes of the tolerance options, in add_tolerance's order */
enum { OPT_TOL = 0x1000, OPT_TSP, OPT_TRIM, OPT_FOLD };

/* Adds the rules of one tolerance option (prefix "tolerance:", ...; value
 * a comma-separated list, NULL for an option given bare) to a->tol, each
 * checked: -1 to go on, else 2 after a printed error. */
static int add_tolerance(diff_args *a, const char *prefix, const char *value)
{
    const char *p = value ? value : "";
    do {
        size_t n = strcspn(p, ",");
        char **v = realloc(a->tol, (a->ntol + 1) * sizeof *v), *r;
        if (!v)
            return cli_fail("out of memory");
        a->tol = v;
        if (!(r = malloc(strlen(prefix) + n + 1)))
            return cli_fail("out of memory");
        sprintf(r, "%s%.*s", prefix, (int)n, p);
        a->tol[a->ntol++] = r;
        enc_tol_rule rule;
        sl_err err = {0};
        if (enc_tol_rule_parse(r, &rule, &err))
            return cli_fail("%s", err.msg);
        if (value && n == 0)
            return cli_fail("--%.*s: an empty column name", (int)strlen(prefix) - 1, prefix);
        p += n;
    } while (*p++ == ',');
    a->o.tolerances = (const char *const *)a->tol;
    a->o.ntolerances = a->ntol;
    return -1;
}

int diff_args_parse(int argc, char **argv, int mode, diff_args *a)
{
    static const struct option opts[] = {{"table", required_argument, 0, 't'},
                                         {"target-table", required_argument, 0, 'T'},
                                         {"key", required_argument, 0, 'k'},
                                         {"columns", required_argument, 0, 'c'},
                                         {"exclude-columns", required_argument, 0, 'x'},
                                         {"where", required_argument, 0, 'w'},
                                         {"workers", required_argument, 0, 'n'},
                                         {"format", required_argument, 0, 'f'},
                                         {"strict", no_argument, 0, 's'},
                                         {"ranges", required_argument, 0, 'r'},
                                         {"allow-empty", no_argument, 0, 'e'},
                                         {"no-progress", no_argument, 0, 'P'},
                                         {"coordinator", required_argument, 0, 'C'},
                                         {"wait", no_argument, 0, 'W'},
                                         {"rechecks", required_argument, 0, 'R'},
                                         {"curve-server-key", required_argument, 0, 'K'},
                                         {"max-rows-per-second", required_argument, 0, 'M'},
                                         {"curve-key", required_argument, 0, 'k' + 256},
                                         {"settle", required_argument, 0, 'S'},
                                         {"read-timeout", required_argument, 0, 'D'},
                                         {"priority", required_argument, 0, 'p'},
                                         {"max-tasks", required_argument, 0, 'm'},
                                         {"request-timeout", required_argument, 0, 'q'},
                                         {"every", required_argument, 0, 'E'},
                                         {"cycles", required_argument, 0, 'y'},
                                         {"sample-percent", required_argument, 0, 'Z'},
                                         {"rows-per-second", required_argument, 0, 'M'},
                                         {"duration", required_argument, 0, 'd' + 256},
                                         {"events", required_argument, 0, 'e' + 256},
                                         {"share", required_argument, 0, 's' + 256},
                                         {"window", required_argument, 0, 'w' + 256},
                                         {"tolerance", required_argument, 0, OPT_TOL},
                                         {"timestamp-precision", required_argument, 0, OPT_TSP},
                                         {"trim-trailing-spaces", optional_argument, 0, OPT_TRIM},
                                         {"case-fold", optional_argument, 0, OPT_FOLD},
                                         /* issue 15: quick answers, audits that yield */
                                         {"keys-only", no_argument, 0, 'K' + 256},
                                         {"summary-only", no_argument, 0, 'S' + 256},
                                         {"max-divergences", required_argument, 0, 'm' + 256},
                                         {"chunk-time", required_argument, 0, 'c' + 256},
                                         {"max-replica-lag", required_argument, 0, 'l' + 256},
                                         {"replica", required_argument, 0, 'r' + 256},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *cmd = mode == DIFF_ARGS_SCHEDULE  ? "schedule add"
                      : mode == DIFF_ARGS_SUBMIT  ? "submit"
                      : mode == DIFF_ARGS_SCRUB   ? "scrub"
                      : mode == DIFF_ARGS_CHANGES ? "verify-changes"
                                                  : "diff";
    int cluster = mode != DIFF_ARGS_DIFF;
    const char *lists[3] = {NULL, NULL, NULL};
    memset(a, 0, sizeof *a);
    a->format = "text";
    a->workers = 2;
    a->progress = isatty(2);
    a->coordinator = CLI_DEFAULT_CLIENTS_EP;
    if (mode == DIFF_ARGS_SCRUB) {
        a->cycles = 1;
        a->o.ranges = 64;
    }
    if (mode == DIFF_ARGS_CHANGES) {
        a->o.rechecks = 2;
        a->o.settle_ms = 2000;
        a->settle_given = 1;
        a->window_ms = 60000;
    }
    int ch;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end;
        switch (ch) {
        case 't':
            a->o.table = optarg;
            break;
        case 'T':
            a->o.target_table = optarg;
            break;
        case 'k':
            lists[0] = optarg;
            break;
        case 'c':
            lists[1] = optarg;
            break;
        case 'x':
            lists[2] = optarg;
            break;
        case 'w':
            a->o.where = optarg;
            break;
        case 'f':
            a->format = optarg;
            break;
        case 's':
            a->o.strict = 1;
            break;
        case 'e':
            a->allow_empty = 1;
            break;
        case 'P':
            a->progress = 0;
            break;
        case 'C':
            a->coordinator = optarg;
            break;
        case 'W':
            a->wait = 1;
            break;
        case 'K':
            a->curve_server = optarg;
            break;
        case 'M': {
            long long r = strtoll(optarg, &end, 10);
            if (*end || r < 1)
                return cli_fail("--max-rows-per-second must be a positive number, not \"%s\"",
                                optarg);
            a->o.max_rows_per_second = r;
            break;
        }
        case 'k' + 256:
            a->curve_key = optarg;
            break;
        case 'R': {
            long r = strtol(optarg, &end, 10);
            if (*end || r < 0 || r > 100)
                return cli_fail("--rechecks must be a number from 0 to 100, not \"%s\"", optarg);
            a->o.rechecks = (int)r;
            break;
        }
        case 'S': {
            double s = strtod(optarg, &end);
            if (*end || s < 0 || s > 3600)
                return cli_fail("--settle must be seconds from 0 to 3600, not \"%s\"", optarg);
            a->o.settle_ms = (int)(s * 1000);
            a->settle_given = 1;
            break;
        }
        case 'D': {
            int st = cli_parse_timeout(optarg, "--read-timeout", &a->read_timeout_ms);
            if (st >= 0)
                return st;
            if (cluster)
                return cli_fail("--read-timeout belongs to the workers that read the databases "
                                "(sluice worker --read-timeout)");
            break;
        }
        case 'n':
            a->workers = strtol(optarg, &end, 10);
            if (*end || a->workers < 1 || a->workers > 64)
                return cli_fail("--workers must be a number from 1 to 64, not \"%s\"", optarg);
            break;
        case 'r': {
            long r = strtol(optarg, &end, 10);
            if (*end || r < 1 || r > 1000000)
                return cli_fail("--ranges must be a number from 1 to 1000000, not \"%s\"", optarg);
            a->o.ranges = (size_t)r;
            break;
        }
        case 'p':
            if (!cluster)
                return cli_fail("--priority orders a coordinator's queue: it belongs to sluice "
                                "submit");
            if (sl_priority_parse(optarg, &a->priority))
                return cli_fail("--priority must be high, normal or low, not \"%s\"", optarg);
            break;
        case 'm': {
            long long m = strtoll(optarg, &end, 10);
            if (!cluster)
                return cli_fail("--max-tasks caps a job on a coordinator: it belongs to sluice "
                                "submit");
            if (end == optarg || *end || m < 1 || m > 100000)
                return cli_fail("--max-tasks must be a number from 1 to 100000, not \"%s\"",
                                optarg);
            a->max_tasks = m;
            break;
        }
        case 's' + 256: {
            if (!cluster || mode == DIFF_ARGS_CHANGES)
                return cli_fail("--share paces a job's range reads on a coordinator: it belongs "
                                "to sluice submit and sluice scrub");
            long p = strtol(optarg, &end, 10);
            if (end == optarg || (*end && strcmp(end, "%")) || p < 1 || p > 100)
                return cli_fail("--share must be a percent from 1 to 100 (10 or 10%%), not "
                                "\"%s\"",
                                optarg);
            a->share = (int)p;
            break;
        }
        case 'q': {
            int st = cli_parse_seconds(optarg, "--request-timeout", &a->request_timeout_ms);
            if (st >= 0)
                return st;
            if (!cluster)
                return cli_fail("--request-timeout is for sluice submit");
            break;
        }
        case 'Z': {
            if (mode == DIFF_ARGS_SCRUB || mode == DIFF_ARGS_SCHEDULE)
                return cli_fail("--sample-percent belongs to sluice diff and sluice submit");
            double pct = strtod(optarg, &end);
            if (end == optarg || *end || !(pct >= 0.01 && pct < 100))
                return cli_fail("--sample-percent must be a number from 0.01 to below 100, not "
                                "\"%s\"",
                                optarg);
            a->o.sample_bp = (int)(pct * 100 + 0.5);
            if (getrandom(&a->o.shuffle_seed, sizeof a->o.shuffle_seed, 0) !=
                sizeof a->o.shuffle_seed)
                a->o.shuffle_seed = (uint64_t)sl_wall_ms() * 2654435761u;
            a->o.shuffle_seed = (a->o.shuffle_seed & (uint64_t)INT64_MAX) | 1;
            break;
        }
        case 'y':
            if (mode != DIFF_ARGS_SCRUB)
                return cli_fail("--cycles belongs to sluice scrub");
            a->cycles = strtol(optarg, &end, 10);
            if (end == optarg || *end || a->cycles < 0 || a->cycles > 1000000)
                return cli_fail("--cycles must be a number from 0 (until stopped) to 1000000, "
                                "not \"%s\"",
                                optarg);
            break;
        case 'd' + 256: {
            if (mode != DIFF_ARGS_CHANGES)
                return cli_fail("--duration belongs to sluice verify-changes");
            long d = cli_parse_every(optarg);
            if (d <= 0)
                return cli_fail("--duration must be like 90, 90s, 15m or 2h, not \"%s\"", optarg);
            a->duration_ms = (int64_t)d * 1000;
            break;
        }
        case 'w' + 256: {
            if (mode != DIFF_ARGS_CHANGES)
                return cli_fail("--window belongs to sluice verify-changes");
            long w = cli_parse_every(optarg);
            if (w <= 0 || w > 86400)
                return cli_fail("--window must be like 30s, 5m or 1h (at most a day), not \"%s\"",
                                optarg);
            a->window_ms = (int64_t)w * 1000;
            break;
        }
        case 'e' + 256:
            if (mode != DIFF_ARGS_CHANGES)
                return cli_fail("--events belongs to sluice verify-changes");
            a->events = optarg;
            break;
        case 'E':
            if (mode != DIFF_ARGS_SCHEDULE)
                return cli_fail("--every belongs to sluice schedule add");
            if ((a->every_s = cli_parse_every(optarg)) <= 0)
                return cli_fail("--every must be like 90, 90s, 15m, 2h or 1d, not \"%s\"", optarg);
            break;
        case OPT_TOL:
        case OPT_TSP:
        case OPT_TRIM:
        case OPT_FOLD: {
            static const char *const prefix[] = {
                "tolerance:", "timestamp-precision:", "trim-trailing-spaces:", "case-fold:"};
            int st = add_tolerance(a, prefix[ch - OPT_TOL], optarg);
            if (st >= 0)
                return st;
            break;
        }
        /* issue 15: quick answers, audits that yield */
        case 'K' + 256:
            if (mode == DIFF_ARGS_CHANGES)
                return cli_fail("--keys-only belongs to sluice diff, submit and schedule add");
            a->o.keys_only = 1;
            break;
        case 'S' + 256:
            if (mode != DIFF_ARGS_DIFF && mode != DIFF_ARGS_SUBMIT)
                return cli_fail("--summary-only shapes a printed report: it belongs to sluice "
                                "diff and sluice submit --wait");
            a->summary_only = 1;
            break;
        case 'm' + 256: {
            long long n = strtoll(optarg, &end, 10);
            if (mode == DIFF_ARGS_CHANGES || mode == DIFF_ARGS_SCRUB)
                return cli_fail(
                    "--max-divergences belongs to sluice diff, submit and schedule add");
            if (end == optarg || *end || n < 1)
                return cli_fail("--max-divergences must be a positive number, not \"%s\"", optarg);
            a->o.max_divergences = (uint64_t)n;
            break;
        }
        case 'c' + 256: {
            double t = strtod(optarg, &end);
            if (mode == DIFF_ARGS_CHANGES)
                return cli_fail("--chunk-time sizes key ranges: verify-changes reads none");
            if (end == optarg || *end || !(t >= 0.01 && t <= 3600))
                return cli_fail("--chunk-time must be seconds from 0.01 to 3600, not \"%s\"",
                                optarg);
            a->o.chunk_time_s = t;
            break;
        }
        case 'l' + 256: {
            double t = strtod(optarg, &end);
            if (mode == DIFF_ARGS_CHANGES)
                return cli_fail("--max-replica-lag paces range reads: verify-changes reads none");
            if (end == optarg || *end || !(t >= 0 && t <= 86400))
                return cli_fail("--max-replica-lag must be seconds from 0 to 86400, not \"%s\"",
                                optarg);
            a->o.max_replica_lag_s = t;
            a->lag_given = 1;
            break;
        }
        case 'r' + 256: {
            /* diff: one DSN each time (a URI may hold commas); else a list of names */
            static const char *const names[CLI_MAX_REPLICAS] = {"replica1", "replica2", "replica3",
                                                                "replica4", "replica5", "replica6",
                                                                "replica7", "replica8"};
            char *copy = a->nstore_r < CLI_MAX_REPLICAS ? strdup(optarg) : NULL;
            if (!copy)
                return cli_fail("at most %d --replica", CLI_MAX_REPLICAS);
            a->replica_store[a->nstore_r++] = copy;
            if (!cluster) {
                a->replica_dsns[a->nreplicas] = copy;
                a->replicas[a->nreplicas] = names[a->nreplicas];
                a->nreplicas++;
                if (strncmp(optarg, "sqlite:", 7) != 0) /* a password stays off ps */
                    memset(optarg, '*', strlen(optarg));
                break;
            }
            for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ",")) {
                if (a->nreplicas >= CLI_MAX_REPLICAS)
                    return cli_fail("at most %d --replica", CLI_MAX_REPLICAS);
                a->replicas[a->nreplicas++] = tok;
            }
            break;
        }
        case 'h':
            fputs(mode == DIFF_ARGS_SCHEDULE  ? usage_schedule_add
                  : mode == DIFF_ARGS_SCRUB   ? usage_scrub
                  : mode == DIFF_ARGS_CHANGES ? usage_changes
                                              : usage_diff,
                  stdout);
            return 0;
        default:
            /* up to any '=': the value may be a DSN with a password */
            return cli_fail("unknown or incomplete option \"%.*s\" (try: sluice %s --help)",
                            (int)strcspn(argv[optind - 1], "="), argv[optind - 1], cmd);
        }
    }
    if (mode == DIFF_ARGS_SCHEDULE) {
        if (argc - optind != 3)
            return cli_fail("schedule add needs a NAME, then SOURCE and TARGET (try: sluice "
                            "schedule add --help)");
        a->name = argv[optind++];
        if (!a->every_s)
            return cli_fail("schedule add needs --every INTERVAL, e.g. --every 15m");
        if (a->wait)
            return cli_fail("a scheduled audit runs unattended: --wait is for sluice submit");
    }
    if (argc - optind != 2)
        return cli_fail("%s needs exactly two databases, SOURCE and TARGET (try: sluice %s "
                        "--help)",
                        cmd, cmd);
    a->source = argv[optind];
    a->target = argv[optind + 1];
    /* diff: a DSN may hold a password; keep copies and blank argv so ps and
     * /proc/PID/cmdline do not show it (SQLite paths stay readable) */
    for (int i = 0; i < 2 && !cluster; i++) {
        char *arg = argv[optind + i];
        if (!(a->dsn_store[i] = strdup(arg)))
            return cli_fail("out of memory");
        if (strncmp(arg, "sqlite:", 7) != 0)
            memset(arg, '*', strlen(arg));
    }
    if (!cluster) {
        a->source = a->dsn_store[0];
        a->target = a->dsn_store[1];
    }
    if (!a->o.table)
        return cli_fail("%s needs --table TABLE", cmd);
    if (strcmp(a->format, "text") && strcmp(a->format, "json"))
        return cli_fail("--format must be text or json, not \"%s\"", a->format);
    size_t *counts[3] = {&a->o.nkey, &a->o.ncolumns, &a->o.nexclude};
    for (int i = 0; i < 3; i++)
        if (lists[i] && !(a->lists[i] = split_list(lists[i], counts[i], &a->store[i])))
            return cli_fail("out of memory");
    if (a->o.rechecks && !a->settle_given)
        a->o.settle_ms = 5000;
    if (mode == DIFF_ARGS_CHANGES && a->o.rechecks < 1)
        return cli_fail("verify-changes needs --rechecks 1 or more (a difference is looked at "
                        "again before it is reported)");
    if (a->nreplicas && !a->lag_given)
        return cli_fail("--replica needs --max-replica-lag SECONDS (the lag to pause at)");
    if (a->lag_given && !a->nreplicas)
        return cli_fail("--max-replica-lag needs --replica (%s)",
                        cluster ? "a database name the workers announced" : "the replica's DSN");
    if (a->summary_only && mode == DIFF_ARGS_SUBMIT && !a->wait)
        return cli_fail("--summary-only shapes the report submit --wait prints: add --wait");
    a->o.replicas = a->replicas;
    a->o.nreplicas = a->nreplicas;
    a->o.key = (const char *const *)a->lists[0];
    a->o.columns = (const char *const *)a->lists[1];
    a->o.exclude = (const char *const *)a->lists[2];
    return -1;
}

int diff_args_client(int argc, char **argv, int mode, const char *events, diff_args *a,
                     sl_client **c)
{
    cli_curve cc;
    int st = diff_args_parse(argc, argv, mode, a);
    if (st < 0)
        st = cli_curve_load(&cc, a->curve_server, a->curve_key);
    if (st < 0)
        st = cli_client_open(a->coordinator, events, &cc, a->request_timeout_ms, c);
    return st;
}

void diff_args_free(diff_args *a)
{
    for (int i = 0; i < 3; i++) {
        free(a->lists[i]);
        free(a->store[i]);
    }
    free(a->dsn_store[0]);
    free(a->dsn_store[1]);
    for (size_t i = 0; i < a->ntol; i++)
        free(a->tol[i]);
    free(a->tol);
    for (size_t i = 0; i < a->nstore_r; i++)
        free(a->replica_store[i]);
}

void diff_args_spec(const diff_args *a, sl_job_spec *spec)
{
    *spec = (sl_job_spec){.source = a->source,
                          .target = a->target,
                          .table = a->o.table,
                          .target_table = a->o.target_table,
                          .key = a->o.key,
                          .nkey = a->o.nkey,
                          .columns = a->o.columns,
                          .ncolumns = a->o.ncolumns,
                          .exclude = a->o.exclude,
                          .nexclude = a->o.nexclude,
                          .where = a->o.where,
                          .strict = a->o.strict,
                          .ranges = a->o.ranges,
                          .rechecks = a->o.rechecks,
                          .settle_ms = a->o.settle_ms,
                          .max_rows_per_second = a->o.max_rows_per_second,
                          .priority = a->priority,
                          .max_tasks = a->max_tasks,
                          .share = a->share,
                          .sample_bp = a->o.sample_bp,
                          .shuffle_seed = a->o.shuffle_seed,
                          .duration_ms = a->duration_ms,
                          .window_ms = a->window_ms,
                          .tolerances = (const char *const *)a->tol,
                          .ntolerances = a->ntol,
                          /* issue 15 */
                          .keys_only = a->o.keys_only,
                          .max_divergences = a->o.max_divergences,
                          .chunk_time_ms = (int64_t)(a->o.chunk_time_s * 1000 + 0.5),
                          .replicas = a->replicas,
                          .nreplicas = a->nreplicas,
                          .max_replica_lag_ms = (int64_t)(a->o.max_replica_lag_s * 1000 + 0.5)};
}

long cli_parse_every(const char *s)
{
    char *end;
    long n = strtol(s, &end, 10);
    long mult = end == s            ? -1
                : !*end             ? 1
                : !strcmp(end, "s") ? 1
                : !strcmp(end, "m") ? 60
                : !strcmp(end, "h") ? 3600
                : !strcmp(end, "d") ? 86400
                                    : -1;
    return n > 0 && mult > 0 && n < 86400L * 366 / mult ? n * mult : -1;
}

int cli_parse_seconds(const char *s, const char *opt, int *ms)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v > 0 && v <= 3600))
        return cli_fail("%s must be a number of seconds from 0 to 3600, not \"%s\"", opt, s);
    *ms = (int)(v * 1000);
    return -1;
}

/* The one flag a signal handler may set (set, never read, by the handler). */
static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

void cli_catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

volatile sig_atomic_t *cli_stop_flag(void)
{
    return &stop_flag;
}

int cli_parse_timeout(const char *s, const char *opt, int *ms)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= 1 && v <= 86400))
        return cli_fail("%s must be a number of seconds from 1 to 86400, not \"%s\"", opt, s);
    *ms = (int)(v * 1000);
    return -1;
}

static void *worker_main(void *arg)
{
    sl_err err = {0};
    wk_run(arg, &err);
    return NULL;
}

int wk_threads_start(wk_threads *wt, long n, const wk_config *cfg, sl_err *err)
{
    wt->n = 0;
    wt->t = calloc((size_t)n, sizeof *wt->t);
    wt->w = calloc((size_t)n, sizeof *wt->w);
    if (!wt->t || !wt->w)
        return sl_err_set(err, "out of memory");
    for (; wt->n < n; wt->n++) {
        if (!(wt->w[wt->n] = wk_new(cfg, err)))
            return -1;
        if (pthread_create(&wt->t[wt->n], NULL, worker_main, wt->w[wt->n])) {
            wk_free(wt->w[wt->n]);
            return sl_err_set(err, "cannot start a worker thread");
        }
    }
    return 0;
}

void wk_threads_join(wk_threads *wt)
{
    for (long i = 0; i < wt->n; i++) {
        pthread_join(wt->t[i], NULL);
        wk_free(wt->w[i]);
    }
    free(wt->t);
    free(wt->w);
    wt->n = 0;
}
