#version 450
// add: x += y elementwise (n elements, grid folded by the host).
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 256;
#include "common.glsl"

layout(binding = 0) buffer X { float x[]; };
layout(binding = 1) readonly buffer Y { float y[]; };
layout(push_constant) uniform P { uint n, x_off, y_off; } p;

void main() {
  uint i = flat_group() * WG + gl_LocalInvocationID.x;
  if (i < p.n) x[p.x_off + i] += y[p.y_off + i];
}
