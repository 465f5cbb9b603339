#!/usr/bin/env bash
# The krafty benchmark: krafty chain vs Debian's reference plugins vs the `ip -batch` floor, on
# this machine's kernel and (with VRF) on Debian's kernel in the VM; writes docs/benchmarks.md
# and its plot. Not a test: nothing here passes or fails on the numbers.
#
#   scripts/bench.sh                      # everything (`make bench`)
#   KRAFTY_BENCH_CYCLES=200               # ADD/DEL cycles per variant and scope on this kernel
#   KRAFTY_BENCH_VM_CYCLES=4              # the same in the VM (software emulation is slow)
#   KRAFTY_BENCH_VM=0 scripts/bench.sh    # leave out the VM part
#
# Needs root, go, gcc, Debian's containernetworking-plugins and golang-github-appc-cni-dev, and
# python3 with matplotlib for the plot; the VM part needs what scripts/vm-run.sh needs.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
target=${CARGO_TARGET_DIR:-$repo/target}
out_dir=$target/bench
cycles=${KRAFTY_BENCH_CYCLES:-200}
vm_cycles=${KRAFTY_BENCH_VM_CYCLES:-4}
mkdir -p "$out_dir"

# Release plugins: the sizes are those of what ships (the release profile strips).
cargo build --release --quiet -p krafty-vrf -p krafty-bridge -p krafty-veth -p krafty-tests --bin krafty-bench
scripts/build-cnidriver.sh "$target/cnidriver"
gcc -static -Os -Wall -Wextra -Werror -o "$target/maxrss" tools/bench/maxrss.c

export KRAFTY_BIN_DIR=$target/release
export KRAFTY_CNIDRIVER=$target/cnidriver
export KRAFTY_BENCH_MAXRSS=$target/maxrss
bench=$target/release/krafty-bench

"$bench" run --kernel host --cycles "$cycles" --out "$out_dir/host.json"

report_args=(--host "$out_dir/host.json")
plot_args=(--host "$out_dir/host.json")
if [ "${KRAFTY_BENCH_VM:-1}" != 0 ]; then
    # The scale and concurrency tests are left out under emulation: they are about this kernel.
    scripts/vm-run.sh --rwdir "$target" -- env KRAFTY_BIN_DIR="$KRAFTY_BIN_DIR" \
        KRAFTY_CNIDRIVER="$KRAFTY_CNIDRIVER" KRAFTY_BENCH_MAXRSS="$KRAFTY_BENCH_MAXRSS" \
        "$bench" run --kernel vm --cycles "$vm_cycles" --scale no --concurrent no --out "$out_dir/vm.json"
    report_args+=(--vm "$out_dir/vm.json")
    plot_args+=(--vm "$out_dir/vm.json")
fi

python3 tools/bench/plot.py "${plot_args[@]}" --out docs/benchmarks-latency.svg
"$bench" report "${report_args[@]}" --plot benchmarks-latency.svg \
    --analysis tools/bench/analysis.md --out docs/benchmarks.md
echo "bench: wrote docs/benchmarks.md and docs/benchmarks-latency.svg (raw samples in $out_dir)"
