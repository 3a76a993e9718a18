#!/usr/bin/python3
"""The control plane starts change-driven verification by itself
(metrics.verify_changes): from dual_write on, a "changes" job per table
follows both databases (a sluicecv_ slot on each side), a row changed on
the target behind the replication is confirmed within seconds (audits and
samples run once an hour here, so nothing else finds it) and the
migration aborts on it; the abort cancels the jobs and their slots go.
A second migration reaches cleanup: the jobs stop there, slots gone too.
A manifest asking for more tables than slots allow is refused."""
import sys
import threading
import time

from control_env import (APPROVER, CUSTOMERS, ORDERS, SEED_CUSTOMERS, Control, Haproxy,
                         cluster_for, seed_orders, shop_servers)
from harness import PgServer, Tap


t = Tap()
src, dst, dbs = shop_servers(("abort", "clean", "count"), [CUSTOMERS, ORDERS], [SEED_CUSTOMERS, seed_orders(2000)])

cl = cluster_for(dbs, workers=2)
hp = Haproxy(src.port, dst.port)
ctl = Control(dbs, cluster=cl, haproxy=hp)


def manifest(case, tables=("orders", "customers"), sample_every="1h", audit_every="1h",
             max_div=0):
    return {"migration_id": f"cv-{case}",
            "scope": {"source": f"old_{case}", "target": f"new_{case}", "tables": list(tables)},
            "cutover": {"steps": [100], "soak_seconds": 1},
            "metrics": {"audit_every": audit_every, "sample_every": sample_every,
                        "verify_changes": True},
            "abort_thresholds": {"detection_latency_seconds": 7200, "divergent_rows": max_div},
            "router": {"type": "haproxy", "read_backend": "reads", "write_backend": "writes",
                       "source_server": "old", "target_server": "new"}}


def slots(server, db):
    cur = server.connect(db).cursor()
    cur.execute("SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'sluicecv_%%' "
                "AND database = %s ORDER BY 1", (db,))
    return [r[0] for r in cur.fetchall()]


def wait_for(cond, timeout):
    end = time.time() + timeout
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    return cond()


def to_phase(mid, phases):
    for want in phases:
        if want == "cutover":
            ctl.call("POST", f"/migrations/{mid}/shadow-results", {"compared": 20, "mismatched": 0})
        r = ctl.advance(mid, timeout=180)
        if not (isinstance(r, dict) and r.get("phase") == want):
            t.ok(False, f"{mid}: advance into {want}", r)
            print(ctl.log_text()[-3000:], file=sys.stderr)
            return False
    return True


# refused: more tables than the slots allow
code, doc = ctl.call("POST", "/migrations",
                     manifest("abort", [f"t{i}" for i in range(17)]))
t.ok(code == 422 and "metrics.verify_changes" in doc.get("error", "") and
     "at most 16" in doc["error"], "17 tables with verify_changes: refused, naming the field",
     doc)

# (a) a row changed behind the replication during dual_write: abort
mid = "cv-abort"
code, doc = ctl.call("POST", "/migrations", manifest("abort"))
t.ok(code == 201 and doc.get("verify_changes") == {"following": 0, "last_error": None},
     "the status has verify_changes, nothing followed before dual_write", doc)
ok = to_phase(mid, ("backfill", "dual_write"))
if ok:
    s = ctl.wait(mid, lambda s: s.get("verify_changes", {}).get("following") == 2, 30)
    t.ok(s is not None, "dual_write: both tables followed by a changes job",
         ctl.status(mid).get("verify_changes"))
    both = wait_for(lambda: len(slots(src, "abort")) == 2 and len(slots(dst, "abort")) == 2, 30)
    t.ok(both, "a sluicecv_ slot per table on each side",
         (slots(src, "abort"), slots(dst, "abort")))
    # the first audit and sample of the phase run at once; wait for them to
    # end, so that only the changes jobs can see what follows
    s = ctl.wait(mid, lambda s: s["last_validation"] is not None, 60)
    time.sleep(3)
    # writes go on at the source and replicate meanwhile: no false alarm
    stop = threading.Event()

    def writer():
        c = src.connect("abort")
        i = 100000
        while not stop.is_set():
            c.cursor().execute("INSERT INTO orders VALUES (%s, 1, 'w')", (i,))
            c.cursor().execute("UPDATE orders SET note = %s WHERE id = %s", (f"u{i}", i % 2000 + 1))
            i += 1
            time.sleep(0.02)

    th = threading.Thread(target=writer, daemon=True)
    th.start()
    time.sleep(6)
    s = ctl.status(mid)
    t.ok(s["state"] == "running" and s["divergent_rows"] == 0,
         "6 s of replicated writes (about 300 changes): no divergence reported",
         (s["state"], s["divergent_rows"], s["abort_reason"]))
    cur = dst.connect("abort").cursor()
    cur.execute("UPDATE customers SET name = 'behind the back' WHERE id = 7")
    fault = time.time()
    s = ctl.wait(mid, lambda s: s["state"] == "aborted", 60)
    took = time.time() - fault
    stop.set()
    th.join()
    reason = (s or {}).get("abort_reason") or ""
    t.ok(s is not None and "divergent rows" in reason and "customers id=7" in reason,
         f"the change on the target found by the changes job: aborted {took:.1f} s after it",
         reason or ctl.status(mid))
    t.ok(took < 20, f"detected and aborted within 20 s ({took:.1f} s; audits run hourly)")
    gone = wait_for(lambda: not slots(src, "abort") and not slots(dst, "abort"), 30)
    t.ok(gone, "after the abort the changes jobs' slots are dropped on both sides",
         (slots(src, "abort"), slots(dst, "abort")))
    t.ok(ctl.status(mid)["verify_changes"]["following"] == 0, "nothing followed after the abort")

