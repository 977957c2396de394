// runtime/jinja_json.h: JSON in and out of chat-template values.
//
// Goals: the template sees JSON exactly as Python's json.load would hand it over (objects keep
// their key order when the caller's JSON type does: nlohmann::ordered_json keeps insertion order,
// nlohmann::json sorts keys), and `tojson` writes what Python's json.dumps writes with
// transformers' arguments (ensure_ascii=False by default, indent, separators, sort_keys).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "runtime/jinja_value.h"

namespace trellis::jinja {

// Converts JSON to a template value. Throws kUnsupported for unsigned integers above INT64_MAX and
// binary values.
Value value_from_json(const nlohmann::json& j);
Value value_from_json(const nlohmann::ordered_json& j);

struct JsonDumpOptions {
  bool ensure_ascii = false;
  std::optional<std::string> indent;  // absent: single line
  std::string item_separator = ", ";  // Python's default; "," when indent is given
  std::string key_separator = ": ";
  bool sort_keys = false;
};

// Python's json.dumps(v, ...). Throws kFormat with Python's message for values JSON cannot hold
// (Undefined, namespaces, functions) and for dict keys that are not str/int/float/bool/None.
std::string py_json_dumps(const Value& v, const JsonDumpOptions& options);

}  // namespace trellis::jinja
