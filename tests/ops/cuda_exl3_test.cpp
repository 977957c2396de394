// tests/ops/cuda_exl3_test.cpp: CudaExl3Linear against src/exl3 (the scalar oracle): Ŵ decode
// bit-exact for every K and codebook (and every one of the 65536 states), forward() for every K x
// codebook x m in {1, 3, 8, 17, 63, 100, 130} on padded layers (real in/out smaller than k, n)
// against exl3::reference_matmul, the reconstructed W of the large-batch path against fp64, every
// k-split count, the sliced prefill paths against the GEMV path on a wide layer, guard words around
// outputs and scratch, and bad-input errors. Skips without a GPU.
#if TRELLIS_WITH_CUDA

#include <gtest/gtest.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "backends/cuda/cuda_api.h"
#include "backends/cuda/cuda_exl3.h"
#include "backends/cuda/cuda_ops.h"
#include "backends/cuda/cuda_util.h"
#include "core/fp16.h"
#include "exl3/codebook.h"
#include "exl3/linear.h"
#include "exl3/tile.h"
#include "test_util.h"
#include "trellis/error.h"

namespace trellis {
namespace {

using cuda::CudaExl3Linear;
using exl3::Codebook;
constexpr Codebook kCodebooks[] = {Codebook::k3Inst, Codebook::kMcg, Codebook::kMul1};
constexpr uint32_t kGuard = 0x7FBADBADu;  // a NaN no kernel writes
constexpr size_t kGuardWords = 64;

#define CUDA_OR_SKIP()                                             \
  do {                                                             \
    if (list_cuda_devices().empty()) GTEST_SKIP() << "no CUDA device"; \
  } while (0)

// Sets cuda::gemv_fused_in for a scope.
struct GemvFusedIn {
  explicit GemvFusedIn(bool on) : was(cuda::gemv_fused_in()) { cuda::set_gemv_fused_in(on); }
  ~GemvFusedIn() { cuda::set_gemv_fused_in(was); }
  bool was;
};

void ok(cudaError_t e) { ASSERT_EQ(e, cudaSuccess) << cudaGetErrorString(e); }

// A random EXL3 layer (every bit string is a valid trellis, spec 2.9) with host storage.
struct Layer {
  int64_t k, n;
  int K;
  Codebook cb;
  std::vector<uint8_t> trellis;
  std::vector<uint16_t> suh, svh, bias;
  exl3::Exl3LinearView view() const {
    exl3::Exl3LinearView v;
    v.k = k;
    v.n = n;
    v.K = K;
    v.codebook = cb;
    v.trellis = trellis.data();
    v.suh = suh.data();
    v.svh = svh.data();
    v.bias = bias.empty() ? nullptr : bias.data();
    return v;
  }
};

double uniform(test::SplitMix64& rng) { return static_cast<double>(rng.next() >> 11) / 9007199254740992.0; }

Layer random_layer(int64_t k, int64_t n, int K, Codebook cb, uint64_t seed, bool with_bias) {
  test::SplitMix64 rng(seed);
  Layer l{k, n, K, cb, {}, {}, {}, {}};
  l.trellis.resize(static_cast<size_t>((k / 16) * (n / 16) * exl3::tile_bytes(K)));
  for (auto& b : l.trellis) b = static_cast<uint8_t>(rng.next());
  auto sign_scale = [&] {
    const double v = (0.5 + uniform(rng)) * ((rng.next() & 1) ? -1 : 1);
    return fp32_to_fp16(static_cast<float>(v * 0.05));
  };
  for (int64_t i = 0; i < k; ++i) l.suh.push_back(sign_scale());
  for (int64_t j = 0; j < n; ++j) l.svh.push_back(sign_scale());
  if (with_bias)
    for (int64_t j = 0; j < n; ++j) l.bias.push_back(fp32_to_fp16(static_cast<float>(uniform(rng) * 2 - 1)));
  return l;
}

std::vector<float> random_rows(int64_t m, int64_t cols, uint64_t seed) {
  test::SplitMix64 rng(seed);
  std::vector<float> x(static_cast<size_t>(m * cols));
  for (auto& v : x) v = static_cast<float>(uniform(rng) * 4 - 2);
  return x;
}

// Device buffer of `words` 4-byte words with kGuardWords guard words on each side.
class Guarded {
 public:
  explicit Guarded(size_t words) : words_(words) {
    ok(cudaMalloc(&base_, (words + 2 * kGuardWords) * 4));
    std::vector<uint32_t> fill(words + 2 * kGuardWords, kGuard);
    ok(cudaMemcpy(base_, fill.data(), fill.size() * 4, cudaMemcpyHostToDevice));
  }
  ~Guarded() { cudaFree(base_); }
  Guarded(const Guarded&) = delete;
  Guarded& operator=(const Guarded&) = delete;
  // 256-byte aligned when `offset_words` is 0 (kGuardWords * 4 = 256).
  template <typename T>
  T* at(size_t offset_words = 0) {
    return reinterpret_cast<T*>(static_cast<uint32_t*>(base_) + kGuardWords + offset_words);
  }
  void upload(const void* src, size_t bytes, size_t offset_words = 0) {
    ok(cudaMemcpy(at<uint32_t>(offset_words), src, bytes, cudaMemcpyHostToDevice));
  }
  template <typename T>
  std::vector<T> download(size_t count, size_t offset_words = 0) {
    std::vector<T> out(count);
    ok(cudaMemcpy(out.data(), at<uint32_t>(offset_words), count * sizeof(T), cudaMemcpyDeviceToHost));
    return out;
  }
  // The guard words on both sides are untouched.
  bool guards_intact() {
    std::vector<uint32_t> all(words_ + 2 * kGuardWords);
    if (cudaMemcpy(all.data(), base_, all.size() * 4, cudaMemcpyDeviceToHost) != cudaSuccess) return false;
    for (size_t i = 0; i < all.size(); ++i)
      if ((i < kGuardWords || i >= kGuardWords + words_) && all[i] != kGuard) return false;
    return true;
  }

