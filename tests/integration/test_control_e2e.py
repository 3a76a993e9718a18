#!/usr/bin/python3
"""A migration end to end: two real PostgreSQL servers with logical
replication, HAProxy, a coordinator with two workers and sluice control.
A migration created by POST runs every phase to cleanup while a load
generator writes to the source through HAProxy and reads through the
routing endpoint; at the end a full audit is exact and no acknowledged
write is missing."""
import sys
import time

import psycopg2

from control_env import APPROVER, Control, Haproxy, cluster_for
from harness import LOGICAL, PgServer, Tap
from loadgen import LoadGen


t = Tap()
src, dst = PgServer(extra_opts=LOGICAL), PgServer(extra_opts=LOGICAL)
for s in (src, dst):
    s.createdb("shop")
    cur = s.connect("shop").cursor()
    cur.execute("CREATE TABLE customers(id int PRIMARY KEY, name text NOT NULL)")
    cur.execute("CREATE TABLE orders(id bigint PRIMARY KEY, customer int NOT NULL, "
                "total numeric(12,2) NOT NULL, note text)")
    cur.execute("CREATE TABLE tickets(id bigserial PRIMARY KEY, body text)")
cur = src.connect("shop").cursor()
cur.execute("INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 100) g")
cur.execute("INSERT INTO tickets(body) SELECT 'ticket ' || g FROM generate_series(1, 50) g")
cur.execute("INSERT INTO orders SELECT g, g % 100, (g * 7 % 1000)::numeric / 4, 'seed ' || g "
            "FROM generate_series(1, 3000) g")

dbs = {"old": src.dsn("shop"), "new": dst.dsn("shop")}
cl = cluster_for(dbs, workers=2)
hp = Haproxy(src.port, dst.port)
ctl = Control(dbs, cluster=cl, haproxy=hp)
MID = "orders-to-new"
manifest = {
    "migration_id": MID,
    "scope": {"source": "old", "target": "new", "tables": ["orders", "customers", "tickets"]},
    "cutover": {"steps": [25, 100], "soak_seconds": 2},
    "metrics": {"audit_every": "20s", "sample_every": "1s"},
    "abort_thresholds": {"replication_lag_seconds": 30, "detection_latency_seconds": 60},
    "approvals": ["cutover"],
    "router": {"type": "haproxy", "read_backend": "reads", "write_backend": "writes",
               "source_server": "old", "target_server": "new"},
}
code, doc = ctl.call("POST", "/migrations", manifest)
t.ok(code == 201 and doc["phase"] == "prepare", "POST /migrations: 201, phase prepare", doc)
t.ok(doc.get("classification") == "data-move" and doc.get("strategy") == "cdc",
     "classified data-move, strategy cdc picked (logical replication available)",
     (doc.get("classification"), doc.get("strategy"), doc.get("classification_reason")))

load = LoadGen(hp, src.USER, src.PASSWORD, "shop", ctl, MID, ("127.0.0.1", src.port),
               ("127.0.0.1", dst.port), stable_ids=range(1, 3001)).start()


def step(name, cond_after=None, timeout=120):
    r = ctl.advance(MID, timeout=timeout)
    ok = isinstance(r, dict) and "phase" in r
    t.ok(ok, f"advance into {name}", r)
    if not ok:
        print(ctl.log_text()[-3000:], file=sys.stderr)
        sys.exit(t.done())
    return r


r = step("backfill")
t.ok(r["phase"] == "backfill", "phase backfill")
dcur = dst.connect("shop").cursor()
for _ in range(50):
    dcur.execute("SELECT count(*) FROM pg_subscription")
    n_sub = dcur.fetchone()[0]
    if n_sub:
        break
    time.sleep(0.2)
t.ok(n_sub == 1, "the control plane created the subscription on the target")
r = step("dual_write", timeout=180)
s = ctl.status(MID)
gates = {g["name"]: g for g in r["gates"]} if r.get("gates") else {}
ev = ctl.call("GET", f"/migrations/{MID}/events")[1]["events"]
passed = [e for e in ev if e["kind"] == "gate" and e["detail"].get("result") == "passed"
          and e["phase"] == "backfill"]
names = {g["name"] for g in passed[-1]["detail"]["gates"]} if passed else set()
t.ok({"initial_copy_done", "aggregates_match", "full_audit_exact"} <= names,
     "backfill passed on the initial copy, the aggregation audit and a full audit", names)
t.ok(s["traffic"]["writes"] == "source", "cdc: writes stay on the source", s["traffic"])
r = step("shadow_read", timeout=120)
t.ok(ctl.wait(MID, lambda s: s["traffic"]["reads"] == "shadow", 10) is not None,
     "shadow_read: the routing endpoint says reads: shadow")
r = step("cutover", timeout=120)
t.ok(load.shadow["compared"] > 0 and load.shadow["mismatched"] == 0,
     "the application shadow-read and posted its counts (no mismatch)", load.shadow)
t.ok(r["state"] == "waiting_approval", "cutover waits for approval (approvals: [cutover])",
     r["state"])
