#!/usr/bin/python3
"""`sluice schedule add|rm|ls`: scheduled audits managed over the client
socket. An audit added with --every runs on its interval and shows its
last job; rm removes it (a second rm is exit 2, one line); bad options are
refused with one line. Needs a coordinator that serves schedule_add,
schedule_del and schedules (issue 10's coordinator side)."""
import json
import os
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Cluster  # noqa: E402
from harness import Tap, sluice  # noqa: E402

t = Tap()


def one_line(err):
    return len([l for l in err.splitlines() if l.strip()]) == 1


cl = Cluster({}, hb_timeout=2.0)
a, b = os.path.join(cl.dir, "a.db"), os.path.join(cl.dir, "b.db")
for path in (a, b):
    with sqlite3.connect(path) as s:
        s.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        s.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"v{i}") for i in range(1, 201)])
with open(cl.dbfile, "w") as f:
    f.write(f"a=sqlite:{a}\nb=sqlite:{b}\n")

for args, needle in ((["x", "--every", "soon", "a", "b", "--table", "t"], "--every must be"),
                     (["x", "a", "b", "--table", "t"], "needs --every"),
                     (["x", "--every", "1h", "a", "b"], "--table"),
                     (["x", "--every", "1h", "a", "b", "--table", "t", "--wait"], "--wait"),
                     (["x", "--every", "1h", "a", "b", "--table", "t", "--priority", "top"],
                      "--priority must be")):
    code, out, err = sluice("schedule", "add", *args)
    t.ok(code == 2 and one_line(err) and needle in err, f"schedule add refuses ({needle})", err)
code, out, err = sluice("schedule")
t.ok(code == 2 and one_line(err), "schedule without add, rm or ls: exit 2, one line", err)
code, out, err = sluice("schedule", "drop", "x")
t.ok(code == 2 and one_line(err) and "add, rm or ls" in err, "an unknown subcommand", err)

cl.start_coordinator()
cl.start_worker()
t.ok(cl.wait_workers(1), "a worker is up")
code, out, err = cl.client("schedule", "ls")
t.ok(code == 0 and "0 scheduled audits" in out, "no audits at first", f"exit {code}\n{out}{err}")
code, out, err = cl.client("schedule", "add", "often", "--every", "2s", "a", "b", "--table", "t",
                           "--priority", "low")
t.ok(code == 0 and "often" in out, "schedule add often --every 2s: exit 0", f"exit {code}\n{out}{err}")
code, out, err = cl.client("schedule", "add", "daily", "--every", "1d", "a", "b", "--table", "t")
t.ok(code == 0, "schedule add daily --every 1d", err)
code, out, err = cl.client("schedule", "ls")
t.ok(code == 0 and "often  every 2s  table t" in out and "daily  every 1d  table t" in out
     and "2 scheduled audits" in out, "schedule ls lists both", out + err)
time.sleep(6)
code, out, err = cl.client("schedule", "ls", "--format", "json")
try:
    doc = {s["name"]: s for s in json.loads(out)}
except ValueError:
    doc = {}
often = doc.get("often", {})
t.ok(code == 0 and often.get("interval_s") == 2 and often.get("table") == "t"
     and isinstance(often.get("last_job"), int),
     "the audit ran: ls --format json shows its last job", out + err)
st = cl.wait_state(often.get("last_job") or 0, timeout=60) if often.get("last_job") else None
t.ok(st and st["state"] == "done", "its last job finished", st)
code, out, err = cl.client("schedule", "rm", "often")
t.ok(code == 0 and "removed" in out, "schedule rm often: exit 0", f"exit {code}\n{out}{err}")
code, out, err = cl.client("schedule", "rm", "often")
t.ok(code == 2 and one_line(err) and "often" in err, "rm of it again: exit 2, one line", err)
code, out, err = cl.client("schedule", "ls")
t.ok(code == 0 and "often" not in out and "1 scheduled audits" in out, "only daily is left", out)
cl.stop()
t.ok(not cl.sanitizer_reports(), "no sanitizer report", "\n".join(cl.sanitizer_reports()))
t.done()
