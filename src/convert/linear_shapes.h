// convert/linear_shapes.h: the real (unpadded) shape of a linear layer, from config.json.
//
// EXL3 stores linears padded to multiples of 128 (spec 2.4); the tensors alone cannot say how
// much of that is padding. For the Llama family the module key and the config determine it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "format/config.h"

namespace trellis {

struct LinearDims {
  int64_t in_features = 0;
  int64_t out_features = 0;
};

// (in, out) of a Llama-family linear (q/k/v/o_proj, gate/up/down_proj, lm_head) or nullopt for a
// key this function does not know.
std::optional<LinearDims> llama_linear_dims(const ModelConfig& config, const std::string& key);

// Whether `key` names the output head.
bool is_head_key(const std::string& key);

inline int64_t round_up_128(int64_t v) { return (v + 127) / 128 * 128; }

}  // namespace trellis
