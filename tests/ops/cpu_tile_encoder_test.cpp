// The SIMD tile encoder (backends/cpu/tile_encoder.h) against the spec 7.5 vectors (ExLlamaV3's
// own states) and against the scalar oracle exl3::encode_tile on harder inputs.
#include <gtest/gtest.h>
#include <hwy/targets.h>

#include <bit>
#include <cmath>
#include <iostream>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "backends/cpu/tile_encoder.h"
#include "core/error.h"
#include "core/fp16.h"
#include "core/thread_pool.h"
#include "exl3/encode.h"
#include "exl3/fp16_round.h"
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

// Every Highway target the encoder was compiled for and this CPU runs (the AVX-512 one has its
// own fast step, others share the exact one), against the scalar oracle on random tiles for
// every K and codebook. The scales make the fast step's preconditions switch within a tile:
// tiny inputs keep costs below 2^-14 for a while (exact step first), large ones push the bound
// on the largest cost past binary16's range after some steps (exact step last), and a coarse
// grid gives many exact binary16 midpoints in d² + p (ties to even).
TEST(CpuTileEncoder, EveryTargetMatchesScalarOracleOnRandomTiles) {
  const float kScales[] = {1.24f, 0.004f, 6.0f, 0.5f, 9.0f, 2e-4f};
  const int kTilesPerCombo = 2;
  struct Combo {
    int K;
    Codebook cb;
    std::vector<uint16_t> x, ref;
  };
  std::vector<Combo> combos;
  std::mt19937 rng(2024);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int K = kMinK; K <= kMaxK; ++K) {
    for (Codebook cb : {Codebook::k3Inst, Codebook::kMcg, Codebook::kMul1}) {
      Combo c{K, cb, std::vector<uint16_t>(kTilesPerCombo * kTileSize), {}};
      for (int t = 0; t < kTilesPerCombo; ++t) {
        const size_t pick = combos.size() * kTilesPerCombo + t;
        const float scale = kScales[pick % std::size(kScales)];
        const bool grid = pick % 4 == 3;
        for (int i = 0; i < kTileSize; ++i) {
          float v = scale * normal(rng);
          if (grid) v = std::ldexp(std::round(std::ldexp(v, 4)), -4);
          c.x[static_cast<size_t>(t) * kTileSize + i] = fp32_to_fp16(v);
        }
      }
      c.ref.resize(c.x.size());
      combos.push_back(std::move(c));
    }
  }
  ThreadPool::global().parallel_for(combos.size() * kTilesPerCombo, 1, [&](size_t b, size_t e) {
    for (size_t job = b; job < e; ++job) {
      Combo& c = combos[job / kTilesPerCombo];
      const size_t off = (job % kTilesPerCombo) * kTileSize;
      encode_tile(&c.x[off], c.K, c.cb, &c.ref[off], nullptr);
    }
  });

  std::set<std::string> tested;
  const int64_t supported = hwy::SupportedTargets();
  for (int64_t target = 1; target != 0 && target <= supported; target <<= 1) {
    if (!(supported & target)) continue;
    hwy::SetSupportedTargetsForTest(target);
    const std::string name = cpu::tile_encoder_target_name();
    if (!tested.insert(name).second) continue;  // not compiled: dispatch fell back to another
    for (const Combo& c : combos) {
      std::vector<uint16_t> fast(c.x.size());
      cpu::encode_tiles(c.x.data(), kTilesPerCombo, c.K, c.cb, fast.data(), nullptr, ThreadPool::global());
      for (size_t i = 0; i < fast.size(); ++i)
        ASSERT_EQ(fast[i], c.ref[i]) << name << " K=" << c.K << " cb=" << static_cast<int>(c.cb) << " tile "
                                     << i / kTileSize << " step " << i % kTileSize;
    }
  }
  hwy::SetSupportedTargetsForTest(0);
  EXPECT_FALSE(tested.empty());
  std::string names;
  for (const std::string& n : tested) names += n + " ";
  std::cout << "[ targets  ] " << names << "\n";
}

// The fast step's arithmetic against the oracle's (exl3/fp16_round.h, itself tested against a
// correctly rounded binary16 FMA) on its domain: every finite binary16 d against addends p from
// 2^-14 up and +inf (results past 65504 are outside the domain and skipped), then random
// differences dec - w of binary16 values of mixed magnitudes. Exact midpoints (ties to even) and
// sums whose fp32 rounding lands on a midpoint (double rounding) are both frequent in this sweep.
TEST(CpuTileEncoder, FastStepArithmeticMatchesOracle) {
  std::vector<float> probe(1, 1.0f), out(1);
  if (!cpu::tile_encoder_fast_cost_for_test(probe.data(), 0.0f, probe.data(), 1, out.data()))
    GTEST_SKIP() << "target " << cpu::tile_encoder_target_name() << " has no fast step";
  std::vector<float> addends = {fp16_to_fp32(0x0400), fp16_to_fp32(0x0401), fp16_to_fp32(0x7BFF),
                                std::numeric_limits<float>::infinity()};
  for (uint32_t h = 0x0400; h < 0x7C00; h += 29) addends.push_back(fp16_to_fp32(static_cast<uint16_t>(h)));
  std::vector<float> dec, p, got;
  bool failed = false;  // stop at the first mismatch (one message, not millions)
  auto check = [&](float w) {
    got.resize(dec.size());
    ASSERT_TRUE(cpu::tile_encoder_fast_cost_for_test(dec.data(), w, p.data(), dec.size(), got.data()));
    for (size_t i = 0; i < dec.size() && !failed; ++i) {
      const float want = fp16_square_add(round_to_fp16_value(dec[i] - w), p[i]);
      if (std::bit_cast<uint32_t>(got[i]) != std::bit_cast<uint32_t>(want)) {
        ADD_FAILURE() << "dec = " << dec[i] << " w = " << w << " p = " << p[i] << ": got " << got[i]
                      << ", want " << want;
        failed = true;
      }
    }
    dec.clear();
    p.clear();
  };
  for (uint32_t hd = 0; hd < 0x7C00 && !failed; ++hd) {
    const float d = fp16_to_fp32(static_cast<uint16_t>(hd | (hd % 3 == 0 ? 0x8000 : 0)));
    for (float a : addends) {
      if (static_cast<double>(d) * d + a > 65504.0 && !std::isinf(a)) continue;
      dec.push_back(d);
      p.push_back(a);
    }
    if (dec.size() > 4096) check(0.0f);
  }
  check(0.0f);
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> exponent(-16, 6);
  std::uniform_real_distribution<float> mant(-2.0f, 2.0f);
  for (int round = 0; round < 200 && !failed; ++round) {
    const float w = fp16_to_fp32(fp32_to_fp16(std::ldexp(mant(rng), exponent(rng))));
    for (int i = 0; i < 4096; ++i) {
      dec.push_back(fp16_to_fp32(fp32_to_fp16(std::ldexp(mant(rng), exponent(rng)))));
      const float d = round_to_fp16_value(dec.back() - w);
      float a = addends[static_cast<size_t>(i) % addends.size()];
      if (static_cast<double>(d) * d + a > 65504.0) a = std::numeric_limits<float>::infinity();
      p.push_back(a);
    }
    check(w);
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
