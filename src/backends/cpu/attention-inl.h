// backends/cpu/attention-inl.h: per-SIMD-target body of the CPU attention kernel (included once
// per Highway target by attention.cpp). See attention.h for the contract.
//
// Work item: (kv head, block of kRowBlock query rows). Its queries are the block's rows times the
// group's query heads. Keys are visited in tiles of kTile positions from the smallest first(r) to
// the largest positions[r] of the block; each tile of K and V is widened from fp16 once into an
// fp32 scratch and then used by every query of the item. Per query: scores for the tile
// (positions outside its causal window get -inf), then the online softmax update
//   m' = max(m, max s);  c = exp(m - m');  l = l·c + Σ exp(s - m');  acc = acc·c + Σ exp(s - m')·v.

#if defined(TRELLIS_BACKENDS_CPU_ATTENTION_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef TRELLIS_BACKENDS_CPU_ATTENTION_INL_H_
#undef TRELLIS_BACKENDS_CPU_ATTENTION_INL_H_
#else
#define TRELLIS_BACKENDS_CPU_ATTENTION_INL_H_
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <hwy/contrib/math/math-inl.h>
#include <hwy/highway.h>

#include "backends/cpu/attention.h"
#include "core/fp16.h"
#include "core/thread_pool.h"

HWY_BEFORE_NAMESPACE();
namespace trellis::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

namespace attention_kernels {

using DF = hn::ScalableTag<float>;
using DH = hn::Rebind<hwy::float16_t, DF>;
using VF = hn::Vec<DF>;

inline constexpr int64_t kRowBlock = 16;
inline constexpr int64_t kTile = 64;

// dst[0..n) = fp32(src[0..n)).
HWY_INLINE void Widen(const uint16_t* HWY_RESTRICT src, float* HWY_RESTRICT dst, int64_t n) {
  const DF df;
  const DH dh;
  const int64_t L = static_cast<int64_t>(hn::Lanes(df));
  const auto* s = reinterpret_cast<const hwy::float16_t*>(src);
  int64_t i = 0;
  for (; i + L <= n; i += L) hn::StoreU(hn::PromoteTo(df, hn::LoadU(dh, s + i)), df, dst + i);
  for (; i < n; ++i) dst[i] = fp16_to_fp32(src[i]);
}

// Dot product of two fp32 vectors of length d (d >= 1).
HWY_INLINE float Dot(const float* HWY_RESTRICT a, const float* HWY_RESTRICT b, int64_t d) {
  const DF df;
  const int64_t L = static_cast<int64_t>(hn::Lanes(df));
  VF s0 = hn::Zero(df), s1 = hn::Zero(df);
  int64_t i = 0;
  for (; i + 2 * L <= d; i += 2 * L) {
    s0 = hn::MulAdd(hn::LoadU(df, a + i), hn::LoadU(df, b + i), s0);
    s1 = hn::MulAdd(hn::LoadU(df, a + i + L), hn::LoadU(df, b + i + L), s1);
  }
  for (; i + L <= d; i += L) s0 = hn::MulAdd(hn::LoadU(df, a + i), hn::LoadU(df, b + i), s0);
  float tail = 0;
  for (; i < d; ++i) tail += a[i] * b[i];
  return hn::GetLane(hn::SumOfLanes(df, hn::Add(s0, s1))) + tail;
}

// acc[0..d) = acc·c + Σ_t p[t]·v[t][0..d)  (v rows of length d, contiguous).
HWY_INLINE void Accumulate(float* HWY_RESTRICT acc, float c, const float* HWY_RESTRICT p, const float* HWY_RESTRICT v,
                           int64_t tiles, int64_t d) {
  const DF df;
  const int64_t L = static_cast<int64_t>(hn::Lanes(df));
  const VF vc = hn::Set(df, c);
  int64_t i = 0;
  for (; i + L <= d; i += L) {
    VF a = hn::Mul(hn::LoadU(df, acc + i), vc);
    for (int64_t t = 0; t < tiles; ++t)
      if (p[t] != 0.0f) a = hn::MulAdd(hn::Set(df, p[t]), hn::LoadU(df, v + t * d + i), a);
    hn::StoreU(a, df, acc + i);
  }
  for (; i < d; ++i) {
    float a = acc[i] * c;
    for (int64_t t = 0; t < tiles; ++t) a += p[t] * v[t * d + i];
    acc[i] = a;
  }
}

}  // namespace attention_kernels

