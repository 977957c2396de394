// quantize/quantize_linear.cpp: see quantize_linear.h. Section numbers refer to spec 5.
#include "quantize/quantize_linear.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "backends/cpu/gram.h"
#include "core/error.h"
#include "core/fp16.h"
#include "exl3/hadamard.h"
#include "exl3/tile.h"

namespace trellis::quant {
namespace {

constexpr float kSigmaReg = 0.025f;
constexpr float kCodebookRms = 1.24371088f;
constexpr int kLdlBlock = 16;

// Random +-1 vector (zeros impossible here); deterministic in seed.
std::vector<float> random_signs(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + 0x5EED);
  std::vector<float> s(static_cast<size_t>(n));
  for (auto& v : s) v = (rng() >> 63) ? -1.0f : 1.0f;
  return s;
}

// Block Hadamard (128) applied to every row of a rows x cols matrix (cols % 128 == 0): M · H.
void hadamard_rows(float* m, int64_t rows, int64_t cols, ThreadPool& pool) {
  pool.parallel_for(static_cast<size_t>(rows), 16, [&](size_t b, size_t e) {
    for (size_t r = b; r < e; ++r) exl3::hadamard128_fp32(m + r * cols, static_cast<size_t>(cols));
  });
}

// H · M for a rows x cols matrix (rows % 128 == 0): the transform along each column, done on
// 128-row slabs with the columns gathered into contiguous vectors.
void hadamard_cols(float* m, int64_t rows, int64_t cols, ThreadPool& pool) {
  pool.parallel_for(static_cast<size_t>(cols), 8, [&](size_t b, size_t e) {
    std::vector<float> v(static_cast<size_t>(rows));
    for (size_t c = b; c < e; ++c) {
      for (int64_t r = 0; r < rows; ++r) v[r] = m[r * cols + c];
      exl3::hadamard128_fp32(v.data(), static_cast<size_t>(rows));
      for (int64_t r = 0; r < rows; ++r) m[r * cols + c] = v[r];
    }
  });
}

// In-place lower Cholesky of a k x k symmetric positive definite matrix (row-major; the upper
// triangle is zeroed). Returns false if a pivot is not positive.
bool cholesky(std::vector<float>& a, int64_t k, ThreadPool& pool) {
  // Right-looking by columns with double accumulation for the pivot row; O(k^3 / 3).
  for (int64_t j = 0; j < k; ++j) {
    double d = a[j * k + j];
    for (int64_t p = 0; p < j; ++p) d -= static_cast<double>(a[j * k + p]) * a[j * k + p];
    if (!(d > 0)) return false;
    const float ljj = static_cast<float>(std::sqrt(d));
    a[j * k + j] = ljj;
    const float* rj = &a[j * k];
    const size_t below = static_cast<size_t>(k - j - 1);
    pool.parallel_for(below, 64, [&](size_t b, size_t e) {
      for (size_t t = b; t < e; ++t) {
        const int64_t i = j + 1 + static_cast<int64_t>(t);
        float* ri = &a[i * k];
        ri[j] = (ri[j] - cpu::dot_f32(ri, rj, j)) / ljj;
      }
    });
  }
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = i + 1; j < k; ++j) a[i * k + j] = 0;
  return true;
}

// Spec 5.4 step 6: Lz from the lower Cholesky factor C (in place).
void block_ldl_from_cholesky(std::vector<float>& c, int64_t k, ThreadPool& pool) {
  const int64_t blocks = k / kLdlBlock;
  pool.parallel_for(static_cast<size_t>(blocks), 1, [&](size_t b0, size_t b1) {
    for (size_t b = b0; b < b1; ++b) {
      const int64_t c0 = static_cast<int64_t>(b) * kLdlBlock;
      // D = C[c0.., c0..] (16x16 lower triangular). Every row r >= c0 of the column block:
      // x · D = row  =>  solve for x from the last column to the first (D lower triangular).
      float d[kLdlBlock][kLdlBlock];
      for (int i = 0; i < kLdlBlock; ++i)
        for (int j = 0; j < kLdlBlock; ++j) d[i][j] = c[(c0 + i) * k + c0 + j];
      for (int64_t r = c0 + kLdlBlock; r < k; ++r) {
        float* row = &c[r * k + c0];
        float x[kLdlBlock];
        for (int j = kLdlBlock - 1; j >= 0; --j) {
          float s = row[j];
          for (int i = j + 1; i < kLdlBlock; ++i) s -= x[i] * d[i][j];
          x[j] = s / d[j][j];
        }
        std::copy(x, x + kLdlBlock, row);
      }
      for (int i = 0; i < kLdlBlock; ++i)
        for (int j = 0; j < kLdlBlock; ++j) c[(c0 + i) * k + c0 + j] = 0;  // identity, minus I
    }
  });
}

