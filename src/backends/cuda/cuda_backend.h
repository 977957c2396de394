// backends/cuda/cuda_backend.h: the CUDA implementation of the Backend seam.
//
// Goals: every op of backend.h on NVIDIA GPUs, equal to the CPU reference up to summation order
// (fp32 activations and KV-cache fp16, as on the CPU backend), and batch-1 decode that is not
// bound by kernel-launch overhead. Non-goals (for now): multi-GPU, fp16 activations, tuned
// prefill attention.
//
// Execution model. Ops do not launch right away: each validates its arguments, copies the host
// data it was given (token ids, positions, RoPE frequencies) into a pinned staging area and
// records a launch. download() and synchronize() flush the recorded segment: one host-to-device
// copy of the staging area, then the launches, all on one stream. A segment is keyed by its ops
// and their arguments (shapes, device addresses; not the staged values). When a segment has the
// same key as the one before it (decode steps; equal-sized prefill chunks), it is captured once
// into a CUDA graph and later segments with that key replay the graph, so a decode step costs one
// memcpy and one graph launch. Kernels read staged values from the device copy, so replays see the
// new positions and ids. TRELLIS_CUDA_GRAPHS=0 turns graphs off (every segment runs eagerly).
//
// Op -> kernel map (cuda_ops.h): embedding, rms_norm, rope, kv_store, silu_mul, add: one kernel
// each; dense linear: dense_gemv_f16 (m <= 8) or split_f16 + one or two cuBLAS fp16 GEMMs (hi, lo: cuda_util.h) with fp32
// accumulation (m > 8); attention: attention (+ merge of flash-decoding splits); EXL3 linear:
// CudaExl3Linear (cuda_exl3.h) when that part is built in. Peephole fusions of ops recorded back to
// back, each bit-identical to the separate launches: add + rms_norm of the same rows (add_rms_norm),
// rope(q) + rope(k) [+ kv_store(k, v)] (rope_qk_store) [+ a one-row attention that needs no merge
// launch: folded into the decode attention kernel], silu_mul + the EXL3 linear that reads its
// output (silu in the linear's input transform); at prefill sizes the gated MLP runs as
// CudaExl3Linear::forward_mlp. Kernels launch with programmatic dependent
// launch on sm_90+ (cuda_launch.cuh), so a kernel's launch overlaps its predecessor's tail.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backends/backend.h"

namespace trellis::cuda {

class CudaExl3Linear;

// Device memory of one tensor or weight (cudaMalloc; freed on destruction).
class CudaBuffer : public DeviceBuffer {
 public:
  CudaBuffer(size_t bytes, const std::string& what);
  ~CudaBuffer() override;
  CudaBuffer(const CudaBuffer&) = delete;
  CudaBuffer& operator=(const CudaBuffer&) = delete;
  size_t size() const override { return size_; }
  std::byte* data() const { return data_; }

 private:
  std::byte* data_ = nullptr;
  size_t size_ = 0;
};

class CudaBackend : public Backend {
 public:
  explicit CudaBackend(int index);
  ~CudaBackend() override;

  const DeviceInfo& info() const override { return info_; }
  DeviceTensor alloc(DType dtype, const Shape& shape) override;
  DeviceTensor upload(const TensorView& host, DType dtype) override;
  void download(const DeviceTensor& t, float* host) override;
  std::unique_ptr<LinearWeights> prepare_linear(const LinearSource& source) override;
  void synchronize() override;
  // Runs what has been recorded so far without waiting (a decode step's first layers start on the
  // GPU while the host records the rest). TRELLIS_CUDA_SUBMIT=0: ignored (one segment per step).
  void submit() override {
    if (submit_) flush();
  }
  // Whether submit() flushes (false with TRELLIS_CUDA_SUBMIT=0): tests count segments with it.
  bool submits() const { return submit_; }

