// attention_flash_coop: prefill attention on cooperative matrices (tensor cores), fp16 Q, K, V and
// P, fp32 scores, softmax and output accumulation. Same contract as attention_flash.comp and the
// CPU reference (backends/cpu/attention.h): row r, head h sees cache rows first(r)..positions[r],
// first(r) = 0 or positions[r] - window + 1 with a sliding window; kv head h / group; q and out
// fp32 (rows of n_heads * D), the caches fp16 (rows of kv_width halves).
//
// Why: attention_flash runs S = Q·Kᵀ and P·V on fp32 ALUs (~4 TFLOP/s on the H200). Here both
// products are 16x16x16 fp16 MMAs with fp32 accumulation (CUDA's cuda_attention_flash.cu shape:
// Q and P rounded to fp16, relative 2^-11 each, everything else fp32). Same module conventions as
// matmul_f16_coop3 (written against GL_NV_cooperative_matrix, rewritten to KHR by vk_spirv.cpp;
// specialization ids 10..15 give the A, B and accumulator shapes, all 16; the head size D is the
// preprocessor constant HEAD_DIM of each attention_flash_coop_d<D>.comp and every loop that touches a
// cooperative matrix is [[unroll]], so the driver sees no array of cooperative matrices).
//
// Block: 4 subgroups of 32 (WG 128; the host requires subgroup size 32). A workgroup owns BR = 64
// consecutive queries of one kv head's flat query list, query f = row f / group, head kv head *
// group + f % group (with GQA 4: 16 rows x 4 heads share every K/V tile); subgroup s owns queries
// 16 s .. 16 s + 15. Its Q (scaled by scale·log2 e, RNE to fp16) stays in registers as D / 16 A
// fragments; its output as D / 16 fp32 accumulators. Keys are streamed from the block's smallest
// first(r) to its largest positions[r] in tiles of BC = 64. Per tile:
//   1. the K tile (fetched into registers during the previous P·V) is stored to `kvs`; barrier;
//      the V tile's fetch is issued;
//   2. each subgroup: S = Q·Kᵀ (D / 16 x 4 MMAs), stored to its fp32 `ss` rows; the online softmax
//      on its 16 rows, 2 lanes a row, 32 keys a lane: masked keys (outside [first, last] of the
//      query: causal, window, rows past the end) get -3e38, the tile max with the row's partner
//      lane by one shuffle; P = exp2(S - m) rounded (RNE, subnormals kept) to fp16 into `ps`;
//      running sums per lane in fp32 (of the unrounded P);
//   3. rescaling: the reference max m of a row only moves when the tile's max exceeds it by more
//      than `rescale` (log2 units; 8 by default, so P <= 256 in fp16; 0 = every time it grows),
//      FA3's lazy rescaling: the result is the same softmax. When any row of the subgroup moves
//      (rare after the first tiles), the accumulators go through `ss` in 16 x 64 chunks, rows
//      are multiplied by exp2(m_old - m_new), and they are loaded back. The first keys of a row
//      set m without rescaling (its accumulators and sum are still 0);
//   4. barrier (K consumed); the V tile is stored to `kvs`; the next K tile's fetch is issued;
//      barrier; O += P·V (4 x D / 16 MMAs); barrier (V consumed).
// A subgroup whose queries see no key of the tile skips steps 2, 3 and its P·V (it still takes
// part in the barriers). At the end O / l goes out through `ss`, rows past the end unwritten.
// Fragment layouts: Q rows and K, V tiles [row][d] in uvec4 units, rows D + 8 halves (16-byte
// aligned, 8 rows of a 16-byte column on distinct banks): Q A row-major, K B column-major (B[d][j]
// = K[j][d]), V B row-major; S and the output chunks row-major fp32, rows BC + 4 floats; P A
// row-major, rows BC + 8 halves.
// Requirements (the host keeps attention_flash otherwise): D = 64 or 128, kc_off, vc_off and
// kv_width multiples of 8 halves (the tiles are fetched as uvec4), subgroup size 32, shuffles.
// Shared memory: 2 BC (D + 8) + 4 * 64 (BC + 4) + 2 * 64 (BC + 8) + 12 BR bytes (44800 at D =
// 128, 36608 at D = 64; VulkanBackend::flash_coop_shared_bytes).
// Grid: flat, q_blocks x n_kv_heads workgroups, kv head fastest; the last query blocks (longest
// key ranges) first.
// COOP_EMULATION (attention_flash_coop_emu_d<D>.comp, a test module): the cooperative-matrix
// operations and subgroup barriers are replaced by plain GLSL over workgroup-uniform control flow
// (coop_emulation.glsl), so that this body runs on devices without cooperative matrices.
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#extension GL_EXT_control_flow_attributes : require
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
#define SUBGROUP_COUNT gl_NumSubgroups
#define EMULATION_UNIFORM(cond) (cond)
#endif

