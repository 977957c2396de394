// backends/cpu/tile_encoder.cpp: Highway SIMD version of the spec 5.7 Viterbi tile encoder.
//
// Same search as exl3/encode.cpp (read that first), restructured for speed:
// * One fused loop per step: for a vector of consecutive out-edges e, scan h = 0..2^K-1 over the
//   states s = h·2^(16-K) + e, computing each state's cost and keeping the running first strict
//   minimum in registers. No 65536-entry state-cost array round trip.
// * The predecessor cost prev[s >> K] is one broadcast when 2^K >= lanes, else one load and a
//   lane permutation (lane l takes element l >> K).
// * Backpointers are stored as the best h (one byte) instead of the in-edge; the in-edge is
//   (h << (16-2K)) | (e >> K). 256·2^(16-K) bytes per tile: 8 MiB at K = 1, 2 MiB at K = 3.
// * Binary16 arithmetic on fp32 lanes, two step kernels with identical results:
//   - ExactStep (every target, any costs): d = RN16(dec - w) is exact as in the scalar code.
//     fp16(d² + p) needs a single rounding: s = fp32(d² + p) (d² is exact) rounds to the same
//     binary16 value as the exact sum unless s is itself a binary16 midpoint (a midpoint strictly
//     between s and the exact sum would be a closer fp32 number than s). Only then the exact
//     error of the sum (TwoSum) moves s one fp32 ulp towards the exact value, off the midpoint.
//     The branch is taken for ~1 state in 150 (mostly exact ties, where it changes nothing).
//     RN16 uses the F16C/AVX-512 conversion instructions where Highway targets x86 AVX2 or
//     better, else the branch-free bit manipulation of exl3/fp16_round.h.
//   - FastStep (AVX-512 only; used for a step when every cost it can produce is +inf or a normal
//     binary16 value, i.e. almost always): no conversion instructions and no branch. RN16 of d
//     by a magic-number add; d² + p by two FMAs with embedded rounding (towards zero and up),
//     whose bits give the half-up and half-down binary16 roundings of the exact sum, and one
//     ternary-logic op picks the even one at exact ties; the argmin is an unsigned min of
//     cost bits | h. About 2.4x the speed of ExactStep on Zen 4.
// Tiles are independent: the pool runs one tile per task, each thread with its own scratch.

#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS HWY_SSSE3
#endif

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "backends/cpu/tile_encoder.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep

#include <hwy/highway.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "backends/cpu/tile_encoder.h"
#include "core/error.h"
#include "core/fp16.h"
#include "exl3/codebook.h"
#include "exl3/tile.h"

#ifndef TRELLIS_TILE_ENCODER_SHARED_
#define TRELLIS_TILE_ENCODER_SHARED_
namespace trellis::cpu::encoder_detail {

constexpr int kSteps = 256;

inline uint32_t rev5(uint32_t v) {
  return ((v & 1u) << 4) | ((v & 2u) << 2) | (v & 4u) | ((v & 8u) >> 2) | ((v & 16u) >> 4);
}

// ExLlamaV3's tie order for the start edge (spec 5.7): the smaller key wins.
inline uint32_t tie_key(uint32_t e) {
  const uint32_t t = e % 1024;
  const uint32_t j = 16 * (t >= 512 ? 1 : 0) + (t % 512) / 32, l = t % 32;
  return rev5(j) << 10 | rev5(l) << 5 | (e >> 10);
}

// Per-thread buffers, grown on demand and kept for the thread's life.
struct Scratch {
  std::vector<float> cost_a, cost_b, snapshot;
  std::vector<uint8_t> best_h;  // [256][2^(16-K)]
  void reserve(size_t edges) {
    constexpr size_t kPad = 64;  // the permuted prev-cost load may read past the last edge
    if (cost_a.size() < edges + kPad) {
      cost_a.assign(edges + kPad, 0.0f);
      cost_b.assign(edges + kPad, 0.0f);
      snapshot.assign(edges, 0.0f);
    }
    if (best_h.size() < edges * kSteps) best_h.assign(edges * kSteps, 0);
  }
};

inline Scratch& thread_scratch() {
  thread_local Scratch scratch;
  return scratch;
}

}  // namespace trellis::cpu::encoder_detail
#endif

