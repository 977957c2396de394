// backends/cuda/cuda_attention.cu: causal grouped-query attention over the fp16 KV cache, one
// kernel for prefill and decode (contract: cuda_ops.h, backend.h).
//
// Shape of the kernel (flash-attention style, fp32 math, no score matrix in memory):
//   * A block owns up to kQPerBlock queries of one kv head: the flat query list of that head is
//     (row, head in group) in row-major order, so in decode the group's heads share a block and
//     in prefill with no GQA 16 consecutive rows do. K and V are read once per block.
//   * Keys are visited in tiles of 32 (one per lane), staged in shared memory as fp16 (K rows
//     padded by one word so lane-per-key dot products do not bank-conflict). Each warp owns up to
//     kQPerWarp queries, keeps their running max m, sum l and output accumulator in registers
//     (dims lane, lane+32, ...), and per tile does the online-softmax update
//       m' = max(m, max s);  c = exp(m - m');  l = l·c + Σ exp(s - m');  acc = acc·c + Σ exp(s - m')·v.
//   * Flash-decoding: blockIdx.z splits the block's key range into `splits` tile-aligned chunks;
//     with splits > 1 each writes (acc, m, l) to `partial` and a second kernel merges them. The
//     range is computed on the device from the staged positions, so a captured CUDA graph stays
//     valid as the context grows (empty chunks just write m = -inf).
//
// Prefill on tensor cores (head_dim 64 or 128, no splits, at least one full block of 64 flat
// queries): by default attention_flash_kernel (cuda_attention_flash.cu: 128 queries per block,
// cp.async double buffering, ldmatrix), or with TRELLIS_CUDA_TC_ATTENTION=1 the simpler
// attention_tc_kernel below (kept for A/B and as the fallback); =0 forces the fp32 kernel above.
// attention_tc_kernel: FlashAttention-2 style with mma.sync.m16n8k16 (fp16 inputs, fp32
// accumulation).
//   * A block is 4 warps x 16 flat queries of one kv head; blocks run heaviest (latest rows) first.
//   * Q is read once into A fragments as fp16 with scale·log2(e) folded in; key tiles of 64 are
//     staged as fp16, K row-major and V transposed (both padded so the fragment loads are
//     bank-conflict free), zero beyond the last valid key.
//   * S = QKᵀ in fp32 registers; the causal / sliding-window mask per element from the row's
//     position; online softmax in base 2 on the accumulator fragments (row max over the 4 lanes of
//     a quad; the row sum stays per lane until the end); P is rounded to fp16 and reused in
//     registers as the A fragments of P·V; O is rescaled per tile and divided by l at the end.
//   * Accuracy: Q and P rounded once to fp16 (relative 2^-11 each), everything else fp32. Against
//     the fp32 kernel this moves outputs by ~1e-3 relative (measured in the tests), the precision
//     fp16 attention kernels such as ExLlamaV3's run at.
// One-row decode with head_dim 64/128 and GQA group <= 4 goes to cuda_attention_decode.cu instead
// (register-streamed keys, no tiles); its splits are merged by attention_merge_kernel below.
// Non-goals: head_dim > 256; tensor cores for decode (one query row per head: memory-bound).
#include <cuda_fp16.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "backends/cuda/cuda_attention_flash.h"
#include "backends/cuda/cuda_attention_merge.cuh"
#include "backends/cuda/cuda_launch.cuh"
#include "backends/cuda/cuda_mma.cuh"
#include "backends/cuda/cuda_ops.h"
#include "backends/cuda/cuda_util.h"
#include "core/env.h"

