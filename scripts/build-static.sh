#!/usr/bin/env bash
# Builds krafty's statically linked musl binaries for one architecture, checks them and copies
# them to OUT. installer/Dockerfile runs it (on the build machine's platform, cross-compiling);
# it runs the same way on any Debian-like machine with the toolchain below.
#
#   scripts/build-static.sh ARCH OUT plugins|installer
#
# ARCH is amd64 or arm64 (Docker's TARGETARCH). plugins: krafty-vrf, krafty-bridge,
# krafty-veth and krafty; installer: krafty-installer. Two separate cargo builds, because cargo unifies
# features across the packages of one invocation and the installer's (tokio's multi-thread
# runtime, kube, ...) have no business in the plugins.
# Every binary must be static (a binary that asks for a dynamic loader fails the build) and
# answer (plugins: VERSION; the installer: --version), under qemu-user (qemu-ARCH-static) when
# ARCH is not this machine's: static binaries need neither binfmt nor a sysroot.
# Toolchain: rustup's target ARCH-unknown-linux-musl, and a C compiler and linker for it named
# by CC_<target> and CARGO_TARGET_<TARGET>_LINKER; by default Debian's gcc for the architecture
# (gcc-x86-64-linux-gnu, gcc-aarch64-linux-gnu), as installer/Dockerfile sets them.
set -euo pipefail

usage() {
    echo "usage: scripts/build-static.sh amd64|arm64 OUT plugins|installer" >&2
    exit 2
}
[[ $# -eq 3 ]] || usage
arch=$1
out=$2
case $arch in
    amd64) machine=x86_64 ;;
    arm64) machine=aarch64 ;;
    *) echo "build-static: krafty builds for amd64 and arm64, not $arch" >&2; exit 2 ;;
esac
case $3 in
    plugins) binaries=(krafty-vrf krafty-bridge krafty-veth krafty) ;;
    installer) binaries=(krafty-installer) ;;
    *) usage ;;
esac

target=$machine-unknown-linux-musl
# Rust brings musl (crt objects and libc); the glibc cross toolchain compiles C and links.
gcc=${machine//_/-}-linux-gnu-gcc
target_var=${target//-/_}
export "CC_$target_var=$(printenv "CC_$target_var" || echo "$gcc")"
export "CARGO_TARGET_${target_var^^}_LINKER=$(printenv "CARGO_TARGET_${target_var^^}_LINKER" || echo "$gcc")"
run=()
[[ $(uname -m) == "$machine" ]] || run=("qemu-$machine-static")

packages=()
for binary in "${binaries[@]}"; do
    packages+=(-p "$binary")
done
cargo build --release --locked --target "$target" "${packages[@]}"

mkdir -p "$out"
target_dir=${CARGO_TARGET_DIR:-target}
for binary in "${binaries[@]}"; do
    cp "$target_dir/$target/release/$binary" "$out/"
    # Output captured before grep: `readelf | grep -q` under pipefail can fail on SIGPIPE and
    # let a dynamic binary through.
    headers=$(readelf --program-headers "$out/$binary")
    if grep -q INTERP <<<"$headers"; then
        echo "build-static: $binary is not statically linked" >&2
        exit 1
    fi
    if [[ $binary == krafty-installer ]]; then
        "${run[@]}" "$out/$binary" --version
    else
        version=$(CNI_COMMAND=VERSION "${run[@]}" "$out/$binary" <<<'{}')
        grep -q supportedVersions <<<"$version" || { echo "build-static: $binary VERSION: $version" >&2; exit 1; }
        echo "$binary: $version"
    fi
done
