#!/usr/bin/python3
"""Values at the edges of what the databases hold, each compared exactly.

Numerics of PostgreSQL's whole range (131072 digits before the point, 16383
after), read in binary (COPY) and as text (sluice.read=text), against
PostgreSQL and SQLite: equal values of any scale are equal, a change in the
last digit is found. Integer keys at -2^63 and 2^63-1 split into 1..8
ranges (the split arithmetic once overflowed). Tables of 1600 columns
(PostgreSQL's limit), diffed whole, in process and through a cluster, and a
601-column table compared on three of its columns.

Decisions this file holds sluice to (merkle/README.md): a SQLite TEXT column
holding a decimal's text compares as that exact decimal; a SQLite NUMERIC
column holds what SQLite's affinity made of it (an integer when exact, else
a double), and sluice compares what SQLite holds."""
import json
import os
import sqlite3
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Cluster  # noqa: E402
from harness import SLUICE, PgServer, Tap, divergence_set, sluice_json  # noqa: E402

t = Tap()
# the sanitizer build carries its exit codes (86-88) itself, so a report is
# never exit 1 even without the harness's environment
syms = subprocess.run(["nm", SLUICE], capture_output=True, text=True).stdout
if "__asan_init" in syms:
    t.ok(all(f"T __{s}_default_options" in syms for s in ("asan", "ubsan", "lsan")),
         "the sanitizer build defines its own sanitizer exit codes")
pg = PgServer()
db = pg.createdb("values")
c = pg.connect(db)
cur = c.cursor()
D = pg.dsn(db)
T = D + "?options=-csluice.read%3Dtext"  # the same database, read as text
tmp = tempfile.mkdtemp(prefix="sluice-values-")
LITE = os.path.join(tmp, "v.db")
lite = sqlite3.connect(LITE)
L = "sqlite:" + LITE


def diff(src, tgt, *args):
    code, doc, err = sluice_json("diff", src, tgt, *args)
    return code, (divergence_set(doc) if doc else None), doc, err


# ---- numerics ---------------------------------------------------------------
Z = "0"
# id: (source text, target text); equal values first, then two that differ
# only in their last digit
NUM = {
    1: ("1." + Z * 600, "1"),
    2: ("1" + Z * 1000 + ".00000", "1" + Z * 1000),
    3: ("9" * 131072 + "." + "9" * 16000 + Z * 383, "9" * 131072 + "." + "9" * 16000),
    4: ("-" + "1" * 2000 + ".5" + Z * 5000, "-" + "1" * 2000 + ".5"),
    5: ("0." + Z * 16383, "0"),
    6: ("-0.000", "0"),
    7: ("0." + Z * 16382 + "1", "1e-16383"),
    8: ("NaN", "NaN"),
    9: ("Infinity", "Infinity"),
    10: ("-Infinity", "-Infinity"),
    11: ("1" + Z * 131071 + "." + Z * 16383, "1" + Z * 131071),
    12: ("12345.67800", "12345.678"),
    20: ("0." + "1" * 16383, "0." + "1" * 16382 + "2"),
    21: ("1" + Z * 131071, "1" + Z * 131070 + "1"),
}
CHANGED = {("changed", ("20",), ("v",)), ("changed", ("21",), ("v",))}
for tab in ("num_s", "num_t"):
    cur.execute(f"CREATE TABLE {tab} (id int8 PRIMARY KEY, v numeric)")
for i, (s, tg) in NUM.items():
    cur.execute("INSERT INTO num_s VALUES (%s, %s::numeric)", (i, s))
    cur.execute("INSERT INTO num_t VALUES (%s, %s::numeric)", (i, tg))
cur.execute("SELECT scale(v), length(v::text) FROM num_s WHERE id = 3")
t.diag(f"row 3 of num_s: scale and length {cur.fetchone()}")

