/* ct_haproxy: one command per connection to HAProxy's stats socket (see
 * haproxy.h). HAProxy answers a successful "set"/"shutdown" with an empty
 * line and anything else with text, so a non-empty answer is an error. */
#include "haproxy.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define HX_MAX_ANSWER (4u << 20)
#define HX_NAME_MAX 63

/* srv_admin_state bits (HAProxy's enum srv_admin): FMAINT 0x01, IMAINT
 * 0x02 and RMAINT 0x20 put a server in maintenance; FDRAIN 0x08 and
 * IDRAIN 0x10 drain it. CMAINT 0x04 only records the "disabled" keyword
 * and stays set after "set server ... state ready", so it is ignored. */
#define HX_ADM_MAINT 0x23
#define HX_ADM_DRAIN 0x18

struct ct_haproxy {
    char *socket;
    int timeout_ms;
    int is_unix;
    char host[256], port[16]; /* when not is_unix */
};

ct_haproxy *ct_haproxy_new(const char *socket, int timeout_ms, sl_err *err)
{
    if (!socket || !*socket)
        return sl_err_setc(err, SL_INVALID, "HAProxy socket is empty"), NULL;
    if (timeout_ms <= 0)
        return sl_err_setc(err, SL_INVALID, "HAProxy timeout must be > 0 ms, not %d", timeout_ms),
               NULL;
    ct_haproxy *h = calloc(1, sizeof *h);
    if (!h || !(h->socket = strdup(socket))) {
        free(h);
        return sl_err_setc(err, SL_INTERNAL, "out of memory"), NULL;
    }
    h->timeout_ms = timeout_ms;
    /* A path has a '/' or no ':'; anything else is HOST:PORT ([v6]:PORT). */
    const char *colon = strrchr(socket, ':');
    h->is_unix = strchr(socket, '/') != NULL || colon == NULL;
    if (h->is_unix) {
        if (strlen(socket) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
            ct_haproxy_free(h);
            return sl_err_setc(err, SL_INVALID, "HAProxy socket path is too long: %s", socket),
                   NULL;
        }
        return h;
    }
    const char *host = socket;
    size_t hl = (size_t)(colon - socket);
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']')
        host++, hl -= 2;
    size_t pl = strlen(colon + 1);
    if (hl == 0 || hl >= sizeof h->host || pl == 0 || pl >= sizeof h->port) {
        ct_haproxy_free(h);
        return sl_err_setc(err, SL_INVALID, "HAProxy socket \"%s\" is neither a path nor HOST:PORT",
                           socket),
               NULL;
    }
    memcpy(h->host, host, hl);
    memcpy(h->port, colon + 1, pl);
    return h;
}

void ct_haproxy_free(ct_haproxy *h)
{
    if (!h)
        return;
    free(h->socket);
    free(h);
}

static int ms_left(int64_t deadline)
{
    int64_t left = deadline - sl_now_ms();
    return left > 0 ? (int)left : 0;
}

static int timed_out(ct_haproxy *h, sl_err *err)
{
    return sl_err_setc(err, SL_INTERNAL, "HAProxy at %s did not answer within %d ms", h->socket,
                       h->timeout_ms);
}

/* Waits for events on fd until the deadline: 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, ms_left(deadline));
        if (r < 0 && errno == EINTR)
            continue;
        return r;
    }
}

/* A non-blocking connect to one address, finished by the deadline. Returns
 * the fd, -1 with errno set, or -2 on timeout. */
static int connect_addr(const struct sockaddr *sa, socklen_t len, int64_t deadline)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, sa, len) == 0)
        return fd;
    if (errno != EINPROGRESS && errno != EAGAIN) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    int r = wait_fd(fd, POLLOUT, deadline);
    if (r <= 0) {
        int e = errno;
        close(fd);
        errno = e;
        return r == 0 ? -2 : -1;
    }
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0) {
        close(fd);
        errno = soerr ? soerr : EIO;
        return -1;
    }
    return fd;
}

static int hx_connect(ct_haproxy *h, int64_t deadline, sl_err *err)
{
    int fd;
    if (h->is_unix) {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        memcpy(sun.sun_path, h->socket, strlen(h->socket) + 1);
        fd = connect_addr((struct sockaddr *)&sun, sizeof sun, deadline);
    } else {
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
        int g = getaddrinfo(h->host, h->port, &hints, &ai);
        if (g != 0)
            return sl_err_setc(err, SL_INVALID, "HAProxy socket %s: %s", h->socket,
                               gai_strerror(g));
        fd = -1;
        errno = ECONNREFUSED;
        for (struct addrinfo *a = ai; a && fd == -1; a = a->ai_next)
            fd = connect_addr(a->ai_addr, a->ai_addrlen, deadline);
        freeaddrinfo(ai);
    }
    if (fd == -2)
        return timed_out(h, err);
    if (fd < 0)
        return sl_err_setc(err, SL_INTERNAL, "cannot connect to HAProxy at %s: %s", h->socket,
                           strerror(errno));
    return fd;
}

