// exl3/encode.h: the two-pass tail-biting Viterbi tile encoder of spec 5.7, scalar and exact.
//
// Goal: the oracle for the CPU and CUDA encoders; reproduces ExLlamaV3's states bit for bit
// (spec 7.5), including the start-edge and tie-break quirks. Non-goal: speed.
#pragma once

#include <cstdint>

#include "exl3/codebook.h"
#include "exl3/tile.h"

namespace trellis::exl3 {

// Encodes one tile. `x` holds 256 binary16 bit patterns in trellis (step) order. Writes 256
// states in step order satisfying the tail-biting chain for K, and optionally their decoded
// binary16 values. Deterministic; thread-safe (allocates its own scratch).
void encode_tile(const uint16_t x[kTileSize], int K, Codebook cb, uint16_t states[kTileSize],
                 uint16_t* decoded /* nullable, 256 */);

}  // namespace trellis::exl3
