// runtime/jinja_value.cpp: Python semantics of chat-template values (see jinja_value.h).
#include "runtime/jinja_value.h"

#include <algorithm>

#include "core/error.h"
#include "runtime/jinja_text.h"

namespace trellis::jinja {

const Value* Dict::find(const Value& key) const {
  for (const auto& [k, v] : entries)
    if (py_equal(k, key)) return &v;
  return nullptr;
}

const Value* Dict::get(std::string_view key) const {
  for (const auto& [k, v] : entries)
    if (k.is_string() && k.as_string() == key) return &v;
  return nullptr;
}

void Dict::set(Value key, Value value) {
  for (auto& [k, v] : entries) {
    if (py_equal(k, key)) {
      v = std::move(value);
      return;
    }
  }
  entries.emplace_back(std::move(key), std::move(value));
}

const Value* CallArgs::get(size_t index, std::string_view name) const {
  const Value* by_name = nullptr;
  for (const auto& [k, v] : keyword)
    if (k == name) by_name = &v;
  const Value* by_pos = index < positional.size() ? &positional[index] : nullptr;
  if (by_name && by_pos)
    fail(ErrorKind::kFormat, "chat template line {}, column {}: argument '{}' given twice", pos.line,
         pos.column, name);
  return by_name ? by_name : by_pos;
}

void CallArgs::check(std::string_view function, size_t max_positional,
                     std::initializer_list<std::string_view> allowed) const {
  if (positional.size() > max_positional)
    fail(ErrorKind::kFormat,
         "chat template line {}, column {}: {}() takes at most {} positional arguments, {} given",
         pos.line, pos.column, function, max_positional, positional.size());
  for (const auto& [k, v] : keyword) {
    if (std::find(allowed.begin(), allowed.end(), k) == allowed.end())
      fail(ErrorKind::kFormat, "chat template line {}, column {}: {}() got an unexpected keyword '{}'",
           pos.line, pos.column, function, k);
  }
}

Value Value::list(std::vector<Value> items, bool is_tuple) {
  auto l = std::make_shared<List>();
  l->items = std::move(items);
  l->is_tuple = is_tuple;
  return Value(std::move(l));
}

Value Value::view(std::vector<Value> items, SeqView view, std::string type) {
  auto l = std::make_shared<List>();
  l->items = std::move(items);
  l->view = view;
  l->view_type = std::move(type);
  return Value(std::move(l));
}

Value Value::dict() { return Value(std::make_shared<Dict>()); }

Value Value::function(std::string name, NativeFunction fn) {
  auto c = std::make_shared<Callable>();
  c->name = std::move(name);
  c->fn = std::move(fn);
  return Value(std::move(c));
}

int64_t Value::as_int() const {
  if (is_bool()) return as_bool() ? 1 : 0;
  return std::get<int64_t>(v_);
}

double Value::as_float() const {
  if (is_float()) return std::get<double>(v_);
  return static_cast<double>(as_int());
}

bool Value::truthy() const {
  return std::visit(
      [](const auto& x) -> bool {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, Undefined> || std::is_same_v<T, NoneType>) {
          return false;
        } else if constexpr (std::is_same_v<T, bool>) {
          return x;
        } else if constexpr (std::is_same_v<T, int64_t>) {
          return x != 0;
        } else if constexpr (std::is_same_v<T, double>) {
          return x != 0.0;
        } else if constexpr (std::is_same_v<T, std::string>) {
          return !x.empty();
        } else if constexpr (std::is_same_v<T, ListPtr>) {
          return x->view == SeqView::kIterator || !x->items.empty();
        } else if constexpr (std::is_same_v<T, DictPtr>) {
          return !x->entries.empty();
        } else {
          return true;
        }
      },
      v_);
}

std::string Value::type_name() const {
  return std::visit(
      [](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, Undefined>) return "Undefined";
        if constexpr (std::is_same_v<T, NoneType>) return "NoneType";
        if constexpr (std::is_same_v<T, bool>) return "bool";
        if constexpr (std::is_same_v<T, int64_t>) return "int";
        if constexpr (std::is_same_v<T, double>) return "float";
        if constexpr (std::is_same_v<T, std::string>) return "str";
        if constexpr (std::is_same_v<T, ListPtr>) {
          if (x->view != SeqView::kNone) return x->view_type;
          return x->is_tuple ? "tuple" : "list";
        }
        if constexpr (std::is_same_v<T, DictPtr>) return "dict";
        if constexpr (std::is_same_v<T, ObjectPtr>) return x->type_name;
        if constexpr (std::is_same_v<T, CallablePtr>) return "function";
        return "object";
      },
      v_);
}

