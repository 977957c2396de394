// tests/ops/vulkan_fusion_test.cpp: the Vulkan backend's decode fusions (peepholes in the
// recorder): add(x, y) + rms_norm(x) as rms_norm_add, rope(q) + rope(k) + kv_store(k, v) as
// rope_kv_store, a gated MLP's two EXL3 output transforms + silu_mul as exl3_out_silu, the
// residual stream (an EXL3 output transform + add, then rms_norm folded into the next EXL3
// linears' input transform: exl3_hadamard_out RESID, exl3_gemv*_hin NM), the q/k/v tail (three
// EXL3 output transforms + rope(q) + rope(k) + kv_store(k, v): exl3_out_rope_kv), the decode
// attention's split merge inside the o projection (exl3_gemv*_hin AM). Each is
// bit-identical to the separate ops (fusion off), records fewer
// dispatches, and matches the CPU backend; shapes the fusion does not cover fall back.
#if TRELLIS_WITH_VULKAN

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/fp16.h"
#include "exl3/tile.h"
#include "ops/ops_test_util.h"
#include "ops/vulkan_test_util.h"
#include "test_util.h"

namespace trellis {
namespace {

using test::random_floats;
using test::f32_view;
using test::fetch;

Backend& cpu_backend() {
  static std::unique_ptr<Backend> cpu = make_cpu_backend(1);
  return *cpu;
}

// Restores the backend's fusion switch when a test ends.
struct FusionGuard {
  vk::VulkanBackend* be;
  bool saved;
  explicit FusionGuard(vk::VulkanBackend* b) : be(b), saved(b->fusion()) {}
  ~FusionGuard() { be->set_fusion(saved); }
};

TEST(VulkanFusion, AddRmsNormBitIdenticalToSeparateOps) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  FusionGuard guard(vk);
  const int64_t rows = 3, cols = 300;
  const auto x = random_floats(static_cast<size_t>(rows * cols), 60, 3.0f);
  const auto y = random_floats(static_cast<size_t>(rows * cols), 61);
  const auto w = random_floats(static_cast<size_t>(cols), 62);
  std::vector<float> out[3], xs[3];
  uint64_t dispatches[2] = {};
  for (int run = 0; run < 3; ++run) {  // 0: fused, 1: separate, 2: CPU
    Backend& be = run == 2 ? cpu_backend() : *vk;
    if (run < 2) vk->set_fusion(run == 0);
    DeviceTensor xt = be.upload(f32_view(x, {rows, cols}), DType::kF32);
    const DeviceTensor yt = be.upload(f32_view(y, {rows, cols}), DType::kF32);
    const DeviceTensor wt = be.upload(f32_view(w, {cols}), DType::kF32);
    DeviceTensor o = be.alloc(DType::kF32, {rows, cols});
    if (run < 2) vk->synchronize();
    const uint64_t d0 = run < 2 ? vk->context().stats().dispatches : 0;
    be.add(xt, yt);
    be.rms_norm(xt, wt, 1e-5f, cols, o);
    if (run < 2) dispatches[run] = vk->context().stats().dispatches - d0;
    out[run] = fetch(be, o);
    xs[run] = fetch(be, xt);
  }
  EXPECT_EQ(dispatches[0], 1u);
  EXPECT_EQ(dispatches[1], 2u);
  EXPECT_EQ(out[0], out[1]) << "fused norm differs from add + rms_norm";
  EXPECT_EQ(xs[0], xs[1]) << "fused residual differs from add";
  EXPECT_EQ(xs[0], xs[2]) << "residual differs from the CPU backend";
  EXPECT_LT(test::rel_rms(out[0], out[2]), 1e-6);
}

// Host copies of a random EXL3 layer (K = 3, MCG) for prepare_linear on either backend.
struct Exl3Host {
  std::vector<uint16_t> suh, svh, bias;
  std::vector<uint8_t> trellis;
  LinearSource src;
  Exl3Host(int64_t k, int64_t n, int64_t in, int64_t out, bool with_bias, uint64_t seed) {
    test::SplitMix64 rng(seed);
    suh.resize(static_cast<size_t>(k));
    svh.resize(static_cast<size_t>(n));
    bias.resize(static_cast<size_t>(n));
    for (auto& v : suh) v = fp32_to_fp16(rng.next() & 1 ? 1.0f : -1.0f);
    for (auto& v : svh) v = fp32_to_fp16((rng.next() & 1 ? 1.0f : -1.0f) * 0.02f * (0.5f + static_cast<float>(rng.next() % 100) / 100));
    for (auto& v : bias) v = fp32_to_fp16(static_cast<float>(rng.next() % 200) / 100 - 1);
    trellis.resize(static_cast<size_t>((k / 16) * (n / 16) * exl3::tile_bytes(3)));
    for (auto& b : trellis) b = static_cast<uint8_t>(rng.next());
    src.name = "test.mlp";
    src.in_features = in;
    src.out_features = out;
    src.exl3 = exl3::Exl3LinearView{k, n, 3, exl3::Codebook::kMcg, trellis.data(), suh.data(), svh.data(), nullptr};
    if (with_bias) src.bias = TensorView{DType::kF16, {n}, reinterpret_cast<const std::byte*>(bias.data())};
  }
};

// linears(gate, up) then silu_mul at decode rows, into a separate tensor and in place (the
// default mlp's form): the two output transforms and the product as one exl3_out_silu dispatch,
// bitwise the separate ops (gate, up and the product), close to the CPU backend; layers with a
// bias fall back.
TEST(VulkanFusion, Exl3OutSiluBitIdenticalToSeparateOps) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  FusionGuard guard(vk);
  struct Case {
    int64_t k, n, in, out, rows;
    bool bias, in_place;
  };
  for (const Case& c : {Case{1024, 384, 1000, 300, 1, false, false}, Case{256, 256, 256, 256, 3, false, true},
                        Case{256, 256, 256, 256, 1, true, true}}) {
    const Exl3Host gate(c.k, c.n, c.in, c.out, c.bias, 90 + static_cast<uint64_t>(c.rows));
    const Exl3Host up(c.k, c.n, c.in, c.out, c.bias, 190 + static_cast<uint64_t>(c.rows));
    const auto h = random_floats(static_cast<size_t>(c.rows * c.in), 91, 2.0f);
    std::vector<float> res[3][3];
    uint64_t dispatches[2] = {};
    for (int run = 0; run < 3; ++run) {  // 0: fused, 1: separate, 2: CPU
      Backend& be = run == 2 ? cpu_backend() : *vk;
      if (run < 2) vk->set_fusion(run == 0);
      const auto lg = be.prepare_linear(gate.src), lu = be.prepare_linear(up.src);
      const DeviceTensor ht = be.upload(f32_view(h, {c.rows, c.in}), DType::kF32);
      DeviceTensor g = be.alloc(DType::kF32, {c.rows, c.out}), u = be.alloc(DType::kF32, {c.rows, c.out});
      DeviceTensor o = c.in_place ? g : be.alloc(DType::kF32, {c.rows, c.out});
      if (run < 2) vk->synchronize();
      const uint64_t d0 = run < 2 ? vk->context().stats().dispatches : 0;
      const LinearWeights* ws[] = {lg.get(), lu.get()};
      DeviceTensor* ys[] = {&g, &u};
      be.linears(ws, ht, ys);
      be.silu_mul(g, u, o);
      if (run < 2) dispatches[run] = vk->context().stats().dispatches - d0;
      res[run][0] = fetch(be, g);
      res[run][1] = fetch(be, u);
      res[run][2] = fetch(be, o);
    }
    const std::string what = "k=" + std::to_string(c.k) + " rows=" + std::to_string(c.rows) +
                             (c.bias ? " bias" : "") + (c.in_place ? " in place" : "");
    EXPECT_EQ(dispatches[0] + (c.bias ? 0 : 2), dispatches[1]) << what;
    for (int i = 0; i < 3; ++i) EXPECT_EQ(res[0][i], res[1][i]) << what << " output " << i;
    for (int i = 0; i < 3; ++i) EXPECT_LT(test::rel_rms(res[0][i], res[2][i]), 1e-5) << what << " vs CPU, output " << i;
  }
}

