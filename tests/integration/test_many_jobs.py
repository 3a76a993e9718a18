#!/usr/bin/python3
"""One coordinator, many jobs (issue 10): a coordinator and three worker
processes on two PostgreSQL servers run eight jobs at once (1k to 1M rows,
some divergent, one with re-checks), all exact; a high-priority 10k job
submitted while a low 2M-row audit runs finishes in under 2 s; a 2M-row job
cancelled mid-way ends cancelled, its reads stop within a second and every
worker's tree count returns to 0; a worker that takes tasks and never
answers (a real peer on the socket, heartbeating) does not hang the job.

Jobs are submitted and watched over the clients socket directly (msgpack
over ZeroMQ), as a control plane would, so timings are not process starts."""
import os
import sys
import threading
import time

import msgpack
import zmq

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Client, Cluster  # noqa: E402
from harness import PgServer, Tap  # noqa: E402

T_HELLO, T_REPLY, T_HEARTBEAT, T_CANCEL = 1, 10, 12, 15

t = Tap()


pa, pb = PgServer(), PgServer()
da, db = pa.createdb("src"), pb.createdb("tgt")
ca, cb = pa.connect(da).cursor(), pb.connect(db).cursor()
sizes = {"t1k": 1000, "t5k": 5000, "t10k": 10000, "t20k": 20000, "t50k": 50000,
         "t100k": 100000, "t500k": 500000, "t1m": 1000000, "big": 2000000}
for name, n in sizes.items():
    for c in (ca, cb):
        c.execute(f"CREATE TABLE {name} (id bigint PRIMARY KEY, v text, n numeric)")
        c.execute(f"INSERT INTO {name} SELECT g, md5(g::text), g * 1.5 "
                  f"FROM generate_series(1, {n}) g")
        c.execute(f"ANALYZE {name}")
# the divergences each job must find: (changed, missing, extra)
expect = {name: (0, 0, 0) for name in sizes}
cb.execute("UPDATE t10k SET v = 'x' WHERE id IN (5, 500, 9999)")
cb.execute("DELETE FROM t10k WHERE id IN (7, 7000)")
cb.execute("INSERT INTO t10k VALUES (10001, 'new', 1)")
expect["t10k"] = (3, 2, 1)
cb.execute("UPDATE t500k SET n = n + 1 WHERE id % 100000 = 3")
expect["t500k"] = (5, 0, 0)
cb.execute("DELETE FROM t1m WHERE id = 777777")
cb.execute("UPDATE t1m SET v = NULL WHERE id = 1")
expect["t1m"] = (1, 1, 0)
cb.execute("UPDATE t50k SET v = 'y' WHERE id IN (10, 20, 30, 40)")
expect["t50k"] = (4, 0, 0)

cl = Cluster({"src": pa.dsn(da), "tgt": pb.dsn(db)}, hb_timeout=10)
cl.start_coordinator()
for _ in range(3):
    cl.start_worker(slots=1)
t.ok(cl.wait_workers(3), "three worker processes on two PostgreSQL servers registered")
cli = Client(cl.clients_ep)


most_trees = 0  # the most trees the workers said they held, sampled all along


def counts(s):
    return (s["changed"], s["missing"], s["extra"])


def wait_done(jobs, timeout=600):
    """Waits for every job; returns their last statuses and the most seen
    running at once."""
    global most_trees
    end, last, most = time.time() + timeout, {}, 0
    while time.time() < end:
        last = {j: cli.status(j) for j in jobs}
        most_trees = max(most_trees, cli.trees())
        most = max(most, sum(s["state"] == "running" for s in last.values()))
        if all(s["state"] in ("done", "failed", "cancelled") for s in last.values()):
            break
        time.sleep(0.1)
    return last, most


# ---- eight jobs at once ----------------------------------------------------
eight = ["t1k", "t5k", "t10k", "t20k", "t50k", "t100k", "t500k", "t1m"]
t0 = time.time()
jobs = {}
for name in eight:
    extra = {"rechecks": 1, "settle_ms": 200} if name == "t50k" else {}
    jobs[cli.submit(table=name, **extra)] = name
last, most = wait_done(jobs)
t.diag(f"eight jobs in {time.time() - t0:.1f} s, at most {most} running at once")
t.ok(most >= 2, f"jobs ran at the same time (at most {most} running at once)")
for j, name in jobs.items():
    s = last[j]
    t.ok(s["state"] == "done" and counts(s) == expect[name] and
         s["source_rows"] == sizes[name],
         f"job on {name} ({sizes[name]} rows) ended exact: {counts(s)}",
         f"{s}")
t.ok(last[[j for j, n in jobs.items() if n == "t50k"][0]]["transient"] == 0,
     "the re-checked job confirmed its four divergences, none transient")


def wait_running(job, timeout=120):
    global most_trees
    end = time.time() + timeout
    while time.time() < end:
        s = cli.status(job)
        most_trees = max(most_trees, cli.trees())
        if s["state"] == "running" and s["ranges_done"] >= 1:
            return s
        time.sleep(0.05)
    return None


# ---- a high job while a low audit runs ---------------------------------------
low = cli.submit(table="big", priority="low")
s = wait_running(low)
t.ok(s is not None, "the low 2M-row audit is running, with ranges done")
t1 = time.time()
high = cli.submit(table="t10k", priority="high")
while cli.status(high)["state"] not in ("done", "failed", "cancelled"):
    time.sleep(0.02)
