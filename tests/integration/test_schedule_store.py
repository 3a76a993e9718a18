#!/usr/bin/python3
"""Scheduled audits kept in the control database and managed over the
client socket: schedule_add, schedule_del and schedules, sent as raw
ZeroMQ frames. An added schedule runs on its interval and produces jobs; a
restarted coordinator keeps it (and does not run it again before its
interval); removed, it stops; bad requests get an error reply and the
coordinator keeps serving; the schedule file's audits are put in the store
at start, and those the file no longer names are dropped."""
import json
import os
import signal
import sqlite3
import sys
import time

import msgpack
import zmq

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Cluster  # noqa: E402
from harness import SLUICE, Tap  # noqa: E402

T_HELLO, T_REPLY, T_ERROR, T_SUBMIT, T_STATUS = 1, 10, 11, 13, 14
T_SCHEDULE_ADD, T_SCHEDULE_DEL, T_SCHEDULES = 18, 19, 20

t = Tap()
cl = Cluster({}, hb_timeout=2.0)
src, tgt = os.path.join(cl.dir, "src.db"), os.path.join(cl.dir, "tgt.db")
for path in (src, tgt):
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance NUMERIC, owner TEXT)")
    c.executemany("INSERT INTO accounts VALUES (?, ?, ?)",
                  [(i, i * 10.5, f"owner {i}") for i in range(1, 2001)])
    if path == tgt:
        c.execute("UPDATE accounts SET balance = 0 WHERE id = 77")
    c.commit()
    c.close()
with open(cl.dbfile, "w") as f:
    f.write(f"old=sqlite:{src}\nnew=sqlite:{tgt}\n")

ctx = zmq.Context()
sock = None
next_id = [1]


def encode(m):
    return b"\x00" + msgpack.packb(m, use_bin_type=True)


def decode(frame):
    return msgpack.unpackb(frame[1:], raw=False, strict_map_key=False)


def connect():
    global sock
    if sock is not None:
        sock.close(0)
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(cl.clients_ep)


def call(t_, **fields):
    """Sends one request; returns the reply as a dict, or None after 10 s."""
    rid = next_id[0]
    next_id[0] += 1
    sock.send(encode(dict(v=1, t=t_, id=rid, **fields)))
    end = time.time() + 10
    while time.time() < end:
        if sock.poll(int((end - time.time()) * 1000) + 1):
            r = decode(sock.recv())
            if r.get("id") == rid:
                return r
    return None


def ok_reply(r):
    return r is not None and r["t"] == T_REPLY


def schedules():
    r = call(T_SCHEDULES)
    return r["schedules"] if ok_reply(r) else None


def submit_frame(table="accounts", **extra):
    return encode(dict(v=1, t=T_SUBMIT, id=0, source="old", target="new", table=table, **extra))


def all_jobs():
    """Every job id in the control database."""
    c = sqlite3.connect(cl.state)
    rows = c.execute("SELECT id FROM jobs ORDER BY id").fetchall()
    c.close()
    return [r[0] for r in rows]


def wait_for(cond, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    return None


def restart(*extra):
    p = cl.coordinator
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=20)
    t.ok(p.returncode == 0, f"the coordinator stopped cleanly (exit {p.returncode})")
    import subprocess
    cl.coordinator = subprocess.Popen(
        [SLUICE, "coordinator", "--workers-endpoint", cl.workers_ep, "--clients-endpoint",
         cl.clients_ep, "--events-endpoint", cl.events_ep, "--state", "sqlite:" + cl.state,
         "--heartbeat-timeout", "2", *extra],
        stdout=subprocess.DEVNULL, stderr=cl._log("coordinator"), env=cl.env)
    connect()
    end = time.time() + 20
    while time.time() < end:
        lst = schedules()
        if lst is not None:
            return lst
    return None


cl.start_coordinator()
cl.start_worker(slots=2)
connect()
t.ok(cl.wait_workers(1), "a worker registered")
t.ok(schedules() == [], "a new coordinator lists no schedules", schedules())

# ---- add, list, run --------------------------------------------------------
r = call(T_SCHEDULE_ADD, name="acct", interval_s=1, spec=submit_frame())
t.ok(ok_reply(r) and set(r) == {"v", "t", "id"}, "schedule_add: an empty reply", r)
lst = schedules()
t.ok(lst is not None and len(lst) == 1 and lst[0][:3] == ["acct", 1, "accounts"],
     "schedules lists it: [name, interval_s, table, last job]", lst)

first = wait_for(lambda: (schedules() or [[None] * 4])[0][3])
t.ok(first is not None, f"the schedule queued a job (job {first})")
s = cl.wait_state(first, timeout=60) if first else None
t.ok(s is not None and s["state"] == "done" and s["changed"] == 1 and s["missing_in_target"] == 0,
     "the scheduled job ran to the exact answer (1 changed row)", s)
second = wait_for(lambda: (lambda j: j if j and j != first else None)(
    (schedules() or [[None] * 4])[0][3]), timeout=20)
t.ok(second is not None and second > first,
     f"it runs again on its interval (job {first}, then job {second})")

