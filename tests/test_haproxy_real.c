/* ct_haproxy against a real HAProxy: a small driver that
 * tests/integration/test_haproxy.py runs once per step, checking the
 * traffic through HAProxy between steps. Without SLUICE_HAPROXY_SOCKET
 * (as under `make test`) it skips.
 *
 *   test_haproxy_real reads BACKEND SOURCE TARGET PERCENT [shut]
 *   test_haproxy_real writes BACKEND SOURCE TARGET 0|1
 *   test_haproxy_real weight|state|sessions BACKEND SERVER
 *   test_haproxy_real set-weight BACKEND SERVER W
 *   test_haproxy_real set-state BACKEND SERVER STATE
 *   test_haproxy_real shutdown BACKEND SERVER
 *   test_haproxy_real hold FRONTEND         (value: the saved maxconn)
 *   test_haproxy_real release FRONTEND MAXCONN
 *   test_haproxy_real drained BACKEND SERVER TIMEOUT_MS
 *                                           (value: "0 left" / "1 N left")
 *
 * Prints one TAP line; a value as "# value: V", an error as
 * "# error <code>: <message>". SLUICE_HAPROXY_TIMEOUT_MS: default 2000. */
#include <stdio.h>
#include <stdlib.h>

#include "../control/haproxy.h"
#include "tap.h"

int main(int argc, char **argv)
{
    const char *sock = getenv("SLUICE_HAPROXY_SOCKET");
    if (!sock || !*sock) {
        printf("1..0 # SKIP SLUICE_HAPROXY_SOCKET not set\n");
        return 0;
    }
    if (argc < 3 || (argc < 4 && strcmp(argv[1], "hold"))) {
        fprintf(stderr, "usage: see tests/test_haproxy_real.c\n");
        return 2;
    }
    const char *t = getenv("SLUICE_HAPROXY_TIMEOUT_MS");
    int timeout = t ? atoi(t) : 2000;
    sl_err e = {0};
    ct_haproxy *h = ct_haproxy_new(sock, timeout, &e);
    const char *cmd = argv[1], *be = argv[2], *sv = argc >= 4 ? argv[3] : "";
    char value[64] = "";
    int rc = -1;
    if (!h) {
        rc = -1;
    } else if (!strcmp(cmd, "reads") && argc >= 6) {
        int shut = argc >= 7 && !strcmp(argv[6], "shut");
        rc = ct_haproxy_route_reads(h, be, sv, argv[4], atoi(argv[5]), shut, &e);
    } else if (!strcmp(cmd, "writes") && argc >= 6) {
        rc = ct_haproxy_route_writes(h, be, sv, argv[4], atoi(argv[5]), &e);
    } else if (!strcmp(cmd, "weight")) {
        int w = -1;
        rc = ct_haproxy_get_weight(h, be, sv, &w, &e);
        snprintf(value, sizeof value, "%d", w);
    } else if (!strcmp(cmd, "state")) {
        rc = ct_haproxy_get_state(h, be, sv, value, sizeof value, &e);
    } else if (!strcmp(cmd, "sessions")) {
        long n = -1;
        rc = ct_haproxy_sessions(h, be, sv, &n, &e);
        snprintf(value, sizeof value, "%ld", n);
    } else if (!strcmp(cmd, "set-weight") && argc >= 5) {
        rc = ct_haproxy_set_weight(h, be, sv, atoi(argv[4]), &e);
    } else if (!strcmp(cmd, "set-state") && argc >= 5) {
        rc = ct_haproxy_set_state(h, be, sv, argv[4], &e);
    } else if (!strcmp(cmd, "hold")) {
        long saved = -1;
        rc = ct_haproxy_hold_frontend(h, be, &saved, &e);
        snprintf(value, sizeof value, "%ld", saved);
    } else if (!strcmp(cmd, "release")) {
        rc = ct_haproxy_release_frontend(h, be, atol(sv), &e);
    } else if (!strcmp(cmd, "drained") && argc >= 5) {
        long left = -1;
        int r = ct_haproxy_wait_drained(h, be, sv, atoi(argv[4]), &left, &e);
        rc = r < 0 ? -1 : 0;
        snprintf(value, sizeof value, "%d %ld left", r, left);
    } else if (!strcmp(cmd, "shutdown")) {
        rc = ct_haproxy_shutdown_sessions(h, be, sv, &e);
    } else {
        fprintf(stderr, "unknown command %s\n", cmd);
        ct_haproxy_free(h);
        return 2;
    }
    ok(rc == 0, "%s %s/%s", cmd, be, sv);
    if (rc == 0 && *value)
        printf("# value: %s\n", value);
    if (rc != 0)
        printf("# error %s: %s\n", sl_code_name(e.code), e.msg);
    ct_haproxy_free(h);
    return done_testing();
}
