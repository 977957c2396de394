// Device selection: what `--device auto` stands for, and the errors of bad device strings.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "backends/registry.h"
#include "core/error.h"

namespace trellis {
namespace {

DeviceInfo dev(const std::string& backend, int index, const std::string& kind) {
  DeviceInfo d;
  d.backend = backend;
  d.index = index;
  d.kind = kind;
  d.name = backend + " device";
  return d;
}

// The rule of registry.h: CUDA first, then a discrete Vulkan GPU, else the CPU; lavapipe-like,
// integrated and virtual Vulkan devices are never chosen.
TEST(Registry, AutoPrefersCudaThenDiscreteVulkanThenCpu) {
  const DeviceInfo cpu = dev("cpu", 0, "cpu");
  EXPECT_EQ(auto_device({cpu}), "cpu");
  EXPECT_EQ(auto_device({cpu, dev("vulkan", 0, "cpu")}), "cpu");
  EXPECT_EQ(auto_device({cpu, dev("vulkan", 0, "integrated_gpu"), dev("vulkan", 1, "virtual_gpu")}), "cpu");
  EXPECT_EQ(auto_device({cpu, dev("vulkan", 0, "cpu"), dev("vulkan", 1, "discrete_gpu")}), "vulkan:1");
  EXPECT_EQ(auto_device({cpu, dev("cuda", 0, "discrete_gpu"), dev("vulkan", 0, "discrete_gpu")}), "cuda:0");
  EXPECT_EQ(auto_device({dev("vulkan", 2, "discrete_gpu"), dev("cuda", 1, "discrete_gpu")}), "cuda:1");
  EXPECT_EQ(auto_device({}), "cpu");
}

// On this machine: "auto" opens the device auto_device names for the devices listed here, and
// every listed device has a kind.
TEST(Registry, AutoOpensTheListedChoice) {
  const std::vector<DeviceInfo> devices = list_devices();
  for (const DeviceInfo& d : devices) EXPECT_FALSE(d.kind.empty()) << d.backend << ":" << d.index;
  const std::string want = auto_device(devices);
  const DeviceInfo& got = make_backend("auto", 1)->info();
  EXPECT_EQ(device_id(got), want);
}

TEST(Registry, BadDeviceStringsAreErrors) {
  EXPECT_THROW(make_backend("tpu"), Error);
  EXPECT_THROW(make_backend("cpu:1"), Error);
  EXPECT_THROW(make_backend("vulkan:99"), Error);
  EXPECT_THROW(make_backend("cuda:99"), Error);
  EXPECT_THROW(make_backend("cuda:x"), Error);
}

}  // namespace
}  // namespace trellis
