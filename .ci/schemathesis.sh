#!/usr/bin/env bash
# Property-based API tests of a live `authd serve` against docs/openapi.yaml with schemathesis
# (from PyPI, pinned below): the spec is the oracle, and the spec follows docs/API.md.
#
#   bash .ci/schemathesis.sh     (from anywhere; it works from the repo root)
#
# Idempotent. Needs python3 with venv (Debian's python3-venv is installed when missing and we
# are root), curl, and the debug binary target/debug/authd (CI's `cargo test` built it; when
# it is missing, `cargo build --bin authd`). Everything stays on 127.0.0.1; the server runs in
# a temporary directory and is killed on exit. Exits non-zero when schemathesis finds anything.
#
# What runs: all of schemathesis' phases (examples, coverage, fuzzing, stateful through the
# spec's OpenAPI links), `--checks all` (no 5xx, documented status codes, content types,
# response schemas, response headers -- `required: true` ones must be present --, negative
# data rejected, auth enforced, ...), seeded, one worker, a bounded number of examples per
# operation (about a minute). One built-in check is swapped for a narrowed copy of itself,
# defined in the hooks below with the reasons:
#   - positive_data_acceptance -> positive_data_acceptance_within_contract: schema-valid
#     register/login bodies that break a contract rule JSON Schema cannot state (counted after
#     NFKC, Unicode classes, UTF-8 byte sizes) rightly get 400 and are skipped; all other
#     positive requests must be accepted; likewise a generated `cursor` for the admin user
#     listing (only cursors the server issued are cursors: others are a correct 400).
#     The same for change-password bodies whose newPassword breaks the policy or equals
#     currentPassword, and for the email-change routes (they need a mail transport, a mailed
#     token or an existing user).
#
# Knobs (environment): SCHEMATHESIS_SEED (default 1), SCHEMATHESIS_MAX_EXAMPLES (default 100).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

ST_VERSION=4.32.5
VENV="$ROOT/.venv-schemathesis"
SEED="${SCHEMATHESIS_SEED:-1}"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-100}"
BIN="$ROOT/target/debug/authd"
SPEC="$ROOT/docs/openapi.yaml"

# Installs Debian package $2 when command $1 is missing (as root), else fails clearly.
need() {
    command -v "$1" >/dev/null && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
    fi
    command -v "$1" >/dev/null || { echo "schemathesis.sh: $1 is missing (Debian: $2)" >&2; exit 1; }
}
need curl curl

# ---------------------------------------------------------------------------------------
# 1. A venv with the pinned schemathesis, made with Debian's python3 (not a pyenv shim).
if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else need python3 python3-venv; PY=$(command -v python3); fi
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -qx "schemathesis, version $ST_VERSION"; then
    echo "== creating $VENV with schemathesis==$ST_VERSION"
    rm -rf "$VENV"
    if ! "$PY" -m venv "$VENV" >/dev/null 2>&1; then
        # Debian's python3 without ensurepip: python3-venv provides it.
        rm -rf "$VENV"
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        fi
        "$PY" -m venv "$VENV"
    fi
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$ST_VERSION"
fi
"$VENV/bin/schemathesis" --version

# ---------------------------------------------------------------------------------------
# 2. The debug binary (never built here when present: CI's `cargo test` built it).
if [ ! -x "$BIN" ]; then
    echo "== $BIN missing: cargo build --bin authd"
    cargo build --locked --bin authd
fi

# ---------------------------------------------------------------------------------------
# 3. A throwaway server on a free loopback port, killed on exit.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/authd-schemathesis.XXXXXX")
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

: >"$WORK/authd.out"
: >"$WORK/authd.err"
(
    cd "$WORK"
    exec env \
        AUTHD_SERVER__BIND=127.0.0.1:0 \
        AUTHD_RATE_LIMIT__ENABLED=false \
        AUTHD_PASSWORD__BCRYPT_COST=10 \
        AUTHD_COOKIE__SECURE=false \
        AUTHD_PAGES__ENABLED=true \
        AUTHD_WEBAUTHN__RP_ID=localhost \
        AUTHD_WEBAUTHN__ORIGINS=http://localhost:8080 \
        AUTHD_LOG__LEVEL='warn,authd::cli::serve=info' \
        "$BIN" serve >"$WORK/authd.out" 2>"$WORK/authd.err" </dev/null
) &
SERVER_PID=$!

