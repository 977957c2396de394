// core/fp16.h: exact conversions between IEEE binary16 / bfloat16 bit patterns and fp32/fp64.
//
// Goals: bit-exact, portable, round-to-nearest-even in every narrowing direction, correct for
// subnormals, infinities and NaN (NaN stays NaN, quiet). These are the scalar oracle that SIMD
// and GPU conversions are tested against. Non-goals: speed (backends convert in bulk with SIMD).
#pragma once

#include <cstdint>
#include <cstring>

namespace trellis {

// Widening is exact.
float fp16_to_fp32(uint16_t h);
float bf16_to_fp32(uint16_t b);

// Narrowing rounds to nearest, ties to even; overflow gives +-inf.
uint16_t fp32_to_fp16(float f);
uint16_t fp32_to_bf16(float f);
// Rounds a double straight to binary16 with a single rounding (no double rounding through
// fp32). Used where the spec defines a result as "exact value, rounded once" (MUL1 decode,
// the Viterbi cost FMA).
uint16_t fp64_to_fp16(double d);

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Bulk helpers (scalar; fine for I/O paths).
void fp16_to_fp32(const uint16_t* src, float* dst, size_t n);
void bf16_to_fp32(const uint16_t* src, float* dst, size_t n);
void fp32_to_fp16(const float* src, uint16_t* dst, size_t n);
void fp32_to_bf16(const float* src, uint16_t* dst, size_t n);

}  // namespace trellis
