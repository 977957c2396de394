// tests/ops/vulkan_ops_test.cpp: every Vulkan backend op against the CPU backend (the reference
// for every op) on odd sizes, offset views, dense fp16/bf16/fp32 and EXL3 linears with padding
// and bias, GEMV and GEMM row counts, GQA prefill and decode attention with a sliding window,
// both attention kernels (attention_flash, attention.comp) over GQA groups, head sizes, prefix
// offsets and every flash tile shape.
#if TRELLIS_WITH_VULKAN

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/fp16.h"
#include "exl3/codebook.h"
#include "exl3/tile.h"
#include "ops/attention_test_util.h"
#include "ops/ops_test_util.h"
#include "ops/vulkan_test_util.h"
#include "test_util.h"

namespace trellis {
namespace {

using test::random_floats;
using test::f32_view;
using test::fetch;

struct Pair {
  Backend& cpu;
  Backend& vk;
};

Backend& cpu_backend() {
  static std::unique_ptr<Backend> cpu = make_cpu_backend(1);
  return *cpu;
}

TEST(VulkanOps, DeviceInfo) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  const DeviceInfo& info = vk->info();
  EXPECT_EQ(info.backend, "vulkan");
  EXPECT_FALSE(info.name.empty());
  EXPECT_GT(info.subgroup_size, 0);
  EXPECT_FALSE(list_vulkan_devices().empty());
}

TEST(VulkanOps, UploadDownloadAndAlloc) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  const auto v = random_floats(37 * 3, 1);
  for (DType dt : {DType::kF32, DType::kF16}) {
    const DeviceTensor t = vk->upload(f32_view(v, {37, 3}), dt);
    const auto got = fetch(*vk, t);
    for (size_t i = 0; i < v.size(); ++i)
      EXPECT_EQ(got[i], dt == DType::kF32 ? v[i] : fp16_to_fp32(fp32_to_fp16(v[i])));
  }
  const DeviceTensor z = vk->alloc(DType::kF32, {5, 7});
  for (float f : fetch(*vk, z)) EXPECT_EQ(f, 0.0f);
}

// Pipelines are cached by (shader, specialization constants): the same pair gives the same
// pipeline whatever name the caller passes, another constant another pipeline, and the same pair
// asked for with another interface (bindings, push constants, written bindings) is an internal
// error, not a silently reused pipeline.
TEST(VulkanOps, PipelinesAreCachedByShaderAndSpec) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  vk::Context& ctx = vk->context();
  const vk::Pipeline& a = ctx.pipeline("add", "add", {64}, 2, 12, 1u << 0);
  const vk::Pipeline& b = ctx.pipeline("add under another name", "add", {64}, 2, 12, 1u << 0);
  EXPECT_EQ(&a, &b);
  const vk::Pipeline& c = ctx.pipeline("add", "add", {32}, 2, 12, 1u << 0);
  EXPECT_NE(&a, &c);
  const uint32_t s64[] = {64}, s32[] = {32}, s16[] = {16};
  EXPECT_EQ(ctx.find_pipeline("add", s64), &a);
  EXPECT_EQ(ctx.find_pipeline("add", s32), &c);
  EXPECT_EQ(ctx.find_pipeline("add", s16), nullptr);
  EXPECT_EQ(ctx.find_pipeline("silu_mul", s64), nullptr);
  EXPECT_EQ(a.shader, "add");
  EXPECT_EQ(a.spec, std::vector<uint32_t>{64});
  EXPECT_THROW(ctx.pipeline("add", "add", {64}, 3, 12, 1u << 0), Error);
  EXPECT_THROW(ctx.pipeline("add", "add", {64}, 2, 16, 1u << 0), Error);
}