// The decode layer's residual stream: o = linear(O, a); add(x, o); rms_norm(x, w, h); then h
// read by an EXL3 group (q/k/v-like, as linears) or one EXL3 linear (as linear). Fused: O's
// output transform adds into x and writes the block sums, the norm is formed inside the GEMVs
// (which still write h): two dispatches fewer per residual than add + rms_norm, one fewer than
// rms_norm_add. Every tensor (x, h, o, the outputs) is bitwise that of the separate ops (whose
// rms_norm takes the same block order while the fusion is switched on), and close to the CPU
// backend. A width that is not a multiple of 128 and prefill rows fall back.
TEST(VulkanFusion, ResidualStreamIntoExl3GemvBitIdenticalToSeparateOps) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  FusionGuard guard(vk);
  struct ResidGuard {
    vk::VulkanBackend* be;
    ~ResidGuard() { be->set_resid_fusion(true); }
  } resid_guard{vk};
  struct Case {
    int64_t hidden, rows, outs;  // outs: 1 = linear(), 3 = linears()
    bool fuses;
  };
  for (const Case& c : {Case{512, 1, 3, true}, Case{1024, 3, 1, true}, Case{384, 8, 3, true}, Case{4608, 1, 1, true},
                        Case{300, 1, 3, false},
                        Case{512, 9, 1, false}}) {
    const int64_t hp = (c.hidden + 127) / 128 * 128;
    const Exl3Host o_layer(hp, hp, c.hidden, c.hidden, false, 300 + static_cast<uint64_t>(c.hidden));
    std::vector<Exl3Host> layers;
    const int64_t widths[3] = {256, 300, 128};
    for (int64_t i = 0; i < c.outs; ++i)
      layers.emplace_back(hp, (widths[i] + 127) / 128 * 128, c.hidden, widths[i], i == 1,
                          400 + static_cast<uint64_t>(i + c.rows));
    const auto a = random_floats(static_cast<size_t>(c.rows * c.hidden), 92, 2.0f);
    const auto x = random_floats(static_cast<size_t>(c.rows * c.hidden), 93, 3.0f);
    const auto w = random_floats(static_cast<size_t>(c.hidden), 94);
    // runs: 0 fused, 1 separate (fusion off), 2 without the residual stream's fusion only (then
    // rms_norm_add in the norm's own order: close, not bitwise), 3 CPU
    std::vector<std::vector<float>> res[4];
    uint64_t dispatches[3] = {};
    for (int run = 0; run < 4; ++run) {
      Backend& be = run == 3 ? cpu_backend() : *vk;
      if (run < 3) {
        vk->set_fusion(run != 1);
        vk->set_resid_fusion(run != 2);
      }
      const auto lo = be.prepare_linear(o_layer.src);
      std::vector<std::unique_ptr<LinearWeights>> ls;
      for (const Exl3Host& l : layers) ls.push_back(be.prepare_linear(l.src));
      const DeviceTensor at = be.upload(f32_view(a, {c.rows, c.hidden}), DType::kF32);
      DeviceTensor xt = be.upload(f32_view(x, {c.rows, c.hidden}), DType::kF32);
      const DeviceTensor wt = be.upload(f32_view(w, {c.hidden}), DType::kF32);
      DeviceTensor ot = be.alloc(DType::kF32, {c.rows, c.hidden}), ht = be.alloc(DType::kF32, {c.rows, c.hidden});
      std::vector<DeviceTensor> ys;
      for (int64_t i = 0; i < c.outs; ++i) ys.push_back(be.alloc(DType::kF32, {c.rows, widths[i]}));
      if (run < 3) vk->synchronize();
      const uint64_t d0 = run < 3 ? vk->context().stats().dispatches : 0;
      be.linear(*lo, at, ot);
      be.add(xt, ot);
      be.rms_norm(xt, wt, 1e-5f, c.hidden, ht);
      if (c.outs == 1) {
        be.linear(*ls[0], ht, ys[0]);
      } else {
        std::vector<const LinearWeights*> wsp;
        std::vector<DeviceTensor*> ysp;
        for (int64_t i = 0; i < c.outs; ++i) {
          wsp.push_back(ls[static_cast<size_t>(i)].get());
          ysp.push_back(&ys[static_cast<size_t>(i)]);
        }
        be.linears(wsp, ht, ysp);
      }
      if (run < 3) dispatches[run] = vk->context().stats().dispatches - d0;
      res[run] = {fetch(be, xt), fetch(be, ht), fetch(be, ot)};
      for (const DeviceTensor& y : ys) res[run].push_back(fetch(be, y));
    }
    const std::string what = "hidden=" + std::to_string(c.hidden) + " rows=" + std::to_string(c.rows) +
                             " outs=" + std::to_string(c.outs);
    if (vk->gemv_hin_applies(*vk->prepare_linear(o_layer.src), c.rows) || !c.fuses) {
      EXPECT_EQ(dispatches[0] + (c.fuses ? 2 : 1), dispatches[1]) << what;
      EXPECT_EQ(dispatches[2] + 1, dispatches[1]) << what;
    }
    const char* names[] = {"x", "h", "o", "y0", "y1", "y2"};
    for (size_t i = 0; i < res[0].size(); ++i) {
      EXPECT_EQ(res[0][i], res[1][i]) << what << ": " << names[i] << " fused vs separate";
      EXPECT_LT(test::rel_rms(res[2][i], res[1][i]), 1e-6) << what << ": " << names[i] << " rms_norm_add vs separate";
      EXPECT_LT(test::rel_rms(res[0][i], res[3][i]), 1e-5) << what << ": " << names[i] << " vs CPU";
    }
  }
}

