/* The HTTP API (control/README.md, openapi.json) on libmicrohttpd: one
 * thread per connection, so that a long-polling reader of the routing
 * endpoint holds only its own thread. Every handler runs under ctl's lock
 * (the long poll waits on the routing condition, which releases it). */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl_impl.h"

#define MAX_BODY (1 << 20)

typedef struct req {
    sl_buf body;
    int too_big;
} req;

typedef struct reply {
    int status;
    json_t *doc; /* or text */
    char *text;
    size_t text_len;
    const char *ctype;
    const char *allow; /* 405: the methods the resource takes */
} reply;

static void err_reply(reply *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void err_reply(reply *r, int status, const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    r->status = status;
    json_decref(r->doc);
    r->doc = json_pack("{s:s, s:s}", "error", msg, "code", code);
}

static const char *sl_code_http(int code, int *status)
{
    switch (code) {
    case SL_INVALID:
        *status = 400;
        return "invalid";
    case SL_NOT_FOUND:
        *status = 404;
        return "not_found";
    case SL_BUSY:
        *status = 409;
        return "conflict";
    case SL_AUTH:
        *status = 401;
        return "unauthorized";
    default:
        *status = 500;
        return "internal";
    }
}

/* ---- auth ---------------------------------------------------------------------------- */

static int same(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = la != lb;
    for (size_t i = 0; i < la && i < lb; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

/* The caller's role ("operator", "approver"), NULL when the token is
 * missing or unknown. */
static const char *role_of(ctl *c, struct MHD_Connection *conn)
{
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    if (!h || strncmp(h, "Bearer ", 7) != 0)
        return NULL;
    const char *tok = h + 7;
    const char *role = NULL;
    for (size_t i = 0; i < c->ntokens; i++)
        if (same(c->tokens[i].token, tok))
            role = c->tokens[i].role;
    return role;
}

/* ---- bodies -------------------------------------------------------------------------- */

/* The body as a JSON object with only the allowed keys (NULL-terminated);
 * an empty body is {}. NULL after an error reply. */
static json_t *body_object(const req *q, reply *r, const char *const *allowed)
{
    if (q->body.len == 0)
        return json_object();
    json_error_t je;
    json_t *v = json_loadb((const char *)q->body.p, q->body.len, JSON_REJECT_DUPLICATES, &je);
    if (!v) {
        err_reply(r, 400, "invalid", "the body is not valid JSON: %s at line %d column %d", je.text,
                  je.line, je.column);
        return NULL;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        err_reply(r, 400, "invalid", "the body must be a JSON object");
        return NULL;
    }
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x)
    {
        int ok = 0;
        for (size_t i = 0; allowed[i]; i++)
            ok |= strcmp(allowed[i], k) == 0;
        if (!ok) {
            char list[256] = "";
            for (size_t i = 0; allowed[i]; i++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "",
                         allowed[i]);
            err_reply(r, 400, "invalid", "unknown field \"%s\"; allowed: %s", k,
                      list[0] ? list : "none (send {} or nothing)");
            json_decref(v);
            return NULL;
        }
    }
    return v;
}

/* ---- handlers -------------------------------------------------------------------------- */

static void classify_now(ctl *c, mig *g)
{
    const char *sd = ctl_dsn(c, g->m->source), *td = ctl_dsn(c, g->m->target);
    if (!sd || !td) {
        snprintf(g->cls_reason, sizeof g->cls_reason,
                 "not classified: no DSN for database \"%s\" in sluice control's --db-file",
                 sd ? g->m->target : g->m->source);
        return;
    }
    sl_err e = {0};
    ct_side_facts fs, ft;
    ct_db *s = ct_db_open(sd, 3000, &e), *t = s ? ct_db_open(td, 3000, &e) : NULL;
    if (t && ct_db_facts(s, &fs, &e) == 0 && ct_db_facts(t, &ft, &e) == 0)
        mig_classify(g, &fs, &ft);
    else
        snprintf(g->cls_reason, sizeof g->cls_reason, "not classified yet: %s", e.msg);
    ct_db_free(s);
    ct_db_free(t);
}

static void create(ctl *c, struct MHD_Connection *conn, const req *q, reply *r)
{
    json_error_t je;
    json_t *v = json_loadb((const char *)q->body.p, q->body.len, JSON_REJECT_DUPLICATES, &je);
    if (!v) {
        err_reply(r, 400, "invalid", "the manifest is not valid JSON: %s at line %d column %d",
                  je.text, je.line, je.column);
        return;
    }
    const char *dq = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "dry_run");
    int dry = dq && (strcmp(dq, "1") == 0 || strcmp(dq, "true") == 0);
    if (dq && !dry && strcmp(dq, "0") != 0 && strcmp(dq, "false") != 0) {
        json_decref(v);
        err_reply(r, 400, "invalid", "dry_run: expected 1, true, 0 or false, got \"%.40s\"", dq);
        return;
    }
    if (dry && json_is_object(v))
        json_object_set_new(v, "dry_run", json_true());
    char *text = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    sl_err e = {0};
    ct_manifest *m = text ? ct_manifest_parse(text, strlen(text), &e) : NULL;
    free(text);
    if (!m) {
        err_reply(r, 422, "invalid", "%s", e.msg);
        return;
    }
    if (m->router.haproxy && !c->haproxy) {
        ct_manifest_free(m);
        err_reply(r, 422, "invalid",
                  "router.type: haproxy needs sluice control started with --haproxy SOCKET");
        return;
    }
    char *mj = ct_manifest_json(m);
    mig *g = mj ? mig_new(m, mj) : NULL;
    if (!g) {
        free(mj);
        ct_manifest_free(m);
        err_reply(r, 500, "internal", "out of memory");
        return;
    }
    /* classification talks to both databases: outside the lock */
    classify_now(c, g);
    pthread_mutex_lock(&c->mu);
    if (ctl_find(c, m->id)) {
        pthread_mutex_unlock(&c->mu);
        err_reply(r, 409, "conflict", "migration %s already exists; pick another migration_id",
                  m->id);
        mig_free(g);
        return;
    }
    mig **nv = realloc(c->migs, (c->nmigs + 1) * sizeof *nv);
    if (!nv || ctl_store_save(c, g, &e) != 0) {
        if (nv)
            c->migs = nv;
        pthread_mutex_unlock(&c->mu);
        err_reply(r, 500, "internal", "%s", nv ? e.msg : "out of memory");
        mig_free(g);
        return;
    }
    c->migs = nv;
    c->migs[c->nmigs++] = g;
    ctl_event(c, g, "operator", "created",
              json_pack("{s:s, s:o, s:s, s:b}", "strategy",
                        g->strategy == CT_STRAT_AUTO ? "pending" : ct_strategy_name(g->strategy),
                        "classification",
                        g->classified ? json_string(ct_class_name(g->cls)) : json_null(), "reason",
                        g->cls_reason, "dry_run", g->m->dry_run));
    if (g->classified)
        ctl_event(c, g, "sluice", "classified",
                  json_pack("{s:s, s:s, s:s}", "classification", ct_class_name(g->cls), "reason",
                            g->cls_reason, "strategy", ct_strategy_name(g->strategy)));
    r->status = 201;
    r->doc = mig_status(c, g);
    pthread_mutex_unlock(&c->mu);
}

static void routing_wait(ctl *c, struct MHD_Connection *conn, const char *id, reply *r)
{
    const char *ws = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "wait");
    const char *vs = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "version");
    long wait = 0;
    long long ver = -1;
    char *end;
    if (ws) {
        errno = 0;
        wait = strtol(ws, &end, 10);
        if (errno || !*ws || *end || wait < 0 || wait > 60) {
            err_reply(r, 400, "invalid", "wait: expected seconds from 0 to 60, got \"%.40s\"", ws);
            return;
        }
    }
    if (vs) {
        errno = 0;
        ver = strtoll(vs, &end, 10);
        if (errno || !*vs || *end || ver < 0) {
            err_reply(r, 400, "invalid",
                      "version: expected a routing version (>= 0), got \"%.40s\"", vs);
            return;
        }
    }
    pthread_mutex_lock(&c->mu);
    mig *g = ctl_find(c, id);
    if (g && wait > 0 && ver >= 0) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += wait;
        /* c->httpd is NULL once the server stops: the wait ends then */
        while (c->httpd && g->routing_version == ver &&
               pthread_cond_timedwait(&c->routing_cv, &c->mu, &until) != ETIMEDOUT)
            ;
    }
    if (!g)
        err_reply(r, 404, "not_found", "no migration %s", id);
    else {
        r->status = 200;
        r->doc = mig_routing(g);
    }
    pthread_mutex_unlock(&c->mu);
}

