#!/usr/bin/env bash
# Builds the authd Debian package with cargo-deb and prints the path of the .deb (last line
# of stdout; progress goes to stderr).
#
#   bash packaging/build-deb.sh
#
# Steps: install cargo-deb if missing, build the release binary (only `authd`; other binary
# targets such as authd-bench are never packaged), generate the man pages and shell
# completions with that fresh binary into target/packaging/ (git-ignored), then
# `cargo deb --no-build`. The packaging itself is [package.metadata.deb] in Cargo.toml.
# Idempotent; runs from any directory.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '== %s\n' "$*" >&2; }

# Tools: dpkg-deb comes with dpkg (every Debian system); cargo-deb from crates.io.
if ! command -v dpkg-deb >/dev/null 2>&1; then
    echo "build-deb.sh: dpkg-deb not found; this script needs a Debian-based system" >&2
    exit 1
fi
if ! cargo deb --version >/dev/null 2>&1; then
    log "installing cargo-deb (cargo install cargo-deb --locked)"
    cargo install cargo-deb --locked >&2
fi
# cargo-deb strips the binary with `strip` and computes $auto dependencies with
# dpkg-shlibdeps when they exist; both come with a Rust toolchain's usual build tools
# (binutils, dpkg-dev) and cargo-deb falls back gracefully without them.

target_dir="${CARGO_TARGET_DIR:-target}"
bin="$target_dir/release/authd"
gen="target/packaging"

log "cargo build --release --locked --bin authd"
cargo build --release --locked --bin authd >&2

log "generating man pages and completions into $gen/"
rm -rf "$gen/man" "$gen/completions"
mkdir -p "$gen/man" "$gen/completions"
"$bin" man-pages "$gen/man" >/dev/null
# -n: no name or timestamp in the gzip header, so the package is reproducible.
gzip -9nf "$gen"/man/*.1
"$bin" completions bash >"$gen/completions/authd.bash"
"$bin" completions zsh >"$gen/completions/_authd"
"$bin" completions fish >"$gen/completions/authd.fish"
for f in "$gen/man/authd.1.gz" "$gen/completions/authd.bash" "$gen/completions/_authd" \
    "$gen/completions/authd.fish"; do
    if [ ! -s "$f" ]; then
        echo "build-deb.sh: $f was not generated" >&2
        exit 1
    fi
done

log "cargo deb --no-build"
mkdir -p "$target_dir/debian"
deb="$(cargo deb --no-build --output "$target_dir/debian" | tail -n 1)"
if [ ! -f "$deb" ]; then
    echo "build-deb.sh: cargo deb did not produce a .deb (got: $deb)" >&2
    exit 1
fi
log "built $deb"
echo "$deb"
