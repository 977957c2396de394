// backends/cpu/exl3_matmul-inl.h: per-SIMD-target EXL3 kernels (included once per Highway target
// by exl3_matmul.cpp through foreach_target.h).
//
// Dataflow of y = x·W + b (spec 4.4), fp32 throughout:
//   x' = (x ⊙ suh)·H128/√128 per 128-block; z = x'·Ŵ with Ŵ decoded on the fly from the trellis;
//   y = (z·H128/√128) ⊙ svh + bias.
//
// Why the inner loop looks the way it does:
// * Step order instead of row order. Lanes hold consecutive trellis steps p (spec 2.7), so the
//   decoded vector needs no shuffling. Step p of a tile multiplies x'[16·tk + row(p)] and feeds
//   column col(p); row(p) depends only on p mod 32, so per 16-row slab the activations in step
//   order are just 32 floats ("xs", 4 groups of 8: rows r0, r0+1, r0+8, r0+9 twice, r0 = 2q),
//   loaded once per tile. Steps 32c..32c+31 ("chunk" c) feed only columns c and c+8: lanes 0-3
//   of each 8-step group go to c, lanes 4-7 to c+8. So a tile is 8 chunks, each accumulated into
//   one vector of partial sums (acc), and the fold to the 16 columns happens once per band.
//   The inner loop is a pure element-wise FMA: acc += xs · decode(state).
// * State extraction: one LoadDup128 of the 16 bytes holding a group's bits, one in-block byte
//   shuffle, one variable shift, one AND (exl3_step_tables.h explains the tables).
// * Decode computes the codebook formula (spec 3.2-3.4), bit-exact with exl3::codebook_table:
//   3INST/MCG build each fp16 half directly as an fp32 bit pattern (the mask/xor of the formula
//   leaves exponents 12..15, so fp32 bits = sign | half[11:0] << 13 | 124 << 23, one arithmetic
//   shift + and + xor per half), add exactly in fp32 and round to fp16 precision with Veltkamp's
//   split; MUL1 sums bytes (pmaddubsw/pmaddwd on x86), one exact fp32 FMA, the same rounding.
//   A 256 KiB gather table was slower on the target CPU (gathers from L2, see BENCHMARKS.md).
// * m = 1 decodes and multiplies in registers (ProcessTileR1). m > 1 decodes each tile once into
//   a 1 KiB buffer in L1 and applies it to all rows, 4 rows at a time.
// * m >= kDenseMinRows (prefill, calibration): the band's tiles are decoded once into an fp16
//   (128, k) buffer in natural order (lossless: decoded values are binary16) and multiplied with
//   the dense fp16 kernel's register-blocked dot products, which reuse each weight vector over
//   several rows; applying the step-ordered tile row by row reloaded it for every 4 rows.
// * Work is split over bands of 128 output columns (whole Hadamard blocks) so each thread owns
//   its outputs and applies the output transform itself; no reduction across threads.

#if defined(TRELLIS_BACKENDS_CPU_EXL3_MATMUL_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef TRELLIS_BACKENDS_CPU_EXL3_MATMUL_INL_H_
#undef TRELLIS_BACKENDS_CPU_EXL3_MATMUL_INL_H_
#else
#define TRELLIS_BACKENDS_CPU_EXL3_MATMUL_INL_H_
#endif

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include <hwy/cache_control.h>
#include <hwy/highway.h>

#include "backends/cpu/cpu_common.h"
#include "backends/cpu/exl3_step_tables.h"
#include "core/thread_pool.h"
#include "exl3/codebook.h"
#include "exl3/linear.h"
#include "exl3/tile.h"

HWY_BEFORE_NAMESPACE();
namespace trellis::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

