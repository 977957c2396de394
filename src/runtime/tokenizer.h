// runtime/tokenizer.h: Hugging Face tokenizer.json tokenizers (BPE family) for trellis.
//
// Goals: exactly the ids of the `tokenizers` library (PyPI) for the BPE tokenizers Llama-family
// models ship: byte-level BPE (GPT-2, Llama 3, Qwen 2, SmolLM: ByteLevel / Split / Digits
// pre-tokenizers, NFC-style normalizers, ignore_merges) and SentencePiece-style BPE with byte
// fallback (Llama 2, Mistral: Prepend/Replace normalizers or Metaspace). Added tokens are split
// out first (leftmost-longest, honoring special/lstrip/rstrip/single_word/normalized), then
// normalizer -> pre-tokenizer -> BPE -> post-processor (TemplateProcessing, ByteLevel, Bert,
// Roberta, Sequence). Decoding runs the tokenizer.json decoder chain; StreamDecoder turns a
// stream of ids into text pieces that never split a UTF-8 sequence.
//
// Non-goals (kUnsupported errors that name what is supported): WordPiece, Unigram and
// WordLevel models; BertNormalizer/Precompiled normalizers; Whitespace/Bert/Punctuation/
// UnicodeScripts pre-tokenizers; WordPiece/CTC decoders; pair encodings. truncation and padding
// in tokenizer.json are ignored (trellis never truncates prompts silently). BPE dropout is
// ignored (a training feature).
//
// Deliberate differences from HF: decoding an id the vocabulary does not have is a
// kInvalidArgument error (HF skips it silently); input text that is not valid UTF-8 is repaired
// first, each ill-formed subsequence becoming U+FFFD (one per maximal subpart, the policy of
// Python's bytes.decode(errors="replace")), where HF's Python API cannot receive such text at all.
//
// Thread safety: a loaded Tokenizer is immutable apart from an internal, locked BPE cache; all
// const methods may be called concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "runtime/tokenizer_added.h"

namespace trellis {

namespace tok {
class BpeModel;
class Normalizer;
class PreTokenizer;
class Decoder;
}  // namespace tok

class Tokenizer {
 public:
  // Loads `path`: a directory holding tokenizer.json (and optionally tokenizer_config.json), or a
  // tokenizer.json file itself (then no config is read). Errors: kIo when unreadable, kFormat when
  // malformed (naming the field), kUnsupported for components outside the goals above.
  static std::unique_ptr<Tokenizer> load(const std::string& path);
  // Builds a tokenizer from the text of tokenizer.json and, when non-empty, of
  // tokenizer_config.json. `source` names the file in error messages.
  static std::unique_ptr<Tokenizer> from_json(std::string_view tokenizer_json,
                                              std::string_view config_json = {},
                                              std::string_view source = "tokenizer.json");
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Token ids of `text` (UTF-8; ill-formed bytes are replaced, see above).
  // add_special_tokens: apply the post-processor (BOS etc.), or the add_bos_token/add_eos_token
  //   choice of tokenizer_config.json when it states one.
  // parse_special: added tokens marked special ("<|eot_id|>") in the text become their ids;
  //   false treats them as plain text (HF's encode_special_tokens = True). Non-special added
  //   tokens are always matched.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = false,
                              bool parse_special = true) const;

  // Text of `ids` through the decoder chain; skip_special drops special added tokens.
  // kInvalidArgument when an id is not in the vocabulary.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;

  // The vocabulary string of `id` before decoding (e.g. "Ġthe", "<0x0A>", "<|eot_id|>").
  // kInvalidArgument when `id` is not in the vocabulary.
  std::string token_text(int32_t id) const;
  std::optional<int32_t> token_to_id(std::string_view token) const;
  // One past the largest id of the model vocabulary and the added tokens (the embedding rows a
  // model needs at least). Ids below it may still be unused (holes).
  int32_t vocab_size() const { return vocab_size_; }
  bool has_id(int32_t id) const;
  bool is_special(int32_t id) const;

  // BOS/EOS from tokenizer_config.json (bos_token/eos_token); BOS falls back to the first special
  // token the post-processor prepends. Absent when unknown.
  std::optional<int32_t> bos_id() const { return bos_id_; }
  std::optional<int32_t> eos_id() const { return eos_id_; }
  const std::optional<std::string>& bos_token() const { return bos_token_; }
  const std::optional<std::string>& eos_token() const { return eos_token_; }
  // Ids encode(text, true) puts before / after the text's own ids.
  const std::vector<int32_t>& special_prefix() const { return prefix_ids_; }
  const std::vector<int32_t>& special_suffix() const { return suffix_ids_; }

 private:
  Tokenizer();
  const std::string* resolve(int32_t id) const;
  void encode_segment(std::string_view text, bool at_origin, bool parse_special,
                      std::vector<int32_t>* out) const;

  std::unique_ptr<tok::BpeModel> model_;
  std::unique_ptr<tok::Normalizer> normalizer_;
  std::unique_ptr<tok::PreTokenizer> pre_tokenizer_;
  std::unique_ptr<tok::Decoder> decoder_;
  std::unique_ptr<tok::AddedTokenMatcher> raw_matcher_, normalized_matcher_;
  std::unordered_map<int32_t, tok::AddedToken> added_;
  std::unordered_map<std::string, int32_t> added_ids_;
  std::unordered_set<std::string> special_contents_;
  std::vector<int32_t> prefix_ids_, suffix_ids_;
  std::optional<int32_t> bos_id_, eos_id_;
  std::optional<std::string> bos_token_, eos_token_;
  int32_t vocab_size_ = 0;
};

// Incremental decoding for generation: push ids one at a time and get the text that became
// final. Text is held back while the decoded tail ends in U+FFFD (an incomplete UTF-8 sequence
// that later ids may complete), so no output ever splits a character, and the concatenation of
// all pieces plus flush() equals tokenizer.decode(all ids) for the decoders LLM tokenizers use.
// It keeps a short window of recent ids as context, as HF's DecodeStream does.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special = false);
  // Appends `id`; returns the newly final text (often empty while bytes are pending).
  // kInvalidArgument for an id outside the vocabulary (the stream is left unchanged).
  std::string push(int32_t id);
  // Returns whatever is still held back (a truncated sequence decodes as U+FFFD) and keeps the
  // context, so the stream may continue.
  std::string flush();
  // Forgets everything: the next id starts a new text.
  void reset();

 private:
  std::string emit(bool force);

  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::vector<int32_t> ids_;
  std::string prefix_;
  size_t prefix_index_ = 0;
};

}  // namespace trellis
