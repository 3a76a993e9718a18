#!/usr/bin/python3
"""Dense divergence (coordinator/co_stream.c): tables whose rows differ
100%, about 50% and 1% (changed, missing and extra mixed, NULLs, values
longer than a fetch ships whole), on PostgreSQL and SQLite. sluice diff's
answer is checked exactly (kinds, keys, columns, both values, a cut value's
length) against an oracle computed here from the rows written, and the JSON
summary's streamed_ranges shows the stream was taken where most rows differ
(and not on identical tables). Once more with --rechecks: keys the stream
finds go through the re-check path and come out confirmed.
SEED=n replays a run."""
import os
import random
import shutil
import subprocess
import sqlite3
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone

sys.path.insert(0, os.path.dirname(__file__))
from harness import SLUICE as SLUICE_BIN, PgServer, Tap, sluice_json  # noqa: E402

XXH128SUM = shutil.which("xxh128sum")  # else a cut value's hash is checked for its form only

seed = int(os.environ.get("SEED", int(time.time())))
rnd = random.Random(seed)
t = Tap()
t.diag(f"seed {seed} (SEED={seed} replays)")

N = 12000  # source rows; ids 2, 4, ... so extra rows can fall between them
BIG = 70000  # over MSG_VALUE_MAX (64 KiB): travels as a digest, shown cut
T0 = datetime(2023, 1, 1, tzinfo=timezone.utc)


def source_rows():
    rows = {}
    for i in range(1, N + 1):
        big = ("x" * BIG + str(i)) if i % 400 == 0 else None
        rows[2 * i] = {"a": i * 7 % 1000, "t": None if i % 11 == 0 else f"t{i}", "big": big,
                       "ts": T0 + timedelta(seconds=i)}
    return rows


def mutate(src, share):
    """The target: src with about share of its rows changed, missing or
    extra (70/15/15), each change touching one to three columns."""
    tgt = {k: dict(v) for k, v in src.items()}
    for k in sorted(src):
        if rnd.random() >= share:
            continue
        what = rnd.random()
        if what < 0.15:
            del tgt[k]
            continue
        if what < 0.30:
            tgt[k + 1] = {"a": rnd.randint(0, 99), "t": rnd.choice([None, "extra"]),
                          "big": rnd.choice([None, "e" * BIG]), "ts": T0}
        row = tgt[k]
        cols = rnd.sample(["a", "t", "big", "ts"], rnd.randint(1, 3))
        for c in cols:
            if c == "a":
                row["a"] += 1
            elif c == "t":
                row["t"] = "changed" if row["t"] is None else rnd.choice([None, row["t"] + "!"])
            elif c == "big":
                row["big"] = ("y" * BIG) if row["big"] is None else rnd.choice(
                    [None, row["big"] + "y", "short"])
            else:
                row["ts"] += timedelta(microseconds=rnd.randint(1, 10**6))
    return tgt


def shown(v):
    """A value as sluice shows it, and its full length when it is cut."""
    if v is None:
        return None, None
    if isinstance(v, datetime):  # timestamptz on PostgreSQL, its text on SQLite
        return v.strftime("%Y-%m-%d %H:%M:%S.%f"), None
    s = str(v)
    if len(s.encode()) > 65536:  # a digest and the first 1 KiB (ASCII here)
        return s[:1024], len(s.encode())
    return s, None


def oracle(src, tgt):
    exp = {}
    for k in sorted(set(src) | set(tgt)):
        if k not in tgt:
            exp[str(k)] = ("missing-in-target", {})
        elif k not in src:
            exp[str(k)] = ("extra-in-target", {})
        else:
            cols = {}
            for c in ("a", "t", "big", "ts"):
                if src[k][c] != tgt[k][c]:
                    cols[c] = shown(src[k][c]) + shown(tgt[k][c])
            if cols:
                exp[str(k)] = ("changed", cols)
    return exp


def got_of(doc):
    got, bad_hash = {}, []
    for d in doc["divergences"]:
        (key,) = d["key"].values()
        cols = {}
        for c in d.get("columns", []):
            cols[c["column"]] = (c["source"], c.get("source_length"), c["target"],
                                 c.get("target_length"))
            for s in ("source", "target"):
                h = c.get(s + "_hash")
                if h is not None and not (len(h) == 32 and all(x in "0123456789abcdef"
                                                              for x in h)):
                    bad_hash.append((key, c["column"], h))
        got[key] = (d["kind"], cols)
    return got, bad_hash


