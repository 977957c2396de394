// exl3/tile.cpp: step order (spec 2.7), packing (2.8) and state extraction (2.9) of one tile.
//
// The packed tile is handled as spec 2.8's "useful formulation": 8K little-endian uint32 words
// forming an MSB-first cyclic bitstream of 256K bits. Step i's state is the 16-bit window of
// that stream ending at bit (i+1)K.
#include "exl3/tile.h"

#include <cstring>

#include "core/error.h"

namespace trellis::exl3 {

namespace {

void check_k(int K) {
  if (K < kMinK || K > kMaxK)
    fail(ErrorKind::kInvalidArgument, "EXL3 bits per weight K = {}; expected {}..{}", K, kMinK,
         kMaxK);
}

}  // namespace

int step_row(int p) {
  const int t = p / 8, j = p % 8;
  const int r0 = 2 * (t % 4);
  return r0 + (j & 1) + 8 * ((j >> 1) & 1);
}

int step_col(int p) {
  const int t = p / 8, j = p % 8;
  const int c0 = t / 4;
  return c0 + 8 * (j >> 2);
}

int step_of(int r, int c) {
  return 32 * (c % 8) + 8 * ((r % 8) / 2) + (r % 2) + 2 * (r >= 8 ? 1 : 0) + 4 * (c >= 8 ? 1 : 0);
}

void pack_tile(const uint16_t states[kTileSize], int K, uint16_t* packed) {
  check_k(K);
  // Stream bit q lives in bit 31 - (q mod 32) of u[q / 32].
  uint32_t u[tile_words32(kMaxK)] = {};
  for (int i = 0; i < kTileSize; ++i) {
    for (int b = 0; b < K; ++b) {
      const uint32_t bit = (states[i] >> (K - 1 - b)) & 1u;
      const int q = i * K + b;
      u[q / 32] |= bit << (31 - q % 32);
    }
  }
  // File order = little-endian bytes of u[]: the low half of u[m] is int16 word 2m.
  for (int m = 0; m < tile_words32(K); ++m) {
    packed[2 * m] = static_cast<uint16_t>(u[m] & 0xFFFFu);
    packed[2 * m + 1] = static_cast<uint16_t>(u[m] >> 16);
  }
}

void unpack_tile(const void* packed, int K, uint16_t states[kTileSize]) {
  check_k(K);
  const auto* bytes = static_cast<const unsigned char*>(packed);
  uint32_t u[tile_words32(kMaxK)];
  for (int m = 0; m < tile_words32(K); ++m) {
    const unsigned char* w = bytes + 4 * m;
    u[m] = uint32_t{w[0]} | uint32_t{w[1]} << 8 | uint32_t{w[2]} << 16 | uint32_t{w[3]} << 24;
  }
  const int n_bits = kTileSize * K;
  for (int i = 0; i < kTileSize; ++i) {
    const int e = (i + 1) * K;                                    // window ends before stream bit e
    const int i1 = (e - 1) / 32;                                  // word holding the last bit
    const int i0 = (((e - 16) % n_bits + n_bits) % n_bits) / 32;  // word holding the first bit
    const uint64_t pair = uint64_t{u[i0]} << 32 | u[i1];
    states[i] = static_cast<uint16_t>((pair >> (31 - (e - 1) % 32)) & 0xFFFFu);
  }
}

bool is_tail_biting(const uint16_t states[kTileSize], int K) {
  check_k(K);
  const uint32_t edge_mask = (1u << (16 - K)) - 1;
  for (int i = 0; i < kTileSize; ++i) {
    const uint32_t prev = states[(i + kTileSize - 1) % kTileSize];
    const uint32_t in_edge = static_cast<uint32_t>(states[i]) >> K;
    if (in_edge != (prev & edge_mask)) return false;
  }
  return true;
}

}  // namespace trellis::exl3
