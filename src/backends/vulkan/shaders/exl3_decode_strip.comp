#version 450
// exl3_decode_strip: exl3_decode.comp's previous form, kept for A/B runs
// (TRELLIS_VULKAN_DECODE_STRIP=1): the same output, each invocation extracting the two states of
// every uint it stores straight from the staged words (step_of + trellis_state) instead of
// decoding runs of 8 consecutive steps.
//
// One workgroup of 256 per strip of TS = 8 tiles along n (tile row tk, tiles tn0..tn0+7, which are
// consecutive in the file): the strip's words are staged in shared memory with coalesced loads,
// then the strip's 128 output rows of 16 halves (32 bytes each) are written as 1,024 uints,
// invocation t taking uints t + 256 j: a subgroup's stores cover whole 32-byte sectors (4 rows x
// 8 uints), where one tile per workgroup wrote 8 bytes to each of 16 rows per store.
// Each uint packs rows r, r + 1 of one output row; codebook values are exact binary16 values
// (decode_state), so packHalf2x16 converts them exactly under any rounding mode.
// Grid: flat, tiles_k x ceil(tiles_n / TS) workgroups (flat_group = tk * strips + strip).
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
layout(constant_id = 1) const uint K = 4;
layout(constant_id = 2) const uint CODEBOOK = 0;

layout(binding = 0) readonly buffer Trellis { uint trellis[]; };
layout(binding = 1) writeonly buffer What { uint what_t[]; };
layout(push_constant) uniform P { uint k, n, out_off2; } p;  // out_off2 in uints

const uint TS = 8u;             // tiles per strip
shared uint words[TS * 8u * 8u];  // TS tiles of 8K words, K <= 8

#include "common.glsl"
#define EXL3_TRELLIS words
#include "exl3_decode.glsl"

void main() {
  uint g = flat_group(), t = gl_LocalInvocationID.x;
  uint tiles_n = p.n / 16u, strips = (tiles_n + TS - 1u) / TS;
  if (g >= (p.k / 16u) * strips) return;  // uniform per workgroup
  uint tk = g / strips, tn0 = (g % strips) * TS;
  uint ts = min(TS, tiles_n - tn0);  // tiles in this strip
  uint first = (tk * tiles_n + tn0) * 8u * K;
  for (uint i = t; i < ts * 8u * K; i += 256u) words[i] = trellis[first + i];
  barrier();
  for (uint j = 0u; j < 4u; ++j) {
    uint i = t + 256u * j;
    uint row = i >> 3, r = (i & 7u) << 1;  // output row (column of Ŵ) in the strip, tile row
    uint tl = row >> 4, c = row & 15u;
    if (tl >= ts) break;
    uint base = tl * 8u * K;
    float a = decode_state(trellis_state(base, step_of(r, c)));
    float b = decode_state(trellis_state(base, step_of(r + 1u, c)));
    uint e = (16u * tn0 + row) * p.k + 16u * tk + r;
    what_t[p.out_off2 + e / 2u] = packHalf2x16(vec2(a, b));
  }
}
