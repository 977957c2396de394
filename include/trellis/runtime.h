// trellis/runtime.h: load a model and evaluate or run it. Public API (no internal headers).
#pragma once

#include <cstdint>
#include <functional>
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
  // "auto" (CUDA, else a discrete Vulkan GPU, else the CPU), "cpu"; "cuda[:N]", "vulkan[:N]" when built
  std::string device = "auto";
  int64_t context = 0;          // KV cache length; 0 = the model's maximum, capped at 8192
};

// Sampling knobs (see src/runtime/sampler.h for their exact meaning and order).
struct SamplingOptions {
  float temperature = 0.7f;         // 0 = greedy
  int top_k = 40;                   // 0 = off
  float top_p = 0.95f;              // 1 = off
  float min_p = 0.05f;              // 0 = off
  float repetition_penalty = 1.0f;  // 1 = off
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  int penalty_last_n = 64;          // -1 = whole sequence
  uint64_t seed = 0;
};

struct GenerationOptions {
  SamplingOptions sampling;
  int64_t max_tokens = 512;          // < 0: until the context is full
  std::vector<std::string> stop;     // stop strings (cut from the output)
  bool stop_at_eos = true;           // end at the model's end-of-turn tokens
};

struct GenerationResult {
  std::string text;
  std::string stop_reason;  // "stop_token", "stop_string", "max_tokens", "context_full", "cancelled"
  std::string message;      // for context_full: what happened, for the user
  int64_t prompt_tokens = 0, reused_tokens = 0, generated_tokens = 0;
  double prefill_tok_s = 0, decode_tok_s = 0;
};

struct ChatTurn {
  std::string role;     // "system", "user", "assistant"
  std::string content;
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

  // Generation. The engine keeps the token history of its KV cache, so a prompt that extends the
  // previous prompt + reply (a chat) only runs the new tokens. on_text receives the output as it
  // is produced, in whole UTF-8 characters; returning false stops generation ("cancelled").
  GenerationResult generate(std::span<const int32_t> prompt, const GenerationOptions& options,
                            const std::function<bool(std::string_view)>& on_text = {});
  // Forgets the cached history (the next generate() prefills its whole prompt).
  void reset_history();

  // The model's chat template (tokenizer_config.json / chat_template.jinja) rendered for
  // `messages` as transformers' apply_chat_template does, then tokenized without adding BOS (the
  // template writes it). kFormat naming the directory when the model has no chat template.
  std::vector<int32_t> chat_prompt(const std::vector<ChatTurn>& messages, bool add_generation_prompt = true);
  bool has_chat_template() const;

  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  Engine();
  std::unique_ptr<Impl> impl_;
};

}  // namespace trellis
