/* ct_webhook against a real little HTTP server on 127.0.0.1 (a thread of
 * this test): a POST arrives with the documented request line, headers and
 * body; 500s and a server that never answers are retried with backoff
 * until a 2xx; an unreachable port is given up after max_tries; a full
 * queue drops the oldest; free during a backoff returns at once; URLs it
 * cannot send to are refused. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../base/sl.h"
#include "../control/webhook.h"
#include "tap.h"

#define MAX_REQ 32

/* The server answers connection i with script[i] (the last entry for any
 * later one); 0 means read the request and never answer. */
typedef struct server {
    int lfd, port, v6;
    int script[8], nscript;
    pthread_t th;
    pthread_mutex_t mu;
    int stop, nreq;
    char *req[MAX_REQ];
    int held[MAX_REQ], nheld;
} server;

static int server_stopping(server *s)
{
    pthread_mutex_lock(&s->mu);
    int st = s->stop;
    pthread_mutex_unlock(&s->mu);
    return st;
}

/* Reads one request (headers and Content-Length body) within 3 s. */
static char *read_request(int fd)
{
    size_t cap = 65536, got = 0;
    char *b = malloc(cap + 1);
    for (;;) {
        b[got] = 0;
        char *eoh = strstr(b, "\r\n\r\n");
        if (eoh) {
            const char *cl = strcasestr(b, "\r\nContent-Length:");
            size_t want = (size_t)(eoh + 4 - b) + (cl ? strtoul(cl + 17, NULL, 10) : 0);
            if (got >= want)
                return b;
        }
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (got == cap || poll(&pf, 1, 3000) <= 0)
            return b;
        ssize_t n = recv(fd, b + got, cap - got, 0);
        if (n <= 0)
            return b;
        got += (size_t)n;
    }
}

static void *serve(void *arg)
{
    server *s = arg;
    while (!server_stopping(s)) {
        struct pollfd pf = {.fd = s->lfd, .events = POLLIN};
        if (poll(&pf, 1, 20) <= 0)
            continue;
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        char *req = read_request(fd);
        pthread_mutex_lock(&s->mu);
        int i = s->nreq < MAX_REQ ? s->nreq : MAX_REQ - 1;
        int action = s->script[i < s->nscript ? i : s->nscript - 1];
        if (s->nreq < MAX_REQ)
            s->req[s->nreq++] = req;
        else
            free(req);
        if (action == 0)
            s->held[s->nheld++] = fd;
        pthread_mutex_unlock(&s->mu);
        if (action != 0) {
            char resp[128];
            int n =
                snprintf(resp, sizeof resp,
                         "HTTP/1.1 %d X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", action);
            (void)!write(fd, resp, (size_t)n);
            close(fd);
        }
    }
    return NULL;
}

/* Starts a server with the given script (terminated by -1); v6 listens on
 * ::1. 0, or -1 when it cannot listen. */
static int server_start(server *s, int v6, const int *script)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    for (; *script >= 0 && s->nscript < 8; script++)
        s->script[s->nscript++] = *script;
    s->v6 = v6;
    s->lfd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
    struct sockaddr_storage ss = {0};
    socklen_t sl;
    if (v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        sl = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sl = sizeof *a;
    }
    if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *)&ss, sl) != 0 || listen(s->lfd, 16) != 0) {
        if (s->lfd >= 0)
            close(s->lfd);
        return -1;
    }
    getsockname(s->lfd, (struct sockaddr *)&ss, &sl);
    s->port =
        ntohs(v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
    pthread_create(&s->th, NULL, serve, s);
    return 0;
}

static void server_stop(server *s)
{
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->th, NULL);
    close(s->lfd);
    for (int i = 0; i < s->nheld; i++)
        close(s->held[i]);
    for (int i = 0; i < s->nreq; i++)
        free(s->req[i]);
    pthread_mutex_destroy(&s->mu);
}

