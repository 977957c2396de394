#!/usr/bin/env python3
"""Writes a model directory with random weights, for speed benchmarks only (its output is noise).

Dense (--bits 16): every weight fp16. EXL3 (--bits 1..8): every decoder linear is an EXL3 layer of
that K with random trellis bits (every bit string is a valid trellis, spec 2.9), small random
suh/svh, padded to multiples of 128 as ExLlamaV3 pads (spec 2.4; padded outputs get svh = 0);
the head is EXL3 at --head-bits or fp16 (16). Norms are 1, embeddings small random fp16.

Needs only numpy. The architecture comes from --config (a Hugging Face config.json) or a preset:
  llama3-8b     Llama-3.1-8B shapes (32 layers, 4096, 14336, GQA 32/8, vocab 128256)
  smollm2-135m  SmolLM2-135M shapes (30 layers, 576, 1536, GQA 9/3, vocab 49152, tied)

Usage: make_random_model.py --preset llama3-8b --bits 3 --out /tmp/l8b-3bpw
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np

PRESETS = {
    "llama3-8b": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
        "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256, "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0, "max_position_embeddings": 131072, "tie_word_embeddings": False,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        "bos_token_id": 128000, "eos_token_id": 128001, "torch_dtype": "float16",
    },
    "smollm2-135m": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
        "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
        "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152, "rms_norm_eps": 1e-5,
        "rope_theta": 100000.0, "max_position_embeddings": 8192, "tie_word_embeddings": True,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float16",
    },
}
MCG = -877912083    # 0xCBAC1FED as int32 (spec 2.3)
MUL1 = -2082680531  # 0x83DCD12D as int32


def pad128(x):
    return (x + 127) // 128 * 128


class Writer:
    """Streams one safetensors file: header first (sizes known up front), then tensor data."""

    def __init__(self, path, entries):
        self.path, self.tmp = path, path + ".tmp"
        header, offset = {}, 0
        for name, dtype, shape in entries:
            size = int(np.prod(shape, dtype=np.int64)) * {"F16": 2, "I16": 2, "I32": 4}[dtype]
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
            offset += size
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        self.f = open(self.tmp, "wb")
        self.f.write(struct.pack("<Q", len(blob)) + blob)

    def write(self, array):
        self.f.write(np.ascontiguousarray(array).tobytes())

    def close(self):
        self.f.close()
        os.replace(self.tmp, self.path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS))
    ap.add_argument("--config", help="a Hugging Face config.json instead of a preset")
    ap.add_argument("--bits", type=int, required=True, help="K = 1..8 for EXL3, 16 for fp16")
    ap.add_argument("--head-bits", type=int, help="head K = 1..8, or 16 for fp16 (default: 6 for EXL3, 16 for fp16)")
    ap.add_argument("--codebook", choices=["mcg", "mul1", "3inst"], default="mcg")
    ap.add_argument("--layers", type=int, help="override num_hidden_layers")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if a.head_bits is None:
        a.head_bits = 16 if a.bits == 16 else 6
    if (a.preset is None) == (a.config is None):
        sys.exit("make_random_model: give exactly one of --preset or --config")
    if not (1 <= a.bits <= 8 or a.bits == 16) or not (1 <= a.head_bits <= 8 or a.head_bits == 16):
        sys.exit("make_random_model: --bits and --head-bits must be 1..8 or 16")
    if os.path.exists(a.out):
        sys.exit(f"make_random_model: {a.out} exists")
    cfg = dict(PRESETS[a.preset]) if a.preset else json.load(open(a.config))
    if a.layers:
        cfg["num_hidden_layers"] = a.layers
    h, inter, nl = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    nh, nkv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    hd = cfg.get("head_dim", h // nh)
    vocab, tied = cfg["vocab_size"], cfg.get("tie_word_embeddings", False)
    rng = np.random.default_rng(a.seed)

    linears = []  # (key, in, out, K or 16)
    for i in range(nl):
        p = f"model.layers.{i}."
        for name, fin, fout in (("self_attn.q_proj", h, nh * hd), ("self_attn.k_proj", h, nkv * hd),
                                ("self_attn.v_proj", h, nkv * hd), ("self_attn.o_proj", nh * hd, h),
                                ("mlp.gate_proj", h, inter), ("mlp.up_proj", h, inter), ("mlp.down_proj", inter, h)):
            linears.append((p + name, fin, fout, a.bits))
    if a.head_bits != 16 or not tied:
        linears.append(("lm_head", h, vocab, a.head_bits))

    entries = [("model.embed_tokens.weight", "F16", (vocab, h)), ("model.norm.weight", "F16", (h,))]
    for i in range(nl):
        entries += [(f"model.layers.{i}.input_layernorm.weight", "F16", (h,)),
                    (f"model.layers.{i}.post_attention_layernorm.weight", "F16", (h,))]
    for key, fin, fout, k in linears:
        if k == 16:
            entries.append((key + ".weight", "F16", (fout, fin)))
            continue
        kp, np_ = pad128(fin), pad128(fout)
        entries += [(key + ".trellis", "I16", (kp // 16, np_ // 16, 16 * k)), (key + ".suh", "F16", (kp,)),
                    (key + ".svh", "F16", (np_,))]
        if a.codebook != "3inst":
            entries.append((key + "." + a.codebook, "I32", ()))
    entries.sort(key=lambda e: e[0])
    shapes = {name: (dt, shape) for name, dt, shape in entries}
    lin = {key: (fin, fout, k) for key, fin, fout, k in linears}

    tmp_dir = a.out + ".partial"
    os.makedirs(tmp_dir)
    w = Writer(os.path.join(tmp_dir, "model.safetensors"), entries)
    for name, dt, shape in entries:
        if name.endswith("norm.weight"):
            w.write(np.ones(shape, np.float16))
        elif name.endswith(".trellis"):
            n = int(np.prod(shape))
            w.write(rng.integers(0, 1 << 16, size=n, dtype=np.uint16))
        elif name.endswith(".suh") or name.endswith(".svh"):
            key = name.rsplit(".", 1)[0]
            fin, fout, _ = lin[key]
            real = fin if name.endswith(".suh") else fout
            scale = 1.0 / math.sqrt(max(fin, 1)) if name.endswith(".suh") else 0.5
            v = (rng.choice([-1.0, 1.0], size=shape[0]) * scale).astype(np.float16)
            if name.endswith(".svh"):
                v[real:] = 0
            w.write(v)
        elif name.endswith(".mcg"):
            w.write(np.array(MCG, np.int32))
        elif name.endswith(".mul1"):
            w.write(np.array(MUL1, np.int32))
        else:  # embeddings and dense weights
            rows = shape[0]
            for r0 in range(0, rows, 4096):
                r1 = min(rows, r0 + 4096)
                w.write((rng.standard_normal((r1 - r0,) + tuple(shape[1:]), dtype=np.float32) * 0.02).astype(np.float16))
    w.close()
    if a.bits != 16 or a.head_bits != 16:
        cfg["quantization_config"] = {"quant_method": "exl3", "version": "1.4.1", "bits": float(a.bits if a.bits != 16 else a.head_bits),
                                      "head_bits": a.head_bits, "calibration": {"rows": 0, "cols": 0},
                                      "out_scales": "always", "codebook": a.codebook}
        json.dump(cfg["quantization_config"], open(os.path.join(tmp_dir, "quantization_config.json"), "w"), indent=2)
    json.dump(cfg, open(os.path.join(tmp_dir, "config.json"), "w"), indent=2)
    os.rename(tmp_dir, a.out)
    print(f"wrote {a.out}: {nl} layers, {'fp16' if a.bits == 16 else f'K={a.bits} {a.codebook}'}, head {a.head_bits}")


if __name__ == "__main__":
    main()
