// backends/vulkan/vk_backend.h: the Vulkan implementation of the Backend seam.
//
// Activations are fp32 and the KV cache fp16, as on the CPU backend, so every op can be checked
// against the CPU reference. Dense weights live on the device as fp16 (bf16/fp32 converted once
// at load); EXL3 layers keep their packed trellis (bit-exact decode in the shaders) with suh,
// svh and bias widened to fp32. Op -> shader map (shaders/*.comp):
//   embedding, rms_norm, rope, kv_store, silu_mul, add: one shader each;
//   attention: below kFlashMinRows query rows attention_decode (+ attention_decode_merge: key
//   range split over workgroups, flash-decoding) where the device has subgroup shuffles, else
//   attention (one workgroup per row and head); from there attention_flash (query blocks x K/V
//   tiles in shared memory), or on devices with cooperative matrices and head_dim 64 / 128
//   attention_flash_coop_d<D> (vk_attention_coop.cpp);
//   dense linear: matmul_f16_gemv (m <= 8), matmul_f16_tiled, or for m >= kCoopMinRows on
//   devices with cooperative matrices convert_f16 + matmul_f16_coop, matmul_f16_coop2 or
//   matmul_f16_coop3 (fp16 activations);
//   EXL3 linear: exl3_hadamard_in, then exl3_gemv_k<K>_<cb> (m <= 8; by default with the input
//   transform fused in, exl3_gemv*_hin, where its slab fits shared memory) or exl3_decode_k<K>_<cb> +
//   matmul_f16_tiled (prefill: Ŵ decoded once per call into scratch, spec 6.7 "large batches"),
//   then exl3_hadamard_out (svh, bias, padding dropped).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <span>

#include "backends/backend.h"
#include "backends/vulkan/vk_context.h"
#include "core/error.h"

