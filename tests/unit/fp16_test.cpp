// Exhaustive checks of the fp16/bf16 conversions against independent arithmetic.
#include <gtest/gtest.h>

#include <cmath>

#include "core/fp16.h"

namespace trellis {
namespace {

// Independent decode of a binary16 pattern straight from the IEEE definition.
double fp16_value(uint16_t h) {
  const int sign = h >> 15, exp = (h >> 10) & 31, mant = h & 1023;
  double v;
  if (exp == 0) v = std::ldexp(mant, -24);
  else if (exp == 31) v = mant ? NAN : INFINITY;
  else v = std::ldexp(1024 + mant, exp - 25);
  return sign ? -v : v;
}

TEST(Fp16, WideningIsExactForAllPatterns) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const double want = fp16_value(static_cast<uint16_t>(h));
    const float got = fp16_to_fp32(static_cast<uint16_t>(h));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << h;
    } else {
      EXPECT_EQ(static_cast<double>(got), want) << h;
      EXPECT_EQ(std::signbit(got), (h & 0x8000) != 0) << h;
    }
  }
}

TEST(Fp16, RoundTripAllPatterns) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t b = static_cast<uint16_t>(h);
    if (std::isnan(fp16_value(b))) continue;
    EXPECT_EQ(fp32_to_fp16(fp16_to_fp32(b)), b) << h;
    EXPECT_EQ(fp64_to_fp16(fp16_value(b)), b) << h;
  }
}

TEST(Fp16, RoundsToNearestEvenAtEveryMidpoint) {
  // Midpoints between consecutive finite positive values must round to the even pattern;
  // values just above or below must round to the nearer neighbour.
  for (uint16_t h = 0; h < 0x7BFF; ++h) {
    const double lo = fp16_value(h), hi = fp16_value(h + 1);
    const double mid = (lo + hi) / 2;
    const uint16_t even = (h & 1) ? h + 1 : h;
    EXPECT_EQ(fp64_to_fp16(mid), even) << h;
    EXPECT_EQ(fp64_to_fp16(-mid), even | 0x8000) << h;
    EXPECT_EQ(fp64_to_fp16(std::nextafter(mid, 0.0)), h) << h;
    EXPECT_EQ(fp64_to_fp16(std::nextafter(mid, 1e9)), h + 1) << h;
    EXPECT_EQ(fp32_to_fp16(std::nextafter(static_cast<float>(mid), 0.0f)), h) << h;
  }
}

TEST(Fp16, OverflowUnderflowAndSpecials) {
  EXPECT_EQ(fp32_to_fp16(65504.0f), 0x7BFF);
  EXPECT_EQ(fp32_to_fp16(65519.99f), 0x7BFF);
  EXPECT_EQ(fp32_to_fp16(65520.0f), 0x7C00);
  EXPECT_EQ(fp32_to_fp16(-1e30f), 0xFC00);
  EXPECT_EQ(fp32_to_fp16(INFINITY), 0x7C00);
  EXPECT_EQ(fp32_to_fp16(1e-10f), 0x0000);
  EXPECT_EQ(fp32_to_fp16(-1e-10f), 0x8000);
  EXPECT_EQ(fp32_to_fp16(std::ldexp(1.0f, -25)), 0x0000);  // tie to even (zero)
  EXPECT_EQ(fp32_to_fp16(std::ldexp(1.5f, -25)), 0x0001);
  const uint16_t nan = fp32_to_fp16(NAN);
  EXPECT_EQ(nan & 0x7C00, 0x7C00);
  EXPECT_NE(nan & 0x03FF, 0);
}

TEST(Bf16, RoundTripAndRounding) {
  for (uint32_t b = 0; b < 65536; ++b) {
    const float f = bf16_to_fp32(static_cast<uint16_t>(b));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(bf16_to_fp32(fp32_to_bf16(f))));
      continue;
    }
    EXPECT_EQ(fp32_to_bf16(f), b);
  }
  // 1 + 2^-8 is the midpoint between 1 and 1 + 2^-7: ties to even (1.0).
  EXPECT_EQ(fp32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);
  EXPECT_EQ(fp32_to_bf16(1.0f + std::ldexp(3.0f, -8)), 0x3F82);
  EXPECT_EQ(fp32_to_bf16(std::nextafter(1.0f + std::ldexp(1.0f, -8), 2.0f)), 0x3F81);
}

}  // namespace
}  // namespace trellis

namespace trellis {
namespace {

TEST(Fp16, FastNarrowingMatchesDefinitionOnDenseSampleOfAllFloats) {
  // fp32_to_fp16 (bit tricks) against fp64_to_fp16 (frexp/nearbyint), every 97th bit pattern
  // plus every pattern near the fp16 normal/subnormal/overflow boundaries.
  auto check = [](uint32_t u) {
    const float f = bits_float(u);
    const uint16_t a = fp32_to_fp16(f), b = fp64_to_fp16(static_cast<double>(f));
    if (std::isnan(f)) {
      ASSERT_EQ(a & 0x7C00, 0x7C00);
      ASSERT_NE(a & 0x3FF, 0);
    } else {
      ASSERT_EQ(a, b) << std::hex << u;
    }
  };
  for (uint64_t u = 0; u <= 0xFFFFFFFFull; u += 97) check(static_cast<uint32_t>(u));
  for (uint32_t base : {0x33000000u, 0x33800000u, 0x38800000u, 0x38000000u, 0x477FE000u, 0x477FF000u, 0x7F800000u})
    for (uint32_t d = 0; d < 0x40000u; ++d) {
      check(base + d - 0x20000u);
      check((base + d - 0x20000u) | 0x80000000u);
    }
}

}  // namespace
}  // namespace trellis
