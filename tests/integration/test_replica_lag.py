#!/usr/bin/python3
"""--max-replica-lag SECONDS --replica R (issue 15, item 5): an audit's range
reads pause while a real streaming replica lags, and go on once it caught
up. A PostgreSQL primary and a physical standby of it (pg_basebackup -R)
are started here; replay is paused on the standby while the primary
writes, which builds lag. Checked for sluice diff (R a DSN) and for sluice
submit --wait (R a database name the workers announced): the job says it
is paused, does no range meanwhile, and finishes, exact, once replay
resumes. An idle primary is no lag; a server that is not a replica is
refused (exit 2)."""
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Cluster  # noqa: E402
from harness import SAN_ENV, SLUICE, PgServer, PgStandby, Tap, check_sanitizer, sluice  # noqa: E402

t = Tap()
primary = PgServer()
primary.createdb("app")
p = primary.connect("app")
cur = p.cursor()
cur.execute("CREATE TABLE t (id int PRIMARY KEY, v text, n numeric)")
cur.execute("INSERT INTO t SELECT g, 'v' || g, g * 1.5 FROM generate_series(1, 20000) g")
cur.execute("CREATE TABLE churn (id serial PRIMARY KEY, at timestamptz DEFAULT now())")
cur.execute("INSERT INTO churn DEFAULT VALUES")
standby = PgStandby(primary)


def replay_caught_up(timeout=60):
    """Waits until the standby replayed everything the primary wrote."""
    cur.execute("SELECT pg_current_wal_lsn()")
    want = cur.fetchone()[0]
    s = standby.connect("app").cursor()
    end = time.time() + timeout
    while time.time() < end:
        s.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (want,))
        if s.fetchone()[0]:
            return True
        time.sleep(0.1)
    return False


t.ok(replay_caught_up(), "the standby streams from the primary and replays")
s = standby.connect("app").cursor()
s.execute("SELECT pg_is_in_recovery(), count(*) FROM t")
t.ok(s.fetchone() == (True, 20000), "the standby is in recovery and holds the table")

src, rep = primary.dsn("app"), standby.dsn("app")

# a server that is not a replica is refused, naming it, exit 2
code, out, err = sluice("diff", src, rep, "--table", "t", "--no-progress",
                        "--max-replica-lag", "1", "--replica", src)
t.ok(code == 2 and "not a replica" in err and primary.PASSWORD not in err,
     "--replica on a primary: exit 2, says it is not a replica (no password)", err)
code, out, err = sluice("diff", src, rep, "--table", "t", "--no-progress", "--replica", rep)
t.ok(code == 2 and "--max-replica-lag" in err, "--replica alone is refused", err)

# an idle primary: nothing to replay is no lag, however old the last commit
time.sleep(2.5)
code, out, err = sluice("diff", src, rep, "--table", "t", "--no-progress",
                        "--max-replica-lag", "1", "--replica", rep)
t.ok(code == 0 and "paused" not in err and "tables are identical" in out,
     "idle primary, replay caught up: no pause, tables identical", f"exit {code}\n{out}\n{err}")


class Lines:
    """A process's stderr read line by line on a thread, with times."""

    def __init__(self, proc):
        self.lines = []
        self.proc = proc
        self.th = threading.Thread(target=self._read, daemon=True)
        self.th.start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append((time.time(), line.rstrip("\n")))

    def wait_for(self, text, timeout):
        end = time.time() + timeout
        while time.time() < end:
            for at, line in self.lines:
                if text in line:
                    return at, line
            time.sleep(0.1)
        return None, None


def lag_up():
    """Pauses replay on the standby and writes on the primary until the
    standby has received WAL it did not replay."""
    standby.pause_replay()
    sc = standby.connect("app").cursor()
    for _ in range(100):
        cur.execute("INSERT INTO churn DEFAULT VALUES")
        sc.execute("SELECT pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()")
        if sc.fetchone()[0]:
            return True
        time.sleep(0.1)
    return False


