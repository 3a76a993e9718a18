#!/usr/bin/python3
"""Edges of the write cutover (control/ctl_cutover.c), each once a bug an
adversarial review proved:

- seq_extra: the source database has a sequence outside the migration's
  scope that the target lacks. The write cutover syncs every sequence of
  the source database and aborts on the missing one.
- rollback_seq: after a write cutover, rows inserted on the target with
  the sequence default reach the source by the reverse stream; an abort
  routes writes back to the source without setting the source's sequences
  past the target's: the source's next nextval() values are already used.
- late_commit: a statement running on the source when the drain ends is
  cut at HAProxy, but the backend finishes and commits after the
  heartbeat: the row is on the source only (never replicated to the
  target), and a retry of the same id on the target breaks the reverse
  stream.
- restart_no_haproxy: sluice control restarted while HAProxy is down; when
  HAProxy comes back from its file, the route from the store is applied
  again (or the migration aborts), never left to nobody.
"""
import os
import signal
import sys
import threading
import time

import psycopg2

from control_env import (APPROVER, ITEMS, ORDERS, SEED_ITEMS, Control, Haproxy, cluster_for,
                         seed_orders, shop_servers)
from harness import Tap

CASES = os.environ.get("REVIEW_CASES",
                       "seq_extra rollback_seq late_commit restart_no_haproxy").split()

t = Tap()


def audit_log(case, cur):
    if case == "seq_extra":
        # a table of the source database that is not migrated
        cur.execute("CREATE TABLE audit_log(id bigserial PRIMARY KEY, what text)")
        cur.execute("INSERT INTO audit_log(what) VALUES ('x')")


src, dst, dbs = shop_servers(CASES, [ORDERS, ITEMS], [seed_orders(500), SEED_ITEMS], audit_log)
cl = cluster_for(dbs, workers=2)
hp = None
ctl = None


def to_last_step(case):
    mid = f"rv-{case}"
    code, doc = ctl.call("POST", "/migrations", {
        "migration_id": mid,
        "scope": {"source": f"old_{case}", "target": f"new_{case}", "tables": ["orders", "items"]},
        "cutover": {"steps": [50, 100], "soak_seconds": 1},
        "metrics": {"audit_every": "1h", "sample_every": "1s"},
        "router": {"type": "haproxy", "read_backend": "reads", "write_backend": "writes",
                   "source_server": "old", "target_server": "new"}})
    if code != 201:
        t.ok(False, f"{case}: migration created", doc)
        return None
    for want in ("backfill", "dual_write", "shadow_read", "cutover"):
        if want == "cutover":
            ctl.call("POST", f"/migrations/{mid}/shadow-results", {"compared": 20, "mismatched": 0})
        r = ctl.advance(mid, timeout=180)
        if not (isinstance(r, dict) and r.get("phase") == want):
            t.ok(False, f"{case}: advance into {want}", (r, ctl.log_text()[-2000:]))
            return None
    s = ctl.wait(mid, lambda s: s["state"] == "waiting_approval", 60)
    if s is None:
        t.ok(False, f"{case}: last step waits for approval")
        return None
    return mid


def via_haproxy(db):
    c = psycopg2.connect(host="127.0.0.1", port=hp.write_port, user=src.USER,
                         password=src.PASSWORD, dbname=db, connect_timeout=3)
    c.autocommit = True
    return c


def seq_extra():
    mid = to_last_step("seq_extra")
    if not mid:
        return
    ctl.call("POST", f"/migrations/{mid}/approve", {}, token=APPROVER)
    s = ctl.wait(mid, lambda s: s["state"] == "aborted" or s["traffic"]["writes"] == "target", 90)
    t.diag(f"seq_extra: state {s and s['state']}, reason {s and s.get('abort_reason')}")
    t.ok(s is not None and s["state"] != "aborted",
         "seq_extra: a sequence outside the scope does not abort the write cutover",
         s and s.get("abort_reason"))


def rollback_seq():
    mid = to_last_step("rollback_seq")
    if not mid:
        return
    ctl.call("POST", f"/migrations/{mid}/approve", {}, token=APPROVER)
    s = ctl.wait(mid, lambda s: s["state"] == "aborted" or s["traffic"]["writes"] == "target", 90)
    if not (s and s["traffic"]["writes"] == "target"):
        t.ok(False, "rollback_seq: writes moved", s and s.get("abort_reason"))
        return
    c = via_haproxy("rollback_seq")
    c.cursor().execute("INSERT INTO items(name) SELECT 'on-target' FROM generate_series(1, 5)")
    c.close()
    code, doc = ctl.call("POST", f"/migrations/{mid}/abort", {"reason": "review"})
    t.diag(f"rollback_seq: abort {code}, reason {doc.get('abort_reason')}")
    cur = src.connect("rollback_seq").cursor()
    cur.execute("SELECT max(id) FROM items")
    mx = cur.fetchone()[0]
    cur.execute("SELECT last_value FROM items_id_seq")
    last = cur.fetchone()[0]
    t.diag(f"rollback_seq: on the source after the rollback max(items.id)={mx}, "
           f"items_id_seq.last_value={last}")
    err = None
    try:
        c = via_haproxy("rollback_seq")
        c.cursor().execute("INSERT INTO items(name) SELECT 'after' FROM generate_series(1, 1010)")
        c.close()
    except psycopg2.Error as e:
        err = str(e).splitlines()[0]
    t.ok(err is None, "rollback_seq: inserts on the source after the rollback succeed", err)


