#!/usr/bin/python3
"""Quick answers and adaptive range sizing (issue 15, items 3 and 5) on
real PostgreSQL and SQLite, through sluice diff and a real coordinator:

--keys-only reports keys and kinds and never reads column values (the
PostgreSQL server's statement log shows no fetch by key), re-checks
included; --summary-only prints the counts only, with the usual exit
status; --max-divergences N stops once N are confirmed, saying so, and on
a cluster ends the job and frees its workers; --chunk-time splits the few
big ranges of a throttled plan into more, shorter reads, the answer exact,
also across a coordinator restart."""
import json
import os
import sqlite3
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Cluster  # noqa: E402
from harness import PgServer, Tap, sluice, sluice_json  # noqa: E402

t = Tap()
pg = PgServer(extra_opts="-c log_statement=all")
pg.createdb("src")
pg.createdb("dst")
N = 20000
CHANGED = set(range(7, N + 1, 97))
MISSING = set(range(3, N + 1, 1001))
EXTRA = {N + 5, N + 6}
for db in ("src", "dst"):
    c = pg.connect(db)
    cur = c.cursor()
    cur.execute("CREATE TABLE t (id int PRIMARY KEY, v text, n numeric)")
    cur.execute("INSERT INTO t SELECT g, 'v' || g, g * 1.5 FROM generate_series(1, %s) g", (N,))
    # a text key: split by walking keys, not by integer arithmetic
    cur.execute("CREATE TABLE s (k text PRIMARY KEY, v text)")
    cur.execute("INSERT INTO s SELECT 'key-' || lpad(g::text, 6, '0'), 'v' || g "
                "FROM generate_series(1, %s) g", (N,))
    if db == "dst":
        cur.execute("UPDATE t SET v = 'changed' WHERE id = ANY(%s)", (sorted(CHANGED),))
        cur.execute("DELETE FROM t WHERE id = ANY(%s)", (sorted(MISSING),))
        cur.execute("INSERT INTO t VALUES (%s, 'x', 1), (%s, 'y', 2)", tuple(sorted(EXTRA)))
        cur.execute("UPDATE s SET v = 'changed' WHERE right(k, 6)::int % 97 = 7")
    c.close()
src, dst = pg.dsn("src"), pg.dsn("dst")
LOG = os.path.join(pg.dir, "log")


def log_mark():
    return os.path.getsize(LOG)


def fetches_since(mark):
    """Statements the server ran since mark that read rows of t by key (a
    fetch: "... WHERE (...) AND "id" IN (...)")."""
    with open(LOG, errors="replace") as f:
        f.seek(mark)
        return [line.strip() for line in f
                if ("statement:" in line or "execute" in line) and '"id" IN (' in line]


def keys_of(doc, kind):
    return {int(d["key"]["id"]) for d in doc["divergences"] if d["kind"] == kind}


# ---- the full answer, for reference ---------------------------------------------------------
code, full, err = sluice_json("diff", src, dst, "--table", "t")
t.ok(code == 1 and keys_of(full, "changed") == CHANGED and keys_of(full, "missing-in-target")
     == MISSING and keys_of(full, "extra-in-target") == EXTRA,
     "reference diff: the exact divergences, with columns", err)
t.ok(all("columns" in d for d in full["divergences"] if d["kind"] == "changed"),
     "reference diff: changed rows carry their columns")

# ---- --keys-only -------------------------------------------------------------------------------
mark = log_mark()
code, doc, err = sluice_json("diff", src, dst, "--table", "t", "--keys-only")
time.sleep(0.5)  # the server's log is written asynchronously
t.ok(code == 1 and keys_of(doc, "changed") == CHANGED and keys_of(doc, "missing-in-target")
     == MISSING and keys_of(doc, "extra-in-target") == EXTRA,
     "--keys-only: the same keys and kinds", err)
t.ok(not any("columns" in d for d in doc["divergences"]),
     "--keys-only JSON: no \"columns\" on any divergence")
t.ok(fetches_since(mark) == [], "--keys-only: no row was read by key (server statement log)",
     "\n".join(fetches_since(mark)[:5]))
mark = log_mark()
code, doc, err = sluice_json("diff", src, dst, "--table", "t")
time.sleep(0.5)
t.ok(len(fetches_since(mark)) > 0, "without --keys-only the same diff does fetch by key "
     "(the log check can fail)")
mark = log_mark()
code, doc, err = sluice_json("diff", src, dst, "--table", "t", "--keys-only", "--rechecks", "1",
                             "--settle", "0.1")
time.sleep(0.5)
t.ok(code == 1 and keys_of(doc, "changed") == CHANGED
     and all(d.get("status") == "confirmed" for d in doc["divergences"])
     and fetches_since(mark) == [],
     "--keys-only --rechecks 1: confirmed by row hash, still no fetch by key", err)
code, out, err = sluice("diff", src, dst, "--table", "t", "--keys-only", "--no-progress")
line = [x for x in out.splitlines() if x.startswith("changed")][0]
t.ok(code == 1 and line.split() == ["changed", "id=7"], "--keys-only text: a key, no columns",
     line)

