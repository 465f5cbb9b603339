#!/usr/bin/env bash
# The runtime tests (tests/runtime): krafty under podman 4 with its CNI backend, in a node network
# namespace of their own, from a busybox root file system. See tests/runtime/test_podman.py.
#
#   tests/runtime/run.sh [PYTEST-ARGS...]
#
# KRAFTY_BIN_DIR     the plugins to test (default: the debug build, built here with cargo)
# KRAFTY_RUNTIME_VRF 1: chains with krafty-vrf (a kernel with VRF, e.g. scripts/vm-run.sh)
#
# Needs root, podman 4 (podman 5 has no CNI backend), runc, conmon, busybox (busybox-static),
# nsenter, iproute2, pytest. Fails, naming what is missing, when any is. Ends with pytest's
# summary line; exits non-zero on any failure.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
python=${PYTHON:-python3}

die() { echo "tests/runtime/run.sh: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "needs root (network namespaces, rootful podman)"
for tool in podman runc conmon busybox nsenter ip; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install podman runc busybox-static util-linux iproute2)"
done
podman_version=$(podman --version | awk '{print $3}')
[[ $podman_version == 4.* ]] || die "podman $podman_version: the CNI backend these tests use is podman 4's (removed in 5)"
"$python" -c 'import pytest' || die "pytest must import (pip install pytest)"

if [[ -z ${KRAFTY_BIN_DIR:-} ]]; then
    (cd "$repo" && cargo build --quiet -p krafty-vrf -p krafty-bridge -p krafty-veth -p krafty) || die "cargo build failed"
fi

cd "$repo"
exec "$python" -m pytest "$here" -p no:cacheprovider "$@"
