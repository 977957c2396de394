#!/usr/bin/env python3
"""Builds the small tokenizer.json files under tests/data/tokenizers/ with Hugging Face
`tokenizers`, trained on the Austen novels of ../shared/data/austen. They stand in for the
tokenizer families whose real files cannot be shipped or fetched offline, with the same
normalizer / pre-tokenizer / model / decoder / post-processor configuration:

  llama2_style   SentencePiece-style BPE, byte_fallback, Prepend+Replace normalizer, no
                 pre-tokenizer, "a b" merges (Llama 2 / Mistral v0.1 tokenizer.json)
  mistral_style  the same vocabulary with the Metaspace(prepend_scheme=first, split=false)
                 pre-tokenizer of newer conversions (Mistral v0.3)
  metaspace_split the same vocabulary with Metaspace(always, split=true) and a Metaspace decoder
  llama3_style   byte-level BPE with the Llama 3 split regex, ignore_merges, Llama 3 special
                 tokens and a BOS template
  qwen_style     NFC normalizer, the Qwen 2 split regex (single digits), ChatML added tokens
  regex_dialect  Split regexes in Oniguruma's dialect (line anchors, \\w, \\h, (?m))
  features       byte-level BPE exercising the rarer paths: NFKC, Replace/Strip normalizers,
                 every Split behavior, invert, Digits, ByteLevel with add_prefix_space, added
                 tokens with lstrip / rstrip / single_word / normalized, a non-special added
                 token, Bert-style post-processing
  subword_unk    classic BPE with continuing_subword_prefix "##", end_of_word_suffix "</w>",
                 an <unk> token with fuse_unk and a limited alphabet, Lowercase + NFD +
                 StripAccents, WhitespaceSplit, BPEDecoder

Usage: .cache/venv/bin/python tests/data/tokenizers/make_test_tokenizers.py [AUSTEN_DIR]
The outputs are committed; rerun only to change them.
"""
import glob
import json
import os
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers, processors, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
                r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
              r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
EXTRA_TEXT = [
    "Ça va? Où est la bibliothèque? Naïve café, déjà vu, façade, jalapeño, Straße, smørrebrød.",
    "Привет, как дела? Москва — столица России. Ελληνικά: καλημέρα κόσμε.",
    "日本語のテキスト、東京都。中文文本：你好，世界！한국어 텍스트: 안녕하세요.",
    "مرحبا بالعالم. שלום עולם. नमस्ते दुनिया। สวัสดีชาวโลก",
    "def f(x):\n    return x ** 2  # square\n\tif (a && b) { c++; }\n",
    "Numbers: 1234567890 3.14159 2,718 1e-9 0x1F 100% $5.00 €10 ¥100",
]


def write(tok: Tokenizer, name: str, edit=None):
    data = json.loads(tok.to_str())
    if edit:
        edit(data)
    os.makedirs(os.path.join(HERE, name), exist_ok=True)
    path = os.path.join(HERE, name, "tokenizer.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=None, separators=(",", ":"))
        f.write("\n")
    Tokenizer.from_file(path)  # must still load
    print(f"{path}: {os.path.getsize(path)} bytes", file=sys.stderr)


def corpus(austen_dir):
    files = sorted(glob.glob(os.path.join(austen_dir, "*.txt")))
    if not files:
        sys.exit(f"no Austen texts in {austen_dir}")
    for path in files:
        with open(path, encoding="utf-8") as f:
            yield from f.read().split("\n\n")
    for _ in range(50):
        yield from EXTRA_TEXT


def sentencepiece_family(austen_dir):
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=3000, min_frequency=2, limit_alphabet=120,
                                  special_tokens=["<unk>", "<s>", "</s>"] + byte_tokens,
                                  show_progress=False)
    tok.train_from_iterator(corpus(austen_dir), trainer)

    def base_edit(data):
        # Byte tokens are plain vocabulary entries in Llama 2's file, not added tokens.
        data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] in ("<unk>", "<s>", "</s>")]
        model = data["model"]
        vocab = model["vocab"]
        # Whitespace-run tokens like Llama 2's "▁▁", "▁▁▁▁" (merges across the ▁ boundary).
        for a, b in (("▁", "▁"), ("▁▁", "▁▁"), ("▁▁▁▁", "▁▁▁▁"), ("▁▁", "▁")):
            if a + b not in vocab:
                vocab[a + b] = len(vocab)
            model["merges"].append([a, b])

    llama2_decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                        decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    bos_template = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                 special_tokens=[("<s>", 1)])

    tok.pre_tokenizer = None
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = llama2_decoder
    tok.post_processor = bos_template

    def llama2_edit(data):
        base_edit(data)
        data["model"]["merges"] = [" ".join(m) for m in data["model"]["merges"]]

    write(tok, "llama2_style", llama2_edit)

    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    write(tok, "mistral_style", base_edit)

    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace(replacement="▁",
                                                                                 prepend_scheme="always")])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> $B </s>",
                                                       special_tokens=[("<s>", 1), ("</s>", 2)])
    write(tok, "metaspace_split", base_edit)


