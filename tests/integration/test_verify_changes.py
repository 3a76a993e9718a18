#!/usr/bin/python3
"""sluice verify-changes: change-driven verification on a real cluster. Two
PostgreSQL servers (wal_level = logical), the table replicated source ->
target by PostgreSQL's own logical replication while a writer keeps
updating the source. Divergences are injected on the target behind
replication's back (updates, deletes, inserts) and then on the source with
the subscription disabled (writes paused): every one is reported
confirmed, none other is (no false divergence from the changes in
flight), with its detection latency; an orphaned sluicecv_ slot is
dropped when the follow starts (logged); Ctrl-C and --duration both end
the job with no sluice slot or publication left on either server. Every
window (--window) writes a drift row of kind changes, and a last one as the
job ends, with the confirmed divergences' detection latency from commit."""
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Cluster  # noqa: E402
from harness import LOGICAL, PgServer, SLUICE, Tap  # noqa: E402

ROWS = 20000

t = Tap()
src, dst = PgServer(extra_opts=LOGICAL), PgServer(extra_opts=LOGICAL)
for s in (src, dst):
    s.createdb("shop")
    c = s.connect("shop")
    c.autocommit = True
    cur = c.cursor()
    cur.execute("CREATE TABLE t(id bigint PRIMARY KEY, v int, note text)")
    cur.execute(f"INSERT INTO t SELECT g, g % 1000, 'n' || g FROM generate_series(1, {ROWS}) g")
    c.close()
sc = src.connect("shop")
sc.autocommit = True
scur = sc.cursor()
scur.execute("CREATE PUBLICATION rep FOR TABLE t")
# a slot a crashed follow left behind: inactive, to be dropped at the next follow
scur.execute("SELECT pg_create_logical_replication_slot('sluicecv_999_0', 'pgoutput')")
# ... and two that are not a follow's, inactive too: a migration's (sluice
# control names its replication sluice_<id>; id cv_5_0) and a misshapen one
for keep in ("sluice_cv_5_0", "sluicecv_5_2"):
    scur.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (keep,))
dc = dst.connect("shop")
dc.autocommit = True
dcur = dc.cursor()
conninfo = (f"host=127.0.0.1 port={src.port} user={src.USER} password={src.PASSWORD} "
            "dbname=shop")
dcur.execute(f"CREATE SUBSCRIPTION rep CONNECTION '{conninfo}' PUBLICATION rep "
             "WITH (copy_data = false)")


def sluice_slots(cur):
    cur.execute("SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'sluicecv_%' "
                "AND slot_name <> 'sluicecv_5_2' ORDER BY 1")
    slots = [r[0] for r in cur.fetchall()]
    cur.execute("SELECT pubname FROM pg_publication WHERE pubname LIKE 'sluicecv_%'")
    return slots + [r[0] for r in cur.fetchall()]


def wait_replicated(timeout=20):
    """A marker write on the source is seen on the target."""
    mark = random.randint(1, 1 << 30)
    scur.execute("UPDATE t SET v = %s WHERE id = 1", (mark,))
    end = time.time() + timeout
    while time.time() < end:
        dcur.execute("SELECT v FROM t WHERE id = 1")
        if dcur.fetchone()[0] == mark:
            return True
        time.sleep(0.1)
    return False


t.ok(wait_replicated(), "logical replication runs source -> target")

# the writer: updates of ids 1..10000 on the source, about 100 a second
stop_writer = threading.Event()
writes = [0]


def writer():
    c = src.connect("shop")
    c.autocommit = True
    cur = c.cursor()
    while not stop_writer.is_set():
        cur.execute("UPDATE t SET v = v + 1, note = md5(random()::text) WHERE id = %s",
                    (random.randint(2, 10000),))
        writes[0] += 1
        time.sleep(0.01)
    c.close()


