// backends/vulkan/vk_context.h: one Vulkan device as the backend uses it: instance and device
// selection, memory, buffers, pipelines per shader variant, and the single command stream.
//
// Goals: everything the ops need and nothing more; errors as trellis::Error naming the Vulkan
// call and result; no third-party code; batch-1 decode not bound by host submission work.
// Design:
//   * One compute queue. Ops do not record Vulkan commands right away: dispatch(), copy(),
//     fill_zero() and timestamp() append to a host-side segment, and flush() turns the segment
//     into a command buffer, submits it and waits.
//   * Barriers only where needed: a buffer-granular hazard tracker knows which buffers each
//     command reads and writes (Pipeline::writes names the bindings a shader writes) and puts a
//     compute/transfer memory barrier before a command that reads a buffer written since the
//     last barrier or writes one read or written since then (RAW, WAR, WAW). Independent
//     dispatches (q, k, v projections) run without barriers between them.
//   * Descriptor sets are cached per (pipeline, bound buffers) and reused across segments.
//   * Segment replay: a segment is keyed by its commands and their arguments (pipelines, buffer
//     ids, push constants, grids; not the bytes staged in the arena). A segment of at least
//     kMinReplayCommands commands is recorded once into its own command buffer and kept (LRU,
//     kMaxSegments); a later segment with the same key re-submits it without recording. Decode
//     steps are such segments: token ids, positions and rotary tables travel through the arena
//     at the same offsets every step, and the shaders read them from there, so a replay sees the
//     new values. TRELLIS_VULKAN_REPLAY=0 records every segment afresh.
//   * Every storage buffer is bound whole; shaders take element offsets in push constants, so
//     DeviceTensor views at any offset need no descriptor alignment. Buffers carry a process-wide
//     unique id, so a cached set or segment can never match a buffer that reuses a dead handle.
//   * Memory: tensors in DEVICE_LOCAL memory; where that memory is also host-visible (lavapipe,
//     integrated GPUs) it is mapped and written directly, otherwise through staging copies.
//   * Small per-op host data (token ids, positions, rotary tables) goes into a host-visible
//     arena that is recycled at every flush.
// Non-goals (first milestone): asynchronous uploads, multiple queues, sub-allocation of one
// big VkDeviceMemory (each buffer has its own allocation; fine for ~10^3 tensors).
#pragma once

#include <vulkan/vulkan.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "backends/backend.h"
#include "backends/vulkan/vk_coop.h"
#include "core/env.h"

namespace trellis::vk {

// Storage-buffer bindings a pipeline may have (exl3_out_rope_kv has the most: 12). Devices
// offering fewer per stage (maxPerStageDescriptorStorageBuffers) skip the pipelines that need more.
inline constexpr uint32_t kMaxBindings = 12;

// Throws trellis::Error (kUnsupported / kOutOfMemory / kInternal) naming `what` and the result.
void check(VkResult result, const char* what);
const char* result_name(VkResult result);

class Context;

// Where a buffer lives: device memory (host-visible where the device has only such memory);
// host-visible staging the host writes (uploads; write-combined memory is fine); host-visible
// memory the host reads back (downloads), host-cached where the device offers such a type, since
// host reads of uncached write-combined memory are slow.
enum class MemoryUse { kDevice, kStaging, kReadback };

// A VkBuffer with its own memory. Destruction is deferred to the next flush while commands
// that may use it are in flight.
class Buffer : public DeviceBuffer {
 public:
  Buffer(std::shared_ptr<Context> ctx, size_t bytes, MemoryUse use);
  ~Buffer() override;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  size_t size() const override { return size_; }
  VkBuffer handle() const { return buffer_; }
  uint64_t id() const { return id_; }  // unique for the process, never reused
  std::byte* mapped() const { return static_cast<std::byte*>(mapped_); }  // null unless host-visible
  bool host_cached() const { return host_cached_; }  // its memory type is HOST_CACHED (fast host reads)

 private:
  std::shared_ptr<Context> ctx_;
  VkBuffer buffer_ = VK_NULL_HANDLE;
  VkDeviceMemory memory_ = VK_NULL_HANDLE;
  void* mapped_ = nullptr;
  bool host_cached_ = false;
  size_t size_ = 0;
  uint64_t id_ = 0;
};

// A compute pipeline of one shader with fixed specialization constants.
struct Pipeline {
  std::string name;  // e.g. "exl3_gemv_k3_mcg"
  std::string shader;          // the module (Context::pipeline)
  std::vector<uint32_t> spec;  // its specialization constants
  uint32_t bindings = 0;
  uint32_t writes = 0;  // bit i: the shader writes binding i (the others are only read)
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

