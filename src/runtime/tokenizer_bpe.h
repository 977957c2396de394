// runtime/tokenizer_bpe.h: the BPE model of tokenizer.json ("model": {"type": "BPE", ...}).
//
// Goals: the ids of Hugging Face `tokenizers`' BPE for one pre-token ("word"): per-character
// initial symbols (with continuing_subword_prefix / end_of_word_suffix, byte_fallback to <0xXX>
// tokens, unk and fuse_unk exactly as HF orders them), then merges by a min-heap on
// (rank, position) over a linked list of symbols, skipping stale entries the way HF does, so
// ties and multi-path merges resolve identically. ignore_merges returns a whole-word vocab hit
// directly (Llama 3). Results for words under 256 bytes are cached.
// Non-goals: BPE dropout (a training-time feature: ignored, with a warning), training.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace trellis::tok {

// Hash for string-keyed maps that can be probed with a std::string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringIdMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

class BpeModel {
 public:
  // Builds the model from tokenizer.json's "model" object. kFormat errors name `where` and the
  // offending field (missing vocab/merges, a merge whose parts or result are not in the vocab,
  // malformed "a b" merge strings, negative ids, an unk_token that is not in the vocab).
  static std::unique_ptr<BpeModel> from_json(const nlohmann::json& model, std::string_view where);

  // Appends the ids of `word` (one pre-token, valid UTF-8). Thread-safe.
  void tokenize(std::string_view word, std::vector<int32_t>* out) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  // The vocab string of `id`, or nullptr when the model has no such id.
  const std::string* id_to_token(int32_t id) const;
  // One past the largest id in the vocab (0 when empty).
  int32_t id_limit() const { return static_cast<int32_t>(id_to_token_.size()); }

 private:
  struct MergeInfo {
    uint32_t rank;
    int32_t new_id;
  };
  void merge_word(std::string_view word, std::vector<int32_t>* out) const;
  std::optional<int32_t> char_id(std::string_view piece) const;

  StringIdMap vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<uint8_t> id_present_;
  std::unordered_map<uint64_t, MergeInfo> merges_;
  std::vector<int32_t> bmp_char_id_;  // id of single-code-point tokens below U+10000, or -1
  std::optional<std::string> unk_token_, prefix_, suffix_;
  int32_t unk_id_ = -1;
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  int32_t byte_ids_[256];  // <0xXX> token ids (or -1), for byte_fallback

  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache_;
};

}  // namespace trellis::tok
