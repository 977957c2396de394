// backends/cuda/cuda_norm.cuh: the RMSNorm arithmetic that more than one kernel runs, so that
// every path gives the same bits: cuda_ops.cu's whole-row norm (rms_norm_row_kernel) and the EXL3
// GEMV's fused residual add (sums of squares per 128-column group, written by the output
// transform) and fused norm input (the input transform of the next linear).
//
// The order that both follow: a row of `cols` elements (cols % 128 == 0, at most cuda_exl3.h's
// kExl3FusedNormMaxCols) is 128-element chunks; lane t of a warp holds elements 4t .. 4t+3 of one
// chunk, squares and sums them with sumsq4, and the warp adds its 32 lane sums with warp_sum_xor;
// the row's total is the chunk sums added in chunk order starting from 0, and the scale is
// rms_inv(total, cols, eps). Every step uses explicitly rounded intrinsics, so no compiler
// contraction can differ between kernels.
#pragma once

#include <cuda_runtime.h>

namespace trellis::cuda {

__device__ __forceinline__ float sumsq4(float a, float b, float c, float d) {
  return __fmaf_rn(d, d, __fmaf_rn(c, c, __fmaf_rn(b, b, __fmul_rn(a, a))));
}

__device__ __forceinline__ float warp_sum_xor(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// 1 / sqrt(total / cols + eps), correctly rounded at every step.
__device__ __forceinline__ float rms_inv(float total, int cols, float eps) {
  return __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(__fdiv_rn(total, static_cast<float>(cols)), eps)));
}

// The normed element: (x · inv) · w.
__device__ __forceinline__ float rms_apply(float x, float inv, float w) { return __fmul_rn(__fmul_rn(x, inv), w); }

}  // namespace trellis::cuda
