#include "sl_client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "../proto/curve.h"
#include "../proto/msg.h"

#define DEFAULT_TIMEOUT_MS 5000

/* req is NULL until the first request, and again after a request timed
 * out: a new socket drops what the old one still queued, so a submit
 * that "failed" for want of an answer is never delivered later. */
struct sl_client {
    void *zctx;
    void *req, *sub;
    char *clients_ep, *events_ep;
    int curve, has_secret;
    char server_key[41], secret_key[41];
    int timeout_ms;
    uint64_t next_id, last_id; /* request ids: the next, and the one in flight */
    int64_t watch_job;
    sl_buf frame;
};

/* ---- names ----------------------------------------------------------------- */

const char *sl_priority_name(sl_priority p)
{
    return p == SL_PRIO_LOW      ? "low"
           : p == SL_PRIO_NORMAL ? "normal"
           : p == SL_PRIO_HIGH   ? "high"
                                 : NULL;
}

int sl_priority_parse(const char *s, sl_priority *out)
{
    static const sl_priority all[] = {SL_PRIO_LOW, SL_PRIO_NORMAL, SL_PRIO_HIGH};
    for (size_t i = 0; s && i < 3; i++)
        if (!strcmp(s, sl_priority_name(all[i]))) {
            *out = all[i];
            return 0;
        }
    return -1;
}

static const char *const state_names[] = {"", "queued", "running", "done", "failed", "cancelled"};

static sl_job_state state_of(const char *p, size_t n)
{
    if (n == 7 && !memcmp(p, "resumed", 7))
        return SL_JOB_RUNNING;
    for (int i = SL_JOB_QUEUED; i <= SL_JOB_CANCELLED; i++)
        if (strlen(state_names[i]) == n && !memcmp(p, state_names[i], n))
            return (sl_job_state)i;
    return SL_JOB_UNKNOWN;
}

int sl_job_state_is_final(sl_job_state s)
{
    return s == SL_JOB_DONE || s == SL_JOB_FAILED || s == SL_JOB_CANCELLED;
}

static const char *const kind_names[] = {"", "missing-in-target", "extra-in-target", "changed",
                                         "schema"};

/* ---- the client ------------------------------------------------------------ */

sl_client *sl_client_new(const sl_client_opts *o, sl_err *err)
{
    if (!o || !o->clients_endpoint || !*o->clients_endpoint)
        return sl_err_setc(err, SL_INVALID, "no coordinator endpoint given"), NULL;
    if (o->curve_secret_key && !o->curve_server_key)
        return sl_err_setc(err, SL_INVALID,
                           "a CURVE client key needs the coordinator's public key"),
               NULL;
    sl_client *c = calloc(1, sizeof *c);
    if (!c)
        return sl_err_setc(err, SL_INTERNAL, "out of memory"), NULL;
    c->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : DEFAULT_TIMEOUT_MS;
    c->next_id = 1;
    if (o->curve_server_key) {
        if (strlen(o->curve_server_key) != 40 ||
            (o->curve_secret_key && strlen(o->curve_secret_key) != 40)) {
            sl_err_setc(err, SL_INVALID, "a CURVE key must be 40 characters of Z85");
            goto fail;
        }
        c->curve = 1;
        memcpy(c->server_key, o->curve_server_key, 41);
        if (o->curve_secret_key) {
            char pub[41];
            memcpy(c->secret_key, o->curve_secret_key, 41);
            if (zmq_curve_public(pub, c->secret_key)) {
                sl_err_setc(err, SL_INVALID, "the CURVE secret key is not a valid Z85 key");
                goto fail;
            }
            if (o->curve_public_key && strcmp(o->curve_public_key, pub)) {
                sl_err_setc(err, SL_INVALID, "the CURVE public key given is not the secret key's");
                goto fail;
            }
            c->has_secret = 1;
        }
    }
    if (!(c->clients_ep = strdup(o->clients_endpoint)) ||
        (o->events_endpoint && !(c->events_ep = strdup(o->events_endpoint)))) {
        sl_err_setc(err, SL_INTERNAL, "out of memory");
        goto fail;
    }
    if (!(c->zctx = zmq_ctx_new())) {
        sl_err_setc(err, SL_INTERNAL, "cannot create a ZeroMQ context: %s",
                    zmq_strerror(zmq_errno()));
        goto fail;
    }
    return c;
fail:
    sl_client_free(c);
    return NULL;
}

void sl_client_free(sl_client *c)
{
    if (!c)
        return;
    if (c->req)
        zmq_close(c->req);
    if (c->sub)
        zmq_close(c->sub);
    if (c->zctx)
        zmq_ctx_term(c->zctx);
    free(c->clients_ep);
    free(c->events_ep);
    sl_buf_free(&c->frame);
    free(c);
}

/* A socket of type connected to ep, with the client's CURVE keys. */
static void *open_socket(sl_client *c, int type, const char *ep, const char *what, sl_err *err)
{
    void *s = zmq_socket(c->zctx, type);
    int linger = 0;
    if (!s)
        return sl_err_setc(err, SL_INTERNAL, "cannot create a socket: %s",
                           zmq_strerror(zmq_errno())),
               NULL;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    if (c->curve && curve_client(s, c->server_key, c->has_secret ? c->secret_key : NULL, err)) {
        zmq_close(s);
        return NULL;
    }
    if (zmq_connect(s, ep) != 0) {
        sl_err_setc(err, SL_INTERNAL, "cannot connect to %s at %s: %s", what, ep,
                    zmq_strerror(zmq_errno()));
        zmq_close(s);
        return NULL;
    }
    return s;
}

