// config.json parsing: both rope forms, rope scaling types, defaults, quantization_config,
// and one test per kind of malformed input.
#include <gtest/gtest.h>

#include "format/config.h"
#include "format_test_helpers.h"
#include "test_util.h"

namespace trellis {
namespace {

using nlohmann::json;
using test::expect_error;

json base() {
  return json::parse(R"({"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":512,
    "intermediate_size":1536,"num_hidden_layers":2,"num_attention_heads":8,"vocab_size":3000})");
}

ModelConfig parse(const json& j) { return parse_model_config(j.dump(), "cfg/config.json"); }

void expect_bad(const json& j, std::initializer_list<std::string> parts) {
  std::vector<std::string> all{"cfg/config.json"};
  all.insert(all.end(), parts.begin(), parts.end());
  try {
    parse(j);
    ADD_FAILURE() << "accepted: " << j.dump();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kFormat) << e.what();
    for (const auto& p : all) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << p << " / " << e.what();
  }
}

TEST(FormatConfig, MinimalDefaults) {
  const ModelConfig c = parse(base());
  EXPECT_EQ(c.path, "cfg/config.json");
  EXPECT_EQ(c.architectures, std::vector<std::string>{"LlamaForCausalLM"});
  EXPECT_EQ(c.hidden_size, 512);
  EXPECT_EQ(c.num_key_value_heads, 8);  // = heads
  EXPECT_EQ(c.head_dim, 64);            // = hidden / heads
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.rope_scaling.type, "default");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 1.0);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.bos_token_id.has_value());
  EXPECT_TRUE(c.eos_token_ids.empty());
  EXPECT_FALSE(c.quantization.has_value());
  EXPECT_EQ(c.raw.at("vocab_size"), 3000);
}

TEST(FormatConfig, ExplicitValues) {
  json j = base();
  j["num_key_value_heads"] = 2;
  j["head_dim"] = 128;  // not hidden/heads (as in some Qwen/Gemma configs)
  j["rms_norm_eps"] = 1e-5;
  j["rope_theta"] = 500000.0;
  j["tie_word_embeddings"] = true;
  j["attention_bias"] = true;
  j["mlp_bias"] = false;
  j["hidden_act"] = "gelu";
  j["torch_dtype"] = "bfloat16";
  j["bos_token_id"] = 1;
  j["eos_token_id"] = json::array({2, 7, 9});
  j["max_position_embeddings"] = 4096;
  j["pad_token_id"] = nullptr;
  const ModelConfig c = parse(j);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_TRUE(c.attention_bias);
  EXPECT_EQ(c.hidden_act, "gelu");
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{2, 7, 9}));
  EXPECT_EQ(c.max_position_embeddings, 4096);
}

TEST(FormatConfig, EosIntAndNullKvHeads) {
  json j = base();
  j["eos_token_id"] = 5;
  j["num_key_value_heads"] = nullptr;
  j["dtype"] = "float16";  // transformers 5 spelling
  const ModelConfig c = parse(j);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{5});
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.torch_dtype, "float16");
}

TEST(FormatConfig, ModelTypeWithoutArchitectures) {
  json j = base();
  j.erase("architectures");
  EXPECT_EQ(parse(j).model_type, "llama");
}

TEST(FormatConfig, RopeParametersForm) {
  json j = base();
  j["rope_parameters"] = {{"rope_theta", 250000.0}, {"rope_type", "default"}};
  const ModelConfig c = parse(j);
  EXPECT_DOUBLE_EQ(c.rope_theta, 250000.0);
  EXPECT_EQ(c.rope_scaling.type, "default");
}

TEST(FormatConfig, RopeParametersLlama3) {
  json j = base();
  j["rope_parameters"] = {{"rope_theta", 500000.0}, {"rope_type", "llama3"}, {"factor", 8.0},
                          {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                          {"original_max_position_embeddings", 8192}};
  const ModelConfig c = parse(j);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
}

TEST(FormatConfig, RopeScalingLegacyForms) {
  json j = base();
  j["rope_theta"] = 1e6;
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  ModelConfig c = parse(j);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.rope_scaling.type, "linear");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 2.0);

  j["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 4.0}};
  c = parse(j);
  EXPECT_EQ(c.rope_scaling.type, "dynamic");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 4.0);

  j["max_position_embeddings"] = 32768;
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"beta_fast", 16.0}, {"beta_slow", 2.0},
                       {"attention_factor", 1.1}, {"mscale", 0.7}, {"mscale_all_dim", 0.5}};
  c = parse(j);
  EXPECT_EQ(c.rope_scaling.type, "yarn");
  EXPECT_DOUBLE_EQ(c.rope_scaling.beta_fast, 16.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.beta_slow, 2.0);
  EXPECT_EQ(c.rope_scaling.attention_factor, 1.1);
  EXPECT_EQ(c.rope_scaling.mscale, 0.7);
  EXPECT_EQ(c.rope_scaling.mscale_all_dim, 0.5);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 32768);  // falls back to max positions

  j["rope_scaling"] = {{"type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 8192}};
  EXPECT_EQ(parse(j).rope_scaling.type, "llama3");

  j["rope_scaling"] = nullptr;
  EXPECT_EQ(parse(j).rope_scaling.type, "default");
}

TEST(FormatConfig, QuantizationConfigExl3) {
  json j = base();
  j["quantization_config"] = json::parse(R"({"quant_method":"exl3","version":"1.4.1","bits":2.5,"head_bits":4,
    "calibration":{"rows":250,"cols":2048},"out_scales":"always","codebook":"mul1"})");
  const ModelConfig c = parse(j);
  ASSERT_TRUE(c.quantization.has_value());
  EXPECT_EQ(c.quantization->quant_method, "exl3");
  EXPECT_EQ(c.quantization->version, "1.4.1");
  EXPECT_DOUBLE_EQ(c.quantization->bits, 2.5);
  EXPECT_EQ(c.quantization->head_bits, 4);
  EXPECT_EQ(c.quantization->codebook, "mul1");
  EXPECT_EQ(c.quantization->out_scales, "always");
  EXPECT_EQ(c.quantization->calibration_rows, 250);
  EXPECT_EQ(c.quantization->calibration_cols, 2048);
}

