// tests/ops/ops_test_util.h: helpers shared by the tests that run an op on a device backend and
// compare it with the CPU backend: seeded random inputs, fp32 views of host vectors, and fp32
// downloads through the Backend seam.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "backends/backend.h"
#include "test_util.h"

namespace trellis::test {

// n values uniform in [-scale, scale), from SplitMix64(seed).
inline std::vector<float> random_floats(size_t n, uint64_t seed, float scale = 1.0f) {
  SplitMix64 rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = scale * static_cast<float>(static_cast<double>(rng.next() >> 11) / 9007199254740992.0 * 2 - 1);
  return v;
}

inline TensorView f32_view(const std::vector<float>& v, Shape shape) {
  return TensorView{DType::kF32, std::move(shape), reinterpret_cast<const std::byte*>(v.data())};
}

// The whole tensor as fp32 (the backend converts fp16 / bf16 tensors).
inline std::vector<float> fetch(Backend& be, const DeviceTensor& t) {
  std::vector<float> out(static_cast<size_t>(shape_numel(t.shape)));
  be.download(t, out.data());
  return out;
}

}  // namespace trellis::test
