#!/usr/bin/python3
"""Tolerances (--tolerance, --timestamp-precision, --trim-trailing-spaces,
--case-fold) on real PostgreSQL and SQLite: for each option, pairs of values
one step inside and one step outside the tolerance, on both sides of a grid
cell's edge, negative, zero, huge, NaN/Infinity, NULL against a value; the
same answer PostgreSQL -> PostgreSQL and PostgreSQL numeric -> SQLite REAL,
through `sluice diff` and through a coordinator and worker processes
(`sluice submit --wait`, and a schedule). Bad options exit 2 with one line;
a worker refuses a malformed tolerance from the network and keeps serving."""
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time

import msgpack
import zmq

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Cluster  # noqa: E402
from harness import SLUICE, PgServer, Tap, free_port, sluice, sluice_json  # noqa: E402

t = Tap()
pg = PgServer()
db = pg.createdb("tol")
conn = pg.connect(db)
cur = conn.cursor()
tmp = tempfile.mkdtemp()
lite_path = os.path.join(tmp, "t.db")
lite = sqlite3.connect(lite_path)

# (id, source, target, equal under the option, PostgreSQL only)
# amount: --tolerance amount=0.005 (absolute); PostgreSQL numeric -> numeric
# and -> SQLite REAL (the comparison class is numeric either way)
AMOUNT = [
    (1, "10.00", "10.005", True, False),       # on the tolerance: within
    (2, "10.00", "10.0051", False, False),     # one step outside
    (3, "10.00", "10.0049", True, False),
    (4, "0.0049", "0.0051", True, False),      # one cell (cell 1)
    (5, "0.0024", "0.0026", True, False),      # cell edge at 0.0025: neighbours, within
    (6, "-0.0024", "0.0024", True, False),     # the cell at zero, both signs
    (7, "-0.003", "0.003", False, False),      # 0.006 apart across zero
    (8, "-10", "-10.005", True, False),
    (9, "-10", "-10.0051", False, False),
    (10, "0", "0.005", True, False),
    (11, "0", "-0.0051", False, False),
    (12, "1e30", "1000000000000000000000000000000.004", True, True),
    (13, "1e30", "1000000000000000000000000000000.006", False, True),
    (14, "1e20", "100000000000000000000", True, False),
    (15, "1e20", "100000000000000016384", False, False),  # the next double up
    (16, None, "0", False, False),              # NULL is never within
    (17, None, None, True, False),
    (18, "123.45", "123.4500000000001", True, False),
    (19, "99.9975", "100.0025", True, False),   # 0.005 apart across a cell edge
    (20, "99.9975", "100.0026", False, False),
]
# f: --tolerance f=1e-9r (relative); float8 -> float8 and -> REAL
F = [
    (1, "1", "1.0000000005", True, False),
    (2, "1", "1.000000002", False, False),
    (3, "1e300", "1.0000000005e300", True, False),
    (4, "1e300", "1.000000002e300", False, False),
    (5, "-1e-300", "-1.0000000005e-300", True, False),
    (6, "-1e-300", "-1.000000002e-300", False, False),
    (7, "0", "1e-300", False, False),             # only zero is near zero
    (8, "0", "0", True, False),
    (9, "NaN", "NaN", True, True),
    (10, "NaN", "0", False, True),
    (11, "Infinity", "Infinity", True, False),
    (12, "Infinity", "1e308", False, False),
    (13, "-Infinity", "Infinity", False, False),
    (14, "9.999999999", "10.00000000", True, False),  # across a decade, within
    (15, None, "1", False, False),
]
# i: --tolerance integer=1 (a class)
INTS = [(1, "5", "6", True, False), (2, "5", "7", False, False),
        (3, "-9223372036854775808", "-9223372036854775807", True, False),
        (4, "0", "-2", False, False)]
