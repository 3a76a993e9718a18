/* wk_follow: a table's changed keys, read by a thread of its own from a
 * logical slot and handed to the worker's loop under a lock. */
#include "wk_follow.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../connectors/pgrepl.h"
#include "../merkle/enc.h"

/* Not "sluice_": a migration's replication is named sluice_<id>, and a
 * migration with the id cv_5_0 must never lose its slot as an orphan. */
#define FOLLOW_PREFIX "sluicecv_"
/* Keys waiting for the coordinator, at most: past it the thread stops
 * reading and the slot holds the WAL instead of this process's memory. */
#define FOLLOW_MAX_QUEUED 1000000
/* A follow whose keys nobody asked for this long closes its stream: its
 * coordinator lost this worker and follows the slot from another, which
 * waits up to FOLLOW_TAKEOVER_S for the slot to be let go. */
#define FOLLOW_IDLE_S 20
#define FOLLOW_TAKEOVER_S 45

typedef struct mark {
    uint64_t total; /* keys queued up to and including this commit */
    uint64_t lsn;   /* its end */
} mark;

struct wk_follow {
    char *dsn, *slot, *table;
    void (*log)(void *ctx, const char *line);
    void *log_ctx;
    char *keycols[ENC_MAX_KEY_COLS];
    int cls[ENC_MAX_KEY_COLS];
    size_t nkey;
    pr_stream *s;
    pthread_t th;
    int started;
    pthread_mutex_t mu;
    /* under mu: */
    int stop, failed;
    sl_err err;
    sl_buf q; /* [u32 len][i64 commit time, ms since 1970][key]..., taken from qoff */
    size_t qoff;
    uint64_t queued, taken; /* keys ever queued, ever taken */
    mark *marks;
    size_t nmarks, capmarks;
    uint64_t ack, lag;
    double last_take; /* sl_now() of the last take: a follow nobody asks stops */
    int64_t *live;    /* the coordinator's live jobs: their slots are no orphans */
    size_t nlive;
    int has_live;
    /* the thread's own */
    sl_buf txn, scratch;
    uint64_t txn_keys;
};

static void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Appends one key (nkey text values named names) in the job's encoding to
 * f->txn: 0, or -1 with err. */
static int add_key(wk_follow *f, const char *const *names, const char *const *vals, size_t n,
                   sl_err *err)
{
    sl_buf_reset(&f->scratch);
    for (size_t k = 0; k < f->nkey; k++) {
        size_t i = 0;
        while (i < n && strcmp(names[i], f->keycols[k]))
            i++;
        if (i == n)
            return sl_err_setc(err, SL_INVALID,
                               "the table's replica identity does not hold key column \"%s\"; "
                               "change-driven verification needs the job's key in it",
                               f->keycols[k]);
        enc_val v = {.kind = vals[i] ? ENC_V_TEXT : ENC_V_NULL,
                     .p = vals[i],
                     .len = vals[i] ? strlen(vals[i]) : 0};
        if (enc_key(&f->scratch, f->cls[k], &v, err))
            return -1;
    }
    uint32_t len = (uint32_t)f->scratch.len;
    if (sl_buf_append(&f->txn, &len, 4) || sl_buf_append(&f->txn, f->scratch.p, len))
        return sl_err_set(err, "out of memory");
    f->txn_keys++;
    return 0;
}

/* A commit: the transaction's keys join the queue, each with its commit
 * time (the coordinator times detection from it), and a mark at its end. */
static int commit_txn(wk_follow *f, uint64_t end_lsn, int64_t at_ms, sl_err *err)
{
    int rc = 0;
    pthread_mutex_lock(&f->mu);
    if (f->nmarks == f->capmarks) {
        size_t cap = f->capmarks ? 2 * f->capmarks : 64;
        mark *m = realloc(f->marks, cap * sizeof *m);
        if (!m)
            rc = sl_err_set(err, "out of memory");
        else
            f->marks = m, f->capmarks = cap;
    }
    for (size_t off = 0; rc == 0 && off < f->txn.len;) {
        uint32_t len;
        memcpy(&len, f->txn.p + off, 4);
        if (sl_buf_append(&f->q, &len, 4) || sl_buf_append(&f->q, &at_ms, 8) ||
            sl_buf_append(&f->q, f->txn.p + off + 4, len))
            rc = sl_err_set(err, "out of memory");
        off += 4 + (size_t)len;
    }
    if (rc == 0) {
        f->queued += f->txn_keys;
        f->marks[f->nmarks++] = (mark){f->queued, end_lsn};
    }
    pthread_mutex_unlock(&f->mu);
    sl_buf_reset(&f->txn);
    f->txn_keys = 0;
    return rc;
}

