"""scripts/cluster-up.sh and cluster-down.sh against recording stand-ins for docker, kind,
kubectl and helm (stub_command.py): every preflight failure exits 2 with its message and fix
before anything is created; a passing run creates the cluster at the pinned versions, applies
the vendored Multus manifest, tags the images by content and installs the chart at that tag.
No Docker engine or cluster exists here, so what the tools would do is canned; the scripts'
own logic runs for real under bash.

Also the pinned versions (kind/versions.env), the kind config, the vendored Multus manifest
(its provenance, the two changes and nothing else, every object decoded by the Kubernetes
models), `make deployment`'s use of the recorded image.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml

import chartlib

REPO = chartlib.REPO
CLUSTER_UP = REPO / "scripts" / "cluster-up.sh"
CLUSTER_DOWN = REPO / "scripts" / "cluster-down.sh"
STUB = Path(__file__).resolve().parent / "stub_command.py"
STUBBED = ("docker", "kind", "kubectl", "helm")
# Real tools the scripts use besides the stubbed ones.
REAL = ("bash", "env", "dirname", "cat", "sed", "grep", "head", "tail", "mktemp", "rm", "mkdir", "tr")
VERSIONS_FILE = REPO / "kind" / "versions.env"
MULTUS_DIR = REPO / "kind" / "multus"
UPSTREAM_MULTUS = MULTUS_DIR / "upstream-v4.2.2-thick.yml"
PATCHED_MULTUS = MULTUS_DIR / "multus-thick.yml"
# deployments/multus-daemonset-thick.yml at k8snetworkplumbingwg/multus-cni tag v4.2.2
# (commit 00adf22482945de41ff702258593aaf867a48e2d), as git names its content.
UPSTREAM_MULTUS_BLOB = "652e07f3292380ce22fb74fc308813dc7f801571"
# The Kubernetes minors Cilium's documentation lists as e2e-tested, per Cilium minor
# (docs.cilium.io, "Kubernetes Compatibility"). A Cilium bump must add its line here.
CILIUM_TESTED_KUBERNETES = {"1.18": ["1.30", "1.31", "1.32", "1.33"]}
INSTALLER_ID = "sha256:" + "a1b2c3d4e5f6" + "0" * 52
NETTOOLS_ID = "sha256:" + "0f1e2d3c4b5a" + "1" * 52


def versions() -> dict[str, str]:
    pinned = {}
    for line in VERSIONS_FILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, value = line.split("=", 1)
            pinned[key] = value
    return pinned


# --- the harness ---------------------------------------------------------------------------------


class Tools:
    """A PATH of stubs and the few real tools the scripts need; the stubs' answers and log."""

    def __init__(self, tmp_path: Path, host: str = "linux x86_64 2"):
        self.dir = tmp_path / "bin"
        self.dir.mkdir(parents=True)
        self.log = tmp_path / "calls.jsonl"
        self.log.touch()
        self.spec_file = tmp_path / "spec.json"
        self.home = tmp_path
        self.cluster_name = "stub-" + uuid.uuid4().hex[:8]
        for tool in REAL:
            found = shutil.which(tool)
            assert found, tool
            (self.dir / tool).symlink_to(found)
        for tool in ("jq", "curl"):
            (self.dir / tool).symlink_to(shutil.which(tool))
        for tool in STUBBED:
            script = self.dir / tool
            script.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -S {shlex.quote(str(STUB))} {tool} "$@"\n')
            script.chmod(0o755)
        self.spec: dict[str, list[dict[str, Any]]] = {
            "docker": [
                {"args": ["info"], "stdout": host + "\n"},
                {"args": ["build", "--platform"], "contains": [str(REPO / "nettools")], "iidfile": NETTOOLS_ID},
                {"args": ["build", "--platform"], "iidfile": INSTALLER_ID},
                {"args": ["image", "ls"], "stdout": ""},
            ],
            "kind": [{"args": ["version"], "stdout": "kind v0.29.0 go1.24.2 linux/amd64\n"}],
        }

    def answer(self, tool: str, args: list[str], **rule: Any) -> None:
        """Puts a rule first: it wins over the defaults."""
        self.spec.setdefault(tool, []).insert(0, {"args": args, **rule})

    def remove(self, tool: str) -> None:
        (self.dir / tool).unlink()

    def run(self, script: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
        self.spec_file.write_text(json.dumps(self.spec))
        environment = {
            "PATH": str(self.dir),
            "HOME": str(self.home),
            "STUB_LOG": str(self.log),
            "STUB_SPEC": str(self.spec_file),
            "CLUSTER_NAME": self.cluster_name,
            **env,
        }
        return subprocess.run(
            [str(self.dir / "bash"), str(script), *args],
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.home,
        )

    def calls(self, tool: str | None = None) -> list[list[str]]:
        """Every call as [tool, arg...], or one tool's as [arg...]."""
        entries = [json.loads(line) for line in self.log.read_text().splitlines()]
        if tool is None:
            return entries
        return [entry[1:] for entry in entries if entry[0] == tool]

    def created_anything(self) -> list[list[str]]:
        """The calls that create or change something: none may happen before the preflights pass."""
        changing = []
        for tool, *args in self.calls():
            if (
                (tool == "kind" and args[:1] in (["create"], ["load"], ["delete"]))
                or tool == "helm"
                or (tool == "kubectl" and any(a in args for a in ("apply", "create", "delete", "patch")))
                or (tool == "docker" and args[:1] in (["build"], ["tag"], ["rmi"], ["pull"]))
            ):
                changing.append([tool, *args])
        return changing

    @property
    def images_file(self) -> Path:
        return REPO / "target" / "kind" / self.cluster_name / "images.env"


@pytest.fixture
def tools(tmp_path):
    stubs = Tools(tmp_path)
    yield stubs
    shutil.rmtree(stubs.images_file.parent, ignore_errors=True)


def refused(result: subprocess.CompletedProcess, tools: Tools, message: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr, result.stderr
    assert "  fix: " in result.stderr, result.stderr
    assert tools.created_anything() == []
    assert not tools.images_file.exists()


def test_stub_harness_records_and_answers(tools):
    """The stand-ins themselves: a rule answers, an unmatched call succeeds silently, both are logged."""
    tools.answer("kind", ["get", "clusters"], stdout="a\n", exit=3)
    tools.spec_file.write_text(json.dumps(tools.spec))
    env = {"STUB_LOG": str(tools.log), "STUB_SPEC": str(tools.spec_file)}
    first = subprocess.run([tools.dir / "kind", "get", "clusters"], env=env, capture_output=True, text=True)
    second = subprocess.run([tools.dir / "helm", "list"], env=env, capture_output=True, text=True)
    assert (first.returncode, first.stdout, second.returncode, second.stdout) == (3, "a\n", 0, "")
    assert tools.calls() == [["kind", "get", "clusters"], ["helm", "list"]]
    assert tools.created_anything() == [["helm", "list"]]


# --- preflights: exit 2, a message and a fix, nothing created --------------------------------------


@pytest.mark.parametrize("tool", ["docker", "kind", "kubectl", "helm", "jq", "curl"])
def test_a_missing_tool_is_named(tools, tool):
    tools.remove(tool)
    result = tools.run(CLUSTER_UP)
    refused(result, tools, f"missing tools: {tool}\n")
    assert tools.calls() == []


def test_every_missing_tool_is_named_at_once(tools):
    for tool in ("docker", "kind", "kubectl", "helm", "jq", "curl"):
        tools.remove(tool)
    refused(tools.run(CLUSTER_UP), tools, "missing tools: docker kind kubectl helm jq curl")


def test_an_unreachable_docker_engine_is_refused(tools):
    tools.answer(
        "docker",
        ["info"],
        exit=1,
        stderr="Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?\n",
    )
    result = tools.run(CLUSTER_UP)
    refused(result, tools, "docker cannot reach a Docker engine: Cannot connect to the Docker daemon at")
    assert "systemctl start docker" in result.stderr and "usermod -aG docker" in result.stderr


@pytest.mark.parametrize(
    "host,message,fix",
    [
        ("windows x86_64 1", "the Docker engine runs windows containers", "Linux containers"),
        ("linux s390x 2", "the Docker host is s390x; the kind node image and krafty's images exist for amd64 and arm64 only", "arm64"),
        ("linux riscv64 2", "the Docker host is riscv64", "x86_64"),
        ("linux x86_64 1", "the Docker host uses cgroup v1; Cilium without kube-proxy", "systemd.unified_cgroup_hierarchy=1"),
        ("linux aarch64 1", "cgroup v1", "kernelCommandLine = cgroup_no_v1=all"),
    ],
)
def test_the_docker_host_is_checked(tmp_path, host, message, fix):
    tools = Tools(tmp_path, host=host)
    result = tools.run(CLUSTER_UP)
    refused(result, tools, message)
    assert fix in result.stderr


def test_docker_warnings_do_not_spoil_the_host_check(tools):
    """docker info prints warnings on stderr (bridge-nf-call-iptables ...); they are not data."""
    tools.answer("docker", ["info"], stdout="linux x86_64 1\n", stderr="WARNING: bridge-nf-call-iptables is disabled\n")
    refused(tools.run(CLUSTER_UP), tools, "cgroup v1")


@pytest.mark.parametrize(
    "output", ["kind v0.20.0 go1.20.4 linux/amd64\n", "kind v0.28.9 go1.24 linux/arm64\n", "kind version unknown\n"]
)
def test_a_kind_older_than_the_node_image_is_refused(tools, output):
    tools.answer("kind", ["version"], stdout=output)
    result = tools.run(CLUSTER_UP)
    refused(result, tools, f"is not {versions()['KIND_MIN_VERSION']} or newer, the release the pinned node image")
    assert f"go install sigs.k8s.io/kind@{versions()['KIND_MIN_VERSION']}" in result.stderr


@pytest.mark.parametrize("output", ["kind v0.29.0 go1.24.2 linux/amd64\n", "kind v0.31.2 go1.25 darwin/arm64\n", "kind v1.0.0\n"])
def test_kind_at_or_above_the_minimum_passes(tools, output):
    tools.answer("kind", ["version"], stdout=output)
    tools.answer("docker", ["run"], exit=2, stderr="Error: Unknown device type.\n")
    # Stopped by the next check, the VRF probe, so past the version check.
    refused(tools.run(CLUSTER_UP), tools, "cannot create VRF devices")


def test_a_kernel_without_vrf_is_refused_with_the_no_vrf_values_offered(tools):
    tools.answer("docker", ["run"], exit=2, stderr="Error: Unknown device type.\n")
    result = tools.run(CLUSTER_UP)
    refused(
        result,
        tools,
        "the Docker host's kernel cannot create VRF devices (Error: Unknown device type.); krafty's default network puts each pod in a VRF",
    )
    assert "sudo modprobe vrf" in result.stderr
    assert "KRAFTY_VRF=no make up" in result.stderr
    assert "charts/krafty/values-dev-novrf.yaml" in result.stderr
    assert (REPO / "charts" / "krafty" / "values-dev-novrf.yaml").is_file()
    # The probe: the pinned node image, in a container and network namespace of its own.
    (probe,) = tools.calls("docker")[-1:]
    assert probe == [
        "run", "--rm", "--network", "none", "--cap-add", "NET_ADMIN", "--entrypoint", "ip",
        versions()["KIND_NODE_IMAGE"], "link", "add", "krafty-probe", "type", "vrf", "table", "4242",
    ]  # fmt: skip


def test_a_probe_that_cannot_run_is_not_mistaken_for_missing_vrf(tools):
    tools.answer(
        "docker",
        ["run"],
        exit=125,
        stderr="Unable to find image locally\ndocker: Error response from daemon: pull access denied.\nSee 'docker run --help'.\n",
    )
    result = tools.run(CLUSTER_UP)
    refused(result, tools, "could not run the VRF probe container: docker: Error response from daemon: pull access denied.")
    assert "VRF devices" not in result.stderr


@pytest.mark.parametrize(
    "args,env,message",
    [
        (["--with-everything"], {}, "usage: "),
        (["--without-chart", "extra"], {}, "usage: "),
        ([], {"KRAFTY_VRF": "maybe"}, "KRAFTY_VRF must be yes or no, not maybe"),
        ([], {"CLUSTER_NAME": "../../etc"}, "CLUSTER_NAME must be lower-case letters"),
        ([], {"CLUSTER_NAME": "Krafty"}, "CLUSTER_NAME must be lower-case letters"),
    ],
)
def test_usage_errors_exit_2_before_any_tool_runs(tools, args, env, message):
    result = tools.run(CLUSTER_UP, *args, **env)
    assert result.returncode == 2
    assert message in result.stderr
    assert tools.calls() == []


# --- a passing run -------------------------------------------------------------------------------


def command_index(calls: list[list[str]], *prefix: str) -> int:
    for i, call in enumerate(calls):
        if call[: len(prefix)] == list(prefix):
            return i
    raise AssertionError(f"no {' '.join(prefix)} in {calls}")


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_make_up_creates_the_pinned_cluster_and_installs_what_it_built(tools):
    pinned = versions()
    result = tools.run(CLUSTER_UP)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = tools.calls()
    flat = [" ".join(c) for c in calls]

    create = calls[command_index(calls, "kind", "create", "cluster")]
    assert option(create, "--name") == tools.cluster_name
    assert option(create, "--image") == pinned["KIND_NODE_IMAGE"]
    assert option(create, "--config") == str(REPO / "kind" / "cluster.yaml")

    cilium = calls[command_index(calls, "helm", "upgrade", "--install", "cilium")]
    assert option(cilium, "--version") == pinned["CILIUM_VERSION"]
    assert option(cilium, "--kube-context") == f"kind-{tools.cluster_name}"
    assert "k8sServiceHost=" + tools.cluster_name + "-control-plane" in cilium
    assert "cni.exclusive=false" in cilium

    apply = calls[command_index(calls, "kubectl", "--context", f"kind-{tools.cluster_name}", "apply")]
    assert apply[-2:] == ["-f", str(PATCHED_MULTUS)]
    assert not any("raw.githubusercontent" in c or c.startswith("curl") for c in flat), "Multus is vendored"

    builds = [c for c in calls if c[:2] == ["docker", "build"]]
    assert [c[-1] for c in builds] == [str(REPO), str(REPO / "nettools")]
    assert [option(c, "-f") for c in builds] == [str(REPO / "installer/Dockerfile"), str(REPO / "nettools/Dockerfile")]
    assert {option(c, "--platform") for c in builds} == {"linux/amd64"}
    tag = INSTALLER_ID.removeprefix("sha256:")[:12]
    nettools_tag = NETTOOLS_ID.removeprefix("sha256:")[:12]
    assert ["docker", "tag", INSTALLER_ID, f"krafty-installer:{tag}"] in calls
    assert ["docker", "tag", NETTOOLS_ID, f"krafty-nettools:{nettools_tag}"] in calls
    assert [
        "kind", "load", "docker-image", "--name", tools.cluster_name,
        f"krafty-installer:{tag}", f"krafty-nettools:{nettools_tag}",
    ] in calls  # fmt: skip

    krafty = calls[command_index(calls, "helm", "upgrade", "--install", "krafty")]
    assert krafty[4] == str(chartlib.CHART)
    assert option(krafty, "--namespace") == chartlib.NAMESPACE
    assert [krafty[i + 1] for i, a in enumerate(krafty) if a == "--values"] == [str(chartlib.CHART / "values-dev.yaml")]
    assert option(krafty, "--set") == f"image.tag={tag}"
    # In this order: cluster, Cilium, Multus, images loaded, chart.
    order = [
        command_index(calls, "kind", "create"),
        command_index(calls, "helm", "upgrade", "--install", "cilium"),
        command_index(calls, "kubectl", "--context", f"kind-{tools.cluster_name}", "apply"),
        command_index(calls, "kind", "load"),
        command_index(calls, "helm", "upgrade", "--install", "krafty"),
    ]
    assert order == sorted(order)

    assert tools.images_file.read_text() == (
        f"INSTALLER_IMAGE=krafty-installer:{tag}\nNETTOOLS_IMAGE=krafty-nettools:{nettools_tag}\n"
    )
    assert f"next: make deployment (nettools at krafty-nettools:{nettools_tag})" in result.stdout


def test_a_rebuild_rolls_to_the_new_tag_and_drops_the_old_one(tools):
    """Re-running on an existing cluster: no new cluster; a changed image gets a new tag, which the
    chart then names (so the DaemonSet rolls); the previous content tag is removed."""
    tools.answer("kind", ["get", "clusters"], stdout=f"other\n{tools.cluster_name}\n")
    tools.answer(
        "kubectl",
        ["--context", f"kind-{tools.cluster_name}", "get", "nodes"],
        stdout="v1.33.1 v1.33.1",
    )
    tools.answer(
        "docker",
        ["image", "ls", "--format", "{{.Repository}}:{{.Tag}}", "krafty-installer"],
        stdout="krafty-installer:a1b2c3d4e5f6\nkrafty-installer:0123456789ab\nkrafty-installer:keep-me\n",
    )
    first = tools.run(CLUSTER_UP)
    assert first.returncode == 0, first.stderr
    assert not [c for c in tools.calls("kind") if c[0] == "create"]
    assert "warning" not in first.stderr
    assert ["rmi", "krafty-installer:0123456789ab"] in tools.calls("docker")
    assert ["rmi", "krafty-installer:a1b2c3d4e5f6"] not in tools.calls("docker")
    assert ["rmi", "krafty-installer:keep-me"] not in tools.calls("docker"), "only content tags are pruned"

    tools.log.write_text("")
    rebuilt = "sha256:" + "feedfacecafe" + "2" * 52
    tools.answer("docker", ["build", "--platform"], contains=[str(REPO)], iidfile=rebuilt)
    second = tools.run(CLUSTER_UP)
    assert second.returncode == 0, second.stderr
    krafty = [c for c in tools.calls("helm") if c[:3] == ["upgrade", "--install", "krafty"]]
    assert option(krafty[0], "--set") == "image.tag=feedfacecafe"
    assert "INSTALLER_IMAGE=krafty-installer:feedfacecafe\n" in tools.images_file.read_text()


def test_an_existing_cluster_at_another_kubernetes_is_reported(tools):
    tools.answer("kind", ["get", "clusters"], stdout=f"{tools.cluster_name}\n")
    tools.answer("kubectl", ["--context", f"kind-{tools.cluster_name}", "get", "nodes"], stdout="v1.36.0 v1.36.0")
    result = tools.run(CLUSTER_UP)
    assert result.returncode == 0
    assert "its nodes run Kubernetes v1.36.0, not v1.33.1" in result.stderr
    assert "make down && make up" in result.stderr


def test_a_long_cluster_list_does_not_make_it_create_a_second_cluster(tools):
    """`kind get clusters | grep -qx NAME` under pipefail: grep exits at the first match, kind
    dies of SIGPIPE writing the rest, the pipeline fails, and the script would create a cluster
    that exists. The list is read whole instead."""
    tools.answer("kind", ["get", "clusters"], stdout=f"{tools.cluster_name}\n" + "other-cluster\n" * 1000, repeat=100)
    result = tools.run(CLUSTER_UP, "--without-chart")
    assert result.returncode == 0, result.stderr
    assert [c for c in tools.calls("kind") if c[0] == "create"] == []
    assert "exists; reusing it" in result.stdout


def test_the_pipe_the_scripts_avoid_does_misfire(tools):
    """The failure the previous test guards against is real with these stubs."""
    tools.answer("kind", ["get", "clusters"], stdout=f"{tools.cluster_name}\n" + "other-cluster\n" * 1000, repeat=100)
    tools.spec_file.write_text(json.dumps(tools.spec))
    env = {"PATH": str(tools.dir), "STUB_LOG": str(tools.log), "STUB_SPEC": str(tools.spec_file)}
    result = subprocess.run(
        [str(tools.dir / "bash"), "-c", f"set -o pipefail; kind get clusters 2>/dev/null | grep -qx {tools.cluster_name}"],
        env=env,
        capture_output=True,
    )
    assert result.returncode != 0


def test_without_chart_builds_nothing_tilt_builds_itself(tools):
    result = tools.run(CLUSTER_UP, "--without-chart")
    assert result.returncode == 0, result.stderr
    calls = tools.calls()
    assert [c for c in calls if c[:2] in (["docker", "build"], ["kind", "load"])] == []
    assert [c[3] for c in calls if c[:3] == ["helm", "upgrade", "--install"]] == ["cilium"]
    assert command_index(calls, "kubectl", "--context", f"kind-{tools.cluster_name}", "apply")
    assert not tools.images_file.exists()
    assert "next: tilt up" in result.stdout


def test_without_vrf_no_probe_and_the_chart_gets_the_no_vrf_values(tools):
    result = tools.run(CLUSTER_UP, KRAFTY_VRF="no")
    assert result.returncode == 0, result.stderr
    assert [c for c in tools.calls("docker") if c[0] == "run"] == []
    krafty = [c for c in tools.calls("helm") if c[:3] == ["upgrade", "--install", "krafty"]][0]
    assert [krafty[i + 1] for i, a in enumerate(krafty) if a == "--values"] == [
        str(chartlib.CHART / "values-dev.yaml"),
        str(chartlib.CHART / "values-dev-novrf.yaml"),
    ]
    tilt = Tools(tools.home / "tilt")
    assert "next: KRAFTY_VRF=no tilt up" in tilt.run(CLUSTER_UP, "--without-chart", KRAFTY_VRF="no").stdout


def test_an_arm64_host_gets_arm64_images(tmp_path):
    tools = Tools(tmp_path, host="linux aarch64 2")
    try:
        result = tools.run(CLUSTER_UP)
        assert result.returncode == 0, result.stderr
        builds = [c for c in tools.calls("docker") if c[0] == "build"]
        assert {option(c, "--platform") for c in builds} == {"linux/arm64"}
    finally:
        shutil.rmtree(tools.images_file.parent, ignore_errors=True)


def test_a_build_without_an_image_id_stops_the_run(tools):
    tools.answer("docker", ["build", "--platform"], iidfile="")
    result = tools.run(CLUSTER_UP)
    assert result.returncode == 1
    assert "docker build of krafty-installer gave no image ID" in result.stderr
    assert [c for c in tools.calls() if c[:3] == ["helm", "upgrade", "--install"] and c[3] == "krafty"] == []


def test_no_version_is_written_into_the_script():
    """kind/versions.env is the one place: the script sources it and names no version itself."""
    script = CLUSTER_UP.read_text()
    assert 'source "$repo/kind/versions.env"' in script
    for value in versions().values():
        assert value not in script, value
    assert not re.search(r"\b1\.(1[0-9]|3[0-9])\.[0-9]+\b|\bv4\.[0-9]", script)


# --- cluster-down ----------------------------------------------------------------------------------


def test_cluster_down_deletes_the_cluster_and_its_image_record(tools):
    tools.images_file.parent.mkdir(parents=True)
    tools.images_file.write_text("NETTOOLS_IMAGE=krafty-nettools:0123456789ab\n")
    tools.answer("kind", ["get", "clusters"], stdout=f"{tools.cluster_name}\n" + "other\n" * 1000, repeat=100)
    result = tools.run(CLUSTER_DOWN)
    assert result.returncode == 0, result.stderr
    assert ["delete", "cluster", "--name", tools.cluster_name] in tools.calls("kind")
    assert not tools.images_file.parent.exists()


def test_cluster_down_without_the_cluster_deletes_nothing(tools):
    tools.answer("kind", ["get", "clusters"], stdout="other\n")
    result = tools.run(CLUSTER_DOWN)
    assert result.returncode == 0
    assert "no kind cluster named" in result.stdout
    assert [c for c in tools.calls("kind") if c[0] == "delete"] == []


def test_cluster_down_needs_kind(tools):
    tools.remove("kind")
    result = tools.run(CLUSTER_DOWN)
    assert result.returncode == 2
    assert "kind is not on PATH" in result.stderr


def test_cluster_down_refuses_a_name_that_is_a_path(tools):
    result = tools.run(CLUSTER_DOWN, CLUSTER_NAME="../..")
    assert result.returncode == 2
    assert tools.calls() == []


# --- make deployment follows the recorded image ------------------------------------------------


def test_make_deployment_applies_the_image_make_up_recorded(tools):
    tools.images_file.parent.mkdir(parents=True)
    tools.images_file.write_text("INSTALLER_IMAGE=krafty-installer:a1b2c3d4e5f6\nNETTOOLS_IMAGE=krafty-nettools:0f1e2d3c4b5a\n")
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "deployment", f"CLUSTER_NAME={tools.cluster_name}"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "sed 's|${NETTOOLS_IMAGE}|krafty-nettools:0f1e2d3c4b5a|' deploy/nettools.yaml" in result.stdout
    overridden = subprocess.run(
        ["make", "-n", "deployment", f"CLUSTER_NAME={tools.cluster_name}", "NETTOOLS_IMAGE=reg/nettools:1"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert "|reg/nettools:1|" in overridden.stdout


def test_make_deployment_without_a_recorded_image_says_to_run_make_up(tools):
    result = subprocess.run(
        ["make", "deployment", f"CLUSTER_NAME={tools.cluster_name}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{tools.dir}:{os.environ['PATH']}", "STUB_LOG": str(tools.log), "STUB_SPEC": "/nonexistent"},
    )
    assert result.returncode != 0
    assert "no nettools image recorded" in result.stderr and "run make up first" in result.stderr
    assert tools.calls() == []


# --- versions ------------------------------------------------------------------------------------


def test_versions_are_pinned_in_one_file():
    pinned = versions()
    assert set(pinned) == {"KIND_MIN_VERSION", "KIND_NODE_IMAGE", "CILIUM_VERSION", "MULTUS_VERSION", "MULTUS_IMAGE"}
    for line in VERSIONS_FILE.read_text().splitlines():
        assert not line or line.startswith("#") or re.fullmatch(r"[A-Z_]+=[^\s'\"$`]+", line), line
    # The node image by digest (of the multi-arch index).
    assert re.fullmatch(r"kindest/node:v1\.\d+\.\d+@sha256:[0-9a-f]{64}", pinned["KIND_NODE_IMAGE"])
    assert re.fullmatch(r"v\d+\.\d+\.\d+", pinned["KIND_MIN_VERSION"])
    assert pinned["MULTUS_IMAGE"] == f"ghcr.io/k8snetworkplumbingwg/multus-cni:{pinned['MULTUS_VERSION']}-thick"


def test_the_node_kubernetes_is_one_cilium_is_tested_with():
    pinned = versions()
    kubernetes_minor = re.search(r":v(\d+\.\d+)\.", pinned["KIND_NODE_IMAGE"]).group(1)
    cilium_minor = ".".join(pinned["CILIUM_VERSION"].split(".")[:2])
    assert cilium_minor in CILIUM_TESTED_KUBERNETES, f"look up Cilium {cilium_minor}'s tested Kubernetes versions"
    assert kubernetes_minor in CILIUM_TESTED_KUBERNETES[cilium_minor]
    # The reasoning sits next to the pins.
    assert f"Cilium {cilium_minor}" in VERSIONS_FILE.read_text()
    assert ", ".join(CILIUM_TESTED_KUBERNETES[cilium_minor][:-1]) in VERSIONS_FILE.read_text()


# --- kind/cluster.yaml -----------------------------------------------------------------------------

# kind.x-k8s.io/v1alpha4's fields (sigs.k8s.io/kind/pkg/apis/config/v1alpha4/types.go).
KIND_CLUSTER_FIELDS = {
    "kind", "apiVersion", "name", "nodes", "networking", "featureGates", "runtimeConfig",
    "kubeadmConfigPatches", "kubeadmConfigPatchesJSON6902", "containerdConfigPatches",
    "containerdConfigPatchesJSON6902",
}  # fmt: skip
KIND_NODE_FIELDS = {"role", "image", "labels", "extraMounts", "extraPortMappings", "kubeadmConfigPatches", "kubeadmConfigPatchesJSON6902"}
KIND_NETWORKING_FIELDS = {
    "ipFamily", "apiServerPort", "apiServerAddress", "podSubnet", "serviceSubnet", "disableDefaultCNI",
    "kubeProxyMode", "dnsSearch",
}  # fmt: skip


def test_kind_config_uses_only_kind_fields_and_leaves_cni_and_kube_proxy_to_cilium():
    config = yaml.safe_load((REPO / "kind" / "cluster.yaml").read_text())
    assert set(config) <= KIND_CLUSTER_FIELDS
    assert set(config["networking"]) <= KIND_NETWORKING_FIELDS
    for node in config["nodes"]:
        assert set(node) <= KIND_NODE_FIELDS
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["networking"] == {"disableDefaultCNI": True, "kubeProxyMode": "none"}
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker"]
    # The node image comes from kind/versions.env (cluster-up's --image), nowhere else.
    assert not any("image" in n for n in config["nodes"])


# --- the vendored Multus manifest --------------------------------------------------------------


def git_blob_id(path: Path) -> str:
    content = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def manifest(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def multus_daemonset(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (daemonset,) = [o for o in objects if o["kind"] == "DaemonSet"]
    return daemonset


def test_upstream_multus_manifest_is_the_release_file():
    assert git_blob_id(UPSTREAM_MULTUS) == UPSTREAM_MULTUS_BLOB
    assert UPSTREAM_MULTUS_BLOB in PATCHED_MULTUS.read_text()


def test_patched_multus_is_upstream_with_the_image_pinned_and_the_limits_lifted():
    """Upstream plus exactly the two changes its header lists, and nothing else."""
    expected = copy.deepcopy(manifest(UPSTREAM_MULTUS))
    spec = multus_daemonset(expected)["spec"]["template"]["spec"]
    for container in spec["containers"] + spec["initContainers"]:
        assert container["image"] == "ghcr.io/k8snetworkplumbingwg/multus-cni:snapshot-thick"
        container["image"] = versions()["MULTUS_IMAGE"]
    (daemon,) = [c for c in spec["containers"] if c["name"] == "kube-multus"]
    assert daemon["resources"]["limits"] == {"cpu": "100m", "memory": "50Mi"}
    del daemon["resources"]["limits"]
    assert manifest(PATCHED_MULTUS) == expected


def test_multus_daemon_has_no_limits_and_the_pinned_image():
    spec = multus_daemonset(manifest(PATCHED_MULTUS))["spec"]["template"]["spec"]
    for container in spec["containers"] + spec["initContainers"]:
        assert container["image"] == versions()["MULTUS_IMAGE"]
        assert "limits" not in container.get("resources", {}), container["name"]
    text = PATCHED_MULTUS.read_text()
    for issue in ("#1349", "#1144", "#1346"):
        assert issue in text


def test_every_multus_object_decodes_into_its_kubernetes_type():
    api = kubernetes.client.ApiClient()
    kinds = []
    for obj in manifest(PATCHED_MULTUS):
        kinds.append(obj["kind"])
        model = api._ApiClient__deserialize(obj, f"V1{obj['kind']}")
        assert api.sanitize_for_serialization(model) == obj, f"{obj['kind']} lost fields when decoded"
    assert kinds == ["CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "ServiceAccount", "ConfigMap", "DaemonSet"]
