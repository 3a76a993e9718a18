#!/usr/bin/python3
"""sluice chaos: one fault per case, injected into a cdc migration behind
HAProxy under write load (bench/loadgen.py), each case on servers of its
own. The control plane must abort by itself for the faults it must not
ride out (replication lag, slow apply, a schema change, corrupted rows, the
target killed, HAProxy restarted with its config weights, the target's
network cut) and must ride out the others (sluice control killed and
restarted, a worker killed during the gate audit). Each case records the
outcome, detection and rollback time, the write pause clients saw, the
acknowledged writes lost and the rows that differ at the end (a full audit
with `sluice diff` after the fault is healed and replication caught up).

TAP on stdout (the table as `#` lines at the end); --json FILE writes the
figures. Usage: bench/chaos.py [--short] [--cases a1,b,...] [--json FILE]
"""
import argparse
import atexit
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

import psycopg2  # noqa: E402

from control_env import APPROVER, OPERATOR, Control, Haproxy, cluster_for  # noqa: E402
from harness import LOGICAL, PgServer, SAN_ENV, SLUICE, Tap  # noqa: E402

LOADGEN = os.path.join(HERE, "loadgen.py")
TABLES = ["customers", "orders", "loadgen_orders", "events"]
CASES = {  # name: (fault, expected outcome, words the abort reason must hold)
    "a1": ("subscription disabled (lag)", "aborted", "replication lag"),
    "a2": ("apply blocked by a lock", "aborted", "replication lag"),
    "b": ("column type changed on target", "aborted", "schema"),
    "c": ("2 rows changed on target", "aborted", "divergent rows"),
    "d": ("target postmaster SIGKILL", "aborted", "unreachable"),
    "e": ("sluice control SIGKILL + restart", "survived", None),
    "f": ("worker SIGKILL in gate audit", "survived", None),
    "g": ("HAProxy restarted mid-step", "aborted", "HAProxy"),
    "h": ("target network black-holed", "aborted", "unreachable"),
}

t = Tap()


class Proxy:
    """A TCP proxy in front of the target: "pass" forwards bytes,
    "blackhole" stops forwarding on every open connection and accepts new
    ones without ever answering, "heal" closes those and forwards again."""

    def __init__(self, upstream_port):
        self.up = upstream_port
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(128)
        self.port = self.ls.getsockname()[1]
        self.mode = "pass"
        self.lock = threading.Lock()
        self.socks = []  # every client and upstream socket open now
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            with self.lock:
                self.socks.append(c)
                if self.mode == "blackhole":
                    continue  # held open, never answered
            try:
                u = socket.create_connection(("127.0.0.1", self.up), timeout=5)
                u.settimeout(None)
            except OSError:
                self._close(c)
                continue
            with self.lock:
                self.socks.append(u)
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, a, b):
        try:
            while True:
                if self.mode == "blackhole":
                    time.sleep(0.05)  # nothing read, nothing forwarded
                    continue
                if not select.select([a], [], [], 0.2)[0]:
                    continue
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except (OSError, ValueError):  # ValueError: the other pump closed it already
            pass
        self._close(a)
        self._close(b)

    def _close(self, s):
        with self.lock:
            if s in self.socks:
                self.socks.remove(s)
        try:
            s.shutdown(socket.SHUT_RDWR)  # wakes a pump waiting in select
        except OSError:
            pass
        s.close()

    def blackhole(self):
        self.mode = "blackhole"

    def heal(self):
        with self.lock:
            held = list(self.socks)
        for s in held:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.mode = "pass"
        time.sleep(0.3)  # pumps see EOF and close their pairs
        with self.lock:
            left = [s for s in self.socks if s in held]
        for s in left:
            self._close(s)

    def stop(self):
        self.ls.close()
        self.heal()


