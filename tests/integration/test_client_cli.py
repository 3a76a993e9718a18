#!/usr/bin/python3
"""The commands on the client library (client/): `sluice cancel JOB`
cancels a queued job and refuses an unknown or finished one with exit 2
and one line; `submit --priority/--max-tasks` put the fields in the job's
spec and refuse bad values the same way; a coordinator that never answers
is an error within --request-timeout, never a hang; `sluice watch` skips a
malformed event with a line on stderr and goes on; every command answers
--help."""
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time

import msgpack
import zmq

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Cluster  # noqa: E402
from harness import SAN_ENV, SLUICE, Tap, check_sanitizer, free_port, sluice  # noqa: E402

t = Tap()


def one_line(err):
    return len([l for l in err.splitlines() if l.strip()]) == 1


for cmd in (["cancel"], ["schedule"], ["schedule", "add"], ["schedule", "rm"], ["schedule", "ls"],
            ["submit"], ["status"], ["watch"], ["workers"], ["report"]):
    code, out, err = sluice(*cmd, "--help")
    t.ok(code == 0 and out.startswith("usage: sluice") and not err,
         f"sluice {' '.join(cmd)} --help: usage, exit 0", f"exit {code}\n{out}\n{err}")
code, out, err = sluice("--help")
t.ok(code == 0 and "cancel JOB" in out and "schedule add" in out,
     "sluice --help lists cancel and schedule", out)

# ---- options refused before anything is sent ---------------------------------------------------
for args, needle in ((["--priority", "urgent"], "--priority must be high, normal or low"),
                     (["--priority", ""], "--priority must be"),
                     (["--max-tasks", "0"], "--max-tasks must be"),
                     (["--max-tasks", "many"], "--max-tasks must be")):
    code, out, err = sluice("submit", "a", "b", "--table", "t", *args,
                            "--coordinator", f"tcp://127.0.0.1:{free_port()}")
    t.ok(code == 2 and one_line(err) and needle in err and not out,
         f"submit {' '.join(args)}: exit 2, one line", err)
code, out, err = sluice("diff", "sqlite:a", "sqlite:b", "--table", "t", "--priority", "high")
t.ok(code == 2 and one_line(err) and "submit" in err, "diff --priority: belongs to submit", err)
code, out, err = sluice("cancel")
t.ok(code == 2 and one_line(err) and "job id" in err, "cancel without a job: exit 2", err)
code, out, err = sluice("cancel", "x1")
t.ok(code == 2 and one_line(err) and "job id" in err, "cancel of a non-number: exit 2", err)

# ---- a coordinator that never answers -----------------------------------------------------------
ctx = zmq.Context()
silent = ctx.socket(zmq.ROUTER)  # accepts the connection, never answers
silent.setsockopt(zmq.LINGER, 0)
silent_port = free_port()
silent.bind(f"tcp://127.0.0.1:{silent_port}")
for cmd in (["status", "1"], ["cancel", "1"], ["workers"], ["schedule", "ls"],
            ["submit", "a", "b", "--table", "t"]):
    t0 = time.time()
    code, out, err = sluice(*cmd, "--coordinator", f"tcp://127.0.0.1:{silent_port}",
                            "--request-timeout", "0.5")
    took = time.time() - t0
    t.ok(code == 2 and one_line(err) and f"127.0.0.1:{silent_port} did not answer within 0.5 s"
         in err and took < 10,
         f"{' '.join(cmd[:2])} to a silent coordinator: exit 2 in {took:.1f} s, one line", err)
silent.close()

# ---- a real coordinator --------------------------------------------------------------------------
cl = Cluster({}, hb_timeout=2.0)
a, b = os.path.join(cl.dir, "a.db"), os.path.join(cl.dir, "b.db")
for path in (a, b):
    with sqlite3.connect(path) as s:
        s.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        s.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"v{i}") for i in range(1, 201)])
with open(cl.dbfile, "w") as f:
    f.write(f"a=sqlite:{a}\nb=sqlite:{b}\n")
cl.start_coordinator()

