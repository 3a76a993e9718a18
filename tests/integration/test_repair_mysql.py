#!/usr/bin/python3
"""sluice repair and diff --fix-sql with MariaDB: PostgreSQL -> MariaDB, MariaDB -> MariaDB
and MariaDB -> PostgreSQL, over the types both compare (bigint, decimal, double, tinyint(1),
text, varchar, latin1 varchar, longblob, date, datetime(6), timestamp(6), JSON, a value over
64 KiB), NULLs, quotes, backslashes and unicode, on a composite (int, text) key. For each: a
dry run changes nothing, --max-rows refuses, --apply repairs (re-check equal), a diff
afterwards exits 0, the fix SQL applied with the mariadb client repairs too, and the source's
checksum (computed in SQL) is unchanged."""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from harness import MariaDbServer, PgServer, Tap, sluice  # noqa: E402

t = Tap()
my = MariaDbServer()
pg = PgServer()
my.createdb("r")
pg.createdb("r")
mc = my.connect("r").cursor()
mc.execute("SET SESSION group_concat_max_len = 1073741824")
pc = pg.connect("r").cursor()
M, P = my.dsn("r"), pg.dsn("r")
tmp = tempfile.mkdtemp()

COLS = ["c_int", "c_num", "c_f8", "c_bool", "c_text", "c_vc", "c_latin", "c_blob", "c_date",
        "c_dt", "c_ts", "c_json", "c_long"]
MY_DDL = ("CREATE TABLE {} (id bigint, k varchar(40) COLLATE utf8mb4_bin, c_int bigint, "
          "c_num decimal(30,10), c_f8 double, c_bool tinyint(1), c_text text, c_vc varchar(40), "
          "c_latin varchar(40) CHARACTER SET latin1, c_blob longblob, c_date date, "
          "c_dt datetime(6), c_ts timestamp(6) NULL DEFAULT NULL, c_json JSON, c_long longtext, "
          "PRIMARY KEY (id, k)) CHARACTER SET utf8mb4")
PG_DDL = ("CREATE TABLE {} (id int8, k text, c_int int8, c_num numeric(30,10), c_f8 float8, "
          "c_bool bool, c_text text, c_vc varchar(40), c_latin text, c_blob bytea, c_date date, "
          "c_dt timestamp, c_ts timestamptz, c_json jsonb, c_long text, PRIMARY KEY (id, k))")


def rows():
    out = []
    for i in range(1, 41):
        out.append((i % 7, f"k'{i} é✓\\", i * 1000000007, f"{i}.0123456789", i / 3, i % 2,
                    f"it's \\ \"{i}\" é✓ 😀\t\n", f"v{i}'", f"caf\u00e9 {i}'\\",
                    bytes([i, 0, 39, 92, 255]), f"2024-0{1 + i % 9}-{1 + i % 28:02d}",
                    f"2024-01-02 03:04:{i % 60:02d}.{i:06d}", f"2030-05-06 07:08:{i % 60:02d}.5",
                    f'{{"b": [1, 2.50, "x\'{i}\\\\"], "a": null}}',
                    ("L" * 70000 + str(i)) if i % 10 == 0 else "short"))
    out.append((100, "nulls") + (None,) * len(COLS))
    return out


def my_sum(table):
    expr = ", ".join(f"QUOTE({x})" for x in ["id", "k"] + COLS)
    mc.execute(f"SELECT COUNT(*), MD5(GROUP_CONCAT(MD5(CONCAT_WS('|', {expr})) ORDER BY id, k "
               f"SEPARATOR ',')) FROM {table}")
    return mc.fetchone()


def pg_sum(table):
    pc.execute(f"SELECT count(*), md5(coalesce(string_agg(x, E'\\n' ORDER BY x), '')) "
               f"FROM (SELECT t::text AS x FROM {table} t) s")
    return pc.fetchone()


def my_insert(table, rs):
    mc.executemany(f"INSERT INTO {table} VALUES ({', '.join(['%s'] * (2 + len(COLS)))})", rs)


def pg_insert(table, rs):
    pc.executemany(f"INSERT INTO {table} VALUES ({', '.join(['%s'] * (2 + len(COLS)))})",
                   [[(bool(v) if i == 5 and v is not None else v) for i, v in enumerate(r)]
                    for r in rs])


def my_apply(path):
    with open(path, "rb") as f:
        r = subprocess.run(["mariadb", "--no-defaults", "--binary-mode", "-h", "127.0.0.1",
                            "-P", str(my.port), "-u", my.USER, f"-p{my.PASSWORD}", "r"],
                           stdin=f, capture_output=True)
    return r.returncode, r.stderr.decode(errors="replace")


