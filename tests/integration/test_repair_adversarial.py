#!/usr/bin/python3
"""sluice repair against inputs meant to break it: each case once wrote a wrong value, deleted
a row the source still has, or misreported what was written.

- --where: a row whose filtered column differs is on one side of the where only; the diff
  calls it extra (or missing), but the repair must update it, never delete a row the source
  has (nor insert a key the target has): SQLite -> SQLite, PostgreSQL -> SQLite and
  PostgreSQL -> PostgreSQL, source unchanged.
- a shortened repair option ("--max-row 1", which getopt_long completed to the diff's
  --max-rows-per-second, so the limit was not there): refused.
- --fix-sql naming the source's own SQLite file: refused (it would be replaced).
- the PostgreSQL fix file sets TimeZone UTC (and DateStyle, IntervalStyle) as --apply's
  session has them: a timestamp copied into a timestamptz column read as UTC.
- doubles whose shortest decimal SQLite (not correctly rounded) reads one ulp off: written
  as a literal SQLite reads exactly, SQLite -> SQLite (the fix file) and PostgreSQL -> SQLite.
- MySQL DECIMAL(65,30) holding 65 digits with 30 after the point: written as a plain
  decimal (an exponent would make MySQL read a double and round it).
- the MySQL fix file sets a strict sql_mode, as --apply does: a value too long for the
  column is an error under a server whose sql_mode is not strict, not silently cut.
- MariaDB JSON columns whose names hold a quote or a backtick (doubled in the CHECK that marks
  them JSON) were read as text: drift against jsonb, never repaired.
- a MyISAM target (no rollback): a failed batch must not claim that it was rolled back
  when its first statements stay written."""
import os
import sqlite3
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from harness import MariaDbServer, PgServer, Tap, sluice  # noqa: E402

t = Tap()
tmp = tempfile.mkdtemp()
pg = PgServer()
pg.createdb("adv")
P = pg.dsn("adv")
pc = pg.connect("adv")
pc.autocommit = True
cur = pc.cursor()


def sq(path, sql):
    s = sqlite3.connect(path)
    s.executescript(sql)
    s.commit()
    s.close()


def sq_rows(path, table):
    s = sqlite3.connect(path)
    r = s.execute(f'SELECT * FROM "{table}" ORDER BY 1').fetchall()
    s.close()
    return r


def pg_rows(table):
    cur.execute(f"SELECT * FROM {table} ORDER BY 1")
    return cur.fetchall()


# ---- --where: rows on one side of the filter only ---------------------------------------------
# id 2: 'old' in the source, 'active' in the target: within the where only in the target, so
# the diff says extra; the source has it (a DELETE would lose it). id 3: the other way round,
# the diff says missing; the target has it (an INSERT would collide). id 4 is really extra,
# id 5 really missing.
SRC_ROWS = [(1, "active", "a"), (2, "old", "b2"), (3, "active", "c"), (5, "active", "e")]
TGT_ROWS = [(1, "active", "a"), (2, "active", "b"), (3, "old", "c3"), (4, "active", "d")]
WANT = [(1, "active", "a"), (2, "old", "b2"), (3, "active", "c"), (5, "active", "e")]
WHERE = "status = 'active'"
DDL = "CREATE TABLE w (id INTEGER PRIMARY KEY, status TEXT, v TEXT);"


def sq_fill(path, rows):
    if os.path.exists(path):
        os.remove(path)
    sq(path, DDL + "".join(f"INSERT INTO w VALUES ({i}, '{s}', '{v}');" for i, s, v in rows))


def pg_fill(table, rows):
    cur.execute(f"DROP TABLE IF EXISTS {table}")
    cur.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, status text, v text)")
    cur.executemany(f"INSERT INTO {table} VALUES (%s, %s, %s)", rows)


