// bench/vulkan_exl3_bench.cpp: trellis_bench_vulkan_exl3, the Vulkan backend's EXL3 GEMV (m = 1)
// for each K and codebook next to its own fp16 dense GEMV (matmul_f16_gemv, m = 1) on the same
// shapes, in the same run. Prints one JSON object (progress lines on stderr).
//
// Modelled on bench/cuda_exl3_bench.cpp. Weights are random bits (every bit string is a valid
// trellis). Each configuration rotates over enough copies of its weights to exceed --cold-mib
// (default 160 MiB, several times the L2 of current GPUs), so weights stream from memory. One
// timed repetition is one segment of `calls` calls (the backend replays the recorded command
// buffer from the second repetition on, like a decode step); its GPU time comes from timestamp
// queries around the calls when the device has them, else from the wall time of the submission
// (reported as "clock"). Time per call = median repetition / calls; an untimed first repetition
// multiplies the calls until a repetition lasts --min-rep-ms (default 2, at most 64x); --rounds N
// sweeps every shape N times one after another and reports each variant's median over the sweeps,
// with every sweep's forward time ("forward_us_rounds"; "us_rounds" for the dense GEMV): single
// shapes still moved 2x between runs on the H100 (docs/BENCHMARKS.md, session 25). "gemv" times the product
// shader alone (what the dense GEMV is compared with); "forward" adds the input and output
// Hadamard passes (what a model pays). GB/s counts trellis bytes (k·n·K/8) for EXL3 and weight
// bytes (2·k·n) for the dense GEMV. Consecutive calls write the same output, so the backend puts
// a barrier between them, as between the dependent ops of a model.
// --gemm-m M (M > 0) adds the prefill products at M rows per shape ("gemm" in the JSON, TFLOP/s
// = 2·M·k·n / time): the dense fp16 linear and the EXL3 linear (first K and codebook) through
// each GEMM path the device has: "tiled" (matmul_f16_tiled, fp32 activations) and "coop_khr" /
// "coop_nv" (convert_f16 + matmul_f16_coop), "coop2_<BMxBNxBK>_khr" / "_nv"
// (matmul_f16_coop2 in each tile shape that fits the device) and "coop3_<variant>_khr" / "_nv"
// (matmul_f16_coop3 in each variant that fits, "variant" in the JSON). One weight copy
// (compute-bound), --gemm-calls calls per repetition. Every path's last output is checked
// against the tiled path's ("dense_rel_err" / "exl3_rel_err": max |y - y_tiled| / max
// |y_tiled|; "check" is "failed" above kGemmTolerance, "fallback" when the path could not
// create its pipeline and the tiled shader ran instead); "gemm_failures" counts both.
// --attn-rows N (N > 0) adds prefill attention at Llama-3.1-8B's heads (32 / 8, head_dim 128) over
// N rows at positions 0 .. N - 1 ("attention" in the JSON, TFLOP/s = 4·128·32·N(N+1)/2 / time):
// attention_flash ("flash_<BR>x<BC>"), the row kernel ("rows") and, where the device has it,
// attention_flash_coop ("flash_coop"; "rel_err_vs_flash": max |o - o_flash| / max |o_flash|,
// fp16 Q and P against the fp32 kernel), in the same run.
// --attn-decode CTX[,CTX...] adds decode attention at the same heads: 1 and 4 query rows at the
// last positions of a CTX-key context, one cache per layer (32, as a decode step reads them),
// attention_decode ("decode", with its split count) against attention.comp ("rows"); "us" is per
// call (per layer).
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "gemv_bench_util.h"
#include "backends/vulkan/vk_backend.h"
#include "backends/vulkan/vulkan_api.h"
#include "core/fp16.h"
#include "exl3/codebook.h"
#include "exl3/linear.h"

