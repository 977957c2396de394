// backends/cuda/cuda_ops.cu: the element-wise, normalization and dense-GEMV kernels of the CUDA
// backend (contracts in cuda_ops.h). Each kernel mirrors the CPU reference's arithmetic (same
// fp32 operation order where it matters: rms_norm's 1/sqrt, silu's division, rope's fp32 angle)
// so results differ from the CPU only by summation order. Compiled without fast math on purpose:
// sqrtf, expf, cosf and sinf are the accurate versions.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>

#include "backends/cuda/cuda_launch.cuh"
#include "backends/cuda/cuda_norm.cuh"
#include "backends/cuda/cuda_ops.h"
#include "backends/cuda/cuda_rope.cuh"
#include "backends/cuda/cuda_util.h"

namespace trellis::cuda {
namespace {

constexpr int kThreads = 256;

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

inline unsigned blocks_for(int64_t n, int64_t per_block = kThreads) {
  const int64_t b = (n + per_block - 1) / per_block;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 0x7fffffff ? 0x7fffffff : b));
}

__device__ __forceinline__ float load_elem(const void* p, int dtype, int64_t i) {
  switch (dtype) {
    case 0: return static_cast<const float*>(p)[i];
    case 1: return __half2float(static_cast<const __half*>(p)[i]);
    default: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
  }
}

__device__ __forceinline__ void store_elem(void* p, int dtype, int64_t i, float v) {
  switch (dtype) {
    case 0: static_cast<float*>(p)[i] = v; break;
    case 1: static_cast<__half*>(p)[i] = __float2half_rn(v); break;
    default: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v); break;
  }
}

int dtype_code(DType t, const char* op) {
  switch (t) {
    case DType::kF32: return 0;
    case DType::kF16: return 1;
    case DType::kBF16: return 2;
    default:
      raise(ErrorKind::kUnsupported,
            std::string("CUDA ") + op + ": dtype " + std::string(dtype_name(t)) + " is not supported (F32, F16, BF16)");
  }
}

__global__ void convert_kernel(const void* src, int src_t, void* dst, int dst_t, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    store_elem(dst, dst_t, i, load_elem(src, src_t, i));
}

__global__ void embedding_kernel(const void* table, int table_t, const int32_t* ids, int64_t dim, float* out) {
  pdl_begin();
  const int64_t r = blockIdx.y;
  const int64_t base = static_cast<int64_t>(ids[r]) * dim;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < dim; i += int64_t{gridDim.x} * blockDim.x)
    out[r * dim + i] = load_elem(table, table_t, base + i);
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// One warp per group (small groups: per-head q/k norms). With `residual` (fused add + norm):
// x += residual first, element by element as add_kernel does, then the norm of the new x.
__global__ void rms_norm_warp_kernel(float* x, const float* residual, const float* w, float eps, int64_t groups,
                                     int64_t group, float* out) {
  pdl_begin();
  const int64_t g = blockIdx.x * int64_t{blockDim.x / 32} + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (g >= groups) return;
  float* v = x + g * group;
  float ss = 0;
  for (int64_t i = lane; i < group; i += 32) {
    float e = v[i];
    if (residual) {
      e += residual[g * group + i];
      v[i] = e;
    }
    ss += e * e;
  }
  ss = warp_sum(ss);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(group) + eps);
  float* o = out + g * group;
  for (int64_t i = lane; i < group; i += 32) o[i] = v[i] * inv * w[i];  // each lane re-reads its own writes
}

// One block per group (whole rows); `residual` as above.
__global__ void rms_norm_block_kernel(float* x, const float* residual, const float* w, float eps, int64_t group,
                                      float* out) {
  pdl_begin();
  __shared__ float partial[kThreads / 32];
  float* v = x + blockIdx.x * group;
  float ss = 0;
  for (int64_t i = threadIdx.x; i < group; i += blockDim.x) {
    float e = v[i];
    if (residual) {
      e += residual[blockIdx.x * group + i];
      v[i] = e;
    }
    ss += e * e;
  }
  ss = warp_sum(ss);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = ss;
  __syncthreads();
  float total = 0;
  for (int i = 0; i < kThreads / 32; ++i) total += partial[i];
  const float inv = 1.0f / sqrtf(total / static_cast<float>(group) + eps);
  float* o = out + blockIdx.x * group;
  for (int64_t i = threadIdx.x; i < group; i += blockDim.x) o[i] = v[i] * inv * w[i];
}

