#!/usr/bin/env bash
# The benchmark script end to end on 50,000 rows, once, so it cannot rot:
# two PostgreSQL servers, the floor, the push-down, sluice on identical and
# diverged tables (answer checked), the throttle; a MariaDB server, its read
# floor and sluice MariaDB against MariaDB. Figures are not judged here.
set -u
cd "$(dirname "$0")/../.."
out=$(BENCH_ROWS=50000 BENCH_REPS=1 BENCH_OUT=- /usr/bin/python3 bench/bench.py 2>/tmp/bench-smoke.$$)
status=$?
n=0 fail=0
check() {
    n=$((n + 1))
    if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fail=$((fail + 1)); fi
}
check $([ $status -eq 0 ]; echo $?) "bench.py ran to the end on 50k rows (exit $status)"
printf '%s\n' "$out" | grep -q '| 50,000 | .* | exact |'
check $? "it printed a row of figures for 50,000 rows with the exact answer"
printf '%s\n' "$out" | grep -q '| 50,000 (MariaDB) | .* | exact |'
check $? "and a MariaDB row (sluice MariaDB against MariaDB, its read floor) with the exact answer"
if [ $fail -ne 0 ]; then printf '%s\n' "$out" | sed 's/^/#   /'; tail -20 /tmp/bench-smoke.$$ | sed 's/^/#   /'; fi
rm -f /tmp/bench-smoke.$$
echo "1..$n"
[ $fail -eq 0 ]
