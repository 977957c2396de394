// matmul_f16_coop3: y[m, out] = a[m, in] · Wᵀ (+ bias) on cooperative matrices, fp16 operands,
// fp32 accumulation: the third version of the prefill GEMM (TRELLIS_VULKAN_COOPMAT=3; "3" is
// this project's version number). Same operands, requirements and results (within fp32
// summation order) as matmul_f16_coop2, so the host substitutes one for the other; the same
// NV-compiled, KHR-rewritten module convention (specialization ids 10..15 give the A, B and
// accumulator shapes, all 16; matmul_f16_coop.comp's header explains it).
//
// This file is the body; each variant is a two-line matmul_f16_coop3_<name>.comp that defines
// the tile and includes it, so every variant is its own SPIR-V module (vk_backend.h's
// kCoop3Variants lists them, the benchmark times them all).
//
// Why not coop2 with other numbers. matmul_f16_coop2 ran at ~34 TFLOP/s on the H200 where
// cuBLAS runs ~600. Its SPIR-V keeps its 16 accumulators, its B fragments and its staging
// registers in Function-storage arrays indexed by loop counters (the loops are bounded by
// specialization constants, which glslang and spirv-opt cannot unroll), so the driver has to
// unroll and scalarise them itself or keep them in local memory, where every MMA would also
// read and write its accumulator. Here the tile is made of preprocessor constants and every loop
// that touches a cooperative matrix or a staging register is [[unroll]]: spirv-opt (glslc -O)
// unrolls them at build time and scalar replacement turns the arrays into SSA values, so the
// module handed to the driver holds no array of cooperative matrices and only two loops (the k
// steps, and the wrong-subgroup-size guard). spirv-opt leaves the split-out variables in Function
// storage (its load/store elimination skips modules with SPV_NV_cooperative_matrix), each
// addressed with constant indices only: plain locals for the driver. Tile sizes are therefore not specialization
// constants here (STYLE.md habit 3's usual rule); the variants are named by their parameters.
//
// Tile: WM x WN subgroups of 32 invocations (the host requires subgroup size 32: the staging
// loop counts are compile-time and assume WG = 32 WM WN), each owning FM x FN 16x16 fp32
// accumulators, i.e. a block of BM = 16 WM FM rows by BN = 16 WN FN columns; BK halves of k per
// step. Per step each invocation fetches its share of the next A and W slices from memory as
// 16-byte uvec4 loads into registers, the subgroups multiply the current slices from shared
// memory (all FM A and FN B fragments of a 16-wide k slice are loaded before the FM FN MMAs),
// then the fetched slices go to the other of two shared buffers: one barrier per step.
// HALF_SHARED picks the shared array type the cooperative loads read: 0 an uvec4 array (16-byte
// stores when staging, offsets and strides in uvec4 units: coop2's scheme), 1 a float16_t array
// (offsets in halves; staging is 8 two-byte stores per uvec4). Either way rows are BK + 8 halves
// (16-byte aligned, and a 16-byte row chunk of 8 consecutive rows lands on distinct banks).
// Epilogue: when the block lies inside y, there is no bias and y_off and out are multiples of 4
// (16-byte alignment for the cooperative store), each accumulator is stored straight to y;
// otherwise through a per-subgroup 16x16 fp32 tile in shared memory with bounds checks and the
// bias added in fp32 (coop2's epilogue).
// Requirements (the host runs matmul_f16_coop otherwise): in % 8 == 0, w_off and a_off
// multiples of 8 halves, a_stride a multiple of 8 (convert_f16 pads rows with zeros).
// Shared memory: 2 (BM + BN) (BK + 8) 2 bytes + WM WN KiB (VulkanBackend::coop3_shared_bytes).
// Grid: (ceil(m / BM), ceil(out / BN)), x over row blocks of `a` so the workgroups in flight
// share W slices. WG = 32 WM WN.
#extension GL_GOOGLE_include_directive : require
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_control_flow_attributes : require

#if !defined(WM) || !defined(WN) || !defined(FM) || !defined(FN) || !defined(BK) || !defined(HALF_SHARED)
#error "a matmul_f16_coop3 variant defines WM, WN, FM, FN, BK and HALF_SHARED before including this file"
#endif