  void embedding(const DeviceTensor& table, std::span<const int32_t> ids, DeviceTensor& out) override;
  // Gathers the rows on the host into the staging buffer; one conversion kernel per call.
  // TRELLIS_CUDA_HOST_EMBEDDING=0 keeps tables on the device instead.
  bool host_embedding() const override { return host_embedding_; }
  // 2048: the EXL3 prefill decodes Ŵ once per chunk (4x less often than at 512 rows, measured
  // 23 -> ~6 ms of a 2048-token prefill on an 8B model) and the GEMMs get larger.
  int64_t preferred_batch() const override { return 2048; }
  void embedding_host(const TensorView& table, std::span<const int32_t> ids, DeviceTensor& out) override;
  void rms_norm(const DeviceTensor& x, const DeviceTensor& weight, float eps, int64_t group, DeviceTensor& out) override;
  void linear(const LinearWeights& w, const DeviceTensor& x, DeviceTensor& y) override;
  // EXL3 linears that read one x share their Hadamard launches (CudaExl3Linear::forward_group):
  // at decode sizes, on the reconstructed-W path, and at prefill sizes (cuda::prefill_fusion).
  void linears(std::span<const LinearWeights* const> ws, const DeviceTensor& x,
               std::span<DeviceTensor* const> ys) override;
  // EXL3 gated MLPs at prefill sizes: CudaExl3Linear::forward_mlp (gate/up products into g and u,
  // one bridge pass into down's input). Otherwise the default sequence.
  void mlp(const LinearWeights& gate, const LinearWeights& up, const LinearWeights& down, const DeviceTensor& x,
           DeviceTensor& g, DeviceTensor& u, DeviceTensor& y) override;
  void rope(DeviceTensor& x, int64_t head_dim, std::span<const int32_t> positions, const RopeParams& rope) override;
  void kv_store(const DeviceTensor& k, const DeviceTensor& v, std::span<const int32_t> positions,
                DeviceTensor& k_cache, DeviceTensor& v_cache) override;
  void attention(const DeviceTensor& q, const DeviceTensor& k_cache, const DeviceTensor& v_cache,
                 std::span<const int32_t> positions, const AttentionParams& params, DeviceTensor& out) override;
  void silu_mul(const DeviceTensor& gate, const DeviceTensor& up, DeviceTensor& out) override;
  void add(DeviceTensor& x, const DeviceTensor& y) override;
  void gram_accumulate(const DeviceTensor& x, DeviceTensor& acc, DeviceTensor& stats) override;
  double host_wait_seconds() const override { return wait_seconds_; }

  // Test and benchmark hooks: turn graph capture on or off, and count what flushes did.
  void set_graphs(bool on);
  struct Stats {
    uint64_t segments = 0, graph_captures = 0, graph_replays = 0, launches = 0;  // launches: recorded ops run
  };
  const Stats& stats() const { return stats_; }
  cudaStream_t stream() const { return stream_; }

 private:
  // A captured segment: its key (record()) and executable graph.
  struct CachedGraph {
    std::vector<uint64_t> key;
    cudaGraphExec_t exec = nullptr;
    uint64_t last_used = 0;  // flush count of its last launch
    bool cluster = false;    // holds a thread-block-cluster launch (never updated in place)
  };
  // Whether the segment being recorded launches a thread-block cluster (AttentionArgs::cluster).
  // A graph that has or gets such a launch is instantiated anew rather than updated in place
  // (cudaGraphExecUpdate). With in-place updates, the model test's later greedy runs diverged
  // once graphs with cluster launches of several split counts had shared cache slots (H100,
  // session 23; only after the test suite's earlier tests had shaped the allocator); the suspect is
  // an update that keeps a kernel node's old cluster shape.
  bool segment_cluster_ = false;
  // cudaStreamSynchronize for download() and synchronize(); the time since t0 (download: before
  // its copy, which into pageable memory already waits for the stream) goes into wait_seconds_.
  void wait_for_stream(const char* what, std::chrono::steady_clock::time_point t0);
  double wait_seconds_ = 0.0;
  // A recorded launch; `stage` is the device address of this segment's staged host data.
  using Launch = std::function<void(const std::byte* stage)>;

  // Copies `bytes` of host data into this segment's staging area; returns its offset there.
  size_t stage(const void* data, size_t bytes);
  // Reserves `bytes` of this segment's staging area for the caller to fill before the next
  // stage()/stage_space() call; returns its offset there and the host address in *host.
  size_t stage_space(size_t bytes, std::byte** host);
  // Records a launch; `key` holds everything that determines the launch except staged values.
  void record(std::initializer_list<uint64_t> key, Launch launch);
  void record(std::span<const uint64_t> key, Launch launch);
  // Clears every last_* fusion candidate below: a new op was recorded after them, or they are
  // about to run (flush). A fusion that finds its candidate replaces that op's launch.
  void forget_fusions();
  void keep(const DeviceTensor& t) { keep_.push_back(t.buffer); }
  // Runs the recorded segment (eagerly, by capturing a graph, or by replaying one).
  void flush();
  void run_eagerly();
  // Captures the recorded segment into `slot` (updating its executable graph in place where the
  // topology allows); false (and graphs off from then on) if capture fails.
  bool capture_graph(CachedGraph& slot);
  void release_graph();
  // Scratch buffer `slot` of at least `bytes` (contents unspecified). Growing it flushes first:
  // recorded launches hold its old address.
  std::byte* scratch(int slot, size_t bytes);
  std::shared_ptr<CudaBuffer> upload_as(const TensorView& host, DType dtype, const std::string& what);
  void set_device() const;

  int device_ = 0;
  DeviceInfo info_;
  int sm_count_ = 1;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  std::shared_ptr<CudaBuffer> cublas_workspace_;

  // Staging: pinned host bytes of the current segment and their device mirror.
  std::byte* host_stage_ = nullptr;
  size_t host_stage_cap_ = 0, stage_used_ = 0;
  std::shared_ptr<CudaBuffer> device_stage_;
  cudaEvent_t stage_copied_ = nullptr;
  bool stage_copy_in_flight_ = false;
  struct StagedSpan {
    const void* data;
    size_t bytes, offset;
  };
  std::vector<StagedSpan> stage_memo_;  // recent spans, reused when the bytes are unchanged

