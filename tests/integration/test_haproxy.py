#!/usr/bin/python3
"""ct_haproxy against a real HAProxy: reads split by weight, writes moved
between servers, sessions shut, HAProxy's own errors passed through, and a
socket that never answers timed out; a frontend held (maxconn 0) and
released, a server waited on until drained. HAProxy runs in the foreground with a
config written here; its two servers are tiny TCP servers that answer each
connection with their name ("old" / "new"). The C side is
build/asan/test_haproxy_real (next to $SLUICE), one call per step."""
import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import SAN_ENV, SLUICE, Tap, check_sanitizer, free_port  # noqa: E402

t = Tap()
DRIVER = os.path.join(os.path.dirname(os.path.abspath(SLUICE)), "test_haproxy_real")
if not os.path.exists(DRIVER) or shutil.which("haproxy") is None:
    print(f"1..0 # SKIP no {DRIVER} or no haproxy")
    sys.exit(0)

tmp = tempfile.mkdtemp(prefix="sluice_haproxy_")
atexit.register(shutil.rmtree, tmp, True)


class NameServer(threading.Thread):
    """Answers every connection with its name, then holds it open until
    the client (or HAProxy) closes it."""

    def __init__(self, name):
        super().__init__(daemon=True)
        self.name = name
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0

    def run(self):
        while True:
            c, _ = self.sock.accept()
            self.accepted += 1
            threading.Thread(target=self.hold, args=(c,), daemon=True).start()

    def hold(self, c):
        try:
            c.sendall(f"{self.name}\n".encode())
            while c.recv(4096):
                pass
        except OSError:
            pass
        finally:
            c.close()


class EchoServer(NameServer):
    """Its name first, then echoes what it gets."""

    def hold(self, c):
        try:
            c.sendall(f"{self.name}\n".encode())
            while True:
                d = c.recv(4096)
                if not d:
                    break
                c.sendall(d)
        except OSError:
            pass
        finally:
            c.close()