 private:
  void* base_ = nullptr;
  size_t words_;
};

double rel_rms(const std::vector<float>& a, const std::vector<float>& b) {
  double err = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    err += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    norm += static_cast<double>(b[i]) * b[i];
  }
  return norm == 0 ? std::sqrt(err) : std::sqrt(err / norm);
}

std::unique_ptr<CudaExl3Linear> upload(const Layer& l, int64_t in_f, int64_t out_f) {
  auto d = CudaExl3Linear::create(l.view(), std::nullopt, in_f, out_f, nullptr);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return d;
}

// forward() with x at a 4-byte (not 16-byte) offset, y and scratch between guard words.
std::vector<float> run_forward(const CudaExl3Linear& d, const std::vector<float>& x, int64_t m, int64_t in_f,
                               int64_t out_f) {
  Guarded xb(x.size() + 1), yb(static_cast<size_t>(m * out_f)), sb(d.scratch_bytes(m) / 4 + 1);
  xb.upload(x.data(), x.size() * 4, 1);
  d.forward(xb.at<float>(1), m, yb.at<float>(), nullptr, sb.at<void>());
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_TRUE(yb.guards_intact()) << "output overrun";
  EXPECT_TRUE(sb.guards_intact()) << "scratch overrun";
  (void)in_f;
  return yb.download<float>(static_cast<size_t>(m * out_f));
}

// The oracle on the padded layer, trimmed to the real columns.
std::vector<float> reference(const Layer& l, const std::vector<float>& x, int64_t m, int64_t in_f, int64_t out_f) {
  std::vector<float> xp(static_cast<size_t>(m * l.k), 0.0f), yp(static_cast<size_t>(m * l.n));
  for (int64_t r = 0; r < m; ++r)
    std::copy_n(x.begin() + r * in_f, in_f, xp.begin() + r * l.k);
  exl3::reference_matmul(l.view(), xp.data(), m, yp.data());
  std::vector<float> y(static_cast<size_t>(m * out_f));
  for (int64_t r = 0; r < m; ++r) std::copy_n(yp.begin() + r * l.n, out_f, y.begin() + r * out_f);
  return y;
}

TEST(CudaExl3, DecodeIsBitExactForEveryKAndCodebook) {
  CUDA_OR_SKIP();
  const int64_t k = 256, n = 384;
  for (int K = 1; K <= 8; ++K)
    for (Codebook cb : kCodebooks) {
      const Layer l = random_layer(k, n, K, cb, 100 + static_cast<uint64_t>(K) * 3 + static_cast<uint64_t>(cb), false);
      auto d = upload(l, k, n);
      Guarded w(static_cast<size_t>(k * n / 2));
      d->decode_what(w.at<uint16_t>(), nullptr);
      ok(cudaDeviceSynchronize());
      EXPECT_TRUE(w.guards_intact());
      const auto got = w.download<uint16_t>(static_cast<size_t>(k * n));
      std::vector<uint16_t> want(got.size());
      exl3::decode_what(l.view(), want.data());
      size_t bad = 0;
      for (size_t i = 0; i < want.size(); ++i) bad += got[i] != want[i];
      EXPECT_EQ(bad, 0u) << "K=" << K << " cb=" << exl3::codebook_name(cb);
    }
}

// In-place natural-order Walsh-Hadamard transform of v[0], v[stride], ..., v[127·stride] in
// fp64 (no 1/√128): the independent oracle of the reconstruction test.
void fwht128_f64(double* v, size_t stride) {
  for (size_t h = 1; h < 128; h <<= 1)
    for (size_t i = 0; i < 128; i += 2 * h)
      for (size_t j = i; j < i + h; ++j) {
        const double a = v[j * stride], b = v[(j + h) * stride];
        v[j * stride] = a + b;
        v[(j + h) * stride] = a - b;
      }
}

// The prefill path's W = diag(suh)·H·Ŵ·H/128·diag(svh) (spec 4.2) against an fp64 evaluation of
// the same formula from the oracle's exact Ŵ: every element within half an fp16 ulp of the fp64
// value (one rounding; the kernel computes in fp32 with hi + lo fp16 parts in the second MMA), plus
// 2^-16·|suh·svh| for fp32 sums (a kernel that dropped the lo part would miss by ~2^-12 of that).
TEST(CudaExl3, ReconstructedWeightIsTheRoundedFp64Product) {
  CUDA_OR_SKIP();
  const int64_t k = 256, n = 384;
  for (int K = 1; K <= 8; ++K)
    for (Codebook cb : kCodebooks) {
      const Layer l = random_layer(k, n, K, cb, 300 + static_cast<uint64_t>(K) * 3 + static_cast<uint64_t>(cb), false);
      auto d = upload(l, k, n);
      Guarded w(static_cast<size_t>(k * n / 2));
      d->reconstruct_weight(w.at<uint16_t>(), nullptr);
      ok(cudaDeviceSynchronize());
      EXPECT_TRUE(w.guards_intact());
      const auto got = w.download<uint16_t>(static_cast<size_t>(k * n));
      std::vector<uint16_t> what(got.size());
      exl3::decode_what(l.view(), what.data());
      std::vector<double> ref(what.size());
      for (size_t i = 0; i < ref.size(); ++i) ref[i] = fp16_to_fp32(what[i]);
      for (int64_t r0 = 0; r0 < k; r0 += 128)
        for (int64_t j = 0; j < n; ++j) fwht128_f64(ref.data() + r0 * n + j, static_cast<size_t>(n));
      for (int64_t i = 0; i < k; ++i)
        for (int64_t c0 = 0; c0 < n; c0 += 128) fwht128_f64(ref.data() + i * n + c0, 1);
      size_t bad = 0;
      double err2 = 0, norm2 = 0;
      for (int64_t i = 0; i < k; ++i)
        for (int64_t j = 0; j < n; ++j) {
          const double scale = static_cast<double>(fp16_to_fp32(l.suh[i])) * fp16_to_fp32(l.svh[j]);
          const double want = ref[i * n + j] * scale / 128.0;
          const double have = fp16_to_fp32(got[i * n + j]);
          const double ulp = std::ldexp(1.0, std::max(std::ilogb(want), -14) - 10);  // fp16 ulp at want
          bad += std::abs(have - want) > 0.5 * ulp + std::ldexp(std::abs(scale), -16);
          err2 += (have - want) * (have - want);
          norm2 += want * want;
        }
      EXPECT_EQ(bad, 0u) << "K=" << K << " cb=" << exl3::codebook_name(cb);
      // One rounding to fp16 is about 2^-11/sqrt(3) ~ 2.8e-4 rms at worst (bottom of a binade).
      EXPECT_LT(std::sqrt(err2 / norm2), 3e-4) << "K=" << K << " cb=" << exl3::codebook_name(cb);
    }
}

TEST(CudaExl3, DecodeCoversEveryState) {
  // K = 8: a state is two consecutive stream bytes; tile t pairs byte t % 256 with bytes
  // 0..127 or 128..255, so the 512 tiles hold all 65536 states.
  CUDA_OR_SKIP();
  const int K = 8;
  Layer l = random_layer(16 * 16, 16 * 32, K, Codebook::k3Inst, 7, false);
  for (int t = 0; t < 512; ++t) {
    uint8_t* tile = l.trellis.data() + t * exl3::tile_bytes(K);
    for (int q = 0; q < 256; ++q) {
      const int hi = t & 255, lo = (q / 2) + ((t >> 8) << 7);
      tile[(q / 4) * 4 + 3 - q % 4] = static_cast<uint8_t>(q % 2 == 0 ? hi : lo);
    }
  }
  for (Codebook cb : kCodebooks) {
    l.cb = cb;
    auto d = upload(l, l.k, l.n);
    Guarded w(static_cast<size_t>(l.k * l.n / 2));
    d->decode_what(w.at<uint16_t>(), nullptr);
    ok(cudaDeviceSynchronize());
    const auto got = w.download<uint16_t>(static_cast<size_t>(l.k * l.n));
    std::vector<uint16_t> want(got.size());
    exl3::decode_what(l.view(), want.data());
    EXPECT_TRUE(got == want) << exl3::codebook_name(cb);
  }
}

// Sets the reconstructed-W threshold (cuda::fused_reconstruct) for a scope.
struct ReconstructRows {
  explicit ReconstructRows(int64_t rows) { cuda::set_fused_reconstruct_rows(rows); }
  ~ReconstructRows() { cuda::set_fused_reconstruct_rows(cuda::kFusedReconstructRows); }
};

// Sets cuda::prefill_fusion for a scope.
struct PrefillFusion {
  explicit PrefillFusion(bool on) { cuda::set_prefill_fusion(on); }
  ~PrefillFusion() { cuda::set_prefill_fusion(true); }
};

// Every K x codebook x m on a padded layer: GEMV for m <= 8, decode + cuBLAS above, and the
// reconstructed-W path (forced from 64 rows in the second pass) for m = 100 and 130.
TEST(CudaExl3, ForwardMatchesReferenceForEveryVariant) {
  CUDA_OR_SKIP();
  const int64_t k = 384, n = 256, in_f = 300, out_f = 200;
  for (const int64_t rows : {int64_t{0}, int64_t{64}}) {
    const ReconstructRows scope(rows);
    for (int K = 1; K <= 8; ++K)
      for (Codebook cb : kCodebooks) {
        const Layer l = random_layer(k, n, K, cb, 500 + static_cast<uint64_t>(K) * 3 + static_cast<uint64_t>(cb), true);
        auto d = upload(l, in_f, out_f);
        for (int64_t m : {1, 3, 8, 17, 63, 100, 130}) {
          const auto x = random_rows(m, in_f, 900 + static_cast<uint64_t>(m));
          const auto got = run_forward(*d, x, m, in_f, out_f);
          const auto want = reference(l, x, m, in_f, out_f);
          // fp32-level (hi + lo activations) up to kSplitActMaxRows rows; above, activations are
          // rounded once to fp16 (relative error <= 2^-11 each: at most 2^-11/sqrt(3) ~ 2.8e-4 rms
          // on the products), and on the reconstructed path W is too (a second such rounding:
          // sqrt(2) x 2.8e-4 ~ 4e-4). 5e-4 bounds both and still catches a wrong row or column.
          EXPECT_LT(rel_rms(got, want), m > cuda::kSplitActMaxRows ? 5e-4 : 2e-5)
              << "K=" << K << " cb=" << exl3::codebook_name(cb) << " m=" << m << " reconstruct from " << rows;
        }
      }
  }
}

// Linears sharing x (q/k/v-like: same k and in_features, different n, K, codebook and bias) run
// as one group give bit-identical outputs to separate forward() calls, and stay inside their
// buffers, on every path: GEMV (m <= 8), grouped GEMM with hi + lo (m = 9, 63) and hi-only
// activations (m = 64), reconstructed W (m = 70). Prefill groups without cuda::prefill_fusion are
// refused.
TEST(CudaExl3, ForwardGroupEqualsSeparateForwards) {
  CUDA_OR_SKIP();
  // Mixed K and codebooks take the separate transforms; so do the single forwards compared.
  const GemvFusedIn separate(false);
  const int64_t k = 384, in_f = 300;
  const Layer la = random_layer(k, 256, 3, Codebook::kMcg, 71, true);
  const Layer lb = random_layer(k, 128, 4, Codebook::kMul1, 72, false);
  const Layer lc = random_layer(k, 384, 2, Codebook::k3Inst, 73, true);
  const Layer ld = random_layer(k, 128, 3, Codebook::kMcg, 75, false);
  const Layer le = random_layer(k, 384, 3, Codebook::kMcg, 76, true);
  auto da = upload(la, in_f, 200), db = upload(lb, in_f, 128), dc = upload(lc, in_f, 380);
  auto dd = upload(ld, in_f, 128), de = upload(le, in_f, 384);
  // Mixed K and codebooks (one GEMV launch per linear), then one K and codebook (one launch);
  // m = 70 runs on the reconstructed-W path (forced from 65 rows), x converted once.
  const ReconstructRows scope(65);
  for (int pass = 0; pass < 2; ++pass) {
    const CudaExl3Linear* group[3] = {da.get(), pass ? dd.get() : db.get(), pass ? de.get() : dc.get()};
    const int64_t outs[3] = {200, 128, pass ? 384 : 380};
    for (int64_t m : {1, 4, 8, 9, 63, 64, 70}) {
      const auto x = random_rows(m, in_f, 300 + static_cast<uint64_t>(m));
      Guarded xb(x.size()), sb(CudaExl3Linear::group_scratch_bytes(group, m) / 4 + 1);
      xb.upload(x.data(), x.size() * 4);
      std::vector<std::unique_ptr<Guarded>> yb;
      float* ys[3];
      for (int i = 0; i < 3; ++i) {
        yb.push_back(std::make_unique<Guarded>(static_cast<size_t>(m * outs[i])));
        ys[i] = yb.back()->at<float>();
      }
      CudaExl3Linear::forward_group(group, xb.at<float>(), m, ys, nullptr, sb.at<void>());
      ok(cudaDeviceSynchronize());
      EXPECT_TRUE(sb.guards_intact()) << "scratch overrun, m=" << m;
      for (int i = 0; i < 3; ++i) {
        EXPECT_TRUE(yb[i]->guards_intact()) << "output " << i << " overrun, m=" << m;
        const auto got = yb[i]->download<float>(static_cast<size_t>(m * outs[i]));
        const auto want = run_forward(*group[i], x, m, in_f, outs[i]);
        EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * 4), 0) << "linear " << i << " m=" << m
                                                                              << " pass " << pass;
      }
    }
  }
  const CudaExl3Linear* group[3] = {da.get(), db.get(), dc.get()};
  {
    const PrefillFusion off(false);
    Guarded xb(static_cast<size_t>(63 * in_f)), sb(CudaExl3Linear::group_scratch_bytes(group, 63) / 4 + 1);
    Guarded y0(63 * 200), y1(63 * 128), y2(63 * 380);
    float* ys[3] = {y0.at<float>(), y1.at<float>(), y2.at<float>()};
    EXPECT_THROW(CudaExl3Linear::forward_group(group, xb.at<float>(), 9, ys, nullptr, sb.at<void>()), Error);
    EXPECT_THROW(CudaExl3Linear::forward_group(group, xb.at<float>(), 63, ys, nullptr, sb.at<void>()), Error);
  }
  auto other = upload(random_layer(512, 128, 3, Codebook::kMcg, 74, false), 512, 128);
  const CudaExl3Linear* mixed[2] = {da.get(), other.get()};
  Guarded sb(CudaExl3Linear::group_scratch_bytes(mixed, 1) / 4 + 1), xb(512), y0(200), y1(128);
  float* ym[2] = {y0.at<float>(), y1.at<float>()};
  EXPECT_THROW(CudaExl3Linear::forward_group(mixed, xb.at<float>(), 1, ym, nullptr, sb.at<void>()), Error);
}

