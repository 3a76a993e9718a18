#!/usr/bin/env bash
# `make demo-migration`: a short scripted migration. Two local PostgreSQL
# servers (old and new, logical replication on), HAProxy in front of them,
# a coordinator with two workers, and `sluice control`; the migration is
# driven over the HTTP API with curl, every call printed before it runs.
# Everything lives in a temporary directory and is stopped at the end
# (DEMO_KEEP=1 leaves it all running and prints how to stop it).
set -euo pipefail
cd "$(dirname "$0")/.."
SLUICE=${SLUICE:-$PWD/build/sluice}
BIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
DIR=$(mktemp -d /tmp/sluice-demo-migration.XXXXXX)
chmod 755 "$DIR"
RUNAS=()
[ "$(id -u)" -eq 0 ] && RUNAS=(runuser -u nobody --)
PIDS=()
say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cleanup() {
    if [ "${DEMO_KEEP:-}" = 1 ]; then
        echo "left running in $DIR (pids ${PIDS[*]}); stop with: kill ${PIDS[*]}; ${RUNAS[*]} $BIN/pg_ctl -D $DIR/old stop; ${RUNAS[*]} $BIN/pg_ctl -D $DIR/new stop" >&2
        return
    fi
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for s in old new; do
        [ -d "$DIR/$s" ] && "${RUNAS[@]}" "$BIN/pg_ctl" -D "$DIR/$s" -m fast -w stop >/dev/null 2>&1 || true
    done
    rm -rf "$DIR"
}
trap cleanup EXIT

