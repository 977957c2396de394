// backends/cuda/cuda_attention_merge.cuh: the arithmetic of merging flash-decoding splits, shared
// by attention_merge_kernel (cuda_attention.cu, its own launch) and the decode kernel's last block
// per kv head (cuda_attention_decode.cu, the merge without a launch), so both give the same bits.
//
// A split's partial row is (acc[0..d), m, l) in natural-log units, rows `stride` floats apart.
// merge_split_weights (one warp) gives split s the weight exp(m_s - M) / sum_s' l_s' exp(m_s' - M),
// M the max over non-empty splits (l > 0), and 0 to empty ones; merge_split_dims sums a thread's
// dims' weighted accs with 32 loads in flight before the first use (the second load round does not wait
// on the first split's rescale). Loads go through L2 (__ldcg): in the fused form the partials were
// written by other blocks of the same launch, published by __threadfence and an atomic counter.
#pragma once

#include <cstdint>
#include <type_traits>

#include "backends/cuda/cuda_norm.cuh"

namespace trellis::cuda {

inline constexpr int kMergeMaxSplits = 64;

// The warp's max by an xor butterfly (the sum is cuda_norm.cuh's warp_sum_xor).
__device__ __forceinline__ float warp_max_xor(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Called by all 32 lanes of one warp; writes weight[0..splits). Each lane loads its splits' (m, l)
// once (splits <= kMergeMaxSplits = 2 per lane).
__device__ __forceinline__ void merge_split_weights(const float* base, int64_t stride, int splits, int64_t d,
                                                    int lane, float* weight) {
  static_assert(kMergeMaxSplits <= 64, "two splits per lane");
  float ms[2], ls[2];
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int s = lane + 32 * j;
    const float* p = base + s * stride;
    ls[j] = s < splits ? __ldcg(p + d + 1) : 0.0f;
    ms[j] = s < splits ? __ldcg(p + d) : -INFINITY;
  }
  float mx = -INFINITY;
#pragma unroll
  for (int j = 0; j < 2; ++j)
    if (ls[j] > 0) mx = fmaxf(mx, ms[j]);
  mx = warp_max_xor(mx);
  float total = 0.0f, w[2];
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    w[j] = ls[j] > 0 ? expf(ms[j] - mx) : 0.0f;
    total += ls[j] * w[j];
  }
  total = warp_sum_xor(total);
  const float inv = total > 0 ? 1.0f / total : 0.0f;
#pragma unroll
  for (int j = 0; j < 2; ++j)
    if (lane + 32 * j < splits) weight[lane + 32 * j] = w[j] * inv;
}

// Dims i..i+N-1 (N = 1, or 2 with i even: partial rows are d + 2 floats, 8-byte aligned) of the
// merged output, after merge_split_weights' weights are visible to the caller; each dim's sum runs
// over the splits in order, so N = 1 and N = 2 give the same bits.
template <int N>
__device__ __forceinline__ void merge_split_dims(const float* base, int64_t stride, int splits, int64_t i,
                                                 const float* weight, float (&o)[N]) {
  static_assert(N == 1 || N == 2, "one or two dims per thread");
  using Vec = std::conditional_t<N == 1, float, float2>;
#pragma unroll
  for (int c = 0; c < N; ++c) o[c] = 0.0f;
  for (int s0 = 0; s0 < splits; s0 += 32) {
    Vec v[32];
#pragma unroll
    for (int j = 0; j < 32; ++j)
      v[j] = s0 + j < splits && weight[s0 + j] > 0 ? __ldcg(reinterpret_cast<const Vec*>(base + (s0 + j) * stride + i))
                                                   : Vec{};
#pragma unroll
    for (int j = 0; j < 32; ++j)
      if (s0 + j < splits) {
        const float* vj = reinterpret_cast<const float*>(&v[j]);
#pragma unroll
        for (int c = 0; c < N; ++c) o[c] = fmaf(vj[c], weight[s0 + j], o[c]);
      }
  }
}

}  // namespace trellis::cuda
