#!/usr/bin/python3
"""The cluster: a coordinator and three worker processes on loopback, a real
PostgreSQL (test_random_cluster.sh runs the randomized differential test
through such a cluster). Jobs submitted over sockets give the exact answer
with a worker SIGKILLed mid-job, the coordinator
SIGKILLed and restarted mid-job (finished ranges not redone, counted from
the control database), and a PostgreSQL backend terminated mid-range.
Malformed messages to each socket are answered or dropped; divergence
events arrive on the PUB socket while the job still runs."""
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Cluster  # noqa: E402
from harness import SLUICE, PgServer, Tap  # noqa: E402

t = Tap()
seed = int(os.environ.get("SEED", int(time.time())))
rnd = random.Random(seed)
t.diag(f"seed {seed}")
pg = PgServer()
db = pg.createdb("cl")
conn = pg.connect(db)
cur = conn.cursor()
# the control database is PostgreSQL here (the other tests use SQLite)
ctl = pg.createdb("control")
cl = Cluster({"source": pg.dsn(db), "target": pg.dsn(db)}, state=pg.dsn(ctl))
ctlc = pg.connect(ctl).cursor()
cl.start_coordinator()
for _ in range(3):
    cl.start_worker(slots=1)
t.ok(cl.wait_workers(3), "three worker processes registered with the coordinator")
code, out, err = cl.client("workers")
t.ok(pg.PASSWORD not in out + err and "source target" in out,
     "workers listing names databases, never their DSNs", out)
for p in [cl.coordinator, cl.workers[0]]:
    cmdline = open(f"/proc/{p.pid}/cmdline", "rb").read().decode(errors="replace")
    t.ok(pg.PASSWORD not in cmdline, f"process {p.pid}: no password on its command line")


def oracle(src, tgt, keycols, cols):
    on = " AND ".join(f"s.{k} = t.{k}" for k in keycols)
    k0 = keycols[0]
    diffs = " OR ".join(f"s.{c} IS DISTINCT FROM t.{c}" for c in cols)
    arr = ", ".join(f"CASE WHEN s.{c} IS DISTINCT FROM t.{c} THEN '{c}' END" for c in cols)
    keyexpr = ", ".join(f"coalesce(s.{k}, t.{k})::text" for k in keycols)
    cur.execute(f"""SELECT {keyexpr}, CASE WHEN s.{k0} IS NULL THEN 'extra-in-target'
        WHEN t.{k0} IS NULL THEN 'missing-in-target' ELSE 'changed' END,
        array_remove(ARRAY[{arr}], NULL) FROM {src} s FULL JOIN {tgt} t ON {on}
        WHERE s.{k0} IS NULL OR t.{k0} IS NULL OR {diffs}""")
    out = set()
    for row in cur.fetchall():
        n = len(keycols)
        kind = row[n]
        out.add((kind, tuple(row[:n]), tuple(sorted(row[n + 1])) if kind == "changed" else ()))
    return out


def report_set(doc):
    s = set()
    for d in doc["divergences"]:
        s.add((d["kind"], tuple(d["key"].values()),
               tuple(sorted(c["column"] for c in d.get("columns", [])))))
    return s


def submit_wait(*args):
    code, out, err = cl.client("submit", "source", "target", "--wait", "--format", "json",
                               "--no-progress", *args)
    try:
        return code, json.loads(out), err
    except ValueError:
        return code, None, err


# ---- a big table for the fault tests -----------------------------------------
cur.execute("CREATE TABLE big_s (id bigint PRIMARY KEY, v int, note text)")
cur.execute("INSERT INTO big_s SELECT i, i % 1000, repeat(md5(i::text), 3) "
            "FROM generate_series(1, 400000) i")
cur.execute("CREATE TABLE big_t AS SELECT * FROM big_s")
cur.execute("ALTER TABLE big_t ADD PRIMARY KEY (id)")
cur.execute("UPDATE big_t SET v = -1 WHERE id % 39989 = 0")
cur.execute("DELETE FROM big_t WHERE id % 100003 = 0")
cur.execute("INSERT INTO big_t VALUES (400001, 1, 'new'), (400002, 2, 'new')")
BIG_EXPECTED = oracle("big_s", "big_t", ["id"], ["v", "note"])
t.diag(f"big table: {len(BIG_EXPECTED)} divergences expected")
BIG = ["--table", "big_s", "--target-table", "big_t", "--ranges", "40"]


