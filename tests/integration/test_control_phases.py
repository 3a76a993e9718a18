#!/usr/bin/python3
"""The phase runner's calendar, approvals, restart and stale-validation
abort, on SQLite databases and a real cluster: cutover steps wait outside
a change window; a phase in "approvals" waits for an approver; sluice
control killed mid-cutover resumes from its control database; validation
that stops reporting aborts the migration."""
import datetime
import os
import signal
import sqlite3
import sys
import tempfile
import time

from control_env import APPROVER, Control, cluster_for
from harness import Tap

t = Tap()
d = tempfile.mkdtemp(prefix="sluice-phases-")
dbs = {}
for n in ("old", "new"):
    c = sqlite3.connect(f"{d}/{n}.db")
    c.execute("CREATE TABLE orders(id integer primary key, total numeric, note text)")
    c.executemany("INSERT INTO orders VALUES (?, ?, ?)", [(i, i * 1.5, f"n{i}") for i in range(500)])
    c.commit()
    c.close()
    dbs[n] = f"sqlite:{d}/{n}.db"
cl = cluster_for(dbs, workers=1)
ctl = Control(dbs, cluster=cl)


def manifest(mid, **kw):
    m = {"migration_id": mid, "scope": {"source": "old", "target": "new", "tables": ["orders"]},
         "cutover": {"steps": [20, 100], "soak_seconds": 1},
         "metrics": {"sample_every": "1s", "audit_every": "1h"}}
    m.update(kw)
    code, doc = ctl.call("POST", "/migrations", m)
    assert code == 201, doc
    return mid


def to_phase(mid, phase):
    for _ in range(6):
        s = ctl.status(mid)
        if s["phase"] == phase:
            return s
        r = ctl.advance(mid, timeout=60)
        if not isinstance(r, dict) or "phase" not in r:
            return r
    return ctl.status(mid)


# 1. a change window that is closed now: cutover steps wait
now = datetime.datetime.now(datetime.timezone.utc)
start = (now + datetime.timedelta(hours=3)).strftime("%H:%M")
end = (now + datetime.timedelta(hours=4)).strftime("%H:%M")
manifest("window", windows=[{"days": "daily", "from": start, "to": end, "tz": "UTC"}])
ctl.call("POST", "/migrations/window/shadow-results", {"compared": 5, "mismatched": 0})
s = to_phase("window", "cutover")
t.ok(s.get("phase") == "cutover", "window: in cutover", s)
time.sleep(3)
s = ctl.status("window")
gates = {g["name"]: g for g in s["gates"]}
t.ok(s["in_window"] is False and s["traffic"]["read_percent_target"] == 0 and
     gates.get("in_window", {}).get("ok") is False,
     "window: outside the change window no cutover step runs (0% on the target)",
     (s["in_window"], s["traffic"], gates.get("in_window")))

# 2. approvals: a phase listed waits for an approver
manifest("approve", approvals=["backfill"])
s = to_phase("approve", "backfill")
t.ok(s["phase"] == "backfill" and s["state"] == "waiting_approval" and
     s["waiting_for"] == "phase backfill", "approvals: backfill entered waiting for approval",
     (s["phase"], s["state"], s["waiting_for"]))
code, doc = ctl.call("POST", "/migrations/approve/advance")
t.ok(code == 409, "approvals: advance while waiting is refused (409)", (code, doc))
code, doc = ctl.call("POST", "/migrations/approve/approve", {})
t.ok(code == 403 and ctl.status("approve")["state"] == "waiting_approval",
     "approvals: an operator token cannot approve (403), nothing changes", (code, doc))
code, doc = ctl.call("POST", "/migrations/approve/approve", {}, token=APPROVER)
t.ok(code == 200 and doc["state"] == "running", "approvals: an approver approves", (code, doc))
ev = ctl.call("GET", "/migrations/approve/events")[1]["events"]
t.ok(any(e["kind"] == "approve" and e["actor"] == "approver" for e in ev),
     "approvals: the approval is an audit event with its actor")

# 3. restart: sluice control killed in cutover resumes from its store
manifest("restart")
ctl.call("POST", "/migrations/restart/shadow-results", {"compared": 5, "mismatched": 0})
s = to_phase("restart", "cutover")
s = ctl.wait("restart", lambda s: s["traffic"]["read_percent_target"] == 20, 30)
t.ok(s is not None, "restart: cutover step 1 (20%) applied")
before = ctl.status("restart")
ctl.stop(signal.SIGKILL)
ctl.start()
after = ctl.status("restart")
t.ok(all(after[k] == before[k] for k in ("phase", "state", "traffic", "strategy",
                                        "classification")),
     "restart: after SIGKILL and a restart the migration is where it was",
     {k: (before[k], after[k]) for k in ("phase", "state", "traffic")})
s = ctl.wait("restart", lambda s: s["state"] == "waiting_approval", 60)
t.ok(s is not None and "100" in s["waiting_for"],
     "restart: the runner goes on (the last step waits for approval)", s and s["waiting_for"])
evs = ctl.call("GET", "/migrations/restart/events")[1]["events"]
t.ok(len(evs) >= len(ctl.call("GET", "/migrations/window/events")[1]["events"]) and
     any(e["kind"] == "cutover_step" for e in evs), "restart: the audit log survived")

# 4. shadow reads that mismatch over the ratio abort at once
manifest("shadow", abort_thresholds={"shadow_mismatch_ratio": 0.01})
s = to_phase("shadow", "shadow_read")
code, doc = ctl.call("POST", "/migrations/shadow/shadow-results",
                     {"compared": 1000, "mismatched": 5, "examples": [{"id": 7}]})
t.ok(code == 200 and doc["state"] == "running", "shadow: 0.5% mismatched is within 1%", doc)
code, doc = ctl.call("POST", "/migrations/shadow/shadow-results",
                     {"compared": 100, "mismatched": 20})
t.ok(code == 200 and doc["state"] == "aborted" and
     "shadow-read mismatch ratio" in (doc["abort_reason"] or ""),
     "shadow: a mismatch ratio over the threshold aborts at once", doc.get("abort_reason"))
t.ok(doc["traffic"] == {"read_percent_target": 0, "writes": "source", "reads": "source"},
     "shadow: reads back on the source", doc["traffic"])

# 5. validation stops reporting: abort after detection_latency_seconds
manifest("stale", abort_thresholds={"detection_latency_seconds": 4})
s = to_phase("stale", "dual_write")
t.ok(s["phase"] == "dual_write", "stale: in dual_write", s)
for w in cl.workers:
    w.send_signal(signal.SIGKILL)
killed = time.time()
s = ctl.wait("stale", lambda s: s["state"] == "aborted", 40)
t.ok(s is not None and "no validation reported" in (s["abort_reason"] or ""),
     f"stale: aborted when validation stopped reporting ({time.time() - killed:.1f} s after "
     "the workers died)", s and s["abort_reason"])
t.ok(s is not None and s["detection_seconds"] is not None and s["detection_seconds"] < 5,
     "stale: detection time measured from when the latency threshold passed",
     s and s["detection_seconds"])
t.ok("Sanitizer" not in ctl.log_text() and "runtime error" not in ctl.log_text(),
     "no sanitizer report from sluice control")
sys.exit(t.done())