HWY_BEFORE_NAMESPACE();
namespace trellis::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

namespace encoder_kernels {

using namespace encoder_detail;
using DF = hn::ScalableTag<float>;
using DI = hn::RebindToSigned<DF>;
using VF = hn::Vec<DF>;
using VI = hn::Vec<DI>;

// Nearest binary16 value of x (finite or infinite, not NaN), as a float.
HWY_INLINE VF Round16(DF df, VF x) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
  const hn::Rebind<hwy::float16_t, DF> df16;
  return hn::PromoteTo(df, hn::DemoteTo(df16, x));
#else
  const DI di;
  const VI b = hn::BitCast(di, x);
  const VI sign = hn::And(b, hn::Set(di, std::numeric_limits<int32_t>::min()));
  const VI mag = hn::And(b, hn::Set(di, 0x7FFFFFFF));
  const VI odd = hn::And(hn::ShiftRight<13>(b), hn::Set(di, 1));
  const VI normal = hn::And(hn::Add(b, hn::Add(hn::Set(di, 0xFFF), odd)),
                            hn::Set(di, static_cast<int32_t>(0xFFFFE000u)));
  const VF k = hn::Set(df, 0.75f);
  const VI sub = hn::Or(hn::BitCast(di, hn::Sub(hn::Add(x, k), k)), sign);
  const VI inf = hn::Or(sign, hn::Set(di, 0x7F800000));
  VI r = hn::IfThenElse(hn::Gt(mag, hn::Set(di, 0x387FFFFF)), normal, sub);
  r = hn::IfThenElse(hn::Gt(mag, hn::Set(di, 0x477FEFFF)), inf, r);
  return hn::BitCast(df, r);
#endif
}

// fp16(d*d + p) with one rounding, for binary16 values d and p >= 0 (p may be +inf).
HWY_INLINE VF SquareAdd(DF df, VF d, VF p) {
  const DI di;
  const VF sq = hn::Mul(d, d);
  VF s = hn::Add(sq, p);
  VI bits = hn::BitCast(di, s);
  const auto mid = hn::Eq(hn::And(bits, hn::Set(di, 0x1FFF)), hn::Set(di, 0x1000));
  if (HWY_UNLIKELY(!hn::AllFalse(di, mid))) {
    const VF bv = hn::Sub(s, sq);
    const VF err = hn::Add(hn::Sub(sq, hn::Sub(s, bv)), hn::Sub(p, bv));
    const VI up = hn::VecFromMask(di, hn::RebindMask(di, hn::Gt(err, hn::Zero(df))));
    const VI down = hn::VecFromMask(di, hn::RebindMask(di, hn::Lt(err, hn::Zero(df))));
    bits = hn::Add(bits, hn::IfThenElseZero(mid, hn::Sub(down, up)));  // +1 up, -1 down
    s = hn::BitCast(df, bits);
  }
  return Round16(df, s);
}

// Prev-cost vector for states s0 .. s0+N-1: prev[s >> K] per lane (a broadcast when 2^K >= N,
// else a load and a permutation: lane l takes element l >> K).
template <int K, class Idx>
HWY_INLINE VF LoadPrev(DF df, const float* HWY_RESTRICT prev, size_t s0, Idx idx) {
  if ((size_t{1} << K) >= hn::Lanes(df)) return hn::Set(df, prev[s0 >> K]);
  return hn::TableLookupLanes(hn::LoadU(df, prev + (s0 >> K)), idx);
}

HWY_INLINE auto LaneIndices(DF df, DI di, int K) {
  HWY_ALIGN int32_t lane_idx[hn::MaxLanes(di)];
  for (size_t l = 0; l < hn::Lanes(df); ++l) lane_idx[l] = static_cast<int32_t>(l >> K);
  return hn::SetTableIndices(df, lane_idx);
}

