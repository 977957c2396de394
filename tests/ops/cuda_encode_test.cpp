// The CUDA tile encoder (backends/cuda/cuda_encode.h) against the spec 7.5 vectors (ExLlamaV3's
// own states), against the scalar oracle exl3::encode_tile on inputs that stress the binary16
// arithmetic, and against the (oracle-tested) SIMD CPU encoder on batches large enough that every
// CTA runs several tile pairs. Skips without a CUDA device.
#if TRELLIS_WITH_CUDA

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/tile_encoder.h"
#include "backends/cuda/cuda_encode.h"
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

#define CUDA_ENCODER_OR_SKIP() \
  if (!cuda::encoder_available()) GTEST_SKIP() << "no CUDA device"

std::string combo_name(int K, Codebook cb) {
  return "K=" + std::to_string(K) + " cb=" + std::string(codebook_name(cb));
}

TEST(CudaEncode, SpecViterbiVectors) {
  CUDA_ENCODER_OR_SKIP();
  if (!have_shared()) GTEST_SKIP() << "../shared (spec test vectors) not available";
  const auto lines = lines_with_tag("VITERBI");
  ASSERT_EQ(lines.size(), 24u);
  const std::vector<uint16_t> x = recipe_viterbi_inputs();
  for (const VectorLine* l : lines) {
    const int K = l->get_int("K");
    const Codebook cb = codebook_of(*l);
    std::vector<uint16_t> states(x.size()), decoded(x.size());
    cuda::encode_tiles(x.data(), kViterbiTiles, K, cb, states.data(), decoded.data());
    EXPECT_EQ(fnv_of(states), l->get_hex("idx_fnv")) << l->text;
    double sq = 0;
    for (size_t i = 0; i < states.size(); ++i) {
      ASSERT_EQ(decoded[i], codebook_table(cb)[states[i]]) << l->text << " index " << i;
      const double d = static_cast<double>(fp16_to_fp32(decoded[i])) - fp16_to_fp32(x[i]);
      sq += d * d;
    }
    EXPECT_NEAR(sq / static_cast<double>(states.size()), l->get_double("mse"), l->half_ulp("mse"))
        << l->text;
    for (int t = 0; t < kViterbiTiles; ++t)
      EXPECT_TRUE(is_tail_biting(&states[t * kTileSize], K)) << l->text << " tile " << t;
  }
}

TEST(CudaEncode, SpecViterbiTile0) {
  CUDA_ENCODER_OR_SKIP();
  if (!have_shared()) GTEST_SKIP() << "../shared (spec test vectors) not available";
  const std::vector<uint16_t> x = recipe_viterbi_inputs();
  for (const VectorLine* l : lines_with_tag("VITERBI_TILE0")) {
    const int K = l->get_int("K");
    const Codebook cb = codebook_of(*l);
    const ListLabel label = parse_label(l->label);
    const std::vector<uint16_t>& list = l->get_list();
    std::vector<uint16_t> states(x.size());
    cuda::encode_tiles(x.data(), kViterbiTiles, K, cb, states.data(), nullptr);
    for (int i = label.first; i <= label.last; ++i)
      EXPECT_EQ(states[i], list[i - label.first]) << l->text << " index " << i;
  }
}

// Inputs that stress the binary16 arithmetic: exact zeros, tiny (subnormal) values, values on a
// coarse grid (differences on binary16 midpoints, many equal costs), large values whose
// accumulated costs are big, alternating values (ties everywhere), small Gaussians.
std::vector<uint16_t> hard_tiles(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<uint16_t> x(static_cast<size_t>(n) * kTileSize);
  for (int t = 0; t < n; ++t) {
    for (int i = 0; i < kTileSize; ++i) {
      float v = 0;
      switch (t % 8) {
        case 0: v = 1.24f * normal(rng); break;
        case 1: v = (i % 3 == 0) ? 0.0f : 1e-6f * normal(rng); break;
        case 2: v = std::ldexp(std::round(normal(rng) * 64.0f), -6); break;
        case 3: v = 3.5f * normal(rng); break;
        case 4: v = (i % 2) ? 0.5f : -0.5f; break;
        case 5: v = 0.01f * normal(rng); break;
        case 6: v = 0.0f; break;
        case 7: v = std::ldexp(std::round(normal(rng) * 4.0f), -2); break;
      }
      x[static_cast<size_t>(t) * kTileSize + i] = fp32_to_fp16(v);
    }
  }
  return x;
}

