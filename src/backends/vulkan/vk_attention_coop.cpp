// backends/vulkan/vk_attention_coop.cpp: prefill attention on cooperative matrices
// (shaders/attention_flash_coop.glsl), the fast path of VulkanBackend::attention's flash branch.
//
// Goal: S = Q·Kᵀ and P·V on the tensor cores (fp16 operands, fp32 accumulation), the CUDA
// backend's tensor-core attention on Vulkan. Non-goals: head sizes other than 64 and 128, devices
// without subgroup size 32 (attention_flash serves both), decode (attention.comp).
#include <algorithm>
#include <string>
#include <vector>

#include "backends/vulkan/vk_backend.h"
#include "core/error.h"
#include "core/log.h"

namespace trellis::vk {
namespace {

constexpr int64_t kCoopQueries = 64;  // BR: flat queries (row x head of a GQA group) per workgroup
constexpr uint32_t kCoopWg = 128;     // 4 subgroups of 32

}  // namespace

size_t flash_coop_shared_bytes(int64_t head_dim) {
  if (head_dim != 64 && head_dim != 128) return 0;
  const size_t d = static_cast<size_t>(head_dim), bc = 64, br = kCoopQueries;
  return 2 * bc * (d + 8) + 4 * 64 * (bc + 4) + 2 * 64 * (bc + 8) + 12 * br;
}

bool VulkanBackend::flash_coop_capable(int64_t head_dim) const {
  const VkPhysicalDeviceLimits& lim = ctx_->limits();
  const std::vector<std::string>& features = ctx_->info().features;
  const size_t base = flash_coop_shared_bytes(head_dim);
  // The emulated module adds its products' scratch (coop_emulation.glsl: 2 x 4 KiB).
  const size_t bytes = base + (flash_coop_emulation_ ? 8192 : 0);
  if (base == 0 || (bytes > lim.maxComputeSharedMemorySize && !(flash_coop_emulation_ && ctx_->is_cpu())) ||
      lim.maxComputeWorkGroupInvocations < kCoopWg || lim.maxComputeWorkGroupSize[0] < kCoopWg ||
      std::find(features.begin(), features.end(), "subgroup_shuffle") == features.end())
    return false;
  if (flash_coop_emulation_) return true;
  return (ctx_->coop().khr || ctx_->coop().nv) && ctx_->coop().workgroup == 4 * 32;
}

void VulkanBackend::set_flash_coop_rescale(float log2_slack) {
  if (!(log2_slack >= 0.0f && log2_slack <= 15.0f))
    fail(ErrorKind::kInvalidArgument, "Vulkan: attention_flash_coop rescale slack {} (0..15 in log2 units)", log2_slack);
  flash_coop_rescale_ = log2_slack;
}

bool VulkanBackend::attention_flash_coop(const DeviceTensor& q, const DeviceTensor& k_cache,
                                         const DeviceTensor& v_cache, const Staged& pos, const AttentionParams& ap,
                                         int64_t rows, DeviceTensor& out) {
  if (!flash_coop_ || flash_forced_.rows != 0 || !flash_coop_capable(ap.head_dim)) return false;
  const int64_t kv_width = ap.n_kv_heads * ap.head_dim, group = ap.n_heads / ap.n_kv_heads;
  // The shader fetches K and V rows of a kv head as uvec4 (8 halves).
  if (k_cache.offset % 16 != 0 || v_cache.offset % 16 != 0 || kv_width % 8 != 0) return false;
  const bool khr = ctx_->coop().khr;
  const std::string shader = flash_coop_emulation_ ? fmt::format("attention_flash_coop_emu_d{}", ap.head_dim)
                                                   : fmt::format("attention_flash_coop_d{}{}", ap.head_dim, khr ? "+khr" : "");
  const std::string name = flash_coop_emulation_ ? shader
                                                 : fmt::format("attention_flash_coop_d{}_{}", ap.head_dim, khr ? "khr" : "nv");
  struct {
    uint32_t rows, n_heads, group, kv_width, window;
    uint32_t q_off, kc_off, vc_off, pos_off, out_off;
    float scale, rescale;
    uint32_t q_blocks;
  } pc{u32(rows),         u32(ap.n_heads),  u32(group),       u32(kv_width),
       u32(ap.sliding_window), elem(q, 4),  elem(k_cache, 2), elem(v_cache, 2),
       u32(static_cast<int64_t>(pos.offset / 4)), elem(out, 4), ap.scale, flash_coop_rescale_,
       ceil_div(rows * group, kCoopQueries)};
  const Pipeline* p = nullptr;
  try {
    p = &ctx_->pipeline(name, shader, {}, 5, sizeof(pc), 1u << 4);
  } catch (const Error& e) {
    log_warn("Vulkan: {} is unusable on '{}' ({}); prefill attention uses attention_flash", name, ctx_->info().name,
             e.what());
    flash_coop_ = false;
    return false;
  }
  if (!flash_coop_logged_) {
    log_info("Vulkan: prefill attention through {}", name);
    flash_coop_logged_ = true;
  }
  ctx_->dispatch_flat(*p, {&buffer_of(q), &buffer_of(k_cache), &buffer_of(v_cache), pos.buffer, &buffer_of(out)}, &pc,
                      static_cast<uint64_t>(pc.q_blocks) * static_cast<uint64_t>(ap.n_kv_heads));
  return true;
}

}  // namespace trellis::vk
