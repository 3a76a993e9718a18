/* ct_haproxy without HAProxy: names and arguments are checked before any
 * command line is built, and the client survives hostile sockets (one that
 * never answers, answers garbage, answers 10 MB, closes at once) within its
 * timeout. HAProxy's own answers are tested against the real thing in
 * tests/integration/test_haproxy.py. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "../control/haproxy.h"
#include "tap.h"

enum mode { HANG, GARBAGE, HUGE, CLOSE };

struct fake {
    enum mode mode;
    int lfd;
    atomic_int stop;
    atomic_int accepted;
    char path[108];
    int port;
    pthread_t thr;
};

static void *serve(void *arg)
{
    struct fake *f = arg;
    int held[64], nheld = 0;
    while (!atomic_load(&f->stop)) {
        struct pollfd p = {.fd = f->lfd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int c = accept(f->lfd, NULL, NULL);
        if (c < 0)
            continue;
        atomic_fetch_add(&f->accepted, 1);
        if (f->mode == CLOSE) {
            close(c);
            continue;
        }
        char cmd[512];
        (void)!recv(c, cmd, sizeof cmd, 0);
        if (f->mode == HANG && nheld < 64) {
            held[nheld++] = c;
            continue;
        }
        if (f->mode == GARBAGE) {
            const char *g = "  \x01garbage\tfrom a confused peer, and it goes on and on and on and "
                            "on and on and on and on and on and on and on and on and on and on "
                            "and on and on and on and on and on and on and on and on and on and "
                            "on and on and on and on\nsecond line\n";
            (void)!send(c, g, strlen(g), MSG_NOSIGNAL);
        } else if (f->mode == HUGE) {
            static char chunk[65536];
            memset(chunk, 'x', sizeof chunk);
            for (int i = 0; i < 160; i++) /* 10 MB */
                if (send(c, chunk, sizeof chunk, MSG_NOSIGNAL) < 0)
                    break;
        }
        close(c);
    }
    for (int i = 0; i < nheld; i++)
        close(held[i]);
    return NULL;
}

static void fake_start(struct fake *f, enum mode mode, int tcp)
{
    memset(f, 0, sizeof *f);
    f->mode = mode;
    if (tcp) {
        f->lfd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        bind(f->lfd, (struct sockaddr *)&a, sizeof a);
        socklen_t l = sizeof a;
        getsockname(f->lfd, (struct sockaddr *)&a, &l);
        f->port = ntohs(a.sin_port);
        snprintf(f->path, sizeof f->path, "127.0.0.1:%d", f->port);
    } else {
        snprintf(f->path, sizeof f->path, "/tmp/sluice_hx_%d_%d.sock", (int)getpid(), (int)mode);
        unlink(f->path);
        f->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        snprintf(a.sun_path, sizeof a.sun_path, "%s", f->path);
        bind(f->lfd, (struct sockaddr *)&a, sizeof a);
    }
    listen(f->lfd, 16);
    pthread_create(&f->thr, NULL, serve, f);
}

static void fake_stop(struct fake *f)
{
    atomic_store(&f->stop, 1);
    pthread_join(f->thr, NULL);
    close(f->lfd);
    if (!f->port)
        unlink(f->path);
}

static int has(const sl_err *e, const char *s)
{
    return strstr(e->msg, s) != NULL;
}

