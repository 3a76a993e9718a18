/* The sluice command. Only this folder prints and picks exit statuses:
 * 0 equal, 1 different, 2 trouble (as diff(1)). */
#include <getopt.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "../coordinator/co.h"
#include "../merkle/enc.h"
#include "../proto/msg.h"
#include "../worker/wk.h"

#define SLUICE_VERSION "0.1.0"

static const char *usage_diff =
    "usage: sluice diff SOURCE TARGET --table TABLE [options]\n"
    "  SOURCE, TARGET       postgresql://... (or libpq conninfo), or sqlite:PATH\n"
    "  --table T            table to compare (schema.table allowed)\n"
    "  --target-table T     table name on the target, if different\n"
    "  --key A,B            key columns (default: the primary key)\n"
    "  --columns A,B        compare only these columns (plus the key)\n"
    "  --exclude-columns A  leave these columns out\n"
    "  --where SQL          filter applied on both sides\n"
    "  --workers N          parallel workers (default 2)\n"
    "  --ranges N           key ranges (default: 4 per worker, more for big tables)\n"
    "  --format text|json   report format (default text)\n"
    "  --strict             integer 10 and numeric 10.0 differ (keep type classes)\n"
    "  --allow-empty        two empty tables are equal instead of an error\n"
    "  --no-progress        no progress line on stderr\n"
    "exit status: 0 equal, 1 different, 2 trouble\n";

/* ---- collected report ---------------------------------------------------- */

typedef struct col_rec {
    char *column, *source, *target;
} col_rec;

typedef struct div_rec {
    int kind;
    uint8_t *key;
    size_t klen;
    char **key_vals;
    size_t nkey;
    col_rec *cols;
    size_t ncols;
    char *column, *detail, *stype, *ttype;
} div_rec;

typedef struct report {
    div_rec *v;
    size_t n, cap;
    char **key_cols;
    size_t nkey;
    int progress;
    int oom;
} report;

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int on_event(void *ctx, const co_event *ev)
{
    report *r = ctx;
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 64;
        div_rec *v = realloc(r->v, cap * sizeof *v);
        if (!v)
            return r->oom = 1;
        r->v = v;
        r->cap = cap;
    }
    div_rec *d = &r->v[r->n++];
    memset(d, 0, sizeof *d);
    d->kind = ev->kind;
    if (ev->kind == CO_SCHEMA) {
        d->column = dup_or_null(ev->column);
        d->detail = dup_or_null(ev->detail);
        d->stype = dup_or_null(ev->source_type);
        d->ttype = dup_or_null(ev->target_type);
        return 0;
    }
    if (!r->key_cols) {
        r->key_cols = calloc(ev->nkey, sizeof *r->key_cols);
        if (!r->key_cols)
            return r->oom = 1;
        for (size_t k = 0; k < ev->nkey; k++)
            r->key_cols[k] = strdup(ev->key_cols[k]);
        r->nkey = ev->nkey;
    }
    d->key = malloc(ev->klen ? ev->klen : 1);
    d->key_vals = calloc(ev->nkey, sizeof *d->key_vals);
    d->cols = calloc(ev->ncols ? ev->ncols : 1, sizeof *d->cols);
    if (!d->key || !d->key_vals || !d->cols)
        return r->oom = 1;
    memcpy(d->key, ev->key, ev->klen);
    d->klen = ev->klen;
    d->nkey = ev->nkey;
    for (size_t k = 0; k < ev->nkey; k++)
        d->key_vals[k] = strdup(ev->key_vals[k]);
    for (size_t k = 0; k < ev->ncols; k++) {
        d->cols[k].column = strdup(ev->cols[k].column);
        d->cols[k].source = dup_or_null(ev->cols[k].source);
        d->cols[k].target = dup_or_null(ev->cols[k].target);
    }
    d->ncols = ev->ncols;
    return 0;
}

static void on_progress(void *ctx, const co_progress *p)
{
    report *r = ctx;
    if (!r->progress)
        return;
    fprintf(stderr, "\rsluice: %zu/%zu ranges, %llu/%llu rows", p->ranges_done, p->ranges,
            (unsigned long long)p->rows_done, (unsigned long long)p->rows_expected);
    if (p->ranges_done == p->ranges)
        fprintf(stderr, "\r\033[K");
    fflush(stderr);
}