namespace trellis::cuda {
namespace {

constexpr int kTile = 32;
constexpr int kWarps = 4;
constexpr int kQPerWarp = 4;
constexpr int kQPerBlock = kWarps * kQPerWarp;

size_t smem_bytes(int64_t d) {
  return static_cast<size_t>(kQPerBlock * d) * 4 + static_cast<size_t>(kTile * (d + 2)) * 2 +
         static_cast<size_t>(kTile * d) * 2;
}

// DPL: accumulator dims per lane (head_dim <= 32 * DPL).
template <int DPL>
__global__ void __launch_bounds__(kWarps * 32) attention_kernel(AttentionArgs a) {
  extern __shared__ float smem[];
  pdl_begin();
  const int d = static_cast<int>(a.head_dim);
  const int64_t group = a.n_heads / a.n_kv_heads, q_width = a.n_heads * d, kv_width = a.n_kv_heads * d;
  const int kvh = blockIdx.y, split = blockIdx.z, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t q0 = int64_t{blockIdx.x} * kQPerBlock;
  const int nq = static_cast<int>(min(int64_t{kQPerBlock}, a.rows * group - q0));
  float* qs = smem;                                                        // [kQPerBlock][d] fp32
  __half* ks = reinterpret_cast<__half*>(smem + kQPerBlock * d);           // [kTile][d + 2]
  __half* vs = ks + kTile * (d + 2);                                       // [kTile][d]
  const int kstride = d + 2;

  for (int idx = threadIdx.x; idx < nq * d; idx += blockDim.x) {
    const int j = idx / d, i = idx % d;
    const int64_t f = q0 + j, r = f / group, g = f % group;
    qs[idx] = a.q[r * q_width + (kvh * group + g) * d + i];
  }
  // Key range of the block's rows.
  const int64_t r_first = q0 / group, r_last = (q0 + nq - 1) / group;
  int64_t lo = INT64_MAX, hi = -1;
  for (int64_t r = r_first; r <= r_last; ++r) {
    const int64_t last = a.pos[r];
    const int64_t first = a.sliding_window > 0 ? max(int64_t{0}, last - a.sliding_window + 1) : 0;
    lo = min(lo, first);
    hi = max(hi, last);
  }
  const int64_t tiles = hi >= lo ? (hi - lo) / kTile + 1 : 0;
  const int64_t per = (tiles + a.splits - 1) / a.splits;
  const int64_t t_begin = min(tiles, split * per), t_end = min(tiles, (split + 1) * per);

  // This warp's queries: j = warp + kWarps * jj.
  int nw = 0;
  int64_t qfirst[kQPerWarp], qlast[kQPerWarp];
#pragma unroll
  for (int jj = 0; jj < kQPerWarp; ++jj) {
    const int j = warp + kWarps * jj;
    qfirst[jj] = 0;
    qlast[jj] = -1;
    if (j < nq) {
      nw = jj + 1;
      const int64_t r = (q0 + j) / group;
      qlast[jj] = a.pos[r];
      qfirst[jj] = a.sliding_window > 0 ? max(int64_t{0}, qlast[jj] - a.sliding_window + 1) : 0;
    }
  }
  float m[kQPerWarp], l[kQPerWarp], acc[kQPerWarp][DPL];
#pragma unroll
  for (int jj = 0; jj < kQPerWarp; ++jj) {
    m[jj] = -INFINITY;
    l[jj] = 0;
#pragma unroll
    for (int dd = 0; dd < DPL; ++dd) acc[jj][dd] = 0;
  }

  for (int64_t t = t_begin; t < t_end; ++t) {
    const int64_t t0 = lo + t * kTile;
    __syncthreads();  // previous tile fully consumed (and qs written, on the first pass)
    const int half_d = d / 2;
    for (int idx = threadIdx.x; idx < kTile * half_d; idx += blockDim.x) {
      const int key = idx / half_d, c2 = idx % half_d;
      __half2 kv = __floats2half2_rn(0.f, 0.f), vv = kv;
      if (t0 + key <= hi) {
        const int64_t off = (t0 + key) * kv_width + int64_t{kvh} * d + 2 * c2;
        kv = *reinterpret_cast<const __half2*>(a.k_cache + off);
        vv = *reinterpret_cast<const __half2*>(a.v_cache + off);
      }
      *reinterpret_cast<__half2*>(ks + key * kstride + 2 * c2) = kv;
      *reinterpret_cast<__half2*>(vs + key * d + 2 * c2) = vv;
    }
    __syncthreads();
    // Scores: lane = key.
    const int64_t key = t0 + lane;
    float s[kQPerWarp];
#pragma unroll
    for (int jj = 0; jj < kQPerWarp; ++jj) s[jj] = 0;
    const __half* krow = ks + lane * kstride;
    for (int i = 0; i < d; i += 2) {
      const float2 kf = __half22float2(*reinterpret_cast<const __half2*>(krow + i));
#pragma unroll
      for (int jj = 0; jj < kQPerWarp; ++jj) {
        if (jj < nw) {
          const float2 qf = *reinterpret_cast<const float2*>(qs + (warp + kWarps * jj) * d + i);
          s[jj] += qf.x * kf.x + qf.y * kf.y;
        }
      }
    }
    float p[kQPerWarp];
#pragma unroll
    for (int jj = 0; jj < kQPerWarp; ++jj) {
      p[jj] = 0;
      if (jj >= nw) continue;
      const bool valid = key >= qfirst[jj] && key <= qlast[jj];
      const float sc = valid ? s[jj] * a.scale : -INFINITY;
      const float m_new = fmaxf(m[jj], warp_max_xor(sc));
      if (m_new == -INFINITY) continue;  // warp-uniform: no valid key yet
      const float c = expf(m[jj] - m_new);
      p[jj] = valid ? expf(sc - m_new) : 0.0f;
      l[jj] = l[jj] * c + warp_sum_xor(p[jj]);
      m[jj] = m_new;
#pragma unroll
      for (int dd = 0; dd < DPL; ++dd) acc[jj][dd] *= c;
    }
    for (int kk = 0; kk < kTile; ++kk) {
      float v[DPL];
#pragma unroll
      for (int dd = 0; dd < DPL; ++dd) {
        const int i = lane + 32 * dd;
        v[dd] = i < d ? __half2float(vs[kk * d + i]) : 0.0f;
      }
#pragma unroll
      for (int jj = 0; jj < kQPerWarp; ++jj) {
        if (jj >= nw) continue;
        const float pk = __shfl_sync(0xffffffffu, p[jj], kk);
#pragma unroll
        for (int dd = 0; dd < DPL; ++dd) acc[jj][dd] += pk * v[dd];
      }
    }
  }

  const int64_t n_q = a.rows * a.n_heads;
#pragma unroll
  for (int jj = 0; jj < kQPerWarp; ++jj) {
    if (jj >= nw) continue;
    const int64_t f = q0 + warp + kWarps * jj, r = f / group, h = kvh * group + f % group;
    if (a.splits == 1) {
      const float inv = l[jj] > 0 ? 1.0f / l[jj] : 0.0f;
      float* o = a.out + r * q_width + h * d;
#pragma unroll
      for (int dd = 0; dd < DPL; ++dd)
        if (lane + 32 * dd < d) o[lane + 32 * dd] = acc[jj][dd] * inv;
    } else {
      float* o = a.partial + (int64_t{split} * n_q + r * a.n_heads + h) * (d + 2);
#pragma unroll
      for (int dd = 0; dd < DPL; ++dd)
        if (lane + 32 * dd < d) o[lane + 32 * dd] = acc[jj][dd];
      if (lane == 0) {
        o[d] = m[jj];
        o[d + 1] = l[jj];
      }
    }
  }
}

// One block per (row, head): merges the splits' partial (acc, m, l) with the arithmetic of
// cuda_attention_merge.cuh (warp 0 computes the weights, then every thread sums its dims with all
// 32 loads in flight). The earlier one-pass online merge chained every split's load behind the
// previous split's rescale, ~15.6 us per launch for 32 splits on the H100 (ncu, session 17), 10% of
// an 8B decode step; this form has two dependent load rounds (5.5 us under ncu). The decode kernel
// does the same merge itself in its last block per kv head when given counters (AttentionArgs::done).
__global__ void attention_merge_kernel(AttentionArgs a) {
  __shared__ float weight[kMergeMaxSplits];
  pdl_begin();
  const int64_t qi = blockIdx.x, n_q = a.rows * a.n_heads, d = a.head_dim;
  const int64_t r = qi / a.n_heads, h = qi % a.n_heads, stride = n_q * (d + 2);
  const float* base = a.partial + qi * (d + 2);
  if (threadIdx.x < 32) merge_split_weights(base, stride, a.splits, d, static_cast<int>(threadIdx.x), weight);
  __syncthreads();
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    float o[1];
    merge_split_dims(base, stride, a.splits, i, weight, o);
    a.out[r * a.n_heads * d + h * d + i] = o[0];
  }
}

template <int DPL>
void launch_fp32(const AttentionArgs& a, cudaStream_t stream) {
  const int64_t group = a.n_heads / a.n_kv_heads;
  const dim3 grid(static_cast<unsigned>((a.rows * group + kQPerBlock - 1) / kQPerBlock),
                  static_cast<unsigned>(a.n_kv_heads), static_cast<unsigned>(a.splits));
  launch("attention", attention_kernel<DPL>, grid, dim3(kWarps * 32), smem_bytes(a.head_dim), stream, a);
}

// ---- tensor-core prefill ----

constexpr int kTcWarps = 4, kTcRows = 16 * kTcWarps, kTcKeys = 64;

template <int D>
constexpr size_t tc_smem_bytes() {
  return static_cast<size_t>(kTcKeys * (D + 8) + D * (kTcKeys + 8)) * 2;
}

// Fragment layouts of m16n8k16: cuda_mma.cuh.
template <int D>
__global__ void __launch_bounds__(kTcWarps * 32) attention_tc_kernel(AttentionArgs a) {
  constexpr int KS = D + 8;        // K row stride (halves)
  constexpr int VS = kTcKeys + 8;  // Vᵀ row stride (halves)
  __shared__ __align__(16) __half ks[kTcKeys * KS];
  __shared__ __align__(16) __half vt[D * VS];
  pdl_begin();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int64_t group = a.n_heads / a.n_kv_heads, q_width = a.n_heads * D, kv_width = a.n_kv_heads * D;
  const int64_t nflat = a.rows * group;
  const int kvh = blockIdx.y;
  const int64_t q0 = (static_cast<int64_t>(gridDim.x) - 1 - blockIdx.x) * kTcRows;  // heaviest blocks first
  const int64_t wq0 = q0 + warp * 16;

  // Block key range [lo, hi] and this warp's rows.
  const int64_t nq = min(int64_t{kTcRows}, nflat - q0);
  int64_t lo = INT64_MAX, hi = -1;
  for (int64_t r = q0 / group; r <= (q0 + nq - 1) / group; ++r) {
    const int64_t last = a.pos[r];
    lo = min(lo, a.sliding_window > 0 ? max(int64_t{0}, last - a.sliding_window + 1) : int64_t{0});
    hi = max(hi, last);
  }
  int64_t rlast[2], rfirst[2], rrow[2], rhead[2];
  int64_t warp_hi = -1;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t f = wq0 + g + 8 * h;
    rlast[h] = -1;
    rfirst[h] = 0;
    rrow[h] = 0;
    rhead[h] = 0;
    if (f < nflat) {
      rrow[h] = f / group;
      rhead[h] = kvh * group + f % group;
      rlast[h] = a.pos[rrow[h]];
      rfirst[h] = a.sliding_window > 0 ? max(int64_t{0}, rlast[h] - a.sliding_window + 1) : 0;
    }
  }
  for (int j = 0; j < 16; ++j) {
    const int64_t f = wq0 + j;
    if (f < nflat) warp_hi = max(warp_hi, static_cast<int64_t>(a.pos[f / group]));
  }

