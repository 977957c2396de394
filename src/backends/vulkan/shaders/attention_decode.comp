#version 450
// attention_decode: causal grouped-query attention over an fp16 KV cache for few query rows
// (decode and short batches, below kFlashMinRows). Same contract as attention.comp and the CPU
// reference (backends/cpu/attention.h): row r, head h sees cache rows first(r)..positions[r],
// first(r) = 0 or positions[r] - window + 1 with a sliding window; kv head h / group.
//
// Why this shape (flash-decoding): one decode row has only n_kv_heads x group vectors, far too
// few workgroups for a GPU when each owns a whole key range, and attention.comp's invocations
// each read a 128-element key row serially (uncoalesced, latency bound). Here:
//   * a workgroup owns one (row, kv head, head block, split): up to HB query heads of the GQA
//     group (each K/V row is read once for all of them) over `split_keys` consecutive keys of
//     the row's range; the host picks the splits so that there are enough workgroups
//     (VulkanBackend::attention_decode). With one split the workgroup writes `out`; otherwise it
//     writes its unnormalised accumulator o and its (max, sum) to `part`, and
//     attention_decode_merge combines the splits with the usual rescaling.
//   * the split is visited in tiles of T keys with the CPU kernel's online softmax (running
//     max m and sum l per head, exp(m - m') rescaling); all arithmetic in fp32.
//   * scores: C consecutive lanes of a subgroup share a key; lane c reads the 8-byte chunks
//     c, c + C, ... of the K row (C lanes x 8 bytes contiguous per load: coalesced), dots them
//     with the HB query vectors held in registers, and the C partial dots are summed by a
//     subgroupShuffleXor butterfly (C <= subgroup size, so a key's lanes are one cluster). KP =
//     WG / C keys per pass, T / KP passes per tile; each tile's maximum per head is reduced the
//     same way over the subgroup and through shared memory across subgroups.
//   * P·V: lane (kq, cv) = (t / D4, t % D4) owns output dims 4 cv .. 4 cv + 3 of every head for
//     keys kq, kq + VQ, ... of the tile (VQ = WG / D4 key groups; one V row is D4 lanes x 8
//     bytes: coalesced); a tile's V chunks are loaded before its scores are computed so both
//     loads are in flight together. The VQ partial accumulators are summed once at the end
//     through shared memory.
// One barrier per tile (scores and maxima are double-buffered in shared memory).
//
// Lane numbers come from gl_SubgroupID / gl_SubgroupInvocationID so the clusters line up with
// hardware subgroups whatever the driver's numbering. Needs subgroup shuffle in compute, a
// subgroup size that is a power of two in [C, WG]; head_dim = 4 D4 (a multiple of 4, <= 256);
// kc_off4 / vc_off4 / kv_width4 in units of 4 halves (8-byte aligned rows). Scores are
// dot * scale, as the CPU kernel computes them. A runtime subgroup smaller than C (a driver that
// compiles below its reported size) would sum the wrong lanes: the output is NaN then, not
// silently wrong.
//
// Specialization: 0 WG (128), 1 D4 = head_dim / 4 (<= WG), 2 C (power of two >= 4, <= the
// subgroup size), 3 HB (heads per workgroup), 4 T (keys per tile, a multiple of WG / C and 4).
// Grid: flat, rows x n_kv_heads x head_blocks x splits (split fastest).
// part: o at ((r n_heads + h) splits + s) head_dim + i; (m, l) at ml_off + 2 ((r n_heads + h)
// splits + s). An empty split (its row has fewer keys) writes only (m, l) = (kNegBig, 0).
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 128;
layout(constant_id = 1) const uint D4 = 32;
layout(constant_id = 2) const uint C = 16;
layout(constant_id = 3) const uint HB = 4;
layout(constant_id = 4) const uint T = 32;
#include "common.glsl"

