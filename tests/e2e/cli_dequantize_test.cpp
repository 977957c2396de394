// End-to-end: `trellis dequantize` on every EXL3 fixture, checked against the source Hugging Face
// model (names, shapes, layout, closeness) and against the scalar reference reconstruction
// (exact), plus its failure behaviour (nothing half-written is left behind).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/fp16.h"
#include "core/mmap_file.h"
#include "exl3/linear.h"
#include "format/model_dir.h"
#include "format/safetensors.h"
#include "test_util.h"

namespace trellis {
namespace {

namespace fs = std::filesystem;
using test::run_command;
using test::shared_path;

std::vector<float> to_floats(const TensorView& v) {
  std::vector<float> out(static_cast<size_t>(v.numel()));
  for (size_t i = 0; i < out.size(); ++i) {
    if (v.dtype == DType::kF32) {
      std::memcpy(&out[i], v.data + 4 * i, 4);
    } else {
      uint16_t h;
      std::memcpy(&h, v.data + 2 * i, 2);
      out[i] = v.dtype == DType::kF16 ? fp16_to_fp32(h) : bf16_to_fp32(h);
    }
  }
  return out;
}

struct Case {
  const char* name;
  // Upper bound of the relative RMS error of a reconstructed linear against the source weight,
  // for the smallest K in the model: EXL3 at K bits has a per-weight MSE near 2^-2K of the signal
  // (spec 7.5 and h100-anchors), so the RMS ratio is near 2^-K; generous factor for real data.
  double max_rel_rms;
};

class CliDequantize : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (!test::have_shared()) GTEST_SKIP() << "../shared not found";
  }
};

TEST_P(CliDequantize, MatchesSourceLayoutAndReferenceReconstruction) {
  const Case c = GetParam();
  const std::string in = shared_path(std::string("fixtures/tiny-llama/") + c.name);
  test::TempDir tmp;
  const std::string out = tmp.file("out");
  std::string log;
  ASSERT_EQ(run_command(test::trellis_binary() + " -q dequantize --dtype fp32 " + in + " " + out, &log), 0) << log;

  // A valid Hugging Face directory: same tensor names, shapes and layout as the source model.
  const auto src = TensorStore::open_dir(shared_path("fixtures/tiny-llama/hf"));
  const auto got = TensorStore::open_dir(out);
  ASSERT_EQ(got->names(), src->names());
  for (const std::string& name : src->names())
    EXPECT_EQ(got->info(name).shape, src->info(name).shape) << name;
  EXPECT_FALSE(fs::exists(out + "/quantization_config.json"));
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"})
    EXPECT_TRUE(fs::exists(out + "/" + f)) << f;
  const auto cfg = nlohmann::json::parse(read_text_file(out + "/config.json"));
  EXPECT_FALSE(cfg.contains("quantization_config"));
  EXPECT_EQ(cfg["hidden_size"], 256);
  EXPECT_EQ(cfg["architectures"][0], "LlamaForCausalLM");

  // Every reconstructed linear equals the reference reconstruction of the whole layer (fp32,
  // transposed to (out, in)) bit for bit, and is close to the unquantized source weight.
  const auto model = ModelDir::open(in);
  ASSERT_TRUE(model->is_exl3());
  for (const Exl3Layer& layer : model->exl3_layers()) {
    std::vector<uint16_t> scratch;
    const exl3::Exl3LinearView view = model->exl3_view(layer, scratch);
    std::vector<float> w(static_cast<size_t>(view.k * view.n));
    exl3::reconstruct_weight(view, w.data());
    const std::string name = layer.key + ".weight";
    const TensorView out_view = got->view(name);
    ASSERT_EQ(out_view.dtype, DType::kF32) << name;
    const std::vector<float> out_w = to_floats(out_view);
    const std::vector<float> src_w = to_floats(src->view(name));
    const int64_t rows = out_view.shape[0], cols = out_view.shape[1];  // (out, in)
    ASSERT_EQ(rows, view.n);
    ASSERT_EQ(cols, view.k);
    double err = 0, ref = 0;
    int64_t mismatches = 0;
    for (int64_t o = 0; o < rows; ++o)
      for (int64_t i = 0; i < cols; ++i) {
        const float a = out_w[static_cast<size_t>(o * cols + i)];
        const float b = w[static_cast<size_t>(i * view.n + o)];
        if (std::memcmp(&a, &b, 4) != 0) ++mismatches;
        const double s = src_w[static_cast<size_t>(o * cols + i)];
        err += (a - s) * (a - s);
        ref += s * s;
      }
    EXPECT_EQ(mismatches, 0) << name;
    const double rel = std::sqrt(err / ref);
    EXPECT_LT(rel, c.max_rel_rms) << name << " K=" << layer.K;
    // A random or transposed weight would be ~1.4 or worse: make sure this is real signal.
    EXPECT_GT(rel, 0.0) << name;
  }
  // Dense tensors are copied byte for byte.
  for (const std::string& name : got->names()) {
    if (model->tensors().contains(name)) {
      const TensorView a = got->view(name), b = model->tensors().view(name);
      ASSERT_EQ(a.nbytes(), b.nbytes()) << name;
      EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes()), 0) << name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CliDequantize,
                         ::testing::Values(Case{"exl3-q3_mcg", 0.25}, Case{"exl3-q25_mul1", 0.4},
                                           Case{"exl3-q6_mul1_h16", 0.04}),
                         [](const auto& info) {
                           std::string n = info.param.name;
                           for (char& ch : n)
                             if (ch == '-') ch = '_';
                           return n;
                         });

