#!/usr/bin/env bash
# Prometheus alert rules (docker/prometheus/alerts.yml) and the scrape
# config beside them are valid for promtool; each alert fires on a synthetic
# unhealthy series and stays silent on a healthy one (promtool test rules
# with tests/fixtures/alerts_test.yml); and the checks can fail: a broken
# rule file is refused, and a rule with the wrong threshold fails the unit
# test. Every metric the rules read carries a migration label in the test
# series, and every alert keeps it.
set -u
cd "$(dirname "$0")/../.."
echo "1..8"
n=0 fail=0
check() {
    n=$((n + 1))
    if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fail=$((fail + 1)); fi
}
diag() { [ -n "$1" ] && printf '%s\n' "$1" | sed 's/^/#   /'; }

rules=docker/prometheus/alerts.yml
config=docker/prometheus/prometheus.yml
unit=tests/fixtures/alerts_test.yml
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if ! command -v promtool >/dev/null; then
    for i in 1 2 3 4 5 6 7 8; do echo "ok $i # SKIP promtool not installed"; done
    exit 0
fi

out=$(promtool check rules "$rules" 2>&1)
rc=$?
check $rc "promtool check rules $rules"
[ $rc = 0 ] || diag "$out"

# check config reads rule_files relative to the config file's directory
out=$(promtool check config "$config" 2>&1)
rc=$?
check $rc "promtool check config $config (its rule file found and valid)"
[ $rc = 0 ] || diag "$out"

names=$(grep -oE 'alert: *[A-Za-z]+' "$rules" | sed 's/alert: *//' | sort | tr '\n' ' ')
check $([ "$names" = "SluiceDivergence SluiceMigrationAborted SluiceReplicationLag SluiceValidationStale " ]; echo $?) \
    "the four alerts are defined ($names)"

# rule_files in the unit test are relative to the test file
out=$(promtool test rules "$unit" 2>&1)
rc=$?
check $rc "promtool test rules: each alert fires on its unhealthy series, not before its 'for', not on healthy ones"
[ $rc = 0 ] || diag "$out"

untested=""
for a in $names; do grep -q "alertname: $a\$" "$unit" || untested="$untested $a"; done
check $([ -z "$untested" ]; echo $?) "every alert has a unit test${untested:+ (missing:$untested)}"

# negative: a broken copy (an expression that does not parse, a bad 'for')
sed -e 's/sluice_migration_divergent_rows > 0/sluice_migration_divergent_rows > > 0/' \
    -e 's/for: 2m/for: two minutes/' "$rules" >"$tmp/broken.yml"
out=$(promtool check rules "$tmp/broken.yml" 2>&1)
rc=$?
check $([ $rc != 0 ]; echo $?) "a broken copy of the rules is refused by promtool check rules (exit $rc)"
echo "$out" | grep -q 'parse error\|not a valid duration'
check $? "and promtool says what is wrong"

# negative: the unit test catches a rule that would not fire (threshold raised)
mkdir -p "$tmp/docker/prometheus" "$tmp/tests/fixtures"
sed 's/sluice_migration_divergent_rows > 0/sluice_migration_divergent_rows > 10/' "$rules" \
    >"$tmp/docker/prometheus/alerts.yml"
cp "$unit" "$tmp/tests/fixtures/"
out=$(promtool test rules "$tmp/tests/fixtures/alerts_test.yml" 2>&1)
rc=$?
check $([ $rc != 0 ] && echo "$out" | grep -q SluiceDivergence; echo $?) \
    "the unit test fails for a divergence rule that would not fire (exit $rc)"

exit $((fail > 0))