const uint WG = 32u * WM * WN;
layout(local_size_x = WG) in;
#include "coop_dims.glsl"

layout(binding = 0) readonly buffer Wt { uvec4 w[]; };
layout(binding = 1) readonly buffer A { uvec4 a[]; };
layout(binding = 2) writeonly buffer Y { float y[]; };
layout(binding = 3) readonly buffer B { float bias[]; };
layout(push_constant) uniform P { uint m, in_f, out_f, w_off, a_off, a_stride, y_off, b_off, has_bias; } p;

const uint BM = WM * FM * 16u, BN = WN * FN * 16u;
const uint KV = BK / 8u;                      // uvec4 per operand row and step
const uint SROW = BK + 8u;                    // halves per shared row
const uint STAGE = (BM + BN) * SROW;          // halves per stage: A rows, then W rows
const uint LA = (BM * KV + WG - 1u) / WG;     // uvec4 fetched per invocation and step
const uint LB = (BN * KV + WG - 1u) / WG;
#if HALF_SHARED
const uint UNIT = 1u;                         // halves per shared element
shared float16_t sh[2u * STAGE];
#else
const uint UNIT = 8u;
shared uvec4 sh[2u * STAGE / 8u];
#endif
shared float cs_[WM * WN * 256u];

#define ACC fcoopmatNV<32, gl_ScopeSubgroup, kCm, kCn>
#define FRAG_A fcoopmatNV<16, gl_ScopeSubgroup, kAm, kAk>
#define FRAG_B fcoopmatNV<16, gl_ScopeSubgroup, kBk, kBn>

void fetch(uint k0, uint row0, uint col0, inout uvec4 ra[LA], inout uvec4 rb[LB]) {
  [[unroll]] for (uint l = 0u; l < LA; ++l) {
    uint e = gl_LocalInvocationID.x + WG * l, r = e / KV, k = k0 + 8u * (e % KV);
    ra[l] = (e < BM * KV && row0 + r < p.m && k < p.in_f) ? a[(p.a_off + (row0 + r) * p.a_stride + k) >> 3] : uvec4(0u);
  }
  [[unroll]] for (uint l = 0u; l < LB; ++l) {
    uint e = gl_LocalInvocationID.x + WG * l, r = e / KV, k = k0 + 8u * (e % KV);
    rb[l] = (e < BN * KV && col0 + r < p.out_f && k < p.in_f) ? w[(p.w_off + (col0 + r) * p.in_f + k) >> 3] : uvec4(0u);
  }
}

// Shared row `row` (A rows 0 .. BM - 1, then W rows) of `stage`, 8 halves from half `k`.
void put(uint stage, uint row, uint k, uvec4 v) {
  uint h = stage * STAGE + row * SROW + k;
#if HALF_SHARED
  f16vec2 q0 = unpackFloat2x16(v.x), q1 = unpackFloat2x16(v.y), q2 = unpackFloat2x16(v.z), q3 = unpackFloat2x16(v.w);
  sh[h] = q0.x; sh[h + 1u] = q0.y; sh[h + 2u] = q1.x; sh[h + 3u] = q1.y;
  sh[h + 4u] = q2.x; sh[h + 5u] = q2.y; sh[h + 6u] = q3.x; sh[h + 7u] = q3.y;
#else
  sh[h / 8u] = v;
#endif
}

void stash(uint stage, uvec4 ra[LA], uvec4 rb[LB]) {
  [[unroll]] for (uint l = 0u; l < LA; ++l) {
    uint e = gl_LocalInvocationID.x + WG * l;
    if (e < BM * KV) put(stage, e / KV, 8u * (e % KV), ra[l]);
  }
  [[unroll]] for (uint l = 0u; l < LB; ++l) {
    uint e = gl_LocalInvocationID.x + WG * l;
    if (e < BN * KV) put(stage, BM + e / KV, 8u * (e % KV), rb[l]);
  }
}

