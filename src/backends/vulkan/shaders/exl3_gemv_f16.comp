#version 450
// exl3_gemv_f16: exl3_gemv with binary16 hardware arithmetic in the decode (EXL3_GEMV_F16; needs
// shaderFloat16 and shaderRoundingModeRTEFloat16); the body and its contract are in
// exl3_gemv.glsl.
#extension GL_GOOGLE_include_directive : require
#define EXL3_GEMV_F16 1
#include "exl3_gemv.glsl"
