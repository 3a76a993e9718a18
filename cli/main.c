/* The sluice command. Only this folder prints and picks exit statuses:
 * 0 equal, 1 different, 2 trouble (as diff(1)). */
#include <stdio.h>
#include <string.h>

#include "../merkle/enc.h"
#include "../proto/msg.h"
#include "cli.h"

#define SLUICE_VERSION "0.1.0"

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "help") || !strcmp(argv[1], "--help") ||
        !strcmp(argv[1], "-h")) {
        printf(
            "sluice %s — validate data migrations\n\n"
            "commands:\n"
            "  diff SOURCE TARGET --table T     compare a table row by row (all in one)\n"
            "  repair SOURCE TARGET --table T   make the target equal to the source (dry run\n"
            "         [--apply] [--max-rows N]  by default; --apply writes the target)\n"
            "  coordinator [options]            run the coordinator of a cluster\n"
            "  worker --db NAME=DSN [options]   run workers for a coordinator\n"
            "  submit SRC TGT --table T [--wait]  submit a diff job to a coordinator\n"
            "         [--priority high|normal|low] [--max-tasks N]\n"
            "  status JOB                       a job's state and summary\n"
            "  report JOB                       a finished job's report, as diff prints it\n"
            "  watch [--job JOB]                follow the event stream\n"
            "  cancel JOB                       stop a queued or running job\n"
            "  workers                          the workers a coordinator knows\n"
            "  schedule add|rm|ls               audits a coordinator runs on an interval\n"
            "  scrub SRC TGT --table T          every row checked, in a random order, at a rate\n"
            "  verify-changes SRC TGT --table T  check each row as it changes (PostgreSQL)\n"
            "  drift [--table T]                the drift history in the control database\n"
            "  control --db-file F --tokens F   the migration control plane (HTTP API)\n"
            "  keygen [PREFIX]                  a CURVE key pair for secured sockets\n"
            "  version                          print the version\n"
            "each command takes --help\n",
            SLUICE_VERSION);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version")) {
        printf("sluice %s (encoding v%d, protocol v%d)\n", SLUICE_VERSION, ENC_VERSION,
               MSG_VERSION);
        return 0;
    }
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {{"diff", cmd_diff},
                {"repair", cmd_repair},
                {"coordinator", cmd_coordinator},
                {"worker", cmd_worker},
                {"submit", cmd_submit},
                {"status", cmd_status},
                {"watch", cmd_watch},
                {"workers", cmd_workers},
                {"keygen", cmd_keygen},
                {"report", cmd_report},
                {"cancel", cmd_cancel},
                {"schedule", cmd_schedule},
                {"control", cmd_control},
                {"drift", cmd_drift},
                {"scrub", cmd_scrub},
                {"verify-changes", cmd_verify_changes}};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(argv[1], cmds[i].name))
            return cmds[i].fn(argc - 1, argv + 1);
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
