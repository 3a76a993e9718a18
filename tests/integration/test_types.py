#!/usr/bin/python3
"""Every divergence kind on every supported type; composite, text and uuid
keys; PostgreSQL against SQLite with equal data written differently (10.50
vs 10.5 vs 10, timestamptz under other session time zones, reordered JSON,
uuid case); schema drift; --where, --columns, --exclude-columns, --strict."""
import json
import os
import sqlite3
import sys
import tempfile
import uuid

sys.path.insert(0, os.path.dirname(__file__))
from harness import PgServer, Tap, divergence_set, sluice, sluice_json  # noqa: E402

t = Tap()
pg = PgServer()
db = pg.createdb("types")
c = pg.connect(db)
cur = c.cursor()
D = pg.dsn(db)
tmp = tempfile.mkdtemp()

# ---- A: every type, every kind ---------------------------------------------
TYPES = [
    ("c_int2", "int2", "i % 100", "999"),
    ("c_int4", "int4", "i * 7", "-5"),
    ("c_int8", "int8", "i::int8 * 1000000007", "1"),
    ("c_num", "numeric(12,2)", "i * 1.25", "0.01"),
    ("c_f4", "real", "i / 4.0", "0.3"),
    ("c_f8", "float8", "i / 3.0", "1e-300"),
    ("c_bool", "bool", "i % 2 = 0", "NOT c_bool"),
    ("c_text", "text", "'text ' || i || ' é✓'", "'TEXT'"),
    ("c_varchar", "varchar(20)", "'v' || i", "c_varchar || ' '"),
    ("c_char", "char(5)", "'c' || (i % 10)", "'zz'"),
    ("c_bytea", "bytea", "decode(md5(i::text), 'hex')", "'\\x00'::bytea"),
    ("c_date", "date", "date '2024-01-01' + i", "date '1999-12-31'"),
    ("c_ts", "timestamp", "timestamp '2024-01-01 00:00:00' + i * interval '1 minute'",
     "c_ts + interval '1 microsecond'"),
    ("c_tstz", "timestamptz", "timestamptz '2024-01-01 00:00:00+00' + i * interval '1 hour'",
     "c_tstz + interval '1 second'"),
    ("c_uuid", "uuid", "md5(i::text)::uuid", "'00000000-0000-0000-0000-000000000000'"),
    ("c_json", "json", "json_build_object('i', i, 'a', 'x')", "'{\"i\": -1}'"),
    ("c_jsonb", "jsonb", "jsonb_build_object('i', i, 'l', jsonb_build_array(i, 2))",
     "'{\"i\": 0}'"),
    ("c_inet", "inet", "('10.0.0.' || (i % 250))::inet", "'192.168.0.1'"),
    ("c_interval", "interval", "i * interval '1 day'", "interval '1 year'"),
]
cols = ", ".join(f"{n} {ty}" for n, ty, _, _ in TYPES)
for tab in ("alltypes_s", "alltypes_t"):
    cur.execute(f"CREATE TABLE {tab} (id int8 PRIMARY KEY, {cols})")
cur.execute("INSERT INTO alltypes_s SELECT i, " + ", ".join(e for _, _, e, _ in TYPES) +
            " FROM generate_series(1, 60) i")
cur.execute("INSERT INTO alltypes_t SELECT * FROM alltypes_s")
code, doc, err = sluice_json("diff", D, D, "--table", "alltypes_s", "--target-table", "alltypes_t")
t.ok(code == 0 and doc and doc["summary"]["equal"] and doc["source"]["rows"] == 60,
     "identical tables with 19 column types: exit 0", err)

expected = set()
for i, (name, _, _, newval) in enumerate(TYPES):
    cur.execute(f"UPDATE alltypes_t SET {name} = {newval} WHERE id = {i + 1}")
    expected.add(("changed", (str(i + 1),), (name,)))
    cur.execute(f"UPDATE alltypes_t SET {name} = NULL WHERE id = {i + 30}")
    expected.add(("changed", (str(i + 30),), (name,)))
cur.execute("DELETE FROM alltypes_t WHERE id = 55")
expected.add(("missing-in-target", ("55",), ()))
cur.execute("INSERT INTO alltypes_t (id, c_int4) VALUES (1000, 1)")
expected.add(("extra-in-target", ("1000",), ()))
code, doc, err = sluice_json("diff", D, D, "--table", "alltypes_s", "--target-table", "alltypes_t",
                             "--workers", "3")
got = divergence_set(doc) if doc else set()
t.ok(code == 1 and got == expected,
     "each type changed to another value and to NULL, plus a missing and an extra row: "
     "exactly those reported",
     f"exit {code}\nmissed {sorted(expected - got)}\nfalse {sorted(got - expected)}\n{err}")
