#!/usr/bin/env python3
"""A stand-in for kubectl, for testing scripts/validate.sh's cluster mode without a cluster.

It answers the calls validate.sh makes from a JSON file (FAKE_KUBECTL_STATE): the objects a
cluster would return, and which network namespace plays which pod (the checked pod, any
"other_pods", each installer pod: its "netns" and "state_dir", by default the checked pod's
node's). `exec` runs the command for real in that pod's namespace (krafty-installer in an
installer pod: the real binary, on its node's namespace and a state directory of the test's), so
every node- and pod-side check looks at real devices. Calls
that change something (apply, delete) are appended to the state file's "log" for the test to
inspect. Anything else exits 1 with "fake kubectl: unsupported", which the test sees as a
failure.
"""

from __future__ import annotations

import json
import os
import sys

import yaml


def main(argv: list[str]) -> int:
    state_path = os.environ["FAKE_KUBECTL_STATE"]
    with open(state_path) as f:
        state = json.load(f)

    def log(entry: dict) -> None:
        state["log"].append(entry)
        with open(state_path, "w") as f:
            json.dump(state, f)

    def emit(obj) -> int:
        print(json.dumps(obj))
        return 0

    context = namespace = None
    args: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--context":
            context, i = argv[i + 1], i + 2
        elif argv[i] == "-n":
            namespace, i = argv[i + 1], i + 2
        else:
            args.append(argv[i])
            i += 1
    if context != state["context"]:
        print(f"fake kubectl: unknown context {context}", file=sys.stderr)
        return 1

    match args:
        case ["version", *_]:
            return 0
        case ["get", "deployment", name, "-o", "json"] if (namespace, name) == tuple(state["deployment_key"]):
            return emit(state["deployment"])
        case ["get", "pods", "-l", selector, "-o", "json"] if (
            namespace == state["pod"]["metadata"]["namespace"]
        ):
            assert selector == "app.kubernetes.io/name=nettools", selector
            return emit({"items": [state["pod"], *[p["object"] for p in state.get("other_pods", [])]]})
        case ["get", "network-attachment-definitions", name, "-o", "json"] if (
            f"{namespace}/{name}" in state["nads"]
        ):
            return emit(state["nads"][f"{namespace}/{name}"])
        case ["get", "pods", "-A", "-l", _, "--field-selector", selector, "-o", "json"]:
            node = selector.removeprefix("spec.nodeName=")
            return emit({"items": [p for p in state["installer_pods"] if p["spec"]["nodeName"] == node]})
        case ["get", "pods", "-A", "-l", _, "-o", "json"]:
            return emit({"items": state["installer_pods"]})
        case ["get", "node", name, "-o", "json"] if name in state["nodes"]:
            return emit(state["nodes"][name])
        case ["get", "nodes", "-o", "json"]:
            return emit({"items": list(state["nodes"].values())})
        case ["apply", "-f", "-"]:
            log({"apply": yaml.safe_load(sys.stdin.read()), "namespace": namespace})
            return 0
        case ["wait", "--for=condition=Ready", pod, _]:
            return (
                0
                if any(
                    e.get("apply", {}).get("metadata", {}).get("name") == pod.removeprefix("pod/")
                    for e in state["log"]
                )
                else 1
            )
        case ["delete", "pod", name, *_]:
            log({"delete": name, "namespace": namespace})
            return 0
        case ["exec", pod, *rest]:
            if rest[:1] == ["-c"]:
                rest = rest[2:]
            assert rest[0] == "--", rest
            command = rest[1:]
            others = {p["object"]["metadata"]["name"]: p["netns"] for p in state.get("other_pods", [])}
            installers = {p["metadata"]["name"]: p for p in state["installer_pods"]}
            if pod == state["pod"]["metadata"]["name"]:
                netns = state["pod_netns"]
            elif pod in others:
                netns = others[pod]
            elif pod in installers:
                # The installer's image holds krafty-installer; it reads its node's records.
                netns = installers[pod].get("netns", state["node_netns"])
                state_dir = installers[pod].get("state_dir", state["state_dir"])
                assert command[0] == "krafty-installer", command
                command = [state["installer_binary"], "--state-dir", state_dir, *command[1:]]
            elif pod.startswith("krafty-validate-"):
                netns = state["node_netns"]
                # The probe pod mounts the node's /var/log/krafty.
                command = [state["log_file"] if c == "/var/log/krafty/krafty.log" else c for c in command]
            else:
                print(f"fake kubectl: no pod {pod}", file=sys.stderr)
                return 1
            os.execvp("ip", ["ip", "netns", "exec", netns, *command])
    print(f"fake kubectl: unsupported: {argv}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
