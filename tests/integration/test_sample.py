#!/usr/bin/python3
"""--sample-percent: a random sample of the key space (small ranges picked
at random), compared exactly, with the bound it gives on the divergent
share. SQLite through sluice diff and PostgreSQL through a cluster
(submit --wait): every divergence reported is a real one, the share found
is near the true one, the printed bound is the Clopper-Pearson bound of
the printed counts (recomputed here), two runs pick different samples, and
bad values are refused with one line and exit 2."""
import json
import math
import os
import random
import sqlite3
import sys
import tempfile

from cluster import Cluster
from harness import PgServer, Tap, sluice

t = Tap()
tmp = tempfile.mkdtemp(prefix="sluice-sample-")
rng = random.Random(7)
bad = set(rng.sample(range(1, 100001), 1000))  # 1% of the rows differ
paths = []
for name in ("a.db", "b.db"):
    p = os.path.join(tmp, name)
    c = sqlite3.connect(p)
    c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    c.executemany("INSERT INTO t VALUES (?, ?)",
                  ((i, f"x{i}" if name == "b.db" and i in bad else f"v{i}")
                   for i in range(1, 100001)))
    c.commit()
    c.close()
    paths.append("sqlite:" + p)


def cp_upper(n, k, conf=0.95):
    """One-sided Clopper-Pearson upper bound, by bisection on the CDF."""
    if n == 0 or k >= n:
        return 1.0
    if k == 0:
        return 1 - (1 - conf) ** (1 / n)

    def cdf(p):
        return sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                            + i * math.log(p) + (n - i) * math.log1p(-p)) for i in range(k + 1))
    lo, hi = k / n, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) > 1 - conf else (lo, mid)
    return hi


docs = []
for run in range(2):
    code, out, err = sluice("diff", *paths, "--table", "t", "--sample-percent", "20",
                            "--format", "json", "--no-progress")
    d = json.loads(out) if out.strip().startswith("{") else {}
    docs.append(d)
    s = d.get("sample", {})
    keys = [int(x["key"]["id"]) for x in d.get("divergences", [])]
    t.ok(code == 1 and s.get("of_ranges") == 1000 and s.get("ranges") == 200
         and 15000 <= s.get("rows", 0) <= 25000, f"run {run}: 200 of 1,000 ranges sampled", s)
    t.ok(keys and all(k in bad for k in keys) and len(keys) == s.get("divergent"),
         f"run {run}: every divergence reported is a real one ({len(keys)})")
    share = s.get("divergent", 0) / max(s.get("rows", 1), 1)
    t.ok(0.005 < share < 0.015, f"run {run}: the share found ({share:.4f}) is near the true 1%")
    want = cp_upper(s.get("rows", 0), s.get("divergent", 0))
    t.ok(abs(s.get("upper_bound_95", -1) - want) < 1e-6,
         f"run {run}: the bound is Clopper-Pearson's: {s.get('upper_bound_95')} vs {want:.6f}")
    t.ok(s.get("upper_bound_95", 0) > 0.01 * 0.5, f"run {run}: and above what was found")
k0 = {int(x["key"]["id"]) for x in docs[0].get("divergences", [])}
k1 = {int(x["key"]["id"]) for x in docs[1].get("divergences", [])}
t.ok(k0 != k1, "two runs sample different ranges")

code, out, err = sluice("diff", paths[0], paths[0], "--table", "t", "--sample-percent", "5",
                        "--no-progress")
t.ok(code == 0 and "no divergence in the sample (not a full comparison)" in out
     and "at 95% confidence under" in out and "tables are identical" not in out,
     "an equal sample says so, without calling the tables identical", out)
for v in ("0", "100", "abc", "0.001"):
    code, out, err = sluice("diff", *paths, "--table", "t", "--sample-percent", v)
    t.ok(code == 2 and err.count("\n") == 1 and "--sample-percent must be" in err,
         f"--sample-percent {v}: exit 2, one line", err)

# through a cluster
src, dst = PgServer(), PgServer()
for s_ in (src, dst):
    s_.createdb("shop")
    cur = s_.connect("shop").cursor()
    cur.execute("CREATE TABLE t(id int PRIMARY KEY, v text)")
    cur.execute("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100000) g")
dst.connect("shop").cursor().execute("UPDATE t SET v = 'x' WHERE id % 50 = 0")  # 2%
cl = Cluster({"src": src.dsn("shop"), "dst": dst.dsn("shop")})
cl.start_coordinator()
cl.start_worker()
t.ok(cl.wait_workers(1), "a worker joined")
code, out, err = cl.client("submit", "src", "dst", "--table", "t", "--sample-percent", "10",
                           "--wait", "--no-progress", "--format", "json")
d = json.loads(out) if out.strip().startswith("{") else {}
s = d.get("sample", {})
keys = [int(x["key"]["id"]) for x in d.get("divergences", [])]
t.ok(code == 1 and s.get("ranges") == 100 and s.get("of_ranges") == 1000
     and keys and all(k % 50 == 0 for k in keys),
     "submit --sample-percent 10: 100 of 1,000 ranges, only real divergences", (s, err[-500:]))
t.ok(abs(s.get("upper_bound_95", -1) - cp_upper(s.get("rows", 0), s.get("divergent", 0))) < 1e-6,
     "and the bound of its counts", s)
code, out, err = cl.client("scrub", "src", "dst", "--table", "t", "--sample-percent", "10")
t.ok(code == 2 and "--sample-percent belongs to" in err, "scrub --sample-percent: refused", err)
t.ok(not cl.sanitizer_reports(), "no sanitizer report")
sys.exit(t.done())
