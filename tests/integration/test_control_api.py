#!/usr/bin/python3
"""sluice control's HTTP API against control/openapi.json and the README:
auth (401/403 change nothing), bad bodies (400/422 create and change
nothing), 404/405, illegal transitions (409), the routing long poll,
shadow results, artifacts, /metrics (promtool), /healthz, a dry run with a
partial scope, and a restart on the same store. SQLite databases, a real
cluster, a real sluice control."""
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from control_env import APPROVER, OPERATOR, REPO, Control, cluster_for  # noqa: E402
from harness import Tap  # noqa: E402

t = Tap()
T0 = time.time()
tmp = tempfile.mkdtemp(prefix="sluice-api-")


def make_db(name, changes=()):
    path = os.path.join(tmp, name + ".db")
    db = sqlite3.connect(path)
    db.execute("create table orders(id integer primary key, total numeric, note text)")
    db.executemany("insert into orders values (?, ?, ?)",
                   [(i, i * 10 + 0.5, f"order {i}") for i in range(1, 51)])
    for sql in changes:
        db.execute(sql)
    db.commit()
    db.close()
    return "sqlite:" + path


dbs = {"old": make_db("old"), "new": make_db("new"), "dold": make_db("dold"),
       # inside the dry run's where (id <= 20) one row differs; outside it another
       "dnew": make_db("dnew", ["update orders set note = 'changed' where id = 5",
                                "update orders set note = 'outside' where id = 40"])}
cl = cluster_for(dbs, workers=1, worker_extra=("--allow-where", "*"))
ctl = Control(dbs, cluster=cl, tick_ms=200)


def manifest(mid, **over):
    m = {"migration_id": mid,
         "scope": {"source": "old", "target": "new", "tables": ["orders"]},
         "strategy": "dual_write",
         "cutover": {"steps": [50, 100], "soak_seconds": 1},
         "metrics": {"audit_every": "1h", "sample_every": "1s"},
         "abort_thresholds": {"detection_latency_seconds": 60}}
    m.update(over)
    return m


def is_err(doc, code):
    return isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc.get("code") == code


def events(mid):
    return ctl.call("GET", f"/migrations/{mid}/events")[1]["events"]


def snapshot(mid):
    """What must not move when a call is refused."""
    s = ctl.status(mid)
    keep = ("phase", "state", "waiting_for", "traffic", "abort_reason", "shadow", "aborts",
            "cutover_step", "strategy", "dry_run")
    return ({k: s.get(k) for k in keep}, len(events(mid)),
            ctl.call("GET", f"/migrations/{mid}/routing")[1]["version"])


def migration_ids():
    return sorted(m["migration_id"] for m in ctl.call("GET", "/migrations")[1]["migrations"])


# ---- create ------------------------------------------------------------------------------
code, doc = ctl.call("POST", "/migrations", manifest("m-main", approvals=["backfill"]))
t.ok(code == 201 and doc.get("migration_id") == "m-main" and doc.get("phase") == "prepare",
     "POST /migrations: 201 with the status document", (code, doc))
code, doc = ctl.call("POST", "/migrations", manifest("m-bad", scope={
    "source": "old", "target": "new", "tables": ["no_such_table"]}))
t.ok(code == 201, "a migration over a missing table is created (its gates will fail)", (code, doc))
code, doc = ctl.call("POST", "/migrations", manifest("m-main"))
t.ok(code == 409 and is_err(doc, "conflict"), "duplicate migration_id: 409 conflict", (code, doc))

# ---- auth: 401 on every POST, 403 approve by an operator; nothing changes ------------------
ctl.wait("m-main", lambda s: s["gates"] and all(g["ok"] for g in s["gates"]), timeout=20)
before = snapshot("m-main")
ids_before = migration_ids()
posts = [("/migrations", manifest("m-unauth")), ("/migrations/m-main/advance", {}),
         ("/migrations/m-main/abort", {"reason": "x"}), ("/migrations/m-main/approve", {}),
         ("/migrations/m-main/shadow-results", {"compared": 5, "mismatched": 5})]
