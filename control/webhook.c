/* ct_webhook: a queue of JSON bodies and one thread that POSTs them.
 *
 * Invariants (under mu): the queue holds only bodies not yet tried; the
 * one being sent is owned by the thread alone. qlen <= max_queue. Once
 * stopping is set, nothing more is tried: the thread finishes the try in
 * progress, counts what is left as dropped and returns.
 */
#include "webhook.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BACKOFF_FIRST_MS 500
#define BACKOFF_MAX_MS 30000

struct wh_item {
    struct wh_item *next;
    size_t len;
    char body[];
};

struct ct_webhook {
    char *host, *port, *path, *hostport; /* hostport: the Host header */
    int timeout_ms, max_tries;
    size_t max_queue;
    void (*log)(void *ctx, const char *line);
    void *log_ctx;

    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC: a backoff is not bent by clock steps */
    pthread_t thread;
    struct wh_item *head, *tail;
    size_t qlen;
    uint64_t unlogged_drops; /* dropped by post (caller's thread), logged by ours */
    int stopping;
    ct_webhook_stats st;
};

/* Splits http://host[:port][/path] into w's fields; 0 or -1 with err. */
static int parse_url(ct_webhook *w, const char *url, sl_err *err)
{
    static const char scheme[] = "http://";
    if (!url)
        return sl_err_setc(err, SL_INVALID, "webhook URL missing");
    for (const char *c = url; *c; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f)
            return sl_err_setc(err, SL_INVALID, "webhook URL has a space or control character");
    if (strncasecmp(url, scheme, sizeof scheme - 1) != 0)
        return sl_err_setc(err, SL_INVALID,
                           "webhook URL \"%.200s\" is not http:// (https is not "
                           "supported; put a TLS proxy in front)",
                           url);
    const char *h = url + sizeof scheme - 1, *hend, *p;
    int v6 = 0;
    if (*h == '[') {
        hend = strchr(h, ']');
        if (!hend)
            return sl_err_setc(err, SL_INVALID, "webhook URL \"%.200s\": unclosed [", url);
        h++;
        p = hend + 1;
        v6 = 1;
    } else {
        hend = h + strcspn(h, ":/?#");
        p = hend;
    }
    if (hend == h)
        return sl_err_setc(err, SL_INVALID, "webhook URL \"%.200s\" has no host", url);
    long port = 80;
    if (*p == ':') {
        char *end;
        p++;
        if (*p < '0' || *p > '9')
            return sl_err_setc(err, SL_INVALID, "webhook URL \"%.200s\": port is not a number",
                               url);
        errno = 0;
        port = strtol(p, &end, 10);
        if (errno || port < 1 || port > 65535 || (*end && *end != '/'))
            return sl_err_setc(err, SL_INVALID,
                               "webhook URL \"%.200s\": port must be a number from 1 to 65535",
                               url);
        p = end;
    }
    if (*p && *p != '/')
        return sl_err_setc(err, SL_INVALID, "webhook URL \"%.200s\": expected / after the host",
                           url);
    size_t hl = (size_t)(hend - h);
    char portbuf[8];
    snprintf(portbuf, sizeof portbuf, "%ld", port);
    w->host = strndup(h, hl);
    w->port = strdup(portbuf);
    w->path = strdup(*p ? p : "/");
    w->hostport = malloc(hl + 16);
    if (!w->host || !w->port || !w->path || !w->hostport)
        return sl_err_setc(err, SL_INTERNAL, "out of memory");
    snprintf(w->hostport, hl + 16, "%s%s%s:%ld", v6 ? "[" : "", w->host, v6 ? "]" : "", port);
    return 0;
}

static void wh_log(ct_webhook *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void wh_log(ct_webhook *w, const char *fmt, ...)
{
    if (!w->log)
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    w->log(w->log_ctx, line);
}

/* Waits for fd to become ready for ev before the monotonic deadline (ms);
 * 0, or -1 on timeout/error with why set. */
static int wait_fd(int fd, short ev, int64_t deadline, const char **why)
{
    for (;;) {
        int64_t left = deadline - sl_now_ms();
        if (left <= 0) {
            *why = "timed out";
            return -1;
        }
        struct pollfd pf = {.fd = fd, .events = ev};
        int n = poll(&pf, 1, (int)left);
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR) {
            *why = strerror(errno);
            return -1;
        }
    }
}

