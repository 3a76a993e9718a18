#!/usr/bin/python3
"""sluice loadgen: write load for a migration dry run, and proof that no
acknowledged write was lost.

N client threads insert (70%), update (20%) and delete (10%) rows of their
own in a table of the generator's own (never a user table), at an overall
target rate. Every write is idempotent by construction (an upsert, an
update that sets a value, a delete by id), so a write whose outcome is
unknown (the connection dropped around the commit) is simply retried with
backoff until it is acknowledged or the run ends. A ledger keeps, for each
id, the last acknowledged state (its value, or deleted). At the end every
acknowledged write is checked against the database now authoritative; any
write missing, with another value, or deleted but present is a lost write,
and the exit status says so (1).

With --control and --migration it follows sluice control's routing
endpoint (a long poll): writes "both" go to the source and the target
directly and are acknowledged when both committed; reads "shadow" read a
row from both sides, compare, and post the counts to shadow-results.

Exit status: 0 no write lost, 1 lost writes, 2 bad arguments or a database
(or the control plane) that could not be reached at the start or the check.
Passwords are never printed: connection strings are shown redacted.
"""
import argparse
import bisect
import collections
import datetime
import json
import os
import random
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.request

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

LEDGER_FORMAT = "sluice-loadgen-ledger 1"
COLUMNS = {"id", "client", "seq", "val", "updated_at"}
ABSENT = object()  # a row not in the database (a NULL val is never written)
MAX_CLIENTS = 256  # ids: run tag (22 bits) | client (8 bits) | sequence (32 bits)


class Fatal(Exception):
    """One line for the user, then exit 2."""


class Secrets:
    """Every password seen in a connection string, so that no message can
    carry one, whatever the driver put in it."""

    def __init__(self):
        self.words = set()

    def add_dsn(self, dsn):
        try:
            pw = psycopg2.extensions.parse_dsn(dsn).get("password")
        except psycopg2.Error:
            pw = None
        if pw:
            self.words.add(pw)

    def add(self, word):
        if word:
            self.words.add(word)

    def redact(self, text):
        text = re.sub(r"(\w+://[^:/@\s]*:)[^@\s]*@", r"\1***@", str(text))
        text = re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", text, flags=re.I)
        for w in sorted(self.words, key=len, reverse=True):
            text = text.replace(w, "***")
        return text

    def line(self, text):
        """A redacted message on one line."""
        return " ".join(self.redact(text).split())


SECRETS = Secrets()


def connect(dsn, autocommit=True):
    c = psycopg2.connect(dsn, connect_timeout=5, application_name="sluice-loadgen",
                         keepalives=1, keepalives_idle=5, keepalives_interval=2,
                         keepalives_count=3, tcp_user_timeout=10000)
    c.autocommit = autocommit
    return c


def table_ident(name):
    return sql.Identifier(*name.split(".", 1))


def percentile(values, p):
    if not values:
        return 0.0
    v = sorted(values)
    return v[min(len(v) - 1, int(p / 100.0 * len(v)))]


