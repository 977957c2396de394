// runtime/tokenizer_added.cpp: byte trie for added tokens and HF's split around them.
#include "runtime/tokenizer_added.h"

#include <algorithm>

#include "runtime/tokenizer_unicode.h"

namespace trellis::tok {
namespace {

// The code point that ends at byte `end` (exclusive) of valid UTF-8 `s`.
char32_t last_char(std::string_view s, size_t end) {
  size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  size_t len;
  return utf8_decode(s, start, &len);
}

// Start of the run of whitespace that ends at `end`.
size_t whitespace_run_start(std::string_view s, size_t end) {
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    size_t len;
    if (!is_whitespace(utf8_decode(s, start, &len))) break;
    end = start;
  }
  return end;
}

// End of the run of whitespace that starts at `pos`.
size_t whitespace_run_end(std::string_view s, size_t pos) {
  while (pos < s.size()) {
    size_t len;
    if (!is_whitespace(utf8_decode(s, pos, &len))) break;
    pos += len;
  }
  return pos;
}

}  // namespace

void AddedTokenMatcher::build(const std::vector<std::pair<std::string, int32_t>>& patterns) {
  nodes_.assign(1, Node{});
  std::fill(std::begin(first_bytes_), std::end(first_bytes_), false);
  for (const auto& [text, id] : patterns) {
    if (text.empty()) continue;
    first_bytes_[static_cast<unsigned char>(text[0])] = true;
    int32_t node = 0;
    for (unsigned char b : text) {
      auto& children = nodes_[node].children;
      auto it = std::lower_bound(children.begin(), children.end(), b,
                                 [](const auto& c, unsigned char v) { return c.first < v; });
      if (it != children.end() && it->first == b) {
        node = it->second;
      } else {
        const int32_t child = static_cast<int32_t>(nodes_.size());
        children.insert(it, {b, child});
        nodes_.push_back(Node{});
        node = child;
      }
    }
    nodes_[node].id = id;
  }
}

size_t AddedTokenMatcher::longest_at(std::string_view text, size_t pos, int32_t* id) const {
  size_t best = 0;
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto& children = nodes_[node].children;
    const auto b = static_cast<unsigned char>(text[i]);
    auto it = std::lower_bound(children.begin(), children.end(), b,
                               [](const auto& c, unsigned char v) { return c.first < v; });
    if (it == children.end() || it->first != b) break;
    node = it->second;
    if (nodes_[node].id >= 0) {
      best = i + 1 - pos;
      *id = nodes_[node].id;
    }
  }
  return best;
}

void split_on_added_tokens(std::string_view text, const AddedTokenMatcher& matcher,
                           const std::unordered_map<int32_t, AddedToken>& tokens,
                           bool parse_special, std::vector<AddedSplit>* out) {
  out->clear();
  if (text.empty()) return;
  if (matcher.empty()) {
    out->push_back({0, text.size(), -1});
    return;
  }
  size_t start_offset = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    if (!matcher.may_start(static_cast<unsigned char>(text[pos]))) {
      ++pos;
      continue;
    }
    int32_t id = -1;
    const size_t len = matcher.longest_at(text, pos, &id);
    if (len == 0) {
      ++pos;
      continue;
    }
    size_t start = pos, stop = pos + len;
    pos = stop;  // matches never overlap, whether or not this one is used
    const AddedToken& tok = tokens.at(id);
    if (!parse_special && tok.special) continue;
    if (tok.single_word) {
      const bool start_space = start == 0 || !is_word_char(last_char(text, start));
      size_t l;
      const bool stop_space = stop == text.size() || !is_word_char(utf8_decode(text, stop, &l));
      if (!start_space || !stop_space) continue;
    }
    if (tok.lstrip) start = std::max(whitespace_run_start(text, start), start_offset);
    if (tok.rstrip) stop = whitespace_run_end(text, stop);
    if (start_offset < start) out->push_back({start_offset, start, -1});
    out->push_back({start, stop, id});
    start_offset = stop;
  }
  if (start_offset != text.size()) out->push_back({start_offset, text.size(), -1});
}

}  // namespace trellis::tok
