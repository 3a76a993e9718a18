/* The drift history as Prometheus metrics (metrics.h). */
#include "metrics.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct co_metrics {
    struct MHD_Daemon *d;
    co_store *s; /* used by the daemon's one thread only */
    int port;
};

/* A label value as the text format wants it: \ " and newline escaped. */
static void label(sl_buf *b, const char *v)
{
    for (const char *p = v; *p; p++) {
        if (*p == '\\' || *p == '"')
            sl_buf_printf(b, "\\%c", *p);
        else if (*p == '\n')
            sl_buf_printf(b, "\\n");
        else
            sl_buf_printf(b, "%c", *p);
    }
}

typedef struct rows {
    co_drift_row *v;
    size_t n, cap;
    int oom;
} rows;

static int take(void *ctx, const co_drift_row *r)
{
    rows *x = ctx;
    if (x->n == x->cap) {
        size_t cap = x->cap ? x->cap * 2 : 16;
        co_drift_row *v = realloc(x->v, cap * sizeof *v);
        if (!v)
            return x->oom = 1;
        x->v = v;
        x->cap = cap;
    }
    x->v[x->n++] = *r;
    return 0;
}

/* One family: HELP and TYPE, then a sample per row (per class when cls). */
static void family(sl_buf *b, const rows *x, const char *name, const char *help, int what)
{
    sl_buf_printf(b, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
    static const char *const cls[] = {"missing", "extra", "changed", "schema"};
    static const char *const qs[] = {"p50", "p99", "max"};
    for (size_t i = 0; i < x->n; i++) {
        const co_drift_row *r = &x->v[i];
        int n = what == 1 ? 4 : what == 2 ? 3 : 1;
        for (int k = 0; k < n; k++) {
            double v;
            if (what == 0)
                v = (double)r->rows_checked;
            else if (what == 1)
                v = (double)(k == 0   ? r->missing
                             : k == 1 ? r->extra
                             : k == 2 ? r->changed
                                      : r->schema);
            else if (what == 2) {
                v = k == 0 ? r->lat_p50 : k == 1 ? r->lat_p99 : r->lat_max;
                if (v < 0)
                    continue; /* nothing to time: no sample, rather than a false 0 */
            } else if (what == 3)
                v = (double)r->transient;
            else
                v = r->at;
            sl_buf_printf(b, "%s{table=\"", name);
            label(b, r->table);
            sl_buf_printf(b, "\",kind=\"");
            label(b, r->kind);
            if (what == 1)
                sl_buf_printf(b, "\",class=\"%s", cls[k]);
            if (what == 2)
                sl_buf_printf(b, "\",stat=\"%s", qs[k]);
            sl_buf_printf(b, "\"} %.17g\n", v);
        }
    }
}

char *co_metrics_text(co_store *s, sl_err *err)
{
    rows x = {0};
    if (co_store_drift_latest(s, take, &x, err) != 0) {
        if (x.oom)
            sl_err_set(err, "out of memory reading the drift history");
        free(x.v);
        return NULL;
    }
    sl_buf b = {0};
    family(&b, &x, "sluice_drift_rows_checked",
           "Rows checked by the newest audit, scrub cycle or "
           "change-verification window.",
           0);
    family(&b, &x, "sluice_drift_divergent_rows",
           "Confirmed divergent rows (schema: differences) found by it, by class.", 1);
    family(&b, &x, "sluice_drift_detection_latency_seconds",
           "Seconds from the start of the evidence to each divergence's confirmation.", 2);
    family(&b, &x, "sluice_drift_transient_rows", "Differences gone at re-check (in flight).", 3);
    family(&b, &x, "sluice_drift_last_timestamp_seconds", "When it was recorded (Unix time).", 4);
    free(x.v);
    if (!b.p) {
        sl_buf_free(&b);
        return sl_err_set(err, "out of memory"), NULL;
    }
    char *out = strndup((const char *)b.p, b.len);
    sl_buf_free(&b);
    if (!out)
        sl_err_set(err, "out of memory");
    return out;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, char *text,
                             const char *type)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *conn, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_len, void **state)
{
    co_metrics *m = cls;
    (void)version;
    (void)upload;
    if (!*state) { /* the headers: wait for the body (ignored) */
        *state = m;
        return MHD_YES;
    }
    *upload_len = 0;
    if (strcmp(method, "GET") && strcmp(method, "HEAD"))
        return reply(conn, 405, strdup("only GET\n"), "text/plain");
    if (strcmp(url, "/metrics"))
        return reply(conn, 404, strdup("not found: the metrics are at /metrics\n"), "text/plain");
    sl_err e = {0};
    char *text = co_metrics_text(m->s, &e);
    if (!text) {
        char *msg = malloc(600);
        if (msg)
            snprintf(msg, 600, "%s\n", e.msg);
        return msg ? reply(conn, 500, msg, "text/plain") : MHD_NO;
    }
    return reply(conn, 200, text, "text/plain; version=0.0.4");
}

co_metrics *co_metrics_start(const char *state, const char *host, int port, sl_err *err)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (port < 0 || port > 65535 || inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return sl_err_setc(err, SL_INVALID, "--metrics: \"%s:%d\" is not an IPv4 address and port",
                           host, port),
               NULL;
    co_metrics *m = calloc(1, sizeof *m);
    if (!m)
        return sl_err_set(err, "out of memory"), NULL;
    if (!(m->s = co_store_open(state, err))) {
        free(m);
        return NULL;
    }
    m->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, (uint16_t)port, NULL, NULL, handler, m,
                            MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_CONNECTION_LIMIT, (unsigned)64,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30, MHD_OPTION_END);
    if (!m->d) {
        co_store_close(m->s);
        free(m);
        return sl_err_setc(err, SL_INVALID,
                           "--metrics: cannot listen on %s:%d (in use, or not an address of this "
                           "machine)",
                           host, port),
               NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(m->d, MHD_DAEMON_INFO_BIND_PORT);
    m->port = di ? di->port : port;
    return m;
}

int co_metrics_port(const co_metrics *m)
{
    return m->port;
}

void co_metrics_stop(co_metrics *m)
{
    if (!m)
        return;
    MHD_stop_daemon(m->d);
    co_store_close(m->s);
    free(m);
}
