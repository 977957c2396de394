#version 450
// exl3_out_rope_kv: the decode's q/k/v tail in one dispatch, recorded by the backend in place of
// exl3_hadamard_out(q), (k), (v), rope(q), rope(k) and kv_store(k, v) when they arrive back to
// back (VulkanBackend::fuse_out_rope_kv); bit-identical to them: each element is
// exl3_hadamard_out.comp's value (the split partials in split order, the same butterflies, the
// same output step), rotated by the same rope_rotate() on the same cos/sin table, and converted
// to the cache by the same RNE conversion. Bias-free layers with out_f = n only.
// One workgroup of 128 per (128-block, row): blocks [0, bq) are q's, then bk of k, then bk of v;
// grid (bq + 2 bk, rows). A head lies inside one block (head_dim divides 128, the host checks),
// so the rotation's partner element (i ± head_dim / 2) is in shared memory. k and v are written
// in fp32 (as the separate ops leave them: k rotated) and, as pairs of adjacent elements, to the
// fp16 caches at row pos[r].
// cs: cos at [cs_off + r * half + i], sin at [cs_off + rows * half + r * half + i] (rope.comp's
// table); the positions at [pos_off + r] of the same arena (kv_store's).
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 128) in;
#include "common.glsl"

layout(binding = 0) readonly buffer Zq { float zq[]; };
layout(binding = 1) readonly buffer Zk { float zk[]; };
layout(binding = 2) readonly buffer Zv { float zv[]; };
layout(binding = 3) readonly buffer Sq { float svq[]; };
layout(binding = 4) readonly buffer Sk { float svk[]; };
layout(binding = 5) readonly buffer Sv { float svv[]; };
layout(binding = 6) writeonly buffer Q { float q[]; };
layout(binding = 7) writeonly buffer K { float k[]; };
layout(binding = 8) writeonly buffer V { float v[]; };
layout(binding = 9) writeonly buffer Kc { uint kc[]; };
layout(binding = 10) writeonly buffer Vc { uint vc[]; };
layout(binding = 11) readonly buffer Arena { float cs[]; };
layout(push_constant) uniform P {
  uint rows, nq, nk, head_dim, q_splits, q_stride, kv_splits, kv_stride;
  uint q_off, k_off, v_off, kc_off2, vc_off2, cs_off, pos_off;
} p;

shared float sh[128];

void main() {
  uint t = gl_LocalInvocationID.x, r = gl_WorkGroupID.y, b = gl_WorkGroupID.x;
  uint bq = p.nq / 128u, bk = p.nk / 128u;
  uint which = b < bq ? 0u : b < bq + bk ? 1u : 2u;  // uniform per workgroup
  uint blk = which == 0u ? b : which == 1u ? b - bq : b - bq - bk;
  uint n = which == 0u ? p.nq : p.nk, c = blk * 128u + t;
  uint splits = which == 0u ? p.q_splits : p.kv_splits, stride = which == 0u ? p.q_stride : p.kv_stride;
  float zv0;
  if (which == 0u) {
    zv0 = zq[r * n + c];  // split-k partials, added in split order
    for (uint s = 1u; s < splits; ++s) zv0 += zq[s * stride + r * n + c];
  } else if (which == 1u) {
    zv0 = zk[r * n + c];
    for (uint s = 1u; s < splits; ++s) zv0 += zk[s * stride + r * n + c];
  } else {
    zv0 = zv[r * n + c];
    for (uint s = 1u; s < splits; ++s) zv0 += zv[s * stride + r * n + c];
  }
  sh[t] = zv0;
  barrier();
  for (uint s = 1u; s < 128u; s <<= 1) {
    float a = sh[t], bb = sh[t ^ s];
    barrier();
    sh[t] = (t & s) != 0u ? bb - a : a + bb;
    barrier();
  }
  float sv = which == 0u ? svq[c] : which == 1u ? svk[c] : svv[c];
  float val = sh[t] * 0.0883883461356163 * sv + 0.0;  // exl3_hadamard_out's output step without a bias
  barrier();
  sh[t] = val;
  barrier();
  uint half_dim = p.head_dim / 2u, i = t % p.head_dim;
  float out_v = val;
  if (which < 2u) {  // rope: element i < half is .x of (i, i + half), else .y of (i - half, i)
    bool lo = i < half_dim;
    uint i0 = lo ? i : i - half_dim;
    float cv = cs[p.cs_off + r * half_dim + i0];
    float sn = cs[p.cs_off + p.rows * half_dim + r * half_dim + i0];
    vec2 rot = lo ? rope_rotate(val, sh[t + half_dim], cv, sn) : rope_rotate(sh[t - half_dim], val, cv, sn);
    out_v = lo ? rot.x : rot.y;
  }
  if (which == 0u) {
    q[p.q_off + r * p.nq + c] = out_v;
    return;
  }
  if (which == 1u)
    k[p.k_off + r * p.nk + c] = out_v;
  else
    v[p.v_off + r * p.nk + c] = out_v;
  // The cache: pairs (c, c + 1) of the final values, one word per even c.
  barrier();
  sh[t] = out_v;
  barrier();
  if ((t & 1u) != 0u) return;
  uint pos = floatBitsToUint(cs[p.pos_off + r]);
  uint word = f32_to_f16_rne(sh[t]) | (f32_to_f16_rne(sh[t + 1u]) << 16);
  uint dst = (pos * p.nk + c) / 2u;
  if (which == 1u)
    kc[p.kc_off2 + dst] = word;
  else
    vc[p.vc_off2 + dst] = word;
}