// forward() with `up` (the backend's silu_mul fusion) equals cuda::silu_mul then forward() bit for
// bit, including the silu product it writes back in place of the gate, at GEMV and GEMM sizes.
TEST(CudaExl3, FusedSiluInputEqualsSiluMulThenForward) {
  CUDA_OR_SKIP();
  // Separate input transforms on both sides: the fused one (default for x without silu) groups
  // the split-k sums differently, so only the separate forms compare bit for bit.
  const GemvFusedIn separate(false);
  const int64_t k = 384, in_f = 300, out_f = 200;
  const Layer l = random_layer(k, 256, 3, Codebook::kMcg, 91, true);
  auto d = upload(l, in_f, out_f);
  const ReconstructRows scope(100);  // m = 130 takes the reconstructed-W path
  for (int64_t m : {1, 5, 70, 130}) {
    const auto g = random_rows(m, in_f, 92), u = random_rows(m, in_f, 93);
    const size_t n = g.size();
    Guarded gb(n), ub(n), ob(n), fb(n), y1(static_cast<size_t>(m * out_f)), y2(static_cast<size_t>(m * out_f));
    Guarded sb(d->scratch_bytes(m) / 4 + 1);
    gb.upload(g.data(), n * 4);
    fb.upload(g.data(), n * 4);  // the fused call reads the gate here and overwrites it with the product
    ub.upload(u.data(), n * 4);
    cuda::silu_mul(gb.at<float>(), ub.at<float>(), ob.at<float>(), static_cast<int64_t>(n), nullptr);
    d->forward(ob.at<float>(), m, y1.at<float>(), nullptr, sb.at<void>());
    d->forward(fb.at<float>(), m, y2.at<float>(), nullptr, sb.at<void>(), ub.at<float>(), fb.at<float>());
    ok(cudaDeviceSynchronize());
    EXPECT_TRUE(fb.guards_intact() && y2.guards_intact() && sb.guards_intact()) << "overrun, m=" << m;
    EXPECT_EQ(ob.download<float>(n), fb.download<float>(n)) << "silu product, m=" << m;
    const auto a = y1.download<float>(static_cast<size_t>(m * out_f)), b = y2.download<float>(static_cast<size_t>(m * out_f));
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * 4), 0) << "m=" << m;
  }
}

