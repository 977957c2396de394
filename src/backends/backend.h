// backends/backend.h: the one seam between portable code and devices.
//
// Portable code (src/model, src/runtime) drives a model through this interface only; a backend
// implements it for one device kind (CPU, CUDA, Vulkan). Contract for every op:
//   * Activations are row-major [rows, cols] DeviceTensors; `rows` is the number of tokens in the
//     batch. Which dtype a backend keeps activations in is its choice (CPU: fp32); portable code
//     only moves them through ops and reads results with download().
//   * Ops are enqueued in order on the backend's one stream; download() and synchronize() wait.
//   * Shapes are validated by the caller (the model), so a mismatch here is an internal error.
// Non-goals: a general tensor library. The op set is what the Llama-family forward pass needs;
// a new architecture adds the ops it needs here, with a CPU reference first.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "exl3/linear.h"

namespace trellis {

struct DeviceInfo {
  std::string backend;          // "cpu", "cuda", "vulkan"
  int index = 0;
  std::string name;             // e.g. CPU model or GPU name
  // "cpu", "discrete_gpu", "integrated_gpu", "virtual_gpu" or "other" (Vulkan's device types;
  // a Vulkan implementation running on the CPU, such as lavapipe, is "cpu").
  std::string kind;
  uint64_t memory_bytes = 0;    // total device memory (0 if unknown)
  uint64_t free_bytes = 0;
  int threads = 0;              // CPU worker threads / GPU SM count
  int subgroup_size = 0;
  std::vector<std::string> features;  // e.g. "avx2", "fp16", "cooperative_matrix"
};

// Backend-owned memory of one tensor. Opaque to portable code.
class DeviceBuffer {
 public:
  virtual ~DeviceBuffer() = default;
  virtual size_t size() const = 0;
};

// A typed, shaped view of (part of) a DeviceBuffer. Cheap to copy.
struct DeviceTensor {
  std::shared_ptr<DeviceBuffer> buffer;
  size_t offset = 0;  // bytes
  DType dtype = DType::kF32;
  Shape shape;
  int64_t rows() const { return shape.empty() ? 1 : shape[0]; }
  int64_t cols() const { return shape.size() < 2 ? (shape.empty() ? 1 : shape[0]) : shape_numel(shape) / shape[0]; }
  // The first `n` rows (a view: no copy).
  DeviceTensor first_rows(int64_t n) const;
};

// Host-side description of one linear layer y = x·Wᵀ + b (Hugging Face orientation: weight is
// (out, in)) handed to a backend to prepare. Exactly one of `dense` / `exl3` is set.
struct LinearSource {
  std::string name;
  int64_t in_features = 0, out_features = 0;  // real (unpadded) sizes
  std::optional<TensorView> dense;            // (out, in) fp16 / bf16 / fp32
  std::optional<exl3::Exl3LinearView> exl3;   // padded k >= in, n >= out (spec 2.4)
  std::optional<TensorView> bias;             // [out] (dense) or [n] (EXL3) fp16/bf16/fp32
};

// A linear layer in the backend's prepared form.
class LinearWeights {
 public:
  virtual ~LinearWeights() = default;
  int64_t in_features = 0, out_features = 0;
  uint64_t device_bytes = 0;  // memory the backend holds for it
};

// Rotary embedding parameters resolved from config (src/model/rope.h): inverse frequencies for
// the head_dim/2 pairs, and the factor cos/sin are multiplied by (YaRN attention scaling).
struct RopeParams {
  std::vector<float> inv_freq;
  float attention_scaling = 1.0f;
};

struct AttentionParams {
  int64_t n_heads = 0, n_kv_heads = 0, head_dim = 0;
  float scale = 0;              // usually 1/sqrt(head_dim)
  int64_t sliding_window = 0;   // 0 = full causal attention
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const DeviceInfo& info() const = 0;

  // Memory. alloc() zero-fills. upload() converts host data to `dtype` on the device.
  virtual DeviceTensor alloc(DType dtype, const Shape& shape) = 0;
  virtual DeviceTensor upload(const TensorView& host, DType dtype) = 0;
  // Copies a tensor to host as fp32 (rows*cols floats).
  virtual void download(const DeviceTensor& t, float* host) = 0;
  virtual std::unique_ptr<LinearWeights> prepare_linear(const LinearSource& source) = 0;
  virtual void synchronize() {}
  // A hint: start the device on the ops called so far, without waiting for them. Backends that
  // record ops and run them later (CUDA) flush here, so the device works while the host goes on
  // calling ops; the others ignore it.
  virtual void submit() {}
  // Seconds the host has spent blocked on the device in download() and synchronize() since the
  // backend was made (benchmarks subtract it from a step's wall time to see the host's share); 0
  // where the backend does not count it.
  virtual double host_wait_seconds() const { return 0.0; }
  // Seconds of host time by part of the backend's work (name, seconds since the backend was
  // made), where the backend measures them (Vulkan with TRELLIS_VULKAN_HOST_PROFILE=1); empty
  // elsewhere. Benchmarks report the decode's share per token.
  virtual std::vector<std::pair<std::string, double>> host_breakdown() const { return {}; }

