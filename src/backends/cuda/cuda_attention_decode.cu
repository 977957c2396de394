// backends/cuda/cuda_attention_decode.cu: attention for one query row (batch-1 decode) over the
// fp16 KV cache, built to stream the cache at memory speed (contract: cuda_ops.h attention()).
//
// Why a separate kernel: the general kernel (cuda_attention.cu) stages 32-key tiles in shared
// memory behind two barriers per tile and gives each warp one query whose dot products are a
// serial chain over head_dim; with one row per step it took ~50 µs per layer at 2048 tokens of
// context on the H200 (ncu), ~25x what reading the 8 MB of K and V takes.
//
// Shape: grid (splits, kv heads), 4 warps per block (the cluster form: 8 by default); split s
// covers a contiguous key range.
//   * Lanes own 8 dims each (one 16-byte load of K and of V per key), so D/8 lanes cover a key and
//     a warp takes 32/(D/8) keys per step; keys go straight from global memory to registers, the
//     next step's loads issued before the current step's math (no shared memory, no barriers).
//   * The G query heads of the kv head (GQA group, G <= 4) live in registers, pre-scaled by
//     scale·log2(e); scores are reduced over the key's D/8 lanes with xor shuffles, and each key
//     slot keeps its own online softmax (m, l, acc) in base 2.
//   * At the end the key slots of a warp merge by shuffles, the 4 warps through shared memory;
//     the block writes its (acc, m, l) to `partial` for attention_merge_kernel (m converted back to
//     natural-log units), or the normalised output when there is one split. Given counters
//     (AttentionArgs::done), the kv head's last block to finish does that merge itself instead.
//   * The cluster form (AttentionArgs::cluster, sm_90+, the default there): the kv head's blocks
//     are one thread-block cluster; each keeps its (acc, m, l) in shared memory and, after a
//     cluster barrier, computes 1/splits of the outputs from all blocks' parts through
//     distributed shared memory. No partials, counters or merge launch (docs/CUDA.md).
// Accuracy: fp32 throughout (fp16 cache values are exact in fp32); differs from the general
// kernel only in summation order and exp2 vs exp.
#include <cooperative_groups.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "backends/cuda/cuda_attention_merge.cuh"
#include "backends/cuda/cuda_launch.cuh"
#include "backends/cuda/cuda_ops.h"
#include "backends/cuda/cuda_rope.cuh"
#include "backends/cuda/cuda_util.h"
#include "core/env.h"

