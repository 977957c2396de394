// backends/cuda/cuda_exl3_transform.cu: the input and output Hadamard transforms of the EXL3
// linear (exl3_hadamard_in / exl3_hadamard_out, spec 4.4 steps 1 and 3), fp32 throughout.
//
// Every multiply that feeds an add is __fmul_rn (and the bias add __fadd_rn): nvcc would
// otherwise contract some of them into FMAs depending on the code around them, and the one-row,
// wide and fused kernels must give the same bits.
//
// Decode sizes: one warp per (row, 128-block), lane t holds elements 4t .. 4t+3, a lane-local
// 4-point stage then shuffles over lane bits 1, 2, 4, 8, 16 (the butterfly order of spec 4.4, as
// exl3::fwht128). In decode they move m·(k + n) values, negligible next to the k·n/8·K trellis
// bytes of the product; what they cost there is a launch each, hence the group forms
// (blockIdx.z = linear) for q/k/v and gate/up. In prefill they are passes over [m, k] and [m, n]
// with 16-byte loads/stores where aligned, four rows per warp and 16 elements per lane (the
// "wide" kernels below: 3 shuffle stages instead of 5, same stage order, bit-identical results).
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "backends/cuda/cuda_exl3_hadamard.cuh"
#include "backends/cuda/cuda_exl3_kernels.cuh"
#include "backends/cuda/cuda_launch.cuh"
#include "backends/cuda/cuda_util.h"

namespace trellis::cuda::exl3k {
namespace {

constexpr int kWarpsPerBlock = 4;

// xa ← 4 transformed values v (elements e0 .. e0+3 of row `row`; not yet scaled unless plain) in
// the layout `gemm_rows` names (hadamard_in_kernel's parameter).
__device__ __forceinline__ void store4(const float v[4], uint16_t* __restrict__ xa, int m, int k, int row, int e0,
                                       int gemm_rows) {
  const bool plain = gemm_rows == 3;  // uniform over the launch
  uint16_t hi[4], lo[4];
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const float f = plain ? v[q] : __fmul_rn(v[q], kScale);
    const __half h = __float2half_rn(f);
    hi[q] = __half_as_ushort(h);
    lo[q] = __half_as_ushort(__float2half_rn(f - __half2float(h)));
  }
  if (gemm_rows) {  // 4 consecutive halves: one 8-byte store per part (k is a multiple of 128)
    auto pack = [](const uint16_t* h) {
      return make_uint2(h[0] | (uint32_t{h[1]} << 16), h[2] | (uint32_t{h[3]} << 16));
    };
    *reinterpret_cast<uint2*>(xa + static_cast<int64_t>(row) * k + e0) = pack(hi);
    if (gemm_rows == 1) *reinterpret_cast<uint2*>(xa + static_cast<int64_t>(m + row) * k + e0) = pack(lo);
  } else {
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int e = e0 + q, tk = e >> 4, kr = e & 15;
      const int64_t at = ((static_cast<int64_t>(tk) * m + row) * 4 + ((kr & 7) >> 1)) * 8 + ((kr & 8) ? 4 : 0) + (kr & 1);
      xa[at] = hi[q];
      xa[at + 2] = lo[q];
    }
  }
}

// Loads the input elements e0 .. e0+3 of one row (at0 = its offset in x) into xv, and up's into uv
// when the group fuses silu; zeros past in_features. Returns whether the 16-byte path applied
// (aligned and inside in_features), which the silu store repeats.
__device__ __forceinline__ bool load_in4(const float* x, const InGroup& group, int64_t at0, int e0, int in_features,
                                         float xv[4], float uv[4]) {
#pragma unroll
  for (int q = 0; q < 4; ++q) xv[q] = uv[q] = 0.0f;
  const bool vec = e0 + 3 < in_features && aligned16(x + at0) &&
                   (!group.up || (aligned16(group.up + at0) && aligned16(group.silu_out + at0)));
  if (vec) {
    const float4 t = ld4(x + at0);
    xv[0] = t.x, xv[1] = t.y, xv[2] = t.z, xv[3] = t.w;
    if (group.up) {
      const float4 u = ld4(group.up + at0);
      uv[0] = u.x, uv[1] = u.y, uv[2] = u.z, uv[3] = u.w;
    }
  } else {
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      if (e0 + q < in_features) {
        xv[q] = x[at0 + q];
        if (group.up) uv[q] = group.up[at0 + q];
      }
    }
  }
  return vec;
}