/* Sends cmd and reads HAProxy's whole answer into out (NUL-terminated,
 * len not counting the NUL), all within timeout_ms. */
static int hx_command(ct_haproxy *h, const char *cmd, sl_buf *out, sl_err *err)
{
    int64_t deadline = sl_now_ms() + h->timeout_ms;
    sl_buf_reset(out);
    int fd = hx_connect(h, deadline, err);
    if (fd < 0)
        return -1;
    char line[256];
    int n = snprintf(line, sizeof line, "%s\n", cmd);
    if (n < 0 || (size_t)n >= sizeof line) {
        close(fd);
        return sl_err_setc(err, SL_INVALID, "HAProxy command too long: %.60s", cmd);
    }
    size_t off = 0;
    while (off < (size_t)n) {
        ssize_t w = send(fd, line + off, (size_t)n - off, MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int r = wait_fd(fd, POLLOUT, deadline);
            if (r > 0)
                continue;
            close(fd);
            return r == 0 ? timed_out(h, err)
                          : sl_err_setc(err, SL_INTERNAL, "HAProxy at %s: %s", h->socket,
                                        strerror(errno));
        }
        int e = errno;
        close(fd);
        return sl_err_setc(err, SL_INTERNAL, "sending to HAProxy at %s: %s", h->socket,
                           strerror(e));
    }
    for (;;) {
        if (sl_buf_reserve(out, 65536) != 0) {
            close(fd);
            return sl_err_setc(err, SL_INTERNAL, "out of memory");
        }
        ssize_t r = recv(fd, out->p + out->len, out->cap - out->len - 1, 0);
        if (r == 0)
            break;
        if (r > 0) {
            out->len += (size_t)r;
            if (out->len > HX_MAX_ANSWER) {
                close(fd);
                return sl_err_setc(err, SL_INTERNAL,
                                   "HAProxy at %s answered \"%s\" with more than 4 MiB", h->socket,
                                   cmd);
            }
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int p = wait_fd(fd, POLLIN, deadline);
            if (p > 0)
                continue;
            close(fd);
            return p == 0 ? timed_out(h, err)
                          : sl_err_setc(err, SL_INTERNAL, "HAProxy at %s: %s", h->socket,
                                        strerror(errno));
        }
        int e = errno;
        close(fd);
        return sl_err_setc(err, SL_INTERNAL, "reading HAProxy's answer at %s: %s", h->socket,
                           strerror(e));
    }
    close(fd);
    out->p[out->len] = '\0';
    return 0;
}

/* The answer's first non-blank line, trimmed, printable, at most 200
 * characters: what an error message quotes. */
static void first_line(const sl_buf *b, char *dst, size_t cap)
{
    const char *s = b->len ? (const char *)b->p : "";
    while (*s == '\n' || *s == '\r' || *s == ' ' || *s == '\t')
        s++;
    size_t n = 0;
    while (s[n] && s[n] != '\n' && s[n] != '\r' && n < 200 && n + 1 < cap)
        n++;
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    for (size_t i = 0; i < n; i++)
        dst[i] = (unsigned char)s[i] < 0x20 || (unsigned char)s[i] == 0x7f ? '?' : s[i];
    dst[n] = '\0';
}

static int refused(const char *cmd, const sl_buf *ans, sl_err *err)
{
    char text[256];
    first_line(ans, text, sizeof text);
    int code = strstr(text, "No such server") || strstr(text, "No such backend") ||
                       strstr(text, "No such proxy") || strstr(text, "Can't find backend")
                   ? SL_INVALID
                   : SL_INTERNAL;
    if (!*text)
        return sl_err_setc(err, code, "HAProxy gave an empty answer to \"%s\"", cmd);
    return sl_err_setc(err, code, "HAProxy refused \"%s\": %s", cmd, text);
}

static int is_blank(const sl_buf *b)
{
    for (size_t i = 0; i < b->len; i++)
        if (b->p[i] != '\n' && b->p[i] != '\r' && b->p[i] != ' ' && b->p[i] != '\t')
            return 0;
    return 1;
}

