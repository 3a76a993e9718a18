#!/usr/bin/python3
"""Bad input: each case is one clear line on stderr, exit status 2, no
sanitizer report (so no crash and no leak), and never a password."""
import os
import sqlite3
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from harness import PgServer, Tap, free_port, sluice  # noqa: E402

t = Tap()
pg = PgServer()
db = pg.createdb("errs")
c = pg.connect(db)
cur = c.cursor()
cur.execute("CREATE TABLE good (id int PRIMARY KEY, v text)")
cur.execute("INSERT INTO good SELECT g, 'v' || g FROM generate_series(1, 100) g")
cur.execute("CREATE TABLE good2 (id int PRIMARY KEY, v text)")
cur.execute("INSERT INTO good2 SELECT * FROM good")
cur.execute("CREATE TABLE nopk (id int, v text)")
cur.execute("INSERT INTO nopk VALUES (1, 'a'), (NULL, 'b')")
cur.execute("CREATE TABLE otherkey (oid2 int PRIMARY KEY, id int, v text)")
cur.execute("CREATE TABLE floatkey (f float8 PRIMARY KEY, v text)")
cur.execute("INSERT INTO floatkey VALUES (1.5, 'a')")
cur.execute("CREATE TABLE empty1 (id int PRIMARY KEY, v text)")
cur.execute("CREATE TABLE empty2 (id int PRIMARY KEY, v text)")
ok_dsn = pg.dsn(db)
tmp = tempfile.mkdtemp()
notdb = os.path.join(tmp, "notdb.sqlite")
with open(notdb, "w") as f:
    f.write("this is not a database\n" * 100)


def check(name, args, must_contain, env=None):
    code, out, err = sluice("diff", *args, "--no-progress", env=env)
    lines = [l for l in err.splitlines() if l.strip()]
    good = (code == 2 and len(lines) == 1 and must_contain.lower() in err.lower()
            and pg.PASSWORD not in err and pg.PASSWORD not in out and "Sanitizer" not in err)
    t.ok(good, f"{name}: exit 2 with one line naming the problem",
         f"exit {code}\nstderr: {err}\nstdout: {out[:300]}")
    if good:
        t.diag(f"  {lines[0]}")


dead_port = free_port()
check("unreachable host", [f"postgresql://sluice:{pg.PASSWORD}@127.0.0.1:{dead_port}/x", ok_dsn,
                           "--table", "good"], "cannot connect")
check("wrong password", [pg.dsn(db, password="wrong-pw"), ok_dsn, "--table", "good"],
      "password authentication failed")
check("password from PGPASSWORD, wrong", [f"postgresql://sluice@127.0.0.1:{pg.port}/{db}", ok_dsn,
                                          "--table", "good"], "password",
      env={"PGPASSWORD": "also-wrong"})
check("missing database", [pg.dsn("nosuchdb"), ok_dsn, "--table", "good"], "nosuchdb")
check("malformed DSN", ["postgresql://[broken", ok_dsn, "--table", "good"], "invalid connection")
check("missing table", [ok_dsn, ok_dsn, "--table", "nosuch"], "does not exist")
check("missing target table", [ok_dsn, ok_dsn, "--table", "good", "--target-table", "nosuch2"],
      "nosuch2")
check("no primary key", [ok_dsn, ok_dsn, "--table", "nopk"], "no primary key")
check("key columns differ", [ok_dsn, ok_dsn, "--table", "good", "--target-table", "otherkey"],
      "key columns differ")
check("unsupported key type", [ok_dsn, ok_dsn, "--table", "floatkey"], "key column")
check("NULL in a key column", [ok_dsn, ok_dsn, "--table", "nopk", "--key", "id"], "NULL")
check("--key names a missing column", [ok_dsn, ok_dsn, "--table", "good", "--key", "nope"],
      "nope")
check("--columns names a missing column", [ok_dsn, ok_dsn, "--table", "good", "--columns", "zz"],
      "zz")
check("empty tables", [ok_dsn, ok_dsn, "--table", "empty1", "--target-table", "empty2"], "empty")
check("bad --where", [ok_dsn, ok_dsn, "--table", "good", "--where", "nosuchcol > 1"], "nosuchcol")
check("missing SQLite file", ["sqlite:" + os.path.join(tmp, "nope.db"), ok_dsn, "--table",
                              "good"], "nope.db")
check("file that is not SQLite", ["sqlite:" + notdb, ok_dsn, "--table", "good"], "not a database")
check("bad --format", [ok_dsn, ok_dsn, "--table", "good", "--format", "xml"], "format")
check("bad --workers", [ok_dsn, ok_dsn, "--table", "good", "--workers", "0"], "workers")
check("missing --table", [ok_dsn, ok_dsn], "--table")
check("one database only", [ok_dsn, "--table", "good"], "two databases")

code, out, err = sluice("diff", pg.dsn(db, password="wrong-pw"), ok_dsn, "--table", "good")
t.ok("wrong-pw" not in err + out, "a wrong password is never printed", err)
code, out, err = sluice(pg.dsn(db), "--table", "good")
t.ok(code == 2 and pg.PASSWORD not in err, "a DSN given as a command is not echoed", err)
code, out, err = sluice("diff", ok_dsn, ok_dsn, "--table", "empty1", "--target-table", "empty2",
                        "--allow-empty", "--no-progress")
t.ok(code == 0 and "identical" in out, "--allow-empty: two empty tables are equal", out + err)
code, out, err = sluice("diff", ok_dsn, ok_dsn, "--table", "good", "--target-table", "good2",
                        "--no-progress")
t.ok(code == 0 and "Sanitizer" not in err, "sanity: the same inputs without a fault exit 0",
     out + err)
t.done()
