// exl3/encode.cpp: two-pass tail-biting Viterbi search over the bitshift trellis (spec 5.7).
//
// Layout of the search: a state s = (h << (16-K)) | e has out-edge e (its low 16-K bits) and
// in-edge s >> K. The dynamic programme keeps one binary16 cost per out-edge. Each step first
// computes the cost of all 65536 states in state order (contiguous, branch-free, vectorisable),
// then reduces over h for every out-edge; scanning h upwards and replacing only on "<" is the
// spec's "first strict minimum" rule.
//
// Arithmetic (all results are binary16 values, held exactly in floats):
//   d = fp16(dec(s) - w)       fp32 difference then RN16: exact, or the small operand is far
//                              below half an fp16 ulp of the large one, so the result is right
//   c = fp16(d*d + cost_prev)  one rounding, emulated exactly in fp32 by fp16_square_add
//                              (round-to-odd; see exl3/fp16_round.h)
// The first processed step of a pass is the same formula with cost_prev = 0 (pass 1) or
// cost_prev = 0 at edge e* and +inf elsewhere (pass 2), which is what spec 5.7 prescribes.
//
// Cost: 2 passes x 256 steps x 65536 states per tile, and 256 * 2^(16-K) backpointers
// (16 MiB for K = 1), allocated once per call.
#include "exl3/encode.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/fp16.h"
#include "exl3/fp16_round.h"

namespace trellis::exl3 {

namespace {

constexpr int kStateBits = 16;
constexpr float kInf = std::numeric_limits<float>::infinity();

uint32_t rev5(uint32_t v) {
  return ((v & 1u) << 4) | ((v & 2u) << 2) | (v & 4u) | ((v & 8u) >> 2) | ((v & 16u) >> 4);
}

// Order in which ExLlamaV3's two-level warp reduction resolves ties between equal costs
// (spec 5.7 "start edge"): smaller key wins.
uint32_t tie_key(uint32_t e) {
  const uint32_t t = e % 1024;
  const uint32_t j = 16 * (t >= 512 ? 1 : 0) + (t % 512) / 32, l = t % 32;
  return rev5(j) << 10 | rev5(l) << 5 | (e >> 10);
}

// K is a template parameter so that the shifts and loop bounds of the inner loops are
// constants, which lets the compiler unroll and vectorise them.
template <int K>
class Viterbi {
 public:
  static constexpr int kEdges = 1 << (kStateBits - K);
  static constexpr int kStates = 1 << kStateBits;

  explicit Viterbi(Codebook cb)
      : dec_(codebook_table_f32(cb)),
        pred_(static_cast<size_t>(kTileSize) * kEdges),
        cost_a_(kEdges),
        cost_b_(kEdges),
        state_cost_(kStates) {}

  // Pass 1 (spec 5.7): rotated order 128..255, 0..127 with no constraint; returns e*.
  uint32_t find_start_edge(const float* w) {
    std::fill(cost_a_.begin(), cost_a_.end(), 0.0f);
    std::vector<float> at_step_126;
    float* prev = cost_a_.data();
    float* next = cost_b_.data();
    for (int q = 0; q < kTileSize; ++q) {
      const int step = (q + kTileSize / 2) % kTileSize;
      run_step(w[step], prev, next, pred_row(step));
      std::swap(prev, next);
      if (step == kTileSize / 2 - 2) at_step_126.assign(prev, prev + kEdges);
    }
    // Quirk 1: the start edge is the argmin of the second-to-last processed step's costs,
    // used as the out-edge of step 127. Quirk 2: ties resolved by tie_key().
    float best_cost = kInf;
    for (float c : at_step_126) best_cost = std::min(best_cost, c);
    uint32_t e = 0, best_key = UINT32_MAX;
    for (uint32_t i = 0; i < static_cast<uint32_t>(kEdges); ++i) {
      if (at_step_126[i] == best_cost && tie_key(i) < best_key) {
        best_key = tie_key(i);
        e = i;
      }
    }
    for (int step = kTileSize / 2 - 1; step >= 0; --step) e = pred_row(step)[e];
    return e;
  }

