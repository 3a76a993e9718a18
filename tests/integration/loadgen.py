"""A small load generator for control-plane tests: writes through HAProxy's
write frontend, reads through its read frontend, follows the routing
endpoint (long poll) and, when told to shadow-read, compares source and
target and posts the counts. Every acknowledged write is recorded with its
value, so a test can check that none is missing afterwards."""
import random
import threading
import time

import psycopg2


class LoadGen:
    def __init__(self, haproxy, user, password, db, control, mid, direct_src, direct_dst,
                 rate=20, first_id=1_000_000, stable_ids=range(1, 1000)):
        self.h, self.user, self.pw, self.db = haproxy, user, password, db
        self.control, self.mid = control, mid
        self.direct_src, self.direct_dst = direct_src, direct_dst  # (host, port)
        self.rate, self.next_id, self.stable = rate, first_id, list(stable_ids)
        self.acked = {}  # id -> total acknowledged
        self.errors = []
        self.reads = {"old": 0, "new": 0}
        self.shadow = {"compared": 0, "mismatched": 0}
        self.routing = {"version": 0, "reads": "source", "writes": "source",
                        "read_percent_target": 0}
        self.stop_ev = threading.Event()
        self.threads = [threading.Thread(target=self._writer, daemon=True),
                        threading.Thread(target=self._router, daemon=True),
                        threading.Thread(target=self._reader, daemon=True)]

    def _conn(self, port, host="127.0.0.1"):
        c = psycopg2.connect(host=host, port=port, user=self.user, password=self.pw,
                             dbname=self.db, connect_timeout=5)
        c.autocommit = True
        return c

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(timeout=30)

    def _writer(self):
        while not self.stop_ev.is_set():
            i = self.next_id
            total = round(random.uniform(1, 1000), 2)
            try:
                c = self._conn(self.h.write_port)
                c.cursor().execute(
                    "INSERT INTO orders(id, customer, total, note) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (id) DO UPDATE SET total = excluded.total",
                    (i, i % 100, total, f"load {i}"))
                c.close()
                self.acked[i] = total  # acknowledged: the commit returned
                self.next_id += 1
            except psycopg2.Error as e:
                self.errors.append(str(e).strip())  # retried with the same id
            time.sleep(1.0 / self.rate)

    def _router(self):
        while not self.stop_ev.is_set():
            code, doc = self.control.call(
                "GET", f"/migrations/{self.mid}/routing?wait=2&version={self.routing['version']}",
                token=None, timeout=10)
            if code == 200:
                self.routing = doc
            else:
                time.sleep(0.5)

    def _reader(self):
        pending = {"compared": 0, "mismatched": 0}
        last_post = time.time()
        while not self.stop_ev.is_set():
            try:
                c = self._conn(self.h.read_port)
                cur = c.cursor()
                cur.execute("SELECT current_setting('port')")
                port = int(cur.fetchone()[0])
                self.reads["old" if port == self.direct_src[1] else "new"] += 1
                c.close()
                if self.routing.get("reads") == "shadow":
                    k = random.choice(self.stable)
                    vals = []
                    for host, port in (self.direct_src, self.direct_dst):
                        d = self._conn(port, host)
                        cur = d.cursor()
                        cur.execute("SELECT id, customer, total, note FROM orders WHERE id = %s",
                                    (k,))
                        vals.append(cur.fetchone())
                        d.close()
                    pending["compared"] += 1
                    pending["mismatched"] += vals[0] != vals[1]
            except psycopg2.Error as e:
                self.errors.append("read: " + str(e).strip())
            if pending["compared"] and time.time() - last_post > 0.5:
                code, _ = self.control.call("POST", f"/migrations/{self.mid}/shadow-results",
                                            dict(pending, examples=[]))
                if code == 200:
                    self.shadow["compared"] += pending["compared"]
                    self.shadow["mismatched"] += pending["mismatched"]
                    pending = {"compared": 0, "mismatched": 0}
                last_post = time.time()
            time.sleep(0.05)

    def missing_in(self, conn):
        """Acknowledged writes absent from conn's orders, or with another value."""
        cur = conn.cursor()
        cur.execute("SELECT id, total FROM orders WHERE id >= 1000000")
        have = {r[0]: float(r[1]) for r in cur.fetchall()}
        return [i for i, v in self.acked.items() if i not in have or abs(have[i] - v) > 0.001]
