#!/usr/bin/python3
"""sluice repair and sluice diff --fix-sql: PostgreSQL -> PostgreSQL, SQLite -> SQLite,
SQLite -> PostgreSQL and PostgreSQL -> SQLite, over every supported type, NULLs, quotes,
backslashes, unicode, values longer than the digest threshold and composite keys. For each:
a dry run changes nothing (exit 1), --max-rows refuses and changes nothing (exit 2),
--apply repairs (exit 0, every key re-checked), a diff afterwards exits 0, the fix SQL
file applied with psql / sqlite3 repairs too, and the source's checksum (computed in SQL)
never changes."""
import hashlib
import os
import sqlite3
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from harness import PgServer, Tap, sluice  # noqa: E402

t = Tap()
pg = PgServer()
db = pg.createdb("repair")
c = pg.connect(db)
cur = c.cursor()
D = pg.dsn(db)
tmp = tempfile.mkdtemp()
LONG = 200_000  # characters: far over the 64 KiB a divergence carries whole


def pg_sum(table):
    cur.execute(f"SELECT count(*), md5(coalesce(string_agg(x, E'\\n' ORDER BY x), '')) "
                f"FROM (SELECT t::text AS x FROM {table} t) s")
    return cur.fetchone()


def sq_sum(path, table):
    s = sqlite3.connect(path)
    cols = [r[1] for r in s.execute(f'PRAGMA table_info("{table}")')]
    expr = " || '|' || ".join(f'quote("{x}")' for x in cols)
    row = s.execute(f"SELECT count(*), group_concat(x, char(10)) FROM "
                    f"(SELECT {expr} AS x FROM \"{table}\" ORDER BY x)").fetchone()
    s.close()
    return row[0], hashlib.md5((row[1] or "").encode("utf-8", "surrogatepass")).hexdigest()


def run_psql(path):
    r = subprocess.run(["psql", D, "-q", "-v", "ON_ERROR_STOP=1", "-f", path],
                       capture_output=True, text=True)
    return r.returncode, r.stderr


def run_sqlite3(db_path, path):
    r = subprocess.run(["sqlite3", "-bail", db_path, f".read {path}"], capture_output=True,
                       text=True)
    return r.returncode, r.stderr


def check_round(name, src, tgt, table, ttable, src_sum, tgt_sum, expect=None):
    """dry run, --max-rows refusal, --apply, diff again; source unchanged."""
    args = ["--table", table, "--no-progress"] + (["--target-table", ttable] if ttable else [])
    before_src, before_tgt = src_sum(), tgt_sum()
    code, out, err = sluice("diff", src, tgt, *args)
    t.ok(code == 1, f"{name}: the tables differ before the repair", out[-600:] + err)
    code, out, err = sluice("repair", src, tgt, *args)
    t.ok(code == 1 and "-- dry run:" in out and "BEGIN;" in out and "COMMIT;" in out
         and tgt_sum() == before_tgt,
         f"{name}: dry run prints the statements, exit 1, the target unchanged",
         f"exit {code}\n{out[-1500:]}\n{err}")
    if expect:
        line = [x for x in out.splitlines() if x.startswith("-- dry run:")]
        t.ok(line and expect in line[0], f"{name}: dry run counts {expect}", line or out[-800:])
    code, out, err = sluice("repair", src, tgt, *args, "--max-rows", "1", "--apply")
    t.ok(code == 2 and "more than --max-rows 1" in err and len(err.strip().splitlines()) == 1
         and not out and tgt_sum() == before_tgt,
         f"{name}: --max-rows 1 refuses with exit 2 and one line, the target unchanged",
         f"exit {code}\n{out}\n{err}")
    code, out, err = sluice("repair", src, tgt, *args, "--apply", "--batch", "7")
    ok = code == 0 and "re-check:" in out
    if ok:
        n = out.split("re-check: ")[1].split()
        ok = n[0] == n[2] and int(n[0]) > 0
    t.ok(ok, f"{name}: --apply repairs, every repaired key re-checked equal (exit 0)",
         f"exit {code}\n{out}\n{err}")
    code, out, err = sluice("diff", src, tgt, *args)
    t.ok(code == 0, f"{name}: diff after the repair: identical (exit 0)", out[-1500:] + err)
    t.ok(src_sum() == before_src, f"{name}: the source's checksum is unchanged")
    code, out, err = sluice("repair", src, tgt, *args)
    t.ok(code == 0 and "0 to insert, 0 to update, 0 to delete" in out,
         f"{name}: a second dry run has nothing to do (exit 0)", f"exit {code}\n{out}\n{err}")


