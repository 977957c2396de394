// runtime/tokenizer_bpe.h: the BPE model of tokenizer.json ("model": {"type": "BPE", ...}).
//
// Goals: the ids of Hugging Face `tokenizers`' BPE for one pre-token ("word"): per-character
// initial symbols (with continuing_subword_prefix / end_of_word_suffix, byte_fallback to <0xXX>
// tokens, unk and fuse_unk exactly as HF orders them), then merges by a min-heap on
// (rank, position) over a linked list of symbols, skipping stale entries the way HF does, so
// ties and multi-path merges resolve identically. ignore_merges returns a whole-word vocab hit
// directly (Llama 3). Results for words under 256 bytes are cached.
//
// Long words (SentencePiece-style tokenizers have no pre-tokenizer, so a whole paragraph is one
// word) are cut before each "▁" or whitespace character into chunks that are merged separately
// (and cached). That is exact, not a heuristic: each chunk also records every id its first and
// last symbol ever had during merging; when no merge exists between any last-id of a chunk and
// any first-id of the next, no candidate ever spans their boundary, so HF's global heap order
// decomposes into the chunks' own orders. Chunks whose boundary fails that test are merged
// together and retried, until every boundary passes.
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

// Open-addressing map from a pair of token ids to its merge (rank, resulting id): the merge loop
// probes it several times per merge, so it is flat and multiplicative-hashed.
class MergeMap {
 public:
  struct Value {
    uint32_t rank;
    int32_t new_id;
  };
  void reserve(size_t n);
  // Inserts or overwrites (a later duplicate merge wins, as in HF's HashMap collect).
  void insert(int32_t a, int32_t b, Value v);
  const Value* find(int32_t a, int32_t b) const {
    if (keys_.empty()) return nullptr;
    const uint64_t key = pack(a, b);
    for (size_t i = slot(key);; i = (i + 1) & mask_) {
      if (keys_[i] == key) return &values_[i];
      if (keys_[i] == kEmpty) return nullptr;
    }
  }
  bool empty() const { return size_ == 0; }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  static uint64_t pack(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  size_t slot(uint64_t key) const { return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> shift_); }
  std::vector<uint64_t> keys_;
  std::vector<Value> values_;
  size_t size_ = 0, mask_ = 0;
  int shift_ = 64;
};

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
  // The merge result of one word, with the ids its first and last symbols held over time.
  struct Merged {
    std::vector<int32_t> ids, first_ids, last_ids;
  };
  void merge_word(std::string_view word, Merged* out) const;
  std::shared_ptr<const Merged> merged_cached(std::string_view word) const;
  void tokenize_long(std::string_view word, std::vector<int32_t>* out) const;
  bool boundary_merges(const Merged& left, const Merged& right) const;
  std::optional<int32_t> char_id(std::string_view piece) const;

  StringIdMap vocab_;
  std::vector<const std::string*> id_to_token_;  // keys of vocab_ (stable), nullptr for holes
  MergeMap merges_;
  std::vector<int32_t> bmp_char_id_;  // id of single-code-point tokens below U+10000, or -1
  std::optional<std::string> unk_token_, prefix_, suffix_;
  int32_t unk_id_ = -1;
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  int32_t byte_ids_[256];  // <0xXX> token ids (or -1), for byte_fallback

  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::shared_ptr<const Merged>, StringHash, std::equal_to<>> cache_;
  bool chunkable_ = false;  // no subword prefix/suffix: a word may be cut into chunks
};

}  // namespace trellis::tok
