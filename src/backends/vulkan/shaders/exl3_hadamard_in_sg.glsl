// shaders/exl3_hadamard_in_sg.glsl: body of exl3_hadamard_in_sg.comp and
// exl3_hadamard_in_sg_f16.comp, exl3_hadamard_in.comp by subgroup shuffles
// (exl3_hadamard_sg.glsl): xh[r, :] = ((x[r, :] zero-padded from in_f to k) ⊙ suh) · H128 /
// sqrt(128) per 128-block. Items: row r = item / blocks, block item % blocks (blocks = k / 128);
// flat grid of ceil(m · blocks / 16) workgroups.
// XH_F16 (the _f16 module): xh is written as binary16, rounded to nearest even by
// f32_to_f16_rne exactly as convert_f16.comp rounds it, packed in pairs [m, k] (k is a multiple of
// 128): the fp16 activations of the cooperative-matrix GEMM without a separate conversion pass.
// Lanes l and l ^ 1 hold the elements c and c + 1 of each pair; the even lane writes pairs
// j < 8 and the odd lane pairs j >= 8 (one shuffle per element).
#include "exl3_hadamard_sg.glsl"

layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) readonly buffer Suh { float suh[]; };
#ifdef XH_F16
layout(binding = 2) writeonly buffer Xh { uint xh[]; };
#else
layout(binding = 2) writeonly buffer Xh { float xh[]; };
#endif
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
#ifdef XH_F16
  bool odd = (il.y & 1u) != 0u;
  [[unroll]] for (uint j = 0u; j < 16u; ++j) {
    float o = subgroupShuffleXor(v[j], 1u);
    if (odd == (j >= 8u)) {
      uint lo = f32_to_f16_rne(odd ? o : v[j]), hi = f32_to_f16_rne(odd ? v[j] : o);
      xh[(p.xh_off + r * p.k + (c0 & ~1u) + 8u * j) / 2u] = lo | (hi << 16);
    }
  }
#else
  [[unroll]] for (uint j = 0u; j < 16u; ++j) xh[p.xh_off + r * p.k + c0 + 8u * j] = v[j];
#endif
}