cl = Cluster({"src": src.dsn("shop"), "dst": dst.dsn("shop")})
cl.start_coordinator()
cl.start_worker(slots=2)
cl.start_worker(slots=2)
t.ok(cl.wait_workers(4), "four worker slots joined")

wt = threading.Thread(target=writer)
wt.start()

# the CLI, its stdout read line by line with the time each line came
proc = subprocess.Popen([SLUICE, "verify-changes", "src", "dst", "--table", "t", "--settle", "1",
                         "--rechecks", "2", "--coordinator", cl.clients_ep, "--events",
                         cl.events_ep], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True, env=cl.env)
seen = {}  # (kind, id) -> time reported
lines, errlines = [], []


def read_out():
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        parts = line.split()
        if len(parts) >= 2 and parts[1].startswith("id="):
            seen.setdefault((parts[0], int(parts[1][3:])), time.time())


def read_err():
    for line in proc.stderr:
        errlines.append(line.rstrip("\n"))


threading.Thread(target=read_out, daemon=True).start()
threading.Thread(target=read_err, daemon=True).start()

# the job's slots appear on both servers, and the orphan goes
end = time.time() + 30
while time.time() < end:
    s_slots, d_slots = sluice_slots(scur), sluice_slots(dcur)
    if len(s_slots) == 2 and len(d_slots) == 2 and "sluicecv_999_0" not in s_slots:
        break
    time.sleep(0.2)
t.ok(len(s_slots) == 2 and len(d_slots) == 2 and all(x.endswith("_0") for x in s_slots)
     and all(x.endswith("_1") for x in d_slots),
     "a slot and a publication of the job on each side (sluicecv_<job>_0 and _1)",
     f"{s_slots} {d_slots} {errlines}")
t.ok("sluicecv_999_0" not in s_slots, "the orphaned slot sluicecv_999_0 was dropped")
scur.execute("SELECT slot_name FROM pg_replication_slots WHERE slot_name IN "
             "('sluice_cv_5_0', 'sluicecv_5_2') ORDER BY 1")
kept = [r[0] for r in scur.fetchall()]
t.ok(kept == ["sluice_cv_5_0", "sluicecv_5_2"],
     "slots not named as a follow names them are kept (a migration's sluice_cv_5_0)", kept)
for k in kept:
    scur.execute("SELECT pg_drop_replication_slot(%s)", (k,))
time.sleep(3)  # writes go on, and are checked equal

# 50 target-side divergences, behind replication's back, at random moments
# while the writer goes on (ids the writer never touches): 20 updates, 15
# deletes, 15 inserts, each timed from its own commit
expected = {}
inject = [("changed", 10001 + i) for i in range(20)] + \
    [("missing-in-target", 10101 + i) for i in range(15)] + \
    [("extra-in-target", 2000001 + i) for i in range(15)]
random.Random(13).shuffle(inject)
for kind, i in inject:
    if kind == "changed":
        dcur.execute("UPDATE t SET v = -1 WHERE id = %s", (i,))
    elif kind == "missing-in-target":
        dcur.execute("DELETE FROM t WHERE id = %s", (i,))
    else:
        dcur.execute("INSERT INTO t VALUES (%s, 1, 'x')", (i,))
    expected[(kind, i)] = time.time()
    time.sleep(random.uniform(0, 0.2))


def wait_seen(keys, timeout=30):
    end = time.time() + timeout
    while time.time() < end and not all(k in seen for k in keys):
        time.sleep(0.1)
    return all(k in seen for k in keys)


t.ok(wait_seen(list(expected)), "the 50 target-side divergences are reported confirmed",
     f"seen {sorted(seen)} out: {lines[-10:]} err: {errlines[-5:]}")

# a worker following a side is killed: its slot's stream ends, the job
# follows again from another worker (and the restarted one), resuming at
# the slot's confirmed position; a divergence made while nobody followed is
# still found
def holders():
    out = []
    for i, _ in enumerate(cl.workers):
        log = open(os.path.join(cl.dir, f"worker{i}.log")).read()
        if "following t through slot" in log:
            out.append(i)
    return out


