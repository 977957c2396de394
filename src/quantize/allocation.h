// quantize/allocation.h: integer bits per tensor for a fractional target (spec 5.11).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace trellis::quant {

struct AllocTensor {
  std::string key;     // e.g. model.layers.3.mlp.down_proj
  int64_t numel = 0;   // padded k * n
  int group = 0;       // tensors of one group are raised together
  int priority = 0;    // attention 2, MLP 1
  int layer = 0;
  int K = 0;           // result
};

// Assigns K to every tensor: all start at floor(bits), then groups are raised by one bit (capped
// at 8) in priority order while the budget int(bits * Σ numel) allows. Returns the recorded
// average (numel-weighted, rounded to 2 decimals). Throws kInvalidArgument unless 1 <= bits <= 8.
double allocate_bits(std::vector<AllocTensor>& tensors, double bits, int num_layers);

}  // namespace trellis::quant
