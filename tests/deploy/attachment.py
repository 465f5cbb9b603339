"""A krafty attachment built by hand with `ip`, the way the plugins lay it out, for testing
scripts/validate.sh: a "node" and a "pod" network namespace, the bridge on the node (in a VRF
when `vrf_table` is set, which needs a kernel with VRF support), a veth pair from the bridge
into the pod as net1, addresses of both families, and krafty's marks on the node devices.

Addresses are from the documentation ranges, inside namespaces this module creates and
deletes: no packet leaves them.
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass, field

GATEWAY_V4, POD_V4 = "192.0.2.1/24", "192.0.2.10/24"
GATEWAY_V6, POD_V6 = "2001:db8:10::1/64", "2001:db8:10::10/64"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def fnv1a32(text: str) -> int:
    value = 0x811C9DC5
    for byte in text.encode():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def shared_name(prefix: str, network: str) -> str:
    """plugins/krafty-cni/src/naming.rs: the name of a network's shared VRF or bridge."""
    readable = "".join(c for c in network if c.isascii() and c.isalnum())[:6]
    return f"{prefix}{readable}-{fnv1a32(network) & 0xFFFFF:05x}"


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

    @property
    def veth(self) -> str:
        return "veth" + self.container_id[:11]

    @property
    def bridge(self) -> str:
        return "krb" + self.container_id[:12] if self.scope == "pod" else shared_name("krb", self.network)

    @property
    def vrf(self) -> str:
        return "krv" + self.container_id[:12] if self.scope == "pod" else shared_name("krv", self.network)

    @property
    def attachment_mark(self) -> str:
        return f"krafty:{self.network}/{self.container_id}"

    @property
    def bridge_mark(self) -> str:
        return self.attachment_mark if self.scope == "pod" else f"krafty:{self.network}"

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
        ip("-n", node, "link", "add", self.veth, "type", "veth", "peer", "name", "net1", "netns", pod)
        ip("-n", node, "link", "set", self.veth, "master", self.bridge, "alias", self.attachment_mark)
        ip("-n", node, "addr", "add", GATEWAY_V4, "dev", self.bridge)
        ip("-n", node, "addr", "add", GATEWAY_V6, "dev", self.bridge, "nodad")
        ip("-n", pod, "addr", "add", POD_V4, "dev", "net1")
        ip("-n", pod, "addr", "add", POD_V6, "dev", "net1", "nodad")
        for netns, device in ((node, self.bridge), (node, self.veth), (pod, "net1")):
            ip("-n", netns, "link", "set", device, "up")

    def remove(self) -> None:
        for netns in (self.node_netns, self.pod_netns):
            subprocess.run(["ip", "netns", "del", netns], capture_output=True)
