#version 450
// exl3_out_add_norm: an EXL3 linear's output transform at decode rows, the residual add and the
// next RMS norm in one dispatch: the recorder's peephole for exl3_hadamard_out(z) -> y,
// add(x, y), rms_norm(x) -> out (VulkanBackend::fuse_out_add_norm):
//   y = (z summed over the split-k partials) · H128 / sqrt(128) · svh (+ bias), c < out_f
//   x += y;   out = x / sqrt(mean(x²) + eps) · w
// Grid (n / 128, m), workgroups of 128 as exl3_hadamard_out: each transforms one 128-block of
// one row (exl3_hadamard_out.comp's arithmetic in its order) and writes y and x += y for it;
// then it counts itself done on the row's counter, and the last workgroup of the row (which
// sees every other block's x: stores, buffer memory barrier, atomic; x is coherent) takes the
// norm. The norm reproduces rms_norm.comp at NORM_WG invocations bit for bit: virtual
// invocation u sums the squares of elements u, u + NORM_WG, ... in order, then the same
// halving tree over NORM_WG partial sums, then out = x · inv · w. The host passes the NORM_WG
// the unfused rms_norm would have run at. The last workgroup resets the counter to 0, so the
// next use (after a pipeline barrier) starts from zero.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
layout(local_size_x = 128) in;
layout(constant_id = 0) const uint NORM_WG = 512;  // a power of two, >= 128
layout(constant_id = 1) const uint ROW = 4096;     // >= out_f: the last workgroup's copy of the row
#include "common.glsl"

layout(binding = 0) readonly buffer Z { float z[]; };
layout(binding = 1) readonly buffer Svh { float svh[]; };
layout(binding = 2) readonly buffer B { float bias[]; };
layout(binding = 3) writeonly buffer Y { float y[]; };
layout(binding = 4) coherent buffer X { float x[]; };
layout(binding = 5) readonly buffer W { float w[]; };
layout(binding = 6) writeonly buffer Out { float out_[]; };
layout(binding = 7) coherent buffer Counters { uint counters[]; };
layout(push_constant) uniform P {
  uint n, out_f, splits, split_stride, has_bias, y_off, x_off, w_off, out_off, counter;
  float eps;
} p;

shared float v[128];
shared float red[NORM_WG];
shared float xs[ROW];
shared bool last;

void main() {
  uint t = gl_LocalInvocationID.x, r = gl_WorkGroupID.y;
  uint c = gl_WorkGroupID.x * 128u + t;
  float zv = z[r * p.n + c];  // split-k partials, added in split order
  for (uint s = 1u; s < p.splits; ++s) zv += z[s * p.split_stride + r * p.n + c];
  v[t] = zv;
  barrier();
  for (uint s = 1u; s < 128u; s <<= 1) {
    float a = v[t], b = v[t ^ s];
    barrier();
    v[t] = (t & s) != 0u ? b - a : a + b;
    barrier();
  }
  uint row = r * p.out_f;
  if (c < p.out_f) {
    float yv = v[t] * 0.0883883461356163 * svh[c] + (p.has_bias != 0u ? bias[c] : 0.0);
    y[p.y_off + row + c] = yv;
    x[p.x_off + row + c] = x[p.x_off + row + c] + yv;
  }
  memoryBarrierBuffer();
  barrier();
  if (t == 0u) last = atomicAdd(counters[p.counter + r], 1u) == gl_NumWorkGroups.x - 1u;
  barrier();
  if (!last) return;  // uniform per workgroup
  memoryBarrierBuffer();

  // The row into shared memory, 8 loads in flight per invocation (one after another, the
  // coherent loads cost a memory round trip each: 22 us per call on the H200, session 11).
  for (uint i0 = t; i0 < p.out_f; i0 += 8u * 128u) {
    float xv[8];
    [[unroll]] for (uint u = 0u; u < 8u; ++u) {
      uint i = i0 + u * 128u;
      xv[u] = i < p.out_f ? x[p.x_off + row + i] : 0.0;
    }
    [[unroll]] for (uint u = 0u; u < 8u; ++u) {
      uint i = i0 + u * 128u;
      if (i < p.out_f) xs[i] = xv[u];
    }
  }
  barrier();
  for (uint u = t; u < NORM_WG; u += 128u) {
    float ss = 0.0;
    for (uint i = u; i < p.out_f; i += NORM_WG) ss += xs[i] * xs[i];
    red[u] = ss;
  }
  barrier();
  for (uint s = NORM_WG / 2u; s > 0u; s >>= 1) {
    for (uint u = t; u < s; u += 128u) red[u] += red[u + s];
    barrier();
  }
  float inv = 1.0 / sqrt(red[0] / float(p.out_f) + p.eps);
  for (uint i = t; i < p.out_f; i += 128u) out_[p.out_off + row + i] = xs[i] * inv * w[p.w_off + i];
  if (t == 0u) counters[p.counter + r] = 0u;
}