for path, body in posts:
    for label, tok in (("missing", None), ("unknown", "not-a-token"), ("empty", "")):
        code, doc = ctl.call("POST", path, body, token=tok)
        t.ok(code == 401 and is_err(doc, "unauthorized"), f"POST {path}, {label} token: 401",
             (code, doc))
    code, doc = ctl.call("POST", path, body, token=None, headers={"Authorization": "Basic " + OPERATOR})
    t.ok(code == 401, f"POST {path}, not a Bearer token: 401", (code, doc))
code, doc = ctl.call("POST", "/migrations/m-main/approve", {}, token=OPERATOR)
t.ok(code == 403 and is_err(doc, "forbidden"), "approve with an operator token: 403", (code, doc))
t.ok(snapshot("m-main") == before, "refused calls changed no status, event or routing",
     (before, snapshot("m-main")))
t.ok(migration_ids() == ids_before, "refused calls created no migration", migration_ids())

# ---- bodies: 400 / 422, nothing created or changed ---------------------------------------
bad_manifests = [
    ("not JSON", b"{\"migration_id\": ", 400),
    ("empty body", b"", 400),
    ("trailing garbage", json.dumps(manifest("m-x")).encode() + b" x", 400),
    ("duplicate key", b'{"migration_id": "m-x", "migration_id": "m-y"}', 400),
    ("an array", b"[1, 2]", (400, 422)),
    ("a string", b'"m-x"', (400, 422)),
    ("null", b"null", (400, 422)),
]
for label, raw, want in bad_manifests:
    code, doc = ctl.call("POST", "/migrations", raw=raw, headers={"Content-Type": "application/json"})
    want = want if isinstance(want, tuple) else (want,)
    t.ok(code in want and is_err(doc, "invalid"), f"POST /migrations {label}: {want}", (code, doc))


def sub(m, path, value):
    """m with path (a.b[0].c) set to value."""
    m = json.loads(json.dumps(m))
    cur = m
    parts = path.split(".")
    for p in parts[:-1]:
        cur = cur[int(p)] if isinstance(cur, list) else cur[p]
    last = parts[-1]
    if isinstance(cur, list):
        cur[int(last)] = value
    else:
        cur[last] = value
    return m


base = manifest("m-x")
invalid_manifests = [
    ("unknown top-level field", sub(base, "colour", "red"), "colour"),
    ("unknown scope field", sub(base, "scope.tabels", ["orders"]), "tabels"),
    ("unknown table field", sub(base, "scope.tables", [{"name": "orders", "wher": "id < 3"}]), "wher"),
    ("unknown cutover field", sub(base, "cutover.soak", 3), "soak"),
    ("unknown threshold", sub(base, "abort_thresholds.lag", 3), "lag"),
    ("unknown metrics field", sub(base, "metrics.every", "1s"), "every"),
    ("unknown router field", sub(base, "router", {"type": "endpoint", "socket": "x"}), "socket"),
    ("unknown window field", sub(base, "windows", [{"days": "daily", "from": "00:00",
                                                    "to": "12:00", "zone": "UTC"}]), "zone"),
    ("migration_id a number", sub(base, "migration_id", 5), "migration_id"),
    ("soak_seconds a string", sub(base, "cutover.soak_seconds", "60"), "soak_seconds"),
    ("steps not rising", sub(base, "cutover.steps", [50, 25, 100]), "steps"),
    ("dry_run a string", sub(base, "dry_run", "yes"), "dry_run"),
    ("null for a default", sub(base, "strategy", None), "strategy"),
    ("tables an object", sub(base, "scope.tables", {"orders": 1}), "tables"),
    ("where without dry_run", sub(base, "scope.tables", [{"name": "orders", "where": "id < 3"}]), "where"),
    ("source equals target", sub(base, "scope.target", "old"), "target"),
    ("missing scope", {"migration_id": "m-x"}, "scope"),
    ("bad migration_id", sub(base, "migration_id", "-x"), "migration_id"),
    ("router haproxy without --haproxy", sub(base, "router", {
        "type": "haproxy", "read_backend": "reads", "write_backend": "writes",
        "source_server": "old", "target_server": "new"}), "haproxy"),
]
for label, m, word in invalid_manifests:
    code, doc = ctl.call("POST", "/migrations", m)
    t.ok(code == 422 and is_err(doc, "invalid") and word in doc["error"],
         f"POST /migrations {label}: 422 naming {word}", (code, doc))
