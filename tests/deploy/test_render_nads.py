"""render_nads.py: the conflists the chart ships, written to files for the libcni tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import chartlib

SCRIPT = Path(__file__).resolve().parent / "render_nads.py"


def render_nads(outdir: Path, *values: Path) -> subprocess.CompletedProcess:
    argv = [sys.executable, str(SCRIPT), str(outdir)]
    for path in values:
        argv += ["--values", str(path)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def test_defaults_write_the_default_network(tmp_path):
    result = render_nads(tmp_path)
    assert result.returncode == 0, result.stderr
    written = tmp_path / "default_krafty.conflist"
    assert result.stdout.splitlines() == [str(written)]
    # Byte for byte what the NetworkAttachmentDefinition carries.
    assert written.read_text() == chartlib.network_attachments()[0]["spec"]["config"]
    assert json.loads(written.read_text())["name"] == "krafty"


def test_every_network_of_the_values_files_is_written(tmp_path):
    result = render_nads(tmp_path, chartlib.VALUES_DIR / "two-networks.yaml")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["default_krafty.conflist", "lab_storage.conflist"]
    assert json.loads((tmp_path / "lab_storage.conflist").read_text())["cniVersion"] == "0.4.0"


def test_a_single_plugins_config_is_written_as_a_conf(tmp_path):
    result = render_nads(tmp_path, chartlib.VALUES_DIR / "original.yaml")
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["default_original-static.conf", "default_original-tabled.conf", "default_original.conf"]
    assert json.loads((tmp_path / "default_original.conf").read_text())["type"] == "krafty"


def test_values_files_combine_like_helm(tmp_path):
    """A later file overrides an earlier one; networks, a list, is replaced whole."""
    override = tmp_path / "override.yaml"
    override.write_text("image:\n  tag: other\n")
    out = tmp_path / "out"
    result = render_nads(out, chartlib.VALUES_DIR / "static.yaml", override)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in out.iterdir()] == ["default_static.conflist"]


def test_values_the_schema_rejects_fail_with_the_reason(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("networks:\n  - name: x\n    subnets: [nope]\n    gateways: [10.0.0.1]\n")
    result = render_nads(tmp_path / "out", bad)
    assert result.returncode == 1
    assert "/networks/0/subnets/0" in result.stderr
    assert not (tmp_path / "out").exists()


def test_no_network_is_an_error(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("networks: []\n")
    result = render_nads(tmp_path / "out", empty)
    assert result.returncode == 1
    assert "no NetworkAttachmentDefinition" in result.stderr
