#!/usr/bin/python3
"""PostgreSQL ranges read in binary (COPY) hash exactly as the same values
read as text. Edge values of every type with a binary decoder sit in a
table, and a copy whose columns are domains over those types. The source is
read in binary; the target, through a DSN carrying sluice.read=text, as text
through a cursor (the server log shows both). sluice must call them equal,
and must still find one last-digit change hidden among them."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import PgServer, Tap, divergence_set, sluice_json  # noqa: E402

t = Tap()
pg = PgServer()
db = pg.createdb("binary")
c = pg.connect(db)
cur = c.cursor()
D = pg.dsn(db)

# (column, type, values): each list is read down the rows; None is NULL
COLS = [
    ("c_i2", "int2", ["0", "-32768", "32767", "100", None]),
    ("c_i4", "int4", ["-2147483648", "2147483647", "1000", "-7", None]),
    ("c_i8", "int8", ["-9223372036854775808", "9223372036854775807", "1000000000000000000",
                      "-10", None]),
    ("c_num", "numeric", ["0", "0.00", "-0.5", "123.40", "1e-20", "1e20",
                          "12345678901234567890.123456789", "NaN", "Infinity", "-Infinity",
                          "1" + "0" * 600, "0." + "0" * 600 + "1", "0." + "1" * 600, "-" + "2" * 520 + ".5", "1.000000", "-100",
                          "0.0001", "99999999.9999", None]),
    ("c_num2", "numeric(12,2)", ["10.50", "10.5", "10", "-0.01", "1234567890.12", None]),
    ("c_f4", "float4", ["1.1", "3.4e38", "1e-45", "NaN", "Infinity", "-Infinity", "-0",
                        "0.3", "16777217", None]),
    ("c_f8", "float8", ["0.1", "1e308", "5e-324", "-0", "NaN", "-Infinity", "1e21",
                        "123456789012345680000", None]),
    ("c_bool", "bool", ["t", "f", None]),
    ("c_text", "text", ["", "é✓ \\ \" '", "x" * 3000, None]),
    ("c_vc", "varchar(10)", ["a ", "", None]),
    ("c_ch", "char(5)", ["ab", "", None]),
    ("c_bytea", "bytea", ["\\x", "\\x00ff10", None]),
    ("c_date", "date", ["2023-01-01", "0001-01-01", "9999-12-31", "10000-01-01",
                        "0044-03-15 BC", "infinity", "-infinity", "1970-01-01",
                        "1969-12-31", None]),
    ("c_ts", "timestamp", ["2023-01-01 12:34:56.789", "0001-01-01 00:00:00",
                           "9999-12-31 23:59:59.999999", "10000-01-01 00:00:00",
                           "0044-03-15 12:00:00.5 BC", "infinity", "-infinity",
                           "1969-12-31 23:59:59.999999", "2000-01-01 00:00:00", None]),
    ("c_tstz", "timestamptz", ["2023-01-01 12:34:56.000001+00", "0001-01-01 00:00:00+00",
                               "9999-12-31 23:59:59.999999+00", "10000-01-01 00:00:00+00",
                               "0044-03-15 12:00:00 BC", "infinity", "-infinity",
                               "1900-06-30 23:00:00-05", None]),
    ("c_uuid", "uuid", ["00000000-0000-0000-0000-000000000000",
                        "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", None]),
    ("c_json", "json", ['{"b": 1, "a": [1, 2.50]}', '"x"', "null", None]),
    ("c_jsonb", "jsonb", ['{"b": 1, "a": [1, 2.50]}', "[]", None]),
]
ROWS = max(len(v) for _, _, v in COLS) * 3


def val(vals, i):
    return vals[i % len(vals)]


cur.execute(";".join(f"CREATE DOMAIN d_{n} AS {ty}" for n, ty, _ in COLS))
cur.execute("CREATE TABLE edge (id int8 PRIMARY KEY, " +
            ", ".join(f"{n} {ty}" for n, ty, _ in COLS) + ")")
cur.execute("CREATE TABLE edge_dom (id int8 PRIMARY KEY, " +
            ", ".join(f"{n} d_{n}" for n, _, _ in COLS) + ")")
for i in range(ROWS):
    cur.execute(f"INSERT INTO edge VALUES (%s, {', '.join(['%s'] * len(COLS))})",
                [i] + [val(v, i) for _, _, v in COLS])
cur.execute("INSERT INTO edge_dom SELECT * FROM edge")
cur.execute("CREATE TABLE edge_bait AS SELECT * FROM edge_dom")
cur.execute("ALTER TABLE edge_bait ADD PRIMARY KEY (id)")
cur.execute("UPDATE edge_bait SET c_num2 = c_num2 + 0.01 WHERE id = 4")

# the target side reads as text: sluice.read=text set through the DSN
T = D + "?options=-csluice.read%3Dtext"
cur.execute("ALTER SYSTEM SET log_statement = 'all'")
cur.execute("SELECT pg_reload_conf()")
for _ in range(200):  # the reload is asynchronous: wait until a new session logs all
    c2 = pg.connect(db)
    cc = c2.cursor()
    cc.execute("SHOW log_statement")
    seen = cc.fetchone()[0]
    c2.close()
    if seen == "all":
        break
    time.sleep(0.05)

code, doc, err = sluice_json("diff", D, T, "--table", "edge", "--target-table", "edge_dom",
                             "--ranges", "3")
t.ok(code == 0 and doc and doc["summary"]["equal"] and doc["source"]["rows"] == ROWS and
     doc["summary"]["matched_on_fetch"] == 0,
     f"{ROWS} rows of edge values: binary and text reads hash alike", err[-600:])
if code != 0 and doc:
    for d in doc.get("divergences", [])[:5]:
        t.diag(str(d))

log = open(os.path.join(pg.dir, "log"), errors="replace").read()
t.ok("TO STDOUT (FORMAT binary)" in log and "FETCH FORWARD" in log,
     "the server saw both a binary COPY and a text cursor")

code, doc, err = sluice_json("diff", D, T, "--table", "edge", "--target-table", "edge_bait",
                             "--ranges", "3")
got = divergence_set(doc) if doc else set()
t.ok(code == 1 and got == {("changed", ("4",), ("c_num2",))},
     "a one-cent change among them is found, and nothing else", f"{got} {err[-300:]}")

# the COPY path with text and composite keys, against the cursor path
cur.execute("CREATE TABLE ck (a text, b int4, v numeric, PRIMARY KEY (a, b))")
cur.execute("INSERT INTO ck SELECT 'k' || (i % 7), i, i / 7.0 FROM generate_series(1, 500) i")
cur.execute("CREATE DOMAIN d_t AS text")
cur.execute("CREATE TABLE ck_dom (a d_t, b int4, v numeric, PRIMARY KEY (a, b))")
cur.execute("INSERT INTO ck_dom SELECT * FROM ck")
cur.execute("UPDATE ck_dom SET v = v + 1 WHERE a = 'k3' AND b = 94")
cur.execute("DELETE FROM ck_dom WHERE a = 'k6' AND b = 6")
code, doc, err = sluice_json("diff", D, T, "--table", "ck", "--target-table", "ck_dom",
                             "--ranges", "8")
got = divergence_set(doc) if doc else set()
t.ok(code == 1 and got == {("changed", ("k3", "94"), ("v",)), ("missing-in-target", ("k6", "6"), ())},
     "composite text key, 8 ranges: COPY against cursor finds exactly the 2 changes",
     f"{got} {err[-300:]}")

# fetches go 64 keys a statement (k1, k2) IN (...): 300 changed rows of a
# composite key, between them 40 gone and 40 extra, in batches
cur.execute("CREATE TABLE many_s (a text, b int, v int, PRIMARY KEY (a, b))")
cur.execute("INSERT INTO many_s SELECT 'g' || (i % 5), i, i FROM generate_series(1, 3000) i")
cur.execute("CREATE TABLE many_t AS SELECT * FROM many_s")
cur.execute("ALTER TABLE many_t ADD PRIMARY KEY (a, b)")
cur.execute("UPDATE many_t SET v = -v WHERE b % 10 = 3")
cur.execute("DELETE FROM many_t WHERE b % 75 = 1")
cur.execute("INSERT INTO many_t SELECT 'h', i, i FROM generate_series(1, 40) i")
want = {("changed", ("g" + str(b % 5), str(b)), ("v",)) for b in range(1, 3001) if b % 10 == 3}
want |= {("missing-in-target", ("g" + str(b % 5), str(b)), ()) for b in range(1, 3001)
         if b % 75 == 1}
want |= {("extra-in-target", ("h", str(b)), ()) for b in range(1, 41)}
code, doc, err = sluice_json("diff", D, T, "--table", "many_s", "--target-table", "many_t",
                             "--ranges", "3")
got = divergence_set(doc) if doc else set()
t.ok(code == 1 and got == want and len(want) == 380,
     "380 divergences of a composite key, fetched in batches: exactly those",
     f"{len(got ^ want)} wrong {sorted(got ^ want)[:5]} {err[-300:]}")
order = [(d["key"]["a"], int(d["key"]["b"])) for d in (doc or {}).get("divergences", [])]
t.ok(len(order) == 380 and order == sorted(order),
     "the report lists them in key order (sorted in its spill file)")

# a text key on a table big enough (150,000 rows) that split keys come from
# a sample of its pages rather than an OFFSET per quantile
for tab in ("big_s", "big_t"):
    cur.execute(f"CREATE TABLE {tab} AS SELECT md5(i::text) AS k, i FROM "
                "generate_series(1, 150000) i")
    cur.execute(f"ALTER TABLE {tab} ADD PRIMARY KEY (k)")
    cur.execute(f"ANALYZE {tab}")
cur.execute("UPDATE big_t SET i = -1 WHERE i = 77777")
cur.execute("SELECT md5('77777')")
k77 = cur.fetchone()[0]
code, doc, err = sluice_json("diff", D, D, "--table", "big_s", "--target-table", "big_t",
                             "--ranges", "6")
got = divergence_set(doc) if doc else set()
t.ok(code == 1 and got == {("changed", (k77,), ("i",))} and doc["summary"]["ranges"] == 6 and
     doc["source"]["rows"] == 150000,
     "150,000 text keys split from a page sample: the one change, in the 6 ranges asked",
     f"{got} {doc and doc['summary']} {err[-300:]}")
log = open(os.path.join(pg.dir, "log"), errors="replace").read()
t.ok('FROM "big_s" TABLESAMPLE SYSTEM' in log and 'FROM "big_s" WHERE (1=1) ORDER BY "k" '
     'COLLATE "C" LIMIT 1 OFFSET' not in log,
     "the split keys came from the sample, not from an OFFSET per quantile")

pg.stop()
t.done()
