// backends/cuda/cuda_encode.h: the EXL3 tile encoder (two-pass tail-biting Viterbi, spec 5.7) on
// a CUDA device, for the quantizer.
//
// Goal: exactly the states of exl3::encode_tile (ExLlamaV3's bit for bit, with its start-edge and
// tie-order quirks) at several times ExLlamaV3's own encoder throughput. Non-goals: the
// unconstrained "estimate" mode of the CPU encoder; device-resident inputs (the quantizer's data
// is on the host, and the copies cost about 1 % of the search).
#pragma once

#include <cstddef>
#include <cstdint>

#include "exl3/codebook.h"

namespace trellis::cuda {

// True when a CUDA device is usable (driver present, at least one device). Never throws.
bool encoder_available();

// Encodes n_tiles independent tiles. x: n_tiles*256 binary16 bit patterns in trellis (step) order,
// host memory. Writes n_tiles*256 states (host, step order, tail-biting for K) and, if decoded !=
// nullptr, their decoded binary16 values. Identical results to exl3::encode_tile for every tile.
// Any n_tiles (streamed in chunks; the number of tiles in flight is sized from free device memory).
// Throws trellis::Error: kInvalidArgument for K outside 1..8 or a non-finite input, kOutOfMemory /
// kUnsupported / kInternal for CUDA failures. Thread-safe for calls from one host thread at a time
// per device (calls for the same device are serialised); device = CUDA device index.
void encode_tiles(const uint16_t* x, size_t n_tiles, int K, exl3::Codebook cb, uint16_t* states,
                  uint16_t* decoded, int device = 0);

// Milliseconds the encode kernels of the last encode_tiles call on `device` took on the GPU
// (CUDA events around each launch, summed; copies excluded). 0 before the first call. For
// benchmarks.
double last_encode_kernel_ms(int device = 0);

}  // namespace trellis::cuda
