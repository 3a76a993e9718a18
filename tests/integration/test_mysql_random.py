#!/usr/bin/python3
"""Randomized differential test, MariaDB against PostgreSQL: each scenario
builds one table on both servers (an int, a text or an (int, text) key;
bigint, varchar, text, decimal, double, float, date, datetime(6), blob and
tinyint(1) columns, NULLs), mutates either side at random (a column of a
row set to a value that differs, deletes, inserts), runs sluice diff with a
random number of ranges, and checks its divergences against what the test
did: zero missed, zero false reports. Text keys mix case, tabs, control
characters, accents and emoji, so the bytewise key order is exercised on
both sides. SEED=n replays a run; SCENARIOS=n changes the count."""
import os
import random
import struct
import sys
from decimal import Decimal

sys.path.insert(0, os.path.dirname(__file__))
from harness import MariaDbServer, PgServer, Tap, divergence_set, sluice_json  # noqa: E402

t = Tap()
seed = int(os.environ.get("SEED", random.randrange(1 << 30)))
scenarios = int(os.environ.get("SCENARIOS", "12"))
t.diag(f"seed {seed} (SEED=... replays), {scenarios} scenarios")
rnd = random.Random(seed)

my = MariaDbServer()
pg = PgServer()
my.createdb("r")
pg.createdb("r")
mc = my.connect("r").cursor()
pc = pg.connect("r").cursor()

# column: (MariaDB type, PostgreSQL type, generator)
ALPHA = ["a", "A", "b", "Z", " ", "\t", "\x01", "é", "É", "ß", "日", "🎉", "0", "~"]


def gen_text(n=12):
    return "".join(rnd.choice(ALPHA) for _ in range(rnd.randrange(n)))


def gen_float32():
    while True:
        f = struct.unpack("f", struct.pack("I", rnd.getrandbits(32)))[0]
        if f == f and abs(f) != float("inf"):
            return f


def gen_double():
    return rnd.choice([rnd.uniform(-1e6, 1e6), rnd.random() * 10 ** rnd.randrange(-300, 300),
                       0.1, -0.0 + 0.0, 1 / 3])


def gen_date():
    return f"{rnd.randrange(1000, 10000):04d}-{rnd.randrange(1, 13):02d}-{rnd.randrange(1, 29):02d}"


def gen_ts():
    return (f"{gen_date()} {rnd.randrange(24):02d}:{rnd.randrange(60):02d}:"
            f"{rnd.randrange(60):02d}.{rnd.randrange(10**6):06d}")


COLS = {
    "b": ("bigint", "bigint", lambda: rnd.choice([-(1 << 63), (1 << 63) - 1,
                                                  rnd.randrange(-(1 << 63), 1 << 63)])),
    "v": ("varchar(40)", "varchar(40)", lambda: gen_text(20)),
    "tx": ("text", "text", lambda: gen_text(60)),
    "d": ("decimal(12,2)", "numeric(12,2)",
          lambda: Decimal(rnd.randrange(-10**10, 10**10)) / 100),
    "f": ("double", "float8", gen_double),
    "fl": ("float", "real", gen_float32),
    "dt": ("date", "date", gen_date),
    "ts": ("datetime(6)", "timestamp(6)", gen_ts),
    "bl": ("blob", "bytea", lambda: bytes(rnd.randrange(256) for _ in range(rnd.randrange(30)))),
    "ok": ("tinyint(1)", "boolean", lambda: rnd.choice([0, 1])),
}
KEYS = {
    "int": [("id", "int", "int")],
    "text": [("k", "varchar(30) COLLATE utf8mb4_bin", "text")],
    "int,text": [("id", "int", "int"), ("k", "varchar(30) COLLATE utf8mb4_bin", "text")],
}


def gen_key(kind):
    out = []
    for name, _, _ in KEYS[kind]:
        if name == "id":
            out.append(rnd.choice([rnd.randrange(-(1 << 31), 1 << 31), rnd.randrange(50)]))
        else:  # utf8mb4_bin pads: trailing spaces would make two keys one
            out.append(gen_text(8).rstrip(" "))
    return tuple(out)


