#!/usr/bin/python3
"""Cluster hardening. Worker slots: hundreds of workers coming and going
(fake ones saying hello with fresh identities, one identity saying hello
again and again, a real worker SIGKILLed and restarted tens of times
mid-job) neither exhaust the coordinator's worker table nor cost a job its
exact answer. --where from the cluster: refused unless the worker's operator
allowed it for that database; a failing allowed clause does not relay the
database's text (which can quote data) to the client. Endpoints: a
coordinator refuses to listen beyond loopback without CURVE unless told
--insecure."""
import json
import os
import random
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Cluster  # noqa: E402
from harness import SLUICE, PgServer, Tap, free_port, sluice  # noqa: E402

import msgpack  # noqa: E402
import zmq  # noqa: E402

t = Tap()
seed = int(os.environ.get("SEED", int(time.time())))
rnd = random.Random(seed)
t.diag(f"seed {seed}")
pg = PgServer()
src, tgt = pg.createdb("src"), pg.createdb("tgt")
sc, tc = pg.connect(src).cursor(), pg.connect(tgt).cursor()
for c in (sc, tc):
    c.execute("CREATE TABLE orders (id int PRIMARY KEY, v text, n int)")
    c.execute("INSERT INTO orders SELECT g, 'v' || g, g % 97 FROM generate_series(1, 60000) g")
    c.execute("CREATE TABLE secrets (s text)")
    c.execute("INSERT INTO secrets VALUES ('hunter2-marker')")
tc.execute("UPDATE orders SET v = 'changed' WHERE id IN (17, 30001, 59999)")
tc.execute("UPDATE orders SET n = -1 WHERE id IN (12346, 40000)")
tc.execute("DELETE FROM orders WHERE id IN (2, 45678)")
tc.execute("INSERT INTO orders VALUES (60001, 'extra', 0)")
EXPECTED = {("changed", ("17",)), ("changed", ("30001",)), ("changed", ("59999",)),
            ("changed", ("12346",)), ("changed", ("40000",)),
            ("missing-in-target", ("2",)), ("missing-in-target", ("45678",)),
            ("extra-in-target", ("60001",))}
DBS = {"source": pg.dsn(src), "target": pg.dsn(tgt)}


def report_set(doc):
    return {(d["kind"], tuple(d["key"].values())) for d in doc["divergences"]}


def submit_wait(cl, *args):
    try:
        code, out, err = cl.run("submit", "source", "target", "--table", "orders", "--wait",
                                "--format", "json", "--no-progress", *args, "--coordinator",
                                cl.clients_ep, timeout=120)
    except subprocess.TimeoutExpired:
        return None, None, "no answer within 120 s"
    try:
        return code, json.loads(out), err
    except ValueError:
        return code, None, err


def exact(cl, name, *args, expected=EXPECTED):
    code, doc, err = submit_wait(cl, *args)
    got = report_set(doc) if doc else None
    t.ok(code == 1 and got == expected, name,
         f"exit {code}, stderr {err.strip()}\nmissed {expected - (got or set())}\n"
         f"extra {(got or set()) - expected}")


def worker(cl, *extra, slots=2, dbfile=None):
    p = subprocess.Popen(
        [SLUICE, "worker", "--coordinator", cl.workers_ep, "--db-file", dbfile or cl.dbfile,
         "--slots", str(slots), "--heartbeat", "0.3", *extra],
        stdout=subprocess.DEVNULL, stderr=cl._log(f"worker{len(cl.workers)}"), env=cl.env)
    cl.workers.append(p)
    return p


def listing(cl):
    code, out, _ = cl.client("workers")
    lines = out.splitlines() if code == 0 else []
    return sum(" alive " in s for s in lines), len([s for s in lines if s.startswith("worker ")])