// xv ← silu(xv) · uv (silu_mul's expression, operation for operation) for the elements inside
// in_features, written to silu_out too when `write`.
__device__ __forceinline__ void silu4(const InGroup& group, int64_t at0, int e0, int in_features, bool vec, bool write,
                                      float xv[4], const float uv[4]) {
#pragma unroll
  for (int q = 0; q < 4; ++q)
    if (e0 + q < in_features) xv[q] = xv[q] / (1.0f + expf(-xv[q])) * uv[q];
  if (!write) return;
  float* so = group.silu_out + at0;
  if (vec) {
    *reinterpret_cast<float4*>(so) = make_float4(xv[0], xv[1], xv[2], xv[3]);
  } else {
#pragma unroll
    for (int q = 0; q < 4; ++q)
      if (e0 + q < in_features) so[q] = xv[q];
  }
}

// ---- one row per warp (decode sizes): lane t holds elements 4t .. 4t+3 of a 128-block ----

// __grid_constant__: the group is indexed by blockIdx.z straight from the parameter bank (without
// it, nvcc copies the struct to local memory in every thread). Linears z = blockIdx.z,
// blockIdx.z + gridDim.z, ... < count.
__global__ void hadamard_in_kernel(const float* x,  // may alias group.silu_out
                                   int m, int in_features, int k, const __grid_constant__ InGroup group, int count,
                                   int gemm_rows /* 0 fragments, 1 hi + lo rows, 2 hi rows, 3 plain hi rows */) {
  pdl_begin();
  const int lane = threadIdx.x & 31;
  const int block = blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5);
  const int row = blockIdx.y;
  if (block * 128 >= k) return;  // whole warp
  // Lane elements e0 .. e0+3: one 16-byte load (and silu store) when the row slice is aligned
  // and inside in_features, element loads otherwise (padding, odd widths, offset views).
  const int e0 = block * 128 + 4 * lane;
  const int64_t at0 = static_cast<int64_t>(row) * in_features + e0;
  float xv[4], uv[4];
  const bool vec = load_in4(x, group, at0, e0, in_features, xv, uv);
  if (group.up) silu4(group, at0, e0, in_features, vec, blockIdx.z == 0, xv, uv);
  const bool plain = gemm_rows == 3;
  for (int z = blockIdx.z; z < count; z += gridDim.z) {
    float v[4] = {xv[0], xv[1], xv[2], xv[3]};
    if (!plain) {
      const float4 sv = ld4(group.suh[z] + e0);  // suh has k entries
      v[0] = __fmul_rn(v[0], sv.x), v[1] = __fmul_rn(v[1], sv.y), v[2] = __fmul_rn(v[2], sv.z),
      v[3] = __fmul_rn(v[3], sv.w);
      fwht128(v, lane);
    }
    store4(v, group.xa[z], m, k, row, e0, gemm_rows);
  }
}

__global__ void hadamard_out_kernel(const __grid_constant__ OutGroup group, int m) {
  pdl_begin();
  const OutGroup::Item& it = group.item[blockIdx.z];
  // The fields in registers before the loop (the item is indexed by blockIdx.z in parameter space).
  const float* __restrict__ z = it.z;
  const int parts = it.parts, n = it.n;
  const int64_t part_stride = it.part_stride;
  const int lane = threadIdx.x & 31;
  const int block = blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5);
  const int row = blockIdx.y;
  if (block * 128 >= n) return;
  const int e0 = block * 128 + 4 * lane;
  float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll 8
  for (int p = 0; p < parts; ++p) {
    const float4 t = ld4(z + p * part_stride + static_cast<int64_t>(row) * n + e0);
    v[0] += t.x;
    v[1] += t.y;
    v[2] += t.z;
    v[3] += t.w;
  }
  fwht128(v, lane);
  out_store4(v, e0, it.out_features, it.svh, it.bias, it.y + static_cast<int64_t>(row) * it.out_features + e0);
  (void)m;
}