namespace trellis::cuda {
namespace {

constexpr int kSplitWarps = 4;  // per block of the split form (the cluster form: attention_cluster_warps())
constexpr int kMaxGroup = 4;
constexpr float kLog2e = 1.4426950408889634f;

// Switches read from the environment on first use (cached_switch), overridable by the test hooks
// below.
std::atomic<int> g_decode{-1};
std::atomic<int> g_merge{-1};
std::atomic<int> g_rope{-1};
std::atomic<int> g_cluster{-1};
std::atomic<int> g_cluster_warps{-1};  // -1: the environment's setting

bool decode_enabled() { return cached_switch(g_decode, "TRELLIS_CUDA_DECODE_ATTENTION", true); }

__device__ __forceinline__ void to_floats(const uint4& u, float f[8]) {
  const __half2* h = reinterpret_cast<const __half2*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 t = __half22float2(h[i]);
    f[2 * i] = t.x;
    f[2 * i + 1] = t.y;
  }
}

// (m, l, acc) of two disjoint key sets -> their union (base-2 online softmax state).
template <int G>
__device__ __forceinline__ void merge_state(float m[G], float l[G], float acc[G][8], const float om[G],
                                            const float ol[G], const float oacc[G][8]) {
#pragma unroll
  for (int g = 0; g < G; ++g) {
    const float mx = fmaxf(m[g], om[g]);
    if (mx == -INFINITY) continue;  // both empty
    const float c = exp2f(m[g] - mx), oc = exp2f(om[g] - mx);
    l[g] = l[g] * c + ol[g] * oc;
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[g][i] = acc[g][i] * c + oacc[g][i] * oc;
    m[g] = mx;
  }
}

// Cluster: the kv head's `splits` blocks form one thread-block cluster (AttentionArgs::cluster) and
// merge through distributed shared memory at the end instead of writing `partial`. W: warps per
// block (4; the cluster form 4, 8 or 16: AttentionArgs::cluster).
template <int D, int G, bool Cluster, int W>
__global__ void __launch_bounds__(W * 32) attention_decode_kernel(AttentionArgs a) {
  constexpr int kWarps = W;  // this instantiation's warps per block
  constexpr int kLanesPerKey = D / 8, kKeysPerWarp = 32 / kLanesPerKey, kKeysPerStep = kWarps * kKeysPerWarp;
  __shared__ float red[kWarps][G][D + 2];  // per warp: acc, then m and l
  pdl_begin();
  const int split = blockIdx.x, kvh = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int slot = lane / kLanesPerKey, dl = lane % kLanesPerKey;
  const int64_t kv_width = a.n_kv_heads * D;
  const int64_t last = a.pos[0];
  const int64_t first = a.sliding_window > 0 ? max(int64_t{0}, last - a.sliding_window + 1) : 0;
  const int64_t per = (last - first + 1 + a.splits - 1) / a.splits;
  const int64_t kb = first + split * per, ke = min(last + 1, kb + per);  // keys [kb, ke)
  const int64_t steps = ke > kb ? (ke - kb + kKeysPerStep - 1) / kKeysPerStep : 0;

  const uint16_t* kp = a.k_cache + int64_t{kvh} * D + dl * 8;
  const uint16_t* vp = a.v_cache + int64_t{kvh} * D + dl * 8;
  const int64_t key0 = kb + warp * kKeysPerWarp + slot;
  auto load = [&](int64_t step, uint4& kv, uint4& vv) {
    const int64_t key = key0 + step * kKeysPerStep;
    if (step < steps && key < ke) {
      kv = *reinterpret_cast<const uint4*>(kp + key * kv_width);
      vv = *reinterpret_cast<const uint4*>(vp + key * kv_width);
    } else {
      kv = vv = make_uint4(0, 0, 0, 0);
    }
  };
  uint4 kn, vn;
  // The first keys' loads go out before the rope work, except in the block that stores the new key
  // (it loads after its store and the barrier below).
  const bool stores_key = a.rope_k != nullptr && kb <= last && last < ke;
  if (!stores_key) load(0, kn, vn);

  // RoPE and the KV store folded in (AttentionArgs::rope_k): every block rotates its group's q
  // heads into shared memory; the block whose key range holds the new position rotates k and stores
  // k and v there before its first key load (the block's own loads see them after the barrier;
  // no other block reads that key). Same arithmetic per element as rope_qk_store_kernel.
  __shared__ __align__(16) float q_rot[G][D];
  const bool rope = a.rope_k != nullptr;
  unsigned q_ticket = 0;  // thread 0: this block's place in the q_done count
  // With rope folded in, this launch owns q and the caches (AttentionArgs::rope_k).
  float* const q_out = const_cast<float*>(a.q) + int64_t{kvh} * G * D;
  if (rope) {
    constexpr int kHalf = D / 2;
    const float p = static_cast<float>(last);
    for (int t = threadIdx.x; t < G * kHalf; t += kWarps * 32) {
      const int g = t / kHalf, i = t % kHalf;
      const float* row = a.q + (int64_t{kvh} * G + g) * D;
      rope_pair(row[i], row[i + kHalf], p, a.rope_inv_freq[i], a.rope_scaling, q_rot[g][i], q_rot[g][i + kHalf]);
    }
    if (stores_key) {
      __half* kc = reinterpret_cast<__half*>(const_cast<uint16_t*>(a.k_cache)) + last * kv_width + int64_t{kvh} * D;
      __half* vc = reinterpret_cast<__half*>(const_cast<uint16_t*>(a.v_cache)) + last * kv_width + int64_t{kvh} * D;
      float* row = a.rope_k + int64_t{kvh} * D;
      for (int i = threadIdx.x; i < kHalf; i += kWarps * 32) {
        float y1, y2;
        rope_pair(row[i], row[i + kHalf], p, a.rope_inv_freq[i], a.rope_scaling, y1, y2);
        row[i] = y1;  // k rotated in place, as rope() leaves it (only this block reads it)
        row[i + kHalf] = y2;
        kc[i] = __float2half_rn(y1);
        kc[i + kHalf] = __float2half_rn(y2);
      }
      for (int i = threadIdx.x; i < D; i += kWarps * 32) vc[i] = __float2half_rn(a.rope_v[int64_t{kvh} * D + i]);
    }
    __syncthreads();
    // q rotated in place as rope() leaves it, once no block can still read it unrotated: here with
    // one split; with several, by the block that merges or the kv head's last block to be counted
    // in q_done (below). The count goes out now (every thread's reads of q are done: the barrier
    // above) and its answer is needed only at the end.
    if (a.splits == 1)
      for (int t = threadIdx.x; t < G * D; t += kWarps * 32) q_out[t] = q_rot[t / D][t % D];
    else if (!a.done && a.q_done && threadIdx.x == 0)
      q_ticket = atomicAdd(a.q_done + kvh, 1u);
  }

  if (stores_key) load(0, kn, vn);

  float q[G][8], m[G], l[G], acc[G][8];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    const float4* qp = reinterpret_cast<const float4*>(rope ? &q_rot[g][dl * 8] : a.q + (int64_t{kvh} * G + g) * D + dl * 8);
    const float4 q0 = qp[0], q1 = qp[1];
    const float s = a.scale * kLog2e;
    q[g][0] = q0.x * s, q[g][1] = q0.y * s, q[g][2] = q0.z * s, q[g][3] = q0.w * s;
    q[g][4] = q1.x * s, q[g][5] = q1.y * s, q[g][6] = q1.z * s, q[g][7] = q1.w * s;
    m[g] = -INFINITY;
    l[g] = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[g][i] = 0.0f;
  }

