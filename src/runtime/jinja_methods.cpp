// runtime/jinja_methods.cpp: Python methods of str/dict/list/float and the template globals (see
// jinja_builtins.h).
#include <algorithm>
#include <cmath>
#include <ctime>

#include "runtime/jinja_args.h"
#include "runtime/jinja_builtins.h"
#include "runtime/jinja_text.h"

namespace trellis::jinja {
namespace {

constexpr int64_t kMaxRange = 100000;  // jinja2's sandbox refuses larger ranges

using Method = Value (*)(Interpreter&, const Value& self, const CallArgs& args);

Value bind_method(const Value& self, const std::string& qualified, Method m) {
  return Value::function(qualified, [self, m](Interpreter& in, const CallArgs& args) { return m(in, self, args); });
}

Value forbidden(const Value& self, const std::string& name) {
  const std::string what = self.type_name() + "." + name;
  return Value::function(what, [what](Interpreter& in, const CallArgs& args) -> Value {
    in.error(ErrorKind::kFormat, args.pos,
             fmt::format("access to {} is unsafe: chat templates run in an immutable sandbox", what));
  });
}

const std::string& self_str(const Value& self) { return self.as_string(); }

// strip/lstrip/rstrip
template <StripSide kSide>
Value m_strip(Interpreter& in, const Value& self, const CallArgs& args) {
  args.check("strip", 1, {});
  return Value(py_strip(self_str(self), kSide, string_arg(in, args, 0, "chars", "strip")));
}

template <bool kRight>
Value m_split(Interpreter& in, const Value& self, const CallArgs& args) {
  args.check("split", 2, {"sep", "maxsplit"});
  const std::optional<std::string> sep = string_arg(in, args, 0, "sep", "split");
  if (sep && sep->empty()) in.error(ErrorKind::kFormat, args.pos, "empty separator");
  const int64_t maxsplit = int_arg(in, args, 1, "maxsplit", "split").value_or(-1);
  std::vector<Value> parts;
  for (std::string& p : py_split(self_str(self), sep, maxsplit, kRight)) parts.emplace_back(std::move(p));
  return Value::list(std::move(parts));
}

Value m_splitlines(Interpreter&, const Value& self, const CallArgs& args) {
  args.check("splitlines", 0, {});
  std::vector<Value> parts;
  for (std::string& p : py_splitlines(self_str(self))) parts.emplace_back(std::move(p));
  return Value::list(std::move(parts));
}

template <bool kEnd>
Value m_startswith(Interpreter& in, const Value& self, const CallArgs& args) {
  args.check(kEnd ? "endswith" : "startswith", 1, {});
  if (args.positional.empty()) in.error(ErrorKind::kFormat, args.pos, "startswith/endswith needs an argument");
  const Value& arg = args.positional[0];
  std::vector<Value> candidates = arg.is_list() && arg.as_list().is_tuple ? arg.as_list().items : std::vector<Value>{arg};
  const std::string& s = self_str(self);
  for (const Value& c : candidates) {
    if (!c.is_string())
      in.error(ErrorKind::kFormat, args.pos, fmt::format("startswith/endswith first arg must be str or a tuple of str, not {}",
                                                         c.type_name()));
    const std::string& p = c.as_string();
    if (p.size() > s.size()) continue;
    if (kEnd ? s.compare(s.size() - p.size(), p.size(), p) == 0 : s.compare(0, p.size(), p) == 0) return Value(true);
  }
  return Value(false);
}

Value m_upper(Interpreter&, const Value& self, const CallArgs&) { return Value(py_upper(self_str(self))); }
Value m_lower(Interpreter&, const Value& self, const CallArgs&) { return Value(py_lower(self_str(self))); }
Value m_capitalize(Interpreter&, const Value& self, const CallArgs&) { return Value(py_capitalize(self_str(self))); }

Value m_title(Interpreter&, const Value& self, const CallArgs&) {
  // Python's str.title: a cased character after an uncased one starts a word.
  std::string out;
  bool prev_cased = false;
  for (char32_t c : utf8_decode(self_str(self))) {
    const bool cased = char_upper(c) != c || char_lower(c) != c;
    utf8_append(out, cased ? (prev_cased ? char_lower(c) : char_upper(c)) : c);
    prev_cased = cased;
  }
  return Value(std::move(out));
}

Value m_swapcase(Interpreter&, const Value& self, const CallArgs&) {
  std::string out;
  for (char32_t c : utf8_decode(self_str(self))) utf8_append(out, char_upper(c) != c ? char_upper(c) : char_lower(c));
  return Value(std::move(out));
}

Value m_replace(Interpreter& in, const Value& self, const CallArgs& args) {
  args.check("replace", 3, {"count"});
  const std::string old_text = *string_arg(in, args, 0, "old", "replace", true);
  const std::string new_text = *string_arg(in, args, 1, "new", "replace", true);
  const int64_t count = int_arg(in, args, 2, "count", "replace").value_or(-1);
  return Value(py_replace(self_str(self), old_text, new_text, count));
}

// find/rfind/index/rindex/count return code-point offsets.
template <int kKind>  // 0 find, 1 rfind, 2 index, 3 rindex, 4 count
Value m_find(Interpreter& in, const Value& self, const CallArgs& args) {
  args.check("find", 1, {});
  const std::string sub = *string_arg(in, args, 0, "sub", "find", true);
  const std::string& s = self_str(self);
  if (kKind == 4) {
    if (sub.empty()) return Value(static_cast<int64_t>(utf8_length(s) + 1));
    int64_t n = 0;
    for (size_t at = s.find(sub); at != std::string::npos; at = s.find(sub, at + sub.size())) ++n;
    return Value(n);
  }
  const size_t at = (kKind == 1 || kKind == 3) ? s.rfind(sub) : s.find(sub);
  if (at == std::string::npos) {
    if (kKind >= 2) in.error(ErrorKind::kFormat, args.pos, "substring not found");
    return Value(int64_t{-1});
  }
  return Value(static_cast<int64_t>(utf8_length(std::string_view(s).substr(0, at))));
}

Value m_join(Interpreter& in, const Value& self, const CallArgs& args) {
  args.check("join", 1, {});
  if (args.positional.empty()) in.error(ErrorKind::kFormat, args.pos, "join() takes exactly one argument");
  std::string out;
  bool first = true;
  for (const Value& item : in.iterate(args.positional[0], args.pos)) {
    if (!item.is_string())
      in.error(ErrorKind::kFormat, args.pos, fmt::format("sequence item: expected str instance, {} found", item.type_name()));
    if (!first) out += self_str(self);
    first = false;
    out += item.as_string();
  }
  return Value(std::move(out));
}

template <int kKind>  // 0 digit, 1 alpha, 2 alnum, 3 space, 4 upper, 5 lower
Value m_is(Interpreter&, const Value& self, const CallArgs&) {
  const std::u32string cps = utf8_decode(self_str(self));
  if (kKind == 4) return Value(py_is_cased_upper(self_str(self)));
  if (kKind == 5) return Value(py_is_cased_lower(self_str(self)));
  if (cps.empty()) return Value(false);
  for (char32_t c : cps) {
    const bool digit = c >= '0' && c <= '9';
    const bool alpha = c >= 0x80 ? py_is_word_char(c) && c != '_' : ((c | 32) >= 'a' && (c | 32) <= 'z');
    bool ok = false;
    switch (kKind) {
      case 0: ok = digit; break;
      case 1: ok = alpha; break;
      case 2: ok = alpha || digit; break;
      case 3: ok = py_isspace(c); break;
    }
    if (!ok) return Value(false);
  }
  return Value(true);
}

template <bool kSuffix>
Value m_remove_affix(Interpreter& in, const Value& self, const CallArgs& args) {
  const std::string affix = *string_arg(in, args, 0, "affix", "removeprefix", true);
  const std::string& s = self_str(self);
  if (affix.size() > s.size()) return self;
  if (kSuffix) return s.compare(s.size() - affix.size(), affix.size(), affix) == 0 ? Value(s.substr(0, s.size() - affix.size())) : self;
  return s.compare(0, affix.size(), affix) == 0 ? Value(s.substr(affix.size())) : self;
}

template <bool kRight>
Value m_partition(Interpreter& in, const Value& self, const CallArgs& args) {
  const std::string sep = *string_arg(in, args, 0, "sep", "partition", true);
  if (sep.empty()) in.error(ErrorKind::kFormat, args.pos, "empty separator");
  const std::string& s = self_str(self);
  const size_t at = kRight ? s.rfind(sep) : s.find(sep);
  if (at == std::string::npos)
    return kRight ? Value::list({Value(""), Value(""), self}, true) : Value::list({self, Value(""), Value("")}, true);
  return Value::list({Value(s.substr(0, at)), Value(sep), Value(s.substr(at + sep.size()))}, true);
}

// str.format with plain {} / {0} / {name} fields; format specs and conversions are refused.
Value m_format(Interpreter& in, const Value& self, const CallArgs& args) {
  const std::string& f = self_str(self);
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < f.size(); ++i) {
    const char c = f[i];
    if (c == '}' ) {
      if (i + 1 < f.size() && f[i + 1] == '}') { out.push_back('}'); ++i; continue; }
      in.error(ErrorKind::kFormat, args.pos, "Single '}' encountered in format string");
    }
    if (c != '{') { out.push_back(c); continue; }
    if (i + 1 < f.size() && f[i + 1] == '{') { out.push_back('{'); ++i; continue; }
    const size_t close = f.find('}', i);
    if (close == std::string::npos) in.error(ErrorKind::kFormat, args.pos, "Single '{' encountered in format string");
    const std::string field = f.substr(i + 1, close - i - 1);
    if (field.find_first_of(":!.[") != std::string::npos)
      in.error(ErrorKind::kUnsupported, args.pos, "str.format with format specs, conversions or attribute fields");
    const Value* v = nullptr;
    if (field.empty()) {
      v = auto_index < args.positional.size() ? &args.positional[auto_index] : nullptr;
      ++auto_index;
    } else if (std::all_of(field.begin(), field.end(), [](char d) { return d >= '0' && d <= '9'; })) {
      const size_t k = std::stoul(field);
      v = k < args.positional.size() ? &args.positional[k] : nullptr;
    } else {
      for (const auto& [k, val] : args.keyword) if (k == field) v = &val;
    }
    if (!v) in.error(ErrorKind::kFormat, args.pos, fmt::format("format field '{}' has no argument", field));
    out += text(in, *v, args.pos);
    i = close;
  }
  return Value(std::move(out));
}

Value m_dict_get(Interpreter& in, const Value& self, const CallArgs& args) {
  args.check("get", 2, {});
  if (args.positional.empty()) in.error(ErrorKind::kFormat, args.pos, "get expected at least 1 argument");
  if (const Value* v = self.as_dict().find(args.positional[0])) return *v;
  return args.positional.size() > 1 ? args.positional[1] : Value::none();
}

template <int kKind>  // 0 items, 1 keys, 2 values
Value m_dict_view(Interpreter&, const Value& self, const CallArgs& args) {
  args.check("items", 0, {});
  std::vector<Value> out;
  for (const auto& [k, v] : self.as_dict().entries) {
    if (kKind == 0) out.push_back(Value::list({k, v}, true));
    else out.push_back(kKind == 1 ? k : v);
  }
  static const char* const kTypes[] = {"dict_items", "dict_keys", "dict_values"};
  static const SeqView kViews[] = {SeqView::kDictItems, SeqView::kDictKeys, SeqView::kDictValues};
  return Value::view(std::move(out), kViews[kKind], kTypes[kKind]);
}

Value m_copy(Interpreter&, const Value& self, const CallArgs&) {
  if (self.is_dict()) {
    Value d = Value::dict();
    d.mutable_dict() = self.as_dict();
    return d;
  }
  return Value::list(self.as_list().items, self.as_list().is_tuple);
}

Value m_list_index(Interpreter& in, const Value& self, const CallArgs& args) {
  if (args.positional.empty()) in.error(ErrorKind::kFormat, args.pos, "index() takes an argument");
  const auto& items = self.as_list().items;
  for (size_t i = 0; i < items.size(); ++i)
    if (py_equal(items[i], args.positional[0])) return Value(static_cast<int64_t>(i));
  in.error(ErrorKind::kFormat, args.pos, "value is not in list");
}

Value m_list_count(Interpreter& in, const Value& self, const CallArgs& args) {
  if (args.positional.empty()) in.error(ErrorKind::kFormat, args.pos, "count() takes an argument");
  int64_t n = 0;
  for (const Value& item : self.as_list().items) n += py_equal(item, args.positional[0]);
  return Value(n);
}

Value m_is_integer(Interpreter&, const Value& self, const CallArgs&) {
  const double d = self.as_float();
  return Value(std::isfinite(d) && d == std::floor(d));
}

struct MethodEntry {
  const char* name;
  Method fn;
};

constexpr MethodEntry kStrMethods[] = {
    {"strip", m_strip<StripSide::kBoth>}, {"lstrip", m_strip<StripSide::kLeft>},
    {"rstrip", m_strip<StripSide::kRight>}, {"split", m_split<false>}, {"rsplit", m_split<true>},
    {"splitlines", m_splitlines}, {"startswith", m_startswith<false>}, {"endswith", m_startswith<true>},
    {"upper", m_upper}, {"lower", m_lower}, {"casefold", m_lower}, {"capitalize", m_capitalize},
    {"title", m_title}, {"swapcase", m_swapcase}, {"replace", m_replace}, {"find", m_find<0>},
    {"rfind", m_find<1>}, {"index", m_find<2>}, {"rindex", m_find<3>}, {"count", m_find<4>},
    {"join", m_join}, {"isdigit", m_is<0>}, {"isdecimal", m_is<0>}, {"isnumeric", m_is<0>},
    {"isalpha", m_is<1>}, {"isalnum", m_is<2>}, {"isspace", m_is<3>}, {"isupper", m_is<4>},
    {"islower", m_is<5>}, {"removeprefix", m_remove_affix<false>},
    {"removesuffix", m_remove_affix<true>}, {"partition", m_partition<false>},
    {"rpartition", m_partition<true>}, {"format", m_format},
};
constexpr MethodEntry kDictMethods[] = {
    {"get", m_dict_get}, {"items", m_dict_view<0>}, {"keys", m_dict_view<1>},
    {"values", m_dict_view<2>}, {"copy", m_copy},
};
constexpr MethodEntry kListMethods[] = {
    {"index", m_list_index}, {"count", m_list_count}, {"copy", m_copy},
};
constexpr const char* kDictMutators[] = {"clear", "pop", "popitem", "setdefault", "update", "fromkeys"};
constexpr const char* kListMutators[] = {"append", "extend", "insert", "pop", "remove", "reverse", "sort", "clear"};
// str methods trellis does not implement: reaching one is an error rather than an Undefined.
constexpr const char* kStrUnsupported[] = {"center", "ljust", "rjust", "zfill", "expandtabs", "encode",
                                           "format_map", "translate", "maketrans", "isidentifier",
                                           "isprintable", "istitle", "isascii"};

template <size_t N>
std::optional<Value> lookup_table(const MethodEntry (&table)[N], const Value& self, const std::string& name) {
  for (const MethodEntry& e : table)
    if (name == e.name) return bind_method(self, self.type_name() + "." + name, e.fn);
  return std::nullopt;
}

// ---- globals ----

Value g_range(Interpreter& in, const CallArgs& args) {
  args.check("range", 3, {});
  std::vector<int64_t> a;
  for (const Value& v : args.positional) {
    if (!v.is_int() && !v.is_bool())
      in.error(ErrorKind::kFormat, args.pos, fmt::format("'{}' object cannot be interpreted as an integer", v.type_name()));
    a.push_back(v.as_int());
  }
  if (a.empty()) in.error(ErrorKind::kFormat, args.pos, "range expected at least 1 argument, got 0");
  const int64_t start = a.size() == 1 ? 0 : a[0];
  const int64_t stop = a.size() == 1 ? a[0] : a[1];
  const int64_t step = a.size() == 3 ? a[2] : 1;
  if (step == 0) in.error(ErrorKind::kFormat, args.pos, "range() arg 3 must not be zero");
  std::vector<Value> out;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    if (static_cast<int64_t>(out.size()) >= kMaxRange)
      in.error(ErrorKind::kFormat, args.pos, "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
    out.emplace_back(i);
  }
  return Value::view(std::move(out), SeqView::kRange, "range");
}

// dict(...) and namespace(...): a mapping or list of pairs, then keyword arguments.
void fill_mapping(Interpreter& in, const CallArgs& args, Dict& d, const char* function) {
  if (args.positional.size() > 1)
    in.error(ErrorKind::kFormat, args.pos, fmt::format("{} expected at most 1 positional argument", function));
  if (!args.positional.empty()) {
    const Value& src = args.positional[0];
    if (src.is_dict()) {
      d = src.as_dict();
    } else {
      for (const Value& pair : in.iterate(src, args.pos)) {
        std::vector<Value> kv = in.iterate(pair, args.pos);
        if (kv.size() != 2) in.error(ErrorKind::kFormat, args.pos, "dictionary update sequence element has wrong length");
        d.set(kv[0], kv[1]);
      }
    }
  }
  for (const auto& [k, v] : args.keyword) d.set(Value(k), v);
}

Value g_dict(Interpreter& in, const CallArgs& args) {
  Value d = Value::dict();
  fill_mapping(in, args, d.mutable_dict(), "dict");
  return d;
}

Value g_namespace(Interpreter& in, const CallArgs& args) {
  auto ns = std::make_shared<Object>();
  ns->type_name = "Namespace";
  ns->is_namespace = true;
  fill_mapping(in, args, ns->attrs, "namespace");
  for (const auto& [k, v] : ns->attrs.entries) {
    if (!k.is_string())
      in.error(ErrorKind::kFormat, args.pos, "namespace attribute names must be strings");
    if (!k.as_string().empty() && k.as_string()[0] == '_')
      in.error(ErrorKind::kFormat, args.pos,
               fmt::format("Chat templates cannot store underscore-prefixed attributes on a namespace, but got '{}'",
                           k.as_string()));
  }
  return Value(ns);
}

Value g_raise_exception(Interpreter& in, const CallArgs& args) {
  const std::string message = args.positional.empty() ? std::string() : text(in, args.positional[0], args.pos);
  in.error(ErrorKind::kInvalidArgument, args.pos, "raise_exception: " + message);
}

Value g_strftime_now(Interpreter& in, const CallArgs& args) {
  const std::string format = *string_arg(in, args, 0, "format", "strftime_now", true);
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  std::string buf(256 + format.size() * 8, '\0');
  const size_t n = std::strftime(buf.data(), buf.size(), format.c_str(), &local);
  if (n == 0 && !format.empty())
    in.error(ErrorKind::kUnsupported, args.pos, "strftime_now format produced no output");
  buf.resize(n);
  return Value(std::move(buf));
}

}  // namespace

