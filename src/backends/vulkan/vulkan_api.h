// backends/vulkan/vulkan_api.h: what the Vulkan backend exports to the rest of trellis. Compiled
// in only when TRELLIS_WITH_VULKAN is defined (Vulkan headers and glslc found at configure time).
#pragma once

#include <memory>
#include <vector>

#include "backends/backend.h"

namespace trellis {

// Physical devices with compute queues; empty (no throw) when there is no loader or no device.
std::vector<DeviceInfo> list_vulkan_devices();
// A backend on Vulkan physical device `index` (the order of list_vulkan_devices()).
std::unique_ptr<Backend> make_vulkan_backend(int index);

}  // namespace trellis