// One block per row for whole-row norms (group % 4 == 0, 16-byte aligned rows): every thread
// loads its C float4 chunks (and the residual's) at once, so the row costs one memory round trip
// instead of one per loop iteration (the loop above cannot overlap its loads with the stores to
// x); values stay in registers between the sum of squares and the output.
template <int C>
__global__ void __launch_bounds__(1024) rms_norm_row_kernel(float* x, const float* residual, const float* w, float eps,
                                                            int64_t group, float* out) {
  pdl_begin();
  __shared__ float partial[32];
  const int64_t base = blockIdx.x * group;
  const int64_t chunks = group / 4;
  float4 v[C];
  float ss = 0;
#pragma unroll
  for (int c = 0; c < C; ++c) {
    const int64_t i = threadIdx.x + int64_t{c} * blockDim.x;
    v[c] = make_float4(0.f, 0.f, 0.f, 0.f);
    if (i < chunks) {
      v[c] = reinterpret_cast<const float4*>(x + base)[i];
      if (residual) {
        const float4 r = reinterpret_cast<const float4*>(residual + base)[i];
        v[c].x += r.x;
        v[c].y += r.y;
        v[c].z += r.z;
        v[c].w += r.w;
      }
    }
  }
#pragma unroll
  for (int c = 0; c < C; ++c) {
    const int64_t i = threadIdx.x + int64_t{c} * blockDim.x;
    if (residual && i < chunks) reinterpret_cast<float4*>(x + base)[i] = v[c];
    ss = __fadd_rn(ss, sumsq4(v[c].x, v[c].y, v[c].z, v[c].w));
  }
  // With C = 1 and group % 128 == 0, warp w's sum is that of the row's 128-element chunk w, in
  // the order of cuda_norm.cuh, which the EXL3 GEMV's fused residual add and norm follow too.
  ss = warp_sum_xor(ss);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = ss;
  __syncthreads();
  float total = 0;
  for (int i = 0; i < static_cast<int>(blockDim.x / 32); ++i) total = __fadd_rn(total, partial[i]);
  const float inv = rms_inv(total, static_cast<int>(group), eps);
#pragma unroll
  for (int c = 0; c < C; ++c) {
    const int64_t i = threadIdx.x + int64_t{c} * blockDim.x;
    if (i < chunks) {
      const float4 wv = reinterpret_cast<const float4*>(w)[i];
      reinterpret_cast<float4*>(out + base)[i] = make_float4(rms_apply(v[c].x, inv, wv.x), rms_apply(v[c].y, inv, wv.y),
                                                             rms_apply(v[c].z, inv, wv.z), rms_apply(v[c].w, inv, wv.w));
    }
  }
}

__global__ void rope_kernel(float* x, int64_t cols, int64_t head_dim, const int32_t* pos, const float* inv_freq,
                            float scaling) {
  pdl_begin();
  const int64_t r = blockIdx.y, half = head_dim / 2, pairs = (cols / head_dim) * half;
  const float p = static_cast<float>(pos[r]);
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < pairs; t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t h = t / half, i = t % half;
    float* v = x + r * cols + h * head_dim;
    rope_pair(v[i], v[i + half], p, inv_freq[i], scaling, v[i], v[i + half]);
  }
}

// blockIdx.z: 0 rotates q, 1 rotates k (and stores it when kc is set), 2 stores v. Same
// arithmetic per element as rope_kernel and kv_store_kernel.
__global__ void rope_qk_store_kernel(float* q, int64_t q_cols, float* k, int64_t k_cols, const float* v,
                                     int64_t head_dim, const int32_t* pos, const float* inv_freq, float scaling,
                                     __half* kc, __half* vc) {
  pdl_begin();
  const int64_t r = blockIdx.y, half = head_dim / 2, z = blockIdx.z;
  const int64_t step = int64_t{gridDim.x} * blockDim.x, first = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  const int64_t dst = static_cast<int64_t>(pos[r]) * k_cols;
  if (z == 2) {
    for (int64_t i = first; i < k_cols; i += step) vc[dst + i] = __float2half_rn(v[r * k_cols + i]);
    return;
  }
  const int64_t cols = z == 0 ? q_cols : k_cols, pairs = (cols / head_dim) * half;
  float* x = z == 0 ? q : k;
  const float p = static_cast<float>(pos[r]);
  for (int64_t t = first; t < pairs; t += step) {
    const int64_t h = t / half, i = t % half;
    float* row = x + r * cols + h * head_dim;
    float y1, y2;
    rope_pair(row[i], row[i + half], p, inv_freq[i], scaling, y1, y2);
    row[i] = y1;
    row[i + half] = y2;
    if (z == 1 && kc) {
      kc[dst + h * head_dim + i] = __float2half_rn(y1);
      kc[dst + h * head_dim + i + half] = __float2half_rn(y2);
    }
  }
}