victim = holders()[-1]
cl.workers[victim].kill()
cl.workers[victim].wait()
t_kill = time.time()
dcur.execute("UPDATE t SET note = 'while a follower was down' WHERE id = 10021")
expected[("changed", 10021)] = t_kill
cl.start_worker(slots=2)  # the restarted worker
t.ok(wait_seen([("changed", 10021)], timeout=60),
     "a worker following the changes killed: the divergence made meanwhile is still reported",
     f"seen {sorted(seen)} err: {errlines[-5:]}")
t.diag(f"found {seen.get(('changed', 10021), t_kill) - t_kill:.1f} s after the kill "
       f"(heartbeat timeout {cl.hb_timeout} s)")

# source-side divergences with the subscription disabled (the writer paused,
# since none of its writes would reach the target either)
stop_writer.set()
wt.join()
t.ok(wait_replicated(), "the writer's last writes reached the target")
time.sleep(2.5)  # their keys settle and are checked equal
dcur.execute("ALTER SUBSCRIPTION rep DISABLE")
time.sleep(1)
# 50 source-side divergences with the table's replication paused: 20
# updates, 15 deletes, 15 inserts
src_inject = [("changed", 10201 + i) for i in range(20)] + \
    [("extra-in-target", 10301 + i) for i in range(15)] + \
    [("missing-in-target", 2000101 + i) for i in range(15)]
random.Random(17).shuffle(src_inject)
src_expected = {}
for kind, i in src_inject:
    if kind == "changed":
        scur.execute("UPDATE t SET note = 'changed at source' WHERE id = %s", (i,))
    elif kind == "extra-in-target":
        scur.execute("DELETE FROM t WHERE id = %s", (i,))
    else:
        scur.execute("INSERT INTO t VALUES (%s, 11, 'z')", (i,))
    src_expected[(kind, i)] = time.time()
    time.sleep(random.uniform(0, 0.1))
expected.update(src_expected)
t.ok(wait_seen(list(src_expected)), "the 50 source-side divergences are reported confirmed",
     f"seen {sorted(seen)}")
lat = sorted(seen[k] - expected[k] for k in expected if k in seen)
p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else None
if lat:
    t.diag(f"detection latency (settle 1 s, 2 re-checks) over {len(lat)} divergences: "
           f"min {lat[0]:.2f} s, p50 {lat[len(lat) // 2]:.2f} s, p99 {p99:.2f} s, "
           f"max {lat[-1]:.2f} s; {writes[0]} writes checked alongside")
t.ok(len(lat) == 101 and p99 < 10, f"all 101 found, detection p99 under 10 s ({p99})", f"{lat}")
time.sleep(3)
extra = sorted(k for k in seen if k not in expected)
t.ok(not extra, "no other divergence: the writer's changes in flight were never reported", extra)

# Ctrl-C: the job is cancelled and its slots dropped
proc.send_signal(signal.SIGINT)
try:
    code = proc.wait(timeout=60)
except subprocess.TimeoutExpired:
    proc.kill()
    code = None
time.sleep(0.5)
closing = [x for x in errlines if "verify-changes job" in x and "after" in x]
t.ok(code == 1 and closing and "101 divergent" in closing[-1],
     "Ctrl-C: exit 1 and a closing line counting the 101 divergences", f"{code} {errlines[-5:]}")
t.ok(any("backlog" in x and "slot lag" in x for x in errlines),
     "progress lines report the backlog and the slot lag", errlines[:5])
t.ok(sluice_slots(scur) == [] and sluice_slots(dcur) == [],
     "after the cancel no sluice slot or publication is left on either server",
     f"{sluice_slots(scur)} {sluice_slots(dcur)}")
wlog = "".join(open(os.path.join(cl.dir, f)).read() for f in os.listdir(cl.dir)
               if f.startswith("worker"))
