// tests/ops/vulkan_exl3_hin_test.cpp: the EXL3 GEMV with the input transform fused in
// (exl3_gemv*_hin, decode rows) against the two-pass path (exl3_hadamard_in, then exl3_gemv):
// the same operations in the same order, so the layer's output must be bitwise the same. Row
// counts of both GEMV row variants (R = 1, R = 8 with rows past m), several K and every
// codebook, padded input and output with a bias, split-k (including a k whose split count the
// 128-block rule lowers), the portable modules, and a slab too large for the shared budget (the
// fallback).
#if TRELLIS_WITH_VULKAN

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/fp16.h"
#include "exl3/codebook.h"
#include "exl3/tile.h"
#include "ops/ops_test_util.h"
#include "ops/vulkan_test_util.h"
#include "test_util.h"

namespace trellis {
namespace {

using exl3::Codebook;

struct Layer {
  int64_t k, n, in, out;
  int K;
  Codebook cb;
  bool bias;
};

// Random trellis bits, suh/svh of random sign and size, an optional bias; the host copies stay
// need to live only through prepare_linear, which uploads them.
std::unique_ptr<LinearWeights> make_layer(vk::VulkanBackend& vk, const Layer& l, uint64_t seed) {
  test::SplitMix64 rng(seed);
  std::vector<uint16_t> suh(static_cast<size_t>(l.k)), svh(static_cast<size_t>(l.n)), bias(static_cast<size_t>(l.n));
  for (auto& s : suh) s = fp32_to_fp16((rng.next() & 1 ? 1.0f : -1.0f) * (0.5f + static_cast<float>(rng.next() % 100) / 100));
  for (auto& s : svh) s = fp32_to_fp16((rng.next() & 1 ? 1.0f : -1.0f) * 0.01f * (0.5f + static_cast<float>(rng.next() % 100) / 100));
  for (auto& b : bias) b = fp32_to_fp16(static_cast<float>(rng.next() % 200) / 100 - 1);
  std::vector<uint8_t> trellis(static_cast<size_t>((l.k / 16) * (l.n / 16) * exl3::tile_bytes(l.K)));
  for (auto& b : trellis) b = static_cast<uint8_t>(rng.next());
  LinearSource src;
  src.name = "test.gemv_hin";
  src.in_features = l.in;
  src.out_features = l.out;
  src.exl3 = exl3::Exl3LinearView{l.k, l.n, l.K, l.cb, trellis.data(), suh.data(), svh.data(), nullptr};
  if (l.bias) src.bias = TensorView{DType::kF16, {l.n}, reinterpret_cast<const std::byte*>(bias.data())};
  return vk.prepare_linear(src);
}

std::vector<float> run_linear(vk::VulkanBackend& vk, const LinearWeights& w, const std::vector<float>& x, int64_t m,
                              int64_t in, int64_t out, bool hin) {
  const bool was = vk.gemv_hin();
  vk.set_gemv_hin(hin);
  const DeviceTensor xt = vk.upload(test::f32_view(x, {m, in}), DType::kF32);
  DeviceTensor y = vk.alloc(DType::kF32, {m, out});
  vk.linear(w, xt, y);
  std::vector<float> got(static_cast<size_t>(m * out));
  vk.download(y, got.data());
  vk.set_gemv_hin(was);
  return got;
}

// Runs the layer both ways at m rows; expects bitwise equal, not all-zero outputs and that the
// fused path applies exactly when `fused` says.
void expect_same_bits(vk::VulkanBackend& vk, const Layer& l, int64_t m, bool fused, uint64_t seed) {
  const auto w = make_layer(vk, l, seed);
  const std::string what = "k=" + std::to_string(l.k) + " n=" + std::to_string(l.n) + " K=" + std::to_string(l.K) +
                           " cb=" + std::string(exl3::codebook_name(l.cb)) + " m=" + std::to_string(m);
  {
    const bool was = vk.gemv_hin();
    vk.set_gemv_hin(true);
    EXPECT_EQ(vk.gemv_hin_applies(*w, m), fused) << what;
    vk.set_gemv_hin(false);
    EXPECT_FALSE(vk.gemv_hin_applies(*w, m)) << what;
    vk.set_gemv_hin(was);
  }
  const auto x = test::random_floats(static_cast<size_t>(m * l.in), seed + 1);
  const std::vector<float> two = run_linear(vk, *w, x, m, l.in, l.out, false);
  const std::vector<float> one = run_linear(vk, *w, x, m, l.in, l.out, true);
  ASSERT_EQ(one.size(), two.size());
  size_t differ = 0, nonzero = 0;
  for (size_t i = 0; i < one.size(); ++i) {
    differ += std::memcmp(&one[i], &two[i], 4) != 0;
    nonzero += two[i] != 0.0f;
  }
  EXPECT_EQ(differ, 0u) << what << ": outputs that differ in their bits (first " << one[0] << " vs " << two[0] << ")";
  EXPECT_GT(nonzero, 0u) << what;
}

bool room_for_slabs(vk::VulkanBackend& vk) {
  // The largest slab the tests expect fused (4096 floats) plus the plain GEMV's reduction array.
  return vk.context().limits().maxComputeSharedMemorySize >= 4 * (vk::kGemvHinMaxFloats + 2 * 4 * vk::kGemvWg);
}

// Padded input (250 of 256) and output (300 of 384) with a bias, both row variants.
TEST(VulkanExl3Hin, FusedEqualsTwoPassesForKCodebookAndRows) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  if (!room_for_slabs(*vk)) GTEST_SKIP() << "less than 24 KiB of shared memory on " << vk->info().name;
  uint64_t seed = 500;
  for (int K : {2, 3, 4, 8})
    for (Codebook cb : {Codebook::k3Inst, Codebook::kMcg, Codebook::kMul1})
      for (int64_t m : {1, 3, 8}) expect_same_bits(*vk, Layer{256, 384, 250, 300, K, cb, true}, m, true, seed += 7);
}

// Long narrow layers: 8 splits of 16 slabs (k 2048), and k 1152 (72 slabs), where 8 splits
// would cut 128-blocks and the rule takes 3 of 24 slabs.
TEST(VulkanExl3Hin, FusedEqualsTwoPassesWithSplitK) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  if (!room_for_slabs(*vk)) GTEST_SKIP() << "less than 24 KiB of shared memory on " << vk->info().name;
  for (int64_t m : {1, 3, 8}) {
    expect_same_bits(*vk, Layer{2048, 128, 2000, 100, 3, Codebook::kMcg, false}, m, true, 600 + static_cast<uint64_t>(m));
    expect_same_bits(*vk, Layer{1152, 128, 1100, 128, 4, Codebook::k3Inst, true}, m, true, 700 + static_cast<uint64_t>(m));
  }
}