def http(method, url, body=None, token=None, timeout=10):
    """(status, parsed JSON) or (None, error text); never raises."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"null")
        except ValueError:
            return e.code, None
    except (urllib.error.URLError, OSError, ValueError) as e:
        return None, str(getattr(e, "reason", e))


def valid_routing(doc):
    return (isinstance(doc, dict) and isinstance(doc.get("version"), int)
            and doc.get("reads") in ("source", "shadow", "target")
            and doc.get("writes") in ("source", "both", "target"))


class Stats:
    """Counters shared by the threads; every change under one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ops = collections.Counter()  # acknowledged inserts/updates/deletes
        self.retries = 0
        self.update_missed = 0  # an update that found no row (the row was lost already)
        self.errors = collections.Counter()
        self.lat_all = []  # a reservoir of write latencies (s)
        self.lat_seen = 0
        self.lat_window = []
        self.last_ack = None
        self.max_gap, self.max_gap_at = 0.0, 0.0
        self.reads = self.read_errors = 0
        self.shadow = collections.Counter()  # compared, mismatched, posted_*, post_errors

    def error(self, where, e):
        msg = SECRETS.line(getattr(e, "pgerror", None) or e)[:160] or type(e).__name__
        with self.lock:
            self.errors[f"{where}: {msg}"] += 1

    def acked(self, op, latency, now, t0):
        with self.lock:
            self.ops[op] += 1
            self.lat_window.append(latency)
            self.lat_seen += 1
            if len(self.lat_all) < 100000:
                self.lat_all.append(latency)
            else:
                j = random.randrange(self.lat_seen)
                if j < len(self.lat_all):
                    self.lat_all[j] = latency
            if self.last_ack is not None and now - self.last_ack > self.max_gap:
                self.max_gap, self.max_gap_at = now - self.last_ack, self.last_ack - t0
            self.last_ack = now


class Client(threading.Thread):
    """One client: its own rows, one write at a time, retried until
    acknowledged or the run ends."""

    def __init__(self, gen, n):
        super().__init__(daemon=True, name=f"client-{n}")
        self.gen, self.n = gen, n
        self.seq = 0
        self.live = []  # ids acknowledged as present
        self.conns = {}
        self.pending = None  # (id, value or None) of the write in flight
        self.retrying = False  # the write in flight failed once: its outcome is unknown
        self.rng = random.Random()

    def conn(self, dsn):
        c = self.conns.get(dsn)
        if c is None or c.closed:
            c = self.conns[dsn] = connect(dsn)
        return c

    def drop(self, dsn):
        c = self.conns.pop(dsn, None)
        if c is not None:
            try:
                c.close()
            except psycopg2.Error:
                pass

    def choose(self):
        r = self.rng.random()
        self.seq += 1
        val = f"{self.n}:{self.seq}:{self.rng.getrandbits(32):08x}"
        # the time is the client's, not each server's now(): dual writes and
        # retries write the very same row
        self.at = datetime.datetime.now(datetime.timezone.utc)
        if r < 0.7 or not self.live:
            i = self.gen.id_of(self.n, self.seq)
            return "insert", i, val
        k = self.rng.randrange(len(self.live))
        i = self.live[k]
        if r < 0.9:
            return "update", i, val
        self.live[k] = self.live[-1]
        self.live.pop()
        return "delete", i, None

    def statement(self, op, i, val):
        g = self.gen
        if op == "insert":
            return g.q_insert, (i, self.n, self.seq, val, self.at)
        if op == "update":
            return g.q_update, (self.seq, val, self.at, i)
        return g.q_delete, (i,)

    def attempt(self, op, i, val):
        """One try on every database the routing names; True when all committed."""
        q, params = self.statement(op, i, val)
        missed = False
        for dsn in self.gen.write_targets():
            try:
                cur = self.conn(dsn).cursor()
                cur.execute(q, params)
                missed |= op == "update" and cur.rowcount == 0
            except psycopg2.Error as e:
                self.gen.stats.error("write", e)
                self.drop(dsn)
                return False
        if missed:
            with self.gen.stats.lock:
                self.gen.stats.update_missed += 1
        return True

    def run(self):
        g = self.gen
        interval = g.args.clients / g.args.rate
        next_t = time.monotonic() + self.rng.random() * interval
        while not g.stop_new.is_set():
            delay = next_t - time.monotonic()
            if delay > 0:
                if g.stop_new.wait(delay):
                    break
            elif delay < -1.0:  # far behind (an outage): no burst to catch up
                next_t = time.monotonic()
            next_t += interval
            op, i, val = self.choose()
            with g.lock:
                self.pending = (i, val)
            t0 = time.monotonic()
            tries = 0
            while not self.attempt(op, i, val):
                tries += 1
                self.retrying = True
                with g.stats.lock:
                    g.stats.retries += 1
                backoff = min(1.0, 0.05 * 2 ** min(tries, 5)) * (0.5 + self.rng.random())
                if g.stop_retry.wait(backoff):
                    return  # the run is over: this write's outcome stays unknown
            now = time.monotonic()
            self.retrying = False
            with g.lock:
                if g.closed:
                    return  # acknowledged after the ledger was taken: stays unknown
                g.ledger[i] = val
                self.pending = None
                if op == "insert":
                    g.readable_ids.append(i)
                    g.readable_at.append(now)
            if op == "insert":
                self.live.append(i)
            g.stats.acked(op, now - t0, now, g.t0)
        for dsn in list(self.conns):
            self.drop(dsn)


