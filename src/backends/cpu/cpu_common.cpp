#include "backends/cpu/cpu_common.h"

namespace trellis::cpu {

AlignedFloats& thread_scratch(int slot) {
  thread_local AlignedFloats buffers[4];
  return buffers[slot];
}

}  // namespace trellis::cpu
