// backends/cuda/cuda_exl3_kernels.cuh: launchers of the EXL3 kernels (cuda_exl3_gemv.cu,
// cuda_exl3_transform.cu), used by CudaExl3Linear (cuda_exl3.cu). Every pointer is a device
// pointer; launchers only enqueue on `stream` and raise trellis::Error on a launch error.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <span>

#include "backends/cuda/cuda_exl3.h"

namespace trellis::cuda::exl3k {

// GEMV block shape. Measured on the H200 (docs/BENCHMARKS.md, 2026-12-04): 2 warps x 8 tiles
// per block with about 12 blocks per SM beat 8 warps x 4 tiles with 3 blocks per SM by 1.2-1.3x:
// small blocks fill every SM evenly (no partial last wave) and leave more independent warps to
// hide ALU latency. Each warp owns a strided share of the block's k range; a block covers 8 tiles
// = 128 output columns.
inline constexpr int kGemvWarps = 2;
inline constexpr int kGemvBlocksPerSm = 12;
constexpr int gemv_tiles(int /*K*/) { return 8; }

// Activation layout for the GEMV (the mma.m16n8k16 A fragments, hi rows 0-7 and lo rows 8-15):
// for k-slab tk (16 inputs), row r < m and quad q < 4, 16 bytes at ((tk·m + r)·4 + q)·16 hold
// fp16 {hi, lo, hi, lo} pairs of elements 2q, 2q+1 (first two words) and 2q+8, 2q+9 (last two).
// The GEMM layout is plain row-major fp16 [2m, k]: rows 0..m-1 hi, rows m..2m-1 lo; the half
// GEMM layout is row-major fp16 [m, k] (hi only: x rounded once to fp16). kPlainHalf is the half
// layout without the transform (xa = fp16(x), suh unused): the input of a GEMM on the
// reconstructed W, which has the transforms folded in.
enum class ActLayout { kGemvFragments, kGemmRows, kGemmRowsHalf, kPlainHalf };

// Up to this many linears that read the same x (q/k/v, gate/up) share one launch of each
// transform kernel (blockIdx.z picks the linear): fewer launches per decode step.
inline constexpr size_t kMaxGroup = 4;
struct InGroup {
  const float* suh[kMaxGroup];
  uint16_t* xa[kMaxGroup];
  const float* up;  // when set, the input is silu(x) * up (fused silu_mul), also written to silu_out
  float* silu_out;
};
struct OutGroup {
  struct Item {
    const float* z;
    int64_t part_stride;
    int parts, n, out_features;
    const float* svh;
    const float* bias;
    float* y;
  };
  Item item[kMaxGroup];
};

// xa = fp16 hi/lo of (H128(x ⊙ suh) · r) per 128-block, x [m, in_features] fp32 zero-extended to
// k; fp32 butterflies in the order of spec 4.4 step 1. xa needs m·k·4 bytes (m·k·2 for
// kGemmRowsHalf).
// With `up` set, the input is silu(x) · up, computed as cuda::silu_mul does (bit-identical) and
// also written to silu_out [m, in_features] (which may alias x).
void hadamard_in(const float* x, int64_t m, int64_t in_features, int64_t k, const float* suh, uint16_t* xa,
                 ActLayout layout, cudaStream_t stream, const float* up = nullptr, float* silu_out = nullptr);

// The same for linears sharing x (same in_features and k): xa[i] from suh[i], one launch.
void hadamard_in_group(const float* x, int64_t m, int64_t in_features, int64_t k, std::span<const float* const> suh,
                       std::span<uint16_t* const> xa, ActLayout layout, cudaStream_t stream);

// y [m, out_features] = (H128(Σ_p z_p) · r) ⊙ svh (+ bias), z_p = z + p·part_stride, each
// [m, n] fp32, summed in order p = 0..parts-1.
void hadamard_out(const float* z, int parts, int64_t part_stride, int64_t m, int64_t n, int64_t out_features,
                  const float* svh, const float* bias, float* y, cudaStream_t stream);
// The same for up to kMaxGroup linears in one launch (item i: its own z, parts, n, svh, bias, y).
void hadamard_out_group(std::span<const OutGroup::Item> items, int64_t m, cudaStream_t stream);

// The gated MLP between its products: xa (down's input, layout kGemmRows or kGemmRowsHalf, k = n)
// = the input transform (suh_d) of silu(g)·u, where g and u are hadamard_out of zg and zu (one
// part each, [m, n]) with svh_g, bias_g and svh_u, bias_u; columns >= out_features are zero.
// Bit-identical to hadamard_out of each, then hadamard_in with the fused silu.
void mlp_bridge(const float* zg, const float* zu, int64_t m, int64_t n, int64_t out_features, const float* svh_g,
                const float* bias_g, const float* svh_u, const float* bias_u, const float* suh_d, uint16_t* xa,
                ActLayout layout, cudaStream_t stream);

// One linear of a grouped GEMV launch (blocks is filled in by gemv_group).
// With `done` set, the output transform is fused (cuda_util.h gemv_fused_out): the last block of
// each 128-column group to finish (counted in done[group], which must be 0 before the launch and
// is 0 again after it) sums the group's k-split partials of z in split order and writes y [m,
// out_features] exactly as hadamard_out would (same bits); z still holds the partials.
struct GemvItem {
  const uint32_t* trellis;
  const uint16_t* xa;
  float* z;
  int n_tiles, splits, blocks;
  unsigned* done = nullptr;  // [n / 128] counters
  const float* svh = nullptr;
  const float* bias = nullptr;
  float* y = nullptr;
  int out_features = 0;
  // With `x` set too (needs `done`), the input transform is fused as well (gemv_fused_in): each
  // block transforms its own k range of x [m, in_features] (suh [k]) into shared memory, as
  // hadamard_in would (same bits), and xa is not read. m·(the split's slabs)·64 bytes must not
  // exceed kFusedInActBytes.
  const float* x = nullptr;
  const float* suh = nullptr;
  int in_features = 0;
  // With `up` set too, the input is silu(x) · up (the gated MLP's down projection), computed as
  // cuda::silu_mul does (same bits); the product is not written anywhere.
  const float* up = nullptr;
  // The decode fusions of the residual stream (cuda_exl3.h Exl3Fusion; CudaExl3Linear checks
  // them): resid += y with its 128-column sums of squares written by the fused output transform
  // (needs `done`, out_features == n), or the RMSNorm of x formed by the fused input transform
  // (needs `x`, in_features == k, no `up`), the same bits as cuda::add and cuda::rms_norm; with
  // norm_out set, the blocks of column group 0 of item 0 also write the normed input (each
  // element once).
  Exl3Fusion fusion = {};
};
inline constexpr int kFusedInActBytes = 32 * 1024;
// Slabs per split of a GEMV with k/16 = k_tiles slabs in `splits` splits (the fused input
// transform covers the same ranges: a split's edge 128-blocks are transformed whole and only the
// slabs inside kept).
__host__ __device__ inline int gemv_split_slabs(int k_tiles, int splits) { return (k_tiles + splits - 1) / splits; }

// z_s [m, n] (z + s·m·n, s < splits) = Σ over k-slabs of split s of xa · Ŵ; m in 1..8,
// n/16 a multiple of gemv_tiles(K), k/16 >= 1. Dynamic shared memory gemv_smem_bytes(K, m).
void gemv(int K, int codebook, const uint32_t* trellis, const uint16_t* xa, int64_t m, int64_t k, int64_t n,
          int splits, float* z, cudaStream_t stream);
// The same for up to kMaxGroup linears of one K, codebook and k (own trellis, xa, z, n, splits)
// in one launch; results identical to separate gemv() calls.
void gemv_group(int K, int codebook, std::span<const GemvItem> items, int64_t m, int64_t k, cudaStream_t stream);
size_t gemv_smem_bytes(int K, int64_t m);
// The per-warp cp.async rings of the GEMV (the fused input transform's activations go after them).
size_t gemv_ring_bytes(int K, int64_t m);
const char* gemv_name(int K, int codebook);

// what [k, cols] fp16 row-major = Ŵ[:, col0 .. col0+cols), exact (spec 4.3 steps 1-4); col0 and
// cols multiples of 128, n the full width.
void decode(int K, int codebook, const uint32_t* trellis, int64_t k, int64_t n, int64_t col0, int64_t cols,
            uint16_t* what, cudaStream_t stream);

// what [k, cols] fp16 row-major = W[:, col0 .. col0+cols) with W = diag(suh)·H·Ŵ·H/128·diag(svh)
// (spec 4.2; both Hadamards and sign vectors folded in, fp32 accuracy, one fp16 rounding);
// col0 and cols multiples of 128, n the full width, suh [k] and svh [n] fp32; `sms` the device's
// SM count (sizes the persistent grid).
void reconstruct(int K, int codebook, const uint32_t* trellis, int64_t k, int64_t n, int64_t col0, int64_t cols,
                 const float* suh, const float* svh, uint16_t* what, int sms, cudaStream_t stream);

}  // namespace trellis::cuda::exl3k
