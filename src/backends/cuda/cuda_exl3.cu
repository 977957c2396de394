// backends/cuda/cuda_exl3.cu: CudaExl3Linear host side: upload, scratch layout, dispatch between
// the fused GEMV (m <= 8), decode + cuBLAS (m > 8) and reconstruct + cuBLAS (fused_reconstruct(m)).
// Kernels live in cuda_exl3_gemv.cu, cuda_exl3_reconstruct.cu and cuda_exl3_transform.cu. No fmt here (nvcc front end); errors go through cuda::raise.
#include "backends/cuda/cuda_exl3.h"

#include <cublas_v2.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "backends/cuda/cuda_exl3_kernels.cuh"
#include "backends/cuda/cuda_norm.cuh"
#include "backends/cuda/cuda_ops.h"
#include "backends/cuda/cuda_util.h"
#include "core/fp16.h"

namespace trellis::cuda {
namespace {

constexpr size_t kAlign = 256;
constexpr size_t kWhatBudgetBytes = size_t{64} << 20;  // fp16 Ŵ slice of the prefill path
constexpr size_t kCublasWorkspaceBytes = size_t{4} << 20;
constexpr int kMaxGridRows = 65535;

size_t align_up(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

[[noreturn]] void bad(const std::string& what) { raise(ErrorKind::kInvalidArgument, "EXL3 linear (CUDA): " + what); }

// One cuBLAS handle per device for all EXL3 layers, with a fixed workspace so that calls can be
// captured into CUDA graphs. forward() sets the stream on every call: the handle is shared, so
// concurrent forward() calls from several host threads on one device are not supported.
cublasHandle_t cublas_for(int device) {
  static std::mutex mu;
  static std::array<cublasHandle_t, 64> handles{};
  std::lock_guard<std::mutex> lock(mu);
  if (device < 0 || device >= static_cast<int>(handles.size())) bad("device index out of range");
  if (!handles[device]) {
    cublasHandle_t h = nullptr;
    check(cublasCreate(&h), "cublasCreate (EXL3)");
    void* ws = device_malloc(kCublasWorkspaceBytes, "the EXL3 cuBLAS workspace");
    check(cublasSetWorkspace(h, ws, kCublasWorkspaceBytes), "cublasSetWorkspace (EXL3)");
    handles[device] = h;  // lives for the process, like the device context
  }
  return handles[device];
}

std::vector<float> fp16_vector(const void* p, int64_t n) {
  std::vector<uint16_t> h(static_cast<size_t>(n));
  std::memcpy(h.data(), p, h.size() * 2);
  std::vector<float> f(h.size());
  for (size_t i = 0; i < h.size(); ++i) f[i] = fp16_to_fp32(h[i]);
  return f;
}

float* upload_floats(const std::vector<float>& v, cudaStream_t stream, const char* what) {
  auto* d = static_cast<float*>(device_malloc(v.size() * sizeof(float), what));
  // Pageable source: returns once the data is staged, so `v` may die right after.
  check(cudaMemcpyAsync(d, v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice, stream), what);
  return d;
}

}  // namespace

std::unique_ptr<CudaExl3Linear> CudaExl3Linear::create(const exl3::Exl3LinearView& view,
                                                       std::optional<TensorView> bias, cudaStream_t stream) {
  return create(view, bias, view.k, view.n, stream);
}

std::unique_ptr<CudaExl3Linear> CudaExl3Linear::create(const exl3::Exl3LinearView& view,
                                                       std::optional<TensorView> bias, int64_t in_features,
                                                       int64_t out_features, cudaStream_t stream) {
  const std::string shape = std::to_string(view.k) + " x " + std::to_string(view.n);
  if (view.k <= 0 || view.n <= 0 || view.k % 128 != 0 || view.n % 128 != 0)
    bad("shape " + shape + " is not a positive multiple of 128 (spec 2.4)");
  if (view.K < 1 || view.K > 8) bad("K = " + std::to_string(view.K) + "; expected 1..8");
  if (static_cast<int>(view.codebook) > 2) bad("unknown codebook id " + std::to_string(static_cast<int>(view.codebook)));
  if (!view.trellis || !view.suh || !view.svh) bad("trellis, suh and svh are required");
  if (in_features <= 0 || in_features > view.k || out_features <= 0 || out_features > view.n)
    bad("real size " + std::to_string(in_features) + " x " + std::to_string(out_features) + " does not fit padded " +
        shape);
  if (view.k / 16 > (int64_t{1} << 30) / 16 || view.n > (int64_t{1} << 24))
    bad("shape " + shape + " is too large for the CUDA kernels");

  std::unique_ptr<CudaExl3Linear> l(new CudaExl3Linear());
  check(cudaGetDevice(&l->device_), "cudaGetDevice");
  l->k_ = view.k;
  l->n_ = view.n;
  l->in_features_ = in_features;
  l->out_features_ = out_features;
  l->K_ = view.K;
  l->codebook_ = view.codebook;

  std::vector<float> b;
  if (bias) {
    if (bias->numel() < out_features)
      bad("bias has " + std::to_string(bias->numel()) + " elements, expected " + std::to_string(out_features));
    b.resize(static_cast<size_t>(out_features));
    for (size_t i = 0; i < b.size(); ++i) {
      if (bias->dtype == DType::kF32) {
        std::memcpy(&b[i], bias->data + 4 * i, 4);
      } else if (bias->dtype == DType::kF16 || bias->dtype == DType::kBF16) {
        uint16_t h;
        std::memcpy(&h, bias->data + 2 * i, 2);
        b[i] = bias->dtype == DType::kF16 ? fp16_to_fp32(h) : bf16_to_fp32(h);
      } else {
        bad("bias dtype " + std::string(dtype_name(bias->dtype)) + " (expected F16, BF16 or F32)");
      }
    }
  } else if (view.bias) {
    b = fp16_vector(view.bias, out_features);
  }

  const size_t tbytes = static_cast<size_t>(view.k / 16) * static_cast<size_t>(view.n / 16) * 32 * view.K;
  l->trellis_ = static_cast<uint32_t*>(device_malloc(tbytes, "an EXL3 trellis"));
  check(cudaMemcpyAsync(l->trellis_, view.trellis, tbytes, cudaMemcpyHostToDevice, stream), "uploading an EXL3 trellis");
  l->suh_ = upload_floats(fp16_vector(view.suh, view.k), stream, "EXL3 suh");
  l->svh_ = upload_floats(fp16_vector(view.svh, view.n), stream, "EXL3 svh");
  if (!b.empty()) l->bias_ = upload_floats(b, stream, "EXL3 bias");
  const size_t done_bytes = static_cast<size_t>(view.n / 128) * sizeof(unsigned);
  l->done_ = static_cast<unsigned*>(device_malloc(done_bytes, "EXL3 GEMV counters"));
  check(cudaMemsetAsync(l->done_, 0, done_bytes, stream), "clearing EXL3 GEMV counters");

  // Split k until the grid has about gemv_blocks_per_sm() blocks per SM.
  int sms = 1;
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, l->device_), "cudaDeviceGetAttribute");
  l->sms_ = sms;
  const int64_t groups = view.n / 16 / exl3k::gemv_tiles(view.K);
  const int64_t k_tiles = view.k / 16;
  int64_t splits = (gemv_blocks_per_sm() * static_cast<int64_t>(sms) + groups - 1) / groups;
  splits = std::min<int64_t>({splits, kMaxGemvSplits, std::max<int64_t>(1, k_tiles / (2 * exl3k::kGemvWarps))});
  l->gemv_splits_ = static_cast<int>(std::max<int64_t>(1, splits));
  return l;
}