static int open_stream(wk_follow *f, sl_err *err);

static void *follow_main(void *arg)
{
    wk_follow *f = arg;
    sl_err e = {0};
    if (open_stream(f, &e))
        goto failed;
    for (;;) {
        pthread_mutex_lock(&f->mu);
        int stop = f->stop;
        uint64_t ack = f->ack, backlog = f->queued - f->taken;
        double idle = sl_now() - f->last_take;
        pthread_mutex_unlock(&f->mu);
        if (stop)
            return NULL;
        if (idle > FOLLOW_IDLE_S && f->s) {
            /* its coordinator gave up on this worker and follows elsewhere
             * (or is slow): the slot is let go, not dropped, for the new
             * follow to take; an ask here reopens it */
            pr_free(f->s);
            f->s = NULL;
            if (f->log) {
                char line[300];
                snprintf(line, sizeof line, "follow %s paused: no keys asked for %d s", f->slot,
                         FOLLOW_IDLE_S);
                f->log(f->log_ctx, line);
            }
        }
        if (!f->s) {
            if (idle > FOLLOW_IDLE_S) {
                nap_ms(100);
                continue;
            }
            /* the transaction a pause cut is streamed again whole */
            sl_buf_reset(&f->txn);
            f->txn_keys = 0;
            if (open_stream(f, &e))
                break;
        }
        if (ack)
            pr_confirm(f->s, ack);
        if (backlog >= FOLLOW_MAX_QUEUED) {
            nap_ms(100);
            continue;
        }
        pr_change ch;
        int r = pr_next(f->s, 100, &ch, &e);
        if (r < 0)
            break;
        pr_lsn srv = pr_server_lsn(f->s), conf = pr_confirmed_lsn(f->s);
        pthread_mutex_lock(&f->mu);
        f->lag = srv > conf ? srv - conf : 0;
        pthread_mutex_unlock(&f->mu);
        if (r == 0)
            continue;
        if (ch.kind == PR_TRUNCATE) {
            sl_err_setc(&e, SL_INVALID,
                        "table %s.%s was truncated: its keys cannot be followed; run an audit",
                        ch.schema, ch.table);
            break;
        }
        if (ch.kind == PR_COMMIT) {
            if (commit_txn(f, ch.end_lsn, ch.commit_time_ms, &e))
                break;
            continue;
        }
        if (add_key(f, ch.key_names, ch.key, ch.nkey, &e) ||
            (ch.old_key && add_key(f, ch.key_names, ch.old_key, ch.nkey, &e)))
            break;
    }
failed:
    if (f->log) {
        char line[700];
        snprintf(line, sizeof line, "follow %s stopped: %s", f->slot, e.msg);
        f->log(f->log_ctx, line);
    }
    pthread_mutex_lock(&f->mu);
    f->failed = 1;
    f->err = e;
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

static void follow_free(wk_follow *f)
{
    pr_free(f->s);
    free(f->dsn);
    free(f->slot);
    free(f->table);
    for (size_t k = 0; k < f->nkey; k++)
        free(f->keycols[k]);
    sl_buf_free(&f->q);
    sl_buf_free(&f->txn);
    sl_buf_free(&f->scratch);
    free(f->marks);
    free(f->live);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

/* The names follows make: FOLLOW_PREFIX, the job (letters and digits),
 * "_" and the side (0 or 1). Only such slots are ever dropped as orphans. */
static int follow_name_ok(const char *name)
{
    size_t lp = strlen(FOLLOW_PREFIX), n = strlen(name);
    if (strncmp(name, FOLLOW_PREFIX, lp) || n < lp + 3 || name[n - 2] != '_' ||
        (name[n - 1] != '0' && name[n - 1] != '1'))
        return 0;
    for (size_t i = lp; i < n - 2; i++)
        if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'z')))
            return 0;
    return 1;
}