by_key = {tuple(d["key"].values()): d for d in (doc or {}).get("divergences", [])}
num = by_key.get(("4",), {}).get("columns", [{}])[0]
t.ok(num.get("source") == "5.00" and num.get("target") == "0.01",
     "changed numeric shows both values as the databases print them", num)
nul = by_key.get(("30",), {}).get("columns", [{}])[0]
t.ok(nul.get("source") == "30" and nul.get("target") is None, "a value turned NULL shows null", nul)

# ---- B: composite, text and uuid keys -------------------------------------
def keyed(name, keydef, pk, keyexpr, n):
    for tab in (name + "_s", name + "_t"):
        cur.execute(f"CREATE TABLE {tab} ({keydef}, v int, w text, PRIMARY KEY ({pk}))")
    cur.execute(f"INSERT INTO {name}_s SELECT {keyexpr}, i, 'w' || i FROM generate_series(1, {n}) i")
    cur.execute(f"INSERT INTO {name}_t SELECT * FROM {name}_s")


keyed("comp", "a int, b text", "a, b", "i % 7, 'k' || i", 3000)
keyed("tkey", "k text", "k", "'Key é✓ ' || i || CASE WHEN i % 2 = 0 THEN ' B' ELSE ' a' END", 3000)
keyed("ukey", "u uuid", "u", "md5('u' || i)::uuid", 3000)
for name, keycols in (("comp", ["a", "b"]), ("tkey", ["k"]), ("ukey", ["u"])):
    code, doc, err = sluice_json("diff", D, D, "--table", name + "_s", "--target-table",
                                 name + "_t", "--ranges", "7")
    t.ok(code == 0, f"{name}: identical tables with a {'+'.join(keycols)} key: exit 0", err)
    cur.execute(f"SELECT {', '.join(keycols)}::text FROM {name}_s ORDER BY random() LIMIT 3"
                if len(keycols) == 1 else
                f"SELECT a::text, b FROM {name}_s ORDER BY random() LIMIT 3")
    picks = cur.fetchall()
    where = lambda k: " AND ".join(f"{c}::text = %s" for c in keycols)  # noqa: E731
    cur.execute(f"UPDATE {name}_t SET w = 'changed' WHERE {where(picks[0])}", picks[0])
    cur.execute(f"DELETE FROM {name}_t WHERE {where(picks[1])}", picks[1])
    cur.execute(f"UPDATE {name}_t SET v = NULL WHERE {where(picks[2])}", picks[2])
    # an extra row: a key just past a real one
    cur.execute(f"INSERT INTO {name}_t SELECT {', '.join(keycols[:-1] + [keycols[-1] + ' || ' + repr('x') if keycols[-1] != 'u' else 'md5(u::text)::uuid'])}, 0, 'new' "
                f"FROM {name}_s WHERE {where(picks[0])} RETURNING {', '.join(c + '::text' for c in keycols)}", picks[0])
    extra = tuple(cur.fetchone())
    exp = {("changed", tuple(picks[0]), ("w",)), ("missing-in-target", tuple(picks[1]), ()),
           ("changed", tuple(picks[2]), ("v",)), ("extra-in-target", extra, ())}
    code, doc, err = sluice_json("diff", D, D, "--table", name + "_s", "--target-table",
                                 name + "_t", "--ranges", "7")
    got = divergence_set(doc) if doc else set()
    t.ok(code == 1 and got == exp, f"{name}: changed, missing, extra and NULLed rows found exactly",
         f"exit {code}\nexpected {exp}\ngot {got}\n{err}")

# ---- C: PostgreSQL against SQLite ------------------------------------------
cur.execute("""CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int, amount numeric(12,2),
    price float8, status text, paid bool, note text, created_at timestamptz, day date,
    ref uuid, meta jsonb, blob bytea)""")
cur.execute("SET TimeZone = 'America/New_York'")
rows = []
for i in range(1, 2001):
    rows.append((i, i % 97, f"{i % 500}.{'50' if i % 2 else '00'}", i / 8, ["new", "paid"][i % 2],
                 i % 3 == 0, None if i % 11 == 0 else f"note {i} ü", f"2024-03-{1 + i % 28:02d} "
                 f"{i % 24:02d}:15:00", f"2023-{1 + i % 12:02d}-{1 + i % 28:02d}",
                 str(uuid.UUID(int=i * 7919)), json.dumps({"k": i, "tags": ["a", "b"]}),
                 bytes([i % 256, 0, 255])))
cur.executemany("INSERT INTO orders VALUES (%s, %s, %s, %s, %s, %s, %s, "
                "(%s::timestamp AT TIME ZONE 'UTC'), %s, %s, %s, %s)", rows)
cur.execute("SET TimeZone = 'UTC'")
lite = os.path.join(tmp, "orders.db")
s = sqlite3.connect(lite)
s.execute("""CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, amount NUMERIC,
    price REAL, status TEXT, paid BOOLEAN, note TEXT, created_at TIMESTAMPTZ, day DATE, ref UUID,
    meta JSON, blob BLOB)""")
