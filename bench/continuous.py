#!/usr/bin/python3
"""The continuous section of make bench: change-driven verification under a
steady write load, and the scrub's cycle time at a given rate.

Two PostgreSQL servers of its own, a table of CONT_ROWS rows on both,
replicated source -> target by PostgreSQL's logical replication, a cluster
(coordinator + 2 workers, build/sluice). For each write rate (500 and 2,000
writes/s by default, CONT_RATES), writers update random rows of the
source's first half while `sluice verify-changes` runs; 20 divergences are
made on the target behind the replication's back at random moments (rows
of the second half). Reported: the detection latency of those 20 (from
each commit to its report on the CLI's stdout: p50, p99, max), the rows
read per change (both sides' fetches, re-checks included, over the writes
made), and the CPU the coordinator and workers took beside the load (CPU
seconds per wall second, from /proc). Then `sluice scrub --rows-per-second
R --cycles 1` over the table: its cycle time against the time the rate
allows. Prints a markdown table; appends it to BENCH_OUT (default
bench/RESULTS.md; "-": none)."""
import os
import random
import signal
import subprocess
import sys
import threading
import time

if os.environ.get("BENCH_ONLY"):  # make bench BENCH_ONLY=dense: bench.py's dense rows only
    sys.exit(0)
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
os.environ.setdefault("SLUICE", os.path.join(REPO, "build", "sluice"))

from cluster import Cluster  # noqa: E402
from harness import LOGICAL, PgServer, SLUICE  # noqa: E402

ROWS = int(os.environ.get("CONT_ROWS", "200000"))
RATES = [int(x) for x in os.environ.get("CONT_RATES", "500 2000").split()]
WINDOW = float(os.environ.get("CONT_SECONDS", "25"))
SCRUB_RATE = int(os.environ.get("CONT_SCRUB_RATE", "200000"))
OUT = os.environ.get("BENCH_OUT", os.path.join(HERE, "RESULTS.md"))


def log(msg):
    print(f"continuous: {msg}", file=sys.stderr, flush=True)


def cpu_seconds(pids):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        except (OSError, IndexError, ValueError):
            pass
    return total


def pct(v, p):
    return v[min(len(v) - 1, int(p * len(v)))] if v else float("nan")


log(f"{ROWS} rows: starting two PostgreSQL servers")
src, dst = PgServer(extra_opts=LOGICAL), PgServer(extra_opts=LOGICAL)
for s in (src, dst):
    s.createdb("shop")
    c = s.connect("shop")
    c.autocommit = True
    c.cursor().execute("CREATE TABLE t(id bigint PRIMARY KEY, v int, note text)")
    c.cursor().execute(f"INSERT INTO t SELECT g, g % 1000, 'n' || g FROM "
                       f"generate_series(1, {ROWS}) g")
    c.cursor().execute("ANALYZE t")
    c.close()
sc = src.connect("shop")
sc.autocommit = True
sc.cursor().execute("CREATE PUBLICATION rep FOR TABLE t")
dc = dst.connect("shop")
dc.autocommit = True
dcur = dc.cursor()
conninfo = (f"host=127.0.0.1 port={src.port} user={src.USER} password={src.PASSWORD} "
            "dbname=shop")
dcur.execute(f"CREATE SUBSCRIPTION rep CONNECTION '{conninfo}' PUBLICATION rep "
             "WITH (copy_data = false)")
cl = Cluster({"src": src.dsn("shop"), "dst": dst.dsn("shop")})
cl.start_coordinator()
cl.start_worker(slots=2)
cl.start_worker(slots=2)
if not cl.wait_workers(4):
    sys.exit("continuous: the workers did not join")
