// backends/cpu/dense_matmul-inl.h: per-SIMD-target dense fp16-weight matmul (included once per
// Highway target by dense_matmul.cpp).
//
// Shape of the kernel: 4 weight rows (output features) at a time, so each activation vector load
// feeds 4 FMAs. Decode (m = 1) unrolls the i loop by two vectors with separate accumulators to
// cover FMA latency. For m > 1 the 4-row weight block (4·k·2 bytes, L1-resident for the k of LLM
// layers) is reused for x rows taken kMaxRX at a time (a 4 x kMaxRX register tile), over passes
// of 16·kMaxRX rows so those rows stay in L2 while the weights stream.

#if defined(TRELLIS_BACKENDS_CPU_DENSE_MATMUL_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef TRELLIS_BACKENDS_CPU_DENSE_MATMUL_INL_H_
#undef TRELLIS_BACKENDS_CPU_DENSE_MATMUL_INL_H_
#else
#define TRELLIS_BACKENDS_CPU_DENSE_MATMUL_INL_H_
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>

#include <hwy/cache_control.h>
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

// Activation rows per register block: the RW x RX single accumulators, RX activation vectors and
// one weight vector must fit the register file (16 vector registers on AVX2, 32 on AVX-512).
#if HWY_TARGET <= HWY_AVX3
inline constexpr size_t kMaxRX = 6;
#else
inline constexpr size_t kMaxRX = 3;
#endif

// RW weight rows x RX activation rows over i in [0, k_main), k_main a multiple of 2·kL; the tail
// [k_main, k) goes through a zero-padded copy. Adds nothing to y: stores the dot products.
// RX == 1 (decode) keeps two accumulators per row to cover FMA latency; RX > 1 has RW·RX
// independent chains already.
// `pf` (decode only, may be null): the next weight block, prefetched at the rate this block is
// consumed. Rows of LLM layers are short (1-30 KB) and read as RW interleaved streams, which the
// hardware prefetchers pick up too late; without this, m = 1 ran at about half the read bandwidth.
template <size_t RW, size_t RX>
HWY_INLINE void DotBlock(const hwy::float16_t* HWY_RESTRICT w, size_t k, const float* HWY_RESTRICT x,
                         size_t ldx, float* HWY_RESTRICT y, size_t ldy, const hwy::float16_t* pf = nullptr) {
  constexpr bool kTwoAcc = RX == 1;
  const DF df;
  const DH dh;
  VF acc0[RW][RX], acc1[RW][kTwoAcc ? RX : 1];
  for (size_t a = 0; a < RW; ++a) {
    for (size_t b = 0; b < RX; ++b) acc0[a][b] = hn::Zero(df);
    if constexpr (kTwoAcc) acc1[a][0] = hn::Zero(df);
  }
  const size_t k_main = k / (2 * kL) * (2 * kL);
  size_t i = 0;
  for (; i < k_main; i += 2 * kL) {
    if constexpr (kTwoAcc) {
      if (pf) {
        // RW·2·kL halves of this block are consumed per iteration: prefetch as many of the next.
        constexpr size_t kLines = (RW * 2 * kL * 2 + 63) / 64;
        const char* p = reinterpret_cast<const char*>(pf + i * RW);
        for (size_t l = 0; l < kLines; ++l) hwy::Prefetch(p + 64 * l);
      }
      const VF x0 = hn::LoadU(df, x + i), x1 = hn::LoadU(df, x + i + kL);
      for (size_t a = 0; a < RW; ++a) {
        acc0[a][0] = hn::MulAdd(hn::PromoteTo(df, hn::LoadU(dh, w + a * k + i)), x0, acc0[a][0]);
        acc1[a][0] = hn::MulAdd(hn::PromoteTo(df, hn::LoadU(dh, w + a * k + i + kL)), x1, acc1[a][0]);
      }
    } else {
      for (size_t h = 0; h < 2 * kL; h += kL) {
        VF xv[RX];
        for (size_t b = 0; b < RX; ++b) xv[b] = hn::LoadU(df, x + b * ldx + i + h);
        for (size_t a = 0; a < RW; ++a) {
          const VF wv = hn::PromoteTo(df, hn::LoadU(dh, w + a * k + i + h));
          for (size_t b = 0; b < RX; ++b) acc0[a][b] = hn::MulAdd(wv, xv[b], acc0[a][b]);
        }
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
  for (size_t a = 0; a < RW; ++a) {
    for (size_t b = 0; b < RX; ++b) {
      VF sum = acc0[a][b];
      if constexpr (kTwoAcc) sum = hn::Add(sum, acc1[a][0]);
      y[b * ldy + a] = hn::GetLane(hn::SumOfLanes(df, sum));
    }
  }
}

template <size_t RW>
HWY_INLINE void RowBlock(const hwy::float16_t* w, size_t k, const float* x, size_t m, float* y,
                         size_t n) {
  size_t r = 0;
  for (; r + kMaxRX <= m; r += kMaxRX) DotBlock<RW, kMaxRX>(w, k, x + r * k, k, y + r * n, n);
  for (; r + 2 <= m; r += 2) DotBlock<RW, 2>(w, k, x + r * k, k, y + r * n, n);
  if (r < m) DotBlock<RW, 1>(w, k, x + r * k, k, y + r * n, n, m == 1 ? w + RW * k : nullptr);
}

}  // namespace dense_kernels

// Arguments validated by the caller (dense_matmul.cpp).
inline void DenseMatmulF16(const uint16_t* w, const float* x, int64_t m, int64_t k, int64_t n,
                           float* y, ThreadPool& pool) {
  using namespace dense_kernels;
  const auto* wh = reinterpret_cast<const hwy::float16_t*>(w);
  const size_t K = static_cast<size_t>(k), N = static_cast<size_t>(n), M = static_cast<size_t>(m);
  const size_t blocks = (N + 3) / 4;
  // Grain: at least ~32 KiB of weights per chunk (a few µs of streaming): small enough that a
  // 576 x 576 projection spreads over 16+ threads, large enough to amortise claiming a chunk.
  const size_t grain = std::max<size_t>(1, (32u << 10) / (8 * K));
  // Activation rows per pass: a pass streams every weight once while its rows (kRowsPerPass·k
  // floats) stay cache-resident, so large m does not re-stream x from memory per weight block.
  constexpr size_t kRowsPerPass = 16 * kMaxRX;
  for (size_t r0 = 0; r0 < M; r0 += kRowsPerPass) {
    const size_t rows = std::min(kRowsPerPass, M - r0);
    const float* xr = x + r0 * K;
    float* yr = y + r0 * N;
    pool.parallel_for(blocks, grain, [&](size_t b0, size_t b1) {
      for (size_t b = b0; b < b1; ++b) {
        const size_t j = 4 * b;
        if (j + 4 <= N) {
          RowBlock<4>(wh + j * K, K, xr, rows, yr + j, N);
        } else {
          for (size_t jj = j; jj < N; ++jj) RowBlock<1>(wh + jj * K, K, xr, rows, yr + jj, N);
        }
      }
    });
  }
}

}  // namespace trellis::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // include guard
