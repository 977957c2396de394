// tests/ops/vulkan_coop_test.cpp: the cooperative-matrix prefill GEMMs (matmul_f16_coop,
// matmul_f16_coop2 in each of its tile shapes, matmul_f16_coop3 in each of its variants) and the
// NV -> KHR SPIR-V rewrite they (and attention_flash_coop, vulkan_attention_coop_test.cpp) are
// loaded through.
//
// The rewrite test runs anywhere (it only reads the embedded SPIR-V). The GEMM tests need a
// device with VK_KHR_cooperative_matrix or VK_NV_cooperative_matrix and the 16x16x16 fp16 ->
// fp32 shape (NVIDIA, AMD RDNA3+); elsewhere (lavapipe in CI) they skip and say why. Each path the
// device has is run. Reference: the product of the fp16-rounded activations (the path's one
// rounding, RNE) with the fp16 weights, in double; the fp32 accumulation may differ from it by
// summation order only, so the bound is relative to the sum of |terms|.
#if TRELLIS_WITH_VULKAN

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "backends/vulkan/vk_shaders.h"
#include "backends/vulkan/vk_spirv.h"
#include "core/fp16.h"
#include "exl3/linear.h"
#include "ops/ops_test_util.h"
#include "ops/vulkan_test_util.h"
#include "test_util.h"

