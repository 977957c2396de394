// runtime/jinja_interpreter.h: runs a parsed chat template the way jinja2's sandbox does.
//
// Goals: the observable behaviour of transformers' ImmutableSandboxedEnvironment: jinja2's scoping
// (a for-loop iteration and a macro call get their own scope, {% if %} does not; namespace objects
// are the only way to carry state out of a loop), its attribute/item lookup with Undefined results,
// Undefined that prints as "" but fails on attribute access and arithmetic, Python arithmetic and
// comparisons, and a sandbox that refuses methods which mutate lists and dicts.
// Errors carry the template position. Kinds: kFormat for template errors jinja2 also raises
// (TypeError, UndefinedError, syntax), kUnsupported for valid jinja2 that trellis does not run,
// kInvalidArgument for raise_exception() (the template rejecting its input).
#pragma once

#include <memory>
#include <string>
#include <unordered_map>

#include "runtime/jinja_ast.h"
#include "trellis/error.h"
#include "runtime/jinja_value.h"

namespace trellis::jinja {

struct Scope {
  std::unordered_map<std::string, Value> vars;
  std::shared_ptr<Scope> parent;
};
using ScopePtr = std::shared_ptr<Scope>;

class Interpreter {
 public:
  // `context` must be a dict with string keys: the variables the template is rendered with.
  explicit Interpreter(const Value& context);

  // Renders `body`. May be called once per Interpreter.
  std::string render(const Body& body);

  // jinja2's environment.getattr / getitem: Python attribute first (methods of str, dict, list),
  // then item, else Undefined; on Undefined `obj` they fail like jinja2's Undefined.
  Value get_attr(const Value& obj, const std::string& name, SourcePos pos);
  Value get_item(const Value& obj, const Value& key, SourcePos pos);
  // Calls a callable value (builtin, bound method, macro).
  Value call(const Value& callee, const CallArgs& args);

  // Fails with the template position prefixed to the message.
  [[noreturn]] void error(ErrorKind kind, SourcePos pos, const std::string& message) const;
  // Fails as jinja2's Undefined does when `v` (an Undefined) is used.
  [[noreturn]] void undefined_error(const Value& v, SourcePos pos) const;

  // Python iteration: list items, dict keys, string code points; Undefined iterates as empty.
  std::vector<Value> iterate(const Value& v, SourcePos pos) const;

 private:
  enum class Flow { kNormal, kBreak, kContinue };

  Flow exec_body(const Body& body, const ScopePtr& scope, std::string& out);
  Flow exec(const Stmt& s, const ScopePtr& scope, std::string& out);
  void exec_for(const Stmt& s, const ScopePtr& scope, std::string& out);
  void exec_set(const Stmt& s, const ScopePtr& scope);
  void assign(const Target& t, const Value& v, const ScopePtr& scope);
  Value make_macro(const Stmt& s, const ScopePtr& scope);

  Value eval(const Expr& e, const ScopePtr& scope);
  Value lookup(const std::string& name, const ScopePtr& scope) const;
  Value eval_binary(const std::string& op, const Value& a, const Value& b, SourcePos pos);
  bool eval_compare(const std::string& op, const Value& a, const Value& b, SourcePos pos);
  Value eval_slice(const Value& obj, const Value& start, const Value& stop, const Value& step,
                   bool constant_obj, SourcePos pos);
  CallArgs eval_args(const Expr& e, size_t first_arg, const ScopePtr& scope);

  Value context_;
  Value globals_;
  ScopePtr root_;
  int depth_ = 0;  // macro recursion guard
};

}  // namespace trellis::jinja
