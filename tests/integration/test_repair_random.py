#!/usr/bin/python3
"""Randomized repair round trip. Each scenario picks a pair (PostgreSQL -> PostgreSQL,
SQLite -> SQLite, SQLite -> PostgreSQL, PostgreSQL -> SQLite), a random schema (an int, a
text or an (int, text) key; columns drawn from a pool of types), random rows (NULLs,
quotes, backslashes, control characters, emoji, now and then a value over 64 KiB), copies
them to the target and changes the target at random (updates of random columns, deletes,
inserts). Then: `sluice diff --fix-sql FILE`, the file applied with psql or sqlite3 (or
`sluice repair --apply`, picked at random), and a diff again must exit 0, the source's
checksum (computed in SQL) unchanged. SEED=n replays a run; SCENARIOS=n changes the count
(make test-repair-random SCENARIOS=200); MYSQL=1 adds MariaDB pairs (PostgreSQL -> MariaDB,
MariaDB -> MariaDB, MariaDB -> PostgreSQL) on the types MariaDB shares."""
import hashlib
import json
import os
import random
import sqlite3
import struct
import subprocess
import sys
import tempfile
import uuid
from decimal import Decimal

import psycopg2

sys.path.insert(0, os.path.dirname(__file__))
from harness import MariaDbServer, PgServer, Tap, sluice  # noqa: E402

t = Tap()
seed = int(os.environ.get("SEED", random.randrange(1 << 30)))
scenarios = int(os.environ.get("SCENARIOS", "12"))
t.diag(f"seed {seed} (SEED=... replays), {scenarios} scenarios")
rnd = random.Random(seed)
pg = PgServer()
db = pg.createdb("rr")
conn = pg.connect(db)
cur = conn.cursor()
D = pg.dsn(db)
tmp = tempfile.mkdtemp()
my = MariaDbServer() if os.environ.get("MYSQL") == "1" else None
if my:
    my.createdb("rr")
    myc = my.connect("rr").cursor()
    myc.execute("SET SESSION group_concat_max_len = 1073741824")

ALPHA = ["a", "Z", " ", "'", "''", "\\", "\"", "\t", "\n", "\x01", "é", "ß", "日", "🎉", "0",
         "%", ";", "--", "/*", "$$", "`"]


def gen_text(n=12):
    if rnd.random() < 0.03:
        return "".join(rnd.choice(ALPHA) for _ in range(8)) * 9000  # over 64 KiB
    return "".join(rnd.choice(ALPHA) for _ in range(rnd.randrange(n)))


def gen_bytes():
    if rnd.random() < 0.03:
        return bytes(rnd.getrandbits(8) for _ in range(64)) * 1100
    return bytes(rnd.choice([0, 39, 92, 255, rnd.getrandbits(8)]) for _ in range(rnd.randrange(9)))


def gen_int():
    return rnd.choice([0, 1, -1, 2**63 - 1, -2**63, rnd.randrange(-10**6, 10**6),
                       rnd.getrandbits(62)])


def gen_numeric():
    digits = rnd.randrange(1, 16)  # SQLite keeps 15 significant digits exactly
    v = rnd.randrange(10 ** digits) * rnd.choice([1, -1])
    return Decimal(v).scaleb(-rnd.randrange(0, digits + 1))


def gen_float():
    return rnd.choice([rnd.uniform(-1e6, 1e6), rnd.random() * 10 ** rnd.randrange(-300, 300),
                       0.1, 1 / 3, -2.5, float("inf"), float("-inf"), 5e-324])


def gen_float4():
    while True:
        f = struct.unpack("f", struct.pack("I", rnd.getrandbits(32)))[0]
        if f == f and abs(f) != float("inf"):
            return f


def gen_date():
    return f"{rnd.randrange(1000, 10000):04d}-{rnd.randrange(1, 13):02d}-{rnd.randrange(1, 29):02d}"


