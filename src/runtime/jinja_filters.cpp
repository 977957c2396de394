// runtime/jinja_filters.cpp: jinja2's builtin filters and tests (see jinja_builtins.h).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "runtime/jinja_args.h"
#include "runtime/jinja_builtins.h"
#include "runtime/jinja_json.h"
#include "runtime/jinja_text.h"

namespace trellis::jinja {
namespace {

constexpr std::string_view kJinjaFilters[] = {
    "abs",     "attr",      "batch",   "capitalize", "center",    "count",          "d",
    "default", "dictsort",  "e",       "escape",     "filesizeformat", "first",     "float",
    "forceescape", "format", "groupby", "indent",    "int",       "join",           "last",
    "length",  "list",      "lower",   "items",      "map",       "min",            "max",
    "pprint",  "random",    "reject",  "rejectattr", "replace",   "reverse",        "round",
    "safe",    "select",    "selectattr", "slice",   "sort",      "string",         "striptags",
    "sum",     "title",     "trim",    "truncate",   "unique",    "upper",          "urlencode",
    "urlize",  "wordcount", "wordwrap", "xmlattr",   "tojson"};

constexpr std::string_view kJinjaTests[] = {
    "odd",      "even",   "divisibleby", "defined", "undefined", "filter",   "test",
    "none",     "boolean", "false",      "true",    "integer",   "float",    "lower",
    "upper",    "string", "mapping",     "number",  "sequence",  "iterable", "callable",
    "sameas",   "escaped", "in",         "==",      "eq",        "equalto",  "!=",
    "ne",       ">",      "gt",          "greaterthan", "ge",    ">=",       "<",
    "lt",       "lessthan", "<=",        "le"};

[[noreturn]] void unsupported_filter(Interpreter& in, const CallArgs& args, const std::string& name) {
  in.error(ErrorKind::kUnsupported, args.pos, fmt::format("the '{}' filter is not supported", name));
}

// jinja2's make_attrgetter: "a.b.0" looks up a, then b, then item 0, each via getitem.
Value get_attribute_path(Interpreter& in, const Value& item, const std::string& path, SourcePos pos) {
  Value cur = item;
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    const std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const bool digits = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
    cur = in.get_item(cur, digits ? Value(static_cast<int64_t>(std::stoll(part))) : Value(part), pos);
    if (dot == std::string::npos) return cur;
    start = dot + 1;
  }
}

// jinja2's generator-returning filters, computed eagerly: the items produced before an error are
// kept and the error is raised only when a consumer reaches it, as iterating the generator would.
// (Known difference: a generator used as the input of another filter's result that is never
// consumed is still consumed here.)
template <typename Produce>
Value lazy_generator(Produce&& produce) {
  std::vector<Value> out;
  std::shared_ptr<const Error> deferred;
  try {
    produce(out);
  } catch (const Error& e) {
    deferred = std::make_shared<const Error>(e);
  }
  Value g = Value::view(std::move(out), SeqView::kIterator, "generator");
  g.list_ptr()->deferred = std::move(deferred);
  return g;
}

Value lower_if_string(const Value& v) { return v.is_string() ? Value(py_lower(v.as_string())) : v; }

int64_t length_of(Interpreter& in, const Value& v, SourcePos pos) {
  if (v.is_undefined()) return 0;
  if (v.is_string()) return static_cast<int64_t>(utf8_length(v.as_string()));
  if (v.is_iterator()) in.error(ErrorKind::kFormat, pos, "object of type 'generator' has no len()");
  if (v.is_list()) return static_cast<int64_t>(v.as_list().items.size());
  if (v.is_dict()) return static_cast<int64_t>(v.as_dict().entries.size());
  in.error(ErrorKind::kFormat, pos, fmt::format("object of type '{}' has no len()", v.type_name()));
}

// Stable sort by key with Python's ordering; TypeError for mixed types.
void sort_values(Interpreter& in, std::vector<std::pair<Value, Value>>& keyed, bool reverse, SourcePos pos) {
  auto less = [&](const Value& a, const Value& b) {
    bool ok = true;
    const bool r = py_less(a, b, &ok);
    if (!ok)
      in.error(ErrorKind::kFormat, pos, fmt::format("'<' not supported between instances of '{}' and '{}'",
                                                    a.type_name(), b.type_name()));
    return r;
  };
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
    return reverse ? less(y.first, x.first) : less(x.first, y.first);
  });
}