def where_case(name, src, tgt, args, tgt_rows, src_rows):
    before = src_rows()
    code, out, err = sluice("repair", src, tgt, *args, "--where", WHERE, "--no-progress")
    t.ok(code == 1 and "DELETE" in out and out.count("DELETE") == 1 and "= 4" in out,
         f"{name}: dry run deletes only the row the source lacks", out + err)
    code, out, err = sluice("repair", src, tgt, *args, "--where", WHERE, "--no-progress",
                            "--apply")
    got = tgt_rows()
    t.ok(code == 0 and got == WANT,
         f"{name}: --apply with --where updates the rows the filter hid, deletes only id 4",
         f"exit {code}\n{out}{err}\ntarget {got}")
    t.ok(src_rows() == before, f"{name}: the source is unchanged")
    code, out, err = sluice("diff", src, tgt, *args, "--no-progress")
    t.ok(code == 0, f"{name}: the whole tables are equal afterwards", out + err)


sa, sb = os.path.join(tmp, "ws.db"), os.path.join(tmp, "wt.db")
sq_fill(sa, SRC_ROWS)
sq_fill(sb, TGT_ROWS)
where_case("sqlite>sqlite", f"sqlite:{sa}", f"sqlite:{sb}", ["--table", "w"],
           lambda: sq_rows(sb, "w"), lambda: sq_rows(sa, "w"))
pg_fill("w", SRC_ROWS)
sq_fill(sb, TGT_ROWS)
where_case("pg>sqlite", P, f"sqlite:{sb}", ["--table", "w"], lambda: sq_rows(sb, "w"),
           lambda: pg_rows("w"))
pg_fill("wt", TGT_ROWS)
where_case("pg>pg", P, P, ["--table", "w", "--target-table", "wt"], lambda: pg_rows("wt"),
           lambda: pg_rows("w"))
# the fix file of diff --fix-sql makes the same choice
pg_fill("wt", TGT_ROWS)
fx = os.path.join(tmp, "w.sql")
code, out, err = sluice("diff", P, P, "--table", "w", "--target-table", "wt", "--where", WHERE,
                        "--no-progress", "--fix-sql", fx)
r = subprocess.run(["psql", P, "-q", "-v", "ON_ERROR_STOP=1", "-f", fx], capture_output=True,
                   text=True)
t.ok(code == 1 and r.returncode == 0 and pg_rows("wt") == WANT,
     "pg>pg: diff --where --fix-sql, applied with psql, updates instead of delete/insert",
     open(fx).read() + r.stderr + str(pg_rows("wt")))

# the re-check after an apply fails (here a --where that raises once a trigger on the target
# has fired): exit 2, and the error says that the repair was applied
cur.execute("DROP TABLE IF EXISTS rc_s, rc_t, rc_flag")
cur.execute("CREATE TABLE rc_flag (x int)")
cur.execute("CREATE TABLE rc_s (id int PRIMARY KEY, v text)")
cur.execute("CREATE TABLE rc_t (id int PRIMARY KEY, v text)")
cur.execute("INSERT INTO rc_s VALUES (1, 'new'), (2, 'b')")
cur.execute("INSERT INTO rc_t VALUES (1, 'old'), (2, 'b')")
cur.execute("CREATE OR REPLACE FUNCTION rc_chk() RETURNS bool LANGUAGE plpgsql STABLE AS $$ "
            "BEGIN IF EXISTS (SELECT 1 FROM rc_flag) THEN RAISE EXCEPTION 'flagged'; END IF; "
            "RETURN true; END $$")
cur.execute("CREATE OR REPLACE FUNCTION rc_trg() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN INSERT INTO rc_flag VALUES (1); RETURN NEW; END $$")
cur.execute("CREATE TRIGGER rc_t_upd AFTER UPDATE ON rc_t FOR EACH ROW EXECUTE FUNCTION rc_trg()")
code, out, err = sluice("repair", P, P, "--table", "rc_s", "--target-table", "rc_t", "--where",
                        "rc_chk()", "--no-progress", "--apply")
cur.execute("SELECT v FROM rc_t WHERE id = 1")
got = cur.fetchone()[0]
t.ok(code == 2 and got == "new" and "the repair was applied (0 inserted, 1 updated" in err,
     "a re-check that fails after the apply says that the repair was applied",
     f"exit {code}\n{out}{err}\n{got}")