TEST(FormatConfig, QuantizationConfigOldAndForeign) {
  json j = base();
  // An older EXL3 file: keys added later are missing.
  j["quantization_config"] = {{"quant_method", "exl3"}, {"version", "0.0.3"}, {"bits", 4.0}, {"head_bits", 6}};
  ModelConfig c = parse(j);
  EXPECT_EQ(c.quantization->codebook, "");
  EXPECT_EQ(c.quantization->calibration_rows, 0);
  // A foreign method reuses key names with other types; only the method is read.
  j["quantization_config"] = {{"quant_method", "fp8"}, {"bits", "e4m3"}, {"weight_block_size", {128, 128}}};
  c = parse(j);
  EXPECT_EQ(c.quantization->quant_method, "fp8");
  EXPECT_EQ(c.quantization->bits, 0.0);
}

TEST(FormatConfig, MalformedJson) {
  expect_error([] { parse_model_config("{\"hidden_size\": 5,", "cfg/config.json"); }, ErrorKind::kFormat,
               {"cfg/config.json", "not valid JSON"});
  expect_error([] { parse_model_config("", "cfg/config.json"); }, ErrorKind::kFormat, {"cfg/config.json"});
  expect_error([] { parse_model_config("[1]", "cfg/config.json"); }, ErrorKind::kFormat, {"expected an object"});
  expect_error([] { parse_model_config(R"({"vocab_size":1,"vocab_size":2})", "cfg/config.json"); },
               ErrorKind::kFormat, {"'vocab_size'", "twice"});
}

TEST(FormatConfig, MissingRequiredFields) {
  for (const char* key : {"hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"}) {
    json j = base();
    j.erase(key);
    expect_bad(j, {key, "missing"});
    j[key] = nullptr;
    expect_bad(j, {key, "missing"});
  }
  json j = base();
  j.erase("architectures");
  j.erase("model_type");
  expect_bad(j, {"architectures", "model_type"});
}

TEST(FormatConfig, WrongTypes) {
  auto with = [](const char* key, json v) {
    json j = base();
    j[key] = std::move(v);
    return j;
  };
  expect_bad(with("hidden_size", "512"), {"'hidden_size'", "string", "integer"});
  expect_bad(with("hidden_size", 512.5), {"'hidden_size'", "floating-point"});
  expect_bad(with("vocab_size", true), {"'vocab_size'"});
  expect_bad(with("architectures", "LlamaForCausalLM"), {"'architectures'", "array"});
  expect_bad(with("architectures", json::array({1})), {"architectures[0]"});
  expect_bad(with("model_type", 3), {"'model_type'", "string"});
  expect_bad(with("tie_word_embeddings", "false"), {"'tie_word_embeddings'", "true or false"});
  expect_bad(with("rms_norm_eps", "1e-5"), {"'rms_norm_eps'", "number"});
  expect_bad(with("rope_theta", json::array({1})), {"'rope_theta'"});
  expect_bad(with("eos_token_id", "2"), {"'eos_token_id'"});
  expect_bad(with("eos_token_id", json::array({2, "x"})), {"eos_token_id[1]"});
  expect_bad(with("eos_token_id", json::array({-1})), {"eos_token_id[0]"});
  expect_bad(with("bos_token_id", 1.5), {"'bos_token_id'"});
  expect_bad(with("rope_scaling", "linear"), {"'rope_scaling'", "object"});
  expect_bad(with("rope_parameters", 10000), {"'rope_parameters'", "object"});
  expect_bad(with("quantization_config", "exl3"), {"'quantization_config'", "object"});
  expect_bad(with("hidden_act", 1), {"'hidden_act'"});
}

