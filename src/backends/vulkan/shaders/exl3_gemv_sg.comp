#version 450
// exl3_gemv_sg: exl3_gemv.glsl with the 4-lane part of the reduction done by subgroup shuffles
// (needs subgroup shuffle in compute, a subgroup size >= 4 dividing the workgroup size).
#extension GL_GOOGLE_include_directive : require
#define EXL3_GEMV_SUBGROUP 1
#include "exl3_gemv.glsl"