// The decode's q/k/v tail: linears(q, k, v) of EXL3 layers, rope(q), rope(k), kv_store(k, v)
// at decode rows. Fused: the three output transforms, the ropes and the cache stores as one
// exl3_out_rope_kv dispatch (5 fewer than the separate ops, 3 fewer than rope_kv_store), every
// tensor (q, k, v, both caches) bitwise that of the separate ops and close to the CPU backend;
// a layer with a bias, or a head wider than 128, falls back to rope_kv_store.
TEST(VulkanFusion, QkvTailBitIdenticalToSeparateOps) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  FusionGuard guard(vk);
  struct QkvGuard {
    vk::VulkanBackend* be;
    ~QkvGuard() { be->set_qkv_fusion(true); }
  } qkv_guard{vk};
  struct Case {
    int64_t head_dim, q_heads, kv_heads, rows;
    bool bias, fuses;
  };
  for (const Case& c : {Case{128, 2, 1, 1, false, true}, Case{64, 4, 2, 3, false, true},
                        Case{32, 8, 4, 2, false, true}, Case{64, 4, 2, 1, true, false},
                        Case{256, 2, 1, 1, false, false}}) {
    const int64_t hidden = 384, qw = c.q_heads * c.head_dim, kw = c.kv_heads * c.head_dim, ctx = 16;
    const Exl3Host lq(hidden, qw, hidden, qw, c.bias, 500 + static_cast<uint64_t>(c.head_dim));
    const Exl3Host lk(hidden, kw, hidden, kw, false, 600 + static_cast<uint64_t>(c.head_dim));
    const Exl3Host lv(hidden, kw, hidden, kw, false, 700 + static_cast<uint64_t>(c.head_dim));
    RopeParams rp;
    for (int64_t i = 0; i < c.head_dim / 2; ++i)
      rp.inv_freq.push_back(std::pow(10000.0f, -2.0f * static_cast<float>(i) / static_cast<float>(c.head_dim)));
    rp.attention_scaling = 1.05f;
    const auto h = random_floats(static_cast<size_t>(c.rows * hidden), 95, 2.0f);
    std::vector<int32_t> pos;
    for (int64_t r = 0; r < c.rows; ++r) pos.push_back(static_cast<int32_t>(5 + 2 * r));
    // runs: 0 fused, 1 separate (fusion off), 2 rope_kv_store (the q/k/v tail's fusion off), 3 CPU
    std::vector<float> res[4][5];
    uint64_t dispatches[3] = {};
    for (int run = 0; run < 4; ++run) {
      Backend& be = run == 3 ? cpu_backend() : *vk;
      if (run < 3) {
        vk->set_fusion(run != 1);
        vk->set_qkv_fusion(run == 0);
      }
      const auto wq = be.prepare_linear(lq.src), wk = be.prepare_linear(lk.src), wv = be.prepare_linear(lv.src);
      const DeviceTensor ht = be.upload(f32_view(h, {c.rows, hidden}), DType::kF32);
      DeviceTensor q = be.alloc(DType::kF32, {c.rows, qw}), k = be.alloc(DType::kF32, {c.rows, kw});
      DeviceTensor v = be.alloc(DType::kF32, {c.rows, kw});
      DeviceTensor kc = be.alloc(DType::kF16, {ctx, kw}), vc = be.alloc(DType::kF16, {ctx, kw});
      if (run < 3) vk->synchronize();
      const uint64_t d0 = run < 3 ? vk->context().stats().dispatches : 0;
      const LinearWeights* ws[] = {wq.get(), wk.get(), wv.get()};
      DeviceTensor* ys[] = {&q, &k, &v};
      be.linears(ws, ht, ys);
      be.rope(q, c.head_dim, pos, rp);
      be.rope(k, c.head_dim, pos, rp);
      be.kv_store(k, v, pos, kc, vc);
      if (run < 3) dispatches[run] = vk->context().stats().dispatches - d0;
      res[run][0] = fetch(be, q);
      res[run][1] = fetch(be, k);
      res[run][2] = fetch(be, v);
      res[run][3] = fetch(be, kc);
      res[run][4] = fetch(be, vc);
    }
    const std::string what = "head_dim=" + std::to_string(c.head_dim) + " rows=" + std::to_string(c.rows) +
                             (c.bias ? " bias" : "");
    EXPECT_EQ(dispatches[2], dispatches[1] - 2) << what;  // rope_kv_store: 3 ops as 1
    EXPECT_EQ(dispatches[0], dispatches[2] - (c.fuses ? 3 : 0)) << what;
    const char* names[] = {"q", "k", "v", "k cache", "v cache"};
    for (int i = 0; i < 5; ++i) {
      EXPECT_EQ(res[0][i], res[1][i]) << what << ": " << names[i] << " fused vs separate";
      EXPECT_EQ(res[2][i], res[1][i]) << what << ": " << names[i] << " rope_kv_store vs separate";
      EXPECT_LT(test::rel_rms(res[0][i], res[3][i]), 2e-3) << what << ": " << names[i] << " vs CPU";
    }
  }
}

