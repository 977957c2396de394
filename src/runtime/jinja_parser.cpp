// runtime/jinja_parser.cpp: jinja2's grammar over the lexer's tokens (see jinja_ast.h).
#include <algorithm>
#include <initializer_list>

#include "core/error.h"
#include "runtime/jinja_ast.h"
#include "runtime/jinja_builtins.h"

namespace trellis::jinja {
namespace {

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : toks_(std::move(tokens)) {}

  Body parse_all() {
    Body body = parse_body({});
    return body;
  }

 private:
  const Token& cur() const { return toks_[i_]; }
  const Token& peek(size_t k = 1) const { return toks_[std::min(i_ + k, toks_.size() - 1)]; }
  Token next() { return toks_[i_ < toks_.size() - 1 ? i_++ : i_]; }

  bool is_op(const char* op) const { return cur().type == TokenType::kOperator && cur().text == op; }
  bool is_name(const char* n) const { return cur().type == TokenType::kName && cur().text == n; }
  bool skip_op(const char* op) {
    if (!is_op(op)) return false;
    next();
    return true;
  }
  bool skip_name(const char* n) {
    if (!is_name(n)) return false;
    next();
    return true;
  }

  static std::string describe(const Token& t) {
    switch (t.type) {
      case TokenType::kData: return "template text";
      case TokenType::kVariableBegin: return "'{{'";
      case TokenType::kVariableEnd: return "'}}'";
      case TokenType::kBlockBegin: return "'{%'";
      case TokenType::kBlockEnd: return "'%}'";
      case TokenType::kName: return "'" + t.text + "'";
      case TokenType::kString: return "string literal";
      case TokenType::kInteger: return "integer";
      case TokenType::kFloat: return "float";
      case TokenType::kOperator: return "'" + t.text + "'";
      case TokenType::kEof: return "end of template";
    }
    return "token";
  }

  [[noreturn]] void error_at(const SourcePos& p, const std::string& what) const {
    fail(ErrorKind::kFormat, "chat template line {}, column {}: {}", p.line, p.column, what);
  }
  [[noreturn]] void unsupported_at(const SourcePos& p, const std::string& what) const {
    fail(ErrorKind::kUnsupported, "chat template line {}, column {}: {} is not supported", p.line,
         p.column, what);
  }
  [[noreturn]] void unexpected() const {
    error_at(cur().pos, "unexpected " + describe(cur()));
  }

  void expect_op(const char* op) {
    if (!skip_op(op)) error_at(cur().pos, fmt::format("expected '{}', got {}", op, describe(cur())));
  }
  std::string expect_name() {
    if (cur().type != TokenType::kName)
      error_at(cur().pos, "expected a name, got " + describe(cur()));
    return next().text;
  }
  void expect_block_end() {
    if (cur().type != TokenType::kBlockEnd)
      error_at(cur().pos, "expected end of statement '%}', got " + describe(cur()));
    next();
  }

  // Statements until a {% tag %} whose name is in `ends` (left unconsumed, cursor on the name).
  Body parse_body(std::initializer_list<const char*> ends) {
    Body body;
    while (true) {
      const Token& t = cur();
      if (t.type == TokenType::kEof) {
        if (ends.size() == 0) return body;
        std::string list;
        for (const char* e : ends) list += (list.empty() ? "'" : " or '") + std::string(e) + "'";
        error_at(t.pos, "unexpected end of template, expected " + list);
      }
      if (t.type == TokenType::kData) {
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::kOutput;
        s->pos = t.pos;
        s->text = t.text;
        body.push_back(std::move(s));
        next();
      } else if (t.type == TokenType::kVariableBegin) {
        next();
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::kPrint;
        s->pos = cur().pos;
        s->expr = parse_tuple(true);
        if (cur().type != TokenType::kVariableEnd)
          error_at(cur().pos, "expected end of print statement '}}', got " + describe(cur()));
        next();
        body.push_back(std::move(s));
      } else if (t.type == TokenType::kBlockBegin) {
        const Token& tag = peek();
        if (tag.type == TokenType::kName) {
          for (const char* e : ends) {
            if (tag.text == e) {
              next();  // '{%'; the caller consumes the name
              return body;
            }
          }
        }
        next();
        body.push_back(parse_statement());
      } else {
        unexpected();
      }
    }
  }

