/* co_loop: the event loop. co_run receives every worker message, files
 * each reply with the job that waits for it, hands idle workers range
 * tasks by priority, times out silent requests, and resumes the jobs that
 * can go on. A job runs on its own fiber, suspended in co_wait_replies. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "co_impl.h"

/* Gives range ri's side tree to build to idle worker wi: the request is
 * sent, the worker made busy with it until its deadline, the side RS_RUNNING.
 * 0, -1 with err, or CO_LOST (the worker is gone: the task stays pending). */
static int send_tree(job *j, size_t ri, int side, int wi, sl_err *err)
{
    range *r = &j->r[ri];
    uint64_t id;
    msg_writer *mw = co_request(j->c, MSG_TREE, &id);
    if (!mw)
        return sl_err_set(err, "out of memory");
    co_pack_spec(j, mw, side);
    mk_bound lo = range_lo(r), hi = range_hi(r);
    co_pack_bound(mw, "lo", lo.kind, lo.key, lo.len);
    co_pack_bound(mw, "hi", hi.kind, hi.key, hi.len);
    /* a tree id is never reused: a worker told to release one it has not
     * built yet refuses to build it later, and a re-issued task must not
     * be taken for that one */
    r->tree[side] = j->c->next_id++;
    msg_put_uint(mw, "tree", r->tree[side]);
    int rc = co_call(j->c, wi, mw, err);
    if (rc)
        return rc;
    co_worker *w = &j->c->w[wi];
    w->busy_req = id;
    w->busy_task = (long)(ri * 2 + (size_t)side);
    w->busy_job = j;
    /* a throttled job's range takes the time its rows need, on top */
    double need = 0;
    if (j->o->max_rows_per_second > 0 && j->nr)
        need = (double)j->rows_expected / (double)j->nr / (double)j->o->max_rows_per_second;
    w->busy_since = sl_now();
    w->busy_deadline = w->busy_since + j->c->req_timeout_ms / 1000.0 + need;
    if (!j->first_sent)
        j->first_sent = w->busy_since;
    j->tasks++;
    r->state[side] = RS_RUNNING;
    r->worker[side] = wi;
    r->gen[side] = w->gen;
    return 0;
}

/* After workers were lost: every tree they were building or holding is
 * built again elsewhere. */
void co_requeue_lost(job *j)
{
    j->lost_seen = j->c->lost;
    for (size_t i = 0; i < j->nr; i++)
        for (int s = 0; s < 2; s++) {
            range *r = &j->r[i];
            int wi = r->worker[s];
            if ((r->state[s] == RS_RUNNING || r->state[s] == RS_BUILT) && wi >= 0 &&
                !co_worker_is(j->c, wi, r->gen[s])) {
                r->state[s] = RS_PENDING;
                r->worker[s] = -1;
                mk_nodelist_free(&r->root[s]);
            }
        }
    j->next = 0;
}

int co_wait_replies(co *c, const uint64_t *ids, const int *from, msg **replies, size_t n,
                    sl_err *err)
{
    job *j = c->active;
    if (n > 2 || !j)
        return sl_err_set(err, "internal error: waiting for %zu replies outside a job", n);
    job_wait *w = &j->wait;
    memset(w, 0, sizeof *w);
    w->n = n;
    for (size_t k = 0; k < n; k++) {
        w->ids[k] = ids[k];
        w->from[k] = from[k];
        w->gen[k] = from[k] >= 0 ? c->w[from[k]].gen : 0;
        replies[k] = NULL;
    }
    double deadline = sl_now() + c->req_timeout_ms / 1000.0;
    if (j->closing && deadline > sl_now() + 15) /* cleanup is bounded */
        deadline = sl_now() + 15;
    int rc = 0;
    for (;;) {
        size_t got = 0;
        for (size_t k = 0; k < n; k++)
            got += w->rep[k] != NULL;
        if (got == n)
            break;
        for (size_t k = 0; k < n; k++)
            if (!w->rep[k] && !co_worker_is(c, from[k], w->gen[k])) {
                rc = CO_LOST;
                sl_err_set(err, "worker %d was lost", from[k]);
                goto out;
            }
        if ((j->cancel && !j->closing) || j->freeing) {
            rc = sl_err_set(err, "job cancelled");
            goto out;
        }
        if (sl_now() >= deadline) { /* alive, but not answering: as good as lost */
            for (size_t k = 0; k < n; k++)
                if (!w->rep[k])
                    co_time_out(c, from[k], "request");
            rc = CO_LOST;
            sl_err_set(err, "a worker did not answer within %d s", c->req_timeout_ms / 1000);
            goto out;
        }
        j->wake_at = deadline; /* the loop wakes it sooner for a reply or a loss */
        fiber_yield(j->fb);
    }
    for (size_t k = 0; k < n; k++) {
        replies[k] = w->rep[k];
        w->rep[k] = NULL;
    }
    for (size_t k = 0; k < n && rc == 0; k++) {
        if (msg_type(replies[k]) == MSG_ERROR) {
            msg_error_read(replies[k], err); /* the worker's code travels on */
            rc = -1;
        }
    }
out:
    for (size_t k = 0; k < n; k++) {
        if (rc != 0) { /* the caller gets the error, not the replies */
            msg_free(replies[k]);
            replies[k] = NULL;
        }
        msg_free(w->rep[k]);
        w->rep[k] = NULL;
    }
    w->n = 0;
    return rc;
}

