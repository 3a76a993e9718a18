#!/usr/bin/env bash
# make demo-migration end to end (with the sanitizer build): the scripted
# migration must complete, through every phase, with the HAProxy weights
# and the audit log the README's walk-through shows.
set -u
cd "$(dirname "$0")/../.."
export ASAN_OPTIONS="exitcode=86" UBSAN_OPTIONS="halt_on_error=1:exitcode=87"
err=/tmp/sluice-demo-migration-err.$$
SLUICE="${SLUICE:-build/asan/sluice}" bash scripts/demo_migration.sh 2>"$err"
status=$?
n=0 fail=0
check() {
    n=$((n + 1))
    if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fail=$((fail + 1)); fi
}
check $([ $status -eq 0 ]; echo $?) "make demo-migration's script exits 0 (got $status)"
for line in "migration demo completed" \
            '"classification": "data-move"' '"strategy": "cdc"' \
            "now in phase backfill" "now in phase dual_write" "now in phase shadow_read" \
            "now in phase cutover" "now in phase cleanup" \
            "HAProxy now: reads/old weight 50, reads/new weight 50" \
            "cutover_step       cutover      10" "approve            cutover      cutover step 100" \
            "replication        cleanup      sluice_demo" "completed          cleanup"; do
    grep -qF -- "$line" "$err"
    check $? "output has: $line"
done
if [ $fail -ne 0 ]; then sed 's/^/#   /' "$err" | tail -80; fi
rm -f "$err"
echo "1..$n"
[ $fail -eq 0 ]