namespace trellis::vk {

// Rows up to which the GEMV shaders are used; above it, the tiled GEMM.
inline constexpr int64_t kGemvMaxRows = 8;
// EXL3 GEMV split-k: aim for this many workgroups (TRELLIS_VULKAN_GEMV_GROUPS overrides it, for
// tuning on a new device), with at most this many partial sums.
inline constexpr int64_t kGemvTargetGroups = 512;
inline constexpr int64_t kGemvMaxSplits = 8;
// EXL3 GEMV workgroup size (8 logical warps of 32; exl3_gemv.glsl).
inline constexpr uint32_t kGemvWg = 256;
// Shared memory (floats) the GEMV with the fused input transform (exl3_gemv*_hin) may take for
// its slab of activations, rows x 16 · slabs per split; larger slabs run the two passes.
inline constexpr int64_t kGemvHinMaxFloats = 4096;
// linears(): EXL3 layers of one group with their own scratch (q/k/v is 3).
inline constexpr size_t kMaxLinearGroup = 4;
// Rows from which the prefill GEMM takes cooperative matrices where the device has them: the
// activations are rounded once to fp16 (fp32 accumulation), the CUDA backend's policy above 63
// rows. Below, matmul_f16_tiled keeps fp32 activations.
inline constexpr int64_t kCoopMinRows = 64;
// Query rows from which attention takes attention_flash (query blocks sharing K/V tiles in
// shared memory); below, attention_decode (key splits over workgroups: decode, short batches) or,
// where it cannot run, attention.comp (one workgroup per row and head).
inline constexpr int64_t kFlashMinRows = 16;
// attention_decode (below kFlashMinRows rows): workgroup size, keys per tile (the smallest
// split), and the number of workgroups the key splits aim at (~2 per SM on large GPUs).
inline constexpr uint32_t kDecodeWg = 128;
inline constexpr uint32_t kDecodeTileKeys = 32;
inline constexpr int64_t kDecodeTargetGroups = 256;

// rms_norm over fewer groups than this (decode) runs kRmsWideWg invocations per group (where the
// device allows) instead of the 1-D shaders' 128.
// Tiles per exl3_decode workgroup (consecutive along n; TS in exl3_decode.comp).
inline constexpr int64_t kDecodeStrip = 8;

// Items (128-blocks of one row) per workgroup of exl3_hadamard_{in,out}_sg (kItemsPerGroup).
inline constexpr int64_t kHadamardSgItems = 16;

inline constexpr int64_t kRmsWideBelowGroups = 64;
inline constexpr uint32_t kRmsWideWg = 512;

// Rows per prefill chunk (Backend::preferred_batch) on devices with at least
// kLargeBatchMemory bytes: decoding each EXL3 weight once per 2048 rows instead of once per 512
// (the decode to fp16 is a quarter of the GEMM path's time at 512 rows on the H200).
inline constexpr int64_t kLargeBatch = 2048;
inline constexpr uint64_t kLargeBatchMemory = 16ull << 30;

// attention_flash tile sizes: BR query vectors per workgroup, BC keys per tile.
struct FlashTiles {
  uint32_t rows = 0, keys = 0;
};
// Shared memory attention_flash declares for tiles `t` and head_dim (its header's formula).
size_t flash_shared_bytes(FlashTiles t, int64_t head_dim);
// Shared memory of attention_flash_coop_d<head_dim> (its header's formula); 0 when there is no
// variant for head_dim (64 and 128 exist).
size_t flash_coop_shared_bytes(int64_t head_dim);

// Which cooperative-matrix extension runs matmul_f16_coop (vk_coop.h).
enum class CoopPath : uint8_t { kOff, kKhr, kNv };
const char* coop_path_name(CoopPath p);

// Tile shapes of matmul_f16_coop2 (its header): WM x WN subgroups, each FM x FN 16x16
// accumulators, BK halves of k per step; a block is 16 WM FM x 16 WN FN. The first is the
// default (4 subgroups, 41 KiB of shared memory with the output staging: fits NVIDIA's 48 KiB);
// the benchmark times every shape that fits the device.
struct Coop2Shape {
  uint32_t wm, wn, fm, fn, bk;
};
inline constexpr Coop2Shape kCoop2Shapes[] = {{2, 2, 4, 4, 32}, {2, 4, 4, 4, 16}, {4, 2, 4, 4, 16}, {2, 2, 2, 4, 32}};
std::string coop2_shape_name(Coop2Shape s);  // "BMxBNxBK", e.g. "128x128x32"
size_t coop2_shared_bytes(Coop2Shape s);

// Variants of matmul_f16_coop3 (matmul_f16_coop3.glsl's header), each its own module
// matmul_f16_coop3_<name> with the tile fixed at compile time: WM x WN subgroups of 32, each FM
// x FN 16x16 accumulators, BK halves of k per step, shared memory read by the cooperative loads
// as uvec4 or (half_shared) float16_t. The first is the default; the benchmark times all that fit.
// What each one tests: 128x128x32_w2x2 is coop2's default tile with unrolled fragment loops
// (unrolling alone); _h the same with a float16_t shared array (the shared element type);
// _w2x4 / _w4x2 8 subgroups of 64x32 / 32x64 (half the accumulator registers, more subgroups
// to hide latency); 128x256x16 / 256x128x16 larger blocks (more reuse per byte staged) with
// 64x64 subgroups; 64x128x32 smaller blocks (more workgroups per SM); 128x128x16 a short k step
// (less shared memory, more barriers).
struct Coop3Variant {
  uint32_t wm, wn, fm, fn, bk;
  bool half_shared;
};
inline constexpr Coop3Variant kCoop3Variants[] = {
    {2, 2, 4, 4, 32, false}, {2, 2, 4, 4, 32, true}, {2, 4, 4, 2, 32, false}, {4, 2, 2, 4, 32, false},
    {2, 4, 4, 4, 16, false}, {4, 2, 4, 4, 16, false}, {2, 2, 2, 4, 32, false}, {2, 2, 4, 4, 16, false}};
std::string coop3_variant_name(Coop3Variant v);  // "BMxBNxBK_wWMxWN" + "_h" when half_shared
size_t coop3_shared_bytes(Coop3Variant v);

class DenseLinear : public LinearWeights {
 public:
  std::shared_ptr<Buffer> weight;  // (out, in) fp16
  std::shared_ptr<Buffer> bias;    // [out] fp32, or null
};

class Exl3Linear : public LinearWeights {
 public:
  int64_t k = 0, n = 0;
  int K = 0;
  exl3::Codebook codebook = exl3::Codebook::k3Inst;
  std::shared_ptr<Buffer> trellis;  // packed tiles, file order
  std::shared_ptr<Buffer> suh;      // [k] fp32
  std::shared_ptr<Buffer> svh;      // [n] fp32
  std::shared_ptr<Buffer> bias;     // [out] fp32, or null
  std::shared_ptr<Buffer> counters; // [n / 128] uint, 0 between dispatches (exl3_gemv*_fout)
};

class VulkanBackend : public Backend {
 public:
  // `staging_only`: see Context::create's discrete_like (for tests).
  explicit VulkanBackend(int index, bool staging_only = false);
  ~VulkanBackend() override;

  const DeviceInfo& info() const override { return ctx_->info(); }
  DeviceTensor alloc(DType dtype, const Shape& shape) override;
  DeviceTensor upload(const TensorView& host, DType dtype) override;
  void download(const DeviceTensor& t, float* host) override;
  std::unique_ptr<LinearWeights> prepare_linear(const LinearSource& source) override;
  void synchronize() override { ctx_->flush(); }
  // The model's submit points (after layer 0's and layer 3's attention): the step's commands so
  // far go to the GPU without waiting (Context::submit), so that it runs them while the host
  // records the rest. On by default; TRELLIS_VULKAN_SUBMIT=0 or set_submit(false) keeps the
  // whole step in one segment.
  void submit() override {
    if (submit_) ctx_->submit();
  }
  void set_submit(bool on) { submit_ = on; }
  double host_wait_seconds() const override { return ctx_->wait_seconds(); }
  std::vector<std::pair<std::string, double>> host_breakdown() const override;

