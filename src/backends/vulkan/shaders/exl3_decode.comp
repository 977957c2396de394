#version 450
// exl3_decode: decodes Ŵ (k x n) from the packed trellis into Ŵᵀ (n x k) binary16, row-major
// (so matmul_f16_tiled multiplies it like a dense (out, in) weight). Exact (spec 4.3 steps 1-4).
// One workgroup of 128 per tile (flat_group = tk * tiles_n + tn); invocation t writes rows
// 2 (t / 16) and 2 (t / 16) + 1 of column t % 16 as one packed uint (k is even).
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 128) in;
layout(constant_id = 1) const uint K = 4;
layout(constant_id = 2) const uint CODEBOOK = 0;

layout(binding = 0) readonly buffer Trellis { uint trellis[]; };
layout(binding = 1) writeonly buffer What { uint what_t[]; };
layout(push_constant) uniform P { uint k, n, out_off2; } p;  // out_off2 in uints

#include "common.glsl"
#define EXL3_TRELLIS trellis
#include "exl3_decode.glsl"

void main() {
  uint tile = flat_group(), t = gl_LocalInvocationID.x;
  uint tiles_n = p.n / 16u;
  if (tile >= (p.k / 16u) * tiles_n) return;
  uint tk = tile / tiles_n, tn = tile % tiles_n;
  uint c = t & 15u, r = 2u * (t >> 4);
  uint base = tile * 8u * K;
  float a = decode_state(trellis_state(base, step_of(r, c)));
  float b = decode_state(trellis_state(base, step_of(r + 1u, c)));
  uint e = (16u * tn + c) * p.k + 16u * tk + r;
  what_t[p.out_off2 + e / 2u] = f32_to_f16_rne(a) | (f32_to_f16_rne(b) << 16);
}