  // Q fragments, scaled by scale·log2(e), fp16.
  const float qscale = a.scale * 1.4426950408889634f;
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int kc = 0; kc < D / 16; ++kc) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int h = i & 1, col = kc * 16 + 2 * t + ((i & 2) ? 8 : 0);
      float x0 = 0.0f, x1 = 0.0f;
      if (rlast[h] >= 0) {
        const float* qp = a.q + rrow[h] * q_width + rhead[h] * D + col;
        x0 = qp[0] * qscale;
        x1 = qp[1] * qscale;
      }
      qf[kc][i] = pack_half2(x0, x1);
    }
  }

  float o[D / 8][4];
#pragma unroll
  for (int nb = 0; nb < D / 8; ++nb) o[nb][0] = o[nb][1] = o[nb][2] = o[nb][3] = 0.0f;
  float mx[2] = {-INFINITY, -INFINITY}, lsum[2] = {0.0f, 0.0f};

  const int64_t tiles = hi >= lo ? (hi - lo) / kTcKeys + 1 : 0;
  for (int64_t ti = 0; ti < tiles; ++ti) {
    const int64_t t0 = lo + ti * kTcKeys;
    __syncthreads();  // the previous tile is consumed
    // Stage keys t0 .. t0+63: 16-byte chunks (8 halves) of K rows, and of V rows transposed.
    for (int idx = threadIdx.x; idx < kTcKeys * (D / 8); idx += kTcWarps * 32) {
      const int key = idx % kTcKeys, c8 = idx / kTcKeys;
      uint4 kv = make_uint4(0, 0, 0, 0), vv = kv;
      if (t0 + key <= hi) {
        const int64_t off = (t0 + key) * kv_width + int64_t{kvh} * D + c8 * 8;
        kv = *reinterpret_cast<const uint4*>(a.k_cache + off);
        vv = *reinterpret_cast<const uint4*>(a.v_cache + off);
      }
      *reinterpret_cast<uint4*>(ks + key * KS + c8 * 8) = kv;
      const __half* vh = reinterpret_cast<const __half*>(&vv);
#pragma unroll
      for (int i = 0; i < 8; ++i) vt[(c8 * 8 + i) * VS + key] = vh[i];
    }
    __syncthreads();
    if (t0 > warp_hi) continue;  // every key of the tile is after this warp's rows (warp-uniform)

    // S = Q Kᵀ for 8 blocks of 8 keys.
    float sc[kTcKeys / 8][4];
#pragma unroll
    for (int nb = 0; nb < kTcKeys / 8; ++nb) {
      sc[nb][0] = sc[nb][1] = sc[nb][2] = sc[nb][3] = 0.0f;
      const __half* krow = ks + (nb * 8 + g) * KS + 2 * t;
#pragma unroll
      for (int kc = 0; kc < D / 16; ++kc) {
        const uint32_t b0 = *reinterpret_cast<const uint32_t*>(krow + kc * 16);
        const uint32_t b1 = *reinterpret_cast<const uint32_t*>(krow + kc * 16 + 8);
        mma_m16n8k16(sc[nb], qf[kc], b0, b1);
      }
    }
    // Mask, row max, rescale.
    float tmax[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nb = 0; nb < kTcKeys / 8; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int h = e >> 1;
        const int64_t key = t0 + nb * 8 + 2 * t + (e & 1);
        const bool valid = key >= rfirst[h] && key <= rlast[h];
        sc[nb][e] = valid ? sc[nb][e] : -INFINITY;
        tmax[h] = fmaxf(tmax[h], sc[nb][e]);
      }
    float corr[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      tmax[h] = fmaxf(tmax[h], __shfl_xor_sync(0xffffffffu, tmax[h], 1));
      tmax[h] = fmaxf(tmax[h], __shfl_xor_sync(0xffffffffu, tmax[h], 2));
      const float m_new = fmaxf(mx[h], tmax[h]);
      corr[h] = m_new == -INFINITY ? 1.0f : exp2f(mx[h] - m_new);  // mx = -inf: nothing to rescale
      mx[h] = m_new;
      lsum[h] *= corr[h];
    }
#pragma unroll
    for (int nb = 0; nb < D / 8; ++nb) {
      o[nb][0] *= corr[0];
      o[nb][1] *= corr[0];
      o[nb][2] *= corr[1];
      o[nb][3] *= corr[1];
    }
    // P = exp2(S - m), summed per lane; fp16 A fragments for P·V (two key blocks per k-chunk).
    uint32_t pf[kTcKeys / 16][4];
#pragma unroll
    for (int nb = 0; nb < kTcKeys / 8; ++nb) {
      float p[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int h = e >> 1;
        p[e] = sc[nb][e] == -INFINITY ? 0.0f : exp2f(sc[nb][e] - mx[h]);
        lsum[h] += p[e];
      }
      pf[nb / 2][(nb & 1) * 2 + 0] = pack_half2(p[0], p[1]);  // rows g: a0 (even block) / a2 (odd)
      pf[nb / 2][(nb & 1) * 2 + 1] = pack_half2(p[2], p[3]);  // rows g + 8: a1 / a3
    }
    // O += P V: B fragments from Vᵀ rows (dims), k = keys.
#pragma unroll
    for (int nb = 0; nb < D / 8; ++nb) {
      const __half* vrow = vt + (nb * 8 + g) * VS + 2 * t;
#pragma unroll
      for (int kc = 0; kc < kTcKeys / 16; ++kc) {
        const uint32_t b0 = *reinterpret_cast<const uint32_t*>(vrow + kc * 16);
        const uint32_t b1 = *reinterpret_cast<const uint32_t*>(vrow + kc * 16 + 8);
        mma_m16n8k16(o[nb], pf[kc], b0, b1);
      }
    }
  }

  // l = the quad's sum; out = O / l (0 for rows with no valid key).
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    lsum[h] += __shfl_xor_sync(0xffffffffu, lsum[h], 1);
    lsum[h] += __shfl_xor_sync(0xffffffffu, lsum[h], 2);
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (rlast[h] < 0) continue;
    const float inv = lsum[h] > 0 ? 1.0f / lsum[h] : 0.0f;
    float* orow = a.out + rrow[h] * q_width + rhead[h] * D + 2 * t;
