#version 450
// exl3_out_silu: the output transforms of a gated MLP's gate and up projections (EXL3, decode
// rows) and out = silu(gate) · up in one dispatch: the recorder's peephole for
// exl3_hadamard_out(z_gate) -> gate, exl3_hadamard_out(z_up) -> up, silu_mul(gate, up) -> out
// (VulkanBackend::silu_mul). gate and up are still written. Bit-identical to the three
// dispatches: each transform is exl3_hadamard_out.comp's arithmetic in its order (split-k
// partials added in split order, butterflies own + partner / partner - own, the same output
// expression without a bias: the host fuses only bias-free layers), and the product is
// silu_mul.comp's expression. One workgroup of 128 per (128-block, row): grid (n / 128, m).
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 128) in;
#include "common.glsl"

layout(binding = 0) readonly buffer ZG { float zg[]; };
layout(binding = 1) readonly buffer ZU { float zu[]; };
layout(binding = 2) readonly buffer SG { float svh_g[]; };
layout(binding = 3) readonly buffer SU { float svh_u[]; };
layout(binding = 4) writeonly buffer YG { float yg[]; };
layout(binding = 5) writeonly buffer YU { float yu[]; };
layout(binding = 6) writeonly buffer Out { float out_[]; };
// zero: 0.0 from the host, added where exl3_hadamard_out adds its (absent) bias, so the driver
// sees the same expression (a run-time addend it may contract into an FMA, never folds away).
layout(push_constant) uniform P { uint n, out_f, splits, split_stride, yg_off, yu_off, out_off; float zero; } p;

shared float vg[128], vu[128];

void main() {
  uint t = gl_LocalInvocationID.x, r = gl_WorkGroupID.y;
  uint c = gl_WorkGroupID.x * 128u + t;
  float g = zg[r * p.n + c], u = zu[r * p.n + c];
  for (uint s = 1u; s < p.splits; ++s) {
    g += zg[s * p.split_stride + r * p.n + c];
    u += zu[s * p.split_stride + r * p.n + c];
  }
  vg[t] = g;
  vu[t] = u;
  barrier();
  for (uint s = 1u; s < 128u; s <<= 1) {
    float ag = vg[t], bg = vg[t ^ s], au = vu[t], bu = vu[t ^ s];
    barrier();
    vg[t] = (t & s) != 0u ? bg - ag : ag + bg;
    vu[t] = (t & s) != 0u ? bu - au : au + bu;
    barrier();
  }
  if (c < p.out_f) {
    float gv = vg[t] * 0.0883883461356163 * svh_g[c] + p.zero;
    float uv = vu[t] * 0.0883883461356163 * svh_u[c] + p.zero;
    yg[p.yg_off + r * p.out_f + c] = gv;
    yu[p.yu_off + r * p.out_f + c] = uv;
    out_[p.out_off + r * p.out_f + c] = gv / (1.0 + exp(-gv)) * uv;
  }
}
