#!/usr/bin/python3
"""bench/loadgen.py against a real PostgreSQL server: a clean run checks
every acknowledged write (lost 0); rows deleted or changed behind its back
before the check are counted, exactly, as lost writes (exit 1); a server
restarted mid-run costs retries, not writes; SIGTERM ends a run cleanly; a bad connection string is
one line, exit 2, and no password."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from harness import PgServer, Tap

HERE = os.path.dirname(os.path.abspath(__file__))
LOADGEN = os.path.join(HERE, "..", "..", "bench", "loadgen.py")
TABLE = "loadgen_orders"

t = Tap()
pg = PgServer()
pg.createdb("shop")
DSN = pg.dsn("shop")
tmp = tempfile.mkdtemp(prefix="sluice-loadgen-")


def loadgen(*args, background=False):
    cmd = [LOADGEN, "--write-dsn", DSN, "--table", TABLE] + list(args)
    if background:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout, r.stderr


def summary(out):
    try:
        return json.loads(out)
    except ValueError:
        return {}


def run_rows(tag):
    cur = pg.connect("shop").cursor()
    cur.execute(f"SELECT id, val FROM {TABLE} WHERE id >= %s AND id < %s",
                (tag << 40, (tag + 1) << 40))
    return dict(cur.fetchall())


# 1. a clean run: 4 clients, 200 writes/s, 5 s
ledger = os.path.join(tmp, "ledger.json")
code, out, err = loadgen("--create-table", "--clients", "4", "--rate", "200", "--duration", "5",
                         "--read-dsn", DSN, "--json", "--ledger", ledger)
doc = summary(out)
t.ok(code == 0, "a clean run exits 0", f"exit {code}\n{err[-2000:]}")
t.ok("lost writes: 0" in err.splitlines(), "it says lost writes: 0", err[-1000:])
t.ok(doc.get("lost_writes") == 0 and len(doc.get("check", [])) == 1,
     "the summary's check: one database, lost 0", doc.get("check"))
t.ok(doc.get("acked", 0) > 500 and doc.get("inserts", 0) > 0 and doc.get("updates", 0) > 0
     and doc.get("deletes", 0) > 0,
     "over 500 writes acknowledged: inserts, updates and deletes",
     {k: doc.get(k) for k in ("acked", "inserts", "updates", "deletes")})
t.ok(doc.get("acked") == doc.get("inserts", 0) + doc.get("updates", 0) + doc.get("deletes", 0)
     and 150 <= doc.get("writes_per_s", 0) <= 210,
     "the rate is near the target, the counts add up", doc.get("writes_per_s"))
t.ok(doc.get("retries") == 0 and doc.get("unknown") == 0 and doc.get("reads", 0) > 0
     and doc.get("latency_ms", {}).get("p99", -1) >= 0 and doc.get("max_pause_s", -1) >= 0,
     "no retries, no unknown outcome, reads done, latency and pause reported",
     {k: doc.get(k) for k in ("retries", "unknown", "reads", "latency_ms", "max_pause_s")})
led = json.load(open(ledger))
rows = run_rows(doc.get("run", 0))
present = {int(k): v for k, v in led["acked"].items() if v is not None}
t.ok(rows == present and len(present) > 0,
     "the ledger agrees with the database row for row (read here, not by the generator)",
     f"{len(rows)} rows, {len(present)} acknowledged present")
t.ok(any(v is None for v in led["acked"].values()), "the ledger holds acknowledged deletes")

# 2. rows deleted (and changed, and brought back) behind its back before the check
cur = pg.connect("shop").cursor()
victims = sorted(present)[:7]
cur.execute(f"DELETE FROM {TABLE} WHERE id = ANY(%s)", (victims,))
code, out, err = loadgen("--check-only", "--ledger", ledger)
t.ok(code == 1, "7 acknowledged rows deleted behind its back: exit 1", f"exit {code}\n{err}")
t.ok("lost writes: 7" in out.splitlines(), "lost writes: 7", out[-1500:])
changed = sorted(present)[7:9]
cur.execute(f"UPDATE {TABLE} SET val = 'tampered' WHERE id = ANY(%s)", (changed,))
gone = [int(k) for k, v in led["acked"].items() if v is None][0]
cur.execute(f"INSERT INTO {TABLE} VALUES (%s, 0, 0, 'back', now())", (gone,))
code, out, err = loadgen("--check-only", "--ledger", ledger, "--json")
c = (summary(out).get("check") or [{}])[0]
t.ok(code == 1 and "lost writes: 10" in err.splitlines() and c.get("missing") == 7
     and c.get("wrong_value") == 2 and c.get("deleted_but_present") == 1,
     "and 2 values changed, 1 deleted row back: 10 lost (7 missing, 2 changed, 1 back)",
     f"exit {code} {c}\n{err}")

# 3. the server restarted mid-run: retries, then every write acknowledged is there
p = loadgen("--clients", "4", "--rate", "200", "--duration", "7", "--json", "--quiet",
            background=True)
time.sleep(2.5)
t0 = time.monotonic()
pg.restart()
t.diag(f"pg_ctl restart took {time.monotonic() - t0:.2f} s")
out, err = p.communicate(timeout=60)
doc = summary(out)
t.ok(p.returncode == 0 and doc.get("lost_writes") == 0, "server restarted mid-run: exit 0, lost 0",
     f"exit {p.returncode}\n{err[-2000:]}")
t.ok(doc.get("retries", 0) > 0 and doc.get("errors"), "the restart cost retries (and says why)",
     {k: doc.get(k) for k in ("retries", "errors")})
t.ok(doc.get("acked", 0) > 500 and doc.get("max_pause_s", 0) > 0.1,
     "writes went on after it; the pause clients saw is measured",
     {k: doc.get(k) for k in ("acked", "max_pause_s", "unknown")})
t.ok(doc.get("check", [{}])[0].get("ids_checked", 0) > 0, "the check covered the run's rows")

# 3b. SIGTERM ends a long run early and cleanly: writes in flight finish,
# the ledger is written, the check runs, exit 0
ledger3 = os.path.join(tmp, "ledger-term.json")
p = loadgen("--clients", "4", "--rate", "100", "--duration", "600", "--json", "--quiet",
            "--ledger", ledger3, background=True)
time.sleep(2.5)
sent = time.time()
p.send_signal(signal.SIGTERM)
out, err = p.communicate(timeout=60)
doc = summary(out)
t.ok(p.returncode == 0 and doc.get("lost_writes") == 0 and doc.get("acked", 0) > 100
     and time.time() - sent < 10,
     f"SIGTERM: stopped in {time.time() - sent:.1f} s, exit 0, lost 0",
     f"exit {p.returncode}\n{err[-1500:]}")
t.ok(os.path.exists(ledger3) and len(json.load(open(ledger3))["acked"]) > 0,
     "SIGTERM: the ledger is written")

# 4. bad arguments and unreachable databases: one line, exit 2, no password
bad = pg.dsn("shop", password="Wr0ng-pass-XYZ")
for name, args, want in [
    ("a wrong password", ["--write-dsn", bad], "password authentication failed"),
    ("nothing listening", ["--write-dsn", bad.replace(f":{pg.port}/", ":1/")], "cannot connect"),
    ("a table that is not the generator's", ["--table", "pg_class"], "refusing"),
    ("--control without --migration", ["--control", "http://127.0.0.1:1"], "go together"),
]:
    code, out, err = loadgen("--duration", "1", *args)
    lines = err.strip().splitlines()
    t.ok(code == 2 and len(lines) == 1 and want in err and out == "",
         f"{name}: exit 2, one line", f"exit {code}\n{err}{out}")
    t.ok("Wr0ng-pass-XYZ" not in err + out and pg.PASSWORD not in err + out,
         f"{name}: no password printed", err)
code, out, err = loadgen("--check-only", "--ledger", os.path.join(tmp, "missing.json"))
t.ok(code == 2 and len(err.strip().splitlines()) == 1, "a missing ledger: exit 2, one line", err)

sys.exit(t.done())