inline void AttentionF16Cache(const float* q, const uint16_t* k_cache, const uint16_t* v_cache,
                              const int32_t* positions, const AttentionShape& s, float* out, ThreadPool& pool) {
  using namespace attention_kernels;
  const int64_t d = s.head_dim, group = s.n_heads / s.n_kv_heads, kv_width = s.n_kv_heads * d;
  const int64_t q_width = s.n_heads * d;
  const int64_t row_blocks = (s.rows + kRowBlock - 1) / kRowBlock;
  const size_t items = static_cast<size_t>(row_blocks * s.n_kv_heads);
  pool.parallel_for(items, 1, [&](size_t b, size_t e) {
    const DF df;
    std::vector<float> kt(static_cast<size_t>(kTile * d)), vt(static_cast<size_t>(kTile * d));
    const int64_t nq = kRowBlock * group;
    std::vector<float> acc(static_cast<size_t>(nq * d)), m(static_cast<size_t>(nq)), l(static_cast<size_t>(nq));
    alignas(64) float sc[kTile];
    for (size_t item = b; item < e; ++item) {
      const int64_t kvh = static_cast<int64_t>(item) % s.n_kv_heads;
      const int64_t r0 = static_cast<int64_t>(item) / s.n_kv_heads * kRowBlock;
      const int64_t r1 = std::min(s.rows, r0 + kRowBlock);
      int64_t lo = std::numeric_limits<int64_t>::max(), hi = -1;
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t last = positions[r];
        const int64_t first = s.sliding_window > 0 ? std::max<int64_t>(0, last - s.sliding_window + 1) : 0;
        lo = std::min(lo, first);
        hi = std::max(hi, last);
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      std::fill(m.begin(), m.end(), -std::numeric_limits<float>::infinity());
      std::fill(l.begin(), l.end(), 0.0f);
      for (int64_t t0 = lo; t0 <= hi; t0 += kTile) {
        const int64_t nt = std::min(kTile, hi + 1 - t0);
        for (int64_t t = 0; t < nt; ++t) {
          Widen(k_cache + (t0 + t) * kv_width + kvh * d, kt.data() + t * d, d);
          Widen(v_cache + (t0 + t) * kv_width + kvh * d, vt.data() + t * d, d);
        }
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t last = positions[r];
          const int64_t first = s.sliding_window > 0 ? std::max<int64_t>(0, last - s.sliding_window + 1) : 0;
          if (t0 > last || t0 + nt <= first) continue;
          const int64_t ta = std::max<int64_t>(0, first - t0), tb = std::min(nt, last + 1 - t0);  // valid [ta, tb)
          for (int64_t g = 0; g < group; ++g) {
            const int64_t h = kvh * group + g;
            const int64_t qi = (r - r0) * group + g;
            const float* qv = q + r * q_width + h * d;
            float mx = -std::numeric_limits<float>::infinity();
            for (int64_t t = 0; t < nt; ++t) {
              sc[t] = t >= ta && t < tb ? Dot(qv, kt.data() + t * d, d) * s.scale
                                        : -std::numeric_limits<float>::infinity();
              mx = std::max(mx, sc[t]);
            }
            const float m_new = std::max(m[static_cast<size_t>(qi)], mx);
            const float c = std::exp(m[static_cast<size_t>(qi)] - m_new);  // exp(-inf) = 0 on the first tile
            const VF vm = hn::Set(df, m_new);
            const int64_t L = static_cast<int64_t>(hn::Lanes(df));
            float sum = 0;
            int64_t t = 0;
            for (; t + L <= nt; t += L) {
              const VF p = hn::CallExp(df, hn::Sub(hn::Load(df, sc + t), vm));
              hn::Store(p, df, sc + t);
            }
            for (; t < nt; ++t) sc[t] = std::exp(sc[t] - m_new);
            for (int64_t u = 0; u < nt; ++u) {
              if (u < ta || u >= tb) sc[u] = 0.0f;  // exp(-inf - m) is 0 already; keep it exact
              sum += sc[u];
            }
            l[static_cast<size_t>(qi)] = l[static_cast<size_t>(qi)] * c + sum;
            m[static_cast<size_t>(qi)] = m_new;
            Accumulate(acc.data() + qi * d, c, sc, vt.data(), nt, d);
          }
        }
      }
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t g = 0; g < group; ++g) {
          const int64_t qi = (r - r0) * group + g;
          const float inv = 1.0f / l[static_cast<size_t>(qi)];
          float* o = out + r * q_width + (kvh * group + g) * d;
          const float* a = acc.data() + qi * d;
          for (int64_t i = 0; i < d; ++i) o[i] = a[i] * inv;
        }
      }
    }
  });
}

}  // namespace trellis::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // include guard
