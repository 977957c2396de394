// backends/cuda/cuda_backend.cpp: memory, the recorded-segment / CUDA-graph machinery and the ops
// of the CUDA backend (design in cuda_backend.h; kernels in cuda_ops.cu, cuda_attention.cu).
#include "backends/cuda/cuda_backend.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "backends/cuda/cuda_api.h"
#include "backends/cuda/cuda_ops.h"
#include "backends/cuda/cuda_util.h"
#include "core/error.h"
#include "core/fp16.h"
#include "core/log.h"

#if __has_include("backends/cuda/cuda_exl3.h")
#include "backends/cuda/cuda_exl3.h"
#define TRELLIS_CUDA_HAS_EXL3 1
#else
#define TRELLIS_CUDA_HAS_EXL3 0
#endif

namespace trellis::cuda {
namespace {

constexpr size_t kStageAlign = 16;
constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;
constexpr size_t kUploadChunkBytes = size_t{64} << 20;  // bound on the temporary of converting uploads
constexpr size_t kGraphMinLaunches = 4;                 // smaller segments run eagerly

enum Op : uint64_t {
  kEmbedding = 1, kRmsNorm, kGemv, kGemm, kExl3, kRope, kKvStore, kAttention, kSiluMul, kAdd, kAddRmsNorm, kGram, kExl3Group, kEmbeddingHost,
  kRopeQk, kRopeQkStore, kExl3Silu, kExl3Mlp, kAttentionRope
};

uint64_t addr(const void* p) { return reinterpret_cast<uint64_t>(p); }
uint64_t bits(float f) { return float_bits(f); }

CudaBuffer& buffer_of(const DeviceTensor& t) {
  TRELLIS_CHECK(t.buffer != nullptr);
  auto* b = dynamic_cast<CudaBuffer*>(t.buffer.get());
  if (!b) fail(ErrorKind::kInvalidArgument, "CUDA backend: a tensor of another backend was passed to it");
  return *b;
}

// Device address of a tensor view, checked to lie inside its buffer.
std::byte* ptr(const DeviceTensor& t) {
  CudaBuffer& b = buffer_of(t);
  TRELLIS_CHECK(t.offset + static_cast<size_t>(shape_numel(t.shape)) * dtype_size(t.dtype) <= b.size());
  return b.data() + t.offset;
}
float* f32(const DeviceTensor& t) {
  if (t.dtype != DType::kF32)
    fail(ErrorKind::kInternal, "CUDA backend: expected an F32 activation tensor, got {}", dtype_name(t.dtype));
  return reinterpret_cast<float*>(ptr(t));
}

#if TRELLIS_CUDA_HAS_EXL3
// The run-time choices of an EXL3 launch with m rows (activation parts, reconstructed W, grouped
// prefill), for the record key: a graph replays the kernels it captured, so a key must change
// when they would.
uint64_t exl3_path(int64_t m) {
  return static_cast<uint64_t>(gemm_act_parts(m)) | (fused_reconstruct(m) ? 4u : 0u) | (prefill_fusion() ? 8u : 0u) |
         (gemv_halves() ? 16u : 0u) | (gemv_weights_a() ? 32u : 0u) | (gemv_fused_out() ? 64u : 0u) |
         (gemv_fused_in() ? 128u : 0u) | (gemv_occupancy() ? 256u : 0u);
}
#endif

class DenseLinear : public LinearWeights {
 public:
  std::shared_ptr<CudaBuffer> weight;  // (out, in) fp16
  std::shared_ptr<CudaBuffer> bias;    // [out] fp32, or null
};

#if TRELLIS_CUDA_HAS_EXL3
class Exl3Linear : public LinearWeights {
 public:
  std::unique_ptr<CudaExl3Linear> impl;
};
#endif

}  // namespace

CudaBuffer::CudaBuffer(size_t bytes, const std::string& what)
    : data_(static_cast<std::byte*>(device_malloc(bytes, what))), size_(bytes) {}

CudaBuffer::~CudaBuffer() { cudaFree(data_); }

CudaBackend::CudaBackend(int index) : device_(index) {
  const std::vector<DeviceInfo> devices = list_cuda_devices();
  if (index < 0 || static_cast<size_t>(index) >= devices.size())
    fail(ErrorKind::kUnsupported, "cuda:{} does not exist ({} CUDA devices)", index, devices.size());
  info_ = devices[static_cast<size_t>(index)];
  sm_count_ = std::max(1, info_.threads);
  set_device();
  check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "creating the stream");
  check(cudaEventCreateWithFlags(&stage_copied_, cudaEventDisableTiming), "creating an event");
  check(cublasCreate(&cublas_), "cublasCreate");
  check(cublasSetStream(cublas_, stream_), "cublasSetStream");
  // A fixed workspace: cuBLAS then never allocates, which graph capture requires.
  cublas_workspace_ = std::make_shared<CudaBuffer>(kCublasWorkspaceBytes, "the cuBLAS workspace");
#if TRELLIS_CUDA_HAS_EXL3
  norm_sumsq_ = std::make_shared<CudaBuffer>(kExl3GemvMaxRows * (kExl3FusedNormMaxCols / 128) * sizeof(float),
                                             "the fused norm's sums of squares");
#endif
  check(cublasSetWorkspace(cublas_, cublas_workspace_->data(), kCublasWorkspaceBytes), "cublasSetWorkspace");
  attention_done_ = std::make_shared<CudaBuffer>(2 * kAttentionDoneCounters * sizeof(unsigned), "the attention merge counters");
  check(cudaMemsetAsync(attention_done_->data(), 0, 2 * kAttentionDoneCounters * sizeof(unsigned), stream_),
        "clearing the attention merge counters");
  attention_prepare();
  if (const char* env = std::getenv("TRELLIS_CUDA_GRAPHS"); env && std::string(env) == "0") graphs_ = false;
  if (const char* env = std::getenv("TRELLIS_CUDA_SUBMIT"); env && std::string(env) == "0") submit_ = false;
  if (const char* env = std::getenv("TRELLIS_CUDA_HOST_EMBEDDING"); env && std::string(env) == "0")
    host_embedding_ = false;
  info_.features.push_back("cuda_graphs");
  log_info("CUDA: using {} ({} SMs, {:.1f} GiB, graphs {})", info_.name, sm_count_,
           static_cast<double>(info_.memory_bytes) / (1 << 30), graphs_ ? "on" : "off");
}

CudaBackend::~CudaBackend() {
  set_device();
  cudaStreamSynchronize(stream_);
  release_graph();
  if (host_stage_) cudaFreeHost(host_stage_);
  if (cublas_) cublasDestroy(cublas_);
  if (stage_copied_) cudaEventDestroy(stage_copied_);
  if (stream_) cudaStreamDestroy(stream_);
  cudaGetLastError();
}

void CudaBackend::set_device() const { check(cudaSetDevice(device_), "cudaSetDevice"); }

void CudaBackend::set_graphs(bool on) {
  flush();
  graphs_ = on;
  if (!on) release_graph();
}