old, new, echo = NameServer("old"), NameServer("new"), EchoServer("echo")
old.start()
new.start()
echo.start()
reads_port, writes_port, static_port, tcp_admin = free_port(), free_port(), free_port(), free_port()
hold_port = free_port()
admin = os.path.join(tmp, "admin.sock")
cfg = os.path.join(tmp, "haproxy.cfg")
with open(cfg, "w") as f:
    f.write(f"""global
    stats socket {admin} mode 600 level admin
    stats socket 127.0.0.1:{tcp_admin} level admin
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend reads
    bind 127.0.0.1:{reads_port}
    default_backend reads
backend reads
    balance roundrobin
    server old 127.0.0.1:{old.port} weight 100
    server new 127.0.0.1:{new.port} weight 0
frontend writes
    bind 127.0.0.1:{writes_port}
    default_backend writes
backend writes
    balance roundrobin
    server old 127.0.0.1:{old.port} weight 1
    server new 127.0.0.1:{new.port} weight 0 disabled
frontend static
    bind 127.0.0.1:{static_port}
    default_backend static
backend static
    balance static-rr
    server a 127.0.0.1:{old.port}
frontend hold
    bind 127.0.0.1:{hold_port}
    maxconn 333
    default_backend hold
backend hold
    server echo 127.0.0.1:{echo.port}
""")
hap = subprocess.Popen(["haproxy", "-f", cfg, "-db"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)


def stop_haproxy():
    if hap.poll() is None:
        hap.send_signal(signal.SIGTERM)
        try:
            hap.wait(5)
        except subprocess.TimeoutExpired:
            hap.kill()
            hap.wait()


atexit.register(stop_haproxy)
deadline = time.time() + 10
while time.time() < deadline and not os.path.exists(admin) and hap.poll() is None:
    time.sleep(0.05)
if not os.path.exists(admin):
    stop_haproxy()
    print("# haproxy did not start:\n# " + (hap.stdout.read() or "").replace("\n", "\n# "))
    t.ok(False, "haproxy starts")
    t.done()


def drive(*args, sock=admin, timeout_ms=2000):
    """Runs one step: (ok, value or error text, seconds)."""
    env = dict(os.environ, **SAN_ENV, SLUICE_HAPROXY_SOCKET=sock,
               SLUICE_HAPROXY_TIMEOUT_MS=str(timeout_ms))
    t0 = time.time()
    p = subprocess.run([DRIVER, *map(str, args)], env=env, capture_output=True, text=True,
                       timeout=60)
    took = time.time() - t0
    check_sanitizer(p.returncode, p.stderr, "test_haproxy_real " + " ".join(map(str, args)))
    out = ""
    for line in p.stdout.splitlines():
        if line.startswith("# value: ") or line.startswith("# error "):
            out = line.split(": ", 1)[1] if line.startswith("# value") else line[2:]
    return p.returncode == 0 and p.stdout.startswith("ok 1"), out, took


def who(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        return s.makefile().readline().strip()


def split(port, n):
    names = [who(port) for _ in range(n)]
    return names.count("old"), names.count("new")


def held(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return s, s.makefile().readline().strip()


def is_cut(s, within=3.0):
    s.settimeout(within)
    try:
        return s.recv(100) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    finally:
        s.close()


def step(name, *args):
    r = drive(*args)
    t.ok(r[0], name, r[1])
    return r[0]


# Reads: the starting weights send everything to old.
o, n = split(reads_port, 20)
t.ok((o, n) == (20, 0), "at first all reads reach old", (o, n))

step("route_reads 25%", "reads", "reads", "old", "new", 25)
t.ok(drive("weight", "reads", "old")[1] == "75" and drive("weight", "reads", "new")[1] == "25",
     "weights read back as 75/25")
o, n = split(reads_port, 200)
t.ok(40 <= n <= 60, f"25% of 200 reads reach new ({n})", (o, n))

c, name = held(reads_port)
while name != "old":  # roundrobin: the next one goes to old
    c.close()
    c, name = held(reads_port)
ok, val, _ = drive("sessions", "reads", "old")
t.ok(ok and int(val) >= 1, f"show stat counts the held session on old ({val})")
step("route_reads 100% with the idle side shut", "reads", "reads", "old", "new", 100, "shut")
t.ok(is_cut(c), "the held connection to old is cut")
o, n = split(reads_port, 50)
t.ok((o, n) == (0, 50), "at 100% all reads reach new", (o, n))

c, name = held(reads_port)
t.ok(name == "new", "a held read on new")
step("route_reads 0% with the idle side shut", "reads", "reads", "old", "new", 0, "shut")
t.ok(is_cut(c), "the held connection to new is cut")
o, n = split(reads_port, 50)
t.ok((o, n) == (50, 0), "at 0% no read reaches new", (o, n))

# A server left in maint gets traffic back when route_reads gives it weight.
step("set new to maint", "set-state", "reads", "new", "maint")
t.ok(drive("state", "reads", "new")[1] == "maint", "state reads back maint")
step("route_reads 50% readies new", "reads", "reads", "old", "new", 50)
t.ok(drive("state", "reads", "new")[1] == "ready", "new is ready again")
o, n = split(reads_port, 100)
t.ok(40 <= n <= 60, f"50% of reads reach new ({n})", (o, n))
step("set new to drain", "set-state", "reads", "new", "drain")
t.ok(drive("state", "reads", "new")[1] == "drain", "state reads back drain")
step("route_reads 0% without shutting", "reads", "reads", "old", "new", 0)
t.ok(drive("state", "reads", "new")[1] == "drain", "a side at 0 is left as it was")

# shutdown sessions alone
c, name = held(reads_port)
t.ok(name == "old", "a held read on old")
step("shutdown sessions server reads/old", "shutdown", "reads", "old")
t.ok(is_cut(c), "shutdown sessions cuts it")

# Writes: new starts disabled.
t.ok(drive("state", "writes", "new")[1] == "maint", "the disabled server reads as maint")
o, n = split(writes_port, 10)
t.ok((o, n) == (10, 0), "at first all writes reach old", (o, n))
c, name = held(writes_port)
step("route_writes to the target", "writes", "writes", "old", "new", 1)
t.ok(is_cut(c), "the held write connection to old is cut")
t.ok((drive("state", "writes", "old")[1], drive("state", "writes", "new")[1]) ==
     ("maint", "ready"), "old maint, new ready")
t.ok((drive("weight", "writes", "old")[1], drive("weight", "writes", "new")[1]) == ("0", "1"),
     "weights 0/1")
o, n = split(writes_port, 20)
t.ok((o, n) == (0, 20), "all writes reach new", (o, n))
c, name = held(writes_port)
step("route_writes back to the source", "writes", "writes", "old", "new", 0)
t.ok(is_cut(c), "the held write connection to new is cut")
o, n = split(writes_port, 20)
t.ok((o, n) == (20, 0), "all writes reach old again", (o, n))

# Over a TCP stats socket.
ok, val, _ = drive("weight", "writes", "old", sock=f"127.0.0.1:{tcp_admin}")
t.ok(ok and val == "1", f"get weight over HOST:PORT ({val})")

# HAProxy's own errors.
ok, err, _ = drive("reads", "reads", "old", "nosuch", 25)
t.ok(not ok and 'HAProxy refused "set server reads/nosuch weight 25": No such server.' in err
     and err.startswith("error invalid"), "an unknown server: HAProxy's text", err)
ok, err, _ = drive("weight", "nosuch", "old")
t.ok(not ok and "No such backend." in err, "an unknown backend", err)
ok, err, _ = drive("state", "reads", "nosuch")
t.ok(not ok and "no server reads/nosuch" in err, "show servers state without the server", err)
ok, err, _ = drive("sessions", "nosuch", "old")
t.ok(not ok and "no server nosuch/old" in err, "show stat without the backend", err)
ok, err, _ = drive("set-weight", "static", "a", 5)
t.ok(not ok and "static LB algorithm" in err and err.startswith("error internal"),
     "static-rr refuses weight 5", err)
ok, err, _ = drive("reads", "reads", "old", "new x", 25)
t.ok(not ok and err.startswith("error invalid") and "[A-Za-z0-9_.:-]" in err,
     "a name with a space never reaches HAProxy", err)
o, n = split(reads_port, 10)
t.ok((o, n) == (10, 0), "failed calls left routing as it was", (o, n))

# A socket that accepts and never answers.
hang_path = os.path.join(tmp, "hang.sock")
hang = socket.socket(socket.AF_UNIX)
hang.bind(hang_path)
hang.listen(8)
keep = []
threading.Thread(target=lambda: [keep.append(hang.accept()) for _ in range(8)],
                 daemon=True).start()
ok, err, took = drive("reads", "reads", "old", "new", 25, sock=hang_path, timeout_ms=500)
t.ok(not ok and f"HAProxy at {hang_path} did not answer within 500 ms" in err,
     "a hanging socket times out", err)
t.ok(took < 3.0, f"within about the timeout ({took:.2f} s)")

t.ok(hap.poll() is None, "haproxy still runs")


# Hold and release a frontend; wait for a server to drain.
def slim(frontend):
    """slim of FRONTEND's row, read over the admin socket without the C side."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(admin)
        s.sendall(b"show stat -1 1 -1\n")
        out = b""
        while d := s.recv(65536):
            out += d
    lines = out.decode().splitlines()
    hdr = lines[0].lstrip("# ").split(",")
    for line in lines[1:]:
        f = line.split(",")
        if len(f) == len(hdr) and f[0] == frontend and f[1] == "FRONTEND":
            return f[hdr.index("slim")]
    return None


def answer(s, within):
    """What s receives within the time: b"" when closed, None when nothing."""
    s.settimeout(within)
    try:
        return s.recv(100)
    except socket.timeout:
        return None
    except ConnectionResetError:
        return b""


est, name = held(hold_port)
t.ok(name == "echo" and echo.accepted == 1, "an established session through frontend hold")
ok, val, took = drive("drained", "hold", "echo", 300)
t.ok(ok and val == "1 1 left" and took >= 0.3, f"wait_drained: 1, one left after 300 ms ({took:.2f} s)",
     val)
ok, val, _ = drive("hold", "hold")
t.ok(ok and val == "333", "hold_frontend saves maxconn 333", val)
t.ok(slim("hold") == "0", "slim reads 0 while held", slim("hold"))
ok, err, _ = drive("hold", "hold")
t.ok(not ok and "already held" in err and err.startswith("error invalid"),
     "holding a held frontend is refused (the saved value would be lost)", err)
est.sendall(b"ping\n")
t.ok(answer(est, 3) == b"ping\n", "the established session is still served while held")
step("release_frontend 333 with nobody waiting", "release", "hold", 333)
t.ok(slim("hold") == "333", "slim reads 333 again", slim("hold"))
c, name = held(hold_port)
t.ok(name == "echo", "a new connection is served after the release")
c.close()
est.close()
ok, val, took = drive("drained", "hold", "echo", 3000)
t.ok(ok and val == "0 0 left" and took < 2.5, f"wait_drained: 0 once the clients closed ({took:.2f} s)",
     val)
ok, err, _ = drive("hold", "nosuch")
t.ok(not ok and "no frontend nosuch" in err and err.startswith("error invalid"),
     "hold on an unknown frontend", err)
ok, err, _ = drive("release", "nosuch", 10)
t.ok(not ok and "nosuch" in err, "release on an unknown frontend", err)

# A client arriving while held: its connect completes in the kernel's
# backlog, nothing reaches the server, and the release lets it through.
before = echo.accepted
step("hold again", "hold", "hold")
t0 = time.time()
c = socket.create_connection(("127.0.0.1", hold_port), timeout=5)
t.ok(answer(c, 1.0) is None, "a client arriving while held gets no answer")
t.ok(echo.accepted == before, f"the server saw no new connection ({echo.accepted - before})")
t.ok(hap.poll() is None, "haproxy still runs")
drive("release", "hold", 333)
got = answer(c, 5)
pause = time.time() - t0
if got != b"echo\n":
    try:  # the watchdog takes a moment to kill a stuck HAProxy
        hap.wait(5)
    except subprocess.TimeoutExpired:
        pass
if hap.poll() is not None:
    # HAProxy 2.6.12 (Debian 12): raising maxconn while a listener waits
    # deadlocks the CLI on the proxy lock and the watchdog kills HAProxy
    # (haproxy issue #2726, fixed upstream in 2024).
    t.n += 1
    print(f"not ok {t.n} - the held client is served after the release"
          " # TODO HAProxy died on set maxconn (haproxy issue #2726)", flush=True)
else:
    t.ok(got == b"echo\n", "the held client is served right after the release", got)
    t.ok(echo.accepted == before + 1, "the server saw it once")
    t.ok(slim("hold") == "333", "slim reads 333 after the release", slim("hold"))
    t.diag(f"write pause the held client saw: {pause * 1000:.0f} ms (held about 1 s)")
    t.ok(hap.poll() is None, "haproxy still runs after the release")
c.close()
stop_haproxy()
t.done()
