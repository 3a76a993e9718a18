#!/usr/bin/python3
"""Workers lying in their merge replies (message type 26, coordinator/co_merge.c).

A relay registers with a coordinator as a worker, passes a real `sluice
worker` behind it through, and tampers with its replies to merge requests:
keys outside the span, keys not rising, "through" missing or outside the
span, a row's sides of different forms, sides listing other columns, a
nil value, the key column listed, a changed row fabricated with equal
values, "more" with no progress, row counts
below the rows listed or negative, an error reply. An honest worker joins
once the relay was asked its first merge, so the job can finish after the
liar is dropped. Each job's answer (divergences with their values, counts,
rows) is compared with an oracle: `sluice diff` of the same tables without
any liar. A lie the coordinator cannot see (a divergence left out of both
lists) is skipped. One honest run: two real workers, every row differing,
the oracle's answer through merge tasks (merged_ranges > 0)."""
import json
import os
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Cluster  # noqa: E402
from harness import SLUICE, PgServer, Tap, free_port, sluice_json  # noqa: E402
from wire import decode, encode, int_key, key_int  # noqa: E402
import zmq  # noqa: E402

T_HELLO, T_TREE, T_REPLY, T_ERROR, T_HEARTBEAT, T_MERGE = 1, 4, 10, 11, 12, 26
MK_UNBOUNDED, MK_INCL, MK_EXCL = 0, 1, 2
N = 18000  # source rows (ids 2, 4, ...): 4 ranges of 4,500, each long enough to be judged dense
RANGES = "4"
RUN_TIMEOUT = 120  # a job that takes longer hangs
# the relay holds its replies to tree requests of ranges past the first this long, so that
# the first range is compared (judged dense) before every range has its trees: the ranges
# left pending go to merge tasks
TREE_DELAY = 0.25

t = Tap()


def todo(cond, name, reason, diag=None):
    """A TAP test marked TODO: a known bug, reported, not failing the file."""
    t.n += 1
    print(f"{'' if cond else 'not '}ok {t.n} - {name} # TODO {reason}", flush=True)
    if not cond and diag:
        for line in str(diag).splitlines()[:30]:
            print(f"#   {line}", flush=True)


def skip(name, reason):
    t.n += 1
    print(f"ok {t.n} - {name} # SKIP {reason}", flush=True)


# ---- the tables: ids 2, 4, ... on the source; about 90% of rows differ --------------------------
pg = PgServer()
pg.createdb("src")
pg.createdb("dst")
src, dst = pg.dsn("src"), pg.dsn("dst")
for db in ("src", "dst"):
    c = pg.connect(db)
    cur = c.cursor()
    cur.execute("CREATE TABLE m (id int PRIMARY KEY, a int, t text, u text)")
    cur.execute("INSERT INTO m SELECT 2 * g, g % 1000, CASE WHEN g % 13 = 0 THEN NULL "
                f"ELSE 't' || g END, 'u' || g FROM generate_series(1, {N}) g")
    # every row differing in one column (the honest run)
    cur.execute("CREATE TABLE e (id int PRIMARY KEY, a int, t text)")
    cur.execute(f"INSERT INTO e SELECT g, g, 't' || g FROM generate_series(1, {N}) g")
    if db == "dst":
        cur.execute("UPDATE m SET a = a + 1 WHERE id % 20 <> 0")  # rows of g % 10 = 0 equal
        cur.execute("UPDATE m SET t = NULL WHERE id % 14 = 0")
        cur.execute("DELETE FROM m WHERE id % 194 = 0")
        cur.execute("INSERT INTO m SELECT 2 * g + 1, 1, 'x', NULL "
                    f"FROM generate_series(1, {N}) g WHERE g % 101 = 0")
        cur.execute("UPDATE e SET a = -a")
    c.commit()
    c.close()
SRC_KEYS = {2 * g for g in range(1, N + 1)}
DST_KEYS = {2 * g for g in range(1, N + 1) if g % 97} | {2 * g + 1 for g in range(1, N + 1)
                                                         if g % 101 == 0}


def equal_row(k):
    """Whether the row of key k is the same on both sides (its g % 10 = 0, unchanged)."""
    g = k // 2
    return k % 2 == 0 and 1 <= g <= N and g % 10 == 0 and g % 7 and g % 97


