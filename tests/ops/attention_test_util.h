// tests/ops/attention_test_util.h: one attention call on any backend, for the tests that compare
// a backend's attention kernels with the CPU kernel (vulkan_ops_test.cpp,
// vulkan_attention_coop_test.cpp).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "backends/backend.h"
#include "ops/ops_test_util.h"
#include "test_util.h"

namespace trellis::test {

// Keys/values of cache rows 0 .. prefix + rows - 1 stored, then `rows` query rows at positions
// prefix .. prefix + rows - 1 (in a shuffled order when `shuffled`: positions are per row, so a
// block's key range is not its first and last row's). `ramp` > 0 scales key row t by
// 1 + t / ramp, so that the rows' maxima keep growing from tile to tile.
struct AttnCase {
  int64_t n_heads, n_kv_heads, head_dim, rows, prefix, window;
  bool shuffled = false;
  double ramp = 0;
};

struct AttnInputs {
  std::vector<float> q, k, v;
  std::vector<int32_t> pos;
};

inline AttnInputs attention_inputs(const AttnCase& c, uint64_t seed) {
  const int64_t ctx = c.prefix + c.rows, kvw = c.n_kv_heads * c.head_dim, qw = c.n_heads * c.head_dim;
  AttnInputs in{random_floats(static_cast<size_t>(c.rows * qw), seed, 2.0f),
                random_floats(static_cast<size_t>(ctx * kvw), seed + 1, 2.0f),
                random_floats(static_cast<size_t>(ctx * kvw), seed + 2), {}};
  if (c.ramp > 0)
    for (int64_t t = 0; t < ctx; ++t)
      for (int64_t i = 0; i < kvw; ++i) in.k[static_cast<size_t>(t * kvw + i)] *= static_cast<float>(1 + t / c.ramp);
  for (int64_t r = 0; r < c.rows; ++r) in.pos.push_back(static_cast<int32_t>(c.prefix + r));
  if (c.shuffled) {
    SplitMix64 rng(seed + 3);
    for (size_t i = in.pos.size() - 1; i > 0; --i) std::swap(in.pos[i], in.pos[rng.next() % (i + 1)]);
  }
  return in;
}

// The output rows of one attention call on `be`. q and out are views one row into bigger tensors
// (element offsets), out with a guard row after; the rows before and after the view must stay 0.
inline std::vector<float> run_attention(Backend& be, const AttnCase& c, const AttnInputs& in) {
  const int64_t ctx = c.prefix + c.rows, kvw = c.n_kv_heads * c.head_dim, qw = c.n_heads * c.head_dim;
  AttentionParams ap;
  ap.n_heads = c.n_heads;
  ap.n_kv_heads = c.n_kv_heads;
  ap.head_dim = c.head_dim;
  ap.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  ap.sliding_window = c.window;
  DeviceTensor kc = be.alloc(DType::kF16, {ctx + 3, kvw}), vc = be.alloc(DType::kF16, {ctx + 3, kvw});
  std::vector<int32_t> all(static_cast<size_t>(ctx));
  for (int64_t i = 0; i < ctx; ++i) all[static_cast<size_t>(i)] = static_cast<int32_t>(i);
  be.kv_store(be.upload(f32_view(in.k, {ctx, kvw}), DType::kF32), be.upload(f32_view(in.v, {ctx, kvw}), DType::kF32),
              all, kc, vc);
  std::vector<float> qpad(static_cast<size_t>(qw), 0.0f);
  qpad.insert(qpad.end(), in.q.begin(), in.q.end());
  const DeviceTensor qall = be.upload(f32_view(qpad, {c.rows + 1, qw}), DType::kF32);
  DeviceTensor q = qall.first_rows(c.rows);
  q.offset = static_cast<size_t>(qw) * 4;
  const DeviceTensor oall = be.alloc(DType::kF32, {c.rows + 2, qw});
  DeviceTensor o = oall.first_rows(c.rows);
  o.offset = static_cast<size_t>(qw) * 4;
  be.attention(q, kc, vc, in.pos, ap, o);
  const auto got = fetch(be, oall);
  for (int64_t i = 0; i < qw; ++i) {
    EXPECT_EQ(got[static_cast<size_t>(i)], 0.0f) << "row before the output";
    EXPECT_EQ(got[static_cast<size_t>((c.rows + 1) * qw + i)], 0.0f) << "row after the output";
  }
  return {got.begin() + qw, got.begin() + (c.rows + 1) * qw};
}

}  // namespace trellis::test
