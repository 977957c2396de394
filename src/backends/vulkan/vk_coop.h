// backends/vulkan/vk_coop.h: cooperative-matrix support of a device: what it offers, and the
// device-creation chain that enables it.
//
// The prefill GEMM (matmul_f16_coop.comp) needs one shape: 16x16x16, fp16 A and B, fp32 C and
// result, subgroup scope, in compute shaders, plus shaderFloat16 and vulkanMemoryModel (Vulkan
// 1.2 features the shader's SPIR-V declares), subgroup ids in compute and a subgroup size s
// with 4s in {128, 256} (the workgroup is 4 subgroups; matmul_f16_coop2's shapes of 8 subgroups
// are checked against the workgroup limits by VulkanBackend::coop2_shape_fits). It is offered through
// VK_KHR_cooperative_matrix (preferred; the NV-compiled module is rewritten, vk_spirv.h) or,
// behind the same checks, VK_NV_cooperative_matrix (the module as compiled). Nothing here is
// required: without it the backend uses matmul_f16_tiled. The headers this project builds with
// (1.3.239) predate VK_KHR_cooperative_matrix, so its three structures are declared here with
// the registry's layout and values.
#pragma once

#include <vulkan/vulkan.h>

#include <string>
#include <vector>

namespace trellis::vk {

// Whether the physical device offers the device extension `name`.
bool has_extension(VkPhysicalDevice d, const char* name);

struct CoopSupport {
  bool khr = false;  // VK_KHR_cooperative_matrix with the shape, usable by matmul_f16_coop
  bool nv = false;   // VK_NV_cooperative_matrix, same
  uint32_t workgroup = 0;  // 4 x subgroup size
  std::string detail;      // what was found or what is missing, for the log
};

// TRELLIS_VULKAN_COOPMAT=0 makes this report nothing (and so nothing is enabled).
CoopSupport probe_coop(VkInstance instance, VkPhysicalDevice device);

// VK_KHR_cooperative_matrix structures (registry values; absent from the 1.3.239 headers).
struct CoopMatrixFeaturesKhr {
  VkStructureType sType = static_cast<VkStructureType>(1000506000);
  void* pNext = nullptr;
  VkBool32 cooperativeMatrix = VK_FALSE;
  VkBool32 cooperativeMatrixRobustBufferAccess = VK_FALSE;
};

// The pNext chain and extension names for vkCreateDevice that enable what `s` offers. Holds
// pointers into itself: construct in place, do not copy.
class CoopEnable {
 public:
  explicit CoopEnable(const CoopSupport& s);
  CoopEnable(const CoopEnable&) = delete;
  CoopEnable& operator=(const CoopEnable&) = delete;
  const void* chain() const { return any_ ? &features2_ : nullptr; }
  const std::vector<const char*>& extensions() const { return extensions_; }

 private:
  bool any_ = false;
  // Zeroed, sTypes set by the constructor.
  VkPhysicalDeviceFeatures2 features2_ = {};
  VkPhysicalDeviceVulkan12Features v12_ = {};
  CoopMatrixFeaturesKhr khr_;
  VkPhysicalDeviceCooperativeMatrixFeaturesNV nv_ = {};
  std::vector<const char*> extensions_;
};

}  // namespace trellis::vk
