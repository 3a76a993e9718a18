/* A migration's state: what is kept in the control database, the status
 * document, the routing document, steering traffic, and abort. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl_impl.h"

/* Length of the valid UTF-8 sequence at p (as jansson accepts them: no
 * overlong forms, no surrogates, nothing past U+10FFFF), 0 if invalid. */
static size_t utf8_seq(const unsigned char *p)
{
    unsigned char b = p[0];
    if (b < 0x80)
        return 1;
    size_t n = b >= 0xC2 && b <= 0xDF   ? 2
               : b >= 0xE0 && b <= 0xEF ? 3
               : b >= 0xF0 && b <= 0xF4 ? 4
                                        : 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b == 0xE0)
        lo = 0xA0;
    else if (b == 0xED)
        hi = 0x9F;
    else if (b == 0xF0)
        lo = 0x90;
    else if (b == 0xF4)
        hi = 0x8F;
    for (size_t i = 1; i < n; i++) {
        if (p[i] < (i == 1 ? lo : 0x80) || p[i] > (i == 1 ? hi : 0xBF))
            return 0;
    }
    return n;
}

void ctl_utf8_fix(char *s)
{
    /* text cut to a fixed buffer may end inside a character, and a
     * database's message may not be UTF-8: JSON needs it whole */
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        size_t n = utf8_seq(p);
        if (n == 0)
            *p++ = '?';
        else
            p += n;
    }
}

void ctl_logf(ctl *c, const char *fmt, ...)
{
    if (!c->log)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    ctl_utf8_fix(line);
    c->log(c->log_ctx, line);
}

void mig_fix_text(mig *g)
{
    ctl_utf8_fix(g->cls_reason);
    ctl_utf8_fix(g->div_examples);
    ctl_utf8_fix(g->schema_problem);
    ctl_utf8_fix(g->agg_detail);
    ctl_utf8_fix(g->abort_reason);
    ctl_utf8_fix(g->router_error);
    ctl_utf8_fix(g->waiting_for);
    for (size_t i = 0; i < g->ngates; i++)
        ctl_utf8_fix(g->gates[i].detail);
}

