// Golden: whole-model logits on the tiny-llama fixtures against the references computed by
// Hugging Face transformers (hf/) and by ExLlamaV3 (exl3-*), on the CPU backend.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "backends/backend.h"
#include "format/safetensors.h"
#include "model/model.h"
#include "test_util.h"

namespace trellis {
namespace {

struct Reference {
  std::vector<int32_t> ids;
  std::vector<float> logits;  // [n, vocab]
  int64_t vocab = 0;
};

Reference load_reference(const std::string& path) {
  const auto f = SafetensorsFile::open(path);
  Reference r;
  const TensorView ids = f->view("input_ids");
  const TensorView logits = f->view("logits");
  r.ids.resize(static_cast<size_t>(ids.numel()));
  std::memcpy(r.ids.data(), ids.data, r.ids.size() * 4);
  r.logits.resize(static_cast<size_t>(logits.numel()));
  std::memcpy(r.logits.data(), logits.data, r.logits.size() * 4);
  r.vocab = logits.shape.back();
  return r;
}

struct Agreement {
  double rel_rms = 0;  // ||a - b|| / ||b|| over all logits
  double top1 = 0;     // fraction of positions with the same argmax
};

Agreement compare(const std::vector<float>& got, const Reference& ref) {
  const int64_t n = static_cast<int64_t>(ref.ids.size());
  double err = 0, norm = 0;
  int64_t same = 0;
  for (int64_t t = 0; t < n; ++t) {
    const float* a = got.data() + t * ref.vocab;
    const float* b = ref.logits.data() + t * ref.vocab;
    for (int64_t j = 0; j < ref.vocab; ++j) {
      err += (a[j] - b[j]) * static_cast<double>(a[j] - b[j]);
      norm += static_cast<double>(b[j]) * b[j];
    }
    same += std::max_element(a, a + ref.vocab) - a == std::max_element(b, b + ref.vocab) - b;
  }
  return {std::sqrt(err / norm), static_cast<double>(same) / static_cast<double>(n)};
}

struct Case {
  const char* model;
  const char* reference;
};

class GoldenLogits : public ::testing::TestWithParam<Case> {};

TEST_P(GoldenLogits, CpuMatchesReference) {
  if (!test::have_shared()) GTEST_SKIP() << "../shared not found";
  const Case c = GetParam();
  const Reference ref = load_reference(test::shared_path(std::string("fixtures/tiny-llama/reference/") + c.reference));
  auto backend = make_cpu_backend();
  auto model = Model::load(test::shared_path(std::string("fixtures/tiny-llama/") + c.model), *backend);
  std::vector<float> logits;
  model->forward(ref.ids, 0, /*all_logits=*/true, logits);
  const Agreement a = compare(logits, ref);
  EXPECT_LE(a.rel_rms, 1e-2) << c.model;
  EXPECT_GE(a.top1, 0.99) << c.model;
  RecordProperty("rel_rms", std::to_string(a.rel_rms));
  RecordProperty("top1", std::to_string(a.top1));
  std::printf("%s: rel_rms %.5f top1 %.4f\n", c.model, a.rel_rms, a.top1);

  // Incremental decoding through the KV cache gives the same logits as one causal pass.
  std::vector<float> step;
  const std::span<const int32_t> ids(ref.ids);
  model->forward(ids.first(200), 0, false, step);
  for (int64_t t = 200; t < 210; ++t) {
    model->forward(ids.subspan(static_cast<size_t>(t), 1), t, false, step);
    double diff = 0, norm = 0;
    for (int64_t j = 0; j < ref.vocab; ++j) {
      const double d = step[static_cast<size_t>(j)] - logits[static_cast<size_t>(t * ref.vocab + j)];
      diff += d * d;
      norm += static_cast<double>(logits[static_cast<size_t>(t * ref.vocab + j)]) * logits[static_cast<size_t>(t * ref.vocab + j)];
    }
    EXPECT_LT(std::sqrt(diff / norm), 1e-4) << "position " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(TinyLlama, GoldenLogits,
                         ::testing::Values(Case{"hf", "tiny_hf.safetensors"}, Case{"exl3-q3_mcg", "q3_mcg.safetensors"},
                                           Case{"exl3-q25_mul1", "q25_mul1.safetensors"},
                                           Case{"exl3-q6_mul1_h16", "q6_mul1_h16.safetensors"}),
                         [](const auto& info) {
                           std::string n = info.param.model;
                           for (char& ch : n)
                             if (ch == '-') ch = '_';
                           return n;
                         });

}  // namespace
}  // namespace trellis

namespace trellis {
namespace {

// Each EXL3 fixture put through `trellis dequantize` and loaded as an ordinary fp16 model gives
// ExLlamaV3's logits for the quantized model within the same tolerances.
class GoldenDequantizedLogits : public ::testing::TestWithParam<Case> {};

TEST_P(GoldenDequantizedLogits, Fp16DirectoryMatchesExllamaReference) {
  if (!test::have_shared()) GTEST_SKIP() << "../shared not found";
  const Case c = GetParam();
  test::TempDir tmp;
  std::string log;
  ASSERT_EQ(test::run_command(test::trellis_binary() + " -q dequantize " +
                                  test::shared_path(std::string("fixtures/tiny-llama/") + c.model) + " " + tmp.file("m"),
                              &log),
            0)
      << log;
  const Reference ref = load_reference(test::shared_path(std::string("fixtures/tiny-llama/reference/") + c.reference));
  auto backend = make_cpu_backend();
  auto model = Model::load(tmp.file("m"), *backend);
  EXPECT_FALSE(model->dir().is_exl3());
  std::vector<float> logits;
  model->forward(ref.ids, 0, true, logits);
  const Agreement a = compare(logits, ref);
  EXPECT_LE(a.rel_rms, 1e-2) << c.model;
  EXPECT_GE(a.top1, 0.99) << c.model;
  std::printf("dequantized %s: rel_rms %.5f top1 %.4f\n", c.model, a.rel_rms, a.top1);
}

INSTANTIATE_TEST_SUITE_P(TinyLlama, GoldenDequantizedLogits,
                         ::testing::Values(Case{"exl3-q3_mcg", "q3_mcg.safetensors"},
                                           Case{"exl3-q25_mul1", "q25_mul1.safetensors"},
                                           Case{"exl3-q6_mul1_h16", "q6_mul1_h16.safetensors"}),
                         [](const auto& info) {
                           std::string n = info.param.model;
                           for (char& ch : n)
                             if (ch == '-') ch = '_';
                           return n;
                         });

}  // namespace
}  // namespace trellis

namespace trellis {
namespace {

// The prefill chunk (ModelOptions::max_batch) does not change the logits: 700 positions in one
// chunk (so the head runs in two slices of the logits buffer) and in chunks of 96 rows, on the
// CPU backend, against each other and against the reference where it has positions.
TEST(ModelChunks, ChunkSizeAndLogitsSlicesDoNotChangeLogits) {
  if (!test::have_shared()) GTEST_SKIP() << "../shared not found";
  const Reference ref = load_reference(test::shared_path("fixtures/tiny-llama/reference/q3_mcg.safetensors"));
  std::vector<int32_t> ids;
  while (ids.size() < 700) ids.insert(ids.end(), ref.ids.begin(), ref.ids.end());
  ids.resize(700);
  auto backend = make_cpu_backend();
  std::vector<float> logits[2];
  for (int i = 0; i < 2; ++i) {
    ModelOptions opt;
    opt.max_context = 1024;
    opt.max_batch = i == 0 ? 700 : 96;
    auto model = Model::load(test::shared_path("fixtures/tiny-llama/exl3-q3_mcg"), *backend, opt);
    model->forward(ids, 0, /*all_logits=*/true, logits[i]);
    ASSERT_EQ(logits[i].size(), ids.size() * static_cast<size_t>(ref.vocab));
  }
  double err = 0, norm = 0;
  for (size_t j = 0; j < logits[0].size(); ++j) {
    err += (logits[0][j] - logits[1][j]) * static_cast<double>(logits[0][j] - logits[1][j]);
    norm += static_cast<double>(logits[1][j]) * logits[1][j];
  }
  EXPECT_LT(std::sqrt(err / norm), 1e-6);
  // Rows past the first slice of 512 are real logits, not a stale or zero buffer.
  const std::vector<float> first(logits[0].begin(), logits[0].begin() + static_cast<std::ptrdiff_t>(ref.logits.size()));
  EXPECT_LE(compare(first, ref).rel_rms, 1e-2);
  const float* row600 = logits[0].data() + 600 * ref.vocab;
  EXPECT_GT(*std::max_element(row600, row600 + ref.vocab), *std::min_element(row600, row600 + ref.vocab));
}

}  // namespace
}  // namespace trellis
