// runtime/tokenizer_regex.h: the regular expressions of tokenizer.json (Split pre-tokenizer,
// Replace normalizer/decoder) compiled with PCRE2 in UTF + UCP mode and JIT where available.
//
// Hugging Face `tokenizers` uses Oniguruma. The patterns LLM tokenizers ship (GPT-2, Llama 3,
// Qwen 2 splits: \p{L}, \p{N}, \s, (?i:...), lookahead) mean the same in PCRE2 with Unicode
// properties; Oniguruma-only syntax is reported as a kUnsupported error when PCRE2 rejects it.
// Matching is thread-safe: scratch state is per thread.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace trellis::tok {

class Regex {
 public:
  // Compiles `pattern`; `where` names its place in tokenizer.json for error messages.
  static std::unique_ptr<Regex> compile(std::string_view pattern, std::string_view where);
  // A regex matching `literal` verbatim (Split/Replace with a "String" pattern).
  static std::unique_ptr<Regex> literal(std::string_view literal, std::string_view where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // All non-overlapping matches in `subject` (valid UTF-8), left to right, as byte ranges
  // [start, end). An empty match is reported and the search resumes one character later, as
  // Oniguruma's find_iter does.
  void find_all(std::string_view subject, std::vector<std::pair<size_t, size_t>>* matches) const;

  struct Impl;  // the compiled PCRE2 code (opaque)

 private:
  Regex() = default;
  std::unique_ptr<Impl> impl_;
};

}  // namespace trellis::tok
