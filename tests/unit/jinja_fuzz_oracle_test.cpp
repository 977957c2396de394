// Differential test: random expressions and small statement templates rendered by trellis and by
// Python jinja2 (transformers' environment), compared byte for byte. A case passes when both render
// the same text, both fail, or trellis refuses it with kUnsupported (never silently different).
#include <gtest/gtest.h>

#include <cstdlib>

#include <nlohmann/json.hpp>

#include "runtime/chat_template.h"
#include "test_util.h"
#include "unit/chat_template_oracle.h"

namespace trellis {
namespace {

using ojson = nlohmann::ordered_json;

constexpr int kCases = 1500;

class Gen {
 public:
  explicit Gen(uint64_t seed) : rng_(seed) {}

  size_t pick(size_t n) { return static_cast<size_t>(rng_.next() % n); }
  template <size_t N>
  const char* one_of(const char* const (&a)[N]) {
    return a[pick(N)];
  }

  std::string atom() {
    static const char* const kAtoms[] = {
        "0", "1", "2", "-3", "7", "2.5", "0.1", "1e20", "true", "false", "none", "''", "'a'", "'Ab c'",
        "' x '", "'é日'", "'a,b'", "\"it's\"", "[]", "[1, 2, 3]", "['b', 'A', 'a']", "(1, 'x')", "{}",
        "{'a': 1, 'b': [2]}", "s", "n", "f", "l", "d", "e", "u", "msgs", "missing", "ns_t", "big"};
    return one_of(kAtoms);
  }

  std::string postfix(const std::string& x) {
    static const char* const kPost[] = {
        ".a", "['b']", "[0]", "[-1]", "[1:]", "[::-1]", "[:2]", ".role", "[0].role", ".get('a')",
        ".get('z', 0)", ".items()", ".keys()", ".values()", ".strip()", ".split(',')", ".split()",
        ".upper()", ".lower()", ".title()", ".startswith('a')", ".endswith('c')", ".replace('a', 'Z')",
        ".lstrip()", ".rstrip('c')", ".find('b')", ".count('a')", ".capitalize()", ".isdigit()"};
    return x + one_of(kPost);
  }

  std::string filter(const std::string& x) {
    static const char* const kFilters[] = {
        "length", "trim", "upper", "lower", "title", "capitalize", "first", "last", "join(',')", "join",
        "list", "sort", "sort(reverse=true)", "unique", "reverse", "string", "int", "float", "abs",
        "round", "round(1)", "tojson", "tojson(indent=2)", "items", "default('z')", "default('z', true)",
        "replace('a', 'b')", "select('odd')", "reject('none')", "selectattr('role', 'equalto', 'user')",
        "map(attribute='role')", "map('upper')", "sum", "max", "min", "dictsort", "wordcount",
        "indent(2)", "count", "center(9)", "e", "safe", "list|length", "batch(2)"};
    return x + "|" + one_of(kFilters);
  }

  std::string test(const std::string& x) {
    static const char* const kTests[] = {
        "defined", "undefined", "none", "string", "number", "integer", "float", "mapping", "iterable",
        "sequence", "boolean", "true", "false", "odd", "even", "divisibleby 3", "in [1, 'a']",
        "equalto 1", "lower", "upper", "not none", "not defined", "sameas none", "callable"};
    return x + " is " + one_of(kTests);
  }

  std::string expr(int depth) {
    if (depth <= 0) return atom();
    switch (pick(12)) {
      case 0: case 1: return atom();
      case 2: return postfix(primary(depth - 1));
      case 3: return filter(primary(depth - 1));
      case 4: return test(primary(depth - 1));
      case 5: {
        static const char* const kOps[] = {"+", "-", "*", "/", "//", "%", "**", "~", "==", "!=", "<",
                                           ">", "<=", ">=", "in", "not in", "and", "or"};
        return expr(depth - 1) + " " + one_of(kOps) + " " + expr(depth - 1);
      }
      case 6: return std::string("not ") + expr(depth - 1);
      case 7: return expr(depth - 1) + " if " + expr(depth - 1) + " else " + expr(depth - 1);
      case 8: return std::string("[") + expr(depth - 1) + ", " + expr(depth - 1) + "]";
      case 9: return std::string("-") + primary(depth - 1);
      case 10: return std::string("(") + expr(depth - 1) + ")";
      default: return std::string("{'k': ") + expr(depth - 1) + "}";
    }
  }

  std::string primary(int depth) { return pick(2) ? atom() : std::string("(") + expr(depth) + ")"; }

