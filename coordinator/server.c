#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "../merkle/tol.h"
#include "../proto/curve.h"
#include "../proto/msg.h"
#include "co.h"
#include "store.h"

#define SPEC_MAX_LIST CO_MAX_COLS /* names in --key, --columns, --exclude-columns */

typedef struct active active;

struct co_server {
    void *zctx;
    co *c;
    void *clients, *pub;
    co_store *store;
    active *act; /* the jobs running now */
    size_t nact, max_jobs;
    /* The control database is read for due schedules and waiting jobs at
     * most every 200 ms, at once after a submit or a job's end (kick): not
     * on every turn of the loop, which turns per worker message. */
    double next_pass;
    int kick;
    int verbose;
    sl_buf frame;
    volatile sig_atomic_t *stop;
    curve_zap *zap;
    /* when each stored schedule is next due, sorted by name: the schedules
     * themselves live in the control database and are read at each pass */
    struct sched_due *due;
    size_t ndue;
    double sched_err_at; /* when a failed pass was last logged */
};

typedef struct sched_due {
    char *name;
    int64_t interval_s;
    double next; /* monotonic seconds */
} sched_due;

/* ---- job specs (the submit message) ------------------------------------- */

typedef struct spec {
    co_diff_opts o;
    int scrub;   /* "kind": "scrub": a scrub cycle (its drift row says so) */
    int changes; /* "kind": "changes": change-driven verification */
    char follow[64];
    char *strs[8];
    char *key[SPEC_MAX_LIST], *cols[SPEC_MAX_LIST], *excl[SPEC_MAX_LIST];
    char *tols[SPEC_MAX_LIST]; /* tolerance rules (merkle/tol.h) */
    char *repl[SPEC_MAX_LIST]; /* issue 15: "replicas" */
} spec;

/* Frees the strings a spec read holds (not s itself). */
static void spec_free(spec *s)
{
    for (int i = 0; i < 8; i++)
        free(s->strs[i]);
    for (size_t i = 0; i < s->o.nkey; i++)
        free(s->key[i]);
    for (size_t i = 0; i < s->o.ncolumns; i++)
        free(s->cols[i]);
    for (size_t i = 0; i < s->o.nexclude; i++)
        free(s->excl[i]);
    for (size_t i = 0; i < s->o.ntolerances; i++)
        free(s->tols[i]);
    for (size_t i = 0; i < s->o.nreplicas; i++)
        free(s->repl[i]);
    memset(s, 0, sizeof *s);
}

/* Field key of a submit as a malloc'd string into *out (NULL when absent and
 * not required): 0, or -1 with err. */
static int opt_str(const msg *m, const char *key, int required, char **out, sl_err *err)
{
    const msg_obj *o = msg_get(m, key);
    const char *p;
    size_t n;
    if (!o || msg_obj_is_nil(o)) {
        *out = NULL;
        return required ? sl_err_setc(err, SL_INVALID, "submit: \"%s\" is required", key) : 0;
    }
    if (msg_obj_str(o, &p, &n) || n == 0 || memchr(p, 0, n))
        return sl_err_setc(err, SL_INVALID, "submit: \"%s\" must be a non-empty string", key);
    return (*out = strndup(p, n)) ? 0 : sl_err_set(err, "out of memory");
}

/* Field key of a submit as at most SPEC_MAX_LIST malloc'd names into out[0..*n):
 * 0 (also when absent), or -1 with err. */
static int opt_list(const msg *m, const char *key, char **out, size_t *n, sl_err *err)
{
    const msg_obj *o = msg_get(m, key), *items;
    uint32_t ni;
    *n = 0;
    if (!o || msg_obj_is_nil(o))
        return 0;
    if (msg_obj_array(o, &items, &ni) || ni > SPEC_MAX_LIST)
        return sl_err_setc(err, SL_INVALID, "submit: \"%s\" must be a list of at most %d names",
                           key, SPEC_MAX_LIST);
    for (uint32_t i = 0; i < ni; i++) {
        const char *p;
        size_t l;
        if (msg_obj_str(msg_obj_at(items, i), &p, &l) || l == 0 || memchr(p, 0, l))
            return sl_err_setc(err, SL_INVALID, "submit: \"%s\" must hold non-empty names", key);
        if (!(out[i] = strndup(p, l)))
            return sl_err_set(err, "out of memory");
        *n = i + 1;
    }
    return 0;
}

/* Reads a submit message into opts; the one validation both the submit
 * reply and a resumed job rely on. */
