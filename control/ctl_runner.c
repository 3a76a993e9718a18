/* The phase runner: one pass over a migration measures what its phase
 * needs (databases, replication, validation jobs on the cluster),
 * evaluates the phase's gates, moves cutover steps, and aborts when a
 * threshold trips. Passes run in the runner thread with the lock held;
 * every database and coordinator call is bounded by a timeout. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_impl.h"

#define DB_TIMEOUT_MS 5000
#define SCHEMA_EVERY_MS 5000
#define GATE_RETRY_MS 10000
#define ROUTER_CHECK_MS 1000
#define CHANGES_RETRY_MS 30000

static const char *const vkind_name[] = {"gate", "audit", "sample", "changes"};

/* ---- calls made with the lock released -------------------------------------------
 * A slow or dead database or coordinator must not hold up the HTTP API
 * (an abort above all). Only the runner thread touches g's connections,
 * g's job list and c->client, and it changes them only with the lock
 * held; what HTTP may change meanwhile (state, phase, counts) is looked
 * at again afterwards (g->epoch). */
static void out(ctl *c)
{
    pthread_mutex_unlock(&c->mu);
}

static void in(ctl *c)
{
    pthread_mutex_lock(&c->mu);
}

static int db_facts(ctl *c, ct_db *d, ct_side_facts *f, sl_err *e)
{
    out(c);
    int r = ct_db_facts(d, f, e);
    in(c);
    return r;
}

static int db_columns(ctl *c, ct_db *d, const char *t, ct_column **v, size_t *n, sl_err *e)
{
    out(c);
    int r = ct_db_columns(d, t, v, n, e);
    in(c);
    return r;
}

static int db_aggregate(ctl *c, ct_db *d, const ct_table *t, ct_aggregate *a, sl_err *e)
{
    out(c);
    int r = ct_db_aggregate(d, t->name, t->where, a, e);
    in(c);
    return r;
}

static void set_gate(mig *g, const char *name, int ok, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void set_gate(mig *g, const char *name, int ok, const char *fmt, ...)
{
    if (g->nbuilding == CTL_MAX_GATES)
        return;
    gate *t = &g->building[g->nbuilding++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ok = ok;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->detail, sizeof t->detail, fmt, ap);
    va_end(ap);
    ctl_utf8_fix(t->detail);
}

/* Whether an HTTP call moved g (a transition, approval or abort) while
 * the runner's pass had the lock released: the pass then stops, and the
 * next one starts from where g is. */
static int moved(const mig *g)
{
    return g->epoch != g->pass_epoch || g->state == MS_ABORTED || g->state == MS_COMPLETED;
}

static int all_ok(const gate *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!v[i].ok)
            return 0;
    return 1;
}

/* The gates evaluated so far in this pass all pass. */
static int building_ok(const mig *g)
{
    return all_ok(g->building, g->nbuilding);
}

static json_t *gates_json(const mig *g)
{
    json_t *a = json_array();
    for (size_t i = 0; i < g->ngates; i++)
        json_array_append_new(a, json_pack("{s:s, s:b, s:s}", "name", g->gates[i].name, "ok",
                                           g->gates[i].ok, "detail", g->gates[i].detail));
    return a;
}

/* The pass's gates become the published ones in one step, so that an
 * advance never sees a list half evaluated (the pass releases the lock). */
static void publish_gates(mig *g)
{
    memcpy(g->gates, g->building, g->nbuilding * sizeof *g->gates);
    g->ngates = g->nbuilding;
    g->gates_epoch = g->epoch;
}

static int cdc(const mig *g)
{
    return g->strategy == CT_STRAT_CDC;
}

/* ---- connections ----------------------------------------------------------------- */

static ct_db *side(ctl *c, mig *g, int target, sl_err *err)
{
    ct_db **d = target ? &g->dst : &g->src;
    if (*d)
        return *d;
    const char *name = target ? g->m->target : g->m->source;
    const char *dsn = ctl_dsn(c, name);
    if (!dsn) {
        sl_err_setc(err, SL_INVALID,
                    "no DSN for database \"%s\": give it in sluice control's --db-file", name);
        return NULL;
    }
    out(c);
    ct_db *opened = ct_db_open(dsn, DB_TIMEOUT_MS, err);
    in(c);
    if (*d) { /* opened meanwhile: cannot be, only the runner opens; keep one */
        ct_db_free(opened);
        return *d;
    }
    *d = opened;
    if (!*d)
        sl_err_wrap(err, "%s", name);
    return *d;
}

static void drop_conns(mig *g)
{
    ct_db_free(g->src);
    ct_db_free(g->dst);
    g->src = g->dst = NULL;
}

/* A failed query may have broken the connection: reopen next time. */
static void side_failed(mig *g, int target)
{
    ct_db **d = target ? &g->dst : &g->src;
    ct_db_free(*d);
    *d = NULL;
}

static void classify(ctl *c, mig *g)
{
    sl_err e = {0};
    ct_side_facts fs, ft;
    ct_db *s = side(c, g, 0, &e), *t = s ? side(c, g, 1, &e) : NULL;
    if (!s || !t || db_facts(c, s, &fs, &e) != 0 || db_facts(c, t, &ft, &e) != 0) {
        snprintf(g->cls_reason, sizeof g->cls_reason, "not classified yet: %s", e.msg);
        return;
    }
    mig_classify(g, &fs, &ft);
    ctl_event(c, g, "sluice", "classified",
              json_pack("{s:s, s:s, s:s}", "classification", ct_class_name(g->cls), "reason",
                        g->cls_reason, "strategy", ct_strategy_name(g->strategy)));
}

/* ---- schema ------------------------------------------------------------------------ */

/* Checks every table on both sides: 0 all present and compatible; else
 * 1 with why (a missing table, no key, a column differing). -1: a side
 * unreachable (why says so). */
static int schema_check(ctl *c, mig *g, char *why, size_t len, int *missing)
{
    *missing = 0;
    for (size_t i = 0; i < g->m->ntables; i++) {
        const char *tn = g->m->tables[i].name;
        ct_column *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        sl_err e = {0};
        ct_db *s = side(c, g, 0, &e);
        if (!s || db_columns(c, s, tn, &a, &na, &e) != 0) {
            if (s && e.code == SL_NOT_FOUND) {
                *missing = 1;
                snprintf(why, len, "table %s is missing on the source", tn);
                return 1;
            }
            snprintf(why, len, "source: %s", e.msg);
            side_failed(g, 0);
            return -1;
        }
        ct_db *t = side(c, g, 1, &e);
        if (!t || db_columns(c, t, tn, &b, &nb, &e) != 0) {
            ct_columns_free(a, na);
            if (t && e.code == SL_NOT_FOUND) {
                *missing = 1;
                snprintf(why, len, "table %s is missing on the target", tn);
                return 1;
            }
            snprintf(why, len, "target: %s", e.msg);
            side_failed(g, 1);
            return -1;
        }
        int keyed = 0;
        for (size_t k = 0; k < na; k++)
            keyed |= a[k].in_key;
        char w[300] = "";
        int diff = ct_columns_compare(a, na, b, nb, w, sizeof w);
        ct_columns_free(a, na);
        ct_columns_free(b, nb);
        if (!keyed) {
            *missing = 1;
            snprintf(why, len, "table %s has no primary key on the source; give it one", tn);
            return 1;
        }
        if (diff) {
            snprintf(why, len, "table %s: %s", tn, w);
            return 1;
        }
    }
    return 0;
}

/* ---- validation jobs --------------------------------------------------------------- */

