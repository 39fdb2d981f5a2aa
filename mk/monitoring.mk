# Alert rules (deploy/monitoring, docs/RUNBOOK.md#alerts): promtool unit tests, run by make test.
# promtool is Debian 12's prometheus package at one of these versions, tried in order (all
# promtool 2.42.0: Debian's point releases replace the build in the mirror, so the first pin
# alone stopped resolving), fetched with apt-get download into .tools/bin by
# scripts/promtool-test.sh, never installed by hand.
.PHONY: promtool-test
PROMTOOL_DEB_VERSION ?= 2.42.0+ds-5+deb12u1 2.42.0+ds-5+b6
export PROMTOOL_DEB_VERSION

promtool-test: ## promtool check + test rules on deploy/monitoring (installs the pinned promtool into .tools/bin once)
	@bash scripts/promtool-test.sh
