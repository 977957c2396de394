#!/usr/bin/env python3
"""Regenerates the committed seed corpora in fuzz/corpus/ (small valid and near-valid inputs).

Usage: python3 fuzz/make_corpus.py [SHARED_DIR]   (default: ../shared next to the checkout)
Seeds from the tiny-llama fixtures are included when SHARED_DIR has them. Standard library only.
"""
import json
import os
import shutil
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus")


def st(header, data=b"", pad=None):
    """safetensors image: 8-byte LE length, header text as given (optionally space-padded), data."""
    text = header if isinstance(header, str) else json.dumps(header, separators=(",", ":"))
    raw = text.encode("utf-8", "surrogatepass")
    if pad:
        raw += b" " * ((-(8 + len(raw))) % pad)
    return struct.pack("<Q", len(raw)) + raw + data


def put(target, name, blob):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(blob if isinstance(blob, bytes) else blob.encode())


def safetensors_seeds(shared):
    t = "fuzz_safetensors"
    put(t, "empty_object", st("{}"))
    put(t, "metadata_only", st({"__metadata__": {"format": "pt"}}))
    three = {
        "__metadata__": {"format": "pt"},
        "a": {"dtype": "F16", "shape": [2, 2], "data_offsets": [0, 8]},
        "b": {"dtype": "I32", "shape": [], "data_offsets": [8, 12]},
        "c": {"dtype": "U8", "shape": [3], "data_offsets": [12, 15]},
    }
    put(t, "three_unaligned", st(three, bytes(range(15))))
    put(t, "three_padded", st(three, bytes(range(15)), pad=8))
    dtypes = ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2",
              "F8_E8M0", "U16", "U32", "U64"]
    sizes = [8, 4, 2, 2, 8, 4, 2, 1, 1, 1, 1, 1, 1, 2, 4, 8]
    h, off = {}, 0
    for tag, size in zip(dtypes, sizes):
        h["x" + tag] = {"dtype": tag, "shape": [2], "data_offsets": [off, off + 2 * size]}
        off += 2 * size
    put(t, "every_dtype", st(h, bytes(off)))
    exl3 = {
        "l.trellis": {"dtype": "I16", "shape": [1, 1, 48], "data_offsets": [0, 96]},
        "l.suh": {"dtype": "F16", "shape": [16], "data_offsets": [96, 128]},
        "l.svh": {"dtype": "F16", "shape": [16], "data_offsets": [128, 160]},
        "l.mcg": {"dtype": "I32", "shape": [], "data_offsets": [160, 164]},
    }
    put(t, "exl3_layer", st(exl3, bytes(96) + b"\x00\x3c" * 32 + struct.pack("<i", -877912083)))
    put(t, "empty_tensors", st({"e": {"dtype": "F32", "shape": [4, 0], "data_offsets": [0, 0]},
                                "s": {"dtype": "I32", "shape": [], "data_offsets": [0, 4]}}, bytes(4)))
    # Near-valid: each breaks exactly one rule.
    put(t, "bad_overlap", st({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                              "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}}, bytes(6)))
    put(t, "bad_duplicate", st('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
                               '"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', bytes(2)))
    put(t, "bad_dtype", st({"a": {"dtype": "F17", "shape": [1], "data_offsets": [0, 2]}}, bytes(2)))
    put(t, "bad_size", st({"a": {"dtype": "F16", "shape": [3], "data_offsets": [0, 8]}}, bytes(8)))
    put(t, "bad_range", st({"a": {"dtype": "F16", "shape": [4], "data_offsets": [4, 12]}}, bytes(8)))
    put(t, "bad_overflow", st('{"a":{"dtype":"F16","shape":[4294967296,4294967296],"data_offsets":[0,8]}}', bytes(8)))
    put(t, "bad_negative", st('{"a":{"dtype":"F16","shape":[-4],"data_offsets":[0,8]}}', bytes(8)))
    put(t, "bad_float_dim", st('{"a":{"dtype":"F16","shape":[4.0],"data_offsets":[0,8]}}', bytes(8)))
    put(t, "bad_metadata", st('{"__metadata__":{"format":1}}'))
    put(t, "bad_json", st('{"a":{"dtype":"F16",'))
    put(t, "bad_length", struct.pack("<Q", 1 << 40) + b"{}")
    fixture = os.path.join(shared, "fixtures/tiny-llama/exl3-q3_mcg/model.safetensors")
    if os.path.exists(fixture):
        with open(fixture, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = f.read(n)
            data = f.read(64)
        # The real header with the start of the data: truncated, every tensor past the end but
        # the first few.
        put(t, "fixture_q3_mcg_truncated", struct.pack("<Q", n) + header + data)
        put(t, "fixture_q3_mcg_header_cut", struct.pack("<Q", n) + header[: n // 2])


def index_seeds():
    t = "fuzz_safetensors_index"
    put(t, "valid", json.dumps({"metadata": {"total_size": 1234},
                                "weight_map": {"a.weight": "model-00001-of-00002.safetensors",
                                               "b.weight": "model-00002-of-00002.safetensors",
                                               "c.weight": "model-00001-of-00002.safetensors"}}, indent=2))
    put(t, "no_metadata", '{"weight_map":{"x":"model.safetensors"}}')
    put(t, "null_metadata", '{"metadata":null,"weight_map":{"x":"m.safetensors"}}')
    put(t, "bad_traversal", '{"weight_map":{"x":"../m.safetensors"}}')
    put(t, "bad_duplicate", '{"weight_map":{"x":"a.safetensors","x":"b.safetensors"}}')
    put(t, "bad_types", '{"metadata":{"total_size":"1"},"weight_map":{"x":1}}')
    put(t, "bad_empty", '{"weight_map":{}}')
    put(t, "bad_json", '{"weight_map":{"x":')


def config_seeds(shared):
    t = "fuzz_config"
    for name in ["hf", "exl3-q3_mcg", "exl3-q25_mul1", "exl3-q6_mul1_h16"]:
        p = os.path.join(shared, "fixtures/tiny-llama", name, "config.json")
        if os.path.exists(p):
            shutil.copyfile(p, os.path.join(OUT, t, "fixture_" + name.replace("-", "_") + ".json"))
    base = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
            "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072,
            "rms_norm_eps": 1e-5, "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
            "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    put(t, "llama3_rope_scaling", json.dumps(dict(base, rope_theta=500000.0, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192})))
    put(t, "yarn_rope_parameters", json.dumps(dict(base, rope_parameters={
        "rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0, "beta_fast": 32, "beta_slow": 1,
        "attention_factor": 1.0, "mscale": 1.0, "mscale_all_dim": 0.0})))
    put(t, "linear_legacy_type", json.dumps(dict(base, rope_scaling={"type": "linear", "factor": 2.0})))
    put(t, "exl3_old_quant", json.dumps(dict(base, quantization_config={"quant_method": "exl3", "bits": 4.0})))
    put(t, "foreign_quant", json.dumps(dict(base, quantization_config={"quant_method": "fp8", "bits": "x"})))
    put(t, "minimal", '{"model_type":"llama","hidden_size":8,"num_hidden_layers":1,'
                      '"num_attention_heads":2,"vocab_size":4}')
    put(t, "bad_missing", '{"architectures":["LlamaForCausalLM"],"hidden_size":8}')
    put(t, "bad_types", json.dumps(dict(base, hidden_size="4096", eos_token_id=[1, "x"])))
    put(t, "bad_heads", json.dumps(dict(base, num_key_value_heads=5)))
    put(t, "bad_llama3", json.dumps(dict(base, rope_scaling={"rope_type": "llama3", "factor": 8.0})))
    put(t, "bad_duplicate", '{"hidden_size":8,"hidden_size":9}')


def main():
    shared = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(ROOT), "shared")
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(os.path.join(OUT, "fuzz_config"), exist_ok=True)
    safetensors_seeds(shared)
    index_seeds()
    config_seeds(shared)
    for d in sorted(os.listdir(OUT)):
        print(d, len(os.listdir(os.path.join(OUT, d))), "files")


if __name__ == "__main__":
    main()