// One trellis step, exact for any costs: next[e] = min over h of fp16(d(s)² + prev[s >> K]),
// s = h·2^(16-K) + e, the first strict minimum; best_h[e] = its h.
template <int K>
HWY_NOINLINE void ExactStep(const float* HWY_RESTRICT dec, float w, const float* HWY_RESTRICT prev,
                            float* HWY_RESTRICT next, uint8_t* HWY_RESTRICT best_h) {
  constexpr size_t kEdges = size_t{1} << (16 - K);
  constexpr int kH = 1 << K;
  const DF df;
  const DI di;
  const hn::Rebind<uint8_t, DI> du8;
  const size_t N = hn::Lanes(df);
  const auto idx = LaneIndices(df, di, K);
  const VF wv = hn::Set(df, w);
  const VF inf = hn::Set(df, std::numeric_limits<float>::infinity());
  const VI one = hn::Set(di, 1);
  // Two vectors of out-edges per pass over h: independent chains for the out-of-order core.
  for (size_t e0 = 0; e0 < kEdges; e0 += 2 * N) {
    VF best0 = inf, best1 = inf;
    VI best_h0 = hn::Zero(di), best_h1 = hn::Zero(di), hv = hn::Zero(di);
    for (int h = 0; h < kH; ++h) {
      const size_t s0 = static_cast<size_t>(h) * kEdges + e0;
      const VF d0 = Round16(df, hn::Sub(hn::LoadU(df, dec + s0), wv));
      const VF d1 = Round16(df, hn::Sub(hn::LoadU(df, dec + s0 + N), wv));
      const VF c0 = SquareAdd(df, d0, LoadPrev<K>(df, prev, s0, idx));
      const VF c1 = SquareAdd(df, d1, LoadPrev<K>(df, prev, s0 + N, idx));
      const auto lt0 = hn::Lt(c0, best0);
      const auto lt1 = hn::Lt(c1, best1);
      best0 = hn::IfThenElse(lt0, c0, best0);
      best1 = hn::IfThenElse(lt1, c1, best1);
      best_h0 = hn::IfThenElse(hn::RebindMask(di, lt0), hv, best_h0);
      best_h1 = hn::IfThenElse(hn::RebindMask(di, lt1), hv, best_h1);
      hv = hn::Add(hv, one);
    }
    hn::StoreU(best0, df, next + e0);
    hn::StoreU(best1, df, next + e0 + N);
    hn::StoreU(hn::DemoteTo(du8, best_h0), du8, best_h + e0);
    hn::StoreU(hn::DemoteTo(du8, best_h1), du8, best_h + e0 + N);
  }
}

#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
inline constexpr bool kHaveFastStep = true;

// RN16 of x for |RN16(x)| <= 65504 and x = dec - w as computed by FastStep: (x + M) - M with
// M = 1.5·2^(e+13), e the exponent of x, rounds to a multiple of 2^(e-10) (the binary16 ulp),
// ties to even, as x + M stays in M's binade. Differences below 2^-13 (where binary16 is
// subnormal or has a quantum of 2^-24) are exact to begin with, and the rounding keeps them.
HWY_INLINE __m512 Round16Magic(__m512 x) {
  const __m512i m = _mm512_add_epi32(
      _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7F800000)),
      _mm512_set1_epi32(0x06C00000));
  return _mm512_sub_ps(_mm512_add_ps(x, _mm512_castsi512_ps(m)), _mm512_castsi512_ps(m));
}

