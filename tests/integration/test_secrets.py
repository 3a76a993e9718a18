#!/usr/bin/python3
"""Passwords never shown, and no wait without end.

Passwords: a bad %-escape, a malformed IPv6 URI, an unencoded '@', a wrong
password, a coordinator --state: no stderr, stdout, log line, job error or
process title holds the password. Deadlines: a server that accepts and
never answers, one that answers the start-up and then stalls, a real table
locked by another session (sluice diff and a cluster worker), a locked
SQLite file: each ends in exit 2 with a message saying what to change.
libpq NOTICEs are never printed raw."""
import os
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Cluster  # noqa: E402
from harness import SAN_ENV, SLUICE, PgServer, Tap, free_port  # noqa: E402

t = Tap()
pg = PgServer()
db = pg.createdb("secrets")
c = pg.connect(db)
cur = c.cursor()
cur.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
cur.execute("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 200) g")
cur.execute("CREATE TABLE locked (id int PRIMARY KEY, v text)")
cur.execute("INSERT INTO locked SELECT g, 'v' || g FROM generate_series(1, 200) g")
cur.execute("""CREATE FUNCTION noisy(i int) RETURNS int AS $$
BEGIN
  RAISE NOTICE 'noisy notice %', i;
  RAISE WARNING 'noisy warning %', i;
  IF i = 150 THEN RAISE EXCEPTION 'noisy failure at %', i; END IF;
  RETURN i;
END $$ LANGUAGE plpgsql""")
cur.execute("CREATE VIEW noisy_ok AS SELECT id, noisy(id) % 100 AS n FROM t WHERE id < 100")
cur.execute("CREATE VIEW noisy_bad AS SELECT id, noisy(id) AS n FROM t")
PW = "S3cretPw"  # the password in the DSNs below; never in any output
tmp = tempfile.mkdtemp()
lite = os.path.join(tmp, "t.db")
with sqlite3.connect(lite) as s:
    s.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    s.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"v{i}") for i in range(1, 201)])


def no_secret(text, *secrets):
    return not any(s in text for s in secrets)


def run(*args, env=None, timeout=90):
    """sluice, where a hang is a failure (exit None), not a test crash."""
    e = dict(os.environ, **SAN_ENV)
    e.pop("PGPASSWORD", None)
    e.update(env or {})
    try:
        r = subprocess.run([SLUICE] + list(args), capture_output=True, text=True, env=e,
                           timeout=timeout)
        return r.returncode, r.stdout, r.stderr
    except subprocess.TimeoutExpired:
        return None, "", f"(no end within {timeout} s)"


def check(name, args, must, secrets=(PW,), env=None, max_s=None):
    t0 = time.time()
    code, out, err = run("diff", *args, "--no-progress", env=env)
    took = time.time() - t0
    lines = [l for l in err.splitlines() if l.strip()]
    good = (code == 2 and len(lines) == 1 and all(m.lower() in err.lower() for m in must)
            and no_secret(err + out, *secrets) and "Sanitizer" not in err
            and (max_s is None or took < max_s))
    t.ok(good, f"{name}: exit 2, one line, no password",
         f"exit {code} after {took:.1f} s\nstderr: {err}\nstdout: {out[:300]}")
    if good:
        t.diag(f"  {lines[0]}")
    return err


# ---- item 3: passwords ---------------------------------------------------------------------

check("bad %-escape in the password",
      [f"postgresql://app:{PW}%zz@127.0.0.1/db", "sqlite:" + lite, "--table", "t"],
      ["invalid connection string", "%25"])
check("malformed IPv6 URI with a password",
      [f"postgresql://app:{PW}@[::1/db", "sqlite:" + lite, "--table", "t"],
      ["invalid connection string", "IPv6"])
check("conninfo with an unterminated quote",
      [f"host=127.0.0.1 password='{PW}", "sqlite:" + lite, "--table", "t"],
      ["invalid connection string", "quot"])
check("conninfo with the password where a keyword goes",
      [f"host=127.0.0.1 {PW}", "sqlite:" + lite, "--table", "t"], ["invalid connection string"])
# libpq would take "p" for the password and "Pw@host" for the host
check("unencoded '@' in the password",
      [f"postgresql://sluice:S3cret@Pw@127.0.0.1:{pg.port}/{db}", "sqlite:" + lite, "--table",
       "t"], ["%40"], secrets=("S3cret@Pw", "Pw@", "cret"))
check("wrong password (target)", ["sqlite:" + lite, pg.dsn(db, password=PW), "--table", "t"],
      ["password authentication failed"])
check("wrong password in a conninfo string",
      [f"host=127.0.0.1 port={pg.port} user=sluice password={PW} dbname={db}",
       "sqlite:" + lite, "--table", "t"], ["password authentication failed"])
