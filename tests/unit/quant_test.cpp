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

// The proxy error's traces (spec 5.9) against the definition, Σ_j m_jᵀ H m_j in fp64, on a
// column block inside a wider matrix, with a width that is not a multiple of the chunk size.
TEST(QuantProxy, TraceQuadraticMatchesDirectFp64Sum) {
  const int64_t k = 96, n = 1200, col0 = 37, nt = 1100;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> m(static_cast<size_t>(k * n)), a(static_cast<size_t>(k * k)), h(static_cast<size_t>(k * k));
  for (auto& v : m) v = nd(rng);
  for (auto& v : a) v = nd(rng);
  for (int64_t i = 0; i < k; ++i)  // H = A Aᵀ / k + I: symmetric positive definite
    for (int64_t j = 0; j < k; ++j) {
      double s = i == j ? 1.0 : 0.0;
      for (int64_t p = 0; p < k; ++p) s += static_cast<double>(a[i * k + p]) * a[j * k + p] / k;
      h[i * k + j] = static_cast<float>(s);
    }
  double want = 0;
  for (int64_t j = col0; j < col0 + nt; ++j)
    for (int64_t i = 0; i < k; ++i)
      for (int64_t r = 0; r < k; ++r) want += static_cast<double>(m[i * n + j]) * h[i * k + r] * m[r * n + j];
  ThreadPool pool(2);
  const double got = trace_quadratic(m.data(), k, n, col0, nt, h, pool);
  EXPECT_NEAR(got, want, 1e-5 * want);
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
      if (cost > 0) {
        EXPECT_GT(used + cost, static_cast<int64_t>(bits * static_cast<double>(total))) << bits << " group " << g;
      }
    }
    // Members of a group share K.
    for (const auto& a : t)
      for (const auto& b : t)
        if (a.group == b.group) {
          EXPECT_EQ(a.K, b.K);
        }
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

namespace trellis {
namespace {

// Hessian accumulation (spec 5.3) on the CPU backend and in HessianAccumulator: XᵀX over the
// finite rows against a double-precision sum; the backend fills the lower triangle only, the
// accumulator mirrors it; non-finite rows are counted, not added.
TEST(QuantHessian, GramAccumulateMatchesDoubleSumAndSkipsNonFiniteRows) {
  const int64_t rows = 533, cols = 45, k = 64;  // three chunks of the CPU kernel
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 1.5f);
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (auto& v : x) v = nd(rng);
  x[7 * cols] = NAN;
  x[100 * cols + 44] = -INFINITY;
  auto ref = [&](int64_t i, int64_t j) {
    double s = 0;
    for (int64_t r = 0; r < rows; ++r)
      if (r != 7 && r != 100) s += static_cast<double>(x[r * cols + i]) * x[r * cols + j];
    return s;
  };
  auto be = make_cpu_backend(2);
  DeviceTensor xd = be->upload(TensorView{DType::kF32, {rows, cols}, reinterpret_cast<const std::byte*>(x.data())},
                               DType::kF32);
  DeviceTensor acc = be->alloc(DType::kF32, {k, k}), stats = be->alloc(DType::kF32, {1, 2});
  be->gram_accumulate(xd, acc, stats);
  std::vector<float> a(static_cast<size_t>(k * k)), st(2);
  be->download(acc, a.data());
  be->download(stats, st.data());
  EXPECT_EQ(st[0], rows - 2);
  EXPECT_EQ(st[1], 2);
  ThreadPool pool(2);
  quant::HessianAccumulator h(k);
  h.add(x.data(), rows, cols, pool);
  EXPECT_EQ(h.count(), static_cast<uint64_t>(rows - 2));
  EXPECT_EQ(h.skipped(), 2u);
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j) {
      const double want = i < cols && j < cols ? ref(std::max(i, j), std::min(i, j)) : 0.0;
      const float lower = a[static_cast<size_t>(i * k + j)];
      if (j <= i)
        EXPECT_NEAR(lower, want, 1e-4 * (1 + std::abs(want))) << i << "," << j;
      else
        EXPECT_EQ(lower, 0.0f) << i << "," << j;
      EXPECT_NEAR(h.sum()[static_cast<size_t>(i * k + j)], want, 1e-4 * (1 + std::abs(want))) << i << "," << j;
    }
  // The accumulator loaded from the backend's lower triangle equals the one that added on the host.
  quant::HessianAccumulator from_device(k);
  from_device.set_lower(a.data(), static_cast<uint64_t>(st[0]), static_cast<uint64_t>(st[1]));
  EXPECT_EQ(from_device.sum(), h.sum());
}

}  // namespace
}  // namespace trellis
