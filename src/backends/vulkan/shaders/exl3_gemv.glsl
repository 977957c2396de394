// shaders/exl3_gemv.glsl: body of exl3_gemv.comp (shared-memory reductions, any device) and
// exl3_gemv_sg.comp (EXL3_GEMV_SUBGROUP: the 4-lane part of the reduction by subgroup shuffles).
//
// z[m, n] = xh[m, k] · Ŵ straight from the packed trellis, for small m (token generation). Ŵ is
// decoded on the fly, bit-exact (exl3_decode.glsl's decode_state); Hadamards, suh/svh and bias are
// the separate exl3_hadamard_* passes.
//
// Specialization: WG (id 0, multiple of 32), K (id 1), CODEBOOK (id 2), G (id 3: tile columns per
// workgroup, divides n / 16), R (id 4: rows of xh per pass, 1..8; more rows loop, re-decoding),
// XS (id 5, EXL3_GEMV_HIN only, below), PF (id 6: 1 = prefetch, below), SA (id 7: the fp16
// decode's add form, exl3_decode.glsl).
// One pipeline per (K, codebook, G, R, XS, PF), named exl3_gemv_k<K>_<codebook>[_g<G>][_r<R>]
// [_nopf][_x<XS>] (VulkanBackend::gemv_pipeline).
//
// Shape (the CUDA kernel's, cuda_exl3_decode.cuh, without tensor cores): the workgroup owns G
// adjacent tile columns (16·G outputs) and is split into WG / 32 "warps" of 32 lanes (logical:
// nothing assumes the hardware subgroup size, except the subgroup variant, see below). Warp w
// takes the 16-row slabs tk0 + w, tk0 + w + WG/32, ... of its k split; for each slab it reads the
// G tiles, which are adjacent in the file (a contiguous G · 32K-byte span, so the warp's loads
// coalesce), and lane t decodes the contiguous trellis steps 8t .. 8t+7 of each tile. Those 8
// windows of K bits lie in 16 + 7K consecutive bits of the tile's MSB-first stream: the lane
// loads the 3 words holding them once (two groups of 4 windows for K = 7, 8), funnel-shifts them
// so the first window starts at the top of a0, and cuts every window at a compile-time position
// of a0:a1. By the tile layout (spec 2.7) steps 8t+j are rows 2(t&3) + (j&1) + 8((j>>1)&1) of
// columns (t>>2) + 8(j>>2), so a lane needs only 4 activations per row and slab and keeps 2·G
// accumulators per row. At the end the 4 lanes of a column and the warps are summed (fixed order:
// deterministic).
// Split-k: workgroup (split, column group) takes slabs [split·per, (split+1)·per) and writes its
// partial sums to z + split · m · n; exl3_hadamard_out adds the partials.
//
// Arithmetic variants (separate SPIR-V modules, chosen by the host, vk_linear.cpp):
//   plain (exl3_gemv, exl3_gemv_sg): fp32 decode with software rounding to binary16
//     (decode_state); needs nothing beyond Vulkan 1.1.
//   EXL3_GEMV_F16 (exl3_gemv[_sg]_f16): decode_pair, two weights per step: 3INST/MCG sum their
//     fp16 halves with one f16vec2 add, MUL1 rounds with one f16vec2 conversion; needs
//     shaderFloat16 and shaderRoundingModeRTEFloat16, and declares RoundingModeRTE for 16-bit
//     results so every binary16 result is RNE, as the spec requires (no driver default assumed).
//   EXL3_GEMV_DOT (exl3_gemv[_sg]_f16_dot, MUL1 only): as _f16, with the MUL1 byte sum as one
//     4x8 packed dot product; needs shaderIntegerDotProduct.
//   EXL3_GEMV_HIN (exl3_gemv[_sg][_f16[_dot]]_hin): the input transform fused in. Binding 1 is
//     the linear's input x (element offset x_off, in_f columns) instead of xh, binding 3 suh;
//     each workgroup first computes xh for its own rows and k range [16 tk0, 16 tk1) into shared
//     memory, xs[j · span + e] (span = 16 (tk1 - tk0)), with exl3_hadamard_in.comp's operations
//     in its order (x · suh or 0 past in_f; butterflies s = 1 .. 64, the element with bit s set
//     becoming partner - own, the other own + partner; then · 1/sqrt(128)), so the activations
//     and z are bitwise those of the two-pass path. Needs split boundaries on 128-blocks (the
//     host picks splits so that ceil(tiles_k / splits) is a multiple of 8), m <= R (one pass
//     of the row loop) and XS (id 5) >= m · span floats (the host checks, else it runs the two
//     passes). Every column group of a split repeats the transform of its slab (span · m · 7
//     adds and 3 barriers per workgroup, small next to decoding 16 G · span weights) and the
//     linear loses a dispatch and a pipeline barrier.
//     NM (id 8, the _hin modules without _fout): the decode's RMSNorm folded in as well. x is
//     then the residual stream (rows of in_f = the norm's width, a multiple of 128, at most 64
//     blocks), bindings 4-6 the norm's weight (nw_off), the block sums of squares of x that
//     exl3_hadamard_out.comp (RESID) wrote ([m, in_f / 128]) and the norm's output (no_off);
//     each element of the slab becomes x · inv · w with inv from the block sums exactly as
//     rms_norm.comp's BLK path computes it, so the activations (and, with write_norm, the norm
//     output that the first column group writes for its k range) are bitwise those of the
//     separate rms_norm. Bindings 4-6 are bound but unused when NM = 0.
//     AM (id 9, the same modules; not with NM): the decode attention's split merge folded in
//     instead. x is then attention_decode's partials (`part`: per (row, head, split) the
//     accumulator at ((r heads + h) splits + s) head_dim and (m, l) at ml_off + 2 (...)), and
//     each element of the slab is attention_decode_merge.comp's output computed with its
//     arithmetic (the max over the splits, the weighted sums `precise` in both, empty splits
//     skipped), so bitwise the same; with write_norm the first column group writes it to
//     binding 6 (the attention's output) for its k range.
//   EXL3_GEMV_FOUT (exl3_gemv[_sg][_f16[_dot]]_hin_fout, with EXL3_GEMV_HIN): the output
//     transform fused in too. Bindings 4-7: svh, bias, y, counters (one per 128-block of n, 0
//     between dispatches). After writing its partials, a workgroup counts itself on its
//     128-block's counter; the last of the block's splits · 8 / G workgroups to finish (stores,
//     buffer memory barrier, atomic; z is coherent) sums the block's partials in split order and
//     runs exl3_hadamard_out.comp's butterflies and output step for every row, in its order, so y
//     is bitwise that of the separate dispatch; it then resets the counter.
// All variants produce the same binary16 weights, widen them exactly to fp32 and accumulate in
// fp32 in the same order, so their outputs are bitwise identical (the tests check this). The
// dot products stay fp32 on purpose: f16vec2 FMAs with activations would halve the FMA count but
// round the activations and partial sums to 11 bits, far outside the 1e-5 relative error the
// GEMV is held to; the decode, not the FMAs, is what limits this kernel.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#ifdef EXL3_GEMV_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#endif
#ifdef EXL3_GEMV_F16
#extension GL_EXT_shader_explicit_arithmetic_types : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_spirv_intrinsics : require
// OpExecutionMode RoundingModeRTE (4462) for 16-bit floats (capability RoundingModeRTE, 4467).
spirv_execution_mode(extensions = ["SPV_KHR_float_controls"], capabilities = [4467], 4462, 16);
#define EXL3_DECODE_F16 1
#ifdef EXL3_GEMV_DOT
#define EXL3_DECODE_DOT 1
#endif
#endif
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 256;
layout(constant_id = 1) const uint K = 4;
layout(constant_id = 2) const uint CODEBOOK = 0;
layout(constant_id = 3) const uint G = 4;
layout(constant_id = 4) const uint R = 1;
layout(constant_id = 6) const uint PF = 1;  // 1: prefetch the next slab's words (register double buffer)
layout(constant_id = 7) const uint SA = 0;  // EXL3_GEMV_F16: 1 = one scalar binary16 add per weight (exl3_decode.glsl)

