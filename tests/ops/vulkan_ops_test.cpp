// tests/ops/vulkan_ops_test.cpp: every Vulkan backend op against the CPU backend (the reference
// for every op) on odd sizes, offset views, dense fp16/bf16/fp32 and EXL3 linears with padding
// and bias, GEMV and GEMM row counts, GQA prefill and decode attention with a sliding window.
#if TRELLIS_WITH_VULKAN

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/fp16.h"
#include "exl3/codebook.h"
#include "exl3/tile.h"
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

TEST(VulkanOps, DenseLinearAllDtypesAndRowCounts) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  Backend& cpu = cpu_backend();
  const int64_t in = 37, out = 51;
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
          EXPECT_LT(test::rel_rms(got, want), 1e-6)
              << dtype_name(dt) << " m=" << m << " bias " << with_bias;
        }
      }
    }
  }
}

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