CudaExl3Linear::~CudaExl3Linear() {
  cudaFree(trellis_);
  cudaFree(suh_);
  cudaFree(svh_);
  cudaFree(bias_);
  cudaFree(done_);
}

uint64_t CudaExl3Linear::device_bytes() const {
  const uint64_t t = static_cast<uint64_t>(k_ / 16) * static_cast<uint64_t>(n_ / 16) * 32 * K_;
  return t + static_cast<uint64_t>(k_ + n_) * 4 + (bias_ ? static_cast<uint64_t>(out_features_) * 4 : 0) +
         static_cast<uint64_t>(n_ / 128) * 4;
}

const char* CudaExl3Linear::gemv_variant_name() const { return exl3k::gemv_name(K_, static_cast<int>(codebook_)); }

void CudaExl3Linear::set_gemv_splits(int splits) { gemv_splits_ = std::clamp(splits, 1, kMaxGemvSplits); }

int64_t CudaExl3Linear::gemm_slice_cols() const {
  // Widest slices under the budget. (Equal-width slices, e.g. 2 x 2048 instead of 2304 + 1792
  // columns for an 8B down projection, measured 1.4 ms slower per 2048-token 8B prefill on the
  // H200: cuBLAS picked slower kernels for them; docs/BENCHMARKS.md session 9.)
  const int64_t budget = static_cast<int64_t>(kWhatBudgetBytes / 2) / k_ / 128 * 128;
  return std::clamp<int64_t>(budget, 128, n_);
}