// The gated MLP at prefill sizes (forward_mlp: one input transform for gate and up, the bridge
// pass into down's input) equals forward(gate), forward(up), silu_mul, forward(down) bit for bit,
// with biases, mixed K and codebooks and a down layer with padded outputs; it stays inside its
// buffers; and shapes or sizes off the fused path (hi + lo rows, padded intermediate, fusion off)
// are reported by mlp_fusable and refused by forward_mlp.
TEST(CudaExl3, ForwardMlpEqualsSeparateSteps) {
  CUDA_OR_SKIP();
  const int64_t hidden_k = 384, hidden = 300, inter = 256;
  const Layer lg = random_layer(hidden_k, inter, 3, Codebook::kMcg, 81, true);
  const Layer lu = random_layer(hidden_k, inter, 4, Codebook::kMul1, 82, false);
  const Layer ld = random_layer(inter, hidden_k, 2, Codebook::k3Inst, 83, true);
  auto dg = upload(lg, hidden, inter), du = upload(lu, hidden, inter), dd = upload(ld, inter, hidden);
  for (int64_t m : {64, 130}) {
    ASSERT_TRUE(CudaExl3Linear::mlp_fusable(*dg, *du, *dd, m)) << m;
    const auto x = random_rows(m, hidden, 600 + static_cast<uint64_t>(m));
    const size_t mi = static_cast<size_t>(m * inter), mh = static_cast<size_t>(m * hidden);
    Guarded xb(x.size()), gb(mi), ub(mi), yb(mh), sb(CudaExl3Linear::mlp_scratch_bytes(*dg, *du, *dd, m) / 4 + 1);
    xb.upload(x.data(), x.size() * 4);
    CudaExl3Linear::forward_mlp(*dg, *du, *dd, xb.at<float>(), m, gb.at<float>(), ub.at<float>(), yb.at<float>(),
                                nullptr, sb.at<void>());
    ok(cudaDeviceSynchronize());
    EXPECT_TRUE(xb.guards_intact() && gb.guards_intact() && ub.guards_intact() && yb.guards_intact() &&
                sb.guards_intact())
        << "overrun, m=" << m;
    const auto got = yb.download<float>(mh);
    // The steps one by one, as the backend's unfused sequence runs them.
    Guarded g2(mi), u2(mi), o2(mi), y2(mh);
    Guarded s2(std::max({dg->scratch_bytes(m), du->scratch_bytes(m), dd->scratch_bytes(m)}) / 4 + 1);
    xb.upload(x.data(), x.size() * 4);
    dg->forward(xb.at<float>(), m, g2.at<float>(), nullptr, s2.at<void>());
    du->forward(xb.at<float>(), m, u2.at<float>(), nullptr, s2.at<void>());
    cuda::silu_mul(g2.at<float>(), u2.at<float>(), o2.at<float>(), static_cast<int64_t>(mi), nullptr);
    dd->forward(o2.at<float>(), m, y2.at<float>(), nullptr, s2.at<void>());
    ok(cudaDeviceSynchronize());
    const auto want = y2.download<float>(mh);
    EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * 4), 0) << "m=" << m;
    // And both against the oracle (fp16 activations at these sizes: see ForwardMatchesReference).
    std::vector<float> gr = reference(lg, x, m, hidden, inter), ur = reference(lu, x, m, hidden, inter);
    for (size_t i = 0; i < mi; ++i) gr[i] = gr[i] / (1.0f + std::exp(-gr[i])) * ur[i];
    EXPECT_LT(rel_rms(got, reference(ld, gr, m, inter, hidden)), 1e-3) << "m=" << m;
  }
  EXPECT_FALSE(CudaExl3Linear::mlp_fusable(*dg, *du, *dd, 8));   // GEMV
  EXPECT_FALSE(CudaExl3Linear::mlp_fusable(*dg, *du, *dd, 63));  // hi + lo activations
  EXPECT_FALSE(CudaExl3Linear::mlp_fusable(*dg, *du, *dg, 100));  // down's input is not the intermediate
  auto padded = upload(lg, hidden, 200);  // intermediate 200 padded to 256: the products do not fit g, u
  EXPECT_FALSE(CudaExl3Linear::mlp_fusable(*padded, *padded, *dd, 100));
  {
    const PrefillFusion off(false);
    EXPECT_FALSE(CudaExl3Linear::mlp_fusable(*dg, *du, *dd, 100));
  }
  EXPECT_THROW(CudaExl3Linear::forward_mlp(*dg, *du, *dd, nullptr, 63, nullptr, nullptr, nullptr, nullptr, nullptr),
               Error);
}

// The prefill transforms with four rows per warp (cuda::set_wide_transforms) give the one-row
// kernels' results bit for bit: row counts that do and do not fill the last 4-row group, x at a
// 4-byte offset (element loads) and 16-byte aligned (vector loads), padded inputs and outputs,
// bias, hi + lo and hi-only activations, the fused silu input and the MLP bridge.
TEST(CudaExl3, WideTransformsEqualOneRowKernels) {
  CUDA_OR_SKIP();
  struct Scope {
    ~Scope() {
      cuda::set_wide_transforms(true);
      cuda::set_exact_prefill(false);
    }
  } scope;
  const Layer lp = random_layer(384, 256, 3, Codebook::kMcg, 61, true);  // padded: 300 -> 200
  const Layer la = random_layer(512, 384, 4, Codebook::kMul1, 62, false);  // aligned, unpadded
  auto dp = upload(lp, 300, 200), da = upload(la, 512, 384);
  for (const bool exact : {false, true}) {
    cuda::set_exact_prefill(exact);
    for (int64_t m : {64, 67, 130}) {
      std::vector<float> out[2][3];
      for (int wide = 0; wide < 2; ++wide) {
        cuda::set_wide_transforms(wide != 0);
        out[wide][0] = run_forward(*dp, random_rows(m, 300, 40 + static_cast<uint64_t>(m)), m, 300, 200);
        // Aligned x and the fused silu input (gate, up: 512 wide), through forward()'s pointers.
        const auto g = random_rows(m, 512, 41), u = random_rows(m, 512, 42);
        Guarded gb(g.size()), ub(u.size()), yb(static_cast<size_t>(m * 384)), sb(da->scratch_bytes(m) / 4 + 1);
        gb.upload(g.data(), g.size() * 4);
        ub.upload(u.data(), u.size() * 4);
        da->forward(gb.at<float>(), m, yb.at<float>(), nullptr, sb.at<void>());
        ok(cudaDeviceSynchronize());
        out[wide][1] = yb.download<float>(static_cast<size_t>(m * 384));
        da->forward(gb.at<float>(), m, yb.at<float>(), nullptr, sb.at<void>(), ub.at<float>(), gb.at<float>());
        ok(cudaDeviceSynchronize());
        out[wide][2] = yb.download<float>(static_cast<size_t>(m * 384));
        EXPECT_TRUE(yb.guards_intact() && sb.guards_intact() && gb.guards_intact()) << "overrun, m=" << m;
      }
      for (int i = 0; i < 3; ++i)
        EXPECT_EQ(std::memcmp(out[0][i].data(), out[1][i].data(), out[0][i].size() * 4), 0)
            << "case " << i << " m=" << m << " exact=" << exact;
    }
  }
  // The MLP bridge (hi-only rows: forward_mlp's layout).
  cuda::set_exact_prefill(false);
  const Layer lg = random_layer(384, 256, 3, Codebook::kMcg, 63, true), lu = random_layer(384, 256, 2, Codebook::kMcg, 64, true);
  const Layer ld = random_layer(256, 384, 3, Codebook::k3Inst, 65, true);
  auto dg = upload(lg, 300, 256), du = upload(lu, 300, 256), dd = upload(ld, 256, 300);
  for (int64_t m : {64, 67}) {
    std::vector<float> y[2];
    const auto x = random_rows(m, 300, 66);
    for (int wide = 0; wide < 2; ++wide) {
      cuda::set_wide_transforms(wide != 0);
      Guarded xb(x.size()), gb(static_cast<size_t>(m * 256)), ub(static_cast<size_t>(m * 256)),
          yb(static_cast<size_t>(m * 300)), sb(CudaExl3Linear::mlp_scratch_bytes(*dg, *du, *dd, m) / 4 + 1);
      xb.upload(x.data(), x.size() * 4);
      CudaExl3Linear::forward_mlp(*dg, *du, *dd, xb.at<float>(), m, gb.at<float>(), ub.at<float>(), yb.at<float>(),
                                  nullptr, sb.at<void>());
      ok(cudaDeviceSynchronize());
      y[wide] = yb.download<float>(static_cast<size_t>(m * 300));
    }
    EXPECT_EQ(std::memcmp(y[0].data(), y[1].data(), y[0].size() * 4), 0) << "MLP m=" << m;
  }
}

// k = 2048 (128 slabs) at every k-split count, and the automatic choice, m = 1 and 5.
TEST(CudaExl3, GemvSplitsAgree) {
  CUDA_OR_SKIP();
  const int64_t k = 2048, n = 512;
  for (int K : {2, 3, 5, 8}) {
    const Codebook cb = kCodebooks[K % 3];
    const Layer l = random_layer(k, n, K, cb, 40 + static_cast<uint64_t>(K), false);
    auto d = upload(l, k, n);
    const int automatic = d->gemv_splits();
    EXPECT_GE(automatic, 1);
    for (int64_t m : {1, 5}) {
      const auto x = random_rows(m, k, 77);
      const auto want = reference(l, x, m, k, n);
      for (int splits : {automatic, 1, 2, 3, 7, 16, CudaExl3Linear::kMaxGemvSplits}) {
        d->set_gemv_splits(splits);
        const auto got = run_forward(*d, x, m, k, n);
        EXPECT_LT(rel_rms(got, want), 2e-5) << "K=" << K << " m=" << m << " splits=" << splits;
      }
    }
  }
}

