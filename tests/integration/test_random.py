#!/usr/bin/python3
"""Randomized differential test: at least 200 scenarios per run. Each builds
a source and a target table in one PostgreSQL database, mutates the target
at random (updates of every type, NULLs, equal-but-respelled values,
deletes, inserts), runs sluice diff, and checks its answer against an SQL
oracle (FULL OUTER JOIN ... IS DISTINCT FROM): zero missed, zero false
reports. SEED=n replays a run; SCENARIOS=n changes the count.
With THROUGH_CLUSTER=1 every job goes through a coordinator and three worker
processes (sluice submit --wait) instead of sluice diff."""
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from decimal import Decimal

import psycopg2

sys.path.insert(0, os.path.dirname(__file__))
from harness import PgServer, Tap, divergence_set, sluice_json  # noqa: E402

seed = int(os.environ.get("SEED", int(time.time())))
scenarios = int(os.environ.get("SCENARIOS", "200"))
HOSTILE_SHARE = float(os.environ.get("HOSTILE_SHARE", "0.25"))
sqlite_dir = tempfile.mkdtemp(prefix="sluice-rnd-")
rnd = random.Random(seed)
t = Tap()
t.diag(f"seed {seed} (SEED={seed} replays), {scenarios} scenarios")

pg = PgServer()
db = pg.createdb("rnd")
cluster = None
if os.environ.get("THROUGH_CLUSTER") == "1":
    from cluster import Cluster
    cluster = Cluster({"source": pg.dsn(db), "target": pg.dsn(db)})
    cluster.start_coordinator()
    for _ in range(3):
        cluster.start_worker(slots=1)
    t.ok(cluster.wait_workers(3), "a coordinator and three worker processes are up")
conn = pg.connect(db)
cur = conn.cursor()

COLS = [("a", "int4"), ("b", "numeric(10,2)"), ("c", "text"), ("d", "float8"), ("e", "bool"),
        ("f", "timestamptz"), ("g", "jsonb"), ("h", "uuid"), ("i", "bytea")]
KEYS = {
    "int": [("id", "int8")],
    "text": [("k", "text")],
    "uuid": [("u", "uuid")],
    "composite": [("x", "int4"), ("y", "text")],
}
ALPHABET = "abcXYZ é✓_-0 "


def rand_text(n=None):
    n = rnd.randint(0, 12) if n is None else n
    return "".join(rnd.choice(ALPHABET) for _ in range(n))


def rand_value(col):
    if rnd.random() < 0.1:
        return None
    if col == "a":
        return rnd.randint(-1000, 1000)
    if col == "b":
        return f"{rnd.randint(-99999, 99999) / 100:.2f}"
    if col == "c":
        return rand_text()
    if col == "d":
        return rnd.choice([0.1, 1e300, -2.5, 3.0, rnd.random() * 1000, -0.0])
    if col == "e":
        return rnd.random() < 0.5
    if col == "f":
        return f"2024-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d} " \
               f"{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}:{rnd.randint(0, 59):02d}." \
               f"{rnd.randint(0, 999999):06d}+{rnd.randint(0, 12):02d}"
    if col == "g":
        return json.dumps({"n": rnd.randint(0, 5), "s": rand_text(3),
                           "l": [rnd.randint(0, 3) for _ in range(rnd.randint(0, 3))]})
    if col == "h":
        return str(uuid.UUID(int=rnd.getrandbits(128)))
    if col == "i":
        return bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 6)))


def respell(col, v):
    """The same value written differently: must not be reported."""
    if v is None:
        return None
    if col == "b":
        return v + "0" if "." in v else v
    if col == "g":
        d = json.loads(v)
        return json.dumps(dict(reversed(list(d.items()))), indent=1)
    if col == "h":
        return v.upper()
    return v


def rand_key(kind, used):
    while True:
        if kind == "int":
            k = (rnd.randint(-10**6, 10**6),)
        elif kind == "text":
            k = (rand_text(rnd.randint(1, 8)),)
        elif kind == "uuid":
            k = (str(uuid.UUID(int=rnd.getrandbits(128))),)
        else:
            k = (rnd.randint(0, 50), rand_text(rnd.randint(0, 4)))
        if k not in used:
            used.add(k)
            return k


