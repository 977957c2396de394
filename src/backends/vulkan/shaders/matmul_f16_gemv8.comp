#version 450
// matmul_f16_gemv8: y[m, out] = x[m, in] · Wᵀ (+ bias) for small m (m <= 8 per pass), W (out,
// in) fp16 row-major, for in % 8 == 0 with W and x 16-byte aligned (the host checks; other sizes
// take matmul_f16_gemv). Each workgroup of 256 invocations takes 256 / LANES output features,
// LANES (id 0: 8, 16 or 32, the host's choice by `in`, so that narrow rows do not leave most
// invocations idle) per feature: invocation t reads 8 halves (one 16-byte load) at chunks t,
// t + LANES, ... of the row, so the invocations of a feature read 16 · LANES contiguous bytes per
// step, and keeps one fp32 sum per row of x; the LANES sums of a (feature, row) meet in a
// log2(LANES)-level shared-memory tree.
// (matmul_f16_gemv gives each feature a workgroup of 128 invocations reading 2 bytes each and a
// 7-level tree: ~0.1-0.3 of cuBLAS's bandwidth on the H100, session 24.)
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint LANES = 32;
#include "common.glsl"

layout(binding = 0) readonly buffer Wt { uvec4 w[]; };  // 8 halves per element
layout(binding = 1) readonly buffer X { vec4 x[]; };
layout(binding = 2) writeonly buffer Y { float y[]; };
layout(binding = 3) readonly buffer B { float bias[]; };
// x_off in floats (a multiple of 4), y_off and b_off in floats.
layout(push_constant) uniform P { uint m, in_f, out_f, w_off, x_off, y_off, b_off, has_bias; } p;

const uint R = 8u, OUTS = 256u / LANES;
shared float red[OUTS * R * LANES];

void main() {
  uint t = gl_LocalInvocationID.x % LANES, ol = gl_LocalInvocationID.x / LANES;
  uint o = flat_group() * OUTS + ol;
  bool live = o < p.out_f;  // not uniform: every invocation still reaches the barriers
  uint chunks = p.in_f / 8u, xrow = p.in_f / 4u;
  uint wrow = p.w_off + (live ? o : 0u) * chunks;
  for (uint r0 = 0u; r0 < p.m; r0 += R) {
    uint rc = min(R, p.m - r0);
    float acc[R];
    [[unroll]] for (uint j = 0u; j < R; ++j) acc[j] = 0.0;
    if (live) {
      for (uint i = t; i < chunks; i += LANES) {
        uvec4 wv = w[wrow + i];
        vec4 lo = vec4(unpackHalf2x16(wv.x), unpackHalf2x16(wv.y));
        vec4 hi = vec4(unpackHalf2x16(wv.z), unpackHalf2x16(wv.w));
        uint xi = p.x_off / 4u + r0 * xrow + 2u * i;
        [[unroll]] for (uint j = 0u; j < R; ++j)
          if (j < rc) acc[j] += dot(x[xi + j * xrow], lo) + dot(x[xi + j * xrow + 1u], hi);
      }
    }
    [[unroll]] for (uint j = 0u; j < R; ++j) red[(ol * R + j) * LANES + t] = acc[j];
    barrier();
    [[unroll]] for (uint s = LANES / 2u; s > 0u; s >>= 1) {
      if (t < s)
        [[unroll]] for (uint j = 0u; j < R; ++j) red[(ol * R + j) * LANES + t] += red[(ol * R + j) * LANES + t + s];
      barrier();
    }
    if (live && t < rc)
      y[p.y_off + (r0 + t) * p.out_f + o] = red[(ol * R + t) * LANES] + (p.has_bias != 0u ? bias[p.b_off + o] : 0.0);
    barrier();
  }
}
