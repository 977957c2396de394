// backends/cuda/cuda_exl3.h: one EXL3 linear layer on a CUDA device (spec 4.4 dataflow).
//
// Goals: decode (m <= kExl3GemvMaxRows) that streams the trellis once from HBM with the integer
// decode work kept under the memory time; prefill (larger m) through an exact fp16 Ŵ and cuBLAS;
// every K = 1..8 and codebook; fp32 activations in and out; deterministic results; no
// allocation and no host sync in forward() (it can be captured into a CUDA graph).
// Accuracy: up to kSplitActMaxRows rows (cuda_util.h), activations enter the fp16 tensor cores
// as a hi + lo pair of fp16 halves, so the product has fp32-level accuracy at no cost (the GEMV's
// MMA rows 8-15 are idle otherwise; small GEMMs are bound by reading Ŵ). Larger prefill batches
// are bound by tensor-core work, which hi + lo would double, so there the activations are rounded
// once to fp16 (ExLlamaV3's precision; TRELLIS_CUDA_EXACT_PREFILL=1 keeps hi + lo).
// Non-goals: ExLlamaV3's fp16-activation numerics bit for bit (spec 4.5: the product is not
// reproducible anyway), multi-GPU splits, fused gate/up or MoE variants.
//
// Dataflow per call (scratch regions in brackets):
//   xa = H(x ⊙ suh)·r as fp16 hi/lo (hi only for large m)  [act]   exl3_hadamard_in
//   m <= 8:  z_s = xa · Ŵ over k-range s, s < splits         [part]  exl3_gemv_k<K>_<cb>
//   m > 8:   Ŵ slice -> fp16 [what]; cublasGemmEx            [part]  exl3_decode_k<K>_<cb>
//   y = H(Σ z)·r ⊙ svh + bias, padded columns dropped                exl3_hadamard_out
// Prefill groups (cuda::prefill_fusion): q/k/v and gate/up share one exl3_hadamard_in launch that
// reads x once; the gated MLP (forward_mlp) replaces gate/up's output transforms, silu_mul and
// down's input transform with one exl3_mlp_bridge pass.
// When cuda::fused_reconstruct(m) (opt-in, TRELLIS_CUDA_FUSED_RECONSTRUCT; never with exact prefill):
//   xa = fp16(x)                                             [act]   exl3_hadamard_in (plain)
//   W slice = diag(suh)·H·Ŵ·H/128·diag(svh) as fp16          [what]  exl3_reconstruct_k<K>_<cb>
//   y = xa · W (+ bias) by cublasGemmEx straight into y
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>

#include "core/tensor.h"
#include "exl3/linear.h"

namespace trellis::cuda {

namespace exl3k {
struct GemvItem;
}  // namespace exl3k

// Rows up to which forward() runs the fused GEMV; larger batches decode Ŵ and call cuBLAS.
inline constexpr int64_t kExl3GemvMaxRows = 8;

// The decode fusions of the residual stream around an EXL3 GEMV (CudaExl3Linear::forward /
// forward_group, m <= kExl3GemvMaxRows on the fused-input path). Output side (fusable_resid):
// resid [m, out_features] += y after y is written, as cuda::add, and resid_sumsq [m, n / 128] gets
// the new resid's sum of squares per 128-column group. Input side (fusable_norm): x is the
// residual stream, norm_sumsq its group sums (a resid_sumsq written by the linear before), and
// the linear's input is rms_norm(x) · norm_w with norm_eps: the same bits as cuda::rms_norm's
// whole-row kernel (cuda_norm.cuh); with norm_out set that input is also written there [m,
// in_features]. All pointers 16-byte aligned; resid must not alias the linear's x or up.
struct Exl3Fusion {
  float* resid = nullptr;
  float* resid_sumsq = nullptr;
  const float* norm_w = nullptr;
  const float* norm_sumsq = nullptr;
  float norm_eps = 0.0f;
  float* norm_out = nullptr;
};
// Widest rows the fusions take: rows the whole-row RMSNorm kernel sums in cuda_norm.cuh's order.
inline constexpr int64_t kExl3FusedNormMaxCols = 4096;

class CudaExl3Linear {
 public:
  // Uploads trellis, suh, svh and the bias of one EXL3 linear to the current device, enqueued on
  // `stream` (the caller synchronizes before freeing the host data). `view` holds padded k, n
  // (positive multiples of 128), K 1..8 and the codebook; its pointers may be unaligned host
  // pointers into a safetensors mapping. `bias` (fp16/bf16/fp32, at least out_features elements)
  // overrides view.bias when given. in_features <= k and out_features <= n are the real sizes:
  // x rows have in_features elements (zero-extended to k), y rows out_features (padding dropped).
  // Bad shapes, K or codebook: trellis::Error kInvalidArgument; no memory: kOutOfMemory.
  static std::unique_ptr<CudaExl3Linear> create(const exl3::Exl3LinearView& view, std::optional<TensorView> bias,
                                                int64_t in_features, int64_t out_features, cudaStream_t stream);
  // Same with in_features = view.k and out_features = view.n (unpadded layers).
  static std::unique_ptr<CudaExl3Linear> create(const exl3::Exl3LinearView& view, std::optional<TensorView> bias,
                                                cudaStream_t stream);
  ~CudaExl3Linear();
  CudaExl3Linear(const CudaExl3Linear&) = delete;
  CudaExl3Linear& operator=(const CudaExl3Linear&) = delete;

