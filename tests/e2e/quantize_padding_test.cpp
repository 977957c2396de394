// `trellis quantize` on a model whose dimensions are not multiples of 128 (spec 2.4: every EXL3
// linear is padded to 128 in both directions, padded inputs are zero, padded outputs get svh 0).
// The model is tiny-llama cut down to hidden 200, intermediate 520, 5 heads of 40 and 1 KV head,
// 2 layers (trained weights, so the logits mean something); the test writes it with our
// safetensors writer, quantizes it at 4 bits, validates it with `trellis inspect`, and compares
// its logits with the fp16 model's (centred rel-RMS and top-1 agreement; the 4-bit noise
// measured here is ~0.03 rel-RMS, the bound is twice that).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "format/safetensors.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace trellis {
namespace {

struct OddShape {
  int64_t hidden = 200, inter = 520, heads = 5, kv_heads = 1, head_dim = 40, layers = 2;
};

// Writes the cut-down model into `dir`: every tensor is the top-left corner of
// tiny-llama's (k/v with more rows than the source repeat its rows).
void write_odd_model(const std::string& dir, const OddShape& s) {
  const std::string src = test::shared_path("fixtures/tiny-llama/hf");
  fs::create_directories(dir);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "generation_config.json"})
    fs::copy_file(fs::path(src) / f, fs::path(dir) / f);
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(fs::path(src) / "config.json"));
  cfg["hidden_size"] = s.hidden;
  cfg["intermediate_size"] = s.inter;
  cfg["num_attention_heads"] = s.heads;
  cfg["num_key_value_heads"] = s.kv_heads;
  cfg["head_dim"] = s.head_dim;
  cfg["num_hidden_layers"] = s.layers;
  std::ofstream(fs::path(dir) / "config.json") << cfg.dump(2) << "\n";

  const auto in = TensorStore::open_dir(src);
  const int64_t H = s.hidden, I = s.inter, Q = s.heads * s.head_dim, KV = s.kv_heads * s.head_dim;
  const int64_t vocab = cfg.at("vocab_size").get<int64_t>();
  std::vector<std::pair<std::string, Shape>> plan = {{"model.embed_tokens.weight", {vocab, H}}};
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    plan.push_back({p + "input_layernorm.weight", {H}});
    plan.push_back({p + "post_attention_layernorm.weight", {H}});
    plan.push_back({p + "self_attn.q_proj.weight", {Q, H}});
    plan.push_back({p + "self_attn.k_proj.weight", {KV, H}});
    plan.push_back({p + "self_attn.v_proj.weight", {KV, H}});
    plan.push_back({p + "self_attn.o_proj.weight", {H, Q}});
    plan.push_back({p + "mlp.gate_proj.weight", {I, H}});
    plan.push_back({p + "mlp.up_proj.weight", {I, H}});
    plan.push_back({p + "mlp.down_proj.weight", {H, I}});
  }
  plan.push_back({"model.norm.weight", {H}});
  plan.push_back({"lm_head.weight", {vocab, H}});

  std::vector<std::vector<std::byte>> bytes;
  std::vector<SafetensorsWriter::Item> items;
  for (const auto& [name, shape] : plan) {
    const TensorView v = in->view(name);
    ASSERT_EQ(v.dtype, DType::kF16) << name;
    ASSERT_EQ(v.shape.size(), shape.size()) << name;
    const int64_t rows = shape.size() == 2 ? shape[0] : 1, cols = shape.back();
    const int64_t src_cols = v.shape.back();
    ASSERT_LE(cols, src_cols) << name;
    // Rows beyond the source's (k/v with 5 KV heads) repeat it from the top.
    const int64_t src_rows = shape.size() == 2 ? v.shape[0] : 1;
    std::vector<std::byte> out(static_cast<size_t>(rows * cols * 2));
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(&out[r * cols * 2], v.data + (r % src_rows) * src_cols * 2, cols * 2);
    bytes.push_back(std::move(out));
  }
  for (size_t i = 0; i < plan.size(); ++i) items.push_back({plan[i].first, DType::kF16, plan[i].second, bytes[i]});
  SafetensorsWriter::write_file(dir + "/model.safetensors", items);
}

std::vector<float> logits_of(const std::string& model, const std::string& out_file, int64_t* vocab) {
  std::string log;
  const std::string cmd = test::trellis_binary() + " -q logits --device cpu --tokens 256 -m " + model + " -f " +
                          test::shared_path("data/wikitext-2/wiki.test.raw") + " -o " + out_file;
  EXPECT_EQ(test::run_command(cmd, &log), 0) << log;
  const auto f = SafetensorsFile::open(out_file);
  const TensorView v = f->view("logits");
  *vocab = v.shape.back();
  std::vector<float> out(static_cast<size_t>(v.numel()));
  std::memcpy(out.data(), v.data, out.size() * 4);
  return out;
}