code, doc = ctl.call("POST", "/migrations?dry_run=1", sub(base, "scope.tables", [{"name": "orders"}]),
                     token="nope")
t.ok(code == 401, "POST /migrations?dry_run=1 without a valid token: 401", (code, doc))
code, doc = ctl.call("POST", "/migrations?dry_run=maybe", manifest("m-x"))
t.ok(code == 400 and is_err(doc, "invalid") and "dry_run" in doc["error"],
     "POST /migrations?dry_run=maybe: 400", (code, doc))
t.ok(migration_ids() == ids_before, "no bad manifest created a migration", migration_ids())
code, doc = ctl.call("POST", "/migrations", manifest("m-x"), token=None,
                     headers={"Authorization": "Bearer "})
t.ok(code == 401, "an empty Bearer token: 401", (code, doc))
t.ok(ctl.call("GET", "/migrations/m-x/status")[0] == 404, "m-x does not exist")

bad_bodies = [
    ("advance", b"{", 400), ("advance", b"[]", 400), ("advance", b'{"force": true}', 400),
    ("approve", b'{"phase": "backfill"}', 400), ("approve", b"1", 400),
    ("abort", b"{", 400), ("abort", b'"stop"', 400), ("abort", b'{"reason": "x", "why": "y"}', 400),
    ("abort", b'{"reason": 5}', 400), ("abort", b'{"reason": null}', 400),
    ("shadow-results", b"{", 400), ("shadow-results", b"[]", 400),
    ("shadow-results", b'{"compared": 5, "mismatched": 0, "extra": 1}', 400),
    ("shadow-results", b'{"compared": "5", "mismatched": 0}', 400),
    ("shadow-results", b'{"compared": 5.5, "mismatched": 0}', 400),
    ("shadow-results", b'{"compared": -1, "mismatched": 0}', 400),
    ("shadow-results", b'{"compared": 5}', 400),
    ("shadow-results", b'{"compared": 5, "mismatched": 6}', 400),
    ("shadow-results", b'{"compared": 5, "mismatched": 0, "examples": {}}', 400),
    ("shadow-results", b'{"compared": 5, "mismatched": 0, "compared": 6}', 400),
]
before = snapshot("m-main")
for what, raw, want in bad_bodies:
    token = APPROVER if what == "approve" else OPERATOR
    code, doc = ctl.call("POST", f"/migrations/m-main/{what}", raw=raw, token=token,
                         headers={"Content-Type": "application/json"})
    t.ok(code == want and is_err(doc, "invalid"), f"POST {what} body {raw.decode()!r}: {want}",
         (code, doc))
code, doc = ctl.call("POST", "/migrations/m-main/advance", raw=b"{" + b" " * (1 << 20) + b"}")
t.ok(code == 413 and is_err(doc, "invalid"), "a body over 1 MiB: 413", (code, doc))
t.ok(snapshot("m-main") == before, "bad bodies changed no status, event or routing",
     (before, snapshot("m-main")))

ctl.call("POST", "/migrations", manifest("m-ovf"))
code, doc = ctl.call("POST", "/migrations/m-ovf/shadow-results",
                     {"compared": 2**63 - 1, "mismatched": 0})
code2, doc2 = ctl.call("POST", "/migrations/m-ovf/shadow-results",
                       {"compared": 2**63 - 1, "mismatched": 0})
t.ok(code == 200 and code2 == 400 and is_err(doc2, "invalid"),
     "shadow-results: a total past int64 is 400 (not an overflow)", (code, doc2))

# ---- 404 and 405 --------------------------------------------------------------------------
for what in ("status", "events", "routing", "artifacts"):
    code, doc = ctl.call("GET", f"/migrations/nosuch/{what}")
    t.ok(code == 404 and is_err(doc, "not_found"), f"GET {what} of an unknown id: 404", (code, doc))
