// core/dtype.h: element types trellis reads and writes, with their safetensors tags.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace trellis {

enum class DType : uint8_t { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool, kF8E4M3, kF8E5M2, kF8E8M0, kU16, kU32, kU64 };

// Size of one element in bytes.
size_t dtype_size(DType t);
// The safetensors tag ("F16", "I32", ...).
std::string_view dtype_name(DType t);
// Parses a safetensors tag; nullopt if unknown.
std::optional<DType> dtype_from_name(std::string_view tag);
// Whether ExLlamaV3's loader accepts this tag (spec 2.2).
bool dtype_exllamav3_loadable(DType t);

}  // namespace trellis
