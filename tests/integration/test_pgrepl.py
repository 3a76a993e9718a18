#!/usr/bin/python3
"""connectors/pgrepl.c against a real PostgreSQL with wal_level = logical:
starts it, creates a database, and runs the C test build/asan/test_pgrepl_pg
(changed keys of every kind with their commit LSNs, a 100,000-row
transaction, restarts from the slot, teardown, orphans, password-free
errors), relaying its TAP."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import LOGICAL, PgServer, SAN_ENV, SLUICE, Tap, check_sanitizer  # noqa: E402



def main():
    t = Tap()
    pg = PgServer(extra_opts=LOGICAL)
    pg.createdb("shop")
    binary = os.path.join(os.path.dirname(os.path.abspath(SLUICE)), "test_pgrepl_pg")
    if not t.ok(os.access(binary, os.X_OK), f"{binary} is built",
                "make -j1 build/asan/test_pgrepl_pg"):
        t.done()
    env = dict(os.environ)
    env.update(SAN_ENV)
    env.pop("PGPASSWORD", None)
    env.update(SLUICE_PG_DSN=pg.dsn("shop"))
    r = subprocess.run([binary], capture_output=True, text=True, env=env, timeout=600)
    check_sanitizer(r.returncode, r.stderr, "test_pgrepl_pg")
    lines = r.stdout.splitlines()
    for line in lines:
        print(f"#   {line}", flush=True)
    failed = [l for l in lines if l.startswith("not ok")]
    passed = [l for l in lines if l.startswith("ok ")]
    t.ok(r.returncode == 0 and not failed and len(passed) >= 35,
         f"test_pgrepl_pg: {len(passed)} passed, {len(failed)} failed, exit {r.returncode}",
         "\n".join(failed) + "\n" + r.stderr[-3000:])
    t.ok(PgServer.PASSWORD not in r.stdout + r.stderr,
         "the server's password appears nowhere in its output")
    t.ok("wr0ng-Passw0rd" not in r.stdout + r.stderr and "S3cret" not in r.stdout + r.stderr,
         "nor do the wrong passwords it tried")
    c = pg.connect("shop")
    cur = c.cursor()
    cur.execute("SELECT count(*) FROM pg_replication_slots")
    slots = cur.fetchone()[0]
    cur.execute("SELECT count(*) FROM pg_publication")
    pubs = cur.fetchone()[0]
    t.ok(slots == 0 and pubs == 0, f"no slot ({slots}) and no publication ({pubs}) left behind")
    c.close()
    t.done()


main()