def wait_ranges(job, n, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        s = cl.status(job)
        if s and (s["ranges_done"] >= n or s["state"] != "running" and s["state"] != "queued"):
            return s
        time.sleep(0.05)
    return None


def events_of(job):
    ctlc.execute("SELECT frame FROM events WHERE job = %s", (job,))
    rows = [(bytes(f),) for (f,) in ctlc.fetchall()]
    import msgpack
    out = set()
    for (frame,) in rows:
        assert frame[0] == 0, "events are small and never compressed"
        m = msgpack.unpackb(frame[1:], raw=False)
        if m.get("event") != "divergence" or m.get("kind") == "schema":
            continue
        key = tuple(v for _, v in m["key"])
        out.add((m["kind"], key, tuple(sorted(c[0] for c in m["columns"]))
                 if m["kind"] == "changed" else ()))
    return out


def exact(job, label):
    s = cl.wait_state(job)
    got = events_of(job)
    ok = s is not None and s["state"] == "done" and got == BIG_EXPECTED
    t.ok(ok, label, f"state {s and s['state']} {s and s.get('error')}\n"
                    f"missed {sorted(BIG_EXPECTED - got)[:5]}\nfalse {sorted(got - BIG_EXPECTED)[:5]}")
    dup = s and (s["changed"] + s["missing_in_target"] + s["extra_in_target"]) != len(BIG_EXPECTED)
    t.ok(not dup, f"{label}: summary counts each divergence once", s)


# ---- a worker SIGKILLed mid-job ------------------------------------------------
job = cl.submit("source", "target", *BIG)
s = wait_ranges(job, 3)
victim = cl.workers[0]
victim.kill()
victim.wait()
t.diag(f"killed worker {victim.pid} with {s and s['ranges_done']}/40 ranges done")
exact(job, "worker SIGKILLed mid-job: the job finishes with the exact answer")
cl.start_worker(slots=1)

# ---- a worker stopped with SIGTERM mid-job: it finishes its task and leaves ------
job = cl.submit("source", "target", *BIG)
wait_ranges(job, 3)
leaving = cl.workers[1]
leaving.send_signal(signal.SIGTERM)
try:
    leaving.wait(timeout=30)
    left_ok = leaving.returncode == 0
except subprocess.TimeoutExpired:
    left_ok = False
t.ok(left_ok, "a worker sent SIGTERM mid-job exits by itself, status 0")
exact(job, "worker stopped with SIGTERM mid-job: the job still gives the exact answer")
cl.start_worker(slots=1)

# ---- a PostgreSQL backend terminated mid-range ---------------------------------
job = cl.submit("source", "target", *BIG)
wait_ranges(job, 1)
killer = pg.connect()
kc = killer.cursor()
terminated = 0
end = time.time() + 10
while terminated == 0 and time.time() < end and cl.status(job)["state"] == "running":
    # workers read a range through a cursor: between fetches the backend is
    # "idle in transaction", still in the middle of the range
    kc.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
               "WHERE application_name = 'sluice' AND datname = %s "
               "AND state IN ('active', 'idle in transaction') "
               "AND (query LIKE '%%big_%%' OR query LIKE 'FETCH%%')", (db,))
    terminated = kc.fetchone()[0]
t.ok(terminated > 0, f"terminated {terminated} sluice backends while they were reading")
exact(job, "PostgreSQL backends terminated mid-range: retried, exact answer")

# ---- the coordinator SIGKILLed and restarted mid-job ---------------------------
job = cl.submit("source", "target", *BIG)
s = wait_ranges(job, 8)
cl.coordinator.kill()
cl.coordinator.wait()
ctlc.execute("SELECT idx, finished FROM ranges WHERE job = %s AND done = 1", (job,))
before = dict(ctlc.fetchall())
t.diag(f"coordinator killed with {len(before)} ranges recorded done")
cl.start_coordinator()
s = cl.wait_state(job)
ctlc.execute("SELECT idx, finished FROM ranges WHERE job = %s AND done = 1", (job,))
after = dict(ctlc.fetchall())
t.ok(len(before) > 0 and all(after.get(i) == f for i, f in before.items()),
     f"after the restart, the {len(before)} finished ranges were not redone "
     "(their finish times in the control database are unchanged)")
exact(job, "coordinator SIGKILLed and restarted mid-job: the exact answer")

# ---- divergence events on the PUB socket while the job runs ---------------------
events = []


def reader(p):
    for line in p.stdout:
        events.append((time.time(), json.loads(line)))


watch = subprocess.Popen([SLUICE, "watch", "--events", cl.events_ep, "--format", "json",
                          "--timeout", "120"], stdout=subprocess.PIPE, text=True, env=cl.env)
th = threading.Thread(target=reader, args=(watch,), daemon=True)
th.start()
time.sleep(0.5)  # let the subscription reach the coordinator
job = cl.submit("source", "target", *BIG)
cl.wait_state(job)
time.sleep(0.5)
watch.terminate()
watch.wait()
mine = [(ts, e) for ts, e in events if e.get("job") == job]
divs = [e for _, e in mine if e["event"] == "divergence"]
done_at = [e["at_ms"] for _, e in mine if e["event"] == "job" and e.get("state") == "done"]
t.ok(len(divs) == len(BIG_EXPECTED), f"{len(divs)} divergence events received on the PUB socket "
     f"(expected {len(BIG_EXPECTED)})")
