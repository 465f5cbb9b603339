"""krafty under a container runtime nobody here wrote: podman 4 with its CNI backend, which loads
and runs conflists through libcni as CRI-O does. Containers start from a busybox root file system
(--rootfs) on a node namespace of their own (podman_node.py).

One scenario on one node, in file order: the networks are listed, two containers on a shared
network, stop, one container on two networks, a pod-scope network, rm, a new container after
that churn, the README's podman recipe, the original krafty's single-plugin config beside a
chain in one container, and a network stretched across nodes (multiNode). Few podman commands: under emulation in the VM each
costs seconds. Without KRAFTY_RUNTIME_VRF=1 the chains leave krafty-vrf out (this kernel has no
VRF); in the VM they include it.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess

import pytest

from podman_node import REPO, Network, PodmanNode, addresses, kernel_has_vrf

PING = "ping -c 1 -W 5"


def in_range(node: PodmanNode, network: str, output: str, ifname: str) -> None:
    """The interface has exactly one address, from the network's range, with its prefix."""
    (address,) = addresses(output, ifname)
    first, last = node.networks[network].range
    assert address.network == node.networks[network].subnet, output
    assert first <= address.ip <= last, output


def every_plugin_ok(node: PodmanNode, *networks: str) -> dict[tuple[str, str], str]:
    """What the krafty log holds when every plugin of each network's chain succeeded."""
    plugins = ["krafty-vrf", "krafty-bridge", "krafty-veth"] if node.vrf else ["krafty-bridge", "krafty-veth"]
    return {(network, plugin): "ok" for network in networks for plugin in plugins}


def assert_gone(node: PodmanNode, container_id: str, *networks: str) -> None:
    """Nothing of the container is left, and its DEL ran with krafty's environment (the log
    below the test's log root has it)."""
    assert node.leftovers(container_id) == []
    assert node.logged(container_id, "DEL") == every_plugin_ok(node, *networks)


def test_every_krafty_network_is_listed(node):
    """podman validates each conflist through libcni when it loads it, and drops the ones that
    fail: a plugin that answers VERSION wrongly makes its network disappear."""
    listed = node.podman("network", "ls", "--format", "{{.Name}} {{.Driver}}").stdout.splitlines()
    first_plugin = "krafty-vrf" if node.vrf else "krafty-bridge"
    for name in node.networks:
        assert f"{name} {first_plugin}" in listed


@pytest.fixture(scope="module")
def pair(node):
    """Two containers on the shared network `lab`."""
    return {name: node.start(name, "lab") for name in ("a1", "a2")}


def test_two_containers_on_a_shared_network_reach_each_other_and_the_gateway(node, pair):
    lab = node.networks["lab"]
    # a1's address as host-local leased it; answering a2's ping proves a1 holds it.
    (peer,) = node.leases(pair["a1"])
    first, last = lab.range
    assert first <= peer <= last
    output = node.exec("a2", f"ip -4 -o addr show && {PING} {peer} && {PING} {lab.gateway}")
    in_range(node, "lab", output, "net1")
    assert addresses(output, "net1")[0].ip != peer
    for container_id in pair.values():
        assert node.logged(container_id, "ADD") == every_plugin_ok(node, "lab")


def bridge_and_veth(node: PodmanNode, container_id: str) -> tuple[dict, dict]:
    """The shared bridge and the container's host veth on it (found by the veth's krafty mark)."""
    links = {link["ifname"]: link for link in node.node_links()}
    (veth,) = [
        link for link in links.values()
        if container_id in link.get("ifalias", "") and link["linkinfo"]["info_kind"] == "veth"
    ]
    return links[veth["master"]], veth


def lends_the_bridge_its_mac(node: PodmanNode, container_id: str) -> bool:
    bridge, veth = bridge_and_veth(node, container_id)
    return bridge["address"] == veth["address"]


def test_stop_releases_the_attachment_and_the_neighbour_keeps_its_own(node, pair):
    """The container that stops is the one whose port lent the shared bridge its MAC, if one
    did (a bridge whose address was never set takes the lowest of its ports'): the gateway's MAC
    must not change under the container that stays, whose neighbour entry for the gateway the
    test before has just filled."""
    leaving = next((name for name, cid in pair.items() if lends_the_bridge_its_mac(node, cid)), "a1")
    (staying,) = set(pair) - {leaving}
    bridge, _ = bridge_and_veth(node, pair[staying])
    node.podman("stop", "--time", "0", leaving)
    assert_gone(node, pair[leaving], "lab")
    assert bridge_and_veth(node, pair[staying])[0]["address"] == bridge["address"]
    node.exec(staying, f"{PING} {node.networks['lab'].gateway}")


def test_a_container_on_two_networks_reaches_both_gateways(node):
    """Two attachments of one container ID, as Multus makes for a pod with net1 and net2."""
    lab, lab2 = node.networks["lab"], node.networks["lab2"]
    container_id, output = node.run_once(
        "b1", "lab", "lab2", command=f"ip -4 -o addr show && {PING} {lab.gateway} && {PING} {lab2.gateway}"
    )
    in_range(node, "lab", output, "net1")
    in_range(node, "lab2", output, "net2")
    assert node.logged(container_id, "ADD") == every_plugin_ok(node, "lab", "lab2")
    assert_gone(node, container_id, "lab", "lab2")


def test_a_pod_scope_network(node):
    """A bridge (and VRF) of the container's own, gone with it."""
    solo = node.networks["solo"]
    container_id, output = node.run_once("p1", "solo", command=f"ip -4 -o addr show && {PING} {solo.gateway}")
    in_range(node, "solo", output, "net1")
    assert node.logged(container_id, "ADD") == every_plugin_ok(node, "solo")
    assert_gone(node, container_id, "solo")