// Permutes a 16x16 tile of m (row stride `stride`) at (r0, c0) into trellis step order.
void gather_tile(const float* m, int64_t stride, int64_t r0, int64_t c0, float* steps) {
  for (int p = 0; p < exl3::kTileSize; ++p)
    steps[p] = m[(r0 + exl3::step_row(p)) * stride + c0 + exl3::step_col(p)];
}

// Spec 5.5.1: the global scale of a regularised tensor (k x n block of width n inside a matrix
// of row stride `stride`).
float search_global_scale(const float* w, int64_t k, int64_t n, int64_t stride, const QuantizeOptions& opt,
                          const TileEncodeFn& encode) {
  const int64_t tk = k / 16, tn = n / 16;
  const int64_t d = std::max(tk, tn);
  std::vector<std::pair<int64_t, int64_t>> tiles;
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t i = 0; i < d; ++i) tiles.emplace_back(i % tk, (i + c) % tn);
  // Extreme-RMS tiles.
  const int64_t x = std::min(std::max<int64_t>(8, 3 * d / 16), (tk * tn + 1) / 2);
  std::vector<std::pair<double, int64_t>> ms(static_cast<size_t>(tk * tn));
  for (int64_t a = 0; a < tk; ++a)
    for (int64_t b = 0; b < tn; ++b) {
      double s = 0;
      for (int r = 0; r < 16; ++r)
        for (int c = 0; c < 16; ++c) {
          const double v = w[(a * 16 + r) * stride + b * 16 + c];
          s += v * v;
        }
      ms[static_cast<size_t>(a * tn + b)] = {s, a * tn + b};
    }
  std::sort(ms.begin(), ms.end());
  for (int64_t i = 0; i < x; ++i) {
    const int64_t hi = ms[ms.size() - 1 - static_cast<size_t>(i)].second, lo = ms[static_cast<size_t>(i)].second;
    tiles.emplace_back(hi / tn, hi % tn);
    tiles.emplace_back(lo / tn, lo % tn);
  }
  std::vector<float> samples(tiles.size() * exl3::kTileSize);
  for (size_t t = 0; t < tiles.size(); ++t)
    gather_tile(w, stride, tiles[t].first * 16, tiles[t].second * 16, &samples[t * exl3::kTileSize]);

  // mse(s) over the tiles with index % step == 0.
  std::vector<uint16_t> in, out;
  auto mse = [&](float s, size_t step) {
    const size_t count = (tiles.size() + step - 1) / step;
    in.resize(count * exl3::kTileSize);
    out.resize(in.size());
    for (size_t t = 0, j = 0; t < tiles.size(); t += step, ++j)
      for (int p = 0; p < exl3::kTileSize; ++p)
        in[j * exl3::kTileSize + p] = fp32_to_fp16(s * samples[t * exl3::kTileSize + p]);
    encode(in.data(), count, opt.K, opt.codebook, nullptr, out.data(), true);
    double err = 0;
    for (size_t t = 0, j = 0; t < tiles.size(); t += step, ++j)
      for (int p = 0; p < exl3::kTileSize; ++p) {
        const double e = fp16_to_fp32(out[j * exl3::kTileSize + p]) / s - samples[t * exl3::kTileSize + p];
        err += e * e;
      }
    return err / static_cast<double>(in.size());
  };
  // The spec's grids, searched lazily: mse(s) is unimodal in s in practice (too small a scale
  // wastes the codebook's range, too large clips), so a discrete ternary search over the 10
  // coarse points and a walk over the 5 fine points find the same minima as evaluating every
  // point, with about 6 instead of 10 coarse and 3-4 instead of 5 fine encodes.
  double coarse[10];
  std::fill(std::begin(coarse), std::end(coarse), -1.0);
  auto coarse_at = [&](int i) {
    if (coarse[i] < 0) coarse[i] = mse(0.1f + 0.2f * static_cast<float>(i), 3);
    return coarse[i];
  };
  int lo = 0, hi = 9;
  while (hi - lo > 2) {
    const int m1 = lo + (hi - lo) / 3, m2 = hi - (hi - lo) / 3;
    if (coarse_at(m1) <= coarse_at(m2)) hi = m2; else lo = m1;
  }
  int c = lo;
  for (int i = lo + 1; i <= hi; ++i)
    if (coarse_at(i) < coarse_at(c)) c = i;
  const float centre = 0.1f + 0.2f * static_cast<float>(c);
  double fine[5];
  auto fine_at = [&](int i) { return fine[i] = mse(centre + 0.075f * static_cast<float>(i - 2), 1); };
  fine_at(1);
  fine_at(2);
  fine_at(3);
  int b = fine[1] < fine[2] ? 1 : 2;
  if (fine[3] < fine[b]) b = 3;
  int first = 1, last = 3;
  if (b == 1) {
    first = 0;
    if (fine_at(0) < fine[1]) b = 0;
  } else if (b == 3) {
    last = 4;
    if (fine_at(4) < fine[3]) b = 4;
  }
  float g = centre + 0.075f * static_cast<float>(b - 2);
  if (b > first && b < last) {
    const double y0 = fine[b - 1], y1 = fine[b], y2 = fine[b + 1];
    const double den = y0 - 2 * y1 + y2;
    double delta = den > 0 ? 0.5 * (y0 - y2) / den : 0.0;
    delta = std::clamp(delta, -0.5, 0.5);
    g += 0.075f * static_cast<float>(delta);
  }
  return std::max(g, 0.01f);
}

}  // namespace