// The staging-copy paths of discrete GPUs (uploads, zero-fills, downloads at an offset), forced
// on a device whose memory is host-visible.
TEST(VulkanOps, StagingPathsOfDiscreteGpus) {
  TRELLIS_VULKAN_OR_SKIP(shared);
  vk::VulkanBackend vk(0, /*staging_only=*/true);
  Backend& cpu = cpu_backend();
  const auto v = random_floats(41 * 6, 40);
  for (DType dt : {DType::kF32, DType::kF16}) {
    DeviceTensor t = vk.upload(f32_view(v, {41, 6}), dt);
    t = t.first_rows(3);
    t.offset = 6 * 5 * dtype_size(dt);
    const auto got = fetch(vk, t);
    for (size_t i = 0; i < got.size(); ++i)
      EXPECT_EQ(got[i], dt == DType::kF32 ? v[30 + i] : fp16_to_fp32(fp32_to_fp16(v[30 + i])));
  }
  for (float f : fetch(vk, vk.alloc(DType::kF16, {7, 3}))) EXPECT_EQ(f, 0.0f);
  // A download larger than every earlier one (the kept staging buffer grows).
  const auto whole = fetch(vk, vk.upload(f32_view(v, {41, 6}), DType::kF32));
  EXPECT_EQ(whole, v);
  // A dense linear and an add through device-only memory.
  const int64_t in = 29, out = 13, m = 2;
  const auto w = random_floats(static_cast<size_t>(in * out), 41);
  LinearSource src;
  src.name = "test.staging";
  src.in_features = in;
  src.out_features = out;
  src.dense = f32_view(w, {out, in});
  const auto wc = cpu.prepare_linear(src);
  const auto wv = vk.prepare_linear(src);
  const auto x = random_floats(static_cast<size_t>(m * in), 42);
  std::vector<float> want, got;
  for (Backend* be : {&cpu, static_cast<Backend*>(&vk)}) {
    const DeviceTensor xt = be->upload(f32_view(x, {m, in}), DType::kF32);
    DeviceTensor y = be->alloc(DType::kF32, {m, out});
    be->linear(be == &cpu ? *wc : *wv, xt, y);
    be->add(y, y);
    (be == &cpu ? want : got) = fetch(*be, y);
  }
  EXPECT_LT(test::rel_rms(got, want), 1e-6);
}

TEST(VulkanOps, Embedding) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  Backend& cpu = cpu_backend();
  const int64_t vocab = 37, dim = 19;
  const auto table = random_floats(static_cast<size_t>(vocab * dim), 2);
  const std::vector<int32_t> ids = {3, 0, 36, 5, 5};
  for (DType dt : {DType::kF16, DType::kF32}) {
    std::vector<float> want, got;
    for (Backend* be : {&cpu, static_cast<Backend*>(vk)}) {
      const DeviceTensor t = be->upload(f32_view(table, {vocab, dim}), dt);
      DeviceTensor out = be->alloc(DType::kF32, {5, dim});
      be->embedding(t, ids, out);
      (be == &cpu ? want : got) = fetch(*be, out);
    }
    EXPECT_EQ(got, want);
  }
}

TEST(VulkanOps, RmsNormPlainGroupedAndOffset) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  Backend& cpu = cpu_backend();
  const int64_t rows = 5, cols = 3 * 24;
  const auto x = random_floats(static_cast<size_t>(rows * cols), 3, 4.0f);
  for (int64_t group : {cols, int64_t{24}}) {
    const auto w = random_floats(static_cast<size_t>(group), 4);
    for (bool last_row : {false, true}) {
      std::vector<float> want, got;
      for (Backend* be : {&cpu, static_cast<Backend*>(vk)}) {
        DeviceTensor xt = be->upload(f32_view(x, {rows, cols}), DType::kF32);
        const DeviceTensor wt = be->upload(f32_view(w, {group}), DType::kF32);
        DeviceTensor out = be->alloc(DType::kF32, {rows, cols});
        if (last_row) {  // a one-row view at an offset, as the model's final norm uses
          xt = xt.first_rows(1);
          xt.offset = static_cast<size_t>((rows - 1) * cols) * 4;
          out = out.first_rows(1);
          out.offset = 4 * 4;
        }
        be->rms_norm(xt, wt, 1e-5f, group, out);
        (be == &cpu ? want : got) = fetch(*be, out);
      }
      EXPECT_LT(test::rel_rms(got, want), 1e-6) << "group " << group << " last_row " << last_row;
    }
  }
}

// Odd sizes (in = 37: matmul_f16_gemv at m <= 8) and in % 8 == 0 (matmul_f16_gemv8 at m <= 8 with
// 8 invocations per feature at in = 264 and 32 at 2056 and 4104; at 264 the legacy shader again
// with set_dense_gemv_legacy), every dtype and row count.
class VulkanDenseLinear : public ::testing::TestWithParam<std::tuple<int64_t, bool>> {};

