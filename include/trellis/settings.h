// trellis/settings.h: process-wide settings the CLI exposes as global options.
#pragma once

#include <cstddef>

namespace trellis {

// Worker threads for CPU work (0 = one per hardware thread). Call before any work starts.
void set_num_threads(size_t threads);
// 0 = quiet (errors only), 1 = normal (warnings, progress bars), 2 = verbose (info), 3 = debug.
void set_verbosity(int level);
const char* version_string();

}  // namespace trellis