check("wrong PGPASSWORD",
      [f"postgresql://sluice@127.0.0.1:{pg.port}/{db}", "sqlite:" + lite, "--table", "t"],
      ["password authentication failed"], env={"PGPASSWORD": PW})
check("password in a port that is not a number",
      [f"host=127.0.0.1 port={PW} password={PW}", "sqlite:" + lite, "--table", "t"],
      ["cannot connect"])

# the names in a report never carry the password
code, out, err = run("diff", pg.dsn(db), "sqlite:" + lite, "--table", "t", "--format", "json",
                        "--no-progress")
t.ok(code == 0 and "postgresql://sluice@127.0.0.1" in out and pg.PASSWORD not in out + err,
     "the report names the server without its password", out[:400] + err)

# ---- item 4: deadlines ---------------------------------------------------------------------


def silent_server():
    """Accepts connections and never writes a byte."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held = []

    def loop():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            held.append(conn)
    threading.Thread(target=loop, daemon=True).start()
    return srv.getsockname()[1]


def recvn(s, n):
    b = b""
    while len(b) < n:
        chunk = s.recv(n - len(b))
        if not chunk:
            raise EOFError
        b += chunk
    return b


def stalling_server():
    """Speaks the PostgreSQL start-up (no password asked), then reads
    queries and never answers them."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)

    def serve(conn):
        try:
            while True:
                n, code = struct.unpack("!ii", recvn(conn, 8))
                if n == 8 and code in (80877103, 80877104):  # SSL / GSS requests: no
                    conn.sendall(b"N")
                    continue
                recvn(conn, n - 8)
                break
            out = b"R" + struct.pack("!ii", 8, 0)
            for k, v in [("server_version", "15.0"), ("client_encoding", "UTF8"),
                         ("standard_conforming_strings", "on"), ("integer_datetimes", "on")]:
                body = k.encode() + b"\0" + v.encode() + b"\0"
                out += b"S" + struct.pack("!i", 4 + len(body)) + body
            out += b"K" + struct.pack("!iii", 12, 4242, 1)
            out += b"Z" + struct.pack("!i", 5) + b"I"
            conn.sendall(out)
            while conn.recv(65536):
                pass
        except (EOFError, OSError):
            pass

    def loop():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()
    return srv.getsockname()[1]


silent = silent_server()
stall = stalling_server()
check("a server that accepts and never answers (PGCONNECT_TIMEOUT=2)",
      [f"postgresql://sluice:{PW}@127.0.0.1:{silent}/db", "sqlite:" + lite, "--table", "t"],
      [f"127.0.0.1:{silent}", "no answer within 2 s", "connect_timeout"],
      env={"PGCONNECT_TIMEOUT": "2"}, max_s=30)
check("the same, connect_timeout=3 in the DSN",
      [f"postgresql://sluice:{PW}@127.0.0.1:{silent}/db?connect_timeout=3", "sqlite:" + lite,
       "--table", "t"], [f"127.0.0.1:{silent}", "within 3 s"], max_s=30)
check("the same, the default connect timeout (10 s)",
      [f"postgresql://sluice:{PW}@127.0.0.1:{silent}/db", "sqlite:" + lite, "--table", "t"],
      [f"127.0.0.1:{silent}", "within 10 s"], max_s=40)
check("a server that answers the start-up, then stalls (--read-timeout 2)",
      [f"postgresql://sluice:{PW}@127.0.0.1:{stall}/db", "sqlite:" + lite, "--table", "t",
       "--read-timeout", "2"], [f"127.0.0.1:{stall}", "no data from the server for 2 s",
                                "--read-timeout"], max_s=30)

