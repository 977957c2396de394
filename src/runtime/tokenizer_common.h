// runtime/tokenizer_common.h: pieces shared by the tokenizer's components: typed JSON field
// access with errors that name the field, String-or-Regex patterns, and the GPT-2 byte-level
// alphabet (every byte mapped to a printable code point).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "runtime/tokenizer_regex.h"

namespace trellis::tok {

// The "type" string of a component object (kFormat error when missing).
std::string json_type(const nlohmann::json& j, std::string_view where);
// Field accessors: a missing or null field gives `fallback`; a field of the wrong JSON type is
// a kFormat error naming `where` and the key.
bool json_bool(const nlohmann::json& j, const char* key, bool fallback, std::string_view where);
std::string json_string(const nlohmann::json& j, const char* key, std::string_view where);
// A string field holding exactly one character (Metaspace replacement, Strip content).
char32_t json_char(const nlohmann::json& j, const char* key, std::string_view where);
int64_t json_int(const nlohmann::json& j, const char* key, int64_t fallback, std::string_view where);

// `"pattern": {"String": "..."}` (matched verbatim) or `{"Regex": "..."}`.
class Pattern {
 public:
  static Pattern from_json(const nlohmann::json& owner, std::string_view where);
  Pattern(Pattern&&) = default;
  Pattern& operator=(Pattern&&) = default;
  // Non-overlapping matches in `text`, left to right (see Regex::find_all).
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const;

 private:
  Pattern() = default;
  std::string literal_;  // non-empty: a plain substring search
  std::unique_ptr<Regex> regex_;
};

// GPT-2 byte-level alphabet: the code point that stands for byte `b`.
char32_t byte_to_char(uint8_t b);
// The byte a byte-level code point stands for, or -1 when `cp` is not in the alphabet.
int char_to_byte(char32_t cp);
// Maps every byte of `bytes` to its byte-level code point (UTF-8 encoded).
std::string byte_level_encode(std::string_view bytes);

}  // namespace trellis::tok