def check_hashes(doc, src, tgt):
    """Each cut value's hash is the XXH3-128 of its payload (when the
    xxh128sum command is here)."""
    if XXH128SUM is None:
        return []
    wrong = []
    for d in doc["divergences"]:
        (key,) = d["key"].values()
        for c in d.get("columns", []):
            for s, rows in (("source", src), ("target", tgt)):
                h = c.get(s + "_hash")
                if h is not None:
                    full = rows[int(key)][c["column"]].encode()
                    r = subprocess.run([XXH128SUM, "-"], input=full, capture_output=True)
                    if r.stdout.split()[0].decode() != h:
                        wrong.append((key, c["column"], s))
    return wrong


def load_pg(cur, name, rows):
    cur.execute(f'DROP TABLE IF EXISTS "{name}"')
    cur.execute(f'CREATE TABLE "{name}" (id bigint PRIMARY KEY, a int, t text, big text, '
                f'ts timestamptz)')
    cur.executemany(f'INSERT INTO "{name}" VALUES (%s, %s, %s, %s, %s)',
                    [(k, r["a"], r["t"], r["big"], r["ts"]) for k, r in sorted(rows.items())])


def load_sqlite(path, name, rows):
    c = sqlite3.connect(path)
    c.execute(f'DROP TABLE IF EXISTS "{name}"')
    c.execute(f'CREATE TABLE "{name}" (id INTEGER PRIMARY KEY, a INTEGER, t TEXT, big TEXT, '
              f'ts TEXT)')
    c.executemany(f'INSERT INTO "{name}" VALUES (?, ?, ?, ?, ?)',
                  [(k, r["a"], r["t"], r["big"],
                    r["ts"].strftime("%Y-%m-%d %H:%M:%S.%f")) for k, r in sorted(rows.items())])
    c.commit()
    c.close()


def compare(label, doc, exp, src, tgt, status=None):
    got, bad_hash = got_of(doc)
    # the oracle's cols are (src shown, src length, tgt shown, tgt length)
    missing = [k for k in exp if k not in got]
    extra = [k for k in got if k not in exp]
    wrong = [(k, exp[k], got[k]) for k in exp if k in got and exp[k] != got[k]]
    t.ok(not missing and not extra and not wrong,
         f"{label}: {len(exp)} divergences exactly as the oracle has them",
         f"missed {missing[:5]}, false {extra[:5]}, wrong {wrong[:3]}")
    t.ok(not bad_hash and not check_hashes(doc, src, tgt),
         f"{label}: cut values carry their XXH3-128 ({'checked' if XXH128SUM else 'form only'})",
         f"{bad_hash[:3]} {check_hashes(doc, src, tgt)[:3]}")
    if status is not None:
        st = {d.get("status") for d in doc["divergences"]}
        t.ok(st == {status}, f"{label}: every divergence is {status}", st)


pg = PgServer()
db = pg.createdb("dense")
conn = pg.connect(db)
conn.autocommit = True
cur = conn.cursor()
sqlite_path = os.path.join(tempfile.mkdtemp(prefix="sluice-dense-"), "d.db")

src = source_rows()
load_pg(cur, "src", src)
load_sqlite(sqlite_path, "src", src)
# dense: True, the drill-down must hand over to the stream; False, a sparse
# table must stay with the drill-down; None, either (the answer is checked)
cases = [("all rows", 1.0, True), ("about half the rows", 0.5, True),
         ("1% of the rows", 0.01, None), ("0.1% of the rows", 0.001, False)]
