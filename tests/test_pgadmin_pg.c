/* pgadmin against two real PostgreSQL servers with wal_level = logical:
 * facts, the schema gate, aggregation audits, a publication and a
 * subscription that replicate, lag while the subscription is disabled,
 * removal of all three objects, errors without passwords, sequences set
 * past the source's, and a write cutover's reverse replication (target ->
 * source, no initial copy) with waits for an LSN to be applied.
 *
 * tests/integration/test_pgadmin.py starts the servers, creates the
 * tables and runs this with SLUICE_PG_SRC / SLUICE_PG_DST (DSNs) and
 * SLUICE_PG_MAJOR set; alone it skips. */
#include <inttypes.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../control/pgadmin.h"
#include "tap.h"

static void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Runs q on c; 0 when it succeeded. */
static int exec_ok(PGconn *c, const char *q)
{
    PGresult *r = PQexec(c, q);
    int st = PQresultStatus(r);
    int good = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!good)
        printf("# %s: %s", q, PQresultErrorMessage(r));
    PQclear(r);
    return good ? 0 : -1;
}

/* The first value of q as a number (-1 on error or no row). */
static long long scalar(PGconn *c, const char *q)
{
    PGresult *r = PQexec(c, q);
    long long v = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
        v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return v;
}

/* dsn with its password replaced by pw: postgresql://USER:PW@... */
static void with_password(const char *dsn, const char *pw, char *out, size_t cap)
{
    const char *colon = strchr(dsn + strlen("postgresql://"), ':');
    const char *at = strchr(dsn, '@');
    snprintf(out, cap, "%.*s%s%s", (int)(colon + 1 - dsn), dsn, pw, at);
}

/* the password of a postgresql://USER:PW@... DSN */
static void password_of(const char *dsn, char *out, size_t cap)
{
    const char *colon = strchr(dsn + strlen("postgresql://"), ':');
    const char *at = strchr(dsn, '@');
    snprintf(out, cap, "%.*s", (int)(at - colon - 1), colon + 1);
}

static int has_secret(const char *msg, const char *pw)
{
    return strstr(msg, pw) != NULL;
}

/* The target's sequence name as "last_value/is_called". */
static void seq_state(PGconn *c, const char *seq, char *out, size_t cap)
{
    char q[200];
    snprintf(q, sizeof q, "SELECT last_value || '/' || is_called FROM %s", seq);
    PGresult *r = PQexec(c, q);
    snprintf(out, cap, "%s",
             PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 ? PQgetvalue(r, 0, 0) : "?");
    PQclear(r);
}

/* items (serial), "Down Seq" (increment -2), ahead_seq (the target
 * already past), unused_seq (never used) exist on both sides. */
