#!/usr/bin/env bash
# The arm64 tier: the plugins cross-built for aarch64 (static musl, as installer/Dockerfile
# builds them for linux/arm64) and run on this machine under qemu-user: VERSION of each (by
# scripts/build-static.sh), then ADD, CHECK, DEL, STATUS and GC through the libcni driver in
# network namespaces (the krafty-tests binaries named below), every plugin started by
# qemu-aarch64-static, the tests themselves native.
#
#   scripts/arm64.sh
#
# No binfmt_misc registration is needed: the test harness runs each plugin through a small
# script (KRAFTY_BIN_DIR) that starts it under qemu-aarch64-static. host-local stays native.
# Needs root, the rustup target aarch64-unknown-linux-musl, Debian's gcc-aarch64-linux-gnu (the
# linker), qemu-user-static, cargo-nextest and the libcni driver: `scripts/setup.sh test`
# installs them, scripts/build-cnidriver.sh builds the driver. Exits non-zero, naming what is
# missing, when it cannot run.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
target=${CARGO_TARGET_DIR:-$repo/target}
plugins=(krafty-vrf krafty-bridge krafty-veth krafty)
# What qemu-user runs: the chain in both scopes and the original's single plugin, every verb
# through libcni.
tests='binary(chain) | binary(original) | binary(scopes)'

die() {
    echo "arm64: ERROR: $*" >&2
    exit 1
}

command -v qemu-aarch64-static >/dev/null || die "qemu-aarch64-static is missing (scripts/setup.sh test)"
command -v aarch64-linux-gnu-gcc >/dev/null || die "aarch64-linux-gnu-gcc is missing (scripts/setup.sh test)"
rustup target list --installed | grep -qx aarch64-unknown-linux-musl ||
    die "the rustup target aarch64-unknown-linux-musl is missing (scripts/setup.sh test)"
[[ -x $target/cnidriver ]] || die "$target/cnidriver is missing (scripts/build-cnidriver.sh)"

built=$target/arm64/plugins
scripts/build-static.sh arm64 "$built" plugins >/dev/null || die "the aarch64 plugins do not build or do not answer VERSION"
for plugin in "${plugins[@]}"; do
    header=$(readelf --file-header "$built/$plugin")
    grep -q 'Machine:.*AArch64' <<<"$header" || die "$built/$plugin is not an aarch64 binary"
done

# The harness runs $KRAFTY_BIN_DIR/<plugin>: here each starts the aarch64 binary under qemu-user
# and counts its runs, so that the tier can tell the emulated plugins were the ones tested.
emulated=$target/arm64/bin
runs=$target/arm64/runs
rm -rf "$emulated" "$runs"
mkdir -p "$emulated" "$runs"
for plugin in "${plugins[@]}"; do
    printf '#!/bin/sh\necho >>%s\nexec qemu-aarch64-static %s "$@"\n' \
        "$runs/$plugin" "$built/$plugin" >"$emulated/$plugin"
    chmod 755 "$emulated/$plugin"
done
echo "arm64: the aarch64 plugins answer VERSION under qemu-aarch64-static; now the libcni tests"

status=0
KRAFTY_BIN_DIR=$emulated KRAFTY_CNIDRIVER=$target/cnidriver \
    cargo nextest run -p krafty-tests --no-fail-fast -E "$tests" || status=$?
for plugin in "${plugins[@]}"; do
    count=$(wc -l <"$runs/$plugin" 2>/dev/null || echo 0)
    echo "arm64: $plugin ran $count times under qemu-aarch64-static"
    [[ $count -gt 0 ]] || { echo "arm64: ERROR: the tests never ran the aarch64 $plugin" >&2; status=1; }
done
exit "$status"