namespace {

std::string repr_sequence(const List& l) {
  std::string out = l.is_tuple ? "(" : "[";
  for (size_t i = 0; i < l.items.size(); ++i) {
    if (i) out += ", ";
    out += py_repr(l.items[i]);
  }
  if (l.is_tuple && l.items.size() == 1) out += ",";
  out += l.is_tuple ? ")" : "]";
  return out;
}

std::string repr_dict(const Dict& d) {
  std::string out = "{";
  for (size_t i = 0; i < d.entries.size(); ++i) {
    if (i) out += ", ";
    out += py_repr(d.entries[i].first);
    out += ": ";
    out += py_repr(d.entries[i].second);
  }
  out += "}";
  return out;
}

std::string text_of(const Value& v, bool repr) {
  if (v.is_undefined()) return repr ? "Undefined" : "";
  if (v.is_none()) return "None";
  if (v.is_bool()) return v.as_bool() ? "True" : "False";
  if (v.is_int()) return std::to_string(v.as_int());
  if (v.is_float()) return py_format_float(v.as_float());
  if (v.is_string()) {
    if (!repr) return v.as_string();
    return v.is_markup() ? "Markup(" + py_repr_string(v.as_string()) + ")" : py_repr_string(v.as_string());
  }
  if (v.is_list()) {
    const List& l = v.as_list();
    switch (l.view) {
      case SeqView::kNone: return repr_sequence(l);
      case SeqView::kDictItems:
      case SeqView::kDictKeys:
      case SeqView::kDictValues: {
        List plain;
        plain.items = l.items;
        return l.view_type + "(" + repr_sequence(plain) + ")";
      }
      case SeqView::kIterator:
      case SeqView::kRange:
        break;  // Python prints an address / range(a, b[, c]); refuse below
    }
  }
  if (v.is_dict()) return repr_dict(v.as_dict());
  if (v.is_object() && v.as_object()->is_namespace)
    return "<Namespace " + repr_dict(v.as_object()->attrs) + ">";
  // Python prints these with a memory address, which no reimplementation can reproduce.
  fail(ErrorKind::kUnsupported, "chat template prints a {} object ({}), whose text trellis does not "
       "reproduce (Python shows a memory address or the object's constructor)", v.type_name(),
       v.is_callable() ? v.as_callable().name : "object");
}

}  // namespace

std::string py_str(const Value& v) { return text_of(v, false); }
std::string py_repr(const Value& v) { return text_of(v, true); }

bool py_equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.as_float() == b.as_float();
    return a.as_int() == b.as_int();
  }
  if (a.is_undefined() || b.is_undefined()) return a.is_undefined() && b.is_undefined();
  if (a.is_none() || b.is_none()) return a.is_none() && b.is_none();
  if (a.is_string() && b.is_string()) return a.as_string() == b.as_string();
  if (a.is_list() && b.is_list()) {
    const List& x = a.as_list();
    const List& y = b.as_list();
    if (x.view != y.view) return false;
    if (x.view == SeqView::kIterator || x.view == SeqView::kDictValues) return &x == &y;  // identity
    if (x.view == SeqView::kDictItems || x.view == SeqView::kDictKeys) {  // set semantics
      if (x.items.size() != y.items.size()) return false;
      for (const Value& item : x.items) {
        bool found = false;
        for (const Value& other : y.items) found = found || py_equal(item, other);
        if (!found) return false;
      }
      return true;
    }
    if (x.is_tuple != y.is_tuple || x.items.size() != y.items.size()) return false;
    for (size_t i = 0; i < x.items.size(); ++i)
      if (!py_equal(x.items[i], y.items[i])) return false;
    return true;
  }
  if (a.is_dict() && b.is_dict()) {
    const Dict& x = a.as_dict();
    const Dict& y = b.as_dict();
    if (x.entries.size() != y.entries.size()) return false;
    for (const auto& [k, v] : x.entries) {
      const Value* other = y.find(k);
      if (!other || !py_equal(v, *other)) return false;
    }
    return true;
  }
  if (a.is_object() && b.is_object()) return a.as_object() == b.as_object();
  if (a.is_callable() && b.is_callable()) return &a.as_callable() == &b.as_callable();
  return false;
}

bool py_hashable(const Value& v) {
  if (v.is_dict()) return false;
  if (v.is_list()) {
    const List& l = v.as_list();
    if (l.view == SeqView::kIterator || l.view == SeqView::kRange) return true;
    if (l.view != SeqView::kNone || !l.is_tuple) return false;
    for (const Value& item : l.items)
      if (!py_hashable(item)) return false;
  }
  return true;
}

bool py_less(const Value& a, const Value& b, bool* ok) {
  *ok = true;
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.as_float() < b.as_float();
    return a.as_int() < b.as_int();
  }
  if (a.is_string() && b.is_string()) return a.as_string() < b.as_string();  // UTF-8 keeps order
  if (a.is_plain_list() && b.is_plain_list() && a.as_list().is_tuple == b.as_list().is_tuple) {
    const auto& x = a.as_list().items;
    const auto& y = b.as_list().items;
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (py_equal(x[i], y[i])) continue;
      return py_less(x[i], y[i], ok);
    }
    return x.size() < y.size();
  }
  *ok = false;
  return false;
}

}  // namespace trellis::jinja
