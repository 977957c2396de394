// backends/vulkan/vk_context.cpp: see vk_context.h.
#include "backends/vulkan/vk_context.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "backends/vulkan/vk_shaders.h"
#include "backends/vulkan/vk_spirv.h"
#include "core/error.h"
#include "core/log.h"

namespace trellis::vk {

const char* result_name(VkResult r) {
  switch (r) {
    case VK_SUCCESS: return "VK_SUCCESS";
    case VK_NOT_READY: return "VK_NOT_READY";
    case VK_TIMEOUT: return "VK_TIMEOUT";
    case VK_INCOMPLETE: return "VK_INCOMPLETE";
    case VK_ERROR_OUT_OF_HOST_MEMORY: return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED: return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST: return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_MEMORY_MAP_FAILED: return "VK_ERROR_MEMORY_MAP_FAILED";
    case VK_ERROR_LAYER_NOT_PRESENT: return "VK_ERROR_LAYER_NOT_PRESENT";
    case VK_ERROR_EXTENSION_NOT_PRESENT: return "VK_ERROR_EXTENSION_NOT_PRESENT";
    case VK_ERROR_FEATURE_NOT_PRESENT: return "VK_ERROR_FEATURE_NOT_PRESENT";
    case VK_ERROR_INCOMPATIBLE_DRIVER: return "VK_ERROR_INCOMPATIBLE_DRIVER";
    case VK_ERROR_TOO_MANY_OBJECTS: return "VK_ERROR_TOO_MANY_OBJECTS";
    case VK_ERROR_OUT_OF_POOL_MEMORY: return "VK_ERROR_OUT_OF_POOL_MEMORY";
    default: return "VkResult (other)";
  }
}

void check(VkResult r, const char* what) {
  if (r == VK_SUCCESS) return;
  const ErrorKind kind = r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY
                             ? ErrorKind::kOutOfMemory
                         : r == VK_ERROR_INCOMPATIBLE_DRIVER || r == VK_ERROR_FEATURE_NOT_PRESENT ||
                                   r == VK_ERROR_EXTENSION_NOT_PRESENT
                             ? ErrorKind::kUnsupported
                             : ErrorKind::kInternal;
  fail(kind, "Vulkan: {} failed: {} ({})", what, result_name(r), static_cast<int>(r));
}

namespace {

constexpr uint32_t kSetsPerPool = 4096;
// Cached descriptor sets beyond this are dropped (with the cached segments) at the next flush:
// sets of dead buffers are never reused, so the cache would otherwise grow with every new buffer.
constexpr size_t kMaxCachedSets = 32768;
constexpr size_t kArenaBytes = 1 << 20;
// Segments shorter than this are recorded afresh every time (uploads, downloads).
constexpr size_t kMinReplayCommands = 4;
constexpr size_t kMaxSegments = 8;

VkDescriptorPool create_descriptor_pool(VkDevice device) {
  VkDescriptorPoolSize size{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, kSetsPerPool * kMaxBindings};
  VkDescriptorPoolCreateInfo dpi{VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
  dpi.maxSets = kSetsPerPool;
  dpi.poolSizeCount = 1;
  dpi.pPoolSizes = &size;
  VkDescriptorPool pool = VK_NULL_HANDLE;
  check(vkCreateDescriptorPool(device, &dpi, nullptr, &pool), "vkCreateDescriptorPool");
  return pool;
}

VkInstance create_instance() {
  VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
  app.pApplicationName = "trellis";
  app.pEngineName = "trellis";
  app.apiVersion = VK_API_VERSION_1_2;
  VkInstanceCreateInfo ci{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
  ci.pApplicationInfo = &app;
  VkInstance instance = VK_NULL_HANDLE;
  if (vkCreateInstance(&ci, nullptr, &instance) != VK_SUCCESS) return VK_NULL_HANDLE;
  return instance;
}

struct Candidate {
  VkPhysicalDevice device;
  uint32_t queue_family;
};

// Physical devices with Vulkan >= 1.1 and a compute queue, in enumeration order.
std::vector<Candidate> candidates(VkInstance instance) {
  uint32_t n = 0;
  if (vkEnumeratePhysicalDevices(instance, &n, nullptr) != VK_SUCCESS) return {};
  std::vector<VkPhysicalDevice> devs(n);
  if (vkEnumeratePhysicalDevices(instance, &n, devs.data()) != VK_SUCCESS) return {};
  std::vector<Candidate> out;
  for (VkPhysicalDevice d : devs) {
    VkPhysicalDeviceProperties props;
    vkGetPhysicalDeviceProperties(d, &props);
    if (props.apiVersion < VK_API_VERSION_1_1) {
      log_warn("Vulkan: skipping {} (Vulkan {}.{}; trellis needs 1.1)", props.deviceName,
               VK_API_VERSION_MAJOR(props.apiVersion), VK_API_VERSION_MINOR(props.apiVersion));
      continue;
    }
    uint32_t nq = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(d, &nq, nullptr);
    std::vector<VkQueueFamilyProperties> q(nq);
    vkGetPhysicalDeviceQueueFamilyProperties(d, &nq, q.data());
    // Prefer a compute-only family (async compute on discrete GPUs), else any with compute.
    int best = -1;
    for (uint32_t i = 0; i < nq; ++i) {
      if (!(q[i].queueFlags & VK_QUEUE_COMPUTE_BIT)) continue;
      if (best < 0 || !(q[i].queueFlags & VK_QUEUE_GRAPHICS_BIT)) best = static_cast<int>(i);
    }
    if (best >= 0) out.push_back({d, static_cast<uint32_t>(best)});
  }
  return out;
}

// The optional shader features of Context::ShaderFeatures. fp16 arithmetic counts only with
// RTE rounding control for 16-bit results: the exact decode relies on RNE binary16 results and
// the shaders declare that rounding mode instead of trusting the driver's default.
Context::ShaderFeatures probe_shader_features(VkPhysicalDevice d, uint32_t api_version) {
  Context::ShaderFeatures sf;
  if (api_version < VK_API_VERSION_1_2) return sf;
  const bool dot_ext = has_extension(d, VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME);
  VkPhysicalDeviceVulkan12Features f12{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
  VkPhysicalDeviceShaderIntegerDotProductFeatures fdot{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES};
  if (dot_ext) f12.pNext = &fdot;
  VkPhysicalDeviceFeatures2 f{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
  f.pNext = &f12;
  vkGetPhysicalDeviceFeatures2(d, &f);
  VkPhysicalDeviceVulkan12Properties p12{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_PROPERTIES};
  VkPhysicalDeviceShaderIntegerDotProductProperties pdot{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_PROPERTIES};
  if (dot_ext) p12.pNext = &pdot;
  VkPhysicalDeviceProperties2 p{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
  p.pNext = &p12;
  vkGetPhysicalDeviceProperties2(d, &p);
  sf.float16 = f12.shaderFloat16 && p12.shaderRoundingModeRTEFloat16;
  sf.int_dot = dot_ext && fdot.shaderIntegerDotProduct;
  sf.int_dot_accelerated = sf.int_dot && pdot.integerDotProduct4x8BitPackedUnsignedAccelerated;
  return sf;
}

DeviceInfo describe(VkPhysicalDevice d, int index) {
  DeviceInfo info;
  info.backend = "vulkan";
  info.index = index;
  VkPhysicalDeviceSubgroupProperties subgroup{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
  VkPhysicalDeviceProperties2 props{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
  props.pNext = &subgroup;
  vkGetPhysicalDeviceProperties2(d, &props);
  info.name = props.properties.deviceName;
  switch (props.properties.deviceType) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: info.kind = "discrete_gpu"; break;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: info.kind = "integrated_gpu"; break;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: info.kind = "virtual_gpu"; break;
    case VK_PHYSICAL_DEVICE_TYPE_CPU: info.kind = "cpu"; break;
    default: info.kind = "other"; break;
  }
  info.subgroup_size = static_cast<int>(subgroup.subgroupSize);
  // Total: the device-local heaps; free: their budget minus usage where VK_EXT_memory_budget
  // reports it (0 = unknown otherwise).
  const bool budget = has_extension(d, "VK_EXT_memory_budget");
  VkPhysicalDeviceMemoryBudgetPropertiesEXT mb{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_BUDGET_PROPERTIES_EXT};
  VkPhysicalDeviceMemoryProperties2 mem2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2};
  if (budget) mem2.pNext = &mb;
  vkGetPhysicalDeviceMemoryProperties2(d, &mem2);
  const VkPhysicalDeviceMemoryProperties& mem = mem2.memoryProperties;
  for (uint32_t i = 0; i < mem.memoryHeapCount; ++i) {
    if (!(mem.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT)) continue;
    info.memory_bytes += mem.memoryHeaps[i].size;
    if (budget && mb.heapBudget[i] > mb.heapUsage[i]) info.free_bytes += mb.heapBudget[i] - mb.heapUsage[i];
  }
  info.features.push_back(fmt::format("vulkan{}.{}", VK_API_VERSION_MAJOR(props.properties.apiVersion),
                                      VK_API_VERSION_MINOR(props.properties.apiVersion)));
  if (props.properties.apiVersion >= VK_API_VERSION_1_2) {
    VkPhysicalDeviceVulkan12Features f12{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
    VkPhysicalDeviceFeatures2 f{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
    f.pNext = &f12;
    vkGetPhysicalDeviceFeatures2(d, &f);
    if (f12.shaderFloat16) info.features.push_back("shader_float16");
    if (f12.shaderInt8) info.features.push_back("int8");
  }
  const VkSubgroupFeatureFlags ops = subgroup.supportedOperations;
  if ((subgroup.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) && (ops & VK_SUBGROUP_FEATURE_SHUFFLE_BIT))
    info.features.push_back("subgroup_shuffle");
  if ((subgroup.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) && (ops & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT))
    info.features.push_back("subgroup_arithmetic");
  if (has_extension(d, VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME)) info.features.push_back("integer_dot_product");
  if (has_extension(d, "VK_KHR_cooperative_matrix")) info.features.push_back("cooperative_matrix");
  if (has_extension(d, "VK_NV_cooperative_matrix")) info.features.push_back("cooperative_matrix_nv");
  if (has_extension(d, "VK_EXT_subgroup_size_control")) info.features.push_back("subgroup_size_control");
  return info;
}

}  // namespace

std::vector<DeviceInfo> Context::list_devices() {
  std::vector<DeviceInfo> out;
  VkInstance instance = create_instance();
  if (!instance) return out;
  int index = 0;
  for (const Candidate& c : candidates(instance)) out.push_back(describe(c.device, index++));
  vkDestroyInstance(instance, nullptr);
  return out;
}

std::shared_ptr<Context> Context::create(int index, bool discrete_like) {
  std::shared_ptr<Context> ctx(new Context());
  ctx->discrete_like_ = discrete_like;
  ctx->instance_ = create_instance();
  if (!ctx->instance_)
    fail(ErrorKind::kUnsupported, "Vulkan: no usable Vulkan loader or driver (vkCreateInstance failed)");
  const std::vector<Candidate> devs = candidates(ctx->instance_);
  if (index < 0 || static_cast<size_t>(index) >= devs.size())
    fail(ErrorKind::kUnsupported, "Vulkan: device {} does not exist ({} device{} with a compute queue)", index,
         devs.size(), devs.size() == 1 ? "" : "s");
  ctx->physical_ = devs[static_cast<size_t>(index)].device;
  ctx->queue_family_ = devs[static_cast<size_t>(index)].queue_family;
  ctx->info_ = describe(ctx->physical_, index);
  VkPhysicalDeviceProperties props;
  vkGetPhysicalDeviceProperties(ctx->physical_, &props);
  ctx->limits_ = props.limits;
  ctx->discrete_ = props.deviceType == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU;
  ctx->cpu_ = props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
  vkGetPhysicalDeviceMemoryProperties(ctx->physical_, &ctx->memory_);
  // What the shaders assume (all far below what current GPUs offer).
  if (props.limits.maxComputeWorkGroupInvocations < 256 || props.limits.maxComputeWorkGroupSize[0] < 256 ||
      props.limits.maxComputeSharedMemorySize < 16384 || props.limits.maxPushConstantsSize < 128)
    fail(ErrorKind::kUnsupported,
         "Vulkan device '{}': needs 256 invocations per workgroup, 16 KiB shared memory and 128 bytes of push "
         "constants (has {}, {}, {})",
         ctx->info_.name, props.limits.maxComputeWorkGroupInvocations, props.limits.maxComputeSharedMemorySize,
         props.limits.maxPushConstantsSize);

  const float priority = 1.0f;
  VkDeviceQueueCreateInfo qci{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
  qci.queueFamilyIndex = ctx->queue_family_;
  qci.queueCount = 1;
  qci.pQueuePriorities = &priority;
  VkDeviceCreateInfo dci{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
  dci.queueCreateInfoCount = 1;
  dci.pQueueCreateInfos = &qci;
  // Optional features, enabled only where the device has them (their shaders have fallbacks):
  // cooperative matrices (vk_coop.h; their Vulkan 1.2 feature struct already asks for
  // shaderFloat16), else shaderFloat16 alone, and the integer dot product.
  ctx->coop_ = probe_coop(ctx->instance_, ctx->physical_);
  const CoopEnable coop(ctx->coop_);
  const ShaderFeatures sf = probe_shader_features(ctx->physical_, props.apiVersion);
  VkPhysicalDeviceVulkan12Features enable12{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
  VkPhysicalDeviceShaderIntegerDotProductFeatures enable_dot{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES};
  std::vector<const char*> device_extensions;
  // TRELLIS_VULKAN_PIPELINE_STATS=2 adds the driver's internal representations (its IR or ISA
  // text, where it gives any) of every pipeline, written to stderr.
  // TRELLIS_VULKAN_PIPELINE_STATS=1: the driver's statistics of every pipeline built (registers,
  // shared memory, instruction counts: whatever it reports) where it has
  // VK_KHR_pipeline_executable_properties; a diagnostic for tuning occupancy on a new device.
  const bool stats = env_flag("TRELLIS_VULKAN_PIPELINE_STATS", false) &&
                     has_extension(ctx->physical_, VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME);
  VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR enable_stats{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES_KHR};
  auto build_chain = [&](bool with_coop) {
    const void* chain = nullptr;
    device_extensions.clear();
    if (with_coop && coop.chain()) {
      chain = coop.chain();
      device_extensions = coop.extensions();
    } else if (sf.float16) {
      enable12.shaderFloat16 = VK_TRUE;
      enable12.pNext = nullptr;
      chain = &enable12;
    }
    if (sf.int_dot) {
      enable_dot.shaderIntegerDotProduct = VK_TRUE;
      enable_dot.pNext = const_cast<void*>(chain);
      chain = &enable_dot;
      device_extensions.push_back(VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME);
    }
    if (stats) {
      enable_stats.pipelineExecutableInfo = VK_TRUE;
      enable_stats.pNext = const_cast<void*>(chain);
      chain = &enable_stats;
      device_extensions.push_back(VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME);
    }
    dci.pNext = chain;
    dci.enabledExtensionCount = static_cast<uint32_t>(device_extensions.size());
    dci.ppEnabledExtensionNames = device_extensions.empty() ? nullptr : device_extensions.data();
  };
  build_chain(true);
  VkResult created = vkCreateDevice(ctx->physical_, &dci, nullptr, &ctx->device_);
  if (created != VK_SUCCESS && coop.chain()) {
    log_warn("Vulkan: creating '{}' with cooperative matrices failed ({}); continuing without them", ctx->info_.name,
             result_name(created));
    ctx->coop_ = CoopSupport{};
    ctx->coop_.detail = "device creation with it failed";
    build_chain(false);
    created = vkCreateDevice(ctx->physical_, &dci, nullptr, &ctx->device_);
  }
  check(created, "vkCreateDevice");
  ctx->shader_features_ = sf;
  ctx->use_f16_ = sf.float16 && env_flag("TRELLIS_VULKAN_F16", true);
  ctx->use_int_dot_ = sf.int_dot && env_flag("TRELLIS_VULKAN_DOT", sf.int_dot_accelerated);
  log_debug("Vulkan: shader fp16 {} (in use: {}), integer dot product {}{} (in use: {})", sf.float16, ctx->use_f16_,
            sf.int_dot, sf.int_dot_accelerated ? ", accelerated" : "", ctx->use_int_dot_);
  vkGetDeviceQueue(ctx->device_, ctx->queue_family_, 0, &ctx->queue_);

  VkCommandPoolCreateInfo pci{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  pci.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  pci.queueFamilyIndex = ctx->queue_family_;
  check(vkCreateCommandPool(ctx->device_, &pci, nullptr, &ctx->command_pool_), "vkCreateCommandPool");
  VkCommandBufferAllocateInfo cai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  cai.commandPool = ctx->command_pool_;
  cai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  cai.commandBufferCount = 1;
  check(vkAllocateCommandBuffers(ctx->device_, &cai, &ctx->cmd_), "vkAllocateCommandBuffers");
  VkFenceCreateInfo fci{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  check(vkCreateFence(ctx->device_, &fci, nullptr, &ctx->fence_), "vkCreateFence");

  ctx->descriptor_pools_.push_back(create_descriptor_pool(ctx->device_));
  VkPipelineCacheCreateInfo pcci{VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO};
  check(vkCreatePipelineCache(ctx->device_, &pcci, nullptr, &ctx->pipeline_cache_), "vkCreatePipelineCache");

  // Timestamps, where the compute queue writes them.
  uint32_t nq = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(ctx->physical_, &nq, nullptr);
  std::vector<VkQueueFamilyProperties> qf(nq);
  vkGetPhysicalDeviceQueueFamilyProperties(ctx->physical_, &nq, qf.data());
  const uint32_t valid_bits = qf[ctx->queue_family_].timestampValidBits;
  if (valid_bits > 0 && props.limits.timestampPeriod > 0) {
    VkQueryPoolCreateInfo qpi{VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO};
    qpi.queryType = VK_QUERY_TYPE_TIMESTAMP;
    qpi.queryCount = kQueries;
    if (vkCreateQueryPool(ctx->device_, &qpi, nullptr, &ctx->queries_) == VK_SUCCESS) {
      ctx->timestamp_period_ns_ = props.limits.timestampPeriod;
      ctx->timestamp_mask_ = valid_bits >= 64 ? ~0ull : (1ull << valid_bits) - 1;
    }
  }
  ctx->arena_ = ctx->create_buffer(kArenaBytes, MemoryUse::kStaging);
  // TRELLIS_VULKAN_PROFILE: 1 each dispatch alone, 2 the same per grid, 3 in the stream
  // (a timestamp after every dispatch of a normal segment; needs timestamps).
  const char* prof = std::getenv("TRELLIS_VULKAN_PROFILE");
  const bool stream = prof && std::strcmp(prof, "3") == 0 && ctx->has_timestamps();
  if (stream) {
    VkQueryPoolCreateInfo qpi{VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO};
    qpi.queryType = VK_QUERY_TYPE_TIMESTAMP;
    qpi.queryCount = kStreamQueries;
    check(vkCreateQueryPool(ctx->device_, &qpi, nullptr, &ctx->stream_queries_), "vkCreateQueryPool");
  }
  ctx->profile_stream_ = stream;
  ctx->profile_ = !stream && env_flag("TRELLIS_VULKAN_PROFILE", false);
  ctx->profile_grids_ = ctx->profile_ && std::strcmp(prof, "2") == 0;
  ctx->replay_ = env_flag("TRELLIS_VULKAN_REPLAY", true);
  ctx->host_profile_ = env_flag("TRELLIS_VULKAN_HOST_PROFILE", false);
  ctx->readback_cached_ = env_flag("TRELLIS_VULKAN_READBACK_CACHED", true);
  ctx->pipeline_stats_ = stats;
  const char* stats_env = std::getenv("TRELLIS_VULKAN_PIPELINE_STATS");
  ctx->pipeline_ir_ = stats && std::strcmp(stats_env, "2") == 0;
  return ctx;
}

Context::~Context() {
  if (device_) {
    vkDeviceWaitIdle(device_);
    for (auto& [buffer, memory] : retired_) {
      vkDestroyBuffer(device_, buffer, nullptr);
      vkFreeMemory(device_, memory, nullptr);
    }
    for (auto& [hash, bucket] : pipelines_)
      for (auto& p : bucket) {
        vkDestroyPipeline(device_, p->pipeline, nullptr);
        vkDestroyPipelineLayout(device_, p->layout, nullptr);
        vkDestroyDescriptorSetLayout(device_, p->set_layout, nullptr);
      }
    vkDestroyPipelineCache(device_, pipeline_cache_, nullptr);
    for (VkDescriptorPool pool : descriptor_pools_) vkDestroyDescriptorPool(device_, pool, nullptr);
    if (queries_) vkDestroyQueryPool(device_, queries_, nullptr);
    if (stream_queries_) vkDestroyQueryPool(device_, stream_queries_, nullptr);
    vkDestroyFence(device_, fence_, nullptr);
    vkDestroyCommandPool(device_, command_pool_, nullptr);
    vkDestroyDevice(device_, nullptr);
  }
  if (instance_) vkDestroyInstance(instance_, nullptr);
}

void Context::set_use_f16(bool on) {
  if (on && !shader_features_.float16)
    fail(ErrorKind::kUnsupported, "Vulkan device '{}': no shaderFloat16 with RTE rounding control for fp16", info_.name);
  use_f16_ = on;
}

void Context::set_use_int_dot(bool on) {
  if (on && !shader_features_.int_dot)
    fail(ErrorKind::kUnsupported, "Vulkan device '{}': no shaderIntegerDotProduct (VK_KHR_shader_integer_dot_product)",
         info_.name);
  use_int_dot_ = on;
}

void Context::shutdown() {
  flush();
  keep_alive_.clear();
  arena_.reset();
}

uint32_t Context::memory_type(uint32_t type_bits, MemoryUse use, bool* host_visible) const {
  const VkMemoryPropertyFlags host = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  const bool staging = use != MemoryUse::kDevice;
  // Preference lists, best first.
  std::vector<VkMemoryPropertyFlags> wanted;
  if (use == MemoryUse::kReadback && readback_cached_) {
    wanted = {host | VK_MEMORY_PROPERTY_HOST_CACHED_BIT, host};
  } else if (staging) {
    wanted = {host};
  } else if (discrete_) {
    wanted = {VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, host};
  } else {
    wanted = {VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | host, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, host};
  }
  for (VkMemoryPropertyFlags w : wanted) {
    for (uint32_t i = 0; i < memory_.memoryTypeCount; ++i) {
      if (!(type_bits & (1u << i)) || (memory_.memoryTypes[i].propertyFlags & w) != w) continue;
      *host_visible = (memory_.memoryTypes[i].propertyFlags & host) == host;
      return i;
    }
  }
  fail(ErrorKind::kUnsupported, "Vulkan device '{}': no suitable memory type ({})", info_.name,
       staging ? "host-visible staging" : "device-local");
}

std::shared_ptr<Buffer> Context::create_buffer(size_t bytes, MemoryUse use) {
  return std::make_shared<Buffer>(shared_from_this(), bytes, use);
}

Buffer::Buffer(std::shared_ptr<Context> ctx, size_t bytes, MemoryUse use) : ctx_(std::move(ctx)), size_(bytes) {
  const bool staging = use != MemoryUse::kDevice;
  Context::HostTimer timer(ctx_->host_slot(&Context::HostTimes::buffers));
  ctx_->count_buffer_created();
  static std::atomic<uint64_t> next_id{1};
  id_ = next_id.fetch_add(1);
  const size_t alloc_bytes = std::max<size_t>(16, (bytes + 15) / 16 * 16);
  if (alloc_bytes > ctx_->limits().maxStorageBufferRange)
    fail(ErrorKind::kUnsupported,
         "Vulkan device '{}': a tensor of {} bytes exceeds maxStorageBufferRange ({} bytes); splitting large tensors "
         "is not implemented yet",
         ctx_->info().name, bytes, ctx_->limits().maxStorageBufferRange);
  VkDevice dev = ctx_->device();
  VkBufferCreateInfo bci{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  bci.size = alloc_bytes;
  bci.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  bci.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  check(vkCreateBuffer(dev, &bci, nullptr, &buffer_), "vkCreateBuffer");
  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(dev, buffer_, &req);
  bool host_visible = false;
  VkMemoryAllocateInfo mai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  mai.allocationSize = req.size;
  try {
    mai.memoryTypeIndex = ctx_->memory_type(req.memoryTypeBits, use, &host_visible);
    host_cached_ = (ctx_->memory_flags(mai.memoryTypeIndex) & VK_MEMORY_PROPERTY_HOST_CACHED_BIT) != 0;
    const VkResult r = vkAllocateMemory(dev, &mai, nullptr, &memory_);
    if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY)
      fail(ErrorKind::kOutOfMemory, "Vulkan device '{}': out of memory allocating {} bytes", ctx_->info().name,
           alloc_bytes);
    check(r, "vkAllocateMemory");
    check(vkBindBufferMemory(dev, buffer_, memory_, 0), "vkBindBufferMemory");
    if (host_visible && (staging || !ctx_->discrete_like()))
      check(vkMapMemory(dev, memory_, 0, VK_WHOLE_SIZE, 0, &mapped_), "vkMapMemory");
  } catch (...) {
    if (memory_) vkFreeMemory(dev, memory_, nullptr);
    vkDestroyBuffer(dev, buffer_, nullptr);
    throw;
  }
}

Buffer::~Buffer() { ctx_->retire(buffer_, memory_); }

void Context::retire(VkBuffer buffer, VkDeviceMemory memory) {
  if (recording_ || !inflight_.empty()) {
    retired_.emplace_back(buffer, memory);
    return;
  }
  vkDestroyBuffer(device_, buffer, nullptr);
  vkFreeMemory(device_, memory, nullptr);
}

namespace {

// FNV-1a over the shader's name and its specialization constants.
uint64_t pipeline_hash(std::string_view shader, std::span<const uint32_t> spec) {
  uint64_t h = 0xcbf29ce484222325ull;
  auto mix = [&h](uint8_t b) { h = (h ^ b) * 0x100000001b3ull; };
  for (char c : shader) mix(static_cast<uint8_t>(c));
  mix(0xff);  // ends the name
  for (uint32_t v : spec)
    for (int i = 0; i < 4; ++i) mix(static_cast<uint8_t>(v >> (8 * i)));
  return h;
}

}  // namespace

const Pipeline* Context::find_pipeline(std::string_view shader, std::span<const uint32_t> spec) {
  HostTimer timer(host_slot(&HostTimes::pipeline));
  auto it = pipelines_.find(pipeline_hash(shader, spec));
  if (it == pipelines_.end()) return nullptr;
  for (const auto& p : it->second)
    if (p->shader == shader && std::equal(p->spec.begin(), p->spec.end(), spec.begin(), spec.end())) return p.get();
  return nullptr;
}

const Pipeline& Context::pipeline(std::string_view name, std::string_view shader, std::span<const uint32_t> spec,
                                  uint32_t bindings, uint32_t push_bytes, uint32_t writes) {
  if (const Pipeline* found = find_pipeline(shader, spec)) {
    TRELLIS_CHECK(found->bindings == bindings && found->push_bytes == push_bytes && found->writes == writes);
    return *found;
  }
  TRELLIS_CHECK(bindings <= kMaxBindings && push_bytes <= 128);
  auto p = std::make_unique<Pipeline>();
  p->name = name;
  p->shader = shader;
  p->spec.assign(spec.begin(), spec.end());
  p->bindings = bindings;
  p->writes = writes;
  p->push_bytes = push_bytes;
  std::vector<VkDescriptorSetLayoutBinding> b(bindings);
  for (uint32_t i = 0; i < bindings; ++i) b[i] = {i, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT, nullptr};
  VkDescriptorSetLayoutCreateInfo dl{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
  dl.bindingCount = bindings;
  dl.pBindings = b.data();
  check(vkCreateDescriptorSetLayout(device_, &dl, nullptr, &p->set_layout), "vkCreateDescriptorSetLayout");
  VkPushConstantRange range{VK_SHADER_STAGE_COMPUTE_BIT, 0, push_bytes};
  VkPipelineLayoutCreateInfo pl{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
  pl.setLayoutCount = 1;
  pl.pSetLayouts = &p->set_layout;
  pl.pushConstantRangeCount = push_bytes ? 1 : 0;
  pl.pPushConstantRanges = &range;
  check(vkCreatePipelineLayout(device_, &pl, nullptr, &p->layout), "vkCreatePipelineLayout");

  // "<shader>+khr": the NV cooperative-matrix module rewritten to SPV_KHR_cooperative_matrix.
  std::vector<uint32_t> rewritten;
  std::span<const uint32_t> code;
  if (shader.size() > 4 && shader.substr(shader.size() - 4) == "+khr") {
    rewritten = coop_nv_to_khr(shader_spirv(std::string(shader.substr(0, shader.size() - 4))), coop_shader_use);
    code = rewritten;
  } else {
    code = shader_spirv(shader);
  }
  VkShaderModuleCreateInfo smi{VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
  smi.codeSize = code.size() * 4;
  smi.pCode = code.data();
  VkShaderModule module = VK_NULL_HANDLE;
  check(vkCreateShaderModule(device_, &smi, nullptr, &module), "vkCreateShaderModule");
  std::vector<VkSpecializationMapEntry> entries(spec.size());
  for (uint32_t i = 0; i < spec.size(); ++i) entries[i] = {i, 4 * i, 4};
  VkSpecializationInfo si{static_cast<uint32_t>(spec.size()), entries.data(), spec.size() * 4, spec.data()};
  VkComputePipelineCreateInfo cpi{VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
  cpi.stage = {VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO};
  cpi.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
  cpi.stage.module = module;
  cpi.stage.pName = "main";
  cpi.stage.pSpecializationInfo = spec.empty() ? nullptr : &si;
  cpi.layout = p->layout;
  if (pipeline_stats_) cpi.flags |= VK_PIPELINE_CREATE_CAPTURE_STATISTICS_BIT_KHR;
  if (pipeline_ir_) cpi.flags |= VK_PIPELINE_CREATE_CAPTURE_INTERNAL_REPRESENTATIONS_BIT_KHR;
  const VkResult r = vkCreateComputePipelines(device_, pipeline_cache_, 1, &cpi, nullptr, &p->pipeline);
  vkDestroyShaderModule(device_, module, nullptr);
  check(r, "vkCreateComputePipelines");
  if (pipeline_stats_) print_pipeline_stats(p->name, p->pipeline);
  std::string spec_text;
  for (uint32_t v : spec) spec_text += fmt::format(":{}", v);
  log_debug("Vulkan: built pipeline {} ({}{})", name, shader, spec_text);
  auto& bucket = pipelines_[pipeline_hash(shader, spec)];
  bucket.push_back(std::move(p));
  return *bucket.back();
}

void Context::print_pipeline_stats(const std::string& name, VkPipeline pipeline) const {
  auto props = reinterpret_cast<PFN_vkGetPipelineExecutablePropertiesKHR>(
      vkGetDeviceProcAddr(device_, "vkGetPipelineExecutablePropertiesKHR"));
  auto stats = reinterpret_cast<PFN_vkGetPipelineExecutableStatisticsKHR>(
      vkGetDeviceProcAddr(device_, "vkGetPipelineExecutableStatisticsKHR"));
  if (!props || !stats) return;
  VkPipelineInfoKHR pi{VK_STRUCTURE_TYPE_PIPELINE_INFO_KHR};
  pi.pipeline = pipeline;
  uint32_t n = 0;
  if (props(device_, &pi, &n, nullptr) != VK_SUCCESS) return;
  std::vector<VkPipelineExecutablePropertiesKHR> ex(n, {VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_PROPERTIES_KHR});
  if (props(device_, &pi, &n, ex.data()) != VK_SUCCESS) return;
  for (uint32_t e = 0; e < n; ++e) {
    VkPipelineExecutableInfoKHR ei{VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_INFO_KHR};
    ei.pipeline = pipeline;
    ei.executableIndex = e;
    uint32_t ns = 0;
    if (stats(device_, &ei, &ns, nullptr) != VK_SUCCESS) continue;
    std::vector<VkPipelineExecutableStatisticKHR> st(ns, {VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_STATISTIC_KHR});
    if (stats(device_, &ei, &ns, st.data()) != VK_SUCCESS) continue;
    std::string line = fmt::format("vulkan pipeline stats: {} [{}]", name, ex[e].name);
    for (const auto& s : st) {
      switch (s.format) {
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_BOOL32_KHR:
          line += fmt::format("; {}={}", s.name, s.value.b32 != 0);
          break;
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_INT64_KHR:
          line += fmt::format("; {}={}", s.name, s.value.i64);
          break;
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_UINT64_KHR:
          line += fmt::format("; {}={}", s.name, s.value.u64);
          break;
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_FLOAT64_KHR:
          line += fmt::format("; {}={}", s.name, s.value.f64);
          break;
        default:
          break;
      }
    }
    fmt::print(stderr, "{}\n", line);
    if (!pipeline_ir_) continue;
    auto irs = reinterpret_cast<PFN_vkGetPipelineExecutableInternalRepresentationsKHR>(
        vkGetDeviceProcAddr(device_, "vkGetPipelineExecutableInternalRepresentationsKHR"));
    uint32_t ni = 0;
    if (!irs || irs(device_, &ei, &ni, nullptr) != VK_SUCCESS) continue;
    std::vector<VkPipelineExecutableInternalRepresentationKHR> ir(
        ni, {VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_INTERNAL_REPRESENTATION_KHR});
    if (irs(device_, &ei, &ni, ir.data()) != VK_SUCCESS) continue;
    std::vector<std::vector<char>> data(ni);
    for (uint32_t k = 0; k < ni; ++k) {
      data[k].resize(ir[k].dataSize + 1, 0);
      ir[k].pData = data[k].data();
    }
    if (irs(device_, &ei, &ni, ir.data()) != VK_SUCCESS) continue;
    for (uint32_t k = 0; k < ni; ++k) {
      fmt::print(stderr, "vulkan pipeline ir: {} [{}] {} ({} bytes{})\n", name, ex[e].name, ir[k].name,
                 ir[k].dataSize, ir[k].isText ? "" : ", binary, not shown");
      if (ir[k].isText) fmt::print(stderr, "{}\n", data[k].data());
    }
  }
}

void Context::append(const Command& c, std::span<const uint64_t> key_words) {
  commands_.push_back(c);
  commands_.back().serial = next_serial_++;
  commands_.back().key_at = key_.size();
  key_.insert(key_.end(), key_words.begin(), key_words.end());
  recording_ = true;
}

void Context::dispatch(const Pipeline& p, std::span<const Buffer* const> buffers, const void* push, uint32_t gx,
                       uint32_t gy, uint32_t gz) {
  TRELLIS_CHECK(buffers.size() == p.bindings && p.bindings <= kMaxBindings);
  if (gx == 0 || gy == 0 || gz == 0) return;
  HostTimer timer(host_slot(&HostTimes::dispatch));
  // Profiling: the dispatch runs alone in its own segment, between two timestamps where the
  // queue has them (GPU time), else timed on the host (submission included).
  const bool gpu_timed = profile_ && has_timestamps();
  if (profile_) {
    flush();
    if (gpu_timed) timestamp(kQueries - 2);
  }
  Command c;
  c.kind = Command::Kind::kDispatch;
  c.pipeline = &p;
  c.nbuf = p.bindings;
  uint64_t key[4 + kMaxBindings + 32];
  size_t nk = 0;
  key[nk++] = static_cast<uint64_t>(Command::Kind::kDispatch);
  key[nk++] = reinterpret_cast<uintptr_t>(&p);
  for (uint32_t i = 0; i < p.bindings; ++i) {
    c.handles[i] = buffers[i]->handle();
    c.ids[i] = buffers[i]->id();
    key[nk++] = c.ids[i];
  }
  c.groups[0] = gx;
  c.groups[1] = gy;
  c.groups[2] = gz;
  key[nk++] = (static_cast<uint64_t>(gx) << 32) | gy;
  key[nk++] = gz;
  if (p.push_bytes) std::memcpy(c.push, push, p.push_bytes);
  for (uint32_t w = 0; w < (p.push_bytes + 7) / 8; ++w) {
    uint64_t v = 0;
    std::memcpy(&v, c.push + 8 * w, 8);  // c.push is zero past push_bytes
    key[nk++] = v;
  }
  append(c, std::span<const uint64_t>(key, nk));
  ++stats_.dispatches;
  if (profile_stream_) {
    // A timestamp after the dispatch, sharing its serial (so fusion still sees the dispatch as
    // the last command); slot 0 is the segment's start (record()).
    stream_names_.push_back(&p);
    Command t;
    t.kind = Command::Kind::kTimestamp;
    t.src_offset = stream_names_.size();
    t.dst_offset = 1;  // the stream pool
    t.serial = commands_.back().serial;
    t.key_at = key_.size();
    commands_.push_back(t);
    key_.push_back(static_cast<uint64_t>(Command::Kind::kTimestamp));
    key_.push_back(t.src_offset | (1ull << 32));
    if (stream_names_.size() + 1 >= kStreamQueries) flush();
  }
  if (profile_) {
    if (gpu_timed) timestamp(kQueries - 1);
    const auto t0 = std::chrono::steady_clock::now();
    flush();
    // TRELLIS_VULKAN_PROFILE=2: one row per pipeline and grid (tells a GEMM's shapes apart).
    auto& [seconds, count] = profile_totals_[profile_grids_ ? fmt::format("{}@{}x{}x{}", p.name, gx, gy, gz) : p.name];
    seconds += gpu_timed ? elapsed_seconds(kQueries - 2, kQueries - 1)
                         : std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++count;
  }
}

uint64_t Context::serial_back(size_t i) const {
  // Stream-profile timestamps (TRELLIS_VULKAN_PROFILE=3) do not count as commands here.
  for (size_t j = commands_.size(); j-- > 0;) {
    const Command& c = commands_[j];
    if (c.kind == Command::Kind::kTimestamp && c.dst_offset == 1) continue;
    if (i-- == 0) return c.serial;
  }
  return 0;
}

bool Context::pop_last(const Pipeline& p, uint64_t serial) {
  const bool stamped = !commands_.empty() && commands_.back().kind == Command::Kind::kTimestamp &&
                       commands_.back().dst_offset == 1;
  if (commands_.size() < (stamped ? 2u : 1u)) return false;
  const Command& c = commands_[commands_.size() - (stamped ? 2 : 1)];
  if (c.kind != Command::Kind::kDispatch || c.pipeline != &p || c.serial != serial) return false;
  key_.resize(c.key_at);
  if (stamped) {
    commands_.pop_back();
    stream_names_.pop_back();
  }
  commands_.pop_back();
  --stats_.dispatches;
  recording_ = !commands_.empty();
  return true;
}

void Context::report() const {
  if (profile_totals_.empty()) return;
  std::vector<std::pair<std::string, std::pair<double, uint64_t>>> rows(profile_totals_.begin(), profile_totals_.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.first > b.second.first; });
  double total = 0;
  uint64_t dispatches = 0;
  for (const auto& [name, t] : rows) {
    log_message(LogLevel::kInfo,  // asked for explicitly, so shown at any log level
                fmt::format("Vulkan profile: {:<28} {:10.3f} ms {:8} dispatches", name, 1e3 * t.first, t.second));
    total += t.first;
    dispatches += t.second;
  }
  log_message(LogLevel::kInfo, fmt::format("Vulkan profile: {:<28} {:10.3f} ms {:8} dispatches", "(total)", 1e3 * total, dispatches));
}

void Context::dispatch_flat(const Pipeline& p, std::span<const Buffer* const> buffers, const void* push,
                            uint64_t groups) {
  if (groups == 0) return;
  const uint64_t gx = std::min<uint64_t>(groups, 65535);
  const uint64_t gy = (groups + gx - 1) / gx;
  if (gy > limits_.maxComputeWorkGroupCount[1])
    fail(ErrorKind::kUnsupported, "Vulkan: {} workgroups of {} exceed the device's grid", groups, p.name);
  dispatch(p, buffers, push, static_cast<uint32_t>(gx), static_cast<uint32_t>(gy));
}

void Context::copy(const Buffer& src, size_t src_offset, const Buffer& dst, size_t dst_offset, size_t bytes) {
  if (bytes == 0) return;
  Command c;
  c.kind = Command::Kind::kCopy;
  c.nbuf = 2;
  c.handles[0] = src.handle();
  c.ids[0] = src.id();
  c.handles[1] = dst.handle();
  c.ids[1] = dst.id();
  c.src_offset = src_offset;
  c.dst_offset = dst_offset;
  c.bytes = bytes;
  const uint64_t key[] = {static_cast<uint64_t>(Command::Kind::kCopy), src.id(), dst.id(), src_offset, dst_offset, bytes};
  append(c, key);
}

void Context::fill_zero(const Buffer& dst) {
  Command c;
  c.kind = Command::Kind::kFill;
  c.nbuf = 1;
  c.handles[0] = dst.handle();
  c.ids[0] = dst.id();
  const uint64_t key[] = {static_cast<uint64_t>(Command::Kind::kFill), dst.id()};
  append(c, key);
}

void Context::timestamp(uint32_t query) {
  if (!has_timestamps()) fail(ErrorKind::kUnsupported, "Vulkan device '{}': no timestamp queries", info_.name);
  TRELLIS_CHECK(query < kQueries);
  Command c;
  c.kind = Command::Kind::kTimestamp;
  c.src_offset = query;
  const uint64_t key[] = {static_cast<uint64_t>(Command::Kind::kTimestamp), query};
  append(c, key);
}

double Context::elapsed_seconds(uint32_t a, uint32_t b) {
  TRELLIS_CHECK(has_timestamps() && a < kQueries && b < kQueries);
  uint64_t ta = 0, tb = 0;
  const VkQueryResultFlags flags = VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT;
  check(vkGetQueryPoolResults(device_, queries_, a, 1, 8, &ta, 8, flags), "vkGetQueryPoolResults");
  check(vkGetQueryPoolResults(device_, queries_, b, 1, 8, &tb, 8, flags), "vkGetQueryPoolResults");
  return static_cast<double>((tb - ta) & timestamp_mask_) * timestamp_period_ns_ * 1e-9;
}

Staged Context::stage(const void* data, size_t bytes) {
  const size_t need = (bytes + 15) / 16 * 16;
  // Commands appended before this call may read the arena, so it is recycled only by a flush.
  if (arena_used_ + need > arena_->size()) {
    flush();
    if (need > arena_->size()) {
      arena_ = create_buffer(std::max(need, 2 * arena_->size()), MemoryUse::kStaging);
      ++arena_epoch_;  // flush() counted the recycling; this counts the replacement
    }
  }
  Staged s{arena_.get(), arena_used_};
  std::memcpy(arena_->mapped() + arena_used_, data, bytes);
  arena_used_ += need;
  return s;
}

VkDescriptorSet Context::descriptor_set(const Command& c) {
  std::vector<uint64_t> key(1 + c.nbuf);
  key[0] = reinterpret_cast<uintptr_t>(c.pipeline);
  std::copy(c.ids, c.ids + c.nbuf, key.begin() + 1);
  auto it = sets_.find(key);
  if (it != sets_.end()) return it->second;
  if (sets_in_pool_ == kSetsPerPool) {
    descriptor_pools_.push_back(create_descriptor_pool(device_));
    sets_in_pool_ = 0;
  }
  VkDescriptorSetAllocateInfo ai{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
  ai.descriptorPool = descriptor_pools_.back();
  ai.descriptorSetCount = 1;
  ai.pSetLayouts = &c.pipeline->set_layout;
  VkDescriptorSet set = VK_NULL_HANDLE;
  check(vkAllocateDescriptorSets(device_, &ai, &set), "vkAllocateDescriptorSets");
  ++sets_in_pool_;
  VkDescriptorBufferInfo infos[kMaxBindings];
  VkWriteDescriptorSet writes[kMaxBindings];
  for (uint32_t i = 0; i < c.nbuf; ++i) {
    infos[i] = {c.handles[i], 0, VK_WHOLE_SIZE};
    writes[i] = {VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET};
    writes[i].dstSet = set;
    writes[i].dstBinding = i;
    writes[i].descriptorCount = 1;
    writes[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    writes[i].pBufferInfo = &infos[i];
  }
  vkUpdateDescriptorSets(device_, c.nbuf, writes, 0, nullptr);
  sets_.emplace(std::move(key), set);
  return set;
}

namespace {

constexpr VkPipelineStageFlags kDeviceStages = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
constexpr VkAccessFlags kDeviceWrites = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
constexpr VkAccessFlags kDeviceAccess =
    VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;

void barrier(VkCommandBuffer cmd) {
  VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  mb.srcAccessMask = kDeviceWrites;
  mb.dstAccessMask = kDeviceAccess;
  vkCmdPipelineBarrier(cmd, kDeviceStages, kDeviceStages, 0, 1, &mb, 0, nullptr, 0, nullptr);
}

bool contains(const std::vector<uint64_t>& v, uint64_t id) { return std::find(v.begin(), v.end(), id) != v.end(); }

}  // namespace

void Context::record(VkCommandBuffer cmd, bool lead_barrier) {
  if (lead_barrier) {  // after a segment still in flight: wait for all of it
    barrier(cmd);
    ++stats_.barriers;
  }
  bool timestamps = false;
  for (const Command& c : commands_) timestamps |= c.kind == Command::Kind::kTimestamp && c.dst_offset == 0;
  if (timestamps) vkCmdResetQueryPool(cmd, queries_, 0, kQueries);
  if (!stream_names_.empty()) {
    vkCmdResetQueryPool(cmd, stream_queries_, 0, static_cast<uint32_t>(stream_names_.size() + 1));
    vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, stream_queries_, 0);
  }
  // Hazard tracker: buffers read / written since the last barrier.
  std::vector<uint64_t> reads, writes;
  const Pipeline* bound = nullptr;
  for (const Command& c : commands_) {
    uint64_t r[kMaxBindings], w[kMaxBindings];
    uint32_t nr = 0, nw = 0;
    switch (c.kind) {
      case Command::Kind::kDispatch:
        for (uint32_t i = 0; i < c.nbuf; ++i) {
          if (c.pipeline->writes & (1u << i))
            w[nw++] = c.ids[i];
          else
            r[nr++] = c.ids[i];
        }
        break;
      case Command::Kind::kCopy: r[nr++] = c.ids[0]; w[nw++] = c.ids[1]; break;
      case Command::Kind::kFill: w[nw++] = c.ids[0]; break;
      case Command::Kind::kTimestamp: break;
    }
    bool hazard = false;
    for (uint32_t i = 0; i < nr && !hazard; ++i) hazard = contains(writes, r[i]);
    for (uint32_t i = 0; i < nw && !hazard; ++i) hazard = contains(writes, w[i]) || contains(reads, w[i]);
    if (hazard) {
      barrier(cmd);
      ++stats_.barriers;
      reads.clear();
      writes.clear();
    }
    reads.insert(reads.end(), r, r + nr);
    writes.insert(writes.end(), w, w + nw);
    switch (c.kind) {
      case Command::Kind::kDispatch: {
        const VkDescriptorSet set = descriptor_set(c);
        if (bound != c.pipeline) vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, c.pipeline->pipeline);
        bound = c.pipeline;
        vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, c.pipeline->layout, 0, 1, &set, 0, nullptr);
        if (c.pipeline->push_bytes)
          vkCmdPushConstants(cmd, c.pipeline->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, c.pipeline->push_bytes, c.push);
        vkCmdDispatch(cmd, c.groups[0], c.groups[1], c.groups[2]);
        break;
      }
      case Command::Kind::kCopy: {
        const VkBufferCopy region{c.src_offset, c.dst_offset, c.bytes};
        vkCmdCopyBuffer(cmd, c.handles[0], c.handles[1], 1, &region);
        break;
      }
      case Command::Kind::kFill: vkCmdFillBuffer(cmd, c.handles[0], 0, VK_WHOLE_SIZE, 0); break;
      case Command::Kind::kTimestamp:
        vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, c.dst_offset ? stream_queries_ : queries_,
                            static_cast<uint32_t>(c.src_offset));
        break;
    }
  }
  // Device writes become visible to host reads of mapped memory after the fence, and to the
  // next segment's commands (later in submission order on this queue).
  VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  mb.srcAccessMask = kDeviceWrites;
  mb.dstAccessMask = kDeviceAccess | VK_ACCESS_HOST_READ_BIT;
  vkCmdPipelineBarrier(cmd, kDeviceStages, kDeviceStages | VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, nullptr, 0,
                       nullptr);
}

void Context::reset_caches() {
  for (Segment& s : segments_) vkFreeCommandBuffers(device_, command_pool_, 1, &s.cmd);
  segments_.clear();
  for (VkDescriptorPool pool : descriptor_pools_) check(vkResetDescriptorPool(device_, pool, 0), "vkResetDescriptorPool");
  sets_.clear();
  sets_in_pool_ = 0;
  // Keep one pool; the others were grown for sets that are gone now.
  for (size_t i = 1; i < descriptor_pools_.size(); ++i) vkDestroyDescriptorPool(device_, descriptor_pools_[i], nullptr);
  descriptor_pools_.resize(1);
}

VkCommandBuffer Context::prepare_segment() {
  HostTimer timer(host_slot(&HostTimes::prepare));
  const bool follows = !inflight_.empty();
  if (follows) key_.push_back(0x5e9f011090000001ull);  // segments after one in flight are cached apart
  const bool cacheable = replay_ && commands_.size() >= kMinReplayCommands;
  VkCommandBuffer cmd = VK_NULL_HANDLE;
  if (cacheable) {
    for (Segment& s : segments_)
      if (s.key == key_) {
        cmd = s.cmd;
        s.last_used = ++segment_clock_;
        ++stats_.replayed;
        break;
      }
  }
  auto pending = [&](VkCommandBuffer c) { return std::find(inflight_.begin(), inflight_.end(), c) != inflight_.end(); };
  if (cmd && pending(cmd)) wait_inflight();  // a command buffer is not resubmitted while pending
  if (!cmd) {
    ++stats_.recorded;
    VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    if (cacheable) {
      if (segments_.size() >= kMaxSegments) {
        auto lru = std::min_element(segments_.begin(), segments_.end(),
                                    [](const Segment& a, const Segment& b) { return a.last_used < b.last_used; });
        if (pending(lru->cmd)) wait_inflight();
        vkFreeCommandBuffers(device_, command_pool_, 1, &lru->cmd);
        segments_.erase(lru);
      }
      VkCommandBufferAllocateInfo cai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
      cai.commandPool = command_pool_;
      cai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
      cai.commandBufferCount = 1;
      check(vkAllocateCommandBuffers(device_, &cai, &cmd), "vkAllocateCommandBuffers");
      segments_.push_back({key_, cmd, ++segment_clock_});
    } else {
      if (pending(cmd_)) wait_inflight();
      cmd = cmd_;
      check(vkResetCommandBuffer(cmd_, 0), "vkResetCommandBuffer");
      bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
    }
    check(vkBeginCommandBuffer(cmd, &bi), "vkBeginCommandBuffer");
    record(cmd, follows);
    check(vkEndCommandBuffer(cmd), "vkEndCommandBuffer");
  }
  commands_.clear();
  key_.clear();
  return cmd;
}

void Context::wait_inflight() {
  if (inflight_.empty()) return;
  const auto t0 = std::chrono::steady_clock::now();
  check(vkQueueWaitIdle(queue_), "vkQueueWaitIdle");
  wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  inflight_.clear();
}

VkCommandBuffer Context::submit_segment(VkFence fence) {
  ++stats_.segments;
  if (sets_.size() > kMaxCachedSets) {  // the cached sets and command buffers go: none may be in flight
    wait_inflight();
    reset_caches();
  }
  VkCommandBuffer cmd = prepare_segment();
  VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  si.commandBufferCount = 1;
  si.pCommandBuffers = &cmd;
  {
    HostTimer timer(host_slot(&HostTimes::queue_submit));
    check(vkQueueSubmit(queue_, 1, &si, fence), "vkQueueSubmit");
  }
  return cmd;
}

void Context::submit() {
  if (commands_.empty() || profile_ || !stream_names_.empty() || !replay_ || commands_.size() < kMinReplayCommands)
    return;
  inflight_.push_back(submit_segment(VK_NULL_HANDLE));
  recording_ = false;  // retire() still defers while inflight_ is not empty
}

void Context::flush() {
  if (!commands_.empty()) {
    submit_segment(fence_);
    const auto t0 = std::chrono::steady_clock::now();
    check(vkWaitForFences(device_, 1, &fence_, VK_TRUE, UINT64_MAX), "vkWaitForFences");
    wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    check(vkResetFences(device_, 1, &fence_), "vkResetFences");
    // The segment began with a barrier on everything submitted before it, so its fence covers
    // the submissions that were in flight.
    inflight_.clear();
    if (!stream_names_.empty()) {  // TRELLIS_VULKAN_PROFILE=3: time since the previous stamp
      std::vector<uint64_t> t(stream_names_.size() + 1);
      check(vkGetQueryPoolResults(device_, stream_queries_, 0, static_cast<uint32_t>(t.size()), t.size() * 8, t.data(),
                                  8, VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT),
            "vkGetQueryPoolResults");
      for (size_t i = 0; i < stream_names_.size(); ++i) {
        auto& [seconds, count] = profile_totals_[stream_names_[i]->name];
        seconds += static_cast<double>((t[i + 1] - t[i]) & timestamp_mask_) * timestamp_period_ns_ * 1e-9;
        ++count;
      }
      stream_names_.clear();
    }
    recording_ = false;
  }
  wait_inflight();
  for (auto& [buffer, memory] : retired_) {
    vkDestroyBuffer(device_, buffer, nullptr);
    vkFreeMemory(device_, memory, nullptr);
  }
  retired_.clear();
  keep_alive_.clear();
  arena_used_ = 0;
  ++arena_epoch_;
}

bool env_flag(const char* name, bool fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  return std::strcmp(v, "0") != 0;
}

}  // namespace trellis::vk
