#!/usr/bin/python3
"""Adversarial checks of the quick-answer options (issue 15), each answer
compared with an oracle (the same diff without the option):

--chunk-time on keys whose order is easy to get wrong (text under a non-C
collation, composite, bytea, uuid, bigint at its ends, negative and sparse
keys), with --where, --keys-only, --rechecks, tiny tables, SQLite and
MariaDB; on a cluster whose coordinator is killed twice mid-job; against a
worker lying in its bounded split replies (the range stays whole).
--max-divergences N across a coordinator restart: N reported, not more.
--max-replica-lag: a standby cut off from its primary pauses the job (and
no split reads the source meanwhile); a standby restarted while its
primary is idle does not."""
import json
import os
import sqlite3
import subprocess
import sys
import threading
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Cluster  # noqa: E402
from harness import (SAN_ENV, SLUICE, MariaDbServer, PgServer, PgStandby, Tap,  # noqa: E402
                     free_port, sluice, sluice_json)
from wire import decode, encode, int_key  # noqa: E402

t = Tap()
pg = PgServer()
pg.createdb("src")
pg.createdb("dst")
src, dst = pg.dsn("src"), pg.dsn("dst")
THROTTLE = ["--ranges", "2", "--max-rows-per-second", "20000", "--workers", "2"]


def answer(doc):
    divs = sorted(json.dumps([d["kind"], d["key"],
                              sorted(c["column"] for c in d.get("columns", []))])
                  for d in doc["divergences"])
    sm = doc["summary"]
    counts = {k: sm.get(k) for k in ("changed", "missing_in_target", "extra_in_target")}
    counts["rows"] = (doc["source"]["rows"], doc["target"]["rows"])
    return divs, counts


def same_as_oracle(name, table, *extra, a=src, b=dst, oracle_extra=()):
    code, ref, err = sluice_json("diff", a, b, "--table", table, *extra, *oracle_extra)
    code2, doc, err2 = sluice_json("diff", a, b, "--table", table, *extra, *THROTTLE,
                                   "--chunk-time", "0.02")
    ok = ref is not None and doc is not None and code == code2 and answer(ref) == answer(doc)
    t.ok(ok and doc["summary"]["ranges"] > 2,
         f"--chunk-time, {name}: the oracle's answer ({ref and len(ref['divergences'])} "
         f"divergences), split into {doc and doc['summary']['ranges']} ranges",
         f"exit {code}/{code2}\n{err}\n{err2}\n"
         f"{ref and answer(ref)[1]}\n{doc and answer(doc)[1]}")
    return ref, doc


def both(sql_all, sql_dst=(), params=None):
    for db in ("src", "dst"):
        c = pg.connect(db)
        cur = c.cursor()
        for s in sql_all:
            cur.execute(s)
        if db == "dst":
            for s in sql_dst:
                cur.execute(s)
        c.commit()
        c.close()


# text keys under a non-C collation: ICU orders 'a' < 'B' < 'b', C orders by bytes
both(["CREATE TABLE tx (k text COLLATE \"und-x-icu\" PRIMARY KEY, v int)",
      "INSERT INTO tx SELECT w || g, g FROM generate_series(1, 400) g, "
      "unnest(ARRAY['a','B','b','É','e','é','z','Z',' ','-','_','ä','ß','€','😀',"
      "'a b','ab','A','', '\\']) w"],
     ["UPDATE tx SET v = -v WHERE v % 37 = 0", "DELETE FROM tx WHERE v % 101 = 0",
      "INSERT INTO tx VALUES ('zzz-extra', 1), ('É-extra', 2)"])
same_as_oracle("text keys under an ICU collation", "tx")
same_as_oracle("text keys, --where", "tx", "--where", "v % 3 <> 0")

# composite key (int, text)
both(["CREATE TABLE tc (a int, b text, v int, PRIMARY KEY (a, b))",
      "INSERT INTO tc SELECT g % 7 - 3, 'x' || g, g FROM generate_series(1, 6000) g"],
     ["UPDATE tc SET v = 0 WHERE v % 53 = 0", "DELETE FROM tc WHERE v % 211 = 0"])