#if !defined(HEAD_DIM) || (HEAD_DIM != 64 && HEAD_DIM != 128)
#error "an attention_flash_coop variant defines HEAD_DIM (64 or 128) before including this file"
#endif

const uint D = HEAD_DIM;
const uint WG = 128u, BR = 64u, BC = 64u;
layout(local_size_x = WG) in;
#include "coop_dims.glsl"
#include "common.glsl"

layout(binding = 0) readonly buffer Q { float q[]; };
layout(binding = 1) readonly buffer Kc { uvec4 kc[]; };
layout(binding = 2) readonly buffer Vc { uvec4 vc[]; };
layout(binding = 3) readonly buffer Pos { uint pos[]; };
layout(binding = 4) writeonly buffer Out { float out_[]; };
layout(push_constant) uniform P {
  uint rows, n_heads, group, kv_width, window;
  uint q_off, kc_off, vc_off, pos_off, out_off;  // elements (floats, halves, uints, floats)
  float scale;
  float rescale;   // reference-max slack in log2 units, 0..15
  uint q_blocks;   // ceil(rows * group / BR)
} p;

const float kNegBig = -3.0e38;
const float kLog2e = 1.4426950408889634;
const uint NF = D / 16u;        // fragments along head_dim (Q k steps, O columns)
const uint KF = BC / 16u;       // fragments along a key tile (S columns, P·V k steps)
const uint C8 = D / 8u;         // uvec4 per Q, K, V row
const uint SROW8 = C8 + 1u;     // uvec4 per staged row (D + 8 halves)
const uint LD = BC * C8 / WG;   // uvec4 fetched per invocation and tile
const uint SST = BC + 4u;       // floats per score row
const uint PST8 = BC / 8u + 1u; // uvec4 per P row (BC + 8 halves)
const uint OCH = NF / KF;       // 16 x BC output chunks through `ss`

shared uvec4 kvs[BC * SROW8];        // Q at the start, then K and V tiles in turn
shared float ss[4u * 16u * SST];     // per subgroup: 16 score rows / output chunk rows
shared uvec4 ps[4u * 16u * PST8];    // per subgroup: 16 rows of P, fp16
shared float row_corr[BR];           // per query: this tile's rescale factor; at the end 1 / l
shared uint row_first[BR], row_last[BR];  // key range of each query; first > last: none
#ifdef COOP_EMULATION
EMU_HALF_MATRIX(kvs)
EMU_HALF_MATRIX(ps)
EMU_FLOAT_MATRIX(ss)
#endif

// binary16 bits of x in [0, 65504) rounded to nearest even, subnormals kept (no dependence on
// the driver's conversion or its fp16 denormal mode).
uint f16_bits_nonneg(float x) {
  uint b = floatBitsToUint(x);
  return x < 6.103515625e-05 ? uint(roundEven(x * 16777216.0)) : ((b + 0xFFFu + ((b >> 13) & 1u)) >> 13) - 0x1C000u;
}
uint pack_p(float a, float b) { return f16_bits_nonneg(a) | (f16_bits_nonneg(b) << 16); }
uint pack_q(float a, float b) { return f32_to_f16_rne(a) | (f32_to_f16_rne(b) << 16); }

