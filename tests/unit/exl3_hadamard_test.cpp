// Hadamard transforms (spec 4.1, 4.4) against an explicit Sylvester matrix, and their algebra.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <vector>

#include "core/fp16.h"
#include "exl3/hadamard.h"
#include "test_util.h"
#include "trellis/error.h"

namespace trellis::exl3 {
namespace {

using trellis::test::SplitMix64;

// H128[a][b] = (-1)^popcount(a AND b), unnormalised.
double sylvester(int a, int b) {
  return (std::popcount(static_cast<unsigned>(a & b)) & 1) ? -1.0 : 1.0;
}

double uniform(SplitMix64& rng) {
  return static_cast<double>(rng.next() >> 11) * 0x1.0p-53 * 2 - 1;
}

TEST(Exl3Hadamard, Fwht128IsTheSylvesterMatrix) {
  SplitMix64 rng(0x4AD1ull);
  for (int trial = 0; trial < 20; ++trial) {
    float v[kHadamardSize];
    double want[kHadamardSize] = {};
    for (auto& x : v) x = static_cast<float>(uniform(rng));
    for (int a = 0; a < kHadamardSize; ++a)
      for (int b = 0; b < kHadamardSize; ++b) want[a] += sylvester(a, b) * v[b];
    fwht128(v);
    for (int a = 0; a < kHadamardSize; ++a) EXPECT_NEAR(v[a], want[a], 1e-4) << a;
  }
  // Integer inputs are transformed exactly.
  float ones[kHadamardSize];
  for (auto& x : ones) x = 1.0f;
  fwht128(ones);
  EXPECT_EQ(ones[0], 128.0f);
  for (int a = 1; a < kHadamardSize; ++a) EXPECT_EQ(ones[a], 0.0f);
}

// Hk * Hk = I: transforming every unit vector twice gives it back (to fp32 precision).
TEST(Exl3Hadamard, BlockTransformIsAnInvolution) {
  const size_t len = 2 * kHadamardSize;
  for (size_t i = 0; i < len; ++i) {
    std::vector<float> e(len, 0.0f);
    e[i] = 1.0f;
    hadamard128_fp32(e.data(), len);
    // One application gives column i of Hk: +-1/sqrt(128) inside i's block, 0 elsewhere.
    for (size_t j = 0; j < len; ++j) {
      const bool same_block = j / kHadamardSize == i / kHadamardSize;
      const double want =
          same_block ? sylvester(int(i % 128), int(j % 128)) / std::sqrt(128.0) : 0.0;
      ASSERT_NEAR(e[j], want, 1e-7) << i << "," << j;
    }
    hadamard128_fp32(e.data(), len);
    for (size_t j = 0; j < len; ++j) ASSERT_NEAR(e[j], i == j ? 1.0 : 0.0, 1e-6) << i << "," << j;
  }
}

TEST(Exl3Hadamard, TransformThenInverseOfRandomVectors) {
  SplitMix64 rng(0x1AF3ull);
  const size_t len = 3 * kHadamardSize;
  std::vector<float> v(len), w(len);
  for (int trial = 0; trial < 10; ++trial) {
    for (auto& x : v) x = static_cast<float>(uniform(rng) * 10);
    w = v;
    hadamard128_fp32(w.data(), len);
    hadamard128_fp32(w.data(), len);
    for (size_t i = 0; i < len; ++i) EXPECT_NEAR(w[i], v[i], 1e-5 * 10) << i;
    // output_transform_fp32 without svh is the same orthonormal transform.
    std::vector<float> a = v, b(len);
    hadamard128_fp32(a.data(), len);
    output_transform_fp32(v.data(), nullptr, b.data(), len);
    EXPECT_EQ(a, b);
  }
}

// The fp16 paths equal the real-number transform up to their final fp16 roundings.
TEST(Exl3Hadamard, Fp16TransformsAgreeWithExactArithmetic) {
  SplitMix64 rng(0xF16ull);
  const size_t len = 2 * kHadamardSize;
  std::vector<uint16_t> x(len), scale(len), in_t(len), out_t(len);
  for (auto& v : x) v = fp32_to_fp16(static_cast<float>(uniform(rng) * 4));
  for (auto& v : scale) v = fp32_to_fp16(static_cast<float>(uniform(rng) + 1.5));
  input_transform_fp16(x.data(), scale.data(), in_t.data(), len);
  output_transform_fp16(x.data(), scale.data(), out_t.data(), len);
  for (size_t a = 0; a < len; ++a) {
    const size_t base = a / kHadamardSize * kHadamardSize;
    double in_want = 0, out_want = 0;
    for (size_t b = base; b < base + kHadamardSize; ++b) {
      const double h = sylvester(int(a % 128), int(b % 128)) / std::sqrt(128.0);
      in_want += h * fp16_to_fp32(x[b]) * fp16_to_fp32(scale[b]);
      out_want += h * fp16_to_fp32(x[b]);
    }
    out_want *= fp16_to_fp32(scale[a]);
    // A few fp16 roundings of values up to ~8: allow 4 fp16 ulps at that size.
    EXPECT_NEAR(fp16_to_fp32(in_t[a]), in_want, 4 * 0x1.0p-7) << a;
    EXPECT_NEAR(fp16_to_fp32(out_t[a]), out_want, 4 * 0x1.0p-7) << a;
  }
}

TEST(Exl3Hadamard, RejectsPartialBlocks) {
  std::vector<float> v(200);
  std::vector<uint16_t> h(200);
  EXPECT_THROW(hadamard128_fp32(v.data(), 200), trellis::Error);
  EXPECT_THROW(output_transform_fp32(v.data(), nullptr, v.data(), 200), trellis::Error);
  EXPECT_THROW(input_transform_fp16(h.data(), h.data(), h.data(), 200), trellis::Error);
  EXPECT_THROW(output_transform_fp16(h.data(), h.data(), h.data(), 200), trellis::Error);
}

}  // namespace
}  // namespace trellis::exl3
