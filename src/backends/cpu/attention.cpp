// backends/cpu/attention.cpp: Highway runtime dispatch for the CPU attention kernel
// (attention-inl.h).

#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS HWY_SSSE3
#endif

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "backends/cpu/attention.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep

#include <hwy/highway.h>

#include "backends/cpu/attention-inl.h"

#if HWY_ONCE
#include "backends/cpu/attention.h"

namespace trellis::cpu {

HWY_EXPORT(AttentionF16Cache);

void attention_f16_cache(const float* q, const uint16_t* k_cache, const uint16_t* v_cache, const int32_t* positions,
                         const AttentionShape& shape, float* out, ThreadPool& pool) {
  if (shape.rows <= 0) return;
  HWY_DYNAMIC_DISPATCH(AttentionF16Cache)(q, k_cache, v_cache, positions, shape, out, pool);
}

}  // namespace trellis::cpu
#endif  // HWY_ONCE