// The other GEMV modules (shared-memory reductions, the portable fp32 decode): the same slab
// code, so one layer and the two row variants.
TEST(VulkanExl3Hin, FusedEqualsTwoPassesInThePortableModules) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  if (!room_for_slabs(*vk)) GTEST_SKIP() << "less than 24 KiB of shared memory on " << vk->info().name;
  const bool sg = vk->gemv_subgroup(), f16 = vk->context().use_f16();
  for (int variant = 0; variant < 2; ++variant) {
    vk->set_gemv_subgroup(false);
    if (variant == 1) vk->context().set_use_f16(false);
    for (int64_t m : {1, 5})
      expect_same_bits(*vk, Layer{1024, 256, 1000, 256, 3, Codebook::kMcg, true}, m, true, 900 + static_cast<uint64_t>(m));
    vk->set_gemv_subgroup(sg);
    vk->context().set_use_f16(f16);
  }
}

// k 8192 over 8 splits: 1024 elements per split, so 8 rows need 8192 floats (over the budget:
// the two passes run) while one row fits.
TEST(VulkanExl3Hin, SlabOverTheSharedBudgetFallsBack) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  if (!room_for_slabs(*vk)) GTEST_SKIP() << "less than 24 KiB of shared memory on " << vk->info().name;
  const Layer l{8192, 128, 8100, 128, 2, Codebook::kMul1, false};
  expect_same_bits(*vk, l, 8, false, 800);
  expect_same_bits(*vk, l, 1, true, 801);
}

// The output transform fused in as well (exl3_gemv*_hin_fout, TRELLIS_VULKAN_GEMV_FUSED_OUT): the
// last workgroup of each 128-block sums the split-k partials and writes y. Bitwise the two-pass
// outputs for K 2, 3, 4, 8 and every codebook, both row variants, split-k layers (the 128-block
// counters then see splits · 8 / G workgroups), the portable modules, and each layer twice in
// a row (a counter left non-zero would break the second run); then three layers as one group.
std::vector<float> run_fout(vk::VulkanBackend& vk, const LinearWeights& w, const std::vector<float>& x, int64_t m,
                            int64_t in, int64_t out) {
  vk.set_gemv_fout(true);
  const DeviceTensor xt = vk.upload(test::f32_view(x, {m, in}), DType::kF32);
  DeviceTensor y = vk.alloc(DType::kF32, {m, out});
  vk.linear(w, xt, y);
  std::vector<float> got(static_cast<size_t>(m * out));
  vk.download(y, got.data());
  vk.set_gemv_fout(false);
  return got;
}

