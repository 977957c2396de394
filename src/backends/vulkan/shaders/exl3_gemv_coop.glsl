// shaders/exl3_gemv_coop.glsl: the EXL3 decode GEMV with its dot products on cooperative
// matrices (tensor cores), body of exl3_gemv_coop.comp (and of exl3_gemv_coop_emu.comp, the
// test module with the cooperative-matrix operations emulated in plain GLSL).
//
// z_s[m, n] for split s = Σ over the split's 16-row k-slabs of xh · Ŵ, m = 1..8, the partials
// layout of exl3_gemv (z + s·m·n), so exl3_hadamard_out sums them unchanged.
//
// Why: exl3_gemv (exl3_gemv.glsl) is bound by issued instructions on the H200; per weight it
// widens the decoded binary16 to fp32 and does an fp32 FMA per row, which the CUDA kernel gives
// to the tensor cores. KHR cooperative matrices cannot be built from registers in a known
// layout, so here the decoded pairs go through a per-subgroup shared 16x16 fp16 tile:
// - Workgroup: 4 subgroups of 32 (the host requires subgroup size 32), G = 4 adjacent tile
//   columns (64 outputs), split-k as exl3_gemv (the host's exl3_splits: every split holds a
//   multiple of 8 slabs, so the 4 subgroups run the same number of slab steps).
// - Subgroup w takes slabs tk0 + w, tk0 + w + 4, ...; per slab lane t decodes the trellis steps
//   8t .. 8t+7 of each of the G tiles exactly as exl3_gemv does (same words, funnel, windows,
//   codebook: bit-exact binary16 weights), i.e. pairs of rows (r, r + 1) of one column c, and
//   stores each pair as one 32-bit word of the tile's B block in column-major order ((r, c) at
//   half c·16 + r).
// - A (16x16 fp16, row-major) holds the slab's 16 activations of each batch row j as fp16 hi
//   (row j) and lo = fp16(x - hi) (row 8 + j); the other rows stay zero. hi + lo carries ~22
//   bits of x, and each product of binary16 values is exact in the fp32 accumulator, so the
//   result is within fp32 rounding of the double product (the CUDA kernel's scheme).
// - C[gi] (16x16 fp32 per tile) += A · B[gi]; at the end z[j][c] = C[j][c] + C[8 + j][c],
//   summed over the 4 subgroups in a fixed order (deterministic, not bitwise exl3_gemv's sums).
// Shared memory: A 2 KiB, B 8 KiB, C staging 4 KiB, reduction 8 KiB (+ 8 KiB in the emulation).
// COOP_DECODE_F16 (exl3_gemv_coop.comp): the decode's f16vec2 add (exl3_decode.glsl's
// decode_pair, needs shaderFloat16 and RTE); without it (the emulated module) decode_state in
// fp32 with software rounding, the same bits.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_shader_subgroup_basic : require
#ifdef COOP_EMULATION
#include "coop_emulation.glsl"
#else
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#define ACC fcoopmatNV<32, gl_ScopeSubgroup, kCm, kCn>
#define FRAG_A fcoopmatNV<16, gl_ScopeSubgroup, kAm, kAk>
#define FRAG_B fcoopmatNV<16, gl_ScopeSubgroup, kBk, kBn>
#define SUBGROUP_ID gl_SubgroupID
#define SUBGROUP_LANE gl_SubgroupInvocationID
#endif
#ifdef COOP_DECODE_F16
#extension GL_EXT_shader_explicit_arithmetic_types : require
#extension GL_EXT_spirv_intrinsics : require
// OpExecutionMode RoundingModeRTE (4462) for 16-bit floats (capability RoundingModeRTE, 4467).
spirv_execution_mode(extensions = ["SPV_KHR_float_controls"], capabilities = [4467], 4462, 16);
#define EXL3_DECODE_F16 1
#endif

layout(local_size_x = 128) in;
layout(constant_id = 1) const uint K = 4;
layout(constant_id = 2) const uint CODEBOOK = 0;
#include "coop_dims.glsl"

layout(binding = 0) readonly buffer Trellis { uint trellis[]; };
layout(binding = 1) readonly buffer Xh { float xh[]; };
layout(binding = 2) writeonly buffer Z { float z[]; };
layout(push_constant) uniform P { uint m, k, n, xh_off, z_off, splits; } p;

#include "common.glsl"
#define EXL3_TRELLIS trellis
#include "exl3_decode.glsl"

#define G 4u
const uint GROUPS = K <= 6u ? 1u : 2u;  // window groups per lane
const uint PER_GROUP = 8u / GROUPS;     // windows per group

shared uvec4 sa[4u * 32u];       // per subgroup: A, 16 rows x 16 halves, row-major
shared uvec4 sb[4u * G * 32u];   // per subgroup: G B tiles, 16x16 halves each, column-major
shared float sc[4u * 256u];      // per subgroup: one accumulator, row-major
shared float red[4u * G * 128u]; // per subgroup, tile, batch row (< 8), column: its partial sum
#ifdef COOP_EMULATION
EMU_HALF_MATRIX(sa)
EMU_HALF_MATRIX(sb)
EMU_FLOAT_MATRIX(sc)
#endif

// The 32-bit word holding halves 2i, 2i + 1 of a uvec4 array.
#define SET_WORD(arr, i, v) arr[(i) >> 2][(i) & 3u] = (v)

// Codebook values of two states as binary16 bits (low half s0).
uint pair_bits(uint s0, uint s1) {
#ifdef COOP_DECODE_F16
  return packHalf2x16(decode_pair(s0, s1));  // exact binary16 values: the conversion is exact
#else
  return packHalf2x16(vec2(decode_state(s0), decode_state(s1)));
#endif
}

