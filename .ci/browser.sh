#!/usr/bin/env bash
# Real-browser tests: every .ci/browser/*_test.py in headless Chromium (Debian's chromium and
# chromium-driver, driven by python3-selenium; installed by .ci/browser/install.sh when missing),
# against the debug binary target/debug/authd (built when missing). Each test starts its own
# authd on a free loopback port with a temporary SQLite database and the `file` mail transport,
# and reads the mailed links from the .eml files.
#
#   bash .ci/browser.sh            authd's real reset, verification and email-change routes
#   bash .ci/browser.sh --stub     the landing pages against .ci/browser/stub_api.py instead
#   bash .ci/browser.sh NAME...    only .ci/browser/NAME_test.py (e.g. webauthn_smoke)
#
# Exits non-zero when a test fails. A few seconds per test.
set -euo pipefail
cd "$(dirname "$0")/.."

stub=0
names=()
for arg in "$@"; do
    case "$arg" in
        --stub) stub=1 ;;
        -*) echo "usage: $0 [--stub] [NAME...]" >&2; exit 2 ;;
        *) names+=("$arg") ;;
    esac
done

bash .ci/browser/install.sh

if [ ! -x target/debug/authd ]; then
    echo "== target/debug/authd missing: cargo build --bin authd"
    cargo build --locked --bin authd
fi

if [ "${#names[@]}" -eq 0 ]; then
    tests=(.ci/browser/*_test.py)
else
    tests=()
    for n in "${names[@]}"; do tests+=(".ci/browser/${n}_test.py"); done
fi

failed=()
for t in "${tests[@]}"; do
    echo "== $t"
    # Debian's python3 (python3-selenium lives there), not a pyenv or venv one on PATH.
    if ! PYTHONDONTWRITEBYTECODE=1 AUTHD_BROWSER_STUB="$stub" /usr/bin/python3 "$t"; then
        failed+=("$t")
    fi
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "browser tests failed: ${failed[*]}" >&2
    exit 1
fi
echo "browser tests: ${#tests[@]} files passed"