# ---- --summary-only ---------------------------------------------------------------------------
code, out, err = sluice("diff", src, dst, "--table", "t", "--summary-only", "--no-progress")
t.ok(code == 1 and not any(x.startswith(("changed", "missing", "extra", "--"))
                           for x in out.splitlines())
     and f"tables differ: {len(CHANGED)} changed, {len(MISSING)} missing-in-target, "
     f"{len(EXTRA)} extra-in-target, 0 schema" in out,
     "--summary-only text: the summary lines only, exit 1", out)
code, doc, err = sluice_json("diff", src, dst, "--table", "t", "--summary-only")
t.ok(code == 1 and doc and "divergences" not in doc and doc["summary"]["changed"] == len(CHANGED)
     and doc["summary"]["missing_in_target"] == len(MISSING) and not doc["summary"]["equal"],
     "--summary-only JSON: no \"divergences\", the counts in \"summary\"", json.dumps(doc)[:500])
code, doc, err = sluice_json("diff", src, src, "--table", "t", "--summary-only")
t.ok(code == 0 and doc["summary"]["equal"], "--summary-only, equal tables: exit 0")

# ---- --max-divergences ------------------------------------------------------------------------
code, out, err = sluice("diff", src, dst, "--table", "t", "--max-divergences", "10",
                        "--no-progress")
rows = [x for x in out.splitlines() if x.startswith(("changed", "missing", "extra"))]
t.ok(code == 1 and len(rows) == 10 and "stopped after 10 divergences (--max-divergences)" in out,
     "--max-divergences 10: 10 reported, says it stopped, exit 1", out[-600:])
code, doc, err = sluice_json("diff", src, dst, "--table", "t", "--max-divergences", "10")
t.ok(code == 1 and len(doc["divergences"]) == 10 and doc["summary"]["stopped_early"] is True
     and doc["summary"]["limit_reached"] == 10, "--max-divergences JSON: stopped_early, limit")
code, doc, err = sluice_json("diff", src, dst, "--table", "t", "--max-divergences", "100000")
t.ok(code == 1 and doc["summary"]["stopped_early"] is False
     and len(doc["divergences"]) == len(CHANGED | MISSING | EXTRA),
     "a limit not reached: the whole answer, stopped_early false")

# ---- --chunk-time on sluice diff -------------------------------------------------------------
THROTTLE = ["--ranges", "2", "--max-rows-per-second", "10000"]
for table, key in (("t", "integer key: split between min and max"),
                   ("s", "text key: split by walking the keys")):
    code, ref, err = sluice_json("diff", src, dst, "--table", table, *THROTTLE)
    code2, doc, err2 = sluice_json("diff", src, dst, "--table", table, *THROTTLE,
                                   "--chunk-time", "0.3")
    sm = doc and doc["summary"]
    t.ok(code2 == code == 1 and sm["ranges"] > 2 and sm.get("planned_ranges") == 2,
         f"--chunk-time ({key}): more ranges compared ({sm and sm['ranges']}) than the 2 "
         "planned", err2)
    t.ok(sm and sm["longest_read_seconds"] < 1.0,
         f"--chunk-time ({key}): the longest read {sm and sm['longest_read_seconds']:.2f} s, "
         "unsplit reads take about 2 s")
    t.ok(doc["divergences"] == ref["divergences"] and sm["changed"] == ref["summary"]["changed"],
         f"--chunk-time ({key}): the answer is exactly the unsplit one")

# ---- SQLite: the same options through the SQLite connector ---------------------------------
tmp = tempfile.mkdtemp()
a, b = os.path.join(tmp, "a.db"), os.path.join(tmp, "b.db")
for path in (a, b):
    with sqlite3.connect(path) as s:
        s.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        s.executemany("INSERT INTO t VALUES (?, ?)",
                      [(i, "changed" if path == b and i % 50 == 1 else f"v{i}")
                       for i in range(1, 10001)])
code, doc, err = sluice_json("diff", "sqlite:" + a, "sqlite:" + b, "--table", "t",
                             "--keys-only", "--ranges", "2", "--max-rows-per-second", "8000",
                             "--chunk-time", "0.2")
t.ok(code == 1 and {int(d["key"]["id"]) for d in doc["divergences"]}
     == set(range(1, 10001, 50)) and doc["summary"]["ranges"] > 2
     and not any("columns" in d for d in doc["divergences"]),
     "SQLite: --keys-only with --chunk-time, exact, split", err)
# unthrottled: the first reads measure the rate, the ranges still pending are split
big = [os.path.join(tmp, n) for n in ("big1.db", "big2.db")]
for path in big:
    with sqlite3.connect(path) as s:
        s.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        s.executemany("INSERT INTO t VALUES (?, ?)",
                      [(i, "x" if path == big[1] and i % 1000 == 0 else f"v{i}")
                       for i in range(1, 200001)])