# the process title of a running diff: SOURCE and TARGET blanked
env = dict(os.environ, **SAN_ENV, PGCONNECT_TIMEOUT="20")
p = subprocess.Popen([SLUICE, "diff", f"postgresql://sluice:{PW}@127.0.0.1:{silent}/db",
                      f"host=127.0.0.1 port={silent} password={PW}x", "--table", "t",
                      "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
cmdline = b""
for _ in range(50):
    time.sleep(0.2)
    cmdline = open(f"/proc/{p.pid}/cmdline", "rb").read()
    if b"*****" in cmdline:
        break
t.ok(PW.encode() not in cmdline and b"--table" in cmdline,
     "/proc/PID/cmdline of a running sluice diff shows no password", cmdline)
p.send_signal(signal.SIGKILL)
p.communicate()

# a real table locked by another session
locker = pg.connect(db)
locker.autocommit = False
locker.cursor().execute("LOCK TABLE locked IN ACCESS EXCLUSIVE MODE")
check("a table locked by another session (--read-timeout 2)",
      [pg.dsn(db), pg.dsn(db), "--table", "locked", "--read-timeout", "2"],
      [f"127.0.0.1:{pg.port}", "no data from the server for 2 s", "--read-timeout"],
      secrets=(pg.PASSWORD,), max_s=60)

# the same through a cluster worker started with --read-timeout
cl = Cluster({"src": pg.dsn(db), "tgt": pg.dsn(db)}, hb_timeout=10,
             state=f"postgresql://sluice:{pg.PASSWORD}@127.0.0.1:{pg.port}/{db}")
cl.start_coordinator()
wlog = open(os.path.join(cl.dir, "worker-rt.log"), "w")
cl.logs.append(wlog)
cl.workers.append(subprocess.Popen(
    [SLUICE, "worker", "--coordinator", cl.workers_ep, "--db-file", cl.dbfile, "--slots", "2",
     "--heartbeat", "0.3", "--read-timeout", "2"], stdout=subprocess.DEVNULL, stderr=wlog,
    env=cl.env))
t.ok(cl.wait_workers(1), "cluster: the worker is up")
t0 = time.time()
try:
    code, out, err = cl.run("submit", "src", "tgt", "--table", "locked", "--wait", "--no-progress",
                            "--coordinator", cl.clients_ep, timeout=120)
except subprocess.TimeoutExpired:
    code, out, err = None, "", "(no end within 120 s)"
took = time.time() - t0
t.ok(code == 2 and "no data from the server for 2 s" in err and "--read-timeout" in err
     and took < 120, "cluster: a worker's --read-timeout ends the job, exit 2",
     f"exit {code} after {took:.1f} s\n{err}\n{out}")
locker.rollback()
code, out, err = cl.client("submit", "src", "tgt", "--table", "t", "--wait", "--no-progress")
t.ok(code == 0, "cluster: the next job runs (the worker dropped the stalled session)", out + err)
# a job failing on a wrong password: the error stored, published and printed has no password
with open(cl.dbfile, "a") as f:
    f.write(f"bad={pg.dsn(db, password=PW)}\n")
cl.start_worker()
t.ok(cl.wait_workers(2), "cluster: a worker with a wrong password is up")
code, out, err = cl.client("submit", "bad", "tgt", "--table", "t", "--wait", "--no-progress")
job = [l for l in err.split() if l.isdigit()]
st_code, st_out, st_err = cl.client("status", job[0] if job else "1")
t.ok(code == 2 and "password authentication failed" in err
     and no_secret(err + out + st_out + st_err, PW, pg.PASSWORD),
     "cluster: a wrong password fails the job without showing it",
     f"exit {code}\n{err}\n{st_out}")
cmd = open(f"/proc/{cl.coordinator.pid}/cmdline", "rb").read()
t.ok(pg.PASSWORD.encode() not in cmd, "coordinator: --state blanked in /proc/PID/cmdline", cmd)
cl.stop()
logs = ""
for name in os.listdir(cl.dir):
    if name.endswith(".log"):
        logs += open(os.path.join(cl.dir, name)).read()
t.ok("state postgresql://sluice:***@" in logs and no_secret(logs, PW, pg.PASSWORD),
     "cluster: no log line holds a password (the --state is shown redacted)", logs[-2000:])
t.ok(not cl.sanitizer_reports(), "cluster: no sanitizer report", "\n".join(cl.sanitizer_reports()))

code, out, err = run("coordinator", "--state", f"postgresql://app:{PW}%zz@127.0.0.1/db",
                        "--workers-endpoint", f"tcp://127.0.0.1:{free_port()}")
t.ok(code == 2 and "--state" in err and "%25" in err and no_secret(err + out, PW),
     "coordinator: a bad --state DSN is explained without its password", err)
code, out, err = run("coordinator", "--state",
                        f"postgresql://sluice:{PW}@127.0.0.1:{pg.port}/{db}",
                        "--workers-endpoint", f"tcp://127.0.0.1:{free_port()}")
t.ok(code == 2 and "password authentication failed" in err and no_secret(err + out, PW),
     "coordinator: a wrong --state password is not shown", err)

# SQLite: a writer's lock is waited out up to the read deadline, then an error
holder = sqlite3.connect(lite, isolation_level=None)
holder.execute("BEGIN EXCLUSIVE")
check("a SQLite file locked by a writer (--read-timeout 1)",
      ["sqlite:" + lite, "sqlite:" + lite, "--table", "t", "--read-timeout", "1"],
      ["locked", "--read-timeout"], max_s=30)
holder.execute("ROLLBACK")
holder.close()

# ---- item 11: libpq notices ----------------------------------------------------------------

code, out, err = run("diff", pg.dsn(db), pg.dsn(db), "--table", "noisy_ok", "--key", "id",
                        "--no-progress")
t.ok(code == 0 and "noisy" not in err and "NOTICE" not in err and "WARNING" not in err,
     "NOTICE and WARNING lines from the server are not printed", f"exit {code}\n{err}")
check("a NOTICE before an error", [pg.dsn(db), pg.dsn(db), "--table", "noisy_bad", "--key", "id"],
      ["noisy failure at 150"], secrets=(pg.PASSWORD, "NOTICE", "WARNING"))

t.done()