same_as_oracle("composite (int, text) key", "tc")

# bytea and uuid keys
both(["CREATE TABLE tb (k bytea PRIMARY KEY, v int)",
      "INSERT INTO tb SELECT decode(lpad(to_hex(g * 2654435761 % 4294967296), 8, '0'), 'hex') "
      "|| CASE WHEN g % 3 = 0 THEN '\\x00'::bytea WHEN g % 3 = 1 THEN '\\xff'::bytea "
      "ELSE ''::bytea END, g FROM generate_series(1, 6000) g",
      "CREATE TABLE tu (k uuid PRIMARY KEY, v int)",
      "INSERT INTO tu SELECT md5(g::text)::uuid, g FROM generate_series(1, 6000) g"],
     ["UPDATE tb SET v = 0 WHERE v % 53 = 0", "DELETE FROM tb WHERE v % 211 = 0",
      "UPDATE tu SET v = 0 WHERE v % 53 = 0", "DELETE FROM tu WHERE v % 211 = 0"])
same_as_oracle("bytea key", "tb")
same_as_oracle("uuid key", "tu")

# bigint keys at both ends of the type, negative, and sparse
both(["CREATE TABLE ti (k bigint PRIMARY KEY, v int)",
      "INSERT INTO ti SELECT (-9223372036854775807)::bigint - 1 + g, g "
      "FROM generate_series(0, 1999) g",
      "INSERT INTO ti SELECT 9223372036854775807::bigint - g, g FROM generate_series(0, 1999) g",
      "INSERT INTO ti SELECT g - 1000, g FROM generate_series(0, 1999) g",
      "CREATE TABLE tsp (k bigint PRIMARY KEY, v int)",
      "INSERT INTO tsp SELECT g, g FROM generate_series(1, 3000) g",
      "INSERT INTO tsp SELECT 1000000000000000::bigint + g * 1000000000::bigint, g "
      "FROM generate_series(1, 3000) g"],
     ["UPDATE ti SET v = -1 WHERE v % 41 = 0", "DELETE FROM ti WHERE v % 199 = 0",
      "DELETE FROM ti WHERE k IN ((-9223372036854775807)::bigint - 1, 9223372036854775807)",
      "UPDATE tsp SET v = -1 WHERE v % 41 = 0", "DELETE FROM tsp WHERE v % 199 = 0"])
same_as_oracle("bigint keys at INT64 min/max and negative", "ti")
same_as_oracle("sparse bigint keys", "tsp")
same_as_oracle("bigint keys, --where", "ti", "--where", "k > -5 OR v % 2 = 0")
same_as_oracle("bigint keys, --keys-only", "ti", "--keys-only")
same_as_oracle("bigint keys, --rechecks", "ti", "--rechecks", "1", "--settle", "0.05")

# tiny tables: no rows, one row, a few rows (a split has nothing to cut)
for n in (0, 1, 3, 5, 9, 20):
    both([f"CREATE TABLE tiny{n} (k int PRIMARY KEY, v int)",
          f"INSERT INTO tiny{n} SELECT g, g FROM generate_series(1, {n}) g"],
         [f"UPDATE tiny{n} SET v = 0 WHERE k = 1"])
    code, ref, err = sluice_json("diff", src, dst, "--table", f"tiny{n}", "--allow-empty")
    code2, doc, err2 = sluice_json("diff", src, dst, "--table", f"tiny{n}", "--allow-empty",
                                   "--ranges", "1",
                                   "--max-rows-per-second", "50", "--chunk-time", "0.01")
    t.ok(ref and doc and code == code2 and answer(ref) == answer(doc),
         f"--chunk-time, a table of {n} rows: the oracle's answer "
         f"({doc and doc['summary']['ranges']} ranges)", err2)

