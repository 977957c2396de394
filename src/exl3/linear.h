// exl3/linear.h: one EXL3 linear layer as views of its tensors, and the scalar reference math
// over it: decoding W_hat, reconstructing W, and y = x·W + b (spec 4.2-4.4).
#pragma once

#include <cstddef>
#include <cstdint>

#include "exl3/codebook.h"

namespace trellis::exl3 {

// Views of one layer's tensors (spec 2.3). Pointers may be unaligned: they can point straight
// into a safetensors mapping. k, n are the padded sizes (multiples of 128).
struct Exl3LinearView {
  int64_t k = 0;                 // input features (rows of W)
  int64_t n = 0;                 // output features (columns of W)
  int K = 0;                     // bits per weight, 1..8
  Codebook codebook = Codebook::k3Inst;
  const void* trellis = nullptr; // [k/16][n/16][16K] int16, file order
  const void* suh = nullptr;     // [k] fp16
  const void* svh = nullptr;     // [n] fp16
  const void* bias = nullptr;    // [n] fp16, optional
};

// Decodes W_hat (k x n, row-major binary16), exact (spec 4.3 steps 1-4). Only needs trellis;
// k and n may be any positive multiples of 16 here (whole tiles), e.g. for a slice.
void decode_what(const Exl3LinearView& layer, uint16_t* what);

// Reconstructs W (k x n, row-major fp32) in the model basis: W_hat in fp32, left Hadamard,
// * suh, right Hadamard, * svh, all in fp32 (spec 4.3 steps 5-8, "more accurate than either
// ExLlamaV3 path").
void reconstruct_weight(const Exl3LinearView& layer, float* w);

// Reference forward: y (m x n fp32) = x (m x k fp32) · W + bias, through reconstruct_weight and
// an fp32 (double-accumulated) matmul. Slow on purpose: the oracle for every backend kernel.
void reference_matmul(const Exl3LinearView& layer, const float* x, int64_t m, float* y);

}  // namespace trellis::exl3
