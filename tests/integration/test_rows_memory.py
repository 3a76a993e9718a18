#!/usr/bin/python3
"""A worker's kept rows (worker/README.md, "Kept rows"), asked directly by a
Python fake coordinator: a rows request naming a held tree and its root
hash is answered from memory (mem: 1) with exactly the rows, bounds,
ordering and "more" cut of the same request read from the database (no
tree named); a wrong root, an unknown tree, a released tree or a restarted
worker read the database; a row changed on the database after the tree
was built shows in a request without a tree (what a re-check sends), not
in one answered from the tree; a request listing spans gets only their
rows, from memory and from the database alike."""
import os
import subprocess
import sys

import ctypes
import ctypes.util

import msgpack
import zmq

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Cluster  # noqa: E402
from harness import SLUICE, PgServer, Tap, free_port  # noqa: E402

_lz4 = ctypes.CDLL(ctypes.util.find_library("lz4"))


def decode(frame):
    if frame[0] == 1:  # lz4: raw size, then the block
        raw = int.from_bytes(frame[1:5], "big")
        out = ctypes.create_string_buffer(raw)
        n = _lz4.LZ4_decompress_safe(frame[5:], out, len(frame) - 5, raw)
        return msgpack.unpackb(out.raw[:n], raw=False, strict_map_key=False)
    return msgpack.unpackb(frame[1:], raw=False, strict_map_key=False)


def encode(m):
    return b"\x00" + msgpack.packb(m, use_bin_type=True)


t = Tap()
T_HELLO, T_TREE, T_ROWS, T_RELEASE, T_REPLY, T_HEARTBEAT = 1, 4, 6, 8, 10, 12
UNB, INCL, EXCL = 0, 1, 2

pg = PgServer()
db = pg.createdb("rowsmem")
conn = pg.connect(db)
conn.autocommit = True
cur = conn.cursor()
# 6 KB values in the key make one reply stop at 8 MiB (about 1,390 rows)
cur.execute('CREATE TABLE m (id text COLLATE "C" PRIMARY KEY, v int)')
N = 2500  # 15 MB of keys: kept (16 MiB a tree)
keys = [("k" * 6000) + f"{i:06d}" for i in range(N)]
cur.executemany("INSERT INTO m VALUES (%s, %s)", [(k, i) for i, k in enumerate(keys)])


def text_key(s):
    return b"\x20" + s.encode().replace(b"\x00", b"\x00\xff") + b"\x00\x00"


cl = Cluster({"d": pg.dsn(db)})
ctx = zmq.Context()
sock = ctx.socket(zmq.ROUTER)
sock.setsockopt(zmq.LINGER, 0)
ep = f"tcp://127.0.0.1:{free_port()}"
sock.bind(ep)