def gen_ts():
    return (f"{gen_date()} {rnd.randrange(24):02d}:{rnd.randrange(60):02d}:"
            f"{rnd.randrange(60):02d}" + (f".{rnd.randrange(10**6):06d}" if rnd.random() < .7
                                          else ""))


def gen_float_finite():
    while True:
        f = gen_float()
        if abs(f) != float("inf"):
            return f


def gen_ts_1970():
    return (f"{rnd.randrange(1971, 2037)}-{rnd.randrange(1, 13):02d}-{rnd.randrange(1, 29):02d} "
            f"{rnd.randrange(24):02d}:{rnd.randrange(60):02d}:{rnd.randrange(60):02d}"
            f".{rnd.randrange(10**6):06d}")


def gen_tstz():
    off = rnd.choice(["+00:00", "+05:30", "-04:00", "+14:00", "Z"])
    return gen_ts().replace(" ", rnd.choice([" ", "T"])) + off


def gen_json():
    def val(depth):
        k = rnd.randrange(6 if depth < 2 else 4)
        if k == 0:
            return rnd.randrange(-1000, 1000)
        if k == 1:
            return gen_text(6)
        if k == 2:
            return rnd.choice([True, False, None, 1.5, 0.25])
        if k == 3:
            return float(gen_numeric())
        if k == 4:
            return {gen_text(4): val(depth + 1) for _ in range(rnd.randrange(4))}
        return [val(depth + 1) for _ in range(rnd.randrange(4))]
    # a document (object or array) at the top: a SQLite JSON column has NUMERIC affinity, so
    # a top-level number is stored as a number there and never equals PostgreSQL's json
    # number (a limit of the encoding, not of the repair)
    doc = val(1)
    while not isinstance(doc, (dict, list)):
        doc = val(1)
    return json.dumps(doc, indent=rnd.choice([None, 2]))


# name: (PostgreSQL type, SQLite declared type, generator, fit for mixed pairs)
# MY_TYPES: the MariaDB type and generator of the types MariaDB pairs use
TYPES = {
    "int": ("int8", "INTEGER", gen_int, True),
    "numeric": ("numeric", "NUMERIC", gen_numeric, True),
    "float": ("float8", "REAL", gen_float, True),
    "float4": ("real", "REAL", gen_float4, False),  # float4 digits vs double: PostgreSQL only
    "bool": ("bool", "BOOLEAN", lambda: rnd.random() < .5, True),
    "text": ("text", "TEXT", gen_text, True),
    "varchar": ("varchar(200000)", "VARCHAR(200000)", gen_text, True),
    "bytea": ("bytea", "BLOB", gen_bytes, True),
    "date": ("date", "DATE", gen_date, True),
    "timestamp": ("timestamp", "TIMESTAMP", gen_ts, True),
    "timestamptz": ("timestamptz", "TIMESTAMPTZ", gen_tstz, True),
    "uuid": ("uuid", "UUID", lambda: str(uuid.UUID(int=rnd.getrandbits(128))), True),
    "json": ("jsonb", "JSON", gen_json, True),
    "json_text": ("json", "JSON", gen_json, True),
}


MY_TYPES = {
    "int": ("bigint", gen_int),
    "numeric": ("decimal(32,16)", gen_numeric),
    "float": ("double", gen_float_finite),
    "bool": ("tinyint(1)", lambda: rnd.random() < .5),
    "text": ("longtext", gen_text),
    "varchar": ("mediumtext", gen_text),
    "bytea": ("longblob", gen_bytes),
    "date": ("date", gen_date),
    "timestamp": ("datetime(6)", gen_ts),
    "timestamptz": ("timestamp(6) NULL DEFAULT NULL", gen_ts_1970),
    "json": ("JSON", gen_json),
}


def q(name):
    return '"' + name.replace('"', '""') + '"'


def pg_value(ty, v):
    if v is None:
        return None
    if ty == "bytea":
        return psycopg2.Binary(v)
    return v


