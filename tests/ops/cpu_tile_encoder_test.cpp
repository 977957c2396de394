// The SIMD tile encoder (backends/cpu/tile_encoder.h) against the spec 7.5 vectors (ExLlamaV3's
// own states) and against the scalar oracle exl3::encode_tile on harder inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backends/cpu/tile_encoder.h"
#include "core/error.h"
#include "core/fp16.h"
#include "core/thread_pool.h"
#include "exl3/encode.h"
#include "exl3/tile.h"
#include "test_util.h"
#include "unit/exl3_vectors.h"

namespace trellis::exl3::test {
namespace {

using trellis::test::have_shared;

TEST(CpuTileEncoder, SpecViterbiVectors) {
  if (!have_shared()) GTEST_SKIP() << "../shared (spec test vectors) not available";
  const auto lines = lines_with_tag("VITERBI");
  ASSERT_EQ(lines.size(), 24u);
  const std::vector<uint16_t> x = recipe_viterbi_inputs();
  for (const VectorLine* l : lines) {
    const int K = l->get_int("K");
    const Codebook cb = codebook_of(*l);
    std::vector<uint16_t> states(x.size()), decoded(x.size());
    cpu::encode_tiles(x.data(), kViterbiTiles, K, cb, states.data(), decoded.data(),
                      ThreadPool::global());
    EXPECT_EQ(fnv_of(states), l->get_hex("idx_fnv")) << l->text;
    double sq = 0;
    for (size_t i = 0; i < states.size(); ++i) {
      EXPECT_EQ(decoded[i], codebook_table(cb)[states[i]]);
      const double d = static_cast<double>(fp16_to_fp32(decoded[i])) - fp16_to_fp32(x[i]);
      sq += d * d;
    }
    EXPECT_NEAR(sq / static_cast<double>(states.size()), l->get_double("mse"), l->half_ulp("mse"))
        << l->text;
    for (int t = 0; t < kViterbiTiles; ++t)
      EXPECT_TRUE(is_tail_biting(&states[t * kTileSize], K)) << l->text << " tile " << t;
  }
}

// Inputs that stress the binary16 arithmetic: exact zeros, tiny (subnormal) values, values whose
// differences land on binary16 midpoints, large values whose accumulated costs are big, and
// repeated values that create ties.
std::vector<uint16_t> hard_tiles(int n) {
  std::mt19937 rng(1234);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<uint16_t> x(static_cast<size_t>(n) * kTileSize);
  for (int t = 0; t < n; ++t) {
    for (int i = 0; i < kTileSize; ++i) {
      float v = 0;
      switch (t % 6) {
        case 0: v = 1.24f * normal(rng); break;
        case 1: v = (i % 3 == 0) ? 0.0f : 1e-6f * normal(rng); break;  // subnormal region
        case 2: v = std::ldexp(std::round(normal(rng) * 64.0f), -6); break;  // coarse grid
        case 3: v = 3.5f * normal(rng); break;                               // big costs
        case 4: v = (i % 2) ? 0.5f : -0.5f; break;                           // many ties
        case 5: v = 0.01f * normal(rng); break;
      }
      x[static_cast<size_t>(t) * kTileSize + i] = fp32_to_fp16(v);
    }
  }
  return x;
}

TEST(CpuTileEncoder, MatchesScalarOracleOnHardInputs) {
  const int kTiles = 6;
  const std::vector<uint16_t> x = hard_tiles(kTiles);
  for (int K : {1, 2, 3, 5, 8}) {
    for (Codebook cb : {Codebook::k3Inst, Codebook::kMcg, Codebook::kMul1}) {
      if ((K + static_cast<int>(cb)) % 2 == 1 && K != 2) continue;  // a spread of combos, for time
      std::vector<uint16_t> fast(x.size()), ref(kTileSize);
      cpu::encode_tiles(x.data(), kTiles, K, cb, fast.data(), nullptr, ThreadPool::global());
      for (int t = 0; t < kTiles; ++t) {
        encode_tile(&x[static_cast<size_t>(t) * kTileSize], K, cb, ref.data(), nullptr);
        for (int i = 0; i < kTileSize; ++i)
          ASSERT_EQ(fast[static_cast<size_t>(t) * kTileSize + i], ref[i])
              << "K=" << K << " cb=" << static_cast<int>(cb) << " tile " << t << " step " << i;
      }
    }
  }
}

// The estimate mode searches without the tail-biting constraint: its error is never above the
// exact encoder's by more than rounding, and usually equal or below.
TEST(CpuTileEncoder, EstimateModeErrorIsAtMostTheExactError) {
  const int kTiles = 8;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.24f);
  std::vector<uint16_t> x(kTiles * kTileSize);
  for (auto& v : x) v = fp32_to_fp16(normal(rng));
  for (int K : {2, 4}) {
    std::vector<uint16_t> exact(x.size()), estimate(x.size());
    cpu::encode_tiles(x.data(), kTiles, K, Codebook::kMul1, nullptr, exact.data(), ThreadPool::global());
    cpu::encode_tiles(x.data(), kTiles, K, Codebook::kMul1, nullptr, estimate.data(), ThreadPool::global(),
                      cpu::EncodeMode::kEstimate);
    double e_exact = 0, e_est = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const double v = fp16_to_fp32(x[i]);
      e_exact += std::pow(fp16_to_fp32(exact[i]) - v, 2);
      e_est += std::pow(fp16_to_fp32(estimate[i]) - v, 2);
    }
    EXPECT_LE(e_est, e_exact * 1.01) << "K=" << K;
    EXPECT_GT(e_est, e_exact * 0.9) << "K=" << K;  // same search, just unconstrained
  }
}

TEST(CpuTileEncoder, RejectsBadInput) {
  std::vector<uint16_t> x(kTileSize, 0), s(kTileSize);
  EXPECT_THROW(cpu::encode_tiles(x.data(), 1, 0, Codebook::kMul1, s.data(), nullptr, ThreadPool::global()),
               Error);
  EXPECT_THROW(cpu::encode_tiles(x.data(), 1, 9, Codebook::kMul1, s.data(), nullptr, ThreadPool::global()),
               Error);
  x[17] = 0x7C00;  // +inf
  EXPECT_THROW(cpu::encode_tiles(x.data(), 1, 2, Codebook::kMul1, s.data(), nullptr, ThreadPool::global()),
               Error);
}

}  // namespace
}  // namespace trellis::exl3::test