  StmtPtr parse_statement() {
    if (cur().type != TokenType::kName) error_at(cur().pos, "tag name expected");
    const Token tag = next();
    const std::string& n = tag.text;
    auto s = std::make_unique<Stmt>();
    s->pos = tag.pos;
    if (n == "if") return parse_if(std::move(s));
    if (n == "for") return parse_for(std::move(s));
    if (n == "set") return parse_set(std::move(s));
    if (n == "macro") return parse_macro(std::move(s));
    if (n == "filter") return parse_filter_block(std::move(s));
    if (n == "with") return parse_with(std::move(s));
    if (n == "generation") {
      s->kind = StmtKind::kGeneration;
      expect_block_end();
      s->body = parse_body({"endgeneration"});
      next();
      expect_block_end();
      return s;
    }
    if (n == "break" || n == "continue") {
      if (loop_depth_ == 0) error_at(tag.pos, fmt::format("'{}' outside of a loop", n));
      s->kind = n == "break" ? StmtKind::kBreak : StmtKind::kContinue;
      expect_block_end();
      return s;
    }
    static const char* const kJinjaTags[] = {"block", "extends", "include", "import",
                                             "from",  "call",    "autoescape"};
    for (const char* known : kJinjaTags)
      if (n == known) unsupported_at(tag.pos, fmt::format("the {{% {} %}} tag", n));
    error_at(tag.pos, fmt::format("encountered unknown tag '{}'", n));
  }

  StmtPtr parse_if(StmtPtr s) {
    s->kind = StmtKind::kIf;
    while (true) {
      s->conditions.push_back(parse_tuple(false));
      expect_block_end();
      s->bodies.push_back(parse_body({"elif", "else", "endif"}));
      const std::string tag = next().text;
      if (tag == "elif") continue;
      if (tag == "else") {
        expect_block_end();
        s->else_body = parse_body({"endif"});
        next();
      }
      expect_block_end();
      return s;
    }
  }

  StmtPtr parse_for(StmtPtr s) {
    s->kind = StmtKind::kFor;
    s->target = parse_assign_target(false);
    if (!skip_name("in")) error_at(cur().pos, "expected 'in' in for loop, got " + describe(cur()));
    s->expr = parse_tuple(false);
    if (skip_name("if")) s->filter = parse_expression(true);
    if (skip_name("recursive")) unsupported_at(s->pos, "a recursive for loop");
    expect_block_end();
    ++loop_depth_;
    s->body = parse_body({"endfor", "else"});
    --loop_depth_;
    if (next().text == "else") {
      expect_block_end();
      s->else_body = parse_body({"endfor"});
      next();
    }
    expect_block_end();
    return s;
  }

  StmtPtr parse_set(StmtPtr s) {
    s->target = parse_assign_target(true);
    if (skip_op("=")) {
      s->kind = StmtKind::kSet;
      s->expr = parse_tuple(true);
      expect_block_end();
      return s;
    }
    if (s->target.kind != Target::Kind::kName) error_at(cur().pos, "expected '='");
    s->kind = StmtKind::kSetBlock;
    if (is_op("|")) s->expr = parse_filter_chain(nullptr);
    expect_block_end();
    s->body = parse_body({"endset"});
    next();
    expect_block_end();
    return s;
  }

