#!/usr/bin/python3
"""sluice control keeps its control database on PostgreSQL as well as on
SQLite (--state): a migration created, advanced and aborted is in the
PostgreSQL tables, comes back whole after a restart, survives a dropped
connection; a wrong password is refused in one line that does not show
it; a schema newer than this sluice is refused. The same restart on
SQLite."""
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time

from control_env import Control, cluster_for
from harness import SAN_ENV, SLUICE, PgServer, Tap, free_port

t = Tap()
work = tempfile.mkdtemp(prefix="sluice-ctlstore-")
dbs = {}
for name in ("old", "new"):
    path = os.path.join(work, name + ".db")
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE orders(id integer PRIMARY KEY, total numeric)")
    con.executemany("INSERT INTO orders VALUES (?, ?)", [(i, i * 3) for i in range(1, 201)])
    con.commit()
    con.close()
    dbs[name] = "sqlite:" + path

pg = PgServer()
pg.createdb("control")
pg_dsn = pg.dsn("control")
cl = cluster_for(dbs, workers=1)


def manifest(mid):
    return {"migration_id": mid, "scope": {"source": "old", "target": "new", "tables": ["orders"]},
            "cutover": {"steps": [100], "soak_seconds": 1}}


def run_one(ctl, mid, what):
    """POST, advance once, abort: the status and events after it."""
    code, doc = ctl.call("POST", "/migrations", manifest(mid))
    t.ok(code == 201, f"{what}: POST /migrations 201", (code, doc))
    r = ctl.advance(mid, timeout=120)
    t.ok(isinstance(r, dict) and r.get("phase") == "backfill", f"{what}: advanced to backfill", r)
    code, doc = ctl.call("POST", f"/migrations/{mid}/abort", {"reason": "store test"})
    t.ok(code == 200, f"{what}: abort 200", (code, doc))
    s = ctl.wait(mid, lambda s: s["state"] == "aborted", 30)
    t.ok(s is not None, f"{what}: state aborted", ctl.status(mid))
    time.sleep(1)  # the runner's last save
    s = ctl.status(mid)
    ev = ctl.call("GET", f"/migrations/{mid}/events")[1]["events"]
    return s, ev


def restart_same(ctl, mid, s0, ev0, what):
    ctl.stop()
    ctl.start()
    s = ctl.status(mid)
    ev = ctl.call("GET", f"/migrations/{mid}/events")[1]["events"]
    t.ok(isinstance(s, dict) and (s.get("phase"), s.get("state"), s.get("abort_reason")) ==
         (s0["phase"], s0["state"], s0["abort_reason"]),
         f"{what}: after a restart the migration has the same phase, state and abort reason",
         (s, s0))
    key = [(e["id"], e["kind"], e["phase"], e["actor"]) for e in ev]
    key0 = [(e["id"], e["kind"], e["phase"], e["actor"]) for e in ev0]
    t.ok(key[:len(key0)] == key0, f"{what}: after a restart the same events ({len(key0)})",
         (key, key0))


def control_once(state, opt="--state", timeout=60):
    """sluice control run until it exits (it should, at once): code, stderr."""
    d = tempfile.mkdtemp(prefix="sluice-ctlstore-run-")
    tok = os.path.join(d, "tokens")
    with open(tok, "w") as f:
        f.write("operator op-token-0123456789abcdef\n")
    args = [SLUICE, "control", "--listen", f"127.0.0.1:{free_port()}", opt, state,
            "--tokens", tok]
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                           env=dict(os.environ, **SAN_ENV))
    except subprocess.TimeoutExpired:
        return None, "still running after %d s" % timeout
    return r.returncode, r.stderr


# ---- PostgreSQL -------------------------------------------------------------
ctl = Control(dbs, cluster=cl, state=pg_dsn)
cmdline = open(f"/proc/{ctl.p.pid}/cmdline", "rb").read().decode(errors="replace")
t.ok(pg.PASSWORD not in cmdline, "the --state DSN is blanked from argv",
     cmdline.replace("\0", " "))
s0, ev0 = run_one(ctl, "pg-store", "postgresql")