static int server_nreq(server *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->nreq;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* The body of request i (after the blank line), "" if none. */
static const char *req_body(server *s, int i)
{
    const char *e = i < s->nreq ? strstr(s->req[i], "\r\n\r\n") : NULL;
    return e ? e + 4 : "";
}

typedef struct logbuf {
    pthread_mutex_t mu;
    char text[4096];
} logbuf;

static void log_line(void *ctx, const char *line)
{
    logbuf *l = ctx;
    pthread_mutex_lock(&l->mu);
    size_t n = strlen(l->text);
    snprintf(l->text + n, sizeof l->text - n, "%s%s", n ? " / " : "", line);
    pthread_mutex_unlock(&l->mu);
}

static int log_has(logbuf *l, const char *s)
{
    pthread_mutex_lock(&l->mu);
    int has = strstr(l->text, s) != NULL;
    pthread_mutex_unlock(&l->mu);
    return has;
}

/* Waits up to secs for delivered + dropped to reach n; the stats seen. */
static ct_webhook_stats wait_settled(ct_webhook *w, uint64_t n, double secs)
{
    ct_webhook_stats st;
    double until = sl_now() + secs;
    for (;;) {
        ct_webhook_stats_get(w, &st);
        if (st.delivered + st.dropped >= n || sl_now() > until)
            return st;
        usleep(10000);
    }
}

static ct_webhook *open_hook(const char *url, int timeout_ms, int tries, size_t q, logbuf *l)
{
    ct_webhook_opts o = {.url = url,
                         .timeout_ms = timeout_ms,
                         .max_tries = tries,
                         .max_queue = q,
                         .log = log_line,
                         .log_ctx = l};
    sl_err e = {0};
    ct_webhook *w = ct_webhook_new(&o, &e);
    if (!w)
        printf("# ct_webhook_new(%s): %s\n", url, e.msg);
    return w;
}

static void test_delivery(void)
{
    server s;
    static const int script[] = {200, 204, -1};
    if (server_start(&s, 0, script) != 0) {
        ok(0, "test server listens");
        return;
    }
    logbuf l = {.mu = PTHREAD_MUTEX_INITIALIZER};
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/hooks/audit?x=1", s.port);
    ct_webhook *w = open_hook(url, 2000, 3, 0, &l);
    const char *b1 = "{\"kind\":\"advance\",\"phase\":\"cutover\"}", *b2 = "{\"n\":2}";
    ok(w && ct_webhook_post(w, b1, strlen(b1)) == 0 && ct_webhook_post(w, b2, strlen(b2)) == 0,
       "two events queued");
    ct_webhook_stats st = wait_settled(w, 2, 5);
    ok(st.queued == 2 && st.delivered == 2 && st.retried == 0 && st.dropped == 0,
       "both delivered at the first try (queued %llu delivered %llu retried %llu dropped %llu)",
       (unsigned long long)st.queued, (unsigned long long)st.delivered,
       (unsigned long long)st.retried, (unsigned long long)st.dropped);
    ct_webhook_free(w);
    pthread_mutex_lock(&s.mu);
    ok(s.nreq == 2, "the server saw two requests (%d)", s.nreq);
    const char *r = s.nreq ? s.req[0] : "";
    char host[64], len[64];
    snprintf(host, sizeof host, "\r\nHost: 127.0.0.1:%d\r\n", s.port);
    snprintf(len, sizeof len, "\r\nContent-Length: %zu\r\n", strlen(b1));
    ok(!strncmp(r, "POST /hooks/audit?x=1 HTTP/1.1\r\n", 32), "request line: %.30s", r);
    ok(strstr(r, host) && strstr(r, len) && strstr(r, "\r\nContent-Type: application/json\r\n") &&
           strstr(r, "\r\nConnection: close\r\n") && strstr(r, "\r\nUser-Agent: sluice\r\n"),
       "Host, Content-Length, Content-Type, Connection and User-Agent headers as documented");
    ok(!strcmp(req_body(&s, 0), b1) && !strcmp(req_body(&s, 1), b2),
       "bodies arrive whole and in order: %s", req_body(&s, 0));
    pthread_mutex_unlock(&s.mu);
    ok(l.text[0] == 0, "nothing logged for deliveries");
    server_stop(&s);
}

static void test_retry_500(void)
{
    server s;
    static const int script[] = {500, 500, 200, -1};
    if (server_start(&s, 0, script) != 0) {
        ok(0, "test server listens");
        return;
    }
    logbuf l = {.mu = PTHREAD_MUTEX_INITIALIZER};
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", s.port);
    ct_webhook *w = open_hook(url, 2000, 5, 0, &l);
    double t0 = sl_now();
    ct_webhook_post(w, "{}", 2);
    ct_webhook_stats st = wait_settled(w, 1, 8);
    double took = sl_now() - t0;
    ok(st.delivered == 1 && st.retried == 2 && st.dropped == 0,
       "500, 500, 200: delivered with retried=2 (delivered %llu retried %llu dropped %llu)",
       (unsigned long long)st.delivered, (unsigned long long)st.retried,
       (unsigned long long)st.dropped);
    ok(took >= 1.4 && took < 4, "backoff 0.5 s then 1 s between tries (%.2f s)", took);
    ok(server_nreq(&s) == 3, "three requests reached the server (%d)", server_nreq(&s));
    ct_webhook_free(w);
    server_stop(&s);
}

static void test_timeout_then_retry(void)
{
    server s;
    static const int script[] = {0, 200, -1};
    if (server_start(&s, 0, script) != 0) {
        ok(0, "test server listens");
        return;
    }
    logbuf l = {.mu = PTHREAD_MUTEX_INITIALIZER};
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/h", s.port);
    ct_webhook *w = open_hook(url, 300, 3, 0, &l);
    double t0 = sl_now();
    ct_webhook_post(w, "{\"t\":1}", 7);
    ct_webhook_stats st = wait_settled(w, 1, 6);
    double took = sl_now() - t0;
    ok(st.delivered == 1 && st.retried == 1,
       "a server that never answers: the try times out and the retry is delivered (delivered "
       "%llu retried %llu)",
       (unsigned long long)st.delivered, (unsigned long long)st.retried);
    ok(took >= 0.75 && took < 3, "timeout 0.3 s + backoff 0.5 s before the retry (%.2f s)", took);
    pthread_mutex_lock(&s.mu);
    ok(s.nreq == 2 && !strcmp(req_body(&s, 0), "{\"t\":1}") &&
           !strcmp(req_body(&s, 1), "{\"t\":1}"),
       "the same body was sent twice (%d requests)", s.nreq);
    pthread_mutex_unlock(&s.mu);
    ct_webhook_free(w);
    server_stop(&s);
}

/* A port nothing listens on: bound, then closed. */
static int dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof a;
    bind(fd, (struct sockaddr *)&a, sl);
    getsockname(fd, (struct sockaddr *)&a, &sl);
    close(fd);
    return ntohs(a.sin_port);
}

