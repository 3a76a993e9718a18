#!/usr/bin/python3
"""Scheduled audits: a coordinator with --schedule runs a named audit on its
interval and keeps its drift history in the control database; a bad
schedule file is refused with one clear line and exit 2."""
import json
import os
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Cluster  # noqa: E402
from harness import Tap, sluice  # noqa: E402

t = Tap()
cl = Cluster({}, hb_timeout=2.0)
src, tgt = os.path.join(cl.dir, "src.db"), os.path.join(cl.dir, "tgt.db")
for path in (src, tgt):
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance NUMERIC, owner TEXT)")
    c.executemany("INSERT INTO accounts VALUES (?, ?, ?)",
                  [(i, i * 10.5, f"owner {i}") for i in range(1, 5001)])
    if path == tgt:
        c.execute("UPDATE accounts SET balance = 0 WHERE id = 77")
    c.commit()
    c.close()
with open(cl.dbfile, "w") as f:
    f.write(f"old=sqlite:{src}\nnew=sqlite:{tgt}\n")
sched = os.path.join(cl.dir, "schedule.json")
with open(sched, "w") as f:
    json.dump({"audits": [{"name": "accounts-hourly", "every": "2s", "source": "old",
                           "target": "new", "table": "accounts"}]}, f)

bad = os.path.join(cl.dir, "bad.json")
for content, needle in (('{"audits": [{"name": "x", "every": "soon", "source": "a", '
                         '"target": "b", "table": "t"}]}', "every"),
                        ('{"audits": [{"name": "y", "every": "1h", "source": "a", '
                         '"target": "b"}]}', "table"),
                        ('{"audits": ', "schedule")):
    with open(bad, "w") as f:
        f.write(content)
    code, out, err = sluice("coordinator", "--schedule", bad, "--state",
                            "sqlite:" + os.path.join(cl.dir, "x.db"))
    lines = [l for l in err.splitlines() if l.strip()]
    t.ok(code == 2 and len(lines) == 1 and needle in err,
         f"bad schedule ({needle}) refused with one line: {err.strip()}")

# the coordinator with the schedule
import subprocess  # noqa: E402
from harness import SLUICE  # noqa: E402
cl.coordinator = subprocess.Popen(
    [SLUICE, "coordinator", "--workers-endpoint", cl.workers_ep, "--clients-endpoint",
     cl.clients_ep, "--events-endpoint", cl.events_ep, "--state", "sqlite:" + cl.state,
     "--schedule", sched], stderr=cl._log("coordinator"), env=cl.env)
cl.start_worker(slots=2)
time.sleep(7)
con = sqlite3.connect(cl.state)
drift = con.execute("SELECT job, changed, missing, extra FROM drift WHERE tbl = 'accounts' "
                    "ORDER BY at").fetchall()
con.close()
t.ok(len(drift) >= 2, f"the audit ran on its interval: {len(drift)} runs in 7 s")
t.ok(drift and all(r[1:] == (1, 0, 0) for r in drift),
     "each run recorded its drift (1 changed row) in the history", drift)
cl.stop()
t.ok(not cl.sanitizer_reports(), "no sanitizer report", "\n".join(cl.sanitizer_reports()))
t.done()
