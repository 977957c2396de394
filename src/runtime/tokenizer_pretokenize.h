// runtime/tokenizer_pretokenize.h: tokenizer.json "pre_tokenizer" objects.
//
// Supported: Sequence, ByteLevel (with or without its GPT-2 regex, add_prefix_space), Split
// (String or Regex pattern, all five behaviors, invert), Digits, Metaspace (prepend_scheme
// always/first/never, split), WhitespaceSplit, CharDelimiterSplit. Others (Whitespace,
// BertPreTokenizer, Punctuation, UnicodeScripts, FixedLength) are kUnsupported errors.
// Each pre-tokenizer maps every current piece to sub-pieces, dropping empty ones, as HF's
// PreTokenizedString::split does.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace trellis::tok {

struct PreToken {
  std::string text;
  // The piece starts at the first character of the original input (HF's
  // offsets_original().0 == 0), which Metaspace's prepend_scheme "first" checks.
  bool at_origin = false;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces `pieces` by their pre-tokenized sub-pieces.
  virtual void apply(std::vector<PreToken>& pieces) const = 0;
};

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& j, std::string_view where);

}  // namespace trellis::tok
