# kind: run the operator the way users do, from its image and its Helm chart,
# in a throwaway kind cluster. Included by the Makefile (`-include hack/kind.mk`).
#
#   make kind-up       a kind cluster named $(KIND_CLUSTER)
#   make kind-deploy   build the image, load it into kind, helm upgrade --install
#   make kind-down     delete the cluster
#
# Needs Docker (or another engine kind supports) and either `kind` on PATH or Go
# (kind is then run with `go run sigs.k8s.io/kind@$(KIND_VERSION)`). helm comes
# from the build cache (`make binaries`) or PATH. Everything can be overridden:
#   make kind-deploy KIND_CLUSTER=dev KIND_HELM_ARGS='--set replicas=2'

KIND_VERSION ?= v0.27.0
KIND_CLUSTER ?= modelrollout
# A kind node image matching the pinned Kubernetes minor; empty: kind's default.
KIND_NODE_IMAGE ?=
KIND_IMAGE_REPOSITORY ?= modelrollout-operator
KIND_IMAGE_TAG ?= dev
KIND_IMAGE := $(KIND_IMAGE_REPOSITORY):$(KIND_IMAGE_TAG)
KIND_NAMESPACE ?= modelrollout-system
KIND_RELEASE ?= modelrollout-operator
KIND_HELM_ARGS ?=
DOCKER ?= docker

# `kind` on PATH wins; otherwise the pinned version through the Go toolchain.
KIND ?= $(shell command -v kind 2>/dev/null || echo "go run sigs.k8s.io/kind@$(KIND_VERSION)")
# The pinned helm of the build cache (hack/versions.env), else helm on PATH.
KIND_HELM_VERSION := $(shell sed -n 's/^HELM_VERSION=//p' hack/versions.env 2>/dev/null)
HELM ?= $(shell p="$(CACHE)/bin/helm-$(KIND_HELM_VERSION)/helm"; \
	if [ -x "$$p" ]; then echo "$$p"; else command -v helm 2>/dev/null || echo helm; fi)
KUBECTL ?= $(shell p="$(CACHE)/bin/kubectl-$$(sed -n 's/^KUBERNETES_VERSION=//p' hack/versions.env 2>/dev/null)/kubectl"; \
	if [ -x "$$p" ]; then echo "$$p"; else command -v kubectl 2>/dev/null || echo kubectl; fi)
KIND_CONTEXT := kind-$(KIND_CLUSTER)

.PHONY: kind-up
kind-up: ## Create a kind cluster (KIND_CLUSTER, default modelrollout); reuses one that exists
	@if $(KIND) get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)'; then \
		echo "[kind] cluster $(KIND_CLUSTER) already exists"; \
	else \
		$(KIND) create cluster --name '$(KIND_CLUSTER)' --wait 120s \
			$(if $(KIND_NODE_IMAGE),--image '$(KIND_NODE_IMAGE)'); \
	fi
	$(KUBECTL) --context '$(KIND_CONTEXT)' cluster-info

.PHONY: kind-deploy
kind-deploy: ## Build the operator's image, load it into kind and helm upgrade --install the chart
	$(DOCKER) build --tag '$(KIND_IMAGE)' --build-arg VERSION='$(KIND_IMAGE_TAG)' .
	$(KIND) load docker-image '$(KIND_IMAGE)' --name '$(KIND_CLUSTER)'
	@# The tag stays the same from build to build; the image ID in a pod
	@# annotation makes a new build roll the Deployment, and only a new build.
	image_id="$$($(DOCKER) image inspect --format '{{.Id}}' '$(KIND_IMAGE)')" && \
	$(HELM) upgrade --install '$(KIND_RELEASE)' charts/modelrollout-operator \
		--kube-context '$(KIND_CONTEXT)' \
		--namespace '$(KIND_NAMESPACE)' --create-namespace \
		--set image.repository='$(KIND_IMAGE_REPOSITORY)' \
		--set-string image.tag='$(KIND_IMAGE_TAG)' \
		--set image.pullPolicy=Never \
		--set-string "podAnnotations.modelrollout\.io/image-id=$${image_id}" \
		--wait --timeout 5m $(KIND_HELM_ARGS)
	$(KUBECTL) --context '$(KIND_CONTEXT)' -n '$(KIND_NAMESPACE)' get pods -o wide

.PHONY: kind-down
kind-down: ## Delete the kind cluster made by kind-up
	$(KIND) delete cluster --name '$(KIND_CLUSTER)'