void CudaBackend::release_graph() {
  for (CachedGraph& g : graphs_cache_)
    if (g.exec) cudaGraphExecDestroy(g.exec);
  graphs_cache_.clear();
  recent_keys_.clear();
}

// ---- staging and recording ----

size_t CudaBackend::stage(const void* data, size_t bytes) {
  for (const StagedSpan& s : stage_memo_)
    if (s.data == data && s.bytes == bytes && std::memcmp(host_stage_ + s.offset, data, bytes) == 0) return s.offset;
  std::byte* host = nullptr;
  const size_t offset = stage_space(bytes, &host);
  std::memcpy(host, data, bytes);
  if (stage_memo_.size() == 4) stage_memo_.erase(stage_memo_.begin());
  stage_memo_.push_back({data, bytes, offset});
  return offset;
}

size_t CudaBackend::stage_space(size_t bytes, std::byte** host) {
  if (stage_copy_in_flight_) {  // the previous segment's copy may still read the pinned bytes
    check(cudaEventSynchronize(stage_copied_), "staging");
    stage_copy_in_flight_ = false;
  }
  const size_t offset = (stage_used_ + kStageAlign - 1) / kStageAlign * kStageAlign;
  if (offset + bytes > host_stage_cap_) {
    const size_t cap = std::max<size_t>({offset + bytes, 2 * host_stage_cap_, 64 << 10});
    void* p = nullptr;
    check(cudaMallocHost(&p, cap), "allocating pinned staging memory");
    if (host_stage_) {
      std::memcpy(p, host_stage_, stage_used_);
      cudaFreeHost(host_stage_);
    }
    host_stage_ = static_cast<std::byte*>(p);
    host_stage_cap_ = cap;
  }
  stage_used_ = offset + bytes;
  *host = host_stage_ + offset;
  return offset;
}

void CudaBackend::record(std::initializer_list<uint64_t> key, Launch launch) {
  record(std::span<const uint64_t>(key.begin(), key.size()), std::move(launch));
}

void CudaBackend::forget_fusions() {
  last_add_.reset();
  last_rope_.reset();
  last_rope_store_.reset();
  last_silu_.reset();
  last_exl3_.reset();
  last_resid_.reset();
  last_norm_.reset();
}

void CudaBackend::record(std::span<const uint64_t> key, Launch launch) {
  forget_fusions();
  key_.insert(key_.end(), key.begin(), key.end());
  key_.push_back(~uint64_t{0});  // op separator
  launches_.push_back(std::move(launch));
}

void CudaBackend::run_eagerly() {
  const std::byte* stage = device_stage_ ? device_stage_->data() : nullptr;
  for (const Launch& l : launches_) l(stage);
}

bool CudaBackend::capture_graph(CachedGraph& slot) {
  check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
  cudaGraph_t g = nullptr;
  try {
    run_eagerly();
  } catch (...) {
    cudaStreamEndCapture(stream_, &g);
    if (g) cudaGraphDestroy(g);
    cudaGetLastError();
    throw;
  }
  cudaError_t e = cudaStreamEndCapture(stream_, &g);
  if (e == cudaSuccess) {
    cudaGraphExecUpdateResultInfo info{};
    if (!slot.exec || slot.cluster || segment_cluster_ || cudaGraphExecUpdate(slot.exec, g, &info) != cudaSuccess) {
      cudaGetLastError();
      if (slot.exec) cudaGraphExecDestroy(slot.exec);
      slot.exec = nullptr;
      e = cudaGraphInstantiate(&slot.exec, g, 0);
    }
  }
  if (g) cudaGraphDestroy(g);
  if (e != cudaSuccess) {
    cudaGetLastError();
    slot.exec = nullptr;
    slot.key.clear();
    release_graph();
    graphs_ = false;
    log_warn("CUDA: graph capture failed ({}); running without graphs", cudaGetErrorString(e));
    return false;
  }
  slot.key = key_;
  slot.cluster = segment_cluster_;
  ++stats_.graph_captures;
  return true;
}

void CudaBackend::flush() {
  forget_fusions();  // the recorded launches are about to run: nothing left to fuse with
  if (launches_.empty()) return;
  set_device();
  if (stage_used_ > 0) {
    if (!device_stage_ || device_stage_->size() < stage_used_) {
      check(cudaStreamSynchronize(stream_), "staging");  // the old mirror may still be read
      device_stage_ = std::make_shared<CudaBuffer>(std::max(stage_used_, host_stage_cap_), "the staging buffer");
    }
    check(cudaMemcpyAsync(device_stage_->data(), host_stage_, stage_used_, cudaMemcpyHostToDevice, stream_),
          "copying staged ids and positions");
    check(cudaEventRecord(stage_copied_, stream_), "staging");
    stage_copy_in_flight_ = true;
  }
  key_.push_back(addr(device_stage_ ? device_stage_->data() : nullptr));
  ++stats_.segments;
  stats_.launches += launches_.size();
  try {
    ++flush_count_;
    const bool graphable = graphs_ && launches_.size() >= kGraphMinLaunches;
    CachedGraph* hit = nullptr;
    bool recent = false;
    if (graphable) {
      for (CachedGraph& g : graphs_cache_)
        if (g.exec && g.key == key_) {
          hit = &g;
          break;
        }
      recent = !hit && std::find(recent_keys_.begin(), recent_keys_.end(), key_) != recent_keys_.end();
    }
    if (hit) {
      check(cudaGraphLaunch(hit->exec, stream_), "cudaGraphLaunch");
      hit->last_used = flush_count_;
      ++stats_.graph_replays;
    } else if (recent) {
      // Flushed again within the last kRecentFlushes flushes (a decode step's segments; equal
      // prefill chunks): capture it, into a free slot or over the least recently used graph
      // (updated in place where its topology matches).
      if (graphs_cache_.size() < kGraphSlots) graphs_cache_.emplace_back();
      CachedGraph* slot = &graphs_cache_.front();
      for (CachedGraph& g : graphs_cache_)
        if (g.last_used < slot->last_used) slot = &g;
      if (capture_graph(*slot)) {
        slot->last_used = flush_count_;
        check(cudaGraphLaunch(slot->exec, stream_), "cudaGraphLaunch");
      } else {
        run_eagerly();
      }
    } else {
      run_eagerly();
    }
    if (graphable) {  // this key joins the recent ones (the oldest's storage is reused)
      if (recent_keys_.size() < kRecentFlushes)
        recent_keys_.emplace_back();
      else
        std::rotate(recent_keys_.begin(), recent_keys_.begin() + 1, recent_keys_.end());
      recent_keys_.back().swap(key_);
    }
  } catch (...) {
    launches_.clear();
    key_.clear();
    keep_.clear();
    stage_used_ = 0;
    stage_memo_.clear();
    segment_cluster_ = false;
    throw;
  }
  key_.clear();
  launches_.clear();
  keep_.clear();
  stage_used_ = 0;
  stage_memo_.clear();
  segment_cluster_ = false;
}

