// The tiny-llama fixtures, written by transformers and ExLlamaV3 (not by trellis), checked
// against what the spec and the fixture README say they must contain: an independent oracle for
// the reader, the config parser and the EXL3 classification.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include "format/model_dir.h"
#include "format_test_helpers.h"
#include "test_util.h"

namespace trellis {
namespace {

const char* const kLinears[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

// (in_features, out_features) of each tiny-llama linear: hidden 256, 4 heads of 64, 2 KV heads,
// intermediate 768, vocab 1024.
std::pair<int64_t, int64_t> dims_of(const std::string& linear) {
  if (linear == "self_attn.k_proj" || linear == "self_attn.v_proj") return {256, 128};
  if (linear == "mlp.gate_proj" || linear == "mlp.up_proj") return {256, 768};
  if (linear == "mlp.down_proj") return {768, 256};
  return {256, 256};
}

std::string fixture(const std::string& name) { return test::shared_path("fixtures/tiny-llama/" + name); }

#define REQUIRE_FIXTURES()                                                                  \
  do {                                                                                      \
    if (!test::have_shared() || !std::filesystem::exists(fixture("hf/config.json")))        \
      GTEST_SKIP() << "shared fixtures not available";                                      \
  } while (0)

void expect_tiny_llama_config(const ModelConfig& c) {
  EXPECT_EQ(c.architectures, std::vector<std::string>{"LlamaForCausalLM"});
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.num_hidden_layers, 4);
  EXPECT_EQ(c.hidden_size, 256);
  EXPECT_EQ(c.intermediate_size, 768);
  EXPECT_EQ(c.num_attention_heads, 4);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.vocab_size, 1024);
  EXPECT_EQ(c.max_position_embeddings, 2048);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);  // from rope_parameters (no top-level key)
  EXPECT_FALSE(c.raw.contains("rope_theta"));
  EXPECT_EQ(c.rope_scaling.type, "default");
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.hidden_act, "silu");
  EXPECT_EQ(c.torch_dtype, "float16");
  EXPECT_EQ(c.bos_token_id, 0);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{0});
}

TEST(FormatFixtures, HfDirectory) {
  REQUIRE_FIXTURES();
  auto m = ModelDir::open(fixture("hf"));
  expect_tiny_llama_config(m->config());
  EXPECT_FALSE(m->config().quantization.has_value());
  EXPECT_FALSE(m->is_exl3());
  const auto names = m->tensors().names();
  EXPECT_EQ(names.size(), 2u + 1u + 4u * 9u);  // embed, lm_head, norm; per layer 7 linears + 2 norms
  for (const auto& n : names) {
    EXPECT_EQ(m->kind_of(n), TensorKind::kDense) << n;
    EXPECT_EQ(m->tensors().info(n).dtype, DType::kF16) << n;
  }
  EXPECT_EQ(m->tensors().info("lm_head.weight").shape, (Shape{1024, 256}));
  EXPECT_EQ(m->tensors().info("model.embed_tokens.weight").shape, (Shape{1024, 256}));
  for (int l = 0; l < 4; ++l)
    for (const char* lin : kLinears) {
      const auto [in, out] = dims_of(lin);
      EXPECT_EQ(m->tensors().info(fmt::format("model.layers.{}.{}.weight", l, lin)).shape, (Shape{out, in}));
    }
  EXPECT_EQ(m->tensors().files()[0]->metadata().at("format"), "pt");
  EXPECT_EQ(m->aux_files(), (std::vector<std::string>{"chat_template.jinja", "generation_config.json",
                                                      "tokenizer.json", "tokenizer_config.json"}));
}

struct Exl3Fixture {
  const char* dir;
  exl3::Codebook codebook;
  const char* cb_suffix;
  double bits;
  int head_bits;
};

constexpr Exl3Fixture kExl3Fixtures[] = {
    {"exl3-q3_mcg", exl3::Codebook::kMcg, "mcg", 3.0, 6},
    {"exl3-q25_mul1", exl3::Codebook::kMul1, "mul1", 2.5, 4},
    {"exl3-q6_mul1_h16", exl3::Codebook::kMul1, "mul1", 6.0, 16},
};