static void sequences(ct_db *src, ct_db *dst, PGconn *sc, PGconn *dc)
{
    sl_err e = {0};
    char a[64], b[64], c[64], d[64];
    size_t n = 99;
    ok(exec_ok(sc, "INSERT INTO items (note) SELECT 's' || g FROM generate_series(1, 10) g") == 0 &&
           exec_ok(sc, "SELECT nextval('\"Down Seq\"') FROM generate_series(1, 3)") == 0 &&
           exec_ok(sc, "SELECT nextval('ahead_seq') FROM generate_series(1, 3)") == 0 &&
           exec_ok(dc, "SELECT setval('ahead_seq', 5000)") == 0,
       "the source takes 10 item ids, 3 of Down Seq and ahead_seq; the target's ahead_seq is "
       "at 5000");
    ok(ct_pg_sync_sequences(src, dst, NULL, 0, 100, &n, &e) == 0 && n == 2,
       "sync: 2 sequences set (%zu) %s", n, e.msg);
    seq_state(dc, "items_id_seq", a, sizeof a);
    seq_state(dc, "\"Down Seq\"", b, sizeof b);
    seq_state(dc, "ahead_seq", c, sizeof c);
    seq_state(dc, "unused_seq", d, sizeof d);
    ok(!strcmp(a, "110/true"), "items_id_seq: 10 + 100 on the target: %s", a);
    ok(!strcmp(b, "-205/true"), "Down Seq: -5 + 100 steps of -2 on the target: %s", b);
    ok(!strcmp(c, "5000/true"), "ahead_seq already past stays: %s", c);
    ok(!strcmp(d, "1/false"), "a sequence never used on the source is left alone: %s", d);
    ok(exec_ok(dc, "INSERT INTO items (note) VALUES ('t')") == 0 &&
           scalar(dc, "SELECT max(id) FROM items") == 111,
       "an insert on the target takes 111, past every source id");
    ok(exec_ok(dc, "DELETE FROM items") == 0, "(the target's items emptied again)");

    n = 99;
    seq_state(dc, "items_id_seq", a, sizeof a);
    ok(ct_pg_sync_sequences(src, dst, NULL, 0, 100, &n, &e) == 0 && n == 0,
       "a second sync sets nothing: %zu %s", n, e.msg);
    seq_state(dc, "items_id_seq", b, sizeof b);
    ok(!strcmp(a, b), "items_id_seq unchanged: %s", b);

    ok(exec_ok(sc, "INSERT INTO items (note) VALUES ('s11')") == 0 &&
           exec_ok(sc, "CREATE SEQUENCE \"Only Here\"") == 0 &&
           exec_ok(sc, "SELECT nextval('\"Only Here\"')") == 0,
       "one more item on the source, and a sequence the target lacks");
    const char *scope[] = {"items", "public.orders"};
    n = 99;
    ok(ct_pg_sync_sequences(src, dst, scope, 2, 200, &n, &e) == 0 && n == 1,
       "the scope's tables only: items' sequence set, \"Only Here\" not asked for (%zu) %s", n,
       e.msg);
    seq_state(dc, "items_id_seq", a, sizeof a);
    ok(!strcmp(a, "211/true"), "items_id_seq: 11 + 200 (%s)", a);
    ok(exec_ok(sc,
               "CREATE TABLE \"Q\"\"t\" (id int PRIMARY KEY DEFAULT nextval('\"Down Seq\"'))") ==
               0 &&
           exec_ok(
               dc,
               "CREATE TABLE \"Q\"\"t\" (id int PRIMARY KEY DEFAULT nextval('\"Down Seq\"'))") == 0,
       "a table whose default names a sequence it does not own");
    const char *scope2[] = {"Q\"t"};
    n = 99;
    ok(ct_pg_sync_sequences(src, dst, scope2, 1, 200, &n, &e) == 0 && n == 1,
       "a sequence named in a default is the table's too (%zu) %s", n, e.msg);
    seq_state(dc, "\"Down Seq\"", b, sizeof b);
    ok(!strcmp(b, "-405/true"), "Down Seq: -5 + 200 steps of -2: %s", b);
    sl_err me = {0};
    n = 99;
    ok(ct_pg_sync_sequences(src, dst, NULL, 0, 100, &n, &me) == -1 && me.code == SL_NOT_FOUND &&
           strstr(me.msg, "sequence public.\"Only Here\" not found on postgresql://") && n == 0,
       "a sequence missing on the target is SL_NOT_FOUND, named: %s", me.msg);
    seq_state(dc, "items_id_seq", a, sizeof a);
    ok(!strcmp(a, "211/true"), "nothing was set before the check failed: %s", a);
    ok(exec_ok(sc, "DROP TABLE \"Q\"\"t\"") == 0 && exec_ok(dc, "DROP TABLE \"Q\"\"t\"") == 0,
       "(the default's table dropped)");
    sl_err ne = {0};
    ok(ct_pg_sync_sequences(src, dst, NULL, 0, -1, &n, &ne) == -1 && ne.code == SL_INVALID,
       "a negative margin is refused: %s", ne.msg);
    ok(exec_ok(sc, "DROP SEQUENCE \"Only Here\"") == 0 &&
           ct_pg_sync_sequences(src, dst, NULL, 0, 0, &n, &e) == 0 && n == 0,
       "without it, margin 0: the target (211) is past the source (11): %zu %s", n, e.msg);
}

