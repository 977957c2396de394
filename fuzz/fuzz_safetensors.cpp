// fuzz/fuzz_safetensors.cpp: SafetensorsFile::parse on arbitrary bytes.
//
// Contract under test: any input either parses or throws trellis::Error; every view of a
// parsed file lies inside the input (its first and last byte are read so ASan sees them).
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "format/safetensors.h"
#include "trellis/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  try {
    const auto f = trellis::SafetensorsFile::parse(bytes, "fuzz.safetensors");
    volatile uint8_t sink = 0;
    for (const auto& info : f->tensors()) {
      const trellis::TensorView v = f->view(info);
      if (v.data < bytes.data() || v.data + v.nbytes() > bytes.data() + bytes.size()) std::abort();
      if (f->find(info.name) != &info) std::abort();
      if (v.nbytes() > 0) sink = sink + static_cast<uint8_t>(v.data[0]) + static_cast<uint8_t>(v.data[v.nbytes() - 1]);
    }
    (void)sink;
  } catch (const trellis::Error&) {
  }
  return 0;
}