# ts: --timestamp-precision ms (every timestamp column)
TS = [
    (1, "2024-01-01 00:00:00.123456", "2024-01-01 00:00:00.123", True, False),
    (2, "2024-01-01 00:00:00.1235", "2024-01-01 00:00:00.124", True, False),  # a half: up
    (3, "2024-01-01 00:00:00.1235", "2024-01-01 00:00:00.123", False, False),
    (4, "2024-01-01 00:00:00.1234", "2024-01-01 00:00:00.1236", False, False),
    (5, "2024-01-01 23:59:59.9996", "2024-01-02 00:00:00", True, False),  # into the next day
    (6, "1999-12-31 23:59:59.9995", "2000-01-01 00:00:00", False, False),  # away from 2000
    (7, "1999-12-31 23:59:59.9995", "1999-12-31 23:59:59.999", True, False),
    (8, None, "2024-01-01 00:00:00", False, False),
]
# name: --trim-trailing-spaces; other: --case-fold=other
TEXT_TRIM = [(1, "abc  ", "abc", True, False), (2, "abc", " abc", False, False),
             (3, "abc\t", "abc", False, False), (4, "", "   ", True, False),
             (5, None, "", False, False), (6, "abc ", "abd", False, False)]
TEXT_FOLD = [(1, "ABC", "abc", True, False), (2, "\u00c9", "\u00e9", False, False),
             (3, "aBc", "abd", False, False), (4, "Zz", "zZ", True, False)]

TABLES = {
    # table: (PostgreSQL type, SQLite type, rows)
    "amounts": ("numeric", "REAL", AMOUNT),
    "floats": ("float8", "REAL", F),
    "ints": ("bigint", "INTEGER", INTS),
    "stamps": ("timestamp(6)", "TIMESTAMP", TS),
    "trims": ("text", "TEXT", TEXT_TRIM),
    "folds": ("text", "TEXT", TEXT_FOLD),
}


def lite_value(v, sqltype):
    if v is None:
        return None
    if sqltype == "REAL":
        return float(v)
    if sqltype == "INTEGER":
        return int(v)
    return v


for name, (pgtype, ltype, rows) in TABLES.items():
    extra = ", other text" if name == "folds" else ""
    for tb in (name + "_s", name + "_t"):
        cur.execute(f"CREATE TABLE {tb} (id int PRIMARY KEY, v {pgtype}{extra})")
    lite.execute(f"CREATE TABLE {name}_t (id INTEGER PRIMARY KEY, v {ltype}{extra})")
    for (i, a, b, _, pg_only) in rows:
        o = ("X", "x") if name == "folds" else None  # other: folded only with --case-fold=v
        cols = "id, v" + (", other" if o else "")
        ph = "%s, %s" + (", %s" if o else "")
        cur.execute(f"INSERT INTO {name}_s ({cols}) VALUES ({ph})", (i, a) + ((o[0],) if o else ()))
        cur.execute(f"INSERT INTO {name}_t ({cols}) VALUES ({ph})", (i, b) + ((o[1],) if o else ()))
        if not pg_only:
            lite.execute(f"INSERT INTO {name}_t ({cols.replace('%s', '?')}) VALUES "
                         f"({ph.replace('%s', '?')})",
                         (i, lite_value(b, ltype)) + ((o[1],) if o else ()))
lite.commit()

OPTS = {
    "amounts": ["--tolerance", "v=0.005"],
    "floats": ["--tolerance", "v=1e-9r"],
    "ints": ["--tolerance", "integer=1"],
    "stamps": ["--timestamp-precision", "ms"],
    "trims": ["--trim-trailing-spaces"],
    "folds": ["--case-fold=v"],
}


def expected(name, engine):
    rows = TABLES[name][2]
    out = {str(i) for (i, _, _, eq, pg_only) in rows
           if not eq and not (engine == "sqlite" and pg_only)}
    if name == "folds":  # other is not folded: every row differs there
        out = {str(r[0]) for r in rows if not (engine == "sqlite" and r[4])}
    return out


def changed_ids(doc):
    return {d["key"]["id"] for d in doc["divergences"] if d["kind"] == "changed"} \
        if doc else None


def other_kinds(doc, name=None, engine=None):
    """Divergences other than changed, but for the rows SQLite cannot hold
    (NaN, more digits than a double), left out of its table: missing."""
    if not doc:
        return ["no report"]
    gone = {str(r[0]) for r in TABLES[name][2] if r[4]} if engine == "sqlite" else set()
    miss = {d["key"]["id"] for d in doc["divergences"] if d["kind"] == "missing-in-target"}
    if miss != gone:
        return [f"missing {sorted(miss)}, expected {sorted(gone)}"]
    return [d for d in doc["divergences"] if d["kind"] not in ("changed", "missing-in-target")]