# --fix-sql naming the source's (or the target's) own SQLite file: the rename of the finished
# script would replace the database with it
for which in ("source", "target"):
    sq_fill(sa, SRC_ROWS)
    sq_fill(sb, TGT_ROWS)
    victim = sa if which == "source" else sb
    with open(victim, "rb") as fh:
        before = fh.read()
    code, out, err = sluice("diff", f"sqlite:{sa}", f"sqlite:{sb}", "--table", "w",
                            "--no-progress", "--fix-sql", victim)
    with open(victim, "rb") as fh:
        after = fh.read()
    t.ok(code == 2 and "own file" in err and after == before,
         f"diff --fix-sql naming the {which} database file refuses and leaves it alone",
         f"exit {code}\n{err}")

# the fix file applied with psql in a database whose TimeZone is not UTC: a timestamp copied
# into a timestamptz column must read as UTC, as in --apply's session
pg.createdb("advtz")
TZ = pg.dsn("advtz")
tc = pg.connect("advtz")
tc.autocommit = True
tcur = tc.cursor()
tcur.execute("CREATE TABLE tzs (id int PRIMARY KEY, ts timestamp)")
tcur.execute("CREATE TABLE tzt (id int PRIMARY KEY, ts timestamptz)")
tcur.execute("INSERT INTO tzs VALUES (1, '2024-06-01 10:00:00')")
tcur.execute("INSERT INTO tzt VALUES (1, NULL)")
tcur.execute("ALTER DATABASE advtz SET TimeZone = 'Asia/Kolkata'")
fx = os.path.join(tmp, "tz.sql")
code, out, err = sluice("diff", TZ, TZ, "--table", "tzs", "--target-table", "tzt", "--no-progress",
                        "--fix-sql", fx)
r = subprocess.run(["psql", TZ, "-q", "-v", "ON_ERROR_STOP=1", "-f", fx], capture_output=True,
                   text=True)
tcur.execute("SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') FROM tzt")
got = tcur.fetchone()[0]
t.ok(r.returncode == 0 and got == "2024-06-01 10:00:00",
     "pg>pg fix file in a non-UTC database: a timestamp into timestamptz reads as UTC",
     f"{r.stderr}\n{got}\n{open(fx).read()}")

# ---- doubles SQLite itself reads one ulp off -----------------------------------------------------
# SQLite's text-to-real conversion is not correctly rounded: the shortest decimals of these
# doubles (which strtod reads back exactly) come out one ulp off when SQLite parses them, so a
# REAL literal for a SQLite target must be one SQLite reads exactly
ODD = [-3.131546820234317e-307, -2.505178385779365e-301, 7.036870839547745e+177,
       -2.603035253442309e-303, 8.507476961959075e-301, -4.729536807628197e-301,
       -4.5818408903237864e-299, 4.647788798124515e-301, 3.008285471666108e-299,
       -7.264656207181672e-305, 5e-324, 0.1, 1.7976931348623157e308]


def bits(x):
    return struct.pack("<d", x).hex() if isinstance(x, float) else repr(x)


def sq_floats(path):
    s = sqlite3.connect(path)
    r = [bits(v) for (v,) in s.execute("SELECT d FROM f ORDER BY id")]
    s.close()
    return r


want = [bits(x) for x in ODD]
fs, ft = os.path.join(tmp, "fs.db"), os.path.join(tmp, "ft.db")
for p in (fs, ft):
    s = sqlite3.connect(p)
    s.execute("CREATE TABLE f (id INTEGER PRIMARY KEY, d REAL)")
    s.execute("INSERT INTO f VALUES (1000, 1.0)")
    if p == fs:
        s.executemany("INSERT INTO f VALUES (?, ?)", list(enumerate(ODD)))
    s.commit()
    s.close()
fx = os.path.join(tmp, "f.sql")
code, out, err = sluice("diff", f"sqlite:{fs}", f"sqlite:{ft}", "--table", "f", "--no-progress",
                        "--fix-sql", fx)
r = subprocess.run(["sqlite3", "-bail", ft, f".read {fx}"], capture_output=True, text=True)
got = sq_floats(ft)
t.ok(r.returncode == 0 and got[:-1] == want,
     "sqlite>sqlite: the fix file (read by sqlite3) writes every double exactly",
     f"{r.stderr}\n{list(zip(want, got))}")
