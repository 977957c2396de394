// format/model_dir.h: a model directory as a whole: config, tensors, tokenizer files, and the
// classification of every tensor (spec 2.3, 2.13, 8.2).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "exl3/codebook.h"
#include "exl3/linear.h"
#include "format/config.h"
#include "format/safetensors.h"

namespace trellis {

enum class TensorKind {
  kExl3Trellis, kExl3Suh, kExl3Svh, kExl3Su, kExl3Sv, kExl3Mcg, kExl3Mul1, kExl3Bias,
  kDense,    // an ordinary fp16/bf16/fp32 (or other) tensor: weights, norms, embeddings
  kUnknown,  // a tensor trellis does not know what to do with (e.g. an EXL3 fragment)
};
const char* tensor_kind_name(TensorKind kind);

// One EXL3 linear layer found in the directory, validated per spec 8.2 (shape consistency,
// 1 <= K <= 8, dims multiples of 128, dtypes, not both mcg and mul1).
struct Exl3Layer {
  std::string key;  // module key, e.g. "model.layers.0.self_attn.q_proj"
  int64_t k = 0, n = 0;
  int K = 0;
  exl3::Codebook codebook = exl3::Codebook::k3Inst;
  bool legacy_signs = false;  // su/sv instead of suh/svh
  bool has_bias = false;
};

class ModelDir {
 public:
  // Opens and validates the directory: config.json present and parseable, tensors readable, each
  // EXL3 group complete and consistent. Throws trellis::Error naming the file/tensor/field.
  static std::unique_ptr<ModelDir> open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const ModelConfig& config() const { return config_; }
  const TensorStore& tensors() const { return *store_; }
  // Classification of one tensor (every tensor of tensors() has one). Throws kInvalidArgument
  // for a name the directory does not hold.
  TensorKind kind_of(const std::string& tensor_name) const;
  // Sorted by key.
  const std::vector<Exl3Layer>& exl3_layers() const { return layers_; }
  const Exl3Layer* find_exl3_layer(const std::string& key) const;
  bool is_exl3() const { return !layers_.empty(); }
  // Tokenizer and other auxiliary files present (tokenizer.json, tokenizer_config.json, ...):
  // base names, sorted, of every regular file except config.json, *.safetensors,
  // *.safetensors.index.json and dot files (quantization_config.json is included).
  const std::vector<std::string>& aux_files() const { return aux_files_; }

  // Views of one EXL3 layer's tensors. Legacy su/sv are expanded to fp16 into `scratch`
  // (caller-owned, resized as needed) so the view always has suh/svh. An F32/BF16 bias is
  // likewise converted to fp16 into `scratch` (as ExLlamaV3 does at load). The view is valid
  // while this ModelDir lives and `scratch` is neither resized nor destroyed. Only the layer's
  // key is used; an unknown key gives kInvalidArgument.
  exl3::Exl3LinearView exl3_view(const Exl3Layer& layer, std::vector<uint16_t>& scratch) const;

 private:
  std::string dir_;
  ModelConfig config_;
  std::unique_ptr<TensorStore> store_;
  std::map<std::string, TensorKind> kinds_;
  std::vector<Exl3Layer> layers_;
  std::vector<std::string> aux_files_;
};

}  // namespace trellis
