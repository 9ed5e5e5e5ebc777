#!/usr/bin/env bash
# Builds the authd Debian package and tests it without installing it:
#
#   bash packaging/test-deb.sh
#
# 1. packaging/build-deb.sh (release build, man pages, completions, cargo deb);
# 2. the package's metadata and contents (dpkg-deb --info / --contents): every expected path,
#    modes, the conffile, the maintainer scripts, and no authd-bench; the version is the
#    binary's; a man page for every command the binary has; the documentation under
#    /usr/share/doc/authd, laid out so that every relative link in it resolves;
# 3. systemd-analyze verify of the units AS PACKAGED (packaging/verify-units.sh pointed at the
#    extracted tree);
# 4. the EXTRACTED binary with the EXTRACTED /etc/authd/authd.toml against a temp state
#    directory: migrate, create-user, serve (port 0), a login (200), healthcheck, SIGTERM
#    (exit 0).
# Exits non-zero on the first failure; removes everything it created (trap).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$(pwd)"
started=$(date +%s)

log() { printf '== %s\n' "$*"; }
fail() {
    printf 'test-deb.sh: FAIL: %s\n' "$*" >&2
    exit 1
}

tmp="$(mktemp -d "${TMPDIR:-/tmp}/authd-test-deb.XXXXXX")"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

command -v curl >/dev/null 2>&1 || {
    log "installing curl"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl >/dev/null
}

# --- 1. build ------------------------------------------------------------------------------
log "building the package (packaging/build-deb.sh)"
deb="$(bash packaging/build-deb.sh | tail -n 1)"
[ -f "$deb" ] || fail "build-deb.sh printed '$deb', which is not a file"
log "package: $deb ($(du -h "$deb" | cut -f1))"

# --- 2. metadata and contents ----------------------------------------------------------------
log "dpkg-deb --info"
info="$(dpkg-deb --info "$deb")"
field() { dpkg-deb --field "$deb" "$1"; }
[ "$(field Package)" = authd ] || fail "Package is '$(field Package)', not authd"
depends="$(field Depends)"
grep -qE '(^|, )adduser($|[ ,])' <<<"$depends" || fail "Depends lacks adduser: $depends"
grep -qE '(^|, )libc6' <<<"$depends" || fail "Depends lacks libc6 (\$auto): $depends"
# bcrypt is libxcrypt's crypt_rn (src/crypto/bcrypt.rs): $auto must have found libcrypt.so.1.
grep -qE '(^|, )libcrypt1' <<<"$depends" || fail "Depends lacks libcrypt1 (\$auto): $depends"
# webauthn-rs links the system's OpenSSL.
grep -qE '(^|, )libssl3' <<<"$depends" || fail "Depends lacks libssl3 (\$auto, for webauthn-rs): $depends"
for f in conffiles postinst prerm postrm; do
    grep -qE "^ +[0-9]+ bytes, +[0-9]+ lines .* $f( |$)" <<<"$info" || fail "control member $f missing"
done
conffiles="$(dpkg-deb --info "$deb" conffiles)"
[ "$conffiles" = /etc/authd/authd.toml ] || fail "conffiles is '$conffiles', expected /etc/authd/authd.toml"
postinst="$(dpkg-deb --info "$deb" postinst)"
postrm="$(dpkg-deb --info "$deb" postrm)"
# The needles are literal script text, $-signs included.
# shellcheck disable=SC2016
for needle in 'adduser --system --group --quiet --home "$AUTHD_HOME" --no-create-home' \
    'chown "$AUTHD_USER:$AUTHD_USER" "$AUTHD_HOME"' 'chmod 0700 "$AUTHD_HOME"' \
    'chown "root:$AUTHD_USER" "$AUTHD_CONF"' \
    'deb-systemd-helper enable authd.service' 'deb-systemd-helper enable authd-cleanup.timer'; do
    grep -qF -- "$needle" <<<"$postinst" || fail "postinst lacks: $needle"
done
# Enabled, never started on a fresh install (only try-restart on upgrade).
# shellcheck disable=SC2016 # a literal $_dh_action in the script
if grep -E 'deb-systemd-invoke (start|\$_dh_action)' <<<"$postinst"; then
    fail "postinst starts a unit on install"
