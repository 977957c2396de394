// runtime/tokenizer_normalize.h: tokenizer.json "normalizer" objects.
//
// Supported: Sequence, NFC, NFD, NFKC, NFKD, Lowercase, Strip, StripAccents, Replace (String or
// Regex pattern), Prepend, ByteLevel, Nmt. Anything else (BertNormalizer, Precompiled, ...) is a
// kUnsupported error naming the type and listing these.
//
// HF tracks an alignment from normalized to original bytes; trellis needs only one bit of it:
// whether the normalized text still starts at the segment's first original character
// (Metaspace's prepend_scheme "first" asks that), carried as `at_origin`.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

namespace trellis::tok {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // Normalizes `text` (valid UTF-8) in place. Clears `at_origin` when it removes the text's
  // first character without putting something aligned to it in its place.
  virtual void apply(std::string& text, bool& at_origin) const = 0;
};

// Builds a normalizer from its JSON object; `where` names it for error messages.
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& j, std::string_view where);

}  // namespace trellis::tok