TEST(CliDequantizeFp16, WritesRoundedReference) {
  if (!test::have_shared()) GTEST_SKIP() << "../shared not found";
  const std::string in = shared_path("fixtures/tiny-llama/exl3-q3_mcg");
  test::TempDir tmp;
  std::string log;
  ASSERT_EQ(run_command(test::trellis_binary() + " -q dequantize " + in + " " + tmp.file("f16"), &log), 0) << log;
  ASSERT_EQ(run_command(test::trellis_binary() + " -q dequantize --dtype bf16 " + in + " " + tmp.file("bf16"), &log), 0)
      << log;
  const auto model = ModelDir::open(in);
  const auto f16 = TensorStore::open_dir(tmp.file("f16"));
  const auto bf16 = TensorStore::open_dir(tmp.file("bf16"));
  const Exl3Layer& layer = model->exl3_layers().front();
  std::vector<uint16_t> scratch;
  const exl3::Exl3LinearView view = model->exl3_view(layer, scratch);
  std::vector<float> w(static_cast<size_t>(view.k * view.n));
  exl3::reconstruct_weight(view, w.data());
  const TensorView a = f16->view(layer.key + ".weight"), b = bf16->view(layer.key + ".weight");
  ASSERT_EQ(a.dtype, DType::kF16);
  ASSERT_EQ(b.dtype, DType::kBF16);
  for (int64_t o = 0; o < view.n; ++o)
    for (int64_t i = 0; i < view.k; ++i) {
      uint16_t ha, hb;
      std::memcpy(&ha, a.data + 2 * (o * view.k + i), 2);
      std::memcpy(&hb, b.data + 2 * (o * view.k + i), 2);
      const float ref = w[static_cast<size_t>(i * view.n + o)];
      ASSERT_EQ(ha, fp32_to_fp16(ref));
      ASSERT_EQ(hb, fp32_to_bf16(ref));
    }
  const auto cfg = nlohmann::json::parse(read_text_file(tmp.file("bf16") + "/config.json"));
  EXPECT_EQ(cfg["dtype"], "bfloat16");
}

TEST(CliDequantizeErrors, RefusesExistingOutputAndLeavesNothingOnFailure) {
  if (!test::have_shared()) GTEST_SKIP() << "../shared not found";
  test::TempDir tmp;
  std::string log;
  const std::string in = shared_path("fixtures/tiny-llama/exl3-q3_mcg");
  fs::create_directory(tmp.file("exists"));
  EXPECT_NE(run_command(test::trellis_binary() + " dequantize " + in + " " + tmp.file("exists"), &log), 0);
  EXPECT_NE(log.find("exists"), std::string::npos) << log;

  // Not an EXL3 model.
  EXPECT_NE(run_command(test::trellis_binary() + " dequantize " + shared_path("fixtures/tiny-llama/hf") + " " +
                            tmp.file("o1"),
                        &log),
            0);
  EXPECT_NE(log.find("not an EXL3 model"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(tmp.file("o1")));

  // Corrupt input: nothing appears under the output name, no partial directory is left.
  const std::string bad = tmp.file("bad");
  fs::copy(in, bad, fs::copy_options::recursive);
  for (const auto& e : fs::directory_iterator(bad))
    fs::permissions(e.path(), fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::add);
  fs::resize_file(bad + "/model.safetensors", fs::file_size(bad + "/model.safetensors") - 100);
  EXPECT_NE(run_command(test::trellis_binary() + " dequantize " + bad + " " + tmp.file("o2"), &log), 0);
  EXPECT_NE(log.find("model.safetensors"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(tmp.file("o2")));
  for (const auto& e : fs::directory_iterator(tmp.path()))
    EXPECT_EQ(e.path().filename().string().find(".o2.partial"), std::string::npos) << e.path();

  // Overwrite works and replaces.
  EXPECT_EQ(run_command(test::trellis_binary() + " -q dequantize --overwrite " + in + " " + tmp.file("exists"), &log), 0)
      << log;
  EXPECT_TRUE(fs::exists(tmp.file("exists") + "/model.safetensors"));
}

TEST(CliDequantizeShards, SplitsIntoIndexedShards) {
  if (!test::have_shared()) GTEST_SKIP() << "../shared not found";
  test::TempDir tmp;
  std::string log;
  const std::string in = shared_path("fixtures/tiny-llama/exl3-q3_mcg");
  // ~1 MiB shards force several files and an index.
  ASSERT_EQ(run_command(test::trellis_binary() + " -q dequantize --shard-size 0.001 " + in + " " + tmp.file("o"), &log),
            0)
      << log;
  EXPECT_TRUE(fs::exists(tmp.file("o") + "/model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(tmp.file("o") + "/model.safetensors"));
  const auto got = TensorStore::open_dir(tmp.file("o"));
  const auto src = TensorStore::open_dir(shared_path("fixtures/tiny-llama/hf"));
  EXPECT_EQ(got->names(), src->names());
  EXPECT_GT(got->files().size(), 2u);
}

}  // namespace
}  // namespace trellis
