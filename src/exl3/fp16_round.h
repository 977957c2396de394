// exl3/fp16_round.h: binary16 arithmetic emulated in fp32 for the Viterbi encoder's inner loop,
// returning binary16 values as floats instead of bit patterns.
//
// Goal: the same results as core/fp16.h's correctly rounded conversions (round to nearest, ties
// to even, overflow to +-inf, correct binary16 subnormals) at a fraction of the cost and without
// branches, so that the compiler vectorises the encoder's state loop. Non-goal: NaN handling;
// callers never pass NaN (encode_tile rejects non-finite inputs). Both functions are checked
// against core/fp16.h in tests/unit/exl3_encode_test.cpp.
#pragma once

#include <bit>
#include <cstdint>

namespace trellis::exl3 {

// All ones if the two's-complement reading of v is negative, else zero.
inline uint32_t mask_if_negative32(uint32_t v) {
  return static_cast<uint32_t>(static_cast<int32_t>(v) >> 31);
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

// fp16(a*a + b) with a single rounding (a binary16 FMA), for binary16 values a and b >= 0
// (b may be +inf), computed in fp32 only so that it vectorises 4-wide on baseline x86-64:
//  * a*a is exact in fp32 (at most 22 significant bits);
//  * s = fp32(a*a + b) and its exact error e (Knuth's TwoSum) give the round-to-odd fp32 value
//    of the exact sum: s itself if e == 0 or s is odd, else s's fp32 neighbour towards e;
//  * rounding a round-to-odd value that carries at least two more bits than the target to
//    nearest-even gives the correctly rounded result (Boldo and Melquiond, "Emulation of FMA and
//    correctly rounded sums: proved algorithms using rounding to odd", IEEE TC 57(4), 2008): every
//    binary16 value and midpoint is an even fp32 number, and the odd value sits strictly inside
//    the same gap between them as the exact sum. fp32 has 24 bits against binary16's 11.
// (An FMA contraction of a*a + b by the compiler would not change s, as a*a is exact.)
inline float fp16_square_add(float a, float b) {
  const float sq = a * a;
  const float s = sq + b;
  const float b_virtual = s - sq;
  const float err = (sq - (s - b_virtual)) + (b - b_virtual);  // NaN only when b = +inf
  const auto bits = std::bit_cast<uint32_t>(s);                // s >= 0: bits +- 1 = next float
  const uint32_t inexact_even = static_cast<uint32_t>(err != 0.0f) & ~bits & 1u;
  const uint32_t up = static_cast<uint32_t>(err > 0.0f);
  // For b = +inf this steps down to FLT_MAX, which still rounds to binary16 +inf.
  const uint32_t odd = bits + (inexact_even & up) - (inexact_even & (up ^ 1u));
  return round_to_fp16_value(std::bit_cast<float>(odd));
}

}  // namespace trellis::exl3
