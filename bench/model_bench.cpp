// bench/model_bench.cpp: trellis_bench_model, end-to-end prefill and decode speed of one model on
// one backend, next to the memory-read roofline measured in the same run. Prints one JSON object.
//
// Decode is memory-bound at batch 1: every token reads every linear weight (and the head) once.
// The roofline is (bytes of weights read per token) / (measured read bandwidth), so "fraction of
// roofline" = measured decode tok/s / roofline tok/s. Bandwidth is measured with all worker
// threads summing a buffer much larger than the last-level cache, the same access pattern the
// GEMVs have. Prefill is one forward over --prompt tokens (chunked as the model chunks it);
// decode is --gen single-token forwards after it. Token ids are fixed pseudo-random ids, so
// the numbers do not depend on a tokenizer. Each figure is the median of --reps repetitions, after
// --warmup untimed ones (default 1 on GPUs: the first long prefill grows scratch buffers and lets
// cuBLAS pick algorithms, which skewed 3-rep medians in session 8).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <vector>

#include "backends/registry.h"
#include "trellis/settings.h"
#include "core/thread_pool.h"
#include "model/model.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Read bandwidth in bytes/s: all pool threads sum disjoint slices of a `bytes` buffer; best of reps.
double measure_read_bandwidth(size_t bytes, int reps, size_t threads) {
  const size_t n = bytes / sizeof(uint64_t);
  std::vector<uint64_t> buf(n);
  for (size_t i = 0; i < n; ++i) buf[i] = i * 0x9E3779B97F4A7C15ull;
  trellis::ThreadPool pool(threads);
  const size_t parts = pool.size();
  std::vector<uint64_t> sums(parts);
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    pool.parallel_for(parts, 1, [&](size_t p, size_t) {
      const size_t lo = n * p / parts, hi = n * (p + 1) / parts;
      uint64_t a = 0, b = 0, c = 0, d = 0;
      size_t i = lo;
      for (; i + 4 <= hi; i += 4) {
        a += buf[i];
        b ^= buf[i + 1];
        c += buf[i + 2];
        d ^= buf[i + 3];
      }
      for (; i < hi; ++i) a += buf[i];
      sums[p] = a + b + c + d;
    });
    const double s = seconds_since(t0);
    best = std::max(best, static_cast<double>(n * sizeof(uint64_t)) / s);
  }
  uint64_t sink = 0;
  for (uint64_t s : sums) sink += s;
  if (sink == 42) std::printf(" ");
  return best;
}