PORT=
for _ in $(seq 300); do
    PORT=$(sed -n 's/.*listening.*127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$WORK/authd.out" | head -n1 || true)
    [ -n "$PORT" ] && break
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
    sleep 0.1
done
if [ -z "$PORT" ]; then
    echo "authd did not start; its output:" >&2
    cat "$WORK/authd.out" "$WORK/authd.err" >&2 || true
    exit 1
fi
BASE="http://127.0.0.1:$PORT"
echo "== authd listening on $BASE (pid $SERVER_PID, working dir $WORK)"

PASSWORD='Schemathesis-1'
json_get() { # json_get PYTHON-EXPRESSION-ON-d: reads JSON on stdin, prints the value
    "$VENV/bin/python" -c "import json, sys; d = json.load(sys.stdin); print($1)"
}
# `register|login EMAIL` prints the new session's access token.
register() {
    curl --silent --show-error --fail --max-time 30 -H 'Content-Type: application/json' \
        -d "{\"email\": \"$1\", \"password\": \"$PASSWORD\"}" "$BASE/api/auth/register" |
        json_get 'd["data"]["accessToken"]'
}
login() {
    curl --silent --show-error --fail --max-time 30 -H 'Content-Type: application/json' \
        -d "{\"email\": \"$1\", \"password\": \"$PASSWORD\"}" "$BASE/api/auth/login" |
        json_get 'd["data"]["accessToken"]'
}
# The token of every Bearer operation but the two below.
TOKEN=$(register schemathesis@example.com)
# logout-all revokes every session of its user, the presented one included: it gets a user
# of its own so that the other Bearer operations keep a live token for the whole run.
TOKEN_LOGOUT_ALL=$(register schemathesis-logout-all@example.com)
# DELETE /api/auth/sessions/{id}: a user with two sessions; the operation presents the first
# session's token and is offered the second session's id (besides generated ids, which are
# 404), so that it answers 200 once, then 404 (already revoked), with its token still live.
TOKEN_DELETE_SESSION=$(register schemathesis-delete-session@example.com)
login schemathesis-delete-session@example.com >/dev/null
SESSION_TO_DELETE=$(
    curl --silent --show-error --fail --max-time 30 \
        -H "Authorization: Bearer $TOKEN_DELETE_SESSION" "$BASE/api/auth/sessions" |
        json_get '[s["id"] for s in d["data"]["sessions"] if not s["current"]][0]'
)
# refresh and logout: besides generated tokens (401) and the ones the stateful phase follows
# from register/login/refresh responses (OpenAPI links), live refresh tokens of their own
# users, one set each (the order of operations within a phase is not the spec's): at refresh
# the first use of each rotates (200), a second one is reuse (401 TOKEN_REVOKED); logout
# answers 200 for each of them, every time.
refresh_tokens() { # refresh_tokens PREFIX N: a TOML list of N new users' refresh tokens
    local list= token i
    for i in $(seq "$2"); do
        token=$(
            curl --silent --show-error --fail --max-time 30 -H 'Content-Type: application/json' \
                -d "{\"email\": \"$1-$i@example.com\", \"password\": \"$PASSWORD\"}" \
                "$BASE/api/auth/register" | json_get 'd["data"]["refreshToken"]'
        )
        list="$list${list:+, }\"$token\""
    done
    echo "$list"
}
# The admin operations (/api/admin/*) run with an admin's token (created with the CLI on the
# server's database, as an operator would): generated ids name no user (404), so nothing is
# disabled or deleted, and the admin never names itself. Without a token (the auth checks)
# they answer 401, and with the user token above they would answer 403.
(cd "$WORK" && printf '%s' "$PASSWORD" | "$BIN" create-user --email schemathesis-admin@example.com \
    --role admin --password-stdin >/dev/null)
TOKEN_ADMIN=$(login schemathesis-admin@example.com)
REFRESH_TOKENS=$(refresh_tokens schemathesis-refresh 3)
LOGOUT_TOKENS=$(refresh_tokens schemathesis-logout 2)
# The users above keep their sessions for the whole run: the admin operations never act on
# them (the stateful phase could otherwise feed ids from the user listing to disable or
# delete; the hooks swap such an id for an unknown one).
PROTECTED_IDS=$(
    curl --silent --show-error --fail --max-time 30 -H "Authorization: Bearer $TOKEN_ADMIN" \
        "$BASE/api/admin/users?limit=200" |
        json_get '",".join(u["id"] for u in d["data"]["users"])'
)

# ---------------------------------------------------------------------------------------
# 4. Configuration and hooks for this run (see the comments inside).
cat >"$WORK/schemathesis.toml" <<TOML
# No crash cache: every run starts from the seed alone (and writes nothing outside \$WORK).
[cache]
enabled = false

[dictionaries.live-session]
values = ["$SESSION_TO_DELETE"]

[dictionaries.refresh-tokens]
values = [$REFRESH_TOKENS]

[dictionaries.logout-tokens]
values = [$LOGOUT_TOKENS]

# Operation headers override the -H header, for that operation only.
[[operations]]
include-operation-id = "logoutAll"
headers = { Authorization = "Bearer $TOKEN_LOGOUT_ALL" }

[[operations]]
include-operation-id = "deleteSession"
headers = { Authorization = "Bearer $TOKEN_DELETE_SESSION" }
parameters = { "path.id" = { dictionary = "live-session", probability = 0.5 } }

TOML
for op in adminListUsers adminGetUser adminDeleteUser adminDisableUser adminEnableUser \
    adminUnlockUser adminSetUserRole adminResetUserMfa adminListUserSessions \
    adminRevokeUserSessions adminMakeResetLink adminVerifyUserEmail; do
    cat >>"$WORK/schemathesis.toml" <<TOML
[[operations]]
include-operation-id = "$op"
headers = { Authorization = "Bearer $TOKEN_ADMIN" }

TOML
done
cat >>"$WORK/schemathesis.toml" <<TOML
[[operations]]
include-operation-id = "refresh"
parameters = { "body.refreshToken" = { dictionary = "refresh-tokens", probability = 0.3 } }

[[operations]]
include-operation-id = "logout"
parameters = { "body.refreshToken" = { dictionary = "logout-tokens", probability = 0.3 } }
TOML

cat >"$WORK/authd_hooks.py" <<'PY'
# authd's schemathesis hooks (written by .ci/schemathesis.sh for each run).
#
# One built-in check is replaced by a narrower version of itself; everything it skips is
# listed here, with the reason. One generation strategy (format: password).
import json
import os
import unicodedata
import uuid

import schemathesis
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance


# Unicode's White_Space property: what Rust's `str::trim` removes.
WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"


def _assigned(text):
    return all(unicodedata.category(c) != "Cn" for c in text)


def _no_control(text):
    return all(unicodedata.category(c) != "Cc" for c in text)


def _valid_password(raw):
    """docs/API.md's password rules (after NFKC: at least 8 characters, at most 72 bytes of
    UTF-8, a letter, a digit, a symbol, no control character). Conservative: True only when
    Rust's char classes surely agree (letters L*/Nl, digits Nd/Nl/No, symbols P*/Sm/Sc/Sk)."""
    if not isinstance(raw, str) or not _assigned(raw):
        return False
    pw = unicodedata.normalize("NFKC", raw)
    try:
        size = len(pw.encode("utf-8"))
    except UnicodeEncodeError:
        return False
    cats = [unicodedata.category(c) for c in pw]
    return (
        len(pw) >= 8
        and size <= 72
        and any(cat[0] == "L" or cat == "Nl" for cat in cats)
        and any(cat in ("Nd", "Nl", "No") for cat in cats)
        and any(cat[0] == "P" or cat in ("Sm", "Sc", "Sk") for cat in cats)
        and "Cc" not in cats
    )


def _valid_name(raw):
    """After NFKC and trimming: 1 to 100 characters, no control character."""
    if raw is None:
        return True
    if not isinstance(raw, str) or not _assigned(raw):
        return False
    name = unicodedata.normalize("NFKC", raw).strip(WHITE_SPACE)
    return 1 <= len(name) <= 100 and _no_control(name)


def _valid_register(body):
    return isinstance(body, dict) and _valid_password(body.get("password")) and _valid_name(body.get("name"))


def _valid_device_info(value):
    """At most 512 bytes of UTF-8; an object is measured as compact JSON. Python's and
    serde_json's number formatting differ by a few bytes, so objects near the limit count
    as unknown (skipped)."""
    if value is None:
        return True
    try:
        if isinstance(value, str):
            return len(value.encode("utf-8")) <= 512
        if isinstance(value, dict):
            compact = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
            return len(compact.encode("utf-8")) <= 448
    except (UnicodeEncodeError, ValueError):
        return False
    return False


def _valid_login(body):
    return isinstance(body, dict) and _valid_device_info(body.get("deviceInfo"))


def _valid_password_change(body):
    """newPassword meets the policy and differs from currentPassword after NFKC (else a correct
    400). With a generated currentPassword the answer is 401 INVALID_CREDENTIALS, which the
    check accepts."""
    if not isinstance(body, dict) or not _valid_password(body.get("newPassword")):
        return False
    current = body.get("currentPassword")
    if not isinstance(current, str) or not current:
        return False
    nfkc = lambda s: unicodedata.normalize("NFKC", s)
    return nfkc(current) != nfkc(body["newPassword"])


# Rules of the contract that JSON Schema cannot state: counted after NFKC normalisation,
# Unicode character classes, sizes in UTF-8 bytes or as serialised JSON. The spec states
# them in prose and describes everything it can (types, required fields, no unknown fields,
# lengths and patterns that are exact).
def _nonempty(body, *fields):
    return isinstance(body, dict) and all(
        isinstance(body.get(f), str) and body.get(f) for f in fields
    )


def _one_mfa_answer(body):
    """mfa/verify takes exactly one answer: a code, a recovery code, or a ceremony with its
    credential (a correct 400 otherwise)."""
    if not isinstance(body, dict):
        return False
    answers = [bool(body.get("code")), bool(body.get("recoveryCode")),
               bool(body.get("ceremonyId")) and isinstance(body.get("credential"), dict)]
    return sum(answers) == 1 and not (body.get("ceremonyId") and not answers[2])


def _needs_server_state(_body):
    """Accepted only with state the fuzzer cannot hold: a TOTP enrolment begun with the
    account's password, or a ceremony id the server issued (any other is a correct 400)."""
    return False


def _email_change_state(_body):
    """Email change (CONTRACT 10.5): the request answers 404 without a mail transport (this
    run has none) and needs a valid, free address and the account's password; a confirmation
    needs a token the server mailed; an admin's set-email needs an existing user id and a free,
    valid address. Generated bodies have none of these: their 400/404/409 are correct."""
    return False


def _mailed_token(_body):
    """Password reset and email verification (CONTRACT 10.3, 10.4): a confirmation needs a
    token the server made (mailed, or printed by `users reset-link`); the requests answer 404
    without a mail transport (this run has none). Generated bodies have no such token: their
    400 TOKEN_INVALID is correct."""
    return False


def _reset_link_ttl(body):
    """An admin's reset link: without `ttl`, or with one from 5m to 24h; a generated string
    is almost never a duration in that range, and its 400 is correct."""
    return not isinstance(body, dict) or "ttl" not in body


CONTRACT_RULES = {
    "POST /api/auth/register": _valid_register,
    "POST /api/auth/login": _valid_login,
    "POST /api/auth/password": _valid_password_change,
    "POST /api/auth/mfa/totp/enroll": lambda b: _nonempty(b, "currentPassword"),
    "POST /api/auth/mfa/totp/disable": lambda b: _nonempty(b, "currentPassword", "code"),
    "POST /api/auth/mfa/recovery-codes": lambda b: _nonempty(b, "currentPassword", "code"),
    "POST /api/auth/mfa/totp/confirm": _needs_server_state,
    "POST /api/auth/mfa/verify": _one_mfa_answer,
    "POST /api/auth/passkeys/register/options": lambda b: _nonempty(b, "currentPassword"),
    "POST /api/auth/passkeys/register/verify": _needs_server_state,
    "POST /api/auth/email": _email_change_state,
    "POST /api/auth/email/confirm": _email_change_state,
    "POST /api/admin/users/{id}/email": _email_change_state,
    "POST /api/auth/password-reset/request": _mailed_token,
    "POST /api/auth/password-reset/confirm": _mailed_token,
    "POST /api/auth/verify-email": _mailed_token,
    "POST /api/auth/verify-email/resend": _mailed_token,
    "POST /api/admin/users/{id}/reset-link": _reset_link_ttl,
}


def _issued_cursor(query):
    """A `cursor` is opaque: only a `nextCursor` the server issued is one (any other string is
    a correct 400), and generated strings are not issued cursors."""
    return not (query or {}).get("cursor")


# Query parameters the contract constrains beyond their schema.
def _issued_since(query):
    """The feed's `since` is opaque too: only a `cursor` the feed issued is one."""
    return "since" not in (query or {})


QUERY_RULES = {
    "GET /api/admin/users": _issued_cursor,
    "GET /.well-known/revoked-sessions": _issued_since,
}


@schemathesis.check
def positive_data_acceptance_within_contract(ctx, response, case):
    """`positive_data_acceptance` (ST202) for the requests that the contract accepts.

    The built-in check expects every schema-valid request to be accepted. For register and
    login the contract has rules that JSON Schema cannot express (see CONTRACT_RULES), so a
    schema-valid body that breaks one of them gets a (correct) 400; such bodies are skipped,
    every other positive request is still held to the built-in check.
    """
    rule = CONTRACT_RULES.get(case.operation.label)
    if rule is not None and not rule(case.body):
        return None
    query_rule = QUERY_RULES.get(case.operation.label)
    if query_rule is not None and not query_rule(case.query):
        return None
    return positive_data_acceptance(ctx, response, case)


# The script's own users (ids in AUTHD_PROTECTED_IDS) keep their sessions: an admin
# operation that would change one of them is sent to an unknown id instead (404).
PROTECTED_IDS = set(filter(None, os.environ.get("AUTHD_PROTECTED_IDS", "").split(",")))


@schemathesis.hook
def before_call(ctx, case, kwargs):
    label = case.operation.label
    if not label.startswith(("POST /api/admin/", "DELETE /api/admin/")):
        return
    params = case.path_parameters or {}
    if str(params.get("id")) in PROTECTED_IDS:
        params["id"] = str(uuid.uuid4())
        case.path_parameters = params


# `format: password` (OpenAPI's registered format: a secret). Half of the generated passwords
# satisfy the contract's rules (so that registrations succeed and the stateful phase can
# follow register -> login -> refresh -> logout), half are any non-empty text.
_ANY_CHAR = st.characters(exclude_categories=("Cc", "Cs", "Co", "Cn"))
_CONTRACT_PASSWORD = st.tuples(
    st.characters(categories=("Lu", "Ll", "Lo")),
    st.characters(categories=("Nd",)),
    st.characters(categories=("Po", "Pd", "Sm", "Sc")),
    st.lists(_ANY_CHAR, min_size=5, max_size=30),
).flatmap(lambda t: st.permutations([t[0], t[1], t[2], *t[3]])).map("".join)
schemathesis.openapi.format("password", st.one_of(_CONTRACT_PASSWORD, st.text(min_size=1)))
PY

echo "== schemathesis run $SPEC against $BASE (seed $SEED, at most $MAX_EXAMPLES examples per operation)"
set +e
(
    # From $WORK, so that nothing (hypothesis' data, reports) lands in the work tree.
    cd "$WORK"
    AUTHD_PROTECTED_IDS="$PROTECTED_IDS" SCHEMATHESIS_HOOKS="$WORK/authd_hooks.py" \
        exec "$VENV/bin/schemathesis" --config-file "$WORK/schemathesis.toml" run "$SPEC" \
        --url "$BASE" \
        -H "Authorization: Bearer $TOKEN" \
        --checks all \
        --exclude-checks positive_data_acceptance \
        --max-examples "$MAX_EXAMPLES" \
        --seed "$SEED" \
        --workers 1 \
        --generation-database none \
        --request-timeout 10 \
        --no-color
) 2>&1 | tee "$WORK/schemathesis.log"
rc=${PIPESTATUS[0]}
set -e

# One plain closing line from schemathesis' "Test cases:" line ("N generated, N passed" or
# "N generated, N found M unique failures"): test cases, failing ones counted once.
counts=$(sed -n 's/^ *\([0-9][0-9]*\) generated, \(.*\)$/\1 \2/p' "$WORK/schemathesis.log" | tail -n1)
generated=${counts%% *}
failing=$(sed -n 's/.* \([0-9][0-9]*\) found [0-9][0-9]* unique failure.*/\1/p' <<<"$counts")
passed=$(sed -n 's/.* \([0-9][0-9]*\) passed.*/\1/p' <<<"$counts")
if [ "$rc" -eq 0 ] && [ -n "$passed" ]; then
    echo "schemathesis: $passed passed, 0 failed"
elif [ "$rc" -ne 0 ]; then
    failing=${failing:-1}
    [ "$failing" -gt 0 ] || failing=1
    [ -n "$generated" ] && echo "schemathesis: $((generated - failing)) passed, $failing failed"
    echo "== schemathesis found problems (exit $rc); the end of authd's log:" >&2
    tail -n 20 "$WORK/authd.out" "$WORK/authd.err" >&2 || true
fi
exit "$rc"
