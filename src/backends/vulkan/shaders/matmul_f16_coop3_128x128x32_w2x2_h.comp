#version 450
// matmul_f16_coop3 variant 128x128x32_w2x2_h: 4 subgroups (2 x 2) of 4 x 4 16x16 accumulators, k step 32, float16_t shared memory.
#extension GL_GOOGLE_include_directive : require
#define WM 2u
#define WN 2u
#define FM 4u
#define FN 4u
#define BK 32u
#define HALF_SHARED 1
#include "matmul_f16_coop3.glsl"
