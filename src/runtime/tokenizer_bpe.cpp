// runtime/tokenizer_bpe.cpp: BPE vocabulary/merge loading and the merge loop.
#include "runtime/tokenizer_bpe.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/log.h"
#include "runtime/tokenizer_unicode.h"

namespace trellis::tok {
namespace {

constexpr size_t kCacheMaxWordBytes = 256;   // longer words are not cached (as HF)
constexpr size_t kCacheMaxEntries = 200000;  // the cache is cleared when it grows past this

std::optional<std::string> optional_string(const nlohmann::json& j, const char* key,
                                           std::string_view where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) fail(ErrorKind::kFormat, "{}: model.{} must be a string or null", where, key);
  return it->get<std::string>();
}

bool optional_bool(const nlohmann::json& j, const char* key, std::string_view where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return false;
  if (!it->is_boolean()) fail(ErrorKind::kFormat, "{}: model.{} must be a boolean", where, key);
  return it->get<bool>();
}

struct Symbol {
  int32_t id;
  int32_t prev, next;
  uint32_t len;  // bytes of the word this symbol covers; 0 marks a symbol merged away
};

struct MergeCandidate {
  uint32_t rank;
  uint32_t pos;
  int32_t new_id;
};

// Min-heap order on (rank, pos), HF's Merge ordering.
struct CandidateAfter {
  bool operator()(const MergeCandidate& a, const MergeCandidate& b) const {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  }
};

}  // namespace

void MergeMap::reserve(size_t n) {
  size_t cap = 16;
  int bits = 4;
  while (cap < n * 2) {
    cap *= 2;
    ++bits;
  }
  keys_.assign(cap, kEmpty);
  values_.assign(cap, Value{0, 0});
  mask_ = cap - 1;
  shift_ = 64 - bits;
  size_ = 0;
}

void MergeMap::insert(int32_t a, int32_t b, Value v) {
  if ((size_ + 1) * 2 > keys_.size()) {
    std::vector<uint64_t> old_keys = std::move(keys_);
    std::vector<Value> old_values = std::move(values_);
    reserve(std::max<size_t>(16, old_keys.size()));
    for (size_t i = 0; i < old_keys.size(); ++i) {
      if (old_keys[i] != kEmpty) {
        insert(static_cast<int32_t>(old_keys[i] >> 32), static_cast<int32_t>(old_keys[i] & 0xFFFFFFFFu),
               old_values[i]);
      }
    }
  }
  const uint64_t key = pack(a, b);
  for (size_t i = slot(key);; i = (i + 1) & mask_) {
    if (keys_[i] == key) {
      values_[i] = v;
      return;
    }
    if (keys_[i] == kEmpty) {
      keys_[i] = key;
      values_[i] = v;
      ++size_;
      return;
    }
  }
}

