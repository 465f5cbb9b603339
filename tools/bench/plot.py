#!/usr/bin/env python3
"""Draws docs/benchmarks-latency.svg from the raw samples of krafty-bench (scripts/bench.sh).

One panel per kernel, scope and verb: the cumulative distribution of the latency of the krafty
chain, the reference chain and the ip -batch floor, so that medians (where a curve crosses 0.5)
and tails (how far right it ends) can be read off without the tables. A last row shows ADD and
DEL of one more pod on a network with 1, 100 and 500 attachments.
"""
import argparse
import json

import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt  # noqa: E402 (the backend must be chosen first)

COLOURS = {"krafty": "tab:blue", "reference": "tab:orange", "floor": "tab:gray"}


def ecdf(axis, samples_us, label, colour, style="-"):
    values = sorted(s / 1000.0 for s in samples_us)
    if not values:
        return
    fractions = [(i + 1) / len(values) for i in range(len(values))]
    axis.step(values, fractions, where="post", label=label, color=colour, linestyle=style)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--vm")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    kernels = [("this kernel", json.load(open(args.host)))]
    if args.vm:
        kernels.append(("VM (emulated)", json.load(open(args.vm))))
    rows = [(label, results, scope) for label, results in kernels for scope in ("pod", "network")]
    scale = kernels[0][1].get("scale")
    figure, axes = plt.subplots(
        len(rows) + (1 if scale else 0), 2, figsize=(11, 3.1 * (len(rows) + 1)), squeeze=False
    )
    for row, (label, results, scope) in enumerate(rows):
        for column, verb in enumerate(("add", "del")):
            axis = axes[row][column]
            for variant, colour in COLOURS.items():
                ecdf(axis, results["compare"][scope][variant][f"{verb}_us"], variant, colour)
            axis.set_title(f"{label}, {scope} scope: {verb.upper()}")
            axis.set_xscale("log")
            axis.set_xlabel("latency (ms, log scale)")
            axis.set_ylabel("fraction of operations")
            axis.axhline(0.5, color="lightgray", linewidth=0.8)
            axis.grid(True, which="both", alpha=0.3)
            axis.legend(loc="lower right")
    if scale:
        for column, verb in enumerate(("add", "del")):
            axis = axes[len(rows)][column]
            for level, style in zip(scale, ("-", "--", ":")):
                ecdf(axis, level["series"][f"{verb}_us"], f"{level['existing']} existing",
                     COLOURS["krafty"], style)
            axis.set_title(f"this kernel, network scope: krafty {verb.upper()} by attachments")
            axis.set_xscale("log")
            axis.set_xlabel("latency (ms, log scale)")
            axis.set_ylabel("fraction of operations")
            axis.grid(True, which="both", alpha=0.3)
            axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(args.out, metadata={"Date": None})


if __name__ == "__main__":
    main()
