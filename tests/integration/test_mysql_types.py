#!/usr/bin/python3
"""The MySQL/MariaDB type matrix (issue 14): for each type pair, a table per
pair on one MariaDB and one PostgreSQL server, rows whose values are equal
on both sides and rows whose values differ by one unit (a microsecond, a
ULP, a day, a cent, one character of case, one trailing space, one byte).
sluice diff must report exactly the second kind, and no schema drift where
the pair maps faithfully. Values MySQL has and PostgreSQL has not (a TIME
outside a day, an unsigned BIGINT key above 2^63-1) are refused in one line
naming the column."""
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import MariaDbServer, PgServer, Tap, divergence_set, sluice, sluice_json  # noqa: E402

t = Tap()
my = MariaDbServer()
pg = PgServer()
my.createdb("m")
pg.createdb("m")
mc = my.connect("m")
mc.cursor().execute("SET time_zone = '+00:00'")
pc = pg.connect("m")
pc.autocommit = True


def f32(x, ulps=0):
    """x rounded to a single, moved by ulps units in the last place."""
    b = struct.unpack("<I", struct.pack("<f", x))[0] + ulps
    return struct.unpack("<f", struct.pack("<I", b))[0]


def f64(x, ulps=0):
    b = struct.unpack("<Q", struct.pack("<d", x))[0] + ulps
    return struct.unpack("<d", struct.pack("<Q", b))[0]