for label, share, dense in cases:
    tgt = mutate(src, share)
    load_pg(cur, "tgt", tgt)
    load_sqlite(sqlite_path, "tgt", tgt)
    for engine, dsn in (("PostgreSQL", pg.dsn(db)), ("SQLite", "sqlite:" + sqlite_path)):
        exp = oracle(src, tgt)
        code, doc, err = sluice_json("diff", dsn, dsn, "--table", "src", "--target-table", "tgt",
                                     "--ranges", "2")
        name = f"{engine}, {label} differing"
        if not t.ok(code == 1 and doc is not None, f"{name}: exit 1 with a report", err[-800:]):
            continue
        compare(name, doc, exp, src, tgt)
        s = doc["summary"]
        if dense:
            t.ok(s["streamed_ranges"] >= 1 and s["streamed_rows"] > 0,
                 f"{name}: the drill-down stopped and ranges were streamed "
                 f"({s['streamed_ranges']} ranges, {s['streamed_rows']} rows)")
        elif dense is False:
            t.ok(s["streamed_ranges"] == 0 and s["streamed_rows"] == 0,
                 f"{name}: drilled down, nothing streamed", s)
        else:
            t.diag(f"{name}: {s['streamed_ranges']} ranges streamed, {s['streamed_rows']} rows")
        if not dense:  # drilled: the spans' rows came from the trees' kept rows
            t.ok(s.get("rows_from_memory", 0) > 0,
                 f"{name}: the drill's span rows came from the trees in memory "
                 f"({s.get('rows_from_memory')} rows)")
        t.ok(s["matched_on_fetch"] == 0, f"{name}: no row counted as matched on fetch")
    if share == 0.5:
        code, doc, err = sluice_json("diff", pg.dsn(db), pg.dsn(db), "--table", "src",
                                     "--target-table", "tgt", "--ranges", "2", "--rechecks", "1",
                                     "--settle", "0")
        name = f"PostgreSQL, {label} differing, --rechecks 1"
        if t.ok(code == 1 and doc is not None, f"{name}: exit 1 with a report", err[-800:]):
            compare(name, doc, oracle(src, tgt), src, tgt, status="confirmed")
            t.ok(doc["summary"]["streamed_ranges"] >= 1, f"{name}: streamed")

# wide rows: a stream reply fills its 8 MiB before its row limit, so the
# worker stops (and cancels) the read and the coordinator asks again
W = 6000
wide_src = {k: {"a": k, "t": "w" * 3000 + str(k)} for k in range(1, W + 1)}
wide_tgt = {k: {"a": k, "t": "w" * 3000 + str(k) + "!"} for k in range(1, W + 1) if k % 97}
cur.execute("DROP TABLE IF EXISTS wsrc, wtgt")
lite = sqlite3.connect(sqlite_path)
for name, rows in (("wsrc", wide_src), ("wtgt", wide_tgt)):
    cur.execute(f"CREATE TABLE {name} (id bigint PRIMARY KEY, a int, t text)")
    cur.executemany(f"INSERT INTO {name} VALUES (%s, %s, %s)",
                    [(k, r["a"], r["t"]) for k, r in rows.items()])
    lite.execute(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, a INTEGER, t TEXT)")
    lite.executemany(f"INSERT INTO {name} VALUES (?, ?, ?)",
                     [(k, r["a"], r["t"]) for k, r in rows.items()])
lite.commit()
lite.close()
wexp = {str(k): ("missing-in-target", {}) if k % 97 == 0 else
        ("changed", {"t": (wide_src[k]["t"], None, wide_tgt[k]["t"], None)})
        for k in wide_src}
for engine, dsn in (("PostgreSQL", pg.dsn(db)), ("SQLite", "sqlite:" + sqlite_path)):
    code, doc, err = sluice_json("diff", dsn, dsn, "--table", "wsrc", "--target-table", "wtgt",
                                 "--ranges", "1")
    name = f"{engine}, 3 KB rows, all differing"
    if t.ok(code == 1 and doc is not None, f"{name}: exit 1 with a report", err[-800:]):
        got, _ = got_of(doc)
        t.ok(got == wexp, f"{name}: {len(wexp)} divergences exactly as the oracle has them",
             f"{len(got)} got, {len(set(got) ^ set(wexp))} keys differ")
        s = doc["summary"]
        # 4,096 such rows would be 12 MB: each reply is cut at 8 MiB
        t.ok(s["streamed_ranges"] == 1 and s["streamed_rows"] > 4096,
             f"{name}: streamed ({s['streamed_rows']} rows, more than one reply holds)")