targets = {"postgresql": pg.dsn(db), "sqlite": "sqlite:" + lite_path}
for name in TABLES:
    for engine, dsn in targets.items():
        code, doc, err = sluice_json("diff", pg.dsn(db), dsn, "--table", name + "_s",
                                     "--target-table", name + "_t", *OPTS[name])
        want = expected(name, engine)
        got = changed_ids(doc)
        t.ok(code == (1 if want else 0) and got == want and not other_kinds(doc, name, engine),
             f"diff {name} -> {engine} with {' '.join(OPTS[name])}: changed {sorted(want)}",
             f"exit {code}, changed {sorted(got or [])}, others "
             f"{other_kinds(doc, name, engine)}: {err}")
    # without the option every differing pair is reported (the option did it)
    code, doc, err = sluice_json("diff", pg.dsn(db), targets["postgresql"], "--table",
                                 name + "_s", "--target-table", name + "_t")
    same = {"amounts": {"14", "17"}, "floats": {"8", "9", "11"}}.get(name, set())
    exact = {str(r[0]) for r in TABLES[name][2]} - same
    t.ok(changed_ids(doc) == exact, f"diff {name} without a tolerance: every differing pair",
         f"{sorted(changed_ids(doc) or [])} vs {sorted(exact)}")

# the JSON says which tolerances applied; the encoding version stays 2
code, doc, err = sluice_json("diff", pg.dsn(db), targets["sqlite"], "--table", "amounts_s",
                             "--target-table", "amounts_t", "--tolerance", "v=0.005")
t.ok(doc and doc["encoding_version"] == 2 and doc["tolerances"] == ["tolerance:v=0.005"]
     and doc["summary"]["within_tolerance"] >= 1,
     "JSON: encoding_version 2, the rules under tolerances, rows within tolerance counted",
     json.dumps(doc and {k: doc[k] for k in ("encoding_version", "summary")}))
code, out, err = sluice("diff", pg.dsn(db), targets["postgresql"], "--table", "amounts_s",
                        "--target-table", "amounts_t", "--tolerance", "numeric=0.005",
                        "--tolerance", "v=0.0001", "--no-progress", "--format", "json")
doc = json.loads(out) if out.strip() else None
t.ok(code == 1 and changed_ids(doc) == {str(r[0]) for r in AMOUNT} - {"14", "17", "18"},
     "a column's own tolerance wins over its class's (v=0.0001 over numeric=0.005)",
     f"{code} {sorted(changed_ids(doc) or [])}")

# per-column timestamp precision: s on v only
cur.execute("CREATE TABLE two_s (id int PRIMARY KEY, a timestamp, b timestamp)")
cur.execute("CREATE TABLE two_t (id int PRIMARY KEY, a timestamp, b timestamp)")
cur.execute("INSERT INTO two_s VALUES (1, '2024-01-01 12:00:00.4', '2024-01-01 12:00:00.4'),"
            " (2, '2024-01-01 12:00:00.5', '2024-01-01 12:00:00')")
cur.execute("INSERT INTO two_t VALUES (1, '2024-01-01 12:00:00', '2024-01-01 12:00:00.4'),"
            " (2, '2024-01-01 12:00:00', '2024-01-01 12:00:00')")
code, doc, err = sluice_json("diff", pg.dsn(db), pg.dsn(db), "--table", "two_s",
                             "--target-table", "two_t", "--timestamp-precision", "a=s")
t.ok(code == 1 and changed_ids(doc) == {"2"},
     "--timestamp-precision a=s: 12:00:00.4 = 12:00:00, 12:00:00.5 rounds to 12:00:01",
     f"{code} {doc and doc['divergences']} {err}")

