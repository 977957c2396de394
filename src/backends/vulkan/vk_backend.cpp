// backends/vulkan/vk_backend.cpp: memory and the non-linear ops of the Vulkan backend
// (vk_linear.cpp has the linear layers). Each op validates what the shader relies on, fills the
// shader's push-constant block (field order = the `P` block in the .comp file) and records.
#include "backends/vulkan/vk_backend.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "backends/vulkan/vulkan_api.h"
#include "core/error.h"
#include "core/fp16.h"
#include "core/log.h"

namespace trellis {
namespace vk {

Buffer& buffer_of(const DeviceTensor& t) {
  TRELLIS_CHECK(t.buffer != nullptr);
  return *static_cast<Buffer*>(t.buffer.get());
}

float load_float(const std::byte* p, DType dtype, size_t i) {
  uint16_t h;
  float f;
  switch (dtype) {
    case DType::kF32: std::memcpy(&f, p + 4 * i, 4); return f;
    case DType::kF16: std::memcpy(&h, p + 2 * i, 2); return fp16_to_fp32(h);
    case DType::kBF16: std::memcpy(&h, p + 2 * i, 2); return bf16_to_fp32(h);
    default: fail(ErrorKind::kUnsupported, "Vulkan backend: cannot read dtype {} as float", dtype_name(dtype));
  }
}

VulkanBackend::VulkanBackend(int index, bool staging_only) : ctx_(Context::create(index, staging_only)) {
  const DeviceInfo& info = ctx_->info();
  const int sg = info.subgroup_size;
  const bool shuffles = std::find(info.features.begin(), info.features.end(), "subgroup_shuffle") != info.features.end();
  // On/off switches: TRELLIS_VULKAN_<NAME>=0 turns a default-on path off (env_flag).
  gemv_subgroup_capable_ =
      shuffles && sg >= 4 && sg <= static_cast<int>(kGemvWg) && kGemvWg % static_cast<uint32_t>(sg) == 0;
  gemv_subgroup_ = gemv_subgroup_capable_ && env_flag("TRELLIS_VULKAN_SUBGROUP", true);
  fuse_ = env_flag("TRELLIS_VULKAN_FUSE", true);
  fuse_silu_ = env_flag("TRELLIS_VULKAN_FUSE_SILU", true);
  fuse_resid_ = env_flag("TRELLIS_VULKAN_FUSE_RESID", true);
  fuse_qkv_ = env_flag("TRELLIS_VULKAN_FUSE_QKV", true);
  fuse_merge_ = env_flag("TRELLIS_VULKAN_FUSE_MERGE", true);
  submit_ = env_flag("TRELLIS_VULKAN_SUBMIT", true);
  gemv_hin_ = env_flag("TRELLIS_VULKAN_GEMV_HIN", true);
  dense_gemv_legacy_ = env_flag("TRELLIS_VULKAN_DENSE_GEMV_LEGACY", false);
  dense_gemv_lanes_ = static_cast<int>(env_int("TRELLIS_VULKAN_DENSE_GEMV_LANES", 0, 0, 32));
  if (dense_gemv_lanes_ != 0 && dense_gemv_lanes_ != 8 && dense_gemv_lanes_ != 16 && dense_gemv_lanes_ != 32) {
    log_warn("Vulkan: TRELLIS_VULKAN_DENSE_GEMV_LANES={}: expected 8, 16 or 32; choosing by the input width",
             dense_gemv_lanes_);
    dense_gemv_lanes_ = 0;
  }
  gemv_fout_ = env_flag("TRELLIS_VULKAN_GEMV_FUSED_OUT", false);
  gemv_scalar_add_ = env_flag("TRELLIS_VULKAN_GEMV_SCALAR_ADD", true);
  gemv_prefetch_ = env_flag("TRELLIS_VULKAN_GEMV_PREFETCH", true);
  gemv_target_groups_ = env_int("TRELLIS_VULKAN_GEMV_GROUPS", kGemvTargetGroups, 1, 1 << 20);
  gemv_tiles_ = env_int("TRELLIS_VULKAN_GEMV_TILES", 4, 1, 8);
  if ((gemv_tiles_ & (gemv_tiles_ - 1)) != 0)
    throw Error(ErrorKind::kInvalidArgument, "TRELLIS_VULKAN_GEMV_TILES must be 1, 2, 4 or 8");
  hadamard_sg_capable_ = shuffles && sg >= 8 && sg % 8 == 0 && 128 % sg == 0;
  hadamard_sg_ = hadamard_sg_capable_ && env_flag("TRELLIS_VULKAN_HADAMARD_SG", true);
  transform_f16_ = env_flag("TRELLIS_VULKAN_TRANSFORM_F16", true);
  const VkPhysicalDeviceLimits& lim = ctx_->limits();
  rms_wide_wg_ = std::max(wg_, std::min({kRmsWideWg, lim.maxComputeWorkGroupInvocations, lim.maxComputeWorkGroupSize[0]}));
  flash_ = env_flag("TRELLIS_VULKAN_FLASH_ATTENTION", true);
  // attention_decode's clusters of C lanes must lie in one subgroup (C <= 32, a power of two).
  decode_capable_ = shuffles && sg >= 4 && sg <= static_cast<int>(kDecodeWg) && (sg & (sg - 1)) == 0;
  decode_ = decode_capable_ && env_flag("TRELLIS_VULKAN_DECODE_ATTENTION", true);
  flash_coop_ = env_flag("TRELLIS_VULKAN_FLASH_COOP", true);
  // Prefill GEMM: matmul_f16_coop3 (tile shape fixed at compile time, every cooperative-matrix
  // loop unrolled) by default where the device has cooperative matrices and its variant fits
  // (subgroup size 32): on the H200 at m = 2048, 231-233 TFLOP/s against 33-34 for
  // matmul_f16_coop2, 23-24 for the tiled shader and 15 for matmul_f16_coop (docs/BENCHMARKS.md
  // session 9). Where it does not fit, matmul_f16_coop2. TRELLIS_VULKAN_COOPMAT=0 keeps the tiled
  // shader, =1 selects matmul_f16_coop, =2 matmul_f16_coop2 in the shape named by
  // TRELLIS_VULKAN_COOP2_SHAPE (default kCoop2Shapes[0]), =3 matmul_f16_coop3 in the variant named
  // by TRELLIS_VULKAN_COOP3_VARIANT (default kCoop3Variants[0]); an explicit choice that does not
  // fit the device falls back to the tiled shader.
  const char* coop_env = std::getenv("TRELLIS_VULKAN_COOPMAT");
  const bool coop_chosen = coop_env && *coop_env;
  const bool coop_wanted = !(coop_chosen && std::strcmp(coop_env, "0") == 0);
  coop_ = !coop_wanted ? CoopPath::kOff
          : ctx_->coop().khr ? CoopPath::kKhr
          : ctx_->coop().nv  ? CoopPath::kNv
                             : CoopPath::kOff;
  coop_kernel_ = coop_chosen && coop_env[0] == '1' ? 1 : coop_chosen && coop_env[0] == '2' ? 2 : 3;
  const char* shape_env = std::getenv("TRELLIS_VULKAN_COOP2_SHAPE");
  if (shape_env && ctx_->coop().workgroup != 0) {
    size_t i = 0;
    while (i < std::size(kCoop2Shapes) && coop2_shape_name(kCoop2Shapes[i]) != shape_env) ++i;
    if (i == std::size(kCoop2Shapes) || !coop2_shape_fits(i))
      log_warn("Vulkan: TRELLIS_VULKAN_COOP2_SHAPE={} is not a matmul_f16_coop2 shape that fits this device; using {}",
               shape_env, coop2_shape_name(kCoop2Shapes[coop2_shape_]));
    else
      coop2_shape_ = i;
  }
  const char* variant_env = std::getenv("TRELLIS_VULKAN_COOP3_VARIANT");
  if (variant_env && ctx_->coop().workgroup != 0) {
    size_t i = 0;
    while (i < std::size(kCoop3Variants) && coop3_variant_name(kCoop3Variants[i]) != variant_env) ++i;
    if (i == std::size(kCoop3Variants) || !coop3_variant_fits(i))
      log_warn("Vulkan: TRELLIS_VULKAN_COOP3_VARIANT={} is not a matmul_f16_coop3 variant that fits this device; using {}",
               variant_env, coop3_variant_name(kCoop3Variants[coop3_variant_]));
    else
      coop3_variant_ = i;
  }
  if (coop_ != CoopPath::kOff && coop_kernel_ == 3 && !coop3_variant_fits(coop3_variant_) && !coop_chosen)
    coop_kernel_ = 2;  // the default on devices coop3 does not fit
  if (coop_ != CoopPath::kOff && coop_kernel_ == 2 && !coop2_shape_fits(coop2_shape_)) coop_ = CoopPath::kOff;
  if (coop_ != CoopPath::kOff && coop_kernel_ == 3 && !coop3_variant_fits(coop3_variant_)) {
    log_warn("Vulkan: matmul_f16_coop3 {} does not fit '{}' (subgroup size 32 and {} bytes of shared memory needed); "
             "prefill uses matmul_f16_tiled",
             coop3_variant_name(kCoop3Variants[coop3_variant_]), info.name, coop3_shared_bytes(kCoop3Variants[coop3_variant_]));
    coop_ = CoopPath::kOff;
  }
  log_info("Vulkan: using {} (subgroup size {}; EXL3 GEMV reductions through {}; decode attention {}; prefill GEMM "
           "{}: cooperative matrices {})",
           info.name, sg, gemv_subgroup_ ? "subgroup shuffles" : "shared memory",
           decode_ ? "attention_decode" : "attention",
           coop_ == CoopPath::kOff ? "matmul_f16_tiled"
           : coop_kernel_ == 2     ? "matmul_f16_coop2 " + coop2_shape_name(kCoop2Shapes[coop2_shape_])
           : coop_kernel_ == 3     ? "matmul_f16_coop3 " + coop3_variant_name(kCoop3Variants[coop3_variant_])
                                   : std::string("matmul_f16_coop"),
           ctx_->coop().detail);
}

const char* coop_path_name(CoopPath p) {
  switch (p) {
    case CoopPath::kKhr: return "khr";
    case CoopPath::kNv: return "nv";
    default: return "off";
  }
}

bool VulkanBackend::coop_capable(CoopPath p) const {
  return p == CoopPath::kOff || (p == CoopPath::kKhr && ctx_->coop().khr) || (p == CoopPath::kNv && ctx_->coop().nv);
}

void VulkanBackend::set_coop_path(CoopPath p) {
  if (!coop_capable(p))
    fail(ErrorKind::kUnsupported, "Vulkan device '{}': no {} cooperative-matrix path ({})", ctx_->info().name,
         coop_path_name(p), ctx_->coop().detail);
  coop_ = p;
}

void VulkanBackend::set_decode_attention(bool on) {
  if (on && !decode_capable_)
    fail(ErrorKind::kUnsupported, "Vulkan device '{}': attention_decode needs subgroup shuffle in compute and a "
         "power-of-two subgroup size in 4..{} (got {})", ctx_->info().name, kDecodeWg, ctx_->info().subgroup_size);
  decode_ = on;
}

void VulkanBackend::set_gemv_subgroup(bool on) {
  if (on && !gemv_subgroup_capable_)
    fail(ErrorKind::kUnsupported, "Vulkan device '{}': no subgroup shuffle in compute shaders (or an unusable subgroup size {})",
         ctx_->info().name, ctx_->info().subgroup_size);
  gemv_subgroup_ = on;
}

VulkanBackend::~VulkanBackend() {
  for (auto& s : scratch_) s.reset();
  norm_sums_.reset();
  download_.reset();
  last_resid_ = {};
  last_norm_.reset();
  last_merge_.reset();
  last_add_ = {};
  outs_[0] = outs_[1] = outs_[2] = {};
  ctx_->shutdown();
  ctx_->report();
}

std::shared_ptr<Buffer> VulkanBackend::upload_bytes(const void* data, size_t bytes) {
  auto buf = ctx_->create_buffer(bytes);
  if (buf->mapped()) {
    std::memcpy(buf->mapped(), data, bytes);  // a fresh buffer: no recorded command uses it
    return buf;
  }
  auto staging = ctx_->create_buffer(bytes, MemoryUse::kStaging);
  std::memcpy(staging->mapped(), data, bytes);
  ctx_->copy(*staging, 0, *buf, 0, bytes);
  ctx_->flush();  // weights are uploaded once; keep staging memory bounded
  return buf;
}

Buffer& VulkanBackend::scratch(int slot, size_t bytes) {
  auto& s = scratch_[slot];
  if (!s || s->size() < bytes) s = ctx_->create_buffer(std::max(bytes, s ? 2 * s->size() : bytes));
  return *s;
}

std::vector<std::pair<std::string, double>> VulkanBackend::host_breakdown() const {
  if (!ctx_->host_profile()) return {};
  const auto& h = ctx_->host_times();
  return {{"pipeline_lookup", h.pipeline}, {"append_dispatch", h.dispatch},     {"prepare_segment", h.prepare},
          {"vkQueueSubmit", h.queue_submit}, {"create_buffer", h.buffers},      {"download_copy", h.download},
          {"wait", ctx_->wait_seconds()},
          {"buffers_created", static_cast<double>(h.buffers_created)},
          {"dispatches", static_cast<double>(ctx_->stats().dispatches)},
          {"segments", static_cast<double>(ctx_->stats().segments)}};
}

DeviceTensor VulkanBackend::alloc(DType dtype, const Shape& shape) {
  if (dtype != DType::kF32 && dtype != DType::kF16)
    fail(ErrorKind::kUnsupported, "Vulkan backend: tensors of {} are not supported (F32, F16)", dtype_name(dtype));
  DeviceTensor t;
  t.dtype = dtype;
  t.shape = shape;
  auto buf = ctx_->create_buffer(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype));
  if (buf->mapped())
    std::memset(buf->mapped(), 0, buf->size());
  else
    ctx_->fill_zero(*buf);
  t.buffer = buf;
  return t;
}

DeviceTensor VulkanBackend::upload(const TensorView& host, DType dtype) {
  const size_t n = static_cast<size_t>(host.numel());
  DeviceTensor t;
  t.dtype = dtype;
  t.shape = host.shape;
  if (dtype == host.dtype && (dtype == DType::kF32 || dtype == DType::kF16)) {
    t.buffer = upload_bytes(host.data, host.nbytes());
  } else if (dtype == DType::kF32) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = load_float(host.data, host.dtype, i);
    t.buffer = upload_floats(v);
  } else if (dtype == DType::kF16) {
    std::vector<uint16_t> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = fp32_to_fp16(load_float(host.data, host.dtype, i));
    t.buffer = upload_bytes(v.data(), n * 2);
  } else {
    fail(ErrorKind::kUnsupported, "Vulkan backend: cannot upload as {}", dtype_name(dtype));
  }
  return t;
}