cur.execute("DROP TABLE IF EXISTS f")
cur.execute("CREATE TABLE f (id int PRIMARY KEY, d float8)")
cur.executemany("INSERT INTO f VALUES (%s, %s)", list(enumerate(ODD)) + [(1000, 1.0)])
s = sqlite3.connect(ft)
s.execute("UPDATE f SET d = 1.0")
s.commit()
s.close()
code, out, err = sluice("repair", P, f"sqlite:{ft}", "--table", "f", "--no-progress", "--apply")
got = sq_floats(ft)
t.ok(code == 0 and got[:-1] == want, "pg>sqlite: --apply writes every double exactly",
     f"exit {code}\n{out}{err}\n{list(zip(want, got))}")

# "--max-row 1" (one letter short): getopt_long would complete it to the diff's
# --max-rows-per-second, and the repair would go ahead past the limit the user meant
sq_fill(sa, SRC_ROWS)
sq_fill(sb, TGT_ROWS)
before = sq_rows(sb, "w")
for short in (["--max-row", "1"], ["--max-r=1"], ["--appl"], ["--rows-per", "5"]):
    code, out, err = sluice("repair", f"sqlite:{sa}", f"sqlite:{sb}", "--table", "w",
                            "--no-progress", "--apply", *short)
    t.ok(code == 2 and "in full" in err and sq_rows(sb, "w") == before,
         f"repair {' '.join(short)}: a shortened repair option is refused, nothing written",
         f"exit {code}\n{out}{err}")

# ---- MariaDB -------------------------------------------------------------------------------------
my = MariaDbServer()
my.createdb("adv")
M = my.dsn("adv")
mconn = my.connect("adv")
mc = mconn.cursor()
mconn.autocommit(True)

# 65 digits, 30 after the point: DECIMAL(65,30) holds it exactly
BIG = "12345678901234567890123456789012345.123456789012345678901234567891"
cur.execute("DROP TABLE IF EXISTS dec65")
cur.execute("CREATE TABLE dec65 (id int PRIMARY KEY, n numeric(65,30))")
cur.execute(f"INSERT INTO dec65 VALUES (1, {BIG}), (2, -{BIG}), (3, 0.000000000000000000000000000001)")
mc.execute("CREATE TABLE dec65 (id int PRIMARY KEY, n decimal(65,30))")
mc.execute("INSERT INTO dec65 VALUES (1, 0), (2, 0)")
code, out, err = sluice("repair", P, M, "--table", "dec65", "--no-progress", "--apply")
mc.execute("SELECT CAST(n AS CHAR) FROM dec65 ORDER BY id")
got = [r[0] for r in mc.fetchall()]
t.ok(code == 0 and got == [BIG, "-" + BIG, "0.000000000000000000000000000001"],
     "pg>mariadb: a 65-digit DECIMAL(65,30) is written exactly", f"exit {code}\n{out}{err}\n{got}")

# MyISAM cannot roll back: in a batch whose second statement fails (a value too long for the
# target's column), the first stays written, and the error must say so, not "rolled back"
for eng in ("InnoDB", "MyISAM"):
    mc.execute(f"DROP TABLE IF EXISTS s_{eng}")
    mc.execute(f"DROP TABLE IF EXISTS t_{eng}")
    mc.execute(f"CREATE TABLE s_{eng} (id int PRIMARY KEY, v varchar(40)) ENGINE=InnoDB")
    mc.execute(f"CREATE TABLE t_{eng} (id int PRIMARY KEY, v varchar(5)) ENGINE={eng}")
    mc.execute(f"INSERT INTO s_{eng} VALUES (1, 'abc'), (2, 'abcdefgh'), (3, 'c')")
    mc.execute(f"INSERT INTO t_{eng} VALUES (1, 'x'), (2, 'y'), (3, 'z')")
    code, out, err = sluice("repair", M, M, "--table", f"s_{eng}", "--target-table", f"t_{eng}",
                            "--no-progress", "--apply")
    mc.execute(f"SELECT v FROM t_{eng} ORDER BY id")
    got = [r[0] for r in mc.fetchall()]
    if eng == "InnoDB":
        t.ok(code == 2 and "rolled back (0 statements committed before it)" in err
             and got == ["x", "y", "z"], "mariadb InnoDB target: a failed batch is rolled back",
             f"exit {code}\n{out}{err}\n{got}")
    else:
        t.ok(code == 2 and "rolled back" not in err and "cannot roll back" in err
             and "1 statement of it before the failing one remains written" in err
             and got == ["abc", "y", "z"],
             "mariadb MyISAM target: a failed batch says which statements remain written",
             f"exit {code}\n{out}{err}\n{got}")

