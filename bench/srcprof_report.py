#!/usr/bin/env python3
"""Summarises Nsight Compute source counters (gpu_acceptance.sh's srcprof step).

Usage: bench/srcprof_report.py SASS_CSV [TOP]

SASS_CSV is `ncu -i REPORT --page source --csv --print-source sass` of one or more kernel launches.
For each launch: its warp-state samples by stall reason, and the TOP instructions (default 12)
that collected the most samples, with the reason that dominates each: where the warps waited.
"""
import csv
import sys


def num(x):
    try:
        return float(x.replace(",", ""))
    except ValueError:
        return 0.0


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    top_n = int(sys.argv[2]) if len(sys.argv) > 2 else 12
    launches, cur, hdr = [], None, None
    with open(sys.argv[1], newline="") as f:
        for r in csv.reader(f):
            if r and r[0] == "Kernel Name":
                cur = {"name": r[1], "rows": []}
                launches.append(cur)
                hdr = None
            elif r and r[0] == "Address":
                hdr = r
                cur["hdr"] = r
            elif cur is not None and hdr and len(r) == len(hdr):
                cur["rows"].append(dict(zip(hdr, r)))
    seen = set()
    for i, launch in enumerate(launches):
        rows = launch["rows"]
        key = (launch["name"], tuple(r["Warp Stall Sampling (All Samples)"] for r in rows[:200]))
        if key in seen:  # ncu prints some launches twice
            continue
        seen.add(key)
        total = sum(num(r["Warp Stall Sampling (All Samples)"]) for r in rows)
        if total <= 0:
            continue
        stalls = [h for h in launch["hdr"] if h.startswith("stall_") and "Not Issued" not in h]
        agg = sorted(((sum(num(r[s]) for r in rows), s[6:]) for s in stalls), reverse=True)
        print(f"### launch {len(seen)}: {launch['name'][:100]}\n")
        print(f"{total:.0f} warp samples; by reason: " +
              ", ".join(f"{name} {v / total * 100:.1f}%" for v, name in agg[:8]) + "\n")
        print("| address | share | main reason | instruction |\n|---|---|---|---|")
        for r in sorted(rows, key=lambda r: -num(r["Warp Stall Sampling (All Samples)"]))[:top_n]:
            s = num(r["Warp Stall Sampling (All Samples)"])
            main_reason = max(stalls, key=lambda k: num(r[k]))[6:]
            src = " ".join(r["Source"].split()).replace("|", "\\|")
            print(f"| {r['Address'][-5:]} | {s / total * 100:.1f}% | {main_reason} | `{src[:60]}` |")
        print()


if __name__ == "__main__":
    main()
