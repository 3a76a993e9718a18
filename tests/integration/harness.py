"""Test harness: a real PostgreSQL server of our own (and MariaDB's, MariaDbServer), TAP output, and a way
to run the sluice binary under test.

PgServer runs initdb as an unprivileged user (nobody, when we are root) in
a temporary directory, starts postgres on a free loopback port with
password authentication over TCP, and stops and removes it at exit.
"""
import atexit
import fcntl
import glob
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

import psycopg2

SLUICE = os.environ.get("SLUICE") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "asan", "sluice")
# Sanitizer reports must not look like "exit 1 = different". The sanitizer
# build has these exit codes compiled in (base/san_options.c); the
# environment says the same for any older binary.
SAN_ENV = {
    "ASAN_OPTIONS": "exitcode=86:detect_leaks=1:abort_on_error=0",
    "UBSAN_OPTIONS": "halt_on_error=1:exitcode=87:print_stacktrace=1",
    "LSAN_OPTIONS": "exitcode=88",
}
SAN_EXIT = {86: "AddressSanitizer", 87: "UndefinedBehaviorSanitizer", 88: "LeakSanitizer"}
SAN_FAILURES = []


def describe_run(args):
    """A command line fit to print: database names (which may carry a
    password) are left out."""
    return "sluice " + " ".join("<db>" if "://" in a or "=" in a or a.startswith("sqlite:")
                                else a for a in args[:12])


def check_sanitizer(code, err, what):
    """A sanitizer exit (86-88) is a failure of the test file whatever the
    test expected: its report is shown now, and Tap.done() fails."""
    if code not in SAN_EXIT:
        return False
    SAN_FAILURES.append(f"{SAN_EXIT[code]} (exit {code}): {what}")
    print(f"# {SAN_EXIT[code]} report (exit {code}) from {what}:", flush=True)
    for line in (err or "").splitlines()[-80:]:
        print(f"#   {line}", flush=True)
    return True


# Tests run side by side (prove -j), so a port from free_port() must stay
# ours until the server binds it. Two guards: the port comes from below the
# kernel's ephemeral range, so no outgoing connection (ours or another
# test's) is given it meanwhile, and it is reserved by an flock on a file
# in PORT_LOCKS, held until this process exits (the kernel drops it even on
# SIGKILL), so no other test using this harness hands it out meanwhile.
PORT_LOCKS = os.path.join(tempfile.gettempdir(), "sluice-test-ports")
_held_ports = {}  # port -> fd of its lock file, kept open while we live
_port_rnd = random.SystemRandom()  # leaves the random module's seeded state to the tests


def _port_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = map(int, f.read().split())
    except (OSError, ValueError):
        lo, hi = 32768, 60999
    if lo - 1 - 10000 >= 1024:
        return lo - 10000, lo - 1
    if 65535 - hi >= 2000:
        return hi + 1, 65535
    return 1024, 65535  # no room outside it: the locks still keep tests apart