# the fix file applied with the mariadb client on a server whose sql_mode is not strict: a
# value too long for the target's column must be an error (as under --apply), not cut short
mc.execute("DROP TABLE IF EXISTS s_len, t_len")
mc.execute("CREATE TABLE s_len (id int PRIMARY KEY, v varchar(40))")
mc.execute("CREATE TABLE t_len (id int PRIMARY KEY, v varchar(5))")
mc.execute("INSERT INTO s_len VALUES (1, 'abcdefgh')")
mc.execute("INSERT INTO t_len VALUES (1, 'x')")
mc.execute("SET GLOBAL sql_mode = ''")
fx = os.path.join(tmp, "len.sql")
code, out, err = sluice("diff", M, M, "--table", "s_len", "--target-table", "t_len",
                        "--no-progress", "--fix-sql", fx)
with open(fx, "rb") as fh:
    r = subprocess.run(["mariadb", "--no-defaults", "--binary-mode", "-h", "127.0.0.1", "-P",
                        str(my.port), "-u", my.USER, f"-p{my.PASSWORD}", "adv"], stdin=fh,
                       capture_output=True)
mc.execute("SET GLOBAL sql_mode = DEFAULT")
mc.execute("SELECT v FROM t_len")
got = mc.fetchone()[0]
t.ok(r.returncode != 0 and got == "x",
     "mariadb fix file on a non-strict server: a value too long is refused, not cut",
     f"exit {r.returncode} {r.stderr!r} {got}")

# a column the connector cannot read (MySQL BIT), left out of the diff with --exclude-columns:
# the fix still reads it (an INSERT writes every column), and the error must say why, not only
# "leave it out with --exclude-columns", which was done
mc.execute("DROP TABLE IF EXISTS bt")
mc.execute("CREATE TABLE bt (id int PRIMARY KEY, v int, b bit(8))")
mc.execute("INSERT INTO bt VALUES (1, 1, b'1'), (2, 2, b'0')")
btp = os.path.join(tmp, "bt.db")
sq(btp, "CREATE TABLE bt (id INTEGER PRIMARY KEY, v INTEGER, b INTEGER); "
        "INSERT INTO bt VALUES (1, 5, 1);")
code, out, err = sluice("repair", M, f"sqlite:{btp}", "--table", "bt", "--exclude-columns", "b",
                        "--no-progress")
t.ok(code == 2 and "--exclude-columns too" in err,
     "an excluded column the fix cannot read: the error says the fix reads it", err)

# MariaDB's JSON is a longtext with CHECK (json_valid(`name`)); a name holding a quote or a
# backtick is printed with it doubled, and such a column was read as text: "type changed"
# drift against PostgreSQL's jsonb, which a repair never writes
mc.execute("DROP TABLE IF EXISTS jq")
mc.execute('CREATE TABLE jq (id int PRIMARY KEY, `Mixed "Case" ``col``` JSON, `a"b` JSON)')
mc.execute("""INSERT INTO jq VALUES (1, '{"a": 1}', '[1]'), (2, '{"b": 2}', 'null')""")
cur.execute("DROP TABLE IF EXISTS jq")
cur.execute('CREATE TABLE jq (id int PRIMARY KEY, "Mixed ""Case"" `col`" jsonb, "a""b" jsonb)')
cur.execute("""INSERT INTO jq VALUES (1, '{"a": 1}', '[1]'), (2, '{"b": 3}', 'null')""")
code, out, err = sluice("repair", P, M, "--table", "jq", "--no-progress", "--apply")
code2, out2, err2 = sluice("diff", P, M, "--table", "jq", "--no-progress")
t.ok(code == 0 and "1 updated" in out and code2 == 0,
     "mariadb JSON columns whose names hold quotes and backticks: repaired, then identical",
     f"exit {code}\n{out}{err}\ndiff exit {code2}\n{out2}{err2}")

t.done()