static int spec_read(const msg *m, spec *s, sl_err *err)
{
    memset(s, 0, sizeof *s);
    int64_t strict = 0, ranges = 0, rechecks = 0, settle = 0;
    const msg_obj *o;
    if (opt_str(m, "source", 1, &s->strs[0], err) || opt_str(m, "target", 1, &s->strs[1], err) ||
        opt_str(m, "table", 1, &s->strs[2], err) ||
        opt_str(m, "target_table", 0, &s->strs[3], err) ||
        opt_str(m, "where", 0, &s->strs[4], err) || opt_list(m, "key", s->key, &s->o.nkey, err) ||
        opt_list(m, "columns", s->cols, &s->o.ncolumns, err) ||
        opt_list(m, "exclude", s->excl, &s->o.nexclude, err))
        return -1;
    if ((o = msg_get(m, "strict")) && msg_obj_int(o, &strict))
        return sl_err_setc(err, SL_INVALID, "submit: \"strict\" must be 0 or 1");
    if ((o = msg_get(m, "ranges")) && (msg_obj_int(o, &ranges) || ranges < 0 || ranges > 1000000))
        return sl_err_setc(err, SL_INVALID,
                           "submit: \"ranges\" must be a number from 0 to 1000000");
    if ((o = msg_get(m, "rechecks")) &&
        (msg_obj_int(o, &rechecks) || rechecks < 0 || rechecks > 100))
        return sl_err_setc(err, SL_INVALID, "submit: \"rechecks\" must be a number from 0 to 100");
    if ((o = msg_get(m, "settle_ms")) &&
        (msg_obj_int(o, &settle) || settle < 0 || settle > 3600000))
        return sl_err_setc(err, SL_INVALID, "submit: \"settle_ms\" must be from 0 to 3600000");
    int64_t mrps = 0;
    if ((o = msg_get(m, "max_rows_per_second")) && (msg_obj_int(o, &mrps) || mrps < 0))
        return sl_err_setc(err, SL_INVALID, "submit: \"max_rows_per_second\" must be 0 or more");
    s->o.max_rows_per_second = mrps;
    int64_t share = 0;
    if ((o = msg_get(m, "share")) && (msg_obj_int(o, &share) || share < 0 || share > 100))
        return sl_err_setc(err, SL_INVALID,
                           "submit: \"share\" must be a percent from 1 to 100 (0: no share)");
    s->o.share = (int)share;
    int64_t seed = 0;
    if ((o = msg_get(m, "shuffle_seed")) && (msg_obj_int(o, &seed) || seed < 0))
        return sl_err_setc(err, SL_INVALID, "submit: \"shuffle_seed\" must be 0 or more");
    s->o.shuffle_seed = (uint64_t)seed;
    int64_t bp = 0;
    if ((o = msg_get(m, "sample_bp")) && (msg_obj_int(o, &bp) || bp < 0 || bp > 9999))
        return sl_err_setc(err, SL_INVALID, "submit: \"sample_bp\" must be from 0 to 9999");
    if (bp && !seed)
        return sl_err_setc(err, SL_INVALID,
                           "submit: a sample (\"sample_bp\") needs a \"shuffle_seed\"");
    s->o.sample_bp = (int)bp;
    if ((o = msg_get(m, "kind")) && !msg_obj_is_nil(o)) {
        const char *p;
        size_t n;
        if (msg_obj_str(o, &p, &n) ||
            !((n == 5 && !memcmp(p, "audit", 5)) || (n == 5 && !memcmp(p, "scrub", 5)) ||
              (n == 7 && !memcmp(p, "changes", 7))))
            return sl_err_setc(err, SL_INVALID,
                               "submit: \"kind\" must be \"audit\", \"scrub\" or \"changes\"");
        s->scrub = p[0] == 's';
        s->changes = p[0] == 'c';
    }
    int64_t dur = 0, win = 0;
    if ((o = msg_get(m, "duration_ms")) && (msg_obj_int(o, &dur) || dur < 0))
        return sl_err_setc(err, SL_INVALID, "submit: \"duration_ms\" must be 0 or more");
    if ((o = msg_get(m, "window_ms")) && !msg_obj_is_nil(o) &&
        (msg_obj_int(o, &win) || win < 1000 || win > 86400000))
        return sl_err_setc(err, SL_INVALID,
                           "submit: \"window_ms\" must be from 1000 (1 s) to 86400000 (a day)");
    if (s->changes && rechecks < 1)
        return sl_err_setc(err, SL_INVALID,
                           "submit: a \"changes\" job needs \"rechecks\" of 1 or more");
    s->o.changes = s->changes;
    s->o.duration_ms = dur;
    s->o.window_ms = win; /* 0: the default, 60 s */
    s->o.priority = CO_PRIO_NORMAL;
    if ((o = msg_get(m, "priority")) && !msg_obj_is_nil(o)) {
        const char *p;
        size_t n;
        static const char *const names[] = {"low", "normal", "high"};
        int found = -1;
        if (msg_obj_str(o, &p, &n) == 0)
            for (int i = 0; i < 3; i++)
                if (strlen(names[i]) == n && memcmp(names[i], p, n) == 0)
                    found = i;
        if (found < 0)
            return sl_err_setc(err, SL_INVALID,
                               "submit: \"priority\" must be \"high\", \"normal\" or \"low\"");
        s->o.priority = found; /* CO_PRIO_LOW, _NORMAL, _HIGH in that order */
    }
    int64_t cap = 0;
    if ((o = msg_get(m, "max_tasks")) && (msg_obj_int(o, &cap) || cap < 0 || cap > 100000))
        return sl_err_setc(err, SL_INVALID,
                           "submit: \"max_tasks\" must be a number from 0 to 100000");
    s->o.max_tasks = (size_t)cap;
    s->o.rechecks = (int)rechecks;
    s->o.settle_ms = (int)settle;
    s->o.source_db = s->strs[0];
    s->o.target_db = s->strs[1];
    s->o.table = s->strs[2];
    s->o.target_table = s->strs[3];
    s->o.where = s->strs[4];
    s->o.key = (const char *const *)s->key;
    s->o.columns = (const char *const *)s->cols;
    s->o.exclude = (const char *const *)s->excl;
    s->o.strict = strict != 0;
    s->o.ranges = (size_t)ranges;
    /* tolerance rules: checked here, resolved against the columns when the
     * job starts */
    if (opt_list(m, "tolerances", s->tols, &s->o.ntolerances, err))
        return -1;
    for (size_t i = 0; i < s->o.ntolerances; i++) {
        enc_tol_rule r;
        if (enc_tol_rule_parse(s->tols[i], &r, err))
            return sl_err_wrap(err, "submit: \"tolerances\"");
    }
    s->o.tolerances = (const char *const *)s->tols;
    /* issue 15: quick answers, audits that yield */
    int64_t keys_only = 0, maxdiv = 0, chunk = 0, maxlag = 0;
    if ((o = msg_get(m, "keys_only")) && msg_obj_int(o, &keys_only))
        return sl_err_setc(err, SL_INVALID, "submit: \"keys_only\" must be 0 or 1");
    if ((o = msg_get(m, "max_divergences")) && (msg_obj_int(o, &maxdiv) || maxdiv < 0))
        return sl_err_setc(err, SL_INVALID, "submit: \"max_divergences\" must be 0 or more");
    if ((o = msg_get(m, "chunk_time_ms")) &&
        (msg_obj_int(o, &chunk) || chunk < 0 || chunk > 3600000))
        return sl_err_setc(err, SL_INVALID, "submit: \"chunk_time_ms\" must be from 0 to 3600000");
    if (opt_list(m, "replicas", s->repl, &s->o.nreplicas, err))
        return -1;
    if ((o = msg_get(m, "max_replica_lag_ms")) &&
        (msg_obj_int(o, &maxlag) || maxlag < 0 || maxlag > 86400000))
        return sl_err_setc(err, SL_INVALID,
                           "submit: \"max_replica_lag_ms\" must be from 0 to 86400000");
    if (s->o.nreplicas && !msg_get(m, "max_replica_lag_ms"))
        return sl_err_setc(err, SL_INVALID, "submit: \"replicas\" needs \"max_replica_lag_ms\"");
    s->o.keys_only = keys_only != 0;
    s->o.max_divergences = (uint64_t)maxdiv;
    s->o.chunk_time_s = (double)chunk / 1000.0;
    s->o.replicas = (const char *const *)s->repl;
    s->o.max_replica_lag_s = (double)maxlag / 1000.0;
    return 0;
}

/* ---- events --------------------------------------------------------------- */

typedef struct run_ctx {
    co_server *s;
    int64_t job;
    char paused[320];  /* why its range reads are paused (replica lag), "" if not */
    const char *table; /* the job's (source) table: its drift rows' */
    int failed;        /* the control database refused a write */
    sl_err err;
} run_ctx;