std::unique_ptr<BpeModel> BpeModel::from_json(const nlohmann::json& model, std::string_view where) {
  auto m = std::unique_ptr<BpeModel>(new BpeModel());
  auto vocab_it = model.find("vocab");
  if (vocab_it == model.end() || !vocab_it->is_object()) {
    fail(ErrorKind::kFormat, "{}: model.vocab is missing or not an object of token -> id", where);
  }
  m->vocab_.reserve(vocab_it->size());
  int64_t max_id = -1;
  for (auto it = vocab_it->begin(); it != vocab_it->end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() > INT32_MAX) {
      fail(ErrorKind::kFormat, "{}: model.vocab[{}] must be a non-negative integer id", where,
           nlohmann::json(it.key()).dump());
    }
    const int64_t id = it.value().get<int64_t>();
    m->vocab_[it.key()] = static_cast<int32_t>(id);
    max_id = std::max(max_id, id);
  }
  m->id_to_token_.assign(static_cast<size_t>(max_id + 1), nullptr);
  for (const auto& [token, id] : m->vocab_) m->id_to_token_[id] = &token;

  m->unk_token_ = optional_string(model, "unk_token", where);
  m->prefix_ = optional_string(model, "continuing_subword_prefix", where);
  m->suffix_ = optional_string(model, "end_of_word_suffix", where);
  m->fuse_unk_ = optional_bool(model, "fuse_unk", where);
  m->byte_fallback_ = optional_bool(model, "byte_fallback", where);
  m->ignore_merges_ = optional_bool(model, "ignore_merges", where);
  if (auto it = model.find("dropout"); it != model.end() && !it->is_null()) {
    if (!it->is_number() || it->get<double>() < 0.0 || it->get<double>() > 1.0) {
      fail(ErrorKind::kFormat, "{}: model.dropout must be null or a number in [0, 1]", where);
    }
    if (it->get<double>() > 0.0) {
      log_warn("{}: BPE dropout {} is a training-time feature and is ignored", where,
               it->get<double>());
    }
  }
  if (m->unk_token_) {
    if (auto id = m->vocab_.find(*m->unk_token_); id != m->vocab_.end()) m->unk_id_ = id->second;
  }
  for (int b = 0; b < 256; ++b) {
    auto it = m->vocab_.find(fmt::format("<0x{:02X}>", b));
    m->byte_ids_[b] = it == m->vocab_.end() ? -1 : it->second;
  }
  m->chunkable_ = !m->prefix_ && !m->suffix_;
  m->bmp_char_id_.assign(0x10000, -1);
  for (const auto& [token, id] : m->vocab_) {
    if (token.empty() || !utf8_is_valid(token)) continue;
    size_t len;
    const char32_t cp = utf8_decode(token, 0, &len);
    if (len == token.size() && cp < 0x10000) m->bmp_char_id_[cp] = id;
  }

  auto merges_it = model.find("merges");
  if (merges_it == model.end() || !merges_it->is_array()) {
    fail(ErrorKind::kFormat, "{}: model.merges is missing or not an array", where);
  }
  m->merges_.reserve(merges_it->size());
  const size_t prefix_len = m->prefix_ ? m->prefix_->size() : 0;
  uint32_t rank = 0;
  std::string_view a, b;
  std::string merged;
  for (const auto& entry : *merges_it) {
    if (entry.is_string()) {
      const std::string_view line = entry.get_ref<const std::string&>();
      if (line.substr(0, 8) == "#version") continue;
      const size_t sp = line.find(' ');
      if (sp == std::string::npos || line.find(' ', sp + 1) != std::string::npos) {
        fail(ErrorKind::kFormat, "{}: model.merges[{}] {} is not two tokens separated by one space",
             where, rank, entry.dump());
      }
      a = line.substr(0, sp);
      b = line.substr(sp + 1);
    } else if (entry.is_array() && entry.size() == 2 && entry[0].is_string() && entry[1].is_string()) {
      a = entry[0].get_ref<const std::string&>();
      b = entry[1].get_ref<const std::string&>();
    } else {
      fail(ErrorKind::kFormat, "{}: model.merges[{}] must be \"a b\" or [\"a\", \"b\"], got {}", where,
           rank, entry.dump());
    }
    auto ia = m->vocab_.find(a);
    auto ib = m->vocab_.find(b);
    if (ia == m->vocab_.end() || ib == m->vocab_.end()) {
      fail(ErrorKind::kFormat, "{}: model.merges[{}] uses token {} that is not in the vocab", where,
           rank, nlohmann::json(std::string(ia == m->vocab_.end() ? a : b)).dump());
    }
    merged.assign(a);
    merged.append(b.substr(std::min(prefix_len, b.size())));
    auto im = m->vocab_.find(merged);
    if (im == m->vocab_.end()) {
      fail(ErrorKind::kFormat, "{}: model.merges[{}] produces {} that is not in the vocab", where,
           rank, nlohmann::json(merged).dump());
    }
    m->merges_.insert(ia->second, ib->second, MergeMap::Value{rank, im->second});
    ++rank;
  }
  return m;
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || id >= id_limit()) return nullptr;
  return id_to_token_[id];
}

