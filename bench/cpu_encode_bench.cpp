// bench/cpu_encode_bench.cpp: trellis_bench_cpu_encode, the CPU SIMD tile encoder (two-pass
// tail-biting Viterbi, spec 5.7) for each K and codebook. Prints one JSON object.
//
// Inputs: --tiles tiles of i.i.d. N(0,1) values (no scale search). Each configuration runs
// --warmup calls, then --reps timed calls; the median wall time of cpu::encode_tiles is reported
// as tiles/s for the whole pool (--threads, 0 = all cores) and per thread.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <iostream>
#include <string>
#include <vector>

#include "backends/cpu/tile_encoder.h"
#include "core/thread_pool.h"
#include "encode_bench_util.h"
#include "exl3/codebook.h"

int main(int argc, char** argv) {
  CLI::App app{"CPU tile encoder benchmark (tiles/s per K and codebook), JSON on stdout"};
  size_t tiles = 64, threads = 0;
  int warmup = 1, reps = 3;
  std::vector<int> ks{1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<std::string> codebooks{"3inst", "mcg", "mul1"};
  std::string mode = "exact";
  app.add_option("--tiles", tiles, "tiles per call");
  app.add_option("--warmup", warmup, "untimed calls per configuration");
  app.add_option("--reps", reps, "timed calls per configuration (median reported)");
  app.add_option("--k", ks, "bit widths");
  app.add_option("--codebooks", codebooks, "codebooks (3inst, mcg, mul1)");
  app.add_option("--threads", threads, "encoder threads (0 = all cores)");
  app.add_option("--mode", mode, "exact or estimate")->check(CLI::IsMember({"exact", "estimate"}));
  CLI11_PARSE(app, argc, argv);
  const auto enc_mode =
      mode == "exact" ? trellis::cpu::EncodeMode::kExact : trellis::cpu::EncodeMode::kEstimate;
  trellis::ThreadPool pool(threads);
  const std::vector<uint16_t> x = trellis::bench::normal_tiles(tiles);
  std::vector<uint16_t> states(x.size()), decoded(x.size());

  nlohmann::json out;
  out["bench"] = "cpu_encode";
  out["target"] = trellis::cpu::tile_encoder_target_name();
  out["mode"] = mode;
  out["tiles"] = tiles;
  out["threads"] = pool.size();
  out["warmup"] = warmup;
  out["reps"] = reps;
  out["results"] = nlohmann::json::array();
  for (const std::string& name : codebooks) {
    const auto cb = trellis::exl3::codebook_from_name(name);
    if (!cb) {
      std::cerr << "unknown codebook " << name << "\n";
      return 1;
    }
    for (int K : ks) {
      for (int i = 0; i < warmup; ++i)
        trellis::cpu::encode_tiles(x.data(), tiles, K, *cb, states.data(), decoded.data(), pool,
                                   enc_mode);
      std::vector<double> wall_s;
      for (int i = 0; i < reps; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        trellis::cpu::encode_tiles(x.data(), tiles, K, *cb, states.data(), decoded.data(), pool,
                                   enc_mode);
        const auto t1 = std::chrono::steady_clock::now();
        wall_s.push_back(std::chrono::duration<double>(t1 - t0).count());
      }
      const double w = trellis::bench::median(wall_s);
      nlohmann::json r;
      r["codebook"] = name;
      r["K"] = K;
      r["wall_s"] = w;
      r["tiles_per_s"] = static_cast<double>(tiles) / w;
      r["tiles_per_s_per_thread"] = static_cast<double>(tiles) / w / static_cast<double>(pool.size());
      r["mse"] = trellis::bench::mse(decoded, x);
      out["results"].push_back(r);
      std::cerr << name << " K=" << K << ": " << r["tiles_per_s"] << " tiles/s, mse " << r["mse"]
                << "\n";
    }
  }
  std::cout << out.dump(2) << "\n";
  return 0;
}