# years PostgreSQL has and the timestamp encoding has not (BC, past 9999)
# travel as text; a timestamp(0) copy is still equal under --timestamp-precision s
cur.execute("CREATE TABLE far_s (id int PRIMARY KEY, a timestamp, b timestamptz)")
cur.execute("CREATE TABLE far_t (id int PRIMARY KEY, a timestamp(0), b timestamptz(0))")
cur.execute("SET TIME ZONE 'UTC'")
cur.execute("INSERT INTO far_s VALUES (1, '12000-01-01 00:00:00.4', '12000-01-01 00:00:00.4+00'),"
            " (2, '0044-03-15 12:00:00.4 BC', '0044-03-15 12:00:00.4+00 BC'),"
            " (3, '12000-12-31 23:59:59.5', '0044-03-15 23:59:59.5+00 BC'),"
            " (4, '0001-01-01 00:00:00.5', '9999-12-31 23:59:59.4+00'),"
            " (6, '9999-12-31 23:59:59.5', '0001-12-31 23:59:59.6+00 BC')")
cur.execute("INSERT INTO far_t SELECT * FROM far_s")
cur.execute("INSERT INTO far_s VALUES (5, '12000-01-01 00:00:00.6', '0044-03-15 12:00:00.6+00 BC')")
cur.execute("INSERT INTO far_t VALUES (5, '12000-01-01 00:00:00', '0044-03-15 12:00:00+00 BC')")
code, doc, err = sluice_json("diff", pg.dsn(db), pg.dsn(db), "--table", "far_s",
                             "--target-table", "far_t", "--timestamp-precision", "s")
t.ok(code == 1 and changed_ids(doc) == {"5"} and
     {c["column"] for d in doc["divergences"] for c in d["columns"]} == {"a", "b"},
     "--timestamp-precision s: BC and years past 9999 round as PostgreSQL's timestamp(0)",
     f"{code} {doc and doc['divergences']} {err}")

# bad input: exit 2, one line on stderr
BAD = [
    (["--tolerance", "v"], "no epsilon"),
    (["--tolerance", "v=-0.5"], "greater than 0"),
    (["--tolerance", "v=0"], "greater than 0"),
    (["--tolerance", "nosuch=0.1"], "no compared column or class named \"nosuch\""),
    (["--tolerance", "id=1"], "key column"),
    (["--timestamp-precision", "ns"], "s, ms or us"),
    (["--case-fold=nosuch"], "nosuch"),
    (["--keys-only", "--tolerance", "v=0.005"], "--keys-only cannot apply --tolerance"),
]
for opts, want in BAD:
    code, out, err = sluice("diff", pg.dsn(db), targets["sqlite"], "--table", "amounts_s",
                            "--target-table", "amounts_t", "--no-progress", *opts)
    t.ok(code == 2 and want in err and len(err.strip().splitlines()) == 1,
         f"{' '.join(opts)}: exit 2, one line ({want})", f"exit {code}: {err}")
code, out, err = sluice("diff", pg.dsn(db), targets["sqlite"], "--table", "trims_s",
                        "--target-table", "trims_t", "--no-progress", "--tolerance", "v=0.1")
t.ok(code == 2 and "compared as text" in err and len(err.strip().splitlines()) == 1,
     "a tolerance on a text column: exit 2, one line", f"exit {code}: {err}")
code, out, err = sluice("diff", pg.dsn(db), targets["sqlite"], "--table", "trims_s",
                        "--target-table", "trims_t", "--no-progress", "--keys-only",
                        "--trim-trailing-spaces")
t.ok(code in (0, 1) and not err.strip(),
     "--keys-only with an exact transform (trimming): allowed", f"exit {code}: {err}")

# ---- a cluster: coordinator and worker processes ---------------------------
cl = Cluster({"source": pg.dsn(db), "target": "sqlite:" + lite_path, "pgt": pg.dsn(db)})
cl.start_coordinator()
cl.start_worker(slots=2)
cl.start_worker(slots=2)
t.ok(cl.wait_workers(2), "two worker processes registered")
for name in TABLES:
    for engine, tgt in (("sqlite", "target"), ("postgresql", "pgt")):
        code, out, err = cl.client("submit", "source", tgt, "--table", name + "_s",
                                   "--target-table", name + "_t", "--wait", "--format", "json",
                                   "--no-progress", *OPTS[name])
        doc = json.loads(out) if out.strip().startswith("{") else None
        want = expected(name, engine)
        t.ok(code == (1 if want else 0) and changed_ids(doc) == want and
             not other_kinds(doc, name, engine),
             f"submit {name} -> {engine} with {' '.join(OPTS[name])}: changed {sorted(want)}",
             f"exit {code}, changed {sorted(changed_ids(doc) or [])}: {err}")
