// runtime/jinja_builtins.h: jinja2's filters, tests and globals, and the Python methods of str,
// dict and list that chat templates call, with transformers' overrides (tojson, raise_exception,
// strftime_now, dict, namespace).
//
// Goals: each builtin returns what jinja2 3.1 returns for the inputs chat templates give it,
// including its quirks (case-insensitive sort/unique/min/max, `default` ignoring None, `round`
// returning a float, `indent`'s first-line rule). Non-goals: HTML-oriented filters (urlize,
// striptags, xmlattr, ...), which fail with kUnsupported when a template reaches them.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "runtime/jinja_value.h"

namespace trellis::jinja {

// Whether jinja2 (with transformers' additions) knows a filter / test by this name. The parser
// rejects other names with kFormat, as jinja2 does when compiling.
bool is_jinja2_filter(std::string_view name);
bool is_jinja2_test(std::string_view name);

Value apply_filter(Interpreter& in, const std::string& name, const Value& operand,
                   const CallArgs& args);
bool apply_test(Interpreter& in, const std::string& name, const Value& operand,
                const CallArgs& args);

// The Python method `name` of `obj` bound to it (str, dict, list and float methods), or nullopt
// when the type has no such attribute. Methods that would mutate (list.append, dict.update, ...)
// resolve to a callable that fails with kUnsupported, as the immutable sandbox refuses them.
std::optional<Value> find_method(const Value& obj, const std::string& name);

// The global functions: range, dict, namespace, raise_exception, strftime_now, plus jinja2's
// cycler/joiner/lipsum, which fail with kUnsupported when called.
Value make_globals();

}  // namespace trellis::jinja
