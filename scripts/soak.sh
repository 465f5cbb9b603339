#!/usr/bin/env bash
# The soak of issue 15 at full size: 2000 ADD/DEL pairs at 8-way concurrency over pod- and
# network-scope networks with random SIGKILLs of plugin processes, then the runtime's DELs and
# one GC per network; writes what happened to docs/soak.md. The test command runs the same
# test with 240 pairs (plugins/krafty-tests/tests/soak.rs).
#
#   scripts/soak.sh [PAIRS]    # as root
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${1:-2000}
report=$(mktemp)
trap 'rm -f "$report"' EXIT
cargo build --workspace --quiet
scripts/build-cnidriver.sh target/cnidriver >/dev/null
KRAFTY_SOAK_OPS=$pairs KRAFTY_SOAK_REPORT=$report \
    cargo nextest run -p krafty-tests --test soak --no-capture
{
    echo "# Soak"
    echo
    echo "\`scripts/soak.sh $pairs\` at $(git describe --always --dirty) on $(uname -r), $(nproc) cores,"
    echo "$(date -u +%Y-%m-%d): ADD/DEL churn at 8-way concurrency with plugin processes SIGKILLed"
    echo "at random (every 10-100 ms, one of the node's krafty plugins then running), followed by"
    echo "the runtime's DEL of every attachment whose DEL failed and one GC per network."
    echo
    echo "| what | count |"
    echo "|---|---|"
    cat "$report"
} >docs/soak.md
echo "soak: docs/soak.md written"
