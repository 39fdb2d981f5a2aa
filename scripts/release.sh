#!/usr/bin/env bash
# make release-snapshot / make release VERSION=vX.Y.Z: build envdr for every release platform
# with no network, and write into OUT (default dist/):
#   envdr_<version>_<os>_<arch>.tar.gz (linux, darwin) or .zip (windows): envdr, LICENSE, README.md
#   envdr_<version>_<os>_<arch>.sbom.json: a CycloneDX SBOM of that binary (cyclonedx-gomod bin)
#   SHA256SUMS: sha256sum's format over the archives and SBOMs, verified before the script ends
# <version> is VERSION without its leading v. With no VERSION it is a snapshot:
# <last tag or v0.0.0>-SNAPSHOT-<commit>. The version, commit and commit date are stamped into
# the binary with -ldflags -X (envdr version prints them). Archives are reproducible: files
# sorted, owner 0, times from the commit (SOURCE_DATE_EPOCH).
# The stand-in (cmd/envdr-local) is a developer tool and is not released.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${1:-dist}"
TARGETS="${RELEASE_TARGETS:-linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64}"
CYCLONEDX="${CYCLONEDX:-.tools/bin/cyclonedx-gomod}"
[[ -x $CYCLONEDX ]] || { echo "release: $CYCLONEDX missing: run make cyclonedx-install" >&2; exit 2; }

COMMIT="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
DATE="$(git log -1 --format=%cI 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
if [[ -z ${VERSION:-} ]]; then
  tag="$(git describe --tags --abbrev=0 2>/dev/null || echo v0.0.0)"
  VERSION="$tag-SNAPSHOT-$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
fi
[[ $VERSION =~ ^v[0-9]+\.[0-9]+\.[0-9]+ ]] || { echo "release: VERSION $VERSION: want vMAJOR.MINOR.PATCH[-...]" >&2; exit 2; }
V="${VERSION#v}"

# No network: every module comes from the module cache (go mod download fills it once).
export GOPROXY=off GOFLAGS=-mod=readonly CGO_ENABLED=0
LDFLAGS="-s -w -X main.version=$VERSION -X main.commit=$COMMIT -X main.date=$DATE"

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
rm -f "$OUT"/envdr_* "$OUT"/SHA256SUMS
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
touch_all() { find "$1" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +; }

for t in $TARGETS; do
  os="${t%/*}" arch="${t#*/}"
  name="envdr_${V}_${os}_${arch}"
  dir="$STAGE/$name"
  exe=envdr
  [[ $os == windows ]] && exe=envdr.exe
  mkdir -p "$dir"
  GOOS=$os GOARCH=$arch go build -trimpath -buildvcs=false -ldflags "$LDFLAGS" -o "$dir/$exe" ./cmd/envdr
  cp LICENSE README.md "$dir/"
  chmod 0755 "$dir/$exe"
  chmod 0644 "$dir/LICENSE" "$dir/README.md"
  touch_all "$dir"
  if [[ $os == windows ]]; then
    (cd "$dir" && zip -q -X -D "$OUT/$name.zip" $exe LICENSE README.md)
  else
    tar -C "$dir" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
      -cf - "$exe" LICENSE README.md | gzip -n -9 >"$OUT/$name.tar.gz"
  fi
  # The SBOM of this binary, from the module list Go embeds in it (cyclonedx-gomod bin): exactly
  # the modules linked for this OS and architecture, with no git and no network (app mode reads
  # the version from git with go-git, which fails in a linked worktree).
  "$CYCLONEDX" bin -json -noserial -notimestamp -version "$VERSION" \
    -output "$OUT/$name.sbom.json" "$dir/$exe" 2>"$STAGE/cyclonedx.log" ||
    { cat "$STAGE/cyclonedx.log" >&2; exit 1; }
  echo "release: $name ($(du -k "$OUT/$name".* | awk '{s+=$1} END {print s}') KiB)"
done

(cd "$OUT" && sha256sum -- envdr_* >SHA256SUMS && sha256sum --quiet -c SHA256SUMS)
echo "release: $VERSION in $OUT ($(wc -l <"$OUT/SHA256SUMS") files in SHA256SUMS, verified)"