def pg_apply(path):
    r = subprocess.run(["psql", P, "-q", "-v", "ON_ERROR_STOP=1", "-f", path],
                       capture_output=True, text=True)
    return r.returncode, r.stderr


def check(name, src, tgt, table, ttable, src_sum, tgt_sum, break_target, apply_file):
    args = ["--table", table, "--target-table", ttable, "--no-progress"]
    break_target()
    before_src, before_tgt = src_sum(), tgt_sum()
    code, out, err = sluice("diff", src, tgt, *args)
    t.ok(code == 1, f"{name}: the tables differ", out[-800:] + err)
    code, out, err = sluice("repair", src, tgt, *args)
    t.ok(code == 1 and "-- dry run:" in out and tgt_sum() == before_tgt,
         f"{name}: dry run: exit 1, the target unchanged", f"exit {code}\n{out[-1500:]}\n{err}")
    code, out, err = sluice("repair", src, tgt, *args, "--apply", "--max-rows", "2")
    t.ok(code == 2 and "more than --max-rows 2" in err and tgt_sum() == before_tgt,
         f"{name}: --max-rows 2 refuses, the target unchanged", f"exit {code}\n{err}")
    code, out, err = sluice("repair", src, tgt, *args, "--apply", "--batch", "5")
    ok = code == 0 and "re-check:" in out
    if ok:
        n = out.split("re-check: ")[1].split()
        ok = n[0] == n[2] and int(n[0]) > 0
    t.ok(ok, f"{name}: --apply repairs, every key re-checked equal", f"exit {code}\n{out}\n{err}")
    code, out, err = sluice("diff", src, tgt, *args)
    t.ok(code == 0, f"{name}: diff after the repair: identical", out[-1500:] + err)
    t.ok(src_sum() == before_src, f"{name}: the source's checksum is unchanged")
    break_target()
    path = os.path.join(tmp, name.replace(">", "_") + ".sql")
    code, out, err = sluice("diff", src, tgt, *args, "--fix-sql", path)
    t.ok(code == 1 and os.path.exists(path), f"{name}: diff --fix-sql writes the file", err)
    rc, e = apply_file(path)
    t.ok(rc == 0, f"{name}: the fix SQL applies with the command-line client", e)
    code, out, err = sluice("diff", src, tgt, *args)
    t.ok(code == 0, f"{name}: diff after applying the file: identical", out[-1500:] + err)
    t.ok(src_sum() == before_src, f"{name}: the source's checksum is unchanged (file)")


src_rows = rows()
# PostgreSQL -> MariaDB
pc.execute(PG_DDL.format("ps"))
pg_insert("ps", src_rows)
mc.execute(MY_DDL.format("mt"))


def break_mt():
    mc.execute("DELETE FROM mt")
    my_insert("mt", src_rows[:30])
    mc.execute("UPDATE mt SET c_text = 'x', c_json = '[]', c_ts = NULL WHERE id = 1")
    mc.execute("UPDATE mt SET c_num = 0, c_latin = 'A', c_blob = NULL, c_bool = 1 - c_bool "
               "WHERE id = 2")
    mc.execute("UPDATE mt SET c_long = CONCAT(c_long, 'x') WHERE c_long <> 'short'")
    mc.execute("INSERT INTO mt (id, k, c_text) VALUES (999, 'extra', 'e')")


check("pg>mariadb", P, M, "ps", "mt", lambda: pg_sum("ps"), lambda: my_sum("mt"), break_mt,
      my_apply)

# MariaDB -> MariaDB
mc.execute(MY_DDL.format("ms"))
my_insert("ms", src_rows)
mc.execute(MY_DDL.format("mt2"))


def break_mt2():
    mc.execute("DELETE FROM mt2")
    my_insert("mt2", src_rows[5:])
    mc.execute("UPDATE mt2 SET c_dt = '2000-01-01', c_f8 = 0.5, c_vc = NULL WHERE id = 3")
    mc.execute("INSERT INTO mt2 (id, k) VALUES (998, 'x\\\\y')")


check("mariadb>mariadb", M, M, "ms", "mt2", lambda: my_sum("ms"), lambda: my_sum("mt2"),
      break_mt2, my_apply)

# MariaDB -> PostgreSQL
pc.execute(PG_DDL.format("pt"))


def break_pt():
    pc.execute("DELETE FROM pt")
    pg_insert("pt", src_rows[10:])
    pc.execute("UPDATE pt SET c_ts = c_ts + interval '1 microsecond', c_json = '{}' WHERE id = 4")
    pc.execute("INSERT INTO pt (id, k) VALUES (997, 'x')")


check("mariadb>pg", M, P, "ms", "pt", lambda: my_sum("ms"), lambda: pg_sum("pt"), break_pt,
      pg_apply)
t.done()