def check_file(name, src, tgt, table, ttable, src_sum, apply_file):
    args = ["--table", table, "--no-progress"] + (["--target-table", ttable] if ttable else [])
    before_src = src_sum()
    path = os.path.join(tmp, name.replace(" ", "_").replace(">", "") + ".sql")
    code, out, err = sluice("diff", src, tgt, *args, "--fix-sql", path)
    t.ok(code == 1 and os.path.exists(path) and "fix SQL written" in err,
         f"{name}: diff --fix-sql writes the file (diff exits 1)", f"exit {code}\n{err}")
    text = open(path, encoding="utf-8", errors="replace").read() if os.path.exists(path) else ""
    t.ok(text.startswith("-- sluice fix") and PgServer.PASSWORD not in text
         and "-- source:" in text and " to insert," in text,
         f"{name}: the file has a header naming source and target, without the password",
         text[:600])
    rc, e = apply_file(path)
    t.ok(rc == 0, f"{name}: the fix SQL applies cleanly", e)
    code, out, err = sluice("diff", src, tgt, *args)
    t.ok(code == 0, f"{name}: diff after applying the file: identical", out[-1500:] + err)
    t.ok(src_sum() == before_src, f"{name}: the source's checksum is unchanged (file)")


# ---- PostgreSQL -> PostgreSQL: every type -----------------------------------------------------
TYPES = [
    ("c_int2", "int2", "i % 100", "999"),
    ("c_int4", "int4", "i * 7", "-5"),
    ("c_int8", "int8", "i::int8 * 1000000007", "1"),
    ("c_num", "numeric(30,10)", "i * 1.25 + 0.0000000001", "0.01"),
    ("c_f4", "real", "i / 4.0", "0.3"),
    ("c_f8", "float8", "i / 3.0", "1e-300"),
    ("c_bool", "bool", "i % 2 = 0", "NOT c_bool"),
    ("c_text", "text", "'it''s \\ \"q\" ' || i || ' é✓ 😀' || chr(9) || chr(10)", "'TEXT'"),
    ("c_varchar", "varchar(20)", "'v' || i", "c_varchar || ' '"),
    ("c_char", "char(5)", "'c' || (i % 10)", "'zz'"),
    ("c_bytea", "bytea", "decode(md5(i::text) || '005c27', 'hex')", "'\\x00'::bytea"),
    ("c_date", "date", "date '2024-01-01' + i", "date '1999-12-31'"),
    ("c_ts", "timestamp", "timestamp '2024-01-01 00:00:00.123456' + i * interval '1 minute'",
     "c_ts + interval '1 microsecond'"),
    ("c_tstz", "timestamptz", "timestamptz '2024-01-01 00:00:00+00' + i * interval '1 hour'",
     "c_tstz + interval '1 second'"),
    ("c_uuid", "uuid", "md5(i::text)::uuid", "'00000000-0000-0000-0000-000000000000'"),
    ("c_json", "json", "json_build_object('i', i, 'a', 'x''y')", "'{\"i\": -1}'"),
    ("c_jsonb", "jsonb", "jsonb_build_object('i', i, 'l', jsonb_build_array(i, 2.50))",
     "'{\"i\": 0}'"),
    ("c_inet", "inet", "('10.0.0.' || (i % 250))::inet", "'192.168.0.1'"),
    ("c_interval", "interval", "i * interval '1 day'", "interval '1 year'"),
    ("c_long", "text", f"repeat('L' || i, {LONG // 3})", "c_long || 'x'"),
    ("c_longb", "bytea", f"decode(repeat(md5(i::text), {LONG // 32}), 'hex')",
     "c_longb || '\\x01'::bytea"),
]
cols = ", ".join(f"{n} {ty}" for n, ty, _, _ in TYPES)
for tab in ("all_s", "all_t"):
    cur.execute(f"CREATE TABLE {tab} (id int8, k text, {cols}, PRIMARY KEY (id, k))")