/* The job's steps, on its fiber: describe, plan, then compare each range
 * whose two trees the loop has collected (ready queue), and the re-checks,
 * until every range is done. 0 or -1 with err. */
static int job_run(job *j, sl_err *err)
{
    co *c = j->c;
    co_summary *sum = j->sum;
    j->phase = JOB_DESCRIBE;
    for (int s = 0; s < 2; s++)
        if (co_describe(j, s, &j->sd[s], err))
            return -1;
    snprintf(sum->source_name, sizeof sum->source_name, "%s", j->sd[0].source);
    snprintf(sum->target_name, sizeof sum->target_name, "%s", j->sd[1].source);
    j->phase = JOB_PLAN;
    if (co_reconcile(j, &j->sd[0], &j->sd[1], err) || (!j->o->changes && co_plan(j, err)))
        return -1;
    j->merge_ok = co_merge_allowed(j);
    sum->ranges = sum->planned_ranges = j->nr;
    sum->sampled_ranges = j->sampled;
    sum->workers = co_alive_workers(c);
    j->lost_seen = c->lost;
    if (j->o->changes)
        return co_follow_run(j, err);
    if (j->o->max_divergences && j->ndiv >= j->o->max_divergences) { /* reached before a restart */
        j->limit_hit = j->sum->limit_reached = 1;
        return sl_err_set(err, "stopped after %llu divergences (--max-divergences)",
                          (unsigned long long)j->ndiv);
    }
    for (size_t i = 0; i < j->nr; i++) /* --chunk-time: a planned range's share of the rows */
        j->r[i].est_rows = j->rows_expected / 2 / j->nr + 1;
    /* --max-replica-lag: not a range read before the replicas are known to
     * be close, nor a split's (a count and a key walk on the source) */
    if (co_lag_check(j, 1, err))
        return -1;
    /* a throttled job knows its rate already: its long ranges are split
     * before the first is read (pieces appended are looked at too); a
     * paused one splits them from its loop once it goes on */
    for (size_t i = 0; j->o->chunk_time_s > 0 && !j->lag_paused && i < j->nr; i++) {
        int sr = co_split_if_long(j, i, err);
        if (sr && sr != CO_LOST)
            return -1;
    }
    j->phase = JOB_RANGES;
    while (j->ranges_done < j->nr) {
        if (j->cancel)
            return sl_err_set(err, "job cancelled");
        if (j->fatal) {
            *err = j->err;
            return -1;
        }
        if (j->lost_seen != c->lost)
            co_requeue_lost(j);
        if (!co_can_reach(c, j->db[0]) || !co_can_reach(c, j->db[1])) {
            if (!j->stranded)
                j->stranded = sl_now();
            if (sl_now() - j->stranded >
                3.0 * (c->hb_timeout_ms > 0 ? c->hb_timeout_ms : 10000) / 1000)
                return sl_err_setc(
                    err, SL_LOST_WORKER, "no live worker can reach database \"%s\"%s%s%s",
                    co_can_reach(c, j->db[0]) ? j->db[1] : j->db[0], c->rejected[0] ? " (" : "",
                    c->rejected, c->rejected[0] ? ")" : "");
        } else {
            j->stranded = 0;
        }
        if (j->nrq) {
            int rr = co_run_rechecks(j, sl_now(), err);
            if (rr && rr != CO_LOST)
                return -1;
        }
        if (co_lag_check(j, 0, err))
            return -1;
        int sr = co_split_pending(j, err);
        if (sr && sr != CO_LOST)
            return -1;
        if (j->ready_head < j->nready) {
            size_t ri = j->ready[j->ready_head++];
            if (j->ready_head == j->nready)
                j->ready_head = j->nready = 0;
            range *rg = &j->r[ri];
            if (rg->state[0] == RS_MERGED && co_merge_take(j, ri, err))
                return -1;
            /* queued twice when rebuilt after a loss: compared once */
            if (rg->state[0] == RS_BUILT && rg->state[1] == RS_BUILT &&
                co_compare_range(j, ri, err))
                return -1;
            continue;
        }
        if (co_direct_ready(j)) {
            int sp = co_stream_pending(j, err);
            if (sp < 0)
                return -1;
            if (sp > 0)
                continue;
        }
        j->wake_at = sl_now() + (j->nrq ? 0.05 : 0.2);
        fiber_yield(j->fb);
    }
    return 0;
}