for what, body in (("advance", {}), ("abort", {"reason": "x"}), ("approve", {}),
                   ("shadow-results", {"compared": 1, "mismatched": 0})):
    code, doc = ctl.call("POST", f"/migrations/nosuch/{what}", body,
                         token=APPROVER if what == "approve" else OPERATOR)
    t.ok(code == 404 and is_err(doc, "not_found"), f"POST {what} of an unknown id: 404", (code, doc))
code, doc = ctl.call("GET", "/migrations/nosuch/routing?wait=5&version=1")
t.ok(code == 404, "long poll of an unknown id: 404 at once", (code, doc))
for path in ("/nope", "/migrations/m-main", "/migrations/m-main/", "/migrations/m-main/nope",
             "/migrations/m-main/status/x", "/migrations//status", "/migrationsx", "/healthz/x",
             "/metrics/x"):
    code, doc = ctl.call("GET", path)
    t.ok(code == 404 and is_err(doc, "not_found"), f"GET {path}: 404", (code, doc))
for method, path in (("DELETE", "/migrations"), ("PUT", "/migrations"),
                     ("GET", "/migrations/m-main/advance"), ("GET", "/migrations/m-main/abort"),
                     ("POST", "/migrations/m-main/status"), ("POST", "/migrations/m-main/routing"),
                     ("DELETE", "/migrations/m-main/status"), ("PUT", "/migrations/m-main/abort"),
                     ("POST", "/healthz"), ("POST", "/metrics"), ("DELETE", "/healthz"),
                     ("POST", "/"), ("PUT", "/dashboard/app.js")):
    code, doc = ctl.call(method, path, {} if method in ("POST", "PUT") else None)
    t.ok(code == 405 and isinstance(doc, dict) and "error" in doc, f"{method} {path}: 405",
         (code, doc))

# ---- transitions --------------------------------------------------------------------------
s = ctl.wait("m-bad", lambda s: len(s["gates"]) > 0, timeout=20)
code, doc = ctl.call("POST", "/migrations/m-bad/advance", {})
t.ok(code == 409 and is_err(doc, "conflict") and isinstance(doc.get("gates"), list)
     and any(not g["ok"] for g in doc["gates"]),
     "advance while gates fail: 409 with the failing gates", (code, doc))
t.ok(ctl.status("m-bad")["phase"] == "prepare", "m-bad stays in prepare")
code, doc = ctl.call("POST", "/migrations/m-bad/approve", {}, token=APPROVER)
t.ok(code == 409 and is_err(doc, "conflict"), "approve when nothing waits: 409", (code, doc))

code, doc = ctl.call("POST", "/migrations/m-main/advance")
t.ok(code == 200 and doc["phase"] == "backfill" and doc["state"] == "waiting_approval",
     "advance m-main: backfill, waiting for approval", (code, doc))
code, doc = ctl.call("POST", "/migrations/m-main/advance")
t.ok(code == 409 and is_err(doc, "conflict"), "advance while waiting for approval: 409", (code, doc))
before = snapshot("m-main")
code, doc = ctl.call("POST", "/migrations/m-main/approve", {}, token=OPERATOR)
t.ok(code == 403 and snapshot("m-main") == before, "approve by an operator: 403, nothing moves",
     (code, doc))
code, doc = ctl.call("POST", "/migrations/m-main/approve", token=APPROVER)
t.ok(code == 200 and doc["state"] == "running", "approve by an approver: running", (code, doc))
code, doc = ctl.call("POST", "/migrations/m-main/approve", token=APPROVER)
t.ok(code == 409, "approve twice: 409", (code, doc))

# ---- the routing endpoint and its long poll -----------------------------------------------


def long_poll(mid, version, wait):
    out = {}

    def run():
        t0 = time.time()
        try:
            out["code"], out["doc"] = ctl.call(
                "GET", f"/migrations/{mid}/routing?wait={wait}&version={version}")
        except OSError as e:  # the server stopping may close it unanswered
            out["error"] = repr(e)
        out["took"] = time.time() - t0
    th = threading.Thread(target=run)
    th.start()
    return th, out


code, r0 = ctl.call("GET", "/migrations/m-main/routing")
t.ok(code == 200 and r0["reads"] == "source" and r0["writes"] == "source"
     and r0["read_percent_target"] == 0, "routing: all on the source", r0)