  // y [m, out_features] = x [m, in_features] · Wᵀ (+ bias), x and y device fp32 row-major
  // (leading dimensions in_features and out_features, 4-byte aligned, y must not alias x).
  // `scratch` is a device buffer of scratch_bytes(m) bytes, 256-byte aligned, not shared with a
  // concurrent call. Only enqueues on `stream`; m == 0 is a no-op.
  // With `up` set (fused silu_mul): the input is silu(x) · up, bit-identical to cuda::silu_mul,
  // and that product is also written to silu_out [m, in_features] (which may alias x). With
  // silu_out null the product is not written: only where fused_in(m) (one GEMV launch whose blocks
  // compute silu(x) · up for their own k range; the gated MLP's down projection at decode).
  // `fusion` (nullptr: none): Exl3Fusion above; needs fused_in(m), and fusable_resid(m) /
  // fusable_norm(m) for the side it uses (not both at once).
  void forward(const float* x, int64_t m, float* y, cudaStream_t stream, void* scratch, const float* up = nullptr,
               float* silu_out = nullptr, const Exl3Fusion* fusion = nullptr) const;
  bool fusable_resid(int64_t m) const;
  bool fusable_norm(int64_t m) const;
  size_t scratch_bytes(int64_t m) const;
  // forward() of up to kMaxGroup linears that read the same x (same in_features and k). For m in
  // 1..kExl3GemvMaxRows: one launch of each Hadamard transform for the whole group and one GEMV
  // launch when K and codebook agree; for m on the reconstructed-W path (cuda::fused_reconstruct):
  // x is converted to fp16 once for the group. Results equal forward() of each bit for bit.
  // `scratch`: group_scratch_bytes(ls, m) bytes, 256-byte aligned. Bad groups (other m included):
  // trellis::Error kInternal.
  static constexpr size_t kMaxGroup = 4;
  // `norm` (input side only, every linear fusable_norm(m), one launch): as forward()'s fusion.
  static void forward_group(std::span<const CudaExl3Linear* const> ls, const float* x, int64_t m,
                            std::span<float* const> ys, cudaStream_t stream, void* scratch,
                            const Exl3Fusion* norm = nullptr);
  static size_t group_scratch_bytes(std::span<const CudaExl3Linear* const> ls, int64_t m);
  // The gated MLP y = (silu(x·gateᵀ + b_g) ⊙ (x·upᵀ + b_u))·downᵀ + b_d at prefill sizes, where
  // mlp_fusable(): one input transform for gate and up (x read once), their products straight into
  // zg and zu ([m, n] fp32 each, e.g. the caller's gate/up activation buffers, overwritten), one
  // pass that turns both into down's transformed input (exl3k::mlp_bridge), down's product and
  // output transform. Equal bit for bit to forward(gate), forward(up), cuda::silu_mul and
  // forward(down). `scratch`: mlp_scratch_bytes() bytes, 256-byte aligned. Not fusable:
  // trellis::Error kInternal.
  static bool mlp_fusable(const CudaExl3Linear& gate, const CudaExl3Linear& up, const CudaExl3Linear& down, int64_t m);
  static size_t mlp_scratch_bytes(const CudaExl3Linear& gate, const CudaExl3Linear& up, const CudaExl3Linear& down,
                                  int64_t m);
  static void forward_mlp(const CudaExl3Linear& gate, const CudaExl3Linear& up, const CudaExl3Linear& down,
                          const float* x, int64_t m, float* zg, float* zu, float* y, cudaStream_t stream,
                          void* scratch);
  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }
  // Device memory held by this layer (trellis + channel vectors + bias).
  uint64_t device_bytes() const;