void VulkanBackend::download(const DeviceTensor& t, float* host) {
  const size_t n = static_cast<size_t>(shape_numel(t.shape));
  const size_t bytes = n * dtype_size(t.dtype);
  Buffer& src = buffer_of(t);
  const std::byte* p = nullptr;
  if (src.mapped() && (src.host_cached() || !ctx_->readback_cached())) {
    ctx_->flush();
    p = src.mapped() + t.offset;
  } else {
    // Device-local memory, or host-visible memory the host would read uncached: the copy into
    // one kept readback buffer (host-cached where the device has such memory) joins the segment
    // being recorded (one submission and wait per download, no allocation per call; the decode
    // step with its logits copy stays one replayable key).
    if (!download_ || download_->size() < bytes)
      download_ = ctx_->create_buffer(std::max(bytes, download_ ? 2 * download_->size() : bytes), MemoryUse::kReadback);
    ctx_->copy(src, t.offset, *download_, 0, bytes);
    ctx_->flush();
    p = download_->mapped();
  }
  Context::HostTimer timer(ctx_->host_slot(&Context::HostTimes::download));
  if (t.dtype == DType::kF32)
    std::memcpy(host, p, bytes);
  else if (t.dtype == DType::kF16)
    fp16_to_fp32(reinterpret_cast<const uint16_t*>(p), host, n);  // p is at least 2-aligned
  else
    fail(ErrorKind::kInternal, "Vulkan backend: download of {}", dtype_name(t.dtype));
}