class LoadGen:
    def __init__(self, args, token):
        self.args, self.token = args, token
        self.stats = Stats()
        self.lock = threading.Lock()
        self.ledger = {}  # id -> last acknowledged value, None = deleted
        self.readable_ids, self.readable_at = [], []  # inserted ids, in acknowledgement order
        self.closed = False
        self.stop_new = threading.Event()  # no new writes
        self.stop_retry = threading.Event()  # no more retries: the run is over
        self.routing = {"version": 0, "reads": "source", "writes": "source",
                        "read_percent_target": 0}
        self.routing_changes = []
        self.tag = None
        t = table_ident(args.table)
        self.q_insert = sql.SQL(
            "INSERT INTO {} (id, client, seq, val, updated_at) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET client = excluded.client, seq = excluded.seq, "
            "val = excluded.val, updated_at = excluded.updated_at").format(t)
        self.q_update = sql.SQL(
            "UPDATE {} SET seq = %s, val = %s, updated_at = %s WHERE id = %s").format(t)
        self.q_delete = sql.SQL("DELETE FROM {} WHERE id = %s").format(t)
        self.q_read = sql.SQL("SELECT val FROM {} WHERE id = %s").format(t)

    def id_of(self, client, seq):
        return (self.tag << 40) | (client << 32) | seq

    def write_targets(self):
        a, w = self.args, self.routing["writes"]
        if w == "both":
            return (a.source_dsn, a.target_dsn)
        if a.write_dsn:
            return (a.write_dsn,)
        return (a.source_dsn if w == "source" else a.target_dsn,)

    # -- routing ---------------------------------------------------------
    def routing_url(self, wait):
        return (f"{self.args.control.rstrip('/')}/migrations/{self.args.migration}/routing"
                f"?wait={wait}&version={self.routing['version']}")

    def set_routing(self, doc):
        if doc["version"] != self.routing["version"] or doc != self.routing:
            self.routing = {k: doc.get(k) for k in ("version", "reads", "writes",
                                                     "read_percent_target")}
            t = round(time.monotonic() - self.t0, 2) if hasattr(self, "t0") else 0.0
            self.routing_changes.append(dict(self.routing, at_s=t))
            if not self.args.quiet:
                print(f"loadgen: routing v{doc['version']}: writes={doc['writes']} "
                      f"reads={doc['reads']} read_percent_target="
                      f"{doc.get('read_percent_target')}", file=sys.stderr, flush=True)

    def first_routing(self):
        code, doc = http("GET", self.routing_url(0), timeout=10)
        if code != 200 or not valid_routing(doc):
            why = doc.get("error") if isinstance(doc, dict) else doc
            raise Fatal(f"cannot read the routing of migration {self.args.migration} from "
                        f"{self.args.control}: {code or ''} {why}".replace("  ", " "))
        self.set_routing(doc)

    def router(self):
        fails = 0
        while not self.stop_retry.is_set():
            code, doc = http("GET", self.routing_url(20), timeout=30)
            if code == 200 and valid_routing(doc):
                fails = 0
                self.set_routing(doc)
                continue
            fails += 1
            self.stats.error("routing", f"{code or ''} {doc}")
            self.stop_retry.wait(min(2.0, 0.1 * 2 ** fails))

    # -- reads -----------------------------------------------------------
    def pick_readable(self, settle):
        """A random inserted id whose insert was acknowledged settle s ago."""
        with self.lock:
            n = bisect.bisect_right(self.readable_at, time.monotonic() - settle)
            return self.readable_ids[random.randrange(n)] if n else None

    def read_one(self, conns, dsn, i):
        try:
            c = conns.get(dsn)
            if c is None or c.closed:
                c = conns[dsn] = connect(dsn)
            cur = c.cursor()
            cur.execute(self.q_read, (i,))
            row = cur.fetchone()
            return row[0] if row else ABSENT
        except psycopg2.Error as e:
            conns.pop(dsn, None)
            self.stats.error("read", e)
            with self.stats.lock:
                self.stats.read_errors += 1
            raise

    def reader(self):
        a, st = self.args, self.stats
        conns, pending, examples = {}, collections.Counter(), []
        last_post = time.monotonic()
        interval = 1.0 / a.read_rate
        while not self.stop_new.wait(interval):
            shadow = self.routing["reads"] == "shadow" and a.source_dsn and a.target_dsn
            i = self.pick_readable(1.0 if shadow else 0.0)
            if i is not None:
                try:
                    if shadow:
                        # a difference may be replication lag: look again (4 times over 2 s,
                        # a slow apply under load lags more than 0.5 s) before calling it one
                        for again in range(5):
                            if again:
                                time.sleep(0.5)
                            s = self.read_one(conns, a.source_dsn, i)
                            t = self.read_one(conns, a.target_dsn, i)
                            if s == t:
                                break
                        pending["compared"] += 1
                        if s != t:
                            pending["mismatched"] += 1
                            if len(examples) < 10:
                                examples.append({
                                    "table": a.table, "id": i,
                                    "source": None if s is ABSENT else s,
                                    "target": None if t is ABSENT else t})
                        with st.lock:
                            st.reads += 1
                    elif a.read_dsn:
                        self.read_one(conns, a.read_dsn, i)
                        with st.lock:
                            st.reads += 1
                except psycopg2.Error:
                    pass
            if pending["compared"] and time.monotonic() - last_post >= 1.0:
                self.post_shadow(pending, examples)
                last_post = time.monotonic()
        if pending["compared"]:
            self.post_shadow(pending, examples)
        for c in conns.values():
            c.close()

    def post_shadow(self, pending, examples):
        body = {"compared": pending["compared"], "mismatched": pending["mismatched"],
                "examples": list(examples)}
        code, doc = http("POST", f"{self.args.control.rstrip('/')}/migrations/"
                         f"{self.args.migration}/shadow-results", body, token=self.token)
        with self.stats.lock:
            self.stats.shadow["compared"] += body["compared"]
            self.stats.shadow["mismatched"] += body["mismatched"]
            if code == 200:
                self.stats.shadow["posted_compared"] += body["compared"]
                self.stats.shadow["posted_mismatched"] += body["mismatched"]
            else:
                self.stats.shadow["post_errors"] += 1
        if code != 200:
            why = doc.get("error") if isinstance(doc, dict) else doc
            self.stats.error("shadow-results", f"{code or ''} {why}")
        pending.clear()
        examples.clear()

    # -- progress --------------------------------------------------------
    def progress(self):
        st, last_n, last_t = self.stats, 0, time.monotonic()
        while not self.stop_retry.wait(1.0):
            now = time.monotonic()
            with st.lock:
                n = sum(st.ops.values())
                window, st.lat_window = st.lat_window, []
                retries, errors = st.retries, sum(st.errors.values())
                gap = st.max_gap
                if st.last_ack is not None:
                    gap = max(gap, now - st.last_ack)
            retrying = sum(1 for c in self.clients if c.retrying)
            r = self.routing
            routing = f" routing v{r['version']} writes={r['writes']} reads={r['reads']}" \
                if self.args.control else ""
            print(f"loadgen: {now - self.t0:6.1f}s {(n - last_n) / (now - last_t):7.1f} writes/s"
                  f" acked {n} retries {retries} errors {errors} in retry {retrying}"
                  f" p99 {percentile(window, 99) * 1000:.1f} ms"
                  f" longest pause {gap:.2f} s{routing}", file=sys.stderr, flush=True)
            last_n, last_t = n, now

    # -- the run ---------------------------------------------------------
    def run(self):
        a = self.args
        self.t0 = time.monotonic()
        self.clients = [Client(self, n) for n in range(a.clients)]
        threads = list(self.clients)
        reader = None
        if a.read_dsn or a.control:
            reader = threading.Thread(target=self.reader, daemon=True, name="reader")
            threads.append(reader)
        if a.control:
            threads.append(threading.Thread(target=self.router, daemon=True, name="router"))
        if not a.quiet:
            threads.append(threading.Thread(target=self.progress, daemon=True, name="progress"))
        # SIGTERM/SIGINT end the run as --duration would: writes in flight
        # finish (within --grace), the ledger is written, the check runs
        def stop(sig, _frame):
            print(f"loadgen: {signal.Signals(sig).name}: ending the run", file=sys.stderr,
                  flush=True)
            self.stop_new.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, stop)
        for t in threads:
            t.start()
        self.stop_new.wait(a.duration)
        self.stop_new.set()
        self.elapsed = time.monotonic() - self.t0
        # writes in flight may still be acknowledged within the grace period
        end = time.monotonic() + a.grace
        for c in self.clients:
            c.join(max(0.0, end - time.monotonic()))
        self.stop_retry.set()
        for c in self.clients:
            c.join(2.0)
        if reader:  # its last shadow counts posted before the summary is made
            reader.join(15.0)
        with self.lock:
            self.closed = True
            self.unknown = {c.pending[0]: c.pending[1] for c in self.clients if c.pending}
            self.acked_ledger = dict(self.ledger)


