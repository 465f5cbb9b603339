#!/usr/bin/env bash
# Build tools/cnidriver (a libcni-based CNI test driver) offline, against the
# libcni 1.1.2 source shipped by Debian's golang-github-appc-cni-dev package.
#
# Usage: scripts/build-cnidriver.sh [OUT]     (default OUT: target/cnidriver)
#
# No module downloads: GOPATH mode (GO111MODULE=off) with GOPATH pointing at
# the Debian gocode tree. Set KRAFTY_GOPATH to use another GOPATH that has
# src/github.com/containernetworking/cni. Rebuilds only when the source is
# newer than OUT (or OUT is missing).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$repo/target/cnidriver}
case $out in /*) ;; *) out=$PWD/$out ;; esac
src=$repo/tools/cnidriver
gopath=${KRAFTY_GOPATH:-/usr/share/gocode}
libcni=$gopath/src/github.com/containernetworking/cni

die() { echo "build-cnidriver: ERROR: $*" >&2; exit 1; }

command -v go >/dev/null 2>&1 ||
    die "'go' not found in PATH (apt-get install golang-go)"
if [ ! -f "$libcni/libcni/api.go" ] || [ ! -d "$libcni/pkg/invoke" ]; then
    die "libcni source not found under $libcni (apt-get install golang-github-appc-cni-dev, or set KRAFTY_GOPATH)"
fi
[ -f "$src/main.go" ] || die "missing $src/main.go"

# Up to date? (compare against every file in the package directory)
if [ -x "$out" ] && [ -z "$(find "$src" -newer "$out" -print -quit)" ]; then
    echo "build-cnidriver: $out is up to date" >&2
    exit 0
fi

mkdir -p "$(dirname "$out")"
# Build into a temp file then rename, so a failed build never leaves a
# stale-but-newer binary that would be considered up to date.
tmp=$(mktemp "$out.XXXXXX")
trap 'rm -f "$tmp"' EXIT
(
    cd "$src"
    GO111MODULE=off GOPATH=$gopath GOFLAGS='' CGO_ENABLED=0 \
        go build -trimpath -o "$tmp" .
) || die "go build failed"
chmod 0755 "$tmp"
mv -f "$tmp" "$out"
trap - EXIT
echo "build-cnidriver: built $out" >&2
