#!/usr/bin/env bash
# Fuzzes the parsers of krafty-cni (fuzz/fuzz_targets) with cargo-fuzz and libFuzzer.
#
#   scripts/fuzz.sh        # every target, 5 seconds each
#   scripts/fuzz.sh 60     # every target, 60 seconds each
#
# Needs the nightly toolchain and cargo-fuzz; fails (never skips) without them. Each target runs
# over a temporary copy of fuzz/corpus/<target>, so the checked-in corpus never changes. A crash
# or hang leaves its input in fuzz/artifacts/<target>/ and the fuzzer's output in
# fuzz/target/fuzz-logs/<target>.log. Ends with `fuzz: P passed, F failed`; exits non-zero when
# any target could not be built or run, crashed or hung.
set -uo pipefail

seconds=${1:-5}
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS per target, default 5]" >&2
    exit 2
fi

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo" || exit 1
fuzz_dir="$repo/fuzz"
log_dir="$fuzz_dir/target/fuzz-logs"
# Other builds share this machine.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"

passed=0
failed=0

fail() {
    echo "FAIL fuzz $1: $2"
    failed=$((failed + 1))
}

summary() {
    echo "fuzz: $passed passed, $failed failed"
    if ((failed > 0)); then
        exit 1
    fi
    exit 0
}

if ! cargo +nightly --version >/dev/null 2>&1; then
    fail setup "the nightly toolchain is missing: rustup toolchain install nightly"
    summary
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    fail setup "cargo-fuzz is missing: cargo install cargo-fuzz --locked"
    summary
fi

mkdir -p "$log_dir"
build_log="$log_dir/build.log"
build_started=$SECONDS
if ! cargo +nightly fuzz build --fuzz-dir "$fuzz_dir" >"$build_log" 2>&1; then
    tail -n 30 "$build_log" >&2
    fail build "cargo +nightly fuzz build failed (log: $build_log)"
    summary
fi
echo "fuzz: built the targets in $((SECONDS - build_started)) s"

mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir "$fuzz_dir" 2>/dev/null)
if ((${#targets[@]} == 0)); then
    fail list "cargo fuzz list found no fuzz targets in $fuzz_dir"
    summary
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/krafty-fuzz.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT

# final_stat NAME LOG: one of libFuzzer's final statistics (-print_final_stats=1).
final_stat() {
    grep -aoE "^stat::$1: *[0-9]+" "$2" | tail -n 1 | grep -oE '[0-9]+$'
}

for target in "${targets[@]}"; do
    seeds="$fuzz_dir/corpus/$target"
    if [[ ! -d $seeds ]]; then
        fail "$target" "no checked-in corpus $seeds"
        continue
    fi
    corpus="$work/corpus-$target"
    cp -r "$seeds" "$corpus"
    mkdir -p "$work/tmp-$target"
    log="$log_dir/$target.log"
    # The skel target writes its invocation logs below $TMPDIR: keep them in $work.
    TMPDIR="$work/tmp-$target" cargo +nightly fuzz run --fuzz-dir "$fuzz_dir" "$target" "$corpus" -- \
        -max_total_time="$seconds" -timeout=2 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1
    status=$?
    runs=$(final_stat number_of_executed_units "$log")
    rate=$(final_stat average_exec_per_sec "$log")
    if ((status == 0)) && [[ -n $runs ]]; then
        echo "PASS fuzz $target: $runs runs (${rate:-?} exec/s, $seconds s)"
        passed=$((passed + 1))
        continue
    fi
    artifact=$(grep -aoE "Test unit written to [^ ]+" "$log" | tail -n 1 | sed 's/^Test unit written to //')
    if grep -aq "ERROR: libFuzzer: timeout" "$log"; then
        reason="hang (an input ran longer than 2 s)"
    elif grep -aq "ERROR: libFuzzer: out-of-memory" "$log"; then
        reason="out of memory (over 2048 MB)"
    elif grep -aqE "panicked at|ERROR: (libFuzzer|AddressSanitizer)" "$log"; then
        panic=$(grep -a -A1 "panicked at" "$log" | head -n 2 | tr '\n' ' ')
        reason="crash${panic:+: $panic}"
    else
        reason="the fuzzer exited with status $status"
    fi
    fail "$target" "$reason${artifact:+ (input: $artifact)} (log: $log)"
done

summary
