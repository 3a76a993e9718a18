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
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(__file__))
from harness import PgServer, Tap, divergence_set, sluice_json  # noqa: E402

seed = int(os.environ.get("SEED", int(time.time())))
scenarios = int(os.environ.get("SCENARIOS", "200"))
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


missed_total = false_total = 0
runs_failed = 0
started = time.time()
for sc in range(scenarios):
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
        code, out, err = cluster.client("submit", *args, "--wait", "--format", "json",
                                        "--no-progress")
        try:
            doc = json.loads(out)
        except ValueError:
            doc = None
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
if cluster:
    cluster.stop()
    t.ok(not cluster.sanitizer_reports(), "no sanitizer report from the cluster",
         "\n".join(cluster.sanitizer_reports()))
t.done()
