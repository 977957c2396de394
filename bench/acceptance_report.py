#!/usr/bin/env python3
"""Renders an OUT_DIR of bench/gpu_acceptance.sh as Markdown: every target of issues 5 (CUDA)
and 6 (Vulkan) next to what this run measured, and the checks of the CLI against the CPU.

Usage: bench/acceptance_report.py OUT_DIR > report.md

Exits 1 (after printing the report) when a step failed, a test failed, or a device's CLI results
disagree with the CPU's (greedy text, perplexity beyond 0.1%); unmet speed targets are reported,
not failures. Every ratio compares numbers from the same run. GEMV "bandwidth ratio" is the issue's: the EXL3
kernel's GB/s counting trellis bytes over cuBLAS fp16 GEMV's GB/s on the same shape (CUDA), and
for Vulkan its time-normalised bandwidth against the CUDA kernel's (the same bytes, so the time
ratio CUDA µs / Vulkan µs). Missing inputs (a backend without a device, a step not run) are
reported as such, never as met. Needs numpy only for the logits comparison.
"""
import json
import os
import struct
import sys
import xml.etree.ElementTree as ET

LARGE = ("4096x14336", "14336x4096", "8192x28672")
PROBLEMS = []  # what makes the exit status 1
CODEBOOKS = ("3inst", "mcg", "mul1")


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def verdict(ok):
    return "**met**" if ok else "**not met**"


def fmt(x, digits=1):
    return "—" if x is None else f"{x:,.{digits}f}"


def section_env(out):
    print("## Run\n")
    try:
        with open(os.path.join(out, "env.txt")) as f:
            for line in f:
                print(f"- {line.strip()}")
    except OSError:
        print("- env.txt missing")
    devices = load_json(os.path.join(out, "devices.json")) or []
    for d in devices:
        mem = d.get("memory_bytes", 0) / 2**30
        print(f"- `{d['device']}`: {d['name']} ({d.get('kind', '?')}), {mem:.0f} GiB, subgroup {d.get('subgroup_size', 0)}, "
              f"features: {', '.join(d.get('features', []))}")
    failed = []
    for name in sorted(os.listdir(out)):
        if name.startswith("steps") and name.endswith(".txt"):
            with open(os.path.join(out, name)) as f:
                failed += [line.split()[0] for line in f if line.split() and line.split()[-1] != "0"]
    print(f"- steps that failed: {', '.join(failed) if failed else 'none'}\n")
    PROBLEMS.extend(f"step {name} failed" for name in failed)


def section_tests(out):
    print("## Tests\n")
    print("| filter | tests | failures | errors | skipped |")
    print("|---|---|---|---|---|")
    for b in ("Cuda", "Vulkan", "filtered"):
        path = os.path.join(out, f"tests_{b}.xml")
        try:
            root = ET.parse(path).getroot()
        except (OSError, ET.ParseError):
            if b != "filtered":
                print(f"| `*{b}*` | not run | | | |")
            continue
        skipped = sum(1 for tc in root.iter("testcase") if tc.find("skipped") is not None)
        name = f"`*{b}*`"
        if b == "filtered":  # TRELLIS_TESTS_FILTER, which gpu_acceptance.sh writes beside the XML
            try:
                with open(os.path.join(out, "tests_filtered.filter")) as f:
                    name = f"`{f.read().strip()}`"
            except OSError:
                name = "`$TRELLIS_TESTS_FILTER`"
        if int(root.get("failures", 0)) or int(root.get("errors", 0)):
            PROBLEMS.append(f"{name} tests: {root.get('failures')} failures, {root.get('errors')} errors")
        print(f"| {name} | {root.get('tests')} | {root.get('failures')} | {root.get('errors')} | {skipped} |")
    print()


def read_logits(path):
    import numpy as np
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    begin, end = header["logits"]["data_offsets"]
    return np.frombuffer(blob[8 + n + begin:8 + n + end], dtype=np.float32)


def logits_compare(cli):
    """Relative RMS of each device's logits against the CPU's; cached in logits_compare.json."""
    cache = os.path.join(cli, "logits_compare.json")
    ref = os.path.join(cli, "cpu.logits.safetensors")
    if not os.path.exists(ref):
        return load_json(cache) or {}
    import numpy as np
    c = read_logits(ref).astype(np.float64)
    result = {}
    for name in sorted(os.listdir(cli)):
        if name.endswith(".logits.safetensors") and not name.startswith("cpu."):
            g = read_logits(os.path.join(cli, name)).astype(np.float64)
            dev = name.split(".")[0]
            result[dev] = None if g.shape != c.shape else float(np.sqrt(((g - c) ** 2).sum() / (c ** 2).sum()))
    with open(cache, "w") as f:
        json.dump(result, f)
    return result