  // Text, tags and comments with every whitespace-control marker, to exercise trim_blocks,
  // lstrip_blocks, '-' and '+' against jinja2's lexer.
  std::string whitespace_template() {
    static const char* const kText[] = {"a", " ", "  ", "\n", "\t", "\n  ", " \n", "\n\n", "  \t\n ", "\u00a0", "b\n"};
    static const char* const kOpen[] = {"{% if true %}", "{%- if true %}", "{% if true -%}", "{%+ if true %}",
                                        "{% if true +%}", "{%- if true -%}", "{% for i in [1, 2] %}"};
    static const char* const kClose[] = {"{% endif %}", "{%- endif %}", "{% endif -%}", "{%+ endif %}", "{%- endif -%}"};
    static const char* const kLeaf[] = {"{{ 'x' }}", "{{- 'x' }}", "{{ 'x' -}}", "{# c #}", "{#- c #}", "{# c -#}",
                                        "{%- raw %} r {% endraw -%}", "{% raw %}{{ r }}{% endraw %}", "{% set v = 1 %}",
                                        "{%- set v = 1 -%}"};
    std::string out;
    int open_ifs = 0;
    bool loop_open = false;
    const size_t n = 4 + pick(10);
    for (size_t i = 0; i < n; ++i) {
      switch (pick(4)) {
        case 0: case 1: out += one_of(kText); break;
        case 2: out += one_of(kLeaf); break;
        default:
          if (open_ifs > 0 && pick(2)) {
            out += loop_open && open_ifs == 1 ? "{% endfor %}" : one_of(kClose);
            if (loop_open && open_ifs == 1) loop_open = false;
            --open_ifs;
          } else {
            const char* o = one_of(kOpen);
            if (std::string(o).find("for") != std::string::npos) {
              if (open_ifs > 0 || loop_open) o = kOpen[0];
              else loop_open = true;
            }
            out += o;
            ++open_ifs;
          }
      }
      out += one_of(kText);
    }
    while (open_ifs > 0) {
      out += loop_open && open_ifs == 1 ? "{% endfor %}" : one_of(kClose);
      out += one_of(kText);
      --open_ifs;
    }
    return out;
  }

  std::string statement_template() {
    if (pick(4) == 0) return whitespace_template();
    switch (pick(6)) {
      case 0:
        return std::string("{% for x in ") + primary(1) + " %}{{ loop.index }}:{{ x }}{% if loop.last %}.{% endif %}{% else %}E{% endfor %}";
      case 1:
        return std::string("{% set ns = namespace(v=") + expr(1) + ") %}{% for m in msgs %}{% set ns.v = ns.v ~ m.role %}{% endfor %}{{ ns.v }}";
      case 2:
        return std::string("{% if ") + expr(2) + " %}A{% elif " + expr(1) + " %}B{% else %}C{% endif %}";
      case 3:
        return std::string("{% for k, v in ") + primary(1) + "|items %}{{ k }}={{ v }};{% endfor %}";
      case 4:
        return std::string("  {%- set t = ") + expr(2) + " %}\n  {{ t }}\n{% if t %}\n    yes {{- ' ' ~ t|string }}\n{% endif %}";
      default:
        return std::string("{{ ") + expr(3) + " }}";
    }
  }

 private:
  test::SplitMix64 rng_;
};

TEST(ChatTemplateFuzzOracle, RandomTemplatesMatchJinja2) {
  if (test::reference_python().empty()) GTEST_SKIP() << "no Python with jinja2 >= 3.1 (set TRELLIS_PYTHON)";
  const ojson context = ojson::parse(R"({
    "s": "abc, b", "n": 5, "f": -1.5, "l": [3, 1, 2], "d": {"a": 1, "b": "x"}, "e": "", "u": "Ünï 𝄞",
    "msgs": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " yo "}],
    "ns_t": null, "big": 123456789012
  })");
  // TRELLIS_FUZZ_SEED / TRELLIS_FUZZ_CASES explore beyond the fixed corpus.
  const char* seed_env = std::getenv("TRELLIS_FUZZ_SEED");
  const char* cases_env = std::getenv("TRELLIS_FUZZ_CASES");
  Gen gen(seed_env ? std::strtoull(seed_env, nullptr, 0) : 0x7e11155);
  const int cases = cases_env ? std::atoi(cases_env) : kCases;
  const bool show_refused = std::getenv("TRELLIS_FUZZ_SHOW_REFUSED") != nullptr;
  std::vector<std::string> sources;
  ojson requests = ojson::array();
  for (int i = 0; i < cases; ++i) {
    sources.push_back(i % 3 == 0 ? gen.statement_template() : std::string("{{ ") + gen.expr(3) + " }}");
    requests.push_back({{"template", sources.back()}, {"mode", "render"}, {"context", context}});
  }
  const nlohmann::json results = test::run_reference(requests);
  ASSERT_EQ(results.size(), sources.size());
  int same = 0, both_failed = 0, refused = 0, mismatches = 0;
  for (size_t i = 0; i < sources.size(); ++i) {
    const nlohmann::json& ref = results[i];
    std::string ours;
    bool ok = true;
    ErrorKind kind = ErrorKind::kInternal;
    std::string error;
    try {
      ours = ChatTemplate::parse(sources[i]).render(context);
    } catch (const Error& e) {
      ok = false;
      kind = e.kind();
      error = e.what();
    }
    if (ref.value("error_type", "") == "Timeout") {
      ++refused;  // Python ran away (a huge integer power); nothing to compare
    } else if (!ok && kind == ErrorKind::kUnsupported) {
      ++refused;
      if (show_refused) std::printf("refused: %s\n  %s\n  jinja2: %s\n", sources[i].c_str(), error.c_str(), ref.dump().c_str());
    } else if (ref["ok"].get<bool>() && ok && ours == ref["output"].get<std::string>()) {
      ++same;
    } else if (!ref["ok"].get<bool>() && !ok) {
      ++both_failed;
    } else if (++mismatches <= 25) {
      ADD_FAILURE() << "template: " << sources[i] << "\n  jinja2:  " << ref.dump() << "\n  trellis: "
                    << (ok ? nlohmann::json(ours).dump() : "error: " + error);
    }
  }
  std::printf("[fuzz oracle] %d identical, %d failed in both, %d refused as unsupported, %d mismatches\n", same,
              both_failed, refused, mismatches);
  EXPECT_EQ(mismatches, 0);
}

}  // namespace
}  // namespace trellis
