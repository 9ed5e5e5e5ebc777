#!/usr/bin/env bash
# Checks that every relative link of every Markdown file under DIR leads to a file under DIR:
#
#   bash packaging/check-doc-links.sh DIR
#
# test-deb.sh runs it on the extracted package's /usr/share/doc/authd, where README.md's links
# (docs/API.md, examples/README.md, config/default.toml, ...) must resolve as they do in the
# repository. Links with a scheme (https:, mailto:) and pure anchors (#...) are not files;
# an anchor after a file name is dropped. Prints every broken link; exits 1 if there is one.
set -euo pipefail

dir="${1:?usage: check-doc-links.sh DIR}"
[ -d "$dir" ] || { echo "check-doc-links.sh: $dir is not a directory" >&2; exit 1; }
dir="$(cd "$dir" && pwd -P)"

broken=0
checked=0
while IFS= read -r -d '' md; do
    base="$(dirname "$md")"
    # `](target)` or `](target "title")`: the target up to the first space or ')'.
    while IFS= read -r target; do
        case "$target" in
        '' | '#'* | *://* | mailto:*) continue ;;
        esac
        path="${target%%#*}"
        checked=$((checked + 1))
        resolved="$(realpath -m "$base/$path")"
        case "$resolved" in
        "$dir" | "$dir"/*) ;;
        *)
            echo "   ${md#"$dir"/}: $target leaves $dir" >&2
            broken=1
            continue
            ;;
        esac
        if [ ! -e "$resolved" ]; then
            echo "   ${md#"$dir"/}: $target does not exist" >&2
            broken=1
        fi
    done < <(grep -o '](\([^) ]*\)' "$md" | sed 's/^](//' || true)
done < <(find "$dir" -name '*.md' -print0)

if [ "$broken" != 0 ]; then
    echo "check-doc-links.sh: broken links under $dir" >&2
    exit 1
fi
echo "   ok: $checked relative links under $dir, all resolve"
