// runtime/jinja_interpreter.cpp: statement execution and expression evaluation (see
// jinja_interpreter.h).
#include "runtime/jinja_interpreter.h"

#include <cmath>
#include <limits>

#include "core/error.h"
#include "runtime/jinja_builtins.h"
#include "runtime/jinja_text.h"

namespace trellis::jinja {
namespace {

constexpr int kMaxMacroDepth = 64;

// jinja2's object_type_repr: how Undefined messages name the object a lookup failed on.
std::string object_type_repr(const Value& obj) {
  if (obj.is_none()) return "None";
  return obj.type_name() + " object";
}

Value missing_attr(const Value& obj, const std::string& name) {
  return Value::undefined(fmt::format("'{}' has no attribute '{}'", object_type_repr(obj), name));
}

Value missing_item(const Value& obj, const Value& key) {
  if (key.is_string()) return missing_attr(obj, key.as_string());
  return Value::undefined(fmt::format("{} has no element {}", object_type_repr(obj), py_repr(key)));
}

bool checked_add(int64_t a, int64_t b, int64_t* r) { return !__builtin_add_overflow(a, b, r); }
bool checked_sub(int64_t a, int64_t b, int64_t* r) { return !__builtin_sub_overflow(a, b, r); }
bool checked_mul(int64_t a, int64_t b, int64_t* r) { return !__builtin_mul_overflow(a, b, r); }

int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

int64_t py_mod(int64_t a, int64_t b) {
  int64_t m = a % b;
  if (m != 0 && ((m < 0) != (b < 0))) m += b;
  return m;
}

double py_fmod(double a, double b) {
  double m = std::fmod(a, b);
  if (m != 0.0 && ((m < 0) != (b < 0))) m += b;
  if (m == 0.0) m = std::copysign(0.0, b);
  return m;
}

// Whether an expression only combines literals (no variables, calls or filters).
bool is_constant(const Expr& e) {
  switch (e.kind) {
    case ExprKind::kConst: return true;
    case ExprKind::kName: case ExprKind::kCall: case ExprKind::kFilter: case ExprKind::kGetAttr: return false;
    default:
      for (const ExprPtr& c : e.children)
        if (c && !is_constant(*c)) return false;
      return true;
  }
}

}  // namespace

Interpreter::Interpreter(const Value& context) : context_(context), globals_(make_globals()) {
  root_ = std::make_shared<Scope>();
}

void Interpreter::error(ErrorKind kind, SourcePos pos, const std::string& message) const {
  fail(kind, "chat template line {}, column {}: {}", pos.line, pos.column, message);
}

void Interpreter::undefined_error(const Value& v, SourcePos pos) const {
  error(ErrorKind::kFormat, pos, v.undefined_hint().empty() ? "undefined value" : v.undefined_hint());
}

std::string Interpreter::render(const Body& body) {
  std::string out;
  exec_body(body, root_, out);
  return out;
}

Interpreter::Flow Interpreter::exec_body(const Body& body, const ScopePtr& scope, std::string& out) {
  for (const StmtPtr& s : body) {
    const Flow f = exec(*s, scope, out);
    if (f != Flow::kNormal) return f;
  }
  return Flow::kNormal;
}

Interpreter::Flow Interpreter::exec(const Stmt& s, const ScopePtr& scope, std::string& out) {
  switch (s.kind) {
    case StmtKind::kOutput:
      out += s.text;
      return Flow::kNormal;
    case StmtKind::kPrint: {
      const Value v = eval(*s.expr, scope);
      try {
        out += py_str(v);
      } catch (const Error& e) {
        error(e.kind(), s.pos, e.what());
      }
      return Flow::kNormal;
    }
    case StmtKind::kIf:
      for (size_t i = 0; i < s.conditions.size(); ++i)
        if (eval(*s.conditions[i], scope).truthy()) return exec_body(s.bodies[i], scope, out);
      return exec_body(s.else_body, scope, out);
    case StmtKind::kFor:
      exec_for(s, scope, out);
      return Flow::kNormal;
    case StmtKind::kSet:
      exec_set(s, scope);
      return Flow::kNormal;
    case StmtKind::kSetBlock: {
      std::string captured;
      exec_body(s.body, scope, captured);
      Value v(std::move(captured));
      if (s.expr) {
        // The chain's innermost operand is null: substitute the captured text.
        const Expr* inner = s.expr.get();
        std::vector<const Expr*> chain;
        while (inner) {
          chain.push_back(inner);
          inner = inner->children[0].get();
        }
        for (auto it = chain.rbegin(); it != chain.rend(); ++it)
          v = apply_filter(*this, (*it)->name, v, eval_args(**it, 1, scope));
      }
      assign(s.target, v, scope);
      return Flow::kNormal;
    }
    case StmtKind::kMacro:
      scope->vars[s.text] = make_macro(s, scope);
      return Flow::kNormal;
    case StmtKind::kBreak:
      return Flow::kBreak;
    case StmtKind::kContinue:
      return Flow::kContinue;
    case StmtKind::kFilterBlock: {
      std::string captured;
      exec_body(s.body, scope, captured);
      Value v(std::move(captured));
      std::vector<const Expr*> chain;
      for (const Expr* e = s.expr.get(); e; e = e->children[0].get()) chain.push_back(e);
      for (auto it = chain.rbegin(); it != chain.rend(); ++it)
        v = apply_filter(*this, (*it)->name, v, eval_args(**it, 1, scope));
      out += py_str(v);
      return Flow::kNormal;
    }
    case StmtKind::kWith: {
      auto inner = std::make_shared<Scope>();
      inner->parent = scope;
      std::vector<Value> values;
      for (const ExprPtr& e : s.with_values) values.push_back(eval(*e, scope));
      for (size_t i = 0; i < values.size(); ++i) assign(s.with_targets[i], values[i], inner);
      return exec_body(s.body, inner, out);
    }
    case StmtKind::kGeneration:
      return exec_body(s.body, scope, out);
  }
  return Flow::kNormal;
}

void Interpreter::exec_for(const Stmt& s, const ScopePtr& scope, std::string& out) {
  const Value iterable = eval(*s.expr, scope);
  std::vector<Value> items = iterate(iterable, s.expr->pos);
  if (s.filter) {
    std::vector<Value> kept;
    for (Value& item : items) {
      auto probe = std::make_shared<Scope>();
      probe->parent = scope;
      assign(s.target, item, probe);
      if (eval(*s.filter, probe).truthy()) kept.push_back(std::move(item));
    }
    items = std::move(kept);
  }
  if (items.empty()) {
    exec_body(s.else_body, scope, out);
    return;
  }
  const int64_t n = static_cast<int64_t>(items.size());
  // loop.changed() remembers its last arguments across iterations.
  auto last_changed = std::make_shared<std::optional<Value>>();
  for (int64_t i = 0; i < n; ++i) {
    auto iter_scope = std::make_shared<Scope>();
    iter_scope->parent = scope;
    assign(s.target, items[i], iter_scope);
    auto loop = std::make_shared<Object>();
    loop->type_name = "LoopContext";
    Dict& a = loop->attrs;
    a.set("index", Value(i + 1));
    a.set("index0", Value(i));
    a.set("revindex", Value(n - i));
    a.set("revindex0", Value(n - i - 1));
    a.set("first", Value(i == 0));
    a.set("last", Value(i == n - 1));
    a.set("length", Value(n));
    a.set("depth", Value(1));
    a.set("depth0", Value(0));
    a.set("previtem", i > 0 ? items[i - 1] : Value::undefined("there is no previous item"));
    a.set("nextitem", i + 1 < n ? items[i + 1] : Value::undefined("there is no next item"));
    a.set("cycle", Value::function("loop.cycle", [i](Interpreter& in, const CallArgs& args) {
            if (args.positional.empty())
              in.error(ErrorKind::kFormat, args.pos, "no items for cycling given");
            return args.positional[static_cast<size_t>(i) % args.positional.size()];
          }));
    a.set("changed", Value::function("loop.changed", [last_changed](Interpreter&, const CallArgs& args) {
            Value now = Value::list(args.positional);
            if (*last_changed && py_equal(**last_changed, now)) return Value(false);
            *last_changed = now;
            return Value(true);
          }));
    iter_scope->vars["loop"] = Value(loop);
    const Flow f = exec_body(s.body, iter_scope, out);
    if (f == Flow::kBreak) break;
  }
}

void Interpreter::exec_set(const Stmt& s, const ScopePtr& scope) {
  const Value v = eval(*s.expr, scope);
  assign(s.target, v, scope);
}

void Interpreter::assign(const Target& t, const Value& v, const ScopePtr& scope) {
  switch (t.kind) {
    case Target::Kind::kName:
      scope->vars[t.name] = v;
      return;
    case Target::Kind::kNamespaceAttr: {
      const Value ns = lookup(t.name, scope);
      if (!ns.is_object() || !ns.as_object()->is_namespace)
        error(ErrorKind::kFormat, t.pos, "cannot assign attribute on non-namespace object");
      if (!t.attr.empty() && t.attr[0] == '_')
        error(ErrorKind::kFormat, t.pos, "namespace attributes cannot start with '_'");
      ns.as_object()->attrs.set(Value(t.attr), v);
      return;
    }
    case Target::Kind::kTuple: {
      const std::vector<Value> parts = iterate(v, t.pos);
      if (parts.size() != t.items.size())
        error(ErrorKind::kFormat, t.pos,
              parts.size() > t.items.size()
                  ? fmt::format("too many values to unpack (expected {})", t.items.size())
                  : fmt::format("not enough values to unpack (expected {}, got {})", t.items.size(),
                                parts.size()));
      for (size_t i = 0; i < parts.size(); ++i) assign(t.items[i], parts[i], scope);
      return;
    }
  }
}

Value Interpreter::make_macro(const Stmt& s, const ScopePtr& scope) {
  const Stmt* stmt = &s;
  ScopePtr defining = scope;
  return Value::function(s.text, [this, stmt, defining](Interpreter&, const CallArgs& args) {
    if (++depth_ > kMaxMacroDepth) {
      depth_ = 0;
      error(ErrorKind::kFormat, stmt->pos, "macro recursion too deep");
    }
    auto frame = std::make_shared<Scope>();
    frame->parent = defining;
    const auto& params = stmt->params;
    std::vector<Value> varargs;
    for (size_t i = 0; i < args.positional.size(); ++i) {
      if (i < params.size()) frame->vars[params[i].name] = args.positional[i];
      else varargs.push_back(args.positional[i]);
    }
    auto kwargs = Value::dict();
    for (const auto& [k, v] : args.keyword) {
      bool is_param = false;
      for (size_t i = 0; i < params.size(); ++i) {
        if (params[i].name != k) continue;
        if (i < args.positional.size())
          error(ErrorKind::kFormat, args.pos, fmt::format("macro '{}' got multiple values for '{}'", stmt->text, k));
        frame->vars[k] = v;
        is_param = true;
      }
      if (!is_param) kwargs.mutable_dict().set(Value(k), v);
    }
    for (const MacroParam& p : params) {
      if (frame->vars.count(p.name)) continue;
      frame->vars[p.name] = p.default_value ? eval(*p.default_value, frame)
                                            : Value::undefined(fmt::format("parameter '{}' was not provided", p.name));
    }
    if (!varargs.empty()) frame->vars["varargs"] = Value::list(varargs, true);
    else frame->vars["varargs"] = Value::list({}, true);
    frame->vars["kwargs"] = kwargs;
    std::string out;
    exec_body(stmt->body, frame, out);
    --depth_;
    return Value(std::move(out));
  });
}

Value Interpreter::lookup(const std::string& name, const ScopePtr& scope) const {
  for (const Scope* s = scope.get(); s; s = s->parent.get()) {
    auto it = s->vars.find(name);
    if (it != s->vars.end()) return it->second;
  }
  if (const Value* v = context_.as_dict().get(name)) return *v;
  if (const Value* v = globals_.as_dict().get(name)) return *v;
  return Value::undefined(fmt::format("'{}' is undefined", name));
}

std::vector<Value> Interpreter::iterate(const Value& v, SourcePos pos) const {
  if (v.is_undefined()) return {};
  if (v.is_list()) {
    List& l = *v.list_ptr();
    if (l.view != SeqView::kIterator) return l.items;
    // A generator: hand out what is left, then raise what its computation raised.
    std::vector<Value> rest(l.items.begin() + static_cast<std::ptrdiff_t>(l.cursor), l.items.end());
    l.cursor = l.items.size();
    if (l.deferred) throw *l.deferred;
    return rest;
  }
  if (v.is_dict()) {
    std::vector<Value> keys;
    for (const auto& [k, val] : v.as_dict().entries) keys.push_back(k);
    return keys;
  }
  if (v.is_string()) {
    std::vector<Value> chars;
    for (char32_t c : utf8_decode(v.as_string())) {
      std::string s;
      utf8_append(s, c);
      chars.emplace_back(std::move(s));
    }
    return chars;
  }
  error(ErrorKind::kFormat, pos, fmt::format("'{}' object is not iterable", v.type_name()));
}

Value Interpreter::get_attr(const Value& obj, const std::string& name, SourcePos pos) {
  if (obj.is_undefined()) undefined_error(obj, pos);
  if (obj.is_object()) {
    if (const Value* v = obj.as_object()->attrs.get(name)) return *v;
    return missing_attr(obj, name);
  }
  if (!name.empty() && name[0] == '_') return missing_attr(obj, name);  // sandbox: never exposed
  if (std::optional<Value> m = find_method(obj, name)) return *m;
  if (obj.is_dict()) {
    if (const Value* v = obj.as_dict().get(name)) return *v;
  }
  return missing_attr(obj, name);
}

Value Interpreter::get_item(const Value& obj, const Value& key, SourcePos pos) {
  if (obj.is_undefined()) undefined_error(obj, pos);
  if (obj.is_dict()) {
    if (const Value* v = obj.as_dict().find(key)) return *v;
  } else if (((obj.is_list() && (obj.is_plain_list() || obj.as_list().view == SeqView::kRange)) ||
              obj.is_string()) &&
             (key.is_int() || key.is_bool())) {
    int64_t i = key.as_int();
    if (obj.is_list()) {
      const auto& items = obj.as_list().items;
      const int64_t n = static_cast<int64_t>(items.size());
      if (i < 0) i += n;
      if (i >= 0 && i < n) return items[static_cast<size_t>(i)];
    } else {
      const std::u32string cps = utf8_decode(obj.as_string());
      const int64_t n = static_cast<int64_t>(cps.size());
      if (i < 0) i += n;
      if (i >= 0 && i < n) {
        std::string s;
        utf8_append(s, cps[static_cast<size_t>(i)]);
        return Value(std::move(s));
      }
    }
    return missing_item(obj, key);
  }
  // Failed item lookup with a string key falls back to the attribute (jinja2's getitem).
  if (key.is_string()) {
    if (obj.is_object()) {
      if (const Value* v = obj.as_object()->attrs.get(key.as_string())) return *v;
    } else if (!key.as_string().empty() && key.as_string()[0] != '_') {
      if (std::optional<Value> m = find_method(obj, key.as_string())) return *m;
    }
  }
  return missing_item(obj, key);
}

Value Interpreter::call(const Value& callee, const CallArgs& args) {
  if (callee.is_undefined()) undefined_error(callee, args.pos);
  if (!callee.is_callable())
    error(ErrorKind::kFormat, args.pos, fmt::format("'{}' object is not callable", callee.type_name()));
  return callee.as_callable().fn(*this, args);
}

CallArgs Interpreter::eval_args(const Expr& e, size_t first_arg, const ScopePtr& scope) {
  CallArgs args;
  args.pos = e.pos;
  for (size_t i = first_arg; i < e.children.size(); ++i) args.positional.push_back(eval(*e.children[i], scope));
  for (const auto& [k, v] : e.kwargs) args.keyword.emplace_back(k, eval(*v, scope));
  return args;
}

Value Interpreter::eval(const Expr& e, const ScopePtr& scope) {
  switch (e.kind) {
    case ExprKind::kConst:
      return e.value;
    case ExprKind::kName:
      return lookup(e.name, scope);
    case ExprKind::kList:
    case ExprKind::kTuple: {
      std::vector<Value> items;
      for (const ExprPtr& c : e.children) items.push_back(eval(*c, scope));
      return Value::list(std::move(items), e.kind == ExprKind::kTuple);
    }
    case ExprKind::kDict: {
      Value d = Value::dict();
      for (size_t i = 0; i + 1 < e.children.size(); i += 2) {
        Value k = eval(*e.children[i], scope);
        if (!py_hashable(k))
          error(ErrorKind::kFormat, e.children[i]->pos, fmt::format("unhashable type: '{}'", k.type_name()));
        d.mutable_dict().set(std::move(k), eval(*e.children[i + 1], scope));
      }
      return d;
    }
    case ExprKind::kGetAttr:
      return get_attr(eval(*e.children[0], scope), e.name, e.pos);
    case ExprKind::kGetItem: {
      const Value obj = eval(*e.children[0], scope);
      return get_item(obj, eval(*e.children[1], scope), e.pos);
    }
    case ExprKind::kSlice: {
      const Value obj = eval(*e.children[0], scope);
      Value parts[3];
      for (int i = 0; i < 3; ++i)
        parts[i] = e.children[1 + i] ? eval(*e.children[1 + i], scope) : Value::none();
      return eval_slice(obj, parts[0], parts[1], parts[2], is_constant(*e.children[0]), e.pos);
    }
    case ExprKind::kCall: {
      const Value callee = eval(*e.children[0], scope);
      return call(callee, eval_args(e, 1, scope));
    }
    case ExprKind::kFilter: {
      const Value operand = eval(*e.children[0], scope);
      return apply_filter(*this, e.name, operand, eval_args(e, 1, scope));
    }
    case ExprKind::kTest: {
      const Value operand = eval(*e.children[0], scope);
      return Value(apply_test(*this, e.name, operand, eval_args(e, 1, scope)));
    }
    case ExprKind::kNot:
      return Value(!eval(*e.children[0], scope).truthy());
    case ExprKind::kNeg:
    case ExprKind::kPos: {
      const Value v = eval(*e.children[0], scope);
      if (v.is_undefined()) undefined_error(v, e.pos);
      if (!v.is_number())
        error(ErrorKind::kFormat, e.pos, fmt::format("bad operand type for unary {}: '{}'",
                                                     e.kind == ExprKind::kNeg ? '-' : '+', v.type_name()));
      if (e.kind == ExprKind::kPos) return v.is_bool() ? Value(v.as_int()) : v;
      if (v.is_float()) return Value(-v.as_float());
      if (v.as_int() == std::numeric_limits<int64_t>::min())
        error(ErrorKind::kUnsupported, e.pos, "integer overflow");
      return Value(-v.as_int());
    }
    case ExprKind::kBinary: {
      const Value a = eval(*e.children[0], scope);
      const Value b = eval(*e.children[1], scope);
      return eval_binary(e.name, a, b, e.pos);
    }
    case ExprKind::kConcat: {
      std::vector<Value> parts;
      bool markup = false;
      for (const ExprPtr& c : e.children) {
        parts.push_back(eval(*c, scope));
        markup = markup || parts.back().is_markup();
      }
      std::string s;
      for (const Value& p : parts) {
        std::string piece = py_str(p);
        // jinja2 joins with Markup when any part is Markup, escaping the plain parts.
        if (markup && !p.is_markup() && piece.find_first_of("&<>\"'") != std::string::npos)
          error(ErrorKind::kUnsupported, e.pos, "HTML auto-escaping of text joined to a |safe / |escape value");
        s += piece;
      }
      return markup ? Value::markup(std::move(s)) : Value(std::move(s));
    }
    case ExprKind::kAnd: {
      Value a = eval(*e.children[0], scope);
      return a.truthy() ? eval(*e.children[1], scope) : a;
    }
    case ExprKind::kOr: {
      Value a = eval(*e.children[0], scope);
      return a.truthy() ? a : eval(*e.children[1], scope);
    }
    case ExprKind::kCompare: {
      Value left = eval(*e.children[0], scope);
      for (size_t i = 0; i < e.ops.size(); ++i) {
        Value right = eval(*e.children[i + 1], scope);
        if (!eval_compare(e.ops[i], left, right, e.pos)) return Value(false);
        left = std::move(right);
      }
      return Value(true);
    }
    case ExprKind::kCondExpr:
      if (eval(*e.children[0], scope).truthy()) return eval(*e.children[1], scope);
      if (e.children[2]) return eval(*e.children[2], scope);
      return Value::undefined("the inline if-expression evaluated to false and no else section was defined");
  }
  error(ErrorKind::kInternal, e.pos, "unknown expression kind");
}

Value Interpreter::eval_binary(const std::string& op, const Value& a, const Value& b, SourcePos pos) {
  if (a.is_undefined()) undefined_error(a, pos);
  if (b.is_undefined()) undefined_error(b, pos);
  auto type_error = [&]() {
    error(ErrorKind::kFormat, pos, fmt::format("unsupported operand type(s) for {}: '{}' and '{}'", op,
                                               a.type_name(), b.type_name()));
  };
  auto overflow = [&]() { error(ErrorKind::kUnsupported, pos, "integer overflow (beyond 64 bits)"); };
  const bool nums = a.is_number() && b.is_number();
  const bool ints = nums && !a.is_float() && !b.is_float();
  if (op == "+") {
    if (ints) {
      int64_t r;
      if (!checked_add(a.as_int(), b.as_int(), &r)) overflow();
      return Value(r);
    }
    if (nums) return Value(a.as_float() + b.as_float());
    if (a.is_string() && b.is_string()) {
      if (a.is_markup() || b.is_markup()) {
        const Value& plain = a.is_markup() ? b : a;
        if (!plain.is_markup() && plain.as_string().find_first_of("&<>\"'") != std::string::npos)
          error(ErrorKind::kUnsupported, pos, "HTML auto-escaping of text added to a |safe / |escape value");
        return Value::markup(a.as_string() + b.as_string());
      }
      return Value(a.as_string() + b.as_string());
    }
    if (a.is_plain_list() && b.is_plain_list() && a.as_list().is_tuple == b.as_list().is_tuple) {
      std::vector<Value> items = a.as_list().items;
      items.insert(items.end(), b.as_list().items.begin(), b.as_list().items.end());
      return Value::list(std::move(items), a.as_list().is_tuple);
    }
    if (a.is_string())
      error(ErrorKind::kFormat, pos, fmt::format("can only concatenate str (not \"{}\") to str", b.type_name()));
    type_error();
  }
  if (op == "-") {
    if (ints) {
      int64_t r;
      if (!checked_sub(a.as_int(), b.as_int(), &r)) overflow();
      return Value(r);
    }
    if (nums) return Value(a.as_float() - b.as_float());
    type_error();
  }
  if (op == "*") {
    if (ints) {
      int64_t r;
      if (!checked_mul(a.as_int(), b.as_int(), &r)) overflow();
      return Value(r);
    }
    if (nums) return Value(a.as_float() * b.as_float());
    const Value* seq = (a.is_string() || a.is_plain_list()) ? &a : (b.is_string() || b.is_plain_list()) ? &b : nullptr;
    const Value* count = seq == &a ? &b : &a;
    if (seq && (count->is_int() || count->is_bool())) {
      const int64_t n = count->as_int();
      if (n > (1 << 24)) error(ErrorKind::kUnsupported, pos, "sequence repetition too large");
      if (seq->is_string()) {
        std::string s;
        for (int64_t i = 0; i < n; ++i) s += seq->as_string();
        return Value(std::move(s));
      }
      std::vector<Value> items;
      for (int64_t i = 0; i < n; ++i)
        items.insert(items.end(), seq->as_list().items.begin(), seq->as_list().items.end());
      return Value::list(std::move(items), seq->as_list().is_tuple);
    }
    type_error();
  }
  if (op == "/") {
    if (!nums) type_error();
    if (b.as_float() == 0.0) error(ErrorKind::kFormat, pos, "division by zero");
    return Value(a.as_float() / b.as_float());
  }
  if (op == "//") {
    if (!nums) type_error();
    if (b.as_float() == 0.0) error(ErrorKind::kFormat, pos, "integer division or modulo by zero");
    if (ints) {
      if (a.as_int() == std::numeric_limits<int64_t>::min() && b.as_int() == -1) overflow();
      return Value(floor_div(a.as_int(), b.as_int()));
    }
    return Value(std::floor(a.as_float() / b.as_float()));
  }
  if (op == "%") {
    if (a.is_string())
      error(ErrorKind::kUnsupported, pos, "printf-style string formatting ('...' % value)");
    if (!nums) type_error();
    if (b.as_float() == 0.0) error(ErrorKind::kFormat, pos, "integer division or modulo by zero");
    if (ints) {
      if (b.as_int() == -1) return Value(int64_t{0});
      return Value(py_mod(a.as_int(), b.as_int()));
    }
    return Value(py_fmod(a.as_float(), b.as_float()));
  }
  if (op == "**") {
    if (!nums) type_error();
    if (a.as_float() < 0 && b.as_float() != std::floor(b.as_float()))
      error(ErrorKind::kUnsupported, pos, "a negative number to a fractional power (Python gives a complex number)");
    if (!ints) {
      const double r = std::pow(a.as_float(), b.as_float());
      if (std::isinf(r) && std::isfinite(a.as_float()) && std::isfinite(b.as_float()))
        error(ErrorKind::kFormat, pos, "(34, 'Numerical result out of range')");
    }
    if (ints && b.as_int() >= 0) {
      int64_t r = 1, base = a.as_int();
      for (int64_t e = b.as_int(); e > 0; --e) {
        if (!checked_mul(r, base, &r)) overflow();
        if (r == 0 || r == 1) break;
      }
      return Value(r);
    }
    if (a.as_float() == 0.0 && b.as_float() < 0)
      error(ErrorKind::kFormat, pos, "0.0 cannot be raised to a negative power");
    return Value(std::pow(a.as_float(), b.as_float()));
  }
  error(ErrorKind::kInternal, pos, "unknown operator " + op);
}

bool Interpreter::eval_compare(const std::string& op, const Value& a, const Value& b, SourcePos pos) {
  if (op == "==") return py_equal(a, b);
  if (op == "!=") return !py_equal(a, b);
  if (op == "in" || op == "notin") {
    bool found = false;
    if (b.is_string()) {
      if (a.is_undefined()) undefined_error(a, pos);
      if (!a.is_string())
        error(ErrorKind::kFormat, pos, fmt::format("'in <string>' requires string as left operand, not {}",
                                                   a.type_name()));
      found = b.as_string().find(a.as_string()) != std::string::npos;
    } else if (b.is_iterator()) {
      // `in` consumes a generator up to the first match.
      List& l = *b.list_ptr();
      while (!found && l.cursor < l.items.size()) found = py_equal(l.items[l.cursor++], a);
      if (!found && l.deferred) throw *l.deferred;
    } else if (b.is_list()) {
      for (const Value& item : b.as_list().items) found = found || py_equal(item, a);
    } else if (b.is_dict()) {
      if (!py_hashable(a)) error(ErrorKind::kFormat, pos, fmt::format("unhashable type: '{}'", a.type_name()));
      found = b.as_dict().find(a) != nullptr;
    } else if (b.is_undefined()) {
      found = false;  // Undefined iterates as empty
    } else {
      error(ErrorKind::kFormat, pos, fmt::format("argument of type '{}' is not iterable", b.type_name()));
    }
    return op == "in" ? found : !found;
  }
  if (a.is_undefined()) undefined_error(a, pos);
  if (b.is_undefined()) undefined_error(b, pos);
  bool ok = true;
  bool r = false;
  if (op == "<") r = py_less(a, b, &ok);
  else if (op == ">") r = py_less(b, a, &ok);
  else if (op == "<=") r = !py_less(b, a, &ok);
  else if (op == ">=") r = !py_less(a, b, &ok);
  if (!ok)
    error(ErrorKind::kFormat, pos, fmt::format("'{}' not supported between instances of '{}' and '{}'", op,
                                               a.type_name(), b.type_name()));
  return r;
}

Value Interpreter::eval_slice(const Value& obj, const Value& start, const Value& stop, const Value& step,
                              bool constant_obj, SourcePos pos) {
  if (obj.is_undefined()) undefined_error(obj, pos);
  // jinja2 compiles slices to a plain Python subscript (no getitem fallback), so anything but a
  // sequence raises TypeError instead of giving Undefined.
  const bool range = obj.is_list() && obj.as_list().view == SeqView::kRange;
  if (!(obj.is_plain_list() || range) && !obj.is_string()) {
    // On a literal, jinja2's compile-time constant folding may turn the TypeError into Undefined.
    if (constant_obj)
      error(ErrorKind::kUnsupported, pos, "slicing a literal that is not a sequence (jinja2 constant-folds it)");
    if (obj.is_dict()) error(ErrorKind::kFormat, pos, "unhashable type: 'slice'");
    error(ErrorKind::kFormat, pos, fmt::format("'{}' object is not subscriptable", obj.type_name()));
  }
  for (const Value* v : {&start, &stop, &step}) {
    if (v->is_undefined()) undefined_error(*v, pos);
    if (!v->is_none() && !v->is_int() && !v->is_bool())
      error(ErrorKind::kFormat, pos, "slice indices must be integers or None or have an __index__ method");
  }
  const int64_t st = step.is_none() ? 1 : step.as_int();
  if (st == 0) error(ErrorKind::kFormat, pos, "slice step cannot be zero");
  std::u32string cps;
  int64_t n;
  if (obj.is_string()) {
    cps = utf8_decode(obj.as_string());
    n = static_cast<int64_t>(cps.size());
  } else {
    n = static_cast<int64_t>(obj.as_list().items.size());
  }
  // CPython's PySlice_AdjustIndices.
  auto adjust = [&](const Value& v, int64_t dflt) {
    if (v.is_none()) return dflt;
    int64_t i = v.as_int();
    if (i < 0) {
      i += n;
      if (i < 0) i = st < 0 ? -1 : 0;
    } else if (i >= n) {
      i = st < 0 ? n - 1 : n;
    }
    return i;
  };
  const int64_t lo = adjust(start, st < 0 ? n - 1 : 0);
  const int64_t hi = adjust(stop, st < 0 ? -1 : n);
  std::vector<int64_t> idx;
  if (st > 0)
    for (int64_t i = lo; i < hi; i += st) idx.push_back(i);
  else
    for (int64_t i = lo; i > hi; i += st) idx.push_back(i);
  if (obj.is_string()) {
    std::u32string r;
    for (int64_t i : idx) r.push_back(cps[static_cast<size_t>(i)]);
    return Value(utf8_encode(r));
  }
  std::vector<Value> r;
  for (int64_t i : idx) r.push_back(obj.as_list().items[static_cast<size_t>(i)]);
  if (range) return Value::view(std::move(r), SeqView::kRange, "range");
  return Value::list(std::move(r), obj.as_list().is_tuple);
}

}  // namespace trellis::jinja
