#!/usr/bin/python3
"""A worker's merge request (type 26), driven by a fake coordinator: one
worker reads both sides of a span (source and target on two PostgreSQL
servers), merges them by key and replies with the divergent rows only.
Checks identical tables, every row differing in one column, rows on one
side only, NULL against a value, long texts (digest form; equal ones not
sent), the limit and "through" (asking again from after it covers every
key exactly once), a failing side named in the error, and refusals."""
import os
import subprocess
import sys
import tempfile
import time

import zmq

sys.path.insert(0, os.path.dirname(__file__))
from harness import SAN_ENV, SLUICE, PgServer, Tap, check_sanitizer, free_port  # noqa: E402
from wire import decode, encode, int_key, key_int  # noqa: E402

T_HELLO, T_REPLY, T_ERROR, T_HEARTBEAT, T_MERGE = 1, 10, 11, 12, 26
ENC_INT, ENC_TEXT = 1, 5
UNB, INCL, EXCL = 0, 1, 2

t = Tap()

src, dst = PgServer(), PgServer()
ca, cb = src.connect(), dst.connect()
for c in (ca, cb):
    c.autocommit = True


def table(name, a_rows, b_rows):
    """Creates name(id bigint key, v text, w text) on both sides."""
    for c, rows in ((ca, a_rows), (cb, b_rows)):
        cur = c.cursor()
        cur.execute(f"DROP TABLE IF EXISTS {name}")
        cur.execute(f"CREATE TABLE {name} (id bigint PRIMARY KEY, v text, w text)")
        if rows:
            cur.executemany(f"INSERT INTO {name} VALUES (%s, %s, %s)", rows)


d = tempfile.mkdtemp(prefix="sluice-merge-")
dbfile = os.path.join(d, "dbs.conf")
with open(dbfile, "w") as f:
    f.write(f"source={src.dsn()}\ntarget={dst.dsn()}\n")
ctx = zmq.Context()
router = ctx.socket(zmq.ROUTER)
router.setsockopt(zmq.LINGER, 0)
ep = f"tcp://127.0.0.1:{free_port()}"
router.bind(ep)
errlog = open(os.path.join(d, "worker.log"), "w+")
worker = subprocess.Popen([SLUICE, "worker", "--coordinator", ep, "--db-file", dbfile,
                           "--heartbeat", "0.3"], stdout=subprocess.DEVNULL, stderr=errlog,
                          env=dict(os.environ, **SAN_ENV))

ident, hello = None, None
poller = zmq.Poller()
poller.register(router, zmq.POLLIN)
deadline = time.time() + 30
while ident is None and time.time() < deadline:
    if poller.poll(500):
        i, frame = router.recv_multipart()
        m = decode(frame)
        if m["t"] == T_HELLO:
            ident, hello = i, m
t.ok(hello is not None and hello.get("merge") == 1 and hello.get("stream") == 1,
     "the worker says hello with merge: 1", diag=str(hello))

next_id = [100]


def ask(table_a, lo=(UNB, None), hi=(UNB, None), limit=1000, **extra):
    next_id[0] += 1
    rid = next_id[0]
    m = {"v": 1, "t": T_MERGE, "id": rid, "db": "source", "table": table_a,
         "cols": ["id", "v", "w"], "cls": [ENC_INT, ENC_TEXT, ENC_TEXT], "nkey": 1,
         "db2": "target", "table2": table_a, "lo": list(lo), "hi": list(hi), "limit": limit,
         "sizes": 1, "flags": 0}
    m.update(extra)
    router.send_multipart([ident, encode(m)])
    end = time.time() + 60
    while time.time() < end:
        if not poller.poll(500):
            continue
        _, frame = router.recv_multipart()
        r = decode(frame)
        if r["t"] in (T_REPLY, T_ERROR) and r["id"] == rid:
            return r
    raise RuntimeError("no reply to merge")


def keys(rows):
    return [key_int(r[0]) for r in rows]


# ---- identical tables --------------------------------------------------------
rows = [(i, f"v{i}", f"w{i}") for i in range(1, 101)]
table("same", rows, rows)
r = ask("same")
t.ok(r["t"] == T_REPLY and r["a"] == [] and r["b"] == [], "identical tables: nothing listed",
     diag=str(r)[:300])
t.ok(r.get("rows") == [100, 100] and r.get("blocks") == 0 and "more" not in r,
     "identical tables: rows [100, 100], no blocks, no more", diag=str(r)[:300])
t.ok(r.get("through") == int_key(100), "identical tables: through is the last key")

