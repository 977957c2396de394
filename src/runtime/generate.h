// runtime/generate.h: the generation loop: prompt ids in, streamed text out.
//
// Goals: one prefill forward over the prompt, then one forward per token through the model's KV
// cache, sampling with runtime/sampler.h. The Generator remembers which tokens the cache holds,
// so a chat turn whose prompt extends the previous conversation re-runs only the new tokens (the
// longest common prefix is reused). Text streams through a callback in whole UTF-8 characters,
// never showing any part of a stop string; the callback can cancel. Ends on a stop id, a stop
// string, max_tokens or a full context, and says which.
//
// Non-goals: batching several sequences, speculative decoding, KV cache eviction/shifting (a full
// context ends the turn with a clear message).
//
// A Model has one KV cache: use one Generator per Model at a time (a second one, or direct
// Model::forward calls, invalidate the first one's history; call reset() after such use).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "model/model.h"
#include "runtime/sampler.h"
#include "runtime/tokenizer.h"

namespace trellis {

enum class StopReason {
  kStopToken,    // sampled one of stop_ids
  kStopString,   // the text reached one of stop_strings
  kMaxTokens,    // generated max_tokens tokens
  kContextFull,  // prompt + generated tokens filled the model's context
  kCancelled,    // the callback returned false
};
const char* stop_reason_name(StopReason reason);

struct GenerateOptions {
  SamplingParams sampling;
  int64_t max_tokens = 512;              // < 0: until the context is full; 0: prefill only
  std::vector<int32_t> stop_ids;         // e.g. default_stop_ids(); the token is not rendered
  std::vector<std::string> stop_strings; // matched on the decoded text, cut from the output
  bool skip_special = true;              // special tokens (<|im_start|>...) are not rendered
};

struct GenerateStats {
  int64_t prompt_tokens = 0;     // prompt length
  int64_t reused_tokens = 0;     // prompt tokens whose KV the previous call left in the cache
  int64_t generated_tokens = 0;  // tokens sampled, a final stop token included
  double prefill_seconds = 0;    // forward over the new prompt tokens + the first sample
  double decode_seconds = 0;     // the later forwards and samples (callback time excluded)

  // (prompt_tokens - reused_tokens) / prefill_seconds; 0 when nothing was timed.
  double prefill_tok_s() const;
  // Decode forwards per second: (generated_tokens - 1) / decode_seconds; 0 when none ran.
  double decode_tok_s() const;
};

struct GenerateResult {
  std::string text;             // the output: exactly the pieces given to the callback
  std::vector<int32_t> tokens;  // every sampled id, in order
  StopReason reason = StopReason::kMaxTokens;
  std::string stop_string;      // kStopString: the one that matched
  std::string message;          // kContextFull: a sentence for the user saying what happened
  GenerateStats stats;
};

// Receives output text in order; returning false stops generation (kCancelled).
using TextCallback = std::function<bool(std::string_view piece)>;

class Generator {
 public:
  // Both must outlive the Generator.
  Generator(Model& model, const Tokenizer& tokenizer);

  // Generates a continuation of `prompt` (token ids, at least one; the caller adds BOS and the
  // chat template). The prompt plus the generated tokens are the sequence the penalties see.
  // Throws kInvalidArgument for an empty prompt, a prompt that leaves no room in the context
  // (prompt length >= max_context), bad options (sampling parameters, empty stop string), or a
  // token outside the vocabulary. Errors from the model, tokenizer or callback propagate; the
  // cache history stays consistent (tokens whose forward did not finish are forgotten).
  GenerateResult generate(std::span<const int32_t> prompt, const GenerateOptions& options,
                          const TextCallback& on_text = {});

  // The tokens whose keys and values the model's cache holds, position 0 first. After a call this
  // is the prompt plus every generated token but the last (which was never run).
  const std::vector<int32_t>& history() const { return history_; }
  // Forgets the history; the next call prefills its whole prompt.
  void reset() { history_.clear(); }

 private:
  Model& model_;
  const Tokenizer& tokenizer_;
  std::vector<int32_t> history_;
  std::vector<float> logits_;
};

// The ids that end a model's turn: config.json's eos_token_id(s), the tokenizer's eos token, and
// generation_config.json's eos_token_id (an integer or a list) when the model directory has one.
// Sorted, without duplicates. kFormat naming generation_config.json when it is malformed.
std::vector<int32_t> default_stop_ids(const Model& model, const Tokenizer& tokenizer);

}  // namespace trellis
