/* sluice keygen [PREFIX]: a CURVE key pair for secured sockets. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "cli.h"

/* sluice keygen [PREFIX]: a CURVE key pair, printed, or written to
 * PREFIX.key (secret, mode 0600) and PREFIX.pub. */
int cmd_keygen(int argc, char **argv)
{
    char pub[41], sec[41];
    if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: sluice keygen [PREFIX]\n"
               "  prints a CURVE key pair, or writes PREFIX.key (secret, mode 0600) and\n"
               "  PREFIX.pub (public)\n");
        return 0;
    }
    if (argc > 2 || (argc == 2 && argv[1][0] == '-'))
        return cli_fail("usage: sluice keygen [PREFIX]  (writes PREFIX.key and PREFIX.pub)");
    if (zmq_curve_keypair(pub, sec))
        return cli_fail("cannot make a CURVE key pair: %s (libzmq built without CURVE?)",
                        zmq_strerror(zmq_errno()));
    if (argc < 2) {
        printf("public: %s\nsecret: %s\n", pub, sec);
        return 0;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s.key", argv[1]);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f)
        return cli_fail("cannot create %s (it must not exist yet)", path);
    fprintf(f, "# sluice CURVE secret key: keep it private\nsecret: %s\n", sec);
    fclose(f);
    snprintf(path, sizeof path, "%s.pub", argv[1]);
    f = fopen(path, "w");
    if (!f)
        return cli_fail("cannot create %s", path);
    fprintf(f, "public: %s\n", pub);
    fclose(f);
    printf("public: %s\n", pub);
    return 0;
}