  StmtPtr parse_macro(StmtPtr s) {
    s->kind = StmtKind::kMacro;
    s->text = expect_name();
    expect_op("(");
    while (!is_op(")")) {
      if (!s->params.empty()) expect_op(",");
      if (is_op(")")) break;
      MacroParam p;
      p.name = expect_name();
      if (skip_op("=")) p.default_value = parse_expression(true);
      s->params.push_back(std::move(p));
    }
    next();
    expect_block_end();
    const int saved = loop_depth_;
    loop_depth_ = 0;
    s->body = parse_body({"endmacro"});
    loop_depth_ = saved;
    next();
    expect_block_end();
    return s;
  }

  StmtPtr parse_filter_block(StmtPtr s) {
    s->kind = StmtKind::kFilterBlock;
    s->expr = parse_filter_chain(nullptr, /*leading_pipe=*/false);
    expect_block_end();
    s->body = parse_body({"endfilter"});
    next();
    expect_block_end();
    return s;
  }

  StmtPtr parse_with(StmtPtr s) {
    s->kind = StmtKind::kWith;
    while (cur().type != TokenType::kBlockEnd) {
      if (!s->with_targets.empty()) expect_op(",");
      s->with_targets.push_back(parse_assign_target(false));
      expect_op("=");
      s->with_values.push_back(parse_expression(true));
    }
    expect_block_end();
    s->body = parse_body({"endwith"});
    next();
    expect_block_end();
    return s;
  }

  // A name, `ns.attr` (set only) or a tuple of names.
  Target parse_assign_target(bool allow_namespace) {
    Target t;
    t.pos = cur().pos;
    std::vector<Target> items;
    bool tuple = false;
    bool parens = skip_op("(");
    while (true) {
      Target item;
      item.pos = cur().pos;
      if (is_op("(")) {
        item = parse_assign_target(false);
      } else {
        item.name = expect_name();
        if (allow_namespace && is_op(".") && peek().type == TokenType::kName) {
          next();
          item.kind = Target::Kind::kNamespaceAttr;
          item.attr = next().text;
        }
      }
      items.push_back(std::move(item));
      if (!skip_op(",")) break;
      tuple = true;
      if (cur().type != TokenType::kName && !is_op("(")) break;
    }
    if (parens) expect_op(")");
    if (!tuple && !parens) return std::move(items[0]);
    if (!tuple && items.size() == 1) return std::move(items[0]);
    t.kind = Target::Kind::kTuple;
    t.items = std::move(items);
    for (const Target& it : t.items)
      if (it.kind == Target::Kind::kNamespaceAttr)
        error_at(it.pos, "namespace attributes cannot be assigned in a tuple");
    return t;
  }

  ExprPtr make(ExprKind kind, SourcePos pos) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->pos = pos;
    return e;
  }

