// tests/ops/vulkan_attention_coop_test.cpp: prefill attention on cooperative matrices
// (attention_flash_coop_d64 / _d128) against the CPU kernel.
//
// Two ways to run it. On a device with the cooperative-matrix path (NVIDIA, subgroup size 32)
// the real modules run (VulkanAttentionCoop.MatchesCpu); elsewhere that test skips and says why.
// On any device with subgroup shuffles (lavapipe in CI) the same shader body runs with the
// cooperative-matrix operations emulated in plain GLSL (VulkanAttentionCoop.EmulatedMatchesCpu,
// shaders/coop_emulation.glsl): index arithmetic, fragment layouts as the extension defines them,
// masks, the softmax, the lazy rescaling and the epilogue are exercised, the tensor-core MMAs and
// real subgroup barriers are not.
// Accuracy: Q and P are rounded to fp16 (relative 2^-11 each, the CUDA tensor-core kernel's
// policy), everything else is fp32, so the bound is ~1e-3 relative rather than the fp32 kernels'
// 1e-5 (vulkan_ops_test.cpp).
#if TRELLIS_WITH_VULKAN

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ops/attention_test_util.h"
#include "ops/ops_test_util.h"
#include "ops/vulkan_test_util.h"
#include "test_util.h"

namespace trellis {
namespace {

using test::f32_view;
using test::fetch;
using test::random_floats;

Backend& cpu_backend() {
  static std::unique_ptr<Backend> cpu = make_cpu_backend(1);
  return *cpu;
}

using test::AttnCase;
using test::AttnInputs;
using test::attention_inputs;
using test::run_attention;

std::string describe(const AttnCase& c) {
  return fmt::format("heads {}/{} head_dim {} rows {} prefix {} window {}{}{}", c.n_heads, c.n_kv_heads, c.head_dim,
                     c.rows, c.prefix, c.window, c.shuffled ? " shuffled" : "",
                     c.ramp > 0 ? fmt::format(" ramp {}", c.ramp) : "");
}

// Bounds. Over the whole output: rel-RMS 3e-3 (the CUDA tensor-core kernels' bound), times
// 1 + s_max / 16 where the scores get large (the ramp cases: a score's fp16 error grows with
// |q|·|k|, ~2^-11 s). Per (row, head) vector: 1e-2 times the same factor, so that one wrong row,
// head or mask, O(1) on its own vector, is caught even where it is lost in the overall RMS.
// Measured with the emulated module on lavapipe: 2-4e-4 overall, at most 3.1e-3 per vector.
struct Errors {
  double all = 0, worst_vector = 0;
};

Errors errors(const AttnCase& c, const std::vector<float>& got, const std::vector<float>& want) {
  Errors e;
  e.all = test::rel_rms(got, want);
  const size_t d = static_cast<size_t>(c.head_dim);
  for (size_t b = 0; b < want.size(); b += d) {
    const std::vector<float> g(got.begin() + static_cast<ptrdiff_t>(b), got.begin() + static_cast<ptrdiff_t>(b + d));
    const std::vector<float> w(want.begin() + static_cast<ptrdiff_t>(b), want.begin() + static_cast<ptrdiff_t>(b + d));
    e.worst_vector = std::max(e.worst_vector, test::rel_rms(g, w));
  }
  return e;
}

double score_max(const AttnCase& c, const AttnInputs& in) {
  const int64_t d = c.head_dim, kvw = c.n_kv_heads * d, qw = c.n_heads * d, group = c.n_heads / c.n_kv_heads;
  double s_max = 0;
  for (int64_t r = 0; r < c.rows; ++r)
    for (int64_t h = 0; h < c.n_heads; ++h)
      for (int64_t t = 0; t <= in.pos[static_cast<size_t>(r)]; ++t) {
        double s = 0;
        for (int64_t i = 0; i < d; ++i)
          s += static_cast<double>(in.q[static_cast<size_t>(r * qw + h * d + i)]) *
               in.k[static_cast<size_t>(t * kvw + (h / group) * d + i)];
        s_max = std::max(s_max, std::fabs(s) / std::sqrt(static_cast<double>(d)));
      }
  return s_max;
}

// Rows not a multiple of 64 query vectors, a chunk after an earlier one, sliding windows, GQA
// groups 1, 4, 6 (a block's vectors straddle rows), 8 and 80 (a row's heads span blocks), shuffled
// positions, both head sizes, 16 rows (the smallest prefill), growing maxima.
const AttnCase kCases[] = {
    {32, 8, 128, 150, 0, 0},   {32, 8, 128, 70, 157, 0},   {32, 8, 128, 100, 40, 50},
    {8, 2, 64, 77, 30, 0},     {8, 8, 128, 33, 5, 0},      {8, 1, 64, 50, 20, 37},
    {6, 1, 128, 21, 0, 0},     {8, 2, 128, 45, 20, 0, true}, {4, 2, 64, 16, 0, 0},
    {80, 1, 64, 20, 10, 0},    {8, 2, 128, 140, 60, 0, false, 24.0}, {8, 2, 64, 90, 0, 70, false, 16.0},
};

// Runs every case at the default rescale slack and at 0 (rescale whenever a maximum grows) on the
// path the backend is set to, which must stay on (a pipeline failure would switch it off).
void check_cases(vk::VulkanBackend& vk, const char* label) {
  Backend& cpu = cpu_backend();
  uint64_t seed = 700;
  for (const AttnCase& c : kCases) {
    SCOPED_TRACE(describe(c));
    ASSERT_TRUE(vk.flash_coop_capable(c.head_dim));
    const AttnInputs in = attention_inputs(c, seed += 10);
    const auto want = run_attention(cpu, c, in);
    const double s_max = score_max(c, in), scale_bound = 1 + s_max / 16;
    for (float slack : {8.0f, 0.0f}) {
      vk.set_flash_coop_rescale(slack);
      const auto got = run_attention(vk, c, in);
      ASSERT_TRUE(vk.flash_coop()) << label << ": the pipeline could not be created";
      const Errors e = errors(c, got, want);
      std::printf("%s %s slack %g: rel-RMS %.2e, worst vector %.2e (largest score %.1f)\n", label,
                  describe(c).c_str(), slack, e.all, e.worst_vector, s_max);
      EXPECT_LT(e.all, 3e-3 * scale_bound) << label << " slack " << slack;
      EXPECT_LT(e.worst_vector, 1e-2 * scale_bound) << label << " slack " << slack;
      for (float x : got) ASSERT_TRUE(std::isfinite(x)) << label;
    }
  }
  vk.set_flash_coop_rescale(8.0f);
}

// Restores the backend's attention settings when a test ends.
class FlashCoopSettings {
 public:
  explicit FlashCoopSettings(vk::VulkanBackend& vk) : vk_(vk), flash_(vk.flash_attention()), coop_(vk.flash_coop()) {
    vk_.set_flash_attention(true);
    vk_.set_flash_coop(true);
    vk_.set_flash_tiles({});
  }
  ~FlashCoopSettings() {
    vk_.set_flash_attention(flash_);
    vk_.set_flash_coop(coop_);
    vk_.set_flash_coop_emulation(false);
    vk_.set_flash_coop_rescale(8.0f);
  }