class EventWriter(threading.Thread):
    """Inserts into events (bigserial id) through HAProxy's write frontend,
    5 a second: after the write cutover the target's sequence hands out the
    ids, so a sequence left behind would show as duplicate keys."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.stop_ev = port, threading.Event()
        self.acked, self.dup_errors, self.errors = 0, 0, 0

    def run(self):
        c = None
        while not self.stop_ev.wait(0.2):
            try:
                if c is None:
                    c = psycopg2.connect(host="127.0.0.1", port=self.port, user=PgServer.USER,
                                         password=PgServer.PASSWORD, dbname="shop",
                                         connect_timeout=3)
                    c.autocommit = True
                c.cursor().execute("INSERT INTO events (kind) VALUES ('chaos')")
                self.acked += 1
            except psycopg2.Error as e:
                self.errors += 1
                self.dup_errors += "duplicate key" in str(e)
                try:
                    c.close()
                except Exception:
                    pass
                c = None
        if c is not None:
            c.close()


def dsn_port(port):
    return f"postgresql://{PgServer.USER}:{PgServer.PASSWORD}@127.0.0.1:{port}/shop"


def one(server, q, args=None):
    c = server.connect("shop")
    try:
        cur = c.cursor()
        cur.execute(q, args)
        return cur.fetchone() if cur.description else None
    finally:
        c.close()


class Case:
    """Everything one case runs on, fresh: two PostgreSQL servers, the
    proxy in front of the target, HAProxy, a cluster and sluice control."""

    def __init__(self, name, opts):
        self.name, self.opts = name, opts
        self.mid = f"chaos-{name}"
        self.dir = tempfile.mkdtemp(prefix=f"sluice-chaos-{name}-")
        self.src, self.dst = PgServer(extra_opts=LOGICAL), PgServer(extra_opts=LOGICAL)
        n_orders = opts.big_orders if name == "f" else opts.orders
        for s in (self.src, self.dst):
            s.createdb("shop")
            cur = s.connect("shop").cursor()
            cur.execute("CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL)")
            cur.execute("CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int, "
                        "total numeric(12,2), note text)")
            cur.execute("CREATE TABLE loadgen_orders (id bigint PRIMARY KEY, client int NOT NULL,"
                        " seq bigint NOT NULL, val text, updated_at timestamptz NOT NULL "
                        "DEFAULT now())")
            cur.execute("CREATE TABLE events (id bigserial PRIMARY KEY, kind text NOT NULL, "
                        "at timestamptz NOT NULL DEFAULT now())")
        cur = self.src.connect("shop").cursor()
        cur.execute("INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 50) g")
        cur.execute("INSERT INTO orders SELECT g, g %% 50 + 1, g / 4.0, 'n' || g "
                    "FROM generate_series(1, %s) g", (n_orders,))
        cur.execute("INSERT INTO events (kind) SELECT 'seed' FROM generate_series(1, 500)")
        self.proxy = Proxy(self.dst.port)
        self.dbs = {"old": self.src.dsn("shop"), "new": dsn_port(self.proxy.port)}
        self.hp = Haproxy(self.src.port, self.proxy.port)
        self.cl = cluster_for(self.dbs, workers=2)
        self.ctl = Control(self.dbs, cluster=self.cl, haproxy=self.hp)
        self.load = self.events = None
        self.load_doc = {}
        self.ledger = os.path.join(self.dir, "ledger.json")

    # -- the migration -------------------------------------------------------
    def create(self):
        m = {
            "migration_id": self.mid,
            "scope": {"source": "old", "target": "new", "tables": TABLES},
            "strategy": "auto",
            "cutover": {"steps": [25, 100], "soak_seconds": self.opts.soak},
            "metrics": {"audit_every": "1h", "sample_every": "1s"},
            "abort_thresholds": {"replication_lag_seconds": 3, "detection_latency_seconds": 30,
                                 "unreachable_seconds": 5},
            "router": {"type": "haproxy", "read_backend": "reads", "write_backend": "writes",
                       "source_server": "old", "target_server": "new"}}
        code, doc = self.ctl.call("POST", "/migrations", m)
        if code == 422 and "unreachable_seconds" in str(doc):  # a control plane without it
            t.diag(f"{self.name}: abort_thresholds.unreachable_seconds refused: {doc}")
            del m["abort_thresholds"]["unreachable_seconds"]
            code, doc = self.ctl.call("POST", "/migrations", m)
        if code != 201:
            raise RuntimeError(f"POST /migrations: {code} {doc}")

    def gate(self, s, name):
        return next((g for g in s.get("gates", []) if g["name"] == name), None)

    def advance_to(self, want):
        r = self.ctl.advance(self.mid, timeout=180)
        if not (isinstance(r, dict) and r.get("phase") == want):
            raise RuntimeError(f"advance into {want}: {r}\n{self.ctl.log_text()[-1500:]}")

    def start_load(self):
        tok = os.path.join(self.dir, "token")
        with open(tok, "w") as f:
            f.write(OPERATOR + "\n")
        self.load_out = open(os.path.join(self.dir, "loadgen.out"), "w+")
        self.load_err = open(os.path.join(self.dir, "loadgen.err"), "w+")
        self.load = subprocess.Popen(
            ["/usr/bin/python3", LOADGEN, "--write-dsn", dsn_port(self.hp.write_port),
             "--read-dsn", dsn_port(self.hp.read_port), "--source-dsn", self.src.dsn("shop"),
             "--target-dsn", self.dst.dsn("shop"), "--control", self.ctl.base,
             "--migration", self.mid, "--token-file", tok, "--clients", str(self.opts.clients),
             "--rate", str(self.opts.rate), "--duration", "3600", "--grace", "3",
             "--ledger", self.ledger, "--no-check", "--json", "--quiet"],
            stdout=self.load_out, stderr=self.load_err)
        atexit.register(self.stop_load)  # the suite stopped early: no loadgen left behind
        self.events = EventWriter(self.hp.write_port)
        self.events.start()

    def stop_load(self):
        """SIGTERM: loadgen finishes its writes in flight and writes the ledger."""
        out = {}
        if self.events:
            self.events.stop_ev.set()
            self.events.join(10)
        if self.load and self.load.poll() is None:
            self.load.send_signal(signal.SIGTERM)
            try:
                self.load.wait(60)
            except subprocess.TimeoutExpired:
                self.load.kill()
                self.load.wait()
        if self.load:
            self.load_out.seek(0)
            try:
                out = self.load_doc = json.loads(self.load_out.read())
            except ValueError:
                self.load_err.seek(0)
                t.diag(f"{self.name}: loadgen said: {self.load_err.read()[-800:]}")
        return out

    def lost_writes(self, server):
        r = subprocess.run(["/usr/bin/python3", LOADGEN, "--check-only", "--ledger", self.ledger,
                            "--check-dsn", server.dsn("shop"), "--json"],
                           capture_output=True, text=True, timeout=120)
        try:
            return json.loads(r.stdout)["lost_writes"]
        except (ValueError, KeyError):
            t.diag(f"{self.name}: loadgen --check-only: exit {r.returncode} {r.stderr[-500:]}")
            return None

    def to_cutover(self):
        """Backfill (load starts once the aggregates matched: a table under
        load never has equal aggregates on both sides at one instant), dual
        writes, shadow reads, cutover step 1 (25% of reads on the target)."""
        self.create()
        self.advance_to("backfill")
        s = self.ctl.wait(self.mid, lambda s: (self.gate(s, "aggregates_match") or {}).get("ok"),
                          180)
        if s is None:
            raise RuntimeError(f"aggregates never matched: {self.ctl.status(self.mid)}")
        self.start_load()
        if self.name == "f":
            self.kill_worker_in_audit()
        for want in ("dual_write", "shadow_read", "cutover"):
            self.advance_to(want)
        s = self.ctl.wait(self.mid, lambda s: s["traffic"]["read_percent_target"] == 25, 60)
        if s is None:
            raise RuntimeError(f"cutover step 1 never ran: {self.ctl.status(self.mid)}")
        time.sleep(self.opts.settle)

    def kill_worker_in_audit(self):
        """Case f: a worker SIGKILLed while the backfill gate audit runs,
        once 3 of the 4 worker slots are busy (so both workers hold ranges)."""
        self.f_busy = 0
        end = time.time() + 15
        while time.time() < end and self.f_busy < 3:
            code, out, _ = self.cl.client("workers")
            self.f_busy = out.count("alive busy") if code == 0 else 0
        s = self.ctl.status(self.mid)
        g = self.gate(s, "full_audit_exact") or {}
        self.f_running = not g.get("ok")
        self.f_detail_before = g.get("detail")
        alive = self.cl.client("workers")[1].count(" alive ")
        victim = self.cl.workers[0]
        self.fault_at = time.time()
        victim.kill()
        victim.wait()
        self.detect = None
        end = time.time() + 30
        while time.time() < end:
            code, out, _ = self.cl.client("workers")
            if code == 0 and out.count(" alive ") < alive:
                self.detect = time.time() - self.fault_at
                break
            time.sleep(0.1)
        self.f_detail_after = (self.gate(self.ctl.status(self.mid), "full_audit_exact")
                               or {}).get("detail")

    # -- the end -------------------------------------------------------------
    def audit(self):
        """Divergent rows in every table: `sluice diff` source vs target
        (directly, not through the proxy), retried for up to 30 s while
        replication catches up; the last figure."""
        end = time.time() + 30
        while True:
            total, bad = 0, []
            for tab in TABLES:
                r = subprocess.run([SLUICE, "diff", self.src.dsn("shop"), self.dst.dsn("shop"),
                                    "--table", tab, "--format", "json", "--no-progress"],
                                   capture_output=True, text=True, timeout=300,
                                   env=dict(os.environ, **SAN_ENV))
                if r.returncode not in (0, 1):
                    bad.append(f"{tab}: exit {r.returncode} {r.stderr.strip()[-300:]}")
                    total = None
                    break
                n = len(json.loads(r.stdout)["divergences"])
                total += n
                if n:
                    bad.append(f"{tab}: {n}")
            if total == 0 or time.time() > end:
                return total, bad
            time.sleep(1)

    def close(self):
        for f in (self.ctl.stop, self.cl.stop, self.hp.stop, self.proxy.stop, self.src.stop,
                  self.dst.stop):
            try:
                f()
            except Exception as e:  # a case's debris must not stop the next case
                t.diag(f"{self.name}: cleanup: {e}")
        if not os.environ.get("SLUICE_KEEP"):  # SLUICE_KEEP=1 keeps the logs to read
            for d in (self.dir, self.ctl.dir, self.hp.dir):
                shutil.rmtree(d, ignore_errors=True)


# -- the faults -------------------------------------------------------------------
def sub_name(c):
    return one(c.dst, "SELECT subname FROM pg_subscription WHERE subname LIKE 'sluice%'")[0]


def inject(c):
    """Injects the case's fault; returns the heal (a function) or None."""
    n = c.name
    if n == "a1":
        sub = sub_name(c)
        one(c.dst, f'ALTER SUBSCRIPTION "{sub}" DISABLE')
        return lambda: one(c.dst, f'ALTER SUBSCRIPTION "{sub}" ENABLE')
    if n == "a2":
        lk = c.dst.connect("shop")
        lk.autocommit = False
        lk.cursor().execute("LOCK TABLE loadgen_orders IN ACCESS EXCLUSIVE MODE")

        def heal():
            lk.rollback()
            lk.close()
        return heal
    if n == "b":
        one(c.dst, "ALTER TABLE orders ALTER COLUMN note TYPE varchar(200)")
        return lambda: one(c.dst, "ALTER TABLE orders ALTER COLUMN note TYPE text")
    if n == "c":
        one(c.dst, "UPDATE orders SET total = total + 1, note = 'corrupt' WHERE id IN (5, 77)")

        def heal():  # back to the source's values
            for i in (5, 77):
                row = one(c.src, "SELECT total, note FROM orders WHERE id = %s", (i,))
                one(c.dst, "UPDATE orders SET total = %s, note = %s WHERE id = %s", (*row, i))
        return heal
    if n == "d":
        with open(os.path.join(c.dst.data, "postmaster.pid")) as f:
            os.kill(int(f.readline()), signal.SIGKILL)

        def heal():  # children may hold the shared memory for a moment
            for i in range(40):
                try:
                    c.dst.start()
                    return
                except RuntimeError:
                    if i == 39:
                        raise
                    time.sleep(0.5)
        return heal
    if n == "g":
        c.hp.restart()
        return None
    if n == "h":
        c.proxy.blackhole()
        return c.proxy.heal
    raise ValueError(n)