code, out, err = cl.client("submit", "source", "target", "--table", "amounts_s",
                           "--target-table", "amounts_t", "--wait", "--no-progress",
                           "--tolerance", "v=0.5r", "--tolerance", "nosuch=1")
t.ok(code == 2 and "nosuch" in err, "submit: an unknown column fails the job, exit 2",
     f"{code} {err}")
code, out, err = cl.client("submit", "source", "target", "--table", "amounts_s",
                           "--target-table", "amounts_t", "--tolerance", "v")
t.ok(code == 2 and "no epsilon" in err, "submit: --tolerance without epsilon, exit 2", err)

# a submit frame with a malformed rule is refused by the coordinator
ctx = zmq.Context()
s = ctx.socket(zmq.DEALER)
s.setsockopt(zmq.LINGER, 0)
s.connect(cl.clients_ep)
s.send(b"\x00" + msgpack.packb({"v": 1, "t": 13, "id": 7, "source": "source",
                                "target": "target", "table": "amounts_s",
                                "tolerances": ["tolerance:v=-1"]}, use_bin_type=True))
rep = msgpack.unpackb(s.recv()[1:], raw=False) if s.poll(10000) else {}
t.ok(rep.get("t") == 11 and rep.get("code") == "invalid" and "greater than 0" in rep.get("error", ""),
     "a submit with a malformed tolerance rule is answered invalid", str(rep))
s.close()

# a schedule stores the submit spec, tolerances included
code, out, err = cl.client("schedule", "add", "tolaudit", "--every", "1", "source", "target",
                           "--table", "amounts_s", "--target-table", "amounts_t",
                           "--tolerance", "v=0.005")
t.ok(code == 0, "schedule add with --tolerance", err)
job = None
end = time.time() + 60
while time.time() < end and job is None:
    code, out, err = cl.client("schedule", "ls", "--format", "json")
    try:
        for sc in json.loads(out):
            if sc.get("name") == "tolaudit" and sc.get("last_job"):
                job = sc["last_job"]
    except ValueError:
        pass
    time.sleep(0.3)
st = cl.wait_state(job, timeout=60) if job else None
want = expected("amounts", "sqlite")
t.ok(st and st["state"] == "done" and st.get("changed") == len(want),
     f"the scheduled job applies the tolerance: {len(want)} changed", f"{job} {st} {out}")
cl.client("schedule", "rm", "tolaudit")

# ---- a worker refuses a malformed tolerance from the network ----------------
ep = f"tcp://127.0.0.1:{free_port()}"
router = ctx.socket(zmq.ROUTER)
router.setsockopt(zmq.LINGER, 0)
router.bind(ep)
wp = subprocess.Popen([SLUICE, "worker", "--coordinator", ep, "--db-file", cl.dbfile,
                       "--slots", "1", "--heartbeat", "0.3"], stdout=subprocess.DEVNULL,
                      stderr=subprocess.PIPE, env=cl.env)
ident = None
if router.poll(20000):
    ident, _ = router.recv_multipart()


def ask(rid, tol):
    m = {"v": 1, "t": 6, "id": rid, "db": "source", "table": "amounts_s", "cols": ["id", "v"],
         "cls": [1, 2], "nkey": 1, "where": None, "flags": 0, "lo": [0, None],
         "hi": [0, None], "tol": tol}
    router.send_multipart([ident, b"\x00" + msgpack.packb(m, use_bin_type=True)])
    end = time.time() + 20
    while time.time() < end:
        if not router.poll(1000):
            continue
        _, f = router.recv_multipart()
        r = msgpack.unpackb(f[1:], raw=False)
        if r.get("id") == rid:
            return r
    return {}


