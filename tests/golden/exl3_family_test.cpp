// Golden: more EXL3 conversions of tiny-llama made by ExLlamaV3 itself (tests/data/exl3_family:
// K = 1..6 mixes, all three codebooks, head bits 3/5/8, no output scales): logits and perplexity
// against ExLlamaV3's own numbers, so "reads what ExLlamaV3 writes" is checked beyond the three
// conversions in ../shared.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

#include "backends/backend.h"
#include "format/safetensors.h"
#include "model/model.h"
#include "test_util.h"

namespace trellis {
namespace {

std::string family_dir() { return std::string(TRELLIS_SOURCE_DIR) + "/tests/data/exl3_family"; }

class Exl3Family : public ::testing::TestWithParam<const char*> {};

TEST_P(Exl3Family, LogitsMatchExllamaV3) {
  const std::string name = GetParam();
  const auto f = SafetensorsFile::open(family_dir() + "/reference/" + name + ".safetensors");
  const TensorView ids_view = f->view("input_ids");
  const TensorView ref_view = f->view("logits");
  std::vector<int32_t> ids(static_cast<size_t>(ids_view.numel()));
  std::memcpy(ids.data(), ids_view.data, ids.size() * 4);
  const int64_t vocab = ref_view.shape.back();
  const auto* ref = reinterpret_cast<const float*>(ref_view.data);

  auto backend = make_cpu_backend();
  auto model = Model::load(family_dir() + "/" + name, *backend);
  std::vector<float> logits;
  model->forward(ids, 0, /*all_logits=*/true, logits);
  ASSERT_EQ(logits.size(), static_cast<size_t>(ref_view.numel()));
  double err = 0, norm = 0;
  int64_t same = 0;
  const int64_t n = static_cast<int64_t>(ids.size());
  for (int64_t t = 0; t < n; ++t) {
    const float* a = logits.data() + t * vocab;
    const float* b = ref + t * vocab;
    for (int64_t j = 0; j < vocab; ++j) {
      err += (a[j] - b[j]) * static_cast<double>(a[j] - b[j]);
      norm += static_cast<double>(b[j]) * b[j];
    }
    same += std::max_element(a, a + vocab) - a == std::max_element(b, b + vocab) - b;
  }
  const double rel_rms = std::sqrt(err / norm), top1 = static_cast<double>(same) / static_cast<double>(n);
  EXPECT_LE(rel_rms, 1e-2);
  EXPECT_GE(top1, 0.99);
  std::printf("%s: rel_rms %.5f top1 %.4f\n", name.c_str(), rel_rms, top1);
}

TEST_P(Exl3Family, PerplexityMatchesExllamaV3Within0_3Percent) {
  if (!test::have_shared()) GTEST_SKIP() << "../shared not found (needs wiki.test.raw)";
  const std::string name = GetParam();
  double expected = 0;
  for (const auto& j : nlohmann::json::parse(std::ifstream(family_dir() + "/reference/ppl.json")))
    if (j["model"] == name) expected = j["ppl_ctx512_8192tok"];
  ASSERT_GT(expected, 0) << "no reference for " << name;
  std::string out;
  const std::string cmd = test::trellis_binary() + " -q ppl --json --ctx 512 --chunks 16 -m " + family_dir() + "/" +
                          name + " -f " + test::shared_path("data/wikitext-2/wiki.test.raw");
  ASSERT_EQ(test::run_command(cmd + " 2>/dev/null", &out), 0) << out;
  const auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["tokens"].get<int64_t>(), 8176);
  const double ppl = j["ppl"];
  EXPECT_NEAR(ppl, expected, expected * 0.003);
  std::printf("%s: ppl %.4f (ExLlamaV3 %.4f, %+.3f%%)\n", name.c_str(), ppl, expected, 100 * (ppl / expected - 1));
}

INSTANTIATE_TEST_SUITE_P(TinyLlama, Exl3Family,
                         ::testing::Values("q15_mcg", "q2_3inst_h3", "q4_mcg_h8", "q5_3inst_h5_nos"));

}  // namespace
}  // namespace trellis