/* The write cutover's replication: forward (source -> target) for items,
 * disabled; then reverse (target -> source) without an initial copy. */
static void reverse_replication(ct_db *src, ct_db *dst, PGconn *sc, PGconn *dc, const char *sdsn,
                                const char *ddsn)
{
    sl_err e = {0};
    const char *items[] = {"items"};
    ok(ct_pg_create_publication(src, "fw_pub", items, 1, &e) == 0 &&
           ct_pg_create_subscription(dst, "fw_sub", sdsn, "fw_pub", &e) == 0,
       "forward replication of items: %s", e.msg);
    ct_repl_state st = {0};
    int ready = 0;
    for (int i = 0; i < 300 && !ready; i++) {
        if (ct_pg_repl_state(src, dst, "fw_sub", &st, &e))
            break;
        ready = st.tables == 1 && st.tables_ready == 1;
        if (!ready)
            nap_ms(100);
    }
    ok(ready && scalar(dc, "SELECT count(*) FROM items") == 11, "items copied: %lld rows %s",
       scalar(dc, "SELECT count(*) FROM items"), e.msg);

    uint64_t lsn = 0;
    ok(exec_ok(sc, "INSERT INTO items VALUES (50, 'fw')") == 0 &&
           ct_pg_current_lsn(src, &lsn, &e) == 0 && lsn > 0,
       "an insert on the source, then its LSN %" PRIu64 " %s", lsn, e.msg);
    ok(ct_pg_wait_applied(src, dst, "fw_sub", lsn, 20000, &e) == 0,
       "wait_applied: the target applied it %s", e.msg);
    ok(scalar(dc, "SELECT count(*) FROM items WHERE id = 50") == 1,
       "so the row is there, without polling");

    sl_err ge = {0};
    ok(ct_pg_set_subscription_enabled(dst, "nope_sub", 0, &ge) == -1 && ge.code == SL_NOT_FOUND,
       "enabling a missing subscription is SL_NOT_FOUND: %s", ge.msg);
    ok(ct_pg_set_subscription_enabled(dst, "fw_sub", 0, &e) == 0, "disable forward: %s", e.msg);
    ok(scalar(dc, "SELECT count(*) FROM pg_stat_subscription s JOIN pg_subscription p ON "
                  "p.oid = s.subid WHERE p.subname = 'fw_sub' AND s.pid IS NOT NULL") == 0 &&
           scalar(dc, "SELECT count(*) FROM pg_subscription WHERE subname = 'fw_sub' AND "
                      "NOT subenabled") == 1,
       "it is disabled and its apply worker gone on return");

    size_t n = 0;
    ok(ct_pg_sync_sequences(src, dst, NULL, 0, 1000, &n, &e) == 0, "sync sequences (%zu set) %s", n,
       e.msg);
    ok(exec_ok(dc, "INSERT INTO items (note) VALUES ('pre')") == 0,
       "a row on the target before reverse replication");
    ok(ct_pg_create_publication(dst, "rv_pub", items, 1, &e) == 0 &&
           ct_pg_create_subscription_ex(src, "rv_sub", ddsn, "rv_pub", 0, &e) == 0 &&
           ct_pg_create_subscription_ex(src, "rv_sub", ddsn, "rv_pub", 0, &e) == 0,
       "reverse replication, copy_data = false (created twice: kept) %s", e.msg);
    ok(scalar(sc, "SELECT count(*) FROM pg_subscription WHERE subname = 'rv_sub' "
                  "AND subenabled") == 1,
       "the reverse subscription is enabled on the source");

    ok(exec_ok(dc, "INSERT INTO items (note) VALUES ('post')") == 0 &&
           ct_pg_current_lsn(dst, &lsn, &e) == 0,
       "a write on the target after cutover, at %" PRIu64 " %s", lsn, e.msg);
    int w = ct_pg_wait_applied(dst, src, "rv_sub", lsn, 20000, &e);
    ok(w == 0, "wait_applied on the reverse stream: %d %s", w, e.msg);
    ok(scalar(sc, "SELECT count(*) FROM items WHERE note = 'post' AND id > 1011") == 1,
       "the source has the target's write, with the target's id");
    ok(scalar(sc, "SELECT count(*) FROM items WHERE note = 'pre'") == 0,
       "the row written before reverse replication was not copied (copy_data = false)");
    ok(scalar(dc, "SELECT count(*) FROM items WHERE note = 'post'") == 1,
       "and nothing looped back to the target");

    ok(ct_pg_set_subscription_enabled(src, "rv_sub", 0, &e) == 0 &&
           exec_ok(dc, "INSERT INTO items (note) VALUES ('held')") == 0 &&
           ct_pg_current_lsn(dst, &lsn, &e) == 0,
       "reverse disabled, another write on the target %s", e.msg);
    int64_t t0 = sl_now_ms();
    w = ct_pg_wait_applied(dst, src, "rv_sub", lsn, 300, &e);
    int64_t took = sl_now_ms() - t0;
    ok(w == 1 && took >= 300 && took < 5000, "wait_applied times out: %d after %" PRId64 " ms %s",
       w, took, e.msg);
    ok(scalar(sc, "SELECT count(*) FROM items WHERE note = 'held'") == 0,
       "the write did not reach the source");
    ok(ct_pg_set_subscription_enabled(src, "rv_sub", 1, &e) == 0 &&
           ct_pg_wait_applied(dst, src, "rv_sub", lsn, 20000, &e) == 0 &&
           scalar(sc, "SELECT count(*) FROM items WHERE note = 'held'") == 1,
       "enabled again, it drains: %s", e.msg);
    sl_err we = {0};
    ok(ct_pg_wait_applied(dst, src, "nope_sub", lsn, 100, &we) == -1 && we.code == SL_NOT_FOUND,
       "waiting on a missing subscription is SL_NOT_FOUND: %s", we.msg);
    ok(ct_pg_wait_applied(dst, NULL, "nope_sub", lsn, 100, &we) == -1 && we.code == SL_NOT_FOUND &&
           strstr(we.msg, "replication slot nope_sub not found"),
       "or, without the subscriber, a missing slot: %s", we.msg);

    ok(ct_pg_drop_replication(dst, src, "rv_sub", "rv_pub", &e) == 0 &&
           ct_pg_drop_replication(src, dst, "fw_sub", "fw_pub", &e) == 0,
       "drop both directions: %s", e.msg);
    PGconn *both[2] = {sc, dc};
    int left = 0;
    for (int i = 0; i < 2; i++)
        left += scalar(both[i], "SELECT count(*) FROM pg_subscription") +
                scalar(both[i], "SELECT count(*) FROM pg_replication_slots") +
                scalar(both[i], "SELECT count(*) FROM pg_publication");
    ok(left == 0, "no subscription, slot or publication left on either side (%d)", left);
}

