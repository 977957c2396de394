#version 450
// matmul_f16_coop2: y[m, out] = a[m, in] · Wᵀ (+ bias) on cooperative matrices, fp16 operands,
// fp32 accumulation: the second version of matmul_f16_coop (TRELLIS_VULKAN_COOPMAT=2; "2" is
// this project's version number, not VK_NV_cooperative_matrix2). Same operands, results within
// the same rounding (fp32 sums of exact fp16 products, another order), the same NV-compiled,
// KHR-rewritten module convention (specialization ids 10..15 give A, B and accumulator shapes;
// matmul_f16_coop.comp's header explains it).
//
// What changed against matmul_f16_coop and why (it ran at 15 TFLOP/s on the H200, below the
// scalar tiled shader):
//   * Staging: v1 read operands as 4-byte words and wrote shared memory one fp16 at a time (64
//     two-byte stores per invocation per k step); here each invocation moves 8 halves at a time,
//     a 16-byte uvec4 load into a 16-byte uvec4 store, 8x fewer memory instructions. Shared
//     memory is a uvec4 array that the cooperative loads read as fp16 (element and stride in
//     uvec4 units; glslang offers coopMatLoadNV on uvec4 arrays, not on f16vec4).
//   * Double-buffered shared memory: slice k + 1 is fetched into registers while slice k is
//     multiplied, then written to the other buffer; one barrier per k step instead of two.
//   * Tile shape as specialization constants: WM x WN subgroups, each owning FM x FN 16x16
//     accumulators (a 16 FM x 16 FN block), BK halves of k per step; the host has a table of
//     shapes (VulkanBackend's kCoop2Shapes) and benchmarks all that fit.
//   * Grid order: workgroup x runs over row blocks of `a`, y over column blocks of W, so the
//     workgroups in flight share one W slice (read from memory once) and `a` (m x in, the small
//     operand at prefill sizes) stays in L2.
// Requirements (the host falls back to matmul_f16_coop otherwise): in % 8 == 0, w_off and
// a_off multiples of 8 halves, a_stride a multiple of 8 (convert_f16 pads rows with zeros).
// Shared memory: 2 stages x (BM + BN) x (BK + 8) x 2 bytes + WM WN x 1 KiB of output staging.
// Results leave through a per-subgroup 16x16 fp32 tile (bounds and bias in fp32).
// Grid: (ceil(m / BM), ceil(out / BN)). WG = WM x WN x subgroup size.
#extension GL_GOOGLE_include_directive : require
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 128;
layout(constant_id = 1) const uint WM = 2;   // subgroups along m
layout(constant_id = 2) const uint WN = 2;   // subgroups along out
layout(constant_id = 3) const uint FM = 4;   // 16-row fragments per subgroup
layout(constant_id = 4) const uint FN = 4;   // 16-column fragments per subgroup
layout(constant_id = 5) const uint BK = 32;  // k per step, a multiple of 16
#include "coop_dims.glsl"
#include "common.glsl"

layout(binding = 0) readonly buffer Wt { uvec4 w[]; };
layout(binding = 1) readonly buffer A { uvec4 a[]; };
layout(binding = 2) writeonly buffer Y { float y[]; };
layout(binding = 3) readonly buffer B { float bias[]; };
layout(push_constant) uniform P { uint m, in_f, out_f, w_off, a_off, a_stride, y_off, b_off, has_bias; } p;

const uint BM = WM * FM * 16u, BN = WN * FN * 16u;
const uint KV = BK / 8u;                           // uvec4 per operand row and step
const uint SROW = (BK + 8u) / 8u;                  // uvec4 per shared row (8 halves of padding)
const uint STAGE = (BM + BN) * SROW;               // uvec4 per stage: A rows, then W rows
const uint LA = (BM * KV + WG - 1u) / WG;          // uvec4 loads per invocation and step
const uint LB = (BN * KV + WG - 1u) / WG;
shared uvec4 sh[2u * STAGE];
shared float cs_[WM * WN * 256u];