namespace trellis {
namespace {

using test::random_floats;

// Instruction `i` of kind `opcode`: its words (empty when there are fewer).
std::vector<uint32_t> nth_instruction(std::span<const uint32_t> m, uint32_t opcode, size_t i) {
  for (size_t w = 5; w < m.size();) {
    const uint32_t wc = m[w] >> 16;
    if ((m[w] & 0xFFFFu) == opcode && i-- == 0) return {m.begin() + static_cast<ptrdiff_t>(w), m.begin() + static_cast<ptrdiff_t>(w + wc)};
    w += wc;
  }
  return {};
}

void check_rewrite(std::span<const uint32_t> nv);

// Every cooperative-matrix module (matmul_f16_coop, matmul_f16_coop2, each matmul_f16_coop3
// variant, attention_flash_coop_d64 / _d128) goes through the rewrite.
TEST(VulkanCoop, SpirvRewriteNvToKhr) {
  std::vector<std::string> shaders = {"matmul_f16_coop", "matmul_f16_coop2", "attention_flash_coop_d64",
                                      "attention_flash_coop_d128"};
  for (const vk::Coop3Variant& v : vk::kCoop3Variants) shaders.push_back("matmul_f16_coop3_" + vk::coop3_variant_name(v));
  for (const std::string& shader : shaders) {
    SCOPED_TRACE(shader);
    check_rewrite(vk::shader_spirv(shader));
  }
}

// matmul_f16_coop3's point is that no cooperative matrix lives in an array the driver would have
// to index dynamically: its loops are unrolled at build time (the header's argument). Check the
// embedded modules: no Function-storage variable that is an array of cooperative matrices, and exactly
// FM FN BK / 16 MMAs (each unrolled once).
void expect_unrolled(std::span<const uint32_t> m, size_t mmas);

TEST(VulkanCoop, Coop3ModulesAreUnrolled) {
  for (const vk::Coop3Variant& v : vk::kCoop3Variants) {
    const std::string shader = "matmul_f16_coop3_" + vk::coop3_variant_name(v);
    SCOPED_TRACE(shader);
    expect_unrolled(vk::shader_spirv(shader), static_cast<size_t>(v.fm * v.fn * v.bk / 16));
  }
}

// The same for attention_flash_coop: per 64-key tile D / 16 x 4 MMAs for S and 4 x D / 16 for P·V.
TEST(VulkanCoop, AttentionCoopModulesAreUnrolled) {
  for (int d : {64, 128}) {
    const std::string shader = "attention_flash_coop_d" + std::to_string(d);
    SCOPED_TRACE(shader);
    expect_unrolled(vk::shader_spirv(shader), static_cast<size_t>(2 * (d / 16) * 4));
  }
}

void expect_unrolled(std::span<const uint32_t> m, size_t mmas) {
  constexpr uint32_t kOpTypeArray = 28, kOpTypePointer = 32, kOpVariable = 59, kOpTypeCoopNv = 5358, kOpMulAddNv = 5361;
  constexpr uint32_t kStorageFunction = 7;
  EXPECT_EQ(vk::count_opcode(m, kOpMulAddNv), mmas);
  std::vector<uint32_t> coop_types, coop_arrays;
  for (size_t i = 0; i < vk::count_opcode(m, kOpTypeCoopNv); ++i) coop_types.push_back(nth_instruction(m, kOpTypeCoopNv, i)[1]);
  for (size_t i = 0; i < vk::count_opcode(m, kOpTypeArray); ++i) {
    const auto a = nth_instruction(m, kOpTypeArray, i);
    if (std::find(coop_types.begin(), coop_types.end(), a[2]) != coop_types.end()) coop_arrays.push_back(a[1]);
  }
  std::vector<uint32_t> array_pointers;  // Function pointers to those arrays (types may stay, unused)
  for (size_t i = 0; i < vk::count_opcode(m, kOpTypePointer); ++i) {
    const auto ptr = nth_instruction(m, kOpTypePointer, i);
    if (ptr[2] == kStorageFunction && std::find(coop_arrays.begin(), coop_arrays.end(), ptr[3]) != coop_arrays.end())
      array_pointers.push_back(ptr[1]);
  }
  for (size_t i = 0; i < vk::count_opcode(m, kOpVariable); ++i) {
    const auto var = nth_instruction(m, kOpVariable, i);
    EXPECT_EQ(std::find(array_pointers.begin(), array_pointers.end(), var[1]), array_pointers.end())
        << "variable %" << var[2] << " is an array of cooperative matrices";
  }
}

void check_rewrite(std::span<const uint32_t> nv) {
  const std::vector<uint32_t> khr = vk::coop_nv_to_khr(nv, vk::coop_shader_use);
  EXPECT_EQ(khr[3], nv[3] + 3) << "bound";
  for (uint32_t op : {5358u, 5359u, 5360u, 5361u, 5362u}) EXPECT_EQ(vk::count_opcode(khr, op), 0u) << "NV opcode " << op;
  EXPECT_EQ(vk::count_opcode(nv, 5358), 3u) << "the shader declares A, B and accumulator types";
  EXPECT_EQ(vk::count_opcode(khr, 4456), 3u);
  EXPECT_EQ(vk::count_opcode(khr, 4457), vk::count_opcode(nv, 5359));
  EXPECT_EQ(vk::count_opcode(khr, 4458), vk::count_opcode(nv, 5360));
  EXPECT_EQ(vk::count_opcode(khr, 4459), vk::count_opcode(nv, 5361));
  // Capabilities: CooperativeMatrixKHR, no CooperativeMatrixNV.
  bool cap_khr = false, cap_nv = false;
  for (size_t i = 0; i < vk::count_opcode(khr, 17); ++i) {
    const auto ins = nth_instruction(khr, 17, i);
    cap_khr |= ins[1] == 6022;
    cap_nv |= ins[1] == 5357;
  }
  EXPECT_TRUE(cap_khr);
  EXPECT_FALSE(cap_nv);
  // Each KHR type's use operand is one of the three new constants, all three used once.
  bool used[3] = {};
  for (size_t i = 0; i < 3; ++i) {
    const auto t = nth_instruction(khr, 4456, i);
    ASSERT_EQ(t.size(), 7u);
    ASSERT_GE(t[6], nv[3]);
    ASSERT_LT(t[6], nv[3] + 3);
    used[t[6] - nv[3]] = true;
  }
  EXPECT_TRUE(used[0] && used[1] && used[2]);
  // Loads: layout operand is a new constant (0 / 1), stride moved after it.
  for (size_t i = 0; i < vk::count_opcode(khr, 4457); ++i) {
    const auto l = nth_instruction(khr, 4457, i);
    EXPECT_TRUE(l[4] == nv[3] || l[4] == nv[3] + 1) << "load " << i;
  }
  // A module whose matrix rows are not the known specialization constants is refused.
  EXPECT_THROW(vk::coop_nv_to_khr(nv, [](uint32_t) { return -1; }), Error);
}

// convert_f16 (the coop path's activation rounding) is bit-exact with core/fp16's RNE over
// normal, subnormal, tie, overflow, infinite and NaN inputs, odd k padded with zero. Any device.
TEST(VulkanCoop, ConvertF16MatchesCpuRounding) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  const int64_t m = 3, k = 37;
  std::vector<float> x = random_floats(static_cast<size_t>(m * k), 50, 70000.0f);
  const float specials[] = {0.0f, -0.0f, 1e-8f, -3e-6f, 6.1e-5f, 65504.0f, 65520.0f, -65519.0f, 1e30f,
                            INFINITY, -INFINITY, NAN, 1.0f + 1.0f / 2048, 1.0f + 3.0f / 2048, 2.98e-8f, 5.96e-8f};
  for (size_t i = 0; i < std::size(specials); ++i) x[i * 2] = specials[i];
  const std::vector<uint16_t> got = vk->convert_f16_rows(x.data(), m, k);
  ASSERT_EQ(got.size(), static_cast<size_t>(m * (k + 1)));
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t i = 0; i < k; ++i) {
      const uint16_t want = fp32_to_fp16(x[static_cast<size_t>(r * k + i)]);
      const uint16_t g = got[static_cast<size_t>(r * (k + 1) + i)];
      if (std::isnan(x[static_cast<size_t>(r * k + i)]))
        EXPECT_TRUE((g & 0x7C00u) == 0x7C00u && (g & 0x3FFu) != 0) << "NaN stays NaN";
      else
        EXPECT_EQ(g, want) << "x = " << x[static_cast<size_t>(r * k + i)];
    }
    EXPECT_EQ(got[static_cast<size_t>(r * (k + 1) + k)], 0u) << "padding";
  }
}