static void names_and_arguments(void)
{
    sl_err e = {0};
    ok(ct_haproxy_new("", 1000, &e) == NULL && e.code == SL_INVALID, "an empty socket: %s", e.msg);
    e = (sl_err){0};
    ok(ct_haproxy_new("/tmp/x.sock", 0, &e) == NULL && e.code == SL_INVALID,
       "a timeout of 0 ms: %s", e.msg);
    e = (sl_err){0};
    ok(ct_haproxy_new("host:", 1000, &e) == NULL && e.code == SL_INVALID, "HOST: without a port");

    /* A listener that counts connections: a refused name must not reach it. */
    struct fake f;
    fake_start(&f, CLOSE, 0);
    ct_haproxy *h = ct_haproxy_new(f.path, 500, &e);
    ok(h != NULL, "new on a unix path");
    const char *bad[] = {"", "a b", "reads\nshutdown sessions server x/y", "a/b", "a;b", "ü", NULL};
    for (int i = 0; bad[i]; i++) {
        e = (sl_err){0};
        ok(ct_haproxy_set_weight(h, "reads", bad[i], 5, &e) == -1 && e.code == SL_INVALID &&
               has(&e, "[A-Za-z0-9_.:-]") && !strchr(e.msg, '\n'),
           "server name #%d refused: %s", i, e.msg);
        e = (sl_err){0};
        ok(ct_haproxy_set_state(h, bad[i], "old", "ready", &e) == -1 && e.code == SL_INVALID,
           "backend name #%d refused", i);
    }
    char longname[65];
    memset(longname, 'a', 64);
    longname[64] = '\0';
    e = (sl_err){0};
    ok(ct_haproxy_get_weight(h, "reads", longname, &(int){0}, &e) == -1 && e.code == SL_INVALID,
       "a 64-character name is refused");
    e = (sl_err){0};
    ok(ct_haproxy_sessions(h, NULL, "old", &(long){0}, &e) == -1 && e.code == SL_INVALID,
       "a NULL name is refused");
    e = (sl_err){0};
    ok(ct_haproxy_set_weight(h, "reads", "old", 257, &e) == -1 && e.code == SL_INVALID,
       "weight 257 is refused: %s", e.msg);
    e = (sl_err){0};
    ok(ct_haproxy_set_weight(h, "reads", "old", -1, &e) == -1 && e.code == SL_INVALID,
       "weight -1 is refused");
    e = (sl_err){0};
    ok(ct_haproxy_set_state(h, "reads", "old", "up", &e) == -1 && e.code == SL_INVALID,
       "state \"up\" is refused: %s", e.msg);
    e = (sl_err){0};
    ok(ct_haproxy_route_reads(h, "reads", "old", "new", 101, 0, &e) == -1 && e.code == SL_INVALID,
       "101 percent is refused");
    e = (sl_err){0};
    ok(ct_haproxy_route_writes(h, "writes", "old", "old", 1, &e) == -1 && e.code == SL_INVALID,
       "source == target is refused");
    e = (sl_err){0};
    ok(ct_haproxy_route_writes(h, "writes", "old", "new x", 1, &e) == -1 && e.code == SL_INVALID,
       "a bad name in route_writes is refused");
    for (int i = 0; bad[i]; i++) {
        long saved = -7, left = -7;
        e = (sl_err){0};
        ok(ct_haproxy_hold_frontend(h, bad[i], &saved, &e) == -1 && e.code == SL_INVALID &&
               has(&e, "frontend name") && saved == -7,
           "hold: frontend name #%d refused: %s", i, e.msg);
        e = (sl_err){0};
        ok(ct_haproxy_release_frontend(h, bad[i], 100, &e) == -1 && e.code == SL_INVALID,
           "release: frontend name #%d refused", i);
        e = (sl_err){0};
        ok(ct_haproxy_wait_drained(h, "writes", bad[i], 100, &left, &e) == -1 &&
               e.code == SL_INVALID && left == -7,
           "wait_drained: server name #%d refused", i);
        e = (sl_err){0};
        ok(ct_haproxy_wait_drained(h, bad[i], "old", 100, &left, &e) == -1 && e.code == SL_INVALID,
           "wait_drained: backend name #%d refused", i);
    }
    e = (sl_err){0};
    ok(ct_haproxy_hold_frontend(h, longname, &(long){0}, &e) == -1 && e.code == SL_INVALID,
       "hold: a 64-character frontend name is refused");
    e = (sl_err){0};
    ok(ct_haproxy_release_frontend(h, "writes", 0, &e) == -1 && e.code == SL_INVALID,
       "release to maxconn 0 is refused (that is a hold): %s", e.msg);
    e = (sl_err){0};
    ok(ct_haproxy_release_frontend(h, "writes", -1, &e) == -1 && e.code == SL_INVALID,
       "release to maxconn -1 is refused");
    e = (sl_err){0};
    ok(ct_haproxy_release_frontend(h, "writes", 1000000001L, &e) == -1 && e.code == SL_INVALID,
       "release to maxconn 1000000001 is refused");
    e = (sl_err){0};
    ok(ct_haproxy_wait_drained(h, "writes", "old", -1, &(long){0}, &e) == -1 &&
           e.code == SL_INVALID,
       "a negative drain timeout is refused: %s", e.msg);
    usleep(100 * 1000);
    ok(atomic_load(&f.accepted) == 0, "no refused call connected (%d did)",
       atomic_load(&f.accepted));
    ct_haproxy_free(h);
    fake_stop(&f);
}

