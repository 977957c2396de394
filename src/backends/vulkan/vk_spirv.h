// backends/vulkan/vk_spirv.h: a SPIR-V rewrite from SPV_NV_cooperative_matrix to
// SPV_KHR_cooperative_matrix.
//
// Why: the glslc this project builds with (shaderc 2023.2, glslang 11) compiles
// GL_NV_cooperative_matrix but not GL_KHR_cooperative_matrix, and the issue asks for the KHR
// extension (vendor extensions only behind capability checks). The two SPIR-V extensions differ
// in a handful of instructions, so the cooperative-matrix shaders are written against NV and
// rewritten here, in memory, when a pipeline is created on a device with VK_KHR_cooperative_matrix.
// Non-goal: a general translator. It handles what glslang emits for matmul_f16_coop.comp,
// matmul_f16_coop2.comp and the matmul_f16_coop3_*.comp variants (which add cooperative stores
// to a storage buffer with a run-time stride, and loads from a float16_t shared array), and
// refuses (kInternal) anything it does not understand.
//
// The rewrite, instruction by instruction (SPIR-V opcodes in parentheses):
//   Capability CooperativeMatrixNV (5357)  -> CooperativeMatrixKHR (6022)
//   Extension "SPV_NV_cooperative_matrix"  -> "SPV_KHR_cooperative_matrix"
//   TypeCooperativeMatrixNV (5358) %comp %scope %rows %cols
//     -> TypeCooperativeMatrixKHR (4456) %comp %scope %rows %cols %use. NV types carry no use;
//        the shader gives each use its own specialization constants for the dimensions, and
//        `use_of_spec_id` maps the SpecId of %rows to 0 (MatrixA), 1 (MatrixB), 2 (accumulator).
//   CooperativeMatrixLoadNV (5359) %ptr %stride %colmajor [mem]
//     -> CooperativeMatrixLoadKHR (4457) %ptr %layout %stride [mem]   (%colmajor: a bool
//        constant; %layout: 0 RowMajor / 1 ColumnMajor as a uint constant)
//   CooperativeMatrixStoreNV (5360) %ptr %obj %stride %colmajor [mem]
//     -> CooperativeMatrixStoreKHR (4458) %ptr %obj %layout %stride [mem]
//   CooperativeMatrixMulAddNV (5361) -> MulAddKHR (4459), same operands (no signedness flags:
//     float only); CooperativeMatrixLengthNV (5362) -> LengthKHR (4460).
// New uint constants 0, 1, 2 are inserted before the first cooperative-matrix type (the bound
// grows by 3).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

namespace trellis::vk {

// Throws kInternal naming the instruction when the module is not what the rewrite expects.
// `use_of_spec_id(id)` returns 0/1/2 for a rows SpecId, or -1 when it is not one.
std::vector<uint32_t> coop_nv_to_khr(std::span<const uint32_t> nv, const std::function<int(uint32_t)>& use_of_spec_id);

// The convention of matmul_f16_coop.comp: rows SpecId 10 = A, 12 = B, 14 = accumulator.
int coop_shader_use(uint32_t spec_id);

// Opcode counts (for tests): how many instructions of `opcode` the module has.
size_t count_opcode(std::span<const uint32_t> module, uint32_t opcode);

}  // namespace trellis::vk
