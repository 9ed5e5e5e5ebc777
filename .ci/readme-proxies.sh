#!/usr/bin/env bash
# The README's reverse-proxy examples (nginx, HAProxy, Caddy), run as written in front of a
# fresh authd, checking that each forwards the API and refuses /metrics in every spelling that
# authd itself would answer:
#
#   bash .ci/readme-proxies.sh          (from anywhere; .ci/run runs it)
#
# Each ```nginx, ```haproxy and ```caddyfile block of README.md is taken as written, with only
# what a test machine cannot have replaced: the public listener (443 with a certificate)
# becomes a free loopback port without TLS, and the upstream 127.0.0.1:8080 (or 10.0.0.11:8080)
# becomes the test server's port. Installs nginx-light, haproxy and caddy with apt when they
# are missing (as root). Everything runs under a temp directory, on 127.0.0.1, and is stopped
# on exit (by process id).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$(pwd)"
readme="$repo/README.md"

log() { printf '== %s\n' "$*"; }
fail() {
    printf 'readme-proxies.sh: FAIL: %s\n' "$*" >&2
    exit 1
}

missing=()
for tool in nginx:nginx-light haproxy:haproxy caddy:caddy curl:curl python3:python3; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${tool%%:*}" ] || missing+=("${tool#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    [ "$(id -u)" = 0 ] || fail "needs: ${missing[*]} (apt-get install ${missing[*]})"
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin"

if [ -z "${AUTHD_BIN:-}" ]; then
    cargo build --locked --bin authd
    AUTHD_BIN="${CARGO_TARGET_DIR:-$repo/target}/debug/authd"
fi
case "$AUTHD_BIN" in /*) ;; *) AUTHD_BIN="$repo/$AUTHD_BIN" ;; esac

tmp="$(mktemp -d "${TMPDIR:-/tmp}/authd-proxies.XXXXXX")"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
cd "$tmp"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# block LANG: the first ```LANG block of the README.
block() { awk -v lang="$1" '$0 == "```" lang {p = 1; next} p && /^```/ {exit} p' "$readme"; }
wait_for() { # URL
    for _ in $(seq 1 100); do
        curl -fs -o /dev/null "$1" && return 0
        sleep 0.1
    done
    return 1
}

while IFS= read -r var; do unset "$var"; done < <(compgen -e | grep '^AUTHD_' | grep -vx AUTHD_BIN || true)
AUTHD_SERVER__BIND=127.0.0.1:0 "$AUTHD_BIN" serve >serve.log 2>&1 &
pids+=($!)
up=""
for _ in $(seq 1 300); do
    up="$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' serve.log | head -n 1)"
    [ -n "$up" ] && break
    sleep 0.1
done
[ -n "$up" ] || fail "authd did not start: $(cat serve.log)"
log "authd on 127.0.0.1:$up"

# nginx: the first server block, its TLS listener replaced by a loopback one.
nginx_port="$(free_port)"
block nginx | awk '/^server \{/ {n++} n == 1' |
    sed -e '/listen \[::\]/d; /ssl_certificate/d' \
        -e "s/listen 443 ssl;/listen 127.0.0.1:$nginx_port;/; s/127\.0\.0\.1:8080/127.0.0.1:$up/" >nginx-site.conf
grep -q "127.0.0.1:$nginx_port" nginx-site.conf || fail "the README's nginx example has no 'listen 443 ssl;' server"
cat >nginx.conf <<EOF
daemon off;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log;
events {}
http {
    access_log off;
    client_body_temp_path $tmp; proxy_temp_path $tmp; fastcgi_temp_path $tmp;
    uwsgi_temp_path $tmp; scgi_temp_path $tmp;
    include $tmp/nginx-site.conf;
}
EOF
nginx -t -q -c "$tmp/nginx.conf" -p "$tmp" || fail "nginx -t refuses the README's example"
nginx -c "$tmp/nginx.conf" -p "$tmp" &
pids+=($!)

# HAProxy: the whole haproxy.cfg, its TLS bind and the two servers replaced by the test server.
haproxy_port="$(free_port)"
block haproxy | sed -e "s|bind :443 ssl crt .*|bind 127.0.0.1:$haproxy_port|" \
    -e "s|server a 10\.0\.0\.11:8080 check|server a 127.0.0.1:$up check|" -e '/server b /d' >haproxy.cfg
grep -q "127.0.0.1:$haproxy_port" haproxy.cfg || fail "the README's HAProxy example has no 'bind :443 ssl crt' line"
haproxy -q -c -f haproxy.cfg || fail "haproxy -c refuses the README's example"
haproxy -f haproxy.cfg >haproxy.log 2>&1 &
pids+=($!)

# Caddy: the site block, served over plain HTTP on a loopback port (no certificate).
caddy_port="$(free_port)"
{
    printf '{\n\tadmin 127.0.0.1:%s\n\tauto_https off\n}\n' "$(free_port)"
    block caddyfile | sed -e "s|^auth\.example\.com {|http://127.0.0.1:$caddy_port {|" \
        -e "s|127\.0\.0\.1:8080|127.0.0.1:$up|"
} >Caddyfile
grep -q "127.0.0.1:$caddy_port" Caddyfile || fail "the README's Caddyfile has no 'auth.example.com {' site"
HOME="$tmp" XDG_DATA_HOME="$tmp" XDG_CONFIG_HOME="$tmp" \
    caddy validate --config Caddyfile --adapter caddyfile >caddy-validate.log 2>&1 ||
    fail "caddy validate refuses the README's example: $(tail -n 3 caddy-validate.log)"
HOME="$tmp" XDG_DATA_HOME="$tmp" XDG_CONFIG_HOME="$tmp" \
    caddy run --config Caddyfile --adapter caddyfile >caddy.log 2>&1 &
pids+=($!)

# Every spelling of /metrics that authd answers 200 must be refused through each proxy.
spellings=(/metrics /metrics/ '/metrics?x=1' //metrics /%6detrics /METRICS /metrics%2F /./metrics)
status() { curl -s --path-as-is -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1$2"; }
served=()
for p in "${spellings[@]}"; do
    [ "$(status "$up" "$p")" = 200 ] && served+=("$p")
done
[ "${#served[@]}" -ge 2 ] || fail "authd answers too few /metrics spellings (${served[*]}): is this check stale?"
log "authd itself serves /metrics as: ${served[*]}"
for proxy in "nginx $nginx_port" "haproxy $haproxy_port" "caddy $caddy_port"; do
    set -- $proxy
    wait_for "http://127.0.0.1:$2/healthz" || fail "$1 does not forward /healthz"
    for p in "${spellings[@]}"; do
        got="$(status "$2" "$p")"
        [ "$got" != 200 ] || fail "$1 forwards $p (200): the README's $1 example exposes /metrics"
    done
    echo "   $1: /healthz 200, every /metrics spelling refused"
done
log "readme-proxies.sh: OK (nginx, HAProxy, Caddy)"
