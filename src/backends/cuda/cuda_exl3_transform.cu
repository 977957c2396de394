// backends/cuda/cuda_exl3_transform.cu: the input and output Hadamard transforms of the EXL3
// linear (exl3_hadamard_in / exl3_hadamard_out, spec 4.4 steps 1 and 3), fp32 throughout.
//
// One warp per (row, 128-block): lane t holds elements 4t .. 4t+3, a lane-local 4-point stage
// then shuffles over lane bits 1, 2, 4, 8, 16 (the butterfly order of spec 4.4, as
// exl3::fwht128). In decode they move m·(k + n) values, negligible next to the k·n/8·K trellis
// bytes of the product; what they cost there is a launch each, hence the group forms
// (blockIdx.z = linear) for q/k/v and gate/up. In prefill they are memory-bound passes over
// [m, k] and [m, n], so each lane moves its 4 elements with 16-byte loads/stores where aligned.
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "backends/cuda/cuda_exl3_kernels.cuh"
#include "backends/cuda/cuda_launch.cuh"
#include "backends/cuda/cuda_util.h"

namespace trellis::cuda::exl3k {
namespace {

constexpr float kScale = 0.0883883461356163f;  // fp32(1/sqrt(128)), exl3::kHadamardScale
constexpr int kWarpsPerBlock = 4;

__device__ __forceinline__ bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

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

// __grid_constant__: the group is indexed by blockIdx.z straight from the parameter bank (without
// it, nvcc copies the struct to local memory in every thread).
// xa ← the input transform of the lane's 4 elements xv (e0 .. e0+3 of row `row`), in the layout
// `gemm_rows` names (hadamard_in_kernel's parameter); suh has k entries (unused when plain).
__device__ __forceinline__ void transform_store(const float xv[4], const float* __restrict__ suh,
                                                uint16_t* __restrict__ xa, int m, int k, int row, int e0, int lane,
                                                int gemm_rows) {
  const bool plain = gemm_rows == 3;  // uniform over the launch
  float v[4] = {xv[0], xv[1], xv[2], xv[3]};
  if (!plain) {
    const float4 sv = *reinterpret_cast<const float4*>(suh + e0);
    v[0] *= sv.x, v[1] *= sv.y, v[2] *= sv.z, v[3] *= sv.w;
    fwht128(v, lane);
  }
  uint16_t hi[4], lo[4];
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const float f = plain ? v[q] : v[q] * kScale;
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

// Rows per warp at prefill sizes: a warp issues the 16-byte loads of all its rows before the
// first butterfly. With one row per warp these kernels were latency-bound at ~2 TB/s on the H200
// (ncu, docs/BENCHMARKS.md session 9): too few bytes in flight per SM. Decode sizes keep one row
// per warp (more warps for a tiny m). Results do not depend on it: every element sees the same
// operations in the same order.
// TRELLIS_CUDA_TRANSFORM_ROWS=1|2|4 overrides kRowsPerWarp (a tuning knob).
constexpr int kRowsPerWarp = 2;
constexpr int64_t kMultiRowMinRows = 64;
int rows_per_warp(int64_t m) {
  static const int rows = [] {
    const char* e = std::getenv("TRELLIS_CUDA_TRANSFORM_ROWS");
    const int v = e ? std::atoi(e) : 0;
    return v == 1 || v == 2 || v == 4 ? v : kRowsPerWarp;
  }();
  return m >= kMultiRowMinRows ? rows : 1;
}
// The kernel instance for `rows` rows per warp.
template <template <int> class Pick>
auto pick_rows(int rows) {
  return rows == 1 ? Pick<1>::fn : rows == 2 ? Pick<2>::fn : Pick<4>::fn;
}

__device__ __forceinline__ float4 ld4(const float* p) { return *reinterpret_cast<const float4*>(p); }

// Linears z = blockIdx.z, blockIdx.z + gridDim.z, ... < count: in decode one per blockIdx.z (more
// warps for a tiny m), in prefill all of them in each warp, so x is read from memory once. Rows
// blockIdx.y·ROWS .. +ROWS-1.
template <int ROWS>
__global__ void hadamard_in_kernel(const float* x,  // may alias group.silu_out
                                   int m, int in_features, int k, const __grid_constant__ InGroup group, int count,
                                   int gemm_rows /* 0 fragments, 1 hi + lo rows, 2 hi rows, 3 plain hi rows */) {
  pdl_begin();
  const int lane = threadIdx.x & 31;
  const int block = blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5);
  if (block * 128 >= k) return;  // whole warp
  const int row0 = blockIdx.y * ROWS, rows = min(ROWS, m - row0);
  // Lane elements e0 .. e0+3: one 16-byte load (and silu store) when the row slice is aligned
  // and inside in_features, element loads otherwise (padding, odd widths, offset views). All
  // loads come first: x may alias silu_out, so the compiler could not hoist them itself.
  const int e0 = block * 128 + 4 * lane;
  float xv[ROWS][4], uv[ROWS][4];
  bool vec[ROWS];
#pragma unroll
  for (int i = 0; i < ROWS; ++i) {
#pragma unroll
    for (int q = 0; q < 4; ++q) xv[i][q] = uv[i][q] = 0.0f;
    vec[i] = false;
    if (i >= rows) continue;
    const int64_t at0 = static_cast<int64_t>(row0 + i) * in_features + e0;
    vec[i] = e0 + 3 < in_features && aligned16(x + at0) &&
             (!group.up || (aligned16(group.up + at0) && aligned16(group.silu_out + at0)));
    if (vec[i]) {
      const float4 t = ld4(x + at0);
      xv[i][0] = t.x, xv[i][1] = t.y, xv[i][2] = t.z, xv[i][3] = t.w;
      if (group.up) {
        const float4 u = ld4(group.up + at0);
        uv[i][0] = u.x, uv[i][1] = u.y, uv[i][2] = u.z, uv[i][3] = u.w;
      }
    } else {
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        if (e0 + q < in_features) {
          xv[i][q] = x[at0 + q];
          if (group.up) uv[i][q] = group.up[at0 + q];
        }
      }
    }
  }
  if (group.up) {  // silu_mul's expression, operation for operation
#pragma unroll
    for (int i = 0; i < ROWS; ++i) {
      if (i >= rows) continue;
#pragma unroll
      for (int q = 0; q < 4; ++q)
        if (e0 + q < in_features) xv[i][q] = xv[i][q] / (1.0f + expf(-xv[i][q])) * uv[i][q];
      if (blockIdx.z != 0) continue;
      float* so = group.silu_out + static_cast<int64_t>(row0 + i) * in_features + e0;
      if (vec[i]) {
        *reinterpret_cast<float4*>(so) = make_float4(xv[i][0], xv[i][1], xv[i][2], xv[i][3]);
      } else {
#pragma unroll
        for (int q = 0; q < 4; ++q)
          if (e0 + q < in_features) so[q] = xv[i][q];
      }
    }
  }
  for (int z = blockIdx.z; z < count; z += gridDim.z)
#pragma unroll
    for (int i = 0; i < ROWS; ++i)
      if (i < rows) transform_store(xv[i], group.suh[z], group.xa[z], m, k, row0 + i, e0, lane, gemm_rows);
}

template <int ROWS>
__global__ void hadamard_out_kernel(const __grid_constant__ OutGroup group, int m) {
  pdl_begin();
  const OutGroup::Item& it = group.item[blockIdx.z];
  const float* __restrict__ z = it.z;
  const int parts = it.parts, n = it.n, out_features = it.out_features;
  const int64_t part_stride = it.part_stride;
  const float* __restrict__ svh = it.svh;
  const float* __restrict__ bias = it.bias;
  float* __restrict__ y = it.y;
  const int lane = threadIdx.x & 31;
  const int block = blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5);
  if (block * 128 >= n) return;
  const int row0 = blockIdx.y * ROWS, rows = min(ROWS, m - row0);
  const int e0 = block * 128 + 4 * lane;
  float v[ROWS][4];
#pragma unroll
  for (int i = 0; i < ROWS; ++i) v[i][0] = v[i][1] = v[i][2] = v[i][3] = 0.0f;
#pragma unroll 8
  for (int p = 0; p < parts; ++p) {
#pragma unroll
    for (int i = 0; i < ROWS; ++i) {
      if (i >= rows) continue;
      const float4 t = ld4(z + p * part_stride + static_cast<int64_t>(row0 + i) * n + e0);
      v[i][0] += t.x;
      v[i][1] += t.y;
      v[i][2] += t.z;
      v[i][3] += t.w;
    }
  }
#pragma unroll
  for (int i = 0; i < ROWS; ++i) {
    if (i >= rows) continue;
    fwht128(v[i], lane);
    float r[4];
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int e = e0 + q;
      r[q] = v[i][q] * kScale * svh[e];  // svh has n entries
      if (bias && e < out_features) r[q] += bias[e];
    }
    float* yr = y + static_cast<int64_t>(row0 + i) * out_features + e0;
    if (e0 + 3 < out_features && aligned16(yr)) {
      *reinterpret_cast<float4*>(yr) = make_float4(r[0], r[1], r[2], r[3]);
    } else {
#pragma unroll
      for (int q = 0; q < 4; ++q)
        if (e0 + q < out_features) yr[q] = r[q];
    }
  }
}