def sq_value(ty, v):
    if v is None:
        return None
    if ty == "bool":
        return int(v)
    if ty == "numeric":
        return str(v)
    if ty == "uuid":
        return v if rnd.random() < .5 else v.upper()
    return v


def pg_sum(table):
    cur.execute(f"SELECT count(*), md5(coalesce(string_agg(x, E'\\n' ORDER BY x), '')) "
                f"FROM (SELECT t::text AS x FROM {table} t) s")
    return cur.fetchone()


def sq_sum(path, table):
    s = sqlite3.connect(path)
    cols = [r[1] for r in s.execute(f'PRAGMA table_info("{table}")')]
    expr = " || '|' || ".join(f"quote({q(x)})" for x in cols)
    row = s.execute(f"SELECT count(*), group_concat(x, char(10)) FROM "
                    f"(SELECT {expr} AS x FROM \"{table}\" ORDER BY x)").fetchone()
    s.close()
    return row[0], hashlib.md5((row[1] or "").encode("utf-8", "surrogatepass")).hexdigest()


class PgSide:
    def __init__(self, table):
        self.table = table
        self.dsn = D

    def create(self, keys, cols):
        cur.execute(f'DROP TABLE IF EXISTS "{self.table}"')
        defs = [f'{q(n)} {TYPES[ty][0]}' for n, ty in keys + cols]
        cur.execute(f'CREATE TABLE "{self.table}" ({", ".join(defs)}, PRIMARY KEY '
                    f'({", ".join(q(n) for n, _ in keys)}))')
        self.names = [n for n, _ in keys + cols]
        self.types = [ty for _, ty in keys + cols]

    def insert(self, rows):
        ph = ", ".join(["%s"] * len(self.names))
        cur.executemany(f'INSERT INTO "{self.table}" VALUES ({ph})',
                        [[pg_value(ty, v) for ty, v in zip(self.types, r)] for r in rows])

    def update(self, key, col, val):
        ty = self.types[self.names.index(col)]
        cur.execute(f'UPDATE "{self.table}" SET {q(col)} = %s WHERE ' +
                    " AND ".join(f'{q(n)} = %s' for n, _ in key), [pg_value(ty, val)] +
                    [v for _, v in key])

    def delete(self, key):
        cur.execute(f'DELETE FROM "{self.table}" WHERE ' +
                    " AND ".join(f'{q(n)} = %s' for n, _ in key), [v for _, v in key])

    def checksum(self):
        return pg_sum(f'"{self.table}"')

    def apply(self, path):
        r = subprocess.run(["psql", D, "-q", "-v", "ON_ERROR_STOP=1", "-f", path],
                           capture_output=True, text=True)
        return r.returncode, r.stderr


class SqSide:
    def __init__(self, path):
        self.path = path
        self.dsn = "sqlite:" + path
        self.table = "t"

    def run(self, sql, args=()):
        s = sqlite3.connect(self.path)
        s.execute(sql, args)
        s.commit()
        s.close()

    def create(self, keys, cols):
        if os.path.exists(self.path):
            os.unlink(self.path)
        defs = [f'{q(n)} {TYPES[ty][1]}' for n, ty in keys + cols]
        self.run(f'CREATE TABLE t ({", ".join(defs)}, PRIMARY KEY '
                 f'({", ".join(q(n) for n, _ in keys)}))')
        self.names = [n for n, _ in keys + cols]
        self.types = [ty for _, ty in keys + cols]

    def insert(self, rows):
        s = sqlite3.connect(self.path)
        s.executemany(f'INSERT INTO t VALUES ({", ".join("?" * len(self.names))})',
                      [[sq_value(ty, v) for ty, v in zip(self.types, r)] for r in rows])
        s.commit()
        s.close()

    def update(self, key, col, val):
        ty = self.types[self.names.index(col)]
        self.run(f'UPDATE t SET {q(col)} = ? WHERE ' + " AND ".join(f'{q(n)} = ?' for n, _ in key),
                 [sq_value(ty, val)] + [v for _, v in key])

    def delete(self, key):
        self.run("DELETE FROM t WHERE " + " AND ".join(f'{q(n)} = ?' for n, _ in key),
                 [v for _, v in key])

    def checksum(self):
        return sq_sum(self.path, "t")

    def apply(self, path):
        r = subprocess.run(["sqlite3", "-bail", self.path, f".read {path}"],
                           capture_output=True, text=True)
        return r.returncode, r.stderr


