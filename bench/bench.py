#!/usr/bin/python3
"""make bench: how long sluice takes against simply reading both tables.

Starts two PostgreSQL servers of its own (source and target), loads the same
deterministic orders table (bigint key, int, numeric(12,2), text status,
~60-byte text note, two timestamptz) into both, plus a copy with 100 known
divergences on the target, and measures, alternating, BENCH_REPS times each
(medians reported):

  floor     both tables streamed at once: COPY (SELECT ... ORDER BY id) TO
            STDOUT (FORMAT binary) into /dev/null, one connection per side
  pushdown  one checksum aggregate query per side, run at once (data-diff style)
  sluice    sluice diff --workers 2 on the identical tables and on the
            diverged ones (its answer checked against the injected set),
            with its peak RSS
  throttle  sluice diff --max-rows-per-second R: the rate it held
  dense     sluice diff where every row differs (amount + 1 in all rows) and
            where 1% do (id % 100 = 7): the drill-down hands dense ranges to
            the stream (coordinator/README.md, "Dense divergence"); the
            answer checked from the JSON summary's counts, peak RSS

and then the MariaDB row: one MariaDB server of its own, the same table in
two databases (src, tgt; loaded by INSERT ... SELECT from the sequence
engine's seq_1_to_N), plus the diverged copy in tgt:

  floor     both tables streamed at once by the mariadb client, --quick
            (mysql_use_result, the SELECT ... ORDER BY id row by row) into
            /dev/null
  sluice    sluice diff --workers 2, MariaDB against MariaDB, identical and
            diverged (answer checked)

BENCH_ROWS (default 1000000; several sizes: "1000000 10000000"),
BENCH_REPS (default 3), BENCH_OUT (default bench/RESULTS.md; "-" for none),
BENCH_MYSQL (default 1; 0 leaves the MariaDB row out), BENCH_DENSE (default
1; 0 leaves the dense rows out), BENCH_ONLY=dense (the floor and the dense
rows only: no identical, diverged, throttle, cluster or MariaDB run, and no
RESULTS.md written).
"""
import json
import os
import platform
import statistics
import subprocess
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "integration"))
from harness import MariaDbServer, PgServer  # noqa: E402

SLUICE = os.environ.get("SLUICE") or os.path.join(here, "..", "build", "sluice")
SIZES = [int(x) for x in os.environ.get("BENCH_ROWS", "1000000").split()]
REPS = int(os.environ.get("BENCH_REPS", "3"))
OUT = os.environ.get("BENCH_OUT", os.path.join(here, "RESULTS.md"))
MYSQL = os.environ.get("BENCH_MYSQL", "1") != "0"
DENSE = os.environ.get("BENCH_DENSE", "1") != "0"
ONLY = os.environ.get("BENCH_ONLY", "")
if ONLY not in ("", "dense"):
    sys.exit(f"bench: BENCH_ONLY={ONLY}: only \"dense\" is known")
if ONLY == "dense":
    DENSE, MYSQL = True, False
COLS = "id, customer_id, amount, status, note, created_at, updated_at"


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def load(pg, rows):
    c = pg.connect()
    cur = c.cursor()
    cur.execute("DROP TABLE IF EXISTS orders, orders_div")
    cur.execute("""CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int NOT NULL,
        amount numeric(12,2) NOT NULL, status text NOT NULL, note text,
        created_at timestamptz NOT NULL, updated_at timestamptz)""")
    cur.execute(f"""INSERT INTO orders SELECT i, (i * 7919) % 100000,
        ((i * 104729) % 1000000) / 100.0,
        (ARRAY['pending','paid','shipped','delivered','cancelled'])[1 + i % 5],
        'note ' || md5(i::text) || ' ' || (i % 997),
        timestamptz '2023-01-01 00:00:00+00' + i * interval '1 second',
        CASE WHEN i % 3 = 0 THEN NULL ELSE timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second' END
        FROM generate_series(1::bigint, {rows}) i""")
    cur.execute("VACUUM (FREEZE, ANALYZE) orders")
    c.close()


