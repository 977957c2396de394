// backends/vulkan/vk_coop.cpp: see vk_coop.h.
#include "backends/vulkan/vk_coop.h"

#include <cstdlib>
#include <cstring>

#include "core/log.h"

namespace trellis::vk {
namespace {

// VkCooperativeMatrixPropertiesKHR / VkPhysicalDeviceCooperativeMatrixPropertiesKHR (registry
// layout: enums are 32-bit).
struct CoopMatrixPropertiesKhr {
  VkStructureType sType = static_cast<VkStructureType>(1000506001);
  void* pNext = nullptr;
  uint32_t MSize = 0, NSize = 0, KSize = 0;
  int32_t AType = 0, BType = 0, CType = 0, ResultType = 0;
  VkBool32 saturatingAccumulation = VK_FALSE;
  int32_t scope = 0;
};
struct CoopDevicePropertiesKhr {
  VkStructureType sType = static_cast<VkStructureType>(1000506002);
  void* pNext = nullptr;
  VkShaderStageFlags cooperativeMatrixSupportedStages = 0;
};
using PfnCoopPropertiesKhr = VkResult(VKAPI_PTR*)(VkPhysicalDevice, uint32_t*, CoopMatrixPropertiesKhr*);

constexpr int32_t kFloat16 = 0, kFloat32 = 1, kScopeSubgroup = 3;  // same values for KHR and NV

bool wanted_shape(uint32_t m, uint32_t n, uint32_t k, int32_t a, int32_t b, int32_t c, int32_t r, int32_t scope) {
  return m == 16 && n == 16 && k == 16 && a == kFloat16 && b == kFloat16 && c == kFloat32 && r == kFloat32 &&
         scope == kScopeSubgroup;
}

bool khr_has_shape(VkInstance instance, VkPhysicalDevice d) {
  auto fn = reinterpret_cast<PfnCoopPropertiesKhr>(
      vkGetInstanceProcAddr(instance, "vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR"));
  if (!fn) return false;
  uint32_t n = 0;
  if (fn(d, &n, nullptr) != VK_SUCCESS) return false;
  std::vector<CoopMatrixPropertiesKhr> props(n);
  if (fn(d, &n, props.data()) != VK_SUCCESS) return false;
  for (const auto& p : props)
    if (wanted_shape(p.MSize, p.NSize, p.KSize, p.AType, p.BType, p.CType, p.ResultType, p.scope)) return true;
  return false;
}

bool nv_has_shape(VkInstance instance, VkPhysicalDevice d) {
  auto fn = reinterpret_cast<PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV>(
      vkGetInstanceProcAddr(instance, "vkGetPhysicalDeviceCooperativeMatrixPropertiesNV"));
  if (!fn) return false;
  uint32_t n = 0;
  if (fn(d, &n, nullptr) != VK_SUCCESS) return false;
  VkCooperativeMatrixPropertiesNV blank = {};
  blank.sType = VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_NV;
  std::vector<VkCooperativeMatrixPropertiesNV> props(n, blank);
  if (fn(d, &n, props.data()) != VK_SUCCESS) return false;
  for (const auto& p : props)
    if (wanted_shape(p.MSize, p.NSize, p.KSize, p.AType, p.BType, p.CType, p.DType, p.scope)) return true;
  return false;
}

}  // namespace

bool has_extension(VkPhysicalDevice d, const char* name) {
  uint32_t n = 0;
  vkEnumerateDeviceExtensionProperties(d, nullptr, &n, nullptr);
  std::vector<VkExtensionProperties> ext(n);
  vkEnumerateDeviceExtensionProperties(d, nullptr, &n, ext.data());
  for (const auto& e : ext)
    if (std::strcmp(e.extensionName, name) == 0) return true;
  return false;
}

CoopSupport probe_coop(VkInstance instance, VkPhysicalDevice d) {
  CoopSupport s;
  const char* env = std::getenv("TRELLIS_VULKAN_COOPMAT");
  if (env && std::strcmp(env, "0") == 0) {
    s.detail = "off (TRELLIS_VULKAN_COOPMAT=0)";
    return s;
  }
  const bool ext_khr = has_extension(d, "VK_KHR_cooperative_matrix");
  const bool ext_nv = has_extension(d, "VK_NV_cooperative_matrix");
  if (!ext_khr && !ext_nv) {
    s.detail = "no VK_KHR_cooperative_matrix / VK_NV_cooperative_matrix";
    return s;
  }
  VkPhysicalDeviceProperties base;
  vkGetPhysicalDeviceProperties(d, &base);
  if (base.apiVersion < VK_API_VERSION_1_2) {
    s.detail = "cooperative matrices need a Vulkan 1.2 device (shaderFloat16, vulkanMemoryModel)";
    return s;
  }
  // Features: Vulkan 1.2 and both cooperative-matrix structures (only chained when present).
  VkPhysicalDeviceVulkan12Features v12 = {};
  v12.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES;
  CoopMatrixFeaturesKhr fk;
  VkPhysicalDeviceCooperativeMatrixFeaturesNV fn = {};
  fn.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV;
  VkPhysicalDeviceFeatures2 f2 = {};
  f2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2;
  f2.pNext = &v12;
  void** tail = &v12.pNext;
  if (ext_khr) {
    *tail = &fk;
    tail = &fk.pNext;
  }
  if (ext_nv) *tail = &fn;
  vkGetPhysicalDeviceFeatures2(d, &f2);
  // Properties: subgroups (size, ids in compute) and the KHR supported stages.
  VkPhysicalDeviceSubgroupProperties sub = {};
  sub.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES;
  CoopDevicePropertiesKhr pk;
  VkPhysicalDeviceCooperativeMatrixPropertiesNV pn = {};
  pn.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_PROPERTIES_NV;
  VkPhysicalDeviceProperties2 p2 = {};
  p2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2;
  p2.pNext = &sub;
  tail = &sub.pNext;
  if (ext_khr) {
    *tail = &pk;
    tail = &pk.pNext;
  }
  if (ext_nv) *tail = &pn;
  vkGetPhysicalDeviceProperties2(d, &p2);

  const uint32_t wg = 4 * sub.subgroupSize;
  if (!v12.shaderFloat16 || !v12.vulkanMemoryModel) {
    s.detail = "no shaderFloat16 or vulkanMemoryModel";
    return s;
  }
  if (!(sub.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) || !(sub.supportedOperations & VK_SUBGROUP_FEATURE_BASIC_BIT) ||
      (wg != 128 && wg != 256) || wg > base.limits.maxComputeWorkGroupInvocations) {
    s.detail = fmt::format("subgroup size {} or subgroup ids in compute do not fit 4-subgroup workgroups",
                           sub.subgroupSize);
    return s;
  }
  s.workgroup = wg;
  s.khr = ext_khr && fk.cooperativeMatrix && (pk.cooperativeMatrixSupportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
          khr_has_shape(instance, d);
  s.nv = ext_nv && fn.cooperativeMatrix && (pn.cooperativeMatrixSupportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
         nv_has_shape(instance, d);
  s.detail = fmt::format("KHR {}, NV {} (16x16x16 fp16 -> fp32, workgroup {})",
                         s.khr ? "yes" : ext_khr ? "no shape/feature" : "absent",
                         s.nv ? "yes" : ext_nv ? "no shape/feature" : "absent", wg);
  if (env && std::strcmp(env, "nv") == 0) s.khr = false;
  if (env && std::strcmp(env, "khr") == 0) s.nv = false;
  return s;
}

CoopEnable::CoopEnable(const CoopSupport& s) {
  features2_.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2;
  v12_.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES;
  nv_.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV;
  if (!s.khr && !s.nv) return;
  any_ = true;
  features2_.pNext = &v12_;
  v12_.shaderFloat16 = VK_TRUE;
  v12_.vulkanMemoryModel = VK_TRUE;
  void** tail = &v12_.pNext;
  if (s.khr) {
    khr_.cooperativeMatrix = VK_TRUE;
    *tail = &khr_;
    tail = &khr_.pNext;
    extensions_.push_back("VK_KHR_cooperative_matrix");
  }
  if (s.nv) {
    nv_.cooperativeMatrix = VK_TRUE;
    *tail = &nv_;
    extensions_.push_back("VK_NV_cooperative_matrix");
  }
}

}  // namespace trellis::vk
