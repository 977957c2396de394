// exl3/tile.h: 16x16 tiles, the trellis step order inside a tile, and bit packing
// (spec 2.6-2.9). Pure integer code, exact by construction.
#pragma once

#include <cstdint>

namespace trellis::exl3 {

inline constexpr int kTileDim = 16;      // tile is 16 x 16 weights
inline constexpr int kTileSize = 256;    // trellis steps per tile
inline constexpr int kMinK = 1, kMaxK = 8;

// Words of one packed tile: 16*K int16 values (= 8*K little-endian uint32 words, 32*K bytes).
constexpr int tile_words16(int K) { return 16 * K; }
constexpr int tile_words32(int K) { return 8 * K; }
constexpr int tile_bytes(int K) { return 32 * K; }

// Tile element (row r = input-feature offset, col c = output-feature offset) of step p (spec 2.7).
int step_row(int p);
int step_col(int p);
// Inverse: the step that holds tile element (r, c).
int step_of(int r, int c);

// Packs 256 states (step order) into 16*K int16 words in file order (spec 2.8). Only the low K
// bits of each state are stored; the caller guarantees the states form a tail-biting chain.
void pack_tile(const uint16_t states[kTileSize], int K, uint16_t* packed);

// Extracts the 256 states of one packed tile (spec 2.9). `packed` points at 32*K bytes in file
// order; no alignment required (read byte-wise / memcpy).
void unpack_tile(const void* packed, int K, uint16_t states[kTileSize]);

// Whether a state sequence satisfies the cyclic shift relation for K (spec 2.9).
bool is_tail_biting(const uint16_t states[kTileSize], int K);

}  // namespace trellis::exl3