# name, MariaDB type, PostgreSQL type, equal pairs, pairs one unit apart
# (MariaDB value, PostgreSQL value); None is NULL on that side.
PAIRS = [
    ("decimal", "decimal(14,2)", "numeric(14,2)",
     [("0.00", "0.00"), ("-0.01", "-0.01"), ("123456789012.34", "123456789012.34"),
      ("10.50", "10.50"), (None, None)],
     [("10.50", "10.51"), ("0.01", "0.00"), ("-1.00", "1.00")]),
    ("decimal_scale", "decimal(10,3)", "numeric",
     [("10.500", "10.5"), ("1.000", "1"), ("0.000", "0")],
     [("10.500", "10.501"), ("2.000", "2.001")]),
    ("double", "double", "float8",
     [(0.1, 0.1), (1e300, 1e300), (-2.5e-10, -2.5e-10), (5e-324, 5e-324),
      (1.7976931348623157e308, 1.7976931348623157e308), (0.0, 0.0), (1 / 3, 1 / 3)],
     [(0.1, f64(0.1, 1)), (1.0, f64(1.0, 1)), (5e-324, 0.0), (-1.5, f64(-1.5, -1))]),
    ("float", "float", "float4",
     [(f32(1.1), f32(1.1)), (f32(3.4e38), f32(3.4e38)), (f32(-1e-30), f32(-1e-30)),
      (16777216.0, 16777216.0), (0.0, 0.0)],
     [(f32(1.1), f32(1.1, 1)), (f32(3.4e38), f32(3.4e38, -1)), (1.0, f32(1.0, 1))]),
    ("datetime", "datetime(6)", "timestamp(6)",
     [("2024-02-29 23:59:59.999999", "2024-02-29 23:59:59.999999"),
      ("1000-01-01 00:00:00", "1000-01-01 00:00:00"),
      ("9999-12-31 23:59:59.999999", "9999-12-31 23:59:59.999999"),
      ("1970-01-01 00:00:00", "1970-01-01 00:00:00")],
     [("2024-02-29 23:59:59.999999", "2024-03-01 00:00:00"),
      ("1970-01-01 00:00:00", "1970-01-01 00:00:00.000001"),
      ("2000-06-15 12:00:00.5", "2000-06-15 12:00:00.499999")]),
    ("timestamp", "timestamp(6) NULL", "timestamptz(6)",
     [("2038-01-19 03:14:07.999999", "2038-01-19 03:14:07.999999+00"),
      ("1970-01-01 00:00:01", "1970-01-01 02:00:01+02"),
      ("2024-06-01 12:00:00.5", "2024-06-01 12:00:00.5+00"), (None, None)],
     [("2024-06-01 12:00:00.5", "2024-06-01 12:00:00.500001+00"),
      ("2000-01-01 00:00:00", "2000-01-01 00:00:00+01")]),
    ("date", "date", "date",
     [("1000-01-01", "1000-01-01"), ("9999-12-31", "9999-12-31"), ("2024-02-29", "2024-02-29")],
     [("2024-02-29", "2024-03-01"), ("1970-01-01", "1969-12-31")]),
    ("year", "year", "int",
     [(1901, 1901), (2155, 2155), (2024, 2024)],
     [(2024, 2025), (1901, 1900)]),
    ("tinyint1", "tinyint(1)", "boolean",
     [(1, True), (0, False), (None, None)],
     [(1, False), (0, True), (0, None)]),
    ("boolean", "boolean", "boolean",
     [(True, True), (False, False)],
     [(True, False)]),
    ("binary", "binary(4)", "bytea",
     [(b"\x00\xff\x01\x02", b"\x00\xff\x01\x02"), (b"ab", b"ab\x00\x00")],
     [(b"\x00\xff\x01\x02", b"\x00\xff\x01\x03"), (b"ab", b"ab\x00")]),
    ("varbinary", "varbinary(10)", "bytea",
     [(b"", b""), (b"\x00", b"\x00"), (b"abc", b"abc")],
     [(b"abc", b"abC"), (b"a", b"a\x00"), (b"", None)]),
    ("blob", "blob", "bytea",
     [(bytes(range(256)) * 4, bytes(range(256)) * 4), (b"x", b"x")],
     [(bytes(range(256)) * 4, bytes(range(256)) * 3 + bytes(range(255)) + b"\x00")]),
    ("char", "char(5)", "varchar(5)",
     [("ab", "ab"), ("", ""), ("abcde", "abcde"), (" a", " a")],
     [("ab", "ab "), ("ab", "aB")]),
    # MySQL's CHAR and PostgreSQL's char(n): the padding is no part of the
    # value on either side (PostgreSQL's own cast to text drops it)
    ("char_pg", "char(5)", "char(5)",
     [("ab", "ab"), ("", ""), ("abcde", "abcde"), (" a", " a"), ("a b", "a b")],
     [("ab", "aB"), ("ab", "abc"), (" a", "a")]),
    ("text_ci", "varchar(40) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci", "text",
     [("héllo", "héllo"), ("日本語", "日本語"), ("🎉", "🎉"), ("", ""), ("a\tb", "a\tb"),
      ("Straße", "Straße")],
     [("abc", "abC"), ("é", "É"), ("x", "x "), ("🎉", "🎊")]),
    ("text_latin1", "varchar(40) CHARACTER SET latin1", "text",
     [("é ü", "é ü"), ("ABC", "ABC")],
     [("é", "e"), ("A", "a")]),
    ("ubigint", "bigint unsigned", "numeric(20,0)",
     [(0, 0), (9223372036854775807, 9223372036854775807),
      (9223372036854775808, 9223372036854775808),
      (18446744073709551615, 18446744073709551615), (None, None)],
     [(18446744073709551615, 18446744073709551614),
      (9223372036854775808, 9223372036854775807), (1, 2)]),
    ("enum", "enum('small','medium','large')", "text",
     [("small", "small"), ("large", "large"), (None, None)],
     [("small", "Small"), ("medium", "medium ")]),
    ("set", "set('a','b','c')", "text",
     [("a,c", "a,c"), ("c,a", "a,c"), ("", ""), ("b", "b")],
     [("a,c", "c,a"), ("a,b", "a")]),
    ("time", "time(6)", "time(6)",
     [("00:00:00", "00:00:00"), ("23:59:59.999999", "23:59:59.999999"),
      ("12:30:00.5", "12:30:00.5"), ("08:00:00.000001", "08:00:00.000001"), (None, None)],
     [("12:30:00.5", "12:30:00.500001"), ("00:00:00", "00:00:01"),
      ("23:59:59.999999", "23:59:59.999998")]),
    ("json", "json", "jsonb",
     [('{"b": 1, "a": [1, 2.50, "x"]}', '{"a": [1, 2.5, "x"], "b": 1}'),
      ('{"k":"\\u00e9"}', '{"k": "é"}'), ("[]", "[]"), ("null", "null"),
      ('{"a":1,"a":2}', '{"a":2}')],
     [('{"a": 1}', '{"a": 2}'), ('{"a": "x"}', '{"a": "X"}'), ("[1, 2]", "[2, 1]"),
      ('{"a": 1.5}', '{"a": 1.50001}')]),
]

# pairs whose classes differ on purpose, with the schema note sluice gives
DRIFT = {}


def load(name, mtype, ptype, eq, near):
    rows = [(i + 1, a, b) for i, (a, b) in enumerate(eq + near)]
    mc.cursor().execute(f"CREATE TABLE t_{name} (id int PRIMARY KEY, v {mtype}) "
                        "CHARACTER SET utf8mb4")
    mc.cursor().executemany(f"INSERT INTO t_{name} VALUES (%s, %s)", [(i, a) for i, a, _ in rows])
    cur = pc.cursor()
    cur.execute(f"CREATE TABLE t_{name} (id int PRIMARY KEY, v {ptype})")
    cur.executemany(f"INSERT INTO t_{name} VALUES (%s, %s)", [(i, b) for i, _, b in rows])
    return {("changed", (i,), ("v",)) for i, _, _ in rows[len(eq):]}


