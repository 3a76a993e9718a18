/* sluice submit (a diff job to a coordinator, --wait for its report) and
 * sluice report (the report of a job submitted without --wait). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "report.h"

/* Adds a stored divergence to the report, as co_diff would have. */
static int event_into_report(report *r, const sl_event *e)
{
    co_event ev = {.run = -1}; /* stored divergences come back in no known order */
    int rc = -1;
    const char **names = calloc(e->nkey + 1, sizeof *names);
    const char **vals = calloc(e->nkey + 1, sizeof *vals);
    co_coldiff *cols = calloc(e->ncols + 1, sizeof *cols);
    if (!names || !vals || !cols)
        goto out;
    ev.kind = e->kind == SL_DIV_MISSING  ? CO_MISSING
              : e->kind == SL_DIV_EXTRA  ? CO_EXTRA
              : e->kind == SL_DIV_SCHEMA ? CO_SCHEMA
                                         : CO_CHANGED;
    ev.status = e->status == SL_DIV_CONFIRMED   ? CO_CONFIRMED
                : e->status == SL_DIV_TRANSIENT ? CO_TRANSIENT
                                                : 0;
    ev.read_at_ms = e->read_at_ms;
    ev.column = e->column;
    ev.detail = e->problem;
    ev.source_type = e->source_type;
    ev.target_type = e->target_type;
    ev.key = e->k;
    ev.klen = e->klen;
    for (size_t i = 0; i < e->nkey; i++) {
        names[i] = e->key[i].column;
        vals[i] = e->key[i].value ? e->key[i].value : "";
    }
    ev.key_cols = names;
    ev.key_vals = vals;
    ev.nkey = e->nkey;
    for (size_t i = 0; i < e->ncols; i++) {
        const sl_column_diff *d = &e->cols[i];
        cols[i] = (co_coldiff){d->column,      d->source,     d->target,    d->source_hash,
                               d->target_hash, d->source_len, d->target_len};
    }
    ev.cols = cols;
    ev.ncols = e->ncols;
    rc = report_add(r, &ev);
out:
    free(names);
    free(vals);
    free(cols);
    return rc;
}

static void summary_of(const sl_job_status *st, co_summary *s)
{
    memset(s, 0, sizeof *s);
    snprintf(s->source_name, sizeof s->source_name, "%s", st->source);
    snprintf(s->target_name, sizeof s->target_name, "%s", st->target);
    s->source_rows = st->source_rows;
    s->target_rows = st->target_rows;
    s->ranges = (size_t)st->ranges;
    s->workers = (size_t)st->workers;
    s->missing = st->missing;
    s->extra = st->extra;
    s->changed = st->changed;
    s->schema = st->schema;
    s->transient = st->transient;
    s->elapsed = (double)st->elapsed_ms / 1000;
    /* the job stops as its max_divergences-th is confirmed: reaching it is stopping */
    s->limit_reached =
        st->max_divergences && st->changed + st->missing + st->extra >= st->max_divergences;
}

/* Prints a finished job's report like sluice diff and returns the same
 * exit status. wait: follow the job to its end (submit --wait); else a
 * job not finished yet is an error (sluice report). The tables named in
 * the report are a->o's, or the job's own when a->o.table is NULL. */
