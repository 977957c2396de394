// exl3/hadamard.cpp: 128-point Walsh-Hadamard transforms with ExLlamaV3's exact roundings.
//
// The butterfly order matters for bit-exactness of the fp16 paths (spec 4.4 step 1): element
// index bit 0 and 1 first (the lane-local 4-point stage), then bits 2..6 (the warp shuffles with
// lane bits 1, 2, 4, 8, 16). fp32 addition is commutative, so only the stage order and the
// placement of the roundings have to match.
#include "exl3/hadamard.h"

#include "core/error.h"
#include "core/fp16.h"

namespace trellis::exl3 {

namespace {

void check_len(size_t len) {
  if (len % kHadamardSize != 0)
    fail(ErrorKind::kInvalidArgument, "Hadamard transform length {} is not a multiple of {}", len,
         kHadamardSize);
}

// binary16 product of two binary16 values: the fp32 product of two 11-bit significands is exact,
// so converting it once to binary16 is the correctly rounded fp16 multiply.
uint16_t fp16_mul(uint16_t a, uint16_t b) {
  return fp32_to_fp16(fp16_to_fp32(a) * fp16_to_fp32(b));
}

}  // namespace

void fwht128(float* v) {
  // Stage for element bits 0 and 1, per group of four (spec's lane-local stage).
  for (int g = 0; g < kHadamardSize; g += 4) {
    const float s0 = v[g] + v[g + 1], d0 = v[g] - v[g + 1];
    const float s1 = v[g + 2] + v[g + 3], d1 = v[g + 2] - v[g + 3];
    v[g] = s0 + s1;
    v[g + 1] = d0 + d1;
    v[g + 2] = s0 - s1;
    v[g + 3] = d0 - d1;
  }
  // Stages for element bits 2..6: pair e and e + stride; lower gets sum, upper gets difference.
  for (int stride = 4; stride < kHadamardSize; stride *= 2) {
    for (int e = 0; e < kHadamardSize; ++e) {
      if (e & stride) continue;
      const float lo = v[e], hi = v[e + stride];
      v[e] = lo + hi;
      v[e + stride] = lo - hi;
    }
  }
}

void input_transform_fp16(const uint16_t* x, const uint16_t* suh, uint16_t* out, size_t len) {
  check_len(len);
  float block[kHadamardSize];
  for (size_t b = 0; b < len; b += kHadamardSize) {
    for (int e = 0; e < kHadamardSize; ++e) block[e] = fp16_to_fp32(fp16_mul(x[b + e], suh[b + e]));
    fwht128(block);
    for (int e = 0; e < kHadamardSize; ++e) out[b + e] = fp32_to_fp16(block[e] * kHadamardScale);
  }
}

void output_transform_fp16(const uint16_t* z, const uint16_t* svh, uint16_t* out, size_t len) {
  check_len(len);
  float block[kHadamardSize];
  for (size_t b = 0; b < len; b += kHadamardSize) {
    for (int e = 0; e < kHadamardSize; ++e) block[e] = fp16_to_fp32(z[b + e]);
    fwht128(block);
    for (int e = 0; e < kHadamardSize; ++e)
      out[b + e] = fp16_mul(fp32_to_fp16(block[e] * kHadamardScale), svh[b + e]);
  }
}

void output_transform_fp32(const float* z, const uint16_t* svh, float* out, size_t len) {
  check_len(len);
  float block[kHadamardSize];
  for (size_t b = 0; b < len; b += kHadamardSize) {
    for (int e = 0; e < kHadamardSize; ++e) block[e] = z[b + e];
    fwht128(block);
    for (int e = 0; e < kHadamardSize; ++e) {
      float y = block[e] * kHadamardScale;
      if (svh) y *= fp16_to_fp32(svh[b + e]);
      out[b + e] = y;
    }
  }
}

void hadamard128_fp32(float* v, size_t len) {
  check_len(len);
  for (size_t b = 0; b < len; b += kHadamardSize) {
    fwht128(v + b);
    for (int e = 0; e < kHadamardSize; ++e) v[b + e] *= kHadamardScale;
  }
}

}  // namespace trellis::exl3