__global__ void kv_store_kernel(const float* k, const float* v, const int32_t* pos, int64_t width, __half* kc,
                                __half* vc) {
  pdl_begin();
  const int64_t r = blockIdx.y, dst = static_cast<int64_t>(pos[r]) * width;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < width; i += int64_t{gridDim.x} * blockDim.x) {
    kc[dst + i] = __float2half_rn(k[r * width + i]);
    vc[dst + i] = __float2half_rn(v[r * width + i]);
  }
}

__global__ void silu_mul_kernel(const float* g, const float* u, float* o, int64_t n) {
  pdl_begin();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

__global__ void add_kernel(float* x, const float* y, int64_t n) {
  pdl_begin();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    x[i] += y[i];
}

constexpr int kGemvWarps = 8;

// One warp per output row; M activation rows share each weight load.
template <int M, bool kVec>
__global__ void __launch_bounds__(kGemvWarps * 32) gemv_f16_kernel(const __half* __restrict__ w,
                                                                   const float* __restrict__ x,
                                                                   const float* __restrict__ bias, int64_t in,
                                                                   int64_t out, float* __restrict__ y) {
  pdl_begin();
  const int64_t row = blockIdx.x * int64_t{kGemvWarps} + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= out) return;
  const __half* wr = w + row * in;
  float acc[M];
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = 0;
  if constexpr (kVec) {
#pragma unroll 4
    for (int64_t i = lane * 8; i < in; i += 256) {
      const uint4 raw = __ldg(reinterpret_cast<const uint4*>(wr + i));
      const __half2* h = reinterpret_cast<const __half2*>(&raw);
      float wf[8];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float2 f = __half22float2(h[j]);
        wf[2 * j] = f.x;
        wf[2 * j + 1] = f.y;
      }
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const float4 a = __ldg(reinterpret_cast<const float4*>(x + m * in + i));
        const float4 b = __ldg(reinterpret_cast<const float4*>(x + m * in + i + 4));
        acc[m] += wf[0] * a.x + wf[1] * a.y + wf[2] * a.z + wf[3] * a.w + wf[4] * b.x + wf[5] * b.y + wf[6] * b.z +
                  wf[7] * b.w;
      }
    }
  } else {
    for (int64_t i = lane; i < in; i += 32) {
      const float wv = __half2float(wr[i]);
#pragma unroll
      for (int m = 0; m < M; ++m) acc[m] += wv * x[m * in + i];
    }
  }
#pragma unroll
  for (int m = 0; m < M; ++m) {
    const float s = warp_sum(acc[m]);
    if (lane == 0) y[m * out + row] = bias ? s + bias[row] : s;
  }
}

template <int M>
void launch_gemv(const uint16_t* w, const float* x, const float* bias, int64_t in, int64_t out, float* y, bool vec,
                 cudaStream_t stream) {
  const unsigned grid = blocks_for(out, kGemvWarps);
  const auto* wh = reinterpret_cast<const __half*>(w);
  launch("dense_gemv_f16", vec ? gemv_f16_kernel<M, true> : gemv_f16_kernel<M, false>, dim3(grid),
         dim3(kGemvWarps * 32), 0, stream, wh, x, bias, in, out, y);
}

__global__ void split_f16_kernel(const float* x, int64_t m, int64_t k, __half* xs) {
  pdl_begin();
  const int64_t n = m * k;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const float v = x[i];
    const __half hi = __float2half_rn(v);
    xs[i] = hi;
    xs[n + i] = __float2half_rn(v - __half2float(hi));
  }
}

