// backends/cuda/cuda_exl3_reconstruct.cu: the weight reconstruction of the large-batch prefill
// path (exl3_reconstruct_k<K>_<cb>): W = diag(suh) · H·Ŵ·H / 128 · diag(svh) (spec 4.2, 4.3 steps
// 1-8) for a slice of columns, as fp16, in one pass over the trellis.
//
// Why: at prefill sizes the EXL3 linear used to be input transform → GEMM on Ŵ → output transform,
// and the two transforms are memory-bound passes over [m, k] and [m, n] fp32 activations that
// grow with m (19 ms of a 2048-token 8B prefill on the H200). Folding both Hadamards and the sign
// vectors into the weights costs k·n work once per call instead, and the GEMM runs on plain fp16
// activations with no transform at all (ExLlamaV3 does the same from 1024 rows).
// Status (H200, docs/BENCHMARKS.md session 8): ~24 instructions per weight (decode ~8, the two
// H8 butterfly passes ~6, hi/lo split and scaling ~5) at 25% occupancy (128 registers, 80 KiB of
// shared memory per block) issue at 0.4 IPC per scheduler; the kernel takes ~19 ms for an 8B model,
// about what the transforms cost at 2048 rows, so the path is opt-in (cuda_util.h). Closing the gap
// needs fewer live registers per warp (e.g. one 8-column half per warp, the H2 across halves moved
// into the cross-tile pass) for twice the resident warps.
//
// Contract: what[k, cols] (row-major fp16) = W[:, col0 .. col0 + cols), col0 and cols multiples of
// 128. Steps 1-4 are exact (decode_lane), steps 5-8 are computed to fp32 accuracy and rounded to
// fp16 once at the end: the most accurate result representable, as spec 4.3 recommends. Values
// agree with an fp64 reference within one fp16 rounding (plus ~1e-6 relative of fp32 sums).
//
// How (8 warps per 128 x 128 block of W, warp w owning tile column w; a persistent grid whose
// blocks prefetch the next block's trellis with cp.async while transforming the current one):
// * H128 = H8 ⊗ H16 (Sylvester: popcount(a & b) splits over the index bits), so the left
//   transform of a 128-row strip is H16 on each 16 x 16 tile, then H8 across the 8 tiles.
// * H16 · Ŵ_tile runs on the tensor cores: Ŵ decodes straight into mma B fragments (spec 2.7) and
//   H16 (±1, exact in fp16) is a constant A fragment. H8 across the 8 tiles is 3 butterfly stages
//   on the fp32 accumulators, all held by the same lane.
// * The right transform's H16 is another MMA with the accumulators as the A operand: the C
//   layout of m16n8 is the A layout of m16k16. The fp32 values enter as fp16 hi + lo, so the
//   product keeps fp32 accuracy (two MMAs; the tensor cores are idle otherwise).
// * H8 across the 8 tile columns needs all warps' results: they meet in shared memory (fp32,
//   pitch 136 floats: conflict-free 8-byte stores; each thread reads its two 16-byte chunks in an
//   order that keeps the 16-byte loads conflict-free), and each thread finishes one row-half of 8
//   columns per tile column, scales by suh·svh/128, and writes 8-byte fp16 chunks (over its two
//   passes a warp writes 16 rows x 32 contiguous bytes per tile column: whole sectors).
// Cost per 128 x 128 block: the decode (ALU, as the GEMV's), 48 MMAs per warp, ~3 fp32 adds per
// weight and one shared-memory round trip; the fp16 store of 2 bytes per weight is what it is
// meant to be bound by.
#include <cuda_fp16.h>

#include <algorithm>
#include <array>
#include <mutex>
#include <string>
#include <utility>

#include "backends/cuda/cuda_exl3_decode.cuh"
#include "backends/cuda/cuda_exl3_kernels.cuh"
#include "backends/cuda/cuda_launch.cuh"
#include "backends/cuda/cuda_mma.cuh"
#include "backends/cuda/cuda_util.h"