TEST_P(VulkanDenseLinear, AllDtypesAndRowCounts) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  Backend& cpu = cpu_backend();
  const auto [in, legacy] = GetParam();
  const int64_t out = 51;
  vk->set_dense_gemv_legacy(legacy);
  struct Reset {
    vk::VulkanBackend* be;
    ~Reset() { be->set_dense_gemv_legacy(false); }
  } reset{vk};
  const auto w32 = random_floats(static_cast<size_t>(in * out), 5);
  const auto bias = random_floats(static_cast<size_t>(out), 6);
  std::vector<uint16_t> w16(w32.size()), wbf(w32.size()), b16(bias.size());
  for (size_t i = 0; i < w32.size(); ++i) {
    w16[i] = fp32_to_fp16(w32[i]);
    wbf[i] = fp32_to_bf16(w32[i]);
  }
  for (size_t i = 0; i < bias.size(); ++i) b16[i] = fp32_to_fp16(bias[i]);
  for (DType dt : {DType::kF16, DType::kBF16, DType::kF32}) {
    LinearSource src;
    src.name = "test.dense";
    src.in_features = in;
    src.out_features = out;
    const void* data = dt == DType::kF16 ? static_cast<const void*>(w16.data())
                       : dt == DType::kBF16 ? static_cast<const void*>(wbf.data())
                                            : static_cast<const void*>(w32.data());
    src.dense = TensorView{dt, {out, in}, static_cast<const std::byte*>(data)};
    for (bool with_bias : {false, true}) {
      src.bias.reset();
      if (with_bias) src.bias = TensorView{DType::kF16, {out}, reinterpret_cast<const std::byte*>(b16.data())};
      const auto wc = cpu.prepare_linear(src);
      const auto wv = vk->prepare_linear(src);
      for (int64_t m : {1, 3, 8, 9, 70}) {
        {
          const auto x = random_floats(static_cast<size_t>(m * in), 7 + static_cast<uint64_t>(m));
          std::vector<float> want, got;
          for (Backend* be : {&cpu, static_cast<Backend*>(vk)}) {
            const DeviceTensor xt = be->upload(f32_view(x, {m, in}), DType::kF32);
            DeviceTensor y = be->alloc(DType::kF32, {m, out});
            be->linear(be == &cpu ? *wc : *wv, xt, y);
            (be == &cpu ? want : got) = fetch(*be, y);
          }
          // fp32-level products, except from kCoopMinRows rows on a device with cooperative
          // matrices (the default prefill GEMM there): activations rounded once to fp16, at most
          // 2^-11/sqrt(3) ~ 2.8e-4 rms relative (measured 1.8e-4 on the H200).
          // Otherwise fp32 sums in another order than the CPU's, whose rounding grows with `in`
          // (the tiled GEMM at in = 4104: 1.2-1.3e-6 on lavapipe).
          const bool coop = vk->coop_path() != vk::CoopPath::kOff && m >= vk::kCoopMinRows;
          EXPECT_LT(test::rel_rms(got, want), coop ? 5e-4 : 1e-6 * std::max(1.0, static_cast<double>(in) / 1024))
              << dtype_name(dt) << " m=" << m << " bias " << with_bias << (coop ? " (cooperative matrices)" : "");
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, VulkanDenseLinear,
                         ::testing::Values(std::make_tuple(int64_t{37}, false), std::make_tuple(int64_t{264}, false),
                                           std::make_tuple(int64_t{264}, true), std::make_tuple(int64_t{2056}, false),
                                           std::make_tuple(int64_t{4104}, false)));

// EXL3 layer with random trellis bits, padded (in 250 of k 256, out 300 of n 384), with bias.
TEST(VulkanOps, Exl3LinearEveryVariantMatchesCpu) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  Backend& cpu = cpu_backend();
  const int64_t k = 256, n = 384, in = 250, out = 300;
  test::SplitMix64 rng(11);
  std::vector<uint16_t> suh(static_cast<size_t>(k)), svh(static_cast<size_t>(n)), bias(static_cast<size_t>(n));
  for (auto& s : suh) s = fp32_to_fp16((rng.next() & 1 ? 1.0f : -1.0f) * (0.5f + static_cast<float>(rng.next() % 100) / 100));
  for (auto& s : svh) s = fp32_to_fp16((rng.next() & 1 ? 1.0f : -1.0f) * 0.01f * (0.5f + static_cast<float>(rng.next() % 100) / 100));
  for (auto& b : bias) b = fp32_to_fp16(static_cast<float>(rng.next() % 200) / 100 - 1);
  for (int K = 1; K <= 8; ++K) {
    for (exl3::Codebook cb : {exl3::Codebook::k3Inst, exl3::Codebook::kMcg, exl3::Codebook::kMul1}) {
      std::vector<uint8_t> trellis(static_cast<size_t>((k / 16) * (n / 16) * exl3::tile_bytes(K)));
      for (auto& b : trellis) b = static_cast<uint8_t>(rng.next());
      exl3::Exl3LinearView view;
      view.k = k;
      view.n = n;
      view.K = K;
      view.codebook = cb;
      view.trellis = trellis.data();
      view.suh = suh.data();
      view.svh = svh.data();
      LinearSource src;
      src.name = "test.exl3";
      src.in_features = in;
      src.out_features = out;
      src.exl3 = view;
      src.bias = TensorView{DType::kF16, {n}, reinterpret_cast<const std::byte*>(bias.data())};
      const auto wc = cpu.prepare_linear(src);
      const auto wv = vk->prepare_linear(src);
      // Every variant on the GEMV path; the GEMM path (m > 8) on a few.
      std::vector<int64_t> ms = {1, 5};
      if (K % 3 == 1) ms.push_back(33);
      for (int64_t m : ms) {
        const auto x = random_floats(static_cast<size_t>(m * in), 100 + static_cast<uint64_t>(m));
        std::vector<float> want, got;
        for (Backend* be : {&cpu, static_cast<Backend*>(vk)}) {
          const DeviceTensor xt = be->upload(f32_view(x, {m, in}), DType::kF32);
          DeviceTensor y = be->alloc(DType::kF32, {m, out});
          be->linear(be == &cpu ? *wc : *wv, xt, y);
          (be == &cpu ? want : got) = fetch(*be, y);
        }
        EXPECT_LT(test::rel_rms(got, want), 1e-5) << "K=" << K << " cb=" << exl3::codebook_name(cb) << " m=" << m;
      }
    }
  }
}

// A long, narrow EXL3 layer: the GEMV splits k over the maximum number of workgroups (8).
TEST(VulkanOps, Exl3LinearSplitK) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  Backend& cpu = cpu_backend();
  const int64_t k = 1024, n = 128, in = 1000, out = 100;
  const int K = 3;
  test::SplitMix64 rng(12);
  std::vector<uint16_t> suh(static_cast<size_t>(k)), svh(static_cast<size_t>(n));
  for (auto& s : suh) s = fp32_to_fp16(rng.next() & 1 ? 1.0f : -1.0f);
  for (auto& s : svh) s = fp32_to_fp16(rng.next() & 1 ? 0.02f : -0.02f);
  std::vector<uint8_t> trellis(static_cast<size_t>((k / 16) * (n / 16) * exl3::tile_bytes(K)));
  for (auto& b : trellis) b = static_cast<uint8_t>(rng.next());
  LinearSource src;
  src.name = "test.splitk";
  src.in_features = in;
  src.out_features = out;
  src.exl3 = exl3::Exl3LinearView{k, n, K, exl3::Codebook::kMcg, trellis.data(), suh.data(), svh.data(), nullptr};
  const auto wc = cpu.prepare_linear(src);
  const auto wv = vk->prepare_linear(src);
  for (int64_t m : {1, 3}) {
    const auto x = random_floats(static_cast<size_t>(m * in), 200 + static_cast<uint64_t>(m));
    std::vector<float> want, got;
    for (Backend* be : {&cpu, static_cast<Backend*>(vk)}) {
      const DeviceTensor xt = be->upload(f32_view(x, {m, in}), DType::kF32);
      DeviceTensor y = be->alloc(DType::kF32, {m, out});
      be->linear(be == &cpu ? *wc : *wv, xt, y);
      (be == &cpu ? want : got) = fetch(*be, y);
    }
    EXPECT_LT(test::rel_rms(got, want), 1e-5) << "m=" << m;
  }
}

// The EXL3 transforms by subgroup shuffles (exl3_hadamard_{in,out}_sg, used at prefill sizes)
// against the shared-memory shaders: the same butterflies in the same order, so the same bits;
// padded inputs and outputs, a bias, row counts of the GEMV path (which keeps the shared-memory
// shaders either way) and of the GEMM path.
TEST(VulkanOps, Exl3TransformsBySubgroupEqualSharedMemory) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  if (!vk->hadamard_sg_capable()) GTEST_SKIP() << "no subgroup shuffles in lane groups of 8 on " << vk->info().name;
  const int64_t k = 2048, n = 384, in = 2000, out = 300;
  const int K = 4;
  test::SplitMix64 rng(13);
  std::vector<uint16_t> suh(static_cast<size_t>(k)), svh(static_cast<size_t>(n)), bias(static_cast<size_t>(n));
  for (auto& s : suh) s = fp32_to_fp16((rng.next() & 1 ? 1.0f : -1.0f) * (0.5f + static_cast<float>(rng.next() % 100) / 100));
  for (auto& s : svh) s = fp32_to_fp16((rng.next() & 1 ? 1.0f : -1.0f) * 0.01f * (0.5f + static_cast<float>(rng.next() % 100) / 100));
  for (auto& b : bias) b = fp32_to_fp16(static_cast<float>(rng.next() % 200) / 100 - 1);
  std::vector<uint8_t> trellis(static_cast<size_t>((k / 16) * (n / 16) * exl3::tile_bytes(K)));
  for (auto& b : trellis) b = static_cast<uint8_t>(rng.next());
  LinearSource src;
  src.name = "test.hadamard_sg";
  src.in_features = in;
  src.out_features = out;
  src.exl3 = exl3::Exl3LinearView{k, n, K, exl3::Codebook::kMcg, trellis.data(), suh.data(), svh.data(), nullptr};
  src.bias = TensorView{DType::kF16, {n}, reinterpret_cast<const std::byte*>(bias.data())};
  const auto w = vk->prepare_linear(src);
  const bool was = vk->hadamard_sg();
  for (int64_t m : {1, 9, 33}) {
    const auto x = random_floats(static_cast<size_t>(m * in), 300 + static_cast<uint64_t>(m));
    std::vector<float> ys[2];
    for (int sg = 0; sg < 2; ++sg) {
      vk->set_hadamard_sg(sg == 1);
      const DeviceTensor xt = vk->upload(f32_view(x, {m, in}), DType::kF32);
      DeviceTensor y = vk->alloc(DType::kF32, {m, out});
      vk->linear(*w, xt, y);
      ys[sg] = fetch(*vk, y);
    }
    ASSERT_EQ(ys[0].size(), ys[1].size());
    size_t differ = 0;
    for (size_t i = 0; i < ys[0].size(); ++i) differ += std::memcmp(&ys[0][i], &ys[1][i], 4) != 0;
    EXPECT_EQ(differ, 0u) << "m=" << m << ": outputs that differ in their bits (first " << ys[0][0] << " vs " << ys[1][0] << ")";
  }
  vk->set_hadamard_sg(was);
}