def answer(doc):
    divs = sorted(json.dumps([d["kind"], d["key"],
                              sorted([c["column"], c.get("source"), c.get("target")]
                                     for c in d.get("columns", []))])
                  for d in doc["divergences"])
    sm = doc["summary"]
    counts = {k: sm.get(k) for k in ("changed", "missing_in_target", "extra_in_target")}
    counts["rows"] = (doc["source"]["rows"], doc["target"]["rows"])
    return divs, counts


def oracle(table):
    """sluice diff without merge tasks (a rate limit keeps them off,
    co_merge_allowed): trees and streams only."""
    code, doc, err = sluice_json("diff", src, dst, "--table", table, "--max-rows-per-second",
                                 "1000000000")
    assert code == 1 and doc and doc["summary"]["merged_ranges"] == 0, \
        f"the oracle's diff of {table}: exit {code}\n{err}"
    return answer(doc)


# ---- the relay -------------------------------------------------------------------------------


class MergeLiar(threading.Thread):
    """Registers as a worker and relays a real one, passing every reply to a
    merge request through lie(m, req, st), which may change it in place
    (True: it lied). Its replies to tree requests past the first range
    wait TREE_DELAY."""

    def __init__(self, cl, lie):
        super().__init__(daemon=True)
        self.lie, self.lies, self.st = lie, 0, {}
        self.hello_merge = None
        self.merge_asked = threading.Event()
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
        self.asked = {}  # merge request id -> the request
        self.trees = set()  # ids of tree requests of a range with a lower bound
        self.held = []  # [(when to send, frame)]
        self.errors = []
        self.stop = threading.Event()

    def run(self):
        ident, waiting = None, []
        poller = zmq.Poller()
        poller.register(self.up, zmq.POLLIN)
        poller.register(self.down, zmq.POLLIN)
        while not self.stop.is_set():
            while self.held and self.held[0][0] <= time.time():
                self.up.send(self.held.pop(0)[1])
            for sock, _ in poller.poll(20):
                if sock is self.down:
                    ident, frame = self.down.recv_multipart()
                    for f in waiting:
                        self.down.send_multipart([ident, f])
                    waiting = []
                    frame = self.tamper(frame)
                    if frame is not None:
                        self.up.send(frame)
                else:
                    frame = self.up.recv()
                    try:
                        m = decode(frame)
                        if m.get("t") == T_MERGE:
                            self.asked[m["id"]] = m
                            self.merge_asked.set()
                        if m.get("t") == T_TREE and m["lo"][0] != MK_UNBOUNDED:
                            self.trees.add(m["id"])
                    except Exception as e:  # noqa: BLE001 (a relay passes what it cannot read)
                        self.errors.append(repr(e))
                    if ident is None:
                        waiting.append(frame)
                    else:
                        self.down.send_multipart([ident, frame])
        self.up.close()
        self.down.close()
        self.ctx.term()

    def tamper(self, frame):
        try:
            m = decode(frame)
        except Exception as e:  # noqa: BLE001
            self.errors.append(repr(e))
            return frame
        if m.get("t") == T_HELLO and self.hello_merge is None:
            self.hello_merge = m.get("merge")
        if m.get("t") in (T_REPLY, T_ERROR) and m.get("id") in self.trees:
            self.trees.discard(m["id"])
            self.held.append((time.time() + TREE_DELAY, frame))
            return None
        if m.get("t") != T_REPLY or m.get("id") not in self.asked:
            return frame
        req = self.asked.pop(m["id"])
        try:
            if not self.lie(m, req, self.st):
                return frame
        except Exception as e:  # noqa: BLE001 (a lie that does not fit: the reply as it was)
            self.errors.append(repr(e))
            return frame
        self.lies += 1
        return encode(m)

    def close(self):
        self.stop.set()
        self.join(5)
        self.real.kill()
        self.real.wait()


# ---- the lies: each changes a merge reply m (for request req) in place ------------------------


def bound(req, name):
    kind, key = req[name]
    return kind, (key_int(key) if kind != MK_UNBOUNDED else None)


def both_sides(m):
    """Keys listed in both a and b, with their rows."""
    b = {bytes(r[0]): r for r in m["b"]}
    return [(r, b[bytes(r[0])]) for r in m["a"] if bytes(r[0]) in b and len(r) == 4 and
            len(b[bytes(r[0])]) == 4]


def lie_below_lo(m, req, st):
    kind, lo = bound(req, "lo")
    if kind == MK_UNBOUNDED:
        return False
    m["a"].insert(0, [int_key(lo - 1)])
    return True