def section_cli(out):
    cli = os.path.join(out, "cli")
    if not os.path.isdir(cli):
        return
    print("## CLI on each device (tiny-llama exl3-q3_mcg, against the CPU backend)\n")
    # Chunk counts as run (the quick mode runs fewer).
    ppl_run = load_json(os.path.join(cli, "cpu.ppl.json")) or {}
    kld_run = load_json(os.path.join(cli, "cpu.kld.json")) or {}
    print(f"Greedy `trellis run` text; `trellis ppl` over {ppl_run.get('chunks', 16)} × {ppl_run.get('ctx', 512)} "
          f"tokens (issue 5: within 0.1% of the CPU's); `trellis kld` against the fp16 model over "
          f"{kld_run.get('chunks', 8)} × {kld_run.get('ctx', 512)}; `trellis logits` of 128 tokens.\n")
    print("| device | run text = CPU's | ppl | ppl vs CPU | kld | top-1 | logits rel. RMS vs CPU |")
    print("|---|---|---|---|---|---|---|")

    def text(dev):
        try:
            with open(os.path.join(cli, f"{dev}.run.txt")) as f:
                return f.read()
        except OSError:
            return None

    cpu_text = text("cpu")
    cpu_ppl = (load_json(os.path.join(cli, "cpu.ppl.json")) or {}).get("ppl")
    logits = logits_compare(cli)
    for dev in ("cpu", "auto", "cuda", "vulkan"):
        t = text(dev)
        if t is None:
            continue
        same = "yes" if t == cpu_text and t else "**no**"
        label = dev
        if dev == "auto":
            try:
                with open(os.path.join(cli, "auto.run.log")) as f:
                    chosen = [line[8:].strip() for line in f if line.startswith("device: ")]
            except OSError:
                chosen = []
            if chosen:
                label = f"auto = {chosen[0]}"
        ppl = (load_json(os.path.join(cli, f"{dev}.ppl.json")) or {}).get("ppl")
        kld = load_json(os.path.join(cli, f"{dev}.kld.json")) or {}
        rel = None if ppl is None or not cpu_ppl else abs(ppl - cpu_ppl) / cpu_ppl
        rel_s = "—" if rel is None else f"{rel * 100:.5f}%" + ("" if rel <= 1e-3 else " **over 0.1%**")
        if t != cpu_text or not t:
            PROBLEMS.append(f"{dev}: greedy text differs from the CPU's")
        if dev not in ("cpu", "auto") and (rel is None or rel > 1e-3):
            PROBLEMS.append(f"{dev}: perplexity {'missing' if rel is None else f'{rel:.2%} off the CPU'}")
        lg = logits.get(dev)
        print(f"| {label} | {same} | {fmt(ppl, 4)} | {rel_s if dev != 'cpu' else '(reference)'} | "
              f"{fmt(kld.get('kld'), 5)} | {fmt(kld.get('top1_agreement'), 4)} | "
              f"{'—' if lg is None else f'{lg:.2e}'} |")
    print()


def gemv_results(out, backend):
    data = load_json(os.path.join(out, f"gemv_{backend}.json"))
    if not data:
        return None, {}
    return data, {(r["shape"], r["K"], r["codebook"]): r for r in data["results"]}


