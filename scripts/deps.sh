#!/usr/bin/env bash
# Installs the Debian packages sluice needs to build, test and demo. Idempotent:
# installs only what is missing, and runs apt-get update at most once.
set -euo pipefail
pkgs=(build-essential pkg-config libzmq3-dev libxxhash-dev libpq-dev libmsgpack-dev
      liblz4-dev libsqlite3-dev sqlite3 libjansson-dev libmicrohttpd-dev libmariadb-dev)
if [ "${1:-}" = "--test" ]; then
    pkgs+=(postgresql postgresql-client python3 python3-psycopg2 python3-zmq python3-msgpack python3-yaml python3-pymysql mariadb-server perl time
           clang libclang-rt-dev haproxy chromium prometheus curl)
fi
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "sluice: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
