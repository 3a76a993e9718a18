#!/usr/bin/python3
"""Workers of another canonical encoding version are never registered: two
versions in one job would hash some equal values apart (version 1 encoded
numbers of over 512 digits as text). A hello without a version is version 1."""
import os
import sqlite3
import sys
import tempfile
import time

import msgpack
import zmq

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Cluster  # noqa: E402
from harness import Tap  # noqa: E402

T_HELLO = 1
t = Tap()
tmp = tempfile.mkdtemp()
path = os.path.join(tmp, "a.db")
c = sqlite3.connect(path)
c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
c.commit()
c.close()
cl = Cluster({"db": "sqlite:" + path})
cl.start_coordinator()
ctx = zmq.Context()


def hello(fields):
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(cl.workers_ep)
    s.send(b"\x00" + msgpack.packb(dict({"v": 1, "t": T_HELLO, "id": 0, "dbs": ["db"]},
                                        **fields), use_bin_type=True))
    return s


def log():
    with open(os.path.join(cl.dir, "coordinator.log")) as f:
        return f.read()


old = hello({})
t.ok(not cl.wait_workers(1, timeout=3), "a hello without an encoding version (v1) is not "
     "registered")
t.ok("version 1 was not registered" in log() and "needs version 2" in log(),
     "the coordinator logs why", log()[-500:])
other = hello({"enc": 3})
t.ok(not cl.wait_workers(1, timeout=3), "a hello of encoding version 3 is not registered")
same = hello({"enc": 2})
t.ok(cl.wait_workers(1, timeout=10), "a hello of the coordinator's encoding version is")
for s in (old, other, same):
    s.close()
ctx.term()
cl.stop()
t.ok(not cl.sanitizer_reports(), "no sanitizer report", "\n".join(cl.sanitizer_reports()))
t.done()