for name, a, b in (("binary", D, D), ("binary against text", D, T), ("text", T, T)):
    for ranges in ("1", "3"):
        code, got, doc, err = diff(a, b, "--table", "num_s", "--target-table", "num_t",
                                   "--ranges", ranges)
        t.ok(code == 1 and got == CHANGED and doc["summary"]["matched_on_fetch"] == 0,
             f"numerics of any scale and length, {name}, {ranges} range(s): only the two "
             "last-digit changes", f"{code} {sorted(got or [])[:4]} {err[-800:]}")

# the report shows such values whole
code, got, doc, err = diff(D, D, "--table", "num_s", "--target-table", "num_t")
shown = {d["key"]["id"]: d["columns"][0] for d in (doc or {}).get("divergences", [])}
t.ok("20" in shown and shown["20"]["target"] == NUM[20][1] and
     shown["20"]["source"] == NUM[20][0],
     "a 16383-digit fraction is shown whole in the report")

# PostgreSQL against SQLite: a TEXT column keeps the decimal exactly
lite.execute("CREATE TABLE num_text (id INTEGER PRIMARY KEY, v TEXT)")
lite.executemany("INSERT INTO num_text VALUES (?, ?)", [(i, tg) for i, (_, tg) in NUM.items()])
lite.commit()
for name, src in (("binary", D), ("text", T)):
    code, got, doc, err = diff(src, L, "--table", "num_s", "--target-table", "num_text")
    t.ok(code == 1 and got == CHANGED,
         f"PostgreSQL ({name}) against SQLite TEXT decimals: only the two last-digit changes",
         f"{code} {sorted(got or [])[:4]} {err[-800:]}")
    code, got, doc, err = diff(L, src, "--table", "num_text", "--target-table", "num_t")
    t.ok(code == 0, f"SQLite TEXT decimals against the same values in PostgreSQL ({name})",
         f"{code} {sorted(got or [])[:4]} {err[-800:]}")

# a SQLite NUMERIC column: 1.000... is stored as integer 1 (equal); 10^1000
# does not fit a double (SQLite stores Inf): reported changed, by decision
lite.execute("CREATE TABLE num_aff (id INTEGER PRIMARY KEY, v NUMERIC)")
lite.executemany("INSERT INTO num_aff VALUES (?, ?)", [(i, NUM[i][0]) for i in (1, 2, 5, 6, 12)])
lite.commit()
t.diag("SQLite NUMERIC holds: " + str(lite.execute(
    "SELECT id, typeof(v), substr(CAST(v AS TEXT), 1, 20) FROM num_aff").fetchall()))
cur.execute("CREATE TABLE num_aff AS SELECT * FROM num_s WHERE id IN (1, 2, 5, 6, 12)")
cur.execute("ALTER TABLE num_aff ADD PRIMARY KEY (id)")
for name, src in (("binary", D), ("text", T)):
    code, got, doc, err = diff(src, L, "--table", "num_aff")
    t.ok(code == 1 and got == {("changed", ("2",), ("v",))},
         f"PostgreSQL ({name}) against SQLite NUMERIC: scaled 1, zeros and 12345.678 equal; "
         "10^1000 (a double's Inf in SQLite) changed", f"{code} {sorted(got or [])} {err[-800:]}")

# ---- integer keys at the extremes ---------------------------------------------
MIN, MAX = -2**63, 2**63 - 1
KEYS = [MIN, MIN + 1, -5, 0, 7, MAX - 1, MAX]
cases = {
    "ext": KEYS,
    "two": [MIN, MAX],
    "one": [MAX],
    "few": [1, 2, 3],
}
for tab, keys in cases.items():
    for side in ("s", "t"):
        cur.execute(f"CREATE TABLE {tab}_{side} (id int8 PRIMARY KEY, v text)")
        lite.execute(f"CREATE TABLE {tab}_{side} (id INTEGER PRIMARY KEY, v TEXT)")
        rows = [(k, f"v{k}") for k in keys]
        cur.executemany(f"INSERT INTO {tab}_{side} VALUES (%s, %s)", rows)
        lite.executemany(f"INSERT INTO {tab}_{side} VALUES (?, ?)", rows)
    cur.execute(f"CREATE TABLE {tab}_d AS SELECT * FROM {tab}_s")
    cur.execute(f"ALTER TABLE {tab}_d ADD PRIMARY KEY (id)")
    lite.execute(f"CREATE TABLE {tab}_d (id INTEGER PRIMARY KEY, v TEXT)")
    lite.execute(f"INSERT INTO {tab}_d SELECT * FROM {tab}_s")
    # the difference: the last key changed, the first gone (when two or more)
    for conn_ in (cur, lite):
        conn_.execute(f"UPDATE {tab}_d SET v = 'changed' WHERE id = {keys[-1]}")
        if len(keys) > 1:
            conn_.execute(f"DELETE FROM {tab}_d WHERE id = {keys[0]}")
