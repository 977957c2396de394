#version 450
// rope_kv_store: rope(q), rope(k) and kv_store(k, v) in one dispatch, which the backend records
// in place of those three ops when they arrive back to back (the model's per-layer sequence);
// bit-identical to them: the same rope_rotate() on the same cos/sin table, the same RNE
// conversion of the rotated k. Rotated q and k are written back as rope() leaves them.
// An item is two adjacent rotary pairs (i, i + 1) of one head (i even; half = head_dim / 2 must
// be even): it owns elements i, i+1, i+half, i+half+1, so it can both write back k and pack the
// two fp16 cache words (i, i+1) and (i+half, i+half+1) of k and v without sharing a word.
// Items [0, q_heads * half/2) rotate q, the next k_heads * half/2 rotate k and store k, v.
// cs: cos at [cs_off + r * half + i], sin at [cs_off + rows * half + r * half + i] (rope.comp's
// table); pos: cache row of each row. Grid: (ceil((q_heads + k_heads) * half / 2 / WG), rows).
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 128;
#include "common.glsl"

layout(binding = 0) buffer Q { float q[]; };
layout(binding = 1) buffer K { float k[]; };
layout(binding = 2) readonly buffer V { float v[]; };
layout(binding = 3) writeonly buffer Kc { uint kc[]; };
layout(binding = 4) writeonly buffer Vc { uint vc[]; };
layout(binding = 5) readonly buffer Arena { float cs[]; };
layout(push_constant) uniform P {
  uint rows, q_heads, k_heads, head_dim, q_cols, width, q_off, k_off, v_off, kc_off2, vc_off2, cs_off, pos_off;
} p;

void main() {
  uint half_dim = p.head_dim / 2u, quarter = half_dim / 2u;
  uint j = gl_GlobalInvocationID.x, r = gl_WorkGroupID.y;
  bool is_q = j < p.q_heads * quarter;
  if (!is_q) j -= p.q_heads * quarter;
  if (!is_q && j >= p.k_heads * quarter) return;
  uint h = j / quarter, i = 2u * (j % quarter);
  uint c0 = p.cs_off + r * half_dim + i, s0 = p.cs_off + p.rows * half_dim + r * half_dim + i;
  if (is_q) {
    uint e = p.q_off + r * p.q_cols + h * p.head_dim + i;
    vec2 a = rope_rotate(q[e], q[e + half_dim], cs[c0], cs[s0]);
    vec2 b = rope_rotate(q[e + 1u], q[e + half_dim + 1u], cs[c0 + 1u], cs[s0 + 1u]);
    q[e] = a.x;
    q[e + half_dim] = a.y;
    q[e + 1u] = b.x;
    q[e + half_dim + 1u] = b.y;
    return;
  }
  uint col = h * p.head_dim + i;
  uint e = p.k_off + r * p.width + col;
  vec2 a = rope_rotate(k[e], k[e + half_dim], cs[c0], cs[s0]);
  vec2 b = rope_rotate(k[e + 1u], k[e + half_dim + 1u], cs[c0 + 1u], cs[s0 + 1u]);
  k[e] = a.x;
  k[e + half_dim] = a.y;
  k[e + 1u] = b.x;
  k[e + half_dim + 1u] = b.y;
  uint pos = floatBitsToUint(cs[p.pos_off + r]);
  uint dst = (pos * p.width + col) / 2u, ev = p.v_off + r * p.width + col;
  kc[p.kc_off2 + dst] = f32_to_f16_rne(a.x) | (f32_to_f16_rne(b.x) << 16);
  kc[p.kc_off2 + dst + half_dim / 2u] = f32_to_f16_rne(a.y) | (f32_to_f16_rne(b.y) << 16);
  vc[p.vc_off2 + dst] = f32_to_f16_rne(v[ev]) | (f32_to_f16_rne(v[ev + 1u]) << 16);
  vc[p.vc_off2 + dst + half_dim / 2u] = f32_to_f16_rne(v[ev + half_dim]) | (f32_to_f16_rne(v[ev + half_dim + 1u]) << 16);
}
