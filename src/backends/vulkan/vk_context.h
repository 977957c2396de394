// backends/vulkan/vk_context.h: one Vulkan device as the backend uses it: instance and device
// selection, memory, buffers, pipelines per shader variant, and the single command stream.
//
// Goals: everything the ops need and nothing more; errors as trellis::Error naming the Vulkan
// call and result; no third-party code. Design:
//   * One compute queue, one command buffer being recorded; every dispatch is followed by a
//     full compute/transfer memory barrier (ops are ordered like the CPU backend's, and the
//     forward pass is a chain of dependent ops anyway). flush() submits, waits and recycles.
//   * Every storage buffer is bound whole; shaders take element offsets in push constants, so
//     DeviceTensor views at any offset need no descriptor alignment.
//   * Memory: tensors in DEVICE_LOCAL memory; where that memory is also host-visible (lavapipe,
//     integrated GPUs) it is mapped and written directly, otherwise through staging copies.
//   * Small per-op host data (token ids, positions, rotary tables) goes into a host-visible
//     arena that is recycled at every flush.
// Non-goals (first milestone): asynchronous uploads, multiple queues, sub-allocation of one
// big VkDeviceMemory (each buffer has its own allocation; fine for ~10^3 tensors).
#pragma once

#include <vulkan/vulkan.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backends/backend.h"

namespace trellis::vk {

// Throws trellis::Error (kUnsupported / kOutOfMemory / kInternal) naming `what` and the result.
void check(VkResult result, const char* what);
const char* result_name(VkResult result);

class Context;

// A VkBuffer with its own memory. Destruction is deferred to the next flush while commands
// that may use it are in flight.
class Buffer : public DeviceBuffer {
 public:
  Buffer(std::shared_ptr<Context> ctx, size_t bytes, bool staging);
  ~Buffer() override;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  size_t size() const override { return size_; }
  VkBuffer handle() const { return buffer_; }
  std::byte* mapped() const { return static_cast<std::byte*>(mapped_); }  // null unless host-visible

 private:
  std::shared_ptr<Context> ctx_;
  VkBuffer buffer_ = VK_NULL_HANDLE;
  VkDeviceMemory memory_ = VK_NULL_HANDLE;
  void* mapped_ = nullptr;
  size_t size_ = 0;
};

// A compute pipeline of one shader with fixed specialization constants.
struct Pipeline {
  std::string name;  // e.g. "exl3_gemv_k3_mcg"
  uint32_t bindings = 0;
  uint32_t push_bytes = 0;
  VkDescriptorSetLayout set_layout = VK_NULL_HANDLE;
  VkPipelineLayout layout = VK_NULL_HANDLE;
  VkPipeline pipeline = VK_NULL_HANDLE;
};

// Where a dispatch reads host data staged for it: a buffer and a byte offset into it.
struct Staged {
  Buffer* buffer = nullptr;
  size_t offset = 0;
};

class Context : public std::enable_shared_from_this<Context> {
 public:
  // Opens Vulkan physical device `index` (order of list_devices()); throws kUnsupported with a
  // clear message when there is no loader, no such device or a required limit is missing.
  // `discrete_like`: never map tensor memory, so uploads, downloads and zero-fills take the
  // staging-copy paths of a discrete GPU even where memory is host-visible (tests use it to
  // cover those paths on lavapipe).
  static std::shared_ptr<Context> create(int index, bool discrete_like = false);
  // Devices with a compute queue and Vulkan >= 1.1; empty (no throw) without a loader/driver.
  static std::vector<DeviceInfo> list_devices();
  ~Context();

  const DeviceInfo& info() const { return info_; }
  const VkPhysicalDeviceLimits& limits() const { return limits_; }
  bool is_cpu() const { return cpu_; }  // a CPU implementation (lavapipe, SwiftShader)
  bool discrete_like() const { return discrete_like_; }

  std::shared_ptr<Buffer> create_buffer(size_t bytes, bool staging = false);

  // Pipeline of shader `shader` (embedded SPIR-V) with specialization constants spec[i] at
  // constant_id i, `bindings` storage buffers at bindings 0.., `push_bytes` of push constants.
  // Created once per (name, shader, spec) and cached.
  const Pipeline& pipeline(const std::string& name, const std::string& shader, const std::vector<uint32_t>& spec,
                           uint32_t bindings, uint32_t push_bytes);

  // Records a dispatch (then a barrier). `buffers` are bound whole at bindings 0, 1, ...
  void dispatch(const Pipeline& p, const std::vector<const Buffer*>& buffers, const void* push, uint32_t gx,
                uint32_t gy = 1, uint32_t gz = 1);
  // Records a dispatch of `groups` workgroups folded into x and y (x <= 65535; shaders use
  // flat_group() and ignore the excess).
  void dispatch_flat(const Pipeline& p, const std::vector<const Buffer*>& buffers, const void* push, uint64_t groups);
  void copy(const Buffer& src, size_t src_offset, const Buffer& dst, size_t dst_offset, size_t bytes);
  void fill_zero(const Buffer& dst);

  // Copies `bytes` of host data into the arena (16-byte aligned) for the commands recorded next.
  Staged stage(const void* data, size_t bytes);

  // Submits what was recorded and waits for it; recycles descriptor sets and the arena.
  void flush();
  // Flushes and drops the context's own buffers (they keep the context alive); the backend
  // calls it when it dies, and the context goes when the last tensor does.
  void shutdown();

  // TRELLIS_VULKAN_PROFILE=1: every dispatch is flushed on its own and its wall time added to
  // its pipeline's total; report() logs the totals (the backend calls it when it dies).
  void report() const;

  // For Buffer: release now, or after the next flush if commands are being recorded.
  void retire(VkBuffer buffer, VkDeviceMemory memory);
  VkDevice device() const { return device_; }
  uint32_t memory_type(uint32_t type_bits, bool staging, bool* host_visible) const;

 private:
  Context() = default;
  void begin_if_needed();
  VkDescriptorSet allocate_set(const Pipeline& p);

  DeviceInfo info_;
  VkInstance instance_ = VK_NULL_HANDLE;
  VkPhysicalDevice physical_ = VK_NULL_HANDLE;
  VkPhysicalDeviceLimits limits_{};
  VkPhysicalDeviceMemoryProperties memory_{};
  bool discrete_ = false;
  bool cpu_ = false;
  bool discrete_like_ = false;
  VkDevice device_ = VK_NULL_HANDLE;
  VkQueue queue_ = VK_NULL_HANDLE;
  uint32_t queue_family_ = 0;
  VkCommandPool command_pool_ = VK_NULL_HANDLE;
  VkCommandBuffer cmd_ = VK_NULL_HANDLE;
  VkFence fence_ = VK_NULL_HANDLE;
  VkDescriptorPool descriptor_pool_ = VK_NULL_HANDLE;
  VkPipelineCache pipeline_cache_ = VK_NULL_HANDLE;
  bool recording_ = false;
  std::map<std::string, std::unique_ptr<Pipeline>> pipelines_;
  std::vector<std::pair<VkBuffer, VkDeviceMemory>> retired_;
  std::shared_ptr<Buffer> arena_;
  size_t arena_used_ = 0;
  uint32_t sets_used_ = 0;
  std::vector<std::shared_ptr<Buffer>> keep_alive_;
  bool profile_ = false;
  std::map<std::string, std::pair<double, uint64_t>> profile_totals_;  // seconds, dispatches  // staging buffers of recorded copies
};

}  // namespace trellis::vk