void VulkanBackend::embedding(const DeviceTensor& table, std::span<const int32_t> ids, DeviceTensor& out) {
  const int64_t dim = table.shape[1];
  if (ids.empty()) return;
  const Staged s = ctx_->stage(ids.data(), ids.size() * 4);
  const bool f16 = table.dtype == DType::kF16;
  struct {
    uint32_t dim, table_off, ids_off, out_off, table_f16;
  } pc{u32(dim), elem(table, f16 ? 2 : 4), u32(static_cast<int64_t>(s.offset / 4)), elem(out, 4), f16 ? 1u : 0u};
  const Pipeline& p = ctx_->pipeline("embedding", "embedding", {wg_}, 3, sizeof(pc), 1u << 2);
  ctx_->dispatch(p, {&buffer_of(table), s.buffer, &buffer_of(out)}, &pc, ceil_div(dim, wg_),
                 u32(static_cast<int64_t>(ids.size())));
}

void VulkanBackend::rms_norm(const DeviceTensor& x, const DeviceTensor& weight, float eps, int64_t group,
                             DeviceTensor& out) {
  const int64_t groups = x.rows() * (x.cols() / group);
  struct {
    uint32_t groups, group, x_off, w_off, out_off;
    float eps;
    uint32_t y_off;
  } pc{u32(groups), u32(group), elem(x, 4), elem(weight, 4), elem(out, 4), eps, 0};
  Buffer& xb = buffer_of(x);
  Buffer& ob = buffer_of(out);
  // Few groups (decode: one row) leave most of the GPU idle, and each invocation's loop over its
  // group's elements is a chain of dependent load latencies: wider workgroups there.
  const uint32_t wg = groups < kRmsWideBelowGroups ? rms_wide_wg_ : wg_;
  // Decode sizes in the block order of the fused residual stream (rms_norm.comp BLK), so that
  // the fused and separate norms give the same bits; with that fusion switched off
  // (TRELLIS_VULKAN_FUSE_RESID=0) the norm keeps its own order.
  const bool blk = fuse_resid_ && groups < kRmsWideBelowGroups && 4096 % wg == 0 && group % 128 == 0 &&
                   group / 128 <= 256;
  const std::string suffix = (wg == wg_ ? "" : fmt::format("_w{}", wg)) + (blk ? "_blk" : "");
  const uint32_t b = blk ? 1u : 0u;
  last_norm_.reset();
  const PendingAdd& a = last_add_;
  if (fuse_ && a.x && a.serial != 0 && a.serial == ctx_->serial_back(0) && a.x.get() == &xb && a.x_off == pc.x_off &&
      a.n == groups * group && &ob != &xb && &ob != a.y.get()) {
    // add(x, y) was the last command: x += y and the norm in one dispatch (rms_norm.comp ADD = 1).
    const Pipeline& pa = ctx_->pipeline("add", "add", {wg_}, 2, 12, 1u << 0);
    if (ctx_->pop_last(pa, a.serial)) {
      pc.y_off = a.y_off;
      const Buffer& yb = *static_cast<const Buffer*>(a.y.get());
      const Pipeline& p =
          ctx_->pipeline("rms_norm_add" + suffix, "rms_norm", {wg, 1, b}, 4, sizeof(pc), (1u << 0) | (1u << 2));
      ctx_->dispatch_flat(p, {&xb, &buffer_of(weight), &ob, &yb}, &pc, static_cast<uint64_t>(groups));
      last_add_ = {};
      return;
    }
  }
  const Pipeline& p = ctx_->pipeline("rms_norm" + suffix, "rms_norm", {wg, 0, b}, 4, sizeof(pc), 1u << 2);
  ctx_->dispatch_flat(p, {&xb, &buffer_of(weight), &ob, &xb}, &pc, static_cast<uint64_t>(groups));
  // The norm of a residual stream whose block sums exl3_hadamard_out RESID has just written:
  // an EXL3 linear reading `out` next may fold it in (take_norm).
  const PendingResid& r = last_resid_;
  if (blk && fuse_ && fuse_resid_ && r.x && r.serial != 0 && r.serial == ctx_->serial_back(1) && r.x.get() == &xb &&
      r.x_off == pc.x_off && r.rows == x.rows() && r.cols == x.cols() && group == x.cols() && &ob != &xb)
    last_norm_ = PendingNorm{ctx_->serial_back(0), &p, x.buffer, weight.buffer, out.buffer, pc.x_off, pc.w_off,
                             pc.out_off, eps, x.rows(), x.cols()};
}

