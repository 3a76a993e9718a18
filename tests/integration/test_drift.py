#!/usr/bin/python3
"""Drift history: every finished audit writes a drift row (table, time,
rows checked, confirmed divergences by kind, transient differences, the
detection latency's percentiles) to the coordinator's control database;
`sluice drift` prints them (text and JSON, per table, since a time) and
`sluice coordinator --metrics` serves the newest row of each table as
Prometheus metrics, which `promtool check metrics` accepts. Bad input:
one line, exit 2, nothing created."""
import json
import os
import subprocess
import sys
import time
import urllib.request

from cluster import Cluster
from harness import PgServer, Tap, free_port, sluice

t = Tap()
src, dst = PgServer(), PgServer()
for s in (src, dst):
    s.createdb("shop")
    cur = s.connect("shop").cursor()
    cur.execute("CREATE TABLE orders(id int PRIMARY KEY, total numeric(12,2), note text)")
    cur.execute("INSERT INTO orders SELECT g, g / 4.0, 'n' || g FROM generate_series(1, 1000) g")
    cur.execute('CREATE TABLE "Items ""q"""(id int PRIMARY KEY, name text)')
    cur.execute('INSERT INTO "Items ""q""" SELECT g, \'i\' || g FROM generate_series(1, 50) g')
cur = dst.connect("shop").cursor()
cur.execute("UPDATE orders SET note = 'x' WHERE id IN (10, 500, 990)")
cur.execute("DELETE FROM orders WHERE id = 7")
cur.execute("INSERT INTO orders VALUES (5000, 1, 'extra')")

mport = free_port()
cl = Cluster({"src": src.dsn("shop"), "dst": dst.dsn("shop")})
cl.start_coordinator(extra=("--metrics", f"127.0.0.1:{mport}"))
cl.start_worker()
t.ok(cl.wait_workers(1), "a worker joined")
jobs = [cl.submit("src", "dst", "--table", "orders"), cl.submit("src", "dst", "--table", 'Items "q"')]
for j in jobs:
    s = cl.wait_state(j) if j else None
    t.ok(s is not None and s["state"] == "done", f"job {j} done", s)
state = "sqlite:" + cl.state

code, out, err = sluice("drift", "--state", state, "--table", "orders")
lines = out.splitlines()
t.ok(code == 0 and len(lines) == 3 and lines[0].startswith("at (UTC)"),
     "sluice drift --table orders: a header, one row, a closing line", out + err)
t.ok(lines[-1] == "1 drift rows for table orders: 1001 rows checked, 5 confirmed divergent, "
     "0 transient", "the closing line says what was printed", lines[-1:])
code, out, err = sluice("drift", "--state", state, "--json")
rows = json.loads(out) if code == 0 else []
t.ok(len(rows) == 2, "--json: every table's row", out + err)
o = next((r for r in rows if r["table"] == "orders"), {})
t.ok(o.get("kind") == "audit" and o.get("job") == jobs[0] and o.get("rows_checked") == 1001
     and (o.get("missing"), o.get("extra"), o.get("changed"), o.get("schema")) == (1, 1, 3, 0),
     "orders: an audit row, 1,001 rows checked, 1 missing, 1 extra, 3 changed", o)
lat = (o.get("latency_p50"), o.get("latency_p99"), o.get("latency_max"))
t.ok(all(isinstance(x, float) and 0 <= x < 60 for x in lat) and lat[0] <= lat[1] <= lat[2],
     f"orders: detection latency p50 <= p99 <= max, in seconds: {lat}")
i = next((r for r in rows if r["table"] == 'Items "q"'), {})
t.ok(i.get("rows_checked") == 50 and i.get("changed") == 0 and i.get("latency_p50") is None,
     "an exact table: 50 rows checked, no latency to report", i)
code, out, err = sluice("drift", "--state", state, "--since", "1h")
t.ok(code == 0 and "2 drift rows in the period asked" in out, "--since 1h: both", out)
time.sleep(1.1)
code, out, err = sluice("drift", "--state", state, "--since", "1s", "--json")
t.ok(code == 0 and json.loads(out) == [], "--since 1s, a second later: none", out)

with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10) as r:
    ctype, text = r.headers.get("Content-Type"), r.read().decode()
t.ok(ctype.startswith("text/plain; version=0.0.4"), "metrics: the text format's type", ctype)
want = ['sluice_drift_divergent_rows{table="orders",kind="audit",class="changed"} 3',
        'sluice_drift_divergent_rows{table="orders",kind="audit",class="missing"} 1',
        'sluice_drift_rows_checked{table="orders",kind="audit"} 1001',
        'sluice_drift_rows_checked{table="Items \\"q\\"",kind="audit"} 50',
        'sluice_drift_detection_latency_seconds{table="orders",kind="audit",stat="p99"} ']
t.ok(all(w in text for w in want), "metrics: the newest row of each table, labels escaped",
     text)
t.ok('sluice_drift_detection_latency_seconds{table="Items' not in text,
     "metrics: no latency sample for a table without divergence")
p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
t.ok(p.returncode == 0, "promtool check metrics accepts it", p.stdout + p.stderr)
try:
    urllib.request.urlopen(f"http://127.0.0.1:{mport}/nope", timeout=10)
    code404 = 200
except urllib.error.HTTPError as e:
    code404 = e.code
t.ok(code404 == 404, "another path: 404")

# bad input: one line, exit 2, nothing created
missing = os.path.join(cl.dir, "none.db")
code, out, err = sluice("drift", "--state", "sqlite:" + missing)
t.ok(code == 2 and err.count("\n") == 1 and "no control database at sqlite:" in err
     and not os.path.exists(missing), "a missing control database: exit 2, not created", err)
for args, word in ((["--since", "soon"], "--since"), (["--bogus"], "unknown"),
                   (["extra"], "unexpected argument")):
    code, out, err = sluice("drift", "--state", state, *args)
    t.ok(code == 2 and err.count("\n") == 1 and word in err, f"drift {args}: exit 2, one line",
         err)
code, out, err = sluice("drift", "--state", dst.dsn("nodb"))
t.ok(code == 2 and err.count("\n") == 1 and dst.PASSWORD not in err,
     "an unreachable PostgreSQL --state: one line without the password", err)
code, out, err = sluice("coordinator", "--state", state + "2", "--metrics", "localhost",
                        "--workers-endpoint", f"tcp://127.0.0.1:{free_port()}",
                        "--clients-endpoint", f"tcp://127.0.0.1:{free_port()}",
                        "--events-endpoint", f"tcp://127.0.0.1:{free_port()}")
t.ok(code == 2 and "--metrics wants HOST:PORT" in err, "--metrics without a port: exit 2", err)
t.ok(not cl.sanitizer_reports(), "no sanitizer report")
sys.exit(t.done())
