// tests/ops/vulkan_model_test.cpp: whole-model checks of the Vulkan backend (through
// make_backend("vulkan:0")) on the tiny-llama fixtures: logits against the transformers /
// ExLlamaV3 references within the golden tolerances (tests/golden/model_logits_test.cpp),
// incremental decoding against the one-pass logits, and greedy tokens identical to the CPU
// backend's (on one fixture).
#if TRELLIS_WITH_VULKAN

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backends/registry.h"
#include "format/safetensors.h"
#include "model/model.h"
#include "ops/vulkan_test_util.h"
#include "test_util.h"

namespace trellis {
namespace {

struct Case {
  const char* model;
  const char* reference;
  bool greedy;  // also compare greedy tokens with the CPU backend (one fixture: lavapipe is slow)
};

class VulkanModel : public ::testing::TestWithParam<Case> {};

TEST_P(VulkanModel, LogitsMatchReference) {
  if (!test::have_shared()) GTEST_SKIP() << "../shared not found";
  if (list_vulkan_devices().empty()) GTEST_SKIP() << "no Vulkan device";
  const std::unique_ptr<Backend> vk_owner = make_backend("vulkan:0");
  Backend* vk = vk_owner.get();
  const Case c = GetParam();
  const auto f = SafetensorsFile::open(test::shared_path(std::string("fixtures/tiny-llama/reference/") + c.reference));
  const TensorView ids_view = f->view("input_ids"), ref_view = f->view("logits");
  std::vector<int32_t> ids(static_cast<size_t>(ids_view.numel()));
  std::memcpy(ids.data(), ids_view.data, ids.size() * 4);
  std::vector<float> ref(static_cast<size_t>(ref_view.numel()));
  std::memcpy(ref.data(), ref_view.data, ref.size() * 4);
  // The first 128 of the 256 reference positions: lavapipe runs this model at a few hundred
  // tokens per second, and 128 positions still allow the golden test's one top-1 miss.
  const int64_t vocab = ref_view.shape.back(), n = std::min<int64_t>(128, static_cast<int64_t>(ids.size()));
  ids.resize(static_cast<size_t>(n));

  const std::string dir = test::shared_path(std::string("fixtures/tiny-llama/") + c.model);
  ModelOptions opt;
  opt.max_context = 512;
  auto model = Model::load(dir, *vk, opt);
  std::vector<float> logits;
  model->forward(ids, 0, /*all_logits=*/true, logits);
  double err = 0, norm = 0;
  int64_t same = 0;
  for (int64_t t = 0; t < n; ++t) {
    const float* a = logits.data() + t * vocab;
    const float* b = ref.data() + t * vocab;
    for (int64_t j = 0; j < vocab; ++j) {
      err += (a[j] - b[j]) * static_cast<double>(a[j] - b[j]);
      norm += static_cast<double>(b[j]) * b[j];
    }
    same += std::max_element(a, a + vocab) - a == std::max_element(b, b + vocab) - b;
  }
  const double rel = std::sqrt(err / norm), top1 = static_cast<double>(same) / static_cast<double>(n);
  std::printf("vulkan %s: rel_rms %.5f top1 %.4f\n", c.model, rel, top1);
  EXPECT_LE(rel, 1e-2);
  EXPECT_GE(top1, 0.99);

  // Incremental decoding (GEMV paths, m = 1) agrees with the one-pass logits (GEMM paths). The
  // one-pass forward left positions 0..n-1 in the cache, so step t reuses 0..t-1 from it. Both
  // are fp32 paths (1e-4) unless the prefill GEMM ran on cooperative matrices (n >= 64 rows):
  // then the one-pass activations were rounded to fp16 once per linear, and the cache the steps
  // read was filled that way, so the bound is the golden one.
  const auto* vkb = dynamic_cast<const vk::VulkanBackend*>(vk);
  const bool coop = vkb && vkb->coop_path() != vk::CoopPath::kOff && n >= vk::kCoopMinRows;
  std::vector<float> step;
  for (int64_t t = n - 3; t < n; ++t) {
    model->forward(std::span<const int32_t>(ids).subspan(static_cast<size_t>(t), 1), t, false, step);
    std::vector<float> one(logits.begin() + t * vocab, logits.begin() + (t + 1) * vocab);
    const double r = test::rel_rms(step, one);
    if (coop) std::printf("vulkan %s: position %ld, incremental vs one-pass (coop prefill) rel_rms %.5f\n", c.model,
                          static_cast<long>(t), r);
    EXPECT_LT(r, coop ? 1e-2 : 1e-4) << "position " << t;
  }
  if (!c.greedy) return;

  // Greedy continuation of a 12-token prompt: identical tokens on the CPU backend.
  auto greedy = [&](Backend& be) {
    auto m = Model::load(dir, be, opt);
    std::vector<int32_t> toks(ids.begin(), ids.begin() + 12);
    std::vector<float> out;
    m->forward(toks, 0, false, out);
    for (int i = 0; i < 16; ++i) {
      const int32_t next = static_cast<int32_t>(std::max_element(out.begin(), out.end()) - out.begin());
      toks.push_back(next);
      m->forward(std::span<const int32_t>(&toks.back(), 1), static_cast<int64_t>(toks.size()) - 1, false, out);
    }
    return toks;
  };
  auto cpu = make_cpu_backend(2);
  EXPECT_EQ(greedy(*vk), greedy(*cpu)) << c.model;
}

// Decode steps run through segment replay (vk_context.h): after the first step, each step
// re-submits the recorded command buffer with only the staged token id and position changed.
// Logits of every step agree with the CPU backend's, and are bit-identical to the same steps
// with replay turned off (recorded afresh every step), with the output transform in the GEMV,
// and without the residual stream's fusion.
TEST(VulkanModelReplay, DecodeStepsMatchCpu) {
  if (!test::have_shared()) GTEST_SKIP() << "../shared not found";
  if (list_vulkan_devices().empty()) GTEST_SKIP() << "no Vulkan device";
  const std::string dir = test::shared_path("fixtures/tiny-llama/exl3-q3_mcg");
  ModelOptions opt;
  opt.max_context = 64;
  const std::vector<int32_t> prompt = {1, 415, 293, 906, 285, 114, 287, 28};
  constexpr int kSteps = 6;
  // Greedy tokens from the CPU backend, with its logits per step.
  auto cpu = make_cpu_backend(2);
  auto cpu_model = Model::load(dir, *cpu, opt);
  std::vector<std::vector<float>> cpu_logits;
  std::vector<int32_t> toks = prompt;
  std::vector<float> out;
  cpu_model->forward(toks, 0, false, out);
  for (int i = 0; i < kSteps; ++i) {
    toks.push_back(static_cast<int32_t>(std::max_element(out.begin(), out.end()) - out.begin()));
    cpu_model->forward(std::span<const int32_t>(&toks.back(), 1), static_cast<int64_t>(toks.size()) - 1, false, out);
    cpu_logits.push_back(out);
  }
  double dispatches_per_step = 0;
  auto run = [&](bool replay, std::vector<std::vector<float>>& logits, bool fout = false, bool resid = true,
                 bool submit = true, bool staging_only = false) {
    vk::VulkanBackend be(0, staging_only);
    be.context().set_replay(replay);
    be.set_submit(submit);
    be.set_gemv_fout(fout);
    be.set_fusion(resid);
    auto m = Model::load(dir, be, opt);
    std::vector<float> o;
    m->forward(prompt, 0, false, o);
    const auto before = be.context().stats();
    for (int i = 0; i < kSteps; ++i) {
      const size_t t = prompt.size() + static_cast<size_t>(i);
      m->forward(std::span<const int32_t>(&toks[t], 1), static_cast<int64_t>(t), false, o);
      logits.push_back(o);
    }
    const auto after = be.context().stats();
    dispatches_per_step = static_cast<double>(after.dispatches - before.dispatches) / kSteps;
    std::printf("replay %s: per decode step %.1f dispatches, %.1f barriers per recorded step; %lu replayed, %lu recorded segments\n",
                replay ? "on" : "off", static_cast<double>(after.dispatches - before.dispatches) / kSteps,
                static_cast<double>(after.barriers - before.barriers) / static_cast<double>(std::max<uint64_t>(1, after.recorded - before.recorded)),
                static_cast<unsigned long>(after.replayed - before.replayed),
                static_cast<unsigned long>(after.recorded - before.recorded));
    return std::pair<uint64_t, uint64_t>(after.replayed - before.replayed, after.recorded - before.recorded);
  };
  std::vector<std::vector<float>> with, without, fused_out;
  const auto [replayed, recorded] = run(true, with);
  const double plain_dispatches = dispatches_per_step;
  const auto [replayed_off, recorded_off] = run(false, without);
  // The GEMV with its output transform fused (set_gemv_fout): the same logits bit for bit, with
  // fewer dispatches per step.
  run(true, fused_out, true);
  EXPECT_LT(dispatches_per_step, plain_dispatches) << "the fused output transform removed no dispatch";
  // With every decode fusion off (among them the residual stream's, exl3_hadamard_out RESID
  // and the norm in the GEMV, and the q/k/v tail's, exl3_out_rope_kv): the same logits bit for
  // bit, more dispatches.
  std::vector<std::vector<float>> no_resid;
  run(true, no_resid, false, false);
  EXPECT_GT(dispatches_per_step, plain_dispatches) << "the decode fusions removed no dispatch";
  // The step as one segment (submit() doing nothing) instead of three, the first two submitted
  // without waiting (Context::submit): the same logits bit for bit.
  std::vector<std::vector<float>> one_segment;
  const auto [replayed_one, recorded_one] = run(true, one_segment, false, true, false);
  EXPECT_GT(replayed + recorded, replayed_one + recorded_one) << "the step was not split into segments";
  // Device-local memory as on discrete GPUs: the logits copy joins the step's last segment (one
  // submission per step) and the steps still replay.
  std::vector<std::vector<float>> staged;
  const auto [replayed_staged, recorded_staged] = run(true, staged, false, true, true, true);
  EXPECT_GE(replayed_staged, static_cast<uint64_t>(kSteps - 1)) << "staged decode steps were not replayed";
  (void)recorded_staged;
  EXPECT_GE(replayed, static_cast<uint64_t>(kSteps - 1)) << "decode steps were not replayed";
  EXPECT_EQ(replayed_off, 0u);
  EXPECT_GE(recorded_off, static_cast<uint64_t>(kSteps));
  for (int i = 0; i < kSteps; ++i) {
    EXPECT_LT(test::rel_rms(with[static_cast<size_t>(i)], cpu_logits[static_cast<size_t>(i)]), 1e-3) << "step " << i;
    EXPECT_EQ(with[static_cast<size_t>(i)], without[static_cast<size_t>(i)]) << "step " << i;
    EXPECT_EQ(with[static_cast<size_t>(i)], fused_out[static_cast<size_t>(i)]) << "fused output, step " << i;
    EXPECT_EQ(with[static_cast<size_t>(i)], no_resid[static_cast<size_t>(i)]) << "unfused residual stream, step " << i;
    EXPECT_EQ(with[static_cast<size_t>(i)], one_segment[static_cast<size_t>(i)]) << "one segment per step, step " << i;
    EXPECT_EQ(with[static_cast<size_t>(i)], staged[static_cast<size_t>(i)]) << "device-local memory, step " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(TinyLlama, VulkanModel,
                         ::testing::Values(Case{"hf", "tiny_hf.safetensors", false},
                                           Case{"exl3-q3_mcg", "q3_mcg.safetensors", true},
                                           Case{"exl3-q25_mul1", "q25_mul1.safetensors", false},
                                           Case{"exl3-q6_mul1_h16", "q6_mul1_h16.safetensors", false}),
                         [](const auto& info) {
                           std::string s = info.param.model;
                           for (char& ch : s)
                             if (ch == '-') ch = '_';
                           return s;
                         });

}  // namespace
}  // namespace trellis

#endif  // TRELLIS_WITH_VULKAN