def start_worker():
    return subprocess.Popen([SLUICE, "worker", "--coordinator", ep, "--db-file", cl.dbfile,
                             "--slots", "1", "--heartbeat", "0.3"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cl.env)


ident = None
next_id = [100]


def recv_reply(want_id, timeout=60000):
    global ident
    while sock.poll(timeout):
        who, frame = sock.recv_multipart()
        m = decode(frame)
        if m.get("t") in (T_HELLO, T_HEARTBEAT):
            ident = who
            continue
        if m.get("id") == want_id:
            return m
    return None


def wait_hello():
    global ident
    ident = None
    while ident is None and sock.poll(20000):
        who, frame = sock.recv_multipart()
        if decode(frame).get("t") in (T_HELLO, T_HEARTBEAT):
            ident = who
            return decode(frame)
    return None


def ask(t_, **fields):
    next_id[0] += 1
    m = {"v": 1, "t": t_, "id": next_id[0]}
    m.update(fields)
    sock.send_multipart([ident, encode(m)])
    return recv_reply(next_id[0]) if t_ != T_RELEASE else None


SPEC = {"db": "d", "table": "m", "cols": ["id", "v"], "cls": [5, 1], "nkey": 1, "flags": 0}


def rows(lo, hi, **extra):
    """All of a span's rows, asked again from after each reply's last key
    while it says "more", as the coordinator does; and the replies' marks."""
    out, mems, cuts = [], set(), 0
    while True:
        r = ask(T_ROWS, **SPEC, sizes=1, lo=lo, hi=hi, **extra)
        if r is None or "rows" not in r:
            return None, mems, cuts
        out += [tuple(x) for x in r["rows"]]
        mems.add(r.get("mem", 0))
        if not r.get("more"):
            return out, mems, cuts
        cuts += 1
        lo = [EXCL, r["rows"][-1][0]]
        if "spans" in extra:  # the spans read to their end are dropped
            sp = [s for s in extra["spans"] if s[1][0] == UNB or s[1][1] > lo[1]]
            if sp and (sp[0][0][0] == UNB or sp[0][0][1] <= lo[1]):
                sp[0] = [lo, sp[0][1]]
            extra = dict(extra, spans=sp)
            if not sp:
                return out, mems, cuts


w = start_worker()
hello = wait_hello()
t.ok(hello is not None and hello.get("spans") == 1, "the worker says hello, taking lists of spans",
     hello)
tr = ask(T_TREE, **SPEC, lo=[UNB, None], hi=[UNB, None], tree=7)
root = tr["nodes"][0][2] if tr and tr.get("nodes") else None
t.ok(root is not None and tr["rows"] == N, f"tree 7 built over {N} rows", tr and tr.get("error"))

k = [text_key(s) for s in keys]
cases = [("the whole range", [UNB, None], [UNB, None]),
         ("[k100, k2400)", [INCL, k[100]], [EXCL, k[2400]]),
         ("(k100, k2400]", [EXCL, k[100]], [INCL, k[2400]]),
         ("a key between rows", [INCL, text_key(keys[5] + "x")], [INCL, k[9]]),
         ("one key", [INCL, k[42]], [INCL, k[42]]),
         ("nothing", [EXCL, k[42]], [EXCL, k[43]])]
for label, lo, hi in cases:
    db_rows, db_mem, db_cuts = rows(lo, hi)
    mem_rows, mem_mem, mem_cuts = rows(lo, hi, tree=7, root=root)
    t.ok(db_rows is not None and db_mem == {0} and mem_mem == {1},
         f"{label}: the database without a tree, memory with it", (db_mem, mem_mem))
    t.ok(db_rows == mem_rows and db_cuts == mem_cuts,
         f"{label}: {len(db_rows or [])} rows alike, in order, cut alike ({db_cuts} times)",
         f"{len(db_rows or [])} vs {len(mem_rows or [])}, cuts {db_cuts} vs {mem_cuts}")
for label, extra in (("memory", {"tree": 7, "root": root}), ("database", {})):
    r = ask(T_ROWS, **SPEC, sizes=1, lo=[INCL, k[5] + b"x"], hi=[UNB, None], **extra)
    t.ok(r is not None and "error" in r and "rows" not in r,
         f"a bound that is no key: refused, the {label} asked or not", r)
whole, _, cuts = rows([UNB, None], [UNB, None], tree=7, root=root)
t.ok(cuts >= 1 and [x[0] for x in whole] == k, f"the whole range over {cuts + 1} replies, "
     "each key once in key order")

# spans: only their rows; a span's end inside a cut reply is resumed
spans = [[[INCL, k[10]], [INCL, k[20]]], [[EXCL, k[500]], [EXCL, k[2200]]],
         [[INCL, k[2490]], [UNB, None]]]
want = [x for x in whole if k[10] <= x[0] <= k[20] or k[500] < x[0] < k[2200] or x[0] >= k[2490]]
for label, extra in (("memory", {"tree": 7, "root": root}), ("database", {})):
    got, mem, cuts = rows([INCL, k[10]], [UNB, None], spans=spans, **extra)
    t.ok(got == want and mem == {1 if extra else 0},
         f"spans from the {label}: their {len(want)} rows only ({cuts} cuts)",
         f"{len(got or [])} rows, mem {mem}")

# a row changed after the tree was built: a request without a tree (a
# re-check's) sees the database, one with it the tree's hash
cur.execute("UPDATE m SET v = -1 WHERE id = %s", (keys[42],))
fresh, fm, _ = rows([INCL, k[42]], [INCL, k[42]])
kept, km, _ = rows([INCL, k[42]], [INCL, k[42]], tree=7, root=root)
t.ok(fm == {0} and km == {1} and fresh[0][1] != kept[0][1] and kept == [whole[42]],
     "after an update: the database's new hash without a tree, the tree's with it")

for label, extra in (("a wrong root", {"tree": 7, "root": b"\0" * 16}),
                     ("an unknown tree", {"tree": 8, "root": root}),
                     ("no root", {"tree": 7})):
    got, mem, _ = rows([INCL, k[40]], [INCL, k[44]], **extra)
    t.ok(mem == {0} and got and got[2] == fresh[0], f"{label}: read from the database")

ask(T_RELEASE, tree=7)
got, mem, _ = rows([INCL, k[40]], [INCL, k[44]], tree=7, root=root)
t.ok(mem == {0} and got and got[2] == fresh[0], "a released tree: read from the database")

tr = ask(T_TREE, **SPEC, lo=[UNB, None], hi=[UNB, None], tree=9)
root9 = tr["nodes"][0][2]
w.kill()
w.wait()
w = start_worker()
t.ok(wait_hello() is not None, "the worker restarted")
got, mem, _ = rows([INCL, k[40]], [INCL, k[44]], tree=9, root=root9)
t.ok(mem == {0} and got and got[2] == fresh[0], "a restarted worker (its trees gone): read from "
     "the database")

w.kill()
w.wait()
sock.close()
ctx.term()
conn.close()
pg.stop()
t.done()
