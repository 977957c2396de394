#version 450
// exl3_gemv: the EXL3 GEMV with shared-memory reductions only (any Vulkan 1.1 device); the body
// and its contract are in exl3_gemv.glsl.
#extension GL_GOOGLE_include_directive : require
#include "exl3_gemv.glsl"
