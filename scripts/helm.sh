#!/usr/bin/env bash
# make helm: installs the pinned helm CLI into .tools/bin/helm, once (test/deploycheck's CLI
# tests run it too, so `go test` there works on a fresh clone).
#
# The pin is test/deploycheck/go.mod's `tool helm.sh/helm/v3/cmd/helm`: the same Helm as the SDK
# the chart tests render with, and Dependabot moves both at once. It is built the way Helm's own
# Makefile builds a release: -ldflags set the version and the Kubernetes version that `helm
# template` and `helm lint` assume without a cluster (client-go's: v0.37 is Kubernetes 1.37);
# a plain `go build` would leave Helm's fallback, Kubernetes 1.20, below the chart's kubeVersion.
# No -trimpath: the build reuses the compiled packages the chart tests (the Helm SDK) left in
# the Go build cache.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
mod=test/deploycheck
bin=$PWD/.tools/bin/helm

version=$(cd "$mod" && "$GO" list -m -f '{{.Version}}' helm.sh/helm/v3)
if [[ -x $bin ]] && [[ $("$bin" version --template '{{.Version}}' 2>/dev/null) == "$version" ]]; then
  echo "$bin"
  exit 0
fi
clientgo=$(cd "$mod" && "$GO" list -m -f '{{.Version}}' k8s.io/client-go)
IFS=. read -r cmajor cminor _ <<<"${clientgo#v}"
kmajor=$((cmajor + 1))
ldflags="-w -s -X helm.sh/helm/v3/internal/version.version=$version -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  ldflags+=" -X $pkg.k8sVersionMajor=$kmajor -X $pkg.k8sVersionMinor=$cminor"
done
mkdir -p "$(dirname "$bin")"
echo "helm: building helm $version (Kubernetes $kmajor.$cminor by default) into .tools/bin" >&2
(cd "$mod" && CGO_ENABLED=0 "$GO" build -ldflags "$ldflags" -o "$bin" helm.sh/helm/v3/cmd/helm)
echo "$bin"
