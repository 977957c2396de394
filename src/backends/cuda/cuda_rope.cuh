// backends/cuda/cuda_rope.cuh: the rotation of one RoPE pair, shared by rope_kernel,
// rope_qk_store_kernel (cuda_ops.cu) and the decode attention kernel that folds rope in
// (cuda_attention_decode.cu), so all three give the same bits. The products are fused explicitly
// (fmaf) rather than left to the compiler's contraction, which may differ between kernels.
#pragma once

namespace trellis::cuda {

// (x1, x2) at position p with frequency inv_freq -> (y1, y2):
//   y1 = x1·cos - x2·sin, y2 = x2·cos + x1·sin, cos and sin scaled by `scaling`.
__device__ __forceinline__ void rope_pair(float x1, float x2, float p, float inv_freq, float scaling, float& y1,
                                          float& y2) {
  const float angle = p * inv_freq;
  const float c = cosf(angle) * scaling, s = sinf(angle) * scaling;
  y1 = fmaf(x1, c, -(x2 * s));
  y2 = fmaf(x2, c, x1 * s);
}

}  // namespace trellis::cuda
