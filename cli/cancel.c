/* sluice cancel JOB: stops a queued or running job. */
#include <stdio.h>

#include "cli.h"

int cmd_cancel(int argc, char **argv)
{
    client_args a;
    sl_client *c = NULL;
    int st = client_command(argc, argv, "cancel",
                            "usage: sluice cancel JOB\n"
                            "  stops a queued or running job; exit 0 when it is cancelled,\n"
                            "  2 for an unknown job or one already finished\n",
                            CLIENT_JOB_ARG, &a, &c);
    if (st >= 0)
        return st;
    sl_err err;
    if (sl_client_cancel(c, a.job, &err)) {
        st = cli_fail("%s", err.msg);
    } else {
        printf("job %lld cancelled\n", (long long)a.job);
        st = 0;
    }
    sl_client_free(c);
    return st;
}
