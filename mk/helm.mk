# The helm CLI, pinned by test/deploycheck/go.mod (the Helm SDK the chart tests use) and built into
# .tools/bin/helm by scripts/helm.sh. make validate runs `helm lint --strict` and `helm template`
# (defaults, each region's values, with and without the CRD APIs) through test/deploycheck.
.PHONY: helm helm-check
helm: ## install the pinned helm CLI into .tools/bin/helm (once)
	@bash scripts/helm.sh >/dev/null

helm-check: helm ## helm lint --strict and helm template of deploy/helm/envdr: defaults and each ci/*-values.yaml
	@set -e; for v in "" $(sort $(wildcard deploy/helm/envdr/ci/*-values.yaml)); do \
	  echo "-- helm lint --strict / helm template $${v:-(defaults)}"; \
	  .tools/bin/helm lint --strict deploy/helm/envdr $${v:+-f $$v} | tail -n 1; \
	  .tools/bin/helm template envdr deploy/helm/envdr $${v:+-f $$v} >/dev/null; \
	done