  void embedding(const DeviceTensor& table, std::span<const int32_t> ids, DeviceTensor& out) override;
  int64_t preferred_batch() const override {
    return ctx_->info().memory_bytes >= kLargeBatchMemory ? kLargeBatch : Backend::preferred_batch();
  }
  void rms_norm(const DeviceTensor& x, const DeviceTensor& weight, float eps, int64_t group, DeviceTensor& out) override;
  void linear(const LinearWeights& w, const DeviceTensor& x, DeviceTensor& y) override;
  // EXL3 layers of a group share no scratch and are recorded phase by phase, so their
  // dispatches run without barriers between them.
  void linears(std::span<const LinearWeights* const> ws, const DeviceTensor& x,
               std::span<DeviceTensor* const> ys) override;
  void rope(DeviceTensor& x, int64_t head_dim, std::span<const int32_t> positions, const RopeParams& rope) override;
  void kv_store(const DeviceTensor& k, const DeviceTensor& v, std::span<const int32_t> positions,
                DeviceTensor& k_cache, DeviceTensor& v_cache) override;
  void attention(const DeviceTensor& q, const DeviceTensor& k_cache, const DeviceTensor& v_cache,
                 std::span<const int32_t> positions, const AttentionParams& params, DeviceTensor& out) override;
  void silu_mul(const DeviceTensor& gate, const DeviceTensor& up, DeviceTensor& out) override;
  void add(DeviceTensor& x, const DeviceTensor& y) override;

