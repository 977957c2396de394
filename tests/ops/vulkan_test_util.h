// tests/ops/vulkan_test_util.h: the Vulkan backend shared by the Vulkan tests (created once per
// process so pipelines are compiled once), or null when this machine has no Vulkan device.
#pragma once

#if TRELLIS_WITH_VULKAN

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "backends/vulkan/vk_backend.h"
#include "backends/vulkan/vulkan_api.h"

namespace trellis::test {

inline vk::VulkanBackend* vulkan_backend() {
  // Deliberately never destroyed: tearing Vulkan down from a static destructor races the
  // loader's own exit-time cleanup.
  static vk::VulkanBackend* backend =
      list_vulkan_devices().empty() ? nullptr : new vk::VulkanBackend(0);
  return backend;
}

// ||a - b|| / ||b|| (0 when both are 0).
inline double rel_rms(const std::vector<float>& a, const std::vector<float>& b) {
  double err = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    err += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    norm += static_cast<double>(b[i]) * b[i];
  }
  return norm == 0 ? std::sqrt(err) : std::sqrt(err / norm);
}

}  // namespace trellis::test

#define TRELLIS_VULKAN_OR_SKIP(var)                                          \
  vk::VulkanBackend* var = ::trellis::test::vulkan_backend();                \
  if (!var) GTEST_SKIP() << "no Vulkan device (install mesa-vulkan-drivers for lavapipe)"

#endif  // TRELLIS_WITH_VULKAN
