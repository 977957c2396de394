#version 450
// attention: causal grouped-query attention over an fp16 KV cache, one workgroup per
// (row, head) (flat_group = r * n_heads + h). Serves prefill and decode alike.
//
// Shaped as a one-workgroup flash attention: the keys 0..positions[r] (or the sliding window)
// are visited in chunks of WG; each invocation scores one key of the chunk, the chunk's
// maximum and sum come from shared-memory reductions, and the running softmax rescales the
// accumulators. Invocation t owns output dims t, t + WG, t + 2 WG, t + 3 WG (head_dim <= 4 WG).
// Memory is O(WG + head_dim) for any context length. WG must be a power of two.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64;
#include "common.glsl"

layout(binding = 0) readonly buffer Q { float q[]; };
layout(binding = 1) readonly buffer Kc { uint kc[]; };
layout(binding = 2) readonly buffer Vc { uint vc[]; };
layout(binding = 3) readonly buffer Pos { uint pos[]; };
layout(binding = 4) writeonly buffer Out { float out_[]; };
layout(push_constant) uniform P {
  uint items, n_heads, group, head_dim, kv_width, window;
  uint q_off, kc_off, vc_off, pos_off, out_off;
  float scale;
} p;

const float kNegBig = -3.0e38;
shared float qs[4 * WG];
shared float wts[WG];
shared float red[WG];

float reduce_max(float v, uint t) {
  red[t] = v;
  barrier();
  for (uint s = WG / 2u; s > 0u; s >>= 1) {
    if (t < s) red[t] = max(red[t], red[t + s]);
    barrier();
  }
  float r = red[0];
  barrier();
  return r;
}

float reduce_sum(float v, uint t) {
  red[t] = v;
  barrier();
  for (uint s = WG / 2u; s > 0u; s >>= 1) {
    if (t < s) red[t] += red[t + s];
    barrier();
  }
  float r = red[0];
  barrier();
  return r;
}

void main() {
  uint item = flat_group(), t = gl_LocalInvocationID.x;
  if (item >= p.items) return;  // uniform per workgroup
  uint r = item / p.n_heads, h = item % p.n_heads, kvh = h / p.group;
  uint last = pos[p.pos_off + r];
  uint first = (p.window > 0u && last + 1u > p.window) ? last + 1u - p.window : 0u;
  uint d = p.head_dim;
  for (uint i = t; i < d; i += WG) qs[i] = q[p.q_off + (r * p.n_heads + h) * d + i];
  barrier();

  float acc[4] = float[4](0.0, 0.0, 0.0, 0.0);
  float run_max = kNegBig, run_sum = 0.0;
  for (uint t0 = first; t0 <= last; t0 += WG) {
    uint key = t0 + t;
    float s = kNegBig;
    if (key <= last) {
      uint kb = p.kc_off + key * p.kv_width + kvh * d;
      float dot_qk = 0.0;
      for (uint i = 0u; i < d; ++i) dot_qk += qs[i] * LOAD_F16(kc, kb + i);
      s = dot_qk * p.scale;
    }
    float new_max = max(run_max, reduce_max(s, t));
    float corr = exp(run_max - new_max);
    float w = key <= last ? exp(s - new_max) : 0.0;
    wts[t] = w;
    run_sum = run_sum * corr + reduce_sum(w, t);  // reduce_sum's barriers also publish wts
    uint count = min(WG, last + 1u - t0);
    for (uint j = 0u; j < 4u; ++j) {
      uint i = t + j * WG;
      if (i >= d) break;
      float a = acc[j] * corr;
      uint vb = p.vc_off + t0 * p.kv_width + kvh * d + i;
      for (uint u = 0u; u < count; ++u) a += wts[u] * LOAD_F16(vc, vb + u * p.kv_width);
      acc[j] = a;
    }
    run_max = new_max;
    barrier();  // wts is rewritten by the next chunk
  }
  float inv = 1.0 / run_sum;
  for (uint j = 0u; j < 4u; ++j) {
    uint i = t + j * WG;
    if (i < d) out_[p.out_off + (r * p.n_heads + h) * d + i] = acc[j] * inv;
  }
}
