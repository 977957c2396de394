#version 450
// matmul_f16_coop3 variant 128x128x32_w2x4: 8 subgroups (2 x 4) of 4 x 2 16x16 accumulators, k step 32, uvec4 shared memory.
#extension GL_GOOGLE_include_directive : require
#define WM 2u
#define WN 4u
#define FM 4u
#define FN 2u
#define BK 32u
#define HALF_SHARED 0
#include "matmul_f16_coop3.glsl"