static int submit(ctl *c, mig *g, int kind, size_t table)
{
    if (g->njobs == CTL_MAX_JOBS || sl_wall_ms() < g->submit_after_ms)
        return -1;
    sl_job_spec spec = {0};
    spec.source = g->m->source;
    spec.target = g->m->target;
    spec.table = g->m->tables[table].name;
    spec.where = g->m->tables[table].where;
    /* replication applies changes a little after the source: re-check
     * a difference before calling it a divergence */
    spec.rechecks = 3;
    /* ... given time enough for the lag measured (1 s at least, 30 at most) */
    double lag = g->lag_known && isfinite(g->lag_s) ? g->lag_s * 1500 : 0;
    spec.settle_ms = lag < 1000 ? 1000 : lag > 30000 ? 30000 : (int)lag;
    spec.priority = kind == VK_GATE    ? SL_PRIO_HIGH
                    : kind == VK_AUDIT ? SL_PRIO_LOW
                                       : SL_PRIO_NORMAL;
    /* follows both sides' changes until cancelled: no ranges, no end */
    spec.changes = kind == VK_CHANGES;
    int64_t job = 0;
    sl_err e = {0};
    out(c);
    int rc = sl_client_submit(c->client, &spec, &job, &e);
    in(c);
    if (rc != 0) {
        /* a coordinator that timed out may still have taken it: wait
         * before another, so that failures cannot pile jobs up */
        g->submit_after_ms = sl_wall_ms() + 5000;
        ctl_logf(c, "%s: cannot submit the %s of %s: %s", g->m->id, vkind_name[kind], spec.table,
                 e.msg);
        return -1;
    }
    vjob *j = &g->jobs[g->njobs++];
    memset(j, 0, sizeof *j);
    j->job = job;
    j->kind = kind;
    j->table = (int)table;
    j->submitted_ms = sl_wall_ms();
    g->dirty = 1;
    return 0;
}

static mig *job_owner(ctl *c, int64_t job, vjob **out)
{
    for (size_t i = 0; i < c->nmigs; i++)
        for (size_t k = 0; k < c->migs[i]->njobs; k++)
            if (c->migs[i]->jobs[k].job == job) {
                *out = &c->migs[i]->jobs[k];
                return c->migs[i];
            }
    return NULL;
}

static void recount(mig *g)
{
    int64_t sum = 0;
    for (size_t i = 0; i < g->m->ntables; i++)
        sum += (g->table_div[i] > 0 ? g->table_div[i] : 0) + g->table_cdiv[i];
    g->divergent = sum;
}

/* A divergence event of one of our jobs: counted at once, so that an
 * abort does not wait for the job's end. */
static void on_divergence(ctl *c, mig *g, vjob *j, const sl_event *ev)
{
    if (ev->status == SL_DIV_TRANSIENT)
        return;
    if (ev->kind == SL_DIV_SCHEMA) {
        snprintf(g->schema_problem, sizeof g->schema_problem, "table %s: column %s: %s",
                 g->m->tables[j->table].name, ev->column ? ev->column : "?",
                 ev->problem ? ev->problem : "differs");
        return;
    }
    j->divergent++;
    if (j->kind == VK_CHANGES) {
        /* a changes job never ends: each divergence counts apart from the
         * audits' figure, timed by our clock (the coordinator's may differ)
         * at its arrival, after it was read: an audit submitted later tells
         * the table anew (poll_jobs) */
        g->table_cdiv[j->table]++;
        g->table_cdiv_at[j->table] = sl_wall_ms();
    } else if (j->submitted_ms >= g->table_div_at[j->table] &&
               j->divergent > g->table_div[j->table]) {
        g->table_div[j->table] = j->divergent;
        g->table_div_at[j->table] = j->submitted_ms;
    }
    recount(g);
    if (g->first_div_read_ms == 0 || ev->read_at_ms < g->first_div_read_ms)
        g->first_div_read_ms = ev->read_at_ms > 0 ? ev->read_at_ms : ev->at_ms;
    size_t len = strlen(g->div_examples);
    if (len < sizeof g->div_examples - 80) {
        char key[160] = "";
        size_t kl = 0;
        for (size_t i = 0; i < ev->nkey && kl < sizeof key - 1; i++)
            kl += (size_t)snprintf(key + kl, sizeof key - kl, "%s%s=%s", i ? "," : "",
                                   ev->key[i].column, ev->key[i].value ? ev->key[i].value : "NULL");
        if (kl >= sizeof key)
            kl = sizeof key - 1;
        snprintf(g->div_examples + len, sizeof g->div_examples - len, "%s%s %s (%s)",
                 len ? "; " : "", g->m->tables[j->table].name, key, ev->kind_name);
    }
    g->dirty = 1;
    (void)c;
}

static void drain_events(ctl *c)
{
    int bad = 0;
    for (int n = 0; n < 10000; n++) {
        sl_event ev;
        memset(&ev, 0, sizeof ev);
        sl_err e = {0};
        int r = sl_client_next_event(c->client, 0, &ev, &e);
        if (r <= 0) {
            sl_event_free(&ev);
            if (r < 0 && !bad++)
                ctl_logf(c, "event stream: %s", e.msg); /* once a pass, not per event */
            if (r == 0)
                return;
            continue;
        }
        vjob *j = NULL;
        mig *g = ev.type == SL_EV_DIVERGENCE ? job_owner(c, ev.job, &j) : NULL;
        if (g)
            on_divergence(c, g, j, &ev);
        sl_event_free(&ev);
    }
}

/* Follows g's jobs: a finished one becomes a validation result. */
static void poll_jobs(ctl *c, mig *g)
{
    for (size_t i = 0; i < g->njobs;) {
        vjob *j = &g->jobs[i];
        sl_job_status st;
        memset(&st, 0, sizeof st);
        sl_err e = {0};
        out(c);
        int rc = sl_client_status(c->client, j->job, 0, &st, &e);
        in(c);
        j = &g->jobs[i]; /* the list is the runner's: unchanged, but re-read */
        if (rc != 0) {
            sl_job_status_free(&st);
            if (e.code != SL_NOT_FOUND)
                break; /* the coordinator is not answering: the rest wait for the next pass */
            st.state = SL_JOB_FAILED;
            snprintf(st.error, sizeof st.error, "%s", e.msg);
        }
        if (!sl_job_state_is_final(st.state)) {
            sl_job_status_free(&st);
            i++;
            continue;
        }
        if (j->kind == VK_CHANGES) {
            /* no verdict on the table: its divergences counted as they came;
             * a failure (or a cancel by someone else) is retried later */
            const char *tn = g->m->tables[j->table].name;
            snprintf(g->changes_error, sizeof g->changes_error, "%s (job %lld) %s%s%.180s", tn,
                     (long long)j->job, st.state_name, st.error[0] ? ": " : "", st.error);
            ctl_utf8_fix(g->changes_error);
            ctl_logf(c, "%s: verifying the changes of %s: job %lld %s: %s; again in %d s", g->m->id,
                     tn, (long long)j->job, st.state_name, st.error, CHANGES_RETRY_MS / 1000);
            g->changes_retry_ms = sl_wall_ms() + CHANGES_RETRY_MS;
            sl_job_status_free(&st);
            g->jobs[i] = g->jobs[--g->njobs];
            g->dirty = 1;
            continue;
        }
        int64_t div = (int64_t)(st.changed + st.missing + st.extra);
        int ok = st.state == SL_JOB_DONE;
        int equal = ok && div == 0 && st.schema == 0;
        const char *tn = g->m->tables[j->table].name;
        int64_t now = sl_wall_ms();
        if (ok) {
            /* a job submitted before the one that last told the table's
             * figure read older rows: it does not overwrite it */
            if (j->submitted_ms >= g->table_div_at[j->table]) {
                g->table_div[j->table] = div;
                g->table_div_at[j->table] = j->submitted_ms;
            }
            /* begun after the changes job's last divergence came: it read
             * the rows since, and its figure stands for them */
            if (j->submitted_ms > g->table_cdiv_at[j->table])
                g->table_cdiv[j->table] = 0;
            recount(g);
            if (g->divergent == 0) { /* every table exact again */
                g->div_examples[0] = 0;
                g->first_div_read_ms = 0;
            }
            g->last_val_job = j->job;
            g->last_val_kind = j->kind;
            g->last_val_table = j->table;
            g->last_val_equal = equal;
            g->last_val_ms = now;
            if (st.schema && !g->schema_problem[0])
                snprintf(g->schema_problem, sizeof g->schema_problem,
                         "table %s: the cluster found %llu schema differences", tn,
                         (unsigned long long)st.schema);
        }
        if (j->submitted_ms >= g->evidence_since_ms) { /* read under the present routing */
            if (equal)
                g->phase_good_vals++;
            else {
                g->phase_bad_vals++;
                g->green_since_ms = now;
            }
        }
        if (j->kind == VK_GATE && g->gate_round_ms > 0 && g->gate_job[j->table] == j->job)
            g->gate_job[j->table] = equal ? -1 : -2;
        if (g->m->dry_run && j->table < 64)
            g->dry_audit_ms[j->table] = now - j->submitted_ms;
        ctl_store_validation(c, g, vkind_name[j->kind], tn, j->job, equal,
                             json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:s}", "state",
                                       st.state_name, "changed", (json_int_t)st.changed, "missing",
                                       (json_int_t)st.missing, "extra", (json_int_t)st.extra,
                                       "schema", (json_int_t)st.schema, "source_rows",
                                       (json_int_t)st.source_rows, "elapsed_ms",
                                       (json_int_t)(now - j->submitted_ms), "error", st.error));
        if (!ok)
            ctl_logf(c, "%s: the %s of %s (job %lld) %s: %s", g->m->id, vkind_name[j->kind], tn,
                     (long long)j->job, st.state_name, st.error);
        sl_job_status_free(&st);
        g->jobs[i] = g->jobs[--g->njobs];
        g->dirty = 1;
    }
}