def _bindable(port):
    """Nothing is bound to the port (not even in TIME_WAIT): a bind on
    every address without SO_REUSEADDR succeeds."""
    s = socket.socket()
    try:
        s.bind(("", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_port():
    os.makedirs(PORT_LOCKS, exist_ok=True)
    try:
        os.chmod(PORT_LOCKS, 0o1777)  # shared by every user running tests
    except OSError:
        pass
    lo, hi = _port_range()
    for _ in range(1000):
        port = _port_rnd.randint(lo, hi)
        if port in _held_ports:
            continue
        path = os.path.join(PORT_LOCKS, str(port))
        try:  # O_CREAT on another user's file in a sticky directory can be refused
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
            except OSError:
                continue
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another test holds it
            os.close(fd)
            continue
        if not _bindable(port):
            os.close(fd)
            continue
        _held_ports[port] = fd
        return port
    raise RuntimeError(f"no free port in {lo}-{hi} after 1000 tries")


# Server options for tests that use logical decoding or replication (slots,
# walsenders and apply workers for a few migrations at once).
LOGICAL = ("-c wal_level=logical -c max_replication_slots=20 -c max_wal_senders=20 "
           "-c max_logical_replication_workers=16 -c max_worker_processes=32")


class PgServer:
    PASSWORD = "s3cret-pw-for-tests"
    USER = "sluice"

    def __init__(self, extra_opts=""):
        """extra_opts: more server options for pg_ctl's -o ("-c wal_level=logical")."""
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            raise RuntimeError("PostgreSQL server binaries not found; run scripts/deps.sh --test")
        self.bindir = os.path.dirname(bins[-1])
        self.dir = tempfile.mkdtemp(prefix="sluice-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.runas = []
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.dir, nobody.pw_uid, nobody.pw_gid)
            self.runas = ["runuser", "-u", "nobody", "--"]
        pwfile = os.path.join(self.dir, "pw")
        with open(pwfile, "w") as f:
            f.write(self.PASSWORD + "\n")
        if self.runas:
            os.chown(pwfile, nobody.pw_uid, nobody.pw_gid)
        self._run([os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", self.USER,
                   "--pwfile", pwfile, "--auth-local=trust", "--auth-host=scram-sha-256",
                   "-E", "UTF8", "--locale=C.UTF-8"])
        atexit.register(self.stop)
        # a test stopped with SIGTERM (prove killed, a timeout) still stops
        # its server: exiting runs the atexit handlers
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        self.extra_opts = extra_opts
        log = os.path.join(self.dir, "log")
        for attempt in range(5):
            seen = os.path.getsize(log) if os.path.exists(log) else 0
            try:
                self.start()
                break
            except RuntimeError:
                # a process outside this harness took the port: another one
                try:
                    with open(log, errors="replace") as f:
                        f.seek(seen)
                        taken = "Address already in use" in f.read()
                except OSError:
                    taken = False
                if not taken or attempt == 4:
                    raise
                self.port = free_port()

    def start(self):
        """pg_ctl start with the options of the first start (again after a
        crash or a kill: crash recovery runs; returns once it accepts
        connections)."""
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off"
                + (f" {self.extra_opts}" if self.extra_opts else ""))
        self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-l",
                   os.path.join(self.dir, "log"), "-w", "-t", "60", "-o", opts, "start"])
        self.started = True

    def _run(self, cmd):
        r = subprocess.run(self.runas + cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {r.stderr or r.stdout}")

    def restart(self):
        """pg_ctl restart (fast shutdown: every committed write is kept;
        open connections are cut) with the options it was started with."""
        self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-l",
                   os.path.join(self.dir, "log"), "-m", "fast", "-w", "-t", "60", "restart"])

    def stop(self):
        if getattr(self, "started", False):
            subprocess.run(self.runas + [os.path.join(self.bindir, "pg_ctl"), "-D", self.data,
                                         "-m", "immediate", "-w", "stop"], capture_output=True)
            self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)

    def dsn(self, db="postgres", password=None):
        pw = self.PASSWORD if password is None else password
        return f"postgresql://{self.USER}:{pw}@127.0.0.1:{self.port}/{db}"

    def connect(self, db="postgres"):
        c = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.USER,
                             password=self.PASSWORD, dbname=db)
        c.autocommit = True
        return c

    def createdb(self, name):
        c = self.connect()
        c.cursor().execute(f'CREATE DATABASE "{name}"')
        c.close()
        return name


def logical_pair(statements, db="shop"):
    """Two PostgreSQL servers with logical decoding (source, target), each
    with database db holding what the statements make (run on both)."""
    pair = PgServer(extra_opts=LOGICAL), PgServer(extra_opts=LOGICAL)
    for s in pair:
        s.createdb(db)
        c = s.connect(db)
        c.autocommit = True
        for q in statements:
            c.cursor().execute(q)
        c.close()
    return pair

class PgStandby(PgServer):
    """A physical streaming replica (hot standby) of a running PgServer:
    pg_basebackup -R of the primary into a data directory of its own,
    started on another free port; stopped and removed at exit like a
    PgServer. Replay can be paused (pause_replay) to build lag."""

    def __init__(self, primary, extra_opts=""):
        self.bindir = primary.bindir
        self.dir = tempfile.mkdtemp(prefix="sluice-pgstandby-")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.runas = primary.runas
        if self.runas:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.dir, nobody.pw_uid, nobody.pw_gid)
        self._run(["env", f"PGPASSWORD={self.PASSWORD}",
                   os.path.join(self.bindir, "pg_basebackup"), "-D", self.data, "-R",
                   "-X", "stream", "-c", "fast", "-h", "127.0.0.1", "-p", str(primary.port),
                   "-U", self.USER])
        atexit.register(self.stop)
        self.extra_opts = extra_opts
        self.start()

    def pause_replay(self):
        self.connect().cursor().execute("SELECT pg_wal_replay_pause()")

    def resume_replay(self):
        self.connect().cursor().execute("SELECT pg_wal_replay_resume()")