HOSTILE = [
    ("a key column", [[0, 1, 5, -3, 0, 6]]),
    ("a column out of range", [[2, 1, 5, -3, 0, 6]]),
    ("a zero epsilon", [[1, 1, 0, -3, 0, 6]]),
    ("an epsilon of 18 digits", [[1, 1, 10 ** 17, -3, 0, 6]]),
    ("an unknown kind", [[1, 7, 5, -3, 0, 6]]),
    ("a text setting on a number", [[1, 0, 0, 0, 2, 6]]),
    ("a timestamp precision on a number", [[1, 0, 0, 0, 0, 3]]),
    ("not a list", "tolerance"),
    ("a short entry", [[1, 1]]),
    ("a huge exponent", [[1, 1, 5, 2 ** 40, 0, 6]]),
]
for k, (what, tol) in enumerate(HOSTILE):
    r = ask(100 + k, tol) if ident else {}
    t.ok(r.get("t") == 11 and r.get("code") == "invalid" and "malformed" in r.get("error", ""),
         f"worker: a tolerance with {what} is refused (invalid)", str(r))
r = ask(200, [[1, 1, 5, -3, 0, 6]]) if ident else {}
t.ok(r.get("t") == 10 and len(r.get("rows", [])) == len(AMOUNT),
     "worker: still serving; a well-formed tolerance is taken", str(r)[:300])
r2 = ask(201, None) if ident else {}
hashes = {bytes(x[0]): bytes(x[1]) for x in r.get("rows", [])}
hashes2 = {bytes(x[0]): bytes(x[1]) for x in r2.get("rows", [])}
t.ok(hashes and hashes2 and hashes != hashes2,
     "worker: tolerant row hashes differ from exact ones (grid cells hashed)")
wp.terminate()
try:
    werr = wp.communicate(timeout=10)[1].decode(errors="replace")
except subprocess.TimeoutExpired:
    wp.kill()
    werr = ""
t.ok(wp.returncode in (0, -15) and "Sanitizer" not in werr and "runtime error" not in werr,
     "worker: no crash, no sanitizer report", werr[-2000:])
router.close()
ctx.term()
cl.stop()
t.ok(not cl.sanitizer_reports(), "no sanitizer report in the cluster",
     "\n".join(cl.sanitizer_reports()))

# a schedule file takes "tolerances" as a submit does (it was ignored: every
# row within tolerance came back changed), and refuses a bad rule
cl2 = Cluster({"source": pg.dsn(db), "target": "sqlite:" + lite_path})
sched = os.path.join(cl2.dir, "audits.json")
audit = {"name": "tolfile", "every": "1h", "source": "source", "target": "target",
         "table": "amounts_s", "target_table": "amounts_t"}
with open(sched, "w") as f:
    json.dump({"audits": [dict(audit, tolerances=["tolerance:v=-1"])]}, f)
try:  # refused at start; a coordinator that starts is stopped, and fails the check
    r = subprocess.run([SLUICE, "coordinator", "--schedule", sched, "--state",
                        "sqlite:" + os.path.join(cl2.dir, "x.db"), "--workers-endpoint",
                        f"tcp://127.0.0.1:{free_port()}", "--clients-endpoint",
                        f"tcp://127.0.0.1:{free_port()}", "--events-endpoint",
                        f"tcp://127.0.0.1:{free_port()}"],
                       capture_output=True, text=True, env=cl2.env, timeout=20)
    code, err = r.returncode, r.stderr
except subprocess.TimeoutExpired:
    code, err = None, "still running after 20 s"
t.ok(code == 2 and "greater than 0" in err, "a schedule file with a bad tolerance: exit 2",
     f"{code} {err}")
with open(sched, "w") as f:
    json.dump({"audits": [dict(audit, tolerances=["tolerance:v=0.005"])]}, f)
cl2.start_coordinator(extra=["--schedule", sched])
cl2.start_worker(slots=2)
drift = []
end = time.time() + 60
while time.time() < end and not drift:
    time.sleep(0.5)
    try:
        con = sqlite3.connect(cl2.state)
        drift = con.execute("SELECT changed, missing FROM drift WHERE tbl = 'amounts_s'").fetchall()
        con.close()
    except sqlite3.Error:
        pass
t.ok(drift and drift[0][0] == len(expected("amounts", "sqlite")),
     f"a schedule file's tolerances apply: {len(expected('amounts', 'sqlite'))} changed",
     str(drift))
cl2.stop()
t.ok(not cl2.sanitizer_reports(), "no sanitizer report (schedule file)",
     "\n".join(cl2.sanitizer_reports()))
t.done()