double trace_quadratic(const float* m, int64_t k, int64_t n, int64_t col0, int64_t nt, const std::vector<float>& hm,
                       ThreadPool& pool) {
  constexpr int64_t kChunk = 1024;
  std::vector<float> g(static_cast<size_t>(k * k), 0.0f);
  std::vector<float> xt(static_cast<size_t>(std::min(nt, kChunk) * k));
  for (int64_t j0 = 0; j0 < nt; j0 += kChunk) {
    const int64_t cols = std::min(kChunk, nt - j0);
    pool.parallel_for(static_cast<size_t>(cols), 16, [&](size_t b, size_t e) {
      for (size_t j = b; j < e; ++j)
        for (int64_t i = 0; i < k; ++i) xt[j * k + i] = m[i * n + col0 + j0 + static_cast<int64_t>(j)];
    });
    cpu::gram_accumulate(xt.data(), cols, k, g.data(), k, pool);
  }
  std::vector<double> rows(static_cast<size_t>(k));
  pool.parallel_for(static_cast<size_t>(k), 16, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) {
      double s = 0.5 * static_cast<double>(g[i * k + i]) * hm[i * k + i];
      for (size_t r = 0; r < i; ++r) s += static_cast<double>(g[i * k + r]) * hm[i * k + r];
      rows[i] = 2 * s;
    }
  });
  return std::accumulate(rows.begin(), rows.end(), 0.0);
}

HessianAccumulator::HessianAccumulator(int64_t k) : k_(k), sum_(static_cast<size_t>(k * k), 0.0f) {}

void HessianAccumulator::add(const float* x, int64_t rows, int64_t cols, ThreadPool& pool) {
  const cpu::GramCount c = cpu::gram_accumulate(x, rows, cols, sum_.data(), k_, pool);
  count_ += c.added;
  skipped_ += c.skipped;
  mirror();
}

void HessianAccumulator::set_lower(const float* lower, uint64_t count, uint64_t skipped) {
  std::copy(lower, lower + k_ * k_, sum_.begin());
  count_ = count;
  skipped_ = skipped;
  mirror();
}

