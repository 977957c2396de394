// tests/ops/cuda_ops_test.cpp: every CUDA backend op against the CPU backend (the reference for
// every op) on odd sizes, offset views and guard rows after outputs: uploads and downloads in
// every dtype pair, embedding of fp16/bf16/fp32 tables, RMSNorm (row and per-head groups, the
// warp and the block kernel), dense fp16/bf16/fp32 linears on the GEMV (m <= 8) and cuBLAS paths,
// RoPE, kv_store and GQA attention (prefill, decode with flash-decoding splits, sliding window,
// head_dim 18..256), silu_mul, add; CUDA-graph replays equal to eager runs; out-of-memory and
// unsupported-shape errors. Skips when there is no CUDA device.
#if TRELLIS_WITH_CUDA

#include <gtest/gtest.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <vector>

#include "core/fp16.h"
#include "exl3/linear.h"
#include "trellis/error.h"
#include "ops/ops_test_util.h"
#include "backends/cuda/cuda_attention_flash.h"
#include "ops/cuda_test_util.h"
#include "test_util.h"

namespace trellis {
namespace {

using test::random_floats;
using test::f32_view;
using test::fetch;

using test::cuda_rel_rms;

Backend& cpu_backend() {
  static std::unique_ptr<Backend> cpu = make_cpu_backend(2);
  return *cpu;
}

// Host data of `v` in dtype `dt` (rounded once).
std::vector<uint16_t> narrow(const std::vector<float>& v, DType dt) {
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = dt == DType::kF16 ? fp32_to_fp16(v[i]) : fp32_to_bf16(v[i]);
  return h;
}
float round_to(float f, DType dt) {
  if (dt == DType::kF16) return fp16_to_fp32(fp32_to_fp16(f));
  if (dt == DType::kBF16) return bf16_to_fp32(fp32_to_bf16(f));
  return f;
}

TEST(CudaOps, DeviceInfo) {
  TRELLIS_CUDA_OR_SKIP(cu);
  const DeviceInfo& info = cu->info();
  EXPECT_EQ(info.backend, "cuda");
  EXPECT_FALSE(info.name.empty());
  EXPECT_EQ(info.subgroup_size, 32);
  EXPECT_GT(info.threads, 0);
  EXPECT_GT(info.memory_bytes, 0u);
}

TEST(CudaOps, UploadDownloadEveryDtypePairAndAlloc) {
  TRELLIS_CUDA_OR_SKIP(cu);
  const auto v = random_floats(37 * 3, 1, 3.0f);
  for (DType src : {DType::kF32, DType::kF16, DType::kBF16}) {
    std::vector<uint16_t> h;
    TensorView view = f32_view(v, {37, 3});
    std::vector<float> host_value(v);
    if (src != DType::kF32) {
      h = narrow(v, src);
      view = TensorView{src, {37, 3}, reinterpret_cast<const std::byte*>(h.data())};
      for (auto& f : host_value) f = round_to(f, src);
    }
    for (DType dst : {DType::kF32, DType::kF16, DType::kBF16}) {
      DeviceTensor t = cu->upload(view, dst);
      const auto got = fetch(*cu, t);
      for (size_t i = 0; i < v.size(); ++i)
        ASSERT_EQ(got[i], round_to(host_value[i], dst)) << dtype_name(src) << " -> " << dtype_name(dst) << " " << i;
      // A view of rows 10..12 at an offset.
      t = t.first_rows(3);
      t.offset = 10 * 3 * dtype_size(dst);
      const auto part = fetch(*cu, t);
      for (size_t i = 0; i < part.size(); ++i) EXPECT_EQ(part[i], round_to(host_value[30 + i], dst));
    }
  }
  for (DType dt : {DType::kF32, DType::kF16})
    for (float f : fetch(*cu, cu->alloc(dt, {5, 7}))) EXPECT_EQ(f, 0.0f);
}

TEST(CudaOps, EmbeddingFp16Bf16Fp32Tables) {
  TRELLIS_CUDA_OR_SKIP(cu);
  const int64_t vocab = 37, dim = 19;
  const auto table = random_floats(static_cast<size_t>(vocab * dim), 2);
  const std::vector<int32_t> ids = {3, 0, 36, 5, 5};
  for (DType dt : {DType::kF16, DType::kBF16, DType::kF32}) {
    const DeviceTensor t = cu->upload(f32_view(table, {vocab, dim}), dt);
    DeviceTensor out = cu->alloc(DType::kF32, {6, dim});
    DeviceTensor first = out.first_rows(5);
    cu->embedding(t, ids, first);
    const auto got = fetch(*cu, out);
    for (size_t r = 0; r < ids.size(); ++r)
      for (int64_t i = 0; i < dim; ++i)
        ASSERT_EQ(got[r * dim + static_cast<size_t>(i)], round_to(table[static_cast<size_t>(ids[r] * dim + i)], dt))
            << dtype_name(dt);
    for (int64_t i = 0; i < dim; ++i) EXPECT_EQ(got[static_cast<size_t>(5 * dim + i)], 0.0f) << "guard row written";
  }
}

// The host-resident table path: rows gathered on the host equal the table's values exactly
// (no fp16 rounding of an fp32 or bf16 table), in eager and repeated (graph) runs; bad ids fail.
TEST(CudaOps, EmbeddingFromHostTable) {
  TRELLIS_CUDA_OR_SKIP(cu);
  const int64_t vocab = 41, dim = 23;
  const auto table = random_floats(static_cast<size_t>(vocab * dim), 5);
  for (DType dt : {DType::kF16, DType::kBF16, DType::kF32}) {
    std::vector<uint16_t> narrow_table;
    TensorView view = f32_view(table, {vocab, dim});
    if (dt != DType::kF32) {
      narrow_table = narrow(table, dt);
      view = TensorView{dt, {vocab, dim}, reinterpret_cast<const std::byte*>(narrow_table.data())};
    }
    for (const std::vector<int32_t>& ids : {std::vector<int32_t>{40, 0, 7, 7}, std::vector<int32_t>{3},
                                            std::vector<int32_t>{40, 0, 7, 7}}) {
      DeviceTensor out = cu->alloc(DType::kF32, {static_cast<int64_t>(ids.size()) + 1, dim});
      DeviceTensor first = out.first_rows(static_cast<int64_t>(ids.size()));
      cu->embedding_host(view, ids, first);
      const auto got = fetch(*cu, out);
      for (size_t r = 0; r < ids.size(); ++r)
        for (int64_t i = 0; i < dim; ++i)
          ASSERT_EQ(got[r * dim + static_cast<size_t>(i)], round_to(table[static_cast<size_t>(ids[r] * dim + i)], dt))
              << dtype_name(dt) << " row " << r;
      for (int64_t i = 0; i < dim; ++i)
        EXPECT_EQ(got[ids.size() * dim + static_cast<size_t>(i)], 0.0f) << "guard row written";
    }
    DeviceTensor out = cu->alloc(DType::kF32, {1, dim});
    const std::vector<int32_t> bad = {static_cast<int32_t>(vocab)};
    EXPECT_THROW(cu->embedding_host(view, bad, out), Error);
  }
}

TEST(CudaOps, RmsNormPlainGroupedAndOffset) {
  TRELLIS_CUDA_OR_SKIP(cu);
  Backend& cpu = cpu_backend();
  struct Shape2 {
    int64_t rows, cols, group;
  };
  // Warp kernel (groups <= 512), row kernel (float4 rows: 1000, 4100 with two chunks per thread,
  // 16384 with four) and the generic block kernel (1030: not a multiple of 4).
  for (const Shape2 s : {Shape2{5, 72, 72}, Shape2{5, 72, 24}, Shape2{3, 1000, 1000}, Shape2{2, 4100, 4100},
                         Shape2{2, 16384, 16384}, Shape2{3, 1030, 1030}, Shape2{4, 3 * 130, 130}}) {
    const auto x = random_floats(static_cast<size_t>(s.rows * s.cols), 3, 4.0f);
    const auto w = random_floats(static_cast<size_t>(s.group), 4);
    for (bool last_row : {false, true}) {
      std::vector<float> want, got;
      for (Backend* be : {&cpu, static_cast<Backend*>(cu)}) {
        DeviceTensor xt = be->upload(f32_view(x, {s.rows, s.cols}), DType::kF32);
        const DeviceTensor wt = be->upload(f32_view(w, {s.group}), DType::kF32);
        DeviceTensor out = be->alloc(DType::kF32, {s.rows, s.cols});
        if (last_row) {  // a one-row view at an offset, as the model's final norm uses
          xt = xt.first_rows(1);
          xt.offset = static_cast<size_t>((s.rows - 1) * s.cols) * 4;
          out = out.first_rows(1);
          out.offset = 4 * 4;
        }
        be->rms_norm(xt, wt, 1e-5f, s.group, out);
        (be == &cpu ? want : got) = fetch(*be, out);
      }
      EXPECT_LT(cuda_rel_rms(got, want), 1e-6) << s.cols << "/" << s.group << " last_row " << last_row;
    }
  }
}

TEST(CudaOps, DenseLinearAllDtypesAndRowCounts) {
  TRELLIS_CUDA_OR_SKIP(cu);
  Backend& cpu = cpu_backend();
  struct Dims {
    int64_t in, out;
  };
  // in 37: scalar GEMV loads; 64 and 2048: 16-byte loads.
  for (const Dims d : {Dims{37, 51}, Dims{64, 33}, Dims{2048, 300}}) {
    const auto w32 = random_floats(static_cast<size_t>(d.in * d.out), 5);
    const auto bias = random_floats(static_cast<size_t>(d.out), 6);
    const auto w16 = narrow(w32, DType::kF16), wbf = narrow(w32, DType::kBF16), b16 = narrow(bias, DType::kF16);
    for (DType dt : {DType::kF16, DType::kBF16, DType::kF32}) {
      LinearSource src;
      src.name = "test.dense";
      src.in_features = d.in;
      src.out_features = d.out;
      const void* data = dt == DType::kF16    ? static_cast<const void*>(w16.data())
                         : dt == DType::kBF16 ? static_cast<const void*>(wbf.data())
                                              : static_cast<const void*>(w32.data());
      src.dense = TensorView{dt, {d.out, d.in}, static_cast<const std::byte*>(data)};
      for (bool with_bias : {false, true}) {
        src.bias.reset();
        if (with_bias) src.bias = TensorView{DType::kF16, {d.out}, reinterpret_cast<const std::byte*>(b16.data())};
        const auto wc = cpu.prepare_linear(src);
        const auto wg = cu->prepare_linear(src);
        EXPECT_EQ(wg->in_features, d.in);
        EXPECT_GE(wg->device_bytes, static_cast<uint64_t>(d.in * d.out * 2));
        for (int64_t m : {1, 3, 8, 9, 63, 70}) {
          const auto x = random_floats(static_cast<size_t>(m * d.in), 7 + static_cast<uint64_t>(m), 2.0f);
          std::vector<float> want, got;
          for (Backend* be : {&cpu, static_cast<Backend*>(cu)}) {
            const DeviceTensor xt = be->upload(f32_view(x, {m, d.in}), DType::kF32);
            DeviceTensor yfull = be->alloc(DType::kF32, {m + 1, d.out});
            DeviceTensor y = yfull.first_rows(m);
            be->linear(be == &cpu ? *wc : *wg, xt, y);
            (be == &cpu ? want : got) = fetch(*be, yfull);
          }
          for (int64_t j = 0; j < d.out; ++j) EXPECT_EQ(got[static_cast<size_t>(m * d.out + j)], 0.0f) << "guard";
          // Above kSplitActMaxRows the activations enter the GEMM rounded once to fp16 (relative
          // error <= 2^-11 per element, ~2e-4 rms on the products); below, hi + lo keep fp32 accuracy.
          EXPECT_LT(cuda_rel_rms(got, want), m > cuda::kSplitActMaxRows ? 5e-4 : 2e-6)
              << dtype_name(dt) << " " << d.in << "x" << d.out << " m=" << m << " bias " << with_bias;
        }
      }
    }
  }
}

// An unaligned activation view (offset 4 bytes) takes the GEMV's scalar path and the GEMM's.
TEST(CudaOps, DenseLinearUnalignedActivations) {
  TRELLIS_CUDA_OR_SKIP(cu);
  Backend& cpu = cpu_backend();
  const int64_t in = 64, out = 40;
  const auto w = random_floats(static_cast<size_t>(in * out), 50);
  LinearSource src;
  src.name = "test.unaligned";
  src.in_features = in;
  src.out_features = out;
  src.dense = f32_view(w, {out, in});
  const auto wc = cpu.prepare_linear(src);
  const auto wg = cu->prepare_linear(src);
  for (int64_t m : {2, 12}) {
    const auto x = random_floats(static_cast<size_t>(m * in + 1), 51);
    std::vector<float> want, got;
    for (Backend* be : {&cpu, static_cast<Backend*>(cu)}) {
      DeviceTensor xt = be->upload(f32_view(x, {m * in + 1}), DType::kF32);
      xt.shape = {m, in};
      xt.offset = 4;
      DeviceTensor y = be->alloc(DType::kF32, {m, out});
      be->linear(be == &cpu ? *wc : *wg, xt, y);
      (be == &cpu ? want : got) = fetch(*be, y);
    }
    EXPECT_LT(cuda_rel_rms(got, want), 2e-6) << "m=" << m;
  }
}

TEST(CudaOps, Rope) {
  TRELLIS_CUDA_OR_SKIP(cu);
  Backend& cpu = cpu_backend();
  for (int64_t head_dim : {int64_t{18}, int64_t{128}}) {
    const int64_t heads = 3, rows = 5;
    RopeParams rp;
    for (int64_t i = 0; i < head_dim / 2; ++i)
      rp.inv_freq.push_back(std::pow(10000.0f, -2.0f * static_cast<float>(i) / static_cast<float>(head_dim)));
    rp.attention_scaling = 1.25f;
    const std::vector<int32_t> pos = {0, 7, 1000, 5, 8191};
    const auto x = random_floats(static_cast<size_t>(rows * heads * head_dim), 12);
    std::vector<float> want, got;
    for (Backend* be : {&cpu, static_cast<Backend*>(cu)}) {
      DeviceTensor xt = be->upload(f32_view(x, {rows, heads * head_dim}), DType::kF32);
      be->rope(xt, head_dim, pos, rp);
      (be == &cpu ? want : got) = fetch(*be, xt);
    }
    EXPECT_LT(cuda_rel_rms(got, want), 1e-6) << "head_dim " << head_dim;
  }
}

// rope(q), rope(k), kv_store(k, v) recorded back to back run as one launch whose results equal
// the three ops run separately bit for bit (and the CPU's within rope's tolerance).
TEST(CudaOps, RopeRopeKvStoreFusedEqualsSeparate) {
  TRELLIS_CUDA_OR_SKIP(cu);
  Backend& cpu = cpu_backend();
  const int64_t head_dim = 64, rows = 3, qw = 4 * head_dim, kw = 2 * head_dim, ctx = 9000;
  RopeParams rp;
  for (int64_t i = 0; i < head_dim / 2; ++i)
    rp.inv_freq.push_back(std::pow(500000.0f, -2.0f * static_cast<float>(i) / static_cast<float>(head_dim)));
  rp.attention_scaling = 1.0f;
  const std::vector<int32_t> pos = {5, 4000, 8191};
  const auto q = random_floats(static_cast<size_t>(rows * qw), 31), k = random_floats(static_cast<size_t>(rows * kw), 32);
  const auto v = random_floats(static_cast<size_t>(rows * kw), 33);
  std::vector<float> res[3][4];  // cpu, cuda fused, cuda separate x (q, k, k cache, v cache)
  for (int run = 0; run < 3; ++run) {
    Backend& be = run == 0 ? cpu : *cu;
    DeviceTensor qt = be.upload(f32_view(q, {rows, qw}), DType::kF32), kt = be.upload(f32_view(k, {rows, kw}), DType::kF32);
    const DeviceTensor vt = be.upload(f32_view(v, {rows, kw}), DType::kF32);
    DeviceTensor kc = be.alloc(DType::kF16, {ctx, kw}), vc = be.alloc(DType::kF16, {ctx, kw});
    be.synchronize();
    const uint64_t before = run == 0 ? 0 : cu->stats().launches;
    be.rope(qt, head_dim, pos, rp);
    if (run == 2) be.synchronize();
    be.rope(kt, head_dim, pos, rp);
    if (run == 2) be.synchronize();
    be.kv_store(kt, vt, pos, kc, vc);
    be.synchronize();
    if (run > 0) {
      EXPECT_EQ(cu->stats().launches - before, run == 1 ? 1u : 3u) << "run " << run;
    }
    res[run][0] = fetch(be, qt);
    res[run][1] = fetch(be, kt);
    res[run][2] = fetch(be, kc);
    res[run][3] = fetch(be, vc);
  }
  for (int i = 0; i < 4; ++i) EXPECT_EQ(res[1][i], res[2][i]) << "fused differs from separate, tensor " << i;
  EXPECT_LT(cuda_rel_rms(res[1][0], res[0][0]), 1e-6);
  EXPECT_LT(cuda_rel_rms(res[1][1], res[0][1]), 1e-6);
  EXPECT_EQ(res[1][3], res[0][3]) << "v cache";
}

struct AttnCase {
  int64_t n_heads, n_kv_heads, head_dim, start, prefill, window;
};

const char* kernel_name(cuda::AttentionKernel k) {
  switch (k) {
    case cuda::AttentionKernel::kFp32: return "fp32";
    case cuda::AttentionKernel::kTensorCore: return "tensor cores";
    case cuda::AttentionKernel::kFlash: return "flash";
  }
  return "?";
}

// Each prefill attention kernel the tests pin in turn (attention() still falls back to the next
// one where a kernel does not apply to the shape); the flash kernel with 8 (default) and 4 warps.
struct PinnedKernel {
  cuda::AttentionKernel kernel;
  int flash_warps;
  const char* name;
};
constexpr PinnedKernel kAttentionKernels[] = {{cuda::AttentionKernel::kFp32, 8, "fp32"},
                                              {cuda::AttentionKernel::kTensorCore, 8, "tensor cores"},
                                              {cuda::AttentionKernel::kFlash, 8, "flash"},
                                              {cuda::AttentionKernel::kFlash, 4, "flash, 4 warps"}};

// Pins the attention kernel for a scope, then restores the previous setting.
struct PinAttentionKernel {
  cuda::AttentionKernel saved = cuda::attention_kernel_setting();
  int saved_warps = cuda::attention_flash_warps();
  explicit PinAttentionKernel(const PinnedKernel& k) {
    cuda::set_attention_kernel(k.kernel);
    cuda::set_attention_flash_warps(k.flash_warps);
  }
  ~PinAttentionKernel() {
    cuda::set_attention_kernel(saved);
    cuda::set_attention_flash_warps(saved_warps);
  }
};

// kv_store then attention: a prefill of `prefill` rows at positions start.. (over a cache whose
// rows 0..start-1 were filled before), then one decode row at an offset view; the fp16 K cache
// must be bit-identical to the CPU's. Runs the CUDA side once per pinned prefill kernel.
void check_attention(cuda::CudaBackend* cu, const AttnCase& c) {
  Backend& cpu = cpu_backend();
  AttentionParams ap;
  ap.n_heads = c.n_heads;
  ap.n_kv_heads = c.n_kv_heads;
  ap.head_dim = c.head_dim;
  ap.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  ap.sliding_window = c.window;
  const int64_t total = c.start + c.prefill + 1, ctx = total + 7;
  const int64_t kvw = c.n_kv_heads * c.head_dim, qw = c.n_heads * c.head_dim;
  const auto q = random_floats(static_cast<size_t>(total * qw), 20, 2.0f);
  const auto k = random_floats(static_cast<size_t>(total * kvw), 21, 2.0f);
  const auto v = random_floats(static_cast<size_t>(total * kvw), 22);
  auto run = [&](Backend* be, std::vector<float> (&res)[3]) {
    DeviceTensor kc = be->alloc(DType::kF16, {ctx, kvw}), vc = be->alloc(DType::kF16, {ctx, kvw});
    const DeviceTensor qt = be->upload(f32_view(q, {total, qw}), DType::kF32);
    const DeviceTensor kt = be->upload(f32_view(k, {total, kvw}), DType::kF32);
    const DeviceTensor vt = be->upload(f32_view(v, {total, kvw}), DType::kF32);
    DeviceTensor out = be->alloc(DType::kF32, {total + 1, qw});
    auto rows_at = [](const DeviceTensor& t, int64_t r0, int64_t n) {
      DeviceTensor s = t.first_rows(n);
      s.offset = static_cast<size_t>(r0 * t.cols()) * dtype_size(t.dtype);
      return s;
    };
    if (c.start > 0) {
      std::vector<int32_t> p0(static_cast<size_t>(c.start));
      for (int64_t i = 0; i < c.start; ++i) p0[static_cast<size_t>(i)] = static_cast<int32_t>(i);
      be->kv_store(rows_at(kt, 0, c.start), rows_at(vt, 0, c.start), p0, kc, vc);
    }
    std::vector<int32_t> pos(static_cast<size_t>(c.prefill));
    for (int64_t i = 0; i < c.prefill; ++i) pos[static_cast<size_t>(i)] = static_cast<int32_t>(c.start + i);
    be->kv_store(rows_at(kt, c.start, c.prefill), rows_at(vt, c.start, c.prefill), pos, kc, vc);
    DeviceTensor o1 = rows_at(out, c.start, c.prefill);
    be->attention(rows_at(qt, c.start, c.prefill), kc, vc, pos, ap, o1);
    res[0] = fetch(*be, o1);
    const int64_t last = c.start + c.prefill;
    const std::vector<int32_t> p1 = {static_cast<int32_t>(last)};
    be->kv_store(rows_at(kt, last, 1), rows_at(vt, last, 1), p1, kc, vc);
    DeviceTensor o2 = rows_at(out, last, 1);
    be->attention(rows_at(qt, last, 1), kc, vc, p1, ap, o2);
    res[1] = fetch(*be, out);  // with the guard row after the decode row
    res[2] = fetch(*be, kc);
  };
  std::vector<float> want[3];
  run(&cpu, want);
  for (const PinnedKernel& pinned : kAttentionKernels) {
    const PinAttentionKernel pin(pinned);
    std::vector<float> got[3];
    run(cu, got);
    const std::string name = testing::PrintToString(std::vector<int64_t>{c.n_heads, c.n_kv_heads, c.head_dim,
                                                                         c.start, c.prefill, c.window}) +
                             " pinned " + pinned.name;
    EXPECT_EQ(got[2], want[2]) << "fp16 K cache differs " << name;
    // The tensor-core prefill kernels round Q and P to fp16 (relative 2^-11 each); the fp32 kernel
    // differs from the CPU only in summation order.
    const cuda::AttentionKernel ran = cuda::attention_kernel_for(
        c.prefill, c.n_heads, c.n_kv_heads, c.head_dim,
        cuda::attention_splits(c.prefill, c.n_heads, c.n_kv_heads, cu->info().threads,
                               c.window > 0 ? std::min(c.start + c.prefill, c.window) : c.start + c.prefill));
    const bool tc = ran != cuda::AttentionKernel::kFp32;
    const double prefill_rel = cuda_rel_rms(got[0], want[0]);
    if (tc) std::printf("%s prefill %s: rel-RMS %.2e vs CPU\n", kernel_name(ran), name.c_str(), prefill_rel);
    EXPECT_LT(prefill_rel, tc ? 3e-3 : 1e-5) << "prefill " << name << " ran " << kernel_name(ran);
    // got[1] is the whole output buffer: the prefill rows again, then the decode row (fp32 kernel).
    const size_t row_w = static_cast<size_t>(c.n_heads * c.head_dim), dec = static_cast<size_t>(total - 1) * row_w;
    const std::vector<float> dec_got(got[1].begin() + static_cast<std::ptrdiff_t>(dec),
                                     got[1].begin() + static_cast<std::ptrdiff_t>(dec + row_w)),
        dec_want(want[1].begin() + static_cast<std::ptrdiff_t>(dec),
                 want[1].begin() + static_cast<std::ptrdiff_t>(dec + row_w));
    EXPECT_LT(cuda_rel_rms(dec_got, dec_want), 1e-5) << "decode " << name;
    EXPECT_LT(cuda_rel_rms(got[1], want[1]), tc ? 3e-3 : 1e-5) << "prefill and decode rows " << name;
    for (int64_t i = 0; i < c.n_heads * c.head_dim; ++i)
      ASSERT_EQ(got[1][static_cast<size_t>(total * c.n_heads * c.head_dim + i)], 0.0f) << "guard row " << name;
  }
}

TEST(CudaOps, KvStoreAndAttentionPrefillDecode) {
  TRELLIS_CUDA_OR_SKIP(cu);
  for (const AttnCase& c : {AttnCase{4, 2, 40, 0, 130, 0}, AttnCase{4, 2, 40, 0, 130, 17},
                            AttnCase{8, 1, 128, 0, 300, 0},    // decode with flash-decoding splits
                            AttnCase{8, 8, 256, 0, 45, 0},     // the largest head_dim
                            AttnCase{6, 3, 18, 100, 37, 0},    // prefill over an earlier prefix
                            AttnCase{6, 3, 18, 100, 37, 64},   // ... with a sliding window
                            AttnCase{32, 8, 64, 0, 1030, 0},   // Llama-like GQA 4, long (tensor cores)
                            AttnCase{2, 2, 96, 0, 1, 0},       // a one-token prompt
                            AttnCase{8, 2, 128, 0, 200, 0},    // tensor cores, d 128, partial last block
                            AttnCase{8, 2, 128, 100, 200, 0},  // ... after an earlier prefix
                            AttnCase{8, 2, 128, 100, 200, 64}, // ... with a sliding window
                            AttnCase{4, 4, 64, 0, 64, 0},      // exactly one block, group 1
                            AttnCase{4, 4, 64, 3, 77, 0},      // rows not a multiple of 16
                            AttnCase{8, 1, 128, 5, 1100, 300}, // group 8, windows across tile edges
                            AttnCase{4, 4, 128, 70, 250, 0}})  // group 1: 128-row blocks, partial
    check_attention(cu, c);
}

// The tensor-core prefill kernels against the fp32 kernel on the same inputs (Llama-like GQA,
// 300 rows after a 40-row prefix, with and without a sliding window): outputs agree within fp16
// rounding of Q and P.
TEST(CudaOps, TensorCoreAttentionAgreesWithFp32Kernel) {
  TRELLIS_CUDA_OR_SKIP(cu);
  for (int64_t d : {int64_t{64}, int64_t{128}})
    for (int64_t window : {int64_t{0}, int64_t{100}}) {
      const int64_t nh = 8, nkv = 2, start = 40, rows = 300, ctx = start + rows;
      AttentionParams ap;
      ap.n_heads = nh;
      ap.n_kv_heads = nkv;
      ap.head_dim = d;
      ap.scale = 1.0f / std::sqrt(static_cast<float>(d));
      ap.sliding_window = window;
      const auto q = random_floats(static_cast<size_t>(rows * nh * d), 40, 2.0f);
      const auto k = random_floats(static_cast<size_t>(ctx * nkv * d), 41, 2.0f);
      const auto v = random_floats(static_cast<size_t>(ctx * nkv * d), 42);
      std::vector<int32_t> all(static_cast<size_t>(ctx)), pos(static_cast<size_t>(rows));
      for (int64_t i = 0; i < ctx; ++i) all[static_cast<size_t>(i)] = static_cast<int32_t>(i);
      for (int64_t i = 0; i < rows; ++i) pos[static_cast<size_t>(i)] = static_cast<int32_t>(start + i);
      std::vector<float> res[std::size(kAttentionKernels)];
      for (size_t ki = 0; ki < std::size(kAttentionKernels); ++ki) {
        const PinAttentionKernel pin(kAttentionKernels[ki]);
        ASSERT_EQ(cuda::attention_kernel_for(rows, nh, nkv, d, 1), kAttentionKernels[ki].kernel);
        DeviceTensor kc = cu->alloc(DType::kF16, {ctx, nkv * d}), vc = cu->alloc(DType::kF16, {ctx, nkv * d});
        cu->kv_store(cu->upload(f32_view(k, {ctx, nkv * d}), DType::kF32),
                     cu->upload(f32_view(v, {ctx, nkv * d}), DType::kF32), all, kc, vc);
        DeviceTensor out = cu->alloc(DType::kF32, {rows, nh * d});
        cu->attention(cu->upload(f32_view(q, {rows, nh * d}), DType::kF32), kc, vc, pos, ap, out);
        res[ki] = fetch(*cu, out);
      }
      for (size_t ki = 1; ki < std::size(kAttentionKernels); ++ki) {
        const std::vector<float>& r = res[ki];
        const double rel = cuda_rel_rms(r, res[0]);
        std::printf("d %lld window %lld: %s vs fp32 kernel rel-RMS %.2e\n", static_cast<long long>(d),
                    static_cast<long long>(window), kAttentionKernels[ki].name, rel);
        EXPECT_LT(rel, 3e-3) << "d " << d << " window " << window << " " << kAttentionKernels[ki].name;
        for (float x : r) ASSERT_TRUE(std::isfinite(x));
      }
    }
}

// A one-row decode attention shape: heads, kv heads, head_dim.
struct DecodeShape {
  int64_t nh, nkv, d;
};

AttentionParams decode_params(const DecodeShape& sh, int64_t window) {
  AttentionParams ap;
  ap.n_heads = sh.nh;
  ap.n_kv_heads = sh.nkv;
  ap.head_dim = sh.d;
  ap.sliding_window = window;
  ap.scale = 1.0f / std::sqrt(static_cast<float>(sh.d));
  return ap;
}

// The split-count policy (host code, runs without a GPU): context-capped splits never exceed the
// shape's fill-the-GPU count, keep at least attention_min_keys_per_split() keys per split once
// there are several, are a power of two when the cap binds, and grow with the context; 0 keys or
// the switch off give the shape-only count.
TEST(CudaOps, ContextCappedAttentionSplits) {
  const bool was = cuda::attention_context_splits();
  cuda::set_attention_context_splits(true);
  for (const int sms : {1, 20, 132, 144})
    for (const int64_t kvh : {int64_t{1}, int64_t{2}, int64_t{8}, int64_t{200}}) {
      const int fill = cuda::attention_splits(1, 4 * kvh, kvh, sms);
      ASSERT_GE(fill, 1);
      ASSERT_LE(fill, 32);
      int before = 1;
      for (int64_t keys = 1; keys <= 5000; keys += keys < 300 ? 1 : 37) {
        const int s = cuda::attention_splits(1, 4 * kvh, kvh, sms, keys);
        const std::string what = std::to_string(sms) + " SMs, " + std::to_string(kvh) + " kv heads, " +
                                 std::to_string(keys) + " keys: " + std::to_string(s) + " splits";
        ASSERT_GE(s, 1) << what;
        ASSERT_LE(s, fill) << what;
        ASSERT_GE(s, before) << what;
        if (s > 1) {
          EXPECT_GT(keys, cuda::attention_min_keys_per_split() * (s / 2)) << what;  // only reached with enough keys
          if (s < fill) {
            EXPECT_EQ(s & (s - 1), 0) << what;
          }
        }
        before = s;
      }
      EXPECT_EQ(cuda::attention_splits(1, 4 * kvh, kvh, sms, 0), fill);
      cuda::set_attention_context_splits(false);
      EXPECT_EQ(cuda::attention_splits(1, 4 * kvh, kvh, sms, 100), fill);
      cuda::set_attention_context_splits(was);
    }
}

// On compute capability 9.0+ the decode attention's cluster form is usable for the 8B shape (32
// heads over 8 kv heads, head_dim 128) and the tiny model's at every split count it may get
// (2..16), in every block size: the occupancy query behind attention_cluster_usable() must not
// turn the default path off silently. Below 9.0 it never is.
TEST(CudaOps, ClusterAttentionIsUsableOnSm90) {
  TRELLIS_CUDA_OR_SKIP(cu);
  int device = 0, major = 0;
  ASSERT_EQ(cudaGetDevice(&device), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), cudaSuccess);
  const bool was = cuda::attention_cluster();
  cuda::set_attention_cluster(true);
  for (const int warps : {4, 8, 16}) {
    cuda::set_attention_cluster_warps(warps);
    for (const DecodeShape sh : {DecodeShape{32, 8, 128}, DecodeShape{4, 4, 64}})
      for (int splits = 2; splits <= cuda::kAttentionMaxClusterSplits; splits *= 2) {
        cuda::AttentionArgs a;
        a.rows = 1;
        a.n_heads = sh.nh;
        a.n_kv_heads = sh.nkv;
        a.head_dim = sh.d;
        a.splits = splits;
        EXPECT_EQ(cuda::attention_cluster_usable(a), major >= 9)
            << "heads " << sh.nh << "/" << sh.nkv << " d " << sh.d << ", " << splits << " splits of " << warps
            << " warps, compute capability " << major;
      }
  }
  cuda::set_attention_cluster_warps(0);
  cuda::set_attention_cluster(was);
  cuda::AttentionArgs one;
  one.rows = 1, one.n_heads = 32, one.n_kv_heads = 8, one.head_dim = 128, one.splits = 1;
  EXPECT_FALSE(cuda::attention_cluster_usable(one)) << "one split is no cluster";
}

// The one-row decode kernel against the general fp32 kernel on the same cache (both fp32 math):
// head_dim 64 and 128, GQA groups 1-4, contexts from 1 key to past 2048, with and without a
// sliding window, with the backend's flash-decoding splits (1 to 32 by context length); and the
// merge inside the decode kernel bitwise against its separate launch; on sm_90+ the splits as a
// thread-block cluster merging through distributed shared memory (at most 16 splits) against the
// fp32 kernel too.
TEST(CudaOps, DecodeAttentionKernelAgreesWithFp32Kernel) {
  TRELLIS_CUDA_OR_SKIP(cu);
  const bool merge_was = cuda::attention_merge_fused(), cluster_was = cuda::attention_cluster();
  for (const DecodeShape sh : {DecodeShape{4, 4, 64}, DecodeShape{6, 2, 64}, DecodeShape{8, 4, 128},
                               DecodeShape{32, 8, 128}})
    for (const int64_t ctx : {int64_t{1}, int64_t{7}, int64_t{100}, int64_t{700}, int64_t{2100}})
      for (const int64_t window : {int64_t{0}, int64_t{300}}) {
        ASSERT_TRUE(cuda::attention_uses_decode_kernel(1, sh.nh, sh.nkv, sh.d));
        const AttentionParams ap = decode_params(sh, window);
        const int64_t kvw = sh.nkv * sh.d;
        const auto q = random_floats(static_cast<size_t>(sh.nh * sh.d), 50 + static_cast<uint64_t>(ctx), 2.0f);
        const auto k = random_floats(static_cast<size_t>(ctx * kvw), 51, 2.0f);
        const auto v = random_floats(static_cast<size_t>(ctx * kvw), 52);
        std::vector<int32_t> all(static_cast<size_t>(ctx));
        for (int64_t i = 0; i < ctx; ++i) all[static_cast<size_t>(i)] = static_cast<int32_t>(i);
        const std::vector<int32_t> pos = {static_cast<int32_t>(ctx - 1)};
        DeviceTensor kc = cu->alloc(DType::kF16, {ctx, kvw}), vc = cu->alloc(DType::kF16, {ctx, kvw});
        cu->kv_store(cu->upload(f32_view(k, {ctx, kvw}), DType::kF32), cu->upload(f32_view(v, {ctx, kvw}), DType::kF32),
                     all, kc, vc);
        const DeviceTensor qt = cu->upload(f32_view(q, {1, sh.nh * sh.d}), DType::kF32);
        // 0: the fp32 kernel; 1: the decode kernel and the separate merge launch; 2: the decode
        // kernel merging in its last block per kv head (counters reset by the kernel: every later
        // shape and context relies on that); 3, 4, 5: the splits as a cluster of blocks of 4, 8
        // and 16 warps (sm_90+).
        std::vector<float> res[6];
        for (int dec = 0; dec < 6; ++dec) {
          cuda::set_decode_attention(dec >= 1);
          cuda::set_attention_merge_fused(dec == 2);
          cuda::set_attention_cluster(dec >= 3);
          cuda::set_attention_cluster_warps(dec == 5 ? 16 : dec == 4 ? 8 : 4);
          DeviceTensor out = cu->alloc(DType::kF32, {1, sh.nh * sh.d});
          cu->attention(qt, kc, vc, pos, ap, out);
          res[dec] = fetch(*cu, out);
        }
        cuda::set_decode_attention(true);
        cuda::set_attention_merge_fused(merge_was);
        cuda::set_attention_cluster(cluster_was);
        cuda::set_attention_cluster_warps(0);
        for (int dec = 3; dec < 6; ++dec)
          EXPECT_LT(cuda_rel_rms(res[dec], res[0]), 1e-5) << "cluster of " << (4 << (dec - 3)) << "-warp blocks: heads "
                                                          << sh.nh << "/" << sh.nkv << " d " << sh.d << " ctx " << ctx
                                                          << " window " << window;
        const double rel = cuda_rel_rms(res[1], res[0]);
        EXPECT_LT(rel, 1e-5) << "heads " << sh.nh << "/" << sh.nkv << " d " << sh.d << " ctx " << ctx << " window "
                             << window;
        for (float x : res[1]) ASSERT_TRUE(std::isfinite(x));
        EXPECT_EQ(0, std::memcmp(res[1].data(), res[2].data(), res[1].size() * sizeof(float)))
            << "merge inside the decode kernel differs from the merge launch: heads " << sh.nh << "/" << sh.nkv
            << " d " << sh.d << " ctx " << ctx << " window " << window;
      }
}

// A decode step's rope(q), rope(k), kv_store(k, v), attention(q) as the model records them: with
// the fold (and the merge inside the decode kernel) they run as one launch, and attention's
// output, the rotated q and k and both caches equal the unfolded launches bit for bit. GQA groups
// 1-4, 1 to 32 splits (by context; more kv heads than SMs: one); with the merge launch kept, the
// fold applies as well (the kv head's last split block writes q back) and the results agree.
TEST(CudaOps, RopeAndKvStoreFoldIntoDecodeAttention) {
  TRELLIS_CUDA_OR_SKIP(cu);
  const bool merge_was = cuda::attention_merge_fused(), fold_was = cuda::rope_attention_fold();
  const bool cluster_was = cuda::attention_cluster();
  for (const DecodeShape sh : {DecodeShape{32, 8, 128}, DecodeShape{6, 2, 64}, DecodeShape{4, 4, 64},
                               DecodeShape{12, 4, 128}, DecodeShape{144, 144, 64}})
    for (const int64_t ctx : {int64_t{1}, int64_t{100}, int64_t{2100}})
      for (const int64_t window : {int64_t{0}, int64_t{300}}) {
        const std::string what = "heads " + std::to_string(sh.nh) + "/" + std::to_string(sh.nkv) + " d " +
                                 std::to_string(sh.d) + " ctx " + std::to_string(ctx) + " window " +
                                 std::to_string(window);
        const AttentionParams ap = decode_params(sh, window);
        RopeParams rp;
        for (int64_t i = 0; i < sh.d / 2; ++i)
          rp.inv_freq.push_back(std::pow(500000.0f, -2.0f * static_cast<float>(i) / static_cast<float>(sh.d)));
        rp.attention_scaling = 1.25f;
        const int64_t kvw = sh.nkv * sh.d, qw = sh.nh * sh.d;
        const auto q = random_floats(static_cast<size_t>(qw), 60 + static_cast<uint64_t>(ctx), 2.0f);
        const auto k = random_floats(static_cast<size_t>(ctx * kvw), 61, 2.0f);
        const auto v = random_floats(static_cast<size_t>(ctx * kvw), 62);
        std::vector<int32_t> earlier(static_cast<size_t>(ctx - 1));
        for (int64_t i = 0; i + 1 < ctx; ++i) earlier[static_cast<size_t>(i)] = static_cast<int32_t>(i);
        const std::vector<int32_t> pos = {static_cast<int32_t>(ctx - 1)};
        const std::vector<float> k_new(k.end() - kvw, k.end()), v_new(v.end() - kvw, v.end());
        // runs: 0 unfolded (merge inside), 1 folded, 2 fold asked for with the merge launch kept,
        // 3 folded into the cluster form (sm_90+; at most 16 splits: out within 1e-5, the rest
        // bitwise)
        std::vector<float> res[4][5];  // out, q, k, k cache, v cache
        uint64_t launches[4] = {};
        for (int run = 0; run < 4; ++run) {
          cuda::set_rope_attention_fold(run >= 1);
          cuda::set_attention_merge_fused(run <= 1);
          cuda::set_attention_cluster(run == 3);
          cuda::set_attention_cluster_warps(8);  // run 3: blocks of 8 warps (the other forms: the test above)
          DeviceTensor kc = cu->alloc(DType::kF16, {ctx + 3, kvw}), vc = cu->alloc(DType::kF16, {ctx + 3, kvw});
          if (ctx > 1)
            cu->kv_store(cu->upload(f32_view(k, {ctx - 1, kvw}), DType::kF32),
                         cu->upload(f32_view(v, {ctx - 1, kvw}), DType::kF32), earlier, kc, vc);
          DeviceTensor qt = cu->upload(f32_view(q, {1, qw}), DType::kF32);
          DeviceTensor kt = cu->upload(f32_view(k_new, {1, kvw}), DType::kF32);
          const DeviceTensor vt = cu->upload(f32_view(v_new, {1, kvw}), DType::kF32);
          DeviceTensor out = cu->alloc(DType::kF32, {1, qw});
          cu->synchronize();
          const uint64_t before = cu->stats().launches;
          cu->rope(qt, sh.d, pos, rp);
          cu->rope(kt, sh.d, pos, rp);
          cu->kv_store(kt, vt, pos, kc, vc);
          cu->attention(qt, kc, vc, pos, ap, out);
          cu->synchronize();
          launches[run] = cu->stats().launches - before;
          res[run][0] = fetch(*cu, out);
          res[run][1] = fetch(*cu, qt);
          res[run][2] = fetch(*cu, kt);
          res[run][3] = fetch(*cu, kc);
          res[run][4] = fetch(*cu, vc);
        }
        cuda::set_rope_attention_fold(fold_was);
        cuda::set_attention_merge_fused(merge_was);
        cuda::set_attention_cluster(cluster_was);
        cuda::set_attention_cluster_warps(0);
        EXPECT_EQ(launches[3], 1u) << what << " (cluster)";
        EXPECT_LT(cuda_rel_rms(res[3][0], res[0][0]), 1e-5) << what << " (cluster)";
        for (int t = 1; t < 5; ++t)
          EXPECT_EQ(0, std::memcmp(res[0][t].data(), res[3][t].data(), res[0][t].size() * sizeof(float)))
              << what << ": the cluster run differs in tensor " << t << " (q, k, k cache, v cache)";
        // Recorded ops (attention and its merge launch count as one): the fold applies with the
        // merge launch kept too (with several splits, q is written back by the kv head's last
        // block to be counted; the shapes run one after another, so a counter left unreset would
        // leave q unrotated in a later case).
        EXPECT_EQ(launches[0], 2u) << what;
        EXPECT_EQ(launches[1], 1u) << what;
        const int splits = cuda::attention_splits(1, sh.nh, sh.nkv, cu->info().threads, window > 0 ? std::min(ctx, window) : ctx);
        EXPECT_EQ(launches[2], 1u) << what << ", " << splits << " splits";
        for (int run = 1; run < 3; ++run)
          for (int t = 0; t < 5; ++t)
            EXPECT_EQ(0, std::memcmp(res[0][t].data(), res[run][t].data(), res[0][t].size() * sizeof(float)))
                << what << ": run " << run << " differs in tensor " << t << " (out, q, k, k cache, v cache)";
      }
}

TEST(CudaOps, SiluMulAndAdd) {
  TRELLIS_CUDA_OR_SKIP(cu);
  Backend& cpu = cpu_backend();
  const int64_t n = 999;
  const auto g = random_floats(static_cast<size_t>(n), 30, 6.0f), u = random_floats(static_cast<size_t>(n), 31);
  std::vector<float> want[3], got[3];
  for (Backend* be : {&cpu, static_cast<Backend*>(cu)}) {
    auto& res = be == &cpu ? want : got;
    DeviceTensor gt = be->upload(f32_view(g, {n}), DType::kF32), ut = be->upload(f32_view(u, {n}), DType::kF32);
    DeviceTensor o = be->alloc(DType::kF32, {n});
    be->silu_mul(gt, ut, o);
    res[0] = fetch(*be, o);
    be->silu_mul(gt, ut, gt);  // in place, as the model calls it
    res[2] = fetch(*be, gt);
    be->add(gt, ut);
    res[1] = fetch(*be, gt);
  }
  EXPECT_LT(cuda_rel_rms(got[0], want[0]), 1e-6);
  EXPECT_LT(cuda_rel_rms(got[2], want[2]), 1e-6);
  EXPECT_LT(cuda_rel_rms(got[1], want[1]), 1e-6);
}

// add(x, y) then rms_norm(x) runs as one fused launch; x and the norm equal the CPU's. Also when
// the add is the last op before a download (nothing to fuse with) and when the norm is per head.
TEST(CudaOps, AddThenRmsNormFused) {
  TRELLIS_CUDA_OR_SKIP(cu);
  Backend& cpu = cpu_backend();
  for (int64_t cols : {int64_t{72}, int64_t{1000}, int64_t{1030}, int64_t{8192}}) {
    const int64_t rows = 3;
    const auto x = random_floats(static_cast<size_t>(rows * cols), 80, 2.0f);
    const auto y = random_floats(static_cast<size_t>(rows * cols), 81, 2.0f);
    const auto w = random_floats(static_cast<size_t>(cols), 82);
    std::vector<float> want[3], got[3];
    for (Backend* be : {&cpu, static_cast<Backend*>(cu)}) {
      auto& res = be == &cpu ? want : got;
      DeviceTensor xt = be->upload(f32_view(x, {rows, cols}), DType::kF32);
      const DeviceTensor yt = be->upload(f32_view(y, {rows, cols}), DType::kF32);
      const DeviceTensor wt = be->upload(f32_view(w, {cols}), DType::kF32);
      const DeviceTensor wh = be->upload(f32_view(w, {cols / 2}), DType::kF32);
      DeviceTensor h = be->alloc(DType::kF32, {rows, cols});
      be->add(xt, yt);
      be->rms_norm(xt, wt, 1e-5f, cols, h);
      res[1] = fetch(*be, h);
      res[0] = fetch(*be, xt);
      be->add(xt, yt);
      be->rms_norm(xt, wh, 1e-6f, cols / 2, h);  // per-group norm after an add
      be->add(xt, yt);                            // an add with nothing after it
      res[2] = fetch(*be, h);
      const auto x2 = fetch(*be, xt);
      res[2].insert(res[2].end(), x2.begin(), x2.end());
    }
    EXPECT_EQ(got[0], want[0]) << cols;
    EXPECT_LT(cuda_rel_rms(got[1], want[1]), 1e-6) << cols;
    EXPECT_LT(cuda_rel_rms(got[2], want[2]), 1e-6) << cols;
  }
}

// A decode-like step (embedding, norm, linear, rope, kv_store, attention, add) repeated at new
// positions: from the third step on it replays a CUDA graph; results equal the eager run bit for bit.
// The quantizer's Hessian accumulation: lower triangle of xᵀx over finite rows, twice into the
// same accumulator (k > cols: padding stays zero), against a double-precision sum.
TEST(CudaOps, GramAccumulateSkipsNonFiniteRowsLowerTriangle) {
  TRELLIS_CUDA_OR_SKIP(cu);
  const int64_t rows = 301, cols = 77, k = 128;
  auto x = random_floats(rows * cols, 41, 2.0f);
  x[5 * cols + 3] = NAN;
  x[200 * cols + 76] = INFINITY;
  DeviceTensor xd = cu->upload(f32_view(x, {rows, cols}), DType::kF32);
  DeviceTensor acc = cu->alloc(DType::kF32, {k, k}), stats = cu->alloc(DType::kF32, {1, 2});
  cu->gram_accumulate(xd, acc, stats);
  cu->gram_accumulate(xd, acc, stats);
  const auto a = fetch(*cu, acc), st = fetch(*cu, stats);
  EXPECT_EQ(st[0], 2.0f * (rows - 2));
  EXPECT_EQ(st[1], 4.0f);
  double err = 0, norm = 0;
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j) {
      double ref = 0;
      if (j <= i && i < cols)
        for (int64_t r = 0; r < rows; ++r)
          if (r != 5 && r != 200) ref += 2.0 * x[r * cols + i] * x[r * cols + j];
      const float got = a[static_cast<size_t>(i * k + j)];
      if (j > i || i >= cols) {
        ASSERT_EQ(got, 0.0f) << i << "," << j;  // upper triangle and padding untouched
      } else {
        err += (got - ref) * (got - ref);
        norm += ref * ref;
      }
    }
  EXPECT_LT(std::sqrt(err / norm), 1e-6);
}

