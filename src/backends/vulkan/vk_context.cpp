// backends/vulkan/vk_context.cpp: see vk_context.h.
#include "backends/vulkan/vk_context.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "backends/vulkan/vk_shaders.h"
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

constexpr uint32_t kMaxSets = 2048;
constexpr uint32_t kMaxBindings = 8;
constexpr uint32_t kSetsPerOp = 8;
constexpr size_t kArenaBytes = 1 << 20;

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

bool has_extension(VkPhysicalDevice d, const char* name) {
  uint32_t n = 0;
  vkEnumerateDeviceExtensionProperties(d, nullptr, &n, nullptr);
  std::vector<VkExtensionProperties> ext(n);
  vkEnumerateDeviceExtensionProperties(d, nullptr, &n, ext.data());
  for (const auto& e : ext)
    if (std::strcmp(e.extensionName, name) == 0) return true;
  return false;
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
  if (has_extension(d, "VK_KHR_cooperative_matrix")) info.features.push_back("cooperative_matrix");
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
  check(vkCreateDevice(ctx->physical_, &dci, nullptr, &ctx->device_), "vkCreateDevice");
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

  VkDescriptorPoolSize size{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, kMaxSets * kMaxBindings};
  VkDescriptorPoolCreateInfo dpi{VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
  dpi.maxSets = kMaxSets;
  dpi.poolSizeCount = 1;
  dpi.pPoolSizes = &size;
  check(vkCreateDescriptorPool(ctx->device_, &dpi, nullptr, &ctx->descriptor_pool_), "vkCreateDescriptorPool");
  VkPipelineCacheCreateInfo pcci{VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO};
  check(vkCreatePipelineCache(ctx->device_, &pcci, nullptr, &ctx->pipeline_cache_), "vkCreatePipelineCache");
  ctx->arena_ = ctx->create_buffer(kArenaBytes, /*staging=*/true);
  const char* profile = std::getenv("TRELLIS_VULKAN_PROFILE");
  ctx->profile_ = profile && *profile && std::strcmp(profile, "0") != 0;
  return ctx;
}

Context::~Context() {
  if (device_) {
    vkDeviceWaitIdle(device_);
    for (auto& [buffer, memory] : retired_) {
      vkDestroyBuffer(device_, buffer, nullptr);
      vkFreeMemory(device_, memory, nullptr);
    }
    for (auto& [key, p] : pipelines_) {
      vkDestroyPipeline(device_, p->pipeline, nullptr);
      vkDestroyPipelineLayout(device_, p->layout, nullptr);
      vkDestroyDescriptorSetLayout(device_, p->set_layout, nullptr);
    }
    vkDestroyPipelineCache(device_, pipeline_cache_, nullptr);
    vkDestroyDescriptorPool(device_, descriptor_pool_, nullptr);
    vkDestroyFence(device_, fence_, nullptr);
    vkDestroyCommandPool(device_, command_pool_, nullptr);
    vkDestroyDevice(device_, nullptr);
  }
  if (instance_) vkDestroyInstance(instance_, nullptr);
}

void Context::shutdown() {
  flush();
  keep_alive_.clear();
  arena_.reset();
}

uint32_t Context::memory_type(uint32_t type_bits, bool staging, bool* host_visible) const {
  const VkMemoryPropertyFlags host = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  // Preference lists, best first.
  std::vector<VkMemoryPropertyFlags> wanted;
  if (staging) {
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

std::shared_ptr<Buffer> Context::create_buffer(size_t bytes, bool staging) {
  return std::make_shared<Buffer>(shared_from_this(), bytes, staging);
}

Buffer::Buffer(std::shared_ptr<Context> ctx, size_t bytes, bool staging) : ctx_(std::move(ctx)), size_(bytes) {
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
    mai.memoryTypeIndex = ctx_->memory_type(req.memoryTypeBits, staging, &host_visible);
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
  if (recording_) {
    retired_.emplace_back(buffer, memory);
    return;
  }
  vkDestroyBuffer(device_, buffer, nullptr);
  vkFreeMemory(device_, memory, nullptr);
}

const Pipeline& Context::pipeline(const std::string& name, const std::string& shader,
                                  const std::vector<uint32_t>& spec, uint32_t bindings, uint32_t push_bytes) {
  std::string key = shader;
  for (uint32_t v : spec) key += fmt::format(":{}", v);
  auto it = pipelines_.find(key);
  if (it != pipelines_.end()) return *it->second;
  TRELLIS_CHECK(bindings <= kMaxBindings && push_bytes <= 128);
  auto p = std::make_unique<Pipeline>();
  p->name = name;
  p->bindings = bindings;
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

  const std::span<const uint32_t> code = shader_spirv(shader);
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
  const VkResult r = vkCreateComputePipelines(device_, pipeline_cache_, 1, &cpi, nullptr, &p->pipeline);
  vkDestroyShaderModule(device_, module, nullptr);
  check(r, "vkCreateComputePipelines");
  log_debug("Vulkan: built pipeline {} ({})", name, key);
  return *pipelines_.emplace(key, std::move(p)).first->second;
}

void Context::begin_if_needed() {
  if (recording_) return;
  VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  check(vkBeginCommandBuffer(cmd_, &bi), "vkBeginCommandBuffer");
  recording_ = true;
}

namespace {

void barrier(VkCommandBuffer cmd) {
  VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
  mb.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT |
                     VK_ACCESS_TRANSFER_WRITE_BIT;
  const VkPipelineStageFlags stages = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
  vkCmdPipelineBarrier(cmd, stages, stages, 0, 1, &mb, 0, nullptr, 0, nullptr);
}

}  // namespace

VkDescriptorSet Context::allocate_set(const Pipeline& p) {
  VkDescriptorSetAllocateInfo ai{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
  ai.descriptorPool = descriptor_pool_;
  ai.descriptorSetCount = 1;
  ai.pSetLayouts = &p.set_layout;
  // The pool is recycled per submission; when it runs out, run what is recorded first. stage()
  // flushes early enough that this never strands staged data (see there).
  if (sets_used_ >= kMaxSets) {
    flush();
    begin_if_needed();
  }
  VkDescriptorSet set = VK_NULL_HANDLE;
  const VkResult r = vkAllocateDescriptorSets(device_, &ai, &set);
  ++sets_used_;
  check(r, "vkAllocateDescriptorSets");
  return set;
}

void Context::dispatch(const Pipeline& p, const std::vector<const Buffer*>& buffers, const void* push, uint32_t gx,
                       uint32_t gy, uint32_t gz) {
  TRELLIS_CHECK(buffers.size() == p.bindings);
  if (gx == 0 || gy == 0 || gz == 0) return;
  begin_if_needed();
  VkDescriptorSet set = allocate_set(p);
  std::vector<VkDescriptorBufferInfo> infos(buffers.size());
  std::vector<VkWriteDescriptorSet> writes(buffers.size());
  for (size_t i = 0; i < buffers.size(); ++i) {
    infos[i] = {buffers[i]->handle(), 0, VK_WHOLE_SIZE};
    writes[i] = {VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET};
    writes[i].dstSet = set;
    writes[i].dstBinding = static_cast<uint32_t>(i);
    writes[i].descriptorCount = 1;
    writes[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    writes[i].pBufferInfo = &infos[i];
  }
  vkUpdateDescriptorSets(device_, static_cast<uint32_t>(writes.size()), writes.data(), 0, nullptr);
  vkCmdBindPipeline(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, p.pipeline);
  vkCmdBindDescriptorSets(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, p.layout, 0, 1, &set, 0, nullptr);
  if (p.push_bytes) vkCmdPushConstants(cmd_, p.layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, p.push_bytes, push);
  vkCmdDispatch(cmd_, gx, gy, gz);
  barrier(cmd_);
  if (profile_) {
    const auto t0 = std::chrono::steady_clock::now();
    flush();
    auto& [seconds, count] = profile_totals_[p.name];
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++count;
  }
}

void Context::report() const {
  if (profile_totals_.empty()) return;
  std::vector<std::pair<std::string, std::pair<double, uint64_t>>> rows(profile_totals_.begin(), profile_totals_.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.first > b.second.first; });
  for (const auto& [name, t] : rows)
    log_message(LogLevel::kInfo,  // asked for explicitly, so shown at any log level
                fmt::format("Vulkan profile: {:<28} {:10.3f} ms {:8} dispatches", name, 1e3 * t.first, t.second));
}

void Context::dispatch_flat(const Pipeline& p, const std::vector<const Buffer*>& buffers, const void* push,
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
  begin_if_needed();
  VkBufferCopy region{src_offset, dst_offset, bytes};
  vkCmdCopyBuffer(cmd_, src.handle(), dst.handle(), 1, &region);
  barrier(cmd_);
}

void Context::fill_zero(const Buffer& dst) {
  begin_if_needed();
  vkCmdFillBuffer(cmd_, dst.handle(), 0, VK_WHOLE_SIZE, 0);
  barrier(cmd_);
}

Staged Context::stage(const void* data, size_t bytes) {
  const size_t need = (bytes + 15) / 16 * 16;
  // An op stages its data, then records at most kSetsPerOp dispatches reading it; a flush in
  // between would recycle the arena under a recorded command, so make room for them now.
  if (arena_used_ + need > arena_->size() || sets_used_ + kSetsPerOp > kMaxSets) {
    flush();
    if (need > arena_->size()) arena_ = create_buffer(std::max(need, 2 * arena_->size()), /*staging=*/true);
  }
  Staged s{arena_.get(), arena_used_};
  std::memcpy(arena_->mapped() + arena_used_, data, bytes);
  arena_used_ += need;
  return s;
}

void Context::flush() {
  if (recording_) {
    // Make device writes visible to host reads of mapped memory after the fence.
    VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
    mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
    mb.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
    vkCmdPipelineBarrier(cmd_, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                         VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, nullptr, 0, nullptr);
    check(vkEndCommandBuffer(cmd_), "vkEndCommandBuffer");
    recording_ = false;
    VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
    si.commandBufferCount = 1;
    si.pCommandBuffers = &cmd_;
    check(vkQueueSubmit(queue_, 1, &si, fence_), "vkQueueSubmit");
    check(vkWaitForFences(device_, 1, &fence_, VK_TRUE, UINT64_MAX), "vkWaitForFences");
    check(vkResetFences(device_, 1, &fence_), "vkResetFences");
    check(vkResetCommandBuffer(cmd_, 0), "vkResetCommandBuffer");
    check(vkResetDescriptorPool(device_, descriptor_pool_, 0), "vkResetDescriptorPool");
  }
  for (auto& [buffer, memory] : retired_) {
    vkDestroyBuffer(device_, buffer, nullptr);
    vkFreeMemory(device_, memory, nullptr);
  }
  retired_.clear();
  keep_alive_.clear();
  arena_used_ = 0;
  sets_used_ = 0;
}

}  // namespace trellis::vk
