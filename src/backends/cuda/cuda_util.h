// backends/cuda/cuda_util.h: CUDA / cuBLAS error checks that raise trellis::Error, and the one
// device allocator of the backend (so every allocation failure says what it was for and how much
// memory was free).
//
// Goals: no CUDA error aborts the process; every message names the op or tensor. Non-goals: a
// caching allocator (weights and activations are allocated once per model; scratch grows rarely).
// Usable from .cu files: nothing here includes fmt (nvcc's front end cannot compile fmt's
// compile-time format strings in C++20 mode); the definitions live in cuda_util.cpp.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "trellis/error.h"

namespace trellis::cuda {

// A switch read from the environment once (set and not empty: on unless "0"; else `dflt`) and
// overridden by its test hook (a store of 0 or 1 into `slot`, which starts at -1).
bool cached_switch(std::atomic<int>& slot, const char* env, bool dflt);

// Throws trellis::Error(kind, message).
[[noreturn]] void raise(ErrorKind kind, const std::string& message);

// Throws kInternal "CUDA error in <what>: <name>: <description>" when `e` is not cudaSuccess
// (and clears the last error); kOutOfMemory for cudaErrorMemoryAllocation.
void check_failed(cudaError_t e, std::string_view what);
inline void check(cudaError_t e, std::string_view what) {
  if (e != cudaSuccess) check_failed(e, what);
}
void check_failed(cublasStatus_t s, std::string_view what);
inline void check(cublasStatus_t s, std::string_view what) {
  if (s != CUBLAS_STATUS_SUCCESS) check_failed(s, what);
}

// A kernel launch's configuration error, checked right after the launch (cheap: no sync).
inline void check_launch(std::string_view what) { check(cudaGetLastError(), what); }

// fp16 parts that fp32 activations enter a prefill GEMM (cuBLAS, fp32 accumulation) as, for m
// rows: 2 (hi + lo: fp32-level accuracy, twice the tensor-core work) up to kSplitActMaxRows rows,
// where the GEMM is bound by reading the weights and the second part is nearly free; 1 (rounded
// once to fp16, relative error <= 2^-11 per element, the precision ExLlamaV3 runs at) above, where
// tensor-core work is the bound. TRELLIS_CUDA_EXACT_PREFILL=1 keeps 2 at every size.
inline constexpr int64_t kSplitActMaxRows = 63;
int gemm_act_parts(int64_t m);
// Test hook: overrides TRELLIS_CUDA_EXACT_PREFILL for launches recorded after the call.
void set_exact_prefill(bool exact);

// Whether an EXL3 linear with m rows multiplies the reconstructed weight W (both Hadamard
// transforms and sign vectors folded in, cuda_exl3_reconstruct.cu) instead of transforming the
// activations around a GEMM on Ŵ. Never with exact prefill (gemm_act_parts 2): W is rounded to
// fp16. TRELLIS_CUDA_FUSED_RECONSTRUCT=<rows> turns it on from that many rows (0: off).
// Off by default (kFusedReconstructRows = 0): on the H200 the reconstruction costs about as much
// as the transforms it removes at 2048-row chunks (docs/BENCHMARKS.md, 2026-12-04 session 8), so
// it only pays once exl3_reconstruct runs closer to its memory bound.
inline constexpr int64_t kFusedReconstructRows = 0;
bool fused_reconstruct(int64_t m);
// Test hook: the threshold in rows (0: off), overriding the default and the environment.
void set_fused_reconstruct_rows(int64_t rows);

// Whether the EXL3 prefill path (GEMM on Ŵ between the activation transforms) shares work across
// linears: one input transform for q/k/v and gate/up (x read once), one output-transform launch
// per group, and the gated MLP's bridge (CudaExl3Linear::forward_mlp: gate/up output transforms,
// silu·up and down's input transform in one pass). On unless TRELLIS_CUDA_PREFILL_FUSION=0.
bool prefill_fusion();
// Test hook: overrides the environment for launches recorded after the call.
void set_prefill_fusion(bool on);
// Whether EXL3 transforms of 64 or more rows use the four-rows-per-warp kernels
// (cuda_exl3_transform.cu; bit-identical results). On unless TRELLIS_CUDA_WIDE_TRANSFORMS=0.
bool wide_transforms();
// Test hook: overrides the environment.
void set_wide_transforms(bool on);

// Whether the EXL3 GEMV (m <= 8) hands the tensor cores each decoded weight's two fp16 halves
// as two products against the same activation, instead of adding the halves into one fp16 value
// first (cuda_exl3_gemv.cu, "halves"). That saves the pairing (prmt) and the f16x2 add per weight
// (3INST/MCG) or the prmt and f16x2 FMA (MUL1, whose affine map then runs once per output), at
// twice the MMAs. Each weight then enters unrounded: within half an fp16 ulp of the stored value
// (rms relative error of a product ~1.4e-4 instead of fp32-level). Off unless
// TRELLIS_CUDA_GEMV_HALVES=1 (H200, session 13: MCG GEMV 1.03-1.06x, MUL1 0.94-0.98x, 8B MCG
// decode +2.2%; H100, session 17, on top of weights-as-A: forward 0.99-1.09x, 8B MCG decode
// +3.7%): kept opt-in because the weights then differ from the format's fp16 values.
bool gemv_halves();
// Test hook: overrides the environment for launches recorded after the call.
void set_gemv_halves(bool on);
// Whether the EXL3 GEMV at m <= 4 hands the decoded weights to mma.m16n8k16 as its A operand (16
// output columns x 16 k per tile) and the activations as B (columns: each batch row's hi and lo
// parts), instead of weights as B and activations as A (rows: hi and lo parts, 14 of 16 rows zero
// at m = 1): one MMA per tile instead of two (two instead of four with gemv_halves) and half the
// accumulator registers, for the same products and sums (cuda_exl3_gemv.cu, "*WA" modes). On by
// default (H100, session 17: bitwise equal outputs in all 1728 test cases; forward 1.04-1.10x on
// the four large shapes, K = 2, 3, both codebooks; 8B MCG decode +4.1%); TRELLIS_CUDA_GEMV_WEIGHTS_A=0
// keeps the weights as the B operand.
bool gemv_weights_a();
void set_gemv_weights_a(bool on);  // test hook
// Whether the EXL3 GEMV (m <= 8) applies the output transform itself: the last block of each
// 128-column group sums the k-split partials and writes y (same bits as exl3_hadamard_out), one
// launch fewer per linear (group). Off unless TRELLIS_CUDA_GEMV_FUSED_OUT=1; gemv_fused_in (the
// default) fuses the output too, and down's fused-silu input then gets only this.
bool gemv_fused_out();
void set_gemv_fused_out(bool on);  // test hook
// Whether the EXL3 GEMV also applies the input transform itself (each block transforms its own
// k range of x into shared memory; same bits as exl3_hadamard_in), with the output fused as well:
// one launch per linear (group) in decode instead of three. Not for the fused silu input (down's).
// On by default (H200, session 13: 4096x4096 forward 1.28-1.30x, 8B decode +3.3%);
// TRELLIS_CUDA_GEMV_FUSED_IN=0 keeps the separate transform kernels.
bool gemv_fused_in();
void set_gemv_fused_in(bool on);  // test hook
// Whether the default EXL3 GEMV (paired decode, no fused transform) runs the build capped at 96
// registers for 10 resident blocks per SM instead of ~110-120 registers and 8 blocks (ptxas, sm_90;
// its loop then has ~8% more instructions: K=3 MCG 473 against 439). Same results. Off unless
// TRELLIS_CUDA_GEMV_OCCUPANCY=1 (ncu on the H100, session 17, K=3 MCG 8192x28672: 83.8 us
// against the unfused kernel's 75.5, occupancy 25% against 21%: slower).
bool gemv_occupancy();
void set_gemv_occupancy(bool on);  // test hook
// Whether the CUDA backend fuses the decode step's residual stream into its EXL3 GEMVs (needs
// gemv_fused_in; cuda_backend.h LastExl3): the residual add into the linear before it, the
// following whole-row RMSNorm into the linears after it, and the MLP's silu(gate) · up into down's
// input, without writing the product. Bit-identical; 3 launches fewer per Llama layer. On unless
// TRELLIS_CUDA_DECODE_FUSION=0.
bool decode_fusion();
void set_decode_fusion(bool on);  // test hook

// Blocks per SM the EXL3 GEMV's k-split aims its grid at (exl3k::kGemvBlocksPerSm = 12 unless
// TRELLIS_CUDA_GEMV_BLOCKS_PER_SM = 1..32 says otherwise; read when a linear is created). 12 won
// the session 5 sweep when the kernel held 72 registers; at today's ~104-120 only 8 blocks are
// resident (ncu: 1.7 waves on 8192x28672), yet 12 still beats 8 on the H100 (session 17:
// 8192x28672 forward 1.15-1.20x, the 8B shapes within 2%, 8B decode +1%). Larger values are
// untried (bench/gpu_acceptance.sh ab takes VAR=a/b).
int gemv_blocks_per_sm();
// Whether launch() (cuda_launch.cuh) gives kernels on the current device the programmatic
// dependent launch attribute: compute capability >= 9.0 and TRELLIS_CUDA_PDL not "0".
bool pdl_enabled();

// cudaMalloc of `bytes` for `what` (a tensor or buffer name). On failure: kOutOfMemory naming
// `what`, the bytes needed and the bytes free / total on the device.
void* device_malloc(size_t bytes, std::string_view what);

}  // namespace trellis::cuda