/* Leaves no worker building or holding a tree of the job, and frees what
 * the job built. */
static void job_cleanup(job *j)
{
    co *c = j->c;
    if (j->o->changes)
        co_follow_end(j);
    for (size_t wi = 0; wi < c->nw; wi++)
        if (c->w[wi].busy_job == j)
            co_worker_idle(&c->w[wi]);
    for (size_t i = 0; i < j->nr; i++) {
        for (int s = 0; s < 2; s++)
            if ((j->r[i].state[s] == RS_RUNNING || j->r[i].state[s] == RS_BUILT) &&
                !j->r[i].merging)
                co_release_side(j, i, s); /* a worker still building it stops */
        sl_buf_free(&j->r[i].lo);
        sl_buf_free(&j->r[i].hi);
        mk_nodelist_free(&j->r[i].root[0]);
        mk_nodelist_free(&j->r[i].root[1]);
        sl_buf_free(&j->r[i].emitted);
        sl_buf_free(&j->r[i].mat);
        msg_free(j->r[i].mrep);
    }
    free(j->r);
    j->r = NULL;
    j->nr = 0;
    free(j->order);
    j->order = NULL;
    for (size_t i = 0; i < j->nrq; i++)
        free(j->rq[i].key);
    free(j->rq);
    free(j->fbat[0]);
    free(j->fbat[1]);
    j->rq = NULL;
    j->nrq = 0;
    free(j->kset);
    free(j->cset);
    j->kset = NULL;
    free(j->tol);
    j->tol = NULL;
    free(j->ready);
    j->ready = NULL;
    co_side_free(&j->sd[0]);
    co_side_free(&j->sd[1]);
    memset(j->sd, 0, sizeof j->sd);
    sl_buf_free(&j->scratch);
    sl_buf_free(&j->changed);
    sl_buf_free(&j->pend_lo);
    sl_buf_free(&j->pend_hi);
    sl_buf_free(&j->dense_from);
    sl_buf_free(&j->st_at);
}

/* The fiber's body: runs the job, frees what it built, and records how it ended. */
static void job_main(void *arg)
{
    job *j = arg;
    sl_err e = {0};
    int rc = job_run(j, &e);
    if (rc && j->limit_hit && !j->cancel) /* --max-divergences: done, stopped early */
        rc = 0;
    if (j->lag_paused)
        j->sum->paused_s += sl_now() - j->paused_since;
    job_cleanup(j);
    j->sum->elapsed = sl_now() - j->t0;
    if (rc) {
        j->err = e;
        if (!j->err.msg[0])
            sl_err_set(&j->err, "out of memory");
    }
    j->outcome = rc == 0 ? CO_JOB_DONE : j->cancel ? CO_JOB_CANCELLED : CO_JOB_FAILED;
    j->phase = JOB_ENDED;
}

/* A range task's reply (a tree's root), taken in the loop: the range's side
 * is built, or the worker is dropped for a bad reply (its task goes to
 * another), or the job fails with the worker's error. */
job *co_task_answered(co *c, int wi, long *task, double *took)
{
    co_worker *w = &c->w[wi];
    job *j = w->busy_job;
    *task = w->busy_task;
    *took = sl_now() - w->busy_since;
    co_worker_idle(w);
    j->wake = 1;
    return j;
}