# ---- every row differs in one column -----------------------------------------
table("diff", rows, [(i, f"v{i}", f"W{i}") for i in range(1, 101)])
r = ask("diff")
ok = r["t"] == T_REPLY and keys(r["a"]) == list(range(1, 101)) and \
    keys(r["b"]) == list(range(1, 101))
t.ok(ok, "every row differing: each key listed on both sides, in order", diag=str(r)[:300])
ok = ok and all(len(x) == 4 and x[1] == [2] and isinstance(x[2][0], bytes) and
                x[3] == [f"w{key_int(x[0])}"] for x in r["a"]) and \
    all(len(x) == 4 and x[1] == [2] and x[3] == [f"W{key_int(x[0])}"] for x in r["b"])
t.ok(ok, "every row differing: [key, [2], [value], [text]]: only the differing column travels",
     diag=str(r["a"][:1]) + str(r["b"][:1]))
t.ok(r["rows"] == [100, 100] and r["blocks"] == 4 and "more" not in r,
     "every row differing: rows [100, 100], 4 blocks of 32", diag=str(r.get("blocks")))
t.ok(all(a[2][0] != b[2][0] for a, b in zip(r["a"], r["b"])),
     "every row differing: the two encodings differ")

# ---- rows on one side only ---------------------------------------------------
table("one", [(i, "x", "y") for i in range(1, 11)], [(i, "x", "y") for i in range(5, 16)])
r = ask("one")
t.ok(keys(r["a"]) == [1, 2, 3, 4] and all(len(x) == 1 for x in r["a"]),
     "source-only rows: [key] in a", diag=str(r["a"])[:300])
t.ok(keys(r["b"]) == [11, 12, 13, 14, 15] and all(len(x) == 1 for x in r["b"]),
     "target-only rows: [key] in b", diag=str(r["b"])[:300])
t.ok(r["rows"] == [10, 11] and r["blocks"] == 1 and r["through"] == int_key(15) and
     "more" not in r, "one side only: rows [10, 11], one block, through 15", diag=str(r)[:300])

# ---- NULL against a value -----------------------------------------------------
table("nulls", [(1, None, "a"), (2, "b", None), (3, None, None)],
      [(1, "x", "a"), (2, "b", "c"), (3, None, None)])
r = ask("nulls")
t.ok(keys(r["a"]) == [1, 2] and keys(r["b"]) == [1, 2], "NULL against a value: rows 1 and 2",
     diag=str(r)[:400])
if len(r["a"]) == 2 and len(r["b"]) == 2:
    a1, b1, a2, b2 = r["a"][0], r["b"][0], r["a"][1], r["b"][1]
    t.ok(a1[1] == b1[1] == [1] and isinstance(a1[2][0], bytes) and a1[3] == [None] and
         b1[3] == ["x"],
         "NULL against a value: column v only (w equal), NULL's encoding, nil text; the value's text",
         diag=f"{a1} {b1}")
    t.ok(a2[1] == b2[1] == [2] and a2[3] == [None] and b2[3] == ["c"],
         "value against NULL on column w only (v equal)", diag=f"{a2} {b2}")
else:
    t.ok(False, "NULL against a value: two rows a side")
    t.ok(False, "value against NULL")

# ---- long texts ---------------------------------------------------------------
long = "z" * (100 << 10)
table("long", [(1, long + "a", "w"), (2, long, "w"), (3, "s", long + "q")],
      [(1, long + "b", "w"), (2, long, "w"), (3, "s", long + "q")])
r = ask("long")
t.ok(keys(r["a"]) == [1] and keys(r["b"]) == [1],
     "long texts: the one differing at its end is listed, equal ones are not",
     diag=str([(key_int(x[0]), str(x[1])[:80]) for x in r["a"]]))
if r["a"] and r["b"]:
    va, vb = r["a"][0][2][0], r["b"][0][2][0]
    t.ok(isinstance(va, list) and len(va) == 3 and va[1] == vb[1] == len(long) + 1 and
         va[2] != vb[2] and len(va[2]) == 16,
         "long texts: a digest [head, length, hash] a side, hashes differing",
         diag=str(va)[:200])
    ta = r["a"][0][3][0]
    t.ok(isinstance(ta, str) and 0 < len(ta) <= 1024 and ta == long[:len(ta)],
         "long texts: the text is the value's first KiB", diag=str(len(ta or "")))
else:
    t.ok(False, "long texts: digest form")
    t.ok(False, "long texts: text prefix")

# ---- the limit, "through" and asking again -----------------------------------
table("lim", [(i, "x", "y") for i in range(1, 201)], [(i, "x", "y") for i in range(2, 401, 2)])
r = ask("lim", limit=30)
t.ok(r.get("more") == 1 and r.get("through") == int_key(30),
     "limit 30: more, through at the 30th source key (the target's 30th is 60)",
     diag=str({k: v for k, v in r.items() if k not in ("a", "b")}))
