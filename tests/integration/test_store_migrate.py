#!/usr/bin/python3
"""The control database migrates itself. A database written by the sluice
before schema versions (tests/fixtures/control-v1.sql, and its PostgreSQL
twin control-v1-pg.sql) is upgraded in place at the coordinator's start:
its jobs keep their state and results (status, report), new jobs follow
them, and sluice_schema says the latest version. A database of a newer version is
refused with exit 2 and one line ("... has schema version N; this sluice
supports up to M: upgrade sluice"), never showing a password; an upgrade
that fails halfway leaves the database exactly as it was; a fresh database
is created at the latest version."""
import atexit
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Cluster  # noqa: E402
from harness import PgServer, Tap, free_port, sluice  # noqa: E402

LATEST = 3
HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "..", "fixtures", "control-v1.sql")
FIXTURE_PG = os.path.join(HERE, "..", "fixtures", "control-v1-pg.sql")

t = Tap()
tmp = tempfile.mkdtemp(prefix="sluice-migrate-")
atexit.register(shutil.rmtree, tmp, True)


def load_sqlite(name):
    path = os.path.join(tmp, name)
    with open(FIXTURE) as f:
        subprocess.run(["sqlite3", path], stdin=f, check=True)
    return path


def dump_sqlite(path):
    return subprocess.run(["sqlite3", path, ".dump"], capture_output=True, text=True,
                          check=True).stdout


def start_refused(state):
    """Starts a coordinator that should refuse state; (exit, stderr lines)."""
    eps = [f"tcp://127.0.0.1:{free_port()}" for _ in range(3)]
    code, out, err = sluice("coordinator", "--state", state, "--workers-endpoint", eps[0],
                            "--clients-endpoint", eps[1], "--events-endpoint", eps[2])
    return code, [line for line in err.splitlines() if line.strip()]


def check_old_jobs(cl, label):
    """The fixture's jobs through the new coordinator: status and report."""
    s1, s2 = cl.status(1), cl.status(2)
    t.ok(s1 is not None and s1["state"] == "done" and s1["table"] == "accounts"
         and (s1["changed"], s1["missing_in_target"], s1["extra_in_target"]) == (1, 1, 1)
         and s1["source_rows"] == 1000 and s1["ranges"] == 8 and s1["ranges_done"] == 8,
         f"{label}: job 1 keeps its state and counts after the upgrade", s1)
    t.ok(s2 is not None and s2["state"] == "done" and s2["table"] == "same"
         and (s2["changed"], s2["missing_in_target"], s2["extra_in_target"]) == (0, 0, 0),
         f"{label}: job 2 keeps its state and counts", s2)
    code, out, err = cl.client("report", "1", "--format", "json")
    try:
        doc = json.loads(out)
    except ValueError:
        doc = None
    got = sorted((d["kind"], d["key"]["id"]) for d in (doc or {}).get("divergences", []))
    t.ok(code == 1 and got == [("changed", "77"), ("extra-in-target", "5000"),
                               ("missing-in-target", "500")],
         f"{label}: job 1's stored divergence events report as before", f"{code} {got} {err}")


def new_job(cl, label):
    """A job submitted to the upgraded database runs, numbered after the old ones."""
    for name in ("src", "tgt"):
        c = sqlite3.connect(os.path.join(cl.dir, name + ".db"))
        c.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, v TEXT)")
        c.executemany("INSERT INTO accounts VALUES (?, ?)",
                      [(i, "x" if name == "tgt" and i == 9 else str(i)) for i in range(1, 301)])
        c.commit()
        c.close()
    with open(cl.dbfile, "w") as f:
        f.write(f"old=sqlite:{cl.dir}/src.db\nnew=sqlite:{cl.dir}/tgt.db\n")
    cl.start_worker(slots=1)
    cl.wait_workers(1)
    job = cl.submit("old", "new", "--table", "accounts")
    s = cl.wait_state(job, timeout=60) if job else None
    t.ok(job == 3 and s and s["state"] == "done" and s["changed"] == 1,
         f"{label}: a new job after the upgrade is job 3 and runs", f"job {job}: {s}")


# ---- SQLite ----------------------------------------------------------------
path = load_sqlite("v1.db")
con = sqlite3.connect(path)
t.ok(not con.execute("SELECT 1 FROM sqlite_master WHERE name = 'sluice_schema'").fetchall(),
     "the fixture has no version table (schema version 1)")
con.close()
cl = Cluster({}, state="sqlite:" + path)
cl.start_coordinator()
check_old_jobs(cl, "sqlite")
con = sqlite3.connect(path)
ver = con.execute("SELECT version FROM sluice_schema").fetchall()
prio = con.execute("SELECT DISTINCT priority FROM jobs").fetchall()
sched = con.execute("SELECT count(*) FROM schedules").fetchall()
con.close()
t.ok(ver == [(LATEST,)], f"sqlite: the version is now {LATEST}: {ver}")
t.ok(prio == [("normal",)] and sched == [(0,)],
     "sqlite: old jobs have priority 'normal'; the schedules table exists, empty", (prio, sched))
new_job(cl, "sqlite")
cl.stop()
t.ok(cl.coordinator.returncode == 0, "sqlite: the coordinator stopped cleanly")
t.ok(not cl.sanitizer_reports(), "sqlite: no sanitizer report",
     "\n".join(cl.sanitizer_reports()))

# a second start on an upgraded database changes nothing
before = dump_sqlite(path)
cl2 = Cluster({}, state="sqlite:" + path)
cl2.start_coordinator()
t.ok(cl2.status(1) is not None, "sqlite: an upgraded database opens again")
cl2.stop()
after = dump_sqlite(path)
t.ok(after == before, "sqlite: opening a database at the latest version changes nothing")