def weights(c):
    try:
        return {k: c.hp.weight(*k.split("/")) for k in ("reads/old", "reads/new", "writes/old",
                                                          "writes/new")}
    except (OSError, ValueError, IndexError) as e:
        return {"error": str(e)}


# -- the cases ----------------------------------------------------------------------
def run_abort_case(c, row):
    _, outcome, want = CASES[c.name]
    fault_at = time.time()
    heal = inject(c)
    s = c.ctl.wait(c.mid, lambda s: s["state"] == "aborted", c.opts.abort_wait)
    took = time.time() - fault_at
    by_itself = s is not None
    reason = (s or {}).get("abort_reason") or ""
    t.ok(by_itself, f"{c.name}: aborted by itself ({took:.1f} s after the fault)",
         {k: v for k, v in c.ctl.status(c.mid).items() if k not in ("history", "gates")})
    if not by_itself:  # the rest is still measured: by hand, traffic back, heal, audit
        code, s = c.ctl.call("POST", f"/migrations/{c.mid}/abort",
                             {"reason": "chaos: not aborted by itself"})
        row["outcome"] = "not aborted (by hand)"
    else:
        row["outcome"] = "aborted"
    t.diag(f"{c.name}: reason: {reason}")
    t.ok(want in reason, f"{c.name}: the reason names \"{want}\"", reason)
    det, rb = s.get("detection_seconds"), s.get("rollback_seconds")
    row.update(detection_s=det if by_itself else None, rollback_s=rb, reason=reason,
               fault_to_abort_s=round(took, 2) if by_itself else None)
    t.ok(by_itself and det is not None and 0 <= det < 60,
         f"{c.name}: detection {det} s (under 60 s)")
    t.ok(rb is not None and rb < 5, f"{c.name}: rollback {rb} s (under 5 s)")
    w = c.ctl.wait(c.mid, lambda s: s["traffic"]["read_percent_target"] == 0, 10) and weights(c)
    t.ok(w and w.get("reads/new") == 0 and w.get("writes/new") == 0,
         f"{c.name}: HAProxy: reads/new 0, writes/new 0 (traffic on the source)", w)
    if heal:
        heal()
    load = c.stop_load()
    row["write_pause_s"] = load.get("max_pause_s")
    row["lost_writes"] = c.lost_writes(c.src)  # writes never left the source
    t.ok(row["lost_writes"] == 0, f"{c.name}: acknowledged writes lost: {row['lost_writes']}")