void co_tree_reply(co *c, int wi, msg *m)
{
    long task;
    double took;
    job *j = co_task_answered(c, wi, &task, &took);
    size_t ri = (size_t)task / 2;
    int side = (int)(task % 2);
    if (msg_type(m) == MSG_ERROR) {
        sl_err why = {0};
        msg_error_read(m, &why);
        sl_err_setc(&j->err, why.code, "%s: %s", side ? "target" : "source", why.msg);
        j->fatal = 1;
        msg_free(m);
        return;
    }
    int64_t rows;
    range *rg = &j->r[ri];
    mk_nodelist_reset(&rg->root[side]);
    sl_err why;
    int bad = msg_get_int(m, "rows", &rows, &why) ? 1
              : rows < 0 ? (sl_err_set(&why, "claims %lld rows", (long long)rows), 1)
                         : co_read_nodes(j, rg, m, NULL, (uint64_t)rows, &rg->root[side], &why);
    msg_free(m);
    if (bad < 0) {
        sl_err_set(&j->err, "out of memory");
        j->fatal = 1;
        return;
    }
    if (bad) { /* co_requeue_lost gives the task to another worker */
        mk_nodelist_reset(&rg->root[side]);
        co_reject_worker(c, wi, NULL, "its tree reply for range %zu %s", ri, why.msg);
        return;
    }
    rg->rows[side] = (uint64_t)rows;
    rg->state[side] = RS_BUILT;
    j->task_s += took; /* --chunk-time's measure */
    j->task_rows += (uint64_t)rows;
    if (took > j->sum->longest_read_s)
        j->sum->longest_read_s = took;
    if (rg->state[0] != RS_BUILT || rg->state[1] != RS_BUILT)
        return;
    rg->read_at_ms = sl_wall_ms();
    co_ready_push(j, ri);
}

void co_ready_push(job *j, size_t ri)
{
    if (j->nready == j->capready) {
        size_t cap = j->capready ? 2 * j->capready : 16;
        size_t *p = realloc(j->ready, cap * sizeof *p);
        if (!p) {
            sl_err_set(&j->err, "out of memory");
            j->fatal = 1;
            return;
        }
        j->ready = p;
        j->capready = cap;
    }
    j->ready[j->nready++] = ri;
}

/* Files a worker's reply with the job waiting for it: a range task's with
 * its job, a request's with the job whose fiber waits for it from that very
 * registration. Anything else answers what was settled or given up on. */
void co_route_reply(co *c, int wi, msg *m)
{
    co_worker *w = &c->w[wi];
    uint64_t id = msg_id(m);
    if (w->busy_req && id == w->busy_req)
        return w->busy_merge ? co_merge_reply(c, wi, m) : co_tree_reply(c, wi, m);
    for (job *j = c->jobs; j; j = j->link)
        for (size_t k = 0; k < j->wait.n; k++)
            if (j->wait.ids[k] == id && j->wait.from[k] == wi && j->wait.gen[k] == w->gen &&
                !j->wait.rep[k]) {
                j->wait.rep[k] = m;
                j->wake = 1;
                return;
            }
    msg_free(m);
}

/* The next pending task of job j that worker w can serve, as ri * 2 + side;
 * SIZE_MAX when none. The cursor j->next only moves past tasks no longer
 * pending (co_requeue_lost resets it). */
/* The t-th task in visiting order, as ri * 2 + side. */
static size_t task_at(const job *j, size_t t)
{
    return (j->order ? j->order[t / 2] : t / 2) * 2 + t % 2;
}

size_t co_next_task(job *j, const co_worker *w)
{
    while (j->next < 2 * j->nr) {
        size_t k = task_at(j, j->next);
        if (j->r[k / 2].state[k % 2] == RS_PENDING)
            break;
        j->next++;
    }
    int has[2] = {co_worker_has_db(w, j->db[0]), co_worker_has_db(w, j->db[1])};
    if (!has[0] && !has[1])
        return SIZE_MAX;
    /* Trees are built at most a few ranges ahead of the compares: a
     * worker keeps a tree's rows for the drill-down within a budget
     * (worker/wk.c), and trees piling up while a slow drill runs would
     * leave the later ones without, their spans read from the database
     * again. A range whose other side is under way is always taken. */
    size_t open = 0, most = co_alive_workers(j->c) + 1;
    for (size_t i = 0; i < j->nr; i++)
        open +=
            !j->r[i].merging && (j->r[i].state[0] == RS_RUNNING || j->r[i].state[0] == RS_BUILT ||
                                 j->r[i].state[1] == RS_RUNNING || j->r[i].state[1] == RS_BUILT);
    for (size_t t = j->next; t < 2 * j->nr; t++) {
        size_t k = task_at(j, t);
        if (open >= most && j->r[k / 2].state[1 - k % 2] == RS_PENDING)
            continue;
        if (j->r[k / 2].state[k % 2] == RS_PENDING && has[k % 2] && !j->r[k / 2].splitting &&
            !j->r[k / 2].merging && /* begun: merge tasks only (co_next_merge) */
            /* direct: ranges not started are streamed by the fiber; one
             * whose other side has its tree gets this one too */
            (!j->direct || j->r[k / 2].state[1 - k % 2] != RS_PENDING))
            return k;
    }
    return SIZE_MAX;
}

