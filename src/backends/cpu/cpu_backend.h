// backends/cpu/cpu_backend.h: the CPU implementation of the Backend seam.
//
// Activations are fp32, the KV cache fp16 (as the runtime contract asks), weights stay where
// they are (EXL3 trellis and fp16 tensors are used in place from the mmap'ed file; bf16/fp32
// dense weights are converted once to fp16). Every op is multithreaded over rows or heads.
#pragma once

#include "backends/backend.h"
#include "core/thread_pool.h"

namespace trellis::cpu {

class CpuBuffer : public DeviceBuffer {
 public:
  explicit CpuBuffer(size_t bytes) : mem_(bytes) {}
  size_t size() const override { return mem_.size(); }
  std::byte* data() { return mem_.data(); }

 private:
  AlignedBuffer mem_;
};

// Host pointer of a CPU tensor's first element.
inline float* f32(const DeviceTensor& t) {
  return reinterpret_cast<float*>(static_cast<CpuBuffer*>(t.buffer.get())->data() + t.offset);
}
inline uint16_t* u16(const DeviceTensor& t) {
  return reinterpret_cast<uint16_t*>(static_cast<CpuBuffer*>(t.buffer.get())->data() + t.offset);
}

}  // namespace trellis::cpu