t.ok("dropped orphaned replication slot sluicecv_999_0" in wlog,
     "the worker logged the orphan it dropped", wlog[-2000:])

# --duration: the job ends by itself, nothing to report, the slots dropped
dcur.execute("ALTER SUBSCRIPTION rep ENABLE")
t.ok(wait_replicated(), "replication resumed")
t0 = time.time()
code, out, err = cl.client("verify-changes", "src", "dst", "--table", "t", "--settle", "0.5",
                           "--rechecks", "1", "--duration", "4", "--events", cl.events_ep)
took = time.time() - t0
t.ok(code == 0 and "done after" in err and "0 divergent" in err,
     f"--duration 4: done by itself in {took:.1f} s, exit 0", out + err)
t.ok(sluice_slots(scur) == [] and sluice_slots(dcur) == [],
     "after --duration no sluice slot or publication is left either")

code, out, err = cl.run("drift", "--state", "sqlite:" + cl.state, "--table", "t", "--json")
rows = json.loads(out) if code == 0 else []
jobs = sorted({r["job"] for r in rows})
first = [r for r in rows if jobs and r["job"] == jobs[0]]
last = [r for r in rows if len(jobs) == 2 and r["job"] == jobs[1]]
t.ok(len(jobs) == 2 and all(r["kind"] == "changes" for r in rows),
     "both jobs wrote drift rows of kind changes (a window a minute, and a last one)", rows)
for r in first:
    t.diag(f"the cancelled job's window of {r['window_seconds']:.1f} s: {r['rows_checked']} keys "
           f"checked, latency p50/p99/max {r['latency_p50']}/{r['latency_p99']}/"
           f"{r['latency_max']} s")
t.ok(sum(r["missing"] + r["extra"] + r["changed"] for r in first) == 101
     and all(r["latency_max"] is not None for r in first if r["missing"] + r["extra"] + r["changed"]),
     f"the cancelled job's {len(first)} windows count the 101 divergences, each window timed",
     first)
t.ok(len(last) == 1 and last[0]["changed"] + last[0]["missing"] + last[0]["extra"] == 0
     and last[0]["latency_p50"] is None and 3.5 < last[0]["window_seconds"] < 15,
     "the --duration 4 job: one row, its partial window, nothing divergent, no latency", last)

# --window 3s: a drift row every 3 s while the writer writes and 4
# divergences are injected on the target, and a last one after Ctrl-C; each
# confirmed divergence is timed from its commit to its confirmation
stop_writer.clear()
writes[0] = 0
wt = threading.Thread(target=writer)
wt.start()
t_submit = time.time()
proc = subprocess.Popen([SLUICE, "verify-changes", "src", "dst", "--table", "t", "--settle", "1",
                         "--rechecks", "2", "--window", "3s", "--coordinator", cl.clients_ep,
                         "--events", cl.events_ep], stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True, env=cl.env)
seen.clear()
lines.clear()
errlines.clear()
threading.Thread(target=read_out, daemon=True).start()
threading.Thread(target=read_err, daemon=True).start()
end = time.time() + 30
while time.time() < end and not (len(sluice_slots(scur)) == 2 and len(sluice_slots(dcur)) == 2):
    time.sleep(0.2)
time.sleep(1)  # the slots are past their consistent point
win_inject = [("changed", 10501), ("missing-in-target", 10502), ("extra-in-target", 2000501),
              ("changed", 10503)]
for n, (kind, i) in enumerate(win_inject):
    if kind == "changed":
        dcur.execute("UPDATE t SET v = -5 WHERE id = %s", (i,))
    elif kind == "missing-in-target":
        dcur.execute("DELETE FROM t WHERE id = %s", (i,))
    else:
        dcur.execute("INSERT INTO t VALUES (%s, 5, 'w')", (i,))
    time.sleep(2.5)
t.ok(wait_seen(win_inject), "--window 3s: the 4 divergences are reported",
     f"seen {sorted(seen)} err: {errlines[-5:]}")