CudaExl3Linear::ScratchLayout CudaExl3Linear::layout(int64_t m) const {
  ScratchLayout s;
  const bool gemv = m <= kExl3GemvMaxRows;
  const int parts = gemm_act_parts(m);
  s.act = align_up(static_cast<size_t>(m * k_) * 2 * parts);  // fp16 (hi, lo) per element
  // The reconstructed-W GEMM writes y directly: no partial products.
  s.part = !gemv && fused_reconstruct(m) ? 0 : align_up(static_cast<size_t>(m * n_) * 4 * (gemv ? gemv_splits_ : parts));
  s.what = gemv ? 0 : what_bytes();
  s.total = s.act + s.part + s.what;
  return s;
}

size_t CudaExl3Linear::scratch_bytes(int64_t m) const { return m <= 0 ? 0 : layout(m).total; }

size_t CudaExl3Linear::what_bytes() const { return align_up(static_cast<size_t>(k_ * gemm_slice_cols()) * 2); }

void CudaExl3Linear::product(int64_t m, cudaStream_t stream, std::byte* scratch, const ScratchLayout& s) const {
  const auto* xa = reinterpret_cast<const uint16_t*>(scratch);
  auto* part = reinterpret_cast<float*>(scratch + s.act);
  if (m <= kExl3GemvMaxRows) {
    exl3k::gemv(K_, static_cast<int>(codebook_), trellis_, xa, m, k_, n_, gemv_splits_, part, stream);
    return;
  }
  gemm_product(m, xa, part, reinterpret_cast<uint16_t*>(scratch + s.act + s.part), stream);
}

void CudaExl3Linear::gemm_product(int64_t m, const uint16_t* xa, float* part, uint16_t* what,
                                  cudaStream_t stream) const {
  const int cb = static_cast<int>(codebook_);
  cublasHandle_t h = cublas_for(device_);
  check(cublasSetStream(h, stream), "cublasSetStream (EXL3)");
  const float one = 1.0f, zero = 0.0f;
  const int64_t slice = gemm_slice_cols(), rows = m * gemm_act_parts(m);
  for (int64_t c0 = 0; c0 < n_; c0 += slice) {
    const int64_t cols = std::min(slice, n_ - c0);
    exl3k::decode(K_, cb, trellis_, k_, n_, c0, cols, what, stream);
    // Column-major view: part[rows, n]ᵀ (n x rows) = Ŵ slice ᵀ (cols x k, lda cols) · xaᵀ (k x rows).
    check(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(cols), static_cast<int>(rows),
                       static_cast<int>(k_), &one, what, CUDA_R_16F, static_cast<int>(cols), xa, CUDA_R_16F,
                       static_cast<int>(k_), &zero, part + c0, CUDA_R_32F, static_cast<int>(n_), CUBLAS_COMPUTE_32F,
                       CUBLAS_GEMM_DEFAULT),
          "EXL3 prefill GEMM (cublasGemmEx)");
  }
}