// Key of fp16(d² + p) with h (bits | h, see FastStep) for a state whose cost is +inf or in the
// binary16 normal range, x = d² + p exactly. From the fp32 results rounded towards zero (rz) and
// up (ru), x lies in [rz, ru], ru = rz or the next float. A binary16 midpoint m is an fp32
// value, so (rz + 0x1000) & ~0x1FFF rounds x half up (rz < m implies x < rz + ulp <= m; rz = m
// means x >= m), and (ru + 0xFFF) & ~0x1FFF rounds x half down (symmetrically). They differ
// only at an exact tie, by one binary16 ulp (0x2000 in the bits); nearest-even takes the one
// with bit 13 clear, which is up & ~((up ^ down) & 0x2000): bit 13 becomes up & down.
HWY_INLINE __m512i CostKey(__m512 d, __m512 p, __m512i h) {
  const __m512 rz = _mm512_fmadd_round_ps(d, d, p, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m512 ru = _mm512_fmadd_round_ps(d, d, p, _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC);
  const __m512i up = _mm512_add_epi32(_mm512_castps_si512(rz), _mm512_set1_epi32(0x1000));
  const __m512i down = _mm512_add_epi32(_mm512_castps_si512(ru), _mm512_set1_epi32(0xFFF));
  // Bit 13 (where C = 1): up & down; elsewhere: up.
  const __m512i even = _mm512_ternarylogic_epi32(up, down, _mm512_set1_epi32(0x2000), 0xD0);
  return _mm512_ternarylogic_epi32(even, _mm512_set1_epi32(~0x1FFF), h, 0xEA);  // (even & high) | h
}

// The same step as ExactStep, faster, for steps whose every state cost is +inf or in the
// binary16 normal range [2^-14, 65504] (the caller checks: min prev >= 2^-14 and a bound on the
// largest finite cost), where rounding to binary16 is integer arithmetic on the fp32 bits.
// A rounded cost has 13 zero low bits, so key = bits | h orders like (cost, h): one unsigned
// min per state gives the first strict minimum and its h (no compare-and-blend pair). No
// conversion instructions (vcvtps2ph/vcvtph2ps cost ~3 cycles a pair on Zen 4).
// Returns the smallest key stored (the cheapest edge's cost bits, its h in the low bits).
template <int K>
HWY_NOINLINE uint32_t FastStep(const float* HWY_RESTRICT dec, float w,
                               const float* HWY_RESTRICT prev, float* HWY_RESTRICT next,
                               uint8_t* HWY_RESTRICT best_h) {
  constexpr size_t kEdges = size_t{1} << (16 - K);
  constexpr int kH = 1 << K;
  const DF df;
  const DI di;
  const hn::RebindToUnsigned<DF> du;
  using VU = hn::Vec<decltype(du)>;
  const hn::Rebind<uint8_t, decltype(du)> du8;
  const size_t N = hn::Lanes(df);
  const auto idx = LaneIndices(df, di, K);
  const __m512 wv = _mm512_set1_ps(w);
  const VU high = hn::Set(du, ~0x1FFFu);
  VU lowest = hn::Set(du, ~0u);
  // kChains vectors of out-edges per pass over h: independent chains for the out-of-order core.
  constexpr size_t kChains = 4;
  for (size_t e0 = 0; e0 < kEdges; e0 += kChains * N) {
    VU best[kChains];
    for (size_t c = 0; c < kChains; ++c) best[c] = hn::Set(du, ~0u);
    for (int h = 0; h < kH; ++h) {
      const size_t s0 = static_cast<size_t>(h) * kEdges + e0;
      const __m512i hv = _mm512_set1_epi32(h);
      for (size_t c = 0; c < kChains; ++c) {
        const __m512 d = Round16Magic(_mm512_sub_ps(_mm512_loadu_ps(dec + s0 + c * N), wv));
        best[c] = hn::Min(best[c], VU{CostKey(d, LoadPrev<K>(df, prev, s0 + c * N, idx).raw, hv)});
      }
    }
    for (size_t c = 0; c < kChains; ++c) {
      lowest = hn::Min(lowest, best[c]);
      hn::StoreU(hn::BitCast(df, hn::And(best[c], high)), df, next + e0 + c * N);
      hn::StoreU(hn::TruncateTo(du8, best[c]), du8, best_h + e0 + c * N);
    }
  }
  return hn::GetLane(hn::MinOfLanes(du, lowest));
}
#else
inline constexpr bool kHaveFastStep = false;
template <int K>
uint32_t FastStep(const float*, float, const float*, float*, uint8_t*) {
  return 0;
}
#endif

template <int K>
HWY_INLINE uint32_t InEdge(const uint8_t* best_h_row, uint32_t e) {
  return (static_cast<uint32_t>(best_h_row[e]) << (16 - 2 * K)) | (e >> K);
}

// Runs the steps of one pass, each through FastStep where its preconditions provably hold, else
// ExactStep. The smallest cost of the previous step bounds every state's cost from below; the
// largest finite cost after n steps is at most n·max_d2·(1 + 2^-11)^n (each step adds at most
// max_d2 = the largest (dec - w)² of the tile and rounds up by at most half an ulp), below
// 1.2·n·max_d2 for n <= 256, which bounds it from above.
template <int K>
class Pass {
 public:
  Pass(const float* dec, double max_d2, uint32_t lowest_start)
      : dec_(dec), max_d2_(max_d2), lowest_(lowest_start) {}

  void Step(float w, const float* prev, float* next, uint8_t* best_h) {
    constexpr size_t kEdges = size_t{1} << (16 - K);
    ++done_;
    if (kHaveFastStep && lowest_ >= kMinNormal16Bits && static_cast<double>(done_) * max_d2_ * 1.25 <= 65504.0) {
      lowest_ = FastStep<K>(dec_, w, prev, next, best_h);
      return;
    }
    ExactStep<K>(dec_, w, prev, next, best_h);
    uint32_t lowest = UINT32_MAX;
    for (size_t e = 0; e < kEdges; ++e) {
      uint32_t bits;
      std::memcpy(&bits, next + e, sizeof(bits));
      lowest = std::min(lowest, bits);
    }
    lowest_ = lowest;
  }

 private:
  static constexpr uint32_t kMinNormal16Bits = 0x38800000u;  // fp32 bits of 2^-14
  const float* dec_;
  double max_d2_;
  uint32_t lowest_;  // fp32 bits of the smallest cost of the previous step (costs are >= 0)
  int done_ = 0;
};

template <int K>
void EncodeOne(const float* w, const float* dec, double max_d2, Scratch& sc, uint16_t* states,
               EncodeMode mode) {
  constexpr size_t kEdges = size_t{1} << (16 - K);
  sc.reserve(kEdges);
  float* a = sc.cost_a.data();
  float* b = sc.cost_b.data();
  uint8_t* bh = sc.best_h.data();
  auto row = [&](int step) { return bh + static_cast<size_t>(step) * kEdges; };
  auto trace = [&](uint32_t e) {
    for (int step = kSteps - 1; step >= 0; --step) {
      const uint32_t e_prev = InEdge<K>(row(step), e);
      states[step] = static_cast<uint16_t>(((e_prev << K) | e) & 0xFFFFu);
      e = e_prev;
    }
  };

  if (mode == EncodeMode::kEstimate) {
    std::fill(a, a + kEdges, 0.0f);
    Pass<K> pass(dec, max_d2, 0);
    for (int step = 0; step < kSteps; ++step) {
      pass.Step(w[step], a, b, row(step));
      std::swap(a, b);
    }
    trace(static_cast<uint32_t>(std::min_element(a, a + kEdges) - a));
    return;
  }

  // Pass 1: steps 128..255, 0..127 unconstrained; the start edge is the argmin after step 126
  // in ExLlamaV3's tie order, traced back through steps 127..0.
  std::fill(a, a + kEdges, 0.0f);
  Pass<K> pass1(dec, max_d2, 0);
  for (int q = 0; q < kSteps; ++q) {
    const int step = (q + kSteps / 2) % kSteps;
    pass1.Step(w[step], a, b, row(step));
    std::swap(a, b);
    if (step == kSteps / 2 - 2) std::copy(a, a + kEdges, sc.snapshot.data());
  }
  const float* snap = sc.snapshot.data();
  const float best_cost = *std::min_element(snap, snap + kEdges);
  uint32_t e = 0, best_key = UINT32_MAX;
  for (uint32_t i = 0; i < kEdges; ++i) {
    if (snap[i] == best_cost && tie_key(i) < best_key) {
      best_key = tie_key(i);
      e = i;
    }
  }
  for (int step = kSteps / 2 - 1; step >= 0; --step) e = InEdge<K>(row(step), e);
  const uint32_t start = e;

  // Pass 2: from in-edge e* through steps 0..255, traced back from out-edge e*.
  std::fill(a, a + kEdges, std::numeric_limits<float>::infinity());
  a[start] = 0.0f;
  Pass<K> pass2(dec, max_d2, 0);
  for (int step = 0; step < kSteps; ++step) {
    pass2.Step(w[step], a, b, row(step));
    std::swap(a, b);
  }
  trace(start);
}

using EncodeFn = void (*)(const float*, const float*, double, Scratch&, uint16_t*, EncodeMode);
inline constexpr EncodeFn kEncoders[8] = {EncodeOne<1>, EncodeOne<2>, EncodeOne<3>, EncodeOne<4>,
                                          EncodeOne<5>, EncodeOne<6>, EncodeOne<7>, EncodeOne<8>};

}  // namespace encoder_kernels