void fetch(uint k0, uint row0, uint col0, inout uvec4 ra[LA], inout uvec4 rb[LB]) {
  for (uint l = 0u; l < LA; ++l) {
    uint e = gl_LocalInvocationID.x + WG * l, r = e / KV, k = k0 + 8u * (e % KV);
    ra[l] = (e < BM * KV && row0 + r < p.m && k < p.in_f) ? a[(p.a_off + (row0 + r) * p.a_stride + k) >> 3] : uvec4(0u);
  }
  for (uint l = 0u; l < LB; ++l) {
    uint e = gl_LocalInvocationID.x + WG * l, r = e / KV, k = k0 + 8u * (e % KV);
    rb[l] = (e < BN * KV && col0 + r < p.out_f && k < p.in_f) ? w[(p.w_off + (col0 + r) * p.in_f + k) >> 3] : uvec4(0u);
  }
}

void stash(uint stage, uvec4 ra[LA], uvec4 rb[LB]) {
  for (uint l = 0u; l < LA; ++l) {
    uint e = gl_LocalInvocationID.x + WG * l;
    if (e >= BM * KV) break;
    sh[stage * STAGE + (e / KV) * SROW + e % KV] = ra[l];
  }
  for (uint l = 0u; l < LB; ++l) {
    uint e = gl_LocalInvocationID.x + WG * l;
    if (e >= BN * KV) break;
    sh[stage * STAGE + (BM + e / KV) * SROW + e % KV] = rb[l];
  }
}

void main() {
  uint row0 = gl_WorkGroupID.x * BM, col0 = gl_WorkGroupID.y * BN;
  uint sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
  if (gl_NumSubgroups != WM * WN) {
    // The host sized WG for WM x WN subgroups; another subgroup size would leave parts of the
    // block unwritten. Make that loud instead (tests compare every element).
    for (uint e = gl_LocalInvocationID.x; e < BM * BN; e += WG) {
      uint row = row0 + e / BN, col = col0 + e % BN;
      if (row < p.m && col < p.out_f) y[p.y_off + row * p.out_f + col] = uintBitsToFloat(0x7FC00000u);
    }
    return;
  }
  uint wm = sg / WN, wn = sg % WN;

  fcoopmatNV<32, gl_ScopeSubgroup, kCm, kCn> acc[FM * FN];
  for (uint i = 0u; i < FM * FN; ++i) acc[i] = fcoopmatNV<32, gl_ScopeSubgroup, kCm, kCn>(0.0);

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
    for (uint kk = 0u; kk < BK; kk += 16u) {
      fcoopmatNV<16, gl_ScopeSubgroup, kBk, kBn> fb[FN];
      // B[k][n] = W[n][k]: the W slice is stored n-major, i.e. B column-major.
      for (uint j = 0u; j < FN; ++j)
        coopMatLoadNV(fb[j], sh, base + (BM + wn * FN * 16u + j * 16u) * SROW + kk / 8u, SROW, true);
      for (uint i = 0u; i < FM; ++i) {
        fcoopmatNV<16, gl_ScopeSubgroup, kAm, kAk> fa;
        coopMatLoadNV(fa, sh, base + (wm * FM * 16u + i * 16u) * SROW + kk / 8u, SROW, false);
        for (uint j = 0u; j < FN; ++j) acc[i * FN + j] = coopMatMulAddNV(fa, fb[j], acc[i * FN + j]);
      }
    }
    // The other stage was last read in step s - 1, which every invocation finished before the
    // barrier that ended it.
    if (more) stash(cur ^ 1u, ra, rb);
    barrier();
  }

  uint cs0 = sg * 256u;
  for (uint i = 0u; i < FM; ++i) {
    for (uint j = 0u; j < FN; ++j) {
      coopMatStoreNV(acc[i * FN + j], cs_, cs0, 16u, false);
      subgroupMemoryBarrierShared();
      subgroupBarrier();
      for (uint e = lane; e < 256u; e += gl_SubgroupSize) {
        uint row = row0 + wm * FM * 16u + i * 16u + e / 16u, col = col0 + wn * FN * 16u + j * 16u + e % 16u;
        if (row < p.m && col < p.out_f) {
          float b = p.has_bias != 0u ? bias[p.b_off + col] : 0.0;
          y[p.y_off + row * p.out_f + col] = cs_[cs0 + e] + b;
        }
      }
      subgroupBarrier();  // the tile is read before the next store overwrites it
    }
  }
}