std::optional<int32_t> BpeModel::char_id(std::string_view piece) const {
  auto it = vocab_.find(piece);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>* out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (auto it = vocab_.find(word); it != vocab_.end()) {
      out->push_back(it->second);
      return;
    }
  }
  if (word.size() >= kCacheMaxWordBytes && chunkable_) {
    tokenize_long(word, out);
    return;
  }
  const auto m = merged_cached(word);
  out->insert(out->end(), m->ids.begin(), m->ids.end());
}

std::shared_ptr<const BpeModel::Merged> BpeModel::merged_cached(std::string_view word) const {
  if (word.size() < kCacheMaxWordBytes) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (auto it = cache_.find(word); it != cache_.end()) return it->second;
  }
  auto merged = std::make_shared<Merged>();
  merge_word(word, merged.get());
  if (word.size() < kCacheMaxWordBytes) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kCacheMaxEntries) cache_.clear();
    cache_.emplace(std::string(word), merged);
  }
  return merged;
}

bool BpeModel::boundary_merges(const Merged& left, const Merged& right) const {
  for (int32_t a : left.last_ids) {
    for (int32_t b : right.first_ids) {
      if (merges_.find(a, b)) return true;
    }
  }
  return false;
}

void BpeModel::tokenize_long(std::string_view word, std::vector<int32_t>* out) const {
  // Chunks start at a "▁" or whitespace character that is itself in the vocabulary (so it is
  // never part of a fused unknown).
  struct Chunk {
    size_t begin, end;
    std::shared_ptr<const Merged> merged;
  };
  std::vector<Chunk> chunks;
  size_t begin = 0;
  for (size_t i = 0; i < word.size();) {
    size_t len;
    const char32_t cp = utf8_decode(word, i, &len);
    if (i > begin && (cp == 0x2581 || is_whitespace(cp)) && cp < 0x10000 && bmp_char_id_[cp] >= 0) {
      chunks.push_back(Chunk{begin, i, {}});
      begin = i;
    }
    i += len;
  }
  chunks.push_back(Chunk{begin, word.size(), {}});
  for (Chunk& c : chunks) c.merged = merged_cached(word.substr(c.begin, c.end - c.begin));

  // Join chunks across boundaries where a merge could happen, until none is left.
  bool changed = true;
  while (changed && chunks.size() > 1) {
    changed = false;
    std::vector<Chunk> next;
    next.reserve(chunks.size());
    for (size_t i = 0; i < chunks.size();) {
      size_t j = i;
      while (j + 1 < chunks.size() && boundary_merges(*chunks[j].merged, *chunks[j + 1].merged)) ++j;
      if (j == i) {
        next.push_back(std::move(chunks[i]));
      } else {
        Chunk joined{chunks[i].begin, chunks[j].end, {}};
        joined.merged = merged_cached(word.substr(joined.begin, joined.end - joined.begin));
        next.push_back(std::move(joined));
        changed = true;
      }
      i = j + 1;
    }
    chunks.swap(next);
  }
  for (const Chunk& c : chunks) out->insert(out->end(), c.merged->ids.begin(), c.merged->ids.end());
}

