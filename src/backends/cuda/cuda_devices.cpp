// backends/cuda/cuda_devices.cpp: device enumeration through the CUDA runtime.
#include <cuda_runtime.h>

#include "backends/cuda/cuda_api.h"

namespace trellis {

std::vector<DeviceInfo> list_cuda_devices() {
  std::vector<DeviceInfo> out;
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: not an error for enumeration
    return out;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    DeviceInfo d;
    d.backend = "cuda";
    d.index = i;
    d.name = prop.name;
    d.kind = prop.integrated ? "integrated_gpu" : "discrete_gpu";
    d.memory_bytes = prop.totalGlobalMem;
    size_t free_b = 0, total_b = 0;
    if (cudaSetDevice(i) == cudaSuccess && cudaMemGetInfo(&free_b, &total_b) == cudaSuccess)
      d.free_bytes = free_b;
    cudaGetLastError();
    d.threads = prop.multiProcessorCount;
    d.subgroup_size = prop.warpSize;
    d.features.push_back("sm_" + std::to_string(prop.major) + std::to_string(prop.minor));
    out.push_back(std::move(d));
  }
  return out;
}

}  // namespace trellis
