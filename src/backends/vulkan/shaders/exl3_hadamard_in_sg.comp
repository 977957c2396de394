#version 450
// exl3_hadamard_in_sg: exl3_hadamard_in.comp by subgroup shuffles (exl3_hadamard_sg.glsl):
// xh[r, :] = ((x[r, :] zero-padded from in_f to k) ⊙ suh) · H128 / sqrt(128) per 128-block.
// Items: row r, block b = item / blocks, item % blocks (blocks = k / 128); flat grid of
// ceil(m · blocks / 16) workgroups.
#include "exl3_hadamard_sg.glsl"

layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) readonly buffer Suh { float suh[]; };
layout(binding = 2) writeonly buffer Xh { float xh[]; };
layout(push_constant) uniform P { uint in_f, k, x_off, xh_off, items; } p;

void main() {
  uvec2 il = item_lane();
  if (il.x >= p.items) return;
  uint blocks = p.k / 128u, r = il.x / blocks, c0 = (il.x % blocks) * 128u + il.y;
  float v[16];
  [[unroll]] for (uint j = 0u; j < 16u; ++j) {
    uint c = c0 + 8u * j;
    v[j] = c < p.in_f ? x[p.x_off + r * p.in_f + c] * suh[c] : 0.0;
  }
  hadamard128(v, il.y);
  [[unroll]] for (uint j = 0u; j < 16u; ++j) xh[p.xh_off + r * p.k + c0 + 8u * j] = v[j];
}