/* A server that stops answering mid-session (its backend SIGSTOPped: to
 * the client, a network that swallows bytes) fails a statement after the
 * session's timeout plus a grace, not never; the session is given up. */
static void frozen_server(const char *dsn, PGconn *sc)
{
    sl_err e = {0};
    ct_db *d = ct_db_open(dsn, 1000, &e);
    ok(d != NULL, "open a session with a 1 s timeout: %s", e.msg);
    if (!d)
        return;
    long long pid = scalar(sc, "SELECT pid FROM pg_stat_activity WHERE application_name = "
                               "'sluice-control' ORDER BY backend_start DESC LIMIT 1");
    if (pid <= 0 || kill((pid_t)pid, SIGSTOP) != 0) {
        ok(0, "stop the session's backend (pid %lld)", pid);
        ct_db_free(d);
        return;
    }
    ct_side_facts f;
    int64_t t0 = sl_now_ms();
    int rc = ct_db_facts(d, &f, &e);
    int64_t took = sl_now_ms() - t0;
    kill((pid_t)pid, SIGCONT);
    ok(rc == -1 && e.code == SL_DATABASE && strstr(e.msg, "no answer within 3000 ms"),
       "a frozen backend: an error, not a hang: %s", e.msg);
    ok(took >= 2900 && took < 4500, "after the timeout and its grace (%lld ms)", (long long)took);
    sl_err e2 = {0};
    t0 = sl_now_ms();
    ok(ct_db_facts(d, &f, &e2) == -1 && sl_now_ms() - t0 < 100,
       "the stalled session fails at once afterwards: %s", e2.msg);
    ct_db_free(d);
}

