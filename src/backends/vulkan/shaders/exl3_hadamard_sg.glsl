// shaders/exl3_hadamard_sg.glsl: body of exl3_hadamard_in_sg.comp and exl3_hadamard_out_sg.comp,
// the EXL3 transforms (spec 4.4 steps 1 and 3) by subgroup shuffles instead of shared memory.
//
// Same arithmetic as exl3_hadamard_in/out.comp, stage for stage: butterflies over index bits
// s = 1, 2, 4, ..., 64 in that order (element i with bit s set becomes partner - own, the other
// own + partner), then the scale 1/sqrt(128); the results are bitwise those of the shared-memory
// shaders (the tests compare both).
//
// Thread map: 8 consecutive invocations (a "lane group", inv = subgroup id * subgroup size +
// invocation id, so a group never straddles subgroups when the subgroup size is a multiple of 8)
// own one 128-element item (one 128-block of one row); lane l of the group holds elements
// l + 8 j (j < 16): the stages over bits 1, 2, 4 are subgroupShuffleXor by 1, 2, 4, the stages over
// bits 8..64 are register butterflies. 16 items per workgroup of 128, no barriers. Needs subgroup
// shuffles and a subgroup size that is a multiple of 8 (the host checks; otherwise the
// shared-memory shaders run).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
layout(local_size_x = 128) in;
#include "common.glsl"

const uint kItemsPerGroup = 16u;

// v[j] holds element lane + 8 j of the item; returns the transformed elements in place.
void hadamard128(inout float v[16], uint lane) {
  [[unroll]] for (uint s = 1u; s < 8u; s <<= 1) {
    bool upper = (lane & s) != 0u;
    [[unroll]] for (uint j = 0u; j < 16u; ++j) {
      float b = subgroupShuffleXor(v[j], s);
      v[j] = upper ? b - v[j] : v[j] + b;
    }
  }
  [[unroll]] for (uint s = 1u; s < 16u; s <<= 1)
    [[unroll]] for (uint j = 0u; j < 16u; ++j)
      if ((j & s) == 0u) {
        float a = v[j], b = v[j | s];
        v[j] = a + b;
        v[j | s] = a - b;  // element with the bit set: partner (a) - own (b)
      }
  [[unroll]] for (uint j = 0u; j < 16u; ++j) v[j] *= 0.0883883461356163;
}

// (item, lane) of this invocation; item may be past the last one (then the caller returns).
uvec2 item_lane() {
  uint inv = gl_SubgroupID * gl_SubgroupSize + gl_SubgroupInvocationID;
  return uvec2(flat_group() * kItemsPerGroup + inv / 8u, inv & 7u);
}
