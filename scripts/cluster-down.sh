#!/usr/bin/env bash
# Deletes the krafty development cluster (CLUSTER_NAME, default krafty) and with it everything
# scripts/cluster-up.sh and Tilt put into it; kind also removes its kubeconfig context. The
# images stay in the local Docker engine, for the next cluster-up.
set -euo pipefail

cluster_name=${CLUSTER_NAME:-krafty}

if ! command -v kind >/dev/null; then
    echo "cluster-down: kind is not on PATH" >&2
    exit 2
fi
if kind get clusters 2>/dev/null | grep -qx "$cluster_name"; then
    kind delete cluster --name "$cluster_name"
else
    echo "cluster-down: no kind cluster named $cluster_name; nothing to delete"
fi
