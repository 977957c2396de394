// Sampler against an independent oracle: the documented pipeline computed the slow, obvious way
// (full sort, double-precision softmax, explicit renormalisation after every filter), checked
// exactly through Sampler::distribution and statistically through 200k seeded draws.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <numeric>
#include <random>

#include "runtime/sampler.h"
#include "test_util.h"
#include "trellis/error.h"

namespace trellis {
namespace {

// ---- oracle -------------------------------------------------------------------------------------

std::vector<float> oracle_penalties(std::vector<float> logits, const std::vector<int32_t>& history,
                                    const SamplingParams& p) {
  if (p.penalty_last_n == 0) return logits;
  std::map<int32_t, int> count;
  const size_t n = p.penalty_last_n < 0 ? history.size()
                                        : std::min(history.size(), static_cast<size_t>(p.penalty_last_n));
  for (size_t i = history.size() - n; i < history.size(); ++i) ++count[history[i]];
  for (const auto& [id, c] : count) {
    if (id < 0 || id >= static_cast<int32_t>(logits.size())) continue;
    float& l = logits[static_cast<size_t>(id)];
    if (l > 0)
      l /= p.repetition_penalty;
    else
      l *= p.repetition_penalty;
    l -= p.presence_penalty;
    l -= p.frequency_penalty * static_cast<float>(c);
  }
  return logits;
}

// Probability of every id after the whole pipeline.
std::vector<double> oracle(const std::vector<float>& raw, const std::vector<int32_t>& history,
                           const SamplingParams& p) {
  const std::vector<float> logits = oracle_penalties(raw, history, p);
  const size_t n = logits.size();
  std::vector<double> prob(n, 0.0);
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  if (p.temperature == 0) {
    prob[static_cast<size_t>(order[0])] = 1;
    return prob;
  }
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < n) order.resize(static_cast<size_t>(p.top_k));
  std::vector<double> q;
  for (int32_t id : order) q.push_back(std::exp(static_cast<double>(logits[id]) / p.temperature));
  auto normalise = [&] {
    const double s = std::accumulate(q.begin(), q.end(), 0.0);
    for (double& x : q) x /= s;
  };
  normalise();
  if (p.top_p < 1) {
    double cum = 0;
    size_t keep = q.size();
    for (size_t j = 0; j < q.size(); ++j) {
      cum += q[j];
      if (cum >= p.top_p) {
        keep = j + 1;
        break;
      }
    }
    q.resize(keep);
    normalise();
  }
  if (p.min_p > 0) {
    const double top = q[0];
    size_t keep = 0;
    while (keep < q.size() && q[keep] >= p.min_p * top) ++keep;
    q.resize(keep);
    normalise();
  }
  for (size_t j = 0; j < q.size(); ++j) prob[static_cast<size_t>(order[j])] = q[j];
  return prob;
}

std::vector<float> random_logits(size_t n, uint64_t seed, float scale) {
  test::SplitMix64 rng(seed);
  std::vector<float> l(n);
  for (float& x : l) {
    // Sum of uniforms: a bell-ish spread with a few clear leaders.
    double s = 0;
    for (int i = 0; i < 4; ++i) s += static_cast<double>(rng.next() >> 11) * 0x1.0p-53;
    x = static_cast<float>((s - 2.0) * scale);
  }
  return l;
}

SamplingParams all_off(float temperature = 1.0f) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  return p;
}

std::vector<double> dense(const std::vector<TokenProb>& d, size_t n) {
  std::vector<double> out(n, 0.0);
  for (const TokenProb& t : d) out.at(static_cast<size_t>(t.id)) += t.p;
  return out;
}

void expect_distribution_matches(const std::vector<float>& logits, const std::vector<int32_t>& history,
                                 const SamplingParams& p, double tol = 2e-6) {
  Sampler s(p);
  const std::vector<TokenProb> got = s.distribution(logits, history);
  const std::vector<double> want = oracle(logits, history, p);
  const std::vector<double> g = dense(got, logits.size());
  for (size_t i = 0; i < logits.size(); ++i) ASSERT_NEAR(g[i], want[i], tol) << "id " << i;
  for (size_t j = 1; j < got.size(); ++j) ASSERT_GE(got[j - 1].p, got[j].p);
}

