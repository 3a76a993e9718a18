#!/usr/bin/python3
"""sluice control killed in the middle of a write cutover, under writes
through HAProxy, then restarted on the same control database. The process
kills itself (SIGKILL, through the tests' hook SLUICE_CONTROL_CRASH_AT)
right after saving each stage:

- forward_off: the forward subscription stopped, no reverse stream yet.
  The restart undoes it (forward on, writes on the source), and the
  cutover runs again by itself.
- reverse_on: reverse replication started, writes not yet moved. The
  restart finishes it: writes to the target.
- routed: writes moved, the end not yet saved. Finished the same way.

Each case checks that writes end on the target with the forward stream off
and the reverse one on, that no acknowledged write is missing on the
target nor (through the reverse stream) on the source, and that HAProxy
was left steered (never both write servers, never none for good)."""
import os
import sys
import threading
import time

import psycopg2

from control_env import (APPROVER, ITEMS, ORDERS, SEED_ITEMS, Control, Haproxy, cluster_for,
                         seed_orders, shop_servers)
from harness import Tap

CASES = os.environ.get("CRASH_CASES", "forward_off reverse_on routed").split()

t = Tap()
src, dst, dbs = shop_servers(CASES, [ORDERS, ITEMS], [seed_orders(2000), SEED_ITEMS])
cl = cluster_for(dbs, workers=2)


def writer(hp, db, acked, stop):
    """Inserts through HAProxy's write frontend, one connection per write
    (a dropped one is retried with the same id: idempotent)."""
    i = 700000
    while not stop.is_set():
        try:
            c = psycopg2.connect(host="127.0.0.1", port=hp.write_port, user=src.USER,
                                 password=src.PASSWORD, dbname=db, connect_timeout=3)
            c.autocommit = True
            c.cursor().execute("INSERT INTO orders VALUES (%s, 3, 'w') "
                               "ON CONFLICT (id) DO NOTHING", (i,))
            c.close()
            acked.append(i)
            i += 1
        except psycopg2.Error:
            pass
        time.sleep(0.02)


def ids(server, db):
    cur = server.connect(db).cursor()
    cur.execute("SELECT id FROM orders WHERE id >= 700000")
    return {r[0] for r in cur.fetchall()}


def run(case):
    hp = Haproxy(src.port, dst.port)
    os.environ["SLUICE_CONTROL_CRASH_AT"] = case
    ctl = Control(dbs, cluster=cl, haproxy=hp)
    del os.environ["SLUICE_CONTROL_CRASH_AT"]
    mid = f"crash-{case}"
    code, doc = ctl.call("POST", "/migrations", {
        "migration_id": mid,
        "scope": {"source": f"old_{case}", "target": f"new_{case}", "tables": ["orders", "items"]},
        "cutover": {"steps": [50, 100], "soak_seconds": 1},
        "metrics": {"audit_every": "1h", "sample_every": "1s"},
        "router": {"type": "haproxy", "read_backend": "reads", "write_backend": "writes",
                   "source_server": "old", "target_server": "new"}})
    t.ok(code == 201, f"{case}: migration created", doc)
    for want in ("backfill", "dual_write", "shadow_read", "cutover"):
        if want == "cutover":
            ctl.call("POST", f"/migrations/{mid}/shadow-results", {"compared": 20, "mismatched": 0})
        r = ctl.advance(mid, timeout=180)
        if not (isinstance(r, dict) and r.get("phase") == want):
            t.ok(False, f"{case}: advance into {want}", (r, ctl.log_text()[-2000:]))
            return
    acked, stop = [], threading.Event()
    th = threading.Thread(target=writer, args=(hp, case, acked, stop), daemon=True)
    th.start()
    s = ctl.wait(mid, lambda s: s["state"] == "waiting_approval", 60)
    t.ok(s is not None, f"{case}: the last step waits for approval")
    ctl.call("POST", f"/migrations/{mid}/approve", {}, token=APPROVER)
    try:
        ctl.p.wait(timeout=90)
    except Exception:
        pass
    died = ctl.p.poll()
    t.ok(died == -9, f"{case}: sluice control killed itself at the stage (exit {died})")
    before = len(acked)
    w_old, w_new = hp.weight("writes", "old"), hp.weight("writes", "new")
    t.diag(f"{case}: at the crash HAProxy writes old={w_old} new={w_new}, {before} writes acked")
    time.sleep(1)  # dead for a second: nobody steers
    ctl.start()
    s = ctl.wait(mid, lambda s: s["traffic"]["writes"] == "target" or s["state"] == "aborted", 90)
    t.ok(s is not None and s["state"] != "aborted" and s["traffic"]["writes"] == "target",
         f"{case}: after the restart writes are on the target",
         s and (s["state"], s.get("abort_reason")))
    ev = ctl.call("GET", f"/migrations/{mid}/events")[1]["events"]
    cuts = [e["detail"] for e in ev if e["kind"] == "write_cutover"]
    if case == "forward_off":
        t.ok(any("undone" in d for d in cuts) and any("write_pause_seconds" in d for d in cuts),
             f"{case}: the interrupted cutover was undone, then ran again", cuts)
    else:
        t.ok(any("resumed" in d for d in cuts), f"{case}: the interrupted cutover was finished",
             cuts)
    t.ok(hp.weight("writes", "new") == 1 and hp.weight("writes", "old") == 0,
         f"{case}: HAProxy sends writes to the target only")
    time.sleep(1.5)
    stop.set()
    th.join()
    t.ok(len(acked) > before, f"{case}: writes went on after the restart ({before} -> {len(acked)})")
    lost_new = [i for i in acked if i not in ids(dst, case)]
    t.ok(not lost_new, f"{case}: every acknowledged write is on the target ({len(acked)})",
         lost_new[:10])
    lost_old = None
    for _ in range(50):  # the reverse stream carries them to the source
        lost_old = [i for i in acked if i not in ids(src, case)]
        if not lost_old:
            break
        time.sleep(0.2)
    t.ok(not lost_old, f"{case}: and on the source, through the reverse stream", lost_old[:10])
    cur = dst.connect(case).cursor()
    cur.execute("SELECT subenabled FROM pg_subscription WHERE subname = %s", (f"sluice_crash_{case}",))
    fwd = cur.fetchall()
    cur = src.connect(case).cursor()
    cur.execute("SELECT subenabled FROM pg_subscription WHERE subname = %s",
                (f"sluice_crash_{case}_rev",))
    rev = cur.fetchall()
    t.ok(fwd == [(False,)] and rev == [(True,)],
         f"{case}: forward subscription off, reverse on", (fwd, rev))
    cur = dst.connect(case).cursor()
    cur.execute("SELECT last_value FROM items_id_seq")
    t.ok(cur.fetchone()[0] > 300, f"{case}: the target's sequence is past the source's")
    t.ok("Sanitizer" not in ctl.log_text() and "runtime error" not in ctl.log_text(),
         f"{case}: no sanitizer report")
    ctl.stop()
    hp.stop()


for case in CASES:
    run(case)
sys.exit(t.done())
