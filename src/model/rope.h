// model/rope.h: rotary-embedding frequencies from config.json, as Hugging Face transformers
// computes them for each rope type (default, linear, llama3, yarn).
#pragma once

#include "backends/backend.h"
#include "format/config.h"

namespace trellis {

// Throws kUnsupported for rope types trellis does not implement (naming them).
RopeParams make_rope_params(const ModelConfig& config);

}  // namespace trellis