TEST(CudaEncode, MatchesScalarOracleOnHardInputs) {
  CUDA_ENCODER_OR_SKIP();
  const int kTiles = 8;
  const std::vector<uint16_t> x = hard_tiles(kTiles, 1234);
  struct Job {
    int K;
    Codebook cb;
  };
  std::vector<Job> jobs;
  for (int K = 1; K <= 8; ++K)
    for (Codebook cb : {Codebook::k3Inst, Codebook::kMcg, Codebook::kMul1})
      if ((K + static_cast<int>(cb)) % 3 == 0 || K == 2 || K == 4) jobs.push_back({K, cb});
  // Oracle results for every (job, tile), computed in parallel (the oracle is slow on purpose).
  std::vector<uint16_t> ref(jobs.size() * x.size());
  ThreadPool::global().parallel_for(jobs.size() * kTiles, 1, [&](size_t b, size_t e) {
    for (size_t k = b; k < e; ++k) {
      const Job& job = jobs[k / kTiles];
      const size_t t = k % kTiles;
      encode_tile(&x[t * kTileSize], job.K, job.cb, &ref[(k / kTiles) * x.size() + t * kTileSize],
                  nullptr);
    }
  });
  for (size_t j = 0; j < jobs.size(); ++j) {
    std::vector<uint16_t> states(x.size(), 0xDEAD), decoded(x.size(), 0xDEAD);
    cuda::encode_tiles(x.data(), kTiles, jobs[j].K, jobs[j].cb, states.data(), decoded.data());
    for (size_t i = 0; i < x.size(); ++i) {
      ASSERT_EQ(states[i], ref[j * x.size() + i])
          << combo_name(jobs[j].K, jobs[j].cb) << " tile " << i / kTileSize << " step "
          << i % kTileSize;
      ASSERT_EQ(decoded[i], codebook_table(jobs[j].cb)[states[i]]);
    }
  }
}

// Odd batch sizes larger than two tiles per SM: every CTA runs several tile pairs, the last pair
// is incomplete, and results must not depend on which CTA encoded a tile. The SIMD CPU encoder is
// bit-identical to the oracle (tests/ops/cpu_tile_encoder_test.cpp) and much faster.
TEST(CudaEncode, LargeBatchesMatchCpuEncoder) {
  CUDA_ENCODER_OR_SKIP();
  for (const auto& [K, cb, n] : {std::tuple{2, Codebook::kMcg, 601}, std::tuple{4, Codebook::kMul1, 529},
                                 std::tuple{7, Codebook::k3Inst, 333}}) {
    std::mt19937 rng(static_cast<uint32_t>(K * 100 + n));
    std::normal_distribution<float> normal(0.0f, kCodebookScale);
    std::vector<uint16_t> x(static_cast<size_t>(n) * kTileSize);
    for (auto& v : x) v = fp32_to_fp16(normal(rng));
    std::vector<uint16_t> gpu(x.size()), cpu_states(x.size());
    cuda::encode_tiles(x.data(), n, K, cb, gpu.data(), nullptr);
    cpu::encode_tiles(x.data(), n, K, cb, cpu_states.data(), nullptr, ThreadPool::global());
    size_t bad = 0;
    for (size_t i = 0; i < x.size(); ++i) bad += gpu[i] != cpu_states[i];
    EXPECT_EQ(bad, 0u) << combo_name(K, cb) << " n=" << n;
    // A second call reuses the device buffers and must give the same result.
    std::vector<uint16_t> again(x.size());
    cuda::encode_tiles(x.data(), n, K, cb, again.data(), nullptr);
    EXPECT_EQ(again, gpu) << combo_name(K, cb);
  }
}

TEST(CudaEncode, RejectsBadInput) {
  CUDA_ENCODER_OR_SKIP();
  std::vector<uint16_t> x(2 * kTileSize, 0), s(2 * kTileSize);
  EXPECT_THROW(cuda::encode_tiles(x.data(), 1, 0, Codebook::kMul1, s.data(), nullptr), Error);
  EXPECT_THROW(cuda::encode_tiles(x.data(), 1, 9, Codebook::kMul1, s.data(), nullptr), Error);
  x[kTileSize + 17] = 0x7C00;  // +inf in tile 1
  EXPECT_THROW(cuda::encode_tiles(x.data(), 2, 2, Codebook::kMul1, s.data(), nullptr), Error);
  x[kTileSize + 17] = 0xFE00;  // NaN
  EXPECT_THROW(cuda::encode_tiles(x.data(), 2, 2, Codebook::kMul1, s.data(), nullptr), Error);
  EXPECT_THROW(cuda::encode_tiles(x.data(), 1, 2, Codebook::kMul1, s.data(), nullptr, 1000), Error);
  EXPECT_NO_THROW(cuda::encode_tiles(x.data(), 0, 2, Codebook::kMul1, s.data(), nullptr));
}

}  // namespace
}  // namespace trellis::exl3::test

#endif  // TRELLIS_WITH_CUDA