namespace trellis::cuda::exl3k {
namespace {

constexpr int kPitch = 136;  // floats per shared row (128 + 8)
constexpr size_t kTransformBytes = size_t{128} * kPitch * sizeof(float);
constexpr int kBlocksPerSm = 2;  // resident blocks (128 registers x 256 threads each)

// One 128 x 128 block's trellis: 8 tile rows x 8 tiles x 8K words (each row contiguous in memory).
constexpr int stage_words(int K) { return 64 * 8 * K; }
constexpr size_t smem_bytes(int K) { return kTransformBytes + 2 * size_t{4} * stage_words(K); }

// fp16 bits of H16[i][j] = (-1)^popcount(i & j).
__device__ __forceinline__ uint32_t h16(int i, int j) { return (__popc(i & j) & 1) ? 0xBC00u : 0x3C00u; }

__device__ __forceinline__ uint32_t pack2(uint32_t lo, uint32_t hi) { return lo | (hi << 16); }

// fp32 x = hi + lo + O(2^-22 x): {hi, lo} of two values as f16x2 words (packed conversions).
__device__ __forceinline__ void split2(float a, float b, uint32_t& hi, uint32_t& lo) {
  const __half2 h = __floats2half2_rn(a, b);
  const float2 hf = __half22float2(h);
  hi = *reinterpret_cast<const uint32_t*>(&h);
  lo = pack_half2(a - hf.x, b - hf.y);
}

// A persistent grid (kBlocksPerSm blocks per SM) walks the 128 x 128 blocks of the slice; each
// block's trellis is prefetched with cp.async into a double-buffered stage while the previous
// block is transformed, so the decode never waits on HBM.
template <int K, int CB>
__global__ void __launch_bounds__(256, kBlocksPerSm)
    reconstruct_kernel(const uint32_t* __restrict__ trellis, int n_tiles, int tn0, int cols, int col_blocks,
                       int blocks, const float* __restrict__ suh, const float* __restrict__ svh,
                       uint16_t* __restrict__ what) {
  extern __shared__ __align__(16) float S[];  // [128][kPitch]: H128·Ŵ·H16 of the block; then 2 stages
  uint32_t* const stage = reinterpret_cast<uint32_t*>(S + 128 * kPitch);
  constexpr int kChunksRow = 8 * 8 * K / 4;  // 16-byte chunks of one tile row's 8 tiles
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, q = lane & 3;

  auto fetch = [&](int b, int buf) {  // always commits a group (possibly empty)
    if (b < blocks) {
      const int by = b / col_blocks, bx = b % col_blocks;
      const uint32_t* src = trellis + (static_cast<size_t>(by) * 8 * n_tiles + tn0 + bx * 8) * (8 * K);
      uint32_t* dst = stage + buf * stage_words(K);
      for (int c = threadIdx.x; c < 8 * kChunksRow; c += 256) {
        const int a = c / kChunksRow, o = c % kChunksRow;
        cp_async16(dst + a * 64 * K + o * 4, src + static_cast<size_t>(a) * n_tiles * (8 * K) + o * 4);
      }
    }
    cp_async_commit();
  };
  fetch(blockIdx.x, 0);  // the trellis is constant: requested before the wait on the previous kernel
  pdl_begin();

  // H16 as the A fragment (rows g, g+8; columns 2q, 2q+1, 2q+8, 2q+9) and as the B fragments of
  // the two 8-column halves (rows 2q, 2q+1, 2q+8, 2q+9; column g of the half).
  const uint4 ha = make_uint4(pack2(h16(g, 2 * q), h16(g, 2 * q + 1)), pack2(h16(g + 8, 2 * q), h16(g + 8, 2 * q + 1)),
                              pack2(h16(g, 2 * q + 8), h16(g, 2 * q + 9)),
                              pack2(h16(g + 8, 2 * q + 8), h16(g + 8, 2 * q + 9)));
  uint32_t hb[2][2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    hb[h][0] = pack2(h16(2 * q, 8 * h + g), h16(2 * q + 1, 8 * h + g));
    hb[h][1] = pack2(h16(2 * q + 8, 8 * h + g), h16(2 * q + 9, 8 * h + g));
  }

  int buf = 0;
  for (int b = blockIdx.x; b < blocks; b += gridDim.x, buf ^= 1) {
    fetch(b + gridDim.x, buf ^ 1);
    cp_async_wait<1>();  // this block's stage has landed (for this thread's copies) ...
    __syncthreads();     // ... and everyone's; the previous block's reads of S are done
    const int by = b / col_blocks, bx = b % col_blocks;

    // Left transform of the warp's 128 x 16 strip: p[a] = H16 · Ŵ[tile a], then H8 across a.
    float p[8][2][4];
#pragma unroll
    for (int a = 0; a < 8; ++a) {
      uint32_t w[4];
      decode_lane<K, CB>(stage + buf * stage_words(K) + (a * 8 + warp) * (8 * K), lane, w);
#pragma unroll
      for (int h = 0; h < 2; ++h) {
#pragma unroll
        for (int e = 0; e < 4; ++e) p[a][h][e] = 0.0f;
        mma_m16n8k16(p[a][h], ha, w[2 * h], w[2 * h + 1]);
      }
    }
#pragma unroll
    for (int s = 1; s < 8; s <<= 1)
#pragma unroll
      for (int a = 0; a < 8; ++a)
        if (!(a & s))
#pragma unroll
          for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const float u = p[a][h][e], v = p[a + s][h][e];
              p[a][h][e] = u + v;
              p[a + s][h][e] = u - v;
            }

    // Right H16 of each 16 x 16 tile (accumulators as the A operand, hi + lo), to shared memory.
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      uint4 hi, lo;
      split2(p[i][0][0], p[i][0][1], hi.x, lo.x);  // row g, columns 2q, 2q+1
      split2(p[i][0][2], p[i][0][3], hi.y, lo.y);  // row g+8
      split2(p[i][1][0], p[i][1][1], hi.z, lo.z);  // row g, columns 2q+8, 2q+9
      split2(p[i][1][2], p[i][1][3], hi.w, lo.w);  // row g+8
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float r[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        mma_m16n8k16(r, hi, hb[h][0], hb[h][1]);
        mma_m16n8k16(r, lo, hb[h][0], hb[h][1]);
        float* row0 = S + (16 * i + g) * kPitch + 16 * warp + 8 * h + 2 * q;
        *reinterpret_cast<float2*>(row0) = make_float2(r[0], r[1]);
        *reinterpret_cast<float2*>(row0 + 8 * kPitch) = make_float2(r[2], r[3]);
      }
    }
    __syncthreads();

