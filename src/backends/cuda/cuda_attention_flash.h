// backends/cuda/cuda_attention_flash.h: the pipelined tensor-core prefill attention kernel
// (cuda_attention_flash.cu), launched by attention() in cuda_attention.cu. Internal to the CUDA
// backend; the op's contract is AttentionArgs in cuda_ops.h.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/cuda_ops.h"

namespace trellis::cuda {

// Whether attention_flash() takes this shape: head_dim 64 or 128, n_kv_heads > 0 dividing
// n_heads, and a grid that fits (rows · group / 64 blocks per kv head <= 65535).
bool attention_flash_fits(int64_t rows, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim);

// Prefill attention (a.splits must be 1) for a shape attention_flash_fits(); k_cache and v_cache
// 16-byte aligned (so every cached row is, head_dim being a multiple of 8); q, out, pos need only
// their natural alignment. Enqueues one kernel on `stream`.
void attention_flash(const AttentionArgs& a, cudaStream_t stream);

// Raises the kernels' dynamic shared-memory limit on the current device (they use up to 68 KiB).
void attention_flash_prepare();

// Tuning hook (benchmarks): warps per block, 8 (default) or 4; overrides TRELLIS_CUDA_FLASH_WARPS.
void set_attention_flash_warps(int warps);
int attention_flash_warps();

}  // namespace trellis::cuda
