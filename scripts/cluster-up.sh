#!/usr/bin/env bash
# Creates the krafty development cluster and installs krafty into it:
#
#   1. a kind cluster from kind/cluster.yaml (kind's CNI and kube-proxy disabled), its nodes
#      the kind node image pinned in kind/versions.env;
#   2. Cilium as the primary CNI, replacing kube-proxy;
#   3. Multus (thick plugin) from kind/multus/multus-thick.yml, the vendored manifest with its
#      image pinned and its memory limit lifted (the file's header says why);
#   4. the installer and nettools images, built for the nodes' architecture, tagged by content
#      and loaded onto the nodes;
#   5. the krafty chart with charts/krafty/values-dev.yaml, at the image just built.
#
#   scripts/cluster-up.sh                   # all of it (make up)
#   scripts/cluster-up.sh --without-chart   # 1-3 only: Tilt builds and deploys krafty (make cluster)
#
# Before it creates anything it checks what the cluster needs, and stops with exit code 2, a
# message and a fix when something is missing: the tools, a reachable Docker engine running
# Linux containers, an amd64 or arm64 host, cgroup v2, a kind new enough for the node image,
# and VRF support in the Docker host's kernel (the nodes are containers sharing it).
#
# Images are tagged with the first 12 hex digits of their image ID, so a rebuilt image has a
# new tag: re-running rolls the installer DaemonSet to what was just built, and records both
# references in target/kind/CLUSTER_NAME/images.env, where `make deployment` takes nettools'
# from. An unchanged source rebuilds from cache to the same ID: nothing rolls.
#
# Environment: CLUSTER_NAME (krafty); KRAFTY_VRF=no for a Docker host without VRF (the chart
# then gets charts/krafty/values-dev-novrf.yaml: its networks without krafty-vrf). Versions:
# kind/versions.env. Needs the network: the node image, Cilium's chart, and the images Cilium
# and Multus name are downloaded.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cluster_name=${CLUSTER_NAME:-krafty}
context=kind-$cluster_name
release_namespace=kube-system
vrf=${KRAFTY_VRF:-yes}
images_file=$repo/target/kind/$cluster_name/images.env
# Plain KEY=value lines; followed by `shellcheck -x` from the repository root.
# shellcheck source=kind/versions.env disable=SC1091
source "$repo/kind/versions.env"

usage() {
    echo "usage: [CLUSTER_NAME=NAME] [KRAFTY_VRF=no] scripts/cluster-up.sh [--without-chart]" >&2
    exit 2
}

install_chart=yes
case ${1:-} in
    "") ;;
    --without-chart) install_chart=no ;;
    *) usage ;;