# -- checking ---------------------------------------------------------------
def check(dsn, table, tag, acked, unknown):
    """Every acknowledged state against the rows of this run in dsn."""
    where = SECRETS.redact(dsn)
    try:
        c = connect(dsn, autocommit=False)
    except psycopg2.Error as e:
        raise Fatal(f"cannot connect to {where} for the check: {SECRETS.line(e)}")
    lo, hi = tag << 40, (tag + 1) << 40
    have = {}
    try:
        cur = c.cursor(name="loadgen_check")
        cur.itersize = 10000
        cur.execute(sql.SQL("SELECT id, val FROM {} WHERE id >= %s AND id < %s")
                    .format(table_ident(table)), (lo, hi))
        for i, v in cur:
            have[i] = v
        c.rollback()
    except psycopg2.Error as e:
        raise Fatal(f"cannot read {table} on {where} for the check: {SECRETS.line(e)}")
    finally:
        c.close()
    res = {"dsn": where, "ids_checked": len(acked), "missing": 0, "wrong_value": 0,
           "deleted_but_present": 0, "unexpected_rows": 0, "examples": []}
    for i, want in acked.items():
        got = have.get(i, ABSENT)
        ok = got == want if want is not None else got is ABSENT
        if not ok and i in unknown:  # the write in flight at the end may have landed
            alt = unknown[i]
            ok = got == alt if alt is not None else got is ABSENT
        if ok:
            continue
        kind = ("deleted_but_present" if want is None else
                "missing" if got is ABSENT else "wrong_value")
        res[kind] += 1
        if len(res["examples"]) < 10:
            res["examples"].append({"id": i, "kind": kind, "acknowledged": want,
                                    "found": None if got is ABSENT else got})
    res["unexpected_rows"] = sum(1 for i in have if i not in acked and i not in unknown)
    res["lost"] = res["missing"] + res["wrong_value"] + res["deleted_but_present"]
    return res