def run_control_case(c, row):
    """e: sluice control SIGKILLed while step 1 holds, restarted on the same
    --state; the migration resumes, then runs the write cutover."""
    c.ctl.stop(signal.SIGKILL)
    down_at = time.time()
    time.sleep(1)
    c.ctl.start(port=c.ctl.port)
    row["restart_s"] = round(time.time() - down_at, 2)
    s = c.ctl.wait(c.mid, lambda s: True, 10)
    t.ok(s and s["state"] != "aborted" and s["phase"] == "cutover",
         f"e: after the restart the migration is still in cutover, not aborted",
         s and (s["state"], s["abort_reason"]))
    time.sleep(1.5)  # a pass re-applies the routing
    s = c.ctl.status(c.mid)
    w = weights(c)
    pct = s["traffic"]["read_percent_target"]
    t.ok(w.get("reads/new") == pct and w.get("reads/old") == 100 - pct,
         f"e: HAProxy weights read back equal the status's traffic ({pct}% on the target)",
         (w, s["traffic"]))
    s = c.ctl.wait(c.mid, lambda s: s["state"] in ("waiting_approval", "aborted"), 90)
    t.ok(s and s["state"] == "waiting_approval", "e: the last step waits for an approver",
         s and s.get("abort_reason"))
    code, _ = c.ctl.call("POST", f"/migrations/{c.mid}/approve", {}, token=APPROVER)
    s = c.ctl.wait(c.mid, lambda s: s["traffic"]["writes"] == "target" or s["state"] == "aborted",
                   120)
    moved = bool(s and s["traffic"]["writes"] == "target")
    row["outcome"] = "survived" if moved else "aborted"
    row["reason"] = s and s.get("abort_reason")
    t.ok(moved, "e: the write cutover ran (writes on the target)", s and s.get("abort_reason"))
    row["status_write_pause_s"] = s and s.get("write_pause_seconds")
    evs = c.ctl.call("GET", f"/migrations/{c.mid}/events")[1].get("events", [])
    for e in evs:
        if e["kind"] == "write_cutover" and "steps_ms" in e["detail"]:
            row["cutover_steps_ms"] = e["detail"]["steps_ms"]
            t.diag(f"e: the write cutover's steps (ms): {e['detail']['steps_ms']}")
    t.ok(s and isinstance(s.get("write_pause_seconds"), (int, float))
         and s["write_pause_seconds"] < 2,
         f"e: write_pause_seconds in the status, under 2 s: {s and s.get('write_pause_seconds')}")
    port = None
    try:
        cc = psycopg2.connect(dsn_port(c.hp.write_port), connect_timeout=5)
        cur = cc.cursor()
        cur.execute("SELECT inet_server_port()")
        port = cur.fetchone()[0]
        cc.close()
    except psycopg2.Error as e:
        port = str(e)
    t.ok(port == c.dst.port, "e: a session on HAProxy's write frontend lands on the target",
         f"port {port}, target {c.dst.port}")
    time.sleep(c.opts.after_cutover)  # load on the target, replicated back
    ev = c.events
    load = c.stop_load()
    row["write_pause_s"] = load.get("max_pause_s")
    t.ok(isinstance(row["write_pause_s"], (int, float)) and row["write_pause_s"] < 2,
         f"e: the longest pause the clients saw, under 2 s: {row['write_pause_s']} s "
         f"at {load.get('writes_per_s')} writes/s")
    row["lost_writes"] = c.lost_writes(c.dst)  # the target is authoritative now
    t.ok(row["lost_writes"] == 0, f"e: acknowledged writes lost (on the target): "
         f"{row['lost_writes']}")
    seq = [one(x, "SELECT last_value FROM events_id_seq")[0] for x in (c.src, c.dst)]
    row["sequences"] = {"source": seq[0], "target": seq[1]}
    t.ok(seq[1] > seq[0], f"e: events_id_seq on the target ({seq[1]}) ahead of the "
         f"source's ({seq[0]})")
    t.ok(ev.acked > 0 and ev.dup_errors == 0,
         f"e: bigserial inserts through HAProxy: {ev.acked} acknowledged, "
         f"{ev.dup_errors} duplicate keys")


