#!/usr/bin/python3
"""Key columns whose types differ between the two sides. Every pairing is
either answered exactly (checked against what the rows say) or refused with
one line naming the key column and exit 2, whatever the number of ranges:
a key read in one order on one side and another order on the other side
once made rows seem missing on one side and extra on the other."""
import os
import sqlite3
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from harness import PgServer, Tap, sluice_json  # noqa: E402

t = Tap()
pg = PgServer()
db = pg.createdb("keys")
conn = pg.connect(db)
cur = conn.cursor()
tmp = tempfile.mkdtemp()

# The same rows, (key, value), on every side; the target of each pair
# differs by one changed value, one missing and one extra row.
SRC = [(1, "a"), (2, "b"), (9, "c"), (10, "d"), (30, "e"), (100, "f"), (-5, "g")]
TGT = [(1, "a"), (2, "B"), (9, "c"), (10, "d"), (30, "e"), (1000, "h"), (-5, "g")]


def expected(src, tgt):
    s, d = dict(src), dict(tgt)
    out = set()
    for k in s:
        if k not in d:
            out.add(("missing-in-target", str(k)))
        elif s[k] != d[k]:
            out.add(("changed", str(k)))
    for k in d:
        if k not in s:
            out.add(("extra-in-target", str(k)))
    return out


def pg_table(name, keytype, rows):
    cur.execute(f'DROP TABLE IF EXISTS "{name}"')
    cur.execute(f'CREATE TABLE "{name}" (id {keytype} PRIMARY KEY, v text)')
    for k, v in rows:
        cur.execute(f'INSERT INTO "{name}" VALUES (%s, %s)', (str(k), v))
    return pg.dsn(db), name


def sq_table(name, keytype, rows, as_text=False):
    path = os.path.join(tmp, name + ".db")
    if os.path.exists(path):
        os.unlink(path)
    c = sqlite3.connect(path)
    c.execute(f"CREATE TABLE t (id {keytype} PRIMARY KEY, v)")
    for k, v in rows:
        c.execute("INSERT INTO t VALUES (?, ?)", (str(k) if as_text else k, v))
    c.commit()
    c.close()
    return "sqlite:" + path, "t"


def run(name, src, tgt, want_refusal):
    """src/tgt: (dsn, table). Checks every range count."""
    for ranges in (1, 2, 3, 8):
        code, doc, err = sluice_json("diff", src[0], tgt[0], "--table", src[1], "--target-table",
                                     tgt[1], "--ranges", str(ranges))
        lines = [l for l in err.splitlines() if l.strip()]
        if want_refusal:
            ok = code == 2 and len(lines) == 1 and '"id"' in err and "Sanitizer" not in err
            if not t.ok(ok, f"{name}, {ranges} ranges: refused in one line naming the key",
                        f"exit {code}\n{err}\n{doc}"):
                return
            continue
        got = None
        if code in (0, 1) and doc:
            got = {(d["kind"], d["key"]["id"]) for d in doc["divergences"]}
        want = expected(SRC, TGT)
        if not t.ok(code == 1 and got == want, f"{name}, {ranges} ranges: the exact answer",
                    f"exit {code}\nwant {sorted(want)}\ngot  {sorted(got or [])}\n{err}"):
            return
    if want_refusal:
        t.diag("  " + err.strip())


INTS = ["int2", "int4", "int8"]
TEXTS = ["text", "varchar(20)"]

# PostgreSQL against PostgreSQL, every integer/text pairing both ways.
for a in INTS:
    for b in TEXTS:
        run(f"pg {a} vs pg {b}", pg_table("s", a, SRC), pg_table("d", b, TGT), True)
        run(f"pg {b} vs pg {a}", pg_table("s", b, SRC), pg_table("d", a, TGT), True)
# integers of different widths order alike: answered
run("pg int4 vs pg int8", pg_table("s", "int4", SRC), pg_table("d", "int8", TGT), False)
run("pg text vs pg varchar", pg_table("s", "text", SRC), pg_table("d", "varchar(20)", TGT), False)

# SQLite against SQLite (the case) and across engines.
run("sqlite INTEGER vs sqlite TEXT", sq_table("si", "INTEGER", SRC),
    sq_table("dt", "TEXT", TGT, as_text=True), True)
run("sqlite TEXT vs sqlite INTEGER", sq_table("st", "TEXT", SRC, as_text=True),
    sq_table("di", "INTEGER", TGT), True)
run("pg int8 vs sqlite TEXT", pg_table("s", "int8", SRC), sq_table("dt", "TEXT", TGT,
                                                                    as_text=True), True)
