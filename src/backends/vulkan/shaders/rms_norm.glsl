// shaders/rms_norm.glsl: body of rms_norm.comp and rms_norm_sg.comp.
// rms_norm: out = x / sqrt(mean(x^2) + eps) * w over consecutive groups of `group` elements.
// One workgroup per group (flat_group); WG must be a power of two.
// ADD = 1 (the fused residual add + norm the backend records when rms_norm's input is the x of
// the add recorded just before): x += y first, written back, and the norm taken of the sums;
// bit-identical to add.comp then ADD = 0, since each element's sum is the same fp32 addition and
// the norm's arithmetic is this same code. Binding 3 (y) is bound but unread when ADD = 0.
// RMS_SUBGROUP (rms_norm_sg, the decode-sized variant where the device has subgroup arithmetic):
// the sum of squares is reduced by subgroupAdd and one pass over the subgroups' partials in
// shared memory (2 barriers instead of log2(WG) + 1); a different summation order, so not
// bitwise the tree's result (within fp32 rounding of it).
#ifdef RMS_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif
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
#ifdef RMS_SUBGROUP
  ss = subgroupAdd(ss);
  if (subgroupElect()) red[gl_SubgroupID] = ss;
  barrier();
  float total = 0.0;
  for (uint s = 0u; s < gl_NumSubgroups; ++s) total += red[s];
  float inv = 1.0 / sqrt(total / float(p.group) + p.eps);
#else
  red[t] = ss;
  barrier();
  for (uint s = WG / 2u; s > 0u; s >>= 1) {
    if (t < s) red[t] += red[t + s];
    barrier();
  }
  float inv = 1.0 / sqrt(red[0] / float(p.group) + p.eps);
#endif
  // Each invocation reads back only elements it wrote itself (same i stride), so no barrier.
  for (uint i = t; i < p.group; i += WG)
    out_[p.out_off + base + i] = x[p.x_off + base + i] * inv * w[p.w_off + i];
}