/* A non-blocking socket connected to one of host:port's addresses before
 * the deadline, or -1 with why set. */
static int dial(const ct_webhook *w, int64_t deadline, const char **why, char *whybuf, size_t wn)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res, *ai;
    int rc = getaddrinfo(w->host, w->port, &hints, &res);
    if (rc != 0) {
        snprintf(whybuf, wn, "cannot resolve %s: %s", w->host, gai_strerror(rc));
        *why = whybuf;
        return -1;
    }
    int fd = -1;
    *why = "no address";
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            *why = strerror(errno);
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        if (errno != EINPROGRESS) {
            *why = strerror(errno);
        } else if (wait_fd(fd, POLLOUT, deadline, why) == 0) {
            int soerr = 0;
            socklen_t sl = sizeof soerr;
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
            if (soerr == 0)
                break;
            *why = strerror(soerr);
        }
        close(fd);
        fd = -1;
        if (sl_now_ms() >= deadline)
            break;
    }
    freeaddrinfo(res);
    if (fd < 0 && *why != whybuf) {
        snprintf(whybuf, wn, "connecting to %s: %s", w->hostport, *why);
        *why = whybuf;
    }
    return fd;
}

/* One try: connect, send the request, read the status line. The HTTP
 * status (any), or -1 with why set for no answer at all. */
static int try_post(const ct_webhook *w, const struct wh_item *it, char *whybuf, size_t wn)
{
    int64_t deadline = sl_now_ms() + w->timeout_ms;
    const char *why = "";
    int fd = dial(w, deadline, &why, whybuf, wn), status = -1;
    if (fd < 0)
        return -1;
    char hdr[1024];
    int hl = snprintf(hdr, sizeof hdr,
                      "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\nUser-Agent: sluice\r\n\r\n",
                      w->path, w->hostport, it->len);
    if (hl < 0 || (size_t)hl >= sizeof hdr) {
        why = "URL too long for a request line";
        goto out;
    }
    const char *parts[2] = {hdr, it->body};
    size_t lens[2] = {(size_t)hl, it->len};
    for (int i = 0; i < 2; i++) {
        size_t off = 0;
        while (off < lens[i]) {
            ssize_t n = send(fd, parts[i] + off, lens[i] - off, MSG_NOSIGNAL);
            if (n > 0) {
                off += (size_t)n;
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
                why = strerror(errno);
                goto out;
            }
            if (wait_fd(fd, POLLOUT, deadline, &why) != 0)
                goto out;
        }
    }
    /* "HTTP/1.1 200 OK\r\n": 12 bytes decide it; read until the line ends. */
    char line[256];
    size_t got = 0;
    while (got < sizeof line - 1 && !memchr(line, '\n', got)) {
        ssize_t n = recv(fd, line + got, sizeof line - 1 - got, 0);
        if (n > 0) {
            got += (size_t)n;
            continue;
        }
        if (n == 0)
            break;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            why = strerror(errno);
            goto out;
        }
        if (wait_fd(fd, POLLIN, deadline, &why) != 0)
            goto out;
    }
    line[got] = 0;
    if (got >= 12 && !strncmp(line, "HTTP/1.", 7) && line[8] == ' ' && line[9] >= '1' &&
        line[9] <= '5' && line[10] >= '0' && line[10] <= '9' && line[11] >= '0' && line[11] <= '9')
        status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
    else
        why = got ? "not an HTTP response" : "connection closed without a response";
out:
    close(fd);
    if (status < 0 && why != whybuf)
        snprintf(whybuf, wn, "%s", why);
    return status;
}

/* Sleeps ms unless stopping is set first; returns stopping. Called and
 * returns with mu held. */
static int sleep_unless_stopped(ct_webhook *w, int ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    while (!w->stopping)
        if (pthread_cond_timedwait(&w->cv, &w->mu, &until) == ETIMEDOUT)
            break;
    return w->stopping;
}