void CudaExl3Linear::reconstructed_product(int64_t m, float* y, cudaStream_t stream, std::byte* scratch,
                                           const ScratchLayout& s) const {
  const auto* xa = reinterpret_cast<const uint16_t*>(scratch);
  auto* w = reinterpret_cast<uint16_t*>(scratch + s.act + s.part);
  cublasHandle_t h = cublas_for(device_);
  check(cublasSetStream(h, stream), "cublasSetStream (EXL3)");
  if (bias_) fill_rows(y, bias_, m, out_features_, stream);
  const float one = 1.0f, zero = 0.0f;
  const int64_t slice = gemm_slice_cols();
  for (int64_t c0 = 0; c0 < out_features_; c0 += slice) {  // padded columns beyond out_features: skipped
    const int64_t cols = std::min(slice, n_ - c0), used = std::min(cols, out_features_ - c0);
    exl3k::reconstruct(K_, static_cast<int>(codebook_), trellis_, k_, n_, c0, cols, suh_, svh_, w, sms_, stream);
    // Column-major view: y[m, c0 .. c0+used)ᵀ (ldc out_features) = W slice ᵀ (cols x k) · xaᵀ (k x m).
    // Padded inputs are zero in xa, so the W rows beyond in_features add nothing.
    check(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(used), static_cast<int>(m), static_cast<int>(k_),
                       &one, w, CUDA_R_16F, static_cast<int>(cols), xa, CUDA_R_16F, static_cast<int>(k_),
                       bias_ ? &one : &zero, y + c0, CUDA_R_32F, static_cast<int>(out_features_), CUBLAS_COMPUTE_32F,
                       CUBLAS_GEMM_DEFAULT),
          "EXL3 prefill GEMM on the reconstructed weight (cublasGemmEx)");
  }
}

namespace {
bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }
}  // namespace

bool CudaExl3Linear::fusable_resid(int64_t m) const {
  return fused_in(m) && out_features_ == n_ && n_ <= kExl3FusedNormMaxCols;
}

bool CudaExl3Linear::fusable_norm(int64_t m) const {
  return fused_in(m) && in_features_ == k_ && k_ <= kExl3FusedNormMaxCols;
}

namespace {
// Checks `f` against linear `l` (input x, silu `up`) and puts it into the launch item.
void apply_fusion(const CudaExl3Linear& l, int64_t m, const Exl3Fusion& f, const float* x, const float* up,
                  exl3k::GemvItem& item) {
  const bool out_side = f.resid || f.resid_sumsq, in_side = f.norm_w || f.norm_sumsq || f.norm_out;
  if (out_side && in_side) bad("a fused residual add and a fused norm in one launch");
  if (out_side) {
    if (!l.fusable_resid(m)) bad("this linear cannot fuse the residual add at m = " + std::to_string(m));
    if (!f.resid || !f.resid_sumsq || !aligned16(f.resid) || !aligned16(f.resid_sumsq) || f.resid == x ||
        (up && f.resid == up))
      bad("fused residual add: null, unaligned or aliased buffers");
  }
  if (in_side) {
    if (!l.fusable_norm(m) || up) bad("this linear cannot fuse the input norm at m = " + std::to_string(m));
    if (!f.norm_w || !f.norm_sumsq || !aligned16(f.norm_w) || !aligned16(x) || (f.norm_out && !aligned16(f.norm_out)))
      bad("fused norm: null or unaligned buffers");
  }
  item.fusion = f;
}
}  // namespace