  // Optional shader features, probed and enabled at device creation; shaders that use them have
  // a portable fallback (exl3_gemv's _f16 and _f16_dot variants).
  struct ShaderFeatures {
    bool float16 = false;              // shaderFloat16 with shaderRoundingModeRTEFloat16 (Vulkan 1.2)
    bool int_dot = false;              // shaderIntegerDotProduct (VK_KHR_shader_integer_dot_product)
    bool int_dot_accelerated = false;  // 4x8 packed unsigned dot products are native instructions
  };
  const ShaderFeatures& shader_features() const { return shader_features_; }
  // Whether those shaders use the features: fp16 where supported unless TRELLIS_VULKAN_F16=0;
  // the dot product where accelerated, TRELLIS_VULKAN_DOT=0/1 overrides (1 still needs support).
  // The setters (tests, benchmarks) throw kUnsupported for a feature the device lacks.
  bool use_f16() const { return use_f16_; }
  bool use_int_dot() const { return use_int_dot_; }
  void set_use_f16(bool on);
  void set_use_int_dot(bool on);
  bool is_cpu() const { return cpu_; }  // a CPU implementation (lavapipe, SwiftShader)
  // Cooperative-matrix support enabled on this device (vk_coop.h).
  const CoopSupport& coop() const { return coop_; }
  bool discrete_like() const { return discrete_like_; }

  std::shared_ptr<Buffer> create_buffer(size_t bytes, MemoryUse use = MemoryUse::kDevice);

  // Pipeline of shader `shader` (embedded SPIR-V) with specialization constants spec[i] at
  // constant_id i, `bindings` storage buffers at bindings 0.., `push_bytes` of push constants;
  // `writes` has bit i set when the shader writes binding i (the hazard tracker trusts it: a
  // written binding missing here is a race). Created once per (shader, spec) and cached.
  // `shader` "<name>+khr" takes <name>'s NV cooperative-matrix module rewritten to KHR.
  // A cached pipeline is found by a hash of (shader, spec), without building strings (decode
  // looks up ~330 pipelines per token).
  const Pipeline& pipeline(std::string_view name, std::string_view shader, std::span<const uint32_t> spec,
                           uint32_t bindings, uint32_t push_bytes, uint32_t writes);
  const Pipeline& pipeline(std::string_view name, std::string_view shader, std::initializer_list<uint32_t> spec,
                           uint32_t bindings, uint32_t push_bytes, uint32_t writes) {
    return pipeline(name, shader, std::span<const uint32_t>(spec.begin(), spec.size()), bindings, push_bytes, writes);
  }
  // The cached pipeline of (shader, spec), or null (the caller then builds its name and calls
  // pipeline()).
  const Pipeline* find_pipeline(std::string_view shader, std::span<const uint32_t> spec);

  // Appends a dispatch to the segment. `buffers` are bound whole at bindings 0, 1, ...
  void dispatch(const Pipeline& p, std::span<const Buffer* const> buffers, const void* push, uint32_t gx,
                uint32_t gy = 1, uint32_t gz = 1);
  void dispatch(const Pipeline& p, std::initializer_list<const Buffer*> buffers, const void* push, uint32_t gx,
                uint32_t gy = 1, uint32_t gz = 1) {
    dispatch(p, std::span<const Buffer* const>(buffers.begin(), buffers.size()), push, gx, gy, gz);
  }
  // Records a dispatch of `groups` workgroups folded into x and y (x <= 65535; shaders use
  // flat_group() and ignore the excess).
  void dispatch_flat(const Pipeline& p, std::span<const Buffer* const> buffers, const void* push, uint64_t groups);
  void dispatch_flat(const Pipeline& p, std::initializer_list<const Buffer*> buffers, const void* push,
                     uint64_t groups) {
    dispatch_flat(p, std::span<const Buffer* const>(buffers.begin(), buffers.size()), push, groups);
  }
  // Peephole support for the backend's fusions. Every appended command gets a serial, unique
  // for the context; serial_back(i) is that of the i-th command from the end of the segment
  // (0 when there is none: after a flush, nothing can be fused with what came before).
  // pop_last(p, serial) removes the last command when it is a dispatch of `p` with that serial
  // (as if it had never been appended) and says whether it did.
  uint64_t serial_back(size_t i) const;
  bool pop_last(const Pipeline& p, uint64_t serial);
  void copy(const Buffer& src, size_t src_offset, const Buffer& dst, size_t dst_offset, size_t bytes);
  void fill_zero(const Buffer& dst);

  // Copies `bytes` of host data into the arena (16-byte aligned) for the commands recorded next.
  Staged stage(const void* data, size_t bytes);
  // Changes whenever the arena is recycled (flush) or replaced: a Staged from an earlier epoch is
  // gone, one from the current epoch may be bound again.
  uint64_t arena_epoch() const { return arena_epoch_; }

