// Tile encoder properties (spec 7.6) and the emulated binary16 arithmetic it relies on.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <numbers>
#include <string>
#include <vector>

#include "core/fp16.h"
#include "core/thread_pool.h"
#include "exl3/encode.h"
#include "exl3/fp16_round.h"
#include "test_util.h"
#include "trellis/error.h"

namespace trellis::exl3 {
namespace {

using trellis::test::SplitMix64;

constexpr Codebook kCodebooks[] = {Codebook::k3Inst, Codebook::kMcg, Codebook::kMul1};

// ---- exl3/fp16_round.h against core/fp16.h ------------------------------------------------------

void expect_float_rounding(float x) {
  const float got = round_to_fp16_value(x);
  const float want = fp16_to_fp32(fp32_to_fp16(x));
  ASSERT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(want))
      << "x = " << x << " bits " << std::hex << std::bit_cast<uint32_t>(x);
}

TEST(Exl3Encode, FastFloatRoundingMatchesCore) {
  // Every 389th float bit pattern below inf (both signs), then every binary16 value, midpoint and
  // their fp32 neighbours.
  for (uint64_t b = 0; b < 0x7F800000u; b += 389) {
    expect_float_rounding(std::bit_cast<float>(static_cast<uint32_t>(b)));
    expect_float_rounding(-std::bit_cast<float>(static_cast<uint32_t>(b)));
  }
  for (uint32_t h = 0; h < 0x7C00; ++h) {
    const float v = fp16_to_fp32(static_cast<uint16_t>(h));
    const float mid = (v + fp16_to_fp32(static_cast<uint16_t>(h + 1))) / 2;  // exact
    for (float x : {v, mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e30f)}) {
      expect_float_rounding(x);
      expect_float_rounding(-x);
    }
  }
  expect_float_rounding(std::numeric_limits<float>::infinity());
  expect_float_rounding(-std::numeric_limits<float>::infinity());
}

// fp16_square_add is the binary16 FMA fp16(a*a + b): exact sum in double (a*a has 22 bits, so
// the double sum is exact or far from a binary16 rounding boundary), rounded once.
TEST(Exl3Encode, SquareAddMatchesACorrectlyRoundedFma) {
  // b: zero, every 37th finite non-negative binary16, the largest values and +inf.
  std::vector<uint16_t> addends = {0x0000, 0x0001, 0x03FF, 0x0400, 0x7BFE, 0x7BFF, 0x7C00};
  for (uint32_t h = 0; h < 0x7C00; h += 37) addends.push_back(static_cast<uint16_t>(h));
  for (uint32_t ha = 0; ha < 0x7C00; ++ha) {  // every finite non-negative a (the sign is squared)
    const float a = fp16_to_fp32(static_cast<uint16_t>(ha));
    for (uint16_t hb : addends) {
      const float b = fp16_to_fp32(hb);
      const float got = fp16_square_add(a, b);
      const double exact = static_cast<double>(a) * a + static_cast<double>(b);
      const float want = fp16_to_fp32(fp64_to_fp16(exact));
      ASSERT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(want))
          << "a = " << a << " b = " << b;
    }
  }
  // Negative a gives the same as positive a.
  EXPECT_EQ(fp16_square_add(-1.5f, 0.25f), fp16_square_add(1.5f, 0.25f));
}

// ---- encoder properties ------------------------------------------------------------------------

struct EncodeJob {
  int K;
  Codebook cb;
  std::vector<uint16_t> x;  // 256 binary16 inputs
  uint16_t states[kTileSize];
  uint16_t decoded[kTileSize];
};

void run_parallel(std::vector<EncodeJob>& jobs) {
  ThreadPool::global().parallel_for(jobs.size(), 1, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i)
      encode_tile(jobs[i].x.data(), jobs[i].K, jobs[i].cb, jobs[i].states, jobs[i].decoded);
  });
}