void CudaExl3Linear::forward(const float* x, int64_t m, float* y, cudaStream_t stream, void* scratch, const float* up,
                             float* silu_out, const Exl3Fusion* fusion) const {
  if (m == 0) return;
  if (m < 0 || m > kMaxGridRows) bad("m = " + std::to_string(m) + " (expected 0.." + std::to_string(kMaxGridRows) + ")");
  if (!x || !y || !scratch) bad("null input, output or scratch");
  const ScratchLayout s = layout(m);
  auto* sc = static_cast<std::byte*>(scratch);
  auto* xa = reinterpret_cast<uint16_t*>(sc);
  const bool gemv = m <= kExl3GemvMaxRows;
  if ((up && !silu_out) || fusion) {  // only the fused input path skips the silu product or fuses more
    if (!gemv || !fused_in(m)) bad("a fused silu or residual input needs the fused-input GEMV");
    exl3k::GemvItem item = gemv_item(nullptr, reinterpret_cast<float*>(sc + s.act), y);
    item.x = x;
    item.up = up;
    item.suh = suh_;
    item.in_features = static_cast<int>(in_features_);
    if (fusion) apply_fusion(*this, m, *fusion, x, up, item);
    exl3k::gemv_group(K_, static_cast<int>(codebook_), std::span<const exl3k::GemvItem>(&item, 1), m, k_, stream);
    return;
  }
  if (!gemv && fused_reconstruct(m)) {
    exl3k::hadamard_in(x, m, in_features_, k_, suh_, xa, exl3k::ActLayout::kPlainHalf, stream, up, silu_out);
    reconstructed_product(m, y, stream, sc, s);
    return;
  }
  if (gemv && !up && fused_in(m)) {  // one launch: transforms and product
    exl3k::GemvItem item = gemv_item(nullptr, reinterpret_cast<float*>(sc + s.act), y);
    item.x = x;
    item.suh = suh_;
    item.in_features = static_cast<int>(in_features_);
    exl3k::gemv_group(K_, static_cast<int>(codebook_), std::span<const exl3k::GemvItem>(&item, 1), m, k_, stream);
    return;
  }
  const int parts = gemm_act_parts(m);
  exl3k::hadamard_in(x, m, in_features_, k_, suh_, xa,
                     gemv              ? exl3k::ActLayout::kGemvFragments
                     : parts == 2      ? exl3k::ActLayout::kGemmRows
                                       : exl3k::ActLayout::kGemmRowsHalf,
                     stream, up, silu_out);
  if (gemv && (gemv_fused_out() || gemv_fused_in())) {
    const exl3k::GemvItem item = gemv_item(reinterpret_cast<const uint16_t*>(sc), reinterpret_cast<float*>(sc + s.act), y);
    exl3k::gemv_group(K_, static_cast<int>(codebook_), std::span<const exl3k::GemvItem>(&item, 1), m, k_, stream);
    return;
  }
  product(m, stream, sc, s);
  // GEMV: one [m, n] partial per k-split; GEMM: the hi rows then (if split) the lo rows of [2m, n].
  exl3k::hadamard_out(reinterpret_cast<const float*>(sc + s.act), gemv ? gemv_splits_ : parts, m * n_, m, n_,
                      out_features_, svh_, bias_, y, stream);
}

static_assert(CudaExl3Linear::kMaxGroup == exl3k::kMaxGroup);

size_t CudaExl3Linear::group_scratch_bytes(std::span<const CudaExl3Linear* const> ls, int64_t m) {
  size_t total = 0, what = 0;
  const bool gemm = m > kExl3GemvMaxRows && !fused_reconstruct(m);
  for (const CudaExl3Linear* l : ls) {
    if (m <= kExl3GemvMaxRows) {  // side by side
      total += l->scratch_bytes(m);
    } else if (gemm) {  // activations and products side by side, one Ŵ slice region
      const ScratchLayout s = l->layout(m);
      total += s.act + s.part;
      what = std::max(what, s.what);
    } else {  // reconstructed W: one region, reused
      total = std::max(total, l->scratch_bytes(m));
    }
  }
  return total + what;
}

bool CudaExl3Linear::mlp_fusable(const CudaExl3Linear& g, const CudaExl3Linear& u, const CudaExl3Linear& d, int64_t m) {
  return m > kExl3GemvMaxRows && m <= kMaxGridRows && !fused_reconstruct(m) && prefill_fusion() &&
         gemm_act_parts(m) == 1 && g.k_ == u.k_ && g.in_features_ == u.in_features_ && g.n_ == u.n_ &&
         g.out_features_ == g.n_ && u.out_features_ == u.n_ && d.k_ == g.n_ && d.in_features_ == g.out_features_ &&
         g.device_ == u.device_ && g.device_ == d.device_;
}