// The gated MLP between its products (cuda_exl3.h, CudaExl3Linear::forward_mlp): per 128-block
// of a row, the output transforms of gate and up exactly as hadamard_out_kernel computes them,
// silu(gate)·up exactly as the fused input of hadamard_in_kernel, then down's input transform
// into its GEMM rows (`gemm_rows` 1 or 2). Columns at or past out_features (padding) enter down
// as zeros, as hadamard_in zero-extends. One pass over z_gate, z_up instead of writing gate and
// up, reading them back and writing their product.
template <int ROWS>
__global__ void mlp_bridge_kernel(const float* __restrict__ zg, const float* __restrict__ zu, int m, int n,
                                  int out_features, const float* __restrict__ svh_g, const float* __restrict__ bias_g,
                                  const float* __restrict__ svh_u, const float* __restrict__ bias_u,
                                  const float* __restrict__ suh_d, uint16_t* __restrict__ xa, int gemm_rows) {
  pdl_begin();
  const int lane = threadIdx.x & 31;
  const int block = blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5);
  if (block * 128 >= n) return;
  const int row0 = blockIdx.y * ROWS, rows = min(ROWS, m - row0);
  const int e0 = block * 128 + 4 * lane;
  float4 tg[ROWS], tu[ROWS];
#pragma unroll
  for (int i = 0; i < ROWS; ++i) {
    if (i >= rows) continue;
    const int64_t at = static_cast<int64_t>(row0 + i) * n + e0;
    tg[i] = ld4(zg + at);
    tu[i] = ld4(zu + at);
  }
  auto out_transform = [&](const float4& t, const float* svh, const float* bias, float r[4]) {
    float v[4] = {0.0f + t.x, 0.0f + t.y, 0.0f + t.z, 0.0f + t.w};  // hadamard_out's sum over one part
    fwht128(v, lane);
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int e = e0 + q;
      r[q] = v[q] * kScale * svh[e];
      if (bias && e < out_features) r[q] += bias[e];
    }
  };