PW=demo-password-$$
echo "$PW" > "$DIR/pw"
[ ${#RUNAS[@]} -gt 0 ] && chown nobody "$DIR/pw"
declare -A PORT
for s in old new; do
    PORT[$s]=$(port)
    say "PostgreSQL '$s' on 127.0.0.1:${PORT[$s]} (wal_level=logical)"
    mkdir -p "$DIR/$s.run" && [ ${#RUNAS[@]} -gt 0 ] && chown nobody "$DIR/$s.run"
    [ ${#RUNAS[@]} -gt 0 ] && chown nobody "$DIR"
    "${RUNAS[@]}" "$BIN/initdb" -D "$DIR/$s" -U sluice --pwfile "$DIR/pw" --auth-host=scram-sha-256 \
        --auth-local=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    "${RUNAS[@]}" "$BIN/pg_ctl" -D "$DIR/$s" -l "$DIR/$s.log" -w -o \
        "-p ${PORT[$s]} -k $DIR/$s.run -c listen_addresses=127.0.0.1 -c wal_level=logical" start >/dev/null
    PGPASSWORD=$PW psql -qX -h 127.0.0.1 -p "${PORT[$s]}" -U sluice -d postgres -c "CREATE DATABASE shop" >/dev/null
    PGPASSWORD=$PW psql -qX -h 127.0.0.1 -p "${PORT[$s]}" -U sluice -d shop >/dev/null <<'SQL'
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int NOT NULL,
                     amount numeric(12,2) NOT NULL, status text NOT NULL);
SQL
done
say "20,000 orders on old; new has the tables, empty"
PGPASSWORD=$PW psql -qX -h 127.0.0.1 -p "${PORT[old]}" -U sluice -d shop >/dev/null <<'SQL'
INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 500) g;
INSERT INTO orders SELECT g, g % 500 + 1, (g * 7919 % 100000) / 100.0,
       (ARRAY['paid','shipped','pending'])[g % 3 + 1] FROM generate_series(1, 20000) g;
SQL

cat > "$DIR/dbs.conf" <<EOF
old=postgresql://sluice:$PW@127.0.0.1:${PORT[old]}/shop
new=postgresql://sluice:$PW@127.0.0.1:${PORT[new]}/shop
EOF
chmod 600 "$DIR/dbs.conf"
OP=operator-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
AP=approver-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf 'operator %s\napprover %s\n' "$OP" "$AP" > "$DIR/tokens"
chmod 600 "$DIR/tokens"

RP=$(port); WP=$(port)
say "HAProxy: reads on 127.0.0.1:$RP, writes on 127.0.0.1:$WP, runtime API at $DIR/haproxy.sock"
cat > "$DIR/haproxy.cfg" <<EOF
global
    stats socket $DIR/haproxy.sock mode 600 level admin
defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
frontend reads
    bind 127.0.0.1:$RP
    default_backend reads
backend reads
    balance roundrobin
    server old 127.0.0.1:${PORT[old]} weight 100
    server new 127.0.0.1:${PORT[new]} weight 0
frontend writes
    bind 127.0.0.1:$WP
    default_backend writes
backend writes
    server old 127.0.0.1:${PORT[old]} weight 1
    server new 127.0.0.1:${PORT[new]} weight 0
EOF
haproxy -f "$DIR/haproxy.cfg" -db >"$DIR/haproxy.log" 2>&1 &
PIDS+=($!)

C1=$(port); C2=$(port); C3=$(port); HTTP=$(port)
say "a coordinator, two workers and sluice control on http://127.0.0.1:$HTTP/"
"$SLUICE" coordinator --state "sqlite:$DIR/state.db" --workers-endpoint "tcp://127.0.0.1:$C1" \
    --clients-endpoint "tcp://127.0.0.1:$C2" --events-endpoint "tcp://127.0.0.1:$C3" \
    2>"$DIR/coordinator.log" &
PIDS+=($!)
for _ in 1 2; do
    "$SLUICE" worker --coordinator "tcp://127.0.0.1:$C1" --db-file "$DIR/dbs.conf" --slots 2 \
        2>>"$DIR/workers.log" &
    PIDS+=($!)
done
"$SLUICE" control --listen "127.0.0.1:$HTTP" --state "sqlite:$DIR/control.db" \
    --db-file "$DIR/dbs.conf" --tokens "$DIR/tokens" --haproxy "$DIR/haproxy.sock" \
    --coordinator "tcp://127.0.0.1:$C2" --events "tcp://127.0.0.1:$C3" --tick 250 \
    2>"$DIR/control.log" &
PIDS+=($!)
API=http://127.0.0.1:$HTTP
for _ in $(seq 100); do curl -sf "$API/healthz" >/dev/null && break; sleep 0.1; done

run() { # prints the curl command (tokens shortened), runs it, pretty-prints the answer
    printf '$ %s\n' "$(echo "$*" | sed "s/$OP/\$OPERATOR/; s/$AP/\$APPROVER/")" >&2
    "$@" | python3 -c 'import json,sys; d=json.load(sys.stdin); keep=("migration_id","phase","state","waiting_for","classification","strategy","traffic","gates","divergent_rows","replication_lag_seconds","last_validation","error","abort_reason"); print(json.dumps({k: d[k] for k in keep if k in d}, indent=1))' >&2
}
field() { curl -s "$API/migrations/demo/status" | python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
advance() { # retries while the phase's gates are not green yet
    for _ in $(seq 240); do
        code=$(curl -s -o "$DIR/adv.json" -w '%{http_code}' -X POST -H "Authorization: Bearer $OP" "$API/migrations/demo/advance")
        [ "$code" = 200 ] && break
        sleep 0.5
    done
    printf '$ curl -X POST -H "Authorization: Bearer $OPERATOR" %s/migrations/demo/advance   -> %s\n' "$API" "$code" >&2
    [ "$code" = 200 ] || { cat "$DIR/adv.json" >&2; echo >&2; tail -5 "$DIR/control.log" >&2; exit 1; }
    echo "   now in phase $(field '["phase"]') ($(field '["state"]'))" >&2
}

say "1. POST the manifest: old → new, two tables, cutover in two steps, the last approved"
cat > "$DIR/manifest.json" <<'EOF'
{"migration_id": "demo",
 "scope": {"source": "old", "target": "new", "tables": ["orders", "customers"]},
 "cutover": {"steps": [10, 50, 100], "soak_seconds": 3},
 "metrics": {"audit_every": "1m", "sample_every": "2s"},
 "abort_thresholds": {"divergent_rows": 0, "replication_lag_seconds": 30},
 "router": {"type": "haproxy", "read_backend": "reads", "write_backend": "writes",
            "source_server": "old", "target_server": "new"}}
EOF
run curl -s -X POST -H "Authorization: Bearer $OP" --data @"$DIR/manifest.json" "$API/migrations"

say "2. prepare → backfill: the control plane creates the publication and subscription"
run curl -s "$API/migrations/demo/status"
advance
say "3. backfill → dual_write once the copy is done, aggregates match and a full audit is exact"
advance
run curl -s "$API/migrations/demo/status"
say "4. dual_write → shadow_read: an application would now read both sides and post its counts"
advance
curl -s -X POST -H "Authorization: Bearer $OP" --data '{"compared": 500, "mismatched": 0}' \
    "$API/migrations/demo/shadow-results" >/dev/null
echo '$ curl -X POST -H "Authorization: Bearer $OPERATOR" --data '"'"'{"compared": 500, "mismatched": 0}'"'"' '"$API"'/migrations/demo/shadow-results' >&2
run curl -s "$API/migrations/demo/routing"
say "5. shadow_read → cutover: reads move 10% → 50% on their own, every step soaked 3 s"
advance
for _ in $(seq 120); do [ "$(field '["state"]')" = waiting_approval ] && break; sleep 0.5; done
echo "   HAProxy now: reads/old weight $(echo "get weight reads/old" | python3 -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect('$DIR/haproxy.sock'); s.sendall(sys.stdin.read().encode()); print(s.recv(100).decode().split()[0])"), reads/new weight $(echo "get weight reads/new" | python3 -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect('$DIR/haproxy.sock'); s.sendall(sys.stdin.read().encode()); print(s.recv(100).decode().split()[0])")" >&2
say "6. the last step waits for an approver"
run curl -s -X POST -H "Authorization: Bearer $AP" "$API/migrations/demo/approve"
for _ in $(seq 60); do [ "$(field '["traffic"]["read_percent_target"]')" = 100 ] && break; sleep 0.5; done
say "7. cutover → cleanup: final audit, replication removed, artifacts sealed"
advance
for _ in $(seq 240); do [ "$(field '["state"]')" = completed ] && break; sleep 0.5; done
run curl -s "$API/migrations/demo/status"
say "the audit log"
curl -s "$API/migrations/demo/events" > "$DIR/events.json"
python3 - "$DIR/events.json" >&2 <<'PY'
import json, sys
for e in json.load(open(sys.argv[1]))["events"]:
    d = e["detail"]
    what = (d.get("to") or d.get("result") or d.get("reason") or d.get("read_percent_target")
            or d.get("created") or d.get("dropped") or d.get("approved") or "")
    print("  %s  %-9s %-18s %-12s %s" % (e["at"], e["actor"], e["kind"], e["phase"], what))
PY
state=$(field '["state"]')
echo >&2
echo "sluice demo-migration: migration demo $state (dashboard: $API/ while DEMO_KEEP=1 keeps it running)" >&2
[ "$state" = completed ]