/* Publishes frame on topic "job.<job>", never blocking. */
static void publish(co_server *s, int64_t job, const sl_buf *frame)
{
    char topic[32];
    int n = snprintf(topic, sizeof topic, "job.%lld", (long long)job);
    zmq_send(s->pub, topic, (size_t)n, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(s->pub, frame->p, frame->len, ZMQ_DONTWAIT);
}

/* A job's divergence: recorded in the store and published. 0, or -1 (the job stops)
 * when it cannot be recorded. */
static int on_event(void *ctx, const co_event *ev)
{
    run_ctx *r = ctx;
    co_server *s = r->s;
    int schema = ev->kind == CO_SCHEMA;
    msg_writer *w = msg_writer_new(MSG_EVENT, 0);
    if (!w)
        return -1;
    msg_put_cstr(w, "event", "divergence");
    msg_put_int(w, "job", r->job);
    msg_put_cstr(w, "kind", co_kind_name(ev->kind));
    msg_put_int(w, "at_ms", sl_wall_ms());
    msg_put_int(w, "read_at_ms", ev->read_at_ms);
    msg_put_cstr(w, "status",
                 ev->status == CO_CONFIRMED   ? "confirmed"
                 : ev->status == CO_TRANSIENT ? "transient"
                                              : NULL);
    if (schema) {
        msg_put_cstr(w, "column", ev->column);
        msg_put_cstr(w, "problem", ev->detail);
        msg_key(w, "types");
        msg_pack_array(w, 2);
        msg_pack_cstr(w, ev->source_type);
        msg_pack_cstr(w, ev->target_type);
    } else {
        msg_key(w, "k"); /* the encoded key: sorts rows as the databases do */
        msg_pack_bin(w, ev->key, ev->klen);
        msg_key(w, "key");
        msg_pack_array(w, (uint32_t)ev->nkey);
        for (size_t k = 0; k < ev->nkey; k++) {
            msg_pack_array(w, 2);
            msg_pack_cstr(w, ev->key_cols[k]);
            msg_pack_cstr(w, ev->key_vals[k]);
        }
        msg_key(w, "columns");
        msg_pack_array(w, (uint32_t)ev->ncols);
        for (size_t k = 0; k < ev->ncols; k++) {
            const co_coldiff *c = &ev->cols[k];
            int cut = c->source_hash || c->target_hash; /* a value too long to travel whole */
            msg_pack_array(w, cut ? 5 : 3);
            msg_pack_cstr(w, c->column);
            msg_pack_cstr(w, c->source);
            msg_pack_cstr(w, c->target);
            for (int s = 0; cut && s < 2; s++) {
                const char *h = s ? c->target_hash : c->source_hash;
                if (!h) {
                    msg_pack_nil(w);
                    continue;
                }
                msg_pack_array(w, 2);
                msg_pack_uint(w, s ? c->target_len : c->source_len);
                msg_pack_cstr(w, h);
            }
        }
    }
    int rc = msg_writer_finish(w, &s->frame, &r->err);
    msg_writer_free(w);
    if (rc)
        return -1;
    int added;
    const void *k = schema ? (const void *)ev->column : (const void *)ev->key;
    size_t klen = schema ? strlen(ev->column) : ev->klen;
    const char *skind = ev->status == CO_TRANSIENT ? "transient" : co_kind_name(ev->kind);
    if (co_store_add_event(s->store, r->job, skind, k, klen, s->frame.p, s->frame.len, &added,
                           &r->err)) {
        r->failed = 1;
        return -1;
    }
    if (!added && ev->repeat)
        *ev->repeat = 1;
    if (added) /* a redone range's repeats are neither stored nor published */
        publish(s, r->job, &s->frame);
    return 0;
}

/* Publishes a job's new state (and its error, if any). */
static void publish_state(co_server *s, int64_t job, const char *state, const sl_err *why)
{
    msg_writer *w = msg_writer_new(MSG_EVENT, 0);
    if (!w)
        return;
    msg_put_cstr(w, "event", "job");
    msg_put_int(w, "job", job);
    msg_put_cstr(w, "state", state);
    msg_put_cstr(w, "error", why ? why->msg : NULL);
    msg_put_cstr(w, "code", why ? sl_code_name(why->code) : NULL);
    msg_put_int(w, "at_ms", sl_wall_ms());
    if (msg_writer_finish(w, &s->frame, NULL) == 0)
        publish(s, job, &s->frame);
    msg_writer_free(w);
}

/* Publishes a job's progress. */
static void on_progress(void *ctx, const co_progress *p)
{
    run_ctx *r = ctx;
    msg_writer *w = msg_writer_new(MSG_EVENT, 0);
    if (!w)
        return;
    msg_put_cstr(w, "event", "progress");
    msg_put_int(w, "job", r->job);
    msg_put_uint(w, "ranges_done", p->ranges_done);
    msg_put_uint(w, "ranges", p->ranges);
    msg_put_uint(w, "rows_done", p->rows_done);
    /* a pause for replica lag starts or ends: said in the log and the status */
    if ((p->paused != NULL) != (r->paused[0] != '\0'))
        fprintf(stderr, "sluice coordinator: job %lld: %s%s\n", (long long)r->job,
                p->paused ? "paused: " : "resumed", p->paused ? p->paused : "");
    snprintf(r->paused, sizeof r->paused, "%s", p->paused ? p->paused : "");
    msg_put_cstr(w, "paused", p->paused);
    if (p->changes) {
        msg_put_uint(w, "keys", p->keys);
        msg_put_uint(w, "checked", p->checked);
        msg_put_uint(w, "backlog", p->backlog);
        msg_put_uint(w, "lag_source", p->lag[0]);
        msg_put_uint(w, "lag_target", p->lag[1]);
    }
    msg_put_int(w, "at_ms", sl_wall_ms());
    if (msg_writer_finish(w, &r->s->frame, NULL) == 0)
        publish(r->s, r->job, &r->s->frame);
    msg_writer_free(w);
}

/* A changes job's window: a drift row of kind "changes". 0, or -1 (the job
 * fails; the last window's failure is only logged). */
static size_t on_live_follows(void *ctx, int64_t *ids, size_t cap)
{
    run_ctx *r = ctx;
    size_t n = 0;
    sl_err e = {0};
    if (co_store_live_changes(r->s->store, ids, cap, &n, &e))
        return SIZE_MAX; /* none known: the follow then drops no orphan at all */
    return n;
}

/* A changes job's key equal again: its stored divergence is forgotten, so
 * the next one is stored and published (the control plane counts it). */
static void on_resolved(void *ctx, const uint8_t *key, size_t klen)
{
    run_ctx *r = ctx;
    sl_err e = {0};
    if (co_store_forget_key(r->s->store, r->job, key, klen, &e))
        fprintf(stderr,
                "sluice coordinator: job %lld: cannot forget a repaired key's divergence: %s\n",
                (long long)r->job, e.msg);
}

static int on_window(void *ctx, const co_window *w)
{
    run_ctx *r = ctx;
    co_drift_row d = {.job = r->job,
                      .at = (double)sl_wall_ms() / 1000.0,
                      .window_s = w->length_s,
                      .rows_checked = (int64_t)w->checked,
                      .missing = (int64_t)w->missing,
                      .extra = (int64_t)w->extra,
                      .changed = (int64_t)w->changed,
                      .transient = (int64_t)w->transient};
    snprintf(d.table, sizeof d.table, "%s", r->table);
    snprintf(d.kind, sizeof d.kind, "changes");
    co_drift_latencies(w->latency, w->nlatency, &d);
    sl_err e = {0};
    if (co_store_drift_add(r->s->store, &d, &e) == 0)
        return 0;
    if (r->s->verbose || w->last)
        fprintf(stderr, "sluice coordinator: job %lld: a drift row was not recorded: %s\n",
                (long long)r->job, e.msg);
    if (!w->last) {
        r->err = e;
        r->failed = 1;
    }
    return -1;
}

/* Records a job's split keys, so a restart resumes it: 0, or -1 (the job fails). */
static int on_planned(void *ctx, size_t n, const uint8_t *const *keys, const size_t *lens)
{
    run_ctx *r = ctx;
    if (co_store_save_plan(r->s->store, r->job, n, keys, lens, &r->err))
        return r->failed = -1;
    return 0;
}

/* Records a range compared: 0, or -1 (the job fails). */
static int on_range_done(void *ctx, size_t ri, uint64_t src, uint64_t tgt)
{
    run_ctx *r = ctx;
    if (co_store_range_done(r->s->store, r->job, ri, src, tgt, &r->err))
        return r->failed = -1;
    return 0;
}

/* ---- clients ------------------------------------------------------------ */

/* Sends w's message to client ident, and frees w (NULL: nothing is sent). */
static void reply(co_server *s, const void *ident, size_t ilen, msg_writer *w)
{
    if (!w)
        return;
    if (msg_writer_finish(w, &s->frame, NULL) == 0) {
        zmq_send(s->clients, ident, ilen, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(s->clients, s->frame.p, s->frame.len, ZMQ_DONTWAIT);
    }
    msg_writer_free(w);
}

/* An error reply carrying e's code (invalid for a request to fix). */
static void reply_err(co_server *s, const void *ident, size_t ilen, uint64_t id, const sl_err *e)
{
    if (msg_error_reply(id, e, &s->frame) == 0) {
        zmq_send(s->clients, ident, ilen, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(s->clients, s->frame.p, s->frame.len, ZMQ_DONTWAIT);
    }
}

typedef struct ev_collect {
    msg_writer *w;
} ev_collect;

/* co_store_each_event callback: counts frames into *(uint32_t *)ctx. */
static int count_event(void *ctx, const void *frame, size_t len)
{
    (void)frame;
    (void)len;
    (*(uint32_t *)ctx)++;
    return 0;
}

/* co_store_each_event callback: packs each frame into the reply being written. */
static int pack_event(void *ctx, const void *frame, size_t len)
{
    msg_pack_bin(((ev_collect *)ctx)->w, frame, len);
    return 0;
}

static const char *active_paused(const co_server *s, int64_t job);

/* Answers a status request: the job's row, ranges done and, if asked, its events. */
static void serve_status(co_server *s, const void *ident, size_t ilen, const msg *m)
{
    sl_err e = {0};
    int64_t job;
    co_job_row row;
    if (msg_get_int(m, "job", &job, &e))
        return reply_err(s, ident, ilen, msg_id(m), &e);
    int r = co_store_get_job(s->store, job, &row, &e);
    if (r == 0)
        sl_err_setc(&e, SL_NOT_FOUND, "no such job %lld; sluice submit prints the job id",
                    (long long)job);
    if (r <= 0)
        return reply_err(s, ident, ilen, msg_id(m), &e);
    size_t done = 0, total = 0;
    co_store_ranges_done(s->store, job, &done, &total, &e);
    const msg_obj *want = msg_get(m, "events");
    int64_t with_events = 0;
    if (want)
        msg_obj_int(want, &with_events);
    uint32_t nev = 0;
    if (with_events && co_store_each_event(s->store, job, count_event, &nev, &e))
        return reply_err(s, ident, ilen, msg_id(m), &e);
    /* the target's table name, for a report printed from the status
     * (sluice report): only the submit frame keeps it */
    char ttable[256] = "";
    int64_t keys_only = 0, maxdiv = 0;
    sl_buf spec = {0};
    if (co_store_get_spec(s->store, job, &spec, &e) == 1) {
        msg *sm = msg_decode(spec.p, spec.len, &e);
        const char *tp;
        size_t tn;
        if (sm && msg_get_str(sm, "target_table", &tp, &tn, NULL) == 0)
            snprintf(ttable, sizeof ttable, "%.*s", (int)tn, tp);
        if (sm) /* what the report of the job shows */
            msg_get_int(sm, "keys_only", &keys_only, NULL),
                msg_get_int(sm, "max_divergences", &maxdiv, NULL);
        msg_free(sm);
    }
    sl_buf_free(&spec);
    msg_writer *w = msg_writer_new(MSG_REPLY, msg_id(m));
    if (!w)
        return;
    msg_put_int(w, "job", job);
    msg_put_cstr(w, "state", row.state);
    msg_put_cstr(w, "error", row.error[0] ? row.error : NULL);
    msg_put_cstr(w, "error_code", row.error_code ? sl_code_name(row.error_code) : NULL);
    msg_put_cstr(w, "table", row.table);
    msg_put_cstr(w, "target_table", ttable[0] ? ttable : NULL);
    msg_put_cstr(w, "source", row.sum.source_name);
    msg_put_cstr(w, "target", row.sum.target_name);
    msg_put_uint(w, "source_rows", row.sum.source_rows);
    msg_put_uint(w, "target_rows", row.sum.target_rows);
    msg_put_uint(w, "ranges", total);
    msg_put_uint(w, "ranges_done", done);
    msg_put_uint(w, "workers", row.sum.workers);
    msg_put_uint(w, "missing", row.sum.missing);
    msg_put_uint(w, "extra", row.sum.extra);
    msg_put_uint(w, "changed", row.sum.changed);
    msg_put_uint(w, "schema", row.sum.schema);
    msg_put_uint(w, "transient", row.sum.transient);
    msg_put_int(w, "elapsed_ms", (int64_t)(row.sum.elapsed * 1000));
    msg_put_int(w, "submitted_ms", (int64_t)(row.submitted * 1000));
    msg_put_int(w, "finished_ms", (int64_t)(row.finished * 1000));
    if (keys_only)
        msg_put_int(w, "keys_only", 1);
    if (maxdiv > 0)
        msg_put_int(w, "max_divergences", maxdiv);
    msg_put_cstr(w, "paused", active_paused(s, job));
    if (with_events) {
        ev_collect ec = {w};
        msg_key(w, "events");
        msg_pack_array(w, nev);
        co_store_each_event(s->store, job, pack_event, &ec, &e);
    }
    reply(s, ident, ilen, w);
}

/* Answers a workers request: each slot's state, databases and trees held. */
static void serve_workers(co_server *s, const void *ident, size_t ilen, const msg *m)
{
    msg_writer *w = msg_writer_new(MSG_REPLY, msg_id(m));
    if (!w)
        return;
    size_t n = co_worker_count(s->c);
    msg_key(w, "workers");
    msg_pack_array(w, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        co_worker_view v;
        co_worker_info(s->c, i, &v);
        msg_pack_array(w, 6);
        msg_pack_uint(w, i);
        msg_pack_int(w, v.alive);
        msg_pack_int(w, v.busy);
        msg_pack_int(w, (int64_t)(v.idle_s * 1000));
        msg_pack_array(w, (uint32_t)v.ndbs);
        for (size_t k = 0; k < v.ndbs; k++)
            msg_pack_cstr(w, v.dbs[k]);
        msg_pack_uint(w, v.trees);
    }
    reply(s, ident, ilen, w);
}

/* ---- scheduled audits --------------------------------------------------- */

/* One stored schedule, copied out of the store. */
typedef struct sched_row {
    char *name;
    int64_t interval_s;
    uint8_t *spec;
    size_t len;
    int64_t last_job;
} sched_row;

typedef struct sched_list {
    sched_row *v;
    size_t n, cap;
} sched_list;

/* Frees the rows a sched_list holds and empties it. */
static void sched_list_free(sched_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].name);
        free(l->v[i].spec);
    }
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* co_store_schedule_each callback: copies one schedule into the sched_list ctx;
 * -1 when memory runs out. */
static int take_sched(void *ctx, const char *name, int64_t interval_s, const void *spec, size_t len,
                      int64_t last_job)
{
    sched_list *l = ctx;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        sched_row *v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return -1;
        l->v = v, l->cap = cap;
    }
    sched_row *r = &l->v[l->n];
    r->name = strdup(name);
    r->spec = malloc(len ? len : 1);
    if (!r->name || !r->spec) {
        free(r->name);
        free(r->spec);
        return -1;
    }
    memcpy(r->spec, spec, len);
    r->len = len, r->interval_s = interval_s, r->last_job = last_job;
    l->n++;
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const sched_row *)a)->name, ((const sched_row *)b)->name);
}

