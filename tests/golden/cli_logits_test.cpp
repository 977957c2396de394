// Golden, through the CLI: `trellis logits` on every tiny-llama fixture writes the file format of
// the fixtures' reference files, with the same input ids and logits matching ExLlamaV3's
// (exl3-*) or transformers' (hf) within the runtime tolerances (rel-RMS <= 1e-2, top-1 >= 99%).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "format/safetensors.h"
#include "test_util.h"

namespace trellis {
namespace {

struct Case {
  const char* model;
  const char* reference;
};

class CliLogits : public ::testing::TestWithParam<Case> {};

TEST_P(CliLogits, MatchesReferenceFile) {
  if (!test::have_shared()) GTEST_SKIP() << "../shared not found";
  const Case c = GetParam();
  test::TempDir tmp;
  const std::string out_file = tmp.file("logits.safetensors");
  std::string out;
  const std::string cmd = test::trellis_binary() + " -q logits --device cpu --tokens 256 -m " +
                          test::shared_path(std::string("fixtures/tiny-llama/") + c.model) + " -f " +
                          test::shared_path("data/wikitext-2/wiki.test.raw") + " -o " + out_file;
  ASSERT_EQ(test::run_command(cmd, &out), 0) << out;
  const auto got = SafetensorsFile::open(out_file);
  const auto ref = SafetensorsFile::open(test::shared_path(std::string("fixtures/tiny-llama/reference/") + c.reference));
  for (const char* name : {"input_ids", "logits"}) {
    ASSERT_EQ(got->view(name).dtype, ref->view(name).dtype) << name;
    ASSERT_EQ(got->view(name).shape, ref->view(name).shape) << name;
  }
  const TensorView gi = got->view("input_ids"), ri = ref->view("input_ids");
  EXPECT_EQ(std::memcmp(gi.data, ri.data, gi.nbytes()), 0) << "input ids differ";
  const TensorView gl = got->view("logits"), rl = ref->view("logits");
  const int64_t vocab = rl.shape.back(), n = rl.shape[1];
  std::vector<float> a(static_cast<size_t>(gl.numel())), b(a.size());
  std::memcpy(a.data(), gl.data, a.size() * 4);
  std::memcpy(b.data(), rl.data, b.size() * 4);
  double err = 0, norm = 0;
  int64_t same = 0;
  for (int64_t t = 0; t < n; ++t) {
    const float* x = a.data() + t * vocab;
    const float* y = b.data() + t * vocab;
    for (int64_t j = 0; j < vocab; ++j) {
      err += (x[j] - y[j]) * static_cast<double>(x[j] - y[j]);
      norm += static_cast<double>(y[j]) * y[j];
    }
    same += std::max_element(x, x + vocab) - x == std::max_element(y, y + vocab) - y;
  }
  const double rel = std::sqrt(err / norm), top1 = static_cast<double>(same) / static_cast<double>(n);
  EXPECT_LE(rel, 1e-2);
  EXPECT_GE(top1, 0.99);
  std::printf("%s: rel_rms %.5f top1 %.4f\n", c.model, rel, top1);
}

INSTANTIATE_TEST_SUITE_P(TinyLlama, CliLogits,
                         ::testing::Values(Case{"hf", "tiny_hf.safetensors"},
                                           Case{"exl3-q3_mcg", "q3_mcg.safetensors"},
                                           Case{"exl3-q25_mul1", "q25_mul1.safetensors"},
                                           Case{"exl3-q6_mul1_h16", "q6_mul1_h16.safetensors"}),
                         [](const auto& info) {
                           std::string s = info.param.model;
                           for (char& ch : s)
                             if (ch == '-') ch = '_';
                           return s;
                         });

}  // namespace
}  // namespace trellis