def q(name):
    return '"' + name + '"'


def submit_json(args):
    """sluice submit --wait through the cluster: (exit, JSON report or None, stderr)."""
    code, out, err = cluster.client("submit", *args, "--wait", "--format", "json",
                                    "--no-progress")
    try:
        return code, json.loads(out), err
    except ValueError:
        return code, None, err


# ---- hostile scenarios ---------------------------------------------------
# Keys of another type on each side (refused, or answered exactly), integer
# extremes, text keys whose columns collate differently, huge numerics
# written differently, long text and binary values, wide tables, and a
# SQLite target. The oracle is Python: Decimal equality is numeric equality
# (1.000 == 1), as sluice's is.
HAS_ICU = False
cur.execute("SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu'")
HAS_ICU = cur.fetchone() is not None
KEY_PAIRS = [("int8", "int8"), ("int4", "int8"), ("int8", "int4"), ("text", "varchar(400)"),
             ("text", "text"), ("int8", "text"), ("text", "int4"), ("int2", "varchar(10)")]
if HAS_ICU:
    KEY_PAIRS.append(('text COLLATE "und-x-icu"', 'text COLLATE "C"'))
INT64 = (-2**63, 2**63 - 1)
KEY_TEXT = "aAbBzZ09 _-éÉ✓ß\t"


def is_int(ty):
    return ty.startswith("int")


def int_bound(ty):
    return {"int2": 2**15, "int4": 2**31, "int8": 2**63}[ty]


def hostile_key(ty_s, ty_t, used):
    while True:
        if is_int(ty_s) or is_int(ty_t):
            lim = min(int_bound(ty) for ty in (ty_s, ty_t) if is_int(ty))
            k = rnd.choice([-lim, lim - 1, 0, -1, 1, rnd.randint(-lim, lim - 1),
                            rnd.randint(-1000, 1000)])
        else:
            k = "".join(rnd.choice(KEY_TEXT) for _ in range(rnd.randint(1, 6)))
        if k not in used:
            used.add(k)
            return k


def huge_numeric():
    ip = str(rnd.randint(0, 9)) + "".join(rnd.choice("0123456789")
                                          for _ in range(rnd.choice([0, 5, 300, 1200])))
    fp = "".join(rnd.choice("0123456789") for _ in range(rnd.choice([0, 3, 700])))
    return Decimal(("-" if rnd.random() < 0.3 else "") + ip + ("." + fp if fp else ""))


def num_text(d, respell=False):
    s = format(d, "f")
    if respell:  # trailing zeros, as a numeric of a bigger scale prints it
        frac = len(s.split(".")[1]) if "." in s else 0
        zeros = min(rnd.choice([1, 50, 600, 16000]), 16383 - frac)  # PostgreSQL's most
        s = s + ("" if "." in s else ".") + "0" * zeros
    return s


