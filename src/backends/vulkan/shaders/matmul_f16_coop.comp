#version 450
// matmul_f16_coop: y[m, out] = a[m, in] · Wᵀ (+ bias) on cooperative matrices (tensor cores /
// WMMA), fp16 operands, fp32 accumulation. The prefill path (m >= kCoopMinRows) for dense layers
// and for EXL3 layers after exl3_decode; `a` is the fp32 activations rounded once to fp16 by
// convert_f16.comp (the CUDA backend's policy above 63 rows).
//
// Written against GL_NV_cooperative_matrix because the glslc this project builds with predates
// GL_KHR_cooperative_matrix; vk_spirv.cpp rewrites the module to SPV_KHR_cooperative_matrix at
// pipeline creation (the NV module itself is used on devices with only VK_NV_cooperative_matrix).
// The rewrite needs to know each matrix type's use (A, B, accumulator), which SPIR-V's NV types
// do not carry: the three types take their dimensions from distinct specialization constants
// (A: ids 10/11, B: 12/13, accumulator: 14/15), all 16 (the host requires a 16x16x16
// fp16 x fp16 -> fp32 subgroup shape in the device's list); the rewriter maps rows id 10/12/14
// to MatrixA/MatrixB/MatrixAccumulator. Keep those ids and this convention together.
// glslang emits the Vulkan memory model for cooperative loads and stores, so the device also
// needs the vulkanMemoryModel feature (Vulkan 1.2 core, optional).
//
// Shape: a workgroup of 4 subgroups (WG = 4 x subgroup size: 128 on NVIDIA, 256 for wave64)
// computes a 128x128 block of y; subgroup s owns the 64x64 quarter (s >> 1, s & 1) as 4x4
// accumulators of 16x16. k advances 32 at a time: both 128x32 operand slices are staged in
// shared memory as fp16 (rows padded to 40 halves: 80-byte strides keep the 16-byte alignment
// cooperative loads need and spread banks), and the next slices are fetched into registers
// while the current ones are multiplied. Results leave through a per-subgroup 16x16 fp32
// staging tile so rows/cols past m/out are never written and the bias is added in fp32.
// Grid: (ceil(out / 128), ceil(m / 128)). Any m, in, out.
// Operands: W (out, in) fp16 at w_off (halves); pairs are read as one uint when in_f and w_off
// are even, else element by element. a (m, a_stride) fp16 at a_off (halves), a_stride and a_off
// even, the halves past `in` of each row zero (convert_f16 writes them).
#extension GL_GOOGLE_include_directive : require
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 128;
#include "coop_dims.glsl"
#include "common.glsl"

layout(binding = 0) readonly buffer Wt { uint w[]; };
layout(binding = 1) readonly buffer A { uint a[]; };
layout(binding = 2) writeonly buffer Y { float y[]; };
layout(binding = 3) readonly buffer B { float bias[]; };
layout(push_constant) uniform P { uint m, in_f, out_f, w_off, a_off, a_stride, y_off, b_off, has_bias; } p;

const uint BM = 128u, BN = 128u, BK = 32u, SK = 40u;
const uint PAIRS = BM * BK / 2u;   // uints per operand slice
const uint LOADS = PAIRS / WG;      // per invocation and operand (16 at WG 128, 8 at 256)
shared float16_t as_[BM * SK];
shared float16_t bs_[BN * SK];
shared float cs_[4u * 256u];

// Raw bits of fp16 element e of W.
uint w_bits(uint e) { return (w[e >> 1] >> ((e & 1u) << 4)) & 0xFFFFu; }

void fetch(uint k0, uint row0, uint col0, bool w_pairs, inout uint ra[16], inout uint rb[16]) {
  for (uint l = 0u; l < LOADS; ++l) {
    uint idx = gl_LocalInvocationID.x + WG * l;
    uint r = idx >> 4, k = k0 + 2u * (idx & 15u);
    uint row = row0 + r, col = col0 + r;
    ra[l] = (row < p.m && k < p.in_f) ? a[(p.a_off + row * p.a_stride + k) >> 1] : 0u;
    uint v = 0u;
    if (col < p.out_f && k < p.in_f) {
      uint e = p.w_off + col * p.in_f + k;
      if (w_pairs)
        v = w[e >> 1];
      else
        v = w_bits(e) | (k + 1u < p.in_f ? w_bits(e + 1u) << 16 : 0u);
    }
    rb[l] = v;
  }
}

