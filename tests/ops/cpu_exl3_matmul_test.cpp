// tests/ops/cpu_exl3_matmul_test.cpp: the CPU EXL3 matmul and dense fp16 matmul against the
// scalar oracles (exl3::reference_matmul, exl3::unpack_tile + exl3::codebook_table, a naive
// double loop), on every Highway target compiled in and supported by this CPU.
#include <gtest/gtest.h>
#include <hwy/targets.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "backends/cpu/dense_matmul.h"
#include "backends/cpu/exl3_matmul.h"
#include "core/fp16.h"
#include "core/thread_pool.h"
#include "exl3/codebook.h"
#include "exl3/linear.h"
#include "exl3/tile.h"
#include "trellis/error.h"
#include "test_util.h"

namespace trellis {
namespace {

using exl3::Codebook;
constexpr Codebook kCodebooks[] = {Codebook::k3Inst, Codebook::kMcg, Codebook::kMul1};

// Runs body(thorough) once per compiled and supported target, with dispatch pinned to it;
// `thorough` is true for the best target and the scalar fallback (first and last in the list).
template <class F>
void for_each_target(F&& body) {
  const std::vector<int64_t> targets = cpu::exl3_compiled_targets();
  ASSERT_FALSE(targets.empty());
  for (int64_t t : targets) {
    hwy::SetSupportedTargetsForTest(t);
    SCOPED_TRACE(hwy::TargetName(t));
    ASSERT_STREQ(cpu::exl3_dispatch_target_name(), hwy::TargetName(t));
    body(t == targets.front() || t == targets.back());
  }
  hwy::SetSupportedTargetsForTest(0);
}

float fp16_value(uint16_t h) { return fp16_to_fp32(h); }

// Checks the SIMD decode of `tile` against unpack_tile + codebook_table, bit for bit.
void expect_tile_exact(const uint8_t* tile, int K, Codebook cb) {
  uint16_t states[256];
  exl3::unpack_tile(tile, K, states);
  float got[256];
  cpu::exl3_decode_tile(tile, K, cb, got);
  const uint16_t* table = exl3::codebook_table(cb);
  for (int p = 0; p < 256; ++p) {
    const float want = fp16_value(table[states[p]]);
    uint32_t gb, wb;
    std::memcpy(&gb, &got[p], 4);
    std::memcpy(&wb, &want, 4);
    ASSERT_EQ(gb, wb) << "K=" << K << " cb=" << exl3::codebook_name(cb) << " step " << p
                      << " state " << states[p] << " got " << got[p] << " want " << want;
  }
}

TEST(CpuExl3Decode, AllStatesBitExact) {
  // K = 8 windows are two whole stream bytes, so tile (hi, half) with stream bytes
  // hi, 128·half + 0, hi, 128·half + 1, ... holds states hi·256 + lo for 128 values of lo.
  // 512 such tiles cover all 65536 states.
  for_each_target([](bool) {
    std::vector<uint8_t> tile(32 * 8);
    for (Codebook cb : kCodebooks) {
      for (int hi = 0; hi < 256; ++hi) {
        for (int half = 0; half < 2; ++half) {
          for (int q = 0; q < 256; ++q) {
            const int byte = q % 2 == 0 ? hi : 128 * half + q / 2;
            tile[(q / 4) * 4 + 3 - q % 4] = static_cast<uint8_t>(byte);
          }
          expect_tile_exact(tile.data(), 8, cb);
          if (HasFatalFailure()) return;
        }
      }
    }
  });
}

TEST(CpuExl3Decode, RandomTilesAllK) {
  for_each_target([](bool) {
    test::SplitMix64 rng(1234);
    std::vector<uint8_t> buf(32 * 8 + 3);
    for (int K = 1; K <= 8; ++K) {
      for (Codebook cb : kCodebooks) {
        for (int rep = 0; rep < 40; ++rep) {
          uint8_t* tile = buf.data() + rep % 3;  // misaligned on purpose
          for (int i = 0; i < 32 * K; ++i) tile[i] = static_cast<uint8_t>(rng.next());
          if (rep == 0) std::memset(tile, 0, 32 * K);
          if (rep == 1) std::memset(tile, 0xFF, 32 * K);
          expect_tile_exact(tile, K, cb);
          if (HasFatalFailure()) return;
        }
      }
    }
  });
}

// One random EXL3 layer, with its tensors placed at odd byte offsets inside one buffer.
struct RandomLayer {
  std::vector<uint8_t> storage;
  exl3::Exl3LinearView view;