early = [e for e in divs if done_at and e["at_ms"] <= done_at[0]]
t.ok(len(early) == len(divs) and done_at,
     "every divergence event was published while the job was still running")
lat = sorted(e["at_ms"] - e["read_at_ms"] for e in divs if e.get("read_at_ms"))
if lat:
    t.diag(f"range read -> event published: median {lat[len(lat) // 2]} ms, max {lat[-1]} ms")
t.ok(lat and lat[-1] < 5000, "each event published within 5 s of its range being read")

# ---- malformed messages ------------------------------------------------------------
import zmq  # noqa: E402
ctx = zmq.Context()
answered = {}
import msgpack  # noqa: E402
for name, ep in (("worker", cl.workers_ep), ("client", cl.clients_ep)):
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(ep)
    if name == "worker":  # a registered worker that then talks garbage
        s.send(b"\x00" + msgpack.packb({"v": 1, "t": 1, "id": 0, "enc": 2,
                                            "dbs": ["source", "target"]}))
    for i in range(1000):
        kind = i % 4
        if kind == 0:
            payload = os.urandom(rnd.randint(0, 64))
        elif kind == 1:
            payload = b"\x00" + os.urandom(rnd.randint(0, 64))
        elif kind == 2:
            payload = b"\x01\xff\xff\xff\xff" + os.urandom(8)
        else:
            payload = b"\x00\xdd\xff\xff\xff\xff"  # array of 4G items, 0 bytes
        s.send(payload)
    got = 0
    end = time.time() + 10
    while time.time() < end and got < 1000:
        if s.poll(500):
            s.recv()
            got += 1
    answered[name] = got
    s.close()
ctx.term()
t.ok(cl.coordinator.poll() is None, "the coordinator survived 2,000 malformed messages")
t.ok(answered["client"] == 1000 and answered["worker"] == 1000,
     f"every malformed message was answered with an error: {answered}")
job = cl.submit("source", "target", *BIG)
exact(job, "after the garbage (and a fake worker that never answers), a job still gives the "
           "exact answer")

# ---- live data: the source changes during the job, the target follows 0.3 s later --
cur.execute("CREATE TABLE live_s (id int PRIMARY KEY, v int, w text)")
cur.execute("INSERT INTO live_s SELECT i, 0, md5(i::text) FROM generate_series(1, 150000) i")
cur.execute("CREATE TABLE live_t AS SELECT * FROM live_s")
cur.execute("ALTER TABLE live_t ADD PRIMARY KEY (id)")
REAL = [7, 30011, 60013, 90001, 149999]
for k in REAL:
    cur.execute("UPDATE live_t SET w = 'really different' WHERE id = %s", (k,))
stop = threading.Event()
writes = [0]


def writer():
    wc = pg.connect(db).cursor()
    lag = []
    r = random.Random(seed + 1)
    while not stop.is_set():
        k = r.randint(100, 149000)
        if k in REAL:
            continue
        wc.execute("UPDATE live_s SET v = v + 1 WHERE id = %s", (k,))
        lag.append((time.time() + 0.3, k))
        while lag and lag[0][0] <= time.time():  # "replication", 0.3 s behind
            _, kk = lag.pop(0)
            wc.execute("UPDATE live_t SET v = (SELECT v FROM live_s WHERE id = %s) WHERE id = %s",
                       (kk, kk))
        writes[0] += 1
        time.sleep(0.002)
    time.sleep(0.35)
    for _, kk in lag:
        wc.execute("UPDATE live_t SET v = (SELECT v FROM live_s WHERE id = %s) WHERE id = %s",
                   (kk, kk))


wt = threading.Thread(target=writer)
wt.start()
time.sleep(0.5)
code, doc, err = submit_wait("--table", "live_s", "--target-table", "live_t", "--ranges", "30",
                             "--rechecks", "2", "--settle", "1")
stop.set()
wt.join()
confirmed = {tuple(d["key"].values()) for d in (doc or {}).get("divergences", [])
             if d.get("status") == "confirmed"}
transient = [d for d in (doc or {}).get("divergences", []) if d.get("status") == "transient"]
t.diag(f"{writes[0]} source writes during the job; {len(transient)} transient divergences seen")
t.ok(code == 1 and confirmed == {(str(k),) for k in REAL},
     "under write load with replication lag, exactly the real divergences are confirmed",
     f"exit {code} {err}\nconfirmed {sorted(confirmed)}")
t.ok(all(tuple(d["key"].values()) not in {(str(k),) for k in REAL} for d in transient),
     "no real divergence was dismissed as transient")

cl.stop()
reports = cl.sanitizer_reports()
t.ok(not reports, "no sanitizer report from the coordinator or any worker", "\n".join(reports))
t.done()
