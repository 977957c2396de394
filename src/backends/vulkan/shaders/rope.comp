#version 450
// rope: rotate-half rotary embedding in place. cs holds, per row r and pair i < half,
// cos at [r * half + i] and sin at [rows * half + r * half + i] (computed on the host in fp32,
// exactly as the CPU backend does). Grid: (ceil(heads * half / WG), rows).
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0) in;
#include "common.glsl"

layout(binding = 0) buffer X { float x[]; };
layout(binding = 1) readonly buffer CS { float cs[]; };
layout(push_constant) uniform P { uint rows, heads, head_dim, cols, x_off, cs_off; } p;

void main() {
  uint half_dim = p.head_dim / 2u;
  uint j = gl_GlobalInvocationID.x, r = gl_WorkGroupID.y;
  if (j >= p.heads * half_dim) return;
  uint h = j / half_dim, i = j % half_dim;
  float c = cs[p.cs_off + r * half_dim + i];
  float s = cs[p.cs_off + p.rows * half_dim + r * half_dim + i];
  uint e = p.x_off + r * p.cols + h * p.head_dim + i;
  float x1 = x[e], x2 = x[e + half_dim];
  vec2 r2 = rope_rotate(x1, x2, c, s);
  x[e] = r2.x;
  x[e + half_dim] = r2.y;
}
