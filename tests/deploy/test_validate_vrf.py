"""validate.sh --local's VRF checks, on a kernel that has VRF: vrf_guest.py runs in the VM of
scripts/vm-run.sh (Debian's kernel under qemu; about a minute). If the VM cannot start, these
tests fail: there is no other kernel with VRF here to fall back on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import chartlib

VM_RUN = chartlib.REPO / "scripts" / "vm-run.sh"
GUEST = Path(__file__).resolve().parent / "vrf_guest.py"


@pytest.fixture(scope="module")
def guest_results() -> dict:
    assert VM_RUN.is_file(), "scripts/vm-run.sh is missing"
    result = subprocess.run(
        [str(VM_RUN), "--", sys.executable, str(GUEST)],
        cwd=chartlib.REPO, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, f"the VM run failed ({result.returncode}):\n{result.stderr[-3000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def lines(case: dict) -> dict[str, str]:
    """check name -> status (FAIL wins over PASS for repeated names)."""
    found: dict[str, str] = {}
    for line in case["stdout"].splitlines()[:-1]:
        status, rest = line.split(" ", 1)
        name = rest.split(": ", 1)[0]
        if found.get(name) != "FAIL":
            found[name] = status
    return found


def detail(case: dict, name: str) -> str:
    return next(line.split(": ", 1)[1] for line in case["stdout"].splitlines() if line.split(" ")[1] == f"{name}:")


def test_bridge_in_its_vrf_passes(guest_results):
    case = guest_results["pod-scope"]
    assert case["returncode"] == 0, case["stdout"] + case["stderr"]
    checks = lines(case)
    assert set(checks.values()) == {"PASS"}
    assert {"vrf", "vrf-mark", "bridge-master", "table-routes-ipv4", "table-routes-ipv6", "route-to-pod"} <= set(checks)
    assert detail(case, "vrf") == f"{case['vrf']}: kind vrf, table 1234, up"
    # The subnet routes are in the VRF's table, not the main one.
    assert detail(case, "table-routes-ipv4").startswith(f"table 1234 via {case['bridge']}: 192.0.2.0/24")
    assert detail(case, "route-to-pod").endswith(f"in vrf {case['vrf']}, expected {case['bridge']}")


def test_shared_vrf_of_a_network_passes(guest_results):
    case = guest_results["network-scope"]
    assert case["returncode"] == 0, case["stdout"] + case["stderr"]
    assert case["vrf"].startswith("krvlab-")
    assert detail(case, "vrf-mark") == "marked krafty:lab"


def test_bridge_outside_the_vrf_fails(guest_results):
    case = guest_results["bridge-outside-the-vrf"]
    assert case["returncode"] == 1
    assert lines(case)["bridge-master"] == "FAIL"
    assert detail(case, "bridge-master") == f"{case['bridge']} is enslaved to nothing, expected {case['vrf']}"
