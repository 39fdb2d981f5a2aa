#!/usr/bin/env bash
# make promtool-test: `promtool test rules` on deploy/monitoring/tests/*.yaml against the alert
# rules in deploy/monitoring/prometheusrule.yaml (their spec, extracted as plain Prometheus rule
# groups), after `promtool check rules`.
#
# promtool is installed once, pinned, into .tools/bin: Debian's prometheus package at
# PROMTOOL_DEB_VERSION, fetched with `apt-get download` (no root needed, nothing installed
# system-wide) and unpacked with dpkg -x; only promtool is kept. Without apt-get and dpkg this
# prints one "SKIP promtool test rules: <why>" line, and so it does when the pinned package
# cannot be had (a non-Debian-12 apt source); ENVDR_REQUIRE_PROMTOOL=1 (set by .ci/run where apt
# exists) turns that skip into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

version=${PROMTOOL_DEB_VERSION:?PROMTOOL_DEB_VERSION is set by mk/monitoring.mk}
bin=$PWD/.tools/bin/promtool
stamp=$PWD/.tools/bin/.promtool-$version

skip() {
  if [[ ${ENVDR_REQUIRE_PROMTOOL:-} == 1 ]]; then
    echo "promtool-test: promtool is required here (ENVDR_REQUIRE_PROMTOOL=1) but: $1" >&2
    exit 1
  fi
  echo "SKIP promtool test rules: $1"
  exit 0
}

install_promtool() {
  command -v apt-get >/dev/null 2>&1 || skip "apt-get is not available to fetch Debian's prometheus $version (docs/RUNBOOK.md#testing-the-alerts runs them with your own promtool)"
  command -v dpkg >/dev/null 2>&1 || skip "dpkg is not available to unpack Debian's prometheus $version"
  local tmp
  tmp=$(mktemp -d)
  # apt-get download writes into the current directory; the _apt sandbox user may not be able
  # to, which apt only warns about.
  if ! (cd "$tmp" && apt-get download -q "prometheus=$version" >/dev/null 2>&1); then
    # A fresh machine has no package lists yet: read them once (needs root), then retry.
    if [[ $(id -u) == 0 ]]; then
      apt-get update -q >/dev/null 2>&1 || true
    fi
    (cd "$tmp" && apt-get download -q "prometheus=$version" >/dev/null 2>&1) ||
      { rm -rf "$tmp"; skip "apt-get download prometheus=$version failed (not in this machine's apt sources; the pin is Debian 12's)"; }
  fi
  dpkg -x "$tmp"/prometheus_*.deb "$tmp/x"
  mkdir -p .tools/bin
  rm -f .tools/bin/.promtool-*
  install -m 0755 "$tmp/x/usr/bin/promtool" "$bin"
  rm -rf "$tmp"
  touch "$stamp"
}

[[ -x $bin && -e $stamp ]] || install_promtool
"$bin" --version 2>&1 | head -1

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The PrometheusRule's spec, de-indented: the groups plain Prometheus loads. A test in
# test/deploycheck checks this extraction equals the YAML spec, so the tests see the real rules.
awk 'f { sub(/^  /, ""); print } /^spec:$/ { f = 1 }' deploy/monitoring/prometheusrule.yaml >"$work/envdr-rules.yaml"
cp deploy/monitoring/tests/*.yaml "$work/"
"$bin" check rules "$work/envdr-rules.yaml"
(cd "$work" && "$bin" test rules ./*_test.yaml)
