#!/usr/bin/python3
"""docker/: the files parse, and every sluice command in them is one the
binary accepts (no Docker engine runs here; the cluster tests run the same
commands natively)."""
import os
import re
import subprocess
import sys

import yaml

sys.path.insert(0, os.path.dirname(__file__))
from harness import SLUICE, Tap  # noqa: E402

t = Tap()
root = os.path.join(os.path.dirname(__file__), "..", "..", "docker")
doc = yaml.safe_load(open(os.path.join(root, "compose.yaml")))
services = doc.get("services", {})
t.ok({"coordinator", "worker-source", "worker-target", "source-db", "target-db"} <=
     set(services), "compose.yaml has a coordinator, workers on each side and two databases")
for name, svc in services.items():
    for dep in svc.get("depends_on", []):
        t.ok(dep in services, f"{name} depends on {dep}, which exists")
    for c in svc.get("configs", []):
        t.ok(c["source"] in doc.get("configs", {}), f"{name}: config {c['source']} is defined")
    for s in svc.get("secrets", []):
        src = s if isinstance(s, str) else s["source"]
        t.ok(src in doc.get("secrets", {}), f"{name}: secret {src} is defined")
    if svc.get("image", "").startswith("postgres"):
        continue
    if svc.get("entrypoint", [None])[0] == "sh":  # a shell step: the key pair, made once
        t.ok("sluice keygen " in svc["entrypoint"][-1] and "test -f" in svc["entrypoint"][-1],
             f"{name}: makes a CURVE key pair with sluice keygen, only if there is none")
        continue
    cmd = svc.get("command", [])
    sub = cmd[0]
    r = subprocess.run([SLUICE, sub, "--help"], capture_output=True, text=True)
    opts = [a for a in cmd[1:] if a.startswith("--")]
    missing = [o for o in opts if o not in r.stdout]
    t.ok(r.returncode == 0 and not missing,
         f"{name}: `sluice {sub}` accepts {' '.join(opts) or 'no options'}", r.stdout + str(missing))
    t.ok(not re.search(r"postgresql://[^@\s]*:[^@\s]*@", str(svc)),
         f"{name}: no password in its command or environment")
coord = services["coordinator"]["command"]
beyond = [coord[i + 1] for i, a in enumerate(coord)
          if a.endswith("-endpoint") and "127.0.0.1" not in coord[i + 1]]
t.ok(not beyond or "--curve-secret" in coord or "--insecure" in coord,
     "a coordinator listening beyond loopback uses CURVE (or says --insecure)", coord)
for name, svc in services.items():
    cmd = svc.get("command", [])
    if cmd and cmd[0] in ("worker", "workers", "submit") and "--curve-secret" in coord:
        t.ok("--curve-server-key" in cmd, f"{name}: knows the coordinator's CURVE key", cmd)
for cfg in doc.get("configs", {}).values():
    t.ok(":" not in cfg["content"].split("//")[1].split("@")[0],
         "worker database configs carry no password")
lines = open(os.path.join(root, "Dockerfile")).read().splitlines()
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
t.ok("bash scripts/deps.sh && make" in open(os.path.join(root, "Dockerfile")).read(),
     "Dockerfile builds with the same set-up script and make as a fresh machine")
t.done()
