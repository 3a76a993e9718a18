/* pgrepl against a real PostgreSQL with wal_level = logical: a publication
 * and slot set up, every changed key (int, bigint, text, composite, a key
 * updated, deletes, a truncate) arriving with its transaction's commit LSN
 * in commit order, a 100,000-row transaction, a restart from the slot after
 * a confirmed LSN (nothing before it replayed, nothing after it missed),
 * teardown of a slot held by a live stream and by a stopped process,
 * orphaned slots found by prefix, and errors without the password.
 *
 * tests/integration/test_pgrepl.py starts the server and runs this with
 * SLUICE_PG_DSN set; alone it skips. */
#include <libpq-fe.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../connectors/pgrepl.h"
#include "tap.h"

static PGconn *db;

static int exec_ok(const char *q)
{
    PGresult *r = PQexec(db, q);
    int st = PQresultStatus(r);
    int good = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!good)
        printf("# %s: %s", q, PQresultErrorMessage(r));
    PQclear(r);
    return good ? 0 : -1;
}

static long long scalar(const char *q)
{
    PGresult *r = PQexec(db, q);
    long long v = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
        v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return v;
}

static pr_lsn lsn_of(const char *q)
{
    PGresult *r = PQexec(db, q);
    unsigned hi = 0, lo = 0;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
        sscanf(PQgetvalue(r, 0, 0), "%X/%X", &hi, &lo);
    PQclear(r);
    return (pr_lsn)hi << 32 | lo;
}

/* Runs the statements of one transaction; its xid, and the WAL insert
 * position just before and just after its COMMIT, into t. */
typedef struct txn {
    long long xid;
    pr_lsn before, after;
} txn;

static int run_txn(const char *stmts, txn *t)
{
    if (exec_ok("BEGIN") || exec_ok(stmts))
        return -1;
    t->xid = scalar("SELECT txid_current()");
    t->before = lsn_of("SELECT pg_current_wal_insert_lsn()");
    if (exec_ok("COMMIT"))
        return -1;
    t->after = lsn_of("SELECT pg_current_wal_insert_lsn()");
    return 0;
}

/* A change as one line: "I public.ti 1" / "U s.t 2,x <- 1,x" / "C". */
static void describe(const pr_change *c, char *out, size_t cap)
{
    static const char kinds[] = "?IUDTC";
    size_t n = (size_t)snprintf(out, cap, "%c", kinds[c->kind]);
    if (c->kind == PR_COMMIT)
        return;
    n += (size_t)snprintf(out + n, cap - n, " %s.%s", c->schema, c->table);
    for (size_t k = 0; k < c->nkey && n < cap; k++)
        n += (size_t)snprintf(out + n, cap - n, "%s%s", k ? "," : " ",
                              c->key[k] ? c->key[k] : "NULL");
    if (c->old_key)
        for (size_t k = 0; k < c->nkey && n < cap; k++)
            n += (size_t)snprintf(out + n, cap - n, "%s%s", k ? "," : " <- ",
                                  c->old_key[k] ? c->old_key[k] : "NULL");
}

/* What a stream delivered: lines joined by '|', and per transaction its
 * commit LSN, end LSN and xid (the PR_COMMIT's), changes checked to carry
 * the commit LSN of the commit that follows them. */
typedef struct got {
    char text[8192];
    int ncommits;
    pr_lsn commit[16], end[16];
    uint32_t xid[16];
    int lsn_mismatch;
} got;

/* Reads until ncommits commits came (or 10 s of silence). */
static int collect(pr_stream *s, int ncommits, got *g, sl_err *e)
{
    memset(g, 0, sizeof *g);
    pr_lsn pending = 0;
    int npending = 0;
    while (g->ncommits < ncommits) {
        pr_change c;
        int r = pr_next(s, 10000, &c, e);
        if (r <= 0)
            return r;
        char line[512];
        describe(&c, line, sizeof line);
        size_t n = strlen(g->text);
        snprintf(g->text + n, sizeof g->text - n, "%s%s", n ? "|" : "", line);
        if (c.kind != PR_COMMIT) {
            if (npending++ && c.commit_lsn != pending)
                g->lsn_mismatch = 1;
            pending = c.commit_lsn;
            continue;
        }
        if (npending && c.commit_lsn != pending)
            g->lsn_mismatch = 1;
        npending = 0;
        g->commit[g->ncommits] = c.commit_lsn;
        g->end[g->ncommits] = c.end_lsn;
        g->xid[g->ncommits++] = c.xid;
    }
    return 1;
}