  RandomLayer(int64_t k, int64_t n, int K, Codebook cb, bool with_bias, uint64_t seed) {
    test::SplitMix64 rng(seed);
    const size_t trellis_bytes = static_cast<size_t>(k / 16) * (n / 16) * 32 * K;
    const size_t off_trellis = 1, off_suh = off_trellis + trellis_bytes + 2;
    const size_t off_svh = off_suh + 2 * k + 1, off_bias = off_svh + 2 * n + 2;
    storage.resize(off_bias + 2 * n + 8);
    for (size_t i = 0; i < trellis_bytes; ++i) storage[off_trellis + i] = static_cast<uint8_t>(rng.next());
    auto fill_half = [&](size_t off, int64_t count, float lo, float hi, bool random_sign) {
      for (int64_t i = 0; i < count; ++i) {
        const double u = static_cast<double>(rng.next() >> 11) / 9007199254740992.0;
        float v = lo + static_cast<float>(u) * (hi - lo);
        if (random_sign && (rng.next() & 1)) v = -v;
        const uint16_t h = fp32_to_fp16(v);
        std::memcpy(&storage[off + 2 * i], &h, 2);
      }
    };
    fill_half(off_suh, k, 0.002f, 0.02f, true);
    fill_half(off_svh, n, 0.5f, 1.5f, true);
    fill_half(off_bias, n, -1.0f, 1.0f, false);
    view.k = k;
    view.n = n;
    view.K = K;
    view.codebook = cb;
    view.trellis = storage.data() + off_trellis;
    view.suh = storage.data() + off_suh;
    view.svh = storage.data() + off_svh;
    view.bias = with_bias ? storage.data() + off_bias : nullptr;
  }
};

constexpr float kSentinel = -12345.678f;

// Runs exl3_matmul and the reference on one layer; returns max|diff| / max|ref|.
double run_and_compare(const exl3::Exl3LinearView& view, int64_t m, uint64_t seed, ThreadPool& pool) {
  test::SplitMix64 rng(seed);
  // x one float past a 64-byte boundary, y likewise, with guard floats after y.
  std::vector<float> xbuf(static_cast<size_t>(m * view.k) + 17), ybuf(static_cast<size_t>(m * view.n) + 64);
  float* x = xbuf.data() + 1;
  float* y = ybuf.data() + 1;
  for (int64_t i = 0; i < m * view.k; ++i)
    x[i] = static_cast<float>(static_cast<double>(rng.next() >> 11) / 4503599627370496.0 - 1.0);
  std::fill(ybuf.begin(), ybuf.end(), kSentinel);
  cpu::exl3_matmul(view, x, m, y, pool);
  std::vector<float> ref(static_cast<size_t>(m * view.n));
  exl3::reference_matmul(view, x, m, ref.data());
  EXPECT_EQ(ybuf[0], kSentinel) << "wrote before y";
  for (size_t i = static_cast<size_t>(m * view.n) + 1; i < ybuf.size(); ++i)
    EXPECT_EQ(ybuf[i], kSentinel) << "wrote past y at " << i;
  double max_diff = 0.0, max_ref = 0.0;
  for (int64_t i = 0; i < m * view.n; ++i) {
    EXPECT_TRUE(std::isfinite(y[i])) << i;
    max_diff = std::max(max_diff, std::fabs(static_cast<double>(y[i]) - ref[i]));
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(ref[i])));
  }
  return max_ref > 0 ? max_diff / max_ref : max_diff;
}