# SQLite: text keys (a NOCASE column), bigint ends, composite
tmp = tempfile.mkdtemp()
a, b = os.path.join(tmp, "a.db"), os.path.join(tmp, "b.db")
WORDS = ["a", "B", "b", "É", "e", "é", "z", "Z", " ", "-", "_", "ä", "ß", "€", "😀", "ab", "\\"]
for path in (a, b):
    with sqlite3.connect(path) as s:
        s.execute("CREATE TABLE tx (k TEXT PRIMARY KEY, v INTEGER)")
        s.executemany("INSERT INTO tx VALUES (?, ?)",
                      [(f"{w}{g}", g) for g in range(1, 301) for w in WORDS
                       if not (path == b and g % 101 == 0)])
        if path == b:
            s.execute("UPDATE tx SET v = -v WHERE v % 37 = 0")
        s.execute("CREATE TABLE ti (k INTEGER PRIMARY KEY, v INTEGER)")
        keys = ([-2**63 + g for g in range(2000)] + [2**63 - 1 - g for g in range(2000)]
                + [g * 10**12 for g in range(-1000, 1000)])
        s.executemany("INSERT INTO ti VALUES (?, ?)", [(k, k % 1000) for k in keys
                      if not (path == b and k % 199 == 0)])
        if path == b:
            s.execute("UPDATE ti SET v = -1 WHERE k % 41 = 0")
        s.execute("CREATE TABLE tc (a INTEGER, b TEXT, v INTEGER, PRIMARY KEY (a, b))")
        s.executemany("INSERT INTO tc VALUES (?, ?, ?)",
                      [(g % 7 - 3, f"x{g}", g) for g in range(1, 6001)
                       if not (path == b and g % 211 == 0)])
for table in ("tx", "ti", "tc"):
    same_as_oracle(f"SQLite, table {table}", table, a="sqlite:" + a, b="sqlite:" + b)

# MariaDB: a case-insensitive text key, bigint ends, unsigned keys
try:
    my = MariaDbServer()
except RuntimeError as e:
    my = None
    t.diag(f"no MariaDB: {e}")
if my:
    for db in ("src", "dst"):
        my.createdb(db)
        c = my.connect(db)
        cur = c.cursor()
        cur.execute("CREATE TABLE tx (k varchar(40) CHARACTER SET utf8mb4 COLLATE "
                    "utf8mb4_general_ci PRIMARY KEY, v int)")
        rows = [(f"{w}{g}", g) for g in range(1, 301)
                for w in ["a", "B", "É", "z", " ", "-", "_", "ß", "€", "ab", "ö"]
                if not (db == "dst" and g % 101 == 0)]
        cur.executemany("INSERT INTO tx VALUES (%s, %s)", rows)
        cur.execute("CREATE TABLE ti (k bigint PRIMARY KEY, v int)")
        cur.executemany("INSERT INTO ti VALUES (%s, %s)",
                        [(k, k % 1000) for k in keys if not (db == "dst" and k % 199 == 0)])
        cur.execute("CREATE TABLE tl (k varchar(40) CHARACTER SET latin1 PRIMARY KEY, v int)")
        cur.executemany("INSERT INTO tl VALUES (%s, %s)",
                        [(f"{w}{g}", g) for g in range(1, 601) for w in ["a", "B", "é", "Z", "ÿ"]
                         if not (db == "dst" and g % 101 == 0)])
        if db == "dst":
            cur.execute("UPDATE tx SET v = -v WHERE v % 37 = 0")
            cur.execute("UPDATE ti SET v = -1 WHERE k % 41 = 0")
            cur.execute("UPDATE tl SET v = -v WHERE v % 37 = 0")
        c.close()
    for table in ("tx", "ti", "tl"):
        same_as_oracle(f"MariaDB, table {table}", table, a=my.dsn("src"), b=my.dsn("dst"))
    same_as_oracle("MariaDB source, PostgreSQL target, bigint ends", "ti", a=my.dsn("src"))

# ---- a cluster: --max-divergences N across a coordinator restart -----------------------------
both(["CREATE TABLE md (id int PRIMARY KEY, v text)",
      "INSERT INTO md SELECT g, 'v' || g FROM generate_series(1, 20000) g"],
     ["UPDATE md SET v = 'changed' WHERE id % 97 = 7"])
cl = Cluster({"src": src, "dst": dst})
cl.start_coordinator()
cl.start_worker(slots=2)
t.ok(cl.wait_workers(2), "a coordinator and a worker with 2 slots")
job = cl.submit("src", "dst", "--table", "md", "--ranges", "20", "--max-rows-per-second", "3000",
                "--max-divergences", "60", "--keys-only")
