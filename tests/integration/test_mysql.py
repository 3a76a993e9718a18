#!/usr/bin/python3
"""MySQL/MariaDB connector (connectors/mysql.c) against a real MariaDB server:
sluice diff MariaDB<->MariaDB, MariaDB<->PostgreSQL and MariaDB<->SQLite on a
table of every supported type (int, bigint at both ends, varchar, unicode
text, decimal(12,2), double, date, datetime(6), blob, NULLs): equal tables
are identical, one changed value, one missing and one extra row are found
exactly; text keys in bytewise order ('a', 'A', 'a\\t' in a utf8mb4_bin
table); values from 0 B to 3 MB; float, year, unsigned, TIMESTAMP with the
server and the writer in other zones, char, binary; tinyint(1) against
boolean; a wrong password (exit 2, one line, no
password), a missing table, an unsupported type and a zero date refused
with exit 2; an unsigned BIGINT above 2^63-1 compared; a locked table given up
after --read-timeout; MYSQL_PWD; ~/.my.cnf [client] (password, user); a cluster worker reading --db NAME=mysql://...."""
import hashlib
import os
import random
import sqlite3
import sys
import tempfile
from decimal import Decimal

sys.path.insert(0, os.path.dirname(__file__))
from harness import MariaDbServer, PgServer, Tap, divergence_set, sluice, sluice_json  # noqa: E402

t = Tap()
seed = int(os.environ.get("SEED", random.randrange(1 << 30)))
t.diag(f"seed {seed} (SEED=... replays)")
rnd = random.Random(seed)

my = MariaDbServer()
pg = PgServer()
my.createdb("shop")
my.createdb("shop2")
pg.createdb("shop")
tmp = tempfile.mkdtemp(prefix="sluice-mysql-test-")
sqpath = os.path.join(tmp, "shop.db")

TEXTS = ["héllo wörld ✓", "日本語のテキスト", "emoji 🎉🚀", "tab\there", "quote ' \" `", "",
         "trailing space ", "back\\slash", "line\nbreak"]


def gen_rows(n):
    rows = []
    for i in range(1, n + 1):
        b = rnd.choice([-9223372036854775808, 9223372036854775807, -1, 0,
                        rnd.randrange(-(1 << 62), 1 << 62)])
        v = rnd.choice(TEXTS) + str(i)
        tx = rnd.choice(TEXTS) * rnd.randrange(1, 4)
        d = Decimal(rnd.randrange(-10**11, 10**11)) / 100
        f = rnd.choice([0.1, -2.5e-10, 1e300, 3.141592653589793, 0.0, float(i) / 7])
        dt = f"{rnd.randrange(1000, 10000):04d}-{rnd.randrange(1, 13):02d}-{rnd.randrange(1, 29):02d}"
        ts = f"{dt} {rnd.randrange(24):02d}:{rnd.randrange(60):02d}:{rnd.randrange(60):02d}" \
             f".{rnd.randrange(10**6):06d}"
        bl = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 40)))
        row = [i, b, v, tx, d, f, dt, ts, bl]
        if i % 13 == 0:  # NULL in every nullable column
            row = [i] + [None] * 8
        elif i % 5 == 0:
            row[rnd.randrange(1, 9)] = None
        rows.append(row)
    return rows


ROWS = gen_rows(300)

MY_DDL = """CREATE TABLE items (id int PRIMARY KEY, b bigint, v varchar(60), t text,
    d decimal(12,2), f double, dt date, ts datetime(6), bl blob)
    CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"""
PG_DDL = """CREATE TABLE items (id int PRIMARY KEY, b bigint, v varchar(60), t text,
    d numeric(12,2), f float8, dt date, ts timestamp(6), bl bytea)"""
SQ_DDL = """CREATE TABLE items (id INTEGER PRIMARY KEY, b INTEGER, v VARCHAR(60), t TEXT,
    d DECIMAL(12,2), f DOUBLE, dt DATE, ts DATETIME, bl BLOB)"""


