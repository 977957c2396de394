// runtime/jinja_lexer.cpp: jinja2's lexer with transformers' settings (see jinja_lexer.h).
#include "runtime/jinja_lexer.h"

#include <cstdio>
#include <string_view>

#include "core/error.h"
#include "runtime/jinja_text.h"

namespace trellis::jinja {
namespace {

bool is_ascii_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_name_start(char c) { return c == '_' || ((c | 32) >= 'a' && (c | 32) <= 'z'); }
bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }

class Lexer {
 public:
  explicit Lexer(std::string source) : src_(std::move(source)) {
    // jinja2 splits on \r\n, \r and \n, drops one trailing newline, and rejoins with \n.
    std::string norm;
    norm.reserve(src_.size());
    for (size_t i = 0; i < src_.size(); ++i) {
      if (src_[i] == '\r') {
        norm.push_back('\n');
        if (i + 1 < src_.size() && src_[i + 1] == '\n') ++i;
      } else {
        norm.push_back(src_[i]);
      }
    }
    if (!norm.empty() && norm.back() == '\n') norm.pop_back();
    src_ = std::move(norm);
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i)
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
  }

  std::vector<Token> run() {
    size_t pos = 0;
    bool line_starting = true;
    while (pos < src_.size()) {
      size_t tag = find_tag_start(pos);
      if (tag == std::string::npos) {
        emit_data(src_.substr(pos), pos);
        break;
      }
      const char kind = src_[tag + 1];  // '{', '%' or '#'
      size_t raw_end = 0;
      const bool raw = kind == '%' && match_raw_begin(tag, &raw_end);
      const char sign = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
      emit_data(control_text(src_.substr(pos, tag - pos), sign, kind != '{', line_starting), pos);
      if (raw) {
        line_starting = src_[raw_end - 1] == '\n';
        pos = lex_raw_body(raw_end, line_starting, &line_starting);
      } else if (kind == '#') {
        pos = skip_comment(tag, &line_starting);
      } else {
        pos = lex_tag(tag, kind == '%', &line_starting);
      }
    }
    Token eof;
    eof.type = TokenType::kEof;
    eof.pos = pos_at(src_.size());
    tokens_.push_back(eof);
    return std::move(tokens_);
  }

 private:
  SourcePos pos_at(size_t offset) const {
    size_t lo = 0, hi = line_starts_.size();
    while (hi - lo > 1) {
      const size_t mid = (lo + hi) / 2;
      if (line_starts_[mid] <= offset) lo = mid; else hi = mid;
    }
    return SourcePos{static_cast<int>(lo + 1), static_cast<int>(offset - line_starts_[lo] + 1)};
  }

  [[noreturn]] void syntax_error(size_t offset, const std::string& what) const {
    const SourcePos p = pos_at(offset);
    fail(ErrorKind::kFormat, "chat template line {}, column {}: {}", p.line, p.column, what);
  }