def run_worker_case(c, row):
    """f: the worker was killed in to_cutover (kill_worker_in_audit); the
    migration must have gone on."""
    row["detection_s"] = round(c.detect, 2) if c.detect is not None else None
    t.ok(c.f_running and c.f_busy >= 3, f"f: the gate audit was running when the worker was "
         f"killed ({c.f_detail_before}; {c.f_busy} of 4 worker slots busy)")
    t.diag(f"f: full_audit_exact after the kill: {c.f_detail_after}")
    t.ok(c.detect is not None, f"f: the coordinator shows the worker lost after {c.detect} s")
    s = c.ctl.status(c.mid)
    ev = c.ctl.call("GET", f"/migrations/{c.mid}/events")[1]["events"]
    entered = [e for e in ev if e["kind"] in ("phase", "advance") or "dual_write" in
               json.dumps(e.get("detail"))]
    t.ok(s["state"] != "aborted" and s["phase"] == "cutover",
         "f: not aborted; the gate audit finished exact and the migration went on "
         "(dual_write, shadow_read, cutover)", (s["state"], s["abort_reason"], len(entered)))
    row["outcome"] = "survived" if s["state"] != "aborted" else "aborted"
    load = c.stop_load()
    row["write_pause_s"] = load.get("max_pause_s")
    row["lost_writes"] = c.lost_writes(c.src)
    t.ok(row["lost_writes"] == 0, f"f: acknowledged writes lost: {row['lost_writes']}")


