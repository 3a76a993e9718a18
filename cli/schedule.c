/* sluice schedule add|rm|ls: the scheduled audits of a coordinator. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *usage =
    "usage: sluice schedule add NAME --every INTERVAL SOURCE TARGET --table TABLE [options]\n"
    "       sluice schedule rm NAME\n"
    "       sluice schedule ls [--format text|json]\n"
    "  the audits a coordinator queues on their own: add (or replace) one, remove one,\n"
    "  list them (sluice schedule add --help for the options)\n";

/* 900 -> "15m": the largest unit that divides the interval. */
static void interval_text(int64_t s, char *out, size_t cap)
{
    if (s > 0 && s % 86400 == 0)
        snprintf(out, cap, "%lldd", (long long)(s / 86400));
    else if (s > 0 && s % 3600 == 0)
        snprintf(out, cap, "%lldh", (long long)(s / 3600));
    else if (s > 0 && s % 60 == 0)
        snprintf(out, cap, "%lldm", (long long)(s / 60));
    else
        snprintf(out, cap, "%llds", (long long)s);
}

static int schedule_add(int argc, char **argv)
{
    diff_args a;
    sl_client *c = NULL;
    int st = diff_args_client(argc, argv, DIFF_ARGS_SCHEDULE, NULL, &a, &c);
    if (st < 0) {
        sl_err err = {0};
        sl_job_spec spec;
        char every[32];
        diff_args_spec(&a, &spec);
        interval_text(a.every_s, every, sizeof every);
        if (sl_client_schedule_add(c, a.name, a.every_s, &spec, &err)) {
            st = cli_fail("%s", err.msg);
        } else {
            printf("scheduled audit %s: table %s every %s\n", a.name, a.o.table, every);
            st = 0;
        }
    }
    sl_client_free(c);
    diff_args_free(&a);
    return st;
}

static int schedule_rm(int argc, char **argv)
{
    client_args a;
    sl_client *c = NULL;
    int st = client_command(argc, argv, "schedule rm",
                            "usage: sluice schedule rm NAME\n"
                            "  removes the scheduled audit NAME; its past runs stay\n",
                            CLIENT_NAME_ARG, &a, &c);
    if (st >= 0)
        return st;
    sl_err err;
    int removed = 0;
    if (sl_client_schedule_del(c, a.name, &removed, &err))
        st = cli_fail("%s", err.msg);
    else if (!removed)
        st =
            cli_fail("no scheduled audit is called \"%s\" (sluice schedule ls lists them)", a.name);
    else
        st = (printf("scheduled audit %s removed\n", a.name), 0);
    sl_client_free(c);
    return st;
}

static int schedule_ls(int argc, char **argv)
{
    client_args a;
    sl_client *c = NULL;
    int st = client_command(argc, argv, "schedule ls",
                            "usage: sluice schedule ls [--format text|json]\n"
                            "  the scheduled audits: name, interval, table, last job\n",
                            CLIENT_NO_ARG, &a, &c);
    if (st >= 0)
        return st;
    sl_err err;
    sl_schedule_info *v;
    size_t n;
    if (sl_client_schedules(c, &v, &n, &err)) {
        sl_client_free(c);
        return cli_fail("%s", err.msg);
    }
    if (!strcmp(a.format, "json")) {
        json_t *list = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(
                list,
                json_pack("{s:s, s:I, s:s, s:o}", "name", v[i].name, "interval_s",
                          (json_int_t)v[i].interval_s, "table", v[i].table ? v[i].table : "",
                          "last_job", v[i].last_job ? json_integer(v[i].last_job) : json_null()));
        char *txt = json_dumps(list, JSON_PRESERVE_ORDER);
        puts(txt ? txt : "[]");
        free(txt);
        json_decref(list);
    } else {
        for (size_t i = 0; i < n; i++) {
            char every[32];
            interval_text(v[i].interval_s, every, sizeof every);
            printf("%s  every %s  table %s  ", v[i].name, every, v[i].table ? v[i].table : "");
            if (v[i].last_job)
                printf("last job %lld\n", (long long)v[i].last_job);
            else
                printf("not run yet\n");
        }
        printf("%zu scheduled audits\n", n);
    }
    sl_schedule_info_free(v, n);
    sl_client_free(c);
    return 0;
}

int cmd_schedule(int argc, char **argv)
{
    if (argc < 2)
        return cli_fail("schedule needs add, rm or ls (try: sluice schedule --help)");
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(usage, stdout);
        return 0;
    }
    /* argv + 1: the subcommand's word stands where getopt skips argv[0] */
    if (!strcmp(argv[1], "add"))
        return schedule_add(argc - 1, argv + 1);
    if (!strcmp(argv[1], "rm"))
        return schedule_rm(argc - 1, argv + 1);
    if (!strcmp(argv[1], "ls"))
        return schedule_ls(argc - 1, argv + 1);
    return cli_fail("schedule takes add, rm or ls, not \"%.32s\" (try: sluice schedule --help)",
                    argv[1]);
}
