#!/usr/bin/python3
"""docker/: the files parse, and every sluice command in them is one the
binary accepts (no Docker engine runs here; the cluster tests run the same
commands natively). What the files say of HAProxy, the dashboard and the
runtime packages is tried natively too: haproxy -c and a running haproxy
on the config, sluice control finding its dashboard where the image puts
it, apt-cache for every package the image installs."""
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

sys.path.insert(0, os.path.dirname(__file__))
from harness import SAN_ENV, SLUICE, Tap, check_sanitizer, free_port  # noqa: E402

t = Tap()
root = os.path.join(os.path.dirname(__file__), "..", "..", "docker")
doc = yaml.safe_load(open(os.path.join(root, "compose.yaml")))
services = doc.get("services", {})
configs = doc.get("configs", {})
secrets = doc.get("secrets", {})
networks = doc.get("networks") or {}
t.ok({"coordinator", "worker-source", "worker-target", "source-db", "target-db",
      "control", "haproxy", "prometheus"} <= set(services),
     "compose.yaml has a coordinator, workers on each side, two databases, the control plane, "
     "HAProxy and Prometheus")


def opt(cmd, name):
    """The value after option name in a command list, or None."""
    return cmd[cmd.index(name) + 1] if name in cmd and cmd.index(name) + 1 < len(cmd) else None


def mounts(svc, kind):
    """{target path: source name} of a service's configs or secrets."""
    out = {}
    for c in svc.get(kind, []):
        src = c if isinstance(c, str) else c["source"]
        dflt = f"/run/secrets/{src}" if kind == "secrets" else f"/{src}"
        out[c.get("target", dflt) if isinstance(c, dict) else dflt] = src
    return out


def svc_networks(svc):
    n = svc.get("networks", ["default"])
    return set(n) if isinstance(n, list) else set(n)


