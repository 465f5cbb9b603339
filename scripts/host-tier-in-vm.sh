#!/usr/bin/env bash
# The host tier's plugin tests (chain, scopes, bad input, hostile, attachments, conversion,
# groups, host-local) run once more inside the VM, on Debian's kernel, which has VRF: the tests
# must pass on whichever kernel runs them, not only on this machine's. Not part of
# scripts/test.sh (about 8 minutes under emulation); docs/testing.md records its last run.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-$PWD/target}
shipped=$target/x86_64-unknown-linux-musl/release
tools=$target/vm-tools

cargo build --release --quiet --target x86_64-unknown-linux-musl -p krafty-vrf -p krafty-bridge -p krafty-veth
scripts/build-cnidriver.sh "$target/cnidriver"
rm -rf "$tools" && mkdir -p "$tools" && cp "$target/cnidriver" "$tools/"
mapfile -t binaries < <(cargo test -p krafty-tests --no-run --message-format=json 2>/dev/null |
    jq -r 'select(.reason == "compiler-artifact" and .executable != null and
        (.target.name | test("^(chain|scopes|bad_input|hostile|attachments|conversion|groups|host_local)$")))
        | .executable')
if [[ ${#binaries[@]} -ne 8 ]]; then
    echo "host-tier-in-vm: expected 8 test binaries, found ${#binaries[@]}" >&2
    exit 1
fi

# shellcheck disable=SC2016 # expanded in the guest
scripts/vm-run.sh --rwdir "$target" --cached "$shipped" --cached "$tools" -- bash -c '
    shipped=$1 tools=$2; shift 2
    echo "kernel $(uname -r)"
    failed=0
    for binary in "$@"; do
        echo "=== $(basename "$binary")"
        KRAFTY_BIN_DIR="$shipped" KRAFTY_CNIDRIVER="$tools/cnidriver" KRAFTY_TEST_NODES=/run/krafty-tests \
            "$binary" --test-threads=2 || failed=1
    done
    exit "$failed"' host-tier-in-vm "$shipped" "$tools" "${binaries[@]}"
