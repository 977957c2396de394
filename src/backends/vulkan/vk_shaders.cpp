// backends/vulkan/vk_shaders.cpp: lookup over the generated shader table.
#include "backends/vulkan/vk_shaders.h"

#include "core/error.h"

namespace trellis::vk {

std::span<const uint32_t> shader_spirv(std::string_view name) {
  for (size_t i = 0; i < kEmbeddedShaderCount; ++i)
    if (name == kEmbeddedShaders[i].name) return {kEmbeddedShaders[i].words, kEmbeddedShaders[i].word_count};
  fail(ErrorKind::kInternal, "Vulkan backend: no embedded shader '{}'", name);
}

}  // namespace trellis::vk
