// backends/cpu/cpu_common.h: small helpers shared by the CPU kernels (portable, not per target).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace trellis::cpu {

// A growable 64-byte-aligned float buffer. Kernels keep one per thread and slot so the hot path
// (one GEMV per layer and token) never allocates after warm-up.
class AlignedFloats {
 public:
  AlignedFloats() = default;
  AlignedFloats(const AlignedFloats&) = delete;
  AlignedFloats& operator=(const AlignedFloats&) = delete;
  ~AlignedFloats() { std::free(data_); }

  // Returns a buffer of at least `n` floats (contents unspecified).
  float* reserve(size_t n) {
    if (n > capacity_) {
      std::free(data_);
      const size_t bytes = ((n * sizeof(float) + 63) / 64) * 64;
      data_ = static_cast<float*>(std::aligned_alloc(64, bytes));
      if (!data_) {
        capacity_ = 0;
        throw std::bad_alloc();
      }
      capacity_ = n;
    }
    return data_;
  }

 private:
  float* data_ = nullptr;
  size_t capacity_ = 0;
};

// Per-thread scratch buffers; `slot` separates buffers a caller keeps while its workers use
// theirs (slot 0: per-call data shared read-only with workers; slot 1: per-worker data).
AlignedFloats& thread_scratch(int slot);

// fp32(1/sqrt(128)) = 0x3DB504F3 (spec 4.4).
constexpr float exl3_hadamard_scale() { return 0.0883883461356163f; }

// Kernel variant names, [codebook id][K - 1], named by their parameters (STYLE.md habit 3).
inline constexpr const char* kExl3VariantNames[3][8] = {
    {"exl3_matmul_k1_3inst", "exl3_matmul_k2_3inst", "exl3_matmul_k3_3inst",
     "exl3_matmul_k4_3inst", "exl3_matmul_k5_3inst", "exl3_matmul_k6_3inst",
     "exl3_matmul_k7_3inst", "exl3_matmul_k8_3inst"},
    {"exl3_matmul_k1_mcg", "exl3_matmul_k2_mcg", "exl3_matmul_k3_mcg", "exl3_matmul_k4_mcg",
     "exl3_matmul_k5_mcg", "exl3_matmul_k6_mcg", "exl3_matmul_k7_mcg", "exl3_matmul_k8_mcg"},
    {"exl3_matmul_k1_mul1", "exl3_matmul_k2_mul1", "exl3_matmul_k3_mul1", "exl3_matmul_k4_mul1",
     "exl3_matmul_k5_mul1", "exl3_matmul_k6_mul1", "exl3_matmul_k7_mul1", "exl3_matmul_k8_mul1"}};

}  // namespace trellis::cpu
