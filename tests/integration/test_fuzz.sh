#!/usr/bin/env bash
# The fuzz targets of tests/fuzz/, built with clang's libFuzzer and run a few
# seconds each (FUZZ_SECONDS): a smoke test that they build, take their seed
# corpora and find nothing quickly. `make fuzz` runs them for real.
cd "$(dirname "$0")/../.." || exit 1
if ! command -v clang >/dev/null; then
    echo "1..0 # SKIP clang not installed (scripts/deps.sh --test installs it)"
    exit 0
fi
targets=$(ls tests/fuzz/fuzz_*.c | sed 's|tests/fuzz/\(.*\)\.c|build/fuzz/\1|')
mkdir -p build
if ! make -s -j2 $targets >build/fuzz-build.log 2>&1; then
    echo "1..1"
    echo "not ok 1 - the fuzz targets build with clang -fsanitize=fuzzer"
    tail -20 build/fuzz-build.log | sed 's/^/#   /'
    exit 1
fi
exec bash tests/fuzz/run.sh "${FUZZ_SECONDS:-3}" $targets