static int div_cmp(const void *a, const void *b)
{
    const div_rec *x = a, *y = b;
    if ((x->kind == CO_SCHEMA) != (y->kind == CO_SCHEMA))
        return x->kind == CO_SCHEMA ? -1 : 1;
    if (x->kind == CO_SCHEMA)
        return 0;
    size_t m = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->key, y->key, m);
    return c ? c : (x->klen < y->klen ? -1 : x->klen > y->klen);
}

static void report_free(report *r)
{
    for (size_t i = 0; i < r->n; i++) {
        div_rec *d = &r->v[i];
        free(d->key);
        for (size_t k = 0; d->key_vals && k < d->nkey; k++)
            free(d->key_vals[k]);
        free(d->key_vals);
        for (size_t k = 0; d->cols && k < d->ncols; k++) {
            free(d->cols[k].column);
            free(d->cols[k].source);
            free(d->cols[k].target);
        }
        free(d->cols);
        free(d->column);
        free(d->detail);
        free(d->stype);
        free(d->ttype);
    }
    free(r->v);
    for (size_t k = 0; k < r->nkey; k++)
        free(r->key_cols[k]);
    free(r->key_cols);
}

static const char *kind_name(int kind)
{
    switch (kind) {
    case CO_MISSING:
        return "missing-in-target";
    case CO_EXTRA:
        return "extra-in-target";
    case CO_CHANGED:
        return "changed";
    default:
        return "schema";
    }
}

/* SQL-literal style: 'text' with '' doubled, NULL bare. */
static void print_value(FILE *f, const char *v)
{
    if (!v) {
        fputs("NULL", f);
        return;
    }
    fputc('\'', f);
    for (const char *p = v; *p; p++) {
        if (*p == '\'')
            fputc('\'', f);
        fputc(*p, f);
    }
    fputc('\'', f);
}

static void print_key(FILE *f, const report *r, const div_rec *d)
{
    for (size_t k = 0; k < d->nkey; k++) {
        const char *v = d->key_vals[k];
        int numeric = *v != '\0';
        for (const char *p = v; *p; p++)
            if (!((*p >= '0' && *p <= '9') || (p == v && *p == '-')))
                numeric = 0;
        fprintf(f, "%s%s=", k ? " " : "", r->key_cols[k]);
        if (numeric)
            fputs(v, f);
        else
            print_value(f, v);
    }
}

static void print_text(const report *r, const co_summary *s, const char *table, const char *ttable)
{
    for (size_t i = 0; i < r->n; i++) {
        const div_rec *d = &r->v[i];
        if (d->kind == CO_SCHEMA) {
            printf("schema             column \"%s\" %s", d->column, d->detail);
            if (d->stype && d->ttype)
                printf(" (source %s, target %s)", d->stype, d->ttype);
            else if (d->stype || d->ttype)
                printf(" (%s)", d->stype ? d->stype : d->ttype);
            printf("\n");
            continue;
        }
        printf("%-18s ", kind_name(d->kind));
        print_key(stdout, r, d);
        for (size_t k = 0; k < d->ncols; k++) {
            printf("%s%s: ", k ? "; " : "  ", d->cols[k].column);
            print_value(stdout, d->cols[k].source);
            printf(" -> ");
            print_value(stdout, d->cols[k].target);
        }
        printf("\n");
    }
    if (r->n)
        printf("--\n");
    printf("source %s table %s: %llu rows\n", s->source_name, table,
           (unsigned long long)s->source_rows);
    printf("target %s table %s: %llu rows\n", s->target_name, ttable,
           (unsigned long long)s->target_rows);
    double rate = s->elapsed > 0 ? (double)(s->source_rows + s->target_rows) / s->elapsed : 0;
    printf("compared in %zu ranges with %zu workers in %.2f s (%.0f rows/s)\n", s->ranges,
           s->workers, s->elapsed, rate);
    if (r->n == 0)
        printf("tables are identical\n");
    else
        printf("tables differ: %llu changed, %llu missing-in-target, %llu extra-in-target, "
               "%llu schema\n",
               (unsigned long long)s->changed, (unsigned long long)s->missing,
               (unsigned long long)s->extra, (unsigned long long)s->schema);
}

static json_t *jstr(const char *s)
{
    return s ? json_string(s) : json_null();
}

