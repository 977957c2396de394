// backends/cpu/dense_matmul.h: y = x·Wᵀ for fp16 weights in Hugging Face (out, in) layout.
//
// Goals: the CPU path for unquantized fp16 linears and the baseline every EXL3 CPU benchmark is
// measured against, so it is as good as we can make a streaming kernel: weights are read once
// per call straight from the (possibly mmap'ed, unaligned) tensor, widened with F16C/AVX-512
// conversions in registers and FMA'd into fp32 accumulators; runtime dispatch over the Highway
// targets. Non-goals: large-m GEMM blocking beyond reusing a 4-row weight block across x rows.
#pragma once

#include <cstdint>

#include "core/thread_pool.h"

namespace trellis::cpu {

// y[r][j] = sum_i x[r][i] · w[j][i] for r < m, j < n. w: n x k binary16 bit patterns, row-major
// (leading dimension k), any alignment. x: m x k fp32 row-major; y: m x n fp32 row-major, must not
// alias x or w. Any k >= 1, n >= 1 (no divisibility needed); m == 0 is a no-op. Work is split
// over blocks of 4 output rows on `pool`. Throws trellis::Error kInvalidArgument on negative
// sizes or null pointers.
void dense_matmul_f16(const uint16_t* w, const float* x, int64_t m, int64_t k, int64_t n, float* y,
                      ThreadPool& pool);

}  // namespace trellis::cpu