inline void EncodeTiles(const float* w, size_t n_tiles, int K, exl3::Codebook cb, uint16_t* states,
                        ThreadPool& pool, EncodeMode mode) {
  using namespace encoder_kernels;
  const float* dec = exl3::codebook_table_f32(cb);
  const auto [dec_lo, dec_hi] = std::minmax_element(dec, dec + 65536);
  const EncodeFn fn = kEncoders[K - 1];
  pool.parallel_for(n_tiles, 1, [&](size_t begin, size_t end) {
    Scratch& sc = thread_scratch();
    for (size_t t = begin; t < end; ++t) {
      const float* wt = w + t * kSteps;
      double max_d2 = 0;  // the largest (dec - w)² of the tile
      for (int i = 0; i < kSteps; ++i) {
        const double d = std::max(static_cast<double>(*dec_hi) - wt[i],
                                  static_cast<double>(wt[i]) - *dec_lo);
        max_d2 = std::max(max_d2, d * d);
      }
      fn(wt, dec, max_d2, sc, states + t * kSteps, mode);
    }
  });
}

inline const char* EncoderTargetName() { return hwy::TargetName(HWY_TARGET); }

inline bool FastCostForTest(const float* dec, float w, const float* p, size_t n, float* cost) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  using namespace encoder_kernels;
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 m = static_cast<__mmask16>(n - i >= 16 ? 0xFFFF : (1u << (n - i)) - 1);
    const __m512 d = Round16Magic(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, dec + i), _mm512_set1_ps(w)));
    const __m512i key = CostKey(d, _mm512_maskz_loadu_ps(m, p + i), _mm512_setzero_si512());
    _mm512_mask_storeu_ps(cost + i, m, _mm512_castsi512_ps(key));
  }
  return true;
