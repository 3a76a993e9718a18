#!/usr/bin/python3
"""The dashboard page renders in a real headless Chromium: the migrations
list, the selected migration's phase, state and gates, the divergence/lag
chart drawn on the canvas (one point per history sample), the audit log
newest first, ?id= selecting another migration, text from the server shown
as text (never as HTML), no external URL in the page, and a screenshot.

start_server() returns the base URL the page is loaded from. For now it is
a fixture of the page's inputs (see FIXTURE SERVER below); when `sluice
control` serves the dashboard, start_server() starts it instead and the
checks stay as they are."""
import html.parser
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(__file__))
from harness import Tap  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DASH = os.path.join(ROOT, "control", "dashboard")
CHROMIUM = "/usr/bin/chromium"

XSS = '<img src=x id="injected" onerror="document.body.dataset.pwned=1">'


def status_doc(mid, phase, state, gates, history, pct, writes):
    """A status document shaped as control/README.md describes it."""
    return {
        "migration_id": mid, "phase": phase, "state": state,
        "classification": "data-move", "classification_reason": "engine change",
        "strategy": "cdc", "dry_run": False,
        "traffic": {"read_percent_target": pct, "writes": writes, "reads": "target"},
        "cutover_step": 2, "in_window": True, "gates": gates,
        "divergent_rows": history[-1]["divergent_rows"] if history else 0,
        "replication_lag_seconds": history[-1]["lag"] if history else 0,
        "last_validation": {"job": 41, "kind": "sample", "table": "orders",
                            "finished_at": "2026-12-07T15:02:11Z", "equal": True},
        "seconds_since_validation": 3.1,
        "shadow": {"compared": 1000, "mismatched": 0, "ratio": 0.0},
        "abort_reason": None, "detection_seconds": None, "rollback_seconds": None,
        "aborts": 0, "created_at": "2026-12-07T14:00:00Z", "updated_at": "2026-12-07T15:02:20Z",
        "history": history,
    }


HISTORY = [{"at": f"2026-12-07T15:0{i}:00Z", "divergent_rows": d, "lag": lag}
           for i, (d, lag) in enumerate([(0, 0.4), (3, 1.2), (12, 4.0), (2, 0.9), (0, 0.3)])]
MIGRATIONS = {
    "orders-to-pg16": status_doc(
        "orders-to-pg16", "cutover", "running",
        [{"name": "lag_under_threshold", "ok": True, "detail": "0.4 s <= 30 s"},
         {"name": "no_divergence", "ok": False, "detail": XSS}],
        HISTORY, 25, "source"),
    "users-split": status_doc(
        "users-split", "backfill", "waiting_approval",
        [{"name": "schema_matches", "ok": True, "detail": "12 columns"}],
        HISTORY[:2], 0, "source"),
}
EVENTS = {
    "orders-to-pg16": [
        {"id": 1, "at": "2026-12-07T14:00:00Z", "actor": "alice", "kind": "created",
         "phase": "plan", "detail": "manifest accepted"},
        {"id": 2, "at": "2026-12-07T14:10:00Z", "actor": "runner", "kind": "advance",
         "phase": "backfill", "detail": "gates passed"},
        {"id": 3, "at": "2026-12-07T15:00:00Z", "actor": "bob", "kind": "approve",
         "phase": "cutover", "detail": "step 2 approved"},
    ],
    "users-split": [
        {"id": 7, "at": "2026-12-07T14:00:00Z", "actor": "carol", "kind": "created",
         "phase": "plan", "detail": "manifest accepted"},
    ],
}


# FIXTURE SERVER: replace with sluice control when it lands
class FixtureHandler(BaseHTTPRequestHandler):
    requested = []

    def log_message(self, *a):
        pass

    def send(self, code, body, ctype):
        data = body if isinstance(body, bytes) else body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        FixtureHandler.requested.append(path)
        files = {"/": "index.html", "/dashboard/app.js": "app.js",
                 "/dashboard/style.css": "style.css"}
        types = {"html": "text/html; charset=utf-8", "js": "text/javascript",
                 "css": "text/css"}
        if path in files:
            name = files[path]
            with open(os.path.join(DASH, name), "rb") as f:
                return self.send(200, f.read(), types[name.rsplit(".", 1)[1]])
        if path == "/migrations":
            return self.send(200, json.dumps({"migrations": list(MIGRATIONS.values())}),
                             "application/json")
        m = re.fullmatch(r"/migrations/([^/]+)/(status|events)", path)
        if m and m.group(1) in MIGRATIONS:
            doc = (MIGRATIONS[m.group(1)] if m.group(2) == "status"
                   else {"events": EVENTS[m.group(1)]})
            return self.send(200, json.dumps(doc), "application/json")
        self.send(404, json.dumps({"error": "no such thing", "code": "not_found"}),
                  "application/json")


