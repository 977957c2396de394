// backends/vulkan/vk_spirv.cpp: see vk_spirv.h.
#include "backends/vulkan/vk_spirv.h"

#include <cstring>
#include <map>
#include <string>

#include "core/error.h"

namespace trellis::vk {
namespace {

// SPIR-V numbers used here (SPIR-V 1.6 unified spec and the two extension specs).
constexpr uint32_t kMagic = 0x07230203;
constexpr uint32_t kOpExtension = 10, kOpCapability = 17, kOpTypeInt = 21, kOpConstantTrue = 41,
                   kOpConstantFalse = 42, kOpConstant = 43, kOpDecorate = 71;
constexpr uint32_t kDecorationSpecId = 1;
constexpr uint32_t kCapCoopNv = 5357, kCapCoopKhr = 6022;
constexpr uint32_t kOpTypeCoopNv = 5358, kOpLoadNv = 5359, kOpStoreNv = 5360, kOpMulAddNv = 5361, kOpLengthNv = 5362;
constexpr uint32_t kOpTypeCoopKhr = 4456, kOpLoadKhr = 4457, kOpStoreKhr = 4458, kOpMulAddKhr = 4459,
                   kOpLengthKhr = 4460;

uint32_t header(uint32_t words, uint32_t opcode) { return (words << 16) | opcode; }

std::string literal_string(std::span<const uint32_t> words) {
  std::string s(words.size() * 4, '\0');
  std::memcpy(s.data(), words.data(), s.size());
  return s.substr(0, s.find('\0'));
}

void emit_string(std::vector<uint32_t>& out, uint32_t opcode, const std::string& s) {
  const size_t words = s.size() / 4 + 1;  // nul-terminated, zero-padded
  std::vector<uint32_t> w(words, 0);
  std::memcpy(w.data(), s.data(), s.size());
  out.push_back(header(static_cast<uint32_t>(1 + words), opcode));
  out.insert(out.end(), w.begin(), w.end());
}

}  // namespace

int coop_shader_use(uint32_t spec_id) {
  switch (spec_id) {
    case 10: return 0;
    case 12: return 1;
    case 14: return 2;
    default: return -1;
  }
}

size_t count_opcode(std::span<const uint32_t> module, uint32_t opcode) {
  size_t n = 0;
  for (size_t i = 5; i < module.size();) {
    const uint32_t wc = module[i] >> 16;
    if (wc == 0) break;
    n += (module[i] & 0xFFFFu) == opcode;
    i += wc;
  }
  return n;
}

std::vector<uint32_t> coop_nv_to_khr(std::span<const uint32_t> nv, const std::function<int(uint32_t)>& use_of_spec_id) {
  if (nv.size() < 5 || nv[0] != kMagic) fail(ErrorKind::kInternal, "coop_nv_to_khr: not a SPIR-V module");
  // Pass 1: SpecIds, bool constants, the 32-bit unsigned int type; check instruction bounds.
  std::map<uint32_t, uint32_t> spec_id;  // result id -> SpecId
  std::map<uint32_t, bool> bools;        // result id -> value
  uint32_t uint_type = 0;
  for (size_t i = 5; i < nv.size();) {
    const uint32_t wc = nv[i] >> 16, op = nv[i] & 0xFFFFu;
    if (wc == 0 || i + wc > nv.size()) fail(ErrorKind::kInternal, "coop_nv_to_khr: malformed instruction at word {}", i);
    if (op == kOpDecorate && wc >= 4 && nv[i + 2] == kDecorationSpecId) spec_id[nv[i + 1]] = nv[i + 3];
    if (op == kOpConstantTrue || op == kOpConstantFalse) bools[nv[i + 2]] = op == kOpConstantTrue;
    if (op == kOpTypeInt && wc == 4 && nv[i + 2] == 32 && nv[i + 3] == 0 && uint_type == 0) uint_type = nv[i + 1];
    i += wc;
  }
  if (uint_type == 0) fail(ErrorKind::kInternal, "coop_nv_to_khr: the module declares no 32-bit uint type");
  const uint32_t bound = nv[3];
  const uint32_t konst[3] = {bound, bound + 1, bound + 2};  // uint 0, 1, 2

  std::vector<uint32_t> out(nv.begin(), nv.begin() + 5);
  out.reserve(nv.size() + 64);
  out[3] = bound + 3;
  bool uint_seen = false, constants_emitted = false;
  auto layout_of = [&](uint32_t colmajor, size_t at) {
    auto it = bools.find(colmajor);
    if (it == bools.end())
      fail(ErrorKind::kInternal, "coop_nv_to_khr: ColumnMajor of the load/store at word {} is not a bool constant", at);
    return konst[it->second ? 1 : 0];
  };
  for (size_t i = 5; i < nv.size();) {
    const uint32_t wc = nv[i] >> 16, op = nv[i] & 0xFFFFu;
    const uint32_t* ins = nv.data() + i;
    switch (op) {
      case kOpCapability:
        out.push_back(ins[0]);
        out.push_back(ins[1] == kCapCoopNv ? kCapCoopKhr : ins[1]);
        break;
      case kOpExtension: {
        const std::string name = literal_string(nv.subspan(i + 1, wc - 1));
        emit_string(out, kOpExtension, name == "SPV_NV_cooperative_matrix" ? "SPV_KHR_cooperative_matrix" : name);
        break;
      }
      case kOpTypeCoopNv: {
        if (wc != 6) fail(ErrorKind::kInternal, "coop_nv_to_khr: TypeCooperativeMatrixNV of {} words", wc);
        if (!uint_seen) fail(ErrorKind::kInternal, "coop_nv_to_khr: a cooperative-matrix type precedes the uint type");
        if (!constants_emitted) {
          for (uint32_t v = 0; v < 3; ++v) out.insert(out.end(), {header(4, kOpConstant), uint_type, konst[v], v});
          constants_emitted = true;
        }
        auto sid = spec_id.find(ins[4]);
        const int use = sid == spec_id.end() ? -1 : use_of_spec_id(sid->second);
        if (use < 0 || use > 2)
          fail(ErrorKind::kInternal, "coop_nv_to_khr: cooperative-matrix type %{} has rows that are not a known "
               "specialization constant (SpecId {})", ins[1], sid == spec_id.end() ? -1 : static_cast<int>(sid->second));
        out.insert(out.end(), {header(7, kOpTypeCoopKhr), ins[1], ins[2], ins[3], ins[4], ins[5], konst[use]});
        break;
      }
      case kOpLoadNv:  // type result ptr stride colmajor [mem...]
        if (wc < 6) fail(ErrorKind::kInternal, "coop_nv_to_khr: short CooperativeMatrixLoadNV");
        out.insert(out.end(), {header(wc, kOpLoadKhr), ins[1], ins[2], ins[3], layout_of(ins[5], i), ins[4]});
        out.insert(out.end(), ins + 6, ins + wc);
        break;
      case kOpStoreNv:  // ptr object stride colmajor [mem...]
        if (wc < 5) fail(ErrorKind::kInternal, "coop_nv_to_khr: short CooperativeMatrixStoreNV");
        out.insert(out.end(), {header(wc, kOpStoreKhr), ins[1], ins[2], layout_of(ins[4], i), ins[3]});
        out.insert(out.end(), ins + 5, ins + wc);
        break;
      case kOpMulAddNv:
      case kOpLengthNv:
        out.push_back(header(wc, op == kOpMulAddNv ? kOpMulAddKhr : kOpLengthKhr));
        out.insert(out.end(), ins + 1, ins + wc);
        break;
      default:
        out.insert(out.end(), ins, ins + wc);
        if (op == kOpTypeInt && ins[1] == uint_type) uint_seen = true;
        break;
    }
    i += wc;
  }
  return out;
}

}  // namespace trellis::vk