cur = pg.connect("control").cursor()
cur.execute("SELECT version FROM ctl_schema")
t.ok(cur.fetchall() == [(1,)], "postgresql: ctl_schema holds version 1")
cur.execute("SELECT id, manifest, state FROM ctl_migrations")
rows = cur.fetchall()
st = json.loads(rows[0][2]) if len(rows) == 1 else {}
t.ok(len(rows) == 1 and rows[0][0] == "pg-store" and json.loads(rows[0][1])["migration_id"] ==
     "pg-store" and st.get("phase_idx") == 1 and st.get("state") == 2  # MS_ABORTED
     and "store test" in st.get("abort_reason", ""),
     "postgresql: the migration is a row of ctl_migrations (backfill, aborted)", rows)
cur.execute("SELECT seq, kind, actor FROM ctl_events WHERE migration = 'pg-store' ORDER BY seq")
evrows = cur.fetchall()
kinds = [k for _, k, _ in evrows]
t.ok("created" in kinds and "transition" in kinds and "abort" in kinds,
     "postgresql: ctl_events holds created, transition and abort", kinds)
t.ok([r[0] for r in evrows][:len(ev0)] == [e["id"] for e in ev0],
     "postgresql: the events' ids are ctl_events.seq")
cur.execute("SELECT data_type FROM information_schema.columns "
            "WHERE table_name = 'ctl_events' AND column_name = 'seq'")
t.ok(cur.fetchone() == ("bigint",), "postgresql: ctl_events.seq is a bigint (bigserial)")

restart_same(ctl, "pg-store", s0, ev0, "postgresql")

# a dropped connection is made again once, and the write goes through
cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'sluice control'")
killed = len(cur.fetchall())
t.ok(killed >= 1, f"postgresql: sluice control's connection terminated ({killed})")
time.sleep(0.3)
code, doc = ctl.call("POST", "/migrations", manifest("pg-store-2"))
t.ok(code == 201, "postgresql: after the connection dropped, POST /migrations is 201",
     (code, doc, ctl.log_text()[-1500:]))
cur.execute("SELECT count(*) FROM ctl_migrations WHERE id = 'pg-store-2'")
t.ok(cur.fetchone() == (1,), "postgresql: and the new migration is stored")
ctl.stop()

# a wrong password: exit 2, one line, no password in it
for form, bad in (("URI", pg.dsn("control", password="Wr0ng-Pw-77x")),
                  ("key-value", f"host=127.0.0.1 port={pg.port} user={pg.USER} "
                                "password=Wr0ng-Pw-77x dbname=control")):
    code, err = control_once(bad)
    lines = [ln for ln in err.strip().splitlines() if ln]
    t.ok(code == 2, f"wrong password ({form}): exit status 2", (code, err))
    t.ok(len(lines) == 1 and "password authentication failed" in lines[0],
         f"wrong password ({form}): one line that says why", err)
    t.ok("Wr0ng-Pw-77x" not in err, f"wrong password ({form}): the password is not shown", err)
    t.diag(err.strip())

# a schema newer than this sluice
cur.execute("UPDATE ctl_schema SET version = 99")
code, err = control_once(pg_dsn)
t.ok(code == 2 and "schema version 99" in err and "upgrade sluice" in err
     and len(err.strip().splitlines()) == 1,
     "postgresql: schema version 99 refused with a clear error, exit 2", (code, err))
t.ok(pg.PASSWORD not in err, "postgresql: that error holds no password", err)
t.diag(err.strip())
cur.execute("UPDATE ctl_schema SET version = 1")

# ---- SQLite -----------------------------------------------------------------
lite = Control(dbs, cluster=cl)
s0, ev0 = run_one(lite, "lite-store", "sqlite")
restart_same(lite, "lite-store", s0, ev0, "sqlite")
lite.stop()
con = sqlite3.connect(lite.store)
t.ok(con.execute("SELECT version FROM ctl_schema").fetchall() == [(1,)],
     "sqlite: ctl_schema holds version 1")
con.execute("UPDATE ctl_schema SET version = 99")
con.commit()
con.close()
# --store is still taken (the old name of --state), a bare path is SQLite
code, err = control_once(lite.store, opt="--store")
t.ok(code == 2 and "schema version 99" in err and lite.store in err,
     "sqlite (--store PATH): schema version 99 refused, exit 2", (code, err))

for name, c in (("postgresql", ctl), ("sqlite", lite)):
    log = c.log_text()
    t.ok("Sanitizer" not in log and "runtime error" not in log and "leaked" not in log,
         f"{name}: no sanitizer report from sluice control", log[-2000:])
cl.stop()
sys.exit(t.done())