before = None
for _ in range(100):
    time.sleep(0.2)
    before = cl.status(job)
    if before and before.get("ranges_done", 0) >= 2:
        break
cl.coordinator.kill()
cl.coordinator.wait()
cl.start_coordinator()
st = cl.wait_state(job, timeout=120)
code, out, err = cl.client("report", str(job), "--format", "json")
doc = json.loads(out) if out.strip() else None
n = doc and len(doc["divergences"])
t.ok(before and before["state"] == "running" and 2 <= before["ranges_done"] < 20
     and st and st["state"] == "done" and n == 60 and doc["summary"]["changed"] == 60
     and doc["summary"]["limit_reached"] == 60 and st["changed"] == 60,
     f"--max-divergences 60, coordinator restarted after {before and before['ranges_done']} "
     f"ranges: {n} reported (those before the restart count toward the limit)",
     f"{before}\n{st}\n{doc and doc['summary']}")
cl.stop()

# ---- a cluster: --chunk-time with --rechecks, the coordinator killed twice mid-job ----------
both(["CREATE TABLE cr (id bigint PRIMARY KEY, v text)",
      "INSERT INTO cr SELECT g * 7919 - 50000000, 'v' || g FROM generate_series(1, 30000) g"],
     ["UPDATE cr SET v = 'changed' WHERE id % 89 = 3", "DELETE FROM cr WHERE id % 1009 = 5",
      "INSERT INTO cr VALUES (-60000000, 'x'), (900000000, 'y')"])
code, ref, err = sluice_json("diff", src, dst, "--table", "cr", "--rechecks", "1", "--settle",
                             "0.1")
cl = Cluster({"src": src, "dst": dst})
cl.start_coordinator()
cl.start_worker(slots=2)
cl.wait_workers(2)
job = cl.submit("src", "dst", "--table", "cr", "--ranges", "3", "--max-rows-per-second", "8000",
                "--chunk-time", "0.2", "--rechecks", "1", "--settle", "0.1")
seen = []
for delay in (2.5, 2.5):
    time.sleep(delay)
    seen.append(cl.status(job))
    cl.coordinator.kill()
    cl.coordinator.wait()
    cl.start_coordinator()
st = cl.wait_state(job, timeout=180)
code2, out, err2 = cl.client("report", str(job), "--format", "json")
doc = json.loads(out) if out.strip() else None
want = answer(ref)[1]
t.ok(st and st["state"] == "done" and doc and answer(doc)[0] == answer(ref)[0]
     and (st["source_rows"], st["target_rows"]) == want["rows"]
     and (st["changed"], st["missing_in_target"], st["extra_in_target"])
     == (want["changed"], want["missing_in_target"], want["extra_in_target"]),
     "--chunk-time --rechecks on a cluster, the coordinator killed twice: the oracle's "
     "divergences and row counts, none counted twice",
     f"{seen}\n{st}\nwant {want}\n{err2[-500:]}")
cl.stop()

# ---- a worker lying in its answer to a bounded split: the range stays whole ------------------
T_SPLIT, T_REPLY = 3, 10


def lie_eq_bound(m, lo, hi):
    if lo[0] != 0:
        m["bounds"].insert(0, lo[1])  # the range's own lower bound: an empty first piece
    elif hi[0] != 0:
        m["bounds"].append(hi[1])  # its upper bound: a piece past its end
    return lo[0] != 0 or hi[0] != 0


def lie_outside(m, lo, hi):
    if hi[0] != 0:
        m["bounds"].append(int_key(10 ** 9))
    elif lo[0] != 0:
        m["bounds"].insert(0, int_key(-10 ** 9))
    return lo[0] != 0 or hi[0] != 0


def lie_not_rising(m, lo, hi):
    b = m["bounds"]
    if len(b) < 2:
        return False
    b[0], b[1] = b[1], b[0]
    return True


def lie_repeat(m, lo, hi):
    b = m["bounds"]
    if len(b) < 2:
        return False
    b[1] = b[0]
    return True