def test_rm_leaves_nothing(node, pair):
    node.podman("rm", "--force", "--time", "0", *pair)
    for container_id in pair.values():
        assert_gone(node, container_id, "lab")
    # The node holds the shared networks' devices and nothing else.
    shared = {f"krafty:{n.name}" for n in node.networks.values() if n.scope == "network"}
    for link in node.node_links():
        assert link["ifname"] == "lo" or link.get("ifalias") in shared, link


def test_a_new_container_after_the_churn(node):
    lab = node.networks["lab"]
    container_id, output = node.run_once("c1", "lab", command=f"ip -4 -o addr show && {PING} {lab.gateway}")
    in_range(node, "lab", output, "net1")
    assert_gone(node, container_id, "lab")


def readme_recipe() -> dict:
    """The conflist of the README's podman recipe."""
    section = (REPO / "README.md").read_text().split("\n## Running under podman\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```json\n(.*?)```", section, re.DOTALL)
    return json.loads(block)


def test_the_readme_recipe(node):
    """The README's network as written; krafty-vrf left out on a kernel without VRF, as the
    README says, and its leases kept in the test's directory."""
    conflist = readme_recipe()
    if not node.vrf:
        conflist["plugins"] = [p for p in conflist["plugins"] if p["type"] != "krafty-vrf"]
    bridge, veth = conflist["plugins"][-2:]
    veth["ipam"]["dataDir"] = str(node.ipam)
    node.add_conflist(conflist)
    container_id, output = node.run_once(
        "r1", conflist["name"], command=f"ip -4 -o addr show && {PING} {bridge['gateway']}"
    )
    (address,) = addresses(output, "net1")
    assert address.network == ipaddress.IPv4Network(bridge["subnet"])
    assert_gone(node, container_id, conflist["name"])


def test_the_original_krafty_config_beside_a_chain_in_one_container(node):
    """The original krafty's single-plugin config (the seed's example, as a one-plugin
    conflist) as net2 of a container whose net1 is a chain. The original always puts the pod
    in a VRF: on a kernel without VRF, podman reports krafty's refusal and nothing is left."""
    lab = node.networks["lab"]
    original = {
        "cniVersion": "1.0.0",
        "name": "original",
        "plugins": [
            {
                "type": "krafty",
                "subnet": "172.16.23.0/24",
                "gateway": "172.16.23.1",
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(node.ipam),
                    "ranges": [[{"subnet": "172.16.23.0/24", "rangeStart": "172.16.23.10",
                                 "rangeEnd": "172.16.23.250"}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            }
        ],
    }
    node.add_conflist(original)
    command = f"ip -4 -o addr show && {PING} {lab.gateway} && {PING} 172.16.23.1"
    expected = every_plugin_ok(node, "lab") | {("original", "krafty"): "ok"}
    if kernel_has_vrf():
        container_id, output = node.run_once("o1", "lab", "original", command=command)
        in_range(node, "lab", output, "net1")
        (address,) = addresses(output, "net2")
        assert address.network == ipaddress.IPv4Network("172.16.23.0/24"), output
        assert node.logged(container_id, "ADD") == expected
        assert node.leftovers(container_id) == []
        assert node.logged(container_id, "DEL") == expected
        return
    argv = ["run", "--rm", "--name", "o1", *node.network_args("lab", "original"), "--rootfs", str(node.rootfs)]
    refused = node.podman(*argv, "sh", "-c", command, check=False)
    assert refused.returncode != 0, refused.stdout
    assert "cannot create VRF devices" in refused.stderr, refused.stderr
    (container_id,) = {e["containerId"] for e in node.log_entries() if e.get("podName") == "o1"}
    assert node.logged(container_id, "ADD")[("original", "krafty")] != "ok"
    assert node.leftovers(container_id) == []


def test_a_network_stretched_across_nodes(node):
    """A multiNode network: the node (its underlay address on one end of a veth pair, not a
    dummy device, which some kernels lack; and the node list the agent would keep, naming a
    second node) gets the network's VXLAN port flooding to the other node, the container its
    gateway; the container leaves nothing of its own."""
    ip = ["ip", "-n", node.netns]
    subprocess.run([*ip, "link", "add", "ul0", "type", "veth", "peer", "name", "ul1"], check=True)
    subprocess.run([*ip, "addr", "add", "192.0.2.1/24", "dev", "ul0"], check=True)
    for end in ("ul0", "ul1"):
        subprocess.run([*ip, "link", "set", end, "up"], check=True)
    node.state.mkdir(parents=True, exist_ok=True)
    (node.state / "nodes").write_text("this-node 192.0.2.1\nother-node 192.0.2.2\n")
    wide = Network("wide", "network", ipaddress.IPv4Network("172.16.24.0/24"))
    conflist = wide.conflist(node.vrf, node.ipam)
    bridge = next(p for p in conflist["plugins"] if p["type"] == "krafty-bridge")
    bridge["multiNode"] = {}
    node.add_conflist(conflist)
    node.networks["wide"] = wide
    container_id, output = node.run_once("w1", "wide", command=f"ip -4 -o addr show && {PING} {wide.gateway}")
    in_range(node, "wide", output, "net1")
    ports = [link for link in node.node_links() if link.get("linkinfo", {}).get("info_kind") == "vxlan"]
    assert [p.get("ifalias") for p in ports] == ["krafty:wide"], ports
    fdb = subprocess.run(
        ["bridge", "-n", node.netns, "-j", "fdb", "show", "dev", ports[0]["ifname"]],
        capture_output=True, text=True, check=True,
    )
    flood = [e["dst"] for e in json.loads(fdb.stdout) if e["mac"] == "00:00:00:00:00:00"]
    assert flood == ["192.0.2.2"], fdb.stdout
    assert_gone(node, container_id, "wide")
