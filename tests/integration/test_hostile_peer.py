#!/usr/bin/python3
"""A hostile worker: a Python fake that registers with the coordinator and
relays a real worker's replies, lying in one of them (SCENARIOS=a,b picks
some). Each lie is caught: the coordinator drops the fake (logging why),
gives its work to the honest worker, and the job ends with the exact
answer; with no honest worker it fails saying so. A decompression bomb
(1 MB of lz4 claiming 256 MiB of nils; 32 MiB of nils within the size cap)
neither stalls the client socket nor grows the coordinator's memory."""
import json
import os
import subprocess
import sys
import threading
import time

import msgpack
import zmq

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Cluster  # noqa: E402
from harness import SLUICE, PgServer, Tap, free_port  # noqa: E402
from wire import decode, encode, int_key, lz4  # noqa: E402

t = Tap()
T_DESCRIBE, T_SPLIT, T_TREE, T_NODES, T_ROWS, T_FETCH, T_STREAM = 2, 3, 4, 5, 6, 7, 25
T_HELLO, T_REPLY, T_HEARTBEAT, T_WORKERS = 1, 10, 12, 16


def nil_bomb(size):
    """{v, t: reply, id, rows: [nils]}, `size` bytes of msgpack, as an lz4 frame."""
    head = b"".join(msgpack.packb(x) for x in ("v", 1, "t", T_REPLY, "id", 0, "rows"))
    n = size - len(head) - 6
    body = b"\x84" + head + b"\xdd" + n.to_bytes(4, "big") + b"\xc0" * n
    return b"\x01" + len(body).to_bytes(4, "big") + lz4(body)


def bomb_frames():
    big = nil_bomb(256 << 20)  # the frame: 1 MB of lz4, 256 MiB of nils
    t.diag(f"bomb: {len(big)} bytes of frame expanding to {256 << 20} bytes of msgpack")
    return [nil_bomb(32 << 20), big, b"\x00\xdd\xff\xff\xff\xff"]


# Each lie: the request type whose first reply it changes, and how. Each
# returns True when it could lie (the reply had enough in it).
def lie_split_order(m):
    b = m.get("bounds", [])
    if len(b) < 2:
        return False
    b[0], b[1] = b[1], b[0]
    return True


def lie_tree_rows(m):
    m["rows"] += 1000  # the count no longer matches the root's
    return bool(m["nodes"])


def lie_nodes_level(m):
    for n in m["nodes"]:
        n[0] += 1  # children at their parent's level: the drill-down never ends
    return True


def lie_nodes_order(m):
    m["nodes"].reverse()
    return len(m["nodes"]) > 1


def lie_nodes_lastkey(m):
    m["nodes"][-1][4] = int_key(10 ** 6)  # the children end past their parent
    return True


def lie_rows_order(m):
    m["rows"].reverse()
    return len(m["rows"]) > 1


def lie_rows_badkey(m):
    if not m["rows"]:
        return False
    m["rows"][0][0] = b"\x20abc\x00\x00"  # a text key for an integer column
    return True


def lie_rows_hash(m):
    if not m["rows"]:
        return False
    m["rows"][-1][1] = m["rows"][-1][1][:15]
    return True


def lie_fetch_unasked(m):
    if not m["rows"]:
        return False
    fake = list(m["rows"][0])
    fake[0] = int_key(-7)  # a row nobody asked for: would be "missing-in-target id=-7"
    m["rows"].insert(0, fake)
    return True


def lie_fetch_count(m):
    if not m["rows"]:
        return False
    m["rows"][0][1].pop()
    return True


def lie_stream_order(m):
    m["rows"].reverse()
    return len(m["rows"]) > 1


def lie_stream_outside(m):
    if not m["rows"]:
        return False
    m["rows"][0][0] = int_key(-7)  # below the span asked for
    return True


def lie_stream_stall(m):
    m["rows"] = []  # "more" after no rows: it would be asked the same forever
    m["more"] = 1
    return True


def lie_stream_count(m):
    if not m["rows"]:
        return False
    m["rows"][-1][2].pop()
    return True