  for (int64_t step = 0; step < steps; ++step) {  // uniform over the block: shuffles below are safe
    const uint4 kc = kn, vc = vn;
    load(step + 1, kn, vn);
    const bool valid = key0 + step * kKeysPerStep < ke;
    float kf[8], vf[8];
    to_floats(kc, kf);
    to_floats(vc, vf);
#pragma unroll
    for (int g = 0; g < G; ++g) {
      float s = 0.0f;
#pragma unroll
      for (int i = 0; i < 8; ++i) s = fmaf(q[g][i], kf[i], s);
#pragma unroll
      for (int o = kLanesPerKey / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
      if (valid) {
        const float mx = fmaxf(m[g], s);
        const float c = exp2f(m[g] - mx), p = exp2f(s - mx);
        l[g] = l[g] * c + p;
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[g][i] = fmaf(p, vf[i], acc[g][i] * c);
        m[g] = mx;
      }
    }
  }

  // Merge the warp's key slots (lanes dl, dl + kLanesPerKey, ...), then the warps.
#pragma unroll
  for (int o = kLanesPerKey; o < 32; o <<= 1) {
    float om[G], ol[G], oacc[G][8];
#pragma unroll
    for (int g = 0; g < G; ++g) {
      om[g] = __shfl_xor_sync(0xffffffffu, m[g], o);
      ol[g] = __shfl_xor_sync(0xffffffffu, l[g], o);
#pragma unroll
      for (int i = 0; i < 8; ++i) oacc[g][i] = __shfl_xor_sync(0xffffffffu, acc[g][i], o);
    }
    merge_state<G>(m, l, acc, om, ol, oacc);
  }
  if (slot == 0) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
#pragma unroll
      for (int i = 0; i < 8; ++i) red[warp][g][dl * 8 + i] = acc[g][i];
      if (dl == 0) red[warp][g][D] = m[g], red[warp][g][D + 1] = l[g];
    }
  }
  __syncthreads();
  const int64_t n_q = a.n_heads;  // one row
  __shared__ float cpart[Cluster ? G : 1][D + 2];  // Cluster: the block's merged acc, m (base 2), l per head
  for (int idx = threadIdx.x; idx < G * (D + 2); idx += kWarps * 32) {
    const int g = idx / (D + 2), i = idx % (D + 2);
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, red[w][g][D]);
    float sum = 0.0f, lsum = 0.0f;
    if (mx != -INFINITY) {
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        const float c = exp2f(red[w][g][D] - mx);
        lsum += red[w][g][D + 1] * c;
        if (i < D) sum += red[w][g][i] * c;
      }
    }
    const int64_t h = int64_t{kvh} * G + g;
    if constexpr (Cluster) {
      cpart[g][i] = i < D ? sum : i == D ? mx : lsum;
    } else if (a.splits == 1) {
      if (i < D) a.out[h * D + i] = lsum > 0 ? sum / lsum : 0.0f;
    } else {
      float* p = a.partial + (int64_t{split} * n_q + h) * (D + 2);
      if (i < D) p[i] = sum;
      else if (i == D) p[D] = mx == -INFINITY ? -INFINITY : mx / kLog2e;  // natural-log units
      else p[D + 1] = lsum;
    }
  }
  if constexpr (Cluster) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    // The cluster's merge: once every block's cpart is complete (the cluster barrier, release /
    // acquire), block `rank` computes outputs rank, rank + splits, ... of the group's G·D from
    // all blocks' parts, read through distributed shared memory, in split order. The second
    // barrier keeps every block resident until the others have read its part.
    namespace cg = cooperative_groups;
    const cg::cluster_group cl = cg::this_cluster();
    cl.sync();
    const int n = a.splits, rank = static_cast<int>(cl.block_rank());
    for (int idx = rank + n * static_cast<int>(threadIdx.x); idx < G * D; idx += n * kWarps * 32) {
      const int g = idx / D, i = idx % D;
      float ms[kAttentionMaxClusterSplits], ls[kAttentionMaxClusterSplits], vs[kAttentionMaxClusterSplits];
#pragma unroll
      for (int r = 0; r < kAttentionMaxClusterSplits; ++r) {
        if (r < n) {
          const float* p = cl.map_shared_rank(&cpart[g][0], r);
          ms[r] = p[D];
          ls[r] = p[D + 1];
          vs[r] = p[i];
        }
      }
      float mx = -INFINITY;
#pragma unroll
      for (int r = 0; r < kAttentionMaxClusterSplits; ++r)
        if (r < n && ls[r] > 0) mx = fmaxf(mx, ms[r]);
      float total = 0.0f, o = 0.0f;
#pragma unroll
      for (int r = 0; r < kAttentionMaxClusterSplits; ++r)
        if (r < n && ls[r] > 0) {
          const float w = exp2f(ms[r] - mx);
          total = fmaf(ls[r], w, total);
          o = fmaf(vs[r], w, o);
        }
      a.out[(int64_t{kvh} * G + g) * D + i] = total > 0 ? o / total : 0.0f;
    }
    // Every block of the kv head has read q (the barrier above): the first writes it back rotated.
    if (rope && rank == 0)
      for (int t = threadIdx.x; t < G * D; t += kWarps * 32) q_out[t] = q_rot[t / D][t % D];
    cl.sync();
