#!/usr/bin/env bash
# make test: the whole CI check. Brings the local stand-in up (integration tests fail, not skip,
# with ENVDR_REQUIRE_LOCAL=1 when it is missing), runs every check, and stops the stand-in again
# if this script started it (a stand-in someone else was using is left running).
set -euo pipefail
cd "$(dirname "$0")/.."
export ENVDR_REQUIRE_LOCAL=1
go build -buildvcs=auto -o bin/envdr ./cmd/envdr
started=0
bin/envdr local ready >/dev/null 2>&1 || started=1
trap '[[ $started == 1 ]] && make -s local-down >/dev/null 2>&1 || true' EXIT
make -s local-up
echo "== go vet + staticcheck (pinned)"
make -s lint
echo "== go test (unit, integration, fault-injection short form)"
go test -count=1 -timeout 20m ./...
echo "== go test -race (replicate, regions, localaws)"
make -s race
# envdr builds for every laptop (CGO off); the release snapshot is built offline and checked:
# archives, SHA256SUMS, SBOMs, each binary's header and version, the linux/amd64 one run.
echo "== cross-builds and release snapshot"
make -s cross release-check
echo "== promtool test rules (deploy/monitoring/tests)"
make -s promtool-test
echo "== fuzz (short)"
make -s fuzz-short
# validate plans every Terraform root when it can (offline provider, or the registry) and
# otherwise runs the rest and prints one "SKIP terraform plan: <why>" line (scripts/validate.sh).
echo "== validate (infra)"
make -s validate