SCENARIOS = {
    # name: (request type lied about, lie, --ranges, honest worker present);
    # the stream's lies on dsrc/dtgt, where every row differs (a dense range)
    "bomb": (T_DESCRIBE, "bomb", 1, True),
    "split-order": (T_SPLIT, lie_split_order, 3, True),
    "tree-rows": (T_TREE, lie_tree_rows, 1, True),
    "nodes-level": (T_NODES, lie_nodes_level, 1, True),
    "nodes-order": (T_NODES, lie_nodes_order, 1, True),
    "nodes-lastkey": (T_NODES, lie_nodes_lastkey, 1, True),
    "rows-order": (T_ROWS, lie_rows_order, 1, True),
    "rows-badkey": (T_ROWS, lie_rows_badkey, 1, True),
    "rows-hash": (T_ROWS, lie_rows_hash, 1, True),
    "fetch-unasked": (T_FETCH, lie_fetch_unasked, 1, True),
    "fetch-count": (T_FETCH, lie_fetch_count, 1, True),
    "alone-tree-rows": (T_TREE, lie_tree_rows, 1, False),
    "stream-order": (T_STREAM, lie_stream_order, 1, True),
    "stream-outside": (T_STREAM, lie_stream_outside, 1, True),
    "stream-stall": (T_STREAM, lie_stream_stall, 1, True),
    "stream-count": (T_STREAM, lie_stream_count, 1, True),
}