layout(binding = 0) readonly buffer Trellis { uint trellis[]; };
#ifdef EXL3_GEMV_FOUT
layout(binding = 2) coherent buffer Z { float z[]; };
layout(binding = 4) readonly buffer Svh { float svh[]; };
layout(binding = 5) readonly buffer B { float bias[]; };
layout(binding = 6) writeonly buffer Y { float y[]; };
layout(binding = 7) coherent buffer Counters { uint counters[]; };
#else
layout(binding = 2) writeonly buffer Z { float z[]; };
#endif
#ifdef EXL3_GEMV_HIN
layout(constant_id = 5) const uint XS = 512;  // floats of the shared activations, >= m · span
layout(binding = 1) readonly buffer X { float x[]; };
layout(binding = 3) readonly buffer Suh { float suh[]; };
#ifdef EXL3_GEMV_FOUT
layout(push_constant) uniform P { uint m, k, n, x_off, z_off, splits, in_f, out_f, y_off, has_bias; } p;
shared float fo[WG];
shared bool fo_last;
#else
// NM (id 8) / AM (id 9) (header): the RMSNorm of the residual stream x / the decode attention's
// split merge folded into the input transform.
layout(constant_id = 8) const uint NM = 0;
layout(constant_id = 9) const uint AM = 0;
layout(binding = 4) readonly buffer NormW { float norm_w[]; };
layout(binding = 5) readonly buffer Sums { float sums[]; };
layout(binding = 6) writeonly buffer NormOut { float norm_out[]; };
layout(push_constant) uniform P {
  uint m, k, n, x_off, z_off, splits, in_f, nw_off, no_off;
  float eps;
  uint write_norm, am_heads, am_head_dim, am_splits, am_ml_off;
} p;
shared float ns[NM != 0u ? R * 64u : 1u];  // the rows' block sums of squares
shared float ninv[NM != 0u ? R : 1u];      // the rows' 1 / rms
#endif
shared float xs[XS];
#else
layout(binding = 1) readonly buffer Xh { float xh[]; };
layout(push_constant) uniform P { uint m, k, n, xh_off, z_off, splits; } p;
#endif

