#version 450
// exl3_hadamard_in: the EXL3 input transform in fp32 (spec 4.4 step 1, at fp32 precision like
// the CPU backend): xh[r, :] = ((x[r, :] zero-padded from in_f to k) ⊙ suh) · H128 / sqrt(128)
// per 128-block. One workgroup of 128 per (block, row): grid (k / 128, m).
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 128) in;
#include "common.glsl"

layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) readonly buffer Suh { float suh[]; };
layout(binding = 2) writeonly buffer Xh { float xh[]; };
layout(push_constant) uniform P { uint in_f, k, x_off, xh_off; } p;

shared float v[128];

void main() {
  uint t = gl_LocalInvocationID.x, r = gl_WorkGroupID.y;
  uint c = gl_WorkGroupID.x * 128u + t;
  v[t] = c < p.in_f ? x[p.x_off + r * p.in_f + c] * suh[c] : 0.0;
  barrier();
  for (uint s = 1u; s < 128u; s <<= 1) {
    float a = v[t], b = v[t ^ s];
    barrier();
    v[t] = (t & s) != 0u ? b - a : a + b;
    barrier();
  }
  xh[p.xh_off + r * p.k + c] = v[t] * 0.0883883461356163;
}