took = time.time() - t1
hs, ls = cli.status(high), cli.status(low)
t.diag(f"high 10k-row job: {took:.2f} s from submit to done, while the low audit "
       f"was at {ls['ranges_done']}/{ls['ranges']} ranges")
t.ok(hs["state"] == "done" and counts(hs) == expect["t10k"],
     "the high job is exact", f"{hs}")
t.ok(took < 2.0, f"the high job finished in under 2 s while the low one ran ({took:.2f} s)")
t.ok(ls["state"] == "running", "the low audit was still running then")
last, _ = wait_done([low])
t.ok(last[low]["state"] == "done" and counts(last[low]) == (0, 0, 0) and
     last[low]["source_rows"] == 2000000, "the low audit ended exact too", f"{last[low]}")


# ---- cancel ------------------------------------------------------------------
def reading(cur, table):
    cur.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                "AND pid <> pg_backend_pid() AND query ILIKE %s", (f"%{table}%",))
    return cur.fetchone()[0]


# throttled, so that it is still running when cancelled (on an idle
# machine the 2M rows take under 2 s)
big = cli.submit(table="big", max_rows_per_second=400000)
s = wait_running(big)
t.ok(s is not None and s["ranges_done"] < s["ranges"], "a 2M-row job is mid-way")
t.ok(reading(ca, "big") + reading(cb, "big") > 0, "its workers are reading the table")
# the target side held back by a lock: the source side's finished trees
# wait for their partners, held, and the heartbeats say so (a range's two
# trees otherwise finish together and are released before a heartbeat)
lk = pb.connect(db)
lk.autocommit = False
lk.cursor().execute("LOCK TABLE big IN ACCESS EXCLUSIVE MODE")
for _ in range(100):
    most_trees = max(most_trees, cli.trees())
    if most_trees:
        break
    time.sleep(0.1)
lk.rollback()
lk.close()
t.ok(most_trees > 0, f"workers reported the trees they held ({most_trees} at most, sampled)")
t2 = time.time()
r = cli.call(T_CANCEL, job=big)
t.ok(r["t"] == T_REPLY, "cancel answered")
while time.time() - t2 < 10 and cli.status(big)["state"] != "cancelled":
    time.sleep(0.02)
ended = time.time() - t2
while time.time() - t2 < 10 and reading(ca, "big") + reading(cb, "big") > 0:
    time.sleep(0.02)
stopped = time.time() - t2
while time.time() - t2 < 15 and cli.trees() != 0:
    time.sleep(0.1)
released = time.time() - t2
t.diag(f"cancel: ended cancelled after {ended:.2f} s, reads stopped after {stopped:.2f} s, "
       f"workers hold no tree after {released:.2f} s")
t.ok(cli.status(big)["state"] == "cancelled" and ended < 1.0, "the job ended cancelled within 1 s")
t.ok(stopped < 1.0, f"the workers stopped reading its ranges within 1 s ({stopped:.2f} s)")
t.ok(cli.trees() == 0, "every worker's tree count is back to 0")
after = cli.submit(table="t10k")
last, _ = wait_done([after])
t.ok(last[after]["state"] == "done" and counts(last[after]) == expect["t10k"],
     "the next job on the same workers is exact")

cl.stop()
t.ok(not cl.sanitizer_reports(), "no sanitizer reports", "\n".join(cl.sanitizer_reports()))


# ---- a worker that never answers -----------------------------------------------
class Mute(threading.Thread):
    """Says hello, heartbeats, takes every request and never answers."""

    def __init__(self, ep):
        super().__init__(daemon=True)
        self.s = zmq.Context.instance().socket(zmq.DEALER)
        self.s.setsockopt(zmq.LINGER, 0)
        self.s.connect(ep)
        self.asked = 0
        self.stop = False

    def send(self, t_):
        self.s.send(b"\x00" + msgpack.packb({"v": 1, "t": t_, "id": 0, "enc": 2,
                                             "dbs": ["src", "tgt"]}, use_bin_type=True))

    def run(self):
        self.send(T_HELLO)
        while not self.stop:
            if self.s.poll(200):
                self.s.recv()
                self.asked += 1
            self.send(T_HEARTBEAT)


cl2 = Cluster({"src": pa.dsn(da), "tgt": pb.dsn(db)}, hb_timeout=60)
cl2.start_coordinator(extra=("--request-timeout", "2"))
cl2.start_worker(slots=1)
t.ok(cl2.wait_workers(1), "a real worker registered")
mute = Mute(cl2.workers_ep)  # second: describe and split go to the first idle one
mute.start()
t.ok(cl2.wait_workers(2), "a mute peer registered too")
cli2 = Client(cl2.clients_ep)
t3 = time.time()
j = cli2.submit(table="t10k", ranges=6)
end = time.time() + 120
while time.time() < end and cli2.status(j)["state"] not in ("done", "failed", "cancelled"):
    time.sleep(0.1)
s = cli2.status(j)
t.diag(f"with a mute worker: {s['state']} in {time.time() - t3:.1f} s; the mute peer was "
       f"asked {mute.asked} times")
t.ok(mute.asked > 0, "the mute peer was given work")
t.ok(s["state"] == "done" and counts(s) == expect["t10k"],
     "the job still ended exact after the deadlines", f"{s}")
mute.stop = True
log = open(os.path.join(cl2.dir, "coordinator.log")).read()
t.ok("did not answer a range task within 2 s" in log,
     "the coordinator logged the worker that did not answer its range task", log[-2000:])
cl2.stop()
t.ok(not cl2.sanitizer_reports(), "no sanitizer reports", "\n".join(cl2.sanitizer_reports()))
t.done()