lite.commit()
bad = []
for tab, keys in cases.items():
    want = {("changed", (str(keys[-1]),), ("v",))}
    if len(keys) > 1:
        want.add(("missing-in-target", (str(keys[0]),), ()))
    for pair, a, b in (("PostgreSQL", D, D), ("SQLite", L, L), ("PostgreSQL-SQLite", D, L)):
        for ranges in range(1, 9):
            r = str(ranges)
            code, got, doc, err = diff(a, b, "--table", f"{tab}_s", "--target-table",
                                       f"{tab}_t", "--ranges", r)
            if code != 0 or doc["source"]["rows"] != len(keys):
                bad.append(f"{pair} {tab} equal --ranges {r}: exit {code} {err[-300:]}")
            code, got, doc, err = diff(a, b, "--table", f"{tab}_s", "--target-table",
                                       f"{tab}_d", "--ranges", r)
            if code != 1 or got != want:
                bad.append(f"{pair} {tab} differing --ranges {r}: exit {code} {got} "
                           f"{err[-300:]}")
t.ok(not bad, "int8 keys at -2^63 and 2^63-1 (7 keys, 2 keys, 1 key, 3 keys), --ranges 1..8, "
     "PostgreSQL, SQLite and across: the exact answer, equal and with a difference",
     "\n".join(bad[:10]))

# ---- wide tables ----------------------------------------------------------------
WIDE = 1599  # id + c1..c1599: 1600 columns, PostgreSQL's limit
cols = [f"c{k}" for k in range(1, WIDE + 1)]
ddl = ", ".join(f"{n} int4" for n in cols)
for tab in ("wide_s", "wide_t", "wide_d"):
    cur.execute(f"CREATE TABLE {tab} (id int8 PRIMARY KEY, {ddl})")
    lite.execute(f"CREATE TABLE {tab} (id INTEGER PRIMARY KEY, {ddl.replace('int4', 'INTEGER')})")
ph = ", ".join(["%s"] * (WIDE + 1))
rows = [[i] + [i * k for k in range(1, WIDE + 1)] for i in range(1, 21)]
for tab in ("wide_s", "wide_t", "wide_d"):
    cur.executemany(f"INSERT INTO {tab} VALUES ({ph})", rows)
    lite.executemany(f"INSERT INTO {tab} VALUES ({ph.replace('%s', '?')})", rows)
cur.execute("UPDATE wide_d SET c1599 = -1 WHERE id = 7")
lite.execute("UPDATE wide_d SET c1599 = -1 WHERE id = 7")
lite.commit()
WANT = {("changed", ("7",), ("c1599",))}
for pair, a, b in (("PostgreSQL binary", D, D), ("PostgreSQL text", T, T),
                   ("SQLite", L, L), ("PostgreSQL-SQLite", D, L)):
    code, got, doc, err = diff(a, b, "--table", "wide_s", "--target-table", "wide_t",
                               "--ranges", "3")
    t.ok(code == 0, f"1600 columns, {pair}: equal", f"{code} {err[-500:]}")
    code, got, doc, err = diff(a, b, "--table", "wide_s", "--target-table", "wide_d",
                               "--ranges", "3")
    t.ok(code == 1 and got == WANT, f"1600 columns, {pair}: the change in column 1599 found",
         f"{code} {got} {err[-500:]}")