#pragma unroll
    for (int nb = 0; nb < D / 8; ++nb) {
      orow[nb * 8] = o[nb][2 * h] * inv;
      orow[nb * 8 + 1] = o[nb][2 * h + 1] * inv;
    }
  }
}

// The kernel TRELLIS_CUDA_TC_ATTENTION asks for: 0 the fp32 kernel, 1 attention_tc_kernel, unset
// or anything else attention_flash_kernel. -1: not read yet.
std::atomic<int> g_kernel{-1};

AttentionKernel kernel_setting() {
  int v = g_kernel.load(std::memory_order_relaxed);
  if (v < 0) {
    const char* e = std::getenv("TRELLIS_CUDA_TC_ATTENTION");
    const std::string s = e ? e : "";
    const AttentionKernel k = s == "0" ? AttentionKernel::kFp32
                              : s == "1" ? AttentionKernel::kTensorCore
                                         : AttentionKernel::kFlash;
    int expected = -1;
    g_kernel.compare_exchange_strong(expected, static_cast<int>(k));
    v = g_kernel.load();
  }
  return static_cast<AttentionKernel>(v);
}

// Keys per flash-decoding split at least (TRELLIS_CUDA_ATTENTION_MIN_KEYS overrides it, 8..4096).
// 64 until session 22. At 257-320 keys on the 8B model, 16 (32 splits) decoded 1.013x and 32
// (16 splits) 1.006x faster than 64 (8 splits), H100, 3 rounds each: the decode kernel is a
// serial instruction chain at one warp per scheduler, and more, shorter splits use more SMs
// (docs/BENCHMARKS.md session 22).
constexpr int64_t kMinKeysPerSplit = 16;
std::atomic<int> g_context_splits{-1};  // -1: not read yet; then 0 or 1

}  // namespace

