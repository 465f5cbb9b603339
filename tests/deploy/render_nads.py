#!/usr/bin/env python3
"""Writes the CNI conflist of every NetworkAttachmentDefinition the chart renders to a file, so
that tests can run exactly the configuration the chart ships through libcni.

    python3 tests/deploy/render_nads.py OUTDIR [--values FILE]...

Values files combine as with `helm install -f`; without any, the chart's defaults. Each NAD
becomes OUTDIR/<namespace>_<name>.conflist holding its spec.config verbatim (.conf for a single
plugin's config, `plugin: krafty`, as runtimes tell them apart); the paths are printed one per
line. Exits 1 if the chart does not render (schema or template error, message
on stderr) or renders no NetworkAttachmentDefinition.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import helm_python as helm

import chartlib


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--values", action="append", type=Path, default=[], help="a values file")
    args = parser.parse_args()
    try:
        nads = chartlib.network_attachments(chartlib.values_from_files(args.values))
    except helm.HelmError as error:
        print(f"render_nads: the chart does not render: {error}", file=sys.stderr)
        return 1
    if not nads:
        print("render_nads: the chart renders no NetworkAttachmentDefinition", file=sys.stderr)
        return 1
    args.outdir.mkdir(parents=True, exist_ok=True)
    for nad in nads:
        meta = nad["metadata"]
        extension = "conflist" if "plugins" in chartlib.conflist(nad) else "conf"
        path = args.outdir / f"{meta['namespace']}_{meta['name']}.{extension}"
        path.write_text(nad["spec"]["config"])
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
