// runtime/jinja_json.cpp: JSON conversion and Python-compatible json.dumps (see jinja_json.h).
#include "runtime/jinja_json.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "runtime/jinja_text.h"

namespace trellis::jinja {
namespace {

template <typename Json>
Value convert(const Json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null:
      return Value::none();
    case nlohmann::json::value_t::boolean:
      return Value(j.template get<bool>());
    case nlohmann::json::value_t::number_integer:
      return Value(j.template get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      const uint64_t u = j.template get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX))
        fail(ErrorKind::kUnsupported, "chat template input: integer {} does not fit in 64 bits", u);
      return Value(static_cast<int64_t>(u));
    }
    case nlohmann::json::value_t::number_float:
      return Value(j.template get<double>());
    case nlohmann::json::value_t::string:
      return Value(j.template get<std::string>());
    case nlohmann::json::value_t::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(convert(e));
      return Value::list(std::move(items));
    }
    case nlohmann::json::value_t::object: {
      Value d = Value::dict();
      for (auto it = j.begin(); it != j.end(); ++it)
        d.mutable_dict().entries.emplace_back(Value(it.key()), convert(it.value()));
      return d;
    }
    default:
      fail(ErrorKind::kUnsupported, "chat template input: binary JSON values are not supported");
  }
}

void dump_string(std::string& out, const std::string& s, bool ensure_ascii) {
  out.push_back('"');
  char buf[16];
  for (char32_t c : utf8_decode(s)) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
          out += buf;
        } else if (ensure_ascii && c >= 0x80) {
          if (c > 0x10FFFF) c = 0xDC00 + (c - 0x110000);  // raw byte: Python's surrogate escape
          if (c >= 0x10000) {
            const unsigned v = static_cast<unsigned>(c) - 0x10000;
            std::snprintf(buf, sizeof buf, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
          } else {
            std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
          }
          out += buf;
        } else {
          utf8_append(out, c);
        }
    }
  }
  out.push_back('"');
}

std::string float_text(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d < 0 ? "-Infinity" : "Infinity";
  return py_format_float(d);
}

// A dict key as json.dumps converts it, or nullopt when Python raises TypeError.
std::optional<std::string> key_text(const Value& k) {
  if (k.is_string()) return k.as_string();
  if (k.is_bool()) return std::string(k.as_bool() ? "true" : "false");
  if (k.is_int()) return std::to_string(k.as_int());
  if (k.is_float()) return float_text(k.as_float());
  if (k.is_none()) return std::string("null");
  return std::nullopt;
}

void dump(std::string& out, const Value& v, const JsonDumpOptions& o, int level) {
  auto newline = [&](int lvl) {
    out.push_back('\n');
    for (int i = 0; i < lvl; ++i) out += *o.indent;
  };
  if (v.is_none()) {
    out += "null";
  } else if (v.is_bool()) {
    out += v.as_bool() ? "true" : "false";
  } else if (v.is_int()) {
    out += std::to_string(v.as_int());
  } else if (v.is_float()) {
    out += float_text(v.as_float());
  } else if (v.is_string()) {
    dump_string(out, v.as_string(), o.ensure_ascii);
  } else if (v.is_list()) {
    if (!v.is_plain_list()) fail(ErrorKind::kFormat, "Object of type {} is not JSON serializable", v.type_name());
    const auto& items = v.as_list().items;
    if (items.empty()) {
      out += "[]";
      return;
    }
    out.push_back('[');
    for (size_t i = 0; i < items.size(); ++i) {
      if (i) out += o.item_separator;
      if (o.indent) newline(level + 1);
      dump(out, items[i], o, level + 1);
    }
    if (o.indent) newline(level);
    out.push_back(']');
  } else if (v.is_dict()) {
    const auto& entries = v.as_dict().entries;
    if (entries.empty()) {
      out += "{}";
      return;
    }
    std::vector<std::pair<std::string, const Value*>> items;
    for (const auto& [k, val] : entries) {
      std::optional<std::string> key = key_text(k);
      if (!key)
        fail(ErrorKind::kFormat, "tojson: keys must be str, int, float, bool or None, not {}", k.type_name());
      items.emplace_back(std::move(*key), &val);
    }
    if (o.sort_keys) {
      for (const auto& [k, val] : entries)
        if (!k.is_string())
          fail(ErrorKind::kUnsupported, "tojson(sort_keys=true) with non-string keys");
      std::stable_sort(items.begin(), items.end(),
                       [](const auto& a, const auto& b) { return a.first < b.first; });
    }
    out.push_back('{');
    for (size_t i = 0; i < items.size(); ++i) {
      if (i) out += o.item_separator;
      if (o.indent) newline(level + 1);
      dump_string(out, items[i].first, o.ensure_ascii);
      out += o.key_separator;
      dump(out, *items[i].second, o, level + 1);
    }
    if (o.indent) newline(level);
    out.push_back('}');
  } else {
    fail(ErrorKind::kFormat, "Object of type {} is not JSON serializable", v.type_name());
  }
}

}  // namespace

Value value_from_json(const nlohmann::json& j) { return convert(j); }
Value value_from_json(const nlohmann::ordered_json& j) { return convert(j); }

std::string py_json_dumps(const Value& v, const JsonDumpOptions& options) {
  std::string out;
  dump(out, v, options, 0);
  return out;
}

}  // namespace trellis::jinja
