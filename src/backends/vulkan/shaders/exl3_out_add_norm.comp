#version 450
// exl3_out_add_norm: an EXL3 linear's output transform, the residual add and the next RMS norm
// of decode rows in one dispatch (the recorder's peephole for exl3_hadamard_out(z) -> y,
// add(x, y), rms_norm(x) -> out; VulkanBackend::fuse_out_add_norm):
//   y   = (z summed over the split-k partials) · H128 / sqrt(128) · svh (+ bias), c < out_f
//   x  += y
//   out = x / sqrt(mean(x²) + eps) · w
// One workgroup of WG invocations per row; the row's n (padded) transform inputs sit in shared
// memory. Bit-identical to the three separate dispatches: the partials are added in split order,
// every butterfly stage computes own + partner for the element with the stage's bit clear and
// partner - own for the other (exl3_hadamard_out.comp), y and the add are the same fp32
// expressions, and the norm is rms_norm.comp's with the same WG (each invocation takes elements
// t, t + WG, ... in order, then the same reduction tree), so WG must be the width the unfused
// rms_norm would run at (the host passes it).
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 512;
layout(constant_id = 1) const uint N = 4096;  // n: transform width, a multiple of 128
const uint E = (N + WG - 1u) / WG;              // elements per invocation
#include "common.glsl"

layout(binding = 0) readonly buffer Z { float z[]; };
layout(binding = 1) readonly buffer Svh { float svh[]; };
layout(binding = 2) readonly buffer B { float bias[]; };
layout(binding = 3) writeonly buffer Y { float y[]; };
layout(binding = 4) buffer X { float x[]; };
layout(binding = 5) readonly buffer W { float w[]; };
layout(binding = 6) writeonly buffer Out { float out_[]; };
layout(push_constant) uniform P {
  uint out_f, z_off, splits, split_stride, has_bias, y_off, x_off, w_off, out_off;
  float eps;
} p;

shared float v[N];
shared float red[WG];

void main() {
  uint r = gl_WorkGroupID.x, t = gl_LocalInvocationID.x;
  for (uint i = 0u; i < E; ++i) {
    uint e = t + i * WG;
    if (e < N) {
      float zv = z[p.z_off + r * N + e];
      for (uint s = 1u; s < p.splits; ++s) zv += z[p.z_off + s * p.split_stride + r * N + e];
      v[e] = zv;
    }
  }
  barrier();
  for (uint s = 1u; s < 128u; s <<= 1) {
    float nv[E];
    for (uint i = 0u; i < E; ++i) {
      uint e = t + i * WG;
      if (e < N) {
        float a = v[e], b = v[e ^ s];
        nv[i] = (e & s) != 0u ? b - a : a + b;
      }
    }
    barrier();
    for (uint i = 0u; i < E; ++i) {
      uint e = t + i * WG;
      if (e < N) v[e] = nv[i];
    }
    barrier();
  }
  float xr[E];
  float ss = 0.0;
  for (uint i = 0u; i < E; ++i) {
    uint e = t + i * WG;
    if (e < p.out_f) {
      float yv = v[e] * 0.0883883461356163 * svh[e] + (p.has_bias != 0u ? bias[e] : 0.0);
      y[p.y_off + r * p.out_f + e] = yv;
      float xv = x[p.x_off + r * p.out_f + e] + yv;
      x[p.x_off + r * p.out_f + e] = xv;
      xr[i] = xv;
      ss += xv * xv;
    }
  }
  red[t] = ss;
  barrier();
  for (uint s = WG / 2u; s > 0u; s >>= 1) {
    if (t < s) red[t] += red[t + s];
    barrier();
  }
  float inv = 1.0 / sqrt(red[0] / float(p.out_f) + p.eps);
  for (uint i = 0u; i < E; ++i) {
    uint e = t + i * WG;
    if (e < p.out_f) out_[p.out_off + r * p.out_f + e] = xr[i] * inv * w[p.w_off + e];
  }
}
