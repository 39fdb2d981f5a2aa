# Alert rules (deploy/monitoring, docs/RUNBOOK.md#alerts): promtool unit tests, run by make test.
# promtool is Debian 12's prometheus package at this version (promtool 2.42), fetched with
# apt-get download into .tools/bin by scripts/promtool-test.sh, never installed by hand.
.PHONY: promtool-test
PROMTOOL_DEB_VERSION ?= 2.42.0+ds-5+b6
export PROMTOOL_DEB_VERSION

promtool-test: ## promtool check + test rules on deploy/monitoring (installs the pinned promtool into .tools/bin once)
	@bash scripts/promtool-test.sh