t.ok(keys(r["a"]) == list(range(1, 30, 2)) and r["b"] == [] and r["rows"] == [30, 15],
     "limit 30: only keys up to through merged and counted", diag=str(r["rows"]))
seen_a, seen_b, total, asks, lo = [], [], [0, 0], 0, (UNB, None)
while asks < 100:
    asks += 1
    r = ask("lim", lo=lo, limit=25)
    if r["t"] != T_REPLY:
        break
    seen_a += keys(r["a"])
    seen_b += keys(r["b"])
    total = [total[0] + r["rows"][0], total[1] + r["rows"][1]]
    bad = [k for k in keys(r["a"]) + keys(r["b"]) if "through" in r and k > key_int(r["through"])]
    if bad:
        break
    if "more" not in r:
        break
    lo = (EXCL, r["through"])
t.ok(seen_a == list(range(1, 201, 2)) and seen_b == list(range(202, 401, 2)),
     "asking again from after through: every divergent key exactly once, in order",
     diag=f"{len(seen_a)} source, {len(seen_b)} target after {asks} asks")
t.ok(total == [200, 200] and asks > 8, "asking again: rows counted exactly once a side",
     diag=f"{total} in {asks} asks")

# limit on the side with the smaller keys: the source's limit ends the merge
table("lim2", [(i, "x", "y") for i in range(1, 101)], [(i, "x", "y") for i in range(1, 11)])
r = ask("lim2", limit=50)
t.ok(r.get("through") == int_key(50) and r.get("more") == 1 and r["rows"] == [50, 10] and
     keys(r["a"]) == list(range(11, 51)) and r["b"] == [],
     "source at its limit, target ended before: through 50, more", diag=str(r["rows"]))

# the target at its limit first: the source's read is stopped past its last key
table("lim3", [(i, "x", "y") for i in range(2, 401, 2)], [(i, "x", "y") for i in range(1, 201)])
r = ask("lim3", limit=30)
t.ok(r.get("through") == int_key(30) and r.get("more") == 1 and r["rows"] == [15, 30] and
     keys(r["b"]) == list(range(1, 30, 2)) and r["a"] == [],
     "target at its limit first: through 30, more, source rows past it not counted",
     diag=str({k: v for k, v in r.items() if k not in ("a", "b")}))

# bounds: only keys inside [lo, hi]
r = ask("diff", lo=(INCL, int_key(10)), hi=(EXCL, int_key(20)))
t.ok(keys(r["a"]) == list(range(10, 20)) and r["rows"] == [10, 10] and "more" not in r and
     r["through"] == int_key(19), "bounds: only keys in [10, 20)", diag=str(r.get("rows")))

# ---- errors ------------------------------------------------------------------
errors = []
r = ask("same", table2="nosuch")
errors.append(r.get("error"))
t.ok(r["t"] == T_ERROR and r.get("error", "").startswith("target: ") and
     "nosuch" in r.get("error", ""), "a missing target table: an error naming the target",
     diag=str(r))
r = ask("nosuch2")
errors.append(r.get("error"))
t.ok(r["t"] == T_ERROR and r.get("error", "").startswith("source"),
     "a missing source table: an error naming the source", diag=str(r))
r = ask("same", db2="source")
errors.append(r.get("error"))
t.ok(r["t"] == T_ERROR and r.get("code") == "invalid" and "malformed request" in r["error"],
     "db2 equal to db: refused", diag=str(r))
r = ask("same", db2="nowhere")
t.ok(r["t"] == T_ERROR and r.get("code") == "not_found", "an unknown db2: not found",
     diag=str(r))
r = ask("same", limit=0)
t.ok(r["t"] == T_ERROR and r.get("code") == "invalid", "limit 0: refused", diag=str(r))
r = ask("same")
t.ok(r["t"] == T_REPLY and r["rows"] == [100, 100], "the worker still serves after errors")
t.diag(f"errors seen: {errors}")

# ---- shutdown: clean exit, no sanitizer report -------------------------------
router.send_multipart([ident, encode({"v": 1, "t": 9, "id": 0})])
try:
    code = worker.wait(timeout=10)
except subprocess.TimeoutExpired:
    worker.terminate()
    code = worker.wait(timeout=10)
errlog.seek(0)
err = errlog.read()
t.ok(not check_sanitizer(code, err, "sluice worker"), "the worker exits without a sanitizer report",
     diag=f"exit {code}")
router.close()
ctx.term()
src.stop()
dst.stop()
t.done()
