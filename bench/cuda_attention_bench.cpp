// bench/cuda_attention_bench.cpp: trellis_bench_cuda_attention, CUDA prefill attention (one
// layer's cuda::attention call) with each kernel in the same run: the fp32 kernel, the first
// tensor-core kernel (attention_tc_kernel, TRELLIS_CUDA_TC_ATTENTION=1) and the pipelined one
// (attention_flash_kernel, the default; also with 4 warps per block as "flash_w4"). Prints one
// JSON object; exits 77 without a CUDA device.
//
// Shape: Llama-3.1-8B by default (32 query heads, 8 kv heads, head_dim 128, causal), prompts of
// --tokens new rows after a cached prefix of --prefix rows (pairs, in order). Q is random fp32, the
// fp16 K/V cache random halves; positions prefix .. prefix + n - 1. Each kernel is launched
// --warmup times, then timed --reps times with CUDA events around one launch; the median is
// reported with the TFLOP/s it means (4 · head_dim flops per (query head, visible key)) and the
// output's relative RMS difference from the fp32 kernel's. time_ratio = flash_us / tc_us.
#include <CLI/CLI.hpp>
#include <cuda_runtime.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "backends/cuda/cuda_attention_flash.h"
#include "backends/cuda/cuda_ops.h"
#include "gemv_bench_util.h"

namespace {

namespace cuda = trellis::cuda;
using trellis::bench::random_halves;

void ck(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

template <typename T>
T* device_copy(const std::vector<T>& h) {
  void* p = nullptr;
  ck(cudaMalloc(&p, h.size() * sizeof(T)), "cudaMalloc");
  ck(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice), "upload");
  return static_cast<T*>(p);
}

struct Kernel {
  cuda::AttentionKernel id;
  int flash_warps;  // set_attention_flash_warps() for kFlash
  const char* name;
};
// fp32 first: the others are compared with its output. flash_w4: the flash kernel with 4 warps
// per block (TRELLIS_CUDA_FLASH_WARPS=4), a tuning A/B.
constexpr Kernel kKernels[] = {{cuda::AttentionKernel::kFp32, 8, "fp32"},
                               {cuda::AttentionKernel::kTensorCore, 8, "tc"},
                               {cuda::AttentionKernel::kFlash, 8, "flash"},
                               {cuda::AttentionKernel::kFlash, 4, "flash_w4"}};
const char* kernel_name(cuda::AttentionKernel k) {
  return k == cuda::AttentionKernel::kFp32 ? "fp32" : k == cuda::AttentionKernel::kTensorCore ? "tc" : "flash";
}

double rel_rms(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    num += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
    den += static_cast<double>(want[i]) * want[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"CUDA prefill attention: fp32, tensor-core and flash kernels, JSON on stdout"};
  std::vector<int64_t> tokens{512, 2048, 4096, 512}, prefixes{0, 0, 0, 2048};
  int64_t n_heads = 32, n_kv_heads = 8, head_dim = 128, window = 0;
  int reps = 20, warmup = 3;
  app.add_option("--tokens", tokens, "new rows per case");
  app.add_option("--prefix", prefixes, "cached rows before them, per case (same count as --tokens)");
  app.add_option("--heads", n_heads, "query heads");
  app.add_option("--kv-heads", n_kv_heads, "kv heads");
  app.add_option("--head-dim", head_dim, "head_dim");
  app.add_option("--window", window, "sliding window (0: none)");
  app.add_option("--reps", reps, "timed launches per kernel (median reported)");
  app.add_option("--warmup", warmup, "untimed launches per kernel");
  CLI11_PARSE(app, argc, argv);
  if (prefixes.size() != tokens.size() || n_kv_heads <= 0 || n_heads % n_kv_heads != 0 || reps < 1) {
    std::fprintf(stderr, "bad arguments: --prefix needs one value per --tokens; kv heads must divide heads\n");
    return 1;
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "no CUDA device\n");
    return 77;  // "skipped" for CTest
  }