// A layer wide enough that the prefill path decodes Ŵ in several column slices (the last one
// narrower): rows of an m = 9 call equal the m = 8 GEMV's within fp32 rounding.
TEST(CudaExl3, SlicedPrefillAgreesWithGemv) {
  CUDA_OR_SKIP();
  const int64_t k = 8192, n = 4224, in_f = 8000, out_f = 4200;
  const Layer l = random_layer(k, n, 3, Codebook::kMul1, 3, true);
  auto d = upload(l, in_f, out_f);
  const auto x9 = random_rows(9, in_f, 11);
  const std::vector<float> x8(x9.begin(), x9.begin() + 8 * in_f);
  const auto y9 = run_forward(*d, x9, 9, in_f, out_f);
  const auto y8 = run_forward(*d, x8, 8, in_f, out_f);
  EXPECT_LT(rel_rms(std::vector<float>(y9.begin(), y9.begin() + 8 * out_f), y8), 2e-5);
  // The reconstructed-W path in slices too (m = 70 forced onto it), against the same GEMV rows:
  // fp16 activations and weights (see ForwardMatchesReferenceForEveryVariant).
  const ReconstructRows scope(64);
  const auto x70 = random_rows(70, in_f, 12);
  const auto y70 = run_forward(*d, x70, 70, in_f, out_f);
  const std::vector<float> x70_8(x70.begin(), x70.begin() + 8 * in_f);
  EXPECT_LT(rel_rms(std::vector<float>(y70.begin(), y70.begin() + 8 * out_f), run_forward(*d, x70_8, 8, in_f, out_f)),
            5e-4);
}

// A state's value before its one rounding to fp16 (spec 3), in fp64: lo + hi of the masked
// 3INST/MCG word, or MUL1's (1024 + bytesum)·k_inv + k_bias. What the "halves" GEMV multiplies by.
double unrounded_value(uint32_t s, Codebook cb) {
  auto half = [](uint32_t bits) { return static_cast<double>(fp16_to_fp32(static_cast<uint16_t>(bits))); };
  if (cb == Codebook::kMul1) {
    const uint32_t x = s * 0x83DCD12Du;
    const uint32_t sum = (x & 0xFF) + ((x >> 8) & 0xFF) + ((x >> 16) & 0xFF) + (x >> 24);
    return (1024.0 + sum) * half(0x1EEE) + half(0xC931);
  }
  const uint32_t x = cb == Codebook::k3Inst ? s * 89226354u + 64248484u : s * 0xCBAC1FEDu;
  const uint32_t y = (x & 0x8FFF8FFFu) ^ 0x3B603B60u;
  return half(y & 0xFFFF) + half(y >> 16);
}

// y = x·W + bias in fp64 with W = diag(suh)·H·Ŵ·H/128·diag(svh) built from unrounded Ŵ values,
// trimmed to the real columns.
std::vector<float> unrounded_reference(const Layer& l, const std::vector<float>& x, int64_t m, int64_t in_f,
                                       int64_t out_f) {
  const int64_t k = l.k, n = l.n;
  std::vector<double> w(static_cast<size_t>(k * n));
  uint16_t states[exl3::kTileSize];
  for (int64_t tk = 0; tk < k / 16; ++tk)
    for (int64_t tn = 0; tn < n / 16; ++tn) {
      exl3::unpack_tile(l.trellis.data() + (tk * (n / 16) + tn) * exl3::tile_bytes(l.K), l.K, states);
      for (int p = 0; p < exl3::kTileSize; ++p)
        w[(16 * tk + exl3::step_row(p)) * n + 16 * tn + exl3::step_col(p)] = unrounded_value(states[p], l.cb);
    }
  for (int64_t r0 = 0; r0 < k; r0 += 128)
    for (int64_t j = 0; j < n; ++j) fwht128_f64(w.data() + r0 * n + j, static_cast<size_t>(n));
  for (int64_t i = 0; i < k; ++i)
    for (int64_t c0 = 0; c0 < n; c0 += 128) fwht128_f64(w.data() + i * n + c0, 1);
  std::vector<float> y(static_cast<size_t>(m * out_f));
  for (int64_t r = 0; r < m; ++r)
    for (int64_t j = 0; j < out_f; ++j) {
      double acc = 0;
      for (int64_t i = 0; i < in_f; ++i)
        acc += static_cast<double>(x[r * in_f + i]) * fp16_to_fp32(l.suh[i]) * w[i * n + j];
      acc = acc * fp16_to_fp32(l.svh[j]) / 128.0;
      if (!l.bias.empty()) acc += fp16_to_fp32(l.bias[j]);
      y[r * out_f + j] = static_cast<float>(acc);
    }
  return y;
}

// Sets cuda::gemv_halves for a scope.
struct GemvHalves {
  explicit GemvHalves(bool on) : was(cuda::gemv_halves()) { cuda::set_gemv_halves(on); }
  ~GemvHalves() { cuda::set_gemv_halves(was); }
  bool was;
};

TEST(CudaExl3, UnroundedValuesRoundToTheOracle) {
  // Pins unrounded_value (the spec's formulas, written out here) to exl3::decode_state.
  for (Codebook cb : kCodebooks)
    for (uint32_t s = 0; s < 65536; ++s)
      ASSERT_EQ(fp64_to_fp16(unrounded_value(s, cb)), exl3::decode_state(s, cb))
          << exl3::codebook_name(cb) << " state " << s;
}

// The "halves" GEMV (each weight's two fp16 halves, or MUL1's 1024 + bytesum, as separate MMA
// products) equals the fp64 product with unrounded Ŵ values to fp32 level, for every K and
// codebook, m = 1, 3, 8, on a padded layer and at several k-split counts (MUL1's affine map is
// applied per split and per warp).
TEST(CudaExl3, HalvesGemvMatchesUnroundedReference) {
  CUDA_OR_SKIP();
  const GemvHalves scope(true);
  {
    const int64_t k = 384, n = 256, in_f = 300, out_f = 200;
    for (int K = 1; K <= 8; ++K)
      for (Codebook cb : kCodebooks) {
        const Layer l = random_layer(k, n, K, cb, 600 + static_cast<uint64_t>(K) * 3 + static_cast<uint64_t>(cb), true);
        auto d = upload(l, in_f, out_f);
        for (int64_t m : {1, 3, 8}) {
          const auto x = random_rows(m, in_f, 950 + static_cast<uint64_t>(m));
          EXPECT_LT(rel_rms(run_forward(*d, x, m, in_f, out_f), unrounded_reference(l, x, m, in_f, out_f)), 2e-5)
              << "K=" << K << " cb=" << exl3::codebook_name(cb) << " m=" << m;
        }
      }
  }
  const int64_t k = 2048, n = 256;
  for (Codebook cb : kCodebooks) {
    const Layer l = random_layer(k, n, 3, cb, 660 + static_cast<uint64_t>(cb), false);
    auto d = upload(l, k, n);
    const auto x = random_rows(5, k, 78);
    const auto want = unrounded_reference(l, x, 5, k, n);
    for (int splits : {1, 7, CudaExl3Linear::kMaxGemvSplits}) {
      d->set_gemv_splits(splits);
      EXPECT_LT(rel_rms(run_forward(*d, x, 5, k, n), want), 2e-5) << exl3::codebook_name(cb) << " splits=" << splits;
    }
  }
}

// Sets cuda::gemv_weights_a for a scope.
struct GemvWeightsA {
  explicit GemvWeightsA(bool on) : was(cuda::gemv_weights_a()) { cuda::set_gemv_weights_a(on); }
  ~GemvWeightsA() { cuda::set_gemv_weights_a(was); }
  bool was;
};

