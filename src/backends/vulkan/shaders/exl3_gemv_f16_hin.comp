#version 450
// exl3_gemv_f16_hin: exl3_gemv_f16 with the input transform fused in (EXL3_GEMV_HIN: reads x and
// suh, computes its own slab of xh in shared memory, bitwise as exl3_hadamard_in); the body and
// its contract are in exl3_gemv.glsl.
#extension GL_GOOGLE_include_directive : require
#define EXL3_GEMV_F16 1
#define EXL3_GEMV_HIN 1
#include "exl3_gemv.glsl"