std::optional<double> parse_python_float(std::string s) {
  s = py_strip(s, StripSide::kBoth, std::nullopt);
  std::string clean;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '_') {
      if (i == 0 || i + 1 == s.size() || !isdigit(static_cast<unsigned char>(s[i - 1])) ||
          !isdigit(static_cast<unsigned char>(s[i + 1])))
        return std::nullopt;
      continue;
    }
    clean.push_back(s[i]);
  }
  if (clean.empty()) return std::nullopt;
  std::string lower = py_lower(clean);
  const std::string body = (lower[0] == '+' || lower[0] == '-') ? lower.substr(1) : lower;
  if (body == "inf" || body == "infinity" || body == "nan") {
    const double v = body == "nan" ? NAN : INFINITY;
    return lower[0] == '-' ? -v : v;
  }
  for (char c : body)
    if (!(isdigit(static_cast<unsigned char>(c)) || c == '.' || c == 'e' || c == '+' || c == '-'))
      return std::nullopt;
  char* end = nullptr;
  const double v = std::strtod(clean.c_str(), &end);
  if (end != clean.c_str() + clean.size()) return std::nullopt;
  return v;
}

std::optional<int64_t> parse_python_int(std::string s, int base) {
  s = py_strip(s, StripSide::kBoth, std::nullopt);
  std::string clean;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '_' && i > 0 && i + 1 < s.size() && isalnum(static_cast<unsigned char>(s[i - 1])) &&
        isalnum(static_cast<unsigned char>(s[i + 1])))
      continue;
    clean.push_back(s[i]);
  }
  if (clean.empty()) return std::nullopt;
  size_t i = (clean[0] == '+' || clean[0] == '-') ? 1 : 0;
  if (i >= clean.size()) return std::nullopt;
  for (size_t k = i; k < clean.size(); ++k)
    if (!isalnum(static_cast<unsigned char>(clean[k]))) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(clean.c_str(), &end, base);
  if (errno == ERANGE || end != clean.c_str() + clean.size()) return std::nullopt;
  return v;
}

Value filter_tojson(Interpreter& in, const Value& v, const CallArgs& args) {
  args.check("tojson", 4, {"ensure_ascii", "indent", "separators", "sort_keys"});
  JsonDumpOptions o;
  o.ensure_ascii = bool_arg(args, 0, "ensure_ascii", false);
  if (const Value* indent = args.get(1, "indent"); indent && !indent->is_none()) {
    if (indent->is_string()) {
      o.indent = indent->as_string();
    } else if (indent->is_int() || indent->is_bool()) {
      o.indent = std::string(static_cast<size_t>(std::max<int64_t>(0, indent->as_int())), ' ');
    } else {
      in.error(ErrorKind::kFormat, args.pos, "tojson indent must be an int or a string");
    }
    o.item_separator = ",";
  }
  if (const Value* sep = args.get(2, "separators"); sep && !sep->is_none()) {
    if (!sep->is_list() || sep->as_list().items.size() != 2 || !sep->as_list().items[0].is_string() ||
        !sep->as_list().items[1].is_string())
      in.error(ErrorKind::kFormat, args.pos, "tojson separators must be a pair of strings");
    o.item_separator = sep->as_list().items[0].as_string();
    o.key_separator = sep->as_list().items[1].as_string();
  }
  o.sort_keys = bool_arg(args, 3, "sort_keys", false);
  try {
    return Value(py_json_dumps(v, o));
  } catch (const Error& e) {
    in.error(e.kind(), args.pos, e.what());
  }
}