// At prefill sizes with a cooperative-matrix GEMM, the subgroup input transform writes the
// GEMM's fp16 activations itself (exl3_hadamard_in_sg_f16): the same bits as the fp32 transform
// followed by convert_f16 (both round with f32_to_f16_rne). Padded input, two GEMM row counts.
TEST(VulkanOps, Exl3TransformToF16EqualsConvertPass) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  if (vk->coop_path() == vk::CoopPath::kOff || !vk->hadamard_sg())
    GTEST_SKIP() << "no cooperative-matrix GEMM or subgroup transforms on " << vk->info().name;
  const int64_t k = 1024, n = 256, in = 1000, out = 250;
  const int K = 3;
  test::SplitMix64 rng(14);
  std::vector<uint16_t> suh(static_cast<size_t>(k)), svh(static_cast<size_t>(n));
  for (auto& s : suh) s = fp32_to_fp16((rng.next() & 1 ? 1.0f : -1.0f) * (0.5f + static_cast<float>(rng.next() % 100) / 100));
  for (auto& s : svh) s = fp32_to_fp16((rng.next() & 1 ? 1.0f : -1.0f) * 0.01f);
  std::vector<uint8_t> trellis(static_cast<size_t>((k / 16) * (n / 16) * exl3::tile_bytes(K)));
  for (auto& b : trellis) b = static_cast<uint8_t>(rng.next());
  LinearSource src;
  src.name = "test.transform_f16";
  src.in_features = in;
  src.out_features = out;
  src.exl3 = exl3::Exl3LinearView{k, n, K, exl3::Codebook::kMcg, trellis.data(), suh.data(), svh.data(), nullptr};
  const auto w = vk->prepare_linear(src);
  const bool was = vk->transform_f16();
  for (int64_t m : {vk::kCoopMinRows, 3 * vk::kCoopMinRows + 5}) {
    const auto x = random_floats(static_cast<size_t>(m * in), 400 + static_cast<uint64_t>(m));
    std::vector<float> ys[2];
    for (int f16 = 0; f16 < 2; ++f16) {
      vk->set_transform_f16(f16 == 1);
      const DeviceTensor xt = vk->upload(f32_view(x, {m, in}), DType::kF32);
      DeviceTensor y = vk->alloc(DType::kF32, {m, out});
      vk->linear(*w, xt, y);
      ys[f16] = fetch(*vk, y);
    }
    size_t differ = 0;
    for (size_t i = 0; i < ys[0].size(); ++i) differ += std::memcmp(&ys[0][i], &ys[1][i], 4) != 0;
    EXPECT_EQ(differ, 0u) << "m=" << m << ": outputs that differ in their bits";
  }
  vk->set_transform_f16(was);
}

