#version 450
// exl3_hadamard_out_sg: exl3_hadamard_out.comp by subgroup shuffles (exl3_hadamard_sg.glsl):
// y[r, c] = (sum of the split-k partials of z[r, :] · H128 / sqrt(128))[c] * svh[c] + bias[c] for
// c < out_f. Items: row r = item / blocks, block item % blocks (blocks = n / 128); flat grid of
// ceil(m · blocks / 16) workgroups.
#include "exl3_hadamard_sg.glsl"

layout(binding = 0) readonly buffer Z { float z[]; };
layout(binding = 1) readonly buffer Svh { float svh[]; };
layout(binding = 2) readonly buffer B { float bias[]; };
layout(binding = 3) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P { uint n, out_f, z_off, y_off, has_bias, splits, split_stride, items; } p;

void main() {
  uvec2 il = item_lane();
  if (il.x >= p.items) return;
  uint blocks = p.n / 128u, r = il.x / blocks, c0 = (il.x % blocks) * 128u + il.y;
  // The first partials of all 16 elements are loaded before any is used (16 loads in flight),
  // then the other split-k partials, added in split order.
  uint e = p.z_off + r * p.n + c0;
  float v[16];
  [[unroll]] for (uint j = 0u; j < 16u; ++j) v[j] = z[e + 8u * j];
  for (uint s = 1u; s < p.splits; ++s)
    [[unroll]] for (uint j = 0u; j < 16u; ++j) v[j] += z[e + s * p.split_stride + 8u * j];
  hadamard128(v, il.y);
  [[unroll]] for (uint j = 0u; j < 16u; ++j) {
    uint c = c0 + 8u * j;
    if (c < p.out_f) y[p.y_off + r * p.out_f + c] = v[j] * svh[c] + (p.has_bias != 0u ? bias[c] : 0.0);
  }
}
