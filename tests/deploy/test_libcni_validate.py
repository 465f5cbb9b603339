"""libcni's own config validation, as podman and CRI-O run it on every config they load: every
conflist the chart renders (default values, values-dev.yaml, values-dev-novrf.yaml, every file of
tests/deploy/values) and every README example goes through `cnidriver validate` (libcni's
ValidateNetworkList, which runs each plugin with CNI_COMMAND=VERSION and CNI_NETNS, CNI_IFNAME,
CNI_PATH set to "dummy") with the built plugins. A runtime drops a network that fails it."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

import chartlib
from test_readme import README, example_values

TARGET = Path(os.environ.get("CARGO_TARGET_DIR", chartlib.REPO / "target"))
CNIDRIVER = TARGET / "cnidriver"
PLUGINS = ("krafty-vrf", "krafty-bridge", "krafty-veth", "krafty")
VALUES_FILES = sorted(chartlib.VALUES_DIR.glob("*.yaml"))
DEV_VALUES = chartlib.CHART / "values-dev.yaml"
DEV_NOVRF_VALUES = chartlib.CHART / "values-dev-novrf.yaml"


@pytest.fixture(scope="module")
def cni_path() -> str:
    """The plugins as built by cargo (plus the reference plugins), and the libcni driver."""
    build = subprocess.run(
        ["cargo", "build", "--quiet", *[arg for p in PLUGINS for arg in ("-p", p)]],
        cwd=chartlib.REPO,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert build.returncode == 0, build.stderr
    driver = subprocess.run(
        [str(chartlib.REPO / "scripts" / "build-cnidriver.sh"), str(CNIDRIVER)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert driver.returncode == 0, driver.stderr
    return f"{TARGET / 'debug'}:/usr/lib/cni"


def cnidriver(*argv: str, cni_path: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CNIDRIVER), *argv, "--cni-path", cni_path],
        env=env if env is not None else os.environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def validate(conflist_text: str, tmp_path: Path, cni_path: str) -> subprocess.CompletedProcess:
    """ValidateNetworkList of a conflist, or ValidateNetwork of a single plugin's config (what
    `plugin: krafty` renders), as a runtime loads a .conflist or a .conf."""
    single = "plugins" not in json.loads(conflist_text)
    path = tmp_path / ("network.conf" if single else "network.conflist")
    path.write_text(conflist_text)
    return cnidriver("validate", "--conf" if single else "--conflist", str(path), cni_path=cni_path)


def assert_valid(result: subprocess.CompletedProcess) -> None:
    assert (result.returncode, result.stdout) == (0, ""), result.stdout + result.stderr


def rendered_conflists(values: dict | None) -> dict[str, str]:
    """namespace/name -> spec.config, verbatim, of every NetworkAttachmentDefinition."""
    return {
        f"{nad['metadata']['namespace']}/{nad['metadata']['name']}": nad["spec"]["config"]
        for nad in chartlib.network_attachments(values)
    }


def readme_conflists() -> list[dict]:
    """Every ```json block of the README and of docs/ that is a whole conflist, or a whole single
    config (a `.conf`: cniVersion, name and type); fragments have neither."""
    texts = [README] + [doc.read_text() for doc in sorted((chartlib.REPO / "docs").glob("*.md"))]
    blocks = [json.loads(b) for text in texts for b in re.findall(r"```json\n(.*?)```", text, re.DOTALL)]
    return [b for b in blocks if "plugins" in b or {"cniVersion", "name", "type"} <= set(b)]


@pytest.mark.parametrize(
    "values_file", [None, DEV_VALUES, DEV_NOVRF_VALUES, *VALUES_FILES], ids=lambda p: p.name if p else "defaults"
)
def test_every_rendered_conflist_passes_libcni_validation(values_file, tmp_path, cni_path):
    values = chartlib.values_from_files([values_file]) if values_file else None
    conflists = rendered_conflists(values)
    assert conflists
    for key, text in conflists.items():
        result = validate(text, tmp_path, cni_path)
        assert (result.returncode, result.stdout) == (0, ""), f"{key}: {result.stdout}{result.stderr}"


@pytest.mark.parametrize("name", sorted(example_values()))
def test_every_readme_nad_example_passes_libcni_validation(name, tmp_path, cni_path):
    (text,) = rendered_conflists(example_values()[name]).values()
    assert_valid(validate(text, tmp_path, cni_path))


def test_every_readme_conflist_passes_libcni_validation(tmp_path, cni_path):
    conflists = readme_conflists()
    # The chain at the top, the podman recipe and the original's config, at least.
    assert len(conflists) >= 3
    assert any(conflist.get("type") == "krafty" for conflist in conflists)
    for conflist in conflists:
        assert_valid(validate(json.dumps(conflist), tmp_path, cni_path))


def test_each_plugin_passes_as_a_single_config(tmp_path, cni_path):
    """ValidateNetwork: what a runtime does with a .conf file (one plugin, no list)."""
    (text,) = rendered_conflists(None).values()
    conflist = json.loads(text)
    for plugin in conflist["plugins"]:
        path = tmp_path / f"{plugin['type']}.conf"
        path.write_text(json.dumps({"cniVersion": conflist["cniVersion"], "name": conflist["name"], **plugin}))
        assert_valid(cnidriver("validate", "--conf", str(path), cni_path=cni_path))


def test_validation_can_fail(tmp_path, cni_path):
    """A version the plugins do not speak, and a plugin that is not there, are refused."""
    (text,) = rendered_conflists(None).values()
    old = json.loads(text) | {"cniVersion": "0.2.0"}
    result = validate(json.dumps(old), tmp_path, cni_path)
    assert result.returncode == 1
    assert 'does not support config version "0.2.0"' in json.loads(result.stdout)["msg"]

    missing = json.loads(text)
    missing["plugins"][0]["type"] = "krafty-nonexistent"
    result = validate(json.dumps(missing), tmp_path, cni_path)
    assert result.returncode == 1
    assert "krafty-nonexistent" in json.loads(result.stdout)["msg"]


# Whatever the node's environment holds, VERSION answers: the CNI_* variables are libcni's (it
# overrides them, with "dummy" for the netns, interface and path), the rest is passed through.
GARBAGE_ENVIRONMENT = {
    "PATH": os.environ["PATH"],
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "../escape",
    "CNI_NETNS": "relative/netns",
    "CNI_IFNAME": "far-too-long-for-linux",
    "CNI_ARGS": "NOT;A=PAIR",
    "CNI_PATH": "",
    "KRAFTY_STATE_ROOT": "relative/state",
    "KRAFTY_LOG_ROOT": "/nonexistent/../log",
    "KRAFTY_RUN_DIR": "",
    "KRAFTY_LOG_LEVEL": "loudest",
}


@pytest.mark.parametrize("plugin", PLUGINS)
def test_version_answers_whatever_the_environment(plugin, cni_path):
    result = cnidriver("version", "--plugin", plugin, cni_path=cni_path, env=GARBAGE_ENVIRONMENT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1.0.0" in json.loads(result.stdout)["supportedVersions"]


def test_validation_passes_whatever_the_environment(tmp_path, cni_path):
    (text,) = rendered_conflists(None).values()
    path = tmp_path / "network.conflist"
    path.write_text(text)
    assert_valid(cnidriver("validate", "--conflist", str(path), cni_path=cni_path, env=GARBAGE_ENVIRONMENT))