TEST(VulkanOps, Rope) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  Backend& cpu = cpu_backend();
  const int64_t head_dim = 18, heads = 3, rows = 4;
  RopeParams rp;
  for (int64_t i = 0; i < head_dim / 2; ++i)
    rp.inv_freq.push_back(std::pow(10000.0f, -2.0f * static_cast<float>(i) / static_cast<float>(head_dim)));
  rp.attention_scaling = 1.25f;
  const std::vector<int32_t> pos = {0, 7, 1000, 5};
  const auto x = random_floats(static_cast<size_t>(rows * heads * head_dim), 12);
  std::vector<float> want, got;
  for (Backend* be : {&cpu, static_cast<Backend*>(vk)}) {
    DeviceTensor xt = be->upload(f32_view(x, {rows, heads * head_dim}), DType::kF32);
    be->rope(xt, head_dim, pos, rp);
    (be == &cpu ? want : got) = fetch(*be, xt);
  }
  EXPECT_LT(test::rel_rms(got, want), 1e-6);
}

// kv_store then attention, prefill (130 rows, several key chunks) and one decode row, GQA 4:2,
// with and without a sliding window.
TEST(VulkanOps, KvStoreAndAttentionPrefillDecode) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  Backend& cpu = cpu_backend();
  AttentionParams ap;
  ap.n_heads = 4;
  ap.n_kv_heads = 2;
  ap.head_dim = 40;
  ap.scale = 1.0f / std::sqrt(40.0f);
  const int64_t ctx = 150, prefill = 130, kvw = ap.n_kv_heads * ap.head_dim, qw = ap.n_heads * ap.head_dim;
  const auto q = random_floats(static_cast<size_t>((prefill + 1) * qw), 20, 2.0f);
  const auto k = random_floats(static_cast<size_t>((prefill + 1) * kvw), 21, 2.0f);
  const auto v = random_floats(static_cast<size_t>((prefill + 1) * kvw), 22);
  for (int64_t window : {int64_t{0}, int64_t{17}}) {
    ap.sliding_window = window;
    std::vector<float> want[3], got[3];
    for (Backend* be : {&cpu, static_cast<Backend*>(vk)}) {
      auto& res = be == &cpu ? want : got;
      DeviceTensor kc = be->alloc(DType::kF16, {ctx, kvw}), vc = be->alloc(DType::kF16, {ctx, kvw});
      const DeviceTensor qt = be->upload(f32_view(q, {prefill + 1, qw}), DType::kF32);
      const DeviceTensor kt = be->upload(f32_view(k, {prefill + 1, kvw}), DType::kF32);
      const DeviceTensor vt = be->upload(f32_view(v, {prefill + 1, kvw}), DType::kF32);
      DeviceTensor out = be->alloc(DType::kF32, {prefill + 1, qw});
      std::vector<int32_t> pos(static_cast<size_t>(prefill));
      for (int64_t i = 0; i < prefill; ++i) pos[static_cast<size_t>(i)] = static_cast<int32_t>(i);
      be->kv_store(kt.first_rows(prefill), vt.first_rows(prefill), pos, kc, vc);
      DeviceTensor o1 = out.first_rows(prefill);
      be->attention(qt.first_rows(prefill), kc, vc, pos, ap, o1);
      res[0] = fetch(*be, o1);
      // Decode: row `prefill` of q/k/v, as a view at an offset.
      DeviceTensor q1 = qt.first_rows(1), k1 = kt.first_rows(1), v1 = vt.first_rows(1), o2 = out.first_rows(1);
      q1.offset = static_cast<size_t>(prefill * qw) * 4;
      k1.offset = v1.offset = static_cast<size_t>(prefill * kvw) * 4;
      o2.offset = static_cast<size_t>(prefill * qw) * 4;
      const std::vector<int32_t> p1 = {static_cast<int32_t>(prefill)};
      be->kv_store(k1, v1, p1, kc, vc);
      be->attention(q1, kc, vc, p1, ap, o2);
      res[1] = fetch(*be, o2);
      res[2] = fetch(*be, kc);
    }
    EXPECT_EQ(got[2], want[2]) << "fp16 K cache differs";
    EXPECT_LT(test::rel_rms(got[0], want[0]), 1e-5) << "prefill, window " << window;
    EXPECT_LT(test::rel_rms(got[1], want[1]), 1e-5) << "decode, window " << window;
  }
}

