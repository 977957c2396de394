#include "core/tensor.h"

#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace trellis {

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_to_string(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

AlignedBuffer::AlignedBuffer(size_t nbytes) : size_(nbytes) {
  const size_t rounded = (nbytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded ? rounded : 64);
  if (!p) fail(ErrorKind::kOutOfMemory, "could not allocate {} bytes", nbytes);
  std::memset(p, 0, rounded ? rounded : 64);
  data_.reset(static_cast<std::byte*>(p));
}

void AlignedBuffer::Free::operator()(std::byte* p) const { std::free(p); }

}  // namespace trellis
