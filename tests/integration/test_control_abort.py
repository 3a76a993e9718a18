#!/usr/bin/python3
"""The control plane aborts by itself: rows corrupted on the target during
shadow_read, a column altered on the target during cutover, the
subscription disabled during cutover. Each abort is checked for its
reason, the measured detection and rollback times (rollback under 5 s) and
HAProxy's runtime API reporting the target's weight 0."""
import os
import signal
import subprocess
import sys
import threading
import time

import psycopg2

from control_env import (APPROVER, CUSTOMERS, ORDERS, SEED_CUSTOMERS, Control, Haproxy,
                         cluster_for, seed_orders, shop_servers)
from harness import Tap

CASES = os.environ.get("ABORT_CASES", "corrupt schema lag router rollback down").split()

t = Tap()
src, dst, dbs = shop_servers(CASES, [CUSTOMERS, ORDERS], [SEED_CUSTOMERS, seed_orders(2000)])

cl = cluster_for(dbs, workers=2)
hp = Haproxy(src.port, dst.port)
ctl = Control(dbs, cluster=cl, haproxy=hp)


def migrate_to(case, phase, lag_s=30):
    mid = f"abort-{case}"
    code, doc = ctl.call("POST", "/migrations", {
        "migration_id": mid,
        "scope": {"source": f"old_{case}", "target": f"new_{case}",
                  "tables": ["orders", "customers"]},
        "cutover": {"steps": [25, 100], "soak_seconds": 1},
        "metrics": {"audit_every": "1h", "sample_every": "1s"},
        "abort_thresholds": {"replication_lag_seconds": lag_s, "detection_latency_seconds": 60,
                             "unreachable_seconds": 3},
        "router": {"type": "haproxy", "read_backend": "reads", "write_backend": "writes",
                   "source_server": "old", "target_server": "new"}})
    if code != 201:
        t.ok(False, f"{case}: POST /migrations", doc)
        return None
    for want in ("backfill", "dual_write", "shadow_read", "cutover"):
        if want == "cutover":
            ctl.call("POST", f"/migrations/{mid}/shadow-results", {"compared": 20, "mismatched": 0})
        r = ctl.advance(mid, timeout=180)
        if not (isinstance(r, dict) and r.get("phase") == want):
            t.ok(False, f"{case}: advance into {want}", r)
            print(ctl.log_text()[-3000:], file=sys.stderr)
            return None
        if want == phase:
            break
    if phase == "cutover":
        s = ctl.wait(mid, lambda s: s["traffic"]["read_percent_target"] == 25, 30)
        t.ok(s is not None and hp.weight("reads", "new") == 25,
             f"{case}: cutover step 1 running, HAProxy weight of the target 25")
    t.ok(True, f"{case}: migration in {phase}")
    return mid


def check_abort(case, mid, fault_at, want_in_reason):
    s = ctl.wait(mid, lambda s: s["state"] == "aborted", 90)
    took = time.time() - fault_at
    t.ok(s is not None, f"{case}: aborted by itself within 60 s of the fault ({took:.1f} s)",
         ctl.status(mid))
    if s is None:
        return
    t.ok(took < 60, f"{case}: {took:.1f} s from fault to abort")
    reason = s["abort_reason"] or ""
    t.ok(all(w in reason for w in want_in_reason), f"{case}: reason names {want_in_reason}", reason)
    t.diag(f"{case}: reason: {reason}")
    t.ok(s["detection_seconds"] is not None and 0 <= s["detection_seconds"] < 60,
         f"{case}: detection time measured: {s['detection_seconds']} s")
    t.ok(s["rollback_seconds"] is not None and s["rollback_seconds"] < 5,
         f"{case}: rollback time measured, under 5 s: {s['rollback_seconds']} s")
    t.ok(s["traffic"] == {"read_percent_target": 0, "writes": "source", "reads": "source"},
         f"{case}: traffic and writes back on the source", s["traffic"])
    t.ok(hp.weight("reads", "new") == 0 and hp.weight("reads", "old") == 100
         and hp.weight("writes", "new") == 0,
         f"{case}: HAProxy's runtime API reports the target's weight 0")
    ev = ctl.call("GET", f"/migrations/{mid}/events")[1]["events"]
    t.ok(any(e["kind"] == "abort" and e["actor"] == "sluice" for e in ev),
         f"{case}: the abort is an audit event by sluice")


# (a) rows corrupted on the target during shadow_read
mid = "corrupt" in CASES and migrate_to("corrupt", "shadow_read")
if mid:
    cur = dst.connect("corrupt").cursor()
    cur.execute("UPDATE orders SET total = total + 1 WHERE id IN (5, 77)")
    check_abort("corrupt", mid, time.time(), ["divergent rows", "id=5", "id=77"])

# (b) a column altered on the target during cutover
mid = "schema" in CASES and migrate_to("schema", "cutover")
if mid:
    cur = dst.connect("schema").cursor()
    cur.execute("ALTER TABLE orders ALTER COLUMN note TYPE varchar(200)")
    check_abort("schema", mid, time.time(), ["schema", "note"])