/* Reads an ERROR reply into err: its "error" message and its "code"
 * (invalid, not_found, busy, lost_worker, database, auth, internal; absent
 * from older coordinators: internal). The one place replies' errors are
 * read, now proto's msg_error_read. Returns -1. */
static int error_reply(const msg *m, sl_err *err)
{
    return msg_error_read(m, err);
}

static void drop_request_socket(sl_client *c)
{
    if (c->req)
        zmq_close(c->req);
    c->req = NULL;
}

/* Sends frame (a request of id) and waits for its reply, at most the
 * request timeout in all. Returns the MSG_REPLY, or NULL with err set: an
 * ERROR reply's message, a reply that does not decode, or no answer. */
static msg *request(sl_client *c, const sl_buf *frame, uint64_t id, sl_err *err)
{
    if (!c->req && !(c->req = open_socket(c, ZMQ_DEALER, c->clients_ep, "the coordinator", err)))
        return NULL;
    if (zmq_send(c->req, frame->p, frame->len, 0) < 0) {
        sl_err_setc(err, SL_INTERNAL, "cannot send to the coordinator at %s: %s", c->clients_ep,
                    zmq_strerror(zmq_errno()));
        drop_request_socket(c);
        return NULL;
    }
    int64_t end = sl_now_ms() + c->timeout_ms;
    for (;;) {
        int64_t left = end - sl_now_ms();
        zmq_pollitem_t it = {c->req, 0, ZMQ_POLLIN, 0};
        int r = left > 0 ? zmq_poll(&it, 1, (long)left) : 0;
        if (r < 0 && zmq_errno() == EINTR)
            continue;
        if (r <= 0) {
            drop_request_socket(c);
            sl_err_setc(err, SL_BUSY,
                        "coordinator at %s did not answer within %g s; is it running%s?",
                        c->clients_ep, c->timeout_ms / 1000.0,
                        c->curve ? ", and does it accept this CURVE key"
                                 : " (if it uses CURVE, pass --curve-server-key)");
            return NULL;
        }
        zmq_msg_t in;
        zmq_msg_init(&in);
        if (zmq_msg_recv(&in, c->req, 0) < 0) {
            zmq_msg_close(&in);
            continue;
        }
        int more = zmq_msg_more(&in);
        sl_err e;
        msg *m = msg_decode(zmq_msg_data(&in), zmq_msg_size(&in), &e);
        zmq_msg_close(&in);
        while (more) { /* a reply is one frame: drop any others */
            zmq_msg_t x;
            zmq_msg_init(&x);
            more = zmq_msg_recv(&x, c->req, 0) >= 0 && zmq_msg_more(&x);
            zmq_msg_close(&x);
        }
        if (!m) {
            sl_err_setc(err, SL_INTERNAL,
                        "the coordinator at %s sent a reply that does not decode: %s",
                        c->clients_ep, e.msg);
            return NULL;
        }
        /* a reply to an earlier request (none is left pending, but a
         * coordinator may answer twice) is skipped; an error of id 0 is the
         * coordinator failing to read our frame at all */
        if (msg_id(m) != id && !(msg_type(m) == MSG_ERROR && msg_id(m) == 0)) {
            msg_free(m);
            continue;
        }
        if (msg_type(m) == MSG_ERROR) {
            error_reply(m, err);
            msg_free(m);
            return NULL;
        }
        if (msg_type(m) != MSG_REPLY) {
            sl_err_setc(err, SL_INTERNAL,
                        "the coordinator answered with a %s message instead of a reply",
                        msg_type_name(msg_type(m)));
            msg_free(m);
            return NULL;
        }
        return m;
    }
}

static uint64_t take_id(sl_client *c)
{
    return c->last_id = c->next_id++;
}

static msg_writer *new_request(sl_client *c, int type)
{
    return msg_writer_new(type, take_id(c));
}

/* Finishes w, the request of id c->last_id (NULL: memory ran out), frees
 * it and asks. */
static msg *ask(sl_client *c, msg_writer *w, sl_err *err)
{
    if (!w)
        return sl_err_setc(err, SL_INTERNAL, "out of memory"), NULL;
    int rc = msg_writer_finish(w, &c->frame, err);
    msg_writer_free(w);
    return rc ? NULL : request(c, &c->frame, c->last_id, err);
}

/* ---- reading replies -------------------------------------------------------- */

/* Typed optional fields: absent or nil leaves the default; another type
 * is an error naming the field (what: "status reply", "event"). */
static int opt_int(const msg *m, const char *what, const char *key, int64_t *v, sl_err *err)
{
    const msg_obj *o = msg_get(m, key);
    if (!o || msg_obj_is_nil(o))
        return 0;
    if (msg_obj_int(o, v))
        return sl_err_setc(err, SL_INTERNAL, "malformed %s: \"%s\" is not an integer", what, key);
    return 0;
}

static int opt_uint(const msg *m, const char *what, const char *key, uint64_t *v, sl_err *err)
{
    int64_t x = 0;
    if (opt_int(m, what, key, &x, err))
        return -1;
    if (x < 0)
        return sl_err_setc(err, SL_INTERNAL, "malformed %s: \"%s\" is negative", what, key);
    *v = (uint64_t)x;
    return 0;
}

