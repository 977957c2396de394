// The CUDA GEMV's per-lane trellis decode (backends/cuda/cuda_exl3_decode.cuh) compiled as plain
// C++ and run on the CPU, so that every build (CI has no GPU) checks it against the oracle: the
// unpacked tile states (exl3::unpack_tile, spec 2.9) and exl3::decode_state (spec 3). The same
// functions run on the GPU inside gemv_kernel, decode_kernel and the reconstruct kernel, whose own
// tests (tests/ops/cuda_exl3_test.cpp) need a GPU. What this covers: the window cutting for every
// K (the IMAD and shift forms, windows straddling words, the cyclic wrap of the last lanes), the
// pairing of two weights per f16x2 word, and the unrounded halves of the "halves" GEMV.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "backends/cuda/cuda_exl3_decode.cuh"
#include "core/fp16.h"
#include "exl3/codebook.h"
#include "exl3/tile.h"

namespace trellis {
namespace {

using exl3::Codebook;

constexpr Codebook kCodebooks[] = {Codebook::k3Inst, Codebook::kMcg, Codebook::kMul1};

std::vector<uint32_t> random_tile(int K, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint32_t> w(static_cast<size_t>(8 * K));
  for (uint32_t& v : w) v = static_cast<uint32_t>(rng());
  return w;
}

template <int K, int CB>
void check_tile(const std::vector<uint32_t>& words) {
  uint16_t states[exl3::kTileSize];
  exl3::unpack_tile(words.data(), K, states);
  const Codebook cb = static_cast<Codebook>(CB);
  for (int lane = 0; lane < 32; ++lane) {
    uint32_t s_imad[8], s_shift[8];
    cuda::exl3k::lane_states<K, true>(words.data(), lane, s_imad);
    cuda::exl3k::lane_states<K, false>(words.data(), lane, s_shift);
    uint32_t pairs[4], halves[8];
    cuda::exl3k::decode_lane<K, CB>(words.data(), lane, pairs);
    cuda::exl3k::decode_lane_halves<K, CB>(words.data(), lane, halves);
    for (int j = 0; j < 8; ++j) {
      const int p = 8 * lane + j;
      const uint16_t want = exl3::decode_state(states[p], cb);
      ASSERT_EQ(s_imad[j], states[p]) << "K=" << K << " lane " << lane << " step " << j << " (IMAD windows)";
      ASSERT_EQ(s_shift[j], states[p]) << "K=" << K << " lane " << lane << " step " << j << " (shift windows)";
      ASSERT_EQ(static_cast<uint16_t>(pairs[j / 2] >> (16 * (j % 2))), want)
          << "K=" << K << " cb=" << exl3::codebook_name(cb) << " lane " << lane << " step " << j;
      // The halves word, independently: 3INST/MCG's masked product (value lo + hi), MUL1's
      // 0x6400 + bytesum in the low half (value (1024 + S)·k_inv + k_bias); rounded once, each is
      // the oracle's value.
      const uint32_t s = states[p];
      double value = 0;
      if (cb == Codebook::kMul1) {
        const uint32_t x = s * 0x83DCD12Du;
        const uint32_t h = 0x6400u + (x & 0xFF) + ((x >> 8) & 0xFF) + ((x >> 16) & 0xFF) + (x >> 24);
        ASSERT_EQ(halves[j], h) << "K=" << K << " MUL1 lane " << lane << " step " << j;
        value = static_cast<double>(fp16_to_fp32(static_cast<uint16_t>(h))) * fp16_to_fp32(0x1EEE) +
                fp16_to_fp32(0xC931);
      } else {
        const uint32_t x = cb == Codebook::k3Inst ? s * 89226354u + 64248484u : s * 0xCBAC1FEDu;
        const uint32_t y = (x & 0x8FFF8FFFu) ^ 0x3B603B60u;
        ASSERT_EQ(halves[j], y) << "K=" << K << " cb=" << exl3::codebook_name(cb) << " lane " << lane << " step " << j;
        value = static_cast<double>(fp16_to_fp32(static_cast<uint16_t>(y))) + fp16_to_fp32(static_cast<uint16_t>(y >> 16));
      }
      ASSERT_EQ(fp64_to_fp16(value), want) << "K=" << K << " cb=" << exl3::codebook_name(cb) << " state " << s;
    }
  }
}

template <int K>
void check_k(uint64_t seed) {
  // All-zero and all-one words (every window equal), then random tiles.
  for (uint32_t fill : {0u, 0xFFFFFFFFu, 0xAAAAAAAAu}) {
    const std::vector<uint32_t> w(static_cast<size_t>(8 * K), fill);
    check_tile<K, 0>(w);
    check_tile<K, 1>(w);
    check_tile<K, 2>(w);
  }
  for (int t = 0; t < 24; ++t) {
    const auto w = random_tile(K, seed + static_cast<uint64_t>(t));
    check_tile<K, 0>(w);
    check_tile<K, 1>(w);
    check_tile<K, 2>(w);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

TEST(CudaDecodeOnHost, LaneStatesAndValuesMatchTheOracleForEveryK) {
  check_k<1>(100);
  check_k<2>(200);
  check_k<3>(300);
  check_k<4>(400);
  check_k<5>(500);
  check_k<6>(600);
  check_k<7>(700);
  check_k<8>(800);
}

// Every one of the 65536 states through decode_pair (both halves of the word) against the oracle.
TEST(CudaDecodeOnHost, DecodePairCoversEveryState) {
  for (Codebook cb : kCodebooks)
    for (uint32_t s = 0; s < 65536; s += 2) {
      uint32_t w = 0;
      switch (cb) {
        case Codebook::k3Inst: w = cuda::exl3k::decode_pair<0>(s, s + 1); break;
        case Codebook::kMcg: w = cuda::exl3k::decode_pair<1>(s, s + 1); break;
        case Codebook::kMul1: w = cuda::exl3k::decode_pair<2>(s, s + 1); break;
      }
      ASSERT_EQ(static_cast<uint16_t>(w), exl3::decode_state(s, cb)) << exl3::codebook_name(cb) << " state " << s;
      ASSERT_EQ(static_cast<uint16_t>(w >> 16), exl3::decode_state(s + 1, cb))
          << exl3::codebook_name(cb) << " state " << s + 1;
    }
}

// The host intrinsics themselves, on cases whose results the CUDA documentation spells out.
TEST(CudaDecodeOnHost, HostIntrinsicsFollowTheirDefinitions) {
  using namespace cuda::exl3k;
  EXPECT_EQ(__funnelshift_l(0x89ABCDEFu, 0x01234567u, 8), 0x23456789u);
  EXPECT_EQ(__funnelshift_l(0x89ABCDEFu, 0x01234567u, 40), 0x23456789u);  // shift & 31
  EXPECT_EQ(__funnelshift_r(0x89ABCDEFu, 0x01234567u, 8), 0x6789ABCDu);
  EXPECT_EQ(__byte_perm(0x33221100u, 0x77665544u, 0x5410), 0x55441100u);
  EXPECT_EQ(__byte_perm(0x33221100u, 0x77665544u, 0x7632), 0x77663322u);
  EXPECT_EQ(__dp4a(0x01020304u, 0x01010101u, 0x6400u), 0x6400u + 10u);
  EXPECT_EQ(hadd2_bits(0x3C003C00u, 0x40003C00u), 0x42004000u);  // (1 + 1, 2 + 1) -> (2, 3)
}

}  // namespace
}  // namespace trellis