def start_server():
    """The base URL of a server serving the dashboard and the API."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FixtureHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{srv.server_address[1]}"


class Dom(html.parser.HTMLParser):
    """Text and attributes of every element with an id, and of body; the
    tags seen (to catch an element that should have been text)."""
    VOID = {"meta", "link", "br", "img", "input", "hr", "source", "wbr", "area", "base", "col"}

    def __init__(self, doc):
        super().__init__()
        self.stack, self.ids, self.tags, self.body = [], {}, [], {}
        self.feed(doc)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "body":
            self.body = a
        if tag in self.VOID:
            return
        el = {"tag": tag, "attrs": a, "text": "", "children": []}
        if self.stack:
            self.stack[-1]["children"].append(el)
        if "id" in a:
            self.ids[a["id"]] = el
        self.stack.append(el)

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i]["tag"] == tag:
                del self.stack[i:]
                break

    def handle_data(self, data):
        for el in self.stack:
            el["text"] += data

    def text(self, id_):
        return self.ids.get(id_, {}).get("text", "").strip()

    def find_all(self, el, tag):
        out = []
        for c in el.get("children", []):
            if c["tag"] == tag:
                out.append(c)
            out.extend(self.find_all(c, tag))
        return out


def chromium(url, profile, *extra):
    cmd = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
           f"--user-data-dir={profile}", "--virtual-time-budget=5000", *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


t = Tap()
base = start_server()
tmp = tempfile.mkdtemp(prefix="sluice-dash-")
try:
    r = chromium(base + "/", os.path.join(tmp, "p1"), "--dump-dom")
    t.ok(r.returncode == 0 and "<body" in r.stdout, "chromium dumps the page's DOM",
         f"exit {r.returncode}\n{r.stderr[-2000:]}")
    dom = Dom(r.stdout)
    t.ok(dom.text("phase") == "cutover", "#phase shows the first migration's phase",
         repr(dom.text("phase")))
    t.ok(dom.text("state") == "running", "#state shows its state", repr(dom.text("state")))
    rows = dom.find_all(dom.ids.get("migrations", {}), "tr")
    ids = [row["attrs"].get("data-id") for row in rows if row["attrs"].get("data-id")]
    t.ok(ids == ["orders-to-pg16", "users-split"], "#migrations lists both migrations", ids)
    mig = dom.text("migrations")
    t.ok("25 %" in mig and "data-move / cdc" in mig and "waiting_approval" in mig,
         "the list shows traffic %, classification/strategy and state", mig)
    gates = dom.text("gates")
    t.ok("lag_under_threshold" in gates and "no_divergence" in gates and "0.4 s <= 30 s" in gates,
         "#gates lists each gate with its detail", gates)
    gate_rows = {row["attrs"].get("data-gate"): row["text"]
                 for row in dom.find_all(dom.ids.get("gates", {}), "tr")}
    t.ok("ok" in gate_rows.get("lag_under_threshold", "") and
         "failing" in gate_rows.get("no_divergence", ""),
         "a passing and a failing gate are told apart", gate_rows)
    t.ok(dom.body.get("data-chart") == "drawn", "body has data-chart=\"drawn\"", dom.body)
    pts = dom.ids.get("chart", {}).get("attrs", {}).get("data-points")
    t.ok(pts == str(len(HISTORY)), f"the chart drew the {len(HISTORY)} history samples",
         f"data-points={pts!r}")
    ev = dom.find_all(dom.ids.get("events", {}), "li")
    kinds = [e["attrs"].get("data-id") for e in ev]
    t.ok(kinds == ["3", "2", "1"], "#events lists the audit log newest first", kinds)
    t.ok("step 2 approved" in dom.text("events") and "bob" in dom.text("events"),
         "an event's actor and detail are shown", dom.text("events"))
    t.ok(XSS in gates and not any(a.get("id") == "injected" for _, a in dom.tags)
         and "data-pwned" not in r.stdout,
         "server text is shown as text, never parsed as HTML")
    t.ok(dom.ids.get("abort", {}).get("tag") == "button" and
         "disabled" not in dom.ids["abort"]["attrs"],
         "#abort is an enabled button for a running migration")
    t.ok("/dashboard/app.js" in FixtureHandler.requested and
         "/dashboard/style.css" in FixtureHandler.requested and
         "/migrations" in FixtureHandler.requested and
         "/migrations/orders-to-pg16/events" in FixtureHandler.requested,
         "the page loads /dashboard/app.js, /dashboard/style.css and polls the API",
         sorted(set(FixtureHandler.requested)))
    polls = FixtureHandler.requested.count("/migrations")
    t.ok(polls >= 2, f"it polls /migrations again within 5 s ({polls} times)")

    r2 = chromium(base + "/?id=users-split", os.path.join(tmp, "p2"), "--dump-dom")
    dom2 = Dom(r2.stdout)
    t.ok(dom2.text("phase") == "backfill" and dom2.text("state") == "waiting_approval",
         "?id= selects another migration", (dom2.text("phase"), dom2.text("state")))
    t.ok(dom2.ids.get("chart", {}).get("attrs", {}).get("data-points") == "2" and
         "schema_matches" in dom2.text("gates") and "carol" in dom2.text("events"),
         "its chart, gates and events are its own")

    external = []
    for name in ("index.html", "app.js", "style.css"):
        with open(os.path.join(DASH, name)) as f:
            external += [f"{name}: {u}" for u in re.findall(r"(?:https?:)?//[\w.-]+\.\w+", f.read())]
    t.ok(not external, "no external URL in the dashboard files (no CDN)", external)

    shot = os.path.join(tmp, "shot.png")
    r3 = chromium(base + "/", os.path.join(tmp, "p3"), f"--screenshot={shot}",
                  "--window-size=1280,1000")
    size = os.path.getsize(shot) if os.path.exists(shot) else 0
    with open(shot, "rb") if size else open(os.devnull, "rb") as f:
        magic = f.read(8)
    t.ok(r3.returncode == 0 and magic == b"\x89PNG\r\n\x1a\n" and size > 10000,
         f"--screenshot writes a PNG ({size} bytes, outside the repo)", r3.stderr[-1500:])
finally:
    shutil.rmtree(tmp, ignore_errors=True)
t.done()
