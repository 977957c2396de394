#version 450
// attention_decode_merge: combines attention_decode's per-split partials into the output (the
// second pass of flash-decoding). One invocation per output element (vector ph = r n_heads + h,
// dim i): M = max_s m_s, out = Σ_s exp(m_s - M) o_s[i] / Σ_s exp(m_s - M) l_s, where o_s is
// split s's accumulator scaled to its own maximum m_s and l_s its sum of weights. Empty splits
// (l_s = 0; their o_s is not written) are skipped. Layout of `part`: attention_decode.comp.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 128;
#include "common.glsl"

layout(binding = 0) readonly buffer Part { float part[]; };
layout(binding = 1) writeonly buffer Out { float out_[]; };
layout(push_constant) uniform P {
  uint items, head_dim, splits, ml_off, out_off;
} p;

void main() {
  uint e = flat_group() * WG + gl_LocalInvocationID.x;
  if (e >= p.items) return;
  uint ph = e / p.head_dim, i = e % p.head_dim, s0 = ph * p.splits;
  float m = part[p.ml_off + 2u * s0];
  for (uint s = 1u; s < p.splits; ++s) m = max(m, part[p.ml_off + 2u * (s0 + s)]);
  precise float o = 0.0, l = 0.0;  // exl3_gemv*_hin AM computes it as written here
  for (uint s = 0u; s < p.splits; ++s) {
    float ls = part[p.ml_off + 2u * (s0 + s) + 1u];
    if (ls == 0.0) continue;
    float w = exp(part[p.ml_off + 2u * (s0 + s)] - m);
    l += w * ls;
    o += w * part[(s0 + s) * p.head_dim + i];
  }
  out_[p.out_off + e] = o / l;
}
