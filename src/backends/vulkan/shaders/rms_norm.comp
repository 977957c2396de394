#version 450
// rms_norm: out = x / sqrt(mean(x^2) + eps) * w over consecutive groups of `group` elements.
// One workgroup per group (flat_group); WG must be a power of two.
// ADD = 1 (the fused residual add + norm the backend records when rms_norm's input is the x of
// the add recorded just before): x += y first, written back, and the norm taken of the sums;
// bit-identical to add.comp then ADD = 0, since each element's sum is the same fp32 addition and
// the norm's arithmetic is this same code. Binding 3 (y) is bound but unread when ADD = 0.
// BLK = 1 (the host sets it where group is a multiple of 128 with at most kBlocks blocks, at
// decode sizes; WG divides kChunk): the sum of squares in the order the decode's fused
// residual stream uses (exl3_hadamard_out.comp RESID, exl3_gemv*_hin NM): per 128-block of the
// group, the squares reduced as pairs (e, e + s) for s = 64, 32, .., 1 over the block's
// elements e; then the block sums added in block order from 0. With the same inv expression,
// the fused and separate paths give the same bits.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 128;
layout(constant_id = 1) const uint ADD = 0;
layout(constant_id = 2) const uint BLK = 0;
const uint kBlocks = 256u;
const uint kChunk = 4096u;
#include "common.glsl"

layout(binding = 0) buffer X { float x[]; };
layout(binding = 1) readonly buffer W { float w[]; };
layout(binding = 2) writeonly buffer Out { float out_[]; };
layout(binding = 3) readonly buffer Y { float y[]; };
layout(push_constant) uniform P {
  uint groups, group, x_off, w_off, out_off;
  float eps;
  uint y_off;
} p;

shared float red[WG];
shared float bs[BLK != 0u ? kBlocks : 1u];
shared float sq[BLK != 0u ? kChunk : 1u];

float load_x(uint e) { return ADD != 0u ? x[p.x_off + e] + y[p.y_off + e] : x[p.x_off + e]; }

void main() {
  uint g = flat_group(), t = gl_LocalInvocationID.x;
  if (g >= p.groups) return;  // uniform per workgroup
  uint base = g * p.group;
  precise float inv;  // the fused norm (exl3_gemv*_hin NM) computes it as written here
  if (BLK != 0u) {
    // Chunks of up to 32 blocks (4096 elements, WG divides it) in shared memory: the squares,
    // then the pairwise tree inside every block of the chunk at once (7 barriers per chunk).
    uint nb = p.group / 128u;
    for (uint c0 = 0u; c0 < p.group; c0 += kChunk) {
      uint len = min(kChunk, p.group - c0);
      for (uint i = t; i < len; i += WG) {
        float v = load_x(base + c0 + i);
        if (ADD != 0u) x[p.x_off + base + c0 + i] = v;
        sq[i] = v * v;  // read back only across the barrier: never contracted into an FMA
      }
      barrier();
      for (uint s = 64u; s > 0u; s >>= 1) {
        for (uint i = t; i < len; i += WG)
          if ((i & 127u) < s) sq[i] += sq[i + s];
        barrier();
      }
      for (uint b = t; b < len / 128u; b += WG) bs[c0 / 128u + b] = sq[b * 128u];
      barrier();
    }
    float tot = 0.0;
    for (uint b = 0u; b < nb; ++b) tot += bs[b];
    inv = 1.0 / sqrt(tot / float(p.group) + p.eps);
    // Element c0 + i was loaded (and with ADD written) by invocation i % WG = (c0 + i) % WG.
    for (uint i = t; i < p.group; i += WG)
      out_[p.out_off + base + i] = x[p.x_off + base + i] * inv * w[p.w_off + i];
    return;
  }
  float ss = 0.0;
  for (uint i = t; i < p.group; i += WG) {
    float v = load_x(base + i);
    if (ADD != 0u) x[p.x_off + base + i] = v;
    ss += v * v;
  }
  red[t] = ss;
  barrier();
  for (uint s = WG / 2u; s > 0u; s >>= 1) {
    if (t < s) red[t] += red[t + s];
    barrier();
  }
  inv = 1.0 / sqrt(red[0] / float(p.group) + p.eps);
  // Each invocation reads back only elements it wrote itself (same i stride), so no barrier.
  for (uint i = t; i < p.group; i += WG)
    out_[p.out_off + base + i] = x[p.x_off + base + i] * inv * w[p.w_off + i];
}
