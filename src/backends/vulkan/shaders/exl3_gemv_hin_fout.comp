#version 450
// exl3_gemv_hin_fout: exl3_gemv_hin with the output transform fused in
// as well (EXL3_GEMV_FOUT: the last workgroup of each 128-block sums its split-k partials and
// writes y, bitwise as exl3_hadamard_out); the body and its contract are in exl3_gemv.glsl.
#extension GL_GOOGLE_include_directive : require
#define EXL3_GEMV_HIN 1
#define EXL3_GEMV_FOUT 1
#include "exl3_gemv.glsl"