cols600 = ", ".join(f"c{k} int4" for k in range(600))
for tab in ("w600_s", "w600_d"):
    cur.execute(f"CREATE TABLE {tab} (id int8 PRIMARY KEY, {cols600})")
    cur.execute(f"INSERT INTO {tab} (id, c0, c1, c500) SELECT i, i, i, i "
                "FROM generate_series(1, 50) i")
cur.execute("UPDATE w600_d SET c1 = -1 WHERE id = 3")
cur.execute("UPDATE w600_d SET c500 = -1 WHERE id = 4")
code, got, doc, err = diff(D, D, "--table", "w600_s", "--target-table", "w600_d",
                           "--columns", "id,c0,c1")
t.ok(code == 1 and got == {("changed", ("3",), ("c1",))},
     "601 columns, --columns id,c0,c1: the change in c1 only", f"{code} {got} {err[-500:]}")
code, got, doc, err = diff(D, D, "--table", "w600_s", "--target-table", "w600_d")
t.ok(code == 1 and got == {("changed", ("3",), ("c1",)), ("changed", ("4",), ("c500",))},
     "601 columns whole: both changes", f"{code} {got} {err[-500:]}")

# wider than 1600 (SQLite allows 2000 by default): only compared columns count
ddl = ", ".join(f"c{k} INTEGER" for k in range(1, 1801))
for tab in ("w1800_s", "w1800_d"):
    lite.execute(f"CREATE TABLE {tab} (id INTEGER PRIMARY KEY, {ddl})")
    lite.execute(f"INSERT INTO {tab} (id, c1, c1800) VALUES (1, 1, 1), (2, 2, 2)")
lite.execute("UPDATE w1800_d SET c1800 = -2 WHERE id = 2")
lite.commit()
code, got, doc, err = diff(L, L, "--table", "w1800_s", "--target-table", "w1800_d")
t.ok(code == 2 and "more than 1600 columns to compare" in err and "--columns" in err and
     len(err.strip().splitlines()) == 1,
     "1801 columns to compare: one line saying the limit and what to do", f"{code} {err[-300:]}")
code, got, doc, err = diff(L, L, "--table", "w1800_s", "--target-table", "w1800_d",
                           "--columns", "id,c1,c1800")
t.ok(code == 1 and got == {("changed", ("2",), ("c1800",))},
     "1801 columns, --columns id,c1,c1800: the change found", f"{code} {got} {err[-300:]}")
excl = ",".join(f"c{k}" for k in range(2, 300))
code, got, doc, err = diff(L, L, "--table", "w1800_s", "--target-table", "w1800_d",
                           "--exclude-columns", excl)
t.ok(code == 1 and got == {("changed", ("2",), ("c1800",))},
     "1801 columns, 298 excluded (1503 compared): the change found", f"{code} {got} {err[-300:]}")

# through a cluster: a coordinator and a worker process
cl = Cluster({"pg": D, "lite": L})
cl.start_coordinator()
cl.start_worker(slots=2)
t.ok(cl.wait_workers(1), "a worker registered with the coordinator")
for src, tgt in (("pg", "pg"), ("pg", "lite")):
    code, out, err = cl.client("submit", src, tgt, "--wait", "--format", "json", "--no-progress",
                               "--table", "wide_s", "--target-table", "wide_d", "--ranges", "2")
    try:
        got = divergence_set(json.loads(out))
    except ValueError:
        got = None
    t.ok(code == 1 and got == WANT,
         f"cluster, 1600 columns, {src} against {tgt}: the change in column 1599 found",
         f"{code} {got} {err[-500:]}")
cl.stop()
t.ok(not cl.sanitizer_reports(), "no sanitizer reports from the cluster processes",
     "\n".join(cl.sanitizer_reports()))

pg.stop()
t.done()
