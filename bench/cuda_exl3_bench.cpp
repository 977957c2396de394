// bench/cuda_exl3_bench.cpp: trellis_bench_cuda_exl3, the CUDA EXL3 GEMV (m = 1) for each K and
// codebook next to cuBLAS's fp16 GEMV (cublasGemmEx, m = 1) on the same shapes, in the same run.
// Prints one JSON object.
//
// Weights are random bits (every bit string is a valid trellis). Each configuration rotates over
// enough copies of its weights to exceed --cold-mib (default 160 MiB, > 3x the H100's 50 MB L2),
// so weights stream from HBM. Calls are captured into one CUDA graph (no launch gaps), the graph is
// replayed --warmup times, then timed --reps times with CUDA events; time per call = median
// replay time / calls per replay. "gemv" times the product kernel alone (what cuBLAS's number is
// compared with); "forward" adds the input and output Hadamard kernels (what a model pays).
// GB/s counts trellis bytes (k·n·K/8) for EXL3 and weight bytes (2·k·n) for cuBLAS.
#include <CLI/CLI.hpp>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "gemv_bench_util.h"
#include "backends/cuda/cuda_exl3.h"
#include "core/fp16.h"
#include "exl3/codebook.h"
#include "exl3/linear.h"

namespace {

using trellis::bench::fill_random;
using trellis::bench::random_halves;
using trellis::bench::copies_for;

using trellis::cuda::CudaExl3Linear;
using trellis::exl3::Codebook;

void ck(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}
void ck(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "%s: cuBLAS status %d\n", what, static_cast<int>(s));
    std::exit(1);
  }
}

// Pinned host memory (fast uploads of the copies).
struct Pinned {
  void* p = nullptr;
  explicit Pinned(size_t bytes) { ck(cudaMallocHost(&p, bytes), "cudaMallocHost"); }
  ~Pinned() { cudaFreeHost(p); }
};

