// runtime/tokenizer_unicode.cpp: UTF-8 decoding/repair, character predicates and Unicode
// normalization over the generated tables in tokenizer_unicode_data.inc.
#include "runtime/tokenizer_unicode.h"

#include <algorithm>
#include <iterator>
#include <vector>

namespace trellis::tok {
namespace {

struct CccRange {
  char32_t first, last;
  uint8_t ccc;
};
struct MappingEntry {
  char32_t cp;
  uint32_t offset, length;  // into kPool
};
struct CompositionEntry {
  char32_t first, second, composite;
};
struct CodeRange {
  char32_t first, last;
};

#include "runtime/tokenizer_unicode_data.inc"

constexpr char32_t kHangulSBase = 0xAC00, kHangulLBase = 0x1100, kHangulVBase = 0x1161,
                   kHangulTBase = 0x11A7;
constexpr int kHangulLCount = 19, kHangulVCount = 21, kHangulTCount = 28;
constexpr int kHangulNCount = kHangulVCount * kHangulTCount;
constexpr int kHangulSCount = kHangulLCount * kHangulNCount;

template <size_t N>
bool in_ranges(const CodeRange (&ranges)[N], char32_t cp) {
  auto it = std::upper_bound(std::begin(ranges), std::end(ranges), cp,
                             [](char32_t v, const CodeRange& r) { return v < r.first; });
  if (it == std::begin(ranges)) return false;
  --it;
  return cp <= it->last;
}

template <size_t N>
const MappingEntry* find_mapping(const MappingEntry (&table)[N], char32_t cp) {
  auto it = std::lower_bound(std::begin(table), std::end(table), cp,
                             [](const MappingEntry& e, char32_t v) { return e.cp < v; });
  if (it == std::end(table) || it->cp != cp) return nullptr;
  return &*it;
}

uint8_t combining_class(char32_t cp) {
  if (cp < 0x300) return 0;
  auto it = std::upper_bound(std::begin(kCccRanges), std::end(kCccRanges), cp,
                             [](char32_t v, const CccRange& r) { return v < r.first; });
  if (it == std::begin(kCccRanges)) return 0;
  --it;
  return cp <= it->last ? it->ccc : 0;
}

char32_t compose_pair(char32_t a, char32_t b) {
  // Hangul LV and LVT.
  if (a >= kHangulLBase && a < kHangulLBase + kHangulLCount && b >= kHangulVBase &&
      b < kHangulVBase + kHangulVCount) {
    return kHangulSBase + ((a - kHangulLBase) * kHangulVCount + (b - kHangulVBase)) * kHangulTCount;
  }
  if (a >= kHangulSBase && a < kHangulSBase + kHangulSCount && (a - kHangulSBase) % kHangulTCount == 0 &&
      b > kHangulTBase && b < kHangulTBase + kHangulTCount) {
    return a + (b - kHangulTBase);
  }
  auto it = std::lower_bound(std::begin(kCompositions), std::end(kCompositions), std::pair{a, b},
                             [](const CompositionEntry& e, const std::pair<char32_t, char32_t>& v) {
                               return e.first != v.first ? e.first < v.first : e.second < v.second;
                             });
  if (it == std::end(kCompositions) || it->first != a || it->second != b) return 0;
  return it->composite;
}

void decompose_into(char32_t cp, bool compat, std::vector<char32_t>& out) {
  if (cp < 0xC0) {
    if (!compat || cp < 0xA0) {
      out.push_back(cp);
      return;
    }
  }
  if (cp >= kHangulSBase && cp < kHangulSBase + kHangulSCount) {
    const char32_t s = cp - kHangulSBase;
    out.push_back(kHangulLBase + s / kHangulNCount);
    out.push_back(kHangulVBase + (s % kHangulNCount) / kHangulTCount);
    if (s % kHangulTCount != 0) out.push_back(kHangulTBase + s % kHangulTCount);
    return;
  }
  const MappingEntry* e = compat ? find_mapping(kCompatDecomp, cp) : nullptr;
  if (!e) e = find_mapping(kCanonicalDecomp, cp);
  if (!e) {
    out.push_back(cp);
    return;
  }
  out.insert(out.end(), kPool + e->offset, kPool + e->offset + e->length);
}

}  // namespace

char32_t utf8_decode(std::string_view s, size_t pos, size_t* len) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data()) + pos;
  const unsigned char b = p[0];
  if (b < 0x80) {
    *len = 1;
    return b;
  }
  if (b < 0xE0) {
    *len = 2;
    return (char32_t(b & 0x1F) << 6) | (p[1] & 0x3F);
  }
  if (b < 0xF0) {
    *len = 3;
    return (char32_t(b & 0x0F) << 12) | (char32_t(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
  }
  *len = 4;
  return (char32_t(b & 0x07) << 18) | (char32_t(p[1] & 0x3F) << 12) | (char32_t(p[2] & 0x3F) << 6) |
         (p[3] & 0x3F);
}

void utf8_append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

size_t utf8_sequence_len(std::string_view s, size_t pos, size_t* maximal_subpart) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  const unsigned char b = p[pos];
  if (b < 0x80) return 1;
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b >= 0xC2 && b <= 0xDF) {
    need = 2;
  } else if (b >= 0xE0 && b <= 0xEF) {
    need = 3;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    need = 4;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;
  } else {
    if (maximal_subpart) *maximal_subpart = 1;
    return 0;
  }
  size_t got = 1;
  while (got < need && pos + got < n) {
    const unsigned char c = p[pos + got];
    const unsigned char l = got == 1 ? lo : 0x80, h = got == 1 ? hi : 0xBF;
    if (c < l || c > h) break;
    ++got;
  }
  if (got == need) return need;
  if (maximal_subpart) *maximal_subpart = got;
  return 0;
}