// Relative RMS of the difference between two [tokens, vocab] logit sets, each token's logits
// centred first (a constant shift changes nothing after softmax), and top-1 agreement.
void compare(const std::vector<float>& got, const std::vector<float>& ref, int64_t vocab, double* rel, double* top1) {
  const int64_t n = static_cast<int64_t>(ref.size()) / vocab;
  double err = 0, norm = 0;
  int64_t same = 0;
  for (int64_t t = 0; t < n; ++t) {
    const float* x = &got[t * vocab];
    const float* y = &ref[t * vocab];
    double mx = 0, my = 0;
    for (int64_t j = 0; j < vocab; ++j) {
      mx += x[j];
      my += y[j];
    }
    mx /= static_cast<double>(vocab);
    my /= static_cast<double>(vocab);
    for (int64_t j = 0; j < vocab; ++j) {
      err += std::pow((x[j] - mx) - (y[j] - my), 2);
      norm += std::pow(y[j] - my, 2);
    }
    same += std::max_element(x, x + vocab) - x == std::max_element(y, y + vocab) - y;
  }
  *rel = std::sqrt(err / norm);
  *top1 = static_cast<double>(same) / static_cast<double>(n);
}

class QuantizeOddDims : public ::testing::TestWithParam<int> {};

TEST_P(QuantizeOddDims, PadsAndMatchesFp16Logits) {
  if (!test::have_shared()) GTEST_SKIP() << "../shared not available";
  test::TempDir tmp;
  OddShape shape;
  shape.kv_heads = GetParam();
  const std::string hf = tmp.file("hf"), out = tmp.file("q4");
  write_odd_model(hf, shape);
  if (HasFatalFailure()) return;

  std::string log;
  ASSERT_EQ(test::run_command(test::trellis_binary() + " -q inspect " + hf, &log), 0) << log;
  ASSERT_EQ(test::run_command(test::trellis_binary() + " -q quantize -i " + hf + " -o " + out +
                                  " -b 4 --cal-rows 4 --cal-cols 128",
                              &log),
            0)
      << log;
  ASSERT_EQ(test::run_command(test::trellis_binary() + " inspect --json --tensors " + out, &log), 0) << log;
  // Every EXL3 tensor has padded sizes: suh 256 (hidden) or 256/640 (o/down inputs), etc.
  const auto st = SafetensorsFile::open(out + "/model.safetensors");
  EXPECT_EQ(st->view("model.layers.0.self_attn.k_proj.suh").shape, Shape{256});
  EXPECT_EQ(st->view("model.layers.0.self_attn.k_proj.svh").shape, Shape{(shape.kv_heads * 40 + 127) / 128 * 128});
  EXPECT_EQ(st->view("model.layers.0.mlp.down_proj.suh").shape, Shape{640});
  EXPECT_EQ(st->view("model.layers.1.mlp.gate_proj.trellis").shape, (Shape{16, 40, 64}));
  // Padded outputs decode to exactly zero (spec 2.4, svh 0).
  {
    const TensorView svh = st->view("model.layers.0.mlp.gate_proj.svh");
    std::vector<uint16_t> v(static_cast<size_t>(svh.numel()));
    std::memcpy(v.data(), svh.data, v.size() * 2);
    for (size_t j = static_cast<size_t>(shape.inter); j < v.size(); ++j) EXPECT_EQ(v[j] & 0x7FFF, 0) << j;
  }

  int64_t vocab_q = 0, vocab_f = 0;
  const auto lq = logits_of(out, tmp.file("q.safetensors"), &vocab_q);
  const auto lf = logits_of(hf, tmp.file("f.safetensors"), &vocab_f);
  ASSERT_EQ(vocab_q, vocab_f);
  ASSERT_EQ(lq.size(), lf.size());
  double rel = 0, top1 = 0;
  compare(lq, lf, vocab_f, &rel, &top1);
  std::printf("odd dims, %d KV heads, 4 bpw: logits rel-RMS %.4f, top-1 %.3f\n", GetParam(), rel, top1);
  // Measured 2026-12-03: rel-RMS 0.028, top-1 0.94 (1 KV head); 0.024, 0.93 with 5 KV heads.
  EXPECT_LT(rel, 0.06);
  EXPECT_GT(top1, 0.85);
}

// One KV head (k/v outputs 40 padded to 128) is the harsher case; 5 heads (200 -> 256) passes
// too but doubles the run time.
INSTANTIATE_TEST_SUITE_P(KvHeads, QuantizeOddDims, ::testing::Values(1),
                         [](const auto& info) { return fmt::format("kv{}", info.param); });

}  // namespace
}  // namespace trellis
