#!/usr/bin/env bash
# Renders a run's HTML summary to a PNG with headless Chromium, so a person can look at it
# (issue 13). By default: runs the demo payout job against the embedded simulator (fake money,
# no network) into a temporary reports directory and renders its summary to
# docs/demo-summary.png.
#
#   scripts/render-summary.sh                      # demo run → docs/demo-summary.png
#   scripts/render-summary.sh PAGE.html OUT.png    # any summary page already written
#
# Needs chromium (Debian: `apt-get install -y chromium`); CI does not. WIDTH and HEIGHT (pixels)
# set the window; the page is self-contained, so Chromium loads nothing from the network.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
width="${WIDTH:-1200}"
height="${HEIGHT:-1950}"

browser=""
for b in chromium chromium-browser google-chrome; do
    if command -v "$b" >/dev/null 2>&1; then
        browser="$b"
        break
    fi
done
if [ -z "$browser" ]; then
    echo "render-summary: no chromium found; install it (apt-get install -y chromium) or open the .html file in a browser" >&2
    exit 1
fi

if [ $# -ge 1 ]; then
    page="$(realpath "$1")"
    out="$(realpath -m "${2:-${1%.html}.png}")"
else
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    # A copy of the demo job in the temporary directory: its paths made absolute, its database
    # and reports there (the real reports/ is left alone).
    sed -e "s|\"\.\./|\"$root/|g" \
        -e "s|^database = .*|database = \"$work/demo-payouts.db\"|" \
        -e "s|^reports_dir = .*|reports_dir = \"$work\"|" \
        "$root/jobs/demo-payouts.toml" > "$work/demo-payouts.toml"
    bin="${STARPAY_BATCH:-$root/target/debug/starpay-batch}"
    if [ ! -x "$bin" ]; then
        (cd "$root" && cargo build --quiet)
    fi
    # Exit 2 is the demo's design (its sample has failing accounts).
    code=0
    # --input from the repository root, so the page names samples/payouts.csv as the demo does.
    (cd "$root" && "$bin" run "$work/demo-payouts.toml" --input samples/payouts.csv \
        >"$work/run.out" 2>"$work/run.log") || code=$?
    if [ "$code" -ne 0 ] && [ "$code" -ne 2 ]; then
        echo "render-summary: the demo run exited $code:" >&2
        cat "$work/run.log" >&2
        exit "$code"
    fi
    page="$work/demo-payouts-1-summary.html"
    out="$root/docs/demo-summary.png"
fi

# --no-sandbox: Chromium refuses to run as root otherwise (containers); the page is our own.
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --window-size="$width,$height" --screenshot="$out" "file://$page" 2>/dev/null
echo "$out"