using test::AttnCase;
using test::AttnInputs;
using test::attention_inputs;
using test::run_attention;

// Tolerance of the Vulkan attention against the CPU kernel, derived from the inputs. Both sum in
// fp32 in different orders; with u = 2^-24 the typical (rms) differences are: a score's dot
// product of head_dim terms ~ u·A (A = scale·Σ|q_i·k_i|, the largest over the
// pairs attended; partial sums of random-sign terms grow like sqrt(k), so the d roundings add up
// to ~u·A), which perturbs the softmax weights relatively by that much; exp() of an argument as
// large as 2·smax (smax = the largest |score|) ~ 2·smax·u relative (GPU exp is ex2(x·log2 e));
// the weighted sum of n values ~ sqrt(n)·u. Their sum times 4 for the constants of these
// estimates (measured on lavapipe: 20-50x below it); a wrong mask, head or offset is O(1e-2).
double attention_tolerance(const AttnCase& c, const AttnInputs& in) {
  const int64_t d = c.head_dim, kvw = c.n_kv_heads * d, qw = c.n_heads * d, group = c.n_heads / c.n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  double a_max = 0, s_max = 0;
  int64_t n_max = 0;
  for (int64_t r = 0; r < c.rows; ++r) {
    const int64_t last = in.pos[static_cast<size_t>(r)];
    const int64_t first = c.window > 0 ? std::max<int64_t>(0, last - c.window + 1) : 0;
    n_max = std::max(n_max, last - first + 1);
    for (int64_t h = 0; h < c.n_heads; ++h)
      for (int64_t t = first; t <= last; ++t) {
        double a = 0, s = 0;
        for (int64_t i = 0; i < d; ++i) {
          const double qi = in.q[static_cast<size_t>(r * qw + h * d + i)];
          const double ki = fp16_to_fp32(fp32_to_fp16(in.k[static_cast<size_t>(t * kvw + (h / group) * d + i)]));
          a += std::fabs(qi * ki);
          s += qi * ki;
        }
        a_max = std::max(a_max, a * scale);
        s_max = std::max(s_max, std::fabs(s) * scale);
      }
  }
  const double u = std::ldexp(1.0, -24);
  return 4 * u * (a_max + 2 * s_max + std::sqrt(static_cast<double>(n_max)) + 4);
}

