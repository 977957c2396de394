// fuzz/fuzz_safetensors_index.cpp: parse_safetensors_index on arbitrary text.
//
// Contract under test: parse or trellis::Error; a parsed index maps every tensor to one of its
// sorted, distinct, plain file names.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "format/safetensors.h"
#include "trellis/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const trellis::SafetensorsIndex index = trellis::parse_safetensors_index(text, "fuzz.index.json");
    if (index.weight_map.empty() || index.files.empty()) std::abort();
    if (!std::is_sorted(index.files.begin(), index.files.end())) std::abort();
    if (std::adjacent_find(index.files.begin(), index.files.end()) != index.files.end()) std::abort();
    for (const auto& [name, file] : index.weight_map) {
      if (!std::binary_search(index.files.begin(), index.files.end(), file)) std::abort();
      if (file.find('/') != std::string::npos || file == ".." || file == ".") std::abort();
    }
  } catch (const trellis::Error&) {
  }
  return 0;
}
