#version 450
// convert_f16: a[r, 0..stride) = fp16(x[r, 0..k)) rounded to nearest even (f32_to_f16_rne, as
// core/fp16 and the CUDA backend's __float2half_rn), zero past k. The activations of
// matmul_f16_coop. stride is even; one invocation per output uint (pair of halves).
// Grid: (ceil(stride / 2 / WG), rows).
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 128;
#include "common.glsl"

layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) writeonly buffer A { uint a[]; };
layout(push_constant) uniform P { uint k, stride, x_off, a_off2; } p;  // a_off2 in uints

void main() {
  uint j = gl_GlobalInvocationID.x, r = gl_WorkGroupID.y;
  if (2u * j >= p.stride) return;
  uint c = 2u * j, src = p.x_off + r * p.k + c;
  uint lo = c < p.k ? f32_to_f16_rne(x[src]) : 0u;
  uint hi = c + 1u < p.k ? f32_to_f16_rne(x[src + 1u]) : 0u;
  a[p.a_off2 + r * (p.stride / 2u) + j] = lo | (hi << 16);
}