int64_t attention_min_keys_per_split() {
  static const int64_t v = env_int("TRELLIS_CUDA_ATTENTION_MIN_KEYS", kMinKeysPerSplit, 8, 4096);
  return v;
}

bool attention_context_splits() {
  return cached_switch(g_context_splits, "TRELLIS_CUDA_ATTENTION_CONTEXT_SPLITS", true);
}

void set_attention_context_splits(bool on) { g_context_splits.store(on ? 1 : 0); }

int attention_splits(int64_t rows, int64_t n_heads, int64_t n_kv_heads, int sm_count, int64_t keys) {
  const int64_t blocks = (rows * (n_heads / n_kv_heads) + kQPerBlock - 1) / kQPerBlock * n_kv_heads;
  if (blocks >= sm_count) return 1;
  int64_t s = (2 * int64_t{sm_count} + blocks - 1) / blocks;
  const int64_t most = rows == 1 && attention_cluster() && attention_cluster_device() ? kAttentionMaxClusterSplits : 32;
  s = s < most ? s : most;
  if (keys > 0 && attention_context_splits()) {
    // At least attention_min_keys_per_split() keys per split, the cap a power of two (a captured
    // graph is keyed by its split count: a decode re-captures at 5 context lengths, not every step).
    int64_t cap = 1;
    while (cap < s && cap * attention_min_keys_per_split() < keys) cap *= 2;
    s = s < cap ? s : cap;
  }
  return static_cast<int>(s);
}