def byte_level_family(austen_dir):
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=3000, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(austen_dir), trainer)
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                "<|eot_id|>"] + [f"<|reserved_special_token_{i}|>" for i in range(4)]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                                      special_tokens=[("<|begin_of_text|>", bos)])])

    def llama3_edit(data):
        vocab = data["model"]["vocab"]
        # Whole words in the vocabulary without the merges that would build them: with
        # ignore_merges they are one token, without it several.
        added = 0
        for word in ("ĠElizabeth", "Ġextraordinarily", "Ġxylophone", "ĠZanzibar", "Ġquizzically",
                     "Ġunbelievably"):
            if word not in vocab:
                vocab[word] = max(vocab.values()) + 1
                added += 1
        for t in data["added_tokens"]:
            t["id"] = t["id"] + added
        data["post_processor"]["processors"][1]["special_tokens"]["<|begin_of_text|>"]["ids"] = [bos + added]

    write(tok, "llama3_style", llama3_edit)

    # Qwen 2: NFC, single-digit split, ChatML tokens, no BOS.
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.train_from_iterator(corpus(austen_dir), trainer)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False)
                            for s in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")])
    tok.add_tokens([AddedToken("<tool_call>", special=False, normalized=False)])
    write(tok, "qwen_style")

    # Rare paths, on a byte-level vocabulary.
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {3,}"), "  "),
                                           normalizers.Strip(left=False, right=True)])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split("--", behavior="merged_with_next"),
        pre_tokenizers.Split(Regex(r"[.,;:!?]"), behavior="merged_with_previous"),
        pre_tokenizers.Split(Regex(r"[A-Z][a-z]+"), behavior="contiguous", invert=True),
        pre_tokenizers.Split(Regex(r"\t"), behavior="removed"),
        pre_tokenizers.Digits(individual_digits=False),
        pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus(austen_dir), trainer)
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True, normalized=False),
                            AddedToken("[SEP]", rstrip=True, special=True, normalized=False),
                            AddedToken("[CLS]", special=True, normalized=False)])
    tok.add_tokens([AddedToken("foo", single_word=True, normalized=True),
                    AddedToken("ﬁne", normalized=True),
                    AddedToken("<bar>", normalized=False, lstrip=True, rstrip=True)])
    tok.post_processor = processors.BertProcessing(("[SEP]", tok.token_to_id("[SEP]")),
                                                   ("[CLS]", tok.token_to_id("[CLS]")))
    write(tok, "features")

    # Oniguruma regex dialect: ^/$ as line anchors, \w, \h (hex digit), (?m) (dot matches newline).
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"(?m)<!--.*?-->"), behavior="isolated"),
        pre_tokenizers.Split(Regex(r"^[ \t]+|[ \t]+$"), behavior="isolated"),
        pre_tokenizers.Split(Regex(r"\h{4,}"), behavior="isolated"),
        pre_tokenizers.Split(Regex(r"\w+|\W"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus(austen_dir), trainer)
    write(tok, "regex_dialect")

    # Classic subword BPE with an unknown token.
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, continuing_subword_prefix="##",
                               end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents(),
                                           normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.BPEDecoder(suffix="</w>")
    sub_trainer = trainers.BpeTrainer(vocab_size=2000, min_frequency=2, limit_alphabet=40,
                                      special_tokens=["<unk>"], continuing_subword_prefix="##",
                                      end_of_word_suffix="</w>", show_progress=False)
    tok.train_from_iterator(corpus(austen_dir), sub_trainer)
    write(tok, "subword_unk")


def main():
    default = os.path.join(HERE, "..", "..", "..", "..", "shared", "data", "austen")
    austen_dir = sys.argv[1] if len(sys.argv) > 1 else default
    sentencepiece_family(austen_dir)
    byte_level_family(austen_dir)


if __name__ == "__main__":
    main()
