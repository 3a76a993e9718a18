#!/usr/bin/python3
"""bench/loadgen.py following a real sluice control's routing endpoint: a
dual_write migration moves writes to "both" (each write committed on the
source and the target directly) and reads to "shadow" (rows compared on
both sides, counts posted to shadow-results with the token); the two
databases end identical, the migration is not aborted by the generator's
own writes, and every acknowledged write is on both sides."""
import json
import os
import subprocess
import sys
import time

from control_env import OPERATOR, Control, cluster_for
from harness import PgServer, Tap

HERE = os.path.dirname(os.path.abspath(__file__))
LOADGEN = os.path.join(HERE, "..", "..", "bench", "loadgen.py")

t = Tap()
src, dst = PgServer(), PgServer()  # no logical wal_level: the dual_write strategy
for s in (src, dst):
    s.createdb("shop")
dbs = {"old": src.dsn("shop"), "new": dst.dsn("shop")}
for s in (src, dst):  # the generator's table, empty on both sides (nothing to backfill)
    s.connect("shop").cursor().execute(
        "CREATE TABLE loadgen_orders (id bigint PRIMARY KEY, client int NOT NULL, "
        "seq bigint NOT NULL, val text, updated_at timestamptz NOT NULL DEFAULT now())")
cl = cluster_for(dbs, workers=1)
ctl = Control(dbs, cluster=cl)
MID = "lg"
code, doc = ctl.call("POST", "/migrations", {
    "migration_id": MID, "strategy": "dual_write",
    "scope": {"source": "old", "target": "new", "tables": ["loadgen_orders"]},
    "cutover": {"steps": [100], "soak_seconds": 1},
    "metrics": {"sample_every": "1s", "audit_every": "1h"}})
t.ok(code == 201, "migration created", doc)
for phase in ("backfill", "dual_write"):
    r = ctl.advance(MID, timeout=60)
    t.ok(isinstance(r, dict) and r.get("phase") == phase, f"advanced into {phase}", r)
# the runner routes on its next pass: writes made before "both" would be
# on the source only (a real divergence, which the audit would catch)
for _ in range(100):
    routing = ctl.call("GET", f"/migrations/{MID}/routing")[1]
    if routing.get("writes") == "both":
        break
    time.sleep(0.1)
t.ok(routing.get("writes") == "both", "routing: writes both", routing)
tokfile = os.path.join(ctl.dir, "loadgen-token")
with open(tokfile, "w") as f:
    f.write(OPERATOR + "\n")
p = subprocess.Popen([LOADGEN, "--source-dsn", dbs["old"], "--target-dsn", dbs["new"],
                      "--control", ctl.base, "--migration", MID, "--token-file", tokfile,
                      "--clients", "4", "--rate", "100", "--read-rate", "50", "--duration", "8",
                      "--check-dsn", dbs["old"], "--check-dsn", dbs["new"], "--json"],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
time.sleep(2.5)
r = ctl.advance(MID, timeout=30)
t.ok(isinstance(r, dict) and r.get("phase") == "shadow_read", "advanced into shadow_read", r)
out, err = p.communicate(timeout=90)
try:
    doc = json.loads(out)
except ValueError:
    doc = {}
t.ok(p.returncode == 0 and doc.get("lost_writes") == 0 and len(doc.get("check", [])) == 2,
     "exit 0, lost 0 on the source and on the target", f"exit {p.returncode}\n{err[-2000:]}")
seen = [(c["writes"], c["reads"]) for c in doc.get("routing_changes", [])]
t.ok(seen[0] == ("both", "source") and ("both", "shadow") in seen,
     "it followed the routing: writes both, then shadow reads", seen)
sh = doc.get("shadow", {})
st = ctl.status(MID)
t.ok(sh.get("posted_compared", 0) > 20 and sh.get("mismatched") == 0
     and sh.get("post_errors") == 0 and st["shadow"]["compared"] == sh["posted_compared"],
     "shadow reads compared and posted; the control plane counted them",
     (sh, st["shadow"]))
t.ok(st["state"] == "running" and st["phase"] == "shadow_read",
     "the migration runs on: the dual writes left no divergence", (st["state"],
                                                                  st["abort_reason"]))
rows = []
for s in (src, dst):
    cur = s.connect("shop").cursor()
    cur.execute("SELECT id, client, seq, val, updated_at FROM loadgen_orders ORDER BY id")
    rows.append(cur.fetchall())
t.ok(rows[0] == rows[1] and len(rows[0]) > 300, "source and target hold the same rows",
     f"{len(rows[0])} vs {len(rows[1])}")
t.ok(OPERATOR not in out + err and src.PASSWORD not in out + err,
     "neither the token nor a password is printed")
sys.exit(t.done())