static const char *const TABLES[] = {"ti", "tb", "tt", "My Schema.Comp", "tk", "big"};

static const char SCHEMA[] =
    "CREATE TABLE ti (id int PRIMARY KEY, v text);"
    "CREATE TABLE tb (id bigint PRIMARY KEY, v text);"
    "CREATE TABLE tt (k text PRIMARY KEY, v int);"
    "CREATE SCHEMA \"My Schema\";"
    "CREATE TABLE \"My Schema\".\"Comp\" (a int, b text, c int, PRIMARY KEY (b, a));"
    "CREATE TABLE tk (id int PRIMARY KEY, v text);"
    "CREATE TABLE big (id int PRIMARY KEY);"
    "CREATE TABLE other (id int PRIMARY KEY);";

/* Keys of every type, in commit order, with their commit LSNs. */
static void changes(const char *dsn, pr_lsn setup_lsn)
{
    sl_err e = {0};
    pr_stream *s = pr_open(dsn, "sl_cv_main", "sl_cv_main", 0, &e);
    ok(s != NULL, "the stream opens %s", e.msg);
    if (!s)
        return;
    pr_change c;
    ok(pr_next(s, 300, &c, &e) == 0, "nothing changed: pr_next times out with 0 %s", e.msg);

    txn t[6];
    int good =
        !run_txn("INSERT INTO ti VALUES (1, 'a'), (2, 'b');"
                 "INSERT INTO tb VALUES (9223372036854775807, 'max'), (-5, 'neg');"
                 "INSERT INTO tt VALUES ('a b', 1), ('ünï\"''', 2);"
                 "INSERT INTO \"My Schema\".\"Comp\" VALUES (1, 'x', 0)",
                 &t[0]) &&
        !run_txn("UPDATE ti SET v = 'z' WHERE id = 1; DELETE FROM tb WHERE id = -5;"
                 "UPDATE \"My Schema\".\"Comp\" SET c = 1; INSERT INTO other VALUES (1)",
                 &t[1]) &&
        !run_txn("INSERT INTO tk VALUES (1, 'k')", &t[2]) &&
        !run_txn("UPDATE tk SET id = 2 WHERE id = 1; UPDATE \"My Schema\".\"Comp\" SET b = 'y'",
                 &t[3]) &&
        !run_txn("INSERT INTO other VALUES (2)", &t[4]) && !run_txn("TRUNCATE ti, tk", &t[5]);
    ok(good, "six transactions committed (one only on an unpublished table)");
    got g;
    int r = collect(s, 5, &g, &e);
    const char *want = "I public.ti 1|I public.ti 2|I public.tb 9223372036854775807|I public.tb -5|"
                       "I public.tt a b|I public.tt ünï\"'|I My Schema.Comp 1,x|C|"
                       "U public.ti 1|D public.tb -5|U My Schema.Comp 1,x|C|"
                       "I public.tk 1|C|"
                       "U public.tk 2 <- 1|U My Schema.Comp 1,y <- 1,x|C|"
                       "T public.ti|T public.tk|C";
    ok(r == 1 && !strcmp(g.text, want),
       "every changed key, in commit order:\n#   got  %s\n#   want %s %s", g.text, want, e.msg);
    int order = !g.lsn_mismatch, inside = 1, xids = 1;
    int map[5] = {0, 1, 2, 3, 5}; /* t[4] touched no published table */
    for (int i = 0; i < g.ncommits && r == 1; i++) {
        const txn *x = &t[map[i]];
        order &= i == 0 ? g.commit[0] > setup_lsn : g.commit[i] > g.end[i - 1];
        inside &= g.commit[i] >= x->before && g.commit[i] < x->after && g.end[i] > g.commit[i] &&
                  g.end[i] <= x->after;
        xids &= g.xid[i] == (uint32_t)x->xid;
        printf("# txn %d: commit " PR_LSN_FMT " end " PR_LSN_FMT " (WAL " PR_LSN_FMT
               " .. " PR_LSN_FMT ") xid %u\n",
               i, PR_LSN_ARGS(g.commit[i]), PR_LSN_ARGS(g.end[i]), PR_LSN_ARGS(x->before),
               PR_LSN_ARGS(x->after), g.xid[i]);
    }
    ok(order, "each change carries its commit's LSN; commit LSNs rise, past the slot's start");
    ok(inside, "each commit LSN lies within its own COMMIT's WAL");
    ok(xids, "each commit carries its transaction's xid");
    ok(pr_next(s, 500, &c, &e) == 0,
       "and nothing more: the unpublished table's transaction "
       "was not sent %s",
       e.msg);

    /* 100,000 rows in one transaction stream through */
    txn bt;
    ok(run_txn("INSERT INTO big SELECT generate_series(1, 100000)", &bt) == 0,
       "a transaction of 100,000 inserts commits");
    char *seen = calloc(100001, 1);
    int n = 0, dup = 0, wrong = 0, commits = 0;
    pr_lsn big_end = 0;
    double t0 = (double)clock();
    while (commits == 0 && (r = pr_next(s, 10000, &c, &e)) == 1) {
        if (c.kind == PR_COMMIT) {
            commits++, big_end = c.end_lsn;
            continue;
        }
        long id = c.nkey == 1 && c.key[0] ? strtol(c.key[0], NULL, 10) : 0;
        if (c.kind != PR_INSERT || strcmp(c.table, "big") || id < 1 || id > 100000) {
            wrong++;
            continue;
        }
        dup += seen[id]++;
        n++;
    }
    free(seen);
    ok(r == 1 && n == 100000 && !dup && !wrong && commits == 1,
       "all 100,000 keys arrive once each, then one commit (%d keys, %d twice, %d wrong, %.1f s "
       "CPU) %s",
       n, dup, wrong, ((double)clock() - t0) / CLOCKS_PER_SEC, e.msg);

    /* restart: confirm the big transaction, close, write while closed */
    pr_confirm(s, big_end);
    pr_free(s);
    pr_lsn flushed = lsn_of("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE "
                            "slot_name = 'sl_cv_main'");
    ok(flushed == big_end,
       "closing reported the confirmed LSN: the slot is at " PR_LSN_FMT " (" PR_LSN_FMT
       " confirmed)",
       PR_LSN_ARGS(flushed), PR_LSN_ARGS(big_end));
    txn a, b2;
    ok(run_txn("INSERT INTO ti VALUES (100, 'while closed')", &a) == 0,
       "a row inserted while no stream runs");
    s = pr_open(dsn, "sl_cv_main", "sl_cv_main", 0, &e);
    r = s ? collect(s, 1, &g, &e) : -1;
    ok(r == 1 && !strcmp(g.text, "I public.ti 100|C") && g.xid[0] == (uint32_t)a.xid,
       "reopened from the slot: only what came after the confirmed LSN: %s %s", g.text, e.msg);
    /* not confirmed this time: it comes again */
    ok(run_txn("INSERT INTO ti VALUES (101, 'unconfirmed')", &b2) == 0 && s &&
           collect(s, 1, &g, &e) == 1 && !strcmp(g.text, "I public.ti 101|C"),
       "one more, delivered but not confirmed %s", e.msg);
    pr_confirm(s, flushed); /* what the slot already had: changes nothing */
    pr_free(s);
    s = pr_open(dsn, "sl_cv_main", "sl_cv_main", 0, &e);
    r = s ? collect(s, 2, &g, &e) : -1;
    ok(r == 1 && !strcmp(g.text, "I public.ti 100|C|I public.ti 101|C"),
       "reopened: both unconfirmed transactions come again, none lost: %s %s", g.text, e.msg);
    pr_confirm(s, g.end[1]);
    pr_free(s);
    s = pr_open(dsn, "sl_cv_main", "sl_cv_main", 0, &e);
    ok(s && pr_next(s, 1000, &c, &e) == 0, "confirmed, closed and reopened: nothing replayed %s",
       e.msg);

    /* an idle stream's keepalives advance the slot once all is confirmed */
    ok(run_txn("INSERT INTO other VALUES (3)", &a) == 0, "a write to an unpublished table");
    for (int i = 0; i < 8 && s; i++)
        pr_next(s, 1000, &c, &e);
    pr_free(s);
    flushed = lsn_of("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE "
                     "slot_name = 'sl_cv_main'");
    ok(flushed >= a.after,
       "idle, all confirmed: the slot moved past it to " PR_LSN_FMT " (>= " PR_LSN_FMT ")",
       PR_LSN_ARGS(flushed), PR_LSN_ARGS(a.after));
}

