// backends/cpu/exl3_matmul.cpp: argument checks and Highway runtime dispatch for the EXL3 CPU
// kernels; the kernels themselves are in exl3_matmul-inl.h.

// SSSE3 adds nothing over SSE4 here; skipping it saves a compile of every variant.
#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS HWY_SSSE3
#endif

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "backends/cpu/exl3_matmul.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep

#include <hwy/highway.h>

#include "backends/cpu/dense_matmul-inl.h"
#include "backends/cpu/exl3_matmul-inl.h"

#if HWY_ONCE
#include "backends/cpu/exl3_matmul.h"
#include "core/error.h"

namespace trellis::cpu {

HWY_EXPORT(Exl3Matmul);
HWY_EXPORT(Exl3DecodeTile);
HWY_EXPORT(Exl3TargetName);

namespace {
void check_K_codebook(int K, exl3::Codebook cb) {
  if (K < 1 || K > 8) fail(ErrorKind::kInvalidArgument, "EXL3 matmul: K = {} (expected 1..8)", K);
  if (static_cast<unsigned>(cb) > 2u)
    fail(ErrorKind::kInvalidArgument, "EXL3 matmul: unknown codebook id {}", static_cast<int>(cb));
}
}  // namespace

void exl3_matmul(const exl3::Exl3LinearView& w, const float* x, int64_t m, float* y,
                 ThreadPool& pool) {
  check_K_codebook(w.K, w.codebook);
  if (w.k <= 0 || w.n <= 0 || w.k % 128 != 0 || w.n % 128 != 0)
    fail(ErrorKind::kInvalidArgument,
         "EXL3 matmul: k = {}, n = {} (expected positive multiples of 128)", w.k, w.n);
  if (!w.trellis || !w.suh || !w.svh)
    fail(ErrorKind::kInvalidArgument, "EXL3 matmul: trellis, suh and svh are required");
  if (m < 0) fail(ErrorKind::kInvalidArgument, "EXL3 matmul: m = {} (expected >= 0)", m);
  if (m == 0) return;
  if (!x || !y) fail(ErrorKind::kInvalidArgument, "EXL3 matmul: null input or output");
  HWY_DYNAMIC_DISPATCH(Exl3Matmul)(w, x, m, y, pool);
}

void exl3_decode_tile(const void* tile, int K, exl3::Codebook cb, float out[256]) {
  check_K_codebook(K, cb);
  HWY_DYNAMIC_DISPATCH(Exl3DecodeTile)(tile, K, cb, out);
}

const char* exl3_variant_name(int K, exl3::Codebook cb) {
  check_K_codebook(K, cb);
  return kExl3VariantNames[static_cast<int>(cb)][K - 1];
}

std::vector<int64_t> exl3_compiled_targets() {
  std::vector<int64_t> out;
  for (int64_t t = hwy::SupportedTargets() & HWY_TARGETS; t != 0; t &= t - 1)
    out.push_back(t & -t);
  return out;
}

const char* exl3_dispatch_target_name() { return HWY_DYNAMIC_DISPATCH(Exl3TargetName)(); }

}  // namespace trellis::cpu
#endif  // HWY_ONCE