def section_gemv(out):
    cdata, cuda = gemv_results(out, "cuda")
    vdata, vk = gemv_results(out, "vulkan")
    print("## EXL3 GEMV, m = 1\n")
    if not cuda and not vk:
        print("Not run.\n")
        return
    keys = sorted(set(cuda) | set(vk), key=lambda k: (k[0] not in LARGE, k[0], k[2], k[1]))
    print("CUDA: `trellis_bench_cuda_exl3` (graph replays, weights rotated past L2, median); Vulkan: "
          "`trellis_bench_vulkan_exl3` (timestamps). Bandwidth ratio (issue 5) = trellis GB/s / cuBLAS fp16 GB/s; "
          "Vulkan/CUDA (issue 6) = CUDA µs / Vulkan µs. Targets ≥ 0.85 for K = 2..8 on "
          f"{', '.join(LARGE)}.\n")
    print("| k×n | codebook | K | CUDA µs | cuBLAS fp16 µs | bandwidth ratio | Vulkan µs | Vulkan dense fp16 µs | Vulkan/CUDA |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key in keys:
        c, v = cuda.get(key), vk.get(key)
        vc = c["gemv_us"] / v["gemv_us"] if c and v else None
        print(f"| {key[0]} | {key[2]} | {key[1]} | {fmt(c and c['gemv_us'])} | {fmt(c and c['cublas_us'])} | "
              f"{fmt(c and c['ratio_gemv'], 2)} | {fmt(v and v['gemv_us'])} | {fmt(v and v['dense_f16_us'])} | "
              f"{fmt(vc, 2)} |")
    print()
    for name, ratios in (("issue 5, CUDA bandwidth ratio", [cuda[k]["ratio_gemv"] for k in cuda
                                                             if k[0] in LARGE and 2 <= k[1] <= 8]),
                         ("issue 6, Vulkan/CUDA", [cuda[k]["gemv_us"] / vk[k]["gemv_us"] for k in cuda
                                                  if k in vk and k[0] in LARGE and 2 <= k[1] <= 8])):
        if ratios:
            met = sum(1 for r in ratios if r >= 0.85)
            print(f"- {name}: {min(ratios):.2f}–{max(ratios):.2f} over {len(ratios)} variants on the large shapes; "
                  f"≥ 0.85 in {met}: {verdict(met == len(ratios))}")
        else:
            print(f"- {name}: not measured on the large shapes")
    print()


def model(out, name, backend, prompt):
    return load_json(os.path.join(out, "models", f"{name}_{backend}_p{prompt}.json"))


def section_models(out):
    mdir = os.path.join(out, "models")
    if not os.path.isdir(mdir):
        return
    print("## Models: prefill and decode tok/s\n")
    print("`trellis_bench_model --prompt P --gen G --reps R` (median): prefill of P tokens, then decode from "
          "context P. l8bK: Llama-3.1-8B-shaped, every linear EXL3 MCG at K bits, head 6 bits; smol3: "
          "SmolLM2-135M-shaped at 3 bits.\n")
    runs = {}
    for name in sorted(os.listdir(mdir)):
        if name.endswith(".json"):
            m, b, p = name[:-5].rsplit("_", 2)
            runs.setdefault((m, int(p[1:])), {})[b] = load_json(os.path.join(mdir, name))
    backends = [b for b in ("cuda", "vulkan", "cpu") if any(b in r for r in runs.values())]
    head = "| model | prompt / context |"
    for b in backends:
        head += f" {b} prefill | {b} decode |"
    if "cuda" in backends and "vulkan" in backends:
        head += " Vulkan/CUDA prefill | Vulkan/CUDA decode |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for (m, p), r in sorted(runs.items()):
        line = f"| {m} | {p} |"
        for b in backends:
            d = r.get(b) or {}
            line += f" {fmt(d.get('prefill_tok_s'), 0)} | {fmt(d.get('decode_tok_s'))} |"
        if "cuda" in backends and "vulkan" in backends:
            c, v = r.get("cuda") or {}, r.get("vulkan") or {}
            for key in ("prefill_tok_s", "decode_tok_s"):
                ok = c.get(key) and v.get(key)
                line += f" {fmt(v[key] / c[key], 2) if ok else '—'} |"
        print(line)
    print()
    c256, v256 = model(out, "l8b3", "cuda", 256), model(out, "l8b3", "vulkan", 256)
    c2k, v2k = model(out, "l8b3", "cuda", 2048), model(out, "l8b3", "vulkan", 2048)
    print("Targets, l8b3:\n")
    if c256:
        print(f"- issue 5, decode at context 256 ≥ 800 tok/s: {c256['decode_tok_s']:.1f}: "
              f"{verdict(c256['decode_tok_s'] >= 800)}")
    if c2k:
        print(f"- issue 5, prefill of 2048 tokens ≥ 30,000 tok/s: {c2k['prefill_tok_s']:,.0f}: "
              f"{verdict(c2k['prefill_tok_s'] >= 30000)}")
    if c256 and v256:
        r = v256["decode_tok_s"] / c256["decode_tok_s"]
        print(f"- issue 6, Vulkan decode at context 256 ≥ 0.85× CUDA's: {r:.2f}×: {verdict(r >= 0.85)}")
    if c2k and v2k:
        r = v2k["prefill_tok_s"] / c2k["prefill_tok_s"]
        print(f"- issue 6, Vulkan prefill of 2048 tokens ≥ 0.6× CUDA's: {r:.2f}×: {verdict(r >= 0.6)}")
    if not (c256 or v256):
        print("- not measured (no l8b3 runs)")
    print()


def section_memory(out):
    rows = []
    for b in ("cuda", "vulkan"):
        d = load_json(os.path.join(out, f"memory_{b}.peak.json"))
        if d:
            rows.append((b, d))
    if not rows:
        return
    print("## GPU memory, l8b3 with an 8K context (2,048-token prefill, 64 decoded)\n")
    print("Peak of `nvidia-smi` memory.used sampled every 0.2 s, minus the idle reading before the run "
          "(CUDA context and all buffers included). Issue 5 target: under 6 GB (CUDA).\n")
    print("| backend | peak MiB | idle MiB | used MiB | GB |")
    print("|---|---|---|---|---|")
    for b, d in rows:
        used = d["peak_mib"] - d["idle_mib"]
        print(f"| {b} | {d['peak_mib']} | {d['idle_mib']} | {used} | {used * 2**20 / 1e9:.2f} |")
    cuda = dict(rows).get("cuda")
    if cuda:
        used = (cuda["peak_mib"] - cuda["idle_mib"]) * 2**20 / 1e9
        print(f"\n- issue 5, under 6 GB: {used:.2f} GB: {verdict(used < 6)}")
    print()


def median(values):
    v = sorted(x for x in values if x is not None)
    if not v:
        return None
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


def section_ab(out):
    adir = os.path.join(out, "ab")
    if not os.path.isdir(adir):
        return
    runs = {}  # switch -> value -> kind -> [data]
    for name in sorted(os.listdir(adir)):
        if not name.endswith(".json"):
            continue
        kind, rest = name[:-5].split("_", 1)
        switch, value, _ = rest.rsplit("_", 2)
        data = load_json(os.path.join(adir, name))
        if data is not None:
            runs.setdefault(switch, {}).setdefault(value, {}).setdefault(kind, []).append(data)
    if not runs:
        return
    print("## A/B of switches not yet measured on a GPU\n")
    rounds = max((len(g.get("model", [])) for v in runs.values() for g in v.values()), default=0)
    print(f"Each switch at 0 and at 1, alternating, {rounds} rounds, in this run; medians over the rounds. "
          "Speed-up = time at 0 / time at 1 (above 1: the switch helps).\n")
    for switch, by_value in sorted(runs.items()):
        off, on = by_value.get("0", {}), by_value.get("1", {})
        print(f"### `{switch}`\n")
        if switch.startswith("BUILD_"):  # @DIR: another build's binaries as "0"
            print(f"Two builds, not a switch: \"0\" is the build {switch[6:]}, \"1\" this run's binaries.\n")
        elif "=" in switch:  # a knob: VAR=a-b ran VAR=a as "0" and VAR=b as "1"
            var, pair = switch.split("=", 1)
            a, b = pair.split("-", 1)
            print(f"A knob, not a switch: \"0\" is {var}={a}, \"1\" is {var}={b}.\n")
        times = {}
        for value, group in (("0", off), ("1", on)):
            for data in group.get("gemv", []):
                for r in data.get("results", []):
                    t = times.setdefault((r["shape"], r["K"], r["codebook"]), {})
                    t.setdefault(("gemv", value), []).append(r["gemv_us"])
                    t.setdefault(("forward", value), []).append(r.get("forward_us"))
        if times:
            print("GEMV = the product kernel alone; forward = with the input and output transforms (what a model runs).\n")
            print("| k×n | codebook | K | GEMV µs at 0 | at 1 | speed-up | forward µs at 0 | at 1 | speed-up |")
            print("|---|---|---|---|---|---|---|---|---|")
            ups = {"gemv": [], "forward": []}
            for key in sorted(times, key=lambda k: (k[0], k[2], k[1])):
                line = f"| {key[0]} | {key[2]} | {key[1]} |"
                for kind in ("gemv", "forward"):
                    a, b = median(times[key].get((kind, "0"), [])), median(times[key].get((kind, "1"), []))
                    up = a / b if a and b else None
                    if up:
                        ups[kind].append(up)
                    line += f" {fmt(a, 2)} | {fmt(b, 2)} | {fmt(up, 3)} |"
                print(line)
            print()
            for kind, values in ups.items():
                if values:
                    print(f"- {kind} speed-up {min(values):.3f}–{max(values):.3f} (median {median(values):.3f}) "
                          f"over {len(values)} variants")
        dec = {v: median([d.get("decode_tok_s") for d in g.get("model", [])]) for v, g in (("0", off), ("1", on))}
        pre = {v: median([d.get("prefill_tok_s") for d in g.get("model", [])]) for v, g in (("0", off), ("1", on))}
        if dec["0"] and dec["1"]:
            print(f"- model decode: {dec['0']:.1f} tok/s at 0, {dec['1']:.1f} at 1 ({dec['1'] / dec['0']:.3f}×); "
                  f"prefill {fmt(pre['0'], 0)} / {fmt(pre['1'], 0)}")
        print()


def main():
    if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
        sys.exit(__doc__)
    out = sys.argv[1]
    print("# GPU acceptance run (bench/gpu_acceptance.sh)\n")
    section_env(out)
    section_tests(out)
    section_cli(out)
    section_gemv(out)
    section_models(out)
    section_memory(out)
    section_ab(out)
    if PROBLEMS:
        print("## Problems\n")
        for p in PROBLEMS:
            print(f"- {p}")
        print()
        sys.exit(1)


if __name__ == "__main__":
    main()