code2, doc, err2 = sluice_json("diff", "sqlite:" + big[0], "sqlite:" + big[1], "--table", "t",
                               "--workers", "1", "--ranges", "2", "--chunk-time", "0.01")
t.ok(code2 == 1 and doc["summary"]["ranges"] > 2
     and {int(d["key"]["id"]) for d in doc["divergences"]} == set(range(1000, 200001, 1000)),
     f"--chunk-time unthrottled: split from the measured rate ({doc and doc['summary']['ranges']} "
     "ranges of 2 planned), exact", err2)
code, out, err = sluice("diff", "sqlite:" + a, "sqlite:" + b, "--table", "t", "--summary-only",
                        "--max-divergences", "3", "--no-progress")
t.ok(code == 1 and "stopped after 3 divergences" in out and "changed  " not in out,
     "SQLite: --summary-only --max-divergences 3", out)

# ---- a cluster: submit, the coordinator stops the job and frees its workers -----------------
cl = Cluster({"src": src, "dst": dst})
cl.start_coordinator()
cl.start_worker(slots=2)
t.ok(cl.wait_workers(2), "a coordinator and a worker with 2 slots")
start = time.time()
code, out, err = cl.client("submit", "src", "dst", "--table", "t", "--wait", "--no-progress",
                           "--ranges", "20", "--max-rows-per-second", "2000",
                           "--max-divergences", "5", "--keys-only")
took = time.time() - start
rows = [x for x in out.splitlines() if x.startswith(("changed", "missing", "extra"))]
t.ok(code == 1 and len(rows) == 5 and "stopped after 5 divergences" in out and took < 15,
     f"submit --max-divergences 5: stopped after 5 in {took:.1f} s (the whole job: about 20 s)",
     f"exit {code}\n{out}\n{err}")
t.ok(all(x.split()[0] in ("changed", "missing-in-target") and len(x.split()) == 2 for x in rows),
     "submit --keys-only: keys only in the report", "\n".join(rows))
time.sleep(0.5)
code, wout, err = cl.client("workers")
t.ok(code == 0 and " busy" not in wout, "the stopped job left no worker busy", wout)
code, out, err = cl.client("submit", "src", "dst", "--table", "t", "--wait", "--no-progress",
                           "--summary-only")
t.ok(code == 1 and f"{len(CHANGED)} changed" in out and not any(
    x.startswith("changed") for x in out.splitlines()), "submit --summary-only: counts only",
     out)

# a schedule carries the options (its spec is the submit spec)
code, out, err = cl.client("schedule", "add", "quick", "--every", "1h", "src", "dst", "--table",
                           "t", "--keys-only", "--max-divergences", "4")
t.ok(code == 0, "schedule add with --keys-only --max-divergences 4", err)
last = None
end = time.time() + 30
while last is None and time.time() < end:
    code, out, err = cl.client("schedule", "ls", "--format", "json")
    last = {x["name"]: x for x in json.loads(out)}.get("quick", {}).get("last_job") \
        if code == 0 else None
    time.sleep(0.3)
st = cl.wait_state(last, timeout=60) if last else None
code, out, err = cl.client("report", str(last)) if last else (None, "", "")
rows = [x for x in out.splitlines() if x.startswith(("changed", "missing", "extra"))]
t.ok(st and st["state"] == "done" and code == 1 and len(rows) == 4
     and all(len(x.split()) == 2 for x in rows) and "stopped after 4 divergences" in out,
     "the scheduled job ran keys-only and stopped after 4 (sluice report says so)",
     f"{st}\n{out}\n{err}")
cl.client("schedule", "rm", "quick")

# --chunk-time on a cluster, the coordinator killed mid-job and restarted: exact
mark = log_mark()
job = cl.submit("src", "dst", "--table", "t", "--ranges", "2", "--max-rows-per-second", "8000",
                "--chunk-time", "0.2")
time.sleep(2.0)
cl.coordinator.kill()
cl.coordinator.wait()
cl.start_coordinator()
s = cl.wait_state(job, timeout=120)
code, out, err = cl.client("report", str(job), "--format", "json")
doc = json.loads(out) if code == 1 else None
t.ok(s and s["state"] == "done" and doc and keys_of(doc, "changed") == CHANGED
     and keys_of(doc, "missing-in-target") == MISSING and keys_of(doc, "extra-in-target") == EXTRA,
     "--chunk-time on a cluster, coordinator restarted mid-job: the exact answer",
     f"{s}\n{err}")
time.sleep(0.5)
with open(LOG, errors="replace") as f:
    f.seek(mark)
    bounded = [x for x in f if "count(*)" in x and ('"id" >=' in x or '"id" <' in x)]
t.ok(len(bounded) >= 2, f"the workers were asked to split ranges ({len(bounded)} bounded "
     "counts in the server's statement log)")
t.ok(s and s["ranges_done"] == s["ranges"] == 2,
     "the store records the 2 planned ranges done (split pieces count toward theirs)", str(s))
cl.stop()
t.done()
