// runtime/jinja_value.h: the values a chat template computes with, with Python's semantics.
//
// Goals: chat templates are Jinja2 run by Python, so the values they see are Python objects and what
// they print is Python's str()/repr(). This models exactly the kinds that reach a chat template
// (JSON data, literals, loop/namespace objects, builtin callables) with Python's truthiness,
// equality, ordering and formatting, so the interpreter can reproduce jinja2's output byte for byte.
// Non-goals: arbitrary Python objects, mutation of lists/dicts (transformers renders in an immutable
// sandbox, so templates cannot mutate them either).
//
// Strings are UTF-8 std::string; operations that Python defines on code points (len, indexing,
// slicing, iteration) decode on demand (jinja_text.h).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "trellis/error.h"

namespace trellis::jinja {

class Value;
class Interpreter;

// A position in the template source, for error messages (1-based).
struct SourcePos {
  int line = 0;
  int column = 0;
};

// jinja2's Undefined: what a missing variable, key or attribute evaluates to. `hint` names what was
// missing ("'foo' is undefined", "'dict object' has no attribute 'bar'") for the error raised when
// the template uses it in a way jinja2's default Undefined refuses (attribute access, arithmetic).
struct Undefined {
  std::string hint;
};
struct NoneType {};

// What kind of Python sequence a List stands for. Beyond list and tuple, chat templates meet
// objects that iterate like a list but differ in how they print, compare, index and test:
// dict.items()/keys()/values() views, range objects, and the one-shot generators that jinja2's
// map/select/reject/selectattr/rejectattr/unique/items/reverse filters return (always truthy, no
// len(), printed with a memory address, exhausted after one pass).
enum class SeqView { kNone, kIterator, kDictItems, kDictKeys, kDictValues, kRange };

struct List {
  std::vector<Value> items;
  bool is_tuple = false;  // prints as (a, b) instead of [a, b]; otherwise identical
  SeqView view = SeqView::kNone;
  std::string view_type;  // Python's type name for views ("generator", "dict_items", "range")
  size_t cursor = 0;      // kIterator: items before it have been consumed
  // kIterator: the error the lazy computation raised after its last produced item; rethrown when a
  // consumer reaches the end, as jinja2 raises it only when the generator is iterated.
  std::shared_ptr<const Error> deferred;
};

// A Python dict: insertion-ordered, keys compared with Python equality (so 1 and True collide).
// Lookup is linear; chat-template dicts have a handful of keys.
struct Dict {
  std::vector<std::pair<Value, Value>> entries;

  const Value* find(const Value& key) const;
  const Value* get(std::string_view key) const;  // string keys only
  void set(Value key, Value value);  // replaces in place when present (keeps the order, like Python)
};

// Arguments of a call as the template wrote them.
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
  SourcePos pos;

  // The argument named `name`, or the positional one at `index`, or nullptr. Throws kFormat when an
  // argument is given both ways.
  const Value* get(size_t index, std::string_view name) const;
  // Fails with kFormat when more than `max_positional` positional arguments or a keyword outside
  // `allowed` was passed to `function`.
  void check(std::string_view function, size_t max_positional,
             std::initializer_list<std::string_view> allowed) const;
};

using NativeFunction = std::function<Value(Interpreter&, const CallArgs&)>;

// A builtin function, bound method or macro. `name` is used in error messages.
struct Callable {
  std::string name;
  NativeFunction fn;
};

// An object with named attributes: jinja2's Namespace (mutable through {% set ns.x = ... %}) and the
// loop object. `type_name` is Python's class name, used when printing and in messages.
struct Object {
  std::string type_name;
  Dict attrs;  // string keys only
  bool is_namespace = false;
};

using ListPtr = std::shared_ptr<List>;
using DictPtr = std::shared_ptr<Dict>;
using ObjectPtr = std::shared_ptr<Object>;
using CallablePtr = std::shared_ptr<Callable>;

class Value {
 public:
  using Storage = std::variant<Undefined, NoneType, bool, int64_t, double, std::string, ListPtr,
                               DictPtr, ObjectPtr, CallablePtr>;