/* A command whose success is an empty answer. */
static int hx_set(ct_haproxy *h, const char *cmd, sl_err *err)
{
    sl_buf ans = {0};
    int rc = hx_command(h, cmd, &ans, err);
    if (rc == 0 && !is_blank(&ans))
        rc = refused(cmd, &ans, err);
    sl_buf_free(&ans);
    return rc;
}

/* Names go into a command line: nothing that could end or split it. */
static int check_name(const char *what, const char *name, sl_err *err)
{
    size_t n = name ? strlen(name) : 0;
    int okay = n > 0 && n <= HX_NAME_MAX;
    for (size_t i = 0; okay && i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        okay = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '.' || c == ':' || c == '-';
    }
    if (okay)
        return 0;
    char shown[HX_NAME_MAX + 1];
    size_t k = 0;
    for (; name && name[k] && k < HX_NAME_MAX; k++)
        shown[k] = (unsigned char)name[k] < 0x20 || (unsigned char)name[k] == 0x7f ? '?' : name[k];
    shown[k] = '\0';
    return sl_err_setc(err, SL_INVALID,
                       "HAProxy %s name \"%s\" must be 1-%d characters of [A-Za-z0-9_.:-]", what,
                       shown, HX_NAME_MAX);
}

static int check_pair(const char *backend, const char *server, sl_err *err)
{
    if (check_name("backend", backend, err) != 0 || check_name("server", server, err) != 0)
        return -1;
    return 0;
}

int ct_haproxy_set_weight(ct_haproxy *h, const char *backend, const char *server, int weight,
                          sl_err *err)
{
    if (check_pair(backend, server, err) != 0)
        return -1;
    if (weight < 0 || weight > 256)
        return sl_err_setc(err, SL_INVALID, "HAProxy weight must be 0..256, not %d", weight);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "set server %s/%s weight %d", backend, server, weight);
    return hx_set(h, cmd, err);
}

int ct_haproxy_get_weight(ct_haproxy *h, const char *backend, const char *server, int *weight,
                          sl_err *err)
{
    if (check_pair(backend, server, err) != 0)
        return -1;
    char cmd[200];
    snprintf(cmd, sizeof cmd, "get weight %s/%s", backend, server);
    sl_buf ans = {0};
    if (hx_command(h, cmd, &ans, err) != 0)
        return sl_buf_free(&ans), -1;
    /* "5 (initial 1)" */
    const char *s = ans.len ? (const char *)ans.p : "";
    char *end;
    errno = 0;
    long w = strtol(s, &end, 10);
    int rc = 0;
    if (end == s || errno || w < 0 || w > 256 || strncmp(end, " (initial ", 10) != 0)
        rc = refused(cmd, &ans, err);
    else
        *weight = (int)w;
    sl_buf_free(&ans);
    return rc;
}

int ct_haproxy_set_state(ct_haproxy *h, const char *backend, const char *server, const char *state,
                         sl_err *err)
{
    if (check_pair(backend, server, err) != 0)
        return -1;
    if (!state || (strcmp(state, "ready") && strcmp(state, "drain") && strcmp(state, "maint")))
        return sl_err_setc(err, SL_INVALID, "HAProxy server state must be ready, drain or maint");
    char cmd[200];
    snprintf(cmd, sizeof cmd, "set server %s/%s state %s", backend, server, state);
    return hx_set(h, cmd, err);
}

/* Splits line (modified in place) at any of seps into at most max fields. */
static int split(char *line, const char *seps, char **f, int max)
{
    int n = 0;
    if (strchr(seps, ',')) { /* CSV: empty fields count */
        for (char *p = line; n < max;) {
            f[n++] = p;
            char *c = strchr(p, ',');
            if (!c)
                break;
            *c = '\0';
            p = c + 1;
        }
        return n;
    }
    char *save = NULL;
    for (char *t = strtok_r(line, seps, &save); t && n < max; t = strtok_r(NULL, seps, &save))
        f[n++] = t;
    return n;
}

static int column(char **f, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(f[i], name))
            return i;
    return -1;
}

#define HX_MAX_COLS 256 /* show stat has about 100 */

/* Finds the row of a table HAProxy prints with a "# name name ..." header
 * (show servers state: spaces; show stat: CSV) where column k1 is v1 and
 * k2 is v2, and copies column want into val. Returns 0, or 1 when no row
 * matches, -1 when the header lacks a column. */