t0 = time.time()
code, doc = ctl.call("GET", f"/migrations/m-main/routing?wait=2&version={r0['version']}")
took = time.time() - t0
t.ok(code == 200 and doc["version"] == r0["version"] and 1.8 <= took <= 4,
     f"long poll with nothing changing returns after ~2 s ({took:.2f} s)", (code, doc))
t0 = time.time()
code, doc = ctl.call("GET", f"/migrations/m-main/routing?wait=5&version={r0['version'] + 7}")
took = time.time() - t0
t.ok(code == 200 and doc["version"] == r0["version"] and took < 1,
     f"long poll with an old version answers at once ({took:.2f} s)", (code, doc))
for q in ("wait=61&version=1", "wait=-1&version=1", "wait=x&version=1", "wait=2&version=x",
          "wait=2&version=-3", "wait=&version=1", "wait=2&version=1.5", "wait=99999999999999999999"):
    code, doc = ctl.call("GET", f"/migrations/m-main/routing?{q}")
    t.ok(code == 400 and is_err(doc, "invalid"), f"routing?{q}: 400", (code, doc))

s = ctl.wait("m-main", lambda s: s["gates"] and all(g["ok"] for g in s["gates"]), timeout=40)
t.ok(s is not None, "backfill gates pass (aggregates, full audit on the cluster)",
     ctl.status("m-main")["gates"])
th, out = long_poll("m-main", r0["version"], 20)
time.sleep(0.5)
code, doc = ctl.call("POST", "/migrations/m-main/advance")
t.ok(code == 200 and doc["phase"] == "dual_write", "advance to dual_write", (code, doc))
th.join()
t.ok(out.get("code") == 200 and out["doc"]["version"] > r0["version"]
     and out["doc"]["writes"] == "both" and out["took"] < 5,
     f"long poll returns early on the phase change ({out.get('took', 0):.2f} s of 20)", out)
code, r1 = ctl.call("GET", "/migrations/m-main/routing")
t.ok(r1["version"] == r0["version"] + 1, "routing version rose by one on the change", (r0, r1))

# ---- shadow results -----------------------------------------------------------------------
code, doc = ctl.call("POST", "/migrations/m-main/shadow-results",
                     {"compared": 40, "mismatched": 0, "examples": []})
code2, doc2 = ctl.call("POST", "/migrations/m-main/shadow-results", {"compared": 2, "mismatched": 0})
t.ok(code == 200 and code2 == 200 and doc2["shadow"]["compared"] == 42
     and doc2["shadow"]["mismatched"] == 0, "shadow results count up", (code, doc2))
ev = [e for e in events("m-main") if e["kind"] == "shadow_results"]
t.ok(len(ev) == 2, "each post is an audit event", ev)

# ---- abort --------------------------------------------------------------------------------
th, out = long_poll("m-main", r1["version"], 20)
time.sleep(0.5)
code, doc = ctl.call("POST", "/migrations/m-main/abort", {"reason": "api test"})
t.ok(code == 200 and doc["state"] == "aborted" and "api test" in (doc["abort_reason"] or "")
     and doc["traffic"] == {"read_percent_target": 0, "writes": "source", "reads": "source"},
     "abort: aborted, traffic back on the source", (code, doc))
th.join()
t.ok(out.get("code") == 200 and out["doc"]["version"] > r1["version"]
     and out["doc"]["writes"] == "source" and out["took"] < 5,
     f"long poll returns early on the abort ({out.get('took', 0):.2f} s of 20)", out)
for what, body, tok in (("abort", {"reason": "again"}, OPERATOR), ("advance", {}, OPERATOR),
                        ("approve", {}, APPROVER),
                        ("shadow-results", {"compared": 1, "mismatched": 0}, OPERATOR)):
    before = snapshot("m-main")
    code, doc = ctl.call("POST", f"/migrations/m-main/{what}", body, token=tok)
    t.ok(code == 409 and is_err(doc, "conflict"), f"{what} after abort: 409", (code, doc))
    t.ok(snapshot("m-main")[0] == before[0], f"{what} after abort changed nothing")