// Both fp32 attention kernels (attention_flash at >= kFlashMinRows rows, attention.comp forced
// with set_flash_attention(false)) against the CPU kernel: head_dim 64, 128 and odd sizes (40, 18:
// partial vec4s), GQA groups 1..8 (6 leaves vectors of a block unused), row counts that leave
// partial query blocks and key tiles, prefix offsets, sliding windows, shuffled positions.
TEST(VulkanOps, AttentionFlashAndRowKernelsMatchCpu) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  Backend& cpu = cpu_backend();
  const AttnCase cases[] = {
      {4, 2, 40, 130, 0, 0},     {4, 2, 40, 130, 0, 17},   {8, 2, 64, 37, 45, 0},   {8, 2, 64, 16, 100, 0},
      {6, 1, 64, 33, 7, 0},      {3, 3, 128, 50, 19, 0},   {8, 1, 128, 21, 70, 29}, {4, 4, 18, 40, 3, 0},
      {4, 1, 64, 45, 20, 0, true}, {8, 2, 64, 9, 60, 0},
  };
  const bool flash_was = vk->flash_attention(), coop_was = vk->flash_coop();
  vk->set_flash_coop(false);  // the fp32 kernels (attention_flash_coop: vulkan_attention_coop_test.cpp)
  uint64_t seed = 100;
  for (const AttnCase& c : cases) {
    const AttnInputs in = attention_inputs(c, seed += 10);
    const auto want = run_attention(cpu, c, in);
    const double tol = attention_tolerance(c, in);
    for (bool flash : {true, false}) {
      vk->set_flash_attention(flash);
      const auto got = run_attention(*vk, c, in);
      const double err = test::rel_rms(got, want);
      EXPECT_LT(err, tol) << (flash ? "flash" : "row kernel") << ": heads " << c.n_heads << "/" << c.n_kv_heads
                          << " head_dim " << c.head_dim << " rows " << c.rows << " prefix " << c.prefix << " window "
                          << c.window << (c.shuffled ? " shuffled" : "");
    }
  }
  vk->set_flash_attention(flash_was);
  vk->set_flash_coop(coop_was);
}

// Every tile shape attention_flash may be given (those that fit this device's shared memory),
// including a GQA group larger than BR (heads split over workgroups).
TEST(VulkanOps, AttentionFlashEveryTileShape) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  Backend& cpu = cpu_backend();
  const AttnCase cases[] = {{8, 2, 40, 70, 11, 0}, {48, 2, 64, 20, 30, 13}};
  const vk::FlashTiles shapes[] = {{128, 8}, {64, 32}, {32, 32}, {32, 16}, {16, 32}, {16, 16}, {16, 8}};
  const bool flash_was = vk->flash_attention();
  vk->set_flash_attention(true);  // also under TRELLIS_VULKAN_FLASH_ATTENTION=0
  uint64_t seed = 300;
  int ran = 0;
  for (const AttnCase& c : cases) {
    const AttnInputs in = attention_inputs(c, seed += 10);
    const auto want = run_attention(cpu, c, in);
    const double tol = attention_tolerance(c, in);
    for (const vk::FlashTiles t : shapes) {
      if (vk::flash_shared_bytes(t, c.head_dim) > vk->context().limits().maxComputeSharedMemorySize) continue;
      vk->set_flash_tiles(t);
      EXPECT_LT(test::rel_rms(run_attention(*vk, c, in), want), tol)
          << "tiles " << t.rows << "x" << t.keys << " heads " << c.n_heads << "/" << c.n_kv_heads;
      ++ran;
    }
  }
  vk->set_flash_tiles({});
  vk->set_flash_attention(flash_was);
  EXPECT_GE(ran, 6);
}