cur.execute("INSERT INTO all_s SELECT i, 'k''' || i, " + ", ".join(e for _, _, e, _ in TYPES) +
            " FROM generate_series(1, 60) i")
# special values: a row of NULLs, infinities and NaN, an old date, a huge numeric
cur.execute("INSERT INTO all_s (id, k) VALUES (100, 'nulls')")
cur.execute("INSERT INTO all_s (id, k, c_f4, c_f8, c_num, c_date, c_ts, c_tstz) VALUES "
            "(101, 'special', 'Infinity', '-Infinity', 1000000000000000.5, "
            "'0044-03-15 BC', '0001-01-01 00:00:00', 'infinity')")
cur.execute("INSERT INTO all_s (id, k, c_f8, c_num) VALUES (102, 'nan', 'NaN', 'NaN')")


def break_pg_target():
    cur.execute("TRUNCATE all_t")
    cur.execute("INSERT INTO all_t SELECT * FROM all_s")
    for i, (name, _, _, newval) in enumerate(TYPES):
        cur.execute(f"UPDATE all_t SET {name} = {newval} WHERE id = {i + 1}")
        cur.execute(f"UPDATE all_t SET {name} = NULL WHERE id = {i + 30}")
    cur.execute("DELETE FROM all_t WHERE id IN (55, 56, 100, 101, 102)")
    cur.execute("INSERT INTO all_t (id, k, c_text) VALUES (1000, 'extra', 'x'), (1, 'k''1x', 'y')")


break_pg_target()
check_round("pg>pg", D, D, "all_s", "all_t", lambda: pg_sum("all_s"), lambda: pg_sum("all_t"),
            expect="5 to insert, 42 to update, 2 to delete")
break_pg_target()
check_file("pg>pg", D, D, "all_s", "all_t", lambda: pg_sum("all_s"), run_psql)

# ---- SQLite -> SQLite: storage classes kept, composite key ---------------------------------------
sa, sb = os.path.join(tmp, "a.db"), os.path.join(tmp, "b.db")
SQ_DDL = ("CREATE TABLE t (a INTEGER, b TEXT, n NUMERIC, r REAL, flag BOOLEAN, s TEXT, "
          "ts TIMESTAMP, tz TIMESTAMPTZ, d DATE, u UUID, j JSON, bl BLOB, big TEXT, "
          "anyv, PRIMARY KEY (a, b))")


def sq_rows():
    rows = []
    for i in range(1, 80):
        rows.append((i % 9, f"b'{i} é✓", [i, i * 1.5, f"{i}.25"][i % 3], i / 7, i % 2,
                     None if i % 13 == 0 else f"it's \\ \"{i}\" \x00nul 😀" if i % 5 == 0
                     else f"it's \\ {i}\n",
                     f"2024-01-{1 + i % 28:02d} 10:11:12.{i:06d}", f"2024-02-03T04:05:06+0{i % 9}:00",
                     f"2020-02-{1 + i % 28:02d}", f"{i:08x}-1234-5678-9abc-def012345678",
                     f'{{"b": [1, 2.50], "a": "x\'{i}"}}', bytes([i, 0, 39, 92]) * (i % 3 + 1),
                     ("B" * LONG + str(i)) if i % 10 == 0 else "short",
                     [i, 1.25, "text", b"\x01\x02", None][i % 5]))
    return rows


