#version 450
// exl3_hadamard_out: the EXL3 output transform in fp32 (spec 4.4 step 3):
// y[r, c] = (z[r, :] · H128 / sqrt(128))[c] * svh[c] + bias[c] for c < out_f (padded outputs
// dropped). One workgroup of 128 per (block, row): grid (n / 128, m).
// RESID (id 0) = 1, the decode's residual add folded in (VulkanBackend::add, out_f == n): y is
// written as above, then x[r, c] += y[r, c] (bindings 4 x, push x_off: add.comp's one fp32
// addition of the same y value), and the block's sum of squares of the new x goes to
// sums[r · n / 128 + block] (binding 5), reduced as pairs (e, e + s) for s = 64, 32, .., 1 over
// the block's elements e: rms_norm.comp's BLK order, which exl3_gemv*_hin's fused norm (NM) reads.
// Bindings 4 and 5 are bound but unread when RESID = 0.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 128) in;
layout(constant_id = 0) const uint RESID = 0;
#include "common.glsl"

layout(binding = 0) readonly buffer Z { float z[]; };
layout(binding = 1) readonly buffer Svh { float svh[]; };
layout(binding = 2) readonly buffer B { float bias[]; };
layout(binding = 3) writeonly buffer Y { float y[]; };
layout(binding = 4) buffer X { float x[]; };
layout(binding = 5) writeonly buffer Sums { float sums[]; };
layout(push_constant) uniform P { uint n, out_f, z_off, y_off, has_bias, splits, split_stride, x_off; } p;

shared float v[128];

void main() {
  uint t = gl_LocalInvocationID.x, r = gl_WorkGroupID.y;
  uint c = gl_WorkGroupID.x * 128u + t;
  float zv = z[p.z_off + r * p.n + c];  // split-k partials, added in split order
  for (uint s = 1u; s < p.splits; ++s) zv += z[p.z_off + s * p.split_stride + r * p.n + c];
  v[t] = zv;
  barrier();
  for (uint s = 1u; s < 128u; s <<= 1) {
    float a = v[t], b = v[t ^ s];
    barrier();
    v[t] = (t & s) != 0u ? b - a : a + b;
    barrier();
  }
  float val = v[t] * 0.0883883461356163 * svh[c] + (p.has_bias != 0u ? bias[c] : 0.0);
  if (RESID == 0u) {
    if (c < p.out_f) y[p.y_off + r * p.out_f + c] = val;
    return;
  }
  // RESID: every c < out_f (the host checks out_f == n). Only this invocation reads v[t] from
  // here on, so it is overwritten without a barrier. The squares reach the additions only
  // through shared memory across a barrier, so no compiler can contract them into FMAs (and a
  // `precise` square would also mark val's arithmetic, which must stay that of RESID = 0).
  y[p.y_off + r * p.out_f + c] = val;
  float h = x[p.x_off + r * p.out_f + c] + val;
  x[p.x_off + r * p.out_f + c] = h;
  v[t] = h * h;
  barrier();
  for (uint s = 64u; s > 0u; s >>= 1) {
    if (t < s) v[t] += v[t + s];
    barrier();
  }
  if (t == 0u) sums[r * (p.n / 128u) + gl_WorkGroupID.x] = v[0];
}
