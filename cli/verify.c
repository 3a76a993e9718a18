/* sluice verify-changes: change-driven verification. One job on the
 * coordinator (kind "changes"): workers follow both databases' changes,
 * and each changed key is checked after the settle time. This command
 * submits it, prints progress on stderr and each confirmed divergence on
 * stdout as the event stream brings it, and cancels the job on Ctrl-C
 * (the job's cleanup drops the replication slots). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* The event endpoint next to a clients endpoint tcp://HOST:PORT: PORT + 1,
 * as the coordinator's defaults are laid out. */
static int events_next_to(const char *clients, char *out, size_t cap)
{
    const char *colon = strrchr(clients, ':');
    char *end;
    long port = colon ? strtol(colon + 1, &end, 10) : 0;
    if (!colon || *end || port < 1 || port >= 65535 || strncmp(clients, "tcp://", 6))
        return -1;
    snprintf(out, cap, "%.*s:%ld", (int)(colon - clients), clients, port + 1);
    return 0;
}

static void print_divergence(const sl_event *e)
{
    printf("%s", e->kind_name);
    for (size_t i = 0; i < e->nkey; i++)
        printf(" %s=%s", e->key[i].column, e->key[i].value ? e->key[i].value : "NULL");
    for (size_t i = 0; i < e->ncols; i++) {
        const sl_column_diff *d = &e->cols[i];
        printf("%s%s: %s -> %s", i ? ", " : "  ", d->column, d->source ? d->source : "NULL",
               d->target ? d->target : "NULL");
    }
    putchar('\n');
    fflush(stdout);
}

int cmd_verify_changes(int argc, char **argv)
{
    diff_args a;
    sl_client *c = NULL;
    char events[300];
    int st = diff_args_parse(argc, argv, DIFF_ARGS_CHANGES, &a);
    if (st < 0 && !a.events) {
        if (!strcmp(a.coordinator, CLI_DEFAULT_CLIENTS_EP))
            snprintf(events, sizeof events, "%s", CLI_DEFAULT_EVENTS_EP);
        else if (events_next_to(a.coordinator, events, sizeof events))
            st = cli_fail("cannot tell the event endpoint from --coordinator %s: give --events",
                          a.coordinator);
        a.events = events;
    }
    cli_curve cc;
    if (st < 0)
        st = cli_curve_load(&cc, a.curve_server, a.curve_key);
    if (st < 0)
        st = cli_client_open(a.coordinator, a.events, &cc, a.request_timeout_ms, &c);
    if (st >= 0)
        goto out;
    cli_catch_signals();
    volatile sig_atomic_t *stop = cli_stop_flag();
    sl_err err = {0};
    sl_job_spec spec;
    diff_args_spec(&a, &spec);
    spec.changes = 1;
    int64_t job;
    /* subscribed before the submit: no divergence can go by unseen */
    if (sl_client_watch(c, 0, &err) || sl_client_submit(c, &spec, &job, &err)) {
        st = cli_fail("%s", err.msg);
        goto out;
    }
    fprintf(stderr, "sluice: verify-changes job %lld submitted%s\n", (long long)job,
            a.duration_ms ? "" : "; Ctrl-C ends it");
    int cancelled = 0;
    int64_t last_status = 0, last_line = 0;
    uint64_t checked = 0, keys = 0;
    /* counted here from the events: a cancelled job's status has no counts */
    uint64_t found[SL_DIV_CHANGED + 1] = {0}, transient = 0;
    int64_t t0 = sl_wall_ms();
    sl_job_status js;
    memset(&js, 0, sizeof js);
    for (;;) {
        if (*stop && !cancelled) {
            sl_err ce = {0};
            if (sl_client_cancel(c, job, &ce) == 0)
                fprintf(stderr, "\nsluice: cancelling job %lld (its slots are dropped)\n",
                        (long long)job);
            cancelled = 1;
        }
        sl_event ev;
        memset(&ev, 0, sizeof ev);
        int r = sl_client_next_event(c, 200, &ev, &err);
        if (r > 0 && ev.job == job) {
            if (ev.type == SL_EV_DIVERGENCE && ev.status == SL_DIV_CONFIRMED) {
                if (a.progress)
                    fputs("\r\033[K", stderr);
                print_divergence(&ev);
                if (ev.kind >= SL_DIV_MISSING && ev.kind <= SL_DIV_CHANGED)
                    found[ev.kind]++;
            } else if (ev.type == SL_EV_DIVERGENCE && ev.status == SL_DIV_TRANSIENT) {
                transient++;
            } else if (ev.type == SL_EV_PROGRESS) {
                checked = ev.checked;
                keys = ev.keys;
                /* on a terminal a line kept up to date; else one every 5 s */
                if (a.progress || sl_wall_ms() - last_line >= 5000) {
                    fprintf(stderr,
                            "%ssluice: %llu changed keys, %llu checked equal, backlog %llu, slot "
                            "lag %llu/%llu bytes%s",
                            a.progress ? "\r" : "", (unsigned long long)ev.keys,
                            (unsigned long long)ev.checked, (unsigned long long)ev.backlog,
                            (unsigned long long)ev.lag_source, (unsigned long long)ev.lag_target,
                            a.progress ? "   " : "\n");
                    last_line = sl_wall_ms();
                }
            }
        }
        if (r > 0)
            sl_event_free(&ev);
        /* the job's end is read from its status: an event can be missed */
        if (sl_wall_ms() - last_status < 1000)
            continue;
        last_status = sl_wall_ms();
        sl_job_status_free(&js);
        memset(&js, 0, sizeof js);
        if (sl_client_status(c, job, 0, &js, &err)) {
            st = cli_fail("%s", err.msg);
            goto out_status;
        }
        if (sl_job_state_is_final(js.state))
            break;
    }
    if (a.progress)
        fputs("\r\033[K", stderr);
    uint64_t div = found[SL_DIV_MISSING] + found[SL_DIV_EXTRA] + found[SL_DIV_CHANGED];
    if (js.state == SL_JOB_FAILED) {
        st = cli_fail("verify-changes job %lld failed: %s", (long long)job, js.error);
    } else {
        fprintf(stderr,
                "sluice: verify-changes job %lld %s after %.1f s: %llu changed keys, %llu "
                "checked equal, %llu divergent (%llu missing, %llu extra, %llu changed), %llu "
                "transient\n",
                (long long)job, js.state_name, (double)(sl_wall_ms() - t0) / 1000.0,
                (unsigned long long)keys, (unsigned long long)checked, (unsigned long long)div,
                (unsigned long long)found[SL_DIV_MISSING], (unsigned long long)found[SL_DIV_EXTRA],
                (unsigned long long)found[SL_DIV_CHANGED], (unsigned long long)transient);
        st = div ? 1 : 0;
    }
out_status:
    sl_job_status_free(&js);
out:
    sl_client_free(c);
    diff_args_free(&a);
    return st;
}
