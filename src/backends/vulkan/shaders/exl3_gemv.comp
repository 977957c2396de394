#version 450
// exl3_gemv: z[m, n] = xh[m, k] · Ŵ straight from the packed trellis, for small m (token
// generation). Ŵ is decoded on the fly (bit-exact, exl3_decode.glsl); Hadamards, suh/svh and bias
// are the separate exl3_hadamard_* passes.
//
// Specialization: WG (id 0, multiple of 16), K (id 1) and CODEBOOK (id 2): one pipeline per
// (K, codebook), named exl3_gemv_k<K>_<codebook>.
// Shape: one workgroup per 16-column tile column tn. Invocation t owns column c = t % 16 and the
// tile rows tk = t / 16, t / 16 + WG / 16, ...; it decodes the 16 weights of its column in each
// tile one at a time and applies each to up to 8 rows of xh at once; partial sums over tk meet in
// shared memory. Rows beyond 8 loop (re-decoding), so m > 8 belongs to the GEMM path.
// Split-k: with `splits` > 1, workgroup (split, tn) takes every splits-th group of tile rows and
// writes its partial sums to z + split * m * n; exl3_hadamard_out adds the partials. This keeps
// enough workgroups in flight when n is small relative to the GPU (n / 16 workgroups alone is
// 256 for n = 4096).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 128;
layout(constant_id = 1) const uint K = 4;
layout(constant_id = 2) const uint CODEBOOK = 0;

layout(binding = 0) readonly buffer Trellis { uint trellis[]; };
layout(binding = 1) readonly buffer Xh { float xh[]; };
layout(binding = 2) writeonly buffer Z { float z[]; };
layout(push_constant) uniform P { uint m, k, n, xh_off, z_off, splits; } p;

#include "common.glsl"
#define EXL3_TRELLIS trellis
#include "exl3_decode.glsl"

const uint R = 8u;
shared float red[R * WG];

void main() {
  uint g = flat_group(), t = gl_LocalInvocationID.x;
  uint tiles_n = p.n / 16u, tiles_k = p.k / 16u;
  if (g >= tiles_n * p.splits) return;  // uniform per workgroup
  uint tn = g % tiles_n, split = g / tiles_n;
  uint c = t & 15u, slots = WG / 16u;
  uint slot = (t >> 4) + split * slots, stride = slots * p.splits;
  for (uint r0 = 0u; r0 < p.m; r0 += R) {
    uint rc = min(R, p.m - r0);
    float acc[R];
    for (uint j = 0u; j < R; ++j) acc[j] = 0.0;
    for (uint tk = slot; tk < tiles_k; tk += stride) {
      uint base = (tk * tiles_n + tn) * 8u * K;
      uint xb = p.xh_off + r0 * p.k + 16u * tk;
      // Not unrolled: one decode in the code instead of 16 keeps pipeline creation fast on
      // LLVM-based drivers (lavapipe: ~2 s per variant unrolled); acc stays in registers
      // because its indices are constants after the j loop unrolls.
      [[dont_unroll]] for (uint rr = 0u; rr < 16u; ++rr) {
        float wv = decode_state(trellis_state(base, step_of(rr, c)));
        [[unroll]] for (uint j = 0u; j < R; ++j)
          if (j < rc) acc[j] += xh[xb + j * p.k + rr] * wv;
      }
    }
    for (uint j = 0u; j < R; ++j) red[j * WG + t] = acc[j];
    barrier();
    if (t < 16u * rc) {
      uint j = t / 16u, cc = t % 16u;
      float s = 0.0;
      for (uint sl = 0u; sl < slots; ++sl) s += red[j * WG + sl * 16u + cc];
      z[p.z_off + split * p.m * p.n + (r0 + j) * p.n + 16u * tn + cc] = s;
    }
    barrier();
  }
}
