// quantize/quantize_linear.h: the per-tensor mathematics of the EXL3 quantizer (spec 5.3-5.9):
// Hessian capture and finalisation, weight regularisation, the global-scale search, LDLQ with a
// pluggable tile encoder, and packing into the tensors of spec 2.3.
//
// Goal: files that decode (spec 4.3) to a weight as close to the source, in the Hessian's norm,
// as ExLlamaV3's converter gets. The algorithm follows ExLlamaV3's; random signs come from our
// own seeded generator (the format does not depend on them), and the scale search scores
// candidates with the encoder's one-pass estimate mode (the chosen scale is then encoded
// exactly). Non-goals: bit-identical files to ExLlamaV3 (impossible, spec 5.14).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "exl3/codebook.h"

namespace trellis::quant {

// Encodes n_tiles tiles of 256 binary16 values (trellis order); writes states and/or decoded
// binary16 values (either may be null). `estimate`: only the decoded values are used, for
// scoring (states need not be tail-biting).
using TileEncodeFn = std::function<void(const uint16_t* x, size_t n_tiles, int K, exl3::Codebook cb,
                                        uint16_t* states, uint16_t* decoded, bool estimate)>;

// Sum of XᵀX over calibration rows of one linear's input (k = padded in_features), spec 5.3.
class HessianAccumulator {
 public:
  explicit HessianAccumulator(int64_t k);
  int64_t k() const { return k_; }
  // Adds `rows` rows of `cols` <= k floats (the rest are zero padding). Rows with a non-finite
  // value are skipped and counted.
  void add(const float* x, int64_t rows, int64_t cols, ThreadPool& pool);
  // Replaces the sum with a k x k matrix whose lower triangle holds XᵀX (from a backend's
  // gram_accumulate), with its row counts.
  void set_lower(const float* lower, uint64_t count, uint64_t skipped);
  uint64_t count() const { return count_; }
  uint64_t skipped() const { return skipped_; }
  const std::vector<float>& sum() const { return sum_; }  // k x k, full symmetric

 private:
  void mirror();
  int64_t k_;
  std::vector<float> sum_;
  uint64_t count_ = 0, skipped_ = 0;
};

// A finalised Hessian (spec 5.4), shared by the tensors that consume the same input.
struct FinalHessian {
  int64_t k = 0;
  bool fallback = false;     // no usable data: plain per-tile quantization
  std::vector<float> sign;   // σ, k entries of +-1
  std::vector<float> diag;   // diag(H) after damping, before rotation (for out-scales "auto")
  std::vector<float> rotated;  // H' (k x k), for the proxy error
  std::vector<float> lz;       // Lz (k x k), strictly block-lower-triangular
};

FinalHessian finalize_hessian(const HessianAccumulator& acc, uint64_t seed, ThreadPool& pool);
// The fallback Hessian of a tensor without calibration data (signs only).
FinalHessian fallback_hessian(int64_t k, uint64_t seed);

enum class OutScales { kAlways, kNever, kAuto };
OutScales parse_out_scales(const std::string& s);  // throws kInvalidArgument
const char* out_scales_name(OutScales s);

struct QuantizeOptions {
  int K = 4;
  exl3::Codebook codebook = exl3::Codebook::kMul1;
  OutScales out_scales = OutScales::kAlways;
  uint64_t seed = 0;  // output sign vectors
};

// The EXL3 tensors of one linear (padded sizes), ready to write.
struct QuantizedLinear {
  int64_t k = 0, n = 0;
  int K = 0;
  exl3::Codebook codebook = exl3::Codebook::kMul1;
  std::vector<uint16_t> trellis;  // [k/16][n/16][16K]
  std::vector<uint16_t> suh, svh;  // fp16 bits, k and n
  double proxy_error = 0;          // spec 5.9 (MSE for fallback tensors)
  float global_scale = 1;
};

// Quantizes the weights `w` (k x n fp32, row = input feature, already padded with zeros) of
// one or more linears that share `h` and K: `widths` splits the n columns into the individual
// tensors (each a multiple of 128), whose regularisation and scale search are per tensor and
// whose LDLQ runs jointly (spec 5.10). Returns one QuantizedLinear per width.
std::vector<QuantizedLinear> quantize_linears(std::vector<float> w, int64_t k, const std::vector<int64_t>& widths,
                                              const FinalHessian& h, const QuantizeOptions& options,
                                              const TileEncodeFn& encode, ThreadPool& pool);

// tr(Mᵀ H M) for the k x nt block of columns [col0, col0 + nt) of m (k rows, row stride n), with
// H k x k symmetric (row-major, both triangles stored): the numerator and denominator of the
// proxy error (spec 5.9). Accumulates in fp32 over chunks of columns and in fp64 across them.
double trace_quadratic(const float* m, int64_t k, int64_t n, int64_t col0, int64_t nt, const std::vector<float>& h,
                       ThreadPool& pool);

}  // namespace trellis::quant