layout(binding = 0) readonly buffer Q { float q[]; };
layout(binding = 1) readonly buffer Kc { uvec2 kc[]; };
layout(binding = 2) readonly buffer Vc { uvec2 vc[]; };
layout(binding = 3) readonly buffer Pos { uint pos[]; };
layout(binding = 4) writeonly buffer Out { float out_[]; };
layout(binding = 5) writeonly buffer Part { float part[]; };
layout(push_constant) uniform P {
  uint rows, n_heads, group, kv_width4, window;
  uint q_off, kc_off4, vc_off4, pos_off, out_off;
  float scale;
  uint splits, split_keys, head_blocks, ml_off;
} p;

const float kNegBig = -3.0e38;
const uint NV = (D4 + C - 1u) / C;   // scores: K chunks per lane and key
const uint KP = WG / C;              // scores: keys per pass
const uint NP = T / KP;              // scores: passes per tile
const uint VQ = WG / D4;             // P·V: key groups
const uint PK = (T + VQ - 1u) / VQ;  // P·V: keys per lane and tile

shared float sc[2u * HB * T];  // a tile's scores, [buffer][head][key]
shared float sm[2u * KP * HB];  // a tile's maxima per subgroup, [buffer][subgroup][head]
shared vec4 red[VQ * HB * D4];  // P·V partials, [key group][head][chunk]
shared float lred[VQ * HB];
shared float mred[HB];

vec4 widen(uvec2 h) { return vec4(unpackHalf2x16(h.x), unpackHalf2x16(h.y)); }

