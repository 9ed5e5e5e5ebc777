#!/usr/bin/env bash
# The README's walk-through as a test: runs the README's shell blocks, in order and exactly as
# written, against a fresh authd, the way a new user pastes them.
#
#   bash .ci/readme-walkthrough.sh          (from anywhere; .ci/run runs it after cargo test)
#
# Every shell block of README.md (```sh, ```bash, ```shell) carries a tag after the language,
# which GitHub ignores when it renders the block:
#
#   ```sh walkthrough               run by this script
#   ```sh walkthrough postgres      run when a PostgreSQL server answers (always under CI)
#   ```sh skip: <why>               not run here (root, Docker, systemd, ...); listed with its why
#
# A shell block with no tag is an error, so a new section cannot slip past the walk-through.
# The walkthrough blocks are concatenated into one bash script (variables set by one block are
# seen by the next, as in one terminal) under `set -euo pipefail`, and run in a fresh temp
# directory with `authd` on PATH, while `authd serve` runs in that same directory on a free
# loopback port. The blocks call curl with -f (an unexpected HTTP status is an error) or check
# the status themselves, so the first unexpected answer fails this script and names the README
# line. What the blocks get from here (the README names both):
#
#   A               the server's base URL (the README's default is http://127.0.0.1:8080)
#   ADMIN_PASSWORD  the first admin's password ("From a script, pipe the password")
#   DB, A1, A2      for `postgres` blocks: a fresh database on AUTHD_TEST_POSTGRES_URL's server
#                   (default postgres://postgres@127.0.0.1:5432/postgres; dropped on exit), and
#                   two free loopback ports for instances
#   M               a free loopback port for the second server of "Mail and password reset"
#
# plus AUTHD_PASSWORD__BCRYPT_COST=10 (a debug build hashes slowly; 10 is the lowest allowed);
# everything else is the built-in defaults (the refresh cookie stays Secure: curl sends it to
# 127.0.0.1 anyway, as the README says). Inherited AUTHD_* variables are cleared. Environment (optional): AUTHD_BIN, the binary to use (default: a
# debug build, `cargo build --locked --bin authd`); README_FILE, another file to walk through
# (to try this script on a broken README). Removes everything it created on exit.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$(pwd)"
readme="${README_FILE:-$repo/README.md}"

log() { printf '== %s\n' "$*"; }
fail() {
    printf 'readme-walkthrough.sh: FAIL: %s\n' "$*" >&2
    exit 1
}

# --- 1. the blocks ----------------------------------------------------------------------------
tmp="$(mktemp -d "${TMPDIR:-/tmp}/authd-readme.XXXXXX")"
server_pid=""
pg_url="${AUTHD_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
pg_db=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    # Instances a failed block left running: only children of this script's walk-through.
    if [ -f "$tmp/walkthrough.pid" ]; then
        pkill -TERM -P "$(cat "$tmp/walkthrough.pid")" 2>/dev/null || true
    fi
    if [ -n "$pg_db" ]; then
        psql "$pg_url" -qAtc "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# PostgreSQL for the `postgres` blocks: required under CI, else they are skipped loudly.
pg=0
if command -v psql >/dev/null 2>&1 && psql "$pg_url" -qAtc 'SELECT 1' >/dev/null 2>&1; then
    pg=1
elif [ -n "${CI:-}" ]; then
    fail "PostgreSQL at $pg_url does not answer (CI is set; .ci/services.sh starts it)"
fi

