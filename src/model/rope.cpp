#include "model/rope.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace trellis {

namespace {

double yarn_mscale(double scale, double m) { return scale <= 1 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; }

double yarn_correction_dim(double rotations, int64_t dim, double base, double max_pos) {
  return (static_cast<double>(dim) * std::log(max_pos / (rotations * 2 * M_PI))) / (2 * std::log(base));
}

}  // namespace

RopeParams make_rope_params(const ModelConfig& c) {
  const int64_t dim = c.head_dim;
  const int64_t half = dim / 2;
  const double base = c.rope_theta;
  RopeParams p;
  p.inv_freq.resize(static_cast<size_t>(half));
  std::vector<double> inv(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i)
    inv[static_cast<size_t>(i)] = 1.0 / std::pow(base, static_cast<double>(2 * i) / static_cast<double>(dim));
  const RopeScaling& s = c.rope_scaling;
  if (s.type == "default" || s.type.empty()) {
  } else if (s.type == "linear") {
    for (double& f : inv) f /= s.factor;
  } else if (s.type == "llama3") {
    const double old_ctx = static_cast<double>(s.original_max_position_embeddings);
    const double low_wavelen = old_ctx / s.low_freq_factor, high_wavelen = old_ctx / s.high_freq_factor;
    for (double& f : inv) {
      const double wavelen = 2 * M_PI / f;
      if (wavelen > low_wavelen) {
        f = f / s.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (old_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        f = (1 - smooth) * f / s.factor + smooth * f;
      }
    }
  } else if (s.type == "yarn") {
    const double max_pos = s.original_max_position_embeddings > 0 ? static_cast<double>(s.original_max_position_embeddings)
                                                                   : static_cast<double>(c.max_position_embeddings);
    if (s.attention_factor) {
      p.attention_scaling = static_cast<float>(*s.attention_factor);
    } else if (s.mscale && s.mscale_all_dim) {
      p.attention_scaling = static_cast<float>(yarn_mscale(s.factor, *s.mscale) / yarn_mscale(s.factor, *s.mscale_all_dim));
    } else {
      p.attention_scaling = static_cast<float>(yarn_mscale(s.factor, 1.0));
    }
    double low = std::floor(yarn_correction_dim(s.beta_fast, dim, base, max_pos));
    double high = std::ceil(yarn_correction_dim(s.beta_slow, dim, base, max_pos));
    low = std::max(low, 0.0);
    high = std::min(high, static_cast<double>(dim - 1));
    if (low == high) high += 0.001;
    for (int64_t i = 0; i < half; ++i) {
      const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
      const double extrapolation_factor = 1 - ramp;
      double& f = inv[static_cast<size_t>(i)];
      f = (f / s.factor) * (1 - extrapolation_factor) + f * extrapolation_factor;
    }
  } else {
    fail(ErrorKind::kUnsupported, "{}: rope type '{}' is not supported (supported: default, linear, llama3, yarn)",
         c.path, s.type);
  }
  for (int64_t i = 0; i < half; ++i) p.inv_freq[static_cast<size_t>(i)] = static_cast<float>(inv[static_cast<size_t>(i)]);
  return p;
}

}  // namespace trellis