class SplitLiar(threading.Thread):
    """Registers as a worker and relays a real one, lying in every reply to a
    bounded split request (one with "lo"/"hi": --chunk-time)."""

    def __init__(self, cl, lie):
        import zmq
        super().__init__(daemon=True)
        self.lie, self.lies = lie, 0
        self.ctx = zmq.Context()
        self.up = self.ctx.socket(zmq.DEALER)
        self.up.setsockopt(zmq.LINGER, 0)
        self.up.connect(cl.workers_ep)
        self.down = self.ctx.socket(zmq.ROUTER)
        self.down.setsockopt(zmq.LINGER, 0)
        ep = f"tcp://127.0.0.1:{free_port()}"
        self.down.bind(ep)
        self.real = subprocess.Popen(
            [SLUICE, "worker", "--coordinator", ep, "--db-file", cl.dbfile, "--slots", "1",
             "--heartbeat", "0.3"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=cl.env)
        self.asked = {}  # bounded split request id -> (lo, hi)
        self.stop = threading.Event()

    def run(self):
        import zmq
        ident, waiting = None, []
        poller = zmq.Poller()
        poller.register(self.up, zmq.POLLIN)
        poller.register(self.down, zmq.POLLIN)
        while not self.stop.is_set():
            for sock, _ in poller.poll(100):
                if sock is self.down:
                    ident, frame = self.down.recv_multipart()
                    for f in waiting:
                        self.down.send_multipart([ident, f])
                    waiting = []
                    self.up.send(self.tamper(frame))
                else:
                    frame = self.up.recv()
                    try:
                        m = decode(frame)
                        if m.get("t") == T_SPLIT and "lo" in m:
                            self.asked[m["id"]] = (m["lo"], m["hi"])
                    except Exception:
                        pass
                    if ident is None:
                        waiting.append(frame)
                    else:
                        self.down.send_multipart([ident, frame])
        self.up.close()
        self.down.close()
        self.ctx.term()

    def tamper(self, frame):
        if frame[0] != 0:
            return frame
        m = decode(frame)
        if m.get("t") != T_REPLY or m.get("id") not in self.asked:
            return frame
        lo, hi = self.asked.pop(m["id"])
        if not self.lie(m, lo, hi):
            return frame
        self.lies += 1
        return encode(m)

    def close(self):
        self.stop.set()
        self.join(5)
        self.real.kill()
        self.real.wait()


both(["CREATE TABLE lz (id int PRIMARY KEY, v text)",
      "INSERT INTO lz SELECT g, md5(g::text) FROM generate_series(1, 6000) g"],
     ["UPDATE lz SET v = 'changed' WHERE id % 301 = 7", "DELETE FROM lz WHERE id % 997 = 5",
      "INSERT INTO lz VALUES (7001, 'x'), (-3, 'y')"])
code, ref, err = sluice_json("diff", src, dst, "--table", "lz")
for name, lie in (("a bound equal to the range's own bound", lie_eq_bound),
                  ("a bound outside the range", lie_outside),
                  ("bounds not rising", lie_not_rising), ("a bound repeated", lie_repeat)):
    cl = Cluster({"src": src, "dst": dst})
    cl.start_coordinator()
    liar = SplitLiar(cl, lie)
    liar.start()
    up = cl.wait_workers(1)
    code2, out, err2 = cl.client("submit", "src", "dst", "--table", "lz", "--wait", "--no-progress",
                                 "--format", "json", "--ranges", "2", "--max-rows-per-second",
                                 "6000", "--chunk-time", "0.1")
    liar.close()
    cl.stop()
    doc = json.loads(out) if out.strip() else None
    t.ok(up and liar.lies > 0 and code2 == code == 1 and doc and answer(doc) == answer(ref),
         f"a split reply with {name} ({liar.lies} lies): the oracle's answer "
         f"({doc and doc['summary']['ranges']} ranges)", f"exit {code2}\n{err2[-800:]}\n"
         f"{doc and answer(doc)[1]} vs {answer(ref)[1]}\n"
         f"{doc and sorted(set(answer(doc)[0]) ^ set(answer(ref)[0]))[:6]}\n"
         f"{doc and json.dumps(doc['summary'])}")

# ---- --max-replica-lag: a standby cut off from its primary is not "caught up" -----------------
primary = PgServer(extra_opts="-c log_statement=all")
primary.createdb("app")
pc = primary.connect("app")
pc.autocommit = True
pcur = pc.cursor()
pcur.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
pcur.execute("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 2000) g")
standby = PgStandby(primary)
sc = standby.connect("app")
sc.autocommit = True
scur = sc.cursor()
scur.execute("ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=1 user=nobody'")
scur.execute("SELECT pg_reload_conf()")
for _ in range(100):
    scur.execute("SELECT count(*) FROM pg_stat_wal_receiver")
    if scur.fetchone()[0] == 0:
        break
    time.sleep(0.1)
pcur.execute("INSERT INTO t SELECT g, 'w' FROM generate_series(2001, 50000) g")
scur.execute("SELECT pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn(), "
             "(SELECT count(*) FROM t), (SELECT count(*) FROM pg_stat_wal_receiver)")
state = scur.fetchone()
LOG = os.path.join(primary.dir, "log")
mark = os.path.getsize(LOG)
# throttled, with --chunk-time: its ranges would be split before the first read
proc = subprocess.Popen([SLUICE, "diff", primary.dsn("app"), primary.dsn("app"), "--table", "t",
                         "--no-progress", "--max-replica-lag", "1", "--replica",
                         standby.dsn("app"), "--ranges", "2", "--max-rows-per-second", "2000",
                         "--chunk-time", "0.05"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True, env=dict(os.environ, **SAN_ENV))
try:
    out, err = proc.communicate(timeout=6)
except subprocess.TimeoutExpired:
    proc.kill()
    out, err = proc.communicate()
t.ok(state == (True, 2000, 0) and proc.returncode != 0 and "paused: replica" in err
     and "lag unknown" in err and "tables are identical" not in out,
     "--max-replica-lag: a standby cut off from its primary (48000 rows behind, replayed all "
     "it received) pauses the job, its lag unknown",
     f"{state} exit {proc.returncode}\n{out}\n{err}")
time.sleep(0.5)  # the server's log is written asynchronously
with open(LOG, errors="replace") as f:
    f.seek(mark)
    bounded = [x.strip() for x in f if "count(*)" in x and ('"id" >=' in x or '"id" <' in x)]
t.ok(bounded == [], "--max-replica-lag with --chunk-time: no split read (a bounded count) "
     "while paused", "\n".join(bounded[:5]))

# ---- --max-replica-lag: a restarted standby of an idle primary is not behind ------------------
# its receiver starts at the segment's start, below what it replayed from its own pg_wal
standby.stop()
standby2 = PgStandby(primary)
pcur.execute("INSERT INTO t SELECT g, 'z' FROM generate_series(50001, 80000) g")
s2 = standby2.connect("app")
s2.autocommit = True
s2cur = s2.cursor()
pcur.execute("SELECT pg_current_wal_lsn()")
want = pcur.fetchone()[0]
for _ in range(100):
    s2cur.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (want,))
    if s2cur.fetchone()[0]:
        break
    time.sleep(0.1)
s2.close()
standby2.restart()
s2cur = standby2.connect("app").cursor()
behind = None
for _ in range(50):
    s2cur.execute("SELECT pg_last_wal_receive_lsn() < pg_last_wal_replay_lsn(), "
                  "(SELECT count(*) FROM pg_stat_wal_receiver)")
    behind = s2cur.fetchone()
    if behind == (True, 1):
        break
    time.sleep(0.1)
time.sleep(2.5)  # the last commit is older than the limit
code, out, err = sluice("diff", primary.dsn("app"), primary.dsn("app"), "--table", "t",
                        "--no-progress", "--max-replica-lag", "2", "--replica", standby2.dsn("app"))
t.ok(behind == (True, 1) and code == 0 and "paused" not in err,
     "--max-replica-lag: a standby restarted while its primary is idle (its receiver below what "
     "it replayed) is not behind: no pause", f"{behind} exit {code}\n{out}\n{err}")
t.done()
