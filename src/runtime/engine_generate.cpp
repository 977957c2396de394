// runtime/engine_generate.cpp: the generation and chat parts of the public Engine (engine.cpp has
// loading and evaluation): a thin layer over runtime/generate.h and runtime/chat_template.h.
#include <fmt/format.h>

#include "core/error.h"
#include "runtime/engine_impl.h"
#include "trellis/runtime.h"

namespace trellis {

GenerationResult Engine::generate(std::span<const int32_t> prompt, const GenerationOptions& options,
                                  const std::function<bool(std::string_view)>& on_text) {
  Impl& impl = *impl_;
  if (!impl.generator) impl.generator = std::make_unique<Generator>(*impl.model, *impl.tokenizer);
  GenerateOptions go;
  const SamplingOptions& s = options.sampling;
  go.sampling.temperature = s.temperature;
  go.sampling.top_k = s.top_k;
  go.sampling.top_p = s.top_p;
  go.sampling.min_p = s.min_p;
  go.sampling.repetition_penalty = s.repetition_penalty;
  go.sampling.presence_penalty = s.presence_penalty;
  go.sampling.frequency_penalty = s.frequency_penalty;
  go.sampling.penalty_last_n = s.penalty_last_n;
  go.sampling.seed = s.seed;
  go.max_tokens = options.max_tokens;
  go.stop_strings = options.stop;
  if (options.stop_at_eos) go.stop_ids = default_stop_ids(*impl.model, *impl.tokenizer);
  TextCallback cb;
  if (on_text) cb = [&](std::string_view piece) { return on_text(piece); };
  const GenerateResult r = impl.generator->generate(prompt, go, cb);
  GenerationResult out;
  out.text = r.text;
  out.stop_reason = stop_reason_name(r.reason);
  out.message = r.message;
  out.prompt_tokens = r.stats.prompt_tokens;
  out.reused_tokens = r.stats.reused_tokens;
  out.generated_tokens = r.stats.generated_tokens;
  out.prefill_tok_s = r.stats.prefill_tok_s();
  out.decode_tok_s = r.stats.decode_tok_s();
  return out;
}

void Engine::reset_history() {
  if (impl_->generator) impl_->generator->reset();
}

bool Engine::has_chat_template() const {
  Impl& impl = *impl_;
  if (impl.chat_template_state == 0) {
    try {
      impl.chat_template_info = load_model_chat_template(impl.model_dir);
      impl.chat_template.emplace(ChatTemplate::parse(impl.chat_template_info.source));
      impl.chat_template_state = 1;
    } catch (const Error& e) {
      impl.chat_template_state = -1;
      impl.chat_template_error = e.what();
    }
  }
  return impl.chat_template_state == 1;
}

std::vector<int32_t> Engine::chat_prompt(const std::vector<ChatTurn>& messages, bool add_generation_prompt) {
  Impl& impl = *impl_;
  if (!has_chat_template())
    fail(ErrorKind::kFormat, "{}: no usable chat template ({})", impl.model_dir, impl.chat_template_error);
  std::vector<ChatMessage> m;
  m.reserve(messages.size());
  for (const ChatTurn& t : messages) {
    ChatMessage cm;
    cm.role = t.role;
    cm.content = t.content;
    m.push_back(std::move(cm));
  }
  std::string bos = impl.chat_template_info.bos_token, eos = impl.chat_template_info.eos_token;
  if (bos.empty() && impl.tokenizer->bos_token()) bos = *impl.tokenizer->bos_token();
  if (eos.empty() && impl.tokenizer->eos_token()) eos = *impl.tokenizer->eos_token();
  const std::string text = impl.chat_template->apply(m, add_generation_prompt, bos, eos);
  // transformers tokenizes the rendered template with add_special_tokens=False: the template
  // itself writes BOS and the role markers, which parse as special tokens.
  return impl.tokenizer->encode(text, /*add_special_tokens=*/false);
}

}  // namespace trellis
