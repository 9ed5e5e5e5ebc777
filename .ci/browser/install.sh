#!/usr/bin/env bash
# Installs what the browser tests need, from Debian: `chromium`, `chromium-driver` (chromedriver)
# and `python3-selenium` (for /usr/bin/python3). Idempotent: installs only what is missing, and
# nothing at all when everything is there. Needs root or sudo for apt-get.
#
#   bash .ci/browser/install.sh
set -euo pipefail

missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
/usr/bin/python3 -c 'import selenium' 2>/dev/null || missing+=(python3-selenium)
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null; then
    SUDO=(sudo)
else
    echo "install.sh: ${missing[*]} missing, and neither root nor sudo to install them" >&2
    exit 1
fi
command -v apt-get >/dev/null || {
    echo "install.sh: ${missing[*]} missing and no apt-get (Debian or Ubuntu needed)" >&2
    exit 1
}

echo "== installing ${missing[*]} (apt-get)"
# Another apt run (another CI job on the machine) holds the lock for a while: wait for it.
apt_get=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -qq)
"${apt_get[@]}" update
"${apt_get[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null

command -v chromium >/dev/null && command -v chromedriver >/dev/null &&
    /usr/bin/python3 -c 'import selenium' || {
    echo "install.sh: ${missing[*]} still missing after apt-get" >&2
    exit 1
}
echo "== $(chromium --version 2>/dev/null), $(chromedriver --version 2>/dev/null | cut -d' ' -f1-2), selenium $(/usr/bin/python3 -c 'import selenium; print(selenium.__version__)')"
