// End-to-end: `trellis inspect` on the ExLlamaV3-made fixtures and on broken directories.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "test_util.h"

namespace trellis {
namespace {

namespace fs = std::filesystem;
using test::run_command;
using test::shared_path;

nlohmann::json inspect_json(const std::string& dir) {
  std::string out;
  const int rc = run_command(test::trellis_binary() + " -q inspect --json '" + dir + "'", &out);
  EXPECT_EQ(rc, 0) << out;
  return nlohmann::json::parse(out);
}

class CliInspect : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::have_shared()) GTEST_SKIP() << "../shared not found";
  }
};

TEST_F(CliInspect, Q3McgReportsK3McgDecoderAndK6Head) {
  const auto j = inspect_json(shared_path("fixtures/tiny-llama/exl3-q3_mcg"));
  EXPECT_EQ(j["architecture"], "LlamaForCausalLM");
  EXPECT_EQ(j["config"]["num_hidden_layers"], 4);
  EXPECT_EQ(j["config"]["rope_theta"], 10000.0);
  int decoder = 0, head = 0;
  for (const auto& l : j["layers"]) {
    EXPECT_EQ(l["codebook"], "mcg") << l["key"];
    if (l["is_head"]) {
      ++head;
      EXPECT_EQ(l["key"], "lm_head");
      EXPECT_EQ(l["K"], 6);
    } else {
      ++decoder;
      EXPECT_EQ(l["K"], 3) << l["key"];
    }
  }
  EXPECT_EQ(decoder, 4 * 7);  // q, k, v, o, gate, up, down per layer
  EXPECT_EQ(head, 1);
  EXPECT_DOUBLE_EQ(j["quantization"]["decoder_bpw"].get<double>(), 3.0);
  EXPECT_DOUBLE_EQ(j["quantization"]["head_bpw"].get<double>(), 6.0);
  EXPECT_EQ(j["quantization"]["quant_method"], "exl3");
  // Total bytes = the tensor bytes of the file: file size minus the header.
  const auto file_size = fs::file_size(shared_path("fixtures/tiny-llama/exl3-q3_mcg/model.safetensors"));
  EXPECT_LT(j["total_bytes"].get<uint64_t>(), file_size);
  EXPECT_GT(j["total_bytes"].get<uint64_t>(), file_size - 65536);
  EXPECT_TRUE(j["warnings"].empty()) << j["warnings"];
}

TEST_F(CliInspect, Q25Mul1ReportsItsMixOfK2AndK3) {
  const auto j = inspect_json(shared_path("fixtures/tiny-llama/exl3-q25_mul1"));
  std::map<int, int> ks;
  double bits = 0, weights = 0;
  for (const auto& l : j["layers"]) {
    EXPECT_EQ(l["codebook"], "mul1");
    if (l["is_head"]) {
      EXPECT_EQ(l["K"], 4);
      continue;
    }
    const int k = l["K"];
    ks[k]++;
    const double w = l["in_features"].get<double>() * l["out_features"].get<double>();
    bits += k * w;
    weights += w;
  }
  EXPECT_GT(ks[2], 0);
  EXPECT_GT(ks[3], 0);
  EXPECT_EQ(ks.size(), 2u);
  // The recorded nominal bitrate is the K average over decoder weights (spec 5.11).
  EXPECT_NEAR(j["quantization"]["decoder_bpw"].get<double>(), bits / weights, 1e-12);
  EXPECT_NEAR(j["quantization"]["decoder_bpw"].get<double>(), j["quantization"]["config_bits"].get<double>(), 0.01);
}

TEST_F(CliInspect, Q6Mul1H16HasFp16Head) {
  const auto j = inspect_json(shared_path("fixtures/tiny-llama/exl3-q6_mul1_h16"));
  for (const auto& l : j["layers"]) {
    EXPECT_FALSE(l["is_head"].get<bool>());
    EXPECT_EQ(l["K"], 6);
  }
  EXPECT_DOUBLE_EQ(j["quantization"]["head_bpw"].get<double>(), 16.0);
  bool found = false;
  for (const auto& t : j["tensors"])
    if (t["name"] == "lm_head.weight") {
      found = true;
      EXPECT_EQ(t["dtype"], "F16");
      EXPECT_EQ(t["kind"], "dense");
    }
  EXPECT_TRUE(found);
}

TEST_F(CliInspect, UnquantizedModelHasNoLayers) {
  const auto j = inspect_json(shared_path("fixtures/tiny-llama/hf"));
  EXPECT_TRUE(j["layers"].empty());
  EXPECT_TRUE(j["quantization"]["quant_method"].is_null());
  EXPECT_DOUBLE_EQ(j["quantization"]["head_bpw"].get<double>(), 16.0);
}

TEST_F(CliInspect, TextOutputMentionsFormat) {
  std::string out;
  ASSERT_EQ(run_command(test::trellis_binary() + " inspect " + shared_path("fixtures/tiny-llama/exl3-q3_mcg"), &out), 0)
      << out;
  EXPECT_NE(out.find("EXL3"), std::string::npos) << out;
  EXPECT_NE(out.find("mcg"), std::string::npos) << out;
}

// A copy of a fixture directory the test may damage.
std::string copy_fixture(const test::TempDir& tmp, const std::string& name) {
  const std::string dst = tmp.file(name);
  fs::copy(shared_path("fixtures/tiny-llama/" + name), dst, fs::copy_options::recursive);
  for (const auto& e : fs::directory_iterator(dst))
    fs::permissions(e.path(), fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::add);
  return dst;
}

TEST_F(CliInspect, BrokenDirectoriesFailWithMessageNamingTheProblem) {
  test::TempDir tmp;
  std::string out;
  EXPECT_NE(run_command(test::trellis_binary() + " inspect " + tmp.file("does-not-exist"), &out), 0);
  EXPECT_NE(out.find("does-not-exist"), std::string::npos) << out;

  // Truncated safetensors file.
  const std::string dir = copy_fixture(tmp, "exl3-q3_mcg");
  fs::resize_file(dir + "/model.safetensors", fs::file_size(dir + "/model.safetensors") / 2);
  EXPECT_NE(run_command(test::trellis_binary() + " inspect " + dir, &out), 0);
  EXPECT_NE(out.find("model.safetensors"), std::string::npos) << out;
  EXPECT_EQ(out.find("Segmentation"), std::string::npos) << out;

  // Broken config.json.
  const std::string dir2 = copy_fixture(tmp, "exl3-q25_mul1");
  std::ofstream(dir2 + "/config.json") << "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": \"big\"}";
  EXPECT_NE(run_command(test::trellis_binary() + " inspect " + dir2, &out), 0);
  EXPECT_NE(out.find("config.json"), std::string::npos) << out;

  // Missing config.json.
  fs::remove(dir2 + "/config.json");
  EXPECT_NE(run_command(test::trellis_binary() + " inspect " + dir2, &out), 0);
  EXPECT_NE(out.find("config.json"), std::string::npos) << out;
}

TEST_F(CliInspect, UsageErrorsExitNonZero) {
  std::string out;
  EXPECT_NE(run_command(test::trellis_binary(), &out), 0);
  EXPECT_NE(run_command(test::trellis_binary() + " inspect", &out), 0);
  EXPECT_NE(run_command(test::trellis_binary() + " frobnicate", &out), 0);
  EXPECT_EQ(run_command(test::trellis_binary() + " --help", &out), 0);
  EXPECT_NE(out.find("dequantize"), std::string::npos);
}

}  // namespace
}  // namespace trellis
