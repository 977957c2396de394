#version 450
// embedding: out[r, :] = table[ids[r], :] as fp32. Grid: (ceil(dim / WG), rows).
#extension GL_GOOGLE_include_directive : require
layout(local_size_x_id = 0) in;
#include "common.glsl"

layout(binding = 0) readonly buffer Table { uint table[]; };  // fp16 pairs or fp32 bits
layout(binding = 1) readonly buffer Ids { uint ids[]; };
layout(binding = 2) writeonly buffer Out { float out_[]; };
layout(push_constant) uniform P {
  uint dim, table_off, ids_off, out_off, table_f16;
} p;

void main() {
  uint i = gl_GlobalInvocationID.x, r = gl_WorkGroupID.y;
  if (i >= p.dim) return;
  uint e = p.table_off + ids[p.ids_off + r] * p.dim + i;
  out_[p.out_off + r * p.dim + i] = p.table_f16 != 0u ? LOAD_F16(table, e) : uintBitsToFloat(table[e]);
}