namespace {
// forward_mlp's scratch: [xa_gate | xa_up], later [xa_down | z_down] over the same bytes, then
// one Ŵ slice region shared by the three GEMMs.
struct MlpLayout {
  size_t xa_in, xa_down, what, total;
};
MlpLayout mlp_layout(int64_t m, int64_t k_in, int64_t k_down, int64_t n_down, size_t what_bytes) {
  MlpLayout l;
  l.xa_in = align_up(static_cast<size_t>(m * k_in) * 2);
  l.xa_down = align_up(static_cast<size_t>(m * k_down) * 2);
  l.what = std::max(2 * l.xa_in, l.xa_down + align_up(static_cast<size_t>(m * n_down) * 4));
  l.total = l.what + what_bytes;
  return l;
}
}  // namespace

size_t CudaExl3Linear::mlp_scratch_bytes(const CudaExl3Linear& g, const CudaExl3Linear& u, const CudaExl3Linear& d,
                                         int64_t m) {
  return mlp_layout(m, g.k_, d.k_, d.n_, std::max({g.what_bytes(), u.what_bytes(), d.what_bytes()})).total;
}

void CudaExl3Linear::forward_mlp(const CudaExl3Linear& g, const CudaExl3Linear& u, const CudaExl3Linear& d,
                                 const float* x, int64_t m, float* zg, float* zu, float* y, cudaStream_t stream,
                                 void* scratch) {
  if (!mlp_fusable(g, u, d, m))
    throw Error(ErrorKind::kInternal, "EXL3 MLP: m = " + std::to_string(m) + " or the shapes are not on the fused path");
  if (!x || !zg || !zu || !y || !scratch) throw Error(ErrorKind::kInternal, "EXL3 MLP: null input, output or scratch");
  auto* sc = static_cast<std::byte*>(scratch);
  const MlpLayout l = mlp_layout(m, g.k_, d.k_, d.n_, 0);
  auto* what = reinterpret_cast<uint16_t*>(sc + l.what);
  const float* suh[2] = {g.suh_, u.suh_};
  uint16_t* xa[2] = {reinterpret_cast<uint16_t*>(sc), reinterpret_cast<uint16_t*>(sc + l.xa_in)};
  constexpr auto kRows = exl3k::ActLayout::kGemmRowsHalf;  // gemm_act_parts(m) == 1
  exl3k::hadamard_in_group(x, m, g.in_features_, g.k_, suh, xa, kRows, stream);
  g.gemm_product(m, xa[0], zg, what, stream);
  u.gemm_product(m, xa[1], zu, what, stream);
  auto* xd = reinterpret_cast<uint16_t*>(sc);
  auto* zd = reinterpret_cast<float*>(sc + l.xa_down);
  exl3k::mlp_bridge(zg, zu, m, g.n_, g.out_features_, g.svh_, g.bias_, u.svh_, u.bias_, d.suh_, xd, kRows, stream);
  d.gemm_product(m, xd, zd, what, stream);
  exl3k::hadamard_out(zd, 1, m * d.n_, m, d.n_, d.out_features_, d.svh_, d.bias_, y, stream);
}

