/* pgadmin without a server: the schema gate's and the audit's comparisons,
 * the lag clock, and the SQLite side over real temporary files (the
 * PostgreSQL side is tests/test_pgadmin_pg.c, run by
 * tests/integration/test_pgadmin.py). */
#include <limits.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../control/pgadmin.h"
#include "tap.h"

static ct_column col(const char *name, const char *type, int not_null, int in_key)
{
    return (ct_column){(char *)name, (char *)type, not_null, in_key};
}

static void test_columns_compare(void)
{
    char why[200];
    ct_column a[] = {col("id", "bigint", 1, 1), col("total", "numeric(12,2)", 0, 0),
                     col("note", "text", 0, 0)};
    ct_column same[] = {col("note", "text", 0, 0), col("id", "bigint", 1, 1),
                        col("total", "numeric(12,2)", 0, 0)};
    ok(ct_columns_compare(a, 3, same, 3, why, sizeof why) == 0 && why[0] == '\0',
       "the same columns in another order are compatible");

    ct_column type[] = {col("id", "bigint", 1, 1), col("total", "text", 0, 0),
                        col("note", "text", 0, 0)};
    ok(ct_columns_compare(a, 3, type, 3, why, sizeof why) == 1 &&
           !strcmp(why, "column total: numeric(12,2) on source, text on target"),
       "a type differs: %s", why);

    ct_column typmod[] = {col("id", "bigint", 1, 1), col("total", "numeric(12,3)", 0, 0),
                          col("note", "text", 0, 0)};
    ok(ct_columns_compare(a, 3, typmod, 3, why, sizeof why) == 1 && strstr(why, "numeric(12,3)"),
       "types compare as text, modifiers too: %s", why);

    ct_column missing[] = {col("id", "bigint", 1, 1), col("total", "numeric(12,2)", 0, 0)};
    ok(ct_columns_compare(a, 3, missing, 2, why, sizeof why) == 1 &&
           !strcmp(why, "column note: on source, missing on target"),
       "a column missing on the target: %s", why);
    ok(ct_columns_compare(missing, 2, a, 3, why, sizeof why) == 1 &&
           !strcmp(why, "column note: missing on source, on target"),
       "a column only on the target: %s", why);

    ct_column key[] = {col("id", "bigint", 1, 1), col("total", "numeric(12,2)", 1, 1),
                       col("note", "text", 0, 0)};
    ok(ct_columns_compare(a, 3, key, 3, why, sizeof why) == 1 && strstr(why, "column total:") &&
           strstr(why, "primary key"),
       "key membership differs: %s", why);

    ct_column nn[] = {col("id", "bigint", 1, 1), col("total", "numeric(12,2)", 0, 0),
                      col("note", "text", 1, 0)};
    ok(ct_columns_compare(a, 3, nn, 3, why, sizeof why) == 1 &&
           !strcmp(why, "column note: nullable on source, NOT NULL on target"),
       "a target that refuses the source's NULLs: %s", why);
    ok(ct_columns_compare(nn, 3, a, 3, why, sizeof why) == 0,
       "a nullable target for a NOT NULL source is fine");
    ok(ct_columns_compare(NULL, 0, NULL, 0, why, sizeof why) == 0, "two empty lists");
}

