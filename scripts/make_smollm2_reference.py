#!/usr/bin/env python3
"""Make tests/data/smollm2/reference.safetensors: transformers' logits and greedy tokens for SmolLM2.

Loads the demo model (SmolLM2-135M-Instruct as converted by scripts/demo_model.py, see
scripts/fetch_demo_model.sh) with Hugging Face transformers in **fp32** (the checkpoint is fp16;
every weight is upcast exactly and all arithmetic runs in fp32, which gives the cleanest reference
a C++ engine can be compared with). For each of four fixed prompts it stores

  p{i}.input_ids  int32 [1, n]      the prompt, tokenized with the model directory's tokenizer.json
                                    (the `tokenizers` library; no BOS is added: SmolLM2's
                                    tokenizer.json has no post-processor)
  p{i}.logits     fp16  [1, n, V]   logits of every prompt position from ONE full forward pass over
                                    the prompt (no KV cache), computed in fp32, rounded to fp16
                                    only to keep the file small (V = 49152)
  p{i}.greedy     int32 [1, 32]     model.generate(do_sample=False, max_new_tokens=32) with
                                    eos_token_id=None, so end-of-sequence does not stop it and
                                    exactly 32 tokens come out (tokens after an <|im_end|>/eos are
                                    still the plain argmax continuation); no repetition penalty,
                                    no other logits processors

and in `__metadata__` (strings; lists/dicts are JSON): the prompt texts, versions, dtype, date,
sha256 of the model.safetensors/tokenizer.json used, the generation settings, and for each greedy
step the gap between the top two fp32 logits (small gaps are where a lower-precision engine may
legitimately pick another token).

Prompts: two plain English, one code, one chat rendered with the model's own chat template
(tokenizer.apply_chat_template, add_generation_prompt=True). The rendered chat text is then
tokenized with tokenizer.json like the others (and checked to equal apply_chat_template's own
tokenization).

Deterministic: single-threaded CPU fp32 by default; the only varying field is the date, which
comes from --date, else SOURCE_DATE_EPOCH, else today (UTC). Running it twice on one day gives a
byte-identical file; --check regenerates in memory and compares with the existing file (tensors
bit for bit, metadata except the date).

Usage (venv from `python3 scripts/check_demo_model.py --setup`):
  .cache/venv-ref/bin/python scripts/make_smollm2_reference.py [--model-dir DIR] [--out FILE]
  .cache/venv-ref/bin/python scripts/make_smollm2_reference.py --check
On a GPU host with PyTorch, `--device cuda` also works (TF32 is disabled; results will not be
bit-identical to the CPU file, but agree to fp32 rounding).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_OUT = ROOT / "tests" / "data" / "smollm2" / "reference.safetensors"
NEW_TOKENS = 32
SIZE_LIMIT = 8 * 1024 * 1024

# (kind, text). For "chat", text is the user message; the model's chat template adds its default
# system prompt and the assistant generation prompt.
# Chosen (from a larger candidate set) so that the fp32 greedy path of each has no near-tie: the
# smallest gap between the top two logits over the 32 steps is about 0.05 or more (the gaps are in
# the metadata), so an engine with fp16 activations/KV cache should reproduce all 32 tokens.
PROMPTS = [
    ("plain", "It was a bright cold day in April, and the clocks were striking thirteen."),
    ("plain", "Water boils at a temperature of 100 degrees"),
    ("code", "def is_even(n):\n    return n %"),
    ("chat", "What is the capital of France?"),
]
MIN_TOKENS, MAX_TOKENS = 8, 40


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def serialize(tensors: dict, metadata: dict) -> bytes:
    """safetensors bytes with a deterministic header.

    safetensors' own save() writes `__metadata__` in hash-map order, which changes from process to
    process, so two runs would differ byte-wise. Here the header's keys are sorted and the tensor
    data is laid out int32 tensors first, then fp16 (each sorted by name), so every tensor starts
    at an offset aligned to its element size. The header is padded with spaces to 8 bytes, as
    safetensors does.
    """
    import numpy as np
    names = sorted(tensors, key=lambda k: (-tensors[k].dtype.itemsize, k))
    header, blobs, offset = {"__metadata__": dict(sorted(metadata.items()))}, [], 0
    for k in names:
        a = np.ascontiguousarray(tensors[k])
        dt = {np.dtype(np.int32): "I32", np.dtype(np.float16): "F16"}[a.dtype]
        blob = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[k] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    h = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return len(h).to_bytes(8, "little") + h + b"".join(blobs)


def default_date() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    t = (datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc) if epoch
         else datetime.datetime.now(datetime.timezone.utc))
    return t.date().isoformat()


def build(model_dir: Path, device: str, threads: int, date: str):
    """Returns (tensors, metadata, report lines)."""
    import numpy as np
    import tokenizers
    import torch
    import transformers
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    raw = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    hf_tok = AutoTokenizer.from_pretrained(model_dir)
    # The transformers SDPA and eager attention give the same result up to rounding; pin eager so
    # the reference does not depend on which kernel a given torch build picks.
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                 attn_implementation="eager").to(device).eval()
    V = model.config.vocab_size

    gen_cfg = GenerationConfig(
        do_sample=False, num_beams=1, max_new_tokens=NEW_TOKENS, min_new_tokens=None,
        eos_token_id=None, pad_token_id=model.config.pad_token_id, bos_token_id=None,
        repetition_penalty=1.0, temperature=None, top_p=None, top_k=None)
    # generate() fills every field left None from model.generation_config (which has eos 2), so
    # the model's own generation config must say eos_token_id=None as well.
    model.generation_config = gen_cfg

    tensors, texts, margins, report = {}, [], [], []
    for i, (kind, text) in enumerate(PROMPTS):
        if kind == "chat":
            msgs = [{"role": "user", "content": text}]
            rendered = hf_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            via_template = list(hf_tok.apply_chat_template(msgs, tokenize=True, return_dict=False,
                                                           add_generation_prompt=True))
        else:
            rendered, via_template = text, None
        ids = raw.encode(rendered, add_special_tokens=True).ids
        if via_template is not None and ids != via_template:
            raise SystemExit(f"prompt {i}: tokenizer.json and apply_chat_template disagree")
        if hf_tok(rendered, add_special_tokens=True)["input_ids"] != ids:
            raise SystemExit(f"prompt {i}: tokenizer.json and the transformers tokenizer disagree")
        if not MIN_TOKENS <= len(ids) <= MAX_TOKENS:
            raise SystemExit(f"prompt {i}: {len(ids)} tokens, want {MIN_TOKENS}..{MAX_TOKENS}")

        x = torch.tensor([ids], device=device)
        with torch.no_grad():
            logits = model(x, use_cache=False).logits.float()  # [1, n, V], fp32
            out = model.generate(x, attention_mask=torch.ones_like(x),
                                 generation_config=gen_cfg)
        greedy = out[0, len(ids):].tolist()
        if len(greedy) != NEW_TOKENS:
            raise SystemExit(f"prompt {i}: generate gave {len(greedy)} tokens, want {NEW_TOKENS}")

        # Independent check of generate: a plain argmax loop with full (uncached) forward passes,
        # recording the top-2 gap of each step.
        seq, gaps = list(ids), []
        with torch.no_grad():
            for _ in range(NEW_TOKENS):
                last = model(torch.tensor([seq], device=device), use_cache=False).logits[0, -1]
                top = torch.topk(last.float(), 2)
                gaps.append(round(float(top.values[0] - top.values[1]), 4))
                seq.append(int(top.indices[0]))
        loop = seq[len(ids):]
        lg = logits[0].cpu().numpy()
        tensors[f"p{i}.input_ids"] = np.asarray([ids], dtype=np.int32)
        tensors[f"p{i}.logits"] = lg[None].astype(np.float16)
        tensors[f"p{i}.greedy"] = np.asarray([greedy], dtype=np.int32)
        texts.append({"kind": kind, "text": text, "rendered": rendered, "n_tokens": len(ids)})
        margins.append(gaps)

        # Report: next-token agreement inside the prompt, greedy text.
        am = lg.argmax(-1)
        am16 = tensors[f"p{i}.logits"][0].astype(np.float32).argmax(-1)
        hits = int((am[:-1] == np.asarray(ids[1:])).sum())
        report.append(f"p{i} [{kind}] {len(ids)} tokens: {rendered!r}")
        report.append(f"   argmax(logits[t]) == input[t+1] at {hits}/{len(ids) - 1} positions; "
                      f"fp16 argmax == fp32 argmax at {int((am == am16).sum())}/{len(ids)}; "
                      f"logits range [{lg.min():.2f}, {lg.max():.2f}]")
        report.append(f"   greedy[0] == argmax(logits[-1]): {greedy[0] == int(am[-1])}; "
                      f"generate == uncached argmax loop: {greedy == loop}"
                      + ("" if greedy == loop else f" (first differs at step "
                         f"{next(k for k in range(NEW_TOKENS) if greedy[k] != loop[k])})")
                      + f"; smallest top-2 gap {min(gaps):.4f} at step {gaps.index(min(gaps))}")
        report.append(f"   greedy: {raw.decode(greedy, skip_special_tokens=False)!r}")
        if greedy[0] != int(am[-1]):
            raise SystemExit(f"prompt {i}: first greedy token is not the argmax of the last logits")

    meta = {
        "description": f"{MODEL_NAME} reference logits and greedy continuations "
                       "(trellis scripts/make_smollm2_reference.py)",
        "model": MODEL_NAME,
        "model_safetensors_sha256": sha256_file(model_dir / "model.safetensors"),
        "tokenizer_json_sha256": sha256_file(model_dir / "tokenizer.json"),
        "model_source": (model_dir / "trellis_source.json").read_text().strip()
        if (model_dir / "trellis_source.json").is_file() else "",
        "prompts": json.dumps(texts, ensure_ascii=False),
        "dtype": "float32 (weights upcast from the fp16 checkpoint, fp32 compute, eager attention); "
                 "logits stored rounded to float16",
        "logits": "one forward pass over the whole prompt, no KV cache, every position",
        "tokenization": "tokenizers.Tokenizer.from_file(tokenizer.json).encode(text, "
                        "add_special_tokens=True) (adds nothing for SmolLM2); the chat prompt is "
                        "tokenizer.apply_chat_template(add_generation_prompt=True) rendered to text, "
                        "then encoded the same way",
        "generation": json.dumps({
            "call": "model.generate(do_sample=False, num_beams=1, max_new_tokens=32, "
                    "eos_token_id=None)",
            "new_tokens": NEW_TOKENS,
            "eos_stops": False,
            "note": "eos_token_id=None: generation does not stop at eos/<|im_end|>; exactly 32 "
                    "tokens, each the argmax given all previous ones (no repetition penalty, "
                    "no min_new_tokens, no other processors)",
        }),
        "greedy_top2_gaps": json.dumps(margins),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "tokenizers_version": tokenizers.__version__,
        "numpy_version": np.__version__,
        "device": device if device == "cpu" else f"{device} ({torch.cuda.get_device_name()})",
        "torch_threads": str(threads),
        "date": date,
        "format": "pt",
    }
    return tensors, meta, report


def main() -> int:
    cache = Path(os.environ["TRELLIS_CACHE"]).expanduser() if os.environ.get("TRELLIS_CACHE") \
        else Path.home() / ".cache" / "trellis"
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, default=cache / "models" / MODEL_NAME)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--date", default=None, help="date for the metadata (default: "
                    "SOURCE_DATE_EPOCH, else today UTC)")
    ap.add_argument("--check", action="store_true",
                    help="regenerate in memory and compare with --out instead of writing it")
    args = ap.parse_args()
    try:
        import numpy as np
        from safetensors.numpy import load_file
    except ImportError as e:
        print(f"make_smollm2_reference: {e.name} is missing; run `python3 "
              f"scripts/check_demo_model.py --setup` and use .cache/venv-ref/bin/python",
              file=sys.stderr)
        return 2
    if not (args.model_dir / "model.safetensors").is_file():
        print(f"make_smollm2_reference: no model at {args.model_dir}; run "
              f"scripts/fetch_demo_model.sh first", file=sys.stderr)
        return 2

    tensors, meta, report = build(args.model_dir, args.device, args.threads,
                                  args.date or default_date())
    print("\n".join(report))

    if args.check:
        import safetensors
        with safetensors.safe_open(str(args.out), "np") as f:
            old_meta = f.metadata()
        old = load_file(str(args.out))
        bad = [k for k in sorted(set(old) | set(tensors))
               if k not in old or k not in tensors or old[k].dtype != tensors[k].dtype
               or old[k].shape != tensors[k].shape or old[k].tobytes() != tensors[k].tobytes()]
        bad += [f"__metadata__.{k}" for k in sorted(set(old_meta) | set(meta))
                if k != "date" and old_meta.get(k) != meta.get(k)]
        print(f"check against {args.out}: " + ("identical (except date)" if not bad
                                                 else "DIFFERENT: " + ", ".join(bad)))
        return 1 if bad else 0

    data = serialize(tensors, meta)
    # Round trip through the safetensors library before writing anything.
    import safetensors.numpy
    back = safetensors.numpy.load(data)
    assert sorted(back) == sorted(tensors) and all(
        back[k].dtype == tensors[k].dtype and np.array_equal(back[k], tensors[k]) for k in tensors)
    if len(data) > SIZE_LIMIT:
        print(f"make_smollm2_reference: {len(data)} bytes, over {SIZE_LIMIT}; shorten the prompts",
              file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, args.out)
    print(f"wrote {args.out} ({len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