# re-checks read the database, never the trees' kept rows: 1% of the rows
# changed, and one of them fixed on the target after the trees were built
# and before its re-check; it must come out transient (the re-check saw the
# fix), every other one confirmed. Once by fetch, once with --keys-only
# (whose re-checks are bounded rows requests).
rsrc = {k: dict(v) for k, v in src.items()}
rtgt = {k: dict(v) for k, v in src.items()}
changed = sorted(rnd.sample(sorted(src), len(src) // 100))
for k in changed:
    rtgt[k]["a"] += 1
fixed = changed[len(changed) // 2]
load_pg(cur, "rsrc", rsrc)
for keys_only in (False, True):
    load_pg(cur, "rtgt", rtgt)
    extra = ["--keys-only"] if keys_only else []
    name = f"PostgreSQL, 1% changed, a row fixed before its re-check{', --keys-only' * keys_only}"
    p = subprocess.Popen([os.environ["SLUICE"], "diff", pg.dsn(db), pg.dsn(db), "--table", "rsrc",
                          "--target-table", "rtgt", "--ranges", "2", "--rechecks", "1",
                          "--settle", "8", "--no-progress", "--format", "json"] + extra,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)  # the trees are built (a few hundred ms): the row waits for its re-check
    cur.execute("UPDATE rtgt SET a = a - 1 WHERE id = %s", (fixed,))
    out, err = p.communicate(timeout=120)
    doc = None
    try:
        import json
        doc = json.loads(out)
    except ValueError:
        pass
    if t.ok(p.returncode == 1 and doc is not None, f"{name}: exit 1 with a report", err[-800:]):
        st = {int(next(iter(d["key"].values()))): (d["kind"], d.get("status"))
              for d in doc["divergences"]}
        want = {k: ("changed", "transient" if k == fixed else "confirmed") for k in changed}
        t.ok(st == want, f"{name}: {len(changed) - 1} confirmed, the fixed row transient",
             f"{len(set(st.items()) ^ set(want.items()))} differ; fixed: {st.get(fixed)}")
        t.ok(doc["summary"].get("rows_from_memory", 0) > 0,
             f"{name}: the drill's span rows came from memory")
        if not keys_only:
            cols = {int(next(iter(d["key"].values()))): d.get("columns")
                    for d in doc["divergences"] if d.get("status") == "confirmed"}
            t.ok(all(c and c[0]["column"] == "a" for c in cols.values()),
                 f"{name}: confirmed rows show their changed column")

# long keys: span rows from memory cut at 8 MiB ("more") and asked for again
# from the last key, exactly as a database read is: 6 KB text keys (they
# compress in the index), every row changed, --keys-only (a drill to the
# row hashes, never a stream)
K = 2500  # 15 MB of keys a side: kept (16 MiB a tree); 64 spans hold about 12 MB
lk = {("k" * 6000) + f"{i:06d}": i for i in range(K)}
cur.execute("DROP TABLE IF EXISTS ksrc, ktgt")
for name, bump in (("ksrc", 0), ("ktgt", 1)):
    cur.execute(f'CREATE TABLE {name} (id text COLLATE "C" PRIMARY KEY, a int)')
    cur.executemany(f"INSERT INTO {name} VALUES (%s, %s)", [(k, v + bump) for k, v in lk.items()])
code, doc, err = sluice_json("diff", pg.dsn(db), pg.dsn(db), "--table", "ksrc", "--target-table",
                             "ktgt", "--ranges", "1", "--keys-only")
name = "PostgreSQL, 6 KB keys, all changed, --keys-only"
if t.ok(code == 1 and doc is not None, f"{name}: exit 1 with a report", err[-800:]):
    got = sorted(next(iter(d["key"].values())) for d in doc["divergences"]
                 if d["kind"] == "changed")
    t.ok(got == sorted(lk) and len(doc["divergences"]) == K,
         f"{name}: {K} changed, each once", f"{len(got)} changed of {len(doc['divergences'])}")
    s = doc["summary"]
    t.ok(s.get("rows_from_memory", 0) == 2 * K,
         f"{name}: every span row listed once from memory, over replies cut at 8 MiB "
         f"({s.get('rows_from_memory')})")

# identical tables: nothing streamed, nothing reported
for engine, dsn in (("PostgreSQL", pg.dsn(db)), ("SQLite", "sqlite:" + sqlite_path)):
    code, doc, err = sluice_json("diff", dsn, dsn, "--table", "src", "--target-table", "src",
                                 "--ranges", "2")
    t.ok(code == 0 and doc and doc["summary"]["streamed_ranges"] == 0 and not doc["divergences"],
         f"{engine}: identical tables: equal, nothing streamed", err[-500:])

# job-level: once most ranges were dense, the pending ones are streamed
# whole, no tree built (coordinator/README.md, "Dense divergence")
cur.execute("DROP TABLE IF EXISTS dsrc, dtgt")
# DENSE_JOB_ROWS: the job's rows (default 200,000: at 100,000 the workers build
# more trees ahead of the first compare, and fewer are skipped)
JR = int(os.environ.get("DENSE_JOB_ROWS", "200000"))
cur.execute("CREATE TABLE dsrc AS SELECT g AS id, g % 1000 AS a, 'v' || g AS t "
            f"FROM generate_series(1, {JR}) g")
cur.execute("CREATE TABLE dtgt AS SELECT id, a + 1 AS a, t FROM dsrc WHERE id % 50 <> 0")
cur.execute(f"INSERT INTO dtgt SELECT g, 1, 'x' FROM generate_series({JR + 1}, {JR + 100}) g")
for tb in ("dsrc", "dtgt"):
    cur.execute(f"ALTER TABLE {tb} ADD PRIMARY KEY (id)")
dexp = {("changed" if i % 50 else "missing-in-target", str(i)) for i in range(1, JR + 1)} | \
    {("extra-in-target", str(i)) for i in range(JR + 1, JR + 101)}


def dense_set(doc):
    out = set()
    for d in doc["divergences"]:
        cols = [c["column"] for c in d.get("columns", [])]
        if d["kind"] == "changed" and cols != ["a"]:
            out.add(("wrong columns", str(cols)))
        out.add((d["kind"], d["key"]["id"]))
    return out


code, doc, err = sluice_json("diff", pg.dsn(db), pg.dsn(db), "--table", "dsrc", "--target-table",
                             "dtgt", "--ranges", "16", "--workers", "2")
if t.ok(code == 1 and doc is not None, "16 dense ranges: exit 1 with a report", err[-800:]):
    s = doc["summary"]
    got = dense_set(doc)
    t.ok(got == dexp, f"16 dense ranges: {len(dexp)} divergences exactly",
         f"missed {sorted(dexp - got)[:5]}, false {sorted(got - dexp)[:5]}")
    t.ok(s["changed"] + s["missing_in_target"] + s["extra_in_target"] == len(dexp),
         "16 dense ranges: each counted once", s)
    # the first range (and what was sent meanwhile) has its trees; the rest none
    t.ok(s["streamed_ranges"] == s["ranges"] == 16 and 2 * 10 <= s["trees_skipped"] <= 2 * 15,
         f"16 dense ranges: every range streamed, {s['trees_skipped']} trees skipped", s)
    # the ranges streamed whole went to merge tasks: one worker read both
    # sides and sent only what differed (coordinator/README.md, "Merge tasks")
    t.ok(s["merged_ranges"] >= 8 and s["merged_ranges"] <= s["streamed_ranges"],
         f"16 dense ranges: {s['merged_ranges']} merged by one worker reading both sides", s)

# the direct stream through a cluster, a worker SIGKILLed mid-job
from cluster import Cluster  # noqa: E402

cl = Cluster({"src": pg.dsn(db), "tgt": pg.dsn(db)})
cl.start_coordinator()
for _ in range(2):
    cl.start_worker(slots=1)
if t.ok(cl.wait_workers(2), "cluster: two workers registered"):
    args = [SLUICE_BIN, "submit", "src", "tgt", "--table", "dsrc", "--target-table", "dtgt",
            "--ranges", "16", "--wait", "--no-progress", "--format", "json", "--coordinator",
            cl.clients_ep]
    t0 = time.time()
    r = subprocess.run(args, capture_output=True, text=True, env=cl.env, timeout=300)
    took = time.time() - t0
    import json
    doc = json.loads(r.stdout) if r.returncode == 1 else None
    t.ok(doc is not None and dense_set(doc) == dexp,
         f"cluster: exact answer ({took:.2f} s)", r.stderr[-500:])
    for frac in (0.3, 0.6):
        p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=cl.env)
        time.sleep(took * frac)
        victim = cl.workers[0]
        victim.kill()
        victim.wait()
        out, err = p.communicate(timeout=300)
        doc = json.loads(out) if p.returncode == 1 else None
        got = dense_set(doc) if doc else set()
        t.ok(doc is not None and got == dexp,
             f"cluster: a worker SIGKILLed {frac:.0%} into the job: the exact answer",
             f"exit {p.returncode} {err[-500:]}; missed {sorted(dexp - got)[:5]}, "
             f"false {sorted(got - dexp)[:5]}")
        if doc:
            s = doc["summary"]
            t.ok(s["changed"] + s["missing_in_target"] + s["extra_in_target"] == len(dexp),
                 f"cluster, worker killed at {frac:.0%}: each divergence counted once", s)
        cl.workers.pop(0)
        cl.start_worker(slots=1)
        cl.wait_workers(2)
cl.stop()

conn.close()
pg.stop()
t.done()