/* A string field into a fixed buffer (cut to fit). */
static int opt_text(const msg *m, const char *what, const char *key, char *out, size_t cap,
                    sl_err *err)
{
    const msg_obj *o = msg_get(m, key);
    const char *p;
    size_t n;
    out[0] = '\0';
    if (!o || msg_obj_is_nil(o))
        return 0;
    if (msg_obj_str(o, &p, &n))
        return sl_err_setc(err, SL_INTERNAL, "malformed %s: \"%s\" is not a string", what, key);
    snprintf(out, cap, "%.*s", (int)n, p);
    return 0;
}

/* A string object, copied (NULL for nil). -1 for another type or no memory. */
static int dup_str(const msg_obj *o, char **out)
{
    const char *p;
    size_t n;
    *out = NULL;
    if (msg_obj_is_nil(o))
        return 0;
    if (msg_obj_str(o, &p, &n))
        return -1;
    return (*out = strndup(p, n)) ? 0 : -1;
}

static int opt_dup(const msg *m, const char *what, const char *key, char **out, sl_err *err)
{
    const msg_obj *o = msg_get(m, key);
    *out = NULL;
    if (!o)
        return 0;
    if (dup_str(o, out))
        return sl_err_setc(err, SL_INTERNAL, "malformed %s: \"%s\" is not a string", what, key);
    return 0;
}

/* ---- events ---------------------------------------------------------------- */

void sl_event_free(sl_event *ev)
{
    if (!ev)
        return;
    free(ev->k);
    for (size_t i = 0; ev->key && i < ev->nkey; i++) {
        free(ev->key[i].column);
        free(ev->key[i].value);
    }
    free(ev->key);
    for (size_t i = 0; ev->cols && i < ev->ncols; i++) {
        sl_column_diff *d = &ev->cols[i];
        free(d->column);
        free(d->source);
        free(d->target);
        free(d->source_hash);
        free(d->target_hash);
    }
    free(ev->cols);
    free(ev->column);
    free(ev->problem);
    free(ev->source_type);
    free(ev->target_type);
    free(ev->state_name);
    free(ev->error);
    memset(ev, 0, sizeof *ev);
}

#define EV "event"

/* A cut value's digest: nil (whole) or [length, hash]. */
static int read_cut(const msg_obj *o, char **hash, uint64_t *len)
{
    const msg_obj *f;
    uint32_t n;
    int64_t l;
    if (msg_obj_is_nil(o))
        return 0;
    if (msg_obj_array(o, &f, &n) || n != 2 || msg_obj_int(msg_obj_at(f, 0), &l) || l < 0 ||
        !msg_obj_is_str(msg_obj_at(f, 1)) || dup_str(msg_obj_at(f, 1), hash))
        return -1;
    *len = (uint64_t)l;
    return 0;
}

/* The row part of a divergence: k, key, columns. */
static int read_row(const msg *m, sl_event *ev, sl_err *err)
{
    const uint8_t *k;
    size_t klen;
    const msg_obj *items, *f;
    uint32_t n, nf;
    if (msg_get_bin(m, "k", &k, &klen, NULL))
        return sl_err_setc(err, SL_INTERNAL,
                           "malformed event: a row divergence without its encoded key \"k\"");
    if (!(ev->k = malloc(klen ? klen : 1)))
        return sl_err_setc(err, SL_INTERNAL, "out of memory");
    if (klen)
        memcpy(ev->k, k, klen);
    ev->klen = klen;
    if (msg_get_array(m, "key", &items, &n, NULL))
        return sl_err_setc(err, SL_INTERNAL, "malformed event: \"key\" is missing or not a list");
    if (n && !(ev->key = calloc(n, sizeof *ev->key)))
        return sl_err_setc(err, SL_INTERNAL, "out of memory");
    ev->nkey = n; /* zeroed entries: sl_event_free frees what was copied */
    for (uint32_t i = 0; i < n; i++)
        if (msg_obj_array(msg_obj_at(items, i), &f, &nf) || nf != 2 ||
            !msg_obj_is_str(msg_obj_at(f, 0)) || dup_str(msg_obj_at(f, 0), &ev->key[i].column) ||
            dup_str(msg_obj_at(f, 1), &ev->key[i].value))
            return sl_err_setc(err, SL_INTERNAL,
                               "malformed event: key entry %u is not [column, value] of strings",
                               i + 1);
    const msg_obj *cols = msg_get(m, "columns");
    if (!cols || msg_obj_is_nil(cols))
        return 0;
    if (msg_obj_array(cols, &items, &n))
        return sl_err_setc(err, SL_INTERNAL, "malformed event: \"columns\" is not a list");
    if (n && !(ev->cols = calloc(n, sizeof *ev->cols)))
        return sl_err_setc(err, SL_INTERNAL, "out of memory");
    ev->ncols = n;
    for (uint32_t i = 0; i < n; i++) {
        sl_column_diff *d = &ev->cols[i];
        if (msg_obj_array(msg_obj_at(items, i), &f, &nf) || (nf != 3 && nf != 5) ||
            !msg_obj_is_str(msg_obj_at(f, 0)) || dup_str(msg_obj_at(f, 0), &d->column) ||
            dup_str(msg_obj_at(f, 1), &d->source) || dup_str(msg_obj_at(f, 2), &d->target))
            return sl_err_setc(err, SL_INTERNAL,
                               "malformed event: column entry %u is not [column, source, target]",
                               i + 1);
        if (nf == 5 && (read_cut(msg_obj_at(f, 3), &d->source_hash, &d->source_len) ||
                        read_cut(msg_obj_at(f, 4), &d->target_hash, &d->target_len)))
            return sl_err_setc(err, SL_INTERNAL,
                               "malformed event: column entry %u has a cut value that is not nil "
                               "or [length, hash]",
                               i + 1);
    }
    return 0;
}

