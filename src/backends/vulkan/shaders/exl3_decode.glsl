// shaders/exl3_decode.glsl: trellis state extraction and the three EXL3 codebooks (spec 2.7-2.9,
// 3.2-3.4), bit-exact with src/exl3 (tested by tests/ops/vulkan_exl3_test.cpp).
//
// Needs: `EXL3_TRELLIS` naming a uint[] buffer holding packed tiles (8K little-endian words each,
// file order, spec 2.8), and specialization constants K (1..8) and CODEBOOK (0 3INST, 1 MCG,
// 2 MUL1) declared by the including shader.

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