static int table_lookup(sl_buf *ans, const char *seps, const char *k1, const char *v1,
                        const char *k2, const char *v2, const char *want, char *val, size_t cap)
{
    char *hdr[HX_MAX_COLS], *row[HX_MAX_COLS];
    int nh = 0, i1 = -1, i2 = -1, iw = -1;
    char *save = NULL;
    for (char *line = strtok_r((char *)ans->p, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        size_t len = strlen(line);
        if (len && line[len - 1] == '\r')
            line[len - 1] = '\0';
        if (line[0] == '#') {
            line++;
            while (*line == ' ')
                line++;
            nh = split(line, seps, hdr, HX_MAX_COLS);
            i1 = column(hdr, nh, k1), i2 = column(hdr, nh, k2), iw = column(hdr, nh, want);
            if (i1 < 0 || i2 < 0 || iw < 0)
                return -1;
            continue;
        }
        if (nh == 0)
            continue; /* the version line before the header */
        int nr = split(line, seps, row, HX_MAX_COLS);
        if (nr > i1 && nr > i2 && nr > iw && !strcmp(row[i1], v1) && !strcmp(row[i2], v2)) {
            snprintf(val, cap, "%s", row[iw]);
            return 0;
        }
    }
    return nh == 0 ? -1 : 1;
}

/* Runs cmd and looks up one value of BACKEND/SERVER's row (a frontend's
 * row when server is "FRONTEND"). */
static int hx_lookup(ct_haproxy *h, const char *cmd, const char *seps, const char *kb,
                     const char *ks, const char *backend, const char *server, const char *want,
                     char *val, size_t cap, sl_err *err)
{
    sl_buf ans = {0};
    if (hx_command(h, cmd, &ans, err) != 0)
        return sl_buf_free(&ans), -1;
    sl_buf copy = {0};
    if (sl_buf_append(&copy, ans.p, ans.len) != 0 || sl_buf_putc(&copy, 0) != 0) {
        sl_buf_free(&ans), sl_buf_free(&copy);
        return sl_err_setc(err, SL_INTERNAL, "out of memory");
    }
    int r = table_lookup(&copy, seps, kb, backend, ks, server, want, val, cap);
    sl_buf_free(&copy);
    int rc = 0;
    if (r < 0)
        rc = refused(cmd, &ans, err);
    else if (r > 0 && !strcmp(server, "FRONTEND"))
        rc = sl_err_setc(err, SL_INVALID, "HAProxy has no frontend %s (\"%s\")", backend, cmd);
    else if (r > 0)
        rc = sl_err_setc(err, SL_INVALID, "HAProxy has no server %s/%s (\"%s\")", backend, server,
                         cmd);
    sl_buf_free(&ans);
    return rc;
}

int ct_haproxy_get_state(ct_haproxy *h, const char *backend, const char *server, char *state,
                         size_t len, sl_err *err)
{
    if (check_pair(backend, server, err) != 0)
        return -1;
    if (len < 8)
        return sl_err_setc(err, SL_INVALID, "state buffer shorter than 8 bytes");
    char cmd[200], val[32], *end;
    snprintf(cmd, sizeof cmd, "show servers state %s", backend);
    if (hx_lookup(h, cmd, " ", "be_name", "srv_name", backend, server, "srv_admin_state", val,
                  sizeof val, err) != 0)
        return -1;
    long adm = strtol(val, &end, 10);
    if (end == val || *end || adm < 0)
        return sl_err_setc(err, SL_INTERNAL, "HAProxy gave srv_admin_state \"%s\" for %s/%s", val,
                           backend, server);
    snprintf(state, len, "%s",
             adm & HX_ADM_MAINT   ? "maint"
             : adm & HX_ADM_DRAIN ? "drain"
                                  : "ready");
    return 0;
}

int ct_haproxy_shutdown_sessions(ct_haproxy *h, const char *backend, const char *server,
                                 sl_err *err)
{
    if (check_pair(backend, server, err) != 0)
        return -1;
    char cmd[200];
    snprintf(cmd, sizeof cmd, "shutdown sessions server %s/%s", backend, server);
    return hx_set(h, cmd, err);
}

int ct_haproxy_sessions(ct_haproxy *h, const char *backend, const char *server, long *out,
                        sl_err *err)
{
    if (check_pair(backend, server, err) != 0)
        return -1;
    char cmd[200], val[32], *end;
    /* All proxies (-1), servers only (4), every server (-1): HAProxy 2.6
     * accepts a proxy name here but then prints no rows. */
    snprintf(cmd, sizeof cmd, "show stat -1 4 -1");
    if (hx_lookup(h, cmd, ",", "pxname", "svname", backend, server, "scur", val, sizeof val, err) !=
        0)
        return -1;
    long n = strtol(val, &end, 10);
    if (end == val || *end || n < 0)
        return sl_err_setc(err, SL_INTERNAL, "HAProxy gave scur \"%s\" for %s/%s", val, backend,
                           server);
    *out = n;
    return 0;
}

static int expect(ct_haproxy *h, const char *backend, const char *server, int weight,
                  const char *state, sl_err *err)
{
    int w = -1;
    if (ct_haproxy_get_weight(h, backend, server, &w, err) != 0)
        return -1;
    if (w != weight)
        return sl_err_setc(err, SL_INTERNAL, "HAProxy reports weight %d for %s/%s, not %d", w,
                           backend, server, weight);
    if (!state)
        return 0;
    char st[16];
    if (ct_haproxy_get_state(h, backend, server, st, sizeof st, err) != 0)
        return -1;
    if (strcmp(st, state))
        return sl_err_setc(err, SL_INTERNAL, "HAProxy reports state %s for %s/%s, not %s", st,
                           backend, server, state);
    return 0;
}

int ct_haproxy_route_reads(ct_haproxy *h, const char *backend, const char *source,
                           const char *target, int target_percent, int shut_idle_side, sl_err *err)
{
    if (check_name("backend", backend, err) || check_name("server", source, err) ||
        check_name("server", target, err))
        return -1;
    if (target_percent < 0 || target_percent > 100)
        return sl_err_setc(err, SL_INVALID, "read percent must be 0..100, not %d", target_percent);
    if (!strcmp(source, target))
        return sl_err_setc(err, SL_INVALID, "source and target are both %s/%s", backend, source);
    const char *srv[2] = {source, target};
    int w[2] = {100 - target_percent, target_percent};
    /* The side that gains weight first, so the backend never has none. */
    int first = w[1] > 0 ? 1 : 0;
    for (int k = 0; k < 2; k++) {
        int i = k == 0 ? first : 1 - first;
        if (ct_haproxy_set_weight(h, backend, srv[i], w[i], err) != 0)
            return -1;
        /* A server left in maint (or drain) would take no traffic. */
        if (w[i] > 0 && ct_haproxy_set_state(h, backend, srv[i], "ready", err) != 0)
            return -1;
    }
    if (shut_idle_side) {
        for (int i = 0; i < 2; i++)
            if (w[i] == 0 && ct_haproxy_shutdown_sessions(h, backend, srv[i], err) != 0)
                return -1;
    }
    for (int i = 0; i < 2; i++)
        if (expect(h, backend, srv[i], w[i], w[i] > 0 ? "ready" : NULL, err) != 0)
            return -1;
    return 0;
}

int ct_haproxy_route_writes(ct_haproxy *h, const char *backend, const char *source,
                            const char *target, int to_target, sl_err *err)
{
    if (check_name("backend", backend, err) || check_name("server", source, err) ||
        check_name("server", target, err))
        return -1;
    if (!strcmp(source, target))
        return sl_err_setc(err, SL_INVALID, "source and target are both %s/%s", backend, source);
    const char *on = to_target ? target : source, *off = to_target ? source : target;
    if (ct_haproxy_set_weight(h, backend, on, 1, err) != 0 ||
        ct_haproxy_set_state(h, backend, on, "ready", err) != 0 ||
        ct_haproxy_set_weight(h, backend, off, 0, err) != 0 ||
        ct_haproxy_set_state(h, backend, off, "maint", err) != 0 ||
        ct_haproxy_shutdown_sessions(h, backend, off, err) != 0)
        return -1;
    if (expect(h, backend, on, 1, "ready", err) != 0 ||
        expect(h, backend, off, 0, "maint", err) != 0)
        return -1;
    return 0;
}

/* One server as the traffic sees it: 0 as wanted, 1 not (err says how),
 * -1 HAProxy not asked. */
static int observe(ct_haproxy *h, const char *backend, const char *server, int weight, sl_err *err)
{
    int w = -1;
    char st[16] = "";
    if (ct_haproxy_get_weight(h, backend, server, &w, err) != 0 ||
        (weight > 0 && ct_haproxy_get_state(h, backend, server, st, sizeof st, err) != 0))
        return -1;
    if (w != weight)
        return sl_err_setc(err, SL_INVALID, "%s/%s has weight %d, not %d", backend, server, w,
                           weight),
               1;
    if (weight > 0 && strcmp(st, "ready"))
        return sl_err_setc(err, SL_INVALID, "%s/%s is in state %s, not ready", backend, server, st),
               1;
    return 0;
}

int ct_haproxy_check_route(ct_haproxy *h, const char *read_backend, const char *write_backend,
                           const char *source, const char *target, int target_percent,
                           int to_target, sl_err *err)
{
    if (check_name("backend", read_backend, err) ||
        (write_backend && check_name("backend", write_backend, err)) ||
        check_name("server", source, err) || check_name("server", target, err))
        return -1;
    if (target_percent < 0 || target_percent > 100)
        return sl_err_setc(err, SL_INVALID, "read percent must be 0..100, not %d", target_percent);
    int r;
    if ((r = observe(h, read_backend, source, 100 - target_percent, err)) != 0 ||
        (r = observe(h, read_backend, target, target_percent, err)) != 0 ||
        (write_backend && (r = observe(h, write_backend, source, to_target ? 0 : 1, err)) != 0) ||
        (write_backend && (r = observe(h, write_backend, target, to_target ? 1 : 0, err)) != 0))
        return r;
    return 0;
}

/* A frontend's maxconn: slim of its FRONTEND row. */
static int frontend_maxconn(ct_haproxy *h, const char *frontend, long *out, sl_err *err)
{
    char val[32], *end;
    /* Frontends only (1); by name prints nothing in 2.6, as for servers. */
    if (hx_lookup(h, "show stat -1 1 -1", ",", "pxname", "svname", frontend, "FRONTEND", "slim",
                  val, sizeof val, err) != 0)
        return -1;
    errno = 0;
    long n = strtol(val, &end, 10);
    if (end == val || *end || errno || n < 0)
        return sl_err_setc(err, SL_INTERNAL, "HAProxy gave slim \"%s\" for frontend %s", val,
                           frontend);
    *out = n;
    return 0;
}

static int set_frontend_maxconn(ct_haproxy *h, const char *frontend, long maxconn, sl_err *err)
{
    char cmd[200];
    snprintf(cmd, sizeof cmd, "set maxconn frontend %s %ld", frontend, maxconn);
    if (hx_set(h, cmd, err) != 0)
        return -1;
    long now = -1;
    if (frontend_maxconn(h, frontend, &now, err) != 0)
        return -1;
    if (now != maxconn)
        return sl_err_setc(err, SL_INTERNAL, "HAProxy reports maxconn %ld for frontend %s, not %ld",
                           now, frontend, maxconn);
    return 0;
}

int ct_haproxy_hold_frontend(ct_haproxy *h, const char *frontend, long *saved_maxconn, sl_err *err)
{
    if (check_name("frontend", frontend, err) != 0)
        return -1;
    long cur = -1;
    if (frontend_maxconn(h, frontend, &cur, err) != 0)
        return -1;
    *saved_maxconn = cur;
    /* Holding twice would save 0 and lose the value to restore. */
    if (cur == 0)
        return sl_err_setc(err, SL_INVALID, "HAProxy frontend %s is already held (maxconn 0)",
                           frontend);
    return set_frontend_maxconn(h, frontend, 0, err);
}

int ct_haproxy_release_frontend(ct_haproxy *h, const char *frontend, long maxconn, sl_err *err)
{
    if (check_name("frontend", frontend, err) != 0)
        return -1;
    if (maxconn < 1 || maxconn > 1000000000)
        return sl_err_setc(err, SL_INVALID,
                           "HAProxy frontend maxconn must be 1..1000000000, not %ld", maxconn);
    return set_frontend_maxconn(h, frontend, maxconn, err);
}

int ct_haproxy_wait_drained(ct_haproxy *h, const char *backend, const char *server, int timeout_ms,
                            long *left, sl_err *err)
{
    if (check_pair(backend, server, err) != 0)
        return -1;
    if (timeout_ms < 0)
        return sl_err_setc(err, SL_INVALID, "drain timeout must be >= 0 ms, not %d", timeout_ms);
    int64_t deadline = sl_now_ms() + timeout_ms;
    for (;;) {
        long n = -1;
        if (ct_haproxy_sessions(h, backend, server, &n, err) != 0)
            return -1;
        *left = n;
        if (n == 0)
            return 0;
        int wait = ms_left(deadline);
        if (wait == 0)
            return 1;
        struct timespec ts = {0, (long)(wait < 20 ? wait : 20) * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
    }
}
