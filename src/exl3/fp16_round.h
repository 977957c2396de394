// exl3/fp16_round.h: fast "round to the nearest binary16 value" for the Viterbi encoder's inner
// loop, returning the rounded value in the wider type instead of a bit pattern.
//
// Goal: the same result as core/fp16.h's fp32_to_fp16 / fp64_to_fp16 (round to nearest, ties to
// even, overflow to +-inf, correct binary16 subnormals) at a fraction of the cost, so that the
// scalar encoder runs in well under a second per tile. Non-goal: NaN handling; callers never pass
// NaN (encode_tile rejects non-finite inputs). The equivalence is tested exhaustively against
// core/fp16.h in tests/unit/exl3_encode_test.cpp.
#pragma once

#include <bit>
#include <cstdint>

namespace trellis::exl3 {

// All ones if the two's-complement reading of v is negative, else zero.
inline uint32_t mask_if_negative32(uint32_t v) {
  return static_cast<uint32_t>(static_cast<int32_t>(v) >> 31);
}
inline uint64_t mask_if_negative64(uint64_t v) {
  return static_cast<uint64_t>(static_cast<int64_t>(v) >> 63);
}

// Nearest binary16 value of a finite or infinite float, as a float. Branch-free (both paths
// are computed and one is selected) because it sits in the encoder's innermost loop.
inline float round_to_fp16_value(float x) {
  const auto b = std::bit_cast<uint32_t>(x);
  const uint32_t mag = b & 0x7FFFFFFFu;
  // Binary16 normal range: keep 10 fraction bits, ties to even (a carry into the exponent is
  // the correct result).
  const uint32_t normal = (b + 0xFFFu + ((b >> 13) & 1u)) & 0xFFFFE000u;
  // Subnormal range: the quantum 2^-24 is the fp32 ulp in [0.5, 1), where x + 0.75 stays, so
  // the fp32 addition rounds x to a multiple of 2^-24, ties to even; the subtraction is exact.
  // (Without -ffast-math the compiler may not fold the pair; the tests would catch it.)
  // The sign is put back so that values rounding to zero give a zero of their own sign.
  const uint32_t sub = std::bit_cast<uint32_t>((x + 0.75f) - 0.75f) | (b & 0x80000000u);
  const uint32_t inf = (b & 0x80000000u) | 0x7F800000u;
  // Selects through all-ones/all-zero masks (mag < 2^31, so the differences keep their sign).
  const uint32_t is_normal = mask_if_negative32(0x387FFFFFu - mag);  // |x| >= 2^-14
  const uint32_t is_huge = mask_if_negative32(0x477FEFFFu - mag);    // |x| >= 65520 -> inf
  uint32_t r = (normal & is_normal) | (sub & ~is_normal);
  r = (inf & is_huge) | (r & ~is_huge);
  return std::bit_cast<float>(r);
}

// Nearest binary16 value of a non-negative double (finite or +inf), as a double. Branch-free.
inline double round_to_fp16_value_nonneg(double x) {
  const auto b = std::bit_cast<uint64_t>(x);
  const uint64_t normal = (b + 0x1FFFFFFFFFFull + ((b >> 42) & 1u)) & ~0x3FFFFFFFFFFull;
  // Quantum 2^-24 is the double ulp in [2^28, 2^29).
  constexpr double kShift = 402653184.0;  // 1.5 * 2^28
  const auto sub = std::bit_cast<uint64_t>((x + kShift) - kShift);
  constexpr uint64_t kInfBits = 0x7FF0000000000000ull;
  constexpr uint64_t kMinNormalBits = 0x3F10000000000000ull;  // 2^-14
  constexpr uint64_t kOverflowBits = 0x40EFFE0000000000ull;   // 65520
  // x >= 0, so its bit pattern orders like its value; b < 2^63 keeps the differences' sign.
  const uint64_t is_normal = mask_if_negative64(kMinNormalBits - 1 - b);
  const uint64_t is_huge = mask_if_negative64(kOverflowBits - 1 - b);
  uint64_t r = (normal & is_normal) | (sub & ~is_normal);
  r = (kInfBits & is_huge) | (r & ~is_huge);
  return std::bit_cast<double>(r);
}

}  // namespace trellis::exl3
