// backends/cuda/cuda_attention_flash.cu: prefill attention on tensor cores, pipelined
// (attention_flash_kernel<D>, head_dim D = 64 or 128; TRELLIS_CUDA_TC_ATTENTION unset or 2).
//
// Goal: the FlashAttention-2 shape at close to its speed on sm_80..sm_90 with mma.sync, for long
// causal prompts with GQA (Llama-3-8B: 32 query heads, 8 kv heads, head_dim 128). What makes it
// faster than attention_tc_kernel (cuda_attention.cu), which computes the same thing:
//   * A block is 8 warps × 16 = 128 queries of one kv head's flat query list (row, head in group),
//     so every staged key/value tile is used by 128 queries (with GQA 4: 32 rows × 4 heads);
//     by default it runs as 4 warps (64 queries, two blocks per SM: 4-16% faster on the H200,
//     docs/BENCHMARKS.md session 8); TRELLIS_CUDA_FLASH_WARPS=8 or set_attention_flash_warps(); the
//     grid is (kv head, query block) with the kv head fastest and the latest (heaviest causal)
//     query blocks first, so the long blocks of every head start in the first wave.
//   * Key/value tiles of 64 rows are copied to shared memory with cp.async into two stages: the
//     copy of tile i+1 is in flight while tile i is computed (one barrier per tile). K and V stay
//     row-major ([key][dim], rows padded by 16 bytes so that the 8 row addresses of an ldmatrix
//     hit 8 distinct 16-byte bank groups); B fragments come from ldmatrix.x4 (K: 2 mma per
//     instruction) and ldmatrix.x4.trans (V: no transposed copy).
//   * Q is read once into fp16 A fragments scaled by scale·log2(e), so softmax is in base 2 with
//     ex2.approx; keys outside a row's [first, last] get -inf. A warp skips tiles that lie outside
//     all its rows' ranges (it still joins the barrier) and skips the mask on tiles that lie
//     inside all of them; the block only visits the union of its rows' ranges.
//   * Online softmax on the accumulator fragments (row max over the 4 lanes of a quad; l stays
//     per lane until the end), P rounded to fp16 and reused in registers as the A fragments of
//     P·V, O in fp32 registers divided by l at the end.
// Accuracy: exactly that of attention_tc_kernel (Q and P rounded to fp16, relative 2^-11 each;
// everything else fp32): ~1e-3 relative against the fp32 kernel.
// Non-goals: other head sizes (fall back to the other kernels), decode, wgmma/TMA (sm_90-only;
// mma.sync keeps one kernel for sm_80..90).
#include "backends/cuda/cuda_attention_flash.h"

#include <cuda_fp16.h>

#include <atomic>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "backends/cuda/cuda_launch.cuh"
#include "backends/cuda/cuda_mma.cuh"
#include "backends/cuda/cuda_util.h"

