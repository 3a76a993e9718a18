#!/usr/bin/python3
"""sluice control --webhook against a real HTTP receiver (a thread here):
every audit event of a real migration (two SQLite databases, a real
cluster) arrives as JSON with migration_id, at, actor, kind, phase and
detail, in the order of the audit log; a delivery answered 500 is tried
again; a receiver that takes 3 s per request never slows the API down.
Then GET /metrics from the same server passes `promtool check metrics` and
has the seven families, each with the migration's label."""
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(__file__))
import control_env  # noqa: E402
from harness import Tap  # noqa: E402

MID = "hook-1"


class Hook:
    """Records every POST body; answers 500 to the first request, 200 after,
    each after `delay` seconds."""

    def __init__(self):
        self.lock = threading.Lock()
        self.got = []  # (time received, path, status answered, parsed body or raw text)
        self.delay = 0.0
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n).decode("utf-8", "replace")
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw
                with hook.lock:
                    status = 500 if not hook.got else 200
                    hook.got.append((time.time(), self.path, status, body,
                                     self.headers.get("Content-Type", "")))
                    delay = hook.delay
                time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.srv.daemon_threads = True
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/hook"

    def bodies(self):
        with self.lock:
            return list(self.got)

    def wait(self, cond, timeout):
        end = time.time() + timeout
        while time.time() < end:
            if cond(self.bodies()):
                return True
            time.sleep(0.1)
        return False


def sqlite_db(path):
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE orders(id integer primary key, total numeric)")
    c.executemany("INSERT INTO orders VALUES (?, ?)", [(i, i * 2.5) for i in range(1, 201)])
    c.commit()
    c.close()
    return "sqlite:" + path


def delivered(got):
    """The distinct events as delivered with a 2xx, in order."""
    return [g[3] for g in got if g[2] == 200]


ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
FAMILIES = ["sluice_migration_phase", "sluice_migration_state",
            "sluice_migration_read_percent_target", "sluice_migration_divergent_rows",
            "sluice_migration_replication_lag_seconds",
            "sluice_migration_seconds_since_validation", "sluice_migration_aborts_total"]