def lie_above_through(m, req, st):
    if "through" not in m:
        return False
    m["a"].append([int_key(key_int(m["through"]) + 1)])
    return True


def lie_b_not_rising(m, req, st):
    if len(m["b"]) < 2:
        return False
    m["b"][0], m["b"][1] = m["b"][1], m["b"][0]
    return True


def lie_no_through(m, req, st):
    if "through" not in m or not (m["a"] or m["b"]):
        return False
    del m["through"]
    return True


def lie_through_outside(m, req, st):
    hk, hi = bound(req, "hi")
    lk, lo = bound(req, "lo")
    if hk != MK_UNBOUNDED:
        m["through"] = req["hi"][1]  # hi itself: the span ends before it
    elif lk != MK_UNBOUNDED:
        m["through"] = int_key(lo - 1)
    else:
        return False
    return True


def lie_width(m, req, st):
    rows = both_sides(m)
    if not rows:
        return False
    del rows[0][1][1:]  # b's side of a changed row: [key], as if on b only
    return True


def lie_other_columns(m, req, st):
    """a's side of a changed row lists another column than b's."""
    for ra, rb in both_sides(m):
        c = ra[1][0]
        ra[1][0] = 1 if c != 1 else 2
        return True
    return False


def lie_nil_value(m, req, st):
    """a value that is no encoding: nil (equal columns are never listed)."""
    for ra, rb in both_sides(m):
        ra[2][0] = None
        return True
    return False


def lie_key_column(m, req, st):
    """the key column (0) listed as a differing column, on both sides."""
    for ra, rb in both_sides(m):
        for r in (ra, rb):
            r[1].insert(0, 0)
            r[2].insert(0, r[2][0])
            r[3].insert(0, "k")
        return True
    return False


def lie_equal_row(m, req, st):
    """A row the same on both sides (it exists there, unchanged) listed as
    changed, with equal values on both: nothing to report."""
    rows = both_sides(m)
    if not rows or "through" not in m:
        return False
    listed = {key_int(r[0]) for r in m["a"]} | {key_int(r[0]) for r in m["b"]}
    lo, hi = min(listed), key_int(m["through"])
    k = next((k for k in range(lo + 1, hi) if equal_row(k) and k not in listed), None)
    if k is None:
        return False
    cols, vals, txt = list(rows[0][0][1]), list(rows[0][0][2]), list(rows[0][0][3])
    for side in ("a", "b"):
        at = next((i for i, r in enumerate(m[side]) if key_int(r[0]) > k), len(m[side]))
        m[side].insert(at, [int_key(k), list(cols), list(vals), list(txt)])
    return True


