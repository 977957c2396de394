// runtime/jinja_args.h: argument helpers shared by the builtin filters, tests and methods.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "core/error.h"
#include "runtime/jinja_interpreter.h"
#include "runtime/jinja_value.h"

namespace trellis::jinja {

// The string argument at `index` / named `name`, or `fallback` when absent (nullopt: required).
inline std::optional<std::string> string_arg(Interpreter& in, const CallArgs& args, size_t index,
                                             std::string_view name, std::string_view function,
                                             bool required = false) {
  const Value* v = args.get(index, name);
  if (!v || v->is_none()) {
    if (required)
      in.error(ErrorKind::kFormat, args.pos, fmt::format("{}() missing argument '{}'", function, name));
    return std::nullopt;
  }
  if (v->is_undefined()) in.undefined_error(*v, args.pos);
  if (!v->is_string())
    in.error(ErrorKind::kFormat, args.pos,
             fmt::format("{}() argument '{}' must be str, not {}", function, name, v->type_name()));
  return v->as_string();
}

inline std::optional<int64_t> int_arg(Interpreter& in, const CallArgs& args, size_t index,
                                      std::string_view name, std::string_view function) {
  const Value* v = args.get(index, name);
  if (!v || v->is_none()) return std::nullopt;
  if (v->is_undefined()) in.undefined_error(*v, args.pos);
  if (!v->is_int() && !v->is_bool())
    in.error(ErrorKind::kFormat, args.pos,
             fmt::format("{}() argument '{}' must be int, not {}", function, name, v->type_name()));
  return v->as_int();
}

inline bool bool_arg(const CallArgs& args, size_t index, std::string_view name, bool fallback) {
  const Value* v = args.get(index, name);
  return v ? v->truthy() : fallback;
}

// str() of a value as jinja2's soft_str sees it (Undefined is "").
inline std::string text(Interpreter& in, const Value& v, SourcePos pos) {
  try {
    return py_str(v);
  } catch (const Error& e) {
    in.error(e.kind(), pos, e.what());
  }
}

// CallArgs holding the positional arguments from `first` on, and all keyword arguments.
inline CallArgs shift_args(const CallArgs& args, size_t first) {
  CallArgs out;
  out.pos = args.pos;
  for (size_t i = first; i < args.positional.size(); ++i) out.positional.push_back(args.positional[i]);
  out.keyword = args.keyword;
  return out;
}

}  // namespace trellis::jinja