void stash(uint ra[16], uint rb[16]) {
  for (uint l = 0u; l < LOADS; ++l) {
    uint idx = gl_LocalInvocationID.x + WG * l;
    uint s = (idx >> 4) * SK + 2u * (idx & 15u);
    f16vec2 va = unpackFloat2x16(ra[l]), vb = unpackFloat2x16(rb[l]);
    as_[s] = va.x;
    as_[s + 1u] = va.y;
    bs_[s] = vb.x;
    bs_[s + 1u] = vb.y;
  }
}

void main() {
  uint row0 = gl_WorkGroupID.y * BM, col0 = gl_WorkGroupID.x * BN;
  uint sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
  if (gl_NumSubgroups != 4u) {
    // The host sized WG for 4 subgroups; a driver that runs another subgroup size would leave
    // parts of the block unwritten. Make that loud instead (tests compare every element).
    for (uint e = gl_LocalInvocationID.x; e < BM * BN; e += WG) {
      uint row = row0 + e / BN, col = col0 + e % BN;
      if (row < p.m && col < p.out_f) y[p.y_off + row * p.out_f + col] = uintBitsToFloat(0x7FC00000u);
    }
    return;
  }
  uint wm = sg >> 1, wn = sg & 1u;
  bool w_pairs = ((p.in_f | p.w_off) & 1u) == 0u;

  fcoopmatNV<32, gl_ScopeSubgroup, kCm, kCn> acc[16];
  for (uint i = 0u; i < 16u; ++i) acc[i] = fcoopmatNV<32, gl_ScopeSubgroup, kCm, kCn>(0.0);

  uint ra[16], rb[16];
  fetch(0u, row0, col0, w_pairs, ra, rb);
  for (uint k0 = 0u; k0 < p.in_f; k0 += BK) {
    barrier();  // the previous slices have been read
    stash(ra, rb);
    barrier();
    if (k0 + BK < p.in_f) fetch(k0 + BK, row0, col0, w_pairs, ra, rb);  // in flight during the MMAs
    for (uint kk = 0u; kk < BK; kk += 16u) {
      fcoopmatNV<16, gl_ScopeSubgroup, kAm, kAk> fa[4];
      fcoopmatNV<16, gl_ScopeSubgroup, kBk, kBn> fb[4];
      for (uint i = 0u; i < 4u; ++i) coopMatLoadNV(fa[i], as_, (wm * 64u + i * 16u) * SK + kk, SK, false);
      // B[k][n] = W[n][k]: the W slice is stored n-major, i.e. B column-major.
      for (uint j = 0u; j < 4u; ++j) coopMatLoadNV(fb[j], bs_, (wn * 64u + j * 16u) * SK + kk, SK, true);
      for (uint i = 0u; i < 4u; ++i)
        for (uint j = 0u; j < 4u; ++j) acc[i * 4u + j] = coopMatMulAddNV(fa[i], fb[j], acc[i * 4u + j]);
    }
  }

  uint cs0 = sg * 256u;
  for (uint i = 0u; i < 4u; ++i) {
    for (uint j = 0u; j < 4u; ++j) {
      coopMatStoreNV(acc[i * 4u + j], cs_, cs0, 16u, false);
      subgroupMemoryBarrierShared();
      subgroupBarrier();
      for (uint e = lane; e < 256u; e += gl_SubgroupSize) {
        uint row = row0 + wm * 64u + i * 16u + e / 16u, col = col0 + wn * 64u + j * 16u + e % 16u;
        if (row < p.m && col < p.out_f) {
          float b = p.has_bias != 0u ? bias[p.b_off + col] : 0.0;
          y[p.y_off + row * p.out_f + col] = cs_[cs0 + e] + b;
        }
      }
      subgroupBarrier();  // the tile is read before the next store overwrites it
    }
  }
}