  // Test hooks (tests/ops/vulkan_exl3_test.cpp), bypassing the Hadamard passes:
  // Ŵ (k x n binary16, row-major) through exl3_decode, and z = xh · Ŵ (m x n fp32) through
  // exl3_gemv (m <= 8 per pass, any m) or the decode + tiled GEMM path (`gemm`).
  std::vector<uint16_t> exl3_decode_what(const exl3::Exl3LinearView& view);
  std::vector<float> exl3_raw_matmul(const exl3::Exl3LinearView& view, const float* xh, int64_t m, bool gemm);
  // fp16 activations of matmul_f16_coop (convert_f16: RNE, rows padded to even length with
  // zeros), m x round_up(k, 2) binary16; runs on any device.
  std::vector<uint16_t> convert_f16_rows(const float* x, int64_t m, int64_t k);
  // Benchmark hooks: the EXL3 product alone (z = xh · Ŵ on the layer's scratch, as linear()
  // records it, without the Hadamard passes), and the context (timestamps, flush, stats).
  void bench_exl3_product(const LinearWeights& w, int64_t m);
  // Whether exl3_gemv reduces through subgroup shuffles (exl3_gemv_sg) or shared memory only;
  // defaults to the device's capability (TRELLIS_VULKAN_SUBGROUP=0 forces shared memory).
  // Setting true on a device without the capability throws kUnsupported.
  void set_gemv_subgroup(bool on);
  bool gemv_subgroup() const { return gemv_subgroup_; }
  bool gemv_subgroup_capable() const { return gemv_subgroup_capable_; }
  // At m <= kGemvMaxRows, the EXL3 input transform inside the GEMV (exl3_gemv*_hin: each
  // workgroup transforms its own slab of x in shared memory; no exl3_hadamard_in dispatch, the
  // same bits): on by default, TRELLIS_VULKAN_GEMV_HIN=0 or set_gemv_hin(false) keeps the two
  // passes. gemv_hin_applies says whether a layer at m rows takes it (on, GEMV path, the slab
  // fits kGemvHinMaxFloats and the device's shared memory).
  void set_gemv_hin(bool on) { gemv_hin_ = on; }
  bool gemv_hin() const { return gemv_hin_; }
  // Where the fused input transform applies, the output transform inside the GEMV too
  // (exl3_gemv*_hin_fout: the last workgroup of each 128-block sums the split-k partials and
  // writes y; no exl3_hadamard_out dispatch, the same bits). Off unless
  // TRELLIS_VULKAN_GEMV_FUSED_OUT=1 (8B decode 0.98x on the H200, 0.97x on the H100) or
  // set_gemv_fout(true).
  void set_gemv_fout(bool on) { gemv_fout_ = on; }
  bool gemv_fout() const { return gemv_fout_; }
  // The fp16 GEMV decode adds each 3INST/MCG weight's two halves with one scalar binary16 add
  // instead of pairing two weights' halves first (spec constant SA; the same bits). On by default
  // (H200, session 13: 8B decode 108.9 -> 118.8 tok/s); TRELLIS_VULKAN_GEMV_SCALAR_ADD=0 pairs.
  void set_gemv_scalar_add(bool on) { gemv_scalar_add_ = on; }
  bool gemv_scalar_add() const { return gemv_scalar_add_; }
  // Dense fp16 linears at m <= kGemvMaxRows with in % 8 == 0 (and x 16-byte aligned) take
  // matmul_f16_gemv8 (16-byte loads, 8 or 32 invocations per feature) unless
  // TRELLIS_VULKAN_DENSE_GEMV_LEGACY=1 or set_dense_gemv_legacy(true) keeps matmul_f16_gemv
  // (2-byte loads, one feature per workgroup), which every other shape takes.
  void set_dense_gemv_legacy(bool on) { dense_gemv_legacy_ = on; }
  bool gemv_hin_applies(const LinearWeights& w, int64_t m) const;
  // EXL3 transforms by subgroup shuffles (exl3_hadamard_*_sg) where capable (subgroup shuffles, a
  // subgroup size that is a multiple of 8): on by default, TRELLIS_VULKAN_HADAMARD_SG=0 keeps the
  // shared-memory shaders; tests switch with set_hadamard_sg (ignored where not capable).
  void set_hadamard_sg(bool on) { hadamard_sg_ = on && hadamard_sg_capable_; }
  bool hadamard_sg() const { return hadamard_sg_; }
  bool hadamard_sg_capable() const { return hadamard_sg_capable_; }
  // At prefill sizes with a cooperative-matrix GEMM, the subgroup input transform writes the
  // GEMM's fp16 activations itself (no convert_f16 pass; the same bits): on by default,
  // TRELLIS_VULKAN_TRANSFORM_F16=0 or set_transform_f16(false) keeps the separate conversion.
  void set_transform_f16(bool on) { transform_f16_ = on; }
  bool transform_f16() const { return transform_f16_; }
  // The prefill GEMM's cooperative-matrix path: KHR where the device has it, else NV, else off
  // (TRELLIS_VULKAN_COOPMAT=0 / nv / khr restrict the choice when the device is opened).
  // Choosing a path the device lacks throws kUnsupported; kOff is always possible.
  void set_coop_path(CoopPath p);
  // Which cooperative-matrix GEMM the coop path runs: 1 matmul_f16_coop, 2 matmul_f16_coop2
  // (TRELLIS_VULKAN_COOPMAT=2; needs in % 8 == 0, else version 1 runs) in tile shape
  // kCoop2Shapes[i] (TRELLIS_VULKAN_COOP2_SHAPE=BMxBNxBK picks one by name), 3 matmul_f16_coop3
  // (TRELLIS_VULKAN_COOPMAT=3; same condition) in variant kCoop3Variants[i]
  // (TRELLIS_VULKAN_COOP3_VARIANT=<name>). Throw kInvalidArgument for another version,
  // kUnsupported for a shape or variant that does not fit the device.
  void set_coop_kernel(int version);
  int coop_kernel() const { return coop_kernel_; }
  void set_coop2_shape(size_t i);
  size_t coop2_shape() const { return coop2_shape_; }
  bool coop2_shape_fits(size_t i) const;
  // Fits: shared memory, workgroup limits, and subgroup size 32 (the variants' fixed workgroups).
  void set_coop3_variant(size_t i);
  size_t coop3_variant() const { return coop3_variant_; }
  bool coop3_variant_fits(size_t i) const;
  // Decode fusions recorded as peepholes (bit-identical to the separate ops): add(x, y) followed
  // by rms_norm(x) becomes one rms_norm_add dispatch, rope(q), rope(k), kv_store(k, v) one
  // rope_kv_store dispatch; the residual stream of the decode (rows <= kGemvMaxRows): an EXL3
  // output transform followed by add(x, its y) adds into x itself and writes x's 128-column
  // block sums of squares (exl3_hadamard_out RESID), and rms_norm(x, w, h) right after is then
  // folded into the fused input transform of the EXL3 linear or group that reads h
  // (exl3_gemv*_hin NM, which still writes h); the q/k/v output transforms followed by
  // rope(q), rope(k), kv_store(k, v) as one exl3_out_rope_kv dispatch. On by default;
  // TRELLIS_VULKAN_FUSE=0 turns them off (rms_norm at decode sizes keeps the residual stream's
  // summation order, so that the fused and separate ops give the same bits),
  // TRELLIS_VULKAN_FUSE_RESID=0 only the residual stream's (and rms_norm its own order),
  // TRELLIS_VULKAN_FUSE_QKV=0 only the q/k/v tail's; attention_decode_merge followed by an EXL3
  // linear of its output (the o projection) folds into that linear's fused input transform
  // (exl3_gemv*_hin AM, which still writes the attention output; TRELLIS_VULKAN_FUSE_MERGE=0).
  void set_fusion(bool on) { fuse_ = on; }
  void set_resid_fusion(bool on) { fuse_resid_ = on; }
  void set_qkv_fusion(bool on) { fuse_qkv_ = on; }
  void set_merge_fusion(bool on) { fuse_merge_ = on; }
  // Prefill attention (>= kFlashMinRows query rows) through attention_flash; on by default,
  // TRELLIS_VULKAN_FLASH_ATTENTION=0 keeps attention.comp for every call. set_flash_tiles
  // forces BR x BC (tests; {0, 0} = the largest preset that fits the device, flash_tiles()):
  // BR in 16, 32, 64, 128, BC a multiple of 8 and of 128 / BR (else kInvalidArgument); a forced
  // shape that does not fit the device's shared memory throws kUnsupported at the call.
  void set_flash_attention(bool on) { flash_ = on; }
  bool flash_attention() const { return flash_; }
  void set_flash_tiles(FlashTiles t);
  // Decode attention (< kFlashMinRows query rows) through attention_decode (+ merge) where the
  // device is capable (subgroup shuffle in compute, a power-of-two subgroup size in 4..128); on
  // by default, TRELLIS_VULKAN_DECODE_ATTENTION=0 keeps attention.comp. Setting true on an
  // incapable device throws kUnsupported. Calls the shader cannot take (head_dim not a multiple
  // of 4, cache views not 8-byte aligned, too little shared memory) run attention.comp.
  void set_decode_attention(bool on);
  bool decode_attention() const { return decode_; }
  bool decode_attention_capable() const { return decode_capable_; }
  // Test hook: the key splits of the last attention() call when attention_decode ran it, else 0.
  int64_t last_decode_splits() const { return last_decode_splits_; }
  // The tiles attention_flash uses for head_dim on this device; {0, 0} when none fits (then
  // attention.comp runs).
  FlashTiles flash_tiles(int64_t head_dim) const;
  // Prefill attention on cooperative matrices (attention_flash_coop_d<D>: fp16 Q and P, fp32
  // softmax and accumulation; ~1e-3 relative against the fp32 kernels) for head_dim 64 and 128
  // where the device has the cooperative-matrix path with subgroup size 32, subgroup shuffles
  // and the shared memory; elsewhere, and while set_flash_tiles forces a shape, attention_flash.
  // On by default; TRELLIS_VULKAN_FLASH_COOP=0 keeps attention_flash (read when the device is
  // opened). set_flash_coop(true) on a device without the path changes nothing:
  // flash_coop_capable says whether it runs.
  void set_flash_coop(bool on) { flash_coop_ = on; }
  bool flash_coop() const { return flash_coop_; }
  bool flash_coop_capable(int64_t head_dim) const;
  // Test hooks of attention_flash_coop: the slack of its lazy rescaling in log2 units (0..15,
  // default 8; 0 rescales whenever a row's maximum grows; else kInvalidArgument), and its
  // emulated module (attention_flash_coop_emu_d<D>: the same body with the cooperative-matrix
  // operations in plain GLSL, shaders/coop_emulation.glsl) in place of the real one, which needs
  // only subgroup shuffles and so runs on lavapipe.
  void set_flash_coop_rescale(float log2_slack);
  void set_flash_coop_emulation(bool on) { flash_coop_emulation_ = on; }
  bool fusion() const { return fuse_; }
  CoopPath coop_path() const { return coop_; }
  bool coop_capable(CoopPath p) const;
  Context& context() { return *ctx_; }