  // GPU timestamps (for benchmarks): timestamp(i) appends a write of query i (< kQueries) after
  // everything before it in the segment has finished; after flush(), elapsed_seconds(a, b) is
  // the time between queries a and b. Null when the queue cannot write timestamps.
  static constexpr uint32_t kQueries = 16;
  bool has_timestamps() const { return timestamp_period_ns_ > 0; }
  void timestamp(uint32_t query);
  double elapsed_seconds(uint32_t a, uint32_t b);

  // Submits the segment (replaying a cached command buffer when the key matches) and waits;
  // recycles the arena.
  void flush();
  // Submits the commands recorded so far without waiting for them (the model's submit() points:
  // the device starts on them while the host records the rest of the step); the next flush()
  // waits for everything. A segment recorded while another is in flight starts with a barrier
  // (and is cached apart from the same commands recorded without one). Does nothing (the
  // commands stay in the segment) where the segment could not be cached for replay (replay
  // off, too short) or while profiling.
  void submit();
  // Seconds the host has spent waiting for the device (fences, queue idle) since creation.
  double wait_seconds() const { return wait_seconds_; }

  // Counters for tests and benchmarks.
  struct Stats {
    uint64_t segments = 0, recorded = 0, replayed = 0, dispatches = 0, barriers = 0;
  };
  const Stats& stats() const { return stats_; }
  // TRELLIS_VULKAN_HOST_PROFILE=1: the host's seconds in the context's parts of a step (pipeline
  // lookups, appending commands, preparing a segment (looking it up, recording it when not
  // replayed), vkQueueSubmit, creating buffers, the backend's copies out of mapped memory in
  // download()); all zero when off. The rest of a step's host time is the model's and the
  // backend's own code.
  struct HostTimes {
    double pipeline = 0, dispatch = 0, prepare = 0, queue_submit = 0, buffers = 0, download = 0;
    uint64_t buffers_created = 0;
  };
  const HostTimes& host_times() const { return host_; }
  bool host_profile() const { return host_profile_; }
  // Adds the seconds since construction to *into (nothing when into is null).
  class HostTimer {
   public:
    explicit HostTimer(double* into) : into_(into) {
      if (into_) t0_ = std::chrono::steady_clock::now();
    }
    ~HostTimer() {
      if (into_) *into_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    }
    HostTimer(const HostTimer&) = delete;
    HostTimer& operator=(const HostTimer&) = delete;

   private:
    double* into_;
    std::chrono::steady_clock::time_point t0_;
  };
  double* host_slot(double HostTimes::* part) { return host_profile_ ? &(host_.*part) : nullptr; }
  void count_buffer_created() {
    if (host_profile_) ++host_.buffers_created;
  }
  void set_replay(bool on) { replay_ = on; }
  // Flushes and drops the context's own buffers (they keep the context alive); the backend
  // calls it when it dies, and the context goes when the last tensor does.
  void shutdown();

  // TRELLIS_VULKAN_PROFILE=1: every dispatch runs in a segment of its own and its time is added
  // to its pipeline's total: GPU time between two timestamps where the queue writes them, else
  // host wall time (=2: per pipeline and grid). =3 keeps the normal segments (replay, fusion,
  // overlap) and writes a timestamp after every dispatch: each dispatch is charged the time
  // since the previous stamp, barrier waits included. report() logs the totals (the backend
  // calls it when it dies).
  void report() const;

  // For Buffer: release now, or after the next flush if commands are being recorded.
  void retire(VkBuffer buffer, VkDeviceMemory memory);
  VkDevice device() const { return device_; }
  uint32_t memory_type(uint32_t type_bits, MemoryUse use, bool* host_visible) const;
  VkMemoryPropertyFlags memory_flags(uint32_t type) const { return memory_.memoryTypes[type].propertyFlags; }
  bool readback_cached() const { return readback_cached_; }

 private:
  // One command of a segment, deferred until flush().
  struct Command {
    enum class Kind : uint8_t { kDispatch, kCopy, kFill, kTimestamp } kind = Kind::kDispatch;
    const Pipeline* pipeline = nullptr;
    uint32_t nbuf = 0;
    VkBuffer handles[kMaxBindings] = {};
    uint64_t ids[kMaxBindings] = {};
    uint32_t groups[3] = {};
    uint64_t src_offset = 0, dst_offset = 0, bytes = 0;  // copy; query index in src_offset
    uint8_t push[128] = {};
    uint64_t serial = 0;
    size_t key_at = 0;  // size of the segment key before this command's words
  };
  struct Segment {
    std::vector<uint64_t> key;
    VkCommandBuffer cmd = VK_NULL_HANDLE;
    uint64_t last_used = 0;
  };