def run_case(name, opts):
    row = {"case": name, "fault": CASES[name][0], "outcome": None, "detection_s": None,
           "rollback_s": None, "write_pause_s": None, "lost_writes": None,
           "divergent_rows_end": None}
    started = time.time()
    c = None
    try:
        c = Case(name, opts)
        c.to_cutover()
        if name == "e":
            run_control_case(c, row)
        elif name == "f":
            run_worker_case(c, row)
        else:
            run_abort_case(c, row)
        c.stop_load()
        ld = c.load_doc
        row.update(writes_acked=ld.get("acked"), writes_per_s=ld.get("writes_per_s"),
                   write_retries=ld.get("retries"))
        n, bad = c.audit()
        row["divergent_rows_end"] = n
        t.ok(n == 0, f"{name}: divergent rows at the end (full audit, every table): {n}", bad)
        log = c.ctl.log_text()
        t.ok("Sanitizer" not in log and "runtime error" not in log,
             f"{name}: no sanitizer report from sluice control", log[-2000:])
    except Exception as e:
        t.ok(False, f"{name}: the case ran to its end",
             f"{type(e).__name__}: {e}\n" + traceback.format_exc()[-1500:])
        if c is not None:
            t.diag(f"{name}: control log: {c.ctl.log_text()[-1500:]}")
    finally:
        if c is not None:
            c.stop_load()
            c.close()
    row["seconds"] = round(time.time() - started, 1)
    t.diag(f"{name}: {row}")
    return row


