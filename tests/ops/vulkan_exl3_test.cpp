// tests/ops/vulkan_exl3_test.cpp: the Vulkan EXL3 shaders against src/exl3: Ŵ decode bit-exact
// for every K and codebook (exl3_decode_k*_*), the fused GEMV and the decode + tiled GEMM paths
// exact on one-hot rows and within fp32 tolerance of a double-precision product otherwise. The
// GEMV's arithmetic variants (portable fp32 decode, fp16 decode, MUL1 dot product; each where
// the device supports it) read Ŵ out bit-exactly for every K and codebook and give bitwise the
// same products.
#if TRELLIS_WITH_VULKAN

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/fp16.h"
#include "exl3/codebook.h"
#include "exl3/linear.h"
#include "exl3/tile.h"
#include "ops/vulkan_test_util.h"
#include "test_util.h"

namespace trellis {
namespace {

using exl3::Codebook;
constexpr Codebook kCodebooks[] = {Codebook::k3Inst, Codebook::kMcg, Codebook::kMul1};

// Random packed tiles: decode does not care whether the bits form a tail-biting chain.
std::vector<uint8_t> random_trellis(int64_t k, int64_t n, int K, uint64_t seed) {
  test::SplitMix64 rng(seed);
  std::vector<uint8_t> bytes(static_cast<size_t>((k / 16) * (n / 16) * exl3::tile_bytes(K)));
  for (auto& b : bytes) b = static_cast<uint8_t>(rng.next());
  return bytes;
}

exl3::Exl3LinearView view_of(const std::vector<uint8_t>& trellis, int64_t k, int64_t n, int K, Codebook cb) {
  exl3::Exl3LinearView v;
  v.k = k;
  v.n = n;
  v.K = K;
  v.codebook = cb;
  v.trellis = trellis.data();
  return v;
}

// Selects the EXL3 GEMV arithmetic for a scope (fp16 decode, MUL1 dot product), restoring the
// context's choice after it.
class ArithChoice {
 public:
  ArithChoice(vk::VulkanBackend& be, bool f16, bool dot)
      : ctx_(be.context()), f16_(ctx_.use_f16()), dot_(ctx_.use_int_dot()) {
    ctx_.set_use_f16(f16);
    ctx_.set_use_int_dot(dot);
  }
  ~ArithChoice() {
    ctx_.set_use_f16(f16_);
    ctx_.set_use_int_dot(dot_);
  }