void main() {
  uint row0 = gl_WorkGroupID.x * BM, col0 = gl_WorkGroupID.y * BN;
  uint sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
  if (gl_NumSubgroups != WM * WN) {
    // The block assumes 32-wide subgroups; another size would leave parts of it unwritten.
    // Make that loud instead (tests compare every element).
    for (uint e = gl_LocalInvocationID.x; e < BM * BN; e += WG) {
      uint row = row0 + e / BN, col = col0 + e % BN;
      if (row < p.m && col < p.out_f) y[p.y_off + row * p.out_f + col] = uintBitsToFloat(0x7FC00000u);
    }
    return;
  }
  uint wm = sg / WN, wn = sg % WN;
  uint arow = wm * FM * 16u, brow = BM + wn * FN * 16u;  // the subgroup's first shared rows

  ACC acc[FM * FN];
  [[unroll]] for (uint i = 0u; i < FM * FN; ++i) acc[i] = ACC(0.0);

  uvec4 ra[LA], rb[LB];
  fetch(0u, row0, col0, ra, rb);
  stash(0u, ra, rb);
  barrier();
  uint steps = (p.in_f + BK - 1u) / BK;
  for (uint s = 0u; s < steps; ++s) {
    uint cur = s & 1u;
    bool more = s + 1u < steps;
    if (more) fetch((s + 1u) * BK, row0, col0, ra, rb);  // in flight during the MMAs
    uint base = cur * STAGE;
    [[unroll]] for (uint kk = 0u; kk < BK; kk += 16u) {
      FRAG_A fa[FM];
      FRAG_B fb[FN];
      [[unroll]] for (uint i = 0u; i < FM; ++i)
        coopMatLoadNV(fa[i], sh, (base + (arow + i * 16u) * SROW + kk) / UNIT, SROW / UNIT, false);
      // B[k][n] = W[n][k]: the W slice is stored n-major, i.e. B column-major.
      [[unroll]] for (uint j = 0u; j < FN; ++j)
        coopMatLoadNV(fb[j], sh, (base + (brow + j * 16u) * SROW + kk) / UNIT, SROW / UNIT, true);
      [[unroll]] for (uint i = 0u; i < FM; ++i)
        [[unroll]] for (uint j = 0u; j < FN; ++j) acc[i * FN + j] = coopMatMulAddNV(fa[i], fb[j], acc[i * FN + j]);
    }
    // The other stage was last read in step s - 1, which every invocation finished before the
    // barrier that ended it.
    if (more) stash(cur ^ 1u, ra, rb);
    barrier();
  }

  uint r0 = row0 + arow, c0 = col0 + wn * FN * 16u;  // the subgroup's first y row and column
  bool direct = p.has_bias == 0u && row0 + BM <= p.m && col0 + BN <= p.out_f && (p.y_off & 3u) == 0u &&
                (p.out_f & 3u) == 0u;
  if (direct) {
    [[unroll]] for (uint i = 0u; i < FM; ++i)
      [[unroll]] for (uint j = 0u; j < FN; ++j)
        coopMatStoreNV(acc[i * FN + j], y, p.y_off + (r0 + i * 16u) * p.out_f + c0 + j * 16u, p.out_f, false);
    return;
  }
  uint cs0 = sg * 256u;
  [[unroll]] for (uint i = 0u; i < FM; ++i) {
    [[unroll]] for (uint j = 0u; j < FN; ++j) {
      coopMatStoreNV(acc[i * FN + j], cs_, cs0, 16u, false);
      subgroupMemoryBarrierShared();
      subgroupBarrier();
      [[unroll]] for (uint t = 0u; t < 8u; ++t) {  // unrolled so that acc[] keeps constant indices
        uint e = lane + 32u * t;
        uint row = r0 + i * 16u + e / 16u, col = c0 + j * 16u + e % 16u;
        if (row < p.m && col < p.out_f) {
          float b = p.has_bias != 0u ? bias[p.b_off + col] : 0.0;
          y[p.y_off + row * p.out_f + col] = cs_[cs0 + e] + b;
        }
      }
      subgroupBarrier();  // the tile is read before the next store overwrites it
    }
  }
}
