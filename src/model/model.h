// model/model.h: a loaded Llama-family model (Llama 2/3.x, SmolLM, Mistral, Qwen2, Qwen3) and its
// forward pass over a Backend, with a positional fp16 KV cache.
//
// Every linear may be EXL3 (any K, any codebook, padded as spec 2.4) or dense fp16/bf16/fp32,
// mixed freely. A stored lm_head (EXL3 or dense) wins over tied embeddings (spec 2.13).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "format/config.h"
#include "format/model_dir.h"

namespace trellis {

struct ModelOptions {
  int64_t max_context = 0;     // KV cache length; 0 = min(max_position_embeddings, 8192)
  int64_t max_batch = 0;       // rows per forward chunk (prefill is split into chunks this size);
                               // 0 = the backend's preferred_batch() (512 on the CPU, 2048 on CUDA)
};

class Model {
 public:
  // Loads and validates the directory; throws trellis::Error naming the file/tensor/field, or
  // kUnsupported listing the supported architectures.
  static std::unique_ptr<Model> load(const std::string& dir, Backend& backend, const ModelOptions& options = {});
  ~Model();

  const ModelConfig& config() const { return config_; }
  const ModelDir& dir() const { return *dir_; }
  int64_t max_context() const { return max_context_; }
  int64_t vocab_size() const { return config_.vocab_size; }
  Backend& backend() { return backend_; }

  // Runs `tokens` at positions start .. start+n-1; the cache must hold positions 0..start-1 of
  // the same sequence (written by earlier calls). Fills `logits` with n x vocab floats when
  // `all_logits`, else with the last row's vocab floats. Throws kInvalidArgument when
  // start + n exceeds max_context() or a token id is outside the vocabulary.
  void forward(std::span<const int32_t> tokens, int64_t start, bool all_logits, std::vector<float>& logits);

  static const std::vector<std::string>& supported_architectures();

 private:
  struct Layer;
  explicit Model(Backend& backend);
  void load_weights(const ModelOptions& options);
  std::unique_ptr<LinearWeights> load_linear(const std::string& key, int64_t in, int64_t out, bool required = true);
  DeviceTensor load_vector(const std::string& name, int64_t length);
  void forward_chunk(std::span<const int32_t> tokens, int64_t start, bool all_logits, float* logits);

  Backend& backend_;
  std::unique_ptr<ModelDir> dir_;
  ModelConfig config_;
  int64_t max_context_ = 0, max_batch_ = 0;
  std::vector<std::vector<uint16_t>> scratch_;  // expanded legacy su/sv, kept alive for the views
  DeviceTensor embed_, final_norm_;
  // The token embedding stays in the mapped file when the backend prefers that (host_embedding())
  // and the head does not need it on the device (a stored lm_head): saves vocab x hidden x 2 bytes
  // of device memory (1 GiB for a Llama-3-8B) for a copy of one row per token.
  TensorView embed_host_;
  bool embed_on_host_ = false;
  std::unique_ptr<LinearWeights> head_;
  std::vector<Layer> layers_;
  RopeParams rope_;
  AttentionParams attn_;
  // Activations, sized for max_batch rows.
  DeviceTensor x_, h_, q_, k_, v_, o_, tmp_, gate_, up_, logits_;
};

}  // namespace trellis