#else
    __trap();  // cluster launches need sm_90 (attention_cluster_usable)
#endif
    return;
  }
  if (rope && a.splits > 1 && !a.done && a.q_done) {
    __shared__ bool writes_q;
    if (threadIdx.x == 0) writes_q = q_ticket == static_cast<unsigned>(a.splits - 1);
    __syncthreads();
    if (writes_q) {
      for (int t = threadIdx.x; t < G * D; t += kWarps * 32) q_out[t] = q_rot[t / D][t % D];
      if (threadIdx.x == 0) a.q_done[kvh] = 0;  // ready for the next launch (graph replays)
    }
  }
  if (a.splits == 1 || !a.done) return;

  // The merge without its own launch: the last of the kv head's split blocks to finish (counted
  // in a.done) merges the group's G heads, warp g computing head g's split weights, with the
  // arithmetic attention_merge_kernel uses (cuda_attention_merge.cuh: the same bits).
  static_assert(kMaxGroup <= kWarps, "one warp per head of the group computes its merge weights");
  __shared__ float weight[G][kMergeMaxSplits];
  __shared__ bool merges;
  __threadfence();  // this block's partials are visible device-wide before it is counted
  __syncthreads();
  if (threadIdx.x == 0) merges = atomicAdd(a.done + kvh, 1u) == static_cast<unsigned>(a.splits - 1);
  __syncthreads();
  if (!merges) return;
  __threadfence();
  const int64_t stride = n_q * (D + 2);
  const float* base = a.partial + int64_t{kvh} * G * (D + 2);
  if (warp < G) merge_split_weights(base + warp * (D + 2), stride, a.splits, D, lane, weight[warp]);
  __syncthreads();
  for (int idx = 2 * threadIdx.x; idx < G * D; idx += 2 * kWarps * 32) {
    const int g = idx / D, i = idx % D;
    float o[2];
    merge_split_dims(base + g * (D + 2), stride, a.splits, i, weight[g], o);
    *reinterpret_cast<float2*>(a.out + (int64_t{kvh} * G + g) * D + i) = make_float2(o[0], o[1]);
  }
  if (rope)
    for (int t = threadIdx.x; t < G * D; t += kWarps * 32) q_out[t] = q_rot[t / D][t % D];
  if (threadIdx.x == 0) a.done[kvh] = 0;  // ready for the next launch (graph replays)
}