def gen_value(col):
    return None if rnd.random() < 0.1 else COLS[col][2]()


def pg_val(col, v):
    return bool(v) if col == "ok" and v is not None else v


def scenario(n):
    kind = rnd.choice(list(KEYS))
    keycols = [k[0] for k in KEYS[kind]]
    cols = rnd.sample(list(COLS), rnd.randrange(1, len(COLS) + 1))
    tbl = f"s{n}"
    mdef = ", ".join([f"{k} {mt} NOT NULL" for k, mt, _ in KEYS[kind]] +
                     [f"{c} {COLS[c][0]}" for c in cols])
    pdef = ", ".join([f"{k} {pt} NOT NULL" for k, _, pt in KEYS[kind]] +
                     [f"{c} {COLS[c][1]}" for c in cols])
    mc.execute(f"CREATE TABLE {tbl} ({mdef}, PRIMARY KEY ({', '.join(keycols)})) "
               "CHARACTER SET utf8mb4")
    pc.execute(f"CREATE TABLE {tbl} ({pdef}, PRIMARY KEY ({', '.join(keycols)}))")
    nrows = rnd.choice([0, 1, 2, 50, 300, 700])
    rows = {}
    while len(rows) < nrows:
        rows.setdefault(gen_key(kind), {c: gen_value(c) for c in cols})
    src = {k: dict(v) for k, v in rows.items()}
    tgt = {k: dict(v) for k, v in rows.items()}
    want = set()
    for _ in range(rnd.randrange(0, 8)):
        op = rnd.choice(["change", "delete", "insert"])
        side = rnd.choice([src, tgt])
        if op == "change" and rows:
            k = rnd.choice(list(rows))
            if k not in src or k not in tgt:
                continue
            c = rnd.choice(cols)
            while True:
                v = gen_value(c)
                if v != side[k][c] and not (c == "f" and v == 0 and side[k][c] == 0):
                    break
            side[k][c] = v
        elif op == "delete" and rows:
            side.pop(rnd.choice(list(rows)), None)
        else:
            k = gen_key(kind)
            if k in rows or k in src or k in tgt:
                continue
            side[k] = {c: gen_value(c) for c in cols}
    for k in set(src) | set(tgt):
        if k not in tgt:
            want.add(("missing-in-target", k, ()))
        elif k not in src:
            want.add(("extra-in-target", k, ()))
        else:
            diff = tuple(sorted(c for c in cols if src[k][c] != tgt[k][c]))
            if diff:
                want.add(("changed", k, diff))
    allc = keycols + cols
    ph = ", ".join(["%s"] * len(allc))
    mc.executemany(f"INSERT INTO {tbl} ({', '.join(allc)}) VALUES ({ph})",
                   [list(k) + [r[c] for c in cols] for k, r in src.items()])
    pc.executemany(f"INSERT INTO {tbl} ({', '.join(allc)}) VALUES ({ph})",
                   [list(k) + [pg_val(c, r[c]) for c in cols] for k, r in tgt.items()])
    ranges = str(rnd.choice([1, 2, 3, 7, 16]))
    code, doc, err = sluice_json("diff", my.dsn("r"), pg.dsn("r"), "--table", tbl, "--ranges",
                                 ranges, "--allow-empty")
    got = None
    if doc:
        got = set()
        for kd, key, dcols in divergence_set(doc):
            key = tuple(int(x) if name == "id" else x for name, x in zip(keycols, key))
            got.add((kd, key, dcols))
    ok = code == (1 if want else 0) and got == want
    t.ok(ok, f"scenario {n}: {kind} key, {len(cols)} columns, {nrows} rows, --ranges {ranges}: "
         f"{len(want)} divergences found exactly",
         f"exit {code}\nmissed {want - (got or set())}\nfalse {(got or set()) - want}\n{err}")


for n in range(scenarios):
    scenario(n)
t.done()
