// backends/cpu/dense_matmul.cpp: argument checks and Highway runtime dispatch for the dense fp16
// matmul; the kernel is in dense_matmul-inl.h.

#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS HWY_SSSE3
#endif

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "backends/cpu/dense_matmul.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep

#include <hwy/highway.h>

#include "backends/cpu/dense_matmul-inl.h"

#if HWY_ONCE
#include "backends/cpu/dense_matmul.h"
#include "core/error.h"

namespace trellis::cpu {

HWY_EXPORT(DenseMatmulF16);

void dense_matmul_f16(const uint16_t* w, const float* x, int64_t m, int64_t k, int64_t n, float* y,
                      ThreadPool& pool) {
  if (m < 0 || k <= 0 || n <= 0)
    fail(ErrorKind::kInvalidArgument,
         "dense fp16 matmul: m = {}, k = {}, n = {} (expected m >= 0, k >= 1, n >= 1)", m, k, n);
  if (m == 0) return;
  if (!w || !x || !y) fail(ErrorKind::kInvalidArgument, "dense fp16 matmul: null pointer");
  HWY_DYNAMIC_DISPATCH(DenseMatmulF16)(w, x, m, k, n, y, pool);
}

}  // namespace trellis::cpu
#endif  // HWY_ONCE
