// backends/cpu/gram.h: the quantizer's dense fp32 kernels on the CPU: Hessian accumulation (spec
// 5.3), the LDLQ feedback update (5.6) and the dot products of the Cholesky factorisation (5.4).
#pragma once

#include <cstdint>

#include "core/thread_pool.h"

namespace trellis::cpu {

struct GramCount {
  uint64_t added = 0, skipped = 0;
};

// acc (k x k, row-major) += xᵀ·x over the rows of x (rows x cols, cols <= k) whose values are all
// finite, into the top-left cols x cols block, LOWER triangle only (j <= i); the caller mirrors.
GramCount gram_accumulate(const float* x, int64_t rows, int64_t cols, float* acc, int64_t k, ThreadPool& pool);

// out[i * ldo + j] += Σ_{t < rows} a[t * lda + i] · b[t * ldb + j] for i < ni, j < nj: a thin
// AᵀB update (LDLQ's error feedback, spec 5.6), single-threaded, SIMD. The a[t * lda + i] must
// be readable (not necessarily used) for i < ni rounded up to a multiple of 8.
void atb_accumulate(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t rows, int64_t ni, int64_t nj,
                    float* out, int64_t ldo);

// Σ_{p < n} a[p] · b[p] in fp32, SIMD (the Cholesky factorisation of the Hessians).
float dot_f32(const float* a, const float* b, int64_t n);

}  // namespace trellis::cpu
