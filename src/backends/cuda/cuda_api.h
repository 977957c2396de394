// backends/cuda/cuda_api.h: what the CUDA backend exports to the rest of trellis. Compiled in
// only when TRELLIS_WITH_CUDA is defined (nvcc found at configure time).
#pragma once

#include <memory>
#include <vector>

#include "backends/backend.h"

namespace trellis {

// Devices the CUDA runtime reports; empty (no throw) when there is no driver or no GPU.
std::vector<DeviceInfo> list_cuda_devices();
// A backend on CUDA device `index`; kUnsupported when it does not exist.
std::unique_ptr<Backend> make_cuda_backend(int index);

}  // namespace trellis
