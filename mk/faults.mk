# Fault-injection and security suite (docs/FAULTS.md), static and race checks.
# `make faults` is the long soak; its short form runs inside `go test ./...` (make test).
.PHONY: faults faults-short lint race staticcheck-install test-lag

# staticcheck 2026.2.2 (v0.8.2) is the first line that supports Go 1.26.
STATICCHECK_VERSION ?= v0.8.2
STATICCHECK         := .tools/bin/staticcheck
# A stamp per version, so bumping STATICCHECK_VERSION reinstalls.
STATICCHECK_STAMP   := .tools/bin/.staticcheck-$(STATICCHECK_VERSION)
FAULTS_N            ?= 10000

faults: local-up ## fault-injection suite, long form (FAULTS_N envelopes in the crash run, default 10000)
	@mkdir -p .bench
	set -o pipefail; ENVDR_REQUIRE_LOCAL=1 ENVDR_FAULTS_LONG=1 ENVDR_FAULTS_N=$(FAULTS_N) \
		$(GO) test -count=1 -timeout 90m -v ./test/faults/ 2>&1 | tee .bench/faults.log

faults-short: local-up ## fault-injection suite, short form (what make test runs)
	ENVDR_REQUIRE_LOCAL=1 $(GO) test -count=1 -timeout 10m -v ./test/faults/

# Installed from the module proxy at a pinned version into .tools/bin, never by hand.
$(STATICCHECK_STAMP):
	GOBIN=$(CURDIR)/.tools/bin $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	@touch $@

staticcheck-install: $(STATICCHECK_STAMP) ## install the pinned staticcheck into .tools/bin

# The test-only modules (their own go.mod, so Helm, Prometheus, Kubernetes and the ECS SDK stay
# out of envdr's): ./... at the root does not reach them. test/infra builds with -tags infra.
TEST_MODULES ?= test/deploycheck test/infra

lint: $(STATICCHECK_STAMP) ## go vet and staticcheck (pinned) on every package of every module
	$(GO) vet ./...
	$(STATICCHECK) ./...
	@set -e; for m in $(TEST_MODULES); do \
		echo "lint: $$m"; \
		(cd $$m && $(GO) vet -tags infra ./... && $(CURDIR)/$(STATICCHECK) -tags infra ./...); \
	done

race: ## go test -race on the packages with concurrency
	$(GO) test -race -count=1 -timeout 15m ./replicate/... ./regions/... ./localaws/...

# The lag sweep (issue 10): the replicator, verify, drill, rewrap and the fault suite's short
# form with every test's stand-in replicating its global tables 1 s late (default 250 ms), each
# item up to JITTER_SWEEP later again, on its own (issue 20: a transaction's items arrive apart
# and in any order, as on AWS). Each test logs its jitter seed; JITTER_SEED=N replays one.
LAG_SWEEP    ?= 1s
JITTER_SWEEP ?= 500ms
JITTER_SEED  ?=
test-lag: local-up ## replicate, recovery, CLI and fault-suite tests with LAG_SWEEP (1s) of replication lag plus JITTER_SWEEP (500ms) per item
	ENVDR_REQUIRE_LOCAL=1 ENVDR_LOCAL_LAG=$(LAG_SWEEP) ENVDR_LOCAL_JITTER=$(JITTER_SWEEP) ENVDR_LOCAL_SEED=$(JITTER_SEED) \
		$(GO) test -count=1 -timeout 30m ./replicate/ ./recovery/ ./cmd/envdr/ ./test/faults/
