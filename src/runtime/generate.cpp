// runtime/generate.cpp: Generator and default_stop_ids.
#include "runtime/generate.h"

#include <algorithm>
#include <chrono>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mmap_file.h"
#include "runtime/generate_stop.h"

namespace trellis {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

size_t common_prefix(std::span<const int32_t> a, std::span<const int32_t> b) {
  const auto [ia, ib] = std::mismatch(a.begin(), a.end(), b.begin(), b.end());
  return static_cast<size_t>(ia - a.begin());
}

}  // namespace

const char* stop_reason_name(StopReason reason) {
  switch (reason) {
    case StopReason::kStopToken: return "stop_token";
    case StopReason::kStopString: return "stop_string";
    case StopReason::kMaxTokens: return "max_tokens";
    case StopReason::kContextFull: return "context_full";
    case StopReason::kCancelled: return "cancelled";
  }
  return "unknown";
}

double GenerateStats::prefill_tok_s() const {
  return prefill_seconds > 0 ? static_cast<double>(prompt_tokens - reused_tokens) / prefill_seconds : 0.0;
}

double GenerateStats::decode_tok_s() const {
  return decode_seconds > 0 && generated_tokens > 1 ? static_cast<double>(generated_tokens - 1) / decode_seconds
                                                    : 0.0;
}

Generator::Generator(Model& model, const Tokenizer& tokenizer) : model_(model), tokenizer_(tokenizer) {}

GenerateResult Generator::generate(std::span<const int32_t> prompt, const GenerateOptions& options,
                                   const TextCallback& on_text) {
  Sampler sampler(options.sampling);  // validates the sampling parameters
  StopStringFilter stops(options.stop_strings);
  const int64_t context = model_.max_context();
  const auto prompt_len = static_cast<int64_t>(prompt.size());
  if (prompt.empty()) fail(ErrorKind::kInvalidArgument, "generate: the prompt is empty (it needs at least one token)");
  if (prompt_len >= context)
    fail(ErrorKind::kInvalidArgument,
         "generate: the prompt of {} tokens leaves no room in the model's context of {} tokens; shorten the "
         "conversation or load the model with a larger max_context",
         prompt_len, context);

  GenerateResult result;
  GenerateStats& stats = result.stats;
  stats.prompt_tokens = prompt_len;
  bool cancelled = false;
  const auto deliver = [&](const std::string& piece) {
    if (piece.empty() || cancelled) return;
    result.text += piece;
    if (on_text && !on_text(piece)) cancelled = true;
  };

  // Prefill: keep the cached prefix this prompt shares, but always run at least its last token
  // (its logits are needed).
  const size_t reuse = std::min(common_prefix(history_, prompt), prompt.size() - 1);
  history_.resize(reuse);  // positions past the prefix are about to be overwritten
  stats.reused_tokens = static_cast<int64_t>(reuse);
  const Clock::time_point prefill_start = Clock::now();
  model_.forward(prompt.subspan(reuse), static_cast<int64_t>(reuse), /*all_logits=*/false, logits_);
  history_.assign(prompt.begin(), prompt.end());
  if (options.max_tokens == 0) {
    stats.prefill_seconds = seconds_since(prefill_start);
    result.reason = StopReason::kMaxTokens;
    return result;
  }
  // A model may pad its vocabulary past the tokenizer's; those rows are never sampled.
  const size_t vocab = std::min(logits_.size(), static_cast<size_t>(tokenizer_.vocab_size()));
  std::vector<int32_t> sequence(prompt.begin(), prompt.end());
  int32_t token = sampler.sample(std::span<const float>(logits_).first(vocab), sequence);
  stats.prefill_seconds = seconds_since(prefill_start);

  StreamDecoder decoder(tokenizer_, options.skip_special);
  for (;;) {
    sequence.push_back(token);
    result.tokens.push_back(token);
    const auto generated = static_cast<int64_t>(result.tokens.size());
    stats.generated_tokens = generated;
    if (std::find(options.stop_ids.begin(), options.stop_ids.end(), token) != options.stop_ids.end()) {
      result.reason = StopReason::kStopToken;
      break;
    }
    deliver(stops.push(decoder.push(token)));
    if (cancelled) {
      result.reason = StopReason::kCancelled;
      break;
    }
    if (stops.stopped()) {
      result.reason = StopReason::kStopString;
      break;
    }
    if (options.max_tokens > 0 && generated >= options.max_tokens) {
      result.reason = StopReason::kMaxTokens;
      break;
    }
    if (prompt_len + generated >= context) {
      result.reason = StopReason::kContextFull;
      result.message = fmt::format(
          "stopped: the context of {} tokens is full (prompt {} + generated {}); start a new conversation or "
          "load the model with a larger max_context",
          context, prompt_len, generated);
      break;
    }
    const Clock::time_point step_start = Clock::now();
    model_.forward(std::span<const int32_t>(&token, 1), static_cast<int64_t>(history_.size()), false, logits_);
    history_.push_back(token);
    token = sampler.sample(std::span<const float>(logits_).first(vocab), sequence);
    stats.decode_seconds += seconds_since(step_start);
  }

  // Release the text still held back (an incomplete character, a possible stop-string prefix),
  // unless a stop string already ended the output or the consumer cancelled.
  if (result.reason != StopReason::kCancelled && !stops.stopped()) {
    deliver(stops.push(decoder.flush()));
    if (!stops.stopped()) deliver(stops.flush());
    if (cancelled) result.reason = StopReason::kCancelled;
  }
  if (stops.stopped()) result.stop_string = stops.matched();
  return result;
}

std::vector<int32_t> default_stop_ids(const Model& model, const Tokenizer& tokenizer) {
  std::vector<int32_t> ids;
  const auto add = [&](int64_t id) {
    if (id >= 0 && id <= INT32_MAX) ids.push_back(static_cast<int32_t>(id));
  };
  for (int64_t id : model.config().eos_token_ids) add(id);
  if (tokenizer.eos_id()) add(*tokenizer.eos_id());
  const std::string path = (std::filesystem::path(model.dir().dir()) / "generation_config.json").string();
  if (std::filesystem::exists(path)) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(read_text_file(path));
    } catch (const nlohmann::json::exception& e) {
      fail(ErrorKind::kFormat, "{}: not valid JSON: {}", path, e.what());
    }
    const auto bad = [&](const nlohmann::json& v) {
      fail(ErrorKind::kFormat, "{}: field 'eos_token_id' is {}, expected a non-negative integer or a list of them",
           path, v.dump());
    };
    if (j.is_object() && j.contains("eos_token_id")) {
      const nlohmann::json& eos = j["eos_token_id"];
      if (eos.is_array()) {
        for (const nlohmann::json& e : eos) {
          if (!e.is_number_integer() || e.get<int64_t>() < 0) bad(e);
          add(e.get<int64_t>());
        }
      } else if (eos.is_number_integer()) {
        if (eos.get<int64_t>() < 0) bad(eos);
        add(eos.get<int64_t>());
      } else if (!eos.is_null()) {
        bad(eos);
      }
    }
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

}  // namespace trellis