// Cache rows k0 .. k0 + BC - 1 of kv head kvh (zeros past hi) into registers: invocation t holds
// uvec4 t + WG l of the tile (row (t + WG l) / C8, column % C8).
#define DEFINE_FETCH(NAME, BUF, OFF)                                             \
  void NAME(uint k0, uint hi, uint kvh, inout uvec4 st[LD]) {                    \
    [[unroll]] for (uint l = 0u; l < LD; ++l) {                                  \
      uint e = gl_LocalInvocationID.x + WG * l, key = k0 + e / C8;               \
      uvec4 v = uvec4(0u);                                                       \
      if (key <= hi) v = BUF[(p.OFF + key * p.kv_width + kvh * D) / 8u + e % C8]; \
      st[l] = v;                                                                 \
    }                                                                            \
  }
DEFINE_FETCH(fetch_k, kc, kc_off)
DEFINE_FETCH(fetch_v, vc, vc_off)

void stash(uvec4 st[LD]) {
  [[unroll]] for (uint l = 0u; l < LD; ++l) {
    uint e = gl_LocalInvocationID.x + WG * l;
    kvs[(e / C8) * SROW8 + e % C8] = st[l];
  }
}

vec4 ss4(uint i) { return vec4(ss[i], ss[i + 1u], ss[i + 2u], ss[i + 3u]); }

// out element offset of flat query f of kv head kvh.
uint out_row(uint f, uint kvh) { return ((f / p.group) * p.n_heads + kvh * p.group + f % p.group) * D; }

