// Golden: perplexity of every tiny-llama fixture on WikiText-2 (16 windows of 512 tokens) against
// the values ExLlamaV3 / transformers computed (fixtures/tiny-llama/reference/ppl.jsonl), through
// the CLI, so the whole path (tokenizer, windows, forward, scoring) is covered.
#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "test_util.h"

namespace trellis {
namespace {

struct Case {
  const char* dir;
  const char* reference;  // "model" key in ppl.jsonl
};

class GoldenPerplexity : public ::testing::TestWithParam<Case> {};

TEST_P(GoldenPerplexity, CliMatchesReferenceWithin0_3Percent) {
  if (!test::have_shared()) GTEST_SKIP() << "../shared not found";
  const Case c = GetParam();
  double expected = 0;
  int64_t expected_tokens = 0;
  std::ifstream in(test::shared_path("fixtures/tiny-llama/reference/ppl.jsonl"));
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j["model"] == c.reference) {
      expected = j["ppl_ctx512_8192tok"];
      expected_tokens = j["tokens"];
    }
  }
  ASSERT_GT(expected, 0) << "no reference for " << c.reference;
  std::string out;
  const std::string cmd = test::trellis_binary() + " -q ppl --json --ctx 512 --chunks 16 -m " +
                          test::shared_path(std::string("fixtures/tiny-llama/") + c.dir) + " -f " +
                          test::shared_path("data/wikitext-2/wiki.test.raw");
  ASSERT_EQ(test::run_command(cmd + " 2>/dev/null", &out), 0) << out;
  const auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["tokens"].get<int64_t>(), expected_tokens);
  const double ppl = j["ppl"];
  EXPECT_NEAR(ppl, expected, expected * 0.003) << c.dir;
  std::printf("%s: ppl %.4f (reference %.4f, %+.3f%%)\n", c.dir, ppl, expected, 100 * (ppl / expected - 1));
}

INSTANTIATE_TEST_SUITE_P(TinyLlama, GoldenPerplexity,
                         ::testing::Values(Case{"hf", "tiny_hf"}, Case{"exl3-q3_mcg", "q3_mcg"},
                                           Case{"exl3-q25_mul1", "q25_mul1"}, Case{"exl3-q6_mul1_h16", "q6_mul1_h16"}),
                         [](const auto& info) {
                           std::string n = info.param.dir;
                           for (char& ch : n)
                             if (ch == '-') ch = '_';
                           return n;
                         });

}  // namespace
}  // namespace trellis