using DecodeFn = void (*)(AttentionArgs);

template <int D, bool Cluster, int W>
DecodeFn decode_fn(int64_t group) {
  switch (group) {
    case 1: return attention_decode_kernel<D, 1, Cluster, W>;
    case 2: return attention_decode_kernel<D, 2, Cluster, W>;
    case 3: return attention_decode_kernel<D, 3, Cluster, W>;
    default: return attention_decode_kernel<D, 4, Cluster, W>;
  }
}

// The cluster form's block sizes: 4, 8 or 16 warps (the largest not above `warps`).
int warps_form(int warps) { return warps >= 16 ? 16 : warps >= 8 ? 8 : 4; }

// The kernel for `a`: the split form, or the cluster form with a.cluster warps per block.
DecodeFn pick(const AttentionArgs& a) {
  const int64_t group = a.n_heads / a.n_kv_heads;
  const bool d64 = a.head_dim == 64;
  switch (a.cluster) {
    case 0: return d64 ? decode_fn<64, false, kSplitWarps>(group) : decode_fn<128, false, kSplitWarps>(group);
    case 4: return d64 ? decode_fn<64, true, 4>(group) : decode_fn<128, true, 4>(group);
    case 8: return d64 ? decode_fn<64, true, 8>(group) : decode_fn<128, true, 8>(group);
    default: return d64 ? decode_fn<64, true, 16>(group) : decode_fn<128, true, 16>(group);
  }
}

// A launch configuration with a.splits blocks per kv head in one cluster along x; attr must hold
// two entries (the second is left for the caller).
cudaLaunchConfig_t cluster_config(const AttentionArgs& a, cudaLaunchAttribute* attr) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(a.splits), static_cast<unsigned>(a.n_kv_heads));
  cfg.blockDim = dim3(static_cast<unsigned>(a.cluster * 32));
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = static_cast<unsigned>(a.splits);
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cfg;
}

}  // namespace

void set_decode_attention(bool on) { g_decode.store(on ? 1 : 0); }

// Off by default: 0.992x on the 8B decode at context 256 (H200, session 19), no gain.
bool attention_merge_fused() { return cached_switch(g_merge, "TRELLIS_CUDA_ATTENTION_MERGE", false); }

void set_attention_merge_fused(bool on) { g_merge.store(on ? 1 : 0); }

bool rope_attention_fold() { return cached_switch(g_rope, "TRELLIS_CUDA_ROPE_ATTENTION", true); }

void set_rope_attention_fold(bool on) { g_rope.store(on ? 1 : 0); }

bool attention_uses_decode_kernel(int64_t rows, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim) {
  return decode_enabled() && rows == 1 && (head_dim == 64 || head_dim == 128) && n_kv_heads > 0 &&
         n_heads % n_kv_heads == 0 && n_heads / n_kv_heads <= kMaxGroup;
}

// On by default where usable (sm_90+). H100, session 23 (docs/BENCHMARKS.md), 8B decode at
// context 256: 16 splits of 4 warps in clusters 1.007x against 32 splits and the merge launch, and
// blocks of 8 warps 1.010x on top.
bool attention_cluster() { return cached_switch(g_cluster, "TRELLIS_CUDA_ATTENTION_CLUSTER", true); }

