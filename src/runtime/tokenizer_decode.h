// runtime/tokenizer_decode.h: tokenizer.json "decoder" objects.
//
// A decoder rewrites the list of token strings (HF's decode_chain); the decoded text is the
// concatenation of the result. Supported: Sequence, ByteLevel, ByteFallback, Fuse, Strip,
// Replace, Metaspace, BPEDecoder. WordPiece and CTC decoders are kUnsupported errors.
// Invalid UTF-8 is replaced as HF does: ByteLevel by one U+FFFD per maximal subpart of the whole
// output, ByteFallback by one U+FFFD per byte of an invalid run of <0xXX> tokens.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace trellis::tok {

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void apply(std::vector<std::string>& tokens) const = 0;
};

std::unique_ptr<Decoder> make_decoder(const nlohmann::json& j, std::string_view where);

}  // namespace trellis::tok