procs = [cl.coordinator.pid] + [w.pid for w in cl.workers]
rows_out = []
next_id = [ROWS // 2]

for rate in RATES:
    log(f"{rate} writes/s for {WINDOW:.0f} s, 20 divergences injected on the target")
    stop, writes = threading.Event(), [0]

    def writer(share):
        c = src.connect("shop")
        c.autocommit = True
        cur = c.cursor()
        period = 1.0 / share
        nxt = time.time()
        while not stop.is_set():
            cur.execute("UPDATE t SET v = v + 1, note = md5(random()::text) WHERE id = %s",
                        (random.randint(1, ROWS // 2 - 1),))
            writes[0] += 1
            nxt += period
            time.sleep(max(0, nxt - time.time()))
        c.close()

    nthreads = max(1, rate // 250)
    proc = subprocess.Popen([SLUICE, "verify-changes", "src", "dst", "--table", "t", "--settle",
                             "1", "--rechecks", "2", "--coordinator", cl.clients_ep, "--events",
                             cl.events_ep], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=cl.env)
    seen, errlines = {}, []

    def read_out():
        for line in proc.stdout:
            parts = line.split()
            if len(parts) >= 2 and parts[1].startswith("id="):
                seen.setdefault(int(parts[1][3:]), time.time())

    def read_err():
        for line in proc.stderr:
            errlines.append(line.rstrip("\n"))

    threading.Thread(target=read_out, daemon=True).start()
    threading.Thread(target=read_err, daemon=True).start()
    time.sleep(3)  # the slots are set up
    threads = [threading.Thread(target=writer, args=(rate / nthreads,)) for _ in range(nthreads)]
    for th in threads:
        th.start()
    t0, c0, w0 = time.time(), cpu_seconds(procs), writes[0]
    injected = {}
    for _ in range(20):
        time.sleep(random.uniform(0, WINDOW / 20))
        i = next_id[0]
        next_id[0] += 1
        dcur.execute("UPDATE t SET v = -1 WHERE id = %s", (i,))
        injected[i] = time.time()
    end = time.time() + 30
    while time.time() < end and not all(i in seen for i in injected):
        time.sleep(0.1)
    wall, cpu, made = time.time() - t0, cpu_seconds(procs) - c0, writes[0] - w0
    stop.set()
    for th in threads:
        th.join()
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
    time.sleep(0.5)
    closing = next((x for x in reversed(errlines) if "verify-changes job" in x and "after" in x),
                   "")
    checked = 0
    try:
        checked = int(closing.split("changed keys, ")[1].split(" checked")[0])
    except (IndexError, ValueError):
        pass
    lat = sorted(seen[i] - injected[i] for i in injected if i in seen)
    found = len(lat)
    # first look: a row from each side; a divergent key: 2 re-checks more
    rows_read = 2 * checked + 2 * 3 * found
    rows_out.append({
        "rate": rate, "achieved": made / wall, "found": found,
        "p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "max": lat[-1] if lat else float("nan"),
        "rows_per_change": rows_read / max(made, 1), "cpu": cpu / wall})
    log(f"{rate}/s: {made / wall:.0f} writes/s held, {found}/20 found, p50 "
        f"{pct(lat, 0.5):.2f} s, p99 {pct(lat, 0.99):.2f} s, {cpu / wall:.2f} CPU")
    for i in injected:  # repaired for the next round
        dcur.execute("UPDATE t SET v = (SELECT %s::int %% 1000) WHERE id = %s", (i, i))

log(f"scrub: one cycle at {SCRUB_RATE} rows/s")
t0 = time.time()
code, out, err = cl.client("scrub", "src", "dst", "--table", "t", "--rows-per-second",
                           str(SCRUB_RATE), "--ranges", "64", "--no-progress")
scrub_s = time.time() - t0
allowed = 2 * ROWS / SCRUB_RATE
cl.stop()
dcur.execute("DROP SUBSCRIPTION rep")

lines = ["| writes/s asked (held) | divergences found | detection p50 / p99 / max (s) | rows read "
         "per change | CPU of coordinator + workers (cores) |", "|---|---|---|---|---|"]
for r in rows_out:
    lines.append(f"| {r['rate']:,} ({r['achieved']:,.0f}) | {r['found']} of 20 | {r['p50']:.2f} / "
                 f"{r['p99']:.2f} / {r['max']:.2f} | {r['rows_per_change']:.2f} | "
                 f"{r['cpu']:.2f} |")
table = "\n".join(lines)
scrub_line = (f"Scrub of {ROWS:,} rows at {SCRUB_RATE:,} rows/s (both sides together): one cycle "
              f"in {scrub_s:.1f} s, the rate allowing {allowed:.1f} s "
              f"({'exit ' + str(code)}).")
print(table)
print()
print(scrub_line)
if OUT != "-":
    with open(OUT, "a") as f:
        f.write(f"\n## Continuous verification, {time.strftime('%Y-%m-%d')}\n\n"
                f"`bench/continuous.py` (CONT_ROWS={ROWS}, settle 1 s, 2 re-checks, build/sluice): "
                f"writers update random rows of the source's first half, replicated by logical "
                f"replication; 20 rows of the second half changed on the target at random "
                f"moments, each timed from its commit to its report.\n\n{table}\n\n{scrub_line}\n")
sys.exit(0 if all(r["found"] == 20 for r in rows_out) and code == 0 else 1)