fi
grep -qF 'deb-systemd-helper enable authd-cleanup.service' <<<"$postinst" &&
    fail "postinst enables authd-cleanup.service (the timer starts it)"
# Off by default: the backup units are enabled again only where the admin had enabled them
# (an `enable` inside `was-enabled`, kept across upgrades), never on a fresh install.
awk '/was-enabled authd-backup/{guard=NR} /deb-systemd-helper enable authd-backup\.(service|timer)/{ if (NR - guard > 2) bad=1 } END{exit !bad}' <<<"$postinst" &&
    fail "postinst enables the backup timer (it is off by default)"
grep -qF 'rm -rf /var/lib/authd' <<<"$postrm" || fail "postrm does not delete /var/lib/authd on purge"
awk '/"\$1" = "purge"/{p=1} p && /rm -rf \/var\/lib\/authd/{found=1} END{exit !found}' <<<"$postrm" ||
    fail "postrm deletes /var/lib/authd outside of purge"
grep -qE 'deluser|userdel' <<<"$postrm" && fail "postrm removes the authd user"
echo "   ok: Package authd $(field Version) $(field Architecture); Depends: $depends"
echo "   ok: conffiles: $conffiles; postinst creates the user, enables authd.service and the timer without starting them; postrm purge deletes /var/lib/authd"

log "dpkg-deb --contents"
dpkg-deb --contents "$deb" >"$tmp/contents"
# "<mode> <owner/group> <path>" for every regular file.
awk '$1 !~ /^d/ {sub(/^\./, "", $6); print $1, $2, $6}' "$tmp/contents" | sort -k3 >"$tmp/files"
expect() { # expect MODE PATH
    local got
    got="$(awk -v p="$2" '$3 == p {print $1}' "$tmp/files")"
    [ -n "$got" ] || fail "package lacks $2"
    [ "$got" = "$1" ] || fail "$2 has mode $got, expected $1"
}
expect -rwxr-xr-x /usr/bin/authd
expect -rw-r----- /etc/authd/authd.toml
for u in authd.service authd-cleanup.service authd-cleanup.timer authd-backup.service authd-backup.timer; do
    expect -rw-r--r-- "/usr/lib/systemd/system/$u"
done
# One man page per command, nested ones included, exactly as the packaged binary writes them.
root="$tmp/root"
dpkg-deb -x "$deb" "$root"
"$root/usr/bin/authd" man-pages "$tmp/man-expected" >/dev/null
man_pages=()
while IFS= read -r page; do man_pages+=("$page"); done < <(ls "$tmp/man-expected" | sed 's/\.1$//' | sort)
[ "${#man_pages[@]}" -ge 20 ] || fail "authd man-pages wrote only ${#man_pages[*]} pages"
for m in "${man_pages[@]}"; do
    expect -rw-r--r-- "/usr/share/man/man1/$m.1.gz"
done
packaged_pages="$(awk '$3 ~ /^\/usr\/share\/man\/man1\// {print $3}' "$tmp/files" | sed 's|.*/||; s/\.1\.gz$//' | sort)"
[ "$packaged_pages" = "$(printf '%s\n' "${man_pages[@]}")" ] ||
    fail "the packaged man pages differ from the binary's: $(diff <(echo "$packaged_pages") <(printf '%s\n' "${man_pages[@]}") | tr '\n' ' ')"
expect -rw-r--r-- /usr/share/bash-completion/completions/authd
expect -rw-r--r-- /usr/share/zsh/vendor-completions/_authd
expect -rw-r--r-- /usr/share/fish/vendor_completions.d/authd.fish
# The documentation, as in the repository (README.md's links are relative to it).
docs=(README.md CHANGELOG.md LICENSE-MIT LICENSE-APACHE copyright .env.example
    config/default.toml docs/openapi.yaml
    examples/README.md examples/verify_service.rs examples/node/package.json
    examples/node/package-lock.json examples/node/verify-service.mjs
    examples/python/requirements.txt examples/python/verify_service.py)
