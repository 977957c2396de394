// Golden: the demo model (SmolLM2-135M-Instruct, fp16) against Hugging Face transformers
// (tests/data/smollm2/reference.safetensors, made by scripts/make_smollm2_reference.py): logits at
// every prompt position and greedy 32-token continuations. The model directory comes from
// scripts/fetch_demo_model.sh (scripts/test.sh runs it); $TRELLIS_DEMO_MODEL overrides the path.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "backends/backend.h"
#include "core/fp16.h"
#include "format/safetensors.h"
#include "model/model.h"
#include "test_util.h"

namespace trellis {
namespace {

std::string demo_model_dir() {
  if (const char* env = std::getenv("TRELLIS_DEMO_MODEL")) return env;
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "/root") + "/.cache/trellis/models/SmolLM2-135M-Instruct";
}

std::vector<int32_t> read_ids(const SafetensorsFile& f, const std::string& name) {
  const TensorView v = f.view(name);
  std::vector<int32_t> ids(static_cast<size_t>(v.numel()));
  std::memcpy(ids.data(), v.data, ids.size() * 4);
  return ids;
}

TEST(GoldenSmolLM2, LogitsAndGreedyContinuationsMatchTransformers) {
  const std::string dir = demo_model_dir();
  if (!std::filesystem::exists(dir + "/model.safetensors"))
    GTEST_SKIP() << "demo model not found at " << dir << " (run scripts/fetch_demo_model.sh)";
  const auto ref = SafetensorsFile::open(std::string(TRELLIS_SOURCE_DIR) + "/tests/data/smollm2/reference.safetensors");
  auto backend = make_cpu_backend();
  auto model = Model::load(dir, *backend);
  const int64_t vocab = model->vocab_size();
  for (int p = 0; p < 4; ++p) {
    const std::string pre = "p" + std::to_string(p) + ".";
    const std::vector<int32_t> ids = read_ids(*ref, pre + "input_ids");
    const std::vector<int32_t> greedy = read_ids(*ref, pre + "greedy");
    const TensorView ref_logits = ref->view(pre + "logits");
    ASSERT_EQ(ref_logits.shape.back(), vocab);
    std::vector<float> logits;
    model->forward(ids, 0, true, logits);
    double err = 0, norm = 0;
    int64_t same = 0;
    const int64_t n = static_cast<int64_t>(ids.size());
    for (int64_t t = 0; t < n; ++t) {
      int64_t a = 0, b = 0;
      float rb = -INFINITY;
      for (int64_t j = 0; j < vocab; ++j) {
        uint16_t h;
        std::memcpy(&h, ref_logits.data + 2 * (t * vocab + j), 2);
        const float r = fp16_to_fp32(h), g = logits[static_cast<size_t>(t * vocab + j)];
        err += (g - r) * static_cast<double>(g - r);
        norm += static_cast<double>(r) * r;
        if (g > logits[static_cast<size_t>(t * vocab + a)]) a = j;
        if (r > rb) {
          rb = r;
          b = j;
        }
      }
      same += a == b;
    }
    const double rel = std::sqrt(err / norm), top1 = static_cast<double>(same) / static_cast<double>(n);
    std::printf("prompt %d: rel_rms %.5f top1 %.3f\n", p, rel, top1);
    EXPECT_LE(rel, 1e-2) << "prompt " << p;
    EXPECT_GE(top1, 0.99) << "prompt " << p;

    // Greedy continuation through the KV cache, one token at a time.
    std::vector<int32_t> got;
    int32_t next = static_cast<int32_t>(
        std::max_element(logits.end() - vocab, logits.end()) - (logits.end() - vocab));
    for (int64_t i = 0; i < 32; ++i) {
      got.push_back(next);
      std::vector<float> step;
      model->forward(std::span<const int32_t>(&next, 1), n + i, false, step);
      next = static_cast<int32_t>(std::max_element(step.begin(), step.end()) - step.begin());
    }
    EXPECT_EQ(got, greedy) << "prompt " << p;
  }
}

}  // namespace
}  // namespace trellis
