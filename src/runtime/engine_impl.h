// runtime/engine_impl.h: what a public Engine holds (for internal code that extends it).
#pragma once

#include <memory>

#include "backends/backend.h"
#include "model/model.h"
#include "runtime/tokenizer.h"
#include "trellis/runtime.h"

namespace trellis {

struct Engine::Impl {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
};


}  // namespace trellis