__global__ void fill_rows_kernel(float* y, const float* bias, int64_t m, int64_t n) {
  pdl_begin();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < m * n; i += int64_t{gridDim.x} * blockDim.x)
    y[i] = bias[i % n];
}

// Grid-stride kernels: enough blocks to fill the GPU, no more.
inline unsigned flat_blocks(int64_t n) {
  const unsigned b = blocks_for(n);
  return b < 4096 ? b : 4096;
}

}  // namespace

void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  convert_kernel<<<flat_blocks(n), kThreads, 0, stream>>>(src, dtype_code(src_dtype, "convert"), dst,
                                                          dtype_code(dst_dtype, "convert"), n);
  check_launch("convert");
}

void embedding(const void* table, DType table_dtype, const int32_t* ids, int64_t rows, int64_t dim, float* out,
               cudaStream_t stream) {
  if (rows <= 0) return;
  const dim3 grid(blocks_for(dim) < 64 ? blocks_for(dim) : 64, static_cast<unsigned>(rows));
  launch("embedding", embedding_kernel, dim3(grid), dim3(kThreads), 0, stream, table,
         dtype_code(table_dtype, "embedding"), ids, dim, out);
}

void rms_norm(const float* x, const float* weight, float eps, int64_t groups, int64_t group, float* out,
              cudaStream_t stream) {
  add_rms_norm(const_cast<float*>(x), nullptr, weight, eps, groups, group, out, stream);  // x is only read
}

void add_rms_norm(float* x, const float* residual, const float* weight, float eps, int64_t groups, int64_t group,
                  float* out, cudaStream_t stream) {
  if (groups <= 0) return;
  const char* what = residual ? "add + rms_norm" : "rms_norm";
  if (group <= 512)
    launch(what, rms_norm_warp_kernel, dim3(blocks_for(groups, kThreads / 32)), dim3(kThreads), 0, stream, x, residual,
           weight, eps, groups, group, out);
  else if (group % 4 == 0 && group <= 4 * 1024 * 8 && aligned16(x) && aligned16(residual) && aligned16(weight) &&
           aligned16(out)) {
    const int64_t chunks = group / 4;
    const int c = static_cast<int>((chunks + 1023) / 1024);
    const int threads = static_cast<int>(std::min<int64_t>(1024, (chunks + 31) / 32 * 32));
    auto kernel = c == 1 ? rms_norm_row_kernel<1> : c == 2 ? rms_norm_row_kernel<2>
                                              : c <= 4 ? rms_norm_row_kernel<4>
                                                       : rms_norm_row_kernel<8>;
    launch(what, kernel, dim3(static_cast<unsigned>(groups)), dim3(threads), 0, stream, x, residual, weight, eps, group,
           out);
  } else
    launch(what, rms_norm_block_kernel, dim3(static_cast<unsigned>(groups)), dim3(kThreads), 0, stream, x, residual,
           weight, eps, group, out);
}

void rope(float* x, int64_t rows, int64_t cols, int64_t head_dim, const int32_t* pos, const float* inv_freq,
          float scaling, cudaStream_t stream) {
  if (rows <= 0) return;
  const int64_t pairs = cols / 2;
  const dim3 grid(blocks_for(pairs) < 64 ? blocks_for(pairs) : 64, static_cast<unsigned>(rows));
  launch("rope", rope_kernel, dim3(grid), dim3(kThreads), 0, stream, x, cols, head_dim, pos, inv_freq, scaling);
}

void kv_store(const float* k, const float* v, const int32_t* pos, int64_t rows, int64_t width, uint16_t* k_cache,
              uint16_t* v_cache, cudaStream_t stream) {
  if (rows <= 0) return;
  const dim3 grid(blocks_for(width) < 64 ? blocks_for(width) : 64, static_cast<unsigned>(rows));
  launch("kv_store", kv_store_kernel, dim3(grid), dim3(kThreads), 0, stream, k, v, pos, width,
         reinterpret_cast<__half*>(k_cache), reinterpret_cast<__half*>(v_cache));
}

