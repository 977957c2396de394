#!/usr/bin/env python3
"""Per-token GPU time of decode by kernel, from two Nsight Compute runs of trellis_bench_model.

bench/gpu_acceptance.sh's `profile` step runs the same decode twice under
`ncu --metrics gpu__time_duration.sum --csv`, once with G1 and once with G2 decoded tokens and
nothing else different (same prompt, no warm-up, one repetition). Every kernel of the longer run
that the shorter one lacks belongs to the extra G2 - G1 decode steps, so the difference of the two
per-kernel sums, divided by G2 - G1, is the GPU time of one steady-state decode step, with no need
to know where a forward starts in the kernel stream.

Usage: bench/profile_report.py SHORT.csv G1 LONG.csv G2 [--wall-tok-s TOK_S]
  --wall-tok-s  the decode speed measured without the profiler in the same run: the report then
                gives the time per token outside the kernels (launch gaps, host work)

ncu serialises kernels, so "µs per token" is each kernel alone on the GPU: the sum is the time a
perfectly packed stream would take.
"""
import argparse
import collections
import csv
import re
import sys


def short_name(name):
    """`void ns::(anonymous namespace)::gemv_kernel<3, 1, 0, 2, 1>(Args)` -> `gemv_kernel<3, 1, 0, 2, 1>`."""
    name = re.sub(r"^void ", "", name.strip())
    depth, cut = 0, len(name)
    for i, ch in enumerate(name):  # the argument list: the first '(' outside template brackets
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0 and not name.startswith("(anonymous", i):
            cut = i
            break
    name = name[:cut]
    name = re.sub(r"\(anonymous namespace\)::", "", name)
    # Drop namespaces outside template arguments.
    depth, last = 0, 0
    for i, ch in enumerate(name):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == ":" and depth == 0 and i + 1 < len(name) and name[i + 1] == ":":
            last = i + 2
    return name[last:]


def kernel_times(path):
    """{short name: [count, total ns]} of a `ncu --csv --print-units base` log."""
    out = collections.defaultdict(lambda: [0, 0.0])
    with open(path, newline="") as f:
        lines = [l for l in f if l.startswith('"')]  # skip ==PROF== lines and the program's output
    for row in csv.DictReader(lines):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        value = float(row["Metric Value"].replace(",", ""))
        unit = row.get("Metric Unit", "nsecond")
        scale = {"nsecond": 1.0, "usecond": 1e3, "msecond": 1e6, "second": 1e9}.get(unit, 1.0)
        entry = out[short_name(row["Kernel Name"])]
        entry[0] += 1
        entry[1] += value * scale
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("short")
    ap.add_argument("g1", type=int)
    ap.add_argument("long")
    ap.add_argument("g2", type=int)
    ap.add_argument("--wall-tok-s", type=float, default=0.0)
    a = ap.parse_args()
    if a.g2 <= a.g1:
        sys.exit("profile_report.py: G2 must be larger than G1")
    s, l = kernel_times(a.short), kernel_times(a.long)
    if not l:
        sys.exit(f"profile_report.py: no gpu__time_duration rows in {a.long}")
    steps = a.g2 - a.g1
    rows = []
    for name in l:
        count = (l[name][0] - s.get(name, [0, 0.0])[0]) / steps
        ns = (l[name][1] - s.get(name, [0, 0.0])[1]) / steps
        if count > 0:
            rows.append((ns / 1e3, count, name))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    launches = sum(r[1] for r in rows)
    print(f"Decode, GPU time per token by kernel (ncu, kernels serialised; {steps} steady-state steps):\n")
    print("| kernel | launches per token | µs per token | share | µs per launch |")
    print("|---|---|---|---|---|")
    for us, count, name in rows:
        print(f"| `{name}` | {count:g} | {us:.1f} | {100 * us / total:.1f}% | {us / count:.2f} |")
    print(f"| **all kernels** | {launches:g} | **{total:.1f}** | 100% | |")
    if a.wall_tok_s > 0:
        wall = 1e6 / a.wall_tok_s
        print(f"\nMeasured without the profiler: {a.wall_tok_s:.1f} tok/s = {wall:.1f} µs per token; "
              f"kernels {total:.1f} µs ({100 * total / wall:.0f}%), outside them {wall - total:.1f} µs "
              f"({(wall - total) / launches:.2f} µs per launch).")


if __name__ == "__main__":
    main()
