// runtime/sampler.h: picks the next token from a row of logits.
//
// Goals: the conventional sampling pipeline with the conventional meaning of each knob, in a fixed
// order, reproducible for a seed on every platform, and cheap for vocabularies of 150k+:
//
//   penalties -> greedy shortcut -> top-k -> temperature -> softmax -> top-p -> min-p -> draw
//
// - repetition_penalty (HF / llama.cpp): each distinct token among the last penalty_last_n of the
//   history has its logit divided by the penalty when positive, multiplied by it when not.
// - presence_penalty / frequency_penalty (OpenAI): logit -= presence * [count > 0] + frequency *
//   count, counting over the same window. Applied after the repetition penalty, as llama.cpp does.
// - temperature 0 is greedy: the argmax after penalties, ties going to the lowest id. No random
//   draw is consumed.
// - top_k keeps the k largest logits (ties broken towards the lower id); 0 turns it off.
// - top_p keeps the smallest prefix of the candidates, highest probability first, whose mass
//   reaches top_p (at least one token); 1 turns it off.
// - min_p keeps candidates whose probability is at least min_p times the largest one; 0 turns it
//   off. Because the ratio test is unchanged by renormalisation, it is applied as a cut-off on the
//   logits, which lets most steps sort only a handful of candidates.
// - The draw: one 64-bit output of std::mt19937_64 (whose sequence the C++ standard fixes), turned
//   into a uniform double in [0, 1) from its top 53 bits, walked along the cumulative
//   probabilities in candidate order. No std::*_distribution (implementation-defined).
//
// Candidates are ordered by (logit descending, id ascending) whenever a filter is on, by id when
// every filter is off, so the result depends only on the logits, the history, the parameters and
// the seed.
//
// Non-goals: grammar constraints, logit bias, typical/tail-free/mirostat/XTC/DRY samplers, beams.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace trellis {

struct SamplingParams {
  float temperature = 0.7f;         // 0 = greedy; must be >= 0
  int top_k = 40;                   // 0 = off; must be >= 0
  float top_p = 0.95f;              // 1 = off; in (0, 1]
  float min_p = 0.05f;              // 0 = off; in [0, 1]
  float repetition_penalty = 1.0f;  // 1 = off; must be > 0
  float presence_penalty = 0.0f;    // 0 = off
  float frequency_penalty = 0.0f;   // 0 = off
  int penalty_last_n = 64;          // window of the history the penalties see; 0 = none, -1 = all
  uint64_t seed = 0;                // seeds the PRNG; the same seed gives the same tokens
};

// One surviving candidate: its id and its renormalised probability.
struct TokenProb {
  int32_t id = 0;
  float p = 0;
};

// Throws kInvalidArgument naming the first field out of range (see SamplingParams).
void validate(const SamplingParams& params);

// Applies the repetition / presence / frequency penalties of `params` in place, counting the
// tokens of the last penalty_last_n entries of `history`. Ids outside `logits` are ignored.
void apply_penalties(std::span<float> logits, std::span<const int32_t> history, const SamplingParams& params);

class Sampler {
 public:
  // Validates `params` (kInvalidArgument) and seeds the PRNG with params.seed.
  explicit Sampler(const SamplingParams& params);

  // Chooses a token from `logits` (one row, vocab floats; not modified) after `history` (the
  // sequence so far, prompt included, for the penalties). Consumes one PRNG draw unless greedy.
  // kInvalidArgument when `logits` is empty, holds a NaN, or is -inf everywhere.
  int32_t sample(std::span<const float> logits, std::span<const int32_t> history = {});

  // The distribution sample() draws from: the surviving candidates, highest probability first,
  // probabilities summing to 1 (greedy: the argmax with p = 1). Consumes no draw.
  std::vector<TokenProb> distribution(std::span<const float> logits, std::span<const int32_t> history = {});

  // Restarts the PRNG sequence.
  void reseed(uint64_t seed);
  const SamplingParams& params() const { return params_; }

 private:
  struct Candidate {
    float logit;
    int32_t id;
  };
  // Runs the pipeline up to the draw; leaves the candidates in cand_ (best first) and their
  // unnormalised weights in weight_, returning their sum. Greedy leaves one candidate.
  double filter(std::span<const float> logits, std::span<const int32_t> history);
  std::span<const float> penalised(std::span<const float> logits, std::span<const int32_t> history);
  void select_top_k(std::span<const float> logits, size_t k);
  void select_at_least(std::span<const float> logits, float threshold);
  void sort_prefix(std::span<const float> logits, size_t count);

  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<float> scratch_;   // penalised copy of the logits
  std::vector<Candidate> cand_;  // candidates, best first once filtered
  std::vector<double> weight_;   // exp((logit - max) / T) per candidate
};

}  // namespace trellis
