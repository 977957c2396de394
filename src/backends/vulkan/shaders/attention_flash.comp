#version 450
// attention_flash: causal grouped-query attention over an fp16 KV cache for many query rows (the
// prefill path; decode keeps attention.comp). Same contract as attention.comp and the CPU
// reference (backends/cpu/attention.h): row r, head h sees cache rows first(r)..positions[r],
// first(r) = 0 or positions[r] - window + 1 with a sliding window; kv head h / group.
//
// Why this shape: attention.comp gives every (row, head) its own workgroup, which reads all of
// its keys and values from memory, so a prefill of n rows moves O(n^2) cache bytes per head. Here
// a workgroup owns BR query vectors that share one kv head (the heads of a GQA group times a run
// of consecutive rows) and streams the keys from the block's smallest first(r) to its largest
// positions[r] in tiles of BC, each tile widened to fp32 in shared memory once and used by all BR
// vectors (BR times less cache traffic). Per tile:
//   S = Q·Kᵀ·scale (BR x BC, masked per vector)  ->  row max, P = exp(S - max'), running sums
//   O = O·exp(max - max') + P·V
// the online softmax of the CPU kernel, all in fp32. K and V tiles take turns in one buffer: the
// V tile is loaded while the row maxima are reduced.
//
// Thread maps (WG = 128 invocations, fixed): scores, kg = t % 8, rg = t / 8: vectors rg + 16 i
// (i < BR / 16), keys kg + 8 j (j < BC / 8); softmax, WG / BR threads per vector, keys strided;
// P·V, cg = t % 16, pg = t / 16: vectors pg + 8 i (i < BR / 8), vec4 columns cg + 16 c.
// Shared rows are padded by one vec4 / float so strided rows fall in different banks.
//
// Specialization: 0 WG (128), 1 BR (16, 32, 64 or 128), 2 BC (multiple of 8 and of WG / BR),
// 3 D4 = ceil(head_dim / 4). Shared memory: 16 (BR + BC)(D4 + 1) + 4 BR (BC + 1) + 4 WG + 12 BR
// bytes (the host picks BR, BC to fit the device, VulkanBackend::flash_tiles).
// Grid: flat, row_blocks x (n_kv_heads x head_blocks) workgroups; the last row blocks (longest
// key ranges) are numbered first so the longest workgroups start first.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 128;
layout(constant_id = 1) const uint BR = 32;
layout(constant_id = 2) const uint BC = 32;
layout(constant_id = 3) const uint D4 = 32;
#include "common.glsl"

layout(binding = 0) readonly buffer Q { float q[]; };
layout(binding = 1) readonly buffer Kc { uint kc[]; };
layout(binding = 2) readonly buffer Vc { uint vc[]; };
layout(binding = 3) readonly buffer Pos { uint pos[]; };
layout(binding = 4) writeonly buffer Out { float out_[]; };
layout(push_constant) uniform P {
  uint rows, n_heads, group, head_dim, kv_width, window;
  uint q_off, kc_off, vc_off, pos_off, out_off;
  float scale;
  uint heads_per_block;  // vector v: head (hb * heads_per_block + v % heads_per_block) of the group
  uint head_blocks;      // ceil(group / heads_per_block)
  uint row_blocks;       // ceil(rows / (BR / heads_per_block))
} p;

const float kNegBig = -3.0e38;
const uint SR = BR / 16u, SC = BC / 8u;         // scores per thread: SR vectors x SC keys
const uint TPR = WG / BR, KPT = BC / TPR;       // softmax: threads per vector, keys per thread
const uint PR = BR / 8u, PC = (D4 + 15u) / 16u;  // P·V: vectors and vec4 columns per thread
const uint QS = D4 + 1u, SS = BC + 1u;           // padded row strides (vec4 / float)

shared vec4 qs[BR * QS];
shared vec4 kvs[BC * QS];
shared float ss[BR * SS];
shared float red[WG];
shared float vec_corr[BR];
shared uint vec_first[BR], vec_last[BR];  // key range of each vector; first > last: unused
shared uint range_lo, range_hi;

