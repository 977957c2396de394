#!/usr/bin/env python3
"""Summarises the per-block records of a -DTRELLIS_CUDA_GEMV_TIMELINE build (cuda_exl3_gemv.cu).

Usage: bench/gemv_timeline.py RECORDS [STDERR_LOG]

RECORDS is the file TRELLIS_GEMV_TIMELINE_OUT named: one line per block,
"slot block smid last t0 t1 clk0 .. clk5" (t0, t1: %globaltimer ns at the block's entry and exit;
clk: SM clocks since entry after pdl_begin, the input transform, the first slab's data, the loop,
the split count, the merge). STDERR_LOG, the run's stderr, holds the "gemv timeline slot" lines that
say which launch each slot is. Prints one Markdown table per launch: when its blocks started and
ended, and the median and maximum time of each phase, in microseconds.
"""
import re
import statistics
import sys

PHASES = ["start → pdl_begin", "input transform", "first slab's data", "rest of the loop", "partials + count",
          "merge (last blocks)"]


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p * (len(v) - 1) + 0.5))]


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    recs = {}
    with open(sys.argv[1]) as f:
        for line in f:
            p = line.split()
            if len(p) != 12:
                continue
            slot, block, smid, last, t0, t1 = (int(x) for x in p[:6])
            recs.setdefault(slot, []).append((block, smid, last, t0, t1, [int(x) for x in p[6:]]))
    desc = {}
    if len(sys.argv) > 2:
        with open(sys.argv[2], errors="replace") as f:
            for line in f:
                m = re.match(r"gemv timeline slot (\d+): (.*)", line.strip())
                if m:
                    desc[int(m.group(1))] = m.group(2)
    prev_end = None
    for slot in sorted(recs):
        rs = recs[slot]
        t_start = min(r[3] for r in rs)
        t_end = max(r[4] for r in rs)
        # SM clocks per ns, from the blocks' own span (entry to exit).
        ghz = statistics.median(r[5][5] / (r[4] - r[3]) for r in rs if r[4] > r[3])
        print(f"### slot {slot}: {desc.get(slot, '')}\n")
        gap = "" if prev_end is None else f", {(t_start - prev_end) / 1000:+.2f} µs after the previous launch's last block"
        print(f"{len(rs)} blocks on {len({r[1] for r in rs})} SMs, {(t_end - t_start) / 1000:.2f} µs from the first "
              f"block's entry to the last block's exit{gap}; SM clock {ghz:.2f} GHz (median)\n")
        starts = [(r[3] - t_start) / 1000 for r in rs]
        ends = [(r[4] - t_start) / 1000 for r in rs if not r[2]]
        lasts = [(r[4] - t_start) / 1000 for r in rs if r[2]]
        print("| | min | median | p90 | max |\n|---|---|---|---|---|")
        print("| block entry, µs after the first | " + " | ".join(f"{pct(starts, q):.2f}" for q in (0, .5, .9, 1)) + " |")
        if ends:
            print("| exit of blocks that do not merge | " + " | ".join(f"{pct(ends, q):.2f}" for q in (0, .5, .9, 1)) + " |")
        if lasts:
            print("| exit of the merging blocks | " + " | ".join(f"{pct(lasts, q):.2f}" for q in (0, .5, .9, 1)) + " |")
        print()
        print("| phase | median µs | p90 µs | max µs |\n|---|---|---|---|")
        for i, name in enumerate(PHASES):
            sel = [r for r in rs if r[2]] if i == 5 else rs
            d = [(r[5][i] - (r[5][i - 1] if i else 0)) / ghz / 1000 for r in sel]
            if d:
                print(f"| {name} | {statistics.median(d):.2f} | {pct(d, .9):.2f} | {max(d):.2f} |")
        print()
        prev_end = t_end


if __name__ == "__main__":
    main()