class MariaDbServer:
    """A MariaDB server of our own, like PgServer: mariadb-install-db in a
    temporary directory (as nobody when we are root: mariadbd refuses to run
    as root without --user), mariadbd on a free loopback port, a user with a
    password over TCP; stopped and removed at exit. Tuned to start fast:
    a small InnoDB, no binary log, no fsync."""
    PASSWORD = "my-s3cret-pw-for-tests"
    USER = "sluice"

    def __init__(self, args=()):
        self.args = list(args)  # more mariadbd options (the bench's bigger buffer pool)
        self.mariadbd = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        if not os.path.exists(self.mariadbd) or not shutil.which("mariadb-install-db"):
            raise RuntimeError("MariaDB server not found; run scripts/deps.sh --test")
        self.dir = tempfile.mkdtemp(prefix="sluice-my-")
        self.data = os.path.join(self.dir, "data")
        self.sock = os.path.join(self.dir, "sock")
        self.log = os.path.join(self.dir, "err.log")
        self.proc = None
        self.runas = []
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.dir, nobody.pw_uid, nobody.pw_gid)
            self.runas = ["runuser", "-u", "nobody", "--"]
        r = subprocess.run(self.runas + ["mariadb-install-db", "--no-defaults",
                                         f"--datadir={self.data}", "--skip-test-db",
                                         "--auth-root-authentication-method=normal"],
                           capture_output=True, text=True, cwd=self.dir)
        if r.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {r.stderr or r.stdout}")
        atexit.register(self.stop)
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        for attempt in range(5):
            self.port = free_port()
            seen = os.path.getsize(self.log) if os.path.exists(self.log) else 0
            try:
                self.start()
                break
            except RuntimeError:
                with open(self.log, errors="replace") as f:
                    f.seek(seen)
                    taken = "Address already in use" in f.read()
                if not taken or attempt == 4:
                    raise
        c = self._root()
        cur = c.cursor()
        cur.execute(f"CREATE USER '{self.USER}'@'%' IDENTIFIED BY '{self.PASSWORD}'")
        cur.execute(f"GRANT ALL ON *.* TO '{self.USER}'@'%'")
        c.close()

    def start(self):
        """Starts mariadbd and returns once it accepts connections."""
        self.proc = subprocess.Popen(
            self.runas + [self.mariadbd, "--no-defaults", f"--datadir={self.data}",
                          f"--socket={self.sock}", f"--port={self.port}",
                          "--bind-address=127.0.0.1", "--skip-networking=0",
                          "--skip-name-resolve", "--skip-log-bin",
                          f"--pid-file={os.path.join(self.dir, 'pid')}",
                          f"--log-error={self.log}", "--innodb-buffer-pool-size=16M",
                          "--innodb-log-file-size=16M", "--innodb-flush-log-at-trx-commit=0",
                          "--innodb-doublewrite=0", "--character-set-server=utf8mb4",
                          "--collation-server=utf8mb4_general_ci"] + self.args,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.dir)
        import time
        for _ in range(600):
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError(f"mariadbd exited: see {self.log}")
            try:
                self._root().close()
                return
            except Exception:
                time.sleep(0.1)
        raise RuntimeError("mariadbd did not accept connections within 60 s")

    def _root(self):
        import pymysql
        return pymysql.connect(unix_socket=self.sock, user="root", autocommit=True,
                               charset="utf8mb4")

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def dsn(self, db, password=None):
        pw = self.PASSWORD if password is None else password
        return f"mysql://{self.USER}:{pw}@127.0.0.1:{self.port}/{db}"

    def connect(self, db=None):
        import pymysql
        return pymysql.connect(host="127.0.0.1", port=self.port, user=self.USER,
                               password=self.PASSWORD, database=db, autocommit=True,
                               charset="utf8mb4")

    def createdb(self, name):
        c = self.connect()
        c.cursor().execute(f"CREATE DATABASE `{name}`")
        c.close()
        return name


def sluice(*args, env=None):
    """Runs sluice; returns (exit status, stdout, stderr)."""
    e = dict(os.environ)
    e.update(SAN_ENV)
    e.pop("PGPASSWORD", None)
    if env:
        e.update(env)
    r = subprocess.run([SLUICE] + list(args), capture_output=True, text=True, env=e,
                       timeout=300)
    check_sanitizer(r.returncode, r.stderr, describe_run(args))
    return r.returncode, r.stdout, r.stderr


def sluice_json(*args, env=None):
    code, out, err = sluice(*args, "--format", "json", "--no-progress", env=env)
    try:
        doc = json.loads(out) if out.strip() else None
    except ValueError:
        doc = None
    return code, doc, err


class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def ok(self, cond, name, diag=None):
        self.n += 1
        print(f"{'' if cond else 'not '}ok {self.n} - {name}", flush=True)
        if not cond:
            self.failed += 1
            # on stderr too: prove shows it in a quiet run's log (CI)
            print(f"# failed {self.n} - {name}", file=sys.stderr, flush=True)
            if diag:
                for line in str(diag).splitlines()[:40]:
                    print(f"#   {line}", flush=True)
                    print(f"#   {line}", file=sys.stderr, flush=True)
        return cond

    def diag(self, msg):
        print(f"# {msg}", flush=True)

    def done(self):
        if SAN_FAILURES:
            self.ok(False, f"no sanitizer reports ({len(SAN_FAILURES)} runs exited 86-88)",
                    "\n".join(SAN_FAILURES))
        print(f"1..{self.n}", flush=True)
        sys.exit(1 if self.failed else 0)


def divergence_set(doc):
    """{(kind, key tuple, columns tuple)} from a sluice JSON report."""
    out = set()
    for d in doc["divergences"]:
        key = tuple(d["key"][k] for k in d["key"])
        cols = tuple(sorted(c["column"] for c in d.get("columns", [])))
        out.add((d["kind"], key, cols))
    return out
