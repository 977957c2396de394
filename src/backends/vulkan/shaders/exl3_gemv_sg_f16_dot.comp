#version 450
// exl3_gemv_sg_f16_dot: exl3_gemv_sg_f16 with the MUL1 byte sum as a 4x8 packed integer dot
// product (EXL3_GEMV_DOT); used for MUL1 only. The body and its contract are in exl3_gemv.glsl.
#extension GL_GOOGLE_include_directive : require
#define EXL3_GEMV_SUBGROUP 1
#define EXL3_GEMV_F16 1
#define EXL3_GEMV_DOT 1
#include "exl3_gemv.glsl"