static int read_divergence(const msg *m, sl_event *ev, sl_err *err)
{
    char kind[32], status[16];
    if (opt_text(m, EV, "kind", kind, sizeof kind, err) ||
        opt_text(m, EV, "status", status, sizeof status, err) ||
        opt_int(m, EV, "read_at_ms", &ev->read_at_ms, err))
        return -1;
    ev->kind = 0;
    for (int i = SL_DIV_MISSING; i <= SL_DIV_SCHEMA; i++)
        if (!strcmp(kind, kind_names[i]))
            ev->kind = (sl_div_kind)i;
    if (!ev->kind)
        return sl_err_setc(err, SL_INTERNAL, "malformed event: divergence of unknown kind \"%s\"",
                           kind);
    ev->kind_name = kind_names[ev->kind];
    if (!status[0])
        ev->status = SL_DIV_UNCHECKED;
    else if (!strcmp(status, "confirmed"))
        ev->status = SL_DIV_CONFIRMED;
    else if (!strcmp(status, "transient"))
        ev->status = SL_DIV_TRANSIENT;
    else
        return sl_err_setc(err, SL_INTERNAL, "malformed event: unknown divergence status \"%s\"",
                           status);
    if (ev->kind != SL_DIV_SCHEMA)
        return read_row(m, ev, err);
    if (opt_dup(m, EV, "column", &ev->column, err) || opt_dup(m, EV, "problem", &ev->problem, err))
        return -1;
    if (!ev->column || !ev->problem)
        return sl_err_setc(err, SL_INTERNAL,
                           "malformed event: a schema divergence needs \"column\" and "
                           "\"problem\"");
    const msg_obj *t = msg_get(m, "types"), *f;
    uint32_t n;
    if (t && !msg_obj_is_nil(t) &&
        (msg_obj_array(t, &f, &n) || n != 2 || dup_str(msg_obj_at(f, 0), &ev->source_type) ||
         dup_str(msg_obj_at(f, 1), &ev->target_type)))
        return sl_err_setc(err, SL_INTERNAL,
                           "malformed event: \"types\" is not [source type, target type]");
    return 0;
}

static int read_event(const msg *m, sl_event *ev, sl_err *err)
{
    char what[16];
    if (msg_type(m) != MSG_EVENT)
        return sl_err_setc(err, SL_INTERNAL, "malformed event: a %s message, not an event",
                           msg_type_name(msg_type(m)));
    if (opt_text(m, EV, "event", what, sizeof what, err))
        return -1;
    if (msg_get_int(m, "job", &ev->job, NULL) || ev->job <= 0)
        return sl_err_setc(err, SL_INTERNAL, "malformed event: \"job\" is missing or not a job id");
    if (opt_int(m, EV, "at_ms", &ev->at_ms, err))
        return -1;
    if (!strcmp(what, "divergence")) {
        ev->type = SL_EV_DIVERGENCE;
        return read_divergence(m, ev, err);
    }
    if (!strcmp(what, "progress")) {
        ev->type = SL_EV_PROGRESS;
        return opt_uint(m, EV, "ranges_done", &ev->ranges_done, err) ||
                       opt_uint(m, EV, "ranges", &ev->ranges, err) ||
                       opt_uint(m, EV, "rows_done", &ev->rows_done, err) ||
                       opt_uint(m, EV, "keys", &ev->keys, err) ||
                       opt_uint(m, EV, "checked", &ev->checked, err) ||
                       opt_uint(m, EV, "backlog", &ev->backlog, err) ||
                       opt_uint(m, EV, "lag_source", &ev->lag_source, err) ||
                       opt_uint(m, EV, "lag_target", &ev->lag_target, err)
                   ? -1
                   : 0;
    }
    if (!strcmp(what, "job")) {
        ev->type = SL_EV_JOB;
        char code[32];
        if (opt_dup(m, EV, "state", &ev->state_name, err) ||
            opt_dup(m, EV, "error", &ev->error, err) ||
            opt_text(m, EV, "code", code, sizeof code, err))
            return -1;
        ev->error_code = code[0] ? sl_code_from_name(code, strlen(code)) : SL_OK;
        if (!ev->state_name)
            return sl_err_setc(err, SL_INTERNAL,
                               "malformed event: a job event without its \"state\"");
        ev->state = state_of(ev->state_name, strlen(ev->state_name));
        return 0;
    }
    return sl_err_setc(err, SL_INTERNAL, "malformed event: unknown event \"%s\"", what);
}

int sl_event_decode(const void *frame, size_t len, sl_event *ev, sl_err *err)
{
    memset(ev, 0, sizeof *ev);
    msg *m = msg_decode(frame, len, err);
    if (!m) {
        if (err) /* a peer's garbage, not the caller's mistake */
            err->code = SL_INTERNAL;
        return -1;
    }
    int rc = read_event(m, ev, err);
    msg_free(m);
    if (rc)
        sl_event_free(ev);
    return rc;
}

