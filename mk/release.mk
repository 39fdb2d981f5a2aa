# Release archives (README "Install a release"): envdr for every laptop and server, built with no
# network by scripts/release.sh, checked by test/release. goreleaser is not an approved module on
# our proxy, so a small script does what its snapshot would: archives, SHA256SUMS, SBOMs.
.PHONY: cross release release-snapshot release-check cyclonedx-install release-modules

# cyclonedx-gomod writes the SBOMs; installed from the module proxy at a pinned version.
CYCLONEDX_VERSION ?= v1.10.0
CYCLONEDX         := .tools/bin/cyclonedx-gomod
CYCLONEDX_STAMP   := .tools/bin/.cyclonedx-gomod-$(CYCLONEDX_VERSION)
RELEASE_TARGETS   ?= linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64
RELEASE_DIR       ?= dist

$(CYCLONEDX_STAMP):
	GOBIN=$(CURDIR)/.tools/bin $(GO) install github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod@$(CYCLONEDX_VERSION)
	@touch $@

cyclonedx-install: $(CYCLONEDX_STAMP) ## install the pinned cyclonedx-gomod (SBOMs) into .tools/bin

# The one step that may use the network (the module proxy): fill the module cache with every
# module go.mod lists, including those only other platforms link (cobra's mousetrap on Windows);
# scripts/release.sh then builds with GOPROXY=off. A no-op when the cache is full.
release-modules:
	@$(GO) mod download

cross: ## build envdr for every release platform (CGO off) and envdr-local (Linux; elsewhere it says so)
	@set -e; for t in $(RELEASE_TARGETS); do \
		echo "cross: envdr $$t"; \
		CGO_ENABLED=0 GOOS=$${t%/*} GOARCH=$${t#*/} $(GO) build -trimpath -buildvcs=false -o /dev/null ./cmd/envdr ./cmd/envdr-local; \
	done

release-snapshot: $(CYCLONEDX_STAMP) release-modules ## archives, SHA256SUMS and SBOMs of a snapshot version into RELEASE_DIR (dist/), offline
	RELEASE_TARGETS="$(RELEASE_TARGETS)" VERSION= bash scripts/release.sh $(RELEASE_DIR)

release: $(CYCLONEDX_STAMP) release-modules ## the same for VERSION=vX.Y.Z (from a clean tree at its tag)
	@[[ -n "$(VERSION)" ]] || { echo "release: set VERSION=vX.Y.Z" >&2; exit 2; }
	@git diff --quiet HEAD || { echo "release: the tree has uncommitted changes" >&2; exit 2; }
	RELEASE_TARGETS="$(RELEASE_TARGETS)" VERSION=$(VERSION) bash scripts/release.sh $(RELEASE_DIR)

release-check: $(CYCLONEDX_STAMP) release-modules ## what make test runs: a snapshot into a temp dir, every archive, sum, SBOM and binary checked
	@RELEASE_TARGETS="$(RELEASE_TARGETS)" bash scripts/release-check.sh