// The GEMV with the weights as the MMA's A operand (m <= 4; larger m keep the default kernel)
// forms the same products and hi + lo sums as the default, only with the tensor cores' operand
// roles swapped: equal to it to fp32 level (bitwise where the tensor cores sum a dot product the
// same way in both roles; the count is printed), in both decode modes (paired values and
// unrounded halves), for every K and codebook, m = 1..5 and 8, several k-split counts, with the
// transforms fused (the default) and separate; and the exact mode against the reference.
TEST(CudaExl3, WeightsAGemvEqualsDefault) {
  CUDA_OR_SKIP();
  const int64_t k = 384, n = 256, in_f = 300, out_f = 200;
  int compared = 0, bitwise = 0;
  for (bool halves : {false, true})
    for (bool fused_in : {true, false}) {
      const GemvHalves h(halves);
      const GemvFusedIn f(fused_in);
      for (int K = 1; K <= 8; ++K)
        for (Codebook cb : kCodebooks) {
          const Layer l = random_layer(k, n, K, cb, 700 + static_cast<uint64_t>(K) * 3 + static_cast<uint64_t>(cb), true);
          auto d = upload(l, in_f, out_f);
          const int automatic = d->gemv_splits();
          for (int64_t m : {1, 2, 3, 4, 5, 8}) {
            const auto x = random_rows(m, in_f, 970 + static_cast<uint64_t>(m));
            for (int splits : {automatic, 3, CudaExl3Linear::kMaxGemvSplits}) {
              d->set_gemv_splits(splits);
              const std::string what = "K=" + std::to_string(K) + " cb=" + std::string(exl3::codebook_name(cb)) +
                                       " m=" + std::to_string(m) + " splits=" + std::to_string(splits) +
                                       " halves=" + std::to_string(halves) + " fused_in=" + std::to_string(fused_in);
              const auto want = run_forward(*d, x, m, in_f, out_f);
              std::vector<float> got;
              {
                const GemvWeightsA on(true);
                got = run_forward(*d, x, m, in_f, out_f);
              }
              EXPECT_LT(rel_rms(got, want), 1e-6) << what;
              if (!halves && splits == automatic) {
                EXPECT_LT(rel_rms(got, reference(l, x, m, in_f, out_f)), 2e-5) << what;
              }
              ++compared;
              bitwise += std::memcmp(got.data(), want.data(), got.size() * 4) == 0;
            }
          }
        }
    }
  std::printf("weights-as-A GEMV: %d of %d outputs bitwise equal to the default kernel's\n", bitwise, compared);
}

// Sets cuda::gemv_fused_out for a scope.
struct GemvFusedOut {
  explicit GemvFusedOut(bool on) : was(cuda::gemv_fused_out()) { cuda::set_gemv_fused_out(on); }
  ~GemvFusedOut() { cuda::set_gemv_fused_out(was); }
  bool was;
};

// The GEMV with its output transform fused (the last block of each column group sums the k-split
// partials and writes y) gives the same bits as the separate exl3_hadamard_out, for every K and
// codebook, m = 1, 3, 8, 1 to 32 splits (more splits than slabs included), in forward() and in a
// one-launch group; each fused call runs twice, so a counter left non-zero would show.
TEST(CudaExl3, FusedOutGemvEqualsSeparateTransform) {
  CUDA_OR_SKIP();
  const GemvFusedIn separate_input(false);  // the default fuses it (and rounds split ranges)
  const int64_t k = 384, n = 256, in_f = 300, out_f = 200;
  for (int K = 1; K <= 8; ++K)
    for (Codebook cb : kCodebooks) {
      const Layer l = random_layer(k, n, K, cb, 800 + static_cast<uint64_t>(K) * 3 + static_cast<uint64_t>(cb), true);
      auto d = upload(l, in_f, out_f);
      const int automatic = d->gemv_splits();
      for (int64_t m : {1, 3, 8}) {
        const auto x = random_rows(m, in_f, 990 + static_cast<uint64_t>(m));
        for (int splits : {automatic, 1, 3, CudaExl3Linear::kMaxGemvSplits}) {
          d->set_gemv_splits(splits);
          const auto want = run_forward(*d, x, m, in_f, out_f);
          const GemvFusedOut on(true);
          for (int rep = 0; rep < 2; ++rep) {
            const auto got = run_forward(*d, x, m, in_f, out_f);
            EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * 4), 0)
                << "K=" << K << " cb=" << exl3::codebook_name(cb) << " m=" << m << " splits=" << splits << " rep=" << rep;
          }
        }
      }
    }
  const int64_t outs[3] = {200, 128, 384};
  const Layer la = random_layer(k, 256, 3, Codebook::kMcg, 81, true);
  const Layer lb = random_layer(k, 128, 3, Codebook::kMcg, 82, false);
  const Layer lc = random_layer(k, 384, 3, Codebook::kMcg, 83, true);
  auto da = upload(la, in_f, outs[0]), db = upload(lb, in_f, outs[1]), dc = upload(lc, in_f, outs[2]);
  const CudaExl3Linear* group[3] = {da.get(), db.get(), dc.get()};
  for (int64_t m : {1, 4, 8}) {
    const auto x = random_rows(m, in_f, 310 + static_cast<uint64_t>(m));
    Guarded xb(x.size()), sb(CudaExl3Linear::group_scratch_bytes(group, m) / 4 + 1);
    xb.upload(x.data(), x.size() * 4);
    std::vector<float> want[3];
    for (int i = 0; i < 3; ++i) want[i] = run_forward(*group[i], x, m, in_f, outs[i]);
    const GemvFusedOut on(true);
    for (int rep = 0; rep < 2; ++rep) {
      std::vector<std::unique_ptr<Guarded>> yb;
      float* ys[3];
      for (int i = 0; i < 3; ++i) {
        yb.push_back(std::make_unique<Guarded>(static_cast<size_t>(m * outs[i])));
        ys[i] = yb.back()->at<float>();
      }
      CudaExl3Linear::forward_group(group, xb.at<float>(), m, ys, nullptr, sb.at<void>());
      ok(cudaDeviceSynchronize());
      EXPECT_TRUE(sb.guards_intact()) << "scratch overrun, m=" << m;
      for (int i = 0; i < 3; ++i) {
        EXPECT_TRUE(yb[i]->guards_intact()) << "output " << i << " overrun, m=" << m;
        const auto got = yb[i]->download<float>(static_cast<size_t>(m * outs[i]));
        EXPECT_EQ(std::memcmp(got.data(), want[i].data(), got.size() * 4), 0) << "linear " << i << " m=" << m
                                                                               << " rep=" << rep;
      }
    }
  }
}


