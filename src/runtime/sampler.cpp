// runtime/sampler.cpp: the sampling pipeline of sampler.h.
//
// Cost per step for a vocabulary of n: one pass to find the maximum (and reject NaN), then
// - top_k set: one pass keeping a k-element heap (almost every logit fails one comparison);
// - top_k off, min_p set: one pass collecting the logits above the min-p cut-off, then a sort of
//   those few (plus one pass of exp() for the top-p mass when top_p < 1);
// - only top_p: one pass of exp(), then partial sorts of a growing prefix until it holds the mass;
// - neither: no sort at all (candidates stay in id order).
// The penalties copy the row only when one is active.
#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace trellis {
namespace {

// Candidate order: higher logit first, then lower id.
template <typename C>
bool better(const C& a, const C& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

bool finite(float x) { return std::isfinite(x); }

}  // namespace

void validate(const SamplingParams& p) {
  if (!finite(p.temperature) || p.temperature < 0)
    fail(ErrorKind::kInvalidArgument, "sampling: temperature {} must be a finite number >= 0 (0 = greedy)",
         p.temperature);
  if (p.top_k < 0) fail(ErrorKind::kInvalidArgument, "sampling: top_k {} must be >= 0 (0 = off)", p.top_k);
  if (!(p.top_p > 0 && p.top_p <= 1))
    fail(ErrorKind::kInvalidArgument, "sampling: top_p {} must be in (0, 1] (1 = off)", p.top_p);
  if (!(p.min_p >= 0 && p.min_p <= 1))
    fail(ErrorKind::kInvalidArgument, "sampling: min_p {} must be in [0, 1] (0 = off)", p.min_p);
  if (!finite(p.repetition_penalty) || p.repetition_penalty <= 0)
    fail(ErrorKind::kInvalidArgument, "sampling: repetition_penalty {} must be a finite number > 0 (1 = off)",
         p.repetition_penalty);
  if (!finite(p.presence_penalty))
    fail(ErrorKind::kInvalidArgument, "sampling: presence_penalty {} must be finite", p.presence_penalty);
  if (!finite(p.frequency_penalty))
    fail(ErrorKind::kInvalidArgument, "sampling: frequency_penalty {} must be finite", p.frequency_penalty);
  if (p.penalty_last_n < -1)
    fail(ErrorKind::kInvalidArgument, "sampling: penalty_last_n {} must be >= -1 (-1 = whole history, 0 = none)",
         p.penalty_last_n);
}

namespace {

bool penalties_active(const SamplingParams& p) {
  return p.penalty_last_n != 0 &&
         (p.repetition_penalty != 1.0f || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f);
}

std::span<const int32_t> penalty_window(std::span<const int32_t> history, int last_n) {
  if (last_n < 0 || static_cast<size_t>(last_n) >= history.size()) return history;
  return history.last(static_cast<size_t>(last_n));
}

}  // namespace

void apply_penalties(std::span<float> logits, std::span<const int32_t> history, const SamplingParams& p) {
  if (!penalties_active(p)) return;
  const std::span<const int32_t> last = penalty_window(history, p.penalty_last_n);
  std::vector<int32_t> window(last.begin(), last.end());
  std::sort(window.begin(), window.end());
  for (size_t i = 0; i < window.size();) {
    size_t j = i;
    while (j < window.size() && window[j] == window[i]) ++j;
    const int32_t id = window[i];
    const auto count = static_cast<float>(j - i);
    i = j;
    if (id < 0 || static_cast<size_t>(id) >= logits.size()) continue;
    float& l = logits[static_cast<size_t>(id)];
    if (p.repetition_penalty != 1.0f) l = l > 0 ? l / p.repetition_penalty : l * p.repetition_penalty;
    l -= p.presence_penalty + p.frequency_penalty * count;
  }
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) { validate(params_); }

void Sampler::reseed(uint64_t seed) {
  params_.seed = seed;
  rng_.seed(seed);
}

std::span<const float> Sampler::penalised(std::span<const float> logits, std::span<const int32_t> history) {
  if (!penalties_active(params_) || history.empty()) return logits;
  scratch_.assign(logits.begin(), logits.end());
  apply_penalties(scratch_, history, params_);
  return scratch_;
}

void Sampler::select_top_k(std::span<const float> logits, size_t k) {
  // A heap whose front is the worst kept candidate; ids arrive in ascending order, so an equal
  // logit never displaces a kept one (ties go to the lower id).
  const auto worse_first = [](const Candidate& a, const Candidate& b) { return better(a, b); };
  cand_.clear();
  cand_.reserve(k);
  for (size_t i = 0; i < logits.size(); ++i) {
    const Candidate c{logits[i], static_cast<int32_t>(i)};
    if (cand_.size() < k) {
      cand_.push_back(c);
      std::push_heap(cand_.begin(), cand_.end(), worse_first);
    } else if (c.logit > cand_.front().logit) {
      std::pop_heap(cand_.begin(), cand_.end(), worse_first);
      cand_.back() = c;
      std::push_heap(cand_.begin(), cand_.end(), worse_first);
    }
  }
  std::sort_heap(cand_.begin(), cand_.end(), worse_first);  // best first
}

void Sampler::select_at_least(std::span<const float> logits, float threshold) {
  cand_.clear();
  for (size_t i = 0; i < logits.size(); ++i)
    if (logits[i] >= threshold) cand_.push_back({logits[i], static_cast<int32_t>(i)});
  std::sort(cand_.begin(), cand_.end(), better<Candidate>);
}

double Sampler::filter(std::span<const float> logits_in, std::span<const int32_t> history) {
  if (logits_in.empty()) fail(ErrorKind::kInvalidArgument, "sampling: empty logits");
  const std::span<const float> logits = penalised(logits_in, history);
  const size_t n = logits.size();
  size_t best = 0;
  for (size_t i = 0; i < n; ++i) {
    if (std::isnan(logits[i])) fail(ErrorKind::kInvalidArgument, "sampling: the logit of token {} is NaN", i);
    if (logits[i] > logits[best]) best = i;
  }
  if (logits[best] == -std::numeric_limits<float>::infinity())
    fail(ErrorKind::kInvalidArgument, "sampling: every logit is -inf, nothing can be sampled");
  cand_.clear();
  weight_.clear();
  if (params_.temperature == 0) {
    cand_.push_back({logits[best], static_cast<int32_t>(best)});
    weight_.push_back(1.0);
    return 1.0;
  }

  const double max = logits[best];
  const double inv_t = 1.0 / static_cast<double>(params_.temperature);
  const auto weight = [&](float l) { return std::exp((static_cast<double>(l) - max) * inv_t); };
  const bool top_p_on = params_.top_p < 1.0f;
  const bool min_p_on = params_.min_p > 0.0f;
  // p_i >= min_p * p_max  <=>  l_i >= max + T * ln(min_p): a cut on the logits.
  const float min_p_floor =
      min_p_on ? static_cast<float>(max + params_.temperature * std::log(static_cast<double>(params_.min_p)))
               : -std::numeric_limits<float>::infinity();
  double top_p_mass = 0;  // the mass top_p is a fraction of (before top-p)
  const bool top_k_on = params_.top_k > 0 && static_cast<size_t>(params_.top_k) < n;
  if (top_k_on) {
    select_top_k(logits, static_cast<size_t>(params_.top_k));
  } else {
    if (top_p_on)
      for (float l : logits) top_p_mass += weight(l);
    if (min_p_on) {
      select_at_least(logits, min_p_floor);
    } else if (top_p_on) {
      cand_.resize(n);
      for (size_t i = 0; i < n; ++i) cand_[i] = {logits[i], static_cast<int32_t>(i)};
      const double target = params_.top_p * top_p_mass;
      size_t m = std::min<size_t>(n, 256);
      for (;;) {
        std::partial_sort(cand_.begin(), cand_.begin() + static_cast<ptrdiff_t>(m), cand_.end(), better<Candidate>);
        double cum = 0;
        for (size_t j = 0; j < m; ++j) cum += weight(cand_[j].logit);
        if (cum >= target || m == n) break;
        m = std::min(n, m * 8);
      }
      cand_.resize(m);
    } else {
      cand_.resize(n);  // everything survives; id order is as deterministic as any
      for (size_t i = 0; i < n; ++i) cand_[i] = {logits[i], static_cast<int32_t>(i)};
    }
  }

  weight_.resize(cand_.size());
  for (size_t j = 0; j < cand_.size(); ++j) weight_[j] = weight(cand_[j].logit);
  if (top_k_on && top_p_on)
    for (double w : weight_) top_p_mass += w;
  size_t keep = cand_.size();
  if (top_p_on) {
    const double target = params_.top_p * top_p_mass;
    double cum = 0;
    for (size_t j = 0; j < keep; ++j) {
      cum += weight_[j];
      if (cum >= target) {
        keep = j + 1;
        break;
      }
    }
  }
  if (min_p_on) {
    size_t j = 1;  // candidates are sorted whenever min-p is on
    while (j < keep && cand_[j].logit >= min_p_floor) ++j;
    keep = j;
  }
  while (keep > 1 && weight_[keep - 1] == 0) --keep;  // -inf logits (or underflow) never win
  cand_.resize(keep);
  weight_.resize(keep);
  double total = 0;
  for (double w : weight_) total += w;
  return total;
}

int32_t Sampler::sample(std::span<const float> logits, std::span<const int32_t> history) {
  const double total = filter(logits, history);
  if (params_.temperature == 0) return cand_[0].id;
  const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53;  // uniform in [0, 1)
  const double target = u * total;
  double cum = 0;
  for (size_t j = 0; j < cand_.size(); ++j) {
    cum += weight_[j];
    if (target < cum) return cand_[j].id;
  }
  return cand_.back().id;  // only reachable through rounding of the sum
}

std::vector<TokenProb> Sampler::distribution(std::span<const float> logits, std::span<const int32_t> history) {
  const double total = filter(logits, history);
  std::vector<TokenProb> out;
  out.reserve(cand_.size());
  for (size_t j = 0; j < cand_.size(); ++j)
    if (weight_[j] > 0) out.push_back({cand_[j].id, static_cast<float>(weight_[j] / total)});
  std::sort(out.begin(), out.end(),
            [](const TokenProb& a, const TokenProb& b) { return a.p > b.p || (a.p == b.p && a.id < b.id); });
  return out;
}

}  // namespace trellis
