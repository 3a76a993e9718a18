"""The control plane's test bench: sluice control started for real beside a
cluster (coordinator + workers) and, when asked, HAProxy in front of two
databases. Everything is a real process on loopback, stopped at exit."""
import atexit
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from cluster import Cluster
from harness import LOGICAL, SAN_ENV, SLUICE, PgServer, free_port

OPERATOR = "op-token-0123456789abcdef"
APPROVER = "ap-token-0123456789abcdef"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ORDERS = "CREATE TABLE orders(id bigint PRIMARY KEY, total numeric(12,2), note text)"
CUSTOMERS = "CREATE TABLE customers(id int PRIMARY KEY, name text NOT NULL)"
ITEMS = "CREATE TABLE items(id bigserial PRIMARY KEY, name text)"
SEED_CUSTOMERS = "INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 50) g"
SEED_ITEMS = "INSERT INTO items(name) SELECT 'i' || g FROM generate_series(1, 300) g"


def seed_orders(n):
    return f"INSERT INTO orders SELECT g, g / 4.0, 'n' || g FROM generate_series(1, {n}) g"


def shop_servers(cases, ddl, seed, per_case=None):
    """Two PostgreSQL servers with logical decoding (source, target) and, on
    each, a database per case holding the tables of ddl; the source's rows
    come from the seed statements (and per_case(case, cursor), if given).
    Returns (src, dst, dbs), dbs naming them old_<case> and new_<case>."""
    src, dst = PgServer(extra_opts=LOGICAL), PgServer(extra_opts=LOGICAL)
    dbs = {}
    for case in cases:
        for s in (src, dst):
            s.createdb(case)
            cur = s.connect(case).cursor()
            for q in ddl:
                cur.execute(q)
        cur = src.connect(case).cursor()
        for q in seed:
            cur.execute(q)
        if per_case:
            per_case(case, cur)
        dbs[f"old_{case}"], dbs[f"new_{case}"] = src.dsn(case), dst.dsn(case)
    return src, dst, dbs


