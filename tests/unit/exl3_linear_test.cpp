// decode_what / reconstruct_weight / reference_matmul against dense references built from an
// explicit Hadamard matrix H[a][b] = (-1)^popcount(a AND b) / sqrt(128) (spec 4.2, 4.3, 7.6).
// All layer tensors are placed at odd addresses: views may point into unaligned mappings.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/fp16.h"
#include "exl3/codebook.h"
#include "exl3/linear.h"
#include "exl3/tile.h"
#include "test_util.h"
#include "trellis/error.h"

namespace trellis::exl3 {
namespace {

using trellis::test::SplitMix64;

// Entry of the block-diagonal Hk for two indices of the same 128-block.
double hadamard_entry(int64_t a, int64_t b) {
  const auto bits = static_cast<uint64_t>((a % 128) & (b % 128));
  return ((std::popcount(bits) & 1) ? -1.0 : 1.0) / std::sqrt(128.0);
}

// A random layer whose tensors live at odd byte offsets of one buffer.
struct RandomLayer {
  Exl3LinearView view;
  std::vector<unsigned char> storage;
  std::vector<uint16_t> states;  // [tiles_k][tiles_n][256]
  std::vector<uint16_t> suh, svh, bias;

  RandomLayer(int64_t k, int64_t n, int K, Codebook cb, uint64_t seed, bool with_bias) {
    SplitMix64 rng(seed);
    const int64_t tiles = (k / 16) * (n / 16);
    states.resize(static_cast<size_t>(tiles * kTileSize));
    std::vector<uint16_t> packed(static_cast<size_t>(tiles * tile_words16(K)));
    for (int64_t t = 0; t < tiles; ++t) {
      // Windows of a random cyclic bitstream: a valid tail-biting sequence.
      uint32_t bits[kTileSize];
      for (auto& b : bits) b = static_cast<uint32_t>(rng.next() >> 50) & ((1u << K) - 1);
      uint16_t* s = &states[static_cast<size_t>(t * kTileSize)];
      for (int i = 0; i < kTileSize; ++i) {
        uint32_t v = 0;
        for (int j = 0; j < (16 + K - 1) / K; ++j)
          v |= bits[(i - j + kTileSize) % kTileSize] << (K * j);
        s[i] = static_cast<uint16_t>(v);
      }
      pack_tile(s, K, &packed[static_cast<size_t>(t * tile_words16(K))]);
    }
    auto scale = [&] {
      const double mag = 0.5 + static_cast<double>(rng.next() >> 40) / 16777216.0;  // [0.5, 1.5)
      return fp32_to_fp16(static_cast<float>((rng.next() >> 63) ? -mag : mag));
    };
    for (int64_t i = 0; i < k; ++i) suh.push_back(scale());
    for (int64_t j = 0; j < n; ++j) svh.push_back(scale());
    if (with_bias)
      for (int64_t j = 0; j < n; ++j) bias.push_back(scale());
    // Layout: 1 pad byte, trellis, 1 pad byte, suh, 1, svh, 1, bias.
    const size_t trellis_bytes = packed.size() * 2;
    storage.resize(4 + trellis_bytes + 2 * static_cast<size_t>(k + 2 * n));
    size_t off = 1;
    auto place = [&](const void* src, size_t bytes) {
      std::memcpy(storage.data() + off, src, bytes);
      const void* where = storage.data() + off;
      off += bytes + 1;
      return where;
    };
    view.k = k;
    view.n = n;
    view.K = K;
    view.codebook = cb;
    view.trellis = place(packed.data(), trellis_bytes);
    view.suh = place(suh.data(), suh.size() * 2);
    view.svh = place(svh.data(), svh.size() * 2);
    view.bias = with_bias ? place(bias.data(), bias.size() * 2) : nullptr;
  }

  // W_hat placed independently of decode_what: element (r, c) of tile (tk, tn) is step
  // step_of(r, c) of that tile.
  std::vector<double> what_reference() const {
    const float* values = codebook_table_f32(view.codebook);
    std::vector<double> what(static_cast<size_t>(view.k * view.n));
    const int64_t tiles_n = view.n / 16;
    for (int64_t row = 0; row < view.k; ++row)
      for (int64_t col = 0; col < view.n; ++col) {
        const int64_t tile = (row / 16) * tiles_n + col / 16;
        const int p = step_of(static_cast<int>(row % 16), static_cast<int>(col % 16));
        what[row * view.n + col] = values[states[static_cast<size_t>(tile * kTileSize + p)]];
      }
    return what;
  }