  cudaDeviceProp prop{};
  ck(cudaGetDeviceProperties(&prop, 0), "device properties");
  cudaStream_t stream;
  ck(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");
  cudaEvent_t e0, e1;
  ck(cudaEventCreate(&e0), "event");
  ck(cudaEventCreate(&e1), "event");
  cuda::attention_prepare();

  nlohmann::json out;
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
  out["bench"] = "cuda_attention";
  out["date"] = date;
  out["device"] = prop.name;
  out["sms"] = prop.multiProcessorCount;
  out["results"] = nlohmann::json::array();

  for (size_t ci = 0; ci < tokens.size(); ++ci) {
    const int64_t n = tokens[ci], prefix = prefixes[ci], ctx = prefix + n;
    const int64_t qw = n_heads * head_dim, kvw = n_kv_heads * head_dim;
    std::vector<float> q(static_cast<size_t>(n * qw));
    {
      const auto qh = random_halves(q.size(), 2.0f, 10 + ci);
      for (size_t i = 0; i < q.size(); ++i) q[i] = trellis::fp16_to_fp32(qh[i]);
    }
    std::vector<int32_t> pos(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) pos[static_cast<size_t>(i)] = static_cast<int32_t>(prefix + i);
    float* dq = device_copy(q);
    uint16_t* dk = device_copy(random_halves(static_cast<size_t>(ctx * kvw), 2.0f, 20 + ci));
    uint16_t* dv = device_copy(random_halves(static_cast<size_t>(ctx * kvw), 1.0f, 30 + ci));
    int32_t* dpos = device_copy(pos);
    float* dout = nullptr;
    ck(cudaMalloc(&dout, q.size() * sizeof(float)), "cudaMalloc");

    cuda::AttentionArgs a;
    a.q = dq;
    a.k_cache = dk;
    a.v_cache = dv;
    a.pos = dpos;
    a.out = dout;
    a.rows = n;
    a.n_heads = n_heads;
    a.n_kv_heads = n_kv_heads;
    a.head_dim = head_dim;
    a.sliding_window = window;
    a.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    a.splits = cuda::attention_splits(n, n_heads, n_kv_heads, prop.multiProcessorCount);
    float* partial = nullptr;
    if (a.splits > 1) {
      ck(cudaMalloc(&partial, static_cast<size_t>(cuda::attention_partial_floats(a)) * sizeof(float)), "cudaMalloc");
      a.partial = partial;
    }
    double visible = 0;  // (row, key) pairs attended
    for (int64_t i = 0; i < n; ++i) {
      const int64_t p = prefix + i;
      visible += static_cast<double>(window > 0 ? std::min(p + 1, window) : p + 1);
    }
    const double flops = 4.0 * static_cast<double>(head_dim * n_heads) * visible;

    nlohmann::json r = {{"tokens", n},         {"prefix", prefix},     {"heads", n_heads}, {"kv_heads", n_kv_heads},
                        {"head_dim", head_dim}, {"window", window},     {"splits", a.splits}};
    std::vector<float> ref;
    double us[4] = {0, 0, 0, 0};
    for (size_t ki = 0; ki < std::size(kKernels); ++ki) {
      const Kernel& k = kKernels[ki];
      cuda::set_attention_kernel(k.id);
      cuda::set_attention_flash_warps(k.flash_warps);
      const cuda::AttentionKernel ran = cuda::attention_kernel_for(n, n_heads, n_kv_heads, head_dim, a.splits);
      std::vector<double> t;
      for (int i = 0; i < warmup; ++i) cuda::attention(a, stream);
      for (int i = 0; i < reps; ++i) {
        ck(cudaEventRecord(e0, stream), "record");
        cuda::attention(a, stream);
        ck(cudaEventRecord(e1, stream), "record");
        ck(cudaEventSynchronize(e1), "sync");
        float ms = 0;
        ck(cudaEventElapsedTime(&ms, e0, e1), "elapsed");
        t.push_back(ms * 1e3);
      }
      std::sort(t.begin(), t.end());
      const double med = t[t.size() / 2];
      us[ki] = med;
      std::vector<float> o(q.size());
      ck(cudaMemcpy(o.data(), dout, o.size() * sizeof(float), cudaMemcpyDeviceToHost), "download");
      if (k.id == cuda::AttentionKernel::kFp32) ref = o;
      r[k.name] = {{"us", med},
                   {"min_us", t.front()},
                   {"tflops", flops / (med * 1e-6) * 1e-12},
                   {"ran", kernel_name(ran)},
                   {"rel_rms_vs_fp32", rel_rms(o, ref)}};
    }
    r["time_ratio_flash_over_tc"] = us[2] / us[1];
    r["time_ratio_flash_over_fp32"] = us[2] / us[0];
    r["time_ratio_flash_w4_over_tc"] = us[3] / us[1];
    std::fprintf(stderr,
                 "prefix %5lld + %5lld tokens: fp32 %9.1f us  tc %8.1f us  flash %8.1f us  flash_w4 %8.1f us  "
                 "flash/tc %.3f\n",
                 static_cast<long long>(prefix), static_cast<long long>(n), us[0], us[1], us[2], us[3], us[2] / us[1]);
    out["results"].push_back(r);
    cudaFree(dq);
    cudaFree(dk);
    cudaFree(dv);
    cudaFree(dpos);
    cudaFree(dout);
    cudaFree(partial);
  }
  cuda::set_attention_flash_warps(8);
  std::cout << out.dump(1) << "\n";
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaStreamDestroy(stream);
  return 0;
}