def run_paused(argv, label, resumed_word):
    t.ok(lag_up(), f"{label}: replay paused on the standby, WAL received but not replayed")
    env = dict(os.environ, **SAN_ENV)
    proc = subprocess.Popen([SLUICE] + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    lines = Lines(proc)
    at, line = lines.wait_for("paused: replica", 60)
    t.ok(line is not None and "lag" in line and "> 1s" in line,
         f"{label}: the job says it is paused for the replica's lag", "\n".join(
             x for _, x in lines.lines))
    time.sleep(4)
    t.ok(proc.poll() is None, f"{label}: still paused 4 s later (no range read meanwhile)")
    done_at_pause = line and ("(0/" in line or resumed_word == "job")
    standby.resume_replay()
    resumed_at = time.time()
    try:
        out = proc.stdout.read()
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out = ""
    lines.th.join(5)
    err = "\n".join(x for _, x in lines.lines)
    check_sanitizer(proc.returncode, err, label)
    rat, rline = lines.wait_for("resumed", 1)
    t.ok(rline is not None and rat >= resumed_at - 1.5,
         f"{label}: resumed only once replay resumed", err)
    t.ok(proc.returncode == 0 and "tables are identical" in out,
         f"{label}: finished, tables identical", f"exit {proc.returncode}\n{out}\n{err}")
    return out, err, line, rline, done_at_pause


# sluice diff: R is the standby's DSN; no range is done while paused
out, err, line, rline, zero = run_paused(
    ["diff", src, rep, "--table", "t", "--no-progress", "--ranges", "8", "--max-replica-lag", "1",
     "--replica", rep], "diff", "diff")
t.ok(zero and rline and "(0/8 ranges done)" in rline,
     "diff: 0 of 8 ranges done at the pause and still 0 when it resumed", f"{line}\n{rline}")
t.ok("range reads paused" in out, "diff: the report says how long the reads were paused", out)

# a pause in the middle of a job: the reads running finish, no new one starts
standby.resume_replay()
t.ok(replay_caught_up(), "replay caught up again")
env = dict(os.environ, **SAN_ENV)
proc = subprocess.Popen([SLUICE, "diff", src, rep, "--table", "t", "--no-progress", "--ranges",
                         "20", "--max-rows-per-second", "4000", "--max-replica-lag", "1",
                         "--replica", rep], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True, env=env)
lines = Lines(proc)
time.sleep(2.5)
t.ok(proc.poll() is None and lag_up(), "mid-job: replay paused while the diff runs")
at, line = lines.wait_for("paused: replica", 30)
time.sleep(4)
standby.resume_replay()
out = proc.stdout.read()
proc.wait(timeout=120)
lines.th.join(5)
err = "\n".join(x for _, x in lines.lines)
check_sanitizer(proc.returncode, err, "diff paused mid-job")
rat, rline = lines.wait_for("resumed", 1)


def done_of(text):
    """k of "(k/N ranges done)"."""
    return int(text.rsplit("(", 1)[1].split("/")[0]) if text and "ranges done)" in text else -1


k, m = done_of(line), done_of(rline)
# two workers: at most the ranges whose reads were running when it paused finish meanwhile
t.ok(line is not None and 0 < k < 20 and 0 <= m - k <= 2,
     f"mid-job: {k}/20 ranges done at the pause, {m} at the resume 4 s later (unpaused: about "
     "8 more)", err)
t.ok(proc.returncode == 0 and "tables are identical" in out, "mid-job: finished, identical",
     f"exit {proc.returncode}\n{out}\n{err}")

# sluice submit --wait: R is a database name the workers announced
cl = Cluster({"p": src, "r": rep})
cl.start_coordinator()
cl.start_worker()
t.ok(cl.wait_workers(1), "a coordinator and a worker are up")
out, err, line, rline, _ = run_paused(
    ["submit", "p", "r", "--table", "t", "--wait", "--no-progress", "--coordinator",
     cl.clients_ep, "--max-replica-lag", "1", "--replica", "r"], "submit", "job")
t.ok(line and "paused: replica r" in line, "submit: the pause names the replica", line)
code, out, err = cl.client("submit", "p", "r", "--table", "t", "--wait", "--no-progress",
                           "--max-replica-lag", "1", "--replica", "p")
t.ok(code == 2 and "not a replica" in err, "submit: --replica naming a primary fails the job",
     f"exit {code}\n{out}\n{err}")
cl.stop()
log = open(os.path.join(cl.dir, "coordinator.log")).read()
t.ok("paused: replica r" in log and "resumed" in log,
     "the coordinator's log says when the job paused and resumed", log[-2000:])
t.done()
