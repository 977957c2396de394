#!/usr/bin/env python3
"""Static instruction budget of the CUDA EXL3 GEMV: the inner loop of each gemv_kernel variant in
a build's SASS, counted by opcode and by pipe, per decoded weight, and the decode rate that
instruction issue alone allows on a given GPU.

Usage: bench/sass_loop_stats.py BINARY_OR_CUBIN [--kernel SUBSTRING ...] [--arch sm_90]
                                [--sms 132] [--clock-ghz 1.98] [--model-weights 7.5e9] [--json]

BINARY_OR_CUBIN is anything `cuobjdump -sass` reads (build/bin/trellis, a .o, a .cubin); the
build must contain SASS for --arch (configure with -DCMAKE_CUDA_ARCHITECTURES=90 for sm_90).
cuobjdump comes with the CUDA toolkit (or `pip download --no-deps nvidia-cuda-cuobjdump`).

The loop of a kernel is its smallest backward branch whose body holds an HMMA: in gemv_kernel
that is one iteration over a k-slab of 8 tiles, in which each lane decodes 64 weights
(cuda_exl3_gemv.cu). Each SASS instruction is issued once per warp (32 lanes), so the issue
cost per weight is loop instructions / 64 / 32 warp-issues, and an SM with 4 schedulers, each
issuing one warp instruction per clock, decodes at most 4 * 32 * 64 / loop weights per clock.
"ALU pipe" counts the integer/logic ops that Hopper runs at half rate on its ALU pipe (LOP3,
SHF, PRMT, ISETP, IADD3, ...): a loop with more than half of its instructions there is bound by
that pipe rather than by issue. These are upper bounds on speed from the instruction stream
alone: stalls (memory, shared-memory and MMA latency) come on top, and ncu measures those
(bench/gpu_acceptance.sh --only profile).
"""
import argparse
import collections
import json
import re
import shutil
import subprocess
import sys

ALU = {"LOP3", "LOP", "SHF", "PRMT", "ISETP", "IADD3", "SEL", "LEA", "ISCADD", "IMNMX", "VIMNMX", "BMSK",
       "SGXT", "FLO", "POPC", "BREV", "MOV", "PLOP3", "P2R", "R2P", "FSEL", "FSETP", "IABS", "FMNMX"}
FMA = {"IMAD", "FFMA", "FADD", "FMUL", "HADD2", "HFMA2", "HMUL2", "IDP", "IDP4A", "IMUL"}
MEM = {"LDS", "STS", "LDG", "STG", "LDGSTS", "LDSM", "LD", "ST", "ATOMG", "RED", "LDGDEPBAR", "DEPBAR"}
WEIGHTS_PER_ITER = 64  # per lane: 8 tiles x 8 weights


def demangle(names):
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt:
        return names
    r = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True, check=False)
    out = r.stdout.splitlines()
    return out if len(out) == len(names) else names


def short(name):
    m = re.search(r"(\w+_kernel<[^>]*>)", name)
    return m.group(1) if m else name


def loops(path, arch):
    cuobjdump = shutil.which("cuobjdump")
    if not cuobjdump:
        sys.exit("sass_loop_stats.py: cuobjdump not on PATH (CUDA toolkit, or pip nvidia-cuda-cuobjdump)")
    r = subprocess.run([cuobjdump, "-sass", "-arch", arch, path], capture_output=True, text=True, check=False)
    if r.returncode != 0 or "Function :" not in r.stdout:
        sys.exit(f"sass_loop_stats.py: no {arch} SASS in {path}: {r.stderr.strip()[:300]}")
    parts = re.split(r"\n\s*Function : ", r.stdout)[1:]
    names = demangle([p.split("\n", 1)[0].strip() for p in parts])
    for name, body in zip(names, parts):
        ins = []
        for line in body.split("\n"):
            m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", line)
            if m:
                ins.append((int(m.group(1), 16), m.group(2)))
        best = None
        for addr, text in ins:
            m = re.search(r"\bBRA\b.*?0x([0-9a-f]+)", text)
            if not m or int(m.group(1), 16) >= addr:
                continue
            loop = [t for a, t in ins if int(m.group(1), 16) <= a <= addr]
            if any("HMMA" in t for t in loop) and (best is None or len(loop) < len(best)):
                best = loop
        yield name, best


def opcode(text):
    text = re.sub(r"^@!?U?P[T\d]+\s+", "", text)
    return text.split()[0].split(".")[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary")
    ap.add_argument("--kernel", nargs="*", default=["gemv_kernel"], help="substrings the demangled name must hold")
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--sms", type=int, default=132, help="multiprocessors (H100 SXM / H200: 132)")
    ap.add_argument("--clock-ghz", type=float, default=1.98, help="SM clock (H100 SXM / H200 boost: 1.98)")
    ap.add_argument("--model-weights", type=float, default=7.5e9,
                    help="weights read per decoded token (Llama-3.1-8B: ~7.5e9 with the head)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    rows = []
    for name, loop in loops(a.binary, a.arch):
        if not all(k in name for k in a.kernel) or loop is None:
            continue
        c = collections.Counter(opcode(t) for t in loop)
        n = len(loop)
        alu = sum(v for k, v in c.items() if k in ALU)
        fma = sum(v for k, v in c.items() if k in FMA)
        mem = sum(v for k, v in c.items() if k in MEM)
        # Issue: 1 warp instruction per scheduler per clock; ALU pipe: 1 per 2 clocks.
        cycles = max(n, 2 * alu)
        weights_per_sm_clock = 4 * 32 * WEIGHTS_PER_ITER / cycles
        per_s = weights_per_sm_clock * a.sms * a.clock_ghz * 1e9
        rows.append({
            "kernel": short(name), "instructions": n, "per_weight": n / WEIGHTS_PER_ITER, "alu": alu, "fma": fma,
            "mem": mem, "hmma": c.get("HMMA", 0), "bound": "ALU pipe" if 2 * alu > n else "issue",
            "weights_per_sm_clock": weights_per_sm_clock, "gemv_ms_per_token": a.model_weights / per_s * 1e3,
            "mix": dict(c.most_common()),
        })
    if not rows:
        sys.exit("sass_loop_stats.py: no matching kernel with an HMMA loop")
    if a.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{a.arch}, {a.sms} SMs at {a.clock_ghz} GHz; {a.model_weights:.3g} weights per token; "
          "loop = one k-slab, 64 weights per lane\n")
    print("| kernel <K, CB, Mode, Fuse, MinBlocks> | loop instr | per weight | ALU pipe | FMA pipe | LSU | HMMA | "
          "bound | weights/SM/clock at full issue | GEMV ms per token at full issue |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['kernel']}` | {r['instructions']} | {r['per_weight']:.2f} | {r['alu']} | {r['fma']} | {r['mem']} | "
              f"{r['hmma']} | {r['bound']} | {r['weights_per_sm_clock']:.1f} | {r['gemv_ms_per_token']:.2f} |")


if __name__ == "__main__":
    main()