 private:
  vk::VulkanBackend& vk_;
  bool flash_, coop_;
};

TEST(VulkanAttentionCoop, MatchesCpu) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  if (!vk->flash_coop_capable(128) || !vk->flash_coop_capable(64))
    GTEST_SKIP() << "device '" << vk->info().name << "' has no attention_flash_coop path (cooperative matrices: "
                 << vk->context().coop().detail << "; subgroup size " << vk->info().subgroup_size << ")";
  FlashCoopSettings keep(*vk);
  check_cases(*vk, vk->context().coop().khr ? "khr" : "nv");
}

TEST(VulkanAttentionCoop, EmulatedMatchesCpu) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  FlashCoopSettings keep(*vk);
  vk->set_flash_coop_emulation(true);
  if (!vk->flash_coop_capable(128) || !vk->flash_coop_capable(64))
    GTEST_SKIP() << "device '" << vk->info().name << "' cannot run the emulated module (subgroup shuffles, "
                 << vk::flash_coop_shared_bytes(128) + 8192 << " bytes of shared memory)";
  check_cases(*vk, "emulated");
}

// TRELLIS_VULKAN_FLASH_COOP=0's setter and forced tiles keep attention_flash: the result is then
// the fp32 kernel's (within 1e-5 of the CPU), not the fp16-rounded one.
TEST(VulkanAttentionCoop, SwitchKeepsScalarFlash) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  FlashCoopSettings keep(*vk);
  // The device's own cooperative-matrix path where it has one (the emulated module needs more
  // shared memory than NVIDIA's Vulkan driver gives a workgroup), else the emulation (lavapipe).
  if (!vk->flash_coop_capable(128)) vk->set_flash_coop_emulation(true);
  if (!vk->flash_coop_capable(128)) GTEST_SKIP() << "no attention_flash_coop path, emulated or not";
  const AttnCase c{8, 2, 128, 40, 10, 0};
  const AttnInputs in = attention_inputs(c, 900);
  const auto want = run_attention(cpu_backend(), c, in);
  const double coop_err = test::rel_rms(run_attention(*vk, c, in), want);
  EXPECT_GT(coop_err, 1e-5) << "fp16 Q and P leave a trace";
  vk->set_flash_coop(false);
  EXPECT_LT(test::rel_rms(run_attention(*vk, c, in), want), 1e-5) << "set_flash_coop(false)";
  vk->set_flash_coop(true);
  vk->set_flash_tiles({32, 16});
  EXPECT_LT(test::rel_rms(run_attention(*vk, c, in), want), 1e-5) << "forced attention_flash tiles";
  vk->set_flash_tiles({});
  EXPECT_THROW(vk->set_flash_coop_rescale(16.0f), Error);
  EXPECT_THROW(vk->set_flash_coop_rescale(-1.0f), Error);
}

}  // namespace
}  // namespace trellis

#endif  // TRELLIS_WITH_VULKAN
