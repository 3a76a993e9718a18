#!/usr/bin/python3
"""Change-driven verification survives a coordinator SIGKILLed while it
holds changed keys it has not looked at yet. The settle time is long (6 s),
so the keys of a change made on the target are taken by the coordinator
and wait in its queue when it dies; the restarted coordinator resumes the
job, the followers replay the slots from what was acknowledged, and the
divergence is still reported confirmed. Acknowledging a slot position only
once every key up to it has been looked at is what makes that hold: acked
at take, the keys would be gone with the process. Two rounds with SIGKILL,
one with SIGTERM (a clean stop closes the follows but keeps their slots for
the job's resumption), then the cancel leaves no slot behind."""
import os
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Client, Cluster  # noqa: E402
from harness import Tap, logical_pair  # noqa: E402


t = Tap()
src, dst = logical_pair(["CREATE TABLE t(id bigint PRIMARY KEY, v int)",
                         "INSERT INTO t SELECT g, g FROM generate_series(1, 1000) g"])
dc = dst.connect("shop")
dc.autocommit = True
dcur = dc.cursor()

cl = Cluster({"old": src.dsn("shop"), "new": dst.dsn("shop")})
cl.start_coordinator()
for _ in range(2):
    cl.start_worker(slots=2)
t.ok(cl.wait_workers(2), "two workers registered")
cli = Client(cl.clients_ep)
job = cli.submit("old", "new", table="t", kind="changes", rechecks=1, settle_ms=6000)


def confirmed():
    """The job's confirmed changed rows, as the coordinator stored them."""
    db = sqlite3.connect(cl.state, timeout=10)
    try:
        return {r[0] for r in db.execute(
            "SELECT k FROM events WHERE job = ? AND kind = 'changed'", (job,))}
    finally:
        db.close()


def slots(server):
    cur = server.connect("shop").cursor()
    cur.execute("SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'sluicecv_%'")
    return [r[0] for r in cur.fetchall()]


end = time.time() + 30
while time.time() < end and not (slots(src) and slots(dst)):
    time.sleep(0.2)
t.ok(slots(src) and slots(dst), "the job follows both sides", (slots(src), slots(dst)))
time.sleep(1)

# a change with the coordinator left alone: the running job's status counts it
dcur.execute("UPDATE t SET v = -v WHERE id = 3")
end = time.time() + 30
while time.time() < end and len(confirmed()) < 1:
    time.sleep(0.3)
t.ok(len(confirmed()) == 1, "undisturbed: the change on the target is confirmed")
found_total = 1
for rnd, (key, how) in enumerate(((7, "SIGKILL"), (400, "SIGKILL"), (999, "SIGTERM"))):
    before = len(confirmed())
    dcur.execute("UPDATE t SET v = -v WHERE id = %s", (key,))
    time.sleep(1.5)  # taken by the coordinator (asked every 100 ms), not yet looked at (6 s)
    mid = len(confirmed())
    if how == "SIGKILL":
        cl.coordinator.kill()
    else:  # a clean stop leaves the job to resume: its slots must stay
        cl.coordinator.terminate()
    cl.coordinator.wait()
    cl.start_coordinator()
    cli = Client(cl.clients_ep)
    want = found_total + 1
    end = time.time() + 60
    while time.time() < end and len(confirmed()) < want:
        time.sleep(0.3)
    got = len(confirmed())
    s = cli.status(job)
    t.ok(got == want and s["state"] == "running",
         f"round {rnd + 1}: the change on the target (id={key}) held by the coordinator ({how}) "
         f"is still reported confirmed after its restart ({got} of {want})",
         (before, mid, s["state"]))
    found_total = got

s = cli.status(job)
db = sqlite3.connect(cl.state, timeout=10)
other = db.execute("SELECT count(*) FROM events WHERE job = ? AND kind IN ('missing', 'extra')",
                   (job,)).fetchone()[0]
db.close()
t.ok(s["state"] == "running" and other == 0 and len(confirmed()) == 4,
     "nothing else was reported (the replayed keys of equal rows are checked equal)", (s, other))
cli.cancel(job)
st = cli.wait(job, timeout=60)
t.ok(st is not None and st["state"] == "cancelled", "the job cancels", st)
end = time.time() + 30
while time.time() < end and (slots(src) or slots(dst)):
    time.sleep(0.2)
t.ok(not slots(src) and not slots(dst), "no sluicecv_ slot left on either side after the cancel",
     (slots(src), slots(dst)))
reports = cl.sanitizer_reports()
cl.stop()
t.ok(not reports, "no sanitizer report from the coordinator or workers", "\n".join(reports))
src.stop()
dst.stop()
t.done()