TEST(FormatFixtures, Exl3Directories) {
  REQUIRE_FIXTURES();
  for (const auto& fx : kExl3Fixtures) {
    SCOPED_TRACE(fx.dir);
    auto m = ModelDir::open(fixture(fx.dir));
    expect_tiny_llama_config(m->config());
    ASSERT_TRUE(m->config().quantization.has_value());
    const QuantizationConfig& q = *m->config().quantization;
    EXPECT_EQ(q.quant_method, "exl3");
    EXPECT_EQ(q.version, "1.4.1");
    EXPECT_DOUBLE_EQ(q.bits, fx.bits);
    EXPECT_EQ(q.head_bits, fx.head_bits);
    EXPECT_EQ(q.codebook, fx.cb_suffix);
    EXPECT_EQ(q.out_scales, "always");
    EXPECT_EQ(q.calibration_rows, 250);
    EXPECT_EQ(q.calibration_cols, 2048);
    EXPECT_TRUE(m->is_exl3());
    EXPECT_EQ(m->aux_files(), (std::vector<std::string>{"chat_template.jinja", "generation_config.json",
                                                        "quantization_config.json", "tokenizer.json",
                                                        "tokenizer_config.json"}));
    // ExLlamaV3 does not pad its header (spec 2.2): at least one of these is unaligned, and
    // the reader copes.
    const auto& files = m->tensors().files();
    ASSERT_EQ(files.size(), 1u);

    const bool head_fp16 = fx.head_bits == 16;
    EXPECT_EQ(m->exl3_layers().size(), 28u + (head_fp16 ? 0u : 1u));
    std::set<int> decoder_ks;
    for (int l = 0; l < 4; ++l) {
      for (const char* lin : kLinears) {
        const std::string key = fmt::format("model.layers.{}.{}", l, lin);
        SCOPED_TRACE(key);
        const auto [in, out] = dims_of(lin);
        const Exl3Layer* layer = m->find_exl3_layer(key);
        ASSERT_NE(layer, nullptr);
        EXPECT_EQ(layer->k, in);
        EXPECT_EQ(layer->n, out);
        EXPECT_EQ(layer->codebook, fx.codebook);
        EXPECT_FALSE(layer->legacy_signs);
        EXPECT_FALSE(layer->has_bias);
        decoder_ks.insert(layer->K);
        const TensorInfo& tr = m->tensors().info(key + ".trellis");
        EXPECT_EQ(tr.dtype, DType::kI16);
        EXPECT_EQ(tr.shape, (Shape{in / 16, out / 16, 16 * layer->K}));
        EXPECT_EQ(m->tensors().info(key + ".suh").shape, Shape{in});
        EXPECT_EQ(m->tensors().info(key + ".svh").shape, Shape{out});
        EXPECT_EQ(m->kind_of(key + ".trellis"), TensorKind::kExl3Trellis);
        EXPECT_EQ(m->kind_of(key + "." + fx.cb_suffix),
                  fx.codebook == exl3::Codebook::kMcg ? TensorKind::kExl3Mcg : TensorKind::kExl3Mul1);
        const TensorView cb = m->tensors().view(key + "." + fx.cb_suffix);
        EXPECT_TRUE(cb.shape.empty());
        uint32_t value;
        std::memcpy(&value, cb.data, 4);
        EXPECT_EQ(value, fx.codebook == exl3::Codebook::kMcg ? 0xCBAC1FEDu : 0x83DCD12Du);
        EXPECT_FALSE(m->tensors().contains(key + ".weight"));
      }
      EXPECT_EQ(m->kind_of(fmt::format("model.layers.{}.input_layernorm.weight", l)), TensorKind::kDense);
    }
    if (std::string(fx.dir) == "exl3-q3_mcg") {
      EXPECT_EQ(decoder_ks, std::set<int>{3});
    } else if (std::string(fx.dir) == "exl3-q25_mul1") {
      EXPECT_EQ(decoder_ks, (std::set<int>{2, 3}));  // the allocator mixes K = 2 and 3
    } else {
      EXPECT_EQ(decoder_ks, std::set<int>{6});
    }

    EXPECT_EQ(m->kind_of("model.embed_tokens.weight"), TensorKind::kDense);
    EXPECT_EQ(m->tensors().info("model.embed_tokens.weight").shape, (Shape{1024, 256}));
    if (head_fp16) {
      EXPECT_EQ(m->find_exl3_layer("lm_head"), nullptr);
      EXPECT_EQ(m->kind_of("lm_head.weight"), TensorKind::kDense);
      EXPECT_EQ(m->tensors().info("lm_head.weight").dtype, DType::kF16);
      EXPECT_EQ(m->tensors().info("lm_head.weight").shape, (Shape{1024, 256}));
    } else {
      const Exl3Layer* head = m->find_exl3_layer("lm_head");
      ASSERT_NE(head, nullptr);
      EXPECT_EQ(head->K, fx.head_bits);
      EXPECT_EQ(head->k, 256);
      EXPECT_EQ(head->n, 1024);
      EXPECT_EQ(m->tensors().info("lm_head.trellis").shape, (Shape{16, 64, 16 * fx.head_bits}));
      EXPECT_FALSE(m->tensors().contains("lm_head.weight"));
    }
    for (const auto& n : m->tensors().names()) EXPECT_NE(m->kind_of(n), TensorKind::kUnknown) << n;
  }
}