# (b) a migration that reaches cleanup: the changes jobs stop there
mid = "cv-clean"
code, doc = ctl.call("POST", "/migrations", manifest("clean", sample_every="1s"))
ok = code == 201 and to_phase(mid, ("backfill", "dual_write"))
if ok:
    s = ctl.wait(mid, lambda s: s.get("verify_changes", {}).get("following") == 2, 30)
    both = wait_for(lambda: len(slots(src, "clean")) == 2 and len(slots(dst, "clean")) == 2, 30)
    t.ok(s is not None and both, "clean: both tables followed in dual_write")
    ok = to_phase(mid, ("shadow_read", "cutover"))
if ok:
    ctl.wait(mid, lambda s: s["state"] == "waiting_approval", 60)
    code, _ = ctl.call("POST", f"/migrations/{mid}/approve", {}, token=APPROVER)
    s = ctl.wait(mid, lambda s: s["traffic"]["writes"] == "target" or s["state"] == "aborted", 90)
    t.ok(s is not None and s["traffic"]["writes"] == "target" and
         s["verify_changes"]["following"] == 2 and s["divergent_rows"] == 0,
         "clean: still followed through cutover and the write cutover, nothing divergent",
         s and (s["state"], s["verify_changes"], s["abort_reason"]))
    ok = to_phase(mid, ("cleanup",))
if ok:
    s = ctl.wait(mid, lambda s: s["state"] == "completed", 120)
    t.ok(s is not None, "clean: the migration completes", ctl.status(mid)["gates"])
    s = ctl.wait(mid, lambda s: s["verify_changes"]["following"] == 0, 30)
    gone = wait_for(lambda: not slots(src, "clean") and not slots(dst, "clean"), 30)
    t.ok(s is not None and gone, "clean: in cleanup the jobs are cancelled and the slots gone",
         (ctl.status(mid)["verify_changes"], slots(src, "clean"), slots(dst, "clean")))
    t.ok(ctl.status(mid)["verify_changes"]["last_error"] is None,
         "clean: no changes job failed along the way")

# (c) counting: a changes divergence counts at once and apart from the
# audits' figure (an audit running meanwhile does not hide it); repaired,
# the next audit begun after it clears it
mid = "cv-count"
code, doc = ctl.call("POST", "/migrations", manifest("count", audit_every="3s", max_div=10))
ok = code == 201 and to_phase(mid, ("backfill", "dual_write"))
if ok:
    ctl.wait(mid, lambda s: s["verify_changes"]["following"] == 2, 30)
    wait_for(lambda: len(slots(src, "count")) == 2 and len(slots(dst, "count")) == 2, 30)
    time.sleep(2)
    cur = dst.connect("count").cursor()
    cur.execute("UPDATE orders SET note = 'behind' WHERE id = 1500")
    s = ctl.wait(mid, lambda s: s["divergent_rows"] >= 1, 30)
    t.ok(s is not None and s["state"] == "running" and s["divergent_rows"] == 1,
         "count: the changed row counts as 1 divergent row (threshold 10: no abort)",
         s and (s["divergent_rows"], s["state"]))
    seen = []
    for _ in range(20):  # audits every 3 s go on meanwhile: it stays counted
        time.sleep(0.5)
        seen.append(ctl.status(mid)["divergent_rows"])
    t.ok(min(seen) >= 1, "count: audits running meanwhile never hide it", seen)
    cur.execute("SELECT note FROM orders WHERE id = 1499")
    cur2 = src.connect("count").cursor()
    cur2.execute("SELECT note FROM orders WHERE id = 1500")
    cur.execute("UPDATE orders SET note = %s WHERE id = 1500", (cur2.fetchone()[0],))
    s = ctl.wait(mid, lambda s: s["divergent_rows"] == 0, 60)
    t.ok(s is not None and s["state"] == "running",
         "count: repaired, an audit begun after it clears the figure",
         ctl.status(mid)["divergent_rows"])
    ctl.call("POST", f"/migrations/{mid}/abort", {"reason": "test over"})

# (d) the prepare gate: a target without logical decoding
plain = PgServer()
plain.createdb("count")
c3 = plain.connect("count").cursor()
c3.execute("CREATE TABLE orders(id bigint PRIMARY KEY, total numeric(12,2), note text)")
c3.execute("CREATE TABLE customers(id int PRIMARY KEY, name text NOT NULL)")
ctl.stop()
ctl = Control(dict(dbs, new_plain=plain.dsn("count")), cluster=cl, haproxy=hp)
m = manifest("count")
m["migration_id"] = "cv-plain"
m["scope"]["target"] = "new_plain"
code, doc = ctl.call("POST", "/migrations", m)
time.sleep(2)
r = ctl.call("POST", "/migrations/cv-plain/advance", {})
gates = {g["name"]: g for g in (r[1].get("gates") or [])} if isinstance(r[1], dict) else {}
g = gates.get("verify_changes_ready", {})
t.ok(code == 201 and r[0] == 409 and g.get("ok") is False and "wal_level" in g.get("detail", "")
     and "new_plain" in g.get("detail", ""),
     "prepare: a target without wal_level = logical fails verify_changes_ready, naming it", r)
plain.stop()

ctl.stop()
cl.stop()
hp.stop()
src.stop()
dst.stop()
t.done()