// The gated MLP's silu(g)·u input of down for elements e0 .. e0+3 (g, u: gate's and up's
// transformed sums), exactly as out_store4 then hadamard_in's fused silu compute them; zeros at
// and past out_features.
__device__ __forceinline__ void bridge4(const float g[4], const float u[4], int e0, int out_features,
                                        const float* __restrict__ svh_g, const float* __restrict__ bias_g,
                                        const float* __restrict__ svh_u, const float* __restrict__ bias_u,
                                        float xv[4]) {
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const int e = e0 + q;
    float rg = __fmul_rn(__fmul_rn(g[q], kScale), svh_g[e]), ru = __fmul_rn(__fmul_rn(u[q], kScale), svh_u[e]);
    if (bias_g && e < out_features) rg = __fadd_rn(rg, bias_g[e]);
    if (bias_u && e < out_features) ru = __fadd_rn(ru, bias_u[e]);
    xv[q] = e < out_features ? rg / (1.0f + expf(-rg)) * ru : 0.0f;
  }
}

// The gated MLP between its products (cuda_exl3.h, CudaExl3Linear::forward_mlp): per 128-block
// of a row, the output transforms of gate and up exactly as hadamard_out_kernel computes them,
// silu(gate)·up exactly as the fused input of hadamard_in_kernel, then down's input transform
// into its GEMM rows (`gemm_rows` 1 or 2). Columns at or past out_features (padding) enter down
// as zeros, as hadamard_in zero-extends. One pass over z_gate, z_up instead of writing gate and
// up, reading them back and writing their product.
__global__ void mlp_bridge_kernel(const float* __restrict__ zg, const float* __restrict__ zu, int m, int n,
                                  int out_features, const float* __restrict__ svh_g, const float* __restrict__ bias_g,
                                  const float* __restrict__ svh_u, const float* __restrict__ bias_u,
                                  const float* __restrict__ suh_d, uint16_t* __restrict__ xa, int gemm_rows) {
  pdl_begin();
  const int lane = threadIdx.x & 31;
  const int block = blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5);
  const int row = blockIdx.y;
  if (block * 128 >= n) return;
  const int e0 = block * 128 + 4 * lane;
  const int64_t at = static_cast<int64_t>(row) * n + e0;
  const float4 tg = ld4(zg + at), tu = ld4(zu + at);
  float g[4] = {0.0f + tg.x, 0.0f + tg.y, 0.0f + tg.z, 0.0f + tg.w};  // hadamard_out's sum over one part
  float u[4] = {0.0f + tu.x, 0.0f + tu.y, 0.0f + tu.z, 0.0f + tu.w};
  fwht128(g, lane);
  fwht128(u, lane);
  float v[4];
  bridge4(g, u, e0, out_features, svh_g, bias_g, svh_u, bias_u, v);
  const float4 sv = ld4(suh_d + e0);
  v[0] = __fmul_rn(v[0], sv.x), v[1] = __fmul_rn(v[1], sv.y), v[2] = __fmul_rn(v[2], sv.z), v[3] = __fmul_rn(v[3], sv.w);
  fwht128(v, lane);
  store4(v, xa, m, n, row, e0, gemm_rows);
}

// ---- four rows per warp (prefill sizes) ----
// With one row per warp, the prefill transforms were bound by the shuffles of the butterflies
// (ncu on the H200: memory-pipe throughput ~80% at ~36% of DRAM bandwidth; 20 shuffles per
// 128 values). Here 8 lanes share a row: lane group b = lane >> 3 takes row 4·blockIdx.y + b, and
// lane l = lane & 7 holds elements 32j + 4l + q (j, q < 4) of the 128-block, so element bits 0, 1,
// 5 and 6 are butterflies inside the lane and only bits 2-4 cross lanes: 12 shuffles per 128
// values. The stages run in the same order (bit 0 first) on the same operands as fwht128, so the
// results are bit-identical to the one-row kernels. Loads stay coalesced: for each j, the 8 lanes
// of a row read 128 contiguous bytes.
constexpr int kWideRows = 4;
constexpr int64_t kWideMinRows = 64;  // m from which the launchers use these kernels

