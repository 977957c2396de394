// backends/cuda/cuda_exl3_decode.cuh: device functions that turn packed EXL3 tiles into fp16
// values, one warp per tile, lane t owning trellis steps 8t .. 8t+7 (spec 2.7-2.9, 3).
//
// Why this shape: steps 8t+0..3 of a tile are exactly lane t's mma.m16n8k16 B fragment for tile
// columns 0-7 and steps 8t+4..7 the one for columns 8-15 (spec 2.7), so a lane decodes straight
// into fragments with no data exchange. The 8 windows of a lane cover 16 + 7K consecutive bits of
// the tile's MSB-first bitstream; we read the (at most three) 32-bit words holding them once,
// funnel-shift them so the lane's first window starts at bit 31 of a0 ("normalised"), and then
// every window sits at a compile-time position of the 64-bit a0:a1. K <= 6 fits all 8 windows in
// 64 bits (16 + 7·6 = 58); K = 7, 8 use two groups of 4 (16 + 3·8 = 40).
//
// Values are bit-exact with exl3::decode_state: 3INST/MCG add each weight's two fp16 halves with
// one HADD2 (operand selects) and pair two weights with one prmt, MUL1 forms 0x6400 + bytesum
// with dp4a and runs one f16x2 FMA per pair (spec 3.6).
//
// The header also compiles as plain C++ (no __CUDACC__): the CUDA intrinsics and PTX it uses get
// host definitions below, so tests/unit/cuda_decode_host_test.cpp checks the window cutting and
// the decode against exl3::decode_state in every build, GPU or not.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#include <cuda_fp16.h>

#include <cstring>
#define TRELLIS_DECODE_FN __device__ __forceinline__
#define TRELLIS_DECODE_UNROLL _Pragma("unroll")
#define TRELLIS_DECODE_CONST __constant__
#else
#include <cmath>

#include "core/fp16.h"
#define TRELLIS_DECODE_FN inline
#define TRELLIS_DECODE_UNROLL
#define TRELLIS_DECODE_CONST inline constexpr
#endif