// Draws `draws` tokens and compares the frequencies with the oracle: tokens the oracle excludes
// never appear, the others fall within 5 standard deviations of the expected count.
void expect_empirical_matches(const std::vector<float>& logits, const std::vector<int32_t>& history,
                              const SamplingParams& p, int draws = 200000) {
  Sampler s(p);
  std::vector<int> count(logits.size(), 0);
  for (int i = 0; i < draws; ++i) ++count.at(static_cast<size_t>(s.sample(logits, history)));
  const std::vector<double> want = oracle(logits, history, p);
  for (size_t i = 0; i < logits.size(); ++i) {
    const double expected = want[i] * draws;
    if (want[i] == 0) {
      EXPECT_EQ(count[i], 0) << "id " << i << " must be filtered out";
    } else {
      const double sigma = std::sqrt(draws * want[i] * (1 - want[i]));
      EXPECT_NEAR(count[i], expected, 5 * sigma + 1) << "id " << i << " p " << want[i];
    }
  }
}

std::vector<int32_t> support(Sampler& s, const std::vector<float>& logits) {
  std::vector<int32_t> ids;
  for (const TokenProb& t : s.distribution(logits)) ids.push_back(t.id);
  std::sort(ids.begin(), ids.end());
  return ids;
}

// logits whose softmax at T = 1 is {0.5, 0.3, 0.2}
const std::vector<float> kThree = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};

// ---- tests -----------------------------------------------------------------------------------------

TEST(Sampler, GreedyIsArgmaxWithTiesToLowestId) {
  SamplingParams p;
  p.temperature = 0;
  Sampler s(p);
  EXPECT_EQ(s.sample(std::vector<float>{1, 5, 5, 3}), 1);
  EXPECT_EQ(s.sample(std::vector<float>{7, 5, 7, 7}), 0);
  EXPECT_EQ(s.sample(std::vector<float>{-3, -2, -1, -1}), 2);
  EXPECT_EQ(s.sample(std::vector<float>{-INFINITY, -INFINITY, 0}), 2);
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    const std::vector<float> l = random_logits(1000 + seed * 37, seed, 8);
    EXPECT_EQ(s.sample(l), std::max_element(l.begin(), l.end()) - l.begin());
  }
  const std::vector<TokenProb> d = s.distribution(std::vector<float>{1, 5, 5, 3});
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].id, 1);
  EXPECT_EQ(d[0].p, 1.0f);
}

TEST(Sampler, DistributionMatchesOracle) {
  struct Case {
    const char* name;
    SamplingParams p;
  };
  std::vector<Case> cases;
  cases.push_back({"defaults", SamplingParams{}});
  cases.push_back({"all off", all_off()});
  SamplingParams p = all_off(0.8f);
  p.top_k = 7;
  cases.push_back({"top_k", p});
  p = all_off(1.3f);
  p.top_p = 0.6f;
  cases.push_back({"top_p", p});
  p = all_off(0.9f);
  p.min_p = 0.1f;
  cases.push_back({"min_p", p});
  p = all_off(1.7f);
  p.top_k = 20;
  p.top_p = 0.8f;
  p.min_p = 0.02f;
  cases.push_back({"all three", p});
  p.repetition_penalty = 1.3f;
  p.presence_penalty = 0.4f;
  p.frequency_penalty = 0.2f;
  p.penalty_last_n = 16;
  cases.push_back({"with penalties", p});
  const std::vector<int32_t> history = {3, 3, 7, 1, 0, 49, 12, 3, 8, 8, 8, 40, 41, 42, 2, 5, 3, 60, -1};
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    const std::vector<float> l = random_logits(50, seed, 3);
    for (const Case& c : cases) {
      SCOPED_TRACE(c.name);
      expect_distribution_matches(l, history, c.p);
    }
  }
}

TEST(Sampler, EmpiricalFrequenciesMatchOracle) {
  const std::vector<float> l = random_logits(40, 99, 2.5f);
  const std::vector<int32_t> history = {1, 2, 2, 5, 30, 30, 30};
  SamplingParams p;  // defaults
  p.seed = 1;
  {
    SCOPED_TRACE("defaults");
    expect_empirical_matches(l, history, p);
  }
  p = all_off(1.0f);
  p.seed = 2;
  {
    SCOPED_TRACE("all off");
    expect_empirical_matches(l, history, p);
  }
  p = all_off(1.5f);
  p.top_k = 10;
  p.top_p = 0.7f;
  p.min_p = 0.05f;
  p.repetition_penalty = 1.5f;
  p.frequency_penalty = 0.3f;
  p.seed = 3;
  {
    SCOPED_TRACE("filters and penalties");
    expect_empirical_matches(l, history, p);
  }
}

