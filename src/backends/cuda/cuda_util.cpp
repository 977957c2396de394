// backends/cuda/cuda_util.cpp: see cuda_util.h.
#include "backends/cuda/cuda_util.h"

#include <atomic>
#include <cstdlib>

#include "backends/cuda/cuda_exl3_kernels.cuh"
#include "core/env.h"
#include "core/error.h"

namespace trellis::cuda {

namespace {
std::atomic<int> g_exact_prefill{-1};  // -1: not read yet; then 0 or 1
std::atomic<int64_t> g_reconstruct_rows{-1};  // -1: not read yet; then the threshold (0: off)
std::atomic<int> g_prefill_fusion{-1};         // -1: not read yet; then 0 or 1
std::atomic<int> g_wide_transforms{-1};        // -1: not read yet; then 0 or 1
std::atomic<int> g_gemv_halves{-1};            // -1: not read yet; then 0 or 1
std::atomic<int> g_gemv_weights_a{-1};         // -1: not read yet; then 0 or 1
std::atomic<int> g_gemv_fused_out{-1};         // -1: not read yet; then 0 or 1
std::atomic<int> g_gemv_fused_in{-1};          // -1: not read yet; then 0 or 1
std::atomic<int> g_gemv_occupancy{-1};         // -1: not read yet; then 0 or 1
std::atomic<int> g_decode_fusion{-1};          // -1: not read yet; then 0 or 1

}  // namespace

bool cached_switch(std::atomic<int>& slot, const char* env, bool dflt) {
  int on = slot.load(std::memory_order_relaxed);
  if (on < 0) {
    const char* e = std::getenv(env);
    on = e && *e ? std::string_view(e) != "0" : dflt;
    int expected = -1;
    slot.compare_exchange_strong(expected, on);
    on = slot.load();
  }
  return on != 0;
}

void set_prefill_fusion(bool on) { g_prefill_fusion.store(on ? 1 : 0); }
bool prefill_fusion() { return cached_switch(g_prefill_fusion, "TRELLIS_CUDA_PREFILL_FUSION", true); }

void set_wide_transforms(bool on) { g_wide_transforms.store(on ? 1 : 0); }
bool wide_transforms() { return cached_switch(g_wide_transforms, "TRELLIS_CUDA_WIDE_TRANSFORMS", true); }

void set_gemv_halves(bool on) { g_gemv_halves.store(on ? 1 : 0); }
bool gemv_halves() { return cached_switch(g_gemv_halves, "TRELLIS_CUDA_GEMV_HALVES", false); }

void set_gemv_weights_a(bool on) { g_gemv_weights_a.store(on ? 1 : 0); }
bool gemv_weights_a() { return cached_switch(g_gemv_weights_a, "TRELLIS_CUDA_GEMV_WEIGHTS_A", true); }

void set_gemv_fused_out(bool on) { g_gemv_fused_out.store(on ? 1 : 0); }
bool gemv_fused_out() { return cached_switch(g_gemv_fused_out, "TRELLIS_CUDA_GEMV_FUSED_OUT", false); }

void set_gemv_fused_in(bool on) { g_gemv_fused_in.store(on ? 1 : 0); }
bool gemv_fused_in() { return cached_switch(g_gemv_fused_in, "TRELLIS_CUDA_GEMV_FUSED_IN", true); }

void set_gemv_occupancy(bool on) { g_gemv_occupancy.store(on ? 1 : 0); }
bool gemv_occupancy() { return cached_switch(g_gemv_occupancy, "TRELLIS_CUDA_GEMV_OCCUPANCY", false); }

void set_decode_fusion(bool on) { g_decode_fusion.store(on ? 1 : 0); }
bool decode_fusion() { return cached_switch(g_decode_fusion, "TRELLIS_CUDA_DECODE_FUSION", true); }

int gemv_blocks_per_sm() {
  static const int blocks =
      static_cast<int>(env_int("TRELLIS_CUDA_GEMV_BLOCKS_PER_SM", exl3k::kGemvBlocksPerSm, 1, 32));
  return blocks;
}

void set_fused_reconstruct_rows(int64_t rows) { g_reconstruct_rows.store(rows < 0 ? 0 : rows); }

bool fused_reconstruct(int64_t m) {
  int64_t rows = g_reconstruct_rows.load(std::memory_order_relaxed);
  if (rows < 0) {
    int64_t v = kFusedReconstructRows;
    if (const char* e = std::getenv("TRELLIS_CUDA_FUSED_RECONSTRUCT"); e && *e) {
      char* end = nullptr;
      const long long parsed = std::strtoll(e, &end, 10);
      if (end && *end == '\0' && parsed >= 0) v = parsed;
    }
    int64_t expected = -1;
    g_reconstruct_rows.compare_exchange_strong(expected, v);
    rows = g_reconstruct_rows.load();
  }
  return rows > 0 && m >= rows && gemm_act_parts(m) == 1;
}

void set_exact_prefill(bool exact) { g_exact_prefill.store(exact ? 1 : 0); }

int gemm_act_parts(int64_t m) {
  return m <= kSplitActMaxRows || cached_switch(g_exact_prefill, "TRELLIS_CUDA_EXACT_PREFILL", false) ? 2 : 1;
}

bool pdl_enabled() {
  static const bool allowed = [] {
    const char* e = std::getenv("TRELLIS_CUDA_PDL");
    return !(e && std::string_view(e) == "0");
  }();
  static std::atomic<int> cached[64] = {};  // 0 unknown, 1 off, 2 on
  int device = 0;
  if (!allowed || cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= 64) return false;
  if (cached[device] == 0) {
    int major = 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
    cached[device] = major >= 9 ? 2 : 1;
  }
  return cached[device] == 2;
}

void raise(ErrorKind kind, const std::string& message) { throw Error(kind, message); }

void check_failed(cudaError_t e, std::string_view what) {
  cudaGetLastError();
  fail(e == cudaErrorMemoryAllocation ? ErrorKind::kOutOfMemory : ErrorKind::kInternal, "CUDA error in {}: {}: {}",
       what, cudaGetErrorName(e), cudaGetErrorString(e));
}

void check_failed(cublasStatus_t s, std::string_view what) {
  fail(s == CUBLAS_STATUS_ALLOC_FAILED ? ErrorKind::kOutOfMemory : ErrorKind::kInternal, "cuBLAS error in {}: {}",
       what, cublasGetStatusString(s));
}

void* device_malloc(size_t bytes, std::string_view what) {
  void* p = nullptr;
  if (bytes == 0) bytes = 1;
  const cudaError_t e = cudaMalloc(&p, bytes);
  if (e == cudaSuccess) return p;
  cudaGetLastError();
  size_t free_b = 0, total_b = 0;
  cudaMemGetInfo(&free_b, &total_b);
  cudaGetLastError();
  constexpr double kMiB = 1 << 20;
  if (e == cudaErrorMemoryAllocation)
    fail(ErrorKind::kOutOfMemory,
         "CUDA: out of memory allocating {}: {} bytes ({:.1f} MiB) needed, {} bytes ({:.1f} MiB) free of {:.1f} MiB",
         what, bytes, static_cast<double>(bytes) / kMiB, free_b, static_cast<double>(free_b) / kMiB,
         static_cast<double>(total_b) / kMiB);
  fail(ErrorKind::kInternal, "CUDA error allocating {} ({} bytes): {}: {}", what, bytes, cudaGetErrorName(e),
       cudaGetErrorString(e));
}

}  // namespace trellis::cuda