  int64_t k() const { return k_; }
  int64_t n() const { return n_; }
  int K() const { return K_; }
  exl3::Codebook codebook() const { return codebook_; }
  // "exl3_gemv_k<K>_<cb>": the fused kernel forward() runs for m <= kExl3GemvMaxRows.
  const char* gemv_variant_name() const;

  // ---- test and benchmark hooks ----
  // Decodes Ŵ (k x n, row-major binary16, exact as exl3::decode_what) into device memory `what`.
  void decode_what(uint16_t* what, cudaStream_t stream) const;
  // W = diag(suh)·H·Ŵ·H/128·diag(svh) (k x n, row-major binary16; spec 4.2) into device memory `w`:
  // the weight the large-batch prefill path multiplies.
  void reconstruct_weight(uint16_t* w, cudaStream_t stream) const;
  // k-range splits of the GEMV (chosen at create() from the shape and the SM count); tests set
  // other values (1..kMaxGemvSplits) to cover the partial-sum path.
  static constexpr int kMaxGemvSplits = 32;
  int gemv_splits() const { return gemv_splits_; }
  void set_gemv_splits(int splits);
  // Only the product stage of forward() (GEMV kernel, or decode + cuBLAS), on whatever the
  // activation region of `scratch` holds: what the GEMV benchmark times next to cuBLAS.
  void product_only(int64_t m, cudaStream_t stream, void* scratch) const;
  // Whether forward() of m rows runs the GEMV with its input transform fused (cuda::gemv_fused_in,
  // m <= kExl3GemvMaxRows, and the k range of a split fits exl3k::kFusedInActBytes).
  bool fused_in(int64_t m) const;

 private:
  CudaExl3Linear() = default;
  struct ScratchLayout {
    size_t act = 0, part = 0, what = 0, total = 0;
  };
  ScratchLayout layout(int64_t m) const;
  int64_t gemm_slice_cols() const;
  void product(int64_t m, cudaStream_t stream, std::byte* scratch, const ScratchLayout& s) const;
  // The GEMM product (m > kExl3GemvMaxRows): Ŵ slices decoded into `what` (what_bytes(), shared
  // between calls on one stream), z [parts·m... as product()] = xa · Ŵ.
  void gemm_product(int64_t m, const uint16_t* xa, float* z, uint16_t* what, cudaStream_t stream) const;
  size_t what_bytes() const;
  // The GEMV launch item of this linear with its output transform fused (writes y [m, out_features]).
  exl3k::GemvItem gemv_item(const uint16_t* xa, float* z, float* y) const;
  void reconstructed_product(int64_t m, float* y, cudaStream_t stream, std::byte* scratch, const ScratchLayout& s) const;

  int device_ = 0;
  int64_t k_ = 0, n_ = 0, in_features_ = 0, out_features_ = 0;
  int K_ = 0;
  exl3::Codebook codebook_ = exl3::Codebook::k3Inst;
  int gemv_splits_ = 1;
  int sms_ = 1;  // the device's SM count
  uint32_t* trellis_ = nullptr;  // [k/16][n/16][8K] uint32, file order
  float* suh_ = nullptr;         // [k]
  float* svh_ = nullptr;         // [n]
  unsigned* done_ = nullptr;     // [n/128] counters of the GEMV's fused output transform, 0 between launches
  float* bias_ = nullptr;        // [out_features] or null
};

}  // namespace trellis::cuda
