#!/usr/bin/env bash
# authd on PostgreSQL against the database server's own ceiling, on one machine
# (docs/PERFORMANCE.md, "PostgreSQL"):
#   1. pgbench -i on a scratch database;
#   2. ROUNDS rounds (default 3) of, back to back: pgbench's built-in simple-update with the
#      refresh scenario's client count (64 clients, 2 threads) for DURATION seconds;
#      pgbench's built-in select-only with prepared statements (-S -M prepared) at authd's
#      pool size (POOL, default 8: database.pool_size's default), a primary-key read per
#      transaction, the reference of a profile request; authd-bench --database URL with
#      profile and refresh on PostgreSQL (each scenario on a scratch database the bench
#      creates and drops); authd-bench with profile on SQLite;
#   3. authd-bench --database URL with login and scale, once;
# then prints each round, and the ratios of the medians against their targets. A shared or
# virtual machine's speed drifts by tens of percent over minutes: the rounds put each figure
# next to its reference in time, and the median drops an outlier round. Every database it
# makes is dropped, also on an error. The medians and every round's figures are written as
# JSON to bench/results/postgres.json (OUT overrides).
#
#   bash bench/postgres.sh [postgres://user@host:port/db] [DURATION]
#   (default: postgres://postgres@127.0.0.1:5432/postgres, 10 s; the URL's database is only
#   connected to, to create and drop the scratch ones; its user must be allowed to)
#   BENCH=path/to/authd-bench overrides the binary (default: target/release/authd-bench);
#   BENCH_ARGS are passed to every authd-bench run (e.g. BENCH_ARGS=--smoke to try the script);
#   ROUNDS sets the number of rounds (odd: the median is then one round's figure).
set -euo pipefail
URL="${1:-postgres://postgres@127.0.0.1:5432/postgres}"
DURATION="${2:-10}"
CLIENTS=64
POOL="${POOL:-8}"
ROUNDS="${ROUNDS:-3}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${OUT:-$ROOT/bench/results/postgres.json}"
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
for r in $(seq 1 "$ROUNDS"); do
    echo "== round $r/$ROUNDS: pgbench -b simple-update -c $CLIENTS -j 2 -T $DURATION"
    "$PGBENCH" -b simple-update -c "$CLIENTS" -j 2 -T "$DURATION" "$SCRATCH_URL" >"$WORK/pgbench-$r.log" 2>&1
    sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$WORK/pgbench-$r.log" | tail -1 >"$WORK/pgbench-$r.tps"
    echo "pgbench: $(cat "$WORK/pgbench-$r.tps") tps"
    echo "== round $r/$ROUNDS: pgbench -S -M prepared -c $POOL -j 2 -T $DURATION"
    "$PGBENCH" -S -M prepared -c "$POOL" -j 2 -T "$DURATION" "$SCRATCH_URL" >"$WORK/select-$r.log" 2>&1
    sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$WORK/select-$r.log" | tail -1 >"$WORK/select-$r.tps"
    echo "pgbench select-only: $(cat "$WORK/select-$r.tps") tps"
    echo "== round $r/$ROUNDS: authd-bench --database (profile, refresh)"
    "$BENCH" ${BENCH_ARGS:-} --database "$URL" --duration "$DURATION" --out "$WORK/pg-$r.json" \
        --scenario profile --scenario refresh
    echo "== round $r/$ROUNDS: authd-bench on SQLite (profile)"
    "$BENCH" ${BENCH_ARGS:-} --duration "$DURATION" --out "$WORK/sqlite-$r.json" --scenario profile
done
psql "$URL" -qAtc "DROP DATABASE IF EXISTS $SCRATCH WITH (FORCE)" >/dev/null

echo "== authd-bench --database (login, scale)"
"$BENCH" ${BENCH_ARGS:-} --database "$URL" --duration "$DURATION" --out "$WORK/pg-once.json" \
    --scenario login --scenario scale

# Per round: pgbench TPS, refresh/s and profile req/s on PostgreSQL, profile req/s on SQLite.
for r in $(seq 1 "$ROUNDS"); do
    jq -n --argjson r "$r" --argjson pgbench "$(cat "$WORK/pgbench-$r.tps")" \
        --argjson select "$(cat "$WORK/select-$r.tps")" \
        --slurpfile pg "$WORK/pg-$r.json" --slurpfile sq "$WORK/sqlite-$r.json" '{
            round: $r, pgbench_tps: $pgbench, pgbench_select_tps: $select,
            pg_refresh_rps: $pg[0].scenarios.refresh.throughput_rps,
            pg_refresh_p99_ms: $pg[0].scenarios.refresh.run.p99_ms,
            pg_profile_rps: $pg[0].scenarios.profile.throughput_rps,
            pg_profile_p99_ms: $pg[0].scenarios.profile.run.p99_ms,
            sqlite_profile_rps: $sq[0].scenarios.profile.throughput_rps }'
