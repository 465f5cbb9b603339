"""charts/krafty rendered and linted offline by the real Helm SDK (helm-python-sdk).

Shared by the tests, render_nads.py and helm_lint.py.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "krafty"
VALUES_DIR = Path(__file__).resolve().parent / "values"
# What scripts/cluster-up.sh and the Tiltfile install.
RELEASE = "krafty"
NAMESPACE = "kube-system"


def merge_values(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's rule for several --values files: maps merge key by key, anything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def values_from_files(paths: list[Path | str]) -> dict[str, Any]:
    """The values of `helm install -f A -f B ...`, parsed by Helm's own YAML reader."""
    values: dict[str, Any] = {}
    for path in paths:
        values = merge_values(values, helm.values_from_yaml(Path(path).read_text()))
    return values


def render(values: dict[str, Any] | None = None) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` would print them (NOTES included).

    Raises helm.HelmValuesError when values.schema.json rejects the values and
    helm.HelmRenderError when a template fails.
    """
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def objects(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every Kubernetes object the chart renders."""
    found = []
    for path, text in sorted(render(values).items()):
        if path.endswith("NOTES.txt"):
            continue
        found.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return found


def notes(values: dict[str, Any] | None = None) -> str:
    return next(text for path, text in render(values).items() if path.endswith("NOTES.txt"))


def network_attachments(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [o for o in objects(values) if o["kind"] == "NetworkAttachmentDefinition"]


def conflist(nad: dict[str, Any]) -> dict[str, Any]:
    return json.loads(nad["spec"]["config"])


def lint(values: dict[str, Any] | None = None) -> dict[str, Any]:
    """`helm lint --strict`: {"messages": [{"severity", "path", "error"}], "errors": [...]}."""
    return helm.lint(CHART, values, strict=True)


def lint_problems(report: dict[str, Any]) -> list[str]:
    """What makes `helm lint --strict` fail: errors, and messages of warning severity or worse
    (severity 1 is informational, e.g. "icon is recommended")."""
    return list(report.get("errors") or []) + [
        f"{m['path']}: {m['error']}" for m in report.get("messages") or [] if m["severity"] >= 2
    ]
