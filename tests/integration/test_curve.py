#!/usr/bin/python3
"""Optional CURVE security: with keys from `sluice keygen`, a coordinator
serves encrypted sockets and admits only allowed client keys; workers and
clients with the right keys work, others get no answer."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Cluster  # noqa: E402
from harness import SLUICE, Tap  # noqa: E402

t = Tap()
cl = Cluster({})
src, tgt = os.path.join(cl.dir, "s.db"), os.path.join(cl.dir, "t.db")
import sqlite3  # noqa: E402
for path in (src, tgt):
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    c.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"v{i}") for i in range(1, 2001)])
    if path == tgt:
        c.execute("UPDATE t SET v = 'x' WHERE id = 5")
    c.commit()
    c.close()
with open(cl.dbfile, "w") as f:
    f.write(f"source=sqlite:{src}\ntarget=sqlite:{tgt}\n")
keys = {}
for name in ("coord", "worker", "client", "stranger"):
    prefix = os.path.join(cl.dir, name)
    code, out, err = cl.run("keygen", prefix)
    keys[name] = prefix
    t.ok(code == 0 and os.stat(prefix + ".key").st_mode & 0o077 == 0,
         f"keygen {name}: key pair written, secret key readable by its owner only")
allowed = os.path.join(cl.dir, "allowed")
with open(allowed, "w") as f:
    f.write(open(keys["worker"] + ".pub").read() + open(keys["client"] + ".pub").read())

cl.coordinator = subprocess.Popen(
    [SLUICE, "coordinator", "--workers-endpoint", cl.workers_ep, "--clients-endpoint",
     cl.clients_ep, "--events-endpoint", cl.events_ep, "--state", "sqlite:" + cl.state,
     "--curve-secret", keys["coord"] + ".key", "--curve-clients", allowed],
    stderr=cl._log("coordinator"), env=cl.env)
w = subprocess.Popen([SLUICE, "worker", "--coordinator", cl.workers_ep, "--db-file", cl.dbfile,
                      "--curve-server-key", keys["coord"] + ".pub", "--curve-key",
                      keys["worker"] + ".key"], stderr=cl._log("worker"), env=cl.env)
cl.workers.append(w)
intruder = subprocess.Popen([SLUICE, "worker", "--coordinator", cl.workers_ep, "--db-file",
                             cl.dbfile], stderr=cl._log("intruder"), env=cl.env)
cl.workers.append(intruder)
time.sleep(1.5)
good = ["--curve-server-key", keys["coord"] + ".pub", "--curve-key", keys["client"] + ".key"]
code, out, err = cl.client("workers", *good)
t.ok(code == 0 and out.count(" alive ") == 2,
     "an allowed client sees the allowed worker's 2 slots, not the keyless worker", out + err)
code, out, err = cl.client("submit", "source", "target", "--table", "t", "--wait", "--no-progress",
                           *good)
t.ok(code == 1 and "id=5" in out, "an allowed client runs a job over CURVE", out + err)
code, out, err = cl.client("workers", "--curve-server-key", keys["coord"] + ".pub",
                           "--curve-key", keys["stranger"] + ".key")
t.ok(code == 2 and "CURVE" in err, "a client whose key is not allowed gets no answer", err)
code, out, err = cl.client("workers")
t.ok(code == 2 and "curve-server-key" in err, "a plaintext client gets no answer, and a hint", err)
code, out, err = cl.client("workers", "--curve-server-key", "tooshort")
t.ok(code == 2 and "Z85" in err, "a malformed key is refused with a clear message", err)
cl.stop()
t.ok(not cl.sanitizer_reports(), "no sanitizer report", "\n".join(cl.sanitizer_reports()))
t.done()