namespace trellis::cuda::exl3k {

// Bit offset inside its first word of the first window of a group (steps 8t + j0 ...), maximised
// over the 32 lanes: decides at compile time whether a third word is needed.
constexpr int max_group_offset(int K, int j0) {
  int mx = 0;
  for (int t = 0; t < 32; ++t) {
    const int off = ((8 * t + j0 + 1) * K - 16 + 256 * K) % 32;
    mx = off > mx ? off : mx;
  }
  return mx;
}

// Bits [P, P + 16) of the 64-bit a0:a1 (bit 0 = MSB of a0) as a 16-bit value. The ALU pipe
// (shifts, lop3, prmt) is what limits the GEMV on Hopper, so a window inside one word is cut as
// (a << P) >> 16, whose left shift ptxas can issue as IMAD.SHL on the otherwise idle FMA pipe,
// rather than as a shift and a mask (two ALU ops).
// The powers of two live in constant memory because ptxas turns a multiply by a known power of
// two back into a shift; IMAD takes the constant-bank operand directly.
TRELLIS_DECODE_CONST uint32_t kPow2[16] = {1u << 0, 1u << 1, 1u << 2,  1u << 3,  1u << 4,  1u << 5,
                                           1u << 6, 1u << 7, 1u << 8,  1u << 9,  1u << 10, 1u << 11,
                                           1u << 12, 1u << 13, 1u << 14, 1u << 15};

#ifndef __CUDACC__
// Host definitions of the CUDA intrinsics used below (CUDA C++ Programming Guide semantics).
inline uint32_t __funnelshift_l(uint32_t lo, uint32_t hi, uint32_t shift) {
  const uint64_t v = (static_cast<uint64_t>(hi) << 32) | lo;
  return static_cast<uint32_t>((v << (shift & 31)) >> 32);
}
inline uint32_t __funnelshift_r(uint32_t lo, uint32_t hi, uint32_t shift) {
  const uint64_t v = (static_cast<uint64_t>(hi) << 32) | lo;
  return static_cast<uint32_t>(v >> (shift & 31));
}
inline uint32_t __byte_perm(uint32_t x, uint32_t y, uint32_t s) {
  const uint64_t v = (static_cast<uint64_t>(y) << 32) | x;
  uint32_t r = 0;
  for (int i = 0; i < 4; ++i) r |= static_cast<uint32_t>((v >> (8 * ((s >> (4 * i)) & 7))) & 0xFF) << (8 * i);
  return r;
}
inline uint32_t __dp4a(uint32_t a, uint32_t b, uint32_t c) {
  for (int i = 0; i < 4; ++i) c += ((a >> (8 * i)) & 0xFF) * ((b >> (8 * i)) & 0xFF);
  return c;
}
#endif

template <int P, bool Imad>
TRELLIS_DECODE_FN uint32_t window(uint32_t a0, uint32_t a1) {
  if constexpr (P == 0) return a0 >> 16;
  else if constexpr (P < 16 && !Imad) return (a0 >> (16 - P)) & 0xFFFFu;
  else if constexpr (P > 32 && P < 48 && !Imad) return (a1 >> (48 - P)) & 0xFFFFu;
  else if constexpr (P < 16) return (a0 * kPow2[P]) >> 16;
  else if constexpr (P == 16) return a0 & 0xFFFFu;
  else if constexpr (P == 32) return a1 >> 16;
  else if constexpr (P > 32 && P < 48) return (a1 * kPow2[P - 32]) >> 16;
  else if constexpr (P == 48) return a1 & 0xFFFFu;
  else return __funnelshift_r(a1, a0, 48 - P) & 0xFFFFu;  // straddles a0 and a1
}

// s[j] = window j·K of a0:a1 for j < GS.
template <int K, int GS, bool Imad, int J = 0>
TRELLIS_DECODE_FN void windows(uint32_t a0, uint32_t a1, uint32_t* s) {
  if constexpr (J < GS) {
    s[J] = window<J * K, Imad>(a0, a1);
    windows<K, GS, Imad, J + 1>(a0, a1, s);
  }
}

template <int K>
TRELLIS_DECODE_FN int wrap_word(int i) {
  return i >= 8 * K ? i - 8 * K : i;
}

// Where a lane's windows sit in its tile's 8K words: for each group of windows (one for K <= 6,
// steps 8·lane + 0..7; two for K = 7, 8, steps + 0..3 and + 4..7), the indices of the (at most
// three) words that hold it and the bit offset of its first window in the first word. They
// depend on the lane only, so a kernel that decodes many tiles per lane (the GEMV) computes them
// once (lane_words) rather than per tile.
struct LaneWords {
  int w0[2], w1[2], w2[2], off[2];
};

template <int K>
TRELLIS_DECODE_FN LaneWords lane_words(int lane) {
  LaneWords lw{};
  for (int g = 0; g < (K <= 6 ? 1 : 2); ++g) {
    int start = (8 * lane + 4 * g + 1) * K - 16;  // first bit of the first window (cyclic)
    if (start < 0) start += 256 * K;
    const int w = start >> 5;
    lw.w0[g] = w;
    lw.w1[g] = wrap_word<K>(w + 1);
    lw.w2[g] = wrap_word<K>(w + 2);
    lw.off[g] = start & 31;
  }
  return lw;
}

// States of steps 8·lane + J0 .. 8·lane + J0 + GS - 1 (group G = J0 / 4 of lw) of the tile whose
// 8K words start at `tw`.
template <int K, int J0, int GS, bool Imad, typename Ptr>
TRELLIS_DECODE_FN void group_states(Ptr tw, const LaneWords& lw, uint32_t* s) {
  constexpr int kSpan = 16 + (GS - 1) * K;
  constexpr int G = J0 / 4;
  static_assert(kSpan <= 64, "a group of windows must fit in 64 bits");
  const int off = lw.off[G];
  const uint32_t w0 = tw[lw.w0[G]];
  const uint32_t w1 = tw[lw.w1[G]];
  const uint32_t a0 = __funnelshift_l(w1, w0, off);  // stream bits [start, start + 32)
  uint32_t a1 = 0;                                   // stream bits [start + 32, start + 64)
  if constexpr (kSpan > 32) {
    uint32_t w2 = 0;
    if constexpr (max_group_offset(K, J0) + kSpan > 64) w2 = tw[lw.w2[G]];
    a1 = __funnelshift_l(w2, w1, off);
  }
  windows<K, GS, Imad>(a0, a1, s);
}

// The 8 states of the lane whose LaneWords are lw, in step order. Imad: cut windows with IMAD.SHL
// (FMA pipe) rather than shift + mask (ALU pipe); pays for 3INST/MCG, whose pair step is
// ALU-heavy, not for MUL1, whose dp4a already loads the FMA pipe.
template <int K, bool Imad = true, typename Ptr>
TRELLIS_DECODE_FN void lane_states(Ptr tw, const LaneWords& lw, uint32_t s[8]) {
  if constexpr (K <= 6) {
    group_states<K, 0, 8, Imad>(tw, lw, s);
  } else {
    group_states<K, 0, 4, Imad>(tw, lw, s);
    group_states<K, 4, 4, Imad>(tw, lw, s + 4);
  }
}

// The same for lane `lane`.
template <int K, bool Imad = true, typename Ptr>
TRELLIS_DECODE_FN void lane_states(Ptr tw, int lane, uint32_t s[8]) {
  lane_states<K, Imad>(tw, lane_words<K>(lane), s);
}

#ifdef __CUDACC__
TRELLIS_DECODE_FN uint32_t hadd2_bits(uint32_t a, uint32_t b) {
  uint32_t d;
  asm("add.rn.f16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
  return d;
}

TRELLIS_DECODE_FN uint32_t hfma2_bits(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t d;
  asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}
#else
// Host versions, lane by lane: the exact result in fp64, rounded once to binary16. Exact for the
// add of any two binary16 values; for the FMA whenever a·b + c fits 53 bits (MUL1's operands do).
inline uint32_t hadd2_bits(uint32_t a, uint32_t b) {
  uint32_t d = 0;
  for (int h = 0; h < 2; ++h) {
    const double x = static_cast<double>(trellis::fp16_to_fp32(static_cast<uint16_t>(a >> (16 * h)))) +
                     static_cast<double>(trellis::fp16_to_fp32(static_cast<uint16_t>(b >> (16 * h))));
    d |= static_cast<uint32_t>(trellis::fp64_to_fp16(x)) << (16 * h);
  }
  return d;
}
inline uint32_t hfma2_bits(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t d = 0;
  for (int h = 0; h < 2; ++h) {
    auto lane = [h](uint32_t v) { return static_cast<double>(trellis::fp16_to_fp32(static_cast<uint16_t>(v >> (16 * h)))); };
    d |= static_cast<uint32_t>(trellis::fp64_to_fp16(std::fma(lane(a), lane(b), lane(c)))) << (16 * h);
  }
  return d;
}
#endif

// (lo + hi, lo + hi) of an f16x2 word, rounded to nearest: one HADD2 whose operands ptxas takes
// with H0_H0 / H1_H1 selects (on the FMA pipe; an asm add would need two prmt first).
#ifdef __CUDACC__
TRELLIS_DECODE_FN uint32_t sum_halves_twice(uint32_t y) {
  __half2 h;
  memcpy(&h, &y, 4);
  const __half2 r = __hadd2_rn(__low2half2(h), __high2half2(h));
  uint32_t d;
  memcpy(&d, &r, 4);
  return d;
}
#else
inline uint32_t sum_halves_twice(uint32_t y) {
  return hadd2_bits(__byte_perm(y, 0u, 0x1010), __byte_perm(y, 0u, 0x3232));
}
#endif

// (a & b) ^ c as one lop3. Written out because ptxas does not merge an and and an xor with two
// immediate masks (a LOP3 takes one immediate), which costs an extra ALU op per weight.
TRELLIS_DECODE_FN uint32_t and_xor(uint32_t a, uint32_t b, uint32_t c) {
#ifdef __CUDACC__
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, 0x6A;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
#else
  return (a & b) ^ c;
#endif
}

// Two decoded weights as f16x2 bits (s0's value in the low half), codebook id CB (spec 2.10).
template <int CB>
TRELLIS_DECODE_FN uint32_t decode_pair(uint32_t s0, uint32_t s1) {
  if constexpr (CB == 2) {
    // MUL1: h = 0x6400 + bytesum(s · 0x83DCD12D) is fp16 1024 + S; value = fma(h, k_inv, k_bias).
    const uint32_t h0 = __dp4a(s0 * 0x83DCD12Du, 0x01010101u, 0x6400u);
    const uint32_t h1 = __dp4a(s1 * 0x83DCD12Du, 0x01010101u, 0x6400u);
    return hfma2_bits(__byte_perm(h0, h1, 0x5410), 0x1EEE1EEEu, 0xC931C931u);  // h < 2^16
  } else {
    // 3INST (CB 0) / MCG (CB 1): y = (x & 0x8FFF8FFF) ^ 0x3B603B60 (one lop3), value = lo + hi:
    // one HADD2 per weight with operand selects, (w, w), then one prmt per pair. The same bits as
    // gathering both weights' low and high halves first (two prmt) and one f16x2 add, with the
    // same instruction count, but one ALU-pipe op per pair instead of two: the default K = 3 MCG
    // GEMV loop goes from 233 to 203 ALU-pipe ops of 435 (sm_90), from ALU-pipe bound to issue
    // bound (session 14, from SASS; not yet timed on a GPU). -DTRELLIS_CUDA_PAIR_PRMT builds the
    // earlier form for an A/B.
    const uint32_t x0 = CB == 0 ? s0 * 89226354u + 64248484u : s0 * 0xCBAC1FEDu;
    const uint32_t x1 = CB == 0 ? s1 * 89226354u + 64248484u : s1 * 0xCBAC1FEDu;
    const uint32_t y0 = and_xor(x0, 0x8FFF8FFFu, 0x3B603B60u);
    const uint32_t y1 = and_xor(x1, 0x8FFF8FFFu, 0x3B603B60u);
#ifdef TRELLIS_CUDA_PAIR_PRMT
    return hadd2_bits(__byte_perm(y0, y1, 0x5410), __byte_perm(y0, y1, 0x7632));
#else
    return __byte_perm(sum_halves_twice(y0), sum_halves_twice(y1), 0x5410);
#endif
  }
}

// One weight left as two fp16 halves for the tensor cores to add ("halves" GEMV): 3INST/MCG give
// y = (x & 0x8FFF8FFF) ^ 0x3B603B60, whose value is lo + hi; MUL1 gives fp16 1024 + bytesum in the
// low half and +0 in the high half, whose value is fma(that, k_inv, k_bias) (spec 3.6).
template <int CB>
TRELLIS_DECODE_FN uint32_t decode_halves(uint32_t s) {
  if constexpr (CB == 2) {
    return __dp4a(s * 0x83DCD12Du, 0x01010101u, 0x6400u);
  } else {
    return and_xor(CB == 0 ? s * 89226354u + 64248484u : s * 0xCBAC1FEDu, 0x8FFF8FFFu, 0x3B603B60u);
  }
}

// MUL1's affine map, applied by the "halves" GEMV to sums instead of weights: value = h·kInv + kBias.
inline constexpr float kMul1Inv = 0.00676727294921875f;  // fp16 0x1EEE, exactly
inline constexpr float kMul1Bias = -10.3828125f;          // fp16 0xC931, exactly

// Lane `lane`'s 8 weights in step order, each as decode_halves: y[0..3] are the weights of
// B fragments {b0, b1} for tile columns 0-7 (k 2t, 2t+1, 2t+8, 2t+9), y[4..7] for columns 8-15.
// L: the lane (int) or its LaneWords.
template <int K, int CB, typename Ptr, typename L>
TRELLIS_DECODE_FN void decode_lane_halves(Ptr tw, const L& lane, uint32_t y[8]) {
  uint32_t s[8];
  lane_states<K, CB != 2>(tw, lane, s);
TRELLIS_DECODE_UNROLL
  for (int i = 0; i < 8; ++i) y[i] = decode_halves<CB>(s[i]);
}

// Lane `lane`'s 8 weights as 4 f16x2 words: {steps 0,1}, {2,3}, {4,5}, {6,7} of its 8 steps, i.e.
// B fragments {b0, b1} for tile columns 0-7 and {b2, b3} for columns 8-15. L: the lane (int) or
// its LaneWords.
template <int K, int CB, typename Ptr, typename L>
TRELLIS_DECODE_FN void decode_lane(Ptr tw, const L& lane, uint32_t b[4]) {
  uint32_t s[8];
  lane_states<K, CB != 2>(tw, lane, s);
TRELLIS_DECODE_UNROLL
  for (int i = 0; i < 4; ++i) b[i] = decode_pair<CB>(s[2 * i], s[2 * i + 1]);
}

}  // namespace trellis::cuda::exl3k