int sl_client_watch(sl_client *c, int64_t job, sl_err *err)
{
    if (!c->events_ep)
        return sl_err_setc(err, SL_INVALID, "no events endpoint given, so nothing to watch");
    if (c->sub)
        zmq_close(c->sub);
    c->sub = zmq_socket(c->zctx, ZMQ_SUB);
    if (!c->sub)
        return sl_err_setc(err, SL_INTERNAL, "cannot create a socket: %s",
                           zmq_strerror(zmq_errno()));
    /* "job.1" also matches "job.12": ZeroMQ matches a prefix, so the job
     * number is checked again on each event */
    char topic[48];
    int n = job ? snprintf(topic, sizeof topic, "job.%lld", (long long)job)
                : snprintf(topic, sizeof topic, "job.");
    int linger = 0;
    zmq_setsockopt(c->sub, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(c->sub, ZMQ_SUBSCRIBE, topic, (size_t)n);
    if (c->curve && curve_client(c->sub, c->server_key, c->has_secret ? c->secret_key : NULL, err))
        goto fail;
    if (zmq_connect(c->sub, c->events_ep) != 0) {
        sl_err_setc(err, SL_INTERNAL, "cannot connect to events at %s: %s", c->events_ep,
                    zmq_strerror(zmq_errno()));
        goto fail;
    }
    c->watch_job = job;
    return 0;
fail:
    zmq_close(c->sub);
    c->sub = NULL;
    return -1;
}

int sl_client_next_event(sl_client *c, int timeout_ms, sl_event *ev, sl_err *err)
{
    memset(ev, 0, sizeof *ev);
    if (!c->sub)
        return sl_err_setc(err, SL_INVALID, "sl_client_watch first");
    int64_t end = sl_now_ms() + timeout_ms;
    for (;;) {
        long left = timeout_ms < 0 ? -1 : (long)(end - sl_now_ms());
        if (timeout_ms >= 0 && left < 0)
            left = 0;
        zmq_pollitem_t it = {c->sub, 0, ZMQ_POLLIN, 0};
        int r = zmq_poll(&it, 1, left);
        if (r < 0 && zmq_errno() == EINTR)
            return 0; /* the caller checks why */
        if (r < 0)
            return sl_err_setc(err, SL_INTERNAL, "reading events from %s: %s", c->events_ep,
                               zmq_strerror(zmq_errno()));
        if (r == 0)
            return 0;
        /* an event is two frames, the topic and the message */
        zmq_msg_t part[2];
        int nparts = 0, more = 1;
        size_t total = 0;
        while (more) {
            zmq_msg_t x;
            zmq_msg_init(&x);
            if (zmq_msg_recv(&x, c->sub, 0) < 0) {
                zmq_msg_close(&x);
                break;
            }
            more = zmq_msg_more(&x);
            total++;
            if (nparts < 2)
                part[nparts++] = x;
            else
                zmq_msg_close(&x);
        }
        int rc;
        if (total != 2) {
            rc = sl_err_setc(err, SL_INTERNAL,
                             "malformed event: %zu frames instead of a topic and a message", total);
        } else {
            rc = sl_event_decode(zmq_msg_data(&part[1]), zmq_msg_size(&part[1]), ev, err);
            if (rc == 0 && c->watch_job && ev->job != c->watch_job) {
                sl_event_free(ev);
                rc = 1; /* another job's: read on */
            }
        }
        for (int i = 0; i < nparts; i++)
            zmq_msg_close(&part[i]);
        if (rc < 0)
            return -1;
        if (rc == 0)
            return 1;
        if (timeout_ms >= 0 && sl_now_ms() >= end)
            return 0;
    }
}

/* ---- requests -------------------------------------------------------------- */

static void pack_list(msg_writer *w, const char *key, const char *const *v, size_t n)
{
    msg_key(w, key);
    msg_pack_array(w, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        msg_pack_cstr(w, v[i]);
}

static int spec_writer(const sl_job_spec *s, uint64_t id, msg_writer **out, sl_err *err)
{
    const char *prio = sl_priority_name(s->priority);
    *out = NULL;
    if (!s->source || !*s->source || !s->target || !*s->target)
        return sl_err_setc(err, SL_INVALID, "a job needs a source and a target database name");
    if (!s->table || !*s->table)
        return sl_err_setc(err, SL_INVALID, "a job needs a table");
    if (!prio)
        return sl_err_setc(err, SL_INVALID, "priority must be low, normal or high");
    if (s->max_tasks < 0)
        return sl_err_setc(err, SL_INVALID, "max_tasks must be 0 (no cap) or more");
    if (s->share < 0 || s->share > 100)
        return sl_err_setc(err, SL_INVALID, "share must be a percent from 1 to 100 (0: no share)");
    if ((s->nkey && !s->key) || (s->ncolumns && !s->columns) || (s->nexclude && !s->exclude) ||
        (s->ntolerances && !s->tolerances))
        return sl_err_setc(err, SL_INVALID, "a list of names is missing its names");
    msg_writer *w = msg_writer_new(MSG_SUBMIT, id);
    if (!w)
        return sl_err_setc(err, SL_INTERNAL, "out of memory");
    msg_put_cstr(w, "source", s->source);
    msg_put_cstr(w, "target", s->target);
    msg_put_cstr(w, "table", s->table);
    msg_put_cstr(w, "target_table", s->target_table);
    msg_put_cstr(w, "where", s->where);
    pack_list(w, "key", s->key, s->nkey);
    pack_list(w, "columns", s->columns, s->ncolumns);
    pack_list(w, "exclude", s->exclude, s->nexclude);
    msg_put_int(w, "strict", s->strict != 0);
    msg_put_uint(w, "ranges", s->ranges);
    msg_put_int(w, "rechecks", s->rechecks);
    msg_put_int(w, "settle_ms", s->settle_ms);
    msg_put_int(w, "max_rows_per_second", s->max_rows_per_second);
    /* sent only when asked for: a coordinator that predates them ignores
     * fields it does not know, and the frame of a plain job stays as it was */
    if (s->priority != SL_PRIO_NORMAL)
        msg_put_cstr(w, "priority", prio);
    if (s->max_tasks > 0)
        msg_put_int(w, "max_tasks", s->max_tasks);
    if (s->share > 0)
        msg_put_int(w, "share", s->share);
    if (s->ntolerances > 0)
        pack_list(w, "tolerances", s->tolerances, s->ntolerances);
    if (s->sample_bp > 0) {
        int64_t seed = (int64_t)(s->shuffle_seed & (uint64_t)INT64_MAX);
        msg_put_int(w, "sample_bp", s->sample_bp);
        msg_put_int(w, "shuffle_seed", seed ? seed : 1);
    } else if (s->changes) {
        msg_put_cstr(w, "kind", "changes");
        if (s->duration_ms > 0)
            msg_put_int(w, "duration_ms", s->duration_ms);
        if (s->window_ms > 0)
            msg_put_int(w, "window_ms", s->window_ms);
    } else if (s->scrub) {
        /* a seed of 0 would mean key order: never sent */
        int64_t seed = (int64_t)(s->shuffle_seed & (uint64_t)INT64_MAX);
        msg_put_cstr(w, "kind", "scrub");
        msg_put_int(w, "shuffle_seed", seed ? seed : 1);
    }
    /* issue 15 */
    if (s->keys_only)
        msg_put_int(w, "keys_only", 1);
    if (s->max_divergences > 0)
        msg_put_uint(w, "max_divergences", s->max_divergences);
    if (s->chunk_time_ms > 0)
        msg_put_int(w, "chunk_time_ms", s->chunk_time_ms);
    if (s->nreplicas) {
        pack_list(w, "replicas", s->replicas, s->nreplicas);
        msg_put_int(w, "max_replica_lag_ms", s->max_replica_lag_ms);
    }
    *out = w;
    return 0;
}

int sl_client_spec_frame(const sl_job_spec *spec, sl_buf *out, sl_err *err)
{
    msg_writer *w;
    if (spec_writer(spec, 1, &w, err))
        return -1;
    int rc = msg_writer_finish(w, out, err);
    msg_writer_free(w);
    return rc;
}

static int reply_job(msg *m, int64_t *job, sl_err *err)
{
    int64_t id = 0;
    int rc = msg_get_int(m, "job", &id, NULL) || id <= 0
                 ? sl_err_setc(err, SL_INTERNAL, "malformed submit reply: no job id")
                 : 0;
    msg_free(m);
    if (rc == 0 && job)
        *job = id;
    return rc;
}

int sl_client_submit(sl_client *c, const sl_job_spec *spec, int64_t *job, sl_err *err)
{
    msg_writer *w;
    if (spec_writer(spec, take_id(c), &w, err))
        return -1;
    msg *m = ask(c, w, err);
    return m ? reply_job(m, job, err) : -1;
}

int sl_client_submit_frame(sl_client *c, const void *frame, size_t len, int64_t *job, sl_err *err)
{
    msg *f = msg_decode(frame, len, err);
    if (!f)
        return sl_err_wrap(err, "not a submit frame");
    int type = msg_type(f);
    uint64_t id = msg_id(f);
    msg_free(f);
    if (type != MSG_SUBMIT)
        return sl_err_setc(err, SL_INVALID, "not a submit frame but a %s message",
                           msg_type_name(type));
    sl_buf_reset(&c->frame);
    if (sl_buf_append(&c->frame, frame, len))
        return sl_err_setc(err, SL_INTERNAL, "out of memory");
    msg *m = request(c, &c->frame, id, err);
    return m ? reply_job(m, job, err) : -1;
}

void sl_job_status_free(sl_job_status *s)
{
    if (!s)
        return;
    for (size_t i = 0; s->events && i < s->nevents; i++)
        sl_event_free(&s->events[i]);
    free(s->events);
    s->events = NULL;
    s->nevents = 0;
}

#define ST "status reply"

static int read_status(const msg *m, int64_t job, sl_job_status *s, sl_err *err)
{
    char prio[16], code[32];
    int64_t keys_only = 0;
    if (opt_text(m, ST, "state", s->state_name, sizeof s->state_name, err))
        return -1;
    if (!s->state_name[0])
        return sl_err_setc(err, SL_INTERNAL, "malformed status reply: no \"state\"");
    s->state = state_of(s->state_name, strlen(s->state_name));
    s->job = job;
    if (opt_int(m, ST, "job", &s->job, err) ||
        opt_text(m, ST, "error", s->error, sizeof s->error, err) ||
        opt_text(m, ST, "error_code", code, sizeof code, err) ||
        opt_text(m, ST, "table", s->table, sizeof s->table, err) ||
        opt_text(m, ST, "target_table", s->target_table, sizeof s->target_table, err) ||
        opt_text(m, ST, "source", s->source, sizeof s->source, err) ||
        opt_text(m, ST, "target", s->target, sizeof s->target, err) ||
        opt_uint(m, ST, "source_rows", &s->source_rows, err) ||
        opt_uint(m, ST, "target_rows", &s->target_rows, err) ||
        opt_uint(m, ST, "ranges", &s->ranges, err) ||
        opt_uint(m, ST, "ranges_done", &s->ranges_done, err) ||
        opt_uint(m, ST, "workers", &s->workers, err) ||
        opt_uint(m, ST, "changed", &s->changed, err) ||
        opt_uint(m, ST, "missing", &s->missing, err) || opt_uint(m, ST, "extra", &s->extra, err) ||
        opt_uint(m, ST, "schema", &s->schema, err) ||
        opt_uint(m, ST, "transient", &s->transient, err) ||
        opt_int(m, ST, "elapsed_ms", &s->elapsed_ms, err) ||
        opt_int(m, ST, "submitted_ms", &s->submitted_ms, err) ||
        opt_int(m, ST, "finished_ms", &s->finished_ms, err) ||
        opt_text(m, ST, "priority", prio, sizeof prio, err) ||
        opt_int(m, ST, "keys_only", &keys_only, err) ||
        opt_uint(m, ST, "max_divergences", &s->max_divergences, err) ||
        opt_text(m, ST, "paused", s->paused, sizeof s->paused, err))
        return -1;
    s->keys_only = keys_only != 0;
    if (prio[0] && sl_priority_parse(prio, &s->priority))
        return sl_err_setc(err, SL_INTERNAL, "malformed status reply: unknown priority \"%s\"",
                           prio);
    s->error_code = code[0] ? sl_code_from_name(code, strlen(code)) : SL_OK;
    return 0;
}

static int read_status_events(const msg *m, sl_job_status *s, sl_err *err)
{
    const msg_obj *ev;
    uint32_t n;
    if (msg_get_array(m, "events", &ev, &n, NULL))
        return sl_err_setc(err, SL_INTERNAL,
                           "malformed status reply: \"events\" is missing or not a list");
    if (n && !(s->events = calloc(n, sizeof *s->events)))
        return sl_err_setc(err, SL_INTERNAL, "out of memory");
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *p;
        size_t len;
        if (msg_obj_bin(msg_obj_at(ev, i), &p, &len))
            return sl_err_setc(err, SL_INTERNAL,
                               "malformed status reply: stored event %u is not binary", i + 1);
        /* a divergence left out of a report would be a wrong answer: one
         * that does not decode fails the whole status */
        if (sl_event_decode(p, len, &s->events[i], err))
            return sl_err_wrap(err, "job %lld: stored event %u", (long long)s->job, i + 1);
        s->nevents = i + 1;
    }
    return 0;
}

int sl_client_status(sl_client *c, int64_t job, int with_events, sl_job_status *out, sl_err *err)
{
    memset(out, 0, sizeof *out);
    msg_writer *w = new_request(c, MSG_STATUS);
    if (w) {
        msg_put_int(w, "job", job);
        msg_put_int(w, "events", with_events != 0);
    }
    msg *m = ask(c, w, err);
    if (!m)
        return -1;
    int rc = read_status(m, job, out, err);
    if (rc == 0 && with_events)
        rc = read_status_events(m, out, err);
    msg_free(m);
    return rc;
}

int sl_client_cancel(sl_client *c, int64_t job, sl_err *err)
{
    sl_job_status st;
    /* today's coordinator answers a cancel of an unknown or finished job
     * as if it had worked: the job's state is asked for first and after */
    if (sl_client_status(c, job, 0, &st, err))
        return sl_err_wrap(err, "job %lld", (long long)job);
    if (sl_job_state_is_final(st.state))
        return sl_err_setc(err, SL_INVALID, "job %lld already finished (%s); nothing to cancel",
                           (long long)job, st.state_name);
    msg_writer *w = new_request(c, MSG_CANCEL);
    if (w)
        msg_put_int(w, "job", job);
    msg *m = ask(c, w, err);
    if (!m)
        return -1;
    msg_free(m);
    if (sl_client_status(c, job, 0, &st, err))
        return -1;
    if (st.state == SL_JOB_DONE || st.state == SL_JOB_FAILED)
        return sl_err_setc(err, SL_INVALID, "job %lld already finished (%s); nothing to cancel",
                           (long long)job, st.state_name);
    return 0;
}

void sl_worker_info_free(sl_worker_info *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        for (size_t k = 0; v[i].dbs && k < v[i].ndbs; k++)
            free(v[i].dbs[k]);
        free(v[i].dbs);
    }
    free(v);
}

