#!/usr/bin/env bash
# CI: make sure PostgreSQL and Redis answer on 127.0.0.1 before the tests; start them if not,
# installing them first on a fresh machine (Debian/Ubuntu: postgresql, redis-server).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
PG_URL="${AUTHD_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
REDIS_URL="${AUTHD_TEST_REDIS_URL:-redis://127.0.0.1:6379}"

installed_apt=""
apt_install() {
  if [ -z "$installed_apt" ]; then
    $SUDO apt-get update -qq
    installed_apt=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@"
}

wait_for() { # what, command...
  local what="$1"
  shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "$what does not answer" >&2
  return 1
}

echo "== PostgreSQL at 127.0.0.1:5432"
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  if ! ls -d /etc/postgresql/*/main >/dev/null 2>&1; then
    apt_install postgresql postgresql-client
    fresh_pg=1
  fi
  version="$(ls /etc/postgresql | sort -V | tail -n 1)"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for "PostgreSQL" pg_isready -h 127.0.0.1 -p 5432 -q
  if [ -n "${fresh_pg:-}" ]; then
    # A fresh cluster asks for a password on TCP; the tests connect as postgres without one:
    # trust loopback connections (a throwaway CI database server).
    hba="/etc/postgresql/$version/main/pg_hba.conf"
    $SUDO sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  fi
fi
wait_for "PostgreSQL (as $PG_URL)" psql "$PG_URL" -Atc "SELECT 1"
psql "$PG_URL" -Atc "SELECT version()"

echo "== Redis at 127.0.0.1:6379"
if ! redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1; then
  if ! command -v redis-server >/dev/null 2>&1; then
    apt_install redis-server
  fi
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  wait_for "Redis" redis-cli -u "$REDIS_URL" ping
fi
redis-cli -u "$REDIS_URL" ping