def late_commit():
    mid = to_last_step("late_commit")
    if not mid:
        return
    stop = threading.Event()
    errors = []

    def slow(i):
        try:
            c = via_haproxy("late_commit")
            c.cursor().execute("INSERT INTO orders SELECT %s, 1, 'late' FROM pg_sleep(3)", (i,))
            c.close()
        except psycopg2.Error as e:
            errors.append((i, str(e).splitlines()[0]))

    def spawner():
        i = 900000
        while not stop.is_set():
            threading.Thread(target=slow, args=(i,), daemon=True).start()
            i += 1
            time.sleep(0.1)

    sp = threading.Thread(target=spawner, daemon=True)
    sp.start()
    time.sleep(0.5)
    ctl.call("POST", f"/migrations/{mid}/approve", {}, token=APPROVER)
    s = ctl.wait(mid, lambda s: s["state"] == "aborted" or s["traffic"]["writes"] == "target", 90)
    stop.set()
    time.sleep(5)
    t.diag(f"late_commit: state {s and s['state']}, {len(errors)} client errors")

    def late(server):
        cur = server.connect("late_commit").cursor()
        cur.execute("SELECT id FROM orders WHERE note = 'late'")
        return {r[0] for r in cur.fetchall()}

    only_src = sorted(late(src) - late(dst))
    t.ok(not only_src, "late_commit: no row committed on the source is missing on the target",
         only_src[:10])
    if only_src:
        # the application retries what failed: through HAProxy, now on the target
        i = only_src[0]
        c = via_haproxy("late_commit")
        c.cursor().execute("INSERT INTO orders VALUES (%s, 1, 'retry') ON CONFLICT DO NOTHING",
                           (i,))
        c.close()
        time.sleep(4)
        cur = src.connect("late_commit").cursor()
        cur.execute("SELECT count(*) FROM pg_stat_subscription WHERE subname = %s AND pid IS NULL",
                    ("sluice_rv_late_commit_rev",))
        log = open(os.path.join(src.dir, "log")).read() if hasattr(src, "dir") and \
            os.path.exists(os.path.join(src.dir, "log")) else ""
        dup = "duplicate key value" in log
        t.diag(f"late_commit: reverse apply worker down: {cur.fetchone()[0]}, "
               f"duplicate key in source log: {dup}")
        s = ctl.status(mid)
        s = ctl.wait(mid, lambda s: s["state"] == "aborted", 60) or ctl.status(mid)
        t.diag(f"late_commit: status {s['state']}: {s.get('abort_reason')}")
        t.ok(s["state"] != "aborted", "late_commit: the retried write does not break the "
             "reverse stream", s.get("abort_reason"))


def restart_no_haproxy():
    mid = to_last_step("restart_no_haproxy")
    if not mid:
        return
    s = ctl.status(mid)
    t.diag(f"restart_no_haproxy: before: reads {s['traffic']}, HAProxy reads/new "
           f"{hp.weight('reads', 'new')}")
    ctl.stop(signal.SIGKILL)
    hp.stop()
    ctl.start()  # HAProxy is down while sluice control starts
    time.sleep(1)
    hp.start()  # back from its file: reads/new weight 0
    time.sleep(8)
    s = ctl.status(mid)
    w = hp.weight("reads", "new")
    t.diag(f"restart_no_haproxy: 8 s after HAProxy is back: status {s['state']} "
           f"{s['traffic']} router_error={s.get('router_error')!r}; HAProxy reads/new {w}")
    t.ok(w == s["traffic"]["read_percent_target"] or s["state"] == "aborted",
         "restart_no_haproxy: HAProxy is steered again, or the migration aborts",
         (w, s["traffic"], s["state"]))


for case in CASES:
    hp = Haproxy(src.port, dst.port)
    ctl = Control(dbs, cluster=cl, haproxy=hp)
    globals()[case]()
    t.ok("Sanitizer" not in ctl.log_text(), f"{case}: no sanitizer report")
    ctl.stop()
    hp.stop()
sys.exit(t.done())