t = Tap()
tmp = tempfile.mkdtemp(prefix="sluice-hook-")
try:
    hook = Hook()
    dbs = {"old": sqlite_db(os.path.join(tmp, "old.db")),
           "new": sqlite_db(os.path.join(tmp, "new.db"))}
    cluster = control_env.cluster_for(dbs, workers=1)
    control = control_env.Control(dbs, cluster=cluster, extra=["--webhook", hook.url])

    man = {"migration_id": MID, "scope": {"source": "old", "target": "new", "tables": ["orders"]},
           "cutover": {"steps": [50, 100], "soak_seconds": 1}, "metrics": {"sample_every": "1s"}}
    code, doc = control.call("POST", "/migrations", man)
    t.ok(code == 201, "POST /migrations creates the migration", (code, doc))
    adv = control.advance(MID, timeout=20)
    t.ok(isinstance(adv, dict) and adv.get("phase") == "backfill", "it advances to backfill", adv)

    # every event so far delivered (the first after a 500 and a retry)
    def caught_up(got):
        log = control.call("GET", f"/migrations/{MID}/events")[1].get("events", [])
        return len(delivered(got)) >= len(log) > 0
    t.ok(hook.wait(caught_up, 20), "the receiver catches up with the audit log",
         [(g[2], g[3].get("kind") if isinstance(g[3], dict) else g[3]) for g in hook.bodies()])
    got = hook.bodies()
    t.ok(len(got) >= 2 and got[0][2] == 500 and got[1][2] == 200 and got[0][3] == got[1][3],
         "the delivery answered 500 is tried again with the same body",
         [(g[2], g[3]) for g in got[:2]])
    t.ok(len(got) >= 2 and got[1][0] - got[0][0] >= 0.3,
         f"the retry waits for its backoff ({got[1][0] - got[0][0]:.2f} s after the 500)"
         if len(got) >= 2 else "the retry waits for its backoff")
    t.ok(all(g[1] == "/hook" and g[4].startswith("application/json") for g in got),
         "each is a POST to the URL's path with Content-Type application/json",
         [(g[1], g[4]) for g in got])

    # a slow receiver: 3 s a request. Advance (its events keep the webhook
    # busy for seconds), then abort while they are being delivered: the API
    # answers at once regardless.
    ready = control.wait(MID, lambda s: s["gates"] and all(g["ok"] for g in s["gates"]), 20)
    t.ok(ready is not None, "the backfill gates pass", control.status(MID))
    with hook.lock:
        hook.delay = 3.0
    n_before = len(hook.bodies())
    t0 = time.time()
    code, doc = control.call("POST", f"/migrations/{MID}/advance", timeout=30)
    took_adv = time.time() - t0
    t.ok(code == 200 and doc.get("phase") == "dual_write", "it advances to dual_write", (code, doc))
    t.ok(hook.wait(lambda g: len(g) > n_before, 5), "the advance's events reach the slow receiver")
    t0 = time.time()
    code, doc = control.call("POST", f"/migrations/{MID}/abort",
                             {"reason": "webhook test: stop here"}, timeout=30)
    took = time.time() - t0
    t.ok(code == 200 and doc.get("state") == "aborted", "POST /abort aborts", (code, doc))
    t0 = time.time()
    code2, st = control.call("GET", f"/migrations/{MID}/status", timeout=30)
    took2 = time.time() - t0
    busy = len(hook.bodies()) - n_before
    t.ok(took_adv < 1.0, f"POST /advance answers in < 1 s with a slow webhook ({took_adv:.3f} s)")
    t.ok(took < 1.0, f"POST /abort answers in < 1 s while a 3 s delivery is under way "
         f"({took:.3f} s, {busy} request(s) in flight or done)")
    t.ok(code2 == 200 and took2 < 1.0,
         f"GET /status answers in < 1 s during a 3 s delivery ({took2:.3f} s)")

    log = control.call("GET", f"/migrations/{MID}/events")[1].get("events", [])
    t.ok(hook.wait(lambda g: len(delivered(g)) >= len(log), 30),
         "every event, the abort too, is delivered", [e["kind"] for e in log])
    evs = delivered(hook.bodies())
    kinds = [e.get("kind") for e in evs if isinstance(e, dict)]
    t.ok({"created", "gate", "transition", "abort"} <= set(kinds),
         "created, gate, transition and abort events arrive", kinds)
    keys = {"migration_id", "at", "actor", "kind", "phase", "detail"}
    bad = [e for e in evs if not (isinstance(e, dict) and keys <= set(e) and
                                  e["migration_id"] == MID and ISO.match(str(e["at"])) and
                                  e["actor"] and e["phase"])]
    t.ok(not bad, "each has migration_id, at (ISO 8601 UTC), actor, kind, phase and detail", bad)
    t.ok([(e.get("kind"), e.get("phase"), e.get("actor")) for e in evs] ==
         [(e["kind"], e["phase"], e["actor"]) for e in log],
         "they arrive once each, in the audit log's order, and match it",
         json.dumps([[e.get("kind") for e in evs], [e["kind"] for e in log]]))
    t.ok(all(a.get("detail") == b["detail"] for a, b in zip(evs, log)),
         "each detail is the audit log's detail")
    ab = [e for e in evs if e.get("kind") == "abort"]
    t.ok(len(ab) == 1 and ab[0]["actor"] == "operator" and
         "webhook test: stop here" in json.dumps(ab[0]["detail"]),
         "the abort event carries the operator and the reason", ab)
    cr = [e for e in evs if e.get("kind") == "created"]
    t.ok(cr and cr[0]["phase"] == "prepare" and cr[0]["actor"] == "operator",
         "the created event: actor operator, phase prepare", cr)

    # metrics from the same server
    code, text = control.call("GET", "/metrics", token=None)
    t.ok(code == 200 and isinstance(text, str), "GET /metrics answers", code)
    text = text if isinstance(text, str) else ""
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    t.ok(r.returncode == 0, "promtool check metrics passes", (r.stdout + r.stderr)[-2000:])
    missing = []
    for fam in FAMILIES:
        if not re.search(rf"^# TYPE {fam} (gauge|counter)$", text, re.M) or \
           not re.search(rf'^{fam}\{{[^}}]*migration="{MID}"[^}}]*\}} \S+$', text, re.M):
            missing.append(fam)
    t.ok(not missing, "the seven families appear with migration=\"%s\"" % MID, missing or text)
    unlabelled = [ln for ln in text.splitlines()
                  if ln and not ln.startswith("#") and f'migration="{MID}"' not in ln]
    t.ok(not unlabelled, "every series carries the migration label", unlabelled)

    def value(pattern):
        m = re.search(pattern + r" (\S+)$", text, re.M)
        return float(m.group(1)) if m else None
    t.ok(value(rf'sluice_migration_state\{{migration="{MID}",state="aborted"\}}') == 1 and
         value(rf'sluice_migration_aborts_total\{{migration="{MID}"\}}') == 1,
         "after the abort: state aborted is 1 and aborts_total is 1", text)

    rc = control.stop()
    t.ok(rc == 0, f"sluice control stops cleanly on SIGTERM (exit {rc})", control.log_text()[-2000:])
finally:
    shutil.rmtree(tmp, ignore_errors=True)
t.done()