int64_t attention_partial_floats(const AttentionArgs& a) {
  return a.splits <= 1 ? 0 : int64_t{a.splits} * a.rows * a.n_heads * (a.head_dim + 2);
}

void attention_prepare() {
  check(cudaFuncSetAttribute(attention_kernel<8>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(smem_bytes(kAttentionMaxHeadDim))),
        "attention (shared memory limit)");
  attention_flash_prepare();
}

AttentionKernel attention_kernel_setting() { return kernel_setting(); }

void set_attention_kernel(AttentionKernel k) { g_kernel.store(static_cast<int>(k)); }

AttentionKernel attention_kernel_for(int64_t rows, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                                     int splits) {
  const AttentionKernel want = kernel_setting();
  const bool tc = splits == 1 && (head_dim == 64 || head_dim == 128) && n_kv_heads > 0 &&
                  rows * (n_heads / n_kv_heads) >= kTcRows;
  if (want == AttentionKernel::kFp32 || !tc) return AttentionKernel::kFp32;
  if (want == AttentionKernel::kFlash && attention_flash_fits(rows, n_heads, n_kv_heads, head_dim))
    return AttentionKernel::kFlash;
  return AttentionKernel::kTensorCore;
}

bool attention_uses_tensor_cores(int64_t rows, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, int splits) {
  return attention_kernel_for(rows, n_heads, n_kv_heads, head_dim, splits) != AttentionKernel::kFp32;
}