__device__ __forceinline__ void fwht128_wide(float v[4][4], int lane) {
#pragma unroll
  for (int j = 0; j < 4; ++j) {  // bits 0, 1
    const float s0 = v[j][0] + v[j][1], d0 = v[j][0] - v[j][1], s1 = v[j][2] + v[j][3], d1 = v[j][2] - v[j][3];
    v[j][0] = s0 + s1;
    v[j][1] = d0 + d1;
    v[j][2] = s0 - s1;
    v[j][3] = d0 - d1;
  }
#pragma unroll
  for (int i = 1; i < 8; i <<= 1)  // bits 2, 3, 4
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const float o = __shfl_xor_sync(0xFFFFFFFFu, v[j][q], i);
        v[j][q] = (lane & i) ? o - v[j][q] : v[j][q] + o;
      }
#pragma unroll
  for (int q = 0; q < 4; ++q) {  // bits 5, 6
    const float s0 = v[0][q] + v[1][q], d0 = v[0][q] - v[1][q], s1 = v[2][q] + v[3][q], d1 = v[2][q] - v[3][q];
    v[0][q] = s0 + s1;
    v[1][q] = d0 + d1;
    v[2][q] = s0 - s1;
    v[3][q] = d0 - d1;
  }
}

__device__ __forceinline__ int wide_e0(int block, int lane, int j) { return block * 128 + 32 * j + 4 * (lane & 7); }

// hadamard_in_kernel's contract; GEMM layouts only (gemm_rows 1..3), all linears of the group in
// every warp (gridDim.z == 1).
__global__ void hadamard_in_wide_kernel(const float* x, int m, int in_features, int k,
                                        const __grid_constant__ InGroup group, int count, int gemm_rows) {
  pdl_begin();
  const int lane = threadIdx.x & 31;
  const int block = blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5);
  if (block * 128 >= k) return;  // whole warp
  const int row = blockIdx.y * kWideRows + (lane >> 3);
  const bool live = row < m;  // dead lanes still take part in the shuffles
  float xv[4][4], uv[4][4];
  bool vec[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int e0 = wide_e0(block, lane, j);
    if (live) {
      vec[j] = load_in4(x, group, static_cast<int64_t>(row) * in_features + e0, e0, in_features, xv[j], uv[j]);
    } else {
      vec[j] = false;
      xv[j][0] = xv[j][1] = xv[j][2] = xv[j][3] = uv[j][0] = uv[j][1] = uv[j][2] = uv[j][3] = 0.0f;
    }
  }
  if (group.up && live)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int e0 = wide_e0(block, lane, j);
      silu4(group, static_cast<int64_t>(row) * in_features + e0, e0, in_features, vec[j], true, xv[j], uv[j]);
    }
  const bool plain = gemm_rows == 3;
  for (int z = 0; z < count; ++z) {
    float v[4][4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int e0 = wide_e0(block, lane, j);
      const float4 sv = plain ? make_float4(1.0f, 1.0f, 1.0f, 1.0f) : ld4(group.suh[z] + e0);
      v[j][0] = xv[j][0], v[j][1] = xv[j][1], v[j][2] = xv[j][2], v[j][3] = xv[j][3];
      if (!plain)
        v[j][0] = __fmul_rn(v[j][0], sv.x), v[j][1] = __fmul_rn(v[j][1], sv.y), v[j][2] = __fmul_rn(v[j][2], sv.z),
        v[j][3] = __fmul_rn(v[j][3], sv.w);
    }
    if (!plain) fwht128_wide(v, lane);
    if (live)
#pragma unroll
      for (int j = 0; j < 4; ++j) store4(v[j], group.xa[z], m, k, row, wide_e0(block, lane, j), gemm_rows);
  }
}

__global__ void hadamard_out_wide_kernel(const __grid_constant__ OutGroup group, int m) {
  pdl_begin();
  const OutGroup::Item& it = group.item[blockIdx.z];
  const float* __restrict__ z = it.z;
  const int parts = it.parts, n = it.n;
  const int64_t part_stride = it.part_stride;
  const int lane = threadIdx.x & 31;
  const int block = blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5);
  if (block * 128 >= n) return;
  const int row = blockIdx.y * kWideRows + (lane >> 3);
  const bool live = row < m;
  float v[4][4];
