// backends/vulkan/vk_linear.cpp: linear layers on the Vulkan backend, dense fp16 and EXL3.
//
// EXL3 dataflow (spec 4.4, fp32 activations like the CPU backend):
//   xh = exl3_hadamard_in(x zero-padded to k, suh)          [m, k]   scratch 0
//        (m <= kGemvMaxRows by default: no pass of its own, exl3_gemv*_hin computes each
//        workgroup's slab of xh in shared memory, bitwise the same)
//   z  = xh · Ŵ                                              [m, n]   scratch 1
//        m <= kGemvMaxRows: exl3_gemv_k<K>_<cb> decoding the trellis on the fly, split over
//        k into up to kGemvMaxSplits partial sums when n alone gives too few workgroups
//        otherwise: exl3_decode_k<K>_<cb> -> Ŵᵀ fp16 (scratch 0), then the prefill GEMM
//        (gemm_f16: matmul_f16_coop3/coop2/coop where cooperative matrices exist, else tiled)
//   y  = exl3_hadamard_out(sum of z partials, svh) + bias, padded columns dropped
// The GEMM path decodes Ŵ once per call (k·n work) and is exact, so the product differs from the
// GEMV path only by summation order.
#include <algorithm>
#include <array>
#include <cstring>

#include "backends/vulkan/vk_backend.h"
#include "core/error.h"
#include "core/fp16.h"
#include "core/log.h"
#include "exl3/hadamard.h"
#include "exl3/tile.h"

