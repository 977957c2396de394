// runtime/jinja_ast.h: the parsed form of a chat template, and the parser that builds it.
//
// Goals: jinja2's grammar (operator precedence, filters and tests binding tighter than arithmetic,
// `-x ** 2` as (-x) ** 2, chained comparisons, conditional expressions, loop filters) for the
// statements chat templates use: if/elif/else, for/else with loop filters, set (plain, tuple,
// namespace attribute, block), macro, break/continue, filter and with blocks, and transformers'
// {% generation %} tag. Tags jinja2 knows but trellis does not run (include, extends, block, import,
// call, ...) are rejected at parse time with kUnsupported; tags jinja2 itself does not know are
// rejected with kFormat, as jinja2 would.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "runtime/jinja_lexer.h"
#include "runtime/jinja_value.h"

namespace trellis::jinja {

enum class ExprKind {
  kConst,     // value
  kName,      // name
  kList,      // children = items
  kTuple,     // children = items
  kDict,      // children = key0, value0, key1, value1, ...
  kGetAttr,   // children[0].name
  kGetItem,   // children[0][children[1]]
  kSlice,     // children[0][children[1]:children[2]:children[3]] (null when omitted)
  kCall,      // children[0](children[1..], kwargs)
  kFilter,    // children[0] | name(children[1..], kwargs); children[0] null in {% filter %}
  kTest,      // children[0] is name(children[1..], kwargs)
  kNot,       // not children[0]
  kNeg,       // -children[0]
  kPos,       // +children[0]
  kBinary,    // children[0] op children[1], op in + - * / // % **
  kConcat,    // children joined with ~
  kAnd,       // children[0] and children[1]
  kOr,        // children[0] or children[1]
  kCompare,   // children[0] ops[0] children[1] ops[1] children[2] ...
  kCondExpr,  // children[1] if children[0] else children[2] (children[2] null when omitted)
};

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  ExprKind kind;
  SourcePos pos;
  Value value;                  // kConst
  std::string name;             // kName, kGetAttr, kFilter, kTest; operator for kBinary
  std::vector<ExprPtr> children;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;  // kCall, kFilter, kTest
  std::vector<std::string> ops;  // kCompare: == != < <= > >= in notin
};

// What a for/set/with statement assigns to.
struct Target {
  enum class Kind { kName, kTuple, kNamespaceAttr } kind = Kind::kName;
  std::string name;             // kName; namespace variable for kNamespaceAttr
  std::string attr;             // kNamespaceAttr
  std::vector<Target> items;    // kTuple
  SourcePos pos;
};

enum class StmtKind {
  kOutput,      // text
  kPrint,       // {{ expr }}
  kIf,          // conditions[i] -> bodies[i]; else_body
  kFor,         // for target in expr [if filter] body [else else_body]
  kSet,         // set target = expr
  kSetBlock,    // set target %}body{% endset; filters applied to the captured text
  kMacro,       // macro name(params) body
  kBreak,
  kContinue,
  kFilterBlock, // filter chain applied to the rendered body (expr is the chain, innermost operand null)
  kWith,        // with targets = values: body
  kGeneration,  // transformers' {% generation %}: renders its body unchanged
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct MacroParam {
  std::string name;
  ExprPtr default_value;  // may be null
};

struct Stmt {
  StmtKind kind;
  SourcePos pos;
  std::string text;                 // kOutput; macro name for kMacro
  ExprPtr expr;                     // kPrint, kFor iterable, kSet value, kFilterBlock chain, kSetBlock filter
  ExprPtr filter;                   // kFor loop filter
  Target target;                    // kFor, kSet, kSetBlock
  std::vector<ExprPtr> conditions;  // kIf
  std::vector<Body> bodies;         // kIf branches
  Body body;                        // kFor, kSetBlock, kMacro, kFilterBlock, kWith, kGeneration
  Body else_body;                   // kIf, kFor
  bool recursive = false;           // kFor
  std::vector<MacroParam> params;   // kMacro
  std::vector<Target> with_targets; // kWith
  std::vector<ExprPtr> with_values; // kWith
};

// Parses a whole template. Throws trellis::Error: kFormat for syntax errors jinja2 also rejects,
// kUnsupported for valid jinja2 that trellis does not implement; messages carry line and column.
Body parse_template(const std::string& source);

}  // namespace trellis::jinja
