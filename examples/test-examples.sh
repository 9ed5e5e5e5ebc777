#!/usr/bin/env bash
# End-to-end test of the example verifiers in examples/ against a live authd, across a key
# rotation and a key revocation:
#
#   bash examples/test-examples.sh      (from anywhere; .ci/run runs it)
#
# 1. installs what the examples need: PyJWT[crypto] from PyPI into .venv-examples, jose from
#    npm into examples/node/node_modules (`npm ci`: exactly the committed package-lock.json),
#    and builds the Rust example (cargo);
# 2. starts authd (target/debug/authd, built when missing) in a temp directory on a free
#    loopback port, creates a user and logs in: access token A, signed by key K1;
# 3. starts the three verifiers (Python, Node, Rust), each with a 3-second JWKS cache, and
#    checks that each accepts A and refuses garbage;
# 4. `authd keys rotate`: once the server serves the new JWKS (within 10 s), a new login gives
#    token B signed by K2; each verifier accepts A (K1 stays in the JWKS while retiring) and B
#    (an unknown kid makes the verifier refetch the JWKS);
# 5. `authd keys revoke K1 --yes`: once K1 has left the JWKS and the verifiers' caches have
#    expired, each verifier refuses A and still accepts B;
# 6. `POST /api/auth/logout-all` with token B: B has not expired, but each verifier refuses it
#    within pollAfter + 2 s (its poller reads authd's revoked-session feed).
# Everything stays on 127.0.0.1 and is stopped on exit. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/debug/authd"
VENV="$ROOT/.venv-examples"

