// End to end: `trellis run` and `trellis chat` through the CLI binary.
// Oracles: Hugging Face transformers' greedy continuations of the demo model
// (tests/data/smollm2/reference.safetensors), decoded to text with Hugging Face `tokenizers`
// (Python, $TRELLIS_PYTHON); and properties that need no reference (a reset conversation repeats
// its first answer, seeds reproduce, bad options fail with a message).
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "format/safetensors.h"
#include "test_util.h"

namespace trellis {
namespace {

std::string demo_model_dir() {
  if (const char* env = std::getenv("TRELLIS_DEMO_MODEL")) return env;
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "/root") + "/.cache/trellis/models/SmolLM2-135M-Instruct";
}

std::string python() {
  if (const char* env = std::getenv("TRELLIS_PYTHON"); env && *env) return env;
  return std::string(TRELLIS_SOURCE_DIR) + "/.cache/venv/bin/python";
}

std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// stdout of a trellis command (stderr dropped); asserts success.
std::string run_ok(const std::string& args) {
  std::string out;
  // run_command merges stderr into stdout; the group drops stderr (speed lines) first.
  const int rc = test::run_command("{ { " + test::trellis_binary() + " " + args + "; } 2>/dev/null; }", &out);
  EXPECT_EQ(rc, 0) << args << "\n" << out;
  return out;
}

// Hugging Face tokenizers' decoding of `ids` (skip_special_tokens=True).
std::string hf_decode(const std::string& tokenizer_json, const std::vector<int32_t>& ids) {
  std::string list;
  for (int32_t id : ids) list += (list.empty() ? "" : ",") + std::to_string(id);
  std::string out;
  const std::string cmd = quote(python()) +
                          " -c 'import sys; from tokenizers import Tokenizer; "
                          "sys.stdout.write(Tokenizer.from_file(sys.argv[1]).decode([" +
                          list + "], skip_special_tokens=True))' " + quote(tokenizer_json);
  if (test::run_command(cmd + " 2>&1", &out) != 0) ADD_FAILURE() << "tokenizers failed: " << out;
  return out;
}

std::vector<int32_t> read_ids(const SafetensorsFile& f, const std::string& name) {
  const TensorView v = f.view(name);
  std::vector<int32_t> ids(static_cast<size_t>(v.numel()));
  std::memcpy(ids.data(), v.data, ids.size() * 4);
  return ids;
}

bool have_python_tokenizers() {
  std::string out;
  return test::run_command(quote(python()) + " -c 'import tokenizers' 2>&1", &out) == 0;
}

TEST(CliRun, GreedyMatchesTransformersOnTheDemoModel) {
  const std::string dir = demo_model_dir();
  if (!std::filesystem::exists(dir + "/model.safetensors")) GTEST_SKIP() << "demo model not found at " << dir;
  if (!have_python_tokenizers()) GTEST_SKIP() << "Python tokenizers not available";
  const auto ref = SafetensorsFile::open(std::string(TRELLIS_SOURCE_DIR) + "/tests/data/smollm2/reference.safetensors");
  struct Prompt {
    int index;
    const char* args;
  };
  // Plain prompts 0 and 1 (no BOS: SmolLM2 adds none) and the chat prompt 3 (the template adds
  // SmolLM2's default system prompt, as transformers did when the reference was made).
  const Prompt prompts[] = {
      {0, "-p 'It was a bright cold day in April, and the clocks were striking thirteen.'"},
      {1, "-p 'Water boils at a temperature of 100 degrees'"},
      {3, "--chat -p 'What is the capital of France?'"},
  };
  for (const Prompt& p : prompts) {
    SCOPED_TRACE(p.index);
    const std::vector<int32_t> greedy = read_ids(*ref, "p" + std::to_string(p.index) + ".greedy");
    const std::string expected = hf_decode(dir + "/tokenizer.json", greedy);
    const std::string got =
        run_ok("run -m " + quote(dir) + " " + p.args + " -n 32 -t 0 --ignore-eos --device cpu");
    // run prints the continuation, then one newline.
    EXPECT_EQ(got, expected + "\n");
  }
}

TEST(CliChat, ResetForgetsTheConversationAndSeedsReproduce) {
  if (!test::have_shared()) GTEST_SKIP() << "../shared not found";
  const std::string dir = test::shared_path("fixtures/tiny-llama/hf");
  test::TempDir tmp;
  {
    std::ofstream f(tmp.file("in.txt"));
    f << "Tell me about the weather.\nAnd tomorrow?\n/reset\nTell me about the weather.\n/exit\n";
  }
  const std::string out =
      run_ok("chat -m " + quote(dir) + " -t 0 -n 12 < " + quote(tmp.file("in.txt")));
  // Non-tty output: reply 1, reply 2, "[reset]", reply 3; each reply ends with a newline.
  const size_t reset = out.find("[reset]\n");
  ASSERT_NE(reset, std::string::npos) << out;
  const std::string before = out.substr(0, reset), after = out.substr(reset + 8);
  ASSERT_FALSE(after.empty()) << out;
  // Greedy, and the conversation was cleared: the third reply repeats the first.
  EXPECT_EQ(before.substr(0, after.size()), after) << out;

  // Sampling: the same seed gives the same text, another seed (almost surely) another.
  const std::string base = "run -m " + quote(dir) + " -p 'Once upon a time' -n 24 -t 1.0 --top-k 0 --top-p 1 --min-p 0";
  const std::string a = run_ok(base + " --seed 5"), b = run_ok(base + " --seed 5"), c = run_ok(base + " --seed 6");
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

TEST(CliRun, BadOptionsFailWithAMessage) {
  if (!test::have_shared()) GTEST_SKIP() << "../shared not found";
  const std::string dir = test::shared_path("fixtures/tiny-llama/exl3-q3_mcg");
  struct Case {
    std::string args, needle;
  };
  const std::string long_prompt(4000, 'a');
  const Case cases[] = {
      {"run -m " + quote(dir) + " -p hi --temperature -1", "temperature"},
      {"run -m " + quote(dir) + " -p hi --top-p 0", "top_p"},
      {"run -m " + quote(dir) + " -p hi --device warp:3", "unknown device"},
      {"run -m " + quote(dir) + " -p hi --device cpu:2", "cpu"},
      {"run -m " + quote(dir), "exactly one of"},
      {"run -m " + quote(dir) + " -f /nonexistent/prompt.txt", "/nonexistent/prompt.txt"},
      {"run -m /nonexistent/model -p hi", "/nonexistent/model"},
      {"run -m " + quote(dir) + " --ctx 64 -p '" + long_prompt + "'", "context"},
  };
  for (const Case& c : cases) {
    std::string out;
    const int rc = test::run_command(test::trellis_binary() + " " + c.args + " 2>&1", &out);
    EXPECT_NE(rc, 0) << c.args;
    EXPECT_LT(rc, 128) << "crashed: " << c.args << "\n" << out;
    EXPECT_NE(out.find(c.needle), std::string::npos) << c.args << "\n" << out;
  }
}

// A --ctx beyond the model's max_position_embeddings (tiny-llama: 2048) is capped to it, and
// the run says so on stderr instead of silently allocating less than asked for.
TEST(CliRun, ContextBeyondTheModelIsCappedWithAWarning) {
  if (!test::have_shared()) GTEST_SKIP() << "../shared not found";
  const std::string dir = test::shared_path("fixtures/tiny-llama/exl3-q3_mcg");
  std::string out;
  ASSERT_EQ(test::run_command(test::trellis_binary() + " run -m " + quote(dir) + " --ctx 100000 -p hi -n 2 -t 0 2>&1", &out),
            0)
      << out;
  EXPECT_NE(out.find("a context of 100000 tokens was asked for"), std::string::npos) << out;
  EXPECT_NE(out.find("max_position_embeddings is 2048"), std::string::npos) << out;
  ASSERT_EQ(test::run_command(test::trellis_binary() + " run -m " + quote(dir) + " --ctx 2048 -p hi -n 2 -t 0 2>&1", &out),
            0)
      << out;
  EXPECT_EQ(out.find("was asked for"), std::string::npos) << out;
}

}  // namespace
}  // namespace trellis