// Loads cache rows k0 .. k0 + BC - 1 of kv head kvh (zeros past `hi`) into kvs as fp32.
#define DEFINE_TILE_LOADER(NAME, BUF)                                                     \
  void NAME(uint off, uint k0, uint hi, uint kvh, bool pairs) {                           \
    uint d = p.head_dim;                                                                  \
    for (uint e = gl_LocalInvocationID.x; e < BC * D4; e += WG) {                         \
      uint j = e / D4, c = e % D4, key = k0 + j;                                          \
      vec4 v = vec4(0.0);                                                                 \
      if (key <= hi) {                                                                    \
        uint b = off + key * p.kv_width + kvh * d + 4u * c;                               \
        if (pairs && 4u * c + 4u <= d) {                                                  \
          v = vec4(unpackHalf2x16(BUF[b >> 1]), unpackHalf2x16(BUF[(b >> 1) + 1u]));      \
        } else {                                                                          \
          for (uint i = 0u; i < 4u; ++i)                                                  \
            if (4u * c + i < d) v[i] = LOAD_F16(BUF, b + i);                              \
        }                                                                                 \
      }                                                                                   \
      kvs[j * QS + c] = v;                                                                \
    }                                                                                     \
  }
DEFINE_TILE_LOADER(load_k_tile, kc)
DEFINE_TILE_LOADER(load_v_tile, vc)