code, doc = ctl.call("POST", "/migrations/m-main/abort", {"reason": "again"})
t.ok(ctl.status("m-main")["aborts"] == 1, "still one abort", ctl.status("m-main")["aborts"])

# ---- dry run with a partial scope ---------------------------------------------------------
dry = manifest("m-dry", scope={"source": "dold", "target": "dnew",
                               "tables": [{"name": "orders", "where": "id <= 20"}]})
code, doc = ctl.call("POST", "/migrations?dry_run=1", dry)
t.ok(code == 201 and doc.get("dry_run") is True, "POST /migrations?dry_run=1: a dry run", (code, doc))
v_dry = ctl.call("GET", "/migrations/m-dry/routing")[1]["version"]
versions = set()


def dry_done(s):
    versions.add(ctl.call("GET", "/migrations/m-dry/routing")[1]["version"])
    return s["state"] in ("completed", "aborted")


s = ctl.wait("m-dry", dry_done, timeout=60, step=0.3)
t.ok(s is not None and s["state"] == "completed", "the dry run completes",
     s or ctl.status("m-dry"))
rep = (s or {}).get("dry_run_report") or {}
th_div = [x for x in rep.get("thresholds", []) if x["name"] == "divergent_rows"]
t.ok("divergent_rows" in rep.get("would_trip", []) and th_div and th_div[0]["seen"] >= 1,
     "dry_run_report: divergent_rows would trip, seen >= 1", rep)
t.ok(th_div and th_div[0]["seen"] == 1, "only the row inside the where is counted", th_div)
t.ok(versions == {v_dry} and ctl.call("GET", "/migrations/m-dry/routing")[1]["version"] == v_dry,
     "a dry run never moves routing", (v_dry, versions))
code, doc = ctl.call("POST", "/migrations/m-dry/advance")
t.ok(code == 409, "advance a completed dry run: 409", (code, doc))

# ---- artifacts ----------------------------------------------------------------------------
code, art = ctl.call("GET", "/migrations/m-main/artifacts")
t.ok(code == 200 and art["manifest"]["migration_id"] == "m-main"
     and art["manifest"]["approvals"] == ["backfill"] and art["status"]["state"] == "aborted",
     "artifacts: the manifest (defaults filled in) and the status", code)
kinds = [e["kind"] for e in art.get("events", [])]
t.ok(all(k in kinds for k in ("created", "transition", "approve", "abort", "shadow_results")),
     "artifacts: every event", kinds)
t.ok(len(art.get("events", [])) == len(events("m-main")), "artifacts: the same events as /events")
vals = art.get("validations", [])
t.ok(any(v["kind"] == "gate" and v["table"] == "orders" and v["equal"] for v in vals)
     and any(v["kind"] == "aggregate" for v in vals), "artifacts: the validations",
     [(v["kind"], v["table"], v["equal"]) for v in vals])

# ---- metrics ------------------------------------------------------------------------------
code, text = ctl.call("GET", "/metrics")
t.ok(code == 200 and isinstance(text, str), "GET /metrics: text", code)
families = ["sluice_migration_phase", "sluice_migration_state",
            "sluice_migration_read_percent_target", "sluice_migration_divergent_rows",
            "sluice_migration_replication_lag_seconds", "sluice_migration_seconds_since_validation",
            "sluice_migration_aborts_total"]
lines = text.splitlines() if isinstance(text, str) else []
for mid in ("m-main", "m-bad", "m-dry"):
    missing = [f for f in families
               if not any(ln.startswith(f + "{") and f'migration="{mid}"' in ln for ln in lines)]
    t.ok(not missing, f"/metrics has the seven families for {mid}", missing)
t.ok('sluice_migration_state{migration="m-main",state="aborted"} 1' in lines
     and 'sluice_migration_aborts_total{migration="m-main"} 1' in lines
     and 'sluice_migration_phase{migration="m-main",phase="dual_write"} 1' in lines,
     "metrics values: m-main aborted once in dual_write", "\n".join(lines))
r = subprocess.run(["promtool", "check", "metrics"], input=text if isinstance(text, str) else "",
                   capture_output=True, text=True)