namespace exl3_kernels {

using exl3::Codebook;
using DU32 = hn::ScalableTag<uint32_t>;
using DI32 = hn::ScalableTag<int32_t>;
using DF32 = hn::ScalableTag<float>;
using VF32 = hn::Vec<DF32>;

// Lanes of the step-ordered vectors: 4, 8 or 16 (128/256/512-bit); HWY_SCALAR (the fallback when
// Highway's EMU128 is unavailable, e.g. GCC < 12.3) runs the same layout with 8-lane arrays.
#if HWY_TARGET == HWY_SCALAR
inline constexpr size_t kN = 8;
#else
inline constexpr size_t kN = HWY_LANES(uint32_t);
#endif
static_assert(kN == 4 || kN == 8 || kN == 16, "kernels assume 128/256/512-bit vectors");
inline constexpr size_t kL = HWY_LANES(float);  // Highway lanes, for the generic loops
// Whether hn::MulAdd is a fused multiply-add here (Highway emulates it with two roundings on
// SSE4 and the emulated targets; two decode steps rely on the single rounding).
#if (HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2) || HWY_ARCH_ARM_A64
inline constexpr bool kNativeFma = true;
#else
inline constexpr bool kNativeFma = false;
#endif
inline constexpr size_t kVecsPerTile = 256 / kN;
inline constexpr size_t kVecsPerChunk = 32 / kN;          // a chunk is 32 steps
inline constexpr size_t kAccVecs = kN == 4 ? 2 : 1;       // N=4: lanes 0-3 / 4-7 of a group apart
inline constexpr size_t kAccPerChunk = kAccVecs * kN;     // floats of partial sums per chunk
inline constexpr size_t kAccPerTile = 8 * kAccPerChunk;   // per tile column
inline constexpr size_t kXsPerSlab = 32;                  // activations per 16-row slab (step order)

// Makes the compiler forget what it knows about a pointer (prevents hoisting loads through it).
template <class T>
HWY_INLINE void HideFromOptimizer(T*& p) {
  asm("" : "+r"(p));
}

template <size_t... I, class F>
HWY_INLINE void Unroll(std::index_sequence<I...>, F&& f) {
  (f(std::integral_constant<size_t, I>{}), ...);
}

// The 16 source bytes of group g: 4 consecutive little-endian words of the tile, or the wrap
// source [u[8K-1], u[0], u[1], u[2]] for groups whose windows start before bit 0.
template <int K>
HWY_INLINE const uint8_t* GroupSource(const uint8_t* tile, const uint8_t* wrap, size_t g) {
  constexpr const auto& T = exl3_tables::kGroupTables[K - 1];
  const int w = T.src_word[g];
  return w < 0 ? wrap : tile + 4 * w;
}

// Builds the 16-byte wrap source of a tile into `wrap` (needed by every K: group 0 always wraps).
template <int K>
HWY_INLINE void BuildWrap(const uint8_t* tile, uint8_t* wrap) {
  std::memcpy(wrap, tile + 4 * (8 * K - 1), 4);
  std::memcpy(wrap + 4, tile, 12);
}

#if HWY_TARGET != HWY_SCALAR
using DU8 = hn::Repartition<uint8_t, DU32>;
using VU32 = hn::Vec<DU32>;
using VU8 = hn::Vec<DU8>;
// Group sources are 16 bytes duplicated into every block of a 256-bit (or, for 512-bit vectors,
// each 256-bit half of the) vector.
using DSrc = std::conditional_t<(kN <= 8), DU8, hn::Half<DU8>>;
using VSrc = hn::Vec<DSrc>;

// The wrap source [u[8K-1], u[0], u[1], u[2]] of a tile, built in registers (a store + reload
// would fail store-to-load forwarding once per tile).
template <int K>
HWY_INLINE VSrc WrapSource(const uint8_t* tile) {
  const DSrc d;
  return hn::CombineShiftRightBytes<12>(d, hn::LoadDup128(d, tile),
                                        hn::LoadDup128(d, tile + 4 * (8 * K - 4)));
}

template <int K>
HWY_INLINE VSrc GroupVec(const uint8_t* tile, VSrc wrap, size_t g) {
  constexpr const auto& T = exl3_tables::kGroupTables[K - 1];
  const int w = T.src_word[g];
  return w < 0 ? wrap : hn::LoadDup128(DSrc(), tile + 4 * w);
}

// Keeps the compiler from fusing the Veltkamp split into an FMA (which would break it).
HWY_INLINE VF32 Opaque(VF32 v) {
#if HWY_TARGET != HWY_EMU128 && HWY_TARGET != HWY_SCALAR
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  asm("" : "+v"(v.raw));
#elif HWY_ARCH_X86
  asm("" : "+x"(v.raw));
#elif HWY_ARCH_ARM_A64
  asm("" : "+w"(v.raw));
#endif
#endif
  return v;
}

// Sum of the four unsigned bytes of each 32-bit lane (0..1020).
HWY_INLINE VU32 ByteSum(VU32 x) {
  const DU32 du;
#if HWY_TARGET == HWY_AVX2
  const __m256i pairs = _mm256_maddubs_epi16(x.raw, _mm256_set1_epi8(1));
  return VU32{_mm256_madd_epi16(pairs, _mm256_set1_epi16(1))};
#elif HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
  const __m512i pairs = _mm512_maddubs_epi16(x.raw, _mm512_set1_epi8(1));
  return VU32{_mm512_madd_epi16(pairs, _mm512_set1_epi16(1))};
#elif HWY_TARGET == HWY_SSE4 || HWY_TARGET == HWY_SSSE3
  const __m128i pairs = _mm_maddubs_epi16(x.raw, _mm_set1_epi8(1));
  return VU32{_mm_madd_epi16(pairs, _mm_set1_epi16(1))};
#else
  const VU32 m = hn::Set(du, 0x00FF00FFu);
  const VU32 s = hn::Add(hn::And(x, m), hn::And(hn::ShiftRight<8>(x), m));
  return hn::And(hn::Add(s, hn::ShiftRight<16>(s)), hn::Set(du, 0xFFFFu));
#endif
}

// (a & m) ^ c: one vpternlogd on AVX-512 (the lop3 0x6A of the CUDA decoder), two ops elsewhere.
HWY_INLINE VU32 AndXor(VU32 a, VU32 m, VU32 c) {
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
  return VU32{_mm512_ternarylogic_epi32(a.raw, m.raw, c.raw, 0x6A)};
#else
  return hn::Xor(hn::And(a, m), c);
#endif
}

// One fp16 half of the 3INST/MCG formula as fp32: `top` holds the half in bits 31..16 before the
// mask/xor of spec 3.2 step 2. The mask keeps sign and bits 11..0; the xor sets exponent bits
// 13,12 and flips 0xB60. With exponent 0b011ab the fp32 exponent is 124 + 2a + b, so the fp32
// pattern is sign | half[11:0] << 13 | 0x3E000000, xored with 0xB60 << 13.
HWY_INLINE VF32 HalfTopToF32(VU32 top) {
  const DU32 du;
  const DI32 di;
  const DF32 df;
  const VU32 shifted = hn::BitCast(du, hn::ShiftRight<3>(hn::BitCast(di, top)));
  return hn::BitCast(df, AndXor(shifted, hn::Set(du, 0x81FFE000u), hn::Set(du, 0x3F6C0000u)));
}

// Decoding one vector of steps is a ~25-cycle dependency chain of ~15 instructions. Issued one
// vector after another, most of those instructions sit in the out-of-order scheduler waiting for
// their inputs, and the scheduler (not the execution ports) becomes the limit. So the kernels
// below are software-pipelined: vector t's stage 1 is issued next to vector t-1's stage 2 and
// vector t-2's stage 3, and every instruction enters the machine roughly when its inputs are
// ready. (Measured on Zen 3: 1.3-1.6x over the straightforward order.)

// Stage 1: the states of vector VI (steps VI·kN ... VI·kN + kN - 1) times the codebook
// multiplier (plus addend for 3INST).
template <int K, Codebook CB, size_t VI>
HWY_INLINE VU32 Stage1(const uint8_t* tile, VSrc wrap) {
  constexpr const auto& T = exl3_tables::kGroupTables[K - 1];
  const DU8 d8;
  const DU32 du;
  VU8 b;
  if constexpr (kN <= 8) {
    b = GroupVec<K>(tile, wrap, VI * kN / 8);
  } else {
    b = hn::Combine(d8, GroupVec<K>(tile, wrap, 2 * VI + 1), GroupVec<K>(tile, wrap, 2 * VI));
  }
  VU32 s = hn::BitCast(du, hn::TableLookupBytesOr0(b, hn::Load(d8, T.shuffle.data() + VI * kN * 4)));
  if constexpr (!T.byte_aligned) {
    s = hn::And(hn::operator>>(s, hn::Load(du, T.shift.data() + VI * kN)), hn::Set(du, 0xFFFFu));
  }
  if constexpr (CB == Codebook::kMul1) return hn::Mul(s, hn::Set(du, exl3::kMul1Multiplier));
  if constexpr (CB == Codebook::kMcg) return hn::Mul(s, hn::Set(du, exl3::kMcgMultiplier));
  return hn::Add(hn::Mul(s, hn::Set(du, exl3::k3InstMultiplier)), hn::Set(du, exl3::k3InstAddend));
}

// Stage 2: the exact (not yet fp16-rounded) codebook value as fp32.
template <Codebook CB>
HWY_INLINE VF32 Stage2(VU32 x) {
  const DU32 du;
  const DF32 df;
  if constexpr (CB == Codebook::kMul1) {
    // (1024 + S)·k_inv + k_bias = S·k_inv - 3.453125, exact in fp32 (spec 3.6). S enters as the
    // fp32 bit pattern 0x4B000000 + S = 2^23 + S, so the constant absorbs 2^23·k_inv = 56768.
    if constexpr (kNativeFma) {
      const VF32 biased = hn::BitCast(df, hn::Add(ByteSum(x), hn::Set(du, 0x4B000000u)));
      return hn::MulAdd(biased, hn::Set(df, 0.00676727294921875f), hn::Set(df, -56771.453125f));
    } else {
      // Without FMA the product must be exact by itself: S·k_inv has at most 21 bits.
      const VF32 sum = hn::ConvertTo(df, hn::BitCast(DI32(), ByteSum(x)));
      return hn::Add(hn::Mul(sum, hn::Set(df, 0.00676727294921875f)), hn::Set(df, -3.453125f));
    }
  } else {
    // Exact sum of the two halves (at most 15 significant bits).
    return hn::Add(HalfTopToF32(hn::ShiftLeft<16>(x)), HalfTopToF32(x));
  }
}

// Stage 3: round to binary16 precision (ties to even) for |v| in the binary16 normal range.
// Veltkamp's split with s = 13: c = v·8193, hi = c - (c - v) keeps the top 11 significant bits;
// both subtractions are exact, so c - 8192·v in one FMA is the same number. Verified against
// codebook_table for every state of every codebook (the only inputs it ever sees).
HWY_INLINE VF32 Stage3(VF32 v) {
  const DF32 df;
  const VF32 c = Opaque(hn::Mul(v, hn::Set(df, 8193.0f)));
  if constexpr (kNativeFma) {
    return hn::MulAdd(v, hn::Set(df, -8192.0f), c);
  } else {
    return hn::Sub(c, Opaque(hn::Sub(c, v)));
  }
}

// Pipeline distances (in vectors) of stages 2 and 3 behind stage 1; (1, 2), (2, 4), (3, 6) and
// (4, 8) measured 4.3 / 4.6 / 4.8 / 4.8 Gweights/s per core for K = 4 MCG on Zen 3 (AVX2).
inline constexpr size_t kLag2 = 3, kLag3 = 6;

// Runs stage 1..3 over the vectors of one tile in pipelined order; sink(integral_constant vi, w)
// consumes the decoded vector vi.
template <int K, Codebook CB, class Sink>
HWY_INLINE void DecodePipelined(const uint8_t* HWY_RESTRICT tile, Sink&& sink) {
  const VSrc wrap = WrapSource<K>(tile);
  VU32 x[kVecsPerTile];
  VF32 v[kVecsPerTile];
  Unroll(std::make_index_sequence<kVecsPerTile + kLag3>(), [&](auto t) HWY_ATTR {
    constexpr size_t T = decltype(t)::value;
    if constexpr (T < kVecsPerTile) x[T] = Stage1<K, CB, T>(tile, wrap);
    if constexpr (T >= kLag2 && T - kLag2 < kVecsPerTile) v[T - kLag2] = Stage2<CB>(x[T - kLag2]);
    if constexpr (T >= kLag3 && T - kLag3 < kVecsPerTile) {
      sink(std::integral_constant<size_t, T - kLag3>(), Stage3(v[T - kLag3]));
    }
  });
}

// m = 1: decodes one tile and accumulates xs·Ŵ into the tile column's partial sums.
// tile: 32K bytes, any alignment. xs: 32 floats (aligned). acc: kAccPerTile floats (aligned).
template <int K, Codebook CB>
HWY_INLINE void ProcessTileR1(const uint8_t* HWY_RESTRICT tile, const float* HWY_RESTRICT xs,
                              float* HWY_RESTRICT acc) {
  const DF32 df;
  VF32 a[kAccVecs];
  DecodePipelined<K, CB>(tile, [&](auto vi_c, VF32 w) HWY_ATTR {
    constexpr size_t vi = decltype(vi_c)::value;
    constexpr size_t c = vi / kVecsPerChunk, h = kAccVecs == 2 ? vi % 2 : 0;
    if constexpr (vi % kVecsPerChunk < kAccVecs) a[h] = hn::Load(df, acc + c * kAccPerChunk + h * kN);
    // Activations are re-read from L1 (FMA memory operand) rather than held in registers: with
    // 16 vector registers (AVX2) holding them would spill the pipeline's values instead.
    const float* xc = xs;
    HideFromOptimizer(xc);
    a[h] = hn::MulAdd(hn::Load(df, xc + vi * kN % kXsPerSlab), w, a[h]);
    if constexpr (vi % kVecsPerChunk >= kVecsPerChunk - kAccVecs) {
      hn::Store(a[h], df, acc + c * kAccPerChunk + h * kN);
    }
  });
}

// Decodes one tile to 256 fp32 values in trellis step order (out: aligned).
template <int K, Codebook CB>
HWY_INLINE void DecodeTile(const uint8_t* HWY_RESTRICT tile, float* HWY_RESTRICT out) {
  DecodePipelined<K, CB>(tile, [&](auto vi_c, VF32 w) HWY_ATTR {
    hn::Store(w, DF32(), out + decltype(vi_c)::value * kN);
  });
}

// m > 1: applies a decoded tile (256 floats, step order) to R rows.
// xs[r]: 32 floats of row r for this slab; acc[r]: that row's partial sums of this tile column.
template <size_t R>
HWY_INLINE void ApplyTile(const float* HWY_RESTRICT w, const float* const* xs, float* const* acc) {
  const DF32 df;
  for (size_t c = 0; c < 8; ++c) {
    VF32 a[R][kAccVecs];
    for (size_t r = 0; r < R; ++r)
      for (size_t h = 0; h < kAccVecs; ++h) a[r][h] = hn::Load(df, acc[r] + c * kAccPerChunk + h * kN);
    for (size_t v = 0; v < kVecsPerChunk; ++v) {
      const size_t vi = c * kVecsPerChunk + v;
      const VF32 wv = hn::Load(df, w + vi * kN);
      const size_t h = kAccVecs == 2 ? vi % 2 : 0;
      for (size_t r = 0; r < R; ++r)
        a[r][h] = hn::MulAdd(hn::Load(df, xs[r] + (vi * kN % kXsPerSlab)), wv, a[r][h]);
    }
    for (size_t r = 0; r < R; ++r)
      for (size_t h = 0; h < kAccVecs; ++h) hn::Store(a[r][h], df, acc[r] + c * kAccPerChunk + h * kN);
  }
}

#else  // HWY_TARGET == HWY_SCALAR: the same layout and tables, one lane at a time.

// Rounds fp32 to binary16 precision (RNE) on the bit pattern; |v| in the binary16 normal range.
HWY_INLINE float RoundToHalfScalar(float v) {
  uint32_t b;
  std::memcpy(&b, &v, 4);
  b = (b + 0xFFFu + ((b >> 13) & 1u)) & ~0x1FFFu;
  std::memcpy(&v, &b, 4);
  return v;
}

HWY_INLINE float HalfTopToF32Scalar(uint32_t top) {
  const uint32_t shifted = static_cast<uint32_t>(static_cast<int32_t>(top) >> 3);
  const uint32_t bits = (shifted & 0x81FFE000u) ^ 0x3F6C0000u;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

template <Codebook CB>
HWY_INLINE float DecodeScalar(uint32_t s) {
  if constexpr (CB == Codebook::kMul1) {
    const uint32_t x = s * exl3::kMul1Multiplier;
    const uint32_t sum = (x & 0xFF) + ((x >> 8) & 0xFF) + ((x >> 16) & 0xFF) + (x >> 24);
    return RoundToHalfScalar(static_cast<float>(sum) * 0.00676727294921875f - 3.453125f);
  } else {
    const uint32_t x = CB == Codebook::kMcg ? s * exl3::kMcgMultiplier
                                            : s * exl3::k3InstMultiplier + exl3::k3InstAddend;
    return RoundToHalfScalar(HalfTopToF32Scalar(x << 16) + HalfTopToF32Scalar(x));
  }
}

template <int K, Codebook CB>
HWY_INLINE void DecodeTile(const uint8_t* HWY_RESTRICT tile, float* HWY_RESTRICT out) {
  constexpr const auto& T = exl3_tables::kGroupTables[K - 1];
  alignas(16) uint8_t wrap[16];
  BuildWrap<K>(tile, wrap);
  for (size_t g = 0; g < 32; ++g) {
    const uint8_t* src = GroupSource<K>(tile, wrap, g);
    for (size_t j = 0; j < 8; ++j) {
      const uint8_t* idx = &T.shuffle[(8 * g + j) * 4];
      uint32_t u = 0;
      for (int b = 0; b < 4; ++b)
        if (idx[b] != exl3_tables::kZeroByte) u |= static_cast<uint32_t>(src[idx[b]]) << (8 * b);
      const uint32_t state = T.byte_aligned ? u : (u >> T.shift[8 * g + j]) & 0xFFFFu;
      out[8 * g + j] = DecodeScalar<CB>(state);
    }
  }
}

template <size_t R>
HWY_INLINE void ApplyTile(const float* HWY_RESTRICT w, const float* const* xs, float* const* acc) {
  for (size_t vi = 0; vi < kVecsPerTile; ++vi) {
    const size_t c = vi / kVecsPerChunk;
    for (size_t r = 0; r < R; ++r)
      for (size_t l = 0; l < kN; ++l)
        acc[r][c * kAccPerChunk + l] += xs[r][vi * kN % kXsPerSlab + l] * w[vi * kN + l];
  }
}

template <int K, Codebook CB>
HWY_INLINE void ProcessTileR1(const uint8_t* HWY_RESTRICT tile, const float* HWY_RESTRICT xs,
                              float* HWY_RESTRICT acc) {
  alignas(64) float w[256];
  DecodeTile<K, CB>(tile, w);
  const float* xr[1] = {xs};
  float* ar[1] = {acc};
  ApplyTile<1>(w, xr, ar);
}
#endif  // HWY_TARGET

// Everything a band kernel needs about one call.
struct BandArgs {
  const uint8_t* trellis;  // tile (0, 0)
  size_t row_bytes;        // bytes per tile row (tk) = n/16 · 32K
  size_t tiles_k;          // k / 16
  size_t tn_begin, tn_count;
  int64_t m;
  const float* xs;         // [m][tiles_k][32]
  float* acc;              // [m][tn_count][kAccPerTile], zeroed
  float* scratch;          // >= 256 floats, aligned (m > 1)
};

template <int K, Codebook CB>
HWY_NOINLINE void BandKernel(const BandArgs& a) {
  constexpr size_t kTileBytes = 32 * K;
  const size_t xs_row = a.tiles_k * kXsPerSlab;
  const size_t acc_row = a.tn_count * kAccPerTile;
  for (size_t tk = 0; tk < a.tiles_k; ++tk) {
    const uint8_t* row = a.trellis + tk * a.row_bytes + a.tn_begin * kTileBytes;
    if (tk + 1 < a.tiles_k) {
      // The next slab of this band is one long stride away; start it early.
      const uint8_t* next = row + a.row_bytes;
      for (size_t off = 0; off < a.tn_count * kTileBytes; off += 64) hwy::Prefetch(next + off);
    }
    const float* xs = a.xs + tk * kXsPerSlab;
    if (a.m == 1) {
      for (size_t t = 0; t < a.tn_count; ++t)
        ProcessTileR1<K, CB>(row + t * kTileBytes, xs, a.acc + t * kAccPerTile);
      continue;
    }
    for (size_t t = 0; t < a.tn_count; ++t) {
      DecodeTile<K, CB>(row + t * kTileBytes, a.scratch);
      int64_t r = 0;
      const float* xr[4];
      float* ar[4];
      for (; r < a.m; r += 4) {
        const int64_t rows = std::min<int64_t>(4, a.m - r);
        for (int64_t i = 0; i < rows; ++i) {
          xr[i] = xs + (r + i) * xs_row;
          ar[i] = a.acc + (r + i) * acc_row + t * kAccPerTile;
        }
        switch (rows) {
          case 4: ApplyTile<4>(a.scratch, xr, ar); break;
          case 3: ApplyTile<3>(a.scratch, xr, ar); break;
          case 2: ApplyTile<2>(a.scratch, xr, ar); break;
          default: ApplyTile<1>(a.scratch, xr, ar); break;
        }
      }
    }
  }
}

template <int K, Codebook CB>
HWY_NOINLINE void DecodeTileKernel(const uint8_t* tile, float* out) {
  DecodeTile<K, CB>(tile, out);
}

// The variant table: one entry per (codebook, K), named by its parameters.
struct Variant {
  const char* name;
  void (*band)(const BandArgs&);
  void (*decode_tile)(const uint8_t*, float*);
};

template <Codebook CB, size_t... I>
constexpr std::array<Variant, 8> MakeVariants(std::index_sequence<I...>) {
  return {Variant{kExl3VariantNames[static_cast<int>(CB)][I], &BandKernel<int(I) + 1, CB>,
                  &DecodeTileKernel<int(I) + 1, CB>}...};
}

inline const std::array<std::array<Variant, 8>, 3> kVariants = {
    MakeVariants<Codebook::k3Inst>(std::make_index_sequence<8>()),
    MakeVariants<Codebook::kMcg>(std::make_index_sequence<8>()),
    MakeVariants<Codebook::kMul1>(std::make_index_sequence<8>())};

// ---------------------------------------------------------------------------------------------
// Hadamard transforms (fp32, unnormalised natural-order Walsh-Hadamard over one 128-block).

// Lane tables of the butterfly stages inside one vector (h < kL): lane i's partner is i ^ h, and
// its sign is -1 where bit h is set.
struct InVectorStage {
  int32_t partner[16];
  float sign[16];
};
inline constexpr std::array<InVectorStage, 4> kInVectorStages = [] {
  std::array<InVectorStage, 4> st{};
  for (int s = 0; s < 4; ++s)  // h = 8, 4, 2, 1
    for (int i = 0; i < 16; ++i) {
      st[s].partner[i] = i ^ (8 >> s);
      st[s].sign[i] = (i & (8 >> s)) ? -1.0f : 1.0f;
    }
  return st;
}();

HWY_INLINE void Fwht128(float* HWY_RESTRICT v) {
  const DF32 df;
  for (size_t h = 64; h >= kL; h /= 2) {
    for (size_t i = 0; i < 128; i += 2 * h) {
      for (size_t j = i; j < i + h; j += kL) {
        const VF32 a = hn::Load(df, v + j), b = hn::Load(df, v + j + h);
        hn::Store(hn::Add(a, b), df, v + j);
        hn::Store(hn::Sub(a, b), df, v + j + h);
      }
    }
  }
#if HWY_TARGET != HWY_SCALAR
  // The stages inside a vector: lane i becomes own · sign + partner, i.e. a + b in the lower lane
  // of a pair and a - b in the upper one (multiplying by ±1 is exact, so this is bitwise the
  // scalar butterfly). One lane permutation and one multiply-add per stage and vector.
  if constexpr (kL >= 2 && kL <= 16) {
    for (size_t j = 0; j < 128; j += kL) {
      VF32 x = hn::Load(df, v + j);
      for (size_t s = 4 - hwy::FloorLog2(kL); s < 4; ++s) {  // h = kL/2 .. 1
        const InVectorStage& st = kInVectorStages[s];
        const VF32 partner = hn::TableLookupLanes(x, hn::SetTableIndices(df, st.partner));
        x = hn::MulAdd(x, hn::LoadU(df, st.sign), partner);
      }
      hn::Store(x, df, v + j);
    }
    return;
  }
#endif
  for (size_t h = kL / 2; h >= 1; h /= 2) {
    for (size_t i = 0; i < 128; i += 2 * h) {
      for (size_t j = i; j < i + h; ++j) {
        const float a = v[j], b = v[j + h];
        v[j] = a + b;
        v[j + h] = a - b;
      }
    }
  }
}

// fp16 (unaligned) -> fp32 (aligned), n a multiple of the lane count.
HWY_INLINE void HalfToFloat(const void* src, float* HWY_RESTRICT dst, size_t n) {
  const DF32 df;
  const hn::Rebind<hwy::float16_t, DF32> dh;
  const auto* p = static_cast<const hwy::float16_t*>(src);
  for (size_t i = 0; i < n; i += kL) hn::Store(hn::PromoteTo(df, hn::LoadU(dh, p + i)), df, dst + i);
}

// Input transform of one row into step-ordered slabs: xs[tk·32 + 8q + j] = x'[16tk + row], row =
// 2q + {0, 1, 8, 9}[j mod 4] (spec 2.7: p = 8t + j with t = q (mod 4)).
HWY_INLINE void InputTransformRow(const float* HWY_RESTRICT x, const float* HWY_RESTRICT suh,
                                  size_t k, float* HWY_RESTRICT xs) {
  const DF32 df;
  alignas(64) float t[128];
  const VF32 r = hn::Set(df, exl3_hadamard_scale());
  for (size_t b = 0; b < k; b += 128) {
    for (size_t i = 0; i < 128; i += kL)
      hn::Store(hn::Mul(hn::LoadU(df, x + b + i), hn::Load(df, suh + b + i)), df, t + i);
    Fwht128(t);
    for (size_t i = 0; i < 128; i += kL) hn::Store(hn::Mul(hn::Load(df, t + i), r), df, t + i);
    float* out = xs + (b / 16) * kXsPerSlab;
    for (size_t s = 0; s < 8; ++s, out += kXsPerSlab) {
      const float* rows = t + 16 * s;
      for (size_t q = 0; q < 4; ++q) {
        const float v0 = rows[2 * q], v1 = rows[2 * q + 1], v8 = rows[2 * q + 8], v9 = rows[2 * q + 9];
        float* o = out + 8 * q;
        o[0] = v0; o[1] = v1; o[2] = v8; o[3] = v9;
        o[4] = v0; o[5] = v1; o[6] = v8; o[7] = v9;
      }
    }
  }
}

// Input transform of one row in natural order: xn[i] = x'[i].
HWY_INLINE void InputTransformRowNatural(const float* HWY_RESTRICT x, const float* HWY_RESTRICT suh, size_t k,
                                         float* HWY_RESTRICT xn) {
  const DF32 df;
  const VF32 r = hn::Set(df, exl3_hadamard_scale());
  for (size_t b = 0; b < k; b += 128) {
    float* t = xn + b;
    for (size_t i = 0; i < 128; i += kL) hn::StoreU(hn::Mul(hn::LoadU(df, x + b + i), hn::Load(df, suh + b + i)), df, t + i);
    Fwht128(t);
    for (size_t i = 0; i < 128; i += kL) hn::StoreU(hn::Mul(hn::LoadU(df, t + i), r), df, t + i);
  }
}

// Rows from which a call decodes Ŵ once per band into natural order and runs the dense kernel.
inline constexpr int64_t kDenseMinRows = 16;

// Writes one tile's 256 binary16 values, given in trellis step order, into 16 columns of a
// column-major Ŵᵀ (column c at `col0 + c·k`, its 16 rows contiguous). By spec 2.7, steps 32c' ..
// 32c'+31 (c' = 0..7) hold exactly columns c' and c'+8, and in 32-bit pairs of steps, pair 4g + h
// of that run is rows (2g, 2g+1) for h = 0 and (2g+8, 2g+9) for h = 1 of column c', the same for
// h = 2, 3 of column c'+8. So each column is 8 pairs in the order of kPairOrder (a 4 x 4
// transpose of the run's pairs): one lane permutation and two 32-byte stores per run where a
// vector holds 16 pairs, 16 pair copies elsewhere, instead of 256 scattered 2-byte stores (which
// cost several times the decode itself in a profile of prefill).
inline constexpr int32_t kPairOrder[16] = {0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15};

HWY_INLINE void ScatterTileColumns(const uint16_t* HWY_RESTRICT half, uint16_t* HWY_RESTRICT col0, size_t k) {
#if HWY_TARGET != HWY_SCALAR
  if constexpr (HWY_LANES(uint32_t) == 16) {
    const hn::ScalableTag<uint32_t> du;
    const hn::Half<decltype(du)> dh;
    const auto order = hn::SetTableIndices(du, kPairOrder);
    for (size_t c = 0; c < 8; ++c) {
      const auto v = hn::TableLookupLanes(hn::LoadU(du, reinterpret_cast<const uint32_t*>(half) + 16 * c), order);
      hn::StoreU(hn::LowerHalf(dh, v), dh, reinterpret_cast<uint32_t*>(col0 + c * k));
      hn::StoreU(hn::UpperHalf(dh, v), dh, reinterpret_cast<uint32_t*>(col0 + (c + 8) * k));
    }
    return;
  }
#endif
  for (size_t c = 0; c < 8; ++c)
    for (size_t i = 0; i < 8; ++i) {
      std::memcpy(col0 + c * k + 2 * i, half + 32 * c + 2 * kPairOrder[i], 4);
      std::memcpy(col0 + (c + 8) * k + 2 * i, half + 32 * c + 2 * kPairOrder[8 + i], 4);
    }
}

// Folds a band's partial sums into z (16 columns per tile column) for one row.
HWY_INLINE void FoldAcc(const float* HWY_RESTRICT acc, size_t tn_count, float* HWY_RESTRICT z) {
  for (size_t t = 0; t < tn_count; ++t, acc += kAccPerTile, z += 16) {
    for (size_t c = 0; c < 8; ++c) {
      const float* a = acc + c * kAccPerChunk;
      float lo = 0.0f, hi = 0.0f;
      for (size_t s = 0; s < kAccPerChunk; ++s) ((s >> 2) & 1 ? hi : lo) += a[s];
      z[c] = lo;
      z[c + 8] = hi;
    }
  }
}

// y (one row, 128·blocks columns) = (z·H/√128) ⊙ svh + bias.
HWY_INLINE void OutputTransformRow(float* HWY_RESTRICT z, const float* HWY_RESTRICT svh,
                                   const float* HWY_RESTRICT bias, size_t cols, float* y) {
  const DF32 df;
  const VF32 r = hn::Set(df, exl3_hadamard_scale());
  for (size_t b = 0; b < cols; b += 128) {
    Fwht128(z + b);
    for (size_t i = b; i < b + 128; i += kL) {
      VF32 v = hn::Mul(hn::Mul(hn::Load(df, z + i), r), hn::Load(df, svh + i));
      if (bias) v = hn::Add(v, hn::Load(df, bias + i));
      hn::StoreU(v, df, y + i);
    }
  }
}

}  // namespace exl3_kernels

// ---------------------------------------------------------------------------------------------
// Per-target entry points (exported through HWY_EXPORT in exl3_matmul.cpp).

// Arguments were validated by the caller (exl3_matmul.cpp).
inline void Exl3Matmul(const exl3::Exl3LinearView& w, const float* x, int64_t m, float* y,
                       ThreadPool& pool) {
  using namespace exl3_kernels;
  const size_t k = static_cast<size_t>(w.k), n = static_cast<size_t>(w.n);
  const Variant& variant = kVariants[static_cast<int>(w.codebook)][w.K - 1];
  const size_t tiles_k = k / 16, tiles_n = n / 16;
  const size_t blocks_n = n / 128;

  // Shared, read-only per call: channel scales and the transformed activations.
  AlignedFloats& shared = thread_scratch(0);
  const size_t xs_floats = static_cast<size_t>(m) * tiles_k * kXsPerSlab;
  float* suh = shared.reserve(k + 2 * n + xs_floats);
  float* svh = suh + k;
  float* bias = svh + n;
  float* xs = bias + n;
  HalfToFloat(w.suh, suh, k);
  HalfToFloat(w.svh, svh, n);
  if (w.bias) HalfToFloat(w.bias, bias, n);
  const float* bias_f = w.bias ? bias : nullptr;

  if (m >= kDenseMinRows) {
    // xs has room for m·k natural-order floats (it holds 2·m·k step-ordered ones).
    float* xn = xs;
    pool.parallel_for(static_cast<size_t>(m), std::max<size_t>(1, 4096 * 8 / k), [&](size_t r0, size_t r1) {
      for (size_t r = r0; r < r1; ++r) InputTransformRowNatural(x + r * k, suh, k, xn + r * k);
    });
    const size_t row_bytes = tiles_n * 32 * static_cast<size_t>(w.K);
    pool.parallel_for(blocks_n, 1, [&](size_t b0, size_t b1) {
      AlignedFloats& local = thread_scratch(1);
      // wt: the band's Ŵᵀ, 128 x k fp16 (k/2 floats per column); z: m x 128; one decoded tile.
      float* z = local.reserve(static_cast<size_t>(m) * 128 + 256 + 64 * k);
      float* tile = z + static_cast<size_t>(m) * 128;
      auto* wt = reinterpret_cast<uint16_t*>(tile + 256);
      const DF32 df;
      const hn::Rebind<hwy::float16_t, DF32> dh;
      alignas(64) uint16_t half[256];
      for (size_t b = b0; b < b1; ++b) {
        for (size_t tk = 0; tk < tiles_k; ++tk) {
          const uint8_t* row = static_cast<const uint8_t*>(w.trellis) + tk * row_bytes + b * 8 * 32 * w.K;
          for (size_t t = 0; t < 8; ++t) {
            variant.decode_tile(row + t * 32 * w.K, tile);
            for (size_t i = 0; i < 256; i += kL)
              hn::Store(hn::BitCast(hn::Rebind<uint16_t, DF32>(), hn::DemoteTo(dh, hn::Load(df, tile + i))),
                        hn::Rebind<uint16_t, DF32>(), half + i);
            ScatterTileColumns(half, wt + (16 * t) * k + 16 * tk, k);
          }
        }
        DenseMatmulF16(wt, xn, m, static_cast<int64_t>(k), 128, z, pool);  // nested: runs inline
        for (int64_t r = 0; r < m; ++r)
          OutputTransformRow(z + r * 128, svh + b * 128, bias_f ? bias_f + b * 128 : nullptr, 128,
                             y + r * n + b * 128);
      }
    });
    return;
  }

  const size_t row_units = static_cast<size_t>(m) * (k / 128);
  pool.parallel_for(static_cast<size_t>(m), std::max<size_t>(1, 4096 * 8 / k), [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; ++r)
      InputTransformRow(x + r * k, suh, k, xs + r * tiles_k * kXsPerSlab);
  });
  (void)row_units;