static int has_job(const mig *g, int kind, int table)
{
    for (size_t i = 0; i < g->njobs; i++)
        if (g->jobs[i].kind == kind && (table < 0 || g->jobs[i].table == table))
            return 1;
    return 0;
}

/* A round of gate audits (high priority, every table). Returns 1 when
 * every table's audit of the round finished exact, 0 while running, and
 * starts a new round after a failed one. */
static int gate_round(ctl *c, mig *g, char *detail, size_t len)
{
    int64_t now = sl_wall_ms();
    size_t n = g->m->ntables, done = 0, bad = 0;
    if (g->gate_round_ms == 0) {
        g->gate_round_ms = now;
        for (size_t i = 0; i < n; i++)
            g->gate_job[i] = 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (g->gate_job[i] == -1)
            done++;
        else if (g->gate_job[i] == -2)
            bad++;
    }
    if (bad && now - g->gate_round_ms > GATE_RETRY_MS) {
        g->gate_round_ms = now;
        for (size_t i = 0; i < n; i++)
            if (g->gate_job[i] == -2)
                g->gate_job[i] = 0;
    }
    for (size_t i = 0; i < n; i++)
        if (g->gate_job[i] == 0 && submit(c, g, VK_GATE, i) == 0)
            g->gate_job[i] = g->jobs[g->njobs - 1].job;
    snprintf(detail, len, "%zu of %zu tables audited exact%s", done, n,
             bad ? "; an audit found differences or failed, retrying" : "");
    return done == n;
}

/* ---- phases ----------------------------------------------------------------------- */

static void enter_phase(ctl *c, mig *g)
{
    ct_phase p = mig_phase(g);
    char name[64];
    repl_name_sfx(g, "", name, sizeof name);
    sl_err e = {0};
    switch (p) {
    case CT_PH_BACKFILL:
        if (cdc(g) && !g->repl_created) {
            ct_db *s = side(c, g, 0, &e), *t = s ? side(c, g, 1, &e) : NULL;
            int rc = -1;
            if (t) {
                /* the heartbeat table on both sides, in the publication; if
                 * it cannot be made, lag is read from LSNs (coarser) */
                char hbt[64];
                repl_name_sfx(g, "_hb", hbt, sizeof hbt);
                sl_err he = {0};
                out(c);
                int hok = ct_pg_heartbeat_setup(s, hbt, 1, &he) == 0 &&
                          ct_pg_heartbeat_setup(t, hbt, 0, &he) == 0;
                in(c);
                g->hb = hok;
                if (!hok)
                    ctl_logf(c, "%s: no heartbeat table (%s): lag is read from LSNs", g->m->id,
                             he.msg);
                const char *tables[257];
                char hb[80];
                size_t nt = pub_tables(g, tables, hb, sizeof hb);
                out(c);
                rc = ct_pg_create_publication(s, name, tables, nt, &e) != 0 ||
                             ct_pg_create_subscription(t, name, ctl_dsn(c, g->m->source), name,
                                                       &e) != 0
                         ? -1
                         : 0;
                in(c);
            }
            if (rc != 0) {
                ctl_logf(c, "%s: cannot set up replication: %s", g->m->id, e.msg);
                drop_conns(g);
                return; /* tried again next pass */
            }
            g->repl_created = 1;
            ctl_event(c, g, "sluice", "replication",
                      json_pack("{s:s, s:s}", "created", name, "detail",
                                "publication on the source, subscription on the target"));
        }
        break;
    case CT_PH_DUAL_WRITE:
    case CT_PH_SHADOW_READ: {
        const char *reads = p == CT_PH_SHADOW_READ ? "shadow" : "source";
        const char *writes = g->strategy == CT_STRAT_DUAL_WRITE ? "both" : "source";
        if (mig_route(c, g, reads, 0, writes) < 0)
            return; /* not confirmed: tried again next pass (router_confirmed fails) */
        ctl_event(c, g, "sluice", "routing",
                  json_pack("{s:s, s:i, s:s}", "reads", reads, "read_percent_target", 0, "writes",
                            writes));
        break;
    }
    case CT_PH_CUTOVER:
        g->step_idx = -1;
        g->step_approved = 0;
        break;
    default:
        break;
    }
    /* the phase's evidence starts now: what ran before (another phase,
     * or the wait for an approval) does not count */
    g->phase_started_ms = g->green_since_ms = g->evidence_since_ms = sl_wall_ms();
    g->phase_good_vals = g->phase_bad_vals = 0;
    g->entered = 1;
    g->dirty = 1;
}

static void apply_step(ctl *c, mig *g, int idx)
{
    int pct = g->m->steps[idx];
    if (mig_route(c, g, "target", pct, g->writes) < 0)
        return; /* not confirmed: the step is tried again next pass */
    g->step_idx = idx;
    /* the step's soak and evidence start once the router confirmed it */
    g->step_started_ms = g->green_since_ms = g->evidence_since_ms = sl_wall_ms();
    g->phase_good_vals = g->phase_bad_vals = 0;
    g->dirty = 1;
    ctl_event(c, g, "sluice", "cutover_step",
              json_pack("{s:i, s:i, s:s}", "step", idx + 1, "read_percent_target", pct, "router",
                        "confirmed"));
}

/* validation_green: no failed or unequal validation for soak seconds, and
 * at least one exact one since. */
static void gate_green(mig *g, int64_t now)
{
    int64_t held = (now - g->green_since_ms) / 1000;
    int ok = held >= g->m->soak_s && g->phase_good_vals > 0;
    set_gate(g, "validation_green", ok, "%lld s green of %lld s soak, %lld exact validations",
             (long long)held, (long long)g->m->soak_s, (long long)g->phase_good_vals);
}

static void gate_lag(mig *g)
{
    if (!cdc(g))
        return;
    set_gate(g, "lag_under_threshold", g->lag_known && g->lag_s <= g->m->max_lag_s,
             "%s%.1f s (threshold %.1f s)",
             g->lag_known ? "" : "not measured yet: ", g->lag_known ? g->lag_s : 0.0,
             g->m->max_lag_s);
}

static void gate_shadow(mig *g, int64_t now)
{
    double ratio =
        g->shadow_compared ? (double)g->shadow_mismatched / (double)g->shadow_compared : 0;
    /* shadow reads are evidence while they go on: the last post must be
     * recent (the soak time, a minute at least) */
    int64_t fresh_ms = (g->m->soak_s > 60 ? g->m->soak_s : 60) * 1000;
    int fresh = g->shadow_last_ms > 0 && now - g->shadow_last_ms <= fresh_ms;
    set_gate(g, "shadow_mismatch_ratio",
             g->shadow_compared > 0 && fresh && ratio <= g->m->max_shadow_ratio,
             "%lld compared, %lld mismatched: ratio %.4f (threshold %.4f)%s",
             (long long)g->shadow_compared, (long long)g->shadow_mismatched, ratio,
             g->m->max_shadow_ratio,
             !g->shadow_compared ? "; no shadow-read results posted yet"
             : !fresh ? "; no results posted lately: is the application still shadow-reading?"
                      : "");
}