# (c) the subscription disabled during cutover, writes going on: lag
mid = "lag" in CASES and migrate_to("lag", "cutover", lag_s=3)
if mid:
    stop = threading.Event()

    def writer():
        c = src.connect("lag")
        i = 100000
        while not stop.is_set():
            c.cursor().execute("INSERT INTO orders VALUES (%s, 1, 'w')", (i,))
            i += 1
            time.sleep(0.02)

    th = threading.Thread(target=writer, daemon=True)
    th.start()
    lags = []
    for _ in range(10):
        time.sleep(0.5)
        lags.append(ctl.status(mid)["replication_lag_seconds"])
    t.ok(all(x is not None and x < 1.5 for x in lags),
         "lag: healthy replication under 50 writes/s measures under 1.5 s", lags)
    cur = dst.connect("lag").cursor()
    cur.execute("SELECT subname FROM pg_subscription WHERE subname = 'sluice_abort_lag'")
    sub = cur.fetchone()[0]
    cur.execute(f'ALTER SUBSCRIPTION "{sub}" DISABLE')
    check_abort("lag", mid, time.time(), ["replication lag"])
    stop.set()
    th.join()

# (d) HAProxy restarted mid-step: it comes back with its file's weights
# (every read on the source), not the 25% sluice set; the control plane
# reads them back every second and aborts rather than leave the split to
# nobody
mid = "router" in CASES and migrate_to("router", "cutover")
if mid:
    hp.p.kill()
    hp.p.wait()
    os.unlink(hp.sock)
    hp.p = subprocess.Popen(["haproxy", "-f", os.path.join(hp.dir, "haproxy.cfg"), "-db"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    check_abort("router", mid, time.time(), ["HAProxy no longer routes", "reads/old"])

# (e) an abort after the write cutover: writes go back to the source, which
# already holds every write made on the target (the reverse stream)
mid = "rollback" in CASES and migrate_to("rollback", "cutover")
if mid:
    ctl.wait(mid, lambda s: s["state"] == "waiting_approval", 60)
    code, _ = ctl.call("POST", f"/migrations/{mid}/approve", {}, token=APPROVER)
    s = ctl.wait(mid, lambda s: s["traffic"]["writes"] == "target" or s["state"] == "aborted", 90)
    t.ok(s is not None and s["traffic"]["writes"] == "target",
         "rollback: the write cutover ran (writes on the target)",
         s.get("abort_reason") if s else ctl.status(mid))
    t.diag(f"rollback: write pause {s and s.get('write_pause_seconds')} s")
    acked, stop = [], threading.Event()

    def writer():
        i = 500000
        while not stop.is_set():
            try:
                c = psycopg2.connect(host="127.0.0.1", port=hp.write_port, user=src.USER,
                                     password=src.PASSWORD, dbname="rollback", connect_timeout=3)
                c.autocommit = True
                c.cursor().execute("INSERT INTO orders VALUES (%s, 2, 'after cutover') "
                                   "ON CONFLICT (id) DO NOTHING", (i,))
                c.close()
                acked.append(i)
                i += 1
            except psycopg2.Error:
                pass  # retried with the same id
            time.sleep(0.02)

    th = threading.Thread(target=writer, daemon=True)
    th.start()
    time.sleep(2)
    on_target = len(acked)
    code, s = ctl.call("POST", f"/migrations/{mid}/abort", {"reason": "rollback drill"})
    t.ok(code == 200 and s["state"] == "aborted", "rollback: aborted by hand", s)
    t.ok(s["rollback_seconds"] is not None and s["rollback_seconds"] < 5,
         f"rollback: writes back on the source in {s['rollback_seconds']} s (under 5 s)")
    t.ok(s["traffic"] == {"read_percent_target": 0, "writes": "source", "reads": "source"} and
         hp.weight("writes", "old") == 1 and hp.weight("writes", "new") == 0 and
         hp.weight("reads", "new") == 0, "rollback: HAProxy sends reads and writes to the source")
    time.sleep(1.5)
    stop.set()
    th.join()
    cur = src.connect("rollback").cursor()
    cur.execute("SELECT id FROM orders WHERE id >= 500000")
    have = {r[0] for r in cur.fetchall()}
    lost = [i for i in acked if i not in have]
    t.ok(on_target > 0 and len(acked) > on_target and not lost,
         f"rollback: no acknowledged write lost ({on_target} made on the target, "
         f"{len(acked) - on_target} after the rollback, all on the source)", lost[:10])

# (g) the target's postmaster SIGKILLed during cutover (last: it takes the
# target server down for good): unreachable for unreachable_seconds, abort
mid = "down" in CASES and migrate_to("down", "cutover")
if mid:
    with open(os.path.join(dst.data, "postmaster.pid")) as f:
        os.kill(int(f.readline()), signal.SIGKILL)
    check_abort("down", mid, time.time(), ["the target new_down unreachable", "threshold 3 s"])

t.ok("Sanitizer" not in ctl.log_text() and "runtime error" not in ctl.log_text(),
     "no sanitizer report from sluice control")
sys.exit(t.done())
