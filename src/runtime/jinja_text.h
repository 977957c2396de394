// runtime/jinja_text.h: Python's string rules over UTF-8 text, for the chat-template interpreter.
//
// Goals: the pieces of CPython's str behaviour that chat templates reach (code-point length and
// slicing, str.isspace() whitespace for strip/split, repr() quoting, float repr) reproduced exactly
// for UTF-8 data. Invalid UTF-8 survives a decode/encode round trip unchanged (each bad byte becomes
// a private code point above U+10FFFF), so no input byte is ever lost or altered.
// Non-goals: full Unicode case mapping (upper/lower use the C library's simple per-character
// mapping, which differs from Python for the few characters whose case changes length, like 'ß').
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace trellis::jinja {

std::u32string utf8_decode(std::string_view s);
std::string utf8_encode(std::u32string_view s);
void utf8_append(std::string& out, char32_t c);
// Number of code points (what Python's len() gives).
size_t utf8_length(std::string_view s);

// Python's str.isspace() for one code point.
bool py_isspace(char32_t c);

enum class StripSide { kBoth, kLeft, kRight };
// Python's str.strip/lstrip/rstrip: `chars` absent strips whitespace (py_isspace), otherwise any of
// the code points in *chars.
std::string py_strip(std::string_view s, StripSide side, const std::optional<std::string>& chars);
// Python's str.split(sep, maxsplit) / rsplit; an absent sep splits on runs of whitespace. Empty sep
// is rejected by the caller.
std::vector<std::string> py_split(std::string_view s, const std::optional<std::string>& sep,
                                  int64_t maxsplit, bool from_right);
// Python's str.splitlines() (without keepends).
std::vector<std::string> py_splitlines(std::string_view s);
// Python's str.replace(old, new, count); count < 0 replaces all.
std::string py_replace(std::string_view s, std::string_view old_text, std::string_view new_text,
                       int64_t count);

// Case mapping per code point (ASCII exactly, other scripts through the C library's tables).
std::string py_upper(std::string_view s);
std::string py_lower(std::string_view s);
std::string py_capitalize(std::string_view s);  // first upper, rest lower
bool py_is_cased_upper(std::string_view s);     // str.isupper()
bool py_is_cased_lower(std::string_view s);     // str.islower()
char32_t char_upper(char32_t c);
char32_t char_lower(char32_t c);
// Word characters as Python's re \w sees them (letters, digits, underscore; non-ASCII letters
// approximated by the C library's iswalnum).
bool py_is_word_char(char32_t c);

// Python's repr() of a str: picks ' or " like CPython and escapes what it escapes.
std::string py_repr_string(std::string_view s);
// Python's repr()/str() of a float: shortest round-trip digits, fixed notation for exponents in
// [-4, 16), otherwise d.ddde+XX; "inf", "-inf", "nan".
std::string py_format_float(double d);

}  // namespace trellis::jinja
