#version 450
// rms_norm: out = x / sqrt(mean(x^2) + eps) * w over consecutive groups of `group` elements.
// One workgroup per group (flat_group); WG must be a power of two.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 128;
#include "common.glsl"

layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) readonly buffer W { float w[]; };
layout(binding = 2) writeonly buffer Out { float out_[]; };
layout(push_constant) uniform P {
  uint groups, group, x_off, w_off, out_off;
  float eps;
} p;

shared float red[WG];

void main() {
  uint g = flat_group(), t = gl_LocalInvocationID.x;
  if (g >= p.groups) return;  // uniform per workgroup
  uint base = g * p.group;
  float ss = 0.0;
  for (uint i = t; i < p.group; i += WG) {
    float v = x[p.x_off + base + i];
    ss += v * v;
  }
  red[t] = ss;
  barrier();
  for (uint s = WG / 2u; s > 0u; s >>= 1) {
    if (t < s) red[t] += red[t + s];
    barrier();
  }
  float inv = 1.0 / sqrt(red[0] / float(p.group) + p.eps);
  for (uint i = t; i < p.group; i += WG)
    out_[p.out_off + base + i] = x[p.x_off + base + i] * inv * w[p.w_off + i];
}