// Captures `calls` invocations of body(i) into a graph; returns the median seconds per call.
template <typename Body>
double time_graph(cudaStream_t stream, int calls, int warmup, int reps, Body body) {
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  ck(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "begin capture");
  for (int i = 0; i < calls; ++i) body(i);
  ck(cudaStreamEndCapture(stream, &graph), "end capture");
  ck(cudaGraphInstantiate(&exec, graph, 0), "graph instantiate");
  cudaEvent_t e0, e1;
  ck(cudaEventCreate(&e0), "event");
  ck(cudaEventCreate(&e1), "event");
  for (int i = 0; i < warmup; ++i) ck(cudaGraphLaunch(exec, stream), "graph launch");
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    ck(cudaEventRecord(e0, stream), "record");
    ck(cudaGraphLaunch(exec, stream), "graph launch");
    ck(cudaEventRecord(e1, stream), "record");
    ck(cudaEventSynchronize(e1), "sync");
    float ms = 0;
    ck(cudaEventElapsedTime(&ms, e0, e1), "elapsed");
    t.push_back(ms * 1e-3 / calls);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"CUDA EXL3 GEMV vs cuBLAS fp16 GEMV, JSON on stdout"};
  std::vector<int> Ks{1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<std::string> codebooks{"3inst", "mcg", "mul1"};
  std::vector<std::string> shapes{"4096x4096", "4096x14336", "14336x4096", "8192x28672"};
  int reps = 25, warmup = 3, min_calls = 32;
  size_t cold_mib = 160;
  app.add_option("--K", Ks, "bits per weight to run");
  app.add_option("--codebooks", codebooks, "codebooks to run (3inst, mcg, mul1)");
  app.add_option("--shapes", shapes, "k x n shapes (input x output features)");
  app.add_option("--reps", reps, "timed graph replays (median reported)");
  app.add_option("--warmup", warmup, "untimed graph replays");
  app.add_option("--cold-mib", cold_mib, "rotate over copies totalling at least this much");
  CLI11_PARSE(app, argc, argv);
  const size_t cold = cold_mib << 20;

  cudaDeviceProp prop{};
  ck(cudaGetDeviceProperties(&prop, 0), "device properties");
  cudaStream_t stream;
  ck(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");
  cublasHandle_t blas;
  ck(cublasCreate(&blas), "cublasCreate");
  void* ws = nullptr;
  ck(cudaMalloc(&ws, 32 << 20), "workspace");
  ck(cublasSetWorkspace(blas, ws, 32 << 20), "workspace");
  ck(cublasSetStream(blas, stream), "stream");

  nlohmann::json out;
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
  out["bench"] = "cuda_exl3_gemv";
  out["date"] = date;
  out["device"] = prop.name;
  out["sms"] = prop.multiProcessorCount;
  out["l2_bytes"] = prop.l2CacheSize;
  out["cold_bytes"] = cold;
  out["results"] = nlohmann::json::array();

  for (const std::string& shape : shapes) {
    int64_t k = 0, n = 0;
    if (std::sscanf(shape.c_str(), "%ldx%ld", &k, &n) != 2 || k % 128 || n % 128) {
      std::fprintf(stderr, "bad shape %s\n", shape.c_str());
      return 1;
    }
    // cuBLAS fp16 GEMV baseline: W (n, in = k) fp16 row-major, x fp16, y fp32.
    const size_t wbytes = static_cast<size_t>(k * n) * 2;
    const int wcopies = copies_for(wbytes, cold);
    std::vector<void*> ws16(static_cast<size_t>(wcopies));
    {
      Pinned h(wbytes);
      const auto vals = random_halves(static_cast<size_t>(k * n), 0.05f, 1);
      std::memcpy(h.p, vals.data(), wbytes);
      for (auto& w : ws16) {
        ck(cudaMalloc(&w, wbytes), "cudaMalloc weights");
        ck(cudaMemcpy(w, h.p, wbytes, cudaMemcpyHostToDevice), "upload weights");
      }
    }
    void *x16, *y32, *x32, *scratch;
    ck(cudaMalloc(&x16, static_cast<size_t>(k) * 2), "x");
    ck(cudaMalloc(&x32, static_cast<size_t>(k) * 4), "x");
    ck(cudaMalloc(&y32, static_cast<size_t>(n) * 4), "y");
    {
      const auto xv = random_halves(static_cast<size_t>(k), 1.0f, 2);
      std::vector<float> xf(xv.size());
      for (size_t i = 0; i < xv.size(); ++i) xf[i] = trellis::fp16_to_fp32(xv[i]);
      ck(cudaMemcpy(x16, xv.data(), xv.size() * 2, cudaMemcpyHostToDevice), "x");
      ck(cudaMemcpy(x32, xf.data(), xf.size() * 4, cudaMemcpyHostToDevice), "x");
    }
    const float one = 1.0f, zero = 0.0f;
    const int bcalls = std::max(min_calls, wcopies);
    const double cublas_s = time_graph(stream, bcalls, warmup, reps, [&](int i) {
      ck(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), 1, static_cast<int>(k), &one,
                      ws16[static_cast<size_t>(i % wcopies)], CUDA_R_16F, static_cast<int>(k), x16, CUDA_R_16F,
                      static_cast<int>(k), &zero, y32, CUDA_R_32F, static_cast<int>(n), CUBLAS_COMPUTE_32F,
                      CUBLAS_GEMM_DEFAULT),
         "cublasGemmEx");
    });
    const double cublas_gbps = static_cast<double>(wbytes) / cublas_s * 1e-9;
    for (void* w : ws16) cudaFree(w);
    out["cublas"][shape] = {{"us", cublas_s * 1e6}, {"gbps", cublas_gbps}, {"copies", wcopies}};

    const auto suh = random_halves(static_cast<size_t>(k), 0.05f, 3);
    const auto svh = random_halves(static_cast<size_t>(n), 1.0f, 4);
    for (int K : Ks) {
      const size_t tbytes = static_cast<size_t>(k * n) * static_cast<size_t>(K) / 8;
      Pinned trellis(tbytes);
      fill_random(trellis.p, tbytes, 100 + static_cast<uint64_t>(K));
      const int copies = copies_for(tbytes, cold);
      for (const std::string& cbname : codebooks) {
        const auto cb = trellis::exl3::codebook_from_name(cbname);
        if (!cb) {
          std::fprintf(stderr, "bad codebook %s\n", cbname.c_str());
          return 1;
        }
        trellis::exl3::Exl3LinearView v;
        v.k = k;
        v.n = n;
        v.K = K;
        v.codebook = *cb;
        v.trellis = trellis.p;
        v.suh = suh.data();
        v.svh = svh.data();
        std::vector<std::unique_ptr<CudaExl3Linear>> layers;
        for (int c = 0; c < copies; ++c) layers.push_back(CudaExl3Linear::create(v, std::nullopt, k, n, stream));
        ck(cudaStreamSynchronize(stream), "upload");
        ck(cudaMalloc(&scratch, layers[0]->scratch_bytes(1)), "scratch");
        layers[0]->forward(static_cast<const float*>(x32), 1, static_cast<float*>(y32), stream, scratch);
        const int calls = std::max(min_calls, copies);
        const double gemv_s = time_graph(stream, calls, warmup, reps, [&](int i) {
          layers[static_cast<size_t>(i % copies)]->product_only(1, stream, scratch);
        });
        const double fwd_s = time_graph(stream, calls, warmup, reps, [&](int i) {
          layers[static_cast<size_t>(i % copies)]->forward(static_cast<const float*>(x32), 1, static_cast<float*>(y32),
                                                            stream, scratch);
        });
        ck(cudaStreamSynchronize(stream), "run");
        const double gbps = static_cast<double>(tbytes) / gemv_s * 1e-9;
        const double fgbps = static_cast<double>(tbytes) / fwd_s * 1e-9;
        out["results"].push_back({{"shape", shape},
                                  {"k", k},
                                  {"n", n},
                                  {"K", K},
                                  {"codebook", cbname},
                                  {"variant", layers[0]->gemv_variant_name()},
                                  {"splits", layers[0]->gemv_splits()},
                                  {"copies", copies},
                                  {"gemv_us", gemv_s * 1e6},
                                  {"gemv_gbps", gbps},
                                  {"forward_us", fwd_s * 1e6},
                                  {"forward_gbps", fgbps},
                                  {"cublas_us", cublas_s * 1e6},
                                  {"cublas_gbps", cublas_gbps},
                                  {"ratio_gemv", gbps / cublas_gbps},
                                  {"ratio_forward", fgbps / cublas_gbps}});
        std::fprintf(stderr, "%-11s K=%d %-5s gemv %8.2f us %7.0f GB/s  fwd %8.2f us  cuBLAS %7.0f GB/s  ratio %.2f\n",
                     shape.c_str(), K, cbname.c_str(), gemv_s * 1e6, gbps, fwd_s * 1e6, cublas_gbps, gbps / cublas_gbps);
        cudaFree(scratch);
      }
    }
    cudaFree(x16);
    cudaFree(x32);
    cudaFree(y32);
  }
  std::cout << out.dump(1) << "\n";
  cublasDestroy(blas);
  cudaFree(ws);
  cudaStreamDestroy(stream);
  return 0;
}