// Spec 7.6 "ideal" sequences: the values of a valid state sequence encode with zero error.
TEST(Exl3Encode, IdealSequencesEncodeExactly) {
  SplitMix64 rng(0x1DEA1ull);
  std::vector<EncodeJob> jobs;
  for (int K = kMinK; K <= kMaxK; ++K) {
    for (Codebook cb : kCodebooks) {
      EncodeJob job{K, cb, std::vector<uint16_t>(kTileSize), {}, {}};
      uint32_t bits[kTileSize];
      for (auto& b : bits) b = static_cast<uint32_t>(rng.next() >> 40) & ((1u << K) - 1);
      const uint16_t* table = codebook_table(cb);
      for (int i = 0; i < kTileSize; ++i) {
        uint32_t s = 0;
        for (int j = 0; j < (16 + K - 1) / K; ++j)
          s |= bits[(i - j + kTileSize) % kTileSize] << (K * j);
        job.x[i] = table[s & 0xFFFF];
      }
      jobs.push_back(std::move(job));
    }
  }
  run_parallel(jobs);
  for (const EncodeJob& job : jobs) {
    const std::string where =
        "K=" + std::to_string(job.K) + " " + std::string(codebook_name(job.cb));
    EXPECT_TRUE(is_tail_biting(job.states, job.K)) << where;
    const uint16_t* table = codebook_table(job.cb);
    for (int i = 0; i < kTileSize; ++i) {
      ASSERT_EQ(job.decoded[i], table[job.states[i]]) << where;
      ASSERT_EQ(job.decoded[i], job.x[i]) << where << " step " << i;
    }
  }
}

// Spec 7.6: Gaussian inputs (RMS 1.24371088 for 3INST/MCG, 1.0 for MUL1) keep the chain and
// reach ExLlamaV3's error bounds. The bound applies to the MSE of the values divided by the
// scale, i.e. MSE / scale^2 (ExLlamaV3's tests/test_quant_fn.py: mse_loss(in / scale, out /
// scale)).
TEST(Exl3Encode, GaussianInputsMeetErrorBounds) {
  const double bound[kMaxK + 1] = {0, 0.3, 0.1, 0.1, 0.1, 0.1, 0.07, 0.05, 0.04};
  constexpr int kTilesPerCase = 1;
  SplitMix64 rng(0x6A055ull);
  std::vector<EncodeJob> jobs;
  for (int K = kMinK; K <= kMaxK; ++K) {
    for (Codebook cb : kCodebooks) {
      const double scale = cb == Codebook::kMul1 ? 1.0 : kCodebookScale;
      for (int t = 0; t < kTilesPerCase; ++t) {
        EncodeJob job{K, cb, std::vector<uint16_t>(kTileSize), {}, {}};
        for (int i = 0; i < kTileSize; ++i) {
          // Box-Muller from two uniforms in (0, 1].
          const double u1 = (static_cast<double>(rng.next() >> 11) + 1) * 0x1.0p-53;
          const double u2 = static_cast<double>(rng.next() >> 11) * 0x1.0p-53;
          const double g = std::sqrt(-2 * std::log(u1)) * std::cos(2 * std::numbers::pi * u2);
          job.x[i] = fp64_to_fp16(g * scale);
        }
        jobs.push_back(std::move(job));
      }
    }
  }
  run_parallel(jobs);
  for (size_t c = 0; c < jobs.size(); c += kTilesPerCase) {
    const int K = jobs[c].K;
    const Codebook cb = jobs[c].cb;
    const double scale = cb == Codebook::kMul1 ? 1.0 : kCodebookScale;
    double sq = 0;
    for (int t = 0; t < kTilesPerCase; ++t) {
      const EncodeJob& job = jobs[c + t];
      EXPECT_TRUE(is_tail_biting(job.states, K)) << "K=" << K;
      for (int i = 0; i < kTileSize; ++i) {
        const double d = fp16_to_fp32(job.decoded[i]) - fp16_to_fp32(job.x[i]);
        sq += d * d;
      }
    }
    const double mse = sq / (kTilesPerCase * kTileSize);
    EXPECT_LT(mse / (scale * scale), bound[K])
        << "K=" << K << " " << codebook_name(cb) << " mse " << mse;
  }
}

TEST(Exl3Encode, RejectsBadInput) {
  std::vector<uint16_t> x(kTileSize, 0x3C00);
  uint16_t states[kTileSize];
  EXPECT_THROW(encode_tile(x.data(), 0, Codebook::kMul1, states, nullptr), trellis::Error);
  EXPECT_THROW(encode_tile(x.data(), 9, Codebook::kMul1, states, nullptr), trellis::Error);
  x[17] = 0x7C00;  // +inf
  EXPECT_THROW(encode_tile(x.data(), 4, Codebook::kMul1, states, nullptr), trellis::Error);
  x[17] = 0x7E00;  // NaN
  EXPECT_THROW(encode_tile(x.data(), 4, Codebook::kMul1, states, nullptr), trellis::Error);
}

}  // namespace
}  // namespace trellis::exl3