TEST(FormatFixtures, Exl3ViewsMatchRawFileBytes) {
  REQUIRE_FIXTURES();
  // Independent of the reader: locate the q_proj suh by parsing the header with nlohmann here.
  const std::string path = fixture("exl3-q3_mcg/model.safetensors");
  const test::Bytes raw = test::read_bytes(path);
  uint64_t hlen;
  std::memcpy(&hlen, raw.data(), 8);
  EXPECT_NE((8 + hlen) % 8, 0u) << "the fixture's data section is unaligned (spec 2.2)";
  const auto header = nlohmann::json::parse(std::string(reinterpret_cast<const char*>(raw.data()) + 8, hlen));
  const std::string key = "model.layers.2.self_attn.q_proj";
  auto m = ModelDir::open(fixture("exl3-q3_mcg"));
  std::vector<uint16_t> scratch;
  const exl3::Exl3LinearView v = m->exl3_view(*m->find_exl3_layer(key), scratch);
  EXPECT_EQ(v.k, 256);
  EXPECT_EQ(v.n, 256);
  EXPECT_EQ(v.K, 3);
  EXPECT_EQ(v.codebook, exl3::Codebook::kMcg);
  EXPECT_EQ(v.bias, nullptr);
  for (const char* part : {"trellis", "suh", "svh"}) {
    const auto& e = header.at(key + "." + part);
    const uint64_t b = e.at("data_offsets")[0], end = e.at("data_offsets")[1];
    const void* ptr = std::string(part) == "trellis" ? v.trellis : std::string(part) == "suh" ? v.suh : v.svh;
    EXPECT_EQ(std::memcmp(ptr, raw.data() + 8 + hlen + b, end - b), 0) << part;
  }
}

TEST(FormatFixtures, TruncatedFixtureFails) {
  REQUIRE_FIXTURES();
  const test::Bytes raw = test::read_bytes(fixture("exl3-q25_mul1/model.safetensors"));
  uint64_t hlen;
  std::memcpy(&hlen, raw.data(), 8);
  // Cut points inside the length, inside the header, at the header end, and through the data.
  std::vector<size_t> cuts = {0, 4, 7, 8, 9, 100, static_cast<size_t>(8 + hlen / 2), static_cast<size_t>(8 + hlen - 1),
                              static_cast<size_t>(8 + hlen), raw.size() - 1};
  for (size_t c = 8 + hlen + 1; c < raw.size(); c += 99991) cuts.push_back(c);
  for (size_t cut : cuts) {
    const test::Bytes t(raw.begin(), raw.begin() + cut);
    EXPECT_THROW(SafetensorsFile::parse(t, "cut.safetensors"), Error) << cut;
  }
  test::TempDir tmp;
  test::write_bytes(tmp.file("model.safetensors"), test::Bytes(raw.begin(), raw.end() - 1));
  test::expect_error([&] { SafetensorsFile::open(tmp.file("model.safetensors")); }, ErrorKind::kFormat,
                     {"model.safetensors", "'lm_head.trellis'", "past the end"});
}

TEST(FormatFixtures, ReferenceFiles) {
  REQUIRE_FIXTURES();
  for (const char* name : {"q25_mul1", "q3_mcg", "q6_mul1_h16", "tiny_hf"}) {
    auto f = SafetensorsFile::open(fixture(std::string("reference/") + name + ".safetensors"));
    const TensorInfo* ids = f->find("input_ids");
    const TensorInfo* logits = f->find("logits");
    ASSERT_NE(ids, nullptr);
    ASSERT_NE(logits, nullptr);
    EXPECT_EQ(ids->dtype, DType::kI32);
    EXPECT_EQ(ids->shape, (Shape{1, 256}));
    EXPECT_EQ(logits->dtype, DType::kF32);
    EXPECT_EQ(logits->shape, (Shape{1, 256, 1024}));
  }
}

}  // namespace
}  // namespace trellis
