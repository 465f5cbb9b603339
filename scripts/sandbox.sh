#!/usr/bin/env bash
# sandbox.sh: krafty's main job on a machine without a cluster, in network namespaces.
#
#   scripts/sandbox.sh [up] [-- CMD [ARGS...]]     (make sandbox)
#   scripts/sandbox.sh down                        (make sandbox-down)
#
# up   builds the plugins, nettools-server and the libcni driver (tools/cnidriver); renders the
#      chart's default NetworkAttachmentDefinition (default/krafty) with the real Helm SDK
#      (tests/deploy/render_nads.py); then creates a "node" and two "pods", server and client,
#      as network namespaces, and attaches each pod as net1 with that conflist through the
#      libcni driver and the real host-local; runs nettools-server in the server pod; runs
#      scripts/validate.sh --local for each pod; fetches the server's JSON across net1; and
#      checks that the client pod cannot reach the server. An earlier sandbox of the same name
#      is removed first.
#
#      The default network puts each pod in a VRF of its own (scope: pod), so the two pods are
#      isolated from each other by design: the client's attempt to reach the server across its
#      net1 must fail, and the server's JSON is fetched across net1 from the node, through the
#      server's VRF (a socket bound to the VRF device), the path this network offers.
#
#      On a kernel with VRF support the sandbox stays up afterwards (nettools-server keeps
#      running) until `sandbox.sh down`. On a kernel without, it says so and runs itself in the
#      VM of scripts/vm-run.sh (Debian's kernel under qemu, about a minute to boot): there it is
#      built, checked and removed again within the one boot, since the VM's namespaces and /run
#      vanish with it; nothing is left on this machine.
#
#      CMD, if given, runs while the sandbox is up (after the report; in the VM, before the
#      teardown), with KRAFTY_SANDBOX_JSON naming the file that describes it: the namespaces,
#      and per pod its container ID, address, devices and validate.sh arguments.
#
# down removes every trace of the sandbox from where it runs: processes in its namespaces, the
#      namespaces (and with the node's, every VRF, bridge and veth the plugins made), the
#      plugins' state, log and locks, host-local's leases, libcni's cache, and the rendered
#      conflist. Idempotent.
#
# in-vm is what `up` runs inside the VM: create, report, CMD, then remove; it expects `up` to
#      have built and rendered everything already.
#
# Nothing touches this machine's own interfaces or krafty's node paths: the node is a network
# namespace of its own, and the plugins, host-local and libcni keep everything below
# /run/$KRAFTY_SANDBOX (KRAFTY_LOG_ROOT, KRAFTY_STATE_ROOT and KRAFTY_RUN_DIR point there, and
# the conflist's ipam block gets a dataDir there; that is the only change to the chart's
# conflist).
#
# Environment: KRAFTY_SANDBOX  the sandbox's name, prefix of everything it makes (default
# krafty-sandbox). Needs root and cargo; `up` installs what else it misses with
# scripts/setup.sh: mode sandbox (go with libcni's source for scripts/build-cnidriver.sh,
# containernetworking-plugins for host-local, python3 with the Helm SDK, ip, jq, curl, ping), and
# on a kernel without VRF mode vm (what scripts/vm-run.sh needs).
#
# Exit status: 0 when every check passed (and CMD succeeded), 1 when one failed, 2 for bad
# usage or a missing prerequisite; scripts/vm-run.sh's 124/125 when the VM times out or cannot
# run.
set -uo pipefail

usage() {
    sed -n '2,/^set -uo pipefail/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"
}

