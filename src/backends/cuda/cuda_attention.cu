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
// Non-goals: tensor-core QKᵀ (the models this serves are small or decode-bound), head_dim > 256.
#include <cuda_fp16.h>

#include <cmath>

#include "backends/cuda/cuda_ops.h"
#include "backends/cuda/cuda_util.h"

namespace trellis::cuda {
namespace {

constexpr int kTile = 32;
constexpr int kWarps = 4;
constexpr int kQPerWarp = 4;
constexpr int kQPerBlock = kWarps * kQPerWarp;

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

size_t smem_bytes(int64_t d) {
  return static_cast<size_t>(kQPerBlock * d) * 4 + static_cast<size_t>(kTile * (d + 2)) * 2 +
         static_cast<size_t>(kTile * d) * 2;
}

// DPL: accumulator dims per lane (head_dim <= 32 * DPL).
template <int DPL>
__global__ void __launch_bounds__(kWarps * 32) attention_kernel(AttentionArgs a) {
  extern __shared__ float smem[];
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
      const float m_new = fmaxf(m[jj], warp_max(sc));
      if (m_new == -INFINITY) continue;  // warp-uniform: no valid key yet
      const float c = expf(m[jj] - m_new);
      p[jj] = valid ? expf(sc - m_new) : 0.0f;
      l[jj] = l[jj] * c + warp_sum(p[jj]);
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

// One block per (row, head): merges the splits' partial (acc, m, l).
__global__ void attention_merge_kernel(AttentionArgs a) {
  const int64_t qi = blockIdx.x, n_q = a.rows * a.n_heads, d = a.head_dim;
  const int64_t r = qi / a.n_heads, h = qi % a.n_heads;
  float mx = -INFINITY;
  for (int s = 0; s < a.splits; ++s) mx = fmaxf(mx, a.partial[(s * n_q + qi) * (d + 2) + d]);
  float total = 0;
  for (int s = 0; s < a.splits; ++s) {
    const float* p = a.partial + (s * n_q + qi) * (d + 2);
    if (p[d + 1] > 0) total += p[d + 1] * expf(p[d] - mx);
  }
  const float inv = total > 0 ? 1.0f / total : 0.0f;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    float o = 0;
    for (int s = 0; s < a.splits; ++s) {
      const float* p = a.partial + (s * n_q + qi) * (d + 2);
      if (p[d + 1] > 0) o += p[i] * expf(p[d] - mx);
    }
    a.out[r * a.n_heads * d + h * d + i] = o * inv;
  }
}

template <int DPL>
void launch(const AttentionArgs& a, cudaStream_t stream) {
  const int64_t group = a.n_heads / a.n_kv_heads;
  const dim3 grid(static_cast<unsigned>((a.rows * group + kQPerBlock - 1) / kQPerBlock),
                  static_cast<unsigned>(a.n_kv_heads), static_cast<unsigned>(a.splits));
  attention_kernel<DPL><<<grid, kWarps * 32, smem_bytes(a.head_dim), stream>>>(a);
}

}  // namespace

int attention_splits(int64_t rows, int64_t n_heads, int64_t n_kv_heads, int sm_count) {
  const int64_t blocks = (rows * (n_heads / n_kv_heads) + kQPerBlock - 1) / kQPerBlock * n_kv_heads;
  if (blocks >= sm_count) return 1;
  const int64_t s = (2 * int64_t{sm_count} + blocks - 1) / blocks;
  return static_cast<int>(s < 32 ? s : 32);
}

int64_t attention_partial_floats(const AttentionArgs& a) {
  return a.splits <= 1 ? 0 : int64_t{a.splits} * a.rows * a.n_heads * (a.head_dim + 2);
}

void attention_prepare() {
  check(cudaFuncSetAttribute(attention_kernel<8>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(smem_bytes(kAttentionMaxHeadDim))),
        "attention (shared memory limit)");
}

void attention(const AttentionArgs& a, cudaStream_t stream) {
  if (a.rows <= 0) return;
  if (a.head_dim > kAttentionMaxHeadDim || a.head_dim % 2 != 0)
    raise(ErrorKind::kUnsupported, "CUDA attention: head_dim " + std::to_string(a.head_dim) +
                                       " is not supported (even, at most 256)");
  if (a.head_dim <= 64)
    launch<2>(a, stream);
  else if (a.head_dim <= 128)
    launch<4>(a, stream);
  else
    launch<8>(a, stream);
  check_launch("attention");
  if (a.splits > 1) {
    attention_merge_kernel<<<static_cast<unsigned>(a.rows * a.n_heads), 128, 0, stream>>>(a);
    check_launch("attention (merge of splits)");
  }
}

}  // namespace trellis::cuda
