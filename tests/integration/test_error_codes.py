#!/usr/bin/python3
"""Error codes on the wire (issue 10, item 6): a worker's error replies
carry a "code" naming the kind of failure (base/README.md), so the
coordinator and clients branch on it, not on the message. A fake
coordinator (a ROUTER the worker connects to) sends requests and checks
the code of each error reply: a missing table is not_found, a wrong
password or a missing privilege auth, a malformed request invalid, a
refused --where auth, a syntax error in an allowed --where invalid (its
message redacted, its code kept), an unreachable database database."""
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

import msgpack
import zmq

sys.path.insert(0, os.path.dirname(__file__))
from harness import SAN_ENV, SLUICE, PgServer, Tap, check_sanitizer, free_port  # noqa: E402

T_HELLO, T_DESCRIBE, T_SPLIT, T_REPLY, T_ERROR, T_HEARTBEAT = 1, 2, 3, 10, 11, 12
ENC_INT, ENC_TEXT = 1, 5

t = Tap()
pg = PgServer()
db = pg.createdb("codes")
c = pg.connect(db)
cur = c.cursor()
cur.execute("CREATE TABLE t (id int PRIMARY KEY, note text)")
cur.execute("INSERT INTO t SELECT g, 'n' || g FROM generate_series(1, 100) g")
cur.execute("CREATE ROLE reader LOGIN PASSWORD 'reader-pw'")  # no SELECT on t
c.close()

tmp = tempfile.mkdtemp(prefix="sluice-codes-")
lite = os.path.join(tmp, "lite.db")
s = sqlite3.connect(lite)
s.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, note TEXT)")
s.commit()
s.close()
reader = f"postgresql://reader:reader-pw@127.0.0.1:{pg.port}/{db}"
dbfile = os.path.join(tmp, "dbs.conf")
with open(dbfile, "w") as f:
    f.write(f"good={pg.dsn(db)}\n")
    f.write(f"badpw={pg.dsn(db, password='not-the-password')}\n")
    f.write(f"reader={reader}\n")
    f.write(f"lite=sqlite:{lite}\n")
    f.write(f"nofile=sqlite:{os.path.join(tmp, 'absent.db')}\n")
    f.write(f"down=postgresql://sluice@127.0.0.1:{free_port()}/x\n")
    f.write("allow-where good\n")

ctx = zmq.Context()
router = ctx.socket(zmq.ROUTER)
router.setsockopt(zmq.LINGER, 0)
ep = f"tcp://127.0.0.1:{free_port()}"
router.bind(ep)
env = dict(os.environ)
env.update(SAN_ENV)
env.pop("PGPASSWORD", None)
log = open(os.path.join(tmp, "worker.log"), "w")
worker = subprocess.Popen([SLUICE, "worker", "--coordinator", ep, "--db-file", dbfile, "--slots",
                           "1", "--heartbeat", "0.3"], stdout=subprocess.DEVNULL, stderr=log,
                          env=env)


def decode(frame):
    assert frame[0] == 0, "small replies are not compressed"
    return msgpack.unpackb(frame[1:], raw=False, strict_map_key=False)


def encode(m):
    return b"\x00" + msgpack.packb(m, use_bin_type=True)


ident = None
deadline = time.time() + 20
while ident is None and time.time() < deadline:
    if router.poll(500):
        who, frame = router.recv_multipart()
        if decode(frame).get("t") in (T_HELLO, T_HEARTBEAT):
            ident = who
t.ok(ident is not None, "the worker says hello to the fake coordinator")
next_id = [100]


def ask(fields=None, raw=None, timeout=60):
    """Sends a request (or raw bytes) and returns the worker's reply to it,
    skipping heartbeats; None on timeout."""
    next_id[0] += 1
    rid = next_id[0]
    if raw is not None:
        rid = 0
        router.send_multipart([ident, raw])
    else:
        m = {"v": 1, "id": rid}
        m.update(fields)
        router.send_multipart([ident, encode(m)])
    end = time.time() + timeout
    while time.time() < end:
        if not router.poll(200):
            continue
        _, frame = router.recv_multipart()
        m = decode(frame)
        if m.get("t") in (T_HELLO, T_HEARTBEAT):
            continue
        if m.get("id") == rid:
            return m
    return None