struct Case {
  int64_t m, in, out;
  bool bias;
};

TEST(VulkanCoop, GemmMatchesReference) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  std::vector<vk::CoopPath> paths;
  for (vk::CoopPath p : {vk::CoopPath::kKhr, vk::CoopPath::kNv})
    if (vk->coop_capable(p)) paths.push_back(p);
  if (paths.empty())
    GTEST_SKIP() << "device '" << vk->info().name << "' has no usable cooperative matrices: "
                 << vk->context().coop().detail;
  const vk::CoopPath saved = vk->coop_path();
  const int saved_kernel = vk->coop_kernel();
  const size_t saved_shape = vk->coop2_shape();
  const size_t saved_variant = vk->coop3_variant();
  // m >= kCoopMinRows; in and out multiples of 16 and not, odd `in` (W read element-wise);
  // version 2 (in % 8 == 0): `in` a multiple of its k step and not (80, 1000), blocks cut by m
  // and out; version 2 with in % 8 != 0 runs version 1.
  const Case cases[] = {{64, 256, 384, false}, {100, 80, 200, true}, {300, 1000, 130, false},
                        {130, 37, 51, true},   {257, 4096, 136, false}, {520, 1000, 520, true},
                        {256, 512, 256, false}};  // the last: whole blocks, coop3's direct stores
  // (version, coop2 shape or coop3 variant) pairs: version 1, version 2 in every shape and
  // version 3 in every variant that fits the device.
  std::vector<std::pair<int, size_t>> kernels = {{1, 0}};
  for (size_t i = 0; i < std::size(vk::kCoop2Shapes); ++i)
    if (vk->coop2_shape_fits(i)) kernels.emplace_back(2, i);
  for (size_t i = 0; i < std::size(vk::kCoop3Variants); ++i)
    if (vk->coop3_variant_fits(i)) kernels.emplace_back(3, i);
  // Inputs and the fp64 reference of each case, once: every (path, kernel) pair below is
  // compared against the same sums (computing them per pair took ~95 s on the H100 host).
  struct Data {
    std::vector<float> x;
    std::vector<uint16_t> w16, b16;
    std::vector<double> want, mag;  // [m][out]
  };
  std::vector<Data> data;
  for (const Case& c : cases) {
    Data d;
    d.x = random_floats(static_cast<size_t>(c.m * c.in), 40 + static_cast<uint64_t>(c.in), 3.0f);
    const auto w32 = random_floats(static_cast<size_t>(c.in * c.out), 41 + static_cast<uint64_t>(c.out));
    const auto b32 = random_floats(static_cast<size_t>(c.out), 42);
    d.w16.resize(w32.size());
    d.b16.resize(b32.size());
    for (size_t i = 0; i < w32.size(); ++i) d.w16[i] = fp32_to_fp16(w32[i]);
    for (size_t i = 0; i < b32.size(); ++i) d.b16[i] = fp32_to_fp16(b32[i]);
    std::vector<double> xr(d.x.size()), wr(d.w16.size());  // the fp16-rounded operands
    for (size_t i = 0; i < xr.size(); ++i) xr[i] = fp16_to_fp32(fp32_to_fp16(d.x[i]));
    for (size_t i = 0; i < wr.size(); ++i) wr[i] = fp16_to_fp32(d.w16[i]);
    d.want.assign(static_cast<size_t>(c.m * c.out), 0.0);
    d.mag.assign(d.want.size(), 0.0);
    for (int64_t r = 0; r < c.m; ++r)
      for (int64_t j = 0; j < c.out; ++j) {
        double sum = 0, mag = 0;
        for (int64_t i = 0; i < c.in; ++i) {
          const double t = xr[static_cast<size_t>(r * c.in + i)] * wr[static_cast<size_t>(j * c.in + i)];
          sum += t;
          mag += std::fabs(t);
        }
        if (c.bias) sum += fp16_to_fp32(d.b16[static_cast<size_t>(j)]);
        d.want[static_cast<size_t>(r * c.out + j)] = sum;
        d.mag[static_cast<size_t>(r * c.out + j)] = mag;
      }
    data.push_back(std::move(d));
  }
  for (vk::CoopPath path : paths)
  for (const auto& [version, shape] : kernels) {
    vk->set_coop_path(path);
    vk->set_coop_kernel(version);
    if (version == 2) vk->set_coop2_shape(shape);
    if (version == 3) vk->set_coop3_variant(shape);
    std::string label = fmt::format("{} v{}", vk::coop_path_name(path), version);
    if (version == 2) label += fmt::format(" {}", vk::coop2_shape_name(vk::kCoop2Shapes[shape]));
    if (version == 3) label += fmt::format(" {}", vk::coop3_variant_name(vk::kCoop3Variants[shape]));
    for (size_t ci = 0; ci < std::size(cases); ++ci) {
      const Case& c = cases[ci];
      const Data& d = data[ci];
      LinearSource src;
      src.name = "test.coop";
      src.in_features = c.in;
      src.out_features = c.out;
      src.dense = TensorView{DType::kF16, {c.out, c.in}, reinterpret_cast<const std::byte*>(d.w16.data())};
      if (c.bias) src.bias = TensorView{DType::kF16, {c.out}, reinterpret_cast<const std::byte*>(d.b16.data())};
      const auto lw = vk->prepare_linear(src);
      const DeviceTensor xt =
          vk->upload(TensorView{DType::kF32, {c.m, c.in}, reinterpret_cast<const std::byte*>(d.x.data())}, DType::kF32);
      DeviceTensor y = vk->alloc(DType::kF32, {c.m, c.out});
      vk->linear(*lw, xt, y);
      std::vector<float> got(static_cast<size_t>(c.m * c.out));
      vk->download(y, got.data());
      int bad = 0;
      for (size_t e = 0; e < got.size(); ++e) {
        const double g = got[e], want = d.want[e];
        if (!(std::fabs(g - want) <= 1e-5 * d.mag[e] + 1e-6) && bad++ < 5)
          ADD_FAILURE() << label << " m=" << c.m << " in=" << c.in << " out=" << c.out << " y["
                        << static_cast<int64_t>(e) / c.out << "," << static_cast<int64_t>(e) % c.out << "] = " << g
                        << ", want " << want;
      }
      EXPECT_EQ(bad, 0) << label << " m=" << c.m << " in=" << c.in << " out=" << c.out;
    }
  }
  vk->set_coop_path(saved);
  vk->set_coop_kernel(saved_kernel);
  vk->set_coop2_shape(saved_shape);
  vk->set_coop3_variant(saved_variant);
}

