# krafty's developer entry points. `make help` lists them.
#
# sandbox, test and bench install what they miss on Debian (scripts/setup.sh). The cluster
# targets (up, cluster, deployment, validate, down) need Docker, kind, kubectl and helm; see
# scripts/cluster-up.sh.

CLUSTER_NAME ?= krafty
NETTOOLS_IMAGE ?= krafty-nettools:dev
KUBE_CONTEXT := kind-$(CLUSTER_NAME)
export CLUSTER_NAME NETTOOLS_IMAGE

.PHONY: help up cluster deployment validate down lint test test-deploy sandbox sandbox-down bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

up: ## kind cluster with Cilium and Multus, images loaded, krafty chart installed
	scripts/cluster-up.sh

cluster: ## the same without the chart, for `tilt up`
	scripts/cluster-up.sh --without-chart

deployment: ## the nettools pod on the krafty network (deploy/nettools.yaml, image NETTOOLS_IMAGE)
	sed 's|$${NETTOOLS_IMAGE}|$(NETTOOLS_IMAGE)|' deploy/nettools.yaml | kubectl --context $(KUBE_CONTEXT) apply -f -
	kubectl --context $(KUBE_CONTEXT) -n default rollout status deployment/nettools --timeout=180s

validate: ## check the nettools pod's attachment, pod side and node side
	scripts/validate.sh --context $(KUBE_CONTEXT)

down: ## delete the kind cluster
	scripts/cluster-down.sh

lint: ## formatting, clippy, shellcheck, helm lint --strict
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	shellcheck scripts/*.sh tests/deploy/run.sh
	python3 tests/deploy/helm_lint.py

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
