// backends/cpu/exl3_step_tables.h: compile-time tables that turn "state of trellis step i" into
// one byte shuffle and one variable shift per SIMD lane (spec 2.8, 2.9), for each K = 1..8.
//
// Why: a state is the 16 stream bits ending at bit (i+1)K of the tile's MSB-first bitstream of
// little-endian uint32 words. For a group of 8 consecutive steps those bits span at most 7K+16 <=
// 72 stream bits, i.e. at most 4 consecutive words = 16 bytes. Loading those 16 bytes into every
// 128-bit block (LoadDup128, a pure load on x86) lets one in-block byte shuffle (pshufb) put, for
// each 32-bit lane, the 3 stream bytes that hold its window into lane bytes 2,1,0 (most
// significant first, undoing the little-endian word order), after which `>> shift` and `& 0xFFFF`
// leave the state. Three ALU ops per vector of states, no gathers, no cross-block moves.
//
// Tables are portable data (no SIMD); the per-target code in exl3_matmul-inl.h reads them.
#pragma once

#include <array>
#include <cstdint>

namespace trellis::cpu::exl3_tables {

inline constexpr int kGroups = 32;        // groups of 8 consecutive steps per 256-step tile
inline constexpr int kStepsPerGroup = 8;
inline constexpr uint8_t kZeroByte = 0x80;  // shuffle index that yields a zero byte

struct GroupTable {
  // First uint32 word of the 16-byte source of each group, or -1 for the wrap source
  // [u[8K-1], u[0], u[1], u[2]] used by the first steps, whose windows start before bit 0.
  std::array<int8_t, kGroups> src_word{};
  // Byte shuffle for the 8 lanes (4 bytes each) of each group, indices into the 16-byte source.
  alignas(64) std::array<uint8_t, kGroups * kStepsPerGroup * 4> shuffle{};
  // Right shift per lane applied after the shuffle; followed by & 0xFFFF.
  alignas(64) std::array<uint32_t, kGroups * kStepsPerGroup> shift{};
  // True when every window is byte aligned (K = 8): the shuffle alone yields the state.
  bool byte_aligned = true;
};

// Byte of the 16-byte source (little-endian words) that holds stream byte q of that source.
constexpr int source_byte(int q) { return (q / 4) * 4 + 3 - q % 4; }

constexpr GroupTable make_group_table(int K) {
  GroupTable t;
  for (int g = 0; g < kGroups; ++g) {
    const int first_bit = (kStepsPerGroup * g + 1) * K - 16;  // window start of the group's step 0
    int src_bit;
    if (first_bit < 0) {
      t.src_word[g] = -1;
      src_bit = -32;
    } else {
      t.src_word[g] = static_cast<int8_t>(first_bit / 32);
      src_bit = 32 * (first_bit / 32);
    }
    for (int j = 0; j < kStepsPerGroup; ++j) {
      const int i = kStepsPerGroup * g + j;
      const int a = (i + 1) * K - 16 - src_bit;  // window start, relative to the source
      const int q0 = a / 8, o = a % 8;
      uint8_t* lane = &t.shuffle[(kStepsPerGroup * g + j) * 4];
      if (o != 0) t.byte_aligned = false;
      if (o == 0) {
        // Two whole bytes: state = B(q0) << 8 | B(q0+1), no shift needed.
        lane[0] = static_cast<uint8_t>(source_byte(q0 + 1));
        lane[1] = static_cast<uint8_t>(source_byte(q0));
        lane[2] = kZeroByte;
        lane[3] = kZeroByte;
        t.shift[kStepsPerGroup * g + j] = 0;
      } else {
        // Three bytes B(q0) B(q0+1) B(q0+2) in lane bits 23..0; the window is bits 23-o .. 8-o.
        lane[0] = static_cast<uint8_t>(source_byte(q0 + 2));
        lane[1] = static_cast<uint8_t>(source_byte(q0 + 1));
        lane[2] = static_cast<uint8_t>(source_byte(q0));
        lane[3] = kZeroByte;
        t.shift[kStepsPerGroup * g + j] = static_cast<uint32_t>(8 - o);
      }
    }
  }
  return t;
}

// Validity of the construction, checked at compile time: every byte a lane reads lies inside the
// 16-byte source (so the "at most 4 words" argument above holds for all K and groups).
constexpr bool table_in_range(const GroupTable& t) {
  for (uint8_t b : t.shuffle)
    if (b != kZeroByte && b >= 16) return false;
  return true;
}

inline constexpr std::array<GroupTable, 8> kGroupTables = {
    make_group_table(1), make_group_table(2), make_group_table(3), make_group_table(4),
    make_group_table(5), make_group_table(6), make_group_table(7), make_group_table(8)};

static_assert(table_in_range(kGroupTables[0]) && table_in_range(kGroupTables[1]) &&
              table_in_range(kGroupTables[2]) && table_in_range(kGroupTables[3]) &&
              table_in_range(kGroupTables[4]) && table_in_range(kGroupTables[5]) &&
              table_in_range(kGroupTables[6]) && table_in_range(kGroupTables[7]));
static_assert(kGroupTables[7].byte_aligned && !kGroupTables[3].byte_aligned);

}  // namespace trellis::cpu::exl3_tables