  Context() = default;
  void append(const Command& c, std::span<const uint64_t> key_words);
  // Records commands_ into `cmd` with barriers from the hazard tracker.
  void record(VkCommandBuffer cmd, bool lead_barrier);
  // The command buffer of the recorded segment: a cached one with its key, else freshly recorded.
  VkCommandBuffer prepare_segment();
  // Submits the recorded segment (prepare_segment) with `fence` (may be null); returns its buffer.
  VkCommandBuffer submit_segment(VkFence fence);
  // Waits for the submissions in flight (submit()).
  void wait_inflight();
  std::vector<VkCommandBuffer> inflight_;
  double wait_seconds_ = 0;
  VkDescriptorSet descriptor_set(const Command& c);
  // Drops cached segments and descriptor sets (nothing may be in flight).
  void reset_caches();

  DeviceInfo info_;
  VkInstance instance_ = VK_NULL_HANDLE;
  VkPhysicalDevice physical_ = VK_NULL_HANDLE;
  VkPhysicalDeviceLimits limits_{};
  VkPhysicalDeviceMemoryProperties memory_{};
  bool discrete_ = false;
  bool cpu_ = false;
  bool discrete_like_ = false;
  CoopSupport coop_;
  ShaderFeatures shader_features_;
  bool use_f16_ = false;
  bool use_int_dot_ = false;
  VkDevice device_ = VK_NULL_HANDLE;
  VkQueue queue_ = VK_NULL_HANDLE;
  uint32_t queue_family_ = 0;
  VkCommandPool command_pool_ = VK_NULL_HANDLE;
  VkCommandBuffer cmd_ = VK_NULL_HANDLE;
  VkFence fence_ = VK_NULL_HANDLE;
  std::vector<VkDescriptorPool> descriptor_pools_;
  uint32_t sets_in_pool_ = 0;  // sets allocated from descriptor_pools_.back()
  std::map<std::vector<uint64_t>, VkDescriptorSet> sets_;
  VkPipelineCache pipeline_cache_ = VK_NULL_HANDLE;
  VkQueryPool queries_ = VK_NULL_HANDLE;
  double timestamp_period_ns_ = 0;
  uint64_t timestamp_mask_ = 0;
  bool recording_ = false;  // commands_ is not empty
  std::vector<Command> commands_;
  std::vector<uint64_t> key_;  // the segment's key, built as commands are appended
  uint64_t next_serial_ = 1;
  std::vector<Segment> segments_;
  uint64_t segment_clock_ = 0;
  bool replay_ = true;
  bool pipeline_stats_ = false;  // TRELLIS_VULKAN_PIPELINE_STATS=1 (where the driver has them)
  bool pipeline_ir_ = false;     // TRELLIS_VULKAN_PIPELINE_STATS=2: also the internal representations
  // Prints the driver's statistics of a new pipeline (VK_KHR_pipeline_executable_properties).
  void print_pipeline_stats(const std::string& name, VkPipeline pipeline) const;
  Stats stats_;
  bool host_profile_ = false;  // TRELLIS_VULKAN_HOST_PROFILE=1
  bool readback_cached_ = true;  // TRELLIS_VULKAN_READBACK_CACHED=0: downloads from the staging memory type
  HostTimes host_;
  // Pipelines by the hash of (shader, spec) (pipeline_hash); each keeps its shader and spec so
  // that a lookup compares them.
  std::unordered_map<uint64_t, std::vector<std::unique_ptr<Pipeline>>> pipelines_;
  std::vector<std::pair<VkBuffer, VkDeviceMemory>> retired_;
  std::shared_ptr<Buffer> arena_;
  size_t arena_used_ = 0;
  uint64_t arena_epoch_ = 0;
  uint32_t sets_used_ = 0;
  std::vector<std::shared_ptr<Buffer>> keep_alive_;
  bool profile_ = false;
  bool profile_grids_ = false;  // TRELLIS_VULKAN_PROFILE=2: totals per pipeline and grid
  bool profile_stream_ = false;  // TRELLIS_VULKAN_PROFILE=3: timestamps in the normal stream
  static constexpr uint32_t kStreamQueries = 8192;
  VkQueryPool stream_queries_ = VK_NULL_HANDLE;
  std::vector<const Pipeline*> stream_names_;  // the dispatch before stream timestamp i + 1
  std::map<std::string, std::pair<double, uint64_t>> profile_totals_;  // seconds, dispatches
};

// A switch from the environment: `fallback` when `name` is unset or empty, else false for "0"
// and true for anything else (the backend's TRELLIS_VULKAN_* switches).
bool env_flag(const char* name, bool fallback);
// Tuning numbers: trellis::env_int (core/env.h).
using trellis::env_int;

}  // namespace trellis::vk