#pragma unroll
  for (int j = 0; j < 4; ++j) v[j][0] = v[j][1] = v[j][2] = v[j][3] = 0.0f;
  if (live)
#pragma unroll 2
    for (int p = 0; p < parts; ++p)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float4 t = ld4(z + p * part_stride + static_cast<int64_t>(row) * n + wide_e0(block, lane, j));
        v[j][0] += t.x;
        v[j][1] += t.y;
        v[j][2] += t.z;
        v[j][3] += t.w;
      }
  fwht128_wide(v, lane);
  if (live)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int e0 = wide_e0(block, lane, j);
      out_store4(v[j], e0, it.out_features, it.svh, it.bias, it.y + static_cast<int64_t>(row) * it.out_features + e0);
    }
}

__global__ void mlp_bridge_wide_kernel(const float* __restrict__ zg, const float* __restrict__ zu, int m, int n,
                                       int out_features, const float* __restrict__ svh_g,
                                       const float* __restrict__ bias_g, const float* __restrict__ svh_u,
                                       const float* __restrict__ bias_u, const float* __restrict__ suh_d,
                                       uint16_t* __restrict__ xa, int gemm_rows) {
  pdl_begin();
  const int lane = threadIdx.x & 31;
  const int block = blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5);
  if (block * 128 >= n) return;
  const int row = blockIdx.y * kWideRows + (lane >> 3);
  const bool live = row < m;
  float g[4][4], u[4][4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    float4 tg = make_float4(0.0f, 0.0f, 0.0f, 0.0f), tu = tg;
    if (live) {
      const int64_t at = static_cast<int64_t>(row) * n + wide_e0(block, lane, j);
      tg = ld4(zg + at);
      tu = ld4(zu + at);
    }
    g[j][0] = 0.0f + tg.x, g[j][1] = 0.0f + tg.y, g[j][2] = 0.0f + tg.z, g[j][3] = 0.0f + tg.w;
    u[j][0] = 0.0f + tu.x, u[j][1] = 0.0f + tu.y, u[j][2] = 0.0f + tu.z, u[j][3] = 0.0f + tu.w;
  }
  fwht128_wide(g, lane);
  fwht128_wide(u, lane);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int e0 = wide_e0(block, lane, j);
    float v[4];
    bridge4(g[j], u[j], e0, out_features, svh_g, bias_g, svh_u, bias_u, v);
    const float4 sv = ld4(suh_d + e0);
    g[j][0] = __fmul_rn(v[0], sv.x), g[j][1] = __fmul_rn(v[1], sv.y), g[j][2] = __fmul_rn(v[2], sv.z),
    g[j][3] = __fmul_rn(v[3], sv.w);
  }
  fwht128_wide(g, lane);
  if (live)
#pragma unroll
    for (int j = 0; j < 4; ++j) store4(g[j], xa, m, n, row, wide_e0(block, lane, j), gemm_rows);
}

// Whether launches with m rows use the four-rows-per-warp kernels (cuda::wide_transforms).
bool wide(int64_t m) { return m >= kWideMinRows && wide_transforms(); }

void launch_in(const float* x, int64_t m, int64_t in_features, int64_t k, const InGroup& g, size_t count,
               ActLayout layout, cudaStream_t stream) {
  const int mode = layout == ActLayout::kGemmRows       ? 1
                   : layout == ActLayout::kGemmRowsHalf ? 2
                   : layout == ActLayout::kPlainHalf    ? 3
                                                        : 0;
  const unsigned bx = static_cast<unsigned>((k / 128 + kWarpsPerBlock - 1) / kWarpsPerBlock);
  if (mode != 0 && wide(m)) {  // each warp transforms its x slice for every linear of the group
    launch("exl3_hadamard_in", hadamard_in_wide_kernel, dim3(bx, static_cast<unsigned>((m + kWideRows - 1) / kWideRows)),
           dim3(kWarpsPerBlock * 32), 0, stream, x, static_cast<int>(m), static_cast<int>(in_features),
           static_cast<int>(k), g, static_cast<int>(count), mode);
    return;
  }
  // GEMV activations are tiny: one linear per blockIdx.z for more warps; GEMM layouts: every
  // linear in each warp, so x is read from memory once.
  launch("exl3_hadamard_in", hadamard_in_kernel,
         dim3(bx, static_cast<unsigned>(m), mode == 0 ? static_cast<unsigned>(count) : 1u), dim3(kWarpsPerBlock * 32),
         0, stream, x, static_cast<int>(m), static_cast<int>(in_features), static_cast<int>(k), g,
         static_cast<int>(count), mode);
}

}  // namespace

