#!/usr/bin/python3
"""A key that diverges, is repaired, and diverges again is two confirmed
divergences in the changes job's windows. The confirm-once set (so that a
key replayed after a follower's restart is not counted twice) must forget a
key once it is found equal: kept forever, the second divergence of a
repaired row was confirmed and reported but never counted in a window, and
the control plane reading the windows saw nothing."""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Cluster  # noqa: E402
from harness import SLUICE, Tap, logical_pair  # noqa: E402


t = Tap()
src, dst = logical_pair(["CREATE TABLE t(id bigint PRIMARY KEY, v int)",
                         "INSERT INTO t SELECT g, g FROM generate_series(1, 100) g"])
dc = dst.connect("shop")
dc.autocommit = True
dcur = dc.cursor()


def slots(server):
    cur = server.connect("shop").cursor()
    cur.execute("SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'sluicecv_%'")
    return [r[0] for r in cur.fetchall()]


cl = Cluster({"src": src.dsn("shop"), "dst": dst.dsn("shop")})
cl.start_coordinator()
cl.start_worker(slots=2)
cl.start_worker(slots=2)
t.ok(cl.wait_workers(2), "two workers registered")
proc = subprocess.Popen([SLUICE, "verify-changes", "src", "dst", "--table", "t", "--settle",
                         "0.5", "--rechecks", "1", "--window", "3s", "--duration", "22",
                         "--coordinator", cl.clients_ep, "--events", cl.events_ep],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cl.env)
end = time.time() + 30
while time.time() < end and not (slots(src) and slots(dst)):
    time.sleep(0.2)
time.sleep(1)
for _ in range(3):  # diverge, repair, diverge again
    dcur.execute("UPDATE t SET v = -v WHERE id = 5")
    time.sleep(3)
out, err = proc.communicate(timeout=120)
code, dout, derr = cl.run("drift", "--state", "sqlite:" + cl.state, "--table", "t", "--json")
rows = json.loads(dout) if code == 0 else []
changed = sum(r["changed"] for r in rows)
t.ok(proc.returncode is not None and changed == 2,
     f"diverged, repaired, diverged again: 2 changed in the windows (got {changed})",
     f"{rows}\n{out}\n{err}")
t.ok(out.count("changed id=5") == 2,
     "and both published as events (the control plane counts those)", out + err)
reports = cl.sanitizer_reports()
cl.stop()
t.ok(not reports, "no sanitizer report from the coordinator or workers", "\n".join(reports))
src.stop()
dst.stop()
t.done()
