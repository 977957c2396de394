// Tile order (spec 2.7), packing (2.8) and state extraction (2.9): properties, not vectors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <vector>

#include "exl3/tile.h"
#include "test_util.h"
#include "trellis/error.h"

namespace trellis::exl3 {
namespace {

using trellis::test::SplitMix64;

// A random tail-biting state sequence: the windows of a random cyclic bitstream (spec 7.3).
void random_tail_biting(SplitMix64& rng, int K, uint16_t states[kTileSize]) {
  uint32_t bits[kTileSize];
  for (auto& b : bits) b = static_cast<uint32_t>(rng.next() >> 40) & ((1u << K) - 1);
  const int span = (16 + K - 1) / K;
  for (int i = 0; i < kTileSize; ++i) {
    uint32_t s = 0;
    for (int j = 0; j < span; ++j) s |= bits[(i - j + kTileSize) % kTileSize] << (K * j);
    states[i] = static_cast<uint16_t>(s);
  }
}

TEST(Exl3Tile, StepOrderIsABijectionWithTheSpecTable) {
  std::set<std::pair<int, int>> cells;
  for (int p = 0; p < kTileSize; ++p) {
    const int r = step_row(p), c = step_col(p);
    ASSERT_TRUE(r >= 0 && r < kTileDim && c >= 0 && c < kTileDim) << p;
    EXPECT_EQ(step_of(r, c), p);
    cells.insert({r, c});
  }
  EXPECT_EQ(cells.size(), static_cast<size_t>(kTileSize));
  // Spot entries of the full map in spec 2.7.
  const int row0[16] = {0, 32, 64, 96, 128, 160, 192, 224, 4, 36, 68, 100, 132, 164, 196, 228};
  for (int c = 0; c < 16; ++c) EXPECT_EQ(step_of(0, c), row0[c]);
  const int col0[16] = {0, 1, 8, 9, 16, 17, 24, 25, 2, 3, 10, 11, 18, 19, 26, 27};
  for (int r = 0; r < 16; ++r) EXPECT_EQ(step_of(r, 0), col0[r]);
  EXPECT_EQ(step_of(15, 15), 255);
  EXPECT_EQ(step_of(14, 9), 62);
  // Lane t owns steps 8t..8t+7: its mma.m16n8k16 B fragments (rows 2(t%4), +1, +8, +9).
  for (int t = 0; t < 32; ++t) {
    for (int j = 0; j < 8; ++j) {
      const int p = 8 * t + j;
      EXPECT_EQ(step_row(p), 2 * (t % 4) + (j & 1) + ((j & 2) ? 8 : 0));
      EXPECT_EQ(step_col(p), t / 4 + ((j & 4) ? 8 : 0));
    }
  }
}

TEST(Exl3Tile, PackUnpackRoundTripAllK) {
  SplitMix64 rng(0x7111E5ull);
  for (int K = kMinK; K <= kMaxK; ++K) {
    for (int trial = 0; trial < 50; ++trial) {
      uint16_t states[kTileSize], back[kTileSize];
      random_tail_biting(rng, K, states);
      ASSERT_TRUE(is_tail_biting(states, K));
      std::vector<uint16_t> packed(tile_words16(K));
      pack_tile(states, K, packed.data());
      // Unpack from an odd address: the reader must not assume alignment.
      std::vector<unsigned char> shifted(tile_bytes(K) + 1);
      std::memcpy(shifted.data() + 1, packed.data(), tile_bytes(K));
      unpack_tile(shifted.data() + 1, K, back);
      ASSERT_TRUE(std::equal(states, states + kTileSize, back)) << "K=" << K;
    }
  }
}

TEST(Exl3Tile, PackStoresOnlyTheLowKBitsMsbFirst) {
  // Spec 2.8 worked check for K = 2: new bits 00 01 10 11 ... give stream word 0x1B1B, stored as
  // file word 1 (pairs of 16-bit words are swapped).
  const int K = 2;
  uint32_t new_bits[kTileSize];
  for (int i = 0; i < kTileSize; ++i) new_bits[i] = static_cast<uint32_t>(i % 4);
  uint16_t states[kTileSize];
  for (int i = 0; i < kTileSize; ++i) {
    uint32_t s = 0;
    for (int j = 0; j < 8; ++j) s |= new_bits[(i - j + kTileSize) % kTileSize] << (K * j);
    states[i] = static_cast<uint16_t>(s);
  }
  uint16_t packed[32];
  pack_tile(states, K, packed);
  for (int w = 0; w < 32; ++w) EXPECT_EQ(packed[w], 0x1B1B) << w;
}

TEST(Exl3Tile, TailBitingDetectsABrokenChain) {
  SplitMix64 rng(0xB17Eull);
  for (int K = kMinK; K <= kMaxK; ++K) {
    uint16_t states[kTileSize];
    random_tail_biting(rng, K, states);
    ASSERT_TRUE(is_tail_biting(states, K));
    // Flipping a bit above the new bits of one state breaks the relation with its predecessor.
    for (int where : {0, 1, 128, 255}) {
      uint16_t broken[kTileSize];
      std::copy(states, states + kTileSize, broken);
      broken[where] ^= static_cast<uint16_t>(1u << K);
      EXPECT_FALSE(is_tail_biting(broken, K)) << "K=" << K << " at " << where;
    }
  }
}

TEST(Exl3Tile, RejectsBadK) {
  uint16_t states[kTileSize] = {};
  uint16_t packed[16 * 9] = {};
  EXPECT_THROW(pack_tile(states, 0, packed), trellis::Error);
  EXPECT_THROW(pack_tile(states, 9, packed), trellis::Error);
  EXPECT_THROW(unpack_tile(packed, 9, states), trellis::Error);
  EXPECT_THROW(is_tail_biting(states, 0), trellis::Error);
}

}  // namespace
}  // namespace trellis::exl3