/* One worker: [slot, alive, busy, idle ms, [databases]] and, from newer
 * coordinators, the number of trees it holds as a sixth element. */
static int read_worker(const msg_obj *o, sl_worker_info *w)
{
    const msg_obj *f, *dbs;
    uint32_t nf, nd;
    int64_t alive, busy;
    w->trees = -1;
    if (msg_obj_array(o, &f, &nf) || (nf != 5 && nf != 6) ||
        msg_obj_int(msg_obj_at(f, 0), &w->slot) || msg_obj_int(msg_obj_at(f, 1), &alive) ||
        msg_obj_int(msg_obj_at(f, 2), &busy) || msg_obj_int(msg_obj_at(f, 3), &w->idle_ms) ||
        msg_obj_array(msg_obj_at(f, 4), &dbs, &nd) ||
        (nf == 6 && (msg_obj_int(msg_obj_at(f, 5), &w->trees) || w->trees < 0)))
        return -1;
    w->alive = alive != 0;
    w->busy = busy != 0;
    if (nd && !(w->dbs = calloc(nd, sizeof *w->dbs)))
        return -1;
    w->ndbs = nd;
    for (uint32_t k = 0; k < nd; k++)
        if (dup_str(msg_obj_at(dbs, k), &w->dbs[k]) || !w->dbs[k])
            return -1;
    return 0;
}