def load_my(db, rows):
    c = my.connect(db)
    cur = c.cursor()
    cur.execute("DROP TABLE IF EXISTS items")
    cur.execute(MY_DDL)
    cur.executemany("INSERT INTO items VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)
    return c


def load_pg(rows):
    c = pg.connect("shop")
    cur = c.cursor()
    cur.execute("DROP TABLE IF EXISTS items")
    cur.execute(PG_DDL)
    cur.executemany("INSERT INTO items VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)
    return c


def load_sq(rows):
    if os.path.exists(sqpath):
        os.unlink(sqpath)
    c = sqlite3.connect(sqpath)
    c.execute(SQ_DDL)
    # decimals as text: SQLite's DECIMAL affinity keeps what fits a double
    c.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  [[str(x) if isinstance(x, Decimal) else x for x in r] for r in rows])
    c.commit()
    return c


mc = load_my("shop", ROWS)
m2 = load_my("shop2", ROWS)
pc = load_pg(ROWS)
sc = load_sq(ROWS)
SRC = my.dsn("shop")
TARGETS = {"MariaDB": my.dsn("shop2"), "PostgreSQL": pg.dsn("shop"), "SQLite": "sqlite:" + sqpath}

for name, tgt in TARGETS.items():
    for ranges in ("1", "7"):
        code, out, err = sluice("diff", SRC, tgt, "--table", "items", "--ranges", ranges,
                                "--no-progress")
        t.ok(code == 0 and "identical" in out,
             f"MariaDB vs {name} (--ranges {ranges}): equal tables are identical",
             f"exit {code}\n{out}\n{err}")

# one changed value, one missing row, one extra row, on each target
EXTRA = [100000, 5, "extra", "row", Decimal("1.50"), 2.0, "2020-01-01",
         "2020-01-01 00:00:00.000001", b"\x01"]
m2.cursor().execute("UPDATE items SET v = 'changed!' WHERE id = 17")
m2.cursor().execute("DELETE FROM items WHERE id = 42")
m2.cursor().execute("INSERT INTO items VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", EXTRA)
pc.cursor().execute("UPDATE items SET v = 'changed!' WHERE id = 17")
pc.cursor().execute("DELETE FROM items WHERE id = 42")
pc.cursor().execute("INSERT INTO items VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", EXTRA)
sc.execute("UPDATE items SET v = 'changed!' WHERE id = 17")
sc.execute("DELETE FROM items WHERE id = 42")
sc.execute("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
           [str(x) if isinstance(x, Decimal) else x for x in EXTRA])
sc.commit()
WANT = {("changed", ("17",), ("v",)), ("missing-in-target", ("42",), ()),
        ("extra-in-target", ("100000",), ())}


def keys_as_text(s):
    return {(k, tuple(str(x) for x in key), cols) for k, key, cols in s}


for name, tgt in TARGETS.items():
    code, doc, err = sluice_json("diff", SRC, tgt, "--table", "items", "--ranges", "5")
    got = keys_as_text(divergence_set(doc)) if doc else None
    t.ok(code == 1 and got == WANT,
         f"MariaDB vs {name}: exactly the changed value, the missing and the extra row",
         f"exit {code}\ngot {got}\nwant {WANT}\n{err}")

# a value that differs only in what MySQL could lose: a decimal's last digit,
# a double's last bit, a microsecond, a blob's last byte, an emoji
for col, val in [("d", Decimal("12.35")), ("f", 0.30000000000000004),
                 ("ts", "2021-05-05 10:10:10.000002"), ("bl", b"\x00\xff\x00"),
                 ("t", "🎉")]:
    m2.cursor().execute(f"UPDATE items SET {col} = %s WHERE id = 3", (val,))
    pc.cursor().execute(f"UPDATE items SET {col} = %s WHERE id = 3", (val,))
    code, doc, err = sluice_json("diff", SRC, pg.dsn("shop"), "--table", "items")
    got = keys_as_text(divergence_set(doc)) if doc else None
    want = WANT | {("changed", ("3",), (col,))}
    if ROWS[2][["id", "b", "v", "t", "d", "f", "dt", "ts", "bl"].index(col)] == val:
        want = WANT
    t.ok(code == 1 and got == want, f"MariaDB vs PostgreSQL: a change of {col} in row 3 is seen",
         f"exit {code}\ngot {got}\nwant {want}\n{err}")
    # the same value on both sides again is equal again
    mc.cursor().execute(f"UPDATE items SET {col} = %s WHERE id = 3", (val,))
    code, doc, err = sluice_json("diff", SRC, pg.dsn("shop"), "--table", "items")
    got = keys_as_text(divergence_set(doc)) if doc else None
    t.ok(code == 1 and got == WANT, f"MariaDB vs PostgreSQL: {col} = {val!r} on both is equal",
         f"exit {code}\ngot {got}\n{err}")

# ---- text keys: bytewise order, 'a' and 'A' both keys ----------------------
KEYS = ["a", "A", "a\t", "a b", "ab", "b", "B", "é", "e", "Z", "z", "日本", "🎉", "a\x01"]
my.connect("shop").cursor().execute(
    "CREATE TABLE tk (k varchar(20) COLLATE utf8mb4_bin PRIMARY KEY, n int) "
    "CHARACTER SET utf8mb4")
c = my.connect("shop")
c.cursor().executemany("INSERT INTO tk VALUES (%s, %s)", [(k, i) for i, k in enumerate(KEYS)])
pcur = pc.cursor()
pcur.execute("CREATE TABLE tk (k varchar(20) PRIMARY KEY, n int)")
pcur.executemany("INSERT INTO tk VALUES (%s, %s)", [(k, i) for i, k in enumerate(KEYS)])
for ranges in ("1", "4", "13"):
    code, out, err = sluice("diff", SRC, pg.dsn("shop"), "--table", "tk", "--ranges", ranges,
                            "--no-progress")
    t.ok(code == 0 and "identical" in out,
         f"text keys 'a', 'A', 'a\\t', ... (utf8mb4_bin vs PostgreSQL, --ranges {ranges}): "
         "identical", f"exit {code}\n{out}\n{err}")
pcur.execute("UPDATE tk SET n = 99 WHERE k = 'A'")
pcur.execute("DELETE FROM tk WHERE k = 'a'")
pcur.execute("INSERT INTO tk VALUES ('a ', 7)")
for ranges in ("1", "5"):
    code, doc, err = sluice_json("diff", SRC, pg.dsn("shop"), "--table", "tk", "--ranges", ranges)
    got = divergence_set(doc) if doc else None
    want = {("changed", ("A",), ("n",)), ("missing-in-target", ("a",), ()),
            ("extra-in-target", ("a ",), ())}
    t.ok(code == 1 and got == want,
         f"text keys (--ranges {ranges}): 'A' changed, 'a' missing, 'a ' extra, nothing merged",
         f"exit {code}\ngot {got}\nwant {want}\n{err}")

# text keys of other charsets: latin1 (case-insensitive) and utf8mb3
LK = ["a", "a\t", "ab", "b", "é", "Z", "z!", "ü"]
for cs, coll in [("latin1", "latin1_swedish_ci"), ("utf8mb3", "utf8mb3_general_ci")]:
    c.cursor().execute(f"CREATE TABLE lk_{cs} (k varchar(20) CHARACTER SET {cs} COLLATE {coll} "
                       "PRIMARY KEY, n int)")
    c.cursor().executemany(f"INSERT INTO lk_{cs} VALUES (%s, %s)",
                           [(k, i) for i, k in enumerate(LK)])
    pcur.execute(f"CREATE TABLE lk_{cs} (k text PRIMARY KEY, n int)")
    pcur.executemany(f"INSERT INTO lk_{cs} VALUES (%s, %s)", [(k, i) for i, k in enumerate(LK)])
    pcur.execute(f"UPDATE lk_{cs} SET n = 99 WHERE k = 'é'")
    code, doc, err = sluice_json("diff", SRC, pg.dsn("shop"), "--table", f"lk_{cs}",
                                 "--ranges", "3")
    got = keys_as_text(divergence_set(doc)) if doc else None
    t.ok(code == 1 and got == {("changed", ("é",), ("n",))},
         f"a {cs} text key ({coll}) is ordered bytewise in UTF-8: only 'é' differs",
         f"exit {code}\n{got}\n{err}")

# ---- tinyint(1) against boolean ----------------------------------------------
c.cursor().execute("CREATE TABLE flags (id int PRIMARY KEY, ok tinyint(1))")
c.cursor().executemany("INSERT INTO flags VALUES (%s, %s)", [(1, 1), (2, 0), (3, None)])
pcur.execute("CREATE TABLE flags (id int PRIMARY KEY, ok boolean)")
pcur.executemany("INSERT INTO flags VALUES (%s, %s)", [(1, True), (2, False), (3, None)])
code, out, err = sluice("diff", SRC, pg.dsn("shop"), "--table", "flags", "--no-progress")
t.ok(code == 0 and "identical" in out, "tinyint(1) 1/0/NULL equals boolean true/false/NULL",
     f"exit {code}\n{out}\n{err}")
pcur.execute("UPDATE flags SET ok = true WHERE id = 2")
code, doc, err = sluice_json("diff", SRC, pg.dsn("shop"), "--table", "flags")
got = keys_as_text(divergence_set(doc)) if doc else None
t.ok(code == 1 and got == {("changed", ("2",), ("ok",))}, "tinyint(1) 0 vs true: changed",
     f"exit {code}\n{got}\n{err}")

# ---- values longer than the first read buffer (256 bytes), up to 3 MB ----------
SIZES = [0, 1, 255, 256, 257, 4000, 70000, 3 << 20, 300]
c.cursor().execute("CREATE TABLE big (id int PRIMARY KEY, t longtext, bl longblob) "
                   "CHARACTER SET utf8mb4")
pcur.execute("CREATE TABLE big (id int PRIMARY KEY, t text, bl bytea)")
for i, n in enumerate(SIZES):
    txt = ("é" * n)[:n]
    blob = bytes((j * 7 + i) % 256 for j in range(n))
    c.cursor().execute("INSERT INTO big VALUES (%s, %s, %s)", (i, txt, blob))
    pcur.execute("INSERT INTO big VALUES (%s, %s, %s)", (i, txt, blob))
code, out, err = sluice("diff", SRC, pg.dsn("shop"), "--table", "big", "--no-progress")
t.ok(code == 0 and "identical" in out,
     "text and blobs of 0 B to 3 MB (small ones after big ones) equal PostgreSQL's",
     f"exit {code}\n{out}\n{err}")
pcur.execute("UPDATE big SET bl = overlay(bl placing '\\xff'::bytea from %s) WHERE id = 7",
             (3 << 20,))
pcur.execute("UPDATE big SET t = t || 'x' WHERE id = 4")
code, doc, err = sluice_json("diff", SRC, pg.dsn("shop"), "--table", "big")
got = keys_as_text(divergence_set(doc)) if doc else None
t.ok(code == 1 and got == {("changed", ("7",), ("bl",)), ("changed", ("4",), ("t",))},
     "the last byte of a 3 MB blob and one more character of a 4000-character text are seen",
     f"exit {code}\n{got}\n{err}")

# ---- more types: float, year, unsigned, TIMESTAMP (zone pinned), char, binary --------
# the server's own zone is +03:00 and the rows are written from a +05:00
# session: sluice's session reads TIMESTAMP in UTC whatever either says
my.connect().cursor().execute("SET GLOBAL time_zone = '+03:00'")
c2 = my.connect("shop")
c2.cursor().execute("SET time_zone = '+05:00'")
c2.cursor().execute("""CREATE TABLE misc (id int PRIMARY KEY, fl float, y year,
    ui int unsigned, ub bigint unsigned, ts timestamp(6) NULL, c char(5), vb varbinary(10),
    bn binary(3), sm smallint, mi mediumint)""")
MISC = [(1, 1.1, 2024, 4294967295, 9223372036854775807, "2024-01-01 10:00:00.5", "ab",
         b"\x00", b"ab", -32768, 8388607),
        (2, -3.4e38, 1901, 0, 0, "1970-01-01 05:00:01", "", b"", b"\xff\x00\x01", 0, -1),
        (3, None, None, None, None, None, None, None, None, None, None)]
c2.cursor().executemany("INSERT INTO misc VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        MISC)
pcur.execute("""CREATE TABLE misc (id int PRIMARY KEY, fl real, y int, ui bigint, ub numeric(20,0),
    ts timestamptz, c varchar(5), vb bytea, bn bytea, sm smallint, mi int)""")
PGMISC = [(1, 1.1, 2024, 4294967295, 9223372036854775807, "2024-01-01 05:00:00.5+00", "ab",
           b"\x00", b"ab\x00", -32768, 8388607),
          (2, -3.4e38, 1901, 0, 0, "1970-01-01 00:00:01+00", "", b"", b"\xff\x00\x01", 0,
           -1),
          (3, None, None, None, None, None, None, None, None, None, None)]
pcur.executemany("INSERT INTO misc VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", PGMISC)
code, out, err = sluice("diff", SRC, pg.dsn("shop"), "--table", "misc", "--no-progress")
t.ok(code == 0 and "identical" in out,
     "float = real, year/unsigned = integers (bigint unsigned = numeric(20,0)), TIMESTAMP (written at +05:00, server at +03:00) "
     "= timestamptz, char(5) 'ab' = varchar 'ab', binary(3) 'ab' = bytea 'ab\\0'",
     f"exit {code}\n{out}\n{err}")
pcur.execute("UPDATE misc SET ts = ts + interval '1 microsecond', fl = 1.1000001 WHERE id = 1")
code, doc, err = sluice_json("diff", SRC, pg.dsn("shop"), "--table", "misc")
got = keys_as_text(divergence_set(doc)) if doc else None
t.ok(code == 1 and got == {("changed", ("1",), ("fl", "ts"))},
     "a microsecond of a TIMESTAMP and the last digit of a float are seen",
     f"exit {code}\n{got}\n{err}")
c2.cursor().execute("UPDATE misc SET ub = 9223372036854775808 WHERE id = 2")
code, doc, err = sluice_json("diff", SRC, pg.dsn("shop"), "--table", "misc")
got = keys_as_text(divergence_set(doc)) if doc else None
t.ok(code == 1 and got == {("changed", ("1",), ("fl", "ts")), ("changed", ("2",), ("ub",))},
     "an unsigned BIGINT of 2^63 is compared (a numeric): changed against 0",
     f"exit {code}\n{got}\n{err}")

# ---- errors ----------------------------------------------------------------------
WRONG = "Wr0ng-pw-zz9"
code, out, err = sluice("diff", my.dsn("shop", password=WRONG), pg.dsn("shop"), "--table",
                        "items", "--no-progress")
lines = err.strip().splitlines()
t.ok(code == 2 and len(lines) == 1 and "Access denied" in err,
     "a wrong password: exit 2, one line saying access was denied", f"exit {code}\n{err}")
t.ok(WRONG not in out + err and my.PASSWORD not in out + err and pg.PASSWORD not in out + err,
     "the error shows no password", err)
code, doc, err = sluice_json("diff", my.dsn("shop", password=WRONG), pg.dsn("shop"), "--table",
                             "items")
t.ok(code == 2 and WRONG not in err, "a wrong password, JSON report: exit 2, no password", err)
code, out, err = sluice("diff", SRC, pg.dsn("shop"), "--table", "nope", "--no-progress")
t.ok(code == 2 and 'table "nope" does not exist' in err and len(err.strip().splitlines()) == 1,
     "a missing table: exit 2, one line", f"exit {code}\n{err}")
code, out, err = sluice("diff", my.dsn("nodb"), pg.dsn("shop"), "--table", "items",
                        "--no-progress")
t.ok(code == 2 and "nodb" in err and my.PASSWORD not in err,
     "a missing database: exit 2, named, no password", f"exit {code}\n{err}")
code, out, err = sluice("diff", f"mysql://{my.USER}@127.0.0.1:{my.port}/shop", my.dsn("shop2"),
                        "--table", "items", "--no-progress", env={"MYSQL_PWD": my.PASSWORD})
t.ok(code == 1 and "changed" in out.lower(), "a DSN without password takes MYSQL_PWD",
     f"exit {code}\n{out}\n{err}")

# option files: the [client] group of ~/.my.cnf, as the mysql client reads it
home = tempfile.mkdtemp(prefix="sluice-my-home-")


def my_cnf(text):
    path = os.path.join(home, ".my.cnf")
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


my_cnf(f"[client]\npassword={my.PASSWORD}\n")
code, out, err = sluice("diff", f"mysql://{my.USER}@127.0.0.1:{my.port}/shop", my.dsn("shop2"),
                        "--table", "items", "--no-progress", env={"HOME": home})
t.ok(code == 1 and "changed" in out.lower(),
     "a DSN without password takes it from ~/.my.cnf [client]", f"exit {code}\n{out}\n{err}")
my_cnf(f"[client]\nuser={my.USER}\npassword=\"{my.PASSWORD}\"\n")
code, out, err = sluice("diff", f"mysql://127.0.0.1:{my.port}/shop", my.dsn("shop2"),
                        "--table", "items", "--no-progress", env={"HOME": home})
t.ok(code == 1 and "changed" in out.lower(),
     "a DSN without user and password takes both from ~/.my.cnf", f"exit {code}\n{out}\n{err}")
code, out, err = sluice("diff", f"mysql://127.0.0.1:{my.port}/shop", my.dsn("shop2"), "--table",
                        "items", "--where", f"id = ) '{my.PASSWORD}'", "--no-progress",
                        env={"HOME": home})
t.ok(code == 2 and "syntax" in err and my.PASSWORD not in out + err,
     "a server error quoting ~/.my.cnf's password (in a bad --where) shows no password",
     f"exit {code}\n{err}")
CNF_WRONG = "Cnf-wr0ng-pw-77"
my_cnf(f"[mysqld]\npassword={my.PASSWORD}\n[client]\npassword={CNF_WRONG}\n")
code, out, err = sluice("diff", f"mysql://{my.USER}@127.0.0.1:{my.port}/shop", my.dsn("shop2"),
                        "--table", "items", "--no-progress", env={"HOME": home})
t.ok(code == 2 and "Access denied" in err and CNF_WRONG not in out + err and
     my.PASSWORD not in out + err and len(err.strip().splitlines()) == 1,
     "a wrong password in ~/.my.cnf (another group's ignored): exit 2, one line, no password",
     f"exit {code}\n{err}")
code, out, err = sluice("diff", f"mysql://{my.USER}:{my.PASSWORD}@127.0.0.1:{my.port}/shop",
                        my.dsn("shop2"), "--table", "items", "--no-progress", env={"HOME": home})
t.ok(code == 1 and "changed" in out.lower(), "the DSN's password wins over ~/.my.cnf's",
     f"exit {code}\n{out}\n{err}")
code, out, err = sluice("diff", f"mysql://{my.USER}:{my.PASSWORD}@127.0.0.1:{my.port}/shop?x=1",
                        my.dsn("shop2"), "--table", "items", "--no-progress")
t.ok(code == 2 and "'?'" in err and my.PASSWORD not in err,
     "options after ? are refused in one line without the password", f"exit {code}\n{err}")

for bad, why in [(f"mysql://{my.USER}:{my.PASSWORD}@127.0.0.1:{my.port}", "no database"),
                 (f"mysql://{my.USER}:{my.PASSWORD}@127.0.0.1:99999/shop", "port"),
                 (f"mariadb://{my.USER}:{my.PASSWORD}@127.0.0.1:x1/shop", "port"),
                 (f"mysql://{my.USER}:{my.PASSWORD}@[::1/shop", "']'")]:
    code, out, err = sluice("diff", bad, my.dsn("shop2"), "--table", "items", "--no-progress")
    t.ok(code == 2 and why in err and my.PASSWORD not in err and len(err.strip().splitlines()) == 1,
         f"a malformed DSN ({why}): exit 2, one line, no password", f"exit {code}\n{err}")
code, out, err = sluice("diff", f"mariadb://{my.USER}:{my.PASSWORD}@[::1]:{my.port}/shop",
                        my.dsn("shop2"), "--table", "items", "--no-progress")
t.ok(code == 2 and "cannot connect to MySQL at ::1" in err and my.PASSWORD not in err,
     "mariadb:// with an IPv6 host (the server listens on 127.0.0.1 only): refused, no password",
     f"exit {code}\n{err}")

c.cursor().execute("CREATE TABLE odd (id int PRIMARY KEY, e bit(8), tm time, n int)")
c.cursor().execute("INSERT INTO odd VALUES (1, b'1', '10:00:00', 5)")
m2c = my.connect("shop2")
m2c.cursor().execute("CREATE TABLE odd (id int PRIMARY KEY, e bit(8), tm time, n int)")
m2c.cursor().execute("INSERT INTO odd VALUES (1, b'10', '11:00:00', 5)")
code, out, err = sluice("diff", SRC, my.dsn("shop2"), "--table", "odd", "--no-progress")
t.ok(code == 2 and '"e"' in err and "BIT" in err and len(err.strip().splitlines()) == 1,
     "a BIT column is refused, naming the column and its type", f"exit {code}\n{err}")
code, out, err = sluice("diff", SRC, my.dsn("shop2"), "--table", "odd", "--exclude-columns",
                        "e,tm", "--no-progress")
t.ok(code == 0 and "identical" in out, "with the BIT and TIME columns excluded: identical",
     f"exit {code}\n{out}\n{err}")
c.cursor().execute("CREATE TABLE zd (id int PRIMARY KEY, d date)")
c.cursor().execute("INSERT INTO zd VALUES (1, '0000-00-00')")
m2c.cursor().execute("CREATE TABLE zd (id int PRIMARY KEY, d date)")
m2c.cursor().execute("INSERT INTO zd VALUES (1, '0000-00-00')")
code, out, err = sluice("diff", SRC, my.dsn("shop2"), "--table", "zd", "--no-progress")
t.ok(code == 2 and "zero date" in err and '"d"' in err,
     "a zero date is refused, naming the column", f"exit {code}\n{err}")

# a table locked by another session: the read deadline, then one line saying so
import time  # noqa: E402

lockc = my.connect("shop")
lockc.cursor().execute("LOCK TABLES flags WRITE")
t0 = time.time()
code, out, err = sluice("diff", SRC, pg.dsn("shop"), "--table", "flags", "--read-timeout", "2",
                        "--no-progress")
took = time.time() - t0
lockc.cursor().execute("UNLOCK TABLES")
t.ok(code == 2 and "no data from the server for 2 s" in err and took < 20,
     f"a locked table: exit 2 after the 2 s read deadline ({took:.1f} s), saying so",
     f"exit {code}\n{err}")

# ---- a cluster worker reading a mysql:// database ---------------------------------
from cluster import Cluster  # noqa: E402

cl = Cluster({"source": my.dsn("shop"), "target": pg.dsn("shop")})
cl.start_coordinator()
cl.start_worker(slots=2)
t.ok(cl.wait_workers(1), "a worker with --db source=mysql://... registered")
code, out, err = cl.client("submit", "source", "target", "--table", "items", "--wait",
                           "--format", "json", "--no-progress")
import json  # noqa: E402

try:
    doc = json.loads(out)
except ValueError:
    doc = None
got = keys_as_text(divergence_set(doc)) if doc else None
want = WANT
t.ok(code == 1 and got == want, "cluster job MariaDB vs PostgreSQL finds the same divergences",
     f"exit {code}\ngot {got}\nwant {want}\n{err}")

# the source's table locked for 5 s, more than twice the heartbeat timeout
# (2 s): the worker waits on the server in slices and keeps its heartbeats
import threading  # noqa: E402

lockc = my.connect("shop")
lockc.cursor().execute("LOCK TABLES items WRITE")
threading.Timer(5.0, lambda: lockc.cursor().execute("UNLOCK TABLES")).start()
t0 = time.time()
code, out, err = cl.client("submit", "source", "target", "--table", "items", "--wait",
                           "--format", "json", "--no-progress")
took = time.time() - t0
try:
    doc = json.loads(out)
except ValueError:
    doc = None
got = keys_as_text(divergence_set(doc)) if doc else None
wcode, wout, _ = cl.client("workers")
t.ok(code == 1 and got == WANT and took >= 4.5 and " lost " not in wout,
     f"a 5 s lock on the source: the job waits it out ({took:.1f} s), its worker never lost",
     f"exit {code}\ngot {got}\n{err}\n{wout}")
cl.stop()

# a text key on a table big enough (150,000 rows) that split keys come from a
# row sample (RAND with a fixed seed) rather than an OFFSET walk per split key
mc = my.connect("shop")
mc.autocommit(True)
mcur = mc.cursor()
mcur.execute("SET SESSION sql_mode = 'ANSI_QUOTES'")
mcur.execute("CREATE TABLE bigk (k varchar(40) PRIMARY KEY, i int) CHARACTER SET utf8mb4")
mcur.execute("INSERT INTO bigk SELECT md5(seq), seq FROM seq_1_to_150000")
pcur.execute("CREATE TABLE bigk (k varchar(40) PRIMARY KEY, i int)")
pcur.execute("INSERT INTO bigk SELECT md5(g::text), g FROM generate_series(1, 150000) g")
pcur.execute("UPDATE bigk SET i = -1 WHERE i = 77777")
k77 = hashlib.md5(b"77777").hexdigest()
mcur.execute("SET GLOBAL log_output = 'TABLE'")
mcur.execute("SET GLOBAL general_log = 1")
code, doc, err = sluice_json("diff", SRC, pg.dsn("shop"), "--table", "bigk", "--ranges", "6")
mcur.execute("SET GLOBAL general_log = 0")
got = keys_as_text(divergence_set(doc)) if doc else None
t.ok(code == 1 and got == {("changed", (k77,), ("i",))} and doc["summary"]["ranges"] == 6 and
     doc["source"]["rows"] == 150000,
     "150,000 text keys on MariaDB split from a row sample: the one change, in the 6 ranges asked",
     f"exit {code}\ngot {got}\n{doc and doc['summary']}\n{err[-500:]}")
mcur.execute("SELECT CAST(argument AS CHAR) FROM mysql.general_log WHERE "
             "CAST(argument AS CHAR) LIKE '%bigk%'")
logged = [r[0] for r in mcur.fetchall()]
t.ok(any("RAND(0) * 100 <" in x for x in logged) and
     not any("LIMIT 1 OFFSET" in x for x in logged),
     "the split keys came from the sample, not from an OFFSET per split key",
     [x[:160] for x in logged][:6])

# live re-checks against MariaDB: a row fixed on the target while the diff
# waits its settle time is transient; one that stays different is confirmed
mcur.execute("CREATE TABLE live (id int PRIMARY KEY, v int)")
mcur.execute("INSERT INTO live SELECT seq, seq FROM seq_1_to_2000")
pcur.execute("CREATE TABLE live (id int PRIMARY KEY, v int)")
pcur.execute("INSERT INTO live SELECT g, g FROM generate_series(1, 2000) g")
pcur.execute("UPDATE live SET v = -v WHERE id IN (5, 1500)")


def fix_later():
    time.sleep(1.5)
    c3 = pg.connect("shop")
    c3.autocommit = True
    c3.cursor().execute("UPDATE live SET v = 5 WHERE id = 5")
    c3.close()


fx = threading.Thread(target=fix_later)
fx.start()
code, doc, err = sluice_json("diff", SRC, pg.dsn("shop"), "--table", "live", "--rechecks", "2",
                             "--settle", "2")
fx.join()
st = {(tuple(d["key"].values()), d.get("status")) for d in (doc or {}).get("divergences", [])}
t.ok(code == 1 and st == {(("1500",), "confirmed"), (("5",), "transient")},
     "re-checks against MariaDB: the row fixed meanwhile is transient, the other confirmed",
     f"exit {code} {st} {err[-300:]}")
t.done()
