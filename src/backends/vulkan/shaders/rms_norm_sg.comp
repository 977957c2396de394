#version 450
// rms_norm_sg: subgroup reduction (rms_norm.glsl, RMS_SUBGROUP).
#extension GL_GOOGLE_include_directive : require
#define RMS_SUBGROUP 1
#include "rms_norm.glsl"