 private:
  vk::Context& ctx_;
  bool f16_, dot_;
};

// The GEMV arithmetic variants this device can run: {fp16 decode, dot product}.
std::vector<std::pair<bool, bool>> arith_variants(vk::VulkanBackend& be) {
  const auto& sf = be.context().shader_features();
  std::vector<std::pair<bool, bool>> v{{false, false}};
  if (sf.float16) v.emplace_back(true, false);
  if (sf.float16 && sf.int_dot) v.emplace_back(true, true);
  return v;
}

// Ŵ through the GEMV: z = I · Ŵ with one-hot rows (m = k, in chunks of 8 rows), as fp16 bits.
std::vector<uint16_t> what_by_gemv(vk::VulkanBackend& be, const exl3::Exl3LinearView& view) {
  std::vector<float> eye(static_cast<size_t>(view.k * view.k), 0.0f);
  for (int64_t r = 0; r < view.k; ++r) eye[static_cast<size_t>(r * view.k + r)] = 1.0f;
  const std::vector<float> z = be.exl3_raw_matmul(view, eye.data(), view.k, /*gemm=*/false);
  std::vector<uint16_t> out(z.size());
  for (size_t i = 0; i < z.size(); ++i) {
    out[i] = fp32_to_fp16(z[i]);
    if (fp16_to_fp32(out[i]) != z[i]) out[i] = 0x7E01;  // not a binary16 value: never matches
  }
  return out;
}

TEST(VulkanExl3, DecodeIsBitExactForEveryKAndCodebook) {
  TRELLIS_VULKAN_OR_SKIP(be);
  // 128 tiles = 32768 states per variant in whole strips of 8 tiles; then 33 tiles in strips of
  // 8 and a last one of 3 (exl3_decode.comp's strips along n).
  for (const auto& [k, n] : {std::pair<int64_t, int64_t>{128, 256}, {48, 176}}) {
    for (int K = 1; K <= 8; ++K) {
      for (Codebook cb : kCodebooks) {
        const auto trellis = random_trellis(k, n, K, 1000 + static_cast<uint64_t>(K) * 7 + static_cast<uint64_t>(cb));
        const auto view = view_of(trellis, k, n, K, cb);
        std::vector<uint16_t> want(static_cast<size_t>(k * n));
        exl3::decode_what(view, want.data());
        const std::vector<uint16_t> got = be->exl3_decode_what(view);
        size_t bad = 0;
        for (size_t i = 0; i < want.size(); ++i) bad += got[i] != want[i];
        EXPECT_EQ(bad, 0u) << k << "x" << n << " K=" << K << " cb=" << exl3::codebook_name(cb);
      }
    }
  }
}

TEST(VulkanExl3, DecodeCoversEveryState) {
  // K = 8: a state is a pair of consecutive stream bytes. Tile t alternates byte h = t % 256
  // with bytes j = 0..127 (t < 256) or 128..255, so the windows (h, j) of the 512 tiles are
  // all 65536 states, and every state of every codebook is decoded.
  TRELLIS_VULKAN_OR_SKIP(be);
  const int K = 8;
  const int64_t k = 16 * 16, n = 16 * 32;  // 512 tiles
  std::vector<uint8_t> trellis(static_cast<size_t>(512 * exl3::tile_bytes(K)));
  for (int t = 0; t < 512; ++t) {
    uint8_t* tile = trellis.data() + t * exl3::tile_bytes(K);
    // The stream is MSB-first over little-endian uint32 words: stream byte q is byte 3 - q%4 of
    // word q/4.
    for (int q = 0; q < 256; ++q) {
      const int hi = t & 255, lo = (q / 2) + ((t >> 8) << 7);
      const uint8_t value = static_cast<uint8_t>(q % 2 == 0 ? hi : lo);
      tile[(q / 4) * 4 + 3 - q % 4] = value;
    }
  }
  for (Codebook cb : kCodebooks) {
    const auto view = view_of(trellis, k, n, K, cb);
    std::vector<uint16_t> want(static_cast<size_t>(k * n));
    exl3::decode_what(view, want.data());
    const std::vector<uint16_t> got = be->exl3_decode_what(view);
    std::vector<bool> seen(65536);
    for (int t = 0; t < 512; ++t) {
      uint16_t states[256];
      exl3::unpack_tile(trellis.data() + t * exl3::tile_bytes(K), K, states);
      for (uint16_t s : states) seen[s] = true;
    }
    EXPECT_EQ(std::count(seen.begin(), seen.end(), true), 65536);
    EXPECT_TRUE(got == want) << exl3::codebook_name(cb);
    // The same states through every GEMV arithmetic variant (one-hot rows read Ŵ out exactly).
    for (auto [f16, dot] : arith_variants(*be)) {
      if (dot && cb != Codebook::kMul1) continue;
      const ArithChoice choice(*be, f16, dot);
      EXPECT_TRUE(what_by_gemv(*be, view) == want) << exl3::codebook_name(cb) << " GEMV f16=" << f16 << " dot=" << dot;
    }
  }
}

// Selects the EXL3 GEMV variant for a scope, restoring the backend's choice after it.
class SubgroupChoice {
 public:
  SubgroupChoice(vk::VulkanBackend& be, bool on) : be_(be), was_(be.gemv_subgroup()) { be_.set_gemv_subgroup(on); }
  ~SubgroupChoice() { be_.set_gemv_subgroup(was_); }

