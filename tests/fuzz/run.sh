#!/usr/bin/env bash
# Runs each libFuzzer target for SECONDS, as TAP: run.sh SECONDS build/fuzz/fuzz_x...
# The corpus grows in build/fuzz/corpus/<name> (seeded from tests/fuzz/corpus/<name>);
# a crash leaves its input in build/fuzz/crash-<name>-* and fails the target.
set -u
secs=$1
shift
echo "1..$#"
n=0
fail=0
for bin in "$@"; do
    n=$((n + 1))
    name=${bin##*/fuzz_}
    work=build/fuzz/corpus/$name
    mkdir -p "$work"
    log=build/fuzz/$name.log
    if "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="build/fuzz/crash-$name-" "$work" "tests/fuzz/corpus/$name" >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
        echo "ok $n - fuzz_$name: ${secs} s, ${runs:-?} inputs, $cov, no crash"
    else
        fail=1
        echo "not ok $n - fuzz_$name: crashed or leaked; see $log and build/fuzz/crash-$name-*"
        grep -E 'ERROR|SUMMARY|runtime error|Test unit written' "$log" | head -5 | sed 's/^/#   /'
    fi
done
exit $fail
