// backends/vulkan/vk_shaders.h: the SPIR-V of shaders/*.comp, embedded at build time
// (embed_spirv.cmake), looked up by the shader's file stem.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace trellis::vk {

struct EmbeddedShader {
  const char* name;        // file stem, e.g. "exl3_gemv"
  const uint32_t* words;
  size_t word_count;
};

extern const EmbeddedShader kEmbeddedShaders[];
extern const size_t kEmbeddedShaderCount;

// The SPIR-V words of shader `name`; throws kInternal when no such shader was built.
std::span<const uint32_t> shader_spirv(std::string_view name);

}  // namespace trellis::vk
