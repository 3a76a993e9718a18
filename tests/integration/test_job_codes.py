#!/usr/bin/python3
"""Errors with codes, coordinator side (issue 10, item 6): clients map codes,
not strings. Unknown jobs are not_found, a bad submit or a cancel of a
finished job invalid, a job failing on a missing table carries not_found in
its status and its job event, a job no worker can serve lost_worker, and the
client library and the CLI see the same codes."""
import os
import sqlite3
import sys
import time

import msgpack
import zmq

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Client, Cluster  # noqa: E402
from harness import Tap  # noqa: E402

t = Tap()
T_REPLY, T_ERROR = 10, 11

cl = Cluster({}, hb_timeout=2)
src, tgt = os.path.join(cl.dir, "src.db"), os.path.join(cl.dir, "tgt.db")
for path in (src, tgt):
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    c.executemany("INSERT INTO t VALUES (?, ?)", ((i, str(i)) for i in range(1, 101)))
    c.commit()
    c.close()
with open(cl.dbfile, "w") as f:
    f.write(f"src=sqlite:{src}\ntgt=sqlite:{tgt}\n")
cl.start_coordinator()
cl.start_worker(slots=1)
t.ok(cl.wait_workers(1), "a coordinator and a worker")
cli = Client(cl.clients_ep)
sub = zmq.Context.instance().socket(zmq.SUB)
sub.setsockopt(zmq.SUBSCRIBE, b"")
sub.connect(cl.events_ep)
time.sleep(0.3)

r = cli.call(cli.T_STATUS, job=999)
t.ok(r["t"] == T_ERROR and r.get("code") == "not_found", "status of an unknown job: not_found",
     f"{r}")
r = cli.call(cli.T_CANCEL, job=999)
t.ok(r["t"] == T_ERROR and r.get("code") == "not_found", "cancel of an unknown job: not_found",
     f"{r}")
r = cli.call(cli.T_SUBMIT, source="src", target="tgt")
t.ok(r["t"] == T_ERROR and r.get("code") == "invalid" and "table" in r["error"],
     "a submit without a table: invalid", f"{r}")
r = cli.call(cli.T_SUBMIT, source="src", target="tgt", table="t", priority="urgent")
t.ok(r["t"] == T_ERROR and r.get("code") == "invalid", "an unknown priority: invalid", f"{r}")
r = cli.call(1)  # a hello: a type, but not one clients send
t.ok(r["t"] == T_ERROR and r.get("code") == "invalid", "a message clients may not send: invalid",
     f"{r}")

ok = cli.submit(table="t")
s = cli.wait(ok, timeout=60)
t.ok(s and s["state"] == "done" and s.get("error_code") is None, "a good job: done, no code")
r = cli.call(cli.T_CANCEL, job=ok)
t.ok(r["t"] == T_ERROR and r.get("code") == "invalid" and "already finished" in r["error"],
     "cancel of a finished job: invalid", f"{r}")

missing = cli.submit(table="nope")
s = cli.wait(missing, timeout=60)
t.ok(s and s["state"] == "failed" and s.get("error_code") == "not_found",
     "a job on a missing table fails with not_found in its status", f"{s}")
seen = None
end = time.time() + 5
while time.time() < end and seen is None:
    if sub.poll(200):
        topic, frame = sub.recv_multipart()
        m = msgpack.unpackb(frame[1:], raw=False) if frame[0] == 0 else {}
        if m.get("event") == "job" and m.get("job") == missing and m.get("state") == "failed":
            seen = m
t.ok(seen is not None and seen.get("code") == "not_found",
     "its job event carries the code too", f"{seen}")
code, out, err = cl.client("status", str(missing), "--format", "json")
t.ok('"error_code": "not_found"' in out, "sluice status --format json shows the code", out)

code, out, err = cl.client("cancel", "12345")
t.ok(code == 2 and len(err.strip().splitlines()) == 1, "sluice cancel of an unknown job: exit 2, "
     "one line", err)

nobody = cli.submit(table="t", source="src", target="elsewhere")
s = cli.wait(nobody, timeout=60)
t.ok(s and s["state"] == "failed" and s.get("error_code") == "lost_worker",
     "a job no worker can serve fails with lost_worker", f"{s}")
cl.stop()
t.ok(not cl.sanitizer_reports(), "no sanitizer reports", "\n".join(cl.sanitizer_reports()))
t.done()
