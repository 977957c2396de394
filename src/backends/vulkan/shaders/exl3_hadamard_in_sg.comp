#version 450
// exl3_hadamard_in_sg: the EXL3 input transform by subgroup shuffles, fp32 output
// (exl3_hadamard_in_sg.glsl).
#extension GL_GOOGLE_include_directive : require
#include "exl3_hadamard_in_sg.glsl"