static void print_json(const report *r, const co_summary *s, const char *table, const char *ttable)
{
    json_t *root = json_object(), *schema = json_array(), *divs = json_array();
    json_object_set_new(root, "format", json_string("sluice.diff"));
    json_object_set_new(root, "format_version", json_integer(1));
    json_object_set_new(root, "encoding_version", json_integer(ENC_VERSION));
    json_object_set_new(root, "source",
                        json_pack("{s:s, s:s, s:I}", "name", s->source_name, "table", table, "rows",
                                  (json_int_t)s->source_rows));
    json_object_set_new(root, "target",
                        json_pack("{s:s, s:s, s:I}", "name", s->target_name, "table", ttable,
                                  "rows", (json_int_t)s->target_rows));
    for (size_t i = 0; i < r->n; i++) {
        const div_rec *d = &r->v[i];
        if (d->kind == CO_SCHEMA) {
            json_array_append_new(schema, json_pack("{s:s, s:s, s:o, s:o}", "column", d->column,
                                                    "problem", d->detail, "source_type",
                                                    jstr(d->stype), "target_type", jstr(d->ttype)));
            continue;
        }
        json_t *key = json_object();
        for (size_t k = 0; k < d->nkey; k++)
            json_object_set_new(key, r->key_cols[k], json_string(d->key_vals[k]));
        json_t *o = json_pack("{s:s, s:o}", "kind", kind_name(d->kind), "key", key);
        if (d->kind == CO_CHANGED) {
            json_t *cols = json_array();
            for (size_t k = 0; k < d->ncols; k++)
                json_array_append_new(
                    cols, json_pack("{s:s, s:o, s:o}", "column", d->cols[k].column, "source",
                                    jstr(d->cols[k].source), "target", jstr(d->cols[k].target)));
            json_object_set_new(o, "columns", cols);
        }
        json_array_append_new(divs, o);
    }
    json_object_set_new(root, "schema", schema);
    json_object_set_new(root, "divergences", divs);
    json_object_set_new(root, "summary",
                        json_pack("{s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:f}", "equal", r->n == 0,
                                  "changed", (json_int_t)s->changed, "missing_in_target",
                                  (json_int_t)s->missing, "extra_in_target", (json_int_t)s->extra,
                                  "schema", (json_int_t)s->schema, "ranges", (json_int_t)s->ranges,
                                  "workers", (json_int_t)s->workers, "elapsed_seconds",
                                  s->elapsed));
    char *txt = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (txt)
        puts(txt);
    free(txt);
    json_decref(root);
}

/* ---- the in-process cluster ------------------------------------------------ */

typedef struct wthread {
    pthread_t t;
    wk *w;
    sl_err err;
    int rc;
} wthread;

static void *worker_main(void *arg)
{
    wthread *wt = arg;
    wt->rc = wk_run(wt->w, &wt->err);
    return NULL;
}

/* Splits "a,b,c" into a NULL-free array of n strings (pointing into a copy). */
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

