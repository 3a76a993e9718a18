#!/usr/bin/python3
"""A migration's changes jobs are cancelled even when the coordinator is
away at the moment they should be: the migration is aborted while the
coordinator does not answer (stopped with SIGSTOP, its jobs still running);
once it answers again, the control plane cancels them and their sluicecv_
slots are dropped on both sides, rather than followed for ever."""
import signal
import sys
import time

from control_env import Control, Haproxy, cluster_for
from harness import LOGICAL, PgServer, Tap


t = Tap()
src, dst = PgServer(extra_opts=LOGICAL), PgServer(extra_opts=LOGICAL)
for s in (src, dst):
    s.createdb("leak")
    s.connect("leak").cursor().execute("CREATE TABLE orders(id bigint PRIMARY KEY, note text)")
src.connect("leak").cursor().execute(
    "INSERT INTO orders SELECT g, 'n' || g FROM generate_series(1, 500) g")
dbs = {"old_leak": src.dsn("leak"), "new_leak": dst.dsn("leak")}
cl = cluster_for(dbs, workers=2)
hp = Haproxy(src.port, dst.port)
ctl = Control(dbs, cluster=cl, haproxy=hp)
mid = "leak"
manifest = {"migration_id": mid,
            "scope": {"source": "old_leak", "target": "new_leak", "tables": ["orders"]},
            "cutover": {"steps": [100], "soak_seconds": 1},
            "metrics": {"audit_every": "1h", "sample_every": "1h", "verify_changes": True},
            "abort_thresholds": {"detection_latency_seconds": 7200,
                                 "unreachable_seconds": 3600},
            "router": {"type": "haproxy", "read_backend": "reads", "write_backend": "writes",
                       "source_server": "old", "target_server": "new"}}


def slots(server):
    cur = server.connect("leak").cursor()
    cur.execute("SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'sluicecv_%%' "
                "AND database = 'leak' ORDER BY 1")
    return [r[0] for r in cur.fetchall()]


def wait_for(cond, timeout):
    end = time.time() + timeout
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.3)
    return cond()


code, doc = ctl.call("POST", "/migrations", manifest)
t.ok(code == 201, "migration created", doc)
ok = True
for want in ("backfill", "dual_write"):
    r = ctl.advance(mid, timeout=180)
    if not (isinstance(r, dict) and r.get("phase") == want):
        t.ok(False, f"advance into {want}", r)
        print(ctl.log_text()[-3000:], file=sys.stderr)
        ok = False
        break
if ok:
    s = ctl.wait(mid, lambda s: s.get("verify_changes", {}).get("following") == 1, 30)
    both = wait_for(lambda: len(slots(src)) == 1 and len(slots(dst)) == 1, 30)
    t.ok(s is not None and both, "dual_write: the table followed, a slot on each side",
         (slots(src), slots(dst)))
    # the coordinator stops answering; the migration is aborted meanwhile
    cl.coordinator.send_signal(signal.SIGSTOP)
    code, _ = ctl.call("POST", f"/migrations/{mid}/abort", {"reason": "drill"})
    s = ctl.wait(mid, lambda s: s["state"] == "aborted", 30)
    t.ok(code == 200 and s is not None, "aborted while the coordinator is away")
    time.sleep(6)  # the runner's passes try to cancel and cannot
    cl.coordinator.send_signal(signal.SIGCONT)
    # its job still runs; the control plane must still cancel it
    gone = wait_for(lambda: not slots(src) and not slots(dst), 60)
    t.ok(gone, "the coordinator back: the changes job cancelled, its slots dropped",
         (slots(src), slots(dst)))
    s = ctl.status(mid)
    t.ok(s["verify_changes"]["following"] == 0, "nothing followed after the abort",
         s["verify_changes"])

ctl.stop()
cl.stop()
hp.stop()
src.stop()
dst.stop()
t.done()