static void *run(void *arg)
{
    ct_webhook *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->stopping && !w->head && !w->unlogged_drops)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->unlogged_drops) {
            uint64_t d = w->unlogged_drops;
            w->unlogged_drops = 0;
            pthread_mutex_unlock(&w->mu);
            wh_log(w, "webhook %s: queue full, dropped the %llu oldest event(s)", w->hostport,
                   (unsigned long long)d);
            pthread_mutex_lock(&w->mu);
        }
        if (w->stopping)
            break;
        struct wh_item *it = w->head;
        if (!it)
            continue;
        w->head = it->next;
        if (!w->head)
            w->tail = NULL;
        w->qlen--;

        int backoff = BACKOFF_FIRST_MS;
        for (int tries = 1;; tries++) {
            pthread_mutex_unlock(&w->mu);
            char why[256] = "";
            int status = try_post(w, it, why, sizeof why);
            pthread_mutex_lock(&w->mu);
            if (status >= 200 && status < 300) {
                w->st.delivered++;
                break;
            }
            if (status > 0)
                snprintf(why, sizeof why, "HTTP status %d", status);
            if (tries >= w->max_tries || w->stopping) {
                w->st.dropped++;
                pthread_mutex_unlock(&w->mu);
                wh_log(w, "webhook %s%s: giving up on an event after %d tr%s: %s", w->hostport,
                       w->path, tries, tries == 1 ? "y" : "ies", why);
                pthread_mutex_lock(&w->mu);
                break;
            }
            if (sleep_unless_stopped(w, backoff)) {
                w->st.dropped++;
                break;
            }
            w->st.retried++;
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
        }
        free(it);
    }
    /* stopping: what is left is dropped, counted (the stats die with w, but
     * the log says how many). */
    size_t left = w->qlen;
    while (w->head) {
        struct wh_item *n = w->head->next;
        free(w->head);
        w->head = n;
    }
    w->tail = NULL;
    w->st.dropped += left;
    w->qlen = 0;
    pthread_mutex_unlock(&w->mu);
    if (left)
        wh_log(w, "webhook %s: stopping, dropped %zu queued event(s)", w->hostport, left);
    return NULL;
}

static void free_fields(ct_webhook *w)
{
    free(w->host);
    free(w->port);
    free(w->path);
    free(w->hostport);
    free(w);
}

ct_webhook *ct_webhook_new(const ct_webhook_opts *o, sl_err *err)
{
    if (!o) {
        sl_err_setc(err, SL_INVALID, "webhook options missing");
        return NULL;
    }
    ct_webhook *w = calloc(1, sizeof *w);
    if (!w) {
        sl_err_setc(err, SL_INTERNAL, "out of memory");
        return NULL;
    }
    if (parse_url(w, o->url, err) != 0) {
        free_fields(w);
        return NULL;
    }
    w->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 5000;
    w->max_tries = o->max_tries > 0 ? o->max_tries : 8;
    w->max_queue = o->max_queue > 0 ? o->max_queue : 1000;
    w->log = o->log;
    w->log_ctx = o->log_ctx;

    pthread_condattr_t ca;
    int rc = pthread_mutex_init(&w->mu, NULL);
    if (rc == 0) {
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        rc = pthread_cond_init(&w->cv, &ca);
        pthread_condattr_destroy(&ca);
        if (rc != 0)
            pthread_mutex_destroy(&w->mu);
    }
    if (rc == 0) {
        rc = pthread_create(&w->thread, NULL, run, w);
        if (rc != 0) {
            pthread_cond_destroy(&w->cv);
            pthread_mutex_destroy(&w->mu);
        }
    }
    if (rc != 0) {
        sl_err_setc(err, SL_INTERNAL, "webhook: cannot start its thread: %s", strerror(rc));
        free_fields(w);
        return NULL;
    }
    return w;
}

void ct_webhook_free(ct_webhook *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stopping = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free_fields(w);
}

int ct_webhook_post(ct_webhook *w, const char *json, size_t len)
{
    struct wh_item *it = malloc(sizeof *it + len + 1);
    if (!it)
        return -1;
    it->next = NULL;
    it->len = len;
    if (len)
        memcpy(it->body, json, len);
    it->body[len] = 0;

    pthread_mutex_lock(&w->mu);
    struct wh_item *old = NULL;
    if (w->qlen >= w->max_queue) {
        old = w->head;
        w->head = old->next;
        if (!w->head)
            w->tail = NULL;
        w->qlen--;
        w->st.dropped++;
        w->unlogged_drops++;
    }
    if (w->tail)
        w->tail->next = it;
    else
        w->head = it;
    w->tail = it;
    w->qlen++;
    w->st.queued++;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    free(old);
    return 0;
}

void ct_webhook_stats_get(ct_webhook *w, ct_webhook_stats *out)
{
    pthread_mutex_lock(&w->mu);
    *out = w->st;
    pthread_mutex_unlock(&w->mu);
}