def check(name, mtype, ptype, want, src, tgt, label):
    code, doc, err = sluice_json("diff", src, tgt, "--table", f"t_{name}")
    got = {(k, tuple(int(x) for x in key), cols) for k, key, cols in divergence_set(doc)} \
        if doc else None
    schema = [(s["column"], s["problem"]) for s in doc.get("schema", [])] if doc else None
    want_schema = DRIFT.get(name, [])
    t.ok(got == want and schema == want_schema and code == (1 if want or want_schema else 0),
         f"{label} {mtype} vs {ptype}: {len(want)} rows one unit apart found, equal ones equal",
         f"exit {code}\ngot {sorted(got) if got else got}\nwant {sorted(want)}\n"
         f"schema {schema}\n{err}")


for name, mtype, ptype, eq, near in PAIRS:
    want = load(name, mtype, ptype, eq, near)
    check(name, mtype, ptype, want, my.dsn("m"), pg.dsn("m"), "MariaDB vs PostgreSQL:")

# the same tables, PostgreSQL as the source: the comparison is symmetric
for name, mtype, ptype, eq, near in PAIRS[:3]:
    want = {("changed", (len(eq) + j + 1,), ("v",)) for j in range(len(near))}
    check(name, ptype, mtype, want, pg.dsn("m"), my.dsn("m"), "PostgreSQL vs MariaDB:")

# ---- unsigned BIGINT: numeric on MariaDB, equal to itself and to int8 values --------
UB = next(p for p in PAIRS if p[0] == "ubigint")
my.createdb("m2")
m2 = my.connect("m2")
m2.cursor().execute("CREATE TABLE t_ubigint (id bigint unsigned PRIMARY KEY, v bigint unsigned)")
m2.cursor().executemany("INSERT INTO t_ubigint VALUES (%s, %s)",
                        [(i + 1, a) for i, (a, _) in enumerate(UB[3] + UB[4])])
code, out, err = sluice("diff", my.dsn("m"), my.dsn("m2"), "--table", "t_ubigint", "--no-progress")
t.ok(code == 0 and "identical" in out,
     "MariaDB vs MariaDB: bigint unsigned up to 2^64-1 (and an unsigned key) identical",
     f"exit {code}\n{out}\n{err}")
m2.cursor().execute("CREATE TABLE t_ukey (id bigint unsigned PRIMARY KEY)")
m2.cursor().execute("INSERT INTO t_ukey VALUES (1), (9223372036854775808)")
code, out, err = sluice("diff", my.dsn("m2"), my.dsn("m2"), "--table", "t_ukey", "--no-progress")
t.ok(code == 2 and 'key column "' in err and "`id`" in err and "9223372036854775808" in err and
     len(err.strip().splitlines()) == 1,
     "an unsigned BIGINT key above 2^63-1 is refused in one line naming the column",
     f"exit {code}\n{out}\n{err}")
pc.cursor().execute("CREATE TABLE t_ub8 (id int PRIMARY KEY, v int8)")
pc.cursor().executemany("INSERT INTO t_ub8 VALUES (%s, %s)",
                        [(1, 0), (2, 9223372036854775807), (3, 5)])
mc.cursor().execute("CREATE TABLE t_ub8 (id int PRIMARY KEY, v bigint unsigned)")
mc.cursor().executemany("INSERT INTO t_ub8 VALUES (%s, %s)",
                        [(1, 0), (2, 9223372036854775807), (3, 9223372036854775808)])
code, doc, err = sluice_json("diff", my.dsn("m"), pg.dsn("m"), "--table", "t_ub8")
got = {(k, tuple(int(x) for x in key), cols) for k, key, cols in divergence_set(doc)} \
    if doc else None
schema = [s["column"] for s in doc.get("schema", [])] if doc else None
t.ok(got == {("changed", (3,), ("v",))} and schema == ["v"],
     "bigint unsigned vs int8: values up to 2^63-1 equal, 2^63 vs 5 changed, the type "
     "change (numeric vs int) reported as schema drift", f"exit {code}\n{got}\n{schema}\n{err}")

# ---- TIME outside a day: refused in one line naming the column --------------------
for val in ("-00:00:01", "24:00:00", "838:59:59"):
    mc.cursor().execute("DROP TABLE IF EXISTS t_tbad")
    mc.cursor().execute("CREATE TABLE t_tbad (id int PRIMARY KEY, tm time)")
    mc.cursor().execute("INSERT INTO t_tbad VALUES (1, '10:00:00'), (2, %s)", (val,))
    pc.cursor().execute("DROP TABLE IF EXISTS t_tbad")
    pc.cursor().execute("CREATE TABLE t_tbad (id int PRIMARY KEY, tm time)")
    pc.cursor().execute("INSERT INTO t_tbad VALUES (1, '10:00:00'), (2, '00:00:00')")
    code, out, err = sluice("diff", my.dsn("m"), pg.dsn("m"), "--table", "t_tbad", "--no-progress")
    t.ok(code == 2 and '"tm"' in err and val.lstrip("0") in err and
         len(err.strip().splitlines()) == 1 and my.PASSWORD not in err,
         f"TIME {val}: refused in one line naming the column and the value",
         f"exit {code}\n{out}\n{err}")

print(f"1..{t.n}")
sys.exit(1 if t.failed else 0)