/* A slot held by a live stream, and by a process that stopped without
 * closing: teardown takes both away. Orphans are found by prefix. */
static void teardown_and_orphans(const char *dsn)
{
    sl_err e = {0};
    pr_stream *s = pr_open(dsn, "sl_cv_main", "sl_cv_main", 0, &e);
    ok(s && scalar("SELECT count(*) FROM pg_replication_slots WHERE active") == 1,
       "a live stream holds the slot %s", e.msg);
    ok(pr_teardown(dsn, "sl_cv_main", &e) == 0, "teardown with the stream live %s", e.msg);
    ok(scalar("SELECT count(*) FROM pg_replication_slots") == 0 &&
           scalar("SELECT count(*) FROM pg_publication") == 0,
       "no slot, no publication left");
    pr_change c;
    sl_err se = {0};
    int r = 0;
    for (int i = 0; s && i < 1000 && (r = pr_next(s, 5000, &c, &se)) == 1; i++) {
    }
    ok(r == -1 && se.msg[0] && !strchr(se.msg, '\n'),
       "the stream whose backend was ended fails with one line: %s", se.msg);
    pr_free(s);
    ok(pr_teardown(dsn, "sl_cv_main", &e) == 0, "teardown again: nothing to do, no error %s",
       e.msg);

    /* a process stopped (SIGSTOP) while streaming: its slot stays active */
    const char *one[] = {"ti"};
    ok(pr_setup(dsn, "sl_cv_stopped", one, 1, NULL, &e) == 0, "a second slot %s", e.msg);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        sl_err ce = {0};
        pr_stream *cs = pr_open(dsn, "sl_cv_stopped", "sl_cv_stopped", 0, &ce);
        raise(SIGSTOP);
        pr_free(cs);
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, WUNTRACED);
    ok(WIFSTOPPED(st) && scalar("SELECT count(*) FROM pg_replication_slots WHERE active") == 1,
       "a stopped process's stream holds its slot");
    ok(pr_teardown(dsn, "sl_cv_stopped", &e) == 0 &&
           scalar("SELECT count(*) FROM pg_replication_slots") == 0 &&
           scalar("SELECT count(*) FROM pg_publication") == 0,
       "teardown terminates its backend and drops slot and publication %s", e.msg);
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);

    ok(pr_setup(dsn, "sl_cv_orph1", one, 1, NULL, &e) == 0 &&
           pr_setup(dsn, "sl_cv_live", one, 1, NULL, &e) == 0 &&
           pr_setup(dsn, "sl_cvx", one, 1, NULL, &e) == 0,
       "three more slots %s", e.msg);
    s = pr_open(dsn, "sl_cv_live", "sl_cv_live", 0, &e);
    char **names = NULL;
    size_t n = 0;
    ok(s && pr_orphaned(dsn, "sl_cv_", &names, &n, &e) == 0 && n == 1 &&
           !strcmp(names[0], "sl_cv_orph1"),
       "orphans by prefix sl_cv_: only the inactive sl_cv_orph1 (not the live one, not sl_cvx: "
       "'_' is no wildcard): %zu %s %s",
       n, n ? names[0] : "", e.msg);
    pr_names_free(names, n);
    pr_free(s);
    ok(pr_teardown(dsn, "sl_cv_orph1", &e) == 0 && pr_teardown(dsn, "sl_cv_live", &e) == 0 &&
           pr_teardown(dsn, "sl_cvx", &e) == 0 &&
           scalar("SELECT count(*) FROM pg_replication_slots") == 0 &&
           scalar("SELECT count(*) FROM pg_publication") == 0,
       "all torn down %s", e.msg);
}