  // Peephole fusion: add(x, y) recorded last and followed by rms_norm(x, ...) becomes one
  // add_rms_norm launch (bit-identical). Set by add(), cleared by every other record().
  struct LastAdd {
    float* x;
    const float* y;
    int64_t n;
    size_t key_size;
  };
  std::optional<LastAdd> last_add_;
  // rope(q) then rope(k) (same rows, positions, frequencies) become one launch, and a kv_store(k, v)
  // right after joins it (cuda::rope_qk_store, bit-identical). Set by rope(), cleared by record().
  struct LastRope {
    float* q;
    float* k;  // null until the second rope joins
    int64_t rows, q_cols, k_cols, head_dim;
    float scaling;
    size_t pos_off, freq_off, key_size;
  };
  std::optional<LastRope> last_rope_;
  // That fused rope + kv_store launch followed by a one-row attention over the same q, caches and
  // position: the decode attention kernel does the rope and the store itself (AttentionArgs::rope_k,
  // bit-identical). Set by kv_store(), cleared by record().
  struct LastRopeStore {
    float* q;
    float* k;
    const float* v;
    uint16_t *kc, *vc;
    int64_t rows, q_cols, width, head_dim;
    float scaling;
    size_t pos_off, freq_off, key_size;
  };
  std::optional<LastRopeStore> last_rope_store_;
  // silu_mul(g, u, o) followed by an EXL3 linear reading o: the linear's input transform computes
  // silu(g) · u itself (and still writes o). Set by silu_mul(), cleared by record().
  struct LastSilu {
    const float* g;
    const float* u;
    float* o;
    int64_t n;
    size_t key_size;
  };
  std::optional<LastSilu> last_silu_;
  // The decode fusions of the residual stream (CudaExl3Linear's Exl3Fusion): an EXL3 linear
  // recorded last (last_exl3_) whose output the next add(x, y) adds takes the add into its launch
  // (last_resid_: x then holds the sum, and norm_sumsq_ its 128-column group sums of squares); a
  // whole-row rms_norm(x, w, out) of that x right after is recorded as usual (last_norm_), and an
  // EXL3 linear or group reading `out` right after replaces that launch: its input transform forms
  // the norm itself (and still writes out). Bit-identical to the separate launches.
  struct LastExl3 {
    const CudaExl3Linear* impl;
    const float* x;
    const float* up;  // down's silu input (mlp): silu(x) · up
    float* y;
    void* sc;
    int64_t m;
    float* resid;  // set once an add has joined
    bool normed;   // its input is a fused norm (then no add joins: one side per launch)
    size_t key_size;
  };
  std::optional<LastExl3> last_exl3_;
  struct LastResid {
    float* x;
    int64_t rows, cols;
  };
  std::optional<LastResid> last_resid_;
  struct LastNorm {
    float* x;
    const float* w;
    float eps;
    float* out;
    int64_t rows, cols;
    size_t key_size;
  };
  std::optional<LastNorm> last_norm_;
  std::shared_ptr<CudaBuffer> norm_sumsq_;  // [kExl3GemvMaxRows, 4096 / 128] fp32
  // [2 x kAttentionDoneCounters] counters of the decode attention, zero between launches: its
  // merge's (AttentionArgs::done), then those of the folded rope's q write-back (q_done).
  static constexpr int64_t kAttentionDoneCounters = 1024;
  std::shared_ptr<CudaBuffer> attention_done_;
  // Records an EXL3 linear (a LastExl3, key_size ignored) with its fusions, and sets last_exl3_.
  void record_exl3(const LastExl3& c, const LastNorm* norm);

  std::vector<Launch> launches_;
  std::vector<uint64_t> key_;
  std::vector<std::shared_ptr<DeviceBuffer>> keep_;  // buffers the recorded launches use
  // Executable graphs of segment keys, the least recently used replaced first: a decode step the
  // model submits in several segments (Backend::submit) replays one graph per segment. A key is
  // captured when it was flushed before within the last kRecentFlushes flushes (the segments of
  // one step); anything rarer runs eagerly, as a single-graph backend did (e.g. a prefill between
  // decodes: capturing the bench's 256-row prefill made it ~15% and the decode after it 2.7%
  // slower on the H100, session 21, cause not profiled).
  static constexpr size_t kGraphSlots = 6, kRecentFlushes = 3;
  std::vector<CachedGraph> graphs_cache_;
  std::vector<std::vector<uint64_t>> recent_keys_;  // keys of the last kRecentFlushes flushes
  uint64_t flush_count_ = 0;
  bool graphs_ = true;
  bool submit_ = true;
  bool host_embedding_ = true;

  std::shared_ptr<CudaBuffer> scratch_[4];
  Stats stats_;
};

}  // namespace trellis::cuda