char *ctl_iso(int64_t ms, char *buf, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

const char *ctl_dsn(ctl *c, const char *name)
{
    for (size_t i = 0; i < c->ndbs; i++)
        if (strcmp(c->dbs[i].name, name) == 0)
            return c->dbs[i].dsn;
    return NULL;
}

mig *mig_new(ct_manifest *m, char *manifest_json)
{
    mig *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->table_div = malloc(m->ntables * sizeof *g->table_div);
    g->table_div_at = calloc(m->ntables, sizeof *g->table_div_at);
    g->gate_job = calloc(m->ntables, sizeof *g->gate_job);
    g->table_cdiv = calloc(m->ntables, sizeof *g->table_cdiv);
    g->table_cdiv_at = calloc(m->ntables, sizeof *g->table_cdiv_at);
    if (!g->table_div || !g->table_div_at || !g->gate_job || !g->table_cdiv || !g->table_cdiv_at) {
        free(g->table_div);
        free(g->table_div_at);
        free(g->gate_job);
        free(g->table_cdiv);
        free(g->table_cdiv_at);
        free(g);
        return NULL;
    }
    for (size_t i = 0; i < m->ntables; i++)
        g->table_div[i] = -1;
    g->m = m;
    g->manifest_json = manifest_json;
    g->strategy = m->strategy;
    g->step_idx = -1;
    g->routing_version = 1;
    strcpy(g->reads, "source");
    strcpy(g->writes, "source");
    g->detection_s = g->rollback_s = g->write_pause_s = -1;
    g->last_val_table = -1;
    g->created_ms = g->updated_ms = g->phase_started_ms = sl_wall_ms();
    return g;
}

void mig_free(mig *g)
{
    if (!g)
        return;
    ct_manifest_free(g->m);
    free(g->manifest_json);
    free(g->table_div);
    free(g->table_div_at);
    free(g->gate_job);
    free(g->table_cdiv);
    free(g->table_cdiv_at);
    json_decref(g->shadow_examples);
    json_decref(g->dry_report);
    free(g);
}

mig *ctl_find(ctl *c, const char *id)
{
    for (size_t i = 0; i < c->nmigs; i++)
        if (strcmp(c->migs[i]->m->id, id) == 0)
            return c->migs[i];
    return NULL;
}

ct_phase mig_phase(const mig *g)
{
    return g->m->phases[g->phase_idx];
}

const char *mig_state_name(int s)
{
    static const char *const names[] = {"running", "waiting_approval", "aborted", "completed"};
    return s >= 0 && s <= MS_COMPLETED ? names[s] : "unknown";
}

/* Classification from both sides' facts: the class, its reason, and the
 * strategy when the manifest left it to sluice. */
void mig_classify(mig *g, const ct_side_facts *src, const ct_side_facts *dst)
{
    ct_strategy def;
    g->cls = ct_classify(src, dst, &def, g->cls_reason, sizeof g->cls_reason);
    g->classified = 1;
    if (g->strategy == CT_STRAT_AUTO)
        g->strategy = def;
    g->dirty = 1;
}

/* ---- kept in the control database -------------------------------------------- */

static json_t *i64_array(const int64_t *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        json_array_append_new(a, json_integer(v[i]));
    return a;
}

json_t *mig_state_json(const mig *g)
{
    json_t *jobs = json_array(), *gates = json_array();
    for (size_t i = 0; i < g->njobs; i++)
        json_array_append_new(jobs, json_pack("[I, i, i, I, I]", (json_int_t)g->jobs[i].job,
                                              g->jobs[i].kind, g->jobs[i].table,
                                              (json_int_t)g->jobs[i].submitted_ms,
                                              (json_int_t)g->jobs[i].divergent));
    for (size_t i = 0; i < g->ngates; i++)
        json_array_append_new(
            gates, json_pack("[s, b, s]", g->gates[i].name, g->gates[i].ok, g->gates[i].detail));
    json_t *s = json_object();
#define SETI(k, v) json_object_set_new(s, k, json_integer((json_int_t)(v)))
#define SETS(k, v) json_object_set_new(s, k, json_string(v))
#define SETR(k, v) json_object_set_new(s, k, json_real(v))
    SETI("phase_idx", g->phase_idx);
    SETI("state", g->state);
    SETS("waiting_for", g->waiting_for);
    SETI("entered", g->entered);
    SETI("phase_started_ms", g->phase_started_ms);
    SETI("classified", g->classified);
    SETI("cls", g->cls);
    SETS("cls_reason", g->cls_reason);
    SETI("strategy", g->strategy);
    SETI("routing_version", g->routing_version);
    SETI("read_pct", g->read_pct);
    SETS("reads", g->reads);
    SETS("writes", g->writes);
    SETI("step_idx", g->step_idx);
    SETI("step_started_ms", g->step_started_ms);
    SETI("divergent", g->divergent);
    json_object_set_new(s, "table_div", i64_array(g->table_div, g->m->ntables));
    json_object_set_new(s, "table_div_at", i64_array(g->table_div_at, g->m->ntables));
    json_object_set_new(s, "table_cdiv", i64_array(g->table_cdiv, g->m->ntables));
    json_object_set_new(s, "table_cdiv_at", i64_array(g->table_cdiv_at, g->m->ntables));
    json_object_set_new(s, "gate_job", i64_array(g->gate_job, g->m->ntables));
    SETS("div_examples", g->div_examples);
    SETI("copy_done", g->copy_done);
    SETI("last_val_job", g->last_val_job);
    SETI("last_val_kind", g->last_val_kind);
    SETI("last_val_table", g->last_val_table);
    SETI("last_val_equal", g->last_val_equal);
    SETI("last_val_ms", g->last_val_ms);
    SETI("shadow_compared", g->shadow_compared);
    SETI("shadow_mismatched", g->shadow_mismatched);
    SETI("shadow_last_ms", g->shadow_last_ms);
    json_object_set_new(s, "jobs", jobs);
    json_object_set_new(s, "gates", gates);
    SETI("gates_ms", g->gates_ms);
    SETI("last_audit_ms", g->last_audit_ms);
    SETI("last_sample_ms", g->last_sample_ms);
    SETI("sample_next", g->sample_next);
    SETI("gate_round_ms", g->gate_round_ms);
    SETI("phase_bad_vals", g->phase_bad_vals);
    SETI("phase_good_vals", g->phase_good_vals);
    SETI("green_since_ms", g->green_since_ms);
    SETI("agg_ok", g->agg_ok);
    SETI("repl_created", g->repl_created);
    SETI("repl_dropped", g->repl_dropped);
    SETS("abort_reason", g->abort_reason);
    SETR("detection_s", g->detection_s);
    SETR("rollback_s", g->rollback_s);
    SETI("aborts", g->aborts);
    SETI("step_approved", g->step_approved);
    SETI("writes_cut", g->writes_cut);
    SETI("cut_stage", g->cut_stage);
    SETI("hb", g->hb);
    SETR("write_pause_s", g->write_pause_s);
    SETI("writes_moved_ms", g->writes_moved_ms);
    SETI("evidence_since_ms", g->evidence_since_ms);
    SETI("aborted_ms", g->aborted_ms);
    SETI("route_pending", g->route_pending);
    SETI("sealed", g->sealed);
    SETI("created_ms", g->created_ms);
    SETI("updated_ms", g->updated_ms);
    if (g->dry_report)
        json_object_set(s, "dry_report", g->dry_report);
#undef SETI
#undef SETS
#undef SETR
    return s;
}

static int64_t geti(json_t *s, const char *k)
{
    return (int64_t)json_integer_value(json_object_get(s, k));
}

static void gets(json_t *s, const char *k, char *out, size_t len)
{
    const char *v = json_string_value(json_object_get(s, k));
    snprintf(out, len, "%s", v ? v : "");
}

static void geta(json_t *s, const char *k, int64_t *out, size_t n)
{
    json_t *a = json_object_get(s, k);
    for (size_t i = 0; i < n && i < json_array_size(a); i++)
        out[i] = (int64_t)json_integer_value(json_array_get(a, i));
}

int mig_state_load(mig *g, json_t *s)
{
    if (!json_is_object(s))
        return -1;
    g->phase_idx = (int)geti(s, "phase_idx");
    if (g->phase_idx < 0 || (size_t)g->phase_idx >= g->m->nphases)
        return -1;
    g->state = (int)geti(s, "state");
    gets(s, "waiting_for", g->waiting_for, sizeof g->waiting_for);
    g->entered = (int)geti(s, "entered");
    g->phase_started_ms = geti(s, "phase_started_ms");
    g->classified = (int)geti(s, "classified");
    g->cls = (ct_class)geti(s, "cls");
    gets(s, "cls_reason", g->cls_reason, sizeof g->cls_reason);
    g->strategy = (ct_strategy)geti(s, "strategy");
    g->routing_version = geti(s, "routing_version");
    g->read_pct = (int)geti(s, "read_pct");
    gets(s, "reads", g->reads, sizeof g->reads);
    gets(s, "writes", g->writes, sizeof g->writes);
    g->step_idx = (int)geti(s, "step_idx");
    g->step_started_ms = geti(s, "step_started_ms");
    g->divergent = geti(s, "divergent");
    geta(s, "table_div", g->table_div, g->m->ntables);
    geta(s, "table_div_at", g->table_div_at, g->m->ntables);
    geta(s, "table_cdiv", g->table_cdiv, g->m->ntables);
    geta(s, "table_cdiv_at", g->table_cdiv_at, g->m->ntables);
    geta(s, "gate_job", g->gate_job, g->m->ntables);
    gets(s, "div_examples", g->div_examples, sizeof g->div_examples);
    g->copy_done = (int)geti(s, "copy_done");
    g->last_val_job = geti(s, "last_val_job");
    g->last_val_kind = (int)geti(s, "last_val_kind");
    g->last_val_table = (int)geti(s, "last_val_table");
    g->last_val_equal = (int)geti(s, "last_val_equal");
    g->last_val_ms = geti(s, "last_val_ms");
    g->shadow_compared = geti(s, "shadow_compared");
    g->shadow_mismatched = geti(s, "shadow_mismatched");
    g->shadow_last_ms = geti(s, "shadow_last_ms");
    json_t *jobs = json_object_get(s, "jobs"), *x;
    size_t i;
    json_array_foreach(jobs, i, x)
    {
        if (g->njobs == CTL_MAX_JOBS)
            break;
        vjob *j = &g->jobs[g->njobs];
        j->job = (int64_t)json_integer_value(json_array_get(x, 0));
        j->kind = (int)json_integer_value(json_array_get(x, 1));
        j->table = (int)json_integer_value(json_array_get(x, 2));
        j->submitted_ms = (int64_t)json_integer_value(json_array_get(x, 3));
        j->divergent = (int64_t)json_integer_value(json_array_get(x, 4));
        if (j->table >= 0 && (size_t)j->table < g->m->ntables)
            g->njobs++;
    }
    json_t *gates = json_object_get(s, "gates");
    json_array_foreach(gates, i, x)
    {
        if (g->ngates == CTL_MAX_GATES)
            break;
        gate *t = &g->gates[g->ngates++];
        snprintf(t->name, sizeof t->name, "%s", json_string_value(json_array_get(x, 0)) ?: "");
        t->ok = json_is_true(json_array_get(x, 1));
        snprintf(t->detail, sizeof t->detail, "%s", json_string_value(json_array_get(x, 2)) ?: "");
    }
    g->gates_ms = geti(s, "gates_ms");
    g->last_audit_ms = geti(s, "last_audit_ms");
    g->last_sample_ms = geti(s, "last_sample_ms");
    g->sample_next = (size_t)geti(s, "sample_next");
    g->gate_round_ms = geti(s, "gate_round_ms");
    g->phase_bad_vals = geti(s, "phase_bad_vals");
    g->phase_good_vals = geti(s, "phase_good_vals");
    g->green_since_ms = geti(s, "green_since_ms");
    g->agg_ok = (int)geti(s, "agg_ok");
    g->repl_created = (int)geti(s, "repl_created");
    g->repl_dropped = (int)geti(s, "repl_dropped");
    gets(s, "abort_reason", g->abort_reason, sizeof g->abort_reason);
    g->detection_s = json_real_value(json_object_get(s, "detection_s"));
    g->rollback_s = json_real_value(json_object_get(s, "rollback_s"));
    g->aborts = (int)geti(s, "aborts");
    g->step_approved = (int)geti(s, "step_approved");
    g->writes_cut = (int)geti(s, "writes_cut");
    g->cut_stage = (int)geti(s, "cut_stage");
    g->hb = (int)geti(s, "hb");
    g->write_pause_s = json_is_real(json_object_get(s, "write_pause_s"))
                           ? json_real_value(json_object_get(s, "write_pause_s"))
                           : -1;
    g->writes_moved_ms = geti(s, "writes_moved_ms");
    g->evidence_since_ms = geti(s, "evidence_since_ms");
    g->aborted_ms = geti(s, "aborted_ms");
    g->route_pending = (int)geti(s, "route_pending");
    g->sealed = (int)geti(s, "sealed");
    g->created_ms = geti(s, "created_ms");
    g->updated_ms = geti(s, "updated_ms");
    /* a state that does not fit the manifest is refused, not indexed with */
    if (g->state < MS_RUNNING || g->state > MS_COMPLETED || g->step_idx < -1 ||
        g->step_idx >= (int)g->m->nsteps || g->last_val_table < -1 ||
        g->last_val_table >= (int)g->m->ntables || g->last_val_kind < 0 || g->last_val_kind > 2)
        return -1;
    /* after a restart: the gates are stale until the first pass, and the
     * time this process was not running is neither soak nor silence */
    int64_t now = sl_wall_ms();
    g->gates_epoch = -1;
    g->resumed_ms = now;
    g->green_since_ms = now;
    if (g->step_idx >= 0)
        g->step_started_ms = now;
    json_t *dr = json_object_get(s, "dry_report");
    if (dr)
        g->dry_report = json_incref(dr);
    return 0;
}

/* ---- documents ----------------------------------------------------------------- */

static json_t *opt_real(double v)
{
    return v < 0 ? json_null() : json_real(v);
}

json_t *mig_routing(const mig *g)
{
    return json_pack("{s:I, s:s, s:i, s:s}", "version", (json_int_t)g->routing_version, "reads",
                     g->reads, "read_percent_target", g->read_pct, "writes", g->writes);
}

json_t *mig_status(ctl *c, const mig *g)
{
    (void)c;
    char at[40];
    int64_t now = sl_wall_ms();
    json_t *gates = json_array();
    for (size_t i = 0; i < g->ngates; i++)
        json_array_append_new(gates, json_pack("{s:s, s:b, s:s}", "name", g->gates[i].name, "ok",
                                               g->gates[i].ok, "detail", g->gates[i].detail));
    json_t *lv = json_null();
    static const char *const kinds[] = {"gate", "audit", "sample"};
    if (g->last_val_ms > 0)
        lv = json_pack("{s:I, s:s, s:s, s:s, s:b}", "job", (json_int_t)g->last_val_job, "kind",
                       kinds[g->last_val_kind % 3], "table",
                       g->last_val_table >= 0 ? g->m->tables[g->last_val_table].name : "",
                       "finished_at", ctl_iso(g->last_val_ms, at, sizeof at), "equal",
                       g->last_val_equal);
    json_t *hist = json_array();
    for (size_t i = 0; i < g->nhist; i++) {
        const struct hist *h = &g->history[(g->hhead + CTL_HISTORY - g->nhist + i) % CTL_HISTORY];
        json_array_append_new(hist,
                              json_pack("{s:s, s:I, s:f}", "at", ctl_iso(h->at_ms, at, sizeof at),
                                        "divergent_rows", (json_int_t)h->divergent, "lag", h->lag));
    }
    double ratio =
        g->shadow_compared ? (double)g->shadow_mismatched / (double)g->shadow_compared : 0;
    int64_t since = g->last_val_ms > 0 ? g->last_val_ms : g->phase_started_ms;
    char created[40], updated[40];
    json_t *s = json_pack(
        "{s:s, s:s, s:s, s:s, s:o, s:s, s:b, s:{s:i, s:s, s:s}, s:i, s:b, s:o, s:I, s:o, s:o, "
        "s:f, s:{s:I, s:I, s:f}, s:o, s:o, s:o, s:i, s:s, s:s, s:o}",
        "migration_id", g->m->id, "phase", ct_phase_name(mig_phase(g)), "state",
        mig_state_name(g->state), "waiting_for", g->waiting_for, "classification",
        g->classified ? json_string(ct_class_name(g->cls)) : json_null(), "classification_reason",
        g->cls_reason, "dry_run", g->m->dry_run, "traffic", "read_percent_target", g->read_pct,
        "writes", g->writes, "reads", g->reads, "cutover_step", g->step_idx + 1, "in_window",
        ct_manifest_in_window(g->m, now), "gates", gates, "divergent_rows",
        (json_int_t)g->divergent, "replication_lag_seconds",
        g->lag_known ? json_real(g->lag_s) : json_null(), "last_validation", lv,
        "seconds_since_validation", (double)(now - since) / 1000.0, "shadow", "compared",
        (json_int_t)g->shadow_compared, "mismatched", (json_int_t)g->shadow_mismatched, "ratio",
        ratio, "abort_reason", g->abort_reason[0] ? json_string(g->abort_reason) : json_null(),
        "detection_seconds", opt_real(g->detection_s), "rollback_seconds", opt_real(g->rollback_s),
        "aborts", g->aborts, "created_at", ctl_iso(g->created_ms, created, sizeof created),
        "updated_at", ctl_iso(g->updated_ms, updated, sizeof updated), "history", hist);
    if (!s)
        return NULL;
    json_object_set_new(
        s, "strategy",
        json_string(g->strategy == CT_STRAT_AUTO ? "pending" : ct_strategy_name(g->strategy)));
    if (g->router_error[0])
        json_object_set_new(s, "router_error", json_string(g->router_error));
    json_object_set_new(s, "write_pause_seconds", opt_real(g->write_pause_s));
    json_object_set_new(s, "reverse_replication", json_boolean(g->writes_cut));
    if (g->m->verify_changes) {
        json_int_t following = 0;
        for (size_t i = 0; i < g->njobs; i++)
            following += g->jobs[i].kind == VK_CHANGES;
        json_object_set_new(
            s, "verify_changes",
            json_pack("{s:I, s:o}", "following", following, "last_error",
                      g->changes_error[0] ? json_string(g->changes_error) : json_null()));
    }
    if (g->dry_report)
        json_object_set(s, "dry_run_report", g->dry_report);
    return s;
}

void mig_sample(mig *g)
{
    int64_t now = sl_wall_ms();
    if (g->nhist && now - g->history[(g->hhead + CTL_HISTORY - 1) % CTL_HISTORY].at_ms < 1000)
        return; /* one point a second at most */
    struct hist *h = &g->history[g->hhead];
    h->at_ms = now;
    h->divergent = g->divergent;
    h->lag = g->lag_known ? g->lag_s : 0;
    g->hhead = (g->hhead + 1) % CTL_HISTORY;
    if (g->nhist < CTL_HISTORY)
        g->nhist++;
}

/* ---- traffic ------------------------------------------------------------------- */

/* The routing endpoint as a ct_router: publishing the new version is its
 * confirmation (pollers see it at once; long polls are woken). */
typedef struct endpoint_router {
    ctl *c;
    mig *g;
} endpoint_router;

static int endpoint_apply(void *self, const ct_route *r, sl_err *err)
{
    (void)err;
    endpoint_router *e = self;
    mig *g = e->g;
    char rd[8], wr[8]; /* r's strings may be g's own fields */
    snprintf(rd, sizeof rd, "%s", r->reads);
    snprintf(wr, sizeof wr, "%s", r->writes);
    memcpy(g->reads, rd, sizeof rd);
    memcpy(g->writes, wr, sizeof wr);
    g->read_pct = r->read_pct;
    g->routing_version++;
    g->dirty = 1;
    pthread_cond_broadcast(&e->c->routing_cv);
    return 0;
}

int64_t mig_route(ctl *c, mig *g, const char *reads, int pct, const char *writes)
{
    int64_t t0 = sl_now_ms();
    endpoint_router ep = {c, g};
    ct_haproxy_router hp = {c->haproxy, &g->m->router};
    ct_router routers[2] = {{"routing endpoint", endpoint_apply, &ep}};
    size_t n = 1;
    if (g->m->router.haproxy && !g->m->dry_run)
        routers[n++] = ct_haproxy_router_make(&hp);
    char rd[8], wr[8];
    snprintf(rd, sizeof rd, "%s", reads);
    snprintf(wr, sizeof wr, "%s", writes);
    ct_route route = {rd, pct, wr};
    g->router_error[0] = 0;
    for (size_t i = 0; i < n; i++) {
        sl_err e = {0};
        if (!routers[i].self || (i > 0 && !c->haproxy))
            sl_err_setc(&e, SL_INVALID, "no HAProxy socket: start sluice control with --haproxy");
        else
            routers[i].apply(routers[i].self, &route, &e);
        if (e.code != SL_OK) {
            snprintf(g->router_error, sizeof g->router_error, "%.60s: %.500s", routers[i].name,
                     e.msg);
            ctl_utf8_fix(g->router_error);
            ctl_logf(c, "%s: steering traffic failed: %s", g->m->id, g->router_error);
            return -1;
        }
    }
    g->route_applied = 1;
    return sl_now_ms() - t0;
}

void mig_abort(ctl *c, mig *g, const char *actor, const char *reason, int64_t detected_from_ms)
{
    int64_t decided = sl_wall_ms();
    /* aborted from here on: a second abort (the runner's and an
     * operator's) finds it so while the router is retried unlocked */
    g->state = MS_ABORTED;
    g->epoch++;
    char note[300] = "";
    int64_t took;
    if (g->writes_cut) /* writes are on the target: drain the reverse stream first */
        took = mig_write_rollback(c, g, note, sizeof note) == 0 ? 0 : -1;
    else
        took = mig_route(c, g, "source", 0, "source");
    int tries = 0;
    /* the router must confirm: a failed try is retried for a few seconds */
    while (took < 0 && tries++ < 10) {
        pthread_mutex_unlock(&c->mu);
        struct timespec ts = {0, 200 * 1000000L};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&c->mu);
        took = mig_route(c, g, "source", 0, "source");
    }
    g->state = MS_ABORTED;
    g->waiting_for[0] = 0;
    snprintf(g->abort_reason, sizeof g->abort_reason, "%s%s", reason, note);
    mig_fix_text(g);
    g->detection_s = detected_from_ms > 0 ? (double)(decided - detected_from_ms) / 1000.0 : -1;
    g->rollback_s = took >= 0 ? (double)(sl_wall_ms() - decided) / 1000.0 : -1;
    g->aborted_ms = decided;
    g->route_pending = took < 0; /* the runner retries until the router confirms */
    g->aborts++;
    g->updated_ms = sl_wall_ms();
    g->dirty = 1;
    ctl_logf(c, "%s: ABORTED by %s: %s", g->m->id, actor, reason);
    ctl_event(c, g, actor, "abort",
              json_pack("{s:s, s:o, s:o, s:s}", "reason", g->abort_reason, "detection_seconds",
                        opt_real(g->detection_s), "rollback_seconds", opt_real(g->rollback_s),
                        "router", took >= 0 ? "confirmed" : g->router_error));
    sl_err e = {0};
    if (ctl_store_save(c, g, &e) != 0)
        ctl_logf(c, "%s", e.msg);
}
