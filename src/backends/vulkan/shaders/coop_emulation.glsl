// shaders/coop_emulation.glsl: plain-GLSL stand-ins for the GL_NV_cooperative_matrix operations
// and subgroup barriers of attention_flash_coop.glsl (included when COOP_EMULATION is defined),
// so that its body, index arithmetic, masks, softmax and barriers included, runs and is tested
// on devices without cooperative matrices (lavapipe in CI). Test-only; slow.
//
// Semantics (SPV_NV / SPV_KHR_cooperative_matrix): a 16x16 matrix loaded row-major from element
// `off` with stride `stride` has (r, c) at off + r * stride + c, column-major at off + c * stride
// + r, all in units of the array's element type (a uvec4 holds 8 halves, low half first; a float
// one float). Emulated layout: an emulated subgroup is 32 consecutive invocations; lane l holds
// elements e = l + 32 i (i < 8), (r, c) = (e / 16, e % 16), as m[i / 4][i % 4] of a mat2x4
// (mat2x4(0.0) is the zero matrix). A product goes through a per-subgroup shared scratch.
// Subgroup barriers become workgroup barriers: the body must then reach them in workgroup-uniform
// control flow, which EMULATION_UNIFORM(cond) = true arranges (the skipped work it forces is
// exact: a subgroup that sees no key of a tile gets P = 0, a rescale by 1 changes nothing). The
// real subgroups must be at least 2 wide and aligned so that lane ^ 1 shares one (any size).
#define ACC mat2x4
#define FRAG_A mat2x4
#define FRAG_B mat2x4
#define SUBGROUP_ID (gl_LocalInvocationID.x / 32u)
#define SUBGROUP_LANE (gl_LocalInvocationID.x % 32u)
#define SUBGROUP_COUNT 4u
#define EMULATION_UNIFORM(cond) true
#define subgroupBarrier() barrier()
#define subgroupMemoryBarrierShared() memoryBarrierShared()
#define coopMatLoadNV(m, arr, off, stride, col_major) emu_load_##arr(m, off, stride, col_major)
#define coopMatStoreNV(m, arr, off, stride, col_major) emu_store_##arr(m, off, stride, col_major)
#define coopMatMulAddNV(a, b, c) emu_mul_add(a, b, c)

shared float emu_a[4u * 256u], emu_b[4u * 256u];

uint emu_index(uint i, uint off, uint stride, bool col_major) {
  uint e = gl_LocalInvocationID.x % 32u + 32u * i, r = e / 16u, c = e % 16u;
  return off + (col_major ? c * stride + r : r * stride + c);
}

// A matrix of halves in a uvec4 array (offset and stride in uvec4 units).
#define EMU_HALF_MATRIX(ARR)                                                       \
  void emu_load_##ARR(out mat2x4 m, uint off, uint stride, bool col_major) {       \
    for (uint i = 0u; i < 8u; ++i) {                                               \
      uint h = emu_index(i, 0u, 8u * stride, col_major) + 8u * off;                \
      uint w = ARR[h / 8u][(h % 8u) / 2u];                                         \
      m[i / 4u][i % 4u] = unpackHalf2x16(w >> (16u * (h & 1u))).x;                 \
    }                                                                              \
  }
// A matrix of floats in a float array.
#define EMU_FLOAT_MATRIX(ARR)                                                      \
  void emu_load_##ARR(out mat2x4 m, uint off, uint stride, bool col_major) {       \
    for (uint i = 0u; i < 8u; ++i) m[i / 4u][i % 4u] = ARR[emu_index(i, off, stride, col_major)]; \
  }                                                                                \
  void emu_store_##ARR(mat2x4 m, uint off, uint stride, bool col_major) {          \
    for (uint i = 0u; i < 8u; ++i) ARR[emu_index(i, off, stride, col_major)] = m[i / 4u][i % 4u]; \
  }

// c + a · b in fp32 (a and b hold fp16 values).
mat2x4 emu_mul_add(mat2x4 a, mat2x4 b, mat2x4 c) {
  uint base = 256u * (gl_LocalInvocationID.x / 32u), lane = gl_LocalInvocationID.x % 32u;
  for (uint i = 0u; i < 8u; ++i) {
    emu_a[base + lane + 32u * i] = a[i / 4u][i % 4u];
    emu_b[base + lane + 32u * i] = b[i / 4u][i % 4u];
  }
  memoryBarrierShared();
  barrier();
  for (uint i = 0u; i < 8u; ++i) {
    uint e = lane + 32u * i, r = e / 16u, col = e % 16u;
    float s = c[i / 4u][i % 4u];
    for (uint k = 0u; k < 16u; ++k) s += emu_a[base + 16u * r + k] * emu_b[base + 16u * k + col];
    c[i / 4u][i % 4u] = s;
  }
  barrier();  // the scratch is read before the next product overwrites it
  return c;
}
