// backends/cpu/gram.cpp: the lower triangle of xᵀ·x (spec 5.3 Hessians; also the proxy error's
// traces), with Highway runtime dispatch.
//
// Shape of the kernel: finite rows are gathered, kChunk at a time, into a buffer whose row stride
// is padded with zeros to a multiple of the column block (2 vectors), so every load is whole. One
// task is a band of RI output rows (i); for each column block j0 at or left of the diagonal, an
// RI x 2-vector register tile accumulates over the chunk's rows: per row, 2 vector loads and RI
// broadcasts feed 2·RI FMAs. RI = 8 on AVX-512 (16 accumulators of 32 registers), 4 elsewhere.

#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS HWY_SSSE3
#endif

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "backends/cpu/gram.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep

#include <hwy/highway.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "backends/cpu/gram.h"
#include "core/error.h"

HWY_BEFORE_NAMESPACE();
namespace trellis::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

#if HWY_TARGET <= HWY_AVX3
inline constexpr int64_t kGramRI = 8;
#else
inline constexpr int64_t kGramRI = 4;
#endif

using VF = hn::Vec<hn::ScalableTag<float>>;

// The register tile both kernels share: c0[u], c1[u] = Σ_t a[t][u] · b[t][0 .. 2L) for u < kGramRI
// (a and b already offset to the tile's first row and column).
HWY_INLINE void TileAtB(const float* HWY_RESTRICT a, int64_t lda, const float* HWY_RESTRICT b, int64_t ldb,
                        int64_t rows, VF* HWY_RESTRICT c0, VF* HWY_RESTRICT c1) {
  const hn::ScalableTag<float> df;
  const size_t L = hn::Lanes(df);
  for (int64_t u = 0; u < kGramRI; ++u) c0[u] = c1[u] = hn::Zero(df);
  for (int64_t t = 0; t < rows; ++t) {
    const float* bt = b + t * ldb;
    const float* at = a + t * lda;
    const VF x0 = hn::LoadU(df, bt), x1 = hn::LoadU(df, bt + L);
    for (int64_t u = 0; u < kGramRI; ++u) {
      const VF xi = hn::Set(df, at[u]);
      c0[u] = hn::MulAdd(xi, x0, c0[u]);
      c1[u] = hn::MulAdd(xi, x1, c1[u]);
    }
  }
}

// acc[i][j] += Σ_t buf[t][i] · buf[t][j] for i in [i0, i0 + RI) ∩ [0, cols), j <= i.
void GramBand(const float* HWY_RESTRICT buf, int64_t rows, int64_t ld, int64_t cols, int64_t i0, float* acc,
              int64_t k) {
  const hn::ScalableTag<float> df;
  const int64_t L = static_cast<int64_t>(hn::Lanes(df));
  const int64_t jw = 2 * L;
  const int64_t ni = std::min(kGramRI, cols - i0);
  HWY_ALIGN float tile[kGramRI * 2 * HWY_MAX_BYTES / sizeof(float)];
  for (int64_t j0 = 0; j0 < i0 + ni; j0 += jw) {
    VF c0[kGramRI], c1[kGramRI];
    TileAtB(buf + i0, ld, buf + j0, ld, rows, c0, c1);  // the padding makes i0 + u, j0 + jw <= ld
    for (int64_t u = 0; u < kGramRI; ++u) {
      hn::Store(c0[u], df, tile + u * jw);
      hn::Store(c1[u], df, tile + u * jw + L);
    }
    for (int64_t u = 0; u < ni; ++u) {
      const int64_t i = i0 + u, jend = std::min(j0 + jw, i + 1);
      for (int64_t j = j0; j < jend; ++j) acc[i * k + j] += tile[u * jw + (j - j0)];
    }
  }
}

// out[i][j] += Σ_t a[t][i] · b[t][j] for i < ni, j < nj (row strides lda, ldb, ldo). Rows of `a`
// are read in whole bands: a[t][i] must be readable for i < ni rounded up to kGramRI.
void AtBAccumulate(const float* HWY_RESTRICT a, int64_t lda, const float* HWY_RESTRICT b, int64_t ldb, int64_t rows,
                   int64_t ni, int64_t nj, float* HWY_RESTRICT out, int64_t ldo) {
  const hn::ScalableTag<float> df;
  const int64_t L = static_cast<int64_t>(hn::Lanes(df));
  const int64_t jw = 2 * L;
  for (int64_t i0 = 0; i0 < ni; i0 += kGramRI) {
    const int64_t nb = std::min(kGramRI, ni - i0);
    int64_t j0 = 0;
    for (; j0 + jw <= nj; j0 += jw) {
      VF c0[kGramRI], c1[kGramRI];
      TileAtB(a + i0, lda, b + j0, ldb, rows, c0, c1);
      for (int64_t u = 0; u < nb; ++u) {
        float* o = out + (i0 + u) * ldo + j0;
        hn::StoreU(hn::Add(hn::LoadU(df, o), c0[u]), df, o);
        hn::StoreU(hn::Add(hn::LoadU(df, o + L), c1[u]), df, o + L);
      }
    }
    for (int64_t u = 0; u < nb; ++u)  // column tail
      for (int64_t j = j0; j < nj; ++j) {
        float s = 0;
        for (int64_t t = 0; t < rows; ++t) s += a[t * lda + i0 + u] * b[t * ldb + j];
        out[(i0 + u) * ldo + j] += s;
      }
  }
}