help_cache = {}
for name, svc in services.items():
    for dep in svc.get("depends_on", []):
        t.ok(dep in services, f"{name} depends on {dep}, which exists")
    for c in svc.get("configs", []):
        t.ok(c["source"] in configs, f"{name}: config {c['source']} is defined")
    for s in svc.get("secrets", []):
        src = s if isinstance(s, str) else s["source"]
        t.ok(src in secrets, f"{name}: secret {src} is defined")
    for n in svc_networks(svc) - {"default"}:
        t.ok(n in networks, f"{name}: network {n} is defined")
    for p in svc.get("ports", []):
        t.ok(str(p).startswith("127.0.0.1:"), f"{name}: port {p} is published on loopback only")
    t.ok(not re.search(r"postgres(ql)?://[^@\s/]*:[^@\s/]*@|password\s*=", str(svc)),
         f"{name}: no password in its command or environment")
    pgpass = svc.get("environment", {}).get("PGPASSFILE")
    if pgpass:
        t.ok(mounts(svc, "secrets").get(pgpass) in secrets,
             f"{name}: PGPASSFILE {pgpass} is a mounted secret")
    if svc.get("image") != "sluice":
        continue
    if svc.get("entrypoint", [None])[0] == "sh":  # a shell step: the key pair, made once
        t.ok("sluice keygen " in svc["entrypoint"][-1] and "test -f" in svc["entrypoint"][-1],
             f"{name}: makes a CURVE key pair with sluice keygen, only if there is none")
        continue
    cmd = svc.get("command", [])
    sub = cmd[0]
    if sub not in help_cache:
        help_cache[sub] = subprocess.run([SLUICE, sub, "--help"], capture_output=True, text=True)
    r = help_cache[sub]
    opts = [a for a in cmd[1:] if a.startswith("--")]
    # whole option names only: --curve-key must not pass because --curve-key-file exists
    missing = [o for o in opts if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", r.stdout)]
    t.ok(r.returncode == 0 and not missing,
         f"{name}: `sluice {sub}` accepts {' '.join(opts) or 'no options'}", r.stdout + str(missing))
    for o in ("--db-file",):
        if opt(cmd, o):
            t.ok(mounts(svc, "configs").get(opt(cmd, o)) in configs,
                 f"{name}: {o} {opt(cmd, o)} is a mounted config")
    if opt(cmd, "--tokens"):
        t.ok(mounts(svc, "secrets").get(opt(cmd, "--tokens")) in secrets,
             f"{name}: --tokens {opt(cmd, '--tokens')} is a mounted secret")
r = help_cache.get("control") or subprocess.run([SLUICE, "control", "--help"],
                                                capture_output=True, text=True)
t.ok(not re.search(r"(?<![\w-])--no-such-option(?![\w-])", r.stdout) and "--haproxy" in r.stdout,
     "the option check can fail: sluice control --help lists --haproxy, not --no-such-option")

coord = services["coordinator"]["command"]
beyond = [coord[i + 1] for i, a in enumerate(coord)
          if a.endswith("-endpoint") and "127.0.0.1" not in coord[i + 1]]
t.ok(not beyond or "--curve-secret" in coord or "--insecure" in coord,
     "a coordinator listening beyond loopback uses CURVE (or says --insecure)", coord)
for name, svc in services.items():
    cmd = svc.get("command", [])
    if cmd and cmd[0] in ("worker", "workers", "submit", "control") and "--curve-secret" in coord:
        t.ok("--curve-server-key" in cmd, f"{name}: knows the coordinator's CURVE key", cmd)
dsns = []
for cname, cfg in configs.items():
    if "content" in cfg:
        dsns += [(cname, m) for m in re.findall(r"postgres(?:ql)?://[^\s\"]+", cfg["content"])]
t.ok(dsns and all(":" not in d.split("//")[1].split("@")[0] for _, d in dsns),
     f"database configs carry no password ({len(dsns)} DSNs)", dsns)

# --- the control service ---
ctl = services["control"]
cc = ctl["command"]
t.ok(cc[0] == "control" and opt(cc, "--listen") == "0.0.0.0:8080"
     and "127.0.0.1:8080:8080" in ctl.get("ports", []),
     "control listens on :8080 in its container, published on the host's 127.0.0.1:8080 only", cc)
t.ok((opt(cc, "--state") or "").startswith("sqlite:/var/lib/sluice/")
     and any(v.split(":")[1] == "/var/lib/sluice" for v in ctl.get("volumes", [])),
     "control keeps its state in a volume", cc)
cdb = configs[mounts(ctl, "configs")[opt(cc, "--db-file")]]["content"]
names = {line.split("=", 1)[0] for line in cdb.splitlines() if line.strip()}
t.ok(names == {"source", "target"} and "@source-db:" in cdb and "@target-db:" in cdb,
     "control's db-file names source and target (as the workers announce them) on the two databases",
     cdb)
t.ok(ctl.get("environment", {}).get("PGPASSFILE") == "/run/secrets/pgpass",
     "control reads the database password from PGPASSFILE, as the workers do")
clients_ep = opt(coord, "--clients-endpoint").rsplit(":", 1)[1]
events_ep = opt(coord, "--events-endpoint").rsplit(":", 1)[1]
t.ok(opt(cc, "--coordinator") == f"tcp://coordinator:{clients_ep}"
     and opt(cc, "--events") == f"tcp://coordinator:{events_ep}",
     "control reaches the coordinator's client and event endpoints", cc)
t.ok({"coordinator", "haproxy", "source-db", "target-db"} <= set(ctl.get("depends_on", [])),
     "control depends on the coordinator, haproxy and both databases")
td = services["target-db"]
t.ok(td.get("environment", {}).get("PGPASSFILE") in mounts(td, "secrets"),
     "target-db has a pgpass: a cdc subscription connects to the source with a password-less DSN")
t.ok("wal_level=logical" in " ".join(services["source-db"].get("command", [])),
     "source-db runs with wal_level=logical (cdc possible)")

# --- haproxy: the stats socket only the control service reaches ---
hp = services["haproxy"]
t.ok(hp.get("image", "").startswith("haproxy:2.6"), "haproxy runs HAProxy 2.6 (as test_haproxy.py)")
cfg_src = configs[mounts(hp, "configs")["/usr/local/etc/haproxy/haproxy.cfg"]]["file"]
t.ok(os.path.normpath(cfg_src) == "haproxy.cfg", "haproxy's config is docker/haproxy.cfg", cfg_src)
hcfg = open(os.path.join(root, "haproxy.cfg")).read()
sock = re.search(r"^\s*stats socket ipv4@(\S+):(\d+)\s.*level admin", hcfg, re.M)
hx_host, hx_port = (opt(cc, "--haproxy") or ":").rsplit(":", 1)
t.ok(sock and (sock.group(1), sock.group(2)) == (hx_host, hx_port),
     f"haproxy.cfg has a TCP stats socket at level admin where control's --haproxy points "
     f"({opt(cc, '--haproxy')})", sock and sock.group(0))
hnets = hp.get("networks", {})
admin_nets = [n for n, v in hnets.items() if hx_host in ((v or {}).get("aliases") or [])] \
    if isinstance(hnets, dict) else []
t.ok(len(admin_nets) == 1, f"{hx_host} is haproxy's alias on one network ({admin_nets})")
admin = admin_nets[0] if admin_nets else None
on_admin = sorted(n for n, s in services.items() if admin in svc_networks(s))
t.ok(admin and on_admin == ["control", "haproxy"] and (networks.get(admin) or {}).get("internal"),
     f"the stats socket's network {admin} is internal, haproxy and control alone on it ({on_admin})")
t.ok(sock and sock.group(1) not in ("0.0.0.0", "*", "")
     and not any(str(p).endswith(f":{hx_port}") for p in hp.get("ports", [])),
     "the stats socket is not bound to every interface, nor published")
for b in ("reads", "writes"):
    t.ok(re.search(rf"^backend {b}\n(?:\s+.*\n)*?\s+balance (roundrobin|leastconn)", hcfg, re.M),
         f"backend {b} uses a dynamic balance algorithm (weights 0-100 settable)")
t.ok(re.search(r"server new target-db:5432 weight 0 disabled", hcfg),
     "backend writes starts with the target disabled")

hosts = set(services) | {a for s in services.values() if isinstance(s.get("networks"), dict)
                         for v in s["networks"].values() for a in ((v or {}).get("aliases") or [])}
tmp = tempfile.mkdtemp(prefix="sluice-docker-")
ports = {p: free_port() for p in ("5432", "5433", hx_port)}


def native(text):
    """The config with compose hostnames as 127.0.0.1 and its listening
    ports moved to free ones (the servers keep 5432: haproxy -c does not
    connect to them)."""
    for h in sorted(hosts, key=len, reverse=True):
        text = re.sub(rf"(?<![\w-]){re.escape(h)}(?=:)", "127.0.0.1", text)
    text = re.sub(r"^(\s*bind )(\S*):(\d+)",
                  lambda m: f"{m.group(1)}127.0.0.1:{ports.get(m.group(3), m.group(3))}", text,
                  flags=re.M)
    return text.replace(f"ipv4@127.0.0.1:{hx_port}", f"ipv4@127.0.0.1:{ports[hx_port]}")


def hcheck(text, fname):
    path = os.path.join(tmp, fname)
    open(path, "w").write(text)
    return subprocess.run(["haproxy", "-c", "-f", path], capture_output=True, text=True)


hp_ok = shutil.which("haproxy") is not None
if hp_ok:
    r = hcheck(native(hcfg), "haproxy.cfg")
    t.ok(r.returncode == 0, "haproxy -c -f accepts docker/haproxy.cfg (hostnames as 127.0.0.1)",
         r.stdout + r.stderr)
    r = hcheck(native(hcfg).replace("level admin", "level root"), "broken.cfg")
    t.ok(r.returncode != 0, "and refuses a broken copy (stats socket level root)", r.stdout)
    # run it: the runtime API at level admin answers, with both backends and servers
    hproc = subprocess.Popen(["haproxy", "-f", os.path.join(tmp, "haproxy.cfg"), "-db"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    answer, deadline = "", time.time() + 10
    while time.time() < deadline and "reads" not in answer:
        try:
            with socket.create_connection(("127.0.0.1", ports[hx_port]), timeout=2) as s:
                s.sendall(b"show servers state\n")
                answer = s.makefile().read()
        except OSError:
            time.sleep(0.2)
    rows = {tuple(line.split()[1:4:2]): line.split() for line in answer.splitlines()
            if line and line[0].isdigit()}
    t.ok({("reads", "old"), ("reads", "new"), ("writes", "old"), ("writes", "new")} <= set(rows),
         "the running haproxy's stats socket shows backends reads and writes, servers old and new",
         answer)
    try:
        with socket.create_connection(("127.0.0.1", ports[hx_port]), timeout=2) as s:
            s.sendall(b"set server reads/new weight 10\n")
            set_answer = s.makefile().read()
    except OSError as ex:
        set_answer = f"no answer: {ex}"
    t.ok(set_answer.strip() == "", "and takes `set server reads/new weight 10` (level admin)",
         set_answer)
    hproc.terminate()
    hproc.wait(timeout=10)
else:
    for i in range(4):
        t.ok(True, "# SKIP haproxy not installed")

# --- prometheus scrapes the control service and loads the alerts ---
pr = services["prometheus"]
pm = mounts(pr, "configs")
pyml_target = [k for k, v in pm.items() if os.path.basename(configs[v]["file"]) == "prometheus.yml"]
t.ok(pr.get("image", "").startswith("prom/prometheus") and pyml_target == ["/etc/prometheus/prometheus.yml"],
     "prometheus runs prom/prometheus with docker/prometheus/prometheus.yml as its config", pm)
pyml = yaml.safe_load(open(os.path.join(root, "prometheus", "prometheus.yml")))
rule_mounts = {os.path.join("/etc/prometheus", rf) for rf in pyml.get("rule_files", [])}
t.ok(rule_mounts and rule_mounts <= set(pm)
     and all(os.path.basename(configs[pm[m]]["file"]) == os.path.basename(m) for m in rule_mounts),
     "its rule files (alerts.yml) are mounted beside the config", (rule_mounts, pm))
targets = [tg for sc in pyml["scrape_configs"] for st in sc.get("static_configs", [])
           for tg in st["targets"]]
t.ok(f"control:{opt(cc, '--listen').rsplit(':', 1)[1]}" in targets
     and any(sc.get("metrics_path", "/metrics") == "/metrics" for sc in pyml["scrape_configs"]),
     "prometheus scrapes control:8080/metrics", targets)

# --- Dockerfile ---
dockerfile = open(os.path.join(root, "Dockerfile")).read()
lines = dockerfile.splitlines()
instr = {"FROM", "RUN", "COPY", "WORKDIR", "USER", "EXPOSE", "ENTRYPOINT", "CMD", "ENV", "ARG"}
cont = False
bad = []
for line in lines:
    s = line.strip()
    if not s or s.startswith("#"):
        cont = False
        continue
    if not cont and s.split()[0] not in instr:
        bad.append(s)
    cont = s.endswith("\\")
t.ok(not bad, "Dockerfile: every line is a known instruction or a continuation", bad)
t.ok("bash scripts/deps.sh && make" in dockerfile,
     "Dockerfile builds with the same set-up script and make as a fresh machine")
runtime = dockerfile.split("\nFROM ")[-1]
inst = re.search(r"apt-get install -y (.*?)(?:&&|$)", runtime.replace("\\\n", " "), re.S)
pkgs = [p for p in inst.group(1).split() if not p.startswith("-")] if inst else []
t.ok(pkgs, "the runtime stage installs packages", runtime)
if shutil.which("apt-cache"):
    for p in pkgs:
        r = subprocess.run(["apt-cache", "show", p], capture_output=True, text=True)
        t.ok(r.returncode == 0 and f"Package: {p}" in r.stdout, f"Debian has the runtime package {p}",
             r.stderr)
    r = subprocess.run(["apt-cache", "show", "libmicrohttpd-no-such-package"], capture_output=True)
    t.ok(r.returncode != 0, "and apt-cache refuses a package that does not exist")
    # every library the binary needs comes from an installed package (or libc/the sanitizers)
    needed = re.findall(r"\(NEEDED\).*\[(.+)\]",
                        subprocess.run(["readelf", "-d", SLUICE], capture_output=True, text=True).stdout)
    ldmap = dict(re.findall(r"^\s*(\S+) \(libc6,x86-64[^)]*\) => (\S+)",
                            subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True,
                                           text=True).stdout, re.M))
    base = {"libc6", "libgcc-s1", "libstdc++6"}
    uncovered = []
    for lib in needed:
        if re.match(r"lib(asan|ubsan|lsan|tsan)\.", lib):
            continue
        owner = ""
        # dpkg knows a file by the path its package has (/lib or /usr/lib)
        for path in dict.fromkeys([ldmap.get(lib, lib), os.path.realpath(ldmap.get(lib, lib))]):
            owner = owner or subprocess.run(["dpkg", "-S", path], capture_output=True,
                                            text=True).stdout
        owner = owner.split(":")[0] if owner else "?"
        if owner not in base and owner not in pkgs:
            uncovered.append(f"{lib} ({owner})")
    t.ok(needed and not uncovered,
         f"the runtime packages give every library sluice links ({len(needed)} NEEDED)", uncovered)
else:
    t.ok(True, "# SKIP apt-cache not here")
t.ok(re.search(r"^EXPOSE .*\b8080\b", dockerfile, re.M), "Dockerfile exposes 8080 (sluice control)")

# the dashboard where the image puts it, found by sluice control next to the binary
copies = dict((dst, src) for src, dst in
              re.findall(r"^COPY --from=build (\S+) (\S+)$", dockerfile, re.M))
bin_dst = next((d for d, s in copies.items() if s.endswith("build/sluice")), None)
dash_dst = next((d for d, s in copies.items() if s.rstrip("/").endswith("control/dashboard")), None)
t.ok(bin_dst and dash_dst, "the image gets the binary and control/dashboard", copies)


def dashboard_served(bin_path, dash_path):
    """Lays the image's files out under a temp root, runs sluice control
    from there and returns what GET / answered (None: no answer)."""
    r = tempfile.mkdtemp(dir=tmp)
    os.makedirs(os.path.dirname(r + bin_path))
    shutil.copy(SLUICE, r + bin_path)
    shutil.copytree(os.path.join(root, "..", "control", "dashboard"), r + dash_path)
    tokens = os.path.join(r, "tokens")
    open(tokens, "w").write("operator " + "x" * 24 + "\n")
    port = free_port()
    dead = f"tcp://127.0.0.1:{free_port()}"
    p = subprocess.Popen([r + bin_path, "control", "--listen", f"127.0.0.1:{port}", "--tokens", tokens,
                          "--state", f"sqlite:{r}/control.db", "--coordinator", dead, "--events", dead],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, **SAN_ENV})
    body, deadline = None, time.time() + 15
    while time.time() < deadline and body is None and p.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                body = resp.read().decode()
        except urllib.error.HTTPError as ex:
            body = f"HTTP {ex.code}"
        except OSError:
            time.sleep(0.2)
    p.terminate()
    _, err = p.communicate(timeout=15)
    check_sanitizer(p.returncode, err, "sluice control (dashboard lookup)")
    return body


if bin_dst and dash_dst:
    body = dashboard_served(bin_dst, dash_dst)
    t.ok(body and "<html" in body and "app.js" in body,
         f"sluice control at {bin_dst} serves the dashboard from {dash_dst} without --dashboard",
         body)
    body = dashboard_served(bin_dst, "/usr/local/share/dashboard")
    t.ok(not (body and "app.js" in body), "and does not find it elsewhere (the check can fail)", body)
shutil.rmtree(tmp, ignore_errors=True)
t.done()
