#!/usr/bin/env bash
# Deletes the krafty development cluster (CLUSTER_NAME, default krafty) and with it everything
# scripts/cluster-up.sh and Tilt put into it; kind also removes its kubeconfig context. The
# images stay in the local Docker engine, for the next cluster-up; the record of the ones loaded
# (target/kind/CLUSTER_NAME) goes.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cluster_name=${CLUSTER_NAME:-krafty}
if [[ ! $cluster_name =~ ^[a-z0-9]([a-z0-9-]*[a-z0-9])?$ ]]; then
    echo "cluster-down: CLUSTER_NAME must be lower-case letters, digits and '-', not $cluster_name" >&2
    exit 2
fi

if ! command -v kind >/dev/null; then
    echo "cluster-down: kind is not on PATH" >&2
    exit 2
fi
# Not `kind get clusters | grep -q`: under pipefail, grep's early exit can fail kind with
# SIGPIPE and the pipeline with it.
clusters=$(kind get clusters 2>/dev/null) || clusters=
if grep -qx -- "$cluster_name" <<<"$clusters"; then
    kind delete cluster --name "$cluster_name"
else
    echo "cluster-down: no kind cluster named $cluster_name; nothing to delete"
fi
rm -rf "${repo:?}/target/kind/$cluster_name"