def fmt(v):
    return "-" if v is None else str(v)


def table(rows):
    out = ["| case | fault | outcome | detection s | rollback s | write pause s | lost writes "
           "| divergent rows at end |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pause = fmt(r["write_pause_s"])
        if r.get("status_write_pause_s") is not None:
            pause += f" (status {r['status_write_pause_s']})"
        out.append(f"| {r['case']} | {r['fault']} | {fmt(r['outcome'])} | "
                   f"{fmt(r['detection_s'])} | {fmt(r['rollback_s'])} | {pause} | "
                   f"{fmt(r['lost_writes'])} | {fmt(r['divergent_rows_end'])} |")
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--short", action="store_true", help="light load, minimal soaks")
    p.add_argument("--cases", default=",".join(CASES), help="a comma list: a1,a2,b,...")
    p.add_argument("--json", help="write the figures here")
    opts = p.parse_args()
    cases = [x for x in opts.cases.split(",") if x]
    unknown = [x for x in cases if x not in CASES]
    if unknown:
        p.error(f"unknown cases {unknown}; known: {','.join(CASES)}")
    if opts.short:
        opts.rate, opts.clients, opts.soak, opts.settle, opts.after_cutover = 50, 4, 1, 0.5, 2
    else:
        opts.rate, opts.clients, opts.soak, opts.settle, opts.after_cutover = 500, 8, 5, 2, 10
    opts.orders, opts.big_orders, opts.abort_wait = 3000, 300000, 75
    t0 = time.time()
    rows = [run_case(name, opts) for name in cases]
    for name, r in zip(cases, rows):
        want = CASES[name][1]
        t.ok(r["outcome"] == want, f"{name}: outcome {r['outcome']} (expected {want})")
    total = round(time.time() - t0, 1)
    for line in table(rows):
        t.diag(line)
    t.diag(f"{len(rows)} cases in {total} s ({'short' if opts.short else 'full'} form, "
           f"{opts.rate} writes/s, {opts.clients} clients)")
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump({"form": "short" if opts.short else "full", "seconds": total,
                       "rate": opts.rate, "clients": opts.clients, "cases": rows}, f, indent=1)
    t.done()


if __name__ == "__main__":
    main()