static int fail2(const char *fmt, const char *arg)
{
    fprintf(stderr, "sluice: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    return 2;
}

static int cmd_diff(int argc, char **argv)
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
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    co_diff_opts o = {.source_db = "source", .target_db = "target"};
    const char *format = "text", *keys = NULL, *cols = NULL, *excl = NULL;
    long workers = 2;
    int allow_empty = 0, progress = isatty(2);
    int ch;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end;
        switch (ch) {
        case 't':
            o.table = optarg;
            break;
        case 'T':
            o.target_table = optarg;
            break;
        case 'k':
            keys = optarg;
            break;
        case 'c':
            cols = optarg;
            break;
        case 'x':
            excl = optarg;
            break;
        case 'w':
            o.where = optarg;
            break;
        case 'f':
            format = optarg;
            break;
        case 's':
            o.strict = 1;
            break;
        case 'e':
            allow_empty = 1;
            break;
        case 'P':
            progress = 0;
            break;
        case 'n':
            workers = strtol(optarg, &end, 10);
            if (*end || workers < 1 || workers > 64)
                return fail2("--workers must be a number from 1 to 64, not \"%s\"", optarg);
            break;
        case 'r': {
            long r = strtol(optarg, &end, 10);
            if (*end || r < 1 || r > 1000000)
                return fail2("--ranges must be a number from 1 to 1000000, not \"%s\"", optarg);
            o.ranges = (size_t)r;
            break;
        }
        case 'h':
            fputs(usage_diff, stdout);
            return 0;
        default:
            /* up to any '=': the value may be a DSN with a password */
            fprintf(stderr,
                    "sluice: unknown or incomplete option \"%.*s\" (try: sluice diff --help)\n",
                    (int)strcspn(argv[optind - 1], "="), argv[optind - 1]);
            return 2;
        }
    }
    if (argc - optind != 2) {
        fprintf(stderr, "sluice: diff needs exactly two databases, SOURCE and TARGET (try: sluice "
                        "diff --help)\n");
        return 2;
    }
    if (!o.table)
        return fail2("%s", "diff needs --table TABLE");
    if (strcmp(format, "text") && strcmp(format, "json"))
        return fail2("--format must be text or json, not \"%s\"", format);
    char *kstore = NULL, *cstore = NULL, *xstore = NULL;
    char **kl = NULL, **cl = NULL, **xl = NULL;
    if (keys)
        o.key = (const char *const *)(kl = split_list(keys, &o.nkey, &kstore));
    if (cols)
        o.columns = (const char *const *)(cl = split_list(cols, &o.ncolumns, &cstore));
    if (excl)
        o.exclude = (const char *const *)(xl = split_list(excl, &o.nexclude, &xstore));

    int status = 2;
    sl_err err = {{0}};
    report rep = {.progress = progress};
    co_summary sum;
    wthread *wt = calloc((size_t)workers, sizeof *wt);
    void *zctx = zmq_ctx_new();
    co *c = NULL;
    long started = 0;
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "inproc://sluice-diff-%ld", (long)getpid());
    wk_db dbs[2] = {{"source", argv[optind]}, {"target", argv[optind + 1]}};
    if (!wt || !zctx || !(c = co_new(zctx, endpoint, &err)))
        goto out;
    for (; started < workers; started++) {
        wk_config cfg = {zctx, endpoint, dbs, 2, 0};
        if (!(wt[started].w = wk_new(&cfg, &err)))
            goto out;
        if (pthread_create(&wt[started].t, NULL, worker_main, &wt[started])) {
            wk_free(wt[started].w);
            sl_err_set(&err, "cannot start worker thread");
            goto out;
        }
    }
    if (co_wait_workers(c, (size_t)workers, 10000, &err))
        goto out;
    co_callbacks cb = {.event = on_event, .progress = on_progress, .ctx = &rep};
    int r = co_diff(c, &o, &cb, &sum, &err);
    if (rep.progress)
        fprintf(stderr, "\r\033[K");
    if (r != 0)
        goto out;
    if (rep.oom) {
        sl_err_set(&err, "out of memory while collecting the report");
        goto out;
    }
    if (sum.source_rows == 0 && sum.target_rows == 0 && !allow_empty) {
        sl_err_set(&err, "both tables are empty (0 rows compared), so nothing was verified; "
                         "check --table and --where, or pass --allow-empty");
        goto out;
    }
    if (rep.n)
        qsort(rep.v, rep.n, sizeof *rep.v, div_cmp);
    const char *tt = o.target_table ? o.target_table : o.table;
    if (strcmp(format, "json") == 0)
        print_json(&rep, &sum, o.table, tt);
    else
        print_text(&rep, &sum, o.table, tt);
    status = rep.n ? 1 : 0;
out:
    if (c)
        co_shutdown_workers(c);
    for (long i = 0; i < started; i++) {
        pthread_join(wt[i].t, NULL);
        wk_free(wt[i].w);
    }
    co_free(c);
    if (zctx)
        zmq_ctx_term(zctx);
    free(wt);
    report_free(&rep);
    free(kl);
    free(cl);
    free(xl);
    free(kstore);
    free(cstore);
    free(xstore);
    if (status == 2)
        fprintf(stderr, "sluice: %s\n", err.msg[0] ? err.msg : "failed");
    fflush(stdout);
    return status;
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "help") || !strcmp(argv[1], "--help") ||
        !strcmp(argv[1], "-h")) {
        printf("sluice %s — validate data migrations\n\n"
               "commands:\n  diff SOURCE TARGET --table T   compare a table row by row\n"
               "  version                         print the version\n\n%s",
               SLUICE_VERSION, usage_diff);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version")) {
        printf("sluice %s (encoding v%d, protocol v%d)\n", SLUICE_VERSION, ENC_VERSION,
               MSG_VERSION);
        return 0;
    }
    if (!strcmp(argv[1], "diff"))
        return cmd_diff(argc - 1, argv + 1);
    /* echo the word only if it cannot be a DSN carrying a password */
    int plain = strlen(argv[1]) < 32;
    for (const char *p = argv[1]; *p; p++)
        plain = plain && ((*p >= 'a' && *p <= 'z') || *p == '-');
    if (plain)
        fprintf(stderr, "sluice: unknown command \"%s\"; try: sluice help\n", argv[1]);
    else
        fprintf(stderr, "sluice: unknown command; the first word must be a command such as "
                        "diff (try: sluice help)\n");
    return 2;
}
