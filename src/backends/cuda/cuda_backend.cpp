// backends/cuda/cuda_backend.cpp: the CUDA implementation of the Backend interface.
#include "backends/cuda/cuda_api.h"
#include "core/error.h"

namespace trellis {

std::unique_ptr<Backend> make_cuda_backend(int index) {
  fail(ErrorKind::kUnsupported, "cuda:{}: the CUDA backend is not implemented yet", index);
}

}  // namespace trellis