# ---- bad requests get an error reply; the coordinator keeps serving ---------
bad = [
    ("interval 0", dict(name="x", interval_s=0, spec=submit_frame()), "interval_s"),
    ("interval over a year", dict(name="x", interval_s=31536001, spec=submit_frame()),
     "interval_s"),
    ("interval not a number", dict(name="x", interval_s="1", spec=submit_frame()), "interval_s"),
    ("missing name", dict(interval_s=5, spec=submit_frame()), "name"),
    ("empty name", dict(name="", interval_s=5, spec=submit_frame()), "name"),
    ("name with a newline", dict(name="a\nb", interval_s=5, spec=submit_frame()), "name"),
    ("name of 256 bytes", dict(name="n" * 256, interval_s=5, spec=submit_frame()), "name"),
    ("missing spec", dict(name="x", interval_s=5), "spec"),
    ("spec not bytes", dict(name="x", interval_s=5, spec="submit"), "spec"),
    ("spec not a frame", dict(name="x", interval_s=5, spec=b"\x00\xc1garbage"), "spec"),
    ("spec a status frame", dict(name="x", interval_s=5,
                                 spec=encode(dict(v=1, t=T_STATUS, id=0, job=1))), "submit"),
    ("spec without a table", dict(name="x", interval_s=5, spec=encode(
        dict(v=1, t=T_SUBMIT, id=0, source="old", target="new"))), "table"),
    ("spec with bad ranges", dict(name="x", interval_s=5, spec=submit_frame(ranges=-1)),
     "ranges"),
]
for label, fields, needle in bad:
    r = call(T_SCHEDULE_ADD, **fields)
    t.ok(r is not None and r["t"] == T_ERROR and needle in r.get("error", "")
         and r.get("code") == "invalid",
         f"schedule_add with {label}: error reply (code invalid) naming {needle}", r)
r = call(T_SCHEDULE_DEL)
t.ok(r is not None and r["t"] == T_ERROR and "name" in r["error"],
     "schedule_del without a name: error reply", r)
r = call(T_HELLO, dbs=[])
t.ok(r is not None and r["t"] == T_ERROR and "schedule_add" in r["error"]
     and "schedules" in r["error"], "another message type: the error lists what clients may send",
     r)
lst = schedules()
t.ok(lst is not None and [x[0] for x in lst] == ["acct"],
     "after the bad requests the coordinator still serves, with nothing added", lst)
t.ok(cl.coordinator.poll() is None, "the coordinator is still running")

# ---- replace, and a second schedule; both survive a restart -----------------
r = call(T_SCHEDULE_ADD, name="keep", interval_s=3600, spec=submit_frame())
t.ok(ok_reply(r), "schedule_add of a second schedule (hourly)", r)
keep_job = wait_for(lambda: dict((x[0], x[3]) for x in (schedules() or [])).get("keep"))
t.ok(keep_job is not None, f"a new schedule runs at once (job {keep_job})")
cl.wait_state(keep_job, timeout=60)
r = call(T_SCHEDULE_ADD, name="acct", interval_s=2, spec=submit_frame())
lst = dict((x[0], x[1:]) for x in (schedules() or []))
t.ok(ok_reply(r) and lst.get("acct", [None])[0] == 2 and lst["acct"][2] is not None,
     "schedule_add of an existing name replaces its interval and keeps its last job", lst)

after = restart()
names = dict((x[0], x[1:]) for x in (after or []))
t.ok(set(names) == {"acct", "keep"} and names["keep"][0] == 3600 and names["acct"][0] == 2,
     "a restarted coordinator keeps the added schedules", after)
t.ok(cl.wait_workers(1), "the worker registered again")
time.sleep(3)
lst = dict((x[0], x[1:]) for x in (schedules() or []))
t.ok(lst.get("keep", [None, None, None])[2] == keep_job,
     "an hourly schedule that ran before the restart is not run again at once", lst)
t.ok(lst.get("acct", [None, None, None])[2] is not None and lst["acct"][2] > keep_job,
     "a due schedule runs after the restart", lst)

# ---- remove ------------------------------------------------------------------
r = call(T_SCHEDULE_DEL, name="acct")
t.ok(ok_reply(r) and r.get("removed") == 1, "schedule_del: removed 1", r)
r = call(T_SCHEDULE_DEL, name="acct")
t.ok(ok_reply(r) and r.get("removed") == 0, "schedule_del of a name no longer there: removed 0",
     r)
r = call(T_SCHEDULE_DEL, name="keep")
t.ok(ok_reply(r) and r.get("removed") == 1, "schedule_del of the second: removed 1", r)
t.ok(schedules() == [], "schedules lists none after the removals", schedules())
time.sleep(1)
for j in all_jobs():
    cl.wait_state(j, timeout=60)
before = all_jobs()
time.sleep(3)
t.ok(all_jobs() == before, f"a removed schedule queues nothing more ({len(before)} jobs)")

# ---- the schedule file: put in the store at start, kept in step ------------
def audits_file(name, *audits):
    path = os.path.join(cl.dir, name)
    with open(path, "w") as f:
        json.dump({"audits": [{"name": a, "every": "1h", "source": "old", "target": "new",
                               "table": "accounts"} for a in audits]}, f)
    return path


call(T_SCHEDULE_ADD, name="by-client", interval_s=3600, spec=submit_frame())
after = restart("--schedule", audits_file("s1.json", "from-file", "also-file"))
t.ok(sorted(x[0] for x in after or []) == ["also-file", "by-client", "from-file"],
     "the schedule file's audits are listed beside the client's", after)
after = restart("--schedule", audits_file("s2.json", "from-file"))
t.ok(sorted(x[0] for x in after or []) == ["by-client", "from-file"],
     "an audit the file no longer names is dropped; the client's stays", after)
after = restart()
t.ok(sorted(x[0] for x in after or []) == ["by-client"],
     "without --schedule, no file audits remain", after)

c = sqlite3.connect(cl.state)
ver = c.execute("SELECT version FROM sluice_schema").fetchall()
c.close()
t.ok(ver == [(3,)], f"the control database is at the latest schema version (3): {ver}")

sock.close(0)
ctx.term()
cl.stop()
t.ok(not cl.sanitizer_reports(), "no sanitizer report", "\n".join(cl.sanitizer_reports()))
t.done()
