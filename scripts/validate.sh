#!/usr/bin/env bash
# validate.sh: checks, device by device, that a pod's krafty attachment is wired as designed.
#
# Against a cluster (the default), for the nettools Deployment of deploy/nettools.yaml:
#
#   scripts/validate.sh [--context CTX] [--namespace NS] [--deployment NAME] [--ifname net1] [--json]
#
#   the Deployment's readiness and its pod's phase; the pod's eth0 and net1 addresses and
#   Multus' network-status for net1; the NetworkAttachmentDefinition's chain; then on the pod's
#   node the host veth (found as net1's peer), the bridge it is enslaved to, the VRF the bridge
#   is enslaved to and its routing table, the node's route back to the pod, a ping from the pod
#   to each gateway; the installer pod on that node, its node annotation krafty.dev/plugins, and
#   the plugins' log entries for this attachment.
#
#   Across nodes, for every network stretched over the nodes (multiNode) that the Deployment's
#   pods are attached to: a ping from each pod to the addresses of every pod on another node,
#   over that network (at least two nodes must hold its pods); and on every node with an
#   installer, krafty's own account of the tunnels (`krafty-installer peers`): its node list
#   equals the cluster's Nodes and their InternalIPs, every multi-node VXLAN port floods to
#   exactly the other listed nodes, each node holding such a pod has its network's port, and
#   that port sends every pod of another node (its MAC in Multus' network-status) to that node.
#
#   Node-side checks need the node's network namespace. They run in a short-lived probe pod
#   pinned to the pod's node (hostNetwork, the nettools image, deleted on exit): that works on
#   any cluster whose nodes can run the nettools image, whereas `docker exec` into a node works
#   on kind only, the installer pod is not on the host network (nor meant to carry tools), and
#   `kubectl debug node/...` offers no reliable way to collect a command's output.
#
# Against this machine's network namespaces (--local; the sandbox and the tests), no kubectl:
#
#   scripts/validate.sh --local --pod-netns NS --container-id ID [--node-netns NS]
#       [--ifname net1] [--scope pod|network] [--network NAME] [--expect-vrf yes|no]
#       [--log-file PATH] [--installer PATH] [--json]
#
#   --node-netns  the namespace playing the node (default: this host's own)
#   --scope       pod: the attachment's own VRF and bridge; network: the network's shared ones
#   --expect-vrf  no on kernels without VRF support: the bridge then has no master
#   --log-file    also check the plugins' invocation log for this attachment's ADDs
#   --installer   the krafty-installer binary, which knows the device names (default: the one
#                 on PATH, else the repository's target/debug or target/release)
#
# The device names and marks come from krafty itself (`krafty-installer attachment`; in
# cluster mode run in the node's installer pod, which also names the pod's container ID from
# its attachment records: `krafty-installer attachments`), never derived here.
#
# Each check prints one line, `PASS name: detail` or `FAIL name: detail`, and the report ends
# with `validate: N passed, M failed` (--json prints the same as one JSON document instead).
# Exit status: 0 when every check passed, 1 when one failed (after the whole report), 2 for bad
# usage or a missing tool.
set -uo pipefail

usage() {
    sed -n '2,/^set -uo pipefail/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"
}

die_usage() {
    echo "validate.sh: $*" >&2
    echo "run scripts/validate.sh --help for usage" >&2
    exit 2
}

mode=cluster
json=no
context=""
namespace=default
deployment=nettools
ifname=net1
node_netns=""
pod_netns=""
container_id=""
scope=pod
network=krafty
expect_vrf=yes
log_file=""
installer=""

while [[ $# -gt 0 ]]; do
    case $1 in
        -h | --help) usage; exit 0 ;;
        --json) json=yes ;;
        --local) mode=local ;;
        --context | --namespace | --deployment | --ifname | --node-netns | --pod-netns | \
            --container-id | --scope | --network | --expect-vrf | --log-file | --installer)
            [[ $# -ge 2 && -n $2 ]] || die_usage "$1 needs a value"
            case $1 in
                --context) context=$2 ;;
                --namespace) namespace=$2 ;;
                --deployment) deployment=$2 ;;
                --ifname) ifname=$2 ;;
                --node-netns) node_netns=$2 ;;
                --pod-netns) pod_netns=$2 ;;
                --container-id) container_id=$2 ;;
                --scope) scope=$2 ;;
                --network) network=$2 ;;
                --expect-vrf) expect_vrf=$2 ;;
                --log-file) log_file=$2 ;;
                --installer) installer=$2 ;;
            esac
            shift
            ;;
        *) die_usage "unknown argument: $1" ;;
    esac
    shift