 private:
  vk::VulkanBackend& be_;
  bool was_;
};

TEST(VulkanExl3, Fp16FeatureSwitchFollowsEnvironment) {
  TRELLIS_VULKAN_OR_SKIP(be);
  const auto& sf = be->context().shader_features();
  const char* old = std::getenv("TRELLIS_VULKAN_F16");
  const std::string saved = old ? old : "";
  setenv("TRELLIS_VULKAN_F16", "0", 1);
  const auto off = vk::Context::create(0);
  if (old) setenv("TRELLIS_VULKAN_F16", saved.c_str(), 1); else unsetenv("TRELLIS_VULKAN_F16");
  EXPECT_FALSE(off->use_f16());
  EXPECT_EQ(off->shader_features().float16, sf.float16);
  if (!sf.float16) {
    EXPECT_FALSE(be->context().use_f16());
    EXPECT_THROW(be->context().set_use_f16(true), Error);
  }
  std::printf("[ info     ] fp16 decode %s, dot product %s%s\n", sf.float16 ? "supported" : "unsupported",
              sf.int_dot ? "supported" : "unsupported", sf.int_dot_accelerated ? " (accelerated)" : "");
}

// Every GEMV arithmetic variant reproduces Ŵ bit for bit for every K and codebook.
TEST(VulkanExl3, GemvDecodeIsBitExactForEveryVariantKAndCodebook) {
  TRELLIS_VULKAN_OR_SKIP(be);
  const int64_t k = 128, n = 64;  // 32 tiles = 8192 weights per (K, codebook)
  // Each fp16 variant with both add forms of the 3INST/MCG decode (set_gemv_scalar_add).
  const bool sa_default = be->gemv_scalar_add();
  std::vector<std::tuple<bool, bool, bool>> cases;  // {f16, dot, scalar add}
  for (auto [f16, dot] : arith_variants(*be))
    for (bool sa : {false, true}) cases.emplace_back(f16, dot, sa);
  for (auto [f16, dot, sa] : cases) {
    if (!f16) continue;  // the portable variant: GemvAndGemmAreExactOnOneHotRows
    const ArithChoice choice(*be, f16, dot);
    be->set_gemv_scalar_add(sa);
    for (int K = 1; K <= 8; ++K) {
      for (Codebook cb : kCodebooks) {
        if (dot && cb != Codebook::kMul1) continue;  // the dot product changes MUL1 only
        if (sa && cb == Codebook::kMul1) continue;   // the add form changes 3INST/MCG only
        const auto trellis = random_trellis(k, n, K, 4000 + static_cast<uint64_t>(K) * 5 + static_cast<uint64_t>(cb));
        const auto view = view_of(trellis, k, n, K, cb);
        std::vector<uint16_t> want(static_cast<size_t>(k * n));
        exl3::decode_what(view, want.data());
        const std::vector<uint16_t> got = what_by_gemv(*be, view);
        size_t bad = 0;
        for (size_t i = 0; i < want.size(); ++i) bad += got[i] != want[i];
        EXPECT_EQ(bad, 0u) << "K=" << K << " cb=" << exl3::codebook_name(cb) << " f16=" << f16 << " dot=" << dot
                           << " scalar add=" << sa;
      }
    }
    be->set_gemv_scalar_add(sa_default);
  }
}

// z = xh · Ŵ for one-hot rows of xh is a row of Ŵ, exactly, on both paths.
TEST(VulkanExl3, GemvAndGemmAreExactOnOneHotRows) {
  TRELLIS_VULKAN_OR_SKIP(be);
  const int64_t k = 256, n = 128, m = 11;
  for (int K : {1, 3, 4, 8}) {
    for (Codebook cb : kCodebooks) {
      const auto trellis = random_trellis(k, n, K, 77 + static_cast<uint64_t>(K));
      const auto view = view_of(trellis, k, n, K, cb);
      std::vector<uint16_t> what(static_cast<size_t>(k * n));
      exl3::decode_what(view, what.data());
      std::vector<float> xh(static_cast<size_t>(m * k), 0.0f);
      std::vector<int64_t> hot(static_cast<size_t>(m));
      for (int64_t r = 0; r < m; ++r) {
        hot[static_cast<size_t>(r)] = (r * 97 + 5) % k;
        xh[static_cast<size_t>(r * k + hot[static_cast<size_t>(r)])] = 1.0f;
      }
      // GEMV (shared-memory reductions), GEMV (subgroup), GEMM, GEMV with the portable fp32
      // decode where the device default is the fp16 one (TRELLIS_VULKAN_F16=0).
      for (int path : {0, 1, 2, 3}) {
        // The subgroup variant differs only in the final reduction: one K keeps CI's cold
        // pipeline compiles (~1 s each on lavapipe) in check.
        if (path == 1 && (!be->gemv_subgroup_capable() || K != 3)) continue;
        if (path == 3 && !be->context().use_f16()) continue;
        const SubgroupChoice choice(*be, path == 1);
        const ArithChoice arith(*be, path != 3 && be->context().use_f16(), path != 3 && be->context().use_int_dot());
        const std::vector<float> z = be->exl3_raw_matmul(view, xh.data(), m, path == 2);
        size_t bad = 0;
        for (int64_t r = 0; r < m; ++r)
          for (int64_t c = 0; c < n; ++c)
            bad += z[static_cast<size_t>(r * n + c)] != fp16_to_fp32(what[static_cast<size_t>(hot[static_cast<size_t>(r)] * n + c)]);
        EXPECT_EQ(bad, 0u) << "K=" << K << " cb=" << exl3::codebook_name(cb) << " path " << path;
      }
    }
  }
}

TEST(VulkanExl3, GemvAndGemmMatchDoubleProduct) {
  TRELLIS_VULKAN_OR_SKIP(be);
  const int64_t k = 384, n = 256;
  test::SplitMix64 rng(5);
  for (int K : {2, 7}) {
    for (Codebook cb : kCodebooks) {
      const auto trellis = random_trellis(k, n, K, 300 + static_cast<uint64_t>(K));
      const auto view = view_of(trellis, k, n, K, cb);
      std::vector<uint16_t> what(static_cast<size_t>(k * n));
      exl3::decode_what(view, what.data());
      for (int64_t m : {1, 7, 9, 37}) {
        std::vector<float> xh(static_cast<size_t>(m * k));
        for (auto& v : xh) v = static_cast<float>(static_cast<double>(rng.next() >> 11) / 9007199254740992.0 * 2 - 1);
        std::vector<float> want(static_cast<size_t>(m * n));
        for (int64_t r = 0; r < m; ++r)
          for (int64_t c = 0; c < n; ++c) {
            double s = 0;
            for (int64_t i = 0; i < k; ++i)
              s += static_cast<double>(xh[static_cast<size_t>(r * k + i)]) * fp16_to_fp32(what[static_cast<size_t>(i * n + c)]);
            want[static_cast<size_t>(r * n + c)] = static_cast<float>(s);
          }
        std::vector<float> shared_z;
        for (int path : {0, 1, 2}) {  // GEMV (shared-memory reductions), GEMV (subgroup), GEMM
          if (path == 1 && !be->gemv_subgroup_capable()) continue;
          const SubgroupChoice choice(*be, path == 1);
          const std::vector<float> z = be->exl3_raw_matmul(view, xh.data(), m, path == 2);
          EXPECT_LT(test::rel_rms(z, want), 1e-5)
              << "K=" << K << " cb=" << exl3::codebook_name(cb) << " m=" << m << " path " << path;
          // Both GEMV variants sum in the same order.
          if (path == 0) shared_z = z;
          if (path == 1) {
            EXPECT_TRUE(z == shared_z) << "K=" << K << " m=" << m;
          }
        }
        // The other arithmetic variants (fp16 decode or not, dot product) decode the same
        // weights and sum in the same order: bitwise the same z. One K (7: two window groups)
        // keeps the extra pipeline compiles in check.
        if (K == 7) {
          for (auto [f16, dot] : arith_variants(*be)) {
            if (dot && cb != Codebook::kMul1) continue;
            const ArithChoice arith(*be, f16, dot);
            const SubgroupChoice choice(*be, false);
            EXPECT_TRUE(be->exl3_raw_matmul(view, xh.data(), m, false) == shared_z)
                << "K=" << K << " cb=" << exl3::codebook_name(cb) << " m=" << m << " f16=" << f16 << " dot=" << dot;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace trellis

#endif  // TRELLIS_WITH_VULKAN