// The GEMV with both transforms fused (each block transforms the 128-blocks its k range overlaps
// and keeps its own slabs): the same bits as the separate transforms at every split count (1, 3,
// the automatic one, 32: ranges that start and end inside 128-blocks included), and the reference
// to fp32 level; every K and codebook, m = 1, 3, 8, x at an unaligned address (run_forward),
// forward() and a one-launch group, each call twice. The fused silu input with a product buffer
// (down's, prefill-style) keeps the separate transform: same bits as without.
TEST(CudaExl3, FusedInGemvEqualsSeparateTransforms) {
  CUDA_OR_SKIP();
  const GemvFusedIn separate(false);  // `want`: the separate transform kernels
  const int64_t k = 384, n = 256, in_f = 300, out_f = 200;
  for (int K = 1; K <= 8; ++K)
    for (Codebook cb : kCodebooks) {
      const Layer l = random_layer(k, n, K, cb, 900 + static_cast<uint64_t>(K) * 3 + static_cast<uint64_t>(cb), true);
      auto d = upload(l, in_f, out_f);
      const int automatic = d->gemv_splits();
      for (int64_t m : {1, 3, 8}) {
        const auto x = random_rows(m, in_f, 1100 + static_cast<uint64_t>(m));
        const auto ref = reference(l, x, m, in_f, out_f);
        for (int splits : {1, 3, automatic, CudaExl3Linear::kMaxGemvSplits}) {
          d->set_gemv_splits(splits);
          const auto want = run_forward(*d, x, m, in_f, out_f);
          const GemvFusedIn on(true);
          EXPECT_TRUE(d->fused_in(m));
          for (int rep = 0; rep < 2; ++rep) {
            const auto got = run_forward(*d, x, m, in_f, out_f);
            EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * 4), 0)
                << "K=" << K << " cb=" << exl3::codebook_name(cb) << " m=" << m << " splits=" << splits;
            EXPECT_LT(rel_rms(got, ref), 2e-5)
                << "K=" << K << " cb=" << exl3::codebook_name(cb) << " m=" << m << " splits=" << splits;
          }
        }
      }
    }
  const int64_t outs[3] = {200, 128, 384};
  const Layer la = random_layer(k, 256, 4, Codebook::kMul1, 91, true);
  const Layer lb = random_layer(k, 128, 4, Codebook::kMul1, 92, false);
  const Layer lc = random_layer(k, 384, 4, Codebook::kMul1, 93, true);
  auto da = upload(la, in_f, outs[0]), db = upload(lb, in_f, outs[1]), dc = upload(lc, in_f, outs[2]);
  const CudaExl3Linear* group[3] = {da.get(), db.get(), dc.get()};
  for (auto* d : {da.get(), db.get(), dc.get()}) const_cast<CudaExl3Linear*>(d)->set_gemv_splits(3);
  for (int64_t m : {1, 4, 8}) {
    const auto x = random_rows(m, in_f, 320 + static_cast<uint64_t>(m));
    Guarded xb(x.size()), sb(CudaExl3Linear::group_scratch_bytes(group, m) / 4 + 1);
    xb.upload(x.data(), x.size() * 4);
    std::vector<float> want[3];
    for (int i = 0; i < 3; ++i) want[i] = run_forward(*group[i], x, m, in_f, outs[i]);
    const GemvFusedIn on(true);
    for (int rep = 0; rep < 2; ++rep) {
      std::vector<std::unique_ptr<Guarded>> yb;
      float* ys[3];
      for (int i = 0; i < 3; ++i) {
        yb.push_back(std::make_unique<Guarded>(static_cast<size_t>(m * outs[i])));
        ys[i] = yb.back()->at<float>();
      }
      CudaExl3Linear::forward_group(group, xb.at<float>(), m, ys, nullptr, sb.at<void>());
      ok(cudaDeviceSynchronize());
      EXPECT_TRUE(sb.guards_intact()) << "scratch overrun, m=" << m;
      for (int i = 0; i < 3; ++i) {
        EXPECT_TRUE(yb[i]->guards_intact()) << "output " << i << " overrun, m=" << m;
        const auto got = yb[i]->download<float>(static_cast<size_t>(m * outs[i]));
        EXPECT_EQ(std::memcmp(got.data(), want[i].data(), got.size() * 4), 0) << "linear " << i << " m=" << m
                                                                               << " rep=" << rep;
      }
    }
  }
  // Down's fused silu input (x may alias the silu output, so the input transform stays separate).
  const Layer ld = random_layer(k, 256, 3, Codebook::kMcg, 95, true);
  auto dd = upload(ld, in_f, out_f);
  for (int64_t m : {1, 5}) {
    const auto g = random_rows(m, in_f, 96), u = random_rows(m, in_f, 97);
    const size_t n = g.size();
    Guarded gb(n), ub(n), ob(n), fb(n), y1(static_cast<size_t>(m * out_f)), y2(static_cast<size_t>(m * out_f));
    Guarded sb(dd->scratch_bytes(m) / 4 + 1);
    gb.upload(g.data(), n * 4);
    fb.upload(g.data(), n * 4);
    ub.upload(u.data(), n * 4);
    cuda::silu_mul(gb.at<float>(), ub.at<float>(), ob.at<float>(), static_cast<int64_t>(n), nullptr);
    dd->forward(ob.at<float>(), m, y1.at<float>(), nullptr, sb.at<void>());
    const GemvFusedIn on(true);
    dd->forward(fb.at<float>(), m, y2.at<float>(), nullptr, sb.at<void>(), ub.at<float>(), fb.at<float>());
    ok(cudaDeviceSynchronize());
    EXPECT_TRUE(fb.guards_intact() && y2.guards_intact() && sb.guards_intact()) << "overrun, m=" << m;
    EXPECT_EQ(ob.download<float>(n), fb.download<float>(n)) << "silu product, m=" << m;
    const auto a = y1.download<float>(static_cast<size_t>(m * out_f)), b = y2.download<float>(static_cast<size_t>(m * out_f));
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * 4), 0) << "silu input, m=" << m;
  }
}

// Down's silu input without a product buffer (the decode MLP: one launch, silu(g) · u formed by
// each block for its k range, nothing written back): the same bits as cuda::silu_mul and then the
// separate input transform, at 3 and 5 splits of 24 slabs (ranges off the 128-blocks); padded k
// (in 300 of 384); g and u unchanged. Without the fused-input path it is refused.
TEST(CudaExl3, FusedSiluInputWithoutProductBuffer) {
  CUDA_OR_SKIP();
  const int64_t k = 384, in_f = 300, out_f = 200;
  for (Codebook cb : kCodebooks) {
    const Layer ld = random_layer(k, 256, 3, cb, 1350 + static_cast<uint64_t>(cb), true);
    auto dd = upload(ld, in_f, out_f);
    for (int splits : {3, 5})
    for (int64_t m : {1, 4, 8}) {
      dd->set_gemv_splits(splits);
      const auto g = random_rows(m, in_f, 1360 + static_cast<uint64_t>(m)), u = random_rows(m, in_f, 1370);
      const size_t n = g.size(), ny = static_cast<size_t>(m * out_f);
      Guarded gb(n), ub(n), ob(n), y1(ny), y2(ny), sb(dd->scratch_bytes(m) / 4 + 1);
      gb.upload(g.data(), n * 4);
      ub.upload(u.data(), n * 4);
      {
        const GemvFusedIn separate(false);
        cuda::silu_mul(gb.at<float>(), ub.at<float>(), ob.at<float>(), static_cast<int64_t>(n), nullptr);
        dd->forward(ob.at<float>(), m, y1.at<float>(), nullptr, sb.at<void>());
        EXPECT_THROW(dd->forward(gb.at<float>(), m, y2.at<float>(), nullptr, sb.at<void>(), ub.at<float>(), nullptr),
                     Error);
      }
      const GemvFusedIn on(true);
      ASSERT_TRUE(dd->fused_in(m));
      dd->forward(gb.at<float>(), m, y2.at<float>(), nullptr, sb.at<void>(), ub.at<float>(), nullptr);
      ok(cudaDeviceSynchronize());
      EXPECT_TRUE(y2.guards_intact() && sb.guards_intact() && gb.guards_intact()) << "overrun, m=" << m;
      EXPECT_EQ(gb.download<float>(n), g) << "g changed, m=" << m;
      EXPECT_EQ(ub.download<float>(n), u) << "u changed, m=" << m;
      const auto a = y1.download<float>(ny), b = y2.download<float>(ny);
      EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * 4), 0) << exl3::codebook_name(cb) << " m=" << m;
    }
  }
}