/* dsn with its password replaced by pw: postgresql://USER:PW@... */
static void with_password(const char *dsn, const char *pw, char *out, size_t cap)
{
    const char *colon = strchr(dsn + strlen("postgresql://"), ':');
    const char *at = strchr(dsn, '@');
    snprintf(out, cap, "%.*s%s%s", (int)(colon + 1 - dsn), dsn, pw, at);
}

static int one_line_without(const sl_err *e, const char *pw)
{
    return e->msg[0] && !strchr(e->msg, '\n') && !strstr(e->msg, pw);
}

static void errors(const char *dsn, const char *pw)
{
    char bad[512];
    with_password(dsn, "wr0ng-Passw0rd", bad, sizeof bad);
    sl_err e = {0};
    const char *ti[] = {"ti"};
    ok(!pr_open(bad, "sl_cv_main", "sl_cv_main", 0, &e) && e.code == SL_AUTH &&
           one_line_without(&e, "wr0ng-Passw0rd"),
       "a wrong password: SL_AUTH, one line, no password: %s", e.msg);
    sl_err e2 = {0};
    ok(pr_setup(bad, "sl_cv_x", ti, 1, NULL, &e2) == -1 && e2.code == SL_AUTH &&
           one_line_without(&e2, "wr0ng-Passw0rd"),
       "setup with it too: %s", e2.msg);
    sl_err e3 = {0};
    const char *missing[] = {"ti", "public.nope"};
    ok(pr_setup(dsn, "sl_cv_x", missing, 2, NULL, &e3) == -1 && e3.code == SL_NOT_FOUND &&
           strstr(e3.msg, "nope") && one_line_without(&e3, pw) &&
           scalar("SELECT count(*) FROM pg_publication") == 0,
       "a missing table: SL_NOT_FOUND, named, nothing left behind: %s", e3.msg);
    sl_err e4 = {0};
    ok(!pr_open(dsn, "sl_cv_nope", "sl_cv_nope", 0, &e4) && e4.code == SL_NOT_FOUND &&
           strstr(e4.msg, "sl_cv_nope") && one_line_without(&e4, pw),
       "a missing slot: SL_NOT_FOUND: %s", e4.msg);
    sl_err e5 = {0};
    ok(pr_setup(dsn, "Bad-Name", ti, 1, NULL, &e5) == -1 && e5.code == SL_INVALID,
       "a name outside [a-z0-9_]: SL_INVALID: %s", e5.msg);
    sl_err e6 = {0};
    ok(exec_ok("CREATE PUBLICATION sl_cv_theirs FOR TABLE tb") == 0 &&
           pr_setup(dsn, "sl_cv_theirs", ti, 1, NULL, &e6) == -1 && one_line_without(&e6, pw) &&
           scalar("SELECT count(*) FROM pg_publication_tables WHERE pubname = 'sl_cv_theirs' "
                  "AND tablename = 'tb'") == 1 &&
           scalar("SELECT count(*) FROM pg_replication_slots") == 0,
       "a publication that exists is refused and left as it was: %s", e6.msg);
    exec_ok("DROP PUBLICATION sl_cv_theirs");
    sl_err e7 = {0};
    ok(pr_setup("postgresql://u:S3cret%zz@127.0.0.1:1/x", "sl_cv_x", ti, 1, NULL, &e7) == -1 &&
           e7.code == SL_INVALID && one_line_without(&e7, "S3cret"),
       "a DSN libpq cannot parse: SL_INVALID, without the password: %s", e7.msg);
}