# extract.awk writes the walk-through script (each block preceded by the README line it starts
# at, so a failure names it) and lists the skipped blocks; untagged blocks are errors.
script="$tmp/walkthrough.sh"
skipped="$tmp/skipped"
untagged="$tmp/untagged"
awk -v script="$script" -v skipped="$skipped" -v untagged="$untagged" -v pg="$pg" '
    BEGIN { state = "out"; printf "" >script; printf "" >skipped; printf "" >untagged }
    state == "out" && /^```/ {
        info = substr($0, 4)
        lang = info; sub(/[ \t].*$/, "", lang)
        tag = info; sub(/^[^ \t]*[ \t]*/, "", tag)
        if (lang != "sh" && lang != "bash" && lang != "shell") { state = "other"; next }
        if (tag == "walkthrough postgres" && pg != 1) {
            printf "README.md:%d  needs PostgreSQL (none answers at AUTHD_TEST_POSTGRES_URL)\n", NR >>skipped
            state = "skip"
            next
        }
        if (tag == "walkthrough" || tag == "walkthrough postgres") {
            state = "run"
            n++
            printf "__block=%d; __off=%d\n", NR + 1, NR - lines - 4 >>script
            printf "printf \"\\n== README.md:%d\\n\"\n", NR + 1 >>script
            lines += 2
            next
        }
        if (tag ~ /^skip: *[^ ]/) {
            reason = tag; sub(/^skip: */, "", reason)
            printf "README.md:%d  %s\n", NR, reason >>skipped
            state = "skip"
            next
        }
        printf "README.md:%d  ```%s\n", NR, info >>untagged
        state = "skip"
        next
    }
    state != "out" && /^```[ \t]*$/ { state = "out"; next }
    state == "run" { print >>script; lines++ }
    END { if (state != "out") { print "unterminated code block" >>untagged } }
' "$readme"
if [ -s "$untagged" ]; then
    sed 's/^/    /' "$untagged" >&2
    fail "shell blocks in README.md without a tag: add 'walkthrough' or 'skip: <why>' after the language"
fi
[ -s "$script" ] || fail "README.md has no 'walkthrough' blocks"
log "README.md: $(grep -c '^__block=' "$script") blocks to run, $(wc -l <"$skipped") skipped:"
sed 's/^/   skipped: /' "$skipped"

# --- 2. a fresh server -----------------------------------------------------------------------
# What the blocks call besides authd (Debian packages in parentheses).
missing=()
for tool in curl:curl python3:python3 openssl:openssl sqlite3:sqlite3; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    [ "$(id -u)" = 0 ] || fail "the walk-through needs: ${missing[*]} (apt-get install ${missing[*]})"
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ -z "${AUTHD_BIN:-}" ]; then
    log "cargo build --locked --bin authd"
    cargo build --locked --bin authd
    AUTHD_BIN="${CARGO_TARGET_DIR:-$repo/target}/debug/authd"
fi
case "$AUTHD_BIN" in /*) ;; *) AUTHD_BIN="$repo/$AUTHD_BIN" ;; esac
[ -x "$AUTHD_BIN" ] || fail "AUTHD_BIN=$AUTHD_BIN is not an executable"
mkdir -p "$tmp/bin" "$tmp/work"
ln -s "$AUTHD_BIN" "$tmp/bin/authd"

while IFS= read -r var; do unset "$var"; done < <(compgen -e | grep '^AUTHD_' || true)
export AUTHD_PASSWORD__BCRYPT_COST=10
export PATH="$tmp/bin:$PATH"
cd "$tmp/work"

log "authd serve (in $tmp/work, a free loopback port)"
AUTHD_SERVER__BIND=127.0.0.1:0 authd serve >"$tmp/serve.log" 2>&1 &
server_pid=$!
port=""
for _ in $(seq 1 300); do
    port="$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$tmp/serve.log" | head -n 1)"
    [ -n "$port" ] && break
    kill -0 "$server_pid" 2>/dev/null || fail "serve exited early: $(cat "$tmp/serve.log")"
    sleep 0.1
done
[ -n "$port" ] || fail "serve did not log 'listening' within 30s: $(cat "$tmp/serve.log")"
export A="http://127.0.0.1:$port"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
M="http://127.0.0.1:$(free_port)"
export M
if [ "$pg" = 1 ]; then
    pg_db="authd_test_readme_$$"
    psql "$pg_url" -qAtc "CREATE DATABASE $pg_db" >/dev/null
    export DB="${pg_url%/*}/$pg_db"
    A1="http://127.0.0.1:$(free_port)"
    A2="http://127.0.0.1:$(free_port)"
    export A1 A2
fi
# Random, and certain to hold a letter, a digit and a symbol (the password rules).
ADMIN_PASSWORD="$(openssl rand -base64 30)-a9"
export ADMIN_PASSWORD
echo "   $A (pid $server_pid)"

# --- 3. the blocks, in order -----------------------------------------------------------------
log "running the walkthrough blocks"
{
    echo 'set -euo pipefail'
    # shellcheck disable=SC2016 # expanded by the walk-through, not here
    echo 'trap '\''printf "readme-walkthrough.sh: FAIL: README.md:%d (block at line %d) exited %d\n" "$((LINENO + __off))" "$__block" "$?" >&2'\'' ERR'
    cat "$script"
} >"$tmp/run.sh"
rc=0
bash "$tmp/run.sh" &
echo $! >"$tmp/walkthrough.pid"
wait "$(cat "$tmp/walkthrough.pid")" || rc=$?
if [ "$rc" != 0 ]; then
    echo "--- the server's log (last 30 lines)" >&2
    tail -n 30 "$tmp/serve.log" >&2
    fail "a README block failed (exit $rc)"
fi
echo
kill -0 "$server_pid" 2>/dev/null || fail "the server died during the walk-through: $(tail -n 30 "$tmp/serve.log")"
if grep -qE '(ERROR|panicked)' "$tmp/serve.log"; then
    grep -E '(ERROR|panicked)' "$tmp/serve.log" >&2
    fail "the server logged errors during the walk-through"
fi
log "readme-walkthrough.sh: OK ($(grep -c '^__block=' "$script") blocks run, $(wc -l <"$skipped") skipped)"