int main(void)
{
    const char *sdsn = getenv("SLUICE_PG_SRC"), *ddsn = getenv("SLUICE_PG_DST");
    const char *major_s = getenv("SLUICE_PG_MAJOR");
    if (!sdsn || !ddsn || !sdsn[0] || !ddsn[0]) {
        printf("1..0 # SKIP no servers (run by tests/integration/test_pgadmin.py)\n");
        return 0;
    }
    char pw[128], bad[1024], why[300];
    password_of(sdsn, pw, sizeof pw);
    sl_err e = {0};
    ct_db *src = ct_db_open(sdsn, 10000, &e);
    ok(src && ct_db_is_pg(src), "open the source: %s", e.msg);
    ct_db *dst = ct_db_open(ddsn, 10000, &e);
    ok(dst && ct_db_is_pg(dst), "open the target: %s", e.msg);
    PGconn *sc = PQconnectdb(sdsn), *dc = PQconnectdb(ddsn);
    if (!src || !dst || PQstatus(sc) != CONNECTION_OK || PQstatus(dc) != CONNECTION_OK) {
        ok(0, "both servers reachable");
        return done_testing();
    }

    /* ---- facts ---- */
    ct_side_facts fs, fd;
    ok(ct_db_facts(src, &fs, &e) == 0 && ct_db_facts(dst, &fd, &e) == 0, "facts: %s", e.msg);
    ok(!strcmp(fs.engine, "postgresql") && fs.logical && fd.logical, "postgresql, logical both");
    ok(major_s && fs.major == atoi(major_s) && fd.major == fs.major, "major version %d (want %s)",
       fs.major, major_s ? major_s : "?");
    ok(fs.server_id[0] && strtoull(fs.server_id, NULL, 10) > 0 &&
           strcmp(fs.server_id, fd.server_id) != 0,
       "two system identifiers: %s, %s", fs.server_id, fd.server_id);

    /* ---- columns and the schema gate ---- */
    ct_column *cs = NULL, *cd = NULL;
    size_t ns = 0, nd = 0;
    ok(ct_db_columns(src, "orders", &cs, &ns, &e) == 0 && ns == 4, "source orders: 4 columns %s",
       e.msg);
    ok(ns == 4 && !strcmp(cs[0].name, "id") && !strcmp(cs[0].type, "bigint") && cs[0].in_key &&
           cs[0].not_null && !strcmp(cs[1].type, "numeric(12,2)") && !cs[1].in_key &&
           !strcmp(cs[2].type, "text") && !strcmp(cs[3].type, "integer"),
       "names, format_type() types, the key");
    ok(ct_db_columns(dst, "public.orders", &cd, &nd, &e) == 0 && nd == 4, "schema.name: %s", e.msg);
    ok(ct_columns_compare(cs, ns, cd, nd, why, sizeof why) == 0, "orders compatible: %s", why);
    ct_columns_free(cs, ns);
    ct_columns_free(cd, nd);

    ok(ct_db_columns(src, "MixedCase", &cs, &ns, &e) == 0 && ns == 2 &&
           !strcmp(cs[1].name, "Value"),
       "a mixed-case name is quoted, not folded: %s", e.msg);
    ct_columns_free(cs, ns);
    ok(ct_db_columns(src, "public.MixedCase", &cs, &ns, &e) == 0 && ns == 2, "schema.MixedCase: %s",
       e.msg);
    ct_columns_free(cs, ns);
    sl_err nf = {0};
    ok(ct_db_columns(src, "mixedcase", &cs, &ns, &nf) == -1 && nf.code == SL_NOT_FOUND,
       "the folded name is another table: %s", nf.msg);

    sl_err inj = {0};
    ok(ct_db_columns(src, "orders\"; DROP TABLE orders; --", &cs, &ns, &inj) == -1 &&
           inj.code == SL_NOT_FOUND && scalar(sc, "SELECT count(*) FROM orders") >= 0,
       "a hostile table name is only a name: %s", inj.msg);

    ok(exec_ok(dc, "ALTER TABLE gate ALTER COLUMN total TYPE text") == 0, "alter gate.total");
    ok(ct_db_columns(src, "gate", &cs, &ns, &e) == 0 &&
           ct_db_columns(dst, "gate", &cd, &nd, &e) == 0,
       "gate's columns: %s", e.msg);
    ok(ct_columns_compare(cs, ns, cd, nd, why, sizeof why) == 1 &&
           !strcmp(why, "column total: numeric(12,2) on source, text on target"),
       "a changed type is named: %s", why);
    ct_columns_free(cs, ns);
    ct_columns_free(cd, nd);

    sl_err missing = {0};
    ok(ct_db_columns(dst, "nope", &cd, &nd, &missing) == -1 && missing.code == SL_NOT_FOUND &&
           strstr(missing.msg, "table nope not found on postgresql://sluice@127.0.0.1:") &&
           !has_secret(missing.msg, pw),
       "a missing table is SL_NOT_FOUND: %s", missing.msg);

    /* ---- aggregation audit ---- */
    ct_aggregate as, ad;
    ok(ct_db_aggregate(src, "customers", NULL, &as, &e) == 0 &&
           ct_db_aggregate(dst, "customers", NULL, &ad, &e) == 0,
       "aggregate customers: %s", e.msg);
    ok(as.rows == 3 && as.n == 9 && !strcmp(as.names[3], "sum(balance)") &&
           !strcmp(as.values[3], "60.75") && !strcmp(as.names[8], "max(score)"),
       "rows and figures: %" PRId64 " rows, %zu figures, %s=%s", as.rows, as.n,
       as.n > 3 ? as.names[3] : "", as.n > 3 ? as.values[3] : "");
    ok(ct_aggregate_compare(&as, &ad, why, sizeof why) == 0, "equal on both sides: %s", why);
    ct_aggregate_free(&ad);
    ok(exec_ok(dc, "UPDATE customers SET balance = balance + 1 WHERE id = 1") == 0,
       "update a balance on the target");
    ok(ct_db_aggregate(dst, "customers", NULL, &ad, &e) == 0 &&
           ct_aggregate_compare(&as, &ad, why, sizeof why) == 1 &&
           !strcmp(why, "sum(balance): 60.75 on source, 61.75 on target"),
       "the update shows: %s", why);
    ct_aggregate_free(&ad);
    ct_aggregate_free(&as);
    ok(ct_db_aggregate(src, "customers", "id > 1", &as, &e) == 0 &&
           ct_db_aggregate(dst, "customers", "id > 1", &ad, &e) == 0 && as.rows == 2 &&
           ct_aggregate_compare(&as, &ad, why, sizeof why) == 0,
       "where leaves the changed row out: %s %s", e.msg, why);
    ct_aggregate_free(&ad);
    ct_aggregate_free(&as);
    sl_err wi = {0};
    ok(ct_db_aggregate(dst, "customers", "true) ; DELETE FROM customers; SELECT (1", &ad, &wi) ==
               -1 &&
           scalar(dc, "SELECT count(*) FROM customers") == 3,
       "a where that starts a second statement fails and deletes nothing: %s", wi.msg);

    /* ---- connection errors ---- */
    with_password(sdsn, "wr0ng-Passw0rd", bad, sizeof bad);
    sl_err ae = {0};
    ct_db *nope = ct_db_open(bad, 5000, &ae);
    ok(!nope && ae.code == SL_AUTH &&
           !strncmp(ae.msg, "cannot connect to postgresql://sluice@", 38) &&
           !has_secret(ae.msg, "wr0ng-Passw0rd") && !has_secret(ae.msg, pw),
       "a wrong password is SL_AUTH, without the password: %s", ae.msg);
    sl_err ue = {0};
    nope = ct_db_open("postgresql://sluice:Unre4chable-pw@127.0.0.1:1/shop", 3000, &ue);
    ok(!nope && ue.code == SL_DATABASE && !has_secret(ue.msg, "Unre4chable-pw") &&
           strstr(ue.msg, "cannot connect to postgresql://sluice@127.0.0.1:1/shop: "),
       "an unreachable server is SL_DATABASE: %s", ue.msg);

    /* ---- logical replication ---- */
    const char *tabs[] = {"orders"};
    ok(ct_pg_create_publication(src, "sl_pub", tabs, 1, &e) == 0, "create the publication: %s",
       e.msg);
    ok(ct_pg_create_publication(src, "sl_pub", tabs, 1, &e) == 0,
       "the same publication again is kept: %s", e.msg);
    const char *other[] = {"orders", "customers"};
    sl_err pe = {0};
    ok(ct_pg_create_publication(src, "sl_pub", other, 2, &pe) == -1 && pe.code == SL_INVALID,
       "one of that name with other tables is refused: %s", pe.msg);
    sl_err se = {0};
    ok(ct_pg_create_subscription(dst, "sl_bad", bad, "sl_pub", &se) == -1 &&
           !has_secret(se.msg, "wr0ng-Passw0rd") && !has_secret(se.msg, pw) &&
           scalar(dc, "SELECT count(*) FROM pg_subscription WHERE subname = 'sl_bad'") == 0,
       "a subscription the source refuses: an error without the password: %s", se.msg);
    ok(ct_pg_create_subscription(dst, "sl_sub", sdsn, "sl_pub", &e) == 0,
       "create the subscription: %s", e.msg);
    ok(ct_pg_create_subscription(dst, "sl_sub", sdsn, "sl_pub", &e) == 0,
       "the same subscription again is kept: %s", e.msg);

    ct_repl_state st = {0};
    int ready = 0;
    for (int i = 0; i < 300 && !ready; i++) {
        if (ct_pg_repl_state(src, dst, "sl_sub", &st, &e))
            break;
        ready = st.exists && st.enabled && st.tables == 1 && st.tables_ready == 1;
        if (!ready)
            nap_ms(100);
    }
    ok(ready, "the table is copied and ready (exists %d enabled %d tables %zu ready %zu) %s",
       st.exists, st.enabled, st.tables, st.tables_ready, e.msg);
    ok(scalar(dc, "SELECT count(*) FROM orders") == 3, "the initial copy: 3 orders");

    ok(exec_ok(sc, "INSERT INTO orders SELECT g, g * 1.5, 'n' || g, g FROM "
                   "generate_series(100, 199) g") == 0,
       "100 inserts on the source");
    int caught = 0;
    for (int i = 0; i < 300 && !caught; i++) {
        if (ct_pg_repl_state(src, dst, "sl_sub", &st, &e))
            break;
        caught = st.lag_bytes == 0 && st.confirmed_lsn > 0 &&
                 scalar(dc, "SELECT count(*) FROM orders") == 103;
        if (!caught)
            nap_ms(100);
    }
    ok(caught,
       "lag_bytes reaches 0 and the rows arrive (lag %" PRId64 ", source %" PRIu64
       ", confirmed %" PRIu64 ") %s",
       st.lag_bytes, st.source_lsn, st.confirmed_lsn, e.msg);
    ok(ct_db_aggregate(src, "orders", NULL, &as, &e) == 0 &&
           ct_db_aggregate(dst, "orders", NULL, &ad, &e) == 0 && as.rows == 103 &&
           ct_aggregate_compare(&as, &ad, why, sizeof why) == 0,
       "the audit agrees after replication: %s", why);
    ct_aggregate_free(&as);
    ct_aggregate_free(&ad);

    /* ---- a stopped subscriber: lag grows, confirmed stays ---- */
    ok(exec_ok(dc, "ALTER SUBSCRIPTION sl_sub DISABLE") == 0, "disable the subscription");
    /* the walsender lets go of the slot once the apply worker is gone */
    for (int i = 0; i < 100; i++) {
        if (scalar(sc, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'sl_sub' "
                       "AND active") == 0)
            break;
        nap_ms(100);
    }
    ct_repl_state before = {0}, after = {0};
    ok(ct_pg_repl_state(src, dst, "sl_sub", &before, &e) == 0 && before.exists && !before.enabled,
       "the state says disabled: %s", e.msg);
    ct_lag_clock clock = {0};
    int64_t t0 = sl_wall_ms();
    ct_lag_record(&clock, t0, before.source_lsn);
    ok(exec_ok(sc, "INSERT INTO orders SELECT g, g, 'late', g FROM generate_series(200, 299) g") ==
           0,
       "100 more inserts on the source");
    nap_ms(1200);
    ok(ct_pg_repl_state(src, dst, "sl_sub", &after, &e) == 0 &&
           after.lag_bytes > before.lag_bytes && after.source_lsn > before.source_lsn &&
           after.confirmed_lsn == before.confirmed_lsn,
       "lag grows (%" PRId64 " -> %" PRId64 " bytes) while confirmed stays", before.lag_bytes,
       after.lag_bytes);
    ct_lag_record(&clock, sl_wall_ms(), after.source_lsn);
    double lag = ct_lag_seconds(&clock, sl_wall_ms(), after.confirmed_lsn);
    ok(lag >= 1.0 && lag < 60, "the lag clock: %.1f s", lag);
    ok(scalar(dc, "SELECT count(*) FROM orders") == 103, "nothing arrived on the target");

    /* ---- removal ---- */
    ok(ct_pg_drop_replication(src, dst, "sl_sub", "sl_pub", &e) == 0, "drop replication: %s",
       e.msg);
    ok(scalar(dc, "SELECT count(*) FROM pg_subscription WHERE subname = 'sl_sub'") == 0 &&
           scalar(sc, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'sl_sub'") ==
               0 &&
           scalar(sc, "SELECT count(*) FROM pg_publication WHERE pubname = 'sl_pub'") == 0,
       "the subscription, the slot and the publication are gone");
    ok(ct_pg_drop_replication(src, dst, "sl_sub", "sl_pub", &e) == 0, "dropping again is fine: %s",
       e.msg);
    ok(ct_pg_repl_state(src, dst, "sl_sub", &st, &e) == 0 && !st.exists && st.confirmed_lsn == 0,
       "the state says gone: %s", e.msg);

    /* a subscription whose source cannot be reached: detached, then dropped */
    ok(exec_ok(dc,
               "CREATE SUBSCRIPTION sl_lost CONNECTION 'host=127.0.0.1 port=1 user=x "
               "password=Lost-pw-77 dbname=shop' PUBLICATION sl_pub WITH (connect = false)") == 0,
       "a subscription to an unreachable source");
    sl_err de = {0};
    ok(ct_pg_drop_replication(src, dst, "sl_lost", "sl_pub", &de) == 0 &&
           scalar(dc, "SELECT count(*) FROM pg_subscription WHERE subname = 'sl_lost'") == 0,
       "it is dropped without its slot: %s", de.msg);

    sequences(src, dst, sc, dc);
    reverse_replication(src, dst, sc, dc, sdsn, ddsn);
    frozen_server(sdsn, sc);

    PQfinish(sc);
    PQfinish(dc);
    ct_db_free(src);
    ct_db_free(dst);
    return done_testing();
}
