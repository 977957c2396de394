#!/usr/bin/env python3
"""Reference ids and texts from Hugging Face `tokenizers`, for the C++ tokenizer tests.

Usage: tokenizer_reference.py TOKENIZER_JSON JOBS_JSON

JOBS_JSON is a list of jobs; each reads one input file and writes one output file:
  {"op": "encode", "input": PATH, "output": PATH, "cases": BOOL,
   "add_special": BOOL, "parse_special": BOOL}
      Text in, int32 little-endian ids out. Input bytes are decoded as UTF-8 with
      errors="replace". With "cases", the input holds several texts separated by lines that are
      exactly "@@@" (the newline before each separator belongs to the separator), and the output
      is, per text, a uint32 count followed by that many int32 ids. Without it the whole file is
      one text and the output is the bare ids. parse_special false sets
      encode_special_tokens = True (special tokens in the text are encoded as plain text).
  {"op": "decode", "input": PATH, "output": PATH, "cases": BOOL, "skip_special": BOOL}
      Ids in (bare int32, or count-prefixed per case), UTF-8 text out: bare, or per case a
      uint32 byte length followed by the bytes.

Whole-file encodes run together through encode_batch_fast (parallel across files). Results are
cached under $TRELLIS_TOKENIZER_CACHE (default: .cache/tokenizer_reference beside scripts/),
keyed by the tokenizers version, the tokenizer file, the job and the input bytes, so repeated
test runs do not pay for the reference again.
"""
import hashlib
import json
import os
import shutil
import struct
import sys

import tokenizers

SEPARATOR = b"\n@@@\n"


def split_cases(data: bytes):
    # Cases are separated by "\n@@@\n"; a trailing separator or newline ends the last case.
    if data.endswith(b"\n@@@\n"):
        data = data[: -len(SEPARATOR)]
    elif data.endswith(b"\n@@@"):
        data = data[: -len(b"\n@@@")]
    return data.split(SEPARATOR)


def read_ids(data: bytes, cases: bool):
    if not cases:
        return [list(struct.unpack(f"<{len(data) // 4}i", data))]
    out, pos = [], 0
    while pos < len(data):
        (n,) = struct.unpack_from("<I", data, pos)
        pos += 4
        out.append(list(struct.unpack_from(f"<{n}i", data, pos)))
        pos += 4 * n
    return out


def pack_ids(ids):
    return struct.pack(f"<{len(ids)}i", *ids)


def cache_dir():
    env = os.environ.get("TRELLIS_TOKENIZER_CACHE")
    if env:
        return env
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache",
                        "tokenizer_reference")


def job_key(tok_hash, job, input_bytes):
    h = hashlib.sha256()
    h.update(tokenizers.__version__.encode())
    h.update(tok_hash)
    settings = {k: v for k, v in sorted(job.items()) if k not in ("input", "output")}
    h.update(json.dumps(settings, sort_keys=True).encode())
    h.update(hashlib.sha256(input_bytes).digest())
    return h.hexdigest()


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    tok_path, jobs_path = sys.argv[1], sys.argv[2]
    with open(tok_path, "rb") as f:
        tok_hash = hashlib.sha256(f.read()).digest()
    with open(jobs_path, encoding="utf-8") as f:
        jobs = json.load(f)
    cdir = cache_dir()
    os.makedirs(cdir, exist_ok=True)

    tokenizer = None

    def get_tokenizer():
        nonlocal tokenizer
        if tokenizer is None:
            tokenizer = tokenizers.Tokenizer.from_file(tok_path)
        return tokenizer

    def finish(job, key, payload):
        tmp = os.path.join(cdir, f"{key}.tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(payload)
        os.replace(tmp, os.path.join(cdir, key))
        shutil.copyfile(os.path.join(cdir, key), job["output"])

    batch = {}  # (add_special, parse_special) -> [(job, key, text)]
    for job in jobs:
        with open(job["input"], "rb") as f:
            data = f.read()
        key = job_key(tok_hash, job, data)
        cached = os.path.join(cdir, key)
        if os.path.exists(cached):
            shutil.copyfile(cached, job["output"])
            continue
        cases = job.get("cases", False)
        if job["op"] == "encode":
            add_special = job.get("add_special", False)
            parse_special = job.get("parse_special", True)
            if not cases:
                batch.setdefault((add_special, parse_special), []).append(
                    (job, key, data.decode("utf-8", errors="replace")))
                continue
            tok = get_tokenizer()
            tok.encode_special_tokens = not parse_special
            out = bytearray()
            for text in split_cases(data):
                ids = tok.encode(text.decode("utf-8", errors="replace"), add_special_tokens=add_special).ids
                out += struct.pack("<I", len(ids)) + pack_ids(ids)
            finish(job, key, bytes(out))
        elif job["op"] == "decode":
            tok = get_tokenizer()
            skip = job.get("skip_special", False)
            texts = [tok.decode(ids, skip_special_tokens=skip).encode("utf-8")
                     for ids in read_ids(data, cases)]
            if cases:
                payload = b"".join(struct.pack("<I", len(t)) + t for t in texts)
            else:
                payload = texts[0]
            finish(job, key, payload)
        else:
            sys.exit(f"unknown op {job['op']!r}")

    for (add_special, parse_special), items in batch.items():
        tok = get_tokenizer()
        tok.encode_special_tokens = not parse_special
        encodings = tok.encode_batch_fast([text for _, _, text in items], add_special_tokens=add_special)
        for (job, key, _), enc in zip(items, encodings):
            finish(job, key, pack_ids(enc.ids))


if __name__ == "__main__":
    main()
