// backends/cuda/cuda_ops.h: host-side launchers of the CUDA backend's kernels (cuda_ops.cu,
// cuda_attention.cu). Plain C++ so the backend's .cpp files can call them.
//
// Common contract: every pointer is a device pointer; activations are row-major fp32; each
// launcher only enqueues on `stream` (no sync, no allocation) so it may run inside CUDA graph
// capture; a launch error is raised as trellis::Error naming the op. Sizes are element counts.
// Per-op integer data that comes from the host (token ids, positions) is passed as device
// pointers to staged copies, so a captured graph can be replayed with new values.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"

namespace trellis::cuda {

// dst[i] = convert(src[i]) for i < n; src/dst dtype F32, F16 or BF16 (round to nearest even).
void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n, cudaStream_t stream);

// out [rows, dim] fp32 = table [vocab, dim] (F32/F16/BF16) at rows ids[r]. ids are not range
// checked (the model validates them).
void embedding(const void* table, DType table_dtype, const int32_t* ids, int64_t rows, int64_t dim, float* out,
               cudaStream_t stream);

// out = x / rms(x) * weight over each group of `group` consecutive elements; x and out [groups, group]
// (may alias), weight [group] fp32. fp32 sum of squares in a fixed reduction order.
void rms_norm(const float* x, const float* weight, float eps, int64_t groups, int64_t group, float* out,
              cudaStream_t stream);

// Fused residual add + RMSNorm: x += residual (in place, exactly as add()), then out = the norm of
// the new x (bit-identical to add() followed by rms_norm()). out must not alias x or residual.
void add_rms_norm(float* x, const float* residual, const float* weight, float eps, int64_t groups, int64_t group,
                  float* out, cudaStream_t stream);

// In place on x [rows, cols], heads of head_dim (even) per row, rotate-half; row r at position
// pos[r]: angle = fp32(pos) * inv_freq[i] (fp32, as the CPU reference), cos/sin in full precision,
// times `scaling`. inv_freq [head_dim / 2].
void rope(float* x, int64_t rows, int64_t cols, int64_t head_dim, const int32_t* pos, const float* inv_freq,
          float scaling, cudaStream_t stream);

// k_cache[pos[r], :] = fp16(k[r, :]), same for v; width elements per row.
void kv_store(const float* k, const float* v, const int32_t* pos, int64_t rows, int64_t width, uint16_t* k_cache,
              uint16_t* v_cache, cudaStream_t stream);

// The attention block's rope(q), rope(k) and, when k_cache is not null, kv_store(k, v) in one
// launch (the backend fuses them when recorded back to back): results bit-identical to the three
// ops. q [rows, q_cols] and k [rows, k_cols] are rotated in place; v and the caches are
// [rows / cache rows, k_cols].
void rope_qk_store(float* q, int64_t q_cols, float* k, int64_t k_cols, const float* v, int64_t rows, int64_t head_dim,
                   const int32_t* pos, const float* inv_freq, float scaling, uint16_t* k_cache, uint16_t* v_cache,
                   cudaStream_t stream);

// out = silu(gate) * up = gate / (1 + exp(-gate)) * up (out may alias gate or up).
void silu_mul(const float* gate, const float* up, float* out, int64_t n, cudaStream_t stream);
// x += y.
void add(float* x, const float* y, int64_t n, cudaStream_t stream);

// Quantizer calibration: xs [rows, cols] = x with every row that holds a non-finite value zeroed;
// stats[0] += finite rows, stats[1] += zeroed rows (fp32 counts, exact below 2^24).
void gram_filter(const float* x, int64_t rows, int64_t cols, float* xs, float* stats, cudaStream_t stream);

// Dense linear, decode shapes: y [m, out] = x [m, in] · Wᵀ (+ bias [out] fp32, may be null),
// W (out, in) fp16. fp32 activations and accumulation. m in 1..kGemvMaxRows. One warp per output
// row: the weight row streams once from DRAM while x stays in L1/L2. Vectorized (16-byte) loads
// when in % 8 == 0 and x is 16-byte aligned, scalar otherwise.
inline constexpr int64_t kGemvMaxRows = 8;
void dense_gemv_f16(const uint16_t* w, const float* x, const float* bias, int64_t m, int64_t in, int64_t out,
                    float* y, cudaStream_t stream);

