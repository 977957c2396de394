// shaders/common.glsl: helpers shared by every trellis compute shader.
//
// Conventions: every tensor is bound as a whole buffer and addressed with element offsets from
// push constants (so no binding needs minStorageBufferOffsetAlignment); fp16 data is read and
// written as packed uint pairs (no 16-bit storage feature needed); 1-D grids larger than 65535
// workgroups are folded into x and y by the host, and flat_group() unfolds them.

uint flat_group() { return gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x; }

// Element e (fp16) of a uint-packed buffer, widened to fp32.
#define LOAD_F16(buf, e) unpackHalf2x16((buf)[(e) >> 1] >> (((e) & 1u) << 4)).x

// fp32 -> binary16 bit pattern, round to nearest even (as core/fp16 and CUDA's __float2half_rn),
// independent of the driver's rounding for OpFConvert / packHalf2x16.
uint f32_to_f16_rne(float f) {
  uint x = floatBitsToUint(f);
  uint sign = (x >> 16) & 0x8000u;
  uint a = x & 0x7FFFFFFFu;
  if (a >= 0x7F800000u) return sign | (a > 0x7F800000u ? 0x7E00u : 0x7C00u);  // NaN / Inf
  if (a >= 0x477FF000u) return sign | 0x7C00u;                                 // rounds to Inf
  if (a >= 0x38800000u) {                                                      // normal
    uint r = a + 0xFFFu + ((a >> 13) & 1u) - 0x38000000u;
    return sign | (r >> 13);
  }
  if (a < 0x33000000u) return sign;  // below half of the smallest subnormal (ties to 0 too)
  // Subnormal: shift the implicit-1 significand; round to nearest even.
  uint e = a >> 23;
  uint m = (a & 0x7FFFFFu) | 0x800000u;
  uint shift = 126u - e;  // 14..24 for e in 102..112
  uint q = m >> shift;
  uint rem = m & ((1u << shift) - 1u);
  uint half_ulp = 1u << (shift - 1u);
  if (rem > half_ulp || (rem == half_ulp && (q & 1u) == 1u)) q += 1u;
  return sign | q;
}

// Rounds fp32 to the nearest binary16-representable value (RNE) and returns it as fp32. Only for
// |v| in the binary16 normal range or values already representable (codebook decode, spec 3.6).
float round_to_f16_precision(float v) {
  uint b = floatBitsToUint(v);
  b += 0xFFFu + ((b >> 13) & 1u);
  return uintBitsToFloat(b & 0xFFFFE000u);
}

// Rotate-half rotary embedding of the pair (x1, x2) = (x[i], x[i + half]) by (cos, sin): shared by
// rope.comp and rope_kv_store.comp so both round identically.
vec2 rope_rotate(float x1, float x2, float c, float s) { return vec2(x1 * c - x2 * s, x2 * c + x1 * s); }