namespace trellis::cuda {
namespace {

constexpr int kKeys = 64;                   // keys per staged tile
constexpr int kPad = 8;                     // halves after each staged row
constexpr float kLog2e = 1.4426950408889634f;

// Two stages of a K tile and a V tile: [2][kKeys][D + kPad] fp16 each.
template <int D>
constexpr size_t smem_bytes() {
  return size_t{2} * 2 * kKeys * (D + kPad) * sizeof(__half);
}

// Warps per block: 4 by default, two blocks of 4 per SM (barriers stall half as many warps, K/V
// tiles are read twice as often from L2); TRELLIS_CUDA_FLASH_WARPS=8 runs one block of 8 per SM
// at D = 128.
std::atomic<int> g_warps{0};  // 0: TRELLIS_CUDA_FLASH_WARPS not read yet

int flash_warps() {
  int w = g_warps.load(std::memory_order_relaxed);
  if (w == 0) {
    const char* e = std::getenv("TRELLIS_CUDA_FLASH_WARPS");
    int expected = 0;
    g_warps.compare_exchange_strong(expected, e && std::string(e) == "8" ? 8 : 4);
    w = g_warps.load();
  }
  return w;
}

// Block of W warps: queries q0 .. q0+16W-1 of kv head blockIdx.x's flat list; warp w owns
// q0+16w .. +15, and a thread (lane 4g + t) owns its warp's rows g and g+8 ("row i", i = 0, 1)
// and, of every 8-column tile of S and O, columns 2t and 2t+1.
template <int D, int kWarps>
__global__ void __launch_bounds__(kWarps * 32, 8 / kWarps) attention_flash_kernel(AttentionArgs a) {
  static_assert(D % 16 == 0, "head_dim must be a multiple of 16");
  constexpr int kBlockQueries = 16 * kWarps;  // flat queries per block (m = 16 per warp)
  constexpr int kStride = D + kPad;            // halves per staged row (a multiple of 8: 16 bytes)
  constexpr int kTile = kKeys * kStride;       // halves per staged tile
  constexpr int kChunks = D / 8;               // 16-byte chunks per row
  constexpr int kCopies = kKeys * kChunks / (kWarps * 32);  // cp.async per thread per tile, K and V each
  static_assert(kKeys * kChunks % (kWarps * 32) == 0, "tile copy must divide evenly");
  extern __shared__ __align__(16) unsigned char flash_smem[];
  __half* const ks = reinterpret_cast<__half*>(flash_smem);  // [2][kKeys][kStride]
  __half* const vs = ks + 2 * kTile;                          // [2][kKeys][kStride]
  __shared__ int warp_lo[kWarps], warp_hi[kWarps];
  pdl_begin();

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int64_t group = a.n_heads / a.n_kv_heads, q_width = a.n_heads * D, kv_width = a.n_kv_heads * D;
  const int64_t n_flat = a.rows * group;
  const int kvh = static_cast<int>(blockIdx.x);
  const int64_t q0 = (int64_t{gridDim.y} - 1 - blockIdx.y) * kBlockQueries;

  // The thread's rows: key range [first, last] and the offset of the row's query head in q and
  // out. A row past the end of the list gets qoff -1, zero Q and the range [0, INT_MAX] (never
  // masked, so its scores are finite; it is never written).
  int first[2], last[2];
  int64_t qoff[2];
  int ulo = INT_MAX, uhi = -1;  // union of the valid rows' ranges
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int64_t f = q0 + warp * 16 + g + 8 * i;
    first[i] = 0;
    last[i] = INT_MAX;
    qoff[i] = -1;
    if (f < n_flat) {
      const int64_t r = f / group, h = kvh * group + f % group;
      const int p = a.pos[r];
      last[i] = p;
      first[i] = a.sliding_window > 0 ? static_cast<int>(max(int64_t{0}, int64_t{p} - a.sliding_window + 1)) : 0;
      qoff[i] = r * q_width + h * D;
      ulo = min(ulo, first[i]);
      uhi = max(uhi, last[i]);
    }
  }
  // Over the warp: the union [wlo, whi] of its valid rows' ranges (empty for a warp past the end)
  // and the intersection [wfirst, wlast] of all its rows' ranges (a tile inside needs no mask).
  int wlo = ulo, whi = uhi, wfirst = max(first[0], first[1]), wlast = min(last[0], last[1]);
#pragma unroll
  for (int x = 1; x < 32; x <<= 1) {
    wlo = min(wlo, __shfl_xor_sync(0xffffffffu, wlo, x));
    whi = max(whi, __shfl_xor_sync(0xffffffffu, whi, x));
    wfirst = max(wfirst, __shfl_xor_sync(0xffffffffu, wfirst, x));
    wlast = min(wlast, __shfl_xor_sync(0xffffffffu, wlast, x));
  }
  if (lane == 0) {
    warp_lo[warp] = wlo;
    warp_hi[warp] = whi;
  }

  // Q as the A operand of S = Q·Kᵀ (k = dims), scaled so that S comes out in log2 units.
  const float q_scale = a.scale * kLog2e;
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {  // a0 (row 0, dims 2t), a1 (row 1, 2t), a2 (row 0, 2t+8), a3 (row 1, 2t+8)
      const int i = j & 1, c = kk * 16 + 2 * t + 8 * (j >> 1);
      float x0 = 0.0f, x1 = 0.0f;
      if (qoff[i] >= 0) {
        x0 = a.q[qoff[i] + c] * q_scale;
        x1 = a.q[qoff[i] + c + 1] * q_scale;
      }
      qf[kk][j] = pack_half2(x0, x1);
    }
  }