/* Whether the slot name's job is one of f's live jobs. */
static int slot_is_live(const wk_follow *f, const char *name)
{
    char *end;
    long long id = strtoll(name + strlen(FOLLOW_PREFIX), &end, 10);
    if (*end != '_')
        return 0;
    for (size_t i = 0; i < f->nlive; i++)
        if (f->live[i] == id)
            return 1;
    return 0;
}

/* Drops the inactive sluicecv_ slots of jobs the coordinator does not run:
 * a crashed follow's, which would hold WAL for ever. */
static void drop_orphans(const wk_follow *f)
{
    const char *dsn = f->dsn, *keep = f->slot;
    void (*log)(void *, const char *) = f->log;
    void *log_ctx = f->log_ctx;
    if (!f->has_live)
        return;
    char **names = NULL;
    size_t n = 0;
    sl_err e = {0};
    if (pr_orphaned(dsn, FOLLOW_PREFIX, &names, &n, &e)) {
        if (log) {
            char line[600];
            snprintf(line, sizeof line, "cannot list orphaned %s slots: %s", FOLLOW_PREFIX, e.msg);
            log(log_ctx, line);
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(names[i], keep) || !follow_name_ok(names[i]) || slot_is_live(f, names[i]))
            continue;
        sl_err de = {0};
        int r = pr_teardown(dsn, names[i], &de);
        if (log) {
            char line[600];
            if (r)
                snprintf(line, sizeof line, "cannot drop orphaned slot %s: %s", names[i], de.msg);
            else
                snprintf(line, sizeof line, "dropped orphaned replication slot %s", names[i]);
            log(log_ctx, line);
        }
    }
    pr_names_free(names, n);
}

/* On the thread: drops orphans, resumes the slot or creates it, and opens
 * its stream; a slot still held by a follow this worker's coordinator gave
 * up on elsewhere is waited for. 0, or -1 with err. */
static int open_stream(wk_follow *f, sl_err *err)
{
    drop_orphans(f);
    int created = 0;
    double until = sl_now() + FOLLOW_TAKEOVER_S;
    for (;;) {
        sl_err oe = {0};
        f->s = pr_open(f->dsn, f->slot, f->slot, 0, &oe);
        if (f->s)
            break;
        if (oe.code == SL_NOT_FOUND && !created) {
            /* a publication left without its slot is dropped with the rest */
            const char *table = f->table;
            if (pr_teardown(f->dsn, f->slot, err) ||
                pr_setup(f->dsn, f->slot, &table, 1, NULL, err))
                return -1;
            created = 1;
            continue;
        }
        pthread_mutex_lock(&f->mu);
        int stop = f->stop;
        pthread_mutex_unlock(&f->mu);
        /* "is active for PID": another process (a follow given up on) holds it */
        if (!strstr(oe.msg, "is active") || stop || sl_now() >= until) {
            *err = oe;
            if (created)
                pr_teardown(f->dsn, f->slot, NULL);
            return -1;
        }
        nap_ms(500);
    }
    if (f->log) {
        char line[400];
        snprintf(line, sizeof line, "following %s through slot %s (%s)", f->table, f->slot,
                 created ? "created" : "resumed");
        f->log(f->log_ctx, line);
    }
    return 0;
}