submitted = [x for x in errlines if "submitted" in x]
wjob = int(submitted[0].split()[3]) if submitted else -1


def job_rows():
    code, out, err = cl.run("drift", "--state", "sqlite:" + cl.state, "--table", "t", "--json")
    return [r for r in json.loads(out) if r["job"] == wjob] if code == 0 else []


# about 10 s of it, and at least 3 windows closed (a slow start may delay them)
end = time.time() + 40
while time.time() < end and (time.time() < t_submit + 10 or len(job_rows()) < 3):
    time.sleep(0.5)
t_int = time.time()
proc.send_signal(signal.SIGINT)
try:
    code = proc.wait(timeout=60)
except subprocess.TimeoutExpired:
    proc.kill()
    code = None
stop_writer.set()
wt.join()
wrows = job_rows()
t.diag(f"--window 3s, job {wjob}, {writes[0]} writes alongside; its drift rows:")
for r in wrows:
    t.diag(f"  window {r['window_seconds']:.2f} s: {r['rows_checked']} checked, "
           f"{r['missing']}/{r['extra']}/{r['changed']} missing/extra/changed, "
           f"{r['transient']} transient, latency p50/p99/max {r['latency_p50']}/"
           f"{r['latency_p99']}/{r['latency_max']}")
full = wrows[:-1]
t.ok(len(full) >= 3 and all(r["kind"] == "changes" for r in wrows)
     and all(2.9 < r["window_seconds"] < 3.6 for r in full),
     f"a drift row of kind changes for each 3 s window ({len(full)} full ones)", wrows)
div = [r for r in wrows if r["missing"] + r["extra"] + r["changed"]]
t.ok(sum(r["changed"] for r in wrows) == 2 and sum(r["missing"] for r in wrows) == 1
     and sum(r["extra"] for r in wrows) == 1,
     "summed over the windows: 2 changed, 1 missing, 1 extra confirmed, as injected", wrows)
t.ok(div and all(r["latency_p50"] is not None and 2.9 < r["latency_p50"] <= r["latency_p99"]
                 <= r["latency_max"] < 10 for r in div),
     "each window with a divergence has its detection latency: at least the settle times "
     "(1 + 2 looks of 1 s) after the commit, under 10 s, p50 <= p99 <= max", div)
t.ok(all(r["latency_p50"] is None for r in wrows if r not in div),
     "windows without a divergence have no latency")
t.ok(all(r["rows_checked"] >= r["missing"] + r["extra"] + r["changed"] + r["transient"]
         for r in wrows) and sum(r["rows_checked"] for r in wrows) > 100,
     "rows_checked counts every key looked at (the writer's too: "
     f"{sum(r['rows_checked'] for r in wrows)})")
t.ok(len(wrows) >= 4 and wrows[-1]["at"] >= time.strftime("%Y-%m-%d %H:%M:%S",
                                                           time.gmtime(t_int))
     and wrows[-1]["window_seconds"] < 3.6,
     "after Ctrl-C a last, partial window is written", wrows[-1:])
code, out, err = cl.run("drift", "--state", "sqlite:" + cl.state, "--table", "t")
mine = [x for x in out.splitlines() if f" changes {wjob:6d} " in x]
t.ok(len(mine) == len(wrows) and any(x.split()[-1] != "-" for x in mine),
     "sluice drift prints the job's windows, latencies shown where something diverged",
     out)

code, out, err = cl.client("verify-changes", "src", "dst", "--table", "t", "--rechecks", "0")
t.ok(code == 2 and "--rechecks 1 or more" in err, "--rechecks 0 is refused", err)

cl.stop()
t.ok(not cl.sanitizer_reports(), "no sanitizer report from the coordinator or workers",
     "\n".join(cl.sanitizer_reports()))
dcur.execute("DROP SUBSCRIPTION rep")
t.done()
