// Quantizer pieces against independent oracles: bit allocation (spec 5.11) by its invariants, and
// quantize_linears through the reference decoder exl3::reconstruct_weight (spec 4.3), which
// knows nothing of the quantizer's sign and scale conventions.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "backends/registry.h"
#include "core/error.h"
#include "core/fp16.h"
#include "core/thread_pool.h"
#include "exl3/linear.h"
#include "quantize/allocation.h"
#include "quantize/quantize_linear.h"

namespace trellis::quant {
namespace {

std::vector<AllocTensor> llama_like(int layers) {
  std::vector<AllocTensor> t;
  for (int l = 0; l < layers; ++l) {
    const int g = l * 4;
    for (const char* n : {"q", "k", "v"}) t.push_back({n, 256 * 256, g, 2, l, 0});
    t.push_back({"o", 256 * 256, g + 1, 2, l, 0});
    t.push_back({"gate", 256 * 768, g + 2, 1, l, 0});
    t.push_back({"up", 256 * 768, g + 2, 1, l, 0});
    t.push_back({"down", 768 * 256, g + 3, 1, l, 0});
  }
  return t;
}

TEST(QuantAllocation, FractionalTargetsStayWithinBudgetAndFavourAttentionAndEnds) {
  for (double bits : {2.5, 3.25, 4.0, 7.9}) {
    auto t = llama_like(6);
    const double recorded = allocate_bits(t, bits, 6);
    int64_t used = 0, total = 0;
    for (const auto& x : t) {
      EXPECT_GE(x.K, static_cast<int>(std::floor(bits)));
      EXPECT_LE(x.K, 8);
      used += x.numel * x.K;
      total += x.numel;
    }
    EXPECT_LE(used, static_cast<int64_t>(bits * static_cast<double>(total))) << bits;
    EXPECT_NEAR(recorded, static_cast<double>(used) / static_cast<double>(total), 0.006) << bits;
    // Greedy: no group could still be raised within the budget.
    for (int g = 0; g < 24; ++g) {
      int64_t cost = 0;
      for (const auto& x : t)
        if (x.group == g && x.K < 8) cost += x.numel;
      if (cost > 0) EXPECT_GT(used + cost, static_cast<int64_t>(bits * static_cast<double>(total))) << bits << " group " << g;
    }
    // Members of a group share K.
    for (const auto& a : t)
      for (const auto& b : t)
        if (a.group == b.group) EXPECT_EQ(a.K, b.K);
  }
  auto t = llama_like(6);
  allocate_bits(t, 2.5, 6);
  // Attention of the first layer is raised before the MLP of a middle layer.
  EXPECT_EQ(t[0].K, 3);
  EXPECT_EQ(t[2 * 7 + 4].K, 2);
  EXPECT_THROW(allocate_bits(t, 0.5, 6), Error);
  EXPECT_THROW(allocate_bits(t, 8.5, 6), Error);
}

TEST(QuantLinear, ReconstructsThroughTheReferenceDecoder) {
  ThreadPool& pool = ThreadPool::global();
  const TileEncodeFn encode = make_tile_encoder("cpu", pool);
  const int64_t k = 256, n = 256;
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  // Two tensors side by side (widths 128 + 128) sharing a Hessian from correlated inputs, one
  // with an all-zero column (svh must be 0 there).
  std::vector<float> w(static_cast<size_t>(k * n));
  for (auto& v : w) v = fp16_to_fp32(fp32_to_fp16(normal(rng)));
  for (int64_t i = 0; i < k; ++i) w[i * n + 5] = 0.0f;
  HessianAccumulator acc(k);
  std::vector<float> x(static_cast<size_t>(512 * k));
  for (int64_t r = 0; r < 512; ++r) {
    const float common = normal(rng) * 50;
    for (int64_t i = 0; i < k; ++i) x[r * k + i] = normal(rng) * 50 * (1 + (i % 7)) + common;
  }
  acc.add(x.data(), 512, k, pool);
  EXPECT_EQ(acc.count(), 512u);
  const FinalHessian h = finalize_hessian(acc, 1, pool);
  ASSERT_FALSE(h.fallback);
  for (int K : {2, 4}) {
    QuantizeOptions opt;
    opt.K = K;
    opt.codebook = exl3::Codebook::kMul1;
    auto q = quantize_linears(w, k, {128, 128}, h, opt, encode, pool);
    ASSERT_EQ(q.size(), 2u);
    double err = 0, ref = 0;
    for (size_t t = 0; t < 2; ++t) {
      exl3::Exl3LinearView v{k, 128, K, exl3::Codebook::kMul1, q[t].trellis.data(), q[t].suh.data(),
                             q[t].svh.data(), nullptr};
      std::vector<float> rec(static_cast<size_t>(k * 128));
      exl3::reconstruct_weight(v, rec.data());
      for (int64_t i = 0; i < k; ++i)
        for (int64_t j = 0; j < 128; ++j) {
          const double d = rec[i * 128 + j] - w[i * n + t * 128 + j];
          err += d * d;
          ref += static_cast<double>(w[i * n + t * 128 + j]) * w[i * n + t * 128 + j];
        }
      EXPECT_GT(q[t].proxy_error, 0.0);
      EXPECT_LT(q[t].proxy_error, K == 2 ? 0.2 : 0.02);
    }
    EXPECT_EQ(q[0].svh[5], 0) << "an all-zero output column gets svh = 0";
    const double rel = std::sqrt(err / ref);
    // Gaussian weights: ~0.3 relative RMS error at 2 bits, ~0.08 at 4 bits (rate-distortion).
    EXPECT_LT(rel, K == 2 ? 0.4 : 0.12) << "K=" << K;
    std::printf("K=%d reconstruct rel. error %.4f, proxy %.5f / %.5f\n", K, rel, q[0].proxy_error, q[1].proxy_error);
  }
}

}  // namespace
}  // namespace trellis::quant