def mq(name):
    return "`" + name.replace("`", "``") + "`"


class MySide:
    def __init__(self, table):
        self.table = table
        self.dsn = my.dsn("rr")

    def create(self, keys, cols):
        myc.execute(f"DROP TABLE IF EXISTS {mq(self.table)}")
        defs = [f"{mq(n)} " + ("varchar(40) COLLATE utf8mb4_nopad_bin" if (n, ty) in keys and
                               ty == "text" else MY_TYPES[ty][0]) for n, ty in keys + cols]
        myc.execute(f"CREATE TABLE {mq(self.table)} ({', '.join(defs)}, PRIMARY KEY "
                    f"({', '.join(mq(n) for n, _ in keys)})) CHARACTER SET utf8mb4")
        self.names = [n for n, _ in keys + cols]
        self.types = [ty for _, ty in keys + cols]

    def insert(self, rows):
        myc.executemany(f"INSERT INTO {mq(self.table)} VALUES "
                        f"({', '.join(['%s'] * len(self.names))})",
                        [[str(v) if isinstance(v, Decimal) else v for v in r] for r in rows])

    def update(self, key, col, val):
        myc.execute(f"UPDATE {mq(self.table)} SET {mq(col)} = %s WHERE " +
                    " AND ".join(f"{mq(n)} = %s" for n, _ in key),
                    [str(val) if isinstance(val, Decimal) else val] + [v for _, v in key])

    def delete(self, key):
        myc.execute(f"DELETE FROM {mq(self.table)} WHERE " +
                    " AND ".join(f"{mq(n)} = %s" for n, _ in key), [v for _, v in key])

    def checksum(self):
        expr = ", ".join(f"CAST(QUOTE({mq(x)}) AS BINARY)" for x in self.names)
        myc.execute(f"SELECT COUNT(*), MD5(GROUP_CONCAT(MD5(CONCAT_WS('|', {expr})) ORDER BY "
                    f"{', '.join(mq(x) for x in self.names[:2])} SEPARATOR ',')) "
                    f"FROM {mq(self.table)}")
        return myc.fetchone()

    def apply(self, path):
        with open(path, "rb") as f:
            r = subprocess.run(["mariadb", "--no-defaults", "--binary-mode", "-h", "127.0.0.1",
                                "-P", str(my.port), "-u", my.USER, f"-p{my.PASSWORD}", "rr"],
                               stdin=f, capture_output=True)
        return r.returncode, r.stderr.decode(errors="replace")


PAIRS = ["pg>pg", "sqlite>sqlite", "sqlite>pg", "pg>sqlite"] + \
    (["pg>mysql", "mysql>mysql", "mysql>pg"] if my else [])