wk_follow *wk_follow_start(const char *dsn, const char *slot, const char *table,
                           const char *const *keycols, const int *cls, size_t nkey,
                           const int64_t *live, size_t nlive, int has_live,
                           void (*log)(void *ctx, const char *line), void *log_ctx, sl_err *err)
{
    if (!follow_name_ok(slot))
        return sl_err_setc(err, SL_INVALID, "a follow's slot must be named %sJOB_SIDE",
                           FOLLOW_PREFIX),
               NULL;
    if (nkey == 0 || nkey > ENC_MAX_KEY_COLS)
        return sl_err_setc(err, SL_INVALID, "a follow needs 1 to %d key columns", ENC_MAX_KEY_COLS),
               NULL;
    wk_follow *f = calloc(1, sizeof *f);
    if (!f)
        return sl_err_set(err, "out of memory"), NULL;
    pthread_mutex_init(&f->mu, NULL);
    f->dsn = strdup(dsn);
    f->slot = strdup(slot);
    f->table = strdup(table);
    f->log = log;
    f->log_ctx = log_ctx;
    f->last_take = sl_now();
    int oom = !f->dsn || !f->slot || !f->table;
    f->has_live = has_live;
    if (nlive && !oom) {
        if ((f->live = malloc(nlive * sizeof *f->live)))
            memcpy(f->live, live, nlive * sizeof *f->live);
        oom |= !f->live;
        f->nlive = nlive;
    }
    for (size_t k = 0; k < nkey; k++) {
        f->cls[k] = cls[k];
        oom |= !(f->keycols[k] = strdup(keycols[k]));
        f->nkey = k + 1;
    }
    if (oom) {
        follow_free(f);
        return sl_err_set(err, "out of memory"), NULL;
    }
    /* the slot is set up on the thread: creating one waits for the
     * transactions running then, and the worker's loop keeps its heartbeats */
    if (pthread_create(&f->th, NULL, follow_main, f)) {
        follow_free(f);
        return sl_err_set(err, "cannot start the follow thread"), NULL;
    }
    f->started = 1;
    return f;
}

const char *wk_follow_slot(const wk_follow *f)
{
    return f->slot;
}

int wk_follow_take(wk_follow *f, uint64_t ack, size_t max, sl_buf *keys, sl_buf *at, size_t *n,
                   uint64_t *lsn, uint64_t *lag, sl_err *err)
{
    int rc = 0;
    *n = 0;
    *lsn = 0;
    pthread_mutex_lock(&f->mu);
    f->last_take = sl_now();
    if (ack > f->ack)
        f->ack = ack;
    size_t off = f->qoff;
    while (*n < max && off < f->q.len) {
        uint32_t len;
        memcpy(&len, f->q.p + off, 4);
        if (sl_buf_append(keys, f->q.p + off, 4) ||
            sl_buf_append(keys, f->q.p + off + 12, (size_t)len) ||
            sl_buf_append(at, f->q.p + off + 4, 8)) {
            rc = sl_err_set(err, "out of memory");
            break;
        }
        off += 12 + (size_t)len;
        (*n)++;
    }
    f->qoff = off;
    f->taken += *n;
    size_t m = 0;
    while (m < f->nmarks && f->marks[m].total <= f->taken)
        *lsn = f->marks[m++].lsn;
    if (m) {
        memmove(f->marks, f->marks + m, (f->nmarks - m) * sizeof *f->marks);
        f->nmarks -= m;
    }
    if (f->qoff == f->q.len) {
        sl_buf_reset(&f->q);
        f->qoff = 0;
    } else if (f->qoff > f->q.len / 2) {
        memmove(f->q.p, f->q.p + f->qoff, f->q.len - f->qoff);
        f->q.len -= f->qoff;
        f->qoff = 0;
    }
    *lag = f->lag;
    if (rc == 0 && f->failed && f->qoff == f->q.len) {
        *err = f->err;
        if (!err->msg[0])
            sl_err_set(err, "the replication stream stopped");
        rc = -1;
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

int wk_follow_stop(wk_follow *f, int drop, sl_err *err)
{
    if (!f)
        return 0;
    if (f->started) {
        pthread_mutex_lock(&f->mu);
        f->stop = 1;
        pthread_mutex_unlock(&f->mu);
        pthread_join(f->th, NULL);
    }
    pr_free(f->s); /* reports the acked position: a resumed follow starts there */
    f->s = NULL;
    int rc = 0;
    if (drop)
        rc = pr_teardown(f->dsn, f->slot, err);
    follow_free(f);
    return rc;
}

int wk_follow_drop(const char *dsn, const char *slot, sl_err *err)
{
    if (!follow_name_ok(slot))
        return sl_err_setc(err, SL_INVALID, "a follow's slot must be named %sJOB_SIDE",
                           FOLLOW_PREFIX);
    return pr_teardown(dsn, slot, err);
}