TEST(FormatConfig, NonPositiveAndInconsistentValues) {
  auto with = [](const char* key, json v) {
    json j = base();
    j[key] = std::move(v);
    return j;
  };
  expect_bad(with("hidden_size", 0), {"'hidden_size'", "out of range"});
  expect_bad(with("num_hidden_layers", -1), {"'num_hidden_layers'", "out of range"});
  expect_bad(with("vocab_size", int64_t{1} << 40), {"'vocab_size'", "out of range"});
  expect_bad(with("num_key_value_heads", 3), {"num_key_value_heads", "multiple"});
  expect_bad(with("num_key_value_heads", 0), {"num_key_value_heads"});
  expect_bad(with("head_dim", 0), {"'head_dim'"});
  expect_bad(with("rms_norm_eps", 0.0), {"'rms_norm_eps'", "positive"});
  expect_bad(with("rope_theta", -1.0), {"'rope_theta'", "positive"});
  expect_bad(with("num_attention_heads", 7), {"'head_dim' is missing", "not a multiple"});
}

TEST(FormatConfig, BadRopeScaling) {
  auto with_rs = [](json rs) {
    json j = base();
    j["rope_scaling"] = std::move(rs);
    return j;
  };
  expect_bad(with_rs({{"type", "linear"}}), {"'rope_scaling.factor'", "missing"});
  expect_bad(with_rs({{"type", "linear"}, {"factor", "2"}}), {"'rope_scaling.factor'", "number"});
  expect_bad(with_rs({{"type", "linear"}, {"factor", -2.0}}), {"'rope_scaling.factor'", "positive"});
  expect_bad(with_rs({{"type", 1}, {"factor", 2.0}}), {"'rope_scaling.type'"});
  expect_bad(with_rs({{"type", "linear"}, {"rope_type", "yarn"}, {"factor", 2.0}}), {"disagree"});
  expect_bad(with_rs({{"type", "llama3"}, {"factor", 8.0}}), {"rope_scaling.low_freq_factor", "llama3"});
  expect_bad(with_rs({{"type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 4.0}, {"high_freq_factor", 1.0},
                      {"original_max_position_embeddings", 8192}}),
             {"high_freq_factor", "larger"});
  json j = base();
  j["rope_parameters"] = {{"rope_theta", "1e4"}};
  expect_bad(j, {"'rope_parameters.rope_theta'", "number"});
}

TEST(FormatConfig, BadQuantizationConfig) {
  auto with_q = [](json q) {
    json j = base();
    j["quantization_config"] = std::move(q);
    return j;
  };
  expect_bad(with_q({{"quant_method", 3}}), {"'quantization_config.quant_method'", "string"});
  expect_bad(with_q({{"quant_method", "exl3"}, {"bits", "3"}}), {"'quantization_config.bits'", "number"});
  expect_bad(with_q({{"quant_method", "exl3"}, {"head_bits", 6.5}}), {"'quantization_config.head_bits'", "integer"});
  expect_bad(with_q({{"quant_method", "exl3"}, {"head_bits", 0}}), {"'quantization_config.head_bits'", "range"});
  expect_bad(with_q({{"quant_method", "exl3"}, {"calibration", {{"rows", "250"}}}}),
             {"'quantization_config.calibration.rows'"});
  expect_bad(with_q({{"quant_method", "exl3"}, {"calibration", 250}}), {"'quantization_config.calibration'"});
}

TEST(FormatConfig, MutatedBytesNeverCrash) {
  // Every byte of a realistic config replaced by a few interesting values: parse or Error.
  json j = base();
  j["rope_parameters"] = {{"rope_theta", 500000.0}, {"rope_type", "llama3"}, {"factor", 8.0},
                          {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                          {"original_max_position_embeddings", 8192}};
  j["eos_token_id"] = json::array({1, 2});
  j["quantization_config"] = {{"quant_method", "exl3"}, {"bits", 3.0}, {"head_bits", 6},
                              {"calibration", {{"rows", 250}, {"cols", 2048}}}};
  const std::string text = j.dump();
  size_t ok = 0, rejected = 0;
  for (size_t pos = 0; pos < text.size(); ++pos) {
    for (char c : {'\0', '"', '{', ']', '-', '9', 'e', '\xff'}) {
      std::string t = text;
      t[pos] = c;
      try {
        parse_model_config(t, "m/config.json");
        ++ok;
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("m/config.json"), std::string::npos) << e.what();
        ++rejected;
      }
    }
  }
  EXPECT_GT(ok, 0u);
  EXPECT_GT(rejected, 0u);
}

TEST(FormatConfig, LoadFromFile) {
  test::TempDir tmp;
  test::write_text(tmp.file("config.json"), base().dump(2));
  EXPECT_EQ(load_model_config(tmp.file("config.json")).vocab_size, 3000);
  expect_error([&] { load_model_config(tmp.file("nope.json")); }, ErrorKind::kIo, {"nope.json"});
}

}  // namespace
}  // namespace trellis