 private:
  std::shared_ptr<Buffer> upload_bytes(const void* data, size_t bytes);
  std::shared_ptr<Buffer> upload_floats(const std::vector<float>& v) { return upload_bytes(v.data(), v.size() * 4); }
  // Scratch buffer `slot` of at least `bytes` (grown as needed; contents unspecified).
  Buffer& scratch(int slot, size_t bytes);
  // z = xh · Ŵ; returns the number of split-k partials written at z + s * m * n.
  // exl3_decode.comp: Ŵᵀ (n x k, binary16) of a k x n trellis into what_t.
  void record_decode(const Buffer& trellis, int K, exl3::Codebook cb, int64_t k, int64_t n, const Buffer& what_t);
  // xh_f16: xh holds the transformed activations in fp16 [m, k] (exl3_hadamard_in_sg_f16), for
  // the cooperative-matrix GEMM only (exl3_f16_input).
  uint32_t exl3_product(const Exl3Linear& w, const Buffer& xh, int64_t m, Buffer& z, bool force_gemm = false,
                        bool xh_f16 = false);
  // Whether the input transform of this layer at m rows writes fp16 for the GEMM directly
  // (transform_f16_, the GEMM path, a cooperative-matrix GEMM of version 2 or 3 available).
  bool exl3_f16_input(const Exl3Linear& w, int64_t m);
  uint32_t exl3_splits(const Exl3Linear& w, int64_t m) const;
  // Tile columns per exl3_gemv workgroup (specialization constant G) for n outputs and m rows.
  uint32_t gemv_columns(int64_t n, int64_t m) const;
  // Records exl3_gemv: z (+ z_off, split s at s·m·n) = xh (+ xh_off) · Ŵ for m <= kGemvMaxRows.
  void record_gemv(const Buffer& trellis, int K, exl3::Codebook cb, int64_t k, int64_t n, const Buffer& xh,
                   uint32_t xh_off, int64_t m, const Buffer& z, uint32_t z_off, uint32_t splits);
  uint32_t exl3_product_splits(const Exl3Linear& w, int64_t m) const;
  // exl3_gemv's pipeline for K, codebook cb, G tile columns, R rows per pass and (xs != 0) the
  // fused input transform with xs shared floats; module and name from the device and switches.
  const Pipeline& gemv_pipeline(int K, exl3::Codebook cb, uint32_t G, uint32_t R, uint32_t xs, uint32_t push_bytes,
                                bool fout = false, bool norm = false, bool merge = false);
  // Shared floats (specialization constant XS) of exl3_gemv*_hin for this layer at m rows, or 0
  // when the fused input transform does not apply (gemv_hin_applies).
  uint32_t gemv_hin_floats(const Exl3Linear& w, int64_t m) const;
  // Records exl3_gemv*_hin: z (split s at s·m·n) = transform(x (+ x_off), suh) · Ŵ for
  // m <= kGemvMaxRows, xs = gemv_hin_floats(w, m) != 0.
  // With y set: the _fout form, which also writes y (element offset y_off) and skips exl3_hadamard_out.
  // An rms_norm(x, w, out) of that residual stream in rms_norm.comp's BLK order, recorded and
  // still the last command: the next EXL3 linear or group reading `out` may fold it in.
  struct PendingNorm {
    uint64_t serial = 0;
    const Pipeline* pipeline = nullptr;
    std::shared_ptr<DeviceBuffer> x, w, out;
    uint32_t x_off = 0, w_off = 0, out_off = 0;
    float eps = 0;
    int64_t rows = 0, cols = 0;
  };
  // attention_decode_merge recorded last: its partials and output, for the o projection's
  // fused input transform (AM), which computes the merge itself.
  struct PendingMerge {
    uint64_t serial = 0;
    const Pipeline* pipeline = nullptr;
    const Buffer* part = nullptr;
    std::shared_ptr<DeviceBuffer> out;
    uint32_t out_off = 0, heads = 0, head_dim = 0, splits = 0, ml_off = 0;
    int64_t rows = 0;
  };
  // With norm set (and y null): the NM form, x being the norm's residual stream; the norm's
  // output is written where write_norm. With merge set: the AM form, x being the partials.
  void record_gemv_hin(const Exl3Linear& w, const Buffer& x, uint32_t x_off, int64_t m, const Buffer& z, uint32_t xs,
                       const Buffer* y = nullptr, uint32_t y_off = 0, const PendingNorm* norm = nullptr,
                       bool write_norm = false, const PendingMerge* merge = nullptr);
  void dense_linear(const DenseLinear& d, const DeviceTensor& x, DeviceTensor& y);
  // One phase of an EXL3 linear with scratch set `slot`: 0 input Hadamard, 1 product, 2 output
  // Hadamard.
  // norm: x is the output of that pending rms_norm, which the product phase folds in (NM; the
  // caller has popped its dispatch); write_norm: this layer's dispatch writes x.
  void exl3_stage(const Exl3Linear& w, const DeviceTensor& x, DeviceTensor& y, int slot, int phase,
                  const PendingNorm* norm = nullptr, bool write_norm = false, const PendingMerge* merge = nullptr);
  // The pending attention merge whose output x the EXL3 layer w reads at decode rows, when it can
  // fold it in (AM): its dispatch is popped and the merge returned; else nullopt.
  std::optional<PendingMerge> take_merge(const Exl3Linear& w, const DeviceTensor& x);
  // The pending rms_norm whose output x the EXL3 layers `ws` all read at decode rows, when they
  // can fold it in (NM): its dispatch is popped and the norm returned; else nullopt.
  std::optional<PendingNorm> take_norm(std::span<const Exl3Linear* const> ws, const DeviceTensor& x);
  // add(x, y) right after the EXL3 output transform that wrote y: that dispatch re-recorded as
  // exl3_hadamard_out RESID; false (nothing changed) when it does not apply.
  bool fuse_out_resid(DeviceTensor& x, const DeviceTensor& y);
  // exl3_hadamard_out of q, k and v, rope(q), rope(k), kv_store(k, v) as one exl3_out_rope_kv
  // dispatch when those five are the last commands; false (nothing recorded) otherwise.
  bool fuse_out_rope_kv(const DeviceTensor& k, const DeviceTensor& v, const Staged& pos, int64_t rows,
                        DeviceTensor& k_cache, DeviceTensor& v_cache);
  // y = x · Wᵀ + bias through matmul_f16_tiled (bias may be null).
  void gemm_f16(const Buffer& w, const Buffer& x, uint32_t x_off, const Buffer& y, uint32_t y_off, const Buffer* bias,
                int64_t m, int64_t in, int64_t out);
  uint32_t wg_size() const { return wg_; }
  // Records attention_flash_coop for `rows` >= kFlashMinRows query rows (positions staged at
  // `pos`); false when it does not apply (switched off, tiles forced, head_dim, device, cache
  // offsets not multiples of 8 halves) or its pipeline cannot be created (then it is switched off
  // with a warning), and the caller runs attention_flash.
  bool attention_flash_coop(const DeviceTensor& q, const DeviceTensor& k_cache, const DeviceTensor& v_cache,
                            const Staged& pos, const AttentionParams& ap, int64_t rows, DeviceTensor& out);
  // a16 [m, stride] fp16 = x [m, k] rounded (RNE), zeros past k; stride even, >= k.
  void record_convert_f16(const Buffer& x, uint32_t x_off, const Buffer& a16, int64_t m, int64_t k, int64_t stride);
  // attention() below kFlashMinRows rows through attention_decode; false (nothing recorded) when
  // it is off or cannot take the call.
  bool attention_decode(const DeviceTensor& q, const DeviceTensor& k_cache, const DeviceTensor& v_cache,
                        std::span<const int32_t> positions, const Staged& pos, const AttentionParams& ap,
                        DeviceTensor& out);
  // y = x · Wᵀ + bias through convert_f16 + matmul_f16_coop (or _coop2 / _coop3, coop_kernel_); false when the pipeline cannot be
  // created (the path is then switched off with a warning and the caller falls back).
  bool gemm_coop(const Buffer& w, const Buffer& x, uint32_t x_off, const Buffer& y, uint32_t y_off, const Buffer* bias,
                 int64_t m, int64_t in, int64_t out);
  // The cooperative-matrix GEMM gemm_coop would record for this shape, with its version and
  // grid; null when none applies or its pipeline cannot be created (then switched off).
  struct CoopGemm {
    const Pipeline* pipeline = nullptr;
    int version = 0;
    uint32_t gx = 0, gy = 0;
  };
  CoopGemm coop_gemm(int64_t m, int64_t in, int64_t out);
  // Records that GEMM on activations already in fp16 (a16 [m, stride], stride a multiple of 8
  // for versions 2 and 3).
  void record_coop_gemm(const CoopGemm& g, const Buffer& w, const Buffer& a16, int64_t stride, const Buffer& y,
                        uint32_t y_off, const Buffer* bias, int64_t m, int64_t in, int64_t out);