/* Whether job j, under a share, has had its time for now: the busy time of
 * its ended and running range tasks is above share% of the time since its
 * first task. Then j->resume_at is the earliest it may go on (its running
 * tasks, still counting, can only push that later). Running tasks count so
 * that idle workers do not all take one of its tasks at once. */
int co_share_paused(job *j, double now)
{
    if (j->o->share <= 0 || j->first_sent <= 0)
        return 0;
    co *c = j->c;
    double busy = j->busy_s, frac = j->o->share / 100.0;
    for (size_t wi = 0; wi < c->nw; wi++)
        if (c->w[wi].busy_req && c->w[wi].busy_job == j)
            busy += now - c->w[wi].busy_since;
    if (busy <= frac * (now - j->first_sent))
        return 0;
    j->resume_at = j->first_sent + busy / frac;
    return 1;
}

/* Gives each idle worker a range task: the highest priority first, then
 * the job with the fewest tasks running (older first on a tie), never past
 * a job's cap nor while a job's share is used up. Tasks are never taken
 * back, so a high job waits for at most the one range task a worker is in
 * the middle of. */
void co_dispatch(co *c)
{
    for (size_t wi = 0; wi < c->nw; wi++) {
        co_worker *w = &c->w[wi];
        if (w->busy_req || !w->alive || sl_now() < w->shunned_until)
            continue;
        job *best = NULL;
        size_t best_t = 0;
        for (job *j = c->jobs; j; j = j->link) {
            if (j->phase != JOB_RANGES || j->cancel || j->fatal || (j->cap && j->tasks >= j->cap))
                continue;
            if (best &&
                (j->prio < best->prio || (j->prio == best->prio && j->tasks >= best->tasks)))
                continue;
            if (j->lag_paused || co_share_paused(j, sl_now()))
                continue;
            size_t t = co_next_merge(j, w);
            t = t == SIZE_MAX ? co_next_task(j, w) : t | CO_MERGE_TASK;
            if (t == SIZE_MAX)
                continue;
            best = j;
            best_t = t;
        }
        if (!best)
            continue;
        sl_err e = {0};
        int r = best_t & CO_MERGE_TASK
                    ? co_send_merge(best, best_t & ~CO_MERGE_TASK, (int)wi, &e)
                    : send_tree(best, best_t / 2, (int)(best_t % 2), (int)wi, &e);
        if (r && r != CO_LOST) { /* a lost worker's task stays pending */
            best->err = e;
            best->fatal = 1;
            best->wake = 1;
        }
    }
}

/* A range task unanswered past its deadline (co_time_out). */
static void check_deadlines(co *c)
{
    double now = sl_now();
    for (size_t i = 0; i < c->nw; i++) {
        co_worker *w = &c->w[i];
        if (!w->alive || !w->busy_req || now < w->busy_deadline)
            continue;
        co_time_out(c, (int)i, "range task");
    }
}

/* Resumes, once each, the fibers of the jobs woken or due. */
static void run_jobs(co *c)
{
    double now = sl_now();
    for (job *j = c->jobs; j; j = j->link) {
        if (j->phase == JOB_ENDED || !(j->wake || now >= j->wake_at))
            continue;
        j->wake = 0;
        c->active = j;
        fiber_resume(j->fb);
        c->active = NULL;
    }
}

