#!/usr/bin/env bash
# Renders the game day and drill report pages in headless Chromium (make report-screenshots):
# a short game day losing us-east-1 and a drill on the local stand-in write .screenshots/*.html,
# and Chromium writes .screenshots/*.png next to them. Installs Chromium with apt-get when it
# is missing (needs root or sudo); not part of make test.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-.screenshots}
mkdir -p "$OUT"

browser=""
for b in chromium chromium-browser chromium-headless-shell google-chrome; do
  if command -v "$b" >/dev/null; then browser=$b; break; fi
done
if [[ -z $browser ]]; then
  sudo=""
  [[ $(id -u) == 0 ]] || sudo="sudo"
  echo "installing Chromium with apt-get"
  $sudo apt-get update -qq
  if DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null; then
    browser=chromium
  elif DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium-headless-shell >/dev/null; then
    browser=chromium-headless-shell
  else
    echo "report-screenshots: could not install chromium or chromium-headless-shell with apt-get" >&2
    exit 1
  fi
fi

ENVDR_REQUIRE_LOCAL=1 ENVDR_REPORT_PAGES="$PWD/$OUT" ${GO:-go} test -count=1 -run '^$' -bench '^BenchmarkReportPages$' -benchtime 1x -timeout 20m ./recovery/

for page in gameday drill; do
  # --no-sandbox: root in a container has no user namespace for the sandbox; the pages are
  # our own and load nothing.
  "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1200,2600 \
    --screenshot="$PWD/$OUT/$page.png" "file://$PWD/$OUT/$page.html" 2>/dev/null
  echo "screenshot: $OUT/$page.png (page: $OUT/$page.html)"
done
