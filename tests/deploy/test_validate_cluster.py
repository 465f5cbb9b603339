"""scripts/validate.sh in cluster mode, with fake_kubectl.py answering for the cluster: the API
objects are canned (the Deployment from deploy/nettools.yaml, the NAD rendered by the chart),
while every `kubectl exec` runs for real in network namespaces holding a hand-built attachment
and the real nettools-server. What this cannot cover is a real API server and kubelet."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import chartlib
from attachment import Attachment, installer_binary, krafty_names

VALIDATE = chartlib.REPO / "scripts" / "validate.sh"
FAKE_KUBECTL = Path(__file__).resolve().parent / "fake_kubectl.py"
NODE = "krafty-worker"
POD = "nettools-7c9f8d-x2k4p"
IMAGE = "krafty-nettools:dev"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def cluster(server_binary, tmp_path):
    """A hand-built attachment, the pod's primary interface, nettools-server in the pod's
    namespace, and the state fake_kubectl.py answers from."""
    attachment = Attachment()
    server = None
    try:
        attachment.build()
        pod_ns = attachment.pod_netns
        ip("-n", pod_ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer")
        ip("-n", pod_ns, "addr", "add", "198.51.100.5/24", "dev", "eth0")
        ip("-n", pod_ns, "link", "set", "eth0", "up")
        server = subprocess.Popen(
            ["ip", "netns", "exec", pod_ns, str(server_binary), "--listen", "127.0.0.1:8080"],
            stderr=subprocess.DEVNULL,
        )
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                pod_ns,
                "curl",
                "-s",
                "--retry",
                "20",
                "--retry-connrefused",
                "--retry-delay",
                "0",
                "http://127.0.0.1:8080/healthz",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        log_file = tmp_path / "krafty.log"
        log_file.write_text(
            "".join(
                json.dumps(
                    {
                        "plugin": p,
                        "command": "ADD",
                        "containerId": attachment.container_id,
                        "ifname": attachment.ifname,
                        "outcome": "ok",
                        "podName": POD,
                    }
                )
                + "\n"
                for p in ("krafty-bridge", "krafty-veth")
            )
        )
        state_dir = tmp_path / "state"
        attachment.write_record(state_dir, "default", POD)
        state = cluster_state(attachment, log_file, state_dir)
        yield attachment, state, tmp_path
    finally:
        if server:
            server.terminate()
            server.wait(timeout=10)
        attachment.remove()


def cluster_state(attachment: Attachment, log_file: Path, state_dir: Path) -> dict[str, Any]:
    deployment = yaml.safe_load_all(
        (chartlib.REPO / "deploy" / "nettools.yaml").read_text().replace("${NETTOOLS_IMAGE}", IMAGE)
    )
    deployment = next(d for d in deployment if d and d["kind"] == "Deployment")
    replicas = deployment["spec"]["replicas"]
    deployment["status"] = {"replicas": replicas, "readyReplicas": replicas}
    # The chart's NAD for this network, without krafty-vrf since this kernel may lack VRF.
    nad = chartlib.network_attachments(
        {
            "networks": [
                {
                    "name": "krafty",
                    "namespace": "default",
                    "vrf": False,
                    "subnets": ["192.0.2.0/24", "2001:db8:10::/64"],
                    "gateways": ["192.0.2.1", "2001:db8:10::1"],
                }
            ]
        }
    )[0]
    network_status = [
        {"name": "cilium", "interface": "eth0", "ips": ["198.51.100.5"], "default": True},
        {"name": "default/krafty", "interface": "net1", "ips": ["192.0.2.10", "2001:db8:10::10"]},
    ]
    return {
        "context": "kind-krafty",
        "deployment_key": ["default", "nettools"],
        "deployment": deployment,
        "pod": {
            "metadata": {
                "name": POD,
                "namespace": "default",
                "labels": deployment["spec"]["template"]["metadata"]["labels"],
                "annotations": {"k8s.v1.cni.cncf.io/network-status": json.dumps(network_status)},
            },
            "spec": {"nodeName": NODE, "containers": [{"name": "nettools", "image": IMAGE}]},
            "status": {"phase": "Running"},
        },
        "nads": {"default/krafty": nad},
        "installer_pods": [
            {
                "metadata": {"name": "krafty-installer-abcde", "namespace": "kube-system"},
                "spec": {"nodeName": NODE},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]},
            }
        ],
        "nodes": {
            NODE: {
                "metadata": {
                    "name": NODE,
                    "annotations": {
                        "krafty.dev/plugins": json.dumps(
                            {p: "sha256:00" for p in ("krafty-vrf", "krafty-bridge", "krafty-veth")}
                        ),
                    },
                }
            }
        },
        "pod_netns": attachment.pod_netns,
        "node_netns": attachment.node_netns,
        "log_file": str(log_file),
        "installer_binary": str(installer_binary()),
        "state_dir": str(state_dir),
        "log": [],
    }


def run_validate(
    state: dict[str, Any], tmp_path: Path, *extra: str
) -> tuple[subprocess.CompletedProcess, dict]:
    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps(state))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(f'#!/bin/sh\nexec python3 {FAKE_KUBECTL} "$@"\n')
    kubectl.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_KUBECTL_STATE": str(state_file)}
    result = subprocess.run(
        [str(VALIDATE), "--context", "kind-krafty", *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result, json.loads(state_file.read_text())


def checks(result: subprocess.CompletedProcess) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in result.stdout.splitlines()[:-1]:
        status, rest = line.split(" ", 1)
        name = rest.split(": ", 1)[0]
        if found.get(name) != "FAIL":
            found[name] = status
    return found


def test_a_correct_cluster_attachment_passes(cluster):
    attachment, state, tmp_path = cluster
    result, after = run_validate(state, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    found = checks(result)
    assert set(found.values()) == {"PASS"}
    assert {
        "deployment-ready",
        "pod-running",
        "network-status",
        "nad-config",
        "pod-eth0",
        "pod-interface",
        "pod-addresses",
        "network-status-ips",
        "nettools-http",
        "node-devices",
        "host-veth",
        "veth-peer",
        "veth-master",
        "bridge",
        "bridge-master",
        "table-routes-ipv4",
        "table-routes-ipv6",
        "route-to-pod",
        "ping-gateway",
        "installer",
        "node-annotation",
        "plugin-log",
    } <= set(found)
    # The probe pod: on the pod's node, on the host network, the nettools image; then deleted.
    applied = [e for e in after["log"] if "apply" in e]
    assert len(applied) == 1
    probe = applied[0]["apply"]
    assert probe["kind"] == "Pod"
    assert probe["spec"]["nodeName"] == NODE
    assert probe["spec"]["hostNetwork"] is True
    assert probe["spec"]["containers"][0]["image"] == IMAGE
    assert probe["spec"]["tolerations"] == [{"operator": "Exists"}]
    assert [e["delete"] for e in after["log"] if "delete" in e] == [probe["metadata"]["name"]]


def deployment_not_ready(state):
    state["deployment"]["status"]["readyReplicas"] = 0


def annotation_without_veth(state):
    state["nodes"][NODE]["metadata"]["annotations"]["krafty.dev/plugins"] = (
        '{"krafty-vrf":"x","krafty-bridge":"x"}'
    )


def multus_reports_another_address(state):
    status = json.loads(state["pod"]["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"])
    status[1]["ips"] = ["192.0.2.99"]
    state["pod"]["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"] = json.dumps(status)


def installer_not_ready(state):
    state["installer_pods"][0]["status"]["conditions"][0]["status"] = "False"


def nad_expects_a_vrf(state):
    config = json.loads(state["nads"]["default/krafty"]["spec"]["config"])
    config["plugins"].insert(0, {"type": "krafty-vrf", "scope": "pod"})
    state["nads"]["default/krafty"]["spec"]["config"] = json.dumps(config)


def no_record_on_the_node(state):
    state["state_dir"] += "-absent"


@pytest.mark.parametrize(
    "change,failing",
    [
        (no_record_on_the_node, {"node-devices"}),
        (deployment_not_ready, {"deployment-ready"}),
        (annotation_without_veth, {"node-annotation"}),
        (multus_reports_another_address, {"network-status-ips"}),
        (installer_not_ready, {"installer"}),
        # The chain now names krafty-vrf: the bridge must have a VRF master, and its ADD be logged.
        (nad_expects_a_vrf, {"bridge-master", "vrf", "plugin-log"}),
    ],
    ids=lambda c: c.__name__ if callable(c) else None,
)
def test_each_broken_part_fails_its_check(cluster, change, failing):
    _, state, tmp_path = cluster
    change(state)
    result, _ = run_validate(state, tmp_path)
    assert result.returncode == 1
    assert {name for name, status in checks(result).items() if status == "FAIL"} == failing


def test_no_deployment_fails_without_a_probe_pod(cluster):
    _, state, tmp_path = cluster
    state["deployment_key"] = ["default", "something-else"]
    result, after = run_validate(state, tmp_path, "--json")
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert [c["name"] for c in document["checks"]] == ["deployment-ready"]
    assert after["log"] == []


# --- across nodes ---------------------------------------------------------------------------------

OTHER_NODE = "krafty-control-plane"
OTHER_POD = "nettools-7c9f8d-q8m2z"
STRETCHED = "stretched"
# Underlay and pod addresses from the benchmarking range, inside this test's namespaces.
UNDERLAY = {NODE: "198.18.0.1", OTHER_NODE: "198.18.0.2"}
STRETCHED_IPS = {POD: "198.18.64.10", OTHER_POD: "198.18.64.11"}
STRETCHED_MACS = {POD: "02:00:c6:12:40:0a", OTHER_POD: "02:00:c6:12:40:0b"}


@pytest.fixture
def stretched(cluster):
    """The checked pod's node and a second node (network namespaces) on an underlay bridge,
    each with the stretched network's bridge and VXLAN port (named and marked as krafty does,
    flooding to the other node), a pod on each attached to it as net2, and each installer's
    node list: a real tunnel that validate.sh pings through."""
    attachment, state, tmp_path = cluster
    suffix = attachment.container_id[:8]
    underlay, other_node, other_pod = (f"kv-{role}-{suffix}" for role in ("ul", "node", "pod"))
    try:
        for ns in (underlay, other_node, other_pod):
            ip("netns", "add", ns)
        ip("-n", underlay, "link", "add", "ul", "type", "bridge")
        ip("-n", underlay, "link", "set", "ul", "up")
        nodes = {NODE: attachment.node_netns, OTHER_NODE: other_node}
        pods = {NODE: (POD, attachment.pod_netns), OTHER_NODE: (OTHER_POD, other_pod)}
        state_dirs = {NODE: Path(state["state_dir"]), OTHER_NODE: tmp_path / "state-other"}
        names = krafty_names(STRETCHED, attachment.container_id, "net2", "network")
        node_list = "".join(f"{name} {address}\n" for name, address in sorted(UNDERLAY.items()))
        for i, (node, netns) in enumerate(nodes.items()):
            ip("-n", underlay, "link", "add", f"n{i}", "type", "veth", "peer", "name", "ul0", "netns", netns)
            ip("-n", underlay, "link", "set", f"n{i}", "master", "ul", "up")
            ip("-n", netns, "addr", "add", f"{UNDERLAY[node]}/24", "dev", "ul0")
            ip("-n", netns, "link", "set", "ul0", "up")
            ip("-n", netns, "link", "add", names["bridge"], "type", "bridge")
            ip("-n", netns, "link", "set", names["bridge"], "alias", names["bridgeMark"], "up")
            ip(
                "-n", netns, "link", "add", names["vxlan"], "type", "vxlan", "id", "4242", "local",
                UNDERLAY[node], "dstport", "4793", "nolearning",
            )
            ip("-n", netns, "link", "set", names["vxlan"], "alias", names["bridgeMark"])
            ip("-n", netns, "link", "set", names["vxlan"], "master", names["bridge"], "up")
            for peer, address in UNDERLAY.items():
                if peer != node:
                    subprocess.run(
                        ["bridge", "-n", netns, "fdb", "append", "00:00:00:00:00:00", "dev", names["vxlan"],
                         "dst", address],
                        check=True,
                    )
            pod, pod_ns = pods[node]
            ip("-n", netns, "link", "add", f"s{i}", "type", "veth", "peer", "name", "net2", "netns", pod_ns)
            ip("-n", pod_ns, "link", "set", "net2", "address", STRETCHED_MACS[pod])
            ip("-n", netns, "link", "set", f"s{i}", "master", names["bridge"], "up")
            # As the installer does for the pod it knows on the other node (replacing what this
            # bridge, which learns unlike krafty's, may have learned of it).
            other_node_name, other_pod_name = next((n, pods[n][0]) for n in nodes if n != node)
            for table in (["dst", UNDERLAY[other_node_name], "self", "permanent"], ["master", "static"]):
                subprocess.run(
                    ["bridge", "-n", netns, "fdb", "replace", STRETCHED_MACS[other_pod_name], "dev", names["vxlan"],
                     *table],
                    check=True,
                )
            ip("-n", pod_ns, "addr", "add", f"{STRETCHED_IPS[pod]}/24", "dev", "net2")
            ip("-n", pod_ns, "link", "set", "net2", "up")
            state_dirs[node].mkdir(parents=True, exist_ok=True)
            (state_dirs[node] / "nodes").write_text(node_list)

        state["nads"][f"default/{STRETCHED}"] = chartlib.network_attachments(
            {
                "networks": [
                    {
                        "name": STRETCHED,
                        "namespace": "default",
                        "scope": "network",
                        "vrf": False,
                        "multiNode": {},
                        "addressing": "blocks",
                        "subnets": ["198.18.64.0/20"],
                        "gateways": ["198.18.64.1"],
                        "blockPrefixes": [26],
                    }
                ]
            }
        )[0]

        def with_net2(pod_object: dict, pod: str) -> None:
            annotations = pod_object["metadata"]["annotations"]
            status = json.loads(annotations["k8s.v1.cni.cncf.io/network-status"])
            status.append(
                {"name": f"default/{STRETCHED}", "interface": "net2", "ips": [STRETCHED_IPS[pod]],
                 "mac": STRETCHED_MACS[pod]}
            )
            annotations["k8s.v1.cni.cncf.io/network-status"] = json.dumps(status)

        other = json.loads(json.dumps(state["pod"]))
        other["metadata"]["name"] = OTHER_POD
        other["spec"]["nodeName"] = OTHER_NODE
        with_net2(state["pod"], POD)
        with_net2(other, OTHER_POD)
        state["other_pods"] = [{"object": other, "netns": other_pod}]
        state["installer_pods"].append(
            {
                "metadata": {"name": "krafty-installer-fghij", "namespace": "kube-system"},
                "spec": {"nodeName": OTHER_NODE},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]},
                "netns": other_node,
                "state_dir": str(state_dirs[OTHER_NODE]),
            }
        )
        state["nodes"][OTHER_NODE] = {"metadata": {"name": OTHER_NODE, "annotations": {}}}
        for node, address in UNDERLAY.items():
            state["nodes"][node]["status"] = {"addresses": [{"type": "InternalIP", "address": address}]}
        yield attachment, state, tmp_path, names, nodes, state_dirs
    finally:
        for ns in (underlay, other_node, other_pod):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_pods_on_two_nodes_reach_each_other_and_every_tunnel_floods_to_the_other_node(stretched):
    _, state, tmp_path, names, _, _ = stretched
    result, _ = run_validate(state, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    found = checks(result)
    assert set(found.values()) == {"PASS"}, result.stdout
    assert {"cross-node-ping", "node-list", "tunnel-peers", "tunnel-port", "tunnel-macs"} <= set(found)
    pings = [line for line in result.stdout.splitlines() if line.startswith("PASS cross-node-ping")]
    assert len(pings) == 2, pings
    assert any(f"{POD} ({NODE}, net2) -> {OTHER_POD} ({OTHER_NODE}) 198.18.64.11" in p for p in pings), pings
    peers = [line for line in result.stdout.splitlines() if "tunnel-peers" in line]
    assert f"PASS tunnel-peers: {NODE} {names['vxlan']} (network {STRETCHED}): floods to 198.18.0.2" in peers
    macs = [line for line in result.stdout.splitlines() if "tunnel-macs" in line]
    assert len(macs) == 2, macs
    assert (
        f"PASS tunnel-macs: {NODE}: {OTHER_POD}'s {STRETCHED_MACS[OTHER_POD]} (on {OTHER_NODE}) goes to "
        f"{UNDERLAY[OTHER_NODE]} over network {STRETCHED}" in macs
    ), macs


def every_pod_on_one_node(state, *_):
    state["other_pods"][0]["object"]["spec"]["nodeName"] = NODE


def a_peer_dropped_from_a_tunnel(state, names, nodes, _):
    subprocess.run(
        ["bridge", "-n", nodes[NODE], "fdb", "del", "00:00:00:00:00:00", "dev", names["vxlan"], "dst",
         UNDERLAY[OTHER_NODE]],
        check=True,
    )


def a_stale_node_list(state, names, nodes, state_dirs):
    (state_dirs[NODE] / "nodes").write_text(f"{NODE} {UNDERLAY[NODE]}\n")


def a_remote_pod_left_to_flooding(state, names, nodes, _):
    subprocess.run(
        ["bridge", "-n", nodes[NODE], "fdb", "del", STRETCHED_MACS[OTHER_POD], "dev", names["vxlan"], "self"],
        check=True,
    )


def no_tunnel_on_the_other_node(state, names, nodes, _):
    ip("-n", nodes[OTHER_NODE], "link", "del", names["vxlan"])


@pytest.mark.parametrize(
    "change,failing",
    [
        (every_pod_on_one_node, {"cross-node"}),
        # Broadcast from the node without the entry goes nowhere: neither pod resolves the other.
        (a_peer_dropped_from_a_tunnel, {"tunnel-peers", "cross-node-ping"}),
        # The port floods to a node the installer does not list, nor does the cluster lack.
        (a_stale_node_list, {"node-list", "tunnel-peers"}),
        (no_tunnel_on_the_other_node, {"tunnel-port", "cross-node-ping"}),
        # Flooding still reaches the pod; only the installer's account says it is not known.
        (a_remote_pod_left_to_flooding, {"tunnel-macs"}),
    ],
    ids=lambda c: c.__name__ if callable(c) else None,
)
def test_each_broken_part_across_nodes_fails_its_check(stretched, change, failing):
    _, state, tmp_path, names, nodes, state_dirs = stretched
    change(state, names, nodes, state_dirs)
    result, _ = run_validate(state, tmp_path)
    assert result.returncode == 1, result.stdout
    assert {name for name, status in checks(result).items() if status == "FAIL"} == failing, result.stdout
