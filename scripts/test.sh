#!/usr/bin/env bash
# The krafty test command: every tier, in order, ending with one summary line.
#
#   scripts/test.sh                 # everything
#   KRAFTY_SKIP=vm scripts/test.sh  # explicitly leave out tiers (comma-separated: host, shipped, arm64, podman, vm, deploy, fuzz)
#
# A tier that cannot run (missing tool, no root, VM does not boot) fails; it is never skipped
# unless named in KRAFTY_SKIP, and a skipped tier is reported in the summary.
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo" || exit 1
target="${CARGO_TARGET_DIR:-$repo/target}"
log_dir="$target/test-logs"
mkdir -p "$log_dir"
# The kill-at-every-step tests report their kill points here (krafty_tests::kill::report).
export KRAFTY_KILL_POINTS="$log_dir/kill-points"
kill_points=$KRAFTY_KILL_POINTS
rm -rf "$kill_points"

passed=0
failed=0
skipped_tiers=()
failed_tiers=()

skip_requested() {
    [[ ",${KRAFTY_SKIP:-}," == *",$1,"* ]]
}

# count_results FILE: adds the "N passed" / "N failed" counts of a runner's summary lines.
count_results() {
    local file=$1 p f
    p=$(grep -aoE '[0-9]+ passed' "$file" | awk '{s+=$1} END {print s+0}')
    f=$(grep -aoE '[0-9]+ failed' "$file" | awk '{s+=$1} END {print s+0}')
    passed=$((passed + p))
    failed=$((failed + f))
}

# tier NAME COMMAND...: runs a tier, shows its output, counts its results.
tier() {
    local name=$1
    shift
    if skip_requested "$name"; then
        echo "=== tier $name: SKIPPED because KRAFTY_SKIP names it"
        skipped_tiers+=("$name")
        return
    fi
    echo "=== tier $name: $*"
    local out="$log_dir/$name.log"
    "$@" 2>&1 | tee "$out"
    local status=${PIPESTATUS[0]}
    count_results "$out"
    if [[ $status -ne 0 ]]; then
        failed_tiers+=("$name")
        # A tier that failed before its runner counted anything still counts as a failure.
        if ! grep -aqE '[0-9]+ failed' "$out"; then
            failed=$((failed + 1))
        fi
    fi
}

# Static checks: one pass each, counted as one test each.
check() {
    local name=$1
    shift
    echo "=== check $name: $*"
    if "$@"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        failed_tiers+=("$name")
    fi
}

check fmt cargo fmt --all --check
check clippy cargo clippy --workspace --all-targets --quiet -- -D warnings
check build cargo build --workspace --quiet
check cnidriver scripts/build-cnidriver.sh "$target/cnidriver"
check shellcheck shellcheck scripts/*.sh tests/deploy/run.sh tests/runtime/run.sh .ci/run

# Unit tests and the namespace tests on this machine's kernel (everything but the VRF tier).
tier host cargo nextest run --workspace --no-fail-fast -E 'not binary(vrf)'

# The plugins as they ship (release, stripped, static musl, as installer/Dockerfile and the
# benchmark build them) through the chain, scope and bad-input tests once more.
shipped_dir="$target/x86_64-unknown-linux-musl/release"
build_shipped() {
    cargo build --release --quiet --target x86_64-unknown-linux-musl -p krafty-vrf -p krafty-bridge -p krafty-veth -p krafty
}
shipped_tests() {
    build_shipped &&
        KRAFTY_BIN_DIR="$shipped_dir" KRAFTY_CNIDRIVER="$target/cnidriver" cargo nextest run -p krafty-tests --no-fail-fast \
            -E 'binary(chain) | binary(scopes) | binary(bad_input) | binary(hostile) | binary(original)'
}
tier shipped shipped_tests

# The plugins for arm64, cross-built (static aarch64 musl, as the linux/arm64 image has them) and
# run under qemu-user: VERSION, and the chain and original tests through libcni.
tier arm64 scripts/arm64.sh

# A runtime nobody here wrote: podman 4 with its CNI backend (libcni), containers from a busybox
# root file system, on a node namespace of its own. Chains without krafty-vrf here; the VM tier
# runs them again with it.
tier podman tests/runtime/run.sh

# The VRF tier: Debian's kernel in a VM, sharing this filesystem. One boot runs the lot: the VRF
# tests, then (unless KRAFTY_SKIP names podman) the podman tests with krafty-vrf in every chain,
# on the plugins as they ship (under emulation a small static binary starts several times faster,
# and podman runs every plugin of every network at each command to validate it).
vrf_tests() {
    local binary
    binary=$(cargo test -p krafty-tests --test vrf --no-run --message-format=json 2>/dev/null |
        jq -r 'select(.reason == "compiler-artifact" and .target.name == "vrf" and .executable != null) | .executable' |
        tail -n 1)
    if [[ -z "$binary" || ! -x "$binary" ]]; then
        echo "cannot build the VRF test binary" >&2
        return 1
    fi
    local with_podman=yes
    skip_requested podman && with_podman=no
    if ! build_shipped; then
        echo "cannot build the plugins as they ship" >&2
        return 1
    fi
    # The plugins as they ship and the driver, kept in the guest's page cache (--cached) rather
    # than read again from the uncached 9p share at every exec; the nodes' files on the guest's
    # tmpfs, where flock works.
    local tools="$target/vm-tools"
    rm -rf "$tools" && mkdir -p "$tools" && cp "$target/cnidriver" "$tools/" || return 1
    # shellcheck disable=SC2016 # expanded in the guest
    scripts/vm-run.sh --rwdir "$target" --cached "$shipped_dir" --cached "$tools" -- bash -c '
        KRAFTY_BIN_DIR="$3" KRAFTY_CNIDRIVER="$4/cnidriver" KRAFTY_TEST_NODES=/run/krafty-tests \
            "$1" --test-threads=2; vrf=$?
        podman=0
        if [[ $2 == yes ]]; then KRAFTY_BIN_DIR="$3" KRAFTY_RUNTIME_VRF=1 tests/runtime/run.sh; podman=$?; fi
        exit $((vrf || podman))' vm-tier "$binary" "$with_podman" "$shipped_dir" "$tools"
}
tier vm vrf_tests

# The chart (real Helm SDK), its schema, the Tiltfile (starlark-go), the scripts, nettools, and
# validate.sh --local against namespaces here and in the VM.
tier deploy tests/deploy/run.sh

# The config and protocol parsers under libFuzzer, a few seconds per target.
tier fuzz scripts/fuzz.sh "${KRAFTY_FUZZ_SECONDS:-5}"

echo
# Kill points per verb, over every kill-at-every-step test that ran (host and VM).
if compgen -G "$kill_points/*" >/dev/null; then
    echo "kill points: $(cat "$kill_points"/* | awk '{n[$1] += $2} END {for (v in n) printf "%s %d, ", v, n[v]}' | sed 's/, $//')"
fi
if [[ ${#skipped_tiers[@]} -gt 0 ]]; then
    echo "skipped on request: ${skipped_tiers[*]}"
fi
if [[ ${#failed_tiers[@]} -gt 0 ]]; then
    echo "failed: ${failed_tiers[*]}"
fi
echo "krafty: $passed passed, $failed failed"
[[ $failed -eq 0 && ${#failed_tiers[@]} -eq 0 ]]
