#!/usr/bin/env bash
# make validate: offline infrastructure checks (test/infra). How far it goes depends on the machine:
#
#   offline   TF_OFFLINE (default ../shared/tools/terraform-offline, as in CI) is there: terraform
#             fmt -check, then every Terraform root is planned with the offline AWS provider.
#   registry  no offline provider, but registry.terraform.io answers: the same checks, with a
#             normal `terraform init` per root (providers cached in ~/.cache/envdr-terraform/plugins).
#   skip      neither (or no terraform at all): every check that needs no plan still runs (fmt
#             -check when terraform is installed; Kubernetes, ECS, Dockerfile, policy and layout
#             checks), and one line "SKIP terraform plan: <why>" says what was left out.
#
# ENVDR_REQUIRE_TF_PLAN=1 turns a skip into a failure (.ci/run sets it when the offline provider
# is present, so CI can never pass without planning). ENVDR_TF_MODE=offline|registry|skip forces
# a mode.
set -euo pipefail
cd "$(dirname "$0")/.."

TF_OFFLINE=${TF_OFFLINE:-../shared/tools/terraform-offline}
GO=${GO:-go}
registry=https://registry.terraform.io/.well-known/terraform.json
# A TF_CLI_CONFIG_FILE naming a missing file only makes terraform print a warning on every call.
if [[ -n ${TF_CLI_CONFIG_FILE:-} && ! -e $TF_CLI_CONFIG_FILE ]]; then unset TF_CLI_CONFIG_FILE; fi

# registry_reachable answers within a few seconds whether the Terraform registry can be used.
registry_reachable() {
  command -v curl >/dev/null 2>&1 || return 1
  curl -fsS -o /dev/null --connect-timeout 3 --max-time 5 "$registry" 2>/dev/null
}

mode=${ENVDR_TF_MODE:-}
why=""
if ! command -v terraform >/dev/null 2>&1; then
  mode=skip
  why="terraform is not installed (fmt -check skipped too; install terraform >= 1.6 to check and plan)"
elif [[ -z $mode ]]; then
  if [[ -x $TF_OFFLINE ]]; then
    mode=offline
  elif registry_reachable; then
    mode=registry
  else
    mode=skip
    why="no offline provider at $TF_OFFLINE and registry.terraform.io is unreachable (set TF_OFFLINE=path/to/terraform-offline, or go online)"
  fi
elif [[ $mode == skip ]]; then
  why="ENVDR_TF_MODE=skip"
fi

case $mode in
offline | registry | skip) ;;
*) echo "validate: ENVDR_TF_MODE=$mode: use offline, registry or skip" >&2; exit 2 ;;
esac

if [[ $mode == skip && ${ENVDR_REQUIRE_TF_PLAN:-} == 1 ]]; then
  echo "validate: the terraform plan is required here (ENVDR_REQUIRE_TF_PLAN=1) but cannot run: $why" >&2
  exit 1
fi

if command -v terraform >/dev/null 2>&1; then
  echo "-- terraform fmt -check"
  terraform fmt -check -recursive -diff terraform/
fi

export ENVDR_TF_MODE=$mode
if [[ $mode == offline ]]; then
  export ENVDR_TF_OFFLINE
  ENVDR_TF_OFFLINE=$(cd "$(dirname "$TF_OFFLINE")" && pwd)/$(basename "$TF_OFFLINE")
  echo "-- terraform plan of every root (offline provider: $TF_OFFLINE)"
elif [[ $mode == registry ]]; then
  echo "-- terraform plan of every root (providers from registry.terraform.io)"
else
  echo "-- manifest, Dockerfile, policy and layout checks"
fi
# test/infra is a module of its own (test/infra/go.mod) so the Kubernetes API types and the ECS
# SDK it decodes the manifests with stay out of envdr's go.mod.
(cd test/infra && "$GO" test -tags infra -count=1 -timeout 15m ./...)
# The Helm chart (rendered with the Helm Go SDK, every object decoded strictly; and `helm lint
# --strict` / `helm template` with the helm CLI pinned there, which scripts/helm.sh builds into
# .tools/bin once) and the alert and dashboard expressions (the PromQL parser): a module of its
# own, test/deploycheck, so Helm's and Prometheus's dependencies stay out of envdr's go.mod. The
# first run downloads them.
echo "-- helm chart and PromQL rules (test/deploycheck)"
(cd test/deploycheck && "$GO" test -count=1 -timeout 10m -skip '^TestIdentityMatrix$' ./...)
# The identity matrix (docs/DEPLOY.md section 7): every shipped workload's command under its
# shipped identity on the local stand-in (skipped without it unless ENVDR_REQUIRE_LOCAL=1, as in
# make test). -v so the matrix and its SKIP lines are printed.
echo "-- identity matrix (test/deploycheck TestIdentityMatrix)"
(cd test/deploycheck && "$GO" test -count=1 -timeout 15m -v -run '^TestIdentityMatrix$' . | grep -v -E '^(=== RUN|--- PASS|PASS$)')
if [[ $mode == skip ]]; then
  echo "SKIP terraform plan: $why"
fi
