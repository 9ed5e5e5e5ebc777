#!/usr/bin/env bash
# authd on PostgreSQL against the database server's own ceiling, on one machine
# (docs/PERFORMANCE.md, "PostgreSQL"):
#   1. pgbench -i on a scratch database, then pgbench's built-in simple-update with the refresh
#      scenario's client count (64 clients, 2 threads) for DURATION seconds;
#   2. authd-bench --database URL: login, profile, refresh, scale on PostgreSQL (each scenario
#      on a scratch database the bench creates and drops);
#   3. authd-bench on SQLite: profile, for the ratio;
# then prints the ratios against their targets. Every database it makes is dropped, also on
# an error.
#
#   bash bench/postgres.sh [postgres://user@host:port/db] [DURATION]
#   (default: postgres://postgres@127.0.0.1:5432/postgres, 10 s; the URL's database is only
#   connected to, to create and drop the scratch ones; its user must be allowed to)
#   BENCH=path/to/authd-bench overrides the binary (default: target/release/authd-bench);
#   BENCH_ARGS are passed to both authd-bench runs (e.g. BENCH_ARGS=--smoke to try the script).
set -euo pipefail
URL="${1:-postgres://postgres@127.0.0.1:5432/postgres}"
DURATION="${2:-10}"
CLIENTS=64
BENCH="${BENCH:-${CARGO_TARGET_DIR:-target}/release/authd-bench}"
PGBENCH="$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | tail -1)"
[ -x "$BENCH" ] || { echo "postgres.sh: build first: cargo build --release --bin authd-bench" >&2; exit 1; }
[ -n "$PGBENCH" ] || { echo "postgres.sh: pgbench not found" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/authd-pgbench.XXXXXX")
SCRATCH="authd_pgbench_$$_$RANDOM"
# The scratch database's URL: the given one with its database name replaced.
BASE="${URL%%\?*}"
QUERY=""
[ "$BASE" != "$URL" ] && QUERY="?${URL#*\?}"
AUTHORITY="${BASE#*://}"
AUTHORITY="${AUTHORITY%%/*}"
SCHEME="${BASE%%://*}"
SCRATCH_URL="$SCHEME://$AUTHORITY/$SCRATCH$QUERY"
cleanup() {
    psql "$URL" -qAtc "DROP DATABASE IF EXISTS $SCRATCH WITH (FORCE)" >/dev/null 2>&1 ||
        echo "postgres.sh: warning: could not drop $SCRATCH" >&2
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "== pgbench -i (scale 1) on $SCRATCH"
psql "$URL" -qAtc "CREATE DATABASE $SCRATCH"
"$PGBENCH" -i -q "$SCRATCH_URL" >"$WORK/pgbench-init.log" 2>&1
echo "== pgbench -b simple-update -c $CLIENTS -j 2 -T $DURATION"
"$PGBENCH" -b simple-update -c "$CLIENTS" -j 2 -T "$DURATION" "$SCRATCH_URL" | tee "$WORK/pgbench.log"
PGBENCH_TPS=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$WORK/pgbench.log" | tail -1)
psql "$URL" -qAtc "DROP DATABASE IF EXISTS $SCRATCH WITH (FORCE)" >/dev/null

echo "== authd-bench --database (login, profile, refresh, scale)"
"$BENCH" ${BENCH_ARGS:-} --database "$URL" --duration "$DURATION" --out "$WORK/pg.json" \
    --scenario login --scenario profile --scenario refresh --scenario scale
echo "== authd-bench on SQLite (profile)"
"$BENCH" ${BENCH_ARGS:-} --duration "$DURATION" --out "$WORK/sqlite.json" --scenario profile

PG_LOGIN_RATIO=$(jq '.scenarios.login.ratio_to_bound * 100' "$WORK/pg.json")
PG_LOGIN=$(jq '.scenarios.login.throughput_rps' "$WORK/pg.json")
PG_BOUND=$(jq '.scenarios.login.bound_rps' "$WORK/pg.json")
PG_PROFILE=$(jq '.scenarios.profile.throughput_rps' "$WORK/pg.json")
PG_REFRESH=$(jq '.scenarios.refresh.throughput_rps' "$WORK/pg.json")
SQLITE_PROFILE=$(jq '.scenarios.profile.throughput_rps' "$WORK/sqlite.json")
line() { # name figure reference target
    awk -v n="$1" -v f="$2" -v r="$3" -v t="$4" -v d="$5" 'BEGIN {
        p = 100 * f / r
        printf "%-40s %9.1f %%  >= %3d %%  %-4s  %s\n", n, p, t, (p >= t ? "ok" : "MISS"), d
    }'
}
echo
echo "== PostgreSQL ratios (same machine, same database server)"
printf '%-40s %11s  %7s  %-4s  %s\n' check figure target res detail
line "refresh on PostgreSQL / pgbench TPS" "$PG_REFRESH" "$PGBENCH_TPS" 40 \
    "$(printf '%.0f rotations/s vs pgbench simple-update %.0f tps, C=%d' "$PG_REFRESH" "$PGBENCH_TPS" "$CLIENTS")"
line "profile on PostgreSQL / on SQLite" "$PG_PROFILE" "$SQLITE_PROFILE" 60 \
    "$(printf '%.0f req/s vs %.0f req/s' "$PG_PROFILE" "$SQLITE_PROFILE")"
line "login on PostgreSQL / bcrypt bound" "$PG_LOGIN_RATIO" 100 90 \
    "$(printf '%.2f logins/s vs bound %.2f/s' "$PG_LOGIN" "$PG_BOUND")"
echo "scale on PostgreSQL: $(jq -r '[.scenarios.scale.steps[] | "\(.users) users: refresh \(.refresh.throughput_rps|floor)/s, profile \(.profile.throughput_rps|floor)/s (seeded in \(.seed_seconds|floor) s)"] | join("; ")' "$WORK/pg.json")"
LEFT=$(psql "$URL" -qAtc "SELECT count(*) FROM pg_database WHERE datname LIKE 'authd_bench_%' OR datname = '$SCRATCH'")
echo "scratch databases left on the server: $LEFT"