done | jq -s '.' >"$WORK/rounds.json"
median() { # the median of a jq path over the rounds
    jq "[.[].$1] | sort | if length % 2 == 1 then .[length / 2 | floor]
        else (.[length / 2 - 1] + .[length / 2]) / 2 end" "$WORK/rounds.json"
}
PGBENCH_TPS=$(median pgbench_tps)
SELECT_TPS=$(median pgbench_select_tps)
PG_REFRESH=$(median pg_refresh_rps)
PG_PROFILE=$(median pg_profile_rps)
SQLITE_PROFILE=$(median sqlite_profile_rps)
PG_LOGIN_RATIO=$(jq '.scenarios.login.ratio_to_bound * 100' "$WORK/pg-once.json")
PG_LOGIN=$(jq '.scenarios.login.throughput_rps' "$WORK/pg-once.json")
PG_BOUND=$(jq '.scenarios.login.bound_rps' "$WORK/pg-once.json")
line() { # name figure reference target detail
    awk -v n="$1" -v f="$2" -v r="$3" -v t="$4" -v d="$5" 'BEGIN {
        p = 100 * f / r
        printf "%-40s %9.1f %%  >= %3d %%  %-4s  %s\n", n, p, t, (p >= t ? "ok" : "MISS"), d
    }'
}
echo
echo "== rounds (same machine, same database server)"
printf '%-6s %14s %14s %14s %14s %14s\n' round "pgbench tps" "select-only" "pg refresh/s" "pg profile/s" "sqlite prof/s"
jq -r '.[] | [.round, .pgbench_tps, .pgbench_select_tps, .pg_refresh_rps, .pg_profile_rps,
    .sqlite_profile_rps] | @tsv' "$WORK/rounds.json" |
    awk -F'\t' '{ printf "%-6s %14.0f %14.0f %14.0f %14.0f %14.0f\n", $1, $2, $3, $4, $5, $6 }'
echo
echo "== PostgreSQL ratios (medians of the rounds)"
printf '%-40s %11s  %7s  %-4s  %s\n' check figure target res detail
line "refresh on PostgreSQL / pgbench TPS" "$PG_REFRESH" "$PGBENCH_TPS" 40 \
    "$(printf '%.0f rotations/s vs pgbench simple-update %.0f tps, C=%d' "$PG_REFRESH" "$PGBENCH_TPS" "$CLIENTS")"
line "profile on PostgreSQL / pgbench select" "$PG_PROFILE" "$SELECT_TPS" 60 \
    "$(printf '%.0f req/s vs pgbench -S -M prepared %.0f tps, C=%d' "$PG_PROFILE" "$SELECT_TPS" "$POOL")"
echo "$(printf 'profile on PostgreSQL / on SQLite: %.1f %% (%.0f vs %.0f req/s; no target)' \
    "$(awk -v a="$PG_PROFILE" -v b="$SQLITE_PROFILE" 'BEGIN { print 100 * a / b }')" "$PG_PROFILE" "$SQLITE_PROFILE")"
line "login on PostgreSQL / bcrypt bound" "$PG_LOGIN_RATIO" 100 90 \
    "$(printf '%.2f logins/s vs bound %.2f/s' "$PG_LOGIN" "$PG_BOUND")"
echo "scale on PostgreSQL: $(jq -r '[.scenarios.scale.steps[] | "\(.users) users: refresh \(.refresh.throughput_rps|floor)/s, profile \(.profile.throughput_rps|floor)/s (seeded in \(.seed_seconds|floor) s)"] | join("; ")' "$WORK/pg-once.json")"
mkdir -p "$(dirname "$OUT")"
jq -n --slurpfile rounds "$WORK/rounds.json" --slurpfile once "$WORK/pg-once.json" \
    --argjson pgbench "$PGBENCH_TPS" --argjson refresh "$PG_REFRESH" \
    --argjson pg_profile "$PG_PROFILE" --argjson sqlite_profile "$SQLITE_PROFILE" \
    --argjson select "$SELECT_TPS" --argjson pool "$POOL" \
    --argjson clients "$CLIENTS" '{
        machine: $once[0].machine, clients: $clients, pool: $pool,
        medians: { pgbench_tps: $pgbench, pgbench_select_tps: $select, pg_refresh_rps: $refresh,
                   pg_profile_rps: $pg_profile, sqlite_profile_rps: $sqlite_profile },
        ratios_percent: {
            refresh_to_pgbench: (100 * $refresh / $pgbench),
            pg_profile_to_pgbench_select: (100 * $pg_profile / $select),
            pg_profile_to_sqlite: (100 * $pg_profile / $sqlite_profile),
            login_to_bcrypt_bound: (100 * $once[0].scenarios.login.ratio_to_bound) },
        rounds: $rounds[0],
        login: $once[0].scenarios.login, scale: $once[0].scenarios.scale }' >"$OUT"
echo "results written to $OUT"
LEFT=$(psql "$URL" -qAtc "SELECT count(*) FROM pg_database WHERE datname LIKE 'authd_bench_%' OR datname = '$SCRATCH'")
echo "scratch databases left on the server: $LEFT"
