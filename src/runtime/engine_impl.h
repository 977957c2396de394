// runtime/engine_impl.h: what a public Engine holds (for internal code that extends it).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "backends/backend.h"
#include "model/model.h"
#include "runtime/chat_template.h"
#include "runtime/generate.h"
#include "runtime/tokenizer.h"
#include "trellis/runtime.h"

namespace trellis {

struct Engine::Impl {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
  std::string model_dir;
  std::unique_ptr<Generator> generator;      // created on first generate()
  std::optional<ChatTemplate> chat_template; // parsed on first chat_prompt()
  ModelChatTemplate chat_template_info;
  int chat_template_state = 0;               // 0 not looked up, 1 present, -1 absent
  std::string chat_template_error;
};


}  // namespace trellis