#pragma unroll
  for (int i = 0; i < ROWS; ++i) {
    if (i >= rows) continue;
    float g[4], u[4], xv[4];
    out_transform(tg[i], svh_g, bias_g, g);
    out_transform(tu[i], svh_u, bias_u, u);
#pragma unroll
    for (int q = 0; q < 4; ++q) xv[q] = e0 + q < out_features ? g[q] / (1.0f + expf(-g[q])) * u[q] : 0.0f;
    transform_store(xv, suh_d, xa, m, n, row0 + i, e0, lane, gemm_rows);
  }
}

template <int R>
struct InPick {
  static constexpr auto fn = &hadamard_in_kernel<R>;
};
template <int R>
struct OutPick {
  static constexpr auto fn = &hadamard_out_kernel<R>;
};
template <int R>
struct BridgePick {
  static constexpr auto fn = &mlp_bridge_kernel<R>;
};

void launch_in(const float* x, int64_t m, int64_t in_features, int64_t k, const InGroup& g, size_t count,
               ActLayout layout, cudaStream_t stream) {
  // GEMV activations are tiny: one linear per blockIdx.z for more warps. GEMM activations are
  // memory-bound passes: each warp transforms its x slice for every linear of the group.
  const int rows = rows_per_warp(m);
  const dim3 grid(static_cast<unsigned>((k / 128 + kWarpsPerBlock - 1) / kWarpsPerBlock),
                  static_cast<unsigned>((m + rows - 1) / rows),
                  layout == ActLayout::kGemvFragments ? static_cast<unsigned>(count) : 1u);
  const int mode = layout == ActLayout::kGemmRows       ? 1
                   : layout == ActLayout::kGemmRowsHalf ? 2
                   : layout == ActLayout::kPlainHalf    ? 3
                                                        : 0;
  launch("exl3_hadamard_in", pick_rows<InPick>(rows), grid,
         dim3(kWarpsPerBlock * 32), 0, stream, x, static_cast<int>(m), static_cast<int>(in_features),
         static_cast<int>(k), g, static_cast<int>(count), mode);
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
  const int rows = rows_per_warp(m);
  const dim3 grid(static_cast<unsigned>((n / 128 + kWarpsPerBlock - 1) / kWarpsPerBlock),
                  static_cast<unsigned>((m + rows - 1) / rows));
  launch("exl3_mlp_bridge", pick_rows<BridgePick>(rows), grid,
         dim3(kWarpsPerBlock * 32), 0, stream, zg, zu, static_cast<int>(m),
         static_cast<int>(n), static_cast<int>(out_features), svh_g, bias_g, svh_u, bias_u, suh_d, xa,
         layout == ActLayout::kGemmRows ? 1 : 2);
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
  const int rows = rows_per_warp(m);
  const dim3 grid(static_cast<unsigned>((max_n / 128 + kWarpsPerBlock - 1) / kWarpsPerBlock),
                  static_cast<unsigned>((m + rows - 1) / rows), static_cast<unsigned>(items.size()));
  launch("exl3_hadamard_out", pick_rows<OutPick>(rows), grid,
         dim3(kWarpsPerBlock * 32), 0, stream, g, static_cast<int>(m));
}

}  // namespace trellis::cuda::exl3k