static void quiet(void *arg, const char *message)
{
    (void)arg, (void)message;
}

int main(void)
{
    const char *dsn = getenv("SLUICE_PG_DSN");
    if (!dsn) {
        printf("1..0 # SKIP SLUICE_PG_DSN not set (tests/integration/test_pgrepl.py sets it)\n");
        return 0;
    }
    char pw[128];
    const char *colon = strchr(dsn + strlen("postgresql://"), ':'), *at = strchr(dsn, '@');
    snprintf(pw, sizeof pw, "%.*s", (int)(at - colon - 1), colon + 1);
    db = PQconnectdb(dsn);
    if (PQstatus(db) != CONNECTION_OK) {
        printf("1..0 # SKIP cannot connect\n");
        return 0;
    }
    PQsetNoticeProcessor(db, quiet, NULL);
    ok(exec_ok(SCHEMA) == 0, "tables created");
    sl_err e = {0};
    pr_lsn lsn = 0;
    ok(pr_setup(dsn, "sl_cv_main", TABLES, 6, &lsn, &e) == 0 && lsn > 0,
       "setup: publication and slot, consistent at " PR_LSN_FMT " %s", PR_LSN_ARGS(lsn), e.msg);
    ok(scalar("SELECT count(*) FROM pg_publication_tables WHERE pubname = 'sl_cv_main'") == 6,
       "the publication holds the 6 tables");
    changes(dsn, lsn);
    teardown_and_orphans(dsn);
    errors(dsn, pw);
    PQfinish(db);
    return done_testing();
}
