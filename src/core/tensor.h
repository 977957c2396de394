// core/tensor.h: non-owning views of typed, shaped bytes, and an owning aligned buffer.
//
// A TensorView never owns its bytes: it points into an mmap'ed file, an AlignedBuffer or a
// backend's host staging memory. Bytes may be unaligned (safetensors data sections are not
// padded, spec 2.2); code that needs alignment must check `is_aligned` or copy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace trellis {

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& shape);
std::string shape_to_string(const Shape& shape);  // "[4, 256]"

struct TensorView {
  DType dtype = DType::kF32;
  Shape shape;
  const std::byte* data = nullptr;

  int64_t numel() const { return shape_numel(shape); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  bool is_aligned(size_t alignment) const {
    return reinterpret_cast<uintptr_t>(data) % alignment == 0;
  }
  std::span<const std::byte> bytes() const { return {data, nbytes()}; }
};

// Heap memory aligned to 64 bytes (cache line, AVX-512 vector), zero-initialised.
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t nbytes);
  AlignedBuffer(AlignedBuffer&&) noexcept = default;
  AlignedBuffer& operator=(AlignedBuffer&&) noexcept = default;

  std::byte* data() { return data_.get(); }
  const std::byte* data() const { return data_.get(); }
  size_t size() const { return size_; }
  template <typename T> T* as() { return reinterpret_cast<T*>(data_.get()); }
  template <typename T> const T* as() const { return reinterpret_cast<const T*>(data_.get()); }

 private:
  struct Free {
    void operator()(std::byte* p) const;
  };
  std::unique_ptr<std::byte, Free> data_;
  size_t size_ = 0;
};

}  // namespace trellis
