#!/usr/bin/python3
"""Small things of the command line: every --help prints usage and exits
0, SQLite paths that are empty or missing are named as such (and never
created), and `sluice report JOB` prints a finished job's report as
`submit --wait` does, exiting the same way, through a real coordinator and
worker."""
import json
import os
import sqlite3
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Cluster  # noqa: E402
from harness import Tap, sluice  # noqa: E402

t = Tap()

for cmd in ["diff", "submit", "coordinator", "worker", "status", "watch", "workers", "keygen",
            "report"]:
    code, out, err = sluice(cmd, "--help")
    t.ok(code == 0 and out.startswith("usage: sluice") and out.endswith("\n") and not err,
         f"sluice {cmd} --help: usage on stdout, exit 0", f"exit {code}\n{out}\n{err}")
code, out, err = sluice("--help")
t.ok(code == 0 and out.endswith("\n") and "report JOB" in out, "sluice --help ends in a newline",
     repr(out[-80:]))

tmp = tempfile.mkdtemp()
a, b, c_, e1, e2 = (os.path.join(tmp, n) for n in ("a.db", "b.db", "c.db", "e1.db", "e2.db"))
for path, rows in ((a, range(1, 301)), (b, range(1, 301)), (c_, range(2, 302))):
    with sqlite3.connect(path) as s:
        s.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        s.execute("CREATE TABLE t2 (id INTEGER PRIMARY KEY, v TEXT)")
        s.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"v{i}") for i in rows])
        s.executemany("INSERT INTO t2 VALUES (?, ?)", [(i, f"w{i}") for i in rows])
for path in (e1, e2):
    with sqlite3.connect(path) as s:
        s.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")

code, out, err = sluice("diff", "sqlite:", "sqlite:" + a, "--table", "t", "--no-progress")
t.ok(code == 2 and "path is empty" in err and "does not exist" not in err,
     "sqlite: with an empty path says so", err)
missing = os.path.join(tmp, "missing.db")
code, out, err = sluice("diff", "sqlite:" + a, "sqlite:" + missing, "--table", "t",
                        "--no-progress")
t.ok(code == 2 and "missing.db" in err and "does not exist" in err
     and not os.path.exists(missing), "a missing SQLite file is named and not created", err)

# ---- sluice report -----------------------------------------------------------------------------

cl = Cluster({"a": "sqlite:" + a, "b": "sqlite:" + b, "c": "sqlite:" + c_, "e1": "sqlite:" + e1,
              "e2": "sqlite:" + e2})
cl.start_coordinator()
# submitted before any worker is up: the job waits, and has no report yet
early = cl.submit("a", "b", "--table", "t")
code, out, err = cl.client("report", str(early))
t.ok(code == 2 and "no report yet" in err and not out,
     "report of a job not finished: exit 2, says so", f"exit {code}\n{out}\n{err}")
cl.start_worker()
t.ok(cl.wait_workers(1), "the worker is up")
t.ok(cl.wait_state(early) is not None, "the early job finishes")
code, out, err = cl.client("report", str(early))
t.ok(code == 0 and "identical" in out,
     "report of equal tables: exit 0", f"exit {code}\n{out}\n{err}")

diff_job = cl.submit("a", "c", "--table", "t", "--target-table", "t2")
cl.wait_state(diff_job)
code, out, err = cl.client("report", str(diff_job))
code_w, out_w, err_w = cl.client("submit", "a", "c", "--table", "t", "--target-table", "t2",
                                 "--wait", "--no-progress")


def body(text):  # the report without its timing line
    return [l for l in text.splitlines() if not l.startswith("compared in")]


t.ok(code == 1 and code_w == 1 and body(out) == body(out_w) and "table t2" in out,
     "report of differing tables: exit 1, the same text as submit --wait",
     f"exit {code} / {code_w}\n{out}\n---\n{out_w}\n{err}")
code, out, err = cl.client("report", str(diff_job), "--format", "json")
code_w, out_w, _ = cl.client("submit", "a", "c", "--table", "t", "--target-table", "t2", "--wait",
                             "--no-progress", "--format", "json")
try:
    doc, doc_w = json.loads(out), json.loads(out_w)
    for d in (doc, doc_w):
        d["summary"].pop("elapsed_seconds", None)
    same = doc == doc_w and doc["target"]["table"] == "t2"
except ValueError:
    same = False
t.ok(code == 1 and same and doc["summary"]["missing_in_target"] == 1,
     "report --format json: the same document as submit --wait", f"exit {code}\n{out}\n{out_w}")

code, out, err = cl.client("report", "999999")
t.ok(code == 2 and "no such job" in err and not out, "report of an unknown job: exit 2", err)
bad = cl.submit("a", "b", "--table", "nosuch")
cl.wait_state(bad)
code, out, err = cl.client("report", str(bad))
t.ok(code == 2 and "failed" in err and "nosuch" in err and not out,
     "report of a failed job: exit 2 with its error", f"exit {code}\n{out}\n{err}")
empty = cl.submit("e1", "e2", "--table", "t")
cl.wait_state(empty)
code, out, err = cl.client("report", str(empty))
t.ok(code == 2 and "empty" in err, "report of a job that compared no row: exit 2", err)
code, out, err = cl.client("report", str(empty), "--allow-empty")
t.ok(code == 0, "report --allow-empty of that job: exit 0", f"exit {code}\n{out}\n{err}")
code, out, err = cl.client("report")
t.ok(code == 2 and "job id" in err, "report without a job id: exit 2", err)
cl.stop()
t.ok(not cl.sanitizer_reports(), "no sanitizer report", "\n".join(cl.sanitizer_reports()))
t.done()
