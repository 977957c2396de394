// backends/cuda/cuda_exl3_hadamard.cuh: the device pieces of the EXL3 Hadamard transforms that
// more than one kernel runs (cuda_exl3_transform.cu, and the GEMV's fused output transform in
// cuda_exl3_gemv.cu), so that every path gives the same bits: the 128-point butterfly of a warp
// and the output transform's scale, svh and bias step.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

namespace trellis::cuda::exl3k {

inline constexpr float kScale = 0.0883883461356163f;  // fp32(1/sqrt(128)), exl3::kHadamardScale

__device__ __forceinline__ bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

__device__ __forceinline__ float4 ld4(const float* p) { return *reinterpret_cast<const float4*>(p); }

// Unnormalised 128-point Walsh-Hadamard transform over a warp: lane t holds elements 4t .. 4t+3;
// a lane-local 4-point stage, then shuffles over lane bits 1, 2, 4, 8, 16 (the butterfly order of
// spec 4.4, as exl3::fwht128).
__device__ __forceinline__ void fwht128(float v[4], int lane) {
  const float s0 = v[0] + v[1], d0 = v[0] - v[1], s1 = v[2] + v[3], d1 = v[2] - v[3];
  v[0] = s0 + s1;
  v[1] = d0 + d1;
  v[2] = s0 - s1;
  v[3] = d0 - d1;
#pragma unroll
  for (int i = 1; i < 32; i <<= 1) {
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const float o = __shfl_xor_sync(0xFFFFFFFFu, v[q], i);
      v[q] = (lane & i) ? o - v[q] : v[q] + o;
    }
  }
}

// One output of the transformed sum v: · kScale, ⊙ svh, + bias where add_bias.
__device__ __forceinline__ float out_value(float v, float svh, bool add_bias, float bias) {
  const float r = __fmul_rn(__fmul_rn(v, kScale), svh);
  return add_bias ? __fadd_rn(r, bias) : r;
}

// Stores y elements e0 .. e0+3 of one row (yr points at element e0), padded columns dropped.
__device__ __forceinline__ void store_out4(const float r[4], int e0, int out_features, float* __restrict__ yr) {
  if (e0 + 3 < out_features && aligned16(yr)) {
    *reinterpret_cast<float4*>(yr) = make_float4(r[0], r[1], r[2], r[3]);
  } else {
#pragma unroll
    for (int q = 0; q < 4; ++q)
      if (e0 + q < out_features) yr[q] = r[q];
  }
}

// y elements e0 .. e0+3 of one row from the transformed sums v: ⊙ svh (· kScale), + bias, into r
// (out_store4 then stores them, padded columns dropped).
__device__ __forceinline__ void out_values4(const float v[4], int e0, int out_features, const float* __restrict__ svh,
                                            const float* __restrict__ bias, float r[4]) {
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const int e = e0 + q;
    const bool add_bias = bias && e < out_features;
    r[q] = out_value(v[q], svh[e], add_bias, add_bias ? bias[e] : 0.0f);  // svh has n entries
  }
}

__device__ __forceinline__ void out_store4(const float v[4], int e0, int out_features, const float* __restrict__ svh,
                                           const float* __restrict__ bias, float* __restrict__ yr, float r[4]) {
  out_values4(v, e0, out_features, svh, bias, r);
  store_out4(r, e0, out_features, yr);
}

__device__ __forceinline__ void out_store4(const float v[4], int e0, int out_features, const float* __restrict__ svh,
                                           const float* __restrict__ bias, float* __restrict__ yr) {
  float r[4];
  out_store4(v, e0, out_features, svh, bias, yr, r);
}

// The fp16 hi and lo parts of 4 transformed input values: f = v·kScale, hi = fp16(f), lo =
// fp16(f - hi). The same operations as store4 in cuda_exl3_transform.cu, which keeps its own copy
// (sharing this one changed how nvcc compiled the decode input transform);
// CudaExl3.FusedInGemvEqualsSeparateTransforms checks that the two give the same bits.
__device__ __forceinline__ void hi_lo4(const float v[4], uint16_t hi[4], uint16_t lo[4]) {
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const float f = __fmul_rn(v[q], kScale);
    const __half h = __float2half_rn(f);
    hi[q] = __half_as_ushort(h);
    lo[q] = __half_as_ushort(__float2half_rn(f - __half2float(h)));
  }
}

// hi/lo of elements e0 .. e0+3 of row `row` into the GEMV fragment layout (cuda_exl3_kernels.cuh
// ActLayout::kGemvFragments) of m rows starting at xa (element e counted from xa's first slab).
__device__ __forceinline__ void store_fragments4(const uint16_t hi[4], const uint16_t lo[4], uint16_t* __restrict__ xa,
                                                 int m, int row, int e0) {
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const int e = e0 + q, tk = e >> 4, kr = e & 15;
    const int64_t at = ((static_cast<int64_t>(tk) * m + row) * 4 + ((kr & 7) >> 1)) * 8 + ((kr & 8) ? 4 : 0) + (kr & 1);
    xa[at] = hi[q];
    xa[at + 2] = lo[q];
  }
}

}  // namespace trellis::cuda::exl3k