/* The stored schedules, sorted by name (bytewise, whatever the control
 * database's collation). */
static int sched_load(co_server *s, sched_list *l, sl_err *err)
{
    memset(l, 0, sizeof *l);
    if (co_store_schedule_each(s->store, take_sched, l, err)) {
        sched_list_free(l);
        return err && err->msg[0] ? -1 : sl_err_set(err, "out of memory");
    }
    if (l->n)
        qsort(l->v, l->n, sizeof *l->v, by_name);
    return 0;
}

/* The table a schedule's submit frame names, into out. */
static void spec_table(const void *spec, size_t len, char *out, size_t cap)
{
    msg *m = msg_decode(spec, len, NULL);
    const char *table;
    size_t n;
    out[0] = '\0';
    if (m && msg_get_str(m, "table", &table, &n, NULL) == 0)
        snprintf(out, cap, "%.*s", (int)n, table);
    msg_free(m);
}

/* A stored submit frame's priority (CO_PRIO_*); normal when unreadable
 * (the frame was checked when it was stored). */
static int spec_priority(const void *frame, size_t len)
{
    msg *m = msg_decode(frame, len, NULL);
    spec sp;
    int prio = m && spec_read(m, &sp, NULL) == 0 ? sp.o.priority : CO_PRIO_NORMAL;
    if (m)
        spec_free(&sp);
    msg_free(m);
    return prio;
}