t.ok(r.returncode == 0, "promtool check metrics passes", r.stdout + r.stderr)
code, doc = ctl.call("GET", "/healthz")
t.ok(code == 200 and doc == {"ok": True}, "GET /healthz", (code, doc))

# ---- the spec against the server ----------------------------------------------------------
spec = json.load(open(os.path.join(REPO, "control", "openapi.json")))


def resolve(s):
    while isinstance(s, dict) and "$ref" in s:
        node = spec
        for p in s["$ref"].lstrip("#/").split("/"):
            node = node[p]
        s = node
    return s


TYPES = {"object": dict, "array": list, "string": str, "boolean": bool}


def check(v, s, path="$"):
    """Problems of v against schema s: required keys, types, enums, recursively."""
    s = resolve(s)
    if not s:
        return []
    if v is None:
        return [] if s.get("nullable") else [f"{path}: null"]
    if "oneOf" in s:
        return [] if any(not check(v, x, path) for x in s["oneOf"]) else [f"{path}: no oneOf fits"]
    out = []
    ty = s.get("type")
    if ty == "integer":
        if not isinstance(v, int) or isinstance(v, bool):
            return [f"{path}: {v!r} is not an integer"]
    elif ty == "number":
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            return [f"{path}: {v!r} is not a number"]
    elif ty and not isinstance(v, TYPES[ty]):
        return [f"{path}: {type(v).__name__} is not {ty}"]
    if "enum" in s and v not in s["enum"]:
        out.append(f"{path}: {v!r} not in {s['enum']}")
    if isinstance(v, dict):
        out += [f"{path}: no {k}" for k in s.get("required", []) if k not in v]
        for k, sub_s in s.get("properties", {}).items():
            if k in v:
                out += check(v[k], sub_s, f"{path}.{k}")
    if isinstance(v, list) and "items" in s:
        for i, x in enumerate(v):
            out += check(x, s["items"], f"{path}[{i}]")
    return out


# the validator itself finds what it is meant to find
st = ctl.status("m-bad")
t.ok(check(dict(st, phase="nowhere"), {"$ref": "#/components/schemas/Status"})
     and check({k: v for k, v in st.items() if k != "traffic"}, {"$ref": "#/components/schemas/Status"})
     and check(dict(st, gates=[{"name": "x", "ok": "yes", "detail": ""}]),
               {"$ref": "#/components/schemas/Status"})
     and check(dict(st, divergent_rows=1.5), {"$ref": "#/components/schemas/Status"})
     and not check(st, {"$ref": "#/components/schemas/Status"}),
     "the validator catches a bad enum, a missing key, a nested wrong type, a float for an integer")
ctl.call("POST", "/migrations", manifest("m-spec"))
ctl.wait("m-spec", lambda s: len(s["gates"]) > 0, timeout=20)
spec_calls = {  # a request that succeeds or is refused for its own reason
    ("POST", "/migrations"): ("/migrations", manifest("m-spec2"), OPERATOR),
    ("POST", "/migrations/{id}/advance"): ("/migrations/m-bad/advance", {}, OPERATOR),
    ("POST", "/migrations/{id}/abort"): ("/migrations/m-spec/abort", {"reason": "spec"}, OPERATOR),
    ("POST", "/migrations/{id}/approve"): ("/migrations/m-bad/approve", {}, APPROVER),
    ("POST", "/migrations/{id}/shadow-results"):
        ("/migrations/m-bad/shadow-results", {"compared": 3, "mismatched": 0}, OPERATOR),
    ("GET", "/migrations/{id}/routing"): ("/migrations/m-bad/routing?wait=1&version=1", None, None),
    ("GET", "/dashboard/{file}"): ("/dashboard/app.js", None, None),
}
spec_routes = set()
for path, item in spec["paths"].items():
    for method, op in item.items():
        if method == "parameters":
            continue
        M = method.upper()
        spec_routes.add((M, path))
        real, body, tok = spec_calls.get((M, path), (path.replace("{id}", "m-bad"), None, OPERATOR))
        tries = [("", real, body, tok)]
        if "{id}" in path:
            tries.append((" (unknown id)", path.replace("{id}", "nosuch"), body,
                          APPROVER if "approve" in path else OPERATOR))
        if M == "POST":
            tries.append((" (no token)", real, body, None))
        for label, url, b, tk in tries:
            code, doc = ctl.call(M, url, b if b is not None or M == "GET" else {}, token=tk)
            resp = op["responses"].get(str(code))
            if not t.ok(resp is not None, f"spec: {M} {path}{label} -> {code} is listed",
                        (code, doc)):
                continue
            content = resp.get("content", {})
            js = content.get("application/json")
            if js:
                probs = check(doc, js["schema"]) if isinstance(doc, dict) else ["not JSON"]
                t.ok(not probs, f"spec: {M} {path}{label} {code} fits its schema", probs)
            else:
                t.ok(isinstance(doc, str) and content, f"spec: {M} {path}{label} {code} is text", code)
