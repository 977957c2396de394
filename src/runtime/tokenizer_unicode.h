// runtime/tokenizer_unicode.h: UTF-8 and Unicode helpers for the tokenizer.
//
// Goals: exactly the character semantics Hugging Face `tokenizers` (Rust) uses where it matters
// for token ids: lossy UTF-8 decoding with "maximal subpart" replacement (Rust's
// String::from_utf8_lossy, Python's errors="replace"), char::is_whitespace, char::is_numeric,
// regex `\w`, full per-character lowercase, and the four Unicode normalization forms.
// Non-goals: locale-dependent casing, grapheme segmentation. The data comes from a generated
// table (tokenizer_unicode_data.inc, Unicode version named there); characters assigned after
// that version behave as unassigned.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace trellis::tok {

inline constexpr char32_t kReplacementChar = 0xFFFD;

// Length in bytes of the UTF-8 sequence starting with lead byte `b` (1 for invalid leads, so a
// caller walking a string that is known to be valid never stalls).
inline size_t utf8_len(unsigned char b) {
  if (b < 0x80) return 1;
  if (b >= 0xF0) return 4;
  if (b >= 0xE0) return 3;
  if (b >= 0xC0) return 2;
  return 1;
}

// Decodes the code point at `pos` of a string that is valid UTF-8; `*len` gets its byte length.
char32_t utf8_decode(std::string_view s, size_t pos, size_t* len);

// Appends the UTF-8 encoding of `cp` (a Unicode scalar value).
void utf8_append(std::string& out, char32_t cp);

// Length of the well-formed UTF-8 sequence at `pos` of `s`: 1..4, or 0 when the bytes there do
// not start one. `*maximal_subpart` (when not null) gets, for an ill-formed sequence, how many
// bytes form its maximal subpart (the bytes one U+FFFD replaces, at least 1); for a truncated
// but so-far-valid sequence at the end of `s` that is the number of bytes left.
size_t utf8_sequence_len(std::string_view s, size_t pos, size_t* maximal_subpart = nullptr);

// True when `s` is entirely well-formed UTF-8.
bool utf8_is_valid(std::string_view s);

// Replaces every ill-formed subsequence of `s` by U+FFFD, one per maximal subpart (the policy of
// Unicode 3.9 "U+FFFD substitution of maximal subparts", used by Rust's from_utf8_lossy and
// Python's bytes.decode(errors="replace")).
std::string utf8_lossy(std::string_view s);

// Rust char::is_whitespace (the Unicode White_Space property).
bool is_whitespace(char32_t cp);
// Rust char::is_numeric (general categories Nd, Nl, No).
bool is_numeric(char32_t cp);
// Rust regex `\w` (alphabetic, marks, decimal numbers, connector punctuation, join controls).
bool is_word_char(char32_t cp);
// General category M (Mn, Mc, Me).
bool is_combining_mark(char32_t cp);

// Appends the full lowercase mapping of `cp` (one or more code points, as Rust's
// char::to_lowercase, without context-dependent rules such as final sigma).
void append_lowercase(std::string& out, char32_t cp);

enum class NormalForm { kNFC, kNFD, kNFKC, kNFKD };
// Normalizes valid UTF-8 `s` to the given Unicode normalization form.
std::string unicode_normalize(std::string_view s, NormalForm form);

}  // namespace trellis::tok