void CudaExl3Linear::forward_group(std::span<const CudaExl3Linear* const> ls, const float* x, int64_t m,
                                   std::span<float* const> ys, cudaStream_t stream, void* scratch,
                                   const Exl3Fusion* norm) {
  auto bad_group = [](const std::string& why) { throw Error(ErrorKind::kInternal, "EXL3 linear group: " + why); };
  if (ls.empty() || ls.size() > exl3k::kMaxGroup || ys.size() != ls.size())
    bad_group(std::to_string(ls.size()) + " linears, " + std::to_string(ys.size()) + " outputs");
  if (m < 1 || m > kMaxGridRows || (m > kExl3GemvMaxRows && !fused_reconstruct(m) && !prefill_fusion()))
    bad_group("m = " + std::to_string(m) + " (neither the GEMV, the reconstructed-W nor the grouped GEMM path)");
  if (!x || !scratch) bad_group("null input or scratch");
  if (m > kExl3GemvMaxRows && !fused_reconstruct(m)) {  // one input transform, GEMMs, one output launch
    const int parts = gemm_act_parts(m);
    std::array<const float*, exl3k::kMaxGroup> suh{};
    std::array<uint16_t*, exl3k::kMaxGroup> xa{};
    std::array<float*, exl3k::kMaxGroup> z{};
    std::array<exl3k::OutGroup::Item, exl3k::kMaxGroup> items{};
    auto* sc = static_cast<std::byte*>(scratch);
    size_t at = 0;
    for (size_t i = 0; i < ls.size(); ++i) {
      const CudaExl3Linear& l = *ls[i];
      if (l.k_ != ls[0]->k_ || l.in_features_ != ls[0]->in_features_) bad_group("inputs of different widths");
      if (!ys[i]) bad_group("null output");
      const ScratchLayout s = l.layout(m);
      suh[i] = l.suh_;
      xa[i] = reinterpret_cast<uint16_t*>(sc + at);
      z[i] = reinterpret_cast<float*>(sc + at + s.act);
      items[i] = {z[i], m * l.n_, parts, static_cast<int>(l.n_), static_cast<int>(l.out_features_), l.svh_, l.bias_,
                  ys[i]};
      at += s.act + s.part;
    }
    const size_t count = ls.size();
    exl3k::hadamard_in_group(x, m, ls[0]->in_features_, ls[0]->k_, std::span(suh.data(), count),
                             std::span(xa.data(), count),
                             parts == 2 ? exl3k::ActLayout::kGemmRows : exl3k::ActLayout::kGemmRowsHalf, stream);
    for (size_t i = 0; i < count; ++i)
      ls[i]->gemm_product(m, xa[i], z[i], reinterpret_cast<uint16_t*>(sc + at), stream);
    exl3k::hadamard_out_group(std::span(items.data(), count), m, stream);
    return;
  }
  if (m > kExl3GemvMaxRows) {  // fp16(x) once for the group, then each linear's W and GEMM in turn
    for (size_t i = 0; i < ls.size(); ++i) {
      if (ls[i]->k_ != ls[0]->k_ || ls[i]->in_features_ != ls[0]->in_features_) bad_group("inputs of different widths");
      if (!ys[i]) bad_group("null output");
    }
    auto* sc = static_cast<std::byte*>(scratch);
    exl3k::hadamard_in(x, m, ls[0]->in_features_, ls[0]->k_, nullptr, reinterpret_cast<uint16_t*>(sc),
                       exl3k::ActLayout::kPlainHalf, stream);
    for (size_t i = 0; i < ls.size(); ++i) ls[i]->reconstructed_product(m, ys[i], stream, sc, ls[i]->layout(m));
    return;
  }
  std::array<const float*, exl3k::kMaxGroup> suh{};
  std::array<uint16_t*, exl3k::kMaxGroup> xa{};
  std::array<exl3k::OutGroup::Item, exl3k::kMaxGroup> items{};
  auto* sc = static_cast<std::byte*>(scratch);
  std::array<std::byte*, exl3k::kMaxGroup> base{};
  std::array<ScratchLayout, exl3k::kMaxGroup> lay{};
  for (size_t i = 0; i < ls.size(); ++i) {
    const CudaExl3Linear& l = *ls[i];
    if (l.k_ != ls[0]->k_ || l.in_features_ != ls[0]->in_features_) bad_group("inputs of different widths");
    if (!ys[i]) bad_group("null output");
    lay[i] = l.layout(m);
    base[i] = sc;
    suh[i] = l.suh_;
    xa[i] = reinterpret_cast<uint16_t*>(sc);
    items[i] = {reinterpret_cast<const float*>(sc + lay[i].act), m * l.n_, l.gemv_splits_, static_cast<int>(l.n_),
                static_cast<int>(l.out_features_), l.svh_, l.bias_, ys[i]};
    sc += lay[i].total;
  }
  const size_t count = ls.size();
  bool one_launch = true;  // one GEMV launch when K and codebook agree (the usual q/k/v, gate/up)
  for (size_t i = 1; i < count; ++i)
    one_launch = one_launch && ls[i]->K_ == ls[0]->K_ && ls[i]->codebook_ == ls[0]->codebook_;
  bool all_fused_in = one_launch;
  for (size_t i = 0; i < count; ++i) all_fused_in = all_fused_in && ls[i]->fused_in(m);
  if (norm && !all_fused_in) bad_group("a fused norm needs one fused-input launch");
  if (norm && (norm->resid || norm->resid_sumsq)) bad_group("a fused residual add on a group");
  if (all_fused_in) {  // one launch for the whole group: transforms and products
    std::array<exl3k::GemvItem, exl3k::kMaxGroup> gi{};
    for (size_t i = 0; i < count; ++i) {
      gi[i] = ls[i]->gemv_item(nullptr, reinterpret_cast<float*>(base[i] + lay[i].act), ys[i]);
      gi[i].x = x;
      gi[i].suh = ls[i]->suh_;
      gi[i].in_features = static_cast<int>(ls[i]->in_features_);
      if (norm) apply_fusion(*ls[i], m, *norm, x, nullptr, gi[i]);
    }
    exl3k::gemv_group(ls[0]->K_, static_cast<int>(ls[0]->codebook_), std::span(gi.data(), count), m, ls[0]->k_, stream);
    return;
  }
  exl3k::hadamard_in_group(x, m, ls[0]->in_features_, ls[0]->k_, std::span(suh.data(), count),
                           std::span(xa.data(), count), exl3k::ActLayout::kGemvFragments, stream);
  if (one_launch) {
    const bool fused = gemv_fused_out() || gemv_fused_in();
    std::array<exl3k::GemvItem, exl3k::kMaxGroup> gi{};
    for (size_t i = 0; i < count; ++i) {
      float* z = reinterpret_cast<float*>(base[i] + lay[i].act);
      gi[i] = fused ? ls[i]->gemv_item(xa[i], z, ys[i])
                    : exl3k::GemvItem{ls[i]->trellis_, xa[i], z, static_cast<int>(ls[i]->n_ / 16), ls[i]->gemv_splits_, 0};
    }
    exl3k::gemv_group(ls[0]->K_, static_cast<int>(ls[0]->codebook_), std::span(gi.data(), count), m, ls[0]->k_, stream);
    if (fused) return;
  } else {
    for (size_t i = 0; i < count; ++i) ls[i]->product(m, stream, base[i], lay[i]);
  }
  exl3k::hadamard_out_group(std::span(items.data(), count), m, stream);
}