server_routes = {("GET", "/migrations"), ("POST", "/migrations"), ("GET", "/migrations/{id}/status"),
                 ("POST", "/migrations/{id}/advance"), ("POST", "/migrations/{id}/abort"),
                 ("POST", "/migrations/{id}/approve"), ("GET", "/migrations/{id}/events"),
                 ("GET", "/migrations/{id}/routing"), ("POST", "/migrations/{id}/shadow-results"),
                 ("GET", "/migrations/{id}/artifacts"), ("GET", "/metrics"), ("GET", "/healthz"),
                 ("GET", "/"), ("GET", "/dashboard/{file}")}
t.ok(server_routes <= spec_routes, "every route the server answers is in the spec",
     server_routes - spec_routes)
t.ok(spec_routes <= server_routes, "every route in the spec is one the server answers",
     spec_routes - server_routes)
for mid in migration_ids():
    probs = check(ctl.status(mid), {"$ref": "#/components/schemas/Status"})
    t.ok(not probs, f"spec: the status of {mid} fits Status", probs)
for e in events("m-main"):
    probs = check(e, {"$ref": "#/components/schemas/Event"})
    if probs:
        t.ok(False, "spec: events fit Event", probs)
        break
code, doc = ctl.call("GET", "/migrations/m-main/artifacts")
t.ok(not check(doc, {"$ref": "#/components/schemas/Artifacts"}), "spec: artifacts fit Artifacts",
     check(doc, {"$ref": "#/components/schemas/Artifacts"}))
t.ok(check(manifest("m-x"), {"$ref": "#/components/schemas/Manifest"}) == [],
     "spec: a manifest fits Manifest")

# ---- restart on the same store ------------------------------------------------------------
keep = {}
for mid in migration_ids():
    s = ctl.status(mid)
    keep[mid] = (s["phase"], s["state"], s["traffic"], s["abort_reason"],
                 [(e["id"], e["kind"]) for e in events(mid)])
v = ctl.call("GET", "/migrations/m-bad/routing")[1]["version"]
th, out = long_poll("m-bad", v, 30)
time.sleep(0.5)
t0 = time.time()
rc = ctl.stop()
took = time.time() - t0
th.join()
t.ok(rc == 0, "sluice control stops on SIGTERM with 0", rc)
t.ok(took < 5, f"a pending long poll does not hold up the stop ({took:.1f} s)", out)
ctl.start()
after = migration_ids()
t.ok(after == sorted(keep), "after a restart: the same migrations", (after, sorted(keep)))
for mid, (ph, st, tr, ar, ev) in keep.items():
    s = ctl.status(mid)
    ev2 = [(e["id"], e["kind"]) for e in events(mid)]
    t.ok(isinstance(s, dict) and (s.get("phase"), s.get("state"), s.get("traffic"),
                                  s.get("abort_reason")) == (ph, st, tr, ar)
         and ev2[:len(ev)] == ev, f"after a restart: {mid} has its phase, state and events",
         (s, ev, ev2))
rc = ctl.stop()
log = ctl.log_text()
t.ok(rc == 0 and "Sanitizer" not in log and "runtime error" not in log,
     "no sanitizer report in sluice control's log", log[-3000:])
t.diag(f"took {time.time() - T0:.1f} s")
t.done()
