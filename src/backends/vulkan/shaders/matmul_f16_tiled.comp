#version 450
// matmul_f16_tiled: y[m, out] = x[m, in] · Wᵀ (+ bias), W (out, in) fp16 row-major; the prefill
// path for dense layers and for EXL3 layers after their Ŵ is decoded (exl3_decode.comp).
// Shared-memory tiling: a 16x16 workgroup computes a 64x64 block of y, 4x4 per invocation,
// streaming 16-wide slices of x and W through shared memory (each element loaded from memory
// once per block instead of 64 times). Grid: (ceil(out / 64), ceil(m / 64)). Any m, in, out.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 16, local_size_y = 16) in;
#include "common.glsl"

layout(binding = 0) readonly buffer Wt { uint w[]; };
layout(binding = 1) readonly buffer X { float x[]; };
layout(binding = 2) writeonly buffer Y { float y[]; };
layout(binding = 3) readonly buffer B { float bias[]; };
layout(push_constant) uniform P { uint m, in_f, out_f, w_off, x_off, y_off, b_off, has_bias; } p;

const uint BM = 64u, BN = 64u, BK = 16u;
shared float xs[BK][BM + 1u];
shared float ws[BK][BN + 1u];

void main() {
  uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y;
  uint t = ty * 16u + tx;
  uint row0 = gl_WorkGroupID.y * BM, col0 = gl_WorkGroupID.x * BN;
  float acc[4][4];
  for (uint i = 0u; i < 4u; ++i)
    for (uint j = 0u; j < 4u; ++j) acc[i][j] = 0.0;
  for (uint k0 = 0u; k0 < p.in_f; k0 += BK) {
    for (uint l = 0u; l < 4u; ++l) {
      uint idx = t + 256u * l;
      uint mm = idx / BK, kk = idx % BK;
      uint row = row0 + mm, col = col0 + mm, kx = k0 + kk;
      xs[kk][mm] = (row < p.m && kx < p.in_f) ? x[p.x_off + row * p.in_f + kx] : 0.0;
      ws[kk][mm] = (col < p.out_f && kx < p.in_f) ? LOAD_F16(w, p.w_off + col * p.in_f + kx) : 0.0;
    }
    barrier();
    for (uint kk = 0u; kk < BK; ++kk) {
      float a[4], b[4];
      for (uint i = 0u; i < 4u; ++i) a[i] = xs[kk][ty + 16u * i];
      for (uint j = 0u; j < 4u; ++j) b[j] = ws[kk][tx + 16u * j];
      for (uint i = 0u; i < 4u; ++i)
        for (uint j = 0u; j < 4u; ++j) acc[i][j] += a[i] * b[j];
    }
    barrier();
  }
  for (uint i = 0u; i < 4u; ++i) {
    uint row = row0 + ty + 16u * i;
    if (row >= p.m) continue;
    for (uint j = 0u; j < 4u; ++j) {
      uint col = col0 + tx + 16u * j;
      if (col >= p.out_f) continue;
      float b = p.has_bias != 0u ? bias[p.b_off + col] : 0.0;
      y[p.y_off + row * p.out_f + col] = acc[i][j] + b;
    }
  }
}