def div_ids(rows):
    """100 scattered divergences: 40 changed, 30 missing, 30 extra."""
    step = rows // 101
    ids = [step * (k + 1) for k in range(70)]
    return ids[:40], ids[40:70], [rows + 1 + k for k in range(30)]


def injected_set(changed, missing, extra):
    return ({("changed", (str(i),)) for i in changed} | {("missing-in-target", (str(i),))
            for i in missing} | {("extra-in-target", (str(i),)) for i in extra})


def diverge(pg, rows):
    """100 scattered divergences on a copy: 40 changed, 30 missing, 30 extra."""
    c = pg.connect()
    cur = c.cursor()
    cur.execute("CREATE TABLE orders_div AS SELECT * FROM orders")
    cur.execute("ALTER TABLE orders_div ADD PRIMARY KEY (id)")
    changed, missing, extra = div_ids(rows)
    cur.execute("UPDATE orders_div SET amount = amount + 1 WHERE id = ANY(%s)", (changed,))
    cur.execute("DELETE FROM orders_div WHERE id = ANY(%s)", (missing,))
    cur.execute("INSERT INTO orders_div SELECT id + %s, customer_id, amount, status, note, "
                "created_at, updated_at FROM orders WHERE id <= 30", (rows,))
    cur.execute("VACUUM (FREEZE, ANALYZE) orders_div")
    c.close()
    return injected_set(changed, missing, extra)


def diverge_dense(pg):
    """orders_all: every row's amount + 1; orders_1p: the same in the rows
    whose id % 100 = 7 (1%). Both made by CREATE TABLE AS (no dead rows)."""
    c = pg.connect()
    cur = c.cursor()
    for name, cond in (("orders_all", "true"), ("orders_1p", "id % 100 = 7")):
        cur.execute(f"""CREATE TABLE {name} AS SELECT id, customer_id,
            CASE WHEN {cond} THEN amount + 1 ELSE amount END AS amount, status, note,
            created_at, updated_at FROM orders""")
        cur.execute(f"ALTER TABLE {name} ADD PRIMARY KEY (id)")
        cur.execute(f"VACUUM (FREEZE, ANALYZE) {name}")
    c.close()


def sluice_dense(src, tgt, table, expect_changed):
    """sluice diff against a dense target, its report to a file (a million
    divergences are 200 MB of JSON): wall time, peak RSS (KiB), its JSON
    summary, and whether the counts are the expected ones."""
    import tempfile
    with tempfile.TemporaryFile() as out:
        cmd = ["/usr/bin/time", "-f", "%M", SLUICE, "diff", src.dsn(), tgt.dsn(), "--table",
               "orders", "--target-table", table, "--workers", "2", "--no-progress", "--format",
               "json"]
        t0 = time.time()
        r = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, text=True)
        wall = time.time() - t0
        out.seek(max(0, out.seek(0, 2) - 4096))
        tail = out.read().decode(errors="replace")
    rss_kb = int(r.stderr.strip().splitlines()[-1]) if r.stderr.strip() else 0
    at = tail.rfind('"summary": ')
    summ = json.JSONDecoder().raw_decode(tail[at + len('"summary": '):])[0] if at >= 0 else {}
    ok = (r.returncode == 1 and summ.get("changed") == expect_changed and
          summ.get("missing_in_target") == 0 and summ.get("extra_in_target") == 0)
    if not ok:
        log(f"dense {table}: exit {r.returncode}, summary {summ}, {r.stderr[-300:]}")
    return wall, rss_kb, summ, ok


