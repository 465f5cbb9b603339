"""Shared setup of the deployment tests (tests/deploy).

helm-python-sdk and starlark-go are imported here, at collection: if either is missing the
whole suite errors out instead of skipping what needs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import helm_python  # noqa: E402,F401  (fail loudly when the Helm SDK is missing)
import starlark_go  # noqa: E402,F401  (fail loudly when starlark-go is missing)

import chartlib  # noqa: E402


@pytest.fixture(scope="session")
def server_binary(tmp_path_factory) -> Path:
    """Copies Cargo.toml and src/ as the Dockerfile does and builds them with no workspace
    around: proof that the image's build stage works, and the binary under test."""
    build_dir = tmp_path_factory.mktemp("nettools-build")
    shutil.copy(chartlib.REPO / "nettools" / "server" / "Cargo.toml", build_dir / "Cargo.toml")
    shutil.copytree(chartlib.REPO / "nettools" / "server" / "src", build_dir / "src")
    env = {**os.environ, "CARGO_TARGET_DIR": str(build_dir / "target"), "CARGO_PROFILE_RELEASE_STRIP": "true"}
    result = subprocess.run(
        ["cargo", "build", "--release", "--offline", "-j1"],
        cwd=build_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return build_dir / "target" / "release" / "nettools-server"
