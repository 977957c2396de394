// backends/cuda/cuda_launch.cuh: kernel launches with programmatic dependent launch (PDL).
//
// Why: batch-1 decode runs ~20 small dependent kernels per layer inside a CUDA graph, and without
// PDL each one starts only after its predecessor has fully drained: a gap of a couple of µs per
// kernel that no amount of kernel tuning removes. With PDL (sm_90+), a kernel launched by
// launch() may be scheduled while its predecessor is still running; it parks at pdl_begin() until
// the predecessor grid has completed and its memory is visible, so ordering is exactly that of a
// plain stream launch, minus the launch latency.
//
// Contract for a kernel launched with launch(): it calls pdl_begin() before it reads or writes
// any memory another kernel touches (in practice: as its first statement). pdl_begin() waits,
// then lets the next kernel in the stream be scheduled, so at most one dependent grid is parked
// at a time. On sm_80-89 both are no-ops and launch() is a plain launch; TRELLIS_CUDA_PDL=0 turns
// the attribute off everywhere (A/B benchmarks, debugging).
#pragma once

#include <cuda_runtime.h>

#include <string_view>
#include <utility>

#include "backends/cuda/cuda_util.h"

namespace trellis::cuda {

__device__ __forceinline__ void pdl_begin() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

template <typename... Params, typename... Args>
void launch(std::string_view what, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
            Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  if (pdl_enabled()) {
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
  }
  check(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...), what);
}

}  // namespace trellis::cuda
