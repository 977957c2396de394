// exl3/linear.cpp: decode W_hat, reconstruct W and the reference forward of one EXL3 layer.
//
// Goals: exact W_hat (spec 4.3 steps 1-4), W in fp32 with one well-defined order of operations
// (steps 5-8), and y = x·W + b accumulated in double. Non-goals: speed and memory economy; a
// reference_matmul call materialises the whole k x n fp32 W.
#include "exl3/linear.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/fp16.h"
#include "exl3/hadamard.h"
#include "exl3/tile.h"

namespace trellis::exl3 {

namespace {

// `granularity` is 128 where Hadamard blocks are involved; decoding W_hat alone needs only
// whole 16 x 16 tiles.
void check_layer(const Exl3LinearView& layer, int64_t granularity = kHadamardSize) {
  if (layer.k <= 0 || layer.n <= 0 || layer.k % granularity != 0 || layer.n % granularity != 0)
    fail(ErrorKind::kInvalidArgument,
         "EXL3 layer shape {} x {}: both dimensions must be positive multiples of {}", layer.k,
         layer.n, granularity);
  if (layer.K < kMinK || layer.K > kMaxK)
    fail(ErrorKind::kInvalidArgument, "EXL3 layer bits per weight K = {}; expected {}..{}", layer.K,
         kMinK, kMaxK);
  const auto cb = static_cast<int>(layer.codebook);
  if (cb < 0 || cb > static_cast<int>(Codebook::kMul1))
    fail(ErrorKind::kInvalidArgument, "EXL3 layer codebook id {} is unknown", cb);
  if (!layer.trellis) fail(ErrorKind::kInvalidArgument, "EXL3 layer view lacks trellis");
}

void check_scales(const Exl3LinearView& layer) {
  if (!layer.suh || !layer.svh)
    fail(ErrorKind::kInvalidArgument, "EXL3 layer view lacks {}", !layer.suh ? "suh" : "svh");
}

// Element i of an fp16 vector at a possibly unaligned address, widened to fp32.
float load_fp16(const void* base, int64_t i) {
  uint16_t h;
  std::memcpy(&h, static_cast<const unsigned char*>(base) + 2 * i, 2);
  return fp16_to_fp32(h);
}

}  // namespace

void decode_what(const Exl3LinearView& layer, uint16_t* what) {
  check_layer(layer, kTileDim);
  const int64_t tiles_k = layer.k / kTileDim, tiles_n = layer.n / kTileDim;
  const uint16_t* table = codebook_table(layer.codebook);
  const auto* packed = static_cast<const unsigned char*>(layer.trellis);
  uint16_t states[kTileSize];
  for (int64_t tk = 0; tk < tiles_k; ++tk) {
    for (int64_t tn = 0; tn < tiles_n; ++tn) {
      // unpack_tile reads byte-wise, so the tile may start at any address.
      unpack_tile(packed + (tk * tiles_n + tn) * tile_bytes(layer.K), layer.K, states);
      for (int p = 0; p < kTileSize; ++p) {
        const int64_t row = kTileDim * tk + step_row(p), col = kTileDim * tn + step_col(p);
        what[row * layer.n + col] = table[states[p]];
      }
    }
  }
}

void reconstruct_weight(const Exl3LinearView& layer, float* w) {
  check_layer(layer);
  check_scales(layer);
  const int64_t k = layer.k, n = layer.n;
  {
    std::vector<uint16_t> what(static_cast<size_t>(k * n));
    decode_what(layer, what.data());
    for (int64_t i = 0; i < k * n; ++i) w[i] = fp16_to_fp32(what[static_cast<size_t>(i)]);
  }
  // Step 5: left transform, i.e. every column's 128-row blocks; step 6: scale rows by suh.
  std::vector<float> column(static_cast<size_t>(k));
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t i = 0; i < k; ++i) column[i] = w[i * n + j];
    hadamard128_fp32(column.data(), static_cast<size_t>(k));
    for (int64_t i = 0; i < k; ++i) w[i * n + j] = column[i];
  }
  for (int64_t i = 0; i < k; ++i) {
    const float su = load_fp16(layer.suh, i);
    float* row = w + i * n;
    for (int64_t j = 0; j < n; ++j) row[j] *= su;
    // Step 7: right transform of the row's 128-column blocks; step 8: scale columns by svh.
    hadamard128_fp32(row, static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) row[j] *= load_fp16(layer.svh, j);
  }
}

void reference_matmul(const Exl3LinearView& layer, const float* x, int64_t m, float* y) {
  check_layer(layer);
  if (m < 0) fail(ErrorKind::kInvalidArgument, "reference_matmul: negative row count {}", m);
  const int64_t k = layer.k, n = layer.n;
  std::vector<float> w(static_cast<size_t>(k * n));
  reconstruct_weight(layer, w.data());
  std::vector<double> acc(static_cast<size_t>(n));
  for (int64_t r = 0; r < m; ++r) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t i = 0; i < k; ++i) {
      const double xi = x[r * k + i];
      const float* wrow = w.data() + i * n;
      for (int64_t j = 0; j < n; ++j) acc[j] += xi * static_cast<double>(wrow[j]);
    }
    for (int64_t j = 0; j < n; ++j) {
      if (layer.bias) acc[j] += load_fp16(layer.bias, j);
      y[r * n + j] = static_cast<float>(acc[j]);
    }
  }
}

}  // namespace trellis::exl3
