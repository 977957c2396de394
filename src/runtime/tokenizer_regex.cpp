// runtime/tokenizer_regex.cpp: PCRE2 wrapper (UTF, UCP, JIT) with Oniguruma-style iteration.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "runtime/tokenizer_regex.h"

#include <pcre2.h>

#include "core/error.h"
#include "runtime/tokenizer_unicode.h"

namespace trellis::tok {
namespace {

// Per-thread match scratch: match data for the whole-match offsets and a JIT stack large enough
// for backtracking over long whitespace or punctuation runs.
struct MatchScratch {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
  MatchScratch() {
    data = pcre2_match_data_create(1, nullptr);
    context = pcre2_match_context_create(nullptr);
    jit_stack = pcre2_jit_stack_create(64 * 1024, 16 * 1024 * 1024, nullptr);
    if (context && jit_stack) pcre2_jit_stack_assign(context, nullptr, jit_stack);
  }
  ~MatchScratch() {
    if (jit_stack) pcre2_jit_stack_free(jit_stack);
    if (context) pcre2_match_context_free(context);
    if (data) pcre2_match_data_free(data);
  }
};

MatchScratch& scratch() {
  thread_local MatchScratch s;
  return s;
}

// Rewrites the Oniguruma (Ruby syntax) constructs whose meaning differs in PCRE2: \h/\H are hex
// digits, \w/\W are letters, marks, decimal digits and connector punctuation (PCRE2 10.42's \w
// has all numbers and no marks), and the inline flag (?m) means dot-matches-newline. ^ and $
// are line anchors in both once PCRE2_MULTILINE is set.
std::string translate_oniguruma(std::string_view p) {
  constexpr const char* kWordClass = "\\p{L}\\p{M}\\p{Nd}\\p{Pc}";
  std::string out;
  out.reserve(p.size() + 16);
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char d = p[++i];
      if (d == 'h') {
        out += in_class ? "0-9a-fA-F" : "[0-9a-fA-F]";
      } else if (d == 'H' && !in_class) {
        out += "[^0-9a-fA-F]";
      } else if (d == 'w') {
        out += in_class ? std::string(kWordClass) : "[" + std::string(kWordClass) + "]";
      } else if (d == 'W' && !in_class) {
        out += "[^" + std::string(kWordClass) + "]";
      } else {
        out += c;
        out += d;
      }
      continue;
    }
    if (in_class) {
      if (c == ']') in_class = false;
      out += c;
      continue;
    }
    if (c == '[') {
      in_class = true;
      out += c;
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];  // a leading ] is literal
      continue;
    }
    if (c == '(' && i + 2 < p.size() && p[i + 1] == '?' &&
        std::string_view("imx-").find(p[i + 2]) != std::string_view::npos) {
      out += "(?";
      i += 2;
      for (; i < p.size() && std::string_view("imx-").find(p[i]) != std::string_view::npos; ++i) {
        out += p[i] == 'm' ? 's' : p[i];
      }
      --i;
      continue;
    }
    out += c;
  }
  return out;
}

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof(buf));
  return reinterpret_cast<const char*>(buf);
}

}  // namespace

struct Regex::Impl {
  pcre2_code* code = nullptr;
  bool jit = false;
  std::string where;
  ~Impl() {
    if (code) pcre2_code_free(code);
  }
};

Regex::~Regex() = default;

static std::unique_ptr<Regex::Impl> compile_impl(std::string_view pattern, uint32_t extra,
                                                 std::string_view where) {
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                    PCRE2_UTF | PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C | extra, &err, &err_offset, nullptr);
  if (!code) {
    fail(ErrorKind::kUnsupported,
         "{}: regex /{}/ is not supported (PCRE2 at offset {}: {}); tokenizer.json regexes are "
         "Oniguruma syntax and only the PCRE2-compatible subset is handled",
         where, pattern, err_offset, pcre2_message(err));
  }
  auto impl = std::make_unique<Regex::Impl>();
  impl->code = code;
  impl->jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  impl->where = std::string(where);
  return impl;
}

std::unique_ptr<Regex> Regex::compile(std::string_view pattern, std::string_view where) {
  std::unique_ptr<Regex> r(new Regex());
  r->impl_ = compile_impl(translate_oniguruma(pattern), PCRE2_MULTILINE, where);
  return r;
}

std::unique_ptr<Regex> Regex::literal(std::string_view literal, std::string_view where) {
  std::unique_ptr<Regex> r(new Regex());
  r->impl_ = compile_impl(literal, PCRE2_LITERAL, where);
  return r;
}

void Regex::find_all(std::string_view subject,
                     std::vector<std::pair<size_t, size_t>>* matches) const {
  matches->clear();
  MatchScratch& s = scratch();
  const auto* subj = reinterpret_cast<PCRE2_SPTR>(subject.data());
  const size_t n = subject.size();
  size_t search_from = 0;
  bool have_last = false;
  size_t last_end = 0;
  while (search_from <= n) {
    int rc = impl_->jit ? pcre2_jit_match(impl_->code, subj, n, search_from, PCRE2_NO_UTF_CHECK,
                                          s.data, s.context)
                        : PCRE2_ERROR_JIT_BADOPTION;
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT || rc == PCRE2_ERROR_JIT_BADOPTION) {
      rc = pcre2_match(impl_->code, subj, n, search_from, PCRE2_NO_UTF_CHECK, s.data, nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) return;
    if (rc < 0) {
      fail(ErrorKind::kInvalidArgument, "{}: regex match failed on a {}-byte input: {}",
           impl_->where, n, pcre2_message(rc));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(s.data);
    const size_t start = ov[0], end = ov[1];
    if (start == end && have_last && last_end == end) {
      // An empty match right where the previous match ended: skip one character.
      if (search_from >= n) return;
      search_from += utf8_len(static_cast<unsigned char>(subject[search_from]));
      continue;
    }
    matches->emplace_back(start, end);
    have_last = true;
    last_end = end;
    search_from = end;
  }
}

}  // namespace trellis::tok
