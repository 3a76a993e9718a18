/* sluice watch: the coordinator's event stream, one line per event. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

/* Prints one event: a JSON line, or one readable line. */
static void print_event(const sl_event *e, int json)
{
    static const char *const types[] = {"", "divergence", "progress", "job"};
    json_t *o = json_pack("{s:s, s:I, s:I}", "event", types[e->type], "job", (json_int_t)e->job,
                          "at_ms", (json_int_t)e->at_ms);
    sl_buf line = {0};
    if (e->type == SL_EV_DIVERGENCE) {
        const char *status = e->status == SL_DIV_CONFIRMED   ? "confirmed"
                             : e->status == SL_DIV_TRANSIENT ? "transient"
                                                             : NULL;
        json_object_set_new(o, "kind", json_string(e->kind_name));
        if (status)
            json_object_set_new(o, "status", json_string(status));
        json_object_set_new(o, "read_at_ms", json_integer(e->read_at_ms));
        sl_buf_printf(&line, "job %lld %s%s%s", (long long)e->job, status ? status : "",
                      status ? " " : "", e->kind_name);
        if (e->kind == SL_DIV_SCHEMA) {
            json_object_set_new(o, "column", json_string(e->column));
            json_object_set_new(o, "problem", json_string(e->problem));
            sl_buf_printf(&line, " column \"%s\" %s", e->column, e->problem);
        } else {
            json_t *key = json_object();
            for (size_t i = 0; i < e->nkey; i++) {
                const char *v = e->key[i].value ? e->key[i].value : "";
                json_object_set_new(key, e->key[i].column, json_string(v));
                sl_buf_printf(&line, " %s=%s", e->key[i].column, v);
            }
            json_object_set_new(o, "key", key);
        }
        if (e->ncols) {
            json_t *cols = json_array();
            for (size_t i = 0; i < e->ncols; i++) {
                json_array_append_new(cols, json_string(e->cols[i].column));
                sl_buf_printf(&line, "%s%s", i ? "," : " columns ", e->cols[i].column);
            }
            json_object_set_new(o, "columns", cols);
        }
    } else if (e->type == SL_EV_PROGRESS) {
        json_object_set_new(o, "ranges_done", json_integer((json_int_t)e->ranges_done));
        json_object_set_new(o, "ranges", json_integer((json_int_t)e->ranges));
        sl_buf_printf(&line, "job %lld progress %llu/%llu ranges", (long long)e->job,
                      (unsigned long long)e->ranges_done, (unsigned long long)e->ranges);
    } else {
        json_object_set_new(o, "state", json_string(e->state_name));
        if (e->error)
            json_object_set_new(o, "error", json_string(e->error));
        sl_buf_printf(&line, "job %lld %s%s%s", (long long)e->job, e->state_name,
                      e->error ? ": " : "", e->error ? e->error : "");
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
    sl_client *c = NULL;
    int st = client_args_parse(
        argc, argv, "watch",
        "usage: sluice watch [--job JOB] [--count N] [--timeout SECONDS]\n"
        "                    [--events EP] [--format text|json]\n"
        "  prints the coordinator's events (divergences, progress, job\n"
        "  states) as they come; --count: stop after N, --timeout: after\n"
        "  SECONDS; --events: the coordinator's events endpoint (" CLI_DEFAULT_EVENTS_EP ")\n",
        CLIENT_NO_ARG, &a);
    if (st < 0)
        st = cli_client_open(a.coordinator, a.events, &a.cc, a.request_timeout_ms, &c);
    if (st >= 0)
        return st;
    sl_err err;
    if (sl_client_watch(c, a.job, &err)) {
        sl_client_free(c);
        return cli_fail("%s", err.msg);
    }
    cli_catch_signals();
    volatile sig_atomic_t *stop = cli_stop_flag();
    long seen = 0;
    int64_t t0 = sl_now_ms();
    while (!*stop && (!a.count || seen < a.count) &&
           !(a.timeout_ms && sl_now_ms() - t0 > a.timeout_ms)) {
        sl_event ev;
        int r = sl_client_next_event(c, 200, &ev, &err);
        if (r > 0) {
            print_event(&ev, !strcmp(a.format, "json"));
            sl_event_free(&ev);
            seen++;
        } else if (r < 0) { /* one bad event is skipped, not the end of the stream */
            fprintf(stderr, "sluice: skipped an event: %s\n", err.msg);
        }
    }
    sl_client_free(c);
    return a.count && seen < a.count
               ? cli_fail("watch ended after %ld of %ld events", seen, a.count)
               : 0;
}
