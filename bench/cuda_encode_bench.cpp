// bench/cuda_encode_bench.cpp: trellis_bench_cuda_encode, the CUDA tile encoder (two-pass
// tail-biting Viterbi, spec 5.7) for each K and codebook. Prints one JSON object.
//
// Inputs: --tiles tiles (default 16,384, ExLlamaV3's anchor batch) of i.i.d. N(0,1) values, the
// anchors' protocol (no scale search; MSE at unit scale, a sanity check against the anchors).
// Each configuration runs --warmup calls, then --reps timed calls; "kernel" is the median of the
// CUDA-event time of the encode kernels (cuda::last_encode_kernel_ms), "end_to_end" the median
// wall time of cuda::encode_tiles including the host<->device copies (what the quantizer sees).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <iostream>
#include <string>
#include <vector>

#include "backends/cuda/cuda_encode.h"
#include "encode_bench_util.h"
#include "exl3/codebook.h"

int main(int argc, char** argv) {
  using trellis::exl3::Codebook;
  CLI::App app{"CUDA tile encoder benchmark (tiles/s per K and codebook), JSON on stdout"};
  size_t tiles = 16384;
  int warmup = 1, reps = 3, device = 0;
  std::vector<int> ks{1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<std::string> codebooks{"3inst", "mcg", "mul1"};
  app.add_option("--tiles", tiles, "tiles per call");
  app.add_option("--warmup", warmup, "untimed calls per configuration");
  app.add_option("--reps", reps, "timed calls per configuration (median reported)");
  app.add_option("--k", ks, "bit widths");
  app.add_option("--codebooks", codebooks, "codebooks (3inst, mcg, mul1)");
  app.add_option("--device", device, "CUDA device index");
  CLI11_PARSE(app, argc, argv);
  if (!trellis::cuda::encoder_available()) {
    std::cerr << "no CUDA device\n";
    return 1;
  }
  const std::vector<uint16_t> x = trellis::bench::normal_tiles(tiles);
  std::vector<uint16_t> states(x.size()), decoded(x.size());

  nlohmann::json out;
  out["bench"] = "cuda_encode";
  out["tiles"] = tiles;
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
        trellis::cuda::encode_tiles(x.data(), tiles, K, *cb, states.data(), decoded.data(), device);
      std::vector<double> kernel_s, wall_s;
      for (int i = 0; i < reps; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        trellis::cuda::encode_tiles(x.data(), tiles, K, *cb, states.data(), decoded.data(), device);
        const auto t1 = std::chrono::steady_clock::now();
        wall_s.push_back(std::chrono::duration<double>(t1 - t0).count());
        kernel_s.push_back(trellis::cuda::last_encode_kernel_ms(device) / 1e3);
      }
      const double k = trellis::bench::median(kernel_s), w = trellis::bench::median(wall_s);
      nlohmann::json r;
      r["codebook"] = name;
      r["K"] = K;
      r["kernel_s"] = k;
      r["kernel_tiles_per_s"] = std::round(static_cast<double>(tiles) / k);
      r["end_to_end_tiles_per_s"] = std::round(static_cast<double>(tiles) / w);
      r["mse"] = trellis::bench::mse(decoded, x);
      out["results"].push_back(r);
      std::cerr << name << " K=" << K << ": " << r["kernel_tiles_per_s"] << " tiles/s (kernel), "
                << r["end_to_end_tiles_per_s"] << " end to end, mse " << r["mse"] << "\n";
    }
  }
  std::cout << out.dump(2) << "\n";
  return 0;
}
