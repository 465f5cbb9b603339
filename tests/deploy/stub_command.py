#!/usr/bin/env python3
"""A recording stand-in for docker, kind, kubectl and helm, for testing scripts/cluster-up.sh
and cluster-down.sh where no Docker engine or cluster exists.

Installed as a small shell script under each tool's name, which runs
`python3 stub_command.py TOOL ARG...` with absolute paths (the PATH under test may hold no
python3). Every call
is appended to STUB_LOG as one JSON line, [tool, arg...]. What it answers comes from STUB_SPEC,
a JSON file: {tool: [rule, ...]}, the first rule whose "args" is a prefix of the call's
arguments (and whose "contains", if any, are all among them) wins, and the call without a
matching rule succeeds silently. A rule may give
"stdout", "stderr", "exit" (0), "repeat" (print stdout that many times, to fill a pipe), and
"iidfile" (what `docker build --iidfile FILE` writes to FILE).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main() -> int:
    tool, args = sys.argv[1], sys.argv[2:]
    with open(os.environ["STUB_LOG"], "a") as log:
        log.write(json.dumps([tool, *args]) + "\n")
    spec = json.loads(Path(os.environ["STUB_SPEC"]).read_text())
    for rule in spec.get(tool, []):
        if args[: len(rule["args"])] == rule["args"] and all(a in args for a in rule.get("contains", [])):
            break
    else:
        return 0
    if "iidfile" in rule:
        Path(args[args.index("--iidfile") + 1]).write_text(rule["iidfile"])
    sys.stderr.write(rule.get("stderr", ""))
    try:
        for _ in range(rule.get("repeat", 1)):
            sys.stdout.write(rule.get("stdout", ""))
        sys.stdout.flush()
    except BrokenPipeError:
        # As a real tool dies of SIGPIPE when its reader has gone.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return rule.get("exit", 0)


if __name__ == "__main__":
    sys.exit(main())