def wait_alive(cl, n, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        if listing(cl)[0] >= n:
            return True
        time.sleep(0.1)
    return False


def hello(dbs=("source", "target")):
    return b"\x00" + msgpack.packb({"v": 1, "t": 1, "id": 0, "enc": 2, "dbs": list(dbs)})


# ---- item 6: worker slots are reused ----------------------------------------------
cl = Cluster(DBS, hb_timeout=1.0)
cl.start_coordinator()


def answers(cl, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        if cl.client("workers")[0] == 0:
            return True
        time.sleep(0.1)
    return False


t.ok(answers(cl), "coordinator answers")
ctx = zmq.Context()
registered = []
for batch in range(4):  # 400 identities, 100 at a time: more than the 256 slots
    socks = []
    for _ in range(100):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(cl.workers_ep)
        s.send(hello())
        socks.append(s)
    ok = wait_alive(cl, 100, timeout=10)
    registered.append(listing(cl)[0])
    for s in socks:  # gone without a word, as a SIGKILLed worker
        s.close()
    time.sleep(1.6)  # past the heartbeat timeout: lost, their slots free
t.ok(registered == [100] * 4,
     "400 short-lived workers, 100 at a time, were each registered (slots of lost workers "
     "reused)", f"alive per batch: {registered}")
same = ctx.socket(zmq.DEALER)
same.setsockopt(zmq.LINGER, 0)
same.setsockopt(zmq.ROUTING_ID, b"one-restarting-worker")
same.connect(cl.workers_ep)
for _ in range(300):
    same.send(hello())
time.sleep(0.5)
alive, total = listing(cl)
t.ok(alive == 1 and total <= 101,
     "one identity saying hello 300 times holds one slot", f"alive {alive}, listed {total}")
same.close()
ctx.term()
time.sleep(1.6)
worker(cl, slots=2)
t.ok(wait_alive(cl, 2), "a real worker registers after 700 hellos")
exact(cl, "after 700 hellos of fake workers, a real worker gets a job done with the exact answer")
alive, total = listing(cl)
t.ok(total < 256, "the worker table stayed below its 256 slots", f"{total} listed")
cl.stop()
t.ok(not cl.sanitizer_reports(), "no sanitizer reports (churn)",
     "\n".join(cl.sanitizer_reports()))

# ---- item 6: a real worker SIGKILLed and restarted tens of times mid-job ----------
cl = Cluster(DBS, hb_timeout=1.0)
cl.start_coordinator()
w = worker(cl, slots=8)
t.ok(wait_alive(cl, 8), "eight worker slots registered")
job = subprocess.Popen(
    [SLUICE, "submit", "source", "target", "--table", "orders", "--wait", "--format", "json",
     "--no-progress", "--ranges", "32", "--max-rows-per-second", "8000", "--coordinator",
     cl.clients_ep], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cl.env)
end = time.time() + 60
while time.time() < end:  # kills start once the job is planned and running
    code, out, _ = cl.client("status", "1", "--format", "json")
    if code == 0 and json.loads(out)["state"] == "running" and json.loads(out)["ranges"] > 0:
        break
    time.sleep(0.1)
kills = 0
for i in range(33):  # 33 processes x 8 slots: 264 connections, past the old 256
    # mostly short lives; every eighth long enough to finish some ranges,
    # so kills also land between finished and unfinished ones
    time.sleep(rnd.uniform(0.3, 1.3) if i % 8 else 3.0)
    if job.poll() is not None:
        break
    w.send_signal(signal.SIGKILL)
    w.wait()
    kills += 1
    w = worker(cl, slots=8)
code, out, _ = cl.client("status", "1", "--format", "json")
t.diag(f"{kills} SIGKILLs; job then: {out.strip()}")
try:
    out, err = job.communicate(timeout=240)
except subprocess.TimeoutExpired:
    job.kill()
    out, err = job.communicate()
try:
    got = report_set(json.loads(out))
except ValueError:
    got = None
t.ok(kills >= 30 and job.returncode == 1 and got == EXPECTED,
     f"a worker SIGKILLed and restarted {kills} times mid-job: the job ends exact",
     f"exit {job.returncode}, stderr {err.strip()}\nmissed {EXPECTED - (got or set())}\n"
     f"extra {(got or set()) - EXPECTED}")
alive, total = listing(cl)
# killed workers stay listed until the heartbeat timeout, so a few
# generations of 8 overlap; without reuse there would be 272
t.ok(total <= 64, "lost workers' slots were reused", f"{total} listed, {alive} alive")
cl.stop()
t.ok(not cl.sanitizer_reports(), "no sanitizer reports (restarts)",
     "\n".join(cl.sanitizer_reports()))

# ---- item 10: --where from the cluster ------------------------------------------
# a session whose query text is the secret the attack reads back
spy = pg.connect(src)
spy_cur = spy.cursor()
import threading  # noqa: E402


def spy_query():
    try:
        spy_cur.execute("SELECT pg_sleep(600) /* zz-secret-query-marker */")
    except Exception:
        pass  # cancelled at the end


threading.Thread(target=spy_query, daemon=True).start()
ATTACK = ("1=(select query from pg_stat_activity where query like '%zz-' || 'secret%' "
          "and pid <> pg_backend_pid() limit 1)::int")
DATA_ATTACK = "1=(select s from secrets limit 1)::int"
EVEN = {d for d in EXPECTED if int(d[1][0]) % 2 == 0}

cl = Cluster(DBS, hb_timeout=2.0)
cl.start_coordinator()
worker(cl, slots=1)
t.ok(wait_alive(cl, 1), "a worker with no --allow-where registered")
for name, where in (("pg_stat_activity", ATTACK), ("a secrets table", DATA_ATTACK)):
    code, doc, err = submit_wait(cl, "--where", where)
    lines = [s for s in err.splitlines() if not s.endswith(" submitted")]
    t.ok(code == 2 and "does not accept --where" in err and "--allow-where source" in err
         and len(lines) == 1 and "marker" not in err + str(doc),
         f"--where reading {name} is refused by default, in one line, revealing nothing",
         f"exit {code}: {err}")
code, doc, err = submit_wait(cl)
t.ok(code == 1 and doc and report_set(doc) == EXPECTED, "the same worker runs jobs without --where",
     f"exit {code}: {err}")
cl.stop()

cl = Cluster(DBS, hb_timeout=2.0)
cl.start_coordinator()
worker(cl, "--allow-where", "source", slots=1)
t.ok(wait_alive(cl, 1), "a worker allowing --where on source only registered")
code, doc, err = submit_wait(cl, "--where", "id % 2 = 0")
t.ok(code == 2 and 'database "target" does not accept --where' in err,
     "a database not allowed is named in the refusal", err)
cl.stop()

cl = Cluster(DBS, hb_timeout=2.0)
cl.start_coordinator()
wlog = len(cl.workers)
worker(cl, "--allow-where", "source,target", slots=1)
t.ok(wait_alive(cl, 1), "a worker with --allow-where source,target registered")
exact(cl, "an allowed --where runs: exact answer over the rows it selects", "--where", "id % 2 = 0",
      expected=EVEN)
for name, where in (("pg_stat_activity", ATTACK), ("a secrets table", DATA_ATTACK)):
    code, doc, err = submit_wait(cl, "--where", where)
    t.ok(code == 2 and "failed a query with --where" in err and "marker" not in err + str(doc),
         f"an allowed --where reading {name} fails without relaying the database's text",
         f"exit {code}: {err}")
cl.stop()
log = open(os.path.join(cl.dir, f"worker{wlog}.log")).read()
t.ok("zz-secret-query-marker" in log and "hunter2-marker" in log,
     "the worker's own log has the database's full messages", log[-2000:])

cl = Cluster(DBS, hb_timeout=2.0)
with open(cl.dbfile, "a") as f:
    f.write("# the operator allows --where on every database here\nallow-where *\n")
cl.start_coordinator()
worker(cl, slots=1)
t.ok(wait_alive(cl, 1), "a worker whose --db-file says allow-where * registered")
exact(cl, "allow-where in the --db-file lets --where run", "--where", "id % 2 = 0", expected=EVEN)
cl.stop()
code, out, err = sluice("worker", "--db", "a=sqlite:/nonexistent", "--allow-where", "b")
t.ok(code == 2 and "no --db declares" in err, "--allow-where naming an unknown database: exit 2",
     err)
code, out, err = sluice("diff", pg.dsn(src), pg.dsn(tgt), "--table", "orders", "--where",
                        DATA_ATTACK, "--no-progress")
t.ok(code == 2 and "hunter2-marker" in err,
     "sluice diff (the user's own DSNs) still shows the database's message", err)
spy.cancel()
t.ok(not cl.sanitizer_reports(), "no sanitizer reports (where)", "\n".join(cl.sanitizer_reports()))

# ---- item 10: endpoints beyond loopback need CURVE or --insecure ----------------
tmp = cl.dir


def coordinator(*args, wait=2.0):
    eps = {"--workers-endpoint": f"tcp://127.0.0.1:{free_port()}",
           "--clients-endpoint": f"tcp://127.0.0.1:{free_port()}",
           "--events-endpoint": f"tcp://127.0.0.1:{free_port()}"}
    extra = list(args)
    for i in range(0, len(extra) - 1):
        if extra[i] in eps:
            eps[extra[i]] = extra[i + 1]
            extra[i] = extra[i + 1] = None
    cmd = [SLUICE, "coordinator", "--state", "sqlite:" + os.path.join(tmp, "ep.db")]
    for k, v in eps.items():
        cmd += [k, v]
    cmd += [a for a in extra if a is not None]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env=cl.env)
    try:
        p.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        pass
    return p, eps


for opt, ep in (("--clients-endpoint", "tcp://0.0.0.0:%d"), ("--workers-endpoint", "tcp://*:%d"),
                ("--events-endpoint", "tcp://0.0.0.0:%d")):
    p, _ = coordinator(opt, ep % free_port(), wait=20)
    err = p.stderr.read() if p.returncode is not None else ""
    if p.returncode is None:
        p.kill()
        p.wait()
    t.ok(p.returncode == 2 and len(err.strip().splitlines()) == 1 and "--curve-secret" in err
         and "--insecure" in err and opt in err,
         f"{opt} {ep.split(':')[1][2:]} without CURVE: refused, exit 2, one line", err)
port = free_port()
p, eps = coordinator("--clients-endpoint", f"tcp://0.0.0.0:{port}", "--workers-endpoint",
                     f"tcp://*:{free_port()}", "--insecure")
code, out, err = sluice("workers", "--coordinator", f"tcp://127.0.0.1:{port}")
t.ok(p.poll() is None and code == 0, "with --insecure it starts and answers", err)
p.send_signal(signal.SIGTERM)
p.wait(timeout=10)
subprocess.run([SLUICE, "keygen", os.path.join(tmp, "coord")], capture_output=True, env=cl.env)
port = free_port()
p, eps = coordinator("--clients-endpoint", f"tcp://0.0.0.0:{port}", "--curve-secret",
                     os.path.join(tmp, "coord.key"))
code, out, err = sluice("workers", "--coordinator", f"tcp://127.0.0.1:{port}",
                        "--curve-server-key", os.path.join(tmp, "coord.pub"))
t.ok(p.poll() is None and code == 0, "with --curve-secret it starts and answers", err)
p.send_signal(signal.SIGTERM)
p.wait(timeout=10)

t.done()
