#!/usr/bin/env bash
# The deployment tests (tests/deploy): the chart linted and rendered by the real Helm SDK, its
# values schema, the Tiltfile under starlark-go, the scripts and the Makefile, nettools-server,
# and validate.sh --local against network namespaces built for the purpose.
#
#   tests/deploy/run.sh [PYTEST-ARGS...]
#
# Installs requirements.txt with pip when a package is missing, and fails if one still cannot
# be imported. Also needs: root (network namespaces), cargo, shellcheck, jq, make,
# curl, iproute2, ping. Ends with pytest's summary line; exits non-zero on any failure.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}
modules='import helm_python, starlark_go, pytest, yaml, kubernetes'

if ! "$python" -c "$modules" 2>/dev/null; then
    echo "run.sh: installing tests/deploy/requirements.txt"
    "$python" -m pip install -q -r "$here/requirements.txt"
fi
if ! "$python" -c "$modules"; then
    echo "run.sh: helm-python-sdk, starlark-go, pytest, pyyaml and kubernetes must all import; see the error above" >&2
    exit 1
fi

cd "$here/../.."
# No .pytest_cache in the work tree.
exec "$python" -m pytest "$here" -p no:cacheprovider "$@"