say() { printf '== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
# 1. What the examples need.
if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY=$(command -v python3); fi
if ! "$VENV/bin/python" -c 'import jwt, cryptography' 2>/dev/null; then
    say "creating $VENV (examples/python/requirements.txt)"
    rm -rf "$VENV"
    if ! "$PY" -m venv "$VENV" >/dev/null 2>&1; then
        rm -rf "$VENV"
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        fi
        "$PY" -m venv "$VENV"
    fi
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r examples/python/requirements.txt
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
    fi
    command -v node >/dev/null || fail "node is missing (Debian: nodejs npm)"
fi
say "npm ci (examples/node: exactly the committed package-lock.json)"
(cd examples/node && npm ci --no-audit --no-fund --silent)
[ -x "$BIN" ] || cargo build --locked --bin authd
cargo build --locked --quiet --example verify_service
RUST_EXAMPLE="$TARGET/debug/examples/verify_service"

# ---------------------------------------------------------------------------------------
# 2. authd in a temp directory.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/authd-examples.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

PORT=$(free_port)
A="http://127.0.0.1:$PORT"
export AUTHD_SERVER__BIND="127.0.0.1:$PORT" AUTHD_DATABASE__URL="sqlite://$WORK/authd.db" \
    AUTHD_JWT__KEY_DIR="$WORK/keys" AUTHD_COOKIE__SECURE=false AUTHD_PASSWORD__BCRYPT_COST=10 \
    AUTHD_LOG__LEVEL=warn AUTHD_REVOCATION_FEED__POLL_AFTER=2s
POLL_AFTER=2
(cd "$WORK" && exec "$BIN" serve >"$WORK/authd.log" 2>&1) &
PIDS+=($!)
for _ in $(seq 100); do curl -fs "$A/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "$A/readyz" >/dev/null || { cat "$WORK/authd.log"; fail "authd did not start"; }

EMAIL=examples@example.com
PASSWORD='Example-passw0rd!'
printf '%s\n' "$PASSWORD" | (cd "$WORK" && "$BIN" create-user --email "$EMAIL" --password-stdin) >/dev/null
login() {
    curl -fs -X POST "$A/api/auth/login" -H 'content-type: application/json' \
        -d "{\"email\":\"$EMAIL\",\"password\":\"$PASSWORD\"}" |
        "$PY" -c 'import json,sys; print(json.load(sys.stdin)["data"]["accessToken"])'
}
kid_of() {
    "$PY" -c 'import base64,json,sys; h=sys.argv[1].split(".")[0]; print(json.loads(base64.urlsafe_b64decode(h+"="*(-len(h)%4)))["kid"])' "$1"
}
# The token with one signature byte changed (a character in the middle of the signature, so
# that base64url padding bits cannot hide the change).
tamper() {
    "$PY" -c 'import sys; t=sys.argv[1]; i=t.rindex(".")+10; print(t[:i]+("A" if t[i]!="A" else "B")+t[i+1:])' "$1"
}
jwks_kids() { curl -fs "$A/.well-known/jwks.json" | "$PY" -c 'import json,sys; print(" ".join(k["kid"] for k in json.load(sys.stdin)["keys"]))'; }

TOKEN_A=$(login)
KID_A=$(kid_of "$TOKEN_A")
say "authd on $A; token A signed by $KID_A"

# ---------------------------------------------------------------------------------------
# 3. The three verifiers.
export AUTHD_JWKS_URL="$A/.well-known/jwks.json" JWKS_CACHE_SECONDS=3 JWKS_COOLDOWN_SECONDS=1
declare -A VERIFIER
start() { # name port command...
    local name=$1 port=$2; shift 2
    PORT=$port "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    VERIFIER[$name]="http://127.0.0.1:$port"
}
start python "$(free_port)" "$VENV/bin/python" examples/python/verify_service.py
start node "$(free_port)" node examples/node/verify-service.mjs
start rust "$(free_port)" "$RUST_EXAMPLE"
for name in "${!VERIFIER[@]}"; do
    for _ in $(seq 100); do curl -s -o /dev/null "${VERIFIER[$name]}/whoami" && break; sleep 0.1; done
done

status() { curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $2" "${VERIFIER[$1]}/whoami"; }
expect() { # name token expected-status what
    local got
    got=$(status "$1" "$2")
    if [ "$got" != "$3" ]; then
        curl -s -H "Authorization: Bearer $2" "${VERIFIER[$1]}/whoami" >&2; echo >&2
        cat "$WORK/$1.log" >&2
        fail "$1 verifier: $4: expected $3, got $got"
    fi
    echo "ok   $1: $4 -> $3"
}
# Polls until the verifier answers $3 (bounded), for changes that take a cache refresh.
eventually() { # name token expected-status what seconds
    local deadline=$((SECONDS + $5))
    while [ "$(status "$1" "$2")" != "$3" ]; do
        [ $SECONDS -lt $deadline ] || { cat "$WORK/$1.log" >&2; fail "$1 verifier: $4: not $3 within $5 s"; }
        sleep 0.5
    done
    echo "ok   $1: $4 -> $3"
}

for v in python node rust; do
    expect $v "$TOKEN_A" 200 "token A before any rotation"
    expect $v "not.a.token" 401 "garbage"
    expect $v "$(tamper "$TOKEN_A")" 401 "token A with a broken signature"
done

# ---------------------------------------------------------------------------------------
# 4. Rotation: K1 keeps verifying, K2 signs.
say "authd keys rotate"
(cd "$WORK" && "$BIN" keys rotate)
deadline=$((SECONDS + 12))
until [ "$(jwks_kids | wc -w)" -ge 2 ]; do
    [ $SECONDS -lt $deadline ] || fail "the JWKS did not gain the new key within 10 s"
    sleep 0.5
done
TOKEN_B=$(login)
KID_B=$(kid_of "$TOKEN_B")
until [ "$KID_B" != "$KID_A" ]; do
    [ $SECONDS -lt $deadline ] || fail "the server did not sign with the new key within 10 s"
    sleep 0.5; TOKEN_B=$(login); KID_B=$(kid_of "$TOKEN_B")
done
say "token B signed by $KID_B; JWKS: $(jwks_kids)"
for v in python node rust; do
    expect $v "$TOKEN_A" 200 "token A (old key, retiring) after the rotation"
    expect $v "$TOKEN_B" 200 "token B (new key) after the rotation"
done

# ---------------------------------------------------------------------------------------
# 5. Revocation: K1's tokens refused once the verifiers' caches refresh.
say "authd keys revoke $KID_A --yes"
(cd "$WORK" && "$BIN" keys revoke "$KID_A" --yes)
deadline=$((SECONDS + 12))
while jwks_kids | grep -qw -- "$KID_A"; do
    [ $SECONDS -lt $deadline ] || fail "the revoked key is still in the JWKS after 10 s"
    sleep 0.5
done
for v in python node rust; do
    eventually $v "$TOKEN_A" 401 "token A (revoked key) once the JWKS cache refreshed" 15
    expect $v "$TOKEN_B" 200 "token B after the revocation"
done

# ---------------------------------------------------------------------------------------
# 6. Revoked sessions: the verifiers' pollers read the feed.
say "logout-all with token B (it stays unexpired)"
T0=$SECONDS
curl -fs -X POST "$A/api/auth/logout-all" -H "Authorization: Bearer $TOKEN_B" >/dev/null
FEED_SIDS=$(curl -fs "$A/.well-known/revoked-sessions" | "$PY" -c 'import json,sys; print(" ".join(e["sid"] for e in json.load(sys.stdin)["revoked"]))')
SID_B=$("$PY" -c 'import base64,json,sys; p=sys.argv[1].split(".")[1]; print(json.loads(base64.urlsafe_b64decode(p+"="*(-len(p)%4)))["sid"])' "$TOKEN_B")
case " $FEED_SIDS " in *" $SID_B "*) ;; *) fail "session $SID_B is not in the feed: $FEED_SIDS" ;; esac
for v in python node rust; do
    # Within pollAfter + 2 s of the logout-all, for each (they poll side by side).
    eventually $v "$TOKEN_B" 401 "token B after logout-all (revoked-session feed)" \
        $((T0 + POLL_AFTER + 2 - SECONDS))
done
say "all example verifiers passed"