  Value() : v_(Undefined{}) {}
  Value(NoneType) : v_(NoneType{}) {}
  Value(bool b) : v_(b) {}
  Value(int i) : v_(int64_t{i}) {}
  Value(int64_t i) : v_(i) {}
  Value(double d) : v_(d) {}
  Value(std::string s) : v_(std::move(s)) {}
  Value(const char* s) : v_(std::string(s)) {}
  Value(ListPtr l) : v_(std::move(l)) {}
  Value(DictPtr d) : v_(std::move(d)) {}
  Value(ObjectPtr o) : v_(std::move(o)) {}
  Value(CallablePtr c) : v_(std::move(c)) {}

  static Value undefined(std::string hint) { return Value(Storage(Undefined{std::move(hint)})); }
  static Value none() { return Value(NoneType{}); }
  static Value list(std::vector<Value> items, bool is_tuple = false);
  // A dict view, range or generator (see SeqView); `type` is its Python type name.
  static Value view(std::vector<Value> items, SeqView view, std::string type);
  static Value dict();
  static Value function(std::string name, NativeFunction fn);

  bool is_undefined() const { return std::holds_alternative<Undefined>(v_); }
  bool is_none() const { return std::holds_alternative<NoneType>(v_); }
  bool is_bool() const { return std::holds_alternative<bool>(v_); }
  bool is_int() const { return std::holds_alternative<int64_t>(v_); }  // not bool
  bool is_float() const { return std::holds_alternative<double>(v_); }
  bool is_number() const { return is_int() || is_float() || is_bool(); }  // Python: bool is an int
  bool is_string() const { return std::holds_alternative<std::string>(v_); }
  bool is_list() const { return std::holds_alternative<ListPtr>(v_); }
  bool is_dict() const { return std::holds_alternative<DictPtr>(v_); }
  bool is_object() const { return std::holds_alternative<ObjectPtr>(v_); }
  bool is_callable() const { return std::holds_alternative<CallablePtr>(v_); }

  bool as_bool() const { return std::get<bool>(v_); }
  int64_t as_int() const;  // int or bool
  double as_float() const;  // int, bool or float
  const std::string& as_string() const { return std::get<std::string>(v_); }
  const List& as_list() const { return *std::get<ListPtr>(v_); }
  // Lists are shared like Python objects; iterators advance their cursor through this.
  const ListPtr& list_ptr() const { return std::get<ListPtr>(v_); }
  bool is_plain_list() const { return is_list() && as_list().view == SeqView::kNone; }
  bool is_iterator() const { return is_list() && as_list().view == SeqView::kIterator; }
  const Dict& as_dict() const { return *std::get<DictPtr>(v_); }
  Dict& mutable_dict() { return *std::get<DictPtr>(v_); }
  const ObjectPtr& as_object() const { return std::get<ObjectPtr>(v_); }
  const Callable& as_callable() const { return *std::get<CallablePtr>(v_); }
  const std::string& undefined_hint() const { return std::get<Undefined>(v_).hint; }

  // Python's bool(x); Undefined is falsy.
  bool truthy() const;
  // Python's type(x).__name__ as jinja2 messages show it ("str", "int", "dict", "Undefined").
  std::string type_name() const;

  const Storage& storage() const { return v_; }

  // jinja2's Markup (what |safe and |escape return): a str that prints the same but shows as
  // Markup('...') inside a printed container and escapes plain text concatenated to it.
  static Value markup(std::string s) {
    Value v(std::move(s));
    v.markup_ = true;
    return v;
  }
  bool is_markup() const { return markup_ && is_string(); }

 private:
  explicit Value(Storage s) : v_(std::move(s)) {}
  Storage v_;
  bool markup_ = false;
};

// Python's str(x) (what {{ x }} prints; Undefined prints as ""). Throws kUnsupported for values whose
// Python text is an address (functions).
std::string py_str(const Value& v);
// Python's repr(x), as used inside printed lists and dicts.
std::string py_repr(const Value& v);
// Python's ==: 1 == 1.0 == True, deep for lists and dicts, Undefined equals only Undefined.
bool py_equal(const Value& a, const Value& b);
// Python's hash() succeeds (dict keys, `in` on a dict): not lists, dicts or dict views.
bool py_hashable(const Value& v);
// Python's <, for ints/floats/bools, strings (by code point) and lists (lexicographic). Returns
// false with *ok = false when Python would raise TypeError.
bool py_less(const Value& a, const Value& b, bool* ok);

}  // namespace trellis::jinja
