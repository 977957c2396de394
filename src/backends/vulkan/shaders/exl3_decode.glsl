// shaders/exl3_decode.glsl: trellis state extraction and the three EXL3 codebooks (spec 2.7-2.9,
// 3.2-3.4), bit-exact with src/exl3 (tested by tests/ops/vulkan_exl3_test.cpp).
//
// Needs: `EXL3_TRELLIS` naming a uint[] buffer holding packed tiles (8K little-endian words each,
// file order, spec 2.8), and specialization constants K (1..8) and CODEBOOK (0 3INST, 1 MCG,
// 2 MUL1) declared by the including shader.
// Optional: EXL3_DECODE_F16 adds decode_pair() with hardware binary16 arithmetic; the including
// shader must enable GL_EXT_shader_explicit_arithmetic_types(_float16) and declare the
// RoundingModeRTE execution mode for 16-bit results (exl3_gemv.glsl does), which the host
// allows only on devices reporting shaderFloat16 and shaderRoundingModeRTEFloat16.
// With EXL3_DECODE_F16 the including shader also declares the specialization constant SA: 1 adds
// each 3INST/MCG weight's two halves with one scalar binary16 add (no pairing of two weights'
// halves by bitfieldInsert first; the same bits).
// EXL3_DECODE_DOT (with EXL3_DECODE_F16) forms the MUL1 byte sum with one 4x8 packed dot product
// (SPV_KHR_integer_dot_product; the host allows it where the device reports
// shaderIntegerDotProduct).

// Tile element (row r, col c) -> trellis step (spec 2.7).
uint step_of(uint r, uint c) {
  return 32u * (c & 7u) + 8u * ((r & 7u) >> 1) + (r & 1u) + ((r >> 3) << 1) + ((c >> 3) << 2);
}

// State of step p of the tile whose first word is `base`: the 16-bit window of the cyclic
// MSB-first stream of 256K bits ending at bit (p+1)K (spec 2.9).
uint trellis_state(uint base, uint p) {
  const uint n_bits = 256u * K;
  uint e = (p + 1u) * K;
  uint i1 = (e - 1u) >> 5;
  uint i0 = ((e + n_bits - 16u) % n_bits) >> 5;
  uint s = 31u - ((e - 1u) & 31u);  // right shift that aligns the window's last bit to bit 0
  uint lo = EXL3_TRELLIS[base + i1];
  uint w = lo >> s;
  if (s != 0u) w |= EXL3_TRELLIS[base + i0] << (32u - s);
  return w & 0xFFFFu;
}

// Window j (j * K + 16 <= 64) of a run of consecutive windows whose first starts at bit 0 (the
// MSB) of a0:a1. A window inside one word is a bitfieldExtract: one instruction where the ISA
// has it (AMD v_bfe_u32), a shift and a mask elsewhere.
uint window(uint a0, uint a1, uint j) {
  uint pos = j * K;  // a constant after unrolling
  if (pos + 16u <= 32u) return bitfieldExtract(a0, int(16u - pos), 16);
  if (pos >= 32u) return bitfieldExtract(a1, int(48u - pos), 16);
  return ((a0 << (pos - 16u)) | (a1 >> (48u - pos))) & 0xFFFFu;
}

// Funnel shift: bits [off, off + 32) of the MSB-first pair hi:lo (off in 0..31).
uint funnel(uint hi, uint lo, uint off) { return (hi << off) | ((lo >> 1) >> (31u - off)); }

// Codebook value of a 16-bit state, as fp32 (exactly a binary16 value).
float decode_state(uint state) {
  if (CODEBOOK == 2u) {
    // MUL1 (spec 3.4/3.6): (1024 + byte sum) * k_inv + k_bias is exact in fp32; one rounding.
    uint x = state * 0x83DCD12Du;
    uint s = (x & 0xFFu) + ((x >> 8) & 0xFFu) + ((x >> 16) & 0xFFu) + (x >> 24);
    float v = float(1024u + s) * 0.00676727294921875 + (-10.3828125);
    return round_to_f16_precision(v);
  }
  // 3INST / MCG (spec 3.2/3.3): both halves are normal binary16 in [0.125, 2); their fp32 sum is
  // exact, so one rounding to binary16 precision reproduces __hadd.
  uint x = CODEBOOK == 0u ? state * 89226354u + 64248484u : state * 0xCBAC1FEDu;
  uint y = (x & 0x8FFF8FFFu) ^ 0x3B603B60u;
  vec2 h = unpackHalf2x16(y);
  return round_to_f16_precision(h.x + h.y);
}

