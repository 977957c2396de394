// format/config.h: a model directory's config.json (Llama family) and its quantization_config.
//
// Goals: parse what the runtime and tools need, accept both rope forms (`rope_theta` at top level
// and transformers 5's `rope_parameters`), and reject a malformed file with an error naming the
// file and the field. Non-goal: every architecture's every field; unknown keys are kept in `raw`.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace trellis {

struct RopeScaling {
  std::string type = "default";  // default | linear | dynamic | llama3 | yarn | longrope ...
  double factor = 1.0;
  // llama3
  double low_freq_factor = 1.0, high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 0;
  // yarn
  double beta_fast = 32.0, beta_slow = 1.0;
  std::optional<double> attention_factor, mscale, mscale_all_dim;
};

struct QuantizationConfig {
  std::string quant_method;  // "exl3" for EXL3 models
  std::string version;
  double bits = 0;
  int head_bits = 0;
  std::string codebook;      // may be empty in older files
  std::string out_scales;
  int64_t calibration_rows = 0, calibration_cols = 0;
};

struct ModelConfig {
  std::string path;                 // the config.json it came from
  std::vector<std::string> architectures;
  std::string model_type;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // defaults to num_attention_heads
  int64_t head_dim = 0;             // defaults to hidden_size / num_attention_heads
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;
  bool mlp_bias = false;
  std::string hidden_act = "silu";
  std::string torch_dtype;
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;
  std::optional<QuantizationConfig> quantization;
  nlohmann::json raw;  // the whole object as parsed
};

// Parses config.json text; `path` is used in error messages. Throws kFormat naming the field.
// Details: JSON null counts as absent; duplicate keys anywhere are an error. Required:
// architectures or model_type; hidden_size, num_hidden_layers, num_attention_heads, vocab_size
// (integers in 1..2^30, as are all size fields). num_attention_heads must be a multiple of
// num_key_value_heads; without head_dim, hidden_size must be a multiple of the heads. Rope:
// `rope_parameters` (theta + type + scaling params) wins over top-level `rope_theta` and
// `rope_scaling`; the type comes from `rope_type` or `type`; linear/dynamic/yarn/llama3 need
// `factor`, llama3 also low/high_freq_factor and original_max_position_embeddings; yarn without
// original_max_position_embeddings takes max_position_embeddings. `torch_dtype` falls back to
// transformers 5's `dtype`. quantization_config fields are read (and type-checked) only when
// quant_method is "exl3" or absent; for other methods only quant_method is kept.
ModelConfig parse_model_config(const std::string& text, const std::string& path);
ModelConfig load_model_config(const std::string& path);

}  // namespace trellis
