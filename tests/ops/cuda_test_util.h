// tests/ops/cuda_test_util.h: the CUDA backend shared by the CUDA tests (created once per process),
// or null when this machine has no CUDA device (CI), and helpers to compare results.
#pragma once

#if TRELLIS_WITH_CUDA

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "backends/cuda/cuda_api.h"
#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_ops.h"
#include "backends/cuda/cuda_util.h"

namespace trellis::test {

inline cuda::CudaBackend* cuda_backend() {
  // Never destroyed: CUDA teardown from a static destructor races the runtime's own exit cleanup.
  static cuda::CudaBackend* backend = list_cuda_devices().empty() ? nullptr : new cuda::CudaBackend(0);
  return backend;
}

// ||a - b|| / ||b|| (0 when both are 0).
inline double cuda_rel_rms(const std::vector<float>& a, const std::vector<float>& b) {
  double err = 0, norm = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    err += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    norm += static_cast<double>(b[i]) * b[i];
  }
  if (a.size() != b.size()) return INFINITY;
  return norm == 0 ? std::sqrt(err) : std::sqrt(err / norm);
}

}  // namespace trellis::test

#define TRELLIS_CUDA_OR_SKIP(var)                                   \
  cuda::CudaBackend* var = ::trellis::test::cuda_backend();         \
  if (!var) GTEST_SKIP() << "no CUDA device"

#endif  // TRELLIS_WITH_CUDA