def timed(cmds):
    """Runs shell commands at once; returns the wall time until all ended."""
    t0 = time.time()
    ps = [subprocess.Popen(c, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
          for c in cmds]
    for p in ps:
        _, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(err.decode()[-500:])
    return time.time() - t0


def psql(pg, sql):
    return f"psql -X -q '{pg.dsn()}' -c \"{sql}\""


def sluice(src, tgt, table, *extra):
    return sluice_dsn(src.dsn(), tgt.dsn(), table, *extra)


def sluice_dsn(src, tgt, table, *extra):
    cmd = ["/usr/bin/time", "-f", "%M", SLUICE, "diff", src, tgt, "--table", "orders",
           "--target-table", table, "--workers", "2", "--no-progress", "--format", "json"] + \
        list(extra)
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    rss_kb = int(r.stderr.strip().splitlines()[-1]) if r.stderr.strip() else 0
    doc = json.loads(r.stdout) if r.stdout.strip().startswith("{") else None
    return r.returncode, doc, wall, rss_kb, r.stderr


def peak_rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cluster_run(src, tgt):
    """The same diff through a coordinator and two worker processes, for
    their peak RSS apiece (VmHWM, read before they stop)."""
    import cluster
    cluster.SLUICE = SLUICE  # the binary under test, not the sanitizer build
    cl = cluster.Cluster({"source": src.dsn(), "target": tgt.dsn()})
    cl.env.pop("ASAN_OPTIONS", None)
    cl.start_coordinator()
    for _ in range(2):
        cl.start_worker(slots=1)
    try:
        if not cl.wait_workers(2):
            raise RuntimeError("cluster workers did not register")
        t0 = time.time()
        code, out, err = cl.client("submit", "source", "target", "--table", "orders",
                                   "--target-table", "orders_div", "--wait", "--no-progress")
        wall = time.time() - t0
        if code != 1:
            raise RuntimeError(f"cluster run: exit {code}: {err[-300:]}")
        return wall, peak_rss_mb(cl.coordinator.pid), max(peak_rss_mb(w.pid) for w in cl.workers)
    finally:
        cl.stop()


def dense_rep(src, tgt, rep, res, n1p, rows, dense_rss, dense_summ):
    """BENCH_ONLY=dense: one rep's dense runs, as bench() runs them."""
    oks = []
    for key, table, want in (("dense_all", "orders_all", rows), ("dense_1p", "orders_1p", n1p)):
        wall, kb, summ, ok = sluice_dense(src, tgt, table, want)
        res[key].append(wall)
        dense_rss.append(kb)
        oks.append(ok)
        dense_summ[key] = summ
        log(f"rep {rep + 1}/{REPS}: {table}: {wall:.2f} s ({wall / res['floor'][-1]:.2f}x the "
            f"floor {res['floor'][-1]:.2f} s; the job {summ.get('elapsed_seconds', 0):.2f} s), "
            f"{kb // 1024} MiB, {summ.get('streamed_ranges')} of {summ.get('ranges')} ranges "
            f"streamed, {summ.get('trees_skipped')} trees skipped, "
            f"{summ.get('rows_from_memory')} span rows from memory")
    dense_summ["_ok"] = oks


def bench(rows):
    log(f"{rows} rows: starting two PostgreSQL servers and loading")
    src, tgt = PgServer(), PgServer()
    t0 = time.time()
    load(src, rows)
    load(tgt, rows)
    injected = diverge(tgt, rows) if ONLY != "dense" else set()
    if DENSE:
        diverge_dense(tgt)
    log(f"loaded in {time.time() - t0:.0f} s")
    res = {k: [] for k in ("floor", "floor_text", "pushdown", "identical", "diverged",
                           "dense_all", "dense_1p")}
    dense_rss, dense_wrong, dense_summ = [], 0, {}
    n1p = sum(1 for i in range(7, rows + 1, 100))
    rss = []
    wrong = 0
    floor_sql = f"COPY (SELECT {COLS} FROM orders ORDER BY id) TO STDOUT"
    push_sql = ("SELECT sum(('x' || substr(md5(t::text), 1, 15))::bit(60)::bigint), count(*) "
                "FROM orders t")
    for rep in range(REPS):
        res["floor"].append(timed([psql(p, floor_sql + " (FORMAT binary)") for p in (src, tgt)]))
        if ONLY == "dense":
            dense_rep(src, tgt, rep, res, n1p, rows, dense_rss, dense_summ)
            dense_wrong += sum(not ok for ok in dense_summ.pop("_ok"))
            continue
        res["floor_text"].append(timed([psql(p, floor_sql) for p in (src, tgt)]))
        res["pushdown"].append(timed([psql(p, push_sql) for p in (src, tgt)]))
        code, doc, wall, kb, err = sluice(src, tgt, "orders")
        if code != 0:
            raise RuntimeError(f"sluice on identical tables: exit {code}: {err[-500:]}")
        res["identical"].append(wall)
        rss.append(kb)
        code, doc, wall, kb, err = sluice(src, tgt, "orders_div")
        got = {(d["kind"], tuple(d["key"].values())) for d in (doc or {}).get("divergences", [])}
        if code != 1 or got != injected:
            wrong += 1
            log(f"diverged run {rep}: exit {code}, {len(got ^ injected)} wrong")
        res["diverged"].append(wall)
        rss.append(kb)
        log(f"rep {rep + 1}/{REPS}: floor {res['floor'][-1]:.2f} s, pushdown "
            f"{res['pushdown'][-1]:.2f} s, sluice {res['identical'][-1]:.2f} / "
            f"{res['diverged'][-1]:.2f} s")
        for key, table, want in (("dense_all", "orders_all", rows), ("dense_1p", "orders_1p", n1p)):
            if not DENSE:
                continue
            wall, kb, summ, ok = sluice_dense(src, tgt, table, want)
            res[key].append(wall)
            dense_rss.append(kb)
            dense_wrong += not ok
            dense_summ[key] = summ
            log(f"rep {rep + 1}/{REPS}: {table}: {wall:.2f} s ({wall / res['floor'][-1]:.2f}x the "
                f"floor; the job {summ.get('elapsed_seconds', 0):.2f} s), {kb // 1024} MiB, "
                f"{summ.get('streamed_ranges')} of {summ.get('ranges')} ranges streamed")
    med = {k: statistics.median(v) if v else 0 for k, v in res.items()}
    if ONLY == "dense":
        ratio = {k: statistics.median(s / f for s, f in zip(res[k], res["floor"])) if res[k]
                 else 0 for k in ("dense_all", "dense_1p")}
        src.stop()
        tgt.stop()
        log(f"{rows} rows: sluice / floor, median of per-rep ratios: every row differing "
            f"{ratio['dense_all']:.2f}x, 1% differing {ratio['dense_1p']:.2f}x")
        return {"rows": rows, "med": med, "ratio": ratio, "wrong": 0,
                "dense": {"rss_mb": max(dense_rss, default=0) / 1024, "wrong": dense_wrong,
                          "summary": dense_summ}}
    # each rep's own ratio, then their median: the floor and sluice of one rep
    # ran back to back, so a machine that drifts between reps skews them alike
    ratio = {k: statistics.median(s / f for s, f in zip(res[k], res["floor"])) if res[k] else 0
             for k in ("identical", "diverged", "dense_all", "dense_1p")}
    # throttle: a quarter of the unthrottled rate
    rate = int(2 * rows / med["identical"] / 4)
    code, doc, wall, kb, err = sluice(src, tgt, "orders", "--max-rows-per-second", str(rate))
    held = 2 * rows / doc["summary"]["elapsed_seconds"] if doc else 0
    cl_wall, co_mb, wk_mb = cluster_run(src, tgt)
    log(f"cluster: {cl_wall:.2f} s, coordinator {co_mb:.0f} MiB, worker {wk_mb:.0f} MiB")
    c = src.connect()
    cur = c.cursor()
    cur.execute("SELECT avg(pg_column_size(t.*)) FROM orders t")
    row_bytes = float(cur.fetchone()[0])
    c.close()
    src.stop()
    tgt.stop()
    log(f"{rows} rows: sluice / floor, median of per-rep ratios: identical "
        f"{ratio['identical']:.2f}x, diverged {ratio['diverged']:.2f}x"
        + (f", every row differing {ratio['dense_all']:.2f}x, 1% differing "
           f"{ratio['dense_1p']:.2f}x" if DENSE else ""))
    return {"rows": rows, "med": med, "ratio": ratio, "rss_mb": max(rss) / 1024, "wrong": wrong,
            "throttle": (rate, held), "row_bytes": row_bytes,
            "cluster": (cl_wall, co_mb, wk_mb),
            "dense": {"rss_mb": max(dense_rss, default=0) / 1024, "wrong": dense_wrong,
                      "summary": dense_summ}}


def my_load(my, rows):
    """The orders table in src and tgt, and tgt.orders_div with the 100
    divergences, as load() and diverge() make them on PostgreSQL."""
    my.createdb("src")
    my.createdb("tgt")
    c = my.connect("src")
    cur = c.cursor()
    cur.execute("SET time_zone = '+00:00'")
    cur.execute("""CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int NOT NULL,
        amount decimal(12,2) NOT NULL, status varchar(16) NOT NULL, note text,
        created_at timestamp(6) NOT NULL, updated_at timestamp(6) NULL)""")
    cur.execute(f"""INSERT INTO orders SELECT seq, (seq * 7919) % 100000,
        ((seq * 104729) % 1000000) / 100,
        ELT(1 + seq % 5, 'pending', 'paid', 'shipped', 'delivered', 'cancelled'),
        CONCAT('note ', md5(seq), ' ', seq % 997),
        TIMESTAMP '2023-01-01 00:00:00' + INTERVAL seq SECOND,
        IF(seq % 3 = 0, NULL, TIMESTAMP '2024-01-01 00:00:00' + INTERVAL seq SECOND)
        FROM seq_1_to_{rows}""")
    for t in ("orders", "orders_div"):
        cur.execute(f"CREATE TABLE tgt.{t} LIKE src.orders")
        cur.execute(f"INSERT INTO tgt.{t} SELECT * FROM src.orders")
    changed, missing, extra = div_ids(rows)
    cur.execute("UPDATE tgt.orders_div SET amount = amount + 1 WHERE id IN %s", (changed,))
    cur.execute("DELETE FROM tgt.orders_div WHERE id IN %s", (missing,))
    cur.execute("INSERT INTO tgt.orders_div SELECT id + %s, customer_id, amount, status, note, "
                "created_at, updated_at FROM src.orders WHERE id <= 30", (rows,))
    for t in ("src.orders", "tgt.orders", "tgt.orders_div"):
        cur.execute(f"ANALYZE TABLE {t}")
    c.close()
    return injected_set(changed, missing, extra)


def bench_mysql(rows):
    """sluice MariaDB against MariaDB vs the MariaDB read floor."""
    log(f"{rows} rows: starting a MariaDB server and loading")
    pool = min(4 << 30, max(256 << 20, rows * 400))  # both tables cached, as PostgreSQL's are
    my = MariaDbServer(args=[f"--innodb-buffer-pool-size={pool}",
                             "--innodb-log-file-size=256M"])
    t0 = time.time()
    injected = my_load(my, rows)
    log(f"loaded in {time.time() - t0:.0f} s")
    floor_cmd = (f"MYSQL_PWD='{my.PASSWORD}' mariadb --no-defaults -h 127.0.0.1 -P {my.port} "
                 f"-u {my.USER} --quick --batch --skip-column-names "
                 f"-e 'SELECT {COLS} FROM orders ORDER BY id' ")
    res = {k: [] for k in ("floor", "identical", "diverged")}
    wrong = 0
    src, tgt = my.dsn("src"), my.dsn("tgt")
    for rep in range(REPS):
        res["floor"].append(timed([floor_cmd + db for db in ("src", "tgt")]))
        code, doc, wall, kb, err = sluice_dsn(src, tgt, "orders")
        if code != 0:
            raise RuntimeError(f"sluice on identical MariaDB tables: exit {code}: {err[-500:]}")
        res["identical"].append(wall)
        code, doc, wall, kb, err = sluice_dsn(src, tgt, "orders_div")
        got = {(d["kind"], tuple(d["key"].values())) for d in (doc or {}).get("divergences", [])}
        if code != 1 or got != injected:
            wrong += 1
            log(f"MariaDB diverged run {rep}: exit {code}, {len(got ^ injected)} wrong "
                f"{err[-300:]}")
        res["diverged"].append(wall)
        log(f"MariaDB rep {rep + 1}/{REPS}: floor {res['floor'][-1]:.2f} s, sluice "
            f"{res['identical'][-1]:.2f} / {res['diverged'][-1]:.2f} s")
    my.stop()
    med = {k: statistics.median(v) for k, v in res.items()}
    ratio = {k: statistics.median(s / f for s, f in zip(res[k], res["floor"]))
             for k in ("identical", "diverged")}
    log(f"{rows} rows, MariaDB: sluice / floor: identical {ratio['identical']:.2f}x, "
        f"diverged {ratio['diverged']:.2f}x")
    return {"rows": rows, "med": med, "ratio": ratio, "wrong": wrong}


def scaling(results):
    """How time and memory grow, by arithmetic from the measured sizes."""
    a, b = results[0], results[-1]
    k = b["rows"] / a["rows"]
    t = b["med"]["identical"] / a["med"]["identical"]
    per_row = b["med"]["identical"] / b["rows"]
    out = [f"\n## Scaling\n",
           f"- From {a['rows']:,} to {b['rows']:,} rows ({k:.0f}x), sluice's wall time grew "
           f"{t:.1f}x and its peak RSS from {a['rss_mb']:.0f} to {b['rss_mb']:.0f} MiB: time "
           f"grows with the rows (a little under linearly: start-up and the drill-down are "
           f"fixed costs), memory is flat (trees are per range; ranges hold at most "
           f"200,000 rows).",
           f"- By arithmetic, 1,000,000,000 rows per table at the measured "
           f"{per_row * 1e6:.2f} s per million rows on this 2-core machine: "
           f"{per_row * 1e9 / 3600:.1f} h with one worker pair; with W pairs of workers on "
           f"their own cores next to databases that keep up, about "
           f"{per_row * 1e9 / 3600:.1f} h / W (W = 8: {per_row * 1e9 / 3600 / 8 * 60:.0f} min). "
           f"Memory stays per worker at the figure above.",
           f"- Transfer: the rows themselves are about {b['row_bytes']:.0f} bytes each "
           f"(pg_column_size), {2 * b['rows'] * b['row_bytes'] / 1e9:.1f} GB for both tables at "
           f"{b['rows']:,} rows. A worker next to each database ships only each range's root "
           f"(under 100 bytes) when the range is equal, and for a differing leaf about 32 "
           f"(key, 16-byte hash) pairs, about 1.3 KB, plus full rows only for the changed keys: "
           f"for 100 scattered divergences, on the order of 100 KB instead of gigabytes."]
    return "\n".join(out) + "\n"


def machine():
    cpu = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = int(open("/proc/meminfo").readline().split()[1]) // 1024 // 1024
    pgv = subprocess.run(["psql", "--version"], capture_output=True, text=True).stdout.strip()
    return f"{os.cpu_count()} cores ({cpu}), {mem} GiB, {platform.system()} " \
           f"{platform.release()}, {pgv}"


def main():
    results = [bench(n) for n in SIZES]
    if ONLY == "dense":
        print("| rows per table (dense) | floor (s) | sluice, every row differing (s) | / floor | "
              "sluice, 1% differing (s) | / floor | peak RSS (MiB) | answer |\n"
              "|---|---|---|---|---|---|---|---|")
        for r in results:
            m, d = r["med"], r["dense"]
            print(f"| {r['rows']:,} | {m['floor']:.2f} | {m['dense_all']:.2f} | "
                  f"{r['ratio']['dense_all']:.2f}x | {m['dense_1p']:.2f} | "
                  f"{r['ratio']['dense_1p']:.2f}x | {d['rss_mb']:.0f} | "
                  f"{'exact counts' if not d['wrong'] else str(d['wrong']) + ' runs wrong'} |")
        return 1 if any(r["dense"]["wrong"] for r in results) else 0
    my_results = [bench_mysql(n) for n in SIZES] if MYSQL else []
    lines = ["| rows per table | floor: binary COPY (s) | text COPY (s) | push-down md5 (s) | "
             "sluice identical (s) | sluice 100 diverged (s) | sluice / floor (median of "
             "per-rep ratios) | "
             "sluice / push-down | peak RSS (MiB) | answer | throttle asked → held (rows/s) | "
             "cluster, diverged: time (s), coordinator / worker peak RSS (MiB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        m = r["med"]
        rate, held = r["throttle"]
        lines.append(
            f"| {r['rows']:,} | {m['floor']:.2f} | {m['floor_text']:.2f} | {m['pushdown']:.2f} | "
            f"{m['identical']:.2f} | {m['diverged']:.2f} | {r['ratio']['identical']:.2f}x "
            f"(diverged {r['ratio']['diverged']:.2f}x) | "
            f"{m['identical'] / m['pushdown']:.2f}x | {r['rss_mb']:.0f} | "
            f"{'exact' if not r['wrong'] else str(r['wrong']) + ' runs wrong'} | "
            f"{rate:,} → {held:,.0f} ({(held - rate) / rate * 100:+.0f}%) | "
            f"{r['cluster'][0]:.2f} s, {r['cluster'][1]:.0f} / {r['cluster'][2]:.0f} |")
    if DENSE:
        lines += ["", "| rows per table (dense) | floor (s) | sluice, every row differing (s) | "
                  "/ floor | sluice, 1% differing (s) | / floor | ranges streamed (all / 1%) | "
                  "peak RSS (MiB) | answer |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results if DENSE else []:
        m, d = r["med"], r["dense"]
        sa, s1 = d["summary"].get("dense_all", {}), d["summary"].get("dense_1p", {})
        lines.append(
            f"| {r['rows']:,} | {m['floor']:.2f} | {m['dense_all']:.2f} | "
            f"{r['ratio']['dense_all']:.2f}x | {m['dense_1p']:.2f} | {r['ratio']['dense_1p']:.2f}x | "
            f"{sa.get('streamed_ranges')} of {sa.get('ranges')} / {s1.get('streamed_ranges')} of "
            f"{s1.get('ranges')} | {d['rss_mb']:.0f} | "
            f"{'exact counts' if not d['wrong'] else str(d['wrong']) + ' runs wrong'} |")
    if my_results:
        lines += ["", "| rows per table (MariaDB) | floor: mariadb --quick (s) | "
                  "sluice identical (s) | sluice 100 diverged (s) | sluice / floor (median of "
                  "per-rep ratios) | answer |", "|---|---|---|---|---|---|"]
    for r in my_results:
        m = r["med"]
        lines.append(
            f"| {r['rows']:,} (MariaDB) | {m['floor']:.2f} | {m['identical']:.2f} | "
            f"{m['diverged']:.2f} | {r['ratio']['identical']:.2f}x (diverged "
            f"{r['ratio']['diverged']:.2f}x) | "
            f"{'exact' if not r['wrong'] else str(r['wrong']) + ' runs wrong'} |")
    table = "\n".join(lines)
    print(table)
    if OUT != "-":
        cmd = f"BENCH_ROWS=\"{' '.join(map(str, SIZES))}\" BENCH_REPS={REPS} make bench"
        with open(OUT, "w") as f:
            f.write(f"# sluice benchmark results\n\nMeasured {time.strftime('%Y-%m-%d')} with "
                    f"`{cmd}` on {machine()}.\nMedians of {REPS} alternating runs; both tables "
                    f"read at once (2 connections for the floor and push-down, `--workers 2` for "
                    f"sluice). \"peak RSS\" is the whole `sluice diff` process (coordinator "
                    f"and both workers in one process); the last column runs the diverged "
                    f"diff through `sluice coordinator` and two `sluice worker` processes "
                    f"(one slot each) and reads each one's VmHWM.\n\n{table}\n")
            if len(results) > 1:
                f.write(scaling(results))
        log(f"wrote {OUT}")
    return 1 if any(r["wrong"] or r.get("dense", {}).get("wrong") for r in results + my_results) \
        else 0


if __name__ == "__main__":
    sys.exit(main())