TEST(Sampler, DrawIsInverseCdfOfMt19937In53Bits) {
  // The documented draw, rebuilt from the standard generator: candidates best first (logit desc,
  // id asc), u = top 53 bits / 2^53, first candidate whose cumulative probability exceeds u. This
  // pins the exact sequence for a seed on every platform.
  const std::vector<float> l = random_logits(300, 5, 3);
  SamplingParams p;
  p.top_k = 50;
  p.seed = 0x5eed;
  const std::vector<double> prob = oracle(l, {}, p);
  std::vector<int32_t> order(l.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return l[a] > l[b]; });
  std::mt19937_64 rng(p.seed);
  Sampler s(p);
  for (int i = 0; i < 2000; ++i) {
    const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    double cum = 0;
    int32_t want = -1;
    for (int32_t id : order) {
      cum += prob[static_cast<size_t>(id)];
      if (prob[static_cast<size_t>(id)] > 0 && u < cum) {
        want = id;
        break;
      }
    }
    ASSERT_EQ(s.sample(l), want) << "draw " << i;
  }
}

TEST(Sampler, SameSeedSameSequence) {
  const std::vector<float> l = random_logits(500, 8, 2);
  SamplingParams p = all_off(1.0f);
  p.seed = 42;
  Sampler a(p), b(p);
  std::vector<int32_t> first;
  for (int i = 0; i < 200; ++i) {
    first.push_back(a.sample(l));
    ASSERT_EQ(first.back(), b.sample(l));
  }
  a.reseed(42);
  for (int i = 0; i < 200; ++i) ASSERT_EQ(a.sample(l), first[static_cast<size_t>(i)]);
  p.seed = 43;
  Sampler c(p);
  int same = 0;
  for (int i = 0; i < 200; ++i) same += c.sample(l) == first[static_cast<size_t>(i)];
  EXPECT_LT(same, 100);
}