def lie_more_no_progress(m, req, st):
    """The first reply of a range cut short (truthfully: the rows and
    counts up to its middle, "more"); the next one asked after it: no rows,
    "more" and the same "through" again."""
    kind, lo = bound(req, "lo")
    if kind == MK_EXCL:
        m["a"], m["b"], m["rows"], m["blocks"], m["more"] = [], [], [0, 0], 0, 1
        m["through"] = req["lo"][1]
        return True
    if len(m["a"]) < 4 or "through" not in m:
        return False
    cut = key_int(m["a"][len(m["a"]) // 2][0])
    m["a"] = [r for r in m["a"] if key_int(r[0]) <= cut]
    m["b"] = [r for r in m["b"] if key_int(r[0]) <= cut]

    def n(keys):
        return sum(1 for k in keys if (lo is None or k >= lo) and k <= cut)
    m["rows"] = [n(SRC_KEYS), n(DST_KEYS)]
    m["through"], m["more"] = int_key(cut), 1
    return True


def lie_rows_negative(m, req, st):
    m["rows"][0] = -1
    return True


def lie_rows_fewer(m, req, st):
    if not m["a"]:
        return False
    m["rows"][0] = len(m["a"]) - 1
    return True


def pass_through(m, req, st):
    st["merges"] = st.get("merges", 0) + 1
    return False


def lie_error(m, req, st):
    v = m.get("v", 1)
    m.clear()
    m.update({"v": v, "t": T_ERROR, "id": req["id"], "error": "merge: the liar's disk caught fire",
              "code": "database"})
    return True


# ---- the runs --------------------------------------------------------------------------------


def run_job(table, lie=None, workers=0, strand=False):
    """A coordinator; with lie, the relay, and an honest worker once the relay
    was asked a merge; else `workers` real workers. strand: the relay (the
    only worker reaching both databases) is killed once it answered a merge,
    and two workers reaching one side each take over. Returns what
    happened."""
    cl = Cluster({"src": src, "dst": dst})
    cl.start_coordinator()
    liar = None
    if lie:
        liar = MergeLiar(cl, lie)
        liar.start()
    for _ in range(workers):
        cl.start_worker(slots=1)
    up = cl.wait_workers(1 if lie else workers)
    t0 = time.time()
    # files, not pipes: the report (tens of thousands of divergences) would fill a pipe
    # nobody reads while the job runs
    fout = open(os.path.join(cl.dir, "submit.out"), "w+")
    ferr = open(os.path.join(cl.dir, "submit.err"), "w+")
    p = subprocess.Popen([SLUICE, "submit", "src", "dst", "--table", table, "--ranges", RANGES,
                          "--wait", "--no-progress", "--format", "json", "--coordinator",
                          cl.clients_ep], stdout=fout, stderr=ferr, env=cl.env)
    honest = False
    while p.poll() is None and time.time() - t0 < RUN_TIMEOUT:
        if liar and not honest and strand and liar.st.get("merges", 0) >= 1:
            liar.close()  # mid-range: its next merge task finds no worker for both sides
            for side, dsn in (("src", src), ("dst", dst)):
                f = os.path.join(cl.dir, side + ".conf")
                with open(f, "w") as fh:
                    fh.write(f"{side}={dsn}\n")
                cl.start_worker(slots=1, dbfile=f)
            honest = True
        if liar and not honest and not strand and liar.merge_asked.is_set():
            cl.start_worker(slots=1)
            honest = True
        time.sleep(0.05)
    hung = p.poll() is None
    if hung:
        p.kill()
    p.wait()
    fout.seek(0)
    ferr.seek(0)
    out, err = fout.read(), ferr.read()
    fout.close()
    ferr.close()
    took = time.time() - t0
    if liar and not liar.stop.is_set():
        liar.close()
    cl.stop()
    log = open(os.path.join(cl.dir, "coordinator.log"), errors="replace").read()
    try:
        doc = json.loads(out) if out.strip() else None
    except ValueError:
        doc = None
    return dict(up=up, code=p.returncode, doc=doc, err=err, log=log, liar=liar, hung=hung,
                took=took, san=cl.sanitizer_reports())


def dropped(r):
    return [x for x in r["log"].splitlines() if "dropped: its merge reply" in x]


def summary(r):
    doc = r["doc"]
    return (f"exit {r['code']}, {r['took']:.1f} s, {r['liar'] and r['liar'].lies} lies, "
            f"merged_ranges {doc and doc['summary'].get('merged_ranges')}")


def why(r, want=None):
    doc = r["doc"]
    got = answer(doc) if doc else None
    lines = [summary(r), r["err"][-600:], "\n".join(r["log"].splitlines()[-8:])]
    if r["liar"] and r["liar"].errors:
        lines.append(f"relay errors: {r['liar'].errors[:3]}")
    if want and got:
        lines.append(f"{got[1]} vs {want[1]}")
        lines.append(str(sorted(set(got[0]) ^ set(want[0]))[:6]))
    lines += r["san"]
    return "\n".join(lines)


want_m = oracle("m")
want_e = oracle("e")
t.diag(f"oracle m: {want_m[1]}; e: {want_e[1]}")

# the honest runs, every row differing. On a cluster: two real workers, the first behind a
# relay that lies in nothing and counts the merge replies (the second joins once a merge is
# asked, as in the runs below; submit --wait's summary has no merged_ranges: it comes from
# the job's status). Then sluice diff, whose summary says merged_ranges.
r = run_job("e", pass_through)
doc = r["doc"]
merges = r["liar"].st.get("merges", 0)
t.ok(r["up"] and not r["hung"] and r["code"] == 1 and doc and answer(doc) == want_e
     and merges > 0 and not dropped(r) and not r["san"],
     f"two honest workers, every row differing: the oracle's answer, {merges} merge replies "
     f"relayed ({summary(r)})", why(r, want_e))
for table, want in (("e", want_e), ("m", want_m)):
    code, doc, err = sluice_json("diff", src, dst, "--table", table, "--ranges", RANGES,
                                 "--workers", "1")
    t.ok(code == 1 and doc and answer(doc) == want and doc["summary"]["merged_ranges"] > 0,
         f"sluice diff, table {table}: the oracle's answer, "
         f"{doc and doc['summary']['merged_ranges']} of {doc and doc['summary']['ranges']} "
         f"ranges merged", f"exit {code}\n{err[-500:]}\n{doc and doc['summary']}")

DETECTED = [
    ("1a. a key in a below the span's lo", lie_below_lo),
    ("1b. a key in a above through", lie_above_through),
    ("2. keys not rising in b", lie_b_not_rising),
    ("3a. through missing while rows are listed", lie_no_through),
    ("3b. through outside the span", lie_through_outside),
    ("4. a row on both sides, one side [key] only", lie_width),
    ("5a. a changed row whose sides list other columns", lie_other_columns),
    ("5b. a nil value", lie_nil_value),
    ("5c. the key column listed as differing", lie_key_column),
    ("8a. a negative rows count", lie_rows_negative),
    ("8b. rows count below the rows listed", lie_rows_fewer),
]
# lies found to end the job with an error instead of dropping the worker (see the report)
KNOWN = {}
first = True
for name, lie in DETECTED:
    r = run_job("m", lie)
    doc, liar = r["doc"], r["liar"]
    if first:
        t.ok(liar.hello_merge == 1, "the relayed worker's hello advertises merge: 1",
             f"hello merge: {liar.hello_merge}")
        first = False
    ok = (r["up"] and not r["hung"] and liar.lies > 0 and r["code"] == 1 and doc is not None
          and answer(doc) == want_m and len(dropped(r)) > 0 and not r["san"])
    label = (f"{name}: the liar dropped ({dropped(r)[:1]}), the oracle's answer "
             f"({summary(r)})")
    tag = name.split(".")[0]
    if tag in KNOWN:
        todo(ok, label, KNOWN[tag], why(r, want_m))
    else:
        t.ok(ok, label, why(r, want_m))
    if tag == "8b":  # the drop says why, as every other drop does
        t.ok(dropped(r) and all(re.search(r"for range \d+ \S", x) for x in dropped(r)),
             f"8b. the drop says why ({dropped(r)[:1]})", str(dropped(r)))

# 6: a fabricated changed row with equal values: compared again, not reported
r = run_job("m", lie_equal_row)
doc = r["doc"]
t.ok(r["up"] and not r["hung"] and r["liar"].lies > 0 and r["code"] == 1 and doc is not None
     and answer(doc) == want_m and not r["san"],
     f"6. an unchanged row listed as changed with equal values: not reported, the oracle's "
     f"answer ({summary(r)}; {len(dropped(r))} drops)", why(r, want_m))

# 7: "more" with no rows and the same through: the job ends, exact
r = run_job("m", lie_more_no_progress)
doc = r["doc"]
t.ok(r["up"] and not r["hung"] and r["liar"].lies > 0 and r["code"] == 1 and doc is not None
     and answer(doc) == want_m and not r["san"],
     f"7. more: 1 with no rows and the same through: the job ends with the oracle's answer "
     f"({summary(r)}; {len(dropped(r))} drops)", why(r, want_m))

# a begun merge whose only worker for both sides is lost: streamed from where it got to by
# workers that reach one side each (else the job would wait for ever)
r = run_job("e", pass_through, strand=True)
doc = r["doc"]
t.ok(r["up"] and not r["hung"] and r["liar"].st.get("merges", 0) >= 1 and r["code"] == 1
     and doc is not None and answer(doc) == want_e and not r["san"],
     f"the only worker for both sides lost after {r['liar'].st.get('merges', 0)} merge "
     f"replies: workers for one side each finish the range, the oracle's answer "
     f"({summary(r)})", why(r, want_e))

# 9: a divergence left out of both lists: nothing the coordinator can see
skip("9. a divergence dropped from a and b", "undetectable by the coordinator: a worker that "
     "reads both sides is trusted not to leave rows out")

# 10: an error reply mid-job: the job fails at once with the worker's one-line error
r = run_job("m", lie_error)
lines = [x for x in r["err"].splitlines() if x.strip() and not x.endswith(" submitted")]
t.ok(r["up"] and not r["hung"] and r["liar"].lies > 0 and r["code"] in (2, 3)
     and len(lines) == 1 and "caught fire" in lines[0] and not r["san"],
     f"10. an error reply to a merge: the job fails with exit {r['code']} and one line "
     f"({lines[:1]}, {r['took']:.1f} s)", why(r))

pg.stop()
t.done()