void VulkanBackend::rope(DeviceTensor& x, int64_t head_dim, std::span<const int32_t> positions,
                         const RopeParams& rope) {
  const int64_t half = head_dim / 2, heads = x.cols() / head_dim;
  const int64_t rows = static_cast<int64_t>(positions.size());
  if (rows == 0) return;
  // cos/sin on the host in fp32, exactly as the CPU backend computes them; computed and staged
  // once per step (every layer's q and k use the same positions and rotary parameters) while the
  // arena holds the staged copy.
  RopeTable& rt = rope_table_;
  const bool cached = rt.epoch == ctx_->arena_epoch() && rt.inv_freq == rope.inv_freq.data() &&
                      rt.half == half && rt.scaling == rope.attention_scaling &&
                      std::equal(positions.begin(), positions.end(), rt.positions.begin(), rt.positions.end());
  if (!cached) {
    rt.cs.assign(static_cast<size_t>(2 * rows * half), 0.0f);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < half; ++i) {
        const float angle = static_cast<float>(positions[static_cast<size_t>(r)]) * rope.inv_freq[static_cast<size_t>(i)];
        rt.cs[static_cast<size_t>(r * half + i)] = std::cos(angle) * rope.attention_scaling;
        rt.cs[static_cast<size_t>(rows * half + r * half + i)] = std::sin(angle) * rope.attention_scaling;
      }
    rt.staged = ctx_->stage(rt.cs.data(), rt.cs.size() * 4);
    rt.epoch = ctx_->arena_epoch();  // after stage(), which may have replaced the arena
    rt.inv_freq = rope.inv_freq.data();
    rt.half = half;
    rt.scaling = rope.attention_scaling;
    rt.positions.assign(positions.begin(), positions.end());
  }
  const Staged s = rt.staged;
  struct {
    uint32_t rows, heads, head_dim, cols, x_off, cs_off;
  } pc{u32(rows), u32(heads), u32(head_dim), u32(x.cols()), elem(x, 4), u32(static_cast<int64_t>(s.offset / 4))};
  const Pipeline& p = ctx_->pipeline("rope", "rope", {wg_}, 2, sizeof(pc), 1u << 0);
  ctx_->dispatch(p, {&buffer_of(x), s.buffer}, &pc, ceil_div(heads * half, wg_), u32(rows));
  if (heads * half == 0) return;  // nothing was recorded
  ropes_[0] = std::move(ropes_[1]);
  ropes_[1] = PendingRope{ctx_->serial_back(0), x.buffer, pc.x_off, rows, x.cols(), head_dim, s};
}

