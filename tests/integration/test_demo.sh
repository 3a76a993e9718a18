#!/usr/bin/env bash
# The demo end to end (with the sanitizer build): it must exit 0 and report
# exactly the seven divergences it injected, and nothing else.
set -u
cd "$(dirname "$0")/../.."
export ASAN_OPTIONS="exitcode=86" UBSAN_OPTIONS="halt_on_error=1:exitcode=87"
out=$(SLUICE="${SLUICE:-build/asan/sluice}" bash scripts/demo.sh 2>/tmp/sluice-demo-err.$$)
status=$?
n=0 fail=0
check() {
    n=$((n + 1))
    if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fail=$((fail + 1)); fi
}
check $([ $status -eq 0 ]; echo $?) "make demo's script exits 0 (got $status)"
for line in "changed            id=14  note: NULL -> ''" \
            "missing-in-target  id=500" \
            "changed            id=4242  amount:" \
            "missing-in-target  id=60001" \
            "changed            id=77777  status: 'pending' -> 'refunded'" \
            "changed            id=99999  created_at:" \
            "extra-in-target    id=120001"; do
    printf '%s\n' "$out" | grep -qF -- "$line"
    check $? "report has: $line"
done
rows=$(printf '%s\n' "$out" | grep -cE '^(changed|missing-in-target|extra-in-target|schema) ')
check $([ "$rows" -eq 7 ]; echo $?) "exactly 7 divergences reported (got $rows)"
printf '%s\n' "$out" | grep -q "source sqlite:demo-data/source.db table orders: 120000 rows"
check $? "summary counts 120000 source rows"
if [ $fail -ne 0 ]; then printf '%s\n' "$out" | sed 's/^/#   /'; sed 's/^/#   /' /tmp/sluice-demo-err.$$; fi
rm -f /tmp/sluice-demo-err.$$
echo "1..$n"
[ $fail -eq 0 ]