/* A schedule's name from a client: 1 to CO_STORE_NAME_MAX bytes, no
 * control characters (it is printed in logs), into out. */
static int sched_name(const msg *m, char *out, sl_err *err)
{
    const char *p;
    size_t n;
    if (msg_get_str(m, "name", &p, &n, err))
        return -1;
    if (n == 0 || n > CO_STORE_NAME_MAX)
        return sl_err_setc(err, SL_INVALID, "schedule: \"name\" must be 1 to %d bytes",
                           CO_STORE_NAME_MAX);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
            return sl_err_setc(err, SL_INVALID,
                               "schedule: \"name\" must not hold control characters");
    memcpy(out, p, n);
    out[n] = '\0';
    return 0;
}

#define SCHED_INTERVAL_MAX 31536000 /* a year, in seconds */

/* Answers schedule_add: checks the name, interval and spec, and stores the schedule. */
static void serve_schedule_add(co_server *s, const void *ident, size_t ilen, const msg *m)
{
    sl_err e = {0};
    char name[CO_STORE_NAME_MAX + 1];
    int64_t every;
    const uint8_t *spec;
    size_t len;
    if (sched_name(m, name, &e))
        return reply_err(s, ident, ilen, msg_id(m), &e);
    if (msg_get_int(m, "interval_s", &every, NULL) || every < 1 || every > SCHED_INTERVAL_MAX) {
        sl_err_setc(&e, SL_INVALID,
                    "schedule_add: \"interval_s\" must be a number of seconds from 1 to %d",
                    SCHED_INTERVAL_MAX);
        return reply_err(s, ident, ilen, msg_id(m), &e);
    }
    if (msg_get_bin(m, "spec", &spec, &len, &e))
        return reply_err(s, ident, ilen, msg_id(m), &e);
    if (co_server_check_spec(spec, len, &e)) {
        sl_err_wrap(&e, "schedule_add: \"spec\" must be a valid submit frame");
        e.code = SL_INVALID;
        return reply_err(s, ident, ilen, msg_id(m), &e);
    }
    if (co_store_schedule_put(s->store, name, every, spec, len, &e))
        return reply_err(s, ident, ilen, msg_id(m), &e);
    if (s->verbose)
        fprintf(stderr, "sluice coordinator: schedule %s added: every %lld s\n", name,
                (long long)every);
    reply(s, ident, ilen, msg_writer_new(MSG_REPLY, msg_id(m)));
}

/* Answers schedule_del: removes the schedule named, saying whether it existed. */
static void serve_schedule_del(co_server *s, const void *ident, size_t ilen, const msg *m)
{
    sl_err e = {0};
    char name[CO_STORE_NAME_MAX + 1];
    int removed;
    if (sched_name(m, name, &e) || (removed = co_store_schedule_del(s->store, name, &e)) < 0)
        return reply_err(s, ident, ilen, msg_id(m), &e);
    if (s->verbose && removed)
        fprintf(stderr, "sluice coordinator: schedule %s removed\n", name);
    msg_writer *w = msg_writer_new(MSG_REPLY, msg_id(m));
    if (w)
        msg_put_int(w, "removed", removed);
    reply(s, ident, ilen, w);
}

