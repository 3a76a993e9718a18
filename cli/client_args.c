/* The options the client commands share (status, report, watch, workers,
 * cancel, schedule), and their sl_client. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int client_args_parse(int argc, char **argv, const char *cmd, const char *usage, int arg,
                      client_args *a)
{
    static const struct option opts[] = {{"coordinator", required_argument, 0, 'c'},
                                         {"events", required_argument, 0, 'e'},
                                         {"format", required_argument, 0, 'f'},
                                         {"job", required_argument, 0, 'j'},
                                         {"count", required_argument, 0, 'n'},
                                         {"timeout", required_argument, 0, 't'},
                                         {"request-timeout", required_argument, 0, 'q'},
                                         {"curve-server-key", required_argument, 0, 'K'},
                                         {"curve-key", required_argument, 0, 'k'},
                                         {"allow-empty", no_argument, 0, 'E'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    memset(a, 0, sizeof *a);
    a->coordinator = CLI_DEFAULT_CLIENTS_EP;
    a->events = CLI_DEFAULT_EVENTS_EP;
    a->format = "text";
    const char *curve_server = NULL, *curve_key = NULL;
    int ch, st;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end;
        switch (ch) {
        case 'c':
            a->coordinator = optarg;
            break;
        case 'e':
            a->events = optarg;
            break;
        case 'f':
            a->format = optarg;
            break;
        case 'j':
            a->job = strtoll(optarg, &end, 10);
            if (*end || a->job <= 0)
                return cli_fail("--job must be a job id, not \"%s\"", optarg);
            break;
        case 'n':
            a->count = strtol(optarg, &end, 10);
            if (*end || a->count <= 0)
                return cli_fail("--count must be a positive number, not \"%s\"", optarg);
            break;
        case 't':
            if ((st = cli_parse_seconds(optarg, "--timeout", &a->timeout_ms)) >= 0)
                return st;
            break;
        case 'q':
            if ((st = cli_parse_seconds(optarg, "--request-timeout", &a->request_timeout_ms)) >= 0)
                return st;
            break;
        case 'K':
            curve_server = optarg;
            break;
        case 'k':
            curve_key = optarg;
            break;
        case 'E':
            a->allow_empty = 1;
            break;
        case 'h':
            fputs(usage, stdout);
            printf("  --coordinator EP     the coordinator's client endpoint (%s)\n"
                   "  --curve-server-key K the coordinator's CURVE public key (or key file)\n"
                   "  --curve-key FILE     this client's CURVE secret key file\n"
                   "  --request-timeout SECONDS  a coordinator silent this long is an error "
                   "(default 5)\n",
                   CLI_DEFAULT_CLIENTS_EP);
            return 0;
        default:
            return cli_fail("unknown or incomplete option \"%s\" (try: sluice %s --help)",
                            argv[optind - 1], cmd);
        }
    }
    if (strcmp(a->format, "text") && strcmp(a->format, "json"))
        return cli_fail("--format must be text or json, not \"%s\"", a->format);
    if (arg == CLIENT_JOB_ARG) {
        char *end;
        if (argc - optind != 1 || (a->job = strtoll(argv[optind], &end, 10)) <= 0 || *end)
            return cli_fail("%s needs one job id (sluice submit prints it)", cmd);
    } else if (arg == CLIENT_NAME_ARG) {
        if (argc - optind != 1 || !argv[optind][0])
            return cli_fail("%s needs one name (try: sluice %s --help)", cmd, cmd);
        a->name = argv[optind];
    } else if (optind != argc) {
        return cli_fail("%s takes no arguments, only options (try --help)", cmd);
    }
    return cli_curve_load(&a->cc, curve_server, curve_key);
}

int cli_client_open(const char *clients, const char *events, const cli_curve *cc, int timeout_ms,
                    sl_client **out)
{
    sl_err err;
    sl_client_opts o = {.clients_endpoint = clients,
                        .events_endpoint = events,
                        .curve_server_key = cc && cc->on ? cc->server : NULL,
                        .curve_secret_key = cc && cc->has_secret ? cc->secret : NULL,
                        .timeout_ms = timeout_ms};
    if (!(*out = sl_client_new(&o, &err)))
        return cli_fail("%s", err.msg);
    return -1;
}

int client_command(int argc, char **argv, const char *cmd, const char *usage, int arg,
                   client_args *a, sl_client **out)
{
    int st = client_args_parse(argc, argv, cmd, usage, arg, a);
    return st < 0 ? cli_client_open(a->coordinator, NULL, &a->cc, a->request_timeout_ms, out) : st;
}
