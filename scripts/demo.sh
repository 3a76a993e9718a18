#!/usr/bin/env bash
# `make demo`: two SQLite copies of a 120,000-row orders table, a handful of
# divergences injected into the target, and sluice diff with 2 workers.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=demo-data
mkdir -p "$dir"
rm -f "$dir/source.db" "$dir/target.db"
echo "sluice demo: generating $dir/source.db (120,000 orders)" >&2
sqlite3 "$dir/source.db" <<'SQL'
CREATE TABLE orders (
    id          INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL,
    amount      NUMERIC(12,2) NOT NULL,
    currency    TEXT NOT NULL,
    status      TEXT NOT NULL,
    note        TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ
);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 120000)
INSERT INTO orders
SELECT i,
       (i * 7919) % 5000 + 1,
       round(((i * 104729) % 100000) / 100.0, 2),
       CASE i % 3 WHEN 0 THEN 'EUR' WHEN 1 THEN 'USD' ELSE 'GBP' END,
       CASE i % 5 WHEN 0 THEN 'paid' WHEN 1 THEN 'shipped' WHEN 2 THEN 'pending'
                  WHEN 3 THEN 'delivered' ELSE 'cancelled' END,
       CASE WHEN i % 7 = 0 THEN NULL ELSE 'order ' || i || ': ' || substr(hex(randomblob(16)), 1, 24) END,
       datetime(1700000000 + i * 97, 'unixepoch'),
       CASE WHEN i % 3 = 0 THEN datetime(1700000000 + i * 97 + 3600, 'unixepoch') END
FROM n;
SQL
cp "$dir/source.db" "$dir/target.db"
echo "sluice demo: injecting divergences into $dir/target.db" >&2
sqlite3 "$dir/target.db" <<'SQL'
UPDATE orders SET amount = round(amount + 1, 2) WHERE id = 4242;         -- changed amount
UPDATE orders SET status = 'refunded', note = NULL WHERE id = 77777;   -- two columns
UPDATE orders SET note = '' WHERE id = 14;                             -- NULL became ''
UPDATE orders SET created_at = datetime(created_at, '+1 second') WHERE id = 99999;
DELETE FROM orders WHERE id IN (500, 60001);                           -- missing in target
INSERT INTO orders VALUES (120001, 42, 19.99, 'EUR', 'pending', 'late insert',
                           '2024-06-01 10:00:00', NULL);                -- extra in target
SQL
echo "sluice demo: sluice diff sqlite:$dir/source.db sqlite:$dir/target.db --table orders --workers 2" >&2
set +e
"${SLUICE:-build/sluice}" diff "sqlite:$dir/source.db" "sqlite:$dir/target.db" --table orders --workers 2
status=$?
set -e
# Finding divergence is the demo's purpose: exit 1 ("different") is success.
if [ "$status" -ne 0 ] && [ "$status" -ne 1 ]; then
    echo "sluice demo: sluice diff failed (exit $status)" >&2
    exit "$status"
fi
echo "sluice demo: done (sluice diff exit status $status: 0 equal, 1 different)" >&2
