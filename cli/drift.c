/* sluice drift: the drift history a coordinator recorded in its control
 * database, one line per audit, scrub cycle or change-verification
 * window, oldest first. Reads the database itself (--state, as the
 * coordinator was given it), so it works with the coordinator stopped. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>

#include "../base/dsn.h"
#include "../coordinator/store.h"
#include "cli.h"

typedef struct out {
    int json;
    json_t *rows;
    size_t n;
    int64_t checked, divergent, transient;
} out;

static void stamp(double at, char *buf, size_t len)
{
    time_t t = (time_t)at;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm);
}

/* a latency, or "-" when the row had no divergence to time */
static void lat(double v, char *buf, size_t len)
{
    if (v < 0)
        snprintf(buf, len, "-");
    else
        snprintf(buf, len, "%.2f", v);
}

static json_t *opt_real(double v)
{
    return v < 0 ? json_null() : json_real(v);
}

static int print_row(void *ctx, const co_drift_row *r)
{
    out *o = ctx;
    int64_t div = r->missing + r->extra + r->changed;
    o->n++;
    o->checked += r->rows_checked;
    o->divergent += div;
    o->transient += r->transient;
    char at[32];
    stamp(r->at, at, sizeof at);
    if (o->json) {
        json_array_append_new(
            o->rows,
            json_pack("{s:s, s:s, s:s, s:I, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:o, s:o}",
                      "table", r->table, "kind", r->kind, "at", at, "job", (json_int_t)r->job,
                      "window_seconds", r->window_s, "rows_checked", (json_int_t)r->rows_checked,
                      "missing", (json_int_t)r->missing, "extra", (json_int_t)r->extra, "changed",
                      (json_int_t)r->changed, "schema", (json_int_t)r->schema, "transient",
                      (json_int_t)r->transient, "source_rows", (json_int_t)r->source_rows,
                      "latency_p50", opt_real(r->lat_p50), "latency_p99", opt_real(r->lat_p99),
                      "latency_max", opt_real(r->lat_max)));
        return 0;
    }
    if (o->n == 1)
        printf("%-19s  %-20s %-7s %6s %9s %12s %8s %8s %8s %6s %9s %7s %7s %7s\n", "at (UTC)",
               "table", "kind", "job", "window_s", "rows_checked", "missing", "extra", "changed",
               "schema", "transient", "p50_s", "p99_s", "max_s");
    char p50[16], p99[16], mx[16];
    lat(r->lat_p50, p50, sizeof p50);
    lat(r->lat_p99, p99, sizeof p99);
    lat(r->lat_max, mx, sizeof mx);
    /* the time the evidence covers: an audit's run, a change window's length */
    printf("%-19s  %-20s %-7s %6lld %9.1f %12lld %8lld %8lld %8lld %6lld %9lld %7s %7s %7s\n", at,
           r->table, r->kind, (long long)r->job, r->window_s, (long long)r->rows_checked,
           (long long)r->missing, (long long)r->extra, (long long)r->changed, (long long)r->schema,
           (long long)r->transient, p50, p99, mx);
    return 0;
}

int cmd_drift(int argc, char **argv)
{
    static const char usage[] =
        "usage: sluice drift [--state WHERE] [--table T] [--since DURATION] [--json]\n"
        "  the drift history in a coordinator's control database, oldest first:\n"
        "  one line per audit, scrub cycle or change-verification window, with\n"
        "  rows checked, confirmed divergences by kind, transient differences and\n"
        "  the detection latency (p50, p99, max seconds)\n"
        "  --state: the coordinator's --state (default sqlite:sluice-state.db)\n"
        "  --since: only rows of the last DURATION (90s, 15m, 2h, 7d)\n";
    static const struct option opts[] = {
        {"state", required_argument, 0, 's'}, {"table", required_argument, 0, 't'},
        {"since", required_argument, 0, 'S'}, {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
    const char *state = "sqlite:sluice-state.db", *table = NULL;
    long since_s = -1;
    out o = {0};
    optind = 1;
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 's':
            state = optarg;
            break;
        case 't':
            table = optarg;
            break;
        case 'S':
            if ((since_s = cli_parse_every(optarg)) < 0)
                return cli_fail("--since: \"%s\" is not a duration; use 90s, 15m, 2h or 7d",
                                optarg);
            break;
        case 'j':
            o.json = 1;
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        default:
            return cli_fail("drift: unknown or incomplete option %s; see sluice drift --help",
                            argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cli_fail("drift: unexpected argument \"%s\"; see sluice drift --help", argv[optind]);
    char shown[512];
    dsn_redact(state, shown, sizeof shown);
    /* a read must not create a database where none was */
    const char *path = !strncmp(state, "sqlite:", 7)                ? state + 7
                       : strstr(state, "://") || strchr(state, '=') ? NULL
                                                                    : state;
    struct stat sb;
    if (path && stat(path, &sb) != 0)
        return cli_fail("no control database at %s: give the coordinator's --state", shown);
    sl_err err = {0};
    co_store *s = co_store_open(state, &err);
    if (!s)
        return cli_fail("%s", err.msg);
    double since = since_s < 0 ? 0 : (double)sl_wall_ms() / 1000.0 - (double)since_s;
    o.rows = json_array();
    int rc = co_store_drift_each(s, table, since, print_row, &o, &err);
    co_store_close(s);
    if (rc != 0) {
        json_decref(o.rows);
        return cli_fail("%s", err.msg);
    }
    if (o.json) {
        char *txt = json_dumps(o.rows, JSON_INDENT(1));
        printf("%s\n", txt ? txt : "[]");
        free(txt);
    } else {
        printf("%zu drift rows%s%s%s: %lld rows checked, %lld confirmed divergent, %lld "
               "transient\n",
               o.n, table ? " for table " : "", table ? table : "",
               since_s >= 0 ? " in the period asked" : "", (long long)o.checked,
               (long long)o.divergent, (long long)o.transient);
    }
    json_decref(o.rows);
    return 0;
}
