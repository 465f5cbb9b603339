#!/usr/bin/env python3
"""`helm lint --strict charts/krafty` with the Helm SDK, for machines without the helm binary.

    python3 tests/deploy/helm_lint.py [--values FILE]...

Lints with the chart's values.yaml, then with each values file of tests/deploy/values and
charts/krafty/values-*.yaml (or only with the files given). Prints every finding; exits 1 if
any would fail `helm lint --strict`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import chartlib


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", action="append", type=Path, default=None, help="a values file")
    args = parser.parse_args()
    files = args.values or [*sorted(chartlib.CHART.glob("values-*.yaml")), *sorted(chartlib.VALUES_DIR.glob("*.yaml"))]
    failed = False
    for label, values in [("values.yaml", None)] + [
        (str(path), chartlib.values_from_files([path])) for path in files
    ]:
        report = chartlib.lint(values)
        problems = chartlib.lint_problems(report)
        for message in report.get("messages") or []:
            print(f"{label}: [{message['severity']}] {message['path']}: {message['error']}")
        print(f"{label}: {'FAILED' if problems else 'ok'}")
        failed |= bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