namespace {

using trellis::bench::fill_random;
using trellis::bench::random_halves;
using trellis::bench::copies_for;

using trellis::AttentionParams;
using trellis::DeviceTensor;
using trellis::DType;
using trellis::LinearSource;
using trellis::LinearWeights;
using trellis::TensorView;
using trellis::vk::VulkanBackend;

// Bound on max |y - y_tiled| / max |y_tiled| for the coop paths: the dense activations are fp16
// values (exact after convert_f16) and differ by fp32 summation order only (~1e-6); the EXL3
// activations are rounded to fp16 once (~1e-4 expected at these sizes).
constexpr double kGemmTolerance = 1e-3;

// max |got - want| / max |want|; NaN in `got` counts as infinite.
double max_rel_err(const std::vector<float>& got, const std::vector<float>& want) {
  double d = 0, w = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double e = std::fabs(static_cast<double>(got[i]) - want[i]);
    d = e <= d ? d : (std::isnan(e) ? INFINITY : e);
    w = std::max(w, static_cast<double>(std::fabs(want[i])));
  }
  return w > 0 ? d / w : d;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Microseconds, one per sweep (--rounds).
nlohmann::json us_list(const std::vector<double>& seconds) {
  nlohmann::json a = nlohmann::json::array();
  for (double t : seconds) a.push_back(t * 1e6);
  return a;
}

struct Timer {
  VulkanBackend& be;
  int warmup, reps;
  bool gpu_clock;
  double min_rep_s;  // --min-rep-ms: calls per repetition grow (in whole multiples) to at least this much GPU time

  // Seconds of one repetition of `calls` calls of body(i) recorded as one segment.
  template <typename Body>
  double rep(int calls, Body& body) {
    auto& ctx = be.context();
    if (gpu_clock) ctx.timestamp(0);
    for (int i = 0; i < calls; ++i) body(i);
    if (gpu_clock) ctx.timestamp(1);
    const auto t0 = std::chrono::steady_clock::now();
    ctx.flush();
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return gpu_clock ? ctx.elapsed_seconds(0, 1) : wall;
  }

  // Median seconds per call. Short repetitions (a few hundred µs of GPU work after an idle gap
  // while the host waits and records) are suspected of the 2x run-to-run swings of the GEMV
  // timings on the H100 (docs/BENCHMARKS.md, session 24), so one untimed repetition first sizes
  // the call count to min_rep_s.
  template <typename Body>
  double operator()(int calls, Body body) {
    be.context().flush();
    if (min_rep_s > 0) {
      const double first = rep(calls, body);
      if (first > 0 && first < min_rep_s)
        calls *= static_cast<int>(std::min(64.0, std::ceil(min_rep_s / first)));
    }
    std::vector<double> t;
    for (int r = 0; r < warmup + reps; ++r) {
      const double s = rep(calls, body);
      if (r >= warmup) t.push_back(s / calls);
    }
    return median(std::move(t));
  }
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Vulkan EXL3 GEMV vs the backend's fp16 dense GEMV, JSON on stdout"};
  std::vector<int> Ks{2, 3, 4, 5, 6, 8};
  std::vector<std::string> codebooks{"mcg", "mul1"};
  std::vector<std::string> shapes{"4096x4096", "4096x14336", "14336x4096", "8192x28672"};
  int reps = 15, warmup = 2, min_calls = 32, device = 0;
  size_t cold_mib = 160;
  bool wall_clock = false;
  double min_rep_ms = 2.0;
  int rounds = 1;
  int64_t gemm_m = 0;
  int gemm_calls = 4;
  int64_t attn_rows = 0;
  std::vector<int64_t> attn_decode;
  app.add_option("--device", device, "Vulkan device index (trellis devices)");
  app.add_option("--K", Ks, "bits per weight to run (1..8)");
  app.add_option("--codebooks", codebooks, "codebooks to run (3inst, mcg, mul1)");
  app.add_option("--shapes", shapes, "k x n shapes (input x output features, multiples of 128)");
  app.add_option("--reps", reps, "timed repetitions (median reported)");
  app.add_option("--warmup", warmup, "untimed repetitions");
  app.add_option("--calls", min_calls, "calls per repetition (at least the number of copies)");
  app.add_option("--cold-mib", cold_mib, "rotate over copies totalling at least this much");
  app.add_option("--gemm-m", gemm_m, "also time the prefill GEMM paths at this many rows (0: off)");
  app.add_option("--gemm-calls", gemm_calls, "calls per repetition of the GEMM timings");
  app.add_option("--attn-rows", attn_rows,
                 "also time prefill attention of this many rows, Llama-3.1-8B heads (0: off)");
  app.add_option("--attn-decode", attn_decode, "also time decode attention at these context lengths")->delimiter(',');
  app.add_flag("--wall-clock", wall_clock, "time submissions on the host even when timestamps exist");
  app.add_option("--min-rep-ms", min_rep_ms,
                 "grow each timing's calls per repetition (up to 64x) to at least this much time (0: off)");
  app.add_option("--rounds", rounds,
                 "sweep the GEMV shapes this many times, one after another, and report each variant's median "
                 "over the sweeps (with every sweep's time: single shapes moved 2x between runs on the H100)");
  CLI11_PARSE(app, argc, argv);
  if (reps < 1 || warmup < 0 || min_calls < 1 || !(min_rep_ms >= 0) || rounds < 1) {
    std::fprintf(stderr, "--reps, --calls and --rounds must be >= 1, --warmup and --min-rep-ms >= 0\n");
    return 1;
  }
  const size_t cold = cold_mib << 20;