static void migration_call(ctl *c, struct MHD_Connection *conn, const char *method, const char *id,
                           const char *what, const req *q, reply *r)
{
    int post = strcmp(method, "POST") == 0;
    if (post) {
        const char *role = role_of(c, conn);
        if (!role) {
            err_reply(r, 401, "unauthorized", "a valid Authorization: Bearer TOKEN is needed");
            return;
        }
        if (strcmp(what, "approve") == 0 && strcmp(role, "approver") != 0) {
            err_reply(r, 403, "forbidden", "only an approver token may approve");
            return;
        }
    }
    if (!post && strcmp(what, "routing") == 0) {
        routing_wait(c, conn, id, r);
        return;
    }
    static const char *const none[] = {NULL};
    static const char *const abort_keys[] = {"reason", NULL};
    static const char *const shadow_keys[] = {"compared", "mismatched", "examples", NULL};
    json_t *body = NULL;
    if (post) {
        const char *const *allowed = strcmp(what, "abort") == 0            ? abort_keys
                                     : strcmp(what, "shadow-results") == 0 ? shadow_keys
                                                                           : none;
        body = body_object(q, r, allowed);
        if (!body)
            return;
    }
    pthread_mutex_lock(&c->mu);
    mig *g = ctl_find(c, id);
    sl_err e = {0};
    if (!g) {
        err_reply(r, 404, "not_found", "no migration %s", id);
    } else if (!post && strcmp(what, "status") == 0) {
        r->status = 200;
        r->doc = mig_status(c, g);
    } else if (!post && strcmp(what, "events") == 0) {
        r->status = 200;
        r->doc = json_pack("{s:o}", "events", ctl_store_events(c, id, 0));
    } else if (!post && strcmp(what, "artifacts") == 0) {
        json_error_t je;
        r->status = 200;
        r->doc = json_pack("{s:s, s:o, s:o, s:o, s:o, s:b}", "migration_id", id, "manifest",
                           json_loads(g->manifest_json, 0, &je), "status", mig_status(c, g),
                           "events", ctl_store_events(c, id, 0), "validations",
                           ctl_store_validations(c, id), "sealed", g->sealed);
    } else if (post && strcmp(what, "advance") == 0) {
        json_t *gates = NULL;
        int rc = mig_advance(c, g, "operator", &gates, &e);
        if (rc == 0) {
            r->status = 200;
            r->doc = mig_status(c, g);
        } else if (rc == 1) {
            err_reply(r, 409, "conflict", "the %s phase's gates do not all pass",
                      ct_phase_name(mig_phase(g)));
            json_object_set_new(r->doc, "gates", gates);
        } else {
            int st;
            const char *code = sl_code_http(e.code, &st);
            err_reply(r, st, code, "%s", e.msg);
        }
    } else if (post && strcmp(what, "approve") == 0) {
        if (mig_approve(c, g, "approver", &e) == 0) {
            r->status = 200;
            r->doc = mig_status(c, g);
        } else
            err_reply(r, 409, "conflict", "%s", e.msg);
    } else if (post && strcmp(what, "abort") == 0) {
        json_t *rs = json_object_get(body, "reason");
        if (rs && !json_is_string(rs))
            err_reply(r, 400, "invalid", "reason: expected a string");
        else if (g->state == MS_ABORTED || g->state == MS_COMPLETED)
            err_reply(r, 409, "conflict", "migration %s is already %s", id,
                      mig_state_name(g->state));
        else {
            char reason[600];
            snprintf(reason, sizeof reason, "aborted by an operator: %.500s",
                     rs && json_string_length(rs) ? json_string_value(rs) : "no reason given");
            ctl_utf8_fix(reason); /* cut at 500 bytes, maybe inside a character */
            mig_abort(c, g, "operator", reason, 0);
            r->status = 200;
            r->doc = mig_status(c, g);
        }
    } else if (post && strcmp(what, "shadow-results") == 0) {
        json_t *cj = json_object_get(body, "compared"), *mj = json_object_get(body, "mismatched"),
               *ex = json_object_get(body, "examples");
        if (!json_is_integer(cj) || json_integer_value(cj) < 0 || !json_is_integer(mj) ||
            json_integer_value(mj) < 0 || json_integer_value(mj) > json_integer_value(cj))
            err_reply(r, 400, "invalid",
                      "expected {\"compared\": N, \"mismatched\": M} with 0 <= M <= N integers");
        else if (ex && (!json_is_array(ex) || json_array_size(ex) > 100))
            err_reply(r, 400, "invalid", "examples: expected an array of at most 100 items");
        else if (json_integer_value(cj) > INT64_MAX - g->shadow_compared)
            /* the running totals are int64: a sum past it is undefined */
            err_reply(r, 400, "invalid", "compared: the total would pass %lld",
                      (long long)INT64_MAX);
        else if (g->state == MS_ABORTED || g->state == MS_COMPLETED)
            err_reply(r, 409, "conflict", "migration %s is %s: results are no longer taken", id,
                      mig_state_name(g->state));
        else {
            /* always an array: mig_shadow leaks the empty one it makes for NULL */
            json_t *exa = ex ? json_incref(ex) : json_array();
            mig_shadow(c, g, json_integer_value(cj), json_integer_value(mj), exa);
            json_decref(exa);
            r->status = 200;
            r->doc = mig_status(c, g);
        }
    } else
        err_reply(r, 404, "not_found", "no such call: %s /migrations/%s/%s", method, id, what);
    if (g && g->dirty) {
        g->updated_ms = sl_wall_ms();
        sl_err se = {0};
        if (ctl_store_save(c, g, &se) != 0)
            ctl_logf(c, "%s", se.msg);
    }
    pthread_mutex_unlock(&c->mu);
    json_decref(body);
}

