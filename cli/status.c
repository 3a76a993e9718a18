/* sluice status JOB: a job's state and summary. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cmd_status(int argc, char **argv)
{
    client_args a;
    sl_client *c = NULL;
    int st = client_command(argc, argv, "status",
                            "usage: sluice status JOB [--format text|json]\n"
                            "  a job's state, progress and divergence counts\n",
                            CLIENT_JOB_ARG, &a, &c);
    if (st >= 0)
        return st;
    sl_err err;
    sl_job_status s;
    if (sl_client_status(c, a.job, 0, &s, &err)) {
        sl_client_free(c);
        return cli_fail("%s", err.msg);
    }
    if (!strcmp(a.format, "json")) {
        json_t *o = json_pack(
            "{s:I, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f}", "job",
            (json_int_t)a.job, "state", s.state_name, "table", s.table, "source", s.source,
            "target", s.target, "source_rows", (json_int_t)s.source_rows, "target_rows",
            (json_int_t)s.target_rows, "ranges", (json_int_t)s.ranges, "ranges_done",
            (json_int_t)s.ranges_done, "changed", (json_int_t)s.changed, "missing_in_target",
            (json_int_t)s.missing, "extra_in_target", (json_int_t)s.extra, "schema",
            (json_int_t)s.schema, "elapsed_seconds", (double)s.elapsed_ms / 1000);
        if (s.error[0])
            json_object_set_new(o, "error", json_string(s.error));
        if (s.error_code)
            json_object_set_new(o, "error_code", json_string(sl_code_name(s.error_code)));
        if (s.priority != SL_PRIO_NORMAL)
            json_object_set_new(o, "priority", json_string(sl_priority_name(s.priority)));
        char *txt = json_dumps(o, JSON_PRESERVE_ORDER);
        puts(txt ? txt : "{}");
        free(txt);
        json_decref(o);
    } else {
        printf("job %lld %s: table %s, %llu/%llu ranges, %llu source rows, %llu target rows\n",
               (long long)a.job, s.state_name, s.table, (unsigned long long)s.ranges_done,
               (unsigned long long)s.ranges, (unsigned long long)s.source_rows,
               (unsigned long long)s.target_rows);
        printf("divergences: %llu changed, %llu missing-in-target, %llu extra-in-target, %llu "
               "schema\n",
               (unsigned long long)s.changed, (unsigned long long)s.missing,
               (unsigned long long)s.extra, (unsigned long long)s.schema);
        if (s.priority != SL_PRIO_NORMAL)
            printf("priority: %s\n", sl_priority_name(s.priority));
        if (s.error[0])
            printf("error (%s): %s\n", sl_code_name(s.error_code), s.error);
    }
    sl_job_status_free(&s);
    sl_client_free(c);
    return 0;
}
