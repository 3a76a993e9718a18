/* The write cutover of a cdc migration behind HAProxy, and its way back.
 *
 * Cutover: writes are stopped at HAProxy's write backend (the source
 * server drains: no new connection goes anywhere, the open ones finish
 * or are shut after DRAIN_MS), the target applies everything the source
 * committed (LSN, not a sleep), sequences are set past the source's, the
 * forward subscription stops and a reverse one (target → source, no
 * copy) starts, then writes go to the target. The pause is measured.
 *
 * Why stopped and not held: holding new connections at the frontend
 * (maxconn 0) and releasing them crashes HAProxy 2.6.12, Debian 12's, when
 * a client waits (HAProxy issue #2726; control/README.md, "HAProxy"). So
 * a client connecting during the pause is refused and retries, as every
 * database client must on a dropped connection.
 *
 * Rollback after it: writes stopped again, the reverse stream drained
 * into the source, reads and writes back on the source.
 *
 * Both run with ctl's lock held from start to end (bounded by the
 * timeouts below): nothing else may steer the router in between. The
 * rollback may run in an HTTP thread, so it opens connections of its
 * own instead of the runner's. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ctl_impl.h"

#define DRAIN_MS 500    /* the source's write sessions finish, or are shut */
#define APPLY_MS 5000   /* the subscriber catches up */
#define SEQ_MARGIN 1000 /* sequences land this many increments past the source's */
#define DB_TIMEOUT_MS 5000

/* sluice_<id>[suffix]: lower case [a-z0-9_], at most 63 characters (a
 * replication slot's name). */
void repl_name_sfx(const mig *g, const char *suffix, char *out, size_t len)
{
    size_t room = len > 64 ? 63 : len - 1;
    size_t keep = room - 7 - strlen(suffix); /* "sluice_" + id + suffix */
    snprintf(out, len, "sluice_%.*s%s", (int)keep, g->m->id, suffix);
    for (char *p = out; *p; p++) {
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
        else if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
            *p = '_';
    }
}

size_t pub_tables(const mig *g, const char **out, char *hb, size_t hblen)
{
    size_t n = 0;
    for (size_t i = 0; i < g->m->ntables && i < 256; i++)
        out[n++] = g->m->tables[i].name;
    if (g->hb) { /* the heartbeat travels with the data */
        char t[64];
        repl_name_sfx(g, "_hb", t, sizeof t);
        snprintf(hb, hblen, "public.%s", t);
        out[n++] = hb;
    }
    return n;
}

static ct_db *open_side(ctl *c, const char *name, sl_err *err)
{
    const char *dsn = ctl_dsn(c, name);
    if (!dsn) {
        sl_err_setc(err, SL_INVALID, "no DSN for database \"%s\" in --db-file", name);
        return NULL;
    }
    return ct_db_open(dsn, DB_TIMEOUT_MS, err);
}

/* cut_stage saved before the step it names: a process killed in the
 * middle finds it on restart (mig_cutover_recover). */
static int save_stage(ctl *c, mig *g, int stage, sl_err *e)
{
    g->cut_stage = stage;
    g->dirty = 1;
    return ctl_store_save(c, g, e);
}

/* The tests' crash point (ctl_opts.crash_at): dies as a SIGKILL would. */
static void crash_point(const ctl *c, const char *at)
{
    if (c->crash_at[0] && !strcmp(c->crash_at, at))
        raise(SIGKILL);
}

/* Everything pub committed is applied on sub once a heartbeat
 * committed after it is: logical replication applies in commit
 * order. Read on the target directly, this does not wait for the
 * subscriber's next position report to the source (as an LSN wait does:
 * some 400 ms under load). The beat is above every earlier one, whatever
 * the clock did. 0, 1 timed out, -1 error. */