  // `a, b` forms a tuple where jinja2 allows it (print, set, if, for iterables). For-loop
  // iterables parse without conditional expressions so that `if` starts the loop filter.
  ExprPtr parse_tuple(bool with_condexpr) {
    const SourcePos pos = cur().pos;
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) {
        if (!skip_op(",")) break;
        is_tuple = true;
      }
      if (ends_tuple()) break;
      items.push_back(parse_expression(with_condexpr));
    }
    if (!is_tuple) {
      if (items.empty()) error_at(pos, "expected an expression, got " + describe(cur()));
      return std::move(items[0]);
    }
    auto e = make(ExprKind::kTuple, pos);
    e->children = std::move(items);
    return e;
  }

  bool ends_tuple() const {
    const Token& t = cur();
    if (t.type == TokenType::kVariableEnd || t.type == TokenType::kBlockEnd ||
        t.type == TokenType::kEof)
      return true;
    if (t.type == TokenType::kOperator && (t.text == ")" || t.text == "]" || t.text == "}" || t.text == "="))
      return true;
    if (t.type == TokenType::kName && (t.text == "in" || t.text == "if" || t.text == "recursive"))
      return true;
    return false;
  }

 public:
  ExprPtr parse_expression(bool with_condexpr) {
    return with_condexpr ? parse_condexpr() : parse_or();
  }

 private:
  ExprPtr parse_condexpr() {
    SourcePos pos = cur().pos;
    ExprPtr expr1 = parse_or();
    while (skip_name("if")) {
      auto e = make(ExprKind::kCondExpr, pos);
      ExprPtr test = parse_or();
      ExprPtr otherwise = skip_name("else") ? parse_condexpr() : nullptr;
      e->children.push_back(std::move(test));
      e->children.push_back(std::move(expr1));
      e->children.push_back(std::move(otherwise));
      expr1 = std::move(e);
      pos = cur().pos;
    }
    return expr1;
  }

  ExprPtr parse_or() {
    const SourcePos pos = cur().pos;
    ExprPtr left = parse_and();
    while (skip_name("or")) {
      auto e = make(ExprKind::kOr, pos);
      e->children.push_back(std::move(left));
      e->children.push_back(parse_and());
      left = std::move(e);
    }
    return left;
  }

  ExprPtr parse_and() {
    const SourcePos pos = cur().pos;
    ExprPtr left = parse_not();
    while (skip_name("and")) {
      auto e = make(ExprKind::kAnd, pos);
      e->children.push_back(std::move(left));
      e->children.push_back(parse_not());
      left = std::move(e);
    }
    return left;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      const SourcePos pos = next().pos;
      auto e = make(ExprKind::kNot, pos);
      e->children.push_back(parse_not());
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    const SourcePos pos = cur().pos;
    ExprPtr first = parse_math1();
    std::vector<std::string> ops;
    std::vector<ExprPtr> rest;
    while (true) {
      const Token& t = cur();
      if (t.type == TokenType::kOperator &&
          (t.text == "==" || t.text == "!=" || t.text == "<" || t.text == "<=" || t.text == ">" ||
           t.text == ">=")) {
        ops.push_back(next().text);
      } else if (is_name("in")) {
        next();
        ops.push_back("in");
      } else if (is_name("not") && peek().type == TokenType::kName && peek().text == "in") {
        next();
        next();
        ops.push_back("notin");
      } else {
        break;
      }
      rest.push_back(parse_math1());
    }
    if (ops.empty()) return first;
    auto e = make(ExprKind::kCompare, pos);
    e->children.push_back(std::move(first));
    for (auto& r : rest) e->children.push_back(std::move(r));
    e->ops = std::move(ops);
    return e;
  }

  ExprPtr binary(const std::string& op, ExprPtr l, ExprPtr r, SourcePos pos) {
    auto e = make(ExprKind::kBinary, pos);
    e->name = op;
    e->children.push_back(std::move(l));
    e->children.push_back(std::move(r));
    return e;
  }

  ExprPtr parse_math1() {
    const SourcePos pos = cur().pos;
    ExprPtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      const std::string op = next().text;
      left = binary(op, std::move(left), parse_concat(), pos);
    }
    return left;
  }

  ExprPtr parse_concat() {
    const SourcePos pos = cur().pos;
    ExprPtr first = parse_math2();
    if (!is_op("~")) return first;
    auto e = make(ExprKind::kConcat, pos);
    e->children.push_back(std::move(first));
    while (skip_op("~")) e->children.push_back(parse_math2());
    return e;
  }

  ExprPtr parse_math2() {
    const SourcePos pos = cur().pos;
    ExprPtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const std::string op = next().text;
      left = binary(op, std::move(left), parse_pow(), pos);
    }
    return left;
  }

  ExprPtr parse_pow() {
    const SourcePos pos = cur().pos;
    ExprPtr left = parse_unary(true);
    while (skip_op("**")) left = binary("**", std::move(left), parse_unary(true), pos);
    return left;
  }

  ExprPtr parse_unary(bool with_filter) {
    const SourcePos pos = cur().pos;
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      const bool neg = next().text == "-";
      node = make(neg ? ExprKind::kNeg : ExprKind::kPos, pos);
      node->children.push_back(parse_unary(false));
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  ExprPtr parse_primary() {
    const Token t = cur();
    switch (t.type) {
      case TokenType::kName: {
        next();
        auto e = make(ExprKind::kConst, t.pos);
        if (t.text == "true" || t.text == "True") {
          e->value = Value(true);
        } else if (t.text == "false" || t.text == "False") {
          e->value = Value(false);
        } else if (t.text == "none" || t.text == "None") {
          e->value = Value::none();
        } else {
          e->kind = ExprKind::kName;
          e->name = t.text;
        }
        return e;
      }
      case TokenType::kString: {
        std::string s;
        while (cur().type == TokenType::kString) s += next().text;  // adjacent literals join
        auto e = make(ExprKind::kConst, t.pos);
        e->value = Value(std::move(s));
        return e;
      }
      case TokenType::kInteger: {
        next();
        auto e = make(ExprKind::kConst, t.pos);
        e->value = Value(t.int_value);
        return e;
      }
      case TokenType::kFloat: {
        next();
        auto e = make(ExprKind::kConst, t.pos);
        e->value = Value(t.float_value);
        return e;
      }
      case TokenType::kOperator:
        if (t.text == "(") {
          next();
          // jinja2: `()` is an empty tuple; `(x)` is x; `(x,)` is a tuple.
          if (skip_op(")")) {
            auto e = make(ExprKind::kTuple, t.pos);
            return e;
          }
          std::vector<ExprPtr> items;
          bool is_tuple = false;
          items.push_back(parse_expression(true));
          while (skip_op(",")) {
            is_tuple = true;
            if (is_op(")")) break;
            items.push_back(parse_expression(true));
          }
          expect_op(")");
          if (!is_tuple) return std::move(items[0]);
          auto e = make(ExprKind::kTuple, t.pos);
          e->children = std::move(items);
          return e;
        }
        if (t.text == "[") {
          next();
          auto e = make(ExprKind::kList, t.pos);
          while (!is_op("]")) {
            if (!e->children.empty()) expect_op(",");
            if (is_op("]")) break;
            e->children.push_back(parse_expression(true));
          }
          next();
          return e;
        }
        if (t.text == "{") {
          next();
          auto e = make(ExprKind::kDict, t.pos);
          while (!is_op("}")) {
            if (!e->children.empty()) expect_op(",");
            if (is_op("}")) break;
            e->children.push_back(parse_expression(true));
            expect_op(":");
            e->children.push_back(parse_expression(true));
          }
          next();
          return e;
        }
        break;
      default:
        break;
    }
    unexpected();
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      if (is_op(".") || is_op("[")) {
        node = parse_subscript(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    while (true) {
      if (is_op("|")) {
        node = parse_filter_chain(std::move(node), true, /*single=*/true);
      } else if (is_name("is")) {
        node = parse_test(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr node) {
    const Token t = next();
    if (t.text == ".") {
      const Token attr = next();
      if (attr.type == TokenType::kName) {
        auto e = make(ExprKind::kGetAttr, t.pos);
        e->name = attr.text;
        e->children.push_back(std::move(node));
        return e;
      }
      if (attr.type == TokenType::kInteger) {
        auto e = make(ExprKind::kGetItem, t.pos);
        e->children.push_back(std::move(node));
        auto idx = make(ExprKind::kConst, attr.pos);
        idx->value = Value(attr.int_value);
        e->children.push_back(std::move(idx));
        return e;
      }
      error_at(attr.pos, "expected name or number after '.'");
    }
    // '[' subscript: an index, a slice, or a tuple of them (only single indexes/slices supported).
    std::vector<ExprPtr> parts;
    bool is_slice = false;
    ExprPtr slice_parts[3];
    int which = 0;
    if (!is_op(":")) slice_parts[0] = parse_expression(true);
    while (skip_op(":")) {
      is_slice = true;
      ++which;
      if (which > 2) error_at(cur().pos, "too many ':' in slice");
      if (!is_op(":") && !is_op("]")) slice_parts[which] = parse_expression(true);
    }
    if (is_op(",")) unsupported_at(cur().pos, "a tuple subscript");
    expect_op("]");
    if (!is_slice) {
      auto e = make(ExprKind::kGetItem, t.pos);
      e->children.push_back(std::move(node));
      e->children.push_back(std::move(slice_parts[0]));
      return e;
    }
    auto e = make(ExprKind::kSlice, t.pos);
    e->children.push_back(std::move(node));
    for (auto& p : slice_parts) e->children.push_back(std::move(p));
    return e;
  }

  void parse_call_args(Expr* e) {
    expect_op("(");
    bool first = true;
    while (!is_op(")")) {
      if (!first) expect_op(",");
      first = false;
      if (is_op(")")) break;
      if (is_op("*") || is_op("**")) unsupported_at(cur().pos, "*args / **kwargs in a call");
      if (cur().type == TokenType::kName && peek().type == TokenType::kOperator &&
          peek().text == "=") {
        std::string key = next().text;
        next();
        e->kwargs.emplace_back(std::move(key), parse_expression(true));
      } else {
        if (!e->kwargs.empty()) error_at(cur().pos, "positional argument after keyword argument");
        e->children.push_back(parse_expression(true));
      }
    }
    next();
  }

  ExprPtr parse_call(ExprPtr node) {
    auto e = make(ExprKind::kCall, cur().pos);
    e->children.push_back(std::move(node));
    parse_call_args(e.get());
    return e;
  }

  // `| name(args)` (repeated unless `single`); `leading_pipe` false for {% filter name %}.
  ExprPtr parse_filter_chain(ExprPtr node, bool leading_pipe = true, bool single = false) {
    bool first = true;
    while (true) {
      if (leading_pipe || !first) {
        if (!skip_op("|")) break;
      }
      first = false;
      const SourcePos pos = cur().pos;
      std::string name = expect_name();
      while (skip_op(".")) {
        name += '.';
        name += expect_name();
      }
      if (!is_jinja2_filter(name)) error_at(pos, fmt::format("no filter named '{}'", name));
      auto e = make(ExprKind::kFilter, pos);
      e->name = name;
      e->children.push_back(std::move(node));
      if (is_op("(")) parse_call_args(e.get());
      node = std::move(e);
      if (single) break;
    }
    return node;
  }

  ExprPtr parse_test(ExprPtr node) {
    const SourcePos pos = next().pos;  // 'is'
    const bool negated = skip_name("not");
    std::string name = expect_name();
    while (skip_op(".")) {
      name += '.';
      name += expect_name();
    }
    if (!is_jinja2_test(name)) error_at(pos, fmt::format("no test named '{}'", name));
    auto e = make(ExprKind::kTest, pos);
    e->name = name;
    e->children.push_back(std::move(node));
    const Token& t = cur();
    if (is_op("(")) {
      parse_call_args(e.get());
    } else if ((t.type == TokenType::kName || t.type == TokenType::kString ||
                t.type == TokenType::kInteger || t.type == TokenType::kFloat || is_op("[") ||
                is_op("{")) &&
               !(is_name("else") || is_name("or") || is_name("and"))) {
      if (is_name("is")) error_at(t.pos, "you cannot chain multiple tests with is");
      e->children.push_back(parse_postfix(parse_primary()));
    }
    if (!negated) return e;
    auto n = make(ExprKind::kNot, pos);
    n->children.push_back(std::move(e));
    return n;
  }

  std::vector<Token> toks_;
  size_t i_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

Body parse_template(const std::string& source) { return Parser(tokenize(source)).parse_all(); }

}  // namespace trellis::jinja