TEST(Sampler, TopKBoundary) {
  SamplingParams p = all_off();
  p.top_k = 2;
  Sampler s(p);
  // A tie at the boundary keeps the lower id.
  EXPECT_EQ(support(s, {3, 2, 1, 2}), (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(support(s, {1, 2, 2, 2}), (std::vector<int32_t>{1, 2}));
  p.top_k = 1;
  Sampler one(p);
  const std::vector<float> l = random_logits(1000, 4, 5);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(one.sample(l), std::max_element(l.begin(), l.end()) - l.begin());
  // k >= vocab is the same as off.
  p.top_k = 4;
  Sampler all(p);
  EXPECT_EQ(support(all, {3, 2, 1, 2}).size(), 4u);
  p.top_k = 1000;
  Sampler more(p);
  EXPECT_EQ(support(more, {3, 2, 1, 2}).size(), 4u);
}

TEST(Sampler, TopPBoundary) {
  SamplingParams p = all_off();
  const auto kept = [&](float top_p) {
    p.top_p = top_p;
    Sampler s(p);
    return support(s, kThree).size();
  };
  EXPECT_EQ(kept(1e-6f), 1u);
  EXPECT_EQ(kept(0.49f), 1u);
  EXPECT_EQ(kept(0.51f), 2u);
  EXPECT_EQ(kept(0.79f), 2u);
  EXPECT_EQ(kept(0.81f), 3u);
  EXPECT_EQ(kept(1.0f), 3u);
  // Renormalised after the cut.
  p.top_p = 0.7f;
  Sampler s(p);
  const std::vector<TokenProb> d = s.distribution(kThree);
  ASSERT_EQ(d.size(), 2u);
  EXPECT_NEAR(d[0].p, 0.625, 1e-6);
  EXPECT_NEAR(d[1].p, 0.375, 1e-6);
  // Temperature comes first: a hotter distribution needs more tokens for the same mass.
  p.temperature = 1.0f;
  EXPECT_EQ(kept(0.6f), 2u);
  p.temperature = 0.1f;
  EXPECT_EQ(kept(0.6f), 1u);
}

TEST(Sampler, MinPBoundary) {
  // Ratios to the top probability: 1, 0.6, 0.4.
  SamplingParams p = all_off();
  const auto kept = [&](float min_p) {
    p.min_p = min_p;
    Sampler s(p);
    return support(s, kThree).size();
  };
  EXPECT_EQ(kept(0.39f), 3u);
  EXPECT_EQ(kept(0.41f), 2u);
  EXPECT_EQ(kept(0.59f), 2u);
  EXPECT_EQ(kept(0.61f), 1u);
  EXPECT_EQ(kept(1.0f), 1u);
  // min_p = 1 keeps every token tied with the maximum.
  p.min_p = 1.0f;
  Sampler s(p);
  EXPECT_EQ(support(s, {2, 1, 2, 0}), (std::vector<int32_t>{0, 2}));
  // The ratio is taken after temperature: at T = 2 the ratios are sqrt(0.6), sqrt(0.4).
  p.temperature = 2.0f;
  p.min_p = 0.7f;
  Sampler hot(p);
  EXPECT_EQ(support(hot, kThree).size(), 2u);  // sqrt(.6) = .775 kept, sqrt(.4) = .632 not
}

TEST(Sampler, TemperatureScalesLogits) {
  const std::vector<float> l = {1.0f, 0.0f, -1.0f};
  SamplingParams p = all_off(2.0f);
  Sampler s(p);
  const std::vector<double> got = dense(s.distribution(l), 3);
  const double z = std::exp(0.5) + 1 + std::exp(-0.5);
  EXPECT_NEAR(got[0], std::exp(0.5) / z, 1e-6);
  EXPECT_NEAR(got[1], 1 / z, 1e-6);
  EXPECT_NEAR(got[2], std::exp(-0.5) / z, 1e-6);
}

TEST(Sampler, PenaltiesByHand) {
  const std::vector<float> logits = {2.0f, -1.0f, 0.5f, 3.0f, -2.0f, 0.0f};
  const std::vector<int32_t> history = {0, 1, 1, 3, 9, 5, -4};
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  p.penalty_last_n = -1;
  std::vector<float> l = logits;
  apply_penalties(l, history, p);
  EXPECT_FLOAT_EQ(l[0], 2.0f / 2 - 0.5f - 0.25f);       // positive: divided; seen once
  EXPECT_FLOAT_EQ(l[1], -1.0f * 2 - 0.5f - 0.5f);       // negative: multiplied; seen twice
  EXPECT_FLOAT_EQ(l[2], 0.5f);                          // not in the history
  EXPECT_FLOAT_EQ(l[3], 3.0f / 2 - 0.5f - 0.25f);
  EXPECT_FLOAT_EQ(l[4], -2.0f);
  EXPECT_FLOAT_EQ(l[5], 0.0f - 0.5f - 0.25f);           // zero: multiplied, stays 0
  // The window: the last 3 entries {9, 5, -4}, of which only 5 is in range.
  p.penalty_last_n = 3;
  l = logits;
  apply_penalties(l, history, p);
  EXPECT_EQ(l, (std::vector<float>{2.0f, -1.0f, 0.5f, 3.0f, -2.0f, -0.75f}));
  // A window longer than the history is the whole history; 0 is off.
  p.penalty_last_n = 1000;
  std::vector<float> whole = logits;
  apply_penalties(whole, history, p);
  EXPECT_FLOAT_EQ(whole[1], -3.0f);
  p.penalty_last_n = 0;
  l = logits;
  apply_penalties(l, history, p);
  EXPECT_EQ(l, logits);
  // Only the repetition penalty.
  p = SamplingParams{};
  p.repetition_penalty = 1.5f;
  l = logits;
  apply_penalties(l, history, p);
  EXPECT_FLOAT_EQ(l[0], 2.0f / 1.5f);
  EXPECT_FLOAT_EQ(l[1], -1.5f);
  EXPECT_FLOAT_EQ(l[3], 2.0f);
}

TEST(Sampler, PenaltiesChangeTheChoice) {
  SamplingParams p;
  p.temperature = 0;
  p.repetition_penalty = 2.0f;
  Sampler s(p);
  const std::vector<float> l = {3.0f, 2.0f, 1.0f};
  EXPECT_EQ(s.sample(l, {}), 0);
  EXPECT_EQ(s.sample(l, std::vector<int32_t>{0}), 1);  // 3 / 2 = 1.5 < 2
  p.repetition_penalty = 1.0f;
  p.presence_penalty = 2.5f;
  Sampler presence(p);
  EXPECT_EQ(presence.sample(l, std::vector<int32_t>{0, 1}), 2);  // 0.5, -0.5 < 1
  p.presence_penalty = 0.0f;
  p.frequency_penalty = 0.75f;
  Sampler frequency(p);
  EXPECT_EQ(frequency.sample(l, std::vector<int32_t>{0, 0, 1}), 0);     // 1.5 > 1.25, 1
  EXPECT_EQ(frequency.sample(l, std::vector<int32_t>{0, 0, 0, 1}), 1);  // 0.75 < 1.25 > 1
  // The logits passed in are not modified.
  EXPECT_EQ(l, (std::vector<float>{3.0f, 2.0f, 1.0f}));
}

TEST(Sampler, LargeVocabularyMatchesOracle) {
  // A 150k vocabulary exercises every selection path: the top-k heap, the min-p cut-off and the
  // growing partial sort of top-p alone (its prefix here runs to tens of thousands of tokens).
  const std::vector<float> l = random_logits(151936, 21, 4);
  const std::vector<int32_t> history = {5, 77, 151935, 1000, 1000};
  SamplingParams p;  // defaults
  p.repetition_penalty = 1.1f;
  {
    SCOPED_TRACE("defaults");
    expect_distribution_matches(l, history, p, 1e-6);
  }
  p = all_off(1.0f);
  p.top_p = 0.9f;
  {
    SCOPED_TRACE("top_p alone");
    expect_distribution_matches(l, history, p, 1e-6);
  }
  p = all_off(1.0f);
  p.min_p = 0.02f;
  {
    SCOPED_TRACE("min_p alone");
    expect_distribution_matches(l, history, p, 1e-6);
  }
  p.top_p = 0.5f;
  {
    SCOPED_TRACE("min_p and top_p");
    expect_distribution_matches(l, history, p, 1e-6);
  }
}

TEST(Sampler, LargeVocabularySpeed) {
  const std::vector<float> l = random_logits(151936, 22, 4);
  Sampler s(SamplingParams{});
  const auto start = std::chrono::steady_clock::now();
  const int steps = 200;
  for (int i = 0; i < steps; ++i) s.sample(l);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count() / steps;
  std::printf("sampler: %.3f ms per token at vocab 151936 with the default parameters\n", ms);
  EXPECT_LT(ms, 20.0);  // a full sort would still pass; this only catches something pathological
}

TEST(Sampler, InfiniteAndNanLogits) {
  SamplingParams p = all_off();
  Sampler s(p);
  const std::vector<float> l = {-INFINITY, 0.0f, -INFINITY, 0.0f};
  for (int i = 0; i < 1000; ++i) {
    const int32_t t = s.sample(l);
    ASSERT_TRUE(t == 1 || t == 3);
  }
  EXPECT_EQ(support(s, l), (std::vector<int32_t>{1, 3}));
  try {
    s.sample(std::vector<float>{0.0f, NAN});
    FAIL() << "NaN accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("token 1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(s.sample(std::vector<float>{-INFINITY, -INFINITY}), Error);
  EXPECT_THROW(s.sample(std::vector<float>{}), Error);
}

TEST(Sampler, RejectsBadParameters) {
  const auto rejects = [](auto edit) {
    SamplingParams p;
    edit(p);
    try {
      Sampler s(p);
    } catch (const Error& e) {
      return e.kind() == ErrorKind::kInvalidArgument;
    }
    return false;
  };
  EXPECT_TRUE(rejects([](SamplingParams& p) { p.temperature = -0.1f; }));
  EXPECT_TRUE(rejects([](SamplingParams& p) { p.temperature = NAN; }));
  EXPECT_TRUE(rejects([](SamplingParams& p) { p.top_k = -1; }));
  EXPECT_TRUE(rejects([](SamplingParams& p) { p.top_p = 0.0f; }));
  EXPECT_TRUE(rejects([](SamplingParams& p) { p.top_p = 1.01f; }));
  EXPECT_TRUE(rejects([](SamplingParams& p) { p.min_p = -0.01f; }));
  EXPECT_TRUE(rejects([](SamplingParams& p) { p.min_p = 1.5f; }));
  EXPECT_TRUE(rejects([](SamplingParams& p) { p.repetition_penalty = 0.0f; }));
  EXPECT_TRUE(rejects([](SamplingParams& p) { p.presence_penalty = INFINITY; }));
  EXPECT_TRUE(rejects([](SamplingParams& p) { p.penalty_last_n = -2; }));
  EXPECT_FALSE(rejects([](SamplingParams&) {}));
}

}  // namespace
}  // namespace trellis
