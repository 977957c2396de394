#version 450
// exl3_gemv_coop with the cooperative-matrix operations emulated in plain GLSL
// (coop_emulation.glsl): a test module that runs the body on any device.
#extension GL_GOOGLE_include_directive : require
#define COOP_EMULATION 1
#include "exl3_gemv_coop.glsl"