namespace trellis::vk {
namespace {

// Variant names, by their parameters (STYLE.md habit 3).
std::string variant(const char* family, int K, exl3::Codebook cb) {
  return fmt::format("{}_k{}_{}", family, K, exl3::codebook_name(cb));
}

void check_exl3(const exl3::Exl3LinearView& v, const std::string& name) {
  if (v.k <= 0 || v.n <= 0 || v.k % exl3::kHadamardSize != 0 || v.n % exl3::kHadamardSize != 0)
    fail(ErrorKind::kInvalidArgument, "EXL3 layer {}: shape {} x {} is not a positive multiple of 128", name, v.k, v.n);
  if (v.K < exl3::kMinK || v.K > exl3::kMaxK)
    fail(ErrorKind::kInvalidArgument, "EXL3 layer {}: K = {}; expected 1..8", name, v.K);
  if (static_cast<int>(v.codebook) > static_cast<int>(exl3::Codebook::kMul1))
    fail(ErrorKind::kInvalidArgument, "EXL3 layer {}: unknown codebook id {}", name, static_cast<int>(v.codebook));
  if (!v.trellis) fail(ErrorKind::kInvalidArgument, "EXL3 layer {}: no trellis", name);
}

size_t trellis_bytes(const exl3::Exl3LinearView& v) {
  return static_cast<size_t>((v.k / 16) * (v.n / 16)) * static_cast<size_t>(exl3::tile_bytes(v.K));
}

std::vector<float> fp16_vector(const void* p, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = load_float(static_cast<const std::byte*>(p), DType::kF16, static_cast<size_t>(i));
  return v;
}

}  // namespace

std::unique_ptr<LinearWeights> VulkanBackend::prepare_linear(const LinearSource& src) {
  auto read_bias = [&](int64_t n) -> std::shared_ptr<Buffer> {
    if (!src.bias) return nullptr;
    std::vector<float> b(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) b[static_cast<size_t>(j)] = load_float(src.bias->data, src.bias->dtype, static_cast<size_t>(j));
    return upload_floats(b);
  };
  if (src.exl3) {
    const exl3::Exl3LinearView& v = *src.exl3;
    check_exl3(v, src.name);
    if (!v.suh || !v.svh) fail(ErrorKind::kInvalidArgument, "EXL3 layer {}: missing suh/svh", src.name);
    auto l = std::make_unique<Exl3Linear>();
    l->in_features = src.in_features;
    l->out_features = src.out_features;
    l->k = v.k;
    l->n = v.n;
    l->K = v.K;
    l->codebook = v.codebook;
    l->trellis = upload_bytes(v.trellis, trellis_bytes(v));  // any source alignment: memcpy
    l->suh = upload_floats(fp16_vector(v.suh, v.k));
    l->svh = upload_floats(fp16_vector(v.svh, v.n));
    l->bias = read_bias(src.out_features);
    const std::vector<uint32_t> zeros(static_cast<size_t>(v.n / 128), 0u);
    l->counters = upload_bytes(zeros.data(), zeros.size() * 4);
    l->device_bytes = trellis_bytes(v) + static_cast<uint64_t>(v.k + v.n) * 4 + zeros.size() * 4;
    return l;
  }
  TRELLIS_CHECK(src.dense.has_value());
  const TensorView& w = *src.dense;
  auto l = std::make_unique<DenseLinear>();
  l->in_features = src.in_features;
  l->out_features = src.out_features;
  const size_t n = static_cast<size_t>(w.numel());
  if (w.dtype == DType::kF16) {
    l->weight = upload_bytes(w.data, n * 2);
  } else {
    std::vector<uint16_t> h(n);
    for (size_t i = 0; i < n; ++i) h[i] = fp32_to_fp16(load_float(w.data, w.dtype, i));
    l->weight = upload_bytes(h.data(), n * 2);
    log_warn_once("vulkan-dense-convert", fmt::format("Vulkan backend: converting {} weights to fp16", dtype_name(w.dtype)));
  }
  l->bias = read_bias(src.out_features);
  l->device_bytes = n * 2;
  return l;
}

namespace {

struct MatmulPush {
  uint32_t m, in_f, out_f, w_off, x_off, y_off, b_off, has_bias;
};
struct MatmulCoopPush {  // matmul_f16_coop.comp's P
  uint32_t m, in_f, out_f, w_off, a_off, a_stride, y_off, b_off, has_bias;
};

}  // namespace

void VulkanBackend::record_convert_f16(const Buffer& x, uint32_t x_off, const Buffer& a16, int64_t m, int64_t k,
                                       int64_t stride) {
  if (m > static_cast<int64_t>(ctx_->limits().maxComputeWorkGroupCount[1]))
    fail(ErrorKind::kUnsupported, "Vulkan: {} rows exceed the device's grid for convert_f16", m);
  TRELLIS_CHECK(stride % 2 == 0 && stride >= k);
  struct {
    uint32_t k, stride, x_off, a_off2;
  } cv{u32(k), u32(stride), x_off, 0};
  const Pipeline& c = ctx_->pipeline("convert_f16", "convert_f16", {wg_}, 2, sizeof(cv), 1u << 1);
  ctx_->dispatch(c, {&x, &a16}, &cv, ceil_div(stride / 2, wg_), u32(m));
}

std::vector<uint16_t> VulkanBackend::convert_f16_rows(const float* x, int64_t m, int64_t k) {
  const int64_t stride = (k + 1) / 2 * 2;
  auto xb = upload_bytes(x, static_cast<size_t>(m * k) * 4);
  auto a16 = ctx_->create_buffer(static_cast<size_t>(m * stride) * 2);
  record_convert_f16(*xb, 0, *a16, m, k, stride);
  std::vector<float> f(static_cast<size_t>(m * stride));
  download(DeviceTensor{a16, 0, DType::kF16, {m, stride}}, f.data());
  std::vector<uint16_t> h(f.size());
  for (size_t i = 0; i < f.size(); ++i) h[i] = fp32_to_fp16(f[i]);  // exact: f holds fp16 values
  return h;
}

std::string coop2_shape_name(Coop2Shape s) {
  return fmt::format("{}x{}x{}", 16 * s.wm * s.fm, 16 * s.wn * s.fn, s.bk);
}

size_t coop2_shared_bytes(Coop2Shape s) {
  const size_t bm = 16 * s.wm * s.fm, bn = 16 * s.wn * s.fn;
  return 2 * (bm + bn) * (s.bk + 8) * 2 + static_cast<size_t>(s.wm * s.wn) * 1024;
}

bool VulkanBackend::coop2_shape_fits(size_t i) const {
  if (i >= std::size(kCoop2Shapes)) return false;
  const Coop2Shape& s = kCoop2Shapes[i];
  const uint32_t wg = s.wm * s.wn * (ctx_->coop().workgroup / 4);
  return coop2_shared_bytes(s) <= ctx_->limits().maxComputeSharedMemorySize &&
         wg <= ctx_->limits().maxComputeWorkGroupInvocations && wg <= ctx_->limits().maxComputeWorkGroupSize[0];
}

std::string coop3_variant_name(Coop3Variant v) {
  return fmt::format("{}x{}x{}_w{}x{}{}", 16 * v.wm * v.fm, 16 * v.wn * v.fn, v.bk, v.wm, v.wn, v.half_shared ? "_h" : "");
}

size_t coop3_shared_bytes(Coop3Variant v) {  // version 2's staging and output layout
  return coop2_shared_bytes(Coop2Shape{v.wm, v.wn, v.fm, v.fn, v.bk});
}

bool VulkanBackend::coop3_variant_fits(size_t i) const {
  if (i >= std::size(kCoop3Variants)) return false;
  const Coop3Variant& v = kCoop3Variants[i];
  const uint32_t wg = 32 * v.wm * v.wn;
  return ctx_->coop().workgroup == 4 * 32 && coop3_shared_bytes(v) <= ctx_->limits().maxComputeSharedMemorySize &&
         wg <= ctx_->limits().maxComputeWorkGroupInvocations && wg <= ctx_->limits().maxComputeWorkGroupSize[0];
}

void VulkanBackend::set_coop3_variant(size_t i) {
  if (i >= std::size(kCoop3Variants))
    fail(ErrorKind::kInvalidArgument, "Vulkan: matmul_f16_coop3 variant {} (of {})", i, std::size(kCoop3Variants));
  if (ctx_->coop().workgroup != 0 && !coop3_variant_fits(i))
    fail(ErrorKind::kUnsupported,
         "Vulkan device '{}': matmul_f16_coop3 {} needs subgroup size 32 (workgroup {}) and {} bytes of shared memory "
         "({} available)",
         ctx_->info().name, coop3_variant_name(kCoop3Variants[i]), ctx_->coop().workgroup,
         coop3_shared_bytes(kCoop3Variants[i]), ctx_->limits().maxComputeSharedMemorySize);
  coop3_variant_ = i;
}

void VulkanBackend::set_coop_kernel(int version) {
  if (version < 1 || version > 3)
    fail(ErrorKind::kInvalidArgument, "Vulkan: cooperative-matrix GEMM version {} (1, 2 or 3)", version);
  coop_kernel_ = version;
}

void VulkanBackend::set_coop2_shape(size_t i) {
  if (i >= std::size(kCoop2Shapes))
    fail(ErrorKind::kInvalidArgument, "Vulkan: matmul_f16_coop2 shape {} (of {})", i, std::size(kCoop2Shapes));
  if (ctx_->coop().workgroup != 0 && !coop2_shape_fits(i))
    fail(ErrorKind::kUnsupported, "Vulkan device '{}': matmul_f16_coop2 {} needs {} bytes of shared memory ({} available)",
         ctx_->info().name, coop2_shape_name(kCoop2Shapes[i]), coop2_shared_bytes(kCoop2Shapes[i]),
         ctx_->limits().maxComputeSharedMemorySize);
  coop2_shape_ = i;
}

VulkanBackend::CoopGemm VulkanBackend::coop_gemm(int64_t m, int64_t in, int64_t out) {
  if (coop_ == CoopPath::kOff || m < kCoopMinRows) return {};
  // Versions 2 and 3 read 8 halves at a time: rows of W and of the activations must start at
  // multiples of 8 (the activations' stride is padded; W's is `in`).
  const int version = coop_kernel_ >= 2 && in % 8 == 0 ? coop_kernel_ : 1;
  const char* ext = coop_ == CoopPath::kKhr ? "khr" : "nv";
  const char* khr = coop_ == CoopPath::kKhr ? "+khr" : "";
  const Coop2Shape& sh = kCoop2Shapes[coop2_shape_];
  const Coop3Variant& v3 = kCoop3Variants[coop3_variant_];
  std::string shader, name;
  std::vector<uint32_t> spec;
  CoopGemm g;
  g.version = version;
  if (version == 3) {  // tile fixed in the module; 16x16x16 fragments by the shader's defaults
    shader = fmt::format("matmul_f16_coop3_{}{}", coop3_variant_name(v3), khr);
    name = fmt::format("matmul_f16_coop3_{}_{}", coop3_variant_name(v3), ext);
    g.gx = ceil_div(m, 16 * v3.wm * v3.fm);
    g.gy = ceil_div(out, 16 * v3.wn * v3.fn);
  } else if (version == 2) {
    const uint32_t wg = sh.wm * sh.wn * (ctx_->coop().workgroup / 4);
    shader = fmt::format("matmul_f16_coop2{}", khr);
    name = fmt::format("matmul_f16_coop2_{}_{}", coop2_shape_name(sh), ext);
    spec = {wg, sh.wm, sh.wn, sh.fm, sh.fn, sh.bk};
    g.gx = ceil_div(m, 16 * sh.wm * sh.fm);
    g.gy = ceil_div(out, 16 * sh.wn * sh.fn);
  } else {
    shader = fmt::format("matmul_f16_coop{}", khr);
    name = fmt::format("matmul_f16_coop_{}", ext);
    spec = {ctx_->coop().workgroup};
    g.gx = ceil_div(out, 128);
    g.gy = ceil_div(m, 128);
  }
  try {
    g.pipeline = &ctx_->pipeline(name, shader, spec, 4, sizeof(MatmulCoopPush), 1u << 2);
  } catch (const Error& e) {
    log_warn("Vulkan: the {} cooperative-matrix GEMM {} is unusable on '{}' ({}); prefill uses matmul_f16_tiled",
             coop_path_name(coop_), name, ctx_->info().name, e.what());
    coop_ = CoopPath::kOff;
    return {};
  }
  return g;
}

void VulkanBackend::record_coop_gemm(const CoopGemm& g, const Buffer& w, const Buffer& a16, int64_t stride,
                                     const Buffer& y, uint32_t y_off, const Buffer* bias, int64_t m, int64_t in,
                                     int64_t out) {
  TRELLIS_CHECK(g.pipeline && stride >= in && stride % (g.version >= 2 ? 8 : 2) == 0);
  MatmulCoopPush pc{u32(m), u32(in), u32(out), 0, 0, u32(stride), y_off, 0, bias ? 1u : 0u};
  ctx_->dispatch(*g.pipeline, {&w, &a16, &y, bias ? bias : &w}, &pc, g.gx, g.gy);
}

bool VulkanBackend::gemm_coop(const Buffer& w, const Buffer& x, uint32_t x_off, const Buffer& y, uint32_t y_off,
                              const Buffer* bias, int64_t m, int64_t in, int64_t out) {
  const CoopGemm g = coop_gemm(m, in, out);
  if (!g.pipeline) return false;
  // Activations to fp16 once (RNE), rows padded with zeros to an even length (8 for versions 2
  // and 3).
  const int64_t stride = g.version >= 2 ? (in + 7) / 8 * 8 : (in + 1) / 2 * 2;
  Buffer& a16 = scratch(kScratchA16, static_cast<size_t>(m * stride) * 2);
  record_convert_f16(x, x_off, a16, m, in, stride);
  record_coop_gemm(g, w, a16, stride, y, y_off, bias, m, in, out);
  return true;
}

void VulkanBackend::gemm_f16(const Buffer& w, const Buffer& x, uint32_t x_off, const Buffer& y, uint32_t y_off,
                             const Buffer* bias, int64_t m, int64_t in, int64_t out) {
  if (gemm_coop(w, x, x_off, y, y_off, bias, m, in, out)) return;
  MatmulPush pc{u32(m), u32(in), u32(out), 0, x_off, y_off, 0, bias ? 1u : 0u};
  const Buffer* b = bias ? bias : &w;  // bound but unread without a bias
  const Pipeline& p = ctx_->pipeline("matmul_f16_tiled", "matmul_f16_tiled", {}, 4, sizeof(pc), 1u << 2);
  ctx_->dispatch(p, {&w, &x, &y, b}, &pc, ceil_div(out, 64), ceil_div(m, 64));
}

uint32_t VulkanBackend::gemv_columns(int64_t n, int64_t m) const {
  // 4 tiles per warp and slab for m = 1 (loads in flight, activations reused 4 times); 2 for the
  // 8-row variant, whose 8 rows already reuse each decoded weight and whose registers (16
  // accumulators and 8 activations per row and tile) and compile time grow with G.
  // TRELLIS_VULKAN_GEMV_TILES overrides the m = 1 choice (tuning on a new device).
  const int64_t tiles_n = n / 16, want = m == 1 ? gemv_tiles_ : 2;
  for (int64_t g = want; g > 1; g /= 2)
    if (tiles_n % g == 0) return static_cast<uint32_t>(g);
  return 1u;
}

uint32_t VulkanBackend::exl3_splits(const Exl3Linear& w, int64_t m) const {
  // Aim for >= gemv_target_groups_ (kGemvTargetGroups) workgroups; each split keeps every warp
  // of a workgroup busy with at least one slab.
  const int64_t groups = w.n / 16 / gemv_columns(w.n, m), warps = kGemvWg / 32, tiles_k = w.k / 16;
  int64_t splits = std::max<int64_t>(1, gemv_target_groups_ / groups);
  splits = std::min<int64_t>({splits, kGemvMaxSplits, std::max<int64_t>(1, tiles_k / warps)});
  // Split boundaries on 128-blocks (slabs per split, ceil(tiles_k / splits) in the shader, a
  // multiple of 8), so exl3_gemv*_hin can transform each split's slab alone; both GEMV forms use
  // the same splits and so sum the same partials. splits = 1 always qualifies (k % 128 == 0).
  while (splits > 1 && ((tiles_k + splits - 1) / splits) % 8 != 0) --splits;
  return static_cast<uint32_t>(splits);
}

uint32_t VulkanBackend::gemv_hin_floats(const Exl3Linear& w, int64_t m) const {
  if (!gemv_hin_ || m < 1 || m > kGemvMaxRows) return 0;
  const int64_t splits = exl3_splits(w, m), tiles_k = w.k / 16;
  const int64_t per = (tiles_k + splits - 1) / splits;
  const int64_t need = m * 16 * per;  // one pass of min(m, R) = m rows
  uint32_t xs = 512;
  while (xs < need) xs *= 2;  // few pipelines per (K, codebook): powers of two
  const int64_t G = gemv_columns(w.n, m);
  const int64_t red = gemv_subgroup_ ? (kGemvWg / 32) * G * 16 : kGemvWg * G * 2;  // exl3_gemv.glsl's red[]
  const int64_t fo = gemv_fout_ ? kGemvWg + 1 : 0;                                // fo[] and fo_last
  if (xs > kGemvHinMaxFloats || (xs + red + fo) * 4 > ctx_->limits().maxComputeSharedMemorySize) return 0;
  return xs;
}

bool VulkanBackend::gemv_hin_applies(const LinearWeights& lw, int64_t m) const {
  const auto* w = dynamic_cast<const Exl3Linear*>(&lw);
  return w && gemv_hin_floats(*w, m) != 0;
}

uint32_t VulkanBackend::exl3_product_splits(const Exl3Linear& w, int64_t m) const {
  return m <= kGemvMaxRows ? exl3_splits(w, m) : 1;
}

const Pipeline& VulkanBackend::gemv_pipeline(int K, exl3::Codebook cb, uint32_t G, uint32_t R, uint32_t xs,
                                             uint32_t push_bytes, bool fout, bool norm, bool merge) {
  // Module exl3_gemv[_sg][_f16[_dot]][_hin] (exl3_gemv.glsl): the fp16 decode where the device
  // has exact fp16 arithmetic (Context::use_f16), the dot-product byte sum for MUL1 on top where
  // enabled (Context::use_int_dot); all give bitwise the same z. xs != 0: the fused input
  // transform with xs shared floats (binding 3 suh).
  // The module's name is assembled in a fixed buffer and the pipeline looked up by (module,
  // spec) first: the name of the pipeline is formatted only when it is created.
  char buf[48];
  size_t len = 0;
  auto put = [&](std::string_view part) {
    std::memcpy(buf + len, part.data(), part.size());
    len += part.size();
  };
  put(gemv_subgroup_ ? "exl3_gemv_sg" : "exl3_gemv");
  if (ctx_->use_f16()) {
    put("_f16");
    if (cb == exl3::Codebook::kMul1 && ctx_->use_int_dot()) put("_dot");
  }
  if (xs != 0) put("_hin");
  TRELLIS_CHECK(!fout || xs != 0);  // the _fout modules exist for the _hin forms only
  if (fout) put("_fout");
  const std::string_view shader(buf, len);
  TRELLIS_CHECK(!(norm && merge) && (!(norm || merge) || (xs != 0 && !fout)));
  // Specialization ids 0-4, 6 and 7 (exl3_gemv.glsl); id 5 (XS) exists only in the _hin
  // modules, ids 8 (NM) and 9 (AM) only in those without _fout.
  const std::array<uint32_t, 10> spec{kGemvWg, static_cast<uint32_t>(K), static_cast<uint32_t>(cb), G, R, xs,
                                      gemv_prefetch_ ? 1u : 0u, gemv_scalar_add_ ? 1u : 0u, norm ? 1u : 0u,
                                      merge ? 1u : 0u};
  if (const Pipeline* found = ctx_->find_pipeline(shader, spec)) return *found;
  std::string name = variant("exl3_gemv", K, cb) + std::string(shader.substr(std::strlen("exl3_gemv")));
  if (G != 4) name += fmt::format("_g{}", G);
  if (R != 1) name += fmt::format("_r{}", R);
  if (!gemv_prefetch_) name += "_nopf";
  if (xs != 0) name += fmt::format("_x{}", xs);
  if (fout) name += "_fout";
  if (gemv_scalar_add_) name += "_sa";
  if (norm) name += "_nm";
  if (merge) name += "_am";
  // _fout: bindings 4-7 svh, bias, y, counters (writes z, y and the counters); _hin: bindings
  // 4-6 the norm's weight, block sums and output (NM; writes z and the output).
  return ctx_->pipeline(name, shader, spec, fout ? 8 : xs != 0 ? 7 : 3, push_bytes,
                        fout ? (1u << 2) | (1u << 6) | (1u << 7) : xs != 0 ? (1u << 2) | (1u << 6) : 1u << 2);
}

void VulkanBackend::record_gemv_hin(const Exl3Linear& w, const Buffer& x, uint32_t x_off, int64_t m, const Buffer& z,
                                    uint32_t xs, const Buffer* y, uint32_t y_off, const PendingNorm* norm,
                                    bool write_norm, const PendingMerge* merge) {
  TRELLIS_CHECK(m >= 1 && m <= kGemvMaxRows && xs != 0);
  const uint32_t G = gemv_columns(w.n, m), R = m == 1 ? 1u : static_cast<uint32_t>(kGemvMaxRows);
  TRELLIS_CHECK(static_cast<uint32_t>(m) <= R);  // the shader transforms all rows before its one row pass
  const uint32_t splits = exl3_splits(w, m);
  const uint64_t groups = static_cast<uint64_t>(w.n / 16 / G) * splits;
  if (y) {
    struct {
      uint32_t m, k, n, x_off, z_off, splits, in_f, out_f, y_off, has_bias;
    } pc{u32(m), u32(w.k), u32(w.n), x_off, 0, splits, u32(w.in_features), u32(w.out_features), y_off,
         w.bias ? 1u : 0u};
    const Pipeline& p = gemv_pipeline(w.K, w.codebook, G, R, xs, sizeof(pc), true);
    ctx_->dispatch_flat(p,
                        {w.trellis.get(), &x, &z, w.suh.get(), w.svh.get(), w.bias ? w.bias.get() : w.svh.get(), y,
                         w.counters.get()},
                        &pc, groups);
    return;
  }
  struct {
    uint32_t m, k, n, x_off, z_off, splits, in_f, nw_off, no_off;
    float eps;
    uint32_t write_norm, am_heads, am_head_dim, am_splits, am_ml_off;
  } pc{u32(m), u32(w.k), u32(w.n), x_off, 0, splits, u32(w.in_features), 0, 0, 0.0f, 0, 0, 0, 0, 0};
  const Pipeline& p = gemv_pipeline(w.K, w.codebook, G, R, xs, sizeof(pc), false, norm != nullptr, merge != nullptr);
  // Bindings 4-6: the norm's weight and block sums (NM; else suh, unread) and the folded op's
  // output where write_norm (else z, written anyway: the group's other dispatches then need no
  // barrier between them).
  const Buffer *nw = w.suh.get(), *sums = w.suh.get(), *out = &z;
  if (merge) {  // x is the attention's partials
    TRELLIS_CHECK(!norm && merge->rows == m && static_cast<int64_t>(merge->heads * merge->head_dim) == w.in_features);
    pc.no_off = merge->out_off;
    pc.am_heads = merge->heads;
    pc.am_head_dim = merge->head_dim;
    pc.am_splits = merge->splits;
    pc.am_ml_off = merge->ml_off;
    if (write_norm) out = static_cast<const Buffer*>(merge->out.get());
  } else if (norm) {  // x is the residual stream
    TRELLIS_CHECK(norm->rows == m && norm->cols == w.in_features && norm->cols % 128 == 0 &&
                  norm->cols / 128 <= kNormSumsBlocks && norm_sums_);
    pc.nw_off = norm->w_off;
    pc.no_off = norm->out_off;
    pc.eps = norm->eps;
    nw = static_cast<const Buffer*>(norm->w.get());
    sums = norm_sums_.get();
    if (write_norm) out = static_cast<const Buffer*>(norm->out.get());
  }
  pc.write_norm = (norm || merge) && write_norm ? 1u : 0u;
  ctx_->dispatch_flat(p, {w.trellis.get(), &x, &z, w.suh.get(), nw, sums, out}, &pc, groups);
}

void VulkanBackend::record_gemv(const Buffer& trellis, int K, exl3::Codebook cb, int64_t k, int64_t n,
                                const Buffer& xh, uint32_t xh_off, int64_t m, const Buffer& z, uint32_t z_off,
                                uint32_t splits) {
  TRELLIS_CHECK(m >= 1 && m <= kGemvMaxRows && k % 16 == 0 && n % 16 == 0);
  const uint32_t G = gemv_columns(n, m), R = m == 1 ? 1u : static_cast<uint32_t>(kGemvMaxRows);
  struct {
    uint32_t m, k, n, xh_off, z_off, splits;
  } pc{u32(m), u32(k), u32(n), xh_off, z_off, splits};
  const Pipeline& p = gemv_pipeline(K, cb, G, R, 0, sizeof(pc));
  ctx_->dispatch_flat(p, {&trellis, &xh, &z}, &pc, static_cast<uint64_t>(n / 16 / G) * splits);
}

void VulkanBackend::record_decode(const Buffer& trellis, int K, exl3::Codebook cb, int64_t k, int64_t n,
                                  const Buffer& what_t) {
  struct {
    uint32_t k, n, out_off2;
  } dc{u32(k), u32(n), 0};
  // Constant 0 is a placeholder (exl3_decode.comp fixes its workgroup size); constants 1 and 2
  // select K and the codebook. One workgroup per tile row and strip of kDecodeStrip tiles.
  const Pipeline& d = ctx_->pipeline(variant("exl3_decode", K, cb), "exl3_decode",
                                     {0, static_cast<uint32_t>(K), static_cast<uint32_t>(cb)}, 2, sizeof(dc), 1u << 1);
  ctx_->dispatch_flat(d, {&trellis, &what_t}, &dc, static_cast<uint64_t>((k / 16) * ceil_div(n / 16, kDecodeStrip)));
}

uint32_t VulkanBackend::exl3_product(const Exl3Linear& w, const Buffer& xh, int64_t m, Buffer& z, bool force_gemm,
                                     bool xh_f16) {
  if (m <= kGemvMaxRows && !force_gemm) {
    const uint32_t splits = exl3_splits(w, m);
    record_gemv(*w.trellis, w.K, w.codebook, w.k, w.n, xh, 0, m, z, 0, splits);
    return splits;
  }
  Buffer& what_t = scratch(0, static_cast<size_t>(w.k * w.n) * 2);
  record_decode(*w.trellis, w.K, w.codebook, w.k, w.n, what_t);
  if (xh_f16) {  // the input transform wrote fp16 activations (exl3_f16_input)
    record_coop_gemm(coop_gemm(m, w.k, w.n), what_t, xh, w.k, z, 0, nullptr, m, w.k, w.n);
    return 1;
  }
  gemm_f16(what_t, xh, 0, z, 0, nullptr, m, w.k, w.n);
  return 1;
}

void VulkanBackend::dense_linear(const DenseLinear& d, const DeviceTensor& x, DeviceTensor& y) {
  const int64_t m = x.rows();
  if (m <= kGemvMaxRows) {
    MatmulPush pc{u32(m), u32(d.in_features), u32(d.out_features), 0, elem(x, 4), elem(y, 4), 0, d.bias ? 1u : 0u};
    const std::array<const Buffer*, 4> bufs{d.weight.get(), &buffer_of(x), &buffer_of(y),
                                          d.bias ? d.bias.get() : d.weight.get()};
    if (d.in_features % 8 == 0 && pc.x_off % 4 == 0 && !dense_gemv_legacy_) {
      // 16-byte loads of W and x, 256 / lanes features per workgroup (matmul_f16_gemv8.comp): 8
      // invocations per feature up to 768 inputs, else 32 (H100, session 24: 8 lanes 1.15x 32 at
      // 512 inputs; 32 lanes 1.2-2.5x 8 or 16 from 1536 up). TRELLIS_VULKAN_DENSE_GEMV_LANES = 8,
      // 16 or 32 fixes it (tuning on a new device).
      const uint32_t lanes = dense_gemv_lanes_ != 0 ? static_cast<uint32_t>(dense_gemv_lanes_)
                             : d.in_features <= 768 ? 8u
                                                    : 32u;
      const Pipeline& p = ctx_->pipeline(fmt::format("matmul_f16_gemv8_l{}", lanes), "matmul_f16_gemv8", {lanes}, 4,
                                         sizeof(pc), 1u << 2);
      ctx_->dispatch_flat(p, bufs, &pc, static_cast<uint64_t>(ceil_div(d.out_features, 256 / lanes)));
    } else {
      const Pipeline& p = ctx_->pipeline("matmul_f16_gemv", "matmul_f16_gemv", {wg_}, 4, sizeof(pc), 1u << 2);
      ctx_->dispatch_flat(p, bufs, &pc, static_cast<uint64_t>(d.out_features));
    }
  } else {
    gemm_f16(*d.weight, buffer_of(x), elem(x, 4), buffer_of(y), elem(y, 4), d.bias.get(), m, d.in_features,
             d.out_features);
  }
}

bool VulkanBackend::exl3_f16_input(const Exl3Linear& w, int64_t m) {
  if (!transform_f16_ || m <= kGemvMaxRows) return false;
  const CoopGemm g = coop_gemm(m, w.k, w.n);
  return g.pipeline && g.version >= 2;  // reads a16 with stride k (a multiple of 128)
}

void VulkanBackend::exl3_stage(const Exl3Linear& w, const DeviceTensor& x, DeviceTensor& y, int slot, int phase,
                               const PendingNorm* norm, bool write_norm, const PendingMerge* merge) {
  const int64_t m = x.rows();
  // Decode: the input transform inside the GEMV where it fits (phase 0 records nothing).
  const uint32_t hin = gemv_hin_floats(w, m);
  Buffer& xh = scratch(1 + 2 * slot, static_cast<size_t>(m * (hin ? 1 : w.k)) * 4);
  const int64_t partials = m <= kGemvMaxRows ? kGemvMaxSplits : 1;  // split-k only on the GEMV path
  Buffer& z = scratch(2 + 2 * slot, static_cast<size_t>(m * w.n * partials) * 4);
  // The transforms: at prefill sizes (the GEMM path) exl3_hadamard_{in,out}_sg (lane groups of 8
  // exchanging by subgroup shuffles, 16 items per workgroup, no barriers) where the device
  // allows, else the shared-memory shaders (one workgroup of 128 per item, 14 barriers); same
  // operations in the same order. Decode keeps the shared-memory shaders: with one row the
  // 8-lane groups leave the GPU nearly empty and each lane's 16 elements (times the split-k
  // partials) serialise (H200: 20 against 5.6 us per output transform).
  const bool sg = hadamard_sg_ && m > kGemvMaxRows;
  const bool f16 = phase < 2 && sg && exl3_f16_input(w, m);  // the input transform's and product's choice
  if (phase == 0) {
    if (hin) return;
    struct {
      uint32_t in_f, k, x_off, xh_off, items;
    } hi{u32(w.in_features), u32(w.k), elem(x, 4), 0, u32(m * (w.k / 128))};
    if (sg) {
      const char* name = f16 ? "exl3_hadamard_in_sg_f16" : "exl3_hadamard_in_sg";
      const Pipeline& pin = ctx_->pipeline(name, name, {}, 3, sizeof(hi), 1u << 2);
      ctx_->dispatch_flat(pin, {&buffer_of(x), w.suh.get(), &xh}, &hi, ceil_div(m * (w.k / 128), kHadamardSgItems));
    } else {
      const Pipeline& pin = ctx_->pipeline("exl3_hadamard_in", "exl3_hadamard_in", {}, 3, 16, 1u << 2);
      ctx_->dispatch(pin, {&buffer_of(x), w.suh.get(), &xh}, &hi, u32(w.k / 128), u32(m));
    }
  } else if (phase == 1) {
    TRELLIS_CHECK((!norm && !merge) || (hin && !gemv_fout_));
    if (merge)  // the attention's partials in, the merge formed in the input transform
      record_gemv_hin(w, *merge->part, 0, m, z, hin, nullptr, 0, nullptr, write_norm, merge);
    else if (norm)  // the residual stream in, the norm formed in the input transform
      record_gemv_hin(w, *static_cast<const Buffer*>(norm->x.get()), norm->x_off, m, z, hin, nullptr, 0, norm,
                      write_norm);
    else if (hin && gemv_fout_)
      record_gemv_hin(w, buffer_of(x), elem(x, 4), m, z, hin, &buffer_of(y), elem(y, 4));
    else if (hin)
      record_gemv_hin(w, buffer_of(x), elem(x, 4), m, z, hin);
    else
      exl3_product(w, xh, m, z, false, f16);
  } else {
    if (hin && gemv_fout_) return;  // the GEMV wrote y
    struct {
      uint32_t n, out_f, z_off, y_off, has_bias, splits, split_stride, items;
    } ho{u32(w.n), u32(w.out_features), 0, elem(y, 4), w.bias ? 1u : 0u, exl3_product_splits(w, m), u32(m * w.n),
         u32(m * (w.n / 128))};
    const std::array<const Buffer*, 4> bufs{&z, w.svh.get(), w.bias ? w.bias.get() : w.svh.get(), &buffer_of(y)};
    if (sg) {
      const Pipeline& pout = ctx_->pipeline("exl3_hadamard_out_sg", "exl3_hadamard_out_sg", {}, 4, sizeof(ho), 1u << 3);
      ctx_->dispatch_flat(pout, bufs, &ho, ceil_div(m * (w.n / 128), kHadamardSgItems));
    } else {
      // RESID = 0; bindings 4 and 5 (x, sums: VulkanBackend::fuse_out_resid) unused. ho's last
      // field stands in for x_off.
      const Pipeline& pout = ctx_->pipeline("exl3_hadamard_out", "exl3_hadamard_out", {0}, 6, 32, 1u << 3);
      ctx_->dispatch(pout, {&z, w.svh.get(), w.bias ? w.bias.get() : w.svh.get(), &buffer_of(y), &z, &z}, &ho,
                     u32(w.n / 128), u32(m));
      outs_[0] = std::move(outs_[1]);
      outs_[1] = std::move(outs_[2]);
      outs_[2] = PendingOut{ctx_->serial_back(0), &pout, &z, w.svh, y.buffer, ho.y_off, ho.n, ho.out_f,
                            ho.splits, ho.split_stride, m, w.bias != nullptr, w.bias};
    }
  }
}

std::optional<VulkanBackend::PendingNorm> VulkanBackend::take_norm(std::span<const Exl3Linear* const> ws,
                                                                    const DeviceTensor& x) {
  if (!last_norm_) return std::nullopt;
  const PendingNorm n = *last_norm_;
  last_norm_.reset();
  const int64_t m = x.rows();
  if (!fuse_ || !fuse_resid_ || gemv_fout_ || ws.empty() || n.serial == 0 || n.serial != ctx_->serial_back(0) ||
      n.out.get() != x.buffer.get() || n.out_off != elem(x, 4) || n.rows != m || n.cols != x.cols() ||
      m > kGemvMaxRows || n.cols % 128 != 0 || n.cols / 128 > kNormSumsBlocks)
    return std::nullopt;
  for (const Exl3Linear* w : ws)
    if (w->in_features != n.cols || gemv_hin_floats(*w, m) == 0) return std::nullopt;
  // scratch() may replace buffers but records nothing, so the norm is still the last command.
  if (!ctx_->pop_last(*n.pipeline, n.serial)) return std::nullopt;
  return n;
}

std::optional<VulkanBackend::PendingMerge> VulkanBackend::take_merge(const Exl3Linear& w, const DeviceTensor& x) {
  if (!last_merge_) return std::nullopt;
  const PendingMerge mg = *last_merge_;
  last_merge_.reset();
  const int64_t m = x.rows();
  if (!fuse_ || !fuse_merge_ || gemv_fout_ || mg.serial == 0 || mg.serial != ctx_->serial_back(0) ||
      mg.out.get() != x.buffer.get() || mg.out_off != elem(x, 4) || mg.rows != m || m > kGemvMaxRows ||
      static_cast<int64_t>(mg.heads * mg.head_dim) != x.cols() || w.in_features != x.cols() ||
      gemv_hin_floats(w, m) == 0)
    return std::nullopt;
  // scratch() may replace buffers but records nothing, so the merge is still the last command;
  // the partials' buffer (kScratchAttn) is not one the linear's scratch replaces.
  if (!ctx_->pop_last(*mg.pipeline, mg.serial)) return std::nullopt;
  return mg;
}

void VulkanBackend::linear(const LinearWeights& lw, const DeviceTensor& x, DeviceTensor& y) {
  if (x.rows() == 0) return;
  if (const auto* d = dynamic_cast<const DenseLinear*>(&lw)) {
    last_norm_.reset();
    last_merge_.reset();
    return dense_linear(*d, x, y);
  }
  const auto& w = static_cast<const Exl3Linear&>(lw);
  const Exl3Linear* one[] = {&w};
  const std::optional<PendingNorm> norm = take_norm(one, x);
  const std::optional<PendingMerge> merge = norm ? std::nullopt : take_merge(w, x);
  last_merge_.reset();
  for (int phase = 0; phase < 3; ++phase)
    exl3_stage(w, x, y, 0, phase, norm ? &*norm : nullptr, true, merge ? &*merge : nullptr);
}

void VulkanBackend::linears(std::span<const LinearWeights* const> ws, const DeviceTensor& x,
                            std::span<DeviceTensor* const> ys) {
  TRELLIS_CHECK(ws.size() == ys.size());
  if (x.rows() == 0) return;
  // Each EXL3 layer of the group gets its own scratch, and the group is recorded phase by phase
  // (all input Hadamards, all products, all output Hadamards), so the hazard tracker puts two
  // barriers in the group instead of two per layer.
  std::vector<std::pair<const Exl3Linear*, DeviceTensor*>> exl3;
  // A pending norm of x folds into the group only when every layer is an EXL3 layer of it (a
  // dense layer or one past kMaxLinearGroup would read x before the group writes it).
  std::optional<PendingNorm> norm;
  if (last_norm_) {
    std::vector<const Exl3Linear*> all;
    for (const LinearWeights* w : ws)
      if (const auto* e = dynamic_cast<const Exl3Linear*>(w)) all.push_back(e);
    if (all.size() == ws.size() && all.size() <= kMaxLinearGroup) norm = take_norm(all, x);
    last_norm_.reset();
  }
  for (size_t i = 0; i < ws.size(); ++i) {
    if (const auto* d = dynamic_cast<const DenseLinear*>(ws[i]))
      dense_linear(*d, x, *ys[i]);
    else if (exl3.size() < kMaxLinearGroup)
      exl3.emplace_back(static_cast<const Exl3Linear*>(ws[i]), ys[i]);
    else
      linear(*ws[i], x, *ys[i]);
  }
  // With the norm folded in, the first layer writes its output x (the norm's `out`).
  for (int phase = 0; phase < 3; ++phase)
    for (size_t i = 0; i < exl3.size(); ++i)
      exl3_stage(*exl3[i].first, x, *exl3[i].second, static_cast<int>(i), phase, norm ? &*norm : nullptr, i == 0);
}

void VulkanBackend::bench_exl3_product(const LinearWeights& lw, int64_t m) {
  const auto& w = dynamic_cast<const Exl3Linear&>(lw);
  Buffer& xh = scratch(1, static_cast<size_t>(m * w.k) * 4);
  Buffer& z = scratch(2, static_cast<size_t>(m * w.n * kGemvMaxSplits) * 4);
  exl3_product(w, xh, m, z);
}

std::vector<uint16_t> VulkanBackend::exl3_decode_what(const exl3::Exl3LinearView& v) {
  if (v.k <= 0 || v.n <= 0 || v.k % 16 != 0 || v.n % 16 != 0 || v.K < 1 || v.K > 8)
    fail(ErrorKind::kInvalidArgument, "exl3_decode_what: bad layer {} x {} K {}", v.k, v.n, v.K);
  auto trellis = upload_bytes(v.trellis, trellis_bytes(v));
  auto out = ctx_->create_buffer(static_cast<size_t>(v.k * v.n) * 2);
  record_decode(*trellis, v.K, v.codebook, v.k, v.n, *out);
  DeviceTensor t{out, 0, DType::kF16, {v.n, v.k}};
  std::vector<float> f(static_cast<size_t>(v.k * v.n));
  download(t, f.data());
  std::vector<uint16_t> what(f.size());
  for (int64_t c = 0; c < v.n; ++c)
    for (int64_t r = 0; r < v.k; ++r) what[static_cast<size_t>(r * v.n + c)] = fp32_to_fp16(f[static_cast<size_t>(c * v.k + r)]);
  return what;
}

std::vector<float> VulkanBackend::exl3_raw_matmul(const exl3::Exl3LinearView& v, const float* xh, int64_t m, bool gemm) {
  if (v.k <= 0 || v.n <= 0 || v.k % 16 != 0 || v.n % 16 != 0 || v.K < 1 || v.K > 8)
    fail(ErrorKind::kInvalidArgument, "exl3_raw_matmul: bad layer {} x {} K {}", v.k, v.n, v.K);
  Exl3Linear w;
  w.k = v.k;
  w.n = v.n;
  w.K = v.K;
  w.codebook = v.codebook;
  w.trellis = upload_bytes(v.trellis, trellis_bytes(v));
  auto x = upload_bytes(xh, static_cast<size_t>(m * v.k) * 4);
  auto z = ctx_->create_buffer(static_cast<size_t>(m * v.n) * 4);
  if (gemm) {
    exl3_product(w, *x, m, *z, /*force_gemm=*/true);
  } else {
    for (int64_t r0 = 0; r0 < m; r0 += kGemvMaxRows) {
      const int64_t rc = std::min(kGemvMaxRows, m - r0);
      record_gemv(*w.trellis, v.K, v.codebook, v.k, v.n, *x, u32(r0 * v.k), rc, *z, u32(r0 * v.n), 1);
    }
  }
  std::vector<float> out(static_cast<size_t>(m * v.n));
  download(DeviceTensor{z, 0, DType::kF32, {m, v.n}}, out.data());
  return out;
}

}  // namespace trellis::vk
