#!/usr/bin/python3
"""Soak (issue 10): SOAK_JOBS consecutive small jobs plus SOAK_CANCELS
cancelled mid-way against one coordinator and two workers. Every small job
is exact; every cancelled one ends cancelled with no tree left on a worker;
the coordinator's and the workers' RSS after the last job stay within 10% of
their value after the 100th. `make test` and `make soak` run 1,000 + 100;
SOAK_JOBS and SOAK_CANCELS change that.

The sanitizer build runs with a 1 MiB ASan quarantine here: the default
(256 MiB of freed blocks held back) would grow RSS by itself."""
import os
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Client, Cluster  # noqa: E402
from harness import Tap  # noqa: E402

t = Tap()
JOBS = int(os.environ.get("SOAK_JOBS", 1000))
CANCELS = int(os.environ.get("SOAK_CANCELS", 100))
BASE = 100  # RSS is compared with its value after this many jobs


def make_db(path, small, big, drift):
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE small (id INTEGER PRIMARY KEY, v TEXT)")
    c.executemany("INSERT INTO small VALUES (?, ?)",
                  ((i, f"v{i}" if i not in drift else "changed") for i in range(1, small + 1)))
    c.execute("CREATE TABLE big (id INTEGER PRIMARY KEY, v TEXT)")
    c.executemany("INSERT INTO big VALUES (?, ?)", ((i, f"v{i}") for i in range(1, big + 1)))
    c.commit()
    c.close()


cl = Cluster({}, hb_timeout=10)
src, tgt = os.path.join(cl.dir, "src.db"), os.path.join(cl.dir, "tgt.db")
make_db(src, 500, 300000, set())
make_db(tgt, 500, 300000, {7, 250})
with open(cl.dbfile, "w") as f:
    f.write(f"src=sqlite:{src}\ntgt=sqlite:{tgt}\n")
cl.env["ASAN_OPTIONS"] = cl.env["ASAN_OPTIONS"] + ":quarantine_size_mb=1"
cl.start_coordinator()
cl.start_worker(slots=1)
cl.start_worker(slots=1)
t.ok(cl.wait_workers(2), "a coordinator and two workers")
cli = Client(cl.clients_ep)


def rss(p):
    for line in open(f"/proc/{p.pid}/status"):
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0


def snapshot():
    return [rss(cl.coordinator)] + [rss(w) for w in cl.workers]


bad, cancelled_bad, base, t0 = [], [], None, time.time()
every = max(1, JOBS // max(CANCELS, 1))
for n in range(1, JOBS + 1):
    j = cli.submit(table="small")
    s = cli.wait(j, timeout=60)
    if not s or s["state"] != "done" or (s["changed"], s["missing"], s["extra"]) != (2, 0, 0):
        bad.append((j, s))
    if CANCELS and n % every == 0 and n // every <= CANCELS:
        c = cli.submit(table="big")
        cli.wait(c, timeout=60, states=("running", "done", "failed", "cancelled"))
        cli.cancel(c)
        s = cli.wait(c, timeout=10)
        if not s or s["state"] != "cancelled":
            cancelled_bad.append((c, s))
    if n == BASE:
        base = snapshot()
    if n % 100 == 0:
        print(f"# {n} jobs, {time.time() - t0:.0f} s, RSS MB {snapshot()}", flush=True)
end = time.time() + 10
while time.time() < end and cli.trees() != 0:
    time.sleep(0.1)
last = snapshot()
t.diag(f"control database after {JOBS} jobs: {os.path.getsize(cl.state) / 1e6:.1f} MB")
t.ok(not bad, f"{JOBS} small jobs all exact", f"{bad[:3]}")
t.ok(not cancelled_bad, f"{min(CANCELS, JOBS // every)} jobs cancelled mid-way all ended "
     "cancelled", f"{cancelled_bad[:3]}")
t.ok(cli.trees() == 0, "no tree left on any worker")
names = ["coordinator", "worker 1", "worker 2"]
t.diag(f"RSS after job {BASE}: " + ", ".join(f"{n} {b} MB" for n, b in zip(names, base)))
t.diag(f"RSS after job {JOBS}: " + ", ".join(f"{n} {b} MB" for n, b in zip(names, last)))
for name, b, a in zip(names, base, last):
    t.ok(a <= b * 1.10, f"{name}: RSS {a} MB after the last job, within 10% of {b} MB")
cl.stop()
t.ok(not cl.sanitizer_reports(), "no sanitizer reports", "\n".join(cl.sanitizer_reports()))
t.done()
