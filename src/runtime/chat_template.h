// runtime/chat_template.h: turns a conversation into the prompt text a model was trained on, by
// running the model's own Jinja2 chat template.
//
// Goals: byte-for-byte the text Hugging Face transformers' tokenizer.apply_chat_template(...,
// tokenize=False) produces, for the templates models ship (ChatML/SmolLM, Llama 3.x, Qwen 2/2.5/3,
// Mistral, ...), verified against Python jinja2 in tests/unit/chat_template_oracle_test.cpp. The
// template runs in an interpreter (runtime/jinja_*.h) with transformers' environment: trim_blocks,
// lstrip_blocks, loop controls, tojson as json.dumps(ensure_ascii=False), raise_exception,
// strftime_now, dict, namespace, and the {% generation %} tag.
// Non-goals: Jinja2 features no chat template uses (template inheritance, includes, imports,
// {% call %} blocks, recursive loops, HTML autoescaping); a template reaching one fails with
// ErrorKind::kUnsupported naming the construct and its line and column, never with wrong text.
//
// Errors (trellis::Error): kFormat for a malformed template or one that fails at run time the way
// jinja2 would (TypeError, use of an undefined value); kUnsupported as above; kInvalidArgument when
// the template calls raise_exception() (its message is kept, e.g. Mistral's "Conversation roles must
// alternate user/assistant/user/assistant/..."); kIo for unreadable model files.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "trellis/error.h"

namespace trellis {

namespace jinja {
struct Stmt;
}

struct ChatMessage {
  std::string role;
  std::string content;
  // Further message fields (tool_calls, reasoning_content, name, ...), added after role and content
  // in this order. A key here overrides role/content; a null value removes the key, as transformers
  // drops None-valued message fields.
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
};

class ChatTemplate {
 public:
  // Parses a template. Throws kFormat / kUnsupported (with line and column) on syntax errors and
  // unsupported statements.
  static ChatTemplate parse(std::string source);

  // Renders with `context` (a JSON object) as the template's variables, exactly as given: nothing is
  // added. nlohmann::json objects iterate in sorted key order, ordered_json in insertion order; use
  // ordered_json when key order matters to the output (tool schemas passed through tojson).
  std::string render(const nlohmann::json& context) const;
  std::string render(const nlohmann::ordered_json& context) const;

  // What transformers' apply_chat_template(messages, add_generation_prompt=..., tokenize=False)
  // renders: messages as dicts (None-valued fields dropped; reasoning_content/thinking/reasoning
  // aliased to each other like transformers does), tools=None and documents=None unless
  // `extra_context` sets them, bos_token/eos_token, plus every key of `extra_context` (for example
  // enable_thinking, date_string, tools).
  std::string apply(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                    const std::string& bos_token, const std::string& eos_token,
                    const nlohmann::ordered_json& extra_context = nlohmann::ordered_json::object()) const;

  const std::string& source() const { return source_; }

 private:
  std::string source_;
  std::shared_ptr<const std::vector<std::unique_ptr<jinja::Stmt>>> body_;
};

// A model directory's chat template and the special tokens templates refer to.
struct ModelChatTemplate {
  std::string source;   // the template text
  std::string origin;   // the file it came from
  std::string bos_token;  // from tokenizer_config.json ("" when absent)
  std::string eos_token;
};

// Finds the template of a Hugging Face model directory, in transformers' order: chat_template.jinja,
// then chat_template.json {"chat_template": ...}, then tokenizer_config.json "chat_template" (a
// string, or a list of {"name", "template"} from which "default" is taken). Throws kIo when a file
// cannot be read, kFormat when one is malformed or none holds a template.
ModelChatTemplate load_model_chat_template(const std::filesystem::path& model_dir);

}  // namespace trellis