  // Pass 2: steps 0..255 starting from in-edge e*, then trace back from out-edge e*.
  void encode_from(const float* w, uint32_t start_edge, uint16_t states[kTileSize]) {
    std::fill(cost_a_.begin(), cost_a_.end(), kInf);
    cost_a_[start_edge] = 0.0f;
    float* prev = cost_a_.data();
    float* next = cost_b_.data();
    for (int step = 0; step < kTileSize; ++step) {
      run_step(w[step], prev, next, pred_row(step));
      std::swap(prev, next);
    }
    uint32_t e = start_edge;
    for (int step = kTileSize - 1; step >= 0; --step) {
      const uint32_t e_prev = pred_row(step)[e];
      states[step] = static_cast<uint16_t>(((e_prev << K) | e) & 0xFFFFu);
      e = e_prev;
    }
  }

 private:
  uint16_t* pred_row(int step) { return pred_.data() + static_cast<size_t>(step) * kEdges; }

  // One trellis step: cost_next[e] = min over h of fp16(d(s)^2 + cost_prev[s >> K]) for the
  // states s = (h << (16-K)) | e, pred[e] = in-edge of the first minimising state.
  void run_step(float w, const float* cost_prev, float* cost_next, uint16_t* pred) {
    // Cost of every state; its in-edge is s >> K.
    float* __restrict sc = state_cost_.data();
    const float* __restrict dec = dec_;
    const float* __restrict prev = cost_prev;
    for (int s = 0; s < kStates; ++s) {
      const float d = round_to_fp16_value(dec[s] - w);
      sc[s] = fp16_square_add(d, prev[s >> K]);
    }
    // Minimum over h for each out-edge, keeping the first strict minimum (h = 0 first, then
    // replace only where a later h is strictly smaller). Costs are non-negative floats without
    // NaN, so their bit patterns order like their values; the select uses masks so that the
    // unpredictable comparison costs no branch.
    std::memcpy(cost_next, sc, kEdges * sizeof(float));
    for (int e = 0; e < kEdges; ++e) pred[e] = static_cast<uint16_t>(e >> K);
    for (int h = 1; h < (1 << K); ++h) {
      const float* row = sc + h * kEdges;
      const uint32_t in_base = static_cast<uint32_t>(h) << (kStateBits - 2 * K);
      for (int e = 0; e < kEdges; ++e) {
        const auto c = std::bit_cast<uint32_t>(row[e]);
        const auto old = std::bit_cast<uint32_t>(cost_next[e]);
        const uint32_t take = mask_if_negative32(c - old);  // c < old
        cost_next[e] = std::bit_cast<float>((c & take) | (old & ~take));
        const uint32_t in_edge = in_base | (static_cast<uint32_t>(e) >> K);
        pred[e] = static_cast<uint16_t>((in_edge & take) | (pred[e] & ~take));
      }
    }
  }

  const float* dec_;
  std::vector<uint16_t> pred_;  // [256][kEdges]: in-edge of the best state into each out-edge
  std::vector<float> cost_a_, cost_b_;
  std::vector<float> state_cost_;  // [65536] cost of every state at the current step
};

template <int K>
void encode_with(const float* w, Codebook cb, uint16_t states[kTileSize]) {
  Viterbi<K> viterbi(cb);
  const uint32_t start_edge = viterbi.find_start_edge(w);
  viterbi.encode_from(w, start_edge, states);
}

}  // namespace

void encode_tile(const uint16_t x[kTileSize], int K, Codebook cb, uint16_t states[kTileSize],
                 uint16_t* decoded) {
  if (K < kMinK || K > kMaxK)
    fail(ErrorKind::kInvalidArgument, "encode_tile: K = {}; expected {}..{}", K, kMinK, kMaxK);
  float w[kTileSize];
  for (int i = 0; i < kTileSize; ++i) {
    w[i] = fp16_to_fp32(x[i]);
    if (!std::isfinite(w[i]))
      fail(ErrorKind::kInvalidArgument, "encode_tile: input {} is not finite (bits {:04x})", i,
           x[i]);
  }
  switch (K) {
    case 1: encode_with<1>(w, cb, states); break;
    case 2: encode_with<2>(w, cb, states); break;
    case 3: encode_with<3>(w, cb, states); break;
    case 4: encode_with<4>(w, cb, states); break;
    case 5: encode_with<5>(w, cb, states); break;
    case 6: encode_with<6>(w, cb, states); break;
    case 7: encode_with<7>(w, cb, states); break;
    case 8: encode_with<8>(w, cb, states); break;
  }
  if (decoded) {
    const uint16_t* table = codebook_table(cb);
    for (int i = 0; i < kTileSize; ++i) decoded[i] = table[states[i]];
  }
}

}  // namespace trellis::exl3
