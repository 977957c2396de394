#version 450
// exl3_hadamard_out: the EXL3 output transform in fp32 (spec 4.4 step 3):
// y[r, c] = (z[r, :] · H128 / sqrt(128))[c] * svh[c] + bias[c] for c < out_f (padded outputs
// dropped). One workgroup of 128 per (block, row): grid (n / 128, m).
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 128) in;
#include "common.glsl"

layout(binding = 0) readonly buffer Z { float z[]; };
layout(binding = 1) readonly buffer Svh { float svh[]; };
layout(binding = 2) readonly buffer B { float bias[]; };
layout(binding = 3) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P { uint n, out_f, z_off, y_off, has_bias, splits, split_stride; } p;

shared float v[128];

void main() {
  uint t = gl_LocalInvocationID.x, r = gl_WorkGroupID.y;
  uint c = gl_WorkGroupID.x * 128u + t;
  float zv = z[p.z_off + r * p.n + c];  // split-k partials, added in split order
  for (uint s = 1u; s < p.splits; ++s) zv += z[p.z_off + s * p.split_stride + r * p.n + c];
  v[t] = zv;
  barrier();
  for (uint s = 1u; s < 128u; s <<= 1) {
    float a = v[t], b = v[t ^ s];
    barrier();
    v[t] = (t & s) != 0u ? b - a : a + b;
    barrier();
  }
  if (c < p.out_f)
    y[p.y_off + r * p.out_f + c] = v[t] * 0.0883883461356163 * svh[c] + (p.has_bias != 0u ? bias[c] : 0.0);
}
