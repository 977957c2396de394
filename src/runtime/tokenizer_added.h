// runtime/tokenizer_added.h: added tokens (tokenizer.json "added_tokens") and the split of input
// text around them, as Hugging Face's AddedVocabulary does it.
//
// Tokens are matched leftmost-longest over the raw text (tokens with normalized=false) or over
// each normalized segment (normalized=true, matched by their normalized content). A match is
// dropped, without retrying shorter tokens at that place, when single_word is set and a word
// character touches it, or when it is special and special tokens are not parsed. lstrip/rstrip
// extend a match over adjacent whitespace.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace trellis::tok {

struct AddedToken {
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
};

// One piece of a split: text [start, end) of the input, or an added token when id >= 0.
struct AddedSplit {
  size_t start, end;
  int32_t id;
};

class AddedTokenMatcher {
 public:
  // `patterns`: (string to match, id) pairs.
  void build(const std::vector<std::pair<std::string, int32_t>>& patterns);
  bool empty() const { return nodes_.size() <= 1; }
  // Longest pattern starting at `pos`: its length (0 when none) and id.
  size_t longest_at(std::string_view text, size_t pos, int32_t* id) const;
  // Quick reject: can a pattern start with this byte?
  bool may_start(unsigned char b) const { return first_bytes_[b]; }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;  // sorted by byte
    int32_t id = -1;                                           // a pattern ends here
  };
  std::vector<Node> nodes_;
  bool first_bytes_[256] = {};
};

// Splits `text` around the matches of `matcher` (HF's AddedVocabulary::find_matches):
// `tokens` gives each id's flags, `parse_special` false skips special tokens. Empty `text`
// gives no splits. Splits may overlap when an rstrip token swallows the start of the next
// match, exactly as in HF.
void split_on_added_tokens(std::string_view text, const AddedTokenMatcher& matcher,
                           const std::unordered_map<int32_t, AddedToken>& tokens,
                           bool parse_special, std::vector<AddedSplit>* out);

}  // namespace trellis::tok