// The decode attention's split merge folded into the o projection: attention() at decode rows
// with its keys split over workgroups (attention_decode + attention_decode_merge), then an EXL3
// linear of its output. Fused: the merge runs inside the linear's input transform (one dispatch
// fewer), the attention output (still written) and the projection bitwise those of the separate
// ops and close to the CPU backend.
TEST(VulkanFusion, AttentionMergeIntoExl3GemvBitIdenticalToSeparateOps) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  if (!vk->decode_attention()) GTEST_SKIP() << "attention_decode does not run on this device";
  FusionGuard guard(vk);
  struct MergeGuard {
    vk::VulkanBackend* be;
    ~MergeGuard() { be->set_merge_fusion(true); }
  } merge_guard{vk};
  AttentionParams ap;
  ap.n_heads = 4;
  ap.n_kv_heads = 2;
  ap.head_dim = 64;
  ap.scale = 0.125f;
  const int64_t qw = ap.n_heads * ap.head_dim, kw = ap.n_kv_heads * ap.head_dim, ctx = 160;
  const Exl3Host lo(qw, qw, qw, qw, false, 800);
  const auto kc_h = random_floats(static_cast<size_t>(ctx * kw), 96, 1.0f);
  const auto vc_h = random_floats(static_cast<size_t>(ctx * kw), 97, 1.0f);
  for (const std::vector<int32_t>& pos : {std::vector<int32_t>{150}, std::vector<int32_t>{70, 150}}) {
    const int64_t rows = static_cast<int64_t>(pos.size());
    const auto q = random_floats(static_cast<size_t>(rows * qw), 98, 1.0f);
    std::vector<float> res[4][2];
    uint64_t dispatches[3] = {};
    int64_t splits = 0;
    for (int run = 0; run < 4; ++run) {  // 0 fused, 1 separate, 2 the merge fusion off only, 3 CPU
      Backend& be = run == 3 ? cpu_backend() : *vk;
      if (run < 3) {
        vk->set_fusion(run != 1);
        vk->set_merge_fusion(run == 0);
      }
      const auto wo = be.prepare_linear(lo.src);
      const DeviceTensor qt = be.upload(f32_view(q, {rows, qw}), DType::kF32);
      const DeviceTensor kc = be.upload(f32_view(kc_h, {ctx, kw}), DType::kF16);
      const DeviceTensor vc = be.upload(f32_view(vc_h, {ctx, kw}), DType::kF16);
      DeviceTensor out = be.alloc(DType::kF32, {rows, qw}), y = be.alloc(DType::kF32, {rows, qw});
      if (run < 3) vk->synchronize();
      const uint64_t d0 = run < 3 ? vk->context().stats().dispatches : 0;
      be.attention(qt, kc, vc, pos, ap, out);
      if (run == 0) splits = vk->last_decode_splits();
      be.linear(*wo, out, y);
      if (run < 3) dispatches[run] = vk->context().stats().dispatches - d0;
      res[run][0] = fetch(be, out);
      res[run][1] = fetch(be, y);
    }
    const std::string what = "rows=" + std::to_string(rows);
    ASSERT_GT(splits, 1) << what << ": the keys were not split, no merge to fold";
    if (vk->gemv_hin_applies(*vk->prepare_linear(lo.src), rows)) {
      EXPECT_EQ(dispatches[0] + 1, dispatches[2]) << what;
    }
    const char* names[] = {"attention output", "projection"};
    for (int i = 0; i < 2; ++i) {
      EXPECT_EQ(res[0][i], res[1][i]) << what << ": " << names[i] << " fused vs separate";
      EXPECT_EQ(res[2][i], res[1][i]) << what << ": " << names[i] << " merge not fused vs separate";
      EXPECT_LT(test::rel_rms(res[0][i], res[3][i]), 1e-4) << what << ": " << names[i] << " vs CPU";
    }
  }
}