  // m = 1 on a layer with fewer 128-column blocks than threads (small models on many cores):
  // split k as well. Each (block, k-range) item accumulates partial sums of its tile rows into
  // its own slot; a second loop adds the slots of a block in a fixed order and applies the
  // output transform. The split depends only on the pool size, so results are reproducible for
  // a given thread count.
  const size_t threads = pool.size();
  if (m == 1 && threads > 1 && 2 * blocks_n < threads) {
    const size_t splits = std::min(tiles_k / 8, (threads + blocks_n - 1) / blocks_n);
    if (splits >= 2) {
      const size_t items = blocks_n * splits;
      constexpr size_t kSlot = 8 * kAccPerTile;  // one 128-column block's partial sums
      float* partial = thread_scratch(2).reserve(items * kSlot);
      const size_t row_bytes = tiles_n * 32 * static_cast<size_t>(w.K);
      pool.parallel_for(items, 1, [&](size_t i0, size_t i1) {
        for (size_t item = i0; item < i1; ++item) {
          const size_t b = item / splits, sp = item % splits;
          const size_t tk0 = tiles_k * sp / splits, tk1 = tiles_k * (sp + 1) / splits;
          BandArgs args;
          args.trellis = static_cast<const uint8_t*>(w.trellis) + tk0 * row_bytes;
          args.row_bytes = row_bytes;
          args.tiles_k = tk1 - tk0;
          args.tn_begin = b * 8;
          args.tn_count = 8;
          args.m = 1;
          args.xs = xs + tk0 * kXsPerSlab;
          args.acc = partial + item * kSlot;
          args.scratch = nullptr;
          std::fill(args.acc, args.acc + kSlot, 0.0f);
          variant.band(args);
        }
      });
      pool.parallel_for(blocks_n, 1, [&](size_t b0, size_t b1) {
        alignas(64) float z[128];
        for (size_t b = b0; b < b1; ++b) {
          float* acc = partial + b * splits * kSlot;
          for (size_t sp = 1; sp < splits; ++sp) {
            const float* p = acc + sp * kSlot;
            for (size_t i = 0; i < kSlot; ++i) acc[i] += p[i];
          }
          FoldAcc(acc, 8, z);
          OutputTransformRow(z, svh + b * 128, bias_f ? bias_f + b * 128 : nullptr, 128, y + b * 128);
        }
      });
      return;
    }
  }