void main() {
  uint t = gl_LocalInvocationID.x, sg = SUBGROUP_ID, lane = SUBGROUP_LANE;
  uint n_kv = p.n_heads / p.group;
  uint g = flat_group();
  if (g >= p.q_blocks * n_kv) return;  // uniform per workgroup
  uint qb = p.q_blocks - 1u - g / n_kv, kvh = g % n_kv;
  uint nq = p.rows * p.group, f0 = qb * BR;
  if (SUBGROUP_COUNT != 4u) {
    // The block assumes 32-wide subgroups; another size would leave parts of it unwritten.
    // Make that loud instead (tests compare every element).
    for (uint e = t; e < BR * D; e += WG)
      if (f0 + e / D < nq) out_[p.out_off + out_row(f0 + e / D, kvh) + e % D] = uintBitsToFloat(0x7FC00000u);
    return;
  }

  // Key ranges and Q (scaled into log2 units, fp16) of the block's queries.
  if (t < BR) {
    uint f = f0 + t, first = 1u, last = 0u;
    if (f < nq) {
      last = pos[p.pos_off + f / p.group];
      first = (p.window > 0u && last + 1u > p.window) ? last + 1u - p.window : 0u;
    }
    row_first[t] = first;
    row_last[t] = last;
  }
  float qscale = p.scale * kLog2e;
  [[unroll]] for (uint l = 0u; l < BR * C8 / WG; ++l) {
    uint e = t + WG * l, ql = e / C8, c = e % C8, f = f0 + ql;
    uvec4 v = uvec4(0u);
    if (f < nq) {
      uint b = p.q_off + out_row(f, kvh) + 8u * c;
      v = uvec4(pack_q(q[b] * qscale, q[b + 1u] * qscale), pack_q(q[b + 2u] * qscale, q[b + 3u] * qscale),
                pack_q(q[b + 4u] * qscale, q[b + 5u] * qscale), pack_q(q[b + 6u] * qscale, q[b + 7u] * qscale));
    }
    kvs[ql * SROW8 + c] = v;
  }
  barrier();
  uint lo = 0xFFFFFFFFu, hi = 0u, sg_lo = 0xFFFFFFFFu, sg_hi = 0u;
  for (uint v = 0u; v < BR; ++v) {
    uint a = row_first[v], b = row_last[v];
    if (a > b) continue;
    lo = min(lo, a);
    hi = max(hi, b);
    if (v / 16u == sg) {
      sg_lo = min(sg_lo, a);
      sg_hi = max(sg_hi, b);
    }
  }
  // Softmax roles: lane (row, h) = (lane / 2, lane % 2) of the subgroup's 16 queries.
  uint row = lane >> 1, h = lane & 1u, me = sg * 16u + row;
  uint my_first = row_first[me], my_last = row_last[me];
  FRAG_A qf[NF];
  [[unroll]] for (uint kk = 0u; kk < NF; ++kk) coopMatLoadNV(qf[kk], kvs, sg * 16u * SROW8 + 2u * kk, SROW8, false);
  ACC o[NF];
  [[unroll]] for (uint n = 0u; n < NF; ++n) o[n] = ACC(0.0);
  float m_ref = kNegBig, l_part = 0.0;
  uvec4 st[LD];
  fetch_k(lo, hi, kvh, st);
  barrier();  // Q fragments loaded before the first K tile overwrites them

  uint sbase = sg * 16u * SST, pbase = sg * 16u * PST8;
  for (uint k0 = lo; k0 <= hi; k0 += BC) {
    stash(st);  // K
    barrier();
    fetch_v(k0, hi, kvh, st);  // in flight during S and the softmax
    bool busy = EMULATION_UNIFORM(k0 <= sg_hi && k0 + BC > sg_lo);  // uniform per subgroup
    if (busy) {
      ACC s[KF];
      [[unroll]] for (uint j = 0u; j < KF; ++j) s[j] = ACC(0.0);
      [[unroll]] for (uint kk = 0u; kk < NF; ++kk) {
        // B[d][j] = K[j][d]: the K tile is stored key-major, i.e. B column-major.
        FRAG_B kb[KF];
        [[unroll]] for (uint j = 0u; j < KF; ++j) coopMatLoadNV(kb[j], kvs, 16u * j * SROW8 + 2u * kk, SROW8, true);
        [[unroll]] for (uint j = 0u; j < KF; ++j) s[j] = coopMatMulAddNV(qf[kk], kb[j], s[j]);
      }
      [[unroll]] for (uint j = 0u; j < KF; ++j) coopMatStoreNV(s[j], ss, sbase + 16u * j, SST, false);
      subgroupMemoryBarrierShared();
      subgroupBarrier();

      // Lane h of a row takes key octets 4 (j / 2) + 2 h + j % 2, j < 4 (a quarter subgroup's
      // 16-byte reads then fall on distinct banks).
      vec4 sv[2u * KF];
      float mt = kNegBig;
      [[unroll]] for (uint j = 0u; j < KF; ++j) {
        uint oc = 4u * (j / 2u) + 2u * h + (j % 2u), key = k0 + 8u * oc;
        vec4 a = ss4(sbase + row * SST + 8u * oc), b = ss4(sbase + row * SST + 8u * oc + 4u);
        [[unroll]] for (uint i = 0u; i < 4u; ++i) {
          a[i] = (key + i >= my_first && key + i <= my_last) ? a[i] : kNegBig;
          b[i] = (key + 4u + i >= my_first && key + 4u + i <= my_last) ? b[i] : kNegBig;
        }
        sv[2u * j] = a;
        sv[2u * j + 1u] = b;
        mt = max(mt, max(max(max(a.x, a.y), max(a.z, a.w)), max(max(b.x, b.y), max(b.z, b.w))));
      }
      mt = max(mt, subgroupShuffleXor(mt, 1u));
      float m_new = max(m_ref, mt), corr = 1.0;
      if (m_ref == kNegBig) {
        m_ref = m_new;  // the row's first keys (or still none): nothing accumulated to rescale
      } else if (m_new > m_ref + p.rescale) {
        corr = exp2(m_ref - m_new);
        m_ref = m_new;
      }
      // With no key seen yet every score of the row is masked: exp2(-3e38 - 0) = 0.
      float mr = m_ref == kNegBig ? 0.0 : m_ref, sum = 0.0;
      [[unroll]] for (uint j = 0u; j < KF; ++j) {
        uint oc = 4u * (j / 2u) + 2u * h + (j % 2u);
        vec4 pa = exp2(sv[2u * j] - mr), pb = exp2(sv[2u * j + 1u] - mr);
        sum += (pa.x + pa.y + pa.z + pa.w) + (pb.x + pb.y + pb.z + pb.w);
        ps[pbase + row * PST8 + oc] = uvec4(pack_p(pa.x, pa.y), pack_p(pa.z, pa.w), pack_p(pb.x, pb.y), pack_p(pb.z, pb.w));
      }
      l_part = l_part * corr + sum;
      if (h == 0u) row_corr[me] = corr;
      subgroupMemoryBarrierShared();
      subgroupBarrier();

      bool rescale = false;
      [[unroll]] for (uint i = 0u; i < 16u; ++i) rescale = rescale || row_corr[sg * 16u + i] != 1.0;
      if (EMULATION_UNIFORM(rescale)) {  // uniform per subgroup: every lane read the same 16 factors
        [[unroll]] for (uint c = 0u; c < OCH; ++c) {
          [[unroll]] for (uint j = 0u; j < KF; ++j) coopMatStoreNV(o[c * KF + j], ss, sbase + 16u * j, SST, false);
          subgroupMemoryBarrierShared();
          subgroupBarrier();
          [[unroll]] for (uint i = 0u; i < 16u * BC / 128u; ++i) {
            uint e = lane + 32u * i, r = e / (BC / 4u), a = sbase + r * SST + 4u * (e % (BC / 4u));
            float x = row_corr[sg * 16u + r];
            ss[a] *= x;
            ss[a + 1u] *= x;
            ss[a + 2u] *= x;
            ss[a + 3u] *= x;
          }
          subgroupMemoryBarrierShared();
          subgroupBarrier();
          [[unroll]] for (uint j = 0u; j < KF; ++j) coopMatLoadNV(o[c * KF + j], ss, sbase + 16u * j, SST, false);
          subgroupMemoryBarrierShared();
          subgroupBarrier();  // loaded before the next chunk or tile overwrites `ss`
        }
      }
    }
    barrier();  // every subgroup is done with the K tile
    stash(st);  // V
    if (k0 + BC <= hi) fetch_k(k0 + BC, hi, kvh, st);  // in flight during P·V
    barrier();
    if (busy) {
      [[unroll]] for (uint kk = 0u; kk < KF; ++kk) {
        FRAG_A pa;
        coopMatLoadNV(pa, ps, pbase + 2u * kk, PST8, false);
        FRAG_B vb[NF];
        [[unroll]] for (uint n = 0u; n < NF; ++n) coopMatLoadNV(vb[n], kvs, 16u * kk * SROW8 + 2u * n, SROW8, false);
        [[unroll]] for (uint n = 0u; n < NF; ++n) o[n] = coopMatMulAddNV(pa, vb[n], o[n]);
      }
    }
    barrier();  // V consumed before the next K tile is stored
  }

  // O / l through `ss`, 16 x BC at a time; 1 / l of each query in row_corr.
  float l = l_part + subgroupShuffleXor(l_part, 1u);
  if (h == 0u) row_corr[me] = l > 0.0 ? 1.0 / l : 0.0;
  subgroupMemoryBarrierShared();
  subgroupBarrier();
  [[unroll]] for (uint c = 0u; c < OCH; ++c) {
    [[unroll]] for (uint j = 0u; j < KF; ++j) coopMatStoreNV(o[c * KF + j], ss, sbase + 16u * j, SST, false);
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    [[unroll]] for (uint i = 0u; i < 16u * BC / 128u; ++i) {
      uint e = lane + 32u * i, r = e / (BC / 4u), c4 = e % (BC / 4u), f = f0 + sg * 16u + r;
      if (f < nq) {
        vec4 x = ss4(sbase + r * SST + 4u * c4) * row_corr[sg * 16u + r];
        uint b = p.out_off + out_row(f, kvh) + c * BC + 4u * c4;
        out_[b] = x.x;
        out_[b + 1u] = x.y;
        out_[b + 2u] = x.z;
        out_[b + 3u] = x.w;
      }
    }
    subgroupBarrier();  // read before the next chunk overwrites `ss`
  }
}