/* ---- /metrics ------------------------------------------------------------------------- */

char *metrics_text(ctl *c)
{
    sl_buf b = {0};
    int64_t now = sl_wall_ms();
    sl_buf_printf(&b, "# HELP sluice_migration_phase The migration's current phase (1).\n"
                      "# TYPE sluice_migration_phase gauge\n");
    for (size_t i = 0; i < c->nmigs; i++)
        sl_buf_printf(&b, "sluice_migration_phase{migration=\"%s\",phase=\"%s\"} 1\n",
                      c->migs[i]->m->id, ct_phase_name(mig_phase(c->migs[i])));
    sl_buf_printf(&b, "# HELP sluice_migration_state The migration's state (1).\n"
                      "# TYPE sluice_migration_state gauge\n");
    for (size_t i = 0; i < c->nmigs; i++)
        sl_buf_printf(&b, "sluice_migration_state{migration=\"%s\",state=\"%s\"} 1\n",
                      c->migs[i]->m->id, mig_state_name(c->migs[i]->state));
#define GAUGE(name, help, fmt, expr)                                                               \
    sl_buf_printf(&b, "# HELP " name " " help "\n# TYPE " name " gauge\n");                        \
    for (size_t i = 0; i < c->nmigs; i++) {                                                        \
        const mig *g = c->migs[i];                                                                 \
        sl_buf_printf(&b, name "{migration=\"%s\"} " fmt "\n", g->m->id, expr);                    \
    }
    GAUGE("sluice_migration_read_percent_target", "Percent of reads sent to the target.", "%d",
          g->read_pct)
    GAUGE("sluice_migration_divergent_rows", "Confirmed divergent rows in the latest validations.",
          "%lld", (long long)g->divergent)
    GAUGE("sluice_migration_replication_lag_seconds", "Replication lag (0 when not measured).",
          "%.3f", g->lag_known && g->lag_s < 1e12 ? g->lag_s : (g->lag_known ? 1e12 : 0.0))
    GAUGE("sluice_migration_seconds_since_validation", "Seconds since a validation last finished.",
          "%.3f",
          (double)(now - (g->last_val_ms > 0 ? g->last_val_ms : g->phase_started_ms)) / 1000.0)
    GAUGE("sluice_migration_shadow_mismatch_ratio", "Mismatched over compared shadow reads.",
          "%.6f",
          g->shadow_compared ? (double)g->shadow_mismatched / (double)g->shadow_compared : 0.0)
#undef GAUGE
    sl_buf_printf(&b, "# HELP sluice_migration_aborts_total Aborts of the migration.\n"
                      "# TYPE sluice_migration_aborts_total counter\n");
    for (size_t i = 0; i < c->nmigs; i++)
        sl_buf_printf(&b, "sluice_migration_aborts_total{migration=\"%s\"} %d\n", c->migs[i]->m->id,
                      c->migs[i]->aborts);
    if (sl_buf_putc(&b, 0) != 0) {
        sl_buf_free(&b);
        return NULL;
    }
    return (char *)b.p;
}

