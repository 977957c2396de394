// Codebook tests beyond the spec vectors: the worked examples of spec 3.2-3.4, an independent
// integer formulation of MUL1 (spec 3.6), table consistency and thread-safe construction.
#include <gtest/gtest.h>

#include <cmath>
#include <thread>
#include <vector>

#include "core/fp16.h"
#include "exl3/codebook.h"

namespace trellis::exl3 {
namespace {

TEST(Exl3Codebook, Names) {
  for (Codebook cb : {Codebook::k3Inst, Codebook::kMcg, Codebook::kMul1}) {
    const auto back = codebook_from_name(codebook_name(cb));
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(*back, cb);
  }
  EXPECT_EQ(codebook_name(Codebook::k3Inst), "3inst");
  EXPECT_EQ(codebook_name(Codebook::kMcg), "mcg");
  EXPECT_EQ(codebook_name(Codebook::kMul1), "mul1");
  EXPECT_FALSE(codebook_from_name("MUL2").has_value());
  EXPECT_FALSE(codebook_from_name("").has_value());
}

TEST(Exl3Codebook, WorkedExamplesOfTheSpec) {
  EXPECT_EQ(decode_state(0x0000, Codebook::k3Inst), 0x3A25);  // 0.18017578125 + 0.587890625
  EXPECT_EQ(decode_state(0x1234, Codebook::k3Inst), 0xC066);  // -2.19970703125 rounded
  EXPECT_EQ(decode_state(0x0001, Codebook::kMcg), 0x304E);
  EXPECT_EQ(decode_state(0x0001, Codebook::kMul1), 0x3921);
  EXPECT_EQ(decode_state(0x0000, Codebook::kMul1), 0xC2E8);  // -3.453125, the minimum
}

// Spec 3.6: the MUL1 FMA is the integer (1024 + S) * 1774 - 2721792 times 2^-18, rounded once.
TEST(Exl3Codebook, Mul1MatchesIntegerFormulation) {
  for (uint32_t s = 0; s < 65536; ++s) {
    const uint32_t x = s * kMul1Multiplier;
    const int64_t byte_sum = (x & 0xFF) + ((x >> 8) & 0xFF) + ((x >> 16) & 0xFF) + (x >> 24);
    const int64_t scaled = (1024 + byte_sum) * 1774 - 2721792;
    ASSERT_EQ(decode_state(s, Codebook::kMul1), fp64_to_fp16(std::ldexp(double(scaled), -18))) << s;
  }
}

// 3INST/MCG: the two halves always land in [0.125, 2) with the sign bit kept (spec 3.2).
TEST(Exl3Codebook, InstHalvesAreInRange) {
  for (uint32_t s = 0; s < 65536; ++s) {
    for (uint32_t x : {s * k3InstMultiplier + k3InstAddend, s * kMcgMultiplier}) {
      const uint32_t y = (x & 0x8FFF8FFFu) ^ 0x3B603B60u;
      for (uint16_t half : {uint16_t(y & 0xFFFF), uint16_t(y >> 16)}) {
        const float v = std::fabs(fp16_to_fp32(half));
        ASSERT_TRUE(v >= 0.125f && v < 2.0f) << s;
      }
    }
  }
}

TEST(Exl3Codebook, TablesMatchDecodeAndAreSharedAcrossThreads) {
  for (Codebook cb : {Codebook::k3Inst, Codebook::kMcg, Codebook::kMul1}) {
    std::vector<const uint16_t*> seen(4);
    std::vector<std::thread> threads;
    for (size_t i = 0; i < seen.size(); ++i)
      threads.emplace_back([&, i] { seen[i] = codebook_table(cb); });
    for (auto& t : threads) t.join();
    for (const uint16_t* p : seen) EXPECT_EQ(p, seen[0]);
    const uint16_t* bits = codebook_table(cb);
    const float* values = codebook_table_f32(cb);
    for (uint32_t s = 0; s < 65536; ++s) {
      ASSERT_EQ(bits[s], decode_state(s, cb));
      ASSERT_EQ(values[s], fp16_to_fp32(bits[s]));
      ASSERT_TRUE(std::isfinite(values[s]));
    }
  }
}

}  // namespace
}  // namespace trellis::exl3
