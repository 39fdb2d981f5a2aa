# The local three-region AWS stand-in (docs/LOCAL.md). Tools are pinned and installed into
# .tools/localaws by scripts/localaws-install.sh; nothing is installed by hand.
.PHONY: local-install local-up local-down local-status

local-install: ## install the stand-in's pinned backends (Node 22, fauxqs, DynamoDB Local) into .tools/
	@bash scripts/localaws-install.sh

local-up: ## start the three-region stand-in in the background and write local/envdr.yaml
	@bash scripts/localaws-up.sh

local-down: ## stop the stand-in; no process is left behind
	@bash scripts/localaws-down.sh

local-status: ## show each stand-in region's state and endpoints
	@bin/envdr local status --config local/envdr.yaml
