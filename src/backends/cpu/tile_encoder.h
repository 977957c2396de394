// backends/cpu/tile_encoder.h: the SIMD, multithreaded tile encoder (spec 5.7) for the quantizer.
//
// Goal: exactly the states of exl3::encode_tile (the scalar oracle, which reproduces ExLlamaV3
// bit for bit) at many times its speed. Non-goal: anything but whole tiles.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/thread_pool.h"
#include "exl3/codebook.h"

namespace trellis::cpu {

enum class EncodeMode {
  kExact,     // spec 5.7 two-pass tail-biting search: valid, bit-identical states
  kEstimate,  // one unconstrained pass: not tail-biting (never store these states), half the
              // work; the decoded values give the error of the best path, for scale searches
};

// Encodes n_tiles tiles of 256 binary16 values each (trellis order) with K bits per weight.
// states (n_tiles*256) and decoded (n_tiles*256 binary16 bits) are each optional. Tiles are
// spread over `pool`. Throws kInvalidArgument for a bad K or a non-finite input.
void encode_tiles(const uint16_t* x, size_t n_tiles, int K, exl3::Codebook cb, uint16_t* states,
                  uint16_t* decoded, ThreadPool& pool, EncodeMode mode = EncodeMode::kExact);

// The Highway target the encoder dispatches to (for logs and benchmarks).
const char* tile_encoder_target_name();

// For tests: the binary16 arithmetic of the dispatched target's fast step (the one used where
// every cost is +inf or in [2^-14, 65504]): cost[i] = fp16(RN16(dec[i] - w)² + p[i]) with a
// single rounding, as a float, for n values. Returns false (cost untouched) on targets without
// a fast step, which use the exact step of the scalar oracle's arithmetic everywhere.
bool tile_encoder_fast_cost_for_test(const float* dec, float w, const float* p, size_t n, float* cost);

}  // namespace trellis::cpu