#include "common.glsl"
#define EXL3_TRELLIS trellis
#include "exl3_decode.glsl"

const uint SLOTS = WG / 32u;
const uint GROUPS = K <= 6u ? 1u : 2u;         // window groups per lane
const uint PER_GROUP = 8u / GROUPS;            // windows per group
#ifdef EXL3_GEMV_SUBGROUP
shared float red[SLOTS * G * 16u];
#else
shared float red[WG * G * 2u];
#endif

// Lane's words of slab tk's G tiles (columns tg·G ..): words gw[q] .. gw[q] + 2 of each tile,
// cyclic within the tile.
void gemv_load(out uint wd[G][GROUPS][3], uint tk, uint tiles_n, uint tg, uint gw[GROUPS]) {
  const uint tile_words = 8u * K;
  uint base = (tk * tiles_n + tg * G) * tile_words;
  [[unroll]] for (uint gi = 0u; gi < G; ++gi)
    [[unroll]] for (uint q = 0u; q < GROUPS; ++q)
      [[unroll]] for (uint i = 0u; i < 3u; ++i) {
        uint wi = gw[q] + i;
        wd[gi][q][i] = trellis[base + gi * tile_words + (wi >= tile_words ? wi - tile_words : wi)];
      }
}

void main() {
  uint g = flat_group();
  uint tiles_n = p.n / 16u, tiles_k = p.k / 16u, groups_n = tiles_n / G;
  if (g >= groups_n * p.splits) return;  // uniform per workgroup
  uint tg = g % groups_n, split = g / groups_n;
#ifdef EXL3_GEMV_SUBGROUP
  uint inv = gl_SubgroupID * gl_SubgroupSize + gl_SubgroupInvocationID;
#else
  uint inv = gl_LocalInvocationID.x;
#endif
  uint t = inv & 31u, w = inv >> 5;
  uint per = (tiles_k + p.splits - 1u) / p.splits;
  uint tk0 = split * per, tk1 = min(tiles_k, tk0 + per);
  uint row2 = 2u * (t & 3u);
  const uint tile_words = 8u * K, stream_bits = 256u * K;
  // Word index and bit offset of each window group's first bit, relative to a tile's first word.
  uint gw[GROUPS], goff[GROUPS];
  [[unroll]] for (uint q = 0u; q < GROUPS; ++q) {
    uint start = ((8u * t + q * PER_GROUP + 1u) * K + stream_bits - 16u) % stream_bits;
    gw[q] = start >> 5;
    goff[q] = start & 31u;
  }

#ifdef EXL3_GEMV_HIN
  uint c0 = 16u * tk0, span = tk1 > tk0 ? 16u * (tk1 - tk0) : 0u;
  // xh of rows 0 .. m - 1 (the host runs this variant only with m <= R: one pass of the row
  // loop below), elements [c0, c0 + span), as exl3_hadamard_in.comp computes
  // it, with 3 barriers instead of its 14. span is a multiple of 128, so bits 0..6 of an index
  // into xs are the element's place in its 128-block. Step 0: the products x · suh (or 0 past
  // in_f) into xs; kept apart from the first add by the barrier, so no compiler can contract
  // them into an FMA (one rounding where exl3_hadamard_in has two). Step 1: unit u holds the 8
  // elements 8u .. 8u + 7 in registers, stages over bits 1, 2, 4. Step 2: unit u holds elements
  // 128 (u / 8) + (u % 8) + 8 j (j < 16), stages over bits 8 .. 64, then the scale. Every
  // element sees the same values in the same stages as in exl3_hadamard_in (own + partner for
  // the lower element, partner - own for the upper). The loops over stages count 0, 1, 2, ...
  // so that compilers unroll them and the register indices are constants (lavapipe did not
  // unroll `s <<= 1` loops and indexed the arrays at run time). Outside the row loop, which then
  // compiles as in the other variants (inside it, lavapipe ran the whole GEMV ~1.3x slower).
  uint items = min(R, p.m) * span;
#ifndef EXL3_GEMV_FOUT
  if (NM != 0u) {
    // The norm (header): the rows' block sums, then each row's 1 / rms as rms_norm.comp's BLK
    // path computes it (block sums in block order; the same expression); then every element of
    // the slab as x · inv · w, written to norm_out by the first column group where write_norm.
    uint nb = p.in_f / 128u, rows = min(R, p.m);
    for (uint i = inv; i < rows * nb; i += WG) ns[i] = sums[i];
    barrier();
    if (inv < rows) {
      float tot = 0.0;
      for (uint b = 0u; b < nb; ++b) tot += ns[inv * nb + b];
      precise float ri = 1.0 / sqrt(tot / float(p.in_f) + p.eps);
      ninv[inv] = ri;
    }
    barrier();
    bool wr = p.write_norm != 0u && tg == 0u;
    for (uint i = inv; i < items; i += WG) {
      uint j = i / span, c = c0 + (i - j * span);
      float v = 0.0;
      if (c < p.in_f) {
        float h = x[p.x_off + j * p.in_f + c] * ninv[j] * norm_w[p.nw_off + c];
        if (wr) norm_out[p.no_off + j * p.in_f + c] = h;
        v = h * suh[c];
      }
      xs[i] = v;
    }
  } else if (AM != 0u) {
    // The merge (header): attention_decode_merge.comp's arithmetic for each element of the slab,
    // written to norm_out by the first column group where write_norm.
    bool wr = p.write_norm != 0u && tg == 0u;
    for (uint i = inv; i < items; i += WG) {
      uint j = i / span, c = c0 + (i - j * span);
      float v = 0.0;
      if (c < p.in_f) {
        uint ph = j * p.am_heads + c / p.am_head_dim, di = c % p.am_head_dim, s0 = ph * p.am_splits;
        float mx = x[p.am_ml_off + 2u * s0];
        for (uint s = 1u; s < p.am_splits; ++s) mx = max(mx, x[p.am_ml_off + 2u * (s0 + s)]);
        precise float o = 0.0, l = 0.0;
        for (uint s = 0u; s < p.am_splits; ++s) {
          float ls = x[p.am_ml_off + 2u * (s0 + s) + 1u];
          if (ls == 0.0) continue;
          float wt = exp(x[p.am_ml_off + 2u * (s0 + s)] - mx);
          l += wt * ls;
          o += wt * x[(s0 + s) * p.am_head_dim + di];
        }
        float h = o / l;
        if (wr) norm_out[p.no_off + j * p.in_f + c] = h;
        v = h * suh[c];
      }
      xs[i] = v;
    }
  } else
#endif
  for (uint i = inv; i < items; i += WG) {
    uint j = i / span, c = c0 + (i - j * span);
    xs[i] = c < p.in_f ? x[p.x_off + j * p.in_f + c] * suh[c] : 0.0;
  }
  barrier();
  for (uint u = inv; u < items / 8u; u += WG) {
    float v[8];
    [[unroll]] for (uint e = 0u; e < 8u; ++e) v[e] = xs[8u * u + e];
    [[unroll]] for (uint bit = 0u; bit < 3u; ++bit)
      [[unroll]] for (uint e = 0u; e < 8u; ++e)
        if ((e & (1u << bit)) == 0u) {
          uint s = 1u << bit;
          float a = v[e], b = v[e | s];
          v[e] = a + b;
          v[e | s] = a - b;  // element with the bit set: partner (a) - own (b)
        }
    [[unroll]] for (uint e = 0u; e < 8u; ++e) xs[8u * u + e] = v[e];
  }
  barrier();
  for (uint u = inv; u < items / 16u; u += WG) {
    uint i0 = 128u * (u >> 3) + (u & 7u);
    float v[16];
    [[unroll]] for (uint e = 0u; e < 16u; ++e) v[e] = xs[i0 + 8u * e];
    [[unroll]] for (uint bit = 0u; bit < 4u; ++bit)
      [[unroll]] for (uint e = 0u; e < 16u; ++e)
        if ((e & (1u << bit)) == 0u) {
          uint s = 1u << bit;
          float a = v[e], b = v[e | s];
          v[e] = a + b;
          v[e | s] = a - b;
        }
    [[unroll]] for (uint e = 0u; e < 16u; ++e) xs[i0 + 8u * e] = v[e] * 0.0883883461356163;
  }
  barrier();
#endif

  for (uint r0 = 0u; r0 < p.m; r0 += R) {
    uint rc = min(R, p.m - r0);
    float acc[R][G][2];
    [[unroll]] for (uint j = 0u; j < R; ++j)
      [[unroll]] for (uint gi = 0u; gi < G; ++gi) acc[j][gi][0] = acc[j][gi][1] = 0.0;

    // The words of slab tk: G tiles' loads in flight per lane. With PF (id 6, default on) the
    // next slab's words are requested before this slab is decoded (a register double buffer), so
    // their latency overlaps the decode (H200: 58 registers against 40; up to 7-14% faster on
    // the large shapes in the kernel bench, no measurable change in the 8B decode).
    uint wn[G][GROUPS][3];
    uint tk = tk0 + w;
    if (PF != 0u && tk < tk1) gemv_load(wn, tk, tiles_n, tg, gw);
    for (; tk < tk1; tk += SLOTS) {
      uint wd[G][GROUPS][3];
      if (PF != 0u) {
        [[unroll]] for (uint gi = 0u; gi < G; ++gi)
          [[unroll]] for (uint q = 0u; q < GROUPS; ++q)
            [[unroll]] for (uint i = 0u; i < 3u; ++i) wd[gi][q][i] = wn[gi][q][i];
        if (tk + SLOTS < tk1) gemv_load(wn, tk + SLOTS, tiles_n, tg, gw);
      } else {
        gemv_load(wd, tk, tiles_n, tg, gw);
      }
      float xr[R][4];
#ifdef EXL3_GEMV_HIN
      uint xb = 16u * (tk - tk0) + row2;
      [[unroll]] for (uint j = 0u; j < R; ++j) {
        uint e = j < rc ? xb + j * span : xb;  // rows past m: any valid element, never stored
        xr[j][0] = xs[e];
        xr[j][1] = xs[e + 1u];
        xr[j][2] = xs[e + 8u];
        xr[j][3] = xs[e + 9u];
      }
#else
      uint xb = p.xh_off + r0 * p.k + 16u * tk + row2;
      [[unroll]] for (uint j = 0u; j < R; ++j) {
        uint e = j < rc ? xb + j * p.k : xb;  // rows past m: any valid element, never stored
        xr[j][0] = xh[e];
        xr[j][1] = xh[e + 1u];
        xr[j][2] = xh[e + 8u];
        xr[j][3] = xh[e + 9u];
      }
#endif
      [[unroll]] for (uint gi = 0u; gi < G; ++gi)
        [[unroll]] for (uint q = 0u; q < GROUPS; ++q) {
          uint a0 = funnel(wd[gi][q][0], wd[gi][q][1], goff[q]);
          uint a1 = funnel(wd[gi][q][1], wd[gi][q][2], goff[q]);
#ifdef EXL3_GEMV_F16
          [[unroll]] for (uint jj = 0u; jj < PER_GROUP; jj += 2u) {
            uint step = q * PER_GROUP + jj;  // even: steps step and step + 1 share the column half
            vec2 v = decode_pair(window(a0, a1, jj), window(a0, a1, jj + 1u));
            [[unroll]] for (uint j = 0u; j < R; ++j) {
              acc[j][gi][step >> 2] += xr[j][step & 3u] * v.x;
              acc[j][gi][step >> 2] += xr[j][(step & 3u) + 1u] * v.y;
            }
          }
#else
          [[unroll]] for (uint jj = 0u; jj < PER_GROUP; ++jj) {
            uint step = q * PER_GROUP + jj;  // 0..7: row 2(t&3) + (step&1) + 8((step>>1)&1), column half step>>2
            float v = decode_state(window(a0, a1, jj));
            [[unroll]] for (uint j = 0u; j < R; ++j) acc[j][gi][step >> 2] += xr[j][step & 3u] * v;
          }
#endif
        }
    }

    // Sum the 4 lanes of each column and the warps; outputs (row j, tile gi, column c).
    [[unroll]] for (uint j = 0u; j < R; ++j) {
#ifdef EXL3_GEMV_SUBGROUP
      [[unroll]] for (uint gi = 0u; gi < G; ++gi)
        [[unroll]] for (uint h = 0u; h < 2u; ++h) {
          float v = acc[j][gi][h];
          v += subgroupShuffleXor(v, 1u);
          v += subgroupShuffleXor(v, 2u);
          if ((t & 3u) == 0u) red[w * G * 16u + gi * 16u + h * 8u + (t >> 2)] = v;
        }
      barrier();
      if (inv < G * 16u && j < rc) {
        float s = 0.0;
        for (uint sl = 0u; sl < SLOTS; ++sl) s += red[sl * G * 16u + inv];
        z[p.z_off + split * p.m * p.n + (r0 + j) * p.n + 16u * tg * G + inv] = s;
      }
#else
      [[unroll]] for (uint gi = 0u; gi < G; ++gi)
        [[unroll]] for (uint h = 0u; h < 2u; ++h) red[(gi * 2u + h) * WG + inv] = acc[j][gi][h];
      barrier();
      if (inv < G * 16u && j < rc) {
        uint gi = inv / 16u, c = inv % 16u;
        uint col = (gi * 2u + (c >> 3)) * WG + 4u * (c & 7u);
        float s = 0.0;
        for (uint sl = 0u; sl < SLOTS; ++sl)
          s += (red[col + sl * 32u] + red[col + sl * 32u + 1u]) + (red[col + sl * 32u + 2u] + red[col + sl * 32u + 3u]);
        z[p.z_off + split * p.m * p.n + (r0 + j) * p.n + 16u * tg * G + inv] = s;
      }
#endif
      barrier();
    }
  }
#ifdef EXL3_GEMV_FOUT
  // The fused output transform (header): the last workgroup of this 128-block.
  memoryBarrierBuffer();
  barrier();
  uint hb = tg * G / 8u;
  if (inv == 0u) fo_last = atomicAdd(counters[hb], 1u) == p.splits * (8u / G) - 1u;
  barrier();
  if (!fo_last) return;  // uniform per workgroup
  memoryBarrierBuffer();
  uint ft = inv & 127u, c = hb * 128u + ft;
  for (uint r0 = 0u; r0 < p.m; r0 += WG / 128u) {
    uint r = r0 + inv / 128u;
    bool live = r < p.m;
    float zv = live ? z[p.z_off + r * p.n + c] : 0.0;  // split-k partials, added in split order
    for (uint s = 1u; s < p.splits; ++s) zv += live ? z[p.z_off + s * p.m * p.n + r * p.n + c] : 0.0;
    fo[inv] = zv;
    barrier();
    uint base = inv - ft;
    for (uint s = 1u; s < 128u; s <<= 1) {
      float a = fo[inv], b = fo[base + (ft ^ s)];
      barrier();
      fo[inv] = (ft & s) != 0u ? b - a : a + b;
      barrier();
    }
    if (live && c < p.out_f)
      y[p.y_off + r * p.out_f + c] = fo[inv] * 0.0883883461356163 * svh[c] + (p.has_bias != 0u ? bias[c] : 0.0);
    barrier();
  }
  if (inv == 0u) counters[hb] = 0u;
#endif
}