#else
  return false;
#endif
}

}  // namespace trellis::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace trellis::cpu {

HWY_EXPORT(EncodeTiles);
HWY_EXPORT(EncoderTargetName);
HWY_EXPORT(FastCostForTest);

void encode_tiles(const uint16_t* x, size_t n_tiles, int K, exl3::Codebook cb, uint16_t* states,
                  uint16_t* decoded, ThreadPool& pool, EncodeMode mode) {
  if (K < exl3::kMinK || K > exl3::kMaxK)
    fail(ErrorKind::kInvalidArgument, "encode_tiles: K = {}; expected {}..{}", K, exl3::kMinK,
         exl3::kMaxK);
  if (n_tiles == 0) return;
  const size_t count = n_tiles * encoder_detail::kSteps;
  std::vector<float> w(count);
  for (size_t i = 0; i < count; ++i) {
    w[i] = fp16_to_fp32(x[i]);
    if (!std::isfinite(w[i]))
      fail(ErrorKind::kInvalidArgument, "encode_tiles: tile {} input {} is not finite (bits {:04x})",
           i / encoder_detail::kSteps, i % encoder_detail::kSteps, x[i]);
  }
  std::vector<uint16_t> own;
  if (!states) {
    own.resize(count);
    states = own.data();
  }
  HWY_DYNAMIC_DISPATCH(EncodeTiles)(w.data(), n_tiles, K, cb, states, pool, mode);
  if (decoded) {
    const uint16_t* table = exl3::codebook_table(cb);
    for (size_t i = 0; i < count; ++i) decoded[i] = table[states[i]];
  }
}

const char* tile_encoder_target_name() { return HWY_DYNAMIC_DISPATCH(EncoderTargetName)(); }

bool tile_encoder_fast_cost_for_test(const float* dec, float w, const float* p, size_t n, float* cost) {
  return HWY_DYNAMIC_DISPATCH(FastCostForTest)(dec, w, p, n, cost);
}

}  // namespace trellis::cpu
#endif
