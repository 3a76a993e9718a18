#!/usr/bin/python3
"""The dashboard page, served by the real `sluice control` beside a real
cluster, renders in a real headless Chromium: the migrations list, the
selected migration's phase, state and gates, the divergence/lag chart drawn
on the canvas (one point per history sample), the audit log newest first,
?id= selecting another migration, text from the server shown as text (never
as HTML: a table named like an <img> tag ends up in a failing gate's
detail), no external URL in the page, and a screenshot."""
import html.parser
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
import control_env  # noqa: E402
from harness import Tap  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DASH = os.path.join(ROOT, "control", "dashboard")
CHROMIUM = "/usr/bin/chromium"

# A table name carrying HTML (no quotes: the manifest refuses them), schema-
# qualified by a schema that does not exist: the prepare gates fail and their
# detail carries the schema name (XSS) back to the page.
XSS = "<img src=x id=injected onerror=x=1>"
XSS_TABLE = XSS + ".orders"


def sqlite_db(path):
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE orders(id integer primary key, total numeric)")
    c.executemany("INSERT INTO orders VALUES (?, ?)", [(i, i * 2.5) for i in range(1, 201)])
    c.commit()
    c.close()
    return "sqlite:" + path


def manifest(mid, table):
    return {"migration_id": mid, "scope": {"source": "old", "target": "new", "tables": [table]},
            "cutover": {"steps": [50, 100], "soak_seconds": 1}, "metrics": {"sample_every": "1s"}}


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read()


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
tmp = tempfile.mkdtemp(prefix="sluice-dash-")
try:
    dbs = {"old": sqlite_db(os.path.join(tmp, "old.db")),
           "new": sqlite_db(os.path.join(tmp, "new.db"))}
    cluster = control_env.cluster_for(dbs, workers=1)
    control = control_env.Control(dbs, cluster=cluster)
    base = control.base

    code, doc = control.call("POST", "/migrations", manifest("dash-1", "orders"))
    t.ok(code == 201, "POST /migrations creates dash-1", (code, doc))
    code, doc = control.call("POST", "/migrations", manifest("xss-1", XSS_TABLE))
    t.ok(code == 201, "a table name carrying HTML is accepted into a manifest", (code, doc))
    adv = control.advance("dash-1", timeout=20)
    t.ok(isinstance(adv, dict) and adv.get("phase") == "backfill",
         "dash-1 advances to backfill once the prepare gates pass", adv)
    st = control.wait("dash-1", lambda s: len(s.get("history") or []) >= 3 and s.get("gates"),
                      timeout=20)
    t.ok(st is not None, "dash-1 has >= 3 history points and evaluated gates",
         control.status("dash-1"))
    st = st or control.status("dash-1")
    xs = control.wait("xss-1", lambda s: any(XSS in g.get("detail", "") for g in s.get("gates", [])),
                      timeout=20)
    t.ok(xs is not None, "xss-1's failing prepare gate carries the table name in its detail",
         control.status("xss-1"))
    events = control.call("GET", "/migrations/dash-1/events")[1].get("events", [])
    t.ok({"created", "gate", "transition"} <= {e["kind"] for e in events},
         "dash-1's audit log has created, gate and transition events",
         [e["kind"] for e in events])

    # the static files as the server serves them
    ctypes = {}
    for path, want in (("/", "text/html"), ("/dashboard/app.js", "text/javascript"),
                       ("/dashboard/style.css", "text/css")):
        code, ctype, data = get(base + path)
        ctypes[path] = (code, ctype, len(data))
    t.ok(all(c == 200 and ct.startswith(w) and n > 0 for (c, ct, n), w in
             zip(ctypes.values(), ("text/html", "text/javascript", "text/css"))),
         "/, /dashboard/app.js and /dashboard/style.css are served with their types", ctypes)
    escapes = {}
    for path in ("/dashboard/../ctl.c", "/dashboard/%2e%2e/README.md", "/dashboard/.hidden",
                 "/dashboard/nope.js"):
        try:
            escapes[path] = get(base + path)[0]
        except urllib.error.HTTPError as e:
            escapes[path] = e.code
    t.ok(all(c == 404 for c in escapes.values()),
         "nothing outside the dashboard directory is served", escapes)

    r = chromium(base + "/", os.path.join(tmp, "p1"), "--dump-dom")
    t.ok(r.returncode == 0 and "<body" in r.stdout, "chromium dumps the page's DOM",
         f"exit {r.returncode}\n{r.stderr[-2000:]}")
    dom = Dom(r.stdout)
    t.ok(dom.text("phase") == "backfill", "#phase shows the first migration's phase",
         repr(dom.text("phase")))
    t.ok(dom.text("state") == "running", "#state shows its state", repr(dom.text("state")))
    rows = dom.find_all(dom.ids.get("migrations", {}), "tr")
    ids = [row["attrs"].get("data-id") for row in rows if row["attrs"].get("data-id")]
    t.ok(ids == ["dash-1", "xss-1"], "#migrations lists both migrations", ids)
    mig = dom.text("migrations")
    want = f"{st['classification']} / {st['strategy']}"
    t.ok("0 %" in mig and want in mig and "running" in mig,
         f"the list shows traffic %, classification/strategy ({want}) and state", mig)
    gates = dom.text("gates")
    names = [g["name"] for g in st["gates"]]
    t.ok(names and all(n in gates for n in names) and all(g["detail"] in gates for g in st["gates"]),
         f"#gates lists each gate with its detail ({', '.join(names)})", gates)
    gate_rows = {row["attrs"].get("data-gate"): row["text"]
                 for row in dom.find_all(dom.ids.get("gates", {}), "tr")}
    t.ok(all(("ok" if g["ok"] else "failing") in gate_rows.get(g["name"], "") for g in st["gates"]),
         "each gate shows ok or failing as the status says", gate_rows)
    t.ok(dom.body.get("data-chart") == "drawn", "body has data-chart=\"drawn\"", dom.body)
    pts = dom.ids.get("chart", {}).get("attrs", {}).get("data-points")
    t.ok(pts is not None and pts.isdigit() and int(pts) >= 3,
         "the chart drew the history samples (>= 3)", f"data-points={pts!r}")
    ev = dom.find_all(dom.ids.get("events", {}), "li")
    shown = [int(e["attrs"].get("data-id", "0")) for e in ev]
    t.ok(len(shown) >= len(events) and shown == sorted(shown, reverse=True),
         "#events lists the audit log newest first", shown)
    evtext = dom.text("events")
    t.ok("transition" in evtext and "operator" in evtext and "backfill" in evtext,
         "an event's actor, kind and phase are shown", evtext[:1500])
    t.ok(dom.ids.get("abort", {}).get("tag") == "button" and
         "disabled" not in dom.ids["abort"]["attrs"],
         "#abort is an enabled button for a running migration")
    polls = int(dom.body.get("data-polls", "0") or 0)
    t.ok(polls >= 2, f"the page polls the API again within 5 s ({polls} polls)", dom.body)

    r2 = chromium(base + "/?id=xss-1", os.path.join(tmp, "p2"), "--dump-dom")
    dom2 = Dom(r2.stdout)
    t.ok(dom2.text("phase") == "prepare" and dom2.text("selected-id") == "xss-1",
         "?id= selects another migration", (dom2.text("phase"), dom2.text("selected-id")))
    gates2 = dom2.text("gates")
    t.ok("tables_present" in gates2 and "failing" in gates2 and "aggregates_match" not in gates2,
         "its gates are its own", gates2)
    t.ok(XSS in gates2 and not any(a.get("id") == "injected" for _, a in dom2.tags)
         and "<img" not in r2.stdout,
         "server text is shown as text, never parsed as HTML", gates2)

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

    rc = control.stop()
    t.ok(rc == 0, f"sluice control stops cleanly on SIGTERM (exit {rc})", control.log_text()[-2000:])
finally:
    shutil.rmtree(tmp, ignore_errors=True)
t.done()