/* Answers schedules: each stored schedule's name, interval, table and last job. */
static void serve_schedules(co_server *s, const void *ident, size_t ilen, const msg *m)
{
    sl_err e = {0};
    sched_list l;
    if (sched_load(s, &l, &e))
        return reply_err(s, ident, ilen, msg_id(m), &e);
    msg_writer *w = msg_writer_new(MSG_REPLY, msg_id(m));
    if (w) {
        msg_key(w, "schedules");
        msg_pack_array(w, (uint32_t)l.n);
        for (size_t i = 0; i < l.n; i++) {
            char table[256];
            spec_table(l.v[i].spec, l.v[i].len, table, sizeof table);
            msg_pack_array(w, 4);
            msg_pack_cstr(w, l.v[i].name);
            msg_pack_int(w, l.v[i].interval_s);
            msg_pack_cstr(w, table);
            if (l.v[i].last_job)
                msg_pack_int(w, l.v[i].last_job);
            else
                msg_pack_nil(w);
        }
    }
    reply(s, ident, ilen, w);
    sched_list_free(&l);
}

/* A worker dropped for breaking the protocol: the operator should know. */
static void log_line(void *ctx, const char *line)
{
    (void)ctx;
    fprintf(stderr, "sluice coordinator: %s\n", line);
}

static void cancel_active(co_server *s, int64_t job);

/* Serves one client request; called between jobs and while a job runs. */
static void serve_client(void *ctx)
{
    co_server *s = ctx;
    zmq_msg_t id, body;
    zmq_msg_init(&id);
    zmq_msg_init(&body);
    if (zmq_msg_recv(&id, s->clients, ZMQ_DONTWAIT) < 0 || !zmq_msg_more(&id) ||
        zmq_msg_recv(&body, s->clients, 0) < 0)
        goto done;
    for (int more = zmq_msg_more(&body); more;) {
        zmq_msg_t x;
        zmq_msg_init(&x);
        zmq_msg_recv(&x, s->clients, 0);
        more = zmq_msg_more(&x);
        zmq_msg_close(&x);
    }
    const void *ident = zmq_msg_data(&id);
    size_t ilen = zmq_msg_size(&id);
    sl_err e = {0};
    msg *m = msg_decode(zmq_msg_data(&body), zmq_msg_size(&body), &e);
    if (!m) {
        reply_err(s, ident, ilen, 0, &e);
        goto done;
    }
    if (msg_check_fields(m, &e)) { /* what MSG_TYPES requires of each request */
        reply_err(s, ident, ilen, msg_id(m), &e);
        msg_free(m);
        goto done;
    }
    switch (msg_type(m)) {
    case MSG_SUBMIT: {
        spec sp;
        int64_t job;
        if (spec_read(m, &sp, &e) ||
            co_store_add_job(s->store, zmq_msg_data(&body), zmq_msg_size(&body), sp.o.table,
                             sp.o.priority, &job, &e) ||
            (sp.scrub && co_store_set_kind(s->store, job, "scrub", &e)) ||
            (sp.changes && co_store_set_kind(s->store, job, "changes", &e))) {
            reply_err(s, ident, ilen, msg_id(m), &e);
        } else {
            msg_writer *w = msg_writer_new(MSG_REPLY, msg_id(m));
            if (w) {
                msg_put_int(w, "job", job);
            }
            reply(s, ident, ilen, w);
            publish_state(s, job, "queued", NULL);
            s->kick = 1;
        }
        spec_free(&sp);
        break;
    }
    case MSG_STATUS:
        serve_status(s, ident, ilen, m);
        break;
    case MSG_WORKERS:
        serve_workers(s, ident, ilen, m);
        break;
    case MSG_CANCEL: {
        int64_t job;
        co_job_row row;
        int got = msg_get_int(m, "job", &job, &e) ? -1 : co_store_get_job(s->store, job, &row, &e);
        if (got == 0)
            sl_err_setc(&e, SL_NOT_FOUND, "no such job %lld; sluice submit prints the job id",
                        (long long)job);
        else if (got > 0 && strcmp(row.state, "queued") && strcmp(row.state, "running"))
            got = sl_err_setc(&e, SL_INVALID, "job %lld already finished (%s); nothing to cancel",
                              (long long)job, row.state);
        if (got <= 0 || co_store_cancel_job(s->store, job, &e)) {
            reply_err(s, ident, ilen, msg_id(m), &e);
            break;
        }
        cancel_active(s, job);
        reply(s, ident, ilen, msg_writer_new(MSG_REPLY, msg_id(m)));
        publish_state(s, job, "cancelled", NULL);
        break;
    }
    case MSG_SCHEDULE_ADD:
        serve_schedule_add(s, ident, ilen, m);
        break;
    case MSG_SCHEDULE_DEL:
        serve_schedule_del(s, ident, ilen, m);
        break;
    case MSG_SCHEDULES:
        serve_schedules(s, ident, ilen, m);
        break;
    default:
        sl_err_setc(&e, SL_INVALID,
                    "clients may send submit, status, cancel, workers, schedule_add, "
                    "schedule_del, schedules");
        reply_err(s, ident, ilen, msg_id(m), &e);
    }
    msg_free(m);
done:
    zmq_msg_close(&id);
    zmq_msg_close(&body);
}

/* ---- the loop ----------------------------------------------------------- */

/* A job this coordinator runs: its spec, the callbacks' context, and for a
 * resumed job the recorded plan, all kept until the job has ended. */
struct active {
    active *next;
    int64_t id;
    co_job *j;
    spec sp;
    run_ctx r;
    co_callbacks cb;
    sl_buf plan;
    unsigned char *done;
    const uint8_t **keys;
    size_t *lens;
    int resuming;
};

/* Why running job's range reads are paused (replica lag); NULL if they are not. */
static const char *active_paused(const co_server *s, int64_t job)
{
    for (const active *a = s->act; a; a = a->next)
        if (a->id == job && a->r.paused[0])
            return a->r.paused;
    return NULL;
}

/* Frees a running job's record and the job (cancelled first if it still runs). */
static void active_free(active *a)
{
    co_job_free(a->j);
    spec_free(&a->sp);
    sl_buf_free(&a->plan);
    free(a->done);
    free(a->keys);
    free(a->lens);
    free(a);
}

/* Records and publishes that a job failed, and why. */
static void job_failed(co_server *s, int64_t job, const sl_err *why)
{
    sl_err oom = {0};
    if (!why->msg[0]) /* every failure says why */
        why = (sl_err_setc(&oom, SL_INTERNAL, "out of memory"), &oom);
    co_store_set_state(s->store, job, "failed", why, NULL, NULL);
    publish_state(s, job, "failed", why);
    if (s->verbose)
        fprintf(stderr, "sluice coordinator: job %lld failed: %s\n", (long long)job, why->msg);
}

/* Starts a queued job, or resumes one a previous coordinator left running.
 * A spec or plan that cannot be read fails the job. */