// The decode fusions of the residual stream (cuda::Exl3Fusion): a linear that adds its output
// into the residual stream and writes the stream's 128-column sums of squares, then linears
// (a one-launch group and a single one) whose input transform forms the RMSNorm from those sums,
// give the same bits as forward(), cuda::add, cuda::rms_norm (its whole-row kernel) and forward()
// of the normed rows: outputs, the updated stream and the normed rows written back; the sums
// agree with fp64. Hidden 1024 and 4096 (the widest fused), m = 1, 3, 8. Misuse is refused.
TEST(CudaExl3, ResidualAndNormFusionsGiveTheSameBits) {
  CUDA_OR_SKIP();
  const GemvFusedIn on(true);
  const int64_t kin = 384;
  const float eps = 1e-5f;
  for (int64_t hid : {1024, 4096}) {
    const Layer lo = random_layer(kin, hid, 3, Codebook::kMcg, 1401 + static_cast<uint64_t>(hid), true);
    const Layer lq = random_layer(hid, 256, 3, Codebook::kMcg, 1402 + static_cast<uint64_t>(hid), true);
    const Layer lk = random_layer(hid, 128, 3, Codebook::kMcg, 1403 + static_cast<uint64_t>(hid), false);
    auto d_o = upload(lo, kin, hid), d_q = upload(lq, hid, 256), d_k = upload(lk, hid, 128);
    const CudaExl3Linear* group[2] = {d_q.get(), d_k.get()};
    const auto nw = random_rows(1, hid, 1404);
    Guarded nwb(static_cast<size_t>(hid));
    nwb.upload(nw.data(), nw.size() * 4);
    for (int64_t m : {1, 3, 8}) {
      ASSERT_TRUE(d_o->fusable_resid(m) && d_q->fusable_norm(m) && d_k->fusable_norm(m)) << "hid=" << hid << " m=" << m;
      const auto a = random_rows(m, kin, 1410 + static_cast<uint64_t>(m));
      const auto x = random_rows(m, hid, 1420 + static_cast<uint64_t>(m));
      const size_t nx = x.size(), ng = static_cast<size_t>(m * hid / 128);
      Guarded ab(a.size()), xr(nx), xf(nx), yr(nx), yf(nx), hr(nx), hf(nx), ss(ng);
      Guarded qr(static_cast<size_t>(m * 256)), qf(static_cast<size_t>(m * 256)), q1(static_cast<size_t>(m * 256));
      Guarded kr(static_cast<size_t>(m * 128)), kf(static_cast<size_t>(m * 128));
      Guarded so(d_o->scratch_bytes(m) / 4 + 1), sq(d_q->scratch_bytes(m) / 4 + 1);
      Guarded sg(CudaExl3Linear::group_scratch_bytes(group, m) / 4 + 1);
      ab.upload(a.data(), a.size() * 4);
      xr.upload(x.data(), nx * 4);
      xf.upload(x.data(), nx * 4);
      // The separate launches.
      d_o->forward(ab.at<float>(), m, yr.at<float>(), nullptr, so.at<void>());
      cuda::add(xr.at<float>(), yr.at<float>(), static_cast<int64_t>(nx), nullptr);
      cuda::rms_norm(xr.at<float>(), nwb.at<float>(), eps, m, hid, hr.at<float>(), nullptr);
      float* ysr[2] = {qr.at<float>(), kr.at<float>()};
      CudaExl3Linear::forward_group(group, hr.at<float>(), m, ysr, nullptr, sg.at<void>());
      // The fused ones.
      cuda::Exl3Fusion fo;
      fo.resid = xf.at<float>();
      fo.resid_sumsq = ss.at<float>();
      d_o->forward(ab.at<float>(), m, yf.at<float>(), nullptr, so.at<void>(), nullptr, nullptr, &fo);
      cuda::Exl3Fusion fn;
      fn.norm_w = nwb.at<float>();
      fn.norm_sumsq = ss.at<float>();
      fn.norm_eps = eps;
      fn.norm_out = hf.at<float>();
      float* ysf[2] = {qf.at<float>(), kf.at<float>()};
      CudaExl3Linear::forward_group(group, xf.at<float>(), m, ysf, nullptr, sg.at<void>(), &fn);
      fn.norm_out = nullptr;
      d_q->forward(xf.at<float>(), m, q1.at<float>(), nullptr, sq.at<void>(), nullptr, nullptr, &fn);
      ok(cudaDeviceSynchronize());
      const std::string at = "hid=" + std::to_string(hid) + " m=" + std::to_string(m);
      for (Guarded* gb : {&xf, &yf, &hf, &ss, &qf, &kf, &q1, &so, &sq, &sg}) EXPECT_TRUE(gb->guards_intact()) << at;
      auto same = [&](Guarded& p, Guarded& q, size_t count, const char* what) {
        const auto u = p.download<float>(count), v = q.download<float>(count);
        EXPECT_EQ(std::memcmp(u.data(), v.data(), count * 4), 0) << what << ", " << at;
      };
      same(yr, yf, nx, "linear output");
      same(xr, xf, nx, "residual stream");
      same(hr, hf, nx, "normed rows");
      same(qr, qf, static_cast<size_t>(m * 256), "group output 0");
      same(kr, kf, static_cast<size_t>(m * 128), "group output 1");
      same(qr, q1, static_cast<size_t>(m * 256), "single linear output");
      const auto xs = xr.download<float>(nx), sums = ss.download<float>(ng);
      for (int64_t r = 0; r < m; ++r)
        for (int64_t gi = 0; gi < hid / 128; ++gi) {
          double want = 0;
          for (int64_t e = gi * 128; e < gi * 128 + 128; ++e) want += static_cast<double>(xs[r * hid + e]) * xs[r * hid + e];
          EXPECT_NEAR(sums[static_cast<size_t>(r * hid / 128 + gi)], want, 1e-5 * want) << at << " group " << gi;
        }
    }
    // Misuse: both sides in one launch; a fused norm on a linear whose input is padded.
    cuda::Exl3Fusion both;
    Guarded xb(static_cast<size_t>(hid)), yb(static_cast<size_t>(hid)), sb(d_o->scratch_bytes(1) / 4 + 1), ss(64);
    both.resid = xb.at<float>();
    both.resid_sumsq = ss.at<float>();
    both.norm_w = nwb.at<float>();
    both.norm_sumsq = ss.at<float>();
    EXPECT_THROW(d_o->forward(xb.at<float>(), 1, yb.at<float>(), nullptr, sb.at<void>(), nullptr, nullptr, &both), Error);
  }
  const Layer lp = random_layer(384, 256, 3, Codebook::kMcg, 1430, false);
  auto dp = upload(lp, 300, 200);
  EXPECT_FALSE(dp->fusable_norm(1));
  EXPECT_FALSE(dp->fusable_resid(1));
  cuda::Exl3Fusion fn;
  Guarded xb(384), yb(256), sb(dp->scratch_bytes(1) / 4 + 1), ss(64), wb(384);
  fn.norm_w = wb.at<float>();
  fn.norm_sumsq = ss.at<float>();
  EXPECT_THROW(dp->forward(xb.at<float>(), 1, yb.at<float>(), nullptr, sb.at<void>(), nullptr, nullptr, &fn), Error);
}

// The default GEMV built for more resident blocks (cuda::gemv_occupancy: 96 registers) computes
// the same thing in the same order: the same bits, every K and codebook, m = 1, 3, 8.
TEST(CudaExl3, OccupancyBuildGivesTheSameBits) {
  CUDA_OR_SKIP();
  const GemvFusedIn separate(false);  // the occupancy build is the unfused kernel's
  const int64_t k = 384, n = 256, in_f = 300, out_f = 200;
  for (int K = 1; K <= 8; ++K)
    for (Codebook cb : kCodebooks) {
      const Layer l = random_layer(k, n, K, cb, 1200 + static_cast<uint64_t>(K) * 3 + static_cast<uint64_t>(cb), true);
      auto d = upload(l, in_f, out_f);
      for (int64_t m : {1, 3, 8}) {
        const auto x = random_rows(m, in_f, 1300 + static_cast<uint64_t>(m));
        const auto want = run_forward(*d, x, m, in_f, out_f);
        cuda::set_gemv_occupancy(true);
        const auto got = run_forward(*d, x, m, in_f, out_f);
        cuda::set_gemv_occupancy(false);
        EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * 4), 0)
            << "K=" << K << " cb=" << exl3::codebook_name(cb) << " m=" << m;
      }
    }
}

// A fused GEMV whose dynamic shared memory is exactly 48 KiB (K = 8, m = 8, one split of 56
// slabs: a 20 KiB copy ring and 28 KiB of transformed activations) needs the opt-in above the
// default limit, which counts the kernel's static shared memory too: without it the launch failed
// with cudaErrorInvalidValue. Every m and split count around it runs and matches the reference.
TEST(CudaExl3, FusedGemvAtTheSharedMemoryLimit) {
  CUDA_OR_SKIP();
  const int64_t k = 56 * 16, n = 256, in_f = k, out_f = 256;
  const GemvFusedIn on(true);
  for (Codebook cb : kCodebooks) {
    const Layer l = random_layer(k, n, 8, cb, 1700 + static_cast<uint64_t>(cb), false);
    auto d = upload(l, in_f, out_f);
    for (int splits : {1, 2}) {
      d->set_gemv_splits(splits);
      for (int64_t m : {7, 8}) {
        EXPECT_TRUE(d->fused_in(m)) << "m=" << m << " splits=" << splits;
        const auto x = random_rows(m, in_f, 1800 + static_cast<uint64_t>(m));
        std::vector<float> got;
        ASSERT_NO_THROW(got = run_forward(*d, x, m, in_f, out_f))
            << "cb=" << exl3::codebook_name(cb) << " m=" << m << " splits=" << splits;
        EXPECT_LT(rel_rms(got, reference(l, x, m, in_f, out_f)), 2e-5)
            << "cb=" << exl3::codebook_name(cb) << " m=" << m << " splits=" << splits;
      }
    }
  }
}

TEST(CudaExl3, BadLayersAreErrors) {
  CUDA_OR_SKIP();
  Layer l = random_layer(128, 128, 4, Codebook::kMcg, 1, false);
  auto bad = [&](exl3::Exl3LinearView v, int64_t in_f, int64_t out_f) {
    EXPECT_THROW(CudaExl3Linear::create(v, std::nullopt, in_f, out_f, nullptr), Error);
  };
  auto v = l.view();
  v.K = 9;
  bad(v, 128, 128);
  v = l.view();
  v.k = 100;
  bad(v, 100, 128);
  v = l.view();
  v.suh = nullptr;
  bad(v, 128, 128);
  bad(l.view(), 129, 128);
  bad(l.view(), 128, 0);
  v = l.view();
  v.codebook = static_cast<Codebook>(7);
  bad(v, 128, 128);
}

}  // namespace
}  // namespace trellis

#endif  // TRELLIS_WITH_CUDA