void CudaBackend::wait_for_stream(const char* what, std::chrono::steady_clock::time_point t0) {
  check(cudaStreamSynchronize(stream_), what);
  wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void CudaBackend::synchronize() {
  flush();
  wait_for_stream("synchronize", std::chrono::steady_clock::now());
}

std::byte* CudaBackend::scratch(int slot, size_t bytes) {
  auto& s = scratch_[slot];
  if (!s || s->size() < bytes) {
    flush();
    check(cudaStreamSynchronize(stream_), "growing scratch");
    // A quarter more than asked once it has grown before: few regrowths, little slack (doubling
    // cost 64 MiB of peak VRAM on an 8B prefill whose requests were 128 MiB, then 147 MiB).
    const size_t grown = std::max(bytes, s ? s->size() + s->size() / 4 : bytes);
    s.reset();
    s = std::make_shared<CudaBuffer>(grown, fmt::format("scratch buffer {}", slot));
  }
  return s->data();
}

// ---- memory ----

DeviceTensor CudaBackend::alloc(DType dtype, const Shape& shape) {
  set_device();
  DeviceTensor t;
  t.dtype = dtype;
  t.shape = shape;
  const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  auto buf = std::make_shared<CudaBuffer>(bytes, fmt::format("a {} tensor of shape {}", dtype_name(dtype),
                                                             shape_to_string(shape)));
  check(cudaMemsetAsync(buf->data(), 0, bytes, stream_), "alloc (zero fill)");
  t.buffer = std::move(buf);
  return t;
}

std::shared_ptr<CudaBuffer> CudaBackend::upload_as(const TensorView& host, DType dtype, const std::string& what) {
  if (dtype != DType::kF32 && dtype != DType::kF16 && dtype != DType::kBF16 && dtype != host.dtype)
    fail(ErrorKind::kUnsupported, "CUDA backend: cannot upload {} as {} (F32, F16, BF16)", what, dtype_name(dtype));
  set_device();
  const size_t n = static_cast<size_t>(host.numel());
  auto buf = std::make_shared<CudaBuffer>(n * dtype_size(dtype), what);
  if (dtype == host.dtype) {
    check(cudaMemcpyAsync(buf->data(), host.data, host.nbytes(), cudaMemcpyHostToDevice, stream_), "upload");
  } else {
    if (host.dtype != DType::kF32 && host.dtype != DType::kF16 && host.dtype != DType::kBF16)
      fail(ErrorKind::kUnsupported, "CUDA backend: cannot convert {} from {} to {}", what, dtype_name(host.dtype),
           dtype_name(dtype));
    // Raw bytes through a bounded temporary, converted on the device.
    const size_t src_size = dtype_size(host.dtype), chunk = kUploadChunkBytes / src_size;
    CudaBuffer tmp(std::min(n, chunk) * src_size, "an upload staging buffer");
    for (size_t i = 0; i < n; i += chunk) {
      const size_t c = std::min(chunk, n - i);
      check(cudaMemcpyAsync(tmp.data(), host.data + i * src_size, c * src_size, cudaMemcpyHostToDevice, stream_),
            "upload");
      convert(tmp.data(), host.dtype, buf->data() + i * dtype_size(dtype), dtype, static_cast<int64_t>(c), stream_);
      check(cudaStreamSynchronize(stream_), "upload");  // tmp is reused by the next chunk
    }
  }
  check(cudaStreamSynchronize(stream_), fmt::format("upload of {}", what));
  return buf;
}

DeviceTensor CudaBackend::upload(const TensorView& host, DType dtype) {
  DeviceTensor t;
  t.dtype = dtype;
  t.shape = host.shape;
  t.buffer = upload_as(host, dtype, fmt::format("a {} tensor of shape {}", dtype_name(dtype), shape_to_string(host.shape)));
  return t;
}

void CudaBackend::download(const DeviceTensor& t, float* host) {
  flush();
  const size_t n = static_cast<size_t>(shape_numel(t.shape));
  const std::byte* src = ptr(t);
  if (t.dtype == DType::kF32) {
    const auto t0 = std::chrono::steady_clock::now();  // a copy into pageable memory waits for the stream
    check(cudaMemcpyAsync(host, src, n * 4, cudaMemcpyDeviceToHost, stream_), "download");
    wait_for_stream("download", t0);
    return;
  }
  if (t.dtype != DType::kF16 && t.dtype != DType::kBF16)
    fail(ErrorKind::kInternal, "CUDA backend: download of {}", dtype_name(t.dtype));
  std::vector<uint16_t> h(n);
  const auto t0 = std::chrono::steady_clock::now();
  check(cudaMemcpyAsync(h.data(), src, n * 2, cudaMemcpyDeviceToHost, stream_), "download");
  wait_for_stream("download", t0);
  if (t.dtype == DType::kF16)
    fp16_to_fp32(h.data(), host, n);
  else
    bf16_to_fp32(h.data(), host, n);
}

// ---- linear layers ----

std::unique_ptr<LinearWeights> CudaBackend::prepare_linear(const LinearSource& src) {
  std::shared_ptr<CudaBuffer> bias;
  if (src.bias && !src.exl3) {
    if (src.bias->numel() < src.out_features)
      fail(ErrorKind::kInvalidArgument, "linear {}: bias has {} elements, expected {}", src.name, src.bias->numel(),
           src.out_features);
    TensorView b = *src.bias;
    b.shape = {src.out_features};
    bias = upload_as(b, DType::kF32, src.name + ".bias");
  }
  if (src.exl3) {
#if TRELLIS_CUDA_HAS_EXL3
    set_device();
    auto l = std::make_unique<Exl3Linear>();
    l->in_features = src.in_features;
    l->out_features = src.out_features;
    l->impl = CudaExl3Linear::create(*src.exl3, src.bias, src.in_features, src.out_features, stream_);
    check(cudaStreamSynchronize(stream_), fmt::format("preparing EXL3 layer {}", src.name));
    l->device_bytes = l->impl->device_bytes();
    return l;
#else
    fail(ErrorKind::kUnsupported,
         "CUDA backend: EXL3 layer {} cannot run: this build has no CUDA EXL3 kernels yet (use --device cpu or vulkan)",
         src.name);
#endif
  }
  TRELLIS_CHECK(src.dense.has_value());
  const TensorView& w = *src.dense;
  if (w.numel() != src.in_features * src.out_features)
    fail(ErrorKind::kInvalidArgument, "linear {}: weight has shape {}, expected [{}, {}]", src.name,
         shape_to_string(w.shape), src.out_features, src.in_features);
  auto l = std::make_unique<DenseLinear>();
  l->in_features = src.in_features;
  l->out_features = src.out_features;
  if (w.dtype != DType::kF16)
    log_warn_once("cuda-dense-convert", fmt::format("CUDA backend: converting {} weights to fp16", dtype_name(w.dtype)));
  l->weight = upload_as(w, DType::kF16, src.name + ".weight");
  l->bias = std::move(bias);
  l->device_bytes = l->weight->size() + (l->bias ? l->bias->size() : 0);
  return l;
}

void CudaBackend::linear(const LinearWeights& lw, const DeviceTensor& x, DeviceTensor& y) {
  const int64_t m = x.rows();
  if (m == 0) return;
  if (x.cols() != lw.in_features || y.cols() != lw.out_features || y.rows() != m)
    fail(ErrorKind::kInternal, "CUDA linear: x {} and y {} do not fit a {} -> {} layer", shape_to_string(x.shape),
         shape_to_string(y.shape), lw.in_features, lw.out_features);
  const float* xp = f32(x);
  float* yp = f32(y);
  keep(x);
  keep(y);
  const int64_t in = lw.in_features, out = lw.out_features;
  if (const auto* d = dynamic_cast<const DenseLinear*>(&lw)) {
    const auto* w = reinterpret_cast<const uint16_t*>(d->weight->data());
    const float* bias = d->bias ? reinterpret_cast<const float*>(d->bias->data()) : nullptr;
    cudaStream_t s = stream_;
    if (m <= kGemvMaxRows) {
      record({kGemv, addr(w), addr(xp), addr(yp), addr(bias), static_cast<uint64_t>(m), static_cast<uint64_t>(in),
              static_cast<uint64_t>(out)},
             [=](const std::byte*) { dense_gemv_f16(w, xp, bias, m, in, out, yp, s); });
      return;
    }
    auto* xs = reinterpret_cast<uint16_t*>(scratch(0, static_cast<size_t>(2 * m * in) * 2));
    cublasHandle_t h = cublas_;
    // The key holds every choice the launch makes at run time: a graph replays what it captured.
    record({kGemm, addr(w), addr(xp), addr(yp), addr(bias), addr(xs), static_cast<uint64_t>(m),
            static_cast<uint64_t>(in), static_cast<uint64_t>(out), static_cast<uint64_t>(gemm_act_parts(m))},
           [=](const std::byte*) {
             split_f16(xp, m, in, xs, s);
             if (bias) fill_rows(yp, bias, m, out, s);
             const float one = 1.0f, zero = 0.0f;
             // Row-major y [m, out] = x · Wᵀ is column-major yᵀ [out, m] = W'ᵀ · x' with W' = the
             // column-major (in, out) view of W. The lo part only where it is cheap (cuda_util.h).
             const int parts = gemm_act_parts(m);
             for (int part = 0; part < parts; ++part)
               check(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(out), static_cast<int>(m),
                                  static_cast<int>(in), &one, w, CUDA_R_16F, static_cast<int>(in),
                                  xs + part * m * in, CUDA_R_16F, static_cast<int>(in),
                                  (part == 0 && !bias) ? &zero : &one, yp, CUDA_R_32F, static_cast<int>(out),
                                  CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                     "linear (cublasGemmEx)");
           });
    return;
  }
#if TRELLIS_CUDA_HAS_EXL3
  if (const auto* e = dynamic_cast<const Exl3Linear*>(&lw)) {
    CudaExl3Linear* impl = e->impl.get();
    void* sc = scratch(2, std::max<size_t>(impl->scratch_bytes(m), 16));
    cudaStream_t s = stream_;
    const uint64_t path = exl3_path(m);
    if (last_silu_ && last_silu_->o == xp && last_silu_->n == m * in && yp != last_silu_->g && yp != last_silu_->u &&
        yp != xp) {
      const LastSilu ls = *last_silu_;
      launches_.pop_back();
      key_.resize(ls.key_size);
      const float* g = ls.g;
      const float* u = ls.u;
      float* o = ls.o;
      record({kExl3Silu, addr(impl), addr(g), addr(u), addr(o), addr(yp), addr(sc), static_cast<uint64_t>(m), path},
             [=](const std::byte*) { impl->forward(g, m, yp, s, sc, u, o); });
      return;
    }
    if (last_norm_ && last_norm_->out == xp && last_norm_->rows == m && last_norm_->cols == in && yp != xp &&
        yp != last_norm_->x && impl->fusable_norm(m) && impl->in_features() == in) {
      const LastNorm ln = *last_norm_;
      launches_.pop_back();
      key_.resize(ln.key_size);
      record_exl3({impl, ln.x, nullptr, yp, sc, m, nullptr, true, 0}, &ln);
      return;
    }
    record_exl3({impl, xp, nullptr, yp, sc, m, nullptr, false, 0}, nullptr);
    return;
  }
#endif
  fail(ErrorKind::kInternal, "CUDA linear: weights were not prepared by the CUDA backend");
}

#if TRELLIS_CUDA_HAS_EXL3
namespace {
// The input side of a fusion: the RMSNorm (weight w, eps, written to out) from the group sums.
Exl3Fusion norm_fusion(const float* w, float eps, float* out, const CudaBuffer& sumsq) {
  Exl3Fusion f;
  f.norm_w = w;
  f.norm_sumsq = reinterpret_cast<const float*>(sumsq.data());
  f.norm_eps = eps;
  f.norm_out = out;
  return f;
}
}  // namespace
#endif

void CudaBackend::record_exl3(const LastExl3& c, const LastNorm* norm) {
#if TRELLIS_CUDA_HAS_EXL3
  Exl3Fusion f = norm ? norm_fusion(norm->w, norm->eps, norm->out, *norm_sumsq_) : Exl3Fusion{};
  f.resid = c.resid;
  f.resid_sumsq = c.resid ? reinterpret_cast<float*>(norm_sumsq_->data()) : nullptr;
  const bool fused = c.resid || norm;
  const CudaExl3Linear* impl = c.impl;
  const float* xp = c.x;
  const float* up = c.up;
  float* yp = c.y;
  void* sc = c.sc;
  const int64_t m = c.m;
  cudaStream_t s = stream_;
  const size_t key_size = key_.size();
  record({kExl3, addr(impl), addr(xp), addr(up), addr(yp), addr(sc), static_cast<uint64_t>(m), exl3_path(m),
          addr(f.resid), addr(f.norm_w), addr(f.norm_out), bits(f.norm_eps)},
         [=](const std::byte*) {
           // up without a product buffer: down's fused silu input (mlp)
           impl->forward(xp, m, yp, s, sc, up, nullptr, fused ? &f : nullptr);
         });
  last_exl3_ = c;
  last_exl3_->key_size = key_size;
#else
  (void)c;
  (void)norm;
#endif
}

void CudaBackend::linears(std::span<const LinearWeights* const> ws, const DeviceTensor& x,
                          std::span<DeviceTensor* const> ys) {
#if TRELLIS_CUDA_HAS_EXL3
  const int64_t m = x.rows();
  std::vector<const CudaExl3Linear*> impls;
  bool group = ws.size() == ys.size() && ws.size() >= 2 && ws.size() <= CudaExl3Linear::kMaxGroup && m >= 1 &&
               (m <= kExl3GemvMaxRows || cuda::fused_reconstruct(m) || cuda::prefill_fusion());
  for (size_t i = 0; group && i < ws.size(); ++i) {
    const auto* e = dynamic_cast<const Exl3Linear*>(ws[i]);
    group = e && ws[i]->in_features == x.cols() && ys[i]->cols() == ws[i]->out_features && ys[i]->rows() == m &&
            (impls.empty() || e->impl->k() == impls[0]->k());
    if (group) impls.push_back(e->impl.get());
  }
  if (group) {
    const float* xp = f32(x);
    std::vector<float*> yps;
    std::vector<uint64_t> key = {kExl3Group, addr(xp), static_cast<uint64_t>(m), exl3_path(m)};
    keep(x);
    for (size_t i = 0; i < ws.size(); ++i) {
      yps.push_back(f32(*ys[i]));
      keep(*ys[i]);
      key.push_back(addr(impls[i]));
      key.push_back(addr(yps.back()));
    }
    void* sc = scratch(2, std::max<size_t>(CudaExl3Linear::group_scratch_bytes(impls, m), 16));
    key.push_back(addr(sc));
    cudaStream_t s = stream_;
    // rms_norm(resid, w, x) right before: the group's input transform forms the norm (last_norm_).
    bool norm = last_norm_ && last_norm_->out == xp && last_norm_->rows == m && last_norm_->cols == x.cols();
    for (size_t i = 0; norm && i < impls.size(); ++i)
      norm = impls[i]->fusable_norm(m) && impls[i]->K() == impls[0]->K() &&
             impls[i]->codebook() == impls[0]->codebook() && yps[i] != last_norm_->x && yps[i] != xp;
    if (norm) {
      const LastNorm ln = *last_norm_;
      launches_.pop_back();
      key_.resize(ln.key_size);
      const Exl3Fusion f = norm_fusion(ln.w, ln.eps, ln.out, *norm_sumsq_);
      const float* res = ln.x;
      key.push_back(addr(res));
      key.push_back(addr(ln.w));
      key.push_back(bits(ln.eps));
      record(key, [=](const std::byte*) { CudaExl3Linear::forward_group(impls, res, m, yps, s, sc, &f); });
      return;
    }
    record(key, [=](const std::byte*) { CudaExl3Linear::forward_group(impls, xp, m, yps, s, sc); });
    return;
  }
#endif
  Backend::linears(ws, x, ys);
}

void CudaBackend::mlp(const LinearWeights& gate, const LinearWeights& up, const LinearWeights& down,
                      const DeviceTensor& x, DeviceTensor& g, DeviceTensor& u, DeviceTensor& y) {
#if TRELLIS_CUDA_HAS_EXL3
  const auto* eg = dynamic_cast<const Exl3Linear*>(&gate);
  const auto* eu = dynamic_cast<const Exl3Linear*>(&up);
  const auto* ed = dynamic_cast<const Exl3Linear*>(&down);
  const int64_t m = x.rows();
  if (eg && eu && ed && CudaExl3Linear::mlp_fusable(*eg->impl, *eu->impl, *ed->impl, m) &&
      x.cols() == gate.in_features && g.rows() == m && u.rows() == m && y.rows() == m &&
      g.cols() == gate.out_features && u.cols() == up.out_features && y.cols() == down.out_features &&
      gate.out_features == down.in_features) {
    const CudaExl3Linear* ig = eg->impl.get();
    const CudaExl3Linear* iu = eu->impl.get();
    const CudaExl3Linear* id = ed->impl.get();
    const float* xp = f32(x);
    float* gp = f32(g);
    float* up_ = f32(u);
    float* yp = f32(y);
    keep(x);
    keep(g);
    keep(u);
    keep(y);
    void* sc = scratch(2, std::max<size_t>(CudaExl3Linear::mlp_scratch_bytes(*ig, *iu, *id, m), 16));
    cudaStream_t s = stream_;
    record({kExl3Mlp, addr(ig), addr(iu), addr(id), addr(xp), addr(gp), addr(up_), addr(yp), addr(sc),
            static_cast<uint64_t>(m)},
           [=](const std::byte*) { CudaExl3Linear::forward_mlp(*ig, *iu, *id, xp, m, gp, up_, yp, s, sc); });
    return;
  }
  if (eg && eu && ed && m >= 1 && decode_fusion() && ed->impl->fused_in(m) && g.rows() == m && u.rows() == m && y.rows() == m &&
      g.cols() == gate.out_features && u.cols() == up.out_features && y.cols() == down.out_features &&
      gate.out_features == down.in_features && up.out_features == down.in_features && g.dtype == DType::kF32 &&
      u.dtype == DType::kF32) {
    // Decode: gate and up as usual (one grouped launch), then down as one GEMV whose blocks form
    // silu(g) · u for their own k range: the product is never written (g and u are work space
    // here), so the separate input-transform launch goes.
    const LinearWeights* gu[2] = {&gate, &up};
    DeviceTensor* outs[2] = {&g, &u};
    linears(gu, x, outs);
    const CudaExl3Linear* id = ed->impl.get();
    keep(g);
    keep(u);
    keep(y);
    void* sc = scratch(2, std::max<size_t>(id->scratch_bytes(m), 16));
    record_exl3({id, f32(g), f32(u), f32(y), sc, m, nullptr, false, 0}, nullptr);
    return;
  }
#endif
  Backend::mlp(gate, up, down, x, g, u, y);
}

// ---- the other ops ----

void CudaBackend::embedding(const DeviceTensor& table, std::span<const int32_t> ids, DeviceTensor& out) {
  if (ids.empty()) return;
  if (table.shape.size() != 2)
    fail(ErrorKind::kInternal, "CUDA embedding: table shape {} is not [vocab, dim]", shape_to_string(table.shape));
  const int64_t dim = table.shape[1], rows = static_cast<int64_t>(ids.size());
  const void* tp = ptr(table);
  const DType tdt = table.dtype;
  if (tdt != DType::kF32 && tdt != DType::kF16 && tdt != DType::kBF16)
    fail(ErrorKind::kUnsupported, "CUDA embedding: table dtype {} (F32, F16, BF16)", dtype_name(tdt));
  float* op = f32(out);
  const size_t off = stage(ids.data(), ids.size() * 4);
  keep(table);
  keep(out);
  cudaStream_t s = stream_;
  record({kEmbedding, addr(tp), static_cast<uint64_t>(tdt), addr(op), static_cast<uint64_t>(rows),
          static_cast<uint64_t>(dim), off},
         [=](const std::byte* st) {
           cuda::embedding(tp, tdt, reinterpret_cast<const int32_t*>(st + off), rows, dim, op, s);
         });
}

void CudaBackend::embedding_host(const TensorView& table, std::span<const int32_t> ids, DeviceTensor& out) {
  if (ids.empty()) return;
  if (table.shape.size() != 2)
    fail(ErrorKind::kInternal, "CUDA embedding: table shape {} is not [vocab, dim]", shape_to_string(table.shape));
  const int64_t vocab = table.shape[0], dim = table.shape[1], rows = static_cast<int64_t>(ids.size());
  if (out.cols() != dim || out.rows() != rows)
    fail(ErrorKind::kInternal, "CUDA embedding: output {} for {} rows of {}", shape_to_string(out.shape), rows, dim);
  const DType tdt = table.dtype;
  if (tdt != DType::kF32 && tdt != DType::kF16 && tdt != DType::kBF16)
    fail(ErrorKind::kUnsupported, "CUDA embedding: table dtype {} (F32, F16, BF16)", dtype_name(tdt));
  // Raw rows (a memcpy each) straight into the pinned staging buffer; the device widens them to
  // fp32. This runs before the segment's first kernel, so a long prompt's gather (16 MB for 2048
  // rows of an 8B model) is split over a few threads.
  const size_t esize = dtype_size(tdt), row_bytes = static_cast<size_t>(dim) * esize;
  for (const int32_t id : ids)
    if (id < 0 || id >= vocab)
      fail(ErrorKind::kInvalidArgument, "token id {} is outside the vocabulary (0..{})", id, vocab - 1);
  std::byte* dst = nullptr;
  const size_t off = stage_space(static_cast<size_t>(rows) * row_bytes, &dst);
  auto gather = [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      std::memcpy(dst + static_cast<size_t>(r) * row_bytes,
                  table.data + static_cast<size_t>(ids[static_cast<size_t>(r)]) * row_bytes, row_bytes);
  };
  constexpr int64_t kRowsPerThread = 128;  // the 256-token model tests take the threaded path
  const int64_t threads = std::clamp<int64_t>(rows / kRowsPerThread, 1, 4);
  if (threads == 1) {
    gather(0, rows);
  } else {
    std::vector<std::thread> pool;
    const int64_t per = (rows + threads - 1) / threads;
    for (int64_t t = 1; t < threads; ++t) pool.emplace_back(gather, t * per, std::min(rows, (t + 1) * per));
    gather(0, std::min(rows, per));
    for (std::thread& th : pool) th.join();
  }
  float* op = f32(out);
  keep(out);
  cudaStream_t s = stream_;
  const int64_t n = rows * dim;
  record({kEmbeddingHost, addr(op), static_cast<uint64_t>(tdt), static_cast<uint64_t>(rows), static_cast<uint64_t>(dim),
          off},
         [=](const std::byte* st) { cuda::convert(st + off, tdt, op, DType::kF32, n, s); });
}

void CudaBackend::rms_norm(const DeviceTensor& x, const DeviceTensor& weight, float eps, int64_t group,
                           DeviceTensor& out) {
  if (group <= 0 || x.cols() % group != 0 || shape_numel(weight.shape) != group)
    fail(ErrorKind::kInternal, "CUDA rms_norm: group {} does not fit x {} / weight {}", group,
         shape_to_string(x.shape), shape_to_string(weight.shape));
  const int64_t groups = x.rows() * (x.cols() / group);
  float* xp = f32(x);
  const float* wp = f32(weight);
  float* op = f32(out);
  keep(x);
  keep(weight);
  keep(out);
  cudaStream_t s = stream_;
  if (last_add_ && last_add_->x == xp && last_add_->n == groups * group && op != xp && op != last_add_->y) {
    // add(x, y) was the last op: replace its launch by the fused one.
    const float* y = last_add_->y;
    launches_.pop_back();
    key_.resize(last_add_->key_size);
    record({kAddRmsNorm, addr(xp), addr(y), addr(wp), addr(op), bits(eps), static_cast<uint64_t>(groups),
            static_cast<uint64_t>(group)},
           [=](const std::byte*) { cuda::add_rms_norm(xp, y, wp, eps, groups, group, op, s); });
    return;
  }
  // The whole-row kernel's order is cuda_norm.cuh's for these rows (512 < cols, aligned); last_resid_
  // is set only for rows the EXL3 GEMV can fuse (CudaExl3Linear::fusable_resid: cols a multiple of
  // 128, at most kExl3FusedNormMaxCols).
  const bool fusable = decode_fusion() && last_resid_ && last_resid_->x == xp && last_resid_->rows == x.rows() &&
                       last_resid_->cols == x.cols() && group == x.cols() && group > 512 && op != xp &&
                       reinterpret_cast<uintptr_t>(wp) % 16 == 0 && reinterpret_cast<uintptr_t>(op) % 16 == 0;
  const size_t key_size = key_.size();
  record({kRmsNorm, addr(xp), addr(wp), addr(op), bits(eps), static_cast<uint64_t>(groups),
          static_cast<uint64_t>(group)},
         [=](const std::byte*) { cuda::rms_norm(xp, wp, eps, groups, group, op, s); });
  if (fusable) last_norm_ = LastNorm{xp, wp, eps, op, x.rows(), x.cols(), key_size};
}

void CudaBackend::rope(DeviceTensor& x, int64_t head_dim, std::span<const int32_t> positions, const RopeParams& rp) {
  const int64_t rows = static_cast<int64_t>(positions.size());
  if (rows == 0) return;
  if (head_dim <= 0 || head_dim % 2 != 0 || x.cols() % head_dim != 0 ||
      static_cast<int64_t>(rp.inv_freq.size()) < head_dim / 2)
    fail(ErrorKind::kInternal, "CUDA rope: head_dim {} does not fit x {} ({} frequencies)", head_dim,
         shape_to_string(x.shape), rp.inv_freq.size());
  float* xp = f32(x);
  const int64_t cols = x.cols();
  const float scaling = rp.attention_scaling;
  const size_t pos_off = stage(positions.data(), positions.size() * 4);
  const size_t freq_off = stage(rp.inv_freq.data(), static_cast<size_t>(head_dim / 2) * 4);
  keep(x);
  cudaStream_t s = stream_;
  if (last_rope_ && !last_rope_->k && last_rope_->q != xp && last_rope_->rows == rows &&
      last_rope_->head_dim == head_dim && last_rope_->scaling == scaling && last_rope_->pos_off == pos_off &&
      last_rope_->freq_off == freq_off) {
    // rope(q) was the last op: one launch rotates both.
    LastRope lr = *last_rope_;
    launches_.pop_back();
    key_.resize(lr.key_size);
    lr.k = xp;
    lr.k_cols = cols;
    float* qp = lr.q;
    const int64_t q_cols = lr.q_cols;
    record({kRopeQk, addr(qp), addr(xp), static_cast<uint64_t>(rows), static_cast<uint64_t>(q_cols),
            static_cast<uint64_t>(cols), static_cast<uint64_t>(head_dim), bits(scaling), pos_off, freq_off},
           [=](const std::byte* st) {
             cuda::rope_qk_store(qp, q_cols, xp, cols, nullptr, rows, head_dim,
                                 reinterpret_cast<const int32_t*>(st + pos_off),
                                 reinterpret_cast<const float*>(st + freq_off), scaling, nullptr, nullptr, s);
           });
    last_rope_ = lr;
    return;
  }
  const size_t key_size = key_.size();
  record({kRope, addr(xp), static_cast<uint64_t>(rows), static_cast<uint64_t>(cols), static_cast<uint64_t>(head_dim),
          bits(scaling), pos_off, freq_off},
         [=](const std::byte* st) {
           cuda::rope(xp, rows, cols, head_dim, reinterpret_cast<const int32_t*>(st + pos_off),
                      reinterpret_cast<const float*>(st + freq_off), scaling, s);
         });
  last_rope_ = LastRope{xp, nullptr, rows, cols, 0, head_dim, scaling, pos_off, freq_off, key_size};
}

void CudaBackend::kv_store(const DeviceTensor& k, const DeviceTensor& v, std::span<const int32_t> positions,
                           DeviceTensor& k_cache, DeviceTensor& v_cache) {
  const int64_t rows = static_cast<int64_t>(positions.size()), width = k.cols();
  if (rows == 0) return;
  if (k_cache.dtype != DType::kF16 || v_cache.dtype != DType::kF16 || k_cache.cols() != width ||
      v_cache.cols() != width || v.cols() != width)
    fail(ErrorKind::kInternal, "CUDA kv_store: k {} / caches {} {} do not match (fp16 caches of the same width)",
         shape_to_string(k.shape), shape_to_string(k_cache.shape), dtype_name(k_cache.dtype));
  for (int32_t p : positions)
    if (p < 0 || p >= k_cache.rows())
      fail(ErrorKind::kInvalidArgument, "CUDA kv_store: position {} is outside the cache of {} rows", p,
           k_cache.rows());
  const float* kp = f32(k);
  const float* vp = f32(v);
  auto* kc = reinterpret_cast<uint16_t*>(ptr(k_cache));
  auto* vc = reinterpret_cast<uint16_t*>(ptr(v_cache));
  const size_t off = stage(positions.data(), positions.size() * 4);
  keep(k);
  keep(v);
  keep(k_cache);
  keep(v_cache);
  cudaStream_t s = stream_;
  if (last_rope_ && last_rope_->k == kp && last_rope_->rows == rows && last_rope_->k_cols == width &&
      last_rope_->pos_off == off && vp != last_rope_->q && vp != last_rope_->k) {
    // rope(q), rope(k) were the last ops: the fused launch also stores k and v.
    const LastRope lr = *last_rope_;
    launches_.pop_back();
    key_.resize(lr.key_size);
    float* qp = lr.q;
    float* kr = lr.k;
    const int64_t q_cols = lr.q_cols, head_dim = lr.head_dim;
    const float scaling = lr.scaling;
    const size_t freq_off = lr.freq_off;
    const size_t key_size = key_.size();
    record({kRopeQkStore, addr(qp), addr(kr), addr(vp), addr(kc), addr(vc), static_cast<uint64_t>(rows),
            static_cast<uint64_t>(q_cols), static_cast<uint64_t>(width), static_cast<uint64_t>(head_dim), bits(scaling),
            off, freq_off},
           [=](const std::byte* st) {
             cuda::rope_qk_store(qp, q_cols, kr, width, vp, rows, head_dim, reinterpret_cast<const int32_t*>(st + off),
                                 reinterpret_cast<const float*>(st + freq_off), scaling, kc, vc, s);
           });
    last_rope_store_ = LastRopeStore{qp, kr, vp, kc, vc, rows, q_cols, width, head_dim, scaling, off, freq_off, key_size};
    return;
  }
  record({kKvStore, addr(kp), addr(vp), addr(kc), addr(vc), static_cast<uint64_t>(rows), static_cast<uint64_t>(width),
          off},
         [=](const std::byte* st) {
           cuda::kv_store(kp, vp, reinterpret_cast<const int32_t*>(st + off), rows, width, kc, vc, s);
         });
}

void CudaBackend::attention(const DeviceTensor& q, const DeviceTensor& k_cache, const DeviceTensor& v_cache,
                            std::span<const int32_t> positions, const AttentionParams& ap, DeviceTensor& out) {
  const int64_t rows = static_cast<int64_t>(positions.size());
  if (rows == 0) return;
  if (ap.head_dim <= 0 || ap.head_dim % 2 != 0 || ap.head_dim > kAttentionMaxHeadDim)
    fail(ErrorKind::kUnsupported, "CUDA attention: head_dim {} is not supported (even, at most {})", ap.head_dim,
         kAttentionMaxHeadDim);
  if (ap.n_kv_heads <= 0 || ap.n_heads % ap.n_kv_heads != 0 || q.cols() != ap.n_heads * ap.head_dim ||
      k_cache.cols() != ap.n_kv_heads * ap.head_dim || k_cache.dtype != DType::kF16 || v_cache.dtype != DType::kF16)
    fail(ErrorKind::kInternal, "CUDA attention: q {} / cache {} do not fit {} heads, {} kv heads of {}",
         shape_to_string(q.shape), shape_to_string(k_cache.shape), ap.n_heads, ap.n_kv_heads, ap.head_dim);
  if (k_cache.offset % 4 != 0 || v_cache.offset % 4 != 0)
    fail(ErrorKind::kInternal, "CUDA attention: cache views must be 4-byte aligned");
  for (int32_t p : positions)
    if (p < 0 || p >= k_cache.rows())
      fail(ErrorKind::kInvalidArgument, "CUDA attention: position {} is outside the cache of {} rows", p,
           k_cache.rows());
  AttentionArgs a;
  a.q = f32(q);
  a.k_cache = reinterpret_cast<const uint16_t*>(ptr(k_cache));
  a.v_cache = reinterpret_cast<const uint16_t*>(ptr(v_cache));
  a.out = f32(out);
  a.rows = rows;
  a.n_heads = ap.n_heads;
  a.n_kv_heads = ap.n_kv_heads;
  a.head_dim = ap.head_dim;
  a.sliding_window = ap.sliding_window;
  a.scale = ap.scale;
  int64_t keys = 0;  // the most keys any row attends to
  for (int32_t p : positions) {
    const int64_t span = ap.sliding_window > 0 ? std::min<int64_t>(p + 1, ap.sliding_window) : int64_t{p} + 1;
    keys = std::max(keys, span);
  }
  a.splits = attention_splits(rows, ap.n_heads, ap.n_kv_heads, sm_count_, keys);
  const bool decode = attention_takes_decode_kernel(a);
  a.cluster = decode && attention_cluster_usable(a) ? attention_cluster_warps() : 0;
  segment_cluster_ = segment_cluster_ || a.cluster != 0;
  if (a.splits > 1 && !a.cluster) {
    a.partial = reinterpret_cast<float*>(scratch(1, static_cast<size_t>(attention_partial_floats(a)) * 4));
    if (attention_merge_fused() && a.n_kv_heads <= kAttentionDoneCounters)
      a.done = reinterpret_cast<unsigned*>(attention_done_->data());
  }
  const size_t off = stage(positions.data(), positions.size() * 4);
  keep(q);
  keep(k_cache);
  keep(v_cache);
  keep(out);
  cudaStream_t s = stream_;
  if (const auto& lr = last_rope_store_;
      lr && rope_attention_fold() && lr->rows == rows && lr->q == a.q && lr->kc == a.k_cache &&
      lr->vc == a.v_cache && lr->pos_off == off && lr->head_dim == a.head_dim &&
      lr->q_cols == a.n_heads * a.head_dim && lr->width == a.n_kv_heads * a.head_dim &&
      decode && (a.splits == 1 || a.cluster || a.n_kv_heads <= kAttentionDoneCounters)) {
    // rope(q), rope(k), kv_store(k, v) were the last launch: the decode kernel does them itself.
    const LastRopeStore f = *lr;
    if (a.splits > 1 && !a.done && !a.cluster) a.q_done = reinterpret_cast<unsigned*>(attention_done_->data()) + kAttentionDoneCounters;
    launches_.pop_back();
    key_.resize(f.key_size);
    a.rope_k = f.k;
    a.rope_v = f.v;
    a.rope_scaling = f.scaling;
    const size_t freq_off = f.freq_off;
    record({kAttentionRope, addr(a.q), addr(a.k_cache), addr(a.v_cache), addr(a.out), addr(a.partial), addr(a.done), addr(a.q_done),
            addr(a.rope_k), addr(a.rope_v), static_cast<uint64_t>(a.n_heads), static_cast<uint64_t>(a.n_kv_heads),
            static_cast<uint64_t>(a.head_dim), static_cast<uint64_t>(a.sliding_window), bits(a.scale),
            bits(a.rope_scaling), static_cast<uint64_t>(a.splits) | static_cast<uint64_t>(a.cluster) << 32, off, freq_off},
           [=](const std::byte* st) {
             AttentionArgs b = a;
             b.pos = reinterpret_cast<const int32_t*>(st + off);
             b.rope_inv_freq = reinterpret_cast<const float*>(st + freq_off);
             cuda::attention(b, s);
           });
    return;
  }
  record({kAttention, addr(a.q), addr(a.k_cache), addr(a.v_cache), addr(a.out), addr(a.partial), addr(a.done),
          static_cast<uint64_t>(rows), static_cast<uint64_t>(a.n_heads), static_cast<uint64_t>(a.n_kv_heads),
          static_cast<uint64_t>(a.head_dim), static_cast<uint64_t>(a.sliding_window), bits(a.scale),
          static_cast<uint64_t>(a.splits) | static_cast<uint64_t>(a.cluster) << 32, off,
          // the kernel choice (set_attention_kernel can change it): a graph replays the kernel it captured
          static_cast<uint64_t>(attention_kernel_for(rows, a.n_heads, a.n_kv_heads, a.head_dim, a.splits))},
         [=](const std::byte* st) {
           AttentionArgs b = a;
           b.pos = reinterpret_cast<const int32_t*>(st + off);
           cuda::attention(b, s);
         });
}

void CudaBackend::silu_mul(const DeviceTensor& gate, const DeviceTensor& up, DeviceTensor& out) {
  const int64_t n = shape_numel(gate.shape);
  if (shape_numel(up.shape) != n || shape_numel(out.shape) != n)
    fail(ErrorKind::kInternal, "CUDA silu_mul: shapes {} {} {} differ", shape_to_string(gate.shape),
         shape_to_string(up.shape), shape_to_string(out.shape));
  const float* g = f32(gate);
  const float* u = f32(up);
  float* o = f32(out);
  keep(gate);
  keep(up);
  keep(out);
  cudaStream_t s = stream_;
  const size_t key_size = key_.size();
  record({kSiluMul, addr(g), addr(u), addr(o), static_cast<uint64_t>(n)},
         [=](const std::byte*) { cuda::silu_mul(g, u, o, n, s); });
  last_silu_ = LastSilu{g, u, o, n, key_size};
}

void CudaBackend::add(DeviceTensor& x, const DeviceTensor& y) {
  const int64_t n = shape_numel(x.shape);
  if (shape_numel(y.shape) != n)
    fail(ErrorKind::kInternal, "CUDA add: shapes {} and {} differ", shape_to_string(x.shape), shape_to_string(y.shape));
  float* a = f32(x);
  const float* b = f32(y);
  keep(x);
  keep(y);
  cudaStream_t s = stream_;
#if TRELLIS_CUDA_HAS_EXL3
  if (decode_fusion() && last_exl3_ && last_exl3_->y == b && !last_exl3_->resid && !last_exl3_->normed && last_exl3_->impl->fusable_resid(last_exl3_->m) &&
      x.rows() == last_exl3_->m && x.cols() == last_exl3_->impl->out_features() && y.rows() == x.rows() &&
      y.cols() == x.cols() && a != last_exl3_->x && a != last_exl3_->up && a != b &&
      reinterpret_cast<uintptr_t>(a) % 16 == 0) {
    // The linear that wrote y adds it into x itself (and x's group sums of squares: last_resid_).
    LastExl3 c = *last_exl3_;
    launches_.pop_back();
    key_.resize(c.key_size);
    c.resid = a;
    record_exl3(c, nullptr);
    last_resid_ = LastResid{a, x.rows(), x.cols()};
    return;
  }
#endif
  const size_t key_size = key_.size();
  record({kAdd, addr(a), addr(b), static_cast<uint64_t>(n)}, [=](const std::byte*) { cuda::add(a, b, n, s); });
  last_add_ = LastAdd{a, b, n, key_size};
}

void CudaBackend::gram_accumulate(const DeviceTensor& x, DeviceTensor& acc, DeviceTensor& stats) {
  const int64_t k = acc.rows(), rows = x.rows(), cols = x.cols();
  if (x.dtype != DType::kF32 || acc.dtype != DType::kF32 || stats.dtype != DType::kF32 || acc.cols() != k ||
      cols > k || shape_numel(stats.shape) < 2)
    fail(ErrorKind::kInternal, "CUDA gram_accumulate: bad shapes x {} acc {} stats {}", shape_to_string(x.shape),
         shape_to_string(acc.shape), shape_to_string(stats.shape));
  if (rows == 0) return;
  const float* xp = f32(x);
  float* ap = f32(acc);
  float* sp = f32(stats);
  keep(x);
  keep(acc);
  keep(stats);
  auto* xs = reinterpret_cast<float*>(scratch(3, static_cast<size_t>(rows * cols) * 4));
  cudaStream_t s = stream_;
  cublasHandle_t h = cublas_;
  record({kGram, addr(xp), addr(ap), addr(sp), addr(xs), static_cast<uint64_t>(rows), static_cast<uint64_t>(cols),
          static_cast<uint64_t>(k)},
         [=](const std::byte*) {
           gram_filter(xp, rows, cols, xs, sp, s);
           // Row-major xs [rows, cols] is column-major X [cols, rows]; X·Xᵀ into column-major
           // acc's upper triangle = row-major acc's lower triangle.
           const float one = 1.0f;
           check(cublasSsyrk(h, CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_N, static_cast<int>(cols), static_cast<int>(rows),
                             &one, xs, static_cast<int>(cols), &one, ap, static_cast<int>(k)),
                 "gram_accumulate (cublasSsyrk)");
         });
}

}  // namespace trellis::cuda

namespace trellis {

std::unique_ptr<Backend> make_cuda_backend(int index) { return std::make_unique<cuda::CudaBackend>(index); }

}  // namespace trellis
