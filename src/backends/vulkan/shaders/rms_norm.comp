#version 450
// rms_norm: out = x / sqrt(mean(x^2) + eps) * w over consecutive groups of `group` elements.
// One workgroup per group (flat_group); WG must be a power of two.
// ADD = 1 (the fused residual add + norm the backend records when rms_norm's input is the x of
// the add recorded just before): x += y first, written back, and the norm taken of the sums;
// bit-identical to add.comp then ADD = 0, since each element's sum is the same fp32 addition and
// the norm's arithmetic is this same code. Binding 3 (y) is bound but unread when ADD = 0.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 128;
layout(constant_id = 1) const uint ADD = 0;
#include "common.glsl"

layout(binding = 0) buffer X { float x[]; };
layout(binding = 1) readonly buffer W { float w[]; };
layout(binding = 2) writeonly buffer Out { float out_[]; };
layout(binding = 3) readonly buffer Y { float y[]; };
layout(push_constant) uniform P {
  uint groups, group, x_off, w_off, out_off;
  float eps;
  uint y_off;
} p;

shared float red[WG];

float load_x(uint e) { return ADD != 0u ? x[p.x_off + e] + y[p.y_off + e] : x[p.x_off + e]; }

void main() {
  uint g = flat_group(), t = gl_LocalInvocationID.x;
  if (g >= p.groups) return;  // uniform per workgroup
  uint base = g * p.group;
  float ss = 0.0;
  for (uint i = t; i < p.group; i += WG) {
    float v = load_x(base + i);
    if (ADD != 0u) x[p.x_off + base + i] = v;
    ss += v * v;
  }
  red[t] = ss;
  barrier();
  for (uint s = WG / 2u; s > 0u; s >>= 1) {
    if (t < s) red[t] += red[t + s];
    barrier();
  }
  float inv = 1.0 / sqrt(red[0] / float(p.group) + p.eps);
  // Each invocation reads back only elements it wrote itself (same i stride), so no barrier.
  for (uint i = t; i < p.group; i += WG)
    out_[p.out_off + base + i] = x[p.x_off + base + i] * inv * w[p.w_off + i];
}