bool VulkanBackend::fuse_rope_kv_store(const DeviceTensor& k, const DeviceTensor& v, const Staged& pos, int64_t rows,
                                       DeviceTensor& k_cache, DeviceTensor& v_cache) {
  const PendingRope& rq = ropes_[0];
  const PendingRope& rk = ropes_[1];
  if (!fuse_ || !rq.x || !rk.x || rk.serial == 0 || rq.serial == 0 || rk.serial != ctx_->serial_back(0) ||
      rq.serial != ctx_->serial_back(1))
    return false;
  const Buffer& qb = *static_cast<const Buffer*>(rq.x.get());
  const Buffer& kb = buffer_of(k);
  const Buffer& vb = buffer_of(v);
  const Buffer& kcb = buffer_of(k_cache);
  const Buffer& vcb = buffer_of(v_cache);
  const int64_t width = k.cols(), hd = rk.head_dim;
  // Same rows, rotary table and head size; rope(k) rotated exactly the k being stored; q, k, v
  // and both caches in distinct buffers (no aliasing between what one item reads and writes);
  // half the head even (an item owns two adjacent pairs); the table and positions in one arena.
  if (rk.x.get() != &kb || rk.x_off != elem(k, 4) || rk.cols != width || rk.rows != rows || rq.rows != rows ||
      rq.head_dim != hd || !rq.same_table(rk) || hd % 4 != 0 || rq.cols % hd != 0 || width % hd != 0 ||
      &qb == &kb || &vb == &qb || &vb == &kb || &kcb == &qb || &kcb == &kb || &kcb == &vb || &vcb == &qb ||
      &vcb == &kb || &vcb == &vb || &kcb == &vcb || pos.buffer != rq.cs.buffer)
    return false;
  const Pipeline& pr = ctx_->pipeline("rope", "rope", {wg_}, 2, 24, 1u << 0);
  if (!ctx_->pop_last(pr, rk.serial)) return false;
  if (!ctx_->pop_last(pr, rq.serial)) fail(ErrorKind::kInternal, "Vulkan: rope fusion lost the rope of q");
  struct {
    uint32_t rows, q_heads, k_heads, head_dim, q_cols, width, q_off, k_off, v_off, kc_off2, vc_off2, cs_off, pos_off;
  } pc{u32(rows),     u32(rq.cols / hd), u32(width / hd),   u32(hd),           u32(rq.cols),
       u32(width),    rq.x_off,          elem(k, 4),        elem(v, 4),        elem(k_cache, 4),
       elem(v_cache, 4), u32(static_cast<int64_t>(rq.cs.offset / 4)), u32(static_cast<int64_t>(pos.offset / 4))};
  const Pipeline& p = ctx_->pipeline("rope_kv_store", "rope_kv_store", {wg_}, 6, sizeof(pc),
                                     (1u << 0) | (1u << 1) | (1u << 3) | (1u << 4));
  const int64_t items = (rq.cols / hd + width / hd) * (hd / 4);
  ctx_->dispatch(p, {&qb, &kb, &vb, &kcb, &vcb, pos.buffer}, &pc, ceil_div(items, wg_), u32(rows));
  ropes_[0] = {};
  ropes_[1] = {};
  return true;
}

bool VulkanBackend::fuse_out_rope_kv(const DeviceTensor& k, const DeviceTensor& v, const Staged& pos, int64_t rows,
                                     DeviceTensor& k_cache, DeviceTensor& v_cache) {
  const PendingRope& rq = ropes_[0];
  const PendingRope& rk = ropes_[1];
  const PendingOut &oq = outs_[0], &ok = outs_[1], &ov = outs_[2];
  if (!fuse_ || !fuse_qkv_ || ctx_->limits().maxPerStageDescriptorStorageBuffers < 12 || !rq.x || !rk.x ||
      rq.serial == 0 || rk.serial == 0 || rk.serial != ctx_->serial_back(0) || rq.serial != ctx_->serial_back(1) ||
      !oq.pipeline || !ok.pipeline || !ov.pipeline || oq.serial == 0 || ov.serial != ctx_->serial_back(2) ||
      ok.serial != ctx_->serial_back(3) || oq.serial != ctx_->serial_back(4))
    return false;
  const int64_t width = k.cols(), hd = rk.head_dim;
  const Buffer &kb = buffer_of(k), &vb = buffer_of(v), &kcb = buffer_of(k_cache), &vcb = buffer_of(v_cache);
  const Buffer& qb = *static_cast<const Buffer*>(rq.x.get());
  // The three transforms wrote exactly q, k and v (bias-free, every column), the two ropes
  // rotated q and k in place with one table, and every head lies in one 128-block; q, k, v, the
  // caches and the products' scratch are distinct buffers.
  auto whole = [&](const PendingOut& o, const Buffer& b, uint32_t off, int64_t cols) {
    return !o.bias && o.out_f == o.n && static_cast<int64_t>(o.n) == cols && o.rows == rows && o.y.get() == &b &&
           o.y_off == off;
  };
  if (!whole(oq, qb, rq.x_off, rq.cols) || !whole(ok, kb, elem(k, 4), width) || !whole(ov, vb, elem(v, 4), width) ||
      rk.x.get() != &kb || rk.x_off != elem(k, 4) || rk.cols != width || rk.rows != rows || rq.rows != rows ||
      rq.head_dim != hd || !rq.same_table(rk) || hd <= 0 || hd % 2 != 0 || 128 % hd != 0 ||
      ok.splits != ov.splits || ok.split_stride != ov.split_stride || pos.buffer != rq.cs.buffer ||
      k_cache.offset % 4 != 0 || v_cache.offset % 4 != 0)
    return false;
  const std::array<const Buffer*, 5> outs = {&qb, &kb, &vb, &kcb, &vcb};
  for (size_t i = 0; i < outs.size(); ++i) {
    for (size_t j = i + 1; j < outs.size(); ++j)
      if (outs[i] == outs[j]) return false;
    if (outs[i] == oq.z || outs[i] == ok.z || outs[i] == ov.z) return false;
  }
  const PendingOut q_out = oq, k_out = ok, v_out = ov;
  const Pipeline& pr = ctx_->pipeline("rope", "rope", {wg_}, 2, 24, 1u << 0);
  if (!ctx_->pop_last(pr, rk.serial)) return false;
  if (!ctx_->pop_last(pr, rq.serial) || !ctx_->pop_last(*v_out.pipeline, v_out.serial) ||
      !ctx_->pop_last(*k_out.pipeline, k_out.serial) || !ctx_->pop_last(*q_out.pipeline, q_out.serial))
    fail(ErrorKind::kInternal, "Vulkan: the q/k/v tail fusion lost a command");
  struct {
    uint32_t rows, nq, nk, head_dim, q_splits, q_stride, kv_splits, kv_stride;
    uint32_t q_off, k_off, v_off, kc_off2, vc_off2, cs_off, pos_off;
  } pc{u32(rows),        q_out.n,         k_out.n,         u32(hd),
       q_out.splits,     q_out.split_stride, k_out.splits, k_out.split_stride,
       rq.x_off,         elem(k, 4),      elem(v, 4),      elem(k_cache, 4),
       elem(v_cache, 4), u32(static_cast<int64_t>(rq.cs.offset / 4)), u32(static_cast<int64_t>(pos.offset / 4))};
  const Pipeline& p = ctx_->pipeline("exl3_out_rope_kv", "exl3_out_rope_kv", {}, 12, sizeof(pc),
                                     (1u << 6) | (1u << 7) | (1u << 8) | (1u << 9) | (1u << 10));
  auto buf = [](const std::shared_ptr<DeviceBuffer>& b) { return static_cast<const Buffer*>(b.get()); };
  ctx_->dispatch(p,
                 {q_out.z, k_out.z, v_out.z, buf(q_out.svh), buf(k_out.svh), buf(v_out.svh), &qb, &kb, &vb, &kcb,
                  &vcb, pos.buffer},
                 &pc, (q_out.n + 2 * k_out.n) / 128, u32(rows));
  ropes_[0] = {};
  ropes_[1] = {};
  outs_[0] = outs_[1] = outs_[2] = {};
  return true;
}