def prepare_table(dsn, table, create):
    """The table exists (or is created) and has exactly the generator's
    columns: a user table is never written."""
    where = SECRETS.redact(dsn)
    try:
        c = connect(dsn)
    except psycopg2.Error as e:
        raise Fatal(f"cannot connect to {where}: {SECRETS.line(e)}")
    try:
        cur = c.cursor()
        if create:
            cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (id bigint PRIMARY KEY, "
                                "client int NOT NULL, seq bigint NOT NULL, val text, "
                                "updated_at timestamptz NOT NULL DEFAULT now())")
                        .format(table_ident(table)))
        cur.execute("SELECT to_regclass(%s)", (str(table_ident(table).as_string(c)),))
        oid = cur.fetchone()[0]
        if oid is None:
            raise Fatal(f"table {table} does not exist on {where}; pass --create-table")
        cur.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass "
                    "AND attnum > 0 AND NOT attisdropped", (oid,))
        cols = {r[0] for r in cur.fetchall()}
        if cols != COLUMNS:
            raise Fatal(f"table {table} on {where} has columns {sorted(cols)}, not the "
                        f"generator's {sorted(COLUMNS)}: refusing to write to it")
    except psycopg2.Error as e:
        raise Fatal(f"cannot prepare {table} on {where}: {SECRETS.line(e)}")
    finally:
        c.close()