void BpeModel::merge_word(std::string_view word, Merged* out) const {
  out->ids.clear();
  out->first_ids.clear();
  out->last_ids.clear();
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto add = [&](int32_t id, uint32_t len) {
    const int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back(Symbol{id, index - 1, -1, len});
    if (index > 0) symbols[index - 1].next = index;
  };
  // A pending unknown: HF holds it back so consecutive unknowns can fuse.
  int32_t unk_pending_len = -1;
  const bool affixes = prefix_ || suffix_;
  std::string piece;
  for (size_t i = 0; i < word.size();) {
    size_t len;
    const char32_t cp = utf8_decode(word, i, &len);
    const bool first = i == 0, last = i + len == word.size();
    std::optional<int32_t> id;
    std::string_view s = word.substr(i, len);
    if (!affixes) {
      if (cp < 0x10000) {
        if (bmp_char_id_[cp] >= 0) id = bmp_char_id_[cp];
      } else {
        id = char_id(s);
      }
    } else {
      piece.clear();
      if (!first && prefix_) piece += *prefix_;
      piece += s;
      if (last && suffix_) piece += *suffix_;
      s = piece;
      id = char_id(s);
    }
    if (id) {
      if (unk_pending_len >= 0) {
        add(unk_id_, static_cast<uint32_t>(unk_pending_len));
        unk_pending_len = -1;
      }
      add(*id, static_cast<uint32_t>(len));
    } else {
      bool handled = false;
      if (byte_fallback_) {
        handled = true;
        for (unsigned char c : s) handled = handled && byte_ids_[c] >= 0;
        if (handled) {
          for (unsigned char c : s) add(byte_ids_[c], 1);
        }
      }
      if (!handled && unk_token_) {
        if (unk_id_ < 0) {
          fail(ErrorKind::kFormat, "tokenizer.json: model.unk_token {} is not in the vocab",
               nlohmann::json(*unk_token_).dump());
        }
        if (unk_pending_len >= 0 && fuse_unk_) {
          unk_pending_len += static_cast<int32_t>(len);
        } else {
          if (unk_pending_len >= 0) add(unk_id_, static_cast<uint32_t>(unk_pending_len));
          unk_pending_len = static_cast<int32_t>(len);
        }
      }
    }
    i += len;
  }
  if (unk_pending_len >= 0) add(unk_id_, static_cast<uint32_t>(unk_pending_len));

  if (!symbols.empty()) {
    out->first_ids.push_back(symbols.front().id);
    out->last_ids.push_back(symbols.back().id);
  }
  if (symbols.size() > 1 && !merges_.empty()) {
    std::vector<MergeCandidate> heap;
    heap.reserve(symbols.size());
    auto lookup = [&](int32_t a, int32_t b) { return merges_.find(a, b); };
    for (size_t p = 0; p + 1 < symbols.size(); ++p) {
      if (const MergeMap::Value* mi = lookup(symbols[p].id, symbols[p + 1].id)) {
        heap.push_back(MergeCandidate{mi->rank, static_cast<uint32_t>(p), mi->new_id});
      }
    }
    std::make_heap(heap.begin(), heap.end(), CandidateAfter{});
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), CandidateAfter{});
      const MergeCandidate top = heap.back();
      heap.pop_back();
      Symbol& cur = symbols[top.pos];
      if (cur.len == 0 || cur.next < 0) continue;
      const int32_t next_pos = cur.next;
      const Symbol right = symbols[next_pos];
      // A stale entry: the pair at this position no longer produces this token.
      const MergeMap::Value* now = lookup(cur.id, right.id);
      if (!now || now->new_id != top.new_id) continue;
      cur.id = top.new_id;
      cur.len += right.len;
      cur.next = right.next;
      if (top.pos == 0) out->first_ids.push_back(cur.id);
      if (right.next < 0) out->last_ids.push_back(cur.id);
      symbols[next_pos].len = 0;
      if (right.next >= 0) symbols[right.next].prev = static_cast<int32_t>(top.pos);
      if (cur.prev >= 0) {
        if (const MergeMap::Value* mi = lookup(symbols[cur.prev].id, cur.id)) {
          heap.push_back(MergeCandidate{mi->rank, static_cast<uint32_t>(cur.prev), mi->new_id});
          std::push_heap(heap.begin(), heap.end(), CandidateAfter{});
        }
      }
      if (cur.next >= 0) {
        if (const MergeMap::Value* mi = lookup(cur.id, symbols[cur.next].id)) {
          heap.push_back(MergeCandidate{mi->rank, top.pos, mi->new_id});
          std::push_heap(heap.begin(), heap.end(), CandidateAfter{});
        }
      }
    }
  }
  for (const Symbol& s : symbols) {
    if (s.len != 0) out->ids.push_back(s.id);
  }
}

}  // namespace trellis::tok