void VulkanBackend::kv_store(const DeviceTensor& k, const DeviceTensor& v, std::span<const int32_t> positions,
                             DeviceTensor& k_cache, DeviceTensor& v_cache) {
  const int64_t width = k.cols();
  if (positions.empty()) return;
  if (width % 2 != 0 || k_cache.offset % 4 != 0 || v_cache.offset % 4 != 0)
    fail(ErrorKind::kUnsupported, "Vulkan backend: kv_store needs an even cache width (got {})", width);
  const Staged s = ctx_->stage(positions.data(), positions.size() * 4);
  if (fuse_out_rope_kv(k, v, s, static_cast<int64_t>(positions.size()), k_cache, v_cache)) return;
  if (fuse_rope_kv_store(k, v, s, static_cast<int64_t>(positions.size()), k_cache, v_cache)) return;
  struct {
    uint32_t width, k_off, v_off, kc_off2, vc_off2, pos_off;
  } pc{u32(width), elem(k, 4), elem(v, 4), elem(k_cache, 4), elem(v_cache, 4), u32(static_cast<int64_t>(s.offset / 4))};
  const Pipeline& p = ctx_->pipeline("kv_store", "kv_store", {wg_}, 5, sizeof(pc), (1u << 2) | (1u << 3));
  ctx_->dispatch(p, {&buffer_of(k), &buffer_of(v), &buffer_of(k_cache), &buffer_of(v_cache), s.buffer}, &pc,
                 ceil_div(width / 2, wg_), u32(static_cast<int64_t>(positions.size())));
}

size_t flash_shared_bytes(FlashTiles t, int64_t head_dim) {
  const size_t d4 = static_cast<size_t>((head_dim + 3) / 4), br = t.rows, bc = t.keys;
  return 16 * (br + bc) * (d4 + 1) + 4 * br * (bc + 1) + 4 * 128 + 12 * br + 8;
}

void VulkanBackend::set_flash_tiles(FlashTiles t) {
  const bool rows_ok = t.rows == 16 || t.rows == 32 || t.rows == 64 || t.rows == 128;
  if ((t.rows != 0 || t.keys != 0) && (!rows_ok || t.keys == 0 || t.keys % 8 != 0 || t.keys % (128 / t.rows) != 0))
    fail(ErrorKind::kInvalidArgument, "Vulkan: attention_flash tiles {}x{}: rows must be 16, 32, 64 or 128 and keys a "
         "positive multiple of 8 and of 128 / rows", t.rows, t.keys);
  flash_forced_ = t;
}

FlashTiles VulkanBackend::flash_tiles(int64_t head_dim) const {
  const size_t limit = ctx_->limits().maxComputeSharedMemorySize;
  if (flash_forced_.rows != 0) return flash_shared_bytes(flash_forced_, head_dim) <= limit ? flash_forced_ : FlashTiles{};
  // Largest first: BR x BC sets the K/V reuse per shared load (scores per thread: BR/16 x BC/8).
  // 64 x 32 fits 64 KiB devices at head_dim 128, 32 x 32 48 KiB (NVIDIA), 32 x 16 lavapipe's 32.
  static constexpr FlashTiles kPresets[] = {{64, 32}, {32, 32}, {32, 16}, {16, 32}, {16, 16}, {16, 8}};
  for (FlashTiles t : kPresets)
    if (flash_shared_bytes(t, head_dim) <= limit) return t;
  return {};
}

void VulkanBackend::attention(const DeviceTensor& q, const DeviceTensor& k_cache, const DeviceTensor& v_cache,
                              std::span<const int32_t> positions, const AttentionParams& ap, DeviceTensor& out) {
  constexpr uint32_t kWg = 64;
  if (positions.empty()) return;
  if (ap.head_dim > 4 * kWg)
    fail(ErrorKind::kUnsupported, "Vulkan backend: attention supports head_dim <= {} (got {})", 4 * kWg, ap.head_dim);
  const int64_t rows = static_cast<int64_t>(positions.size());
  const Staged s = ctx_->stage(positions.data(), positions.size() * 4);
  last_decode_splits_ = 0;
  if (rows < kFlashMinRows && attention_decode(q, k_cache, v_cache, positions, s, ap, out)) return;
  struct {
    uint32_t items, n_heads, group, head_dim, kv_width, window;
    uint32_t q_off, kc_off, vc_off, pos_off, out_off;
    float scale;
  } pc{u32(rows * ap.n_heads), u32(ap.n_heads),  u32(ap.n_heads / ap.n_kv_heads),
       u32(ap.head_dim),        u32(ap.n_kv_heads * ap.head_dim), u32(ap.sliding_window),
       elem(q, 4),              elem(k_cache, 2), elem(v_cache, 2),
       u32(static_cast<int64_t>(s.offset / 4)), elem(out, 4), ap.scale};
  const std::array<const Buffer*, 5> bufs = {&buffer_of(q), &buffer_of(k_cache), &buffer_of(v_cache), s.buffer,
                                           &buffer_of(out)};
  const FlashTiles tiles = flash_ && rows >= kFlashMinRows ? flash_tiles(ap.head_dim) : FlashTiles{};
  if (flash_forced_.rows != 0 && flash_ && rows >= kFlashMinRows && tiles.rows == 0)
    fail(ErrorKind::kUnsupported, "Vulkan: attention_flash tiles {}x{} need {} bytes of shared memory at head_dim {} "
         "(device: {})", flash_forced_.rows, flash_forced_.keys, flash_shared_bytes(flash_forced_, ap.head_dim),
         ap.head_dim, ctx_->limits().maxComputeSharedMemorySize);
  if (tiles.rows == 0) {
    const Pipeline& p = ctx_->pipeline("attention", "attention", {kWg}, 5, sizeof(pc), 1u << 4);
    ctx_->dispatch_flat(p, bufs, &pc, static_cast<uint64_t>(rows * ap.n_heads));
    return;
  }
  if (attention_flash_coop(q, k_cache, v_cache, s, ap, rows, out)) return;
  // A workgroup: BR vectors of one kv head = heads_per_block heads of its group x BR /
  // heads_per_block consecutive rows (all heads of the group when it fits: K/V tiles are shared
  // by the whole group).
  const int64_t group = ap.n_heads / ap.n_kv_heads;
  const int64_t hpb = std::min<int64_t>(group, tiles.rows), head_blocks = (group + hpb - 1) / hpb;
  const int64_t row_blocks = (rows + (tiles.rows / hpb) - 1) / (tiles.rows / hpb);
  struct {
    decltype(pc) base;
    uint32_t heads_per_block, head_blocks, row_blocks;
  } fc{pc, u32(hpb), u32(head_blocks), u32(row_blocks)};
  fc.base.items = u32(rows);  // `rows` in attention_flash's P
  const uint32_t d4 = u32((ap.head_dim + 3) / 4);
  const std::string name = fmt::format("attention_flash_r{}_c{}_d{}", tiles.rows, tiles.keys, d4 * 4);
  const Pipeline& p = ctx_->pipeline(name, "attention_flash", {128, tiles.rows, tiles.keys, d4}, 5, sizeof(fc), 1u << 4);
  ctx_->dispatch_flat(p, bufs, &fc, static_cast<uint64_t>(row_blocks * ap.n_kv_heads * head_blocks));
}