  // Bands of whole 128-column blocks; m = 1 takes wider bands (longer contiguous runs of tiles).
  const size_t band_blocks = m == 1 ? 2 : 1;
  pool.parallel_for(blocks_n, 1, [&](size_t b0, size_t b1) {
    AlignedFloats& local = thread_scratch(1);
    const size_t band_tn_max = band_blocks * 8;
    const size_t acc_floats = static_cast<size_t>(m) * band_tn_max * kAccPerTile;
    const size_t z_floats = static_cast<size_t>(m) * band_tn_max * 16;
    float* acc = local.reserve(acc_floats + z_floats + 256);
    float* z = acc + acc_floats;
    float* scratch = z + z_floats;
    for (size_t b = b0; b < b1; b += band_blocks) {
      const size_t nb = std::min(band_blocks, b1 - b);
      BandArgs args;
      args.trellis = static_cast<const uint8_t*>(w.trellis);
      args.row_bytes = tiles_n * 32 * static_cast<size_t>(w.K);
      args.tiles_k = tiles_k;
      args.tn_begin = b * 8;
      args.tn_count = nb * 8;
      args.m = m;
      args.xs = xs;
      args.acc = acc;
      args.scratch = scratch;
      std::fill(acc, acc + static_cast<size_t>(m) * args.tn_count * kAccPerTile, 0.0f);
      variant.band(args);
      const size_t cols = nb * 128;
      for (int64_t r = 0; r < m; ++r) {
        float* zr = z + r * cols;
        FoldAcc(acc + r * args.tn_count * kAccPerTile, args.tn_count, zr);
        OutputTransformRow(zr, svh + b * 128, bias_f ? bias_f + b * 128 : nullptr, cols,
                           y + r * n + b * 128);
      }
    }
  });
}

inline void Exl3DecodeTile(const void* tile, int K, exl3::Codebook cb, float* out) {
  using namespace exl3_kernels;
  alignas(64) float buf[256];
  kVariants[static_cast<int>(cb)][K - 1].decode_tile(static_cast<const uint8_t*>(tile), buf);
  std::memcpy(out, buf, sizeof(buf));
}

inline const char* Exl3TargetName() { return hwy::TargetName(HWY_TARGET); }

}  // namespace trellis::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // include guard