  __syncthreads();  // warp_lo / warp_hi
  // The block's key range. Query q0 exists (the grid has ceil(n_flat / 16W) blocks), so lo <= hi.
  int lo = INT_MAX, hi = -1;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    lo = min(lo, warp_lo[w]);
    hi = max(hi, warp_hi[w]);
  }
  const int tiles = (hi - lo) / kKeys + 1;

  // Tile `it` (keys lo + 64·it ..) into stage `buf`. Keys past hi may never have been written
  // (NaN bits): they are zero-filled instead of read, so a masked P = 0 never meets a NaN in V.
  const auto load_tile = [&](int it, int buf) {
    const int t0 = lo + it * kKeys;
    __half* const kd = ks + buf * kTile;
    __half* const vd = vs + buf * kTile;
#pragma unroll
    for (int n = 0; n < kCopies; ++n) {
      const int idx = static_cast<int>(threadIdx.x) + n * kWarps * 32;
      const int key = idx / kChunks, c = idx % kChunks;
      const bool valid = t0 + key <= hi;
      const int64_t off = int64_t{valid ? t0 + key : hi} * kv_width + int64_t{kvh} * D + c * 8;
      cp_async16_or_zero(kd + key * kStride + c * 8, a.k_cache + off, valid);
      cp_async16_or_zero(vd + key * kStride + c * 8, a.v_cache + off, valid);
    }
    cp_async_commit();
  };

  float o[D / 8][4];
#pragma unroll
  for (int nb = 0; nb < D / 8; ++nb) o[nb][0] = o[nb][1] = o[nb][2] = o[nb][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY};  // running row max (log2 units)
  float l[2] = {0.0f, 0.0f};            // running row sum of this lane's columns

  load_tile(0, 0);
  for (int it = 0; it < tiles; ++it) {
    cp_async_wait<0>();
    // After this barrier tile `it` is visible to every thread, and every warp is done with tile
    // it-1, whose stage the copy of tile it+1 reuses.
    __syncthreads();
    if (it + 1 < tiles) load_tile(it + 1, (it + 1) & 1);
    const int t0 = lo + it * kKeys;
    if (t0 > whi || t0 + kKeys - 1 < wlo) continue;  // warp-uniform: no key of the tile is for this warp
    const __half* const kb = ks + (it & 1) * kTile;
    const __half* const vb = vs + (it & 1) * kTile;

    // S = Q·Kᵀ: B (k = dims, n = keys) is K row-major as staged. ldmatrix matrix j = lane / 8:
    // keys 16p + 8(j / 2) .. +7, dims 16kk + 8(j % 2) .. +7, i.e. b0, b1 of key tile 2p, then
    // b0, b1 of key tile 2p+1.
    float s[kKeys / 8][4];
#pragma unroll
    for (int n = 0; n < kKeys / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
      for (int p = 0; p < kKeys / 16; ++p) {
        uint32_t b[4];
        ldmatrix_x4(b, kb + (p * 16 + (lane >> 4) * 8 + (lane & 7)) * kStride + kk * 16 + ((lane >> 3) & 1) * 8);
        mma_m16n8k16(s[2 * p], qf[kk], b[0], b[1]);
        mma_m16n8k16(s[2 * p + 1], qf[kk], b[2], b[3]);
      }
    }
    // Mask (causal, sliding window, keys past the end), unless the tile is inside every row's range.
    if (t0 < wfirst || t0 + kKeys - 1 > wlast) {
#pragma unroll
      for (int n = 0; n < kKeys / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = t0 + n * 8 + 2 * t + (e & 1), i = e >> 1;
          if (key < first[i] || key > last[i]) s[n][e] = -INFINITY;
        }
    }
    // Online softmax: m' = max(m, max s), alpha = 2^(m - m'), p = 2^(s - m'), l = l·alpha + Σp,
    // O = O·alpha. A row with no valid key yet (m' = -inf) subtracts 0 instead: p = alpha = 0.
    float mu[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float mx = m[i];
#pragma unroll
      for (int n = 0; n < kKeys / 8; ++n) mx = fmaxf(mx, fmaxf(s[n][2 * i], s[n][2 * i + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      mu[i] = mx == -INFINITY ? 0.0f : mx;
      const float alpha = fast_exp2(m[i] - mu[i]);
      m[i] = mx;
      l[i] *= alpha;
#pragma unroll
      for (int nb = 0; nb < D / 8; ++nb) {
        o[nb][2 * i] *= alpha;
        o[nb][2 * i + 1] *= alpha;
      }
    }
    // P in fp16 as the A operand of P·V (k = keys): key tiles 2c, 2c+1 form k step c.
    uint32_t pf[kKeys / 16][4];
#pragma unroll
    for (int n = 0; n < kKeys / 8; ++n) {
      const float p0 = fast_exp2(s[n][0] - mu[0]), p1 = fast_exp2(s[n][1] - mu[0]);
      const float p2 = fast_exp2(s[n][2] - mu[1]), p3 = fast_exp2(s[n][3] - mu[1]);
      l[0] += p0 + p1;
      l[1] += p2 + p3;
      pf[n >> 1][(n & 1) * 2] = pack_half2(p0, p1);      // row 0: a0 (even tile) / a2 (odd tile)
      pf[n >> 1][(n & 1) * 2 + 1] = pack_half2(p2, p3);  // row 1: a1 / a3
    }
    // O += P·V: B (k = keys, n = dims) from V row-major by ldmatrix.trans. Matrix j = lane / 8:
    // keys 16c + 8(j % 2) .. +7, dims 16np + 8(j / 2) .. +7, i.e. b0, b1 of dim tile 2np, then
    // b0, b1 of dim tile 2np+1.
#pragma unroll
    for (int c = 0; c < kKeys / 16; ++c) {
#pragma unroll
      for (int np = 0; np < D / 16; ++np) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, vb + (c * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * kStride + np * 16 + (lane >> 4) * 8);
        mma_m16n8k16(o[2 * np], pf[c], b[0], b[1]);
        mma_m16n8k16(o[2 * np + 1], pf[c], b[2], b[3]);
      }
    }
  }

  // l = the quad's sum; out = O / l (a valid row has at least its own key, so l > 0).
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
    if (qoff[i] < 0) continue;
    const float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
    float* const orow = a.out + qoff[i] + 2 * t;
#pragma unroll
    for (int nb = 0; nb < D / 8; ++nb) {
      orow[nb * 8] = o[nb][2 * i] * inv;
      orow[nb * 8 + 1] = o[nb][2 * i + 1] * inv;
    }
  }
}

}  // namespace

