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

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

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
  m->id_to_token_.resize(static_cast<size_t>(max_id + 1));
  m->id_present_.assign(static_cast<size_t>(max_id + 1), 0);
  for (const auto& [token, id] : m->vocab_) {
    m->id_to_token_[id] = token;
    m->id_present_[id] = 1;
  }

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
  std::string a, b, merged;
  for (const auto& entry : *merges_it) {
    if (entry.is_string()) {
      const std::string& line = entry.get_ref<const std::string&>();
      if (line.rfind("#version", 0) == 0) continue;
      const size_t sp = line.find(' ');
      if (sp == std::string::npos || line.find(' ', sp + 1) != std::string::npos) {
        fail(ErrorKind::kFormat, "{}: model.merges[{}] {} is not two tokens separated by one space",
             where, rank, entry.dump());
      }
      a = line.substr(0, sp);
      b = line.substr(sp + 1);
    } else if (entry.is_array() && entry.size() == 2 && entry[0].is_string() && entry[1].is_string()) {
      a = entry[0].get<std::string>();
      b = entry[1].get<std::string>();
    } else {
      fail(ErrorKind::kFormat, "{}: model.merges[{}] must be \"a b\" or [\"a\", \"b\"], got {}", where,
           rank, entry.dump());
    }
    auto ia = m->vocab_.find(a);
    auto ib = m->vocab_.find(b);
    if (ia == m->vocab_.end() || ib == m->vocab_.end()) {
      fail(ErrorKind::kFormat, "{}: model.merges[{}] uses token {} that is not in the vocab", where,
           rank, nlohmann::json(ia == m->vocab_.end() ? a : b).dump());
    }
    merged = a;
    merged.append(b, std::min(prefix_len, b.size()));
    auto im = m->vocab_.find(merged);
    if (im == m->vocab_.end()) {
      fail(ErrorKind::kFormat, "{}: model.merges[{}] produces {} that is not in the vocab", where,
           rank, nlohmann::json(merged).dump());
    }
    m->merges_[pair_key(ia->second, ib->second)] = MergeInfo{rank, im->second};
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
  if (id < 0 || id >= id_limit() || !id_present_[id]) return nullptr;
  return &id_to_token_[id];
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
  const bool cacheable = word.size() < kCacheMaxWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (auto it = cache_.find(word); it != cache_.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t before = out->size();
  merge_word(word, out);
  if (cacheable) {
    std::vector<int32_t> ids(out->begin() + static_cast<ptrdiff_t>(before), out->end());
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kCacheMaxEntries) cache_.clear();
    cache_.emplace(std::string(word), std::move(ids));
  }
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>* out) const {
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

  if (symbols.size() > 1 && !merges_.empty()) {
    std::vector<MergeCandidate> heap;
    heap.reserve(symbols.size());
    auto lookup = [&](int32_t a, int32_t b) -> const MergeInfo* {
      auto it = merges_.find(pair_key(a, b));
      return it == merges_.end() ? nullptr : &it->second;
    };
    for (size_t p = 0; p + 1 < symbols.size(); ++p) {
      if (const MergeInfo* mi = lookup(symbols[p].id, symbols[p + 1].id)) {
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
      const MergeInfo* now = lookup(cur.id, right.id);
      if (!now || now->new_id != top.new_id) continue;
      cur.id = top.new_id;
      cur.len += right.len;
      cur.next = right.next;
      symbols[next_pos].len = 0;
      if (right.next >= 0) symbols[right.next].prev = static_cast<int32_t>(top.pos);
      if (cur.prev >= 0) {
        if (const MergeInfo* mi = lookup(symbols[cur.prev].id, cur.id)) {
          heap.push_back(MergeCandidate{mi->rank, static_cast<uint32_t>(cur.prev), mi->new_id});
          std::push_heap(heap.begin(), heap.end(), CandidateAfter{});
        }
      }
      if (cur.next >= 0) {
        if (const MergeInfo* mi = lookup(cur.id, symbols[cur.next].id)) {
          heap.push_back(MergeCandidate{mi->rank, top.pos, mi->new_id});
          std::push_heap(heap.begin(), heap.end(), CandidateAfter{});
        }
      }
    }
  }
  for (const Symbol& s : symbols) {
    if (s.len != 0) out->push_back(s.id);
  }
}

}  // namespace trellis::tok