static int wait_beat(const mig *g, ct_db *pub, ct_db *sub, sl_err *e)
{
    char hbt[64];
    repl_name_sfx(g, "_hb", hbt, sizeof hbt);
    int64_t last = 0, at = 0, mark = sl_wall_ms();
    if (ct_pg_heartbeat_read(pub, hbt, &last, e) != 0)
        return -1;
    if (mark <= last)
        mark = last + 1;
    if (ct_pg_heartbeat_beat(pub, hbt, mark, e) != 0)
        return -1;
    int64_t deadline = sl_now_ms() + APPLY_MS;
    for (;;) {
        if (ct_pg_heartbeat_read(sub, hbt, &at, e) != 0)
            return -1;
        if (at >= mark)
            return 0;
        if (sl_now_ms() >= deadline)
            return 1;
        struct timespec ts = {0, 5 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

int mig_write_cutover(ctl *c, mig *g, ct_db *src, ct_db *dst, char *why, size_t len)
{
    const ct_router_cfg *r = &g->m->router;
    char fwd[64], rev[64];
    repl_name_sfx(g, "", fwd, sizeof fwd);
    repl_name_sfx(g, "_rev", rev, sizeof rev);
    sl_err e = {0};
    long left = 0;
    uint64_t lsn = 0;
    size_t nseq = 0, ended = 0;
    int fwd_off = 0, reverse_on = 0;
    const char *tables[257];
    char hb[80];
    size_t nt = pub_tables(g, tables, hb, sizeof hb),
           nscope = g->m->ntables < 256 ? g->m->ntables : 256;
    if (g->state != MS_RUNNING) /* aborted or moved meanwhile: not this pass */
        return snprintf(why, len, "write cutover not started: the migration is %s",
                        mig_state_name(g->state)),
               -1;
    /* before the pause: the reverse publication (catalog only: nothing
     * flows until its subscription exists), once any leftover of a
     * cutover that died is gone */
    const char *step = "preparing reverse replication";
    int64_t t0 = sl_now_ms(), mark = 0;
    json_t *took = json_object(); /* milliseconds each step of the pause took */
#define DONE(name)                                                                                 \
    do {                                                                                           \
        int64_t now_ = sl_now_ms();                                                                \
        json_object_set_new(took, name, json_integer(now_ - mark));                                \
        mark = now_;                                                                               \
    } while (0)
    if (ct_pg_drop_replication(dst, src, rev, rev, &e) != 0 ||
        ct_pg_create_publication(dst, rev, tables, nt, &e) != 0)
        goto fail;
    step = "stopping new writes";
    t0 = mark = sl_now_ms();
    if (ct_haproxy_set_state(c->haproxy, r->write_backend, r->source_server, "drain", &e) != 0)
        goto fail;
    step = "draining the source's write sessions";
    int d = ct_haproxy_wait_drained(c->haproxy, r->write_backend, r->source_server, DRAIN_MS, &left,
                                    &e);
    if (d < 0)
        goto fail;
    /* sessions still open after the drain time are cut: their clients
     * retry, refused until writes reach the target */
    if (d == 1 &&
        ct_haproxy_shutdown_sessions(c->haproxy, r->write_backend, r->source_server, &e) != 0)
        goto fail;
    /* a cut session's backend still finishes its statement and commits:
     * end them, or a commit after the catch-up below never reaches the
     * target */
    step = "ending the source's sessions still in a statement";
    if (ct_pg_end_sessions(src, DRAIN_MS * 4, &ended, &e) != 0)
        goto fail;
    DONE("drain");
    step = "waiting for the target to apply the source's last writes";
    if (ct_pg_current_lsn(src, &lsn, &e) != 0)
        goto fail;
    int w =
        g->hb ? wait_beat(g, src, dst, &e) : ct_pg_wait_applied(src, dst, fwd, lsn, APPLY_MS, &e);
    if (w != 0) {
        if (w > 0)
            sl_err_setc(&e, SL_BUSY, "not applied within %d ms", APPLY_MS);
        goto fail;
    }
    DONE("apply");
    step = "syncing sequences";
    /* the scope's tables' own: a sequence of another table is not ours */
    if (ct_pg_sync_sequences(src, dst, tables, nscope, SEQ_MARGIN, &nseq, &e) != 0)
        goto fail;
    /* PostgreSQL 15 has no origin filter: forward off before reverse on,
     * or every change would loop */
    DONE("sequences");
    step = "stopping the forward subscription";
    fwd_off = 1; /* from here the way back re-enables it, whatever happened */
    if (save_stage(c, g, CUT_FORWARD_OFF, &e) != 0 ||
        ct_pg_set_subscription_enabled(dst, fwd, 0, &e) != 0)
        goto fail;
    crash_point(c, "forward_off");
    DONE("forward_off");
    step = "starting reverse replication";
    if (ct_pg_create_subscription_ex(src, rev, ctl_dsn(c, g->m->target), rev, 0, &e) != 0)
        goto fail;
    /* from here a restart finishes the cutover instead of undoing it */
    DONE("reverse_on");
    step = "recording the cutover's progress";
    if (save_stage(c, g, CUT_REVERSE_ON, &e) != 0)
        goto fail;
    reverse_on = 1;
    crash_point(c, "reverse_on");
    DONE("saved");
    step = "sending writes to the target";
    if (mig_route(c, g, "target", g->read_pct, "target") < 0) {
        sl_err_setc(&e, SL_INTERNAL, "%s", g->router_error);
        goto fail;
    }
    crash_point(c, "routed");
    DONE("route");
#undef DONE
    g->write_pause_s = (double)(sl_now_ms() - t0) / 1000.0;
    g->writes_cut = 1;
    g->writes_moved_ms = sl_wall_ms();
    sl_err se = {0};
    if (save_stage(c, g, CUT_NONE, &se) != 0) /* REVERSE_ON saved: a restart finishes it */
        ctl_logf(c, "%s", se.msg);
    ctl_event(c, g, "sluice", "write_cutover",
              json_pack("{s:f, s:I, s:I, s:s, s:i, s:I, s:o}", "write_pause_seconds",
                        g->write_pause_s, "lsn_applied", (json_int_t)lsn, "sequences_synced",
                        (json_int_t)nseq, "reverse_replication", rev, "sessions_cut", (int)left,
                        "sessions_ended", (json_int_t)ended, "steps_ms", took));
    return 0;
fail:
    json_decref(took);
    snprintf(why, len, "write cutover failed while %s: %s", step, e.msg);
    g->write_pause_s = (double)(sl_now_ms() - t0) / 1000.0;
    g->cut_stage = CUT_NONE;
    g->dirty = 1;
    if (reverse_on) {
        /* the router may have half moved writes (the target took some, or
         * the endpoint told clients so): never undone, rolled back like
         * any abort after the cutover (the caller aborts), which drains
         * the target's writes into the source first */
        g->writes_cut = 1;
        return -1;
    }
    /* back to where it was: forward replication, writes on the source, on
     * sessions of its own (the runner's may be the ones that stalled) */
    sl_err u = {0};
    ct_db *ft = open_side(c, g->m->target, &u), *fs = ft ? open_side(c, g->m->source, &u) : NULL;
    /* whatever of the reverse stream exists goes, the forward one on again */
    int undone = fs && ct_pg_drop_replication(ft, fs, rev, rev, &u) == 0 &&
                 (!fwd_off || ct_pg_set_subscription_enabled(ft, fwd, 1, &u) == 0);
    if (!undone && fwd_off) { /* a restart tries again (stage forward_off) */
        g->cut_stage = CUT_FORWARD_OFF;
        size_t at = strlen(why);
        if (at + 1 < len)
            snprintf(why + at, len - at,
                     "; undoing it failed too (%s): the forward subscription may be off", u.msg);
    }
    ct_db_free(fs);
    ct_db_free(ft);
    /* writes back on the source (its drain state lifted) */
    mig_route(c, g, "target", g->read_pct, "source");
    return -1;
}

int mig_cutover_recover(ctl *c, mig *g, char *why, size_t len)
{
    int stage = g->cut_stage;
    if (stage == CUT_NONE)
        return 0;
    if (stage == CUT_REVERSE_ON) {
        /* the source was drained, the target had applied all of it, the
         * forward stream was off and the reverse one on: only the route
         * was left (the caller sets it from these fields) */
        snprintf(g->writes, sizeof g->writes, "target");
        g->writes_cut = 1;
        g->writes_moved_ms = sl_wall_ms();
        g->write_pause_s = -1; /* the pause ran while no process measured it */
        g->cut_stage = CUT_NONE;
        g->dirty = 1;
        ctl_event(c, g, "sluice", "write_cutover",
                  json_pack("{s:s}", "resumed", "finished after a restart: writes to the target"));
        return 0;
    }
    /* the forward stream may be off, a reverse one half made: undo both;
     * the source took no write since (drained), so none is missing */
    char fwd[64], rev[64];
    repl_name_sfx(g, "", fwd, sizeof fwd);
    repl_name_sfx(g, "_rev", rev, sizeof rev);
    sl_err e = {0};
    ct_db *dst = open_side(c, g->m->target, &e), *src = dst ? open_side(c, g->m->source, &e) : NULL;
    int rc = src && ct_pg_drop_replication(dst, src, rev, rev, &e) == 0 &&
                     ct_pg_set_subscription_enabled(dst, fwd, 1, &e) == 0
                 ? 0
                 : -1;
    ct_db_free(src);
    ct_db_free(dst);
    if (rc != 0) {
        snprintf(why, len,
                 "a write cutover was interrupted by a restart and could not be undone: %s", e.msg);
        return -1;
    }
    g->cut_stage = CUT_NONE;
    g->dirty = 1;
    ctl_event(c, g, "sluice", "write_cutover",
              json_pack("{s:s}", "undone",
                        "interrupted by a restart before reverse replication "
                        "started: forward replication on, writes on the source"));
    return 0;
}

int mig_write_rollback(ctl *c, mig *g, char *note, size_t len)
{
    const ct_router_cfg *r = &g->m->router;
    char rev[64];
    repl_name_sfx(g, "_rev", rev, sizeof rev);
    sl_err e = {0};
    uint64_t lsn = 0;
    note[0] = 0;
    /* stop writes on the target first, let its open sessions finish (or
     * shut them): what it took is drained into the source below */
    if (c->haproxy && r->write_backend &&
        ct_haproxy_set_state(c->haproxy, r->write_backend, r->target_server, "drain", &e) == 0) {
        long left = 0;
        if (ct_haproxy_wait_drained(c->haproxy, r->write_backend, r->target_server, DRAIN_MS, &left,
                                    &e) == 1)
            ct_haproxy_shutdown_sessions(c->haproxy, r->write_backend, r->target_server, &e);
    }
    ct_db *tgt = open_side(c, g->m->target, &e), *src = tgt ? open_side(c, g->m->source, &e) : NULL;
    /* the target's cut sessions still commit what they are in: ended
     * first, as the cutover does on the source */
    int w = -1;
    if (src && ct_pg_end_sessions(tgt, DRAIN_MS * 4, NULL, &e) != 0)
        src = (ct_db_free(src), NULL);
    /* the source gets every write made on the target before it takes
     * writes again: the reverse stream is drained (a heartbeat, else by LSN) */
    if (src && g->hb)
        w = wait_beat(g, tgt, src, &e);
    else if (src && ct_pg_current_lsn(tgt, &lsn, &e) == 0)
        w = ct_pg_wait_applied(tgt, src, rev, lsn, APPLY_MS, &e);
    /* and its sequences go past the target's: the rows the target added
     * hold values the source's sequences never gave */
    const char *tables[256];
    size_t nt = 0;
    for (; nt < g->m->ntables && nt < 256; nt++)
        tables[nt] = g->m->tables[nt].name;
    if (w == 0 && ct_pg_sync_sequences(tgt, src, tables, nt, SEQ_MARGIN, NULL, &e) != 0)
        snprintf(note, len, "; the source's sequences were not set past the target's (%s)", e.msg);
    else if (w != 0)
        snprintf(note, len,
                 "; the reverse stream was not drained (%s): writes made on the target "
                 "may be missing on the source",
                 w > 0 ? "timed out" : e.msg);
    ct_db_free(src);
    ct_db_free(tgt);
    int64_t took = mig_route(c, g, "source", 0, "source");
    return took < 0 ? -1 : 0;
}
