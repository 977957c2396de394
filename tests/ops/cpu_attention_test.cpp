// The CPU attention kernel (backends/cpu/attention.h) against a direct double-precision
// evaluation of softmax(q·Kᵀ·scale)·V over the causal (optionally sliding) window, for every
// compiled Highway target: GQA groups, head sizes that are not multiples of the vector width,
// prefill blocks that cross the kernel's row blocks and key tiles, decode at a late position,
// and non-monotonic positions.
#include <gtest/gtest.h>

#include <hwy/targets.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "backends/cpu/attention.h"
#include "backends/cpu/exl3_matmul.h"
#include "core/fp16.h"
#include "core/thread_pool.h"
#include "test_util.h"

namespace trellis {
namespace {

struct Case {
  int64_t rows, n_heads, n_kv_heads, head_dim, first_pos, window;
};

void check(const Case& c, ThreadPool& pool, test::SplitMix64& rng) {
  SCOPED_TRACE(::testing::Message() << "rows " << c.rows << " heads " << c.n_heads << "/" << c.n_kv_heads << " d "
                                    << c.head_dim << " first " << c.first_pos << " window " << c.window);
  auto uniform = [&] { return static_cast<float>(static_cast<double>(rng.next() >> 11) / 4503599627370496.0 * 2 - 1); };
  std::vector<int32_t> pos(static_cast<size_t>(c.rows));
  for (int64_t r = 0; r < c.rows; ++r) pos[static_cast<size_t>(r)] = static_cast<int32_t>(c.first_pos + r);
  if (c.rows > 3) std::swap(pos[1], pos[static_cast<size_t>(c.rows - 2)]);  // order must not matter
  const int64_t ctx = c.first_pos + c.rows;
  const int64_t kvw = c.n_kv_heads * c.head_dim, qw = c.n_heads * c.head_dim;
  std::vector<uint16_t> kc(static_cast<size_t>(ctx * kvw)), vc(kc.size());
  for (auto& h : kc) h = fp32_to_fp16(uniform() * 3);
  for (auto& h : vc) h = fp32_to_fp16(uniform());
  std::vector<float> q(static_cast<size_t>(c.rows * qw)), out(q.size() + 16, 1234.5f);
  for (float& v : q) v = uniform() * 2;
  cpu::AttentionShape s;
  s.rows = c.rows;
  s.n_heads = c.n_heads;
  s.n_kv_heads = c.n_kv_heads;
  s.head_dim = c.head_dim;
  s.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  s.sliding_window = c.window;
  cpu::attention_f16_cache(q.data(), kc.data(), vc.data(), pos.data(), s, out.data(), pool);
  for (size_t i = q.size(); i < out.size(); ++i) ASSERT_EQ(out[i], 1234.5f) << "wrote past the output";
  const int64_t group = c.n_heads / c.n_kv_heads;
  for (int64_t r = 0; r < c.rows; ++r) {
    const int64_t last = pos[static_cast<size_t>(r)];
    const int64_t first = c.window > 0 ? std::max<int64_t>(0, last - c.window + 1) : 0;
    for (int64_t h = 0; h < c.n_heads; ++h) {
      const int64_t kvh = h / group;
      std::vector<double> sc;
      double mx = -1e300;
      for (int64_t t = first; t <= last; ++t) {
        double d = 0;
        for (int64_t i = 0; i < c.head_dim; ++i)
          d += static_cast<double>(q[static_cast<size_t>(r * qw + h * c.head_dim + i)]) *
               fp16_to_fp32(kc[static_cast<size_t>(t * kvw + kvh * c.head_dim + i)]);
        sc.push_back(d * s.scale);
        mx = std::max(mx, sc.back());
      }
      double sum = 0;
      for (double& v : sc) sum += (v = std::exp(v - mx));
      for (int64_t i = 0; i < c.head_dim; ++i) {
        double want = 0;
        for (int64_t t = first; t <= last; ++t)
          want += sc[static_cast<size_t>(t - first)] / sum * fp16_to_fp32(vc[static_cast<size_t>(t * kvw + kvh * c.head_dim + i)]);
        ASSERT_NEAR(out[static_cast<size_t>(r * qw + h * c.head_dim + i)], want, 2e-5)
            << "row " << r << " head " << h << " i " << i;
      }
    }
  }
}

TEST(CpuAttention, AgainstDirectSoftmaxEveryTarget) {
  ThreadPool pool(3);
  const Case cases[] = {
      {1, 1, 1, 8, 0, 0},      // one token, one head
      {1, 9, 3, 64, 150, 0},   // decode late in the context, GQA 3
      {37, 4, 2, 64, 0, 0},    // prefill across row blocks (16) from position 0
      {70, 6, 6, 40, 5, 0},    // MHA, head_dim not a multiple of 16, key tiles (64) crossed
      {20, 8, 1, 3, 90, 0},    // MQA, tiny head_dim (scalar tails only)
      {33, 4, 2, 64, 10, 7},   // sliding window
      {1, 4, 2, 64, 200, 16},  // decode with a sliding window
  };
  const std::vector<int64_t> targets = cpu::exl3_compiled_targets();
  for (int64_t t : targets) {
    hwy::SetSupportedTargetsForTest(t);
    SCOPED_TRACE(hwy::TargetName(t));
    test::SplitMix64 rng(2024);
    for (const Case& c : cases) check(c, pool, rng);
  }
  hwy::SetSupportedTargetsForTest(0);
}

}  // namespace
}  // namespace trellis
