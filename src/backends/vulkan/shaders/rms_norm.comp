#version 450
// rms_norm: shared-memory tree reduction (rms_norm.glsl).
#extension GL_GOOGLE_include_directive : require
#include "rms_norm.glsl"