void set_attention_cluster(bool on) { g_cluster.store(on ? 1 : 0); }

int attention_cluster_warps() {
  const int set = g_cluster_warps.load(std::memory_order_relaxed);
  if (set > 0) return set;
  static const int w = warps_form(static_cast<int>(env_int("TRELLIS_CUDA_ATTENTION_CLUSTER_WARPS", 8, 4, 16)));
  return w;
}

void set_attention_cluster_warps(int warps) { g_cluster_warps.store(warps <= 0 ? -1 : warps_form(warps)); }

namespace {

// Clusters of more than 8 blocks (the portable size) need the kernel's opt-in, once per kernel.
bool allow_nonportable_clusters(DecodeFn fn) {
  static std::mutex mu;
  static std::vector<DecodeFn> allowed;
  std::lock_guard<std::mutex> lock(mu);
  if (std::find(allowed.begin(), allowed.end(), fn) != allowed.end()) return true;
  if (cudaFuncSetAttribute(fn, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  allowed.push_back(fn);
  return true;
}

}  // namespace

bool attention_cluster_device() {
  constexpr int kDevices = 64;
  static std::atomic<int> major[kDevices] = {};  // 0: not read yet
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kDevices) {
    cudaGetLastError();
    return false;
  }
  int cc = major[device].load(std::memory_order_relaxed);
  if (cc == 0) {
    if (cudaDeviceGetAttribute(&cc, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    major[device].store(cc);
  }
  return cc >= 9;
}

bool attention_cluster_usable(const AttentionArgs& a) {
  if (!attention_cluster() || a.splits < 2 || a.splits > kAttentionMaxClusterSplits) return false;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  AttentionArgs c = a;
  c.cluster = attention_cluster_warps();
  const DecodeFn fn = pick(c);
  // Whether one cluster of this kernel, block size and split count can be resident on this
  // device (compute capability 9.0+, and the cluster size within what the GPU schedules: some
  // sm_90+ parts may not take 16), asked once per combination and outside any graph capture (the
  // backend calls this when it records the op).
  struct Known {
    int device;
    DecodeFn fn;
    int splits;
    bool ok;
  };
  static std::mutex mu;
  static std::vector<Known> known;
  {
    std::lock_guard<std::mutex> lock(mu);
    for (const Known& k : known)
      if (k.device == device && k.fn == fn && k.splits == a.splits) return k.ok;
  }
  bool ok = attention_cluster_device() && (a.splits <= 8 || allow_nonportable_clusters(fn));
  if (ok) {
    cudaLaunchAttribute attr[2];
    const cudaLaunchConfig_t cfg = cluster_config(c, attr);
    int clusters = 0;
    ok = cudaOccupancyMaxActiveClusters(&clusters, reinterpret_cast<const void*>(fn), &cfg) == cudaSuccess &&
         clusters > 0;
  }
  cudaGetLastError();  // a refused query leaves no sticky error behind
  std::lock_guard<std::mutex> lock(mu);
  known.push_back({device, fn, a.splits, ok});
  return ok;
}

void attention_decode(const AttentionArgs& a, cudaStream_t stream) {
  const DecodeFn fn = pick(a);
  if (!a.cluster) {
    launch("attention (decode)", fn, dim3(static_cast<unsigned>(a.splits), static_cast<unsigned>(a.n_kv_heads)),
           dim3(kSplitWarps * 32), 0, stream, a);
    return;
  }
  // Beyond the portable cluster size the kernel must have opted in (attention_cluster_usable did,
  // when the op was recorded).
  if (a.splits > 8 && !allow_nonportable_clusters(fn))
    raise(ErrorKind::kInternal, "CUDA attention (decode): clusters of " + std::to_string(a.splits) +
                                    " blocks refused by the device");
  cudaLaunchAttribute attr[2];
  cudaLaunchConfig_t cfg = cluster_config(a, attr);
  cfg.stream = stream;
  if (pdl_enabled()) {
    attr[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[1].val.programmaticStreamSerializationAllowed = 1;
    cfg.numAttrs = 2;
  }
  check(cudaLaunchKernelEx(&cfg, fn, a), "attention (decode, cluster)");
}

}  // namespace trellis::cuda