/* ---- static files ---------------------------------------------------------------------- */

static void static_file(ctl *c, const char *name, reply *r)
{
    if (!c->dashboard_dir) {
        err_reply(r, 404, "not_found", "no dashboard: start sluice control with --dashboard DIR");
        return;
    }
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' ||
              *p == '.') ||
            (p == name && *p == '.')) {
            err_reply(r, 404, "not_found", "no such file");
            return;
        }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", c->dashboard_dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        err_reply(r, 404, "not_found", "no such file: %s", name);
        return;
    }
    sl_buf b = {0};
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0 && b.len < 8 * MAX_BODY)
        sl_buf_append(&b, chunk, n);
    fclose(f);
    const char *ext = strrchr(name, '.');
    r->ctype = !ext                        ? "application/octet-stream"
               : strcmp(ext, ".html") == 0 ? "text/html; charset=utf-8"
               : strcmp(ext, ".js") == 0   ? "text/javascript; charset=utf-8"
               : strcmp(ext, ".css") == 0  ? "text/css; charset=utf-8"
                                           : "application/octet-stream";
    r->status = 200;
    r->text = (char *)b.p;
    r->text_len = b.len;
}

/* ---- dispatch -------------------------------------------------------------------------- */

static void route(ctl *c, struct MHD_Connection *conn, const char *url, const char *method,
                  const req *q, reply *r)
{
    /* HEAD is GET without the body (libmicrohttpd leaves the body out) */
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0,
        post = strcmp(method, "POST") == 0;
    if (q->too_big) {
        err_reply(r, 413, "invalid", "the body is over %d bytes", MAX_BODY);
        return;
    }
    if (!get && (strcmp(url, "/healthz") == 0 || strcmp(url, "/metrics") == 0 ||
                 strcmp(url, "/") == 0 || strncmp(url, "/dashboard/", 11) == 0)) {
        r->allow = "GET";
        err_reply(r, 405, "invalid", "%s %s: use GET", method, url);
        return;
    }
    if (strcmp(url, "/healthz") == 0 && get) {
        r->status = 200;
        r->doc = json_pack("{s:b}", "ok", 1);
        return;
    }
    if (strcmp(url, "/metrics") == 0 && get) {
        pthread_mutex_lock(&c->mu);
        r->text = metrics_text(c);
        pthread_mutex_unlock(&c->mu);
        r->text_len = r->text ? strlen(r->text) : 0;
        r->status = 200;
        r->ctype = "text/plain; version=0.0.4; charset=utf-8";
        return;
    }
    if ((strcmp(url, "/") == 0 || strcmp(url, "/dashboard/") == 0) && get) {
        static_file(c, "index.html", r);
        return;
    }
    if (strncmp(url, "/dashboard/", 11) == 0 && get) {
        static_file(c, url + 11, r);
        return;
    }
    if (strcmp(url, "/migrations") == 0) {
        if (post) {
            if (!role_of(c, conn))
                err_reply(r, 401, "unauthorized", "a valid Authorization: Bearer TOKEN is needed");
            else
                create(c, conn, q, r);
        } else if (get) {
            json_t *a = json_array();
            pthread_mutex_lock(&c->mu);
            for (size_t i = 0; i < c->nmigs; i++)
                json_array_append_new(a, mig_status(c, c->migs[i]));
            pthread_mutex_unlock(&c->mu);
            r->status = 200;
            r->doc = json_pack("{s:o}", "migrations", a);
        } else {
            r->allow = "GET, POST";
            err_reply(r, 405, "invalid", "%s /migrations: use GET or POST", method);
        }
        return;
    }
    if (strncmp(url, "/migrations/", 12) == 0) {
        const char *id = url + 12, *slash = strchr(id, '/');
        char idbuf[128];
        if (slash && slash > id && (size_t)(slash - id) < sizeof idbuf && !strchr(slash + 1, '/')) {
            memcpy(idbuf, id, (size_t)(slash - id));
            idbuf[slash - id] = 0;
            const char *what = slash + 1;
            static const char *const gets[] = {"status", "events", "routing", "artifacts", NULL};
            static const char *const posts[] = {"advance", "abort", "approve", "shadow-results",
                                                NULL};
            const char *const *known = get ? gets : post ? posts : NULL;
            int ok = 0;
            for (size_t i = 0; known && known[i]; i++)
                ok |= strcmp(known[i], what) == 0;
            if (ok) {
                migration_call(c, conn, method, idbuf, what, q, r);
                return;
            }
            /* a known call with another method (PUT, DELETE too) */
            int is_get = 0, is_post = 0;
            for (size_t i = 0; gets[i]; i++)
                is_get |= strcmp(gets[i], what) == 0;
            for (size_t i = 0; posts[i]; i++)
                is_post |= strcmp(posts[i], what) == 0;
            if (is_get || is_post) {
                r->allow = is_get ? "GET" : "POST";
                err_reply(r, 405, "invalid", "%s /migrations/{id}/%s: use %s", method, what,
                          r->allow);
                return;
            }
        }
    }
    err_reply(r, 404, "not_found", "no such endpoint: %s %s", method, url);
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *conn, const char *url,
                               const char *method, const char *version, const char *upload_data,
                               size_t *upload_size, void **con_cls)
{
    (void)version;
    ctl *c = cls;
    req *q = *con_cls;
    if (!q) {
        q = calloc(1, sizeof *q);
        if (!q)
            return MHD_NO;
        *con_cls = q;
        return MHD_YES;
    }
    if (*upload_size) {
        if (q->body.len + *upload_size > MAX_BODY)
            q->too_big = 1;
        else if (sl_buf_append(&q->body, upload_data, *upload_size) != 0)
            return MHD_NO;
        *upload_size = 0;
        return MHD_YES;
    }
    reply r = {0};
    route(c, conn, url, method, q, &r);
    char *text = r.text;
    size_t len = r.text_len;
    if (r.doc) {
        text = json_dumps(r.doc, JSON_COMPACT);
        len = text ? strlen(text) : 0;
        json_decref(r.doc);
        r.ctype = "application/json";
    }
    if (!text) {
        text = strdup("{\"error\": \"out of memory\", \"code\": \"internal\"}");
        len = text ? strlen(text) : 0;
        r.status = 500;
        r.ctype = "application/json";
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", r.ctype);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (r.status == 405 && r.allow)
        MHD_add_response_header(resp, "Allow", r.allow);
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)r.status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    req *q = *con_cls;
    if (q) {
        sl_buf_free(&q->body);
        free(q);
        *con_cls = NULL;
    }
}