    // H8 across the tile columns: thread -> row `row`, columns 8·half .. 8·half+7 of every tile
    // column, in two passes of 4 columns (fewer live registers). Odd threads take their second
    // 4-column chunk first, which keeps the 16-byte shared loads free of bank conflicts.
    const int row = threadIdx.x >> 1, half = threadIdx.x & 1;
    const int grow = by * 128 + row;
    const float su = suh[grow] * (1.0f / 128.0f);
#pragma unroll
    for (int pass = 0; pass < 2; ++pass) {
      const int col = 8 * half + 4 * (pass ^ half);  // within each 16-column tile
      float v[8][4];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float4 t = *reinterpret_cast<const float4*>(S + row * kPitch + 16 * j + col);
        v[j][0] = t.x, v[j][1] = t.y, v[j][2] = t.z, v[j][3] = t.w;
      }
#pragma unroll
      for (int s = 1; s < 8; s <<= 1)
#pragma unroll
        for (int j = 0; j < 8; ++j)
          if (!(j & s))
#pragma unroll
            for (int c = 0; c < 4; ++c) {
              const float u = v[j][c], w = v[j + s][c];
              v[j][c] = u + w;
              v[j + s][c] = u - w;
            }
      const int col_in_slice = bx * 128 + col;
      const float* sv = svh + tn0 * 16 + col_in_slice;
      uint16_t* out = what + static_cast<size_t>(grow) * cols + col_in_slice;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float4 sc = *reinterpret_cast<const float4*>(sv + 16 * j);
        const uint32_t w0 = pack_half2(v[j][0] * su * sc.x, v[j][1] * su * sc.y);
        const uint32_t w1 = pack_half2(v[j][2] * su * sc.z, v[j][3] * su * sc.w);
        *reinterpret_cast<uint2*>(out + 16 * j) = make_uint2(w0, w1);
      }
    }
  }
  cp_async_wait<0>();
}

using ReconstructFn = void (*)(const uint32_t*, int, int, int, int, int, const float*, const float*, uint16_t*);

template <int CB, int... Ks>
constexpr auto reconstruct_row(std::integer_sequence<int, Ks...>) {
  return std::array<ReconstructFn, 8>{&reconstruct_kernel<Ks + 1, CB>...};
}

const std::array<std::array<ReconstructFn, 8>, 3> kReconstructTable = {
    reconstruct_row<0>(std::make_integer_sequence<int, 8>{}), reconstruct_row<1>(std::make_integer_sequence<int, 8>{}),
    reconstruct_row<2>(std::make_integer_sequence<int, 8>{})};

}  // namespace

void reconstruct(int K, int codebook, const uint32_t* trellis, int64_t k, int64_t n, int64_t col0, int64_t cols,
                 const float* suh, const float* svh, uint16_t* what, int sms, cudaStream_t stream) {
  static std::once_flag once[3][8];  // above the default 48 KiB of dynamic shared memory: opt in
  std::call_once(once[codebook][K - 1], [&] {
    check(cudaFuncSetAttribute(kReconstructTable[codebook][K - 1], cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(smem_bytes(K))),
          "cudaFuncSetAttribute (EXL3 reconstruct shared memory)");
  });
  const int col_blocks = static_cast<int>(cols / 128), blocks = col_blocks * static_cast<int>(k / 128);
  const int grid = std::min(blocks, kBlocksPerSm * std::max(sms, 1));
  launch("exl3_reconstruct", kReconstructTable[codebook][K - 1], dim3(static_cast<unsigned>(grid)), dim3(256),
         smem_bytes(K), stream, trellis, static_cast<int>(n / 16), static_cast<int>(col0 / 16), static_cast<int>(cols),
         col_blocks, blocks, suh, svh, what);
}

}  // namespace trellis::cuda::exl3k