void main() {
  uint g = flat_group();
  uint tiles_n = p.n / 16u, tiles_k = p.k / 16u, groups_n = tiles_n / G;
  if (g >= groups_n * p.splits) return;  // uniform per workgroup
  uint tg = g % groups_n, split = g / groups_n;
  uint w = SUBGROUP_ID, t = SUBGROUP_LANE;
  uint per = (tiles_k + p.splits - 1u) / p.splits;
  uint tk0 = split * per, tk1 = min(tiles_k, tk0 + per);
  uint steps = tk1 > tk0 ? (tk1 - tk0 + 3u) / 4u : 0u;  // the same for every subgroup (see above)
  const uint tile_words = 8u * K, stream_bits = 256u * K;
  uint gw[GROUPS], goff[GROUPS];
  [[unroll]] for (uint q = 0u; q < GROUPS; ++q) {
    uint start = ((8u * t + q * PER_GROUP + 1u) * K + stream_bits - 16u) % stream_bits;
    gw[q] = start >> 5;
    goff[q] = start & 31u;
  }
  uint abase = 32u * w, bbase = 32u * G * w;
  // A's rows start at zero; only rows j and 8 + j (j < m) change per slab.
  sa[abase + t] = uvec4(0u);
  subgroupMemoryBarrierShared();
  subgroupBarrier();

  ACC acc[G];
  [[unroll]] for (uint gi = 0u; gi < G; ++gi) acc[gi] = ACC(0.0);
  for (uint step = 0u; step < steps; ++step) {
    uint tk = tk0 + w + 4u * step;
    bool valid = tk < tk1;  // always, for splits of whole 128-blocks; kept for safety
    // A: activations of batch rows j < m, columns 2c, 2c + 1, as hi (row j) and lo (row 8 + j).
    for (uint i = t; i < 8u * p.m; i += 32u) {
      uint j = i / 8u, c2 = 2u * (i % 8u);
      uint e = p.xh_off + j * p.k + 16u * tk + c2;
      float x0 = valid ? xh[e] : 0.0, x1 = valid ? xh[e + 1u] : 0.0;
      uint h0 = f32_to_f16_rne(x0), h1 = f32_to_f16_rne(x1);
      float r0 = x0 - unpackHalf2x16(h0).x, r1 = x1 - unpackHalf2x16(h1).x;
      SET_WORD(sa, 4u * abase + j * 8u + c2 / 2u, h0 | (h1 << 16));
      SET_WORD(sa, 4u * abase + (8u + j) * 8u + c2 / 2u, f32_to_f16_rne(r0) | (f32_to_f16_rne(r1) << 16));
    }
    // B: the G tiles' weights, pairs (r, r + 1) of column c as one word at half c·16 + r.
    uint base = (min(tk, tiles_k - 1u) * tiles_n + tg * G) * tile_words;
    [[unroll]] for (uint gi = 0u; gi < G; ++gi) {
      [[unroll]] for (uint q = 0u; q < GROUPS; ++q) {
        uint wd[3];
        [[unroll]] for (uint i = 0u; i < 3u; ++i) {
          uint wi = gw[q] + i;
          wd[i] = trellis[base + gi * tile_words + (wi >= tile_words ? wi - tile_words : wi)];
        }
        uint a0 = funnel(wd[0], wd[1], goff[q]);
        uint a1 = funnel(wd[1], wd[2], goff[q]);
        [[unroll]] for (uint jj = 0u; jj < PER_GROUP; jj += 2u) {
          uint st = q * PER_GROUP + jj;  // even: steps st, st + 1 are rows r, r + 1 of column c
          uint r = 2u * (t & 3u) + 8u * ((st >> 1) & 1u), c = (t >> 2) + 8u * (st >> 2);
          uint bits = valid ? pair_bits(window(a0, a1, jj), window(a0, a1, jj + 1u)) : 0u;
          SET_WORD(sb, 4u * (bbase + 32u * gi) + (c * 16u + r) / 2u, bits);
        }
      }
    }
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    FRAG_A fa;
    coopMatLoadNV(fa, sa, abase, 2u, false);
    [[unroll]] for (uint gi = 0u; gi < G; ++gi) {
      FRAG_B fb;
      coopMatLoadNV(fb, sb, bbase + 32u * gi, 2u, true);
      acc[gi] = coopMatMulAddNV(fa, fb, acc[gi]);
    }
    subgroupBarrier();  // every lane's loads are done before the next slab overwrites A and B
  }

  // z[j][c] = C[j][c] + C[8 + j][c] per tile, then the 4 subgroups in order.
  [[unroll]] for (uint gi = 0u; gi < G; ++gi) {
    coopMatStoreNV(acc[gi], sc, 256u * w, 16u, false);
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    for (uint i = t; i < 16u * p.m; i += 32u) {
      uint j = i / 16u, c = i % 16u;
      red[((w * G + gi) * 8u + j) * 16u + c] = sc[256u * w + j * 16u + c] + sc[256u * w + (8u + j) * 16u + c];
    }
    subgroupBarrier();
  }
  barrier();
  for (uint i = gl_LocalInvocationID.x; i < G * 16u * p.m; i += 128u) {
    uint gi = i / (16u * p.m), rem = i % (16u * p.m), j = rem / 16u, c = rem % 16u;
    float s = 0.0;
    for (uint sg = 0u; sg < 4u; ++sg) s += red[((sg * G + gi) * 8u + j) * 16u + c];
    z[p.z_off + split * p.m * p.n + j * p.n + 16u * (tg * G + gi) + c] = s;
  }
}