bool CudaExl3Linear::fused_in(int64_t m) const {
  return m >= 1 && m <= kExl3GemvMaxRows && gemv_fused_in() &&
         m * exl3k::gemv_split_slabs(static_cast<int>(k_ / 16), gemv_splits_) * 64 <= exl3k::kFusedInActBytes;
}

exl3k::GemvItem CudaExl3Linear::gemv_item(const uint16_t* xa, float* z, float* y) const {
  exl3k::GemvItem item{trellis_, xa, z, static_cast<int>(n_ / 16), gemv_splits_, 0};
  item.done = done_;
  item.svh = svh_;
  item.bias = bias_;
  item.y = y;
  item.out_features = static_cast<int>(out_features_);
  return item;
}

void CudaExl3Linear::product_only(int64_t m, cudaStream_t stream, void* scratch) const {
  if (m <= 0 || m > kMaxGridRows) bad("m = " + std::to_string(m) + " out of range");
  product(m, stream, static_cast<std::byte*>(scratch), layout(m));
}

void CudaExl3Linear::decode_what(uint16_t* what, cudaStream_t stream) const {
  exl3k::decode(K_, static_cast<int>(codebook_), trellis_, k_, n_, 0, n_, what, stream);
}

void CudaExl3Linear::reconstruct_weight(uint16_t* w, cudaStream_t stream) const {
  exl3k::reconstruct(K_, static_cast<int>(codebook_), trellis_, k_, n_, 0, n_, suh_, svh_, w, sms_, stream);
}

}  // namespace trellis::cuda