def pick_tag(dsns, table):
    """A run tag whose id range is empty everywhere we write."""
    conns = []
    try:
        for d in dsns:
            conns.append(connect(d))
        for _ in range(20):
            tag = random.randrange(1, 1 << 22)
            lo, hi = tag << 40, (tag + 1) << 40
            used = False
            for c in conns:
                cur = c.cursor()
                cur.execute(sql.SQL("SELECT 1 FROM {} WHERE id >= %s AND id < %s LIMIT 1")
                            .format(table_ident(table)), (lo, hi))
                used |= cur.fetchone() is not None
            if not used:
                return tag
        raise Fatal(f"no free id range found in {table}")
    except psycopg2.Error as e:
        raise Fatal(f"cannot read {table}: {SECRETS.line(e)}")
    finally:
        for c in conns:
            c.close()


# -- the command --------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        print(f"loadgen: {SECRETS.line(message)}", file=sys.stderr)
        sys.exit(2)


def parse_args(argv):
    p = Parser(prog="loadgen.py", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write-dsn", help="where writes go (HAProxy's write frontend)")
    p.add_argument("--read-dsn", help="where reads go (HAProxy's read frontend)")
    p.add_argument("--source-dsn", help="the source, directly (dual writes, shadow reads)")
    p.add_argument("--target-dsn", help="the target, directly (dual writes, shadow reads)")
    p.add_argument("--control", help="sluice control's URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--migration", help="the migration id whose routing to follow")
    p.add_argument("--token-file", help="a file holding the bearer token for shadow-results")
    p.add_argument("--table", default="loadgen_orders", help="the generator's own table")
    p.add_argument("--create-table", action="store_true", help="create the table if missing")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--rate", type=float, default=500, help="target writes/s, all clients")
    p.add_argument("--read-rate", type=float, default=50, help="reads/s (one reader)")
    p.add_argument("--duration", type=float, default=60, help="seconds")
    p.add_argument("--grace", type=float, default=5,
                   help="seconds after the run for writes in flight to be acknowledged")
    p.add_argument("--ledger", help="write the ledger here (JSON); with --check-only, read it")
    p.add_argument("--check-dsn", action="append",
                   help="the database now authoritative (repeatable; default --write-dsn)")
    p.add_argument("--check-only", action="store_true",
                   help="no load: check the ledger of an earlier run (--ledger)")
    p.add_argument("--no-check", action="store_true", help="skip the check at the end")
    p.add_argument("--json", action="store_true", help="the summary as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    a = p.parse_args(argv)
    for name in ("write_dsn", "read_dsn", "source_dsn", "target_dsn"):
        SECRETS.add_dsn(getattr(a, name) or "")
    for d in a.check_dsn or []:
        SECRETS.add_dsn(d)
    for name in ("write_dsn", "read_dsn", "source_dsn", "target_dsn"):
        d = getattr(a, name)
        if d is not None:
            try:
                psycopg2.extensions.parse_dsn(d)
            except psycopg2.Error:
                p.error(f"--{name.replace('_', '-')}: not a valid connection string")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?", a.table):
        p.error("--table: expected NAME or SCHEMA.NAME (letters, digits, _)")
    if a.check_only:
        if not a.ledger:
            p.error("--check-only needs --ledger FILE")
        if not (a.check_dsn or a.write_dsn):
            p.error("--check-only needs --check-dsn (or --write-dsn)")
        return a
    if not 1 <= a.clients <= MAX_CLIENTS:
        p.error(f"--clients: 1..{MAX_CLIENTS}")
    if not a.rate > 0 or not a.duration > 0 or not a.read_rate > 0 or a.grace < 0:
        p.error("--rate, --read-rate and --duration must be > 0, --grace >= 0")
    if bool(a.control) != bool(a.migration):
        p.error("--control and --migration go together")
    if a.control:
        if not (a.source_dsn and a.target_dsn):
            p.error("--control needs --source-dsn and --target-dsn (dual writes, shadow reads)")
        if not a.token_file:
            p.error("--control needs --token-file (shadow results are posted with it)")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", a.migration):
            p.error("--migration: expected letters, digits, _ . -")
        if not re.match(r"https?://", a.control):
            p.error("--control: expected an http:// or https:// URL")
    elif not (a.write_dsn or a.source_dsn):
        p.error("give --write-dsn (or --source-dsn)")
    return a


def summary_text(doc):
    lines = []
    if "duration_s" in doc:
        lines += [
            f"run {doc['run']}: {doc['duration_s']} s, {doc['clients']} clients, target "
            f"{doc['rate_target']} writes/s, table {doc['table']}",
            f"writes acknowledged: {doc['acked']} ({doc['inserts']} inserts, {doc['updates']} "
            f"updates, {doc['deletes']} deletes), {doc['writes_per_s']}/s",
            f"retries: {doc['retries']}, outcome unknown at the end: {doc['unknown']}, updates "
            f"that found no row: {doc['update_missed']}",
            f"write latency: p50 {doc['latency_ms']['p50']} ms, p99 {doc['latency_ms']['p99']} "
            f"ms, max {doc['latency_ms']['max']} ms",
            f"longest write pause (gap between acknowledged writes): {doc['max_pause_s']} s "
            f"(at {doc['max_pause_at_s']} s)",
            f"reads: {doc['reads']} ({doc['read_errors']} errors); shadow reads: compared "
            f"{doc['shadow']['compared']}, mismatched {doc['shadow']['mismatched']}, post "
            f"errors {doc['shadow']['post_errors']}",
        ]
        if doc.get("routing"):
            r = doc["routing"]
            lines.append(f"routing at the end: v{r['version']} writes={r['writes']} "
                         f"reads={r['reads']} ({len(doc['routing_changes'])} seen)")
        for msg, n in doc["errors"].items():
            lines.append(f"error x{n}: {msg}")
    for c in doc["check"]:
        lines.append(f"check {c['dsn']}: {c['ids_checked']} ids, {c['missing']} missing, "
                     f"{c['wrong_value']} with another value, {c['deleted_but_present']} "
                     f"deleted but present ({c['unexpected_rows']} rows never acknowledged)")
        for ex in c["examples"][:5]:
            lines.append(f"  lost: id {ex['id']} {ex['kind']}: acknowledged "
                         f"{ex['acknowledged']!r}, found {ex['found']!r}")
    return "\n".join(lines)


def main(argv):
    a = parse_args(argv)
    if a.check_only:
        try:
            with open(a.ledger) as f:
                led = json.load(f)
            if led.get("format") != LEDGER_FORMAT:
                raise ValueError("not a loadgen ledger")
            tag, table = int(led["run"]), led["table"]
            acked = {int(k): v for k, v in led["acked"].items()}
            unknown = {int(k): v for k, v in led["unknown"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise Fatal(f"cannot read the ledger {a.ledger}: {e}")
        doc = {"table": table, "run": tag}
    else:
        token = None
        if a.control:
            try:
                with open(a.token_file) as f:
                    token = f.read().strip()
            except OSError as e:
                raise Fatal(f"cannot read --token-file: {e.strerror}")
            if not token:
                raise Fatal("--token-file is empty")
            SECRETS.add(token)
        writes = [d for d in (a.write_dsn, a.source_dsn, a.target_dsn) if d]
        writes = list(dict.fromkeys(writes))
        for d in writes:
            prepare_table(d, a.table, a.create_table)
        gen = LoadGen(a, token)
        gen.tag = pick_tag(writes, a.table)
        if a.control:
            gen.first_routing()
        gen.run()
        st = gen.stats
        acked, unknown, tag, table = gen.acked_ledger, gen.unknown, gen.tag, a.table
        n = sum(st.ops.values())
        doc = {
            "table": table, "run": tag, "duration_s": round(gen.elapsed, 2),
            "clients": a.clients, "rate_target": a.rate,
            "acked": n, "inserts": st.ops["insert"], "updates": st.ops["update"],
            "deletes": st.ops["delete"], "writes_per_s": round(n / gen.elapsed, 1),
            "retries": st.retries, "unknown": len(unknown), "update_missed": st.update_missed,
            "latency_ms": {k: round(percentile(st.lat_all, p) * 1000, 2)
                           for k, p in (("p50", 50), ("p99", 99), ("max", 100))},
            "max_pause_s": round(st.max_gap, 3), "max_pause_at_s": round(st.max_gap_at, 2),
            "reads": st.reads, "read_errors": st.read_errors,
            "shadow": {k: st.shadow[k] for k in ("compared", "mismatched", "posted_compared",
                                                 "posted_mismatched", "post_errors")},
            "routing": gen.routing if a.control else None,
            "routing_changes": gen.routing_changes,
            "errors": dict(st.errors.most_common(10)),
        }
        if a.ledger:
            tmp = a.ledger + ".tmp"
            with open(tmp, "w") as f:
                json.dump({"format": LEDGER_FORMAT, "table": table, "run": tag,
                           "acked": {str(k): v for k, v in acked.items()},
                           "unknown": {str(k): v for k, v in unknown.items()}}, f)
            os.replace(tmp, a.ledger)
    checks = []
    if not a.no_check:
        dsns = a.check_dsn or ([a.write_dsn] if a.write_dsn else None)
        if not dsns:  # no router in front: the side that takes writes now
            w = doc.get("routing", {}) or {}
            dsns = [a.target_dsn] if w.get("writes") == "target" else \
                [d for d in (a.source_dsn, a.target_dsn if w.get("writes") == "both" else None)
                 if d]
        checks = [check(d, table, tag, acked, unknown) for d in dsns]
    doc["check"] = checks
    lost = sum(c["lost"] for c in checks)
    doc["lost_writes"] = lost if checks else None
    if a.json:
        print(json.dumps(doc, indent=1))
    else:
        print(summary_text(doc))
    if checks:
        print(f"lost writes: {lost}", file=sys.stderr if a.json else sys.stdout, flush=True)
    return 1 if lost else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Fatal as e:
        print(f"loadgen: {SECRETS.line(e)}", file=sys.stderr)
        sys.exit(2)