esac
[[ $# -le 1 ]] || usage
if [[ ! $cluster_name =~ ^[a-z0-9]([a-z0-9-]*[a-z0-9])?$ ]]; then
    echo "cluster-up: CLUSTER_NAME must be lower-case letters, digits and '-', not $cluster_name" >&2
    usage
fi
[[ $vrf == yes || $vrf == no ]] || { echo "cluster-up: KRAFTY_VRF must be yes or no, not $vrf" >&2; usage; }

# refuse PROBLEM FIX...: a failed preflight. Nothing has been created when it is called.
refuse() {
    echo "cluster-up: $1" >&2
    shift
    local fix
    for fix in "$@"; do
        echo "  fix: $fix" >&2
    done
    exit 2
}

# version_at_least HAVE WANT: both vMAJOR.MINOR.PATCH (the v optional).
version_at_least() {
    local have want i
    IFS=. read -r -a have <<<"${1#v}"
    IFS=. read -r -a want <<<"${2#v}"
    for i in 0 1 2; do
        ((10#${have[i]:-0} == 10#${want[i]:-0})) && continue
        ((10#${have[i]:-0} > 10#${want[i]:-0}))
        return
    done
}

# --- preflight ---------------------------------------------------------------------------------

missing=()
for tool in docker kind kubectl helm jq curl; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    refuse "missing tools: ${missing[*]}" \
        "install them: docker (Docker Engine, or Docker Desktop), kind $KIND_MIN_VERSION or newer, kubectl, helm 3.8 or newer; jq and curl are used by make validate and the troubleshooting steps (README, \"What you need\")"
fi

# error_line TEXT: the line of a tool's output that says what went wrong.
error_line() {
    grep -m 1 -i 'error' <<<"$1" || tail -n 1 <<<"$1"
}

if ! docker_info=$(docker info --format '{{.OSType}} {{.Architecture}} {{.CgroupVersion}}' 2>/dev/null); then
    docker_error=$(docker info 2>&1 >/dev/null || true)
    refuse "docker cannot reach a Docker engine: $(error_line "$docker_error")" \
        "start it (Docker Desktop, or: sudo systemctl start docker)" \
        "if it runs: let this user use it (sudo usermod -aG docker \$USER, then log in again), or point DOCKER_HOST at it"
fi
read -r docker_os docker_arch cgroup_version <<<"$(tail -n 1 <<<"$docker_info")"

if [[ $docker_os != linux ]]; then
    refuse "the Docker engine runs ${docker_os:-unknown} containers; kind's nodes are Linux containers" \
        "switch Docker Desktop to Linux containers"
fi

case $docker_arch in
    x86_64 | amd64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) refuse "the Docker host is ${docker_arch:-of unknown architecture}; the kind node image and krafty's images exist for amd64 and arm64 only" \
        "use an x86_64 or arm64 (Apple silicon, Graviton, Ampere) machine" ;;
esac

if [[ $cgroup_version != 2 ]]; then
    refuse "the Docker host uses cgroup v${cgroup_version:-?}; Cilium without kube-proxy (kind/cluster.yaml: kubeProxyMode none) needs cgroup v2 for its socket load balancer, and has no fallback" \
        "Linux: boot with systemd.unified_cgroup_hierarchy=1 (the default of Debian 11, Ubuntu 21.10, Fedora 31 and later)" \
        "WSL2: in %UserProfile%\\.wslconfig, [wsl2] kernelCommandLine = cgroup_no_v1=all, then wsl --shutdown" \
        "Docker Desktop: update it (4.x uses cgroup v2)"
fi

kind_version=
if [[ $(kind version 2>/dev/null || true) =~ v[0-9]+\.[0-9]+\.[0-9]+ ]]; then
    kind_version=${BASH_REMATCH[0]}
fi
if [[ -z $kind_version ]] || ! version_at_least "$kind_version" "$KIND_MIN_VERSION"; then
    refuse "kind ${kind_version:-of unreadable version} is not $KIND_MIN_VERSION or newer, the release the pinned node image ($KIND_NODE_IMAGE) was built for" \
        "install kind $KIND_MIN_VERSION or newer (go install sigs.k8s.io/kind@$KIND_MIN_VERSION, or brew install kind)"
fi

if [[ $vrf == yes ]]; then
    # The nodes are containers on the Docker host's kernel: probe it with the node image, in a
    # throwaway container and network namespace (the probe may load the vrf module).
    echo "==> preflight: VRF support in the Docker host's kernel (pulls $KIND_NODE_IMAGE once)"
    probe_status=0
    probe_output=$(docker run --rm --network none --cap-add NET_ADMIN --entrypoint ip "$KIND_NODE_IMAGE" \
        link add krafty-probe type vrf table 4242 2>&1) || probe_status=$?
    case $probe_status in
        0) ;;
        125 | 126 | 127)
            refuse "could not run the VRF probe container: $(error_line "$probe_output")" \
                "docker pull $KIND_NODE_IMAGE must work (network, proxy, disk space)" ;;
        *)
            refuse "the Docker host's kernel cannot create VRF devices ($(error_line "$probe_output")); krafty's default network puts each pod in a VRF" \
                "Linux: sudo modprobe vrf (Ubuntu ships it in linux-modules-extra-\$(uname -r))" \
                "or run without VRF (Docker Desktop, WSL2): KRAFTY_VRF=no make up, KRAFTY_VRF=no make cluster && KRAFTY_VRF=no tilt up; the chart then gets charts/krafty/values-dev-novrf.yaml" ;;
    esac
fi

# --- the cluster -------------------------------------------------------------------------------

step() { echo "==> $*"; }
kube() { kubectl --context "$context" "$@"; }

step "kind cluster $cluster_name ($KIND_NODE_IMAGE, $arch)"
# Not `kind get clusters | grep -q`: under pipefail, grep's early exit can fail kind with
# SIGPIPE and the pipeline with it.
clusters=$(kind get clusters 2>/dev/null) || clusters=
if grep -qx -- "$cluster_name" <<<"$clusters"; then
    echo "exists; reusing it"
    node_versions=$(kube get nodes -o jsonpath='{.items[*].status.nodeInfo.kubeletVersion}' 2>/dev/null || true)
    wanted_version=${KIND_NODE_IMAGE#*:}
    wanted_version=${wanted_version%%@*}
    for node_version in $node_versions; do
        if [[ $node_version != "$wanted_version" ]]; then
            echo "cluster-up: warning: its nodes run Kubernetes $node_version, not $wanted_version (kind/versions.env); make down && make up recreates it" >&2
            break
        fi
    done
else
    # No --wait: the nodes stay NotReady until Cilium is installed.
    kind create cluster --name "$cluster_name" --image "$KIND_NODE_IMAGE" --config "$repo/kind/cluster.yaml"
fi

step "Cilium $CILIUM_VERSION (primary CNI, kube-proxy replacement)"
# k8sServiceHost: without kube-proxy, Cilium reaches the API server directly, at the
# control-plane node's name on kind's Docker network.
# cni.exclusive=false: by default Cilium moves every other CNI config out of /etc/cni/net.d,
# Multus' included.
helm upgrade --install cilium cilium --repo https://helm.cilium.io --version "$CILIUM_VERSION" \
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

step "Multus $MULTUS_VERSION (thick plugin, kind/multus/multus-thick.yml)"
kube apply -f "$repo/kind/multus/multus-thick.yml"
kube -n kube-system rollout status daemonset/kube-multus-ds --timeout=600s

if [[ $install_chart == no ]]; then
    step "ready: context $context"
    tilt_up="tilt up"
    [[ $vrf == yes ]] || tilt_up="KRAFTY_VRF=no tilt up"
    echo "next: $tilt_up (builds and deploys krafty and nettools, live-updates the plugins)"
    exit 0
fi

# build_image NAME DOCKERFILE CONTEXT: builds for the nodes' platform, tags NAME:<12 hex of the
# image ID>, removes NAME's older content tags, and prints the reference.
build_image() {
    local name=$1 dockerfile=$2 build_context=$3 iidfile id ref old
    iidfile=$(mktemp)
    docker build --platform "linux/$arch" --iidfile "$iidfile" -f "$dockerfile" "$build_context" >&2
    id=$(<"$iidfile")
    rm -f "$iidfile"
    id=${id#sha256:}
    [[ $id =~ ^[0-9a-f]{64}$ ]] || { echo "cluster-up: docker build of $name gave no image ID" >&2; exit 1; }
    ref=$name:${id:0:12}
    docker tag "sha256:$id" "$ref"
    while read -r old; do
        if [[ $old != "$ref" && $old =~ :[0-9a-f]{12}$ ]]; then
            docker rmi "$old" >/dev/null 2>&1 || echo "cluster-up: kept $old (in use)" >&2
        fi
    done < <(docker image ls --format '{{.Repository}}:{{.Tag}}' "$name")
    echo "$ref"
}

step "images for linux/$arch"
installer_image=$(build_image krafty-installer "$repo/installer/Dockerfile" "$repo")
nettools_image=$(build_image krafty-nettools "$repo/nettools/Dockerfile" "$repo/nettools")
echo "built $installer_image, $nettools_image"
kind load docker-image --name "$cluster_name" "$installer_image" "$nettools_image"
mkdir -p "$(dirname "$images_file")"
printf 'INSTALLER_IMAGE=%s\nNETTOOLS_IMAGE=%s\n' "$installer_image" "$nettools_image" >"$images_file"

step "krafty chart (release krafty in $release_namespace, image $installer_image)"
values=(--values "$repo/charts/krafty/values-dev.yaml")
[[ $vrf == yes ]] || values+=(--values "$repo/charts/krafty/values-dev-novrf.yaml")
# values-dev.yaml names the repository; the tag is the build's.
helm upgrade --install krafty "$repo/charts/krafty" \
    --kube-context "$context" --namespace "$release_namespace" \
    "${values[@]}" --set image.tag="${installer_image#*:}" \
    --wait --timeout 5m
kube -n "$release_namespace" rollout status daemonset/krafty-installer --timeout=300s

step "ready: context $context"
echo "next: make deployment (nettools at $nettools_image), then make validate"
