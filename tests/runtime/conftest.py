"""The node the runtime tests share: one podman node per test module (see podman_node.py)."""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from podman_node import REPO, Network, PodmanNode  # noqa: E402

# Two shared networks and one with a bridge (and VRF) per attachment.
NETWORKS = [
    Network("lab", "network", ipaddress.IPv4Network("172.16.20.0/24")),
    Network("lab2", "network", ipaddress.IPv4Network("172.16.21.0/24")),
    Network("solo", "pod", ipaddress.IPv4Network("172.16.22.0/24")),
]


@pytest.fixture(scope="module")
def node():
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    bin_dir = Path(os.environ.get("KRAFTY_BIN_DIR", target / "debug"))
    # KRAFTY_RUNTIME_VRF=1: chains with krafty-vrf, for a kernel with VRF (the VM).
    vrf = os.environ.get("KRAFTY_RUNTIME_VRF", "0") == "1"
    built = PodmanNode(NETWORKS, bin_dir, vrf)
    try:
        yield built
    finally:
        built.remove()