// For the cuBLAS path of dense linears: x [m, k] fp32 -> xs [2m, k] fp16 with rows 0..m-1 = hi =
// fp16(x) and rows m..2m-1 = lo = fp16(x - hi), so hi + lo carries about 22 bits of x and two fp16
// GEMMs with fp32 accumulation give fp32-activation accuracy (the GEMV path's).
void split_f16(const float* x, int64_t m, int64_t k, uint16_t* xs, cudaStream_t stream);
// y [m, n] = bias broadcast over rows.
void fill_rows(float* y, const float* bias, int64_t m, int64_t n, cudaStream_t stream);

// Attention over the fp16 KV cache (see backend.h): q [rows, n_heads*head_dim] fp32, caches
// [max_ctx, n_kv_heads*head_dim] fp16, pos [rows] (device), out [rows, n_heads*head_dim].
struct AttentionArgs {
  const float* q = nullptr;
  const uint16_t* k_cache = nullptr;
  const uint16_t* v_cache = nullptr;
  const int32_t* pos = nullptr;
  float* out = nullptr;
  int64_t rows = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, sliding_window = 0;
  float scale = 0;
  // Key-range splits per block (flash-decoding); > 1 needs `partial` of
  // attention_partial_floats() floats. Chosen by attention_splits().
  int splits = 1;
  float* partial = nullptr;
  // Optional: n_kv_heads counters, zero between launches. Where the one-row decode kernel runs with
  // splits > 1, the last of a kv head's split blocks (counted here) merges the head group's
  // partials itself and resets its counter, so no attention_merge_kernel launch follows; the
  // output is bitwise the same (cuda_attention_merge.cuh). Ignored by the other kernels.
  unsigned* done = nullptr;
  // Optional, one-row decode kernel only (attention_takes_decode_kernel; splits == 1, or `done`
  // or `q_done` set): rope(q), rope(k) and kv_store(k, v) folded into the launch, bitwise as
  // rope_qk_store leaves them. Then q is the unrotated q and the launch also writes it (rotated in
  // place, as rope() leaves it) and the caches: rope_k is the unrotated k row (rotated in place),
  // rope_v the v row, both stored in k_cache/v_cache at pos[0]. With several splits, q may be
  // written only once every split block has read it: by the block that merges (`done`), or else
  // by the last of a kv head's blocks to count itself in `q_done` (n_kv_heads counters, zero
  // between launches; that block resets its counter).
  float* rope_k = nullptr;
  const float* rope_v = nullptr;
  unsigned* q_done = nullptr;
  const float* rope_inv_freq = nullptr;  // [head_dim / 2]
  float rope_scaling = 1.0f;
  // One-row decode kernel with 2..kAttentionMaxClusterSplits splits on compute capability 9.0+
  // (attention_cluster_usable): when non-zero, the warps per block (4, 8 or 16) with which the kv
  // head's split blocks run as one thread-block cluster and merge their (acc, m, l) through
  // distributed shared memory, with no `partial`, `done`, `q_done` or merge launch; with rope
  // folded in, the cluster's first block writes q back. 0: the split form.
  int cluster = 0;
};
inline constexpr int kAttentionMaxClusterSplits = 16;  // the H100's largest (non-portable) cluster
inline constexpr int64_t kAttentionMaxHeadDim = 256;
// Splits that fill the GPU for this shape (1 for prefill-sized batches). Given `keys` (the most
// keys a query row attends to, > 0), at least attention_min_keys_per_split() keys per split (16;
// TRELLIS_CUDA_ATTENTION_MIN_KEYS), the count capped at a power of
// two (TRELLIS_CUDA_ATTENTION_CONTEXT_SPLITS=0 ignores `keys`; set_attention_context_splits
// overrides the variable).
int attention_splits(int64_t rows, int64_t n_heads, int64_t n_kv_heads, int sm_count, int64_t keys = 0);
bool attention_context_splits();
void set_attention_context_splits(bool on);
int64_t attention_partial_floats(const AttentionArgs& a);
int64_t attention_min_keys_per_split();
// The kernels attention() chooses from. TRELLIS_CUDA_TC_ATTENTION=0 asks for kFp32 everywhere,
// =1 for kTensorCore (attention_tc_kernel), unset or =2 for kFlash (attention_flash_kernel, the
// default); a tensor-core kernel runs only where its shape conditions hold (head_dim 64 or 128, no
// splits, rows·group >= 64, 16-byte aligned caches), kFlash falling back to kTensorCore, then kFp32.
// Both tensor-core kernels round Q and P to fp16 (see cuda_attention.cu).
enum class AttentionKernel { kFp32 = 0, kTensorCore = 1, kFlash = 2 };
// The kernel attention() runs for this shape under the current setting (given aligned caches).
AttentionKernel attention_kernel_for(int64_t rows, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                                     int splits);
// attention_kernel_for(...) != kFp32.
bool attention_uses_tensor_cores(int64_t rows, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, int splits);
// The current setting (TRELLIS_CUDA_TC_ATTENTION, or the last set_attention_kernel()).
AttentionKernel attention_kernel_setting();
// Test and benchmark hook: overrides TRELLIS_CUDA_TC_ATTENTION for launches recorded after the call.
void set_attention_kernel(AttentionKernel k);
// Whether attention() runs this shape on the one-row decode kernel (cuda_attention_decode.cu):
// rows 1, head_dim 64 or 128, GQA group <= 4, not disabled by TRELLIS_CUDA_DECODE_ATTENTION=0
// (also needs 16-byte aligned q and caches, checked at launch).
bool attention_uses_decode_kernel(int64_t rows, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim);
// Test hook: overrides TRELLIS_CUDA_DECODE_ATTENTION for launches recorded after the call.
void set_decode_attention(bool on);
// Whether the backend passes AttentionArgs::done (the merge inside the decode kernel): off unless
// TRELLIS_CUDA_ATTENTION_MERGE=1 (measured no faster: docs/CUDA.md); set_attention_merge_fused
// overrides it for launches recorded after the call (tests, A/B).
bool attention_merge_fused();
void set_attention_merge_fused(bool on);
// Whether the backend runs decode attention's splits as a thread-block cluster (AttentionArgs::
// cluster): on unless TRELLIS_CUDA_ATTENTION_CLUSTER=0; with it on and a device of compute
// capability 9.0+ (attention_cluster_device), attention_splits() gives one row at most
// kAttentionMaxClusterSplits splits. set_attention_cluster overrides it for launches
// recorded after the call.
bool attention_cluster();
void set_attention_cluster(bool on);
// Warps per block of the cluster form: 8 (4 and 16 with TRELLIS_CUDA_ATTENTION_CLUSTER_WARPS); the test hook
// overrides it for launches made after the call (0: back to the environment's setting).
int attention_cluster_warps();
void set_attention_cluster_warps(int warps);
// Whether a decode attention `a` (attention_takes_decode_kernel) may run as a cluster of
// attention_cluster_warps()-warp blocks: attention_cluster(), 2 <= splits <=
// kAttentionMaxClusterSplits, and the current device (compute capability 9.0+) able to hold one
// such cluster (cudaOccupancyMaxActiveClusters, asked once per kernel and split count; the opt-in
// for more than 8 blocks is made here, outside any capture).
bool attention_cluster_usable(const AttentionArgs& a);
// Whether the current device could run thread-block clusters at all (compute capability 9.0+;
// false without a device).
bool attention_cluster_device();
// Whether attention(a) runs the one-row decode kernel (the shape test above, 16-byte aligned q
// and caches): the condition for AttentionArgs::rope_k.
bool attention_takes_decode_kernel(const AttentionArgs& a);
// Whether rope + kv_store fold into the decode attention: TRELLIS_CUDA_ROPE_ATTENTION=0 keeps
// rope_qk_store's launch; set_rope_attention_fold overrides it for launches recorded after the call.
bool rope_attention_fold();
void set_rope_attention_fold(bool on);
// The decode kernel itself (attention() dispatches to it); writes `partial` when splits > 1.
void attention_decode(const AttentionArgs& a, cudaStream_t stream);
// Raises kUnsupported for head_dim > kAttentionMaxHeadDim. Sets its kernels' shared-memory limit
// on first use (outside any graph capture: call attention_prepare() once per device first).
void attention(const AttentionArgs& a, cudaStream_t stream);
void attention_prepare();

}  // namespace trellis::cuda