class Haproxy:
    """HAProxy with a read and a write frontend over two PostgreSQL servers
    (servers "old" and "new"), and its runtime API on a Unix socket."""

    def __init__(self, old_port, new_port):
        self.dir = tempfile.mkdtemp(prefix="sluice-haproxy-")
        self.sock = os.path.join(self.dir, "admin.sock")
        self.read_port, self.write_port = free_port(), free_port()
        cfg = os.path.join(self.dir, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(f"""global
    stats socket {self.sock} mode 600 level admin
defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
frontend reads
    bind 127.0.0.1:{self.read_port}
    default_backend reads
backend reads
    balance roundrobin
    server old 127.0.0.1:{old_port} weight 100
    server new 127.0.0.1:{new_port} weight 0
frontend writes
    bind 127.0.0.1:{self.write_port}
    default_backend writes
backend writes
    balance roundrobin
    server old 127.0.0.1:{old_port} weight 1
    server new 127.0.0.1:{new_port} weight 0
""")
        self.cfg = cfg
        self.start()
        atexit.register(self.stop)

    def start(self):
        """HAProxy from its config file: the config's weights, not what a
        control plane set before."""
        self.p = subprocess.Popen(["haproxy", "-f", self.cfg, "-db"], stdout=subprocess.DEVNULL,
                                  stderr=open(os.path.join(self.dir, "log"), "a"))
        for _ in range(100):
            try:
                if "old" in self.cmd("show servers state reads"):
                    return
            except OSError:
                pass
            time.sleep(0.05)

    def restart(self):
        """Killed (SIGKILL) and started again: same ports, same socket path."""
        self.stop()
        self.start()

    def cmd(self, line):
        import socket
        s = socket.socket(socket.AF_UNIX)
        s.connect(self.sock)
        s.sendall(line.encode() + b"\n")
        out = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
        s.close()
        return out.decode()

    def weight(self, backend, server):
        return int(self.cmd(f"get weight {backend}/{server}").split()[0])

    def stop(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


class Control:
    """sluice control on a free port, with a token file and a db file."""

    def __init__(self, dbs, cluster=None, haproxy=None, tick_ms=200, extra=(), state=None):
        """state: the control database for --state (a PostgreSQL DSN);
        None: a SQLite file in the test's directory."""
        self.dir = tempfile.mkdtemp(prefix="sluice-control-")
        self.dbfile = os.path.join(self.dir, "dbs.conf")
        with open(self.dbfile, "w") as f:
            for name, dsn in dbs.items():
                f.write(f"{name}={dsn}\n")
        self.tokens = os.path.join(self.dir, "tokens")
        with open(self.tokens, "w") as f:
            f.write(f"# roles and tokens\noperator {OPERATOR}\napprover {APPROVER}\n")
        self.store = os.path.join(self.dir, "control.db")
        self.state = state or "sqlite:" + self.store
        self.cluster, self.haproxy, self.tick_ms, self.extra = cluster, haproxy, tick_ms, extra
        self.p = None
        self.log = os.path.join(self.dir, "control.log")
        atexit.register(self.stop)
        self.start()

    def start(self, port=None):
        """port: listen there (a restart keeps the URL clients know); a free one if None."""
        self.port = port or free_port()
        args = [SLUICE, "control", "--listen", f"127.0.0.1:{self.port}", "--state", self.state,
                "--db-file", self.dbfile, "--tokens", self.tokens, "--tick", str(self.tick_ms),
                "--dashboard", os.path.join(REPO, "control", "dashboard"), *self.extra]
        if self.cluster:
            args += ["--coordinator", self.cluster.clients_ep, "--events", self.cluster.events_ep]
        if self.haproxy:
            args += ["--haproxy", self.haproxy.sock]
        self.p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(self.log, "a"),
                                  env=dict(os.environ, **SAN_ENV))
        self.base = f"http://127.0.0.1:{self.port}"
        for _ in range(200):
            try:
                if self.call("GET", "/healthz")[0] == 200:
                    return
            except OSError:
                pass
            if self.p.poll() is not None:
                raise RuntimeError("sluice control exited: " + open(self.log).read()[-2000:])
            time.sleep(0.05)
        raise RuntimeError("sluice control did not start")

    def call(self, method, path, body=None, token=OPERATOR, raw=None, headers=None, timeout=90):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if token:
            req.add_header("Authorization", "Bearer " + token)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                text = r.read().decode()
                ctype = r.headers.get("Content-Type", "")
                return r.status, (json.loads(text) if "json" in ctype else text)
        except urllib.error.HTTPError as e:
            text = e.read().decode()
            try:
                return e.code, json.loads(text)
            except ValueError:
                return e.code, text

    def status(self, mid):
        return self.call("GET", f"/migrations/{mid}/status")[1]

    def wait(self, mid, cond, timeout=120, step=0.2):
        """Polls the status until cond(status) holds; returns it, or None."""
        end = time.time() + timeout
        s = None
        while time.time() < end:
            s = self.status(mid)
            if isinstance(s, dict) and cond(s):
                return s
            time.sleep(step)
        return None

    def advance(self, mid, timeout=120):
        """Asks advance until it is taken (gates pass) or timeout."""
        end = time.time() + timeout
        last = None
        while time.time() < end:
            code, doc = self.call("POST", f"/migrations/{mid}/advance")
            if code == 200:
                return doc
            last = (code, doc)
            if code != 409 or "gates" not in doc:
                return last
            time.sleep(0.3)
        return last

    def stop(self, sig=signal.SIGTERM):
        if self.p and self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        return self.p.returncode if self.p else None

    def log_text(self):
        return open(self.log).read() if os.path.exists(self.log) else ""


def cluster_for(dbs, workers=2, worker_extra=()):
    """worker_extra: more `sluice worker` arguments (e.g. ("--allow-where", "*"))."""
    c = Cluster(dbs)
    c.start_coordinator()
    for _ in range(workers):
        c.start_worker(slots=2, extra=worker_extra)
    if not c.wait_workers(workers):
        raise RuntimeError("workers did not join")
    atexit.register(c.stop)
    return c