/* Cancels g's jobs of kind (-1: all), the lock released meanwhile. A job
 * leaves g's list once cancelled, unknown or already ended; one the
 * coordinator could not be asked about stays, to be cancelled at a later
 * pass: a changes job never ends by itself, and its replication slots
 * would hold WAL on both sides for ever. */
static void cancel_jobs(ctl *c, mig *g, int kind)
{
    int64_t jobs[CTL_MAX_JOBS];
    int gone[CTL_MAX_JOBS];
    size_t n = 0;
    for (size_t i = 0; i < g->njobs; i++)
        if (kind < 0 || g->jobs[i].kind == kind)
            jobs[n++] = g->jobs[i].job;
    if (!n)
        return;
    out(c);
    for (size_t i = 0; i < n; i++) {
        sl_err e = {0};
        gone[i] = sl_client_cancel(c->client, jobs[i], &e) == 0 || e.code == SL_NOT_FOUND ||
                  e.code == SL_INVALID;
        if (!gone[i])
            ctl_logf(c, "%s: cannot cancel job %lld (retried): %s", g->m->id, (long long)jobs[i],
                     e.msg);
    }
    in(c);
    /* the list is the runner's: only this thread changed it, not meanwhile */
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; gone[i] && k < g->njobs; k++)
            if (g->jobs[k].job == jobs[i]) {
                g->jobs[k] = g->jobs[--g->njobs];
                g->dirty = 1;
                break;
            }
}

/* Past the phases that validate continuously (cleanup: the final audit
 * decides), the changes jobs are cancelled; their cleanup on the
 * coordinator drops their replication slots. */
static void stop_changes(ctl *c, mig *g)
{
    cancel_jobs(c, g, VK_CHANGES);
}

/* Continuous validation: audits every audit_every (low), one table's
 * diff every sample_every (normal). */
static void continuous(ctl *c, mig *g, int64_t now)
{
    if (g->m->verify_changes && now >= g->changes_retry_ms)
        for (size_t t = 0; t < g->m->ntables; t++)
            if (!has_job(g, VK_CHANGES, (int)t))
                submit(c, g, VK_CHANGES, t);
    if (now - g->last_sample_ms >= g->m->sample_every_s * 1000 && !has_job(g, VK_SAMPLE, -1)) {
        size_t t = g->sample_next++ % g->m->ntables;
        if (submit(c, g, VK_SAMPLE, t) == 0)
            g->last_sample_ms = now;
    }
    if (now - g->last_audit_ms >= g->m->audit_every_s * 1000 && !has_job(g, VK_AUDIT, -1)) {
        for (size_t t = 0; t < g->m->ntables; t++)
            submit(c, g, VK_AUDIT, t);
        g->last_audit_ms = now;
    }
}

static void measure_repl(ctl *c, mig *g, int64_t now)
{
    if (!cdc(g) || !g->repl_created || g->repl_dropped)
        return;
    /* after the write cutover the stream that matters is the reverse one:
     * the target publishes, the source subscribes */
    char name[64];
    repl_name_sfx(g, g->writes_cut ? "_rev" : "", name, sizeof name);
    sl_err e = {0};
    ct_repl_state rs;
    ct_db *s = side(c, g, 0, &e), *t = s ? side(c, g, 1, &e) : NULL;
    int rc = -1;
    if (t) {
        out(c);
        rc = g->writes_cut ? ct_pg_repl_state(t, s, name, &rs, &e)
                           : ct_pg_repl_state(s, t, name, &rs, &e);
        in(c);
    }
    if (rc != 0) {
        /* no figure is better than an old one: the lag gate fails */
        g->lag_known = 0;
        set_gate(g, "replication_state", 0, "cannot read the replication state: %s", e.msg);
        ctl_logf(c, "%s: reading replication state: %s", g->m->id, e.msg);
        drop_conns(g);
        return;
    }
    g->confirmed_lsn = rs.confirmed_lsn;
    if (g->writes_moved_ms && !g->flip_lsn && !g->writes_cut) {
        /* read after writes moved: all the source will send. The insert
         * position, not pg_current_wal_lsn(), which under asynchronous
         * commit may lie before a commit already acknowledged */
        uint64_t lsn = 0;
        out(c);
        int lrc = ct_pg_current_lsn(s, &lsn, &e);
        in(c);
        if (lrc == 0)
            g->flip_lsn = lsn;
    }
    if (!g->copy_done && rs.tables > 0 && rs.tables_ready == rs.tables) {
        g->copy_done = 1;
        g->dirty = 1;
        ctl_event(c, g, "sluice", "initial_copy_done",
                  json_pack("{s:I}", "tables", (json_int_t)rs.tables));
    }
    ct_lag_record(&g->lagc, now, rs.source_lsn);
    g->lag_s = ct_lag_seconds(&g->lagc, now, rs.confirmed_lsn);
    g->lag_known = 1;
    if (g->hb) {
        /* the heartbeat: written on the publisher, read on the subscriber */
        char hbt[64];
        repl_name_sfx(g, "_hb", hbt, sizeof hbt);
        ct_db *pub = g->writes_cut ? t : s, *sub = g->writes_cut ? s : t;
        int64_t at = 0;
        out(c);
        int hrc = ct_pg_heartbeat_beat(pub, hbt, now, &e) == 0 &&
                          ct_pg_heartbeat_read(sub, hbt, &at, &e) == 0
                      ? 0
                      : -1;
        in(c);
        if (hrc != 0 || at <= 0) {
            g->lag_known = 0; /* no beat applied yet, or none readable */
            if (hrc != 0)
                drop_conns(g);
        } else
            g->lag_s = at < now ? (double)(now - at) / 1000.0 : 0;
    }
    if (!rs.exists) {
        g->lag_s = INFINITY;
        g->lag_known = 1;
    }
    if (rs.exists && !rs.enabled)
        set_gate(g, "subscription_enabled", 0, "the subscription %s is disabled on the target",
                 name);
    if (g->writes_cut) { /* the reverse stream copies nothing: no copy to report */
        if (rs.exists && !rs.enabled)
            set_gate(g, "reverse_replication", 0, "the reverse subscription %s is disabled", name);
        return;
    }
    set_gate(g, "initial_copy_done", g->copy_done, "%zu of %zu tables copied%s", rs.tables_ready,
             rs.tables,
             rs.exists ? (rs.enabled ? "" : "; the subscription is disabled")
                       : "; the subscription is gone");
}

static void aggregates(ctl *c, mig *g, int64_t now)
{
    if (g->agg_ok || now - g->agg_ms < 2000)
        return;
    g->agg_ms = now;
    for (size_t i = 0; i < g->m->ntables; i++) {
        ct_aggregate a = {0}, b = {0};
        sl_err e = {0};
        const ct_table *t = &g->m->tables[i];
        ct_db *s = side(c, g, 0, &e), *d = s ? side(c, g, 1, &e) : NULL;
        char why[600] = "";
        int r = -1;
        if (d && db_aggregate(c, s, t, &a, &e) == 0 && db_aggregate(c, d, t, &b, &e) == 0)
            r = ct_aggregate_compare(&a, &b, why, sizeof why);
        ct_aggregate_free(&a);
        ct_aggregate_free(&b);
        if (r != 0) {
            snprintf(g->agg_detail, sizeof g->agg_detail, "%s: %s", t->name, r < 0 ? e.msg : why);
            if (r < 0)
                drop_conns(g);
            return;
        }
    }
    g->agg_ok = 1;
    snprintf(g->agg_detail, sizeof g->agg_detail,
             "row counts, sums, minima and maxima equal in %zu tables", g->m->ntables);
    ctl_store_validation(c, g, "aggregate", "*", 0, 1, json_pack("{s:s}", "detail", g->agg_detail));
    g->dirty = 1;
}