// Bytes a decode step reads from weights: every tensor except the embedding table (one row is
// read) and tiny norm vectors; a tied head reads the embedding table once.
uint64_t weight_bytes_per_token(const trellis::Model& model) {
  const auto& store = model.dir().tensors();
  uint64_t bytes = 0;
  bool has_head = false;
  uint64_t embed = 0;
  for (const std::string& name : store.names()) {
    const uint64_t b = store.view(name).nbytes();
    if (name == "model.embed_tokens.weight") {
      embed = b;
      continue;
    }
    if (name.rfind("lm_head.", 0) == 0) has_head = true;
    bytes += b;
  }
  return has_head ? bytes : bytes + embed;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"trellis_bench_model: prefill and decode tok/s of a model, with the memory roofline"};
  std::string dir, device = "cpu";
  int prompt = 128, gen = 64, reps = 3, threads = 0, ctx = 0, warmup = -1;
  app.add_option("-m,--model", dir, "Model directory")->required();
  app.add_option("--device", device, "Backend device (cpu, cuda:0, vulkan:0)");
  app.add_option("--prompt", prompt, "Prompt tokens for the prefill measurement")->check(CLI::PositiveNumber);
  app.add_option("--gen", gen, "Decode steps after the prompt")->check(CLI::PositiveNumber);
  app.add_option("--reps", reps, "Repetitions (median reported)")->check(CLI::PositiveNumber);
  app.add_option("--warmup", warmup,
                 "Untimed repetitions first (default: 1 on GPUs, whose first prefill grows scratch buffers "
                 "and picks GEMM algorithms; 0 on the CPU)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--threads", threads, "CPU threads (0 = all)")->check(CLI::NonNegativeNumber);
  app.add_option("--ctx", ctx, "KV cache length to allocate (default: prompt + gen + 1), for memory measurements")
      ->check(CLI::NonNegativeNumber);
  CLI11_PARSE(app, argc, argv);
  trellis::set_num_threads(static_cast<size_t>(threads));
  trellis::set_verbosity(0);

  try {
    auto backend = trellis::make_backend(device, static_cast<size_t>(threads));
    trellis::ModelOptions mo;
    mo.max_context = std::max(ctx, prompt + gen + 1);
    auto model = trellis::Model::load(dir, *backend, mo);
    std::vector<int32_t> ids(static_cast<size_t>(prompt + gen));
    uint64_t s = 12345;
    for (int32_t& id : ids) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      id = static_cast<int32_t>((s >> 33) % static_cast<uint64_t>(model->vocab_size()));
    }
    std::vector<float> logits;
    const std::span<const int32_t> all(ids);
    // Warm-up: pages in the weights (at most the tokens the context holds).
    model->forward(all.first(std::min<size_t>(8, all.size())), 0, false, logits);
    if (warmup < 0) warmup = device.rfind("cpu", 0) == 0 ? 0 : 1;
    std::vector<double> prefill_s, decode_s, decode_host_s;
    std::vector<std::pair<std::string, double>> host_parts;  // per decode step
    for (int r = 0; r < warmup + reps; ++r) {
      const bool timed = r >= warmup;
      auto t0 = Clock::now();
      model->forward(all.first(static_cast<size_t>(prompt)), 0, false, logits);
      backend->synchronize();
      if (timed) prefill_s.push_back(seconds_since(t0));
      t0 = Clock::now();
      const double wait0 = backend->host_wait_seconds();
      const auto parts0 = backend->host_breakdown();
      for (int t = 0; t < gen; ++t)
        model->forward(all.subspan(static_cast<size_t>(prompt + t), 1), prompt + t, false, logits);
      backend->synchronize();
      if (timed) {
        decode_s.push_back(seconds_since(t0));
        // The host's own time: the steps' wall time less the time it sat waiting for the device.
        decode_host_s.push_back(decode_s.back() - (backend->host_wait_seconds() - wait0));
        // Its parts, where the backend measures them (last timed repetition).
        const auto parts1 = backend->host_breakdown();
        host_parts.clear();
        for (size_t i = 0; i < parts1.size() && i < parts0.size(); ++i)
          host_parts.emplace_back(parts1[i].first, (parts1[i].second - parts0[i].second) / gen);
        if (!host_parts.empty()) host_parts.emplace_back("step_wall", decode_s.back() / gen);
      }
    }
    const uint64_t wbytes = weight_bytes_per_token(*model);
    const double bw = device.rfind("cpu", 0) == 0 ? measure_read_bandwidth(size_t{1} << 30, 5, static_cast<size_t>(backend->info().threads)) : 0;
    const double prefill_tps = prompt / median(prefill_s);
    const double decode_tps = gen / median(decode_s);
    char date[32];
    const std::time_t now = std::time(nullptr);
    std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
    nlohmann::ordered_json out = {
        {"bench", "model"},
        {"date", date},
        {"model", dir},
        {"device", backend->info().name},
        {"threads", backend->info().threads},
        {"exl3", model->dir().is_exl3()},
        {"prompt_tokens", prompt},
        {"gen_tokens", gen},
        {"warmup_reps", warmup},
        {"reps", reps},
        {"context_allocated", mo.max_context},
        {"prefill_tok_s", prefill_tps},
        {"decode_tok_s", decode_tps},
        {"weight_bytes_per_token", wbytes},
    };
    // Backends that count their waits (CUDA): microseconds per decode step in which the host was not
    // waiting for the device (recording the step's ops, launching, the logits copy's setup). Each
    // step ends in a blocking logits download; with the whole step submitted at its end
    // (TRELLIS_CUDA_SUBMIT=0) the device idles for about this long per token, with segments
    // (the default) only for the first segment's part of it.
    if (backend->host_wait_seconds() > 0) out["decode_host_us_per_token"] = median(decode_host_s) / gen * 1e6;
    // TRELLIS_VULKAN_HOST_PROFILE=1: where that host time goes (µs per step; buffers_created,
    // dispatches and segments are counts per step).
    if (!host_parts.empty()) {
      nlohmann::ordered_json parts;
      for (const auto& [name, v] : host_parts) parts[name] = name == "buffers_created" || name == "dispatches" || name == "segments" ? v : v * 1e6;
      out["decode_host_breakdown_us_per_token"] = parts;
    }
    if (bw > 0) {
      out["read_bandwidth_gb_s"] = bw / 1e9;
      out["roofline_decode_tok_s"] = bw / static_cast<double>(wbytes);
      out["decode_fraction_of_roofline"] = decode_tps / (bw / static_cast<double>(wbytes));
    }
    std::printf("%s\n", out.dump(2).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "trellis_bench_model: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