// The EXL3 prefill product (Ŵ decoded, then the GEMM) on the coop path against the fp32 tiled
// path: the same Ŵ, activations rounded once to fp16, so within fp16 input rounding.
TEST(VulkanCoop, Exl3GemmAgreesWithTiledPath) {
  TRELLIS_VULKAN_OR_SKIP(vk);
  const vk::CoopPath path = vk->coop_capable(vk::CoopPath::kKhr) ? vk::CoopPath::kKhr
                            : vk->coop_capable(vk::CoopPath::kNv) ? vk::CoopPath::kNv
                                                                   : vk::CoopPath::kOff;
  if (path == vk::CoopPath::kOff)
    GTEST_SKIP() << "device '" << vk->info().name << "' has no usable cooperative matrices: "
                 << vk->context().coop().detail;
  const int64_t k = 256, n = 384, m = 100;
  const int K = 3;
  test::SplitMix64 rng(77);
  std::vector<uint8_t> trellis(static_cast<size_t>((k / 16) * (n / 16) * 32 * K));
  for (auto& b : trellis) b = static_cast<uint8_t>(rng.next());
  exl3::Exl3LinearView v;
  v.k = k;
  v.n = n;
  v.K = K;
  v.codebook = exl3::Codebook::kMcg;
  v.trellis = trellis.data();
  const auto xh = random_floats(static_cast<size_t>(m * k), 78);
  const vk::CoopPath saved = vk->coop_path();
  const int saved_kernel = vk->coop_kernel();
  vk->set_coop_path(vk::CoopPath::kOff);
  const auto tiled = vk->exl3_raw_matmul(v, xh.data(), m, /*gemm=*/true);
  for (int version : {1, 2, 3}) {
    if (version == 3 && !vk->coop3_variant_fits(vk->coop3_variant())) continue;
    vk->set_coop_path(path);
    vk->set_coop_kernel(version);
    const auto coop = vk->exl3_raw_matmul(v, xh.data(), m, /*gemm=*/true);
    EXPECT_LT(test::rel_rms(coop, tiled), 2e-3) << "version " << version;
  }
  vk->set_coop_path(saved);
  vk->set_coop_kernel(saved_kernel);
}

}  // namespace
}  // namespace trellis

#endif  // TRELLIS_WITH_VULKAN
