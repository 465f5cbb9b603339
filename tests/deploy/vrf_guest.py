#!/usr/bin/env python3
"""Run inside scripts/vm-run.sh's VM (a kernel with VRF) by test_validate_vrf.py: builds
attachments whose bridge sits in a VRF and runs validate.sh --local --expect-vrf yes on them,
correct and broken. Prints one JSON line: case -> {"returncode", "stdout"}."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from attachment import Attachment

VALIDATE = Path(__file__).resolve().parents[2] / "scripts" / "validate.sh"


def validate(attachment: Attachment) -> dict:
    result = subprocess.run(
        [str(VALIDATE), "--local", "--node-netns", attachment.node_netns, "--pod-netns", attachment.pod_netns,
         "--container-id", attachment.container_id, "--scope", attachment.scope,
         "--network", attachment.network, "--expect-vrf", "yes"],
        capture_output=True, text=True, timeout=120,
    )
    return {"returncode": result.returncode, "stdout": result.stdout, "stderr": result.stderr}


def run_case(attachment: Attachment, breakage: list[str] | None = None) -> dict:
    try:
        attachment.build()
        if breakage:
            subprocess.run(["ip", "-n", attachment.node_netns, *breakage], check=True)
        return validate(attachment) | {"vrf": attachment.vrf, "bridge": attachment.bridge}
    finally:
        attachment.remove()


def main() -> None:
    pod = Attachment(vrf_table=1234)
    shared = Attachment(scope="network", network="lab", vrf_table=100500)
    outside = Attachment(vrf_table=1235)
    results = {
        "pod-scope": run_case(pod),
        "network-scope": run_case(shared),
        "bridge-outside-the-vrf": run_case(outside, ["link", "set", outside.bridge, "nomaster"]),
    }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