int co_run(co *c, int timeout_ms, sl_err *err)
{
    co_dispatch(c);
    run_jobs(c);
    co_dispatch(c);
    double now = sl_now(), until = now + timeout_ms / 1000.0;
    for (job *j = c->jobs; j; j = j->link) {
        if (j->phase != JOB_ENDED && (j->wake || j->wake_at < until))
            until = j->wake ? now : j->wake_at;
        /* a job paused by its share goes on at once when allowed */
        if (j->phase == JOB_RANGES && j->resume_at > now && j->resume_at < until)
            until = j->resume_at;
    }
    int left = (int)((until - now) * 1000);
    zmq_pollitem_t it[2] = {{c->sock, 0, ZMQ_POLLIN, 0}, {c->svc_sock, 0, ZMQ_POLLIN, 0}};
    int r = zmq_poll(it, c->svc_sock ? 2 : 1, left > 0 ? left : 0);
    if (r < 0 && zmq_errno() != EINTR)
        return sl_err_set(err, "poll: %s", zmq_strerror(zmq_errno()));
    if (r > 0 && c->svc_sock && (it[1].revents & ZMQ_POLLIN))
        c->svc_fn(c->svc_ctx);
    for (int k = 0; k < 4096; k++) { /* bounded: the client socket gets its turn */
        int events = 0;
        size_t sz = sizeof events;
        if (zmq_getsockopt(c->sock, ZMQ_EVENTS, &events, &sz) != 0 || !(events & ZMQ_POLLIN))
            break;
        int wi;
        msg *m;
        int rr = co_read_worker(c, &wi, &m, err);
        if (rr < 0)
            return -1;
        if (rr > 0)
            co_route_reply(c, wi, m);
    }
    co_check_workers(c);
    check_deadlines(c);
    run_jobs(c);
    return 0;
}

co_job *co_job_start(co *c, const co_diff_opts *o, const co_callbacks *cb, sl_err *err)
{
    job *j = calloc(1, sizeof *j);
    if (!j)
        return sl_err_set(err, "out of memory"), NULL;
    j->c = c;
    j->o = o;
    j->cb = cb;
    j->sum = &j->own_sum;
    j->db[0] = o->source_db;
    j->db[1] = o->target_db;
    j->table[0] = o->table;
    j->table[1] = o->target_table ? o->target_table : o->table;
    j->prio = o->priority;
    j->cap = o->max_tasks;
    j->ndiv = o->resume_divergences;
    j->t0 = sl_now();
    j->wake = 1;
    j->fw[0] = j->fw[1] = -1;
    /* deep enough for the drill-down's recursion under the sanitizers;
     * only the pages touched cost memory */
    if (!(j->fb = fiber_new(job_main, j, 8u << 20))) {
        free(j);
        return sl_err_set(err, "out of memory"), NULL;
    }
    job **tail = &c->jobs;
    while (*tail)
        tail = &(*tail)->link;
    *tail = j;
    return j;
}

int co_job_state(const co_job *j, co_summary *sum, sl_err *err)
{
    if (j->phase != JOB_ENDED)
        return CO_JOB_RUNNING;
    if (sum)
        *sum = j->own_sum;
    if (err && j->outcome != CO_JOB_DONE)
        *err = j->err;
    return j->outcome;
}

void co_job_cancel(co_job *j)
{
    j->cancel = 1;
    j->wake = 1;
}

void co_job_free(co_job *j)
{
    if (!j)
        return;
    co *c = j->c;
    /* a cancelled job never waits again: its fiber runs to its end */
    j->cancel = 1;
    j->freeing = 1;
    for (int turns = 0; j->phase != JOB_ENDED && turns < 1000; turns++) {
        c->active = j;
        fiber_resume(j->fb);
        c->active = NULL;
    }
    for (job **pp = &c->jobs; *pp; pp = &(*pp)->link)
        if (*pp == j) {
            *pp = j->link;
            break;
        }
    if (j->phase == JOB_ENDED) /* else its stack is kept: it holds what only it can free */
        fiber_free(j->fb);
    free(j);
}

int co_diff(co *c, const co_diff_opts *o, const co_callbacks *cb, co_summary *sum, sl_err *err)
{
    co_job *j = co_job_start(c, o, cb, err);
    if (!j)
        return -1;
    while (co_job_state(j, NULL, NULL) == CO_JOB_RUNNING)
        if (co_run(c, 200, err)) {
            co_job_free(j);
            return -1;
        }
    int st = co_job_state(j, sum, err);
    co_job_free(j);
    return st == CO_JOB_DONE ? 0 : -1;
}

int co_wait_workers(co *c, size_t n, int timeout_ms, sl_err *err)
{
    double deadline = sl_now() + timeout_ms / 1000.0;
    while (co_alive_workers(c) < n) {
        double left = deadline - sl_now();
        if (left <= 0)
            return sl_err_set(err, "only %zu of %zu workers connected within %d s",
                              co_alive_workers(c), n, timeout_ms / 1000);
        if (co_run(c, (int)(left * 1000) + 1, err))
            return -1;
    }
    return 0;
}