static void test_unreachable(void)
{
    logbuf l = {.mu = PTHREAD_MUTEX_INITIALIZER};
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/x", dead_port());
    ct_webhook *w = open_hook(url, 1000, 2, 0, &l);
    ct_webhook_post(w, "{}", 2);
    ct_webhook_stats st = wait_settled(w, 1, 5);
    ok(st.delivered == 0 && st.dropped == 1 && st.retried == 1,
       "unreachable port: tried twice then dropped (dropped %llu retried %llu)",
       (unsigned long long)st.dropped, (unsigned long long)st.retried);
    ok(log_has(&l, "giving up") && log_has(&l, "2 tries") && log_has(&l, "refused"),
       "one log line says it gave up and why: %s", l.text);
    ct_webhook_free(w);
}

static void test_overflow(void)
{
    server s;
    static const int script[] = {0, 200, -1};
    if (server_start(&s, 0, script) != 0) {
        ok(0, "test server listens");
        return;
    }
    logbuf l = {.mu = PTHREAD_MUTEX_INITIALIZER};
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", s.port);
    ct_webhook *w = open_hook(url, 800, 3, 3, &l);
    ct_webhook_post(w, "A", 1);
    double until = sl_now() + 3;
    while (server_nreq(&s) < 1 && sl_now() < until)
        usleep(5000);
    /* A is in flight (the server holds it); the queue holds at most 3 */
    const char *more[] = {"B", "C", "D", "E", "F"};
    for (int i = 0; i < 5; i++)
        ct_webhook_post(w, more[i], 1);
    ct_webhook_stats st;
    ct_webhook_stats_get(w, &st);
    ok(st.queued == 6 && st.dropped == 2,
       "queue of 3, 5 posted behind one in flight: 2 dropped "
       "(queued %llu dropped %llu)",
       (unsigned long long)st.queued, (unsigned long long)st.dropped);
    st = wait_settled(w, 6, 8);
    ok(st.delivered == 4 && st.dropped == 2, "the rest delivered (delivered %llu dropped %llu)",
       (unsigned long long)st.delivered, (unsigned long long)st.dropped);
    pthread_mutex_lock(&s.mu);
    char seen[16] = "";
    for (int i = 0; i < s.nreq && i < 15; i++)
        seen[i] = req_body(&s, i)[0];
    pthread_mutex_unlock(&s.mu);
    ok(!strcmp(seen, "AADEF"), "the oldest (B, C) were dropped: the server saw %s", seen);
    ok(log_has(&l, "queue full"), "the drop is logged: %s", l.text);
    ct_webhook_free(w);
    server_stop(&s);
}