bool utf8_is_valid(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const size_t len = utf8_sequence_len(s, i);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

std::string utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      out.push_back(s[i++]);
      continue;
    }
    size_t bad = 0;
    const size_t len = utf8_sequence_len(s, i, &bad);
    if (len) {
      out.append(s.substr(i, len));
      i += len;
    } else {
      utf8_append(out, kReplacementChar);
      i += bad;
    }
  }
  return out;
}

bool is_whitespace(char32_t cp) {
  if (cp < 0x80) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  switch (cp) {
    case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F:
    case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

bool is_numeric(char32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  return in_ranges(kNumericRanges, cp);
}

bool is_word_char(char32_t cp) {
  if (cp < 0x80) {
    return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || (cp >= '0' && cp <= '9') ||
           cp == '_';
  }
  return in_ranges(kWordRanges, cp);
}

bool is_combining_mark(char32_t cp) { return cp >= 0x300 && in_ranges(kMarkRanges, cp); }

void append_lowercase(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp));
    return;
  }
  const MappingEntry* e = find_mapping(kLowercase, cp);
  if (!e) {
    utf8_append(out, cp);
    return;
  }
  for (uint32_t i = 0; i < e->length; ++i) utf8_append(out, kPool[e->offset + i]);
}

std::string unicode_normalize(std::string_view s, NormalForm form) {
  bool ascii = true;
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) {
      ascii = false;
      break;
    }
  }
  if (ascii) return std::string(s);

  const bool compat = form == NormalForm::kNFKC || form == NormalForm::kNFKD;
  const bool compose = form == NormalForm::kNFC || form == NormalForm::kNFKC;
  std::vector<char32_t> d;
  d.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    size_t len;
    const char32_t cp = utf8_decode(s, i, &len);
    i += len;
    decompose_into(cp, compat, d);
  }
  // Canonical ordering: stable-sort every run of non-starters by combining class.
  for (size_t i = 0; i < d.size();) {
    if (combining_class(d[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < d.size() && combining_class(d[j]) != 0) ++j;
    if (j - i > 1) {
      std::stable_sort(d.begin() + i, d.begin() + j, [](char32_t a, char32_t b) {
        return combining_class(a) < combining_class(b);
      });
    }
    i = j;
  }
  if (compose) {
    std::vector<char32_t> c;
    c.reserve(d.size());
    ptrdiff_t starter = -1;
    for (char32_t cp : d) {
      const uint8_t cc = combining_class(cp);
      if (starter >= 0 && cp >= 0x300) {
        const bool adjacent = static_cast<size_t>(starter) + 1 == c.size();
        const bool blocked = !adjacent && combining_class(c.back()) >= cc;
        if (!blocked && !(cc == 0 && !adjacent)) {
          if (const char32_t comp = compose_pair(c[starter], cp)) {
            c[starter] = comp;
            continue;
          }
        }
      }
      if (cc == 0) starter = static_cast<ptrdiff_t>(c.size());
      c.push_back(cp);
    }
    d.swap(c);
  }
  std::string out;
  out.reserve(s.size() + 8);
  for (char32_t cp : d) utf8_append(out, cp);
  return out;
}

}  // namespace trellis::tok
