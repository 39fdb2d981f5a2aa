# make validate: offline infrastructure checks (issue 7), also run by make test.
# scripts/validate.sh picks how: with the offline provider (TF_OFFLINE, as in CI) it plans every
# Terraform root without a network; otherwise with `terraform init` from the registry when that
# answers; otherwise it runs every check that needs no plan and prints one
# "SKIP terraform plan: <why>" line. The Go tests in test/infra assert on the plans, the
# Kubernetes and ECS manifests, the Dockerfile and the generated policies.

TF_OFFLINE ?= ../shared/tools/terraform-offline
export TF_OFFLINE

validate: ## infra checks: terraform fmt/validate/plan (offline provider or registry), k8s + ECS manifests, Dockerfile, policies
	@GO="$(GO)" bash scripts/validate.sh