bool attention_takes_decode_kernel(const AttentionArgs& a) {
  return (reinterpret_cast<uintptr_t>(a.k_cache) | reinterpret_cast<uintptr_t>(a.v_cache) |
          reinterpret_cast<uintptr_t>(a.q)) % 16 == 0 &&
         attention_uses_decode_kernel(a.rows, a.n_heads, a.n_kv_heads, a.head_dim);
}

void attention(const AttentionArgs& a, cudaStream_t stream) {
  if (a.rows <= 0) return;
  if (a.head_dim > kAttentionMaxHeadDim || a.head_dim % 2 != 0)
    raise(ErrorKind::kUnsupported, "CUDA attention: head_dim " + std::to_string(a.head_dim) +
                                       " is not supported (even, at most 256)");
  if (a.splits > kMergeMaxSplits)
    raise(ErrorKind::kUnsupported, "CUDA attention: " + std::to_string(a.splits) + " key-range splits (at most " +
                                       std::to_string(kMergeMaxSplits) + ")");
  const bool aligned = (reinterpret_cast<uintptr_t>(a.k_cache) | reinterpret_cast<uintptr_t>(a.v_cache)) % 16 == 0;
  const bool decode = attention_takes_decode_kernel(a);
  if (a.cluster && (!decode || a.splits < 2 || a.splits > kAttentionMaxClusterSplits ||
                    (a.cluster != 4 && a.cluster != 8 && a.cluster != 16)))
    raise(ErrorKind::kInternal, "CUDA attention: a cluster launch that is not the one-row decode kernel's");
  if (a.rope_k && (!decode || (a.splits > 1 && !a.done && !a.q_done && !a.cluster)))
    raise(ErrorKind::kInternal, "CUDA attention: rope folded into a launch that is not the one-row decode kernel");
  const AttentionKernel kernel =
      aligned ? attention_kernel_for(a.rows, a.n_heads, a.n_kv_heads, a.head_dim, a.splits) : AttentionKernel::kFp32;
  if (!decode && kernel == AttentionKernel::kFlash) {
    attention_flash(a, stream);
    return;
  }
  if (!decode && kernel == AttentionKernel::kTensorCore) {
    const dim3 grid(static_cast<unsigned>((a.rows * (a.n_heads / a.n_kv_heads) + kTcRows - 1) / kTcRows),
                    static_cast<unsigned>(a.n_kv_heads));
    if (a.head_dim == 64)
      launch("attention (tensor cores)", attention_tc_kernel<64>, grid, dim3(kTcWarps * 32), 0, stream, a);
    else
      launch("attention (tensor cores)", attention_tc_kernel<128>, grid, dim3(kTcWarps * 32), 0, stream, a);
    return;
  }
  // The kernels that may split the key range (flash-decoding): the one-row decode kernel and the
  // fp32 kernel; both leave partial (acc, m, l) for the merge when splits > 1.
  if (decode)
    attention_decode(a, stream);
  else if (a.head_dim <= 64)
    launch_fp32<2>(a, stream);
  else if (a.head_dim <= 128)
    launch_fp32<4>(a, stream);
  else
    launch_fp32<8>(a, stream);
  check_launch("attention");
  if (a.splits > 1 && !(decode && (a.done || a.cluster))) {
    launch("attention (merge of splits)", attention_merge_kernel, dim3(static_cast<unsigned>(a.rows * a.n_heads)),
           dim3(128), 0, stream, a);
  }
}

}  // namespace trellis::cuda
