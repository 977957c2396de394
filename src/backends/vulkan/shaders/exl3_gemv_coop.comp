#version 450
// exl3_gemv_coop: the EXL3 decode GEMV on cooperative matrices with the fp16 decode (the body and
// its contract: exl3_gemv_coop.glsl).
#extension GL_GOOGLE_include_directive : require
#define COOP_DECODE_F16 1
#include "exl3_gemv_coop.glsl"