s = sqlite3.connect(sa)
s.execute(SQ_DDL)
s.executemany("INSERT INTO t VALUES (" + ",".join("?" * 14) + ")", sq_rows())
s.commit()
s.close()


def break_sq_target(path):
    if os.path.exists(path):
        os.unlink(path)
    s = sqlite3.connect(path)
    s.execute(SQ_DDL)
    s.executemany("INSERT INTO t VALUES (" + ",".join("?" * 14) + ")", sq_rows())
    s.execute("UPDATE t SET s = 'changed', n = 0 WHERE a = 3")
    s.execute("UPDATE t SET big = big || 'x' WHERE big <> 'short' AND a = 1")
    s.execute("UPDATE t SET anyv = NULL, bl = X'00', j = '{}' WHERE a = 4")
    s.execute("UPDATE t SET ts = NULL, u = upper(u) || 'x' WHERE a = 5")
    s.execute("DELETE FROM t WHERE a = 6")
    s.execute("INSERT INTO t (a, b, s) VALUES (6, 'extra', 'x'), (100, 'q''uote', NULL)")
    s.commit()
    s.close()


break_sq_target(sb)
check_round("sqlite>sqlite", "sqlite:" + sa, "sqlite:" + sb, "t", None, lambda: sq_sum(sa, "t"),
            lambda: sq_sum(sb, "t"))
t.ok(sq_sum(sa, "t") == sq_sum(sb, "t"),
     "sqlite>sqlite: the target now holds the source's exact storage classes and bytes")
break_sq_target(sb)
check_file("sqlite>sqlite", "sqlite:" + sa, "sqlite:" + sb, "t", None, lambda: sq_sum(sa, "t"),
           lambda p: run_sqlite3(sb, p))

# ---- SQLite -> PostgreSQL ----------------------------------------------------------------------
# the SQLite source above (without its untyped column and the NUL texts, which PostgreSQL
# cannot hold: those are checked to be refused below)
sx = os.path.join(tmp, "x.db")
s = sqlite3.connect(sx)
s.execute(SQ_DDL.replace(", anyv", ""))
s.executemany("INSERT INTO t VALUES (" + ",".join("?" * 13) + ")",
              [r[:13] for r in sq_rows() if "\x00" not in (r[5] or "")])
s.commit()
s.close()
PG_DDL = ("CREATE TABLE {} (a int8, b text, n numeric(20,4), r float8, flag bool, s text, "
          "ts timestamp, tz timestamptz, d date, u uuid, j jsonb, bl bytea, big text, "
          "PRIMARY KEY (a, b))")
cur.execute(PG_DDL.format("from_sq"))


def break_from_sq():
    cur.execute("DELETE FROM from_sq")
    cur.execute("INSERT INTO from_sq (a, b, s) VALUES (1, 'b''1 é✓', 'only a few'), "
                "(42, 'extra', 'x')")


break_from_sq()
check_round("sqlite>pg", "sqlite:" + sx, D, "t", "from_sq", lambda: sq_sum(sx, "t"),
            lambda: pg_sum("from_sq"))
cur.execute("UPDATE from_sq SET n = n + 1, ts = ts + interval '1 microsecond', flag = NOT flag, "
            "j = '{\"z\": 1}', bl = '\\x'::bytea, big = big || 'y', u = NULL WHERE a = 2")
cur.execute("DELETE FROM from_sq WHERE a = 7")
check_file("sqlite>pg", "sqlite:" + sx, D, "t", "from_sq", lambda: sq_sum(sx, "t"), run_psql)
# a NUL in text cannot go to PostgreSQL: refused, nothing written
cur.execute("DELETE FROM from_sq")
before = pg_sum("from_sq")
code, out, err = sluice("repair", "sqlite:" + sa, D, "--table", "t", "--target-table",
                        "from_sq", "--exclude-columns", "anyv", "--no-progress", "--apply")