bool VulkanBackend::attention_decode(const DeviceTensor& q, const DeviceTensor& k_cache, const DeviceTensor& v_cache,
                                     std::span<const int32_t> positions, const Staged& pos, const AttentionParams& ap,
                                     DeviceTensor& out) {
  const int64_t d = ap.head_dim, d4 = d / 4, group = ap.n_heads / ap.n_kv_heads;
  if (!decode_ || d % 4 != 0 || d4 > kDecodeWg || elem(k_cache, 2) % 4 != 0 || elem(v_cache, 2) % 4 != 0) return false;
  // Lanes per key C: about 8 dims per lane (two 8-byte chunks), at least 4, within a subgroup.
  const int64_t c_cap = std::min<int64_t>(ctx_->info().subgroup_size, 32);
  int64_t c = 4;
  while (c < (d4 + 1) / 2 && 2 * c <= c_cap) c *= 2;
  // Heads per workgroup: the whole GQA group where the query registers allow (HB x NV vec4s).
  const int64_t nv = (d4 + c - 1) / c, hb = std::min<int64_t>({group, 8, 16 / nv});
  const int64_t head_blocks = (group + hb - 1) / hb;
  const int64_t kp = kDecodeWg / c, vq = kDecodeWg / d4, t = kDecodeTileKeys;
  const size_t shared = 4 * static_cast<size_t>(2 * hb * t + 2 * kp * hb + vq * hb + hb) +
                        16 * static_cast<size_t>(vq * hb * d4);
  if (shared > ctx_->limits().maxComputeSharedMemorySize) return false;
  // Splits: the longest key range of the rows over enough workgroups to fill the device
  // (kDecodeTargetGroups), each at least one tile; short rows leave trailing splits empty.
  // split_keys and splits enter the push constants, so a replayed decode step is re-recorded
  // only when they change (at most every split_keys tokens).
  const int64_t rows = static_cast<int64_t>(positions.size());
  int64_t n_max = 1;
  for (const int32_t last : positions) {
    const int64_t first = ap.sliding_window > 0 ? std::max<int64_t>(0, last + 1 - ap.sliding_window) : 0;
    n_max = std::max<int64_t>(n_max, last + 1 - first);
  }
  const int64_t base = rows * ap.n_kv_heads * head_blocks;
  const int64_t want = std::max<int64_t>(1, (kDecodeTargetGroups + base - 1) / base);
  const int64_t split_keys = std::max<int64_t>(t, ((n_max + want - 1) / want + t - 1) / t * t);
  const int64_t splits = (n_max + split_keys - 1) / split_keys;
  const int64_t ml_off = rows * ap.n_heads * splits * d;
  Buffer& part = scratch(kScratchAttn, static_cast<size_t>(std::max<int64_t>(4, ml_off + 2 * rows * ap.n_heads * splits)) * 4);
  struct {
    uint32_t rows, n_heads, group, kv_width4, window;
    uint32_t q_off, kc_off4, vc_off4, pos_off, out_off;
    float scale;
    uint32_t splits, split_keys, head_blocks, ml_off;
  } pc{u32(rows),
       u32(ap.n_heads),
       u32(group),
       u32(ap.n_kv_heads * d4),
       u32(ap.sliding_window),
       elem(q, 4),
       elem(k_cache, 2) / 4,
       elem(v_cache, 2) / 4,
       u32(static_cast<int64_t>(pos.offset / 4)),
       elem(out, 4),
       ap.scale,
       u32(splits),
       u32(split_keys),
       u32(head_blocks),
       u32(ml_off)};
  const std::string name = fmt::format("attention_decode_d{}_c{}_h{}", d, c, hb);
  const Pipeline& p = ctx_->pipeline(name, "attention_decode", {kDecodeWg, u32(d4), u32(c), u32(hb), u32(t)}, 6,
                                     sizeof(pc), (1u << 4) | (1u << 5));
  ctx_->dispatch_flat(p, {&buffer_of(q), &buffer_of(k_cache), &buffer_of(v_cache), pos.buffer, &buffer_of(out), &part},
                      &pc, static_cast<uint64_t>(base * splits));
  last_decode_splits_ = splits;
  if (splits == 1) return true;
  struct {
    uint32_t items, head_dim, splits, ml_off, out_off;
  } mc{u32(rows * ap.n_heads * d), u32(d), u32(splits), u32(ml_off), elem(out, 4)};
  const Pipeline& pm = ctx_->pipeline("attention_decode_merge", "attention_decode_merge", {wg_}, 2, sizeof(mc), 1u << 1);
  ctx_->dispatch_flat(pm, {&part, &buffer_of(out)}, &mc, ceil_div(mc.items, wg_));
  last_merge_ = PendingMerge{ctx_->serial_back(0), &pm, &part, out.buffer, mc.out_off, u32(ap.n_heads), u32(d),
                             u32(splits), u32(ml_off), rows};
  return true;
}