TEST(CudaOps, GraphReplaysEqualEagerRuns) {
  TRELLIS_CUDA_OR_SKIP(cu);
  const int64_t dim = 64, vocab = 50, heads = 2, head_dim = 32, ctx = 16;
  const auto table = random_floats(static_cast<size_t>(vocab * dim), 60);
  const auto w = random_floats(static_cast<size_t>(dim * dim), 61);
  const auto nw = random_floats(static_cast<size_t>(dim), 62);
  LinearSource src;
  src.name = "test.graph";
  src.in_features = dim;
  src.out_features = dim;
  src.dense = f32_view(w, {dim, dim});
  RopeParams rp;
  for (int64_t i = 0; i < head_dim / 2; ++i) rp.inv_freq.push_back(std::pow(100.0f, -static_cast<float>(i) / 16));
  AttentionParams ap{heads, heads, head_dim, 0.2f, 0};
  // split: every step goes to the device in two segments (Backend::submit); the first (3 launches)
  // is under the backend's minimum for a graph and runs eagerly, the second is captured at step 2
  // and replayed from step 3 although the flushes alternate (a backend that captured only a key
  // equal to the previous flush's never replayed it). Decode steps in three graphed segments:
  // the CudaModel tests.
  auto run = [&](bool graphs, bool split) {
    cu->set_graphs(graphs);
    const auto before = cu->stats();
    const DeviceTensor tt = cu->upload(f32_view(table, {vocab, dim}), DType::kF16);
    const DeviceTensor nt = cu->upload(f32_view(nw, {dim}), DType::kF32);
    const auto lin = cu->prepare_linear(src);
    DeviceTensor x = cu->alloc(DType::kF32, {1, dim}), h = cu->alloc(DType::kF32, {1, dim});
    DeviceTensor o = cu->alloc(DType::kF32, {1, dim});
    DeviceTensor kc = cu->alloc(DType::kF16, {ctx, dim}), vc = cu->alloc(DType::kF16, {ctx, dim});
    std::vector<float> all;
    for (int32_t p = 0; p < 6; ++p) {
      const std::vector<int32_t> id = {(p * 7) % static_cast<int32_t>(vocab)}, pos = {p};
      cu->embedding(tt, id, x);
      cu->rms_norm(x, nt, 1e-5f, dim, h);
      cu->linear(*lin, h, o);
      if (split) cu->submit();
      cu->rope(o, head_dim, pos, rp);
      cu->kv_store(o, h, pos, kc, vc);
      cu->attention(o, kc, vc, pos, ap, h);
      cu->add(x, h);
      const auto step = fetch(*cu, x);
      all.insert(all.end(), step.begin(), step.end());
    }
    const auto after = cu->stats();
    EXPECT_GE(after.segments - before.segments, split && cu->submits() ? 12u : 6u);  // submit() may be off (env)
    // Steps 3-6 replay (step 2 captures).
    if (graphs) EXPECT_GE(after.graph_replays - before.graph_replays, 4u) << "split " << split;
    else EXPECT_EQ(after.graph_replays, before.graph_replays);
    return all;
  };
  const auto eager = run(false, false);
  EXPECT_EQ(run(true, false), eager);
  EXPECT_EQ(run(false, true), eager);
  EXPECT_EQ(run(true, true), eager);
}

