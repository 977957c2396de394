// backends/cpu/dense_matmul-inl.h: per-SIMD-target dense fp16-weight matmul (included once per
// Highway target by dense_matmul.cpp).
//
// Shape of the kernel: 4 weight rows (output features) at a time, so each activation vector load
// feeds 4 FMAs; the i loop is unrolled by two vectors with separate accumulators to cover FMA
// latency. For m > 1 the same 4-row weight block (4·k·2 bytes, L1/L2-resident for the k of LLM
// layers) is reused for x rows taken two at a time, so the weights still stream from memory once.

#if defined(TRELLIS_BACKENDS_CPU_DENSE_MATMUL_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef TRELLIS_BACKENDS_CPU_DENSE_MATMUL_INL_H_
#undef TRELLIS_BACKENDS_CPU_DENSE_MATMUL_INL_H_
#else
#define TRELLIS_BACKENDS_CPU_DENSE_MATMUL_INL_H_
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>

#include <hwy/highway.h>

#include "core/thread_pool.h"

HWY_BEFORE_NAMESPACE();
namespace trellis::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

namespace dense_kernels {

using DF = hn::ScalableTag<float>;
using DH = hn::Rebind<hwy::float16_t, DF>;
using VF = hn::Vec<DF>;
inline constexpr size_t kL = HWY_LANES(float);

// RW weight rows x RX activation rows over i in [0, k_main), k_main a multiple of 2·kL; the tail
// [k_main, k) goes through a zero-padded copy. Adds nothing to y: stores the dot products.
template <size_t RW, size_t RX>
HWY_INLINE void DotBlock(const hwy::float16_t* HWY_RESTRICT w, size_t k, const float* HWY_RESTRICT x,
                         size_t ldx, float* HWY_RESTRICT y, size_t ldy) {
  const DF df;
  const DH dh;
  VF acc0[RW][RX], acc1[RW][RX];
  for (size_t a = 0; a < RW; ++a)
    for (size_t b = 0; b < RX; ++b) acc0[a][b] = acc1[a][b] = hn::Zero(df);
  const size_t k_main = k / (2 * kL) * (2 * kL);
  size_t i = 0;
  for (; i < k_main; i += 2 * kL) {
    VF x0[RX], x1[RX];
    for (size_t b = 0; b < RX; ++b) {
      x0[b] = hn::LoadU(df, x + b * ldx + i);
      x1[b] = hn::LoadU(df, x + b * ldx + i + kL);
    }
    for (size_t a = 0; a < RW; ++a) {
      const VF w0 = hn::PromoteTo(df, hn::LoadU(dh, w + a * k + i));
      const VF w1 = hn::PromoteTo(df, hn::LoadU(dh, w + a * k + i + kL));
      for (size_t b = 0; b < RX; ++b) {
        acc0[a][b] = hn::MulAdd(w0, x0[b], acc0[a][b]);
        acc1[a][b] = hn::MulAdd(w1, x1[b], acc1[a][b]);
      }
    }
  }
  if (i < k) {
    // Tail: zero-padded copies, at most 2·kL - 1 elements.
    alignas(64) hwy::float16_t wt[RW][2 * kL];
    alignas(64) float xt[RX][2 * kL];
    std::memset(wt, 0, sizeof(wt));
    std::memset(xt, 0, sizeof(xt));
    const size_t rest = k - i;
    for (size_t a = 0; a < RW; ++a) std::memcpy(wt[a], w + a * k + i, rest * 2);
    for (size_t b = 0; b < RX; ++b) std::memcpy(xt[b], x + b * ldx + i, rest * 4);
    for (size_t h = 0; h < 2 * kL; h += kL) {
      for (size_t a = 0; a < RW; ++a) {
        const VF wv = hn::PromoteTo(df, hn::Load(dh, wt[a] + h));
        for (size_t b = 0; b < RX; ++b) acc0[a][b] = hn::MulAdd(wv, hn::Load(df, xt[b] + h), acc0[a][b]);
      }
    }
  }
  for (size_t a = 0; a < RW; ++a)
    for (size_t b = 0; b < RX; ++b)
      y[b * ldy + a] = hn::GetLane(hn::SumOfLanes(df, hn::Add(acc0[a][b], acc1[a][b])));
}

template <size_t RW>
HWY_INLINE void RowBlock(const hwy::float16_t* w, size_t k, const float* x, size_t m, float* y,
                         size_t n) {
  size_t r = 0;
  for (; r + 2 <= m; r += 2) DotBlock<RW, 2>(w, k, x + r * k, k, y + r * n, n);
  if (r < m) DotBlock<RW, 1>(w, k, x + r * k, k, y + r * n, n);
}

}  // namespace dense_kernels

// Arguments validated by the caller (dense_matmul.cpp).
inline void DenseMatmulF16(const uint16_t* w, const float* x, int64_t m, int64_t k, int64_t n,
                           float* y, ThreadPool& pool) {
  using namespace dense_kernels;
  const auto* wh = reinterpret_cast<const hwy::float16_t*>(w);
  const size_t K = static_cast<size_t>(k), N = static_cast<size_t>(n), M = static_cast<size_t>(m);
  const size_t blocks = (N + 3) / 4;
  // Grain: at least ~256 KiB of weights per chunk so short calls are not dominated by wake-ups.
  const size_t grain = std::max<size_t>(1, (256u << 10) / (8 * K));
  pool.parallel_for(blocks, grain, [&](size_t b0, size_t b1) {
    for (size_t b = b0; b < b1; ++b) {
      const size_t j = 4 * b;
      if (j + 4 <= N) {
        RowBlock<4>(wh + j * K, K, x, M, y + j, N);
      } else {
        for (size_t jj = j; jj < N; ++jj) RowBlock<1>(wh + jj * K, K, x, M, y + jj, N);
      }
    }
  });
}

}  // namespace trellis::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // include guard
