"""scripts/sandbox.sh for real: the chart's default NAD through the libcni driver and host-local
into namespace pods, validate.sh --local against them, nettools-server answered across net1,
and sandbox.sh down.

The sandbox needs VRF, which this machine's kernel lacks: sandbox.sh then runs itself in the VM
of scripts/vm-run.sh, and sandbox_guest.py runs there while the sandbox is up (one boot for all
the VM tests, a few minutes under emulation). If the VM cannot start these tests fail.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

import chartlib

SANDBOX = chartlib.REPO / "scripts" / "sandbox.sh"
GUEST = Path(__file__).resolve().parent / "sandbox_guest.py"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", chartlib.REPO / "target"))
GUEST_PREFIX = "sandbox-guest: "


def sandbox(*argv: str, name: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SANDBOX), *argv],
        cwd=chartlib.REPO,
        env={**os.environ, "KRAFTY_SANDBOX": name},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def netns_names() -> list[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in listing.splitlines()]


def kernel_has_vrf() -> bool:
    probe = f"krafty-test-vrf-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", probe], check=True)
    try:
        made = subprocess.run(["ip", "-n", probe, "link", "add", "probe", "type", "vrf", "table", "10"],
                              capture_output=True)
        return made.returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", probe], check=True)


# --- the sandbox in the VM, one boot ----------------------------------------------------------

# Unique per run: two test runs at once must not share the rendered conflist in the target dir.
RUN_NAME = f"krafty-sbx-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def sandbox_run() -> tuple[subprocess.CompletedProcess, dict]:
    """`scripts/sandbox.sh -- sandbox_guest.py`: what `make sandbox` runs, plus the guest."""
    result = sandbox("--", sys.executable, str(GUEST), name=RUN_NAME, timeout=1500)
    guest_lines = [line for line in result.stdout.splitlines() if line.startswith(GUEST_PREFIX)]
    assert len(guest_lines) == 1, (
        f"sandbox.sh exited {result.returncode} without the guest's results:\n"
        f"{result.stdout[-4000:]}\n{result.stderr[-3000:]}"
    )
    return result, json.loads(guest_lines[0].removeprefix(GUEST_PREFIX))


def checks(validation: dict) -> dict[str, tuple[str, str]]:
    """check name -> (status, detail); for repeated names a FAIL wins."""
    found: dict[str, tuple[str, str]] = {}
    for check in validation["report"]["checks"]:
        if found.get(check["name"], ("PASS",))[0] == "PASS":
            found[check["name"]] = (check["status"], check["detail"])
    return found


def test_sandbox_passes_and_exits_0(sandbox_run):
    result, _ = sandbox_run
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    for line in (
        "PASS validate-server: ",
        "PASS validate-client: ",
        "PASS nettools-across-net1: ",
        "PASS pods-isolated: ",
        "sandbox: all 4 checks passed",
    ):
        assert any(out.startswith(line) for out in result.stdout.splitlines()), line
    assert "FAIL " not in result.stdout


def test_a_kernel_without_vrf_is_named_and_the_vm_used(sandbox_run):
    result, guest = sandbox_run
    said = "cannot create VRFs" in result.stdout
    assert said == (not kernel_has_vrf())
    if said:
        # The guest ran on Debian's kernel, not this one.
        assert guest["kernel"] != os.uname().release


def test_the_pods_are_attached_with_the_charts_default_nad(sandbox_run):
    _, guest = sandbox_run
    (default_nad,) = chartlib.network_attachments()
    chart_conflist = chartlib.conflist(default_nad)
    assert guest["chartConflist"] == chart_conflist
    # The one change: host-local's leases go below the sandbox's own directory.
    used = guest["conflist"]
    ipam = next(plugin["ipam"] for plugin in used["plugins"] if "ipam" in plugin)
    assert ipam.pop("dataDir") == f"/run/{RUN_NAME}/ipam"
    assert used == chart_conflist


def test_validate_passes_on_a_good_sandbox(sandbox_run):
    _, guest = sandbox_run
    for pod, validation in guest["good"].items():
        assert validation["returncode"] == 0, (pod, validation)
        assert validation["report"]["failed"] == 0
        found = checks(validation)
        assert {"host-veth", "veth-peer", "bridge", "bridge-master", "vrf", "vrf-mark", "route-to-pod",
                "ping-gateway", "plugin-log"} <= set(found)
        assert found["plugin-log"] == ("PASS", "ADD ok by krafty-vrf krafty-bridge krafty-veth")
    addresses = {pod["address"] for pod in guest["sandbox"]["pods"]}
    assert addresses == {"172.16.10.10", "172.16.10.11"}


def test_a_removed_host_veth_fails_naming_host_veth(sandbox_run):
    _, guest = sandbox_run
    validation = guest["removedHostVeth"]
    client = next(pod for pod in guest["sandbox"]["pods"] if pod["pod"] == "client")
    assert validation["returncode"] == 1
    assert validation["report"]["failed"] > 0
    found = checks(validation)
    assert found["host-veth"] == ("FAIL", f"no {client['veth']} on the node")
    # The rest of the attachment is still there and still checked.
    assert found["vrf"][0] == "PASS"


def test_a_removed_vrf_fails_naming_vrf(sandbox_run):
    _, guest = sandbox_run
    validation = guest["removedVrf"]
    server = next(pod for pod in guest["sandbox"]["pods"] if pod["pod"] == "server")
    assert validation["returncode"] == 1
    found = checks(validation)
    assert found["vrf"] == ("FAIL", f"no {server['vrf']} on the node")
    assert found["bridge-master"] == (
        "FAIL", f"{server['bridge']} is enslaved to nothing, expected {server['vrf']}"
    )
    assert found["host-veth"][0] == "PASS"


def test_nettools_answers_across_net1(sandbox_run):
    _, guest = sandbox_run
    server = next(pod for pod in guest["sandbox"]["pods"] if pod["pod"] == "server")
    assert guest["fetch"]["returncode"] == 0, guest["fetch"]
    document = json.loads(guest["fetch"]["body"])
    assert document["errors"] == []
    net1 = next(interface for interface in document["interfaces"] if interface["ifname"] == "net1")
    assert [a["local"] for a in net1["addr_info"] if a["family"] == "inet"] == [server["address"]]
    # The pod's default route of the secondary network, with krafty's metric.
    assert any(
        route.get("dst") == "default" and route.get("gateway") == "172.16.10.1" and route.get("metric") == 4096
        for route in document["routes"]
    ), document["routes"]


def test_sandbox_down_in_the_vm_leaves_no_trace_and_is_idempotent(sandbox_run):
    _, guest = sandbox_run
    assert guest["serverPids"], "nettools-server was not running in the server pod"
    assert guest["down"]["returncode"] == 0
    assert guest["down"]["left"] == {
        "namespaces": [], "runtimeDir": False, "preparedDir": False, "serverProcesses": []
    }
    assert f"sandbox: removed network namespace {RUN_NAME}-node" in guest["down"]["stdout"]
    assert guest["downAgain"] == {
        "returncode": 0, "stdout": f"sandbox: nothing to remove: no sandbox {RUN_NAME} here\n"
    }


def test_a_run_in_the_vm_leaves_nothing_on_this_machine(sandbox_run):
    assert not [ns for ns in netns_names() if ns.startswith(RUN_NAME + "-")]
    assert not Path(f"/run/{RUN_NAME}").exists()
    assert not (TARGET / RUN_NAME).exists()


# --- on this machine ---------------------------------------------------------------------------


def test_sandbox_down_removes_every_trace_here(tmp_path):
    """Leftovers of every kind down knows, made here: namespaces with a device and a running
    process, the runtime directory, the rendered conflist."""
    name = f"krafty-sbx-{secrets.token_hex(3)}"
    node, server = f"{name}-node", f"{name}-server"
    runtime_dir, prepared_dir = Path(f"/run/{name}"), TARGET / name
    process = None
    try:
        for netns in (node, server):
            subprocess.run(["ip", "netns", "add", netns], check=True)
        subprocess.run(["ip", "-n", node, "link", "add", "krbleftover", "type", "bridge"], check=True)
        process = subprocess.Popen(["ip", "netns", "exec", server, "sleep", "600"])
        (runtime_dir / "ipam" / "krafty").mkdir(parents=True)
        (runtime_dir / "ipam" / "krafty" / "172.16.10.10").write_text("x")
        prepared_dir.mkdir(parents=True)
        (prepared_dir / "default_krafty.conflist").write_text("{}")

        result = sandbox("down", name=name)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [
            f"sandbox: removed network namespace {node}",
            f"sandbox: removed network namespace {server}",
            f"sandbox: removed {runtime_dir}",
            f"sandbox: removed {prepared_dir}",
        ]
        assert process.wait(timeout=10) != 0, "the process in the pod namespace was not ended"
        assert not [ns for ns in netns_names() if ns.startswith(name + "-")]
        assert not runtime_dir.exists() and not prepared_dir.exists()

        again = sandbox("down", name=name)
        assert (again.returncode, again.stdout) == (0, f"sandbox: nothing to remove: no sandbox {name} here\n")
    finally:
        if process is not None and process.poll() is None:
            process.kill()
        for netns in (node, server):
            subprocess.run(["ip", "netns", "del", netns], capture_output=True)
        subprocess.run(["rm", "-rf", str(runtime_dir), str(prepared_dir)])


@pytest.mark.parametrize(
    "argv,name,message",
    [
        (["sideways"], "krafty-sandbox", "unknown argument: sideways"),
        (["down", "--", "true"], "krafty-sandbox", "down takes no command"),
        (["up", "--"], "krafty-sandbox", "'--' needs a command after it"),
        (["down"], "../etc", "KRAFTY_SANDBOX must be"),
    ],
)
def test_sandbox_usage_errors_exit_2(argv, name, message):
    result = sandbox(*argv, name=name)
    assert result.returncode == 2
    assert message in result.stderr


def test_sandbox_help_explains_both_commands_and_the_vm():
    result = sandbox("--help", name="krafty-sandbox")
    assert result.returncode == 0
    for text in ("scripts/sandbox.sh [up]", "scripts/sandbox.sh down", "vm-run.sh", "isolated",
                 "KRAFTY_SANDBOX_JSON"):
        assert text in result.stdout, text
