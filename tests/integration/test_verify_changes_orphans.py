#!/usr/bin/python3
"""A live changes job's slot is never taken for an orphan. Job A's only
worker is killed, so its slots sit inactive while a change is made on the
target; job B starts on the same databases meanwhile (another worker, which
sees them under other names) and sweeps orphans: it drops the slot of a
job the coordinator does not know (sluicecv_999_0), not A's, which the
coordinator lists as live. When A's follower is back it resumes its slot
(not created anew) and reports the change. Reproduced the loss before the
coordinator sent its live jobs with each follow."""
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Cluster  # noqa: E402
from harness import SLUICE, Tap, logical_pair  # noqa: E402

t = Tap()
src, dst = logical_pair([q for tb in ("a", "b") for q in (
    f"CREATE TABLE {tb}(id int PRIMARY KEY, note text)",
    f"INSERT INTO {tb} SELECT g, 'n' FROM generate_series(1, 100) g")])
cl = Cluster({"src": src.dsn("shop"), "dst": dst.dsn("shop")})
only2 = os.path.join(cl.dir, "dbs2.conf")
with open(only2, "w") as f:
    f.write(f"src2={src.dsn('shop')}\ndst2={dst.dsn('shop')}\n")
cl.start_coordinator()
wa = cl.start_worker(slots=2)
t.ok(cl.wait_workers(1), "a worker for src/dst")


def run(db1, db2, table):
    p = subprocess.Popen([SLUICE, "verify-changes", db1, db2, "--table", table, "--settle", "1",
                          "--rechecks", "1", "--coordinator", cl.clients_ep, "--events",
                          cl.events_ep], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True, env=cl.env)
    lines = []
    threading.Thread(target=lambda: [lines.append(x) for x in p.stdout], daemon=True).start()
    return p, lines


def slots(server):
    cur = server.connect("shop").cursor()
    cur.execute("SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'sluicecv_%' "
                "ORDER BY 1")
    return [r[0] for r in cur.fetchall()]


pa, la = run("src", "dst", "a")
end = time.time() + 30
while time.time() < end and not (slots(src) and slots(dst)):
    time.sleep(0.2)
a_slots = (slots(src), slots(dst))
t.ok(len(a_slots[0]) == 1 and len(a_slots[1]) == 1, "job A follows both sides", a_slots)
time.sleep(1)
wa.kill()
wa.wait()
time.sleep(0.5)
c = dst.connect("shop")
c.autocommit = True
c.cursor().execute("UPDATE a SET note = 'behind' WHERE id = 42")
# an orphan of a job nobody runs: the sweep's business
c2 = src.connect("shop")
c2.autocommit = True
c2.cursor().execute("SELECT pg_create_logical_replication_slot('sluicecv_999_0', 'pgoutput')")
cl.start_worker(slots=2, dbfile=only2)  # job B's worker only
pb, lb = run("src2", "dst2", "b")
end = time.time() + 30
while time.time() < end and "sluicecv_999_0" in slots(src):
    time.sleep(0.2)
t.ok("sluicecv_999_0" not in slots(src), "job B's follow dropped the orphan of an unknown job")
t.ok(a_slots[0][0] in slots(src) and a_slots[1][0] in slots(dst),
     "job A's slots, idle while it has no worker, are kept", (slots(src), slots(dst)))
cl.start_worker(slots=2)  # A can follow again
end = time.time() + 40
while time.time() < end and not any("id=42" in x for x in la):
    time.sleep(0.3)
t.ok(any("id=42" in x for x in la), "job A reports the change made while it had no worker",
     la[-5:])
logs = "".join(open(os.path.join(cl.dir, f"worker{i}.log")).read()
               for i in range(len(cl.workers)))
t.ok("following a through slot " + a_slots[0][0] + " (resumed)" in logs and
     "dropped orphaned replication slot " + a_slots[0][0] not in logs,
     "A's follower resumed its slot; nobody dropped it",
     [x for x in logs.splitlines() if "slot" in x][-8:])
for p in (pa, pb):
    p.send_signal(2)
for p in (pa, pb):
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
end = time.time() + 30
while time.time() < end and (slots(src) or slots(dst)):
    time.sleep(0.2)
t.ok(not slots(src) and not slots(dst), "Ctrl-C on both: no sluicecv_ slot left",
     (slots(src), slots(dst)))
reports = cl.sanitizer_reports()
cl.stop()
t.ok(not reports, "no sanitizer report", "\n".join(reports))
src.stop()
dst.stop()
t.done()
