#version 450
// matmul_f16_gemv: y[m, out] = x[m, in] · Wᵀ (+ bias) for small m, W (out, in) fp16 row-major.
// One workgroup per output feature (flat_group); invocations stride over `in` (coalesced
// weight reads), rows are handled 8 at a time so each weight is read once per 8 rows, and
// the partial sums meet in a shared-memory tree. Any in/out; WG a power of two.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 128;
#include "common.glsl"

layout(binding = 0) readonly buffer Wt { uint w[]; };
layout(binding = 1) readonly buffer X { float x[]; };
layout(binding = 2) writeonly buffer Y { float y[]; };
layout(binding = 3) readonly buffer B { float bias[]; };
layout(push_constant) uniform P { uint m, in_f, out_f, w_off, x_off, y_off, b_off, has_bias; } p;

const uint R = 8u;
shared float red[R * WG];

void main() {
  uint o = flat_group(), t = gl_LocalInvocationID.x;
  if (o >= p.out_f) return;  // uniform per workgroup
  uint wrow = p.w_off + o * p.in_f;
  float b = p.has_bias != 0u ? bias[p.b_off + o] : 0.0;
  for (uint r0 = 0u; r0 < p.m; r0 += R) {
    uint rc = min(R, p.m - r0);
    float acc[R];
    for (uint j = 0u; j < R; ++j) acc[j] = 0.0;
    for (uint i = t; i < p.in_f; i += WG) {
      float wv = LOAD_F16(w, wrow + i);
      for (uint j = 0u; j < rc; ++j) acc[j] += x[p.x_off + (r0 + j) * p.in_f + i] * wv;
    }
    for (uint j = 0u; j < R; ++j) red[j * WG + t] = acc[j];
    barrier();
    for (uint s = WG / 2u; s > 0u; s >>= 1) {
      if (t < s)
        for (uint j = 0u; j < rc; ++j) red[j * WG + t] += red[j * WG + t + s];
      barrier();
    }
    if (t < rc) y[p.y_off + (r0 + t) * p.out_f + o] = red[t * WG] + b;
    barrier();
  }
}
