#version 450
// silu_mul: out = silu(gate) * up = gate / (1 + exp(-gate)) * up, elementwise.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 256;
#include "common.glsl"

layout(binding = 0) readonly buffer G { float gate[]; };
layout(binding = 1) readonly buffer U { float up[]; };
layout(binding = 2) writeonly buffer Out { float out_[]; };
layout(push_constant) uniform P { uint n, gate_off, up_off, out_off; } p;

void main() {
  uint i = flat_group() * WG + gl_LocalInvocationID.x;
  if (i >= p.n) return;
  float g = gate[p.gate_off + i];
  out_[p.out_off + i] = g / (1.0 + exp(-g)) * up[p.up_off + i];
}