def spec(dbname, where=None):
    return {"db": dbname, "table": "t", "cols": ["id", "note"], "cls": [ENC_INT, ENC_TEXT],
            "nkey": 1, "where": where, "flags": 0}


def expect(name, fields, codes, says=None, raw=None):
    r = ask(fields, raw=raw)
    got = r.get("code") if r else None
    good = (r is not None and r.get("t") == T_ERROR and got in codes and
            isinstance(r.get("error"), str) and (says is None or says in r["error"]))
    t.ok(good, f"{name}: error reply with code {got}" + (f" ({r.get('error')})" if r else ""),
         f"expected code {' or '.join(codes)}" + (f" and {says!r}" if says else "") +
         f"; got {r!r}")
    return r


if ident is not None:
    r = ask({"t": T_DESCRIBE, "db": "good", "table": "t"})
    t.ok(r is not None and r.get("t") == T_REPLY and "code" not in r,
         "describe of an existing table succeeds (no code on a success reply)", repr(r))
    expect("missing PostgreSQL table", {"t": T_DESCRIBE, "db": "good", "table": "nosuch"},
           ["not_found"], "does not exist")
    expect("missing SQLite table", {"t": T_DESCRIBE, "db": "lite", "table": "nosuch"},
           ["not_found"], "does not exist")
    r = expect("wrong password", {"t": T_DESCRIBE, "db": "badpw", "table": "t"}, ["auth"],
               "password authentication failed")
    t.ok(r is not None and "not-the-password" not in r.get("error", ""),
         "the wrong password is not in the message")
    expect("no SELECT privilege", {"t": T_SPLIT, **spec("reader"), "ranges": 2}, ["auth"],
           "permission denied")
    expect("unknown database name", {"t": T_DESCRIBE, "db": "elsewhere", "table": "t"},
           ["not_found"], "no database named")
    expect("missing SQLite file", {"t": T_DESCRIBE, "db": "nofile", "table": "t"},
           ["database"], "does not exist")
    expect("PostgreSQL not reachable", {"t": T_DESCRIBE, "db": "down", "table": "t"},
           ["database"], "cannot connect")
    expect("describe without a table", {"t": T_DESCRIBE, "db": "good"}, ["invalid"], "table")
    expect("split with a bad spec", {"t": T_SPLIT, **spec("good"), "nkey": 5, "ranges": 2},
           ["invalid"], "malformed request")
    expect("a frame that is not msgpack", None, ["invalid"], "malformed", raw=b"\x00\xc1\xc1")
    expect("a frame of another protocol version", None, ["invalid"], "version",
           raw=b"\x00" + msgpack.packb({"v": 99, "t": T_DESCRIBE, "id": 0}))
    expect("a message a worker does not serve", {"t": T_REPLY}, ["invalid"], "does not serve")
    expect("--where not allowed for the database",
           {"t": T_SPLIT, **spec("lite", where="id > 0"), "ranges": 2}, ["auth"],
           "--allow-where")
    r = expect("syntax error in an allowed --where",
               {"t": T_SPLIT, **spec("good", where="id >"), "ranges": 2}, ["invalid"],
               "failed a query with --where")
    r = ask({"t": T_SPLIT, **spec("good"), "ranges": 2})
    t.ok(r is not None and r.get("t") == T_REPLY,
         "the worker still serves a good request after all these errors", repr(r))

worker.send_signal(signal.SIGTERM)
try:
    code = worker.wait(timeout=30)
except subprocess.TimeoutExpired:
    worker.kill()
    code = worker.wait()
log.close()
with open(os.path.join(tmp, "worker.log")) as f:
    err = f.read()
check_sanitizer(code, err, "sluice worker")
t.ok(code == 0, f"the worker stops on SIGTERM with exit 0 (got {code})", err[-2000:])
router.close()
ctx.term()
t.done()