void main() {
  uint t = gl_LocalInvocationID.x;
  uint kv_blocks = (p.n_heads / p.group) * p.head_blocks;
  uint g = flat_group();
  if (g >= p.row_blocks * kv_blocks) return;  // uniform per workgroup
  uint rb = p.row_blocks - 1u - g / kv_blocks;
  uint kvh = (g % kv_blocks) / p.head_blocks, hb = (g % kv_blocks) % p.head_blocks;
  uint hpb = p.heads_per_block, rpb = BR / hpb, r0 = rb * rpb, d = p.head_dim;

  // Vector v: row r0 + v / hpb, head kvh * group + hb * hpb + v % hpb.
  for (uint v = t; v < BR; v += WG) {
    uint ri = v / hpb, hi = hb * hpb + v % hpb, r = r0 + ri;
    uint first = 1u, last = 0u;
    if (ri < rpb && r < p.rows && hi < p.group) {
      last = pos[p.pos_off + r];
      first = (p.window > 0u && last + 1u > p.window) ? last + 1u - p.window : 0u;
    }
    vec_first[v] = first;
    vec_last[v] = last;
  }
  for (uint e = t; e < BR * D4; e += WG) {
    uint v = e / D4, c = e % D4, ri = v / hpb, hi = hb * hpb + v % hpb, r = r0 + ri;
    vec4 x = vec4(0.0);
    if (ri < rpb && r < p.rows && hi < p.group) {
      uint b = p.q_off + (r * p.n_heads + kvh * p.group + hi) * d + 4u * c;
      for (uint i = 0u; i < 4u; ++i)
        if (4u * c + i < d) x[i] = q[b + i];
    }
    qs[v * QS + c] = x;
  }
  barrier();
  if (t == 0u) {
    uint lo = 0xFFFFFFFFu, hi = 0u;
    for (uint v = 0u; v < BR; ++v) {
      if (vec_first[v] > vec_last[v]) continue;
      lo = min(lo, vec_first[v]);
      hi = max(hi, vec_last[v]);
    }
    range_lo = lo;
    range_hi = hi;
  }
  barrier();
  uint lo = range_lo, hi = range_hi;
  bool k_pairs = ((p.kc_off | p.kv_width | d) & 1u) == 0u;
  bool v_pairs = ((p.vc_off | p.kv_width | d) & 1u) == 0u;

  uint kg = t % 8u, rg = t / 8u;              // scores
  uint sv = t / TPR, part = t % TPR;          // softmax
  uint cg = t % 16u, pg = t / 16u;            // P·V
  float run_max = kNegBig, run_sum = 0.0;     // of vector sv, over this thread's keys
  vec4 acc[PR][PC];
  for (uint i = 0u; i < PR; ++i)
    for (uint c = 0u; c < PC; ++c) acc[i][c] = vec4(0.0);

  for (uint k0 = lo; k0 <= hi; k0 += BC) {
    barrier();  // the previous tile's P and V have been read
    load_k_tile(p.kc_off, k0, hi, kvh, k_pairs);
    barrier();
    float s[SR][SC];
    for (uint i = 0u; i < SR; ++i)
      for (uint j = 0u; j < SC; ++j) s[i][j] = 0.0;
    for (uint c = 0u; c < D4; ++c) {
      vec4 qv[SR];
      for (uint i = 0u; i < SR; ++i) qv[i] = qs[(rg + 16u * i) * QS + c];
      for (uint j = 0u; j < SC; ++j) {
        vec4 kv = kvs[(kg + 8u * j) * QS + c];
        for (uint i = 0u; i < SR; ++i) s[i][j] += dot(qv[i], kv);
      }
    }
    for (uint i = 0u; i < SR; ++i) {
      uint v = rg + 16u * i;
      for (uint j = 0u; j < SC; ++j) ss[v * SS + kg + 8u * j] = s[i][j] * p.scale;
    }
    barrier();  // scores written; K no longer needed
    load_v_tile(p.vc_off, k0, hi, kvh, v_pairs);
    uint first = vec_first[sv], last = vec_last[sv];
    float m = kNegBig;
    for (uint j = 0u; j < KPT; ++j) {
      uint u = part + TPR * j, key = k0 + u;
      if (key >= first && key <= last) m = max(m, ss[sv * SS + u]);
    }
    red[t] = m;
    barrier();  // partial maxima and the V tile
    for (uint u = 0u; u < TPR; ++u) m = max(m, red[sv * TPR + u]);
    float new_max = max(run_max, m);
    float corr = exp(run_max - new_max);  // 0 on a vector's first keys, 1 while it has none
    float sum = 0.0;
    for (uint j = 0u; j < KPT; ++j) {
      uint u = part + TPR * j, key = k0 + u;
      float w = (key >= first && key <= last) ? exp(ss[sv * SS + u] - new_max) : 0.0;
      ss[sv * SS + u] = w;
      sum += w;
    }
    run_sum = run_sum * corr + sum;
    run_max = new_max;
    if (part == 0u) vec_corr[sv] = corr;
    barrier();  // P and the corrections
    for (uint i = 0u; i < PR; ++i) {
      float c = vec_corr[pg + 8u * i];
      for (uint cc = 0u; cc < PC; ++cc) acc[i][cc] *= c;
    }
    uint count = min(BC, hi + 1u - k0);
    for (uint j = 0u; j < count; ++j) {
      vec4 vv[PC];
      for (uint cc = 0u; cc < PC; ++cc) {
        uint col = cg + 16u * cc;
        vv[cc] = col < D4 ? kvs[j * QS + col] : vec4(0.0);
      }
      for (uint i = 0u; i < PR; ++i) {
        float w = ss[(pg + 8u * i) * SS + j];
        for (uint cc = 0u; cc < PC; ++cc) acc[i][cc] += w * vv[cc];
      }
    }
  }

  barrier();
  red[t] = run_sum;
  barrier();
  for (uint i = 0u; i < PR; ++i) {
    uint v = pg + 8u * i;
    if (vec_first[v] > vec_last[v]) continue;
    float l = 0.0;
    for (uint u = 0u; u < TPR; ++u) l += red[v * TPR + u];
    float inv = 1.0 / l;
    uint r = r0 + v / hpb, h = kvh * p.group + hb * hpb + v % hpb;
    uint b = p.out_off + (r * p.n_heads + h) * d;
    for (uint cc = 0u; cc < PC; ++cc) {
      uint col = cg + 16u * cc;
      if (col >= D4) continue;
      vec4 o = acc[i][cc] * inv;
      for (uint e = 0u; e < 4u; ++e)
        if (4u * col + e < d) out_[b + 4u * col + e] = o[e];
    }
  }
}
