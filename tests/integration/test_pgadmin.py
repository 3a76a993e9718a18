#!/usr/bin/python3
"""control/pgadmin.c against two real PostgreSQL servers with wal_level =
logical: starts them, creates the tables, and runs the C test
build/asan/test_pgadmin_pg (facts, schema gate, audits, publication and
subscription, lag, removal, password-free errors, sequence sync, reverse
replication), relaying its TAP."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import LOGICAL, PgServer, SAN_ENV, SLUICE, Tap, check_sanitizer  # noqa: E402


SCHEMA = """
CREATE TABLE orders (id bigint PRIMARY KEY, total numeric(12,2), note text, qty integer);
CREATE TABLE customers (id bigint PRIMARY KEY, name text, balance numeric(10,2), score integer);
CREATE TABLE gate (id integer PRIMARY KEY, total numeric(12,2));
CREATE TABLE "MixedCase" ("Id" integer PRIMARY KEY, "Value" text);
CREATE TABLE items (id serial PRIMARY KEY, note text);
CREATE SEQUENCE "Down Seq" INCREMENT BY -2 START WITH -1 MINVALUE -1000000 MAXVALUE -1;
CREATE SEQUENCE ahead_seq;
CREATE SEQUENCE unused_seq;
INSERT INTO customers VALUES (1, 'ann', 10.25, 5), (2, 'bob', 20.50, 7), (3, 'cy', 30.00, NULL);
"""


def main():
    t = Tap()
    src = PgServer(extra_opts=LOGICAL)
    dst = PgServer(extra_opts=LOGICAL)
    for s in (src, dst):
        s.createdb("shop")
        c = s.connect("shop")
        c.cursor().execute(SCHEMA)
        c.close()
    c = src.connect("shop")
    cur = c.cursor()
    cur.execute("INSERT INTO orders VALUES (1, 10.50, 'a', 1), (2, 20.00, 'b', 2), "
                "(3, 0.25, NULL, NULL)")
    cur.execute("SHOW wal_level")
    t.ok(cur.fetchone()[0] == "logical", "the source runs with wal_level = logical")
    major = c.server_version // 10000
    c.close()

    binary = os.path.join(os.path.dirname(os.path.abspath(SLUICE)), "test_pgadmin_pg")
    if not t.ok(os.access(binary, os.X_OK), f"{binary} is built",
                "make -j1 build/asan/test_pgadmin_pg"):
        t.done()
    env = dict(os.environ)
    env.update(SAN_ENV)
    env.pop("PGPASSWORD", None)
    env.update(SLUICE_PG_SRC=src.dsn("shop"), SLUICE_PG_DST=dst.dsn("shop"),
               SLUICE_PG_MAJOR=str(major))
    r = subprocess.run([binary], capture_output=True, text=True, env=env, timeout=300)
    check_sanitizer(r.returncode, r.stderr, "test_pgadmin_pg")
    lines = r.stdout.splitlines()
    for line in lines:
        print(f"#   {line}", flush=True)
    failed = [l for l in lines if l.startswith("not ok")]
    passed = [l for l in lines if l.startswith("ok ")]
    t.ok(r.returncode == 0 and not failed and len(passed) >= 60,
         f"test_pgadmin_pg: {len(passed)} passed, {len(failed)} failed, exit {r.returncode}",
         "\n".join(failed) + "\n" + r.stderr[-3000:])
    t.ok(PgServer.PASSWORD not in r.stdout + r.stderr,
         "the servers' password appears nowhere in its output")
    t.ok("wr0ng-Passw0rd" not in r.stdout + r.stderr and "Lost-pw-77" not in r.stdout,
         "nor do the wrong passwords it tried")
    t.done()


main()