static void start_job(co_server *s, int64_t job, const sl_buf *specframe, int resuming)
{
    sl_err e = {0};
    active *a = calloc(1, sizeof *a);
    if (!a)
        return job_failed(s, job, &(sl_err){SL_INTERNAL, "out of memory"});
    a->id = job;
    a->resuming = resuming;
    a->r = (run_ctx){.s = s, .job = job, .table = ""};
    msg *m = msg_decode(specframe->p, specframe->len, &e);
    int ok = m && spec_read(m, &a->sp, &e) == 0;
    msg_free(m); /* spec_read copied what it keeps */
    if (ok && resuming) {
        size_t nb = 0;
        uint64_t rows[2];
        int got = co_store_load_plan(s->store, job, &a->plan, &nb, &a->done, rows, &e);
        ok = got >= 0;
        if (ok && got) {
            a->keys = calloc(nb + 1, sizeof *a->keys);
            a->lens = calloc(nb + 1, sizeof *a->lens);
            ok = a->keys && a->lens;
            for (size_t i = 0, off = 0; ok && i < nb; i++) {
                uint32_t len;
                memcpy(&len, a->plan.p + off, 4);
                a->keys[i] = a->plan.p + off + 4;
                a->lens[i] = len;
                off += 4 + len;
            }
            a->sp.o.resume_nbounds = nb;
            a->sp.o.resume_bounds = a->keys;
            a->sp.o.resume_lens = a->lens;
            a->sp.o.resume_done = a->done;
            a->sp.o.resume_rows[0] = rows[0];
            a->sp.o.resume_rows[1] = rows[1];
        }
    }
    if (ok && resuming && a->sp.o.max_divergences) { /* those reported before count */
        co_summary had = {0};
        ok = co_store_count_events(s->store, job, &had, &e) == 0;
        a->sp.o.resume_divergences = had.missing + had.extra + had.changed;
    }
    if (ok && a->sp.changes) { /* the slots' names: sluicecv_<job>_<side> */
        snprintf(a->sp.follow, sizeof a->sp.follow, "sluicecv_%lld", (long long)job);
        a->sp.o.follow_name = a->sp.follow;
    }
    if (ok)
        a->r.table = a->sp.o.table;
    a->cb = (co_callbacks){.event = on_event,
                           .progress = on_progress,
                           .planned = on_planned,
                           .range_done = on_range_done,
                           .window = on_window,
                           .live_follows = on_live_follows,
                           .resolved = on_resolved,
                           .ctx = &a->r};
    if (!ok || co_store_set_state(s->store, job, "running", NULL, NULL, &e) ||
        !(a->j = co_job_start(s->c, &a->sp.o, &a->cb, &e))) {
        job_failed(s, job, &e);
        active_free(a);
        return;
    }
    a->next = s->act;
    s->act = a;
    s->nact++;
    publish_state(s, job, resuming ? "resumed" : "running", NULL);
    if (s->verbose)
        fprintf(stderr, "sluice coordinator: job %lld %s: %s\n", (long long)job,
                resuming ? "resumed" : "started", a->sp.o.table);
}

/* Records how an ended job ended. */
static void end_job(co_server *s, active *a)
{
    sl_err e = {0};
    co_summary sum;
    int st = co_job_state(a->j, &sum, &e);
    int64_t job = a->id;
    /* counted from the control database: a resumed job's earlier
     * divergences count too, repeats do not; a job whose result cannot be
     * recorded is failed, never "done" with wrong counts */
    if (st == CO_JOB_DONE && (co_store_count_events(s->store, job, &sum, &e) ||
                              co_store_set_state(s->store, job, "done", NULL, &sum, &e)))
        st = CO_JOB_FAILED;
    if (st == CO_JOB_DONE) {
        publish_state(s, job, "done", NULL);
        if (s->verbose)
            fprintf(stderr, "sluice coordinator: job %lld done in %.2f s\n", (long long)job,
                    sum.elapsed);
        return;
    }
    if (a->r.failed)
        e = a->r.err;
    co_job_row row;
    if (co_store_get_job(s->store, job, &row, NULL) == 1 && !strcmp(row.state, "cancelled"))
        return; /* the cancel already recorded and published it */
    job_failed(s, job, &e);
}

/* Asks the running job job, if any, to stop. */
static void cancel_active(co_server *s, int64_t job)
{
    for (active *a = s->act; a; a = a->next)
        if (a->id == job)
            co_job_cancel(a->j);
}

/* Whether job is running now. */
static int is_active(const co_server *s, int64_t job)
{
    for (const active *a = s->act; a; a = a->next)
        if (a->id == job)
            return 1;
    return 0;
}

/* Starts waiting jobs while fewer than max_jobs run: those a previous
 * coordinator left running first, then the queue in order. */
static int start_pending(co_server *s, sl_err *err)
{
    if (s->nact >= s->max_jobs || co_alive_workers(s->c) == 0)
        return 0;
    int64_t ids[64];
    int running[64];
    size_t n;
    if (co_store_pending_jobs(s->store, ids, running, 64, &n, err))
        return -1;
    sl_buf frame = {0};
    for (size_t i = 0; i < n && s->nact < s->max_jobs; i++) {
        if (is_active(s, ids[i]))
            continue;
        int r = co_store_get_spec(s->store, ids[i], &frame, err);
        if (r < 0) {
            sl_buf_free(&frame);
            return -1;
        }
        if (r > 0)
            start_job(s, ids[i], &frame, running[i]);
    }
    sl_buf_free(&frame);
    return 0;
}

int co_server_check_spec(const void *frame, size_t len, sl_err *err)
{
    msg *m = msg_decode(frame, len, err);
    if (!m)
        return -1;
    spec sp;
    int rc = msg_type(m) == MSG_SUBMIT ? spec_read(m, &sp, err)
                                       : sl_err_setc(err, SL_INVALID, "not a submit message");
    if (msg_type(m) == MSG_SUBMIT)
        spec_free(&sp);
    msg_free(m);
    return rc;
}

/* When a schedule first seen (or given a new interval) is due: an interval
 * after its last run was submitted, so a restart does not run every audit
 * at once; now if it never ran. */
static double first_due(co_server *s, const sched_row *r, double now)
{
    co_job_row row;
    if (!r->last_job || co_store_get_job(s->store, r->last_job, &row, NULL) != 1 ||
        row.submitted <= 0)
        return now;
    double left = row.submitted + (double)r->interval_s - (double)sl_wall_ms() / 1000.0;
    return left > 0 ? now + left : now;
}

/* Queues each stored scheduled audit that is due, unless its last run is
 * still waiting or running. The schedules are read again at each pass, so
 * one added or removed by a client counts at once; their due times are
 * kept here, by name (both lists sorted, merged in one walk). */
