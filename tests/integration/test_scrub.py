#!/usr/bin/python3
"""sluice scrub: a rotating sampled diff on a real cluster. A 1M-row table
with one row corrupted on the target: every cycle checks every row (the
count checked against count(*)), finds the corrupted row, visits the
ranges in a random order that differs from cycle to cycle (the order the
coordinator recorded them done), writes a drift row of kind scrub; a rate
is honoured; a share of the time (--share 20%) covers every row and takes
at least 2.5 times the unthrottled cycle; bad options are refused with one
line and exit 2."""
import json
import os
import sqlite3
import sys
import time

from cluster import Cluster
from harness import PgServer, Tap, sluice

t = Tap()
src, dst = PgServer(), PgServer()
for s in (src, dst):
    s.createdb("shop")
    cur = s.connect("shop").cursor()
    cur.execute("CREATE TABLE big(id bigint PRIMARY KEY, v int, note text)")
    cur.execute("INSERT INTO big SELECT g, g % 1000, 'n' || g FROM generate_series(1, 1000000) g")
    cur.execute("CREATE TABLE mid(id bigint PRIMARY KEY, v int, note text)")
    cur.execute("INSERT INTO mid SELECT g, g % 1000, 'n' || g FROM generate_series(1, 600000) g")
    cur.execute("CREATE TABLE small(id int PRIMARY KEY, v int)")
    cur.execute("INSERT INTO small SELECT g, g FROM generate_series(1, 100000) g")
    cur.execute("ANALYZE")
dst.connect("shop").cursor().execute("UPDATE big SET v = -1 WHERE id = 777777")

cl = Cluster({"src": src.dsn("shop"), "dst": dst.dsn("shop")})
cl.start_coordinator()
cl.start_worker(slots=2)
cl.start_worker(slots=2)
t.ok(cl.wait_workers(2), "two workers joined")

t0 = time.time()
code, out, err = cl.client("scrub", "src", "dst", "--table", "big", "--cycles", "2", "--ranges",
                           "32", "--no-progress")
took = time.time() - t0
lines = out.splitlines()
t.diag(f"two cycles over 1,000,000 rows in {took:.1f} s")
t.ok(code == 1 and len(lines) == 2, "two cycles, exit 1 (a divergence was found)", out + err)
for n, line in enumerate(lines, 1):
    t.ok(line.startswith(f"cycle {n} (job ") and "1000000 rows in 32 ranges checked" in line
         and "1 divergent (0 missing, 0 extra, 1 changed)" in line
         and "every row checked at least once by 20" in line,
         f"cycle {n}: every one of the 1,000,000 rows checked, the corrupted row found", line)
t.ok("2 cycles, 2 divergent rows found" in err, "the closing line on stderr", err)
jobs = [int(x.split("(job ")[1].split(")")[0]) for x in lines if "(job " in x]

# the order the ranges were done in, as the coordinator recorded it
db = sqlite3.connect(cl.state)
orders = [[r[0] for r in db.execute("SELECT idx FROM ranges WHERE job = ? AND done = 1 "
                                    "ORDER BY finished, idx", (j,))] for j in jobs]
kinds = [db.execute("SELECT kind FROM jobs WHERE id = ?", (j,)).fetchone()[0] for j in jobs]
db.close()
t.ok(len(orders) == 2 and all(sorted(o) == list(range(32)) for o in orders),
     "each cycle did all 32 ranges", orders)
t.ok(all(o != sorted(o) for o in orders) and orders[0] != orders[1],
     "in a random order, not the same twice", orders)
t.ok(kinds == ["scrub", "scrub"], "the jobs are of kind scrub", kinds)

code, out, err = sluice("drift", "--state", "sqlite:" + cl.state, "--table", "big", "--json")
rows = json.loads(out) if code == 0 else []
t.ok(len(rows) == 2 and all(r["kind"] == "scrub" and r["rows_checked"] == 1000000
                            and r["changed"] == 1 for r in rows),
     "two drift rows of kind scrub, 1,000,000 rows checked, 1 changed", rows)

# a rate: 100,000 rows a side (200,000 read) at 50,000 rows/s takes about 4 s
t0 = time.time()
code, out, err = cl.client("scrub", "src", "dst", "--table", "small", "--rows-per-second",
                           "50000", "--ranges", "8", "--no-progress")
took = time.time() - t0
t.ok(code == 0 and "100000 rows in 8 ranges checked" in out and "0 divergent" in out,
     "an equal table: exit 0", out + err)
t.ok(3.0 <= took < 30, f"--rows-per-second 50000 holds the rate: {took:.1f} s for 200,000 reads")


def cycle_seconds(out):
    """The job's own time from a cycle line ("... checked in 1.2 s, ...")."""
    try:
        return float(out.split(" checked in ")[1].split(" s,")[0])
    except (IndexError, ValueError):
        return -1.0


# a share of the time: the same table unthrottled, then with its reads
# keeping at most 0.2 stream-seconds busy per second (4 streams here: an
# unthrottled cycle keeps up to 4 busy, so about 5 to 20 times as long)
code, out, err = cl.client("scrub", "src", "dst", "--table", "mid", "--no-progress")
free = cycle_seconds(out)
t.ok(code == 0 and "600000 rows in 64 ranges checked" in out and free > 0,
     f"unthrottled cycle over 600,000 rows: {free:.1f} s", out + err)
t0 = time.time()
code, out, err = cl.client("scrub", "src", "dst", "--table", "mid", "--share", "20%",
                           "--no-progress")
shared, wall = cycle_seconds(out), time.time() - t0
t.diag(f"600,000 rows: unthrottled cycle {free:.1f} s, --share 20% cycle {shared:.1f} s "
       f"({wall:.1f} s wall), {shared / max(free, 0.1):.1f}x")
t.ok(code == 0 and "600000 rows in 64 ranges checked" in out and "0 divergent" in out,
     "--share 20%: the cycle checks every one of the 600,000 rows", out + err)
t.ok(shared >= 2.5 * free and free > 0,
     f"--share 20% paces the reads: {shared:.1f} s against {free:.1f} s unthrottled (>= 2.5x)")

for args, word in ((["--cycles", "-1"], "--cycles must be"), (["--cycles", "x"], "--cycles"),
                   ([], "--table"), (["--share", "0"], "--share must be a percent from 1 to 100"),
                   (["--share", "101"], "--share must be"), (["--share", "abc"], "--share must be"),
                   (["--share", "10%%"], "--share must be"), (["--share"], "--share")):
    base = ["src", "dst"] + (["--table", "big"] if word != "--table" else [])
    code, out, err = cl.client("scrub", *base, *args)
    t.ok(code == 2 and err.count("\n") == 1 and word in err, f"scrub {args}: exit 2, one line",
         err)
code, out, err = cl.client("submit", "src", "dst", "--table", "big", "--cycles", "2")
t.ok(code == 2 and "--cycles belongs to sluice scrub" in err, "submit --cycles: refused", err)
code, out, err = cl.client("submit", "src", "dst", "--table", "big", "--share", "101")
t.ok(code == 2 and err.count("\n") == 1 and "--share must be" in err, "submit --share 101: refused",
     err)
code, out, err = cl.client("verify-changes", "src", "dst", "--table", "big", "--share", "10")
t.ok(code == 2 and err.count("\n") == 1 and "--share" in err,
     "verify-changes --share: refused (it has no range reads)", err)
t.ok(not cl.sanitizer_reports(), "no sanitizer report")
sys.exit(t.done())