int sl_client_workers(sl_client *c, sl_worker_info **out, size_t *n, sl_err *err)
{
    *out = NULL;
    *n = 0;
    msg *m = ask(c, new_request(c, MSG_WORKERS), err);
    if (!m)
        return -1;
    const msg_obj *items;
    uint32_t ni;
    int rc = 0;
    sl_worker_info *v = NULL;
    if (msg_get_array(m, "workers", &items, &ni, NULL)) {
        rc = sl_err_setc(err, SL_INTERNAL,
                         "malformed workers reply: \"workers\" is missing or not a list");
    } else if (ni && !(v = calloc(ni, sizeof *v))) {
        rc = sl_err_setc(err, SL_INTERNAL, "out of memory");
    } else {
        for (uint32_t i = 0; i < ni && rc == 0; i++)
            if (read_worker(msg_obj_at(items, i), &v[i]))
                rc = sl_err_setc(err, SL_INTERNAL,
                                 "malformed workers reply: worker %u is not [slot, alive, busy, "
                                 "idle ms, [databases], trees]",
                                 i + 1);
    }
    msg_free(m);
    if (rc) {
        sl_worker_info_free(v, ni);
        return -1;
    }
    *out = v;
    *n = ni;
    return 0;
}

/* ---- schedules -------------------------------------------------------------- */