static char *dupe(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* an aggregate owning copies of names/values, as ct_db_aggregate returns */
static ct_aggregate agg(int64_t rows, size_t n, const char *const *names, const char *const *values)
{
    ct_aggregate a = {.rows = rows, .n = n};
    a.names = calloc(n + 1, sizeof *a.names);
    a.values = calloc(n + 1, sizeof *a.values);
    for (size_t i = 0; i < n; i++) {
        a.names[i] = dupe(names[i]);
        a.values[i] = dupe(values[i]);
    }
    return a;
}

static void test_aggregate_compare(void)
{
    char why[200];
    const char *names[] = {"sum(total)", "min(total)", "max(total)"};
    const char *v1[] = {"30.50", "1.00", "20.00"};
    const char *v2[] = {"30.50", "1.00", "21.00"};
    const char *vnull[] = {NULL, NULL, NULL};
    const char *other[] = {"sum(amount)", "min(amount)", "max(amount)"};
    ct_aggregate a = agg(3, 3, names, v1), b = agg(3, 3, names, v1), c = agg(3, 3, names, v2),
                 d = agg(4, 3, names, v2), e = agg(0, 3, names, vnull), f = agg(0, 3, names, vnull),
                 g = agg(3, 3, other, v1), h = agg(3, 2, names, v1);
    ok(ct_aggregate_compare(&a, &b, why, sizeof why) == 0 && why[0] == '\0', "equal figures");
    ok(ct_aggregate_compare(&a, &c, why, sizeof why) == 1 &&
           !strcmp(why, "max(total): 20.00 on source, 21.00 on target"),
       "one figure differs: %s", why);
    ok(ct_aggregate_compare(&a, &d, why, sizeof why) == 1 &&
           !strcmp(why, "rows: 3 on source, 4 on target"),
       "rows are compared first: %s", why);
    ok(ct_aggregate_compare(&e, &f, why, sizeof why) == 0, "two empty tables (NULL figures)");
    ct_aggregate zero = agg(0, 3, names, v1);
    ok(ct_aggregate_compare(&e, &zero, why, sizeof why) == 1 &&
           !strcmp(why, "sum(total): NULL on source, 30.50 on target"),
       "NULL against a value: %s", why);
    ok(ct_aggregate_compare(&a, &g, why, sizeof why) == 1 && strstr(why, "sum(total)") &&
           strstr(why, "sum(amount)"),
       "figure names must match: %s", why);
    ok(ct_aggregate_compare(&a, &h, why, sizeof why) == 1 && strstr(why, "max(total)"),
       "a figure only on one side: %s", why);
    ct_aggregate *all[] = {&a, &b, &c, &d, &e, &f, &g, &h, &zero};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        ct_aggregate_free(all[i]);
}

static void test_lag_clock(void)
{
    ct_lag_clock c = {0};
    ok(ct_lag_seconds(&c, 5000, 0) == 0, "no samples: no lag");
    ct_lag_record(&c, 1000, 100);
    ct_lag_record(&c, 2000, 200);
    ct_lag_record(&c, 3000, 300);
    ok(ct_lag_seconds(&c, 10000, 300) == 0, "the newest confirmed: 0");
    ok(ct_lag_seconds(&c, 10000, 400) == 0, "confirmed ahead of every sample: 0");
    ok(ct_lag_seconds(&c, 10000, 200) == 8.0, "confirmed the second: now - its time = 8 s (%g)",
       ct_lag_seconds(&c, 10000, 200));
    ok(ct_lag_seconds(&c, 10000, 250) == 8.0, "between samples: the older one's time (%g)",
       ct_lag_seconds(&c, 10000, 250));
    ok(ct_lag_seconds(&c, 10000, 50) == 9.0, "behind every sample: the oldest's age (%g)",
       ct_lag_seconds(&c, 10000, 50));

    ct_lag_record(&c, 4000, 300);
    ct_lag_record(&c, 5000, 400);
    ok(c.n == 4 && ct_lag_seconds(&c, 10000, 300) == 7.0,
       "a repeated LSN keeps the time it was first seen (%g)", ct_lag_seconds(&c, 10000, 300));

    ct_lag_clock w = {0};
    for (int i = 0; i < 100; i++)
        ct_lag_record(&w, 1000 * (int64_t)i, 10 * (uint64_t)i + 10);
    ok(w.n == 64, "the ring holds 64 samples (%zu)", w.n);
    ok(ct_lag_seconds(&w, 100000, 1000) == 0, "after wrapping, the newest confirmed: 0");
    ok(ct_lag_seconds(&w, 100000, 990) == 2.0, "after wrapping, one behind: 2 s (%g)",
       ct_lag_seconds(&w, 100000, 990));
    ok(w.lsn[0] == 10 && w.at_ms[0] == 0, "the oldest sample is kept as the anchor");
    double l370 = ct_lag_seconds(&w, 100000, 370); /* truly 64 s behind (i=36) */
    ok(l370 >= 64.0 && l370 <= 80.0, "an old lag is read coarsely, never as less (64 s: %g)", l370);
    ok(ct_lag_seconds(&w, 100000, 5) == 100.0,
       "behind every sample: the oldest's age, which keeps growing (%g)",
       ct_lag_seconds(&w, 100000, 5));
    ok(ct_lag_seconds(&w, 200000, 5) == 200.0, "... 100 s later: 200 s");
    double prev = 0;
    int rising = 1;
    for (int i = 0; i < 1000; i++) { /* a subscriber stuck at lsn 5 for 1,000 more samples */
        ct_lag_record(&w, 100000 + 1000 * (int64_t)i, 2000 + (uint64_t)i);
        double l = ct_lag_seconds(&w, 100000 + 1000 * (int64_t)i, 5);
        rising &= l > prev;
        prev = l;
    }
    ok(rising && prev == 1099.0, "a stuck subscriber's lag grows without a ceiling (%g)", prev);
    ok(ct_lag_seconds(&w, 50000, 990) == 0, "a clock that went back never gives a negative lag");
}

static int make_db(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    unlink(path);
    int rc = sqlite3_open(path, &db) == SQLITE_OK &&
             sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK;
    sqlite3_close(db);
    return rc;
}

static void test_sqlite(void)
{
    char dir[] = "/tmp/sluice-pgadmin-XXXXXX";
    if (!mkdtemp(dir)) {
        ok(0, "a temporary directory");
        return;
    }
    char src[PATH_MAX], dst[PATH_MAX], dsn[PATH_MAX + 16], why[200];
    snprintf(src, sizeof src, "%s/src.db", dir);
    snprintf(dst, sizeof dst, "%s/dst.db", dir);
    ok(make_db(src, "CREATE TABLE orders (id INTEGER PRIMARY KEY, total NUMERIC(12,2) NOT NULL, "
                    "qty int, price REAL, note TEXT, raw BLOB, untyped);"
                    "INSERT INTO orders VALUES (1, 10.5, 2, 1.25, 'a', x'00', 7),"
                    "(2, 20, 3, 2.5, 'b', NULL, 'x'), (3, 0.25, NULL, NULL, NULL, NULL, NULL);"
                    "CREATE TABLE empty (id INTEGER PRIMARY KEY, n INTEGER);") &&
           make_db(dst, "CREATE TABLE orders (id INTEGER PRIMARY KEY, total NUMERIC(12,2) NOT "
                        "NULL, qty int, price REAL, note TEXT, raw BLOB, untyped);"
                        "INSERT INTO orders VALUES (1, 10.5, 2, 1.25, 'a', x'00', 7),"
                        "(2, 20, 3, 2.5, 'b', NULL, 'x'), (3, 0.25, NULL, NULL, NULL, NULL, "
                        "NULL);"),
       "two SQLite files");

    sl_err e = {0};
    snprintf(dsn, sizeof dsn, "sqlite:%s", src);
    ct_db *a = ct_db_open(dsn, 2000, &e);
    ok(a != NULL && !ct_db_is_pg(a), "open sqlite:PATH: %s", e.msg);
    sl_err e2 = {0};
    ct_db *b = ct_db_open(dst, 2000, &e2);
    ok(b != NULL && !ct_db_is_pg(b), "open a bare path: %s", e2.msg);
    if (!a || !b) {
        ct_db_free(a);
        ct_db_free(b);
        return;
    }

    ct_side_facts fa, fb;
    char real[PATH_MAX];
    ok(ct_db_facts(a, &fa, &e) == 0 && !strcmp(fa.engine, "sqlite") && fa.major == 3 &&
           !fa.logical && realpath(src, real) && !strcmp(fa.server_id, real),
       "facts: sqlite 3, the file's real path (%s)", fa.server_id);
    ok(ct_db_facts(b, &fb, &e) == 0 && strcmp(fa.server_id, fb.server_id) != 0,
       "two files are two servers");

    ct_column *ca = NULL, *cb = NULL;
    size_t na = 0, nb = 0;
    ok(ct_db_columns(a, "orders", &ca, &na, &e) == 0 && na == 7, "seven columns: %s", e.msg);
    ok(na == 7 && !strcmp(ca[0].name, "id") && ca[0].in_key &&
           !strcmp(ca[1].type, "NUMERIC(12,2)") && ca[1].not_null && !ca[1].in_key &&
           !ca[2].not_null && !strcmp(ca[6].type, ""),
       "names, declared types, NOT NULL and the key");
    ok(ct_db_columns(b, "main.orders", &cb, &nb, &e) == 0 && nb == 7, "schema.name: %s", e.msg);
    ok(ct_columns_compare(ca, na, cb, nb, why, sizeof why) == 0, "the same table: compatible");
    ct_columns_free(ca, na);
    ct_columns_free(cb, nb);

    sl_err nf = {0};
    ct_column *none = NULL;
    size_t nn = 0;
    ok(ct_db_columns(b, "empty", &none, &nn, &nf) == -1 && nf.code == SL_NOT_FOUND &&
           strstr(nf.msg, "table empty not found on sqlite:"),
       "a missing table is SL_NOT_FOUND: %s", nf.msg);

    ct_aggregate ga, gb;
    ok(ct_db_aggregate(a, "orders", NULL, &ga, &e) == 0, "aggregate: %s", e.msg);
    /* id, total, qty, price; not note (TEXT), raw and untyped (BLOB affinity) */
    ok(ga.rows == 3 && ga.n == 12 && !strcmp(ga.names[0], "sum(id)") &&
           !strcmp(ga.names[3], "sum(total)") && !strcmp(ga.names[11], "max(price)"),
       "rows 3, sum/min/max of the four numeric-affinity columns (%zu figures)", ga.n);
    ok(ga.n >= 9 && !strcmp(ga.values[0], "6") && !strcmp(ga.values[3], "30.75") &&
           !strcmp(ga.values[4], "0.25") && !strcmp(ga.values[8], "3"),
       "values as SQLite prints them: sum(id)=%s sum(total)=%s min(total)=%s max(qty)=%s",
       ga.n ? ga.values[0] : "", ga.n > 3 ? ga.values[3] : "", ga.n > 4 ? ga.values[4] : "",
       ga.n > 8 ? ga.values[8] : "");
    ok(ct_db_aggregate(b, "orders", NULL, &gb, &e) == 0 &&
           ct_aggregate_compare(&ga, &gb, why, sizeof why) == 0,
       "two equal tables aggregate equal: %s", why);
    ct_aggregate_free(&gb);
    ok(ct_db_aggregate(b, "orders", "id < 3", &gb, &e) == 0 && gb.rows == 2 &&
           ct_aggregate_compare(&ga, &gb, why, sizeof why) == 1 &&
           !strcmp(why, "rows: 3 on source, 2 on target"),
       "where restricts the audit: %s", why);
    ct_aggregate_free(&gb);
    sl_err inj = {0};
    ok(ct_db_aggregate(b, "orders", "1); DELETE FROM orders; SELECT (1", &gb, &inj) == -1 &&
           inj.code == SL_INVALID,
       "a where that ends the statement is refused: %s", inj.msg);
    ct_aggregate_free(&ga);

    ct_aggregate ge;
    sl_err ee = {0};
    ct_db *a2 = ct_db_open(dsn, 2000, &ee);
    sqlite3 *w = NULL;
    sqlite3_open(src, &w);
    sqlite3_exec(w, "CREATE TABLE e2 (id INTEGER PRIMARY KEY, n REAL)", NULL, NULL, NULL);
    sqlite3_close(w);
    ok(a2 && ct_db_aggregate(a2, "e2", NULL, &ge, &ee) == 0 && ge.rows == 0 && ge.n == 6 &&
           ge.values[0] == NULL && ge.values[5] == NULL,
       "an empty table: rows 0, NULL figures: %s", ee.msg);
    ct_aggregate_free(&ge);
    ct_db_free(a2);

    sl_err me = {0};
    char missing[PATH_MAX + 16];
    snprintf(missing, sizeof missing, "sqlite:%s/nope.db", dir);
    ok(ct_db_open(missing, 1000, &me) == NULL && me.code == SL_DATABASE,
       "a missing file is SL_DATABASE: %s", me.msg);
    sl_err re = {0};
    ok(ct_pg_create_publication(a, "p", (const char *[]){"orders"}, 1, &re) == -1 &&
           re.code == SL_INVALID,
       "replication on SQLite is refused: %s", re.msg);

    ct_db_free(a);
    ct_db_free(b);
    unlink(src);
    unlink(dst);
    rmdir(dir);
}

int main(void)
{
    test_columns_compare();
    test_aggregate_compare();
    test_lag_clock();
    test_sqlite();
    return done_testing();
}
