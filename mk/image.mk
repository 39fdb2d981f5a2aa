# Container image (issue 15): multi-arch with docker buildx, base images pinned by digest in
# deploy/Dockerfile, an SPDX SBOM and SLSA provenance attached to the pushed image.
# docs/DEPLOY.md#3-build-and-push-the-image. Needs Docker with buildx (and, to push, a registry login).

IMAGE      ?= envdr
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
PLATFORMS  ?= linux/amd64,linux/arm64
BUILDER    ?= envdr-multiarch

.PHONY: image image-push image-sbom image-builder
image-builder: ## create the buildx builder for multi-arch builds (docker-container driver), once
	docker buildx inspect $(BUILDER) >/dev/null 2>&1 || docker buildx create --name $(BUILDER) --driver docker-container

image: ## build the image for this machine's platform into the local Docker (IMAGE=, VERSION=)
	docker buildx build -f deploy/Dockerfile --build-arg VERSION=$(VERSION) --load -t $(IMAGE):$(VERSION) .

image-push: image-builder ## build linux/amd64 + linux/arm64, attach an SBOM and provenance, push (IMAGE=registry/repo)
	docker buildx build --builder $(BUILDER) -f deploy/Dockerfile --platform $(PLATFORMS) \
	  --build-arg VERSION=$(VERSION) --sbom=true --provenance=mode=max --push -t $(IMAGE):$(VERSION) .
	docker buildx imagetools inspect $(IMAGE):$(VERSION)

image-sbom: ## print the SPDX SBOM attached to a pushed image (IMAGE=, VERSION=)
	docker buildx imagetools inspect $(IMAGE):$(VERSION) --format '{{ json .SBOM }}'