static void phase_pass(ctl *c, mig *g, int64_t now)
{
    ct_phase p = mig_phase(g);
    char d[600];
    int missing = 0, r;
    switch (p) {
    case CT_PH_PREPARE: {
        sl_worker_info *wi = NULL;
        size_t nw = 0, both = 0;
        sl_err we = {0};
        out(c);
        int wrc = sl_client_workers(c->client, &wi, &nw, &we);
        in(c);
        if (wrc == 0) {
            for (size_t i = 0; i < nw; i++) {
                int hs = 0, ht = 0;
                for (size_t k = 0; k < wi[i].ndbs; k++) {
                    hs |= strcmp(wi[i].dbs[k], g->m->source) == 0;
                    ht |= strcmp(wi[i].dbs[k], g->m->target) == 0;
                }
                both += wi[i].alive && hs && ht;
            }
            sl_worker_info_free(wi, nw);
            set_gate(g, "workers_announce", both > 0,
                     both ? "%zu live workers reach %s and %s"
                          : "%zu live workers reach both %s and %s: start workers with both "
                            "in their --db-file",
                     both, g->m->source, g->m->target);
        } else
            set_gate(g, "workers_announce", 0, "coordinator: %s", we.msg);
        sl_err e = {0};
        ct_db *s = side(c, g, 0, &e);
        set_gate(g, "source_reachable", s != NULL, "%s", s ? g->m->source : e.msg);
        sl_err e2 = {0};
        ct_db *t = side(c, g, 1, &e2);
        set_gate(g, "target_reachable", t != NULL, "%s", t ? g->m->target : e2.msg);
        if (s && t) {
            r = schema_check(c, g, d, sizeof d, &missing);
            set_gate(g, "tables_present", r == 0 || (r == 1 && !missing), "%s",
                     r == 0 || (r == 1 && !missing) ? "every table has a primary key on both sides"
                                                    : d);
            set_gate(g, "schemas_compatible", r == 0, "%s",
                     r == 0 ? "same columns, types and keys" : d);
            if (cdc(g)) {
                ct_side_facts f;
                sl_err e3 = {0};
                int ok = db_facts(c, s, &f, &e3) == 0 && f.logical;
                set_gate(g, "logical_replication", ok, "%s",
                         ok        ? "source wal_level is logical"
                         : e3.code ? e3.msg
                                   : "source wal_level is not logical: set wal_level = logical and "
                                     "restart it");
            }
            if (g->m->verify_changes) {
                /* the changes of both sides are followed: logical decoding
                 * on each, or every changes job fails */
                ct_side_facts f[2];
                sl_err e4 = {0};
                char why[700] = "";
                for (int k = 0; k < 2 && !why[0]; k++) {
                    const char *nm = k ? g->m->target : g->m->source;
                    if (db_facts(c, k ? t : s, &f[k], &e4) != 0)
                        snprintf(why, sizeof why, "%s: %s", nm, e4.msg);
                    else if (strcmp(f[k].engine, "postgresql") != 0)
                        snprintf(why, sizeof why,
                                 "%s is %s: metrics.verify_changes follows PostgreSQL only", nm,
                                 f[k].engine);
                    else if (!f[k].logical)
                        snprintf(why, sizeof why,
                                 "%s: wal_level is not logical, which metrics.verify_changes "
                                 "needs on both sides: set wal_level = logical and restart it",
                                 nm);
                }
                set_gate(g, "verify_changes_ready", !why[0], "%s",
                         why[0] ? why : "both sides are PostgreSQL with wal_level = logical");
            }
        }
        break;
    }
    case CT_PH_BACKFILL:
        if (cdc(g) && !g->copy_done) {
            if (!g->repl_created)
                set_gate(g, "initial_copy_done", 0, "replication not set up yet");
            set_gate(g, "aggregates_match", 0, "waiting for the initial copy");
            set_gate(g, "full_audit_exact", 0, "waiting for the initial copy");
            break;
        }
        aggregates(c, g, now);
        set_gate(g, "aggregates_match", g->agg_ok, "%s",
                 g->agg_detail[0] ? g->agg_detail : "not run yet");
        if (!g->agg_ok) {
            set_gate(g, "full_audit_exact", 0, "waiting for the aggregates to match");
            break;
        }
        r = gate_round(c, g, d, sizeof d);
        set_gate(g, "full_audit_exact", r, "%s", d);
        gate_lag(g);
        break;
    case CT_PH_DUAL_WRITE:
    case CT_PH_SHADOW_READ:
        continuous(c, g, now);
        gate_lag(g);
        gate_green(g, now);
        if (p == CT_PH_SHADOW_READ)
            gate_shadow(g, now);
        break;
    case CT_PH_CUTOVER: {
        continuous(c, g, now);
        int last = (int)g->m->nsteps - 1;
        int in_win = ct_manifest_in_window(g->m, now);
        gate_lag(g);
        gate_green(g, now);
        int green = building_ok(g);
        int64_t held = g->step_idx >= 0 ? (now - g->step_started_ms) / 1000 : 0;
        if (g->state == MS_RUNNING && in_win && !moved(g)) {
            /* the next step runs when the one before held its soak with the
             * gates green (the first at once); the last needs an approval,
             * asked for when it is due and applied at the next pass that
             * finds the window open and the gates green */
            int due = g->step_idx < 0 || (g->step_idx < last && held >= g->m->soak_s && green);
            int next = g->step_idx + 1;
            if (due && next == last && !g->step_approved) {
                g->state = MS_WAITING;
                snprintf(g->waiting_for, sizeof g->waiting_for, "cutover step %d",
                         g->m->steps[last]);
                g->dirty = 1;
                ctl_event(c, g, "sluice", "waiting_approval",
                          json_pack("{s:s}", "for", g->waiting_for));
            } else if (due && next <= last && (next == 0 || green))
                apply_step(c, g, next);
        }
        set_gate(g, "in_window", in_win, "%s",
                 in_win ? "inside a change window" : "outside every change window: steps wait");
        int final_held = g->step_idx == last && held >= g->m->soak_s;
        set_gate(g, "final_step_held", final_held,
                 "step %d of %d (%d%% of reads on the target) held %lld s of %lld s",
                 g->step_idx + 1, last + 1, g->read_pct, (long long)held, (long long)g->m->soak_s);
        /* writes move once every read is on the target and has held: for
         * cdc behind HAProxy by the write cutover (held, drained, LSN,
         * sequences, reverse replication); for dual_write after a clean
         * audit; for cdc with the endpoint only, in cleanup */
        if (final_held && green && in_win && g->state == MS_RUNNING && !moved(g) &&
            strcmp(g->writes, "target") != 0) {
            if (cdc(g) && g->m->router.haproxy && c->haproxy) {
                sl_err e = {0};
                ct_db *s = side(c, g, 0, &e), *t = s ? side(c, g, 1, &e) : NULL;
                char why[700];
                if (moved(g)) /* opening a side lets go of the lock: an abort may be in */
                    return;
                if (t && mig_write_cutover(c, g, s, t, why, sizeof why) != 0) {
                    mig_abort(c, g, "sluice", why, 0);
                    return;
                }
            } else if (g->strategy == CT_STRAT_DUAL_WRITE) {
                r = gate_round(c, g, d, sizeof d);
                if (r && !moved(g) && mig_route(c, g, "target", g->read_pct, "target") >= 0) {
                    g->writes_moved_ms = sl_wall_ms();
                    ctl_event(c, g, "sluice", "routing",
                              json_pack("{s:s, s:i, s:s, s:s}", "reads", "target",
                                        "read_percent_target", g->read_pct, "writes", "target",
                                        "after", "a full audit exact"));
                }
            }
        }
        if ((cdc(g) && g->m->router.haproxy) || g->strategy == CT_STRAT_DUAL_WRITE)
            set_gate(g, "writes_on_target", strcmp(g->writes, "target") == 0, "%s",
                     strcmp(g->writes, "target") == 0 ? "writes go to the target"
                                                      : "after the last step held");
        break;
    }
    case CT_PH_CLEANUP: {
        stop_changes(c, g);
        if (g->sealed || moved(g))
            break;
        int caught_up = !cdc(g) || g->repl_dropped || (g->lag_known && g->lag_s < 1);
        if (!caught_up) {
            set_gate(g, "final_audit_exact", 0, "waiting for replication to catch up (lag %.1f s)",
                     g->lag_s);
            break;
        }
        r = gate_round(c, g, d, sizeof d);
        set_gate(g, "final_audit_exact", r, "%s", d);
        /* the final audit exact, writes go to the target (reads are there
         * since cutover); for cdc, replication is dropped only once the
         * subscriber applied all the source wrote before that */
        if (r && strcmp(g->writes, "target") != 0 && !moved(g)) {
            if (mig_route(c, g, "target", 100, "target") < 0)
                break;
            g->writes_moved_ms = sl_wall_ms();
            g->flip_lsn = 0;
            g->dirty = 1;
            ctl_event(c, g, "sluice", "routing",
                      json_pack("{s:s, s:i, s:s}", "reads", "target", "read_percent_target", 100,
                                "writes", "target"));
        }
        int drained = !cdc(g) || g->writes_cut || (g->flip_lsn && g->confirmed_lsn >= g->flip_lsn);
        set_gate(g, "writes_on_target", strcmp(g->writes, "target") == 0 && drained, "%s",
                 strcmp(g->writes, "target") != 0 ? "after the final audit"
                 : drained ? "writes go to the target; the subscriber applied all the source sent"
                           : "waiting for the subscriber to apply the source's last writes");
        if (r && drained && cdc(g) && !g->repl_dropped && !moved(g)) {
            char name[64];
            repl_name_sfx(g, "", name, sizeof name);
            sl_err e = {0};
            ct_db *s = side(c, g, 0, &e), *t = s ? side(c, g, 1, &e) : NULL;
            int rc = -1;
            if (t) {
                char rev[64];
                repl_name_sfx(g, "_rev", rev, sizeof rev);
                out(c);
                rc = ct_pg_drop_replication(s, t, name, name, &e);
                if (rc == 0 && g->writes_cut) /* and the reverse stream */
                    rc = ct_pg_drop_replication(t, s, rev, rev, &e);
                in(c);
            }
            if (rc == 0 && g->hb) {
                char hbt[64];
                repl_name_sfx(g, "_hb", hbt, sizeof hbt);
                sl_err he = {0};
                out(c);
                ct_pg_heartbeat_drop(s, hbt, &he);
                ct_pg_heartbeat_drop(t, hbt, &he);
                in(c);
            }
            if (rc == 0) {
                g->repl_dropped = 1;
                g->dirty = 1;
                ctl_event(c, g, "sluice", "replication", json_pack("{s:s}", "dropped", name));
            } else
                drop_conns(g);
        }
        set_gate(g, "replication_removed", !cdc(g) || g->repl_dropped, "%s",
                 !cdc(g)           ? "no replication to remove"
                 : g->repl_dropped ? "publication and subscription dropped"
                                   : "not yet");
        if (r && drained && (!cdc(g) || g->repl_dropped) && !moved(g)) {
            g->sealed = 1;
            g->dirty = 1;
            set_gate(g, "artifacts_sealed", 1, "final audit recorded");
            g->state = MS_COMPLETED;
            ctl_event(c, g, "sluice", "completed",
                      json_pack("{s:s}", "detail", "final audit exact; artifacts sealed"));
        } else
            set_gate(g, "artifacts_sealed", 0, "after the final audit");
        break;
    }
    default:
        break;
    }
}