bool VulkanBackend::fuse_out_silu(const DeviceTensor& gate, const DeviceTensor& up, DeviceTensor& out) {
  const PendingOut &og = outs_[1], &ou = outs_[2];
  const int64_t n = shape_numel(gate.shape);
  auto matches = [&](const PendingOut& o, const DeviceTensor& t) {
    return o.pipeline && o.serial != 0 && !o.bias && o.y.get() == t.buffer.get() && o.y_off == elem(t, 4) &&
           o.rows * o.out_f == n;
  };
  if (!fuse_ || !fuse_silu_ || og.serial != ctx_->serial_back(1) || ou.serial != ctx_->serial_back(0) ||
      !matches(og, gate) || !matches(ou, up) || og.n != ou.n || og.out_f != ou.out_f || og.splits != ou.splits ||
      og.split_stride != ou.split_stride || og.rows != ou.rows)
    return false;
  // out must not be read by the transforms it replaces.
  if (out.buffer.get() == og.z || out.buffer.get() == ou.z) return false;
  const Buffer &zg = *og.z, &zu = *ou.z;
  if (!ctx_->pop_last(*ou.pipeline, ou.serial)) return false;
  if (!ctx_->pop_last(*og.pipeline, og.serial))
    fail(ErrorKind::kInternal, "Vulkan: MLP fusion lost the gate transform");
  struct {
    uint32_t n, out_f, splits, split_stride, yg_off, yu_off, out_off;
    float zero;
  } pc{og.n, og.out_f, og.splits, og.split_stride, og.y_off, ou.y_off, elem(out, 4), 0.0f};
  const Pipeline& p =
      ctx_->pipeline("exl3_out_silu", "exl3_out_silu", {}, 7, sizeof(pc), (1u << 4) | (1u << 5) | (1u << 6));
  ctx_->dispatch(p, {&zg, &zu, static_cast<const Buffer*>(og.svh.get()), static_cast<const Buffer*>(ou.svh.get()),
                     &buffer_of(gate), &buffer_of(up), &buffer_of(out)},
                 &pc, og.n / 128, u32(og.rows));
  outs_[0] = outs_[1] = outs_[2] = {};
  return true;
}

void VulkanBackend::silu_mul(const DeviceTensor& gate, const DeviceTensor& up, DeviceTensor& out) {
  if (fuse_out_silu(gate, up, out)) return;
  const int64_t n = shape_numel(gate.shape);
  struct {
    uint32_t n, gate_off, up_off, out_off;
  } pc{u32(n), elem(gate, 4), elem(up, 4), elem(out, 4)};
  const Pipeline& p = ctx_->pipeline("silu_mul", "silu_mul", {wg_}, 3, sizeof(pc), 1u << 2);
  ctx_->dispatch_flat(p, {&buffer_of(gate), &buffer_of(up), &buffer_of(out)}, &pc, ceil_div(n, wg_));
}

bool VulkanBackend::fuse_out_resid(DeviceTensor& x, const DeviceTensor& y) {
  const PendingOut& o = outs_[2];
  const int64_t rows = x.rows(), cols = x.cols();
  // The transform wrote exactly y (every column: out_f == n) as the last command; x is another
  // buffer than y and the product's scratch; the block sums fit norm_sums_.
  if (!fuse_ || !fuse_resid_ || !o.pipeline || o.serial == 0 || o.serial != ctx_->serial_back(0) ||
      o.y.get() != y.buffer.get() || o.y_off != elem(y, 4) || o.rows != rows || o.out_f != o.n ||
      static_cast<int64_t>(o.n) != cols || y.rows() != rows || y.cols() != cols || x.buffer.get() == y.buffer.get() ||
      x.buffer.get() == o.z || cols / 128 > kNormSumsBlocks || rows > kGemvMaxRows)
    return false;
  if (!norm_sums_) norm_sums_ = ctx_->create_buffer(static_cast<size_t>(kGemvMaxRows * kNormSumsBlocks) * 4);
  const Buffer& z = *o.z;
  const auto svh = o.svh, bias = o.bias_buf;
  const PendingOut saved = o;
  if (!ctx_->pop_last(*o.pipeline, o.serial)) return false;
  struct {
    uint32_t n, out_f, z_off, y_off, has_bias, splits, split_stride, x_off;
  } pc{saved.n, saved.out_f, 0, saved.y_off, bias ? 1u : 0u, saved.splits, saved.split_stride, elem(x, 4)};
  const Pipeline& p = ctx_->pipeline("exl3_hadamard_out_resid", "exl3_hadamard_out", {1}, 6, sizeof(pc),
                                     (1u << 3) | (1u << 4) | (1u << 5));
  const Buffer* sv = static_cast<const Buffer*>(svh.get());
  ctx_->dispatch(p, {&z, sv, bias ? static_cast<const Buffer*>(bias.get()) : sv, &buffer_of(y), &buffer_of(x),
                     norm_sums_.get()},
                 &pc, saved.n / 128, u32(rows));
  outs_[0] = outs_[1] = outs_[2] = {};
  last_add_ = {};
  last_resid_ = PendingResid{ctx_->serial_back(0), x.buffer, pc.x_off, rows, cols};
  return true;
}

void VulkanBackend::add(DeviceTensor& x, const DeviceTensor& y) {
  if (fuse_out_resid(x, y)) return;
  const int64_t n = shape_numel(x.shape);
  struct {
    uint32_t n, x_off, y_off;
  } pc{u32(n), elem(x, 4), elem(y, 4)};
  const Pipeline& p = ctx_->pipeline("add", "add", {wg_}, 2, sizeof(pc), 1u << 0);
  ctx_->dispatch_flat(p, {&buffer_of(x), &buffer_of(y)}, &pc, ceil_div(n, wg_));
  if (n > 0) last_add_ = PendingAdd{ctx_->serial_back(0), x.buffer, y.buffer, pc.x_off, pc.y_off, n};
}

}  // namespace vk

std::vector<DeviceInfo> list_vulkan_devices() {
  try {
    return vk::Context::list_devices();
  } catch (const std::exception& e) {
    log_warn("Vulkan: listing devices failed: {}", e.what());
    return {};
  }
}

std::unique_ptr<Backend> make_vulkan_backend(int index) { return std::make_unique<vk::VulkanBackend>(index); }

}  // namespace trellis