  // The last add / ropes recorded, for the fusion peepholes; valid only while their command
  // is still the last one of the segment (Context::serial_back).
  struct PendingAdd {
    uint64_t serial = 0;
    std::shared_ptr<DeviceBuffer> x, y;
    uint32_t x_off = 0, y_off = 0;
    int64_t n = 0;
  };
  struct PendingRope {
    uint64_t serial = 0;
    std::shared_ptr<DeviceBuffer> x;
    uint32_t x_off = 0;
    int64_t rows = 0, cols = 0, head_dim = 0;
    Staged cs;
    // Rotated with the same cos/sin values: rope() stages one table per step for the same
    // positions and parameters, so the same staged copy means the same table.
    bool same_table(const PendingRope& o) const { return cs.buffer == o.cs.buffer && cs.offset == o.cs.offset; }
  };
  // An EXL3 output transform recorded at decode rows (exl3_hadamard_out), for the MLP peephole.
  struct PendingOut {
    uint64_t serial = 0;
    const Pipeline* pipeline = nullptr;
    const Buffer* z = nullptr;  // the product's scratch (partials at split * split_stride)
    std::shared_ptr<DeviceBuffer> svh, y;
    uint32_t y_off = 0, n = 0, out_f = 0, splits = 0, split_stride = 0;
    int64_t rows = 0;
    bool bias = false;  // the layer adds a bias (exl3_out_silu takes only bias-free layers)
    std::shared_ptr<DeviceBuffer> bias_buf;  // the layer's bias, or null
  };
  // The residual stream after exl3_hadamard_out RESID: x (rows x cols) and its block sums in
  // norm_sums_.
  struct PendingResid {
    uint64_t serial = 0;
    std::shared_ptr<DeviceBuffer> x;
    uint32_t x_off = 0;
    int64_t rows = 0, cols = 0;
  };
  // exl3_hadamard_out(z_g) -> gate, exl3_hadamard_out(z_u) -> up, silu_mul(gate, up) -> out as
  // one exl3_out_silu dispatch when the two transforms are the last commands; false (nothing
  // recorded) otherwise.
  bool fuse_out_silu(const DeviceTensor& gate, const DeviceTensor& up, DeviceTensor& out);
  // rope(q), rope(k), kv_store(k, v) as one dispatch when the two ropes are the last commands.
  bool fuse_rope_kv_store(const DeviceTensor& k, const DeviceTensor& v, const Staged& pos, int64_t rows,
                          DeviceTensor& k_cache, DeviceTensor& v_cache);

