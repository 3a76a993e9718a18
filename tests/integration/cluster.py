"""A sluice cluster on loopback for tests: a coordinator process and worker
processes (the sanitizer build), each started and killed for real."""
import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import time

from harness import SAN_ENV, SLUICE, check_sanitizer, describe_run, free_port


class Cluster:
    def __init__(self, dbs, hb_timeout=2.0, state=None):
        self.dir = tempfile.mkdtemp(prefix="sluice-cluster-")
        if not os.environ.get("SLUICE_KEEP"):  # SLUICE_KEEP=1 keeps the logs to read
            atexit.register(shutil.rmtree, self.dir, True)
        self.ports = [free_port() for _ in range(3)]
        self.workers_ep, self.clients_ep, self.events_ep = (
            f"tcp://127.0.0.1:{p}" for p in self.ports)
        self.state = os.path.join(self.dir, "state.db")
        self.state_arg = state or "sqlite:" + self.state
        self.dbfile = os.path.join(self.dir, "dbs.conf")
        with open(self.dbfile, "w") as f:  # DSNs with passwords stay off argv
            for name, dsn in dbs.items():
                f.write(f"{name}={dsn}\n")
        self.hb_timeout = hb_timeout
        self.env = dict(os.environ, **SAN_ENV)
        self.coordinator = None
        self.workers = []
        self.logs = []
        # stopped at exit whatever the test does: a worker left running
        # reconnects to its endpoint, and a later test's coordinator that
        # binds that port would take it for one of its own
        atexit.register(self.stop)

    def _log(self, name):
        f = open(os.path.join(self.dir, name + ".log"), "a")
        self.logs.append(f)
        return f

    def start_coordinator(self, extra=()):
        self.coordinator = subprocess.Popen(
            [SLUICE, "coordinator", "--workers-endpoint", self.workers_ep, "--clients-endpoint",
             self.clients_ep, "--events-endpoint", self.events_ep, "--state", self.state_arg,
             "--heartbeat-timeout", str(self.hb_timeout), *extra],
            stdout=subprocess.DEVNULL, stderr=self._log("coordinator"), env=self.env)
        return self.coordinator

    def start_worker(self, slots=2, dbfile=None, extra=()):
        p = subprocess.Popen(
            [SLUICE, "worker", "--coordinator", self.workers_ep, "--db-file", dbfile or self.dbfile,
             "--slots", str(slots), "--heartbeat", "0.3", *extra],
            stdout=subprocess.DEVNULL, stderr=self._log(f"worker{len(self.workers)}"),
            env=self.env)
        self.workers.append(p)
        return p

    def run(self, *args, timeout=300):
        r = subprocess.run([SLUICE] + list(args), capture_output=True, text=True, env=self.env,
                           timeout=timeout)
        check_sanitizer(r.returncode, r.stderr, describe_run(args))
        return r.returncode, r.stdout, r.stderr

    def client(self, cmd, *args):
        return self.run(cmd, *args, "--coordinator", self.clients_ep)

    def submit(self, source, target, *args):
        code, out, err = self.client("submit", source, target, "--no-progress", *args)
        return int(out.strip()) if code == 0 and out.strip().isdigit() else None

    def wait_workers(self, n, timeout=20):
        end = time.time() + timeout
        while time.time() < end:
            code, out, _ = self.client("workers")
            if code == 0 and out.count(" alive ") >= n:
                return True
            time.sleep(0.2)
        return False

    def status(self, job):
        import json
        code, out, err = self.client("status", str(job), "--format", "json")
        return json.loads(out) if code == 0 else None

    def wait_state(self, job, states=("done", "failed", "cancelled"), timeout=300):
        end = time.time() + timeout
        while time.time() < end:
            s = self.status(job)
            if s and s["state"] in states:
                return s
            time.sleep(0.2)
        return None

    def stop(self):
        for p in self.workers + [self.coordinator]:
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.workers + [self.coordinator]:
            if p:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        for f in self.logs:
            f.close()
        self.logs = []
        # a coordinator or worker that died of a sanitizer report fails the file
        for name, p in [("coordinator", self.coordinator)] + [
                (f"worker{i}", w) for i, w in enumerate(self.workers)]:
            if p and p.returncode in (86, 87, 88):
                log = os.path.join(self.dir, name + ".log")
                text = open(log).read() if os.path.exists(log) else ""
                check_sanitizer(p.returncode, text, f"sluice {name}")

    def sanitizer_reports(self):
        out = []
        for name in os.listdir(self.dir):
            if name.endswith(".log"):
                text = open(os.path.join(self.dir, name)).read()
                if "Sanitizer" in text or "runtime error" in text:
                    out.append(f"{name}:\n{text[-3000:]}")
        return out


class Client:
    """The coordinator's clients socket spoken to directly (msgpack over
    ZeroMQ), as a control plane would: timings without process starts."""
    T_REPLY, T_SUBMIT, T_STATUS, T_CANCEL, T_WORKERS = 10, 13, 14, 15, 16

    def __init__(self, ep):
        import zmq
        self.s = zmq.Context.instance().socket(zmq.DEALER)
        self.s.setsockopt(zmq.LINGER, 0)
        self.s.connect(ep)
        self.next_id = 1

    def call(self, t_, **fields):
        import msgpack
        i = self.next_id
        self.next_id += 1
        self.s.send(b"\x00" + msgpack.packb({"v": 1, "t": t_, "id": i, **fields},
                                            use_bin_type=True))
        end = time.time() + 30
        while time.time() < end:
            if not self.s.poll(1000):
                continue
            f = self.s.recv()
            if f[0] != 0:
                raise RuntimeError("compressed reply: ask for less")
            m = msgpack.unpackb(f[1:], raw=False, strict_map_key=False)
            if m.get("id") == i:
                return m
        raise RuntimeError("coordinator did not answer")

    def submit(self, source="src", target="tgt", **spec):
        m = self.call(self.T_SUBMIT, source=source, target=target, **spec)
        if m["t"] != self.T_REPLY:
            raise RuntimeError(m.get("error"))
        return m["job"]

    def status(self, job):
        return self.call(self.T_STATUS, job=job)

    def cancel(self, job):
        return self.call(self.T_CANCEL, job=job)

    def trees(self):
        """Trees the live workers hold, as their heartbeats said."""
        m = self.call(self.T_WORKERS)
        return sum(w[5] for w in m["workers"] if w[1] and len(w) > 5)

    def wait(self, job, timeout=300, states=("done", "failed", "cancelled")):
        end = time.time() + timeout
        while time.time() < end:
            s = self.status(job)
            if s["state"] in states:
                return s
            time.sleep(0.01)
        return None