int sl_client_schedule_add(sl_client *c, const char *name, int64_t interval_s,
                           const sl_job_spec *spec, sl_err *err)
{
    sl_buf f = {0};
    if (!name || !*name)
        return sl_err_setc(err, SL_INVALID, "a scheduled audit needs a name");
    if (interval_s <= 0)
        return sl_err_setc(err, SL_INVALID, "a scheduled audit needs an interval of 1 s or more");
    if (sl_client_spec_frame(spec, &f, err))
        return -1;
    msg_writer *w = new_request(c, MSG_SCHEDULE_ADD);
    if (w) {
        msg_put_cstr(w, "name", name);
        msg_put_int(w, "interval_s", interval_s);
        msg_key(w, "spec");
        msg_pack_bin(w, f.p, f.len);
    }
    sl_buf_free(&f);
    msg *m = ask(c, w, err);
    msg_free(m);
    return m ? 0 : -1;
}

int sl_client_schedule_del(sl_client *c, const char *name, int *removed, sl_err *err)
{
    if (!name || !*name)
        return sl_err_setc(err, SL_INVALID, "which scheduled audit? it needs a name");
    msg_writer *w = new_request(c, MSG_SCHEDULE_DEL);
    if (w)
        msg_put_cstr(w, "name", name);
    msg *m = ask(c, w, err);
    if (!m)
        return -1;
    int64_t r = 0;
    int rc = opt_int(m, "schedule_del reply", "removed", &r, err);
    msg_free(m);
    if (rc == 0 && removed)
        *removed = r != 0;
    return rc;
}

void sl_schedule_info_free(sl_schedule_info *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        free(v[i].name);
        free(v[i].table);
    }
    free(v);
}

/* One schedule: [name, interval_s, table, last_job or nil]. */
static int read_schedule(const msg_obj *o, sl_schedule_info *s)
{
    const msg_obj *f;
    uint32_t nf;
    if (msg_obj_array(o, &f, &nf) || nf != 4 || dup_str(msg_obj_at(f, 0), &s->name) || !s->name ||
        msg_obj_int(msg_obj_at(f, 1), &s->interval_s) || dup_str(msg_obj_at(f, 2), &s->table) ||
        (!msg_obj_is_nil(msg_obj_at(f, 3)) && msg_obj_int(msg_obj_at(f, 3), &s->last_job)))
        return -1;
    return 0;
}

int sl_client_schedules(sl_client *c, sl_schedule_info **out, size_t *n, sl_err *err)
{
    *out = NULL;
    *n = 0;
    msg *m = ask(c, new_request(c, MSG_SCHEDULES), err);
    if (!m)
        return -1;
    const msg_obj *items;
    uint32_t ni;
    int rc = 0;
    sl_schedule_info *v = NULL;
    if (msg_get_array(m, "schedules", &items, &ni, NULL)) {
        rc = sl_err_setc(err, SL_INTERNAL,
                         "malformed schedules reply: \"schedules\" is missing or not a list");
    } else if (ni && !(v = calloc(ni, sizeof *v))) {
        rc = sl_err_setc(err, SL_INTERNAL, "out of memory");
    } else {
        for (uint32_t i = 0; i < ni && rc == 0; i++)
            if (read_schedule(msg_obj_at(items, i), &v[i]))
                rc = sl_err_setc(err, SL_INTERNAL,
                                 "malformed schedules reply: schedule %u is not [name, interval, "
                                 "table, last job]",
                                 i + 1);
    }
    msg_free(m);
    if (rc) {
        sl_schedule_info_free(v, ni);
        return -1;
    }
    *out = v;
    *n = ni;
    return 0;
}
