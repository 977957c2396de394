// bench/cpu_gemv_bench.cpp: trellis_bench_cpu_gemv, CPU EXL3 GEMV (m = 1) for each K and codebook
// next to the dense fp16 GEMV of the same shape, measured in the same run. Prints one JSON object.
//
// Weights are random bits (every bit string is a valid trellis). To measure streaming from DRAM
// rather than from the last-level cache, each configuration rotates over enough copies of its
// weights to exceed --cold-bytes (default 3 x 32 MiB L3). Time per call is the median over all
// calls; the fp16 baseline is sampled between variants so both see the same machine state, and
// its median over the whole shape is the reference for the ratio.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <time.h>
#include <vector>

#include "gemv_bench_util.h"
#include "backends/cpu/dense_matmul.h"
#include "backends/cpu/exl3_matmul.h"
#include "core/fp16.h"
#include "core/thread_pool.h"
#include "exl3/codebook.h"
#include "exl3/linear.h"

namespace {

using trellis::bench::Rng;
using trellis::bench::fill_random;

using trellis::ThreadPool;
using trellis::exl3::Codebook;
using Clock = std::chrono::steady_clock;

std::vector<uint16_t> random_halves(size_t n, float lo, float hi, uint64_t seed) {
  Rng rng{seed};
  std::vector<uint16_t> out(n);
  for (auto& h : out) {
    const double u = static_cast<double>(rng.next() >> 11) / 9007199254740992.0;
    float v = lo + static_cast<float>(u) * (hi - lo);
    if (rng.next() & 1) v = -v;
    h = trellis::fp32_to_fp16(v);
  }
  return out;
}

double median_of(std::vector<double> s) {
  std::sort(s.begin(), s.end());
  return s.empty() ? 0.0 : s[s.size() / 2];
}

double process_cpu_seconds() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// Per call: wall time, and process CPU time (all threads). On a machine shared with other work
// the CPU time per thread estimates the uncontended wall time of CPU-bound kernels better.
struct Samples {
  std::vector<double> seconds, cpu_seconds;
  double median() const { return median_of(seconds); }
  double cpu_median() const { return median_of(cpu_seconds); }
  double min() const { return seconds.empty() ? 0.0 : *std::min_element(seconds.begin(), seconds.end()); }
};

// Calls fn(copy) for at least `min_seconds` and `min_calls`, rotating over `copies`.
template <class F>
void sample(Samples& out, size_t copies, double min_seconds, int min_calls, F&& fn) {
  const auto start = Clock::now();
  for (int call = 0;; ++call) {
    const double c0 = process_cpu_seconds();
    const auto t0 = Clock::now();
    fn(static_cast<size_t>(call) % copies);
    const auto t1 = Clock::now();
    out.cpu_seconds.push_back(process_cpu_seconds() - c0);
    out.seconds.push_back(std::chrono::duration<double>(t1 - t0).count());
    if (call + 1 >= min_calls && std::chrono::duration<double>(t1 - start).count() >= min_seconds) break;
  }
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown";
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep))
    if (!item.empty()) out.push_back(item);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"CPU EXL3 GEMV benchmark (m = 1) against a dense fp16 GEMV; JSON on stdout"};
  size_t threads = 0;
  std::string shapes_arg = "4096x4096,4096x14336,14336x4096";
  std::string k_arg = "1,2,3,4,5,6,7,8";
  std::string cb_arg = "3inst,mcg,mul1";
  bool quick = false;
  double min_seconds = 0.4;
  double cold_mib = 96.0;
  app.add_option("--threads", threads, "worker threads (0: all hardware threads)");
  app.add_option("--shapes", shapes_arg, "comma-separated k x n shapes (in x out), e.g. 4096x14336");
  app.add_option("--K", k_arg, "comma-separated bits per weight, 1..8");
  app.add_option("--codebooks", cb_arg, "comma-separated codebooks: 3inst, mcg, mul1");
  app.add_flag("--quick", quick, "short measurements (0.1 s per configuration)");
  app.add_option("--min-time", min_seconds, "seconds per configuration");
  app.add_option("--cold-mib", cold_mib, "rotate weight copies until they exceed this many MiB");
  CLI11_PARSE(app, argc, argv);
  if (quick) min_seconds = std::min(min_seconds, 0.1);

  ThreadPool pool(threads);
  const size_t nthreads = pool.size();

  struct Shape { int64_t k, n; };
  std::vector<Shape> shapes;
  for (const auto& s : split(shapes_arg, ',')) {
    const auto parts = split(s, 'x');
    if (parts.size() != 2) {
      std::cerr << "bad shape " << s << "\n";
      return 2;
    }
    shapes.push_back({std::stoll(parts[0]), std::stoll(parts[1])});
  }
  std::vector<int> Ks;
  for (const auto& s : split(k_arg, ',')) Ks.push_back(std::stoi(s));
  std::vector<Codebook> cbs;
  for (const auto& s : split(cb_arg, ',')) {
    const auto cb = trellis::exl3::codebook_from_name(s);
    if (!cb) {
      std::cerr << "unknown codebook " << s << "\n";
      return 2;
    }
    cbs.push_back(*cb);
  }
  const size_t cold_bytes = static_cast<size_t>(cold_mib * 1024 * 1024);
  auto copies_for = [&](size_t bytes) {
    return std::clamp<size_t>((cold_bytes + bytes - 1) / bytes, 1, 256);
  };

  nlohmann::json out;
  out["benchmark"] = "cpu_gemv";
  out["machine"] = {{"cpu", cpu_model()},
                    {"hardware_threads", std::thread::hardware_concurrency()},
                    {"simd_target", trellis::cpu::exl3_dispatch_target_name()}};
  out["threads"] = nthreads;
  out["m"] = 1;
  out["min_seconds_per_config"] = min_seconds;
  out["cold_mib"] = cold_mib;
  out["results"] = nlohmann::json::array();

  for (const Shape& shape : shapes) {
    const int64_t k = shape.k, n = shape.n;
    if (k % 128 != 0 || n % 128 != 0) {
      std::cerr << "shape " << k << "x" << n << ": k and n must be multiples of 128\n";
      return 2;
    }
    std::vector<float> x(static_cast<size_t>(k)), y(static_cast<size_t>(n));
    {
      Rng rng{42};
      for (auto& v : x) v = static_cast<float>(static_cast<double>(rng.next() >> 11) / 4503599627370496.0 - 1.0);
    }

    // Dense fp16 baseline: weights n x k (HF layout).
    const size_t dense_bytes = static_cast<size_t>(k * n) * 2;
    const size_t dense_copies = copies_for(dense_bytes);
    std::vector<std::unique_ptr<uint16_t[]>> dense(dense_copies);
    for (size_t c = 0; c < dense_copies; ++c) {
      dense[c].reset(new uint16_t[static_cast<size_t>(k * n)]);
      // Random fp16 in [-1, 1): keep sign, exponent <= 14 (avoid inf/NaN timing artefacts).
      fill_random(dense[c].get(), dense_bytes, 1000 + c);
      for (size_t i = 0; i < static_cast<size_t>(k * n); ++i) dense[c][i] &= 0xBBFF;
    }
    Samples fp16;
    auto run_fp16 = [&](double secs) {
      sample(fp16, dense_copies, secs, 3, [&](size_t c) {
        trellis::cpu::dense_matmul_f16(dense[c].get(), x.data(), 1, k, n, y.data(), pool);
      });
    };
    trellis::cpu::dense_matmul_f16(dense[0].get(), x.data(), 1, k, n, y.data(), pool);  // warm-up
    run_fp16(min_seconds);

    const auto suh = random_halves(static_cast<size_t>(k), 0.002f, 0.02f, 7);
    const auto svh = random_halves(static_cast<size_t>(n), 0.5f, 1.5f, 8);
    std::vector<nlohmann::json> shape_rows;
    int variant_count = 0;
    for (int K : Ks) {
      for (Codebook cb : cbs) {
        const size_t trellis_bytes = static_cast<size_t>(k / 16) * (n / 16) * 32 * K;
        const size_t copies = copies_for(trellis_bytes);
        std::vector<std::unique_ptr<uint8_t[]>> trellis(copies);
        for (size_t c = 0; c < copies; ++c) {
          trellis[c].reset(new uint8_t[trellis_bytes]);
          fill_random(trellis[c].get(), trellis_bytes, 5000 + 17 * K + c);
        }
        trellis::exl3::Exl3LinearView view;
        view.k = k;
        view.n = n;
        view.K = K;
        view.codebook = cb;
        view.suh = suh.data();
        view.svh = svh.data();
        Samples exl3;
        view.trellis = trellis[0].get();
        trellis::cpu::exl3_matmul(view, x.data(), 1, y.data(), pool);  // warm-up
        sample(exl3, copies, min_seconds, 3, [&](size_t c) {
          view.trellis = trellis[c].get();
          trellis::cpu::exl3_matmul(view, x.data(), 1, y.data(), pool);
        });
        const double t = exl3.median();
        const double weights = static_cast<double>(k) * static_cast<double>(n);
        const double bytes = static_cast<double>(trellis_bytes) + 2.0 * static_cast<double>(k + n);
        nlohmann::json row = {{"shape", std::to_string(k) + "x" + std::to_string(n)},
                              {"k", k},
                              {"n", n},
                              {"K", K},
                              {"codebook", std::string(trellis::exl3::codebook_name(cb))},
                              {"variant", trellis::cpu::exl3_variant_name(K, cb)},
                              {"copies", copies},
                              {"calls", exl3.seconds.size()},
                              {"time_us", t * 1e6},
                              {"time_us_min", exl3.min() * 1e6},
                              {"cpu_time_us_per_thread", exl3.cpu_median() * 1e6 / static_cast<double>(nthreads)},
                              {"gweights_per_s", weights / t / 1e9},
                              {"gweights_per_s_per_core", weights / t / 1e9 / static_cast<double>(nthreads)},
                              {"weight_gb_per_s", bytes / t / 1e9}};
        shape_rows.push_back(row);
        // Re-sample the baseline every few variants so it sees the same machine state.
        if (++variant_count % 3 == 0) run_fp16(min_seconds / 2);
      }
    }
    if (variant_count % 3 != 0 || variant_count == 0) run_fp16(min_seconds / 2);
    const double tf = fp16.median();
    const double weights = static_cast<double>(k) * static_cast<double>(n);
    nlohmann::json base = {{"time_us", tf * 1e6},
                           {"time_us_min", fp16.min() * 1e6},
                           {"cpu_time_us_per_thread", fp16.cpu_median() * 1e6 / static_cast<double>(nthreads)},
                           {"calls", fp16.seconds.size()},
                           {"copies", dense_copies},
                           {"gweights_per_s", weights / tf / 1e9},
                           {"gweights_per_s_per_core", weights / tf / 1e9 / static_cast<double>(nthreads)},
                           {"weight_gb_per_s", static_cast<double>(dense_bytes) / tf / 1e9}};
    for (auto& row : shape_rows) {
      row["fp16"] = base;
      row["speedup_vs_fp16"] = tf / (row["time_us"].get<double>() * 1e-6);
      row["speedup_vs_fp16_cpu_time"] =
          base["cpu_time_us_per_thread"].get<double>() / row["cpu_time_us_per_thread"].get<double>();
      out["results"].push_back(row);
    }
    std::cerr << "shape " << k << "x" << n << " done (fp16 " << tf * 1e6 << " us)\n";
  }
  std::cout << out.dump(2) << std::endl;
  return 0;
}
