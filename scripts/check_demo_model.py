#!/usr/bin/env python3
"""Reference check of the converted demo model with Hugging Face transformers (not in the default flow).

The strongest check that scripts/demo_model.py put q_proj/k_proj back into Hugging Face order: load
the directory with transformers' own LlamaForCausalLM and tokenizer, and see that greedy decoding
gives coherent English (a wrong RoPE row order gives garbage, which the script also shows by
reordering q/k into llama.cpp's order as a control). It also checks that transformers' logits
agree with the numpy forward pass that scripts/test_demo_model.py uses, so that torch-free test is
known to compute the same model.

Needs torch and transformers (several GB: PyPI's torch wheel is the CUDA build, which runs on the
CPU here). Set up once, into .cache/venv-ref:
  python3 scripts/check_demo_model.py --setup
then:
  .cache/venv-ref/bin/python scripts/check_demo_model.py [MODEL_DIR]
Prints the continuations and closes with `N passed, M failed`; exits non-zero on failure.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".cache" / "venv-ref"
REF_PINS = ["torch==2.15.0", "transformers==5.23.0", "safetensors==0.8.0", "numpy==2.4.6"]
MODEL_NAME = "SmolLM2-135M-Instruct"

PLAIN_PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy disposition,",
    "The three primary colors are",
]
CHAT_PROMPTS = [
    ("What is the capital of France?", "Paris"),
    ("How many days are there in a week?", "seven|7"),
    ("What color is the sky on a clear day?", "[Bb]lue"),
]


def setup() -> int:
    if not (VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    return subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "install", "-q",
                           "--disable-pip-version-check", *REF_PINS]).returncode


def main() -> int:
    cache = Path(os.environ["TRELLIS_CACHE"]).expanduser() if os.environ.get("TRELLIS_CACHE") \
        else Path.home() / ".cache" / "trellis"
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", nargs="?", type=Path, default=cache / "models" / MODEL_NAME)
    ap.add_argument("--setup", action="store_true", help=f"create {VENV} with {' '.join(REF_PINS)}")
    ap.add_argument("--tokens", type=int, default=40, help="tokens to generate per prompt")
    args = ap.parse_args()
    if args.setup:
        return setup()
    try:
        import numpy as np
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        print(f"check_demo_model: {e.name} is missing; run `python3 {sys.argv[0]} --setup` and then "
              f"`{VENV}/bin/python {sys.argv[0]}`", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT / "scripts"))
    import re

    import test_demo_model as tdm

    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {args.model_dir}")
    t0 = time.monotonic()
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32).eval()
    print(f"loaded in {time.monotonic() - t0:.1f} s: {type(model).__name__}, "
          f"{type(tok).__name__}, tied={model.lm_head.weight is model.model.embed_tokens.weight}")

    results = []

    def record(name, ok, detail=""):
        results.append(ok)
        print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")

    def greedy(m, ids, n):
        with torch.no_grad():
            out = m.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False,
                             pad_token_id=tok.pad_token_id)
        return tok.decode(out[0, len(ids):], skip_special_tokens=True)

    # The tokenizer as transformers loads it must match `tokenizers` on the raw tokenizer.json.
    from tokenizers import Tokenizer
    raw = Tokenizer.from_file(str(args.model_dir / "tokenizer.json"))
    same = all(tok(t, add_special_tokens=True)["input_ids"] == raw.encode(t).ids
               for t in (tdm.UNICODE_SAMPLE, "Hello world", " 12345"))
    record("transformers tokenizer == tokenizers", same)
    chat = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                   add_generation_prompt=True)
    want = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    record("chat template renders", chat == want, repr(chat) if chat != want else "")

    # Logits: transformers vs the numpy forward of test_demo_model.py.
    from safetensors.numpy import load_file
    import json
    cfg = json.loads((args.model_dir / "config.json").read_text())
    w = load_file(str(args.model_dir / "model.safetensors"))
    ids = tok("It was a bright cold day in April, and the clocks were striking thirteen. "
              "Winston Smith, his chin nuzzled into his breast")["input_ids"]
    with torch.no_grad():
        hf = model(torch.tensor([ids])).logits[0].double().numpy()
    npl = tdm.NumpyLlama(cfg, w).forward(np.array(ids)).astype(np.float64)
    err = float(np.abs(hf - npl).max() / np.abs(hf).max())
    record("numpy forward == transformers", err < 1e-4, f"max relative logit difference {err:.1e}")

    # Perplexity on the same Emma passage as the torch-free test.
    emma = Path(os.environ.get("TRELLIS_SHARED", ROOT.parent / "shared")) / "data/austen/emma.txt"
    if emma.is_file():
        text = emma.read_text(encoding="utf-8", errors="ignore")
        text = text[text.find("Emma Woodhouse, handsome"):][:4000]
        eids = raw.encode(text).ids[:256]
        with torch.no_grad():
            loss = model(torch.tensor([eids]), labels=torch.tensor([eids])).loss.item()
        ppl = float(np.exp(loss))
        record("perplexity on Emma", ppl < 40, f"{ppl:.2f} on {len(eids)} tokens")

    print("\nGreedy continuations (converted model):")
    for p in PLAIN_PROMPTS:
        print(f"  {p!r} -> {greedy(model, tok(p)['input_ids'], args.tokens)!r}")
    answers = {}
    for q, expect in CHAT_PROMPTS:
        ids = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                      tokenize=True, return_dict=False)
        a = greedy(model, list(ids), args.tokens)
        answers[q] = a
        record(f"chat {q!r}", re.search(expect, a) is not None, repr(a))

    # Control: the same weights with q/k rows in llama.cpp's order should derail the model.
    H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    with torch.no_grad():
        for layer in model.model.layers:
            for proj, heads in ((layer.self_attn.q_proj, H), (layer.self_attn.k_proj, Hkv)):
                proj.weight.copy_(torch.from_numpy(
                    tdm.to_llamacpp_row_order(proj.weight.numpy().copy(), heads)))
    print("\nControl, q/k rows in llama.cpp's order (expected to be worse or garbage):")
    for p in PLAIN_PROMPTS[:2]:
        print(f"  {p!r} -> {greedy(model, tok(p)['input_ids'], args.tokens)!r}")
    q = CHAT_PROMPTS[0][0]
    ids = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                  tokenize=True, return_dict=False)
    bad = greedy(model, list(ids), args.tokens)
    print(f"  {q!r} -> {bad!r}")
    if emma.is_file():
        with torch.no_grad():
            bad_ppl = float(np.exp(model(torch.tensor([eids]), labels=torch.tensor([eids])).loss.item()))
        record("control perplexity is clearly worse", bad_ppl > 1.3 * ppl,
               f"{bad_ppl:.2f} vs {ppl:.2f}")

    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
