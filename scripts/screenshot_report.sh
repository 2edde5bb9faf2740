#!/usr/bin/env bash
# Render a compliance report's HTML page with headless Chromium into a PNG, to look at it.
#
#   scripts/screenshot_report.sh REPORT.html [OUT.png] [WIDTHxHEIGHT]
#
# Get the page with `featureedit report ER_ID --format html --out REPORT.html`. Chromium is the
# Debian package (`apt-get install -y chromium`); the page loads nothing, so no network is used.
set -euo pipefail
html="${1:?usage: $0 REPORT.html [OUT.png] [WIDTHxHEIGHT]}"
out="${2:-${html%.html}.png}"
size="${3:-1200x2400}"
browser="$(command -v chromium || command -v chromium-browser || true)"
if [ -z "$browser" ]; then
    echo "chromium not found: apt-get install -y chromium" >&2
    exit 2
fi
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars \
    --user-data-dir="$profile" --window-size="${size/x/,}" --screenshot="$out" \
    "file://$(realpath "$html")" >/dev/null 2>&1
echo "$out"