constexpr double kTolerance = 1e-5;

TEST(CpuExl3Matmul, AllVariantsAgainstReference) {
  ThreadPool pool(2);
  for_each_target([&](bool thorough) {
    const std::vector<int64_t> ms = thorough ? std::vector<int64_t>{1, 2, 3, 5, 8, 17}
                                             : std::vector<int64_t>{1, 5};
    struct Shape { int64_t k, n; };
    const std::vector<Shape> shapes = thorough ? std::vector<Shape>{{256, 384}, {384, 128}}
                                               : std::vector<Shape>{{256, 256}};
    uint64_t seed = 1;
    for (int K = 1; K <= 8; ++K) {
      for (Codebook cb : kCodebooks) {
        for (const Shape& s : shapes) {
          for (int64_t m : ms) {
            const bool bias = (seed & 1) != 0;
            RandomLayer layer(s.k, s.n, K, cb, bias, ++seed);
            const double err = run_and_compare(layer.view, m, seed * 7919, pool);
            EXPECT_LE(err, kTolerance) << cpu::exl3_variant_name(K, cb) << " k=" << s.k
                                       << " n=" << s.n << " m=" << m << " bias=" << bias;
          }
        }
      }
    }
  });
}

TEST(CpuExl3Matmul, LargerShapesAndThreads) {
  // k != n, n = 128 (a single block: one thread works), and more blocks than threads.
  struct Case { int64_t k, n, m; int K; Codebook cb; size_t threads; };
  const Case cases[] = {{1024, 128, 1, 4, Codebook::kMul1, 2},   {128, 1024, 3, 3, Codebook::k3Inst, 3},
                        {512, 768, 1, 2, Codebook::kMcg, 4},      {768, 512, 2, 5, Codebook::kMul1, 1},
                        {1024, 1024, 1, 8, Codebook::k3Inst, 2},  {640, 384, 33, 1, Codebook::kMcg, 2},
                        {256, 2048, 4, 6, Codebook::kMul1, 2},    {2048, 256, 1, 7, Codebook::k3Inst, 2},
                        // m >= 16: Ŵ decoded per band, then the dense kernel
                        {512, 384, 64, 3, Codebook::kMcg, 2},     {256, 256, 20, 8, Codebook::kMul1, 3},
                        {384, 128, 16, 2, Codebook::k3Inst, 2}};
  uint64_t seed = 100;
  for (const Case& c : cases) {
    ThreadPool pool(c.threads);
    ++seed;
    RandomLayer layer(c.k, c.n, c.K, c.cb, seed % 2 == 0, seed);
    const double err = run_and_compare(layer.view, c.m, seed, pool);
    EXPECT_LE(err, kTolerance) << cpu::exl3_variant_name(c.K, c.cb) << " k=" << c.k << " n=" << c.n
                               << " m=" << c.m << " threads=" << c.threads;
  }
}

TEST(CpuExl3Matmul, SplitKDecodeOnManyThreads) {
  // m = 1 with fewer 128-column blocks than threads splits k across threads (partial sums added
  // per block afterwards): every variant, uneven splits (k/16 not a multiple of the split), bias,
  // and n of one and three blocks.
  ThreadPool pool(7);
  for_each_target([&](bool thorough) {
    uint64_t seed = 500;
    for (int K = 1; K <= 8; ++K) {
      for (Codebook cb : kCodebooks) {
        for (const auto& [k, n] : {std::pair<int64_t, int64_t>{896, 128}, {1280, 384}}) {
          if (!thorough && n == 384) continue;
          ++seed;
          RandomLayer layer(k, n, K, cb, seed % 2 == 0, seed);
          const double err = run_and_compare(layer.view, 1, seed * 31, pool);
          EXPECT_LE(err, kTolerance) << cpu::exl3_variant_name(K, cb) << " k=" << k << " n=" << n;
        }
      }
    }
  });
}