void rope_qk_store(float* q, int64_t q_cols, float* k, int64_t k_cols, const float* v, int64_t rows, int64_t head_dim,
                   const int32_t* pos, const float* inv_freq, float scaling, uint16_t* k_cache, uint16_t* v_cache,
                   cudaStream_t stream) {
  if (rows <= 0) return;
  const int64_t pairs = std::max(q_cols, k_cols) / 2;
  const dim3 grid(blocks_for(pairs) < 64 ? blocks_for(pairs) : 64, static_cast<unsigned>(rows), k_cache ? 3u : 2u);
  launch("rope + kv_store", rope_qk_store_kernel, grid, dim3(kThreads), 0, stream, q, q_cols, k, k_cols, v, head_dim,
         pos, inv_freq, scaling, reinterpret_cast<__half*>(k_cache), reinterpret_cast<__half*>(v_cache));
}

void silu_mul(const float* gate, const float* up, float* out, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  launch("silu_mul", silu_mul_kernel, dim3(flat_blocks(n)), dim3(kThreads), 0, stream, gate, up, out, n);
}

void add(float* x, const float* y, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  launch("add", add_kernel, dim3(flat_blocks(n)), dim3(kThreads), 0, stream, x, y, n);
}

// One warp per row: a finiteness vote, then the row or zeros.
__global__ void gram_filter_kernel(const float* __restrict__ x, int64_t rows, int64_t cols, float* __restrict__ xs,
                                   float* __restrict__ stats) {
  pdl_begin();
  const int lane = threadIdx.x % 32;
  const int64_t r = blockIdx.x * int64_t{blockDim.x / 32} + threadIdx.x / 32;
  if (r >= rows) return;
  const float* src = x + r * cols;
  float* dst = xs + r * cols;
  bool finite = true;
  for (int64_t c = lane; c < cols; c += 32) finite &= isfinite(src[c]);
  finite = __all_sync(0xffffffffu, finite);
  for (int64_t c = lane; c < cols; c += 32) dst[c] = finite ? src[c] : 0.0f;
  if (lane == 0) atomicAdd(&stats[finite ? 0 : 1], 1.0f);
}

void gram_filter(const float* x, int64_t rows, int64_t cols, float* xs, float* stats, cudaStream_t stream) {
  if (rows <= 0) return;
  launch("gram_filter", gram_filter_kernel, dim3(blocks_for(rows, kThreads / 32)), dim3(kThreads), 0, stream, x, rows,
         cols, xs, stats);
}

void dense_gemv_f16(const uint16_t* w, const float* x, const float* bias, int64_t m, int64_t in, int64_t out,
                    float* y, cudaStream_t stream) {
  if (m <= 0 || out <= 0) return;
  const bool vec = in % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0;
  switch (m) {
    case 1: launch_gemv<1>(w, x, bias, in, out, y, vec, stream); break;
    case 2: launch_gemv<2>(w, x, bias, in, out, y, vec, stream); break;
    case 3: launch_gemv<3>(w, x, bias, in, out, y, vec, stream); break;
    case 4: launch_gemv<4>(w, x, bias, in, out, y, vec, stream); break;
    case 5: launch_gemv<5>(w, x, bias, in, out, y, vec, stream); break;
    case 6: launch_gemv<6>(w, x, bias, in, out, y, vec, stream); break;
    case 7: launch_gemv<7>(w, x, bias, in, out, y, vec, stream); break;
    case 8: launch_gemv<8>(w, x, bias, in, out, y, vec, stream); break;
    default: raise(ErrorKind::kInternal, "dense_gemv_f16: m = " + std::to_string(m) + " outside 1..8");
  }
  check_launch("dense_gemv_f16");
}

void split_f16(const float* x, int64_t m, int64_t k, uint16_t* xs, cudaStream_t stream) {
  if (m * k <= 0) return;
  launch("split_f16", split_f16_kernel, dim3(flat_blocks(m * k)), dim3(kThreads), 0, stream, x, m, k,
         reinterpret_cast<__half*>(xs));
}

void fill_rows(float* y, const float* bias, int64_t m, int64_t n, cudaStream_t stream) {
  if (m * n <= 0) return;
  launch("fill_rows", fill_rows_kernel, dim3(flat_blocks(m * n)), dim3(kThreads), 0, stream, y, bias, m, n);
}

}  // namespace trellis::cuda
