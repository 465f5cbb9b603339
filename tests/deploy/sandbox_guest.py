#!/usr/bin/env python3
"""Run by test_sandbox.py as the command of `scripts/sandbox.sh -- ...`: it runs while the
sandbox is up (in the VM, on a kernel without VRF), reads the sandbox's description from
KRAFTY_SANDBOX_JSON, and

- runs validate.sh --local --json on both pods as they are;
- fetches the server's nettools JSON across net1 from the node, through the server's VRF;
- removes the client's host veth and validates the client; removes the server's VRF and
  validates the server;
- takes the sandbox down twice, noting what is left after the first time.

Prints one line, `sandbox-guest: ` + JSON of the results; the tests judge them.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VALIDATE = REPO / "scripts" / "validate.sh"
SANDBOX = REPO / "scripts" / "sandbox.sh"


def run(*argv: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=300)


def validate(pod: dict) -> dict:
    result = run(VALIDATE, *pod["validateArgs"], "--json")
    return {"returncode": result.returncode, "report": json.loads(result.stdout), "stderr": result.stderr}


def traces(sandbox: dict, description: Path, prepared_conflist: Path, server_pids: list[str]) -> dict:
    """What of the sandbox still exists: its namespaces, directories and the processes that
    ran in its server pod."""
    namespaces = [line.split()[0] for line in run("ip", "netns", "list").stdout.splitlines()]
    return {
        "namespaces": [ns for ns in namespaces if ns.startswith(sandbox["name"] + "-")],
        "runtimeDir": description.parent.exists(),
        "preparedDir": prepared_conflist.parent.exists(),
        "serverProcesses": [pid for pid in server_pids if Path(f"/proc/{pid}").exists()],
    }


def main() -> None:
    description = Path(os.environ["KRAFTY_SANDBOX_JSON"])
    sandbox = json.loads(description.read_text())
    pods = {pod["pod"]: pod for pod in sandbox["pods"]}
    server, client = pods["server"], pods["client"]
    node_ip = ("ip", "-n", sandbox["node"])
    # The chart's conflist as the sandbox rendered it, read before down removes it.
    prepared_conflist = Path(sandbox["chartConflist"])
    results: dict = {
        "kernel": os.uname().release,
        "sandbox": sandbox,
        "conflist": json.loads(Path(sandbox["conflist"]).read_text()),
        "chartConflist": json.loads(prepared_conflist.read_text()),
        "good": {name: validate(pod) for name, pod in pods.items()},
    }

    fetch = run("ip", "netns", "exec", sandbox["node"], "curl", "-s", "--max-time", "10", "--interface",
                server["vrf"], f"http://{server['address']}:{sandbox['port']}/")
    results["fetch"] = {"returncode": fetch.returncode, "body": fetch.stdout}

    run(*node_ip, "link", "del", client["veth"])
    results["removedHostVeth"] = validate(client)
    run(*node_ip, "link", "del", server["vrf"])
    results["removedVrf"] = validate(server)

    server_pids = run("ip", "netns", "pids", server["netns"]).stdout.split()
    results["serverPids"] = server_pids
    first = run(SANDBOX, "down")
    results["down"] = {"returncode": first.returncode, "stdout": first.stdout,
                       "left": traces(sandbox, description, prepared_conflist, server_pids)}
    again = run(SANDBOX, "down")
    results["downAgain"] = {"returncode": again.returncode, "stdout": again.stdout}
    print("sandbox-guest: " + json.dumps(results))


if __name__ == "__main__":
    main()