void hadamard_in(const float* x, int64_t m, int64_t in_features, int64_t k, const float* suh, uint16_t* xa,
                 ActLayout layout, cudaStream_t stream, const float* up, float* silu_out) {
  InGroup g{};
  g.suh[0] = suh;
  g.xa[0] = xa;
  g.up = up;
  g.silu_out = silu_out;
  launch_in(x, m, in_features, k, g, 1, layout, stream);
}

void hadamard_in_group(const float* x, int64_t m, int64_t in_features, int64_t k, std::span<const float* const> suh,
                       std::span<uint16_t* const> xa, ActLayout layout, cudaStream_t stream) {
  if (suh.empty() || suh.size() > kMaxGroup || xa.size() != suh.size())
    throw Error(ErrorKind::kInternal, "exl3_hadamard_in: group of " + std::to_string(suh.size()) + " linears");
  InGroup g{};
  for (size_t i = 0; i < suh.size(); ++i) {
    g.suh[i] = suh[i];
    g.xa[i] = xa[i];
  }
  launch_in(x, m, in_features, k, g, suh.size(), layout, stream);
}

void mlp_bridge(const float* zg, const float* zu, int64_t m, int64_t n, int64_t out_features, const float* svh_g,
                const float* bias_g, const float* svh_u, const float* bias_u, const float* suh_d, uint16_t* xa,
                ActLayout layout, cudaStream_t stream) {
  if (layout != ActLayout::kGemmRows && layout != ActLayout::kGemmRowsHalf)
    throw Error(ErrorKind::kInternal, "exl3_mlp_bridge: the down input must be in a GEMM row layout");
  const unsigned bx = static_cast<unsigned>((n / 128 + kWarpsPerBlock - 1) / kWarpsPerBlock);
  const bool w = wide(m);
  const dim3 grid(bx, static_cast<unsigned>(w ? (m + kWideRows - 1) / kWideRows : m));
  launch("exl3_mlp_bridge", w ? mlp_bridge_wide_kernel : mlp_bridge_kernel, grid, dim3(kWarpsPerBlock * 32), 0, stream,
         zg, zu, static_cast<int>(m), static_cast<int>(n), static_cast<int>(out_features), svh_g, bias_g, svh_u, bias_u,
         suh_d, xa, layout == ActLayout::kGemmRows ? 1 : 2);
}

void hadamard_out(const float* z, int parts, int64_t part_stride, int64_t m, int64_t n, int64_t out_features,
                  const float* svh, const float* bias, float* y, cudaStream_t stream) {
  const OutGroup::Item item{z, part_stride, parts, static_cast<int>(n), static_cast<int>(out_features), svh, bias, y};
  hadamard_out_group(std::span<const OutGroup::Item>(&item, 1), m, stream);
}

void hadamard_out_group(std::span<const OutGroup::Item> items, int64_t m, cudaStream_t stream) {
  if (items.empty() || items.size() > kMaxGroup)
    throw Error(ErrorKind::kInternal, "exl3_hadamard_out: group of " + std::to_string(items.size()) + " linears");
  OutGroup g{};
  int max_n = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    g.item[i] = items[i];
    max_n = std::max(max_n, items[i].n);
  }
  const bool w = wide(m);
  const dim3 grid(static_cast<unsigned>((max_n / 128 + kWarpsPerBlock - 1) / kWarpsPerBlock),
                  static_cast<unsigned>(w ? (m + kWideRows - 1) / kWideRows : m), static_cast<unsigned>(items.size()));
  launch("exl3_hadamard_out", w ? hadamard_out_wide_kernel : hadamard_out_kernel, grid, dim3(kWarpsPerBlock * 32), 0,
         stream, g, static_cast<int>(m));
}

}  // namespace trellis::cuda::exl3k
