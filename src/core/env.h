// core/env.h: tuning numbers read from the environment (backend knobs such as
// TRELLIS_VULKAN_GEMV_GROUPS or TRELLIS_CUDA_GEMV_BLOCKS_PER_SM).
#pragma once

#include <cstdint>

namespace trellis {

// `fallback` when `name` is unset or empty; a value that is not an integer in [lo, hi] is an
// ErrorKind::kInvalidArgument naming the variable.
int64_t env_int(const char* name, int64_t fallback, int64_t lo, int64_t hi);

}  // namespace trellis