KEYTEXT = ["a", "B", "é", "日", " ", "'", "\\", "\t", "🎉", "0", "~"]
failures = 0
for n in range(scenarios):
    pair = PAIRS[n] if n < len(PAIRS) else rnd.choice(PAIRS)
    sides = []
    for role, kind in zip(("s", "t"), pair.split(">")):
        sides.append(PgSide(f"r{n}_{role}") if kind == "pg"
                     else MySide(f"r{n}_{role}") if kind == "mysql"
                     else SqSide(os.path.join(tmp, f"r{n}_{role}.db")))
    src, tgt = sides
    mixed = pair in ("sqlite>pg", "pg>sqlite") or "mysql" in pair
    keyshape = rnd.choice(["int", "text", "int,text"])
    keys = [("k_int", "int")] if keyshape == "int" else \
        [("k_text", "text")] if keyshape == "text" else [("k_a", "int"), ("k_b", "text")]
    pool = [ty for ty, d in TYPES.items() if (d[3] or not mixed) and
            ("mysql" not in pair or ty in MY_TYPES)]
    cols = [(f"c{i}_{ty}", ty) for i, ty in enumerate(rnd.choices(pool, k=rnd.randrange(1, 8)))]
    if rnd.random() < .2:
        cols.append(("Mixed \"Case\" `col`", rnd.choice(pool)))

    def gen_key():
        ks = []
        for _, ty in keys:
            ks.append(rnd.randrange(-50, 1000) if ty == "int" else
                      "".join(rnd.choice(KEYTEXT) for _ in range(rnd.randrange(1, 6))))
        return tuple(ks)

    def gen_val(ty):
        if rnd.random() < .15:
            return None
        return MY_TYPES[ty][1]() if "mysql" in pair else TYPES[ty][2]()

    rows, seen = [], set()
    for _ in range(rnd.randrange(1, 60)):
        k = gen_key()
        if k in seen:
            continue
        seen.add(k)
        rows.append(list(k) + [gen_val(ty) for _, ty in cols])
    src.create(keys, cols)
    tgt.create(keys, cols)
    src.insert(rows)
    tgt.insert(rows)
    changes = []
    for _ in range(rnd.randrange(0, 12)):
        op = rnd.random()
        if op < .5 and rows:
            r = rnd.choice(rows)
            name, ty = rnd.choice(cols)
            tgt.update(list(zip([k for k, _ in keys], r)), name, gen_val(ty))
            changes.append("update")
        elif op < .75 and rows:
            r = rows.pop(rnd.randrange(len(rows)))
            tgt.delete(list(zip([k for k, _ in keys], r)))
            changes.append("delete")
        else:
            k = gen_key()
            if k in seen:
                continue
            seen.add(k)
            tgt.insert([list(k) + [gen_val(ty) for _, ty in cols]])
            changes.append("insert")
    before = src.checksum()
    fixfile = os.path.join(tmp, f"r{n}.sql")
    args = ["--table", src.table, "--target-table", tgt.table, "--no-progress",
            "--ranges", str(rnd.randrange(1, 9))]
    code, out, err = sluice("diff", src.dsn, tgt.dsn, *args, "--fix-sql", fixfile)
    how = rnd.choice(["file", "repair"])
    ok = code in (0, 1) and os.path.exists(fixfile)
    why = f"diff --fix-sql: exit {code}\n{err}"
    if ok and how == "file":
        rc, e = tgt.apply(fixfile)
        ok, why = rc == 0, f"applying the file: {e}"
    elif ok:
        rc, o, e = sluice("repair", src.dsn, tgt.dsn, *args, "--apply", "--batch",
                          str(rnd.choice([1, 3, 500])))
        ok, why = rc == 0, f"repair --apply: exit {rc}\n{o}\n{e}"
    if ok:
        code, out, err = sluice("diff", src.dsn, tgt.dsn, *args)
        ok, why = code == 0, f"diff after: exit {code}\n{out[-2000:]}\n{err}"
    if ok:
        ok, why = src.checksum() == before, "the source's checksum changed"
    if not ok:
        failures += 1
        if os.path.exists(fixfile):
            why += "\n--- fix file ---\n" + open(fixfile, errors="replace").read()[:3000]
    t.ok(ok, f"scenario {n}: {pair}, key {keyshape}, {len(cols)} columns "
             f"({', '.join(ty for _, ty in cols)}), {len(changes)} changes, applied by {how}",
         why if not ok else None)
t.diag(f"seed {seed}: {scenarios - failures} of {scenarios} scenarios round-tripped")
t.done()