  // W = diag(suh) Hk W_hat Hn diag(svh) with explicit dense block-diagonal matrices, in double.
  std::vector<double> weight_reference() const {
    const int64_t k = view.k, n = view.n;
    const std::vector<double> what = what_reference();
    std::vector<double> left(static_cast<size_t>(k * n), 0.0), w(static_cast<size_t>(k * n), 0.0);
    for (int64_t i = 0; i < k; ++i)
      for (int64_t a = i / 128 * 128; a < i / 128 * 128 + 128; ++a)
        for (int64_t j = 0; j < n; ++j) left[i * n + j] += hadamard_entry(i, a) * what[a * n + j];
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t b = j / 128 * 128; b < j / 128 * 128 + 128; ++b)
          acc += left[i * n + b] * hadamard_entry(b, j);
        w[i * n + j] = fp16_to_fp32(suh[i]) * acc * fp16_to_fp32(svh[j]);
      }
    return w;
  }
};

TEST(Exl3Linear, DecodeWhatPlacesStepsByTheTileOrder) {
  for (Codebook cb : {Codebook::k3Inst, Codebook::kMcg, Codebook::kMul1}) {
    const RandomLayer layer(128, 256, 3, cb, 0xD1ull + static_cast<uint64_t>(cb), false);
    std::vector<uint16_t> what(128 * 256);
    decode_what(layer.view, what.data());
    const std::vector<double> want = layer.what_reference();
    for (size_t i = 0; i < what.size(); ++i) ASSERT_EQ(fp16_to_fp32(what[i]), want[i]) << i;
  }
}

TEST(Exl3Linear, ReconstructMatchesDenseReference) {
  struct Case {
    int64_t k, n;
    int K;
    Codebook cb;
  };
  for (const Case c : {Case{128, 128, 4, Codebook::kMul1}, Case{256, 384, 2, Codebook::k3Inst},
                       Case{384, 128, 7, Codebook::kMcg}}) {
    const RandomLayer layer(c.k, c.n, c.K, c.cb, 0x5EC0ull + c.K, false);
    std::vector<float> w(static_cast<size_t>(c.k * c.n));
    reconstruct_weight(layer.view, w.data());
    const std::vector<double> want = layer.weight_reference();
    double max_abs = 0, max_err = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      max_abs = std::max(max_abs, std::fabs(want[i]));
      max_err = std::max(max_err, std::fabs(w[i] - want[i]));
    }
    // Spec 7.6 accepts 2e-3 for fp16 paths; an fp32 pipeline is orders of magnitude closer.
    EXPECT_LT(max_err / max_abs, 1e-5) << c.k << "x" << c.n << " K=" << c.K;
  }
}

TEST(Exl3Linear, ReferenceMatmulMatchesDenseProduct) {
  for (bool with_bias : {false, true}) {
    const int64_t k = 256, n = 128, m = 3;
    const RandomLayer layer(k, n, 5, Codebook::kMul1, 0x3A7ull + with_bias, with_bias);
    SplitMix64 rng(0xC0FFEEull);
    std::vector<float> x(static_cast<size_t>(m * k)), y(static_cast<size_t>(m * n));
    for (auto& v : x)
      v = static_cast<float>(static_cast<double>(rng.next() >> 40) / 8388608.0 - 1.0);
    reference_matmul(layer.view, x.data(), m, y.data());
    const std::vector<double> w = layer.weight_reference();
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t j = 0; j < n; ++j) {
        double want = with_bias ? fp16_to_fp32(layer.bias[j]) : 0.0, scale = 0;
        for (int64_t i = 0; i < k; ++i) {
          want += x[r * k + i] * w[i * n + j];
          scale += std::fabs(x[r * k + i] * w[i * n + j]);
        }
        EXPECT_NEAR(y[r * n + j], want, 1e-5 * scale + 1e-6) << r << "," << j;
      }
    }
  }
}

TEST(Exl3Linear, RejectsBadViews) {
  const RandomLayer layer(128, 128, 2, Codebook::k3Inst, 1, false);
  std::vector<float> w(128 * 128);
  std::vector<uint16_t> what(128 * 128);
  Exl3LinearView bad = layer.view;
  bad.K = 9;
  EXPECT_THROW(reconstruct_weight(bad, w.data()), trellis::Error);
  EXPECT_THROW(decode_what(bad, what.data()), trellis::Error);
  bad = layer.view;
  bad.k = 120;
  EXPECT_THROW(reconstruct_weight(bad, w.data()), trellis::Error);
  bad = layer.view;
  bad.suh = nullptr;
  EXPECT_THROW(reconstruct_weight(bad, w.data()), trellis::Error);
  EXPECT_NO_THROW(decode_what(bad, what.data()));  // W_hat needs only the trellis
  bad = layer.view;
  bad.trellis = nullptr;
  EXPECT_THROW(decode_what(bad, what.data()), trellis::Error);
}

}  // namespace
}  // namespace trellis::exl3