done

[[ $scope == pod || $scope == network ]] || die_usage "--scope must be pod or network, not $scope"
[[ $expect_vrf == yes || $expect_vrf == no ]] || die_usage "--expect-vrf must be yes or no, not $expect_vrf"
if [[ $mode == local ]]; then
    [[ -n $pod_netns ]] || die_usage "--local needs --pod-netns"
    [[ -n $container_id ]] || die_usage "--local needs --container-id"
    [[ $container_id =~ ^[A-Za-z0-9_.-]+$ ]] || die_usage "--container-id may hold letters, digits, '_', '.' and '-' only"
    if [[ -z $installer ]]; then
        repo=$(cd "$(dirname "$0")/.." && pwd)
        target=${CARGO_TARGET_DIR:-$repo/target}
        for candidate in "$(command -v krafty-installer)" "$target/debug/krafty-installer" "$target/release/krafty-installer"; do
            [[ -n $candidate && -x $candidate ]] && installer=$candidate && break
        done
    fi
    [[ -n $installer && -x $installer ]] || { echo "validate.sh: missing tools: krafty-installer (cargo build, or --installer PATH)" >&2; exit 2; }
    required_tools=(ip jq)
else
    required_tools=(kubectl jq)
fi
missing=()
for tool in "${required_tools[@]}"; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
[[ ${#missing[@]} -eq 0 ]] || { echo "validate.sh: missing tools: ${missing[*]}" >&2; exit 2; }

# --- the report --------------------------------------------------------------------------------

results=()

record() {
    local detail=${3//$'\t'/ }
    detail=${detail//$'\n'/ }
    results+=("$1"$'\t'"$2"$'\t'"$detail")
    [[ $json == yes ]] || printf '%s %s: %s\n' "$1" "$2" "$detail"
}
pass() { record PASS "$1" "$2"; }
fail() { record FAIL "$1" "$2"; }
check() { # check NAME CONDITION-STATUS DETAIL...: PASS when the status is 0
    local name=$1 status=$2
    shift 2
    if [[ $status -eq 0 ]]; then pass "$name" "$*"; else fail "$name" "$*"; fi
}

finish() {
    local passed=0 failed=0 line
    for line in "${results[@]}"; do
        if [[ $line == PASS$'\t'* ]]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
    done
    if [[ $json == yes ]]; then
        printf '%s\n' "${results[@]}" | jq -R -s --argjson passed "$passed" --argjson failed "$failed" '
            split("\n") | map(select(length > 0) | split("\t")
                | {status: .[0], name: .[1], detail: .[2]})
            | {checks: ., passed: $passed, failed: $failed}'
    else
        echo "validate: $passed passed, $failed failed"
    fi
    [[ $failed -eq 0 ]] && exit 0
    exit 1
}

# --- where commands run -----------------------------------------------------------------------

kube_args=()
[[ -n $context ]] && kube_args+=(--context "$context")
kube() { kubectl "${kube_args[@]}" "$@"; }

pod=""        # cluster: the nettools pod
container=""  # cluster: its first container
probe_pod=""  # cluster: the hostNetwork pod on the same node

# node_ip ARGS: `ip` in the node's network namespace.
node_ip() {
    if [[ $mode == local ]]; then
        if [[ -n $node_netns ]]; then ip -n "$node_netns" "$@"; else ip "$@"; fi
    else
        kube -n "$namespace" exec "$probe_pod" -- ip "$@"
    fi
}

# pod_run COMMAND...: a command in the pod's network namespace.
pod_run() {
    if [[ $mode == local ]]; then
        ip netns exec "$pod_netns" "$@"
    else
        kube -n "$namespace" exec "$pod" -c "$container" -- "$@"
    fi
}

# JSON of one link (ip -j -d), or nothing when it does not exist.
node_link() { node_ip -j -d link show dev "$1" 2>/dev/null | jq -c '.[0] // empty' 2>/dev/null; }
pod_link() { pod_run ip -j -d link show dev "$1" 2>/dev/null | jq -c '.[0] // empty' 2>/dev/null; }
# Global addresses of a device as a JSON list of "address/prefix".
# Reads `ip -j addr show dev X`; no input (no such device) gives [].
global_addresses() {
    jq -s -c '[.[0][0].addr_info[]? | select(.scope == "global") | "\(.local)/\(.prefixlen)"]' 2>/dev/null || echo '[]'
}
field() { jq -r "$1 // empty" <<<"$2"; }
is_up() { jq -e '.flags | index("UP")' <<<"$1" >/dev/null; }

# --- krafty's own account: device names, and (cluster) the node's attachments ----------------

installer_pod=""  # cluster: namespace/name of the installer pod on the pod's node

# krafty_tool ARGS...: krafty-installer ARGS, here (--local) or in the node's installer pod.
krafty_tool() {
    if [[ $mode == local ]]; then
        "$installer" "$@"
    else
        kube -n "${installer_pod%%/*}" exec "${installer_pod#*/}" -- krafty-installer "$@"
    fi
}

expected_names() { # sets vrf_name, bridge_name, veth_name, vrf_mark, bridge_mark, veth_mark
    local names
    names=$(krafty_tool attachment --network "$network" --container-id "$container_id" \
        --ifname "$ifname" --scope "$scope" 2>&1)
    if ! jq -e .hostVeth <<<"$names" >/dev/null 2>&1; then
        fail device-names "krafty-installer attachment: ${names:-no answer}"
        return 1
    fi
    veth_name=$(field .hostVeth "$names")
    veth_mark=$(field .mark "$names")
    vrf_name=$(field .vrf "$names")
    vrf_mark=$(field .vrfMark "$names")
    bridge_name=$(field .bridge "$names")
    bridge_mark=$(field .bridgeMark "$names")
}

# A device's mark is the first word of its alias; flags may follow.
check_mark() { # check_mark CHECK-NAME LINK-JSON EXPECTED
    local alias
    alias=$(field .ifalias "$2")
    if [[ ${alias%% *} == "$3" ]]; then
        pass "$1" "marked $alias"
    else
        fail "$1" "alias ${alias:-<none>}, expected $3"
    fi
}

# --- the checks shared by both modes ----------------------------------------------------------

pod_addresses="[]"

pod_side_checks() {
    pod_if=$(pod_link "$ifname")
    if [[ -z $pod_if ]]; then
        fail pod-interface "no $ifname in the pod's network namespace"
    else
        local kind
        kind=$(field .linkinfo.info_kind "$pod_if")
        check pod-interface "$([[ $kind == veth ]] && is_up "$pod_if"; echo $?)" \
            "$ifname: kind ${kind:-?}, $(is_up "$pod_if" && echo up || echo down)"
    fi
    pod_addresses=$(pod_run ip -j addr show dev "$ifname" 2>/dev/null | global_addresses)
    check pod-addresses "$([[ $pod_addresses != "[]" ]]; echo $?)" \
        "$ifname: $(jq -r 'if length == 0 then "no global address" else join(", ") end' <<<"$pod_addresses")"
}

node_side_checks() {
    expected_names || return
    local veth bridge vrf master kind table

    # The host end of the pair, and that it is the peer of the pod's interface.
    veth=$(node_link "$veth_name")
    if [[ -z $veth ]]; then
        fail host-veth "no $veth_name on the node"
    else
        kind=$(field .linkinfo.info_kind "$veth")
        check host-veth "$([[ $kind == veth ]] && is_up "$veth"; echo $?)" \
            "$veth_name: kind ${kind:-?}, $(is_up "$veth" && echo up || echo down)"
        check_mark veth-mark "$veth" "$veth_mark"
        if [[ -n ${pod_if:-} ]]; then
            local veth_index veth_peer pod_index pod_peer
            veth_index=$(field .ifindex "$veth")
            veth_peer=$(field .link_index "$veth")
            pod_index=$(field .ifindex "$pod_if")
            pod_peer=$(field .link_index "$pod_if")
            # Each end names the other as its link, and the host end's peer is in another
            # namespace (link_netnsid).
            local paired=1
            [[ $veth_peer == "$pod_index" && $pod_peer == "$veth_index" &&
                -n $(field .link_netnsid "$veth") ]] && paired=0
            check veth-peer "$paired" "$veth_name (ifindex $veth_index, peer ${veth_peer:-?}) <->" \
                "pod $ifname (ifindex $pod_index, peer ${pod_peer:-?})"
        else
            fail veth-peer "the pod has no $ifname to pair with"
        fi
        master=$(field .master "$veth")
        check veth-master "$([[ $master == "$bridge_name" ]]; echo $?)" \
            "$veth_name is enslaved to ${master:-nothing}, expected $bridge_name"
    fi

    # The bridge.
    bridge=$(node_link "$bridge_name")
    if [[ -z $bridge ]]; then
        fail bridge "no $bridge_name on the node"
        return
    fi
    kind=$(field .linkinfo.info_kind "$bridge")
    check bridge "$([[ $kind == bridge ]] && is_up "$bridge"; echo $?)" \
        "$bridge_name: kind ${kind:-?}, $(is_up "$bridge" && echo up || echo down)"
    check_mark bridge-mark "$bridge" "$bridge_mark"
    gateways=$(node_ip -j addr show dev "$bridge_name" 2>/dev/null | global_addresses)
    check bridge-addresses "$([[ $gateways != "[]" ]]; echo $?)" \
        "$bridge_name: $(jq -r 'if length == 0 then "no gateway address" else join(", ") end' <<<"$gateways")"

    # The VRF, or its absence.
    master=$(field .master "$bridge")
    route_scope=()
    if [[ $expect_vrf == yes ]]; then
        check bridge-master "$([[ $master == "$vrf_name" ]]; echo $?)" \
            "$bridge_name is enslaved to ${master:-nothing}, expected $vrf_name"
        vrf=$(node_link "$vrf_name")
        if [[ -z $vrf ]]; then
            fail vrf "no $vrf_name on the node"
            return
        fi
        kind=$(field .linkinfo.info_kind "$vrf")
        table=$(field .linkinfo.info_data.table "$vrf")
        check vrf "$([[ $kind == vrf && -n $table ]] && is_up "$vrf"; echo $?)" \
            "$vrf_name: kind ${kind:-?}, table ${table:-?}, $(is_up "$vrf" && echo up || echo down)"
        check_mark vrf-mark "$vrf" "$vrf_mark"
        route_scope=(vrf "$vrf_name")
    else
        check bridge-master "$([[ -z $master ]]; echo $?)" \
            "$bridge_name is enslaved to ${master:-nothing}; no VRF expected"
        table=main
    fi

    # The table holds the subnet routes of the bridge, and the node routes each pod address
    # through the bridge.
    local family families=() routes
    jq -e 'any(.[]; contains(":") | not)' <<<"$gateways" >/dev/null && families+=(4)
    jq -e 'any(.[]; contains(":"))' <<<"$gateways" >/dev/null && families+=(6)
    for family in "${families[@]}"; do
        routes=$(node_ip -j "-$family" route show table "$table" 2>/dev/null |
            jq -r --arg dev "$bridge_name" '[.[] | select(.dev == $dev) | .dst] | join(", ")' 2>/dev/null)
        check "table-routes-ipv$family" "$([[ -n $routes ]]; echo $?)" \
            "table $table via $bridge_name: ${routes:-none}"
    done
    local address dev
    for address in $(jq -r '.[] | sub("/.*"; "")' <<<"$pod_addresses"); do
        dev=$(node_ip -j route get "$address" "${route_scope[@]}" 2>/dev/null | jq -r '.[0].dev // empty' 2>/dev/null)
        check route-to-pod "$([[ $dev == "$bridge_name" ]]; echo $?)" \
            "the node routes $address via ${dev:-nothing}${route_scope[*]:+ in ${route_scope[*]}}, expected $bridge_name"
    done

    # The data path: the pod reaches each gateway over the pair and the bridge.
    for address in $(jq -r '.[] | sub("/.*"; "")' <<<"$gateways"); do
        pod_run ping -c 1 -W 2 "$address" >/dev/null 2>&1
        check ping-gateway "$?" "pod -> $address"
    done
}

# The plugins' invocation log: the latest ADD of each plugin of the chain for this container.
log_checks() { # log_checks LOG-TEXT PLUGIN...
    local text=$1 plugin outcome problems=()
    shift
    for plugin in "$@"; do
        outcome=$(jq -r --arg id "$container_id" --arg ifname "$ifname" --arg plugin "$plugin" \
            'select(.containerId == $id and .ifname == $ifname and .plugin == $plugin and .command == "ADD") | .outcome' \
            <<<"$text" 2>/dev/null | tail -n 1)
        [[ $outcome == ok ]] || problems+=("$plugin: ${outcome:-no ADD}")
    done
    if [[ ${#problems[@]} -eq 0 ]]; then
        pass plugin-log "ADD ok by $*"
    else
        fail plugin-log "${problems[*]}"
    fi
}

chain_plugins() {
    if [[ $expect_vrf == yes ]]; then echo krafty-vrf krafty-bridge krafty-veth; else echo krafty-bridge krafty-veth; fi
}

# --- --local -----------------------------------------------------------------------------------

if [[ $mode == local ]]; then
    if ! ip netns exec "$pod_netns" true 2>/dev/null; then
        fail pod-netns "no network namespace $pod_netns"
        finish
    fi
    if [[ -n $node_netns ]] && ! ip netns exec "$node_netns" true 2>/dev/null; then
        fail node-netns "no network namespace $node_netns"
        finish
    fi
    pod_side_checks
    node_side_checks
    if [[ -n $log_file ]]; then
        if [[ -r $log_file ]]; then
            # shellcheck disable=SC2046 # one word per plugin
            log_checks "$(cat "$log_file")" $(chain_plugins)
        else
            fail plugin-log "cannot read $log_file"
        fi
    fi
    finish
fi

# --- cluster -----------------------------------------------------------------------------------

if ! kube version --request-timeout=10s >/dev/null 2>&1; then
    fail cluster "cannot reach the cluster${context:+ of context $context}"
    finish
fi

deploy_json=$(kube -n "$namespace" get deployment "$deployment" -o json 2>/dev/null)
if [[ -z $deploy_json ]]; then
    fail deployment-ready "no deployment $namespace/$deployment (make deployment)"
    finish
fi
ready=$(jq -r '"\(.status.readyReplicas // 0)/\(.spec.replicas // 1)"' <<<"$deploy_json")
check deployment-ready "$([[ ${ready%/*} -ge 1 && ${ready%/*} == "${ready#*/}" ]]; echo $?)" \
    "$namespace/$deployment: $ready ready"

selector=$(jq -r '.spec.selector.matchLabels | to_entries | map("\(.key)=\(.value)") | join(",")' <<<"$deploy_json")
# Every pod of the Deployment, running ones first; the first is the one checked in depth.
pods_json=$(kube -n "$namespace" get pods -l "$selector" -o json 2>/dev/null |
    jq -c '[.items[] | select(.metadata.deletionTimestamp == null)] | map(select(.status.phase == "Running")) + map(select(.status.phase != "Running"))')
pod_json=$(jq -c '.[0] // empty' <<<"${pods_json:-[]}")
if [[ -z $pod_json ]]; then
    fail pod-running "no pod of $namespace/$deployment"
    finish
fi
pod=$(field .metadata.name "$pod_json")
container=$(field '.spec.containers[0].name' "$pod_json")
node=$(field .spec.nodeName "$pod_json")
phase=$(field .status.phase "$pod_json")
check pod-running "$([[ $phase == Running ]]; echo $?)" "$pod on node ${node:-?}: $phase"
[[ $phase == Running ]] || finish

# Multus' account of the attachment, and the network's chain from its NetworkAttachmentDefinition.
status_entry=$(jq -r '.metadata.annotations["k8s.v1.cni.cncf.io/network-status"] // "[]"' <<<"$pod_json" |
    jq -c --arg ifname "$ifname" '.[] | select(.interface == $ifname)' 2>/dev/null)
check network-status "$([[ -n $status_entry ]]; echo $?)" \
    "${status_entry:-Multus reports no $ifname}"
nad=$(field .name "$status_entry")
if [[ -n $nad ]]; then
    config=$(kube -n "${nad%%/*}" get network-attachment-definitions "${nad#*/}" -o json 2>/dev/null | jq -r '.spec.config // empty')
    chain=$(jq -r '[.plugins[].type] | join(",")' <<<"$config" 2>/dev/null)
    check nad-config "$([[ $chain == *krafty-bridge*krafty-veth* ]]; echo $?)" "$nad: chain ${chain:-unreadable}"
    network=$(jq -r '.name // empty' <<<"$config" 2>/dev/null)
    scope=$(jq -r '[.plugins[] | select(.type == "krafty-bridge") | .scope // "pod"][0] // "pod"' <<<"$config" 2>/dev/null)
    [[ $chain == *krafty-vrf* ]] && expect_vrf=yes || expect_vrf=no
fi

eth0=$(pod_run ip -j addr show dev eth0 2>/dev/null | global_addresses)
check pod-eth0 "$([[ $eth0 != "[]" ]]; echo $?)" \
    "eth0 (primary network): $(jq -r 'if length == 0 then "no global address" else join(", ") end' <<<"$eth0")"
pod_side_checks
if [[ -n $status_entry ]]; then
    missing_ips=$(jq -r --argjson seen "$pod_addresses" '[.ips[]? as $ip | select([$seen[] | sub("/.*"; "")] | index($ip) | not) | $ip] | join(", ")' <<<"$status_entry")
    if [[ -z $missing_ips ]]; then
        pass network-status-ips "every address Multus reports is on $ifname"
    else
        fail network-status-ips "Multus reports $missing_ips, not on $ifname"
    fi
fi

# What the pod itself reports over HTTP (nettools-server).
served=$(pod_run curl -s --max-time 5 http://127.0.0.1:8080/ 2>/dev/null |
    jq -r --arg ifname "$ifname" '[.interfaces[]? | select(.ifname == $ifname)] | length' 2>/dev/null)
if [[ $served == 1 ]]; then
    pass nettools-http "GET / on port 8080 lists $ifname"
else
    fail nettools-http "GET / on port 8080 does not list $ifname"
fi

# The probe pod on the same node.
image=$(field '.spec.containers[0].image' "$pod_json")
probe_pod="krafty-validate-$(date +%s)-$$"
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() { kube -n "$namespace" delete pod "$probe_pod" --wait=false --ignore-not-found >/dev/null 2>&1; }
trap cleanup EXIT
if ! kube -n "$namespace" apply -f - >/dev/null 2>&1 <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $probe_pod
  labels:
    app.kubernetes.io/name: krafty-validate
spec:
  nodeName: $node
  hostNetwork: true
  restartPolicy: Never
  # Removes itself even if this script is killed before it can.
  activeDeadlineSeconds: 300
  terminationGracePeriodSeconds: 0
  tolerations:
    - operator: Exists
  containers:
    - name: probe
      image: $image
      imagePullPolicy: IfNotPresent
      command: ["sleep", "300"]
      volumeMounts:
        - name: krafty-log
          mountPath: /var/log/krafty
          readOnly: true
  volumes:
    - name: krafty-log
      hostPath:
        path: /var/log/krafty
        type: DirectoryOrCreate
EOF
then
    fail node-probe "cannot create the probe pod $probe_pod on $node"
    finish
fi
if ! kube -n "$namespace" wait --for=condition=Ready "pod/$probe_pod" --timeout=90s >/dev/null 2>&1; then
    fail node-probe "the probe pod $probe_pod on $node did not become ready"
    finish
fi

# The installer on that node: what it reported, and krafty's account of the node.
installer=$(kube get pods -A -l app.kubernetes.io/name=krafty,app.kubernetes.io/component=installer \
    --field-selector "spec.nodeName=$node" -o json 2>/dev/null |
    jq -r '.items[0] | select(.) | "\(.metadata.namespace)/\(.metadata.name) \(any(.status.conditions[]?; .type == "Ready" and .status == "True"))"')
if [[ -n $installer ]]; then
    check installer "$([[ $installer == *" true" ]]; echo $?)" "${installer% *} ready: ${installer##* }"
    installer_pod=${installer% *}
else
    fail installer "no installer pod on $node"
fi

# The pod's attachment as the node's records have it; its container ID names everything else.
if [[ -n $installer_pod ]]; then
    listed=$(krafty_tool attachments --json 2>/dev/null |
        jq -c --arg pod "$namespace/$pod" --arg ifname "$ifname" \
            '[.[] | select(.pod == $pod and .ifname == $ifname and .record != "")][0] // empty' 2>/dev/null)
    container_id=$(field .containerId "$listed")
    if [[ -n $container_id ]]; then
        pass node-devices "$namespace/$pod's $ifname on $node: network $(field .network "$listed"), container ${container_id:0:12}"
        node_side_checks
    else
        fail node-devices "the installer on $node has no record of $namespace/$pod's $ifname"
    fi
fi
annotation=$(kube get node "$node" -o json 2>/dev/null | jq -r '.metadata.annotations["krafty.dev/plugins"] // empty')
absent=()
# Its value is a JSON object keyed by plugin name.
for plugin in $(chain_plugins); do
    jq -e --arg plugin "$plugin" 'has($plugin)' <<<"$annotation" >/dev/null 2>&1 || absent+=("$plugin")
done
check node-annotation "$([[ -n $annotation && ${#absent[@]} -eq 0 ]]; echo $?)" \
    "krafty.dev/plugins on $node: ${annotation:-<none>}${absent[*]:+ (missing ${absent[*]})}"
if [[ -n $container_id ]]; then
    # shellcheck disable=SC2046 # one word per plugin
    log_checks "$(kube -n "$namespace" exec "$probe_pod" -- tail -n 5000 /var/log/krafty/krafty.log 2>/dev/null)" $(chain_plugins)
fi

# --- across nodes: networks stretched over the nodes (multiNode) ------------------------------

# One line per attachment of a running pod to a multi-node network: POD NODE IFNAME NAD IPS,
# IPS comma-separated. A NAD counts as multi-node when its krafty-bridge has multiNode.
declare -A multi_node_nads=()
stretched=()
while IFS=$'\t' read -r a_pod a_node a_ifname a_nad a_mac a_ips; do
    [[ -n $a_nad ]] || continue
    if [[ -z ${multi_node_nads[$a_nad]:-} ]]; then
        multi_node_nads[$a_nad]=$(kube -n "${a_nad%%/*}" get network-attachment-definitions "${a_nad#*/}" -o json 2>/dev/null |
            jq -r '.spec.config // "{}" | fromjson | any(.plugins[]?; .type == "krafty-bridge" and .multiNode != null)' 2>/dev/null)
    fi
    [[ ${multi_node_nads[$a_nad]} == true ]] && stretched+=("$a_pod $a_node $a_ifname $a_nad $a_mac $a_ips")
done < <(jq -r '.[] | select(.status.phase == "Running") | . as $p
    | (.metadata.annotations["k8s.v1.cni.cncf.io/network-status"] // "[]" | fromjson)[]
    | select(.default != true and .name != null and (.name | contains("/")))
    | [$p.metadata.name, $p.spec.nodeName, .interface, .name, (.mac // "-" | ascii_downcase), ((.ips // []) | join(","))]
    | @tsv' <<<"$pods_json" 2>/dev/null)

# exec_in POD COMMAND...: a command in another pod of the Deployment (same container name).
exec_in() { local target=$1; shift; kube -n "$namespace" exec "$target" -c "$container" -- "$@"; }

if [[ ${#stretched[@]} -gt 0 ]]; then
    for nad in $(printf '%s\n' "${stretched[@]}" | awk '{print $4}' | sort -u); do
        nodes_of_nad=$(printf '%s\n' "${stretched[@]}" | awk -v nad="$nad" '$4 == nad {print $2}' | sort -u)
        if [[ $(wc -l <<<"$nodes_of_nad") -lt 2 ]]; then
            fail cross-node "$nad: every pod of $namespace/$deployment is on node ${nodes_of_nad:-?}; nothing to reach across nodes (make deployment spreads them)"
            continue
        fi
        for from in "${stretched[@]}"; do
            read -r f_pod f_node f_ifname f_nad _ <<<"$from"
            [[ $f_nad == "$nad" ]] || continue
            for to in "${stretched[@]}"; do
                read -r t_pod t_node t_ifname t_nad _ t_ips <<<"$to"
                [[ $t_nad == "$nad" && $t_node != "$f_node" ]] || continue
                if [[ -z $t_ips ]]; then
                    fail cross-node-ping "$t_pod on $t_node has no address on $nad ($t_ifname)"
                    continue
                fi
                for address in ${t_ips//,/ }; do
                    exec_in "$f_pod" ping -c 1 -W 2 "$address" >/dev/null 2>&1
                    check cross-node-ping "$?" "$f_pod ($f_node, $f_ifname) -> $t_pod ($t_node) $address over $nad"
                done
            done
        done
    done

    # Every node's tunnels, as the node's installer sees them.
    cluster_nodes=$(kube get nodes -o json 2>/dev/null |
        jq -c '[.items[] | .metadata.name as $n | .status.addresses[]? | select(.type == "InternalIP") | "\($n) \(.address)"] | sort')
    installers=$(kube get pods -A -l app.kubernetes.io/name=krafty,app.kubernetes.io/component=installer -o json 2>/dev/null |
        jq -r '.items[] | select(.spec.nodeName) | "\(.spec.nodeName) \(.metadata.namespace)/\(.metadata.name)"')
    [[ -n $installers ]] || fail tunnel-peers "no installer pod in the cluster"
    while read -r i_node i_pod; do
        [[ -n $i_pod ]] || continue
        installer_pod=$i_pod
        peers=$(krafty_tool peers --json 2>&1)
        if ! jq -e '.ports' <<<"$peers" >/dev/null 2>&1; then
            fail node-list "$i_node: krafty-installer peers: ${peers:-no answer}"
            continue
        fi
        listed=$(jq -c '[.nodes[]? | "\(.name) \(.address)"] | sort' <<<"$peers")
        check node-list "$([[ $listed == "$cluster_nodes" && $listed != "[]" ]]; echo $?)" \
            "$i_node: the installer lists $(jq -r 'if length == 0 then "no node" else join(", ") end' <<<"$listed"); the cluster has $(jq -r 'if length == 0 then "no node" else join(", ") end' <<<"${cluster_nodes:-[]}")"
        while IFS=$'\t' read -r p_network p_port p_ok p_detail; do
            [[ -n $p_port ]] || continue
            check tunnel-peers "$([[ $p_ok == true ]]; echo $?)" "$i_node $p_port (network $p_network): $p_detail"
        done < <(jq -r '.ports[] | [.network, .port,
                (.missing == [] and .extra == [] and .expected != [] | tostring),
                "floods to \(if .floodTo == [] then "nobody" else .floodTo | join(", ") end)\(if .missing != [] then "; missing \(.missing | join(", "))" else "" end)\(if .extra != [] then "; extra \(.extra | join(", "))" else "" end)\(if .expected == [] then "; no other node listed" else "" end)"] | @tsv' <<<"$peers")
        # A node holding a pod of a multi-node network holds the network's port.
        for nad in $(printf '%s\n' "${stretched[@]}" | awk -v node="$i_node" '$2 == node {print $4}' | sort -u); do
            net=$(kube -n "${nad%%/*}" get network-attachment-definitions "${nad#*/}" -o json 2>/dev/null | jq -r '.spec.config // "{}" | fromjson | .name // empty')
            if jq -e --arg net "$net" 'any(.ports[]; .network == $net)' <<<"$peers" >/dev/null; then
                pass tunnel-port "$i_node: network $net ($nad) has its VXLAN port"
            else
                fail tunnel-port "$i_node: network ${net:-?} ($nad) has no VXLAN port, yet a pod on it"
                continue
            fi
            # The installer sends each pod of another node on it to that node alone (it knows
            # the pods of NADs named as their network; the others are flooded to).
            [[ ${nad#*/} == "$net" ]] || continue
            while read -r r_pod r_node _ r_nad r_mac _; do
                [[ $r_nad == "$nad" && $r_node != "$i_node" && $r_mac != - ]] || continue
                sent_to=$(jq -r --arg net "$net" --arg mac "$r_mac" \
                    '[.ports[] | select(.network == $net) | .remoteMacs[$mac] // empty] | first // "nowhere"' <<<"$peers")
                node_addresses=$(jq -r --arg node "$r_node" '.[] | select(startswith($node + " ")) | sub("^[^ ]+ "; "")' <<<"${cluster_nodes:-[]}")
                check tunnel-macs "$(grep -qxF -- "$sent_to" <<<"$node_addresses"; echo $?)" \
                    "$i_node: $r_pod's $r_mac (on $r_node) goes to $sent_to over network $net"
            done < <(printf '%s\n' "${stretched[@]}")
        done
    done <<<"$installers"
fi
finish
