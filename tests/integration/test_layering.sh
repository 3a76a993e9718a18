#!/usr/bin/env bash
# Layering (proto/README.md, "Layering"): msgpack-c and lz4 are called only
# inside proto/. No C source or header outside proto/ names them (tests
# aside: they build hostile frames byte by byte), and proto's headers
# include neither, so nothing reaches them through msg.h: other modules
# hold msg_obj by pointer and read it through proto's functions.
set -u
cd "$(dirname "$0")/../.."
echo "1..5"
n=0 fail=0
check() {
    n=$((n + 1))
    if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fail=$((fail + 1)); fi
}
# shows what a failed check found
diag() { [ -n "$1" ] && printf '%s\n' "$1" | sed 's/^/#   /'; }

srcs=$(find . \( -path ./tests -o -path ./proto -o -path ./build -o -path './.*' \) -prune \
    -o -type f \( -name '*.c' -o -name '*.h' \) -print | sort)
count=$(printf '%s\n' "$srcs" | grep -c .)
check $([ "$count" -ge 20 ]; echo $?) \
    "the C sources outside proto/ and tests/ are found ($count files; the checks below read them)"

grep -qi msgpack proto/msg.c
check $? "the search sees msgpack where it belongs (proto/msg.c), so an empty answer below means something"

hits=$(printf '%s\n' "$srcs" | xargs grep -n -i -E 'msgpack|lz4' /dev/null)
files=$(printf '%s\n' "$hits" | cut -d: -f1 | sort -u | tr '\n' ' ')
check $([ -z "$hits" ]; echo $?) \
    "no C source outside proto/ and tests/ names msgpack or lz4${hits:+ (found in: $files)}"
diag "$hits"

inc=$(grep -n -E '^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"]([^>"]*/)?(msgpack|lz4)' \
    proto/*.h /dev/null)
check $([ -z "$inc" ]; echo $?) \
    "proto's headers include neither msgpack-c nor lz4 (their users see only proto's API)"
diag "$inc"

inc=$(printf '%s\n' "$srcs" |
    xargs grep -n -E '^[[:space:]]*#[[:space:]]*include[[:space:]]*"[^"]*proto/[^"]*\.c"' /dev/null)
check $([ -z "$inc" ]; echo $?) "no file outside proto/ includes proto's .c files (its internals)"
diag "$inc"

[ $fail -eq 0 ]
