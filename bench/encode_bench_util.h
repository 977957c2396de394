// bench/encode_bench_util.h: what the CPU and CUDA tile-encoder benchmarks share: the anchors'
// input (i.i.d. N(0,1) binary16 tiles, fixed seed), the median of timings, and the decode MSE.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "core/fp16.h"

namespace trellis::bench {

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// tiles x 256 binary16 values drawn from N(0,1) with seed 42.
inline std::vector<uint16_t> normal_tiles(size_t tiles) {
  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<uint16_t> x(tiles * 256);
  for (auto& v : x) v = fp32_to_fp16(normal(rng));
  return x;
}

// Mean squared difference of two equally long binary16 arrays.
inline double mse(const std::vector<uint16_t>& a, const std::vector<uint16_t>& b) {
  double sq = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(fp16_to_fp32(a[i])) - fp16_to_fp32(b[i]);
    sq += d * d;
  }
  return sq / static_cast<double>(a.size());
}

}  // namespace trellis::bench