die() {
    echo "sandbox.sh: $*" >&2
    exit 2
}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
[[ $target == /* ]] || target=$PWD/$target
name=${KRAFTY_SANDBOX:-krafty-sandbox}
[[ $name =~ ^[a-z][a-z0-9-]{0,23}$ ]] ||
    die "KRAFTY_SANDBOX must be a lower-case letter then up to 23 letters, digits or '-', not '$name'"

command=up
case ${1:-} in
    -h | --help) usage; exit 0 ;;
    up | down | in-vm) command=$1; shift ;;
esac
after=()
if [[ $# -gt 0 ]]; then
    [[ $1 == -- ]] || die "unknown argument: $1 (run scripts/sandbox.sh --help)"
    shift
    [[ $# -gt 0 ]] || die "'--' needs a command after it"
    [[ $command != down ]] || die "down takes no command"
    after=("$@")
fi

[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces)"

node=$name-node
pods=(server client)
vrf_probe=$name-vrf-probe
# Written by the plugins, host-local, libcni and nettools-server: a tmpfs, gone at reboot.
runtime_dir=/run/$name
# Made on this machine before any VM boots (the VM shares the target directory, and builds
# slowly under emulation).
prepared_dir=$target/$name
chart_conflist=$prepared_dir/default_krafty.conflist
description=$runtime_dir/sandbox.json
network_conflist=$runtime_dir/krafty.conflist
log_file=$runtime_dir/log/krafty.log
cni_path=$target/debug:/usr/lib/cni
port=8080

say() { echo "sandbox: $*"; }

netns_exists() { [[ -e /run/netns/$1 ]]; }

# --- down -------------------------------------------------------------------------------------

# Ends the processes in a namespace (nettools-server, started by `up`), by their ids.
end_processes_in() {
    local netns=$1 pids tries
    mapfile -t pids < <(ip netns pids "$netns" 2>/dev/null)
    [[ ${#pids[@]} -gt 0 ]] || return 0
    kill -TERM "${pids[@]}" 2>/dev/null
    for ((tries = 0; tries < 50; tries++)); do
        mapfile -t pids < <(ip netns pids "$netns" 2>/dev/null)
        [[ ${#pids[@]} -gt 0 ]] || return 0
        sleep 0.1
    done
    kill -KILL "${pids[@]}" 2>/dev/null
}

# Removes what the sandbox made at run time; prints one line per thing removed. The plugins
# are not asked to DEL: everything they made lives in the node's namespace and below
# runtime_dir, which go as a whole, even after an ADD that was cut short.
remove_runtime() {
    local netns
    for netns in "$node" "${pods[@]/#/$name-}" "$vrf_probe"; do
        netns_exists "$netns" || continue
        end_processes_in "$netns"
        ip netns del "$netns" && echo "removed network namespace $netns"
    done
    if [[ -e $runtime_dir ]]; then
        rm -rf "$runtime_dir" && echo "removed $runtime_dir"
    fi
}

down() {
    local removed line
    removed=$(
        remove_runtime
        if [[ -e $prepared_dir ]]; then
            rm -rf "$prepared_dir" && echo "removed $prepared_dir"
        fi
    )
    if [[ -n $removed ]]; then
        while IFS= read -r line; do say "$line"; done <<<"$removed"
    else
        say "nothing to remove: no sandbox $name here"
    fi
}

if [[ $command == down ]]; then
    down
    exit 0
fi

# --- up ---------------------------------------------------------------------------------------

# What the sandbox needs, installed when missing; in the VM, the host's, checked before it booted.
if [[ $command == up ]]; then
    command -v cargo >/dev/null || die "cargo is not on PATH (install Rust with rustup)"
    "$repo/scripts/setup.sh" sandbox || die "scripts/setup.sh could not install what the sandbox needs"
fi

# The plugin binaries, nettools-server, the driver and the conflist, before any VM boots.
prepare() {
    say "building the plugins, nettools-server and the libcni driver"
    cargo build --quiet -p krafty-vrf -p krafty-bridge -p krafty-veth -p nettools-server ||
        die "cargo build failed"
    "$repo/scripts/build-cnidriver.sh" "$target/cnidriver" || die "scripts/build-cnidriver.sh failed"
    say "rendering the chart's default NetworkAttachmentDefinition with the Helm SDK"
    rm -rf "$prepared_dir"
    python3 "$repo/tests/deploy/render_nads.py" "$prepared_dir" >/dev/null ||
        die "tests/deploy/render_nads.py failed (pip install -r tests/deploy/requirements.txt)"
    [[ -f $chart_conflist ]] ||
        die "the chart's default values no longer render the NAD default/krafty"
}

# Whether this kernel can make a VRF, tried in a namespace of its own.
kernel_has_vrf() {
    local status
    ip netns add "$vrf_probe" || die "cannot create a network namespace"
    ip -n "$vrf_probe" link add vrf-probe type vrf table 10 2>/dev/null
    status=$?
    ip netns del "$vrf_probe"
    return "$status"
}

if [[ $command == up ]]; then
    prepare
    if ! kernel_has_vrf; then
        "$repo/scripts/setup.sh" vm || die "scripts/setup.sh could not install what the VM needs"
        say "this kernel ($(uname -r)) cannot create VRFs, which the default network needs:" \
            "running the sandbox in a VM with Debian's kernel (scripts/vm-run.sh, qemu, about a" \
            "minute); it is checked and removed again within that one boot"
        exec "$repo/scripts/vm-run.sh" -- "$repo/scripts/sandbox.sh" in-vm ${after[@]+-- "${after[@]}"}
    fi
fi

# --- create, in this kernel's namespaces ------------------------------------------------------

results=()
record() { # record PASS|FAIL NAME DETAIL, as validate.sh prints its checks
    results+=("$1")
    echo "$1 $2: $3"
}

# Creates a pod and attaches it as net1 through libcni; prints its entry of the description.
attach() {
    local pod=$1 netns=$name-$1 container_id result
    container_id=$(printf '%s' "$name/$pod" | sha256sum | cut -c1-64)
    ip netns add "$netns" && ip -n "$netns" link set lo up || return 1
    if ! result=$(ip netns exec "$node" "$target/cnidriver" add --conflist "$network_conflist" \
        --id "$container_id" --netns "/run/netns/$netns" --ifname net1 \
        --pod-namespace default --pod-name "$pod" --cni-path "$cni_path" \
        --cache-dir "$runtime_dir/cache"); then
        echo "sandbox: ADD of $pod failed: $result" >&2
        return 1
    fi
    jq -c --arg pod "$pod" --arg netns "$netns" --arg id "$container_id" \
        --arg node "$node" --arg log "$log_file" '
        def host(prefix): [.interfaces[] | select((.sandbox // "") == "" and (.name | startswith(prefix))) | .name][0];
        {pod: $pod, netns: $netns, containerId: $id,
         address: (.ips[0].address | sub("/.*"; "")),
         vrf: host("krv"), bridge: host("krb"), veth: host("veth"),
         validateArgs: ["--local", "--node-netns", $node, "--pod-netns", $netns,
                        "--container-id", $id, "--scope", "pod", "--network", "krafty",
                        "--expect-vrf", "yes", "--log-file", $log]}' <<<"$result"
}

pod_field() { jq -r --arg pod "$1" ".pods[] | select(.pod == \$pod) | .$2" "$description"; }

create() {
    remove_runtime >/dev/null
    mkdir -p "$runtime_dir"/{state,log,run,ipam,cache}
    export KRAFTY_LOG_ROOT=$runtime_dir/log KRAFTY_STATE_ROOT=$runtime_dir/state \
        KRAFTY_RUN_DIR=$runtime_dir/run
    jq --arg dir "$runtime_dir/ipam" '(.plugins[] | select(has("ipam")) | .ipam.dataDir) = $dir' \
        "$chart_conflist" >"$network_conflist" || return 1
    say "node $node, pods ${pods[*]/#/$name-}; network krafty, as the chart renders it"
    ip netns add "$node" && ip -n "$node" link set lo up || return 1
    local pod attachment attachments=()
    for pod in "${pods[@]}"; do
        attachment=$(attach "$pod") || return 1
        attachments+=("$attachment")
        say "$pod: net1 $(jq -r '"\(.address), VRF \(.vrf), bridge \(.bridge), host veth \(.veth)"' <<<"$attachment")"
    done
    printf '%s\n' "${attachments[@]}" |
        jq -s --arg name "$name" --arg node "$node" --arg conflist "$network_conflist" \
            --arg chart_conflist "$chart_conflist" --arg log "$log_file" --argjson port "$port" \
            '{name: $name, node: $node, conflist: $conflist, chartConflist: $chart_conflist,
              logFile: $log, port: $port, pods: .}' \
            >"$description"

    local server_netns=$name-server tries
    setsid ip netns exec "$server_netns" "$target/debug/nettools-server" --listen "0.0.0.0:$port" \
        >"$runtime_dir/nettools-server.log" 2>&1 </dev/null &
    for ((tries = 0; tries < 150; tries++)); do
        ip netns exec "$server_netns" curl -sf --max-time 1 "http://127.0.0.1:$port/healthz" >/dev/null && break
        sleep 0.2
    done
    say "nettools-server listens on port $port in $server_netns (log: $runtime_dir/nettools-server.log)"
}

report() {
    local pod server_address server_vrf served client_answer
    for pod in "${pods[@]}"; do
        echo "== scripts/validate.sh --local, pod $pod"
        local args
        mapfile -t args < <(pod_field "$pod" 'validateArgs[]')
        if "$repo/scripts/validate.sh" "${args[@]}"; then
            record PASS "validate-$pod" "validate.sh --local for $name-$pod"
        else
            record FAIL "validate-$pod" "validate.sh --local for $name-$pod"
        fi
    done

    echo "== across net1"
    server_address=$(pod_field server address)
    server_vrf=$(pod_field server vrf)
    served=$(ip netns exec "$node" curl -s --max-time 10 --interface "$server_vrf" \
        "http://$server_address:$port/" | jq -r --arg address "$server_address" \
        '[.interfaces[]? | select(.ifname == "net1") | .addr_info[]? | select(.local == $address)] | length' 2>/dev/null)
    record "$([[ $served == 1 ]] && echo PASS || echo FAIL)" nettools-across-net1 \
        "GET http://$server_address:$port/ from the node through VRF $server_vrf $([[ $served == 1 ]] && echo lists || echo "does not list") net1 with $server_address"
    if client_answer=$(ip netns exec "$name-client" curl -s --max-time 3 "http://$server_address:$port/healthz"); then
        record FAIL pods-isolated "the client pod reached the server across net1 ($client_answer): per-pod VRFs should keep them apart"
    else
        record PASS pods-isolated "the client pod cannot reach $server_address across net1: each pod has a VRF of its own"
    fi
}

finish_report() {
    local failed=0 outcome
    for outcome in "${results[@]}"; do
        [[ $outcome == PASS ]] || failed=$((failed + 1))
    done
    if [[ $failed -eq 0 ]]; then
        say "all ${#results[@]} checks passed"
    else
        say "$failed of ${#results[@]} checks failed"
    fi
    [[ $failed -eq 0 ]]
}

status=0
if [[ $command == in-vm ]]; then
    # The VM's namespaces go with it: remove everything on the way out, whatever happens.
    trap 'down' EXIT
fi
if create; then
    report
else
    record FAIL create "could not create the sandbox (the error is above)"
fi
finish_report || status=1
if [[ ${#after[@]} -gt 0 ]]; then
    say "running ${after[*]}"
    after_status=0
    KRAFTY_SANDBOX_JSON=$description "${after[@]}" || after_status=$?
    [[ $status -ne 0 ]] || status=$after_status
fi
if [[ $command == up && $status -eq 0 ]]; then
    say "the sandbox stays up: ip netns exec $name-client bash, jq . $description; make sandbox-down removes it"
elif [[ $command == up ]]; then
    say "what was made stays for a look (jq . $description); make sandbox-down removes it"
fi
exit "$status"