  size_t find_tag_start(size_t from) const {
    for (size_t i = from; i + 1 < src_.size(); ++i) {
      if (src_[i] == '{' && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#'))
        return i;
    }
    return std::string::npos;
  }

  // Length of the Python-whitespace run (\s) starting at `pos`.
  size_t space_run(size_t pos) const {
    size_t i = pos;
    while (i < src_.size()) {
      const auto b = static_cast<unsigned char>(src_[i]);
      if (b < 0x80) {
        if (!py_isspace(b)) break;
        ++i;
        continue;
      }
      const size_t len = (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3 : 4;
      const std::u32string cp = utf8_decode(std::string_view(src_).substr(i, len));
      if (cp.size() != 1 || !py_isspace(cp[0])) break;
      i += len;
    }
    return i - pos;
  }

  // `{%[-+]?\s*raw\s*(-%}\s*|%})` at `tag`; *end is just past it.
  bool match_raw_begin(size_t tag, size_t* end) const {
    size_t i = tag + 2;
    if (i < src_.size() && (src_[i] == '-' || src_[i] == '+')) ++i;
    i += space_run(i);
    if (src_.compare(i, 3, "raw") != 0) return false;
    i += 3;
    i += space_run(i);
    if (src_.compare(i, 3, "-%}") == 0) {
      i += 3;
      i += space_run(i);
    } else if (src_.compare(i, 2, "%}") == 0) {
      i += 2;
    } else {
      return false;
    }
    *end = i;
    return true;
  }

  // The whitespace control jinja2 applies to the text before a tag: '-' strips all trailing
  // whitespace; otherwise lstrip_blocks removes the tag's indentation when only spaces precede it
  // on its line ('+' and {{ }} tags opt out).
  std::string control_text(std::string text, char sign, bool lstrip_kind, bool line_starting) const {
    if (sign == '-') return py_strip(text, StripSide::kRight, std::nullopt);
    if (sign == '+' || !lstrip_kind) return text;
    const size_t nl = text.rfind('\n');
    const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
    if (l_pos == 0 && !line_starting) return text;
    const std::string_view tail = std::string_view(text).substr(l_pos);
    if (tail.empty()) return text;
    const std::u32string cps = utf8_decode(tail);
    for (char32_t c : cps)
      if (!py_isspace(c)) return text;
    return text.substr(0, l_pos);
  }

  void emit_data(std::string text, size_t offset) {
    if (text.empty()) return;
    Token t;
    t.type = TokenType::kData;
    t.text = std::move(text);
    t.pos = pos_at(offset);
    tokens_.push_back(std::move(t));
  }

  // After `%}` / `#}` (at `end`, just past the delimiter): trim_blocks eats one newline.
  size_t after_block_end(size_t end) const {
    return (end < src_.size() && src_[end] == '\n') ? end + 1 : end;
  }

  size_t skip_comment(size_t tag, bool* line_starting) {
    const size_t body = tag + 2 + ((src_[tag + 2] == '-' || src_[tag + 2] == '+') ? 1 : 0);
    const size_t close = src_.find("#}", body);
    if (close == std::string::npos) syntax_error(tag, "missing end of comment tag");
    size_t end;
    if (close > body && src_[close - 1] == '-') {
      end = close + 2 + space_run(close + 2);
    } else if (close > body && src_[close - 1] == '+') {
      end = close + 2;
    } else {
      end = after_block_end(close + 2);
    }
    *line_starting = src_[end - 1] == '\n';
    return end;
  }

  size_t lex_raw_body(size_t body, bool line_starting, bool* line_starting_out) {
    // Find `{%[-+]?\s*endraw\s*(+%}|-%}\s*|%}\n?)`.
    for (size_t i = src_.find("{%", body); i != std::string::npos; i = src_.find("{%", i + 1)) {
      size_t j = i + 2;
      const char sign = j < src_.size() ? src_[j] : '\0';
      if (sign == '-' || sign == '+') ++j;
      j += space_run(j);
      if (src_.compare(j, 6, "endraw") != 0) continue;
      j += 6;
      j += space_run(j);
      size_t end;
      if (src_.compare(j, 3, "+%}") == 0) {
        end = j + 3;
      } else if (src_.compare(j, 3, "-%}") == 0) {
        end = j + 3 + space_run(j + 3);
      } else if (src_.compare(j, 2, "%}") == 0) {
        end = after_block_end(j + 2);
      } else {
        continue;
      }
      emit_data(control_text(src_.substr(body, i - body), sign, true, line_starting), body);
      *line_starting_out = src_[end - 1] == '\n';
      return end;
    }
    syntax_error(body, "missing end of raw directive");
  }

  size_t lex_tag(size_t tag, bool block, bool* line_starting) {
    Token begin;
    begin.type = block ? TokenType::kBlockBegin : TokenType::kVariableBegin;
    begin.pos = pos_at(tag);
    tokens_.push_back(begin);
    size_t i = tag + 2;
    if (i < src_.size() && (src_[i] == '-' || src_[i] == '+')) ++i;
    std::string balance;  // expected closing brackets
    while (true) {
      if (i >= src_.size()) syntax_error(tag, block ? "unexpected end of template, expected '%}'"
                                                    : "unexpected end of template, expected '}}'");
      if (balance.empty()) {
        size_t end = 0;
        if (block) {
          if (src_.compare(i, 3, "+%}") == 0) end = i + 3;
          else if (src_.compare(i, 3, "-%}") == 0) end = i + 3 + space_run(i + 3);
          else if (src_.compare(i, 2, "%}") == 0) end = after_block_end(i + 2);
        } else {
          if (src_.compare(i, 3, "-}}") == 0) end = i + 3 + space_run(i + 3);
          else if (src_.compare(i, 2, "}}") == 0) end = i + 2;
        }
        if (end) {
          Token t;
          t.type = block ? TokenType::kBlockEnd : TokenType::kVariableEnd;
          t.pos = pos_at(i);
          tokens_.push_back(t);
          *line_starting = src_[end - 1] == '\n';
          return end;
        }
      }
      const char c = src_[i];
      if (is_ascii_space(c) || static_cast<unsigned char>(c) >= 0x80) {
        const size_t n = space_run(i);
        if (n == 0) syntax_error(i, "unexpected character in tag");
        i += n;
        continue;
      }
      Token t;
      t.pos = pos_at(i);
      if (size_t n = match_float(i)) {
        t.type = TokenType::kFloat;
        std::string digits;
        for (size_t k = i; k < i + n; ++k)
          if (src_[k] != '_') digits.push_back(src_[k]);
        t.float_value = std::strtod(digits.c_str(), nullptr);
        i += n;
      } else if (is_digit(c)) {
        i = lex_integer(i, &t);
      } else if (is_name_start(c)) {
        size_t j = i;
        while (j < src_.size() && is_name_char(src_[j])) ++j;
        t.type = TokenType::kName;
        t.text = src_.substr(i, j - i);
        i = j;
      } else if (c == '\'' || c == '"') {
        i = lex_string(i, &t);
      } else {
        static const char* const kOps[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*",
                                           "%",  "~",  "[",  "]",  "(",  ")",  "{", "}", ">", "<",
                                           "=",  ".",  ":",  "|",  ",",  ";"};
        const char* op = nullptr;
        for (const char* cand : kOps) {
          if (src_.compare(i, std::char_traits<char>::length(cand), cand) == 0) {
            op = cand;
            break;
          }
        }
        if (!op) syntax_error(i, fmt::format("unexpected character '{}'", c));
        t.type = TokenType::kOperator;
        t.text = op;
        i += t.text.size();
        if (t.text == "(" || t.text == "[" || t.text == "{") {
          balance.push_back(t.text == "(" ? ')' : t.text == "[" ? ']' : '}');
        } else if (t.text == ")" || t.text == "]" || t.text == "}") {
          if (balance.empty()) syntax_error(i - 1, fmt::format("unexpected '{}'", t.text));
          if (balance.back() != t.text[0])
            syntax_error(i - 1, fmt::format("unexpected '{}', expected '{}'", t.text, balance.back()));
          balance.pop_back();
        }
      }
      tokens_.push_back(std::move(t));
    }
  }

  // Digits with single '_' separators: `(\d+_)*\d+`; returns the length matched (0 if none).
  size_t digit_run(size_t i) const {
    size_t j = i;
    if (j >= src_.size() || !is_digit(src_[j])) return 0;
    while (j < src_.size()) {
      if (is_digit(src_[j])) {
        ++j;
      } else if (src_[j] == '_' && j + 1 < src_.size() && is_digit(src_[j + 1])) {
        ++j;
      } else {
        break;
      }
    }
    return j - i;
  }

  // jinja2's float_re: digits then a fraction and/or an exponent, not directly after a '.'.
  size_t match_float(size_t i) const {
    if (i > 0 && src_[i - 1] == '.') return 0;
    const size_t int_len = digit_run(i);
    if (!int_len) return 0;
    size_t j = i + int_len;
    bool fraction = false;
    if (j < src_.size() && src_[j] == '.') {
      if (size_t f = digit_run(j + 1)) {
        j += 1 + f;
        fraction = true;
      }
    }
    if (j < src_.size() && (src_[j] | 32) == 'e') {
      size_t k = j + 1;
      if (k < src_.size() && (src_[k] == '+' || src_[k] == '-')) ++k;
      if (size_t e = digit_run(k)) return k + e - i;
    }
    return fraction ? j - i : 0;
  }

  size_t lex_integer(size_t i, Token* t) const {
    t->type = TokenType::kInteger;
    int base = 10;
    size_t j = i;
    if (src_[i] == '0' && i + 1 < src_.size()) {
      const char p = static_cast<char>(src_[i + 1] | 32);
      base = p == 'b' ? 2 : p == 'o' ? 8 : p == 'x' ? 16 : 10;
    }
    auto digit_ok = [&](char c) {
      if (base == 2) return c == '0' || c == '1';
      if (base == 8) return c >= '0' && c <= '7';
      if (base == 16) return is_digit(c) || ((c | 32) >= 'a' && (c | 32) <= 'f');
      return is_digit(c);
    };
    std::string digits;
    if (base != 10) {
      j = i + 2;
      while (j < src_.size()) {
        if (src_[j] == '_' && j + 1 < src_.size() && digit_ok(src_[j + 1])) ++j;
        if (!digit_ok(src_[j])) break;
        digits.push_back(src_[j++]);
      }
      if (digits.empty()) {  // "0x" alone lexes as the integer 0 followed by a name
        base = 10;
        j = i;
      }
    }
    if (base == 10) {
      digits.clear();
      // `[1-9](_?\d)*` or `0(_?0)*`
      const bool zero = src_[i] == '0';
      j = i;
      digits.push_back(src_[j++]);
      while (j < src_.size()) {
        const size_t k = (src_[j] == '_') ? j + 1 : j;
        if (k >= src_.size() || !(zero ? src_[k] == '0' : is_digit(src_[k]))) break;
        digits.push_back(src_[k]);
        j = k + 1;
      }
    }
    errno = 0;
    const unsigned long long v = std::strtoull(digits.c_str(), nullptr, base);
    if (errno == ERANGE || v > static_cast<unsigned long long>(INT64_MAX))
      syntax_error(i, "integer literal does not fit in 64 bits");
    t->int_value = static_cast<int64_t>(v);
    return j;
  }

  int hex_value(size_t at, size_t count, size_t lit_start) const {
    int v = 0;
    for (size_t k = at; k < at + count; ++k) {
      const char c = k < src_.size() ? src_[k] : '\0';
      int d;
      if (is_digit(c)) d = c - '0';
      else if ((c | 32) >= 'a' && (c | 32) <= 'f') d = (c | 32) - 'a' + 10;
      else syntax_error(lit_start, "truncated escape in string literal");
      v = v * 16 + d;
    }
    return v;
  }

  // A Python string literal; the value is decoded like jinja2 does (unicode-escape).
  size_t lex_string(size_t i, Token* t) const {
    const char quote = src_[i];
    std::string out;
    size_t j = i + 1;
    while (true) {
      if (j >= src_.size()) syntax_error(i, "unterminated string literal");
      const char c = src_[j];
      if (c == quote) break;
      if (c != '\\') {
        out.push_back(c);
        ++j;
        continue;
      }
      if (j + 1 >= src_.size()) syntax_error(i, "unterminated string literal");
      const char e = src_[j + 1];
      j += 2;
      switch (e) {
        case '\n': break;
        case '\\': out.push_back('\\'); break;
        case '\'': out.push_back('\''); break;
        case '"': out.push_back('"'); break;
        case 'a': out.push_back('\a'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'v': out.push_back('\v'); break;
        case 'x': utf8_append(out, static_cast<char32_t>(hex_value(j, 2, i))); j += 2; break;
        case 'u': utf8_append(out, static_cast<char32_t>(hex_value(j, 4, i))); j += 4; break;
        case 'U': {
          const unsigned hi = static_cast<unsigned>(hex_value(j, 4, i));
          const unsigned lo = static_cast<unsigned>(hex_value(j + 4, 4, i));
          const unsigned cp = (hi << 16) | lo;
          if (cp > 0x10FFFF) syntax_error(i, "illegal Unicode character in string literal");
          utf8_append(out, cp);
          j += 8;
          break;
        }
        case 'N':
          fail(ErrorKind::kUnsupported, "chat template line {}, column {}: \\N{{...}} escapes in "
               "string literals are not supported", pos_at(i).line, pos_at(i).column);
        default:
          if (e >= '0' && e <= '7') {
            unsigned v = static_cast<unsigned>(e - '0');
            for (int k = 0; k < 2 && j < src_.size() && src_[j] >= '0' && src_[j] <= '7'; ++k)
              v = v * 8 + static_cast<unsigned>(src_[j++] - '0');
            utf8_append(out, v);
          } else if (static_cast<unsigned char>(e) >= 0x80) {
            // jinja2 backslash-replaces non-ASCII text before decoding, so "\é" reads as "\xe9".
            size_t len = 1;
            while (j - 1 + len < src_.size() &&
                   (static_cast<unsigned char>(src_[j - 1 + len]) & 0xC0) == 0x80)
              ++len;
            const std::u32string cp = utf8_decode(std::string_view(src_).substr(j - 1, len));
            char buf[16];
            const unsigned v = static_cast<unsigned>(cp[0]);
            std::snprintf(buf, sizeof buf, v < 0x100 ? "\\x%02x" : v < 0x10000 ? "\\u%04x" : "\\U%08x", v);
            out += buf;
            j += len - 1;
          } else {
            out.push_back('\\');
            out.push_back(e);
          }
      }
    }
    t->type = TokenType::kString;
    t->text = std::move(out);
    return j + 1;
  }

  std::string src_;
  std::vector<size_t> line_starts_;
  std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> tokenize(const std::string& source) { return Lexer(source).run(); }

}  // namespace trellis::jinja
