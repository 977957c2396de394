#version 450
// exl3_decode: decodes Ŵ (k x n) from the packed trellis into Ŵᵀ (n x k) binary16, row-major
// (so the prefill GEMM multiplies it like a dense (out, in) weight). Exact (spec 4.3 steps 1-4).
//
// One workgroup of 256 per strip of TS = 8 tiles along n (tile row tk, tiles tn0..tn0+7, which are
// consecutive in the file):
//   1. the strip's words are staged in shared memory with coalesced loads;
//   2. "warp" w (invocations 32w..32w+31; logical, no subgroup operation) decodes tile tn0 + w,
//      lane t the consecutive trellis steps 8t..8t+7 the way exl3_gemv does: their windows lie in
//      16 + 7K consecutive bits of the tile's stream (two runs of 4 for K = 7, 8), cut from a
//      funnel-shifted pair of words at compile-time positions; by the tile layout (spec 2.7) steps
//      8t + j are rows 2(t&3) + (j&1) + 8((j>>1)&1) of column (t>>2) + 8(j>>2), so each even/odd
//      step pair is one uint (rows r, r + 1) of one Ŵᵀ row, written to a shared strip;
//   3. the strip's 128 output rows of 16 halves (32 bytes) are stored as 1,024 uints, invocation t
//      taking uints t + 256 j: a subgroup's stores cover whole 32-byte sectors.
// Codebook values are exact binary16 values (decode_state), so packHalf2x16 converts them exactly
// under any rounding mode.
// Grid: flat, tiles_k x ceil(tiles_n / TS) workgroups (flat_group = tk * strips + strip).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
layout(local_size_x = 256) in;
layout(constant_id = 1) const uint K = 4;
layout(constant_id = 2) const uint CODEBOOK = 0;

layout(binding = 0) readonly buffer Trellis { uint trellis[]; };
layout(binding = 1) writeonly buffer What { uint what_t[]; };
layout(push_constant) uniform P { uint k, n, out_off2; } p;  // out_off2 in uints

const uint TS = 8u;                // tiles per strip
shared uint words[TS * 8u * 8u];   // TS tiles of 8K words, K <= 8
shared uint strip[TS * 16u * 8u];  // [row of Ŵᵀ in the strip][pair of rows of the tile]

#include "common.glsl"
#define EXL3_TRELLIS words
#include "exl3_decode.glsl"

const uint GROUPS = K <= 6u ? 1u : 2u;  // runs of windows per lane
const uint PER_GROUP = 8u / GROUPS;     // windows per run

void main() {
  uint g = flat_group(), inv = gl_LocalInvocationID.x;
  uint tiles_n = p.n / 16u, strips = (tiles_n + TS - 1u) / TS;
  if (g >= (p.k / 16u) * strips) return;  // uniform per workgroup
  uint tk = g / strips, tn0 = (g % strips) * TS;
  uint ts = min(TS, tiles_n - tn0);  // tiles in this strip
  uint first = (tk * tiles_n + tn0) * 8u * K;
  for (uint i = inv; i < ts * 8u * K; i += 256u) words[i] = trellis[first + i];
  barrier();

  uint w = inv >> 5, t = inv & 31u;
  if (w < ts) {
    const uint tile_words = 8u * K, stream_bits = 256u * K;
    uint base = w * tile_words;
    [[unroll]] for (uint q = 0u; q < GROUPS; ++q) {
      uint start = ((8u * t + q * PER_GROUP + 1u) * K + stream_bits - 16u) % stream_bits;
      uint gw = start >> 5, off = start & 31u;
      uint wd[3];
      [[unroll]] for (uint i = 0u; i < 3u; ++i) {
        uint wi = gw + i;
        wd[i] = words[base + (wi >= tile_words ? wi - tile_words : wi)];
      }
      uint a0 = funnel(wd[0], wd[1], off), a1 = funnel(wd[1], wd[2], off);
      [[unroll]] for (uint jj = 0u; jj < PER_GROUP; jj += 2u) {
        uint j = q * PER_GROUP + jj;  // even: steps j, j + 1 are rows r, r + 1 of one column
        float a = decode_state(window(a0, a1, jj));
        float b = decode_state(window(a0, a1, jj + 1u));
        uint c = (t >> 2) + 8u * (j >> 2), r2 = (t & 3u) + 4u * ((j >> 1) & 1u);  // r2 = r / 2
        strip[(w * 16u + c) * 8u + r2] = packHalf2x16(vec2(a, b));
      }
    }
  }
  barrier();
  [[unroll]] for (uint j = 0u; j < 4u; ++j) {
    uint i = t + 32u * w + 256u * j;
    uint row = i >> 3;  // output row (column of Ŵ) in the strip
    if ((row >> 4) >= ts) break;
    uint e2 = ((16u * tn0 + row) * p.k + 16u * tk) / 2u + (i & 7u);
    what_t[p.out_off2 + e2] = strip[i];
  }
}