// attention_decode (+ attention_decode_merge), the path below kFlashMinRows rows, against the CPU
// kernel and against attention.comp (TRELLIS_VULKAN_DECODE_ATTENTION=0's path): one decode row
// and short batches, contexts of one key, of one tile, not multiples of the split and long enough
// for many splits (Llama-3.1-8B's heads at 256), GQA groups 1, 4, 6 (a partial head block where
// the query registers hold fewer heads), 8, head_dim 64, 128, 256 and odd multiples of 4 (36,
// 40: lanes and chunks partly unused), sliding windows, shuffled positions, and rows of very
// different lengths (trailing splits empty). head_dim 18 is not a multiple of 4: attention.comp
// runs it.
TEST(VulkanOps, AttentionDecodeMatchesCpuAndRowKernel) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  if (!vk->decode_attention_capable()) GTEST_SKIP() << "no subgroup shuffle: attention_decode is not used";
  Backend& cpu = cpu_backend();
  struct DecodeCase {
    AttnCase c;
    int32_t short_row = -1;  // >= 0: row 1 is moved to this position (a short key range)
  };
  const DecodeCase cases[] = {
      {{32, 8, 128, 1, 255, 0}},       {{8, 2, 64, 1, 0, 0}},          {{8, 1, 128, 1, 1000, 0}},
      {{4, 4, 64, 1, 77, 0}},          {{16, 4, 128, 3, 300, 0}},      {{8, 2, 64, 5, 200, 50}},
      {{12, 2, 128, 2, 90, 0}},        {{4, 2, 40, 7, 33, 0}},         {{4, 1, 36, 2, 20, 0}},
      {{2, 1, 256, 1, 500, 0}},        {{8, 2, 64, 15, 40, 0, true}},  {{8, 2, 128, 2, 2000, 700}},
      {{8, 2, 64, 4, 600, 0}, 5},      {{8, 1, 128, 3, 31, 0}},        {{4, 2, 18, 3, 10, 0}},
  };
  const bool decode_was = vk->decode_attention();
  uint64_t seed = 500;
  int multi_split = 0;
  for (const DecodeCase& dc : cases) {
    const AttnCase& c = dc.c;
    AttnInputs in = attention_inputs(c, seed += 10);
    if (dc.short_row >= 0) in.pos[1] = dc.short_row;
    const auto want = run_attention(cpu, c, in);
    const double tol = attention_tolerance(c, in);
    std::vector<float> got[2];
    int64_t splits = 0;
    for (bool decode : {true, false}) {
      vk->set_decode_attention(decode);
      got[decode] = run_attention(*vk, c, in);
      if (decode) splits = vk->last_decode_splits();
      EXPECT_LT(test::rel_rms(got[decode], want), tol)
          << (decode ? "attention_decode" : "attention.comp") << ": heads " << c.n_heads << "/" << c.n_kv_heads
          << " head_dim " << c.head_dim << " rows " << c.rows << " prefix " << c.prefix << " window " << c.window;
    }
    EXPECT_LT(test::rel_rms(got[1], got[0]), 2 * tol) << "the two kernels disagree, head_dim " << c.head_dim;
    EXPECT_EQ(splits == 0, c.head_dim % 4 != 0) << "attention_decode taken or not, head_dim " << c.head_dim;
    multi_split += splits > 1;
  }
  vk->set_decode_attention(decode_was);
  EXPECT_GE(multi_split, 6);
}

TEST(VulkanOps, SiluMulAndAdd) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  Backend& cpu = cpu_backend();
  const int64_t n = 999;
  const auto g = random_floats(static_cast<size_t>(n), 30, 6.0f), u = random_floats(static_cast<size_t>(n), 31);
  std::vector<float> want[2], got[2];
  for (Backend* be : {&cpu, static_cast<Backend*>(vk)}) {
    auto& res = be == &cpu ? want : got;
    DeviceTensor gt = be->upload(f32_view(g, {n}), DType::kF32), ut = be->upload(f32_view(u, {n}), DType::kF32);
    DeviceTensor o = be->alloc(DType::kF32, {n});
    be->silu_mul(gt, ut, o);
    res[0] = fetch(*be, o);
    be->add(gt, ut);
    res[1] = fetch(*be, gt);
  }
  EXPECT_LT(test::rel_rms(got[0], want[0]), 1e-6);
  EXPECT_EQ(got[1], want[1]);
}

}  // namespace
}  // namespace trellis

#endif  // TRELLIS_WITH_VULKAN
