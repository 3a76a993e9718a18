/* sluice diff: the coordinator and N worker threads in one process over
 * inproc:// — the same code path as the cluster, run small. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "cli.h"
#include "fix.h"
#include "report.h"

int cli_local_diff(const diff_args *a, const co_callbacks *cb, co_summary *sum, sl_err *err)
{
    int rc = -1;
    wk_threads wt = {0};
    void *zctx = zmq_ctx_new();
    co *c = NULL;
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "inproc://sluice-diff-%ld", (long)getpid());
    /* the user holds both DSNs: their --where runs, and its errors show whole */
    wk_db dbs[2 + CLI_MAX_REPLICAS] = {{"source", a->source, 1}, {"target", a->target, 1}};
    for (size_t i = 0; i < a->nreplicas; i++) /* --replica: "replica1"... the job watches */
        dbs[2 + i] = (wk_db){a->replicas[i], a->replica_dsns[i], 1};
    wk_config cfg = {.zctx = zctx,
                     .endpoint = endpoint,
                     .dbs = dbs,
                     .ndbs = 2 + a->nreplicas,
                     .read_timeout_ms = a->read_timeout_ms,
                     .relay_where_errors = 1};
    if (zctx && (c = co_new(zctx, endpoint, NULL, err)) &&
        !wk_threads_start(&wt, a->workers, &cfg, err) &&
        !co_wait_workers(c, (size_t)a->workers, 10000, err))
        rc = co_diff(c, &a->o, cb, sum, err);
    if (c)
        co_shutdown_workers(c);
    wk_threads_join(&wt);
    co_free(c);
    if (zctx)
        zmq_ctx_term(zctx);
    return rc;
}

int cmd_diff(int argc, char **argv)
{
    diff_args a;
    fix_args fa;
    fix *fx = NULL;
    int st = fix_take_args(&argc, argv, 0, &fa);
    if (st < 0)
        st = diff_args_parse(argc, argv, 0, &a);
    else
        memset(&a, 0, sizeof a);
    if (st >= 0) {
        diff_args_free(&a);
        return st;
    }
    a.o.source_db = "source";
    a.o.target_db = "target";
    int status = 2;
    sl_err err = {0};
    report rep = {.progress = a.progress,
                  .summary_only = a.summary_only,
                  .keys_only = a.o.keys_only,
                  .json = strcmp(a.format, "json") == 0};
    co_summary sum;
    co_callbacks cb = {.event = report_add, .progress = report_progress, .ctx = &rep};
    /* --fix-sql: the divergences pass through the fix on their way */
    fix_tap tap = {NULL, report_add, report_progress, &rep};
    if (fa.sql_file) {
        if (!(fx = tap.f = fix_new(&err)))
            goto out;
        cb = (co_callbacks){.event = fix_tap_event, .progress = fix_tap_progress, .ctx = &tap};
    }
    int r = cli_local_diff(&a, &cb, &sum, &err);
    if (fx && fix_error(fx, &err))
        r = -1;
    if (rep.progress)
        fprintf(stderr, "\r\033[K");
    if (r != 0)
        goto out;
    if ((status = report_finish(&rep, &sum, &a, &err)) < 0)
        status = 2;
    if (fx && status != 2) {
        fix_result fr;
        if (fix_build(fx, &a, 0, 0, &err) || fix_write_file(fx, fa.sql_file, &err)) {
            status = 2;
            goto out;
        }
        fix_result_get(fx, &fr);
        fprintf(stderr,
                "sluice: fix SQL written to %s: %llu to insert, %llu to update, %llu to "
                "delete\n",
                fa.sql_file, (unsigned long long)fr.inserts, (unsigned long long)fr.updates,
                (unsigned long long)fr.deletes);
    }
out:
    report_free(&rep);
    fix_free(fx);
    diff_args_free(&a);
    if (status == 2)
        cli_fail("%s", err.msg[0] ? err.msg : "failed");
    fflush(stdout);
    return status;
}
