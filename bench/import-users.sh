#!/usr/bin/env bash
# Times `authd import-users` on N generated users (default 100000) into a fresh database
# (docs/PERFORMANCE.md). Every user gets the same valid cost-4 bcrypt hash: the import does
# no bcrypt work, so the hash's value does not matter to the timing.
#
#   bash bench/import-users.sh [N] [path/to/authd]    (default: target/release/authd)
set -euo pipefail
N="${1:-100000}"
BIN="${2:-${CARGO_TARGET_DIR:-target}/release/authd}"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/authd-import.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
HASH='$2b$04$EGdrhbKUv8Oc9vGiXX0HQOxSg445d458Muh7DAHskb6QbtCvdxcie'
awk -v n="$N" -v h="$HASH" 'BEGIN {
    for (i = 1; i <= n; i++)
        printf "{\"email\":\"user%d@example.com\",\"passwordHash\":\"%s\",\"name\":\"User %d\"}\n", i, h, i
}' >"$WORK/users.jsonl"
export AUTHD_DATABASE__URL="sqlite://$WORK/authd.db" AUTHD_JWT__KEY_DIR="$WORK/keys"
"$BIN" migrate >/dev/null
echo "== $N users, $(du -h "$WORK/users.jsonl" | cut -f1) of JSON Lines"
TIMEFORMAT='%R s wall, %U + %S s CPU (user + system)'
for run in dry-run import; do
    flags=()
    [ "$run" = dry-run ] && flags=(--dry-run)
    echo "-- $run"
    time "$BIN" import-users "$WORK/users.jsonl" "${flags[@]}"
done
