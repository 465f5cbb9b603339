#!/usr/bin/env bash
# The version a release publishes, checked. Prints `version=X` (for $GITHUB_OUTPUT) when the
# chart's version, its appVersion and the Cargo workspace's version are all X, X is
# MAJOR.MINOR.PATCH[-PRERELEASE], and the tag, when given, is vX. Exits 1 naming the mismatch
# otherwise. The release workflow (.github/workflows/release.yml) runs it first: the images
# (tagged X), the chart (version X, whose image tag defaults to appVersion X) and the binaries
# (--version, the node annotation) then all say the same.
#
#   scripts/release-version.sh [TAG]
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
chart=$repo/charts/krafty/Chart.yaml
cargo_manifest=$repo/Cargo.toml

fail() {
    echo "release-version: $*" >&2
    exit 1
}

[[ $# -le 1 ]] || { echo "usage: scripts/release-version.sh [TAG]" >&2; exit 2; }

# chart_field NAME: a top-level scalar of Chart.yaml, quotes removed.
chart_field() {
    sed -n -E "s/^$1:[[:space:]]*\"?([^\"[:space:]]*)\"?[[:space:]]*$/\\1/p" "$chart"
}
chart_version=$(chart_field version)
app_version=$(chart_field appVersion)
# version = "..." in Cargo.toml's [workspace.package] table.
cargo_version=$(awk -F'"' '/^\[/ { table = $0 } table == "[workspace.package]" && /^version[[:space:]]*=/ { print $2 }' "$cargo_manifest")

[[ -n $chart_version ]] || fail "$chart has no version"
[[ $chart_version =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] ||
    fail "Chart.yaml's version $chart_version is not MAJOR.MINOR.PATCH[-PRERELEASE]"
[[ $app_version == "$chart_version" ]] ||
    fail "Chart.yaml's appVersion (${app_version:-none}) is not its version ($chart_version): the image tag defaults to appVersion"
[[ $cargo_version == "$chart_version" ]] ||
    fail "Cargo.toml's workspace version (${cargo_version:-none}) is not the chart's ($chart_version)"
if [[ $# -eq 1 && $1 != "v$chart_version" ]]; then
    fail "the tag $1 is not v$chart_version (Chart.yaml's version and appVersion)"
fi
echo "version=$chart_version"
