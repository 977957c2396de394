// runtime/jinja_lexer.h: splits a Jinja2 template into text and tag tokens.
//
// Goals: jinja2's lexer as transformers configures it (trim_blocks, lstrip_blocks, no
// keep_trailing_newline, default delimiters), so that the text between tags is exactly the text
// jinja2 outputs: newline normalization, one trailing newline dropped, `{%-`/`-%}` stripping,
// `+` modifiers, trim_blocks eating the newline after `%}`/`#}`, lstrip_blocks removing the
// indentation before `{%`/`{#`, comments and {% raw %} blocks. Python string-literal escapes are
// decoded here. Non-goals: line statements, custom delimiters.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/jinja_value.h"

namespace trellis::jinja {

enum class TokenType {
  kData,           // template text, already whitespace-controlled
  kVariableBegin,  // {{
  kVariableEnd,    // }}
  kBlockBegin,     // {%
  kBlockEnd,       // %}
  kName,
  kString,   // text holds the decoded value
  kInteger,  // int_value
  kFloat,    // float_value
  kOperator,  // text holds the operator: + - * / // % ** ~ == != < <= > >= = . : | , ; ( ) [ ] { }
  kEof,
};

struct Token {
  TokenType type = TokenType::kEof;
  std::string text;
  int64_t int_value = 0;
  double float_value = 0.0;
  SourcePos pos;
};

// Tokenizes `source`. Throws trellis::Error(kFormat) with the line and column for malformed tags
// (unterminated tag/comment/string, unbalanced brackets, unknown characters).
std::vector<Token> tokenize(const std::string& source);

}  // namespace trellis::jinja
