#!/usr/bin/env bash
# make release-check (run by make test): build a release snapshot into a temporary directory with
# scripts/release.sh (offline), then check it: test/release verifies SHA256SUMS, every archive's
# files, each binary's header (ELF, Mach-O, PE) and CPU, build settings (CGO off) and stamped
# version, and that each SBOM is CycloneDX and names envdr's linked direct dependencies; and the
# linux/amd64 binary from its archive runs `envdr version`. darwin and windows binaries cannot be
# run here: they are inspected, not executed.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
VERSION="$(git describe --tags --abbrev=0 2>/dev/null || echo v0.0.0)-SNAPSHOT-$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
export VERSION
bash scripts/release.sh "$TMP/dist" >"$TMP/release.log" || { cat "$TMP/release.log" >&2; exit 1; }
go run ./test/release -dir "$TMP/dist" -version "$VERSION" -targets "${RELEASE_TARGETS:-linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64}"
if [[ " ${RELEASE_TARGETS:-linux/amd64} " == *" linux/amd64 "* && $(go env GOHOSTOS)/$(go env GOHOSTARCH) == linux/amd64 ]]; then
  mkdir "$TMP/run"
  tar -C "$TMP/run" -xzf "$TMP/dist/envdr_${VERSION#v}_linux_amd64.tar.gz"
  out="$("$TMP/run/envdr" version)"
  [[ $out == "envdr $VERSION ("* ]] || { echo "release-check: envdr version printed: $out (want envdr $VERSION ...)" >&2; exit 1; }
  got="$("$TMP/run/envdr" version --output json | jq -r .version)"
  [[ $got == "$VERSION" ]] || { echo "release-check: envdr version --output json: version $got, want $VERSION" >&2; exit 1; }
  echo "release-check: linux/amd64 binary from its archive: $out"
fi
echo "release-check: ok in $((SECONDS - start))s ($(wc -l <"$TMP/dist/SHA256SUMS") files in SHA256SUMS)"
