#version 450
// rms_norm: out = x / sqrt(mean(x^2) + eps) * w over consecutive groups of `group` elements.
// One workgroup per group (flat_group); WG must be a power of two.
// ADD = 1 (the fused residual add + norm the backend records when rms_norm's input is the x of
// the add recorded just before): x += y first, written back, and the norm taken of the sums;
// bit-identical to add.comp then ADD = 0, since each element's sum is the same fp32 addition and
// the norm's arithmetic is this same code. Binding 3 (y) is bound but unread when ADD = 0.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 128;
layout(constant_id = 1) const uint ADD = 0;
#include "common.glsl"

// restrict: the backend passes distinct tensors (x, y, w and out never overlap; y is bound to
// x's buffer but unread when ADD = 0), so the compiler may batch the loads of a chunk ahead of
// its stores (without it every x store ordered the next element's loads behind it: 8 dependent
// memory round trips per invocation at decode width).
layout(binding = 0) restrict buffer X { float x[]; };
layout(binding = 1) restrict readonly buffer W { float w[]; };
layout(binding = 2) restrict writeonly buffer Out { float out_[]; };
layout(binding = 3) restrict readonly buffer Y { float y[]; };
layout(push_constant) uniform P {
  uint groups, group, x_off, w_off, out_off;
  float eps;
  uint y_off;
} p;

const uint CHUNK = 8u;
shared float red[WG];

float load_x(uint e) { return ADD != 0u ? x[p.x_off + e] + y[p.y_off + e] : x[p.x_off + e]; }

void main() {
  uint g = flat_group(), t = gl_LocalInvocationID.x;
  if (g >= p.groups) return;  // uniform per workgroup
  uint base = g * p.group;
  // Chunks of CHUNK elements per invocation: all loads first, then the stores and the squares in
  // element order (the same sum, in the same order, as one element at a time).
  float ss = 0.0;
  for (uint i0 = t; i0 < p.group; i0 += CHUNK * WG) {
    float v[CHUNK];
    [[unroll]] for (uint u = 0u; u < CHUNK; ++u) {
      uint i = i0 + u * WG;
      v[u] = i < p.group ? load_x(base + i) : 0.0;
    }
    [[unroll]] for (uint u = 0u; u < CHUNK; ++u) {
      uint i = i0 + u * WG;
      if (i < p.group) {
        if (ADD != 0u) x[p.x_off + base + i] = v[u];
        ss += v[u] * v[u];
      }
    }
  }
  red[t] = ss;
  barrier();
  for (uint s = WG / 2u; s > 0u; s >>= 1) {
    if (t < s) red[t] += red[t + s];
    barrier();
  }
  float inv = 1.0 / sqrt(red[0] / float(p.group) + p.eps);
  // Each invocation reads back only elements it wrote itself (same i stride), so no barrier.
  for (uint i0 = t; i0 < p.group; i0 += CHUNK * WG) {
    float v[CHUNK];
    [[unroll]] for (uint u = 0u; u < CHUNK; ++u) {
      uint i = i0 + u * WG;
      v[u] = i < p.group ? x[p.x_off + base + i] * inv * w[p.w_off + i] : 0.0;
    }
    [[unroll]] for (uint u = 0u; u < CHUNK; ++u) {
      uint i = i0 + u * WG;
      if (i < p.group) out_[p.out_off + base + i] = v[u];
    }
  }
}