void expect_fout_same_bits(vk::VulkanBackend& vk, const Layer& l, int64_t m, uint64_t seed) {
  const auto w = make_layer(vk, l, seed);
  const std::string what = "k=" + std::to_string(l.k) + " n=" + std::to_string(l.n) + " K=" + std::to_string(l.K) +
                           " cb=" + std::string(exl3::codebook_name(l.cb)) + " m=" + std::to_string(m);
  ASSERT_TRUE(vk.gemv_hin_applies(*w, m)) << what;
  const auto x = test::random_floats(static_cast<size_t>(m * l.in), seed + 1);
  const std::vector<float> two = run_linear(vk, *w, x, m, l.in, l.out, false);
  for (int rep = 0; rep < 2; ++rep) {
    const std::vector<float> one = run_fout(vk, *w, x, m, l.in, l.out);
    ASSERT_EQ(one.size(), two.size());
    size_t differ = 0;
    for (size_t i = 0; i < one.size(); ++i) differ += std::memcmp(&one[i], &two[i], 4) != 0;
    EXPECT_EQ(differ, 0u) << what << " rep " << rep << ": outputs that differ in their bits";
  }
}

TEST(VulkanExl3Hin, FusedOutputEqualsTwoPasses) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  if (!room_for_slabs(*vk)) GTEST_SKIP() << "less than 24 KiB of shared memory on " << vk->info().name;
  uint64_t seed = 1500;
  for (int K : {2, 3, 4, 8})
    for (Codebook cb : {Codebook::k3Inst, Codebook::kMcg, Codebook::kMul1})
      for (int64_t m : {1, 3, 8}) expect_fout_same_bits(*vk, Layer{256, 384, 250, 300, K, cb, true}, m, seed += 7);
  for (int64_t m : {1, 8}) {
    expect_fout_same_bits(*vk, Layer{2048, 128, 2000, 100, 3, Codebook::kMcg, false}, m, 1600 + static_cast<uint64_t>(m));
    expect_fout_same_bits(*vk, Layer{1152, 256, 1100, 256, 4, Codebook::k3Inst, true}, m, 1700 + static_cast<uint64_t>(m));
  }
  const bool sg = vk->gemv_subgroup(), f16 = vk->context().use_f16();
  for (int variant = 0; variant < 2; ++variant) {
    vk->set_gemv_subgroup(false);
    if (variant == 1) vk->context().set_use_f16(false);
    for (int64_t m : {1, 5})
      expect_fout_same_bits(*vk, Layer{1024, 256, 1000, 256, 3, Codebook::kMul1, true}, m, 1900 + static_cast<uint64_t>(m));
    vk->set_gemv_subgroup(sg);
    vk->context().set_use_f16(f16);
  }
}

TEST(VulkanExl3Hin, FusedOutputGroupEqualsTwoPasses) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  if (!room_for_slabs(*vk)) GTEST_SKIP() << "less than 24 KiB of shared memory on " << vk->info().name;
  const Layer ls[3] = {{512, 512, 500, 512, 3, Codebook::kMcg, true},
                       {512, 128, 500, 128, 3, Codebook::kMcg, false},
                       {512, 256, 500, 200, 4, Codebook::kMul1, true}};
  std::vector<std::unique_ptr<LinearWeights>> ws;
  for (int i = 0; i < 3; ++i) ws.push_back(make_layer(*vk, ls[i], 2000 + static_cast<uint64_t>(i)));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(vk->gemv_hin_applies(*ws[i], 4)) << "linear " << i;
  const LinearWeights* wp[3] = {ws[0].get(), ws[1].get(), ws[2].get()};
  for (int64_t m : {1, 4}) {
    const auto x = test::random_floats(static_cast<size_t>(m * 500), 2100 + static_cast<uint64_t>(m));
    std::vector<float> want[3];
    for (int i = 0; i < 3; ++i) want[i] = run_linear(*vk, *ws[i], x, m, 500, ls[i].out, false);
    vk->set_gemv_fout(true);
    for (int rep = 0; rep < 2; ++rep) {
      const DeviceTensor xt = vk->upload(test::f32_view(x, {m, 500}), DType::kF32);
      DeviceTensor y[3] = {vk->alloc(DType::kF32, {m, ls[0].out}), vk->alloc(DType::kF32, {m, ls[1].out}),
                           vk->alloc(DType::kF32, {m, ls[2].out})};
      DeviceTensor* yp[3] = {&y[0], &y[1], &y[2]};
      vk->linears(wp, xt, yp);
      for (int i = 0; i < 3; ++i) {
        std::vector<float> got(static_cast<size_t>(m * ls[i].out));
        vk->download(y[i], got.data());
        EXPECT_EQ(std::memcmp(got.data(), want[i].data(), got.size() * 4), 0) << "linear " << i << " m=" << m
                                                                               << " rep " << rep;
      }
    }
    vk->set_gemv_fout(false);
  }
}

}  // namespace
}  // namespace trellis

#endif  // TRELLIS_WITH_VULKAN
