// exl3/codebook.h: the three procedural EXL3 codebooks (spec section 3), scalar and exact.
//
// Goal: the oracle. decode_state() is bit-exact with ExLlamaV3's GPU decode for all 65536
// states of each codebook (spec 7.2). Non-goal: speed; backends use codebook_table() or their
// own vectorised formula and are tested against this.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace trellis::exl3 {

// Values are ExLlamaV3's codebook ids (spec 2.10).
enum class Codebook : uint8_t { k3Inst = 0, kMcg = 1, kMul1 = 2 };

inline constexpr uint32_t kMcgMultiplier = 0xCBAC1FEDu;
inline constexpr uint32_t kMul1Multiplier = 0x83DCD12Du;
inline constexpr uint32_t k3InstMultiplier = 89226354u;
inline constexpr uint32_t k3InstAddend = 64248484u;
// RMS the quantizer normalises weights to before the global-scale search (spec 3.5).
inline constexpr float kCodebookScale = 1.24371088f;

std::string_view codebook_name(Codebook cb);                 // "3inst", "mcg", "mul1"
std::optional<Codebook> codebook_from_name(std::string_view);  // inverse of codebook_name

// State (16 bits, zero-extended) -> binary16 bit pattern of the decoded weight.
uint16_t decode_state(uint32_t state, Codebook cb);

// 65536-entry table of decode_state(s, cb) bit patterns, built once, thread-safe.
const uint16_t* codebook_table(Codebook cb);
// Same as fp32 values (exact widening of the table above).
const float* codebook_table_f32(Codebook cb);

}  // namespace trellis::exl3
