#version 450
// kv_store: k, v rows (fp32, width even) -> fp16 cache rows positions[r]. One invocation per
// pair of elements (one packed uint of each cache). Grid: (ceil(width / 2 / WG), rows).
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0) in;
#include "common.glsl"

layout(binding = 0) readonly buffer Kx { float k[]; };
layout(binding = 1) readonly buffer Vx { float v[]; };
layout(binding = 2) buffer Kc { uint kc[]; };
layout(binding = 3) buffer Vc { uint vc[]; };
layout(binding = 4) readonly buffer Pos { uint pos[]; };
layout(push_constant) uniform P { uint width, k_off, v_off, kc_off2, vc_off2, pos_off; } p;  // *_off2: in uints

void main() {
  uint j = gl_GlobalInvocationID.x, r = gl_WorkGroupID.y;
  if (2u * j >= p.width) return;
  uint src = r * p.width + 2u * j;
  uint dst = (pos[p.pos_off + r] * p.width) / 2u + j;
  kc[p.kc_off2 + dst] = f32_to_f16_rne(k[p.k_off + src]) | (f32_to_f16_rne(k[p.k_off + src + 1u]) << 16);
  vc[p.vc_off2 + dst] = f32_to_f16_rne(v[p.v_off + src]) | (f32_to_f16_rne(v[p.v_off + src + 1u]) << 16);
}