  if (trellis::list_vulkan_devices().empty()) {
    std::fprintf(stderr, "no Vulkan device (install mesa-vulkan-drivers for lavapipe)\n");
    return 77;  // "skipped" for CTest
  }
  std::unique_ptr<VulkanBackend> be;
  try {
    be = std::make_unique<VulkanBackend>(device);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "Vulkan device %d: %s\n", device, e.what());
    return 1;
  }
  auto& ctx = be->context();
  Timer timer{*be, warmup, reps, ctx.has_timestamps() && !wall_clock, min_rep_ms * 1e-3};

  nlohmann::json out;
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
  out["bench"] = "vulkan_exl3_gemv";
  out["date"] = date;
  out["device"] = be->info().name;
  out["subgroup_size"] = be->info().subgroup_size;
  out["features"] = be->info().features;
  out["gemv_reduction"] = be->gemv_subgroup() ? "subgroup" : "shared";
  out["coop"] = be->context().coop().detail;
  out["clock"] = timer.gpu_clock ? "timestamps" : "wall";
  out["min_rep_ms"] = min_rep_ms;
  out["rounds"] = rounds;
  out["cold_bytes"] = cold;
  out["results"] = nlohmann::json::array();

  // Every sweep's seconds per call, in sweep order: the dense GEMV per shape, the EXL3 product and
  // forward per (shape, K, codebook).
  struct DenseTimes {
    std::vector<double> s;
    int copies = 0;
  };
  struct Exl3Times {
    std::vector<double> gemv, fwd;
    int copies = 0;
    bool hin = false;
  };
  std::map<std::string, DenseTimes> dense_times;
  std::map<std::tuple<std::string, int, std::string>, Exl3Times> times;
  for (int round = 0; round < rounds; ++round)
  for (const std::string& shape : shapes) {
    int64_t k = 0, n = 0;
    if (std::sscanf(shape.c_str(), "%ldx%ld", &k, &n) != 2 || k <= 0 || n <= 0 || k % 128 || n % 128) {
      std::fprintf(stderr, "bad shape %s (expected KxN, multiples of 128)\n", shape.c_str());
      return 1;
    }
    std::vector<uint16_t> xv = random_halves(static_cast<size_t>(k), 1.0f, 2);
    const DeviceTensor x = be->upload(TensorView{DType::kF16, {1, k}, reinterpret_cast<const std::byte*>(xv.data())},
                                      DType::kF32);
    DeviceTensor y = be->alloc(DType::kF32, {1, n});

    // Dense fp16 baseline: W (n, k) through the backend's matmul_f16_gemv.
    const size_t wbytes = static_cast<size_t>(k * n) * 2;
    const int wcopies = copies_for(wbytes, cold);
    double dense_s = 0;
    {
      const auto vals = random_halves(static_cast<size_t>(k * n), 0.05f, 1);
      std::vector<std::unique_ptr<LinearWeights>> ws;
      for (int c = 0; c < wcopies; ++c) {
        LinearSource src;
        src.name = "dense";
        src.in_features = k;
        src.out_features = n;
        src.dense = TensorView{DType::kF16, {n, k}, reinterpret_cast<const std::byte*>(vals.data())};
        ws.push_back(be->prepare_linear(src));
      }
      const int calls = std::max(min_calls, wcopies);
      dense_s = timer(calls, [&](int i) { be->linear(*ws[static_cast<size_t>(i % wcopies)], x, y); });
    }
    dense_times[shape].s.push_back(dense_s);
    dense_times[shape].copies = wcopies;
    const double dense_gbps = static_cast<double>(wbytes) / dense_s * 1e-9;
    const auto suh = random_halves(static_cast<size_t>(k), 0.05f, 3);
    const auto svh = random_halves(static_cast<size_t>(n), 1.0f, 4);
    for (int K : Ks) {
      if (K < 1 || K > 8) {
        std::fprintf(stderr, "bad K %d (1..8)\n", K);
        return 1;
      }
      const size_t tbytes = static_cast<size_t>(k * n) * static_cast<size_t>(K) / 8;
      std::vector<uint8_t> trellis(tbytes);
      fill_random(trellis.data(), tbytes, 100 + static_cast<uint64_t>(K));
      const int copies = copies_for(tbytes, cold);
      for (const std::string& cbname : codebooks) {
        const auto cb = trellis::exl3::codebook_from_name(cbname);
        if (!cb) {
          std::fprintf(stderr, "bad codebook %s (3inst, mcg, mul1)\n", cbname.c_str());
          return 1;
        }
        trellis::exl3::Exl3LinearView v;
        v.k = k;
        v.n = n;
        v.K = K;
        v.codebook = *cb;
        v.trellis = trellis.data();
        v.suh = suh.data();
        v.svh = svh.data();
        std::vector<std::unique_ptr<LinearWeights>> layers;
        for (int c = 0; c < copies; ++c) {
          LinearSource src;
          src.name = "exl3";
          src.in_features = k;
          src.out_features = n;
          src.exl3 = v;
          layers.push_back(be->prepare_linear(src));
        }
        {  // fills the scratch the product-only calls read (the fused-input GEMV writes no xh)
          const bool hin = be->gemv_hin();
          be->set_gemv_hin(false);
          be->linear(*layers[0], x, y);
          be->set_gemv_hin(hin);
        }
        const int calls = std::max(min_calls, copies);
        const double gemv_s =
            timer(calls, [&](int i) { be->bench_exl3_product(*layers[static_cast<size_t>(i % copies)], 1); });
        const double fwd_s = timer(calls, [&](int i) { be->linear(*layers[static_cast<size_t>(i % copies)], x, y); });
        const auto key = std::make_tuple(shape, K, cbname);
        Exl3Times& tv = times[key];
        tv.gemv.push_back(gemv_s);
        tv.fwd.push_back(fwd_s);
        tv.copies = copies;
        tv.hin = be->gemv_hin_applies(*layers[0], 1);
        const double gbps = static_cast<double>(tbytes) / gemv_s * 1e-9;
        const std::string sweep = rounds > 1 ? fmt::format("  (sweep {})", round + 1) : "";
        std::fprintf(stderr, "%-11s K=%d %-5s gemv %9.2f us %7.1f GB/s  fwd %9.2f us  dense f16 %7.1f GB/s  ratio %.2f%s\n",
                     shape.c_str(), K, cbname.c_str(), gemv_s * 1e6, gbps, fwd_s * 1e6, dense_gbps, gbps / dense_gbps,
                     sweep.c_str());
      }
    }
  }
  // One result per variant, the medians over the sweeps, in the order of the options.
  for (const std::string& shape : shapes) {
    int64_t k = 0, n = 0;
    std::sscanf(shape.c_str(), "%ldx%ld", &k, &n);
    const DenseTimes& dt = dense_times[shape];
    const double dense_s = median(dt.s);
    const double dense_gbps = static_cast<double>(k * n) * 2 / dense_s * 1e-9;
    out["dense_f16"][shape] = {
        {"us", dense_s * 1e6}, {"gbps", dense_gbps}, {"copies", dt.copies}, {"us_rounds", us_list(dt.s)}};
    for (int K : Ks)
      for (const std::string& cbname : codebooks) {
        const Exl3Times& tv = times[std::make_tuple(shape, K, cbname)];
        const double tbytes = static_cast<double>(k * n) * K / 8;
        const double gemv_s = median(tv.gemv), fwd_s = median(tv.fwd);
        const double gbps = tbytes / gemv_s * 1e-9, fgbps = tbytes / fwd_s * 1e-9;
        out["results"].push_back({{"shape", shape},
                                  {"k", k},
                                  {"n", n},
                                  {"K", K},
                                  {"codebook", cbname},
                                  {"variant", fmt::format("exl3_gemv_k{}_{}{}", K, cbname, be->gemv_subgroup() ? "_sg" : "")},
                                  {"copies", tv.copies},
                                  {"gemv_us", gemv_s * 1e6},
                                  {"gemv_gbps", gbps},
                                  {"forward_us", fwd_s * 1e6},
                                  {"forward_us_rounds", us_list(tv.fwd)},
                                  {"forward_gemv_hin", tv.hin},
                                  {"forward_gbps", fgbps},
                                  {"dense_f16_us", dense_s * 1e6},
                                  {"dense_f16_gbps", dense_gbps},
                                  {"ratio_gemv", gbps / dense_gbps},
                                  {"ratio_forward", fgbps / dense_gbps}});
      }
  }
  if (gemm_m > 0) {
    out["gemm"] = nlohmann::json::array();
    // Every GEMM the device has: (path, coop version, coop2 shape or coop3 variant).
    struct Variant {
      trellis::vk::CoopPath path;
      int version;
      size_t shape;
    };
    int failures = 0;
    std::vector<Variant> variants = {{trellis::vk::CoopPath::kOff, 1, 0}};
    for (auto p : {trellis::vk::CoopPath::kKhr, trellis::vk::CoopPath::kNv}) {
      if (!be->coop_capable(p)) continue;
      variants.push_back({p, 1, 0});
      for (size_t i = 0; i < std::size(trellis::vk::kCoop2Shapes); ++i)
        if (be->coop2_shape_fits(i)) variants.push_back({p, 2, i});
      for (size_t i = 0; i < std::size(trellis::vk::kCoop3Variants); ++i)
        if (be->coop3_variant_fits(i)) variants.push_back({p, 3, i});
    }
    const trellis::vk::CoopPath saved = be->coop_path();
    const int saved_version = be->coop_kernel();
    const size_t saved_shape = be->coop2_shape();
    const size_t saved_variant = be->coop3_variant();
    for (const std::string& shape : shapes) {
      int64_t k = 0, n = 0;
      std::sscanf(shape.c_str(), "%ldx%ld", &k, &n);
      const auto xv = random_halves(static_cast<size_t>(gemm_m * k), 1.0f, 5);
      const DeviceTensor x = be->upload(
          TensorView{DType::kF16, {gemm_m, k}, reinterpret_cast<const std::byte*>(xv.data())}, DType::kF32);
      DeviceTensor y = be->alloc(DType::kF32, {gemm_m, n});
      const auto vals = random_halves(static_cast<size_t>(k * n), 0.05f, 1);
      LinearSource dsrc;
      dsrc.name = "dense";
      dsrc.in_features = k;
      dsrc.out_features = n;
      dsrc.dense = TensorView{DType::kF16, {n, k}, reinterpret_cast<const std::byte*>(vals.data())};
      const auto dense = be->prepare_linear(dsrc);
      const int K = Ks.empty() ? 3 : Ks[0];
      const auto cb = trellis::exl3::codebook_from_name(codebooks.empty() ? "mcg" : codebooks[0]);
      std::vector<uint8_t> trellis(static_cast<size_t>(k * n) * static_cast<size_t>(K) / 8);
      fill_random(trellis.data(), trellis.size(), 200);
      const auto suh = random_halves(static_cast<size_t>(k), 0.05f, 3), svh = random_halves(static_cast<size_t>(n), 1.0f, 4);
      trellis::exl3::Exl3LinearView v;
      v.k = k;
      v.n = n;
      v.K = K;
      v.codebook = cb ? *cb : trellis::exl3::Codebook::kMcg;
      v.trellis = trellis.data();
      v.suh = suh.data();
      v.svh = svh.data();
      LinearSource esrc;
      esrc.name = "exl3";
      esrc.in_features = k;
      esrc.out_features = n;
      esrc.exl3 = v;
      const auto exl3 = be->prepare_linear(esrc);
      const double flop = 2.0 * static_cast<double>(gemm_m) * static_cast<double>(k) * static_cast<double>(n);
      // Reference outputs: the tiled path (fp32 activations).
      std::vector<float> ref_dense(static_cast<size_t>(gemm_m * n)), ref_exl3(ref_dense.size()), got(ref_dense.size());
      be->set_coop_path(trellis::vk::CoopPath::kOff);
      be->linear(*dense, x, y);
      be->download(y, ref_dense.data());
      be->linear(*exl3, x, y);
      be->download(y, ref_exl3.data());
      for (const Variant& var : variants) {
        be->set_coop_path(var.path);
        be->set_coop_kernel(var.version);
        if (var.version == 2) be->set_coop2_shape(var.shape);
        if (var.version == 3) be->set_coop3_variant(var.shape);
        const std::string path = trellis::vk::coop_path_name(var.path);
        std::string variant;
        if (var.version == 2) variant = trellis::vk::coop2_shape_name(trellis::vk::kCoop2Shapes[var.shape]);
        if (var.version == 3) variant = trellis::vk::coop3_variant_name(trellis::vk::kCoop3Variants[var.shape]);
        const std::string name = var.path == trellis::vk::CoopPath::kOff ? "tiled"
                                 : var.version == 1 ? fmt::format("coop_{}", path)
                                                    : fmt::format("coop{}_{}_{}", var.version, variant, path);
        const double ds = timer(gemm_calls, [&](int) { be->linear(*dense, x, y); });
        be->download(y, got.data());
        const double dense_err = max_rel_err(got, ref_dense);
        const double es = timer(gemm_calls, [&](int) { be->linear(*exl3, x, y); });
        be->download(y, got.data());
        const double exl3_err = max_rel_err(got, ref_exl3);
        // A pipeline the driver refuses switches the coop path off (the tiled shader ran).
        const bool fell_back = var.path != trellis::vk::CoopPath::kOff && be->coop_path() == trellis::vk::CoopPath::kOff;
        const bool ok = !fell_back && dense_err <= kGemmTolerance && exl3_err <= kGemmTolerance;
        failures += ok ? 0 : 1;
        const char* check = fell_back ? "fallback" : ok ? "ok" : "failed";
        out["gemm"].push_back({{"shape", shape}, {"m", gemm_m}, {"path", name},
                               {"version", var.path == trellis::vk::CoopPath::kOff ? 0 : var.version},
                               {"variant", variant}, {"dense_us", ds * 1e6}, {"dense_tflops", flop / ds * 1e-12},
                               {"exl3_K", K}, {"exl3_us", es * 1e6}, {"exl3_tflops", flop / es * 1e-12},
                               {"dense_rel_err", dense_err}, {"exl3_rel_err", exl3_err}, {"check", check}});
        std::fprintf(stderr,
                     "gemm %-11s m=%ld %-30s dense %10.1f us %7.2f TFLOP/s  exl3 K=%d %10.1f us %7.2f TFLOP/s  "
                     "err %.1e / %.1e %s\n",
                     shape.c_str(), static_cast<long>(gemm_m), name.c_str(), ds * 1e6, flop / ds * 1e-12, K, es * 1e6,
                     flop / es * 1e-12, dense_err, exl3_err, check);
      }
      be->set_coop_path(saved);
      be->set_coop_kernel(saved_version);
      be->set_coop2_shape(saved_shape);
      be->set_coop3_variant(saved_variant);
    }
    out["gemm_failures"] = failures;
    if (failures > 0) std::fprintf(stderr, "gemm: %d path(s) failed the check against the tiled path\n", failures);
  }
  if (attn_rows > 0) {
    // Prefill attention at Llama-3.1-8B's heads (32 query, 8 kv, head_dim 128): rows at
    // positions 0 .. attn_rows - 1, both kernels. FLOP: 4·head_dim per (head, visible key).
    AttentionParams ap;
    ap.n_heads = 32;
    ap.n_kv_heads = 8;
    ap.head_dim = 128;
    ap.scale = 1.0f / std::sqrt(128.0f);
    const int64_t qw = ap.n_heads * ap.head_dim, kvw = ap.n_kv_heads * ap.head_dim;
    const auto qv = random_halves(static_cast<size_t>(attn_rows * qw), 1.0f, 6);
    const auto kv = random_halves(static_cast<size_t>(attn_rows * kvw), 1.0f, 7);
    const DeviceTensor q =
        be->upload(TensorView{DType::kF16, {attn_rows, qw}, reinterpret_cast<const std::byte*>(qv.data())}, DType::kF32);
    const DeviceTensor kvt =
        be->upload(TensorView{DType::kF16, {attn_rows, kvw}, reinterpret_cast<const std::byte*>(kv.data())}, DType::kF32);
    DeviceTensor kc = be->alloc(DType::kF16, {attn_rows, kvw}), vc = be->alloc(DType::kF16, {attn_rows, kvw});
    DeviceTensor o = be->alloc(DType::kF32, {attn_rows, qw});
    std::vector<int32_t> pos(static_cast<size_t>(attn_rows));
    for (int64_t i = 0; i < attn_rows; ++i) pos[static_cast<size_t>(i)] = static_cast<int32_t>(i);
    be->kv_store(kvt, kvt, pos, kc, vc);
    be->synchronize();
    const double flop = 4.0 * 128 * 32 * (static_cast<double>(attn_rows) * (attn_rows + 1) / 2);
    const bool saved = be->flash_attention(), saved_coop = be->flash_coop();
    out["attention"] = nlohmann::json::array();
    std::vector<float> ref(static_cast<size_t>(attn_rows * qw)), got(ref.size());
    // 0: attention_flash (first: the reference), 1: the row kernel, 2: attention_flash_coop.
    for (int kernel : {0, 1, 2}) {
      if (kernel == 2 && !be->flash_coop_capable(ap.head_dim)) continue;
      be->set_flash_attention(kernel != 1);
      be->set_flash_coop(kernel == 2);
      const double sec = timer(1, [&](int) { be->attention(q, kc, vc, pos, ap, o); });
      const trellis::vk::FlashTiles t = be->flash_tiles(ap.head_dim);
      const std::string name = kernel == 0 ? fmt::format("flash_{}x{}", t.rows, t.keys) : kernel == 1 ? "rows" : "flash_coop";
      nlohmann::json row = {{"rows", attn_rows}, {"kernel", name}, {"us", sec * 1e6}, {"tflops", flop / sec * 1e-12}};
      be->download(o, kernel == 0 ? ref.data() : got.data());
      if (kernel == 2) {
        row["rel_err_vs_flash"] = max_rel_err(got, ref);
        row["check"] = !be->flash_coop() ? "fallback" : max_rel_err(got, ref) <= 1e-2 ? "ok" : "failed";
      }
      out["attention"].push_back(row);
      std::fprintf(stderr, "attention rows=%ld %-14s %10.1f us %7.2f TFLOP/s%s\n", static_cast<long>(attn_rows),
                   name.c_str(), sec * 1e6, flop / sec * 1e-12,
                   kernel == 2 ? fmt::format(" (max rel err vs flash {:.2e})", max_rel_err(got, ref)).c_str() : "");
    }
    be->set_flash_attention(saved);
    be->set_flash_coop(saved_coop);
  }
  if (!attn_decode.empty()) {
    AttentionParams ap;
    ap.n_heads = 32;
    ap.n_kv_heads = 8;
    ap.head_dim = 128;
    ap.scale = 1.0f / std::sqrt(128.0f);
    constexpr int kLayers = 32;
    const int64_t qw = ap.n_heads * ap.head_dim, kvw = ap.n_kv_heads * ap.head_dim;
    const bool saved = be->decode_attention();
    out["decode_attention"] = nlohmann::json::array();
    for (const int64_t n : attn_decode) {
      if (n < 4) continue;
      std::vector<DeviceTensor> kcs, vcs;
      for (int l = 0; l < kLayers; ++l) {
        const auto kv = random_halves(static_cast<size_t>(n * kvw), 1.0f, 20 + static_cast<uint64_t>(l));
        const TensorView view{DType::kF16, {n, kvw}, reinterpret_cast<const std::byte*>(kv.data())};
        kcs.push_back(be->upload(view, DType::kF16));
        vcs.push_back(be->upload(view, DType::kF16));
      }
      for (const int64_t rows : {int64_t{1}, int64_t{4}}) {
        const auto qv = random_halves(static_cast<size_t>(rows * qw), 1.0f, 8);
        const DeviceTensor q =
            be->upload(TensorView{DType::kF16, {rows, qw}, reinterpret_cast<const std::byte*>(qv.data())}, DType::kF32);
        DeviceTensor o = be->alloc(DType::kF32, {rows, qw});
        std::vector<int32_t> pos;
        for (int64_t r = 0; r < rows; ++r) pos.push_back(static_cast<int32_t>(n - rows + r));
        for (bool decode : {true, false}) {
          if (decode && !be->decode_attention_capable()) continue;
          be->set_decode_attention(decode);
          const double sec = timer(kLayers, [&](int i) {
            be->attention(q, kcs[static_cast<size_t>(i % kLayers)], vcs[static_cast<size_t>(i % kLayers)], pos, ap, o);
          });
          const int64_t splits = be->last_decode_splits();
          const char* name = decode ? "decode" : "rows";
          out["decode_attention"].push_back(
              {{"context", n}, {"rows", rows}, {"kernel", name}, {"splits", splits}, {"us", sec * 1e6}});
          std::fprintf(stderr, "decode attention ctx=%ld rows=%ld %-7s splits %3ld %9.2f us\n", static_cast<long>(n),
                       static_cast<long>(rows), name, static_cast<long>(splits), sec * 1e6);
        }
      }
    }
    be->set_decode_attention(saved && be->decode_attention_capable());
  }
  const auto& st = ctx.stats();
  out["segments"] = {{"recorded", st.recorded}, {"replayed", st.replayed}, {"barriers", st.barriers}};
  std::cout << out.dump(1) << "\n";
  return 0;
}
