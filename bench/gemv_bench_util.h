// bench/gemv_bench_util.h: what the GEMV benchmarks (CPU, CUDA, Vulkan) share: a seeded
// SplitMix64, random bytes (every bit string is a valid trellis), random binary16 values, and the
// number of weight copies that rotates past the cache.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/fp16.h"

namespace trellis::bench {

struct Rng {
  uint64_t s;
  uint64_t next() {
    s += 0x9E3779B97F4A7C15ull;
    uint64_t z = s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
};

inline void fill_random(void* dst, size_t bytes, uint64_t seed) {
  Rng rng{seed};
  auto* p = static_cast<uint8_t*>(dst);
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    const uint64_t v = rng.next();
    std::memcpy(p + i, &v, 8);
  }
  for (; i < bytes; ++i) p[i] = static_cast<uint8_t>(rng.next());
}

// n binary16 values uniform in [-scale, scale).
inline std::vector<uint16_t> random_halves(size_t n, float scale, uint64_t seed) {
  Rng rng{seed};
  std::vector<uint16_t> out(n);
  for (auto& h : out) {
    const double u = static_cast<double>(rng.next() >> 11) / 9007199254740992.0;
    h = fp32_to_fp16(static_cast<float>((u * 2 - 1) * scale));
  }
  return out;
}

// Copies of a `bytes`-sized weight set whose total exceeds `cold` bytes (2..256).
inline int copies_for(size_t bytes, size_t cold) {
  return static_cast<int>(std::clamp<size_t>((cold + bytes - 1) / bytes, 2, 256));
}

}  // namespace trellis::bench