/* ---- reachability ---------------------------------------------------------------- */

/* A round trip to the target every pass. Returns 1 when it answered;
 * else 0 and target_down_ms says since when it has not (check_abort). */
static int probe_target(ctl *c, mig *g)
{
    if (mig_phase(g) == CT_PH_PREPARE) /* its own gates say it */
        return 1;
    int64_t t0 = sl_wall_ms();
    sl_err e = {0};
    ct_db *t = side(c, g, 1, &e);
    int rc = -1;
    if (t) {
        out(c);
        rc = ct_db_ping(t, &e);
        in(c);
    }
    if (rc == 0) {
        g->target_down_ms = 0;
        return 1;
    }
    if (t)
        side_failed(g, 1);
    if (!g->target_down_ms) /* from the start of the first round trip that failed */
        g->target_down_ms = t0;
    snprintf(g->target_down_why, sizeof g->target_down_why, "%s", e.msg);
    set_gate(g, "target_reachable", 0, "%s", e.msg);
    return 0;
}

/* HAProxy loses every runtime change when it restarts or reloads from
 * its file: once a second, its weights and states are read back and
 * compared, as traffic sees them, with the route last set. */
static void check_router(ctl *c, mig *g, int64_t now)
{
    if (!g->m->router.haproxy || !c->haproxy || !g->route_applied || g->route_pending ||
        now - g->router_check_ms < ROUTER_CHECK_MS)
        return;
    g->router_check_ms = now;
    const ct_router_cfg *r = &g->m->router;
    int pct = strcmp(g->reads, "target") == 0 ? g->read_pct : 0;
    int to_target = strcmp(g->writes, "target") == 0;
    sl_err e = {0};
    out(c);
    int rc = ct_haproxy_check_route(c->haproxy, r->read_backend, r->write_backend, r->source_server,
                                    r->target_server, pct, to_target, &e);
    in(c);
    if (moved(g)) /* steered meanwhile: what was read may be half old */
        return;
    if (rc < 0) {
        if (!g->router_down_ms)
            g->router_down_ms = now;
        snprintf(g->router_down_why, sizeof g->router_down_why, "%s", e.msg);
        set_gate(g, "router_confirmed", 0, "%s", e.msg);
        return;
    }
    g->router_down_ms = 0;
    if (rc == 0) {
        g->router_ok_ms = now;
        return;
    }
    if (g->router_error[0] || g->route_owed) {
        /* sluice's own last route did not hold: HAProxy differs from a
         * route it never confirmed, which the gate router_confirmed says */
        set_gate(g, "router_confirmed", 0, "%s", e.msg);
        return;
    }
    char reason[800];
    snprintf(reason, sizeof reason,
             "HAProxy no longer routes as sluice set it (%s): restarted, reloaded or changed by "
             "hand; traffic may be split with nobody steering",
             e.msg);
    mig_abort(c, g, "sluice", reason, g->router_ok_ms ? g->router_ok_ms : now);
}

/* ---- abort -------------------------------------------------------------------------- */

