// exl3/codebook.cpp: the 3INST, MCG and MUL1 decoders of spec section 3, written for
// obviousness rather than speed. Every step is integer arithmetic plus one binary16 operation
// computed exactly in double precision and rounded once (spec 3.6).
#include "exl3/codebook.h"

#include <array>
#include <vector>

#include "core/error.h"
#include "core/fp16.h"

namespace trellis::exl3 {

namespace {

// 3INST/MCG bit trick (spec 3.2 steps 2-4): keep sign, low exponent bits and mantissa of each
// half, force the exponent into 12..15, then add the two halves as binary16 numbers.
constexpr uint32_t kInstMask = 0x8FFF8FFFu;
constexpr uint32_t kInstXor = 0x3B603B60u;

// MUL1 FMA constants (spec 3.4): binary16 k_inv and k_bias, and 1024.0 as the base of h.
constexpr uint16_t kMul1InvBits = 0x1EEE;   // 0.00676727294921875
constexpr uint16_t kMul1BiasBits = 0xC931;  // -10.3828125
constexpr uint32_t kMul1Base = 1024;

uint16_t decode_inst_word(uint32_t x) {
  const uint32_t y = (x & kInstMask) ^ kInstXor;
  const double lo = fp16_to_fp32(static_cast<uint16_t>(y & 0xFFFFu));
  const double hi = fp16_to_fp32(static_cast<uint16_t>(y >> 16));
  // Both halves are normal numbers in [0.125, 2); their sum is exact in double, so this is a
  // single round-to-nearest-even, as __hadd does.
  return fp64_to_fp16(lo + hi);
}

uint16_t decode_mul1_word(uint32_t x) {
  const uint32_t byte_sum = (x & 0xFFu) + ((x >> 8) & 0xFFu) + ((x >> 16) & 0xFFu) + (x >> 24);
  const double h = static_cast<double>(kMul1Base + byte_sum);  // exact: 1024 .. 2044
  const double k_inv = fp16_to_fp32(kMul1InvBits);
  const double k_bias = fp16_to_fp32(kMul1BiasBits);
  // h * k_inv has at most 22 significant bits and the sum is a multiple of 2^-18 below 2^20:
  // exact in double, so one rounding reproduces the binary16 FMA.
  return fp64_to_fp16(h * k_inv + k_bias);
}

struct Tables {
  std::vector<uint16_t> bits;
  std::vector<float> values;
};

Tables build_table(Codebook cb) {
  Tables t;
  t.bits.resize(65536);
  t.values.resize(65536);
  for (uint32_t s = 0; s < 65536; ++s) {
    t.bits[s] = decode_state(s, cb);
    t.values[s] = fp16_to_fp32(t.bits[s]);
  }
  return t;
}

const Tables& tables(Codebook cb) {
  // Function-local static: initialised exactly once, thread-safe (C++11 magic statics).
  static const std::array<Tables, 3> all = {
      build_table(Codebook::k3Inst), build_table(Codebook::kMcg), build_table(Codebook::kMul1)};
  const auto index = static_cast<size_t>(cb);
  if (index >= all.size()) fail(ErrorKind::kInvalidArgument, "unknown EXL3 codebook id {}", index);
  return all[index];
}

}  // namespace

std::string_view codebook_name(Codebook cb) {
  switch (cb) {
    case Codebook::k3Inst: return "3inst";
    case Codebook::kMcg: return "mcg";
    case Codebook::kMul1: return "mul1";
  }
  return "unknown";
}

std::optional<Codebook> codebook_from_name(std::string_view name) {
  for (Codebook cb : {Codebook::k3Inst, Codebook::kMcg, Codebook::kMul1})
    if (name == codebook_name(cb)) return cb;
  return std::nullopt;
}

uint16_t decode_state(uint32_t state, Codebook cb) {
  const uint32_t s = state & 0xFFFFu;
  switch (cb) {
    case Codebook::k3Inst: return decode_inst_word(s * k3InstMultiplier + k3InstAddend);
    case Codebook::kMcg: return decode_inst_word(s * kMcgMultiplier);
    case Codebook::kMul1: return decode_mul1_word(s * kMul1Multiplier);
  }
  fail(ErrorKind::kInvalidArgument, "unknown EXL3 codebook id {}", static_cast<int>(cb));
}

const uint16_t* codebook_table(Codebook cb) { return tables(cb).bits.data(); }

const float* codebook_table_f32(Codebook cb) { return tables(cb).values.data(); }

}  // namespace trellis::exl3