int ctl_http_start(ctl *c, const char *host, int port, sl_err *err)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return sl_err_setc(err, SL_INVALID, "--listen: \"%s\" is not an IPv4 address", host);
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD, (uint16_t)port, NULL, NULL,
        handler, c, MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_NOTIFY_COMPLETED, completed, c,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)256, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
        MHD_OPTION_END);
    if (d) { /* the long poll reads it under the lock: so is it written */
        pthread_mutex_lock(&c->mu);
        c->httpd = d;
        pthread_mutex_unlock(&c->mu);
    }
    if (!d)
        return sl_err_setc(err, SL_INVALID,
                           "cannot listen on %s:%d (in use, or not an address of "
                           "this machine)",
                           host, port);
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(c->httpd, MHD_DAEMON_INFO_BIND_PORT);
    c->http_port = di ? di->port : port;
    return 0;
}

int ctl_http_port(const ctl *c)
{
    return c->http_port;
}

void ctl_http_stop(ctl *c)
{
    if (c->httpd) {
        /* cleared under the lock first, so that long polls see it and answer */
        struct MHD_Daemon *d = c->httpd;
        pthread_mutex_lock(&c->mu);
        c->httpd = NULL;
        pthread_cond_broadcast(&c->routing_cv);
        pthread_mutex_unlock(&c->mu);
        MHD_stop_daemon(d);
    }
}