def hostile_value(ty):
    if rnd.random() < 0.1:
        return None
    if ty == "numeric":
        return huge_numeric()
    if ty == "text":
        n = 100000 if rnd.random() < 0.03 else rnd.choice([0, 5, 40, 3000])
        return "".join(rnd.choice(ALPHABET) for _ in range(min(n, 50))) * max(1, n // 50)
    if ty == "bytea":
        n = 70000 if rnd.random() < 0.03 else rnd.choice([0, 1, 16, 300])
        return bytes(rnd.getrandbits(8) for _ in range(min(n, 256))) * max(1, n // 256)
    if ty == "int8":
        return rnd.choice([INT64[0], INT64[1], 0, rnd.randint(*INT64)])
    return rnd.randint(-2**31, 2**31 - 1)  # int4


def hostile(sc):
    """One scenario; returns (ok, description, diagnostics)."""
    ty_s, ty_t = rnd.choice(KEY_PAIRS)
    refuse = is_int(ty_s) != is_int(ty_t)
    wide = rnd.random() < 0.08
    if wide:
        vtypes = ["int4"] * rnd.choice([300, 1000, 1599])
    else:
        vtypes = [rnd.choice(["numeric", "text", "bytea", "int8"]) for _ in range(rnd.randint(1, 4))]
    to_sqlite = (not wide and not refuse and "COLLATE" not in ty_s and ty_s in ("int8", "text")
                 and rnd.random() < 0.35)
    size = rnd.choice([1, 3, rnd.randint(5, 60)]) if not wide else rnd.randint(1, 12)
    names = ["k"] + [f"c{i}" for i in range(len(vtypes))]
    used = set()
    src = {}
    for _ in range(size):
        src[hostile_key(ty_s, ty_t, used)] = [hostile_value(ty) for ty in vtypes]
    tgt = {k: list(v) for k, v in src.items()}
    respelled = {}
    for _ in range(0 if rnd.random() < 0.2 else rnd.randint(1, 6)):
        op = rnd.random()
        if tgt and op < 0.5:
            k = rnd.choice(list(tgt))
            i = rnd.randrange(len(vtypes))
            if vtypes[i] == "numeric" and tgt[k][i] is not None and rnd.random() < 0.5:
                respelled[(k, i)] = True  # the same value, written with more zeros
            else:
                tgt[k][i] = hostile_value(vtypes[i])
                respelled.pop((k, i), None)
        elif tgt and op < 0.7:
            del tgt[rnd.choice(list(tgt))]
        elif op < 0.9:
            k = hostile_key(ty_s, ty_t, used)
            tgt[k] = [hostile_value(ty) for ty in vtypes]
        elif src:
            del src[rnd.choice(list(src))]
    expected = set()
    for k in src:
        if k not in tgt:
            expected.add(("missing-in-target", (str(k),), ()))
        elif src[k] != tgt[k]:
            cols = tuple(sorted(names[i + 1] for i in range(len(vtypes)) if src[k][i] != tgt[k][i]))
            expected.add(("changed", (str(k),), cols))
    for k in tgt:
        if k not in src:
            expected.add(("extra-in-target", (str(k),), ()))

    def pg_row(k, vals, tgt_side):
        out = [str(k)]
        for i, (ty, v) in enumerate(zip(vtypes, vals)):
            if v is None:
                out.append(None)
            elif ty == "numeric":
                out.append(num_text(v, tgt_side and (k, i) in respelled))
            elif ty == "bytea":
                out.append(psycopg2.Binary(v))
            else:
                out.append(v)
        return out

    stab, ttab = f"hs{sc}", f"ht{sc}"
    coldefs = ", ".join(f"{q(n)} {ty}" for n, ty in zip(names[1:], vtypes))
    cur.execute(f"CREATE TABLE {stab} (k {ty_s} PRIMARY KEY, {coldefs})")
    ph = ", ".join(["%s"] * len(names))
    if src:
        cur.executemany(f"INSERT INTO {stab} VALUES ({ph})", [pg_row(k, v, False)
                                                              for k, v in src.items()])
    target_dsn = pg.dsn(db)
    if to_sqlite:
        path = os.path.join(sqlite_dir, f"{ttab}.db")
        lite = sqlite3.connect(path)
        lty = {"numeric": "TEXT", "text": "TEXT", "bytea": "BLOB", "int8": "INTEGER"}
        lite.execute(f"CREATE TABLE {ttab} (k {'INTEGER' if is_int(ty_t) else 'TEXT'} "
                     f"PRIMARY KEY, " + ", ".join(f"{q(n)} {lty[ty]}" for n, ty in
                                                  zip(names[1:], vtypes)) + ")")
        rows = []
        for k, vals in tgt.items():
            r = pg_row(k, vals, True)
            r[0] = k
            for i, ty in enumerate(vtypes):
                if ty == "bytea" and vals[i] is not None:
                    r[i + 1] = vals[i]
            rows.append(r)
        lite.executemany(f"INSERT INTO {ttab} VALUES ({ph.replace('%s', '?')})", rows)
        lite.commit()
        lite.close()
        target_dsn = "sqlite:" + path
    else:
        cur.execute(f"CREATE TABLE {ttab} (k {ty_t} PRIMARY KEY, {coldefs})")
        if tgt:
            cur.executemany(f"INSERT INTO {ttab} VALUES ({ph})", [pg_row(k, v, True)
                                                                  for k, v in tgt.items()])
    args = ["diff", pg.dsn(db), target_dsn, "--table", stab, "--target-table", ttab,
            "--allow-empty", "--ranges", str(rnd.randint(1, 8))]
    desc = (f"hostile scenario {sc}: key {ty_s} vs {ty_t}, {len(vtypes)} columns "
            f"({','.join(vtypes) if len(vtypes) < 10 else 'int4'}), {size} rows, "
            f"{'SQLite' if to_sqlite else 'PostgreSQL'} target")
    if cluster and not to_sqlite:
        code, doc, err = submit_json(["source", "target"] + args[3:])
    else:
        code, doc, err = sluice_json(*args)
    cur.execute(f"DROP TABLE {stab}")
    if not to_sqlite:
        cur.execute(f"DROP TABLE {ttab}")
    if refuse:
        # submit --wait says "job N submitted" first, then the one line
        lines = [x for x in err.splitlines() if x.strip() and not x.endswith(" submitted")]
        return (code == 2 and len(lines) == 1 and '"k"' in err, desc + " refused",
                f"exit {code}\n{err[:2000]}")
    if doc is None or code != (1 if expected else 0):
        return False, desc, f"exit {code}, expected {1 if expected else 0}\n{err[:2000]}"
    got = divergence_set(doc)
    return (got == expected, desc, f"missed: {sorted(expected - got)[:5]}\n"
            f"false: {sorted(got - expected)[:5]}")


missed_total = false_total = 0
runs_failed = 0
hostile_failed = hostile_run = 0
started = time.time()
for sc in range(scenarios):
    if sc and sc % 500 == 0:  # long runs (make test-random) show that they move
        t.diag(f"{sc}/{scenarios} scenarios in {time.time() - started:.0f} s, "
               f"{runs_failed + hostile_failed} failed so far")
    if rnd.random() < HOSTILE_SHARE:
        hostile_run += 1
        good, desc, diag = hostile(sc)
        if not good:
            hostile_failed += 1
            t.ok(False, desc, diag)
        continue
    kind = rnd.choice(list(KEYS))
    keycols = KEYS[kind]
    size = rnd.choice([0, rnd.randint(1, 8), rnd.randint(10, 300), rnd.randint(1000, 3000)])
    src, tgt = f"s{sc}", f"t{sc}"
    coldefs = ", ".join(f"{q(n)} {ty}" for n, ty in keycols + COLS)
    pk = ", ".join(q(n) for n, _ in keycols)
    for tab in (src, tgt):
        cur.execute(f"CREATE TABLE {tab} ({coldefs}, PRIMARY KEY ({pk}))")
    used = set()
    rows = []
    for _ in range(size):
        k = rand_key(kind, used)
        rows.append(k + tuple(rand_value(c) for c, _ in COLS))
    names = [n for n, _ in keycols] + [c for c, _ in COLS]
    ph = ", ".join(["%s"] * len(names))
    if rows:
        cur.executemany(f"INSERT INTO {src} VALUES ({ph})", rows)
        cur.execute(f"INSERT INTO {tgt} SELECT * FROM {src}")
    # mutations (some scenarios none at all)
    nmut = 0 if rnd.random() < 0.15 else rnd.randint(1, 12)
    where_key = " AND ".join(f"{q(n)} = %s" for n, _ in keycols)
    for _ in range(nmut):
        op = rnd.random()
        if rows and op < 0.55:
            r = rnd.choice(rows)
            col = rnd.choice(COLS)[0]
            v = rand_value(col) if rnd.random() < 0.8 else respell(col, r[1 + [c for c, _ in COLS].index(col) + len(keycols) - 1])
            cur.execute(f"UPDATE {tgt} SET {q(col)} = %s WHERE {where_key}",
                        (v,) + r[:len(keycols)])
        elif rows and op < 0.75:
            r = rnd.choice(rows)
            cur.execute(f"DELETE FROM {tgt} WHERE {where_key}", r[:len(keycols)])
        elif op < 0.9:
            k = rand_key(kind, used)
            cur.execute(f"INSERT INTO {tgt} VALUES ({ph})",
                        k + tuple(rand_value(c) for c, _ in COLS))
        elif rows:
            r = rnd.choice(rows)  # delete on source: extra in target
            cur.execute(f"DELETE FROM {src} WHERE {where_key}", r[:len(keycols)])
    # the oracle
    on = " AND ".join(f"s.{q(n)} = t.{q(n)}" for n, _ in keycols)
    k0 = q(keycols[0][0])
    keyexpr = ", ".join(f"coalesce(s.{q(n)}, t.{q(n)})::text" for n, _ in keycols)
    diffs = " OR ".join(f"s.{q(c)} IS DISTINCT FROM t.{q(c)}" for c, _ in COLS)
    arr = ", ".join(f"CASE WHEN s.{q(c)} IS DISTINCT FROM t.{q(c)} THEN '{c}' END" for c, _ in COLS)
    cur.execute(f"""SELECT {keyexpr},
        CASE WHEN s.{k0} IS NULL THEN 'extra-in-target'
             WHEN t.{k0} IS NULL THEN 'missing-in-target' ELSE 'changed' END,
        array_remove(ARRAY[{arr}], NULL)
        FROM {src} s FULL OUTER JOIN {tgt} t ON {on}
        WHERE s.{k0} IS NULL OR t.{k0} IS NULL OR {diffs}""")
    expected = set()
    for row in cur.fetchall():
        key = tuple(row[:len(keycols)])
        kindname = row[len(keycols)]
        cols = tuple(sorted(row[len(keycols) + 1])) if kindname == "changed" else ()
        expected.add((kindname, key, cols))
    workers = rnd.randint(1, 3)
    args = ["diff", pg.dsn(db), pg.dsn(db), "--table", src, "--target-table", tgt,
            "--workers", str(workers), "--allow-empty"]
    if rnd.random() < 0.5:
        args += ["--ranges", str(rnd.randint(1, 20))]
    if cluster:
        args = ["source", "target"] + args[3:]
        i = args.index("--workers")
        del args[i:i + 2]
        code, doc, err = submit_json(args)
    else:
        code, doc, err = sluice_json(*args)
    want_code = 1 if expected else 0
    if doc is None or code != want_code:
        runs_failed += 1
        t.ok(False, f"scenario {sc} ({kind} key, {size} rows): exit {code}, expected {want_code}",
             err)
        continue
    got = divergence_set(doc)
    missed, false = expected - got, got - expected
    missed_total += len(missed)
    false_total += len(false)
    if missed or false:
        t.ok(False, f"scenario {sc} ({kind} key, {size} rows, {workers} workers)",
             f"missed: {sorted(missed)[:5]}\nfalse: {sorted(false)[:5]}")
    for tab in (src, tgt):
        cur.execute(f"DROP TABLE {tab}")

t.diag(f"{scenarios} scenarios in {time.time() - started:.1f} s")
t.ok(runs_failed == 0, f"every sluice run exited as expected ({runs_failed} did not)")
t.ok(missed_total == 0, f"zero missed divergences over {scenarios} scenarios ({missed_total} missed)")
t.ok(false_total == 0, f"zero false reports over {scenarios} scenarios ({false_total} false)")
t.ok(hostile_failed == 0, f"{hostile_run} hostile scenarios answered exactly or refused as they "
     f"must ({hostile_failed} were not)")
if cluster:
    cluster.stop()
    t.ok(not cluster.sanitizer_reports(), "no sanitizer report from the cluster",
         "\n".join(cluster.sanitizer_reports()))
t.done()