t.ok(code == 2 and "NUL" in err and pg_sum("from_sq") == before,
     "sqlite>pg: a text with a NUL byte is refused (exit 2), nothing written",
     f"exit {code}\n{out[-500:]}\n{err}")

# ---- PostgreSQL -> SQLite ----------------------------------------------------------------------
LITE_TYPE = {"int2": "INTEGER", "int4": "INT", "int8": "BIGINT", "numeric(30,10)": "NUMERIC",
             "real": "REAL", "float8": "DOUBLE", "bool": "BOOLEAN", "text": "TEXT",
             "varchar(20)": "VARCHAR(20)", "char(5)": "CHAR(5)", "bytea": "BLOB", "date": "DATE",
             "timestamp": "TIMESTAMP", "timestamptz": "TIMESTAMPTZ", "uuid": "UUID",
             "json": "JSON", "jsonb": "JSON", "inet": "TEXT", "interval": "TEXT"}
lt = os.path.join(tmp, "to.db")
LITE_DDL = ("CREATE TABLE all_s (id INTEGER, k TEXT, " +
            ", ".join(f"{n} {LITE_TYPE[ty]}" for n, ty, _, _ in TYPES) + ", PRIMARY KEY (id, k))")
s = sqlite3.connect(lt)
s.execute(LITE_DDL)
s.execute("INSERT INTO all_s (id, k, c_text) VALUES (1, 'k''1', 'only a few'), (999, 'x', 'x')")
s.commit()
s.close()
W = ["--where", "id <> 102"]  # the NaN row: SQLite has no NaN (refused, below)
code, out, err = sluice("repair", D, "sqlite:" + lt, "--table", "all_s", "--no-progress",
                        "--apply")
t.ok(code == 2 and "NaN cannot be written to SQLite" in err,
     "pg>sqlite: NaN is refused (exit 2)", f"exit {code}\n{err}")
t.ok(sq_sum(lt, "all_s")[0] == 2, "pg>sqlite: the refused repair wrote nothing")


def check_round_w(name, *a, **k):
    global sluice
    orig = sluice
    sluice = lambda *x, **kw: orig(*(list(x) + W), **kw)  # noqa: E731
    try:
        check_round(name, *a, **k)
    finally:
        sluice = orig


check_round_w("pg>sqlite", D, "sqlite:" + lt, "all_s", None, lambda: pg_sum("all_s"),
              lambda: sq_sum(lt, "all_s"))
s = sqlite3.connect(lt)
s.execute("UPDATE all_s SET c_text = 'x', c_long = 'short', c_ts = '2000-01-01', "
          "c_bool = NULL, c_f4 = 0.1 WHERE id IN (3, 4)")
s.execute("DELETE FROM all_s WHERE id = 9")
s.commit()
s.close()
orig_sluice = sluice
sluice = lambda *x, **kw: orig_sluice(*(list(x) + W), **kw)  # noqa: E731
check_file("pg>sqlite", D, "sqlite:" + lt, "all_s", None, lambda: pg_sum("all_s"),
           lambda p: run_sqlite3(lt, p))
sluice = orig_sluice

# ---- the file is written whole or not at all --------------------------------------------------
bad = os.path.join(tmp, "no-such-dir", "fix.sql")
code, out, err = sluice("diff", D, D, "--table", "all_s", "--target-table", "all_t",
                        "--no-progress", "--fix-sql", bad)
t.ok(code == 2 and "cannot create" in err and not os.path.exists(os.path.dirname(bad)),
     "--fix-sql into a missing directory: exit 2, nothing left behind", err)
