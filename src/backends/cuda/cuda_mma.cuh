// backends/cuda/cuda_mma.cuh: warp-level tensor-core and async-copy primitives (sm_80+) shared by
// the attention and EXL3 kernels: mma.sync m16n8k16 (fp16 in, fp32 accumulate), ldmatrix, cp.async.
//
// Fragment layout of m16n8k16 (lane = 4g + t, g = lane / 4, t = lane % 4; pairs are packed low
// element first):
//   A (16×16, row): a0 = (row g, k 2t..2t+1), a1 = (row g+8, k 2t..), a2 = (row g, k 2t+8..),
//                   a3 = (row g+8, k 2t+8..)
//   B (16×8, col):  b0 = (k 2t..2t+1, col g), b1 = (k 2t+8..2t+9, col g)
//   C/D (16×8):     c0, c1 = (row g, cols 2t, 2t+1), c2, c3 = (row g+8, cols 2t, 2t+1)
// So the C fragments of two adjacent 8-column tiles, rounded to fp16 pairs, are exactly the A
// fragment of one 16-wide k step (tile 2c: a0, a1; tile 2c+1: a2, a3).
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

namespace trellis::cuda {

// fp16 pair (lo in the low 16 bits), round to nearest.
__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// c += a·b on one m16n8k16 tile (layouts above).
__device__ __forceinline__ void mma_m16n8k16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// The same with the A fragment as one 16-byte vector {a0, a1, a2, a3} (as loaded from memory).
__device__ __forceinline__ void mma_m16n8k16(float (&c)[4], const uint4& a, uint32_t b0, uint32_t b1) {
  const uint32_t r[4] = {a.x, a.y, a.z, a.w};
  mma_m16n8k16(c, r, b0, b1);
}

// Four 8×8 fp16 matrices from shared memory: lane l gives the address of row l % 8 of matrix
// l / 8 (16 bytes, 16-byte aligned); r[i] receives, of matrix i, row l / 4, cols 2(l % 4) and +1.
// With .trans the matrix is transposed on the way: r[i] = (rows 2(l % 4) and +1, col l / 4).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const __half* row) {
  const auto s = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s)
               : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const __half* row) {
  const auto s = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s)
               : "memory");
}

// 16 bytes global -> shared, asynchronous, bypassing L1 and registers (both 16-byte aligned).
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  const auto d = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d), "l"(src) : "memory");
}
// The same, except with valid false
// nothing is read (src must still be a valid address) and the 16 bytes become zeros.
__device__ __forceinline__ void cp_async16_or_zero(void* dst, const void* src, bool valid) {
  const auto d = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  const uint32_t n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(src), "r"(n) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// 2^x (ex2.approx, relative error ~2^-22, far below an fp16 rounding); 2^-inf = +0.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

}  // namespace trellis::cuda