# newer than this sluice: refused, in one line, untouched
con = sqlite3.connect(path)
con.execute("UPDATE sluice_schema SET version = ?", (LATEST + 1,))
con.commit()
con.close()
before = dump_sqlite(path)
code, lines = start_refused("sqlite:" + path)
want = (f"control database {path} has schema version {LATEST + 1}; this sluice supports up to "
        f"{LATEST}: upgrade sluice")
t.ok(code == 2 and len(lines) == 1 and lines[0] == "sluice: " + want,
     "sqlite: a newer schema is refused with exit 2 and one line", f"{code} {lines}")
t.ok(dump_sqlite(path) == before, "sqlite: the refused database is left as it was")

# an upgrade that fails halfway (a table of that name is in the way) leaves it as it was
path = load_sqlite("blocked.db")
con = sqlite3.connect(path)
con.execute("CREATE TABLE schedules (mine TEXT)")
con.commit()
con.close()
before = dump_sqlite(path)
code, lines = start_refused("sqlite:" + path)
t.ok(code == 2 and len(lines) == 1 and "cannot upgrade control database" in lines[0]
     and f"from schema version 1 to {LATEST}" in lines[0] and "schedules" in lines[0],
     "sqlite: a failed upgrade: exit 2 and one line naming the cause", f"{code} {lines}")
t.ok(dump_sqlite(path) == before,
     "sqlite: a failed upgrade leaves the database as it was (no version table, no priority)")

# a fresh database is created at the latest version
path = os.path.join(tmp, "fresh.db")
cl3 = Cluster({}, state="sqlite:" + path)
cl3.start_coordinator()
t.ok(cl3.status(1) is None, "sqlite: a fresh database has no jobs")
cl3.stop()
con = sqlite3.connect(path)
ver = con.execute("SELECT version FROM sluice_schema").fetchall()
cols = [r[1] for r in con.execute("PRAGMA table_info(jobs)")]
tables = sorted(r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
con.close()
t.ok(ver == [(LATEST,)] and "priority" in cols
     and tables == ["drift", "events", "jobs", "ranges", "schedules", "sluice_schema"],
     f"sqlite: a fresh database is created at version {LATEST}", (ver, tables))

# ---- PostgreSQL ----------------------------------------------------------------
pg = PgServer()
psql = os.path.join(pg.bindir, "psql")


def load_pg(name):
    db = pg.createdb(name)
    r = subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", pg.dsn(db), "-f",
                        FIXTURE_PG], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"psql: {r.stderr}")
    return db


def pg_rows(db, sql):
    c = pg.connect(db)
    cur = c.cursor()
    cur.execute(sql)
    rows = cur.fetchall()
    c.close()
    return rows


def pg_dump(db):
    out = subprocess.run([os.path.join(pg.bindir, "pg_dump"), "--no-owner", "-d", pg.dsn(db)],
                         capture_output=True, text=True, check=True).stdout
    # newer pg_dump guards its output with a random key each time
    return [line for line in out.splitlines() if not line.startswith(("\\restrict",
                                                                       "\\unrestrict"))]


db = load_pg("ctl_v1")
cl = Cluster({}, state=pg.dsn(db))
cl.start_coordinator()
check_old_jobs(cl, "postgresql")
ver = pg_rows(db, "SELECT version FROM sluice_schema")
prio = pg_rows(db, "SELECT DISTINCT priority FROM jobs")
t.ok(ver == [(LATEST,)], f"postgresql: the version is now {LATEST}: {ver}")
t.ok(prio == [("normal",)], "postgresql: old jobs have priority 'normal'", prio)
new_job(cl, "postgresql")
cl.stop()
t.ok(not cl.sanitizer_reports(), "postgresql: no sanitizer report",
     "\n".join(cl.sanitizer_reports()))

c = pg.connect(db)
c.cursor().execute("UPDATE sluice_schema SET version = %s", (LATEST + 7,))
c.close()
code, lines = start_refused(pg.dsn(db))
t.ok(code == 2 and len(lines) == 1
     and f"has schema version {LATEST + 7}; this sluice supports up to {LATEST}: upgrade sluice"
     in lines[0] and f"/{db} has" in lines[0],
     "postgresql: a newer schema is refused with exit 2 and one line", f"{code} {lines}")
t.ok(pg.PASSWORD not in "\n".join(lines) and "***" in lines[0],
     "postgresql: the refusal names the database without its password", lines)

db = load_pg("ctl_blocked")
c = pg.connect(db)
c.cursor().execute("CREATE TABLE schedules (mine text)")
c.close()
before = pg_dump(db)
code, lines = start_refused(pg.dsn(db))
t.ok(code == 2 and len(lines) == 1 and f"from schema version 1 to {LATEST}" in lines[0]
     and pg.PASSWORD not in lines[0],
     "postgresql: a failed upgrade: exit 2 and one line, no password", f"{code} {lines}")
t.ok(pg_dump(db) == before, "postgresql: a failed upgrade leaves the database as it was")

db = pg.createdb("ctl_fresh")
cl = Cluster({}, state=pg.dsn(db))
cl.start_coordinator()
t.ok(cl.status(1) is None, "postgresql: a fresh database has no jobs")
cl.stop()
ver = pg_rows(db, "SELECT version FROM sluice_schema")
t.ok(ver == [(LATEST,)], f"postgresql: a fresh database is created at version {LATEST}", ver)
t.done()
