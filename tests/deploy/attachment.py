"""A krafty attachment built by hand with `ip`, the way the plugins lay it out, for testing
scripts/validate.sh: a "node" and a "pod" network namespace, the bridge on the node (in a VRF
when `vrf_table` is set, which needs a kernel with VRF support), a veth pair from the bridge
into the pod as net1, addresses of both families, and krafty's marks on the node devices.

Addresses are from the documentation ranges, inside namespaces this module creates and
deletes: no packet leaves them.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

GATEWAY_V4, POD_V4 = "192.0.2.1/24", "192.0.2.10/24"
GATEWAY_V6, POD_V6 = "2001:db8:10::1/64", "2001:db8:10::10/64"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@functools.cache
def installer_binary() -> Path:
    """krafty-installer, built if need be: it knows the device names (`attachment`) and lists
    a node's attachments (`attachments`); nothing here derives names itself."""
    subprocess.run(["cargo", "build", "--quiet", "-p", "krafty-installer"], cwd=REPO, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return target / "debug" / "krafty-installer"


def krafty_names(network: str, container_id: str, ifname: str, scope: str) -> dict:
    """What krafty names the devices of an attachment, and their marks."""
    result = subprocess.run(
        [
            str(installer_binary()),
            "attachment",
            "--network",
            network,
            "--container-id",
            container_id,
            "--ifname",
            ifname,
            "--scope",
            scope,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(result.stdout)


@dataclass
class Attachment:
    scope: str = "pod"
    network: str = "krafty"
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    container_id: str = field(default_factory=lambda: secrets.token_hex(32))
    vrf_table: int | None = None

    @property
    def node_netns(self) -> str:
        return f"krafty-test-node-{self.tag}"

    @property
    def pod_netns(self) -> str:
        return f"krafty-test-pod-{self.tag}"

    ifname: str = "net1"

    @functools.cached_property
    def names(self) -> dict:
        return krafty_names(self.network, self.container_id, self.ifname, self.scope)

    @property
    def veth(self) -> str:
        return self.names["hostVeth"]

    @property
    def bridge(self) -> str:
        return self.names["bridge"]

    @property
    def vrf(self) -> str:
        return self.names["vrf"]

    @property
    def attachment_mark(self) -> str:
        return self.names["mark"]

    @property
    def bridge_mark(self) -> str:
        return self.names["bridgeMark"]

    def write_record(self, state_dir: Path, pod_namespace: str, pod_name: str) -> None:
        """The record krafty-veth would have written for this attachment."""
        record = {
            "network": self.network,
            "containerId": self.container_id,
            "ifname": self.ifname,
            "netns": f"/run/netns/{self.pod_netns}",
            "podNamespace": pod_namespace,
            "podName": pod_name,
            "devices": [
                {"name": self.veth, "kind": "veth", "shared": False},
                {"name": self.bridge, "kind": "bridge", "shared": self.scope == "network"},
            ],
            "addresses": [POD_V4, POD_V6],
        }
        path = state_dir / "attachments" / self.network / f"{self.container_id}.{self.ifname}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))

    def build(self) -> None:
        node, pod = self.node_netns, self.pod_netns
        ip("netns", "add", node)
        ip("netns", "add", pod)
        for netns in (node, pod):
            ip("-n", netns, "link", "set", "lo", "up")
        ip("-n", node, "link", "add", self.bridge, "type", "bridge")
        ip("-n", node, "link", "set", self.bridge, "alias", self.bridge_mark + " hairpin")
        if self.vrf_table is not None:
            ip("-n", node, "link", "add", self.vrf, "type", "vrf", "table", str(self.vrf_table))
            ip("-n", node, "link", "set", self.vrf, "alias", self.bridge_mark, "up")
            ip("-n", node, "link", "set", self.bridge, "master", self.vrf)
        ip("-n", node, "link", "add", self.veth, "type", "veth", "peer", "name", self.ifname, "netns", pod)
        ip("-n", node, "link", "set", self.veth, "master", self.bridge, "alias", self.attachment_mark)
        ip("-n", node, "addr", "add", GATEWAY_V4, "dev", self.bridge)
        ip("-n", node, "addr", "add", GATEWAY_V6, "dev", self.bridge, "nodad")
        ip("-n", pod, "addr", "add", POD_V4, "dev", self.ifname)
        ip("-n", pod, "addr", "add", POD_V6, "dev", self.ifname, "nodad")
        for netns, device in ((node, self.bridge), (node, self.veth), (pod, self.ifname)):
            ip("-n", netns, "link", "set", device, "up")

    def remove(self) -> None:
        for netns in (self.node_netns, self.pod_netns):
            subprocess.run(["ip", "netns", "del", netns], capture_output=True)