  // out[r] = table[ids[r]]; table [vocab, dim].
  virtual void embedding(const DeviceTensor& table, std::span<const int32_t> ids, DeviceTensor& out) = 0;
  // The same with the table left in host memory (a mapped file; F32, F16 or BF16 [vocab, dim]),
  // for backends whose device memory is worth more than the copy of a few rows per call: only
  // those report host_embedding() true and override embedding_host (the default throws).
  virtual bool host_embedding() const { return false; }
  // Rows per prefill chunk the model uses when ModelOptions::max_batch is 0: larger chunks amortise
  // per-chunk work (e.g. decoding EXL3 weights for a GEMM) at the price of activation memory.
  virtual int64_t preferred_batch() const { return 512; }
  virtual void embedding_host(const TensorView& table, std::span<const int32_t> ids, DeviceTensor& out);
  // out = x / rms(x) * weight over groups of `group` columns (group = cols for a plain RMSNorm,
  // head_dim for per-head q/k norms); weight has `group` elements.
  virtual void rms_norm(const DeviceTensor& x, const DeviceTensor& weight, float eps, int64_t group,
                        DeviceTensor& out) = 0;
  // y [rows, out] = x [rows, in] · Wᵀ + b.
  virtual void linear(const LinearWeights& w, const DeviceTensor& x, DeviceTensor& y) = 0;
  // ys[i] = x · ws[i]ᵀ + b_i for linears that read the same x (q/k/v, gate/up): the same results
  // as linear() on each (the default does exactly that); a backend may batch their launches.
  virtual void linears(std::span<const LinearWeights* const> ws, const DeviceTensor& x,
                       std::span<DeviceTensor* const> ys);
  // In place, Hugging Face rotate-half convention, heads of head_dim in each row; row r is at
  // position positions[r].
  virtual void rope(DeviceTensor& x, int64_t head_dim, std::span<const int32_t> positions,
                    const RopeParams& rope) = 0;
  // Writes k, v [rows, n_kv_heads*head_dim] into the caches [max_ctx, n_kv_heads*head_dim] at
  // rows positions[r].
  virtual void kv_store(const DeviceTensor& k, const DeviceTensor& v, std::span<const int32_t> positions,
                        DeviceTensor& k_cache, DeviceTensor& v_cache) = 0;
  // out [rows, n_heads*head_dim] = softmax(q·Kᵀ·scale, causal: row r sees cache rows
  // 0..positions[r]) · V, grouped-query (head h uses kv head h / (n_heads / n_kv_heads)).
  virtual void attention(const DeviceTensor& q, const DeviceTensor& k_cache, const DeviceTensor& v_cache,
                         std::span<const int32_t> positions, const AttentionParams& params, DeviceTensor& out) = 0;
  // out = silu(gate) * up.
  virtual void silu_mul(const DeviceTensor& gate, const DeviceTensor& up, DeviceTensor& out) = 0;
  // The gated MLP: y = (silu(x · gateᵀ + b_g) * (x · upᵀ + b_u)) · downᵀ + b_d. g and u [rows,
  // intermediate] are work space: what they hold afterwards is unspecified (a backend may keep
  // partial products there). The default is linears(gate, up), silu_mul into g, linear(down);
  // a backend may fuse the steps between the products.
  virtual void mlp(const LinearWeights& gate, const LinearWeights& up, const LinearWeights& down,
                   const DeviceTensor& x, DeviceTensor& g, DeviceTensor& u, DeviceTensor& y);
  // x += y.
  virtual void add(DeviceTensor& x, const DeviceTensor& y) = 0;

  // Quantizer calibration (spec 5.3): acc (k x k fp32, k >= cols of x) += xᵀ·x over the rows of
  // x (fp32) whose values are all finite, into the top-left block, in the LOWER triangle only
  // (the upper triangle is left as it is; readers mirror it). stats (2 fp32) += {rows added,
  // rows skipped as non-finite}. Backends without it throw kUnsupported.
  virtual void gram_accumulate(const DeviceTensor& x, DeviceTensor& acc, DeviceTensor& stats);
};

// The CPU backend (always available). `threads` = 0: all hardware threads.
std::unique_ptr<Backend> make_cpu_backend(size_t threads = 0);

}  // namespace trellis
