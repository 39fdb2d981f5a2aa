# make validate: offline infrastructure checks (issue 7), also run by make test.
# Terraform runs through terraform-offline, which provides the hashicorp/aws provider without a
# network; the Go tests in test/infra plan every root in a temp copy and assert on the plans, the
# Kubernetes and ECS manifests, the Dockerfile and the generated policies.

TF_OFFLINE ?= ../shared/tools/terraform-offline

validate: ## offline checks: terraform fmt/validate/plan, k8s + ECS manifests, Dockerfile, policies
	@test -x "$(TF_OFFLINE)" || { echo "validate: $(TF_OFFLINE) not found; set TF_OFFLINE=path/to/terraform-offline" >&2; exit 1; }
	$(TF_OFFLINE) fmt -check -recursive -diff terraform/
	ENVDR_TF_OFFLINE="$(abspath $(TF_OFFLINE))" $(GO) test -tags infra -count=1 -timeout 15m ./test/infra/