void HessianAccumulator::mirror() {
  for (int64_t i = 0; i < k_; ++i)
    for (int64_t j = i + 1; j < k_; ++j) sum_[i * k_ + j] = sum_[j * k_ + i];
}

FinalHessian fallback_hessian(int64_t k, uint64_t seed) {
  FinalHessian h;
  h.k = k;
  h.fallback = true;
  h.sign = random_signs(k, seed);
  h.diag.assign(static_cast<size_t>(k), 1.0f);
  return h;
}

FinalHessian finalize_hessian(const HessianAccumulator& acc, uint64_t seed, ThreadPool& pool) {
  const int64_t k = acc.k();
  if (acc.count() == 0) return fallback_hessian(k, seed);
  std::vector<float> h(acc.sum());
  const float inv = 1.0f / static_cast<float>(acc.count());
  for (auto& v : h) v *= inv;
  double mean = 0;
  for (int64_t i = 0; i < k; ++i) mean += h[i * k + i];
  mean /= static_cast<double>(k);
  if (!std::isfinite(mean) || mean < 1e-20) return fallback_hessian(k, seed);
  for (int64_t i = 0; i < k; ++i) h[i * k + i] += kSigmaReg * static_cast<float>(mean);

  FinalHessian out;
  out.k = k;
  out.diag.resize(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i) out.diag[i] = h[i * k + i];
  out.sign = random_signs(k, seed);
  // H' = Hk diag(σ) H diag(σ) Hk.
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j) h[i * k + j] *= out.sign[i] * out.sign[j];
  hadamard_rows(h.data(), k, k, pool);
  hadamard_cols(h.data(), k, k, pool);
  out.rotated = h;

  // Block LDL through Cholesky with up to 10 damping retries.
  std::vector<float> c;
  for (int attempt = 0;; ++attempt) {
    c = h;
    if (cholesky(c, k, pool)) break;
    if (attempt == 10)
      fail(ErrorKind::kInternal, "Hessian of size {} is not positive definite after 10 damping retries", k);
    double m = 0;
    for (int64_t i = 0; i < k; ++i) m += h[i * k + i];
    m /= static_cast<double>(k);
    for (int64_t i = 0; i < k; ++i) h[i * k + i] += 2 * kSigmaReg * static_cast<float>(m);
  }
  block_ldl_from_cholesky(c, k, pool);
  out.lz = std::move(c);
  return out;
}

OutScales parse_out_scales(const std::string& s) {
  if (s == "always") return OutScales::kAlways;
  if (s == "never") return OutScales::kNever;
  if (s == "auto") return OutScales::kAuto;
  fail(ErrorKind::kInvalidArgument, "out-scales '{}': expected always, never or auto", s);
}

const char* out_scales_name(OutScales s) {
  switch (s) {
    case OutScales::kAlways: return "always";
    case OutScales::kNever: return "never";
    case OutScales::kAuto: return "auto";
  }
  return "?";
}