// rope(q), rope(k), kv_store(k, v) for prefill rows and a decode row at an offset view, GQA
// 4:2; head_dim 16 fuses, head_dim 18 (half odd) falls back to the separate ops.
TEST(VulkanFusion, RopeKvStoreBitIdenticalToSeparateOps) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  FusionGuard guard(vk);
  for (int64_t head_dim : {int64_t{16}, int64_t{18}}) {
    const int64_t qh = 4, kh = 2, rows = 5, ctx = 12, qw = qh * head_dim, kw = kh * head_dim;
    RopeParams rp;
    for (int64_t i = 0; i < head_dim / 2; ++i)
      rp.inv_freq.push_back(std::pow(10000.0f, -2.0f * static_cast<float>(i) / static_cast<float>(head_dim)));
    rp.attention_scaling = 1.1f;
    const auto q = random_floats(static_cast<size_t>(rows * qw), 70, 2.0f);
    const auto k = random_floats(static_cast<size_t>(rows * kw), 71, 2.0f);
    const auto v = random_floats(static_cast<size_t>(rows * kw), 72);
    const std::vector<int32_t> pos = {3, 4, 5, 6, 7};
    std::vector<float> res[3][4];
    uint64_t dispatches[2] = {};
    for (int run = 0; run < 3; ++run) {
      Backend& be = run == 2 ? cpu_backend() : *vk;
      if (run < 2) vk->set_fusion(run == 0);
      DeviceTensor qt = be.upload(f32_view(q, {rows, qw}), DType::kF32);
      DeviceTensor kt = be.upload(f32_view(k, {rows, kw}), DType::kF32);
      const DeviceTensor vt = be.upload(f32_view(v, {rows, kw}), DType::kF32);
      DeviceTensor kc = be.alloc(DType::kF16, {ctx, kw}), vc = be.alloc(DType::kF16, {ctx, kw});
      if (run < 2) vk->synchronize();
      const uint64_t d0 = run < 2 ? vk->context().stats().dispatches : 0;
      // Prefill of rows 0..3, then a decode row (row 4) as one-row views at an offset.
      const std::vector<int32_t> p4(pos.begin(), pos.begin() + 4), p1 = {pos[4]};
      DeviceTensor q4 = qt.first_rows(4), k4 = kt.first_rows(4);
      be.rope(q4, head_dim, p4, rp);
      be.rope(k4, head_dim, p4, rp);
      be.kv_store(k4, vt.first_rows(4), p4, kc, vc);
      DeviceTensor q1 = qt.first_rows(1), k1 = kt.first_rows(1), v1 = vt.first_rows(1);
      q1.offset = static_cast<size_t>(4 * qw) * 4;
      k1.offset = v1.offset = static_cast<size_t>(4 * kw) * 4;
      be.rope(q1, head_dim, p1, rp);
      be.rope(k1, head_dim, p1, rp);
      be.kv_store(k1, v1, p1, kc, vc);
      if (run < 2) dispatches[run] = vk->context().stats().dispatches - d0;
      res[run][0] = fetch(be, qt);
      res[run][1] = fetch(be, kt);
      res[run][2] = fetch(be, kc);
      res[run][3] = fetch(be, vc);
    }
    EXPECT_EQ(dispatches[0], head_dim % 4 == 0 ? 2u : 6u) << "head_dim " << head_dim;
    EXPECT_EQ(dispatches[1], 6u);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(res[0][i], res[1][i]) << "head_dim " << head_dim << " output " << i;
    EXPECT_LT(test::rel_rms(res[0][0], res[2][0]), 1e-6) << "q vs CPU";
    EXPECT_LT(test::rel_rms(res[0][1], res[2][1]), 1e-6) << "k vs CPU";
    EXPECT_EQ(res[0][3], res[2][3]) << "V cache vs CPU";
    EXPECT_LT(test::rel_rms(res[0][2], res[2][2]), 1e-3) << "K cache vs CPU";
  }
}

}  // namespace
}  // namespace trellis

#endif  // TRELLIS_WITH_VULKAN