bool attention_flash_fits(int64_t rows, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim) {
  if ((head_dim != 64 && head_dim != 128) || n_kv_heads <= 0 || n_heads % n_kv_heads != 0) return false;
  const int64_t blocks = (rows * (n_heads / n_kv_heads) + 63) / 64;  // blocks of 4 warps: the most
  return blocks >= 1 && blocks <= 65535 && n_kv_heads <= INT_MAX;
}

void set_attention_flash_warps(int warps) { g_warps.store(warps == 4 ? 4 : 8); }

int attention_flash_warps() { return flash_warps(); }

namespace {

template <int D, int W>
void launch_flash(const AttentionArgs& a, cudaStream_t stream) {
  const int64_t blocks = (a.rows * (a.n_heads / a.n_kv_heads) + 16 * W - 1) / (16 * W);
  const dim3 grid(static_cast<unsigned>(a.n_kv_heads), static_cast<unsigned>(blocks));
  launch("attention (flash)", attention_flash_kernel<D, W>, grid, dim3(W * 32), smem_bytes<D>(), stream, a);
}

template <int W>
void set_smem_limit() {
  check(cudaFuncSetAttribute(attention_flash_kernel<64, W>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(smem_bytes<64>())),
        "attention (flash, shared memory limit)");
  check(cudaFuncSetAttribute(attention_flash_kernel<128, W>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(smem_bytes<128>())),
        "attention (flash, shared memory limit)");
}

}  // namespace

void attention_flash(const AttentionArgs& a, cudaStream_t stream) {
  const bool w4 = flash_warps() == 4;
  if (a.head_dim == 64)
    w4 ? launch_flash<64, 4>(a, stream) : launch_flash<64, 8>(a, stream);
  else
    w4 ? launch_flash<128, 4>(a, stream) : launch_flash<128, 8>(a, stream);
}

void attention_flash_prepare() {
  set_smem_limit<4>();
  set_smem_limit<8>();
}

}  // namespace trellis::cuda
