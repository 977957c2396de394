// tests/unit/exl3_vectors.h: parser for ../shared/spec/exl3_test_vectors.txt and the input
// recipes of spec section 7, shared by the exl3_*_test.cpp files.
//
// Line grammar: `TAG token...` where a token is `key=value`, or `label:` followed by a list of
// 16-bit hex words to the end of the line. '#' starts a comment line. Every field a checker reads
// is marked consumed, so a checker can assert that no field of a line went unchecked.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/fp16.h"
#include "exl3/codebook.h"
#include "exl3/tile.h"
#include "test_util.h"

namespace trellis::exl3::test {

struct VectorLine {
  int line_no = 0;
  std::string text;
  std::string tag;
  std::map<std::string, std::string> fields;
  std::string label;           // text before ':' of a list, e.g. "row0[0..15]" (empty if none)
  std::vector<uint16_t> list;  // hex words after the label
  bool list_ok = true;         // all list tokens parsed as 16-bit hex

  mutable std::set<std::string> consumed;
  mutable bool list_read = false;

  // The hex list; reading it marks it checked.
  const std::vector<uint16_t>& get_list() const {
    list_read = true;
    return list;
  }

  bool has(const std::string& key) const { return fields.count(key) != 0; }
  const std::string& get(const std::string& key) const {
    static const std::string kMissing;
    auto it = fields.find(key);
    if (it == fields.end()) {
      ADD_FAILURE() << "line " << line_no << ": missing field '" << key << "': " << text;
      return kMissing;
    }
    consumed.insert(key);
    return it->second;
  }
  int get_int(const std::string& key) const { return std::stoi(get(key)); }
  uint64_t get_hex(const std::string& key) const { return std::stoull(get(key), nullptr, 16); }
  double get_double(const std::string& key) const { return std::stod(get(key)); }
  // Half a unit in the last printed decimal of a field (the field's printed precision), plus a
  // hair for the binary representation of the printed decimal itself.
  double half_ulp(const std::string& key) const {
    const std::string& s = fields.at(key);
    const size_t dot = s.find('.');
    const int decimals = dot == std::string::npos ? 0 : static_cast<int>(s.size() - dot - 1);
    return 0.5 * std::pow(10.0, -decimals) * (1.0 + 1e-6);
  }
  // Every key=value field and the list (if any) was read by the checker.
  void expect_all_consumed() const {
    for (const auto& [k, v] : fields)
      EXPECT_TRUE(consumed.count(k)) << "line " << line_no << ": field '" << k << "' not checked";
    EXPECT_TRUE(label.empty() || list_read) << "line " << line_no << ": list not checked";
  }
};

inline std::vector<VectorLine> parse_vector_file(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::vector<VectorLine> lines;
  std::string text;
  int line_no = 0;
  while (std::getline(in, text)) {
    ++line_no;
    if (text.empty() || text[0] == '#') continue;
    VectorLine v;
    v.line_no = line_no;
    v.text = text;
    std::istringstream ss(text);
    ss >> v.tag;
    std::string tok;
    bool in_list = false;
    while (ss >> tok) {
      if (in_list) {
        size_t used = 0;
        unsigned long word = 0;
        try {
          word = std::stoul(tok, &used, 16);
        } catch (...) {
          used = 0;
        }
        if (used != tok.size() || tok.size() != 4 || word > 0xFFFF) v.list_ok = false;
        v.list.push_back(static_cast<uint16_t>(word));
      } else if (tok.back() == ':') {
        v.label = tok.substr(0, tok.size() - 1);
        in_list = true;
      } else if (const size_t eq = tok.find('='); eq != std::string::npos) {
        v.fields[tok.substr(0, eq)] = tok.substr(eq + 1);
      } else {
        v.list_ok = false;  // a bare token outside a list: unrecognised syntax
      }
    }
    lines.push_back(std::move(v));
  }
  return lines;
}

// The vector file, parsed once per process.
inline const std::vector<VectorLine>& vector_lines() {
  static const std::vector<VectorLine> lines =
      parse_vector_file(trellis::test::shared_path("spec/exl3_test_vectors.txt"));
  return lines;
}

inline std::vector<const VectorLine*> lines_with_tag(const std::string& tag) {
  std::vector<const VectorLine*> out;
  for (const auto& l : vector_lines())
    if (l.tag == tag) out.push_back(&l);
  return out;
}

inline Codebook codebook_of(const VectorLine& l) {
  const int cb = l.get_int("cb");
  EXPECT_TRUE(cb >= 0 && cb <= 2) << "line " << l.line_no;
  return static_cast<Codebook>(cb);
}

// A list label `name[a..b]` (or just `name`): name and the index range it covers.
struct ListLabel {
  std::string name;
  int first = 0, last = -1;  // last < first: no range given
};
inline ListLabel parse_label(const std::string& label) {
  ListLabel out;
  const size_t open = label.find('[');
  out.name = label.substr(0, open);
  if (open != std::string::npos) {
    const size_t dots = label.find("..", open), close = label.find(']', open);
    EXPECT_TRUE(dots != std::string::npos && close == label.size() - 1) << "bad label " << label;
    if (dots == std::string::npos || close == std::string::npos) return out;
    out.first = std::stoi(label.substr(open + 1, dots - open - 1));
    out.last = std::stoi(label.substr(dots + 2, close - dots - 2));
  }
  return out;
}

template <typename T>
uint64_t fnv_of(const std::vector<T>& v) {
  return trellis::test::fnv1a64(v.data(), v.size() * sizeof(T));
}

// Spec 7.3: the states of the 32 tiles (tile order t = 16*tk + tn) of the K-bit trellis recipe.
inline std::vector<uint16_t> recipe_trellis_states(int K) {
  trellis::test::SplitMix64 rng(0x5EED0000ull + static_cast<uint64_t>(K));
  constexpr int kTiles = 32;
  const int span = (16 + K - 1) / K;
  std::vector<uint16_t> states(kTiles * kTileSize);
  for (int t = 0; t < kTiles; ++t) {
    uint32_t b[kTileSize];
    for (int i = 0; i < kTileSize; ++i)
      b[i] = static_cast<uint32_t>(rng.next() >> 48) & ((1u << K) - 1);
    for (int i = 0; i < kTileSize; ++i) {
      uint32_t s = 0;
      for (int j = 0; j < span; ++j) s |= b[(i - j + kTileSize) % kTileSize] << (K * j);
      states[t * kTileSize + i] = static_cast<uint16_t>(s & 0xFFFFu);
    }
  }
  return states;
}

// Spec 7.5: the 12 x 256 encoder inputs (binary16 bit patterns, trellis order).
inline constexpr int kViterbiTiles = 12;
inline std::vector<uint16_t> recipe_viterbi_inputs() {
  trellis::test::SplitMix64 rng(0xC0DE0000ull);
  std::vector<uint16_t> x(kViterbiTiles * kTileSize);
  for (auto& v : x) {
    const double value = (static_cast<double>(rng.next() >> 52) - 2048.0) / 1024.0;  // exact
    v = fp64_to_fp16(value);
  }
  return x;
}

}  // namespace trellis::exl3::test
