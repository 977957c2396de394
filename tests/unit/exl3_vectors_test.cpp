// Reproduces every line of ../shared/spec/exl3_test_vectors.txt (spec section 7) bit for bit,
// reading the expected values from the file at test time. The encoder lines (VITERBI*) live in
// exl3_viterbi_vectors_test.cpp; Exl3Vectors.EveryLineHasAChecker makes sure that the tags the
// two files check cover the whole file, and each checker asserts that it read every field.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/fp16.h"
#include "exl3/codebook.h"
#include "exl3/hadamard.h"
#include "exl3/linear.h"
#include "exl3/tile.h"
#include "exl3_vectors.h"
#include "test_util.h"

namespace trellis::exl3::test {
namespace {

using trellis::test::have_shared;
using trellis::test::SplitMix64;

// Tags checked in this file and in exl3_viterbi_vectors_test.cpp.
const std::set<std::string> kCheckedTags = {"DECODE",        "DECODE_SAMPLE", "TRELLIS",
                                            "TRELLIS_TILE0", "WHAT",          "HAD",
                                            "HAD_SAMPLE",    "VITERBI",       "VITERBI_TILE0"};

#define SKIP_WITHOUT_SHARED() \
  if (!have_shared()) GTEST_SKIP() << "../shared (spec test vectors) not available"

TEST(Exl3Vectors, EveryLineHasAChecker) {
  SKIP_WITHOUT_SHARED();
  const auto& lines = vector_lines();
  ASSERT_GT(lines.size(), 100u);
  for (const auto& l : lines) {
    EXPECT_TRUE(kCheckedTags.count(l.tag)) << "line " << l.line_no << " not recognised: " << l.text;
    EXPECT_TRUE(l.list_ok) << "line " << l.line_no << " has an unparsable token: " << l.text;
  }
}

// ---- DECODE, DECODE_SAMPLE (spec 7.2) ---------------------------------------------------------

TEST(Exl3Vectors, Decode) {
  SKIP_WITHOUT_SHARED();
  const auto lines = lines_with_tag("DECODE");
  ASSERT_EQ(lines.size(), 3u);
  for (const VectorLine* l : lines) {
    const Codebook cb = codebook_of(*l);
    const uint16_t* table = codebook_table(cb);
    const float* values = codebook_table_f32(cb);
    std::vector<uint16_t> bits(table, table + 65536);
    EXPECT_EQ(fnv_of(bits), l->get_hex("fnv")) << l->text;
    double sum = 0, sum_sq = 0, lo = INFINITY, hi = -INFINITY;
    for (uint32_t s = 0; s < 65536; ++s) {
      EXPECT_EQ(table[s], decode_state(s, cb));
      EXPECT_EQ(values[s], fp16_to_fp32(table[s]));
      const double v = values[s];
      sum += v;
      sum_sq += v * v;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    EXPECT_NEAR(sum / 65536, l->get_double("mean"), l->half_ulp("mean")) << l->text;
    EXPECT_NEAR(std::sqrt(sum_sq / 65536), l->get_double("rms"), l->half_ulp("rms")) << l->text;
    EXPECT_NEAR(lo, l->get_double("min"), l->half_ulp("min")) << l->text;
    EXPECT_NEAR(hi, l->get_double("max"), l->half_ulp("max")) << l->text;
    l->expect_all_consumed();
  }
}

TEST(Exl3Vectors, DecodeSample) {
  SKIP_WITHOUT_SHARED();
  const auto lines = lines_with_tag("DECODE_SAMPLE");
  ASSERT_FALSE(lines.empty());
  for (const VectorLine* l : lines) {
    const Codebook cb = codebook_of(*l);
    const auto state = static_cast<uint32_t>(l->get_hex("state"));
    const uint16_t bits = decode_state(state, cb);
    EXPECT_EQ(bits, l->get_hex("bits")) << l->text;
    EXPECT_NEAR(fp16_to_fp32(bits), l->get_double("value"), l->half_ulp("value")) << l->text;
    l->expect_all_consumed();
  }
}

// ---- TRELLIS, TRELLIS_TILE0, WHAT (spec 7.3) --------------------------------------------------

constexpr int kRecipeTilesK = 2, kRecipeTilesN = 16;
constexpr int kRecipeRows = 16 * kRecipeTilesK, kRecipeCols = 16 * kRecipeTilesN;

struct TrellisRecipe {
  std::vector<uint16_t> states;  // [32 tiles][256]
  std::vector<uint16_t> packed;  // [2][16][16K], file order
};

TrellisRecipe build_trellis_recipe(int K) {
  TrellisRecipe r;
  r.states = recipe_trellis_states(K);
  r.packed.resize(static_cast<size_t>(kRecipeTilesK * kRecipeTilesN * tile_words16(K)));
  for (int t = 0; t < kRecipeTilesK * kRecipeTilesN; ++t)
    pack_tile(&r.states[t * kTileSize], K, &r.packed[static_cast<size_t>(t) * tile_words16(K)]);
  return r;
}

std::vector<uint16_t> decode_recipe(const TrellisRecipe& r, int K, Codebook cb) {
  Exl3LinearView view;
  view.k = kRecipeRows;
  view.n = kRecipeCols;
  view.K = K;
  view.codebook = cb;
  view.trellis = r.packed.data();
  std::vector<uint16_t> what(kRecipeRows * kRecipeCols);
  decode_what(view, what.data());
  return what;
}

TEST(Exl3Vectors, Trellis) {
  SKIP_WITHOUT_SHARED();
  const auto lines = lines_with_tag("TRELLIS");
  ASSERT_EQ(lines.size(), 24u);
  for (const VectorLine* l : lines) {
    const int K = l->get_int("K");
    ASSERT_TRUE(K >= kMinK && K <= kMaxK) << l->text;
    const Codebook cb = codebook_of(*l);
    const TrellisRecipe r = build_trellis_recipe(K);
    EXPECT_EQ(fnv_of(r.states), l->get_hex("states_fnv")) << l->text;
    EXPECT_EQ(fnv_of(r.packed), l->get_hex("packed_fnv")) << l->text;
    EXPECT_EQ(fnv_of(decode_recipe(r, K, cb)), l->get_hex("what_fnv")) << l->text;
    // Unpacking the packed tensor gives back the recipe's states.
    for (int t = 0; t < kRecipeTilesK * kRecipeTilesN; ++t) {
      uint16_t states[kTileSize];
      unpack_tile(&r.packed[static_cast<size_t>(t) * tile_words16(K)], K, states);
      ASSERT_TRUE(std::equal(states, states + kTileSize, &r.states[t * kTileSize])) << t;
      ASSERT_TRUE(is_tail_biting(states, K));
    }
    l->expect_all_consumed();
  }
}

TEST(Exl3Vectors, TrellisTile0) {
  SKIP_WITHOUT_SHARED();
  const auto lines = lines_with_tag("TRELLIS_TILE0");
  ASSERT_FALSE(lines.empty());
  for (const VectorLine* l : lines) {
    const int K = l->get_int("K");
    ASSERT_TRUE(K >= kMinK && K <= kMaxK) << l->text;
    const TrellisRecipe r = build_trellis_recipe(K);
    const ListLabel label = parse_label(l->label);
    const std::vector<uint16_t>& list = l->get_list();
    if (label.name == "states") {
      ASSERT_EQ(label.last, -1) << l->text;
      ASSERT_FALSE(list.empty());
      ASSERT_LE(list.size(), static_cast<size_t>(kTileSize));
      EXPECT_TRUE(std::equal(list.begin(), list.end(), r.states.begin())) << l->text;
    } else if (label.name == "packed") {
      // The file lists all words of tile (0,0).
      ASSERT_EQ(list.size(), static_cast<size_t>(tile_words16(K))) << l->text;
      EXPECT_TRUE(std::equal(list.begin(), list.end(), r.packed.begin())) << l->text;
    } else {
      ADD_FAILURE() << "line " << l->line_no << ": unknown list '" << l->label << "'";
    }
    l->expect_all_consumed();
  }
}

TEST(Exl3Vectors, What) {
  SKIP_WITHOUT_SHARED();
  const auto lines = lines_with_tag("WHAT");
  ASSERT_FALSE(lines.empty());
  for (const VectorLine* l : lines) {
    const int K = l->get_int("K");
    ASSERT_TRUE(K >= kMinK && K <= kMaxK) << l->text;
    const Codebook cb = codebook_of(*l);
    const std::vector<uint16_t> what = decode_recipe(build_trellis_recipe(K), K, cb);
    const ListLabel label = parse_label(l->label);
    const std::vector<uint16_t>& list = l->get_list();
    ASSERT_EQ(list.size(), static_cast<size_t>(label.last - label.first + 1)) << l->text;
    ASSERT_GE(label.first, 0);
    for (int i = label.first; i <= label.last; ++i) {
      uint16_t got;
      if (label.name == "row0") {
        ASSERT_LT(i, kRecipeCols);
        got = what[i];
      } else if (label.name == "col0") {
        ASSERT_LT(i, kRecipeRows);
        got = what[static_cast<size_t>(i) * kRecipeCols];
      } else {
        FAIL() << "line " << l->line_no << ": unknown list '" << l->label << "'";
      }
      EXPECT_EQ(got, list[i - label.first]) << l->text << " index " << i;
    }
    l->expect_all_consumed();
  }
}

// ---- HAD, HAD_SAMPLE (spec 7.4) ---------------------------------------------------------------

struct HadRecipe {
  static constexpr int kRows = 2, kLen = 256;
  std::vector<uint16_t> x, suh, svh;
  std::vector<float> xf;
  std::vector<uint16_t> xh, out_h;  // input transform of x, output transform of x
  std::vector<float> out_f;         // output transform of xf
};

uint16_t recipe_scale(SplitMix64& rng) {
  const uint64_t d = rng.next();
  const double mag = 1.0 + static_cast<double>((d >> 40) & 255) / 256.0;
  return fp64_to_fp16((d >> 63) ? -mag : mag);  // exact
}

HadRecipe build_had_recipe() {
  HadRecipe r;
  SplitMix64 rng(0x4ADA0000ull);
  const int total = HadRecipe::kRows * HadRecipe::kLen;
  for (int i = 0; i < total; ++i)
    r.x.push_back(fp64_to_fp16((static_cast<double>(rng.next() >> 53) - 1024.0) / 256.0));
  for (int i = 0; i < HadRecipe::kLen; ++i) r.suh.push_back(recipe_scale(rng));
  for (int i = 0; i < HadRecipe::kLen; ++i) r.svh.push_back(recipe_scale(rng));
  for (int i = 0; i < total; ++i)
    r.xf.push_back(
        static_cast<float>((static_cast<double>(rng.next() >> 40) - 8388608.0) / 1048576.0));
  r.xh.resize(total);
  r.out_h.resize(total);
  r.out_f.resize(total);
  for (int row = 0; row < HadRecipe::kRows; ++row) {
    const size_t o = static_cast<size_t>(row) * HadRecipe::kLen;
    input_transform_fp16(&r.x[o], r.suh.data(), &r.xh[o], HadRecipe::kLen);
    output_transform_fp16(&r.x[o], r.svh.data(), &r.out_h[o], HadRecipe::kLen);
    output_transform_fp32(&r.xf[o], r.svh.data(), &r.out_f[o], HadRecipe::kLen);
  }
  return r;
}

TEST(Exl3Vectors, Had) {
  SKIP_WITHOUT_SHARED();
  const auto lines = lines_with_tag("HAD");
  ASSERT_EQ(lines.size(), 1u);
  const HadRecipe r = build_had_recipe();
  for (const VectorLine* l : lines) {
    EXPECT_EQ(fnv_of(r.xh), l->get_hex("in_fnv")) << l->text;
    EXPECT_EQ(fnv_of(r.out_h), l->get_hex("out_h_fnv")) << l->text;
    EXPECT_EQ(fnv_of(r.out_f), l->get_hex("out_f_fnv")) << l->text;
    l->expect_all_consumed();
  }
  // In-place use (out aliasing x) gives the same result.
  std::vector<uint16_t> inplace(r.x.begin(), r.x.begin() + HadRecipe::kLen);
  input_transform_fp16(inplace.data(), r.suh.data(), inplace.data(), HadRecipe::kLen);
  EXPECT_TRUE(std::equal(inplace.begin(), inplace.end(), r.xh.begin()));
}

TEST(Exl3Vectors, HadSample) {
  SKIP_WITHOUT_SHARED();
  const auto lines = lines_with_tag("HAD_SAMPLE");
  ASSERT_FALSE(lines.empty());
  const HadRecipe r = build_had_recipe();
  for (const VectorLine* l : lines) {
    const ListLabel label = parse_label(l->label);
    const std::vector<uint16_t>& list = l->get_list();
    const std::vector<uint16_t>* source = nullptr;
    if (label.name == "x")
      source = &r.x;
    else if (label.name == "suh")
      source = &r.suh;
    else if (label.name == "xh")
      source = &r.xh;
    ASSERT_NE(source, nullptr) << "line " << l->line_no << ": unknown list '" << l->label << "'";
    ASSERT_EQ(list.size(), static_cast<size_t>(label.last - label.first + 1)) << l->text;
    ASSERT_TRUE(label.first >= 0 && static_cast<size_t>(label.last) < source->size());
    for (int i = label.first; i <= label.last; ++i)
      EXPECT_EQ((*source)[i], list[i - label.first]) << l->text << " index " << i;
    l->expect_all_consumed();
  }
}

}  // namespace
}  // namespace trellis::exl3::test
