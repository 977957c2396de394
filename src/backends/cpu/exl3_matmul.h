// backends/cpu/exl3_matmul.h: y = x·W (+ b) on the CPU straight from an EXL3 trellis.
//
// Goals: decode-bound GEMV for token generation (m = 1) that beats a dense fp16 GEMV of the same
// shape by reading 2-16x fewer weight bytes; correct for every K = 1..8 and codebook, any m >= 1,
// unaligned tensor pointers (views into an mmap'ed safetensors file); runtime dispatch over the
// Highway targets (AVX-512, AVX2, SSE4, emulated scalar) without -march flags.
// Non-goals: prefill-sized m (it works, decoding each tile once per call and applying it to all
// rows, but a reconstruct-then-GEMM path is the right tool there); bit-reproducing ExLlamaV3's
// fp16 activation rounding (everything here is fp32, more accurate, spec 4.4/4.5).
#pragma once

#include <cstdint>
#include <vector>

#include "core/thread_pool.h"
#include "exl3/codebook.h"
#include "exl3/linear.h"

namespace trellis::cpu {

// y (m x n fp32, row-major, leading dimension n) = x (m x k fp32, row-major, leading dimension k)
// · W + bias, W = diag(suh)·H·Ŵ·H·diag(svh) (spec 4.2). Requirements (trellis::Error
// kInvalidArgument otherwise): 1 <= K <= 8, k and n positive multiples of 128, trellis/suh/svh
// non-null; m == 0 is a no-op. Pointers in `w` and x, y need no alignment; y must not alias x.
// Writes exactly m·n floats of y. Work is split over 128-column output blocks on `pool`
// (n/128 blocks: a layer with n = 128 runs on one thread). Scratch is per thread and reused.
void exl3_matmul(const exl3::Exl3LinearView& w, const float* x, int64_t m, float* y,
                 ThreadPool& pool);

// Decodes one packed tile (32·K bytes, any alignment) with the SIMD decoder of the dispatched
// target to 256 fp32 values in trellis step order (spec 2.7). Exists so tests can check the
// kernels' decode bit for bit against exl3::codebook_table.
void exl3_decode_tile(const void* tile, int K, exl3::Codebook cb, float out[256]);

// "exl3_matmul_k<K>_<codebook>": the kernel variant exl3_matmul runs for (K, cb).
const char* exl3_variant_name(int K, exl3::Codebook cb);

// Highway targets this kernel was compiled for and the CPU supports (best first), and the name
// of the one exl3_matmul dispatches to now (honours hwy::SetSupportedTargetsForTest).
std::vector<int64_t> exl3_compiled_targets();
const char* exl3_dispatch_target_name();

}  // namespace trellis::cpu