std::optional<Value> find_method(const Value& obj, const std::string& name) {
  if (obj.is_string()) {
    if (auto m = lookup_table(kStrMethods, obj, name)) return m;
    for (const char* u : kStrUnsupported) {
      if (name == u) {
        const std::string what = "str." + name;
        return Value::function(what, [what](Interpreter& in, const CallArgs& args) -> Value {
          in.error(ErrorKind::kUnsupported, args.pos, fmt::format("the {} method is not supported", what));
        });
      }
    }
    return std::nullopt;
  }
  if (obj.is_dict()) {
    if (auto m = lookup_table(kDictMethods, obj, name)) return m;
    for (const char* u : kDictMutators)
      if (name == u) return forbidden(obj, name);
    return std::nullopt;
  }
  if (obj.is_list()) {
    const SeqView view = obj.as_list().view;
    if (view == SeqView::kRange && (name == "index" || name == "count")) return lookup_table(kListMethods, obj, name);
    if (view != SeqView::kNone) return std::nullopt;
    if (auto m = lookup_table(kListMethods, obj, name)) return m;
    if (!obj.as_list().is_tuple)
      for (const char* u : kListMutators)
        if (name == u) return forbidden(obj, name);
    return std::nullopt;
  }
  if (obj.is_float() && name == "is_integer") return bind_method(obj, "float.is_integer", m_is_integer);
  return std::nullopt;
}

Value make_globals() {
  Value g = Value::dict();
  Dict& d = g.mutable_dict();
  d.set(Value("range"), Value::function("range", g_range));
  d.set(Value("dict"), Value::function("dict", g_dict));
  d.set(Value("namespace"), Value::function("namespace", g_namespace));
  d.set(Value("raise_exception"), Value::function("raise_exception", g_raise_exception));
  d.set(Value("strftime_now"), Value::function("strftime_now", g_strftime_now));
  for (const char* name : {"cycler", "joiner", "lipsum"}) {
    const std::string n = name;
    d.set(Value(n), Value::function(n, [n](Interpreter& in, const CallArgs& args) -> Value {
            in.error(ErrorKind::kUnsupported, args.pos, fmt::format("the {}() global is not supported", n));
          }));
  }
  return g;
}

}  // namespace trellis::jinja