code, _ = ctl.call("POST", f"/migrations/{MID}/approve", {}, token=APPROVER)
t.ok(code == 200, "an approver approves the cutover")
s = ctl.wait(MID, lambda s: s["traffic"]["read_percent_target"] == 25, 30)
t.ok(s is not None, "step 1: 25% of reads on the target")
w_old, w_new = hp.weight("reads", "old"), hp.weight("reads", "new")
t.ok((w_old, w_new) == (75, 25), "HAProxy's runtime API reports weights 75/25", (w_old, w_new))
s = ctl.wait(MID, lambda s: s["state"] == "waiting_approval", 60)
t.ok(s is not None and "100" in s["waiting_for"], "the last step waits for an approval",
     s and s["waiting_for"])
code, _ = ctl.call("POST", f"/migrations/{MID}/approve", {}, token=APPROVER)
s = ctl.wait(MID, lambda s: s["traffic"]["read_percent_target"] == 100, 30)
t.ok(code == 200 and s is not None, "approved: 100% of reads on the target")
t.ok((hp.weight("reads", "old"), hp.weight("reads", "new")) == (0, 100),
     "HAProxy reports weights 0/100")
before = dict(load.reads)
time.sleep(1.5)
t.ok(load.reads["new"] > before["new"] and load.reads["old"] == before["old"],
     "reads through HAProxy now reach only the target", (before, load.reads))
# the write cutover: once every read is on the target and has held,
# writes stop at HAProxy, the target applies the source's last LSN,
# sequences are set past the source's, reverse replication starts and
# writes go to the target
cur = src.connect("shop").cursor()
cur.execute("SELECT max(id) FROM tickets")
max_before = cur.fetchone()[0]
s = ctl.wait(MID, lambda s: s["traffic"]["writes"] == "target" or s["state"] == "aborted", 90)
t.ok(s is not None and s["traffic"]["writes"] == "target" and s["reverse_replication"],
     "write cutover: writes on the target, reverse replication started",
     s and (s["traffic"], s.get("abort_reason"), s["gates"]))
pause = s and s.get("write_pause_seconds")
t.diag(f"write pause measured by sluice control: {pause} s")
t.ok(pause is not None and pause < 2.0, f"the write pause was under 2 s ({pause} s)")
t.ok((hp.weight("writes", "old"), hp.weight("writes", "new")) == (0, 1),
     "HAProxy's write backend sends writes to the target")
acked_at_cut = len(load.acked)
time.sleep(2)
t.ok(len(load.acked) > acked_at_cut, "writes go on through HAProxy after the cutover "
     f"({len(load.acked) - acked_at_cut} acknowledged in 2 s)")
w = psycopg2.connect(host="127.0.0.1", port=hp.write_port, user=src.USER, password=src.PASSWORD,
                     dbname="shop")
w.autocommit = True
wc = w.cursor()
wc.execute("INSERT INTO tickets(body) VALUES ('after cutover') RETURNING id")
new_id = wc.fetchone()[0]
w.close()
t.ok(new_id > max_before, f"sequences synced: a new row on the target takes id {new_id}, past the "
     f"source's {max_before}")
load.stop()
missing_src = None
for _ in range(75):
    missing_src = load.missing_in(src.connect("shop"))
    if not missing_src:
        break
    time.sleep(0.2)
t.ok(missing_src == [], "every acknowledged write reached the source through the reverse stream",
     missing_src[:10] if missing_src else None)
t.ok(load.missing_in(dst.connect("shop")) == [], "no acknowledged write is missing on the target")
cur.execute("SELECT count(*) FROM tickets WHERE id = %s", (new_id,))
t.ok(cur.fetchone()[0] == 1, "the row inserted on the target reached the source")
for table in ("orders", "tickets"):
    job = cl.submit("old", "new", "--table", table)
    st = cl.wait_state(job)
    t.ok(st and st["state"] == "done" and
         st["changed"] + st["missing_in_target"] + st["extra_in_target"] == 0,
         f"an audit after the cutover is exact both ways ({table}: new -> old through the "
         "reverse stream)", st)
r = step("cleanup", timeout=120)
s = ctl.wait(MID, lambda s: s["state"] in ("completed", "aborted"), 180)
t.ok(s is not None and s["state"] == "completed", "cleanup completes: final audit exact",
     s and (s["state"], s["gates"], s.get("abort_reason")))
counts = []
for srv in (src, dst):
    c2 = srv.connect("shop").cursor()
    c2.execute("SELECT (SELECT count(*) FROM pg_subscription), (SELECT count(*) FROM "
               "pg_publication), (SELECT count(*) FROM pg_replication_slots)")
    counts.append(c2.fetchone())
t.ok(counts == [(0, 0, 0), (0, 0, 0)],
     "cleanup dropped both streams: no subscription, publication or slot on either side", counts)
t.ok(len(load.acked) > 50, f"the load generator had {len(load.acked)} writes acknowledged")
art = ctl.call("GET", f"/migrations/{MID}/artifacts")[1]
t.ok(art["sealed"] and len(art["validations"]) > 3 and art["manifest"]["migration_id"] == MID,
     "artifacts: sealed, with the manifest and every validation")
import json as _json
t.ok(src.PASSWORD not in _json.dumps(art) and src.PASSWORD not in ctl.log_text() and
     src.PASSWORD not in ctl.call("GET", "/metrics")[1],
     "the databases' password appears in no artifact, event, metric or log line")
code = ctl.stop()
t.ok(code == 0, "sluice control stops cleanly on SIGTERM", ctl.log_text()[-2000:])
sys.exit(t.done())