// Σ a[p]·b[p], four vector accumulators, scalar tail.
float DotF32(const float* HWY_RESTRICT a, const float* HWY_RESTRICT b, int64_t n) {
  const hn::ScalableTag<float> df;
  const int64_t L = static_cast<int64_t>(hn::Lanes(df));
  auto s0 = hn::Zero(df), s1 = hn::Zero(df), s2 = hn::Zero(df), s3 = hn::Zero(df);
  int64_t p = 0;
  for (; p + 4 * L <= n; p += 4 * L) {
    s0 = hn::MulAdd(hn::LoadU(df, a + p), hn::LoadU(df, b + p), s0);
    s1 = hn::MulAdd(hn::LoadU(df, a + p + L), hn::LoadU(df, b + p + L), s1);
    s2 = hn::MulAdd(hn::LoadU(df, a + p + 2 * L), hn::LoadU(df, b + p + 2 * L), s2);
    s3 = hn::MulAdd(hn::LoadU(df, a + p + 3 * L), hn::LoadU(df, b + p + 3 * L), s3);
  }
  for (; p + L <= n; p += L) s0 = hn::MulAdd(hn::LoadU(df, a + p), hn::LoadU(df, b + p), s0);
  float s = hn::GetLane(hn::SumOfLanes(df, hn::Add(hn::Add(s0, s1), hn::Add(s2, s3))));
  for (; p < n; ++p) s += a[p] * b[p];
  return s;
}

int64_t GramBlockRows() { return kGramRI; }
int64_t GramColumnBlock() { return 2 * static_cast<int64_t>(hn::Lanes(hn::ScalableTag<float>())); }

}  // namespace trellis::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace trellis::cpu {

HWY_EXPORT(GramBand);
HWY_EXPORT(GramBlockRows);
HWY_EXPORT(GramColumnBlock);
HWY_EXPORT(AtBAccumulate);
HWY_EXPORT(DotF32);

float dot_f32(const float* a, const float* b, int64_t n) { return HWY_DYNAMIC_DISPATCH(DotF32)(a, b, n); }

void atb_accumulate(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t rows, int64_t ni, int64_t nj,
                    float* out, int64_t ldo) {
  HWY_DYNAMIC_DISPATCH(AtBAccumulate)(a, lda, b, ldb, rows, ni, nj, out, ldo);
}

GramCount gram_accumulate(const float* x, int64_t rows, int64_t cols, float* acc, int64_t k, ThreadPool& pool) {
  TRELLIS_CHECK(cols <= k);
  constexpr int64_t kChunk = 256;
  const int64_t ri = HWY_DYNAMIC_DISPATCH(GramBlockRows)(), jw = HWY_DYNAMIC_DISPATCH(GramColumnBlock)();
  // Row stride: room for the last column block and the last row band, zero-filled.
  const int64_t ld = std::max((cols + jw - 1) / jw * jw, (cols + ri - 1) / ri * ri);
  GramCount count;
  std::vector<float> buf(static_cast<size_t>(kChunk * ld), 0.0f);
  int64_t r = 0;
  while (r < rows) {
    int64_t filled = 0;
    for (; r < rows && filled < kChunk; ++r) {
      const float* src = x + r * cols;
      bool finite = true;
      for (int64_t c = 0; c < cols; ++c) finite &= std::isfinite(src[c]);
      if (!finite) {
        ++count.skipped;
        continue;
      }
      std::copy(src, src + cols, &buf[static_cast<size_t>(filled * ld)]);
      ++filled;
    }
    if (filled == 0) continue;
    count.added += static_cast<uint64_t>(filled);
    const int64_t bands = (cols + ri - 1) / ri;
    // Bands are claimed from the widest (last) down, so the long tasks start first.
    pool.parallel_for(static_cast<size_t>(bands), 1, [&](size_t b0, size_t b1) {
      for (size_t b = b0; b < b1; ++b) {
        const int64_t i0 = (bands - 1 - static_cast<int64_t>(b)) * ri;
        HWY_DYNAMIC_DISPATCH(GramBand)(buf.data(), filled, ld, cols, i0, acc, k);
      }
    });
  }
  return count;
}

}  // namespace trellis::cpu
#endif  // HWY_ONCE