static void hostile(enum mode mode, int tcp)
{
    static const char *names[] = {"never answers", "answers garbage", "answers 10 MB",
                                  "closes at once"};
    const char *name = names[mode];
    const char *kind = tcp ? "tcp" : "unix";
    struct fake f;
    fake_start(&f, mode, tcp);
    sl_err e = {0};
    ct_haproxy *h = ct_haproxy_new(f.path, 400, &e);
    int w = -1;
    double t0 = sl_now();
    int rc = ct_haproxy_get_weight(h, "reads", "old", &w, &e);
    double took = sl_now() - t0;
    ok(rc == -1 && w == -1, "%s (%s): get weight fails: %s", name, kind, e.msg);
    ok(took < 2.0, "%s (%s): within the timeout (%.2f s)", name, kind, took);
    if (mode == HANG) {
        char want[300];
        snprintf(want, sizeof want, "HAProxy at %s did not answer within 400 ms", f.path);
        ok(!strcmp(e.msg, want) && took >= 0.35, "%s: the message says so: %s", name, e.msg);
    }
    if (mode == HUGE)
        ok(has(&e, "more than 4 MiB"), "%s: refused as too long", name);
    if (mode == GARBAGE)
        ok(has(&e, "HAProxy refused \"get weight reads/old\": ?garbage") && !has(&e, "second") &&
               !strchr(e.msg, '\n') && strlen(strstr(e.msg, "?garbage")) <= 200,
           "%s: first line quoted, trimmed, at most 200 characters: %s", name, e.msg);

    e = (sl_err){0};
    t0 = sl_now();
    rc = ct_haproxy_set_weight(h, "reads", "old", 5, &e);
    took = sl_now() - t0;
    /* Over TCP a peer that closes at once may look like an empty (= ok)
     * answer; route_* read back for that reason. */
    if (!(mode == CLOSE && tcp))
        ok(rc == -1 && e.code == SL_INTERNAL, "%s (%s): set weight fails: %s", name, kind, e.msg);
    ok(took < 2.0, "%s (%s): set weight within the timeout", name, kind);

    char st[16] = "";
    e = (sl_err){0};
    ok(ct_haproxy_get_state(h, "reads", "old", st, sizeof st, &e) == -1 && !*st,
       "%s (%s): get state fails: %s", name, kind, e.msg);
    long n = -1;
    e = (sl_err){0};
    ok(ct_haproxy_sessions(h, "reads", "old", &n, &e) == -1 && n == -1,
       "%s (%s): sessions fails: %s", name, kind, e.msg);
    e = (sl_err){0};
    t0 = sl_now();
    ok(ct_haproxy_route_reads(h, "reads", "old", "new", 25, 1, &e) == -1 && sl_now() - t0 < 3.0,
       "%s (%s): route_reads fails: %s", name, kind, e.msg);
    ct_haproxy_free(h);
    fake_stop(&f);
}

static void nobody_listening(void)
{
    sl_err e = {0};
    ct_haproxy *h = ct_haproxy_new("/nonexistent/dir/admin.sock", 300, &e);
    int w;
    ok(ct_haproxy_get_weight(h, "reads", "old", &w, &e) == -1 &&
           has(&e, "cannot connect to HAProxy at /nonexistent/dir/admin.sock"),
       "no socket: %s", e.msg);
    ct_haproxy_free(h);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    names_and_arguments();
    nobody_listening();
    for (int tcp = 0; tcp < 2; tcp++)
        for (int m = HANG; m <= CLOSE; m++)
            hostile((enum mode)m, tcp);
    ct_haproxy_free(NULL);
    return done_testing();
}
