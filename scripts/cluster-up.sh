#!/usr/bin/env bash
# Creates the krafty development cluster and installs krafty into it:
#
#   1. a kind cluster from kind/cluster.yaml (kind's CNI and kube-proxy disabled);
#   2. Cilium as the primary CNI, replacing kube-proxy;
#   3. Multus (thick plugin) as the meta-plugin that adds secondary networks;
#   4. the installer and nettools images, built and loaded onto the nodes;
#   5. the krafty chart with charts/krafty/values-dev.yaml.
#
#   scripts/cluster-up.sh                   # all of it (make up)
#   scripts/cluster-up.sh --without-chart   # 1-4 only, for Tilt to deploy krafty (make cluster)
#
# Environment: CLUSTER_NAME (krafty), NETTOOLS_IMAGE (krafty-nettools:dev), CILIUM_VERSION,
# MULTUS_VERSION. Running it again on an existing cluster brings everything up to date.
# Needs docker (with a running engine), kind, kubectl, helm, curl, and the network (Cilium's
# chart, Multus' manifest and the images they name are downloaded).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cluster_name=${CLUSTER_NAME:-krafty}
context=kind-$cluster_name
nettools_image=${NETTOOLS_IMAGE:-krafty-nettools:dev}
# Matches image.repository and image.tag in charts/krafty/values-dev.yaml.
installer_image=krafty-installer:dev
cilium_version=${CILIUM_VERSION:-1.18.0}
multus_version=${MULTUS_VERSION:-v4.2.2}
release_namespace=kube-system

install_chart=yes
case ${1:-} in
    "") ;;
    --without-chart) install_chart=no ;;
    *) echo "usage: scripts/cluster-up.sh [--without-chart]" >&2; exit 2 ;;
esac

missing=()
for tool in docker kind kubectl helm curl; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "cluster-up: missing tools: ${missing[*]}" >&2
    echo "cluster-up: the development cluster needs docker, kind, kubectl, helm and curl on PATH" >&2
    exit 2
fi
if ! docker info >/dev/null 2>&1; then
    echo "cluster-up: docker cannot reach a Docker engine (is it running, may this user use it?)" >&2
    exit 2
fi

step() { echo "==> $*"; }
kube() { kubectl --context "$context" "$@"; }

step "kind cluster $cluster_name"
if kind get clusters 2>/dev/null | grep -qx "$cluster_name"; then
    echo "exists; reusing it"
else
    # No --wait: the nodes stay NotReady until Cilium is installed.
    kind create cluster --name "$cluster_name" --config "$repo/kind/cluster.yaml"
fi

step "Cilium $cilium_version (primary CNI, kube-proxy replacement)"
# k8sServiceHost: without kube-proxy, Cilium reaches the API server directly, at the
# control-plane node's name on kind's Docker network.
# cni.exclusive=false: by default Cilium moves every other CNI config out of /etc/cni/net.d,
# Multus' included.
helm upgrade --install cilium cilium --repo https://helm.cilium.io --version "$cilium_version" \
    --kube-context "$context" --namespace kube-system \
    --set kubeProxyReplacement=true \
    --set k8sServiceHost="$cluster_name-control-plane" \
    --set k8sServicePort=6443 \
    --set ipam.mode=kubernetes \
    --set cni.exclusive=false \
    --set operator.replicas=1 \
    --set image.pullPolicy=IfNotPresent
kube -n kube-system rollout status daemonset/cilium --timeout=600s
kube wait --for=condition=Ready nodes --all --timeout=300s

step "Multus $multus_version (thick plugin)"
# The manifest at a release tag still names the moving snapshot image; pin it to the release.
curl -fsSL "https://raw.githubusercontent.com/k8snetworkplumbingwg/multus-cni/$multus_version/deployments/multus-daemonset-thick.yml" |
    sed "s|multus-cni:snapshot-thick|multus-cni:$multus_version-thick|g" |
    kube apply -f -
kube -n kube-system rollout status daemonset/kube-multus-ds --timeout=600s

step "images: $installer_image, $nettools_image"
docker build -t "$installer_image" -f "$repo/installer/Dockerfile" "$repo"
docker build -t "$nettools_image" -f "$repo/nettools/Dockerfile" "$repo/nettools"
kind load docker-image --name "$cluster_name" "$installer_image" "$nettools_image"

if [[ $install_chart == yes ]]; then
    step "krafty chart (release krafty in $release_namespace)"
    helm upgrade --install krafty "$repo/charts/krafty" \
        --kube-context "$context" --namespace "$release_namespace" \
        --values "$repo/charts/krafty/values-dev.yaml" \
        --wait --timeout 5m
    kube -n "$release_namespace" rollout status daemonset/krafty-installer --timeout=300s
fi

step "ready: context $context"
if [[ $install_chart == yes ]]; then
    echo "next: make deployment (the nettools pod), then make validate"
else
    echo "next: tilt up (deploys krafty and nettools, live-updates the plugins)"
fi
