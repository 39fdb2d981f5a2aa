# envdr — the two commands that matter: `make demo` and `make test`.
# Areas add their targets in mk/*.mk so they do not edit each other's lines.

SHELL := /bin/bash
GO    ?= go
BIN   := bin/envdr

.PHONY: all build test clean help
all: build

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | sort

build: ## build bin/envdr
	$(GO) build -buildvcs=auto -o $(BIN) ./cmd/envdr

include $(sort $(wildcard mk/*.mk))

test: build ## vet, unit + integration tests on the local stand-in, short fuzz, offline infra validation
	bash scripts/test.sh

clean: local-down ## stop the stand-in, remove build output (keeps installed tools)
	rm -rf bin local .bench dist
