#version 450
// exl3_hadamard_in_sg_f16: the EXL3 input transform by subgroup shuffles, binary16 output for the
// cooperative-matrix GEMM (exl3_hadamard_in_sg.glsl).
#extension GL_GOOGLE_include_directive : require
#define XH_F16 1
#include "exl3_hadamard_in_sg.glsl"