#ifdef EXL3_DECODE_F16
#ifdef EXL3_DECODE_DOT
// OpUDot (SPV_KHR_integer_dot_product) with PackedVectorFormat4x8Bit (0): the sum of the four
// byte products of a and b. glslang 11 has no GL_EXT_integer_dot_product, so it is declared
// through GL_EXT_spirv_intrinsics (opcode 4451, capabilities DotProduct and
// DotProductInput4x8BitPacked).
spirv_instruction(extensions = ["SPV_KHR_integer_dot_product"], capabilities = [6019, 6018], id = 4451)
uint exl3_udot4x8(uint a, uint b, spirv_literal int packed_vector_format);
#endif

// Byte sum of x (0..1020).
uint mul1_byte_sum(uint x) {
#ifdef EXL3_DECODE_DOT
  return exl3_udot4x8(x, 0x01010101u, 0);
#else
  uint t = (x & 0x00FF00FFu) + ((x >> 8) & 0x00FF00FFu);
  return (t + (t >> 16)) & 0xFFFFu;
#endif
}

// Codebook values of two states (bit-exact with decode_state), as fp32 (exactly binary16 values).
// 3INST/MCG: the low halves of the two words and their high halves are gathered into two f16x2
// words and summed with ONE f16vec2 addition: a correctly rounded binary16 add under the
// shader's RoundingModeRTE, i.e. exactly __hadd (spec 3.6), with no software rounding.
// MUL1: (1024 + S) · k_inv + k_bias is exact in fp32 for every S (spec 3.6, whether or not the
// compiler fuses it), then rounded once to binary16 precision in software (see below). (The
// CUDA kernel's single f16x2 FMA is not used: Vulkan does not promise that fma() is fused.)
vec2 decode_pair(uint s0, uint s1) {
  if (CODEBOOK == 2u) {
    // 1024 + S as fp32 without an int->float conversion (a slow pipe on NVIDIA): the float with
    // bits 0x4B000400 + S is 2^23 + 1024 + S exactly; subtracting 2^23 is exact.
    uvec2 b = uvec2(0x4B000400u) + uvec2(mul1_byte_sum(s0 * 0x83DCD12Du), mul1_byte_sum(s1 * 0x83DCD12Du));
    vec2 f = uintBitsToFloat(b) - 8388608.0;
    // Rounded in software, as decode_state does: on the NVIDIA driver (H200, 2026-12-04) the
    // f16vec2 conversion of this value did not reproduce round-to-nearest-even despite the
    // RoundingModeRTE execution mode, so the MUL1 results were not bit-exact.
    vec2 v = f * 0.00676727294921875 + (-10.3828125);
    return vec2(round_to_f16_precision(v.x), round_to_f16_precision(v.y));
  }
  uint x0 = CODEBOOK == 0u ? s0 * 89226354u + 64248484u : s0 * 0xCBAC1FEDu;
  uint x1 = CODEBOOK == 0u ? s1 * 89226354u + 64248484u : s1 * 0xCBAC1FEDu;
  uint y0 = (x0 & 0x8FFF8FFFu) ^ 0x3B603B60u;
  uint y1 = (x1 & 0x8FFF8FFFu) ^ 0x3B603B60u;
  if (SA != 0u) {
    f16vec2 h0 = unpackFloat2x16(y0), h1 = unpackFloat2x16(y1);
    return vec2(float(h0.x + h0.y), float(h1.x + h1.y));
  }
  f16vec2 lo = unpackFloat2x16(bitfieldInsert(y0, y1, 16, 16));        // (y0.lo, y1.lo)
  f16vec2 hi = unpackFloat2x16(bitfieldInsert(y1, y0 >> 16, 0, 16));  // (y0.hi, y1.hi)
  return vec2(lo + hi);
}
#endif