static int wait_job(sl_client *c, const diff_args *a, int64_t job, int wait)
{
    sl_err err = {0};
    report rep = {.progress = 0};
    int status = 2;
    sl_job_status st;
    memset(&st, 0, sizeof st);
    for (;;) {
        if (sl_client_status(c, job, 0, &st, &err))
            goto out;
        if (sl_job_state_is_final(st.state))
            break;
        if (!wait) {
            sl_err_set(&err,
                       "job %lld is %s (%llu/%llu ranges), so it has no report yet; try again "
                       "when it is done (sluice status %lld)",
                       (long long)job, st.state_name, (unsigned long long)st.ranges_done,
                       (unsigned long long)st.ranges, (long long)job);
            goto out;
        }
        if (a->progress)
            fprintf(stderr, "\rsluice: job %lld %s, %llu/%llu ranges%s%s\033[K", (long long)job,
                    st.state_name, (unsigned long long)st.ranges_done,
                    (unsigned long long)st.ranges, st.paused[0] ? ", paused: " : "", st.paused);
        if (!st.paused[0] != !rep.paused[0]) /* a replica-lag pause starts or ends: a line */
            fprintf(stderr, "%ssluice: job %lld %s%s\n", a->progress ? "\r\033[K" : "",
                    (long long)job, st.paused[0] ? "paused: " : "resumed", st.paused);
        snprintf(rep.paused, sizeof rep.paused, "%s", st.paused);
        struct timespec ts = {0, 200 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (a->progress)
        fprintf(stderr, "\r\033[K");
    if (rep.paused[0]) /* it ended between two looks: it had resumed */
        fprintf(stderr, "sluice: job %lld resumed\n", (long long)job);
    if (st.state != SL_JOB_DONE) {
        sl_err_set(&err, "job %lld %s%s%s", (long long)job, st.state_name, st.error[0] ? ": " : "",
                   st.error);
        goto out;
    }
    /* --summary-only: the counts of the status, no event fetched or kept */
    rep.summary_only = a->summary_only;
    if (sl_client_status(c, job, !a->summary_only, &st, &err))
        goto out;
    if (a->summary_only)
        rep.ndiffer = st.changed + st.missing + st.extra + st.schema;
    rep.keys_only = a->o.keys_only || st.keys_only; /* the rows are formatted as they come */
    rep.json = strcmp(a->format, "json") == 0;
    for (size_t i = 0; i < st.nevents; i++)
        if (st.events[i].type == SL_EV_DIVERGENCE && event_into_report(&rep, &st.events[i])) {
            sl_err_set(&err, "out of memory while collecting the report of job %lld",
                       (long long)job);
            goto out;
        }
    co_summary sum;
    summary_of(&st, &sum);
    diff_args named = *a;
    named.o.keys_only |= st.keys_only;
    if (!named.o.max_divergences)
        named.o.max_divergences = st.max_divergences;
    if (!named.o.table) {
        named.o.table = st.table;
        named.o.target_table = st.target_table[0] ? st.target_table : NULL;
    }
    if ((status = report_finish(&rep, &sum, &named, &err)) < 0)
        status = 2;
out:
    sl_job_status_free(&st);
    report_free(&rep);
    if (status == 2)
        cli_fail("%s", err.msg);
    return status;
}

int cmd_submit(int argc, char **argv)
{
    diff_args a;
    sl_client *c = NULL;
    int st = diff_args_client(argc, argv, DIFF_ARGS_SUBMIT, NULL, &a, &c);
    if (st < 0) {
        sl_err err = {0};
        sl_job_spec spec;
        int64_t job;
        diff_args_spec(&a, &spec);
        if (sl_client_submit(c, &spec, &job, &err)) {
            st = cli_fail("%s", err.msg);
        } else if (a.wait) {
            fprintf(stderr, "sluice: job %lld submitted\n", (long long)job);
            st = wait_job(c, &a, job, 1);
        } else {
            printf("%lld\n", (long long)job);
            st = 0;
        }
    }
    sl_client_free(c);
    diff_args_free(&a);
    return st;
}

/* sluice report JOB: the report of a job submitted without --wait. */
int cmd_report(int argc, char **argv)
{
    client_args a;
    sl_client *c = NULL;
    int st = client_command(argc, argv, "report",
                            "usage: sluice report JOB [--format text|json] [--allow-empty]\n"
                            "  prints a finished job's report as submit --wait does;\n"
                            "  exit 0 equal, 1 different, 2 trouble\n",
                            CLIENT_JOB_ARG, &a, &c);
    if (st >= 0)
        return st;
    diff_args d;
    memset(&d, 0, sizeof d);
    d.coordinator = a.coordinator;
    d.format = a.format;
    d.allow_empty = a.allow_empty;
    st = wait_job(c, &d, a.job, 0);
    sl_client_free(c);
    fflush(stdout);
    return st;
}