  std::shared_ptr<Context> ctx_;
  bool fuse_ = true;
  bool fuse_silu_ = true;  // TRELLIS_VULKAN_FUSE_SILU=0: no exl3_out_silu (under fuse_)
  bool flash_ = true;
  bool decode_ = false;
  bool decode_capable_ = false;
  int64_t last_decode_splits_ = 0;
  FlashTiles flash_forced_;
  bool flash_coop_ = true;
  bool flash_coop_emulation_ = false;
  bool flash_coop_logged_ = false;
  float flash_coop_rescale_ = 8.0f;
  PendingAdd last_add_;
  PendingResid last_resid_;
  std::optional<PendingNorm> last_norm_;
  std::optional<PendingMerge> last_merge_;
  bool submit_ = true;       // TRELLIS_VULKAN_SUBMIT=0: submit() does nothing
  bool fuse_merge_ = true;  // TRELLIS_VULKAN_FUSE_MERGE=0: no exl3_gemv*_hin AM (under fuse_)
  bool fuse_qkv_ = true;    // TRELLIS_VULKAN_FUSE_QKV=0: no exl3_out_rope_kv (under fuse_)
  bool fuse_resid_ = true;  // TRELLIS_VULKAN_FUSE_RESID=0: no exl3_hadamard_out RESID / NM (under fuse_)
  // [kGemvMaxRows, kNormSumsBlocks] fp32: the block sums of squares exl3_hadamard_out RESID writes.
  static constexpr int64_t kNormSumsBlocks = 64;
  std::shared_ptr<Buffer> norm_sums_;
  std::shared_ptr<Buffer> download_;  // download()'s staging buffer for device-local tensors (grown as needed)
  PendingOut outs_[3];  // [2] the latest decode output transform, [1] the one before, ...
  PendingRope ropes_[2];  // [1] the latest rope, [0] the one before
  // rope()'s cos/sin table, staged once per arena epoch for the same positions and parameters.
  struct RopeTable {
    uint64_t epoch = UINT64_MAX;
    const float* inv_freq = nullptr;
    int64_t half = 0;
    float scaling = 0;
    std::vector<int32_t> positions;
    std::vector<float> cs;
    Staged staged;
  };
  RopeTable rope_table_;
  uint32_t wg_ = 128;  // workgroup size of the 1-D shaders (multiple of the subgroup size)
  uint32_t rms_wide_wg_ = 128;
  bool hadamard_sg_capable_ = false;
  bool hadamard_sg_ = false;
  bool transform_f16_ = true;  // TRELLIS_VULKAN_TRANSFORM_F16=0: transform in fp32, then convert_f16
  bool gemv_subgroup_capable_ = false;
  bool gemv_subgroup_ = false;
  bool gemv_fout_ = false;
  bool gemv_scalar_add_ = true;  // TRELLIS_VULKAN_GEMV_SCALAR_ADD=0: pair the halves first  // TRELLIS_VULKAN_GEMV_FUSED_OUT=1: exl3_gemv*_hin_fout where _hin applies
  bool gemv_hin_ = true;  // TRELLIS_VULKAN_GEMV_HIN=0: exl3_hadamard_in, then exl3_gemv
  bool dense_gemv_legacy_ = false;  // TRELLIS_VULKAN_DENSE_GEMV_LEGACY=1: matmul_f16_gemv for every shape
  int dense_gemv_lanes_ = 0;         // TRELLIS_VULKAN_DENSE_GEMV_LANES=8|16|32: matmul_f16_gemv8's lanes (0: by in)
  bool gemv_prefetch_ = true;  // TRELLIS_VULKAN_GEMV_PREFETCH=0: exl3_gemv loads each slab as it decodes it
  int64_t gemv_target_groups_ = kGemvTargetGroups;  // TRELLIS_VULKAN_GEMV_GROUPS
  int64_t gemv_tiles_ = 4;  // exl3_gemv's G at m = 1 (TRELLIS_VULKAN_GEMV_TILES: 1, 2, 4 or 8)
  CoopPath coop_ = CoopPath::kOff;
  int coop_kernel_ = 1;
  size_t coop2_shape_ = 0;
  size_t coop3_variant_ = 0;
  // Scratch: 0 = decoded Ŵ of the GEMM path, 1 + 2i / 2 + 2i = xh / z of group member i,
  // kScratchA16 = fp16 activations of matmul_f16_coop, kScratchAttn = attention_decode's split
  // partials (only attention uses it, and it runs alone between linears).
  static constexpr int kScratchA16 = 1 + 2 * kMaxLinearGroup;
  static constexpr int kScratchAttn = kScratchA16 + 1;
  std::shared_ptr<Buffer> scratch_[kScratchAttn + 1];
};

Buffer& buffer_of(const DeviceTensor& t);

// Helpers for filling push constants: a view's element offset in units of `unit` bytes (the
// shader's array element), checked narrowing to uint32, ceil division.
inline uint32_t u32(int64_t v) {
  TRELLIS_CHECK(v >= 0 && v <= static_cast<int64_t>(UINT32_MAX));
  return static_cast<uint32_t>(v);
}
inline uint32_t elem(const DeviceTensor& t, size_t unit) {
  TRELLIS_CHECK(t.offset % unit == 0);
  return u32(static_cast<int64_t>(t.offset / unit));
}
inline uint32_t ceil_div(int64_t a, int64_t b) { return u32((a + b - 1) / b); }
// Element i of host data of dtype F32/F16/BF16 as float (any alignment).
float load_float(const std::byte* p, DType dtype, size_t i);

}  // namespace trellis::vk
