#version 450
// matmul_f16_coop3 variant 64x128x32_w2x2: 4 subgroups (2 x 2) of 2 x 4 16x16 accumulators, k step 32, uvec4 shared memory.
#extension GL_GOOGLE_include_directive : require
#define WM 2u
#define WN 2u
#define FM 2u
#define FN 4u
#define BK 32u
#define HALF_SHARED 0
#include "matmul_f16_coop3.glsl"
