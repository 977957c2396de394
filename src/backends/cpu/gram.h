// backends/cpu/gram.h: the quantizer's Hessian accumulation (spec 5.3) on the CPU.
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

}  // namespace trellis::cpu