// A random EXL3 linear (every bit string is a valid trellis) with its host storage.
struct Exl3Source {
  std::vector<uint8_t> trellis;
  std::vector<uint16_t> suh, svh;
  LinearSource src;
  Exl3Source(int64_t k, int64_t n, uint64_t seed) {
    test::SplitMix64 rng(seed);
    trellis.resize(static_cast<size_t>((k / 16) * (n / 16) * 32 * 3));
    for (auto& b : trellis) b = static_cast<uint8_t>(rng.next());
    auto sign = [&] { return fp32_to_fp16((rng.next() & 1) ? 0.04f : -0.04f); };
    for (int64_t i = 0; i < k; ++i) suh.push_back(sign());
    for (int64_t j = 0; j < n; ++j) svh.push_back(sign());
    src.name = "test.exl3";
    src.in_features = k;
    src.out_features = n;
    src.exl3 = exl3::Exl3LinearView{k, n, 3, exl3::Codebook::kMcg, trellis.data(), suh.data(), svh.data(), nullptr};
  }
};

// The decode fusions of the residual stream (cuda::decode_fusion: the residual add into the EXL3
// linear before it, the whole-row RMSNorm into the linears after it, silu(gate) · up into down)
// give the same bits as the separate launches, for a Llama-like layer of hidden 1024 run three
// steps with CUDA graphs, m = 1 and 3; and they do take launches away.
TEST(CudaOps, DecodeFusionsGiveTheSameBits) {
  TRELLIS_CUDA_OR_SKIP(cu);
  const int64_t hid = 1024, inter = 1408, heads_out = 512;  // inter: 88 slabs, splits off the 128-blocks
  const float eps = 1e-5f;
  const Exl3Source so(heads_out, hid, 1501), sq(hid, 512, 1502), sk(hid, 128, 1503), sg(hid, inter, 1504),
      su(hid, inter, 1505), sd(inter, hid, 1506), sh(hid, 384, 1507);
  const auto w1 = random_floats(static_cast<size_t>(hid), 1508), w2 = random_floats(static_cast<size_t>(hid), 1509);
  struct Result {
    std::vector<float> values;
    uint64_t launches;
  };
  auto run = [&](bool fused, int64_t m) {
    cuda::set_decode_fusion(fused);
    cu->set_graphs(true);
    const auto lo = cu->prepare_linear(so.src), lq = cu->prepare_linear(sq.src), lk = cu->prepare_linear(sk.src);
    const auto lg = cu->prepare_linear(sg.src), lu = cu->prepare_linear(su.src), ld = cu->prepare_linear(sd.src);
    const auto lh = cu->prepare_linear(sh.src);
    const DeviceTensor n1 = cu->upload(f32_view(w1, {hid}), DType::kF32), n2 = cu->upload(f32_view(w2, {hid}), DType::kF32);
    DeviceTensor x = cu->alloc(DType::kF32, {m, hid}), h = cu->alloc(DType::kF32, {m, hid});
    DeviceTensor tmp = cu->alloc(DType::kF32, {m, hid}), a = cu->alloc(DType::kF32, {m, heads_out});
    DeviceTensor yq = cu->alloc(DType::kF32, {m, 512}), yk = cu->alloc(DType::kF32, {m, 128});
    DeviceTensor g = cu->alloc(DType::kF32, {m, inter}), u = cu->alloc(DType::kF32, {m, inter});
    DeviceTensor logits = cu->alloc(DType::kF32, {m, 384});
    Result r;
    const uint64_t before = cu->stats().launches;
    for (int step = 0; step < 3; ++step) {
      const auto xs = random_floats(static_cast<size_t>(m * hid), 1510 + static_cast<uint64_t>(step), 2.0f);
      const auto as = random_floats(static_cast<size_t>(m * heads_out), 1520 + static_cast<uint64_t>(step), 2.0f);
      x = cu->upload(f32_view(xs, {m, hid}), DType::kF32);
      a = cu->upload(f32_view(as, {m, heads_out}), DType::kF32);
      cu->linear(*lo, a, tmp);
      cu->add(x, tmp);
      cu->rms_norm(x, n1, eps, hid, h);
      const LinearWeights* qk[2] = {lq.get(), lk.get()};
      DeviceTensor* qk_out[2] = {&yq, &yk};
      cu->linears(qk, h, qk_out);
      cu->mlp(*lg, *lu, *ld, h, g, u, tmp);
      cu->add(x, tmp);
      cu->rms_norm(x, n2, eps, hid, h);
      cu->linear(*lh, h, logits);
      for (const DeviceTensor* t : {&x, &h, &yq, &yk, &tmp, &logits}) {
        const auto v = fetch(*cu, *t);
        r.values.insert(r.values.end(), v.begin(), v.end());
      }
    }
    r.launches = cu->stats().launches - before;
    cuda::set_decode_fusion(true);
    return r;
  };
  for (int64_t m : {1, 3}) {
    const Result plain = run(false, m), fused = run(true, m);
    ASSERT_EQ(plain.values.size(), fused.values.size());
    EXPECT_EQ(std::memcmp(plain.values.data(), fused.values.data(), plain.values.size() * 4), 0) << "m=" << m;
    EXPECT_LT(fused.launches, plain.launches) << "m=" << m;
    std::printf("decode fusions, m=%lld: %llu recorded launches against %llu\n", static_cast<long long>(m),
                static_cast<unsigned long long>(fused.launches), static_cast<unsigned long long>(plain.launches));
  }
}