leftovers = [f for f in os.listdir(tmp) if ".tmp." in f]
t.ok(not leftovers, "no temporary fix files left behind", leftovers)
# ---- the throttle, and an empty source ------------------------------------------------------
import time  # noqa: E402
ta, tb = os.path.join(tmp, "ta.db"), os.path.join(tmp, "tb.db")
for path, n in ((ta, 40), (tb, 0)):
    s = sqlite3.connect(path)
    s.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    s.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"v{i}") for i in range(n)])
    s.commit()
    s.close()
start = time.monotonic()
code, out, err = sluice("repair", "sqlite:" + ta, "sqlite:" + tb, "--table", "t", "--no-progress",
                        "--apply", "--rows-per-second", "20", "--batch", "10")
took = time.monotonic() - start
t.ok(code == 0 and "40 inserted" in out and "4 transactions" in out and took >= 1.8,
     f"--rows-per-second 20: 40 rows in 4 transactions took {took:.1f} s (at least 1.8 s)",
     f"exit {code}\n{out}\n{err}")
s = sqlite3.connect(tb)
s.execute("DELETE FROM t")
s.commit()
s.close()
code, out, err = sluice("repair", "sqlite:" + tb, "sqlite:" + ta, "--table", "t", "--no-progress")
t.ok(code == 2 and "--allow-empty" in err and sq_sum(ta, "t")[0] == 40,
     "an empty source is refused (it would delete every target row), exit 2", err)
code, out, err = sluice("repair", "sqlite:" + tb, "sqlite:" + ta, "--table", "t", "--no-progress",
                        "--allow-empty", "--apply", "--max-rows", "40")
t.ok(code == 0 and "40 deleted" in out and sq_sum(ta, "t")[0] == 0,
     "--allow-empty: an empty source empties the target", f"exit {code}\n{out}\n{err}")
code, out, err = sluice("repair", "--help")
t.ok(code == 0 and out.startswith("usage: sluice repair") and "--apply" in out,
     "sluice repair --help: usage, exit 0", out + err)
# Tolerances: a row changed in an exact column and, within tolerance, in a
# tolerant one gets its exact column updated; the re-check after the apply
# calls it equal as the diff did (within tolerance), exit 0.
tsa, tsb = os.path.join(tmp, "tol_a.db"), os.path.join(tmp, "tol_b.db")
for path, rows in ((tsa, [(1, 1.000, "a"), (2, 2.0, "b")]),
                   (tsb, [(1, 1.004, "x"), (2, 2.0, "b")])):
    s = sqlite3.connect(path)
    s.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, amount REAL, note TEXT)")
    s.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
    s.commit()
    s.close()
code, out, err = sluice("repair", "sqlite:" + tsa, "sqlite:" + tsb, "--table", "t",
                        "--no-progress", "--tolerance", "amount=0.005", "--apply")
s = sqlite3.connect(tsb)
got = s.execute("SELECT amount, note FROM t WHERE id = 1").fetchone()
s.close()
t.ok(code == 0 and "1 updated" in out and got == (1.004, "a") and "still differs" not in err,
     "--tolerance: only the exact column is updated, and the re-check calls the row equal",
     f"exit {code} row {got}\n{out}\n{err}")
code, out, err = sluice("repair", "sqlite:" + tsa, "sqlite:" + tsb, "--table", "t",
                        "--no-progress", "--apply")
s = sqlite3.connect(tsb)
got = s.execute("SELECT amount, note FROM t WHERE id = 1").fetchone()
s.close()
t.ok(code == 0 and got == (1.0, "a"), "without the tolerance the amount is repaired too",
     f"exit {code} row {got}\n{out}\n{err}")
code, out, err = sluice("repair", "sqlite:" + tsa, "sqlite:" + tsb, "--table", "t",
                        "--no-progress", "--max-divergences", "1")
t.ok(code == 2 and "--max-divergences" in err and len(err.strip().splitlines()) == 1,
     "repair refuses --max-divergences (a partial diff), exit 2, one line", err)
t.done()
