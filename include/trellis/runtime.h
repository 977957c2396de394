// trellis/runtime.h: load a model and evaluate or run it. Public API (no internal headers).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace trellis {

struct PerplexityResult {
  double ppl = 0;
  double nll = 0;           // mean negative log-likelihood (natural log)
  int64_t tokens = 0;       // scored tokens
  int64_t chunks = 0, ctx = 0;
  double seconds = 0;
};

struct KldResult {
  double mean_kld = 0;      // mean KL(P_ref || P_model) per scored position, nats
  double top1_agreement = 0;
  double ppl = 0, ref_ppl = 0;
  int64_t tokens = 0;
  int64_t chunks = 0, ctx = 0;
  double seconds = 0;
};

struct EngineOptions {
  std::string device = "auto";  // "auto" (best available), "cpu"; "cuda[:N]", "vulkan[:N]" when built
  int64_t context = 0;          // KV cache length; 0 = the model's maximum, capped at 8192
};

class Engine {
 public:
  // Loads a model directory (EXL3 or fp16/bf16/fp32) and its tokenizer. Throws trellis::Error.
  static std::unique_ptr<Engine> open(const std::string& model_dir, const EngineOptions& options = {});
  ~Engine();

  std::vector<int32_t> tokenize(std::string_view text, bool add_special_tokens) const;
  std::string detokenize(std::span<const int32_t> ids) const;
  int64_t context() const;
  int64_t vocab_size() const;
  std::string device_name() const;
  std::string architecture() const;

  // Perplexity over `chunks` non-overlapping windows of `ctx` tokens (chunks <= 0: all that
  // fit), each scoring all but its first token. Shows a progress bar when `progress`.
  PerplexityResult perplexity(std::span<const int32_t> ids, int64_t ctx, int64_t chunks, bool progress);
  // KL divergence of this model against `reference` over the same windows.
  KldResult kld(Engine& reference, std::span<const int32_t> ids, int64_t ctx, int64_t chunks, bool progress);
  // One causal forward over `ids`; writes input_ids int32 [1, n] and logits fp32 [1, n, vocab].
  void write_logits(std::span<const int32_t> ids, const std::string& path);

  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  Engine();
  std::unique_ptr<Impl> impl_;
};

}  // namespace trellis
