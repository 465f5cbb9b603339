"""scripts/validate.sh --local against attachments built by hand in network namespaces (root).
A correct attachment passes; each broken part fails its check and the script exits 1 after
printing the whole report."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess

import pytest

import chartlib
from attachment import Attachment

VALIDATE = chartlib.REPO / "scripts" / "validate.sh"


def test_runs_as_root():
    assert os.geteuid() == 0, "validate.sh --local tests need root for network namespaces"


@pytest.fixture
def attachment(request):
    built = Attachment(**getattr(request, "param", {}))
    try:
        built.build()
        yield built
    finally:
        built.remove()


def validate(attachment: Attachment, *extra: str) -> subprocess.CompletedProcess:
    argv = [
        str(VALIDATE),
        "--local",
        "--node-netns",
        attachment.node_netns,
        "--pod-netns",
        attachment.pod_netns,
        "--container-id",
        attachment.container_id,
        "--ifname",
        attachment.ifname,
        "--scope",
        attachment.scope,
        "--network",
        attachment.network,
        "--expect-vrf",
        "no",
        *extra,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def report(result: subprocess.CompletedProcess) -> dict[str, tuple[str, str]]:
    """check name -> (PASS|FAIL, detail); several checks of one name keep the worst."""
    checks: dict[str, tuple[str, str]] = {}
    lines = result.stdout.splitlines()
    for line in lines[:-1]:
        status, rest = line.split(" ", 1)
        name, detail = rest.split(": ", 1)
        assert status in {"PASS", "FAIL"}, line
        if checks.get(name, ("PASS",))[0] == "PASS":
            checks[name] = (status, detail)
    return checks


def failed(result: subprocess.CompletedProcess) -> set[str]:
    return {name for name, (status, _) in report(result).items() if status == "FAIL"}


EVERY_CHECK = {
    "pod-interface",
    "pod-addresses",
    "host-veth",
    "veth-mark",
    "veth-peer",
    "veth-master",
    "bridge",
    "bridge-mark",
    "bridge-addresses",
    "bridge-master",
    "table-routes-ipv4",
    "table-routes-ipv6",
    "route-to-pod",
    "ping-gateway",
}


def test_a_correct_attachment_passes(attachment):
    result = validate(attachment)
    assert result.returncode == 0, result.stdout + result.stderr
    checks = report(result)
    assert set(checks) == EVERY_CHECK
    assert failed(result) == set()
    assert (
        result.stdout.splitlines()[-1] == f"validate: {len(result.stdout.splitlines()) - 1} passed, 0 failed"
    )
    assert checks["pod-addresses"][1] == "net1: 192.0.2.10/24, 2001:db8:10::10/64"
    assert checks["veth-peer"][1].startswith(f"{attachment.veth} (ifindex ")
    assert "<-> pod net1 (ifindex " in checks["veth-peer"][1]
    assert checks["bridge-master"][1] == f"{attachment.bridge} is enslaved to nothing; no VRF expected"


def test_json_report(attachment):
    result = validate(attachment, "--json")
    assert result.returncode == 0
    document = json.loads(result.stdout)
    assert document["failed"] == 0
    assert document["passed"] == len(document["checks"]) > 10
    assert {c["name"] for c in document["checks"]} == EVERY_CHECK
    assert all(set(c) == {"status", "name", "detail"} for c in document["checks"])


def test_removed_host_veth_fails(attachment):
    subprocess.run(["ip", "-n", attachment.node_netns, "link", "del", attachment.veth], check=True)
    result = validate(attachment)
    assert result.returncode == 1
    # Deleting one end of a pair deletes both: the pod's side fails as well.
    assert {"host-veth", "pod-interface", "pod-addresses"} <= failed(result)
    assert report(result)["host-veth"] == ("FAIL", f"no {attachment.veth} on the node")
    # The report is complete: the bridge is still checked, and the summary ends it.
    assert report(result)["bridge"][0] == "PASS"
    lines = result.stdout.splitlines()
    passes = sum(line.startswith("PASS ") for line in lines)
    failures = sum(line.startswith("FAIL ") for line in lines)
    assert passes + failures == len(lines) - 1
    assert lines[-1] == f"validate: {passes} passed, {failures} failed"


def test_json_report_of_a_failure_exits_1(attachment):
    subprocess.run(["ip", "-n", attachment.node_netns, "link", "del", attachment.veth], check=True)
    result = validate(attachment, "--json")
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["failed"] == sum(c["status"] == "FAIL" for c in document["checks"]) > 0


def test_veth_outside_the_bridge_fails(attachment):
    subprocess.run(
        ["ip", "-n", attachment.node_netns, "link", "set", attachment.veth, "nomaster"], check=True
    )
    result = validate(attachment)
    assert result.returncode == 1
    assert "veth-master" in failed(result)
    assert "ping-gateway" in failed(result)


def test_unmarked_bridge_fails(attachment):
    subprocess.run(
        ["ip", "-n", attachment.node_netns, "link", "set", attachment.bridge, "alias", "someone-else"],
        check=True,
    )
    result = validate(attachment)
    assert result.returncode == 1
    assert failed(result) == {"bridge-mark"}


def test_bridge_without_gateway_address_fails(attachment):
    subprocess.run(["ip", "-n", attachment.node_netns, "addr", "flush", "dev", attachment.bridge], check=True)
    result = validate(attachment)
    assert result.returncode == 1
    assert report(result)["bridge-addresses"] == ("FAIL", f"{attachment.bridge}: no gateway address")


def test_expecting_a_vrf_where_there_is_none_fails(attachment):
    result = validate(attachment, "--expect-vrf", "yes")
    assert result.returncode == 1
    assert {"bridge-master", "vrf"} <= failed(result)
    assert report(result)["vrf"] == ("FAIL", f"no {attachment.vrf} on the node")


def test_another_container_id_finds_nothing(attachment):
    result = validate(dataclasses.replace(attachment, container_id="0" * 64))
    assert result.returncode == 1
    assert {"host-veth", "bridge"} <= failed(result)


def test_missing_pod_namespace_fails(attachment):
    elsewhere = dataclasses.replace(attachment, tag="gone")
    result = validate(elsewhere)
    assert result.returncode == 1
    assert report(result) == {"pod-netns": ("FAIL", f"no network namespace {elsewhere.pod_netns}")}


@pytest.mark.parametrize("attachment", [{"ifname": "net2"}], indirect=True)
def test_a_pods_second_interface_has_names_of_its_own(attachment):
    result = validate(attachment)
    assert result.returncode == 0, result.stdout
    assert not attachment.veth.endswith(attachment.container_id[:7]), "not net1's names"
    assert report(result)["host-veth"][1].startswith(f"{attachment.veth}: kind veth")
    # The net1 attachment of the same container is another one: none of its devices exist.
    result = validate(dataclasses.replace(attachment, ifname="net1"))
    assert result.returncode == 1


@pytest.mark.parametrize("attachment", [{"scope": "network", "network": "lab-net.2"}], indirect=True)
def test_network_scope_uses_the_shared_bridge(attachment):
    result = validate(attachment)
    assert result.returncode == 0, result.stdout
    assert report(result)["veth-master"][1].endswith(f"expected {attachment.bridge}")
    assert report(result)["bridge-mark"][1] == "marked krafty:lab-net.2 hairpin"


@pytest.mark.parametrize("attachment", [{"scope": "network"}], indirect=True)
def test_network_scope_refuses_per_pod_names(attachment):
    result = validate(dataclasses.replace(attachment, scope="pod"))
    assert result.returncode == 1
    assert {"veth-master", "bridge"} <= failed(result)


def log_line(attachment: Attachment, plugin: str, outcome: str, command: str = "ADD") -> str:
    return json.dumps(
        {
            "plugin": plugin,
            "command": command,
            "containerId": attachment.container_id,
            "ifname": attachment.ifname,
            "outcome": outcome,
        }
    )


def test_plugin_log_with_every_add(attachment, tmp_path):
    log = tmp_path / "krafty.log"
    log.write_text(
        "\n".join(
            [
                log_line(attachment, "krafty-bridge", "error"),
                log_line(attachment, "krafty-bridge", "ok"),
                log_line(attachment, "krafty-veth", "ok"),
                json.dumps(
                    {"plugin": "krafty-veth", "command": "ADD", "containerId": "other", "outcome": "error"}
                ),
            ]
        )
        + "\n"
    )
    result = validate(attachment, "--log-file", str(log))
    assert result.returncode == 0, result.stdout
    assert report(result)["plugin-log"] == ("PASS", "ADD ok by krafty-bridge krafty-veth")


def test_plugin_log_missing_or_failed_add_fails(attachment, tmp_path):
    log = tmp_path / "krafty.log"
    log.write_text(
        log_line(attachment, "krafty-bridge", "error")
        + "\n"
        + log_line(attachment, "krafty-veth", "ok", "DEL")
        + "\n"
    )
    result = validate(attachment, "--log-file", str(log))
    assert result.returncode == 1
    assert report(result)["plugin-log"] == ("FAIL", "krafty-bridge: error krafty-veth: no ADD")
    result = validate(attachment, "--log-file", str(tmp_path / "absent.log"))
    assert report(result)["plugin-log"][0] == "FAIL"