class FakeWorker(threading.Thread):
    """Registers with the coordinator as a worker and relays a real worker
    (which connects to it as if it were the coordinator), lying once."""

    def __init__(self, cl, ttype, lie):
        super().__init__(daemon=True)
        self.ttype, self.lie = ttype, lie
        self.ctx = zmq.Context()
        self.up = self.ctx.socket(zmq.DEALER)
        self.up.setsockopt(zmq.LINGER, 0)
        self.up.connect(cl.workers_ep)
        self.down = self.ctx.socket(zmq.ROUTER)
        self.down.setsockopt(zmq.LINGER, 0)
        ep = f"tcp://127.0.0.1:{free_port()}"
        self.down.bind(ep)
        self.real = subprocess.Popen(
            [SLUICE, "worker", "--coordinator", ep, "--db-file", cl.dbfile, "--slots", "1",
             "--heartbeat", "0.3"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=cl.env)
        self.types = {}  # request id -> type
        self.lied = False
        self.stop = threading.Event()

    def run(self):
        ident = None
        waiting = []
        poller = zmq.Poller()
        poller.register(self.up, zmq.POLLIN)
        poller.register(self.down, zmq.POLLIN)
        while not self.stop.is_set():
            for sock, _ in poller.poll(100):
                if sock is self.down:
                    ident, frame = self.down.recv_multipart()
                    for f in waiting:
                        self.down.send_multipart([ident, f])
                    waiting = []
                    self.up.send(self.tamper(frame))
                else:
                    frame = self.up.recv()
                    try:
                        m = decode(frame)
                        self.types[m.get("id")] = m.get("t")
                    except Exception:
                        m = {}
                    if self.lie == "bomb" and not self.lied and m.get("t") == self.ttype:
                        self.lied = True
                        for b in bomb_frames():
                            self.up.send(b)
                        continue
                    if ident is None:
                        waiting.append(frame)
                    else:
                        self.down.send_multipart([ident, frame])
        self.up.close()
        self.down.close()
        self.ctx.term()

    def tamper(self, frame):
        if self.lied or self.lie == "bomb":
            return frame
        m = decode(frame)
        if m.get("t") != T_REPLY or self.types.get(m.get("id")) != self.ttype:
            return frame
        if not self.lie(m):
            return frame
        self.lied = True
        return encode(m)

    def close(self):
        self.stop.set()
        self.join(5)
        self.real.kill()
        self.real.wait()


def workers_alive(cl):
    code, out, _ = cl.client("workers")
    return out.count(" alive ") if code == 0 else -1


def wait_alive(cl, n, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        if workers_alive(cl) >= n:
            return True
        time.sleep(0.1)
    return False


class Pinger(threading.Thread):
    """Asks the coordinator's client socket for its workers every 50 ms and
    keeps the slowest answer."""

    def __init__(self, ep):
        super().__init__(daemon=True)
        self.ep, self.worst, self.unanswered = ep, 0.0, 0
        self.stop = threading.Event()

    def run(self):
        ctx = zmq.Context()
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(self.ep)
        i = 0
        while not self.stop.is_set():
            i += 1
            t0 = time.time()
            s.send(encode({"v": 1, "t": T_WORKERS, "id": i}))
            while True:  # answers to earlier, timed-out asks are skipped
                if not s.poll(20000):
                    self.unanswered += 1
                    break
                if decode(s.recv()).get("id") == i:
                    break
            self.worst = max(self.worst, time.time() - t0)
            time.sleep(0.05)
        s.close()
        ctx.term()


def vm_hwm_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return -1


pg = PgServer()
db = pg.createdb("hostile")
cur = pg.connect(db).cursor()
cur.execute("CREATE TABLE src (id int PRIMARY KEY, v text)")
cur.execute("INSERT INTO src SELECT i, md5(i::text) FROM generate_series(1, 4000) i")
cur.execute("CREATE TABLE tgt AS SELECT * FROM src")
cur.execute("ALTER TABLE tgt ADD PRIMARY KEY (id)")
CHANGED, MISSING, EXTRA = [17, 900, 2222, 3100, 3999], [5, 2500], [4001, 4100]
for k in CHANGED:
    cur.execute("UPDATE tgt SET v = 'changed' WHERE id = %s", (k,))
cur.execute("DELETE FROM tgt WHERE id = ANY(%s)", (MISSING,))
for k in EXTRA:
    cur.execute("INSERT INTO tgt VALUES (%s, 'new')", (k,))
EXPECTED = ({("changed", (str(k),), ("v",)) for k in CHANGED} |
            {("missing-in-target", (str(k),), ()) for k in MISSING} |
            {("extra-in-target", (str(k),), ()) for k in EXTRA})
# every row differs: the drill-down hands the range over to the stream
cur.execute("CREATE TABLE dsrc AS SELECT * FROM src")
cur.execute("ALTER TABLE dsrc ADD PRIMARY KEY (id)")
cur.execute("CREATE TABLE dtgt AS SELECT id, v || '!' AS v FROM src")
cur.execute("ALTER TABLE dtgt ADD PRIMARY KEY (id)")
DENSE_EXPECTED = {("changed", (str(k),), ("v",)) for k in range(1, 4001)}


def report_set(doc):
    return {(d["kind"], tuple(d["key"].values()),
             tuple(sorted(c["column"] for c in d.get("columns", [])))) for d in doc["divergences"]}


def submit_wait(cl, ranges, timeout, dense=False):
    try:
        r = subprocess.run(
            [SLUICE, "submit", "source", "target", "--table", "dsrc" if dense else "src",
             "--target-table", "dtgt" if dense else "tgt",
             "--ranges", str(ranges), "--wait", "--format", "json", "--no-progress",
             "--coordinator", cl.clients_ep] +
            # a rate (one no table reaches) keeps the dense range on streams:
            # merge tasks, which would take it otherwise, have lies of their own
            # (test_merge_adversarial.py)
            (["--max-rows-per-second", "1000000000"] if dense else []),
            capture_output=True, text=True, env=cl.env,
            timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, None, "timed out"
    try:
        return r.returncode, json.loads(r.stdout), r.stderr
    except ValueError:
        return r.returncode, None, r.stderr


chosen = os.environ.get("SCENARIOS")
for name, (ttype, lie, ranges, honest) in SCENARIOS.items():
    if chosen and name not in chosen.split(","):
        continue
    cl = Cluster({"source": pg.dsn(db), "target": pg.dsn(db)}, hb_timeout=2.0)
    coord = cl.start_coordinator()
    fake = FakeWorker(cl, ttype, lie)
    fake.start()
    ready = wait_alive(cl, 1)
    if honest:
        cl.start_worker(slots=1)
        ready = ready and wait_alive(cl, 2)
    t.ok(ready, f"{name}: the fake worker registered first"
         f"{', then an honest one' if honest else ''}")
    pinger = Pinger(cl.clients_ep)
    pinger.start()
    hwm0 = vm_hwm_kb(coord.pid)
    dense = ttype == T_STREAM
    expected = DENSE_EXPECTED if dense else EXPECTED
    code, doc, err = submit_wait(cl, ranges, 90, dense)
    pinger.stop.set()
    pinger.join(30)
    alive = coord.poll() is None
    hwm1 = vm_hwm_kb(coord.pid) if alive else -1
    fake.close()
    cl.stop()
    log = open(os.path.join(cl.dir, "coordinator.log")).read()
    dropped = [ln for ln in log.splitlines() if "dropped" in ln]
    t.ok(fake.lied, f"{name}: the fake worker told its lie")
    t.ok(alive, f"{name}: the coordinator survived", log[-2000:])
    t.ok(dropped, f"{name}: the coordinator logged why it dropped the fake: "
         f"{dropped[0] if dropped else log[-300:]}", log[-2000:])
    if honest:
        t.ok(code == 1 and doc and report_set(doc) == expected and
             doc["source"]["rows"] == 4000 and doc["target"]["rows"] == 4000,
             f"{name}: the job gave the exact answer through the honest worker",
             f"exit {code}, {err[-500:]}, "
             f"{sorted(report_set(doc) ^ expected)[:10] if doc else None}, "
             f"{(doc or {}).get('source')}, {(doc or {}).get('target')}")
    else:
        t.ok(code == 2 and "dropped" in err,
             f"{name}: with no honest worker the job fails saying why: {err.strip()[-300:]}")
    t.ok(pinger.worst < 2.0 and not pinger.unanswered,
         f"{name}: the client socket answered within {pinger.worst:.2f} s throughout "
         f"({pinger.unanswered} unanswered)")
    if lie == "bomb":
        grown = (hwm1 - hwm0) / 1024 if hwm1 > 0 else -1
        t.diag(f"coordinator peak RSS {hwm0 // 1024} MB before the bombs, {hwm1 // 1024} MB after")
        t.ok(0 <= grown < 100, f"{name}: the bombs grew the coordinator's peak RSS by "
             f"{grown:.0f} MB (< 100)")
    reports = cl.sanitizer_reports()
    t.ok(not reports, f"{name}: no sanitizer reports", "\n".join(reports))
# the item limit does not limit honest jobs: 1,500 changed rows of 1,501
# columns would be a 4.5M-item fetch reply; the coordinator asks in batches
import sqlite3  # noqa: E402
import tempfile  # noqa: E402
wdir = tempfile.mkdtemp(prefix="sluice-wide-")
ddl = ", ".join(f"c{k} INTEGER" for k in range(1, 1501))
for name, val in (("a", 1), ("b", 2)):
    lite = sqlite3.connect(os.path.join(wdir, name + ".db"))
    lite.execute(f"CREATE TABLE w (id INTEGER PRIMARY KEY, {ddl})")
    lite.executemany("INSERT INTO w (id, c1, c1500) VALUES (?, ?, 7)",
                     [(i, val) for i in range(1, 1501)])
    lite.commit()
    lite.close()
r = subprocess.run([SLUICE, "diff", "sqlite:" + os.path.join(wdir, "a.db"),
                    "sqlite:" + os.path.join(wdir, "b.db"), "--table", "w", "--ranges", "1",
                    "--format", "json",
                    "--no-progress"], capture_output=True, text=True, timeout=600,
                   env=dict(os.environ, **__import__("harness").SAN_ENV))
try:
    divs = json.loads(r.stdout)["divergences"]
except ValueError:
    divs = []
t.ok(r.returncode == 1 and len(divs) == 1500 and
     all([c["column"] for c in d["columns"]] == ["c1"] for d in divs),
     f"1,500 changed rows of 1,501 columns: all found ({len(divs)}), fetches kept under the "
     f"item limit", r.stderr[-500:])
t.done()