void main() {
  uint t = gl_SubgroupID * gl_SubgroupSize + gl_SubgroupInvocationID;
  uint per_row = (p.n_heads / p.group) * p.head_blocks * p.splits;
  uint wg = flat_group();
  if (wg >= p.rows * per_row) return;  // uniform per workgroup
  uint r = wg / per_row, rem = wg % per_row;
  uint s = rem % p.splits;
  rem /= p.splits;
  uint hb = rem % p.head_blocks, kvh = rem / p.head_blocks;
  uint last = pos[p.pos_off + r];
  uint first = (p.window > 0u && last + 1u > p.window) ? last + 1u - p.window : 0u;
  uint k_begin = first + s * p.split_keys;
  uint k_end = min(k_begin + p.split_keys, last + 1u);
  uint h0 = kvh * p.group + hb * HB, nh = min(HB, p.group - hb * HB);
  uint d = 4u * D4;
  if (k_begin >= k_end) {  // only with splits > 1: this row has fewer keys than the longest
    for (uint g = t; g < nh; g += WG) {
      uint ph = (r * p.n_heads + h0 + g) * p.splits + s;
      part[p.ml_off + 2u * ph] = kNegBig;
      part[p.ml_off + 2u * ph + 1u] = 0.0;
    }
    return;
  }

  uint c = t % C, j = t / C;       // scores: chunk lane, key slot
  uint kq = t / D4, cv = t % D4;   // P·V: key group, chunk
  bool pv = kq < VQ;
  uint kv_base = kvh * D4;
  vec4 qr[HB * NV];
  for (uint g = 0u; g < HB; ++g)
    for (uint i = 0u; i < NV; ++i) {
      uint ch = c + i * C;
      vec4 x = vec4(0.0);
      if (g < nh && ch < D4) {
        uint b = p.q_off + (r * p.n_heads + h0 + g) * d + 4u * ch;
        x = vec4(q[b], q[b + 1u], q[b + 2u], q[b + 3u]);
      }
      qr[g * NV + i] = x;
    }

  float m_run[HB], l_run[HB];
  vec4 acc[HB];
  for (uint g = 0u; g < HB; ++g) {
    m_run[g] = kNegBig;
    l_run[g] = 0.0;
    acc[g] = vec4(0.0);
  }
  uint buf = 0u;
  for (uint k0 = k_begin; k0 < k_end; k0 += T) {
    // This tile's V chunks first: their loads are in flight while the scores are computed.
    uvec2 vr[PK];
    for (uint i = 0u; i < PK; ++i) {
      uint u = kq + VQ * i, key = k0 + u;
      vr[i] = (pv && u < T && key < k_end) ? vc[p.vc_off4 + key * p.kv_width4 + kv_base + cv] : uvec2(0u);
    }
    uvec2 kr[NP * NV];
    for (uint pi = 0u; pi < NP; ++pi) {
      uint key = k0 + pi * KP + j;
      for (uint i = 0u; i < NV; ++i) {
        uint ch = c + i * C;
        kr[pi * NV + i] = (key < k_end && ch < D4) ? kc[p.kc_off4 + key * p.kv_width4 + kv_base + ch] : uvec2(0u);
      }
    }
    float mx[HB];
    for (uint g = 0u; g < HB; ++g) mx[g] = kNegBig;
    for (uint pi = 0u; pi < NP; ++pi) {
      vec4 kf[NV];
      for (uint i = 0u; i < NV; ++i) kf[i] = widen(kr[pi * NV + i]);
      bool valid = k0 + pi * KP + j < k_end;
      for (uint g = 0u; g < HB; ++g) {
        float dot_qk = 0.0;
        for (uint i = 0u; i < NV; ++i) dot_qk += dot(qr[g * NV + i], kf[i]);
        for (uint m = C / 2u; m > 0u; m >>= 1) dot_qk += subgroupShuffleXor(dot_qk, m);
        float sv = valid ? dot_qk * p.scale : kNegBig;
        mx[g] = max(mx[g], sv);
        if (c == 0u) sc[(buf * HB + g) * T + pi * KP + j] = sv;
      }
    }
    // Tile maxima: over the subgroup's key slots (lane bits C .. subgroup size / 2), then
    // across subgroups after the barrier.
    for (uint g = 0u; g < HB; ++g)
      for (uint m = C; m < gl_SubgroupSize; m <<= 1) mx[g] = max(mx[g], subgroupShuffleXor(mx[g], m));
    if (gl_SubgroupInvocationID == 0u)
      for (uint g = 0u; g < HB; ++g) sm[(buf * KP + gl_SubgroupID) * HB + g] = mx[g];
    barrier();
    for (uint g = 0u; g < HB; ++g) {
      float mt = kNegBig;
      for (uint u = 0u; u < gl_NumSubgroups; ++u) mt = max(mt, sm[(buf * KP + u) * HB + g]);
      float m_new = max(m_run[g], mt);
      float corr = exp(m_run[g] - m_new);  // 0 on the first tile
      float l = l_run[g] * corr;
      vec4 a = acc[g] * corr;
      for (uint i = 0u; i < PK; ++i) {
        uint u = kq + VQ * i;
        if (u < T) {
          float w = exp(sc[(buf * HB + g) * T + u] - m_new);  // 0 for masked keys
          l += w;
          a += w * widen(vr[i]);
        }
      }
      m_run[g] = m_new;
      l_run[g] = l;
      acc[g] = a;
    }
    buf ^= 1u;
  }

  // Sum the key groups' accumulators and sums (every lane holds the same m_run).
  if (pv)
    for (uint g = 0u; g < HB; ++g) {
      red[(kq * HB + g) * D4 + cv] = acc[g];
      if (cv == 0u) lred[kq * HB + g] = l_run[g];
    }
  if (t == 0u)
    for (uint g = 0u; g < HB; ++g) mred[g] = m_run[g];
  barrier();
  for (uint e = t; e < nh * D4; e += WG) {
    uint g = e / D4, ch = e % D4;
    vec4 o = vec4(0.0);
    float l = 0.0;
    for (uint u = 0u; u < VQ; ++u) {
      o += red[(u * HB + g) * D4 + ch];
      l += lred[u * HB + g];
    }
    if (gl_SubgroupSize < C) o = vec4(uintBitsToFloat(0x7FC00000u));
    uint ph = r * p.n_heads + h0 + g;
    if (p.splits == 1u) {
      uint b = p.out_off + ph * d + 4u * ch;
      for (uint i = 0u; i < 4u; ++i) out_[b + i] = o[i] / l;
    } else {
      uint ps = ph * p.splits + s, b = ps * d + 4u * ch;
      for (uint i = 0u; i < 4u; ++i) part[b + i] = o[i];
      if (ch == 0u) {
        part[p.ml_off + 2u * ps] = mred[g];
        part[p.ml_off + 2u * ps + 1u] = l;
      }
    }
  }
}