TEST(CpuExl3Matmul, RejectsBadArguments) {
  ThreadPool pool(1);
  RandomLayer layer(128, 128, 4, Codebook::kMul1, false, 9);
  std::vector<float> x(128), y(128);
  auto bad = layer.view;
  bad.K = 9;
  EXPECT_THROW(cpu::exl3_matmul(bad, x.data(), 1, y.data(), pool), Error);
  bad = layer.view;
  bad.n = 144;
  EXPECT_THROW(cpu::exl3_matmul(bad, x.data(), 1, y.data(), pool), Error);
  bad = layer.view;
  bad.suh = nullptr;
  EXPECT_THROW(cpu::exl3_matmul(bad, x.data(), 1, y.data(), pool), Error);
  EXPECT_THROW(cpu::exl3_matmul(layer.view, x.data(), -1, y.data(), pool), Error);
  EXPECT_NO_THROW(cpu::exl3_matmul(layer.view, nullptr, 0, nullptr, pool));
  EXPECT_STREQ(cpu::exl3_variant_name(3, Codebook::kMul1), "exl3_matmul_k3_mul1");
}

TEST(CpuDenseMatmulF16, AgainstNaiveLoop) {
  ThreadPool pool(2);
  for_each_target([&](bool) {
    test::SplitMix64 rng(77);
    struct Shape { int64_t m, k, n; };
    const Shape shapes[] = {{1, 1, 1},   {1, 7, 5},    {2, 33, 4},    {3, 200, 17},
                            {5, 1000, 9}, {1, 4096, 64}, {4, 130, 130}, {17, 64, 33},
                            {7, 48, 12},  {13, 256, 5},  {100, 70, 9}};
    for (const Shape& s : shapes) {
      std::vector<uint16_t> wbuf(static_cast<size_t>(s.n * s.k) + 1);
      uint16_t* w = wbuf.data() + 1;  // 2-byte misaligned relative to the allocation
      for (int64_t i = 0; i < s.n * s.k; ++i)
        w[i] = fp32_to_fp16(static_cast<float>(static_cast<double>(rng.next() >> 11) / 4503599627370496.0 - 1.0));
      std::vector<float> xbuf(static_cast<size_t>(s.m * s.k) + 1), ybuf(static_cast<size_t>(s.m * s.n) + 32);
      float* x = xbuf.data() + 1;
      for (int64_t i = 0; i < s.m * s.k; ++i)
        x[i] = static_cast<float>(static_cast<double>(rng.next() >> 11) / 4503599627370496.0 - 1.0);
      std::fill(ybuf.begin(), ybuf.end(), kSentinel);
      cpu::dense_matmul_f16(w, x, s.m, s.k, s.n, ybuf.data(), pool);
      for (size_t i = static_cast<size_t>(s.m * s.n); i < ybuf.size(); ++i) ASSERT_EQ(ybuf[i], kSentinel);
      for (int64_t r = 0; r < s.m; ++r) {
        for (int64_t j = 0; j < s.n; ++j) {
          double want = 0.0, scale = 0.0;
          for (int64_t i = 0; i < s.k; ++i) {
            const double p = static_cast<double>(x[r * s.k + i]) * fp16_to_fp32(w[j * s.k + i]);
            want += p;
            scale += std::fabs(p);
          }
          EXPECT_NEAR(ybuf[r * s.n + j], want, 1e-6 * scale + 1e-30)
              << "m=" << s.m << " k=" << s.k << " n=" << s.n << " r=" << r << " j=" << j;
        }
      }
    }
  });
  EXPECT_THROW(cpu::dense_matmul_f16(nullptr, nullptr, 1, 0, 1, nullptr, pool), Error);
}

}  // namespace
}  // namespace trellis