TEST(CudaOps, OutOfMemoryNamesBytesNeededAndFree) {
  TRELLIS_CUDA_OR_SKIP(cu);
  try {
    cu->alloc(DType::kF32, {int64_t{1} << 20, int64_t{1} << 20});  // 4 TiB
    FAIL() << "expected an out-of-memory error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kOutOfMemory);
    const std::string msg = e.what();
    EXPECT_NE(msg.find("4398046511104 bytes"), std::string::npos) << msg;
    EXPECT_NE(msg.find("free"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[1048576, 1048576]"), std::string::npos) << msg;
  }
  // The backend still works afterwards.
  const auto v = random_floats(8, 70);
  EXPECT_EQ(fetch(*cu, cu->upload(f32_view(v, {8}), DType::kF32)), v);
}

TEST(CudaOps, UnsupportedHeadDimIsAnError) {
  TRELLIS_CUDA_OR_SKIP(cu);
  AttentionParams ap{1, 1, 512, 0.1f, 0};
  DeviceTensor q = cu->alloc(DType::kF32, {1, 512}), o = cu->alloc(DType::kF32, {1, 512});
  DeviceTensor kc = cu->alloc(DType::kF16, {4, 512}), vc = cu->alloc(DType::kF16, {4, 512});
  const std::vector<int32_t> pos = {0};
  try {
    cu->attention(q, kc, vc, pos, ap, o);
    FAIL() << "expected kUnsupported";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("head_dim 512"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace trellis

#endif  // TRELLIS_WITH_CUDA