# no worker yet: jobs stay queued
queued = cl.submit("a", "b", "--table", "t")
t.ok(queued is not None and cl.status(queued)["state"] == "queued", "a job waits for workers")
code, out, err = cl.client("cancel", str(queued))
t.ok(code == 0 and not err, f"cancel of the queued job {queued}: exit 0", f"exit {code}\n{out}{err}")
st = cl.status(queued)
t.ok(st and st["state"] == "cancelled", "the cancelled job ends cancelled", st)
code, out, err = cl.client("cancel", str(queued))
t.ok(code == 2 and one_line(err) and
     f"job {queued} already finished (cancelled); nothing to cancel" in err,
     "cancel of it again: exit 2, one line", err)
code, out, err = cl.client("cancel", "999999")
t.ok(code == 2 and one_line(err) and "999999" in err and "no such job" in err,
     "cancel of an unknown job: exit 2, one line", err)

code, out, err = cl.client("submit", "a", "b", "--table", "t", "--no-progress", "--priority", "high",
                           "--max-tasks", "2")
high = int(out) if code == 0 and out.strip().isdigit() else None
t.ok(high is not None, "submit --priority high --max-tasks 2 is accepted", f"exit {code}\n{err}")
plain = cl.submit("a", "b", "--table", "t", "--priority", "normal")
with sqlite3.connect(cl.state) as s:
    specs = dict(s.execute("SELECT id, spec FROM jobs").fetchall())


def spec_of(job):
    frame = specs.get(job, b"\x01")
    return msgpack.unpackb(frame[1:], raw=False) if frame[:1] == b"\x00" else {}


t.ok(spec_of(high).get("priority") == "high" and spec_of(high).get("max_tasks") == 2,
     "the job's spec carries priority \"high\" and max_tasks 2", spec_of(high))
t.ok("priority" not in spec_of(plain) and "max_tasks" not in spec_of(plain),
     "a normal job's spec carries neither (as before)", spec_of(plain))

cl.start_worker()
t.ok(cl.wait_workers(1), "a worker is up")
done = cl.wait_state(high)
t.ok(done and done["state"] == "done", "the high-priority job runs to done", done)
code, out, err = cl.client("cancel", str(high))
t.ok(code == 2 and one_line(err) and
     f"job {high} already finished (done); nothing to cancel" in err,
     "cancel of a finished job: exit 2, one line", err)
code, out, err = cl.client("workers")
t.ok(code == 0 and " alive " in out and "databases: a b" in out, "workers still lists them", out)

# ---- watch: a malformed event is skipped with a line, the next one printed -----------------------
pub = ctx.socket(zmq.XPUB)  # hears the subscription: nothing is sent before it
pub.setsockopt(zmq.LINGER, 0)
pub.setsockopt(zmq.RCVTIMEO, 20000)
events_port = free_port()
pub.bind(f"tcp://127.0.0.1:{events_port}")
watch = subprocess.Popen([SLUICE, "watch", "--events", f"tcp://127.0.0.1:{events_port}",
                          "--format", "json", "--count", "1", "--timeout", "20"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, **SAN_ENV))
good = b"\x00" + msgpack.packb({"v": 1, "t": 17, "id": 0, "event": "job", "job": 5,
                                 "state": "done", "error": None, "at_ms": 1})
bad_kind = b"\x00" + msgpack.packb({"v": 1, "t": 17, "id": 0, "event": "divergence", "job": 5,
                                     "kind": "weird", "at_ms": 1})


def publish():
    try:
        pub.recv()
    except zmq.Again:
        return
    for frames in ([b"job.5", b"\x00\xc1garbage"], [b"job.5", bad_kind], [b"job.5", good]):
        pub.send_multipart(frames)
        time.sleep(0.1)


th = threading.Thread(target=publish)
th.start()
out, err = watch.communicate(timeout=60)
th.join()
check_sanitizer(watch.returncode, err, "sluice watch")
lines = [json.loads(l) for l in out.splitlines() if l.strip()]
t.ok(watch.returncode == 0 and lines == [{"event": "job", "job": 5, "at_ms": 1, "state": "done"}],
     "watch prints the good event after two bad ones", f"exit {watch.returncode}\n{out}\n{err}")
t.ok(err.count("skipped an event") == 2 and "weird" in err,
     "each bad event is one line on stderr naming what is wrong", err)
pub.close()
ctx.term()

cl.stop()
t.ok(not cl.sanitizer_reports(), "no sanitizer report", "\n".join(cl.sanitizer_reports()))
t.done()
