// exl3/hadamard.h: the 128-point Sylvester Hadamard transforms of EXL3 (spec 4.1, 4.4, 7.4).
//
// All functions work on vectors whose length is a multiple of 128, transformed as independent
// 128-element blocks, each normalised by 1/sqrt(128) (r = fp32 0x3DB504F3).
#pragma once

#include <cstddef>
#include <cstdint>

namespace trellis::exl3 {

inline constexpr int kHadamardSize = 128;
inline constexpr float kHadamardScale = 0.0883883461356163f;  // fp32(1/sqrt(128)) = 0x3DB504F3

// In-place fp32 natural-order fast Walsh-Hadamard transform of one 128-block, butterfly stages in
// the exact order of spec 4.4 step 1, without scaling.
void fwht128(float* v);

// Activation transform, bit-exact with ExLlamaV3 (spec 4.4 step 1): per element
// v = fp16(x * suh) (fp16 multiply), fp32 butterfly, * r in fp32, round to fp16. x, suh, out are
// binary16 bit patterns of length `len` (multiple of 128). out may alias x.
void input_transform_fp16(const uint16_t* x, const uint16_t* suh, uint16_t* out, size_t len);

// Output transform of fp16 input (spec 7.4 "out_h"): fp32 butterfly of fp16 input, * r, round to
// fp16, then fp16 multiply by svh.
void output_transform_fp16(const uint16_t* z, const uint16_t* svh, uint16_t* out, size_t len);

// Output transform of fp32 input (spec 4.4 step 3, 7.4 "out_f"): fp32 butterfly, * r, * svh, fp32
// result. svh may be null (no scaling).
void output_transform_fp32(const float* z, const uint16_t* svh, float* out, size_t len);

// Plain orthonormal transform of fp32 data (butterfly then * r), used by reconstruction and by
// the quantizer. In place, len a multiple of 128.
void hadamard128_fp32(float* v, size_t len);

}  // namespace trellis::exl3