static void check_abort(ctl *c, mig *g, int64_t now)
{
    ct_phase p = mig_phase(g);
    char reason[1024];
    if (p == CT_PH_PREPARE || g->sealed)
        return;
    /* a phase waiting for its approval has not started validating */
    int validating =
        (p == CT_PH_DUAL_WRITE || p == CT_PH_SHADOW_READ || p == CT_PH_CUTOVER) && g->entered;
    int64_t limit = g->m->unreachable_s * 1000;
    if (validating && g->target_down_ms && now - g->target_down_ms >= limit) {
        snprintf(reason, sizeof reason,
                 "the target %s unreachable for %.1f s (threshold %lld s): %s", g->m->target,
                 (double)(now - g->target_down_ms) / 1000.0, (long long)g->m->unreachable_s,
                 g->target_down_why);
        mig_abort(c, g, "sluice", reason, g->target_down_ms);
        return;
    }
    if (validating && g->router_down_ms && now - g->router_down_ms >= limit) {
        snprintf(reason, sizeof reason,
                 "HAProxy's runtime API unreachable for %.1f s (threshold %lld s): %s",
                 (double)(now - g->router_down_ms) / 1000.0, (long long)g->m->unreachable_s,
                 g->router_down_why);
        mig_abort(c, g, "sluice", reason, g->router_down_ms);
        return;
    }
    if (g->schema_problem[0]) {
        snprintf(reason, sizeof reason, "schema mismatch: %s", g->schema_problem);
        mig_abort(c, g, "sluice", reason, g->schema_ms);
        return;
    }
    /* in backfill a divergence only fails the gate, unless replication
     * has finished the copy (then the target should already be exact) */
    if (g->divergent > g->m->max_divergent_rows &&
        (p > CT_PH_BACKFILL || (cdc(g) && g->copy_done))) {
        snprintf(reason, sizeof reason, "%lld divergent rows (threshold %lld): %s",
                 (long long)g->divergent, (long long)g->m->max_divergent_rows, g->div_examples);
        mig_abort(c, g, "sluice", reason, g->first_div_read_ms);
        return;
    }
    if (cdc(g) && g->copy_done && !g->repl_dropped && g->lag_known && g->lag_s > g->m->max_lag_s) {
        snprintf(reason, sizeof reason, "replication lag %.2f s over the threshold %.2f s",
                 g->lag_s, g->m->max_lag_s);
        /* the lag became over the threshold max_lag_s after it started */
        mig_abort(c, g, "sluice", reason, now - (int64_t)((g->lag_s - g->m->max_lag_s) * 1000));
        return;
    }
    double ratio =
        g->shadow_compared ? (double)g->shadow_mismatched / (double)g->shadow_compared : 0;
    if (g->shadow_compared > 0 && ratio > g->m->max_shadow_ratio) {
        snprintf(reason, sizeof reason,
                 "shadow-read mismatch ratio %.4f over the threshold %.4f (%lld of %lld)", ratio,
                 g->m->max_shadow_ratio, (long long)g->shadow_mismatched,
                 (long long)g->shadow_compared);
        mig_abort(c, g, "sluice", reason, now);
        return;
    }
    int64_t since = g->last_val_ms > g->phase_started_ms ? g->last_val_ms : g->phase_started_ms;
    if (g->resumed_ms > since) /* this process has not been running that long */
        since = g->resumed_ms;
    if (validating && now - since > g->m->detection_latency_s * 1000) {
        snprintf(reason, sizeof reason,
                 "no validation reported for %.0f s (detection latency threshold %lld s)",
                 (double)(now - since) / 1000.0, (long long)g->m->detection_latency_s);
        mig_abort(c, g, "sluice", reason, since + g->m->detection_latency_s * 1000);
    }
}

/* ---- dry runs ------------------------------------------------------------------------ */

static json_t *threshold(const char *name, double limit, json_t *seen, int trips)
{
    return json_pack("{s:s, s:f, s:o, s:b}", "name", name, "limit", limit, "seen", seen,
                     "would_trip", trips);
}

static void dry_pass(ctl *c, mig *g, int64_t now)
{
    /* every phase's evidence that can be gathered without replication or
     * traffic: reachability and schema, aggregates, a full audit */
    char d[600];
    int missing;
    g->nbuilding = 0;
    sl_err e = {0}, e2 = {0};
    ct_db *s = side(c, g, 0, &e), *t = side(c, g, 1, &e2);
    set_gate(g, "source_reachable", s != NULL, "%s", s ? g->m->source : e.msg);
    set_gate(g, "target_reachable", t != NULL, "%s", t ? g->m->target : e2.msg);
    if (!s || !t)
        return;
    int r = schema_check(c, g, d, sizeof d, &missing);
    set_gate(g, "schemas_compatible", r == 0, "%s", r == 0 ? "same columns, types and keys" : d);
    if (r != 0)
        snprintf(g->schema_problem, sizeof g->schema_problem, "%s", d);
    aggregates(c, g, now);
    set_gate(g, "aggregates_match", g->agg_ok, "%s", g->agg_detail);
    char ad[600];
    int done = gate_round(c, g, ad, sizeof ad);
    size_t finished = 0;
    for (size_t i = 0; i < g->m->ntables; i++)
        finished += g->gate_job[i] < 0;
    set_gate(g, "full_audit_exact", done, "%s", ad);
    publish_gates(g);
    if (finished < g->m->ntables || g->njobs)
        return;
    int64_t longest = 0;
    json_t *audits = json_array();
    for (size_t i = 0; i < g->m->ntables && i < 64; i++) {
        longest = g->dry_audit_ms[i] > longest ? g->dry_audit_ms[i] : longest;
        json_array_append_new(audits, json_pack("{s:s, s:I, s:f}", "table", g->m->tables[i].name,
                                                "divergent_rows", (json_int_t)g->table_div[i],
                                                "seconds", (double)g->dry_audit_ms[i] / 1000.0));
    }
    json_t *th = json_array(), *trips = json_array();
#define TH(name, limit, seen, cond)                                                                \
    do {                                                                                           \
        int t_ = (cond);                                                                           \
        json_array_append_new(th, threshold(name, limit, seen, t_));                               \
        if (t_)                                                                                    \
            json_array_append_new(trips, json_string(name));                                       \
    } while (0)
    TH("divergent_rows", (double)g->m->max_divergent_rows, json_integer(g->divergent),
       g->divergent > g->m->max_divergent_rows);
    TH("schema", 0, g->schema_problem[0] ? json_string(g->schema_problem) : json_null(),
       g->schema_problem[0] != 0);
    TH("detection_latency_seconds", (double)g->m->detection_latency_s,
       json_real((double)longest / 1000.0), longest > g->m->detection_latency_s * 1000);
    TH("replication_lag_seconds", g->m->max_lag_s, json_null(), 0);
    TH("shadow_mismatch_ratio", g->m->max_shadow_ratio, json_null(), 0);
#undef TH
    json_decref(g->dry_report);
    g->dry_report = json_pack("{s:o, s:o, s:o, s:o, s:s}", "would_trip", trips, "thresholds", th,
                              "gates", gates_json(g), "audits", audits, "note",
                              "a dry run creates no replication and moves no traffic: replication "
                              "lag and shadow reads are not measured");
    g->state = MS_COMPLETED;
    g->dirty = 1;
    ctl_event(c, g, "sluice", "dry_run_done", json_incref(g->dry_report));
}

/* ---- one pass ------------------------------------------------------------------------ */

void runner_pass(ctl *c, mig *g)
{
    int64_t now = sl_wall_ms();
    if (g->state == MS_ABORTED && g->route_pending) {
        /* the router did not confirm the abort: keep steering until it does */
        if (mig_route(c, g, "source", 0, "source") >= 0) {
            g->route_pending = 0;
            g->rollback_s = (double)(sl_wall_ms() - g->aborted_ms) / 1000.0;
            ctl_event(c, g, "sluice", "rollback_confirmed",
                      json_pack("{s:f}", "rollback_seconds", g->rollback_s));
        }
    }
    if (g->state == MS_ABORTED || g->state == MS_COMPLETED) {
        cancel_jobs(c, g, -1);
        drop_conns(g);
        return;
    }
    g->pass_epoch = g->epoch;
    if (!g->classified && now - g->facts_ms > 5000) {
        g->facts_ms = now;
        classify(c, g);
    }
    poll_jobs(c, g);
    if (moved(g))
        return;
    if (g->m->dry_run) {
        if (g->classified)
            dry_pass(c, g, now);
        return;
    }
    if (g->strategy == CT_STRAT_AUTO) {
        g->nbuilding = 0;
        set_gate(g, "classified", 0, "%s", g->cls_reason[0] ? g->cls_reason : "not classified yet");
        publish_gates(g);
        return;
    }
    g->nbuilding = 0;
    if (g->route_owed && mig_route(c, g, g->reads, g->read_pct, g->writes) >= 0)
        g->route_owed = 0; /* the restart's route, owed while HAProxy was away */
    if (moved(g))
        return;
    check_router(c, g, now);
    if (moved(g))
        return;
    /* an unreachable target: no time spent on its other questions */
    int up = probe_target(c, g);
    if (moved(g))
        return;
    if (up)
        measure_repl(c, g, now);
    if (moved(g))
        return;
    if (up && mig_phase(g) != CT_PH_PREPARE && now - g->schema_ms > SCHEMA_EVERY_MS &&
        !g->schema_problem[0]) {
        char d[600];
        int missing;
        if (schema_check(c, g, d, sizeof d, &missing) == 1) {
            snprintf(g->schema_problem, sizeof g->schema_problem, "%s", d);
        }
        g->schema_ms = now;
    }
    if (moved(g))
        return;
    if (g->state == MS_RUNNING && !g->entered)
        enter_phase(c, g);
    if (g->entered && !moved(g))
        phase_pass(c, g, now);
    g->gates_ms = now;
    if (!moved(g)) {
        if (g->router_error[0])
            set_gate(g, "router_confirmed", 0, "%s", g->router_error);
        publish_gates(g);
        check_abort(c, g, now);
    }
    mig_fix_text(g);
    mig_sample(g);
}

