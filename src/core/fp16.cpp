#include "core/fp16.h"

#include <cmath>

namespace trellis {

float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  if (exp == 0x1F) return bits_float(sign | 0x7F800000u | (mant << 13) | (mant ? 0x400000u : 0));
  if (exp != 0) return bits_float(sign | ((exp + 112) << 23) | (mant << 13));
  if (mant == 0) return bits_float(sign);
  // Subnormal: value = mant * 2^-24, exact in fp32.
  const float v = static_cast<float>(mant) * 5.9604644775390625e-08f;
  return sign ? -v : v;
}

float bf16_to_fp32(uint16_t b) { return bits_float(static_cast<uint32_t>(b) << 16); }

uint16_t fp64_to_fp16(double d) {
  uint64_t u;
  std::memcpy(&u, &d, 8);
  const uint16_t sign = static_cast<uint16_t>((u >> 48) & 0x8000u);
  const double a = std::fabs(d);
  if (std::isnan(d)) return sign | 0x7E00u;
  if (a >= 65520.0) return sign | 0x7C00u;  // rounds to inf (65520 is the halfway point)
  int e;
  std::frexp(a, &e);  // a = f * 2^e, f in [0.5, 1)
  // Quantum of binary16 at this magnitude: normals have 11 significant bits; below 2^-14 the
  // spacing is fixed at 2^-24.
  int q = e - 11;
  if (q < -24) q = -24;
  const double scaled = std::ldexp(a, -q);  // exact (power-of-two scaling, no underflow here)
  const double r = std::nearbyint(scaled);  // default rounding mode: nearest-even
  const uint64_t m = static_cast<uint64_t>(r);
  // m * 2^q as binary16 bits. m <= 2048.
  if (m == 0) return sign;
  if (q == -24 && m < 1024) return sign | static_cast<uint16_t>(m);  // subnormal
  // Normalise m into [1024, 2048).
  uint64_t mm = m;
  int qq = q;
  if (mm >= 2048) {
    mm >>= 1;
    ++qq;
  }
  const int biased = qq + 10 + 15;
  if (biased >= 31) return sign | 0x7C00u;
  return sign | static_cast<uint16_t>((biased << 10) | (mm & 0x3FFu));
}

uint16_t fp32_to_fp16(float f) {
  // Bit manipulation with a single round-to-nearest-even; agrees with fp64_to_fp16 (the
  // definition) on every input, which the tests check over a dense sample of all floats.
  const uint32_t u = float_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return sign | 0x7E00u | static_cast<uint16_t>((a >> 13) & 0x3FFu);  // NaN
  if (a >= 0x477FF000u) return sign | 0x7C00u;  // >= 65520: rounds to inf
  if (a >= 0x38800000u) {                       // normal result (>= 2^-14)
    const uint32_t rounded = a + 0xFFFu + ((a >> 13) & 1u);
    return sign | static_cast<uint16_t>((rounded - 0x38000000u) >> 13);
  }
  if (a < 0x33000000u) return sign;  // < 2^-25: rounds to zero (2^-25 itself ties to zero)
  // Subnormal result: value = mant * 2^-24 with mant < 1024.
  const uint32_t exp = a >> 23;
  const uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
  const uint32_t shift = 126 - exp;  // m * 2^(exp-150) / 2^-24 = m >> (126 - exp)
  const uint32_t q = m >> shift;
  const uint32_t rem = m & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  const uint32_t r = q + ((rem > half || (rem == half && (q & 1u))) ? 1u : 0u);
  return sign | static_cast<uint16_t>(r);
}

uint16_t fp32_to_bf16(float f) {
  uint32_t u = float_bits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  const uint32_t lsb = (u >> 16) & 1u;
  u += 0x7FFFu + lsb;
  return static_cast<uint16_t>(u >> 16);
}

void fp16_to_fp32(const uint16_t* src, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(src[i]);
}
void bf16_to_fp32(const uint16_t* src, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(src[i]);
}
void fp32_to_fp16(const float* src, uint16_t* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = fp32_to_fp16(src[i]);
}
void fp32_to_bf16(const float* src, uint16_t* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = fp32_to_bf16(src[i]);
}

}  // namespace trellis