run("sqlite TEXT vs pg int4", sq_table("st", "TEXT", SRC, as_text=True),
    pg_table("d", "int4", TGT), True)
run("pg text vs sqlite INTEGER", pg_table("s", "text", SRC), sq_table("di", "INTEGER", TGT), True)
run("pg int8 vs sqlite INTEGER", pg_table("s", "int8", SRC), sq_table("di", "INTEGER", TGT), False)
run("pg text vs sqlite TEXT", pg_table("s", "text", SRC), sq_table("dt", "TEXT", TGT,
                                                                    as_text=True), False)

# A SQLite key column without a declared type keeps whatever it is given:
# integers sort before text there, so '5' stored as text lands after every
# integer. Read as integers its rows fall outside the ranges they are read
# in: the stream guard must refuse, never report 5 missing and extra.
path_a = os.path.join(tmp, "ua.db")
path_b = os.path.join(tmp, "ub.db")
for p, rows in ((path_a, [(1, "a"), (2, "b"), (5, "c"), (50, "d")]),
                (path_b, [(1, "a"), (2, "b"), ("5", "c")])):
    c = sqlite3.connect(p)
    c.execute("CREATE TABLE t (id %s PRIMARY KEY, v)" % ("INTEGER" if p == path_a else ""))
    c.executemany("INSERT INTO t VALUES (?, ?)", rows)
    c.commit()
    c.close()
for ranges in (1, 2, 4, 8):
    code, doc, err = sluice_json("diff", "sqlite:" + path_a, "sqlite:" + path_b, "--table", "t",
                                 "--ranges", str(ranges))
    got = {(d["kind"], d["key"]["id"]) for d in doc["divergences"]} if doc else None
    exact = code == 1 and got == {("missing-in-target", "50")}
    refused = (code == 2 and ("order" in err or "range" in err or "stored as text" in err)
               and len(err.splitlines()) == 1)
    t.ok(exact or refused, f"untyped SQLite key holding '5' as text, {ranges} ranges: exact "
         "or refused", f"exit {code}\n{err}\n{got}")

# The same key stored as text on one side of a changed row: read as an
# integer it matches the ranges, but a fetch by integer key would find no
# such row and call it missing. Refused, or reported changed.
path_c = os.path.join(tmp, "uc.db")
path_d = os.path.join(tmp, "ud.db")
for p, decl, rows in ((path_c, "INTEGER", [(1, "a"), (2, "b"), (5, "c")]),
                      (path_d, "", [(1, "a"), (2, "b"), ("5", "X")])):
    c = sqlite3.connect(p)
    c.execute(f"CREATE TABLE t (id {decl} PRIMARY KEY, v)")
    c.executemany("INSERT INTO t VALUES (?, ?)", rows)
    c.commit()
    c.close()
for ranges in (1, 3):
    code, doc, err = sluice_json("diff", "sqlite:" + path_c, "sqlite:" + path_d, "--table", "t",
                                 "--ranges", str(ranges))
    got = {(d["kind"], d["key"]["id"]) for d in doc["divergences"]} if doc else None
    ok = (code == 1 and got == {("changed", "5")}) or (code == 2 and '"id"' in err)
    t.ok(ok, f"a changed row whose key is stored as text on one side, {ranges} ranges: "
         "reported changed or refused, never missing", f"exit {code}\n{err}\n{got}")
    if code == 2:
        t.diag("  " + err.strip())

# citext orders case-insensitively whatever the collation asked for, so its
# stream is not in byte order: the stream guard must stop the diff.
cur.execute("CREATE EXTENSION IF NOT EXISTS citext")
rows = [("B", "1"), ("a", "2"), ("c", "3"), ("D", "4"), ("e", "5")]
pg_table("cs", "text", rows)
pg_table("ct", "citext", rows[:-1] + [("e", "changed")])
for ranges in (1, 2, 4):
    code, doc, err = sluice_json("diff", pg.dsn(db), pg.dsn(db), "--table", "cs",
                                 "--target-table", "ct", "--ranges", str(ranges))
    got = {(d["kind"], d["key"]["id"]) for d in doc["divergences"]} if doc else None
    ok = (code == 1 and got == {("changed", "e")}) or (code == 2 and "order" in err)
    t.ok(ok, f"text key against a citext key, {ranges} ranges: exact or stopped by the stream "
         "guard", f"exit {code}\n{err}\n{got}")
t.diag("  " + err.strip())
t.done()