for r in rows:
    amount = float(r[2]) if float(r[2]) != int(float(r[2])) else int(float(r[2]))  # 10.5 / 10
    meta = json.dumps({"tags": ["a", "b"], "k": r[0]}, indent=2)  # other order, spacing
    s.execute("INSERT INTO orders VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
              (r[0], r[1], amount, r[3], r[4], int(r[5]), r[6], r[7].replace(" ", "T") + "Z",
               r[8], r[9].upper() if r[0] % 2 else r[9], meta, r[11]))
s.commit()
L = "sqlite:" + lite
code, out, err = sluice("diff", D, L, "--table", "orders", "--no-progress")
t.ok(code == 0, "PostgreSQL vs SQLite, equal data written differently: exit 0", out + err)
code, out, err = sluice("diff", L, D, "--table", "orders", "--no-progress",
                        env={"PGTZ": "Asia/Kolkata", "PGOPTIONS": "-c TimeZone=Pacific/Chatham"})
t.ok(code == 0, "SQLite vs PostgreSQL read under other session time zones: exit 0", out + err)
s.execute("UPDATE orders SET amount = 10.51 WHERE id = 10")
s.execute("UPDATE orders SET created_at = '2024-03-11T10:15:01Z' WHERE id = 10")
s.execute("DELETE FROM orders WHERE id = 20")
s.commit()
code, doc, err = sluice_json("diff", D, L, "--table", "orders")
got = divergence_set(doc) if doc else set()
t.ok(code == 1 and got == {("changed", ("10",), ("amount", "created_at")),
                           ("missing-in-target", ("20",), ())},
     "PostgreSQL vs SQLite: a changed amount and timestamp and a missing row, exactly", got)
# ---- D: schema drift ---------------------------------------------------------
cur.execute("CREATE TABLE drift_s (id int PRIMARY KEY, a int, b text, gone text, t text, u uuid)")
cur.execute("CREATE TABLE drift_t (id int PRIMARY KEY, a int, b int, t text, added int, u int)")
cur.execute("INSERT INTO drift_s SELECT i, i, i::text, 'x', 't', NULL FROM generate_series(1, 100) i")
cur.execute("INSERT INTO drift_t SELECT i, i, i, 't', 0, NULL FROM generate_series(1, 100) i")
cur.execute("UPDATE drift_t SET a = -1 WHERE id = 50")
code, doc, err = sluice_json("diff", D, D, "--table", "drift_s", "--target-table", "drift_t")
schema = {(x["column"], x["problem"]) for x in (doc or {}).get("schema", [])}
t.ok(code == 1 and schema == {("gone", "missing in target"), ("added", "extra in target"),
                              ("b", "type changed"), ("u", "incompatible types")},
     "schema drift: missing, extra and incompatible columns reported", f"{schema} {err}")
t.ok(doc and divergence_set(doc) == {("changed", ("50",), ("a",))},
     "rows are still compared on the common columns", doc and doc["divergences"])
code, out, err = sluice("diff", D, D, "--table", "drift_s", "--target-table", "drift_t",
                        "--no-progress")
t.ok(out.index("schema") < out.index("changed"), "text report: schema drift before rows", out)
code, doc, err = sluice_json("diff", D, D, "--table", "drift_s", "--target-table", "drift_t",
                             "--exclude-columns", "gone,added,b,u", "--where", "id <> 50")
t.ok(code == 0, "--exclude-columns and --where leave nothing to report: exit 0", err)
code, doc, err = sluice_json("diff", D, D, "--table", "drift_s", "--target-table", "drift_t",
                             "--columns", "t")
t.ok(code == 0 and not doc["schema"], "--columns t: only t compared, no drift reported", err)
cur.execute("CREATE TABLE strict_s (id int PRIMARY KEY, n numeric(10,2))")
cur.execute("CREATE TABLE strict_t (id int PRIMARY KEY, n int)")
cur.execute("INSERT INTO strict_s SELECT i, i FROM generate_series(1, 50) i")
cur.execute("INSERT INTO strict_t SELECT i, i FROM generate_series(1, 50) i")
code, doc, err = sluice_json("diff", D, D, "--table", "strict_s", "--target-table", "strict_t")
t.ok(code == 1 and doc and not doc["divergences"] and
     [x["problem"] for x in doc["schema"]] == ["type changed"],
     "numeric 10.00 vs integer 10: equal values, the type change reported", doc and doc["schema"])
code, doc, err = sluice_json("diff", D, D, "--table", "strict_s", "--target-table", "strict_t",
                             "--strict")
t.ok(code == 1 and doc and [x["problem"] for x in doc["schema"]] == ["incompatible types"],
     "--strict: numeric against integer is incompatible", doc and doc["schema"])
t.done()