static void run_schedule(co_server *s)
{
    double now = sl_now();
    sched_list l;
    sl_err e = {0};
    sched_due *due = NULL;
    if (sched_load(s, &l, &e))
        goto fail;
    if (l.n && !(due = calloc(l.n, sizeof *due))) {
        sl_err_set(&e, "out of memory");
        sched_list_free(&l);
        goto fail;
    }
    size_t k = 0;
    for (size_t i = 0; i < l.n; i++) {
        sched_row *r = &l.v[i];
        while (k < s->ndue && strcmp(s->due[k].name, r->name) < 0)
            k++;
        int known = k < s->ndue && !strcmp(s->due[k].name, r->name) &&
                    s->due[k].interval_s == r->interval_s;
        due[i].name = r->name, r->name = NULL; /* the due list owns it now */
        due[i].interval_s = r->interval_s;
        due[i].next = known ? s->due[k].next : first_due(s, r, now);
    }
    for (size_t i = 0; i < s->ndue; i++)
        free(s->due[i].name);
    free(s->due);
    s->due = due, s->ndue = l.n;

    for (size_t i = 0; i < l.n; i++) {
        const sched_row *r = &l.v[i];
        if (now < due[i].next)
            continue;
        due[i].next = now + (double)r->interval_s;
        co_job_row row;
        if (r->last_job && co_store_get_job(s->store, r->last_job, &row, NULL) == 1 &&
            (!strcmp(row.state, "queued") || !strcmp(row.state, "running")))
            continue;
        char tbl[256];
        int64_t job;
        spec_table(r->spec, r->len, tbl, sizeof tbl);
        if (co_store_add_job(s->store, r->spec, r->len, tbl, spec_priority(r->spec, r->len), &job,
                             &e) ||
            co_store_schedule_set_last(s->store, due[i].name, job, &e)) {
            sl_err_wrap(&e, "scheduled audit %s", due[i].name);
            break;
        }
        publish_state(s, job, "queued", NULL);
        if (s->verbose)
            fprintf(stderr, "sluice coordinator: scheduled audit %s queued as job %lld\n",
                    due[i].name, (long long)job);
    }
    sched_list_free(&l);
    if (!e.msg[0])
        return;
fail:
    /* the control database refused: said once a minute, tried each pass */
    if (now - s->sched_err_at >= 60 || s->sched_err_at == 0) {
        s->sched_err_at = now;
        log_line(NULL, e.msg);
    }
}

int co_server_run(co_server *s, volatile sig_atomic_t *stop, sl_err *err)
{
    s->stop = stop;
    int rc = 0;
    while (!*stop) {
        double now = sl_now();
        if (s->kick || now >= s->next_pass) {
            s->kick = 0;
            s->next_pass = now + 0.2;
            run_schedule(s);
            if (start_pending(s, err)) {
                rc = -1;
                break;
            }
        }
        if (co_run(s->c, 200, err)) {
            rc = -1;
            break;
        }
        for (active **pp = &s->act; *pp;) {
            active *a = *pp;
            if (co_job_state(a->j, NULL, NULL) == CO_JOB_RUNNING) {
                pp = &a->next;
                continue;
            }
            end_job(s, a);
            *pp = a->next;
            s->nact--;
            active_free(a);
            s->kick = 1; /* a slot is free for a queued job */
        }
    }
    /* shutting down: running jobs stay "running" in the control database,
     * to resume at the next start */
    while (s->act) {
        active *a = s->act;
        s->act = a->next;
        active_free(a);
    }
    s->nact = 0;
    return *stop ? 0 : rc;
}

/* A socket of type bound at ep (a CURVE server with curve_secret); NULL with err. */
static void *bound_socket(void *zctx, int type, const char *ep, const char *what,
                          const char *curve_secret, sl_err *err)
{
    void *sock = zmq_socket(zctx, type);
    int linger = 0;
    if (!sock)
        return sl_err_set(err, "cannot create %s socket: %s", what, zmq_strerror(zmq_errno())),
               NULL;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    if (curve_secret && curve_server(sock, curve_secret, err)) {
        zmq_close(sock);
        return NULL;
    }
    if (zmq_bind(sock, ep) != 0) {
        sl_err_set(err, "cannot bind %s endpoint %s: %s", what, ep, zmq_strerror(zmq_errno()));
        zmq_close(sock);
        return NULL;
    }
    return sock;
}

/* The schedule file's audits into the control database (replacing what
 * the file put there at the last start). */
static int sync_schedule_file(co_server *s, const co_server_config *cfg, sl_err *err)
{
    co_store_schedule *v = calloc(cfg->nschedule + 1, sizeof *v);
    if (!v)
        return sl_err_set(err, "out of memory");
    for (size_t i = 0; i < cfg->nschedule; i++)
        v[i] = (co_store_schedule){cfg->schedule[i].name, cfg->schedule[i].interval_s,
                                   cfg->schedule[i].spec, cfg->schedule[i].len};
    int rc = co_store_schedule_sync_file(s->store, v, cfg->nschedule, err);
    free(v);
    return rc ? sl_err_wrap(err, "--schedule") : 0;
}

co_server *co_server_new(const co_server_config *cfg, sl_err *err)
{
    co_server *s = calloc(1, sizeof *s);
    if (!s)
        return sl_err_set(err, "out of memory"), NULL;
    s->verbose = cfg->verbose;
    s->max_jobs = cfg->max_jobs ? cfg->max_jobs : 16;
    if (!(s->store = co_store_open(cfg->state, err)) || sync_schedule_file(s, cfg, err) ||
        !(s->zctx = zmq_ctx_new()) ||
        (cfg->curve_clients &&
         !(s->zap = curve_zap_start(s->zctx, cfg->curve_clients, cfg->ncurve_clients, err))) ||
        !(s->c = co_new(s->zctx, cfg->workers_endpoint, cfg->curve_secret, err)) ||
        !(s->clients = bound_socket(s->zctx, ZMQ_ROUTER, cfg->clients_endpoint, "client",
                                    cfg->curve_secret, err)) ||
        !(s->pub = bound_socket(s->zctx, ZMQ_PUB, cfg->events_endpoint, "events", cfg->curve_secret,
                                err))) {
        if (!err || !err->msg[0])
            sl_err_set(err, "cannot start the coordinator");
        co_server_free(s);
        return NULL;
    }
    co_set_heartbeat_timeout(s->c, cfg->heartbeat_timeout_ms);
    co_set_request_timeout(s->c, cfg->request_timeout_ms);
    co_set_service(s->c, s->clients, serve_client, s);
    co_set_log(s->c, log_line, NULL);
    return s;
}

void co_server_free(co_server *s)
{
    if (!s)
        return;
    if (s->zap) { /* unblocks the ZAP thread before the context waits for it */
        zmq_ctx_shutdown(s->zctx);
        curve_zap_stop(s->zap);
    }
    if (s->c)
        co_free(s->c);
    if (s->clients)
        zmq_close(s->clients);
    if (s->pub)
        zmq_close(s->pub);
    if (s->zctx)
        zmq_ctx_term(s->zctx);
    co_store_close(s->store);
    sl_buf_free(&s->frame);
    for (size_t i = 0; i < s->ndue; i++)
        free(s->due[i].name);
    free(s->due);
    free(s);
}
