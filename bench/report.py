#!/usr/bin/env python3
"""Markdown tables from bench/results/latest.json (for docs/benchmarks.md).

usage: python3 bench/report.py [RUN.json ...]   (default: bench/results/latest.json)

With several runs (files written by bench_batch_norm --out), every (case, impl) keeps
its fastest median over the runs, the same rule for every impl, and GB/s and roof_frac
are recomputed from those: on a shared VM a memory-bound case moves by up to 1.7x
between runs, and the best of a few runs is the closest to what the machine can do.

Prints: the per-op geometric means (ratio to the fastest peer, fraction of the
roofline), a table per thread count with every case, and the cases that miss a target
of issue 5 (2 threads).
"""
import json
import math
import sys
from collections import defaultdict

PEERS = ("libtorch", "onednn", "onednn_nhwc4d")
OPS = ("fwd_train", "fwd_infer", "bwd_train", "bwd_infer", "fwd_train_relu", "bwd_train_relu")
MAIN = ("32x64x56x56", "256x256x14x14", "8x32x112x112", "32x16x8x8", "1024x512", "64x1024", "4096x64")
SMALL_BYTES = 2 * 1024 * 1024


def numel(shape):
    n = 1
    for d in shape.split("x"):
        n *= int(d)
    return n


def geomean(v):
    return math.exp(sum(math.log(x) for x in v) / len(v)) if v else float("nan")


def roof_of(op, layout):
    """The roofline impl of a case (roof_of in bench_batch_norm.cpp)."""
    if op == "fwd_infer":
        return "copy"
    return "copy" if layout == "nchw" else "sweep2"


def merged_cases(paths):
    """(op, shape, layout, threads) -> impl -> record, each the fastest over the runs."""
    cases = defaultdict(dict)
    for path in paths:
        for r in json.load(open(path))["records"]:
            m = cases[(r["op"], r["shape"], r["layout"], r["threads"])]
            if r["impl"] not in m or r["median_us"] < m[r["impl"]]["median_us"]:
                m[r["impl"]] = dict(r)
    if len(paths) > 1:
        for (op, shape, layout, _), m in cases.items():
            streams = 2 if op.startswith("fwd") else 3
            roof = m.get(roof_of(op, layout))
            for r in m.values():
                r["gbps"] = 4.0 * numel(shape) * streams / (r["median_us"] * 1e3)
                r["roof_frac"] = roof["median_us"] / r["median_us"] if roof else float("nan")
    return cases


def main():
    paths = sys.argv[1:] or ["bench/results/latest.json"]
    cases = merged_cases(paths)
    threads = sorted({k[3] for k in cases})

    def best_peer(m):
        peers = [(m[p]["median_us"], p) for p in PEERS if p in m]
        return min(peers) if peers else (None, None)

    print("### Geometric means per op\n")
    print("ratio = fastest peer time / bnorm time (> 1: bnorm faster); roof = roofline time / bnorm time.\n")
    print("| op | threads | cases | ratio (all) | ratio (main set) | min ratio | roof (all) | roof (main set) |")
    print("|---|---|---|---|---|---|---|---|")
    for op in OPS:
        for t in threads:
            ratios, main_ratios, roofs, main_roofs = [], [], [], []
            for (o, shape, layout, tt), m in cases.items():
                if o != op or tt != t or "bnorm" not in m:
                    continue
                bp, _ = best_peer(m)
                if bp:
                    ratios.append(bp / m["bnorm"]["median_us"])
                    if shape in MAIN:
                        main_ratios.append(bp / m["bnorm"]["median_us"])
                roofs.append(m["bnorm"]["roof_frac"])
                if shape in MAIN:
                    main_roofs.append(m["bnorm"]["roof_frac"])
            if not roofs:
                continue
            print(f"| {op} | {t} | {len(roofs)} | {geomean(ratios):.2f} | {geomean(main_ratios):.2f} | "
                  f"{min(ratios):.2f} | {geomean(roofs):.2f} | {geomean(main_roofs):.2f} |")

    for t in threads:
        print(f"\n### Every case, {t} thread{'s' if t > 1 else ''}\n")
        print("median microseconds (GB/s by the byte model); peer = the fastest of libtorch / oneDNN; "
              "ratio = peer / bnorm; roof = roofline / bnorm.\n")
        print("| op | shape | layout | bnorm | peer | ratio | roof | reference | copy | sweep2 |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        order = {s: i for i, s in enumerate(MAIN)}
        keys = sorted((k for k in cases if k[3] == t),
                      key=lambda k: (OPS.index(k[0]), order.get(k[1], 100), -numel(k[1]), k[1], k[2]))
        for k in keys:
            m = cases[k]
            b = m["bnorm"]
            bp, who = best_peer(m)

            def cell(impl):
                return f"{m[impl]['median_us']:.0f} ({m[impl]['gbps']:.1f})" if impl in m else "-"
            peer = f"{bp:.0f} {who}" if bp else "-"
            ratio = f"{bp / b['median_us']:.2f}" if bp else "-"
            print(f"| {k[0]} | {k[1]} | {k[2]} | {cell('bnorm')} | {peer} | {ratio} | {b['roof_frac']:.2f} | "
                  f"{cell('reference')} | {cell('copy')} | {cell('sweep2')} |")

    # Targets (issue 5; stated for 2 threads), per thread count.
    for t in threads:
        print_misses(cases, t, best_peer)


def print_misses(cases, t, best_peer):
    print(f"\n### Cases missing a target ({t} thread{'s' if t > 1 else ''})\n")
    misses = []
    for (op, shape, layout, tt), m in sorted(cases.items()):
        if tt != t or "bnorm" not in m:
            continue
        b = m["bnorm"]
        bp, who = best_peer(m)
        small = numel(shape) * 4 < SMALL_BYTES
        if bp and b["median_us"] > bp:
            misses.append((op, shape, layout, f"slower than {who}: {b['median_us']:.0f} vs {bp:.0f} us"))
        if small and bp and bp / b["median_us"] < 2.0:
            misses.append((op, shape, layout, f"small tensor, only {bp / b['median_us']:.2f}x the fastest peer"))
        if not small:
            if op in ("fwd_train", "fwd_train_relu"):
                goal = 0.75 if layout == "nchw" else 0.85
            elif op == "fwd_infer":
                goal = 0.90
            else:
                goal = 0.70 if layout == "nchw" else 0.85
            if b["roof_frac"] < goal:
                misses.append((op, shape, layout, f"{b['roof_frac']:.2f} of the roofline (target {goal:.2f})"))
    print("| op | shape | layout | miss |")
    print("|---|---|---|---|")
    for op, shape, layout, why in misses:
        print(f"| {op} | {shape} | {layout} | {why} |")
    print(f"\n{len(misses)} misses.")


if __name__ == "__main__":
    main()
