/* sluice workers: the worker slots a coordinator knows. */
#include <stdio.h>

#include "cli.h"

int cmd_workers(int argc, char **argv)
{
    client_args a;
    sl_client *c = NULL;
    int st = client_command(argc, argv, "workers",
                            "usage: sluice workers\n"
                            "  one line per worker slot: alive or lost, busy or idle, when\n"
                            "  last heard from, the trees it holds, the databases it reaches\n",
                            CLIENT_NO_ARG, &a, &c);
    if (st >= 0)
        return st;
    sl_err err;
    sl_worker_info *v;
    size_t n;
    if (sl_client_workers(c, &v, &n, &err)) {
        sl_client_free(c);
        return cli_fail("%s", err.msg);
    }
    for (size_t i = 0; i < n; i++) {
        printf("worker %lld  %-5s %-4s last seen %.1f s ago  ", (long long)v[i].slot,
               v[i].alive ? "alive" : "lost", v[i].busy ? "busy" : "idle",
               (double)v[i].idle_ms / 1000);
        if (v[i].trees >= 0) /* a coordinator that counts them */
            printf("trees %lld  ", (long long)v[i].trees);
        printf("databases:");
        for (size_t k = 0; k < v[i].ndbs; k++)
            printf(" %s", v[i].dbs[k]);
        printf("\n");
    }
    printf("%zu workers\n", n);
    sl_worker_info_free(v, n);
    sl_client_free(c);
    return 0;
}