static void test_free_during_backoff(void)
{
    logbuf l = {.mu = PTHREAD_MUTEX_INITIALIZER};
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/x", dead_port());
    ct_webhook *w = open_hook(url, 1000, 8, 0, &l);
    ct_webhook_post(w, "{}", 2);
    ct_webhook_post(w, "{}", 2);
    ct_webhook_stats st;
    double until = sl_now() + 5;
    do {
        usleep(10000);
        ct_webhook_stats_get(w, &st);
    } while (st.retried < 2 && sl_now() < until);
    /* third try failed at ~1.5 s; now in a 2 s backoff */
    usleep(200000);
    double t0 = sl_now();
    ct_webhook_free(w);
    double took = sl_now() - t0;
    ok(st.retried >= 2 && took < 1.0, "free during a backoff returns within 1 s (%.3f s)", took);
    ok(log_has(&l, "dropped 1 queued"), "the queued event is counted as dropped: %s", l.text);
}

static void test_ipv6(void)
{
    server s;
    static const int script[] = {201, -1};
    if (server_start(&s, 1, script) != 0) {
        ok(1, "# SKIP no ::1 on this machine");
        return;
    }
    logbuf l = {.mu = PTHREAD_MUTEX_INITIALIZER};
    char url[128];
    snprintf(url, sizeof url, "http://[::1]:%d/six", s.port);
    ct_webhook *w = open_hook(url, 2000, 2, 0, &l);
    ct_webhook_post(w, "{}", 2);
    ct_webhook_stats st = wait_settled(w, 1, 5);
    ok(st.delivered == 1, "delivered to http://[::1]:port/six");
    ct_webhook_free(w);
    char host[64];
    snprintf(host, sizeof host, "\r\nHost: [::1]:%d\r\n", s.port);
    pthread_mutex_lock(&s.mu);
    ok(s.nreq == 1 && !strncmp(s.req[0], "POST /six HTTP/1.1", 18) && strstr(s.req[0], host),
       "IPv6 Host header in brackets");
    pthread_mutex_unlock(&s.mu);
    server_stop(&s);
}

static void test_urls(void)
{
    static const char *bad[] = {"https://example.com/hook",
                                "ftp://example.com/",
                                "http://",
                                "http:///path",
                                "http://:8080/x",
                                "http://h:0/",
                                "http://h:99999/",
                                "http://h:/x",
                                "http://h:8a/",
                                "http://[::1/x",
                                "http://h x/",
                                "http://h/\r\nX-Evil: 1",
                                "example.com/hook",
                                NULL};
    int all = 1;
    for (int i = 0; bad[i]; i++) {
        ct_webhook_opts o = {.url = bad[i]};
        sl_err e = {0};
        ct_webhook *w = ct_webhook_new(&o, &e);
        if (w || e.code != SL_INVALID || !e.msg[0]) {
            all = 0;
            printf("# %s: accepted or no invalid error (%s)\n", bad[i], e.msg);
        }
        ct_webhook_free(w);
    }
    ok(all, "bad URLs refused with an invalid error (https, other schemes, no host, port 0, "
            "99999, empty or not a number, unclosed [, spaces, CRLF)");
    ct_webhook_opts o = {.url = "https://x/"};
    sl_err e = {0};
    ct_webhook_new(&o, &e);
    ok(strstr(e.msg, "http://") != NULL, "the https error says why: %s", e.msg);
    sl_err n = {0};
    ct_webhook_opts none = {0};
    ok(!ct_webhook_new(&none, &n) && n.code == SL_INVALID, "no URL refused: %s", n.msg);

    static const char *good[] = {"http://example.com", "HTTP://example.com:8080",
                                 "http://[::1]:65535/a/b", "http://h/p?q=1", NULL};
    all = 1;
    for (int i = 0; good[i]; i++) {
        ct_webhook_opts g = {.url = good[i]};
        sl_err ge = {0};
        ct_webhook *w = ct_webhook_new(&g, &ge);
        if (!w) {
            all = 0;
            printf("# %s refused: %s\n", good[i], ge.msg);
        }
        ct_webhook_free(w);
    }
    ok(all, "good URLs accepted (no port, upper-case scheme, IPv6 with port, query)");
    ct_webhook_free(NULL);
    ok(1, "ct_webhook_free(NULL) is fine");
}

int main(void)
{
    test_urls();
    test_delivery();
    test_retry_500();
    test_timeout_then_retry();
    test_unreachable();
    test_overflow();
    test_free_during_backoff();
    test_ipv6();
    return done_testing();
}