std::string filter_indent(const std::string& s_in, const std::string& indention, bool first, bool blank) {
  std::string s = s_in + "\n";  // jinja2 appends a newline so that splitlines keeps a trailing empty line
  std::vector<std::string> lines = py_splitlines(s);
  std::string rv;
  if (blank) {
    for (size_t i = 0; i < lines.size(); ++i) rv += (i ? "\n" + indention : "") + lines[i];
  } else {
    rv = lines.empty() ? "" : lines[0];
    for (size_t i = 1; i < lines.size(); ++i) rv += "\n" + (lines[i].empty() ? "" : indention + lines[i]);
  }
  if (first) rv = indention + rv;
  return rv;
}

std::string filter_title(const std::string& s) {
  // jinja2: words start after runs of [-\s({\[<]; each word gets item[0].upper() + rest.lower().
  std::string out;
  bool word_start = true;
  for (char32_t c : utf8_decode(s)) {
    const bool sep = py_isspace(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
    if (sep) {
      utf8_append(out, c);
      word_start = true;
    } else {
      utf8_append(out, word_start ? char_upper(c) : char_lower(c));
      word_start = false;
    }
  }
  return out;
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

Value round_value(Interpreter& in, const Value& v, const CallArgs& args) {
  args.check("round", 2, {"precision", "method"});
  const int64_t precision = int_arg(in, args, 0, "precision", "round").value_or(0);
  const std::string method = string_arg(in, args, 1, "method", "round").value_or("common");
  if (v.is_undefined()) in.undefined_error(v, args.pos);
  if (!v.is_number()) in.error(ErrorKind::kFormat, args.pos, "round() needs a number");
  if (method != "common" && method != "ceil" && method != "floor")
    in.error(ErrorKind::kFormat, args.pos, "method must be common, ceil or floor");
  if (method == "common") {
    if (!v.is_float()) return Value(v.as_int());  // Python's round(int, n >= 0) stays an int
    if (precision < 0 || precision > 300) unsupported_filter(in, args, "round (with this precision)");
    char buf[400];
    // printf rounds the exact binary value half-to-even, which is what CPython's round() does.
    std::snprintf(buf, sizeof buf, "%.*f", static_cast<int>(precision), v.as_float());
    return Value(std::strtod(buf, nullptr));
  }
  const double scale = std::pow(10.0, static_cast<double>(precision));
  const double x = v.as_float() * scale;
  return Value((method == "ceil" ? std::ceil(x) : std::floor(x)) / scale);
}

// select/reject (attr_mode false) and selectattr/rejectattr (true). Like jinja2's generator,
// nothing (not even the arguments) is looked at when the input is falsy, and errors surface only
// when the result is consumed.
Value select_items(Interpreter& in, const Value& v, const CallArgs& args, bool attr_mode, bool keep_if) {
  return lazy_generator([&](std::vector<Value>& out) {
    if (!v.truthy()) return;
    std::optional<std::string> attr;
    size_t test_index = 0;
    if (attr_mode) {
      attr = string_arg(in, args, 0, "attribute", "selectattr", true);
      test_index = 1;
    }
    std::optional<std::string> test;
    if (args.positional.size() > test_index) {
      const Value& t = args.positional[test_index];
      if (!t.is_string()) in.error(ErrorKind::kFormat, args.pos, "the test name must be a string");
      test = t.as_string();
      if (!is_jinja2_test(*test)) in.error(ErrorKind::kFormat, args.pos, fmt::format("no test named '{}'", *test));
    }
    const CallArgs test_args = shift_args(args, test_index + 1);
    for (const Value& item : in.iterate(v, args.pos)) {
      const Value probe = attr ? get_attribute_path(in, item, *attr, args.pos) : item;
      const bool pass = test ? apply_test(in, *test, probe, test_args) : probe.truthy();
      if (pass == keep_if) out.push_back(item);
    }
  });
}

Value map_items(Interpreter& in, const Value& v, const CallArgs& args) {
  return lazy_generator([&](std::vector<Value>& out) {
    if (!v.truthy()) return;  // jinja2: `if value:` guards the whole generator
    const Value* attribute = nullptr;
    const Value* dflt = nullptr;
    for (const auto& [k, val] : args.keyword) {
      if (k == "attribute") attribute = &val;
      else if (k == "default") dflt = &val;
    }
    if (attribute) {
      if (!attribute->is_string()) in.error(ErrorKind::kFormat, args.pos, "map attribute must be a string");
      for (const Value& item : in.iterate(v, args.pos)) {
        Value r = get_attribute_path(in, item, attribute->as_string(), args.pos);
        if (r.is_undefined() && dflt) r = *dflt;
        out.push_back(std::move(r));
      }
      return;
    }
    if (args.positional.empty() || !args.positional[0].is_string())
      in.error(ErrorKind::kFormat, args.pos, "map() needs a filter name or attribute=");
    const std::string name = args.positional[0].as_string();
    if (!is_jinja2_filter(name)) in.error(ErrorKind::kFormat, args.pos, fmt::format("no filter named '{}'", name));
    const CallArgs rest = shift_args(args, 1);
    for (const Value& item : in.iterate(v, args.pos)) out.push_back(apply_filter(in, name, item, rest));
  });
}

Value min_max(Interpreter& in, const Value& v, const CallArgs& args, bool want_max) {
  args.check(want_max ? "max" : "min", 2, {"case_sensitive", "attribute"});
  const bool case_sensitive = bool_arg(args, 0, "case_sensitive", false);
  const std::optional<std::string> attribute = string_arg(in, args, 1, "attribute", "max");
  const std::vector<Value> items = in.iterate(v, args.pos);
  if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  std::vector<std::pair<Value, Value>> keyed;
  for (const Value& item : items) {
    Value key = attribute ? get_attribute_path(in, item, *attribute, args.pos) : item;
    keyed.emplace_back(case_sensitive ? key : lower_if_string(key), item);
  }
  size_t best = 0;
  for (size_t i = 1; i < keyed.size(); ++i) {
    bool ok = true;
    const bool better = want_max ? py_less(keyed[best].first, keyed[i].first, &ok)
                                 : py_less(keyed[i].first, keyed[best].first, &ok);
    if (!ok) in.error(ErrorKind::kFormat, args.pos, "values are not comparable");
    if (better) best = i;
  }
  return keyed[best].second;
}

}  // namespace

bool is_jinja2_filter(std::string_view name) {
  return std::find(std::begin(kJinjaFilters), std::end(kJinjaFilters), name) != std::end(kJinjaFilters);
}

bool is_jinja2_test(std::string_view name) {
  return std::find(std::begin(kJinjaTests), std::end(kJinjaTests), name) != std::end(kJinjaTests);
}

Value apply_filter(Interpreter& in, const std::string& name, const Value& v, const CallArgs& args) {
  const SourcePos pos = args.pos;
  if (name == "tojson") return filter_tojson(in, v, args);
  if (name == "trim") {
    args.check("trim", 1, {"chars"});
    return Value(py_strip(text(in, v, pos), StripSide::kBoth, string_arg(in, args, 0, "chars", "trim")));
  }
  if (name == "length" || name == "count") return Value(length_of(in, v, pos));
  if (name == "string") return Value(text(in, v, pos));
  if (name == "upper") return Value(py_upper(text(in, v, pos)));
  if (name == "lower") return Value(py_lower(text(in, v, pos)));
  if (name == "capitalize") return Value(py_capitalize(text(in, v, pos)));
  if (name == "title") return Value(filter_title(text(in, v, pos)));
  if (name == "safe") return Value::markup(text(in, v, pos));
  if (name == "e" || name == "escape") return Value::markup(v.is_markup() ? v.as_string() : html_escape(text(in, v, pos)));
  if (name == "forceescape") return Value::markup(html_escape(text(in, v, pos)));
  if (name == "default" || name == "d") {
    args.check(name, 2, {"default_value", "boolean"});
    const Value* dflt = args.get(0, "default_value");
    const bool boolean = bool_arg(args, 1, "boolean", false);
    if (v.is_undefined() || (boolean && !v.truthy())) return dflt ? *dflt : Value("");
    return v;
  }
  if (name == "first") {
    if (v.is_iterator()) {  // next(iter(generator)) takes one item
      List& l = *v.list_ptr();
      if (l.cursor < l.items.size()) return l.items[l.cursor++];
      if (l.deferred) throw *l.deferred;
      return Value::undefined("No first item, sequence was empty.");
    }
    std::vector<Value> items = in.iterate(v, pos);
    return items.empty() ? Value::undefined("No first item, sequence was empty.") : items.front();
  }
  if (name == "last") {
    if (v.is_iterator()) in.error(ErrorKind::kFormat, pos, "'generator' object is not reversible");
    std::vector<Value> items = in.iterate(v, pos);
    return items.empty() ? Value::undefined("No last item, sequence was empty.") : items.back();
  }
  if (name == "list") return Value::list(in.iterate(v, pos));
  if (name == "items") {
    return lazy_generator([&](std::vector<Value>& pairs) {
      if (v.is_undefined()) return;
      if (!v.is_dict()) in.error(ErrorKind::kFormat, pos, "Can only get item pairs from a mapping.");
      for (const auto& [k, val] : v.as_dict().entries) pairs.push_back(Value::list({k, val}, true));
    });
  }
  if (name == "join") {
    args.check("join", 2, {"d", "attribute"});
    const std::string sep = string_arg(in, args, 0, "d", "join").value_or("");
    const std::optional<std::string> attribute = string_arg(in, args, 1, "attribute", "join");
    std::string out;
    bool first = true;
    for (const Value& item : in.iterate(v, pos)) {
      if (!first) out += sep;
      first = false;
      out += text(in, attribute ? get_attribute_path(in, item, *attribute, pos) : item, pos);
    }
    return Value(std::move(out));
  }
  if (name == "replace") {
    args.check("replace", 3, {"old", "new", "count"});
    const std::string old_text = *string_arg(in, args, 0, "old", "replace", true);
    const std::string new_text = *string_arg(in, args, 1, "new", "replace", true);
    const int64_t count = int_arg(in, args, 2, "count", "replace").value_or(-1);
    return Value(py_replace(text(in, v, pos), old_text, new_text, count));
  }
  if (name == "int") {
    args.check("int", 2, {"default", "base"});
    const Value dflt = args.get(0, "default") ? *args.get(0, "default") : Value(int64_t{0});
    const int64_t base = int_arg(in, args, 1, "base", "int").value_or(10);
    if (v.is_undefined()) in.undefined_error(v, pos);  // int(Undefined) raises
    auto from_float = [&](double d) {
      if (std::isnan(d)) return dflt;
      if (std::isinf(d)) in.error(ErrorKind::kFormat, pos, "cannot convert float infinity to integer");
      if (std::fabs(d) >= 9.2e18) in.error(ErrorKind::kUnsupported, pos, "integer beyond 64 bits");
      return Value(static_cast<int64_t>(d));
    };
    if (v.is_int() || v.is_bool()) return Value(v.as_int());
    if (v.is_float()) return from_float(v.as_float());
    if (v.is_string()) {
      if (auto i = parse_python_int(v.as_string(), static_cast<int>(base))) return Value(*i);
      if (auto d = parse_python_float(v.as_string())) return from_float(*d);
    }
    return dflt;
  }
  if (name == "float") {
    args.check("float", 1, {"default"});
    const Value dflt = args.get(0, "default") ? *args.get(0, "default") : Value(0.0);
    if (v.is_undefined()) in.undefined_error(v, pos);  // float(Undefined) raises
    if (v.is_number()) return Value(v.as_float());
    if (v.is_string())
      if (auto d = parse_python_float(v.as_string())) return Value(*d);
    return dflt;
  }
  if (name == "abs") {
    if (v.is_undefined()) in.undefined_error(v, pos);
    if (v.is_float()) return Value(std::fabs(v.as_float()));
    if (v.is_number()) return Value(v.as_int() < 0 ? -v.as_int() : v.as_int());
    in.error(ErrorKind::kFormat, pos, fmt::format("bad operand type for abs(): '{}'", v.type_name()));
  }
  if (name == "round") return round_value(in, v, args);
  if (name == "attr") {
    const std::string attr = *string_arg(in, args, 0, "name", "attr", true);
    if (v.is_undefined()) in.undefined_error(v, pos);
    if (v.is_object())
      if (const Value* a = v.as_object()->attrs.get(attr)) return *a;
    if (attr.empty() || attr[0] != '_')
      if (auto m = find_method(v, attr)) return *m;
    return Value::undefined(fmt::format("'{} object' has no attribute '{}'", v.type_name(), attr));
  }
  if (name == "reverse") {
    if (v.is_string()) {
      std::u32string cps = utf8_decode(v.as_string());
      std::reverse(cps.begin(), cps.end());
      return Value(utf8_encode(cps));
    }
    if (!v.is_list() && !v.is_dict() && !v.is_undefined())
      in.error(ErrorKind::kFormat, pos, "argument must be iterable");
    const bool reversible = !v.is_iterator();  // Undefined reverses to an empty iterator
    std::vector<Value> items = in.iterate(v, pos);
    std::reverse(items.begin(), items.end());
    // reversed() gives an iterator; a generator is not reversible, so jinja2 makes a list.
    if (reversible) return Value::view(std::move(items), SeqView::kIterator, "list_reverseiterator");
    return Value::list(std::move(items));
  }
  if (name == "sort") {
    args.check("sort", 3, {"reverse", "case_sensitive", "attribute"});
    const bool reverse = bool_arg(args, 0, "reverse", false);
    const bool case_sensitive = bool_arg(args, 1, "case_sensitive", false);
    const std::optional<std::string> attribute = string_arg(in, args, 2, "attribute", "sort");
    std::vector<std::pair<Value, Value>> keyed;
    for (const Value& item : in.iterate(v, pos)) {
      Value key = attribute ? get_attribute_path(in, item, *attribute, pos) : item;
      keyed.emplace_back(case_sensitive ? key : lower_if_string(key), item);
    }
    sort_values(in, keyed, reverse, pos);
    std::vector<Value> out;
    for (auto& [k, item] : keyed) out.push_back(std::move(item));
    return Value::list(std::move(out));
  }
  if (name == "dictsort") {
    args.check("dictsort", 3, {"case_sensitive", "by", "reverse"});
    const bool case_sensitive = bool_arg(args, 0, "case_sensitive", false);
    const std::string by = string_arg(in, args, 1, "by", "dictsort").value_or("key");
    const bool reverse = bool_arg(args, 2, "reverse", false);
    if (!v.is_dict()) in.error(ErrorKind::kFormat, pos, "dictsort needs a mapping");
    if (by != "key" && by != "value") in.error(ErrorKind::kFormat, pos, "You can only sort by either 'key' or 'value'");
    std::vector<std::pair<Value, Value>> keyed;
    for (const auto& [k, val] : v.as_dict().entries) {
      const Value& key = by == "key" ? k : val;
      keyed.emplace_back(case_sensitive ? key : lower_if_string(key), Value::list({k, val}, true));
    }
    sort_values(in, keyed, reverse, pos);
    std::vector<Value> out;
    for (auto& [k, item] : keyed) out.push_back(std::move(item));
    return Value::list(std::move(out));
  }
  if (name == "unique") {
    args.check("unique", 2, {"case_sensitive", "attribute"});
    const bool case_sensitive = bool_arg(args, 0, "case_sensitive", false);
    const std::optional<std::string> attribute = string_arg(in, args, 1, "attribute", "unique");
    return lazy_generator([&](std::vector<Value>& out) {
      std::vector<Value> seen;
      for (const Value& item : in.iterate(v, pos)) {
        Value key = attribute ? get_attribute_path(in, item, *attribute, pos) : item;
        if (!case_sensitive) key = lower_if_string(key);
        if (std::any_of(seen.begin(), seen.end(), [&](const Value& s) { return py_equal(s, key); })) continue;
        seen.push_back(key);
        out.push_back(item);
      }
    });
  }
  if (name == "min" || name == "max") return min_max(in, v, args, name == "max");
  if (name == "sum") {
    args.check("sum", 2, {"attribute", "start"});
    const std::optional<std::string> attribute = string_arg(in, args, 0, "attribute", "sum");
    Value total = args.get(1, "start") ? *args.get(1, "start") : Value(int64_t{0});
    for (const Value& item : in.iterate(v, pos)) {
      const Value x = attribute ? get_attribute_path(in, item, *attribute, pos) : item;
      if (!total.is_number() || !x.is_number())
        in.error(ErrorKind::kFormat, pos, fmt::format("unsupported operand type(s) for +: '{}' and '{}'",
                                                      total.type_name(), x.type_name()));
      if (total.is_float() || x.is_float()) total = Value(total.as_float() + x.as_float());
      else total = Value(total.as_int() + x.as_int());
    }
    return total;
  }
  if (name == "select") return select_items(in, v, args, false, true);
  if (name == "reject") return select_items(in, v, args, false, false);
  if (name == "selectattr") return select_items(in, v, args, true, true);
  if (name == "rejectattr") return select_items(in, v, args, true, false);
  if (name == "map") return map_items(in, v, args);
  if (name == "indent") {
    args.check("indent", 3, {"width", "first", "blank"});
    const Value* width = args.get(0, "width");
    std::string indention(4, ' ');
    if (width && width->is_string()) indention = width->as_string();
    else if (width && (width->is_int() || width->is_bool()))
      indention = std::string(static_cast<size_t>(std::max<int64_t>(0, width->as_int())), ' ');
    if (v.is_undefined()) in.undefined_error(v, pos);
    if (!v.is_string())  // jinja2 appends "\n" to its argument, which only a str allows
      in.error(ErrorKind::kFormat, pos, fmt::format("indent needs a string, not {}", v.type_name()));
    return Value(filter_indent(v.as_string(), indention, bool_arg(args, 1, "first", false),
                               bool_arg(args, 2, "blank", false)));
  }
  if (name == "center") {
    const int64_t width = int_arg(in, args, 0, "width", "center").value_or(80);
    const std::string s = text(in, v, pos);
    const int64_t len = static_cast<int64_t>(utf8_length(s));
    if (width <= len) return Value(s);
    const int64_t marg = width - len;
    const int64_t left = marg / 2 + (marg & width & 1);
    return Value(std::string(static_cast<size_t>(left), ' ') + s +
                 std::string(static_cast<size_t>(marg - left), ' '));
  }
  if (name == "wordcount") {
    int64_t words = 0;
    bool in_word = false;
    for (char32_t c : utf8_decode(text(in, v, pos))) {
      const bool w = py_is_word_char(c);
      if (w && !in_word) ++words;
      in_word = w;
    }
    return Value(words);
  }
  unsupported_filter(in, args, name);
}

bool apply_test(Interpreter& in, const std::string& name, const Value& v, const CallArgs& args) {
  const SourcePos pos = args.pos;
  auto arg0 = [&]() -> const Value& {
    if (args.positional.empty()) in.error(ErrorKind::kFormat, pos, fmt::format("test '{}' needs an argument", name));
    return args.positional[0];
  };
  {
    static const char* const kNoArg[] = {"defined", "undefined", "none", "boolean", "false", "true",
                                         "integer", "float", "number", "string", "mapping", "iterable",
                                         "sequence", "callable", "escaped", "lower", "upper", "odd", "even"};
    const bool no_arg = std::any_of(std::begin(kNoArg), std::end(kNoArg), [&](const char* n) { return name == n; });
    const size_t given = args.positional.size() + args.keyword.size();
    if (given != (no_arg ? 0u : 1u))
      in.error(ErrorKind::kFormat, pos, fmt::format("test '{}' takes {} argument(s), {} given", name, no_arg ? 0 : 1, given));
  }
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "boolean") return v.is_bool();
  if (name == "false") return v.is_bool() && !v.as_bool();
  if (name == "true") return v.is_bool() && v.as_bool();
  if (name == "integer") return v.is_int();
  if (name == "float") return v.is_float();
  if (name == "number") return v.is_number();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_dict();
  if (name == "iterable") return v.is_string() || v.is_list() || v.is_dict() || v.is_undefined();
  if (name == "sequence")  // len() and __getitem__: not generators or dict views
    return v.is_string() || v.is_plain_list() || v.is_dict() || v.is_undefined() ||
           (v.is_list() && v.as_list().view == SeqView::kRange);
  if (name == "callable") return v.is_callable() || v.is_undefined();
  if (name == "escaped") return false;
  if (name == "lower") return py_is_cased_lower(text(in, v, pos));
  if (name == "upper") return py_is_cased_upper(text(in, v, pos));
  if (name == "filter") return arg0().is_string() && is_jinja2_filter(arg0().as_string());
  if (name == "test") return arg0().is_string() && is_jinja2_test(arg0().as_string());
  if (name == "odd" || name == "even" || name == "divisibleby") {
    if (v.is_undefined()) in.undefined_error(v, pos);
    const Value divisor = name == "divisibleby" ? arg0() : Value(int64_t{2});
    if (!v.is_number() || !divisor.is_number())
      in.error(ErrorKind::kFormat, pos, fmt::format("test '{}' needs numbers", name));
    if (v.is_float() || divisor.is_float()) {
      const double m = std::fmod(v.as_float(), divisor.as_float());
      const double r = (m != 0 && ((m < 0) != (divisor.as_float() < 0))) ? m + divisor.as_float() : m;
      return name == "odd" ? r == 1.0 : r == 0.0;
    }
    if (divisor.as_int() == 0) in.error(ErrorKind::kFormat, pos, "integer division or modulo by zero");
    int64_t r = v.as_int() % divisor.as_int();
    if (r != 0 && ((r < 0) != (divisor.as_int() < 0))) r += divisor.as_int();
    return name == "odd" ? r == 1 : r == 0;
  }
  if (name == "sameas") {
    const Value& o = arg0();
    if (v.is_none() || o.is_none()) return v.is_none() && o.is_none();
    if (v.is_bool() || o.is_bool()) return v.is_bool() && o.is_bool() && v.as_bool() == o.as_bool();
    if (v.is_int() && o.is_int()) return v.as_int() == o.as_int() && v.as_int() >= -5 && v.as_int() <= 256;
    if (v.is_list() && o.is_list()) return &v.as_list() == &o.as_list();
    if (v.is_dict() && o.is_dict()) return &v.as_dict() == &o.as_dict();
    if (v.is_object() && o.is_object()) return v.as_object() == o.as_object();
    if (v.is_string() && o.is_string() && v.as_string() == o.as_string())
      in.error(ErrorKind::kUnsupported, pos, "'sameas' on equal strings depends on CPython's string interning");
    return false;
  }
  if (name == "in") {
    const Value& seq = arg0();
    if (seq.is_string()) {
      if (!v.is_string()) in.error(ErrorKind::kFormat, pos, "'in <string>' requires string as left operand");
      return seq.as_string().find(v.as_string()) != std::string::npos;
    }
    if (seq.is_dict()) return seq.as_dict().find(v) != nullptr;
    for (const Value& item : in.iterate(seq, pos))
      if (py_equal(item, v)) return true;
    return false;
  }
  if (name == "==" || name == "eq" || name == "equalto") return py_equal(v, arg0());
  if (name == "!=" || name == "ne") return !py_equal(v, arg0());
  const bool lt = name == "<" || name == "lt" || name == "lessthan";
  const bool le = name == "<=" || name == "le";
  const bool gt = name == ">" || name == "gt" || name == "greaterthan";
  const bool ge = name == ">=" || name == "ge";
  if (lt || le || gt || ge) {
    const Value& o = arg0();
    if (v.is_undefined()) in.undefined_error(v, pos);
    if (o.is_undefined()) in.undefined_error(o, pos);
    bool ok = true;
    bool r;
    if (lt) r = py_less(v, o, &ok);
    else if (gt) r = py_less(o, v, &ok);
    else if (le) r = !py_less(o, v, &ok);
    else r = !py_less(v, o, &ok);
    if (!ok) in.error(ErrorKind::kFormat, pos, fmt::format("'{}' not supported between instances of '{}' and '{}'",
                                                           name, v.type_name(), o.type_name()));
    return r;
  }
  in.error(ErrorKind::kUnsupported, pos, fmt::format("the '{}' test is not supported", name));
}

}  // namespace trellis::jinja