std::vector<QuantizedLinear> quantize_linears(std::vector<float> w, int64_t k, const std::vector<int64_t>& widths,
                                              const FinalHessian& h, const QuantizeOptions& opt,
                                              const TileEncodeFn& encode, ThreadPool& pool) {
  const int64_t n = std::accumulate(widths.begin(), widths.end(), int64_t{0});
  TRELLIS_CHECK(k % 128 == 0 && n % 128 == 0 && static_cast<int64_t>(w.size()) == k * n && h.k == k);
  std::vector<QuantizedLinear> out(widths.size());

  // Regularisation (5.5), per tensor (column block).
  std::vector<float> su_all(static_cast<size_t>(k * widths.size()));
  int64_t col0 = 0;
  for (size_t t = 0; t < widths.size(); ++t) {
    const int64_t nt = widths[t];
    QuantizedLinear& q = out[t];
    q.k = k;
    q.n = nt;
    q.K = opt.K;
    q.codebook = opt.codebook;
    const std::vector<float> tau = random_signs(nt, opt.seed * 1000003ull + t + 1);
    // 1. Output-channel RMS.
    std::vector<double> c(static_cast<size_t>(nt), 0.0);
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < nt; ++j) {
        const double v = w[i * n + col0 + j];
        c[j] += v * v;
      }
    double cbar = 0;
    for (auto& v : c) {
      v = std::sqrt(v / static_cast<double>(k));
      cbar += v;
    }
    cbar /= static_cast<double>(nt);
    std::vector<bool> zero_col(static_cast<size_t>(nt));
    bool apply = opt.out_scales == OutScales::kAlways;
    if (cbar > 1e-30) {
      for (auto& v : c) v /= cbar;
    } else if (opt.out_scales != OutScales::kAuto) {
      apply = true;
    }
    for (int64_t j = 0; j < nt; ++j) zero_col[j] = c[j] < 1e-30;
    // 2. "auto": apply unless the input is skewed (top 2% of sqrt(diag H) >= 15% of the sum).
    if (opt.out_scales == OutScales::kAuto && !h.fallback) {
      std::vector<double> sd(h.diag.begin(), h.diag.end());
      for (auto& v : sd) v = std::sqrt(std::max(v, 0.0));
      std::sort(sd.begin(), sd.end(), std::greater<>());
      const double total = std::accumulate(sd.begin(), sd.end(), 0.0);
      const double top = std::accumulate(sd.begin(), sd.begin() + k / 50, 0.0);
      apply = top < 0.15 * total;
    } else if (opt.out_scales == OutScales::kAuto) {
      apply = false;
    }
    // 3. sv, W /= sv.
    std::vector<float> sv(static_cast<size_t>(nt));
    for (int64_t j = 0; j < nt; ++j)
      sv[j] = apply ? tau[j] * static_cast<float>(zero_col[j] ? 0.1 : c[j]) + 1e-10f : tau[j];
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < nt; ++j) w[i * n + col0 + j] /= sv[j];
    for (int64_t j = 0; j < nt; ++j)
      if (zero_col[j]) sv[j] = 0;
    q.svh.resize(static_cast<size_t>(nt));
    for (int64_t j = 0; j < nt; ++j) q.svh[j] = fp32_to_fp16(sv[j]);
    col0 += nt;
  }
  // 4. Right block-Hadamard per tensor: block boundaries are per tensor too, and every width is
  // a multiple of 128, so transforming the concatenated rows in 128-blocks is the same.
  hadamard_rows(w.data(), k, n, pool);
  // 5. Input-channel scales, per tensor.
  col0 = 0;
  for (size_t t = 0; t < widths.size(); ++t) {
    const int64_t nt = widths[t];
    float* su = &su_all[t * k];
    for (int64_t i = 0; i < k; ++i) {
      double s = 0;
      for (int64_t j = 0; j < nt; ++j) s += static_cast<double>(w[i * n + col0 + j]) * w[i * n + col0 + j];
      double r = std::sqrt(s / static_cast<double>(nt));
      if (r < 1e-30) r = 0.1;
      su[i] = h.sign[i] * static_cast<float>(r) / -kCodebookRms + 1e-10f;
      for (int64_t j = 0; j < nt; ++j) w[i * n + col0 + j] /= su[i];
    }
    col0 += nt;
  }
  // 6. Left block-Hadamard.
  hadamard_cols(w.data(), k, n, pool);
  // 7. Global scale per tensor.
  col0 = 0;
  for (size_t t = 0; t < widths.size(); ++t) {
    const int64_t nt = widths[t];
    const float g = search_global_scale(w.data() + col0, k, nt, n, opt, encode);
    out[t].global_scale = g;
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < nt; ++j) w[i * n + col0 + j] *= g;
    out[t].suh.resize(static_cast<size_t>(k));
    for (int64_t i = 0; i < k; ++i) out[t].suh[i] = fp32_to_fp16(su_all[t * k + i] / g);
    col0 += nt;
  }

  // LDLQ (5.6), all tensors jointly: blocks of 16 rows from the last to the first.
  const int64_t tn = n / 16, tk = k / 16;
  std::vector<float> err(static_cast<size_t>(k * n), 0.0f);  // E = W - Q for finished rows
  std::vector<uint16_t> states(static_cast<size_t>(k * n));   // [tk][tn][256]
  std::vector<float> target(static_cast<size_t>(16 * n));
  std::vector<uint16_t> in(static_cast<size_t>(16 * n)), dec(static_cast<size_t>(16 * n));
  for (int64_t cb = tk - 1; cb >= 0; --cb) {
    const int64_t r0 = cb * 16;
    std::copy(&w[r0 * n], &w[(r0 + 16) * n], target.begin());
    if (!h.fallback && r0 + 16 < k) {
      // target_c += Σ_{r > block} Lz[r][c-block]ᵀ · E[r]   (column chunks over threads)
      constexpr int64_t kCols = 256;
      const int64_t below = k - r0 - 16;
      pool.parallel_for(static_cast<size_t>((n + kCols - 1) / kCols), 1, [&](size_t b, size_t e) {
        for (size_t c = b; c < e; ++c) {
          const int64_t j0 = static_cast<int64_t>(c) * kCols, nj = std::min(kCols, n - j0);
          cpu::atb_accumulate(&h.lz[(r0 + 16) * k + r0], k, &err[(r0 + 16) * n + j0], n, below, 16, nj, &target[j0],
                              n);
        }
      });
    }
    for (int64_t t = 0; t < tn; ++t)
      for (int p = 0; p < exl3::kTileSize; ++p)
        in[t * exl3::kTileSize + p] = fp32_to_fp16(target[exl3::step_row(p) * n + t * 16 + exl3::step_col(p)]);
    encode(in.data(), static_cast<size_t>(tn), opt.K, opt.codebook, &states[cb * tn * exl3::kTileSize], dec.data(),
           false);
    for (int64_t t = 0; t < tn; ++t)
      for (int p = 0; p < exl3::kTileSize; ++p) {
        const int64_t r = exl3::step_row(p), c = t * 16 + exl3::step_col(p);
        // E is taken against the original rows W (not the target): spec 5.6.
        err[(r0 + r) * n + c] = w[(r0 + r) * n + c] - fp16_to_fp32(dec[t * exl3::kTileSize + p]);
      }
  }

  // Proxy error (5.9) per tensor: tr(Eᵀ H' E) / tr(Wᵀ H' W), or the MSE for fallback tensors.
  // tr(Mᵀ H M) = Σ_ir H_ir (M Mᵀ)_ir: M Mᵀ is the Gram matrix of the columns of M, which the
  // blocked SYRK of the Hessian capture computes (over chunks of transposed columns), so the
  // cost is two SYRKs instead of a pass over all of M for each row of H.
  col0 = 0;
  for (size_t t = 0; t < widths.size(); ++t) {
    const int64_t nt = widths[t];
    if (h.fallback) {
      double s = 0;
      for (int64_t i = 0; i < k; ++i)
        for (int64_t j = 0; j < nt; ++j) s += std::pow(err[i * n + col0 + j], 2);
      out[t].proxy_error = s / static_cast<double>(k * nt);
    } else {
      const double sn = trace_quadratic(err.data(), k, n, col0, nt, h.rotated, pool);
      const double sd = trace_quadratic(w.data(), k, n, col0, nt, h.rotated, pool);
      out[t].proxy_error = sd > 0 ? sn / sd : 0.0;
    }
    col0 += nt;
  }

  // Pack each tensor's tiles (5.8).
  col0 = 0;
  for (size_t t = 0; t < widths.size(); ++t) {
    QuantizedLinear& q = out[t];
    const int64_t tnt = q.n / 16, words = exl3::tile_words16(opt.K);
    q.trellis.resize(static_cast<size_t>(tk * tnt * words));
    for (int64_t a = 0; a < tk; ++a)
      for (int64_t b = 0; b < tnt; ++b)
        exl3::pack_tile(&states[(a * tn + col0 / 16 + b) * exl3::kTileSize], opt.K, &q.trellis[(a * tnt + b) * words]);
    col0 += q.n;
  }
  return out;
}

}  // namespace trellis::quant