for f in docs/*.md; do docs+=("$f"); done
for f in "${docs[@]}"; do
    expect -rw-r--r-- "/usr/share/doc/authd/$f"
    if [ "$f" != copyright ]; then
        cmp -s "$root/usr/share/doc/authd/$f" "$f" || fail "/usr/share/doc/authd/$f differs from $f"
    fi
done
grep -q 'MPL-2.0' "$root/usr/share/doc/authd/copyright" ||
    fail "/usr/share/doc/authd/copyright does not note webauthn-rs's MPL-2.0"
if grep -q 'authd-bench' "$tmp/contents"; then
    fail "the package ships authd-bench: $(grep authd-bench "$tmp/contents")"
fi
if awk '$2 != "0/0"' "$tmp/files" | grep -q .; then
    fail "files not owned by root in the package: $(awk '$2 != "0/0"' "$tmp/files")"
fi
unexpected="$(awk '{print $3}' "$tmp/files" | grep -vxE '/usr/bin/authd|/etc/authd/authd\.toml|/usr/lib/systemd/system/authd(-cleanup|-backup)?\.(service|timer)|/usr/share/man/man1/authd[a-z-]*\.1\.gz|/usr/share/bash-completion/completions/authd|/usr/share/zsh/vendor-completions/_authd|/usr/share/fish/vendor_completions\.d/authd\.fish|/usr/share/doc/authd/.*' || true)"
unexpected_docs="$(awk '$3 ~ /^\/usr\/share\/doc\/authd\// {sub(/^\/usr\/share\/doc\/authd\//, "", $3); print $3}' "$tmp/files" | grep -vxF -f <(printf '%s\n' "${docs[@]}") || true)"
[ -z "$unexpected_docs" ] || fail "unexpected files in /usr/share/doc/authd: $unexpected_docs"
[ -z "$unexpected" ] || fail "unexpected files in the package: $unexpected"
echo "   ok: $(wc -l <"$tmp/files") files, all expected, no authd-bench"

log "version: the package's is the binary's"
bin_version="$("$root/usr/bin/authd" --version | awk '{print $2}')"
[ "$(field Version)" = "$bin_version-1" ] ||
    fail "the package is version $(field Version), the binary says $bin_version"
grep -q "^## \[$bin_version\]" "$root/usr/share/doc/authd/CHANGELOG.md" ||
    fail "CHANGELOG.md has no entry for $bin_version"
echo "   ok: $bin_version (package $(field Version))"

log "the installed documentation's links (packaging/check-doc-links.sh)"
bash packaging/check-doc-links.sh "$root/usr/share/doc/authd"

# --- 3. the units as packaged ------------------------------------------------------------------
log "the packaged units (packaging/verify-units.sh on the extracted tree)"
# Only the packaged man pages may satisfy Documentation=.
AUTHD_BIN="$root/usr/bin/authd" UNITS_DIR="$root/usr/lib/systemd/system" \
    MAN_DIR="$root/usr/share/man" bash packaging/verify-units.sh | sed 's/^/   /'
zcat "$root/usr/share/man/man1/authd.1.gz" | grep -q '^\.TH' || fail "authd.1.gz is not a man page"
grep -q 'complete' "$root/usr/share/bash-completion/completions/authd" || fail "bash completion is empty"
cmp -s "$root/etc/authd/authd.toml" packaging/authd.toml || fail "/etc/authd/authd.toml differs from packaging/authd.toml"

# --- 4. run the extracted binary with the extracted config -------------------------------------
log "running the extracted binary with the extracted /etc/authd/authd.toml"
bin="$root/usr/bin/authd"
conf="$root/etc/authd/authd.toml"
state="$tmp/state"
work="$tmp/work" # the working directory: no config/ or .env in it
mkdir -p "$state" "$work"
chmod 0700 "$state"
# Only what this test sets: no AUTHD_* from the caller's environment.
while IFS= read -r var; do unset "$var"; done < <(compgen -e | grep '^AUTHD_' || true)
export AUTHD_DATABASE__URL="sqlite://$state/authd.db"
export AUTHD_JWT__KEY_DIR="$state/keys"
export AUTHD_SERVER__BIND=127.0.0.1:0
export AUTHD_COOKIE__SECURE=false
cd "$work"

"$bin" --version | grep -q '^authd ' || fail "authd --version"
"$bin" --config "$conf" check-config >"$tmp/effective.toml" 2>"$tmp/check.err" ||
    fail "check-config: $(cat "$tmp/check.err")"
grep -qF "url = \"sqlite://$state/authd.db\"" "$tmp/effective.toml" ||
    fail "check-config does not show the overridden database.url"
echo "   check-config: ok"

"$bin" --config "$conf" migrate >"$tmp/migrate.out" || fail "migrate failed"
grep -q 'applied' "$tmp/migrate.out" || fail "migrate printed: $(cat "$tmp/migrate.out")"
echo "   migrate: $(tr '\n' ' ' <"$tmp/migrate.out")"

email=admin@example.com
password='Correct-horse-9!'
user_id="$(printf '%s\n' "$password" |
    "$bin" --config "$conf" create-user --email "$email" --role admin --password-stdin)" ||
    fail "create-user failed"
[[ "$user_id" =~ ^[0-9a-f-]{36}$ ]] || fail "create-user printed '$user_id', not a user id"
echo "   create-user: $user_id"

"$bin" --config "$conf" serve >"$tmp/serve.out" 2>"$tmp/serve.err" &
server_pid=$!
port=""
for _ in $(seq 1 300); do
    port="$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$tmp/serve.out" | head -n 1)"
    [ -n "$port" ] && break
    kill -0 "$server_pid" 2>/dev/null || fail "serve exited early: $(cat "$tmp/serve.out" "$tmp/serve.err")"
    sleep 0.1
done
[ -n "$port" ] || fail "serve did not log 'listening' within 30s: $(cat "$tmp/serve.out" "$tmp/serve.err")"
echo "   serve: listening on 127.0.0.1:$port (pid $server_pid)"

status="$(curl -sS -o "$tmp/login.json" -w '%{http_code}' --max-time 10 \
    -X POST "http://127.0.0.1:$port/api/auth/login" -H 'content-type: application/json' \
    -d "{\"email\":\"$email\",\"password\":\"$password\"}")" || fail "login request failed"
[ "$status" = 200 ] || fail "login answered $status: $(cat "$tmp/login.json")"
grep -q '"accessToken"' "$tmp/login.json" || fail "login response has no accessToken"
echo "   login: 200 with a token pair"

"$bin" --config "$conf" healthcheck --addr "127.0.0.1:$port" >"$tmp/health.out" ||
    fail "healthcheck --addr 127.0.0.1:$port failed"
echo "   healthcheck: $(cat "$tmp/health.out")"

kill -TERM "$server_pid"
rc=""
for _ in $(seq 1 450); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        rc=0
        wait "$server_pid" || rc=$?
        break
    fi
    sleep 0.1
done
[ -n "$rc" ] || fail "serve still running 45s after SIGTERM"
server_pid=""
[ "$rc" = 0 ] || fail "serve exited $rc after SIGTERM: $(tail -n 5 "$tmp/serve.out" "$tmp/serve.err")"
echo "   SIGTERM: exit 0 ($(grep -o 'stopped[^"]*' "$tmp/serve.out" | tail -n 1))"

# State files are private (the unit's UMask=0077 adds to this; authd sets them itself). The
# signing keys live in the database: nothing is written to the old key directory.
mode="$(stat -c %a "$state/authd.db")"
[ "$mode" = 600 ] || fail "$state/authd.db has mode $mode, expected 600"
[ ! -e "$state/keys" ] || fail "$state/keys was created; keys belong in the database"
echo "   state: authd.db is 0600 (signing keys inside it), no keys/ directory"
cd "$repo"

# --- summary ----------------------------------------------------------------------------------
log "package contents ($deb)"
awk '{printf "   %s %s\n", $1, $3}' "$tmp/files"
log "test-deb.sh: OK in $(($(date +%s) - started))s"