/* ---- transitions asked over HTTP (mu held) ---------------------------------------- */

static void go_to(ctl *c, mig *g, int idx, const char *actor)
{
    const char *from = ct_phase_name(mig_phase(g));
    g->epoch++;
    g->phase_idx = idx;
    g->entered = 0;
    g->phase_started_ms = g->green_since_ms = sl_wall_ms();
    g->phase_good_vals = g->phase_bad_vals = 0;
    g->gate_round_ms = 0;
    g->ngates = 0;
    ct_phase p = mig_phase(g);
    if (g->m->approvals & (1u << p)) {
        g->state = MS_WAITING;
        snprintf(g->waiting_for, sizeof g->waiting_for, "phase %s", ct_phase_name(p));
    }
    g->dirty = 1;
    g->updated_ms = sl_wall_ms();
    ctl_event(c, g, actor, "transition",
              json_pack("{s:s, s:s, s:s}", "from", from, "to", ct_phase_name(p), "state",
                        mig_state_name(g->state)));
}

int mig_advance(ctl *c, mig *g, const char *actor, json_t **gates_out, sl_err *err)
{
    *gates_out = NULL;
    if (g->state == MS_ABORTED || g->state == MS_COMPLETED)
        return sl_err_setc(err, SL_BUSY, "migration %s is %s; it cannot advance", g->m->id,
                           mig_state_name(g->state));
    if (g->state == MS_WAITING)
        return sl_err_setc(err, SL_BUSY,
                           "migration %s is waiting for approval (%s); an approver "
                           "must POST approve first",
                           g->m->id, g->waiting_for);
    if (g->m->dry_run)
        return sl_err_setc(err, SL_BUSY, "migration %s is a dry run: it does not advance",
                           g->m->id);
    if ((size_t)g->phase_idx + 1 >= g->m->nphases)
        return sl_err_setc(err, SL_BUSY,
                           "migration %s is in its last phase (%s): it completes by "
                           "itself when the phase's gates pass",
                           g->m->id, ct_phase_name(mig_phase(g)));
    if (!g->entered || g->ngates == 0 || g->gates_epoch != g->epoch ||
        !all_ok(g->gates, g->ngates)) {
        *gates_out = gates_json(g);
        if (g->ngates == 0)
            json_array_append_new(
                *gates_out, json_pack("{s:s, s:b, s:s}", "name", "evaluated", "ok", 0, "detail",
                                      "the phase's gates have not been evaluated yet"));
        ctl_event(c, g, actor, "gate",
                  json_pack("{s:s, s:O}", "result", "advance refused", "gates", *gates_out));
        return 1;
    }
    ctl_event(c, g, actor, "gate",
              json_pack("{s:s, s:o}", "result", "passed", "gates", gates_json(g)));
    go_to(c, g, g->phase_idx + 1, actor);
    return 0;
}

int mig_approve(ctl *c, mig *g, const char *actor, sl_err *err)
{
    if (g->state != MS_WAITING)
        return sl_err_setc(err, SL_BUSY, "migration %s is %s: nothing waits for approval", g->m->id,
                           mig_state_name(g->state));
    ctl_event(c, g, actor, "approve", json_pack("{s:s}", "approved", g->waiting_for));
    g->state = MS_RUNNING;
    g->epoch++;
    /* the last step runs at the runner's next pass that finds the window
     * open and every gate green, not here */
    if (strncmp(g->waiting_for, "cutover step", 12) == 0)
        g->step_approved = 1;
    g->waiting_for[0] = 0;
    g->dirty = 1;
    g->updated_ms = sl_wall_ms();
    return 0;
}

void mig_shadow(ctl *c, mig *g, int64_t compared, int64_t mismatched, json_t *examples)
{
    /* totals saturate: a client cannot overflow them */
    g->shadow_compared =
        compared > INT64_MAX - g->shadow_compared ? INT64_MAX : g->shadow_compared + compared;
    g->shadow_last_ms = sl_wall_ms();
    g->shadow_mismatched = mismatched > INT64_MAX - g->shadow_mismatched
                               ? INT64_MAX
                               : g->shadow_mismatched + mismatched;
    if (examples && json_array_size(examples)) {
        json_decref(g->shadow_examples);
        g->shadow_examples = json_incref(examples);
    }
    g->dirty = 1;
    ctl_event(c, g, "application", "shadow_results",
              json_pack("{s:I, s:I, s:o}", "compared", (json_int_t)compared, "mismatched",
                        (json_int_t)mismatched, "examples",
                        examples ? json_incref(examples) : json_array()));
    if (g->state == MS_RUNNING || g->state == MS_WAITING) {
        double ratio =
            (double)g->shadow_mismatched / (double)(g->shadow_compared ? g->shadow_compared : 1);
        if (!g->m->dry_run && g->shadow_compared > 0 && ratio > g->m->max_shadow_ratio) {
            char reason[256];
            snprintf(reason, sizeof reason,
                     "shadow-read mismatch ratio %.4f over the threshold %.4f (%lld of %lld)",
                     ratio, g->m->max_shadow_ratio, (long long)g->shadow_mismatched,
                     (long long)g->shadow_compared);
            mig_abort(c, g, "sluice", reason, sl_wall_ms());
        }
    }
}

/* ---- the loop ------------------------------------------------------------------------ */

int ctl_run(ctl *c, volatile sig_atomic_t *stop, sl_err *err)
{
    sl_err e = {0};
    c->client = sl_client_new(&c->copts, &e);
    if (!c->client)
        return sl_err_setc(err, e.code, "%s", e.msg);
    if (c->copts.events_endpoint && sl_client_watch(c->client, 0, &e) != 0)
        ctl_logf(c, "cannot watch the coordinator's events: %s", e.msg);
    /* a restarted control plane first settles a write cutover it died
     * in, then puts the router where the store says */
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->nmigs; i++) {
        mig *g = c->migs[i];
        char why[700];
        if (g->state != MS_COMPLETED && g->cut_stage != CUT_NONE &&
            mig_cutover_recover(c, g, why, sizeof why) != 0) {
            g->cut_stage = CUT_NONE;
            mig_abort(c, g, "sluice", why, 0);
            continue;
        }
        if (g->state != MS_COMPLETED && !g->m->dry_run && g->m->router.haproxy &&
            mig_route(c, g, g->reads, g->read_pct, g->writes) < 0 && g->state != MS_ABORTED) {
            /* HAProxy away: the runner retries every pass, and checks it
             * (an unreachable router aborts after unreachable_seconds) */
            g->route_owed = 1;
            g->route_applied = 1;
        }
        if (g->dirty) {
            sl_err se = {0};
            if (ctl_store_save(c, g, &se) != 0)
                ctl_logf(c, "%s", se.msg);
        }
    }
    pthread_mutex_unlock(&c->mu);
    while (!*stop) {
        int64_t t0 = sl_now_ms();
        pthread_mutex_lock(&c->mu);
        drain_events(c);
        for (size_t i = 0; i < c->nmigs && !*stop; i++) {
            mig *g = c->migs[i];
            runner_pass(c, g);
            if (g->dirty) {
                g->updated_ms = sl_wall_ms();
                sl_err se = {0};
                if (ctl_store_save(c, g, &se) != 0)
                    ctl_logf(c, "%s", se.msg);
            }
        }
        pthread_mutex_unlock(&c->mu);
        /* at least a short sleep unlocked: HTTP threads waiting for the
         * lock get it even when a pass took longer than the tick */
        int64_t left = c->tick_ms - (sl_now_ms() - t0);
        if (left < 20)
            left = 20;
        for (; left > 0 && !*stop; left -= 50) {
            struct timespec ts = {0, 50 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    return 0;
}
